/*
 * cgrp.h — consumer-group membership of a sluice_consumer_t (Kafka's
 * classic protocol): coordinator discovery, JoinGroup/SyncGroup (the leader
 * runs the assignor, grpproto.h), heartbeats, offset commit/fetch,
 * LeaveGroup.
 *
 * Owns: a background "group thread" with two blocking connections (one to
 * a bootstrap server for FindCoordinator, one to the coordinator), a
 * private admin handle for Metadata, the subscription, the member id and
 * generation, and the queue of rebalance events.
 *
 * Threads: the group thread does all group I/O.  cgrp_subscribe/commit may
 * be called from any thread, also from inside the rebalance callback;
 * cgrp_serve from the poll caller (it runs the rebalance callback);
 * cgrp_destroy once, from sluice_consumer_destroy (it runs the last
 * REVOKED callback).
 * Invariants: the consumer's partitions are changed only by the group
 * thread (consumer_grp_*): the revocation hook (hold, REVOKED callback,
 * commit, unassign; cgrp.c) before every JoinGroup, assign after
 * SyncGroup + OffsetFetch.  While cgrp_holding() poll hands out no
 * message: from the start of a revocation until poll has served the next
 * ASSIGNED.
 */
#ifndef SLUICE_CLIENT_CGRP_H
#define SLUICE_CLIENT_CGRP_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice.h"

struct cgrp;
struct sluice_conf;

/* Creates the group state and starts its thread (idle until subscribe).
 * NULL when out of memory. */
struct cgrp *cgrp_new(sluice_consumer_t *c);
/* Runs the revocation hook (the REVOKED callback runs on the caller's
 * thread, then the commit with enable.auto.commit), sends LeaveGroup
 * (dynamic members only), stops the thread and frees.  NULL-safe. */
void cgrp_destroy(struct cgrp *g);
/* Replaces the subscription (copied) and triggers a (re)join. */
sluice_err_t cgrp_subscribe(struct cgrp *g, const char *const *topics, size_t n);
/* Commits consumed positions; sync waits for the outcome. */
sluice_err_t cgrp_commit(struct cgrp *g, bool sync);
/* True when rebalance events wait for cgrp_serve (lock-free check). */
bool cgrp_pending(struct cgrp *g);
/* True while poll must not return messages (lock-free check). */
bool cgrp_holding(struct cgrp *g);
/* Runs the rebalance callback for every queued event, in order.  When the
 * group fenced this member (FENCED_INSTANCE_ID) it stops at that event and
 * returns SLUICE_ERR_FENCED_INSTANCE_ID with a sentence in errstr, once;
 * otherwise (and always with errstr NULL) SLUICE_ERR_NO_ERROR. */
sluice_err_t cgrp_serve(struct cgrp *g, char *errstr, size_t errstr_size);

/* ---- implemented by consumer.c for the group thread ---- */

struct cgrp_pos {
	const char *topic; /* borrowed: lives as long as the consumer */
	int32_t partition;
	int64_t consumed, committed, fetch_pos;
};

/* The assigned partitions with their positions; revoke: also unassign
 * them (atomically with the snapshot, so poll returns nothing of them
 * afterwards).  *out (free()) and *n written on 0; -ENOMEM otherwise. */
int consumer_grp_positions(sluice_consumer_t *c, bool revoke, struct cgrp_pos **out, int *n);
/* Assigns a partition at offset (SLUICE_OFFSET_INVALID = auto.offset.reset)
 * with the committed offset known (-1: none).  0 or -ENOMEM. */
int consumer_grp_assign(sluice_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
			int64_t committed);
void consumer_grp_set_committed(sluice_consumer_t *c, const char *topic, int32_t partition,
				int64_t offset);
/* Wakes a poll() waiting for messages (to serve events). */
void consumer_grp_wake(sluice_consumer_t *c);
const struct sluice_conf *consumer_grp_conf(sluice_consumer_t *c);

#endif
