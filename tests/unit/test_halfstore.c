/*
 * test_halfstore.c — txn/halfstore on an in-memory SQLite database with a
 * fake clock: prepare / end / mark_committed and every documented outcome
 * (idempotent commit that never yields a second append — RocketMQ issue
 * #5574 —, conflicts, not found, discarded), per-partition commit
 * sequences (released after a failed append and taken anew by the next
 * end: unseq), due checks with
 * leases, backoff and discard, resume, list
 * paging, purge, atomicity of a failing operation, and the query plans:
 * the due and per-group queries are index lookups, also with 100,000
 * pending rows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "halfstore.h"
#include "stmtcache.h"

#define BATCH_LEN 80

static checksched_policy policy;

static sqlite3 *open_db(void)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, halfstore_schema_sql, NULL, NULL, NULL), SQLITE_OK);
	/* running it again is harmless (a broker start on an existing db) */
	assert_int_equal(sqlite3_exec(db, halfstore_schema_sql, NULL, NULL, NULL), SQLITE_OK);
	checksched_policy_default(&policy);
	return db;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static int64_t query_i64(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A RecordBatch v2 as far as halfstore looks at it (header fields; the
 * record bytes are filler marked with tag). */
static void make_batch(uint8_t *b, int32_t records, uint8_t tag)
{
	memset(b, tag, BATCH_LEN);
	memset(b, 0, 61);
	put32(b + 8, BATCH_LEN - 12);
	b[16] = 2;
	put32(b + 23, (uint32_t)(records - 1));
	put32(b + 57, (uint32_t)records);
}

static int64_t prepare_n(sqlite3 *db, const char *group, const char *topic, int32_t part,
			 int32_t records, uint64_t origin, int64_t now)
{
	uint8_t b[BATCH_LEN];
	halfstore_prepare_args a = {
		.producer_group = group, .topic = topic, .partition = part,
		.batch = b, .batch_len = sizeof(b), .origin = origin,
	};
	int64_t id = -1;

	make_batch(b, records, (uint8_t)(0x40 + (now & 0x1f)));
	assert_int_equal(halfstore_prepare(db, &a, now, &policy, &id), HALFSTORE_OK);
	assert_true(id > 0);
	return id;
}

static int64_t prepare1(sqlite3 *db, const char *group, int64_t now)
{
	return prepare_n(db, group, "orders", 0, 1, 11, now);
}

static enum halfstore_state state_of(sqlite3 *db, int64_t id)
{
	halfstore_txn t;
	enum halfstore_state s;

	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	s = t.state;
	halfstore_txn_clear(&t);
	return s;
}

/* ---- prepare ---- */

static void test_halfstore_prepare_stores_pending(void **state)
{
	sqlite3 *db = open_db();
	uint8_t b[BATCH_LEN];
	halfstore_txn t;
	int64_t id = prepare_n(db, "order-svc", "orders", 3, 2, 0xfeedface12345678ULL, 1000);

	(void)state;
	make_batch(b, 2, 0x40 + (1000 & 0x1f));
	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	assert_int_equal(t.txn_id, id);
	assert_string_equal(t.producer_group, "order-svc");
	assert_string_equal(t.topic, "orders");
	assert_int_equal(t.partition, 3);
	assert_int_equal(t.state, HALFSTORE_PENDING);
	assert_int_equal(t.batch_len, BATCH_LEN);
	assert_non_null(t.batch);
	assert_memory_equal(t.batch, b, BATCH_LEN); /* exactly as sent */
	assert_int_equal(t.record_count, 2);
	assert_int_equal(t.created_ms, 1000);
	assert_int_equal(t.ended_ms, -1);
	assert_int_equal(t.next_check_ms, 1000 + 6000);
	assert_int_equal(t.check_count, 0);
	assert_int_equal(t.commit_seq, -1);
	assert_int_equal(t.log_offset, -1);
	assert_true(t.origin == 0xfeedface12345678ULL);
	assert_null(t.discard_reason);
	halfstore_txn_clear(&t);
	halfstore_txn_clear(&t); /* clearing twice is harmless */
	assert_int_equal(halfstore_count(db, NULL, HALFSTORE_PENDING), 1);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_prepare_rejects_bad_batch(void **state)
{
	sqlite3 *db = open_db();
	uint8_t b[BATCH_LEN];
	halfstore_prepare_args a = {
		.producer_group = "g", .topic = "t", .partition = 0, .batch = b, .batch_len = sizeof(b),
	};
	int64_t id = 4242;

	(void)state;
	make_batch(b, 1, 0);
	a.batch_len = 60;
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	a.batch_len = sizeof(b);
	b[16] = 1; /* magic */
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	make_batch(b, 1, 0);
	b[22] = 0x10; /* Kafka-transactional */
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	make_batch(b, 3, 0);
	put32(b + 23, 1); /* lastOffsetDelta != count - 1 */
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	make_batch(b, 1, 0);
	put32(b + 8, 10); /* batchLength */
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	make_batch(b, 1, 0);
	a.producer_group = "";
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_E_INVALID);
	a.producer_group = "g";
	a.check_timeout_ms = 500; /* per-message override */
	assert_int_equal(halfstore_prepare(db, &a, 0, &policy, &id), HALFSTORE_OK);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM txn_half"), 1);
	assert_int_equal(query_i64(db, "SELECT next_check_ms FROM txn_half"), 500);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* ---- end ---- */

/* A retried end that found its commit in the log marks it at -1 (offset
 * unknown); the first end's mark, coming later with the real offset,
 * replaces the -1 — for both kinds of mark — and nothing else does. */
static void test_halfstore_real_offset_replaces_unknown(void **state)
{
	sqlite3 *db = open_db();
	halfstore_txn t;

	(void)state;
	for (int unsynced = 0; unsynced < 2; unsynced++) {
		int64_t id = prepare1(db, "g", unsynced);

		assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 50, &t), HALFSTORE_OK);
		halfstore_txn_clear(&t);
		assert_int_equal(halfstore_mark_committed(db, id, -1), HALFSTORE_OK);
		assert_int_equal(unsynced ? halfstore_mark_committed_unsynced(db, id, 9)
					  : halfstore_mark_committed(db, id, 9),
				 HALFSTORE_OK);
		assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
		assert_int_equal(t.state, HALFSTORE_COMMITTED);
		assert_int_equal(t.log_offset, 9);
		assert_null(t.batch); /* the -1 mark dropped it: not kept again */
		halfstore_txn_clear(&t);
		/* a known offset is never replaced */
		assert_int_equal(halfstore_mark_committed(db, id, 10), HALFSTORE_E_CONFLICT);
		assert_int_equal(halfstore_mark_committed_unsynced(db, id, 10), HALFSTORE_E_CONFLICT);
		assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
		assert_int_equal(t.log_offset, 9);
		halfstore_txn_clear(&t);
	}
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_commit_then_mark_committed(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 50, &t), HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTING);
	assert_int_equal(t.commit_seq, 0);
	assert_int_equal(t.ended_ms, 50);
	assert_non_null(t.batch); /* what the broker appends */
	assert_int_equal(halfstore_commit_epoch(t.commit_seq), 0);
	assert_int_equal(halfstore_commit_base_seq(t.commit_seq), 0);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_mark_committed(db, id, 42), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTED);
	assert_int_equal(t.log_offset, 42);
	assert_null(t.batch); /* it is in the log now */
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_mark_committed(db, id, 42), HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_mark_committed(db, id, 43), HALFSTORE_E_CONFLICT);
	/* offset unknown (-1) agrees with the recorded one */
	assert_int_equal(halfstore_mark_committed(db, id, -1), HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	assert_int_equal(t.log_offset, 42);
	halfstore_txn_clear(&t);
	/* a PENDING txn cannot be marked */
	assert_int_equal(halfstore_mark_committed(db, prepare1(db, "g", 1), 7), HALFSTORE_E_STATE);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* p (n bytes, or a string) lies inside buf. */
static void assert_in_buf(const halfstore_buf *buf, const void *p, size_t n)
{
	const char *c = p;

	if (!c)
		return;
	if (!n)
		n = strlen(c) + 1;
	assert_true(c >= buf->p && c + n <= buf->p + buf->cap);
}

/* halfstore_end's *out is built from its one read plus what its UPDATEs
 * changed: it must equal the row read back afterwards, on every path; with
 * buf (halfstore_end_into), its strings and batch are in buf. */
static void assert_end_out_is_row(sqlite3 *db, halfstore_buf *buf, int64_t id,
				  enum halfstore_decision d, unsigned flags, int64_t now, int want)
{
	halfstore_txn out, row;

	assert_int_equal(halfstore_end_into(db, id, d, flags, now, buf, &out), want);
	assert_ptr_equal(out.buf, buf);
	if (buf) {
		assert_in_buf(buf, out.producer_group, 0);
		assert_in_buf(buf, out.topic, 0);
		assert_in_buf(buf, out.batch, out.batch_len);
		assert_in_buf(buf, out.discard_reason, 0);
	}
	assert_int_equal(halfstore_get(db, id, &row), HALFSTORE_OK);
	assert_int_equal(out.txn_id, row.txn_id);
	assert_string_equal(out.producer_group, row.producer_group);
	assert_string_equal(out.topic, row.topic);
	assert_int_equal(out.partition, row.partition);
	assert_int_equal(out.batch_len, row.batch_len);
	assert_int_equal(out.batch != NULL, row.batch != NULL);
	if (out.batch)
		assert_memory_equal(out.batch, row.batch, row.batch_len);
	assert_int_equal(out.record_count, row.record_count);
	assert_int_equal(out.state, row.state);
	assert_int_equal(out.created_ms, row.created_ms);
	assert_int_equal(out.ended_ms, row.ended_ms);
	assert_int_equal(out.check_count, row.check_count);
	assert_int_equal(out.next_check_ms, row.next_check_ms);
	assert_int_equal(out.lease_until_ms, row.lease_until_ms);
	assert_int_equal(out.commit_seq, row.commit_seq);
	assert_int_equal(out.log_offset, row.log_offset);
	assert_int_equal(out.origin, row.origin);
	assert_int_equal(out.discard_reason != NULL, row.discard_reason != NULL);
	if (out.discard_reason)
		assert_string_equal(out.discard_reason, row.discard_reason);
	halfstore_txn_clear(&out);
	halfstore_txn_clear(&row);
}

static void end_out_scenario(halfstore_buf *buf)
{
	sqlite3 *db = open_db();
	int64_t c = prepare1(db, "g", 1), r = prepare1(db, "g", 2), d = prepare1(db, "g", 3);
	int64_t dr = prepare1(db, "g", 4), leased = prepare1(db, "g", 5);
	halfstore_txn *due = NULL;
	size_t n = 0;

	assert_end_out_is_row(db, buf, c, HALFSTORE_COMMIT, 0, 10, HALFSTORE_OK);
	assert_end_out_is_row(db, buf, c, HALFSTORE_COMMIT, 0, 11, HALFSTORE_OK_ALREADY);
	assert_end_out_is_row(db, buf, c, HALFSTORE_ROLLBACK, 0, 12, HALFSTORE_E_CONFLICT);
	/* its append wrote nothing: the retry sequences it anew */
	assert_int_equal(halfstore_unseq(db, c), HALFSTORE_OK);
	assert_end_out_is_row(db, buf, c, HALFSTORE_COMMIT, 0, 13, HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_mark_committed(db, c, 7), HALFSTORE_OK);
	assert_end_out_is_row(db, buf, c, HALFSTORE_COMMIT, 0, 14, HALFSTORE_OK_ALREADY);
	assert_end_out_is_row(db, buf, r, HALFSTORE_ROLLBACK, 0, 20, HALFSTORE_OK);
	assert_end_out_is_row(db, buf, r, HALFSTORE_ROLLBACK, 0, 21, HALFSTORE_OK_ALREADY);
	assert_end_out_is_row(db, buf, r, HALFSTORE_COMMIT, 0, 22, HALFSTORE_E_CONFLICT);
	/* discarded: refused, then an operator's decision (reason cleared) */
	assert_int_equal(halfstore_discard(db, d, "operator", 30), HALFSTORE_OK);
	assert_int_equal(halfstore_discard(db, dr, "operator", 30), HALFSTORE_OK);
	assert_end_out_is_row(db, buf, d, HALFSTORE_COMMIT, 0, 31, HALFSTORE_E_DISCARDED);
	assert_end_out_is_row(db, buf, d, HALFSTORE_COMMIT, HALFSTORE_F_OPERATOR, 32, HALFSTORE_OK);
	assert_end_out_is_row(db, buf, dr, HALFSTORE_ROLLBACK, HALFSTORE_F_OPERATOR, 33, HALFSTORE_OK);
	/* a check lease is dropped by the end */
	assert_int_equal(halfstore_due_checks(db, 1000000, 10, 5000, &due, &n), HALFSTORE_OK);
	halfstore_txns_free(due, n);
	assert_end_out_is_row(db, buf, leased, HALFSTORE_COMMIT, 0, 40, HALFSTORE_OK);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_end_out_is_the_row(void **state)
{
	halfstore_buf buf = { 0 };

	(void)state;
	end_out_scenario(NULL);
	end_out_scenario(&buf); /* one buf for every call, as a broker job */
	free(buf.p);
}

/* halfstore_end_into grows buf when the row does not fit and otherwise
 * reuses it; clearing the row leaves buf to its owner. */
static void test_halfstore_end_into_reuses_buf(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare1(db, "g", 1), b = prepare1(db, "g", 2);
	halfstore_buf buf = { 0 };
	halfstore_txn t;
	char *first;

	(void)state;
	assert_int_equal(halfstore_end_into(db, a, HALFSTORE_COMMIT, 0, 10, &buf, &t), HALFSTORE_OK);
	assert_non_null(buf.p);
	assert_true(buf.cap >= BATCH_LEN + strlen("g") + strlen("orders") + 2);
	assert_ptr_equal(t.batch, (uint8_t *)buf.p);
	first = buf.p;
	halfstore_txn_clear(&t);
	assert_ptr_equal(buf.p, first); /* not freed */
	assert_int_equal(halfstore_end_into(db, b, HALFSTORE_COMMIT, 0, 11, &buf, &t), HALFSTORE_OK);
	assert_ptr_equal(buf.p, first); /* fitted: no allocation */
	assert_string_equal(t.topic, "orders");
	assert_int_equal(t.commit_seq, 1);
	halfstore_txn_clear(&t);
	/* a buffer too small is grown */
	free(buf.p);
	buf.p = malloc(4);
	buf.cap = 4;
	assert_int_equal(halfstore_end_into(db, b, HALFSTORE_COMMIT, 0, 12, &buf, &t),
			 HALFSTORE_OK_ALREADY);
	assert_true(buf.cap >= BATCH_LEN);
	assert_in_buf(&buf, t.batch, t.batch_len);
	assert_string_equal(t.producer_group, "g");
	halfstore_txn_clear(&t);
	free(buf.p);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* RocketMQ #5574: a retried commit must never produce a second append. */
static void test_halfstore_double_commit_is_ok_already_same_seq(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare_n(db, "g", "orders", 0, 3, 1, 0);
	int64_t b = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	halfstore_txn t1, t2;

	(void)state;
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 10, &t1), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 20, &t2), HALFSTORE_OK_ALREADY);
	assert_int_equal(t2.commit_seq, t1.commit_seq);
	assert_int_equal(t2.state, HALFSTORE_COMMITTING);
	assert_int_equal(t2.ended_ms, 10); /* nothing changed */
	halfstore_txn_clear(&t2);
	/* the retry took no sequence: the next commit follows directly */
	assert_int_equal(halfstore_end(db, b, HALFSTORE_COMMIT, 0, 30, &t2), HALFSTORE_OK);
	assert_int_equal(t2.commit_seq, t1.commit_seq + 3);
	halfstore_txn_clear(&t2);
	/* after the append: same answer, now with the offset */
	assert_int_equal(halfstore_mark_committed(db, a, 100), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 40, &t2), HALFSTORE_OK_ALREADY);
	assert_int_equal(t2.commit_seq, t1.commit_seq);
	assert_int_equal(t2.log_offset, 100);
	halfstore_txn_clear(&t2);
	halfstore_txn_clear(&t1);
	/* out may be NULL */
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 50, NULL), HALFSTORE_OK_ALREADY);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq"), 4);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_opposite_decision_conflicts(void **state)
{
	sqlite3 *db = open_db();
	int64_t r = prepare1(db, "g", 0), c = prepare1(db, "g", 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, r, HALFSTORE_ROLLBACK, 0, 5, NULL), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, r, HALFSTORE_ROLLBACK, 0, 6, NULL), HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_end(db, r, HALFSTORE_COMMIT, 0, 7, &t), HALFSTORE_E_CONFLICT);
	assert_int_equal(t.state, HALFSTORE_ROLLED_BACK);
	assert_int_equal(t.ended_ms, 5);
	assert_int_equal(t.commit_seq, -1);
	assert_null(t.batch); /* dropped at rollback */
	halfstore_txn_clear(&t);

	assert_int_equal(halfstore_end(db, c, HALFSTORE_COMMIT, 0, 8, NULL), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, c, HALFSTORE_ROLLBACK, 0, 9, &t), HALFSTORE_E_CONFLICT);
	assert_int_equal(t.state, HALFSTORE_COMMITTING);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_mark_committed(db, c, 1), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, c, HALFSTORE_ROLLBACK, 0, 9, NULL), HALFSTORE_E_CONFLICT);
	assert_int_equal(state_of(db, c), HALFSTORE_COMMITTED);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq"), 1);
	assert_int_equal(halfstore_end(db, c, (enum halfstore_decision)9, 0, 9, NULL),
			 HALFSTORE_E_INVALID);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_unknown_txn_not_found(void **state)
{
	sqlite3 *db = open_db();
	halfstore_txn t = { .txn_id = 777 };
	enum halfstore_state s = HALFSTORE_COMMITTED;

	(void)state;
	assert_int_equal(halfstore_end(db, 99, HALFSTORE_COMMIT, 0, 0, &t), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(t.txn_id, 777); /* untouched */
	assert_int_equal(halfstore_get(db, 99, &t), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(t.txn_id, 777);
	assert_int_equal(halfstore_mark_committed(db, 99, 0), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(halfstore_check_answer(db, 99, HALFSTORE_ANSWER_UNKNOWN, HALFSTORE_ANY_CHECK,
					0, &policy, &s),
			 HALFSTORE_E_NOT_FOUND);
	assert_int_equal(s, HALFSTORE_COMMITTED);
	assert_int_equal(halfstore_resume(db, 99, 0), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(halfstore_discard(db, 99, "x", 0), HALFSTORE_E_NOT_FOUND);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_commit_seq_per_partition(void **state)
{
	sqlite3 *db = open_db();
	int64_t p0a = prepare_n(db, "g", "orders", 0, 3, 1, 0);
	int64_t p1 = prepare_n(db, "g", "orders", 1, 5, 1, 0);
	int64_t p0b = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t other = prepare_n(db, "g", "carts", 0, 2, 1, 0);
	int64_t p0c = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t wrap = prepare_n(db, "g", "orders", 2, 3, 1, 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, p0a, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, p1, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, other, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, p0b, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 3); /* advances by record count */
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, p0c, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 4);
	halfstore_txn_clear(&t);
	/* a batch that would wrap the int32 sequence starts the next epoch */
	exec_ok(db, "INSERT INTO txn_seq VALUES('orders', 2, 2147483646)");
	assert_int_equal(halfstore_end(db, wrap, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, HALFSTORE_SEQ_SPAN);
	assert_int_equal(halfstore_commit_epoch(t.commit_seq), 1);
	assert_int_equal(halfstore_commit_base_seq(t.commit_seq), 0);
	halfstore_txn_clear(&t);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* The start-up floor (halfstore_seq_floor): raises a partition's next
 * sequence past what its log holds, never lowers it, and works for a
 * partition that never took one. */
static void test_halfstore_seq_floor(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t b = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t c = prepare_n(db, "g", "orders", 1, 1, 1, 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	/* the log has sequences up to 6: the next commit takes 7 */
	assert_int_equal(halfstore_seq_floor(db, "orders", 0, 7), 0);
	assert_int_equal(halfstore_seq_floor(db, "orders", 0, 3), 0); /* never lowers */
	assert_int_equal(halfstore_seq_floor(db, "orders", 1, 5), 0); /* no row yet */
	assert_int_equal(halfstore_end(db, b, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 7);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, c, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 5);
	halfstore_txn_clear(&t);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A failing statement in the middle of end() leaves nothing behind: the
 * sequence taken before the failure is given back. */
static void test_halfstore_failed_end_changes_nothing(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0);
	halfstore_txn t = { .txn_id = 5 };

	(void)state;
	exec_ok(db, "CREATE TEMP TRIGGER boom BEFORE UPDATE OF state ON txn_half"
		    " WHEN new.state = 'COMMITTING' BEGIN SELECT RAISE(ABORT, 'injected'); END");
	exec_ok(db, "BEGIN");
	assert_true(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 1, &t) < 0);
	assert_int_equal(t.txn_id, 5);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM txn_seq"), 0);
	exec_ok(db, "COMMIT"); /* the caller's transaction is still usable */
	exec_ok(db, "DROP TRIGGER boom");
	assert_int_equal(state_of(db, id), HALFSTORE_PENDING);
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, 0);
	halfstore_txn_clear(&t);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* ---- checks ---- */

/* A lease nobody took is released: due again at the given time, not at the
 * lease end, and not counted as a check; only a leased PENDING row can be
 * released. */
static void test_halfstore_release_lease(void **state)
{
	sqlite3 *db = open_db();
	halfstore_txn *v = NULL;
	size_t n = 0;
	int64_t a = prepare1(db, "g", 0), b = prepare1(db, "g", 0);

	(void)state;
	assert_int_equal(halfstore_due_checks(db, 6000, 10, 30000, &v, &n), 0);
	assert_int_equal(n, 2);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_release_lease(db, a, 6200), HALFSTORE_OK);
	assert_int_equal(halfstore_due_checks(db, 6199, 10, 30000, &v, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(halfstore_due_checks(db, 6200, 10, 30000, &v, &n), 0);
	assert_int_equal(n, 1); /* a again; b keeps its lease */
	assert_int_equal(v[0].txn_id, a);
	assert_int_equal(v[0].check_count, 0);
	halfstore_txns_free(v, n);
	/* not leased any more (or never): nothing changes */
	assert_int_equal(halfstore_release_lease(db, prepare1(db, "g", 0), 1), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_end(db, b, HALFSTORE_ROLLBACK, 0, 6300, NULL), 0);
	assert_int_equal(halfstore_release_lease(db, b, 6400), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_release_lease(db, 999999, 1), HALFSTORE_E_NOT_FOUND);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_due_checks_lease(void **state)
{
	sqlite3 *db = open_db();
	halfstore_txn *v = NULL;
	size_t n = 99;
	int64_t a = prepare1(db, "g", 0), b = prepare1(db, "g", 10), c = prepare1(db, "g", 5);

	(void)state;
	assert_int_equal(halfstore_due_checks(db, 5999, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 0);
	assert_null(v);
	assert_int_equal(halfstore_due_checks(db, 6005, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 2); /* earliest due first */
	assert_int_equal(v[0].txn_id, a);
	assert_int_equal(v[1].txn_id, c);
	assert_int_equal(v[0].lease_until_ms, 7005);
	assert_non_null(v[0].batch); /* the producer checks against it */
	halfstore_txns_free(v, n);
	/* leased: not returned again, the others still are */
	assert_int_equal(halfstore_due_checks(db, 7000, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].txn_id, b);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_due_checks(db, 7004, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 0);
	/* lease expired without an answer: due again */
	assert_int_equal(halfstore_due_checks(db, 7005, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].txn_id, a);
	assert_int_equal(v[1].txn_id, c);
	assert_int_equal(v[0].check_count, 0); /* an expiry is not an answer */
	halfstore_txns_free(v, n);
	/* limit */
	assert_int_equal(halfstore_due_checks(db, 100000, 1, 1000, &v, &n), 0);
	assert_int_equal(n, 1);
	halfstore_txns_free(v, n);
	/* an ended txn is never due */
	assert_int_equal(halfstore_end(db, a, HALFSTORE_ROLLBACK, 0, 0, NULL), 0);
	assert_int_equal(halfstore_end(db, b, HALFSTORE_ROLLBACK, 0, 0, NULL), 0);
	assert_int_equal(halfstore_end(db, c, HALFSTORE_COMMIT, 0, 0, NULL), 0);
	assert_int_equal(halfstore_due_checks(db, INT64_MAX - 1, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 0);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_check_answer_backoff_then_discard(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0);
	enum halfstore_state s;
	halfstore_txn t, *v;
	size_t n;
	int64_t now = 6000;

	(void)state;
	policy.max_checks = 4;
	for (int32_t k = 1; k <= 3; k++) {
		assert_int_equal(halfstore_due_checks(db, now, 10, 1000, &v, &n), 0);
		assert_int_equal(n, 1);
		halfstore_txns_free(v, n);
		/* an answer to another check than the row's current one
		 * (its number is check_count as handed out) changes nothing */
		assert_int_equal(halfstore_check_answer(db, id, HALFSTORE_ANSWER_UNKNOWN, k,
							now + 10, &policy, &s),
				 HALFSTORE_OK_ALREADY);
		assert_int_equal(s, HALFSTORE_PENDING);
		assert_int_equal(halfstore_check_answer(db, id, k == 2 ? HALFSTORE_ANSWER_NONE
								 : HALFSTORE_ANSWER_UNKNOWN,
							k - 1, now + 10, &policy, &s), 0);
		assert_int_equal(s, HALFSTORE_PENDING);
		assert_int_equal(halfstore_get(db, id, &t), 0);
		assert_int_equal(t.check_count, k);
		assert_int_equal(t.next_check_ms, now + 10 + (6000LL << (k - 1)));
		assert_int_equal(t.lease_until_ms, 0);
		now = t.next_check_ms;
		halfstore_txn_clear(&t);
	}
	assert_int_equal(halfstore_check_answer(db, id, HALFSTORE_ANSWER_UNKNOWN, HALFSTORE_ANY_CHECK,
					now, &policy, &s), 0);
	assert_int_equal(s, HALFSTORE_DISCARDED);
	assert_int_equal(halfstore_get(db, id, &t), 0);
	assert_int_equal(t.state, HALFSTORE_DISCARDED);
	assert_int_equal(t.check_count, 4);
	assert_int_equal(t.ended_ms, now);
	assert_non_null(t.discard_reason);
	assert_non_null(strstr(t.discard_reason, "4 checks"));
	assert_non_null(t.batch); /* kept for an operator */
	halfstore_txn_clear(&t);
	/* not due any more; a late producer end is refused, an operator's is not */
	assert_int_equal(halfstore_due_checks(db, INT64_MAX - 1, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(halfstore_check_answer(db, id, HALFSTORE_ANSWER_UNKNOWN, HALFSTORE_ANY_CHECK,
					now, &policy, &s),
			 HALFSTORE_E_STATE);
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, now, &t), HALFSTORE_E_DISCARDED);
	assert_int_equal(t.state, HALFSTORE_DISCARDED);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, HALFSTORE_F_OPERATOR, now, &t),
			 HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTING);
	assert_null(t.discard_reason);
	halfstore_txn_clear(&t);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_check_answer_after_end_changes_nothing(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, id, HALFSTORE_ROLLBACK, 0, 1, NULL), 0);
	assert_int_equal(halfstore_check_answer(db, id, HALFSTORE_ANSWER_NONE, HALFSTORE_ANY_CHECK,
					2, &policy, NULL),
			 HALFSTORE_E_STATE);
	assert_int_equal(halfstore_get(db, id, &t), 0);
	assert_int_equal(t.check_count, 0);
	assert_int_equal(t.state, HALFSTORE_ROLLED_BACK);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_check_answer(db, id, (enum halfstore_answer)0, HALFSTORE_ANY_CHECK,
					2,
						&policy, NULL),
			 HALFSTORE_E_INVALID);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_resume_discarded(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0);
	halfstore_txn t, *v;
	size_t n;

	(void)state;
	assert_int_equal(halfstore_resume(db, id, 5), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_discard(db, id, "operator said so", 10), HALFSTORE_OK);
	assert_int_equal(halfstore_discard(db, id, "again", 10), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_resume(db, id, 20), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, id, &t), 0);
	assert_int_equal(t.state, HALFSTORE_PENDING);
	assert_int_equal(t.check_count, 0);
	assert_int_equal(t.next_check_ms, 20);
	assert_int_equal(t.ended_ms, -1);
	assert_null(t.discard_reason);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_due_checks(db, 20, 10, 1000, &v, &n), 0);
	assert_int_equal(n, 1);
	halfstore_txns_free(v, n);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A COMMITTING txn is discarded only after an append that wrote nothing
 * and never will (topic deleted, batch larger than segment.bytes): the
 * discard releases its sequence, and an operator's commit takes a new one,
 * after the commits sequenced meanwhile.  The old one, below them, would
 * be taken for "appended long ago" and nothing appended.  A row discarded
 * with its sequence by an older version takes a new one too. */
static void test_halfstore_operator_commit_takes_new_commit_seq(void **state)
{
	sqlite3 *db = open_db();
	int64_t id = prepare1(db, "g", 0), other = prepare1(db, "g", 0);
	int64_t old = prepare1(db, "g", 0);
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 1, NULL), 0);
	assert_int_equal(halfstore_discard(db, id, "too large", 2), 0);
	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, -1);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, other, HALFSTORE_COMMIT, 0, 3, &t), 0);
	assert_int_equal(t.commit_seq, 1);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, HALFSTORE_F_OPERATOR, 4, &t), 0);
	assert_int_equal(t.commit_seq, 2);
	halfstore_txn_clear(&t);
	exec_ok(db, "UPDATE txn_half SET state = 'DISCARDED', commit_seq = 0 WHERE txn_id = 3");
	assert_int_equal(old, 3);
	assert_int_equal(halfstore_end(db, old, HALFSTORE_COMMIT, HALFSTORE_F_OPERATOR, 5, &t), 0);
	assert_int_equal(t.commit_seq, 3);
	halfstore_txn_clear(&t);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq"), 4);
	/* resumed, such a row is PENDING without it */
	exec_ok(db, "UPDATE txn_half SET state = 'DISCARDED', commit_seq = 0, log_offset = NULL"
		    " WHERE txn_id = 3");
	assert_int_equal(halfstore_resume(db, old, 6), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, old, &t), HALFSTORE_OK);
	assert_int_equal(t.commit_seq, -1);
	halfstore_txn_clear(&t);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A commit whose append wrote nothing releases its sequence; its next
 * end(COMMIT) takes a new one then — after every commit sequenced in the
 * meantime, which a sequence taken at the failure would not be — and
 * recovery lists it after the sequenced ones of its partition.  Only a
 * COMMITTING txn can release its sequence. */
