#!/usr/bin/env bash
# Installs the Debian packages Sluice needs, only those missing.
# Build: meson ninja-build pkg-config gcc libev-dev libsqlite3-dev.
# Tests: libcmocka-dev, python3, and the test-only librdkafka-dev and kcat
# (they prove compatibility with real Kafka clients).
set -euo pipefail
pkgs=(gcc meson ninja-build pkg-config libev-dev libsqlite3-dev libcmocka-dev
      librdkafka-dev kcat python3 sqlite3)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
