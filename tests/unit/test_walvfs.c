/*
 * test_walvfs.c — the "sluice-walvfs" SQLite VFS (broker/walvfs.c), used
 * as the broker uses it (journal_mode=WAL, synchronous=NORMAL): a
 * transaction's WAL frames go out in at most a couple of writes, and they
 * are in the file when COMMIT returns (another connection on the default
 * VFS sees them; a process that _exits right after its commits loses
 * nothing); a transaction larger than one unix-VFS write (0x1ffff bytes)
 * commits; cache spills (frames rewritten in place, read back, checksums
 * rewritten at commit, or rolled back) and WAL restarts (TRUNCATE and
 * RESTART checkpoints, by the shim's connection or by another one) leave a
 * database that the default VFS reads back exactly, also after recovering
 * it from the files alone; frames of a rolled-back transaction never land
 * on a transaction another connection committed after it; and a WAL write
 * that fails (RLIMIT_FSIZE) fails that commit, not a later one, and leaves
 * a usable connection and an intact database.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "walvfs.h"

#define ROW_BYTES 200
#define MAX_CONNS 4
#define PAGE_BYTES 4096
#define FRAME_BYTES (24 + PAGE_BYTES)

/* ---- fixture: a temporary directory and the connections open in it ---- */

struct fx {
	char dir[64];
	char db[96];
	char wal[100];
	sqlite3 *conns[MAX_CONNS]; /* closed by teardown if a test fails */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-walvfs-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->db, sizeof(f->db), "%s/coord.db", f->dir);
	snprintf(f->wal, sizeof(f->wal), "%s-wal", f->db);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	for (int i = 0; i < MAX_CONNS; i++)
		sqlite3_close_v2(f->conns[i]);
	nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers that do not assert (also used in forked children) ---- */

/* The 200-byte value of key k in generation gen. */
static void row_value(int64_t k, int gen, unsigned char *out)
{
	for (int i = 0; i < ROW_BYTES; i++)
		out[i] = (unsigned char)(k * 131 + gen * 17 + i * 7 + (k >> 8));
}

/* Opens path.  vfs != NULL: as the broker does (WAL, synchronous=NORMAL)
 * and with the table; NULL: the default VFS, as an outside reader. */
