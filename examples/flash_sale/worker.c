/*
 * worker.c — flash-sale order worker: consumes the admitted buy requests of
 * the `seckill` topic and, in its own SQLite database, takes one item off
 * the stock and creates the user's order, at its own pace, one SQLite
 * transaction per message.
 *
 * Never oversells, whatever the broker delivers (duplicates, redeliveries,
 * a user who was admitted twice):
 *   - stock.qty has CHECK(qty >= 0) and is decremented with
 *     UPDATE ... WHERE qty > 0, so it cannot go below zero;
 *   - orders.user_id is UNIQUE, and the decrement only happens when the
 *     user has no order yet, so no user buys twice;
 *   - the consumed position (next offset per partition) is stored in the
 *     same transaction as the order, so a restarted worker continues exactly
 *     where the last committed message left off, and a message delivered
 *     again (--from-beginning, or a crash before the commit) changes nothing.
 *
 * The worker joins the consumer group "order-workers" (--group) with
 * sluice_consumer_subscribe(); when the group assigns it partitions, it
 * seeks each one to the position stored in its database (the database, not
 * the group's committed offset, is the source of truth; the group offset is
 * committed too, for lag monitoring).  --no-group: assign every partition by
 * hand instead.  Run one worker per database (the drain mode below expects
 * to own every partition).
 *
 *   worker -b 127.0.0.1:9092 -t seckill --db orders.db --stock 500
 *       consume until the end of the topic as it is at start-up, then exit
 *       (--follow: keep consuming until SIGINT/SIGTERM)
 *   worker --db orders.db --check --stock 500 [--expect-orders N]
 *       verify the invariants and print the figures; exit 1 on a violation
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#include <sluice.h>

#define ITEM "sku-1"
#define MAX_PARTS 1024

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

struct opts {
	const char *brokers;
	const char *topic;
	const char *db_path;
	long stock;
	long expect_orders; /* -1: not checked */
	long pace_us;       /* extra time per message: a slow backend */
	bool check;
	bool follow;
	bool from_beginning;
	bool quiet;
	const char *group; /* NULL: assign partitions by hand */
};

struct worker {
	struct opts o;
	sqlite3 *db;
	sqlite3_stmt *st_get_pos, *st_take, *st_insert, *st_has_order, *st_set_pos;
	long n_msgs, n_orders, n_dup_user, n_sold_out, n_redelivered, n_bad;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- SQLite ---- */

static int exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "worker: sqlite: %s\n  in: %s\n", msg ? msg : "?", sql);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static const char schema[] =
	"PRAGMA journal_mode=WAL;\n"
	/* NORMAL in WAL mode: a crash of the worker loses nothing committed;
	 * a power cut may lose the last transactions, which then carry their
	 * consumed position with them, so the messages are simply re-read. */
	"PRAGMA synchronous=NORMAL;\n"
	"CREATE TABLE IF NOT EXISTS stock (\n"
	"  item TEXT PRIMARY KEY,\n"
	"  initial INTEGER NOT NULL,\n"
	"  qty INTEGER NOT NULL CHECK (qty >= 0)\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS orders (\n"
	"  order_id INTEGER PRIMARY KEY,\n"
	"  user_id INTEGER NOT NULL UNIQUE,\n"
	"  item TEXT NOT NULL,\n"
	"  request_id INTEGER NOT NULL,\n"
	"  src_partition INTEGER NOT NULL,\n"
	"  src_offset INTEGER NOT NULL,\n"
	"  created_ms INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS consumed (\n"
	"  topic TEXT NOT NULL,\n"
	"  part INTEGER NOT NULL,\n"
	"  next_offset INTEGER NOT NULL,\n"
	"  PRIMARY KEY (topic, part)\n"
	");\n";

static int prepare(sqlite3 *db, sqlite3_stmt **st, const char *sql)
{
	if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
		fprintf(stderr, "worker: sqlite: %s\n  in: %s\n", sqlite3_errmsg(db), sql);
		return -1;
	}
	return 0;
}

