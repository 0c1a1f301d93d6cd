/*
 * consumer.c — the smallest useful libsluice consumer: prints every message
 * of one partition from the beginning, until no message came for 5 s.
 *
 *   ./consumer 127.0.0.1:9092 greetings 0
 */
#include <stdio.h>
#include <stdlib.h>

#include <sluice.h>

int main(int argc, char **argv)
{
	char errstr[512];
	sluice_conf_t *conf;
	sluice_consumer_t *c;
	sluice_message_t *m;

	if (argc != 4) {
		fprintf(stderr, "usage: %s HOST:PORT TOPIC PARTITION\n", argv[0]);
		return 2;
	}
	conf = sluice_conf_new();
	if (sluice_conf_set(conf, "bootstrap.servers", argv[1], errstr, sizeof(errstr))) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf);
		return 2;
	}
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf);
		return 1;
	}
	sluice_consumer_assign(c, argv[2], atoi(argv[3]), SLUICE_OFFSET_BEGINNING);
	while ((m = sluice_consumer_poll(c, 5000))) {
		size_t klen;
		const void *key = sluice_message_key(m, &klen);

		if (sluice_message_err(m))
			fprintf(stderr, "error: %s\n", sluice_message_errstr(m));
		else
			printf("offset %lld key %.*s: %.*s\n", (long long)sluice_message_offset(m),
			       key ? (int)klen : 6, key ? (const char *)key : "(null)",
			       (int)sluice_message_len(m),
			       sluice_message_value(m) ? (const char *)sluice_message_value(m) : "");
		sluice_message_destroy(m);
	}
	sluice_consumer_destroy(c);
	return 0;
}
