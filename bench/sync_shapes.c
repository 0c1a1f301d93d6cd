/*
 * sync_shapes — what an fdatasync costs on this disk depending on what the
 * write before it did (docs/benchmarks.md, transactions session 8):
 *
 *   sync_shapes grow|rewrite [N] [BYTES]
 *       one thread: N times pwrite BYTES (default 16384) then fdatasync,
 *       to a file that grows ("grow": the size changes, so ext4 commits
 *       its journal in each sync) or over blocks written before
 *       ("rewrite": what the SQLite WAL does after each restart).
 *   sync_shapes pair grow|prefilled|ahead|falloc[-aligned] [N] [AHEAD]
 *       two threads, like the broker in fsync durability: one rewrites a
 *       "WAL" (40 KiB per sync), the other appends 6 KiB per sync to a
 *       "log" that grows, that was zero-filled whole before the run
 *       ("prefilled"), that is kept zero-filled AHEAD bytes (default 1 MiB)
 *       past its end during the run ("ahead": the next AHEAD bytes are
 *       written when half is used, the sync after it pays for them), or
 *       fallocate()d the same way ("falloc": unwritten extents).  A
 *       "-aligned" suffix ("prefilled-aligned", "ahead-aligned") starts
 *       both threads' syncs at the same moment (a barrier before each).
 *   sync_shapes same T [N] [BYTES]
 *       T threads (1-8) sharing one file zero-filled before the run, each
 *       rewriting its own region, BYTES (default 4096) then fdatasync, N
 *       times: what overlapping syncs of one file cost each other (a
 *       second syncer for one log or WAL), and how many syncs a second
 *       the device completes in all.
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
	off_t base;    /* where its writes start ("same": its own region) */
	int n;
	size_t ahead;  /* "ahead": zeros kept written past the end, 0 = none */
	bool falloc;   /* "falloc": fallocate()d (unwritten extents) ahead */
	pthread_barrier_t *together; /* "-aligned": both syncs start at once */
	double *lat;   /* µs per fdatasync, sorted at the end */
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

/* The broker's way to keep a log ahead of its writes: when fewer than
 * r->ahead / 2 bytes are left past the end, write (or fallocate) the next
 * r->ahead bytes; the sync after it carries their cost. */
static int keep_ahead(struct run *r, size_t end, size_t *filled)
{
	static char zero[1 << 16];

	if (*filled >= end + r->ahead / 2)
		return 0;
	if (r->falloc) {
		if (fallocate(r->fd, 0, (off_t)*filled, (off_t)r->ahead) < 0)
			return -1;
		*filled += r->ahead;
		return 0;
	}
	for (size_t n = 0; n < r->ahead; n += sizeof(zero), *filled += sizeof(zero))
		if (pwrite(r->fd, zero, sizeof(zero), (off_t)*filled) != (ssize_t)sizeof(zero))
			return -1;
	return 0;
}

static void *run_syncs(void *arg)
{
	struct run *r = arg;
	char *buf = malloc(r->bytes);
	size_t filled = 0;

	if (!buf)
		return NULL;
	memset(buf, 'x', r->bytes);
	for (int i = 0; i < r->n; i++) {
		double t0;

		if (r->ahead && keep_ahead(r, (size_t)i * r->bytes + r->bytes, &filled) < 0) {
			perror("keep_ahead");
			break;
		}

		if (pwrite(r->fd, buf, r->bytes, r->base + (off_t)i * (off_t)r->bytes) !=
		    (ssize_t)r->bytes) {
			perror("pwrite");
			break;
		}
		if (r->together)
			pthread_barrier_wait(r->together);
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

/* "same": t threads, one file, each syncing its own rewrites. */
static int run_same(int t, int n, size_t bytes)
{
	struct run r[8];
	pthread_t th[8];
	double t0, secs;
	int fd;

	if (t < 1 || t > 8 || n < 10 || bytes == 0)
		return 2;
	fd = open_file("sync_shapes.log", (size_t)t * (size_t)n * bytes);
	for (int i = 0; i < t; i++)
		r[i] = (struct run){ .fd = fd,
				     .n = n,
				     .bytes = bytes,
				     .base = (off_t)i * (off_t)n * (off_t)bytes,
				     .lat = calloc((size_t)n, sizeof(double)) };
	t0 = now_us();
	for (int i = 0; i < t; i++)
		pthread_create(&th[i], NULL, run_syncs, &r[i]);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	secs = (now_us() - t0) / 1e6;
	printf("same, %d thread(s): ", t);
	for (int i = 0; i < t; i++) {
		char what[16];

		snprintf(what, sizeof(what), "%s#%d", i ? " | " : "", i);
		print(what, &r[i]);
		free(r[i].lat);
	}
	printf("; %.0f syncs/s in all\n", (double)t * n / secs);
	unlink("sync_shapes.log");
	close(fd);
	return 0;
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
		bool pre = strncmp(argv[2], "prefilled", 9) == 0;
		bool ahead = strncmp(argv[2], "ahead", 5) == 0;
		static pthread_barrier_t together;
		bool aligned = strstr(argv[2], "-aligned") != NULL;
		bool falloc = strcmp(argv[2], "falloc") == 0;
		struct run w, l;
		pthread_t tw, tl;

		n = argc > 3 ? atoi(argv[3]) : 600;
		if (n < 10)
			return 2;
		w = (struct run){ .n = n, .bytes = 40960, .lat = calloc((size_t)n, sizeof(double)) };
		l = (struct run){ .n = n,
				  .bytes = 6144,
				  .ahead = ahead || falloc ? (argc > 4 ? (size_t)atol(argv[4]) : 1u << 20) : 0,
				  .falloc = falloc,
				  .lat = calloc((size_t)n, sizeof(double)) };
		w.fd = open_file("sync_shapes.wal", (size_t)n * w.bytes);
		l.fd = open_file("sync_shapes.log", pre ? (size_t)n * l.bytes : 0);
		if (aligned) {
			pthread_barrier_init(&together, NULL, 2);
			w.together = l.together = &together;
		}
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
	if (strcmp(mode, "same") == 0 && argc > 2)
		return run_same(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 1000,
				argc > 4 ? (size_t)atol(argv[4]) : 4096);
	fprintf(stderr, "usage: sync_shapes grow|rewrite [N] [BYTES]\n"
			"       sync_shapes pair grow|prefilled|ahead|falloc[-aligned] [N] [AHEAD]\n"
			"       sync_shapes same T [N] [BYTES]\n");
	return 2;
}
