#!/bin/sh
# `make run`: the two example upstreams in the background, agate in the
# foreground on the bundled config.  Ctrl-C stops all three.
#
# The bundled config is the one agate.service runs: its pid file is in
# /run/agate, which systemd makes.  So agate runs on a copy of etc/ in a
# temporary folder, with the pid file next to the copy.
set -u
AGATE=$1 TESTUP=$2 CONFIG=$3

RUN=$(mktemp -d "${TMPDIR:-/tmp}/agate-run.XXXXXX") || exit 1
cp -R "$(dirname "$CONFIG")/." "$RUN/"
sed 's|^\(  pid_file:\).*|\1 agate.pid|' "$CONFIG" > "$RUN/agate.yaml"

"$TESTUP" -l 127.0.0.1:9001 -n users-1 >/dev/null &
UP1=$!
"$TESTUP" -l 127.0.0.1:9002 -n users-2 >/dev/null &
UP2=$!
trap 'kill $UP1 $UP2 2>/dev/null; rm -rf "$RUN"' EXIT
trap 'exit 0' INT TERM

cat <<MSG
agate on http://localhost:8080 (this machine only) with example upstreams users-1 (:9001) and
users-2 (:9002).  Try, from another terminal:
  curl -i localhost:8080/api/users/42
  curl -i localhost:8080/healthz
  curl -i -X POST localhost:8080/api/users/ -d '{"name":"ada"}'
  curl -i 'localhost:8080/api/users/42?status=503'    (retried, then passed on)
  curl -s localhost:8080/api/dashboard/42             (fan-out: three calls)
  /usr/bin/python3 -m websockets ws://localhost:8080/ws/echo   (WebSocket echo)
  $AGATE -s reload -c $RUN/agate.yaml   (after editing that copy)
Ctrl-C stops everything.
MSG
"$AGATE" -c "$RUN/agate.yaml"
