/*
 * producer.c — the smallest useful libsluice producer: sends each
 * command-line argument as one message to a topic and waits for delivery.
 *
 *   ./producer 127.0.0.1:9092 greetings hello world
 */
#include <stdio.h>
#include <string.h>

#include <sluice.h>

static void on_delivery(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx)
{
	int *failed = ctx;

	if (dr->err) {
		fprintf(stderr, "delivery failed: %s\n", sluice_err2str(dr->err));
		(*failed)++;
	} else {
		printf("delivered to %s [%d] at offset %lld\n", dr->topic, dr->partition,
		       (long long)dr->offset);
	}
}

int main(int argc, char **argv)
{
	char errstr[512];
	sluice_conf_t *conf;
	sluice_producer_t *p;
	int failed = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: %s HOST:PORT TOPIC MESSAGE...\n", argv[0]);
		return 2;
	}
	conf = sluice_conf_new();
	if (sluice_conf_set(conf, "bootstrap.servers", argv[1], errstr, sizeof(errstr))) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf);
		return 2;
	}
	sluice_conf_set_delivery_cb(conf, on_delivery, &failed);
	p = sluice_producer_new(conf, errstr, sizeof(errstr));
	if (!p) {
		fprintf(stderr, "%s\n", errstr);
		sluice_conf_destroy(conf); /* still ours when _new fails */
		return 1;
	}
	/* conf belongs to p now */
	for (int i = 3; i < argc; i++) {
		sluice_err_t err = sluice_produce(p, argv[2], SLUICE_PARTITION_ANY, NULL, 0, argv[i],
						  strlen(argv[i]), NULL, 0, NULL);
		if (err)
			fprintf(stderr, "produce: %s\n", sluice_err2str(err));
	}
	if (sluice_producer_flush(p, 10000))
		fprintf(stderr, "flush timed out\n");
	sluice_producer_destroy(p);
	return failed ? 1 : 0;
}
