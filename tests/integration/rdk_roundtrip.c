/*
 * rdk_roundtrip: librdkafka client used by the integration tests to prove
 * that sluiced works with a real Kafka client.
 *
 * Usage: rdk_roundtrip [-X key=value]... MODE ARGS...
 *
 *   roundtrip BROKER TOPIC N
 *       Produce N messages (key "k<i>", a value of 0..200 bytes derived from
 *       i, headers h1="<i>" and h2=8 binary bytes) with acks=all, wait for
 *       every delivery report (any error fails), then read the topic from the
 *       beginning with an assigned (group-less) consumer and check every key,
 *       value and header byte, that each message is at the partition/offset
 *       its delivery report gave, per-partition order, no duplicates and
 *       nothing missing.
 *   produce-log BROKER TOPIC N OUTFILE
 *       Produce the values "0", "1", ... "N-1" in order with acks=all and
 *       append the id of each acknowledged message (delivery report OK) to
 *       OUTFILE, one per line, flushing after each, so that a crash test
 *       knows exactly what was acknowledged.
 *   consume-all BROKER TOPIC OUTFILE
 *       Read every partition from the beginning until end-of-partition on
 *       all of them and write the values, one per line, in the order
 *       received (per partition this is offset order).
 *   bench-produce BROKER TOPIC N SIZE
 *       Produce N messages of SIZE bytes (acks=all unless -X acks=...) and
 *       print msgs/s and MB/s.
 *
 * -X key=value sets a librdkafka property on every client created (after
 * the defaults here).  Env RDK_TIMEOUT_S bounds each phase (default 300 s).
 * Exit status 0 = success, 1 = check failed / error, 2 = usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MAX_X 64
#define MAX_ERRORS_SHOWN 20
#define VALUE_MAX 200

static const char *x_conf[MAX_X];
static int x_count;
static double phase_timeout_s = 300.0;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "rdk_roundtrip: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static void conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
	char errstr[512];
	if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		die("config %s=%s: %s", key, val, errstr);
}

static void conf_apply_x(rd_kafka_conf_t *conf)
{
	for (int i = 0; i < x_count; i++) {
		char buf[1024];
		snprintf(buf, sizeof(buf), "%s", x_conf[i]);
		char *eq = strchr(buf, '=');
		if (!eq)
			die("-X %s: expected key=value", x_conf[i]);
		*eq = '\0';
		conf_set(conf, buf, eq + 1);
	}
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	fprintf(stderr, "%%%d|%s| %s\n", level, fac, buf);
}

/* ---- deterministic message contents ---------------------------------- */

static size_t value_len(uint64_t i)
{
	return (size_t)((i * 7919u + 13u) % (VALUE_MAX + 1));
}

static void value_fill(uint64_t i, unsigned char *buf, size_t len)
{
	for (size_t j = 0; j < len; j++)
		buf[j] = (unsigned char)(i * 131u + j * 7u + (j >> 3) + (i >> 9));
}

static void h2_fill(uint64_t i, unsigned char out[8])
{
	uint32_t a = (uint32_t)i, b = ~(uint32_t)i;
	for (int k = 0; k < 4; k++) {
		out[k] = (unsigned char)(a >> (24 - 8 * k));
		out[4 + k] = (unsigned char)(b >> (24 - 8 * k));
	}
}

/* ---- producer ----------------------------------------------------------- */

struct dr_state {
	uint64_t n;
	int8_t *part;       /* partition of message i, -1 = no report yet */
	int64_t *off;       /* offset of message i */
	uint64_t ok;
	uint64_t failed;
	uint64_t dup_reports;
	rd_kafka_resp_err_t first_err;
	FILE *log;          /* produce-log: acked ids go here */
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct dr_state *st = opaque;
	uint64_t i = (uint64_t)(uintptr_t)m->_private;
	(void)rk;
	if (m->err) {
		if (st->failed < MAX_ERRORS_SHOWN)
			fprintf(stderr, "delivery of message %" PRIu64 " failed: %s\n", i,
				rd_kafka_err2str(m->err));
		if (!st->first_err)
			st->first_err = m->err;
		st->failed++;
		return;
	}
	st->ok++;
	if (st->log) {
		fprintf(st->log, "%" PRIu64 "\n", i);
		fflush(st->log);
	}
	if (st->part && i < st->n) {
		if (st->part[i] != -1)
			st->dup_reports++;
		st->part[i] = (int8_t)m->partition;
		st->off[i] = m->offset;
	}
}

