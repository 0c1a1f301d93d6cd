/*
 * cli_txn.c — `sluice txn list | describe | commit | rollback | resume |
 * prepare` (docs/client.md, docs/transactions.md): operator view of the
 * broker's half messages.  Single-threaded; blocking admin calls.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define PAGE 1000

static void usage_txn(FILE *f)
{
	fprintf(f,
		"Usage:\n"
		"  sluice txn list [--group G] [--state S[,S...]] [--limit N] [--after ID] [--json]\n"
		"                      transactions in id order (states: PENDING, COMMITTING,\n"
		"                      COMMITTED, ROLLED_BACK, DISCARDED; default all, limit 1000)\n"
		"  sluice txn describe ID      one transaction with its message (kept until ended)\n"
		"  sluice txn commit ID        operator commit (also of a DISCARDED transaction)\n"
		"  sluice txn rollback ID      operator rollback (also of a DISCARDED transaction)\n"
		"  sluice txn resume ID        DISCARDED -> PENDING: the group's producers are\n"
		"                              asked again, with a fresh check count\n"
		"  sluice txn prepare TOPIC --group G [--key K] [--partition N] [--check-timeout MS]\n"
		"                      VALUE   store a half message and print its id, without\n"
		"                              ending it (testing check-back)\n"
		"Exit status: 0 ok, 1 error (unknown id, state conflict, broker), 2 usage.\n");
}

static int parse_id(const char *s, int64_t *id)
{
	char *end;
	long long v = strtoll(s, &end, 10);

	if (!*s || *end || v < 0) {
		fprintf(stderr, "sluice: \"%s\" is not a transaction id\n", s);
		return EXIT_USAGE;
	}
	*id = v;
	return EXIT_OK;
}

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || !gmtime_r(&t, &tm)) {
		snprintf(buf, cap, "-");
		return;
	}
	strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + strlen(buf), cap - strlen(buf), ".%03dZ", (int)(ms % 1000));
}

/* Bytes as text: printable ASCII as is, the rest as \xNN. */
static void print_bytes(const void *p, size_t len)
{
	const unsigned char *b = p;

	if (!p) {
		printf("(null)");
		return;
	}
	for (size_t i = 0; i < len; i++) {
		if (isprint(b[i]) && b[i] != '\\')
			putchar(b[i]);
		else
			printf("\\x%02x", b[i]);
	}
}

static void json_str(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void print_row(const sluice_txn_info_t *t, bool json)
{
	char created[40], next[40];

	if (json) {
		printf("{\"txn_id\":%" PRId64 ",\"group\":", t->txn_id);
		json_str(t->producer_group);
		printf(",\"topic\":");
		json_str(t->topic);
		printf(",\"partition\":%d,\"state\":\"%s\",\"created_ms\":%" PRId64
		       ",\"ended_ms\":%" PRId64 ",\"check_count\":%d,\"next_check_ms\":%" PRId64
		       ",\"log_offset\":%" PRId64 ",\"discard_reason\":",
		       t->partition, sluice_txn_state_name(t->state), t->created_ms, t->ended_ms,
		       t->check_count, t->next_check_ms, t->log_offset);
		if (t->discard_reason)
			json_str(t->discard_reason);
		else
			printf("null");
		printf(",\"dead_letter_offset\":%" PRId64 "}\n", t->dead_letter_offset);
		return;
	}
	fmt_time(t->created_ms, created, sizeof(created));
	fmt_time(t->state == SLUICE_TXN_PENDING ? t->next_check_ms : 0, next, sizeof(next));
	printf("%" PRId64 "\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t", t->txn_id, t->producer_group, t->topic,
	       t->partition, sluice_txn_state_name(t->state), created, t->check_count, next);
	if (t->log_offset >= 0)
		printf("%" PRId64, t->log_offset);
	else
		printf("-");
	printf("\t%s\t", t->discard_reason ? t->discard_reason : "");
	if (t->dead_letter_offset >= 0)
		printf("%" PRId64 "\n", t->dead_letter_offset);
	else
		printf("%s\n", t->dead_letter_offset == SLUICE_TXN_DEAD_LETTER_NEVER     ? "never"
				: t->dead_letter_offset == SLUICE_TXN_DEAD_LETTER_UNKNOWN ? "unknown"
											  : "-");
}

/* "PENDING,DISCARDED" → bit mask; 0 on an unknown name. */
static unsigned parse_states(const char *list)
{
	unsigned mask = 0;
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		int i;

		for (i = 0; i < 5; i++)
			if (!strcasecmp(s, sluice_txn_state_name(i)))
				break;
		if (i == 5) {
			fprintf(stderr, "sluice: unknown transaction state \"%s\"\n", s);
			return 0;
		}
		mask |= 1u << i;
	}
	return mask;
}

