/*
 * tokenbucket.h — an exact token bucket: a rate (tokens per second) and a
 * burst capacity (tokens), with reservations ahead of time for pacing.
 *
 * What it owns: nothing but its own plain struct (no allocation, no I/O, no
 * clock of its own: every call is given `now_ns`, int64 nanoseconds of any
 * monotonic-ish clock).  A struct copy is a snapshot that can be restored.
 *
 * Threads: not thread-safe.  The caller serializes all calls on one bucket.
 *
 * Representation (why fixed point, not a float and not a GCRA interval):
 *  - The level is an integer count of "units", 1 token = TOKENBUCKET_UNIT =
 *    1e9 * 2^24 units, and the rate is an integer number of units accrued per
 *    nanosecond: rate_u = floor(rate * 2^24).  Accruing dt ns adds exactly
 *    dt * rate_u units, so there is no rounding at all once the rate is
 *    stored: the bucket never drifts, however the calls are spaced.
 *  - The only rounding is that of the rate itself, downwards (never more
 *    than configured): rates that are multiples of 2^-24 /s (every integer,
 *    0.5, 0.25, ...) are exact; others lose < 6e-8 tokens/s.
 *  - A GCRA "theoretical arrival time" in nanoseconds would have to round the
 *    emission interval 1e9/rate (333333333.3 ns at 3/s) on every token; the
 *    fixed-point level avoids that and makes live reconfiguration a matter
 *    of keeping the level and changing rate_u.
 *  - Arithmetic is 128-bit (__int128).  Limits: 2^-24 <= rate < 2^39 tokens/s
 *    (6e-8 to 5.4e11), 1 <= burst <= INT64_MAX tokens.
 *
 * Invariants and semantics:
 *  - level <= burst * UNIT.  It starts full.  Accrual stops at burst, so any
 *    idle gap (even INT64_MAX ns) yields at most burst tokens.
 *  - The level may be negative: reservations consume tokens that have not
 *    accrued yet, and later callers queue behind them.
 *  - Exactness: over any interval of length T the bucket hands out at most
 *    burst + rate * T tokens (counting a reservation at the time its wait
 *    ends), and when demand always exceeds supply (someone asks at least as
 *    often as the bucket takes to fill) it hands out more than
 *    burst + rate * T - n, n the request size, rate as stored.
 *  - Clock: the bucket's clock is the latest now_ns at which it changed (a
 *    refused take or reserve changes nothing, not even the clock).  A now_ns
 *    earlier than that is treated as "no time passed": nothing accrues,
 *    nothing is taken back.  Returned waits are durations counted from the
 *    bucket's clock, so a caller whose clock stepped back is not stalled by
 *    the size of the step.
 *  - A request of n tokens takes n (a batch of n messages, a payload of n
 *    bytes).  n == 0 always succeeds and changes nothing.  n > burst can
 *    never succeed.
 *
 * Errors: -EINVAL for a configuration outside the limits above.
 */
#ifndef SLUICE_TOKENBUCKET_H
#define SLUICE_TOKENBUCKET_H

#include <stdbool.h>
#include <stdint.h>

__extension__ typedef __int128 tokenbucket_units;

#define TOKENBUCKET_FRAC_BITS 24
#define TOKENBUCKET_UNIT ((tokenbucket_units)1000000000 << TOKENBUCKET_FRAC_BITS)
#define TOKENBUCKET_RATE_MIN (1.0 / (double)(1 << TOKENBUCKET_FRAC_BITS))
#define TOKENBUCKET_RATE_MAX 549755813888.0 /* 2^39, exclusive */
#define TOKENBUCKET_NEVER INT64_MAX         /* a wait that never ends */

typedef struct tokenbucket {
	tokenbucket_units level; /* at last_ns; <= cap; < 0 = reserved ahead */
	tokenbucket_units cap;   /* burst * TOKENBUCKET_UNIT */
	int64_t rate_u;          /* units accrued per ns, >= 1 */
	int64_t last_ns;         /* latest now_ns seen; INT64_MIN before any */
	uint64_t burst;
	double rate;             /* as configured, for reporting */
} tokenbucket;

/* ---- new / reconfigure ---- */

/* Sets up a full bucket.  Returns 0, or -EINVAL (rate NaN, <= 0 or outside
 * [TOKENBUCKET_RATE_MIN, TOKENBUCKET_RATE_MAX), burst < 1 or > INT64_MAX),
 * in which case *tb is unchanged. */
int tokenbucket_init(tokenbucket *tb, double rate, uint64_t burst);

/* Changes rate and burst live, at now_ns.  Tokens accrued up to now_ns count
 * at the old rate; the level (and any reservation debt) is kept, clipped to
 * the new burst: a smaller burst drops the excess, a larger one does not
 * add tokens (they accrue at the new rate).  Parked reservations keep the
 * wait they were given.  Returns 0, or -EINVAL with *tb unchanged. */
int tokenbucket_set(tokenbucket *tb, double rate, uint64_t burst, int64_t now_ns);

/* ---- queries (no state change) ---- */

/* Whole tokens available at now_ns, rounded down; negative when reservations
 * have consumed tokens ahead of time (-k: k tokens are owed). */
int64_t tokenbucket_available(const tokenbucket *tb, int64_t now_ns);

/* Nanoseconds until n tokens are available (0: now), counting reservations
 * already made.  TOKENBUCKET_NEVER if n > burst (or the wait would be longer
 * than INT64_MAX ns). */
int64_t tokenbucket_wait_ns(const tokenbucket *tb, int64_t now_ns, uint64_t n);

/* ---- operations ---- */

/* Takes n tokens if they are available at now_ns: returns true.  Otherwise
 * returns false and takes nothing. */
bool tokenbucket_take(tokenbucket *tb, int64_t now_ns, uint64_t n);

/* Reserves n tokens that will be available at now_ns + *wait_ns, provided
 * that wait is <= max_wait_ns: consumes them at once (the level goes
 * negative) and returns true, so the next caller waits behind this one.
 * With a wait of 0 this is tokenbucket_take.  Otherwise returns false, the
 * bucket is unchanged and *wait_ns is not written (tokenbucket_wait_ns gives
 * the wait that would have been needed).  max_wait_ns < 0 counts as 0. */
bool tokenbucket_reserve(tokenbucket *tb, int64_t now_ns, uint64_t n,
			 int64_t max_wait_ns, int64_t *wait_ns);

/* Gives back n tokens taken or reserved earlier and not used (a parked
 * request whose client went away), at now_ns.  The level is clipped to the
 * burst, so a refund never makes the bucket hand out more than it would
 * have without the original take. */
void tokenbucket_refund(tokenbucket *tb, int64_t now_ns, uint64_t n);

#endif