static void test_halfstore_unseq_after_failed_append(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare_n(db, "g", "orders", 0, 2, 1, 0);
	int64_t b = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t c = prepare_n(db, "g", "orders", 0, 1, 1, 0);
	int64_t other = prepare_n(db, "g", "orders", 1, 1, 1, 0);
	halfstore_txn t, *v;
	size_t n;

	(void)state;
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 1, NULL), 0); /* seq 0-1 */
	assert_int_equal(halfstore_end(db, b, HALFSTORE_COMMIT, 0, 1, NULL), 0); /* seq 2 */
	assert_int_equal(halfstore_end(db, other, HALFSTORE_COMMIT, 0, 1, NULL), 0);
	assert_int_equal(halfstore_unseq(db, a), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, a, &t), 0);
	assert_int_equal(t.commit_seq, -1);
	assert_int_equal(t.state, HALFSTORE_COMMITTING);
	assert_non_null(t.batch);
	halfstore_txn_clear(&t);
	/* the partitions' counters do not move */
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq WHERE partition = 0"), 3);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq WHERE partition = 1"), 1);
	/* recovery: the sequenced ones first, the released one last */
	assert_int_equal(halfstore_committing(db, &v, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].txn_id, b);
	assert_int_equal(v[1].txn_id, a);
	assert_int_equal(v[1].commit_seq, -1);
	assert_int_equal(v[2].txn_id, other);
	halfstore_txns_free(v, n);
	/* another commit is sequenced before the retry comes ... */
	assert_int_equal(halfstore_end(db, c, HALFSTORE_COMMIT, 0, 2, NULL), 0); /* seq 3 */
	/* ... and the retry takes the next sequence, above it */
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 3, &t), HALFSTORE_OK_ALREADY);
	assert_int_equal(t.commit_seq, 4);
	assert_int_equal(t.state, HALFSTORE_COMMITTING);
	assert_non_null(t.batch);
	halfstore_txn_clear(&t);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq WHERE partition = 0"), 6);
	/* a second retry keeps it */
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 4, &t), HALFSTORE_OK_ALREADY);
	assert_int_equal(t.commit_seq, 4);
	halfstore_txn_clear(&t);
	/* a rollback of a released commit is still the opposite decision */
	assert_int_equal(halfstore_unseq(db, a), HALFSTORE_OK);
	assert_int_equal(halfstore_end(db, a, HALFSTORE_ROLLBACK, 0, 5, NULL), HALFSTORE_E_CONFLICT);
	assert_int_equal(halfstore_mark_committed(db, b, 9), 0);
	assert_int_equal(halfstore_unseq(db, b), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_unseq(db, prepare1(db, "g", 3)), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_unseq(db, 999999), HALFSTORE_E_NOT_FOUND);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* ---- recovery, listing, housekeeping ---- */

