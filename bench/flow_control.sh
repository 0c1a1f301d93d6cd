#!/bin/sh
# Produce-gate figures (issue #6, docs/flow-control.md): reject latency,
# release pacing, gate decision cost.
#
# usage: bench/flow_control.sh [BUILD_DIR] [ROUNDS]
#        (defaults: build-fcrel, 3 rounds of each reject/pacing run)
#
# Starts its own sluiced on 127.0.0.1 (ephemeral port, fresh data directory
# under ${TMPDIR:-/tmp}, page-cache durability), then runs, printing each
# exact command before its output:
#   1. bench/reject_latency: topic at 1,000 msgs/s, burst 100, no queue;
#      20,000 msgs/s offered for 3 s in requests of 10, then of 1;
#   2. bench/release_pacing: topic at 100,000 msgs/s, burst 10, queue
#      500 ms, 4 connections x 16 requests of 10 in flight, 2 s; then
#      200,000 msgs/s (requests of 10) and 1,000,000 msgs/s (of 100);
#   3. bench/gate_cost.
# Every run reports the CPU other processes used meanwhile: on a shared
# machine read the latency figures with it.  SLUICED overrides the broker.
set -eu
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-build-fcrel}
rounds=${2:-3}
case $build in /*) ;; *) build=$root/$build ;; esac

sluiced=${SLUICED:-$build/broker/sluiced}
rl=$build/bench/reject_latency
rp=$build/bench/release_pacing
gc=$build/bench/gate_cost
for p in "$sluiced" "$rl" "$rp" "$gc"; do
	[ -x "$p" ] || { echo "no $p (build it first: ninja -C $build)" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-flow-bench.XXXXXX")
mkdir -p "$dir/data"
"$sluiced" -d "$dir/data" -l 127.0.0.1:0 --port-file "$dir/port" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
wait_port "$dir"
b=127.0.0.1:$(cat "$dir/port")
echo "sluiced $sluiced (pid $pid) on $b; load average $(cut -d' ' -f1-3 /proc/loadavg)"

run() {
	echo
	echo "\$ $*"
	"$@" | grep -v '^RESULT '
}

n=0
for m in 10 1; do
	r=1
	while [ $r -le "$rounds" ]; do
		n=$((n + 1))
		run "$rl" -b "$b" -t "rejlat$n" -r 20000 -m $m -d 3000 --rate 1000 --burst 100 \
			--broker-pid $pid
		r=$((r + 1))
	done
done
r=1
while [ $r -le "$rounds" ]; do
	n=$((n + 1))
	run "$rp" -b "$b" -t "paced$n" --rate 100000 --burst 10 -m 10 -c 4 -w 16 -d 2000 \
		--broker-pid $pid
	r=$((r + 1))
done
n=$((n + 1))
run "$rp" -b "$b" -t "paced$n" --rate 200000 --burst 10 -m 10 -c 4 -w 32 -d 2000 --broker-pid $pid
n=$((n + 1))
run "$rp" -b "$b" -t "paced$n" --rate 1000000 --burst 100 -m 100 -c 4 -w 16 -d 2000 \
	--broker-pid $pid
run "$gc"
