/*
 * segment.c — see segment.h.
 *
 * ON-DISK FORMAT (version 1; there is no header in these files: the
 * checkpoint version in partlog.c covers the whole directory).  All
 * integers big-endian.
 *
 * <dir>/<base>.log, <base> = the segment's first offset as 20 decimal
 * digits, zero padded ("00000000000000000042.log"):
 *   RecordBatch v2 batches back to back, byte for byte as on the wire except
 *   baseOffset, which holds the assigned offset (the CRC does not cover it).
 *   Invariants: the first batch's baseOffset == base; each next batch's
 *   baseOffset == previous baseOffset + lastOffsetDelta + 1; the file is
 *   smaller than 4 GiB and every baseOffset - base fits in a uint32 (partlog
 *   rolls before either could overflow).  No padding, no trailer, except
 *   zeros written ahead of the last batch (segment_fill): the file may end
 *   with zero bytes past the log.  A batch never starts with a zero length,
 *   so recovery takes zeros up to the end of the file for the log's end
 *   (and cuts them); a segment is trimmed to its batches (segment_trim)
 *   before it is synced as a rolled one, so a segment before the recovery
 *   checkpoint, opened without a scan, ends with its last batch.
 *
 * <dir>/<base>.index — sparse offset index, 8-byte entries:
 *   0 rel uint32  (baseOffset of the batch - base)
 *   4 pos uint32  (file position of that batch in the .log)
 *   An entry is written for the batch at position p when
 *   p > L && p - L >= index_interval_bytes, L = pos of the previous entry
 *   (0 if none): the batch at 0 is implicit.  rel and pos strictly increase.
 *
 * <dir>/<base>.timeindex — sparse time index, 12-byte entries:
 *   0 ts  int64   (largest batch timestamp so far in the segment)
 *   8 rel uint32  (baseOffset - base of the first batch whose timestamp is ts)
 *   Written together with an offset index entry, when the largest timestamp
 *   so far (that batch included) is greater than the last entry's ts (or,
 *   without entries, >= 0).  Invariant used by lookups: every batch before
 *   rel has a timestamp < ts.  ts strictly increases, rel never decreases.
 *
 * Both indexes are accelerators derived from the .log: they may lag it
 * after a crash, and whatever they say is checked.  On load, entries are
 * kept up to the first one that breaks the monotonic rules or points past
 * the log (size or end offset); the tail after the last kept offset entry is
 * re-derived by walking batch headers (normally < index_interval_bytes); an
 * offset entry whose position does not hold the batch it names disables the
 * index for that segment.  A missing or garbage index therefore costs time,
 * never correctness.
 *
 * Changing the format: the index files may simply be deleted by a new
 * version (they are rebuilt in memory on load, and by recovery after the
 * checkpoint); a change to the .log layout needs a new checkpoint version
 * and a migration.
 */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "grow.h"
#include "recbatch.h"
#include "wire.h"

struct idx_ent {
	uint32_t rel;
	uint32_t pos;
};

struct tidx_ent {
	int64_t ts;
	uint32_t rel;
};

_Static_assert(sizeof(uint32_t) + sizeof(uint32_t) == SEGMENT_INDEX_ENTRY_SIZE,
	       ".index entry is two uint32");
_Static_assert(sizeof(int64_t) + sizeof(uint32_t) == SEGMENT_TIMEINDEX_ENTRY_SIZE,
	       ".timeindex entry is an int64 and a uint32");
_Static_assert(RECBATCH_HEADER_SIZE == 61, "RecordBatch v2 header is 61 bytes");

#define WALK_BUF 4096             /* header reads: one pread serves many small batches */
#define SCAN_BUF (256u * 1024u)   /* recovery reads whole batches in chunks of this */
#define FILL_CHUNK (64u * 1024u)  /* segment_fill: one static buffer of zeros, ... */
#define FILL_IOV 1024             /* ... repeated at most this often (IOV_MAX) */

struct segment {
	atomic_int refs;
	int64_t base;
	char *dir;    /* owned copy */
	int fd;       /* .log, O_RDWR; closed by the last unref */
	int idx_fd;   /* .index / .timeindex of a segment being written, else -1: */
	int tidx_fd;  /*   written by the writer, synced/closed by the sync thread */
	uint32_t interval; /* index interval used to re-derive index tails on load */

	/* Stored by the writer only; read by anyone. */
	_Atomic uint64_t size;
	/* Bytes of the .log that hold batches or written zeros: `size`, or
	 * more once segment_fill wrote zeros ahead (partlog's sync thread
	 * stores it; the writer lowers it when it cuts the file). */
	_Atomic uint64_t filled;
	_Atomic int64_t end;
	/* What readers may read: raised by segment_publish (release). */
	_Atomic uint64_t visible;

	/* `lock` protects everything below.  The writer changes it only under
	 * the lock (and may read it without: it is the only one changing it);
	 * readers hold it for lookups and for the lazy load. */
	pthread_mutex_t lock;
	bool loaded;  /* indexes are in memory (else: load on first lookup) */
	bool idx_bad; /* an offset entry named the wrong batch: ignore .index */
	bool tidx_bad;
	struct idx_ent *idx;
	size_t n_idx, cap_idx;
	struct tidx_ent *tidx;
	size_t n_tidx, cap_tidx;
	int64_t max_ts;   /* largest batch timestamp, -1 if none */
	uint32_t max_rel; /* rel of the first batch with max_ts */
};

