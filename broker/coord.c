/*
 * coord.c — see coord.h.
 *
 * Schema, version 8 (PRAGMA user_version = 8; version 2 added
 * group_offsets, documented in group.c; version 3 the transaction tables,
 * documented in txn/halfstore.c; version 4 rewrote txn_half's CHECK,
 * halfstore_schema_v2; version 5 added txn_half.dead_letter_offset,
 * halfstore_schema_v3; version 6 the index txn_half_unsynced,
 * halfstore_schema_v4; version 7 numbered dead-letter copies,
 * halfstore_schema_v5; version 8 the table txn_dead_topic,
 * halfstore_schema_v6).  Change it only by adding a
 * migration step in schema_upgrade() and bumping the version; document the
 * tables in docs/storage.md.
 *
 *   topics(name TEXT PRIMARY KEY, partitions INTEGER, topic_id BLOB,
 *          created_ms INTEGER)
 *   topic_configs(topic TEXT, key TEXT, value TEXT, PRIMARY KEY(topic, key))
 *   meta(key TEXT PRIMARY KEY, value TEXT)
 */
#include "coord.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blog.h"
#include "halfstore.h"
#include "stmtcache.h"
#include "walvfs.h"

#define SCHEMA_VERSION 8

/* Threads: the coordinator runs batches (SQL and a COMMIT that only writes
 * the WAL: synchronous=NORMAL) and queues them for the WAL syncer(s).  A
 * syncer takes everything committed so far as one "round", fdatasyncs the
 * WAL, and then the rounds complete strictly in the order they were taken:
 * after_commit hooks in job order, then the jobs' done.  So a job is only
 * answered once its commit is durable (as with synchronous=FULL), the
 * coordinator executes the next batch while the previous one syncs (group
 * commit across batches).  With more than one syncer a round committed
 * while a sync is in flight starts its own at once instead of waiting for
 * that one to end; a later round's sync also covers every earlier write, so
 * completing in round order never answers anything that is not durable.
 * One syncer is the default since the COMMITTED marks stopped asking for
 * syncs: two overlapping fdatasyncs of the one WAL file each took about
 * 1.5x as long as one alone (the second waits for the first's pages), and
 * one syncer ran 0.99-1.33x (median 1.06x) the transaction rate of two at
 * 32 in flight, 1.08x at 128, 0.97-0.98x in fsync durability
 * (docs/benchmarks.md, session 6). */
#define SYNCERS 1
#define ROUND_SLOTS 4 /* > SYNCERS: a round per syncer in flight at most */

/* Checkpoints (copying the WAL's pages into the database file, then
 * fdatasync of it) mostly run on a thread and connection of their own, the
 * checkpointer: a PASSIVE checkpoint every CKPT_INTERVAL_MS, which never
 * blocks the coordinator.  It cannot restart the WAL — only a writer does,
 * at its first commit after a complete checkpoint, and the coordinator
 * commits all the time — so the coordinator keeps SQLite's automatic
 * checkpoint, at CKPT_AUTO_PAGES instead of 1000 frames: by then the
 * checkpointer has copied nearly everything and the coordinator's
 * checkpoint, which restarts the WAL, is short.  SQLite's default (every
 * 1000 frames, all on the coordinator: ~2.5 ms six times a second under
 * a transactional load, every job waiting) put the p99 of a transaction's
 * end at 3.3-4.5 ms; with this 1.4-1.9 ms (docs/benchmarks.md, session 5).
 * The WAL stays below about CKPT_AUTO_PAGES x 4 KiB. */
#define CKPT_INTERVAL_MS 200
#define CKPT_AUTO_PAGES 10000
#define STR_(x) #x
#define STR(x) STR_(x)

struct round {
	coord_job *jobs;
	int rc;
	bool synced;
};

