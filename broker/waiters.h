/*
 * waiters.h — requests waiting for a partition's high watermark to move:
 * Fetch long-polls (max_wait_ms / min_bytes) and, in fsync durability,
 * Produce acks waiting for their sync.
 *
 * A waitset belongs to one request on one worker loop; it registers a node
 * on each partition it waits on.  Whoever publishes a new high watermark
 * (the appender in pagecache mode, the syncer in fsync mode) calls
 * partition_wake(): every node of that partition is unlinked (one-shot) and
 * the waitset's task is posted once to its loop, where wake() re-checks and
 * re-registers if it still has to wait.  No timer polls for data.
 *
 * Locks: partition->wait_lock protects the partition's node list and is the
 * only lock taken by a waker; the `pending` flag is set under it.  Everything
 * else in a waitset is touched only by its loop.
 */
#ifndef SLUICE_WAITERS_H
#define SLUICE_WAITERS_H

#include <stdatomic.h>
#include <stdbool.h>

#include "server.h"

struct partition;
struct waitset;

typedef struct pwaiter {
	struct pwaiter *prev, *next;  /* in partition->waiters; guarded by its wait_lock */
	struct partition *part;
	struct waitset *ws;
	bool linked;
} pwaiter;

typedef struct waitset {
	worker *w;
	loop_task task;               /* posted to w when woken */
	atomic_bool pending;          /* task posted and not yet run */
	bool orphan;                  /* owner gone while pending: task frees */
	pwaiter *nodes;               /* one per partition: &one, or an owned array */
	int n, cap;
	pwaiter one;                  /* the first node: waiting on one partition
					 (a commit, most produces) allocates nothing */
	void (*wake)(struct waitset *ws);    /* on w's loop */
	void (*orphaned)(struct waitset *ws); /* on w's loop: free the owner */
} waitset;

/* ws must not move from here on (its nodes may point into it). */
void waitset_init(waitset *ws, worker *w, void (*wake)(waitset *), void (*orphaned)(waitset *));
/* Registers on p (no-op if already registered there).  Returns 0 or -ENOMEM. */
int waitset_add(waitset *ws, struct partition *p);
/* Unlinks every node (the waitset stays usable). */
void waitset_clear(waitset *ws);
/* Owner is done waiting (answered, or going away): unlinks, frees the
 * nodes.  Returns true if the owner may be freed now, false if a wake-up
 * task is queued (then orphaned() runs later on the loop and releases it:
 * the caller takes a reference for it).  Call once. */
bool waitset_release(waitset *ws);
/* Frees what ws owns, for its owner's free function (after release, or if
 * it never waited; a zeroed, never initialised waitset is accepted). */
void waitset_free(waitset *ws);

/* Any thread, after publishing a new high watermark for p. */
void partition_wake(struct partition *p);

#endif
