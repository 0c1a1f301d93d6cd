/*
 * partlog.c — see partlog.h.  Segment file formats: segment.c.
 *
 * RECOVERY CHECKPOINT <dir>/recovery.ckpt (version 1): two slots, slot i
 * at byte i * 512 so that each lives in its own disk sector and a torn
 * write can damage only the slot being written (the file is 44 or 556
 * bytes; bytes between the slots are zero).  A slot, big-endian:
 *    0 magic    uint32  0x534c434b ("SLCK")
 *    4 version  uint32  1
 *    8 seq      uint64  incremented by every write; slot = seq % 2
 *   16 base     int64   base offset of the segment the position is in
 *   24 pos      uint64  byte position in that segment's .log
 *   32 end      int64   offset of the batch starting at pos (the log end
 *                       at that moment)
 *   40 crc      uint32  CRC-32C of bytes 0..39
 * Meaning: everything before (base, pos) had been fdatasync()ed, indexes
 * included, when the slot was written.  Each write is pwrite + fdatasync.
 * On open the valid slot (magic, version, crc) with the highest seq wins; a
 * slot that names a missing segment, or a position past the end of its
 * file, is unusable and the whole log is scanned (also done when the file is
 * missing: a log that was never checkpointed).
 * Changing it: bump the version; an unknown version reads as no checkpoint,
 * which costs one full scan, never data.
 *
 * Open: segments before the checkpointed one are only opened and stat()ed;
 * the checkpointed segment is scanned (CRC) from pos, the later ones from
 * 0; the first bad batch truncates its file and every later segment is
 * deleted.  So start-up reads what was written after the last checkpoint,
 * plus that segment's index files.
 *
 * LOCKS (partlog.h has the thread rules):
 *  - append_lock (mutex): appenders.  Protects `active` (also written under
 *    list_lock), `pending`, `first_ms`, and the right to write the active
 *    segment and to store `end`, and `fill_seg` / `fill_from`.  Readers
 *    never take it; the sync thread takes it for a snapshot, or to mark a
 *    fill (the zeros are written without it), never across I/O.
 *  - list_lock (rwlock): the `segs` array.  Readers hold it shared to find a
 *    segment and take a reference; roll (appender) and retention (sync
 *    thread) hold it exclusive to add at the tail / remove at the head.
 *  - Atomics: end (stored under append_lock), hw (release by the publisher,
 *    acquire by readers, after each segment's `visible` was raised),
 *    start (stored by retention under list_lock), size_bytes, dirty,
 *    dir_dirty, and the configuration values.
 *  - Sync-thread-only fields (synced_*, ckpt_*): no lock.
 */
#include "partlog.h"

#include <dirent.h>
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
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "grow.h"
#include "fileio.h"
#include "recbatch.h"
#include "segment.h"
#include "wire.h"

#define CKPT_NAME "recovery.ckpt"
#define CKPT_MAGIC 0x534c434bu
#define CKPT_VERSION 1u
#define CKPT_SLOT_STRIDE 512
#define CKPT_OFF_SEQ 8
#define CKPT_OFF_BASE 16
#define CKPT_OFF_POS 24
#define CKPT_OFF_END 32
#define CKPT_OFF_CRC 40
#define CKPT_SLOT_SIZE 44

_Static_assert(CKPT_OFF_CRC + 4 == CKPT_SLOT_SIZE, "checkpoint slot is 44 bytes");
_Static_assert(CKPT_SLOT_SIZE <= CKPT_SLOT_STRIDE, "a slot fits its sector");

struct ckpt {
	uint64_t seq;
	int64_t base;
	uint64_t pos;
	int64_t end;
};

struct partlog {
	char *dir;
	int dirfd;
	int ckpt_fd;

	/* Configuration (partlog_set_conf may swap it any time). */
	_Atomic uint64_t segment_bytes;
	_Atomic int64_t segment_ms;
	_Atomic int64_t retention_ms;
	_Atomic int64_t retention_bytes;
	_Atomic uint32_t index_interval;
	atomic_bool synced;

	pthread_mutex_t append_lock;
	segment *active;   /* last of segs */
	/* A partlog_fill_ahead writing zeros over [fill_from, ...) of
	 * fill_seg (not referenced: only compared) is under way, NULL when
	 * none; an append reaching fill_from waits for fill_done. */
	const segment *fill_seg;
	uint64_t fill_from;
	pthread_cond_t fill_done;
	segment **pending; /* rolled, not yet synced; each holds a reference */
	size_t n_pending, cap_pending;
	/* Wall clock of the active segment's first append, -1 before it.  A
	 * segment reopened after a restart counts from its first append
	 * after the open (its creation time is not stored). */
	int64_t first_ms;

	pthread_rwlock_t list_lock;
	segment **segs;    /* by base offset; each holds a reference */
	size_t n_segs, cap_segs;

	_Atomic int64_t end;
	_Atomic int64_t hw;
	_Atomic int64_t start;
	_Atomic uint64_t size_bytes;
	_Atomic int64_t durable;  /* end offset of the last sync (sync thread
				     stores, any thread reads) */
	atomic_bool dirty;
	atomic_bool dir_dirty;
	/* The first failed sync's -errno, then for good: Linux reports a
	 * writeback error once and may have dropped the pages it could not
	 * write, so a later fdatasync that succeeds would vouch for bytes not
	 * on disk.  Syncs and appends fail with it until a restart, whose
	 * recovery rescans from the last good checkpoint. */
	atomic_int sync_err;

