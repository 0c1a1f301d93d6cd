/*
 * config.h — sluiced configuration: broker keys (config file, --set) and
 * per-topic keys (CreateTopics configs), both table-driven so --help,
 * --print-config and docs/operations.md list the same keys with the same
 * defaults.
 *
 * Threads: the broker's config is filled by main() before any thread starts
 * and read-only afterwards.  topic_conf values are owned by their topic
 * (see topics.h).
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "partlog.h"

#define CONFIG_ERRLEN 256

/* Per-topic settings: the broker's log.* keys are their defaults. */
/* Produce rate limit of a topic (docs/flow-control.md). */
typedef struct produce_limit {
	double msg_rate;          /* messages/s; 0: unlimited */
	int64_t msg_burst;        /* messages; 0: one second's worth */
	double byte_rate;         /* bytes/s; 0: unlimited */
	int64_t byte_burst;       /* bytes; 0: one second's worth */
	int32_t queue_max;        /* parked produce requests at most */
	int32_t queue_max_wait_ms;/* longest a request waits for tokens; 0: never parks */
} produce_limit;

typedef struct topic_conf {
	partlog_conf log;
	int32_t max_message_bytes;
	produce_limit limit;
} topic_conf;

typedef struct config {
	char listen_host[256];
	int listen_port;
	char advertised_host[256]; /* empty: the listener's host */
	char data_dir[PATH_MAX];
	int network_threads;       /* 0: one per core */
	int32_t node_id;
	char cluster_id[64];
	int32_t socket_request_max_bytes;
	int max_connections;
	int max_inflight_per_conn;
	bool auto_create_topics;
	int32_t num_partitions;
	int64_t flush_interval_ms;
	int64_t retention_check_interval_ms;
	uint64_t preallocate_bytes; /* partlog_fill_ahead in synced mode, 0: off */
	int log_level;
	int32_t group_min_session_timeout_ms;
	int32_t group_max_session_timeout_ms;
	int32_t group_initial_rebalance_delay_ms;
	int64_t offsets_retention_minutes;
	int64_t offsets_retention_check_interval_ms;
	int64_t producer_id_expiration_ms;  /* idle idempotent producers are forgotten */
	int64_t producer_id_expiration_check_interval_ms;
	int64_t transaction_timeout_ms;
	int32_t transaction_check_max;
	int64_t transaction_retention_ms;  /* ended txns are purged after this */
	double transaction_check_rate;     /* check-backs handed out per second */
	int64_t transaction_check_burst;   /* ... at once above the rate */
	int64_t transaction_check_lease_ms; /* a check out waits this long for its answer */
	int64_t transaction_check_backoff_ms;     /* wait after the 1st unanswered check */
	int64_t transaction_check_backoff_max_ms; /* waits double up to this */
	int32_t transaction_check_max_outstanding; /* checks out at once */
	char transaction_dead_letter_topic[250]; /* "" = no copies (txn_dead.h) */
	topic_conf topic_defaults; /* message.max.bytes, log.segment.bytes, ... */
	produce_limit client_limit; /* per client id (quota.h); rates 0: off */
} config;

void config_defaults(config *c);

/* Sets one broker key from its text value.  Returns 0, or -1 with a
 * sentence in err (unknown key, bad number, out of range). */
int config_set(config *c, const char *key, const char *value, char *err, size_t errlen);

/* Reads key=value lines ('#' comments, blank lines, spaces around '=' are
 * ignored).  Returns 0, or -1 with "file:line: reason" in err. */
int config_load_file(config *c, const char *path, char *err, size_t errlen);

/* Checks cross-key rules after everything is set. */
int config_validate(const config *c, char *err, size_t errlen);

/* Writes every key with its current value ("key=value" lines). */
void config_print(FILE *f, const config *c);
/* Writes every key with its default and a one-line description. */
void config_print_help(FILE *f);

/* Sets one topic-level key (segment.bytes, segment.ms, retention.ms,
 * retention.bytes, index.interval.bytes, max.message.bytes, durability).
 * Returns 0, or -1 with a sentence in err. */
int topic_conf_set(topic_conf *t, const char *key, const char *value, char *err, size_t errlen);

/* Iterates the topic-level keys: writes the i-th key name and the value in
 * t as text; returns false past the last key. */
bool topic_conf_get(const topic_conf *t, int i, const char **key, char *value, size_t cap);

#endif
