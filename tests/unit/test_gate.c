/*
 * test_gate.c — ratelimit/gate with a fake clock: admit / queue / reject,
 * queue full, max wait, smooth 10 us pacing at 100,000/s, atomic two-bucket
 * reservation, cancel refunds, live reconfiguration and a brute-force
 * window check of admissions plus releases under random demand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>

#include "gate.h"
#include "throttleq.h"

#define US 1000LL
#define MS 1000000LL
#define SEC 1000000000LL

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static gate_conf conf_msgs(double rate, uint64_t burst, uint32_t max_queued,
			   int64_t max_wait_ns)
{
	return (gate_conf){
		.msg_rate = rate, .msg_burst = burst,
		.max_queued = max_queued, .max_wait_ns = max_wait_ns,
	};
}

static void test_gate_init_rejects_bad_conf(void **state)
{
	gate_conf c = conf_msgs(1000, 10, 5, SEC);
	ratelimit_gate g;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	c.msg_burst = 0;
	assert_int_equal(gate_init(&g, &c), -EINVAL);
	c = conf_msgs(-1, 10, 5, SEC);
	assert_int_equal(gate_init(&g, &c), -EINVAL);
	c = conf_msgs(1000, 10, 5, -1);
	assert_int_equal(gate_init(&g, &c), -EINVAL);
	c = conf_msgs(1000, 10, 5, SEC);
	c.byte_rate = 1e6;
	c.byte_burst = 0;
	assert_int_equal(gate_init(&g, &c), -EINVAL);
	assert_int_equal(g.msgs.burst, 10); /* unchanged by the failures */
	assert_false(g.has_bytes);
}

static void test_gate_no_limits_admits_everything(void **state)
{
	gate_conf c = { .max_queued = 0 };
	ratelimit_gate g;
	int64_t wait = -1;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(gate_decide(&g, 0, 1000, 1 << 20, NULL, &wait), GATE_ADMIT);
	assert_int_equal(wait, 0);
	assert_int_equal(g.stats.admitted, 1000);
}

static void test_gate_queue_full_rejects(void **state)
{
	gate_conf c = conf_msgs(1000, 1, 2, SEC);
	throttleq_node n[3];
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	for (int i = 0; i < 3; i++)
		throttleq_node_init(&n[i]);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[0], &wait), GATE_ADMIT);
	assert_false(throttleq_queued(&n[0]));
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[0], &wait), GATE_QUEUE);
	assert_int_equal(wait, MS);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[1], &wait), GATE_QUEUE);
	assert_int_equal(wait, 2 * MS);
	/* full: rejected at once, hint = when its tokens would be there */
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[2], &wait), GATE_REJECT);
	assert_int_equal(wait, 3 * MS);
	assert_false(throttleq_queued(&n[2]));
	/* no node: cannot park either */
	assert_int_equal(gate_decide(&g, 0, 1, 0, NULL, &wait), GATE_REJECT);
	assert_int_equal(g.stats.admitted, 1);
	assert_int_equal(g.stats.queued, 2);
	assert_int_equal(g.stats.rejected, 2);
	assert_int_equal(gate_next_release(&g), MS);
	/* the rejections reserved nothing: the parked ones leave on time, and
	 * the next slot after them is free at 3 ms */
	assert_null(gate_pop_ready(&g, MS - 1));
	assert_ptr_equal(gate_pop_ready(&g, MS), &n[0]);
	assert_ptr_equal(gate_pop_ready(&g, 2 * MS), &n[1]);
	assert_int_equal(g.stats.released, 2);
	assert_int_equal(gate_decide(&g, 2 * MS, 1, 0, &n[2], &wait), GATE_QUEUE);
	assert_int_equal(wait, MS);
	assert_int_equal(gate_decide(&g, 3 * MS, 1, 0, NULL, &wait), GATE_REJECT);
	assert_ptr_equal(gate_pop_ready(&g, 3 * MS), &n[2]);
	assert_int_equal(gate_decide(&g, 4 * MS, 1, 0, NULL, &wait), GATE_ADMIT);
}

