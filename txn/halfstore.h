/*
 * halfstore.h — the half-message store: transactional half messages and
 * their check state in the coordinator's SQLite database (DESIGN §5-6,
 * docs/transactions.md).
 *
 * What it owns: the tables txn_half and txn_seq (schema below, in
 * halfstore_schema_sql).  Nothing in memory: every function is given the
 * connection and keeps no state between calls.
 *
 * Threads: the coordinator thread only (broker/coord.h), inside a coord job,
 * that is inside the batch transaction and the job's SAVEPOINT.  No function
 * begins or commits a transaction: what a function wrote is durable when
 * the surrounding COMMIT returns, so many prepares and ends share one
 * commit (group commit).  Each mutating function is atomic on its own: it
 * runs in a nested SAVEPOINT ("halfstore") that it rolls back on failure,
 * or is a single statement (prepare, mark_committed's usual case,
 * release_lease, resume), so a negative return leaves the database as it was before the
 * call.  (Called outside any transaction, that savepoint is a transaction
 * of its own — handy in tests.)
 *
 * States and transitions (the only ones there are):
 *
 *   prepare -> PENDING --end(COMMIT)------> COMMITTING --mark_committed--> COMMITTED
 *                 |    --end(ROLLBACK)----> ROLLED_BACK
 *                 |    --check_answer x max_checks--> DISCARDED
 *   DISCARDED --resume (operator)----------------> PENDING
 *   DISCARDED --end(.., HALFSTORE_F_OPERATOR)----> COMMITTING | ROLLED_BACK
 *   COMMITTING --unseq (its append wrote nothing)--> COMMITTING, no commit_seq
 *              --end(COMMIT) again--------------> COMMITTING, new commit_seq
 *   COMMITTED, ROLLED_BACK, DISCARDED --purge after retention--> (deleted)
 *
 * Exactly-once commit: end(COMMIT) gives the transaction a commit sequence
 * from txn_seq, per (topic, partition), advancing by the batch's record
 * count.  The broker appends the stored batch as an idempotent batch of the
 * reserved producer HALFSTORE_COMMIT_PID with epoch
 * halfstore_commit_epoch(seq) and base sequence halfstore_commit_base_seq(seq),
 * in commit_seq order per partition, then calls mark_committed with the
 * offset.  After a crash it re-appends everything halfstore_committing
 * lists; the partition's idempotent-producer dedup (broker/pidstate.c)
 * answers an already appended one with its original offset.  After a power
 * loss that kept a commit in the log but not its row, the broker finds the
 * commit by its marker (broker/txn_marker.h) beyond halfstore_seq_state's
 * next sequence and records it with halfstore_reattach.
 *
 * Errors: positive HALFSTORE_* outcomes below, documented per function;
 * negative -errno when SQLite failed (mapped in one place, halfstore.c
 * sqlerr(): -ENOMEM, -EBUSY, -ENOSPC, -EIO, -EINVAL for a constraint
 * violation), in which case nothing changed and the caller's coord job
 * should fail (return SQLITE_ERROR) so its savepoint is rolled back as well.
 *
 * Times are int64 milliseconds (wall clock, stored and shown to operators).
 */
#ifndef SLUICE_HALFSTORE_H
#define SLUICE_HALFSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "checksched.h"

/* The SQL that creates the tables and indexes (idempotent: IF NOT EXISTS).
 * The broker runs it as a step of coord.c's schema_upgrade (it is its own
 * schema version 1, see halfstore.c for the layout and change rules). */
extern const char halfstore_schema_sql[];
#define HALFSTORE_SCHEMA_VERSION 6
/* Version 1 -> 2 in a database made by version 1 (coord.c's schema step
 * 4): txn_half's CHECK on state rewritten from `state IN (...)`, which
 * SQLite 3.40 runs as a temporary b-tree built for every row written,
 * into the equivalent chain of `=` tests.  Only the constraint's text
 * changes (SQLite's documented writable_schema procedure for CHECK
 * constraints); nothing if the text is already the new one.  Runs in the
 * caller's transaction, before any statement is prepared on db.  0 or
 * -errno. */
