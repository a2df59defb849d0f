#!/bin/sh
# Builds agate's libFuzzer targets with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer, then runs each one for SECONDS (default 60)
# on its corpus.  `make fuzz` calls this with:
#   FUZZ_SRCDIR   the source tree
#   FUZZ_SOURCES  agate's library sources (libagate_a_SOURCES)
# A crash stops the run with exit 1 and leaves its input in
# build-fuzz/crashes/; copy it into tests/fuzz/corpus/TARGET/ once fixed,
# and `make check` replays it from then on.
set -eu
secs=${1:-60}
src=${FUZZ_SRCDIR:?}
out=${FUZZ_BUILD:-$PWD/build-fuzz}
targets="request path frame config websocket h2 h2up cache status hosts traceparent"
cc=${CLANG:-clang}

command -v "$cc" >/dev/null || {
	echo "fuzz: $cc is missing (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
}
mkdir -p "$out/obj" "$out/crashes"
pkgs="libevent libcurl openssl yaml-0.1 jansson zlib libcrypt hiredis libnghttp2"
flags="-g -O1 -fno-omit-frame-pointer -std=c11 \
-fsanitize=address,undefined -fno-sanitize-recover=undefined \
-D_GNU_SOURCE -DPACKAGE_VERSION=\"fuzz\" -DAGATE_CONF_PATH=\"/dev/null\" \
-I$src $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lm"

# The library, instrumented for coverage.  Only what changed is rebuilt.
objs=""
for f in $FUZZ_SOURCES; do
	case $f in *.c) ;; *) continue ;; esac
	o="$out/obj/$(echo "$f" | tr / _).o"
	if [ ! -f "$o" ] || [ "$src/$f" -nt "$o" ]; then
		# shellcheck disable=SC2086
		$cc $flags -fsanitize=fuzzer-no-link -c "$src/$f" -o "$o"
	fi
	objs="$objs $o"
done
for t in $targets; do
	# shellcheck disable=SC2086
	$cc $flags -fsanitize=fuzzer "$src/tests/fuzz/fuzz_$t.c" $objs \
	    $libs -o "$out/fuzz_$t"
done
[ "$secs" = 0 ] && exit 0

# Two at a time (the machine has two cores); each on a copy of its seeds.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
run() {
	t=$1
	mkdir -p "$out/corpus/$t"
	cp -n "$src/tests/fuzz/corpus/$t/"* "$out/corpus/$t/" 2>/dev/null || :
	if "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -max_len=65536 -print_final_stats=1 \
	    -artifact_prefix="$out/crashes/$t-" "$out/corpus/$t" \
	    > "$out/fuzz_$t.log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' \
		    "$out/fuzz_$t.log")
		echo "fuzz: $t: ${execs:-?} executions in ${secs}s, no crash"
	else
		echo "fuzz: $t FAILED; see $out/fuzz_$t.log:" >&2
		tail -40 "$out/fuzz_$t.log" >&2
		return 1
	fi
}
set -- $targets
while [ $# -gt 0 ]; do
	run "$1" & p1=$!
	p2=""
	if [ $# -gt 1 ]; then run "$2" & p2=$!; fi
	wait "$p1" || status=1
	[ -z "$p2" ] || wait "$p2" || status=1
	shift; [ $# -gt 0 ] && shift
done
exit $status
