/*
 * txn_floor — the most transactions a second this disk allows at C in
 * flight when each one waits for two durable writes in series, as a
 * transactional message does in fsync durability: the prepare's (the
 * SQLite WAL) and then the commit's (the partition log).  No broker, no
 * SQL, no network: C threads and two group-commit syncers, nothing else
 * (docs/benchmarks.md, transactions session 15).
 *
 *   txn_floor [-c C] [-d SECONDS] [-w WAL_BYTES] [-l LOG_BYTES] [-1 | -u]
 *
 * Each of the C threads loops: hand a "prepare" to the WAL syncer and wait
 * until a sync that started after it has ended, then the same with a
 * "commit" to the log syncer.  A syncer takes everything queued, writes
 * WAL_BYTES (default 2048) or LOG_BYTES (default 300) per item in one
 * pwrite (the WAL's at least 4 KiB), each file written front to back
 * over blocks zero-filled before the run and starting over at its end
 * (SQLite's WAL restarts from the front once checkpointed; the broker
 * keeps its segments preallocated), then fdatasync, and
 * wakes the waiters.  -1: the prepare's sync only (page-cache durability,
 * where the commit waits for no sync).  -u: one syncer for both files,
 * one device flush per round: it writes what both queues hold, pushes the
 * log's pages to the device (sync_file_range, no flush), then
 * fdatasync()s the WAL, whose cache flush covers the log's writes too
 * (the device has a volatile write cache and no FUA: every sync is a
 * whole-cache flush).  A commit still waits for a round that started
 * after it was queued.
 *
 * Prints transactions a second, the syncs a second of each stream, the
 * items per sync and the mean sync time.  Files are created in the
 * current directory (run it on the disk you measure) and removed.  Not a
 * test: the figures move with the host's load.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAL_FILE_BYTES (64u << 20)
#define LOG_FILE_BYTES (64u << 20)

/* One group-commit stream.  All fields under lock, except what the
 * syncer thread alone touches (fd, buf, pos, statistics). */
struct stream {
	const char *name;
	pthread_mutex_t lock;
	pthread_cond_t wake, done;
	uint64_t queued;      /* items waiting for the next sync */
	uint64_t started;     /* syncs started */
	uint64_t finished;    /* syncs finished */
	bool stop;
	int fd;
	size_t per_item, min_write, file_bytes;
	size_t pos;
	char *buf;
	size_t cap;
	uint64_t syncs, items;
	double sync_us;
};

static atomic_bool stop_clients;
static bool unified;
static atomic_uint_fast64_t txns;

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Waits until a sync that started after this call has ended. */
static void stream_wait(struct stream *s)
{
	uint64_t need;

	pthread_mutex_lock(&s->lock);
	s->queued++;
	need = s->started + 1;
	pthread_cond_signal(&s->wake);
	while (s->finished < need && !s->stop)
		pthread_cond_wait(&s->done, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static int write_batch(struct stream *s, uint64_t n)
{
	size_t len = (size_t)n * s->per_item;

	if (len < s->min_write)
		len = s->min_write;
	if (len > s->cap)
		len = s->cap;
	if (s->pos + len > s->file_bytes)
		s->pos = 0;
	if (pwrite(s->fd, s->buf, len, (off_t)s->pos) != (ssize_t)len)
		return -1;
	s->pos += len;
	return 0;
}

static void *syncer_main(void *arg)
{
	struct stream *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		uint64_t n;
		double t0;

		while (!s->queued && !s->stop)
			pthread_cond_wait(&s->wake, &s->lock);
		if (s->stop)
			break;
		n = s->queued;
		s->queued = 0;
		s->started++;
		pthread_mutex_unlock(&s->lock);
		if (write_batch(s, n) < 0) {
			perror("pwrite");
			exit(1);
		}
		t0 = now_us();
		if (fdatasync(s->fd) < 0) {
			perror("fdatasync");
			exit(1);
		}
		s->sync_us += now_us() - t0;
		s->syncs++;
		s->items += n;
		pthread_mutex_lock(&s->lock);
		s->finished = s->started;
		pthread_cond_broadcast(&s->done);
	}
	pthread_cond_broadcast(&s->done);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static struct stream wal = { .name = "WAL", .min_write = 4096,
			     .file_bytes = WAL_FILE_BYTES };
static struct stream logs = { .name = "log", .min_write = 1, .file_bytes = LOG_FILE_BYTES };

/* -u: one thread syncs both; both streams' counters move together under
 * wal.lock (logs' lock is not used). */
static void *unified_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&wal.lock);
	for (;;) {
		uint64_t nw, nl;
		double t0;

		while (!wal.queued && !logs.queued && !wal.stop)
			pthread_cond_wait(&wal.wake, &wal.lock);
		if (wal.stop)
			break;
		nw = wal.queued;
		nl = logs.queued;
		wal.queued = logs.queued = 0;
		wal.started++;
		pthread_mutex_unlock(&wal.lock);
		if ((nl && write_batch(&logs, nl) < 0) || (nw && write_batch(&wal, nw) < 0)) {
			perror("pwrite");
			exit(1);
		}
		/* both writebacks under way before waiting for the log's, which
		 * must be done before the WAL's flush is issued to be covered */
		t0 = now_us();
		if (nl && (sync_file_range(logs.fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ||
			   sync_file_range(wal.fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ||
			   sync_file_range(logs.fd, 0, 0,
					   SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
						   SYNC_FILE_RANGE_WAIT_AFTER) < 0)) {
			perror("sync_file_range");
			exit(1);
		}
		if (fdatasync(wal.fd) < 0) {
			perror("fdatasync");
			exit(1);
		}
		wal.sync_us += now_us() - t0;
		wal.syncs++;
		wal.items += nw + nl;
		pthread_mutex_lock(&wal.lock);
		wal.finished = wal.started;
		pthread_cond_broadcast(&wal.done);
	}
	pthread_cond_broadcast(&wal.done);
	pthread_mutex_unlock(&wal.lock);
	return NULL;
}

static bool one_sync;

/* -u: queue on q, wait for a round of the one syncer. */
static void unified_wait(struct stream *q)
{
	uint64_t need;

	pthread_mutex_lock(&wal.lock);
	q->queued++;
	need = wal.started + 1;
	pthread_cond_signal(&wal.wake);
	while (wal.finished < need && !wal.stop)
		pthread_cond_wait(&wal.done, &wal.lock);
	pthread_mutex_unlock(&wal.lock);
}

static void *client_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_clients)) {
		if (unified) {
			unified_wait(&wal);
			unified_wait(&logs);
		} else {
			stream_wait(&wal);
			if (!one_sync)
				stream_wait(&logs);
		}
		atomic_fetch_add(&txns, 1);
	}
	return NULL;
}