static int open_db(struct worker *w)
{
	char sql[256];

	if (sqlite3_open(w->o.db_path, &w->db) != SQLITE_OK) {
		fprintf(stderr, "worker: %s: %s\n", w->o.db_path, sqlite3_errmsg(w->db));
		return -1;
	}
	sqlite3_busy_timeout(w->db, 5000);
	if (exec_sql(w->db, schema))
		return -1;
	/* The stock is put in once, the first time the database is used. */
	snprintf(sql, sizeof(sql),
		 "INSERT OR IGNORE INTO stock (item, initial, qty) VALUES ('" ITEM "', %ld, %ld);",
		 w->o.stock, w->o.stock);
	if (exec_sql(w->db, sql))
		return -1;
	if (prepare(w->db, &w->st_get_pos,
		    "SELECT next_offset FROM consumed WHERE topic = ?1 AND part = ?2") ||
	    /* One item, only if there is one and the user has no order yet. */
	    prepare(w->db, &w->st_take,
		    "UPDATE stock SET qty = qty - 1 WHERE item = '" ITEM "' AND qty > 0"
		    " AND NOT EXISTS (SELECT 1 FROM orders WHERE user_id = ?1)") ||
	    prepare(w->db, &w->st_insert,
		    "INSERT INTO orders (user_id, item, request_id, src_partition, src_offset,"
		    " created_ms) VALUES (?1, '" ITEM "', ?2, ?3, ?4, ?5)") ||
	    prepare(w->db, &w->st_has_order, "SELECT 1 FROM orders WHERE user_id = ?1") ||
	    prepare(w->db, &w->st_set_pos,
		    "INSERT INTO consumed (topic, part, next_offset) VALUES (?1, ?2, ?3)"
		    " ON CONFLICT (topic, part) DO UPDATE SET"
		    " next_offset = max(next_offset, excluded.next_offset)"))
		return -1;
	return 0;
}

static void close_db(struct worker *w)
{
	sqlite3_finalize(w->st_get_pos);
	sqlite3_finalize(w->st_take);
	sqlite3_finalize(w->st_insert);
	sqlite3_finalize(w->st_has_order);
	sqlite3_finalize(w->st_set_pos);
	sqlite3_close(w->db);
}

/* Runs a prepared statement to completion; returns the first column of
 * the first row (or def if none), or -2 on error. */
static int64_t step_int(sqlite3 *db, sqlite3_stmt *st, int64_t def)
{
	int64_t v = def;
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW) {
		v = sqlite3_column_int64(st, 0);
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "worker: sqlite: %s\n", sqlite3_errmsg(db));
		v = -2;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return v;
}