struct coord {
	sqlite3 *db;               /* owned; main before start, then under dblock */
	pthread_mutex_t dblock;    /* held by whoever uses db after start */
	int wal_fd;                /* "<db>-wal", for fdatasync; -1: FULL sync in SQLite */
	atomic_int wal_sync_err;   /* errno of the first failed WAL sync, then
				      for good (sync_wal) */
	pthread_t thread, sync_threads[SYNCERS];
	int nsyncers;
	bool started;
	pthread_mutex_t lock;      /* protects the two queues and stop */
	pthread_cond_t cond;
	coord_job *head, *tail;    /* coord_submit */
	coord_job *lhead, *ltail;  /* coord_submit_lazy */
	uint64_t lazy_since;       /* when lhead was queued (mono ns) */
	bool head_after_lazy;      /* a queued job has after_lazy */
	bool stop;
	pthread_mutex_t slock;     /* protects everything below */
	pthread_cond_t scond;
	coord_job *shead, *stail;  /* committed, waiting for a syncer */
	bool sstop;
	uint64_t next_round;       /* ticket of the next round taken */
	uint64_t next_done;        /* the round to complete next */
	bool completing;           /* a syncer is running completions */
	struct round rounds[ROUND_SLOTS]; /* by ticket % ROUND_SLOTS */
	void (*round_hook)(void *arg);    /* set before start, then read-only */
	void *round_arg;
	/* Where a job's time goes (logged at close, docs/benchmarks.md):
	 * batches by the coordinator thread; rounds under slock. */
	uint64_t n_batches, batch_jobs, batch_ns;
	uint64_t n_started, start_wait_ns; /* coord_submit's jobs: submit to batch start */
	uint64_t n_rounds, round_jobs, queued_ns, sync_ns, complete_ns;
	uint64_t shead_since;      /* under slock: when shead got its oldest job */
	/* The checkpointer: its thread owns ckpt_db; the rest under ckpt_lock. */
	char *path;                /* owned: the database, for ckpt_db */
	const char *vfs;           /* both connections': walvfs, or NULL */
	sqlite3 *ckpt_db;
	pthread_t ckpt_thread;
	bool ckpt_started;
	pthread_mutex_t ckpt_lock;
	pthread_cond_t ckpt_cond;
	bool ckpt_stop;
	uint64_t n_ckpt, ckpt_ns;  /* checkpointer thread; read after join */
	/* under slock: jobs with an after_commit handed to the syncers and
	 * not completed yet (while > 0, no job completes early) */
	uint64_t hooked_pending;
	uint64_t n_early;          /* coordinator thread: jobs completed early */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t count_jobs(const coord_job *j)
{
	uint64_t n = 0;

	for (; j; j = j->next)
		n++;
	return n;
}

static const char schema_v1[] =
	"CREATE TABLE IF NOT EXISTS topics("
	"  name TEXT PRIMARY KEY, partitions INTEGER NOT NULL,"
	"  topic_id BLOB NOT NULL, created_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS topic_configs("
	"  topic TEXT NOT NULL, key TEXT NOT NULL, value TEXT,"
	"  PRIMARY KEY(topic, key));"
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);";

static const char schema_v2[] =
	"CREATE TABLE IF NOT EXISTS group_offsets("
	"  group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,"
	"  committed_offset INTEGER NOT NULL, leader_epoch INTEGER NOT NULL,"
	"  metadata TEXT, commit_ms INTEGER NOT NULL,"
	"  PRIMARY KEY(group_id, topic, partition)) WITHOUT ROWID;";

static int exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		blog(BLOG_ERROR, "sqlite: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return rc;
}

static int user_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* One migration step done in C (step returns 0 or -errno), in its own
 * transaction with the new user_version.  0, or -1 (logged; rolled back). */
static int migrate(sqlite3 *db, int version, int (*step)(sqlite3 *db), const char *what)
{
	char bump[48];
	int rc;

	if (exec(db, "BEGIN"))
		return -1;
	rc = step(db);
	if (rc < 0) {
		blog(BLOG_ERROR, "sluice.db: cannot %s: %s", what, strerror(-rc));
		exec(db, "ROLLBACK");
		return -1;
	}
	snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", version);
	return exec(db, bump) || exec(db, "COMMIT") ? -1 : 0;
}

