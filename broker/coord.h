/*
 * coord.h — the coordinator thread: sole owner of the SQLite connection
 * (DESIGN §5).  Other threads submit jobs; the thread runs every job queued
 * at that moment inside one SQLite transaction (group commit: many small
 * writes share one commit and one WAL sync), each job in its own SAVEPOINT so
 * a failing job does not undo the others, then hands each job back to the
 * loop that submitted it.
 *
 * Schema (docs/storage.md): topics(name, partitions, topic_id, created_ms),
 * topic_configs(topic, key, value), meta(key, value).  Schema version in
 * PRAGMA user_version.
 *
 * Durability: SQLite runs with synchronous=NORMAL (through the walvfs.h
 * shim: one WAL write per commit) and the coordinator's WAL-sync
 * threads fdatasync the WAL after each batch — while the coordinator
 * already runs the next one — and only then, in batch order, run the
 * after_commit hooks and post the jobs' done: an answer still means
 * "durable", but batches overlap their syncs.  Jobs marked early complete
 * on the coordinator thread right after their batch's COMMIT instead
 * (coord_job.early).  A checkpointer thread, with a second connection of
 * its own, copies the WAL into the database file every 200 ms, so that
 * SQLite's automatic checkpoint in a coordinator COMMIT (at 10,000 frames:
 * it restarts the WAL) finds little to do.
 *
 * Threads: coord_open, coord_db and the load functions run on main before
 * coord_start; coord_submit from any thread afterwards.
 */
#ifndef SLUICE_COORD_H
#define SLUICE_COORD_H

#include <sqlite3.h>

#include "server.h"

typedef struct coord coord;

typedef struct coord_job {
	struct coord_job *next;
	/* Runs on the coordinator thread inside a transaction.  Returns 0 or a
	 * SQLite error code (the job's savepoint is then rolled back). */
	int (*run)(struct coord_job *job, sqlite3 *db);
	/* run() leaves the database as it was whenever it fails (it is one
	 * self-contained halfstore call, or read-only): the job then runs
	 * without a SAVEPOINT of its own (two statements less per job). */
	bool atomic;
	/* Optional.  Runs on a WAL-sync thread once the batch holding the
	 * job has committed and its WAL is synced (so what run() wrote is
	 * durable), in submission order, before done is posted; not run when
	 * the job or the batch failed.  The database is not held then: use
	 * coord_lock_db to touch it.  Lets work that must follow the SQLite order exactly (the
	 * log appends of transaction commits, in commit-sequence order) happen
	 * in that order.  Must not block on anything but short locks.  What
	 * a hook only queues, the round hook (coord_set_round_hook) can do
	 * once for the whole round. */
	void (*after_commit)(struct coord_job *job);
	/* Set by run() (coordinator thread; coord clears it before): what the
	 * job wrote only has to survive a process crash, not a power loss, so
	 * it may complete — after_commit, the round hook, done — on the
	 * coordinator thread right after its batch's COMMIT, before the WAL
	 * sync (SQLite has written the WAL by then: a kill -9 keeps it).  For
	 * the transaction ends, whose log appends carry a commit marker that
	 * start-up recovers a lost row from (txn_marker.h), and the COMMITTED
	 * marks, which nobody waits for (a batch of marks alone then costs no
	 * sync).
	 * Honoured only when no job of the batch with an after_commit is late
	 * and no earlier round with one is still waiting for its sync, so
	 * hooks still run in job order; else the job completes with its round
	 * as usual. */
	bool early;
	/* Set by the submitter: the job reads what lazy jobs queued before it
	 * write (an operator's view of a transaction whose COMMITTED mark is
	 * queued), so they run first, in its batch. */
	bool after_lazy;
	/* Posted to w (or run on the coordinator thread if w is NULL) after the
	 * commit; job->rc holds the outcome (0 or SQLite error). */
	worker *w;
	loop_task done;
	int rc;
	uint64_t queued_ns;     /* coord: when coord_submit queued it (statistics) */
} coord_job;

/* Opens (creating) the database at path, WAL mode, schema.  Returns 0 or -1
 * (logged). */
int coord_open(const char *path, coord **out);
sqlite3 *coord_db(coord *c);   /* main thread, before coord_start */
/* The connection for a one-off statement outside the job flow (after
 * coord_start; e.g. from an after_commit hook): locks out the coordinator
 * until coord_unlock_db, which syncs the WAL first (the statements
 * autocommit under synchronous=NORMAL).  Returns 0 or an SQLite error of
 * that sync. */
sqlite3 *coord_lock_db(coord *c);
int coord_unlock_db(coord *c);
/* Instead of coord_unlock_db after reads only: no WAL sync. */
void coord_release_db(coord *c);
int coord_start(coord *c);
void coord_submit(coord *c, coord_job *job);
/* Optional, before coord_start: fn(arg) runs on the WAL-sync thread that
 * completes a round (or on the coordinator thread for a batch's early
 * jobs), after the round's after_commit hooks (only if one of them ran)
 * and before any of its jobs' done is posted; rounds complete one at a
 * time, in order, and never at the same time as early ones, so what the
 * hooks queued and fn consume needs no lock of its own.  Lets per-job
 * work become per-round work (the transaction commits: one log write per
 * partition per round, txn_commit.h). */
void coord_set_round_hook(coord *c, void (*fn)(void *arg), void *arg);
/* The same for a job that may wait: it does not wake the coordinator and
 * runs in a batch of its own when nothing else is queued (right after
 * another batch, or after COORD_LAZY_MS), or with the others once it has
 * waited COORD_LAZY_MS.  For bookkeeping off the critical path (the
 * COMMITTED marks): it costs no thread wake-up of its own and does not
 * lengthen the batches that answers wait for. */
#define COORD_LAZY_MS 5
void coord_submit_lazy(coord *c, coord_job *job);
/* Drains queued jobs, stops the thread, logs where the jobs' time went
 * ("coordinator: N batches ...", docs/benchmarks.md), closes the
 * database.  Accepts NULL. */
void coord_close(coord *c);

/* Catalogue helpers (run inside jobs or at start-up on main). */
int coord_topic_insert(sqlite3 *db, const char *name, int32_t nparts, const uint8_t id[16],
		       const char *const *keys, const char *const *values, int nconf);
int coord_topic_delete(sqlite3 *db, const char *name);

#endif
