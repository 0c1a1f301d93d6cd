/*
 * test_tokenbucket.c — ratelimit/tokenbucket with a fake clock: burst then
 * steady rate, exactness over every window of random runs (brute force),
 * idle gaps, clocks stepping back, multi-token and oversized requests,
 * fractional and very high rates, reservations, refunds, live changes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "tokenbucket.h"

#define US 1000LL
#define MS 1000000LL
#define SEC 1000000000LL

/* One admission: when (the bucket's clock) and how many tokens. */
struct adm {
	int64_t t;
	uint64_t n;
};

/* Deterministic random numbers (xorshift), so a failure reproduces. */
static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Brute force: for every pair of admissions i <= j (sorted by time), the
 * tokens admitted in [t_i, t_j] are at most burst + rate * (t_j - t_i). */
static void check_windows(const struct adm *a, size_t na, double rate, uint64_t burst)
{
	for (size_t i = 0; i < na; i++) {
		uint64_t sum = 0;

		for (size_t j = i; j < na; j++) {
			double limit = (double)burst + rate * (double)(a[j].t - a[i].t) / 1e9;

			sum += a[j].n;
			if ((double)sum > limit + 1e-6)
				fail_msg("window [%lld, %lld] admitted %llu > %.6f (rate %g burst %llu)",
					 (long long)a[i].t, (long long)a[j].t,
					 (unsigned long long)sum, limit, rate,
					 (unsigned long long)burst);
		}
	}
}

/* How long until the bucket is full again.  Demand that always exceeds
 * supply means someone asks at least that often; waiting longer would waste
 * the tokens that no longer fit. */
static int64_t full_in(const tokenbucket *tb, int64_t now, int64_t clock)
{
	return tokenbucket_wait_ns(tb, now > clock ? now : clock, tb->burst);
}

/* A random run of `dur` ns: random clock steps (some zero, some backwards,
 * some long gaps) and, unless `saturate`, random demand of 1..5 tokens per
 * attempt; with `saturate`, 1-token takes until refused at every step and
 * steps no longer than the time the bucket takes to fill.
 * Admissions are recorded at the bucket's clock: the latest time at which a
 * take succeeded (a refused take changes nothing, not even the clock).
 * Returns the count; *first and *last get the first and last take times. */
static size_t simulate(tokenbucket *tb, uint64_t seed, int64_t dur, bool saturate,
		       struct adm *out, size_t cap, int64_t *first, int64_t *last)
{
	int64_t interval = (int64_t)(1e9 / tb->rate) + 1;
	int64_t now = 1000 * SEC, clock = now;
	uint64_t x = seed | 1;
	size_t na = 0;

	*first = now;
	while (now - *first <= dur) {
		uint64_t r = rnd(&x);

		if (saturate) {
			while (tokenbucket_take(tb, now, 1)) {
				clock = now > clock ? now : clock;
				assert_true(na < cap);
				out[na++] = (struct adm){ clock, 1 };
			}
		} else {
			for (uint64_t k = r % 4; k > 0; k--) {
				uint64_t max_n = tb->burst < 5 ? tb->burst : 5;
				uint64_t n = 1 + rnd(&x) % max_n;

				if (tokenbucket_take(tb, now, n)) {
					clock = now > clock ? now : clock;
					assert_true(na < cap);
					out[na++] = (struct adm){ clock, n };
				}
			}
		}
		*last = clock;
		r = rnd(&x);
		if (r % 50 == 0)
			now -= (int64_t)(rnd(&x) % (uint64_t)interval); /* steps back */
		else if (saturate)
			now += (int64_t)(rnd(&x) % (uint64_t)(full_in(tb, now, clock) + 1));
		else if (r % 200 == 1)
			now += 10 * interval; /* idle gap */
		else if (r % 7 != 2)
			now += (int64_t)(rnd(&x) % (uint64_t)(3 * interval));
	}
	return na;
}

static void test_tokenbucket_init_rejects_bad_config(void **state)
{
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 100), 0);
	assert_int_equal(tokenbucket_init(&tb, 0, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, -5, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, NAN, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, INFINITY, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, 1e-9, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, 1e12, 1), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, 1000, 0), -EINVAL);
	assert_int_equal(tokenbucket_init(&tb, 1000, (uint64_t)INT64_MAX + 1), -EINVAL);
	/* a refused init leaves the bucket as it was */
	assert_int_equal(tb.burst, 100);
	assert_true(tb.rate == 1000);
	assert_int_equal(tokenbucket_init(&tb, 0.5, 1), 0);
	assert_int_equal(tokenbucket_init(&tb, 10e6, INT64_MAX), 0);
	assert_int_equal(tokenbucket_init(&tb, TOKENBUCKET_RATE_MIN, 1), 0);
}

