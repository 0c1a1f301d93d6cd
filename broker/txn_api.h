/*
 * txn_api.h — Sluice extension APIs for transactional half messages
 * (txn_api.c and txn_check.c; formats in docs/protocol.md, design in
 * docs/transactions.md).
 *
 * Threads: txn_api_init on main at start-up, before the coordinator
 * thread starts; the handlers on any loop; txn_api_drop_topic on the
 * coordinator thread inside a job; txn_check_stop after the loops and the
 * coordinator have stopped.  The commit appends are txn_commit.h's.
 */
#ifndef SLUICE_TXN_API_H
#define SLUICE_TXN_API_H

#include <sqlite3.h>

#include "config.h"
#include "conn.h"
#include "topics.h"

enum {
	API_TXN_PREPARE = 1000,
	API_TXN_END = 1001,
	API_TXN_CHECK_POLL = 1002,
	API_TXN_LIST = 1003,
	API_TXN_DESCRIBE = 1004,
};

/* Test hook (docs/transactions.md): with SLUICED_CRASH_AT=<name> in the
 * environment at start-up the broker calls _exit(137) when it reaches that
 * point of a transaction, as if killed there. */
enum txn_crash_point {
	TXN_CRASH_NONE = 0,
	TXN_CRASH_PREPARE_STORED,           /* "txn_prepare_stored" */
	TXN_CRASH_COMMIT_MARKED_COMMITTING, /* "txn_commit_marked_committing" */
	TXN_CRASH_COMMIT_APPENDED,          /* "txn_commit_appended" */
	TXN_CRASH_COMMIT_MARKED,            /* "txn_commit_marked" */
	TXN_CRASH_DEAD_APPENDED,            /* "txn_dead_appended": dead-letter
	                                       copies appended, not recorded */
};

struct checksched_policy;

/* Any thread: calls _exit(137) if SLUICED_CRASH_AT named p — a crash
 * there, minus the kernel's part (the page cache survives, as with
 * kill -9). */
void txn_api_crash_point(enum txn_crash_point p);

/* Reads the transaction.* keys and SLUICED_CRASH_AT. */
void txn_api_init(const config *cfg);
/* DeleteTopics, in its catalogue job: the topic's PENDING half messages
 * become DISCARDED ("topic deleted").  SQLITE_OK or SQLITE_ERROR (logged). */
int txn_api_drop_topic(sqlite3 *db, const char *name);

/* The origin id of a producer instance name: 64-bit FNV-1a of its bytes
 * with the lowest bit set (connection pointers, the other kind of origin,
 * are 8-aligned, so the two never collide).  0 for a null or empty name. */
uint64_t txn_api_instance_id(wire_str instance);

int api_txn_prepare(req *r, wire_rd *rd);
int api_txn_end(req *r, wire_rd *rd);
int api_txn_list(req *r, wire_rd *rd);
int api_txn_describe(req *r, wire_rd *rd);
int api_txn_check_poll(req *r, wire_rd *rd);

/* Frees w's cache of released jobs (server_free, after the loops
 * stopped). */
void txn_api_cache_free(worker *w);

/* The check policy from the broker configuration. */
const struct checksched_policy *txn_api_policy(void);
/* transaction.retention.ms */
int64_t txn_api_retention_ms(void);

/* txn_check.c: starts the check-back ticker on w (before the loops run);
 * stop after the loops and the coordinator have stopped. */
int txn_check_start(server *srv, worker *w);
void txn_check_stop(void);
/* A TxnEnd answered txn_id's check numbered check_no (its check_count
 * when handed out), or any check (CHECKSCHED_ANY_CHECK: TxnEnd v0, or a
 * commit / rollback, which ends the transaction whichever check is out):
 * that check, if out, is done.  True if it was out (or checks are off):
 * only then does an "unknown" answer count as one of
 * transaction.check.max. */
bool txn_check_answered(int64_t txn_id, int32_t check_no);
/* Any thread: txn_id's batch is appended to p (of t, whose reference this
 * takes over) at offset (-1: unknown) and nobody waits for the answer any
 * more (client gone, or answered "timed out"): the ticker marks it
 * COMMITTED once p's high watermark reaches need (the append is durable),
 * or drops it at stop (it stays COMMITTING: start-up recovery finishes
 * it). */
void txn_check_mark_later(int64_t txn_id, int64_t offset, topic *t, partition *p, int64_t need);
/* Coordinator thread: records txn_id COMMITTED at offset.  If p's log is
 * not synced up to need yet (page-cache durability), the row keeps its
 * batch (halfstore_mark_committed_unsynced), so that start-up can append
 * it again after a power loss, and the ticker drops the batch once the
 * log is synced past it (at the next periodic flush,
 * log.flush.interval.ms).  p NULL: nothing to wait for.  Offset -1
 * ("appended long ago", a retry's) while not synced up to need: nothing
 * recorded (the end that appended it does).  A halfstore outcome. */
int txn_check_record_commit(sqlite3 *db, int64_t txn_id, int64_t offset, partition *p,
			    int64_t need);

#endif