static rd_kafka_t *producer_new(const char *broker, struct dr_state *st)
{
	char errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	conf_set(conf, "bootstrap.servers", broker);
	conf_set(conf, "acks", "all");
	conf_set(conf, "linger.ms", "5");
	conf_set(conf, "batch.num.messages", "10000");
	conf_set(conf, "batch.size", "1000000");
	conf_set(conf, "queue.buffering.max.messages", "1000000");
	conf_set(conf, "queue.buffering.max.kbytes", "1048576");
	conf_set(conf, "message.timeout.ms", "60000");
	conf_set(conf, "socket.timeout.ms", "30000");
	conf_apply_x(conf);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_opaque(conf, st);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk)
		die("rd_kafka_new(producer): %s", errstr);
	return rk;
}

/* Produce one message, waiting while the local queue is full. */
static void produce_one(rd_kafka_t *rk, const char *topic, uint64_t i,
			const void *key, size_t klen, const void *val, size_t vlen,
			bool with_headers)
{
	double deadline = now_s() + phase_timeout_s;
	for (;;) {
		rd_kafka_resp_err_t err;
		if (with_headers) {
			char h1[24];
			unsigned char h2[8];
			int h1len = snprintf(h1, sizeof(h1), "%" PRIu64, i);
			h2_fill(i, h2);
			err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
						RD_KAFKA_V_KEY(key, klen),
						RD_KAFKA_V_VALUE((void *)val, vlen),
						RD_KAFKA_V_HEADER("h1", h1, h1len),
						RD_KAFKA_V_HEADER("h2", h2, 8),
						RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i),
						RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
						RD_KAFKA_V_END);
		} else {
			err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
						RD_KAFKA_V_KEY(key, klen),
						RD_KAFKA_V_VALUE((void *)val, vlen),
						RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i),
						RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
						RD_KAFKA_V_END);
		}
		if (!err)
			break;
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			die("produce of message %" PRIu64 ": %s", i, rd_kafka_err2str(err));
		if (now_s() > deadline)
			die("local queue stayed full for %.0f s at message %" PRIu64,
			    phase_timeout_s, i);
		rd_kafka_poll(rk, 10);
	}
	if ((i & 1023) == 0)
		rd_kafka_poll(rk, 0);
}

static void producer_flush(rd_kafka_t *rk, const char *what)
{
	rd_kafka_resp_err_t err = rd_kafka_flush(rk, (int)(phase_timeout_s * 1000));
	if (err)
		die("%s: flush: %s (%d messages still queued)", what,
		    rd_kafka_err2str(err), rd_kafka_outq_len(rk));
}

/* ---- consumer (legacy queue API: no group, no coordinator) ------------- */

struct consumer {
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	rd_kafka_queue_t *q;
	int32_t nparts;
};