int halfstore_schema_v2(sqlite3 *db);
/* Version 2 -> 3 (coord.c's schema step 5): the column dead_letter_offset
 * and the partial index txn_half_dead of the discarded rows not yet copied
 * to the dead-letter topic.  Idempotent (a database made with this
 * halfstore_schema_sql has both).  Runs in the caller's transaction.  0 or
 * -errno. */
int halfstore_schema_v3(sqlite3 *db);
/* Version 3 -> 4 (coord.c's schema step 6): the partial index
 * txn_half_unsynced of the COMMITTED rows that keep their batch until the
 * log's copy is synced (halfstore_mark_committed_unsynced).  Idempotent.
 * Runs in the caller's transaction.  0 or -errno. */
int halfstore_schema_v4(sqlite3 *db);
/* Version 4 -> 5 (coord.c's schema step 7): the columns dead_letter_seq
 * and dead_letter_partition, the table txn_dead_seq and the partial index
 * txn_half_dead_out (numbered dead-letter copies, halfstore_dead_letters).
 * Idempotent.  Runs in the caller's transaction.  0 or -errno. */
int halfstore_schema_v5(sqlite3 *db);
/* Version 5 -> 6 (coord.c's schema step 8): the table txn_dead_topic
 * (halfstore_dead_topic).  Idempotent.  Runs in the caller's transaction.
 * 0 or -errno. */
int halfstore_schema_v6(sqlite3 *db);

/* Outcomes (0 and positive). */
enum {
	HALFSTORE_OK = 0,
	HALFSTORE_OK_ALREADY = 1,   /* the same decision was made before: nothing changed */
	HALFSTORE_E_NOT_FOUND = 2,  /* no such txn_id (never existed or purged) */
	HALFSTORE_E_CONFLICT = 3,   /* the opposite decision was made before */
	HALFSTORE_E_DISCARDED = 4,  /* discarded after max checks: operator only */
	HALFSTORE_E_STATE = 5,      /* not in a state this operation applies to */
	HALFSTORE_E_INVALID = 6,    /* bad argument (e.g. not a RecordBatch v2) */
};

enum halfstore_state {
	HALFSTORE_PENDING = 0,
	HALFSTORE_COMMITTING = 1,
	HALFSTORE_COMMITTED = 2,
	HALFSTORE_ROLLED_BACK = 3,
	HALFSTORE_DISCARDED = 4,
};
#define HALFSTORE_NSTATES 5
/* State filter bits for halfstore_list. */
#define HALFSTORE_MASK(state) (1u << (state))
#define HALFSTORE_MASK_ALL ((1u << HALFSTORE_NSTATES) - 1)

enum halfstore_decision {
	HALFSTORE_COMMIT = 1,
	HALFSTORE_ROLLBACK = 2,
};

enum halfstore_answer {
	HALFSTORE_ANSWER_UNKNOWN = 1,   /* the producer does not know yet */
	HALFSTORE_ANSWER_NONE = 2,      /* no answer (lease expired, nobody to ask) */
};

/* Flags of halfstore_end. */
#define HALFSTORE_F_OPERATOR 1u /* an operator resolves a DISCARDED txn */

/* Commits are appended as idempotent batches of this producer id, which the
 * broker never hands out (InitProducerId allocates from 1000, and Produce
 * refuses client batches below: PIDSTATE_FIRST_CLIENT_PID). */
#define HALFSTORE_COMMIT_PID 1
/* Sequences of one epoch: commit_seq packs (epoch, sequence) so that a
 * batch never wraps the int32 sequence; txn_seq skips to the next epoch
 * when a batch would not fit. */
#define HALFSTORE_SEQ_SPAN ((int64_t)1 << 31)

static inline int16_t halfstore_commit_epoch(int64_t commit_seq)
{
	return (int16_t)(commit_seq / HALFSTORE_SEQ_SPAN);
}

static inline int32_t halfstore_commit_base_seq(int64_t commit_seq)
{
	return (int32_t)(commit_seq % HALFSTORE_SEQ_SPAN);
}