	/* Sync thread only. */
	int64_t synced_base;
	uint64_t synced_pos;
	struct ckpt ckpt;  /* last written (or read at open) */
	bool ckpt_valid;   /* ckpt holds a slot that is on disk */
	bool ckpt_new;     /* the file was created: fsync the directory once */
	bool index_unsynced; /* a partlog_sync_data left the active segment's
				indexes to the next checkpoint */
	int64_t fill_seen_base;  /* partlog_fill_ahead's last look: segment, */
	uint64_t fill_seen_size; /* and its size then */
};

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	return grow_array(arr, cap, need, elem, 8);
}

static void conf_store(partlog *pl, const partlog_conf *c)
{
	atomic_store_explicit(&pl->segment_bytes, c->segment_bytes, memory_order_relaxed);
	atomic_store_explicit(&pl->segment_ms, c->segment_ms, memory_order_relaxed);
	atomic_store_explicit(&pl->retention_ms, c->retention_ms, memory_order_relaxed);
	atomic_store_explicit(&pl->retention_bytes, c->retention_bytes, memory_order_relaxed);
	atomic_store_explicit(&pl->index_interval, c->index_interval_bytes, memory_order_relaxed);
	atomic_store_explicit(&pl->synced, c->synced, memory_order_relaxed);
}

/* Raises an atomic offset (never lowers it: modes may be switched). */
static void store_max(_Atomic int64_t *a, int64_t v)
{
	int64_t cur = atomic_load_explicit(a, memory_order_relaxed);

	while (cur < v &&
	       !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_release,
						      memory_order_relaxed))
		;
}

/* ---- checkpoint file ---- */

static void ckpt_encode(uint8_t *p, const struct ckpt *c)
{
	memset(p, 0, CKPT_SLOT_SIZE);
	wire_put32(p, CKPT_MAGIC);
	wire_put32(p + 4, CKPT_VERSION);
	wire_put64(p + CKPT_OFF_SEQ, c->seq);
	wire_put64(p + CKPT_OFF_BASE, (uint64_t)c->base);
	wire_put64(p + CKPT_OFF_POS, c->pos);
	wire_put64(p + CKPT_OFF_END, (uint64_t)c->end);
	wire_put32(p + CKPT_OFF_CRC, crc32c(0, p, CKPT_OFF_CRC));
}

static bool ckpt_decode(const uint8_t *p, struct ckpt *c)
{
	if (wire_get32(p) != CKPT_MAGIC || wire_get32(p + 4) != CKPT_VERSION ||
	    wire_get32(p + CKPT_OFF_CRC) != crc32c(0, p, CKPT_OFF_CRC))
		return false;
	c->seq = wire_get64(p + CKPT_OFF_SEQ);
	c->base = (int64_t)wire_get64(p + CKPT_OFF_BASE);
	c->pos = wire_get64(p + CKPT_OFF_POS);
	c->end = (int64_t)wire_get64(p + CKPT_OFF_END);
	return c->base >= 0 && c->end >= c->base;
}

/* Opens (creating) recovery.ckpt and reads the winning slot into pl->ckpt. */
static int ckpt_open(partlog *pl)
{
	uint8_t buf[2 * CKPT_SLOT_STRIDE];
	struct stat st;
	ssize_t n;

	pl->ckpt_fd = openat(pl->dirfd, CKPT_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (pl->ckpt_fd < 0 || fstat(pl->ckpt_fd, &st) < 0)
		return -errno;
	pl->ckpt_new = st.st_size == 0;
	n = pread(pl->ckpt_fd, buf, sizeof(buf), 0);
	if (n < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		struct ckpt c;

		if (n < i * CKPT_SLOT_STRIDE + CKPT_SLOT_SIZE ||
		    !ckpt_decode(buf + i * CKPT_SLOT_STRIDE, &c))
			continue;
		if (!pl->ckpt_valid || c.seq > pl->ckpt.seq) {
			pl->ckpt = c;
			pl->ckpt_valid = true;
		}
	}
	return 0;
}

static int ckpt_write(partlog *pl, const struct ckpt *c)
{
	uint8_t slot[CKPT_SLOT_SIZE];
	int r;

	ckpt_encode(slot, c);
	r = fileio_pwrite_all(pl->ckpt_fd, slot, sizeof(slot),
			      (off_t)(c->seq % 2) * CKPT_SLOT_STRIDE);
	if (!r)
		r = fileio_datasync(pl->ckpt_fd);
	if (!r && pl->ckpt_new) {
		r = fileio_fsync(pl->dirfd);
		pl->ckpt_new = r != 0;
	}
	return r;
}

/* ---- directory ---- */

/* "<20 digits>.log" -> base offset. */
static bool parse_log_name(const char *name, int64_t *base)
{
	int64_t v = 0;

	if (strlen(name) != SEGMENT_NAME_DIGITS + 4 || strcmp(name + SEGMENT_NAME_DIGITS, ".log"))
		return false;
	for (int i = 0; i < SEGMENT_NAME_DIGITS; i++) {
		if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - (name[i] - '0')) / 10)
			return false;
		v = v * 10 + (name[i] - '0');
	}
	*base = v;
	return true;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && !strcmp(s + n - m, suf);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Names to unlink once the listing is over (POSIX leaves readdir()'s view
 * of a directory changing under it unspecified). */
struct namelist {
	char **v;
	size_t n, cap;
};

