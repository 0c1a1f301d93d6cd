/*
 * test_checksched.c — txn/checksched with a fake clock: the check policy
 * (timeout before the first check, doubling backoff with a cap, discard at
 * max checks), the global check-rate bound, the choice of connection
 * (origin first, then round-robin; producer instance ids next to
 * connection ids), and outstanding checks (answer, lease expiry,
 * connections going away, the outstanding cap).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "checksched.h"

static checksched *new_sched(const checksched_policy *p, int64_t now)
{
	checksched *cs = NULL;

	assert_int_equal(checksched_new(p, now, &cs), 0);
	assert_non_null(cs);
	return cs;
}

static void test_checksched_defaults_match_rocketmq(void **state)
{
	checksched_policy p;

	(void)state;
	checksched_policy_default(&p);
	assert_int_equal(p.timeout_ms, 6000);
	assert_int_equal(p.max_checks, 15);
	assert_int_equal(checksched_policy_validate(&p), 0);
}

static void test_checksched_first_check_after_timeout(void **state)
{
	checksched_policy p;

	(void)state;
	checksched_policy_default(&p);
	assert_int_equal(checksched_first_check(&p, 1000, 0), 7000);
	/* a per-message override replaces the timeout */
	assert_int_equal(checksched_first_check(&p, 1000, 2500), 3500);
	/* saturates rather than overflowing */
	assert_int_equal(checksched_first_check(&p, INT64_MAX - 10, 0), INT64_MAX);
}

static void test_checksched_backoff_doubles_to_cap(void **state)
{
	checksched_policy p;
	static const int64_t want[] = { 6000, 12000, 24000, 48000, 96000, 192000, 300000,
					300000, 300000, 300000, 300000, 300000, 300000, 300000 };

	(void)state;
	checksched_policy_default(&p);
	for (int32_t k = 1; k <= 14; k++)
		assert_int_equal(checksched_next_check(&p, k, 100000), 100000 + want[k - 1]);
	/* huge counts do not overflow (with a large max) */
	p.max_checks = INT32_MAX;
	assert_int_equal(checksched_next_check(&p, 1000000, 0), 300000);
}

static void test_checksched_max_checks_discards(void **state)
{
	checksched_policy p;

	(void)state;
	checksched_policy_default(&p);
	assert_true(checksched_next_check(&p, 14, 0) > 0);
	assert_int_equal(checksched_next_check(&p, 15, 0), -1);
	assert_int_equal(checksched_next_check(&p, 16, 0), -1);
	p.max_checks = 1;
	assert_int_equal(checksched_next_check(&p, 1, 0), -1);
}

static void test_checksched_bad_policy_rejected(void **state)
{
	checksched_policy p;
	checksched *cs = (checksched *)&p; /* must stay untouched */

	(void)state;
	checksched_policy_default(&p);
	p.backoff_cap_ms = p.backoff_base_ms - 1;
	assert_int_equal(checksched_policy_validate(&p), -EINVAL);
	assert_int_equal(checksched_new(&p, 0, &cs), -EINVAL);
	assert_ptr_equal(cs, (checksched *)&p);
	checksched_policy_default(&p);
	p.rate = 0;
	assert_int_equal(checksched_policy_validate(&p), -EINVAL);
	checksched_policy_default(&p);
	p.max_checks = 0;
	assert_int_equal(checksched_policy_validate(&p), -EINVAL);
	checksched_free(NULL);
}

/* Over 10 s of a demand far above the rate, at most burst + R*10 checks go
 * out (and, the bucket being exact, not fewer than that minus one). */
static void test_checksched_rate_limit_bounds_checks(void **state)
{
	checksched_policy p;
	checksched *cs;
	const double rate = 7;
	const uint64_t burst = 20;
	int64_t txn = 1, sent = 0;
	uint64_t conn;

	(void)state;
	checksched_policy_default(&p);
	p.rate = rate;
	p.burst = burst;
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 42), 0);
	for (int64_t now = 0; now <= 10000; now++) {
		int64_t budget = checksched_budget(cs, now);

		assert_int_equal(checksched_park(cs, 42, 1000), 0);
		for (int k = 0; k < 3; k++) {
			int rc = checksched_dispatch(cs, txn, 0, "g", 42, now, &conn);

			if (rc == CHECKSCHED_OK) {
				assert_int_equal(conn, 42);
				assert_true(budget-- > 0); /* budget never understates */
				assert_int_equal(checksched_answered(cs, txn, CHECKSCHED_ANY_CHECK,
								NULL), 0);
				sent++;
				txn++;
			} else {
				assert_int_equal(rc, CHECKSCHED_E_RATE);
			}
		}
	}
	assert_true(sent <= (int64_t)burst + (int64_t)(rate * 10));
	assert_true(sent >= (int64_t)burst + (int64_t)(rate * 10) - 1);
	checksched_free(cs);
}

