/*
 * cli.c — the `sluice` tool: topic administration, produce, consume.
 * Benchmarks live in cli_bench.c.  Usage: `sluice --help`, docs/client.md.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void usage_main(FILE *f)
{
	fprintf(f,
		"Usage: sluice [-b HOST:PORT] [-X KEY=VALUE]... COMMAND [ARGS]\n"
		"Command-line client of the Sluice broker (any Kafka-protocol broker).\n\n"
		"Global options:\n"
		"  -b, --brokers LIST   bootstrap servers (default: $SLUICE_BROKERS or localhost:9092)\n"
		"  -X KEY=VALUE         any libsluice configuration property (repeatable)\n"
		"  -h, --help           this help;  -V, --version  print the version\n\n"
		"Commands:\n"
		"  topic create|list|describe|delete|config   manage topics\n"
		"  produce TOPIC        send lines from stdin (or --file) as messages\n"
		"  consume TOPIC        print messages (--group G: as a consumer-group member)\n"
		"  group list|describe|reset-offsets|delete   manage consumer groups\n"
		"  txn list|describe|commit|rollback|resume|prepare   transactional messages\n"
		"  bench produce|consume|e2e|txn              measure throughput and latency\n\n"
		"`sluice COMMAND --help` describes each command.\n"
		"Exit status: 0 ok, 1 error, 2 usage, 3 messages not delivered,\n"
		"4 consume ended by --timeout before --count messages.\n");
}

bool cli_conf_set(sluice_conf_t *conf, const char *key, const char *value)
{
	char errstr[512];

	if (sluice_conf_set(conf, key, value, errstr, sizeof(errstr))) {
		fprintf(stderr, "sluice: %s\n", errstr);
		return false;
	}
	return true;
}

/* Copies "KEY=VALUE" arg into buf (cap bytes) and splits it there: buf is
 * the key, *value points after the '='.  Prints "sluice: OPT ARG: expected
 * KEY=VALUE" and returns false when there is no '='. */
static bool split_kv(const char *opt, const char *arg, char *buf, size_t cap, char **value)
{
	char *eq;

	snprintf(buf, cap, "%s", arg);
	eq = strchr(buf, '=');
	if (!eq) {
		fprintf(stderr, "sluice: %s %s: expected KEY=VALUE\n", opt, arg);
		return false;
	}
	*eq = '\0';
	*value = eq + 1;
	return true;
}

sluice_conf_t *cli_conf(const struct cli_global *g)
{
	sluice_conf_t *conf = sluice_conf_new();

	if (!conf) {
		fprintf(stderr, "sluice: out of memory\n");
		return NULL;
	}
	if (!cli_conf_set(conf, "bootstrap.servers", g->brokers) ||
	    !cli_conf_set(conf, "client.id", "sluice-cli"))
		goto fail;
	for (int i = 0; i < g->nsets; i++) {
		char kv[1024], *value;

		if (!split_kv("-X", g->sets[i], kv, sizeof(kv), &value) ||
		    !cli_conf_set(conf, kv, value))
			goto fail;
	}
	return conf;
fail:
	sluice_conf_destroy(conf);
	return NULL;
}

sluice_admin_t *cli_admin(const struct cli_global *g)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_admin_t *a;
	char errstr[512];

	if (!conf)
		return NULL;
	a = sluice_admin_new(conf, errstr, sizeof(errstr));
	if (!a) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf); /* still ours on failure */
	}
	return a;
}