/* Start-up after a power loss: seq_state says where SQLite's sequences
 * end and where the search of the log starts; reattach records a commit
 * found in the log for a PENDING (or DISCARDED, unsequenced) txn, once,
 * and refuses anything else without changing it. */
static void test_halfstore_reattach(void **state)
{
	sqlite3 *db = open_db();
	int64_t a, p, d, q, other, next = -5, off = -5;
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_seq_state(db, "orders", 0, &next, &off, NULL), 0);
	assert_int_equal(next, 0);
	assert_int_equal(off, -1);
	a = prepare1(db, "g", 1000);
	p = prepare1(db, "g", 1001);
	d = prepare1(db, "g", 1002);
	other = prepare_n(db, "g", "orders", 1, 1, 11, 1003);
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 1100, NULL), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_committed(db, a, 5), HALFSTORE_OK);
	assert_int_equal(halfstore_seq_state(db, "orders", 0, &next, &off, NULL), 0);
	assert_int_equal(next, 1);
	assert_int_equal(off, 5);
	/* a's row committed again would be a conflict: not PENDING */
	assert_int_equal(halfstore_reattach(db, a, "orders", 0, 1, 7, 2000), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_reattach(db, other, "orders", 0, 1, 7, 2000), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_reattach(db, 999, "orders", 0, 1, 7, 2000), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(state_of(db, other), HALFSTORE_PENDING);
	assert_int_equal(halfstore_reattach(db, p, "orders", 0, 1, 7, 2000), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, p, &t), HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTED);
	assert_int_equal(t.commit_seq, 1);
	assert_int_equal(t.log_offset, 7);
	assert_int_equal(t.ended_ms, 2000);
	assert_null(t.batch);
	halfstore_txn_clear(&t);
	/* a second start-up finds it again */
	assert_int_equal(halfstore_reattach(db, p, "orders", 0, 1, 7, 3000), HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_seq_state(db, "orders", 0, &next, &off, NULL), 0);
	assert_int_equal(off, 7);
	/* discarded by the check-back before its lost commit was found */
	assert_int_equal(halfstore_discard(db, d, "too many checks", 1500), HALFSTORE_OK);
	assert_int_equal(halfstore_reattach(db, d, "orders", 0, 2, 9, 2000), HALFSTORE_OK);
	assert_int_equal(state_of(db, d), HALFSTORE_COMMITTED);
	/* one txn per sequence (the unique index): refused, nothing changed */
	q = prepare1(db, "g", 1004);
	assert_true(halfstore_reattach(db, q, "orders", 0, 1, 8, 2000) < 0);
	assert_int_equal(state_of(db, q), HALFSTORE_PENDING);
	assert_int_equal(halfstore_reattach(db, other, "orders", 1, 0, 3, 2000), HALFSTORE_OK);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_committing_in_seq_order(void **state)
{
	sqlite3 *db = open_db();
	int64_t ids[6];
	halfstore_txn *v;
	size_t n;

	(void)state;
	for (int i = 0; i < 6; i++)
		ids[i] = prepare_n(db, "g", i % 2 ? "b-topic" : "a-topic", i % 3 == 0 ? 1 : 0, 1, 1, i);
	for (int i = 5; i >= 0; i--)
		assert_int_equal(halfstore_end(db, ids[i], HALFSTORE_COMMIT, 0, 10, NULL), 0);
	assert_int_equal(halfstore_mark_committed(db, ids[2], 0), 0);
	assert_int_equal(halfstore_committing(db, &v, &n), 0);
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(v[i].state, HALFSTORE_COMMITTING);
		assert_non_null(v[i].batch);
		if (i > 0) {
			int c = strcmp(v[i - 1].topic, v[i].topic);

			assert_true(c < 0 || (c == 0 && (v[i - 1].partition < v[i].partition ||
						(v[i - 1].partition == v[i].partition &&
						 v[i - 1].commit_seq < v[i].commit_seq))));
		}
	}
	halfstore_txns_free(v, n);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_list_pages_by_group_and_state(void **state)
{
	sqlite3 *db = open_db();
	halfstore_txn *v;
	size_t n, total = 0;
	int64_t after = 0, ids[25];

	(void)state;
	for (int i = 0; i < 25; i++)
		ids[i] = prepare1(db, i % 2 ? "b" : "a", i);
	assert_int_equal(halfstore_end(db, ids[0], HALFSTORE_ROLLBACK, 0, 30, NULL), 0);
	assert_int_equal(halfstore_end(db, ids[2], HALFSTORE_COMMIT, 0, 30, NULL), 0);
	/* group a, every state, pages of 5 */
	do {
		assert_int_equal(halfstore_list(db, "a", HALFSTORE_MASK_ALL, 5, after, &v, &n), 0);
		for (size_t i = 0; i < n; i++) {
			assert_string_equal(v[i].producer_group, "a");
			assert_true(v[i].txn_id > after);
			assert_null(v[i].batch);
			after = v[i].txn_id;
		}
		total += n;
		halfstore_txns_free(v, n);
	} while (n == 5);
	assert_int_equal(total, 13);
	/* state filter */
	assert_int_equal(halfstore_list(db, "a", HALFSTORE_MASK(HALFSTORE_PENDING), 100, 0, &v, &n), 0);
	assert_int_equal(n, 11);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_list(db, NULL,
					HALFSTORE_MASK(HALFSTORE_COMMITTING) |
						HALFSTORE_MASK(HALFSTORE_ROLLED_BACK),
					100, 0, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].txn_id, ids[0]);
	assert_int_equal(v[1].txn_id, ids[2]);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_list(db, NULL, HALFSTORE_MASK_ALL, 100, 0, &v, &n), 0);
	assert_int_equal(n, 25);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_list(db, "nobody", HALFSTORE_MASK_ALL, 100, 0, &v, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(halfstore_list(db, NULL, 0, 100, 0, &v, &n), HALFSTORE_E_INVALID);
	assert_int_equal(halfstore_count(db, "b", HALFSTORE_PENDING), 12);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_purge_ended_after_retention(void **state)
{
	sqlite3 *db = open_db();
	int64_t c = prepare1(db, "g", 0), r = prepare1(db, "g", 0), p = prepare1(db, "g", 0);
	int64_t ci = prepare1(db, "g", 0), d = prepare1(db, "g", 0), late = prepare1(db, "g", 0);

	(void)state;
	assert_int_equal(halfstore_end(db, c, HALFSTORE_COMMIT, 0, 100, NULL), 0);
	assert_int_equal(halfstore_mark_committed(db, c, 0), 0);
	assert_int_equal(halfstore_end(db, r, HALFSTORE_ROLLBACK, 0, 100, NULL), 0);
	assert_int_equal(halfstore_end(db, ci, HALFSTORE_COMMIT, 0, 100, NULL), 0); /* in flight */
	assert_int_equal(halfstore_discard(db, d, "x", 100), 0);
	assert_int_equal(halfstore_end(db, late, HALFSTORE_ROLLBACK, 0, 5000, NULL), 0);
	assert_int_equal(halfstore_purge(db, 1000, false, 100), 2);
	assert_int_equal(halfstore_get(db, c, &(halfstore_txn){ 0 }), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(halfstore_get(db, r, &(halfstore_txn){ 0 }), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(state_of(db, p), HALFSTORE_PENDING);
	assert_int_equal(state_of(db, ci), HALFSTORE_COMMITTING);
	assert_int_equal(state_of(db, d), HALFSTORE_DISCARDED);
	assert_int_equal(state_of(db, late), HALFSTORE_ROLLED_BACK);
	assert_int_equal(halfstore_purge(db, 1000, true, 100), 1);
	assert_int_equal(halfstore_count(db, NULL, HALFSTORE_DISCARDED), 0);
	/* ids are never reused: a late end for a purged txn is NOT_FOUND */
	assert_true(prepare1(db, "g", 0) > late);
	assert_int_equal(halfstore_end(db, r, HALFSTORE_ROLLBACK, 0, 1, NULL), HALFSTORE_E_NOT_FOUND);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_drop_topic_discards_pending(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare_n(db, "g", "gone", 0, 1, 1, 0);
	int64_t b = prepare_n(db, "g", "gone", 0, 1, 1, 0);
	int64_t k = prepare_n(db, "g", "kept", 0, 1, 1, 0);
	int64_t u = prepare_n(db, "g", "gone", 0, 1, 1, 0), v = prepare_n(db, "g", "kept", 0, 1, 1, 0);
	int64_t left = -1;
	halfstore_txn t;

	(void)state;
	assert_int_equal(halfstore_end(db, a, HALFSTORE_COMMIT, 0, 1, NULL), 0);
	assert_int_equal(halfstore_mark_committed(db, a, 0), 0);
	/* unsynced commits: the deleted topic's drops its batch, not the other */
	assert_int_equal(halfstore_end(db, u, HALFSTORE_COMMIT, 0, 1, NULL), 0);
	assert_int_equal(halfstore_mark_committed_unsynced(db, u, 1), 0);
	assert_int_equal(halfstore_end(db, v, HALFSTORE_COMMIT, 0, 1, NULL), 0);
	assert_int_equal(halfstore_mark_committed_unsynced(db, v, 0), 0);
	assert_int_equal(halfstore_drop_topic(db, "gone", 2), 1);
	assert_int_equal(halfstore_unsynced_count(db, &left), 0);
	assert_int_equal(left, 1);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM txn_half WHERE batch IS NOT NULL"
				       " AND txn_id = "
				       "(SELECT max(txn_id) FROM txn_half WHERE topic = 'kept')"), 1);
	assert_int_equal(halfstore_get(db, b, &t), 0);
	assert_int_equal(t.state, HALFSTORE_DISCARDED);
	assert_string_equal(t.discard_reason, "topic deleted");
	halfstore_txn_clear(&t);
	assert_int_equal(state_of(db, k), HALFSTORE_PENDING);
	/* kept: a re-created topic continues them */
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_seq WHERE topic = 'gone'"), 2);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* ---- query plans ---- */

typedef struct plan_probe {
	char sql[8][1200];
	int n;
	int64_t vm_steps, fullscan_steps; /* of the last profiled SELECT */
} plan_probe;

static int trace_cb(unsigned type, void *ctx, void *p, void *x)
{
	plan_probe *pp = ctx;
	sqlite3_stmt *st = p;
	const char *sql = sqlite3_sql(st);

	if (!sql || (strncmp(sql, "SELECT", 6) != 0 && strncmp(sql, "DELETE", 6) != 0))
		return 0;
	if (type == SQLITE_TRACE_STMT && pp->n < 8)
		snprintf(pp->sql[pp->n++], sizeof(pp->sql[0]), "%s", sql);
	if (type == SQLITE_TRACE_PROFILE) {
		pp->vm_steps = sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 0);
		pp->fullscan_steps = sqlite3_stmt_status(st, SQLITE_STMTSTATUS_FULLSCAN_STEP, 0);
	}
	(void)x;
	return 0;
}

/* The plan of sql (as halfstore ran it, parameters unbound) uses index
 * and does not scan the table, nor sort unless may_sort. */
static void assert_plan_sorts(sqlite3 *db, const char *sql, const char *index, bool may_sort)
{
	char q[1400], plan[2000] = "";
	sqlite3_stmt *st;

	snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		size_t l = strlen(plan);

		snprintf(plan + l, sizeof(plan) - l, "%s; ", sqlite3_column_text(st, 3));
	}
	sqlite3_finalize(st);
	if (!strstr(plan, index) || (!may_sort && strstr(plan, "TEMP B-TREE")) ||
	    (strstr(plan, "SCAN txn_half") && !strstr(plan, "USING")))
		fail_msg("plan of [%s] does not use %s: %s", sql, index, plan);
}

static void assert_plan_uses(sqlite3 *db, const char *sql, const char *index)
{
	assert_plan_sorts(db, sql, index, false);
}

/* How many times opcode appears in the program of sql (EXPLAIN). */
static int count_opcode(sqlite3 *db, const char *sql, const char *opcode)
{
	char *explain = sqlite3_mprintf("EXPLAIN %s", sql);
	sqlite3_stmt *st;
	int n = 0;

	assert_int_equal(sqlite3_prepare_v2(db, explain, -1, &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW)
		n += strcmp((const char *)sqlite3_column_text(st, 1), opcode) == 0;
	sqlite3_finalize(st);
	sqlite3_free(explain);
	return n;
}

/* The states' CHECK is enforced, without a temporary b-tree per row
 * written (SQLite runs `state IN (...)` that way). */
static void assert_state_check_cheap_and_enforced(sqlite3 *db)
{
	char *msg = NULL;

	assert_int_equal(count_opcode(db, "UPDATE txn_half SET state = 'COMMITTED' WHERE txn_id = 1",
				      "OpenEphemeral"), 0);
	assert_int_equal(count_opcode(db, "INSERT INTO txn_half(producer_group, topic, partition,"
					  " batch_len, record_count, state, created_ms, next_check_ms,"
					  " origin) VALUES('g', 't', 0, 1, 1, 'PENDING', 0, 0, 0)",
				      "OpenEphemeral"), 0);
	assert_int_equal(sqlite3_exec(db, "UPDATE txn_half SET state = 'BOGUS'", NULL, NULL, &msg),
			 SQLITE_CONSTRAINT);
	sqlite3_free(msg);
}

static void test_halfstore_state_check_is_cheap(void **state)
{
	sqlite3 *db = open_db();

	(void)state;
	prepare1(db, "g", 0);
	assert_state_check_cheap_and_enforced(db);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A database made by halfstore schema version 1 (CHECK(state IN ...)):
 * halfstore_schema_v2 rewrites the constraint, keeps the rows, and does
 * nothing the second time. */
static void test_halfstore_schema_v2_migrates_v1(void **state)
{
	static const char v1_check[] =
		"CHECK(state IN    ('PENDING','COMMITTING','COMMITTED','ROLLED_BACK','DISCARDED'))";
	static const char v2_check[] =
		"CHECK(state = 'PENDING' OR state = 'COMMITTING' OR state = 'COMMITTED' OR"
		" state = 'ROLLED_BACK' OR state = 'DISCARDED')";
	char *v1 = malloc(strlen(halfstore_schema_sql) + sizeof(v1_check));
	const char *at = strstr(halfstore_schema_sql, v2_check);
	sqlite3 *db = NULL;
	int64_t id;

	(void)state;
	/* version 1's text: the same schema with the old CHECK */
	assert_non_null(v1);
	assert_non_null(at);
	sprintf(v1, "%.*s%s%s", (int)(at - halfstore_schema_sql), halfstore_schema_sql, v1_check,
		at + strlen(v2_check));
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	exec_ok(db, v1);
	free(v1);
	checksched_policy_default(&policy);
	id = prepare1(db, "g", 0);
	assert_int_equal(count_opcode(db, "UPDATE txn_half SET state = 'COMMITTED' WHERE txn_id = 1",
				      "OpenEphemeral"), 1);
	for (int pass = 0; pass < 2; pass++) {
		exec_ok(db, "BEGIN");
		assert_int_equal(halfstore_schema_v2(db), 0);
		exec_ok(db, "COMMIT");
		assert_int_equal(query_i64(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'txn_half'"
					       " AND instr(sql, 'state = ''DISCARDED''') > 0"), 1);
	}
	assert_state_check_cheap_and_enforced(db);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_integrity_check WHERE"
				       " integrity_check = 'ok'"), 1);
	/* the rows and the statements prepared before still work */
	assert_int_equal(state_of(db, id), HALFSTORE_PENDING);
	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, 5, NULL), HALFSTORE_OK);
	assert_int_equal(state_of(db, prepare1(db, "g", 1)), HALFSTORE_PENDING);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* Removes every occurrence of text from s (in place). */
