/*
 * walvfs.c — see walvfs.h.
 *
 * Every file opened through the VFS is a `struct wfile` followed by the
 * real (default VFS) file; the methods forward to it.  Only WAL files get
 * a buffer; for the others the forwarders are all there is.
 *
 * The append stream: `next_off` is where the last write to the file ended.
 * A write at next_off continues the stream (SQLite appends frames one after
 * another) and is buffered, as is the 32-byte WAL header at offset 0 that
 * starts a new stream after a checkpoint reset.  Anything else is written
 * through after the buffer.
 *
 * A transaction that does not commit (ROLLBACK of a transaction whose
 * pages spilled into the WAL) leaves frames in the buffer that nothing on
 * the WAL file tells us are dead: the end of a write transaction is the
 * release of the WAL write lock, an xShmLock on the main database file.
 * So each main database file knows its WAL file (`wal`, linked in x_open
 * through sqlite3_filename_database(), which returns the very pointer the
 * main file was opened with) and x_shm_lock drops the WAL's buffer when
 * that lock is released: whatever is still there was never committed
 * (a commit writes the buffer out before SQLite publishes it).  Written
 * later, those bytes would land on frames another connection committed
 * meanwhile (found by tests/unit/test_walvfs.c).
 */
#include "walvfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define WAL_HDR_BYTES 32
#define FRAME_HDR_BYTES 24

struct wfile {
	sqlite3_file base;
	sqlite3_file *real; /* the default VFS's file, right after this struct */
	/* WAL files only (buf NULL otherwise): */
	unsigned char *buf; /* owned; WALVFS_BUF_BYTES */
	sqlite3_int64 buf_off; /* file offset of buf[0] */
	size_t buf_len;
	sqlite3_int64 next_off;  /* end of the last write: the append stream */
	sqlite3_int64 commit_at; /* page of a commit frame goes here; -1: none */
	/* Main database / WAL pairing, under links_lock: */
	sqlite3_filename name;  /* main database files: as opened */
	struct wfile *wal;      /* main database: its open WAL file, or NULL */
	struct wfile *db;       /* WAL file: its main database, or NULL */
	struct wfile *next_db;  /* list of open main database files */
};

/* SQLite's WAL write lock (wal.c WAL_WRITE_LOCK): shm lock slot 0. */
#define WAL_WRITE_LOCK_SLOT 0

static pthread_mutex_t links_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wfile *main_dbs; /* under links_lock */

static sqlite3_vfs walvfs;
static sqlite3_vfs *base_vfs;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static int reg_rc = SQLITE_ERROR;
static _Atomic uint64_t st_writes, st_syscalls;

static struct wfile *wf(sqlite3_file *f)
{
	return (struct wfile *)f;
}

/* Writes the buffer out.  SQLITE_OK or the real file's error; the buffer is
 * empty afterwards either way (SQLite fails the commit on error and does not
 * expect those frames to be there). */
static int flush(struct wfile *w)
{
	int rc;

	if (!w->buf_len)
		return SQLITE_OK;
	atomic_fetch_add_explicit(&st_syscalls, 1, memory_order_relaxed);
	rc = w->real->pMethods->xWrite(w->real, w->buf, (int)w->buf_len, w->buf_off);
	w->buf_len = 0;
	return rc;
}

