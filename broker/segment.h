/*
 * segment.h — one segment of a partition log: <base>.log with its sparse
 * offset index (.index) and time index (.timeindex).  File formats: the top
 * comment of segment.c.
 *
 * What it owns: the three files of one segment, their fds, and the in-memory
 * copy of both indexes.  A segment is reference counted (atomic): partlog's
 * list holds one reference, a fetch range another, so the .log fd stays
 * valid while sendfile() uses it even after retention unlinked the files.
 *
 * Threads and locks:
 *  - Writers (segment_append, segment_append_v, segment_recover) run under
 *    the owner's append lock (partlog's), or before the segment is shared
 *    (open/recovery).  One writer at a time.
 *  - segment_sync, segment_sync_data, segment_sync_index,
 *    segment_close_index, segment_fill, segment_trim: partlog's sync
 *    thread (segment_trim also the owner at close).
 *  - Readers (segment_find, segment_find_time, segment_lookup*,
 *    segment_max_timestamp, segment_visible): any thread.  They take the
 *    segment's own index lock (held for a binary search or a lazy load,
 *    never across the log writes), never the append lock.
 *  - size / end offset / visible are atomics: size and end are stored by the
 *    writer; visible is what readers may read, advanced with release
 *    semantics by segment_publish (monotonic).
 *
 * Errors: negative -errno for I/O; SEGMENT_E_CORRUPT when a stored batch
 * header does not parse.
 */
#ifndef SLUICE_SEGMENT_H
#define SLUICE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum segment_err {
	SEGMENT_OK = 0,
	SEGMENT_E_CORRUPT = 1, /* a batch header in the visible range is invalid */
};

#define SEGMENT_NAME_DIGITS 20
#define SEGMENT_INDEX_ENTRY_SIZE 8      /* uint32 relative offset, uint32 position */
#define SEGMENT_TIMEINDEX_ENTRY_SIZE 12 /* int64 timestamp, uint32 relative offset */
/* Most batches one segment_append_v takes (well below IOV_MAX, 1024). */
#define SEGMENT_APPEND_MAX 256

typedef struct segment segment;

/* ---- new / free ---- */

/* Creates an empty segment <dir>/<base>.log, .index, .timeindex (any
 * existing files of that name are truncated: a base offset at or past the
 * log end never holds valid data).  On success *out holds one reference and
 * the index is in memory (empty).  On failure *out is unchanged, nothing is
 * left on disk that was not there, and -errno is returned.  `dir` is copied. */
int segment_create(const char *dir, int64_t base, segment **out);

/* Opens an existing segment without reading it: opens the .log and stats
 * it; visible = size = file size.  The indexes are loaded on first lookup.
 * end_offset is the offset after its last batch when the caller knows it
 * (the next segment's base), else -1; it bounds index validation.
 * `interval` is the index interval used to re-derive entries missing from
 * the files.  On failure *out is unchanged and -errno is returned. */
int segment_open(const char *dir, int64_t base, int64_t end_offset, uint32_t interval,
		 segment **out);

void segment_ref(segment *s);
/* Drops a reference; the last one closes the fds and frees.  Accepts NULL. */
void segment_unref(segment *s);

/* Deletes the three files.  Open fds (and references) stay valid.
 * Returns 0 or the first -errno (ENOENT is not an error). */
int segment_unlink(segment *s);

/* ---- recovery (before the segment is shared) ---- */

typedef struct segment_scan {
	int64_t end_offset;       /* offset after the last good batch */
	uint64_t truncated_bytes; /* bytes cut from the end of the .log */
	bool bad;                 /* the scan stopped at an invalid batch */
} segment_scan;

/* Trusts bytes [0, pos) (whose batches end at offset `expected`), keeps the
 * index entries that point inside them, then checks every batch from pos to
 * the end of the file: size, header, CRC-32C, and that its baseOffset is the
 * expected next offset.  The .log is truncated at the first invalid batch
 * (bad; truncated_bytes counts what was cut) or where only zeros follow up
 * to the end of the file (segment_fill's: not bad, none counted);
 * index entries for the good batches after pos are rebuilt (the index files
 * are rewritten from there).  Reads only the bytes after pos plus at most
 * ~interval bytes of headers before it (to recover the largest timestamp).
 * Fills *res and returns 0, or -errno (the files may then be partly
 * rewritten; the caller fails the open). */
int segment_recover(segment *s, uint64_t pos, int64_t expected, uint32_t interval,
		    segment_scan *res);

/* ---- writer ---- */