static int schema_upgrade(sqlite3 *db)
{
	int v = user_version(db);

	if (v < 0)
		return -1;
	if (v > SCHEMA_VERSION) {
		blog(BLOG_ERROR, "sluice.db has schema version %d, newer than this sluiced (%d)", v,
		     SCHEMA_VERSION);
		return -1;
	}
	if (v < 1) {
		if (exec(db, "BEGIN") || exec(db, schema_v1) || exec(db, "PRAGMA user_version = 1") ||
		    exec(db, "COMMIT"))
			return -1;
	}
	if (v < 2) {
		if (exec(db, "BEGIN") || exec(db, schema_v2) || exec(db, "PRAGMA user_version = 2") ||
		    exec(db, "COMMIT"))
			return -1;
	}
	if (v < 3) {
		if (exec(db, "BEGIN") || exec(db, halfstore_schema_sql) ||
		    exec(db, "PRAGMA user_version = 3") || exec(db, "COMMIT"))
			return -1;
	}
	/* halfstore schema versions 2 to 6 */
	if (v < 4 && migrate(db, 4, halfstore_schema_v2, "rewrite txn_half's CHECK"))
		return -1;
	if (v < 5 && migrate(db, 5, halfstore_schema_v3, "add txn_half.dead_letter_offset"))
		return -1;
	if (v < 6 && migrate(db, 6, halfstore_schema_v4, "add the index txn_half_unsynced"))
		return -1;
	if (v < 7 && migrate(db, 7, halfstore_schema_v5, "number the dead-letter copies"))
		return -1;
	if (v < 8 && migrate(db, 8, halfstore_schema_v6, "add the table txn_dead_topic"))
		return -1;
	return 0;
}

/* Waits on cv (m held) for at most ns nanoseconds. */
static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *m, uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts); /* the condvars' clock */
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec += (long)(ns % 1000000000u);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(cv, m, &ts);
}

static void *ckpt_main(void *arg)
{
	coord *c = arg;

	pthread_setname_np(pthread_self(), "sl-checkpoint");

	pthread_mutex_lock(&c->ckpt_lock);
	while (!c->ckpt_stop) {
		uint64_t t0;
		int rc, wal = -1;

		timed_wait(&c->ckpt_cond, &c->ckpt_lock, (uint64_t)CKPT_INTERVAL_MS * 1000000u);
		if (c->ckpt_stop)
			break;
		pthread_mutex_unlock(&c->ckpt_lock);
		t0 = mono_ns();
		rc = sqlite3_wal_checkpoint_v2(c->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal, NULL);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			BLOG_RL(BLOG_ERROR, "sqlite checkpoint of sluice.db: %s", sqlite3_errmsg(c->ckpt_db));
		else if (rc == SQLITE_OK && wal < 0)
			BLOG_RL(BLOG_ERROR, "sqlite checkpoint of sluice.db: not in WAL mode");
		c->n_ckpt++;
		c->ckpt_ns += mono_ns() - t0;
		pthread_mutex_lock(&c->ckpt_lock);
	}
	pthread_mutex_unlock(&c->ckpt_lock);
	return NULL;
}

/* Opens the checkpointer's connection and starts its thread; if it cannot
 * (logged), SQLite checkpoints on the coordinator as by default. */
static void start_checkpointer(coord *c)
{
	int rc = sqlite3_open_v2(c->path, &c->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				 c->vfs);

	/* a connection learns that the database is in WAL mode when it first
	 * reads it; until then a checkpoint does nothing */
	if (rc == SQLITE_OK)
		rc = exec(c->ckpt_db, "SELECT 1 FROM sqlite_master LIMIT 1");
	if (rc == SQLITE_OK) {
		rc = pthread_create(&c->ckpt_thread, NULL, ckpt_main, c);
		c->ckpt_started = rc == 0;
		if (rc == 0)
			return;
	}
	blog(BLOG_WARN, "no checkpointer thread (%s): SQLite checkpoints on the coordinator",
	     c->ckpt_db ? sqlite3_errmsg(c->ckpt_db) : "out of memory");
	sqlite3_close(c->ckpt_db);
	c->ckpt_db = NULL;
	exec(c->db, "PRAGMA wal_autocheckpoint=1000"); /* SQLite's default */
}

