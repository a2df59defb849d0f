#!/bin/sh
# The cost of the upstream policies on the proxied hot path: two agate
# instances on one nginx upstream, one with no policies configured and
# one with max_concurrent/max_queue, retry, circuit_breaker and
# health_check, measured with wrk in interleaved rounds (same run).
# Usage: tests/bench/policies.sh [ROUNDS] [SECONDS]   (from the top folder,
# after make; needs nginx and wrk, as make bench installs them).
set -eu
rounds=${1:-3}
secs=${2:-8}
top=$(pwd)
dir=$(mktemp -d /tmp/agate-policies.XXXXXX)
up=18301 plain=18302 pol=18303
mkdir -p "$dir/tmp"
body='{"ok":true,"data":"0123456789012345678901234567890123456789012345678901234567890123456789"}'
sed -e "s#@NOFILE@#20000#;s#@DIR@#$dir#g;s#@CONNS@#10000#;s#@PORT@#$up#" \
    -e "s#@BODY@#$body#" tests/bench/upstream.nginx.conf > "$dir/up.conf"
mkdir -p "$dir/www"
nginx -c "$dir/up.conf" -p "$dir" &
upid=$!
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
EOC
}
common $plain > "$dir/plain.yaml"
{ common $pol; cat <<EOC
    max_concurrent: 256
    max_queue: 512
    retry: { attempts: 3, backoff: 25ms }
    circuit_breaker: { failures: 5, open_for: 10s }
    health_check: { path: /, interval: 1s, timeout: 1s }
EOC
} > "$dir/pol.yaml"
for f in plain pol; do
	printf 'routes:\n  - path: /\n    upstream: up\n    timeout: 10s\n' \
	    >> "$dir/$f.yaml"
done
"$top/agate" -c "$dir/plain.yaml" 2> "$dir/plain.err" &
apid=$!
"$top/agate" -c "$dir/pol.yaml" 2> "$dir/pol.err" &
bpid=$!
trap 'kill $apid $bpid 2>/dev/null; kill -QUIT $upid 2>/dev/null; wait; rm -rf "$dir"' EXIT
sleep 1.5
curl -fsS -o /dev/null "http://127.0.0.1:$plain/x"
curl -fsS -o /dev/null "http://127.0.0.1:$pol/x"
rps() {
	wrk -t2 -c50 -d"${secs}s" --latency "http://127.0.0.1:$1/x" |
	    awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {print r, p}'
}
echo "round  no-policies(req/s p99)  policies(req/s p99)  ratio"
i=1
while [ $i -le "$rounds" ]; do
	a=$(rps $plain)
	b=$(rps $pol)
	echo "$i  $a  $b" | awk '{printf "%-6s %-10s %-12s %-10s %-12s %.3f\n", $1, $2, $3, $4, $5, $4/$2}'
	i=$((i + 1))
done