static void test_checksched_pick_prefers_origin(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn = 0;

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	for (uint64_t c = 1; c <= 3; c++) {
		assert_int_equal(checksched_register(cs, "orders", c), 0);
		assert_int_equal(checksched_park(cs, c, 10), 0);
	}
	for (int i = 0; i < 5; i++) {
		assert_int_equal(checksched_pick(cs, "orders", 2, &conn), 0);
		assert_int_equal(conn, 2);
	}
	checksched_free(cs);
}

static void test_checksched_pick_falls_back_round_robin(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn = 0, seen[4] = { 0 };

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	for (uint64_t c = 1; c <= 3; c++) {
		assert_int_equal(checksched_register(cs, "orders", c), 0);
		assert_int_equal(checksched_park(cs, c, 10), 0);
	}
	assert_int_equal(checksched_register(cs, "other", 9), 0);
	assert_int_equal(checksched_park(cs, 9, 10), 0);
	/* origin 2 registered but not polling: round-robin over 1 and 3 */
	assert_int_equal(checksched_park(cs, 2, 0), 0);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(checksched_pick(cs, "orders", 2, &conn), 0);
		assert_true(conn == 1 || conn == 3);
		seen[conn]++;
	}
	assert_int_equal(seen[1], 3);
	assert_int_equal(seen[3], 3);
	/* origin gone: the others, never a connection of another group */
	assert_int_equal(checksched_unregister(cs, 2), 0);
	assert_int_equal(checksched_pick(cs, "orders", 2, &conn), 0);
	assert_true(conn == 1 || conn == 3);
	/* origin polling but in another group: not asked */
	assert_int_equal(checksched_pick(cs, "orders", 9, &conn), 0);
	assert_true(conn == 1 || conn == 3);
	/* nobody polling: busy; nobody registered: no producer */
	assert_int_equal(checksched_park(cs, 1, 0), 0);
	assert_int_equal(checksched_park(cs, 3, 0), 0);
	conn = 77;
	assert_int_equal(checksched_pick(cs, "orders", 1, &conn), CHECKSCHED_E_BUSY);
	assert_int_equal(conn, 77);
	assert_int_equal(checksched_pick(cs, "nobody", 0, &conn), CHECKSCHED_E_NO_PRODUCER);
	assert_int_equal(checksched_unregister(cs, 1), 0);
	assert_int_equal(checksched_unregister(cs, 3), 0);
	assert_int_equal(checksched_pick(cs, "orders", 0, &conn), CHECKSCHED_E_NO_PRODUCER);
	assert_int_equal(checksched_unregister(cs, 3), CHECKSCHED_E_NOT_FOUND);
	checksched_free(cs);
}

static void test_checksched_register_moves_group(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn;

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "a", 5), 0);
	assert_int_equal(checksched_park(cs, 5, 3), 0);
	assert_int_equal(checksched_register(cs, "a", 5), 0); /* no change */
	assert_int_equal(checksched_slots(cs, 5), 3);
	assert_int_equal(checksched_register(cs, "b", 5), 0);
	assert_int_equal(checksched_slots(cs, 5), 0);
	assert_int_equal(checksched_pick(cs, "a", 5, &conn), CHECKSCHED_E_NO_PRODUCER);
	assert_int_equal(checksched_park(cs, 5, 1), 0);
	assert_int_equal(checksched_pick(cs, "b", 0, &conn), 0);
	assert_int_equal(conn, 5);
	assert_int_equal(checksched_register(cs, "b", 0), -EINVAL);
	assert_int_equal(checksched_park(cs, 99, 1), CHECKSCHED_E_NOT_FOUND);
	checksched_free(cs);
}

/* An answer names its check: one for another check of the same
 * transaction (a late answer to an earlier one) leaves the check out. */
