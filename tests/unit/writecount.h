/*
 * writecount.h — test-only fileio seam (broker/fileio.h) that counts the
 * writes to each descriptor and the pwritev calls, every write still done
 * for real; for the storage unit tests (test_segment.c, test_partlog.c).
 * Include after cmocka.h and fileio.h.  count_writes() installs it;
 * fileio_reset() removes it.
 */
#ifndef SLUICE_TEST_WRITECOUNT_H
#define SLUICE_TEST_WRITECOUNT_H

#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#define WRITECOUNT_MAX_FDS 64

static int count_fd[WRITECOUNT_MAX_FDS], count_n[WRITECOUNT_MAX_FDS], n_counted_fds, pwritev_calls;

static void count_write(int fd)
{
	for (int i = 0; i < n_counted_fds; i++) {
		if (count_fd[i] == fd) {
			count_n[i]++;
			return;
		}
	}
	assert_true(n_counted_fds < WRITECOUNT_MAX_FDS);
	count_fd[n_counted_fds] = fd;
	count_n[n_counted_fds++] = 1;
}

static ssize_t pwrite_counting(int fd, const void *buf, size_t n, off_t pos)
{
	count_write(fd);
	return pwrite(fd, buf, n, pos);
}

static ssize_t pwritev_counting(int fd, const struct iovec *iov, int cnt, off_t pos)
{
	count_write(fd);
	pwritev_calls++;
	return pwritev(fd, iov, cnt, pos);
}

/* Starts counting from zero. */
static void count_writes(void)
{
	n_counted_fds = pwritev_calls = 0;
	fileio.pwrite = pwrite_counting;
	fileio.pwritev = pwritev_counting;
}

/* The first half of iov's bytes only: a write cut short by a full disk. */
static ssize_t pwritev_first_half(int fd, const struct iovec *iov, int cnt, off_t pos)
{
	struct iovec win[IOV_MAX];
	size_t total = 0, left;
	int m = 0;

	assert_true(cnt <= IOV_MAX);
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	for (left = total / 2; left > 0; m++) {
		win[m] = iov[m];
		if (win[m].iov_len > left)
			win[m].iov_len = left;
		left -= win[m].iov_len;
	}
	return pwritev(fd, win, m, pos);
}

/* Writes counted to fd since count_writes(). */
static int writes_to(int fd)
{
	for (int i = 0; i < n_counted_fds; i++)
		if (count_fd[i] == fd)
			return count_n[i];
	return 0;
}

#endif
