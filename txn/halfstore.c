/*
 * halfstore.c — see halfstore.h.
 *
 * Schema, halfstore version 6 (part of sluice.db; docs/transactions.md and
 * docs/storage.md describe it for operators).  Change it only by adding a
 * migration step (ALTER TABLE / new index) after halfstore_schema_sql in
 * coord.c's schema_upgrade, bumping HALFSTORE_SCHEMA_VERSION and the
 * database's user_version, and updating docs/transactions.md.
 *
 *   txn_half: one row per half message.
 *     txn_id          INTEGER PRIMARY KEY AUTOINCREMENT — never reused, so a
 *                     late end for a purged txn is NOT_FOUND, not another's
 *     producer_group  TEXT, topic TEXT, partition INTEGER
 *     batch           BLOB: the RecordBatch v2 exactly as the producer sent
 *                     it (the broker rewrites producer id/epoch/sequence and
 *                     the CRC when it appends).  Kept while PENDING,
 *                     COMMITTING and DISCARDED; NULL once COMMITTED or
 *                     ROLLED_BACK.
 *     batch_len, record_count INTEGER (record_count = lastOffsetDelta + 1)
 *     state           TEXT: PENDING | COMMITTING | COMMITTED | ROLLED_BACK |
 *                     DISCARDED (readable in the sqlite3 shell)
 *     created_ms, ended_ms (NULL while PENDING; decision or discard time)
 *     check_count     checks that got no decision
 *     next_check_ms   when the next check is due (PENDING only)
 *     lease_until_ms  a check is out until then (0 = none)
 *     commit_seq      per-partition commit sequence (set at end(COMMIT))
 *     log_offset      where the commit landed (COMMITTED)
 *     origin          connection id of the preparing producer (uint64 bits)
 *     discard_reason  TEXT (DISCARDED)
 *     dead_letter_offset, dead_letter_seq, dead_letter_partition: the copy
 *                     in the dead-letter topic (DISCARDED; see
 *                     halfstore_dead_letters)
 *   txn_seq(topic, partition, next_seq): the next commit_seq per partition.
 *   txn_dead_seq(partition, next_seq): the next dead_letter_seq per
 *                     partition number of the dead-letter topic; never
 *                     reset (not by a topic's deletion, not by a change of
 *                     transaction.dead.letter.topic), so that sequences only
 *                     grow in any log they are appended to.
 *   txn_dead_topic(one, topic_id): one row, the topic id of the dead-letter
 *                     topic the copies not yet recorded are numbered for,
 *                     and the recorded ones are in (halfstore_dead_topic).
 *
 * Invariants:
 *  - A PENDING row has next_check_ms >= lease_until_ms: leasing moves
 *    next_check_ms to the lease end, so "due" is one index range
 *    (txn_half_due on (state, next_check_ms)) and leased rows are never
 *    scanned.
 *  - commit_seq is unique per (topic, partition) (txn_half_commit) and
 *    below that partition's txn_seq.next_seq; a batch's sequences
 *    [commit_seq, commit_seq + record_count) never cross a multiple of
 *    HALFSTORE_SEQ_SPAN.
 *  - commit_seq, once set, is never changed, except cleared after an
 *    append that certainly wrote nothing: by halfstore_unseq (the commit
 *    is retried), by halfstore_discard (it never will be: topic deleted,
 *    batch too large).  A COMMITTING row without one gets a new one at its
 *    next end(COMMIT), a DISCARDED one at an operator's commit
 *    (COMMITTING rows are appended only with a sequence).
 */
#include "halfstore.h"
#include "stmtcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The states' CHECK: a chain of `=` (version 2), not `state IN (...)`
 * (version 1), which SQLite runs as an ephemeral b-tree of the five names
 * built for every INSERT and UPDATE of a row — a tenth of the
 * coordinator's time under a transactional load (docs/benchmarks.md,
 * session 6; test_halfstore checks the programs). */
#define STATE_CHECK_V1 "CHECK(state IN    ('PENDING','COMMITTING','COMMITTED','ROLLED_BACK','DISCARDED'))"
#define STATE_CHECK_V2                                                                   \
	"CHECK(state = 'PENDING' OR state = 'COMMITTING' OR state = 'COMMITTED' OR"       \
	" state = 'ROLLED_BACK' OR state = 'DISCARDED')"

/* Page-cache commits recorded COMMITTED before their log copy was synced
 * (schema 4): they keep their batch, so that start-up can append it again
 * if a power loss took the log's copy; halfstore_drop_synced drops it once
 * the log is synced past it. */
#define HALFSTORE_UNSYNCED_INDEX_SQL                                                      \
	"CREATE INDEX IF NOT EXISTS txn_half_unsynced ON txn_half(topic, partition, log_offset)" \
	"  WHERE state = 'COMMITTED' AND batch IS NOT NULL;"

/* Discarded rows not yet copied to the dead-letter topic (schema 3). */
#define HALFSTORE_DEAD_INDEX_SQL                                                          \
	"CREATE INDEX IF NOT EXISTS txn_half_dead ON txn_half(txn_id)"                     \
	"  WHERE state = 'DISCARDED' AND dead_letter_offset IS NULL;"

/* Numbered dead-letter copies (schema 5): the sequences, and the copies
 * numbered but not recorded yet, in the order they are appended. */
#define HALFSTORE_DEAD_SEQ_SQL                                                            \
	"CREATE TABLE IF NOT EXISTS txn_dead_seq("                                        \
	"  partition INTEGER PRIMARY KEY, next_seq INTEGER NOT NULL);"                    \
	"CREATE INDEX IF NOT EXISTS txn_half_dead_out"                                    \
	"  ON txn_half(dead_letter_partition, dead_letter_seq)"                           \
	"  WHERE state = 'DISCARDED' AND dead_letter_offset IS NULL"                      \
	"  AND dead_letter_seq IS NOT NULL;"

/* The dead-letter topic the copies are numbered for (schema 6). */
#define HALFSTORE_DEAD_TOPIC_SQL                                                          \
	"CREATE TABLE IF NOT EXISTS txn_dead_topic("                                      \
	"  one INTEGER PRIMARY KEY CHECK(one = 1), topic_id BLOB NOT NULL);"

const char halfstore_schema_sql[] =
	"CREATE TABLE IF NOT EXISTS txn_half("
	"  txn_id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  producer_group TEXT NOT NULL,"
	"  topic TEXT NOT NULL,"
	"  partition INTEGER NOT NULL,"
	"  batch BLOB,"
	"  batch_len INTEGER NOT NULL,"
	"  record_count INTEGER NOT NULL,"
	"  state TEXT NOT NULL " STATE_CHECK_V2 ","
	"  created_ms INTEGER NOT NULL,"
	"  ended_ms INTEGER,"
	"  check_count INTEGER NOT NULL DEFAULT 0,"
	"  next_check_ms INTEGER NOT NULL,"
	"  lease_until_ms INTEGER NOT NULL DEFAULT 0,"
	"  commit_seq INTEGER,"
	"  log_offset INTEGER,"
	"  origin INTEGER NOT NULL,"
	"  discard_reason TEXT,"
	"  dead_letter_offset INTEGER,"
	"  dead_letter_seq INTEGER,"
	"  dead_letter_partition INTEGER);"
	HALFSTORE_DEAD_INDEX_SQL
	HALFSTORE_DEAD_SEQ_SQL
	HALFSTORE_DEAD_TOPIC_SQL
	HALFSTORE_UNSYNCED_INDEX_SQL
	/* due checks: one range (state = 'PENDING', next_check_ms <= now), in
	 * next_check_ms order, rowid breaking ties */
	"CREATE INDEX IF NOT EXISTS txn_half_due ON txn_half(state, next_check_ms);"
	/* sluice txn list --group G: one group's txns in txn_id order */
	"CREATE INDEX IF NOT EXISTS txn_half_group ON txn_half(producer_group, txn_id);"
	/* list/count by state across groups; the COMMITTING list at recovery */
	"CREATE INDEX IF NOT EXISTS txn_half_state ON txn_half(state, txn_id);"
	/* purge by age */
	"CREATE INDEX IF NOT EXISTS txn_half_ended ON txn_half(ended_ms)"
	"  WHERE ended_ms IS NOT NULL;"
	/* one commit_seq per partition */
	"CREATE UNIQUE INDEX IF NOT EXISTS txn_half_commit ON txn_half(topic, partition, commit_seq)"
	"  WHERE commit_seq IS NOT NULL;"
	"CREATE TABLE IF NOT EXISTS txn_seq("
	"  topic TEXT NOT NULL, partition INTEGER NOT NULL, next_seq INTEGER NOT NULL,"
	"  PRIMARY KEY(topic, partition)) WITHOUT ROWID;";

