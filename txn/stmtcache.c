/*
 * stmtcache.c — see stmtcache.h.  A small per-thread array searched
 * linearly: the coordinator uses a few dozen fixed statements.
 */
#include "stmtcache.h"

#include <stdbool.h>
#include <string.h>

#define SLOTS 64

struct slot {
	sqlite3 *db;
	const char *sql;   /* the caller's pointer: fast first check */
	sqlite3_stmt *st;
	bool busy;
};

static __thread struct slot slots[SLOTS];

int stmtcache_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	struct slot *free_slot = NULL;
	int rc;

	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &slots[i];

		if (!s->st) {
			if (!free_slot)
				free_slot = s;
			continue;
		}
		/* same text at the same address is the common case; the strcmp
		 * makes a reused buffer with other SQL harmless */
		if (!s->busy && s->db == db && s->sql == sql && !strcmp(sqlite3_sql(s->st), sql)) {
			s->busy = true;
			*st = s->st;
			return SQLITE_OK;
		}
	}
	rc = sqlite3_prepare_v3(db, sql, -1, free_slot ? SQLITE_PREPARE_PERSISTENT : 0, st, NULL);
	if (rc != SQLITE_OK || !free_slot)
		return rc;
	free_slot->db = db;
	free_slot->sql = sql;
	free_slot->st = *st;
	free_slot->busy = true;
	return SQLITE_OK;
}

int stmtcache_release(sqlite3_stmt *st)
{
	if (!st)
		return SQLITE_OK;
	for (int i = 0; i < SLOTS; i++) {
		if (slots[i].st == st) {
			int rc = sqlite3_reset(st);

			sqlite3_clear_bindings(st);
			slots[i].busy = false;
			return rc;
		}
	}
	return sqlite3_finalize(st);
}

void stmtcache_forget(sqlite3 *db)
{
	for (int i = 0; i < SLOTS; i++) {
		if (slots[i].st && slots[i].db == db) {
			sqlite3_finalize(slots[i].st);
			memset(&slots[i], 0, sizeof(slots[i]));
		}
	}
}

int stmtcache_exec(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int rc = stmtcache_prepare(db, sql, &st);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = SQLITE_DONE;
	{
		int r2 = stmtcache_release(st);

		return rc == SQLITE_DONE ? r2 : rc;
	}
}