static bool commit_header(const void *p, int amt)
{
	const unsigned char *h = p;

	return amt == FRAME_HDR_BYTES && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int wal_write(struct wfile *w, const void *p, int amt, sqlite3_int64 off)
{
	bool stream = off == w->next_off || (off == 0 && amt == WAL_HDR_BYTES);
	bool ends_commit = off == w->commit_at;
	int rc = SQLITE_OK;

	atomic_fetch_add_explicit(&st_writes, 1, memory_order_relaxed);
	if (w->buf_len && (!stream || off != w->buf_off + (sqlite3_int64)w->buf_len ||
			   w->buf_len + (size_t)amt > WALVFS_BUF_BYTES))
		rc = flush(w);
	if (rc != SQLITE_OK)
		return rc;
	w->next_off = off + amt;
	w->commit_at = commit_header(p, amt) ? off + amt : -1;
	if (!stream || (size_t)amt > WALVFS_BUF_BYTES) {
		atomic_fetch_add_explicit(&st_syscalls, 1, memory_order_relaxed);
		return w->real->pMethods->xWrite(w->real, p, amt, off);
	}
	if (!w->buf_len)
		w->buf_off = off;
	memcpy(w->buf + w->buf_len, p, (size_t)amt);
	w->buf_len += (size_t)amt;
	return ends_commit ? flush(w) : SQLITE_OK;
}

/* ---- methods ---- */

/* Removes f from the pairing (x_close). */
static void unlink_file(struct wfile *w)
{
	pthread_mutex_lock(&links_lock);
	if (w->db)
		w->db->wal = NULL;
	if (w->wal)
		w->wal->db = NULL;
	for (struct wfile **pp = &main_dbs; *pp; pp = &(*pp)->next_db) {
		if (*pp == w) {
			*pp = w->next_db;
			break;
		}
	}
	pthread_mutex_unlock(&links_lock);
}

/* Pairs a new main database or WAL file (x_open). */
static void link_file(struct wfile *w, sqlite3_filename name, int flags)
{
	pthread_mutex_lock(&links_lock);
	if (flags & SQLITE_OPEN_MAIN_DB) {
		w->name = name;
		w->next_db = main_dbs;
		main_dbs = w;
	} else if ((flags & SQLITE_OPEN_WAL) && name) {
		sqlite3_filename dbname = sqlite3_filename_database(name);

		for (struct wfile *d = main_dbs; d; d = d->next_db) {
			if (d->name == dbname) {
				d->wal = w;
				w->db = d;
				break;
			}
		}
	}
	pthread_mutex_unlock(&links_lock);
}

static int x_close(sqlite3_file *f)
{
	struct wfile *w = wf(f);
	int rc;

	unlink_file(w);
	rc = flush(w);
	int crc = w->real->pMethods ? w->real->pMethods->xClose(w->real) : SQLITE_OK;

	free(w->buf);
	w->buf = NULL;
	return rc != SQLITE_OK ? rc : crc;
}

static int x_read(sqlite3_file *f, void *p, int amt, sqlite3_int64 off)
{
	struct wfile *w = wf(f);
	int rc = flush(w);

	return rc != SQLITE_OK ? rc : w->real->pMethods->xRead(w->real, p, amt, off);
}

static int x_write(sqlite3_file *f, const void *p, int amt, sqlite3_int64 off)
{
	struct wfile *w = wf(f);

	if (w->buf)
		return wal_write(w, p, amt, off);
	return w->real->pMethods->xWrite(w->real, p, amt, off);
}

static int x_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct wfile *w = wf(f);
	int rc = flush(w);

	w->next_off = -1; /* the stream starts again where SQLite says */
	return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int x_sync(sqlite3_file *f, int flags)
{
	struct wfile *w = wf(f);
	int rc = flush(w);

	return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int x_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	struct wfile *w = wf(f);
	int rc = flush(w);

	return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, size);
}

static int x_lock(sqlite3_file *f, int lock)
{
	return wf(f)->real->pMethods->xLock(wf(f)->real, lock);
}

static int x_unlock(sqlite3_file *f, int lock)
{
	return wf(f)->real->pMethods->xUnlock(wf(f)->real, lock);
}

static int x_check_reserved(sqlite3_file *f, int *out)
{
	return wf(f)->real->pMethods->xCheckReservedLock(wf(f)->real, out);
}

static int x_file_control(sqlite3_file *f, int op, void *arg)
{
	struct wfile *w = wf(f);
	int rc = flush(w);

	return rc != SQLITE_OK ? rc : w->real->pMethods->xFileControl(w->real, op, arg);
}

static int x_sector_size(sqlite3_file *f)
{
	return wf(f)->real->pMethods->xSectorSize(wf(f)->real);
}

static int x_device_chars(sqlite3_file *f)
{
	return wf(f)->real->pMethods->xDeviceCharacteristics(wf(f)->real);
}

static int x_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	return wf(f)->real->pMethods->xShmMap(wf(f)->real, pg, pgsz, extend, pp);
}

