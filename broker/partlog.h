/*
 * partlog.h — one partition's log: a directory of segments
 * (<dir>/<base offset, 20 digits>.log, .index, .timeindex) plus a recovery
 * checkpoint (<dir>/recovery.ckpt).  Formats: docs/storage.md and the top
 * comment of partlog.c / segment.c.
 *
 * What it owns: the segment files and their in-memory state, the offset
 * counter, the visible end (high watermark).
 *
 * Threads:
 *  - partlog_append, partlog_append_v: any event-loop thread; appends to one
 *    partlog are serialized by an internal mutex (the append lock).
 *  - Readers (partlog_read, partlog_hw, partlog_start_offset,
 *    partlog_end_offset, partlog_offset_for_time): any thread, concurrently
 *    with appends; they never take the append lock.  They see only offsets
 *    below the published high watermark.
 *  - partlog_sync, partlog_sync_data, partlog_checkpoint, partlog_retention,
 *    partlog_fill_ahead: the broker's sync thread only (one caller at a
 *    time).
 *  - partlog_open / partlog_close / partlog_set_conf: the owner, when no other
 *    thread uses the partlog (start-up, shutdown, topic deletion after all
 *    references are gone).  partlog_set_conf may also be called while the
 *    partlog is in use: it swaps the values (atomic loads) and, leaving
 *    synced mode, publishes under the append lock.
 *
 * Visibility: in page-cache mode (conf.synced = false) an append
 * publishes the new end at once; in synced mode the end moves only when
 * partlog_sync has made the bytes durable, so consumers only see synced data.
 *
 * Errors: negative -errno is an I/O failure (ENOSPC: disk full, EIO, ...);
 * positive PARTLOG_E_* are documented outcomes the caller translates to
 * Kafka codes.
 */
#ifndef SLUICE_PARTLOG_H
#define SLUICE_PARTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum partlog_err {
	PARTLOG_OK = 0,
	PARTLOG_E_OFFSET_OUT_OF_RANGE = 1, /* offset < log start or > high watermark */
	PARTLOG_E_CORRUPT = 2,             /* a stored batch does not parse (reader side) */
	PARTLOG_E_TOO_LARGE = 3,           /* batch bigger than segment_bytes allows */
};

typedef struct partlog_conf {
	uint64_t segment_bytes;        /* roll when the next batch would pass this */
	int64_t segment_ms;            /* roll when the active segment is older */
	int64_t retention_ms;          /* -1: keep forever */
	int64_t retention_bytes;       /* -1: no size limit */
	uint32_t index_interval_bytes; /* bytes between sparse index entries */
	bool synced;                   /* true: visible end moves only on sync */
} partlog_conf;

typedef struct partlog partlog;

/* Opens (creating if needed) the log in dir.  Recovery: reads
 * recovery.ckpt; only bytes after the checkpointed position are scanned,
 * batch by batch (length, magic, CRC); the log is truncated at the first
 * invalid batch, later segments are deleted, and the indexes of that
 * segment are rebuilt from the scan.  Segments before the checkpoint are
 * trusted and their indexes loaded lazily, so start-up time does not grow
 * with the total log size.  On success *out is a new partlog owned by the
 * caller; on failure *out is unchanged and a -errno is returned.
 * *truncated_bytes (if not NULL) receives how many bytes recovery cut. */
int partlog_open(const char *dir, const partlog_conf *conf, partlog **out,
		 uint64_t *truncated_bytes);

/* Writes a final checkpoint if everything is synced (the caller syncs first
 * on a clean shutdown), closes files, frees.  Accepts NULL. */
void partlog_close(partlog *pl);

/* Switching synced mode off publishes everything appended so far (the
 * caller then wakes the partition's waiters). */
void partlog_set_conf(partlog *pl, const partlog_conf *conf);

