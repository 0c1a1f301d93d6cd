#!/usr/bin/env bash
# run.sh — the order_cart scenario with injected failures, end to end, and
# the checks that the order database, the topic and the cart database agree.
#
#   setup    a broker of its own (free port, temporary data directory), topic
#            order-created (4 partitions), carts filled from the workload,
#            two cart services (static members cart-a, cart-b of the group
#            cart-service) sharing cart.db
#   phase 1  order service killed after prepare (inside its local transaction,
#            before SQLite): restarted, its check-back rolls the orphan back
#   phase 2  order service killed after the local COMMIT, before the end:
#            restarted, its check-back finds the order and commits the message
#   phase 3  broker killed mid-commit (SLUICED_CRASH_AT=<point> when the
#            broker has that test hook, else SIGKILL while orders commit):
#            restarted on the same port, the commit lands exactly once
#   phase 4  cart service killed mid-batch (--crash-after: after a message's
#            SQLite commit, before the batch's offset commit): restarted, the
#            redelivered messages are skipped
#   then     waits until no transaction is PENDING and the group has consumed
#            the whole topic, and checks (sqlite3 over both databases, the
#            broker's transaction list, the topic read from the beginning):
#            every committed order cleared its cart exactly once, no cart was
#            touched for an order that does not exist, rolled-back orders left
#            the carts alone, the topic holds each committed order once.
#            Prints PASS/FAIL lines; exit status 1 on any failure.
#
# Usage: run.sh [--short] [--users M] [--seed S] [--keep] [--no-dedup]
#   --short     the test suite's run: 64+ checkouts, one broker crash point
#   default     240+ checkouts, the broker crashed at every commit crash point
#   --keep      keep the work directory (databases, logs) and print its path
#   --no-dedup  run the cart services WITHOUT their redelivery check, to see
#               the checks fail: redelivered orders clear carts twice
#
# Programs (found next to this script, in ./build, on PATH, or set them):
#   ORDER_SERVICE  order_service   CART_SERVICE  cart_service
#   SLUICE         the sluice CLI  SLUICED       the broker
# It always starts its own broker: it has to kill and restart it.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
short=0
users=12
seed=7
keep=0
cart_opts=()
while [ $# -gt 0 ]; do
	case "$1" in
	--short) short=1 ;;
	--users) users=$2; shift ;;
	--seed) seed=$2; shift ;;
	--keep) keep=1 ;;
	--no-dedup) cart_opts=(--no-dedup) ;;
	-h|--help) sed -n '2,38p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

if [ "$short" = 1 ]; then
	r1=12 crash1=4 r2=24 crash2=16 r3=48 r4=64 r4max=112 cart_crash=3
	points="txn_commit_appended"
else
	r1=40 crash1=10 r2=80 crash2=50 r3=200 r4=240 r4max=320 cart_crash=10
	points="txn_commit_marked_committing txn_commit_appended txn_commit_marked"
fi
topic=order-created
tgroup=order-service
cgroup=cart-service
check_ms=1000 # transaction.check.timeout.ms for the run (production default: 6000)