int cli_ensure_topic(const struct cli_global *g, const char *topic, int partitions)
{
	sluice_admin_t *a = cli_admin(g);
	char errstr[512] = "";
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	err = sluice_admin_create_topic(a, topic, partitions, NULL, 0, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err && err != SLUICE_ERR_TOPIC_ALREADY_EXISTS) {
		fprintf(stderr, "sluice: create topic %s: %s\n", topic, errstr);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

int cli_partition_count(const struct cli_global *g, const char *topic)
{
	sluice_admin_t *a = cli_admin(g);
	sluice_topic_list_t *l = NULL;
	sluice_err_t err;
	int n = -1;

	if (!a)
		return -1;
	err = sluice_admin_list_topics(a, topic, &l, 30000);
	if (err) {
		fprintf(stderr, "sluice: metadata: %s\n", sluice_err2str(err));
	} else if (sluice_topic_list_count(l) != 1 || sluice_topic_list_get(l, 0)->err) {
		fprintf(stderr, "sluice: topic %s: %s\n", topic,
			sluice_topic_list_count(l) ? sluice_err2str(sluice_topic_list_get(l, 0)->err)
						   : "not found");
	} else {
		n = sluice_topic_list_get(l, 0)->partition_count;
	}
	sluice_topic_list_destroy(l);
	sluice_admin_destroy(a);
	return n;
}

/* ---- topic ---- */

static void usage_topic(FILE *f)
{
	fprintf(f, "Usage:\n"
		   "  sluice topic create NAME [--partitions N] [--config KEY=VALUE]...\n"
		   "  sluice topic list\n"
		   "  sluice topic describe NAME     partitions and (if the broker has\n"
		   "                                 DescribeConfigs) configuration\n"
		   "  sluice topic delete NAME\n"
		   "  sluice topic config NAME [--set KEY=VALUE]...  show, or replace the\n"
		   "                                 topic's configuration overrides\n");
}

static int print_configs(sluice_admin_t *a, const char *topic, bool quiet_unsupported)
{
	sluice_config_entry_t *cfg = NULL;
	size_t n = 0;
	char errstr[512] = "";
	sluice_err_t err =
		sluice_admin_describe_topic_configs(a, topic, &cfg, &n, 30000, errstr, sizeof(errstr));

	if (err) {
		if (quiet_unsupported && err == SLUICE_ERR_UNSUPPORTED_FEATURE) {
			printf("  configs: (%s)\n", errstr);
			return EXIT_OK;
		}
		fprintf(stderr, "sluice: %s\n", errstr);
		return EXIT_ERR;
	}
	for (size_t i = 0; i < n; i++)
		printf("  %s=%s%s\n", cfg[i].name, cfg[i].value ? cfg[i].value : "(null)",
		       cfg[i].is_default ? " (default)" : "");
	sluice_config_entries_destroy(cfg, n);
	return EXIT_OK;
}

static int cmd_topic(const struct cli_global *g, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	sluice_config_entry_t cfgs[64];
	char cfgbuf[64][512];
	size_t ncfg = 0;
	int partitions = -1, rc = EXIT_OK, opt;
	const char *name;
	sluice_admin_t *a;
	char errstr[512] = "";
	sluice_err_t err;
	static const struct option lo[] = {
		{ "partitions", required_argument, NULL, 'p' },
		{ "config", required_argument, NULL, 'c' },
		{ "set", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		usage_topic(sub ? stdout : stderr);
		return sub ? EXIT_OK : EXIT_USAGE;
	}
	optind = 2;
	while ((opt = getopt_long(argc, argv, "p:c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'p':
			partitions = atoi(optarg);
			if (partitions <= 0) {
				fprintf(stderr, "sluice: --partitions must be > 0\n");
				return EXIT_USAGE;
			}
			break;
		case 'c': {
			char *value;

			if (ncfg == 64) {
				fprintf(stderr, "sluice: too many --config\n");
				return EXIT_USAGE;
			}
			if (!split_kv("--config", optarg, cfgbuf[ncfg], sizeof(cfgbuf[ncfg]), &value))
				return EXIT_USAGE;
			cfgs[ncfg].name = cfgbuf[ncfg];
			cfgs[ncfg].value = value;
			ncfg++;
			break;
		}
		case 'h':
			usage_topic(stdout);
			return EXIT_OK;
		default:
			usage_topic(stderr);
			return EXIT_USAGE;
		}
	}
	name = optind < argc ? argv[optind] : NULL;
	if (strcmp(sub, "list") && !name) {
		fprintf(stderr, "sluice: topic %s: missing topic name\n", sub);
		return EXIT_USAGE;
	}
	if (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "describe") &&
	    strcmp(sub, "delete") && strcmp(sub, "config")) {
		fprintf(stderr, "sluice: unknown topic command \"%s\"\n", sub);
		usage_topic(stderr);
		return EXIT_USAGE;
	}
	a = cli_admin(g);
	if (!a)
		return EXIT_ERR;
	if (!strcmp(sub, "create")) {
		err = sluice_admin_create_topic(a, name, partitions, cfgs, ncfg, 30000, errstr,
						sizeof(errstr));
		if (err) {
			fprintf(stderr, "sluice: create %s: %s\n", name, errstr);
			rc = EXIT_ERR;
		} else {
			printf("created topic %s\n", name);
		}
	} else if (!strcmp(sub, "delete")) {
		err = sluice_admin_delete_topic(a, name, 30000, errstr, sizeof(errstr));
		if (err) {
			fprintf(stderr, "sluice: delete %s: %s\n", name, errstr);
			rc = EXIT_ERR;
		} else {
			printf("deleted topic %s\n", name);
		}
	} else if (!strcmp(sub, "list") || !strcmp(sub, "describe")) {
		sluice_topic_list_t *l = NULL;

		err = sluice_admin_list_topics(a, name, &l, 30000);
		if (err) {
			fprintf(stderr, "sluice: metadata: %s\n", sluice_err2str(err));
			rc = EXIT_ERR;
		}
		for (size_t i = 0; !err && i < sluice_topic_list_count(l); i++) {
			const sluice_topic_info_t *t = sluice_topic_list_get(l, i);

			if (t->err) {
				fprintf(stderr, "sluice: %s: %s\n", t->name, sluice_err2str(t->err));
				rc = EXIT_ERR;
				continue;
			}
			if (name) {
				printf("topic %s: %d partitions\n", t->name, t->partition_count);
				rc = print_configs(a, name, true);
			} else {
				printf("%s\t%d\n", t->name, t->partition_count);
			}
		}
		sluice_topic_list_destroy(l);
	} else { /* config */
		if (ncfg) {
			err = sluice_admin_alter_topic_configs(a, name, cfgs, ncfg, 30000, errstr,
							       sizeof(errstr));
			if (err) {
				fprintf(stderr, "sluice: config %s: %s\n", name, errstr);
				rc = EXIT_ERR;
			}
		}
		if (rc == EXIT_OK)
			rc = print_configs(a, name, false);
	}
	sluice_admin_destroy(a);
	return rc;
}

/* ---- produce ---- */

static void usage_produce(FILE *f)
{
	fprintf(f,
		"Usage: sluice produce TOPIC [options]\n"
		"Sends each line of stdin (or --file) as one message; waits until all are\n"
		"delivered.\n"
		"  -f, --file PATH        read lines from PATH instead of stdin\n"
		"  -k, --key-sep SEP      split each line at the first SEP into key and value\n"
		"                         (a line without SEP gets a null key)\n"
		"  -H, --header K=V       add a header to every message (repeatable)\n"
		"  -a, --acks 0|1|all     acknowledgement level (default all)\n"
		"  -p, --partition N      send to partition N (default: by key, sticky if none)\n"
		"  -h, --help             this help\n"
		"Exit status: 0 all delivered, 1 error, 2 usage, 3 some not delivered.\n");
}

struct produce_state {
	long delivered, failed;
	sluice_err_t first_err;
};

static void produce_dr(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx)
{
	struct produce_state *st = ctx;

	if (dr->err) {
		if (!st->failed)
			st->first_err = dr->err;
		st->failed++;
	} else {
		st->delivered++;
	}
}

static int cmd_produce(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "file", required_argument, NULL, 'f' },
		{ "key-sep", required_argument, NULL, 'k' },
		{ "header", required_argument, NULL, 'H' },
		{ "acks", required_argument, NULL, 'a' },
		{ "partition", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *file = NULL, *keysep = NULL, *acks = NULL, *topic;
	sluice_header_t hdrs[64];
	char hdrbuf[64][512];
	size_t nhdrs = 0;
	int32_t partition = SLUICE_PARTITION_ANY;
	struct produce_state st = { 0 };
	sluice_conf_t *conf;
	sluice_producer_t *p;
	char errstr[512], *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *in = stdin;
	int opt, rc = EXIT_OK;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "f:k:H:a:p:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'f':
			file = optarg;
			break;
		case 'k':
			keysep = optarg;
			if (!*keysep) {
				fprintf(stderr, "sluice: --key-sep must not be empty\n");
				return EXIT_USAGE;
			}
			break;
		case 'H': {
			char *value;

			if (nhdrs == 64) {
				fprintf(stderr, "sluice: too many --header\n");
				return EXIT_USAGE;
			}
			if (!split_kv("--header", optarg, hdrbuf[nhdrs], sizeof(hdrbuf[nhdrs]), &value))
				return EXIT_USAGE;
			hdrs[nhdrs].name = hdrbuf[nhdrs];
			hdrs[nhdrs].value = value;
			hdrs[nhdrs].value_len = strlen(value);
			nhdrs++;
			break;
		}
		case 'a':
			acks = optarg;
			break;
		case 'p': {
			char *ep;
			long v = strtol(optarg, &ep, 10);

			if (*ep || v < 0 || v > INT32_MAX) {
				fprintf(stderr, "sluice: --partition %s: not a partition number\n", optarg);
				return EXIT_USAGE;
			}
			partition = (int32_t)v;
			break;
		}
		case 'h':
			usage_produce(stdout);
			return EXIT_OK;
		default:
			usage_produce(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage_produce(stderr);
		return EXIT_USAGE;
	}
	topic = argv[optind];
	conf = cli_conf(g);
	if (!conf)
		return EXIT_USAGE;
	if (acks && !cli_conf_set(conf, "acks", acks)) {
		sluice_conf_destroy(conf);
		return EXIT_USAGE;
	}
	sluice_conf_set_delivery_cb(conf, produce_dr, &st);
	if (file && !(in = fopen(file, "r"))) {
		fprintf(stderr, "sluice: %s: %s\n", file, strerror(errno));
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	p = sluice_producer_new(conf, errstr, sizeof(errstr));
	if (!p) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		if (in != stdin)
			fclose(in);
		return EXIT_ERR;
	}
	while (!stop_flag && (len = getline(&line, &cap, in)) >= 0) {
		const char *key = NULL, *val = line;
		size_t klen = 0, vlen;
		sluice_err_t err;

		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		vlen = (size_t)len;
		if (keysep) {
			char *s = strstr(line, keysep);

			if (s) {
				key = line;
				klen = (size_t)(s - line);
				val = s + strlen(keysep);
				vlen = (size_t)len - klen - strlen(keysep);
			}
		}
		while ((err = sluice_produce(p, topic, partition, key, klen, val, vlen, hdrs, nhdrs,
					     NULL)) == SLUICE_ERR_QUEUE_FULL)
			sluice_producer_poll(p, 10);
		if (err) {
			fprintf(stderr, "sluice: produce: %s\n", sluice_err2str(err));
			rc = EXIT_ERR;
			break;
		}
		sluice_producer_poll(p, 0);
	}
	free(line);
	if (in != stdin)
		fclose(in);
	if (sluice_producer_flush(p, 60000))
		fprintf(stderr, "sluice: flush timed out\n");
	sluice_producer_destroy(p);
	if (st.failed) {
		fprintf(stderr, "sluice: %ld of %ld messages not delivered: %s\n", st.failed,
			st.failed + st.delivered, sluice_err2str(st.first_err));
		if (rc == EXIT_OK)
			rc = EXIT_UNDELIVERED;
	}
	fprintf(stderr, "sluice: %ld messages delivered to %s\n", st.delivered, topic);
	return rc;
}

/* ---- consume ---- */

static void usage_consume(FILE *f)
{
	fprintf(f,
		"Usage: sluice consume TOPIC [options]\n"
		"Prints messages of TOPIC (all partitions unless --partition).\n"
		"  -p, --partition N       only partition N\n"
		"  -o, --from WHERE        beginning | end (default) | offset:N | time:MS\n"
		"                          (time: first message with timestamp >= MS, ms since epoch)\n"
		"  -c, --count N           stop after N messages\n"
		"  -e, --exit-at-end       stop when every partition is read to its end\n"
		"  -t, --timeout MS        stop after MS ms without a message (exit 4 if --count\n"
		"                          was not reached)\n"
		"  -F, --format text|json  text (default): the value, one per line, or\n"
		"                          \"key<TAB>value\" with --print-key;  json: one object per\n"
		"                          line: topic, partition, offset, timestamp, key, value,\n"
		"                          headers.  Keys/values/header values are JSON strings\n"
		"                          (escaped) when valid UTF-8, otherwise given base64-encoded\n"
		"                          under key_b64 / value_b64 / {\"b64\":...}; null stays null.\n"
		"  -K, --print-key         text format: print key and a TAB before the value\n"
		"  -g, --group G           join consumer group G and consume the partitions it\n"
		"                          assigns (TOPIC may be a ^regex; several TOPICs allowed);\n"
		"                          starts at the committed offsets, else at --from\n"
		"                          (beginning or end); commits automatically and on exit.\n"
		"                          Rebalances are reported on stderr.\n"
		"  -h, --help              this help\n");
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0 && c >= 0xC2)
			k = 1;
		else if ((c & 0xF0) == 0xE0)
			k = 2;
		else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
			k = 3;
		else
			return false;
		for (size_t j = 1; j <= k; j++)
			if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
				return false;
		i += k + 1;
	}
	return true;
}

static void put_b64(const unsigned char *s, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	putchar('"');
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
			     (i + 2 < n ? s[i + 2] : 0);

		putchar(t[v >> 18 & 63]);
		putchar(t[v >> 12 & 63]);
		putchar(i + 1 < n ? t[v >> 6 & 63] : '=');
		putchar(i + 2 < n ? t[v & 63] : '=');
	}
	putchar('"');
}

