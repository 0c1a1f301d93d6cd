#!/bin/sh
# Produce throughput of sluiced with small messages.
#
# usage: bench/produce_kcat.sh [BUILD_DIR] [N] [SIZE] [PARTITIONS]
#        (defaults: build, 5000000 messages, 100 bytes, 1 partition)
#
# Starts its own sluiced on 127.0.0.1 (ephemeral port) with a fresh data
# directory under ${TMPDIR:-/tmp} and page-cache durability, creates the
# topics, then measures
#   1. rdk_roundtrip bench-produce (librdkafka, acks=all, linger 5 ms,
#      batches up to 10000 messages / 1 MB) if it was built, and
#   2. kcat -P reading N lines of SIZE bytes from a file (acks=all),
# and prints the exact commands with msgs/s and MB/s.  Environment:
# SLUICED / RDK_ROUNDTRIP / KCAT override the programs, EXTRA_SETS adds
# broker --set options (space separated KEY=VALUE).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-build}
n=${2:-5000000}
size=${3:-100}
parts=${4:-1}
case $build in /*) ;; *) build=$root/$build ;; esac

sluiced=${SLUICED:-$build/broker/sluiced}
rdk=${RDK_ROUNDTRIP:-$build/tests/integration/rdk_roundtrip}
kcat=${KCAT:-kcat}

[ -x "$sluiced" ] || { echo "no sluiced at $sluiced (build it first)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

sets="--set log.durability=pagecache --set num.partitions=$parts"
for kv in ${EXTRA_SETS:-}; do sets="$sets --set $kv"; done
# shellcheck disable=SC2086
"$sluiced" -d "$work/data" -l 127.0.0.1:0 --port-file "$work/port" $sets \
	2>"$work/broker.log" &
pid=$!
i=0
while [ ! -s "$work/port" ]; do
	i=$((i + 1))
	if [ $i -gt 400 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "sluiced did not start; its log:" >&2
		cat "$work/broker.log" >&2
		exit 1
	fi
	sleep 0.05
done
addr=127.0.0.1:$(cat "$work/port")

echo "== $("$sluiced" --version 2>/dev/null || echo sluiced) at $addr"
echo "   $sluiced -d $work/data -l 127.0.0.1:0 --port-file $work/port $sets"
echo "   host: $(nproc) cpus, $(uname -sr); data dir on $(df -P "$work" | awk 'NR==2 {print $1}')"

# Create the topics up front (CreateTopics through the test harness codec).
python3 - "$addr" "$parts" <<EOF
import sys
sys.path.insert(0, "$root/tests/integration")
from harness import Conn
with Conn(sys.argv[1]) as c:
    for t in ("bench-rdk", "bench-kcat"):
        c.create_topic(t, int(sys.argv[2]))
EOF

now() { date +%s.%N; }
rate() { # count bytes seconds
	awk -v n="$1" -v b="$2" -v t="$3" \
		'BEGIN { printf "%.0f msgs/s, %.1f MB/s (%.3f s)\n", n / t, b / t / 1e6, t }'
}

if [ -x "$rdk" ]; then
	echo
	echo "== librdkafka: $n messages x $size bytes, acks=all, $parts partition(s)"
	echo "   $rdk bench-produce $addr bench-rdk $n $size"
	"$rdk" bench-produce "$addr" bench-rdk "$n" "$size"
else
	echo "(rdk_roundtrip not built: $rdk; skipping the librdkafka figure)"
fi

if command -v "$kcat" >/dev/null 2>&1; then
	echo
	echo "== kcat: $n lines x $size bytes from a file, acks=all, $parts partition(s)"
	line=$(head -c "$size" /dev/zero | tr '\0' 'x')
	awk -v n="$n" -v l="$line" 'BEGIN { for (i = 0; i < n; i++) print l }' \
		>"$work/lines.txt"
	echo "   $kcat -P -b $addr -t bench-kcat -X acks=all -X linger.ms=5 -X batch.num.messages=10000 -l $work/lines.txt"
	t0=$(now)
	"$kcat" -P -b "$addr" -t bench-kcat -X acks=all -X linger.ms=5 \
		-X batch.num.messages=10000 -l "$work/lines.txt"
	t1=$(now)
	printf "kcat -P: %s msgs x %s B: " "$n" "$size"
	rate "$n" $((n * size)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
else
	echo "(kcat not found; skipping the kcat figure)"
fi

echo
echo "== on disk: $(du -sh "$work/data" | cut -f1) in $work/data"
kill -TERM "$pid"
wait "$pid" && echo "sluiced exited 0 after SIGTERM" || echo "sluiced exit status $?"
pid=
