/*
 * synctime.c — an LD_PRELOAD library that times every fdatasync() of a
 * process by file kind: the SQLite WAL (a path ending in "-wal") and the
 * segment logs (".log").  At exit it appends one line per kind to
 * $SYNCTIME_OUT (default ./synctime.out): count, p50 / p90 / p99 and mean
 * in µs; and how often a sync of one kind started while one of the other
 * kind was in flight, with the p50 of how long after its start (the two
 * streams' overlap: the block layer can merge flushes that coincide,
 * docs/benchmarks.md, transactions session 13).  What a sync costs under
 * the broker's own load, where
 * bench/sync_shapes only shows shapes in isolation (docs/benchmarks.md,
 * transactions session 9):
 *
 *   SYNCTIME_OUT=/tmp/s.out LD_PRELOAD=build-rel/bench/libsynctime.so \
 *       build-rel/broker/sluiced --set log.durability=fsync ...
 *
 * Not a test.  Keeps at most 1,000,000 samples per kind (the rest are
 * counted out of the figures).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 1000000

enum { WAL, LOG, KINDS };

static const char *const names[KINDS] = { "wal", "log" };
static float *lat[KINDS]; /* µs, malloc'ed at the first sample */
static int n[KINDS];
static float *gap[KINDS]; /* µs after the other kind's sync in flight began */
static int ngap[KINDS];
static int in_flight[KINDS];
static double started[KINDS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* WAL, LOG, or -1 for any other file. */
static int kind_of(int fd)
{
	char link[64], path[512];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, path, sizeof(path) - 1);
	if (len <= 4)
		return -1;
	path[len] = '\0';
	if (strcmp(path + len - 4, "-wal") == 0)
		return WAL;
	return strcmp(path + len - 4, ".log") == 0 ? LOG : -1;
}

int fdatasync(int fd)
{
	static int (*real)(int);
	int k = kind_of(fd), r;
	double t;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	t = now_us();
	if (k >= 0) {
		pthread_mutex_lock(&lock);
		if (!gap[k])
			gap[k] = malloc(MAX_SAMPLES * sizeof(*gap[k]));
		if (in_flight[!k] && gap[k] && ngap[k] < MAX_SAMPLES)
			gap[k][ngap[k]++] = (float)(t - started[!k]);
		in_flight[k]++;
		started[k] = t;
		pthread_mutex_unlock(&lock);
	}
	r = real(fd);
	t = now_us() - t;
	if (k < 0)
		return r;
	pthread_mutex_lock(&lock);
	in_flight[k]--;
	if (!lat[k])
		lat[k] = malloc(MAX_SAMPLES * sizeof(*lat[k]));
	if (lat[k] && n[k] < MAX_SAMPLES)
		lat[k][n[k]++] = (float)t;
	pthread_mutex_unlock(&lock);
	return r;
}

static int cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

__attribute__((destructor)) static void report(void)
{
	const char *out = getenv("SYNCTIME_OUT");
	FILE *f = fopen(out ? out : "synctime.out", "a");

	if (!f)
		return;
	for (int k = 0; k < KINDS; k++) {
		double sum = 0;

		if (!n[k])
			continue;
		qsort(lat[k], (size_t)n[k], sizeof(*lat[k]), cmp);
		for (int i = 0; i < n[k]; i++)
			sum += lat[k][i];
		fprintf(f, "%s: %d syncs, p50 %.0f p90 %.0f p99 %.0f mean %.0f us\n", names[k], n[k],
			(double)lat[k][n[k] / 2], (double)lat[k][n[k] * 9 / 10],
			(double)lat[k][n[k] * 99 / 100], sum / n[k]);
		if (ngap[k]) {
			qsort(gap[k], (size_t)ngap[k], sizeof(*gap[k]), cmp);
			fprintf(f, "%s: %.0f%% started while a %s sync was in flight, p50 %.0f us "
				   "after it began\n",
				names[k], 100.0 * ngap[k] / n[k], names[!k], (double)gap[k][ngap[k] / 2]);
		}
	}
	fclose(f);
}
