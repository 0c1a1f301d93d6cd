/*
 * order_service.c — creates orders in its own SQLite database and publishes
 * `order-created` with a transactional (half) message, so that the order
 * row and the event exist both or neither (issue #5, examples/order_cart).
 *
 * One order, as sluice_txn_send() runs it:
 *
 *   1. prepare: the broker stores the message as a half message (durable,
 *      invisible to consumers) and gives it a txn_id;
 *   2. local transaction (local_txn(), in ONE SQLite transaction): insert
 *      the order, its items and the txn_id; COMMIT;
 *   3. end: commit the half message (it is appended to order-created once,
 *      consumers see it) or roll it back.
 *
 * If this process dies between 1 and 3, the broker asks a live instance of
 * the same transaction.group (this program again after a restart) through
 * check_txn(), which answers from the database: an order row with that
 * txn_id exists -> COMMIT, otherwise ROLLBACK.  See check_txn() for why
 * that answer is final and never "unknown".
 *
 *   order_service -b HOST:PORT --db orders.db --requests 40 --users 8 --seed 7
 *       places the generated checkouts 1..40 (order.h), skipping those that
 *       already have an order (or were declined) in orders.db: a restarted
 *       service continues where the last one stopped.  Then waits until no
 *       transaction of its group is left PENDING (check-back settles them).
 *   order_service -b HOST:PORT --db orders.db --user user-03 --items sku-01:2,sku-04:1
 *       one order placed by hand.
 *   --crash-at prepared|local-committed --crash-request N
 *       fault injection for run.sh: _exit(99) inside the local transaction of
 *       the first checkout numbered N or later, before it touches SQLite
 *       (prepared), or right after the COMMIT that created its order, before
 *       the end reaches the broker (local-committed; a declined checkout
 *       creates no order and does not count).
 *
 * Threads: main (orders, local transactions, db) and the producer's check
 * thread (check_txn, check_db).  Each has its own SQLite connection; the
 * database serialises them (BEGIN IMMEDIATE).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <sluice.h>

#include "order.h"

#define CRASH_EXIT 99            /* exit status of an injected crash */
#define PREPARE_RETRY_MS 250     /* broker unreachable: wait, then prepare again */
#define PREPARE_GIVE_UP_MS 60000 /* ... for at most this long per order */

enum crash_at { CRASH_NONE, CRASH_PREPARED, CRASH_LOCAL_COMMITTED };

struct opts {
	const char *brokers, *db_path, *topic, *group, *instance;
	long requests;
	int users;
	uint64_t seed;
	const char *user, *items; /* one order by hand */
	enum crash_at crash_at;
	long crash_request;
	int pace_ms;
	int check_timeout_ms; /* transaction.check.timeout.ms; 0: the broker's */
	int request_timeout_ms;
	int drain_ms;         /* how long to wait for check-back at the end */
	bool verbose;
};

struct svc {
	struct opts o;
	sqlite3 *db;       /* main thread */
	sqlite3 *check_db; /* the check thread (check_txn) */
	sluice_txn_producer_t *p;
	/* txn_id whose local transaction runs right now on the main thread, or
	 * -1: a check about it must wait (answer UNKNOWN), see check_txn(). */
	_Atomic int64_t inflight;
	long n_committed, n_declined, n_fenced, n_skipped, n_unconfirmed, n_prepare_retries;
	atomic_long n_check_commit, n_check_rollback, n_check_unknown;
};