static const char *const state_names[HALFSTORE_NSTATES] = {
	[HALFSTORE_PENDING] = "PENDING",
	[HALFSTORE_COMMITTING] = "COMMITTING",
	[HALFSTORE_COMMITTED] = "COMMITTED",
	[HALFSTORE_ROLLED_BACK] = "ROLLED_BACK",
	[HALFSTORE_DISCARDED] = "DISCARDED",
};

/* Columns of a halfstore_txn, in read_row's order; the last is the batch. */
#define COLS_BASE                                                                       \
	"txn_id, producer_group, topic, partition, batch_len, record_count, state,"    \
	" created_ms, ended_ms, check_count, next_check_ms, lease_until_ms,"           \
	" commit_seq, log_offset, origin, discard_reason, dead_letter_offset,"         \
	" dead_letter_seq, dead_letter_partition"
#define COL_BATCH 19
#define COLS_BLOB COLS_BASE ", batch"
#define COLS_NOBLOB COLS_BASE ", NULL"

/* RecordBatch v2 header fields we look at (DESIGN §4). */
#define RB_HEADER 61
#define RB_OFF_LENGTH 8
#define RB_OFF_MAGIC 16
#define RB_OFF_ATTR 21
#define RB_OFF_LAST_DELTA 23
#define RB_OFF_COUNT 57
#define RB_ATTR_TRANSACTIONAL 0x10
#define RB_ATTR_CONTROL 0x20
_Static_assert(RB_OFF_COUNT + 4 == RB_HEADER, "recordCount ends the 61-byte header");

/* ---- the one place SQLite result codes become -errno ---- */

static int sqlerr(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISUSE:
	case SQLITE_RANGE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* ---- names ---- */

const char *halfstore_state_name(enum halfstore_state s)
{
	return (unsigned)s < HALFSTORE_NSTATES ? state_names[s] : "?";
}

int halfstore_state_parse(const char *name, enum halfstore_state *s)
{
	for (int i = 0; name && i < HALFSTORE_NSTATES; i++) {
		if (strcasecmp(name, state_names[i]) == 0) {
			*s = (enum halfstore_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *halfstore_strerror(int rc)
{
	switch (rc) {
	case HALFSTORE_OK: return "ok";
	case HALFSTORE_OK_ALREADY: return "already decided the same way";
	case HALFSTORE_E_NOT_FOUND: return "no such transaction";
	case HALFSTORE_E_CONFLICT: return "the opposite decision was made before";
	case HALFSTORE_E_DISCARDED: return "transaction discarded after too many checks";
	case HALFSTORE_E_STATE: return "transaction not in a state for this operation";
	case HALFSTORE_E_INVALID: return "invalid argument";
	default: return rc < 0 ? strerror(-rc) : "unknown outcome";
	}
}

/* ---- struct helpers ---- */

void halfstore_txn_clear(halfstore_txn *t)
{
	if (!t)
		return;
	if (!t->buf) {
		free(t->producer_group);
		free(t->topic);
		free(t->batch);
		free(t->discard_reason);
	}
	memset(t, 0, sizeof(*t));
}

void halfstore_txns_free(halfstore_txn *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		halfstore_txn_clear(&v[i]);
	free(v);
}

/* ---- schema migration ---- */

static int pragma_int(sqlite3 *db, const char *sql, int *v)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

int halfstore_schema_v2(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int version = 0, rc;
	char bump[64];

	rc = pragma_int(db, "PRAGMA schema_version", &version);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA writable_schema = ON", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2)"
					    " WHERE type = 'table' AND name = 'txn_half'", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, STATE_CHECK_V1, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, STATE_CHECK_V2, -1, SQLITE_STATIC);
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
	}
	sqlite3_finalize(st);
	/* other connections, and this one, re-read the schema */
	snprintf(bump, sizeof(bump), "PRAGMA schema_version = %d", version + 1);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, bump, NULL, NULL, NULL);
	sqlite3_exec(db, "PRAGMA writable_schema = OFF", NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : sqlerr(rc);
}

/* 1 if txn_half has a column named col, 0 if not, or a SQLite code < 0. */
static int has_column(sqlite3 *db, const char *col)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM pragma_table_info('txn_half')"
					" WHERE name = ?1", -1, &st, NULL);
	int found = 0;

	if (rc != SQLITE_OK)
		return -rc;
	sqlite3_bind_text(st, 1, col, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		found = sqlite3_column_int(st, 0) > 0;
	else
		found = -rc;
	sqlite3_finalize(st);
	return found;
}

/* Runs migration SQL (no statement cache: once per database).  0 or
 * -errno. */
static int migrate_sql(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : sqlerr(rc);
}

/* Adds the INTEGER column name to txn_half unless it has it.  0 or -errno. */
static int add_column(sqlite3 *db, const char *name)
{
	char sql[96];
	int has = has_column(db, name);

	if (has < 0)
		return sqlerr(-has);
	if (has)
		return 0;
	snprintf(sql, sizeof(sql), "ALTER TABLE txn_half ADD COLUMN %s INTEGER", name);
	return migrate_sql(db, sql);
}

int halfstore_schema_v3(sqlite3 *db)
{
	int rc = add_column(db, "dead_letter_offset");

	return rc ? rc : migrate_sql(db, HALFSTORE_DEAD_INDEX_SQL);
}

int halfstore_schema_v4(sqlite3 *db)
{
	return migrate_sql(db, HALFSTORE_UNSYNCED_INDEX_SQL);
}

int halfstore_schema_v5(sqlite3 *db)
{
	int rc = add_column(db, "dead_letter_seq");

	if (rc == 0)
		rc = add_column(db, "dead_letter_partition");
	return rc ? rc : migrate_sql(db, HALFSTORE_DEAD_SEQ_SQL);
}

int halfstore_schema_v6(sqlite3 *db)
{
	return migrate_sql(db, HALFSTORE_DEAD_TOPIC_SQL);
}

/* ---- statement helpers ---- */

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	return sqlerr(stmtcache_prepare(db, sql, st));
}

/* Steps a statement expected to finish without rows and releases it. */
static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	int frc = stmtcache_release(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return sqlerr(rc);
	return sqlerr(frc);
}

static int exec(sqlite3 *db, const char *sql)
{
	return sqlerr(stmtcache_exec(db, sql));
}

/* Every mutating operation runs between sp_begin and sp_end (see header). */
static int sp_begin(sqlite3 *db)
{
	return exec(db, "SAVEPOINT halfstore");
}

/* Ends the savepoint: rolled back if rc < 0.  Returns rc, or the error of
 * the release. */
static int sp_end(sqlite3 *db, int rc)
{
	int r;

	if (rc < 0) {
		exec(db, "ROLLBACK TO halfstore");
		exec(db, "RELEASE halfstore");
		return rc;
	}
	r = exec(db, "RELEASE halfstore");
	if (r < 0) {
		exec(db, "ROLLBACK TO halfstore");
		exec(db, "RELEASE halfstore");
		return r;
	}
	return rc;
}

static int64_t col_i64(sqlite3_stmt *st, int i)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, i);
}

