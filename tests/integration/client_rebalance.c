/*
 * client_rebalance.c — a libsluice group consumer that logs the order of
 * what it sees, for test_client_groups.py (the revocation hook, issue #4):
 *
 *   client_rebalance BROKER GROUP TOPIC OUTFILE DELAY_MS [KEY=VALUE]...
 *
 * enable.auto.commit=false: the only commits are the ones it makes inside
 * its REVOKED callback (sluice_consumer_commit(c, 1)), so what the next
 * owner of a partition reads first proves they were visible.  KEY=VALUE
 * pairs are extra libsluice settings (e.g. group.instance.id=a).  Writes
 * one line per event, flushed:
 *
 *   MSG <partition> <offset>
 *   REVOKE <partition>...
 *   COMMIT <error name> <partition>=<next offset>...   (inside REVOKE)
 *   ASSIGN <partition>...
 *   FATAL <error name>                                 (then exit 1)
 *
 * and sleeps DELAY_MS after each message (a slow application).  SIGTERM:
 * destroy (the last REVOKE/COMMIT happen there), then "CLOSED", exit 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"

#define MAXP 64

static volatile sig_atomic_t run = 1;
static FILE *out;
static int64_t next_off[MAXP]; /* processed position per partition, -1: none */

static void on_signal(int sig)
{
	(void)sig;
	run = 0;
}

static void rebalance(sluice_consumer_t *c, sluice_rebalance_event_t ev,
		      const sluice_topic_partition_t *parts, size_t n, void *ctx)
{
	sluice_err_t err;

	(void)ctx;
	fprintf(out, "%s", ev == SLUICE_REBALANCE_ASSIGNED ? "ASSIGN" : "REVOKE");
	for (size_t i = 0; i < n; i++)
		fprintf(out, " %d", parts[i].partition);
	fprintf(out, "\n");
	fflush(out);
	if (ev != SLUICE_REBALANCE_REVOKED)
		return;
	/* the application commits what it processed before the partitions go */
	err = sluice_consumer_commit(c, 1);
	fprintf(out, "COMMIT %s", sluice_err2name(err));
	for (size_t i = 0; i < n; i++)
		if (parts[i].partition >= 0 && parts[i].partition < MAXP &&
		    next_off[parts[i].partition] >= 0)
			fprintf(out, " %d=%lld", parts[i].partition,
				(long long)next_off[parts[i].partition]);
	fprintf(out, "\n");
	fflush(out);
	for (size_t i = 0; i < n; i++)
		if (parts[i].partition >= 0 && parts[i].partition < MAXP)
			next_off[parts[i].partition] = -1;
}

static int set(sluice_conf_t *conf, const char *k, const char *v)
{
	char errstr[256];

	if (sluice_conf_set(conf, k, v, errstr, sizeof(errstr))) {
		fprintf(stderr, "client_rebalance: %s\n", errstr);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	sluice_conf_t *conf;
	sluice_consumer_t *c;
	char errstr[256];
	const char *topics[1];
	int delay_ms, rc = 0;

	if (argc < 6) {
		fprintf(stderr, "usage: client_rebalance BROKER GROUP TOPIC OUTFILE DELAY_MS "
				"[KEY=VALUE]...\n");
		return 2;
	}
	for (int i = 0; i < MAXP; i++)
		next_off[i] = -1;
	out = fopen(argv[4], "w");
	if (!out) {
		perror(argv[4]);
		return 1;
	}
	delay_ms = atoi(argv[5]);
	conf = sluice_conf_new();
	if (!conf || set(conf, "bootstrap.servers", argv[1]) || set(conf, "group.id", argv[2]) ||
	    set(conf, "enable.auto.commit", "false") || set(conf, "auto.offset.reset", "earliest") ||
	    set(conf, "session.timeout.ms", "3000") || set(conf, "heartbeat.interval.ms", "300"))
		return 2;
	for (int i = 6; i < argc; i++) {
		char kv[512], *eq;

		snprintf(kv, sizeof(kv), "%s", argv[i]);
		eq = strchr(kv, '=');
		if (!eq)
			return 2;
		*eq = '\0';
		if (set(conf, kv, eq + 1))
			return 2;
	}
	sluice_conf_set_rebalance_cb(conf, rebalance, NULL);
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "client_rebalance: %s\n", errstr);
		sluice_conf_destroy(conf);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	topics[0] = argv[3];
	if (sluice_consumer_subscribe(c, topics, 1)) {
		sluice_consumer_destroy(c);
		return 2;
	}
	while (run) {
		sluice_message_t *m = sluice_consumer_poll(c, 100);
		int32_t p;

		if (!m)
			continue;
		if (sluice_message_err(m)) {
			sluice_err_t err = sluice_message_err(m);

			fprintf(stderr, "client_rebalance: %s\n", sluice_message_errstr(m));
			sluice_message_destroy(m);
			if (err == SLUICE_ERR_FENCED_INSTANCE_ID) {
				fprintf(out, "FATAL %s\n", sluice_err2name(err));
				fflush(out);
				rc = 1;
				break;
			}
			continue;
		}
		p = sluice_message_partition(m);
		fprintf(out, "MSG %d %lld\n", p, (long long)sluice_message_offset(m));
		fflush(out);
		if (p >= 0 && p < MAXP)
			next_off[p] = sluice_message_offset(m) + 1;
		sluice_message_destroy(m);
		if (delay_ms > 0)
			usleep((useconds_t)delay_ms * 1000);
	}
	sluice_consumer_destroy(c);
	fprintf(out, "CLOSED\n");
	fclose(out);
	return rc;
}
