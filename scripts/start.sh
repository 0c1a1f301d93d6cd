#!/usr/bin/env bash
# Installs what is missing, builds (release), starts sluiced on 127.0.0.1:9092
# with its data in ./data.  Extra arguments go to sluiced (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build --buildtype=release -Dtests=false >/dev/null
ninja -C build broker/sluiced
exec build/broker/sluiced --data-dir ./data --listen 127.0.0.1:9092 "$@"
