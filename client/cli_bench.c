/*
 * cli_bench.c — `sluice bench produce|consume|e2e`.
 *
 * produce: one producer, --size byte values, as fast as the queue allows;
 *          latency = produce() to delivery report (served by poll).
 * consume: reads --count messages (default: all) of the topic from the
 *          beginning; latency not measured.
 * e2e:     a producer thread sends --rate msgs/s, each value starting with
 *          its send time (CLOCK_MONOTONIC ns, same host); the consumer (this
 *          thread) measures now - that time.
 * txn:     --concurrency transactions in flight, each prepare → (empty
 *          local transaction answering COMMIT) → commit, back to back;
 *          latency = prepare sent to commit answered.  By default all of
 *          them are pipelined on the producer's two asynchronous
 *          connections (sluice_txn_prepare_async on one,
 *          sluice_txn_end_async on the other, so a commit's answer does
 *          not wait in order behind prepares' answers; callbacks on its
 *          I/O thread), and the two round trips are also reported
 *          apart (prepare sent → answered, end sent → answered); --threads
 *          runs one thread per transaction
 *          calling sluice_txn_send().  Run the broker with
 *          log.durability=fsync for the durable figure (docs/benchmarks.md).
 * A progress line per second goes to stderr; the summary to stdout.
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lathist.h"

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct bench_opts {
	const char *mode, *topic;
	long size;
	long long count;
	double duration;
	const char *acks;
	int linger;
	int partitions;
	long rate;
	int batch_kb;
	bool nocopy;
	int concurrency;
	bool txn_threads;
};

static void usage_bench(FILE *f)
{
	fprintf(f,
		"Usage: sluice bench produce|consume|e2e|txn [options]\n"
		"  -t, --topic NAME       topic (default sluice-bench; created if missing)\n"
		"  -s, --size BYTES       value size (default 100; e2e: at least 8; txn: 200)\n"
		"  -n, --count N          messages (produce default 1000000; consume: all)\n"
		"  -d, --duration SEC     run for SEC seconds instead of --count\n"
		"  -a, --acks 0|1|all     (default 1)\n"
		"  -l, --linger MS        linger.ms (default 5; e2e default 0)\n"
		"  -P, --partitions N     partitions when creating the topic (default 1)\n"
		"  -r, --rate N           e2e: messages per second (default 10000)\n"
		"  -B, --batch-kb N       batch.size in KiB (default 1000000 bytes)\n"
		"  -Z, --zero-copy        produce with SLUICE_MSG_F_NOCOPY (values >= 16 KiB\n"
		"                         are sent from the caller's buffer, not copied)\n"
		"  -c, --concurrency N    txn: transactions in flight at once (default 32)\n"
		"  -T, --threads          txn: one thread per transaction calling\n"
		"                         sluice_txn_send() (default: all pipelined\n"
		"                         with the async calls, prepares on one\n"
		"                         connection and ends on another)\n"
		"  -h, --help\n"
		"Prints a progress line each second on stderr, then msgs/s, MB/s and\n"
		"latency p50/p99/p99.9 (produce: produce() to delivery report; e2e:\n"
		"timestamp in the message to the consumer; txn: prepare + local\n"
		"transaction + commit, as sluice_txn_send() returns).\n");
}

struct bprod {
	struct lathist h;
	long long delivered, failed;
	sluice_err_t first_err;
};

static void bench_dr(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx)
{
	struct bprod *b = ctx;

	if (dr->err) {
		if (!b->failed)
			b->first_err = dr->err;
		b->failed++;
		return;
	}
	b->delivered++;
	if ((b->delivered & 15) == 0) /* sample: 1 in 16 */
		lathist_add(&b->h, (now_ns() - (int64_t)(intptr_t)dr->opaque) / 1000);
}

static sluice_producer_t *bench_producer(const struct cli_global *g, const struct bench_opts *o,
					 struct bprod *b)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_producer_t *p;
	char errstr[512], v[32];

	if (!conf)
		return NULL;
	snprintf(v, sizeof(v), "%d", o->linger);
	if (!cli_conf_set(conf, "acks", o->acks) || !cli_conf_set(conf, "linger.ms", v))
		goto fail;
	if (o->batch_kb > 0) {
		snprintf(v, sizeof(v), "%d", o->batch_kb * 1024);
		if (!cli_conf_set(conf, "message.max.bytes", v) || !cli_conf_set(conf, "batch.size", v))
			goto fail;
	}
	sluice_conf_set_delivery_cb(conf, bench_dr, b);
	p = sluice_producer_new(conf, errstr, sizeof(errstr));
	if (!p) {
		fprintf(stderr, "sluice: %s\n", errstr);
		goto fail;
	}
	return p;
