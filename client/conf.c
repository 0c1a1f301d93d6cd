/*
 * conf.c — sluice_conf_t: string key/value configuration with validation.
 *
 * Every key is described once in `keys[]` (name, kind, range, field), so
 * set/get/defaults cannot drift apart.  set() validates fully before it
 * writes, so a rejected value leaves the conf unchanged.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"

enum kind { K_INT, K_INT64, K_BOOL, K_SERVERS, K_STR, K_ACKS, K_COMPRESSION, K_RESET };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	int64_t min, max;
};

#define F(field) offsetof(struct sluice_conf, field)

static const struct key keys[] = {
	{ "bootstrap.servers", K_SERVERS, 0, 0, 0 },
	{ "client.id", K_STR, F(client_id), 0, 0 },
	{ "request.timeout.ms", K_INT, F(request_timeout_ms), 1, 900000 },
	{ "socket.timeout.ms", K_INT, F(request_timeout_ms), 1, 900000 },
	{ "retry.backoff.ms", K_INT, F(retry_backoff_ms), 1, 300000 },
	{ "reconnect.backoff.ms", K_INT, F(reconnect_backoff_ms), 0, 3600000 },
	{ "enable.partition.eof", K_BOOL, F(partition_eof), 0, 0 },
	{ "acks", K_ACKS, F(acks), 0, 0 },
	{ "request.required.acks", K_ACKS, F(acks), 0, 0 },
	{ "linger.ms", K_INT, F(linger_ms), 0, 900000 },
	{ "queue.buffering.max.ms", K_INT, F(linger_ms), 0, 900000 },
	{ "batch.size", K_INT, F(batch_size), 1, 2147483647 },
	{ "batch.num.messages", K_INT, F(batch_num_messages), 1, 1000000 },
	{ "compression.type", K_COMPRESSION, 0, 0, 0 },
	{ "compression.codec", K_COMPRESSION, 0, 0, 0 },
	{ "message.max.bytes", K_INT, F(message_max_bytes), 1000, 1000000000 },
	{ "retries", K_INT, F(retries), 0, 2147483647 },
	{ "message.send.max.retries", K_INT, F(retries), 0, 2147483647 },
	{ "message.timeout.ms", K_INT, F(message_timeout_ms), 0, 2147483647 },
	{ "delivery.timeout.ms", K_INT, F(message_timeout_ms), 0, 2147483647 },
	{ "enable.idempotence", K_BOOL, F(idempotence), 0, 0 },
	{ "max.in.flight", K_INT, F(max_in_flight), 1, 1000000 },
	{ "max.in.flight.requests.per.connection", K_INT, F(max_in_flight), 1, 1000000 },
	{ "queue.buffering.max.messages", K_INT, F(queue_max_msgs), 1, 2147483647 },
	{ "queue.buffering.max.kbytes", K_INT64, F(queue_max_kbytes), 1, INT64_C(2147483647) },
	{ "fetch.min.bytes", K_INT, F(fetch_min_bytes), 1, 100000000 },
	{ "fetch.max.wait.ms", K_INT, F(fetch_max_wait_ms), 0, 300000 },
	{ "fetch.wait.max.ms", K_INT, F(fetch_max_wait_ms), 0, 300000 },
	{ "fetch.max.bytes", K_INT, F(fetch_max_bytes), 1024, 2147483135 },
	{ "max.partition.fetch.bytes", K_INT, F(max_partition_fetch_bytes), 1024, 1000000000 },
	{ "fetch.message.max.bytes", K_INT, F(max_partition_fetch_bytes), 1024, 1000000000 },
	{ "queued.max.messages.kbytes", K_INT64, F(queued_max_kbytes), 1, 2097151 },
	{ "auto.offset.reset", K_RESET, F(auto_offset_reset), 0, 0 },
	{ "check.crcs", K_BOOL, F(check_crcs), 0, 0 },
	{ "group.id", K_STR, F(group_id), 0, 0 },
	{ "group.instance.id", K_STR, F(group_instance_id), 0, 0 },
	{ "partition.assignment.strategy", K_STR, F(assignment_strategy), 0, 0 },
	{ "session.timeout.ms", K_INT, F(session_timeout_ms), 1, 3600000 },
	{ "heartbeat.interval.ms", K_INT, F(heartbeat_interval_ms), 1, 3600000 },
	{ "max.poll.interval.ms", K_INT, F(max_poll_interval_ms), 1, 86400000 },
	{ "enable.auto.commit", K_BOOL, F(auto_commit), 0, 0 },
	{ "auto.commit.interval.ms", K_INT, F(auto_commit_interval_ms), 0, 86400000 },
	{ "topic.metadata.refresh.interval.ms", K_INT, F(metadata_refresh_ms), 10, 3600000 },
	{ "transaction.group", K_STR, F(txn_group), 0, 0 },
	{ "transaction.instance.id", K_STR, F(txn_instance), 0, 0 },
	{ "transaction.check.timeout.ms", K_INT, F(txn_check_timeout_ms), 0, 2147483647 },
};

void conf_errf(char *errstr, size_t errstr_size, const char *fmt, ...)
{
	va_list ap;

	if (!errstr || !errstr_size)
		return;
	va_start(ap, fmt);
	vsnprintf(errstr, errstr_size, fmt, ap);
	va_end(ap);
}

static const struct key *find_key(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

bool conf_parse_servers(const char *list, struct conf_server *out, int *n, char *errstr,
			size_t errstr_size)
{
	const char *p = list;
	int cnt = 0;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char item[300];
		char *colon, *host, *ep;
		long port = 9092;

		while (len && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0 || len >= sizeof(item)) {
			conf_errf(errstr, errstr_size, "bootstrap.servers: empty or too long entry in \"%s\"",
				  list);
			return false;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		host = item;
		/* Drop a "PLAINTEXT://" style scheme as librdkafka does. */
		if ((colon = strstr(item, "://")))
			host = colon + 3;
		if (*host == '[') { /* [ipv6]:port */
			char *rb = strchr(host, ']');

			if (!rb) {
				conf_errf(errstr, errstr_size, "bootstrap.servers: bad address \"%s\"", item);
				return false;
			}
			*rb = '\0';
			colon = rb[1] == ':' ? rb + 1 : NULL;
			host++;
		} else {
			colon = strrchr(host, ':');
		}
		if (colon) {
			*colon = '\0';
			errno = 0;
			port = strtol(colon + 1, &ep, 10);
			if (errno || *ep || ep == colon + 1 || port < 1 || port > 65535) {
				conf_errf(errstr, errstr_size, "bootstrap.servers: bad port in \"%s\"", item);
				return false;
			}
		}
		if (!*host || strlen(host) >= sizeof(out[0].host)) {
			conf_errf(errstr, errstr_size, "bootstrap.servers: bad host in \"%s\"", item);
			return false;
		}
		if (cnt == CONF_MAX_SERVERS) {
			conf_errf(errstr, errstr_size, "bootstrap.servers: more than %d servers",
				  CONF_MAX_SERVERS);
			return false;
		}
		snprintf(out[cnt].host, sizeof(out[cnt].host), "%s", host);
		out[cnt].port = (uint16_t)port;
		cnt++;
		p += len;
		while (*p == ',' || *p == ' ')
			p++;
	}
	if (cnt == 0) {
		conf_errf(errstr, errstr_size, "bootstrap.servers: no server given");
		return false;
	}
	*n = cnt;
	return true;
}

