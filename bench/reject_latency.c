/*
 * reject_latency.c — how fast the produce gate says no (docs/flow-control.md,
 * issue #6: "the rest rejected fast, p99 reject latency under 1 ms on
 * loopback").
 *
 * Creates a topic with a message-rate limit and no queue (fail-fast), then
 * offers Produce v3 requests (acks=1, no retries: every request is sent
 * once) at a fixed rate, open loop: request i is due at t0 + i / rate
 * whatever the answers (requests due together, because the sender woke
 * late, leave in one write), from a sender thread, while the main thread
 * reads the responses (every whole frame a read returns).  Per request it
 * records
 *   app   send() -> response read by this process (CLOCK_MONOTONIC), and
 *   wire  send() -> response bytes reached our socket (the kernel's
 *         SO_TIMESTAMPNS arrival time: on loopback, when the broker wrote
 *         them; excludes this process's own wake-up; for responses read
 *         together, the arrival of the last, so an upper bound),
 * and prints p50 / p99 / p99.9 / max of both for the rejected requests
 * (THROTTLING_QUOTA_EXCEEDED) and the admitted ones, the admitted count
 * against the bucket's bound burst + rate x T, and one RESULT line for
 * scripts.
 *
 *   reject_latency -b 127.0.0.1:PORT [-t TOPIC] [-r 20000] [-m 1] [-d 3000]
 *                  [--rate 1000] [--burst 100] [--max-p99-us US]
 *
 * -r is messages per second offered, -m messages per request (requests/s =
 * r / m).  Exit status: 0 ok; 1 a request failed with another error, the
 * admitted count is off the bound by more than 2 %, or the app p99 of the
 * rejects is above --max-p99-us; 2 usage; 3 no broker.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpuload.h"
#include "kraw.h"

struct opts {
	int broker_pid;     /* 0 = unknown: other_cores is not measured */
	const char *brokers;
	const char *topic;
	double offered;     /* messages per second */
	int per_req;        /* messages per request */
	long duration_ms;
	double rate;        /* the topic's produce.rate.messages */
	long burst;
	long max_p99_us;    /* 0 = no bound */
	bool create;
	const char *dump;   /* per-request figures to this file, or NULL */
};

/* One request: written by the sender (t_send) before it is sent, by the
 * receiver after its response arrived. */
struct sample {
	int64_t send_mono, send_real;
	int64_t recv_mono, rx_real;
	int16_t err;
	bool answered;
};

struct run {
	struct opts o;
	kraw k;
	kraw_frame frame;
	struct sample *s;
	long nreq;
	long sent;          /* requests handed to send(), published atomically */
	long got;           /* responses read */
	int send_err;
	cpuload_snap load0, load1; /* around the run */
	cpuload_probe probe;       /* wake-up lateness during the run */
	double probe_p50, probe_p99, probe_max;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: reject_latency -b HOST:PORT [options]\n"
		"  -b, --brokers HOST:PORT  broker (numeric IPv4)\n"
		"  -t, --topic NAME         topic (default: rejlat); created unless --no-create\n"
		"  -r, --offered N          messages per second offered (default: 20000)\n"
		"  -m, --per-request N      messages per request (default: 1)\n"
		"  -d, --duration-ms MS     how long to offer (default: 3000)\n"
		"      --rate R             the topic's produce.rate.messages (default: 1000)\n"
		"      --burst B            the topic's produce.burst.messages (default: 100)\n"
		"      --max-p99-us US      exit 1 if the rejects' app p99 is above this\n"
		"      --no-create          use an existing topic (its limits must match)\n"
		"      --broker-pid PID     also report the CPU other processes used meanwhile\n"
		"      --dump FILE          one line per request: sent (us from the first),\n"
		"                           error, app and wire latency (us)\n");
}

