#!/bin/sh
# `make run`: the two example upstreams in the background, agate in the
# foreground on the bundled config.  Ctrl-C stops all three.
set -u
AGATE=$1 TESTUP=$2 CONFIG=$3

"$TESTUP" -l 127.0.0.1:9001 -n users-1 >/dev/null &
UP1=$!
"$TESTUP" -l 127.0.0.1:9002 -n users-2 >/dev/null &
UP2=$!
trap 'kill $UP1 $UP2 2>/dev/null' EXIT
trap 'exit 0' INT TERM

cat <<MSG
agate on http://localhost:8080 (this machine only) with example upstreams users-1 (:9001) and
users-2 (:9002).  Try, from another terminal:
  curl -i localhost:8080/api/users/42
  curl -i localhost:8080/healthz
  curl -i -X POST localhost:8080/api/users/ -d '{"name":"ada"}'
  curl -i 'localhost:8080/api/users/42?status=503'    (retried, then passed on)
  curl -s localhost:8080/api/dashboard/42             (fan-out: three calls)
Ctrl-C stops everything.
MSG
"$AGATE" -c "$CONFIG"
