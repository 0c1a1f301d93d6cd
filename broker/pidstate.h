/*
 * pidstate.h — idempotent-producer state of one partition: for each
 * producer id, its epoch and its last 5 batches (sequence range and
 * offsets), as Kafka keeps it.  A retried batch that matches one of them is
 * a duplicate: the broker answers with the original offset and appends
 * nothing, so a retry never duplicates a message.
 *
 * Durability: the state is rebuilt at start-up from a snapshot file
 * (<partition dir>/producers.snapshot, written by the syncer after each
 * recovery checkpoint) plus the batch headers of the log after the
 * snapshot's offset (pidstate_observe for each).  Snapshot format, version 1,
 * big-endian:  magic "SLPS" u32, version u32, covered_end i64, count u32,
 * then per producer: pid i64, epoch i16, nbatches u8, then nbatches x
 * (first_seq i32, last_seq i32, base_offset i64, last_offset i64), then
 * crc32c u32 of everything before.  A file that does not check out is
 * ignored (the caller then scans the whole log).
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
/* Records an appended batch.  Returns 0 or -ENOMEM. */
int pidstate_record(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		    int64_t base_offset, int64_t last_offset);
/* Same as record, for batches replayed from the log at start-up (no
 * checks: the log is the truth). */
int pidstate_observe(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		     int64_t base_offset, int64_t last_offset);

/* Serializes the state as covering offsets below covered_end (batches at
 * or above it are left out).  *out is
 * malloc()ed; returns its length or -ENOMEM. */
long pidstate_encode(const pidstate *ps, int64_t covered_end, uint8_t **out);
/* Replaces the state with a decoded snapshot; returns 0 with
 * *covered_end, or -EINVAL if the bytes are not a valid snapshot (state
 * unchanged). */
int pidstate_decode(pidstate *ps, const uint8_t *buf, size_t len, int64_t *covered_end);

size_t pidstate_count(const pidstate *ps);
/* Last sequence recorded for pid in epoch, or -1 (unknown pid or other
 * epoch). */
int32_t pidstate_last_seq(const pidstate *ps, int64_t pid, int16_t epoch);
/* The epoch and last sequence of pid's latest batch: 0, or -ENOENT if pid
 * has none. */
int pidstate_last(const pidstate *ps, int64_t pid, int16_t *epoch, int32_t *last_seq);

#endif
