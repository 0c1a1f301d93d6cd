/*
 * cli_group.c — `sluice group list | describe G | reset-offsets G | delete G`
 * (docs/client.md).  Single-threaded; blocking admin calls.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage_group(FILE *f)
{
	fprintf(f, "Usage:\n"
		   "  sluice group list               groups known to the broker\n"
		   "  sluice group describe G         state, members (client id, host, assigned\n"
		   "                                  partitions), committed offsets and lag\n"
		   "  sluice group reset-offsets G --topic T (--to-earliest | --to-latest |\n"
		   "                                  --to-offset N)  commit new offsets for every\n"
		   "                                  partition of T (the group must be empty)\n"
		   "  sluice group delete G           delete an empty group and its offsets\n"
		   "Exit status: 0 ok, 1 error (e.g. group not empty, unknown group), 2 usage.\n");
}

/* A plain consumer for watermark look-ups (NULL: message printed). */
static sluice_consumer_t *group_lookup_consumer(const struct cli_global *g)
{
	sluice_conf_t *conf = cli_conf(g);
	sluice_consumer_t *c;
	char errstr[512];

	if (!conf)
		return NULL;
	c = sluice_consumer_new(conf, errstr, sizeof(errstr));
	if (!c) {
		fprintf(stderr, "sluice: %s\n", errstr);
		sluice_conf_destroy(conf);
	}
	return c;
}

static int group_list(const struct cli_global *g)
{
	sluice_admin_t *a = cli_admin(g);
	sluice_group_info_t *v = NULL;
	size_t n = 0;
	char errstr[512] = "";
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	err = sluice_admin_list_groups(a, &v, &n, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: %s\n", errstr);
		return EXIT_ERR;
	}
	for (size_t i = 0; i < n; i++)
		printf("%s\t%s\n", v[i].group_id, v[i].protocol_type);
	sluice_group_infos_destroy(v, n);
	return EXIT_OK;
}

static int group_describe(const struct cli_global *g, const char *group)
{
	sluice_admin_t *a = cli_admin(g);
	sluice_group_description_t *d = NULL;
	sluice_topic_partition_t *offs = NULL;
	sluice_consumer_t *c;
	size_t noffs = 0;
	char errstr[512] = "";
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	err = sluice_admin_describe_group(a, group, &d, 30000, errstr, sizeof(errstr));
	if (!err && d->err)
		snprintf(errstr, sizeof(errstr), "%s", sluice_err2str(err = d->err));
	if (!err)
		err = sluice_admin_group_offsets(a, group, &offs, &noffs, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: group %s: %s\n", group, errstr);
		sluice_group_description_destroy(d);
		return EXIT_ERR;
	}
	if (!strcmp(d->state, "Dead") && !noffs) {
		fprintf(stderr, "sluice: group %s: not found\n", group);
		sluice_group_description_destroy(d);
		return EXIT_ERR;
	}
	printf("group %s: state %s, protocol %s/%s, %zu members\n", group, d->state,
	       d->protocol_type, d->protocol, d->nmembers);
	for (size_t i = 0; i < d->nmembers; i++) {
		const sluice_group_member_t *m = &d->members[i];

		printf("  member %s client-id %s host %s partitions:", m->member_id,
		       m->client_id ? m->client_id : "", m->client_host ? m->client_host : "");
		for (size_t j = 0; j < m->nassignment; j++)
			printf(" %s[%d]", m->assignment[j].topic, m->assignment[j].partition);
		printf("\n");
	}
	printf("  TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tMEMBER\n");
	c = noffs ? group_lookup_consumer(g) : NULL;
	for (size_t i = 0; i < noffs; i++) {
		int64_t lo = -1, hi = -1;
		const char *owner = "-";

		if (c && sluice_consumer_query_watermarks(c, offs[i].topic, offs[i].partition, &lo, &hi,
							  10000))
			hi = -1;
		for (size_t k = 0; k < d->nmembers; k++)
			for (size_t j = 0; j < d->members[k].nassignment; j++)
				if (d->members[k].assignment[j].partition == offs[i].partition &&
				    !strcmp(d->members[k].assignment[j].topic, offs[i].topic))
					owner = d->members[k].member_id;
		printf("  %s\t%d\t%" PRId64 "\t%" PRId64 "\t", offs[i].topic, offs[i].partition,
		       offs[i].offset, hi);
		if (hi >= 0 && offs[i].offset >= 0)
			printf("%" PRId64, hi > offs[i].offset ? hi - offs[i].offset : 0);
		else
			printf("-");
		printf("\t%s\n", owner);
	}
	sluice_consumer_destroy(c);
	sluice_topic_partitions_destroy(offs, noffs);
	sluice_group_description_destroy(d);
	return EXIT_OK;
}