/* Stored next offset of a partition, or -1 if none. */
static int64_t stored_position(struct worker *w, int32_t part)
{
	sqlite3_bind_text(w->st_get_pos, 1, w->o.topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(w->st_get_pos, 2, part);
	return step_int(w->db, w->st_get_pos, -1);
}

enum outcome { OUT_ORDER, OUT_DUP_USER, OUT_SOLD_OUT, OUT_REDELIVERED, OUT_BAD };

/* One message, one transaction.  Returns the outcome, or -1 on a database
 * error (the transaction is rolled back; the message will be retried). */
static int handle(struct worker *w, int32_t part, int64_t offset, const char *val, size_t len)
{
	char buf[128];
	unsigned user = 0, request = 0;
	int64_t pos, changed;
	int out;

	if (len >= sizeof(buf))
		len = sizeof(buf) - 1;
	memcpy(buf, val ? val : "", val ? len : 0);
	buf[val ? len : 0] = '\0';

	if (exec_sql(w->db, "BEGIN IMMEDIATE"))
		return -1;
	pos = stored_position(w, part);
	if (pos == -2)
		goto fail;
	if (offset < pos && !w->o.from_beginning) {
		/* Already handled by a committed transaction. */
		out = OUT_REDELIVERED;
	} else if (sscanf(buf, "user=%u request=%u", &user, &request) != 2 || !user) {
		out = OUT_BAD; /* poison message: skipped, position moves on */
	} else {
		sqlite3_bind_int64(w->st_take, 1, user);
		if (step_int(w->db, w->st_take, 0) == -2)
			goto fail;
		changed = sqlite3_changes(w->db);
		if (changed == 1) {
			sqlite3_bind_int64(w->st_insert, 1, user);
			sqlite3_bind_int64(w->st_insert, 2, request);
			sqlite3_bind_int(w->st_insert, 3, part);
			sqlite3_bind_int64(w->st_insert, 4, offset);
			sqlite3_bind_int64(w->st_insert, 5, now_ms());
			/* UNIQUE(user_id) is the backstop: a conflict fails the
			 * whole transaction, stock included. */
			if (step_int(w->db, w->st_insert, 0) == -2)
				goto fail;
			out = OUT_ORDER;
		} else {
			int64_t has;

			sqlite3_bind_int64(w->st_has_order, 1, user);
			has = step_int(w->db, w->st_has_order, 0);
			if (has == -2)
				goto fail;
			out = has ? OUT_DUP_USER : OUT_SOLD_OUT;
		}
	}
	sqlite3_bind_text(w->st_set_pos, 1, w->o.topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(w->st_set_pos, 2, part);
	sqlite3_bind_int64(w->st_set_pos, 3, offset + 1);
	if (step_int(w->db, w->st_set_pos, 0) == -2)
		goto fail;
	if (exec_sql(w->db, "COMMIT"))
		goto fail;
	return out;
fail:
	exec_sql(w->db, "ROLLBACK");
	return -1;
}

/* ---- checks ---- */

static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v;

	if (prepare(db, &st, sql))
		return -2;
	v = step_int(db, st, -1);
	sqlite3_finalize(st);
	return v;
}

static int check_db(struct worker *w)
{
	int64_t qty = query_int(w->db, "SELECT qty FROM stock WHERE item = '" ITEM "'");
	int64_t initial = query_int(w->db, "SELECT initial FROM stock WHERE item = '" ITEM "'");
	int64_t orders = query_int(w->db, "SELECT count(*) FROM orders");
	int64_t users = query_int(w->db, "SELECT count(DISTINCT user_id) FROM orders");
	int64_t twice = query_int(w->db, "SELECT count(*) FROM (SELECT user_id FROM orders"
					 " GROUP BY user_id HAVING count(*) > 1)");
	int bad = 0;

	printf("  orders created   %8" PRId64 "\n", orders);
	printf("  final stock      %8" PRId64 " of %" PRId64 "\n", qty, initial);
#define CHECK(cond, fmt, ...)                                                 \
	do {                                                                  \
		if (cond) {                                                   \
			printf("  ok     " fmt "\n", __VA_ARGS__);           \
		} else {                                                      \
			printf("  FAILED " fmt "\n", __VA_ARGS__);           \
			bad++;                                                \
		}                                                             \
	} while (0)
	CHECK(qty >= 0, "stock >= 0 (%" PRId64 ")", qty);
	CHECK(orders >= 0 && orders <= initial, "orders <= stock put on sale (%" PRId64 " <= %" PRId64 ")",
	      orders, initial);
	CHECK(twice == 0 && users == orders, "no user in two orders (%" PRId64 " users, %" PRId64
	      " orders)", users, orders);
	CHECK(orders + qty == initial, "orders + stock == initial (%" PRId64 " + %" PRId64
	      " == %" PRId64 ")", orders, qty, initial);
	if (w->o.expect_orders >= 0)
		CHECK(orders == w->o.expect_orders,
		      "orders == min(stock, admitted distinct users) (%" PRId64 " == %ld)", orders,
		      w->o.expect_orders);
#undef CHECK
	if (bad)
		printf("OVERSELL CHECK FAILED: %d violation(s)\n", bad);
	else
		printf("verified: no oversell\n");
	return bad ? 1 : 0;
}

/* ---- consuming ---- */

static int32_t partition_count(struct worker *w)
{
	char errstr[512];
	sluice_conf_t *conf = sluice_conf_new();
	sluice_admin_t *a;
	sluice_topic_list_t *l = NULL;
	int32_t n = -1;

	if (!conf || sluice_conf_set(conf, "bootstrap.servers", w->o.brokers, errstr,
				     sizeof(errstr))) {
		sluice_conf_destroy(conf);
		return -1;
	}
	a = sluice_admin_new(conf, errstr, sizeof(errstr));
	if (!a) {
		fprintf(stderr, "worker: admin: %s\n", errstr);
		sluice_conf_destroy(conf);
		return -1;
	}
	if (sluice_admin_list_topics(a, w->o.topic, &l, 10000) == SLUICE_ERR_NO_ERROR) {
		if (sluice_topic_list_count(l) == 1) {
			const sluice_topic_info_t *ti = sluice_topic_list_get(l, 0);

			if (ti->err)
				fprintf(stderr, "worker: topic %s: %s\n", w->o.topic,
					sluice_err2str(ti->err));
			else
				n = ti->partition_count;
		}
		sluice_topic_list_destroy(l);
	} else {
		fprintf(stderr, "worker: cannot describe topic %s\n", w->o.topic);
	}
	sluice_admin_destroy(a);
	return n;
}

/* Group mode: the group gave us partitions; continue each one from the
 * position committed in our database (or its beginning). */
static void on_rebalance(sluice_consumer_t *c, sluice_rebalance_event_t ev,
			 const sluice_topic_partition_t *parts, size_t nparts, void *ctx)
{
	struct worker *w = ctx;

	for (size_t i = 0; i < nparts; i++) {
		int64_t pos;

		if (ev != SLUICE_REBALANCE_ASSIGNED)
			continue;
		pos = w->o.from_beginning ? -1 : stored_position(w, parts[i].partition);
		sluice_consumer_seek(c, parts[i].topic, parts[i].partition,
				     pos >= 0 ? pos : SLUICE_OFFSET_BEGINNING);
		if (!w->o.quiet)
			printf("worker: group %s assigned %s [%d], from %s\n", w->o.group,
			       parts[i].topic, parts[i].partition, pos >= 0 ? "stored position" : "the beginning");
	}
}

static int consume(struct worker *w)
{
	char errstr[512];
	sluice_conf_t *conf = sluice_conf_new();
	sluice_consumer_t *c;
	int32_t nparts = partition_count(w);
	int64_t *end = NULL, *next = NULL;
	int rc = 0;

	if (nparts < 1 || nparts > MAX_PARTS) {
		sluice_conf_destroy(conf);
		return 1;
	}
	if (!conf || sluice_conf_set(conf, "bootstrap.servers", w->o.brokers, errstr,
				     sizeof(errstr)) ||
	    sluice_conf_set(conf, "client.id", "flash-sale-worker", errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) ||
	    (w->o.group &&
	     (sluice_conf_set(conf, "group.id", w->o.group, errstr, sizeof(errstr)) ||
	      sluice_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr))))) {
		fprintf(stderr, "worker: %s\n", conf ? errstr : "out of memory");
		sluice_conf_destroy(conf);
		return 1;
	}
	if (w->o.group)
		sluice_conf_set_rebalance_cb(conf, on_rebalance, w);
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "worker: %s\n", errstr);
		sluice_conf_destroy(conf);
		return 1;
	}
	end = calloc((size_t)nparts, sizeof(*end));
	next = calloc((size_t)nparts, sizeof(*next));
	if (!end || !next) {
		rc = 1;
		goto out;
	}
	for (int32_t i = 0; i < nparts; i++) {
		int64_t low = 0, high = 0, pos = w->o.from_beginning ? -1 : stored_position(w, i);
		sluice_err_t err;

		if (pos == -2) {
			rc = 1;
			goto out;
		}
		err = sluice_consumer_query_watermarks(c, w->o.topic, i, &low, &high, 10000);
		if (err) {
			fprintf(stderr, "worker: watermarks of %s [%d]: %s\n", w->o.topic, i,
				sluice_err2str(err));
			rc = 1;
			goto out;
		}
		end[i] = high; /* drain mode: stop here */
		next[i] = pos >= 0 ? (pos < low ? low : pos) : low;
		if (!w->o.group &&
		    sluice_consumer_assign(c, w->o.topic, i, pos >= 0 ? pos : SLUICE_OFFSET_BEGINNING)) {
			rc = 1;
			goto out;
		}
	}
	if (w->o.group) {
		const char *topics[1] = { w->o.topic };
		sluice_err_t err = sluice_consumer_subscribe(c, topics, 1);

		if (err) {
			fprintf(stderr, "worker: subscribe: %s\n", sluice_err2str(err));
			rc = 1;
			goto out;
		}
	}
	while (!stop_flag) {
		sluice_message_t *m;
		bool drained = true;
		int out;

		for (int32_t i = 0; i < nparts; i++)
			if (next[i] < end[i])
				drained = false;
		if (drained && !w->o.follow)
			break;
		m = sluice_consumer_poll(c, 500);
		if (!m)
			continue;
		if (sluice_message_err(m)) {
			fprintf(stderr, "worker: %s\n", sluice_message_errstr(m));
			sluice_message_destroy(m);
			continue;
		}
		do {
			out = handle(w, sluice_message_partition(m), sluice_message_offset(m),
				     sluice_message_value(m), sluice_message_len(m));
			if (out < 0) {
				/* Database busy or failing: the transaction was rolled
				 * back; try the same message again a little later. */
				struct timespec ts = { 0, 100 * 1000000 };

				nanosleep(&ts, NULL);
			}
		} while (out < 0 && !stop_flag);
		if (out >= 0) {
			int32_t part = sluice_message_partition(m);

			w->n_msgs++;
			switch (out) {
			case OUT_ORDER: w->n_orders++; break;
			case OUT_DUP_USER: w->n_dup_user++; break;
			case OUT_SOLD_OUT: w->n_sold_out++; break;
			case OUT_REDELIVERED: w->n_redelivered++; break;
			default: w->n_bad++; break;
			}
			if (part >= 0 && part < nparts)
				next[part] = sluice_message_offset(m) + 1;
			/* The group's committed offset, for lag monitoring only. */
			if (w->o.group && w->n_msgs % 100 == 0)
				sluice_consumer_commit(c, 0);
		}
		sluice_message_destroy(m);
		if (w->o.pace_us > 0) {
			struct timespec ts = { (time_t)(w->o.pace_us / 1000000),
					       (long)(w->o.pace_us % 1000000) * 1000 };

			nanosleep(&ts, NULL);
		}
	}
	if (w->o.group && w->n_msgs)
		sluice_consumer_commit(c, 1);
