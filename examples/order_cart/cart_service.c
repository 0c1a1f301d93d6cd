/*
 * cart_service.c — a consumer-group member of `order-created` that removes
 * the ordered items from the users' carts in its own SQLite database,
 * idempotently (issue #5, examples/order_cart).
 *
 * Delivery is at least once: after a crash, a rebalance or a broker restart
 * a message is delivered again if its offset had not been committed.  So
 * every message is handled in ONE SQLite transaction that starts with
 *
 *     INSERT OR IGNORE INTO processed_orders (order_id, ...)
 *
 * and does nothing else when that row already existed (a redelivery);
 * otherwise it takes the items out of the cart and records a cart_events
 * row, then commits.  Only after the SQLite COMMIT of a whole batch is the
 * batch's offset committed to the group.  At-least-once delivery plus an
 * idempotent handler is an effect that happens exactly once.
 *
 *   cart_service -b HOST:PORT --db cart.db --instance cart-a
 *       consume until SIGINT/SIGTERM (then commit and leave)
 *   cart_service --db cart.db --init-carts --requests N --users M --seed S
 *       fill the carts from the generated workload (order.h): every item of
 *       every checkout 1..N, plus one gift card per user
 *   --crash-after N
 *       fault injection for run.sh: _exit(99) right after the SQLite COMMIT
 *       of the N-th message, before its batch's offsets are committed.
 *   --no-dedup
 *       demonstration only: clear the cart again for a redelivered order,
 *       to see run.sh's checks catch what idempotence prevents.
 *
 * Several instances may share one database (SQLite serialises them with
 * BEGIN IMMEDIATE): that is what makes a message handled by one member and
 * redelivered to another after a rebalance a no-op.  Single-threaded: the
 * rebalance callback runs inside sluice_consumer_poll() on this thread.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <sluice.h>

#include "order.h"

#define CRASH_EXIT 99
#define BATCH_MAX 256

struct opts {
	const char *brokers, *db_path, *topic, *group, *instance;
	int batch_max, linger_ms, session_timeout_ms;
	long crash_after;
	bool no_dedup; /* demonstration of the bug idempotence prevents */
	bool init_carts;
	long requests;
	int users;
	uint64_t seed;
};

struct cart {
	struct opts o;
	const char *name; /* for log lines: the instance id, or "cart-service" */
	sqlite3 *db;
	sluice_consumer_t *c;
	sluice_message_t *batch[BATCH_MAX]; /* polled, not yet handled */
	int nbatch;
	bool dirty; /* handled messages whose offsets are not committed yet */
	long n_msgs, n_cleared, n_redelivered, n_poison, n_missing;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the cart database ----
 *
 * cart.db, schema version 1 (PRAGMA user_version):
 *
 *   cart_items(user_id, sku, qty > 0)  what is in each cart now.
 *   processed_orders(order_id PK, user_id, src_partition, src_offset,
 *       processed_ms)  one row per order-created message handled: the
 *       deduplication key.  Written in the same transaction as the cart
 *       change, so "the row exists" is exactly "the cart was cleared".
 *   cart_events(event_id, order_id, user_id, n_items, n_missing, consumer,
 *       at_ms)  one row per cart clear.  Deliberately NOT unique on
 *       order_id: a clear applied twice would show up as two rows, which is
 *       what run.sh checks (there must be exactly one per order).
 *   seed_items(user_id, sku, qty)  the carts as --init-carts filled them,
 *       kept so a checker can compute what they must hold now.
 *
 * Durability: synchronous=FULL: the cart change must be on disk before
 * the offset commit says "done" to the group.  Changing the schema: bump
 * user_version and migrate in open_db().
 */
static const char schema[] =
	"PRAGMA journal_mode=WAL;\n"
	"PRAGMA synchronous=FULL;\n"
	"CREATE TABLE IF NOT EXISTS cart_items (\n"
	"  user_id TEXT NOT NULL,\n"
	"  sku TEXT NOT NULL,\n"
	"  qty INTEGER NOT NULL CHECK (qty > 0),\n"
	"  PRIMARY KEY (user_id, sku)\n"
	") WITHOUT ROWID;\n"
	"CREATE TABLE IF NOT EXISTS processed_orders (\n"
	"  order_id TEXT PRIMARY KEY,\n"
	"  user_id TEXT NOT NULL,\n"
	"  src_partition INTEGER NOT NULL,\n"
	"  src_offset INTEGER NOT NULL,\n"
	"  processed_ms INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS cart_events (\n"
	"  event_id INTEGER PRIMARY KEY,\n"
	"  order_id TEXT NOT NULL,\n"
	"  user_id TEXT NOT NULL,\n"
	"  n_items INTEGER NOT NULL,\n"
	"  n_missing INTEGER NOT NULL,\n"
	"  consumer TEXT NOT NULL,\n"
	"  at_ms INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS seed_items (\n"
	"  user_id TEXT NOT NULL,\n"
	"  sku TEXT NOT NULL,\n"
	"  qty INTEGER NOT NULL,\n"
	"  PRIMARY KEY (user_id, sku)\n"
	") WITHOUT ROWID;\n"
	"PRAGMA user_version = 1;\n";

static int exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "cart-service: sqlite: %s (in: %.60s)\n", msg ? msg : "?", sql);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static void rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		exec_sql(db, "ROLLBACK");
}

