/*
 * test_throttleq.c — ratelimit/throttleq with a fake clock: FIFO order and
 * release times, full queue, a push never overtaking the tail, removal
 * anywhere.  The gate built on it has its own tests (test_gate.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>

#include "throttleq.h"

#define US 1000LL
#define MS 1000000LL
#define SEC 1000000000LL

/* ---- throttleq ---- */

static void test_throttleq_fifo_release_order(void **state)
{
	throttleq_node n[3];
	throttleq q;

	(void)state;
	assert_int_equal(throttleq_init(&q, 10, SEC), 0);
	assert_int_equal(throttleq_next_release(&q), INT64_MAX);
	assert_int_equal(throttleq_last_release(&q), INT64_MIN);
	assert_null(throttleq_pop_ready(&q, INT64_MAX));
	for (int i = 0; i < 3; i++) {
		throttleq_node_init(&n[i]);
		assert_int_equal(throttleq_push(&q, &n[i], (i + 1) * 10 * US), 0);
		assert_true(throttleq_queued(&n[i]));
	}
	assert_int_equal(throttleq_len(&q), 3);
	assert_int_equal(throttleq_next_release(&q), 10 * US);
	assert_int_equal(throttleq_last_release(&q), 30 * US);
	assert_null(throttleq_pop_ready(&q, 10 * US - 1));
	assert_ptr_equal(throttleq_pop_ready(&q, 10 * US), &n[0]);
	assert_false(throttleq_queued(&n[0]));
	assert_null(throttleq_pop_ready(&q, 10 * US));
	assert_int_equal(throttleq_next_release(&q), 20 * US);
	assert_ptr_equal(throttleq_pop_ready(&q, SEC), &n[1]);
	assert_ptr_equal(throttleq_pop_ready(&q, SEC), &n[2]);
	assert_null(throttleq_pop_ready(&q, SEC));
	assert_int_equal(throttleq_len(&q), 0);
}

static void test_throttleq_full_refuses_push(void **state)
{
	throttleq_node n[3];
	throttleq q;

	(void)state;
	assert_int_equal(throttleq_init(&q, 2, SEC), 0);
	for (int i = 0; i < 3; i++)
		throttleq_node_init(&n[i]);
	assert_int_equal(throttleq_push(&q, &n[0], 1), 0);
	assert_int_equal(throttleq_push(&q, &n[1], 2), 0);
	assert_true(throttleq_full(&q));
	assert_int_equal(throttleq_push(&q, &n[2], 3), THROTTLEQ_E_FULL);
	assert_false(throttleq_queued(&n[2]));
	assert_int_equal(throttleq_len(&q), 2);
	/* a node cannot be queued twice */
	assert_int_equal(throttleq_set_limits(&q, 5, SEC), 0);
	assert_int_equal(throttleq_push(&q, &n[0], 5), -EINVAL);
	assert_int_equal(throttleq_len(&q), 2);
	/* shrinking the limit evicts nothing */
	assert_int_equal(throttleq_set_limits(&q, 1, SEC), 0);
	assert_int_equal(throttleq_len(&q), 2);
	assert_int_equal(throttleq_push(&q, &n[2], 3), THROTTLEQ_E_FULL);
	assert_int_equal(throttleq_set_limits(&q, 1, -1), -EINVAL);
	assert_int_equal(throttleq_init(&q, 1, -1), -EINVAL);
}

static void test_throttleq_push_never_overtakes(void **state)
{
	throttleq_node a, b;
	throttleq q;

	(void)state;
	assert_int_equal(throttleq_init(&q, 10, SEC), 0);
	throttleq_node_init(&a);
	throttleq_node_init(&b);
	assert_int_equal(throttleq_push(&q, &a, 50 * US), 0);
	assert_int_equal(throttleq_push(&q, &b, 40 * US), 0);
	assert_int_equal(b.release_ns, 50 * US);
	assert_null(throttleq_pop_ready(&q, 49 * US));
	assert_ptr_equal(throttleq_pop_ready(&q, 50 * US), &a);
	assert_ptr_equal(throttleq_pop_ready(&q, 50 * US), &b);
}

static void test_throttleq_remove_anywhere(void **state)
{
	throttleq_node n[4];
	throttleq q, other;

	(void)state;
	assert_int_equal(throttleq_init(&q, 10, SEC), 0);
	assert_int_equal(throttleq_init(&other, 10, SEC), 0);
	for (int i = 0; i < 4; i++) {
		throttleq_node_init(&n[i]);
		assert_int_equal(throttleq_push(&q, &n[i], i), 0);
	}
	assert_true(throttleq_remove(&q, &n[1]));   /* middle */
	assert_false(throttleq_remove(&q, &n[1]));  /* twice */
	assert_false(throttleq_remove(&other, &n[2])); /* not its queue */
	assert_true(throttleq_remove(&q, &n[0]));   /* head */
	assert_int_equal(throttleq_next_release(&q), 2);
	assert_true(throttleq_remove(&q, &n[3]));   /* tail */
	assert_int_equal(throttleq_last_release(&q), 2);
	assert_int_equal(throttleq_len(&q), 1);
	assert_ptr_equal(throttleq_pop_ready(&q, SEC), &n[2]);
	assert_false(throttleq_remove(&q, &n[2])); /* already released */
	assert_int_equal(throttleq_len(&q), 0);
	assert_int_equal(throttleq_next_release(&q), INT64_MAX);
	/* a removed node can be queued again */
	assert_int_equal(throttleq_push(&q, &n[1], 7), 0);
	assert_ptr_equal(throttleq_pop_ready(&q, 7), &n[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_throttleq_fifo_release_order),
		cmocka_unit_test(test_throttleq_full_refuses_push),
		cmocka_unit_test(test_throttleq_push_never_overtakes),
		cmocka_unit_test(test_throttleq_remove_anywhere),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