static int32_t topic_partitions(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const char *topic)
{
	double deadline = now_s() + 30;
	for (;;) {
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
		int32_t n = -1;
		if (!err && md->topic_cnt == 1 && !md->topics[0].err)
			n = md->topics[0].partition_cnt;
		else if (!err && md->topic_cnt == 1)
			err = md->topics[0].err;
		if (md)
			rd_kafka_metadata_destroy(md);
		if (n > 0)
			return n;
		if (now_s() > deadline)
			die("metadata for topic %s: %s", topic,
			    err ? rd_kafka_err2str(err) : "no partitions");
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void consumer_open(struct consumer *c, const char *broker, const char *topic)
{
	char errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	conf_set(conf, "bootstrap.servers", broker);
	conf_set(conf, "enable.partition.eof", "true");
	conf_set(conf, "enable.auto.commit", "false");
	conf_set(conf, "enable.auto.offset.store", "false");
	conf_set(conf, "fetch.wait.max.ms", "100");
	conf_set(conf, "fetch.message.max.bytes", "4194304");
	conf_set(conf, "queued.min.messages", "200000");
	conf_set(conf, "socket.timeout.ms", "30000");
	conf_apply_x(conf);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!c->rk)
		die("rd_kafka_new(consumer): %s", errstr);
	c->rkt = rd_kafka_topic_new(c->rk, topic, NULL);
	if (!c->rkt)
		die("rd_kafka_topic_new(%s): %s", topic,
		    rd_kafka_err2str(rd_kafka_last_error()));
	c->nparts = topic_partitions(c->rk, c->rkt, topic);
	c->q = rd_kafka_queue_new(c->rk);
	for (int32_t p = 0; p < c->nparts; p++)
		if (rd_kafka_consume_start_queue(c->rkt, p, RD_KAFKA_OFFSET_BEGINNING, c->q) == -1)
			die("consume_start %s [%" PRId32 "]: %s", topic, p,
			    rd_kafka_err2str(rd_kafka_last_error()));
}

static void consumer_close(struct consumer *c)
{
	for (int32_t p = 0; p < c->nparts; p++)
		rd_kafka_consume_stop(c->rkt, p);
	rd_kafka_queue_destroy(c->q);
	rd_kafka_topic_destroy(c->rkt);
	rd_kafka_destroy(c->rk);
}

/* ---- roundtrip ---------------------------------------------------------- */

static long parse_count(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0)
		die("bad %s '%s'", what, s);
	return v;
}