/* Prepares sql with text ?1, ?2 and int64 ?3, ?4, ?5 bound (NULL texts are
 * left unbound).  NULL on error (reported). */
static sqlite3_stmt *stmt(sqlite3 *db, const char *sql, const char *t1, const char *t2,
			  int64_t i3, int64_t i4, int64_t i5)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "cart-service: sqlite: %s (in: %.60s)\n", sqlite3_errmsg(db), sql);
		return NULL;
	}
	if (t1)
		sqlite3_bind_text(st, 1, t1, -1, SQLITE_STATIC);
	if (t2)
		sqlite3_bind_text(st, 2, t2, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_int64(st, 3, i3);
	if (sqlite3_bind_parameter_count(st) >= 4)
		sqlite3_bind_int64(st, 4, i4);
	if (sqlite3_bind_parameter_count(st) >= 5)
		sqlite3_bind_int64(st, 5, i5);
	return st;
}

/* Runs st to completion and finalizes it.  Returns the first column of the
 * first row, def when there is no row, or -2 on error. */
static int64_t run_stmt(sqlite3 *db, sqlite3_stmt *st, int64_t def)
{
	int64_t v = def;
	int rc;

	if (!st)
		return -2;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		v = sqlite3_column_int64(st, 0);
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "cart-service: sqlite: %s\n", sqlite3_errmsg(db));
		v = -2;
	}
	sqlite3_finalize(st);
	return v;
}

static int open_db(struct cart *k)
{
	if (sqlite3_open(k->o.db_path, &k->db) != SQLITE_OK) {
		fprintf(stderr, "cart-service: %s: %s\n", k->o.db_path,
			k->db ? sqlite3_errmsg(k->db) : "out of memory");
		return -1;
	}
	sqlite3_busy_timeout(k->db, 10000);
	return exec_sql(k->db, schema);
}

