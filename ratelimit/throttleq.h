/*
 * throttleq.h — a bounded FIFO of parked requests, each with the time at
 * which it may proceed.
 *
 * What it owns: the links of the nodes while they are queued, nothing else.
 * Nodes are intrusive and caller-owned (embed a throttleq_node in the
 * request); the queue never allocates.  A node must stay valid while it is
 * queued: until throttleq_pop_ready returns it or throttleq_remove takes it
 * out.
 *
 * Threads: not thread-safe.  The caller serializes all calls on one queue.
 *
 * Invariants:
 *  - At most max_queued nodes are queued (a smaller max_queued set live does
 *    not evict: pushes fail until the queue drains below it).
 *  - Release times are non-decreasing from head to tail.  The token bucket
 *    makes them so (each reservation waits behind the previous ones); where
 *    it cannot (a refund, a reconfiguration, a clock stepping back) push
 *    moves the new node's release time up to the tail's, so order stays FIFO
 *    and a node is never released before its own time.
 *  - max_wait_ns is the longest wait a user of the queue (ratelimit_gate)
 *    may park a request for; the queue only stores it.
 *
 * Times are int64 nanoseconds of the caller's clock.
 */
#ifndef SLUICE_THROTTLEQ_H
#define SLUICE_THROTTLEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum throttleq_err {
	THROTTLEQ_OK = 0,
	THROTTLEQ_E_FULL = 1, /* max_queued nodes are queued already */
};

struct throttleq;

typedef struct throttleq_node {
	struct throttleq_node *prev, *next;
	struct throttleq *q;  /* the queue holding it, NULL when not queued */
	int64_t release_ns;   /* when it may proceed (set by push) */
	uint64_t msgs, bytes; /* tokens it holds in a ratelimit_gate's buckets */
} throttleq_node;

typedef struct throttleq {
	throttleq_node *head, *tail;
	uint32_t len;
	uint32_t max_queued;
	int64_t max_wait_ns;
} throttleq;

/* ---- new / limits ---- */

/* An empty queue.  max_queued 0 means nothing can be parked.  Returns 0, or
 * -EINVAL if max_wait_ns < 0 (*q unchanged). */
int throttleq_init(throttleq *q, uint32_t max_queued, int64_t max_wait_ns);

/* Changes the limits live; queued nodes stay.  0 or -EINVAL as above. */
int throttleq_set_limits(throttleq *q, uint32_t max_queued, int64_t max_wait_ns);

/* Marks a node as not queued.  Call once before its first push (a zeroed
 * node is also fine). */
void throttleq_node_init(throttleq_node *node);

/* ---- queries ---- */

static inline uint32_t throttleq_len(const throttleq *q) { return q->len; }
static inline bool throttleq_full(const throttleq *q) { return q->len >= q->max_queued; }
static inline bool throttleq_queued(const throttleq_node *node) { return node->q != NULL; }

/* Earliest release time (the head's), for the caller's timer; INT64_MAX
 * when the queue is empty. */
int64_t throttleq_next_release(const throttleq *q);

/* Latest release time (the tail's); INT64_MIN when the queue is empty. */
int64_t throttleq_last_release(const throttleq *q);

/* ---- operations ---- */

/* Appends node, to be released at release_ns (raised to the tail's release
 * time if earlier; node->release_ns holds the time used).  Returns 0, or
 * THROTTLEQ_E_FULL (nothing changed), or -EINVAL if node is already queued. */
int throttleq_push(throttleq *q, throttleq_node *node, int64_t release_ns);

/* Takes out and returns the head if its release time is <= now_ns, else
 * NULL.  Call in a loop to drain every node whose time has come. */
throttleq_node *throttleq_pop_ready(throttleq *q, int64_t now_ns);

/* Takes node out wherever it is (its client disconnected).  Returns true,
 * or false if node is not in q (already released or never queued). */
bool throttleq_remove(throttleq *q, throttleq_node *node);

#endif