out:
	sluice_consumer_destroy(c);
	free(end);
	free(next);
	if (!w->o.quiet)
		printf("worker: %ld messages: %ld orders created, %ld users already had one, "
		       "%ld sold out, %ld already handled, %ld malformed\n",
		       w->n_msgs, w->n_orders, w->n_dup_user, w->n_sold_out, w->n_redelivered,
		       w->n_bad);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: worker [options] --db FILE\n"
		"Flash-sale order worker: consumes TOPIC and creates orders in a SQLite database.\n"
		"  -b, --brokers HOST:PORT  broker (default: $SLUICE_BROKERS or 127.0.0.1:9092)\n"
		"  -t, --topic NAME         topic (default: seckill)\n"
		"      --db FILE            the worker's SQLite database (created if missing)\n"
		"      --stock N            items put on sale when the database is created\n"
		"                           (default: 500)\n"
		"      --follow             keep consuming (default: stop at the end of the topic\n"
		"                           as it was at start-up)\n"
		"      --from-beginning     re-read the topic from its start, ignoring the stored\n"
		"                           position (shows that redelivery changes nothing)\n"
		"      --group ID           consumer group (default: order-workers)\n"
		"      --no-group           assign every partition by hand instead\n"
		"      --pace-us US         spend at least US microseconds per message\n"
		"      --check              do not consume: verify the invariants and exit\n"
		"      --expect-orders N    with --check: also require exactly N orders\n"
		"  -q, --quiet              no summary line\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "topic", required_argument, NULL, 't' },
		{ "db", required_argument, NULL, 'D' },
		{ "stock", required_argument, NULL, 'S' },
		{ "follow", no_argument, NULL, 'f' },
		{ "from-beginning", no_argument, NULL, 'B' },
		{ "pace-us", required_argument, NULL, 'p' },
		{ "group", required_argument, NULL, 'g' },
		{ "no-group", no_argument, NULL, 'G' },
		{ "check", no_argument, NULL, 'c' },
		{ "expect-orders", required_argument, NULL, 'e' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct worker w;
	struct sigaction sa;
	int c, rc;

	memset(&w, 0, sizeof(w));
	w.o.brokers = getenv("SLUICE_BROKERS") ? getenv("SLUICE_BROKERS") : "127.0.0.1:9092";
	w.o.topic = "seckill";
	w.o.stock = 500;
	w.o.expect_orders = -1;
	w.o.group = "order-workers";
	while ((c = getopt_long(argc, argv, "b:t:qh", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': w.o.brokers = optarg; break;
		case 't': w.o.topic = optarg; break;
		case 'D': w.o.db_path = optarg; break;
		case 'S': w.o.stock = strtol(optarg, NULL, 10); break;
		case 'f': w.o.follow = true; break;
		case 'B': w.o.from_beginning = true; break;
		case 'p': w.o.pace_us = strtol(optarg, NULL, 10); break;
		case 'g': w.o.group = optarg; break;
		case 'G': w.o.group = NULL; break;
		case 'c': w.o.check = true; break;
		case 'e': w.o.expect_orders = strtol(optarg, NULL, 10); break;
		case 'q': w.o.quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !w.o.db_path || w.o.stock < 0) {
		usage(stderr);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (open_db(&w)) {
		close_db(&w);
		return 1;
	}
	rc = w.o.check ? check_db(&w) : consume(&w);
	close_db(&w);
	return rc;
}