static void test_gate_max_wait_exceeded_rejects(void **state)
{
	gate_conf c = conf_msgs(1000, 1, 100, 2 * MS + MS / 2);
	throttleq_node n[3];
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	for (int i = 0; i < 3; i++)
		throttleq_node_init(&n[i]);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[0], &wait), GATE_ADMIT);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[0], &wait), GATE_QUEUE);
	assert_int_equal(wait, MS);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[1], &wait), GATE_QUEUE);
	assert_int_equal(wait, 2 * MS);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[2], &wait), GATE_REJECT);
	assert_int_equal(wait, 3 * MS);
	assert_false(throttleq_queued(&n[2]));
	/* half a millisecond later the same request fits (2.5 ms exactly) */
	assert_int_equal(gate_decide(&g, MS / 2, 1, 0, &n[2], &wait), GATE_QUEUE);
	assert_int_equal(wait, 2 * MS + MS / 2);
	assert_int_equal(n[2].release_ns, 3 * MS);
}

static void test_gate_oversized_request_never_admitted(void **state)
{
	gate_conf c = conf_msgs(1000, 10, 100, SEC);
	throttleq_node n;
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	c.byte_rate = 1000;
	c.byte_burst = 500;
	assert_int_equal(gate_init(&g, &c), 0);
	throttleq_node_init(&n);
	assert_int_equal(gate_decide(&g, 0, 11, 1, &n, &wait), GATE_REJECT);
	assert_int_equal(wait, TOKENBUCKET_NEVER);
	assert_int_equal(gate_decide(&g, 0, 1, 501, &n, &wait), GATE_REJECT);
	assert_int_equal(wait, TOKENBUCKET_NEVER);
	assert_int_equal(tokenbucket_available(&g.msgs, 0), 10);
	assert_int_equal(gate_decide(&g, 0, 10, 500, &n, &wait), GATE_ADMIT);
}

static void test_gate_paces_releases_10us_apart(void **state)
{
	enum { N = 500 };
	gate_conf c = conf_msgs(100000, 1, N, SEC);
	throttleq_node *n = calloc(N, sizeof(*n));
	int64_t wait, now, prev = 0;
	ratelimit_gate g;
	int released = 0;

	(void)state;
	assert_non_null(n);
	assert_int_equal(gate_init(&g, &c), 0);
	assert_int_equal(gate_decide(&g, 0, 1, 0, NULL, &wait), GATE_ADMIT);
	/* a burst of N requests at once: parked, each 10 us after the last */
	for (int i = 0; i < N; i++) {
		assert_int_equal(gate_decide(&g, 0, 1, 0, &n[i], &wait), GATE_QUEUE);
		assert_int_equal(wait, (i + 1) * 10 * US);
	}
	/* a timer armed at gate_next_release each time: one node per firing,
	 * in FIFO order, exactly 10 us apart */
	while ((now = gate_next_release(&g)) != INT64_MAX) {
		throttleq_node *node = gate_pop_ready(&g, now);

		assert_ptr_equal(node, &n[released]);
		assert_int_equal(now - prev, 10 * US);
		assert_null(gate_pop_ready(&g, now));
		prev = now;
		released++;
	}
	assert_int_equal(released, N);
	assert_int_equal(prev, N * 10 * US);
	assert_int_equal(g.stats.released, N);
	free(n);
}

static void test_gate_byte_refusal_rolls_back_msgs(void **state)
{
	gate_conf c = conf_msgs(1000, 10, 100, 5 * MS);
	throttleq_node n;
	tokenbucket before;
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	c.byte_rate = 100000; /* 100 bytes per ms */
	c.byte_burst = 1000;
	assert_int_equal(gate_init(&g, &c), 0);
	throttleq_node_init(&n);
	assert_int_equal(gate_decide(&g, 0, 2, 1000, &n, &wait), GATE_ADMIT);
	/* the message bucket has 8 left and would agree; the byte bucket would
	 * need 10 ms > 5 ms: refused, and the message bucket is untouched */
	before = g.msgs;
	assert_int_equal(gate_decide(&g, 0, 1, 1000, &n, &wait), GATE_REJECT);
	assert_int_equal(wait, 10 * MS);
	assert_false(throttleq_queued(&n));
	assert_true(g.msgs.level == before.level);
	assert_int_equal(g.msgs.last_ns, before.last_ns);
	assert_int_equal(tokenbucket_available(&g.msgs, 0), 8);
	/* and the other way round: bytes fine, messages short */
	assert_int_equal(gate_decide(&g, 10 * MS, 8, 10, NULL, &wait), GATE_ADMIT);
	before = g.bytes;
	assert_int_equal(gate_decide(&g, 10 * MS, 10, 10, &n, &wait), GATE_REJECT);
	assert_true(g.bytes.level == before.level);
	/* both agree with a wait: parked, reserved in both, longer wait wins */
	assert_int_equal(gate_decide(&g, 10 * MS, 3, 1000, &n, &wait), GATE_QUEUE);
	assert_int_equal(wait, MS); /* 3 msgs of 2: 1 ms; 1000 bytes of 990: 0.1 ms */
	assert_int_equal(n.msgs, 3);
	assert_int_equal(n.bytes, 1000);
	assert_int_equal(tokenbucket_available(&g.msgs, 10 * MS), -1);
	assert_int_equal(tokenbucket_available(&g.bytes, 10 * MS), -10);
}