# find_prog VAR name-next-to-script meson-target-path
find_prog() {
	local var=$1 local_name=$2 meson_name=$3 cand
	if [ -n "${!var:-}" ]; then
		return 0
	fi
	for cand in "$here/$local_name" "$here/../../build/$meson_name"; do
		if [ -x "$cand" ]; then
			printf -v "$var" '%s' "$cand"
			return 0
		fi
	done
	if command -v "$local_name" >/dev/null 2>&1; then
		printf -v "$var" '%s' "$(command -v "$local_name")"
		return 0
	fi
	echo "run.sh: cannot find $local_name; set $var" >&2
	exit 2
}
find_prog ORDER_SERVICE order_service examples/order_cart_order_service
find_prog CART_SERVICE cart_service examples/order_cart_cart_service
find_prog SLUICE sluice client/sluice
find_prog SLUICED sluiced broker/sluiced
command -v sqlite3 >/dev/null || { echo "run.sh: needs the sqlite3 shell" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/order-cart.XXXXXX")
orders_db=$work/orders.db
cart_db=$work/cart.db
broker_pid='' cart_a_pid='' cart_b_pid='' order_pid='' port=0 brokers='' nbroker=0
unclean='' # processes that did not exit 0 on SIGTERM
t_start=$SECONDS

cleanup() {
	local pid
	for pid in $order_pid $cart_a_pid $cart_b_pid $broker_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $order_pid $cart_a_pid $cart_b_pid $broker_pid; do
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ "$keep" = 1 ]; then
		echo "run.sh: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '[%3ds] %s\n' $((SECONDS - t_start)) "$*"; }
die() { say "run.sh: $*"; echo "FAIL: the scenario could not run"; exit 1; }
sluice() { "$SLUICE" -b "$brokers" "$@"; }
q_orders() { sqlite3 "$orders_db" "$1"; }
q_cart() { sqlite3 "$cart_db" "ATTACH '$orders_db' AS o; $1"; }

# ---- processes ----

# start_broker [NAME=VALUE...]: environment for this broker only.
start_broker() {
	nbroker=$((nbroker + 1))
	rm -f "$work/port"
	env "$@" "$SLUICED" -d "$work/data" -l "127.0.0.1:$port" --port-file "$work/port" \
		>"$work/broker.$nbroker.log" 2>&1 &
	broker_pid=$!
	for _ in $(seq 1 300); do
		[ -s "$work/port" ] && break
		kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.$nbroker.log"; die "broker exited"; }
		sleep 0.05
	done
	[ -s "$work/port" ] || die "the broker wrote no port file"
	port=$(cat "$work/port")
	brokers=127.0.0.1:$port
}

# wait_exit PID SECONDS: sets $rc to its exit status (124: still running).
wait_exit() {
	local pid=$1 limit=$(( $2 * 10 ))
	for _ in $(seq 1 "$limit"); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		rc=124
		return
	fi
	rc=0
	wait "$pid" || rc=$?
}

stop_broker() {
	kill -TERM "$broker_pid"
	wait_exit "$broker_pid" 20
	[ "$rc" = 0 ] || unclean="$unclean broker:$rc"
	broker_pid=
}

# start_cart VAR INSTANCE LOG [options]
start_cart() {
	local var=$1 inst=$2 logf=$3
	shift 3
	"$CART_SERVICE" -b "$brokers" --db "$cart_db" --instance "$inst" ${cart_opts[@]+"${cart_opts[@]}"} \
		"$@" >"$logf" 2>&1 &
	printf -v "$var" '%s' $!
}

# order_service LOG [options]: runs it in the foreground; sets $rc.
order_service() {
	local logf=$1
	shift
	"$ORDER_SERVICE" -b "$brokers" --db "$orders_db" --users "$users" --seed "$seed" \
		--check-timeout-ms "$check_ms" --drain-ms 45000 "$@" >"$logf" 2>&1 &
	order_pid=$!
	wait_exit "$order_pid" 120
	order_pid=
}

# Shows what an order-service run did (its notable lines).
show() { sed 's/^/    | /' "$1"; }

# ---- set-up ----

say "work directory $work"
start_broker
say "broker on $brokers ($SLUICED)"
sluice topic create "$topic" --partitions 4 >/dev/null || die "cannot create $topic"
"$CART_SERVICE" --db "$cart_db" --init-carts --requests "$r4max" --users "$users" --seed "$seed" \
	| sed 's/^/    | /'
start_cart cart_a_pid cart-a "$work/cart-a.log"
start_cart cart_b_pid cart-b "$work/cart-b.1.log"
say "cart services cart-a, cart-b (group $cgroup, static members) started"

# ---- phase 1: order service killed after prepare ----

echo
say "phase 1: order service killed after prepare (checkout $crash1), then restarted"
order_service "$work/order.1.log" --requests "$r1" --crash-at prepared --crash-request "$crash1"
show "$work/order.1.log"
p1_rc=$rc
p1_txn=$(sed -n 's/^CRASH at prepared: .* txn \([0-9]*\):.*/\1/p' "$work/order.1.log")
p1_order=$(sed -n 's/^CRASH at prepared: request [0-9]* order \([0-9a-f]*\) .*/\1/p' "$work/order.1.log")
say "killed (exit status $p1_rc): half message txn ${p1_txn:-?} is PENDING, order ${p1_order:-?} never created"
order_service "$work/order.2.log" --requests "$r1"
show "$work/order.2.log"
[ "$rc" = 0 ] || die "the restarted order service failed (status $rc)"

# ---- phase 2: order service killed after the local commit ----

echo
say "phase 2: order service killed after its local COMMIT (checkout >= $crash2), then restarted"
order_service "$work/order.3.log" --requests "$r2" --crash-at local-committed --crash-request "$crash2"
show "$work/order.3.log"
p2_rc=$rc
p2_txn=$(sed -n 's/^CRASH at local-committed: .* txn \([0-9]*\):.*/\1/p' "$work/order.3.log")
p2_order=$(sed -n 's/^CRASH at local-committed: request [0-9]* order \([0-9a-f]*\) .*/\1/p' "$work/order.3.log")
say "killed (exit status $p2_rc): order ${p2_order:-?} is in orders.db, its txn ${p2_txn:-?} is PENDING"
order_service "$work/order.4.log" --requests "$r2"
show "$work/order.4.log"
[ "$rc" = 0 ] || die "the restarted order service failed (status $rc)"

# ---- phase 3: broker killed mid-commit ----

echo
hook=0
if grep -aq txn_commit_appended "$SLUICED"; then
	hook=1
fi
p3_crashes=0 p3_expected=0 step=0
if [ "$hook" = 1 ]; then
	n=$(wc -w <<<"$points")
	for point in $points; do
		step=$((step + 1))
		upto=$(( r2 + (r3 - r2) * step / n ))
		p3_expected=$((p3_expected + 1))
		say "phase 3.$step: broker restarted with SLUICED_CRASH_AT=$point, orders up to $upto"
		stop_broker
		start_broker SLUICED_CRASH_AT="$point"
		bpid=$broker_pid
		"$ORDER_SERVICE" -b "$brokers" --db "$orders_db" --users "$users" --seed "$seed" \
			--check-timeout-ms "$check_ms" --drain-ms 45000 --requests "$upto" \
			>"$work/order.5.$step.log" 2>&1 &
		order_pid=$!
		wait_exit "$bpid" 30
		if [ "$rc" = 124 ]; then
			say "the broker did not reach $point within 30 s: stopping it"
			stop_broker
		else
			say "broker exited with status $rc at $point (a commit in flight)"
			[ "$rc" = 137 ] && p3_crashes=$((p3_crashes + 1))
			broker_pid=
		fi
		start_broker
		rec=$( { grep -h 'recovered commit' "$work/broker.$nbroker.log" || true; } |
			sed 's/.*transactions: //' | head -3 | tr '\n' ' ')
		say "broker restarted on $brokers: ${rec:-nothing left COMMITTING (the commit was recorded)}"
		wait_exit "$order_pid" 120
		order_pid=
		show "$work/order.5.$step.log"
		[ "$rc" = 0 ] || die "the order service failed across the broker crash (status $rc)"
	done
else
	step=1
	p3_expected=1
	say "phase 3: broker SIGKILLed while orders are being committed (no SLUICED_CRASH_AT hook)"
	before=$(q_orders "SELECT count(*) FROM orders")
	"$ORDER_SERVICE" -b "$brokers" --db "$orders_db" --users "$users" --seed "$seed" \
		--check-timeout-ms "$check_ms" --drain-ms 45000 --requests "$r3" --pace-ms 5 \
		>"$work/order.5.1.log" 2>&1 &
	order_pid=$!
	for _ in $(seq 1 600); do
		[ "$(q_orders "SELECT count(*) FROM orders")" -ge $((before + 5)) ] && break
		sleep 0.02
	done
	kill -KILL "$broker_pid"
	wait "$broker_pid" 2>/dev/null || true
	broker_pid=
	p3_crashes=1
	say "broker killed with $(( $(q_orders "SELECT count(*) FROM orders") - before )) new orders"
	sleep 0.3
	start_broker
	say "broker restarted on $brokers"
	wait_exit "$order_pid" 120
	order_pid=
	show "$work/order.5.1.log"
	[ "$rc" = 0 ] || die "the order service failed across the broker crash (status $rc)"
fi

# ---- phase 4: cart service killed mid-batch ----

echo
# cart-b's partitions, from its last "assigned" line
b_parts=$( { grep 'assigned' "$work/cart-b.1.log" || true; } | tail -1 | grep -o '\[[0-9]*\]' | tr -d '[]' | tr '\n' ' ' || true)
say "phase 4: cart-b stopped; orders pile up on its partitions ${b_parts:-?}"
kill -TERM "$cart_b_pid"
wait_exit "$cart_b_pid" 20
[ "$rc" = 0 ] || unclean="$unclean cart-b:$rc"
cart_b_pid=''
# Enough unread messages on cart-b's partitions that --crash-after lands
# inside its first batch, whatever the seed: more checkouts until so.
upto=$r3 backlog=0
while [ "$backlog" -lt $((cart_crash + 2)) ] && [ "$upto" -lt "$r4max" ]; do
	upto=$(( upto < r4 ? r4 : upto + 8 ))
	order_service "$work/order.6.$upto.log" --requests "$upto"
	show "$work/order.6.$upto.log"
	[ "$rc" = 0 ] || die "the order service failed (status $rc)"
	backlog=$( { sluice group describe "$cgroup" || true; } | awk -v t="$topic" -v p=" $b_parts" \
		'$1 == t && index(p, " " $2 " ") { s += $5 } END { print s + 0 }')
	say "cart-b's partitions hold $backlog unread messages"
done
say "cart-b restarted with --crash-after $cart_crash"
start_cart cart_b_pid cart-b "$work/cart-b.2.log" --crash-after "$cart_crash"
wait_exit "$cart_b_pid" 40
p4_rc=$rc
if [ "$rc" = 124 ]; then
	say "cart-b did not crash within 40 s: stopping it"
	kill -TERM "$cart_b_pid"
	wait_exit "$cart_b_pid" 20
fi
cart_b_pid=''
{ grep -h 'CRASH\|assigned' "$work/cart-b.2.log" || true; } | sed 's/^/    | /'
say "cart-b exited with status $p4_rc; restarted"
start_cart cart_b_pid cart-b "$work/cart-b.3.log"

# ---- quiescence ----

echo
say "waiting for quiescence: no PENDING transaction, the group caught up"
pending=-1
for _ in $(seq 1 300); do
	# (a failed listing counts as "still pending")
	pending=$( { sluice txn list --group "$tgroup" --state PENDING,COMMITTING --json ||
		echo '"txn_id":-1'; } | grep -c txn_id || true)
	[ "$pending" = 0 ] && break
	sleep 0.2
done
sluice consume "$topic" --from beginning --exit-at-end --timeout 10000 >"$work/topic.txt" \
	|| die "cannot read $topic"
in_topic=$(wc -l <"$work/topic.txt")
# The group is done when its committed offsets reach the partitions' ends
# (each commit is preceded by a marker that takes an offset but is never
# delivered: docs/transactions.md "Commit markers").
committed=-1
log_end=-2
for _ in $(seq 1 600); do
	read -r committed log_end <<EOF_
$( { sluice group describe "$cgroup" 2>/dev/null || true; } |
	awk -v t="$topic" '$1 == t { s += $3; e += $4 } END { print s + 0, e + 0 }')
EOF_
	[ "$committed" = "$log_end" ] && [ "$log_end" -gt 0 ] && break
	sleep 0.1
done
say "pending transactions: $pending; topic: $in_topic messages, end offsets $log_end; group committed: $committed"
sluice txn list --group "$tgroup" --limit 1000000 --json >"$work/txns.json" ||
	die "cannot list the transactions"
for v in cart_a_pid cart_b_pid; do
	kill -TERM "${!v}"
	wait_exit "${!v}" 20
	[ "$rc" = 0 ] || unclean="$unclean $v:$rc"
	printf -v "$v" '%s' ""
done
stop_broker
{ grep -h 'redelivery skipped' "$work/cart-b.3.log" || true; } | head -5 | sed 's/^/    | /'
{ grep -h ' messages: ' "$work"/cart-*.log || true; } | sed 's/^/    | /'

# ---- checks ----

echo
say "checks"
fail=0
ok() { echo "  ok     $*"; }
bad() { echo "  FAILED $*"; fail=1; }
expect() { # expect WHAT GOT WANT
	if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (got $2, want $3)"; fi
}

n_orders=$(q_orders "SELECT count(*) FROM orders")
n_rb=$(q_orders "SELECT count(*) FROM rolled_back")
n_declined=$(q_orders "SELECT count(*) FROM rolled_back WHERE reason LIKE 'declined%'")
echo "  orders.db: $n_orders orders, $n_rb rolled back ($n_declined declined payments," \
	"$((n_rb - n_declined)) by check-back)"

# The broker's view of the transactions (listed before it stopped).
txn_ids() { grep "\"state\":\"$1\"" "$work/txns.json" | sed 's/.*"txn_id":\([0-9]*\).*/\1/' | sort; }
expect "no transaction left PENDING, COMMITTING or DISCARDED" \
	"$(grep -c '"state":"\(PENDING\|COMMITTING\|DISCARDED\)"' "$work/txns.json" || true)" 0
q_orders "SELECT txn_id FROM orders" | sort >"$work/order-txns"
txn_ids COMMITTED >"$work/committed-txns"
expect "the broker committed exactly the transactions of the orders in orders.db" \
	"$(cmp -s "$work/order-txns" "$work/committed-txns" && echo same || echo different)" same
txn_ids ROLLED_BACK >"$work/rolled-txns"
expect "no rolled-back transaction has an order" \
	"$(comm -12 "$work/order-txns" "$work/rolled-txns" | wc -l)" 0
q_orders "SELECT txn_id FROM rolled_back" | sort >"$work/rb-txns"
expect "every rollback recorded in orders.db is ROLLED_BACK on the broker" \
	"$(comm -23 "$work/rb-txns" "$work/rolled-txns" | wc -l)" 0

# The topic: each committed order's message exactly once, nothing else.
sed -n 's/.*"order_id":"\([0-9a-f]*\)".*/\1/p' "$work/topic.txt" | sort >"$work/topic-ids"
q_orders "SELECT order_id FROM orders" | sort >"$work/order-ids"
expect "the topic holds one message per line read" "$(wc -l <"$work/topic-ids")" "$in_topic"
expect "no order appears twice in the topic" "$(uniq -d "$work/topic-ids" | wc -l)" 0
expect "the topic holds exactly the committed orders ($n_orders)" \
	"$(cmp -s "$work/topic-ids" "$work/order-ids" && echo same || echo different)" same
expect "the group consumed the whole topic (committed offsets = end offsets)" "$committed" "$log_end"

# The carts.
expect "every order cleared its cart exactly once (one cart_events row each)" \
	"$(q_cart "SELECT count(*) FROM o.orders r WHERE (SELECT count(*) FROM cart_events e
		WHERE e.order_id = r.order_id) != 1")" 0
expect "every order is in processed_orders" \
	"$(q_cart "SELECT count(*) FROM o.orders WHERE order_id NOT IN (SELECT order_id FROM processed_orders)")" 0
expect "no cart touched for an order that does not exist" \
	"$(q_cart "SELECT (SELECT count(*) FROM cart_events WHERE order_id NOT IN (SELECT order_id FROM o.orders))
		+ (SELECT count(*) FROM processed_orders WHERE order_id NOT IN (SELECT order_id FROM o.orders))")" 0
expect "no rolled-back order touched a cart or reached the topic" \
	"$(q_cart "SELECT count(*) FROM o.rolled_back b WHERE b.order_id IN (SELECT order_id FROM cart_events)
		OR b.order_id IN (SELECT order_id FROM processed_orders) OR b.order_id IN (SELECT order_id FROM o.orders)")" 0
expected_carts="WITH ordered AS (SELECT r.user_id, i.sku, sum(i.qty) AS qty FROM o.order_items i
		JOIN o.orders r USING (order_id) GROUP BY 1, 2),
	expect AS (SELECT s.user_id, s.sku, s.qty - coalesce(d.qty, 0) AS qty FROM seed_items s
		LEFT JOIN ordered d USING (user_id, sku))"