static int x_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	struct wfile *w = wf(f);

	if (offset == WAL_WRITE_LOCK_SLOT && (flags & SQLITE_SHM_UNLOCK) &&
	    (flags & SQLITE_SHM_EXCLUSIVE)) {
		/* the write transaction is over: what is buffered never
		 * committed (see the top).  The connection's own locking
		 * serialises this with its WAL file's methods. */
		pthread_mutex_lock(&links_lock);
		if (w->wal && w->wal->buf_len) {
			w->wal->buf_len = 0;
			w->wal->commit_at = -1;
			w->wal->next_off = -1;
		}
		pthread_mutex_unlock(&links_lock);
	}
	return w->real->pMethods->xShmLock(w->real, offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *f)
{
	wf(f)->real->pMethods->xShmBarrier(wf(f)->real);
}

static int x_shm_unmap(sqlite3_file *f, int del)
{
	return wf(f)->real->pMethods->xShmUnmap(wf(f)->real, del);
}

static int x_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
	return wf(f)->real->pMethods->xFetch(wf(f)->real, off, amt, pp);
}

static int x_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return wf(f)->real->pMethods->xUnfetch(wf(f)->real, off, p);
}

/* Versions 1-3 of the methods; xOpen hands out the prefix the real file
 * supports (its iVersion), so SQLite never calls a method it lacks. */
static const sqlite3_io_methods methods = {
	.iVersion = 3,
	.xClose = x_close,
	.xRead = x_read,
	.xWrite = x_write,
	.xTruncate = x_truncate,
	.xSync = x_sync,
	.xFileSize = x_file_size,
	.xLock = x_lock,
	.xUnlock = x_unlock,
	.xCheckReservedLock = x_check_reserved,
	.xFileControl = x_file_control,
	.xSectorSize = x_sector_size,
	.xDeviceCharacteristics = x_device_chars,
	.xShmMap = x_shm_map,
	.xShmLock = x_shm_lock,
	.xShmBarrier = x_shm_barrier,
	.xShmUnmap = x_shm_unmap,
	.xFetch = x_fetch,
	.xUnfetch = x_unfetch,
};
static sqlite3_io_methods methods_v1, methods_v2;

static int x_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
	struct wfile *w = wf(f);
	int rc;

	(void)vfs;
	memset(w, 0, sizeof(*w));
	w->real = (sqlite3_file *)(w + 1);
	w->next_off = -1;
	w->commit_at = -1;
	if ((flags & SQLITE_OPEN_WAL) && !(w->buf = malloc(WALVFS_BUF_BYTES)))
		return SQLITE_NOMEM;
	rc = base_vfs->xOpen(base_vfs, name, w->real, flags, out_flags);
	if (rc != SQLITE_OK || !w->real->pMethods) {
		/* SQLite calls xClose only if pMethods is set */
		if (w->real->pMethods)
			w->real->pMethods->xClose(w->real);
		free(w->buf);
		w->buf = NULL;
		return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
	}
	link_file(w, name, flags);
	switch (w->real->pMethods->iVersion) {
	case 1: w->base.pMethods = &methods_v1; break;
	case 2: w->base.pMethods = &methods_v2; break;
	default: w->base.pMethods = &methods; break;
	}
	return SQLITE_OK;
}

static void do_register(void)
{
	base_vfs = sqlite3_vfs_find(NULL);
	if (!base_vfs)
		return;
	walvfs = *base_vfs;
	walvfs.pNext = NULL;
	walvfs.zName = WALVFS_NAME;
	walvfs.szOsFile = (int)sizeof(struct wfile) + base_vfs->szOsFile;
	walvfs.xOpen = x_open;
	methods_v1 = methods;
	methods_v1.iVersion = 1;
	methods_v2 = methods;
	methods_v2.iVersion = 2;
	reg_rc = sqlite3_vfs_register(&walvfs, 0);
}

int walvfs_register(void)
{
	pthread_once(&reg_once, do_register);
	return reg_rc;
}

void walvfs_get_stats(walvfs_stats *out)
{
	out->wal_writes = atomic_load_explicit(&st_writes, memory_order_relaxed);
	out->wal_syscalls = atomic_load_explicit(&st_syscalls, memory_order_relaxed);
}
