/*
 * rdkafka_produce.c — librdkafka producer benchmark, the counterpart of
 * `sluice bench produce` (client/cli_bench.c) for docs/benchmarks.md:
 * same defaults, same measurement, same summary line, so the two figures
 * of one run compare libsluice with librdkafka on the same broker.
 *
 *   rdkafka_produce -b HOST:PORT [-t TOPIC] [-s SIZE] [-n COUNT] [-a ACKS]
 *                   [-l LINGER_MS] [-B BATCH_BYTES] [-Z] [-X key=value]...
 *
 * Defaults as `sluice bench produce`: topic sluice-bench, 100-byte values
 * of 'x', no key, 1,000,000 messages, acks=1, linger.ms=5, batch.size
 * 1,000,000 bytes, and libsluice's queue limits (1,000,000 messages,
 * 1 GiB) and batch.num.messages (100,000) instead of librdkafka's smaller
 * ones.  Values are copied at produce time (RD_KAFKA_MSG_F_COPY), as
 * sluice_produce() copies them; -Z passes them by reference (msgflags 0,
 * the buffer stays valid), like `sluice bench produce -Z`
 * (SLUICE_MSG_F_NOCOPY).  The topic must exist (or be auto-created by the
 * broker).
 * Measured: from the first produce call until every delivery report has
 * been served (rd_kafka_flush); latency = produce call to delivery report,
 * sampled 1 in 16.  Prints
 *   produce: N msgs of S bytes in T s: X msgs/s, Y MB/s; latency p50 ...
 * Exit 0, 1 when a message was not delivered or librdkafka failed, 2 usage.
 *
 * Built by bench/meson.build when librdkafka is found
 * (build-dir/bench/rdkafka_produce), or by hand:
 *   cc -O2 -Iclient -o rdkafka_produce bench/rdkafka_produce.c $(pkg-config --cflags --libs rdkafka) -lm
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "lathist.h"

#define MAX_X 32

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct state {
	struct lathist h;
	long long delivered, failed;
	rd_kafka_resp_err_t first_err;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct state *st = opaque;

	(void)rk;
	if (m->err) {
		if (!st->failed)
			st->first_err = m->err;
		st->failed++;
		return;
	}
	st->delivered++;
	if ((st->delivered & 15) == 0)
		lathist_add(&st->h, (now_ns() - (int64_t)(intptr_t)m->_private) / 1000);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: rdkafka_produce -b HOST:PORT [-t TOPIC] [-s SIZE] [-n COUNT] [-a ACKS]\n"
		   "                       [-l LINGER_MS] [-B BATCH_BYTES] [-Z] [-X key=value]...\n");
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];

	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "rdkafka_produce: %s=%s: %s\n", k, v, errstr);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *broker = NULL, *topic = "sluice-bench", *acks = "1", *x[MAX_X];
	long size = 100, linger = 5, batch = 1000000;
	long long count = 1000000, sent = 0, last_n = 0;
	int nx = 0, opt, rc = 0, msgflags = RD_KAFKA_MSG_F_COPY;
	char errstr[512], v[32];
	struct state *st = calloc(1, sizeof(*st));
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char *val;
	int64_t t0, last;
	double secs;

	while ((opt = getopt(argc, argv, "b:t:s:n:a:l:B:ZX:h")) != -1) {
		switch (opt) {
		case 'b': broker = optarg; break;
		case 't': topic = optarg; break;
		case 's': size = atol(optarg); break;
		case 'n': count = atoll(optarg); break;
		case 'a': acks = optarg; break;
		case 'l': linger = atol(optarg); break;
		case 'B': batch = atol(optarg); break;
		case 'Z': msgflags = 0; break;
		case 'X':
			if (nx == MAX_X || !strchr(optarg, '=')) {
				usage(stderr);
				return 2;
			}
			x[nx++] = optarg;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!broker || optind != argc || size < 0 || count <= 0 || linger < 0 || batch <= 0 || !st) {
		usage(stderr);
		return 2;
	}
	val = malloc((size_t)size + 1);
	if (!val)
		return 1;
	memset(val, 'x', (size_t)size);
	conf = rd_kafka_conf_new();
	snprintf(v, sizeof(v), "%ld", linger);
	if (set(conf, "bootstrap.servers", broker) || set(conf, "acks", acks) ||
	    set(conf, "linger.ms", v) || set(conf, "batch.num.messages", "100000") ||
	    set(conf, "queue.buffering.max.messages", "1000000") ||
	    set(conf, "queue.buffering.max.kbytes", "1048576"))
		return 2;
	snprintf(v, sizeof(v), "%ld", batch);
	if (set(conf, "batch.size", v) ||
	    (batch > 1000000 && set(conf, "message.max.bytes", v)))
		return 2;
	for (int i = 0; i < nx; i++) {
		char kv[512], *eq;

		snprintf(kv, sizeof(kv), "%s", x[i]);
		eq = strchr(kv, '=');
		*eq = '\0';
		if (set(conf, kv, eq + 1))
			return 2;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	rd_kafka_conf_set_opaque(conf, st);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk) {
		fprintf(stderr, "rdkafka_produce: %s\n", errstr);
		return 1;
	}
	t0 = last = now_ns();
	while (sent < count) {
		int64_t t = now_ns();
		rd_kafka_resp_err_t err =
			rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(val, (size_t)size),
					  RD_KAFKA_V_MSGFLAGS(msgflags),
					  RD_KAFKA_V_OPAQUE((void *)(intptr_t)t), RD_KAFKA_V_END);

		if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			rd_kafka_poll(rk, 1);
			continue;
		}
		if (err) {
			fprintf(stderr, "rdkafka_produce: produce: %s\n", rd_kafka_err2str(err));
			rc = 1;
			break;
		}
		sent++;
		if ((sent & 1023) == 0) {
			rd_kafka_poll(rk, 0);
			if (t - last >= 1000000000) {
				fprintf(stderr, "rdkafka produce: %lld sent, %lld delivered, %.0f msgs/s\n",
					sent, st->delivered,
					(double)(sent - last_n) * 1e9 / (double)(t - last));
				last = t;
				last_n = sent;
			}
		}
	}
	rd_kafka_flush(rk, 60000);
	secs = (double)(now_ns() - t0) / 1e9;
	printf("produce: %lld msgs of %ld bytes in %.2f s: %.0f msgs/s, %.1f MB/s", st->delivered,
	       size, secs, (double)st->delivered / secs,
	       (double)st->delivered * (double)size / secs / 1e6);
	if (st->h.count)
		printf("; latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%" PRIu64 " samples)",
		       lathist_pct(&st->h, 50), lathist_pct(&st->h, 99), lathist_pct(&st->h, 99.9),
		       st->h.count);
	printf(" [librdkafka %s]\n", rd_kafka_version_str());
	if (st->failed || st->delivered != sent) {
		fprintf(stderr, "rdkafka_produce: %lld not delivered: %s\n", sent - st->delivered,
			st->failed ? rd_kafka_err2str(st->first_err) : "flush timed out");
		rc = 1;
	}
	rd_kafka_destroy(rk);
	free(val);
	free(st);
	return rc;
}