fail:
	sluice_conf_destroy(conf);
	return NULL;
}

static void summary(const char *what, long long n, long size, double secs, const struct lathist *h)
{
	printf("%s: %lld msgs of %ld bytes in %.2f s: %.0f msgs/s, %.1f MB/s", what, n, size, secs,
	       (double)n / secs, (double)n * (double)size / secs / 1e6);
	if (h && h->count)
		printf("; latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%" PRIu64 " samples)",
		       lathist_pct(h, 50), lathist_pct(h, 99), lathist_pct(h, 99.9), h->count);
	printf("\n");
}

static int bench_produce(const struct cli_global *g, const struct bench_opts *o)
{
	struct bprod *b = calloc(1, sizeof(*b));
	sluice_producer_t *p;
	char *val = calloc(1, (size_t)o->size + 1);
	int64_t t0, last, end_ns;
	long long sent = 0, last_n = 0;
	int rc = EXIT_OK;

	if (!b || !val)
		return EXIT_ERR;
	memset(val, 'x', (size_t)o->size);
	p = bench_producer(g, o, b);
	if (!p) {
		free(b);
		free(val);
		return EXIT_ERR;
	}
	t0 = last = now_ns();
	end_ns = o->duration > 0 ? t0 + (int64_t)(o->duration * 1e9) : INT64_MAX;
	while (o->duration > 0 ? now_ns() < end_ns : sent < o->count) {
		int64_t t = now_ns();
		/* val never changes: it may be kept by reference (-Z) */
		sluice_err_t err = sluice_produce_ex(p, o->topic, SLUICE_PARTITION_ANY, NULL, 0, val,
						     (size_t)o->size, NULL, 0, (void *)(intptr_t)t,
						     o->nocopy ? SLUICE_MSG_F_NOCOPY : 0);

		if (err == SLUICE_ERR_QUEUE_FULL) {
			sluice_producer_poll(p, 1);
			continue;
		}
		if (err) {
			fprintf(stderr, "sluice: produce: %s\n", sluice_err2str(err));
			rc = EXIT_ERR;
			break;
		}
		sent++;
		if ((sent & 1023) == 0) {
			sluice_producer_poll(p, 0);
			if (t - last >= 1000000000) {
				fprintf(stderr, "bench produce: %lld sent, %lld delivered, %.0f msgs/s\n",
					sent, b->delivered,
					(double)(sent - last_n) * 1e9 / (double)(t - last));
				last = t;
				last_n = sent;
			}
		}
	}
	sluice_producer_flush(p, 60000);
	{
		double secs = (double)(now_ns() - t0) / 1e9;

		summary("produce", b->delivered, o->size, secs, &b->h);
	}
	if (b->failed) {
		fprintf(stderr, "sluice: %lld not delivered: %s\n", b->failed,
			sluice_err2str(b->first_err));
		rc = EXIT_UNDELIVERED;
	}
	sluice_producer_destroy(p);
	free(b);
	free(val);
	return rc;
}