/* Storage a caller lends to the reads of one row at a time
 * (halfstore_end_into): the row's strings and batch are copied into p,
 * which is grown with realloc() when too small.  The caller owns p (frees
 * it with free()); keeping one halfstore_buf per reader makes a row read
 * allocate nothing once p is big enough. */
typedef struct halfstore_buf {
	char *p;
	size_t cap;
} halfstore_buf;

/* One row of txn_half.  Strings and batch are malloc()ed and owned by the
 * struct (halfstore_txn_clear frees them) unless buf is set: then they
 * point into *buf, which the struct borrows; absent values are -1
 * (numbers) or NULL (strings, batch). */
typedef struct halfstore_txn {
	int64_t txn_id;
	char *producer_group;
	char *topic;
	int32_t partition;
	uint8_t *batch;          /* RecordBatch v2 as prepared; NULL where a
	                            function says it leaves it out */
	size_t batch_len;        /* set even when batch is left out */
	int32_t record_count;
	enum halfstore_state state;
	int64_t created_ms;
	int64_t ended_ms;        /* decision (or discard) time; -1 while PENDING */
	int32_t check_count;     /* checks that got no decision */
	int64_t next_check_ms;
	int64_t lease_until_ms;  /* a check is out until then; 0 = none */
	int64_t commit_seq;      /* -1 unless COMMITTING/COMMITTED */
	int64_t log_offset;      /* -1 unless COMMITTED */
	uint64_t origin;         /* connection that prepared it (opaque) */
	char *discard_reason;    /* NULL unless DISCARDED */
	int64_t dead_letter_offset; /* where its copy is in the dead-letter topic;
	                               -1 = none (yet), HALFSTORE_DEAD_GIVEN_UP,
	                               HALFSTORE_DEAD_UNKNOWN */
	int64_t dead_letter_seq;    /* its copy's sequence (halfstore_dead_letters);
	                               -1 = not numbered */
	int32_t dead_letter_partition; /* the copy's partition; -1 = not numbered */
	halfstore_buf *buf;      /* NULL, or where the strings and batch are */
} halfstore_txn;

/* What halfstore_prepare stores.  Borrowed for the call only. */
typedef struct halfstore_prepare_args {
	const char *producer_group;
	const char *topic;
	int32_t partition;
	const uint8_t *batch;    /* a RecordBatch v2 the broker has checked
	                            (length, CRC) */
	size_t batch_len;
	uint64_t origin;
	int64_t check_timeout_ms; /* > 0: first check after this instead of the
	                             policy's timeout */
} halfstore_prepare_args;

/* ---- names ---- */

const char *halfstore_state_name(enum halfstore_state s); /* "PENDING", ... */
/* Parses a state name (case-insensitive).  0 with *s, or -EINVAL. */
int halfstore_state_parse(const char *name, enum halfstore_state *s);
const char *halfstore_strerror(int rc); /* HALFSTORE_* or -errno */

/* ---- struct helpers ---- */

/* Frees what t owns and sets t to the empty value (a borrowed buf is
 * left to its owner).  Accepts NULL. */
void halfstore_txn_clear(halfstore_txn *t);
/* Clears and frees an array returned by a list function.  Accepts NULL. */
void halfstore_txns_free(halfstore_txn *v, size_t n);

/* ---- operations ---- */

/* Stores a new half message in PENDING with next_check_ms =
 * checksched_first_check(policy, now_ms, a->check_timeout_ms).  Checks that
 * the batch looks like a RecordBatch v2 (size >= 61, batchLength, magic 2,
 * recordCount >= 1 and lastOffsetDelta == recordCount - 1, neither the
 * transactional nor the control attribute) and that the strings are
 * non-empty.  Returns HALFSTORE_OK with *txn_id (durable when the
 * surrounding commit returns), HALFSTORE_E_INVALID, or -errno; *txn_id is
 * written only on HALFSTORE_OK. */
int halfstore_prepare(sqlite3 *db, const halfstore_prepare_args *a, int64_t now_ms,
		      const checksched_policy *policy, int64_t *txn_id);