static char *col_str(sqlite3_stmt *st, int i, int *err)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	char *d;

	if (!s)
		return NULL;
	d = strdup((const char *)s);
	if (!d)
		*err = -ENOMEM;
	return d;
}

static enum halfstore_state parse_state_col(sqlite3_stmt *st, int i)
{
	enum halfstore_state s = HALFSTORE_PENDING;

	halfstore_state_parse((const char *)sqlite3_column_text(st, i), &s);
	return s;
}

/* The malloc()ed copies of a row's strings and batch (read_row). */
static int read_owned(sqlite3_stmt *st, halfstore_txn *t)
{
	int err = 0;
	const void *b = sqlite3_column_blob(st, COL_BATCH);
	int blen = sqlite3_column_bytes(st, COL_BATCH);

	t->producer_group = col_str(st, 1, &err);
	t->topic = col_str(st, 2, &err);
	t->discard_reason = col_str(st, 15, &err);
	if (b && blen > 0) {
		t->batch = malloc((size_t)blen);
		if (t->batch)
			memcpy(t->batch, b, (size_t)blen);
		else
			err = -ENOMEM;
	}
	return err;
}

/* Column i's text (NULL: SQL NULL) copied to *at, which advances. */
static char *put_text(const unsigned char *s, int len, char **at)
{
	char *d = *at;

	if (!s)
		return NULL;
	memcpy(d, s, (size_t)len);
	d[len] = '\0';
	*at += len + 1;
	return d;
}

/* A row's strings and batch copied into buf, grown if needed (read_row):
 * the batch first, then the strings. */
static int read_into(sqlite3_stmt *st, halfstore_txn *t, halfstore_buf *buf)
{
	const unsigned char *s[3];
	int len[3], blen;
	const int col[3] = { 1, 2, 15 };
	const void *b;
	size_t need;
	char *at;

	for (int i = 0; i < 3; i++) {
		s[i] = sqlite3_column_text(st, col[i]);
		len[i] = sqlite3_column_bytes(st, col[i]);
	}
	b = sqlite3_column_blob(st, COL_BATCH);
	blen = b ? sqlite3_column_bytes(st, COL_BATCH) : 0;
	need = (size_t)blen + (size_t)len[0] + (size_t)len[1] + (size_t)len[2] + 3;
	if (need > buf->cap) {
		size_t cap = (need + 1023) & ~(size_t)1023;
		char *p = realloc(buf->p, cap);

		if (!p)
			return -ENOMEM;
		buf->p = p;
		buf->cap = cap;
	}
	at = buf->p;
	if (blen > 0) {
		t->batch = (uint8_t *)at;
		memcpy(at, b, (size_t)blen);
		at += blen;
	}
	t->producer_group = put_text(s[0], len[0], &at);
	t->topic = put_text(s[1], len[1], &at);
	t->discard_reason = put_text(s[2], len[2], &at);
	return 0;
}

/* Reads a row selected with COLS_BLOB or COLS_NOBLOB into *t (zeroed
 * first), its strings and batch malloc()ed, or in buf if not NULL
 * (t->buf = buf).  0, or -ENOMEM with *t cleared. */
static int read_row(sqlite3_stmt *st, halfstore_txn *t, halfstore_buf *buf)
{
	int err;

	memset(t, 0, sizeof(*t));
	t->buf = buf;
	t->txn_id = sqlite3_column_int64(st, 0);
	t->partition = sqlite3_column_int(st, 3);
	t->batch_len = (size_t)sqlite3_column_int64(st, 4);
	t->record_count = sqlite3_column_int(st, 5);
	t->state = parse_state_col(st, 6);
	t->created_ms = sqlite3_column_int64(st, 7);
	t->ended_ms = col_i64(st, 8);
	t->check_count = sqlite3_column_int(st, 9);
	t->next_check_ms = sqlite3_column_int64(st, 10);
	t->lease_until_ms = sqlite3_column_int64(st, 11);
	t->commit_seq = col_i64(st, 12);
	t->log_offset = col_i64(st, 13);
	t->origin = (uint64_t)sqlite3_column_int64(st, 14);
	t->dead_letter_offset = col_i64(st, 16);
	t->dead_letter_seq = col_i64(st, 17);
	t->dead_letter_partition = (int32_t)col_i64(st, 18);
	err = buf ? read_into(st, t, buf) : read_owned(st, t);
	if (err)
		halfstore_txn_clear(t);
	return err;
}

/* Runs a bound SELECT of COLS_* and collects every row.  Finalizes st.
 * 0 with *out and *n, or -errno with both untouched. */
static int collect(sqlite3_stmt *st, halfstore_txn **out, size_t *n)
{
	halfstore_txn *v = NULL;
	size_t cnt = 0, cap = 0;
	int rc, err = 0;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			halfstore_txn *nv = realloc(v, sizeof(*nv) * ncap);

			if (!nv) {
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		err = read_row(st, &v[cnt], NULL);
		if (err)
			break;
		cnt++;
	}
	if (!err && rc != SQLITE_DONE)
		err = sqlerr(rc);
	rc = stmtcache_release(st);
	if (!err)
		err = sqlerr(rc);
	if (err) {
		halfstore_txns_free(v, cnt);
		return err;
	}
	*out = v;
	*n = cnt;
	return 0;
}

/* Reads txn_id into *t.  HALFSTORE_OK, HALFSTORE_E_NOT_FOUND or -errno. */
static int fetch(sqlite3 *db, int64_t txn_id, bool with_batch, halfstore_txn *t,
		 halfstore_buf *buf)
{
	sqlite3_stmt *st;
	int rc;

	rc = prep(db,
		  with_batch ? "SELECT " COLS_BLOB " FROM txn_half WHERE txn_id = ?1"
			     : "SELECT " COLS_NOBLOB " FROM txn_half WHERE txn_id = ?1",
		  &st);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, txn_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = read_row(st, t, buf);
	else if (rc == SQLITE_DONE)
		rc = HALFSTORE_E_NOT_FOUND;
	else
		rc = sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

static int64_t clamp_limit(size_t limit)
{
	return limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
}

/* ---- prepare ---- */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* record_count of a plausible RecordBatch v2, or -1. */
static int32_t batch_records(const uint8_t *b, size_t len)
{
	int32_t count, delta;
	uint16_t attr;

	if (!b || len < RB_HEADER || len > INT32_MAX)
		return -1;
	if ((size_t)be32(b + RB_OFF_LENGTH) != len - 12 || b[RB_OFF_MAGIC] != 2)
		return -1;
	attr = (uint16_t)(b[RB_OFF_ATTR] << 8 | b[RB_OFF_ATTR + 1]);
	if (attr & (RB_ATTR_TRANSACTIONAL | RB_ATTR_CONTROL))
		return -1;
	count = (int32_t)be32(b + RB_OFF_COUNT);
	delta = (int32_t)be32(b + RB_OFF_LAST_DELTA);
	if (count < 1 || delta != count - 1)
		return -1;
	return count;
}

int halfstore_prepare(sqlite3 *db, const halfstore_prepare_args *a, int64_t now_ms,
		      const checksched_policy *policy, int64_t *txn_id)
{
	sqlite3_stmt *st;
	int32_t count;
	int rc;

	if (!a || !a->producer_group || !*a->producer_group || !a->topic || !*a->topic ||
	    a->partition < 0 || !policy)
		return HALFSTORE_E_INVALID;
	count = batch_records(a->batch, a->batch_len);
	if (count < 0)
		return HALFSTORE_E_INVALID;
	/* one INSERT, atomic on its own: no savepoint (once per transaction) */
	rc = prep(db,
		  "INSERT INTO txn_half(producer_group, topic, partition, batch, batch_len,"
		  " record_count, state, created_ms, next_check_ms, origin)"
		  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'PENDING', ?7, ?8, ?9)",
		  &st);
	if (rc == 0) {
		sqlite3_bind_text(st, 1, a->producer_group, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, a->topic, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, a->partition);
		sqlite3_bind_blob(st, 4, a->batch, (int)a->batch_len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (int64_t)a->batch_len);
		sqlite3_bind_int(st, 6, count);
		sqlite3_bind_int64(st, 7, now_ms);
		sqlite3_bind_int64(st, 8, checksched_first_check(policy, now_ms, a->check_timeout_ms));
		sqlite3_bind_int64(st, 9, (int64_t)a->origin);
		rc = run(st);
	}
	if (rc == 0)
		*txn_id = sqlite3_last_insert_rowid(db);
	return rc;
}