static int mode_roundtrip(const char *broker, const char *topic, uint64_t n)
{
	struct dr_state st = { 0 };
	st.n = n;
	st.part = malloc(n ? n : 1);
	st.off = malloc((n ? n : 1) * sizeof(*st.off));
	if (!st.part || !st.off)
		die("out of memory");
	memset(st.part, -1, n);

	/* Produce. */
	double t0 = now_s();
	rd_kafka_t *rk = producer_new(broker, &st);
	unsigned char val[VALUE_MAX + 1];
	for (uint64_t i = 0; i < n; i++) {
		char key[24];
		int klen = snprintf(key, sizeof(key), "k%" PRIu64, i);
		size_t vlen = value_len(i);
		value_fill(i, val, vlen);
		produce_one(rk, topic, i, key, (size_t)klen, val, vlen, true);
	}
	producer_flush(rk, "roundtrip produce");
	rd_kafka_destroy(rk);
	double t1 = now_s();
	fprintf(stderr, "produced %" PRIu64 " messages in %.2f s (%.0f msgs/s): %" PRIu64
		" acked, %" PRIu64 " failed\n", n, t1 - t0, n / (t1 - t0 + 1e-9), st.ok, st.failed);
	if (st.failed || st.ok != n || st.dup_reports)
		die("produce: %" PRIu64 " ok, %" PRIu64 " failed (first error: %s), "
		    "%" PRIu64 " duplicate reports, expected %" PRIu64 " ok",
		    st.ok, st.failed, rd_kafka_err2str(st.first_err), st.dup_reports, n);

	/* Per-partition expectations from the delivery reports. */
	int32_t maxp = 0;
	for (uint64_t i = 0; i < n; i++)
		if (st.part[i] + 1 > maxp)
			maxp = st.part[i] + 1;

	struct consumer c;
	consumer_open(&c, broker, topic);
	if (maxp > c.nparts)
		die("delivery reports name partition %d but the topic has %d partitions",
		    maxp - 1, c.nparts);
	int64_t *first_off = calloc((size_t)c.nparts, sizeof(int64_t));
	int64_t *next_off = calloc((size_t)c.nparts, sizeof(int64_t));
	int64_t *last_i = calloc((size_t)c.nparts, sizeof(int64_t));
	int64_t *eof_at = calloc((size_t)c.nparts, sizeof(int64_t));
	uint64_t *per_part = calloc((size_t)c.nparts, sizeof(uint64_t));
	uint8_t *seen = calloc(n ? n : 1, 1);
	if (!first_off || !next_off || !last_i || !eof_at || !per_part || !seen)
		die("out of memory");
	for (int32_t p = 0; p < c.nparts; p++) {
		first_off[p] = INT64_MAX;
		next_off[p] = -1;
		last_i[p] = -1;
		eof_at[p] = -1;
	}
	for (uint64_t i = 0; i < n; i++)
		if (st.off[i] < first_off[st.part[i]])
			first_off[st.part[i]] = st.off[i];

	uint64_t got = 0, bad = 0;
#define BAD(...) do { if (bad++ < MAX_ERRORS_SHOWN) { fprintf(stderr, "CHECK FAILED: " __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)
	rd_kafka_message_t *msgs[10000];
	double deadline = now_s() + phase_timeout_s;
	for (;;) {
		bool all_eof = true;
		for (int32_t p = 0; p < c.nparts; p++) {
			int64_t want = next_off[p] == -1 ? (first_off[p] == INT64_MAX ? -2 : first_off[p]) : next_off[p];
			if (eof_at[p] < 0 || (want != -2 && eof_at[p] != want))
				all_eof = false;
		}
		if (got >= n && all_eof)
			break;
		if (now_s() > deadline)
			die("consume: timed out after %.0f s with %" PRIu64 " of %" PRIu64 " messages",
			    phase_timeout_s, got, n);
		ssize_t cnt = rd_kafka_consume_batch_queue(c.q, 500, msgs, 10000);
		if (cnt < 0)
			die("consume_batch_queue: %s", rd_kafka_err2str(rd_kafka_last_error()));
		for (ssize_t k = 0; k < cnt; k++) {
			rd_kafka_message_t *m = msgs[k];
			int32_t p = m->partition;
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				if (p >= 0 && p < c.nparts)
					eof_at[p] = m->offset;
				rd_kafka_message_destroy(m);
				continue;
			}
			if (m->err) {
				BAD("consumer error on partition %d: %s", p, rd_kafka_message_errstr(m));
				rd_kafka_message_destroy(m);
				continue;
			}
			if (p < 0 || p >= c.nparts) {
				BAD("message from unexpected partition %d", p);
				rd_kafka_message_destroy(m);
				continue;
			}
			eof_at[p] = -1;
			got++;
			per_part[p]++;
			/* Key -> i. */
			char kbuf[32];
			uint64_t i = UINT64_MAX;
			if (m->key && m->key_len > 1 && m->key_len < sizeof(kbuf)) {
				memcpy(kbuf, m->key, m->key_len);
				kbuf[m->key_len] = '\0';
				char *end;
				if (kbuf[0] == 'k') {
					unsigned long long v = strtoull(kbuf + 1, &end, 10);
					if (*end == '\0')
						i = v;
				}
			}
			if (i >= n) {
				BAD("partition %d offset %" PRId64 ": unexpected key (len %zu)", p,
				    m->offset, m->key_len);
				rd_kafka_message_destroy(m);
				continue;
			}
			if (seen[i])
				BAD("duplicate message k%" PRIu64 " at partition %d offset %" PRId64, i,
				    p, m->offset);
			seen[i] = 1;
			if (st.part[i] != p || st.off[i] != m->offset)
				BAD("k%" PRIu64 " delivered to %d@%" PRId64 " but consumed at %d@%" PRId64,
				    i, st.part[i], st.off[i], p, m->offset);
			int64_t want = next_off[p] == -1 ? first_off[p] : next_off[p];
			if (m->offset != want)
				BAD("partition %d: offset %" PRId64 " after %" PRId64 " (expected %" PRId64 ")",
				    p, m->offset, next_off[p] - 1, want);
			next_off[p] = m->offset + 1;
			if ((int64_t)i <= last_i[p])
				BAD("partition %d: k%" PRIu64 " after k%" PRId64 " (order broken)", p, i,
				    last_i[p]);
			last_i[p] = (int64_t)i;
			/* Value. */
			size_t vlen = value_len(i);
			value_fill(i, val, vlen);
			if (m->len != vlen || (vlen && (!m->payload || memcmp(m->payload, val, vlen))))
				BAD("k%" PRIu64 ": value differs (len %zu, expected %zu)", i, m->len, vlen);
			/* Headers. */
			rd_kafka_headers_t *hdrs = NULL;
			rd_kafka_resp_err_t herr = rd_kafka_message_headers(m, &hdrs);
			if (herr || !hdrs || rd_kafka_header_cnt(hdrs) != 2) {
				BAD("k%" PRIu64 ": expected 2 headers, got %zu (%s)", i,
				    hdrs ? rd_kafka_header_cnt(hdrs) : 0, rd_kafka_err2str(herr));
			} else {
				const char *name;
				const void *hv;
				size_t hsz;
				char h1[24];
				unsigned char h2[8];
				int h1len = snprintf(h1, sizeof(h1), "%" PRIu64, i);
				h2_fill(i, h2);
				if (rd_kafka_header_get_all(hdrs, 0, &name, &hv, &hsz) ||
				    strcmp(name, "h1") || hsz != (size_t)h1len || memcmp(hv, h1, hsz))
					BAD("k%" PRIu64 ": header h1 differs", i);
				if (rd_kafka_header_get_all(hdrs, 1, &name, &hv, &hsz) ||
				    strcmp(name, "h2") || hsz != 8 || memcmp(hv, h2, 8))
					BAD("k%" PRIu64 ": header h2 differs", i);
			}
			rd_kafka_message_destroy(m);
		}
	}
	double t2 = now_s();
	consumer_close(&c);
	uint64_t missing = 0;
	for (uint64_t i = 0; i < n; i++)
		if (!seen[i]) {
			if (missing < MAX_ERRORS_SHOWN)
				fprintf(stderr, "CHECK FAILED: k%" PRIu64 " (partition %d offset %" PRId64
					") never consumed\n", i, st.part[i], st.off[i]);
			missing++;
		}
	fprintf(stderr, "consumed %" PRIu64 " messages in %.2f s (%.0f msgs/s);", got, t2 - t1,
		got / (t2 - t1 + 1e-9));
	for (int32_t p = 0; p < c.nparts; p++)
		fprintf(stderr, " p%d=%" PRIu64, p, per_part[p]);
	fprintf(stderr, "\n");
	if (bad || missing || got != n) {
		fprintf(stderr, "FAILED: %" PRIu64 " check failures, %" PRIu64 " missing, %" PRIu64
			" consumed of %" PRIu64 "\n", bad, missing, got, n);
		return 1;
	}
	printf("roundtrip OK: %" PRIu64 " messages, produce %.2f s, consume %.2f s\n", n,
	       t1 - t0, t2 - t1);
	free(st.part);
	free(st.off);
	free(first_off);
	free(next_off);
	free(last_i);
	free(eof_at);
	free(per_part);
	free(seen);
	return 0;