static sqlite3 *db_open(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	bool wal = false;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, 5000);
	if (!vfs)
		return db;
	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
		goto fail;
	wal = sqlite3_step(st) == SQLITE_ROW &&
	      strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
	sqlite3_finalize(st);
	if (!wal)
		goto fail;
	if (sqlite3_exec(db, "PRAGMA synchronous=NORMAL;"
			     "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB NOT NULL)",
			 NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	return db;
fail:
	sqlite3_close_v2(db);
	return NULL;
}

static int insert_rows(sqlite3 *db, int64_t lo, int64_t hi, int gen)
{
	sqlite3_stmt *st;
	unsigned char v[ROW_BYTES];
	int rc = sqlite3_prepare_v2(db, "INSERT INTO t(k, v) VALUES(?, ?)", -1, &st, NULL);

	for (int64_t k = lo; rc == SQLITE_OK && k < hi; k++) {
		row_value(k, gen, v);
		sqlite3_bind_int64(st, 1, k);
		sqlite3_bind_blob(st, 2, v, ROW_BYTES, SQLITE_STATIC);
		rc = sqlite3_step(st);
		rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return rc;
}

/* Sets every step-th row of [lo, hi) to generation gen. */
static int update_rows(sqlite3 *db, int64_t lo, int64_t hi, int step, int gen)
{
	sqlite3_stmt *st;
	unsigned char v[ROW_BYTES];
	int rc = sqlite3_prepare_v2(db, "UPDATE t SET v = ? WHERE k = ?", -1, &st, NULL);

	for (int64_t k = lo; rc == SQLITE_OK && k < hi; k += step) {
		row_value(k, gen, v);
		sqlite3_bind_blob(st, 1, v, ROW_BYTES, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, k);
		rc = sqlite3_step(st);
		rc = rc == SQLITE_DONE && sqlite3_changes(db) == 1 ? SQLITE_OK : rc == SQLITE_DONE ? SQLITE_ERROR : rc;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return rc;
}

/* Rows with lo <= k < hi; -1 on error. */
static int64_t count_rows(sqlite3 *db, int64_t lo, int64_t hi)
{
	sqlite3_stmt *st;
	int64_t n = -1;

	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE k >= ? AND k < ?", -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, lo);
	sqlite3_bind_int64(st, 2, hi);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* Whether [lo, hi) holds exactly one row per key, the rows of generation
 * gen(k) (every step-th key from lo has generation gen2, the others gen).
 * On a mismatch, a description goes to why. */
static bool rows_match(sqlite3 *db, int64_t lo, int64_t hi, int gen, int step, int gen2,
		       char *why, size_t why_len)
{
	sqlite3_stmt *st;
	unsigned char want[ROW_BYTES];
	int64_t k = lo;
	int rc;

	if (sqlite3_prepare_v2(db, "SELECT k, v FROM t WHERE k >= ? AND k < ? ORDER BY k", -1, &st,
			       NULL) != SQLITE_OK) {
		snprintf(why, why_len, "prepare: %s", sqlite3_errmsg(db));
		return false;
	}
	sqlite3_bind_int64(st, 1, lo);
	sqlite3_bind_int64(st, 2, hi);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t got = sqlite3_column_int64(st, 0);

		if (got != k) {
			snprintf(why, why_len, "key %lld where %lld was expected", (long long)got, (long long)k);
			break;
		}
		row_value(k, step > 0 && (k - lo) % step == 0 ? gen2 : gen, want);
		if (sqlite3_column_bytes(st, 1) != ROW_BYTES ||
		    memcmp(sqlite3_column_blob(st, 1), want, ROW_BYTES) != 0) {
			snprintf(why, why_len, "key %lld has the wrong value", (long long)k);
			break;
		}
		k++;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return false;
	if (rc != SQLITE_DONE) {
		snprintf(why, why_len, "step: %s (%d)", sqlite3_errstr(rc), rc);
		return false;
	}
	if (k != hi) {
		snprintf(why, why_len, "rows end at key %lld, expected %lld", (long long)k, (long long)hi);
		return false;
	}
	return true;
}

static bool integrity_ok(sqlite3 *db)
{
	sqlite3_stmt *st;
	bool ok = false;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
		return false;
	ok = sqlite3_step(st) == SQLITE_ROW &&
	     strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0 &&
	     sqlite3_step(st) == SQLITE_DONE;
	sqlite3_finalize(st);
	return ok;
}

static int64_t file_size(const char *path)
{
	struct stat s;

	return stat(path, &s) == 0 ? (int64_t)s.st_size : -1;
}

/* ---- asserting helpers ---- */

static sqlite3 *fx_open(struct fx *f, const char *vfs)
{
	sqlite3 *db = db_open(f->db, vfs);

	if (!db)
		fail_msg("open %s with vfs %s failed", f->db, vfs ? vfs : "(default)");
	for (int i = 0; i < MAX_CONNS; i++) {
		if (!f->conns[i]) {
			f->conns[i] = db;
			return db;
		}
	}
	fail_msg("too many connections");
	return NULL;
}

/* Closes db; ckpt false: without the checkpoint SQLite runs when the last
 * connection closes, so the WAL file stays as it is for the next open to
 * recover from. */
static void fx_close(struct fx *f, sqlite3 *db, bool ckpt)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (f->conns[i] == db)
			f->conns[i] = NULL;
	if (!ckpt)
		assert_int_equal(sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static void insert_ok(sqlite3 *db, int64_t lo, int64_t hi, int gen)
{
	int rc = insert_rows(db, lo, hi, gen);

	if (rc != SQLITE_OK)
		fail_msg("insert [%lld, %lld): %s", (long long)lo, (long long)hi, sqlite3_errmsg(db));
}

static void update_ok(sqlite3 *db, int64_t lo, int64_t hi, int step, int gen)
{
	int rc = update_rows(db, lo, hi, step, gen);

	if (rc != SQLITE_OK)
		fail_msg("update [%lld, %lld): %s", (long long)lo, (long long)hi, sqlite3_errmsg(db));
}

static void expect_rows(sqlite3 *db, int64_t lo, int64_t hi, int gen, int step, int gen2)
{
	char why[160] = "";

	if (!rows_match(db, lo, hi, gen, step, gen2, why, sizeof(why)))
		fail_msg("rows [%lld, %lld): %s", (long long)lo, (long long)hi, why);
}

static void expect_integrity(sqlite3 *db)
{
	if (!integrity_ok(db))
		fail_msg("integrity_check is not \"ok\"");
}

static walvfs_stats stats_now(void)
{
	walvfs_stats s;

	walvfs_get_stats(&s);
	return s;
}

/* Runs PRAGMA wal_checkpoint(mode); asserts it completed (not busy, every
 * frame of the log checkpointed). */
static void checkpoint_ok(sqlite3 *db, const char *mode)
{
	char sql[64];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql), "PRAGMA wal_checkpoint(%s)", mode);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 0); /* not busy */
	assert_int_equal(sqlite3_column_int(st, 1), sqlite3_column_int(st, 2));
	sqlite3_finalize(st);
}

/* Waits for pid; returns its exit status, failing if it did not exit. */
static int child_status(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("child did not exit (status 0x%x)", status);
	return WEXITSTATUS(status);
}

/* ---- tests ---- */

static void test_walvfs_registers_once_not_as_default(void **state)
{
	sqlite3_vfs *def;

	(void)state;
	assert_int_equal(walvfs_register(), SQLITE_OK);
	assert_int_equal(walvfs_register(), SQLITE_OK); /* again: harmless */
	assert_non_null(sqlite3_vfs_find(WALVFS_NAME));
	def = sqlite3_vfs_find(NULL);
	assert_non_null(def);
	assert_string_not_equal(def->zName, WALVFS_NAME);
}

/* 50 rows in one transaction: SQLite writes each frame as two writes, the
 * shim passes on one (at most two) for the commit, and the frames are in
 * the WAL file when COMMIT returns: a default-VFS connection, opened while
 * the writer still is, sees every row. */
static void test_walvfs_commit_coalesced_and_visible(void **state)
{
	struct fx *f = *state;
	sqlite3 *w = fx_open(f, WALVFS_NAME);
	sqlite3 *r;
	walvfs_stats before, after;

	exec_ok(w, "INSERT INTO t VALUES(-1, x'00')"); /* the WAL header is written */
	before = stats_now();
	exec_ok(w, "BEGIN");
	insert_ok(w, 0, 50, 1);
	exec_ok(w, "COMMIT");
	after = stats_now();
	if (after.wal_writes - before.wal_writes < 4)
		fail_msg("SQLite made only %llu WAL writes",
			 (unsigned long long)(after.wal_writes - before.wal_writes));
	if (after.wal_syscalls - before.wal_syscalls > 2)
		fail_msg("%llu WAL writes became %llu writes, expected at most 2",
			 (unsigned long long)(after.wal_writes - before.wal_writes),
			 (unsigned long long)(after.wal_syscalls - before.wal_syscalls));
	assert_true(file_size(f->wal) > 32);

	r = fx_open(f, NULL);
	assert_int_equal(count_rows(r, 0, 50), 50);
	expect_rows(r, 0, 50, 1, 0, 0);
	expect_integrity(r);

	/* and the next commit too, with the reader kept open */
	exec_ok(w, "BEGIN");
	insert_ok(w, 50, 100, 2);
	exec_ok(w, "COMMIT");
	expect_rows(r, 50, 100, 2, 0, 0);
	fx_close(f, r, true);
	fx_close(f, w, true);
}

/* A transaction of ~640 KB of frames: the shim never hands the unix VFS a
 * write of more than 0x1ffff bytes (it would come back short: SQLITE_FULL),
 * yet still coalesces. */
static void test_walvfs_big_transaction(void **state)
{
	struct fx *f = *state;
	sqlite3 *w = fx_open(f, WALVFS_NAME);
	sqlite3 *r;
	walvfs_stats before, after;
	uint64_t writes, syscalls;
	int64_t wal_before = file_size(f->wal);

	before = stats_now();
	exec_ok(w, "BEGIN");
	insert_ok(w, 0, 3000, 1);
	assert_int_equal(sqlite3_exec(w, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	after = stats_now();
	writes = after.wal_writes - before.wal_writes;
	syscalls = after.wal_syscalls - before.wal_syscalls;
	/* more than one buffer's worth of frames went to the file ... */
	assert_true(file_size(f->wal) - (wal_before > 0 ? wal_before : 0) > 4 * WALVFS_BUF_BYTES);
	assert_true(syscalls >= 4);
	/* ... in far fewer writes than SQLite made */
	if (syscalls * 10 > writes)
		fail_msg("%llu writes became %llu", (unsigned long long)writes, (unsigned long long)syscalls);

	r = fx_open(f, NULL);
	assert_int_equal(count_rows(r, INT64_MIN, INT64_MAX), 3000);
	expect_rows(r, 0, 3000, 1, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);
	/* the files alone hold it */
	fx_close(f, w, false);
	r = fx_open(f, NULL);
	expect_rows(r, 0, 3000, 1, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);
}

/* cache_size=5: pages spill into the WAL mid-transaction, are read back,
 * rewritten in place (the frame is not committed yet) and get their
 * checksums rewritten at commit.  Then a spilling transaction that is
 * rolled back, and a small one committed after it. */
static void test_walvfs_cache_spill_commit_and_rollback(void **state)
{
	struct fx *f = *state;
	sqlite3 *w = fx_open(f, WALVFS_NAME);
	sqlite3 *r;
	walvfs_stats before, mid, after;
	int64_t wal0, wal1;

	exec_ok(w, "PRAGMA cache_size=5");
	exec_ok(w, "INSERT INTO t VALUES(-1, x'00')");
	wal0 = file_size(f->wal);

	before = stats_now();
	exec_ok(w, "BEGIN");
	insert_ok(w, 0, 2000, 1);
	mid = stats_now();
	assert_true(mid.wal_writes - before.wal_writes > 50); /* it did spill */
	/* read back through the shim: the last pages spilled first */
	expect_rows(w, 1800, 2000, 1, 0, 0);
	expect_rows(w, 0, 2000, 1, 0, 0);
	update_ok(w, 0, 2000, 3, 2); /* every third row again: pages already spilled */
	expect_rows(w, 0, 2000, 1, 3, 2);
	exec_ok(w, "COMMIT");
	after = stats_now();
	wal1 = file_size(f->wal);
	/* Appending frames costs two writes each; more than that means frames
	 * were rewritten in place (and checksums at commit). */
	if (after.wal_writes - before.wal_writes <= 2 * (uint64_t)((wal1 - wal0) / FRAME_BYTES))
		fail_msg("no in-place rewrite: %llu writes for %lld new frames",
			 (unsigned long long)(after.wal_writes - before.wal_writes),
			 (long long)((wal1 - wal0) / FRAME_BYTES));

	r = fx_open(f, NULL);
	expect_rows(r, 0, 2000, 1, 3, 2);
	expect_integrity(r);

	/* spill, then roll back */
	exec_ok(w, "BEGIN");
	insert_ok(w, 10000, 12000, 3);
	update_ok(w, 0, 2000, 2, 4);
	exec_ok(w, "DELETE FROM t WHERE k >= 1000 AND k < 1100");
	exec_ok(w, "ROLLBACK");
	expect_rows(w, 0, 2000, 1, 3, 2);
	assert_int_equal(count_rows(w, 2000, INT64_MAX), 0);
	exec_ok(w, "BEGIN");
	insert_ok(w, 20000, 20010, 5);
	exec_ok(w, "COMMIT");

	expect_rows(r, 0, 2000, 1, 3, 2);
	assert_int_equal(count_rows(r, 2000, 20000), 0);
	expect_rows(r, 20000, 20010, 5, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);

	/* recovered from the files alone (checksum chain included) */
	fx_close(f, w, false);
	assert_true(file_size(f->wal) > 0);
	r = fx_open(f, NULL);
	expect_rows(r, 0, 2000, 1, 3, 2);
	assert_int_equal(count_rows(r, 2000, 20000), 0);
	expect_rows(r, 20000, 20010, 5, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);
}

/* The WAL starts again from offset 0 after a TRUNCATE or RESTART
 * checkpoint, run by the shim's own connection or by another one (then
 * the shim does not see the truncate). */
static void test_walvfs_wal_restart(void **state)
{
	struct fx *f = *state;
	sqlite3 *w = fx_open(f, WALVFS_NAME);
	sqlite3 *r = fx_open(f, NULL);
	int64_t next = 0;

	exec_ok(w, "PRAGMA wal_autocheckpoint=0");
	exec_ok(r, "PRAGMA wal_autocheckpoint=0");
	for (int round = 0; round < 6; round++) {
		bool truncate = round % 2 == 0;
		sqlite3 *ckpt = (round / 2) % 2 ? r : w;
		int64_t wal_before;

		exec_ok(w, "BEGIN");
		insert_ok(w, next, next + 60, round);
		exec_ok(w, "COMMIT");
		next += 60;
		checkpoint_ok(ckpt, truncate ? "TRUNCATE" : "RESTART");
		wal_before = file_size(f->wal);
		if (truncate)
			assert_int_equal(wal_before, 0);
		else
			assert_true(wal_before >= 32 + 4 * FRAME_BYTES);

		exec_ok(w, "BEGIN");
		insert_ok(w, next, next + 5, 100 + round);
		exec_ok(w, "COMMIT");
		next += 5;
		if (truncate) {
			assert_true(file_size(f->wal) >= 32 + FRAME_BYTES);
		} else if (file_size(f->wal) != wal_before) {
			/* the frames went to the start of the log, not after it */
			fail_msg("round %d: WAL grew from %lld to %lld after RESTART", round,
				 (long long)wal_before, (long long)file_size(f->wal));
		}
		for (int i = 0; i <= round; i++) {
			expect_rows(r, i * 65, i * 65 + 60, i, 0, 0);
			expect_rows(r, i * 65 + 60, i * 65 + 65, 100 + i, 0, 0);
		}
		assert_int_equal(count_rows(r, INT64_MIN, INT64_MAX), next);
		expect_integrity(r);
	}
	/* after a RESTART the log holds new frames followed by old ones: the
	 * files alone must give the latest state */
	fx_close(f, r, false);
	fx_close(f, w, false);
	r = fx_open(f, NULL);
	assert_int_equal(count_rows(r, INT64_MIN, INT64_MAX), next);
	for (int i = 0; i < 6; i++) {
		expect_rows(r, i * 65, i * 65 + 60, i, 0, 0);
		expect_rows(r, i * 65 + 60, i * 65 + 65, 100 + i, 0, 0);
	}
	expect_integrity(r);
	fx_close(f, r, true);
}

/* A transaction that spilled pages and was rolled back may leave frames
 * that nobody will commit; another connection (here the default VFS, as
 * the sqlite3 shell would be) then writes the next transaction at the same
 * offsets of the WAL.  Whatever the shim still held of the rolled-back
 * transaction must not land on top of that committed one, neither when the
 * shim's connection reads next nor when it closes. */
static void test_walvfs_rollback_then_other_writer(void **state)
{
	struct fx *f = *state;
	sqlite3 *w = fx_open(f, WALVFS_NAME);
	sqlite3 *r = fx_open(f, NULL);

	exec_ok(w, "PRAGMA cache_size=50");
	exec_ok(w, "BEGIN");
	insert_ok(w, 0, 500, 1);
	exec_ok(w, "COMMIT");
	/* log empty: the next transaction starts it again at offset 0, and
	 * its rollback reads page 1 from the database file, not the WAL */
	checkpoint_ok(w, "TRUNCATE");
	exec_ok(w, "BEGIN");
	insert_ok(w, 1000, 3000, 2); /* spills */
	exec_ok(w, "ROLLBACK");

	exec_ok(r, "BEGIN");
	insert_ok(r, 5000, 8000, 3);
	exec_ok(r, "COMMIT");
	expect_rows(r, 5000, 8000, 3, 0, 0);

	/* the shim's connection reads the other's commit */
	expect_rows(w, 0, 500, 1, 0, 0);
	assert_int_equal(count_rows(w, 500, 5000), 0);
	expect_rows(w, 5000, 8000, 3, 0, 0);
	expect_integrity(w);
	fx_close(f, w, true);

	expect_rows(r, 0, 500, 1, 0, 0);
	expect_rows(r, 5000, 8000, 3, 0, 0);
	expect_integrity(r);
	/* and the files alone */
	fx_close(f, r, false);
	r = fx_open(f, NULL);
	expect_rows(r, 0, 500, 1, 0, 0);
	assert_int_equal(count_rows(r, 500, 5000), 0);
	expect_rows(r, 5000, 8000, 3, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);
}

#define CRASH_TXNS 20
#define CRASH_ROWS 5

/* A process that commits and then dies (_exit, no close, no checkpoint)
 * loses none of its commits: nothing stays in the shim's buffer. */
static void test_walvfs_commits_survive_exit(void **state)
{
	struct fx *f = *state;
	sqlite3 *r;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		sqlite3 *db = db_open(f->db, WALVFS_NAME);

		if (!db)
			_exit(10);
		for (int i = 0; i < CRASH_TXNS; i++) {
			if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
			    insert_rows(db, i * CRASH_ROWS, (i + 1) * CRASH_ROWS, i) != SQLITE_OK ||
			    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
				_exit(11);
		}
		_exit(0); /* the db is left open */
	}
	assert_int_equal(child_status(pid), 0);
	/* the rows are in the WAL, not in the database file */
	assert_true(file_size(f->wal) >= 32 + CRASH_TXNS * FRAME_BYTES);

	r = fx_open(f, NULL);
	assert_int_equal(count_rows(r, INT64_MIN, INT64_MAX), CRASH_TXNS * CRASH_ROWS);
	for (int i = 0; i < CRASH_TXNS; i++)
		expect_rows(r, i * CRASH_ROWS, (i + 1) * CRASH_ROWS, i, 0, 0);
	expect_integrity(r);
	fx_close(f, r, true);
}

/* Exit codes of the write-failure child. */
enum {
	WF_OK = 0,
	WF_OPEN = 20,
	WF_FIRST_TXN,
	WF_RLIMIT,
	WF_BIG_TXN_OK,     /* the transaction over the limit committed */
	WF_BIG_TXN_ERR,    /* it failed, but not with a write error */
	WF_STILL_IN_TXN,
	WF_RAISE,
	WF_AFTER_TXN,      /* the next small transaction failed */
	WF_ROWS,           /* wrong rows seen by the child */
	WF_INTEGRITY,
};

static int write_failure_child(const char *db_path, const char *wal_path)
{
	char why[160] = "";
	struct rlimit old, low;
	int64_t top = 0, sizes[3];
	char shm[128];
	sqlite3 *db;
	int rc;

	signal(SIGXFSZ, SIG_IGN);
	db = db_open(db_path, WALVFS_NAME);
	if (!db)
		return WF_OPEN;
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK || insert_rows(db, 0, 20, 1) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return WF_FIRST_TXN;

	/* A limit just above every file SQLite has: the WAL cannot grow by
	 * the ~400 KB the next transaction needs. */
	snprintf(shm, sizeof(shm), "%s-shm", db_path);
	sizes[0] = file_size(db_path), sizes[1] = file_size(wal_path), sizes[2] = file_size(shm);
	for (int i = 0; i < 3; i++)
		top = sizes[i] > top ? sizes[i] : top;
	if (getrlimit(RLIMIT_FSIZE, &old) != 0)
		return WF_RLIMIT;
	low = old;
	low.rlim_cur = (rlim_t)top + 2 * FRAME_BYTES;
	if (setrlimit(RLIMIT_FSIZE, &low) != 0)
		return WF_RLIMIT;

	rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = insert_rows(db, 1000, 3000, 2);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return WF_BIG_TXN_OK;
	if ((rc & 0xff) != SQLITE_IOERR && (rc & 0xff) != SQLITE_FULL) {
		fprintf(stderr, "walvfs write-failure child: %s (%d)\n", sqlite3_errstr(rc), rc);
		return WF_BIG_TXN_ERR;
	}
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	if (!sqlite3_get_autocommit(db))
		return WF_STILL_IN_TXN;

	low.rlim_cur = old.rlim_cur; /* raising the soft limit back is allowed */
	if (setrlimit(RLIMIT_FSIZE, &low) != 0)
		return WF_RAISE;
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    insert_rows(db, 5000, 5010, 3) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		fprintf(stderr, "walvfs write-failure child: %s\n", sqlite3_errmsg(db));
		return WF_AFTER_TXN;
	}
	if (!rows_match(db, 0, 20, 1, 0, 0, why, sizeof(why)) || count_rows(db, 20, 5000) != 0 ||
	    !rows_match(db, 5000, 5010, 3, 0, 0, why, sizeof(why))) {
		fprintf(stderr, "walvfs write-failure child: %s\n", why);
		return WF_ROWS;
	}
	if (!integrity_ok(db))
		return WF_INTEGRITY;
	return WF_OK; /* the db is left open: the parent recovers the WAL */
}

/* The WAL cannot grow (RLIMIT_FSIZE, SIGXFSZ ignored: EFBIG): the commit
 * that needs the space fails, the connection goes on, the next commit
 * works, and nothing of the failed one is visible, then or after recovery
 * (the failed frames' remains in the WAL file stay outside the log). */
static void test_walvfs_write_failure_fails_commit(void **state)
{
	struct fx *f = *state;
	sqlite3 *r;
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(write_failure_child(f->db, f->wal));
	status = child_status(pid);
	if (status != WF_OK)
		fail_msg("write-failure child exited with %d", status);

	r = fx_open(f, NULL);
	expect_rows(r, 0, 20, 1, 0, 0);
	assert_int_equal(count_rows(r, 20, 5000), 0);
	expect_rows(r, 5000, 5010, 3, 0, 0);
	assert_int_equal(count_rows(r, INT64_MIN, INT64_MAX), 30);
	expect_integrity(r);
	fx_close(f, r, true);
}

static int group_setup(void **state)
{
	(void)state;
	return walvfs_register() == SQLITE_OK ? 0 : -1;
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_walvfs_registers_once_not_as_default),
		T(test_walvfs_commit_coalesced_and_visible),
		T(test_walvfs_big_transaction),
		T(test_walvfs_cache_spill_commit_and_rollback),
		T(test_walvfs_wal_restart),
		T(test_walvfs_rollback_then_other_writer),
		T(test_walvfs_commits_survive_exit),
		T(test_walvfs_write_failure_fails_commit),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