/* ---- end ---- */

int halfstore_seq_floor(sqlite3 *db, const char *topic, int32_t partition, int64_t next_seq)
{
	sqlite3_stmt *st;
	int rc = prep(db,
		      "INSERT INTO txn_seq(topic, partition, next_seq) VALUES(?1, ?2, ?3)"
		      " ON CONFLICT(topic, partition) DO UPDATE"
		      " SET next_seq = max(next_seq, excluded.next_seq)",
		      &st);

	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, partition);
	sqlite3_bind_int64(st, 3, next_seq);
	return run(st);
}

/* Runs sql (one int64 column; ?1 = topic, ?2 = partition) and sets *out
 * to its first row's value, or to dflt if there is none.  0 or -errno. */
static int part_i64(sqlite3 *db, const char *sql, const char *topic, int32_t partition,
		    int64_t dflt, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = prep(db, sql, &st);

	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, partition);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : dflt;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

#define SQL_NEXT_SEQ "SELECT next_seq FROM txn_seq WHERE topic = ?1 AND partition = ?2"

int halfstore_state_seq(sqlite3 *db, int64_t txn_id, enum halfstore_state *state,
			int64_t *commit_seq)
{
	sqlite3_stmt *st;
	int rc = prep(db, "SELECT state, commit_seq FROM txn_half WHERE txn_id = ?1", &st);

	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, txn_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*state = parse_state_col(st, 0);
		*commit_seq = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1
									 : sqlite3_column_int64(st, 1);
	}
	rc = rc == SQLITE_ROW ? HALFSTORE_OK : rc == SQLITE_DONE ? HALFSTORE_E_NOT_FOUND : sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

int halfstore_seq_state(sqlite3 *db, const char *topic, int32_t partition, int64_t *next_seq,
			int64_t *last_offset, int64_t *last_seq)
{
	sqlite3_stmt *st;
	int rc = part_i64(db, SQL_NEXT_SEQ, topic, partition, 0, next_seq);

	if (rc)
		return rc;
	/* txn_half_commit walked down from the top: rows still COMMITTING
	 * (offset not recorded yet) are the few most recent */
	rc = prep(db,
		  "SELECT log_offset, commit_seq FROM txn_half WHERE topic = ?1 AND partition = ?2"
		  " AND commit_seq IS NOT NULL AND log_offset >= 0 ORDER BY commit_seq DESC LIMIT 1",
		  &st);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, partition);
	rc = sqlite3_step(st);
	*last_offset = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	if (last_seq)
		*last_seq = rc == SQLITE_ROW ? sqlite3_column_int64(st, 1) : -1;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

int halfstore_reattach(sqlite3 *db, int64_t txn_id, const char *topic, int32_t partition,
		       int64_t commit_seq, int64_t log_offset, int64_t now_ms)
{
	halfstore_txn t;
	sqlite3_stmt *st;
	int rc = fetch(db, txn_id, false, &t, NULL);

	if (rc != HALFSTORE_OK)
		return rc;
	if (strcmp(t.topic, topic) != 0 || t.partition != partition)
		rc = HALFSTORE_E_STATE;
	else if (t.state == HALFSTORE_COMMITTED && t.commit_seq == commit_seq)
		rc = HALFSTORE_OK_ALREADY;
	else if ((t.state != HALFSTORE_PENDING && t.state != HALFSTORE_DISCARDED &&
		  t.state != HALFSTORE_COMMITTING) || t.commit_seq >= 0)
		rc = HALFSTORE_E_STATE; /* COMMITTING without one: released, then
					   re-sequenced by a retry the power
					   loss took */
	else
		rc = prep(db,
			  "UPDATE txn_half SET state = 'COMMITTED', commit_seq = ?2, log_offset = ?3,"
			  " ended_ms = ?4, batch = NULL, lease_until_ms = 0, discard_reason = NULL"
			  " WHERE txn_id = ?1",
			  &st);
	halfstore_txn_clear(&t);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, txn_id);
	sqlite3_bind_int64(st, 2, commit_seq);
	sqlite3_bind_int64(st, 3, log_offset);
	sqlite3_bind_int64(st, 4, now_ms);
	return run(st);
}

/* The first of count sequences from next on: a batch's sequences stay
 * inside one epoch, so it skips to the next one if they would not fit. */
static int64_t seq_in_epoch(int64_t next, int32_t count)
{
	if (next % HALFSTORE_SEQ_SPAN + count > HALFSTORE_SEQ_SPAN)
		return (next / HALFSTORE_SEQ_SPAN + 1) * HALFSTORE_SEQ_SPAN;
	return next;
}

/* Takes record_count sequences from txn_seq for (topic, partition).
 * 0 with *seq, or -errno. */
static int take_seq(sqlite3 *db, const char *topic, int32_t partition, int32_t count,
		    int64_t *seq)
{
	int64_t s;
	int rc = part_i64(db, SQL_NEXT_SEQ, topic, partition, 0, &s);

	if (rc)
		return rc;
	s = seq_in_epoch(s, count);
	rc = halfstore_seq_floor(db, topic, partition, s + count); /* above s: raises it */
	if (rc == 0)
		*seq = s;
	return rc;
}

/* Gives a COMMITTING txn without a sequence the next one of its partition.
 * 0 or -errno. */
static int sequence(sqlite3 *db, halfstore_txn *t)
{
	sqlite3_stmt *st;
	int64_t seq;
	int rc = take_seq(db, t->topic, t->partition, t->record_count, &seq);

	if (rc == 0)
		rc = prep(db, "UPDATE txn_half SET commit_seq = ?2 WHERE txn_id = ?1", &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, t->txn_id);
		sqlite3_bind_int64(st, 2, seq);
		rc = run(st);
	}
	if (rc == 0)
		t->commit_seq = seq;
	return rc;
}

/* What end_apply's UPDATEs did to the row, done to its copy *t: so the
 * caller gets the row after the end without reading it again (halfstore_end
 * runs once per transaction). */
static void end_applied(halfstore_txn *t, enum halfstore_state state, int64_t now_ms,
			int64_t seq)
{
	t->state = state;
	t->ended_ms = now_ms;
	t->lease_until_ms = 0;
	if (!t->buf)
		free(t->discard_reason);
	t->discard_reason = NULL;
	if (state == HALFSTORE_ROLLED_BACK) {
		if (!t->buf)
			free(t->batch);
		t->batch = NULL;
	} else {
		t->commit_seq = seq;
	}
}

