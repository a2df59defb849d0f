#!/bin/sh
# TLS termination against nginx: the same P-256 certificate, the same
# 1-worker nginx upstream, 2 workers each, wrk in interleaved rounds.
#   keep-alive: 50 connections, many requests each (record layer cost)
#   handshake:  a new TLS connection per request (handshake cost)
# Usage: tests/bench/tls.sh [ROUNDS] [SECONDS]  (from the top folder,
# after make; needs nginx, wrk and openssl).
set -eu
rounds=${1:-3}
secs=${2:-8}
top=$(pwd)
dir=$(mktemp -d /tmp/agate-tls-bench.XXXXXX)
chmod 755 "$dir"
up=18321 ag=18322 ng=18323
mkdir -p "$dir/tmp" "$dir/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 -subj /CN=bench \
    2>/dev/null
body='{"ok":true,"data":"0123456789012345678901234567890123456789012345678901234567890123456789"}'
sed -e "s#@NOFILE@#20000#;s#@DIR@#$dir#g;s#@CONNS@#10000#;s#@PORT@#$up#" \
    -e "s#@BODY@#$body#" tests/bench/upstream.nginx.conf > "$dir/up.conf"
sed -e "s#@WORKERS@#2#;s#@NOFILE@#20000#;s#@DIR@#$dir#g;s#@CONNS@#10000#" \
    -e "s#@UPSTREAM_PORT@#$up#;s#@KEEPALIVE@#64#" \
    -e "s#listen 127.0.0.1:@PORT@ backlog=4096;#listen 127.0.0.1:$ng ssl backlog=4096; ssl_certificate $dir/cert.pem; ssl_certificate_key $dir/key.pem; ssl_protocols TLSv1.2 TLSv1.3;#" \
    tests/bench/proxy.nginx.conf > "$dir/proxy.conf"
cat > "$dir/agate.yaml" <<EOC
server:
  listen:
    - address: "127.0.0.1:$ag"
      tls: { cert: cert.pem, key: key.pem }
  workers: 2
  pid_file: agate.pid
log: { access: "off", level: warn }
upstreams:
  up: { servers: ["http://127.0.0.1:$up"], keepalive: 64 }
routes:
  - path: /
    upstream: up
EOC
nginx -c "$dir/up.conf" -p "$dir" & upid=$!
nginx -c "$dir/proxy.conf" -p "$dir" & npid=$!
"$top/agate" -c "$dir/agate.yaml" 2> "$dir/agate.err" & apid=$!
trap 'kill $apid 2>/dev/null; kill -QUIT $npid $upid 2>/dev/null; wait; rm -rf "$dir"' EXIT
sleep 1.5
curl -kfsS -o /dev/null "https://127.0.0.1:$ag/x"
curl -kfsS -o /dev/null "https://127.0.0.1:$ng/x"
run() {	# port conns [extra wrk args]
	p=$1 c=$2; shift 2
	wrk -t2 -c"$c" -d"${secs}s" --latency "$@" "https://127.0.0.1:$p/x" |
	    awk '/Requests\/sec/ {r=$2} /^ +99%/ {q=$2} END {print r, q}'
}
for mode in keep-alive handshake; do
	echo "$mode: round  agate(req/s p99)  nginx(req/s p99)  ratio"
	i=1
	while [ $i -le "$rounds" ]; do
		if [ $mode = keep-alive ]; then
			a=$(run $ag 50); b=$(run $ng 50)
		else
			a=$(run $ag 20 -H "Connection: close")
			b=$(run $ng 20 -H "Connection: close")
		fi
		echo "$i $a $b" | awk '{printf "  %-3s %-10s %-8s %-10s %-8s %.3f\n", $1, $2, $3, $4, $5, $2/$4}'
		i=$((i + 1))
	done
done
