/*
 * gate.h — the produce gate: an optional message-rate bucket, an optional
 * byte-rate bucket and a bounded wait queue, deciding for each request
 * whether it is appended now, parked until its tokens accrue, or rejected
 * with a throttle-time hint.
 *
 * What it owns: both tokenbucket structs and the throttleq (by value).  The
 * throttleq nodes stay caller-owned; a node handed to gate_decide that comes
 * back GATE_QUEUE is queued until gate_pop_ready returns it or gate_cancel
 * takes it out, and must stay valid until then.
 *
 * Threads: not thread-safe.  The caller serializes all calls (one gate per
 * topic, used from the thread that owns the topic's produce path).
 *
 * Decision for a request of `msgs` messages and `bytes` bytes at now_ns:
 *  1. msgs > message burst or bytes > byte burst: GATE_REJECT, wait
 *     TOKENBUCKET_NEVER (no wait would ever admit it).
 *  2. Both buckets have the tokens now: both are taken, GATE_ADMIT, wait 0.
 *  3. Else, if a node was given, the queue is not full and the longer of the
 *     two bucket waits, after the requests already parked, is <=
 *     max_wait_ns: the tokens are reserved in both buckets, the node is
 *     queued, GATE_QUEUE, *wait_ns = its release time - now_ns.
 *  4. Else GATE_REJECT and *wait_ns = the longer of the two bucket waits:
 *     when the request could be admitted if nothing else arrived (a
 *     throttle_time hint).
 *  Reservation is all-or-nothing: when one bucket refuses, the other is
 *  restored exactly as it was.  A disabled bucket (rate 0) always agrees.
 *
 * Order: parked requests are released in FIFO order.  Call gate_pop_ready
 * (draining every due node) before gate_decide with the same now_ns, so a
 * due parked request is appended before a newcomer.
 *
 * Errors: -EINVAL for a bad configuration.
 */
#ifndef SLUICE_GATE_H
#define SLUICE_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "throttleq.h"
#include "tokenbucket.h"

enum gate_verdict {
	GATE_ADMIT = 0,  /* append now */
	GATE_QUEUE = 1,  /* parked: release after *wait_ns, tokens reserved */
	GATE_REJECT = 2, /* refuse now: THROTTLING_QUOTA_EXCEEDED, hint *wait_ns */
};

typedef struct gate_conf {
	double msg_rate;      /* messages per second; 0 = no message limit */
	uint64_t msg_burst;   /* messages; ignored when msg_rate is 0 */
	double byte_rate;     /* bytes per second; 0 = no byte limit */
	uint64_t byte_burst;  /* bytes; ignored when byte_rate is 0 */
	uint32_t max_queued;  /* parked requests at most; 0 = never park */
	int64_t max_wait_ns;  /* longest a request may stay parked, >= 0 */
} gate_conf;

typedef struct gate_stats {
	uint64_t admitted;  /* GATE_ADMIT verdicts */
	uint64_t queued;    /* GATE_QUEUE verdicts */
	uint64_t rejected;  /* GATE_REJECT verdicts */
	uint64_t released;  /* parked nodes returned by gate_pop_ready */
	uint64_t cancelled; /* parked nodes taken out by gate_cancel */
} gate_stats;

typedef struct ratelimit_gate {
	tokenbucket msgs;
	tokenbucket bytes;
	bool has_msgs, has_bytes;
	throttleq q;
	gate_stats stats;
} ratelimit_gate;

/* ---- new / reconfigure ---- */

/* Sets up a gate with full buckets and an empty queue.  Returns 0, or
 * -EINVAL (a rate that tokenbucket_init refuses, a burst < 1 with a rate,
 * max_wait_ns < 0), in which case *g is unchanged. */
int gate_init(ratelimit_gate *g, const gate_conf *conf);

/* Reconfigures live at now_ns.  A bucket that stays enabled keeps its level
 * (tokenbucket_set); one newly enabled starts full; one disabled is dropped
 * together with what parked nodes hold in it.  Parked nodes keep their
 * release times, even past a smaller max_wait_ns.  Returns 0, or -EINVAL
 * with *g unchanged. */
int gate_set(ratelimit_gate *g, const gate_conf *conf, int64_t now_ns);

/* ---- operations ---- */

/* Decides for a request (see the top of this file).  node may be NULL if the
 * request cannot be parked; otherwise it must not be queued already.
 * *wait_ns is always written: 0, the park time, or the hint. */
enum gate_verdict gate_decide(ratelimit_gate *g, int64_t now_ns, uint64_t msgs,
			      uint64_t bytes, throttleq_node *node, int64_t *wait_ns);

/* The next parked node whose release time is <= now_ns, in FIFO order, or
 * NULL.  The node is no longer queued; its tokens are spent. */
throttleq_node *gate_pop_ready(ratelimit_gate *g, int64_t now_ns);

/* Earliest release time of a parked node (arm the timer for it); INT64_MAX
 * when nothing is parked. */
int64_t gate_next_release(const ratelimit_gate *g);

/* Takes a parked node out (its client went away) and gives its reserved
 * tokens back to the buckets (clipped to the burst, so the bound holds).
 * Nodes parked behind it keep their release times; the freed tokens go to
 * whoever asks next.  Returns true, or false if node is not parked here
 * (already released or cancelled). */
bool gate_cancel(ratelimit_gate *g, throttleq_node *node, int64_t now_ns);

#endif