sluice_conf_t *sluice_conf_new(void)
{
	struct sluice_conf *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	snprintf(c->bootstrap, sizeof(c->bootstrap), "localhost:9092");
	snprintf(c->servers[0].host, sizeof(c->servers[0].host), "localhost");
	c->servers[0].port = 9092;
	c->nservers = 1;
	snprintf(c->client_id, sizeof(c->client_id), "sluice");
	c->request_timeout_ms = 30000;
	c->retry_backoff_ms = 100;
	c->reconnect_backoff_ms = 100;
	c->acks = -1;
	c->linger_ms = 5;
	c->batch_size = 1000000;
	c->batch_num_messages = 100000;
	c->message_max_bytes = 1000000;
	c->retries = 2147483647;
	c->message_timeout_ms = 300000;
	c->max_in_flight = 5;
	c->queue_max_msgs = 1000000;
	c->queue_max_kbytes = 32768; /* 32 MiB, as the Java client's buffer.memory: see sluice.h */
	c->fetch_min_bytes = 1;
	c->fetch_max_wait_ms = 500;
	c->fetch_max_bytes = 52428800;
	c->max_partition_fetch_bytes = 1048576;
	c->queued_max_kbytes = 65536;
	c->auto_offset_reset = SLUICE_OFFSET_END;
	snprintf(c->assignment_strategy, sizeof(c->assignment_strategy), "range,roundrobin");
	c->session_timeout_ms = 45000;
	c->heartbeat_interval_ms = 3000;
	c->max_poll_interval_ms = 300000;
	c->auto_commit = true;
	c->auto_commit_interval_ms = 5000;
	c->metadata_refresh_ms = 300000;
	return c;
}

void sluice_conf_destroy(sluice_conf_t *conf)
{
	free(conf);
}

