/*
 * release_pacing.c — are parked produce requests released smoothly, at the
 * rate, with sub-millisecond spacing (docs/flow-control.md, issue #6)?
 *
 * Creates a topic with a message-rate limit (default 100,000 msgs/s), a
 * small burst and a queue, then keeps it under more demand than the rate:
 * C connections (threads) each keep W Produce requests (acks=1) of M
 * messages in flight — every response is answered with a new request — so
 * the requests are parked and the gate's FIFO is never empty.  For every
 * admitted request it records when its response reached the socket (the
 * kernel's SO_TIMESTAMPNS arrival time: on loopback, the moment the broker
 * released it and wrote the answer; this process's own scheduling does not
 * blur it).  Then, over the steady part of the run (after the burst):
 *
 *   gaps     time between successive releases (all connections merged):
 *            median, p10, p90, p99, max; the ideal is M / rate;
 *   clumped  share of gaps under a quarter of the ideal (releases that
 *            came together instead of spaced);
 *   1 ms     messages released per 1 ms bucket: p1 .. p99 and the share of
 *            buckets within +-25 % of rate x 1 ms;
 *   empty    share of 250 us buckets with no release at all (1 ms clumps
 *            would leave 3 of 4 empty);
 *   lag      spread (p99 - p1) of "released so far - rate x elapsed", in
 *            messages: how far releases stray from the ideal straight line;
 *   total    admitted messages against burst + rate x T (T from the first
 *            request sent to the last release).
 *
 * It also measures first how late this machine wakes a thread from a
 * 100 us timerfd sleep (wake_p50_us / wake_p90_us): if even that is far
 * off, no broker on it can pace at 100 us, and the test says so.
 *
 *   release_pacing -b 127.0.0.1:PORT [-t TOPIC] [--rate 100000] [--burst 10]
 *                  [-m 10] [-c 4] [-w 16] [-d 2000]
 *
 * Prints a human summary and one RESULT line (key=value) for scripts.
 * Exit status: 0 ran (the caller judges the figures), 1 a request failed
 * with an error other than THROTTLING_QUOTA_EXCEEDED or the run broke, 2
 * usage, 3 no broker.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cpuload.h"
#include "kraw.h"

#define MAX_CONNS 64

struct opts {
	int broker_pid;     /* 0 = unknown: other_cores is not measured */
	const char *brokers;
	const char *topic;
	double rate;
	long burst;
	int per_req;
	int conns;
	int window;         /* requests in flight per connection */
	long duration_ms;
	long queue_wait_ms;
	long queue_max;
	bool create;
};

/* One response. */
struct rel {
	int64_t t;          /* arrival, CLOCK_REALTIME ns (kernel, else ours) */
	int16_t err;
};

struct conn_run {
	const struct opts *o;
	kraw k;
	kraw_frame frame;
	struct rel *rels;
	long nrels, cap;
	int64_t first_send_real;
	int err;            /* -errno / -EPROTO when the run broke */
	long other_errors;
	long rejected;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: release_pacing -b HOST:PORT [options]\n"
		"  -b, --brokers HOST:PORT  broker (numeric IPv4)\n"
		"  -t, --topic NAME         topic (default: paced); created unless --no-create\n"
		"      --rate R             produce.rate.messages (default: 100000)\n"
		"      --burst B            produce.burst.messages (default: 10)\n"
		"  -m, --per-request N      messages per request (default: 10)\n"
		"  -c, --connections N      connections, one thread each (default: 4)\n"
		"  -w, --window N           requests in flight per connection (default: 16)\n"
		"  -d, --duration-ms MS     how long to keep offering (default: 2000)\n"
		"      --queue-wait-ms MS   produce.queue.max.wait.ms (default: 500)\n"
		"      --queue-max N        produce.queue.max.requests (default: 1000)\n"
		"      --no-create          use an existing topic (its limits must match)\n"
		"      --broker-pid PID     also report the CPU other processes used meanwhile\n");
}