static int bench_consume(const struct cli_global *g, const struct bench_opts *o)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_consumer_t *c;
	char errstr[512];
	int nparts = cli_partition_count(g, o->topic);
	long long total = 0, got = 0, last_n = 0;
	uint64_t bytes = 0;
	int64_t t0 = 0, last = 0, end_ns = INT64_MAX;
	int rc = EXIT_OK;

	if (!conf || nparts < 0) {
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	if (!cli_conf_set(conf, "fetch.max.wait.ms", "100")) {
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	for (int32_t p = 0; p < nparts; p++) {
		int64_t lo, hi;

		if (sluice_consumer_query_watermarks(c, o->topic, p, &lo, &hi, 30000)) {
			fprintf(stderr, "sluice: watermarks of partition %d failed\n", p);
			sluice_consumer_destroy(c);
			return EXIT_ERR;
		}
		total += hi - lo;
		sluice_consumer_assign(c, o->topic, p, SLUICE_OFFSET_BEGINNING);
	}
	if (o->count > 0 && o->count < total)
		total = o->count;
	if (total == 0) {
		fprintf(stderr, "sluice: topic %s is empty: run bench produce first\n", o->topic);
		sluice_consumer_destroy(c);
		return EXIT_ERR;
	}
	while (got < total) {
		sluice_message_t *m = sluice_consumer_poll(c, 1000);
		int64_t t;

		if (!m) {
			if (t0 && now_ns() > end_ns)
				break;
			continue;
		}
		if (!t0) {
			t0 = last = now_ns();
			if (o->duration > 0)
				end_ns = t0 + (int64_t)(o->duration * 1e9);
		}
		if (sluice_message_err(m)) {
			fprintf(stderr, "sluice: %s\n", sluice_message_errstr(m));
			sluice_message_destroy(m);
			rc = EXIT_ERR;
			break;
		}
		bytes += sluice_message_len(m);
		got++;
		sluice_message_destroy(m);
		if ((got & 4095) == 0) {
			t = now_ns();
			if (t > end_ns)
				break;
			if (t - last >= 1000000000) {
				fprintf(stderr, "bench consume: %lld of %lld, %.0f msgs/s\n", got, total,
					(double)(got - last_n) * 1e9 / (double)(t - last));
				last = t;
				last_n = got;
			}
		}
	}
	if (got) {
		double secs = (double)(now_ns() - t0) / 1e9;

		printf("consume: %lld msgs, %.1f MB in %.2f s: %.0f msgs/s, %.1f MB/s\n", got,
		       (double)bytes / 1e6, secs, (double)got / secs, (double)bytes / secs / 1e6);
	}
	sluice_consumer_destroy(c);
	return rc;
}

struct e2e_prod {
	const struct cli_global *g;
	const struct bench_opts *o;
	volatile int done;
	long long sent;
	int rc;
};

static void *e2e_producer(void *arg)
{
	struct e2e_prod *ep = arg;
	struct bprod b = { 0 };
	sluice_producer_t *p = bench_producer(ep->g, ep->o, &b);
	char *val = calloc(1, (size_t)ep->o->size);
	int64_t t0 = now_ns(), interval = (int64_t)(1e9 / (double)ep->o->rate);
	int64_t end = ep->o->duration > 0 ? t0 + (int64_t)(ep->o->duration * 1e9) : INT64_MAX;

	if (!p || !val) {
		ep->rc = EXIT_ERR;
		ep->done = 1;
		free(val);
		return NULL;
	}
	while (ep->o->duration > 0 ? now_ns() < end : ep->sent < ep->o->count) {
		int64_t due = t0 + ep->sent * interval, t = now_ns();

		if (t < due) {
			/* Sleep, no busy-wait: the 2 cores are shared with the
			 * broker and the consumer, and a spinning producer thread
			 * delays them (the send time is taken after the sleep,
			 * so oversleeping does not skew the latency). */
			struct timespec ts = { (time_t)(due / 1000000000), (long)(due % 1000000000) };

			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
		t = now_ns();
		memcpy(val, &t, sizeof(t));
		if (sluice_produce(p, ep->o->topic, SLUICE_PARTITION_ANY, NULL, 0, val,
				   (size_t)ep->o->size, NULL, 0, (void *)(intptr_t)t) == 0)
			ep->sent++;
		sluice_producer_poll(p, 0);
	}
	sluice_producer_flush(p, 30000);
	sluice_producer_destroy(p);
	free(val);
	ep->done = 1;
	return NULL;
}

static int bench_e2e(const struct cli_global *g, const struct bench_opts *o)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_consumer_t *c;
	struct lathist *h = calloc(1, sizeof(*h));
	struct e2e_prod ep = { g, o, 0, 0, 0 };
	char errstr[512];
	int nparts = cli_partition_count(g, o->topic);
	long long got = 0, last_n = 0;
	int64_t t0, last, idle_since = 0;
	pthread_t thr;

	if (!conf || nparts < 0 || !h || !cli_conf_set(conf, "fetch.max.wait.ms", "100")) {
		sluice_conf_destroy(conf);
		free(h);
		return EXIT_ERR;
	}
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		free(h);
		return EXIT_ERR;
	}
	for (int32_t p = 0; p < nparts; p++) {
		int64_t lo, hi;

		/* start at the current end (resolved now, before producing) */
		if (sluice_consumer_query_watermarks(c, o->topic, p, &lo, &hi, 30000)) {
			fprintf(stderr, "sluice: watermarks failed\n");
			sluice_consumer_destroy(c);
			free(h);
			return EXIT_ERR;
		}
		sluice_consumer_assign(c, o->topic, p, hi);
	}
	t0 = last = now_ns();
	pthread_create(&thr, NULL, e2e_producer, &ep);
	for (;;) {
		sluice_message_t *m = sluice_consumer_poll(c, 100);
		int64_t t = now_ns();

		if (m && !sluice_message_err(m) && sluice_message_len(m) >= 8) {
			int64_t sent_ns;

			memcpy(&sent_ns, sluice_message_value(m), sizeof(sent_ns));
			lathist_add(h, (t - sent_ns) / 1000);
			got++;
			idle_since = 0;
		} else if (m) {
			fprintf(stderr, "sluice: %s\n", sluice_message_errstr(m));
		}
		sluice_message_destroy(m);
		if (!m && ep.done) {
			if (got >= ep.sent)
				break;
			if (!idle_since)
				idle_since = t;
			else if (t - idle_since > 5000000000LL)
				break;
		}
		if (t - last >= 1000000000) {
			fprintf(stderr, "bench e2e: %lld sent, %lld received, %.0f msgs/s, p99 %.0f us\n",
				ep.sent, got, (double)(got - last_n) * 1e9 / (double)(t - last),
				lathist_pct(h, 99));
			last = t;
			last_n = got;
		}
	}
	pthread_join(thr, NULL);
	summary("e2e", got, o->size, (double)(now_ns() - t0) / 1e9, h);
	sluice_consumer_destroy(c);
	free(h);
	if (ep.rc)
		return ep.rc;
	return got < ep.sent ? EXIT_UNDELIVERED : EXIT_OK;
}