/* Ends a transaction with decision at now_ms.
 *  PENDING + COMMIT    -> COMMITTING, commit_seq assigned: HALFSTORE_OK
 *  PENDING + ROLLBACK  -> ROLLED_BACK (the batch is dropped): HALFSTORE_OK
 *  COMMITTING/COMMITTED + COMMIT, ROLLED_BACK + ROLLBACK: HALFSTORE_OK_ALREADY,
 *      nothing changes (a retried end never appends twice)
 *  COMMITTING/COMMITTED + ROLLBACK, ROLLED_BACK + COMMIT: HALFSTORE_E_CONFLICT,
 *      nothing changes
 *  DISCARDED: HALFSTORE_E_DISCARDED, unless flags has HALFSTORE_F_OPERATOR,
 *      then as PENDING
 *  no such txn: HALFSTORE_E_NOT_FOUND
 * On HALFSTORE_OK, OK_ALREADY, E_CONFLICT and E_DISCARDED, if out is not
 * NULL, *out receives the row as it is after the call (the batch included
 * while COMMITTING, for the append); the caller clears it.  On other
 * returns *out is not written. */
int halfstore_end(sqlite3 *db, int64_t txn_id, enum halfstore_decision decision, unsigned flags,
		  int64_t now_ms, halfstore_txn *out);
/* halfstore_end with *out's strings and batch in buf (out->buf = buf)
 * instead of malloc()ed: the broker ends one transaction per request and
 * reuses buf.  buf NULL: halfstore_end. */
int halfstore_end_into(sqlite3 *db, int64_t txn_id, enum halfstore_decision decision,
		       unsigned flags, int64_t now_ms, halfstore_buf *buf, halfstore_txn *out);

/* The append of a COMMITTING txn landed at log_offset (-1: it was appended
 * but its offset is no longer known, e.g. found by dedup after a crash): -> COMMITTED (the
 * batch is dropped).  HALFSTORE_OK (also when a row COMMITTED at -1, the
 * offset unknown, gets its real offset); HALFSTORE_OK_ALREADY if already
 * COMMITTED at that offset, or log_offset is -1 and it is COMMITTED;
 * HALFSTORE_E_CONFLICT if COMMITTED at another offset; HALFSTORE_E_STATE
 * for other states; HALFSTORE_E_NOT_FOUND. */
int halfstore_mark_committed(sqlite3 *db, int64_t txn_id, int64_t log_offset);
/* As halfstore_mark_committed, for a commit whose log copy is not synced
 * yet (page-cache durability): the row is COMMITTED but keeps its batch,
 * so that start-up recovery can append it again if a power loss took the
 * log's copy (halfstore_committing lists it).  halfstore_drop_synced drops
 * the batch once the log is synced past it.  halfstore_mark_committed
 * finishes such a row too (recovery): at log_offset if >= 0, else where it
 * was. */
int halfstore_mark_committed_unsynced(sqlite3 *db, int64_t txn_id, int64_t log_offset);
/* Drops the batch of at most limit unsynced COMMITTED rows of the
 * partition whose log_offset is below synced_end (the log is durable up
 * to there).  The number dropped, or -errno. */
int64_t halfstore_drop_synced(sqlite3 *db, const char *topic, int32_t partition,
			      int64_t synced_end, size_t limit);
/* How many COMMITTED rows still keep their batch (*n).  0 or -errno. */
int halfstore_unsynced_count(sqlite3 *db, int64_t *n);

/* The append of a COMMITTING txn failed and wrote nothing (disk full, I/O
 * error: the log cut the partial write back): forgets its commit_seq
 * (NULL).  The next halfstore_end(COMMIT) of it — the producer's retry, an
 * operator's commit, or start-up recovery — gives it a new one then, in
 * the coordinator's order, so its append comes after every commit
 * sequenced before it.  Why not a new sequence at once: the broker takes
 * "sequence at or below the last one appended" as "already appended"; a
 * sequence taken now would fall below the commits appended before the
 * retry comes, and the retry would be answered as appended and be lost
 * (tests/integration/test_disk_full.py).  HALFSTORE_OK, HALFSTORE_E_STATE
 * (not COMMITTING), HALFSTORE_E_NOT_FOUND or -errno. */