static int parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "topic", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'R' },
		{ "burst", required_argument, NULL, 'B' },
		{ "per-request", required_argument, NULL, 'm' },
		{ "connections", required_argument, NULL, 'c' },
		{ "window", required_argument, NULL, 'w' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "queue-wait-ms", required_argument, NULL, 'Q' },
		{ "queue-max", required_argument, NULL, 'M' },
		{ "no-create", no_argument, NULL, 'N' },
		{ "broker-pid", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct opts){ 0, NULL, "paced", 100000, 10, 10, 4, 16, 2000, 500, 1000, true };
	while ((c = getopt_long(argc, argv, "b:t:m:c:w:d:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': o->brokers = optarg; break;
		case 't': o->topic = optarg; break;
		case 'R': o->rate = strtod(optarg, NULL); break;
		case 'B': o->burst = strtol(optarg, NULL, 10); break;
		case 'm': o->per_req = atoi(optarg); break;
		case 'c': o->conns = atoi(optarg); break;
		case 'w': o->window = atoi(optarg); break;
		case 'd': o->duration_ms = strtol(optarg, NULL, 10); break;
		case 'Q': o->queue_wait_ms = strtol(optarg, NULL, 10); break;
		case 'M': o->queue_max = strtol(optarg, NULL, 10); break;
		case 'N': o->create = false; break;
		case 'p': o->broker_pid = atoi(optarg); break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
	}
	if (!o->brokers || optind != argc || !(o->rate > 0) || o->burst < 1 || o->per_req < 1 ||
	    o->conns < 1 || o->conns > MAX_CONNS || o->window < 1 || o->duration_ms < 100 ||
	    o->queue_wait_ms < 1 || o->queue_max < 1)
		return -1;
	return 0;
}

/* ---- the machine's own timer wake-up ---- */

/* Lateness of 400 absolute 100 us timerfd sleeps, sorted, in ns. */
static int calibrate(int64_t *late, int n)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	int64_t t = kraw_mono_ns();

	if (fd < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		struct itimerspec its = { { 0, 0 }, { 0, 0 } };
		uint64_t ticks;

		t += 100000;
		its.it_value.tv_sec = (time_t)(t / 1000000000);
		its.it_value.tv_nsec = (long)(t % 1000000000);
		timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
		if (read(fd, &ticks, sizeof(ticks)) < 0)
			ticks = 0;
		late[i] = kraw_mono_ns() - t;
		if (late[i] > 0)
			t += late[i]; /* next one 100 us after this wake-up */
	}
	close(fd);
	return 0;
}

/* ---- the load: one thread per connection ---- */

static int record(struct conn_run *c, int64_t t, int16_t err)
{
	if (c->nrels == c->cap) {
		long cap = c->cap ? c->cap * 2 : 4096;
		struct rel *p = realloc(c->rels, sizeof(*p) * (size_t)cap);

		if (!p)
			return -ENOMEM;
		c->rels = p;
		c->cap = cap;
	}
	c->rels[c->nrels].t = t;
	c->rels[c->nrels].err = err;
	c->nrels++;
	return 0;
}

static int send_one(struct conn_run *c, int32_t corr)
{
	kraw_frame_set_corr(&c->frame, corr);
	return kraw_send(&c->k, c->frame.data, c->frame.len);
}

/* Keeps `window` requests in flight until the deadline, then collects the
 * responses still owed. */
static void *conn_main(void *arg)
{
	struct conn_run *c = arg;
	int64_t deadline = kraw_mono_ns() + c->o->duration_ms * 1000000;
	int32_t corr = 0;
	long inflight = 0;
	int rc = 0;

	c->first_send_real = kraw_real_ns();
	for (; inflight < c->o->window && rc == 0; inflight++)
		rc = send_one(c, corr++);
	while (rc == 0 && inflight > 0) {
		const uint8_t *body;
		size_t len;
		int32_t rcorr, thr;
		int64_t rx, base;
		int16_t err;

		rc = kraw_recv(&c->k, &rcorr, &body, &len, &rx);
		if (rc < 0)
			break;
		inflight--;
		if (kraw_parse_produce(body, len, &err, &base, &thr) < 0) {
			rc = -EPROTO;
			break;
		}
		rc = record(c, rx ? rx : kraw_real_ns(), err);
		if (err == KRAW_ERR_THROTTLING)
			c->rejected++;
		else if (err != 0)
			c->other_errors++;
		if (rc == 0 && kraw_mono_ns() < deadline) {
			rc = send_one(c, corr++);
			inflight++;
		}
	}
	c->err = rc;
	return NULL;
}

/* ---- analysis ---- */