static void cut_text(char *s, const char *text)
{
	size_t len = strlen(text);
	char *at;

	while ((at = strstr(s, text)))
		memmove(at, at + len, strlen(at + len) + 1);
}

/* Removes the statement of s that starts with start, up to its ';'. */
static void cut_stmt(char *s, const char *start)
{
	char *at = strstr(s, start), *end = at ? strchr(at, ';') : NULL;
	size_t rest;

	if (!at || !end)
		fail_msg("no statement \"%s\" in the schema", start);
	rest = strlen(end) - 1;
	memmove(at, end + 1, rest + 1);
}

/* halfstore_schema_sql as an older version made it (malloc()ed): version
 * 5 without txn_dead_topic; version 4 without the numbered dead-letter
 * copies either; version 2 without the dead-letter copies at all, nor the
 * unsynced commits' index. */
static char *old_schema(int version)
{
	char *s = strdup(halfstore_schema_sql);

	assert_non_null(s);
	cut_stmt(s, "CREATE TABLE IF NOT EXISTS txn_dead_topic(");
	if (version == 5)
		return s;
	assert_non_null(strstr(s, ",  dead_letter_seq INTEGER,  dead_letter_partition INTEGER"));
	cut_text(s, ",  dead_letter_seq INTEGER,  dead_letter_partition INTEGER");
	cut_stmt(s, "CREATE TABLE IF NOT EXISTS txn_dead_seq(");
	cut_stmt(s, "CREATE INDEX IF NOT EXISTS txn_half_dead_out");
	if (version <= 2) {
		assert_non_null(strstr(s, ",  dead_letter_offset INTEGER"));
		cut_text(s, ",  dead_letter_offset INTEGER");
		cut_stmt(s, "CREATE INDEX IF NOT EXISTS txn_half_dead ON");
		cut_stmt(s, "CREATE INDEX IF NOT EXISTS txn_half_unsynced");
	}
	return s;
}