static void test_gate_cancel_refunds_tokens(void **state)
{
	gate_conf c = conf_msgs(1000, 1, 10, SEC);
	throttleq_node n[3];
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	for (int i = 0; i < 3; i++)
		throttleq_node_init(&n[i]);
	assert_int_equal(gate_decide(&g, 0, 1, 0, NULL, &wait), GATE_ADMIT);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[0], &wait), GATE_QUEUE);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[1], &wait), GATE_QUEUE);
	assert_int_equal(tokenbucket_available(&g.msgs, 0), -2);
	/* the first parked client goes away: its token comes back */
	assert_true(gate_cancel(&g, &n[0], 0));
	assert_false(gate_cancel(&g, &n[0], 0));
	assert_int_equal(tokenbucket_available(&g.msgs, 0), -1);
	assert_int_equal(g.stats.cancelled, 1);
	/* the other keeps its place and time; the next newcomer gets the
	 * freed slot's worth: 2 ms, not 3 ms */
	assert_int_equal(gate_next_release(&g), 2 * MS);
	assert_int_equal(gate_decide(&g, 0, 1, 0, &n[2], &wait), GATE_QUEUE);
	assert_int_equal(wait, 2 * MS);
	assert_ptr_equal(gate_pop_ready(&g, 2 * MS), &n[1]);
	assert_ptr_equal(gate_pop_ready(&g, 2 * MS), &n[2]);
	assert_false(gate_cancel(&g, &n[2], 2 * MS));
}

static void test_gate_live_reconfiguration(void **state)
{
	gate_conf c = conf_msgs(1000, 10, 10, SEC);
	throttleq_node n;
	ratelimit_gate g;
	int64_t wait;

	(void)state;
	assert_int_equal(gate_init(&g, &c), 0);
	throttleq_node_init(&n);
	assert_int_equal(gate_decide(&g, 0, 10, 100, NULL, &wait), GATE_ADMIT);
	assert_int_equal(gate_decide(&g, 0, 2, 100, &n, &wait), GATE_QUEUE);
	assert_int_equal(wait, 2 * MS);
	/* faster: the level (and the debt) is kept */
	c.msg_rate = 2000;
	assert_int_equal(gate_set(&g, &c, MS), 0);
	assert_int_equal(tokenbucket_available(&g.msgs, MS), -1);
	assert_int_equal(tokenbucket_wait_ns(&g.msgs, MS, 1), MS);
	/* a byte limit appears: it starts full; parked nodes hold nothing in it */
	c.byte_rate = 1e6;
	c.byte_burst = 5000;
	assert_int_equal(gate_set(&g, &c, MS), 0);
	assert_true(g.has_bytes);
	assert_int_equal(tokenbucket_available(&g.bytes, MS), 5000);
	assert_int_equal(n.bytes, 0);
	/* invalid: refused, nothing changes */
	c.byte_burst = 0;
	assert_int_equal(gate_set(&g, &c, MS), -EINVAL);
	assert_int_equal(g.bytes.burst, 5000);
	/* the message limit goes away: its share in parked nodes is dropped */
	c = (gate_conf){ .byte_rate = 1e6, .byte_burst = 5000,
			 .max_queued = 0, .max_wait_ns = 0 };
	assert_int_equal(gate_set(&g, &c, MS), 0);
	assert_false(g.has_msgs);
	assert_int_equal(n.msgs, 0);
	assert_true(throttleq_queued(&n));
	assert_int_equal(gate_decide(&g, MS, 1000, 5000, NULL, &wait), GATE_ADMIT);
	assert_int_equal(gate_decide(&g, MS, 1, 1, &n, &wait), GATE_REJECT);
	assert_int_equal(wait, US);
	assert_true(gate_cancel(&g, &n, MS));
	assert_int_equal(tokenbucket_available(&g.bytes, MS), 0);
}

/* One append: when, how many messages and bytes. */
struct ev {
	int64_t t;
	uint64_t msgs, bytes;
};