static void stop_checkpointer(coord *c)
{
	if (!c->ckpt_started)
		return;
	pthread_mutex_lock(&c->ckpt_lock);
	c->ckpt_stop = true;
	pthread_cond_signal(&c->ckpt_cond);
	pthread_mutex_unlock(&c->ckpt_lock);
	pthread_join(c->ckpt_thread, NULL);
	c->ckpt_started = false;
	/* closed first: the coordinator's close, the last one, checkpoints
	 * the rest and removes the WAL */
	sqlite3_close(c->ckpt_db);
	c->ckpt_db = NULL;
}

static void destroy_sync(coord *c)
{
	if (c->wal_fd >= 0)
		close(c->wal_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->slock);
	pthread_cond_destroy(&c->scond);
	pthread_mutex_destroy(&c->dblock);
	pthread_mutex_destroy(&c->ckpt_lock);
	pthread_cond_destroy(&c->ckpt_cond);
	free(c->path);
}

/* Opens the WAL file for our own fdatasync and switches SQLite to
 * synchronous=NORMAL (commits write the WAL, checkpoints still sync).  The
 * WAL stays the same file while the database is open: fdatasync on our
 * descriptor flushes what SQLite wrote through its own.  On failure SQLite
 * keeps syncing each commit itself. */
static void open_wal(coord *c, const char *path)
{
	char wal[4096];

	if (snprintf(wal, sizeof(wal), "%s-wal", path) >= (int)sizeof(wal))
		return;
	c->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
	if (c->wal_fd < 0) {
		blog(BLOG_WARN, "open %s: %s; SQLite syncs each commit itself", wal, strerror(errno));
		return;
	}
	if (exec(c->db, "PRAGMA synchronous=NORMAL")) {
		close(c->wal_fd);
		c->wal_fd = -1;
	}
}