/* Appends one batch already validated by recbatch_validate.  Assigns
 * offsets by rewriting baseOffset in `batch` (the caller's buffer is
 * modified), rolls the segment first if needed, writes with one pwrite, adds
 * index entries, and (page-cache mode) publishes.  On success *base_offset
 * is the batch's first offset and the result is 0.  On a failed or short
 * write the segment is truncated back so no partial batch stays, and -errno
 * (e.g. -ENOSPC) is returned.  `max_ts` is the batch's largest timestamp
 * (for the time index); `now_ms` the wall clock (for segment_ms).  Returns
 * -EINVAL if batch is not one whole batch (length field) or has a negative
 * lastOffsetDelta, PARTLOG_E_TOO_LARGE if len > segment_bytes.  On failure
 * *base_offset is unchanged.  It is partlog_append_v with n = 1. */
int partlog_append(partlog *pl, uint8_t *batch, size_t len, int64_t max_ts,
		   int64_t now_ms, int64_t *base_offset);

/* One batch of a partlog_append_v. */
typedef struct partlog_batch {
	uint8_t *batch;      /* in: a RecordBatch v2 (its base offset is set here) */
	size_t len;
	int64_t max_ts;      /* in: largest timestamp, for the time index */
	int64_t base_offset; /* out: where it landed, once appended */
} partlog_batch;

/* Appends v[0..n) in order, as n partlog_append calls would (same offsets,
 * segment rolls, visibility, errors), with one log write per run
 * of batches that land in the same segment (at most SEGMENT_APPEND_MAX,
 * 256, per run) and at most one write per index file per run.  Stops at
 * the first batch that cannot be appended: *nappended (always set) counts
 * the prefix v[0..*nappended) that is in the log with base_offset set, and
 * the return value is that batch's error (PARTLOG_E_TOO_LARGE, -EINVAL,
 * -errno; a failed write leaves nothing of its run, whose batches keep a
 * rewritten baseOffset but no base_offset); 0 when all n are appended
 * (also for n = 0).  Each run is published (page-cache mode) as soon as it
 * is written.  The batch buffers are modified (baseOffset) and not kept
 * after the call.  Same thread rules as partlog_append. */
int partlog_append_v(partlog *pl, partlog_batch *v, size_t n, int64_t now_ms,
		     size_t *nappended);

/* Published end offset (high watermark): offsets below it are readable. */
int64_t partlog_hw(const partlog *pl);
/* The end offset of the last completed sync (partlog_sync / _sync_data,
 * or the open's recovery): offsets below it are on disk, whatever the
 * durability.  Any thread. */
int64_t partlog_durable_end(const partlog *pl);
/* First offset still in the log (moves with retention). */
int64_t partlog_start_offset(const partlog *pl);
/* Next offset to assign (written end, may be ahead of hw in synced mode). */
int64_t partlog_end_offset(const partlog *pl);
/* Total bytes of all segments. */
uint64_t partlog_size_bytes(const partlog *pl);

/* A byte range of one segment file to send as-is (whole batches).  `seg`
 * holds a reference that keeps fd open even if retention deletes the
 * segment; release it with partlog_range_release. */
typedef struct partlog_range {
	struct segment *seg;
	int fd;
	off_t pos;
	size_t len;           /* 0: nothing to send (offset == hw) */
	int64_t first_offset; /* base offset of the first batch in the range */
} partlog_range;

/* Finds the batches to serve a fetch at `offset`: starts at the batch that
 * contains offset (or the first batch after it), stops at max_bytes on a
 * batch boundary but always includes at least one whole batch if any is
 * visible (KIP-74), never passes the high watermark, and stays within one
 * segment (a consumer asks again for the rest).  Returns 0 with *out
 * filled (out->len may be 0 when offset == hw), PARTLOG_E_OFFSET_OUT_OF_RANGE
 * if offset < start or > hw, or -errno.  On success the caller must call
 * partlog_range_release(out), even when len == 0. */