/* Ends PENDING (or DISCARDED) *t with decision; on success *t is the row
 * as it is now (end_applied). */
static int end_apply(sqlite3 *db, halfstore_txn *t, enum halfstore_decision decision,
		     int64_t now_ms)
{
	sqlite3_stmt *st;
	int64_t seq = t->commit_seq;
	int rc;

	if (decision == HALFSTORE_ROLLBACK) {
		rc = prep(db,
			  "UPDATE txn_half SET state = 'ROLLED_BACK', ended_ms = ?2, batch = NULL,"
			  " lease_until_ms = 0, discard_reason = NULL WHERE txn_id = ?1",
			  &st);
		if (rc)
			return rc;
		sqlite3_bind_int64(st, 1, t->txn_id);
		sqlite3_bind_int64(st, 2, now_ms);
		rc = run(st);
		if (rc == 0)
			end_applied(t, HALFSTORE_ROLLED_BACK, now_ms, seq);
		return rc;
	}
	/* a DISCARDED one may still have the sequence an older version kept
	 * at the discard: like a released one, below those taken since */
	if (seq < 0 || t->state == HALFSTORE_DISCARDED) {
		rc = take_seq(db, t->topic, t->partition, t->record_count, &seq);
		if (rc)
			return rc;
	}
	rc = prep(db,
		  "UPDATE txn_half SET state = 'COMMITTING', ended_ms = ?2, commit_seq = ?3,"
		  " lease_until_ms = 0, discard_reason = NULL WHERE txn_id = ?1",
		  &st);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, t->txn_id);
	sqlite3_bind_int64(st, 2, now_ms);
	sqlite3_bind_int64(st, 3, seq);
	rc = run(st);
	if (rc == 0)
		end_applied(t, HALFSTORE_COMMITTING, now_ms, seq);
	return rc;
}

int halfstore_end(sqlite3 *db, int64_t txn_id, enum halfstore_decision decision, unsigned flags,
		  int64_t now_ms, halfstore_txn *out)
{
	return halfstore_end_into(db, txn_id, decision, flags, now_ms, NULL, out);
}

int halfstore_end_into(sqlite3 *db, int64_t txn_id, enum halfstore_decision decision,
		       unsigned flags, int64_t now_ms, halfstore_buf *buf, halfstore_txn *out)
{
	halfstore_txn t;
	int rc;

	if (decision != HALFSTORE_COMMIT && decision != HALFSTORE_ROLLBACK)
		return HALFSTORE_E_INVALID;
	rc = sp_begin(db);
	if (rc)
		return rc;
	/* with the batch if the caller wants the row: one read, kept up to
	 * date by end_apply and sequence */
	rc = fetch(db, txn_id, out != NULL, &t, out ? buf : NULL);
	if (rc != HALFSTORE_OK)
		return sp_end(db, rc);
	switch (t.state) {
	case HALFSTORE_DISCARDED:
		if (!(flags & HALFSTORE_F_OPERATOR)) {
			rc = HALFSTORE_E_DISCARDED;
			break;
		}
		/* An operator decides as the producer would have. */
		__attribute__((fallthrough));
	case HALFSTORE_PENDING:
		rc = end_apply(db, &t, decision, now_ms);
		break;
	case HALFSTORE_COMMITTING:
		if (decision == HALFSTORE_COMMIT && t.commit_seq < 0) {
			/* its append wrote nothing (halfstore_unseq): sequenced
			 * now, after everything sequenced before */
			rc = sequence(db, &t);
			if (rc == 0)
				rc = HALFSTORE_OK_ALREADY;
			break;
		}
		__attribute__((fallthrough));
	case HALFSTORE_COMMITTED:
		rc = decision == HALFSTORE_COMMIT ? HALFSTORE_OK_ALREADY : HALFSTORE_E_CONFLICT;
		break;
	case HALFSTORE_ROLLED_BACK:
		rc = decision == HALFSTORE_ROLLBACK ? HALFSTORE_OK_ALREADY : HALFSTORE_E_CONFLICT;
		break;
	}
	rc = sp_end(db, rc);
	if (rc >= 0 && out)
		*out = t;
	else
		halfstore_txn_clear(&t);
	return rc;
}

/* ---- mark_committed ---- */

/* Runs a conditional UPDATE of txn_id (bound in st).  HALFSTORE_OK if it
 * changed the row; else HALFSTORE_E_NOT_FOUND, or HALFSTORE_E_STATE with
 * the row in *why if why is not NULL (the caller clears it); or -errno. */
static int guarded_update(sqlite3 *db, sqlite3_stmt *st, int64_t txn_id, halfstore_txn *why)
{
	int rc = run(st);
	halfstore_txn t;

	if (rc)
		return rc;
	if (sqlite3_changes(db) > 0)
		return HALFSTORE_OK;
	rc = fetch(db, txn_id, false, &t, NULL);
	if (rc != HALFSTORE_OK)
		return rc;
	if (why)
		*why = t;
	else
		halfstore_txn_clear(&t);
	return HALFSTORE_E_STATE;
}

/* guarded_update of the fixed statement sql with ?1 = txn_id, ?2 = v: one
 * statement, atomic on its own, so no savepoint. */
static int guarded_i64(sqlite3 *db, const char *sql, int64_t txn_id, int64_t v, halfstore_txn *why)
{
	sqlite3_stmt *st;
	int rc = prep(db, sql, &st);

	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, txn_id);
	sqlite3_bind_int64(st, 2, v);
	return guarded_update(db, st, txn_id, why);
}

static int mark_committed(sqlite3 *db, int64_t txn_id, int64_t log_offset, bool keep_batch)
{
	halfstore_txn t;
	int rc;

	if (log_offset < -1) /* -1: appended, offset no longer known */
		return HALFSTORE_E_INVALID;
	/* no read first: this runs once per commit.  An unsynced COMMITTED
	 * row (its batch kept) is re-marked by start-up recovery: at the
	 * offset it was appended at again, or where it was.  A row marked
	 * at -1 ("appended, offset unknown": a retried end that found its
	 * sequence in the log) takes the real offset when the first end's
	 * mark comes after it. */
	rc = guarded_i64(db,
			 keep_batch
			 ? "UPDATE txn_half SET state = 'COMMITTED', log_offset = ?2"
			   " WHERE txn_id = ?1 AND (state = 'COMMITTING'"
			   "  OR (state = 'COMMITTED' AND log_offset = -1 AND ?2 >= 0))"
			 : "UPDATE txn_half SET state = 'COMMITTED', batch = NULL,"
			   "  log_offset = CASE WHEN ?2 < 0 AND state = 'COMMITTED' THEN log_offset"
			   "  ELSE ?2 END"
			   " WHERE txn_id = ?1 AND (state = 'COMMITTING'"
			   "  OR (state = 'COMMITTED' AND batch IS NOT NULL)"
			   "  OR (state = 'COMMITTED' AND log_offset = -1 AND ?2 >= 0))",
			 txn_id, log_offset, &t);
	if (rc == HALFSTORE_E_STATE) {
		/* not COMMITTING: nothing changed; already COMMITTED?  An
		 * offset-unknown mark (-1) agrees with any recorded offset. */
		if (t.state == HALFSTORE_COMMITTED)
			rc = t.log_offset == log_offset || log_offset == -1 ? HALFSTORE_OK_ALREADY
									    : HALFSTORE_E_CONFLICT;
		halfstore_txn_clear(&t);
	}
	return rc;
}

int halfstore_mark_committed(sqlite3 *db, int64_t txn_id, int64_t log_offset)
{
	return mark_committed(db, txn_id, log_offset, false);
}