static int namelist_add(struct namelist *l, const char *name)
{
	int r = grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));

	if (r)
		return r;
	l->v[l->n] = strdup(name);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static int namelist_unlink(int dirfd, struct namelist *l)
{
	int r = 0;

	for (size_t i = 0; i < l->n; i++) {
		if (unlinkat(dirfd, l->v[i], 0) < 0 && errno != ENOENT && !r)
			r = -errno;
		free(l->v[i]);
	}
	free(l->v);
	return r;
}

/* Reads the directory: segment base offsets into *bases (sorted), names to
 * delete (*.tmp, or everything when `all`) into *del. */
static int list_dir(int dirfd, bool all, int64_t **bases, size_t *n, struct namelist *del)
{
	size_t cap = 0;
	struct dirent *de;
	/* A new open file description: a dup() would share (and keep) the
	 * read position of an earlier listing. */
	int r = 0, fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while (!r && (de = readdir(d))) {
		int64_t base;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (all || has_suffix(de->d_name, ".tmp"))
			r = namelist_add(del, de->d_name);
		else if (parse_log_name(de->d_name, &base) &&
			 !(r = grow((void **)bases, &cap, *n + 1, sizeof(**bases))))
			(*bases)[(*n)++] = base;
	}
	closedir(d);
	return r;
}

/* Lists segment base offsets (sorted) and deletes stray *.tmp files
 * (`unlink_all`: deletes every entry instead, for partlog_destroy). */
static int scan_dir(int dirfd, bool unlink_all, int64_t **bases, size_t *n)
{
	struct namelist del = { NULL, 0, 0 };
	int r, r2;

	*bases = NULL;
	*n = 0;
	r = list_dir(dirfd, unlink_all, bases, n, &del);
	r2 = namelist_unlink(dirfd, &del);
	if (!r)
		r = r2;
	if (r) {
		free(*bases);
		*bases = NULL;
		*n = 0;
		return r;
	}
	if (*n)
		qsort(*bases, *n, sizeof(**bases), cmp_i64);
	return 0;
}

