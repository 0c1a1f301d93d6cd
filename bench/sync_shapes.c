/*
 * sync_shapes — what an fdatasync costs on this disk depending on what the
 * write before it did (docs/benchmarks.md, transactions session 8):
 *
 *   sync_shapes grow|rewrite [N] [BYTES]
 *       one thread: N times pwrite BYTES (default 16384) then fdatasync,
 *       to a file that grows ("grow": the size changes, so ext4 commits
 *       its journal in each sync) or over blocks written before
 *       ("rewrite": what the SQLite WAL does after each restart).
 *   sync_shapes pair grow|prefilled [N]
 *       two threads, like the broker in fsync durability: one rewrites a
 *       "WAL" (40 KiB per sync), the other appends 6 KiB per sync to a
 *       "log" that grows, or that was zero-filled ahead ("prefilled").
 *
 * Prints p50 / p90 / p99 of the fdatasync calls in µs.  Files are created
 * in the current directory (run it on the disk you measure) and removed.
 * Not a test: the figures move with the host's load; compare shapes within
 * one run, interleaved.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct run {
	int fd;
	size_t bytes;
	int n;
	double *lat; /* µs per fdatasync, sorted at the end */
};

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Writes zeros over [0, bytes) and syncs: later writes there rewrite. */
static int prefill(int fd, size_t bytes)
{
	static char zero[1 << 16];

	for (size_t off = 0; off < bytes; off += sizeof(zero))
		if (pwrite(fd, zero, sizeof(zero), (off_t)off) != (ssize_t)sizeof(zero))
			return -1;
	return fsync(fd);
}

static void *run_syncs(void *arg)
{
	struct run *r = arg;
	char *buf = malloc(r->bytes);

	if (!buf)
		return NULL;
	memset(buf, 'x', r->bytes);
	for (int i = 0; i < r->n; i++) {
		double t0;

		if (pwrite(r->fd, buf, r->bytes, (off_t)i * (off_t)r->bytes) != (ssize_t)r->bytes) {
			perror("pwrite");
			break;
		}
		t0 = now_us();
		fdatasync(r->fd);
		r->lat[i] = now_us() - t0;
	}
	qsort(r->lat, (size_t)r->n, sizeof(double), cmp);
	free(buf);
	return NULL;
}

static int open_file(const char *name, size_t prefill_bytes)
{
	int fd;

	unlink(name);
	fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || (prefill_bytes && prefill(fd, prefill_bytes) < 0)) {
		perror(name);
		exit(1);
	}
	return fd;
}

static void print(const char *what, const struct run *r)
{
	printf("%s: p50 %.0f p90 %.0f p99 %.0f us", what, r->lat[r->n / 2], r->lat[r->n * 9 / 10],
	       r->lat[r->n * 99 / 100]);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	int n;

	if (strcmp(mode, "grow") == 0 || strcmp(mode, "rewrite") == 0) {
		struct run r = { .n = argc > 2 ? atoi(argv[2]) : 1000,
				 .bytes = argc > 3 ? (size_t)atol(argv[3]) : 16384 };

		if (r.n < 10 || r.bytes == 0)
			return 2;
		r.lat = calloc((size_t)r.n, sizeof(double));
		r.fd = open_file("sync_shapes.log", mode[0] == 'r' ? (size_t)r.n * r.bytes : 0);
		run_syncs(&r);
		print(mode, &r);
		printf("\n");
		unlink("sync_shapes.log");
		return 0;
	}
	if (strcmp(mode, "pair") == 0 && argc > 2) {
		bool pre = strcmp(argv[2], "prefilled") == 0;
		struct run w, l;
		pthread_t tw, tl;

		n = argc > 3 ? atoi(argv[3]) : 600;
		if (n < 10)
			return 2;
		w = (struct run){ .n = n, .bytes = 40960, .lat = calloc((size_t)n, sizeof(double)) };
		l = (struct run){ .n = n, .bytes = 6144, .lat = calloc((size_t)n, sizeof(double)) };
		w.fd = open_file("sync_shapes.wal", (size_t)n * w.bytes);
		l.fd = open_file("sync_shapes.log", pre ? (size_t)n * l.bytes : 0);
		pthread_create(&tw, NULL, run_syncs, &w);
		pthread_create(&tl, NULL, run_syncs, &l);
		pthread_join(tw, NULL);
		pthread_join(tl, NULL);
		printf("pair %s: ", argv[2]);
		print("wal", &w);
		printf(" | ");
		print("log", &l);
		printf("\n");
		unlink("sync_shapes.wal");
		unlink("sync_shapes.log");
		return 0;
	}
	fprintf(stderr, "usage: sync_shapes grow|rewrite [N] [BYTES]\n"
			"       sync_shapes pair grow|prefilled [N]\n");
	return 2;
}
