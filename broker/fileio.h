/*
 * fileio.h — the fault-injection seam for storage writes (STYLE §12).
 *
 * Every write, data sync and truncate of the segment logs, their indexes and
 * the recovery checkpoint goes through the `fileio` table below.  It points
 * at the real system calls; a test may replace any member (e.g. a pwrite
 * that writes half the buffer and then fails with ENOSPC) and put the real
 * ones back with fileio_reset().  Reads do not go through it: failures we
 * care to inject are the ones that can leave partial state on disk.
 *
 * Which member a write uses: every system call that writes a single buffer
 * goes through `pwrite`, one that writes several buffers through `pwritev`
 * (fileio_pwritev_all with one buffer left is a pwrite).  So a test that
 * replaces only `pwrite` still sees every single-buffer write.
 *
 * Threads: the table is a plain global read by any thread.  Tests change it
 * only while no storage operation runs (between calls), so no lock.
 *
 * Errors: the fileio_* helpers return 0 or a negative -errno, never set
 * errno for the caller to read.
 */
#ifndef SLUICE_FILEIO_H
#define SLUICE_FILEIO_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct fileio_ops {
	/* Same contract as the system calls: -1 with errno on failure. */
	ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t pos);
	ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t pos);
	int (*fdatasync)(int fd);
	int (*fsync)(int fd); /* directories: fdatasync is not enough there */
	int (*ftruncate)(int fd, off_t len);
};

extern struct fileio_ops fileio;

/* Puts the real system calls back into `fileio`. */
void fileio_reset(void);

/* Writes all n bytes at pos.  A short write is continued (the kernel only
 * writes short when it is running out of space or was interrupted); a
 * continuation that writes nothing counts as -ENOSPC.  Returns 0 or -errno;
 * on failure some prefix of buf may have been written, the caller truncates. */
int fileio_pwrite_all(int fd, const void *buf, size_t n, off_t pos);
/* Writes iov[0..iovcnt) back to back at pos, like fileio_pwrite_all: one
 * pwritev when it can (several only past IOV_MAX buffers, or to continue a
 * short write), a single buffer with pwrite (see above).  The caller's
 * array is not modified and may be empty.  Returns 0 or -errno (-EINVAL
 * for iovcnt < 0); on failure some prefix may have been written. */
int fileio_pwritev_all(int fd, const struct iovec *iov, int iovcnt, off_t pos);
/* fdatasync(fd): 0 or -errno. */
int fileio_datasync(int fd);
/* fsync(fd) (for directory entries): 0 or -errno. */
int fileio_fsync(int fd);
/* ftruncate(fd, len): 0 or -errno. */
int fileio_truncate(int fd, off_t len);

#endif