static int cmp_rel(const void *a, const void *b)
{
	int64_t x = ((const struct rel *)a)->t, y = ((const struct rel *)b)->t;

	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of a sorted array. */
static double q(const double *v, long n, double p)
{
	long i = (long)(p * (double)n + 0.999999) - 1;

	if (n == 0)
		return 0;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return v[i];
}

struct figures {
	long admitted_msgs, rejected, other;
	double window_s, bound, total_err_pct;
	long steady_releases;
	double ideal_gap_us, gap_p10, gap_p50, gap_p90, gap_p99, gap_max, clumped_pct;
	double ms_p1, ms_p5, ms_p50, ms_p95, ms_p99, ms_in_band_pct, sub_empty_pct;
	double lag_msgs;
	double other_cores, broker_cpu_s, client_cpu_s;
	double probe_p50, probe_p99, probe_max; /* 1 ms sleeps' lateness, us */
};

/* Gaps between successive releases, as microseconds, sorted. */
static void gap_figures(const struct rel *r, long n, struct figures *f)
{
	double *g = malloc(sizeof(double) * (size_t)(n > 1 ? n : 1));
	long ng = 0, clumped = 0;

	if (!g)
		return;
	for (long i = 1; i < n; i++) {
		g[ng] = (double)(r[i].t - r[i - 1].t) / 1e3;
		clumped += g[ng] < f->ideal_gap_us / 4;
		ng++;
	}
	qsort(g, (size_t)ng, sizeof(*g), cmp_dbl);
	f->gap_p10 = q(g, ng, 0.10);
	f->gap_p50 = q(g, ng, 0.50);
	f->gap_p90 = q(g, ng, 0.90);
	f->gap_p99 = q(g, ng, 0.99);
	f->gap_max = q(g, ng, 1.0);
	f->clumped_pct = ng ? 100.0 * (double)clumped / (double)ng : 0;
	free(g);
}

/* Messages per bucket of width w ns from t0 (whole buckets only). */
static long bucket_counts(const struct rel *r, long n, int64_t t0, int64_t t1, int64_t w,
			  int per_req, double **out)
{
	long nb = (long)((t1 - t0) / w);
	double *b = calloc((size_t)(nb > 0 ? nb : 1), sizeof(double));

	if (!b)
		return -1;
	for (long i = 0; i < n; i++) {
		long k = (long)((r[i].t - t0) / w);

		if (r[i].t >= t0 && k < nb)
			b[k] += per_req;
	}
	*out = b;
	return nb;
}

static void bucket_figures(const struct rel *r, long n, const struct opts *o, struct figures *f)
{
	double *b = NULL, expect = o->rate / 1000.0;
	long nb, in_band = 0, empty = 0;

	if (n < 2)
		return;
	nb = bucket_counts(r, n, r[0].t, r[n - 1].t, 1000000, o->per_req, &b);
	if (nb <= 0) {
		free(b);
		return;
	}
	for (long i = 0; i < nb; i++)
		in_band += fabs(b[i] - expect) <= 0.25 * expect;
	qsort(b, (size_t)nb, sizeof(*b), cmp_dbl);
	f->ms_p1 = q(b, nb, 0.01);
	f->ms_p5 = q(b, nb, 0.05);
	f->ms_p50 = q(b, nb, 0.50);
	f->ms_p95 = q(b, nb, 0.95);
	f->ms_p99 = q(b, nb, 0.99);
	f->ms_in_band_pct = 100.0 * (double)in_band / (double)nb;
	free(b);
	b = NULL;
	nb = bucket_counts(r, n, r[0].t, r[n - 1].t, 250000, o->per_req, &b);
	for (long i = 0; i < nb; i++)
		empty += b[i] == 0;
	f->sub_empty_pct = nb > 0 ? 100.0 * (double)empty / (double)nb : 0;
	free(b);
}

/* Spread of (released so far - rate x elapsed), p99 - p1, in messages. */
static void lag_figures(const struct rel *r, long n, const struct opts *o, struct figures *f)
{
	double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));

	if (!d || n == 0) {
		free(d);
		return;
	}
	for (long i = 0; i < n; i++)
		d[i] = (double)(i * o->per_req) - o->rate * (double)(r[i].t - r[0].t) / 1e9;
	qsort(d, (size_t)n, sizeof(*d), cmp_dbl);
	f->lag_msgs = q(d, n, 0.99) - q(d, n, 0.01);
	free(d);
}

/* Merges the connections' admitted releases, sorted by time. */
static struct rel *merge(struct conn_run *c, int nc, long *n)
{
	long total = 0, k = 0;
	struct rel *all;

	for (int i = 0; i < nc; i++)
		total += c[i].nrels;
	all = malloc(sizeof(*all) * (size_t)(total ? total : 1));
	if (!all)
		return NULL;
	for (int i = 0; i < nc; i++)
		for (long j = 0; j < c[i].nrels; j++)
			if (c[i].rels[j].err == 0)
				all[k++] = c[i].rels[j];
	qsort(all, (size_t)k, sizeof(*all), cmp_rel);
	*n = k;
	return all;
}

