/*
 * gateway.c — flash-sale (seckill) gateway with a built-in load generator.
 *
 * Simulated users press "buy" N times within D milliseconds (each request has
 * a user id; a share of the users press twice).  The gateway publishes every
 * request as one message to the `seckill` topic through libsluice and answers
 * the user from the delivery callback:
 *
 *   delivered (offset o)            -> "admitted, your order is being created"
 *   THROTTLING_QUOTA_EXCEEDED (89)  -> "sold out, try later"   (at once)
 *
 * The topic carries a produce rate limit (docs/flow-control.md), so the
 * broker's token bucket admits `burst` requests at once and then exactly
 * `rate` per second and rejects the rest within microseconds.  The gateway
 * does no rate limiting of its own: the broker is the single gate, shared by
 * every gateway instance.
 *
 * One user = one produce request.  The broker charges a request of n
 * messages n tokens, all or nothing, so batching several users into one
 * request would admit or reject them together.  The producers are therefore
 * configured with linger.ms=0 and batch.num.messages=1, and the topic has one
 * partition (a request carries at most one batch per partition; with several
 * partitions one request could still hold several users).  To keep up with
 * 100,000 requests/s without batching, the gateway spreads users over
 * several producers (--producers, one connection and I/O thread each).
 *
 *   gateway -b 127.0.0.1:9092 -t seckill -n 100000 -d 1000 --twice 10
 *
 * Prints offered/admitted/rejected counts, the admitted rate against the
 * topic's configured rate (read back with DescribeConfigs), and the reject
 * latency (produce() to delivery callback) p50/p99/p99.9.  --stats FILE also
 * writes the figures as shell variables (used by run.sh).
 * Exit status: 0 ok, 1 error (a request failed with anything but 89, or the
 * admitted count broke the bucket's bound), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice.h>

#define MAX_PRODUCERS 64

/* One buy request of one simulated user. */
struct buy {
	uint32_t user_id;
	uint32_t request_id;
	int64_t t_sent_ns;   /* just before sluice_produce() */
	int64_t t_answer_ns; /* in the delivery callback */
	int64_t offset;      /* where the admitted request landed */
	sluice_err_t err;
	bool answered;
};


struct gateway {
	const char *brokers;
	const char *topic;
	long nreq;
	long duration_ms;
	int twice_pct;
	int nproducers;
	int batch; /* users per produce request at most (1 = per-user admission) */
	unsigned seed;
	bool verbose;
	const char *stats_path;