/* Discarded txns wait for their dead-letter copy until it is recorded;
 * a resume forgets the copy, so a second discard is copied again. */
static void test_halfstore_dead_letters(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = prepare1(db, "g", 0), b = prepare1(db, "g", 1), c = prepare1(db, "g", 2);
	plan_probe pp = { .n = 0 };
	halfstore_txn *v, t;
	bool numbered = true;
	size_t n;

	(void)state;
	assert_int_equal(halfstore_dead_letters(db, 10, 0, &v, &n, &numbered), 0);
	assert_false(numbered); /* nparts 0: no topic, nothing numbered */
	assert_int_equal(n, 0);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_discard(db, c, "max checks", 10), HALFSTORE_OK);
	assert_int_equal(halfstore_discard(db, a, "operator", 11), HALFSTORE_OK);
	sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_cb, &pp);
	assert_int_equal(halfstore_dead_letters(db, 10, 0, &v, &n, &numbered), 0);
	sqlite3_trace_v2(db, 0, NULL, NULL);
	assert_int_equal(pp.n, 2);
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_dead_out");
	assert_plan_uses(db, pp.sql[1], "USING INDEX txn_half_dead");
	/* in txn_id order, with their batches and reasons */
	assert_int_equal(n, 2);
	assert_int_equal(v[0].txn_id, a);
	assert_int_equal(v[1].txn_id, c);
	assert_non_null(v[0].batch);
	assert_int_equal(v[0].batch_len, BATCH_LEN);
	assert_string_equal(v[1].discard_reason, "max checks");
	assert_int_equal(v[0].dead_letter_offset, -1);
	assert_int_equal(v[0].dead_letter_seq, -1);
	assert_int_equal(v[0].dead_letter_partition, -1);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_dead_letters(db, 1, 0, &v, &n, &numbered), 0);
	assert_int_equal(n, 1);
	halfstore_txns_free(v, n);

	assert_int_equal(halfstore_mark_dead_lettered(db, a, 7), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_dead_lettered(db, a, 8), HALFSTORE_E_STATE);
	assert_int_equal(halfstore_mark_dead_lettered(db, b, 9), HALFSTORE_E_STATE); /* PENDING */
	assert_int_equal(halfstore_mark_dead_lettered(db, 99, 9), HALFSTORE_E_NOT_FOUND);
	assert_int_equal(halfstore_mark_dead_lettered(db, c, -1), HALFSTORE_E_INVALID);
	assert_int_equal(halfstore_mark_dead_lettered(db, c, -4), HALFSTORE_E_INVALID);
	assert_int_equal(halfstore_get(db, a, &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, 7);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_dead_letters(db, 10, 0, &v, &n, &numbered), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].txn_id, c);
	halfstore_txns_free(v, n);

	/* given up: out of the list too, and said so */
	assert_int_equal(halfstore_mark_dead_lettered(db, c, HALFSTORE_DEAD_GIVEN_UP), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, c, &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, HALFSTORE_DEAD_GIVEN_UP);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_dead_letters(db, 10, 0, &v, &n, &numbered), 0);
	assert_int_equal(n, 0);
	halfstore_txns_free(v, n);

	/* resumed: the copy is forgotten; discarded again: copied again */
	assert_int_equal(halfstore_resume(db, a, 20), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, a, &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, -1);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_discard(db, a, "again", 21), HALFSTORE_OK);
	assert_int_equal(halfstore_dead_letters(db, 10, 0, &v, &n, &numbered), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].txn_id, a);
	halfstore_txns_free(v, n);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* Dead-letter copies are numbered before they are appended: partition
 * txn_id % nparts, sequences growing per partition by the record count,
 * kept until recorded (read first, in partition and sequence order),
 * forgotten by a resume; txn_dead_seq is never reset; dead_lost clears
 * only the records a power loss made untrue. */