int halfstore_mark_committed_unsynced(sqlite3 *db, int64_t txn_id, int64_t log_offset)
{
	return mark_committed(db, txn_id, log_offset, true);
}

int64_t halfstore_drop_synced(sqlite3 *db, const char *topic, int32_t partition,
			      int64_t synced_end, size_t limit)
{
	sqlite3_stmt *st;
	int rc = prep(db,
		      "UPDATE txn_half SET batch = NULL WHERE txn_id IN ("
		      " SELECT txn_id FROM txn_half INDEXED BY txn_half_unsynced"
		      " WHERE state = 'COMMITTED' AND batch IS NOT NULL AND topic = ?1"
		      " AND partition = ?2 AND log_offset < ?3 LIMIT ?4)",
		      &st);

	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, partition);
	sqlite3_bind_int64(st, 3, synced_end);
	sqlite3_bind_int64(st, 4, (int64_t)limit);
	rc = run(st);
	return rc ? rc : (int64_t)sqlite3_changes(db);
}

int halfstore_unsynced_count(sqlite3 *db, int64_t *n)
{
	sqlite3_stmt *st;
	int rc = prep(db,
		      "SELECT count(*) FROM txn_half INDEXED BY txn_half_unsynced"
		      " WHERE state = 'COMMITTED' AND batch IS NOT NULL",
		      &st);

	if (rc)
		return rc;
	rc = sqlite3_step(st);
	*n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	rc = rc == SQLITE_ROW ? 0 : sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

/* ---- unseq ---- */

int halfstore_unseq(sqlite3 *db, int64_t txn_id)
{
	halfstore_txn t;
	sqlite3_stmt *st;
	int rc;

	rc = sp_begin(db);
	if (rc)
		return rc;
	rc = fetch(db, txn_id, false, &t, NULL);
	if (rc != HALFSTORE_OK)
		return sp_end(db, rc);
	if (t.state != HALFSTORE_COMMITTING)
		rc = HALFSTORE_E_STATE;
	else
		rc = prep(db, "UPDATE txn_half SET commit_seq = NULL WHERE txn_id = ?1", &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, txn_id);
		rc = run(st);
	}
	halfstore_txn_clear(&t);
	return sp_end(db, rc);
}

/* ---- lists ---- */

int halfstore_committing(sqlite3 *db, halfstore_txn **out, size_t *n)
{
	sqlite3_stmt *st;
	int rc;

	rc = prep(db,
		  "SELECT * FROM (SELECT " COLS_BLOB " FROM txn_half WHERE state = 'COMMITTING'"
		  " UNION ALL SELECT " COLS_BLOB " FROM txn_half INDEXED BY txn_half_unsynced"
		  " WHERE state = 'COMMITTED' AND batch IS NOT NULL)"
		  " ORDER BY topic, partition, commit_seq IS NULL, commit_seq, txn_id",
		  &st);
	if (rc)
		return rc;
	return collect(st, out, n);
}

int halfstore_due_checks(sqlite3 *db, int64_t now_ms, size_t limit, int64_t lease_ms,
			 halfstore_txn **out, size_t *n)
{
	halfstore_txn *v = NULL;
	size_t cnt = 0;
	sqlite3_stmt *st = NULL;
	int64_t until = lease_ms > INT64_MAX - now_ms ? INT64_MAX : now_ms + (lease_ms > 0 ? lease_ms : 0);
	int rc;

	if (limit == 0) {
		*out = NULL;
		*n = 0;
		return 0;
	}
	rc = sp_begin(db);
	if (rc)
		return rc;
	/* A range of the index txn_half_due (not txn_half_state, which would
	 * need a sort); test_halfstore checks the plan. */
	rc = prep(db,
		  "SELECT " COLS_BLOB " FROM txn_half"
		  " WHERE state = 'PENDING' AND next_check_ms <= ?1 AND lease_until_ms <= ?1"
		  " ORDER BY next_check_ms, txn_id LIMIT ?2",
		  &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, now_ms);
		sqlite3_bind_int64(st, 2, clamp_limit(limit));
		rc = collect(st, &v, &cnt);
	}
	/* Lease after the scan is closed (the update moves rows in the index). */
	if (rc == 0 && cnt > 0)
		rc = prep(db,
			  "UPDATE txn_half SET lease_until_ms = ?2, next_check_ms = ?2"
			  " WHERE txn_id = ?1",
			  &st);
	for (size_t i = 0; rc == 0 && i < cnt; i++) {
		sqlite3_bind_int64(st, 1, v[i].txn_id);
		sqlite3_bind_int64(st, 2, until);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = sqlerr(sqlite3_errcode(db));
		sqlite3_reset(st);
		v[i].lease_until_ms = until;
		v[i].next_check_ms = until;
	}
	if (cnt > 0 && st) {
		int frc = stmtcache_release(st);

		if (rc == 0)
			rc = sqlerr(frc);
	}
	rc = sp_end(db, rc);
	if (rc < 0) {
		halfstore_txns_free(v, cnt);
		return rc;
	}
	*out = v;
	*n = cnt;
	return 0;
}

/* ---- check answers, resume, discard ---- */

int halfstore_release_lease(sqlite3 *db, int64_t txn_id, int64_t next_check_ms)
{
	/* not a leased PENDING row: E_STATE */
	return guarded_i64(db,
			   "UPDATE txn_half SET lease_until_ms = 0, next_check_ms = ?2"
			   " WHERE txn_id = ?1 AND state = 'PENDING' AND lease_until_ms > 0",
			   txn_id, next_check_ms, NULL);
}

int halfstore_check_answer(sqlite3 *db, int64_t txn_id, enum halfstore_answer answer,
			   int32_t check_no, int64_t now_ms, const checksched_policy *policy,
			   enum halfstore_state *state)
{
	halfstore_txn t;
	sqlite3_stmt *st;
	int64_t next;
	int32_t count;
	char reason[96];
	int rc;

	if ((answer != HALFSTORE_ANSWER_UNKNOWN && answer != HALFSTORE_ANSWER_NONE) || !policy)
		return HALFSTORE_E_INVALID;
	rc = sp_begin(db);
	if (rc)
		return rc;
	rc = fetch(db, txn_id, false, &t, NULL);
	if (rc != HALFSTORE_OK)
		return sp_end(db, rc);
	if (t.state != HALFSTORE_PENDING) {
		halfstore_txn_clear(&t);
		return sp_end(db, HALFSTORE_E_STATE);
	}
	if (check_no != HALFSTORE_ANY_CHECK && check_no != t.check_count) {
		halfstore_txn_clear(&t);
		if (state)
			*state = HALFSTORE_PENDING;
		return sp_end(db, HALFSTORE_OK_ALREADY);
	}
	count = t.check_count + 1;
	halfstore_txn_clear(&t);
	next = checksched_next_check(policy, count, now_ms);
	if (next < 0) {
		snprintf(reason, sizeof(reason), "no decision after %d checks (last: %s)", (int)count,
			 answer == HALFSTORE_ANSWER_UNKNOWN ? "unknown" : "no answer");
		rc = prep(db,
			  "UPDATE txn_half SET state = 'DISCARDED', check_count = ?2, ended_ms = ?3,"
			  " lease_until_ms = 0, discard_reason = ?4 WHERE txn_id = ?1",
			  &st);
		if (rc == 0) {
			sqlite3_bind_int64(st, 1, txn_id);
			sqlite3_bind_int(st, 2, count);
			sqlite3_bind_int64(st, 3, now_ms);
			sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
			rc = run(st);
		}
	} else {
		rc = prep(db,
			  "UPDATE txn_half SET check_count = ?2, next_check_ms = ?3, lease_until_ms = 0"
			  " WHERE txn_id = ?1",
			  &st);
		if (rc == 0) {
			sqlite3_bind_int64(st, 1, txn_id);
			sqlite3_bind_int(st, 2, count);
			sqlite3_bind_int64(st, 3, next);
			rc = run(st);
		}
	}
	rc = sp_end(db, rc);
	if (rc == 0 && state)
		*state = next < 0 ? HALFSTORE_DISCARDED : HALFSTORE_PENDING;
	return rc;
}