/* A batch header as the readers need it (no CRC: see recovery for that). */
struct bhdr {
	int64_t base;
	uint64_t size;
	int32_t last_delta;
	int64_t max_ts;
};

/* Header reader over [.., limit) of a .log with a small window buffer. */
struct walker {
	int fd;
	uint64_t limit;
	uint64_t win_pos;
	size_t win_len;
	uint8_t buf[WALK_BUF];
};

/* Where the indexes stand for the next batch: what its entries are
 * compared with (see the format comment). */
struct index_tail {
	uint64_t last_pos; /* position of the last offset entry, 0 if none */
	int64_t last_ts;   /* ts of the last time entry, -1 if none */
	int64_t max_ts;    /* largest batch timestamp so far, -1 if none */
	uint32_t max_rel;  /* rel of the first batch with max_ts */
};

/* What one appended or scanned batch adds to the indexes. */
struct index_plan {
	bool add_idx;
	bool add_tidx;
	struct idx_ent ie;
	struct tidx_ent te;
};

/* The index entries of one segment_append_v group, planned (and encoded as
 * they go to disk) before anything is written; they are contiguous in the
 * index files.  About 5 KiB: lives on the writer's stack. */
struct append_plan {
	uint8_t idx[SEGMENT_APPEND_MAX * SEGMENT_INDEX_ENTRY_SIZE];
	uint8_t tidx[SEGMENT_APPEND_MAX * SEGMENT_TIMEINDEX_ENTRY_SIZE];
	size_t n_idx, n_tidx;
	struct index_tail tail; /* after the last batch of the group */
	uint64_t size;          /* segment size after the group */
	int64_t end;            /* end offset after the group */
};

/* ---- small helpers ---- */

static int seg_path(const segment *s, const char *ext, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%s/%0*" PRId64 "%s", s->dir, SEGMENT_NAME_DIGITS, s->base, ext);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int open_file(const segment *s, const char *ext, int flags, int *fd)
{
	char path[PATH_MAX];
	int r = seg_path(s, ext, path, sizeof(path));

	if (r)
		return r;
	*fd = open(path, flags | O_CLOEXEC, 0644);
	return *fd < 0 ? -errno : 0;
}

static int unlink_file(const segment *s, const char *ext)
{
	char path[PATH_MAX];
	int r = seg_path(s, ext, path, sizeof(path));

	if (r)
		return r;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Reads up to n bytes at pos (fewer only at end of file).  Count or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t pos)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(pos + got));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	return grow_array(arr, cap, need, elem, 64);
}

/* Room for ni more offset and nt more time entries.  Caller holds s->lock
 * (realloc moves what readers may be searching). */
static int reserve(segment *s, size_t ni, size_t nt)
{
	int r = grow((void **)&s->idx, &s->cap_idx, s->n_idx + ni, sizeof(*s->idx));

	if (!r)
		r = grow((void **)&s->tidx, &s->cap_tidx, s->n_tidx + nt, sizeof(*s->tidx));
	return r;
}

static void put_idx(uint8_t *p, const struct idx_ent *e)
{
	wire_put32(p, e->rel);
	wire_put32(p + 4, e->pos);
}

static void put_tidx(uint8_t *p, const struct tidx_ent *e)
{
	wire_put64(p, (uint64_t)e->ts);
	wire_put32(p + 8, e->rel);
}

static struct idx_ent get_idx(const uint8_t *p)
{
	return (struct idx_ent){ wire_get32(p), wire_get32(p + 4) };
}

static struct tidx_ent get_tidx(const uint8_t *p)
{
	return (struct tidx_ent){ (int64_t)wire_get64(p), wire_get32(p + 8) };
}

/* ---- header walking ---- */

static void walker_init(struct walker *w, int fd, uint64_t limit)
{
	w->fd = fd;
	w->limit = limit;
	w->win_pos = 0;
	w->win_len = 0;
}

/* Reads the header of the batch at pos (< limit).  0 with *h, or
 * SEGMENT_E_CORRUPT if it does not parse or passes limit, or -errno. */
static int walk_hdr(struct walker *w, uint64_t pos, struct bhdr *h)
{
	const uint8_t *p;
	int32_t length;

	if (w->limit - pos < RECBATCH_HEADER_SIZE)
		return SEGMENT_E_CORRUPT;
	if (pos < w->win_pos || pos + RECBATCH_HEADER_SIZE > w->win_pos + w->win_len) {
		uint64_t want = w->limit - pos < WALK_BUF ? w->limit - pos : WALK_BUF;
		ssize_t r = pread_full(w->fd, w->buf, (size_t)want, pos);

		if (r < 0)
			return (int)r;
		if (r < RECBATCH_HEADER_SIZE)
			return SEGMENT_E_CORRUPT; /* file shorter than limit */
		w->win_pos = pos;
		w->win_len = (size_t)r;
	}
	p = w->buf + (pos - w->win_pos);
	length = (int32_t)wire_get32(p + RECBATCH_OFF_LENGTH);
	if (length < RECBATCH_HEADER_SIZE - RECBATCH_LOG_OVERHEAD || p[RECBATCH_OFF_MAGIC] != 2)
		return SEGMENT_E_CORRUPT;
	h->size = (uint64_t)length + RECBATCH_LOG_OVERHEAD;
	h->base = (int64_t)wire_get64(p);
	h->last_delta = (int32_t)wire_get32(p + RECBATCH_OFF_LAST_DELTA);
	h->max_ts = (int64_t)wire_get64(p + RECBATCH_OFF_MAX_TS);
	if (h->size > w->limit - pos || h->last_delta < 0)
		return SEGMENT_E_CORRUPT;
	return 0;
}

