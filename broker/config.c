/*
 * config.c — see config.h.  Every key is one row of a table below: adding a
 * key means adding a row (and a line in docs/operations.md).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blog.h"

enum ktype { K_STR, K_INT32, K_INT64, K_UINT64, K_BOOL, K_LISTEN, K_LEVEL, K_DURABILITY, K_DOUBLE };

struct key {
	const char *name;
	enum ktype type;
	size_t off;     /* offset in struct config or struct topic_conf */
	size_t size;    /* for K_STR */
	int64_t min, max;
	const char *def;
	const char *doc;
};

#define C(f) offsetof(config, f), sizeof(((config *)0)->f)
#define T(f) offsetof(topic_conf, f), 0
#define TD(f) offsetof(config, topic_defaults) + offsetof(topic_conf, f), 0

static const struct key broker_keys[] = {
	{ "listeners", K_LISTEN, 0, 0, 0, 0, "127.0.0.1:9092",
	  "host:port to listen on (port 0 picks a free port; see --port-file)" },
	{ "advertised.host", K_STR, C(advertised_host), 0, 0, "",
	  "host name given to clients in Metadata (empty: the listener's host)" },
	{ "log.dirs", K_STR, C(data_dir), 0, 0, "./data",
	  "data directory: segment logs, checkpoints and sluice.db" },
	{ "num.network.threads", K_INT32, C(network_threads), 0, 256, "0",
	  "event-loop threads (0: one per core)" },
	{ "node.id", K_INT32, C(node_id), 0, INT32_MAX, "1", "broker id shown in Metadata" },
	{ "cluster.id", K_STR, C(cluster_id), 0, 0, "sluice-cluster", "cluster id shown in Metadata" },
	{ "socket.request.max.bytes", K_INT32, C(socket_request_max_bytes), 1024, INT32_MAX, "104857600",
	  "largest request frame accepted; a bigger one closes the connection" },
	{ "max.connections", K_INT32, C(max_connections), 1, 1000000, "10000",
	  "client connections accepted at once; more are closed at accept" },
	{ "max.inflight.requests.per.connection", K_INT32, C(max_inflight_per_conn), 1, 100000, "256",
	  "requests read ahead of their responses before reading pauses" },
	{ "auto.create.topics.enable", K_BOOL, C(auto_create_topics), 0, 1, "true",
	  "create a topic when Metadata asks for one that does not exist" },
	{ "num.partitions", K_INT32, C(num_partitions), 1, 100000, "1",
	  "partitions of an auto-created topic (and of CreateTopics with -1)" },
	{ "log.flush.interval.ms", K_INT64, C(flush_interval_ms), 10, INT32_MAX, "1000",
	  "pagecache durability: how often data is fdatasync'ed and the recovery checkpoint written" },
	{ "log.retention.check.interval.ms", K_INT64, C(retention_check_interval_ms), 10, INT64_MAX, "300000",
	  "how often retention deletes old segments" },
	{ "log.preallocate.bytes", K_UINT64, C(preallocate_bytes), 0, 64 << 20, "1048576",
	  "fsync durability: zeros kept written ahead of each active segment's end, so that a sync "
	  "rewrites blocks instead of growing the file (about half the cost on ext4); 0: off" },
	{ "log.level", K_LEVEL, C(log_level), 0, 0, "info", "debug, info, warn or error" },
	{ "group.min.session.timeout.ms", K_INT32, C(group_min_session_timeout_ms), 1, INT32_MAX, "1000",
	  "smallest session.timeout.ms a consumer group member may ask for" },
	{ "group.max.session.timeout.ms", K_INT32, C(group_max_session_timeout_ms), 1, INT32_MAX, "1800000",
	  "largest session.timeout.ms a consumer group member may ask for" },
	{ "group.initial.rebalance.delay.ms", K_INT32, C(group_initial_rebalance_delay_ms), 0, INT32_MAX, "3000",
	  "how long the first rebalance of an empty group waits for more members to join" },
	{ "transaction.timeout.ms", K_INT64, C(transaction_timeout_ms), 0, INT32_MAX, "6000",
	  "a half message not ended within this long is checked back with its producer group" },
	{ "transaction.check.max", K_INT32, C(transaction_check_max), 1, 1000000, "15",
	  "unanswered checks after which a half message is discarded (and recorded)" },
	{ "transaction.retention.ms", K_INT64, C(transaction_retention_ms), 1, INT64_MAX, "604800000",
	  "committed and rolled-back transactions are deleted from sluice.db this long after their end "
	  "(discarded ones are kept until resolved)" },
	{ "transaction.check.rate", K_DOUBLE, C(transaction_check_rate), 0, 1000000, "100",
	  "check-backs handed out per second, over all producer groups (> 0)" },
	{ "transaction.check.burst", K_INT64, C(transaction_check_burst), 1, 1000000, "200",
	  "check-backs handed out at once above transaction.check.rate" },
	{ "transaction.check.lease.ms", K_INT64, C(transaction_check_lease_ms), 1, INT32_MAX, "30000",
	  "how long a check-back handed to a producer waits for its answer before it counts as "
	  "unanswered (also how long a producer that stopped polling stays registered)" },
	{ "transaction.check.backoff.ms", K_INT64, C(transaction_check_backoff_ms), 1, INT32_MAX,
	  "6000", "wait before checking again after the first unanswered (or UNKNOWN) check" },
	{ "transaction.check.backoff.max.ms", K_INT64, C(transaction_check_backoff_max_ms), 1,
	  INT32_MAX, "300000", "the waits between checks double up to this" },
	{ "transaction.check.max.outstanding", K_INT32, C(transaction_check_max_outstanding), 1,
	  10000000, "10000", "check-backs out (handed to producers, not yet answered) at once" },
	{ "transaction.dead.letter.topic", K_STR, C(transaction_dead_letter_topic), 0, 0, "",
	  "topic that gets a copy of every discarded transaction's message, with headers naming "
	  "the transaction (empty: none; the topic must exist)" },
	{ "producer.id.expiration.ms", K_INT64, C(producer_id_expiration_ms), 1, INT64_MAX, "86400000",
	  "an idempotent producer that has not written to a partition for this long is forgotten "
	  "there (its next batch must start at sequence 0), as in Kafka" },
	{ "producer.id.expiration.check.interval.ms", K_INT64,
	  C(producer_id_expiration_check_interval_ms), 10, INT32_MAX, "600000",
	  "how often idle partitions are checked for expired producers (written ones are checked "
	  "at each log.flush.interval.ms)" },
	{ "offsets.retention.minutes", K_INT64, C(offsets_retention_minutes), 1, INT32_MAX, "10080",
	  "committed offsets of a group with no members are deleted this long after its last commit "
	  "or after it became empty, whichever is later (KIP-211)" },
	{ "offsets.retention.check.interval.ms", K_INT64, C(offsets_retention_check_interval_ms), 100,
	  INT32_MAX, "60000",
	  "how often the offsets of groups with no members are checked against "
	  "offsets.retention.minutes" },
	/* Defaults of the topic-level keys. */
	{ "message.max.bytes", K_INT32, TD(max_message_bytes), 64, INT32_MAX, "1048588",
	  "largest record batch accepted (topic key max.message.bytes)" },
	{ "log.segment.bytes", K_UINT64, TD(log.segment_bytes), 1024, INT32_MAX, "1073741824",
	  "segment size before a roll (topic key segment.bytes)" },
	{ "log.roll.ms", K_INT64, TD(log.segment_ms), 1, INT64_MAX, "604800000",
	  "segment age before a roll (topic key segment.ms)" },
	{ "log.retention.ms", K_INT64, TD(log.retention_ms), -1, INT64_MAX, "604800000",
	  "delete segments older than this; -1 keeps forever (topic key retention.ms)" },
	{ "log.retention.bytes", K_INT64, TD(log.retention_bytes), -1, INT64_MAX, "-1",
	  "delete oldest segments above this size per partition; -1: no limit (topic key retention.bytes)" },
	{ "log.index.interval.bytes", K_INT32, TD(log.index_interval_bytes), 0, INT32_MAX, "4096",
	  "bytes of log between sparse index entries (topic key index.interval.bytes)" },
	{ "produce.rate.messages", K_DOUBLE, TD(limit.msg_rate), 0, 1000000000000LL, "0",
	  "produce rate limit in messages/s per topic (0: none; topic key of the same name)" },
	{ "produce.burst.messages", K_INT64, TD(limit.msg_burst), 0, INT64_MAX, "0",
	  "messages admitted at once above the rate (0: one second's worth)" },
	{ "produce.rate.bytes", K_DOUBLE, TD(limit.byte_rate), 0, 1000000000000LL, "0",
	  "produce rate limit in bytes/s per topic (0: none)" },
	{ "produce.burst.bytes", K_INT64, TD(limit.byte_burst), 0, INT64_MAX, "0",
	  "bytes admitted at once above the rate (0: one second's worth)" },
	{ "produce.queue.max.requests", K_INT32, TD(limit.queue_max), 0, 1000000, "1000",
	  "produce requests parked per topic while waiting for tokens; more are rejected" },
	{ "produce.queue.max.wait.ms", K_INT32, TD(limit.queue_max_wait_ms), 0, 3600000, "500",
	  "longest a produce request is parked for tokens; a longer wait is rejected at once "
	  "with THROTTLING_QUOTA_EXCEEDED (0: never park)" },
	{ "client.produce.rate.messages", K_DOUBLE, C(client_limit.msg_rate), 0, 1000000000000LL, "0",
	  "produce limit per client id in messages/s, across topics, fail-fast (0: none)" },
	{ "client.produce.burst.messages", K_INT64, C(client_limit.msg_burst), 0, INT64_MAX, "0",
	  "messages a client id may send at once above its rate (0: one second's worth)" },
	{ "client.produce.rate.bytes", K_DOUBLE, C(client_limit.byte_rate), 0, 1000000000000LL, "0",
	  "produce limit per client id in bytes/s (0: none)" },
	{ "client.produce.burst.bytes", K_INT64, C(client_limit.byte_burst), 0, INT64_MAX, "0",
	  "bytes a client id may send at once above its rate (0: one second's worth)" },
	{ "log.durability", K_DURABILITY, TD(log.synced), 0, 0, "pagecache",
	  "pagecache: ack once written to the page cache; fsync: ack (and show to consumers) "
	  "only after fdatasync, with group commit (topic key durability)" },
};

