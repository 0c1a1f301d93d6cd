/*
 * tokenbucket.c — see tokenbucket.h.
 *
 * Overflow bounds (all in tokenbucket_units, signed 128-bit):
 *  - cap = burst * UNIT <= 2^63 * 2^54 = 2^117.
 *  - A reservation is granted only if its deficit is <= max_wait * rate_u,
 *    so the level never goes below -(2^63 * 2^63) = -2^126.
 *  - Accrual: dt < 2^64 and rate_u < 2^63, so dt * rate_u < 2^127; it is
 *    compared with cap - level <= 2^117 + 2^126 before being added.
 */
#include "tokenbucket.h"

#include <errno.h>

static tokenbucket_units units_of(uint64_t n)
{
	return (tokenbucket_units)n * TOKENBUCKET_UNIT;
}

/* Validates a configuration and converts the rate to units per ns. */
static int rate_units(double rate, uint64_t burst, int64_t *rate_u)
{
	if (!(rate >= TOKENBUCKET_RATE_MIN && rate < TOKENBUCKET_RATE_MAX))
		return -EINVAL; /* also NaN, <= 0 and infinities */
	if (burst < 1 || burst > INT64_MAX)
		return -EINVAL;
	/* Scaling by 2^24 is exact in a double; the cast rounds down. */
	*rate_u = (int64_t)(rate * (double)(1 << TOKENBUCKET_FRAC_BITS));
	return 0;
}

/* The bucket's own clock: now_ns, or the latest time seen if that is later. */
static int64_t clock_at(const tokenbucket *tb, int64_t now_ns)
{
	return now_ns > tb->last_ns ? now_ns : tb->last_ns;
}

/* The level at now_ns: accrued since last_ns, stopped at cap. */
static tokenbucket_units level_at(const tokenbucket *tb, int64_t now_ns)
{
	tokenbucket_units dt, gain;

	if (now_ns <= tb->last_ns)
		return tb->level;
	dt = (tokenbucket_units)now_ns - tb->last_ns; /* < 2^64 */
	gain = dt * tb->rate_u;
	if (gain >= tb->cap - tb->level)
		return tb->cap;
	return tb->level + gain;
}

/* Nanoseconds until `level` grows to `need` (0 if it is there already),
 * rounded up; may exceed INT64_MAX. */
static tokenbucket_units wait_for(const tokenbucket *tb, tokenbucket_units level,
				  tokenbucket_units need)
{
	if (level >= need)
		return 0;
	return (need - level + tb->rate_u - 1) / tb->rate_u;
}

int tokenbucket_init(tokenbucket *tb, double rate, uint64_t burst)
{
	int64_t rate_u;
	int r;

	r = rate_units(rate, burst, &rate_u);
	if (r < 0)
		return r;
	tb->cap = units_of(burst);
	tb->level = tb->cap;
	tb->rate_u = rate_u;
	tb->last_ns = INT64_MIN;
	tb->burst = burst;
	tb->rate = rate;
	return 0;
}

int tokenbucket_set(tokenbucket *tb, double rate, uint64_t burst, int64_t now_ns)
{
	tokenbucket_units level;
	int64_t rate_u;
	int r;

	r = rate_units(rate, burst, &rate_u);
	if (r < 0)
		return r;
	level = level_at(tb, now_ns);
	tb->last_ns = clock_at(tb, now_ns);
	tb->cap = units_of(burst);
	tb->level = level < tb->cap ? level : tb->cap;
	tb->rate_u = rate_u;
	tb->burst = burst;
	tb->rate = rate;
	return 0;
}

int64_t tokenbucket_available(const tokenbucket *tb, int64_t now_ns)
{
	tokenbucket_units level = level_at(tb, now_ns);
	tokenbucket_units whole = level / TOKENBUCKET_UNIT;

	if (level < 0 && whole * TOKENBUCKET_UNIT != level)
		whole--; /* round towards minus infinity */
	if (whole < INT64_MIN)
		return INT64_MIN;
	return (int64_t)whole;
}

int64_t tokenbucket_wait_ns(const tokenbucket *tb, int64_t now_ns, uint64_t n)
{
	tokenbucket_units w;

	if (n > tb->burst)
		return TOKENBUCKET_NEVER;
	w = wait_for(tb, level_at(tb, now_ns), units_of(n));
	return w >= TOKENBUCKET_NEVER ? TOKENBUCKET_NEVER : (int64_t)w;
}

bool tokenbucket_take(tokenbucket *tb, int64_t now_ns, uint64_t n)
{
	int64_t wait_ns;

	return tokenbucket_reserve(tb, now_ns, n, 0, &wait_ns);
}

bool tokenbucket_reserve(tokenbucket *tb, int64_t now_ns, uint64_t n,
			 int64_t max_wait_ns, int64_t *wait_ns)
{
	tokenbucket_units level, need, w;

	if (n == 0) {
		*wait_ns = 0;
		return true;
	}
	if (n > tb->burst)
		return false;
	if (max_wait_ns < 0)
		max_wait_ns = 0;
	level = level_at(tb, now_ns);
	need = units_of(n);
	w = wait_for(tb, level, need);
	if (w > max_wait_ns)
		return false;
	tb->level = level - need;
	tb->last_ns = clock_at(tb, now_ns);
	*wait_ns = (int64_t)w;
	return true;
}

void tokenbucket_refund(tokenbucket *tb, int64_t now_ns, uint64_t n)
{
	tokenbucket_units level = level_at(tb, now_ns);

	if (n > tb->burst)
		n = tb->burst; /* more than was ever taken at once: clipped anyway */
	level += units_of(n);
	tb->level = level < tb->cap ? level : tb->cap;
	tb->last_ns = clock_at(tb, now_ns);
}