sluice_conf_t *sluice_conf_dup(const sluice_conf_t *conf)
{
	struct sluice_conf *c;

	if (!conf)
		return NULL;
	c = malloc(sizeof(*c));
	if (c)
		memcpy(c, conf, sizeof(*c));
	return c;
}

void sluice_conf_set_rebalance_cb(sluice_conf_t *conf, sluice_rebalance_cb *cb, void *ctx)
{
	if (!conf)
		return;
	conf->rebalance_cb = cb;
	conf->rebalance_ctx = ctx;
}

void sluice_conf_set_txn_check_cb(sluice_conf_t *conf, sluice_txn_check_cb *cb, void *ctx)
{
	if (!conf)
		return;
	conf->txn_check_cb = cb;
	conf->txn_check_ctx = ctx;
}

void sluice_conf_set_delivery_cb(sluice_conf_t *conf, sluice_delivery_cb *cb, void *ctx)
{
	if (!conf)
		return;
	conf->dr_cb = cb;
	conf->dr_ctx = ctx;
}

static bool parse_int(const char *v, int64_t *out)
{
	char *ep;
	long long x;

	errno = 0;
	while (*v == ' ')
		v++;
	x = strtoll(v, &ep, 10);
	if (errno || ep == v || *ep)
		return false;
	*out = x;
	return true;
}

static bool parse_bool(const char *v, bool *out)
{
	if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
		*out = true;
	else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
		 !strcasecmp(v, "off"))
		*out = false;
	else
		return false;
	return true;
}

sluice_err_t sluice_conf_set(sluice_conf_t *conf, const char *key, const char *value,
			     char *errstr, size_t errstr_size)
{
	const struct key *k;
	char *field;
	int64_t iv;
	bool bv;

	if (!conf || !key || !value) {
		conf_errf(errstr, errstr_size, "conf, key and value must not be NULL");
		return SLUICE_ERR_BAD_CONFIG;
	}
	k = find_key(key);
	if (!k) {
		conf_errf(errstr, errstr_size, "No such configuration property: \"%s\"", key);
		return SLUICE_ERR_BAD_CONFIG;
	}
	field = (char *)conf + k->off;
	switch (k->kind) {
	case K_INT:
	case K_INT64:
		if (!parse_int(value, &iv)) {
			conf_errf(errstr, errstr_size, "%s: \"%s\" is not an integer", key, value);
			return SLUICE_ERR_BAD_CONFIG;
		}
		if (iv < k->min || iv > k->max) {
			conf_errf(errstr, errstr_size, "%s: %s is outside %" PRId64 "..%" PRId64, key,
				  value, k->min, k->max);
			return SLUICE_ERR_BAD_CONFIG;
		}
		if (k->kind == K_INT)
			*(int *)field = (int)iv;
		else
			*(int64_t *)field = iv;
		return SLUICE_ERR_NO_ERROR;
	case K_BOOL:
		if (!parse_bool(value, &bv)) {
			conf_errf(errstr, errstr_size, "%s: \"%s\" is not true or false", key, value);
			return SLUICE_ERR_BAD_CONFIG;
		}
		*(bool *)field = bv;
		return SLUICE_ERR_NO_ERROR;
	case K_SERVERS: {
		struct conf_server tmp[CONF_MAX_SERVERS];
		int n;

		if (strlen(value) >= sizeof(conf->bootstrap)) {
			conf_errf(errstr, errstr_size, "bootstrap.servers: value too long");
			return SLUICE_ERR_BAD_CONFIG;
		}
		if (!conf_parse_servers(value, tmp, &n, errstr, errstr_size))
			return SLUICE_ERR_BAD_CONFIG;
		memcpy(conf->servers, tmp, sizeof(tmp));
		conf->nservers = n;
		snprintf(conf->bootstrap, sizeof(conf->bootstrap), "%s", value);
		return SLUICE_ERR_NO_ERROR;
	}
	case K_STR:
		if (strlen(value) >= sizeof(conf->client_id)) {
			conf_errf(errstr, errstr_size, "%s: value longer than %zu bytes", key,
				  sizeof(conf->client_id) - 1);
			return SLUICE_ERR_BAD_CONFIG;
		}
		snprintf(field, sizeof(conf->client_id), "%s", value);
		return SLUICE_ERR_NO_ERROR;
	case K_ACKS:
		if (!strcasecmp(value, "all"))
			iv = -1;
		else if (!parse_int(value, &iv) || (iv != 0 && iv != 1 && iv != -1)) {
			conf_errf(errstr, errstr_size, "acks: \"%s\" must be 0, 1, -1 or all", value);
			return SLUICE_ERR_BAD_CONFIG;
		}
		*(int *)field = (int)iv;
		return SLUICE_ERR_NO_ERROR;
	case K_COMPRESSION:
		if (strcasecmp(value, "none") != 0) {
			if (!strcasecmp(value, "gzip") || !strcasecmp(value, "snappy") ||
			    !strcasecmp(value, "lz4") || !strcasecmp(value, "zstd") ||
			    !strcasecmp(value, "inherit"))
				conf_errf(errstr, errstr_size,
					  "%s: \"%s\" is unsupported: libsluice only sends uncompressed "
					  "batches (use \"none\")", key, value);
			else
				conf_errf(errstr, errstr_size,
					  "%s: \"%s\" is unsupported (unknown codec; only \"none\")", key,
					  value);
			return SLUICE_ERR_BAD_CONFIG;
		}
		return SLUICE_ERR_NO_ERROR;
	case K_RESET:
		if (!strcasecmp(value, "earliest") || !strcasecmp(value, "smallest") ||
		    !strcasecmp(value, "beginning"))
			iv = SLUICE_OFFSET_BEGINNING;
		else if (!strcasecmp(value, "latest") || !strcasecmp(value, "largest") ||
			 !strcasecmp(value, "end"))
			iv = SLUICE_OFFSET_END;
		else if (!strcasecmp(value, "error"))
			iv = SLUICE_OFFSET_INVALID;
		else {
			conf_errf(errstr, errstr_size,
				  "auto.offset.reset: \"%s\" must be earliest, latest or error", value);
			return SLUICE_ERR_BAD_CONFIG;
		}
		*(int64_t *)field = iv;
		return SLUICE_ERR_NO_ERROR;
	}
	return SLUICE_ERR_BAD_CONFIG;
}

