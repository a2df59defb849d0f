#!/bin/sh
# Prepares a fresh checkout for ./configure.  On Debian/Ubuntu it first
# makes sure the build dependencies are there: as root it installs what is
# missing with apt-get; otherwise it prints the apt-get line to run.
set -e
cd "$(dirname "$0")"

# Build dependencies, as Debian package names (see docs/building.md).
PACKAGES="build-essential autoconf automake libtool pkg-config \
libevent-dev libcurl4-openssl-dev libssl-dev libyaml-dev libjansson-dev \
zlib1g-dev libcrypt-dev libcmocka-dev python3 curl"

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
			apt-get update -qq
			# shellcheck disable=SC2086
			apt-get install -y -qq --no-install-recommends $missing
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