static const struct key topic_keys[] = {
	{ "max.message.bytes", K_INT32, T(max_message_bytes), 64, INT32_MAX, NULL, NULL },
	{ "segment.bytes", K_UINT64, T(log.segment_bytes), 1024, INT32_MAX, NULL, NULL },
	{ "segment.ms", K_INT64, T(log.segment_ms), 1, INT64_MAX, NULL, NULL },
	{ "retention.ms", K_INT64, T(log.retention_ms), -1, INT64_MAX, NULL, NULL },
	{ "retention.bytes", K_INT64, T(log.retention_bytes), -1, INT64_MAX, NULL, NULL },
	{ "index.interval.bytes", K_INT32, T(log.index_interval_bytes), 0, INT32_MAX, NULL, NULL },
	{ "durability", K_DURABILITY, T(log.synced), 0, 0, NULL, NULL },
	{ "produce.rate.messages", K_DOUBLE, T(limit.msg_rate), 0, 1000000000000LL, NULL, NULL },
	{ "produce.burst.messages", K_INT64, T(limit.msg_burst), 0, INT64_MAX, NULL, NULL },
	{ "produce.rate.bytes", K_DOUBLE, T(limit.byte_rate), 0, 1000000000000LL, NULL, NULL },
	{ "produce.burst.bytes", K_INT64, T(limit.byte_burst), 0, INT64_MAX, NULL, NULL },
	{ "produce.queue.max.requests", K_INT32, T(limit.queue_max), 0, 1000000, NULL, NULL },
	{ "produce.queue.max.wait.ms", K_INT32, T(limit.queue_max_wait_ms), 0, 3600000, NULL, NULL },
};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_listen(config *c, const char *v)
{
	const char *colon = strrchr(v, ':');
	int64_t port;

	if (!colon || colon == v || (size_t)(colon - v) >= sizeof(c->listen_host))
		return -1;
	if (parse_int(colon + 1, 0, 65535, &port) < 0)
		return -1;
	memcpy(c->listen_host, v, (size_t)(colon - v));
	c->listen_host[colon - v] = '\0';
	c->listen_port = (int)port;
	return 0;
}

