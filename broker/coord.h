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
	/* Posted to w (or run on the coordinator thread if w is NULL) after the
	 * commit; job->rc holds the outcome (0 or SQLite error). */
	worker *w;
	loop_task done;
	int rc;
} coord_job;

/* Opens (creating) the database at path, WAL mode, schema.  Returns 0 or -1
 * (logged). */
int coord_open(const char *path, coord **out);
sqlite3 *coord_db(coord *c);   /* main thread, before coord_start */
int coord_start(coord *c);
void coord_submit(coord *c, coord_job *job);
/* Drains queued jobs, stops the thread, closes the database.  Accepts NULL. */
void coord_close(coord *c);

/* Catalogue helpers (run inside jobs or at start-up on main). */
int coord_topic_insert(sqlite3 *db, const char *name, int32_t nparts, const uint8_t id[16],
		       const char *const *keys, const char *const *values, int nconf);
int coord_topic_delete(sqlite3 *db, const char *name);

#endif