/* ---- txn ---- */

struct txn_bench {
	sluice_txn_producer_t *p;
	const struct bench_opts *o;
	const void *value;
	atomic_llong next, done, failed;
	atomic_int active; /* pipelined mode: slots still running */
	int64_t end_ns; /* duration mode; 0 = count mode */
	pthread_mutex_t lock; /* hist merge, first error */
	struct lathist h;
	/* pipelined mode (I/O thread): the two round trips of a transaction */
	struct lathist h_prepare, h_end;
	char first_err[512];
};

static sluice_txn_decision_t txn_bench_local(sluice_txn_producer_t *p, int64_t txn_id, void *arg)
{
	(void)p;
	(void)txn_id;
	(void)arg;
	return SLUICE_TXN_COMMIT;
}

/* Counts a failed transaction, keeping the first error's text (any thread). */
static void txn_bench_failed(struct txn_bench *b, const char *errstr)
{
	pthread_mutex_lock(&b->lock);
	if (!b->first_err[0])
		snprintf(b->first_err, sizeof(b->first_err), "%s", errstr);
	pthread_mutex_unlock(&b->lock);
	atomic_fetch_add(&b->failed, 1);
}

static void *txn_bench_worker(void *arg)
{
	struct txn_bench *b = arg;
	struct lathist *h = calloc(1, sizeof(*h));
	char errstr[512];

	while (h) {
		sluice_txn_result_t res;
		sluice_err_t err;
		int64_t t0 = now_ns();

		if (b->end_ns ? t0 >= b->end_ns : atomic_fetch_add(&b->next, 1) >= b->o->count)
			break;
		err = sluice_txn_send(b->p, b->o->topic, SLUICE_PARTITION_ANY, NULL, 0, b->value,
				      (size_t)b->o->size, NULL, 0, txn_bench_local, NULL, &res, errstr,
				      sizeof(errstr));
		if (err) {
			txn_bench_failed(b, errstr);
			continue;
		}
		lathist_add(h, (now_ns() - t0) / 1000);
		atomic_fetch_add(&b->done, 1);
	}
	if (h) {
		pthread_mutex_lock(&b->lock);
		lathist_merge(&b->h, h);
		pthread_mutex_unlock(&b->lock);
		free(h);
	}
	return NULL;
}

static sluice_txn_producer_t *txn_bench_producer(const struct cli_global *g)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_txn_producer_t *p;
	char errstr[512];

	if (!conf)
		return NULL;
	if (!cli_conf_set(conf, "transaction.group", "sluice-bench")) {
		sluice_conf_destroy(conf);
		return NULL;
	}
	if (!(p = sluice_txn_producer_new(conf, errstr, sizeof(errstr)))) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
	}
	return p;
}