expect "carts = seeded items minus the committed orders (rolled-back ones untouched)" \
	"$(q_cart "$expected_carts SELECT (SELECT count(*) FROM (SELECT user_id, sku, qty FROM expect WHERE qty > 0
		EXCEPT SELECT user_id, sku, qty FROM cart_items))
		+ (SELECT count(*) FROM (SELECT user_id, sku, qty FROM cart_items
		EXCEPT SELECT user_id, sku, qty FROM expect WHERE qty > 0))
		+ (SELECT count(*) FROM expect WHERE qty < 0)")" 0
expect "every gift card still in its cart" \
	"$(q_cart "SELECT count(*) FROM cart_items WHERE sku = 'gift-card' AND qty = 1")" "$users"
expect "every process stopped with SIGTERM exited 0" "${unclean:- none}" " none"

# The failures really happened, and recovery took the intended path.
echo "  injected failures:"
expect "1 order service killed after prepare (exit 99)" "$p1_rc" 99
expect "1 ... its orphan txn $p1_txn rolled back by the restarted service's check-back" \
	"$(q_orders "SELECT reason FROM rolled_back WHERE txn_id = '${p1_txn:-0}' AND order_id = '${p1_order:-}'")" \
	"check-back: no order row"
expect "2 order service killed after its local COMMIT (exit 99)" "$p2_rc" 99
expect "2 ... its txn $p2_txn committed by check-back (order row found)" \
	"$(grep -c "check-back: txn ${p2_txn:-x} .*order row found -> COMMIT" "$work/order.4.log" || true)" 1
expect "2 ... its order ${p2_order:-?} is in the topic once" \
	"$(grep -c "\"order_id\":\"${p2_order:-x}\"" "$work/topic.txt" || true)" 1
expect "2 ... and cleared its cart once" \
	"$(q_cart "SELECT count(*) FROM cart_events WHERE order_id = '${p2_order:-}'")" 1
expect "3 broker crashed mid-commit and was restarted ($p3_crashes of $p3_expected)" "$p3_crashes" "$p3_expected"
expect "4 cart service killed mid-batch (exit 99)" "$p4_rc" 99
expect "4 ... the restarted cart service skipped redelivered messages" \
	"$( [ "$(grep -c 'redelivery skipped' "$work/cart-b.3.log" || true)" -ge 1 ] && echo yes || echo no)" yes

echo
if [ "$fail" = 0 ]; then
	say "PASS: every committed order cleared its cart exactly once; no cart touched for an order that does not exist"
else
	say "FAIL: see the FAILED lines above (run with --keep to inspect $work)"
	exit 1
fi