static void test_checksched_answer_names_its_check(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn = 0;

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 7), 0);
	assert_int_equal(checksched_park(cs, 7, 3), 0);
	assert_int_equal(checksched_dispatch(cs, 100, 3, "g", 7, 0, &conn), 0);
	assert_int_equal(checksched_answered(cs, 100, 2, &conn), CHECKSCHED_E_NOT_FOUND);
	assert_int_equal(checksched_answered(cs, 100, 4, &conn), CHECKSCHED_E_NOT_FOUND);
	assert_int_equal(checksched_outstanding(cs), 1);
	assert_int_equal(checksched_answered(cs, 100, 3, &conn), 0);
	assert_int_equal(checksched_answered(cs, 100, 3, &conn), CHECKSCHED_E_NOT_FOUND);
	/* any check: whichever is out */
	assert_int_equal(checksched_dispatch(cs, 100, 4, "g", 7, 0, &conn), 0);
	assert_int_equal(checksched_answered(cs, 100, CHECKSCHED_ANY_CHECK, &conn), 0);
	assert_int_equal(checksched_outstanding(cs), 0);
	checksched_free(cs);
}

static void test_checksched_dispatch_consumes_slot_and_leases(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn = 0;
	int64_t ids[8];

	(void)state;
	checksched_policy_default(&p);
	p.lease_ms = 1000;
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 7), 0);
	assert_int_equal(checksched_park(cs, 7, 2), 0);
	assert_int_equal(checksched_dispatch(cs, 100, 0, "g", 7, 0, &conn), 0);
	assert_int_equal(conn, 7);
	assert_int_equal(checksched_slots(cs, 7), 1);
	/* the same txn is not handed out twice while out */
	assert_int_equal(checksched_dispatch(cs, 100, 0, "g", 7, 1, &conn), CHECKSCHED_E_OUTSTANDING);
	assert_int_equal(checksched_dispatch(cs, 101, 0, "g", 7, 1, &conn), 0);
	assert_int_equal(checksched_slots(cs, 7), 0);
	assert_int_equal(checksched_dispatch(cs, 102, 0, "g", 7, 1, &conn), CHECKSCHED_E_BUSY);
	assert_int_equal(checksched_outstanding(cs), 2);
	/* answered: gone; a second answer is not found */
	conn = 0;
	assert_int_equal(checksched_answered(cs, 100, CHECKSCHED_ANY_CHECK, &conn), 0);
	assert_int_equal(conn, 7);
	assert_int_equal(checksched_answered(cs, 100, CHECKSCHED_ANY_CHECK,
					&conn), CHECKSCHED_E_NOT_FOUND);
	/* lease: not expired before, expired at its end */
	assert_int_equal(checksched_expire(cs, 1000, ids, 8), 0);
	assert_int_equal(checksched_expire(cs, 1001, ids, 8), 1);
	assert_int_equal(ids[0], 101);
	assert_int_equal(checksched_outstanding(cs), 0);
	checksched_free(cs);
}

static void test_checksched_unregister_expires_its_checks(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn;
	int64_t ids[8];

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 1), 0);
	assert_int_equal(checksched_register(cs, "g", 2), 0);
	assert_int_equal(checksched_park(cs, 1, 5), 0);
	assert_int_equal(checksched_park(cs, 2, 5), 0);
	assert_int_equal(checksched_dispatch(cs, 10, 0, "g", 1, 0, &conn), 0);
	assert_int_equal(checksched_dispatch(cs, 11, 0, "g", 2, 0, &conn), 0);
	assert_int_equal(checksched_unregister(cs, 1), 0);
	assert_int_equal(checksched_expire(cs, 1, ids, 8), 1);
	assert_int_equal(ids[0], 10);
	assert_int_equal(checksched_outstanding(cs), 1);
	/* the same txn can now go to the remaining connection */
	assert_int_equal(checksched_dispatch(cs, 10, 0, "g", 1, 1, &conn), 0);
	assert_int_equal(conn, 2);
	checksched_free(cs);
}

/* The broker registers a producer instance under a 64-bit hash with the
 * low bit set (txn_api_instance_id) next to 8-aligned connection ids: the
 * instance is preferred for its transactions whichever connection it polls
 * on, and it can go away and come back under the same id. */
