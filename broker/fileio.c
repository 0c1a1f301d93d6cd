/*
 * fileio.c — see fileio.h.
 */
#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

/* Buffers copied to continue a pwritev that stopped inside a buffer (rare:
 * disk full, a signal): the copy's first entry starts where it stopped. */
#define PWRITEV_WINDOW 64

struct fileio_ops fileio = {
	.pwrite = pwrite,
	.pwritev = pwritev,
	.fdatasync = fdatasync,
	.fsync = fsync,
	.ftruncate = ftruncate,
};

void fileio_reset(void)
{
	fileio.pwrite = pwrite;
	fileio.pwritev = pwritev;
	fileio.fdatasync = fdatasync;
	fileio.fsync = fsync;
	fileio.ftruncate = ftruncate;
}


/* One system call for iov[i..cnt) minus the first `done` bytes of iov[i]. */
static ssize_t pwritev_step(int fd, const struct iovec *iov, int cnt, size_t done, off_t pos)
{
	struct iovec win[PWRITEV_WINDOW];

	if (cnt == 1)
		return fileio.pwrite(fd, (const char *)iov->iov_base + done, iov->iov_len - done,
				     pos);
	if (done == 0)
		return fileio.pwritev(fd, iov, cnt < IOV_MAX ? cnt : IOV_MAX, pos);
	if (cnt > PWRITEV_WINDOW)
		cnt = PWRITEV_WINDOW;
	memcpy(win, iov, (size_t)cnt * sizeof(*win));
	win[0].iov_base = (char *)win[0].iov_base + done;
	win[0].iov_len -= done;
	return fileio.pwritev(fd, win, cnt, pos);
}

int fileio_pwritev_all(int fd, const struct iovec *iov, int iovcnt, off_t pos)
{
	size_t done = 0; /* bytes of iov[i] already written */
	int i = 0;

	if (iovcnt < 0)
		return -EINVAL;
	for (;;) {
		ssize_t w;
		size_t left;

		while (i < iovcnt && done == iov[i].iov_len) {
			i++;
			done = 0;
		}
		if (i == iovcnt)
			return 0;
		w = pwritev_step(fd, iov + i, iovcnt - i, done, pos);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -ENOSPC;
		pos += w;
		for (left = (size_t)w; left > 0 && i < iovcnt;) {
			size_t take = iov[i].iov_len - done;

			if (take > left)
				take = left;
			done += take;
			left -= take;
			if (done == iov[i].iov_len) {
				i++;
				done = 0;
			}
		}
	}
}

int fileio_pwrite_all(int fd, const void *buf, size_t n, off_t pos)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = n };

	return fileio_pwritev_all(fd, &v, 1, pos);
}

int fileio_datasync(int fd)
{
	return fileio.fdatasync(fd) < 0 ? -errno : 0;
}

int fileio_fsync(int fd)
{
	return fileio.fsync(fd) < 0 ? -errno : 0;
}

int fileio_truncate(int fd, off_t len)
{
	int r;

	do
		r = fileio.ftruncate(fd, len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}