#undef BAD
}

/* ---- produce-log -------------------------------------------------------- */

static int mode_produce_log(const char *broker, const char *topic, uint64_t n, const char *outfile)
{
	struct dr_state st = { 0 };
	st.log = fopen(outfile, "a");
	if (!st.log)
		die("open %s: %s", outfile, strerror(errno));
	rd_kafka_t *rk = producer_new(broker, &st);
	for (uint64_t i = 0; i < n; i++) {
		char v[24];
		int vlen = snprintf(v, sizeof(v), "%" PRIu64, i);
		produce_one(rk, topic, i, NULL, 0, v, (size_t)vlen, false);
	}
	rd_kafka_resp_err_t err = rd_kafka_flush(rk, (int)(phase_timeout_s * 1000));
	rd_kafka_destroy(rk);
	fclose(st.log);
	fprintf(stderr, "produce-log: %" PRIu64 " acked, %" PRIu64 " failed of %" PRIu64 "\n",
		st.ok, st.failed, n);
	if (err || st.ok != n)
		return 1;
	return 0;
}

/* ---- consume-all -------------------------------------------------------- */

static int mode_consume_all(const char *broker, const char *topic, const char *outfile)
{
	FILE *out = fopen(outfile, "w");
	if (!out)
		die("open %s: %s", outfile, strerror(errno));
	struct consumer c;
	consumer_open(&c, broker, topic);
	bool *eof = calloc((size_t)c.nparts, sizeof(bool));
	uint64_t got = 0;
	int errors = 0;
	rd_kafka_message_t *msgs[10000];
	double deadline = now_s() + phase_timeout_s;
	for (;;) {
		bool all = true;
		for (int32_t p = 0; p < c.nparts; p++)
			all = all && eof[p];
		if (all)
			break;
		if (now_s() > deadline)
			die("consume-all: timed out after %.0f s (%" PRIu64 " messages)",
			    phase_timeout_s, got);
		ssize_t cnt = rd_kafka_consume_batch_queue(c.q, 500, msgs, 10000);
		if (cnt < 0)
			die("consume_batch_queue: %s", rd_kafka_err2str(rd_kafka_last_error()));
		for (ssize_t k = 0; k < cnt; k++) {
			rd_kafka_message_t *m = msgs[k];
			int32_t p = m->partition;
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				if (p >= 0 && p < c.nparts)
					eof[p] = true;
			} else if (m->err) {
				fprintf(stderr, "consumer error on partition %d: %s\n", p,
					rd_kafka_message_errstr(m));
				errors++;
			} else {
				if (p >= 0 && p < c.nparts)
					eof[p] = false;
				if (m->len)
					fwrite(m->payload, 1, m->len, out);
				fputc('\n', out);
				got++;
			}
			rd_kafka_message_destroy(m);
		}
	}
	consumer_close(&c);
	free(eof);
	if (fclose(out))
		die("write %s: %s", outfile, strerror(errno));
	fprintf(stderr, "consume-all: %" PRIu64 " messages, %d errors\n", got, errors);
	return errors ? 1 : 0;
}