/* --init-carts: every item of checkouts 1..N into its user's cart. */
static int init_carts(struct cart *k)
{
	sqlite3 *db = k->db;
	int64_t lines, items;

	if (exec_sql(db, "BEGIN IMMEDIATE"))
		return 1;
	if (run_stmt(db, stmt(db, "SELECT count(*) FROM processed_orders", NULL, NULL, 0, 0, 0), 0)) {
		fprintf(stderr, "cart-service: %s has processed orders already; not seeding\n",
			k->o.db_path);
		goto fail;
	}
	if (exec_sql(db, "DELETE FROM cart_items; DELETE FROM seed_items;"))
		goto fail;
	for (long n = 1; n <= k->o.requests; n++) {
		struct order o;
		bool declined;

		order_workload(k->o.seed, n, k->o.users, &o, &declined);
		for (int i = 0; i < o.nitems; i++)
			if (run_stmt(db, stmt(db,
					      "INSERT INTO cart_items (user_id, sku, qty) VALUES (?1, ?2, ?3)"
					      " ON CONFLICT (user_id, sku) DO UPDATE SET qty = qty + excluded.qty",
					      o.user, o.items[i].sku, o.items[i].qty, 0, 0), 0) == -2)
				goto fail;
	}
	for (int u = 1; u <= k->o.users; u++) {
		char user[ORDER_NAME_MAX + 1];

		order_user_name(user, sizeof(user), u);
		if (run_stmt(db, stmt(db, "INSERT INTO cart_items (user_id, sku, qty) VALUES (?1, ?2, 1)",
				      user, ORDER_GIFT_SKU, 0, 0, 0), 0) == -2)
			goto fail;
	}
	if (exec_sql(db, "INSERT INTO seed_items SELECT user_id, sku, qty FROM cart_items") ||
	    exec_sql(db, "COMMIT"))
		goto fail;
	lines = run_stmt(db, stmt(db, "SELECT count(*) FROM cart_items", NULL, NULL, 0, 0, 0), 0);
	items = run_stmt(db, stmt(db, "SELECT sum(qty) FROM cart_items", NULL, NULL, 0, 0, 0), 0);
	printf("cart-service: %d carts filled from checkouts 1 to %ld: %" PRId64 " lines, %" PRId64
	       " items\n", k->o.users, k->o.requests, lines, items);
	return 0;
fail:
	rollback(db);
	return 1;
}

/* ---- handling one message ---- */

enum outcome { OUT_CLEARED, OUT_REDELIVERED, OUT_POISON };

/* Takes one order line out of the cart; 1 if the cart did not hold the
 * whole quantity (the user removed it meanwhile), 0 if it did, -1 on error. */
static int take_item(sqlite3 *db, const char *user, const struct order_item *it)
{
	int64_t qty = run_stmt(db, stmt(db, "SELECT qty FROM cart_items WHERE user_id = ?1 AND sku = ?2",
					user, it->sku, 0, 0, 0), 0);

	if (qty == -2)
		return -1;
	if (qty > it->qty)
		return run_stmt(db, stmt(db, "UPDATE cart_items SET qty = qty - ?3"
					 " WHERE user_id = ?1 AND sku = ?2", user, it->sku, it->qty, 0, 0),
				0) == -2 ? -1 : 0;
	if (qty > 0 && run_stmt(db, stmt(db, "DELETE FROM cart_items WHERE user_id = ?1 AND sku = ?2",
					 user, it->sku, 0, 0, 0), 0) == -2)
		return -1;
	return qty < it->qty ? 1 : 0;
}

/* The cart_events row of one clear; 0 or -1. */
static int record_event(struct cart *k, const struct order *o, int missing)
{
	sqlite3_stmt *st = stmt(k->db,
				"INSERT INTO cart_events (order_id, user_id, n_items, n_missing, at_ms,"
				" consumer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
				o->order_id, o->user, o->nitems, missing, now_ms());

	if (!st)
		return -1;
	sqlite3_bind_text(st, 6, k->name, -1, SQLITE_STATIC);
	return run_stmt(k->db, st, 0) == -2 ? -1 : 0;
}

/* One message, one SQLite transaction.  Returns the outcome, or -1 when the
 * database failed (rolled back: handle it again). */