static int analyse(struct conn_run *c, int nc, const struct opts *o, struct figures *f)
{
	int64_t t_first = INT64_MAX, s0, s1;
	long n, lo = 0, hi;
	struct rel *all = merge(c, nc, &n);

	memset(f, 0, sizeof(*f));
	if (!all || n < 10) {
		free(all);
		return -1;
	}
	for (int i = 0; i < nc; i++) {
		if (c[i].first_send_real < t_first)
			t_first = c[i].first_send_real;
		f->rejected += c[i].rejected;
		f->other += c[i].other_errors;
	}
	f->admitted_msgs = n * o->per_req;
	f->window_s = (double)(all[n - 1].t - t_first) / 1e9;
	f->bound = (double)o->burst + o->rate * f->window_s;
	f->total_err_pct = 100.0 * ((double)f->admitted_msgs - f->bound) / f->bound;
	f->ideal_gap_us = 1e6 * o->per_req / o->rate;
	/* Steady part: 20 ms after the first send (the burst and the start-up
	 * are over) to 5 ms before the last release. */
	s0 = t_first + 20000000;
	s1 = all[n - 1].t - 5000000;
	while (lo < n && all[lo].t < s0)
		lo++;
	hi = lo;
	while (hi < n && all[hi].t <= s1)
		hi++;
	f->steady_releases = hi - lo;
	if (hi - lo >= 10) {
		gap_figures(all + lo, hi - lo, f);
		bucket_figures(all + lo, hi - lo, o, f);
		lag_figures(all + lo, hi - lo, o, f);
	}
	free(all);
	return 0;
}

static int create_topic(kraw *k, const struct opts *o)
{
	char rate[32], burst[32], wait[32], qmax[32];
	const char *kv[] = { "produce.rate.messages", rate, "produce.burst.messages", burst,
			     "produce.queue.max.wait.ms", wait, "produce.queue.max.requests", qmax };
	int16_t err = 0;
	int rc;

	snprintf(rate, sizeof(rate), "%g", o->rate);
	snprintf(burst, sizeof(burst), "%ld", o->burst);
	snprintf(wait, sizeof(wait), "%ld", o->queue_wait_ms);
	snprintf(qmax, sizeof(qmax), "%ld", o->queue_max);
	rc = kraw_create_topic(k, o->topic, 1, kv, 8, &err);
	if (rc < 0 || err != 0) {
		fprintf(stderr, "release_pacing: CreateTopics %s: %s (error %d)\n", o->topic,
			rc < 0 ? strerror(-rc) : "refused", err);
		return -1;
	}
	return 0;
}

static void print_figures(const struct opts *o, const struct figures *f, double wake_p50,
			  double wake_p90)
{
	printf("release_pacing: topic %s, rate %g msgs/s, burst %ld, %d connections x %d "
	       "requests of %d msgs in flight, %.3f s\n",
	       o->topic, o->rate, o->burst, o->conns, o->window, o->per_req, f->window_s);
	printf("  machine: 100 us timerfd sleep wakes late by p50 %.1f us, p90 %.1f us\n", wake_p50,
	       wake_p90);
	if (o->broker_pid > 0)
		printf("  machine: other processes used %.2f cores meanwhile; broker %.2f s CPU, this "
		       "client %.2f s\n",
		       f->other_cores, f->broker_cpu_s, f->client_cpu_s);
	printf("  machine: a 1 ms timer sleep woke late by p50 %.1f  p99 %.1f  max %.1f us during "
	       "the run\n",
	       f->probe_p50, f->probe_p99, f->probe_max);
	printf("  admitted %ld msgs, bound burst + rate x T = %.1f (%+.2f %%); rejected %ld, "
	       "other errors %ld requests\n",
	       f->admitted_msgs, f->bound, f->total_err_pct, f->rejected, f->other);
	printf("  gaps between releases (ideal %.1f us): p10 %.1f  p50 %.1f  p90 %.1f  p99 %.1f  "
	       "max %.1f us; clumped (< ideal/4) %.1f %%\n",
	       f->ideal_gap_us, f->gap_p10, f->gap_p50, f->gap_p90, f->gap_p99, f->gap_max,
	       f->clumped_pct);
	printf("  msgs per 1 ms (ideal %.0f): p1 %.0f  p5 %.0f  p50 %.0f  p95 %.0f  p99 %.0f; "
	       "within +-25 %%: %.1f %% of buckets; empty 250 us buckets %.1f %%\n",
	       o->rate / 1000.0, f->ms_p1, f->ms_p5, f->ms_p50, f->ms_p95, f->ms_p99,
	       f->ms_in_band_pct, f->sub_empty_pct);
	printf("  lag spread (p99 - p1 of released - rate x t): %.1f msgs = %.1f us\n", f->lag_msgs,
	       f->lag_msgs / o->rate * 1e6);
	printf("RESULT admitted_msgs=%ld bound=%.1f total_err_pct=%.3f rejected=%ld other=%ld "
	       "window_s=%.4f steady_releases=%ld ideal_gap_us=%.2f gap_p10_us=%.2f "
	       "gap_p50_us=%.2f gap_p90_us=%.2f gap_p99_us=%.2f gap_max_us=%.2f clumped_pct=%.2f "
	       "ms_p1=%.0f ms_p5=%.0f ms_p50=%.0f ms_p95=%.0f ms_p99=%.0f ms_in_band_pct=%.2f "
	       "sub_empty_pct=%.2f lag_msgs=%.1f wake_p50_us=%.1f wake_p90_us=%.1f "
	       "other_cores=%.2f broker_cpu_s=%.2f client_cpu_s=%.2f probe_p50_us=%.1f "
	       "probe_p99_us=%.1f probe_max_us=%.1f\n",
	       f->admitted_msgs, f->bound, f->total_err_pct, f->rejected, f->other, f->window_s,
	       f->steady_releases, f->ideal_gap_us, f->gap_p10, f->gap_p50, f->gap_p90, f->gap_p99,
	       f->gap_max, f->clumped_pct, f->ms_p1, f->ms_p5, f->ms_p50, f->ms_p95, f->ms_p99,
	       f->ms_in_band_pct, f->sub_empty_pct, f->lag_msgs, wake_p50, wake_p90,
	       o->broker_pid > 0 ? f->other_cores : -1.0, f->broker_cpu_s, f->client_cpu_s,
	       f->probe_p50, f->probe_p99, f->probe_max);
}