int halfstore_unseq(sqlite3 *db, int64_t txn_id);

/* Start-up: the partition's next commit_seq becomes at least next_seq (the
 * log holds commits up to next_seq - 1 that SQLite may have lost: in
 * page-cache durability a commit is appended before its COMMITTING row is
 * synced, and a power loss can keep the one without the other).  Without
 * it a new commit could take a sequence the log already has and be taken
 * for a duplicate.  0 or -errno. */
int halfstore_seq_floor(sqlite3 *db, const char *topic, int32_t partition, int64_t next_seq);

/* txn_id's state and commit_seq (-1: none), read without its strings or
 * batch.  HALFSTORE_OK, HALFSTORE_E_NOT_FOUND or -errno. */
int halfstore_state_seq(sqlite3 *db, int64_t txn_id, enum halfstore_state *state,
			int64_t *commit_seq);
/* Start-up, after a power loss: the partition's next commit_seq as SQLite
 * has it (0: none taken yet) and the log offset of its highest-sequenced
 * commit whose offset is recorded (-1: none), with that commit's sequence
 * (*last_seq, if not NULL).  Commits the log holds at or above *next_seq
 * lost their rows; they were appended after *last_offset, so the log is
 * searched for their markers from there (if that commit is there: the
 * row may be of a deleted topic of the same name).  0 or -errno. */
int halfstore_seq_state(sqlite3 *db, const char *topic, int32_t partition, int64_t *next_seq,
			int64_t *last_offset, int64_t *last_seq);

/* Start-up: a commit found in the log (its marker, broker/txn_marker.h,
 * followed by its batch at log_offset) whose row was lost with the WAL: the
 * txn, PENDING, DISCARDED or COMMITTING without a commit_seq (released
 * after a failed append; the retry that sequenced it again was lost),
 * becomes COMMITTED with
 * commit_seq, log_offset and ended_ms = now_ms, its batch dropped, as if
 * its end and mark had been kept.  HALFSTORE_OK; HALFSTORE_OK_ALREADY if it
 * is COMMITTED with that commit_seq already (a second start-up);
 * HALFSTORE_E_NOT_FOUND; HALFSTORE_E_STATE (any other state, or another
 * topic or partition: nothing changed); or -errno. */
int halfstore_reattach(sqlite3 *db, int64_t txn_id, const char *topic, int32_t partition,
		       int64_t commit_seq, int64_t log_offset, int64_t now_ms);

/* Everything in COMMITTING, and the COMMITTED rows whose log copy was not
 * synced yet (halfstore_mark_committed_unsynced) — crash recovery
 * re-appends them all, exactly once — batches included, ordered by topic,
 * partition, commit_seq — those without one (halfstore_unseq) last in
 * their partition, by txn_id.  HALFSTORE_OK with
 * *out (malloc()ed, NULL if *n == 0) and *n, or -errno with both untouched. */
int halfstore_committing(sqlite3 *db, halfstore_txn **out, size_t *n);

/* Leases up to limit PENDING txns due at now_ms (next_check_ms <= now_ms
 * and lease expired), earliest next_check_ms first (ties: oldest txn_id),
 * by setting lease_until_ms and next_check_ms to now_ms + lease_ms: they are
 * not returned again until then (a check not answered by then is due
 * again).  An index range scan, whatever the number of pending rows.
 * Rows come with their batch (the producer checks against it).  HALFSTORE_OK with *out and *n (as above), or -errno
 * with both untouched (and nothing leased). */
int halfstore_due_checks(sqlite3 *db, int64_t now_ms, size_t limit, int64_t lease_ms,
			 halfstore_txn **out, size_t *n);