static int parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "topic", required_argument, NULL, 't' },
		{ "offered", required_argument, NULL, 'r' },
		{ "per-request", required_argument, NULL, 'm' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "rate", required_argument, NULL, 'R' },
		{ "burst", required_argument, NULL, 'B' },
		{ "max-p99-us", required_argument, NULL, 'P' },
		{ "no-create", no_argument, NULL, 'N' },
		{ "broker-pid", required_argument, NULL, 'p' },
		{ "dump", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct opts){ 0, NULL, "rejlat", 20000, 1, 3000, 1000, 100, 0, true, NULL };
	while ((c = getopt_long(argc, argv, "b:t:r:m:d:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': o->brokers = optarg; break;
		case 't': o->topic = optarg; break;
		case 'r': o->offered = strtod(optarg, NULL); break;
		case 'm': o->per_req = atoi(optarg); break;
		case 'd': o->duration_ms = strtol(optarg, NULL, 10); break;
		case 'R': o->rate = strtod(optarg, NULL); break;
		case 'B': o->burst = strtol(optarg, NULL, 10); break;
		case 'P': o->max_p99_us = strtol(optarg, NULL, 10); break;
		case 'N': o->create = false; break;
		case 'p': o->broker_pid = atoi(optarg); break;
		case 'D': o->dump = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
	}
	if (!o->brokers || optind != argc || !(o->offered > 0) || o->per_req < 1 ||
	    o->duration_ms < 1 || !(o->rate > 0) || o->burst < 1)
		return -1;
	return 0;
}

static int create_topic(struct run *r)
{
	char rate[32], burst[32];
	const char *kv[] = { "produce.rate.messages", rate, "produce.burst.messages", burst,
			     "produce.queue.max.wait.ms", "0" };
	int16_t err = 0;
	int rc;

	snprintf(rate, sizeof(rate), "%g", r->o.rate);
	snprintf(burst, sizeof(burst), "%ld", r->o.burst);
	rc = kraw_create_topic(&r->k, r->o.topic, 1, kv, 6, &err);
	if (rc < 0 || err != 0) {
		fprintf(stderr, "reject_latency: CreateTopics %s: %s (error %d)\n", r->o.topic,
			rc < 0 ? strerror(-rc) : "refused", err);
		return -1;
	}
	return 0;
}

#define MAX_COALESCE 64

/* The sender: request i is due at t0 + i * interval (absolute sleeps, so
 * a late wake-up does not shift the schedule).  Requests that are due
 * together (the thread woke late) leave in one write, as a pipelining
 * client would send them; each is timestamped just before that write. */
static void *sender(void *arg)
{
	struct run *r = arg;
	double interval_ns = 1e9 * r->o.per_req / r->o.offered;
	int64_t t0 = kraw_mono_ns() + 1000000;
	uint8_t *buf = malloc(r->frame.len * MAX_COALESCE);
	int rc = buf ? 0 : -ENOMEM;

	for (long i = 0; i < r->nreq && rc == 0;) {
		int64_t due = t0 + (int64_t)(interval_ns * (double)i), now, real;
		struct timespec ts = { (time_t)(due / 1000000000), (long)(due % 1000000000) };
		long k = 0;

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		now = kraw_mono_ns();
		real = kraw_real_ns();
		do {
			kraw_frame_set_corr(&r->frame, (int32_t)(i + k));
			memcpy(buf + (size_t)k * r->frame.len, r->frame.data, r->frame.len);
			r->s[i + k].send_mono = now;
			r->s[i + k].send_real = real;
			k++;
		} while (k < MAX_COALESCE && i + k < r->nreq &&
			 t0 + (int64_t)(interval_ns * (double)(i + k)) <= now);
		rc = kraw_send(&r->k, buf, r->frame.len * (size_t)k);
		i += k;
		__atomic_store_n(&r->sent, i, __ATOMIC_RELEASE);
	}
	if (rc < 0)
		__atomic_store_n(&r->send_err, rc, __ATOMIC_RELEASE);
	free(buf);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of a sorted array, in microseconds. */
static double q_us(const int64_t *v, long n, double q)
{
	long i = (long)(q * (double)n + 0.999999) - 1;

	if (n == 0)
		return 0;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)v[i] / 1e3;
}

static void print_lat(const char *what, int64_t *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_i64);
	printf("  %-28s p50 %8.1f  p99 %8.1f  p99.9 %8.1f  max %8.1f us  (%ld)\n", what,
	       q_us(v, n, 0.50), q_us(v, n, 0.99), q_us(v, n, 0.999), q_us(v, n, 1.0), n);
}