	struct buy *buys;
	sluice_producer_t *prod[MAX_PRODUCERS];
	long answered;
	long admitted;
	long rejected;
	long failed;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* xorshift32: a tiny deterministic generator for the simulated users. */
static uint32_t rnd(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/* ---- answering the user: the delivery callback ---- */

static void on_delivery(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx)
{
	struct gateway *gw = ctx;
	struct buy *b = dr->opaque;

	(void)p;
	b->t_answer_ns = now_ns();
	b->err = dr->err;
	b->offset = dr->offset;
	b->answered = true;
	if (dr->err == SLUICE_ERR_NO_ERROR) {
		gw->admitted++;
		if (gw->verbose)
			printf("user %u: admitted, order queued (offset %" PRId64 ")\n", b->user_id,
			       dr->offset);
	} else if (dr->err == SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED) {
		gw->rejected++;
		if (gw->verbose)
			printf("user %u: sold out, try later\n", b->user_id);
	} else {
		/* Anything else (broker gone, time-out): tell the user to retry;
		 * the request may or may not have been stored. */
		if (++gw->failed <= 5)
			fprintf(stderr, "gateway: user %u: %s\n", b->user_id,
				sluice_err2str(dr->err));
	}
	gw->answered++;
}

/* Serves the delivery reports that are ready, without waiting.  Returns
 * the number of users answered. */
static int serve_answers(struct gateway *gw)
{
	int n = 0;

	for (int i = 0; i < gw->nproducers; i++)
		n += sluice_producer_poll(gw->prod[i], 0);
	return n;
}

/* ---- set-up ---- */

static int conf_set(sluice_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];

	if (sluice_conf_set(conf, k, v, errstr, sizeof(errstr))) {
		fprintf(stderr, "gateway: %s=%s: %s\n", k, v, errstr);
		return -1;
	}
	return 0;
}

static sluice_producer_t *make_producer(struct gateway *gw, int i)
{
	char errstr[512], id[64], nbatch[16];
	sluice_conf_t *conf = sluice_conf_new();
	sluice_producer_t *p;

	if (!conf)
		return NULL;
	snprintf(id, sizeof(id), "flash-sale-gateway-%d", i);
	snprintf(nbatch, sizeof(nbatch), "%d", gw->batch);
	if (conf_set(conf, "bootstrap.servers", gw->brokers) || conf_set(conf, "client.id", id) ||
	    /* batch 1 (default): one user per produce request, so admission is
	     * per user.  --batch n: up to n users per request, admitted or
	     * rejected together (n tokens, all or nothing), 1 ms linger. */
	    conf_set(conf, "linger.ms", gw->batch > 1 ? "1" : "0") ||
	    conf_set(conf, "batch.num.messages", nbatch) ||
	    /* each open batch owns a batch.size buffer: keep it small */
	    conf_set(conf, "batch.size", "1024") ||
	    /* single node: acks=1 is the same as all; no fsync wait by default */
	    conf_set(conf, "acks", "1") ||
	    /* a user waits at most this long for an answer */
	    conf_set(conf, "message.timeout.ms", "10000") ||
	    conf_set(conf, "request.timeout.ms", "10000")) {
		sluice_conf_destroy(conf);
		return NULL;
	}
	sluice_conf_set_delivery_cb(conf, on_delivery, gw);
	p = sluice_producer_new(conf, errstr, sizeof(errstr));
	if (!p) {
		fprintf(stderr, "gateway: producer: %s\n", errstr);
		sluice_conf_destroy(conf);
	}
	return p;
}

/* The topic's gate settings, as the broker reports them. */
struct gate_conf {
	double rate;  /* produce.rate.messages, 0 = unlimited */
	double burst; /* produce.burst.messages (0 = one second's worth) */
	long queue_wait_ms;
	bool known;
};

static void read_gate_conf(struct gateway *gw, struct gate_conf *gc)
{
	char errstr[512] = "";
	sluice_conf_t *conf = sluice_conf_new();
	sluice_admin_t *a;
	sluice_config_entry_t *cfg = NULL;
	size_t n = 0;

	memset(gc, 0, sizeof(*gc));
	if (!conf || conf_set(conf, "bootstrap.servers", gw->brokers)) {
		sluice_conf_destroy(conf);
		return;
	}
	a = sluice_admin_new(conf, errstr, sizeof(errstr));
	if (!a) {
		sluice_conf_destroy(conf);
		return;
	}
	if (sluice_admin_describe_topic_configs(a, gw->topic, &cfg, &n, 10000, errstr,
						sizeof(errstr)) == SLUICE_ERR_NO_ERROR) {
		gc->known = true;
		for (size_t i = 0; i < n; i++) {
			if (!cfg[i].value)
				continue;
			if (!strcmp(cfg[i].name, "produce.rate.messages"))
				gc->rate = strtod(cfg[i].value, NULL);
			else if (!strcmp(cfg[i].name, "produce.burst.messages"))
				gc->burst = strtod(cfg[i].value, NULL);
			else if (!strcmp(cfg[i].name, "produce.queue.max.wait.ms"))
				gc->queue_wait_ms = strtol(cfg[i].value, NULL, 10);
		}
		sluice_config_entries_destroy(cfg, n);
		if (gc->rate > 0 && gc->burst <= 0)
			gc->burst = gc->rate >= 1 ? gc->rate : 1; /* broker default */
	} else {
		fprintf(stderr, "gateway: DescribeConfigs %s: %s\n", gw->topic, errstr);
	}
	sluice_admin_destroy(a);
}

/* ---- statistics ---- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* q-quantile (nearest rank) of a sorted array, in ms. */
static double quantile_ms(const int64_t *v, long n, double q)
{
	long i;

	if (n <= 0)
		return 0;
	i = (long)(q * (double)n + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)v[i] / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: gateway [options]\n"
		"Flash-sale gateway with simulated users: publishes each buy request to TOPIC\n"
		"(rate-limited by the broker) and answers each user from the delivery callback.\n"
		"  -b, --brokers HOST:PORT  broker (default: $SLUICE_BROKERS or 127.0.0.1:9092)\n"
		"  -t, --topic NAME         topic (default: seckill)\n"
		"  -n, --requests N         buy requests offered (default: 100000)\n"
		"  -d, --duration-ms MS     spread over this long (default: 1000)\n"
		"  -w, --twice PCT          share of requests that are a second try by a user\n"
		"                           who already asked (default: 10)\n"
		"  -P, --producers K        producers (connections) to spread users over\n"
		"                           (default: 4)\n"
		"  -B, --batch N            users per produce request at most (default: 1;\n"
		"                           N > 1: admitted or rejected together, linger 1 ms)\n"
		"  -s, --seed N             seed of the simulated users (default: 1)\n"
		"      --stats FILE         also write the figures as shell variables\n"
		"  -v, --verbose            print every user's answer\n");
}