static int log_file_size(int dirfd, int64_t base, uint64_t *size)
{
	char name[SEGMENT_NAME_DIGITS + 8];
	struct stat st;

	snprintf(name, sizeof(name), "%0*" PRId64 ".log", SEGMENT_NAME_DIGITS, base);
	if (fstatat(dirfd, name, &st, 0) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* ---- segment list ---- */

static int list_push(partlog *pl, segment *s)
{
	int r = grow((void **)&pl->segs, &pl->cap_segs, pl->n_segs + 1, sizeof(*pl->segs));

	if (!r) {
		pl->segs[pl->n_segs++] = s;
		pl->active = s;
	}
	return r;
}

/* Last segment with base <= offset, or NULL.  Caller holds list_lock. */
static segment *list_find(const partlog *pl, int64_t offset)
{
	size_t lo = 0, hi = pl->n_segs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (segment_base(pl->segs[mid]) <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? pl->segs[lo - 1] : NULL;
}

/* References to every segment, oldest first (for walks without the lock). */
static int list_snapshot(partlog *pl, segment ***out, size_t *n)
{
	int r = 0;

	pthread_rwlock_rdlock(&pl->list_lock);
	*n = pl->n_segs;
	*out = malloc(*n * sizeof(**out));
	if (*out) {
		for (size_t i = 0; i < *n; i++) {
			(*out)[i] = pl->segs[i];
			segment_ref(pl->segs[i]);
		}
	} else {
		r = -ENOMEM;
	}
	pthread_rwlock_unlock(&pl->list_lock);
	return r;
}

static void snapshot_free(segment **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		segment_unref(v[i]);
	free(v);
}

/* ---- open / recovery ---- */

/* Deletes the segment files of `base` (recovery: after a bad batch). */
static int delete_segment_files(partlog *pl, int64_t base, uint64_t *bytes)
{
	segment *s;
	uint64_t size = 0;
	int r;

	if (!log_file_size(pl->dirfd, base, &size))
		*bytes += size;
	r = segment_open(pl->dir, base, -1, 0, &s);
	if (r)
		return r == -ENOENT ? 0 : r;
	r = segment_unlink(s);
	segment_unref(s);
	atomic_store(&pl->dir_dirty, true);
	return r;
}

/* Where to trust up to: the checkpointed segment index (in bases) and
 * position, or a full scan (index 0, position 0). */
static void recovery_start(partlog *pl, const int64_t *bases, size_t n, size_t *k,
			   uint64_t *pos, int64_t *expected)
{
	uint64_t size = 0;

	*k = 0;
	*pos = 0;
	*expected = bases[0];
	if (!pl->ckpt_valid)
		return;
	for (size_t i = 0; i < n; i++) {
		if (bases[i] != pl->ckpt.base)
			continue;
		if (log_file_size(pl->dirfd, bases[i], &size) || pl->ckpt.pos > size)
			return;
		*k = i;
		*pos = pl->ckpt.pos;
		*expected = pl->ckpt.end;
		return;
	}
}

static int recover(partlog *pl, const int64_t *bases, size_t n, uint64_t *truncated)
{
	uint32_t interval = atomic_load(&pl->index_interval);
	int64_t expected;
	bool stop = false;
	uint64_t pos;
	size_t k;
	int r = 0;

	recovery_start(pl, bases, n, &k, &pos, &expected);
	for (size_t i = 0; i < n && !r; i++) {
		segment_scan res;
		segment *s;

		if (stop || (i > k && bases[i] != expected)) {
			stop = true;
			r = delete_segment_files(pl, bases[i], truncated);
			continue;
		}
		if (i < k) {
			/* Trusted: before the checkpoint, not read. */
			r = segment_open(pl->dir, bases[i], bases[i + 1], interval, &s);
			if (!r && (r = list_push(pl, s)))
				segment_unref(s);
			continue;
		}
		r = segment_open(pl->dir, bases[i], -1, interval, &s);
		if (r)
			break;
		r = segment_recover(s, i == k ? pos : 0, i == k ? expected : bases[i], interval, &res);
		if (!r)
			r = segment_sync(s);
		if (!r)
			r = list_push(pl, s);
		if (r) {
			segment_unref(s);
			break;
		}
		*truncated += res.truncated_bytes;
		expected = res.end_offset;
		stop = res.bad;
	}
	return r;
}

static int open_segments(partlog *pl, uint64_t *truncated)
{
	int64_t *bases;
	size_t n;
	int r = scan_dir(pl->dirfd, false, &bases, &n);

	if (r)
		return r;
	if (n) {
		r = recover(pl, bases, n, truncated);
	} else {
		segment *s;

		r = segment_create(pl->dir, 0, &s);
		if (!r && (r = list_push(pl, s)))
			segment_unref(s);
		atomic_store(&pl->dir_dirty, true);
	}
	free(bases);
	if (!r && atomic_load(&pl->dir_dirty)) {
		r = fileio_fsync(pl->dirfd);
		if (!r)
			atomic_store(&pl->dir_dirty, false);
	}
	return r;
}

/* Offsets and sizes once the segment list is final. */
static void open_finish(partlog *pl)
{
	segment *a = pl->active;
	uint64_t total = 0;
	int64_t end;

	for (size_t i = 0; i < pl->n_segs; i++)
		total += segment_size(pl->segs[i]);
	end = segment_end_offset(a);
	atomic_init(&pl->size_bytes, total);
	atomic_init(&pl->end, end);
	atomic_init(&pl->hw, end);
	atomic_init(&pl->start, segment_base(pl->segs[0]));
	/* Whatever survived recovery is on disk (recover synced it). */
	pl->synced_base = segment_base(a);
	pl->synced_pos = segment_size(a);
	atomic_init(&pl->durable, end);
}

static void partlog_free(partlog *pl)
{
	for (size_t i = 0; i < pl->n_segs; i++)
		segment_unref(pl->segs[i]);
	for (size_t i = 0; i < pl->n_pending; i++)
		segment_unref(pl->pending[i]);
	free(pl->segs);
	free(pl->pending);
	if (pl->ckpt_fd >= 0)
		close(pl->ckpt_fd);
	if (pl->dirfd >= 0)
		close(pl->dirfd);
	pthread_mutex_destroy(&pl->append_lock);
	pthread_cond_destroy(&pl->fill_done);
	pthread_rwlock_destroy(&pl->list_lock);
	free(pl->dir);
	free(pl);
}

int partlog_open(const char *dir, const partlog_conf *conf, partlog **out,
		 uint64_t *truncated_bytes)
{
	uint64_t truncated = 0;
	partlog *pl;
	int r;

	if (strlen(dir) + SEGMENT_NAME_DIGITS + 16 >= PATH_MAX)
		return -ENAMETOOLONG;
	pl = calloc(1, sizeof(*pl));
	if (!pl)
		return -ENOMEM;
	pl->dirfd = pl->ckpt_fd = -1;
	pl->first_ms = -1;
	pl->fill_seen_base = -1;
	pthread_mutex_init(&pl->append_lock, NULL);
	pthread_cond_init(&pl->fill_done, NULL);
	pthread_rwlock_init(&pl->list_lock, NULL);
	conf_store(pl, conf);
	pl->dir = strdup(dir);
	if (!pl->dir) {
		r = -ENOMEM;
		goto fail;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		goto fail;
	}
	pl->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pl->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = ckpt_open(pl);
	if (r)
		goto fail;
	r = open_segments(pl, &truncated);
	if (r)
		goto fail;
	open_finish(pl);
	if (truncated_bytes)
		*truncated_bytes = truncated;
	*out = pl;
	return 0;

fail:
	partlog_free(pl);
	return r;
}

/* ---- sync thread: sync, checkpoint ---- */

/* The active segment's indexes, left unsynced by partlog_sync_data: a
 * checkpoint promises them. */
static int sync_index(partlog *pl)
{
	segment *a;
	int r;

	if (!pl->index_unsynced)
		return 0;
	pthread_mutex_lock(&pl->append_lock);
	a = pl->active;
	segment_ref(a);
	pthread_mutex_unlock(&pl->append_lock);
	r = segment_sync_index(a);
	segment_unref(a);
	if (!r)
		pl->index_unsynced = false;
	return r;
}

int partlog_checkpoint_serving(partlog *pl, void (*serve)(void *arg), void *arg)
{
	struct ckpt c = {
		.seq = pl->ckpt_valid ? pl->ckpt.seq + 1 : 1,
		.base = pl->synced_base,
		.pos = pl->synced_pos,
		.end = atomic_load(&pl->durable),
	};
	int r = sync_index(pl);

	if (r)
		return r;
	/* c was taken before the index sync: syncs that serve runs do not
	 * make its indexes stale, so nothing is synced twice */
	if (serve)
		serve(arg);
	if (pl->ckpt_valid && pl->ckpt.base == c.base && pl->ckpt.pos == c.pos &&
	    pl->ckpt.end == c.end)
		return 0;
	r = ckpt_write(pl, &c);
	if (r)
		return r;
	pl->ckpt = c;
	pl->ckpt_valid = true;
	return 0;
}

int partlog_checkpoint(partlog *pl)
{
	return partlog_checkpoint_serving(pl, NULL, NULL);
}

void partlog_close(partlog *pl)
{
	if (!pl)
		return;
	/* Best effort: zeros left behind cost a scan of them at the next
	 * open, never data. */
	for (size_t i = 0; i < pl->n_pending; i++)
		segment_trim(pl->pending[i]);
	segment_trim(pl->active);
	if (!atomic_load(&pl->dirty) && pl->n_pending == 0 &&
	    atomic_load(&pl->durable) == atomic_load(&pl->end))
		partlog_checkpoint(pl); /* best effort: a failure costs a scan */
	partlog_free(pl);
}

static void publish(partlog *pl);

void partlog_set_conf(partlog *pl, const partlog_conf *conf)
{
	bool was_synced = atomic_load(&pl->synced);

	conf_store(pl, conf);
	if (was_synced && !conf->synced) {
		/* page cache from now on: what synced mode held back is
		 * visible at once, as if appended now */
		pthread_mutex_lock(&pl->append_lock);
		publish(pl);
		pthread_mutex_unlock(&pl->append_lock);
	}
}

bool partlog_dirty(const partlog *pl)
{
	return atomic_load(&pl->dirty);
}


/* What partlog_sync makes durable, taken under the append lock.  The
 * pending segments stay queued in pl until the sync succeeded, so a failed
 * sync is simply retried by the next one. */
struct sync_snap {
	segment *active;   /* referenced */
	uint64_t size;
	int64_t end;
	segment **pending; /* copy of pl->pending[0..n_pending), referenced */
	size_t n_pending;
	bool dirty;
	bool dir_dirty;
};

static int sync_snapshot(partlog *pl, struct sync_snap *sn)
{
	int r = 0;

	memset(sn, 0, sizeof(*sn));
	pthread_mutex_lock(&pl->append_lock);
	if (pl->n_pending) {
		sn->pending = malloc(pl->n_pending * sizeof(*sn->pending));
		if (!sn->pending) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < pl->n_pending; i++) {
			sn->pending[i] = pl->pending[i];
			segment_ref(sn->pending[i]);
		}
		sn->n_pending = pl->n_pending;
	}
	sn->active = pl->active;
	segment_ref(sn->active);
	sn->size = segment_size(sn->active);
	sn->end = atomic_load(&pl->end);
	sn->dirty = atomic_exchange(&pl->dirty, false);
	sn->dir_dirty = atomic_exchange(&pl->dir_dirty, false);
out:
	pthread_mutex_unlock(&pl->append_lock);
	return r;
}

/* Ends a sync: on success dequeues the synced pending segments, on failure
 * marks the work as still to do. */
static void sync_finish(partlog *pl, struct sync_snap *sn, bool ok)
{
	pthread_mutex_lock(&pl->append_lock);
	if (ok && sn->n_pending) {
		for (size_t i = 0; i < sn->n_pending; i++)
			segment_unref(pl->pending[i]);
		memmove(pl->pending, pl->pending + sn->n_pending,
			(pl->n_pending - sn->n_pending) * sizeof(*pl->pending));
		pl->n_pending -= sn->n_pending;
	} else if (!ok) {
		if (sn->dirty)
			atomic_store(&pl->dirty, true);
		if (sn->dir_dirty)
			atomic_store(&pl->dir_dirty, true);
	}
	pthread_mutex_unlock(&pl->append_lock);
	for (size_t i = 0; i < sn->n_pending; i++)
		segment_unref(sn->pending[i]);
	free(sn->pending);
	segment_unref(sn->active);
}

/* Rolled segments in full; the active one's .log, and its indexes too
 * unless data_only (then they wait for the checkpoint). */
static int sync_files(partlog *pl, const struct sync_snap *sn, bool data_only)
{
	int r = 0;

	/* A rolled segment ends with its last batch before the checkpoint
	 * may pass it (segment.c's format: trusted segments are not scanned). */
	for (size_t i = 0; i < sn->n_pending && !r; i++) {
		r = segment_trim(sn->pending[i]);
		if (!r)
			r = segment_sync(sn->pending[i]);
	}
	if (!r && sn->dirty)
		r = segment_sync_data(sn->active);
	if (!r && (sn->dirty || pl->index_unsynced)) {
		if (data_only) {
			pl->index_unsynced = true;
		} else {
			r = segment_sync_index(sn->active);
			if (!r)
				pl->index_unsynced = false;
		}
	}
	if (!r && sn->dir_dirty)
		r = fileio_fsync(pl->dirfd);
	return r;
}

static int sync_log(partlog *pl, int64_t *synced_end, bool data_only)
{
	struct sync_snap sn;
	int r = atomic_load(&pl->sync_err);

	if (r)
		return r;
	r = sync_snapshot(pl, &sn);
	if (r)
		return r;
	r = sync_files(pl, &sn, data_only);
	if (r) {
		sync_finish(pl, &sn, false);
		if (r < 0)
			atomic_store(&pl->sync_err, r);
		return r;
	}
	/* Segments first, then hw: a reader that sees the new hw (acquire)
	 * sees the sizes that back it.  In page-cache mode too (both only
	 * rise): bytes appended in synced mode before a switch to page cache
	 * are published here at the latest, not only by the next append. */
	for (size_t i = 0; i < sn.n_pending; i++)
		segment_publish(sn.pending[i], segment_size(sn.pending[i]));
	segment_publish(sn.active, sn.size);
	/* durable first: whoever sees the hw (an fsync commit's mark) sees
	 * the log durable there too */
	store_max(&pl->durable, sn.end);
	store_max(&pl->hw, sn.end);
	/* Rolled segments are never written again. */
	for (size_t i = 0; i < sn.n_pending; i++)
		segment_close_index(sn.pending[i]);
	pl->synced_base = segment_base(sn.active);
	pl->synced_pos = sn.size;
	if (synced_end)
		*synced_end = sn.end;
	sync_finish(pl, &sn, true);
	return 0;
}

bool partlog_sync_failed(partlog *pl)
{
	return atomic_load(&pl->sync_err) != 0;
}

int partlog_sync(partlog *pl, int64_t *synced_end)
{
	return sync_log(pl, synced_end, false);
}

int partlog_sync_data(partlog *pl, int64_t *synced_end)
{
	return sync_log(pl, synced_end, true);
}

int partlog_fill_ahead(partlog *pl, uint64_t bytes)
{
	uint64_t seg_bytes = atomic_load(&pl->segment_bytes), size, from, to;
	segment *a;
	bool fast;
	int r;

	if (!bytes || !atomic_load(&pl->synced))
		return 0;
	pthread_mutex_lock(&pl->append_lock);
	a = pl->active;
	size = segment_size(a);
	from = segment_filled(a);
	to = size + bytes < seg_bytes ? size + bytes : seg_bytes;
	/* Appends outran half a preallocation since the last look (one per
	 * sync): at that rate the bytes make a sync's cost, not the journal
	 * commit, and zeros would double them (10% less produce throughput,
	 * docs/benchmarks.md).  The file grows as it would without. */
	fast = segment_base(a) == pl->fill_seen_base && size - pl->fill_seen_size > bytes / 2;
	pl->fill_seen_base = segment_base(a);
	pl->fill_seen_size = size;
	if (fast || from >= size + bytes / 2 || from >= to) {
		pthread_mutex_unlock(&pl->append_lock);
		return 0;
	}
	segment_ref(a);
	pl->fill_seg = a;
	pl->fill_from = from;
	pthread_mutex_unlock(&pl->append_lock);

	r = segment_fill(a, from, to);

	pthread_mutex_lock(&pl->append_lock);
	pl->fill_seg = NULL;
	pthread_cond_broadcast(&pl->fill_done);
	pthread_mutex_unlock(&pl->append_lock);
	segment_unref(a);
	return r;
}

/* ---- append ---- */

/* Whether a batch of len bytes must go to a new segment, the active one a
 * holding `size` bytes up to offset `end` and first written at first_ms (-1:
 * not yet).  Append lock held. */
static bool need_roll(const partlog *pl, const segment *a, uint64_t size, int64_t end,
		      int64_t first_ms, size_t len, int64_t now_ms)
{
	uint64_t seg_bytes = atomic_load_explicit(&pl->segment_bytes, memory_order_relaxed);
	int64_t seg_ms = atomic_load_explicit(&pl->segment_ms, memory_order_relaxed);

	if (size == 0)
		return false;
	if (size + len > seg_bytes || size + len > UINT32_MAX)
		return true;
	/* Index entries hold offsets relative to the base as uint32. */
	if (end - segment_base(a) > UINT32_MAX)
		return true;
	return seg_ms > 0 && first_ms >= 0 && now_ms - first_ms > seg_ms;
}

/* Starts a new active segment at the current end.  Append lock held. */
static int roll(partlog *pl)
{
	segment *old = pl->active, *s;
	int r;

	r = grow((void **)&pl->pending, &pl->cap_pending, pl->n_pending + 1, sizeof(*pl->pending));
	if (r)
		return r;
	r = segment_create(pl->dir, atomic_load(&pl->end), &s);
	if (r)
		return r;
	pthread_rwlock_wrlock(&pl->list_lock);
	r = list_push(pl, s);
	pthread_rwlock_unlock(&pl->list_lock);
	if (r) {
		segment_unlink(s);
		segment_unref(s);
		return r;
	}
	segment_ref(old);
	pl->pending[pl->n_pending++] = old; /* the sync thread syncs it once more */
	pl->first_ms = -1;
	atomic_store(&pl->dir_dirty, true);
	return 0;
}

/* Page-cache mode: makes everything written visible.  Append lock held. */
static void publish(partlog *pl)
{
	for (size_t i = 0; i < pl->n_pending; i++)
		segment_publish(pl->pending[i], segment_size(pl->pending[i]));
	segment_publish(pl->active, segment_size(pl->active));
	store_max(&pl->hw, atomic_load_explicit(&pl->end, memory_order_relaxed));
}

/* Whether b can be appended at all: 0, -EINVAL (not one whole batch, a
 * negative lastOffsetDelta) or PARTLOG_E_TOO_LARGE. */
static int check_batch(const partlog_batch *b, uint64_t seg_bytes)
{
	if (b->len < RECBATCH_HEADER_SIZE || recbatch_size(b->batch, b->len) != b->len ||
	    (int32_t)wire_get32(b->batch + RECBATCH_OFF_LAST_DELTA) < 0)
		return -EINVAL;
	if (b->len > seg_bytes || b->len > UINT32_MAX)
		return PARTLOG_E_TOO_LARGE;
	return 0;
}

/* One run: batches that land in the active segment, written by one
 * segment_append_v.  About 6 KiB: lives on the appender's stack. */
struct run {
	struct iovec iov[SEGMENT_APPEND_MAX];
	int64_t max_ts[SEGMENT_APPEND_MAX];
	int k;          /* batches in the run */
	uint64_t bytes; /* their total length */
	int64_t end;    /* pl->end after them */
};

/* Rolls if v[0] calls for it, then takes v[0] and as many following
 * batches as pass check_batch and fit in the active segment as n
 * partlog_append calls would see it (need_roll on the running size, end
 * and first_ms), at most SEGMENT_APPEND_MAX, and assigns their offsets
 * from pl->end.  v[0] passed check_batch.  Returns 0 or -errno (a failed
 * roll).  Append lock held. */
static int run_plan(partlog *pl, partlog_batch *v, size_t n, uint64_t seg_bytes, int64_t now_ms,
		    struct run *run)
{
	int64_t end, first_ms;
	uint64_t size;
	int r;

	/* The zeros of a fill under way must not land over the batches: the
	 * run waits for it, then looks again (the lock was let go).  Only the
	 * first fill of a segment (after a roll or an open) starts at its
	 * end; later ones start at least half their length past it. */
	for (;;) {
		end = atomic_load_explicit(&pl->end, memory_order_relaxed);
		if (need_roll(pl, pl->active, segment_size(pl->active), end, pl->first_ms,
			      v[0].len, now_ms) &&
		    (r = roll(pl)))
			return r;
		size = segment_size(pl->active);
		if (pl->fill_seg != pl->active || size + v[0].len <= pl->fill_from)
			break;
		pthread_cond_wait(&pl->fill_done, &pl->append_lock);
	}
	/* After the run's first batch, first_ms is set as partlog_append sets it. */
	first_ms = pl->first_ms >= 0 ? pl->first_ms : now_ms;
	run->k = 0;
	run->bytes = 0;
	for (size_t i = 0; i < n && run->k < SEGMENT_APPEND_MAX; i++) {
		if (i > 0 && (check_batch(&v[i], seg_bytes) ||
			      need_roll(pl, pl->active, size + run->bytes, end, first_ms, v[i].len,
					now_ms)))
			break;
		if (pl->fill_seg == pl->active && size + run->bytes + v[i].len > pl->fill_from)
			break; /* the next run waits for the fill */
		recbatch_set_base_offset(v[i].batch, end);
		run->iov[run->k] = (struct iovec){ .iov_base = v[i].batch, .iov_len = v[i].len };
		run->max_ts[run->k++] = v[i].max_ts;
		run->bytes += v[i].len;
		end += (int64_t)(int32_t)wire_get32(v[i].batch + RECBATCH_OFF_LAST_DELTA) + 1;
	}
	run->end = end;
	return 0;
}

int partlog_append_v(partlog *pl, partlog_batch *v, size_t n, int64_t now_ms,
		     size_t *nappended)
{
	uint64_t seg_bytes = atomic_load_explicit(&pl->segment_bytes, memory_order_relaxed);
	uint32_t interval = atomic_load_explicit(&pl->index_interval, memory_order_relaxed);
	struct run run;
	size_t done = 0;
	int r = atomic_load(&pl->sync_err);

	if (r) {
		*nappended = 0;
		return r;
	}
	pthread_mutex_lock(&pl->append_lock);
	while (done < n) {
		r = check_batch(&v[done], seg_bytes);
		if (!r)
			r = run_plan(pl, v + done, n - done, seg_bytes, now_ms, &run);
		if (!r)
			r = segment_append_v(pl->active, run.iov, run.k, run.max_ts, interval);
		if (r)
			break;
		for (int i = 0; i < run.k; i++)
			v[done + i].base_offset = (int64_t)wire_get64(v[done + i].batch);
		done += (size_t)run.k;
		if (pl->first_ms < 0)
			pl->first_ms = now_ms;
		atomic_store_explicit(&pl->end, run.end, memory_order_release);
		atomic_fetch_add_explicit(&pl->size_bytes, run.bytes, memory_order_relaxed);
		atomic_store(&pl->dirty, true);
		if (!atomic_load_explicit(&pl->synced, memory_order_relaxed))
			publish(pl);
	}
	pthread_mutex_unlock(&pl->append_lock);
	*nappended = done;
	return r;
}

int partlog_append(partlog *pl, uint8_t *batch, size_t len, int64_t max_ts, int64_t now_ms,
		   int64_t *base_offset)
{
	partlog_batch b = { .batch = batch, .len = len, .max_ts = max_ts, .base_offset = -1 };
	size_t done;
	int r = partlog_append_v(pl, &b, 1, now_ms, &done);

	if (!r)
		*base_offset = b.base_offset;
	return r;
}

/* ---- readers ---- */

int64_t partlog_durable_end(const partlog *pl)
{
	return atomic_load_explicit(&pl->durable, memory_order_acquire);
}

int64_t partlog_hw(const partlog *pl)
{
	return atomic_load_explicit(&pl->hw, memory_order_acquire);
}

int64_t partlog_start_offset(const partlog *pl)
{
	return atomic_load_explicit(&pl->start, memory_order_acquire);
}

int64_t partlog_end_offset(const partlog *pl)
{
	return atomic_load_explicit(&pl->end, memory_order_acquire);
}

uint64_t partlog_size_bytes(const partlog *pl)
{
	return atomic_load_explicit(&pl->size_bytes, memory_order_relaxed);
}

int partlog_read(partlog *pl, int64_t offset, size_t max_bytes, partlog_range *out)
{
	int64_t hw = partlog_hw(pl);
	partlog_range rg = { NULL, -1, 0, 0, offset };
	segment_span sp;
	segment *s;
	int r;

	if (offset < partlog_start_offset(pl) || offset > hw)
		return PARTLOG_E_OFFSET_OUT_OF_RANGE;
	if (offset == hw) {
		*out = rg;
		return 0;
	}
	pthread_rwlock_rdlock(&pl->list_lock);
	s = list_find(pl, offset);
	if (s)
		segment_ref(s);
	pthread_rwlock_unlock(&pl->list_lock);
	if (!s) /* retention removed it since the start check */
		return PARTLOG_E_OFFSET_OUT_OF_RANGE;
	r = segment_find(s, offset, segment_visible(s), hw, max_bytes, &sp);
	if (!r && sp.len == 0)
		r = SEGMENT_E_CORRUPT; /* offset < hw must be in this segment */
	if (r) {
		segment_unref(s);
		return r == SEGMENT_E_CORRUPT ? PARTLOG_E_CORRUPT : r;
	}
	rg.seg = s;
	rg.fd = segment_fd(s);
	rg.pos = (off_t)sp.pos;
	rg.len = sp.len;
	rg.first_offset = sp.first_offset;
	*out = rg;
	return 0;
}

void partlog_range_release(partlog_range *r)
{
	if (!r)
		return;
	segment_unref(r->seg);
	r->seg = NULL;
	r->fd = -1;
	r->len = 0;
}

int partlog_offset_for_time(partlog *pl, int64_t ts, int64_t *offset, int64_t *found_ts)
{
	int64_t hw = partlog_hw(pl), o = -1, f = -1, max_ts;
	segment **v;
	size_t n;
	int r = list_snapshot(pl, &v, &n);

	if (r)
		return r;
	for (size_t i = 0; i < n && o < 0 && !r; i++) {
		if (segment_base(v[i]) >= hw)
			break;
		r = segment_max_timestamp(v[i], &max_ts);
		if (r || max_ts < ts)
			continue;
		r = segment_find_time(v[i], ts, segment_visible(v[i]), hw, &o, &f);
	}
	snapshot_free(v, n);
	if (r)
		return r == SEGMENT_E_CORRUPT ? -EIO : r;
	*offset = o;
	*found_ts = f;
	return 0;
}

/* ---- retention ---- */

/* The segment's age for retention.ms: its largest batch timestamp, or the
 * file's mtime when no batch carries one (Kafka does the same). */
static int segment_age_ts(segment *s, int64_t *ts)
{
	struct stat st;
	int r = segment_max_timestamp(s, ts);

	if (r || *ts >= 0)
		return r;
	if (fstat(segment_fd(s), &st) < 0)
		return -errno;
	*ts = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	return 0;
}

/* Whether the oldest segment s (not the active one) goes. */
static int retention_due(partlog *pl, segment *s, int64_t now_ms, bool *due)
{
	int64_t ret_ms = atomic_load_explicit(&pl->retention_ms, memory_order_relaxed);
	int64_t ret_bytes = atomic_load_explicit(&pl->retention_bytes, memory_order_relaxed);
	uint64_t total = partlog_size_bytes(pl), size = segment_size(s);
	int64_t end = segment_end_offset(s), ts;
	int r;

	*due = false;
	/* Never delete what readers cannot see yet (synced mode). */
	if (end < 0 || end > partlog_hw(pl))
		return 0;
	if (ret_bytes >= 0 && total >= size && total - size >= (uint64_t)ret_bytes) {
		*due = true;
		return 0;
	}
	if (ret_ms < 0)
		return 0;
	r = segment_age_ts(s, &ts);
	if (!r)
		*due = now_ms - ts > ret_ms;
	return r;
}

/* Takes the oldest segment out of the list (it is s). */
static void list_pop_oldest(partlog *pl, segment *s)
{
	pthread_rwlock_wrlock(&pl->list_lock);
	if (pl->n_segs > 1 && pl->segs[0] == s) {
		memmove(pl->segs, pl->segs + 1, (pl->n_segs - 1) * sizeof(*pl->segs));
		pl->n_segs--;
		atomic_store_explicit(&pl->start, segment_base(pl->segs[0]), memory_order_release);
	}
	pthread_rwlock_unlock(&pl->list_lock);
}

int partlog_retention(partlog *pl, int64_t now_ms, int *deleted)
{
	int n = 0, r = 0;

	for (;;) {
		segment *s = NULL;
		bool due;

		pthread_rwlock_rdlock(&pl->list_lock);
		if (pl->n_segs > 1) { /* the last one is the active segment */
			s = pl->segs[0];
			segment_ref(s);
		}
		pthread_rwlock_unlock(&pl->list_lock);
		if (!s)
			break;
		r = retention_due(pl, s, now_ms, &due);
		if (r || !due) {
			segment_unref(s);
			break;
		}
		list_pop_oldest(pl, s);
		atomic_fetch_sub_explicit(&pl->size_bytes, segment_size(s), memory_order_relaxed);
		r = segment_unlink(s);
		atomic_store(&pl->dir_dirty, true);
		segment_unref(s); /* the list's reference */
		segment_unref(s); /* ours; open ranges keep theirs */
		n++;
		if (r)
			break;
	}
	if (deleted)
		*deleted = n;
	return r;
}

/* ---- destroy ---- */

int partlog_destroy(partlog *pl)
{
	int64_t *bases;
	size_t n;
	int r = scan_dir(pl->dirfd, true, &bases, &n);

	free(bases);
	if (!r && rmdir(pl->dir) < 0)
		r = -errno;
	partlog_free(pl);
	return r;
}