static void put_json_str(const unsigned char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* "name":value with the UTF-8/base64 rule. */
static void put_json_field(const char *name, const void *p, size_t n)
{
	if (!p) {
		printf("\"%s\":null", name);
	} else if (utf8_valid(p, n)) {
		printf("\"%s\":", name);
		put_json_str(p, n);
	} else {
		printf("\"%s_b64\":", name);
		put_b64(p, n);
	}
}

static void print_json(const sluice_message_t *m)
{
	size_t klen, pos = 0, nl, vl;
	const void *key = sluice_message_key(m, &klen);
	const char *hn;
	const void *hv;
	bool first = true;

	printf("{\"topic\":");
	put_json_str((const unsigned char *)sluice_message_topic(m), strlen(sluice_message_topic(m)));
	printf(",\"partition\":%d,\"offset\":%" PRId64 ",\"timestamp\":%" PRId64 ",",
	       sluice_message_partition(m), sluice_message_offset(m),
	       sluice_message_timestamp(m, NULL));
	put_json_field("key", key, klen);
	putchar(',');
	put_json_field("value", sluice_message_value(m), sluice_message_len(m));
	printf(",\"headers\":[");
	while (sluice_message_header_next(m, &pos, &hn, &nl, &hv, &vl)) {
		if (!first)
			putchar(',');
		first = false;
		putchar('[');
		put_json_str((const unsigned char *)hn, nl);
		putchar(',');
		if (!hv)
			printf("null");
		else if (utf8_valid(hv, vl))
			put_json_str(hv, vl);
		else {
			printf("{\"b64\":");
			put_b64(hv, vl);
			putchar('}');
		}
		putchar(']');
	}
	printf("]}\n");
}

static void print_message(const sluice_message_t *m, bool json, bool print_key)
{
	if (json) {
		print_json(m);
	} else {
		size_t klen;
		const void *key = sluice_message_key(m, &klen);

		if (print_key) {
			if (key)
				fwrite(key, 1, klen, stdout);
			putchar('\t');
		}
		if (sluice_message_value(m))
			fwrite(sluice_message_value(m), 1, sluice_message_len(m), stdout);
		putchar('\n');
	}
}

static void group_rebalance(sluice_consumer_t *c, sluice_rebalance_event_t ev,
			    const sluice_topic_partition_t *parts, size_t n, void *ctx)
{
	(void)c;
	(void)ctx;
	fflush(stdout);
	fprintf(stderr, "%% %s:", ev == SLUICE_REBALANCE_ASSIGNED ? "assigned" : "revoked");
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %s[%d]", parts[i].topic, parts[i].partition);
	fprintf(stderr, "\n");
}

static int consume_group(const struct cli_global *g, const char *group, const char *const *topics,
			 int ntopics, const char *from, long long count, int timeout_ms, bool json,
			 bool print_key)
{
	sluice_conf_t *conf;
	sluice_consumer_t *c;
	char errstr[512];
	long long got = 0;
	int rc = EXIT_OK;
	int64_t last_msg;
	struct timespec ts;

	if (strcmp(from, "beginning") && strcmp(from, "end")) {
		fprintf(stderr, "sluice: with --group, --from must be beginning or end\n");
		return EXIT_USAGE;
	}
	conf = cli_conf(g);
	if (!conf)
		return EXIT_USAGE;
	if (!cli_conf_set(conf, "group.id", group) ||
	    !cli_conf_set(conf, "auto.offset.reset", !strcmp(from, "beginning") ? "earliest" : "latest")) {
		sluice_conf_destroy(conf);
		return EXIT_USAGE;
	}
	sluice_conf_set_rebalance_cb(conf, group_rebalance, NULL);
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	if (sluice_consumer_subscribe(c, topics, (size_t)ntopics)) {
		fprintf(stderr, "sluice: bad subscription\n");
		sluice_consumer_destroy(c);
		return EXIT_USAGE;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	last_msg = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	while (!stop_flag && (count < 0 || got < count)) {
		sluice_message_t *m = sluice_consumer_poll(c, 100);
		int64_t now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (!m) {
			if (timeout_ms >= 0 && now - last_msg >= timeout_ms) {
				if (count > 0)
					rc = EXIT_INCOMPLETE;
				break;
			}
			continue;
		}
		last_msg = now;
		if (sluice_message_err(m)) {
			sluice_err_t err = sluice_message_err(m);

			if (err != SLUICE_ERR_PARTITION_EOF)
				fprintf(stderr, "sluice: %s\n", sluice_message_errstr(m));
			sluice_message_destroy(m);
			if (err == SLUICE_ERR_FENCED_INSTANCE_ID) {
				rc = EXIT_ERR; /* fatal: out of the group for good */
				break;
			}
			continue;
		}
		print_message(m, json, print_key);
		fflush(stdout); /* printed before it can be committed */
		got++;
		sluice_message_destroy(m);
	}
	fflush(stdout);
	sluice_consumer_destroy(c); /* commits and leaves the group */
	return rc;
}

static int cmd_consume(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "partition", required_argument, NULL, 'p' },
		{ "from", required_argument, NULL, 'o' },
		{ "count", required_argument, NULL, 'c' },
		{ "exit-at-end", no_argument, NULL, 'e' },
		{ "timeout", required_argument, NULL, 't' },
		{ "format", required_argument, NULL, 'F' },
		{ "print-key", no_argument, NULL, 'K' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *group = NULL;
	int32_t only = -1;
	const char *from = "end", *topic;
	long long count = -1, got = 0;
	int timeout_ms = -1, opt, nparts, rc = EXIT_OK, at_end = 0;
	bool exit_at_end = false, json = false, print_key = false;
	int64_t start = SLUICE_OFFSET_END, start_ts = -1;
	sluice_conf_t *conf;
	sluice_consumer_t *c;
	char errstr[512];
	int64_t last_msg;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "p:o:c:et:F:Kg:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'g':
			group = optarg;
			break;
		case 'p':
			only = atoi(optarg);
			if (only < 0) {
				fprintf(stderr, "sluice: bad --partition\n");
				return EXIT_USAGE;
			}
			break;
		case 'o':
			from = optarg;
			break;
		case 'c':
			count = atoll(optarg);
			if (count <= 0) {
				fprintf(stderr, "sluice: --count must be > 0\n");
				return EXIT_USAGE;
			}
			break;
		case 'e':
			exit_at_end = true;
			break;
		case 't':
			timeout_ms = atoi(optarg);
			break;
		case 'F':
			if (!strcmp(optarg, "json"))
				json = true;
			else if (strcmp(optarg, "text")) {
				fprintf(stderr, "sluice: --format must be text or json\n");
				return EXIT_USAGE;
			}
			break;
		case 'K':
			print_key = true;
			break;
		case 'h':
			usage_consume(stdout);
			return EXIT_OK;
		default:
			usage_consume(stderr);
			return EXIT_USAGE;
		}
	}
	if (group && optind < argc)
		return consume_group(g, group, (const char *const *)argv + optind, argc - optind, from,
				     count, timeout_ms, json, print_key);
	if (optind != argc - 1) {
		usage_consume(stderr);
		return EXIT_USAGE;
	}
	topic = argv[optind];
	if (!strcmp(from, "beginning"))
		start = SLUICE_OFFSET_BEGINNING;
	else if (!strcmp(from, "end"))
		start = SLUICE_OFFSET_END;
	else if (!strncmp(from, "offset:", 7) && from[7])
		start = atoll(from + 7);
	else if (!strncmp(from, "time:", 5) && from[5])
		start_ts = atoll(from + 5);
	else {
		fprintf(stderr, "sluice: --from %s: expected beginning, end, offset:N or time:MS\n",
			from);
		return EXIT_USAGE;
	}
	if (start < SLUICE_OFFSET_BEGINNING) {
		fprintf(stderr, "sluice: bad offset in --from\n");
		return EXIT_USAGE;
	}
	nparts = cli_partition_count(g, topic);
	if (nparts < 0)
		return EXIT_ERR;
	if (only >= nparts) {
		fprintf(stderr, "sluice: %s has %d partitions\n", topic, nparts);
		return EXIT_ERR;
	}
	conf = cli_conf(g);
	if (!conf)
		return EXIT_USAGE;
	if (exit_at_end && !cli_conf_set(conf, "enable.partition.eof", "true")) {
		sluice_conf_destroy(conf);
		return EXIT_USAGE;
	}
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	for (int32_t p = 0; p < nparts; p++) {
		int64_t off = start;

		if (only >= 0 && p != only)
			continue;
		if (start_ts >= 0) {
			sluice_err_t err =
				sluice_consumer_offsets_for_times(c, topic, p, start_ts, &off, 30000);

			if (err) {
				fprintf(stderr, "sluice: offsets for time: %s\n", sluice_err2str(err));
				sluice_consumer_destroy(c);
				return EXIT_ERR;
			}
			if (off < 0)
				off = SLUICE_OFFSET_END;
		}
		sluice_consumer_assign(c, topic, p, off);
	}
	last_msg = (int64_t)time(NULL) * 1000;
	while (!stop_flag && (count < 0 || got < count)) {
		sluice_message_t *m = sluice_consumer_poll(c, 100);
		struct timespec ts;
		int64_t now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (!m) {
			if (timeout_ms >= 0 && now - last_msg >= timeout_ms) {
				if (count > 0)
					rc = EXIT_INCOMPLETE;
				break;
			}
			continue;
		}
		if (got == 0 && last_msg > 1000000000000LL)
			last_msg = now;
		last_msg = now;
		if (sluice_message_err(m)) {
			if (sluice_message_err(m) == SLUICE_ERR_PARTITION_EOF) {
				at_end++;
				sluice_message_destroy(m);
				if (exit_at_end && at_end >= (only >= 0 ? 1 : nparts))
					break;
				continue;
			}
			fprintf(stderr, "sluice: %s\n", sluice_message_errstr(m));
			sluice_message_destroy(m);
			rc = EXIT_ERR;
			if (only >= 0 || nparts == 1)
				break;
			continue;
		}
		if (json) {
			print_json(m);
		} else {
			size_t klen;
			const void *key = sluice_message_key(m, &klen);

			if (print_key) {
				if (key)
					fwrite(key, 1, klen, stdout);
				putchar('\t');
			}
			if (sluice_message_value(m))
				fwrite(sluice_message_value(m), 1, sluice_message_len(m), stdout);
			putchar('\n');
		}
		got++;
		sluice_message_destroy(m);
	}
	fflush(stdout);
	sluice_consumer_destroy(c);
	if (timeout_ms < 0 && count > 0 && got < count && !stop_flag && rc == EXIT_OK)
		rc = EXIT_INCOMPLETE;
	return rc;
}

