#!/usr/bin/env bash
# run.sh — one whole flash sale, end to end, with its checks.
#
#   1. starts a broker (unless --brokers / $SLUICE_BROKERS names one),
#   2. creates the topic with a token-bucket produce gate and no queue
#      (produce.rate.messages, produce.burst.messages, produce.queue.max.wait.ms=0),
#   3. runs the gateway: N simulated users press "buy" within D ms; the broker
#      admits burst + rate/s and rejects the rest at once,
#   4. runs the order worker until the topic is drained (one SQLite
#      transaction per message), then once more from the beginning to show
#      that redelivered messages change nothing,
#   5. prints the figures and verifies: stock >= 0, orders <= stock, no user in
#      two orders, orders == min(stock, admitted distinct users), the admitted
#      count within the bucket's bound.  Exit status 1 on any violation.
#
# Usage: run.sh [--short] [--requests N] [--duration-ms MS] [--rate R]
#               [--burst B] [--stock S] [--producers K] [--batch N] [--topic NAME]
#               [--brokers HOST:PORT] [--keep]
#   --short     20,000 requests in 1 s (the test suite's run)
#   default     100,000 requests in 1 s, rate 1000 msgs/s, burst 100, stock 500
#
# Programs (found next to this script, in ./build/examples, or set them):
#   GATEWAY  flash-sale gateway     WORKER   order worker
#   SLUICE   the sluice CLI         SLUICED  the broker (when none is given)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
requests=100000
duration_ms=1000
rate=1000
burst=100
stock=500
producers=4
batch=1
topic=seckill
brokers=${SLUICE_BROKERS:-}
keep=0

while [ $# -gt 0 ]; do
	case "$1" in
	--short) requests=20000; duration_ms=1000 ;;
	--requests) requests=$2; shift ;;
	--duration-ms) duration_ms=$2; shift ;;
	--rate) rate=$2; shift ;;
	--burst) burst=$2; shift ;;
	--stock) stock=$2; shift ;;
	--producers) producers=$2; shift ;;
	--batch) batch=$2; shift ;;
	--topic) topic=$2; shift ;;
	--brokers) brokers=$2; shift ;;
	--keep) keep=1 ;;
	-h|--help) sed -n '2,24p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

# find_prog VAR name-next-to-script meson-target-name
find_prog() {
	local var=$1 local_name=$2 meson_name=$3 cand
	if [ -n "${!var:-}" ]; then
		return 0
	fi
	for cand in "$here/$local_name" "$here/../../build/examples/$meson_name" \
		"$here/../../build/$meson_name"; do
		if [ -x "$cand" ]; then
			printf -v "$var" '%s' "$cand"
			return 0
		fi
	done
	if command -v "$meson_name" >/dev/null 2>&1; then
		printf -v "$var" '%s' "$(command -v "$meson_name")"
		return 0
	fi
	echo "run.sh: cannot find $local_name; set $var" >&2
	exit 2
}
find_prog GATEWAY gateway flash_sale_gateway
find_prog WORKER worker flash_sale_worker
find_prog SLUICE sluice client/sluice