/* A check leased by halfstore_due_checks that was never handed to a
 * producer (the group's pollers were all busy between two polls, or the
 * check rate ran out): lease released, due again at next_check_ms,
 * check_count unchanged — instead of waiting out the whole lease.
 * HALFSTORE_OK, HALFSTORE_E_STATE (not PENDING, or not leased: nothing
 * changes), HALFSTORE_E_NOT_FOUND or -errno. */
int halfstore_release_lease(sqlite3 *db, int64_t txn_id, int64_t next_check_ms);

/* check_no of halfstore_check_answer for a check whatever its number. */
#define HALFSTORE_ANY_CHECK (-1)

/* A check of a PENDING txn got no decision: check_count + 1, lease
 * released; next_check_ms = checksched_next_check(policy, check_count,
 * now_ms), or, at policy->max_checks, -> DISCARDED with a reason.
 * check_no >= 0: only if that is still the row's check_count (the check
 * answered is the row's current one), else nothing changes and the
 * answer is HALFSTORE_OK_ALREADY with *state PENDING — a second hand-out
 * under the same number (the row's lease ran out just before the
 * scheduler's) must not count twice.
 * HALFSTORE_OK with *state (PENDING or DISCARDED; state may be NULL),
 * HALFSTORE_E_STATE (it has ended meanwhile; nothing changes),
 * HALFSTORE_E_NOT_FOUND, HALFSTORE_E_INVALID (answer), or -errno. */
int halfstore_check_answer(sqlite3 *db, int64_t txn_id, enum halfstore_answer answer,
			   int32_t check_no, int64_t now_ms, const checksched_policy *policy,
			   enum halfstore_state *state);

/* Operator: DISCARDED -> PENDING with check_count 0, due at now_ms, reason,
 * ended_ms, commit_seq (which an older version's discard could leave) and
 * the dead-letter copy's offset, sequence and partition cleared (a second
 * discard is copied to the dead-letter topic again, as a new copy).
 * HALFSTORE_OK, HALFSTORE_E_STATE, HALFSTORE_E_NOT_FOUND or -errno. */
int halfstore_resume(sqlite3 *db, int64_t txn_id, int64_t now_ms);

/* One txn with its batch.  HALFSTORE_OK with *out (caller clears),
 * HALFSTORE_E_NOT_FOUND or -errno (*out not written). */
int halfstore_get(sqlite3 *db, int64_t txn_id, halfstore_txn *out);

/* Up to limit txns of group (NULL: all groups) whose state is in
 * state_mask (HALFSTORE_MASK bits), with txn_id > after_txn_id, by txn_id:
 * page on with the last txn_id returned.  Rows come without batch.
 * HALFSTORE_OK with *out and *n, HALFSTORE_E_INVALID (mask 0) or -errno. */
int halfstore_list(sqlite3 *db, const char *group, unsigned state_mask, size_t limit,
		   int64_t after_txn_id, halfstore_txn **out, size_t *n);

/* Count of txns in state (of group; NULL = all).  >= 0, or -errno. */
int64_t halfstore_count(sqlite3 *db, const char *group, enum halfstore_state state);

/* Deletes up to limit ended txns (COMMITTED, ROLLED_BACK, and DISCARDED if
 * include_discarded) whose ended_ms < before_ms.  Returns how many
 * (>= 0), or -errno. */
int64_t halfstore_purge(sqlite3 *db, int64_t before_ms, bool include_discarded, size_t limit);

/* A topic was deleted: its PENDING txns -> DISCARDED ("topic deleted"),
 * and its COMMITTED rows that kept their batch drop it.  Its txn_seq rows
 * stay: a re-created topic's commits continue the sequences (its
 * partitions accept them as an unknown producer's), so that a commit of
 * the old topic that reaches the new one in a race (sequenced just before
 * the deletion, appended just after the re-creation) is below them, not
 * above, where it would make them look appended long ago.
 * Txns already COMMITTING keep their state (their append will fail and the
 * broker marks them with halfstore_discard).  Returns how many were
 * discarded, or -errno. */
int64_t halfstore_drop_topic(sqlite3 *db, const char *topic, int64_t now_ms);

