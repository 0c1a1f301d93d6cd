/*
 * pidstate.h — idempotent-producer state of one partition: for each
 * producer id, its epoch and its last 5 batches (sequence range and
 * offsets), as Kafka keeps it.  A retried batch that matches one of them is
 * a duplicate: the broker answers with the original offset and appends
 * nothing, so a retry never duplicates a message.
 *
 * Durability: the state is rebuilt at start-up from a snapshot file
 * (<partition dir>/producers.snapshot, written by the syncer after each
 * recovery checkpoint and by each expiry pass that removed producers)
 * plus the batch headers of the log after the snapshot's offset
 * (pidstate_observe for each).  Snapshot format, version 2, big-endian:
 * magic "SLPS" u32, version u32, covered_end i64, count u32, then per
 * producer: pid i64, epoch i16, last_write_ms i64, nbatches u8, then
 * nbatches x (first_seq i32, last_seq i32, base_offset i64, last_offset
 * i64), then crc32c u32 of everything before.  Version 1 is the same
 * without last_write_ms; it still loads, its producers taking the load
 * time as their last write.  A file that does not check out is ignored
 * (the caller then scans the whole log).  Changing the layout: bump the
 * version, keep decoding the old ones (a snapshot outlives an upgrade),
 * and update docs/storage.md.
 *
 * Expiry: each producer remembers when it last wrote (last_write_ms, the
 * broker's wall clock, never a batch's timestamp: see pidstate_record).
 * pidstate_expire forgets the client producers idle for
 * producer.id.expiration.ms, as Kafka does; the broker's own (ids below
 * PIDSTATE_FIRST_CLIENT_PID) are never forgotten.
 *
 * Threads: not thread-safe; the owner (struct partition) serializes calls
 * with its pid_lock.
 */
#ifndef SLUICE_PIDSTATE_H
#define SLUICE_PIDSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PIDSTATE_WINDOW 5
/* Producer ids below this one are the broker's own (transaction commits
 * 1, dead-letter copies 2: txn/halfstore.h); InitProducerId hands out ids
 * from here on, and Produce refuses a client batch with a lower one, which
 * would fence or disorder the broker's sequences. */
#define PIDSTATE_FIRST_CLIENT_PID 1000

/* The sequence delta records after base, wrapping past INT32_MAX to 0 as
 * Kafka's do (DefaultRecordBatch.incrementSequence): a batch's last
 * sequence is pidstate_seq_add(baseSequence, lastOffsetDelta).  delta >= 0. */
static inline int32_t pidstate_seq_add(int32_t base, int32_t delta)
{
	if (base > INT32_MAX - delta)
		return delta - (INT32_MAX - base) - 1;
	return base + delta;
}

enum pidstate_verdict {
	PIDSTATE_APPEND = 0,       /* new batch, in sequence: append it */
	PIDSTATE_DUPLICATE = 1,    /* already appended: answer with *dup_base */
	PIDSTATE_OUT_OF_ORDER = 2, /* OUT_OF_ORDER_SEQUENCE_NUMBER (45) */
	PIDSTATE_FENCED = 3,       /* older epoch: INVALID_PRODUCER_EPOCH (47) */
	PIDSTATE_UNKNOWN_PID = 4,  /* first batch of a producer not at sequence 0:
	                              UNKNOWN_PRODUCER_ID (59) */
};

typedef struct pidstate pidstate;

pidstate *pidstate_new(void);
void pidstate_free(pidstate *ps); /* accepts NULL */

/* Decides what to do with a batch (producer id >= 0).  On DUPLICATE,
 * *dup_base is the offset the batch got the first time. */
int pidstate_check(const pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq,
		   int32_t last_seq, int64_t *dup_base);
/* Records an appended batch.  now_ms is the broker's wall clock at the
 * append and becomes pid's last write: a client's CreateTime can be
 * anything (far future: the producer would never expire; ancient: it
 * would expire as it writes).  Returns 0 or -ENOMEM. */
int pidstate_record(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		    int64_t base_offset, int64_t last_offset, int64_t now_ms);
/* Same as record, for batches replayed from the log at start-up (no
 * checks: the log is the truth).  now_ms is the time of the recovery: the
 * batch was written between the snapshot and the stop, so its producer is
 * kept at least producer.id.expiration.ms from the restart (never less
 * than it would have been kept without the restart). */
int pidstate_observe(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		     int64_t base_offset, int64_t last_offset, int64_t now_ms);

/* Forgets the producers whose last write is expiration_ms or more before
 * now_ms, except
 *  - the broker's own (pid < PIDSTATE_FIRST_CLIENT_PID): transaction
 *    commits and dead-letter copies rely on their state to append each
 *    commit exactly once, however long a partition goes without one;
 *  - a producer with a batch at or above covered_end (the caller passes
 *    the log's durable end): in fsync durability its acknowledgement may
 *    still be waiting for that sync, and a retry of it must still be
 *    recognised as a duplicate; it expires at a later pass.
 * A last write ahead of now_ms (the wall clock stepped back) is pulled
 * back to now_ms, so no producer outlives expiration_ms past the pass.
 * A forgotten producer is unknown again: its next batch is accepted at
 * sequence 0 and answered UNKNOWN_PRODUCER_ID otherwise (pidstate_check),
 * as in Kafka.  Returns how many were removed. */
size_t pidstate_expire(pidstate *ps, int64_t now_ms, int64_t expiration_ms, int64_t covered_end);

/* Serializes the state as covering offsets below covered_end (batches at
 * or above it are left out).  *out is
 * malloc()ed; returns its length or -ENOMEM. */
long pidstate_encode(const pidstate *ps, int64_t covered_end, uint8_t **out);
/* Replaces the state with a decoded snapshot (version 1 or 2; now_ms is
 * the last write of a version 1 file's producers); returns 0 with
 * *covered_end, or -EINVAL if the bytes are not a valid snapshot (state
 * unchanged). */
int pidstate_decode(pidstate *ps, const uint8_t *buf, size_t len, int64_t now_ms,
		    int64_t *covered_end);

size_t pidstate_count(const pidstate *ps);
/* Last sequence recorded for pid in epoch, or -1 (unknown pid or other
 * epoch). */
int32_t pidstate_last_seq(const pidstate *ps, int64_t pid, int16_t epoch);
/* The epoch and last sequence of pid's latest batch: 0, or -ENOENT if pid
 * has none. */
int pidstate_last(const pidstate *ps, int64_t pid, int16_t *epoch, int32_t *last_seq);
/* pid's last write (ms): 0, or -ENOENT if pid is unknown. */
int pidstate_last_write(const pidstate *ps, int64_t pid, int64_t *ms);

#endif