/* One response: app time now, wire time from the kernel. */
static int on_frame(void *ctx, int32_t corr, const uint8_t *body, size_t len, int64_t rx)
{
	struct run *r = ctx;
	int64_t now = kraw_mono_ns(), base;
	int32_t thr;
	int16_t err;

	if (corr < 0 || corr >= r->nreq || r->s[corr].answered ||
	    kraw_parse_produce(body, len, &err, &base, &thr) < 0)
		return -EPROTO;
	r->s[corr].recv_mono = now;
	r->s[corr].rx_real = rx;
	r->s[corr].err = err;
	r->s[corr].answered = true;
	r->got++;
	return 0;
}

/* Reads every response (many per read when they come together); returns 0
 * or -errno. */
static int receive_all(struct run *r)
{
	while (r->got < r->nreq) {
		int send_err = __atomic_load_n(&r->send_err, __ATOMIC_ACQUIRE);
		int rc;

		if (send_err && r->got >= __atomic_load_n(&r->sent, __ATOMIC_ACQUIRE))
			return send_err;
		rc = kraw_read_frames(&r->k, on_frame, r);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* One line per request, for looking at when the slow ones happened. */
static void dump(const struct run *r)
{
	FILE *f = fopen(r->o.dump, "w");

	if (!f) {
		perror(r->o.dump);
		return;
	}
	for (long i = 0; i < r->nreq; i++) {
		const struct sample *s = &r->s[i];

		fprintf(f, "%.1f %d %.1f %.1f\n", (double)(s->send_mono - r->s[0].send_mono) / 1e3,
			s->err, (double)(s->recv_mono - s->send_mono) / 1e3,
			s->rx_real ? (double)(s->rx_real - s->send_real) / 1e3 : -1.0);
	}
	fclose(f);
}

/* Prints the figures; returns the exit status. */
static int report(struct run *r, int64_t t_first_real, int64_t t_last_real)
{
	int64_t *rej_app = malloc(sizeof(int64_t) * (size_t)r->nreq);
	int64_t *rej_wire = malloc(sizeof(int64_t) * (size_t)r->nreq);
	int64_t *adm_app = malloc(sizeof(int64_t) * (size_t)r->nreq);
	long nrej = 0, nwire = 0, nadm = 0, other = 0;
	double window_s = (double)(t_last_real - t_first_real) / 1e9;
	double bound = (double)r->o.burst + r->o.rate * window_s;
	double p99_app, p99_wire, steal, other_cores;
	int status = 0;

	if (!rej_app || !rej_wire || !adm_app) {
		fprintf(stderr, "reject_latency: out of memory\n");
		status = 1;
		goto out;
	}
	for (long i = 0; i < r->nreq; i++) {
		struct sample *s = &r->s[i];

		if (s->err == 0) {
			adm_app[nadm++] = s->recv_mono - s->send_mono;
		} else if (s->err == KRAW_ERR_THROTTLING) {
			rej_app[nrej++] = s->recv_mono - s->send_mono;
			if (s->rx_real)
				rej_wire[nwire++] = s->rx_real - s->send_real;
		} else {
			other++;
		}
	}
	printf("reject_latency: topic %s (rate %g msgs/s, burst %ld, no queue), %ld requests of %d "
	       "msgs offered at %g msgs/s over %.3f s\n",
	       r->o.topic, r->o.rate, r->o.burst, r->nreq, r->o.per_req, r->o.offered, window_s);
	printf("  admitted %ld msgs (bound burst + rate x T = %.1f), rejected %ld msgs, other "
	       "errors %ld requests\n",
	       nadm * r->o.per_req, bound, nrej * r->o.per_req, other);
	other_cores = cpuload_other_cores(&r->load0, &r->load1, &steal);
	if (r->o.broker_pid > 0)
		printf("  machine: other processes used %.2f cores meanwhile (steal %.2f); broker "
		       "%.2f s CPU, this client %.2f s\n",
		       other_cores, steal, r->load1.broker_s - r->load0.broker_s,
		       r->load1.self_s - r->load0.self_s);
	printf("  machine: a 1 ms timer sleep woke late by p50 %.1f  p99 %.1f  max %.1f us during "
	       "the run\n",
	       r->probe_p50, r->probe_p99, r->probe_max);
	print_lat("reject, app (send->read)", rej_app, nrej);
	print_lat("reject, wire (send->arrival)", rej_wire, nwire);
	print_lat("admit, app (send->read)", adm_app, nadm);
	p99_app = q_us(rej_app, nrej, 0.99);
	p99_wire = q_us(rej_wire, nwire, 0.99);
	printf("RESULT requests=%ld per_req=%d admitted_msgs=%ld rejected_msgs=%ld other=%ld "
	       "window_s=%.4f bound=%.1f rej_p50_us=%.1f rej_p99_us=%.1f rej_p999_us=%.1f "
	       "rej_max_us=%.1f wire_p50_us=%.1f wire_p99_us=%.1f wire_p999_us=%.1f "
	       "adm_p99_us=%.1f other_cores=%.2f broker_cpu_s=%.2f client_cpu_s=%.2f "
	       "probe_p50_us=%.1f probe_p99_us=%.1f probe_max_us=%.1f\n",
	       r->nreq, r->o.per_req, nadm * r->o.per_req, nrej * r->o.per_req, other, window_s,
	       bound, q_us(rej_app, nrej, 0.5), p99_app, q_us(rej_app, nrej, 0.999),
	       q_us(rej_app, nrej, 1.0), q_us(rej_wire, nwire, 0.5), p99_wire,
	       q_us(rej_wire, nwire, 0.999), q_us(adm_app, nadm, 0.99),
	       r->o.broker_pid > 0 ? other_cores : -1.0, r->load1.broker_s - r->load0.broker_s,
	       r->load1.self_s - r->load0.self_s, r->probe_p50, r->probe_p99, r->probe_max);
	if (other > 0 || nrej == 0)
		status = 1;
	if ((double)(nadm * r->o.per_req) > bound + 0.02 * bound ||
	    (double)(nadm * r->o.per_req) < bound - 0.02 * bound - r->o.per_req) {
		fprintf(stderr, "reject_latency: admitted %ld msgs, bound %.1f +- 2%%\n",
			nadm * r->o.per_req, bound);
		status = 1;
	}
	if (r->o.max_p99_us > 0 && p99_app > (double)r->o.max_p99_us) {
		fprintf(stderr, "reject_latency: reject p99 %.1f us > %ld us\n", p99_app,
			r->o.max_p99_us);
		status = 1;
	}
out:
	free(rej_app);
	free(rej_wire);
	free(adm_app);
	return status;
}

int main(int argc, char **argv)
{
	struct run r = { 0 };
	pthread_t th;
	int64_t t_first, t_last = 0;
	int rc, status = 1;

	if (parse_args(&r.o, argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	r.nreq = (long)(r.o.offered / r.o.per_req * (double)r.o.duration_ms / 1000.0);
	if (r.nreq < 1) {
		usage(stderr);
		return 2;
	}
	r.s = calloc((size_t)r.nreq, sizeof(*r.s));
	rc = kraw_connect(&r.k, r.o.brokers, true);
	if (rc < 0) {
		fprintf(stderr, "reject_latency: connect %s: %s\n", r.o.brokers, strerror(-rc));
		free(r.s);
		return 3;
	}
	if (!r.s || (r.o.create && create_topic(&r) < 0) ||
	    kraw_produce_frame(&r.frame, "reject-latency", r.o.topic, r.o.per_req, 16, 1, 10000) < 0)
		goto out;
	cpuload_snap_take(&r.load0, r.o.broker_pid);
	cpuload_probe_start(&r.probe, r.o.duration_ms * 2 + 1000);
	if (pthread_create(&th, NULL, sender, &r) != 0) {
		cpuload_probe_stop(&r.probe, &r.probe_p50, &r.probe_p99, &r.probe_max);
		goto out;
	}
	rc = receive_all(&r);
	pthread_join(th, NULL);
	cpuload_probe_stop(&r.probe, &r.probe_p50, &r.probe_p99, &r.probe_max);
	cpuload_snap_take(&r.load1, r.o.broker_pid);
	if (rc < 0) {
		fprintf(stderr, "reject_latency: %s\n", strerror(-rc));
		goto out;
	}
	/* The window the bucket bound holds over: from the first request sent
	 * to the last response back. */
	t_first = r.s[0].send_real;
	for (long i = 0; i < r.nreq; i++) {
		int64_t t = r.s[i].rx_real ? r.s[i].rx_real : r.s[i].send_real;

		if (t > t_last)
			t_last = t;
	}
	if (r.o.dump)
		dump(&r);
	status = report(&r, t_first, t_last);
out:
	kraw_frame_free(&r.frame);
	kraw_close(&r.k);
	free(r.s);
	return status;
}