static void test_halfstore_dead_letter_numbers(void **state)
{
	sqlite3 *db = open_db();
	int64_t id[5];
	halfstore_txn *v, t;
	bool numbered = false;
	plan_probe pp = { .n = 0 };
	size_t n;

	(void)state;
	for (int i = 0; i < 5; i++)
		id[i] = prepare_n(db, "g", "orders", 0, i == 2 ? 3 : 1, 11, i);
	for (int i = 0; i < 4; i++)
		assert_int_equal(halfstore_discard(db, id[i], "max checks", 10), HALFSTORE_OK);
	/* ids 1..4 on 2 partitions: 1 and 3 go to 1, 2 and 4 to 0 */
	assert_int_equal(halfstore_dead_letters(db, 10, 2, &v, &n, &numbered), 0);
	assert_true(numbered);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(v[i].txn_id, id[i]);
		assert_int_equal(v[i].dead_letter_partition, id[i] % 2);
	}
	assert_int_equal(v[1].dead_letter_seq, 0); /* partition 0: 1 record */
	assert_int_equal(v[3].dead_letter_seq, 1);
	assert_int_equal(v[0].dead_letter_seq, 0); /* partition 1: 3 records at id[2] */
	assert_int_equal(v[2].dead_letter_seq, 1);
	halfstore_txns_free(v, n);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_dead_seq WHERE partition = 1"), 4);
	/* read again unrecorded: the same numbers, nothing new numbered, in
	 * partition then sequence order, the new query on its index */
	sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_cb, &pp);
	assert_int_equal(halfstore_dead_letters(db, 10, 2, &v, &n, &numbered), 0);
	sqlite3_trace_v2(db, 0, NULL, NULL);
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_dead_out");
	assert_false(numbered);
	assert_int_equal(n, 4);
	assert_int_equal(v[0].txn_id, id[1]);
	assert_int_equal(v[1].txn_id, id[3]);
	assert_int_equal(v[2].txn_id, id[0]);
	assert_int_equal(v[3].txn_id, id[2]);
	assert_int_equal(v[3].dead_letter_seq, 1);
	halfstore_txns_free(v, n);
	/* limit: the numbered ones come first, the new one waits */
	assert_int_equal(halfstore_discard(db, id[4], "max checks", 11), HALFSTORE_OK);
	assert_int_equal(halfstore_dead_letters(db, 4, 2, &v, &n, &numbered), 0);
	assert_false(numbered);
	assert_int_equal(n, 4);
	halfstore_txns_free(v, n);
	/* recorded ones drop out; the new one is numbered after the others */
	assert_int_equal(halfstore_mark_dead_lettered(db, id[0], 100), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_dead_lettered(db, id[1], 50), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_dead_lettered(db, id[2], 101), HALFSTORE_OK);
	assert_int_equal(halfstore_dead_letters(db, 10, 2, &v, &n, &numbered), 0);
	assert_true(numbered);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].txn_id, id[3]);
	assert_int_equal(v[1].txn_id, id[4]);
	assert_int_equal(v[1].dead_letter_partition, 1);
	assert_int_equal(v[1].dead_letter_seq, 4);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_mark_dead_lettered(db, id[4], 102), HALFSTORE_OK);
	/* a deleted topic does not reset the numbers */
	assert_true(halfstore_drop_topic(db, "orders", 12) >= 0);
	assert_int_equal(query_i64(db, "SELECT next_seq FROM txn_dead_seq WHERE partition = 1"), 5);

	/* power loss: partition 1's log ends at 101 and holds sequences up to
	 * 0: id[2] (101, seq 1) and id[4] (102, seq 4) were lost, id[0] (100,
	 * seq 0) is there */
	assert_int_equal(halfstore_dead_lost(db, 1, 101, 0), 2);
	assert_int_equal(halfstore_get(db, id[2], &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, -1);
	assert_int_equal(t.dead_letter_seq, 1); /* appended again with it */
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_get(db, id[0], &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, 100);
	halfstore_txn_clear(&t);
	/* beyond the end but not after the last sequence (a re-created
	 * topic): left; before the end: left */
	assert_int_equal(halfstore_mark_dead_lettered(db, id[2], 101), HALFSTORE_OK);
	assert_int_equal(halfstore_dead_lost(db, 1, 90, 1), 0);
	assert_int_equal(halfstore_dead_lost(db, 1, 102, 0), 0);
	/* partition 0: id[1] at 50 with sequence 0, id[3] unrecorded */
	assert_int_equal(halfstore_dead_lost(db, 0, 51, -1), 0);
	assert_int_equal(halfstore_dead_lost(db, 0, 50, 0), 0);
	assert_int_equal(halfstore_dead_lost(db, 0, 50, -1), 1);

	/* a resume forgets the number; a new discard takes a new one */
	assert_int_equal(halfstore_resume(db, id[0], 20), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, id[0], &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_seq, -1);
	assert_int_equal(t.dead_letter_partition, -1);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_discard(db, id[0], "again", 21), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_dead_lettered(db, id[1], 50), HALFSTORE_OK);
	assert_int_equal(halfstore_dead_letters(db, 10, 2, &v, &n, &numbered), 0);
	assert_int_equal(n, 3); /* id[4]: lost above, waits with its number */
	assert_int_equal(v[0].txn_id, id[3]);
	assert_int_equal(v[1].txn_id, id[4]);
	assert_int_equal(v[1].dead_letter_seq, 4);
	assert_int_equal(v[2].txn_id, id[0]);
	assert_int_equal(v[2].dead_letter_seq, 5);
	halfstore_txns_free(v, n);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A database of halfstore schema version 4: halfstore_schema_v5 adds the
 * numbering, keeps the rows and their recorded copies, and does nothing
 * the second time. */