static void test_tokenbucket_burst_then_steady_rate(void **state)
{
	int64_t t0 = 5 * SEC;
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 100), 0);
	assert_int_equal(tokenbucket_available(&tb, t0), 100);
	for (int i = 0; i < 100; i++)
		assert_true(tokenbucket_take(&tb, t0, 1));
	assert_false(tokenbucket_take(&tb, t0, 1));
	assert_int_equal(tokenbucket_wait_ns(&tb, t0, 1), MS);
	for (int64_t k = 1; k <= 2000; k++) {
		assert_false(tokenbucket_take(&tb, t0 + k * MS - 1, 1));
		assert_int_equal(tokenbucket_wait_ns(&tb, t0 + k * MS - 1, 1), 1);
		assert_true(tokenbucket_take(&tb, t0 + k * MS, 1));
		assert_false(tokenbucket_take(&tb, t0 + k * MS, 1));
	}
}

static void test_tokenbucket_exact_over_random_windows(void **state)
{
	static const struct {
		double rate;
		uint64_t burst;
	} cfg[] = {
		{ 1000, 100 }, { 333.333, 7 }, { 2000.5, 1 }, { 7.25, 3 },
		{ 1.0 / 3, 2 }, { 997, 50 },
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
		for (uint64_t seed = 1; seed <= 3; seed++) {
			size_t cap = cfg[c].burst + (size_t)(cfg[c].rate * 11) + 16;
			struct adm *a = malloc(cap * sizeof(*a));
			int64_t first, last;
			tokenbucket tb;
			size_t na;

			assert_non_null(a);
			assert_int_equal(tokenbucket_init(&tb, cfg[c].rate, cfg[c].burst), 0);
			na = simulate(&tb, seed * 7919 + c, 10 * SEC, false, a, cap, &first, &last);
			assert_true(na > 0);
			check_windows(a, na, cfg[c].rate, cfg[c].burst);
			free(a);
		}
	}
}

static void test_tokenbucket_saturated_demand_gets_full_rate(void **state)
{
	static const struct {
		double rate;
		uint64_t burst;
	} cfg[] = {
		{ 1000, 100 }, { 333.333, 7 }, { 12345.678, 2 }, { 7.25, 3 },
		{ 1.0 / 3, 2 }, { 100000, 1000 }, { 1000, 1 },
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
		size_t cap = cfg[c].burst + (size_t)(cfg[c].rate * 12) + 16;
		struct adm *a = malloc(cap * sizeof(*a));
		int64_t first, last;
		double bound;
		tokenbucket tb;
		size_t na;

		assert_non_null(a);
		assert_int_equal(tokenbucket_init(&tb, cfg[c].rate, cfg[c].burst), 0);
		na = simulate(&tb, 42 + c, 10 * SEC, true, a, cap, &first, &last);
		bound = (double)cfg[c].burst + cfg[c].rate * (double)(last - first) / 1e9;
		if ((double)na < bound - 1 || (double)na > bound + 1e-6)
			fail_msg("rate %g burst %llu: admitted %zu, bound %.6f",
				 cfg[c].rate, (unsigned long long)cfg[c].burst, na, bound);
		if (cfg[c].rate <= 2000)
			check_windows(a, na, cfg[c].rate, cfg[c].burst);
		free(a);
	}
}

static void test_tokenbucket_long_idle_caps_at_burst(void **state)
{
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 50), 0);
	assert_true(tokenbucket_take(&tb, INT64_MIN + 1, 50));
	assert_int_equal(tokenbucket_available(&tb, INT64_MAX), 50);
	assert_true(tokenbucket_take(&tb, INT64_MAX - 1, 50));
	assert_false(tokenbucket_take(&tb, INT64_MAX - 1, 1));
	assert_int_equal(tokenbucket_available(&tb, INT64_MAX), 0);

	/* largest rate and burst over the largest gap: no overflow */
	assert_int_equal(tokenbucket_init(&tb, 5e11, INT64_MAX), 0);
	assert_true(tokenbucket_take(&tb, INT64_MIN, INT64_MAX));
	assert_int_equal(tokenbucket_available(&tb, INT64_MIN), 0);
	assert_int_equal(tokenbucket_available(&tb, INT64_MAX), INT64_MAX);
	assert_true(tokenbucket_take(&tb, INT64_MAX, INT64_MAX));
	assert_false(tokenbucket_take(&tb, INT64_MAX, 1));
}