/* What sluice_txn_send() hands to local_txn(). */
struct attempt {
	struct svc *s;
	const struct order *o;
	bool declined;
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

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* ---- the orders database ----
 *
 * orders.db, schema version 1 (PRAGMA user_version):
 *
 *   orders(order_id PK, txn_id UNIQUE, user_id, request_no UNIQUE, created_ms)
 *       one row per order that exists.  txn_id is the broker's id of the
 *       order's half message, written in the same SQLite transaction as the
 *       order: "a row with this txn_id exists" is exactly "the local
 *       transaction committed", which is what check-back asks.
 *       request_no: the checkout's idempotency key (NULL for a hand order).
 *   order_items(order_id, sku, qty)  the order's lines.
 *   rolled_back(txn_id PK, order_id, request_no, reason, at_ms)
 *       half messages this service decided to roll back: a declined payment
 *       (written by the local transaction), or a check-back that found no
 *       order (written by check_txn()).  The second kind is a fence: a
 *       local transaction that finds its txn_id here must not create the
 *       order, because the broker was already told ROLLBACK.
 *
 * Invariant: a txn_id is in orders or in rolled_back, never both.
 * Durability: synchronous=FULL, because the local COMMIT must be on disk
 * before the end tells the broker to publish (a lost order row after a
 * power cut would leave a published event for an order that does not
 * exist).  Changing the schema: bump user_version and migrate in open_db().
 */
static const char schema[] =
	"PRAGMA journal_mode=WAL;\n"
	"PRAGMA synchronous=FULL;\n"
	"CREATE TABLE IF NOT EXISTS orders (\n"
	"  order_id TEXT PRIMARY KEY,\n"
	"  txn_id INTEGER NOT NULL UNIQUE,\n"
	"  user_id TEXT NOT NULL,\n"
	"  request_no INTEGER UNIQUE,\n"
	"  created_ms INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS order_items (\n"
	"  order_id TEXT NOT NULL REFERENCES orders (order_id),\n"
	"  sku TEXT NOT NULL,\n"
	"  qty INTEGER NOT NULL CHECK (qty > 0),\n"
	"  PRIMARY KEY (order_id, sku)\n"
	") WITHOUT ROWID;\n"
	"CREATE TABLE IF NOT EXISTS rolled_back (\n"
	"  txn_id INTEGER PRIMARY KEY,\n"
	"  order_id TEXT,\n"
	"  request_no INTEGER,\n"
	"  reason TEXT NOT NULL,\n"
	"  at_ms INTEGER NOT NULL\n"
	");\n"
	"CREATE INDEX IF NOT EXISTS rolled_back_request ON rolled_back (request_no);\n"
	"PRAGMA user_version = 1;\n";

static int exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "order-service: sqlite: %s (in: %.60s)\n", msg ? msg : "?", sql);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* ROLLBACK without a complaint when SQLite already rolled back by itself. */
static void rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		exec_sql(db, "ROLLBACK");
}

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;

	if (sqlite3_open(path, &db) != SQLITE_OK) {
		fprintf(stderr, "order-service: %s: %s\n", path, db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 10000);
	if (exec_sql(db, schema)) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

/* Prepares sql and binds the int64 arguments ?1..?n (n <= 3).  NULL on
 * error (reported). */
static sqlite3_stmt *stmt(sqlite3 *db, const char *sql, int n, int64_t a1, int64_t a2,
			  int64_t a3)
{
	sqlite3_stmt *st = NULL;
	int64_t args[3] = { a1, a2, a3 };

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "order-service: sqlite: %s (in: %.60s)\n", sqlite3_errmsg(db), sql);
		return NULL;
	}
	for (int i = 0; i < n; i++)
		sqlite3_bind_int64(st, i + 1, args[i]);
	return st;
}