static int group_reset(const struct cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "topic", required_argument, NULL, 't' },
		{ "to-earliest", no_argument, NULL, 'e' },
		{ "to-latest", no_argument, NULL, 'l' },
		{ "to-offset", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *topic = NULL, *group;
	int mode = 0, opt, nparts, rc = EXIT_OK;
	long long to = -1;
	sluice_topic_partition_t *parts;
	sluice_consumer_t *c;
	sluice_admin_t *a;
	char errstr[512] = "";
	sluice_err_t err = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
		switch (opt) {
		case 't':
			topic = optarg;
			break;
		case 'e':
		case 'l':
			mode = opt;
			break;
		case 'o':
			mode = 'o';
			to = atoll(optarg);
			break;
		case 'h':
			usage_group(stdout);
			return EXIT_OK;
		default:
			usage_group(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || !topic || !mode || (mode == 'o' && to < 0)) {
		usage_group(stderr);
		return EXIT_USAGE;
	}
	group = argv[optind];
	nparts = cli_partition_count(g, topic);
	if (nparts < 0)
		return EXIT_ERR;
	parts = calloc((size_t)(nparts ? nparts : 1), sizeof(*parts));
	c = group_lookup_consumer(g);
	if (!parts || !c) {
		free(parts);
		sluice_consumer_destroy(c);
		return EXIT_ERR;
	}
	for (int p = 0; p < nparts && !err; p++) {
		int64_t low = -1, hi = -1;

		parts[p].topic = topic;
		parts[p].partition = p;
		err = sluice_consumer_query_watermarks(c, topic, p, &low, &hi, 30000);
		parts[p].offset = mode == 'e' ? low : mode == 'l' ? hi : (to < low ? low : to > hi ? hi : to);
	}
	sluice_consumer_destroy(c);
	if (err) {
		fprintf(stderr, "sluice: offsets of %s: %s\n", topic, sluice_err2str(err));
		free(parts);
		return EXIT_ERR;
	}
	a = cli_admin(g);
	if (!a) {
		free(parts);
		return EXIT_ERR;
	}
	err = sluice_admin_commit_group_offsets(a, group, parts, (size_t)nparts, 30000, errstr,
						sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: reset-offsets %s: %s\n", group, errstr);
		rc = EXIT_ERR;
	} else {
		for (int p = 0; p < nparts; p++)
			printf("%s\t%d\t%" PRId64 "\n", topic, p, parts[p].offset);
	}
	free(parts);
	return rc;
}

static int group_delete(const struct cli_global *g, const char *group)
{
	sluice_admin_t *a = cli_admin(g);
	char errstr[512] = "";
	sluice_err_t err;

	if (!a)
		return EXIT_ERR;
	err = sluice_admin_delete_group(a, group, 30000, errstr, sizeof(errstr));
	sluice_admin_destroy(a);
	if (err) {
		fprintf(stderr, "sluice: delete group %s: %s\n", group, errstr);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

int cli_group(const struct cli_global *g, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		usage_group(sub ? stdout : stderr);
		return sub ? EXIT_OK : EXIT_USAGE;
	}
	if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
		usage_group(stdout);
		return EXIT_OK;
	}
	if (!strcmp(sub, "list") && argc == 2)
		return group_list(g);
	if (!strcmp(sub, "describe") && argc == 3)
		return group_describe(g, argv[2]);
	if (!strcmp(sub, "delete") && argc == 3)
		return group_delete(g, argv[2]);
	if (!strcmp(sub, "reset-offsets"))
		return group_reset(g, argc - 1, argv + 1);
	usage_group(stderr);
	return EXIT_USAGE;
}