static int parse_args(struct gateway *gw, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "topic", required_argument, NULL, 't' },
		{ "requests", required_argument, NULL, 'n' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "twice", required_argument, NULL, 'w' },
		{ "producers", required_argument, NULL, 'P' },
		{ "batch", required_argument, NULL, 'B' },
		{ "seed", required_argument, NULL, 's' },
		{ "stats", required_argument, NULL, 'S' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	gw->brokers = getenv("SLUICE_BROKERS") ? getenv("SLUICE_BROKERS") : "127.0.0.1:9092";
	gw->topic = "seckill";
	gw->nreq = 100000;
	gw->duration_ms = 1000;
	gw->twice_pct = 10;
	gw->nproducers = 4;
	gw->batch = 1;
	gw->seed = 1;
	while ((c = getopt_long(argc, argv, "b:t:n:d:w:P:B:s:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'b': gw->brokers = optarg; break;
		case 't': gw->topic = optarg; break;
		case 'n': gw->nreq = strtol(optarg, NULL, 10); break;
		case 'd': gw->duration_ms = strtol(optarg, NULL, 10); break;
		case 'w': gw->twice_pct = atoi(optarg); break;
		case 'P': gw->nproducers = atoi(optarg); break;
		case 'B': gw->batch = atoi(optarg); break;
		case 's': gw->seed = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'S': gw->stats_path = optarg; break;
		case 'v': gw->verbose = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind != argc || gw->nreq < 1 || gw->nreq > 100000000 || gw->duration_ms < 0 ||
	    gw->twice_pct < 0 || gw->twice_pct > 90 || gw->nproducers < 1 ||
	    gw->nproducers > MAX_PRODUCERS || gw->batch < 1 || gw->batch > 100000) {
		usage(stderr);
		return -1;
	}
	if (!gw->seed)
		gw->seed = 1;
	return 0;
}

/* The simulated users: request i belongs to a new user, or (twice_pct %)
 * to a user who already asked (they press "buy" again). */
static void make_users(struct gateway *gw, long *distinct)
{
	uint32_t s = gw->seed, next_user = 1;

	for (long i = 0; i < gw->nreq; i++) {
		struct buy *b = &gw->buys[i];

		b->request_id = (uint32_t)i + 1;
		b->offset = -1;
		if (i > 0 && (int)(rnd(&s) % 100) < gw->twice_pct)
			b->user_id = gw->buys[rnd(&s) % (uint32_t)i].user_id;
		else
			b->user_id = next_user++;
	}
	*distinct = next_user - 1;
}

int main(int argc, char **argv)
{
	struct gateway gw;
	struct gate_conf gc;
	long distinct_users = 0, offered = 0, queue_errors = 0;
	long nrej = 0, nadm = 0, admitted_users = 0;
	int64_t *rej_lat = NULL, *adm_lat = NULL, t_start, t_offered, t_end, deadline;
	unsigned char *seen = NULL;
	double window_s, bound = 0;
	int rc = 0;

	memset(&gw, 0, sizeof(gw));
	if (parse_args(&gw, argc, argv))
		return 2;
	gw.buys = calloc((size_t)gw.nreq, sizeof(*gw.buys));
	rej_lat = malloc((size_t)gw.nreq * sizeof(*rej_lat));
	adm_lat = malloc((size_t)gw.nreq * sizeof(*adm_lat));
	if (!gw.buys || !rej_lat || !adm_lat) {
		fprintf(stderr, "gateway: out of memory\n");
		return 1;
	}
	make_users(&gw, &distinct_users);
	seen = calloc((size_t)distinct_users + 1, 1);
	if (!seen) {
		fprintf(stderr, "gateway: out of memory\n");
		return 1;
	}
	read_gate_conf(&gw, &gc);
	if (gc.known && gc.rate <= 0)
		fprintf(stderr, "gateway: warning: topic %s has no produce.rate.messages limit\n",
			gw.topic);

	for (int i = 0; i < gw.nproducers; i++) {
		gw.prod[i] = make_producer(&gw, i);
		if (!gw.prod[i]) {
			rc = 1;
			goto out;
		}
	}
	/* The sale opens: offer request i at t_start + i * duration / N.  One
	 * thread does everything: offers what is due, answers the users whose
	 * delivery reports are ready, sleeps 0.1 ms when there is nothing to do
	 * (callbacks run on this thread; the producers' I/O threads do the
	 * network). */
	t_start = now_ns();
	while (offered < gw.nreq) {
		int64_t el = now_ns() - t_start;
		long due = gw.duration_ms ? (long)((double)el / 1e6 / (double)gw.duration_ms *
						   (double)gw.nreq) + 1
					  : gw.nreq;

		if (due > gw.nreq)
			due = gw.nreq;
		for (; offered < due; offered++) {
			struct buy *b = &gw.buys[offered];
			char key[16], val[64];
			int klen = snprintf(key, sizeof(key), "%u", b->user_id);
			int vlen = snprintf(val, sizeof(val), "user=%u request=%u item=sku-1",
					    b->user_id, b->request_id);
			sluice_err_t err;

			b->t_sent_ns = now_ns();
			err = sluice_produce(gw.prod[offered % gw.nproducers], gw.topic, 0, key,
					     (size_t)klen, val, (size_t)vlen, NULL, 0, b);
			if (err) {
				/* Not queued, no callback will come: answer now. */
				b->t_answer_ns = now_ns();
				b->err = err;
				b->answered = true;
				gw.failed++;
				gw.answered++;
				if (++queue_errors <= 5)
					fprintf(stderr, "gateway: produce: %s\n", sluice_err2str(err));
			}
		}
		if (!serve_answers(&gw) && offered < gw.nreq)
			sleep_ns(100000);
	}
	t_offered = now_ns();

	/* Every user gets an answer (message.timeout.ms bounds the wait). */
	deadline = now_ns() + 30 * 1000000000LL;
	while (gw.answered < gw.nreq && now_ns() < deadline)
		if (!serve_answers(&gw))
			sleep_ns(100000);
	t_end = now_ns();
	if (gw.answered < gw.nreq) {
		fprintf(stderr, "gateway: %ld users got no answer within 30 s\n",
			gw.nreq - gw.answered);
		rc = 1;
	}

out:
	for (int i = 0; i < gw.nproducers; i++)
		sluice_producer_destroy(gw.prod[i]); /* serves any late callback */
	if (rc)
		goto done;

	for (long i = 0; i < gw.nreq; i++) {
		struct buy *b = &gw.buys[i];

		if (!b->answered)
			continue;
		if (b->err == SLUICE_ERR_NO_ERROR) {
			adm_lat[nadm++] = b->t_answer_ns - b->t_sent_ns;
			if (!seen[b->user_id]) {
				seen[b->user_id] = 1;
				admitted_users++;
			}
		} else if (b->err == SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED) {
			rej_lat[nrej++] = b->t_answer_ns - b->t_sent_ns;
		}
	}
	qsort(rej_lat, (size_t)nrej, sizeof(*rej_lat), cmp_i64);
	qsort(adm_lat, (size_t)nadm, sizeof(*adm_lat), cmp_i64);
	/* The broker saw every admitted request between our first send and our
	 * last answer, so the bucket bound over that window holds for it. */
	window_s = (double)(t_end - t_start) / 1e9;
	if (gc.rate > 0)
		bound = gc.burst + gc.rate * window_s;

	printf("flash sale on topic %s (%d producers, linger.ms=%d, batch.num.messages=%d)\n",
	       gw.topic, gw.nproducers, gw.batch > 1 ? 1 : 0, gw.batch);
	printf("  offered          %8ld requests from %ld distinct users in %.3f s (%.0f req/s)\n",
	       gw.nreq, distinct_users, (double)(t_offered - t_start) / 1e9,
	       (double)gw.nreq / ((double)(t_offered - t_start) / 1e9));
	printf("  admitted         %8ld requests (%ld distinct users)\n", nadm, admitted_users);
	printf("  rejected         %8ld \"sold out, try later\" (THROTTLING_QUOTA_EXCEEDED)\n",
	       nrej);
	printf("  failed           %8ld (other errors)\n", gw.failed);
	if (gc.rate > 0) {
		printf("  configured gate  rate %g msgs/s, burst %g, queue.max.wait.ms %ld\n", gc.rate,
		       gc.burst, gc.queue_wait_ms);
		printf("  admitted rate    %.1f msgs/s over %.3f s; after the burst %.1f msgs/s "
		       "(configured %g)\n",
		       (double)nadm / window_s, window_s,
		       nadm > gc.burst ? ((double)nadm - gc.burst) / window_s : 0.0, gc.rate);
		printf("  bucket bound     burst + rate x T = %.1f  -> admitted %ld %s\n", bound, nadm,
		       (double)nadm <= bound ? "<= bound: ok" : "> bound: VIOLATION");
	}
	printf("  reject latency   p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms "
	       "(produce() -> callback)\n",
	       quantile_ms(rej_lat, nrej, 0.50), quantile_ms(rej_lat, nrej, 0.99),
	       quantile_ms(rej_lat, nrej, 0.999), nrej ? (double)rej_lat[nrej - 1] / 1e6 : 0.0);
	printf("  admit latency    p50 %.3f ms  p99 %.3f ms\n", quantile_ms(adm_lat, nadm, 0.50),
	       quantile_ms(adm_lat, nadm, 0.99));
	for (long i = 0, shown_a = 0, shown_r = 0; i < gw.nreq && (shown_a < 1 || shown_r < 1);
	     i++) {
		struct buy *b = &gw.buys[i];

		if (!b->answered)
			continue;
		if (!shown_a && b->err == SLUICE_ERR_NO_ERROR) {
			printf("  e.g. user %u: \"admitted, your order is being created\" (offset %" PRId64
			       ", %.3f ms)\n",
			       b->user_id, b->offset, (double)(b->t_answer_ns - b->t_sent_ns) / 1e6);
			shown_a = 1;
		} else if (!shown_r && b->err == SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED) {
			printf("  e.g. user %u: \"sold out, try later\" (%.3f ms)\n", b->user_id,
			       (double)(b->t_answer_ns - b->t_sent_ns) / 1e6);
			shown_r = 1;
		}
	}
	if (gw.failed)
		rc = 1;
	if (gc.rate > 0 && (double)nadm > bound)
		rc = 1;

	if (gw.stats_path) {
		FILE *f = fopen(gw.stats_path, "w");

		if (!f) {
			fprintf(stderr, "gateway: %s: %s\n", gw.stats_path, strerror(errno));
			rc = 1;
		} else {
			fprintf(f,
				"OFFERED=%ld\nDISTINCT_USERS=%ld\nADMITTED=%ld\nADMITTED_USERS=%ld\n"
				"REJECTED=%ld\nFAILED=%ld\nWINDOW_S=%.3f\nRATE=%g\nBURST=%g\n"
				"BOUND=%.1f\nADMITTED_RATE=%.1f\nREJ_P50_MS=%.3f\nREJ_P99_MS=%.3f\n"
				"REJ_P999_MS=%.3f\n",
				gw.nreq, distinct_users, nadm, admitted_users, nrej,
				gw.failed, window_s, gc.rate, gc.burst, bound,
				(double)nadm / window_s, quantile_ms(rej_lat, nrej, 0.50),
				quantile_ms(rej_lat, nrej, 0.99), quantile_ms(rej_lat, nrej, 0.999));
			fclose(f);
		}
	}
done:
	free(seen);
	free(rej_lat);
	free(adm_lat);
	free(gw.buys);
	return rc;
}
