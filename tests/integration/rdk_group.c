/*
 * rdk_group.c — a librdkafka group consumer for the consumer-group tests:
 * at-least-once by construction (an offset is stored for commit only after
 * its message was written and flushed to OUTFILE), so a test can check that
 * nothing is lost across rebalances, kills and broker restarts.
 *
 *   rdk_group BROKER GROUP TOPIC OUTFILE [SESSION_MS]
 *
 * Writes "<partition> <offset> <value>\n" per message and
 * "# assigned <p> <p> ...\n" / "# revoked\n" at each rebalance.  SIGTERM or
 * SIGINT: close the consumer (commits stored offsets, leaves the group) and
 * exit 0.
 */
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t run = 1;
static FILE *out;

static void on_signal(int sig)
{
	(void)sig;
	run = 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
			 void *opaque)
{
	(void)opaque;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		fprintf(out, "# assigned");
		for (int i = 0; i < parts->cnt; i++)
			fprintf(out, " %d", parts->elems[i].partition);
		fprintf(out, "\n");
		fflush(out);
		rd_kafka_assign(rk, parts);
	} else {
		fprintf(out, "# revoked\n");
		fflush(out);
		rd_kafka_assign(rk, NULL);
	}
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char err[256];

	if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "rdk_group: %s=%s: %s\n", k, v, err);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *subs;
	rd_kafka_t *rk;
	char err[512];

	if (argc < 5) {
		fprintf(stderr, "usage: rdk_group BROKER GROUP TOPIC OUTFILE [SESSION_MS]\n");
		return 2;
	}
	out = fopen(argv[4], "w");
	if (!out) {
		perror(argv[4]);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	set(conf, "bootstrap.servers", argv[1]);
	set(conf, "group.id", argv[2]);
	set(conf, "session.timeout.ms", argc > 5 ? argv[5] : "6000");
	set(conf, "heartbeat.interval.ms", "300");
	set(conf, "auto.offset.reset", "earliest");
	set(conf, "enable.auto.offset.store", "false");
	set(conf, "auto.commit.interval.ms", "200");
	set(conf, "topic.metadata.refresh.interval.ms", "1000");
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "rdk_group: %s\n", err);
		return 1;
	}
	rd_kafka_poll_set_consumer(rk);
	subs = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(subs, argv[3], RD_KAFKA_PARTITION_UA);
	if (rd_kafka_subscribe(rk, subs)) {
		fprintf(stderr, "rdk_group: subscribe failed\n");
		return 1;
	}
	rd_kafka_topic_partition_list_destroy(subs);
	while (run) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

		if (!m)
			continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "rdk_group: %s\n", rd_kafka_message_errstr(m));
		} else {
			fprintf(out, "%d %lld %.*s\n", m->partition, (long long)m->offset, (int)m->len,
				(const char *)m->payload);
			fflush(out);
			/* only now may the offset be committed: at least once */
			rd_kafka_offset_store(m->rkt, m->partition, m->offset);
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	fclose(out);
	return 0;
}