/* ---- index rules (see the format comment) ---- */

/* Caller holds s->lock, or is the writer (the only one changing it). */
static void index_tail_of(const segment *s, struct index_tail *t)
{
	t->last_pos = s->n_idx ? s->idx[s->n_idx - 1].pos : 0;
	t->last_ts = s->n_tidx ? s->tidx[s->n_tidx - 1].ts : -1;
	t->max_ts = s->max_ts;
	t->max_rel = s->max_rel;
}

/* Plans the entries for the batch at pos (offset base + rel, largest
 * timestamp ts) and moves *t past it, so that a group of batches is
 * planned exactly as one by one. */
static void index_plan(struct index_tail *t, uint64_t pos, uint32_t rel, int64_t ts,
		       uint32_t interval, struct index_plan *p)
{
	if (ts > t->max_ts) {
		t->max_ts = ts;
		t->max_rel = rel;
	}
	p->add_idx = pos > t->last_pos && pos - t->last_pos >= interval;
	p->add_tidx = p->add_idx && t->max_ts > t->last_ts;
	p->ie.rel = rel;
	p->ie.pos = (uint32_t)pos;
	p->te.ts = t->max_ts;
	p->te.rel = t->max_rel;
	if (p->add_idx)
		t->last_pos = pos;
	if (p->add_tidx)
		t->last_ts = t->max_ts;
}

/* Plans and applies one batch in memory only (load, recovery).  Caller
 * holds s->lock. */
static int index_note(segment *s, uint64_t pos, uint32_t rel, int64_t ts, uint32_t interval)
{
	struct index_tail t;
	struct index_plan p;
	int r = reserve(s, 1, 1);

	if (r)
		return r;
	index_tail_of(s, &t);
	index_plan(&t, pos, rel, ts, interval, &p);
	if (p.add_idx)
		s->idx[s->n_idx++] = p.ie;
	if (p.add_tidx)
		s->tidx[s->n_tidx++] = p.te;
	s->max_ts = t.max_ts;
	s->max_rel = t.max_rel;
	return 0;
}

/* Largest i with idx[i].rel <= rel, or -1.  Caller holds s->lock. */
static ssize_t idx_floor(const segment *s, uint32_t rel)
{
	size_t lo = 0, hi = s->n_idx;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->idx[mid].rel <= rel)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo - 1;
}

/* Largest i with tidx[i].ts <= ts, or -1.  Caller holds s->lock. */
static ssize_t tidx_floor(const segment *s, int64_t ts)
{
	size_t lo = 0, hi = s->n_tidx;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->tidx[mid].ts <= ts)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo - 1;
}

/* Clamps an absolute offset to a relative one for index searches. */
static uint32_t rel_of(const segment *s, int64_t offset)
{
	if (offset <= s->base)
		return 0;
	if (offset - s->base > UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)(offset - s->base);
}

/* ---- loading the index files ---- */

/* Reads a whole index file into a malloc'd buffer; a missing or unreadable
 * file reads as empty (the index is only an accelerator).  *buf NULL when
 * empty.  Returns 0 or -ENOMEM. */
static int read_index_file(const segment *s, const char *ext, uint8_t **buf, size_t *len)
{
	struct stat st;
	ssize_t r;
	int fd;

	*buf = NULL;
	*len = 0;
	if (open_file(s, ext, O_RDONLY, &fd))
		return 0;
	if (fstat(fd, &st) < 0 || st.st_size <= 0 || (uint64_t)st.st_size > SIZE_MAX / 2)
		goto out;
	*buf = malloc((size_t)st.st_size);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	r = pread_full(fd, *buf, (size_t)st.st_size, 0);
	if (r > 0)
		*len = (size_t)r;
out:
	close(fd);
	return 0;
}

/* Keeps the .index entries up to the first invalid one (see format).
 * `limit`: log bytes the entries may point into; `end`: offset bound or -1. */
static int load_idx(segment *s, uint64_t limit, int64_t end)
{
	uint32_t prev_rel = 0, prev_pos = 0;
	uint8_t *buf;
	size_t len;
	int r = read_index_file(s, ".index", &buf, &len);

	if (r)
		return r;
	for (size_t off = 0; off + SEGMENT_INDEX_ENTRY_SIZE <= len; off += SEGMENT_INDEX_ENTRY_SIZE) {
		struct idx_ent e = { wire_get32(buf + off), wire_get32(buf + off + 4) };

		if (e.pos <= prev_pos || e.pos >= limit || e.rel <= prev_rel)
			break;
		if (end >= 0 && (int64_t)e.rel >= end - s->base)
			break;
		r = grow((void **)&s->idx, &s->cap_idx, s->n_idx + 1, sizeof(*s->idx));
		if (r)
			break;
		s->idx[s->n_idx++] = e;
		prev_rel = e.rel;
		prev_pos = e.pos;
	}
	free(buf);
	return r;
}

