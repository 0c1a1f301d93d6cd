/*
 * quota.h — optional per-client-id produce limits (docs/flow-control.md):
 * one token-bucket gate per client id (the request header's client_id),
 * across all topics, checked before the topic gates.  Fail-fast only: a
 * request over its client's limit is rejected at once with
 * THROTTLING_QUOTA_EXCEEDED and a throttle-time hint, never parked (the
 * topic gate is where requests queue).
 *
 * What it owns: the table of client gates, at most QUOTA_MAX_CLIENTS; when
 * full, the gate unused for longest is reused (a forgotten client restarts
 * with a full bucket, which never lets more through than a new client).
 *
 * Threads: any event loop; the table is guarded by one mutex, held for an
 * O(1) decision (plus a linear scan when a new client id appears).
 */
#ifndef SLUICE_QUOTA_H
#define SLUICE_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define QUOTA_MAX_CLIENTS 4096

typedef struct quota quota;

/* NULL-safe to use when limits are off: returns NULL (no allocation) if
 * neither client rate is set.  -EINVAL (via *err) for a bad limit. */
int quota_new(const produce_limit *per_client, quota **out);
void quota_free(quota *q);

/* true: admitted (tokens taken).  false: rejected, *hint_ns says when the
 * request could pass.  q == NULL admits everything. */
bool quota_admit(quota *q, const char *client_id, uint64_t msgs, uint64_t bytes, int64_t now_ns,
		 int64_t *hint_ns);

#endif
