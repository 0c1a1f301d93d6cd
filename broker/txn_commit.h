/*
 * txn_commit.h — appends committed transactions to the topic logs, exactly
 * once (docs/transactions.md "Exactly-once commit").
 *
 * Owns the commit producer: a COMMITTING transaction's batch is stamped as
 * an idempotent batch of the reserved producer id HALFSTORE_COMMIT_PID with
 * its commit_seq, checked against the partition's idempotent-producer state
 * (a duplicate answers its original offset, a sequence at or below the last
 * one appended is "appended long ago"), and appended otherwise.  That rule
 * holds only if a partition's commits are appended in commit_seq order, so
 * the live appends run on the coordinator's round completion (coord.h), in
 * job order = sequence order: the end jobs' after_commit hooks stage them
 * (txn_commit_stage) and the round hook appends everything staged with one
 * log write per partition (txn_commit_flush).  Each commit is written
 * behind its marker (txn_marker.h), in the same write; after a power loss
 * that kept the log but lost COMMITTING rows, txn_commit_recover finds the
 * marker + commit pairs beyond SQLite's next sequence and records those
 * transactions COMMITTED (halfstore_reattach).  An append that wrote nothing
 * releases its sequence in SQLite (halfstore_unseq, or halfstore_discard
 * when it never can be written).  A retried end may have read the
 * sequence before an earlier round released it: the flush reads such a
 * commit's row again (txn_commit.recheck) and answers "retry" if the
 * sequence is no longer the row's, instead of taking it for "appended long
 * ago" (nothing appended) or appending it beside the producer's own retry,
 * sequenced anew (twice).
 *
 * Threads: txn_commit_start on main before the coordinator starts;
 * txn_commit_stage and txn_commit_flush on the coordinator thread
 * completing a batch's early jobs (the ends, coord_job.early), or on the
 * WAL-sync thread completing a round that could not; one at a time, in
 * round order (coord.h never runs the two at once), so the stage needs no
 * lock;
 * txn_commit_recover on main at start-up, before the coordinator starts.
 */
#ifndef SLUICE_TXN_COMMIT_H
#define SLUICE_TXN_COMMIT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "halfstore.h"
#include "server.h"
#include "topics.h"

/* Why a commit larger than its topic's segment.bytes (lowered after its
 * prepare) is discarded: the discard reason TxnDescribe shows. */
#define TXN_TOO_LARGE_REASON "batch larger than the topic's segment.bytes"

/* One commit to append.  The caller owns it (inside its end job) and keeps
 * it until the round is flushed. */
typedef struct txn_commit {
	halfstore_txn *txn; /* borrowed: COMMITTING with commit_seq; its batch
			       is stamped in place */
	bool recheck;       /* the end found txn COMMITTING already (a retry):
			       the flush reads the row again (below) */
	/* results, after txn_commit_flush: */
	int16_t kerr;       /* 0: in the log; else the answer's Kafka error */
	char msg[160];      /* kerr's message */
	topic *t;           /* kerr 0: referenced, the caller drops it */
	partition *p;       /* kerr 0: where it is */
	int64_t offset;     /* kerr 0: base offset; -1 appended long ago */
	int64_t need;       /* kerr 0: the log must be durable up to here */
	bool appended;      /* kerr 0: written now (not found in the log) */
	/* private */
	bool stale;         /* recheck found the sequence released */
	int rc;
	size_t lead;        /* a duplicate in the same round: its first copy */
} txn_commit;

/* Reserved producers (HALFSTORE_COMMIT_PID, HALFSTORE_DEAD_PID) number
 * their batches themselves with 64-bit sequences (halfstore_commit_epoch /
 * _base_seq packing) that only grow in a partition, gaps allowed, so a
 * sequence at or below the last one appended is in the log already.  What
 * p's log has of pid's batch numbered seq (count records), p->pid_lock
 * held: */
enum txn_seq_seen {
	TXN_SEQ_NEW = 0,       /* not there: append it */
	TXN_SEQ_DUPLICATE = 1, /* there, at *base (the dedup window has it) */
	TXN_SEQ_LONG_AGO = 2,  /* there, offset no longer known */
};
enum txn_seq_seen txn_seq_seen(partition *p, int64_t pid, int64_t seq, int32_t count,
			       int64_t *base);
/* p->pid_lock held: records pid's batch numbered seq, appended at base at
 * wall clock `now` (ms; the reserved producers never expire, the time is
 * kept for the snapshot's sake). */
void txn_seq_record(partition *p, int64_t pid, int64_t seq, int32_t count, int64_t base,
		    int64_t now);
/* Takes p->pid_lock: the last sequence of pid in p's log, or -1 if none. */
int64_t txn_seq_last(partition *p, int64_t pid);

/* Registers the round hook on srv->coord (before coord_start). */
void txn_commit_start(server *srv);
/* Queues c for this round's appends (clears its results first). */
void txn_commit_stage(txn_commit *c);
/* The round hook: appends everything staged, partition by partition in
 * stage order, and records the failures in SQLite (coord_lock_db). */
void txn_commit_flush(void *srv);

/* Start-up: records COMMITTED the transactions whose commits the log holds
 * (marker + batch) beyond SQLite's next sequence, their rows lost;
 * raises each partition's next commit sequence past the last commit its
 * log holds (halfstore_seq_floor); appends (exactly once) every
 * transaction left COMMITTING by a crash, syncs the fsync-durability
 * partitions it touched, then marks them COMMITTED.  Returns 0 or -1
 * (logged). */
int txn_commit_recover(sqlite3 *db, topics *reg);

#endif
