/*
 * powercut: LD_PRELOAD shim for the power-loss tests
 * (tests/integration/test_powerloss.py).
 *
 * kill -9 keeps everything a process wrote, because the page cache
 * survives it.  A power cut keeps only what was synced.  To get that
 * state, this shim keeps an undo journal of every write to the files
 * under POWERCUT_ROOT:
 * - the bytes each write replaces (its pre-image);
 * - the file's size before the write;
 * - when each fdatasync/fsync of a file began and when it returned.
 * After the test kills the process, `powercut_apply()` in
 * test_powerloss.py undoes, newest first, every write that no completed
 * sync of its file covers. What is left is the worst case a power cut
 * allows: every unsynced byte lost, every synced byte kept.
 *
 * What is covered and what is not:
 * - Writes through pwrite/pwrite64, pwritev/pwritev64, write, and
 *   ftruncate/ftruncate64 are journaled, with open(O_TRUNC) of an
 *   existing file.
 * - A sync covers the writes journaled before it began (the kernel gives
 *   no more).
 * - Files are tracked by path, from the open that made the descriptor,
 *   so two descriptors of one file (SQLite's and the broker's fdatasync
 *   descriptor of the WAL) are one file.
 * - A rename moves the pending writes to the new name (and the open
 *   descriptors of the file write under it from then on).  An unlink
 *   drops them.
 * - Directory operations (create, rename, unlink) are taken as durable
 *   at once: the broker fsyncs its directories itself, and modelling
 *   lost directory entries is beyond this shim.
 * - Writes through mmap are not seen.  The broker maps nothing, and
 *   SQLite maps only its -shm file, which the applier deletes, as a
 *   reboot would.
 *
 * One mutex serialises every tracked write with its journal record, so
 * the journal order is the order of the writes. That is slow, but it is
 * a test shim.
 *
 * Journal record (native endianness): magic u32 "PCUT", type u8, pad[3],
 * seq u64, a u64, b u64, path_len u32, data_len u32, then the path and
 * the data.
 *   'W' write:    a = offset, b = size before; data = pre-image of
 *                 [offset, min(offset + len, size before)).
 *   'T' truncate: a = new size, b = size before; data = pre-image of
 *                 [new size, size before) when it shrinks.
 *   'B' sync began: (path).  'E' sync ended: a = seq of its 'B'.
 *   'R' rename:   path = "old\0new".
 *   'U' unlink:   (path).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* Both names of each call are defined here (pwrite and pwrite64, ...):
 * without this the headers would rename pwrite to pwrite64.  off_t is 64
 * bits on the 64-bit targets this runs on either way. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define MAGIC 0x54554350u /* "PCUT" */

struct rec {
	uint32_t magic;
	uint8_t type, pad[3];
	uint64_t seq, a, b;
	uint32_t path_len, data_len;
};

static struct {
	ssize_t (*pwrite)(int, const void *, size_t, off_t);
	ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*pread)(int, void *, size_t, off_t);
	int (*ftruncate)(int, off_t);
	int (*fdatasync)(int);
	int (*fsync)(int);
	int (*open)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*close)(int);
	int (*rename)(const char *, const char *);
	int (*renameat)(int, const char *, int, const char *);
	int (*unlink)(const char *);
	int (*unlinkat)(int, const char *, int);
} real;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int jfd = -1;              /* the journal; -1: shim off */
static char root[PATH_MAX];
static size_t root_len;
static uint64_t seq;              /* under lock */
static char *paths[MAX_FDS];      /* under lock: tracked fds' paths */

static void resolve(void)
{
#define R(name) real.name = dlsym(RTLD_NEXT, #name)
	R(pwrite);
	R(pwritev);
	R(write);
	R(pread);
	R(ftruncate);
	R(fdatasync);
	R(fsync);
	R(open);
	R(openat);
	R(close);
	R(rename);
	R(renameat);
	R(unlink);
	R(unlinkat);
#undef R
}