sluice_err_t sluice_conf_get(const sluice_conf_t *conf, const char *key, char *dest,
			     size_t *dest_size)
{
	const struct key *k;
	const char *field;
	char tmp[1100];
	size_t need;

	if (!conf || !key || !dest_size)
		return SLUICE_ERR_INVALID_ARG;
	k = find_key(key);
	if (!k)
		return SLUICE_ERR_BAD_CONFIG;
	field = (const char *)conf + k->off;
	switch (k->kind) {
	case K_INT:
	case K_ACKS:
		snprintf(tmp, sizeof(tmp), "%d", *(const int *)field);
		break;
	case K_INT64:
		snprintf(tmp, sizeof(tmp), "%" PRId64, *(const int64_t *)field);
		break;
	case K_BOOL:
		snprintf(tmp, sizeof(tmp), "%s", *(const bool *)field ? "true" : "false");
		break;
	case K_SERVERS:
		snprintf(tmp, sizeof(tmp), "%s", conf->bootstrap);
		break;
	case K_STR:
		snprintf(tmp, sizeof(tmp), "%s", field);
		break;
	case K_COMPRESSION:
		snprintf(tmp, sizeof(tmp), "none");
		break;
	case K_RESET: {
		int64_t v = *(const int64_t *)field;

		snprintf(tmp, sizeof(tmp), "%s",
			 v == SLUICE_OFFSET_BEGINNING ? "earliest"
			 : v == SLUICE_OFFSET_END     ? "latest"
						      : "error");
		break;
	}
	}
	need = strlen(tmp) + 1;
	if (!dest || *dest_size < need) {
		*dest_size = need;
		return SLUICE_ERR_INVALID_ARG;
	}
	memcpy(dest, tmp, need);
	*dest_size = need;
	return SLUICE_ERR_NO_ERROR;
}

sluice_err_t conf_finalize(struct sluice_conf *c, char *errstr, size_t errstr_size)
{
	if (c->batch_size > c->message_max_bytes)
		c->batch_size = c->message_max_bytes;
	if (c->idempotence) {
		if (c->acks != -1) {
			conf_errf(errstr, errstr_size,
				  "enable.idempotence=true requires acks=all (-1), got acks=%d", c->acks);
			return SLUICE_ERR_BAD_CONFIG;
		}
		if (c->max_in_flight > 5) {
			conf_errf(errstr, errstr_size,
				  "enable.idempotence=true requires max.in.flight <= 5, got %d",
				  c->max_in_flight);
			return SLUICE_ERR_BAD_CONFIG;
		}
		if (c->retries == 0) {
			conf_errf(errstr, errstr_size, "enable.idempotence=true requires retries > 0");
			return SLUICE_ERR_BAD_CONFIG;
		}
	}
	return SLUICE_ERR_NO_ERROR;
}
