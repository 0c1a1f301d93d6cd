/*
 * fileio.c — see fileio.h.
 */
#include "fileio.h"

#include <errno.h>
#include <unistd.h>

struct fileio_ops fileio = {
	.pwrite = pwrite,
	.fdatasync = fdatasync,
	.fsync = fsync,
	.ftruncate = ftruncate,
};

void fileio_reset(void)
{
	fileio.pwrite = pwrite;
	fileio.fdatasync = fdatasync;
	fileio.fsync = fsync;
	fileio.ftruncate = ftruncate;
}

int fileio_pwrite_all(int fd, const void *buf, size_t n, off_t pos)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = fileio.pwrite(fd, p, n, pos);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -ENOSPC;
		p += w;
		n -= (size_t)w;
		pos += w;
	}
	return 0;
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