work=$(mktemp -d "${TMPDIR:-/tmp}/flash-sale.XXXXXX")
broker_pid=
cleanup() {
	if [ -n "$broker_pid" ]; then
		kill -TERM "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
	fi
	if [ "$keep" = 1 ]; then
		echo "run.sh: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

if [ -z "$brokers" ]; then
	find_prog SLUICED sluiced broker/sluiced
	"$SLUICED" -d "$work/data" -l 127.0.0.1:0 --port-file "$work/port" \
		>"$work/broker.log" 2>&1 &
	broker_pid=$!
	for _ in $(seq 1 200); do
		[ -s "$work/port" ] && break
		if ! kill -0 "$broker_pid" 2>/dev/null; then
			echo "run.sh: broker exited; its log:" >&2
			cat "$work/broker.log" >&2
			broker_pid=
			exit 1
		fi
		sleep 0.05
	done
	[ -s "$work/port" ] || { echo "run.sh: broker wrote no port file" >&2; exit 1; }
	brokers="127.0.0.1:$(cat "$work/port")"
	echo "broker: $SLUICED on $brokers (data in $work/data)"
else
	echo "broker: $brokers"
fi

# One partition: a produce request carries at most one batch per partition,
# so with batch.num.messages=1 one request = one user = one token.
"$SLUICE" -b "$brokers" topic create "$topic" --partitions 1 \
	--config "produce.rate.messages=$rate" \
	--config "produce.burst.messages=$burst" \
	--config "produce.queue.max.wait.ms=0"
echo "topic $topic: produce.rate.messages=$rate produce.burst.messages=$burst" \
	"produce.queue.max.wait.ms=0 (fail fast); stock $stock"
echo

echo "== gateway: $requests buy requests in $duration_ms ms"
gw_rc=0
"$GATEWAY" -b "$brokers" -t "$topic" -n "$requests" -d "$duration_ms" \
	-P "$producers" -B "$batch" --stats "$work/gateway.stats" || gw_rc=$?
if [ ! -s "$work/gateway.stats" ]; then
	echo "run.sh: the gateway failed (status $gw_rc)" >&2
	exit 1
fi
# shellcheck disable=SC1091
. "$work/gateway.stats"
echo

echo "== worker: orders from the topic until it is drained"
"$WORKER" -b "$brokers" -t "$topic" --db "$work/orders.db" --stock "$stock"
echo "== worker again, from the beginning (every message delivered twice)"
"$WORKER" -b "$brokers" -t "$topic" --db "$work/orders.db" --stock "$stock" \
	--from-beginning | tee "$work/redelivery.out"
echo

expect=$(( ADMITTED_USERS < stock ? ADMITTED_USERS : stock ))
echo "== summary"
printf '  offered          %8d requests (%d distinct users)\n' "$OFFERED" "$DISTINCT_USERS"
printf '  admitted         %8d requests (%d distinct users)\n' "$ADMITTED" "$ADMITTED_USERS"
printf '  rejected         %8d "sold out, try later"\n' "$REJECTED"
printf '  admitted rate    %s msgs/s over %s s; configured %s msgs/s + burst %s (bound %s)\n' \
	"$ADMITTED_RATE" "$WINDOW_S" "$RATE" "$BURST" "$BOUND"
printf '  reject latency   p50 %s ms  p99 %s ms  p99.9 %s ms\n' \
	"$REJ_P50_MS" "$REJ_P99_MS" "$REJ_P999_MS"
fail=0
"$WORKER" --db "$work/orders.db" --stock "$stock" --check --expect-orders "$expect" || fail=1
bad() { echo "  FAILED $*"; fail=1; }
okay() { echo "  ok     $*"; }
if [ "$gw_rc" != 0 ]; then bad "gateway exit status $gw_rc"; fi
if [ "$FAILED" != 0 ]; then bad "$FAILED requests failed with other errors"; fi
if [ $(( ADMITTED + REJECTED )) -ne "$OFFERED" ]; then
	bad "admitted + rejected != offered"
else
	okay "every user answered (admitted + rejected == offered)"
fi
if awk -v a="$ADMITTED" -v b="$BOUND" 'BEGIN { exit !(a <= b) }'; then
	okay "admitted <= burst + rate x T ($ADMITTED <= $BOUND)"
else
	bad "admitted $ADMITTED > bucket bound $BOUND"
fi
high=$( { "$SLUICE" -b "$brokers" consume "$topic" --from beginning --exit-at-end \
	--timeout 10000 || true; } | wc -l)
if [ "$high" -eq "$ADMITTED" ]; then
	okay "the topic holds exactly the admitted requests ($high)"
else
	bad "the topic holds $high messages, the gateway saw $ADMITTED admitted"
fi
if grep -q ': 0 orders created' "$work/redelivery.out"; then
	okay "redelivery of all $high messages created no order"
else
	bad "redelivery created orders"
fi
if [ "$fail" = 0 ]; then
	echo "ALL CHECKS PASSED: no oversell"
else
	echo "CHECKS FAILED"
	exit 1
fi
