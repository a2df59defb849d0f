#!/bin/sh
# Prepares a fresh checkout for ./configure.  On Debian/Ubuntu it first
# makes sure the build dependencies are there: as root it installs what is
# missing with apt-get; otherwise it prints the apt-get line to run.
set -e
cd "$(dirname "$0")"

# Build and test dependencies, as Debian package names (see README.md).
# The tests use openssl (test certificates), nginx (an HTTP/2 upstream;
# its own system service is not started) and headless chromium with
# chromium-driver (the admin status page); `make fuzz` needs clang and
# its libFuzzer runtime, `make check-valgrind` valgrind.
PACKAGES="build-essential autoconf automake libtool pkg-config \
libevent-dev libcurl4-openssl-dev libssl-dev libyaml-dev libjansson-dev \
zlib1g-dev libcrypt-dev libhiredis-dev libcmocka-dev python3 curl \
openssl nginx chromium chromium-driver \
clang libclang-rt-14-dev valgrind redis-server python3-websockets \
libnghttp2-dev nghttp2-client python3-h2 python3-grpcio"

if command -v dpkg-query >/dev/null 2>&1; then
	missing=""
	for p in $PACKAGES; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		    grep -q "ok installed"; then
			missing="$missing $p"
		fi
	done
	if [ -n "$missing" ]; then
		if [ "$(id -u)" = 0 ]; then
			echo "autogen.sh: installing:$missing"
			export DEBIAN_FRONTEND=noninteractive
			# Keep packages from starting services (nginx on :80).
			ours=""
			if [ ! -e /usr/sbin/policy-rc.d ]; then
				printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
				chmod 755 /usr/sbin/policy-rc.d
				ours=1
				trap 'rm -f /usr/sbin/policy-rc.d' EXIT
			fi
			apt-get update -qq
			# shellcheck disable=SC2086
			apt-get install -y -qq --no-install-recommends $missing
			if [ -n "$ours" ]; then
				rm -f /usr/sbin/policy-rc.d
				trap - EXIT
			fi
		else
			echo "autogen.sh: missing packages; run as root:" >&2
			echo "  apt-get install$missing" >&2
			exit 1
		fi
	fi
fi

mkdir -p m4
autoreconf --install --force
echo "autogen.sh: done; now run ./configure"
