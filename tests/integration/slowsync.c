/*
 * slowsync: LD_PRELOAD shim for the durability tests.  Delays every
 * fdatasync() and fsync() of the process by SLOWSYNC_MS milliseconds
 * (default 300) before doing the real call, so that a test can see from
 * outside whether the broker acknowledges / exposes data before or after
 * the sync, and whether concurrent appends share one sync (group commit).
 * The delay applies only to regular files (directory fsyncs stay fast).
 * SLOWSYNC_LOG=1 also logs each call (UTC time, thread id, file path) to stderr.
 * SLOWSYNC_FAIL_WHEN=<path> and SLOWSYNC_FAIL_SUFFIX=<suffix>: while the
 * file <path> exists, a sync of a file whose path ends with <suffix> fails
 * with EIO (nothing synced), as a disk's writeback error would.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void log_call(const char *what, int fd)
{
	const char *l = getenv("SLOWSYNC_LOG");
	char link[64], path[512];
	ssize_t n;
	if (!l || *l != '1')
		return;
	struct timespec now;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	path[n > 0 ? n : 0] = '\0';
	clock_gettime(CLOCK_REALTIME, &now);
	fprintf(stderr, "slowsync: %02ld:%02ld:%02ld.%03ld tid %ld %s(%s)\n",
		(long)(now.tv_sec / 3600 % 24), (long)(now.tv_sec / 60 % 60), (long)(now.tv_sec % 60),
		now.tv_nsec / 1000000, (long)gettid(), what, path);
}

/* Whether SLOWSYNC_FAIL_WHEN / _SUFFIX say this sync fails. */
static int fails(int fd)
{
	const char *when = getenv("SLOWSYNC_FAIL_WHEN"), *suffix = getenv("SLOWSYNC_FAIL_SUFFIX");
	char link[64], path[512];
	size_t n, k;
	ssize_t r;

	if (!when || !suffix || access(when, F_OK) != 0)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	r = readlink(link, path, sizeof(path) - 1);
	if (r <= 0)
		return 0;
	path[r] = '\0';
	n = (size_t)r;
	k = strlen(suffix);
	return n >= k && strcmp(path + n - k, suffix) == 0;
}

static long delay_ms(int fd)
{
	struct stat st;
	const char *e = getenv("SLOWSYNC_MS");
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode))
		return 0;
	return e ? atol(e) : 300;
}

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (ms > 0 && nanosleep(&ts, &ts) != 0)
		;
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	log_call("fdatasync", fd);
	pause_ms(delay_ms(fd));
	if (fails(fd)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	log_call("fsync", fd);
	pause_ms(delay_ms(fd));
	if (fails(fd)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