int main(int argc, char **argv)
{
	struct cli_global g = { 0 };
	int i = 1;

	g.brokers = getenv("SLUICE_BROKERS") ? getenv("SLUICE_BROKERS") : "localhost:9092";
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	while (i < argc && argv[i][0] == '-') {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage_main(stdout);
			return EXIT_OK;
		}
		if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			printf("sluice %s (libsluice %s)\n", SLUICE_VERSION_STR, sluice_version_str());
			return EXIT_OK;
		}
		if ((!strcmp(a, "-b") || !strcmp(a, "--brokers")) && i + 1 < argc) {
			g.brokers = argv[i + 1];
			i += 2;
		} else if (!strncmp(a, "-b", 2) && a[2]) {
			g.brokers = a + 2;
			i++;
		} else if (!strcmp(a, "-X") && i + 1 < argc && g.nsets < 64) {
			g.sets[g.nsets++] = argv[i + 1];
			i += 2;
		} else {
			fprintf(stderr, "sluice: unknown option %s\n", a);
			usage_main(stderr);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage_main(stderr);
		return EXIT_USAGE;
	}
	argc -= i;
	argv += i;
	if (!strcmp(argv[0], "topic"))
		return cmd_topic(&g, argc, argv);
	if (!strcmp(argv[0], "produce"))
		return cmd_produce(&g, argc, argv);
	if (!strcmp(argv[0], "consume"))
		return cmd_consume(&g, argc, argv);
	if (!strcmp(argv[0], "group"))
		return cli_group(&g, argc, argv);
	if (!strcmp(argv[0], "txn"))
		return cli_txn(&g, argc, argv);
	if (!strcmp(argv[0], "bench"))
		return cli_bench(&g, argc, argv);
	fprintf(stderr, "sluice: unknown command \"%s\"\n", argv[0]);
	usage_main(stderr);
	return EXIT_USAGE;
}