int main(int argc, char **argv)
{
	struct conn_run c[MAX_CONNS];
	pthread_t th[MAX_CONNS];
	struct opts o;
	struct figures f;
	cpuload_snap load0, load1;
	cpuload_probe probe;
	double steal, pr50, pr99, prmax;
	int64_t late[400];
	double wake[400];
	int started = 0, status = 1, rc;

	memset(c, 0, sizeof(c));
	for (int i = 0; i < MAX_CONNS; i++)
		c[i].k.fd = -1; /* kraw_close on the out path closes nothing */
	if (parse_args(&o, argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	if (calibrate(late, 400) < 0) {
		perror("release_pacing: timerfd");
		return 1;
	}
	for (int i = 0; i < 400; i++)
		wake[i] = (double)late[i] / 1e3;
	qsort(wake, 400, sizeof(*wake), cmp_dbl);
	for (int i = 0; i < o.conns; i++) {
		c[i].o = &o;
		rc = kraw_connect(&c[i].k, o.brokers, true);
		if (rc < 0) {
			fprintf(stderr, "release_pacing: connect %s: %s\n", o.brokers, strerror(-rc));
			status = 3;
			goto out;
		}
		if (kraw_produce_frame(&c[i].frame, "release-pacing", o.topic, o.per_req, 16, 1,
				       30000) < 0)
			goto out;
	}
	if (o.create && create_topic(&c[0].k, &o) < 0)
		goto out;
	cpuload_snap_take(&load0, o.broker_pid);
	cpuload_probe_start(&probe, o.duration_ms * 2 + 1000);
	for (; started < o.conns; started++)
		if (pthread_create(&th[started], NULL, conn_main, &c[started]) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	cpuload_probe_stop(&probe, &pr50, &pr99, &prmax);
	cpuload_snap_take(&load1, o.broker_pid);
	for (int i = 0; i < started; i++) {
		if (c[i].err < 0) {
			fprintf(stderr, "release_pacing: connection %d: %s\n", i, strerror(-c[i].err));
			goto out;
		}
	}
	if (started < o.conns || analyse(c, o.conns, &o, &f) < 0) {
		fprintf(stderr, "release_pacing: too few releases to judge\n");
		goto out;
	}
	f.other_cores = cpuload_other_cores(&load0, &load1, &steal);
	f.broker_cpu_s = load1.broker_s - load0.broker_s;
	f.client_cpu_s = load1.self_s - load0.self_s;
	f.probe_p50 = pr50;
	f.probe_p99 = pr99;
	f.probe_max = prmax;
	print_figures(&o, &f, q(wake, 400, 0.5), q(wake, 400, 0.9));
	status = f.other > 0 ? 1 : 0;
out:
	for (int i = 0; i < o.conns; i++) {
		kraw_frame_free(&c[i].frame);
		kraw_close(&c[i].k);
		free(c[i].rels);
	}
	return status;
}
