/*
 * conf.h — the parsed configuration behind sluice_conf_t.
 *
 * Owns: its strings (bootstrap list, client id).  A plain value: no locks;
 * handles copy nothing out of it after *_new() takes it over, they read the
 * fields directly for their whole life (the conf is freed with the handle).
 * Invariant: every field holds a value that passed validation.
 */
#ifndef SLUICE_CLIENT_CONF_H
#define SLUICE_CLIENT_CONF_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice.h"

#define CONF_MAX_SERVERS 16

struct conf_server {
	char host[256];
	uint16_t port;
};

struct sluice_conf {
	struct conf_server servers[CONF_MAX_SERVERS];
	int nservers;
	char bootstrap[1024]; /* as set, for conf_get */
	char client_id[256];
	int request_timeout_ms;
	int retry_backoff_ms;
	int reconnect_backoff_ms;
	bool partition_eof;
	/* producer */
	int acks;
	int linger_ms;
	int batch_size;
	int batch_num_messages;
	int message_max_bytes;
	int retries;
	int message_timeout_ms;
	bool idempotence;
	int max_in_flight;
	int queue_max_msgs;
	int64_t queue_max_kbytes;
	sluice_delivery_cb *dr_cb;
	void *dr_ctx;
	/* consumer */
	int fetch_min_bytes;
	int fetch_max_wait_ms;
	int fetch_max_bytes;
	int max_partition_fetch_bytes;
	int64_t queued_max_kbytes;
	int64_t auto_offset_reset; /* SLUICE_OFFSET_BEGINNING / _END, or SLUICE_OFFSET_INVALID = error */
	bool check_crcs;
	/* consumer groups (cgrp.c); group_id "" = no group */
	char group_id[256];
	char group_instance_id[256]; /* "" = dynamic member; else static (KIP-345) */
	char assignment_strategy[256]; /* "range,roundrobin": names in preference order */
	int session_timeout_ms;
	int heartbeat_interval_ms;
	int max_poll_interval_ms;
	bool auto_commit;
	int auto_commit_interval_ms;
	int metadata_refresh_ms;
	sluice_rebalance_cb *rebalance_cb;
	void *rebalance_ctx;
	/* transactional producer (txnprod.c) */
	char txn_group[256];    /* "" = not set (required by sluice_txn_producer_new) */
	char txn_instance[256]; /* "" = generated host:pid:random */
	int txn_check_timeout_ms; /* 0 = the broker's transaction.timeout.ms */
	sluice_txn_check_cb *txn_check_cb;
	void *txn_check_ctx;
};

/* K_STR keys are all copied with sizeof(client_id) as the bound. */
_Static_assert(sizeof(((struct sluice_conf *)0)->group_id) == 256, "K_STR size");
_Static_assert(sizeof(((struct sluice_conf *)0)->assignment_strategy) == 256, "K_STR size");
_Static_assert(sizeof(((struct sluice_conf *)0)->group_instance_id) == 256, "K_STR size");
_Static_assert(sizeof(((struct sluice_conf *)0)->txn_group) == 256, "K_STR size");
_Static_assert(sizeof(((struct sluice_conf *)0)->txn_instance) == 256, "K_STR size");

/* Writes a formatted message into errstr (if errstr_size > 0). */
void conf_errf(char *errstr, size_t errstr_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Cross-field checks done by *_new (e.g. batch.size <= message.max.bytes is
 * adjusted, not an error).  Returns SLUICE_ERR_NO_ERROR or BAD_CONFIG with
 * errstr. */
sluice_err_t conf_finalize(struct sluice_conf *c, char *errstr, size_t errstr_size);

/* Parses "host:port,host:port" into servers.  Returns false with errstr set. */
bool conf_parse_servers(const char *list, struct conf_server *out, int *n, char *errstr,
			size_t errstr_size);

#endif