/* 1 if sql (with int64 args) returns a row, 0 if none, -1 on error. */
static int exists(sqlite3 *db, const char *sql, int n, int64_t a1, int64_t a2)
{
	sqlite3_stmt *st = stmt(db, sql, n, a1, a2, 0);
	int rc;

	if (!st)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Inserts into rolled_back; 0 or -1. */
static int insert_rolled_back(sqlite3 *db, int64_t txn_id, const char *order_id, long request,
			      const char *reason)
{
	sqlite3_stmt *st = stmt(db,
				"INSERT INTO rolled_back (txn_id, order_id, request_no, reason, at_ms)"
				" VALUES (?1, ?4, nullif(?2, 0), ?5, ?3)",
				3, txn_id, request, now_ms());
	int rc;

	if (!st)
		return -1;
	sqlite3_bind_text(st, 4, order_id && order_id[0] ? order_id : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int insert_order(sqlite3 *db, int64_t txn_id, const struct order *o)
{
	sqlite3_stmt *st = stmt(db,
				"INSERT INTO orders (order_id, txn_id, user_id, request_no, created_ms)"
				" VALUES (?4, ?1, ?5, nullif(?2, 0), ?3)",
				3, txn_id, o->request, now_ms());
	int rc;

	if (!st)
		return -1;
	sqlite3_bind_text(st, 4, o->order_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, o->user, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "order-service: insert order %s: %s\n", o->order_id, sqlite3_errmsg(db));
		return -1;
	}
	for (int i = 0; i < o->nitems; i++) {
		st = stmt(db, "INSERT INTO order_items (order_id, sku, qty) VALUES (?2, ?3, ?1)", 1,
			  o->items[i].qty, 0, 0);
		if (!st)
			return -1;
		sqlite3_bind_text(st, 2, o->order_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, o->items[i].sku, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	return 0;
}

/* ---- the local transaction (main thread, inside sluice_txn_send) ---- */

/* Creates the order in one SQLite transaction, together with its txn_id.
 * Returns COMMIT when the order now exists, ROLLBACK when it does not and
 * never will, UNKNOWN when the COMMIT itself failed (then we cannot be sure
 * what the disk holds, and the check callback will read it later). */
static sluice_txn_decision_t create_order(struct svc *s, int64_t txn_id, const struct order *o,
					  bool declined)
{
	sqlite3 *db = s->db;
	int fenced;

	if (exec_sql(db, "BEGIN IMMEDIATE"))
		return SLUICE_TXN_ROLLBACK; /* nothing written */
	fenced = exists(db, "SELECT 1 FROM rolled_back WHERE txn_id = ?1", 1, txn_id, 0);
	if (fenced != 0)
		goto undo; /* fenced (or unreadable): never create this order */
	if (declined) {
		/* A business "no": record it (so a restart does not retry the
		 * checkout, and a check-back finds the answer), publish nothing. */
		if (insert_rolled_back(db, txn_id, o->order_id, o->request, "declined: payment failed"))
			goto undo;
	} else if (insert_order(db, txn_id, o)) {
		goto undo;
	}
	if (exec_sql(db, "COMMIT")) {
		rollback(db);
		return SLUICE_TXN_UNKNOWN;
	}
	return declined ? SLUICE_TXN_ROLLBACK : SLUICE_TXN_COMMIT;
undo:
	rollback(db);
	if (fenced == 1) {
		s->n_fenced++;
		printf("  order %s request %ld: txn %" PRId64 " was already rolled back by check-back:"
		       " order not created\n", o->order_id, o->request, txn_id);
	}
	return SLUICE_TXN_ROLLBACK;
}

static sluice_txn_decision_t local_txn(sluice_txn_producer_t *p, int64_t txn_id, void *arg)
{
	struct attempt *a = arg;
	struct svc *s = a->s;
	sluice_txn_decision_t d;

	(void)p;
	if (s->o.crash_at == CRASH_PREPARED && a->o->request >= s->o.crash_request) {
		printf("CRASH at prepared: request %ld order %s txn %" PRId64
		       ": half message stored, exiting before the local transaction\n",
		       a->o->request, a->o->order_id, txn_id);
		fflush(stdout);
		_exit(CRASH_EXIT);
	}
	atomic_store(&s->inflight, txn_id);
	d = create_order(s, txn_id, a->o, a->declined);
	atomic_store(&s->inflight, -1);
	if (s->o.crash_at == CRASH_LOCAL_COMMITTED && a->o->request >= s->o.crash_request &&
	    d == SLUICE_TXN_COMMIT) {
		printf("CRASH at local-committed: request %ld order %s txn %" PRId64
		       ": order row committed, exiting before the end reaches the broker\n",
		       a->o->request, a->o->order_id, txn_id);
		fflush(stdout);
		_exit(CRASH_EXIT);
	}
	return d;
}

/* ---- check-back (the producer's check thread) ----
 *
 * The broker asks about a half message that was prepared and not ended:
 * its producer died (or answered UNKNOWN).  The answer comes from the
 * database, keyed by txn_id:
 *
 *   - an order row with this txn_id: the local transaction committed ->
 *     COMMIT.
 *   - none: ROLLBACK.  This is final, not a guess, for two reasons.
 *     (a) Whoever ran the local transaction has finished with it: either
 *     its process is gone (killed after prepare: the transaction never
 *     started, or it started and died uncommitted, which SQLite rolls
 *     back), or its callback has returned (then it committed, and the row
 *     would be here, or it rolled back, and it never will commit).  The one
 *     exception is a local transaction running right now in THIS process:
 *     we know it (inflight) and answer UNKNOWN, i.e. "ask again later".
 *     (b) To also cover another instance whose local transaction is slow
 *     (longer than transaction.check.timeout.ms), the ROLLBACK is written
 *     into rolled_back in the same SQLite transaction that found no order:
 *     create_order() checks that table under the same lock and refuses to
 *     create the order.  Either the order row or the fence commits first;
 *     the broker and the database can never disagree.
 *   - UNKNOWN otherwise only when the database cannot be read (busy
 *     beyond its timeout, I/O error): the broker asks again with backoff.
 */
static sluice_txn_decision_t check_txn(sluice_txn_producer_t *p, const sluice_txn_check_t *c,
				       void *ctx)
{
	struct svc *s = ctx;
	sqlite3 *db = s->check_db;
	struct order o;
	const char *what;
	sluice_txn_decision_t d = SLUICE_TXN_UNKNOWN;
	int found;

	(void)p;
	/* The half message is ours: its value names the order. */
	if (!order_parse(c->value, c->value_len, &o))
		memset(&o, 0, sizeof(o));
	if (atomic_load(&s->inflight) == c->txn_id) {
		what = "its local transaction is running now -> UNKNOWN (ask again)";
		goto out;
	}
	if (exec_sql(db, "BEGIN IMMEDIATE")) {
		what = "database busy -> UNKNOWN";
		goto out;
	}
	found = exists(db, "SELECT 1 FROM orders WHERE txn_id = ?1", 1, c->txn_id, 0);
	if (found == 1) {
		d = SLUICE_TXN_COMMIT;
		what = "order row found -> COMMIT";
	} else if (found == 0 &&
		   (found = exists(db, "SELECT 1 FROM rolled_back WHERE txn_id = ?1", 1, c->txn_id, 0)) == 1) {
		d = SLUICE_TXN_ROLLBACK;
		what = "already rolled back here -> ROLLBACK";
	} else if (found == 0 &&
		   !insert_rolled_back(db, c->txn_id, o.order_id, o.request, "check-back: no order row")) {
		d = SLUICE_TXN_ROLLBACK;
		what = "no order row -> ROLLBACK (recorded)";
	} else {
		what = "database error -> UNKNOWN";
	}
	if (d == SLUICE_TXN_UNKNOWN) {
		rollback(db);
	} else if (exec_sql(db, "COMMIT")) {
		rollback(db);
		d = SLUICE_TXN_UNKNOWN;
		what = "database error -> UNKNOWN";
	}
out:
	if (d == SLUICE_TXN_COMMIT)
		atomic_fetch_add(&s->n_check_commit, 1);
	else if (d == SLUICE_TXN_ROLLBACK)
		atomic_fetch_add(&s->n_check_rollback, 1);
	else
		atomic_fetch_add(&s->n_check_unknown, 1);
	printf("  check-back: txn %" PRId64 " (order %s, request %ld, earlier checks %d): %s\n",
	       c->txn_id, o.order_id[0] ? o.order_id : "?", o.request, c->check_count, what);
	fflush(stdout);
	return d;
}

/* ---- placing orders ---- */

static int new_order_id(char *dst)
{
	uint64_t v;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
		return -1;
	snprintf(dst, ORDER_ID_LEN + 1, "%016" PRIx64, v);
	return 0;
}

/* One order through prepare -> local -> end.  0, or -1 when the broker
 * stayed unreachable (the order was not created). */
static int place(struct svc *s, struct order *o, bool declined)
{
	char value[ORDER_JSON_MAX], errstr[512];
	struct attempt a = { s, o, declined };
	sluice_txn_result_t res;
	int64_t give_up = now_ms() + PREPARE_GIVE_UP_MS;
	sluice_err_t err;
	int len;

	for (;;) {
		/* A fresh id per attempt: a prepare whose answer was lost may
		 * still exist on the broker (check-back will roll it back), and
		 * must not share its order id with the retry. */
		if (new_order_id(o->order_id) || (len = order_format(o, value, sizeof(value))) < 0) {
			fprintf(stderr, "order-service: cannot build order %ld\n", o->request);
			return -1;
		}
		err = sluice_txn_send(s->p, s->o.topic, SLUICE_PARTITION_ANY, o->user, strlen(o->user),
				      value, (size_t)len, NULL, 0, local_txn, &a, &res, errstr,
				      sizeof(errstr));
		if (res.txn_id >= 0)
			break;
		/* The prepare failed: the local transaction did not run, nothing
		 * exists.  Try again while the broker comes back. */
		if (stop_flag || now_ms() > give_up) {
			fprintf(stderr, "order-service: request %ld: prepare failed: %s\n", o->request,
				errstr);
			return -1;
		}
		if (s->n_prepare_retries++ % 8 == 0)
			printf("  request %ld: prepare failed (%s): retrying\n", o->request,
			       sluice_err2name(err));
		sleep_ms(PREPARE_RETRY_MS);
	}
	if (res.decision == SLUICE_TXN_COMMIT)
		s->n_committed++;
	else if (declined && res.decision == SLUICE_TXN_ROLLBACK)
		s->n_declined++;
	if (err) {
		/* The end did not get through (the broker died mid-commit?).
		 * The decision is in our database; check-back settles it. */
		s->n_unconfirmed++;
		printf("  order %s request %ld: txn %" PRId64 " %s locally, end not confirmed (%s):"
		       " check-back will settle it\n", o->order_id, o->request, res.txn_id,
		       res.decision == SLUICE_TXN_COMMIT ? "committed" : "not committed",
		       sluice_err2name(err));
	} else if (declined && res.decision == SLUICE_TXN_ROLLBACK) {
		printf("  order %s request %ld %s: payment declined -> txn %" PRId64
		       " ROLLBACK (never published)\n", o->order_id, o->request, o->user, res.txn_id);
	} else if (res.decision == SLUICE_TXN_UNKNOWN) {
		printf("  order %s request %ld: txn %" PRId64 " outcome unknown locally:"
		       " check-back will read the database\n", o->order_id, o->request, res.txn_id);
	} else if (s->o.verbose && res.decision == SLUICE_TXN_COMMIT) {
		printf("  order %s request %ld %s (%d items): txn %" PRId64
		       " COMMIT -> partition %d offset %" PRId64 "\n", o->order_id, o->request, o->user,
		       o->nitems, res.txn_id, res.partition, res.offset);
	}
	return 0;
}

/* 1 if checkout n already has an order or was declined, 0 if not, -1. */
static int request_done(struct svc *s, long n)
{
	return exists(s->db,
		      "SELECT 1 FROM orders WHERE request_no = ?1 UNION ALL"
		      " SELECT 1 FROM rolled_back WHERE request_no = ?1 AND reason LIKE 'declined%'",
		      1, n, 0);
}

static int run_workload(struct svc *s)
{
	for (long n = 1; n <= s->o.requests && !stop_flag; n++) {
		struct order o;
		bool declined;
		int done = request_done(s, n);

		if (done < 0)
			return -1;
		if (done) {
			s->n_skipped++;
			continue;
		}
		order_workload(s->o.seed, n, s->o.users, &o, &declined);
		if (place(s, &o, declined))
			return -1;
		if (s->o.pace_ms > 0)
			sleep_ms(s->o.pace_ms);
	}
	return 0;
}

/* "sku-01:2,sku-04:1" -> o->items. */
static int parse_items(const char *spec, struct order *o)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(t, ':');
		struct order_item *it = &o->items[o->nitems];

		if (o->nitems == ORDER_MAX_ITEMS)
			return -1;
		if (colon)
			*colon = '\0';
		if (!t[0] || strlen(t) > ORDER_NAME_MAX)
			return -1;
		snprintf(it->sku, sizeof(it->sku), "%s", t);
		it->qty = colon ? atoi(colon + 1) : 1;
		if (it->qty <= 0)
			return -1;
		o->nitems++;
	}
	return o->nitems ? 0 : -1;
}

/* ---- set-up and the end ---- */

static sluice_conf_t *make_conf(const struct opts *o, bool producer)
{
	char errstr[512], num[32];
	sluice_conf_t *conf = sluice_conf_new();

	if (!conf)
		return NULL;
	snprintf(num, sizeof(num), "%d", o->request_timeout_ms);
	if (sluice_conf_set(conf, "bootstrap.servers", o->brokers, errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "client.id", "order-service", errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "request.timeout.ms", num, errstr, sizeof(errstr)))
		goto fail;
	if (!producer)
		return conf;
	snprintf(num, sizeof(num), "%d", o->check_timeout_ms);
	if (sluice_conf_set(conf, "transaction.group", o->group, errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "transaction.check.timeout.ms", num, errstr, sizeof(errstr)) ||
	    (o->instance && sluice_conf_set(conf, "transaction.instance.id", o->instance, errstr,
					     sizeof(errstr))))
		goto fail;
	return conf;
fail:
	fprintf(stderr, "order-service: %s\n", errstr);
	sluice_conf_destroy(conf);
	return NULL;
}

/* Keeps answering checks until no transaction of the group is PENDING or
 * COMMITTING (or drain_ms passed).  0 when settled, 1 when not. */
static int drain(struct svc *s)
{
	char errstr[512];
	sluice_conf_t *conf = make_conf(&s->o, false);
	sluice_admin_t *a = conf ? sluice_admin_new(conf, errstr, sizeof(errstr)) : NULL;
	int64_t deadline = now_ms() + s->o.drain_ms;
	bool said = false;
	int rc = 1;

	if (!a) {
		sluice_conf_destroy(conf);
		return 1;
	}
	while (!stop_flag) {
		sluice_txn_info_t *v = NULL;
		size_t n = 0;
		sluice_err_t err = sluice_admin_list_txns(
			a, s->o.group, 1u << SLUICE_TXN_PENDING | 1u << SLUICE_TXN_COMMITTING, 0, 1000,
			&v, &n, 5000, errstr, sizeof(errstr));

		if (!err) {
			if (n && !said)
				printf("  waiting for %zu unsettled transaction(s) of group %s"
				       " (first: txn %" PRId64 ", %s) to be settled by check-back\n",
				       n, s->o.group, v[0].txn_id, sluice_txn_state_name(v[0].state));
			said = said || n;
			sluice_txn_infos_destroy(v, n);
			if (!n) {
				rc = 0;
				break;
			}
		}
		if (now_ms() > deadline) {
			printf("  %s: transactions still unsettled after %d ms\n",
			       err ? sluice_err2name(err) : "timeout", s->o.drain_ms);
			break;
		}
		sleep_ms(200);
	}
	sluice_admin_destroy(a);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: order_service [options] --db FILE (--requests N | --user U --items LIST)\n"
		"Creates orders in SQLite and publishes order-created transactionally.\n"
		"  -b, --brokers HOST:PORT   broker (default: $SLUICE_BROKERS or 127.0.0.1:9092)\n"
		"      --db FILE             the orders database (created if missing)\n"
		"  -t, --topic NAME          topic (default: order-created)\n"
		"      --group G             transaction.group (default: order-service)\n"
		"      --instance ID         transaction.instance.id (default: host:pid:random)\n"
		"      --requests N          place generated checkouts 1..N (skipping done ones)\n"
		"      --users M             ... over M users (default 8)\n"
		"      --seed S              ... from seed S (default 1)\n"
		"      --user U --items SKU:QTY[,SKU:QTY...]   one order by hand\n"
		"      --pace-ms MS          pause between orders (default 0)\n"
		"      --check-timeout-ms MS transaction.check.timeout.ms: prepare -> first\n"
		"                            check-back (default 0: the broker's, 6000)\n"
		"      --request-timeout-ms MS  request.timeout.ms (default 10000)\n"
		"      --drain-ms MS         at the end, wait this long at most for check-back to\n"
		"                            settle the group's transactions (default 30000; 0: no)\n"
		"      --crash-at prepared|local-committed  --crash-request N\n"
		"                            _exit(%d) in the local transaction of the first\n"
		"                            checkout >= N: before it touches SQLite, or right\n"
		"                            after the COMMIT that created its order\n"
		"  -v, --verbose             a line per order\n", CRASH_EXIT);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "db", required_argument, NULL, 'D' },
		{ "topic", required_argument, NULL, 't' },
		{ "group", required_argument, NULL, 'g' },
		{ "instance", required_argument, NULL, 'i' },
		{ "requests", required_argument, NULL, 'n' },
		{ "users", required_argument, NULL, 'u' },
		{ "seed", required_argument, NULL, 's' },
		{ "user", required_argument, NULL, 'U' },
		{ "items", required_argument, NULL, 'I' },
		{ "pace-ms", required_argument, NULL, 'p' },
		{ "check-timeout-ms", required_argument, NULL, 'c' },
		{ "request-timeout-ms", required_argument, NULL, 'r' },
		{ "drain-ms", required_argument, NULL, 'd' },
		{ "crash-at", required_argument, NULL, 'x' },
		{ "crash-request", required_argument, NULL, 'X' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct svc s;
	struct sigaction sa;
	char errstr[512];
	sluice_conf_t *conf;
	int c, rc = 1;

	memset(&s, 0, sizeof(s));
	s.o.brokers = getenv("SLUICE_BROKERS") ? getenv("SLUICE_BROKERS") : "127.0.0.1:9092";
	s.o.topic = "order-created";
	s.o.group = "order-service";
	s.o.users = 8;
	s.o.seed = 1;
	s.o.request_timeout_ms = 10000;
	s.o.drain_ms = 30000;
	atomic_init(&s.inflight, -1);
	while ((c = getopt_long(argc, argv, "b:t:vh", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': s.o.brokers = optarg; break;
		case 'D': s.o.db_path = optarg; break;
		case 't': s.o.topic = optarg; break;
		case 'g': s.o.group = optarg; break;
		case 'i': s.o.instance = optarg; break;
		case 'n': s.o.requests = strtol(optarg, NULL, 10); break;
		case 'u': s.o.users = atoi(optarg); break;
		case 's': s.o.seed = strtoull(optarg, NULL, 10); break;
		case 'U': s.o.user = optarg; break;
		case 'I': s.o.items = optarg; break;
		case 'p': s.o.pace_ms = atoi(optarg); break;
		case 'c': s.o.check_timeout_ms = atoi(optarg); break;
		case 'r': s.o.request_timeout_ms = atoi(optarg); break;
		case 'd': s.o.drain_ms = atoi(optarg); break;
		case 'x':
			if (!strcmp(optarg, "prepared"))
				s.o.crash_at = CRASH_PREPARED;
			else if (!strcmp(optarg, "local-committed"))
				s.o.crash_at = CRASH_LOCAL_COMMITTED;
			else {
				usage(stderr);
				return 2;
			}
			break;
		case 'X': s.o.crash_request = strtol(optarg, NULL, 10); break;
		case 'v': s.o.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	/* exactly one of: a generated workload, one order by hand */
	if (optind != argc || !s.o.db_path || s.o.users <= 0 || s.o.check_timeout_ms < 0 ||
	    s.o.request_timeout_ms <= 0 || (s.o.requests > 0) == (s.o.user && s.o.items) ||
	    (s.o.crash_at != CRASH_NONE && s.o.crash_request <= 0)) {
		usage(stderr);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (!(s.db = open_db(s.o.db_path)) || !(s.check_db = open_db(s.o.db_path)))
		goto out;
	if (!(conf = make_conf(&s.o, true)))
		goto out;
	sluice_conf_set_txn_check_cb(conf, check_txn, &s);
	if (!(s.p = sluice_txn_producer_new(conf, errstr, sizeof(errstr)))) {
		fprintf(stderr, "order-service: %s\n", errstr);
		sluice_conf_destroy(conf);
		goto out;
	}
	/* From here on the check thread may call check_txn(). */
	if (s.o.requests)
		printf("order-service: group %s, topic %s, checkouts 1 to %ld",
		       s.o.group, s.o.topic, s.o.requests);
	else
		printf("order-service: group %s, topic %s, one order", s.o.group, s.o.topic);
	if (s.o.check_timeout_ms)
		printf(", first check-back %d ms after prepare\n", s.o.check_timeout_ms);
	else
		printf(", first check-back after the broker's transaction.timeout.ms\n");
	fflush(stdout);
	if (s.o.requests) {
		rc = run_workload(&s) ? 1 : 0;
	} else {
		struct order o;

		memset(&o, 0, sizeof(o));
		snprintf(o.user, sizeof(o.user), "%s", s.o.user);
		s.o.verbose = true;
		rc = parse_items(s.o.items, &o) || strlen(s.o.user) > ORDER_NAME_MAX ? 2 : 0;
		if (rc == 2)
			usage(stderr);
		else
			rc = place(&s, &o, false) ? 1 : 0;
	}
	if (!rc && s.o.drain_ms > 0)
		rc = drain(&s);
	printf("order-service: %ld orders committed, %ld declined, %ld fenced, %ld checkouts already"
	       " done, %ld ends unconfirmed, %ld prepare retries; check-back answered %ld COMMIT,"
	       " %ld ROLLBACK, %ld UNKNOWN\n", s.n_committed, s.n_declined, s.n_fenced, s.n_skipped,
	       s.n_unconfirmed, s.n_prepare_retries, atomic_load(&s.n_check_commit),
	       atomic_load(&s.n_check_rollback), atomic_load(&s.n_check_unknown));
out:
	sluice_txn_producer_destroy(s.p); /* joins the check thread first */
	sqlite3_close(s.check_db);
	sqlite3_close(s.db);
	return rc;
}