__attribute__((constructor)) static void init(void)
{
	const char *j = getenv("POWERCUT_JOURNAL"), *r = getenv("POWERCUT_ROOT");

	resolve();
	if (!j || !r || !realpath(r, root))
		return;
	root_len = strlen(root);
	jfd = real.open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* lock held */
static void journal(uint8_t type, const char *path, size_t plen, uint64_t a, uint64_t b,
		    const void *data, size_t dlen)
{
	struct rec h = { MAGIC, type, { 0 }, ++seq, a, b, (uint32_t)plen, (uint32_t)dlen };
	struct iovec v[3] = { { &h, sizeof(h) }, { (void *)path, plen }, { (void *)data, dlen } };
	size_t want = sizeof(h) + plen + dlen;
	/* one writev: a record is never torn by a kill -9 between calls */
	ssize_t n = writev(jfd, v, 3);

	if (n != (ssize_t)want) {
		fprintf(stderr, "powercut: journal write failed\n");
		abort();
	}
}

static bool under_root(const char *p)
{
	return strncmp(p, root, root_len) == 0 && (p[root_len] == '/' || p[root_len] == '\0');
}

/* After an open returned fd: track it if its file is under the root. */
static void track(int fd)
{
	char link[64], p[PATH_MAX];
	ssize_t n;
	struct stat st;

	if (jfd < 0 || fd < 0 || fd >= MAX_FDS)
		return;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, p, sizeof(p) - 1);
	pthread_mutex_lock(&lock);
	free(paths[fd]);
	paths[fd] = NULL;
	if (n > 0) {
		p[n] = '\0';
		if (under_root(p) && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
			paths[fd] = strdup(p);
	}
	pthread_mutex_unlock(&lock);
}

/* lock held: the pre-image of [off, off + len) and the size before. */
static void journal_write(int fd, off_t off, size_t len)
{
	struct stat st;
	const char *p = paths[fd];
	size_t keep = 0;
	char *old = NULL;

	if (fstat(fd, &st) != 0)
		return;
	if (off < st.st_size) {
		keep = (size_t)(st.st_size - off) < len ? (size_t)(st.st_size - off) : len;
		old = malloc(keep ? keep : 1);
		if (!old || real.pread(fd, old, keep, off) != (ssize_t)keep) {
			fprintf(stderr, "powercut: pre-image read failed\n");
			abort();
		}
	}
	journal('W', p, strlen(p), (uint64_t)off, (uint64_t)st.st_size, old, keep);
	free(old);
}

static bool tracked(int fd)
{
	return jfd >= 0 && fd >= 0 && fd < MAX_FDS && paths[fd];
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t r;

	if (!real.pwrite)
		resolve();
	pthread_mutex_lock(&lock);
	if (tracked(fd))
		journal_write(fd, off, n);
	r = real.pwrite(fd, buf, n, off);
	pthread_mutex_unlock(&lock);
	return r;
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	size_t n = 0;
	ssize_t r;

	if (!real.pwritev)
		resolve();
	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	pthread_mutex_lock(&lock);
	if (tracked(fd))
		journal_write(fd, off, n);
	r = real.pwritev(fd, iov, cnt, off);
	pthread_mutex_unlock(&lock);
	return r;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
	__attribute__((alias("pwritev")));

ssize_t write(int fd, const void *buf, size_t n)
{
	ssize_t r;

	if (!real.write)
		resolve();
	if (!tracked(fd)) /* sockets, pipes, stderr: no lock */
		return real.write(fd, buf, n);
	pthread_mutex_lock(&lock);
	if (tracked(fd)) {
		int fl = fcntl(fd, F_GETFL);
		struct stat st;
		off_t pos = (fl >= 0 && (fl & O_APPEND) && fstat(fd, &st) == 0)
				    ? st.st_size
				    : lseek(fd, 0, SEEK_CUR);

		if (pos >= 0)
			journal_write(fd, pos, n);
	}
	r = real.write(fd, buf, n);
	pthread_mutex_unlock(&lock);
	return r;
}

/* lock held */
static void journal_truncate(int fd, const char *p, off_t len)
{
	struct stat st;
	char *old = NULL;
	size_t keep = 0;

	if (fstat(fd, &st) != 0)
		return;
	if (len < st.st_size) {
		keep = (size_t)(st.st_size - len);
		old = malloc(keep);
		if (!old || real.pread(fd, old, keep, len) != (ssize_t)keep) {
			fprintf(stderr, "powercut: truncate pre-image read failed\n");
			abort();
		}
	}
	journal('T', p, strlen(p), (uint64_t)len, (uint64_t)st.st_size, old, keep);
	free(old);
}

int ftruncate(int fd, off_t len)
{
	int r;

	if (!real.ftruncate)
		resolve();
	pthread_mutex_lock(&lock);
	if (tracked(fd))
		journal_truncate(fd, paths[fd], len);
	r = real.ftruncate(fd, len);
	pthread_mutex_unlock(&lock);
	return r;
}
int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

static int sync_common(int fd, int (*fn)(int))
{
	uint64_t began = 0;
	char *p = NULL;
	int r;

	pthread_mutex_lock(&lock);
	if (tracked(fd)) {
		p = strdup(paths[fd]);
		journal('B', p, strlen(p), 0, 0, NULL, 0);
		began = seq;
	}
	pthread_mutex_unlock(&lock);
	r = fn(fd);
	if (p && r == 0) {
		pthread_mutex_lock(&lock);
		journal('E', p, strlen(p), began, 0, NULL, 0);
		pthread_mutex_unlock(&lock);
	}
	free(p);
	return r;
}

int fdatasync(int fd)
{
	if (!real.fdatasync)
		resolve();
	return sync_common(fd, real.fdatasync);
}

int fsync(int fd)
{
	if (!real.fsync)
		resolve();
	return sync_common(fd, real.fsync);
}

/* As glibc decides whether open() has a mode argument. */
static bool needs_mode(int flags)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

/* open(O_TRUNC) of an existing tracked file: its old content is a
 * pending loss like any truncate. */
static void before_trunc(int dirfd, const char *path, int flags)
{
	char p[PATH_MAX];
	int fd;

	if (jfd < 0 || !(flags & O_TRUNC))
		return;
	fd = real.openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, p, sizeof(p) - 1);
	if (n > 0) {
		p[n] = '\0';
		if (under_root(p)) {
			pthread_mutex_lock(&lock);
			journal_truncate(fd, p, 0);
			pthread_mutex_unlock(&lock);
		}
	}
	real.close(fd);
}

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;
	int fd;

	if (!real.open)
		resolve();
	if (needs_mode(flags)) {
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	before_trunc(AT_FDCWD, path, flags);
	fd = real.open(path, flags, mode);
	track(fd);
	return fd;
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;
	int fd;

	if (!real.openat)
		resolve();
	if (needs_mode(flags)) {
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	before_trunc(dirfd, path, flags);
	fd = real.openat(dirfd, path, flags, mode);
	track(fd);
	return fd;
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int close(int fd)
{
	if (!real.close)
		resolve();
	if (jfd >= 0 && fd >= 0 && fd < MAX_FDS) {
		pthread_mutex_lock(&lock);
		free(paths[fd]);
		paths[fd] = NULL;
		pthread_mutex_unlock(&lock);
	}
	return real.close(fd);
}

/* The absolute path of path relative to dirfd (its directory must
 * exist). */
static bool abs_path(int dirfd, const char *path, char *out)
{
	char dir[PATH_MAX], link[64];
	ssize_t n;

	if (path[0] == '/') {
		snprintf(out, PATH_MAX, "%s", path);
		return true;
	}
	if (dirfd == AT_FDCWD) {
		if (!getcwd(dir, sizeof(dir)))
			return false;
	} else {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
		n = readlink(link, dir, sizeof(dir) - 1);
		if (n <= 0)
			return false;
		dir[n] = '\0';
	}
	return snprintf(out, PATH_MAX, "%s/%s", dir, path) < PATH_MAX;
}

static void journal_rename(int od, const char *o, int nd, const char *n)
{
	char a[PATH_MAX], b[PATH_MAX], both[2 * PATH_MAX];
	size_t la, lb;

	if (jfd < 0 || !abs_path(od, o, a) || !abs_path(nd, n, b) || !under_root(a))
		return;
	la = strlen(a);
	lb = strlen(b);
	memcpy(both, a, la + 1);
	memcpy(both + la + 1, b, lb);
	pthread_mutex_lock(&lock);
	journal('R', both, la + 1 + lb, 0, 0, NULL, 0);
	/* descriptors still open on it write under its new name */
	for (int fd = 0; fd < MAX_FDS; fd++) {
		if (paths[fd] && strcmp(paths[fd], a) == 0) {
			char *c = strdup(b);

			if (c) {
				free(paths[fd]);
				paths[fd] = c;
			}
		}
	}
	pthread_mutex_unlock(&lock);
}

int rename(const char *o, const char *n)
{
	int r;

	if (!real.rename)
		resolve();
	r = real.rename(o, n);
	if (r == 0)
		journal_rename(AT_FDCWD, o, AT_FDCWD, n);
	return r;
}

int renameat(int od, const char *o, int nd, const char *n)
{
	int r;

	if (!real.renameat)
		resolve();
	r = real.renameat(od, o, nd, n);
	if (r == 0)
		journal_rename(od, o, nd, n);
	return r;
}

static void journal_unlink(int dirfd, const char *path)
{
	char a[PATH_MAX];

	if (jfd < 0 || !abs_path(dirfd, path, a) || !under_root(a))
		return;
	pthread_mutex_lock(&lock);
	journal('U', a, strlen(a), 0, 0, NULL, 0);
	pthread_mutex_unlock(&lock);
}

int unlink(const char *path)
{
	int r;

	if (!real.unlink)
		resolve();
	r = real.unlink(path);
	if (r == 0)
		journal_unlink(AT_FDCWD, path);
	return r;
}

int unlinkat(int dirfd, const char *path, int flags)
{
	int r;

	if (!real.unlinkat)
		resolve();
	r = real.unlinkat(dirfd, path, flags);
	if (r == 0 && !(flags & AT_REMOVEDIR))
		journal_unlink(dirfd, path);
	return r;
}