/* --- pipelined: every transaction on the producer's I/O thread --- */

struct txn_slot {
	struct txn_bench *b;
	int64_t t0, t_end; /* prepare sent; end sent */
};

static void txn_slot_start(struct txn_slot *s);

/* Counts a finished transaction; starts the slot's next one. */
static void txn_slot_done(struct txn_slot *s, sluice_err_t err, const char *errstr)
{
	struct txn_bench *b = s->b;

	if (err) {
		txn_bench_failed(b, errstr);
	} else {
		int64_t t = now_ns();

		lathist_add(&b->h, (t - s->t0) / 1000);
		lathist_add(&b->h_end, (t - s->t_end) / 1000);
		atomic_fetch_add(&b->done, 1);
	}
	txn_slot_start(s);
}

static void txn_bench_ended(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
			    int64_t offset, const char *errstr, void *opaque)
{
	(void)p;
	(void)txn_id;
	(void)offset;
	txn_slot_done(opaque, err, errstr);
}

static void txn_bench_prepared(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
			       int32_t partition, const char *errstr, void *opaque)
{
	struct txn_slot *s = opaque;

	(void)partition;
	if (!err) {
		s->t_end = now_ns();
		lathist_add(&s->b->h_prepare, (s->t_end - s->t0) / 1000);
		err = sluice_txn_end_async(p, txn_id, SLUICE_TXN_COMMIT, txn_bench_ended, s);
	}
	if (err)
		txn_slot_done(s, err, errstr[0] ? errstr : sluice_err2str(err));
}

/* Next transaction of the slot, or the slot retires (b->active). */
static void txn_slot_start(struct txn_slot *s)
{
	struct txn_bench *b = s->b;
	sluice_err_t err;

	s->t0 = now_ns();
	if (b->end_ns ? s->t0 >= b->end_ns : atomic_fetch_add(&b->next, 1) >= b->o->count) {
		atomic_fetch_sub(&b->active, 1);
		return;
	}
	err = sluice_txn_prepare_async(b->p, b->o->topic, SLUICE_PARTITION_ANY, NULL, 0, b->value,
				       (size_t)b->o->size, NULL, 0, txn_bench_prepared, s);
	if (err) { /* not queued: no callback comes, the slot retires */
		txn_bench_failed(b, sluice_err2str(err));
		atomic_fetch_sub(&b->active, 1);
	}
}

static int bench_txn(const struct cli_global *g, const struct bench_opts *o)
{
	struct txn_bench *b = calloc(1, sizeof(*b));
	pthread_t *thr = calloc((size_t)o->concurrency, sizeof(*thr));
	struct txn_slot *slots = calloc((size_t)o->concurrency, sizeof(*slots));
	char *value = malloc((size_t)o->size + 1);
	long long last_n = 0;
	int64_t t0, last;
	int started = 0, rc = EXIT_OK;

	if (!b || !thr || !slots || !value || !(b->p = txn_bench_producer(g))) {
		rc = EXIT_ERR;
		goto out;
	}
	memset(value, 'x', (size_t)o->size);
	b->o = o;
	b->value = value;
	pthread_mutex_init(&b->lock, NULL);
	t0 = last = now_ns();
	if (o->duration > 0)
		b->end_ns = t0 + (int64_t)(o->duration * 1e9);
	if (o->txn_threads) {
		for (; started < o->concurrency; started++)
			if (pthread_create(&thr[started], NULL, txn_bench_worker, b))
				break;
	} else {
		atomic_store(&b->active, o->concurrency);
		for (int i = 0; i < o->concurrency; i++) {
			slots[i].b = b;
			/* callbacks may run before this loop ends: h belongs
			 * to the I/O thread from the first start on */
			txn_slot_start(&slots[i]);
		}
	}
	while ((o->txn_threads ? atomic_load(&b->done) + atomic_load(&b->failed) <
					 (b->end_ns ? LLONG_MAX : o->count) &&
				 (!b->end_ns || now_ns() < b->end_ns)
			       : atomic_load(&b->active) > 0)) {
		int64_t t;
		long long n;

		usleep(100 * 1000);
		t = now_ns();
		if (t - last < 1000000000)
			continue;
		n = atomic_load(&b->done);
		fprintf(stderr, "bench txn: %lld committed, %lld failed, %.0f txn/s\n", n,
			atomic_load(&b->failed), (double)(n - last_n) * 1e9 / (double)(t - last));
		last = t;
		last_n = n;
	}
	for (int i = 0; i < started; i++)
		pthread_join(thr[i], NULL);
	summary("txn", atomic_load(&b->done), o->size, (double)(now_ns() - t0) / 1e9, &b->h);
	printf("txn: %d concurrent (%s), %lld failed\n", o->concurrency,
	       o->txn_threads ? "one thread each" : "pipelined", atomic_load(&b->failed));
	if (!o->txn_threads && b->h_end.count)
		printf("txn: prepare p50 %.0f us, p99 %.0f us; end p50 %.0f us, p99 %.0f us\n",
		       lathist_pct(&b->h_prepare, 50), lathist_pct(&b->h_prepare, 99),
		       lathist_pct(&b->h_end, 50), lathist_pct(&b->h_end, 99));
	if (atomic_load(&b->failed)) {
		fprintf(stderr, "sluice: first failure: %s\n", b->first_err);
		rc = EXIT_UNDELIVERED;
	}
	pthread_mutex_destroy(&b->lock);
out:
	if (b)
		sluice_txn_producer_destroy(b->p);
	free(b);
	free(thr);
	free(slots);
	free(value);
	return rc;
}