static void test_halfstore_schema_v5_migrates_v4(void **state)
{
	char *v4 = old_schema(4);
	sqlite3 *db = NULL;
	halfstore_txn *v;
	bool numbered;
	size_t n;

	(void)state;
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	exec_ok(db, v4);
	free(v4);
	checksched_policy_default(&policy);
	exec_ok(db, "INSERT INTO txn_half(producer_group, topic, partition, batch, batch_len,"
		    " record_count, state, created_ms, next_check_ms, origin, discard_reason,"
		    " dead_letter_offset) VALUES"
		    " ('g', 'orders', 0, x'00', 1, 1, 'DISCARDED', 0, 0, 1, 'old', 7),"
		    " ('g', 'orders', 0, x'00', 1, 1, 'DISCARDED', 0, 0, 1, 'old', NULL)");
	for (int pass = 0; pass < 2; pass++) {
		exec_ok(db, "BEGIN");
		assert_int_equal(halfstore_schema_v5(db), 0);
		exec_ok(db, "COMMIT");
	}
	assert_int_equal(halfstore_dead_letters(db, 10, 1, &v, &n, &numbered), 0);
	assert_true(numbered);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].txn_id, 2);
	assert_int_equal(v[0].dead_letter_seq, 0);
	halfstore_txns_free(v, n);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_integrity_check WHERE"
				       " integrity_check = 'ok'"), 1);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A database of halfstore schema version 5 with a copy numbered and not
 * recorded: halfstore_schema_v6 adds txn_dead_topic (twice: nothing the
 * second time); the first topic seen adopts the numbers made before. */
static void test_halfstore_schema_v6_migrates_v5(void **state)
{
	static const uint8_t id[16] = { 1 };
	char *v5 = old_schema(5);
	sqlite3 *db = NULL;
	halfstore_txn t;

	(void)state;
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	exec_ok(db, v5);
	free(v5);
	checksched_policy_default(&policy);
	exec_ok(db, "INSERT INTO txn_half(producer_group, topic, partition, batch, batch_len,"
		    " record_count, state, created_ms, next_check_ms, origin, discard_reason,"
		    " dead_letter_seq, dead_letter_partition) VALUES"
		    " ('g', 'orders', 0, x'00', 1, 1, 'DISCARDED', 0, 0, 1, 'old', 3, 0)");
	for (int pass = 0; pass < 2; pass++) {
		exec_ok(db, "BEGIN");
		assert_int_equal(halfstore_schema_v6(db), 0);
		exec_ok(db, "COMMIT");
	}
	assert_int_equal(halfstore_dead_topic(db, id), 0);
	assert_int_equal(halfstore_get(db, 1, &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_seq, 3);
	halfstore_txn_clear(&t);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_integrity_check WHERE"
				       " integrity_check = 'ok'"), 1);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* The copies' numbers belong to one dead-letter topic: another topic
 * takes the numbers of the copies not yet recorded (numbered again, for
 * its partitions, continuing the sequences), not the recorded ones. */
static void test_halfstore_dead_topic(void **state)
{
	static const uint8_t a[16] = { 0xa }, b[16] = { 0xb };
	sqlite3 *db = open_db();
	halfstore_txn *v, t;
	bool numbered;
	int64_t id[3];
	size_t n;

	(void)state;
	assert_int_equal(halfstore_dead_topic(db, a), 0); /* the first */
	assert_int_equal(halfstore_dead_topic(db, a), 0);
	for (int i = 0; i < 3; i++) {
		id[i] = prepare1(db, "g", i);
		assert_int_equal(halfstore_discard(db, id[i], "max checks", 10), HALFSTORE_OK);
	}
	assert_int_equal(halfstore_dead_letters(db, 10, 2, &v, &n, &numbered), 0);
	assert_int_equal(n, 3);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_mark_dead_lettered(db, id[0], 40), HALFSTORE_OK);
	/* id[1] and id[2] numbered, not recorded; topic b has 1 partition */
	assert_int_equal(halfstore_dead_topic(db, b), 1 + 2);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM txn_half"
				       " WHERE dead_letter_seq IS NOT NULL"), 1);
	assert_int_equal(halfstore_dead_topic(db, b), 0);
	assert_int_equal(halfstore_dead_letters(db, 10, 1, &v, &n, &numbered), 0);
	assert_true(numbered);
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(v[i].dead_letter_partition, 0);
	/* partition 0 gave sequence 0 (to id[1]) under a: never reset */
	assert_int_equal(v[0].dead_letter_seq, 1);
	assert_int_equal(v[1].dead_letter_seq, v[0].dead_letter_seq + 1);
	halfstore_txns_free(v, n);
	assert_int_equal(halfstore_get(db, id[0], &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, 40); /* recorded: kept */
	halfstore_txn_clear(&t);
	/* back to a: only the copies not recorded change again */
	assert_int_equal(halfstore_dead_topic(db, a), 1 + 2);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static int64_t committing(sqlite3 *db, int64_t now)
{
	int64_t id = prepare1(db, "g", now);

	assert_int_equal(halfstore_end(db, id, HALFSTORE_COMMIT, 0, now, NULL), HALFSTORE_OK);
	return id;
}

/* A page-cache commit recorded before its log copy is synced keeps its
 * batch: start-up recovery lists it with the COMMITTING rows, and
 * drop_synced drops the batch once the log is synced past it. */
static void test_halfstore_unsynced_commits(void **state)
{
	sqlite3 *db = open_db();
	int64_t a = committing(db, 1), b = committing(db, 2), c = committing(db, 3), n = -1;
	plan_probe pp = { .n = 0 };
	halfstore_txn *v, t;
	size_t nv;

	(void)state;
	assert_int_equal(halfstore_mark_committed_unsynced(db, a, 10), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_committed_unsynced(db, a, 10), HALFSTORE_OK_ALREADY);
	assert_int_equal(halfstore_mark_committed_unsynced(db, a, 11), HALFSTORE_E_CONFLICT);
	assert_int_equal(halfstore_get(db, a, &t), HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTED);
	assert_int_equal(t.log_offset, 10);
	assert_non_null(t.batch); /* kept until the log is synced */
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_mark_committed_unsynced(db, c, 30), HALFSTORE_OK);
	assert_int_equal(halfstore_unsynced_count(db, &n), 0);
	assert_int_equal(n, 2);

	/* recovery: the unsynced COMMITTED rows with the COMMITTING one, in
	 * commit_seq order, batches included; the index does the finding */
	sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_cb, &pp);
	assert_int_equal(halfstore_committing(db, &v, &nv), 0);
	sqlite3_trace_v2(db, 0, NULL, NULL);
	/* start-up only, a few rows: sorting the union is fine (with the
	 * probe's SQL cut at 600 bytes before, its ORDER BY went unchecked) */
	assert_plan_sorts(db, pp.sql[0], "USING INDEX txn_half_unsynced", true);
	assert_int_equal(nv, 3);
	assert_int_equal(v[0].txn_id, a);
	assert_int_equal(v[0].state, HALFSTORE_COMMITTED);
	assert_int_equal(v[1].txn_id, b);
	assert_int_equal(v[1].state, HALFSTORE_COMMITTING);
	assert_int_equal(v[2].txn_id, c);
	assert_true(v[0].commit_seq < v[1].commit_seq && v[1].commit_seq < v[2].commit_seq);
	assert_non_null(v[0].batch);
	halfstore_txns_free(v, nv);

	/* synced up to offset 10 (exclusive): nothing yet; past it: a only */
	assert_int_equal(halfstore_drop_synced(db, "orders", 0, 10, 100), 0);
	assert_int_equal(halfstore_drop_synced(db, "orders", 1, 100, 100), 0);
	assert_int_equal(halfstore_drop_synced(db, "orders", 0, 11, 100), 1);
	assert_int_equal(halfstore_get(db, a, &t), HALFSTORE_OK);
	assert_int_equal(t.state, HALFSTORE_COMMITTED);
	assert_int_equal(t.log_offset, 10);
	assert_null(t.batch);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_unsynced_count(db, &n), 0);
	assert_int_equal(n, 1);

	/* recovery finishes c: appended again at 31 (its copy was lost) */
	assert_int_equal(halfstore_mark_committed(db, c, 31), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, c, &t), HALFSTORE_OK);
	assert_int_equal(t.log_offset, 31);
	assert_null(t.batch);
	halfstore_txn_clear(&t);
	/* or found in the log, offset unknown: it keeps the one it had */
	assert_int_equal(halfstore_mark_committed_unsynced(db, b, 20), HALFSTORE_OK);
	assert_int_equal(halfstore_mark_committed(db, b, -1), HALFSTORE_OK);
	assert_int_equal(halfstore_get(db, b, &t), HALFSTORE_OK);
	assert_int_equal(t.log_offset, 20);
	assert_null(t.batch);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_unsynced_count(db, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(halfstore_committing(db, &v, &nv), 0);
	assert_int_equal(nv, 0);
	halfstore_txns_free(v, nv);

	/* schema step 4 makes the index on a database without it */
	assert_int_equal(sqlite3_exec(db, "DROP INDEX txn_half_unsynced", NULL, NULL, NULL), SQLITE_OK);
	stmtcache_forget(db);
	assert_int_equal(halfstore_schema_v4(db), 0);
	assert_int_equal(halfstore_schema_v4(db), 0); /* idempotent */
	assert_int_equal(halfstore_unsynced_count(db, &n), 0);
	stmtcache_forget(db);
	sqlite3_close(db);
}