static int handle(struct cart *k, const sluice_message_t *m)
{
	sqlite3 *db = k->db;
	int32_t part = sluice_message_partition(m);
	int64_t off = sluice_message_offset(m);
	struct order o;
	int missing = 0;

	if (!order_parse(sluice_message_value(m), sluice_message_len(m), &o)) {
		/* Poison: skipping it is the only way forward; it is logged and
		 * its offset is committed with the batch. */
		printf("%s: order-created [%d] offset %" PRId64 ": not an order, skipped\n", k->name,
		       part, off);
		return OUT_POISON;
	}
	if (exec_sql(db, "BEGIN IMMEDIATE"))
		return -1;
	if (run_stmt(db, stmt(db,
			      "INSERT OR IGNORE INTO processed_orders (order_id, user_id, src_partition,"
			      " src_offset, processed_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
			      o.order_id, o.user, part, off, now_ms()), 0) == -2)
		goto fail;
	if (sqlite3_changes(db) == 0 && !k->o.no_dedup) {
		/* Handled before (by us or by another member): change nothing. */
		rollback(db);
		printf("%s: order %s ([%d] offset %" PRId64 ") already processed: redelivery skipped\n",
		       k->name, o.order_id, part, off);
		return OUT_REDELIVERED;
	}
	for (int i = 0; i < o.nitems; i++) {
		int rc = take_item(db, o.user, &o.items[i]);

		if (rc < 0)
			goto fail;
		missing += rc;
	}
	if (record_event(k, &o, missing))
		goto fail;
	if (exec_sql(db, "COMMIT"))
		goto fail;
	k->n_missing += missing;
	return OUT_CLEARED;
fail:
	rollback(db);
	return -1;
}

/* ---- batches and offsets ---- */

static void commit_offsets(struct cart *k)
{
	sluice_err_t err = sluice_consumer_commit(k->c, 1);

	if (err == SLUICE_ERR_NO_ERROR || err == SLUICE_ERR_STATE) {
		k->dirty = false; /* STATE: nothing assigned, nothing to commit */
		return;
	}
	/* E.g. REBALANCE_IN_PROGRESS or the broker restarting: the messages
	 * will be delivered again (to us or another member) and skipped. */
	printf("%s: offset commit failed (%s): will retry; redeliveries are harmless\n", k->name,
	       sluice_err2name(err));
}

/* Handles every held message (each in its own SQLite transaction), then
 * commits the offsets.  If SIGTERM interrupts a retry loop, the rest stays
 * unhandled and nothing is committed: it will be delivered again. */
static void flush_batch(struct cart *k)
{
	int n = k->nbatch, i;

	for (i = 0; i < n; i++) {
		sluice_message_t *m = k->batch[i];
		int out;

		while ((out = handle(k, m)) < 0 && !stop_flag) {
			struct timespec ts = { 0, 100 * 1000000 }; /* database busy: again */

			nanosleep(&ts, NULL);
		}
		if (out < 0)
			break;
		k->n_msgs++;
		k->dirty = true;
		if (out == OUT_CLEARED)
			k->n_cleared++;
		else if (out == OUT_REDELIVERED)
			k->n_redelivered++;
		else
			k->n_poison++;
		if (k->o.crash_after > 0 && k->n_msgs == k->o.crash_after) {
			printf("CRASH after %ld messages: %s: [%d] offset %" PRId64 " is message %d of a"
			       " batch of %d; its SQLite transaction is committed, the batch's offsets"
			       " are not\n", k->n_msgs, k->name, sluice_message_partition(m),
			       sluice_message_offset(m), i + 1, n);
			fflush(stdout);
			_exit(CRASH_EXIT);
		}
		sluice_message_destroy(m);
		k->batch[i] = NULL;
	}
	if (i < n) {
		for (; i < n; i++)
			sluice_message_destroy(k->batch[i]);
		k->nbatch = 0;
		return;
	}
	k->nbatch = 0;
	if (k->dirty)
		commit_offsets(k);
}

