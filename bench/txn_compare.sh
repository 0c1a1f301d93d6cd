#!/bin/sh
# Transactional throughput, interleaved between builds (issue #5,
# docs/benchmarks.md "Transactional messages").
#
# usage: bench/txn_compare.sh ROUNDS BUILD_DIR[:MODE] ...
#   MODE: "default" (no flag: pipelined on one connection since session 3,
#   one thread per transaction before, when --threads did not exist yet)
#   or "threads" (--threads).
# env:   C (transactions in flight, default 32), D (seconds per run, 5),
#        DURABILITY (pagecache | fsync, default pagecache).
# e.g.:  bench/txn_compare.sh 5 /tmp/old/build-rel build-rel build-rel:threads
#
# Each round runs every build once, each on a fresh broker (its own
# sluiced, ephemeral port on 127.0.0.1, fresh data directory under
# ${TMPDIR:-/tmp}) with a fresh 1-partition topic, then measures the disk's
# synchronous 16 KiB write latency with dd (the floor under every durable
# step; it moves with the host's load, so compare builds within a round).
# Prints one line per run: round, build, txn/s, p50 and p99 in µs, then
# the client's prepare / end latencies and the broker's "coordinator:" line
# (batches and WAL syncs: jobs per batch, SQL time, a job's wait for its
# batch, the wait for a syncer, sync and completion times) where the build
# reports them.  After each round: dd, and the ceiling of the round
# (bench/txn_floor of the first build, if it has one: the same syncs in
# series, with no broker).
set -eu
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { sed -n '2,25p' "$0" >&2; exit 2; }
rounds=$1
shift
conc=${C:-32}
dur=${D:-5}
durability=${DURABILITY:-pagecache}
dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-txn-bench.XXXXXX")
pid=
stop_broker() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
trap 'stop_broker; rm -rf "$dir"' EXIT INT TERM

for spec in "$@"; do
	b=${spec%%:*}
	for p in "$b/broker/sluiced" "$b/client/sluice"; do
		[ -x "$p" ] || { echo "no $p (build it first)" >&2; exit 1; }
	done
done

# Every other round runs the builds in reverse order: the first run of a
# round came out slower in A/A runs (same build twice: 0.85-0.94x in 3
# rounds), so a fixed order would favour the later builds.
forward="$*"
reverse=
for spec in "$@"; do reverse="$spec $reverse"; done
r=1
while [ "$r" -le "$rounds" ]; do
	order=$forward
	[ $((r % 2)) -eq 0 ] && order=$reverse
	# shellcheck disable=SC2086 # build specs contain no spaces
	for spec in $order; do
		b=${spec%%:*}
		mode=default
		[ "$spec" = "$b" ] || mode=${spec#*:}
		extra=
		[ "$mode" = threads ] && extra=--threads
		rm -rf "$dir/data" "$dir/port"
		"$b/broker/sluiced" -d "$dir/data" -l 127.0.0.1:0 --port-file "$dir/port" \
			--set "log.durability=$durability" >"$dir/log" 2>&1 &
		pid=$!
		wait_port "$dir"
		addr=127.0.0.1:$(cat "$dir/port")
		"$b/client/sluice" -b "$addr" topic create tt --partitions 1 >/dev/null
		# shellcheck disable=SC2086 # $extra is empty or one word
		out=$("$b/client/sluice" -b "$addr" bench txn -t tt -d "$dur" -c "$conc" $extra \
			2>/dev/null || true)
		line=$(echo "$out" | grep '^txn: .* msgs of' || true)
		stop_broker
		echo "$r $spec $(echo "$line" |
			sed -E 's/.*: ([0-9]+) msgs\/s.*p50 ([0-9]+) us, p99 ([0-9]+) us.*/\1 txn\/s p50 \2 p99 \3/')"
		# the two round trips (pipelined mode) and where the coordinator's
		# time went (builds since session 4 print and log them)
		echo "$out" | sed -n 's/^txn: prepare/   prepare/p'
		sed -n 's/.*INFO coordinator: /   /p' "$dir/log"
	done
	dd if=/dev/zero of="$dir/ddf" bs=16k count=1000 oflag=dsync conv=notrunc 2>&1 | tail -1 |
		awk '{ printf "   dd 16 KiB O_DSYNC: %.0f us per write\n", $(NF-3) * 1e6 / 1000 }'
	# the ceiling of the round: the same syncs with no broker at all
	# (bench/txn_floor.c; fsync durability waits for two syncs in series,
	# page cache for the prepare's only)
	floor=$(realpath "${1%%:*}/bench/txn_floor" 2>/dev/null || true)
	if [ -x "$floor" ]; then
		one=
		[ "$durability" = fsync ] || one=-1
		# shellcheck disable=SC2086 # $one is empty or one word
		(cd "$dir" && "$floor" -c "$conc" -d "$dur" $one | head -1 | sed 's/^/   /')
	fi
	r=$((r + 1))
done