static int ev_cmp(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;

	return x->t < y->t ? -1 : x->t > y->t;
}

/* Brute force over every pair of appends, for both limits. */
static void check_gate_windows(const struct ev *e, size_t ne, const gate_conf *c)
{
	for (size_t i = 0; i < ne; i++) {
		uint64_t m = 0, b = 0;

		for (size_t j = i; j < ne; j++) {
			double secs = (double)(e[j].t - e[i].t) / 1e9;

			m += e[j].msgs;
			b += e[j].bytes;
			if ((double)m > (double)c->msg_burst + c->msg_rate * secs + 1e-6 ||
			    (double)b > (double)c->byte_burst + c->byte_rate * secs + 1e-6)
				fail_msg("window [%lld, %lld]: %llu msgs, %llu bytes",
					 (long long)e[i].t, (long long)e[j].t,
					 (unsigned long long)m, (unsigned long long)b);
		}
	}
}

static void test_gate_appends_respect_window_bound(void **state)
{
	enum { NODES = 64, CAP = 200000 };
	gate_conf c = {
		.msg_rate = 2000, .msg_burst = 20,
		.byte_rate = 150000, .byte_burst = 2000,
		.max_queued = 20, .max_wait_ns = 5 * MS,
	};
	throttleq_node nodes[NODES];
	throttleq_node *free_list[NODES];
	struct ev *e = malloc(CAP * sizeof(*e));
	size_t ne = 0, nfree = NODES;
	uint64_t x = 12345;
	ratelimit_gate g;
	int64_t now = 0;

	(void)state;
	assert_non_null(e);
	assert_int_equal(gate_init(&g, &c), 0);
	for (int i = 0; i < NODES; i++) {
		throttleq_node_init(&nodes[i]);
		free_list[i] = &nodes[i];
	}
	while (now < 5 * SEC || gate_next_release(&g) != INT64_MAX) {
		throttleq_node *node;
		int64_t wait;

		/* the timer: every due node is appended at its release time */
		while ((node = gate_pop_ready(&g, now))) {
			assert_true(ne < CAP);
			e[ne++] = (struct ev){ node->release_ns, node->msgs, node->bytes };
			free_list[nfree++] = node;
		}
		if (now < 5 * SEC) {
			for (uint64_t k = rnd(&x) % 4; k > 0; k--) {
				uint64_t msgs = 1 + rnd(&x) % 3, bytes = 1 + rnd(&x) % 300;

				node = nfree ? free_list[--nfree] : NULL;
				switch (gate_decide(&g, now, msgs, bytes, node, &wait)) {
				case GATE_ADMIT:
					assert_int_equal(wait, 0);
					assert_true(ne < CAP);
					e[ne++] = (struct ev){ now, msgs, bytes };
					break;
				case GATE_QUEUE:
					assert_in_range(wait, 1, c.max_wait_ns);
					break;
				case GATE_REJECT:
					assert_true(wait > 0);
					break;
				}
				if (node && !throttleq_queued(node))
					free_list[nfree++] = node;
			}
			/* now and then a parked client disconnects */
			if (rnd(&x) % 10 == 0 && g.q.tail) {
				node = g.q.tail;
				assert_true(gate_cancel(&g, node, now));
				free_list[nfree++] = node;
			}
			now += (int64_t)(rnd(&x) % (2 * MS));
		} else {
			now = gate_next_release(&g);
		}
	}
	assert_true(g.stats.admitted > 100);
	assert_true(g.stats.queued > 100);
	assert_true(g.stats.rejected > 100);
	assert_true(g.stats.cancelled > 10);
	assert_int_equal(g.stats.released + g.stats.cancelled, g.stats.queued);
	qsort(e, ne, sizeof(*e), ev_cmp);
	check_gate_windows(e, ne, &c);
	free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gate_init_rejects_bad_conf),
		cmocka_unit_test(test_gate_no_limits_admits_everything),
		cmocka_unit_test(test_gate_queue_full_rejects),
		cmocka_unit_test(test_gate_max_wait_exceeded_rejects),
		cmocka_unit_test(test_gate_oversized_request_never_admitted),
		cmocka_unit_test(test_gate_paces_releases_10us_apart),
		cmocka_unit_test(test_gate_byte_refusal_rolls_back_msgs),
		cmocka_unit_test(test_gate_cancel_refunds_tokens),
		cmocka_unit_test(test_gate_live_reconfiguration),
		cmocka_unit_test(test_gate_appends_respect_window_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