static void print_parts(const char *what, const sluice_topic_partition_t *parts, size_t n,
			const char *name)
{
	printf("%s: %s", name, what);
	for (size_t i = 0; i < n; i++)
		printf(" %s[%d]", parts[i].topic, parts[i].partition);
	printf("%s\n", n ? "" : " (none)");
	fflush(stdout);
}

/* REVOKED: the partitions are still ours until we return.  Handle what we
 * hold and commit, so the next owner starts after it (it would skip those
 * messages anyway; this just saves the redelivery). */
static void on_rebalance(sluice_consumer_t *c, sluice_rebalance_event_t ev,
			 const sluice_topic_partition_t *parts, size_t nparts, void *ctx)
{
	struct cart *k = ctx;

	(void)c;
	if (ev == SLUICE_REBALANCE_REVOKED) {
		flush_batch(k);
		print_parts("revoked", parts, nparts, k->name);
	} else {
		print_parts("assigned", parts, nparts, k->name);
	}
}

static void hold(struct cart *k, sluice_message_t *m)
{
	if (sluice_message_err(m)) {
		if (sluice_message_err(m) != SLUICE_ERR_PARTITION_EOF)
			printf("%s: %s\n", k->name, sluice_message_errstr(m));
		sluice_message_destroy(m);
		return;
	}
	k->batch[k->nbatch++] = m;
}