/* Zero-fills the file so that later writes rewrite allocated blocks. */
static int open_filled(struct stream *s, const char *path)
{
	static char zero[1 << 16];

	s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (s->fd < 0)
		return -1;
	for (size_t off = 0; off < s->file_bytes; off += sizeof(zero))
		if (pwrite(s->fd, zero, sizeof(zero), (off_t)off) != (ssize_t)sizeof(zero))
			return -1;
	return fsync(s->fd);
}

static int stream_init(struct stream *s, const char *path, size_t per_item, int c)
{
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_cond_init(&s->done, NULL);
	s->per_item = per_item;
	s->cap = (size_t)c * per_item + s->min_write;
	s->buf = malloc(s->cap);
	if (!s->buf)
		return -1;
	memset(s->buf, 'x', s->cap);
	return open_filled(s, path);
}

static void stream_stop(struct stream *s)
{
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->wake);
	pthread_cond_broadcast(&s->done);
	pthread_mutex_unlock(&s->lock);
}

static void stream_print(const struct stream *s, double secs)
{
	printf("  %s: %.0f syncs/s, %.1f per sync, sync %.0f us\n", s->name, (double)s->syncs / secs,
	       s->syncs ? (double)s->items / (double)s->syncs : 0.0,
	       s->syncs ? s->sync_us / (double)s->syncs : 0.0);
}

int main(int argc, char **argv)
{
	int c = 32, secs = 5, opt;
	size_t walb = 2048, logb = 300;
	pthread_t th_wal, th_log, *th;
	double t0, took;

	while ((opt = getopt(argc, argv, "c:d:w:l:1uh")) != -1) {
		switch (opt) {
		case 'c': c = atoi(optarg); break;
		case 'd': secs = atoi(optarg); break;
		case 'w': walb = (size_t)atol(optarg); break;
		case 'l': logb = (size_t)atol(optarg); break;
		case '1': one_sync = true; break;
		case 'u': unified = true; break;
		default:
			fprintf(stderr, "usage: txn_floor [-c C] [-d SECONDS] [-w WAL_BYTES] "
					"[-l LOG_BYTES] [-1 | -u]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (c < 1 || c > 4096 || secs < 1 || walb < 1 || logb < 1) {
		fprintf(stderr, "txn_floor: C 1-4096, SECONDS >= 1, sizes >= 1\n");
		return 2;
	}
	if (stream_init(&wal, "txn_floor.wal", walb, c) < 0 ||
	    stream_init(&logs, "txn_floor.log", logb, c) < 0) {
		fprintf(stderr, "txn_floor: preparing the files: %s\n", strerror(errno));
		return 1;
	}
	th = calloc((size_t)c, sizeof(*th));
	if (!th)
		return 1;
	if (unified) {
		one_sync = false;
		pthread_create(&th_wal, NULL, unified_main, NULL);
	} else {
		pthread_create(&th_wal, NULL, syncer_main, &wal);
		pthread_create(&th_log, NULL, syncer_main, &logs);
	}
	t0 = now_us();
	for (int i = 0; i < c; i++)
		pthread_create(&th[i], NULL, client_main, NULL);
	sleep((unsigned)secs);
	atomic_store(&stop_clients, true);
	took = (now_us() - t0) / 1e6;
	printf("txn_floor: C=%d, %s: %.0f txn/s\n", c,
	       unified ? "prepare then commit, one flush per round"
	       : one_sync ? "prepare sync only" : "prepare then commit sync",
	       (double)atomic_load(&txns) / took);
	stream_stop(&wal);
	stream_stop(&logs);
	for (int i = 0; i < c; i++)
		pthread_join(th[i], NULL);
	pthread_join(th_wal, NULL);
	if (!unified)
		pthread_join(th_log, NULL);
	stream_print(&wal, took);
	if (!one_sync && !unified)
		stream_print(&logs, took);
	unlink("txn_floor.wal");
	unlink("txn_floor.log");
	free(th);
	return 0;
}