static int set_key(void *base, const struct key *k, const char *v, char *err, size_t errlen)
{
	char *p = (char *)base + k->off;
	int64_t n;

	switch (k->type) {
	case K_STR:
		if (strlen(v) >= k->size)
			goto bad;
		strcpy(p, v);
		return 0;
	case K_INT32:
		if (parse_int(v, k->min, k->max, &n) < 0)
			goto bad;
		*(int32_t *)p = (int32_t)n;
		return 0;
	case K_INT64:
		if (parse_int(v, k->min, k->max, &n) < 0)
			goto bad;
		*(int64_t *)p = n;
		return 0;
	case K_UINT64:
		if (parse_int(v, k->min, k->max, &n) < 0)
			goto bad;
		*(uint64_t *)p = (uint64_t)n;
		return 0;
	case K_BOOL:
		if (!strcasecmp(v, "true") || !strcmp(v, "1"))
			*(bool *)p = true;
		else if (!strcasecmp(v, "false") || !strcmp(v, "0"))
			*(bool *)p = false;
		else
			goto bad;
		return 0;
	case K_LISTEN:
		if (parse_listen(base, v) < 0)
			goto bad;
		return 0;
	case K_LEVEL:
		if ((n = blog_parse_level(v)) < 0)
			goto bad;
		*(int *)p = (int)n;
		return 0;
	case K_DOUBLE: {
		char *end;
		double d;

		errno = 0;
		d = strtod(v, &end);
		if (errno || end == v || *end != '\0' || !(d >= (double)k->min) || d > (double)k->max)
			goto bad;
		*(double *)p = d;
		return 0;
	}
	case K_DURABILITY:
		if (!strcmp(v, "pagecache"))
			*(bool *)p = false;
		else if (!strcmp(v, "fsync"))
			*(bool *)p = true;
		else
			goto bad;
		return 0;
	}
bad:
	if (k->type == K_DOUBLE)
		snprintf(err, errlen, "%s: '%s' is not a number in [%lld, %lld]", k->name, v,
			 (long long)k->min, (long long)k->max);
	else if (k->type == K_INT32 || k->type == K_INT64 || k->type == K_UINT64)
		snprintf(err, errlen, "%s: '%s' is not an integer in [%lld, %lld]", k->name, v,
			 (long long)k->min, (long long)k->max);
	else if (k->type == K_DURABILITY)
		snprintf(err, errlen, "%s: '%s' is not 'pagecache' or 'fsync'", k->name, v);
	else if (k->type == K_LISTEN)
		snprintf(err, errlen, "%s: '%s' is not host:port", k->name, v);
	else
		snprintf(err, errlen, "%s: bad value '%s'", k->name, v);
	return -1;
}

