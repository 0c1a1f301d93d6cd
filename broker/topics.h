/*
 * topics.h — the topic registry: topics, their partitions and partition logs.
 *
 * Topics are reference counted: topics_get() returns a referenced topic that
 * stays valid (and its partitions' logs open) until topic_unref(), even if it
 * is deleted meanwhile.  A deleted topic leaves the registry at once; its
 * files are removed by the reaper (the syncer thread) when the last
 * reference goes, and until then CreateTopics of the same name fails
 * ("marked for deletion"), as in Kafka.
 *
 * Threads: any thread may call topics_get/topic_unref/topics_list.  Create and
 * delete run on loops and on main at start-up; the registry is protected by
 * an rwlock (readers: lookups; writers: create/delete).  The partition's
 * log is thread-safe as partlog.h says.  The configuration of a topic is
 * written only at creation.
 */
#ifndef SLUICE_TOPICS_H
#define SLUICE_TOPICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "partlog.h"
#include "pidstate.h"
#include "recbatch.h"
#include "gate.h"
#include "waiters.h"

#define TOPIC_NAME_MAX 249

enum topics_err {
	TOPICS_OK = 0,
	TOPICS_E_EXISTS = 1,        /* TOPIC_ALREADY_EXISTS */
	TOPICS_E_DELETING = 2,      /* TOPIC_ALREADY_EXISTS, "marked for deletion" */
	TOPICS_E_INVALID_NAME = 3,  /* INVALID_TOPIC_EXCEPTION */
	TOPICS_E_NOT_FOUND = 4,     /* UNKNOWN_TOPIC_OR_PARTITION */
};

typedef struct partition {
	struct topic *topic;
	int32_t index;
	partlog *log;                 /* owned */
	pthread_mutex_t wait_lock;    /* protects waiters */
	pwaiter *waiters;
	atomic_int nwaiters;          /* fast check without the lock */
	atomic_bool sync_queued;      /* on the syncer's dirty list */
	struct partition *sync_next;  /* syncer's list link (syncer-owned) */
	bool ckpt_stale;              /* synced since last checkpoint (syncer-owned) */
	pthread_mutex_t pid_lock;     /* protects pids; held across an idempotent
	                                 batch's check, append and record */
	pidstate *pids;               /* owned: idempotent producers */
} partition;

typedef struct topic {
	atomic_int refs;
	char name[TOPIC_NAME_MAX + 1];
	uint8_t id[16];
	int32_t nparts;
	partition *parts;             /* owned array */
	pthread_mutex_t conf_lock;    /* protects conf and the overrides */
	topic_conf conf;              /* read with topic_get_conf */
	char **ov_keys, **ov_vals;    /* owned: configs set at creation/AlterConfigs */
	int nov;
	pthread_mutex_t gate_lock;    /* protects gate */
	ratelimit_gate gate;          /* produce rate limit (flow-control.md) */
	atomic_bool gated;            /* false: no limit, the gate is skipped */
	atomic_bool deleted;
	struct topics *reg;
} topic;

typedef struct topics topics;

/* reaper(topic) is called when a deleted topic's last reference goes; it
 * must eventually call topic_destroy(topic). */
int topics_new(const char *data_dir, const topic_conf *defaults, topics **out);
void topics_set_reaper(topics *reg, void (*reaper)(topic *t, void *arg), void *arg);
void topics_free(topics *reg);  /* closes every log (no sync); accepts NULL */

/* Referenced topic by name, or NULL. */
topic *topics_get(topics *reg, const char *name, size_t len);
void topic_ref(topic *t);
void topic_unref(topic *t);

bool topics_valid_name(const char *name, size_t len);

/* Topic-level overrides: key/value strings (validated by the caller with
 * topic_conf_set).  conf is the broker defaults with them applied. */
typedef struct topic_overrides {
	const char *const *keys;
	const char *const *values;
	int n;
} topic_overrides;

/* Creates the partition directories and logs and adds the topic.  On success
 * *out is a referenced topic.  Returns TOPICS_OK, a TOPICS_E_* (reason in
 * err), or -errno. */
int topics_create(topics *reg, const char *name, int32_t nparts, const topic_conf *conf,
		  const topic_overrides *ov, topic **out, char *err, size_t errlen);
/* Re-opens an existing topic at start-up (from the SQLite catalogue). */
int topics_load(topics *reg, const char *name, int32_t nparts, const topic_conf *conf,
		const topic_overrides *ov, const uint8_t id[16]);

/* True if p's topic is in fsync durability (any thread). */
bool partition_synced(partition *p);
/* Checks what topic_conf_set cannot see alone (the rate-limit keys
 * together).  Returns false with a sentence in err. */
bool topic_conf_check(const topic_conf *c, char *err, size_t errlen);
/* The gate configuration for a topic's produce limit. */
void topic_gate_conf(const produce_limit *l, gate_conf *out);
/* A consistent copy of t's configuration (any thread). */
void topic_get_conf(topic *t, topic_conf *out);
/* Replaces t's overrides and configuration (AlterConfigs); the partition
 * logs take the new values at once.  Returns 0 or -ENOMEM (unchanged). */
int topic_set_conf(topic *t, const topic_conf *conf, const topic_overrides *ov);
/* Calls fn for each override of t under its lock. */
void topic_each_override(topic *t, void (*fn)(const char *key, const char *value, void *arg), void *arg);
/* Removes the topic from the registry; files go when the last ref drops.
 * Returns TOPICS_OK or TOPICS_E_NOT_FOUND. */
int topics_delete(topics *reg, const char *name);
/* Start-up (main, before the loops run): calls fn(arg, batch, len, hdr) for
 * each batch of p's log from the one holding offset `from` up to the high
 * watermark, in offset order; the batch is valid until fn returns.  Stops
 * when fn returns non-zero and returns that; else 0, or -errno if the log
 * could not be read (-EIO: a batch header does not parse). */
int partition_each_batch(partition *p, int64_t from,
			 int (*fn)(void *arg, const uint8_t *b, size_t len, const recbatch_hdr *h),
			 void *arg);
/* Syncer: forgets p's client producers that have not written for
 * expiration_ms (wall clock `now`, ms; pidstate_expire with the durable
 * end), logging how many, then writes <dir>/producers.snapshot (idempotent
 * producer state of every batch below the durable end): always if
 * `always`, else only if some were forgotten.  Returns 0 or -errno. */
int partition_snapshot_producers(partition *p, int64_t now, int64_t expiration_ms, bool always);

/* Called by the reaper: deletes the files and frees t. */
void topic_destroy(topic *t);

/* Referenced snapshot of all topics, sorted by name; free with
 * topics_list_free.  Returns 0 or -ENOMEM. */
int topics_list(topics *reg, topic ***out, int *n);
void topics_list_free(topic **list, int n);

const char *topics_data_dir(const topics *reg);

#endif
