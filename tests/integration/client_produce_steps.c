/*
 * client_produce_steps: one libsluice producer driven line by line from
 * stdin, so that a test can change the broker (restart it, let retention
 * delete segments, put a fault-injecting proxy in front) between two
 * steps of the same producer (tests/integration/test_client.py).
 *
 * Usage: client_produce_steps HOST:PORT [-X key=value]...
 *
 * Commands (one per line on stdin; every answer line is flushed at once):
 *   produce TOPIC PARTITION COUNT PREFIX
 *       queues COUNT messages with the values "PREFIX-0" ... (no key;
 *       PARTITION -1 = SLUICE_PARTITION_ANY).  Answers "PRODUCED COUNT", or
 *       "PRODUCE_ERR NAME after N" if sluice_produce() refused one.
 *   flush MS
 *       sluice_producer_flush(MS).  Each delivery report served on the way
 *       is printed as "DR VALUE PARTITION OFFSET ERRNAME" (OK for success),
 *       then "FLUSHED OK|TIMED_OUT".
 *   sleep MS
 *       serves delivery reports (printed as above) for MS milliseconds, then
 *       "SLEPT".
 *   quit
 *       destroys the producer (remaining reports printed) and prints "BYE".
 * Anything the library logs goes to stderr.  Exit status 0, or 2 for a
 * usage or configuration error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice.h>

static void on_delivery(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx)
{
	char *value = dr->opaque;

	(void)p;
	(void)ctx;
	printf("DR %s %" PRId32 " %" PRId64 " %s\n", value ? value : "?", dr->partition, dr->offset,
	       dr->err ? sluice_err2name(dr->err) : "OK");
	fflush(stdout);
	free(value);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cmd_produce(sluice_producer_t *p, const char *topic, int partition, long count,
			const char *prefix)
{
	for (long i = 0; i < count; i++) {
		char buf[256];
		char *value;
		sluice_err_t err;

		snprintf(buf, sizeof(buf), "%s-%ld", prefix, i);
		value = strdup(buf);
		if (!value) {
			printf("PRODUCE_ERR NO_MEMORY after %ld\n", i);
			return;
		}
		err = sluice_produce(p, topic, partition, NULL, 0, value, strlen(value), NULL, 0,
				     value);
		if (err) {
			free(value);
			printf("PRODUCE_ERR %s after %ld\n", sluice_err2name(err), i);
			return;
		}
	}
	printf("PRODUCED %ld\n", count);
}

int main(int argc, char **argv)
{
	char errstr[512], line[1024];
	sluice_conf_t *conf;
	sluice_producer_t *p;

	if (argc < 2 || (argc % 2) != 0) {
		fprintf(stderr, "usage: %s HOST:PORT [-X key=value]...\n", argv[0]);
		return 2;
	}
	conf = sluice_conf_new();
	if (!conf)
		return 2;
	sluice_conf_set_delivery_cb(conf, on_delivery, NULL);
	if (sluice_conf_set(conf, "bootstrap.servers", argv[1], errstr, sizeof(errstr)))
		goto bad_conf;
	for (int i = 2; i + 1 < argc; i += 2) {
		char kv[512], *eq;

		snprintf(kv, sizeof(kv), "%s", argv[i + 1]);
		eq = strchr(kv, '=');
		if (strcmp(argv[i], "-X") || !eq) {
			fprintf(stderr, "expected -X key=value, got %s %s\n", argv[i], argv[i + 1]);
			sluice_conf_destroy(conf);
			return 2;
		}
		*eq = '\0';
		if (sluice_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr)))
			goto bad_conf;
	}
	p = sluice_producer_new(conf, errstr, sizeof(errstr));
	if (!p)
		goto bad_conf;
	/* conf belongs to p from here on */
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char topic[256], prefix[128];
		int partition;
		long n;

		if (sscanf(line, "produce %255s %d %ld %127s", topic, &partition, &n, prefix) == 4) {
			cmd_produce(p, topic, partition, n, prefix);
		} else if (sscanf(line, "flush %ld", &n) == 1) {
			sluice_err_t err = sluice_producer_flush(p, (int)n);

			printf("FLUSHED %s\n", err ? sluice_err2name(err) : "OK");
		} else if (sscanf(line, "sleep %ld", &n) == 1) {
			int64_t end = now_ms() + n;

			while (now_ms() < end)
				sluice_producer_poll(p, (int)(end - now_ms()));
			printf("SLEPT\n");
		} else if (!strncmp(line, "quit", 4)) {
			break;
		} else {
			printf("BAD_COMMAND %s", line);
		}
	}
	sluice_producer_destroy(p);
	printf("BYE\n");
	return 0;
bad_conf:
	fprintf(stderr, "%s\n", errstr);
	sluice_conf_destroy(conf);
	return 2;
}