int halfstore_resume(sqlite3 *db, int64_t txn_id, int64_t now_ms)
{
	return guarded_i64(db,
			   "UPDATE txn_half SET state = 'PENDING', check_count = 0, next_check_ms = ?2,"
			   " lease_until_ms = 0, ended_ms = NULL, discard_reason = NULL,"
			   " commit_seq = NULL," /* left by an older version's discard */
			   " dead_letter_offset = NULL, dead_letter_seq = NULL,"
			   " dead_letter_partition = NULL"
			   " WHERE txn_id = ?1 AND state = 'DISCARDED'",
			   txn_id, now_ms, NULL);
}

/* Gives the unnumbered copy *t the next dead-letter sequence of partition
 * txn_id % nparts.  0 or -errno. */
static int number_copy(sqlite3 *db, halfstore_txn *t, int32_t nparts)
{
	int32_t part = (int32_t)((uint64_t)t->txn_id % (uint64_t)nparts);
	int64_t seq = 0;
	sqlite3_stmt *st;
	int rc = prep(db, "SELECT next_seq FROM txn_dead_seq WHERE partition = ?1", &st);

	if (rc)
		return rc;
	sqlite3_bind_int(st, 1, part);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		seq = sqlite3_column_int64(st, 0);
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlerr(rc);
	stmtcache_release(st);
	seq = seq_in_epoch(seq, t->record_count);
	if (rc == 0)
		rc = prep(db, "INSERT INTO txn_dead_seq(partition, next_seq) VALUES(?1, ?2)"
			      " ON CONFLICT(partition) DO UPDATE SET next_seq = excluded.next_seq",
			  &st);
	if (rc == 0) {
		sqlite3_bind_int(st, 1, part);
		sqlite3_bind_int64(st, 2, seq + t->record_count);
		rc = run(st);
	}
	if (rc == 0)
		rc = prep(db, "UPDATE txn_half SET dead_letter_seq = ?2, dead_letter_partition = ?3"
			      " WHERE txn_id = ?1",
			  &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, t->txn_id);
		sqlite3_bind_int64(st, 2, seq);
		sqlite3_bind_int(st, 3, part);
		rc = run(st);
	}
	if (rc == 0) {
		t->dead_letter_seq = seq;
		t->dead_letter_partition = part;
	}
	return rc;
}

/* Appends the rows of st (bound, finalized here) to *v (n rows, cap). */
static int collect_more(sqlite3_stmt *st, halfstore_txn **v, size_t *n)
{
	halfstore_txn *more = NULL, *all;
	size_t k = 0;
	int rc = collect(st, &more, &k);

	if (rc || k == 0)
		return rc;
	all = realloc(*v, sizeof(**v) * (*n + k));
	if (!all) {
		halfstore_txns_free(more, k);
		return -ENOMEM;
	}
	memcpy(all + *n, more, sizeof(*more) * k);
	free(more);
	*v = all;
	*n += k;
	return 0;
}

int halfstore_dead_letters(sqlite3 *db, size_t limit, int32_t nparts, halfstore_txn **out,
			   size_t *n, bool *numbered)
{
	halfstore_txn *v = NULL;
	size_t k = 0, old;
	sqlite3_stmt *st;
	int rc;

	*numbered = false;
	if (limit == 0) {
		*out = NULL;
		*n = 0;
		return 0;
	}
	/* first the copies numbered before (their append failed, or a crash
	 * came before their record), in the order they must be appended */
	rc = prep(db,
		  "SELECT " COLS_BLOB " FROM txn_half INDEXED BY txn_half_dead_out"
		  " WHERE state = 'DISCARDED' AND dead_letter_offset IS NULL"
		  " AND dead_letter_seq IS NOT NULL"
		  " ORDER BY dead_letter_partition, dead_letter_seq LIMIT ?1",
		  &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, clamp_limit(limit));
		rc = collect_more(st, &v, &k);
	}
	/* then new ones.  The partial index txn_half_dead holds exactly the
	 * rows without a copy.  Named: without ANALYZE figures SQLite takes
	 * txn_half_state, whose range also holds every DISCARDED row already
	 * copied (they are kept until an operator resolves them). */
	old = k;
	if (rc == 0 && k < limit)
		rc = prep(db,
			  "SELECT " COLS_BLOB " FROM txn_half INDEXED BY txn_half_dead"
			  " WHERE state = 'DISCARDED' AND dead_letter_offset IS NULL"
			  " AND dead_letter_seq IS NULL ORDER BY txn_id LIMIT ?1",
			  &st);
	if (rc == 0 && k < limit) {
		sqlite3_bind_int64(st, 1, clamp_limit(limit - k));
		rc = collect_more(st, &v, &k);
	}
	if (rc == 0 && nparts > 0 && k > old) {
		rc = sp_begin(db);
		for (size_t i = old; i < k && rc == 0; i++)
			rc = number_copy(db, &v[i], nparts);
		rc = sp_end(db, rc);
		*numbered = rc == 0;
	}
	if (rc) {
		halfstore_txns_free(v, k);
		return rc;
	}
	*out = v;
	*n = k;
	return 0;
}

/* Stores id as the dead-letter topic's (txn_dead_topic).  0 or -errno. */
static int set_dead_topic(sqlite3 *db, const uint8_t id[16])
{
	sqlite3_stmt *st;
	int rc = prep(db, "INSERT INTO txn_dead_topic(one, topic_id) VALUES(1, ?1)"
			  " ON CONFLICT(one) DO UPDATE SET topic_id = excluded.topic_id",
		      &st);

	if (rc)
		return rc;
	sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC);
	return run(st);
}

/* *same: whether txn_dead_topic holds id, or nothing (*none).  0 or -errno. */
static int is_dead_topic(sqlite3 *db, const uint8_t id[16], bool *same, bool *none)
{
	sqlite3_stmt *st;
	int rc = prep(db, "SELECT topic_id FROM txn_dead_topic WHERE one = 1", &st);

	if (rc)
		return rc;
	rc = sqlite3_step(st);
	*none = rc == SQLITE_DONE;
	*same = rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 16 &&
		memcmp(sqlite3_column_blob(st, 0), id, 16) == 0;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlerr(rc);
	stmtcache_release(st);
	return rc;
}

int64_t halfstore_dead_topic(sqlite3 *db, const uint8_t id[16])
{
	bool same, none;
	sqlite3_stmt *st;
	int64_t n = 0;
	int rc = is_dead_topic(db, id, &same, &none);

	if (rc || same)
		return rc;
	rc = sp_begin(db);
	if (rc)
		return rc;
	if (!none)
		rc = prep(db,
			  "UPDATE txn_half INDEXED BY txn_half_dead_out"
			  " SET dead_letter_seq = NULL, dead_letter_partition = NULL"
			  " WHERE state = 'DISCARDED' AND dead_letter_offset IS NULL"
			  " AND dead_letter_seq IS NOT NULL",
			  &st);
	if (rc == 0 && !none) {
		rc = run(st);
		n = sqlite3_changes(db);
	}
	if (rc == 0)
		rc = set_dead_topic(db, id);
	rc = sp_end(db, rc);
	return rc ? rc : none ? 0 : n + 1;
}