static int txn_list(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "group", required_argument, NULL, 'g' }, { "state", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'n' }, { "after", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },        { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *group = NULL;
	unsigned mask = 0;
	long long limit = 1000;
	int64_t after = 0;
	bool json = false;
	sluice_admin_t *a;
	int opt, rc = EXIT_OK;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "g:s:n:a:jh", lo, NULL)) != -1) {
		switch (opt) {
		case 'g': group = optarg; break;
		case 's':
			if (!(mask = parse_states(optarg)))
				return EXIT_USAGE;
			break;
		case 'n': limit = atoll(optarg); break;
		case 'a':
			if (parse_id(optarg, &after))
				return EXIT_USAGE;
			break;
		case 'j': json = true; break;
		case 'h': usage_txn(stdout); return EXIT_OK;
		default: usage_txn(stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc || limit <= 0) {
		usage_txn(stderr);
		return EXIT_USAGE;
	}
	if (!(a = cli_admin(g)))
		return EXIT_ERR;
	if (!json)
		printf("TXN_ID\tGROUP\tTOPIC\tPARTITION\tSTATE\tCREATED\tCHECKS\tNEXT_CHECK\tOFFSET\tREASON"
		       "\tDEAD_LETTER\n");
	while (limit > 0) {
		sluice_txn_info_t *v = NULL;
		size_t n = 0;
		char errstr[512] = "";
		int want = limit < PAGE ? (int)limit : PAGE;
		sluice_err_t err = sluice_admin_list_txns(a, group, mask, after, want, &v, &n, 30000,
							  errstr, sizeof(errstr));

		if (err) {
			fprintf(stderr, "sluice: %s\n", errstr);
			rc = EXIT_ERR;
			break;
		}
		for (size_t i = 0; i < n; i++)
			print_row(&v[i], json);
		if (n)
			after = v[n - 1].txn_id;
		sluice_txn_infos_destroy(v, n);
		limit -= (long long)n;
		if ((int)n < want)
			break;
	}
	sluice_admin_destroy(a);
	return rc;
}

static int txn_describe(const struct cli_global *g, int64_t id)
{
	sluice_admin_t *a = cli_admin(g);
	sluice_txn_info_t *t = NULL;
	char errstr[512] = "", created[40], ended[40], next[40];
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	err = sluice_admin_describe_txn(a, id, &t, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: txn %" PRId64 ": %s\n", id, errstr);
		return EXIT_ERR;
	}
	fmt_time(t->created_ms, created, sizeof(created));
	fmt_time(t->ended_ms, ended, sizeof(ended));
	fmt_time(t->state == SLUICE_TXN_PENDING ? t->next_check_ms : 0, next, sizeof(next));
	printf("txn_id:         %" PRId64 "\n"
	       "group:          %s\n"
	       "topic:          %s [%d]\n"
	       "state:          %s\n"
	       "created:        %s\n"
	       "ended:          %s\n"
	       "checks:         %d (next %s)\n",
	       t->txn_id, t->producer_group, t->topic, t->partition,
	       sluice_txn_state_name(t->state), created, ended, t->check_count, next);
	if (t->log_offset >= 0)
		printf("log offset:     %" PRId64 "\n", t->log_offset);
	if (t->discard_reason)
		printf("discard reason: %s\n", t->discard_reason);
	if (t->dead_letter_offset >= 0)
		printf("dead letter:    copied at offset %" PRId64 " of the dead-letter topic\n",
		       t->dead_letter_offset);
	else if (t->dead_letter_offset == SLUICE_TXN_DEAD_LETTER_NEVER)
		printf("dead letter:    not copied: it can never be written to the dead-letter "
		       "topic (see the broker's log)\n");
	else if (t->dead_letter_offset == SLUICE_TXN_DEAD_LETTER_UNKNOWN)
		printf("dead letter:    copied, at an offset no longer known (see the broker's "
		       "log)\n");
	if (t->key || t->value || t->nheaders) {
		printf("key:            ");
		print_bytes(t->key, t->key_len);
		printf("\nvalue:          ");
		print_bytes(t->value, t->value_len);
		printf("\n");
		for (size_t i = 0; i < t->nheaders; i++) {
			printf("header:         %s=", t->headers[i].name);
			print_bytes(t->headers[i].value, t->headers[i].value_len);
			printf("\n");
		}
	} else {
		printf("message:        (no longer kept: the transaction has ended)\n");
	}
	sluice_txn_infos_destroy(t, 1);
	return EXIT_OK;
}

/* commit / rollback / resume with the operator flag. */
static int txn_decide(const struct cli_global *g, const char *what, int64_t id)
{
	sluice_admin_t *a = cli_admin(g);
	char errstr[512] = "";
	int state = -1;
	int64_t off = -1;
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	if (!strcmp(what, "resume"))
		err = sluice_admin_resume_txn(a, id, 30000, errstr, sizeof(errstr));
	else
		err = sluice_admin_end_txn(a, id,
					   !strcmp(what, "commit") ? SLUICE_TXN_COMMIT
								   : SLUICE_TXN_ROLLBACK,
					   &state, &off, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: txn %" PRId64 ": %s\n", id, errstr);
		return EXIT_ERR;
	}
	if (!strcmp(what, "resume"))
		printf("txn %" PRId64 ": PENDING (checks resume)\n", id);
	else if (off >= 0)
		printf("txn %" PRId64 ": %s at offset %" PRId64 "\n", id,
		       sluice_txn_state_name(state), off);
	else
		printf("txn %" PRId64 ": %s\n", id, sluice_txn_state_name(state));
	return EXIT_OK;
}

static int txn_prepare(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "group", required_argument, NULL, 'g' },
		{ "key", required_argument, NULL, 'k' },
		{ "partition", required_argument, NULL, 'p' },
		{ "check-timeout", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *group = NULL, *key = NULL, *ctimeout = NULL;
	int32_t partition = SLUICE_PARTITION_ANY, part = -1;
	sluice_txn_producer_t *p;
	sluice_conf_t *conf;
	char errstr[512] = "";
	int64_t id = -1;
	sluice_err_t err;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "g:k:p:c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'g': group = optarg; break;
		case 'k': key = optarg; break;
		case 'p': partition = atoi(optarg); break;
		case 'c': ctimeout = optarg; break;
		case 'h': usage_txn(stdout); return EXIT_OK;
		default: usage_txn(stderr); return EXIT_USAGE;
		}
	}
	if (!group || optind + 2 != argc) {
		fprintf(stderr, "sluice: txn prepare needs TOPIC, VALUE and --group\n");
		return EXIT_USAGE;
	}
	if (!(conf = cli_conf(g)))
		return EXIT_ERR;
	if (!cli_conf_set(conf, "transaction.group", group) ||
	    (ctimeout && !cli_conf_set(conf, "transaction.check.timeout.ms", ctimeout))) {
		sluice_conf_destroy(conf);
		return EXIT_USAGE;
	}
	if (!(p = sluice_txn_producer_new(conf, errstr, sizeof(errstr)))) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
		return EXIT_ERR;
	}
	err = sluice_txn_prepare(p, argv[optind], partition, key, key ? strlen(key) : 0,
				 argv[optind + 1], strlen(argv[optind + 1]), NULL, 0, &id, &part,
				 errstr, sizeof(errstr));
	sluice_txn_producer_destroy(p);
	if (err) {
		fprintf(stderr, "sluice: %s\n", errstr);
		return EXIT_ERR;
	}
	printf("%" PRId64 "\n", id);
	return EXIT_OK;
}