static void get_key(const void *base, const struct key *k, char *out, size_t cap)
{
	const char *p = (const char *)base + k->off;

	switch (k->type) {
	case K_STR: snprintf(out, cap, "%s", p); break;
	case K_INT32: snprintf(out, cap, "%d", *(const int32_t *)p); break;
	case K_INT64: snprintf(out, cap, "%lld", (long long)*(const int64_t *)p); break;
	case K_UINT64: snprintf(out, cap, "%llu", (unsigned long long)*(const uint64_t *)p); break;
	case K_BOOL: snprintf(out, cap, "%s", *(const bool *)p ? "true" : "false"); break;
	case K_LISTEN: {
		const config *c = base;
		snprintf(out, cap, "%s:%d", c->listen_host, c->listen_port);
		break;
	}
	case K_LEVEL: {
		static const char *const names[] = { "debug", "info", "warn", "error" };
		snprintf(out, cap, "%s", names[*(const int *)p & 3]);
		break;
	}
	case K_DURABILITY: snprintf(out, cap, "%s", *(const bool *)p ? "fsync" : "pagecache"); break;
	case K_DOUBLE: snprintf(out, cap, "%.15g", *(const double *)p); break;
	}
}

void config_defaults(config *c)
{
	char err[CONFIG_ERRLEN];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NKEYS(broker_keys); i++)
		if (set_key(c, &broker_keys[i], broker_keys[i].def, err, sizeof(err)) < 0)
			abort(); /* a default that does not parse is a bug in the table */
}

