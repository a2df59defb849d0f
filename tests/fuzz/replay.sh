#!/bin/sh
# `make check`: every fuzz target's seeds and past crashes, replayed by
# the plain build (tests/fuzz/replay_TARGET), so they stay fixed.
set -eu
dir=$(dirname "$0")
for t in request path frame config websocket h2 h2up cache status hosts traceparent; do
	"./tests/fuzz/replay_$t" "$dir/corpus/$t"
done