static int consume(struct cart *k)
{
	char errstr[512], num[32];
	sluice_conf_t *conf = sluice_conf_new();
	const char *topics[1] = { k->o.topic };
	sluice_err_t err;

	snprintf(num, sizeof(num), "%d", k->o.session_timeout_ms);
	if (!conf || sluice_conf_set(conf, "bootstrap.servers", k->o.brokers, errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "client.id", "cart-service", errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "group.id", k->o.group, errstr, sizeof(errstr)) ||
	    /* offsets are committed by hand, after the SQLite commit */
	    sluice_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "session.timeout.ms", num, errstr, sizeof(errstr)) ||
	    /* static membership: a restarted instance gets its partitions
	     * back at once instead of after session.timeout.ms */
	    (k->o.instance &&
	     sluice_conf_set(conf, "group.instance.id", k->o.instance, errstr, sizeof(errstr)))) {
		fprintf(stderr, "cart-service: %s\n", conf ? errstr : "out of memory");
		sluice_conf_destroy(conf);
		return 1;
	}
	sluice_conf_set_rebalance_cb(conf, on_rebalance, k);
	if (!(k->c = sluice_consumer_new(conf, errstr, sizeof(errstr)))) {
		fprintf(stderr, "cart-service: %s\n", errstr);
		sluice_conf_destroy(conf);
		return 1;
	}
	if ((err = sluice_consumer_subscribe(k->c, topics, 1))) {
		fprintf(stderr, "cart-service: subscribe: %s\n", sluice_err2str(err));
		sluice_consumer_destroy(k->c);
		return 1;
	}
	printf("%s: group %s, topic %s, batches of up to %d messages\n", k->name, k->o.group,
	       k->o.topic, k->o.batch_max);
	fflush(stdout);
	while (!stop_flag) {
		sluice_message_t *m = sluice_consumer_poll(k->c, 500);
		int64_t until;

		if (!m) {
			if (k->dirty) /* a failed commit: try again */
				commit_offsets(k);
			continue;
		}
		hold(k, m);
		/* A batch: whatever else arrives within linger_ms. */
		until = mono_ms() + k->o.linger_ms;
		while (k->nbatch < k->o.batch_max && !stop_flag) {
			int64_t left = until - mono_ms();

			if (left <= 0 || !(m = sluice_consumer_poll(k->c, (int)left)))
				break;
			hold(k, m);
		}
		flush_batch(k);
		fflush(stdout);
	}
	flush_batch(k);
	/* REVOKED (commit) runs in here; a static member does not leave. */
	sluice_consumer_destroy(k->c);
	printf("%s: %ld messages: %ld carts cleared, %ld redeliveries skipped, %ld malformed,"
	       " %ld order lines not (fully) in the cart\n", k->name, k->n_msgs, k->n_cleared,
	       k->n_redelivered, k->n_poison, k->n_missing);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: cart_service [options] --db FILE\n"
		"Clears ordered items from the carts, one SQLite transaction per order-created.\n"
		"  -b, --brokers HOST:PORT   broker (default: $SLUICE_BROKERS or 127.0.0.1:9092)\n"
		"      --db FILE             the cart database (created if missing)\n"
		"  -t, --topic NAME          topic (default: order-created)\n"
		"      --group G             consumer group (default: cart-service)\n"
		"      --instance ID         group.instance.id (static member; default: dynamic)\n"
		"      --session-timeout-ms MS  session.timeout.ms (default 30000)\n"
		"      --batch N             messages per batch, one offset commit each (default 32)\n"
		"      --linger-ms MS        wait this long for a batch to fill (default 100)\n"
		"      --crash-after N       _exit(%d) right after the N-th message's SQLite\n"
		"                            commit, before its batch's offset commit\n"
		"      --no-dedup            demonstration only: clear again on redelivery\n"
		"      --init-carts          do not consume: fill the carts from the workload\n"
		"      --requests N --users M --seed S   ... of checkouts 1..N (as order_service)\n",
		CRASH_EXIT);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "db", required_argument, NULL, 'D' },
		{ "topic", required_argument, NULL, 't' },
		{ "group", required_argument, NULL, 'g' },
		{ "instance", required_argument, NULL, 'i' },
		{ "session-timeout-ms", required_argument, NULL, 'S' },
		{ "batch", required_argument, NULL, 'B' },
		{ "linger-ms", required_argument, NULL, 'L' },
		{ "crash-after", required_argument, NULL, 'x' },
		{ "no-dedup", no_argument, NULL, 'N' },
		{ "init-carts", no_argument, NULL, 'C' },
		{ "requests", required_argument, NULL, 'n' },
		{ "users", required_argument, NULL, 'u' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cart k;
	struct sigaction sa;
	int c, rc;

	memset(&k, 0, sizeof(k));
	k.o.brokers = getenv("SLUICE_BROKERS") ? getenv("SLUICE_BROKERS") : "127.0.0.1:9092";
	k.o.topic = "order-created";
	k.o.group = "cart-service";
	k.o.batch_max = 32;
	k.o.linger_ms = 100;
	k.o.session_timeout_ms = 30000;
	k.o.users = 8;
	k.o.seed = 1;
	while ((c = getopt_long(argc, argv, "b:t:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': k.o.brokers = optarg; break;
		case 'D': k.o.db_path = optarg; break;
		case 't': k.o.topic = optarg; break;
		case 'g': k.o.group = optarg; break;
		case 'i': k.o.instance = optarg; break;
		case 'S': k.o.session_timeout_ms = atoi(optarg); break;
		case 'B': k.o.batch_max = atoi(optarg); break;
		case 'L': k.o.linger_ms = atoi(optarg); break;
		case 'x': k.o.crash_after = strtol(optarg, NULL, 10); break;
		case 'N': k.o.no_dedup = true; break;
		case 'C': k.o.init_carts = true; break;
		case 'n': k.o.requests = strtol(optarg, NULL, 10); break;
		case 'u': k.o.users = atoi(optarg); break;
		case 's': k.o.seed = strtoull(optarg, NULL, 10); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !k.o.db_path || k.o.batch_max < 1 || k.o.batch_max > BATCH_MAX ||
	    k.o.linger_ms < 0 || k.o.users <= 0 || (k.o.init_carts && k.o.requests <= 0)) {
		usage(stderr);
		return 2;
	}
	k.name = k.o.instance ? k.o.instance : "cart-service";
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (open_db(&k))
		rc = 1;
	else
		rc = k.o.init_carts ? init_carts(&k) : consume(&k);
	sqlite3_close(k.db);
	return rc;
}