/* ---- bench-produce ------------------------------------------------------ */

static int mode_bench_produce(const char *broker, const char *topic, uint64_t n, size_t size)
{
	struct dr_state st = { 0 };
	unsigned char *val = malloc(size ? size : 1);
	if (!val)
		die("out of memory");
	for (size_t j = 0; j < size; j++)
		val[j] = (unsigned char)('a' + j % 26);
	rd_kafka_t *rk = producer_new(broker, &st);
	/* Warm up: metadata and connection before the clock starts. */
	produce_one(rk, topic, 0, NULL, 0, val, size, false);
	producer_flush(rk, "bench warm-up");
	uint64_t base_ok = st.ok;
	double t0 = now_s();
	for (uint64_t i = 0; i < n; i++)
		produce_one(rk, topic, i, NULL, 0, val, size, false);
	producer_flush(rk, "bench-produce");
	double t = now_s() - t0;
	rd_kafka_destroy(rk);
	free(val);
	uint64_t ok = st.ok - base_ok;
	printf("bench-produce: %" PRIu64 " msgs x %zu B in %.3f s: %.0f msgs/s, %.1f MB/s "
	       "(%" PRIu64 " acked, %" PRIu64 " failed)\n",
	       n, size, t, ok / t, ok * (double)size / t / 1e6, ok, st.failed);
	return st.failed || ok != n ? 1 : 0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: rdk_roundtrip [-X key=value]... MODE ARGS\n"
		"  roundtrip BROKER TOPIC N\n"
		"  produce-log BROKER TOPIC N OUTFILE\n"
		"  consume-all BROKER TOPIC OUTFILE\n"
		"  bench-produce BROKER TOPIC N SIZE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int a = 1;
	while (a < argc && !strcmp(argv[a], "-X")) {
		if (a + 1 >= argc || x_count >= MAX_X)
			usage();
		x_conf[x_count++] = argv[a + 1];
		a += 2;
	}
	const char *t = getenv("RDK_TIMEOUT_S");
	if (t && atof(t) > 0)
		phase_timeout_s = atof(t);
	if (a >= argc)
		usage();
	const char *mode = argv[a];
	char **v = argv + a + 1;
	int nv = argc - a - 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "roundtrip") && nv == 3)
		return mode_roundtrip(v[0], v[1], (uint64_t)parse_count(v[2], "N"));
	if (!strcmp(mode, "produce-log") && nv == 4)
		return mode_produce_log(v[0], v[1], (uint64_t)parse_count(v[2], "N"), v[3]);
	if (!strcmp(mode, "consume-all") && nv == 3)
		return mode_consume_all(v[0], v[1], v[2]);
	if (!strcmp(mode, "bench-produce") && nv == 4)
		return mode_bench_produce(v[0], v[1], (uint64_t)parse_count(v[2], "N"),
					  (size_t)parse_count(v[3], "SIZE"));
	usage();
	return 2;
}
