/*
 * walvfs.h — an SQLite VFS ("sluice-walvfs") that writes each transaction's
 * WAL frames with one write instead of two per page.
 *
 * Why: SQLite appends a WAL frame as two writes (24-byte header, then the
 * page).  A coordinator batch touches 12-20 pages, so a commit cost 25-40
 * write syscalls, a quarter of the coordinator thread's time on this VM
 * (docs/benchmarks.md, "Transactions").  The shim wraps the default VFS
 * and, for WAL files only, gathers writes that continue the file's append
 * stream into a buffer, written out with one pwrite
 *  - right after the page of a commit frame (a frame header whose
 *    "database size after commit" field is non-zero), so the frames are in
 *    the file before SQLite publishes the commit in the wal-index and any
 *    reader (another process included) can look for them;
 *  - before any read, sync, truncate, size query, close, or write that does
 *    not continue the stream (in-place rewrites of uncommitted frames,
 *    checksum rewrites), so SQLite never observes the buffer;
 *  - when the next write would not fit the buffer (WALVFS_BUF_BYTES).
 * A failed write-out is returned by the write that triggered it — for a
 * commit, the commit frame's write — so SQLite fails that commit as it would
 * a failed pwrite.  The file format is untouched: the sqlite3 shell, with
 * the default VFS, reads the database as always.
 *
 * Threads: walvfs_register once, before the first sqlite3_open_v2 that names
 * WALVFS_NAME (coord_open calls it; repeated calls are harmless and
 * thread-safe).  A file's buffer belongs to its connection and follows
 * SQLite's own locking of that connection.
 */
#ifndef SLUICE_WALVFS_H
#define SLUICE_WALVFS_H

#include <stdint.h>

#define WALVFS_NAME "sluice-walvfs"
/* The default unix VFS writes at most 0x1ffff bytes per call (os_unix.c
 * seekAndWriteFd masks the length: a longer write comes back short, which
 * SQLite reports as SQLITE_FULL), so the buffer stays below that. */
#define WALVFS_BUF_BYTES 0x1ffff

/* Registers the VFS (not as the default).  Returns SQLITE_OK or an SQLite
 * error code. */
int walvfs_register(void);

/* Process-wide counters, for tests and `perf`-free checks: write calls SQLite
 * made on WAL files, and write syscalls the shim made for them. */
typedef struct walvfs_stats {
	uint64_t wal_writes;   /* xWrite calls on WAL files */
	uint64_t wal_syscalls; /* writes the shim passed on to the real file */
} walvfs_stats;
void walvfs_get_stats(walvfs_stats *out);

#endif