static int load_tidx(segment *s, int64_t end)
{
	int64_t prev_ts = -1;
	uint32_t prev_rel = 0;
	uint8_t *buf;
	size_t len;
	int r = read_index_file(s, ".timeindex", &buf, &len);

	if (r)
		return r;
	for (size_t off = 0; off + SEGMENT_TIMEINDEX_ENTRY_SIZE <= len;
	     off += SEGMENT_TIMEINDEX_ENTRY_SIZE) {
		struct tidx_ent e = { (int64_t)wire_get64(buf + off), wire_get32(buf + off + 8) };

		if (e.ts <= prev_ts || e.rel < prev_rel)
			break;
		if (end >= 0 && (int64_t)e.rel >= end - s->base)
			break;
		r = grow((void **)&s->tidx, &s->cap_tidx, s->n_tidx + 1, sizeof(*s->tidx));
		if (r)
			break;
		s->tidx[s->n_tidx++] = e;
		prev_ts = e.ts;
		prev_rel = e.rel;
	}
	free(buf);
	if (!r && s->n_tidx) {
		s->max_ts = s->tidx[s->n_tidx - 1].ts;
		s->max_rel = s->tidx[s->n_tidx - 1].rel;
	}
	return r;
}

/* Re-derives index entries for the batches after the last kept offset
 * entry, up to limit, from their headers.  Stops quietly at a header that
 * does not parse: readers report that batch themselves. */
static int walk_tail(segment *s, uint64_t limit)
{
	struct walker *w = malloc(sizeof(*w));
	uint64_t pos = s->n_idx ? s->idx[s->n_idx - 1].pos : 0;
	struct bhdr h;
	int r = 0;

	if (!w)
		return -ENOMEM;
	walker_init(w, s->fd, limit);
	while (pos < limit && walk_hdr(w, pos, &h) == 0) {
		if (h.base < s->base || h.base - s->base > UINT32_MAX)
			break;
		r = index_note(s, pos, (uint32_t)(h.base - s->base), h.max_ts, s->interval);
		if (r)
			break;
		pos += h.size;
	}
	free(w);
	return r;
}

/* Loads both indexes, validated against `limit` bytes and offset `end`.
 * Caller holds s->lock. */
static int load_indexes(segment *s, uint64_t limit, int64_t end)
{
	int r = load_idx(s, limit, end);

	if (!r)
		r = load_tidx(s, end);
	if (!r)
		r = walk_tail(s, limit);
	return r;
}

/* Caller holds s->lock. */
static int ensure_loaded(segment *s)
{
	int r;

	if (s->loaded)
		return 0;
	r = load_indexes(s, atomic_load_explicit(&s->size, memory_order_relaxed),
			 atomic_load_explicit(&s->end, memory_order_relaxed));
	if (r) {
		/* Start over next time rather than keep half an index. */
		s->n_idx = s->n_tidx = 0;
		s->max_ts = -1;
		s->max_rel = 0;
		return r;
	}
	s->loaded = true;
	return 0;
}

/* ---- new / free ---- */

static segment *seg_alloc(const char *dir, int64_t base)
{
	segment *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->dir = strdup(dir);
	if (!s->dir) {
		free(s);
		return NULL;
	}
	atomic_init(&s->refs, 1);
	s->base = base;
	s->fd = s->idx_fd = s->tidx_fd = -1;
	s->interval = 4096;
	atomic_init(&s->size, 0);
	atomic_init(&s->filled, 0);
	atomic_init(&s->end, -1);
	atomic_init(&s->visible, 0);
	pthread_mutex_init(&s->lock, NULL);
	s->max_ts = -1;
	return s;
}

static void seg_free(segment *s)
{
	close_fd(&s->fd);
	close_fd(&s->idx_fd);
	close_fd(&s->tidx_fd);
	pthread_mutex_destroy(&s->lock);
	free(s->idx);
	free(s->tidx);
	free(s->dir);
	free(s);
}

int segment_create(const char *dir, int64_t base, segment **out)
{
	const int flags = O_RDWR | O_CREAT | O_TRUNC;
	segment *s = seg_alloc(dir, base);
	int r;

	if (!s)
		return -ENOMEM;
	r = open_file(s, ".log", flags, &s->fd);
	if (r)
		goto fail;
	r = open_file(s, ".index", flags, &s->idx_fd);
	if (r)
		goto fail_unlink;
	r = open_file(s, ".timeindex", flags, &s->tidx_fd);
	if (r)
		goto fail_unlink;
	atomic_store(&s->end, base);
	s->loaded = true;
	*out = s;
	return 0;

fail_unlink:
	segment_unlink(s);
fail:
	seg_free(s);
	return r;
}