/* A database made by halfstore schema version 2 (no dead_letter_offset):
 * halfstore_schema_v3 adds the column and its index, keeps the rows, and
 * does nothing the second time. */
static void test_halfstore_schema_v3_migrates_v2(void **state)
{
	char *v2 = old_schema(2);
	sqlite3 *db = NULL;
	halfstore_txn t;
	int64_t id;

	(void)state;
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	exec_ok(db, v2);
	free(v2);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_table_info('txn_half')"
				       " WHERE name = 'dead_letter_offset'"), 0);
	checksched_policy_default(&policy);
	/* a row written before the migration, through raw SQL: halfstore's
	 * statements read the new column */
	exec_ok(db, "INSERT INTO txn_half(producer_group, topic, partition, batch, batch_len,"
		    " record_count, state, created_ms, next_check_ms, origin, discard_reason)"
		    " VALUES('g', 'orders', 0, x'00', 1, 1, 'DISCARDED', 0, 0, 1, 'old')");
	id = sqlite3_last_insert_rowid(db);
	for (int pass = 0; pass < 2; pass++) {
		exec_ok(db, "BEGIN");
		assert_int_equal(halfstore_schema_v3(db), 0);
		assert_int_equal(halfstore_schema_v4(db), 0);
		assert_int_equal(halfstore_schema_v5(db), 0);
		assert_int_equal(halfstore_schema_v6(db), 0);
		exec_ok(db, "COMMIT");
	}
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_table_info('txn_half')"
				       " WHERE name = 'dead_letter_offset'"), 1);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index'"
				       " AND name = 'txn_half_dead'"), 1);
	assert_int_equal(halfstore_get(db, id, &t), HALFSTORE_OK);
	assert_int_equal(t.dead_letter_offset, -1);
	assert_int_equal(t.state, HALFSTORE_DISCARDED);
	halfstore_txn_clear(&t);
	assert_int_equal(halfstore_mark_dead_lettered(db, id, 3), HALFSTORE_OK);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM pragma_integrity_check WHERE"
				       " integrity_check = 'ok'"), 1);
	/* and a new database has both from halfstore_schema_sql alone */
	stmtcache_forget(db);
	sqlite3_close(db);
	db = open_db();
	exec_ok(db, "BEGIN");
	assert_int_equal(halfstore_schema_v3(db), 0);
	exec_ok(db, "COMMIT");
	stmtcache_forget(db);
	sqlite3_close(db);
}

static void test_halfstore_queries_use_indexes(void **state)
{
	sqlite3 *db = open_db();
	plan_probe pp = { .n = 0 };
	halfstore_txn *v;
	size_t n;

	(void)state;
	for (int i = 0; i < 50; i++)
		prepare1(db, i % 2 ? "a" : "b", i);
	sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_cb, &pp);
	assert_int_equal(halfstore_due_checks(db, 10000, 10, 1000, &v, &n), 0);
	halfstore_txns_free(v, n);
	assert_int_equal(pp.n, 1);
	assert_non_null(strstr(pp.sql[0], "next_check_ms"));
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_due");
	pp.n = 0;
	assert_int_equal(halfstore_list(db, "a", HALFSTORE_MASK(HALFSTORE_PENDING), 10, 0, &v, &n), 0);
	halfstore_txns_free(v, n);
	assert_int_equal(pp.n, 1);
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_group");
	pp.n = 0;
	assert_int_equal(halfstore_list(db, NULL, HALFSTORE_MASK(HALFSTORE_DISCARDED), 10, 0, &v, &n), 0);
	halfstore_txns_free(v, n);
	assert_int_equal(pp.n, 1);
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_state");
	pp.n = 0;
	assert_int_equal(halfstore_purge(db, 1000, true, 100), 0);
	assert_int_equal(pp.n, 1);
	assert_plan_uses(db, pp.sql[0], "USING INDEX txn_half_ended");
	pp.n = 0;
	{
		int64_t next, off;

		assert_int_equal(halfstore_seq_state(db, "orders", 0, &next, &off, NULL), 0);
	}
	assert_int_equal(pp.n, 2);
	assert_plan_uses(db, pp.sql[0], "USING PRIMARY KEY");
	assert_plan_uses(db, pp.sql[1], "USING INDEX txn_half_commit");
	sqlite3_trace_v2(db, 0, NULL, NULL);
	stmtcache_forget(db);
	sqlite3_close(db);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100,000 pending txns (the backlog after an outage): a due batch of 100
 * visits about 100 index entries, not the table, and returns the oldest;
 * the next batch skips the leased ones without scanning them. */
static void test_halfstore_due_checks_100k_is_index_fast(void **state)
{
	enum { N = 100000 };
	sqlite3 *db = open_db();
	plan_probe pp = { .n = 0 };
	halfstore_txn *v;
	size_t n;
	double t0, dt;

	(void)state;
	exec_ok(db, "BEGIN");
	for (int i = 0; i < N; i++)
		prepare_n(db, i % 7 ? "busy" : "quiet", "orders", i % 16, 1, (uint64_t)i, i);
	exec_ok(db, "COMMIT");
	sqlite3_trace_v2(db, SQLITE_TRACE_PROFILE, trace_cb, &pp);
	for (int round = 0; round < 2; round++) {
		t0 = now_s();
		assert_int_equal(halfstore_due_checks(db, N + 6000, 100, 30000, &v, &n), 0);
		dt = now_s() - t0;
		assert_int_equal(n, 100);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(v[i].txn_id, round * 100 + (int64_t)i + 1); /* oldest first */
		halfstore_txns_free(v, n);
		/* a full scan would step ~N times */
		assert_int_equal(pp.fullscan_steps, 0);
		if (pp.vm_steps > 100 * 60)
			fail_msg("due_checks took %lld VM steps for 100 rows", (long long)pp.vm_steps);
		if (dt > 0.25)
			fail_msg("due_checks over 100k rows took %.3f s", dt);
	}
	sqlite3_trace_v2(db, 0, NULL, NULL);
	assert_int_equal(halfstore_count(db, NULL, HALFSTORE_PENDING), N);
	stmtcache_forget(db);
	sqlite3_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_halfstore_prepare_stores_pending),
		cmocka_unit_test(test_halfstore_prepare_rejects_bad_batch),
		cmocka_unit_test(test_halfstore_commit_then_mark_committed),
		cmocka_unit_test(test_halfstore_real_offset_replaces_unknown),
		cmocka_unit_test(test_halfstore_end_out_is_the_row),
		cmocka_unit_test(test_halfstore_end_into_reuses_buf),
		cmocka_unit_test(test_halfstore_double_commit_is_ok_already_same_seq),
		cmocka_unit_test(test_halfstore_opposite_decision_conflicts),
		cmocka_unit_test(test_halfstore_unknown_txn_not_found),
		cmocka_unit_test(test_halfstore_commit_seq_per_partition),
		cmocka_unit_test(test_halfstore_failed_end_changes_nothing),
		cmocka_unit_test(test_halfstore_due_checks_lease),
		cmocka_unit_test(test_halfstore_release_lease),
		cmocka_unit_test(test_halfstore_check_answer_backoff_then_discard),
		cmocka_unit_test(test_halfstore_check_answer_after_end_changes_nothing),
		cmocka_unit_test(test_halfstore_resume_discarded),
		cmocka_unit_test(test_halfstore_operator_commit_takes_new_commit_seq),
		cmocka_unit_test(test_halfstore_unseq_after_failed_append),
		cmocka_unit_test(test_halfstore_committing_in_seq_order),
		cmocka_unit_test(test_halfstore_list_pages_by_group_and_state),
		cmocka_unit_test(test_halfstore_purge_ended_after_retention),
		cmocka_unit_test(test_halfstore_drop_topic_discards_pending),
		cmocka_unit_test(test_halfstore_seq_floor),
		cmocka_unit_test(test_halfstore_reattach),
		cmocka_unit_test(test_halfstore_queries_use_indexes),
		cmocka_unit_test(test_halfstore_state_check_is_cheap),
		cmocka_unit_test(test_halfstore_schema_v2_migrates_v1),
		cmocka_unit_test(test_halfstore_schema_v3_migrates_v2),
		cmocka_unit_test(test_halfstore_unsynced_commits),
		cmocka_unit_test(test_halfstore_dead_letters),
		cmocka_unit_test(test_halfstore_dead_letter_numbers),
		cmocka_unit_test(test_halfstore_schema_v5_migrates_v4),
		cmocka_unit_test(test_halfstore_schema_v6_migrates_v5),
		cmocka_unit_test(test_halfstore_dead_topic),
		cmocka_unit_test(test_halfstore_due_checks_100k_is_index_fast),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
