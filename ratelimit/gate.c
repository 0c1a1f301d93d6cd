/*
 * gate.c — see gate.h.
 */
#include "gate.h"

#include <errno.h>
#include <stddef.h>

/* now + d (d >= 0), saturating at INT64_MAX. */
static int64_t time_add(int64_t now_ns, int64_t d)
{
	return d > INT64_MAX - now_ns ? INT64_MAX : now_ns + d;
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* Builds one bucket of a configuration into *out.  live: keep the level of
 * the current bucket if it was enabled already. */
static int conf_bucket(tokenbucket *out, bool *on, const tokenbucket *cur,
		       bool cur_on, double rate, uint64_t burst, int64_t now_ns,
		       bool live)
{
	*on = rate != 0;
	if (!*on)
		return 0;
	if (live && cur_on) {
		*out = *cur;
		return tokenbucket_set(out, rate, burst, now_ns);
	}
	return tokenbucket_init(out, rate, burst);
}

/* Validates conf and applies it; *g is only written if all of it is valid. */
static int configure(ratelimit_gate *g, const gate_conf *conf, int64_t now_ns,
		     bool live)
{
	tokenbucket msgs = g->msgs, bytes = g->bytes;
	bool has_msgs, has_bytes;
	int r;

	if (conf->max_wait_ns < 0)
		return -EINVAL;
	r = conf_bucket(&msgs, &has_msgs, &g->msgs, g->has_msgs,
			conf->msg_rate, conf->msg_burst, now_ns, live);
	if (r < 0)
		return r;
	r = conf_bucket(&bytes, &has_bytes, &g->bytes, g->has_bytes,
			conf->byte_rate, conf->byte_burst, now_ns, live);
	if (r < 0)
		return r;
	g->msgs = msgs;
	g->bytes = bytes;
	g->has_msgs = has_msgs;
	g->has_bytes = has_bytes;
	return throttleq_set_limits(&g->q, conf->max_queued, conf->max_wait_ns);
}

int gate_init(ratelimit_gate *g, const gate_conf *conf)
{
	ratelimit_gate ng = { .has_msgs = false, .has_bytes = false };
	int r;

	r = throttleq_init(&ng.q, 0, 0);
	if (r < 0)
		return r;
	r = configure(&ng, conf, 0, false);
	if (r < 0)
		return r;
	*g = ng;
	return 0;
}

/* Parked nodes hold nothing in a bucket that was just enabled or disabled:
 * forget their share so a cancel does not refund it. */
static void forget_held(ratelimit_gate *g, bool msgs, bool bytes)
{
	for (throttleq_node *n = g->q.head; n; n = n->next) {
		if (msgs)
			n->msgs = 0;
		if (bytes)
			n->bytes = 0;
	}
}

int gate_set(ratelimit_gate *g, const gate_conf *conf, int64_t now_ns)
{
	bool had_msgs = g->has_msgs, had_bytes = g->has_bytes;
	int r;

	r = configure(g, conf, now_ns, true);
	if (r < 0)
		return r;
	forget_held(g, had_msgs != g->has_msgs, had_bytes != g->has_bytes);
	return 0;
}

/* Reserves in both enabled buckets or in neither.  On success *wait_ns is
 * the longer of the two waits. */
static bool reserve_both(ratelimit_gate *g, int64_t now_ns, uint64_t msgs,
			 uint64_t bytes, int64_t max_wait_ns, int64_t *wait_ns)
{
	tokenbucket saved = g->msgs;
	int64_t wm = 0, wb = 0;

	if (g->has_msgs && !tokenbucket_reserve(&g->msgs, now_ns, msgs, max_wait_ns, &wm))
		return false;
	if (g->has_bytes && !tokenbucket_reserve(&g->bytes, now_ns, bytes, max_wait_ns, &wb)) {
		g->msgs = saved; /* roll back: exactly as before */
		return false;
	}
	*wait_ns = max64(wm, wb);
	return true;
}

/* When the request could be admitted if nothing else arrived. */
static int64_t hint(const ratelimit_gate *g, int64_t now_ns, uint64_t msgs,
		    uint64_t bytes)
{
	int64_t wm = 0, wb = 0;

	if (g->has_msgs)
		wm = tokenbucket_wait_ns(&g->msgs, now_ns, msgs);
	if (g->has_bytes)
		wb = tokenbucket_wait_ns(&g->bytes, now_ns, bytes);
	return max64(wm, wb);
}

static bool can_park(const ratelimit_gate *g, const throttleq_node *node)
{
	return node && !throttleq_queued(node) && !throttleq_full(&g->q);
}

enum gate_verdict gate_decide(ratelimit_gate *g, int64_t now_ns, uint64_t msgs,
			      uint64_t bytes, throttleq_node *node, int64_t *wait_ns)
{
	tokenbucket saved_msgs = g->msgs, saved_bytes = g->bytes;
	int64_t max_wait = can_park(g, node) ? g->q.max_wait_ns : 0;
	int64_t wait, release;

	if (!reserve_both(g, now_ns, msgs, bytes, max_wait, &wait))
		goto reject;
	if (wait == 0) {
		g->stats.admitted++;
		*wait_ns = 0;
		return GATE_ADMIT;
	}
	release = max64(time_add(now_ns, wait), throttleq_last_release(&g->q));
	if (release > time_add(now_ns, max_wait)) {
		/* behind parked nodes released later than our limit allows */
		g->msgs = saved_msgs;
		g->bytes = saved_bytes;
		goto reject;
	}
	node->msgs = g->has_msgs ? msgs : 0;
	node->bytes = g->has_bytes ? bytes : 0;
	throttleq_push(&g->q, node, release); /* cannot fail: can_park() */
	g->stats.queued++;
	*wait_ns = node->release_ns - now_ns;
	return GATE_QUEUE;

reject:
	g->stats.rejected++;
	*wait_ns = hint(g, now_ns, msgs, bytes);
	return GATE_REJECT;
}

throttleq_node *gate_pop_ready(ratelimit_gate *g, int64_t now_ns)
{
	throttleq_node *node = throttleq_pop_ready(&g->q, now_ns);

	if (node)
		g->stats.released++;
	return node;
}

int64_t gate_next_release(const ratelimit_gate *g)
{
	return throttleq_next_release(&g->q);
}

bool gate_cancel(ratelimit_gate *g, throttleq_node *node, int64_t now_ns)
{
	if (!throttleq_remove(&g->q, node))
		return false;
	if (g->has_msgs)
		tokenbucket_refund(&g->msgs, now_ns, node->msgs);
	if (g->has_bytes)
		tokenbucket_refund(&g->bytes, now_ns, node->bytes);
	node->msgs = 0;
	node->bytes = 0;
	g->stats.cancelled++;
	return true;
}