static void test_tokenbucket_clock_backwards_is_no_time(void **state)
{
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 1), 0);
	assert_true(tokenbucket_take(&tb, 10 * MS, 1));
	/* 5 ms earlier: nothing accrued, nothing taken back; the wait counts
	 * from the bucket's own latest time */
	assert_false(tokenbucket_take(&tb, 5 * MS, 1));
	assert_int_equal(tokenbucket_available(&tb, 5 * MS), 0);
	assert_int_equal(tokenbucket_wait_ns(&tb, 5 * MS, 1), MS);
	assert_false(tokenbucket_take(&tb, 10 * MS + MS / 2, 1));
	assert_true(tokenbucket_take(&tb, 11 * MS, 1));
	/* a full bucket stays full when asked about the past */
	assert_int_equal(tokenbucket_available(&tb, 20 * MS), 1);
	assert_true(tokenbucket_take(&tb, 20 * MS, 1));
	assert_true(tokenbucket_take(&tb, 21 * MS, 1));
	assert_int_equal(tokenbucket_available(&tb, 15 * MS), 0);
	/* after a step back, time resumes from the latest time seen */
	assert_false(tokenbucket_take(&tb, 21 * MS + MS - 1, 1));
	assert_true(tokenbucket_take(&tb, 22 * MS, 1));
}

static void test_tokenbucket_multi_token_requests(void **state)
{
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 10), 0);
	assert_true(tokenbucket_take(&tb, 0, 7));
	assert_false(tokenbucket_take(&tb, 0, 4));
	assert_int_equal(tokenbucket_available(&tb, 0), 3);
	assert_int_equal(tokenbucket_wait_ns(&tb, 0, 4), MS);
	assert_int_equal(tokenbucket_wait_ns(&tb, 0, 3), 0);
	assert_false(tokenbucket_take(&tb, MS - 1, 4));
	assert_true(tokenbucket_take(&tb, MS, 4));
	assert_true(tokenbucket_take(&tb, MS, 0));
	assert_int_equal(tokenbucket_wait_ns(&tb, MS, 0), 0);
	assert_int_equal(tokenbucket_wait_ns(&tb, MS, 10), 10 * MS);
	assert_true(tokenbucket_take(&tb, 11 * MS, 10));
}

static void test_tokenbucket_over_burst_never_admitted(void **state)
{
	int64_t wait = -1;
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 10), 0);
	assert_int_equal(tokenbucket_wait_ns(&tb, 0, 11), TOKENBUCKET_NEVER);
	assert_false(tokenbucket_take(&tb, 0, 11));
	assert_false(tokenbucket_take(&tb, INT64_MAX, 11));
	assert_false(tokenbucket_reserve(&tb, 0, 11, INT64_MAX, &wait));
	assert_int_equal(wait, -1);
	assert_int_equal(tokenbucket_available(&tb, 0), 10);
	assert_true(tokenbucket_take(&tb, 0, 10));
}

static void test_tokenbucket_fractional_rate(void **state)
{
	int64_t last = 0;
	int count = 0;
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 0.5, 1), 0);
	assert_true(tokenbucket_take(&tb, 0, 1));
	assert_int_equal(tokenbucket_wait_ns(&tb, 0, 1), 2 * SEC);
	assert_false(tokenbucket_take(&tb, 2 * SEC - 1, 1));
	assert_true(tokenbucket_take(&tb, 2 * SEC, 1));
	/* 100 s of 1 ms polling: one token every 2 s exactly */
	for (int64_t t = 2 * SEC + MS; t <= 102 * SEC; t += MS) {
		if (tokenbucket_take(&tb, t, 1)) {
			if (count)
				assert_int_equal(t - last, 2 * SEC);
			last = t;
			count++;
		}
	}
	assert_int_equal(count, 50);
	assert_int_equal(last, 102 * SEC);
}

static void test_tokenbucket_very_high_rate(void **state)
{
	uint64_t count = 0;
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 10e6, 1000), 0);
	for (int64_t t = 0; t <= SEC; t += US)
		while (tokenbucket_take(&tb, t, 1))
			count++;
	/* exactly 1000 + 10,000,000; the brief allows +-1 */
	assert_in_range(count, 1000 + 10000000 - 1, 1000 + 10000000 + 1);
	assert_int_equal(tokenbucket_wait_ns(&tb, SEC, 1), 100);
}

static void test_tokenbucket_reserve_queues_behind(void **state)
{
	int64_t wait = -1;
	tokenbucket tb, before;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 100000, 1), 0);
	assert_true(tokenbucket_reserve(&tb, 0, 1, 50 * US, &wait));
	assert_int_equal(wait, 0);
	for (int64_t k = 1; k <= 5; k++) {
		assert_true(tokenbucket_reserve(&tb, 0, 1, 50 * US, &wait));
		assert_int_equal(wait, k * 10 * US);
	}
	assert_int_equal(tokenbucket_available(&tb, 0), -5);
	assert_false(tokenbucket_take(&tb, 0, 1));
	/* the 6th would wait 60 us > 50 us: refused, nothing changes */
	before = tb;
	wait = -1;
	assert_false(tokenbucket_reserve(&tb, 0, 1, 50 * US, &wait));
	assert_int_equal(wait, -1);
	assert_true(tb.level == before.level);
	assert_int_equal(tb.last_ns, before.last_ns);
	assert_int_equal(tokenbucket_wait_ns(&tb, 0, 1), 60 * US);
	/* later callers keep queueing behind: at 25 us the next slot is 60 us */
	assert_true(tokenbucket_reserve(&tb, 25 * US, 1, 50 * US, &wait));
	assert_int_equal(wait, 35 * US);
	/* a negative max wait is 0: only an immediate take */
	assert_false(tokenbucket_reserve(&tb, 25 * US, 1, -1, &wait));
	assert_true(tokenbucket_take(&tb, 70 * US, 1));
}