int segment_open(const char *dir, int64_t base, int64_t end_offset, uint32_t interval,
		 segment **out)
{
	segment *s = seg_alloc(dir, base);
	struct stat st;
	int r;

	if (!s)
		return -ENOMEM;
	r = open_file(s, ".log", O_RDWR, &s->fd);
	if (r)
		goto fail;
	if (fstat(s->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	atomic_store(&s->size, (uint64_t)st.st_size);
	atomic_store(&s->filled, (uint64_t)st.st_size);
	atomic_store(&s->visible, (uint64_t)st.st_size);
	atomic_store(&s->end, end_offset);
	s->interval = interval;
	*out = s;
	return 0;

fail:
	seg_free(s);
	return r;
}

void segment_ref(segment *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void segment_unref(segment *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		seg_free(s);
}

int segment_unlink(segment *s)
{
	int r1 = unlink_file(s, ".index");
	int r2 = unlink_file(s, ".timeindex");
	int r3 = unlink_file(s, ".log");

	return r1 ? r1 : r2 ? r2 : r3;
}

/* ---- recovery ---- */

/* A window of the .log for the recovery scan (whole batches, for the CRC). */
struct scanbuf {
	int fd;
	uint8_t *buf;
	size_t cap;
	uint64_t win_pos;
	size_t win_len;
};

/* Makes [pos, pos + n) available (caller knows it is inside the file);
 * returns a pointer to it or NULL with *err (-errno, or SEGMENT_E_CORRUPT if
 * the file turned out shorter). */
static const uint8_t *scan_get(struct scanbuf *b, uint64_t pos, size_t n, int *err)
{
	ssize_t r;

	if (pos >= b->win_pos && pos + n <= b->win_pos + b->win_len)
		return b->buf + (pos - b->win_pos);
	if (n > b->cap) {
		uint8_t *p = realloc(b->buf, n);

		if (!p) {
			*err = -ENOMEM;
			return NULL;
		}
		b->buf = p;
		b->cap = n;
	}
	r = pread_full(b->fd, b->buf, b->cap, pos);
	if (r < 0 || (size_t)r < n) {
		*err = r < 0 ? (int)r : SEGMENT_E_CORRUPT;
		return NULL;
	}
	b->win_pos = pos;
	b->win_len = (size_t)r;
	return b->buf;
}

/* Checks the batch at pos: 0 with *h if good, SEGMENT_E_CORRUPT if not,
 * -errno on I/O failure. */
static int scan_batch(segment *s, struct scanbuf *b, uint64_t pos, uint64_t fsize,
		      int64_t expected, recbatch_hdr *h)
{
	const uint8_t *p;
	size_t size;
	int err = 0;

	if (fsize - pos < RECBATCH_LOG_OVERHEAD)
		return SEGMENT_E_CORRUPT;
	p = scan_get(b, pos, RECBATCH_LOG_OVERHEAD, &err);
	if (!p)
		return err;
	size = recbatch_size(p, RECBATCH_LOG_OVERHEAD);
	if (size < RECBATCH_HEADER_SIZE || size > fsize - pos || pos + size > UINT32_MAX)
		return SEGMENT_E_CORRUPT;
	p = scan_get(b, pos, size, &err);
	if (!p)
		return err;
	if (recbatch_parse_hdr(p, size, h) != RECBATCH_OK || recbatch_check_crc(p, size) != RECBATCH_OK)
		return SEGMENT_E_CORRUPT;
	if (h->base_offset != expected || h->last_offset_delta < 0 ||
	    expected - s->base > UINT32_MAX)
		return SEGMENT_E_CORRUPT;
	return 0;
}

/* Whether [pos, fsize) holds only zero bytes: what segment_fill wrote
 * ahead of the log (a clean end, not a damaged batch).  0 with *zero, or
 * -errno. */
static int zero_tail(struct scanbuf *b, uint64_t pos, uint64_t fsize, bool *zero)
{
	*zero = true;
	while (pos < fsize && *zero) {
		size_t n = fsize - pos < b->cap ? (size_t)(fsize - pos) : b->cap;
		ssize_t r = pread_full(b->fd, b->buf, n, pos);

		if (r < 0)
			return (int)r;
		if (r == 0) /* the end came earlier than fstat said */
			break;
		for (size_t i = 0; i < (size_t)r && *zero; i++)
			*zero = b->buf[i] == 0;
		pos += (uint64_t)r;
	}
	b->win_len = 0; /* the window no longer holds what it says */
	return 0;
}

/* Scans from pos to the end of the file; *pos and *expected end after the
 * last good batch, *bad tells whether an invalid one stopped it (zeros up
 * to the end of the file are not: *zeros says so). */
static int scan_tail(segment *s, uint64_t fsize, uint32_t interval, uint64_t *pos,
		     int64_t *expected, bool *bad, bool *zeros)
{
	struct scanbuf b = { .fd = s->fd, .cap = SCAN_BUF };
	recbatch_hdr h;
	int r = 0;

	*bad = *zeros = false;
	b.buf = malloc(b.cap);
	if (!b.buf)
		return -ENOMEM;
	while (*pos < fsize) {
		r = scan_batch(s, &b, *pos, fsize, *expected, &h);
		if (r == SEGMENT_E_CORRUPT) {
			r = zero_tail(&b, *pos, fsize, zeros);
			*bad = !*zeros;
			break;
		}
		if (r)
			break;
		pthread_mutex_lock(&s->lock);
		r = index_note(s, *pos, (uint32_t)(*expected - s->base), h.max_timestamp, interval);
		pthread_mutex_unlock(&s->lock);
		if (r)
			break;
		*expected += (int64_t)h.last_offset_delta + 1;
		*pos += (uint64_t)h.length + RECBATCH_LOG_OVERHEAD;
	}
	free(b.buf);
	return r;
}

/* Writes entries [from, n) of both indexes and cuts the files after them. */
static int write_index_tail(segment *s, size_t idx_from, size_t tidx_from)
{
	size_t ni = s->n_idx - idx_from, nt = s->n_tidx - tidx_from;
	size_t len = ni * SEGMENT_INDEX_ENTRY_SIZE + nt * SEGMENT_TIMEINDEX_ENTRY_SIZE;
	uint8_t *buf = malloc(len ? len : 1);
	uint8_t *t = buf + ni * SEGMENT_INDEX_ENTRY_SIZE;
	int r;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < ni; i++)
		put_idx(buf + i * SEGMENT_INDEX_ENTRY_SIZE, &s->idx[idx_from + i]);
	for (size_t i = 0; i < nt; i++)
		put_tidx(t + i * SEGMENT_TIMEINDEX_ENTRY_SIZE, &s->tidx[tidx_from + i]);
	r = fileio_pwrite_all(s->idx_fd, buf, ni * SEGMENT_INDEX_ENTRY_SIZE,
			      (off_t)(idx_from * SEGMENT_INDEX_ENTRY_SIZE));
	if (!r)
		r = fileio_truncate(s->idx_fd, (off_t)(s->n_idx * SEGMENT_INDEX_ENTRY_SIZE));
	if (!r)
		r = fileio_pwrite_all(s->tidx_fd, t, nt * SEGMENT_TIMEINDEX_ENTRY_SIZE,
				      (off_t)(tidx_from * SEGMENT_TIMEINDEX_ENTRY_SIZE));
	if (!r)
		r = fileio_truncate(s->tidx_fd, (off_t)(s->n_tidx * SEGMENT_TIMEINDEX_ENTRY_SIZE));
	free(buf);
	return r;
}

int segment_recover(segment *s, uint64_t pos, int64_t expected, uint32_t interval,
		    segment_scan *res)
{
	size_t idx_keep = 0, tidx_keep = 0;
	struct stat st;
	uint64_t fsize;
	bool bad, zeros;
	int r;

	if (fstat(s->fd, &st) < 0)
		return -errno;
	fsize = (uint64_t)st.st_size;
	if (pos > fsize)
		return -EINVAL;
	s->interval = interval;
	if (s->idx_fd < 0 && (r = open_file(s, ".index", O_RDWR | O_CREAT, &s->idx_fd)))
		return r;
	if (s->tidx_fd < 0 && (r = open_file(s, ".timeindex", O_RDWR | O_CREAT, &s->tidx_fd)))
		return r;

	pthread_mutex_lock(&s->lock);
	s->n_idx = s->n_tidx = 0;
	s->max_ts = -1;
	s->max_rel = 0;
	r = 0;
	if (pos > 0) {
		/* Trusted part: keep what the files say about it, re-derive
		 * the few entries after the last offset entry from headers. */
		r = load_idx(s, pos, expected);
		if (!r)
			r = load_tidx(s, expected);
		idx_keep = s->n_idx;
		tidx_keep = s->n_tidx;
		if (!r)
			r = walk_tail(s, pos);
	}
	s->loaded = true;
	pthread_mutex_unlock(&s->lock);
	if (r)
		return r;

	r = scan_tail(s, fsize, interval, &pos, &expected, &bad, &zeros);
	if (r)
		return r;
	if ((bad || zeros) && (r = fileio_truncate(s->fd, (off_t)pos)))
		return r;
	r = write_index_tail(s, idx_keep, tidx_keep);
	if (r)
		return r;
	atomic_store(&s->size, pos);
	atomic_store(&s->filled, pos);
	atomic_store(&s->visible, pos);
	atomic_store(&s->end, expected);
	res->end_offset = expected;
	res->truncated_bytes = zeros ? 0 : fsize - pos;
	res->bad = bad;
	return 0;
}

/* ---- writer ---- */

/* Checks batches[0..n) (each header as segment_append_v says, offsets
 * contiguous, the file stays below 4 GiB) and plans their index entries
 * into *ap.  Writer only, no lock: nothing it reads changes under it. */
static int plan_group(const segment *s, const struct iovec *batches, int n,
		      const int64_t *max_ts, uint32_t interval, struct append_plan *ap)
{
	uint64_t pos = atomic_load_explicit(&s->size, memory_order_relaxed);
	int64_t next = -1;

	index_tail_of(s, &ap->tail);
	ap->n_idx = ap->n_tidx = 0;
	for (int i = 0; i < n; i++) {
		const uint8_t *b = batches[i].iov_base;
		size_t len = batches[i].iov_len;
		struct index_plan p;
		int32_t delta;
		int64_t off;

		if (len < RECBATCH_HEADER_SIZE)
			return -EINVAL;
		off = (int64_t)wire_get64(b);
		delta = (int32_t)wire_get32(b + RECBATCH_OFF_LAST_DELTA);
		if (delta < 0 || off < s->base || off - s->base > UINT32_MAX ||
		    (i > 0 && off != next) || len > UINT32_MAX - pos)
			return -EINVAL;
		index_plan(&ap->tail, pos, (uint32_t)(off - s->base), max_ts[i], interval, &p);
		if (p.add_idx)
			put_idx(ap->idx + ap->n_idx++ * SEGMENT_INDEX_ENTRY_SIZE, &p.ie);
		if (p.add_tidx)
			put_tidx(ap->tidx + ap->n_tidx++ * SEGMENT_TIMEINDEX_ENTRY_SIZE, &p.te);
		pos += len;
		next = off + delta + 1;
	}
	ap->size = pos;
	ap->end = next;
	return 0;
}

int segment_append_v(segment *s, const struct iovec *batches, int n, const int64_t *max_ts,
		     uint32_t interval)
{
	uint64_t pos = atomic_load_explicit(&s->size, memory_order_relaxed);
	/* The writer reads its own counts without the lock. */
	size_t n_idx = s->n_idx, n_tidx = s->n_tidx;
	struct append_plan ap;
	int r;

	if (n < 1 || n > SEGMENT_APPEND_MAX)
		return -EINVAL;
	r = plan_group(s, batches, n, max_ts, interval, &ap);
	if (r)
		return r;
	/* Memory first: nothing can fail after the bytes are on disk. */
	pthread_mutex_lock(&s->lock);
	r = reserve(s, ap.n_idx, ap.n_tidx);
	pthread_mutex_unlock(&s->lock);
	if (r)
		return r;

	r = fileio_pwritev_all(s->fd, batches, n, (off_t)pos);
	if (r)
		goto undo_log;
	if (ap.n_idx) {
		r = fileio_pwrite_all(s->idx_fd, ap.idx, ap.n_idx * SEGMENT_INDEX_ENTRY_SIZE,
				      (off_t)(n_idx * SEGMENT_INDEX_ENTRY_SIZE));
		if (r)
			goto undo_idx;
	}
	if (ap.n_tidx) {
		r = fileio_pwrite_all(s->tidx_fd, ap.tidx, ap.n_tidx * SEGMENT_TIMEINDEX_ENTRY_SIZE,
				      (off_t)(n_tidx * SEGMENT_TIMEINDEX_ENTRY_SIZE));
		if (r)
			goto undo_tidx;
	}
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < ap.n_idx; i++)
		s->idx[s->n_idx++] = get_idx(ap.idx + i * SEGMENT_INDEX_ENTRY_SIZE);
	for (size_t i = 0; i < ap.n_tidx; i++)
		s->tidx[s->n_tidx++] = get_tidx(ap.tidx + i * SEGMENT_TIMEINDEX_ENTRY_SIZE);
	s->max_ts = ap.tail.max_ts;
	s->max_rel = ap.tail.max_rel;
	pthread_mutex_unlock(&s->lock);
	atomic_store_explicit(&s->size, ap.size, memory_order_relaxed);
	atomic_store_explicit(&s->end, ap.end, memory_order_relaxed);
	return 0;

	/* Truncate errors are ignored: the in-memory size did not move, so
	 * the next append overwrites whatever stayed, and recovery cuts it
	 * after a crash. */
undo_tidx:
	fileio_truncate(s->tidx_fd, (off_t)(n_tidx * SEGMENT_TIMEINDEX_ENTRY_SIZE));
undo_idx:
	if (ap.n_idx)
		fileio_truncate(s->idx_fd, (off_t)(n_idx * SEGMENT_INDEX_ENTRY_SIZE));
undo_log:
	fileio_truncate(s->fd, (off_t)pos);
	if (atomic_load(&s->filled) > pos)
		atomic_store(&s->filled, pos);
	return r;
}

int segment_fill(segment *s, uint64_t from, uint64_t to)
{
	static const uint8_t zeros[FILL_CHUNK];
	struct iovec v[FILL_IOV];
	int n = 0, r;

	if (from >= to || to - from > sizeof(zeros) * FILL_IOV || from < segment_size(s))
		return -EINVAL;
	for (uint64_t left = to - from; left; n++) {
		v[n].iov_base = (void *)zeros;
		v[n].iov_len = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
		left -= v[n].iov_len;
	}
	r = fileio_pwritev_all(s->fd, v, n, (off_t)from);
	if (!r)
		atomic_store(&s->filled, to);
	return r;
}

int segment_trim(segment *s)
{
	uint64_t size = segment_size(s);
	int r;

	if (atomic_load(&s->filled) <= size)
		return 0;
	r = fileio_truncate(s->fd, (off_t)size);
	if (!r)
		atomic_store(&s->filled, size);
	return r;
}

int segment_append(segment *s, const uint8_t *batch, size_t len, int64_t max_ts,
		   uint32_t interval)
{
	struct iovec v = { .iov_base = (void *)batch, .iov_len = len };

	return segment_append_v(s, &v, 1, &max_ts, interval);
}

int segment_sync_data(segment *s)
{
	return fileio_datasync(s->fd);
}

int segment_sync_index(segment *s)
{
	int r = 0;

	if (s->idx_fd >= 0)
		r = fileio_datasync(s->idx_fd);
	if (!r && s->tidx_fd >= 0)
		r = fileio_datasync(s->tidx_fd);
	return r;
}

int segment_sync(segment *s)
{
	int r = segment_sync_data(s);

	return r ? r : segment_sync_index(s);
}

void segment_close_index(segment *s)
{
	close_fd(&s->idx_fd);
	close_fd(&s->tidx_fd);
}

/* ---- accessors ---- */

int64_t segment_base(const segment *s)
{
	return s->base;
}

int segment_fd(const segment *s)
{
	return s->fd;
}

uint64_t segment_filled(const segment *s)
{
	uint64_t f = atomic_load(&s->filled), size = segment_size(s);

	return f > size ? f : size;
}

uint64_t segment_size(const segment *s)
{
	return atomic_load_explicit(&s->size, memory_order_relaxed);
}

int64_t segment_end_offset(const segment *s)
{
	return atomic_load_explicit(&s->end, memory_order_relaxed);
}

uint64_t segment_visible(const segment *s)
{
	return atomic_load_explicit(&s->visible, memory_order_acquire);
}

void segment_publish(segment *s, uint64_t size)
{
	uint64_t cur = atomic_load_explicit(&s->visible, memory_order_relaxed);

	while (cur < size &&
	       !atomic_compare_exchange_weak_explicit(&s->visible, &cur, size,
						      memory_order_release, memory_order_relaxed))
		;
}

/* ---- readers ---- */

/* Where to start walking for `offset`: the offset index floor, checked
 * against the header found there.  A mismatch means the entry lies (garbage
 * file): the index is disabled for this segment and the walk starts at 0. */
static int start_pos(segment *s, int64_t offset, struct walker *w, uint64_t *pos)
{
	struct idx_ent e = { 0, 0 };
	struct bhdr h;
	ssize_t i;
	int r;

	pthread_mutex_lock(&s->lock);
	r = ensure_loaded(s);
	if (!r && !s->idx_bad && (i = idx_floor(s, rel_of(s, offset))) >= 0)
		e = s->idx[i];
	pthread_mutex_unlock(&s->lock);
	if (r)
		return r;
	*pos = 0;
	if (e.pos == 0 || e.pos >= w->limit)
		return 0;
	r = walk_hdr(w, e.pos, &h);
	if (r < 0)
		return r;
	if (r == 0 && h.base == s->base + e.rel) {
		*pos = e.pos;
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	s->idx_bad = true;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int segment_find(segment *s, int64_t offset, uint64_t limit, int64_t hw, size_t max_bytes,
		 segment_span *out)
{
	struct walker *w = malloc(sizeof(*w));
	segment_span sp = { 0, 0, -1 };
	struct bhdr h;
	uint64_t pos;
	int r;

	if (!w)
		return -ENOMEM;
	walker_init(w, s->fd, limit);
	r = start_pos(s, offset, w, &pos);
	if (r)
		goto out;
	for (;; pos += h.size) {
		if (pos >= limit)
			goto done;
		r = walk_hdr(w, pos, &h);
		if (r)
			goto out;
		if (h.base >= hw)
			goto done;
		if (h.base + h.last_delta >= offset)
			break;
	}
	sp.pos = pos;
	sp.len = (size_t)h.size;
	sp.first_offset = h.base;
	/* Following batches; a bad header ends the range here, the next fetch
	 * starting at it reports the corruption. */
	for (pos += h.size; pos < limit; pos += h.size) {
		if (walk_hdr(w, pos, &h) || h.base >= hw || sp.len + h.size > max_bytes)
			break;
		sp.len += (size_t)h.size;
	}
done:
	*out = sp;
	r = 0;
out:
	free(w);
	return r;
}

/* One attempt of segment_find_time from the time index floor; *retry when
 * the entry proved wrong (then the time index is disabled). */
static int find_time_once(segment *s, int64_t ts, struct walker *w, int64_t hw, int64_t *offset,
			  int64_t *found_ts, bool *retry)
{
	int64_t from = s->base;
	struct bhdr h;
	uint64_t pos;
	ssize_t i;
	int r;

	*retry = false;
	pthread_mutex_lock(&s->lock);
	r = ensure_loaded(s);
	if (!r && !s->tidx_bad && (i = tidx_floor(s, ts)) >= 0)
		from = s->base + s->tidx[i].rel;
	pthread_mutex_unlock(&s->lock);
	if (r)
		return r;
	r = start_pos(s, from, w, &pos);
	if (r)
		return r;
	for (; pos < w->limit; pos += h.size) {
		r = walk_hdr(w, pos, &h);
		if (r)
			return r;
		if (h.base >= hw)
			break;
		if (h.max_ts < ts)
			continue;
		if (h.base + h.last_delta < from) {
			/* Batches before an entry have smaller timestamps. */
			pthread_mutex_lock(&s->lock);
			s->tidx_bad = true;
			pthread_mutex_unlock(&s->lock);
			*retry = true;
			return 0;
		}
		*offset = h.base;
		*found_ts = h.max_ts;
		return 0;
	}
	return 0;
}

int segment_find_time(segment *s, int64_t ts, uint64_t limit, int64_t hw, int64_t *offset,
		      int64_t *found_ts)
{
	struct walker *w = malloc(sizeof(*w));
	int64_t o = -1, f = -1;
	bool retry = true;
	int r = 0;

	if (!w)
		return -ENOMEM;
	walker_init(w, s->fd, limit);
	for (int attempt = 0; attempt < 2 && retry && !r; attempt++)
		r = find_time_once(s, ts, w, hw, &o, &f, &retry);
	free(w);
	if (r)
		return r;
	*offset = o;
	*found_ts = f;
	return 0;
}

int segment_max_timestamp(segment *s, int64_t *ts)
{
	int r;

	pthread_mutex_lock(&s->lock);
	r = ensure_loaded(s);
	if (!r)
		*ts = s->max_ts;
	pthread_mutex_unlock(&s->lock);
	return r;
}

uint64_t segment_lookup(segment *s, int64_t offset)
{
	uint64_t pos = 0;
	ssize_t i;

	pthread_mutex_lock(&s->lock);
	if (!ensure_loaded(s) && !s->idx_bad && (i = idx_floor(s, rel_of(s, offset))) >= 0)
		pos = s->idx[i].pos;
	pthread_mutex_unlock(&s->lock);
	return pos;
}

int64_t segment_lookup_time(segment *s, int64_t ts)
{
	int64_t off = s->base;
	ssize_t i;

	pthread_mutex_lock(&s->lock);
	if (!ensure_loaded(s) && !s->tidx_bad && (i = tidx_floor(s, ts)) >= 0)
		off = s->base + s->tidx[i].rel;
	pthread_mutex_unlock(&s->lock);
	return off;
}

size_t segment_index_entries(segment *s)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	if (!ensure_loaded(s))
		n = s->n_idx;
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t segment_timeindex_entries(segment *s)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	if (!ensure_loaded(s))
		n = s->n_tidx;
	pthread_mutex_unlock(&s->lock);
	return n;
}
