/*
 * stmtcache.h — prepared-statement reuse for the coordinator's hot SQL.
 *
 * Compiling a statement costs more than running it (the parser and code
 * generator dominated the coordinator thread's profile under transactional
 * load), so the fixed statements of halfstore and coord are prepared once
 * per connection and reset after use instead of finalized.
 *
 * stmtcache_prepare(db, sql, &st) hands out a cached statement for the same
 * (db, sql text) if one is free, else prepares a new one (kept if a slot is
 * free).  stmtcache_release(st) resets it (clearing bindings) and returns
 * it to the cache, or finalizes an uncached one; it returns what
 * sqlite3_finalize would have (the statement's last error, or SQLITE_OK).
 * stmtcache_forget(db) finalizes every cached statement of db: call it
 * before sqlite3_close(db) (a connection with live statements does not
 * close, so forgetting it shows up as a leak, never as a dangling cache
 * entry).
 *
 * Threads: the cache is per thread (thread-local); a statement must be
 * released on the thread that prepared it.  SQL passed here should be fixed
 * text (literals): dynamic SQL works, but fills the cache for nothing.
 */
#ifndef SLUICE_TXN_STMTCACHE_H
#define SLUICE_TXN_STMTCACHE_H

#include <sqlite3.h>

int stmtcache_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st);
int stmtcache_release(sqlite3_stmt *st);
void stmtcache_forget(sqlite3 *db);
/* Runs a statement without results (e.g. "SAVEPOINT x") through the cache.
 * Returns an SQLite code. */
int stmtcache_exec(sqlite3 *db, const char *sql);

#endif