/* Appends batches[0..n), 1 <= n <= SEGMENT_APPEND_MAX, at the current
 * size: RecordBatch v2 whose baseOffsets are already assigned, the first
 * one the segment's end offset, each next one the previous baseOffset +
 * lastOffsetDelta + 1.  max_ts[i] is batch i's largest timestamp.  The
 * result (the three files, the in-memory indexes, size, end offset) is
 * exactly that of n segment_append calls in a row, index entries in the
 * middle of the group included, but written with one fileio_pwritev_all
 * for the .log and at most one fileio_pwrite_all per index file (memory
 * is reserved first: nothing can fail once the bytes are on disk).
 * Nothing is published: the caller raises `visible` (segment_publish).
 * Returns 0, or -EINVAL (n out of range, a batch shorter than its header,
 * a negative lastOffsetDelta, an offset before the base, more than
 * UINT32_MAX past it or not contiguous, the .log would reach 4 GiB) with
 * nothing written, or -errno (-ENOMEM, a failed write: the .log and index
 * files are truncated back, nothing of the group stays, the segment is
 * unchanged).  The caller's iovecs and buffers are only read, and not
 * kept after the call.  Writer only (see the thread rules above). */
int segment_append_v(segment *s, const struct iovec *batches, int n, const int64_t *max_ts,
		     uint32_t interval);
/* segment_append_v of the one batch [batch, batch + len) with largest
 * timestamp max_ts. */
int segment_append(segment *s, const uint8_t *batch, size_t len, int64_t max_ts,
		   uint32_t interval);

/* Writes zeros over [from, to) of the .log, past the last batch (from >=
 * size, to - from <= 64 MiB), with one pwritev: a later append there, and
 * the fdatasync after it, rewrite blocks the file already has instead of
 * growing it (on ext4 that sync skips the journal commit: about half the
 * cost, bench/sync_shapes).  The caller makes sure no append writes at or
 * past `from` until it returns (partlog_fill_ahead).  Returns 0 (filled
 * is then `to`), -EINVAL, or -errno (some zeros may be written: harmless,
 * recovery and segment_trim cut them). */
int segment_fill(segment *s, uint64_t from, uint64_t to);
/* Cuts the zeros segment_fill wrote past the last batch (a no-op without
 * them).  For a segment that will not be written any more.  0 or -errno. */
int segment_trim(segment *s);

/* fdatasync()s the .log and the index files still open.  0 or -errno. */
int segment_sync(segment *s);
/* The two halves of segment_sync: the .log only; the index files only
 * (indexes are rebuilt from the log after a crash, so a sync that only
 * has to make appended batches durable can leave them to a later
 * segment_sync_index — partlog.h's checkpoint). */
int segment_sync_data(segment *s);
int segment_sync_index(segment *s);
/* Closes the index fds of a segment that will not be written any more
 * (rolled and synced); later index reads reopen the files. */
void segment_close_index(segment *s);

/* ---- accessors ---- */

int64_t segment_base(const segment *s);
/* The .log fd; valid as long as the caller holds a reference. */
int segment_fd(const segment *s);
/* Bytes written. */
uint64_t segment_size(const segment *s);
/* Bytes of the .log holding batches or segment_fill's zeros (>= size). */
uint64_t segment_filled(const segment *s);
/* Offset after the last written batch (-1 if unknown: an old segment whose
 * successor is unknown). */
int64_t segment_end_offset(const segment *s);
/* Bytes readers may read (acquire). */
uint64_t segment_visible(const segment *s);
/* Raises visible to `size` if larger (release).  Any thread. */
void segment_publish(segment *s, uint64_t size);

/* ---- readers ---- */

typedef struct segment_span {
	uint64_t pos;         /* file position of the first batch */
	size_t len;           /* whole batches; 0: none */
	int64_t first_offset; /* baseOffset of the first batch */
} segment_span;

/* Finds the batch containing `offset` (or the first one after it) among the
 * batches that end at or before `limit` bytes and have baseOffset < hw,
 * then adds following batches while the total stays <= max_bytes (the first
 * batch is always included whatever its size).  Returns 0 with *out (len 0
 * when no such batch), SEGMENT_E_CORRUPT, or -errno. */
int segment_find(segment *s, int64_t offset, uint64_t limit, int64_t hw, size_t max_bytes,
		 segment_span *out);

/* First batch (within limit and hw as above) whose maxTimestamp >= ts: 0
 * with *offset = its baseOffset and *found_ts = its maxTimestamp, or 0 with
 * both -1 when none; SEGMENT_E_CORRUPT; -errno. */
int segment_find_time(segment *s, int64_t ts, uint64_t limit, int64_t hw, int64_t *offset,
		      int64_t *found_ts);

/* Largest batch timestamp in the segment, -1 if none (loads the indexes if
 * needed).  Returns 0 or -errno. */
int segment_max_timestamp(segment *s, int64_t *ts);

/* Offset index floor: file position of the indexed batch with the largest
 * baseOffset <= offset, 0 if none.  Loads the index if needed. */
uint64_t segment_lookup(segment *s, int64_t offset);
/* Time index floor: baseOffset of the entry with the largest timestamp <=
 * ts, or the segment base if none.  Loads the index if needed. */
int64_t segment_lookup_time(segment *s, int64_t ts);
/* Number of in-memory entries (loads the indexes if needed); for tests
 * and diagnostics. */
size_t segment_index_entries(segment *s);
size_t segment_timeindex_entries(segment *s);

#endif