int partlog_read(partlog *pl, int64_t offset, size_t max_bytes, partlog_range *out);
void partlog_range_release(partlog_range *r);

/* ListOffsets by timestamp: the first offset whose batch has a timestamp >=
 * ts (Kafka semantics: first batch whose maxTimestamp >= ts).  Returns 0
 * with *offset and *found_ts, or 0 with *offset = -1 and *found_ts = -1 when
 * no such message exists, or -errno. */
int partlog_offset_for_time(partlog *pl, int64_t ts, int64_t *offset, int64_t *found_ts);

/* Sync thread.  True if bytes were appended since the last partlog_sync. */
bool partlog_dirty(const partlog *pl);
/* fdatasync()s every segment (and index) written since the last sync; in
 * synced mode publishes the synced end as the new high watermark.
 * *synced_end receives the end offset now durable.  Returns 0 or -errno.
 * A failure is for good: this and every later sync and append return it
 * (Linux reports a writeback error once and may drop the pages it could
 * not write; a later sync that succeeded would vouch for bytes not on
 * disk).  A restart's recovery rescans from the last good checkpoint. */
int partlog_sync(partlog *pl, int64_t *synced_end);
/* The same, but the active segment's index files are left for the next
 * partlog_checkpoint (rolled segments are synced whole): what an
 * acknowledgement needs is the batches; after a crash the indexes past
 * the checkpoint are rebuilt from the log anyway.  One fdatasync instead
 * of three per sync of a busy partition. */
int partlog_sync_data(partlog *pl, int64_t *synced_end);
/* True once a sync of the log failed for good (the failure sticks until a
 * restart: see partlog_sync); false after a passing failure such as no
 * memory for the sync's snapshot, which the next sync retries.  Any
 * thread. */
bool partlog_sync_failed(partlog *pl);
/* Synced mode: keeps the active segment's file written (with zeros) at
 * least bytes / 2 past its last batch, writing up to `bytes` past it
 * (never past segment_bytes) when less is left, so that the fdatasync after
 * an append rewrites blocks the file has instead of growing it: on ext4 it
 * then skips the journal commit, about half the cost on the path of every
 * fsync acknowledgement (bench/sync_shapes, docs/storage.md).  The zeros
 * reach the disk with the next sync.  An append that would reach the
 * zeros being written waits for them (under the append lock).  A no-op in
 * page-cache mode, with bytes = 0, and when more than bytes / 2 were
 * appended to the segment since the previous call (the caller calls once
 * per sync: at that rate the data, not the journal commit, makes the
 * sync's cost, and zeros would double the bytes written).  Returns 0 or
 * -errno (a failed fill, e.g. a full disk, costs speed only: appends then
 * grow the file as before). */
int partlog_fill_ahead(partlog *pl, uint64_t bytes);
/* Records the last synced position in recovery.ckpt (two alternating slots
 * with a sequence number and a CRC, so a torn write falls back to the other
 * slot), after syncing the index files a partlog_sync_data left, so that
 * everything before the position, indexes included, is durable.  Returns
 * 0 or -errno. */
int partlog_checkpoint(partlog *pl);
/* The same, calling serve(arg) between the index sync and the write of
 * the checkpoint (the sync thread answers acknowledgements there, so they
 * wait behind the index sync or the slot's write, not both). */
int partlog_checkpoint_serving(partlog *pl, void (*serve)(void *arg), void *arg);
/* Deletes whole old segments (never the active one) by retention_ms
 * (segment's largest timestamp older than now - retention_ms) and
 * retention_bytes (oldest first while the rest stays above the limit).
 * Advances the start offset.  *deleted receives the count. */
int partlog_retention(partlog *pl, int64_t now_ms, int *deleted);

/* Deletes every file of the log and the directory (topic deletion).  The
 * caller ensures nobody else uses pl; pl is freed.  Returns 0 or -errno. */
int partlog_destroy(partlog *pl);

#endif