int64_t halfstore_dead_lost(sqlite3 *db, int32_t partition, int64_t log_end, int64_t last_seq)
{
	sqlite3_stmt *st;
	int rc = prep(db,
		      "UPDATE txn_half SET dead_letter_offset = NULL"
		      " WHERE state = 'DISCARDED' AND dead_letter_partition = ?1"
		      " AND dead_letter_offset >= ?2 AND dead_letter_seq > ?3",
		      &st);

	if (rc)
		return rc;
	sqlite3_bind_int(st, 1, partition);
	sqlite3_bind_int64(st, 2, log_end);
	sqlite3_bind_int64(st, 3, last_seq);
	rc = run(st);
	return rc ? rc : sqlite3_changes(db);
}

int halfstore_mark_dead_lettered(sqlite3 *db, int64_t txn_id, int64_t offset)
{
	if (offset < 0 && offset != HALFSTORE_DEAD_GIVEN_UP && offset != HALFSTORE_DEAD_UNKNOWN)
		return HALFSTORE_E_INVALID;
	return guarded_i64(db,
			   "UPDATE txn_half SET dead_letter_offset = ?2"
			   " WHERE txn_id = ?1 AND state = 'DISCARDED' AND dead_letter_offset IS NULL",
			   txn_id, offset, NULL);
}

int halfstore_discard(sqlite3 *db, int64_t txn_id, const char *reason, int64_t now_ms)
{
	sqlite3_stmt *st;
	int rc;

	rc = sp_begin(db);
	if (rc)
		return rc;
	rc = prep(db,
		  "UPDATE txn_half SET state = 'DISCARDED', ended_ms = ?2, discard_reason = ?3,"
		  " lease_until_ms = 0, commit_seq = NULL"
		  " WHERE txn_id = ?1 AND state IN ('PENDING', 'COMMITTING')",
		  &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, txn_id);
		sqlite3_bind_int64(st, 2, now_ms);
		sqlite3_bind_text(st, 3, reason ? reason : "discarded", -1, SQLITE_STATIC);
		rc = guarded_update(db, st, txn_id, NULL);
	}
	return sp_end(db, rc);
}

/* ---- operator views ---- */

int halfstore_get(sqlite3 *db, int64_t txn_id, halfstore_txn *out)
{
	halfstore_txn t;
	int rc = fetch(db, txn_id, true, &t, NULL);

	if (rc == HALFSTORE_OK)
		*out = t;
	return rc;
}

int halfstore_list(sqlite3 *db, const char *group, unsigned state_mask, size_t limit,
		   int64_t after_txn_id, halfstore_txn **out, size_t *n)
{
	char sql[512];
	size_t len;
	sqlite3_stmt *st;
	bool first = true;
	int rc;

	state_mask &= HALFSTORE_MASK_ALL;
	if (state_mask == 0)
		return HALFSTORE_E_INVALID;
	len = (size_t)snprintf(sql, sizeof(sql), "SELECT " COLS_NOBLOB " FROM txn_half WHERE txn_id > ?1%s",
			       group ? " AND producer_group = ?2" : "");
	if (state_mask != HALFSTORE_MASK_ALL) {
		/* Literal names from state_names: no user text in the SQL.  With
		 * a group, "+state" keeps the planner on txn_half_group (one
		 * group's rows in txn_id order) rather than txn_half_state (every
		 * group's rows of that state). */
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, " AND %sstate IN (",
					group ? "+" : "");
		for (int s = 0; s < HALFSTORE_NSTATES; s++) {
			if (!(state_mask & HALFSTORE_MASK(s)))
				continue;
			len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s'%s'", first ? "" : ", ",
						state_names[s]);
			first = false;
		}
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, ")");
	}
	snprintf(sql + len, sizeof(sql) - len, " ORDER BY txn_id LIMIT ?3");
	rc = sqlerr(sqlite3_prepare_v2(db, sql, -1, &st, NULL)); /* dynamic: not cached */
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, after_txn_id);
	if (group)
		sqlite3_bind_text(st, 2, group, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, clamp_limit(limit));
	return collect(st, out, n);
}

int64_t halfstore_count(sqlite3 *db, const char *group, enum halfstore_state state)
{
	sqlite3_stmt *st;
	int64_t cnt = -EIO;
	int rc;

	if ((unsigned)state >= HALFSTORE_NSTATES)
		return -EINVAL;
	rc = prep(db,
		  group ? "SELECT count(*) FROM txn_half WHERE state = ?1 AND producer_group = ?2"
			: "SELECT count(*) FROM txn_half WHERE state = ?1",
		  &st);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, state_names[state], -1, SQLITE_STATIC);
	if (group)
		sqlite3_bind_text(st, 2, group, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		cnt = sqlite3_column_int64(st, 0);
	else
		cnt = sqlerr(rc);
	stmtcache_release(st);
	return cnt;
}

/* ---- housekeeping ---- */

int64_t halfstore_purge(sqlite3 *db, int64_t before_ms, bool include_discarded, size_t limit)
{
	sqlite3_stmt *st;
	int rc;
	int64_t n = 0;

	rc = sp_begin(db);
	if (rc)
		return rc;
	/* "+state": walk txn_half_ended (only rows old enough), not every
	 * COMMITTED row through txn_half_state.  A COMMITTED row that keeps
	 * its batch stays: it is the copy a power loss would need until the
	 * log is synced past it (a retention shorter than that, or a log
	 * whose syncs keep failing). */
	rc = prep(db,
		  include_discarded
			  ? "DELETE FROM txn_half WHERE txn_id IN (SELECT txn_id FROM txn_half"
			     " WHERE ended_ms < ?1 AND +state IN ('COMMITTED', 'ROLLED_BACK', 'DISCARDED')"
			     " AND NOT (state = 'COMMITTED' AND batch IS NOT NULL) LIMIT ?2)"
			  : "DELETE FROM txn_half WHERE txn_id IN (SELECT txn_id FROM txn_half"
			     " WHERE ended_ms < ?1 AND +state IN ('COMMITTED', 'ROLLED_BACK')"
			     " AND NOT (state = 'COMMITTED' AND batch IS NOT NULL) LIMIT ?2)",
		  &st);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, before_ms);
		sqlite3_bind_int64(st, 2, clamp_limit(limit));
		rc = run(st);
		if (rc == 0)
			n = sqlite3_changes(db);
	}
	rc = sp_end(db, rc);
	return rc < 0 ? rc : n;
}

int64_t halfstore_drop_topic(sqlite3 *db, const char *topic, int64_t now_ms)
{
	sqlite3_stmt *st;
	int64_t n = 0;
	int rc;

	if (!topic)
		return -EINVAL;
	rc = sp_begin(db);
	if (rc)
		return rc;
	rc = prep(db,
		  "UPDATE txn_half SET state = 'DISCARDED', ended_ms = ?2, lease_until_ms = 0,"
		  " discard_reason = 'topic deleted' WHERE topic = ?1 AND state = 'PENDING'",
		  &st);
	if (rc == 0) {
		sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, now_ms);
		rc = run(st);
		if (rc == 0)
			n = sqlite3_changes(db);
	}
	/* unsynced commits: their log is gone, so is the point of the batch */
	if (rc == 0)
		rc = prep(db,
			  "UPDATE txn_half INDEXED BY txn_half_unsynced SET batch = NULL"
			  " WHERE state = 'COMMITTED' AND batch IS NOT NULL AND topic = ?1",
			  &st);
	if (rc == 0) {
		sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
		rc = run(st);
	}
	rc = sp_end(db, rc);
	return rc < 0 ? rc : n;
}
