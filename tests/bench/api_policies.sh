#!/bin/sh
# The cost of the API policies on the proxied hot path: two agate
# instances on one nginx upstream, one with no policy and one whose route
# has a rate limit (high enough never to refuse: every request still
# takes a token from the shared bucket) and JWT auth (HS256, a token
# forwarding one claim), measured with wrk in interleaved rounds.
# Usage: tests/bench/api_policies.sh [ROUNDS] [SECONDS]  (from the top
# folder, after make; needs nginx, wrk and python3).
set -eu
rounds=${1:-3}
secs=${2:-8}
top=$(pwd)
dir=$(mktemp -d /tmp/agate-api-policies.XXXXXX)
up=18311 plain=18312 pol=18313
mkdir -p "$dir/tmp"
body='{"ok":true,"data":"0123456789012345678901234567890123456789012345678901234567890123456789"}'
sed -e "s#@NOFILE@#20000#;s#@DIR@#$dir#g;s#@CONNS@#10000#;s#@PORT@#$up#" \
    -e "s#@BODY@#$body#" tests/bench/upstream.nginx.conf > "$dir/up.conf"
mkdir -p "$dir/www"
nginx -c "$dir/up.conf" -p "$dir" &
upid=$!
token=$(python3 - "$dir/jwks.json" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
key = b"bench-secret-0123456789abcdef0123"
json.dump({"keys": [{"kty": "oct", "k": b(key)}]}, open(sys.argv[1], "w"))
h = b(json.dumps({"alg": "HS256"}).encode())
c = b(json.dumps({"sub": "u1", "aud": "api",
                  "exp": int(time.time()) + 3600}).encode())
s = b(hmac.new(key, (h + "." + c).encode(), hashlib.sha256).digest())
print(h + "." + c + "." + s)
PY
)
common() {
	cat <<EOC
server:
  listen: ["127.0.0.1:$1"]
  workers: 2
  pid_file: $dir/agate-$1.pid
log:
  access: "off"
  level: warn
upstreams:
  up:
    servers: ["http://127.0.0.1:$up"]
    keepalive: 64
routes:
  - path: /
    upstream: up
EOC
}
common $plain > "$dir/plain.yaml"
{ common $pol; cat <<EOC
    rate_limit: { rate: 10000000/s, burst: 10000000, key: client_ip }
    auth:
      jwt: { keys: jwks.json, audience: api, forward_claims: { sub: X-User } }
EOC
} > "$dir/pol.yaml"
"$top/agate" -c "$dir/plain.yaml" 2> "$dir/plain.err" &
apid=$!
"$top/agate" -c "$dir/pol.yaml" 2> "$dir/pol.err" &
bpid=$!
trap 'kill $apid $bpid 2>/dev/null; kill -QUIT $upid 2>/dev/null; wait; rm -rf "$dir"' EXIT
sleep 1.5
curl -fsS -o /dev/null "http://127.0.0.1:$plain/x"
curl -fsS -o /dev/null -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$pol/x"
rps() {
	wrk -t2 -c50 -d"${secs}s" --latency -H "Authorization: Bearer $token" \
	    "http://127.0.0.1:$1/x" |
	    awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} /Non-2xx/ {e=$5}
	        END {print r, p, (e ? e : 0)}'
}
echo "round  no-policies(req/s p99 errors)  rate_limit+jwt(req/s p99 errors)  ratio"
i=1
while [ $i -le "$rounds" ]; do
	a=$(rps $plain)
	b=$(rps $pol)
	echo "$i  $a  $b" | awk '{printf "%-6s %-10s %-8s %-4s %-10s %-8s %-4s %.3f\n", $1, $2, $3, $4, $5, $6, $7, $5/$2}'
	i=$((i + 1))
done