static void test_checksched_instance_id_as_origin(void **state)
{
	const uint64_t inst = 0xaf63bd4c8601b7dfULL | 1, c1 = 0x7f00cafe1000ULL, c2 = 0x7f00cafe2000ULL;
	checksched_policy p;
	checksched *cs;
	uint64_t conn = 0;

	(void)state;
	checksched_policy_default(&p);
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", c1), 0);
	assert_int_equal(checksched_register(cs, "g", inst), 0);
	assert_int_equal(checksched_register(cs, "g", c2), 0);
	for (uint64_t id = 0; id < 3; id++)
		assert_int_equal(checksched_park(cs, id == 0 ? c1 : id == 1 ? inst : c2, 10), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(checksched_dispatch(cs, 100 + i, 0, "g", inst, 0, &conn), 0);
		assert_int_equal(conn, inst);
	}
	/* its poll answered (slots 0): the others take its checks meanwhile */
	assert_int_equal(checksched_park(cs, inst, 0), 0);
	assert_int_equal(checksched_dispatch(cs, 200, 0, "g", inst, 0, &conn), 0);
	assert_true(conn == c1 || conn == c2);
	/* gone and back (a new poll on another connection): preferred again */
	assert_int_equal(checksched_unregister(cs, inst), 0);
	assert_int_equal(checksched_register(cs, "g", inst), 0);
	assert_int_equal(checksched_park(cs, inst, 10), 0);
	assert_int_equal(checksched_dispatch(cs, 201, 0, "g", inst, 0, &conn), 0);
	assert_int_equal(conn, inst);
	checksched_free(cs);
}

static void test_checksched_outstanding_cap(void **state)
{
	checksched_policy p;
	checksched *cs;
	uint64_t conn;

	(void)state;
	checksched_policy_default(&p);
	p.max_outstanding = 3;
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 1), 0);
	assert_int_equal(checksched_park(cs, 1, 100), 0);
	assert_int_equal(checksched_budget(cs, 0), 3);
	for (int64_t t = 1; t <= 3; t++)
		assert_int_equal(checksched_dispatch(cs, t, 0, "g", 0, 0, &conn), 0);
	assert_int_equal(checksched_budget(cs, 0), 0);
	assert_int_equal(checksched_dispatch(cs, 4, 0, "g", 0, 0, &conn), CHECKSCHED_E_FULL);
	assert_int_equal(checksched_answered(cs, 2, CHECKSCHED_ANY_CHECK, NULL), 0);
	assert_int_equal(checksched_dispatch(cs, 4, 0, "g", 0, 0, &conn), 0);
	checksched_free(cs);
}

/* Many checks out, answered in a scrambled order, the rest expired: the
 * hash table (with backward-shift deletion) keeps every entry findable. */
static void test_checksched_many_outstanding(void **state)
{
	enum { N = 20000 };
	checksched_policy p;
	checksched *cs;
	uint64_t conn, x = 88172645463325252ULL;
	static int64_t ids[N];
	static bool answered[N + 1];
	size_t left = N, got;

	(void)state;
	checksched_policy_default(&p);
	p.rate = 1e6;
	p.burst = N;
	p.max_outstanding = N;
	p.lease_ms = 10;
	cs = new_sched(&p, 0);
	assert_int_equal(checksched_register(cs, "g", 1), 0);
	assert_int_equal(checksched_park(cs, 1, N), 0);
	for (int64_t t = 1; t <= N; t++)
		assert_int_equal(checksched_dispatch(cs, t * 7919, 0, "g", 0, 0, &conn), 0);
	for (int i = 0; i < N / 2; i++) {
		int64_t t;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		t = (int64_t)(x % N) + 1;
		if (answered[t])
			continue;
		answered[t] = true;
		assert_int_equal(checksched_answered(cs, t * 7919, CHECKSCHED_ANY_CHECK, NULL), 0);
		left--;
	}
	assert_int_equal(checksched_outstanding(cs), left);
	got = checksched_expire(cs, 10, ids, N);
	assert_int_equal(got, left);
	for (size_t i = 0; i < got; i++) {
		assert_int_equal(ids[i] % 7919, 0);
		assert_false(answered[ids[i] / 7919]);
	}
	assert_int_equal(checksched_outstanding(cs), 0);
	checksched_free(cs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksched_defaults_match_rocketmq),
		cmocka_unit_test(test_checksched_first_check_after_timeout),
		cmocka_unit_test(test_checksched_backoff_doubles_to_cap),
		cmocka_unit_test(test_checksched_max_checks_discards),
		cmocka_unit_test(test_checksched_bad_policy_rejected),
		cmocka_unit_test(test_checksched_rate_limit_bounds_checks),
		cmocka_unit_test(test_checksched_pick_prefers_origin),
		cmocka_unit_test(test_checksched_pick_falls_back_round_robin),
		cmocka_unit_test(test_checksched_register_moves_group),
		cmocka_unit_test(test_checksched_dispatch_consumes_slot_and_leases),
		cmocka_unit_test(test_checksched_answer_names_its_check),
		cmocka_unit_test(test_checksched_unregister_expires_its_checks),
		cmocka_unit_test(test_checksched_instance_id_as_origin),
		cmocka_unit_test(test_checksched_outstanding_cap),
		cmocka_unit_test(test_checksched_many_outstanding),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