int coord_open(const char *path, coord **out)
{
	coord *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -1;
	c->wal_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_mutex_init(&c->slock, NULL);
	pthread_cond_init(&c->scond, NULL);
	pthread_mutex_init(&c->dblock, NULL);
	pthread_mutex_init(&c->ckpt_lock, NULL);
	pthread_cond_init(&c->ckpt_cond, NULL);
	c->path = strdup(path);
	if (!c->path)
		goto fail;
	/* No allocation statistics: they take a global mutex on every SQLite
	 * malloc (6 % of the coordinator's time).  Refused, harmlessly, if
	 * SQLite is initialised already. */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	/* One write per commit for the WAL frames (walvfs.h); plain SQLite if
	 * the shim cannot register. */
	c->vfs = walvfs_register() == SQLITE_OK ? WALVFS_NAME : NULL;
	rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			     c->vfs);
	if (rc != SQLITE_OK) {
		blog(BLOG_ERROR, "open %s: %s", path, sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(c->db, 5000);
	/* WAL + synchronous=FULL until the WAL file can be synced from outside
	 * (open_wal): "durable before the reply" either way. */
	if (exec(c->db, "PRAGMA journal_mode=WAL") || exec(c->db, "PRAGMA synchronous=FULL") ||
	    exec(c->db, "PRAGMA foreign_keys=ON") || schema_upgrade(c->db))
		goto fail;
	open_wal(c, path);
	/* checkpoints: mostly by the checkpointer (coord_start) */
	if (exec(c->db, "PRAGMA wal_autocheckpoint=" STR(CKPT_AUTO_PAGES)))
		goto fail;
	*out = c;
	return 0;
fail:
	sqlite3_close(c->db);
	destroy_sync(c);
	free(c);
	return -1;
}

sqlite3 *coord_db(coord *c)
{
	return c->db;
}

/* exec() for the fixed statements of every batch, through the statement
 * cache (compiling them each time showed in the profile). */
static int exec_cached(sqlite3 *db, const char *sql)
{
	int rc = stmtcache_exec(db, sql);

	if (rc != SQLITE_OK)
		blog(BLOG_ERROR, "sqlite: %s: %s", sql, sqlite3_errmsg(db));
	return rc;
}

static uint64_t count_hooked(const coord_job *j)
{
	uint64_t n = 0;

	for (; j; j = j->next)
		n += j->after_commit != NULL;
	return n;
}

static void run_batch(coord *c, coord_job *jobs)
{
	bool in_tx = exec_cached(c->db, "BEGIN IMMEDIATE") == SQLITE_OK;
	int rc;

	for (coord_job *j = jobs; j; j = j->next) {
		if (!in_tx) {
			j->rc = SQLITE_ERROR;
			continue;
		}
		j->early = false;
		if (j->atomic) {
			j->rc = j->run(j, c->db);
			continue;
		}
		exec_cached(c->db, "SAVEPOINT job");
		j->rc = j->run(j, c->db);
		if (j->rc != SQLITE_OK)
			exec_cached(c->db, "ROLLBACK TO job");
		exec_cached(c->db, "RELEASE job");
	}
	if (in_tx) {
		rc = exec_cached(c->db, "COMMIT");
		if (rc != SQLITE_OK) {
			exec_cached(c->db, "ROLLBACK");
			for (coord_job *j = jobs; j; j = j->next)
				if (j->rc == SQLITE_OK)
					j->rc = rc;
		}
	}
}

/* Appends the chain first..last to a queue (its lock held). */
static void append_jobs(coord_job **head, coord_job **tail, coord_job *first, coord_job *last)
{
	if (*tail)
		(*tail)->next = first;
	else
		*head = first;
	*tail = last;
}

#define LAZY_NS ((uint64_t)COORD_LAZY_MS * 1000000u)

/* lock held: waits for the next batch and takes it (*last: its tail), or
 * returns NULL once stopping with nothing queued.  Jobs of coord_submit
 * first; the lazy ones go with them (before them) only once they have
 * waited COORD_LAZY_MS or when one of them is after_lazy, and otherwise in
 * a batch of their own when nothing else is
 * queued — at once if the coordinator has just run a batch (ran), else
 * after COORD_LAZY_MS — so they do not lengthen the batches others wait
 * for. */
static coord_job *take_work(coord *c, bool ran, coord_job **last)
{
	for (;;) {
		uint64_t now = mono_ns();
		bool lazy_old = c->lhead && now - c->lazy_since >= LAZY_NS;
		coord_job *jobs;

		if (c->head || (c->lhead && (ran || lazy_old || c->stop))) {
			if (c->lhead && (!c->head || lazy_old || c->head_after_lazy)) {
				/* lazy first: queued before the after_lazy job */
				jobs = c->lhead;
				*last = c->ltail;
				(*last)->next = c->head;
				c->lhead = c->ltail = NULL;
			} else {
				jobs = c->head;
			}
			if (c->head)
				*last = c->tail;
			c->head = c->tail = NULL;
			c->head_after_lazy = false;
			return jobs;
		}
		if (c->stop)
			return NULL;
		ran = false; /* from now on the coordinator has been idle */
		if (!c->lhead) {
			pthread_cond_wait(&c->cond, &c->lock);
			continue;
		}
		/* only lazy jobs: not worth a wake-up of their own yet (> 0:
		 * not lazy_old) */
		timed_wait(&c->cond, &c->lock, c->lazy_since + LAZY_NS - now);
	}
}

static void complete_round(coord *c, coord_job *jobs, int rc);

/* True if the committed batch jobs may complete its early jobs now: some
 * are early, no late job of the batch has an after_commit, and no earlier
 * round with one is waiting for its sync (hooks run in job order). */
static bool early_allowed(coord *c, const coord_job *jobs)
{
	bool any = false, ok;

	for (const coord_job *j = jobs; j; j = j->next) {
		bool early = j->early && j->rc == SQLITE_OK;

		if (!early && j->after_commit)
			return false;
		any |= early;
	}
	if (!any)
		return false;
	pthread_mutex_lock(&c->slock);
	ok = c->hooked_pending == 0;
	pthread_mutex_unlock(&c->slock);
	return ok;
}

/* Coordinator thread, after the batch's COMMIT: takes the early jobs
 * (coord_job.early) out of *jobs if they may complete now, and returns
 * them; *jobs keeps the others, in order, for the syncers (*last: its new
 * tail). */
static coord_job *take_early(coord *c, coord_job **jobs, coord_job **last)
{
	coord_job *early = NULL, **etail = &early, **ltail = jobs, *next;

	if (!early_allowed(c, *jobs))
		return NULL;
	*last = NULL;
	for (coord_job *j = *jobs; j; j = next) {
		next = j->next;
		j->next = NULL;
		if (j->early && j->rc == SQLITE_OK) {
			*etail = j;
			etail = &j->next;
			c->n_early++;
		} else {
			*ltail = j;
			ltail = &j->next;
			*last = j;
		}
	}
	*ltail = NULL;
	return early;
}

/* Statistics of a batch about to run at t0 (coordinator thread): its jobs,
 * and how long coord_submit's ones waited for it. */
static void note_batch_start(coord *c, const coord_job *jobs, uint64_t t0)
{
	c->n_batches++;
	for (const coord_job *j = jobs; j; j = j->next) {
		c->batch_jobs++;
		if (j->queued_ns) {
			c->n_started++;
			c->start_wait_ns += t0 - j->queued_ns;
		}
	}
}

/* Hands committed jobs..last to the WAL-sync threads. */
static void hand_to_syncers(coord *c, coord_job *jobs, coord_job *last)
{
	uint64_t hooked = count_hooked(jobs);

	pthread_mutex_lock(&c->slock);
	if (!c->shead)
		c->shead_since = mono_ns();
	c->hooked_pending += hooked;
	append_jobs(&c->shead, &c->stail, jobs, last);
	pthread_cond_signal(&c->scond);
	pthread_mutex_unlock(&c->slock);
}

static void *coord_main(void *arg)
{
	coord *c = arg;
	bool ran = false;

	pthread_setname_np(pthread_self(), "sl-coord");

	for (;;) {
		coord_job *jobs, *last = NULL, *early;
		bool stop;

		pthread_mutex_lock(&c->lock);
		jobs = take_work(c, ran, &last);
		stop = c->stop;
		pthread_mutex_unlock(&c->lock);
		ran = jobs != NULL;
		if (jobs) {
			uint64_t t0 = mono_ns();

			note_batch_start(c, jobs, t0);
			pthread_mutex_lock(&c->dblock);
			run_batch(c, jobs);
			pthread_mutex_unlock(&c->dblock);
			c->batch_ns += mono_ns() - t0;
			early = take_early(c, &jobs, &last);
			/* the others' sync first: it is the longer wait */
			if (jobs)
				hand_to_syncers(c, jobs, last);
			if (early)
				complete_round(c, early, SQLITE_OK);
		} else if (stop) {
			break;
		}
	}
	pthread_mutex_lock(&c->dblock);
	stmtcache_forget(c->db); /* this thread's statements */
	pthread_mutex_unlock(&c->dblock);
	return NULL;
}

/* fdatasync of the WAL: everything committed before it is durable.
 * Returns 0 or an SQLite error code.  A failure is for good: Linux reports
 * a writeback error once and may drop the pages it could not write, so a
 * later sync that succeeded would vouch for WAL frames not on disk (and a
 * hole in the WAL ends SQLite's recovery there, losing what follows).
 * Every later batch then fails as not durable, until a restart. */
static int sync_wal(coord *c)
{
	int e = atomic_load(&c->wal_sync_err);

	if (!e && (c->wal_fd < 0 || fdatasync(c->wal_fd) == 0))
		return SQLITE_OK;
	if (!e) {
		e = errno ? errno : EIO;
		atomic_store(&c->wal_sync_err, e);
		blog(BLOG_ERROR, "fdatasync of the sluice.db WAL: %s: every later write to sluice.db "
				 "is answered as failed until a restart", strerror(e));
	}
	return SQLITE_IOERR;
}

/* Runs the hooks and posts the done of one synced round (no lock held). */
static void complete_round(coord *c, coord_job *jobs, int rc)
{
	bool hooked = false;
	coord_job *next;

	worker_post_defer(); /* a wake-up per loop, not per job or append */
	for (coord_job *j = jobs; j; j = j->next) {
		if (rc != SQLITE_OK && j->rc == SQLITE_OK)
			j->rc = rc; /* committed, but maybe not durable: say so */
		if (j->after_commit && j->rc == SQLITE_OK) {
			j->after_commit(j);
			hooked = true;
		}
	}
	if (hooked && c->round_hook)
		c->round_hook(c->round_arg);
	for (coord_job *j = jobs; j; j = next) {
		next = j->next; /* j may be freed by its done() */
		if (j->w)
			worker_post(j->w, &j->done);
		else
			j->done.fn(&j->done);
	}
	worker_post_flush();
}

/* slock held: completes the synced rounds in ticket order, unless another
 * syncer is doing it (it will see ours before it stops). */
static void complete_rounds(coord *c)
{
	if (c->completing)
		return;
	c->completing = true;
	for (;;) {
		struct round *r = &c->rounds[c->next_done % ROUND_SLOTS];
		coord_job *jobs;
		uint64_t t0, hooked;
		int rc;

		if (!r->synced)
			break;
		t0 = mono_ns();
		jobs = r->jobs;
		rc = r->rc;
		hooked = count_hooked(jobs); /* done() may free the jobs */
		*r = (struct round){ 0 };
		c->next_done++;
		pthread_cond_broadcast(&c->scond); /* a slot is free */
		pthread_mutex_unlock(&c->slock);
		complete_round(c, jobs, rc);
		pthread_mutex_lock(&c->slock);
		c->hooked_pending -= hooked;
		c->complete_ns += mono_ns() - t0;
	}
	c->completing = false;
}

static void *sync_main(void *arg)
{
	coord *c = arg;

	pthread_setname_np(pthread_self(), "sl-walsync");

	pthread_mutex_lock(&c->slock);
	for (;;) {
		struct round *r;
		coord_job *jobs;
		uint64_t ticket, t0, njobs;
		int rc;

		/* a round needs a free slot: at most ROUND_SLOTS not completed
		 * (the syncer completing the others broadcasts each slot) */
		while (!c->shead || c->next_round - c->next_done >= ROUND_SLOTS) {
			if (c->sstop && !c->shead)
				goto out;
			pthread_cond_wait(&c->scond, &c->slock);
		}
		t0 = mono_ns();
		jobs = c->shead;
		c->shead = c->stail = NULL;
		ticket = c->next_round++;
		c->queued_ns += t0 - c->shead_since;
		pthread_mutex_unlock(&c->slock);
		njobs = count_jobs(jobs);
		rc = sync_wal(c);
		pthread_mutex_lock(&c->slock);
		c->n_rounds++;
		c->round_jobs += njobs;
		c->sync_ns += mono_ns() - t0;
		r = &c->rounds[ticket % ROUND_SLOTS];
		r->jobs = jobs;
		r->rc = rc;
		r->synced = true;
		complete_rounds(c);
	}
out:
	pthread_mutex_unlock(&c->slock);
	pthread_mutex_lock(&c->dblock);
	stmtcache_forget(c->db); /* statements of hooks that used coord_lock_db */
	pthread_mutex_unlock(&c->dblock);
	return NULL;
}

static void stop_syncers(coord *c)
{
	pthread_mutex_lock(&c->slock);
	c->sstop = true;
	pthread_cond_broadcast(&c->scond);
	pthread_mutex_unlock(&c->slock);
	for (int i = 0; i < c->nsyncers; i++)
		pthread_join(c->sync_threads[i], NULL);
	c->nsyncers = 0;
}

int coord_start(coord *c)
{
	int rc = 0;

	start_checkpointer(c);
	for (; c->nsyncers < SYNCERS && !rc; c->nsyncers += !rc)
		rc = pthread_create(&c->sync_threads[c->nsyncers], NULL, sync_main, c);
	if (!rc)
		rc = pthread_create(&c->thread, NULL, coord_main, c);
	if (rc != 0) {
		stop_syncers(c);
		stop_checkpointer(c);
		return -rc;
	}
	c->started = true;
	return 0;
}

sqlite3 *coord_lock_db(coord *c)
{
	pthread_mutex_lock(&c->dblock);
	return c->db;
}

int coord_unlock_db(coord *c)
{
	int rc = sync_wal(c);

	pthread_mutex_unlock(&c->dblock);
	return rc;
}

void coord_release_db(coord *c)
{
	pthread_mutex_unlock(&c->dblock);
}

void coord_set_round_hook(coord *c, void (*fn)(void *arg), void *arg)
{
	c->round_hook = fn;
	c->round_arg = arg;
}

void coord_submit(coord *c, coord_job *job)
{
	job->queued_ns = mono_ns();
	job->next = NULL;
	pthread_mutex_lock(&c->lock);
	append_jobs(&c->head, &c->tail, job, job);
	c->head_after_lazy |= job->after_lazy;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void coord_submit_lazy(coord *c, coord_job *job)
{
	job->queued_ns = 0; /* waits on purpose: not counted */
	job->next = NULL;
	pthread_mutex_lock(&c->lock);
	if (!c->lhead) {
		c->lazy_since = mono_ns();
		if (!c->head) /* it may sleep untimed: start its COORD_LAZY_MS wait */
			pthread_cond_signal(&c->cond);
	}
	append_jobs(&c->lhead, &c->ltail, job, job);
	pthread_mutex_unlock(&c->lock);
}

/* One line on where the jobs' time went, for benchmarks. */
static void log_stats(const coord *c)
{
	double nb = c->n_batches ? (double)c->n_batches : 1, nr = c->n_rounds ? (double)c->n_rounds : 1;

	if (!c->n_batches)
		return;
	blog(BLOG_INFO, "coordinator: %llu batches (%.1f jobs, %.0f us of SQL each; a job waited %.0f us "
			"for its batch; %llu jobs completed early); %llu WAL syncs "
			"(%.1f jobs; each waited %.0f us for a syncer, synced in %.0f us, completed in %.0f us); "
			"%llu checkpoints (%.0f us each)",
	     (unsigned long long)c->n_batches, (double)c->batch_jobs / nb, (double)c->batch_ns / nb / 1e3,
	     c->n_started ? (double)c->start_wait_ns / (double)c->n_started / 1e3 : 0.,
	     (unsigned long long)c->n_early,
	     (unsigned long long)c->n_rounds, (double)c->round_jobs / nr, (double)c->queued_ns / nr / 1e3,
	     (double)c->sync_ns / nr / 1e3, (double)c->complete_ns / nr / 1e3,
	     (unsigned long long)c->n_ckpt, c->n_ckpt ? (double)c->ckpt_ns / (double)c->n_ckpt / 1e3 : 0.);
}

void coord_close(coord *c)
{
	if (!c)
		return;
	if (c->started) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
		stop_syncers(c);
		stop_checkpointer(c);
		log_stats(c);
	}
	stmtcache_forget(c->db); /* main's, from start-up */
	sqlite3_close(c->db);
	destroy_sync(c);
	free(c);
}

static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int coord_topic_insert(sqlite3 *db, const char *name, int32_t nparts, const uint8_t id[16],
		       const char *const *keys, const char *const *values, int nconf)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(db,
				"INSERT INTO topics(name, partitions, topic_id, created_ms) "
				"VALUES(?, ?, ?, CAST(strftime('%s','now') AS INTEGER) * 1000)",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, nparts);
	sqlite3_bind_blob(st, 3, id, 16, SQLITE_STATIC);
	rc = step_done(st);
	for (int i = 0; rc == SQLITE_OK && i < nconf; i++) {
		rc = sqlite3_prepare_v2(db, "INSERT INTO topic_configs(topic, key, value) VALUES(?, ?, ?)",
					-1, &st, NULL);
		if (rc != SQLITE_OK)
			break;
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, keys[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, values[i], -1, SQLITE_STATIC);
		rc = step_done(st);
	}
	return rc;
}

int coord_topic_delete(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(db, "DELETE FROM topic_configs WHERE topic = ?", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = step_done(st);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_prepare_v2(db, "DELETE FROM topics WHERE name = ?", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	return step_done(st);
}