int cli_bench(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "topic", required_argument, NULL, 't' },
		{ "size", required_argument, NULL, 's' },
		{ "count", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "acks", required_argument, NULL, 'a' },
		{ "linger", required_argument, NULL, 'l' },
		{ "partitions", required_argument, NULL, 'P' },
		{ "rate", required_argument, NULL, 'r' },
		{ "batch-kb", required_argument, NULL, 'B' },
		{ "zero-copy", no_argument, NULL, 'Z' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "threads", no_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_opts o = { .topic = "sluice-bench", .count = -1, .acks = "1",
				.linger = -1, .partitions = 1, .rate = 10000, .size = -1,
				.concurrency = 32 };
	int opt, rc;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage_bench(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	o.mode = argv[1];
	optind = 2;
	while ((opt = getopt_long(argc, argv, "t:s:n:d:a:l:P:r:B:Zc:Th", lo, NULL)) != -1) {
		switch (opt) {
		case 't': o.topic = optarg; break;
		case 's': o.size = atol(optarg); break;
		case 'n': o.count = atoll(optarg); break;
		case 'd': o.duration = atof(optarg); break;
		case 'a': o.acks = optarg; break;
		case 'l': o.linger = atoi(optarg); break;
		case 'P': o.partitions = atoi(optarg); break;
		case 'r': o.rate = atol(optarg); break;
		case 'B': o.batch_kb = atoi(optarg); break;
		case 'Z': o.nocopy = true; break;
		case 'c': o.concurrency = atoi(optarg); break;
		case 'T': o.txn_threads = true; break;
		case 'h': usage_bench(stdout); return EXIT_OK;
		default: usage_bench(stderr); return EXIT_USAGE;
		}
	}
	if (o.size < 0 && optind == argc)
		o.size = !strcmp(o.mode, "txn") ? 200 : 100;
	if (optind != argc || o.size < 0 || o.partitions <= 0 || o.rate <= 0 ||
	    o.concurrency <= 0 || o.concurrency > 1024) {
		usage_bench(stderr);
		return EXIT_USAGE;
	}
	if (o.linger < 0)
		o.linger = !strcmp(o.mode, "e2e") ? 0 : 5;
	if (o.count < 0 && !(o.duration > 0) && strcmp(o.mode, "consume"))
		o.count = !strcmp(o.mode, "e2e") ? 100000 : !strcmp(o.mode, "txn") ? 200000 : 1000000;
	if (strcmp(o.mode, "consume")) {
		rc = cli_ensure_topic(g, o.topic, o.partitions);
		if (rc)
			return rc;
	}
	if (!strcmp(o.mode, "produce"))
		return bench_produce(g, &o);
	if (!strcmp(o.mode, "consume"))
		return bench_consume(g, &o);
	if (!strcmp(o.mode, "txn"))
		return bench_txn(g, &o);
	if (!strcmp(o.mode, "e2e")) {
		if (o.size < 8)
			o.size = 8;
		return bench_e2e(g, &o);
	}
	fprintf(stderr, "sluice: unknown bench mode \"%s\"\n", o.mode);
	usage_bench(stderr);
	return EXIT_USAGE;
}