int cli_txn(const struct cli_global *g, int argc, char **argv)
{
	const char *sub = argc >= 2 ? argv[1] : NULL;
	int64_t id;
	int rc;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		usage_txn(sub ? stdout : stderr);
		return sub ? EXIT_OK : EXIT_USAGE;
	}
	if (!strcmp(sub, "list") || !strcmp(sub, "prepare")) {
		/* getopt names argv[0] in its messages: "sluice txn list: ..." */
		static char name_list[] = "sluice txn list", name_prepare[] = "sluice txn prepare";

		argv[1] = !strcmp(sub, "list") ? name_list : name_prepare;
		return sub[0] == 'l' ? txn_list(g, argc - 1, argv + 1)
				     : txn_prepare(g, argc - 1, argv + 1);
	}
	if (strcmp(sub, "describe") && strcmp(sub, "commit") && strcmp(sub, "rollback") &&
	    strcmp(sub, "resume")) {
		fprintf(stderr, "sluice: unknown txn command \"%s\"\n", sub);
		usage_txn(stderr);
		return EXIT_USAGE;
	}
	if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
		usage_txn(stdout);
		return EXIT_OK;
	}
	if (argc != 3) {
		usage_txn(stderr);
		return EXIT_USAGE;
	}
	if ((rc = parse_id(argv[2], &id)))
		return rc;
	if (!strcmp(sub, "describe"))
		return txn_describe(g, id);
	return txn_decide(g, sub, id);
}