int config_set(config *c, const char *key, const char *value, char *err, size_t errlen)
{
	for (size_t i = 0; i < NKEYS(broker_keys); i++)
		if (!strcmp(broker_keys[i].name, key))
			return set_key(c, &broker_keys[i], value, err, errlen);
	snprintf(err, errlen, "unknown configuration key '%s' (see sluiced --help)", key);
	return -1;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen)
{
	char line[4096], sub[CONFIG_ERRLEN];
	FILE *f = fopen(path, "r");
	int lineno = 0, rc = 0;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq;

		lineno++;
		if (*s == '\0' || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%d: expected key=value", path, lineno);
			rc = -1;
			break;
		}
		*eq = '\0';
		if (config_set(c, trim(s), trim(eq + 1), sub, sizeof(sub)) < 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, sub);
			rc = -1;
			break;
		}
	}
	fclose(f);
	return rc;
}

int config_validate(const config *c, char *err, size_t errlen)
{
	if (c->topic_defaults.max_message_bytes > c->socket_request_max_bytes) {
		snprintf(err, errlen, "message.max.bytes (%d) exceeds socket.request.max.bytes (%d)",
			 c->topic_defaults.max_message_bytes, c->socket_request_max_bytes);
		return -1;
	}
	/* the check-back token bucket needs a rate it can count in */
	if (!(c->transaction_check_rate >= 0.001)) {
		snprintf(err, errlen, "transaction.check.rate must be at least 0.001 checks/s");
		return -1;
	}
	if (c->transaction_check_backoff_max_ms < c->transaction_check_backoff_ms) {
		snprintf(err, errlen, "transaction.check.backoff.max.ms (%lld) is below "
			 "transaction.check.backoff.ms (%lld)",
			 (long long)c->transaction_check_backoff_max_ms,
			 (long long)c->transaction_check_backoff_ms);
		return -1;
	}
	if (c->data_dir[0] == '\0') {
		snprintf(err, errlen, "log.dirs is empty");
		return -1;
	}
	return 0;
}

void config_print(FILE *f, const config *c)
{
	char v[PATH_MAX + 32];

	for (size_t i = 0; i < NKEYS(broker_keys); i++) {
		get_key(c, &broker_keys[i], v, sizeof(v));
		fprintf(f, "%s=%s\n", broker_keys[i].name, v);
	}
}

void config_print_help(FILE *f)
{
	int w = 0;

	/* the documentation column starts after the longest key */
	for (size_t i = 0; i < NKEYS(broker_keys); i++)
		if ((int)strlen(broker_keys[i].name) > w)
			w = (int)strlen(broker_keys[i].name);
	for (size_t i = 0; i < NKEYS(broker_keys); i++)
		fprintf(f, "  %-*s %s\n  %-*s (default: %s)\n", w, broker_keys[i].name,
			broker_keys[i].doc, w, "",
			broker_keys[i].def[0] ? broker_keys[i].def : "\"\"");
}

int topic_conf_set(topic_conf *t, const char *key, const char *value, char *err, size_t errlen)
{
	for (size_t i = 0; i < NKEYS(topic_keys); i++)
		if (!strcmp(topic_keys[i].name, key))
			return set_key(t, &topic_keys[i], value, err, errlen);
	snprintf(err, errlen, "unknown topic configuration '%s'", key);
	return -1;
}

bool topic_conf_get(const topic_conf *t, int i, const char **key, char *value, size_t cap)
{
	if (i < 0 || (size_t)i >= NKEYS(topic_keys))
		return false;
	*key = topic_keys[i].name;
	get_key(t, &topic_keys[i], value, cap);
	return true;
}