/* Operator / broker: PENDING or COMMITTING -> DISCARDED with reason
 * (copied).  The broker discards a COMMITTING txn only after an append
 * that wrote nothing and never will (topic deleted, batch larger than
 * segment.bytes), so its commit_seq is released: an operator's later
 * commit takes a new one (halfstore_unseq says why not the old one).
 * HALFSTORE_OK, HALFSTORE_E_STATE, HALFSTORE_E_NOT_FOUND, or -errno. */
int halfstore_discard(sqlite3 *db, int64_t txn_id, const char *reason, int64_t now_ms);

/* Dead-letter topic (transaction.dead.letter.topic).  Each copy is
 * appended exactly once, with the idempotent-producer machinery as commits
 * are: it is *numbered* (dead_letter_seq, dead_letter_partition) in
 * SQLite before it is appended, and appended as an idempotent batch of the
 * reserved producer HALFSTORE_DEAD_PID with that sequence
 * (halfstore_commit_epoch / _base_seq of it), so appending it again after a
 * crash is recognised as a duplicate of the first append.
 *
 * Up to limit DISCARDED txns without a recorded copy, with their batches:
 * first those numbered before, by partition and sequence (index
 * txn_half_dead_out), then new ones by txn_id (index txn_half_dead).  If
 * nparts > 0 (the topic's partition count) the new ones are numbered now:
 * partition txn_id % nparts, the next sequences of txn_dead_seq for it,
 * and *numbered is true — the caller must have this durable before it
 * appends them (a power loss could else keep a copy and lose its number).
 * With nparts 0 (no topic) they are returned unnumbered.  0 with *out
 * (halfstore_txns_free) and *n, or -errno (nothing numbered). */
int halfstore_dead_letters(sqlite3 *db, size_t limit, int32_t nparts, halfstore_txn **out,
			   size_t *n, bool *numbered);
/* Dead-letter copies are idempotent batches of this reserved producer id
 * (InitProducerId allocates from 1000; commits use 1). */
#define HALFSTORE_DEAD_PID 2
/* The dead-letter topic's identity (its topic id), before copies are
 * numbered for it or repaired (halfstore_dead_lost).  Numbers and records
 * belong to one topic: if they were made for another (the topic deleted
 * and re-created, or transaction.dead.letter.topic changed), the copies
 * numbered and not yet recorded lose their numbers, so that the next
 * halfstore_dead_letters numbers them for this topic's partitions, and
 * id becomes the topic they belong to.  0: id was theirs already, or the
 * first (nothing to change); 1 + how many copies lost their numbers: it
 * was another's; or -errno (nothing changed). */
int64_t halfstore_dead_topic(sqlite3 *db, const uint8_t id[16]);
/* Start-up, after the log of the dead-letter topic's partition was
 * recovered: copies recorded at an offset at or beyond its end (log_end)
 * and numbered after the last sequence it holds (last_seq, packed as
 * commit sequences are; -1 if none) were lost by a power loss after their
 * record: their offset is cleared, so they are appended again, with their
 * number.  How many, or -errno. */
int64_t halfstore_dead_lost(sqlite3 *db, int32_t partition, int64_t log_end, int64_t last_seq);
/* dead_letter_offset of a txn whose copy can never be written (larger
 * than the topic's segments, unreadable): not tried again. */
#define HALFSTORE_DEAD_GIVEN_UP (-2)
/* dead_letter_offset of a txn whose copy the log holds, at an offset no
 * longer known (its record was lost and the log's dedup window no longer
 * has it; the append limits make this a should-not-happen). */
#define HALFSTORE_DEAD_UNKNOWN (-3)
/* Records that a DISCARDED txn's copy is at offset (>= 0) of the
 * dead-letter topic, HALFSTORE_DEAD_GIVEN_UP or HALFSTORE_DEAD_UNKNOWN.  HALFSTORE_OK; HALFSTORE_E_STATE if it was resumed
 * or recorded meanwhile; HALFSTORE_E_NOT_FOUND; HALFSTORE_E_INVALID;
 * -errno. */
int halfstore_mark_dead_lettered(sqlite3 *db, int64_t txn_id, int64_t offset);

#endif
