/*
 * client_consume_check: libsluice consumer helper for
 * tests/integration/test_client.py.
 *
 * Usage: client_consume_check HOST:PORT MODE ARGS...
 *
 *   read TOPIC PARTITION COUNT
 *       Assigns the partition from the beginning and polls until COUNT data
 *       messages arrived (or nothing came for 10 s: exit 1).  Prints
 *       "MSG OFFSET TIMESTAMP VALUE" for each message and
 *       "ERR OFFSET NAME ERRSTR" for each error message.  After
 *       SLUICE_ERR_UNSUPPORTED_COMPRESSION it continues the documented way,
 *       sluice_consumer_seek(offset + 1), and prints "SEEK OFFSET+1".
 *   times TOPIC PARTITION TS...
 *       Prints "WM LOW HIGH" (sluice_consumer_query_watermarks), then for
 *       each TS (ms): sluice_consumer_offsets_for_times; if it found an
 *       offset, seeks there and polls one message: "TS TS OFFSET
 *       MSG_OFFSET MSG_TIMESTAMP VALUE"; else "TS TS -1" (or
 *       "TS TS ERR NAME").  The partition is assigned from the end first,
 *       so every message comes from a seek.
 *
 * Values are printed as text (the tests use printable values).  Exit 0 =
 * done, 1 = time-out or API error, 2 = usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice.h>

static sluice_consumer_t *consumer_new(const char *broker)
{
	char errstr[512];
	sluice_conf_t *conf = sluice_conf_new();
	sluice_consumer_t *c;

	if (!conf)
		return NULL;
	if (sluice_conf_set(conf, "bootstrap.servers", broker, errstr, sizeof(errstr))) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf);
		return NULL;
	}
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf);
	}
	return c;
}

static void print_msg(const char *tag, const sluice_message_t *m)
{
	const char *v = sluice_message_value(m);

	printf("%s %" PRId64 " %" PRId64 " %.*s\n", tag, sluice_message_offset(m),
	       sluice_message_timestamp(m, NULL), v ? (int)sluice_message_len(m) : 6,
	       v ? v : "(null)");
}

static int mode_read(sluice_consumer_t *c, const char *topic, int32_t partition, long count)
{
	long got = 0;

	if (sluice_consumer_assign(c, topic, partition, SLUICE_OFFSET_BEGINNING))
		return 1;
	while (got < count) {
		sluice_message_t *m = sluice_consumer_poll(c, 10000);
		sluice_err_t err;

		if (!m) {
			printf("TIMEOUT after %ld messages\n", got);
			return 1;
		}
		err = sluice_message_err(m);
		if (!err) {
			print_msg("MSG", m);
			got++;
		} else {
			int64_t off = sluice_message_offset(m);

			printf("ERR %" PRId64 " %s %s\n", off, sluice_err2name(err),
			       sluice_message_errstr(m));
			if (err == SLUICE_ERR_UNSUPPORTED_COMPRESSION) {
				/* the documented way past a batch libsluice cannot read */
				if (sluice_consumer_seek(c, topic, partition, off + 1)) {
					sluice_message_destroy(m);
					return 1;
				}
				printf("SEEK %" PRId64 "\n", off + 1);
			}
		}
		sluice_message_destroy(m);
	}
	return 0;
}

static int mode_times(sluice_consumer_t *c, const char *topic, int32_t partition, char **ts,
		      int nts)
{
	int64_t lo = -1, hi = -1;
	sluice_err_t err = sluice_consumer_query_watermarks(c, topic, partition, &lo, &hi, 10000);

	if (err) {
		printf("WM ERR %s\n", sluice_err2name(err));
		return 1;
	}
	printf("WM %" PRId64 " %" PRId64 "\n", lo, hi);
	if (sluice_consumer_assign(c, topic, partition, SLUICE_OFFSET_END))
		return 1;
	for (int i = 0; i < nts; i++) {
		int64_t t = strtoll(ts[i], NULL, 10), off = -2;
		sluice_message_t *m;

		err = sluice_consumer_offsets_for_times(c, topic, partition, t, &off, 10000);
		if (err) {
			printf("TS %" PRId64 " ERR %s\n", t, sluice_err2name(err));
			continue;
		}
		if (off < 0) {
			printf("TS %" PRId64 " %" PRId64 "\n", t, off);
			continue;
		}
		if (sluice_consumer_seek(c, topic, partition, off))
			return 1;
		for (;;) {
			m = sluice_consumer_poll(c, 10000);
			if (!m) {
				printf("TS %" PRId64 " %" PRId64 " TIMEOUT\n", t, off);
				return 1;
			}
			if (!sluice_message_err(m))
				break;
			printf("ERR %" PRId64 " %s %s\n", sluice_message_offset(m),
			       sluice_err2name(sluice_message_err(m)), sluice_message_errstr(m));
			sluice_message_destroy(m);
		}
		{
			const char *v = sluice_message_value(m);

			printf("TS %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %.*s\n", t, off,
			       sluice_message_offset(m), sluice_message_timestamp(m, NULL),
			       v ? (int)sluice_message_len(m) : 6, v ? v : "(null)");
		}
		sluice_message_destroy(m);
	}
	return 0;
}

int main(int argc, char **argv)
{
	sluice_consumer_t *c;
	int rc = 2;

	if (argc < 5) {
		fprintf(stderr, "usage: %s HOST:PORT read TOPIC PARTITION COUNT\n"
				"       %s HOST:PORT times TOPIC PARTITION TS...\n",
			argv[0], argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	c = consumer_new(argv[1]);
	if (!c)
		return 1;
	if (!strcmp(argv[2], "read") && argc == 6)
		rc = mode_read(c, argv[3], (int32_t)atoi(argv[4]), atol(argv[5]));
	else if (!strcmp(argv[2], "times") && argc >= 5)
		rc = mode_times(c, argv[3], (int32_t)atoi(argv[4]), argv + 5, argc - 5);
	else
		fprintf(stderr, "unknown mode %s\n", argv[2]);
	sluice_consumer_destroy(c);
	return rc;
}