static void test_tokenbucket_refund_clipped_to_burst(void **state)
{
	int64_t wait;
	tokenbucket tb;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 10), 0);
	assert_true(tokenbucket_take(&tb, 0, 10));
	assert_true(tokenbucket_reserve(&tb, 0, 3, SEC, &wait));
	assert_int_equal(wait, 3 * MS);
	assert_int_equal(tokenbucket_available(&tb, 0), -3);
	tokenbucket_refund(&tb, 0, 3);
	assert_int_equal(tokenbucket_available(&tb, 0), 0);
	tokenbucket_refund(&tb, MS, 10);
	assert_int_equal(tokenbucket_available(&tb, MS), 10);
	tokenbucket_refund(&tb, MS, 10);
	assert_int_equal(tokenbucket_available(&tb, 100 * SEC), 10);
}

static void test_tokenbucket_live_reconfiguration(void **state)
{
	int64_t wait;
	tokenbucket tb, before;

	(void)state;
	assert_int_equal(tokenbucket_init(&tb, 1000, 100), 0);
	assert_true(tokenbucket_take(&tb, 0, 100));
	/* 1 ms at the old rate, then twice as fast */
	assert_int_equal(tokenbucket_set(&tb, 2000, 100, MS), 0);
	assert_int_equal(tokenbucket_available(&tb, MS), 1);
	assert_int_equal(tokenbucket_available(&tb, 2 * MS), 3);
	/* a smaller burst drops the excess */
	assert_int_equal(tokenbucket_set(&tb, 2000, 10, SEC), 0);
	assert_int_equal(tokenbucket_available(&tb, SEC), 10);
	/* a larger one adds nothing at once, fills at the rate */
	assert_int_equal(tokenbucket_set(&tb, 2000, 200, SEC), 0);
	assert_int_equal(tokenbucket_available(&tb, SEC), 10);
	assert_int_equal(tokenbucket_available(&tb, SEC + 50 * MS), 110);
	assert_int_equal(tokenbucket_available(&tb, 2 * SEC), 200);
	/* a reservation debt survives a change */
	assert_true(tokenbucket_take(&tb, 2 * SEC, 200));
	assert_true(tokenbucket_reserve(&tb, 2 * SEC, 4, SEC, &wait));
	assert_int_equal(wait, 2 * MS);
	assert_int_equal(tokenbucket_set(&tb, 1000, 200, 2 * SEC), 0);
	assert_int_equal(tokenbucket_available(&tb, 2 * SEC), -4);
	assert_int_equal(tokenbucket_wait_ns(&tb, 2 * SEC, 1), 5 * MS);
	/* invalid changes are refused and change nothing */
	before = tb;
	assert_int_equal(tokenbucket_set(&tb, NAN, 200, 3 * SEC), -EINVAL);
	assert_int_equal(tokenbucket_set(&tb, 1000, 0, 3 * SEC), -EINVAL);
	assert_true(tb.level == before.level);
	assert_int_equal(tb.last_ns, before.last_ns);
	assert_int_equal(tb.rate_u, before.rate_u);
	assert_int_equal(tb.burst, 200);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokenbucket_init_rejects_bad_config),
		cmocka_unit_test(test_tokenbucket_burst_then_steady_rate),
		cmocka_unit_test(test_tokenbucket_exact_over_random_windows),
		cmocka_unit_test(test_tokenbucket_saturated_demand_gets_full_rate),
		cmocka_unit_test(test_tokenbucket_long_idle_caps_at_burst),
		cmocka_unit_test(test_tokenbucket_clock_backwards_is_no_time),
		cmocka_unit_test(test_tokenbucket_multi_token_requests),
		cmocka_unit_test(test_tokenbucket_over_burst_never_admitted),
		cmocka_unit_test(test_tokenbucket_fractional_rate),
		cmocka_unit_test(test_tokenbucket_very_high_rate),
		cmocka_unit_test(test_tokenbucket_reserve_queues_behind),
		cmocka_unit_test(test_tokenbucket_refund_clipped_to_burst),
		cmocka_unit_test(test_tokenbucket_live_reconfiguration),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
