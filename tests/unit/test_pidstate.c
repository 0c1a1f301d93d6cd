/*
 * test_pidstate.c — broker/pidstate: expiry of idle producers
 * (producer.id.expiration.ms) forgets client producers whose last write
 * is old enough and whose batches are all below the covered (durable)
 * end, never the broker's own (ids below PIDSTATE_FIRST_CLIENT_PID); a
 * forgotten producer is unknown again (sequence 0 accepted, any other
 * UNKNOWN_PRODUCER_ID); the snapshot keeps each producer's last write
 * (version 2) and a version 1 file still loads, its producers taking the
 * load time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "pidstate.h"
#include "wire.h"

#define EXP 5000       /* producer.id.expiration.ms of these tests */
#define NOW 1000000    /* wall clock of the expiry pass */
#define ALL INT64_MAX  /* covered end: every batch durable */

/* One batch of n records at sequence seq, offset off, written at `at`. */
static void rec(pidstate *ps, int64_t pid, int32_t seq, int32_t n, int64_t off, int64_t at)
{
	assert_int_equal(pidstate_record(ps, pid, 0, seq, seq + n - 1, off, off + n - 1, at), 0);
}

static bool known(const pidstate *ps, int64_t pid)
{
	int64_t ms;

	return pidstate_last_write(ps, pid, &ms) == 0;
}

static void test_pidstate_expire_forgets_idle_clients_only(void **state)
{
	pidstate *ps = pidstate_new();
	int64_t ms;

	(void)state;
	/* the broker's own, idle far longer than the expiration */
	rec(ps, 1, 0, 1, 0, 0);   /* transaction commits */
	rec(ps, 2, 0, 1, 1, 0);   /* dead-letter copies */
	rec(ps, PIDSTATE_FIRST_CLIENT_PID - 1, 0, 1, 2, 0);
	/* clients */
	rec(ps, PIDSTATE_FIRST_CLIENT_PID, 0, 1, 3, 0);            /* ancient */
	rec(ps, 2000, 0, 1, 4, NOW - EXP);                         /* exactly EXP: gone */
	rec(ps, 3000, 0, 1, 5, NOW - EXP + 1);                     /* just in time */
	rec(ps, 4000, 0, 1, 6, NOW - 2 * EXP);
	rec(ps, 4000, 1, 1, 7, NOW - 10);                          /* wrote again lately */
	assert_int_equal(pidstate_count(ps), 7);

	assert_int_equal(pidstate_expire(ps, NOW, EXP, ALL), 2);
	assert_int_equal(pidstate_count(ps), 5);
	assert_true(known(ps, 1));
	assert_true(known(ps, 2));
	assert_true(known(ps, PIDSTATE_FIRST_CLIENT_PID - 1));
	assert_false(known(ps, PIDSTATE_FIRST_CLIENT_PID));
	assert_false(known(ps, 2000));
	assert_true(known(ps, 3000));
	assert_true(known(ps, 4000));
	assert_int_equal(pidstate_last_write(ps, 4000, &ms), 0);
	assert_int_equal(ms, NOW - 10);
	/* the survivors are still found (the array stays sorted) */
	assert_int_equal(pidstate_last_seq(ps, 3000, 0), 0);
	assert_int_equal(pidstate_last_seq(ps, 4000, 0), 1);
	assert_int_equal(pidstate_last_seq(ps, 1, 0), 0);

	/* much later: the reserved ones still stay */
	assert_int_equal(pidstate_expire(ps, INT64_MAX / 2, EXP, ALL), 2);
	assert_int_equal(pidstate_count(ps), 3);
	assert_true(known(ps, 1));
	assert_true(known(ps, 2));
	assert_true(known(ps, PIDSTATE_FIRST_CLIENT_PID - 1));
	pidstate_free(ps);
}

/* A producer with a batch at or above the covered end (not yet durable:
 * its fsync acknowledgement may still be pending) waits for a later pass. */
static void test_pidstate_expire_keeps_batches_above_covered_end(void **state)
{
	pidstate *ps = pidstate_new();

	(void)state;
	rec(ps, 1000, 0, 5, 10, 0); /* offsets 10..14 */
	assert_int_equal(pidstate_expire(ps, NOW, EXP, 14), 0);
	assert_int_equal(pidstate_expire(ps, NOW, EXP, 15), 1);
	assert_int_equal(pidstate_count(ps), 0);
	pidstate_free(ps);
}

/* Kafka's answer to a producer it does not know: its batch at sequence 0
 * starts it afresh, any other is UNKNOWN_PRODUCER_ID. */
static void test_pidstate_expired_producer_is_unknown(void **state)
{
	pidstate *ps = pidstate_new();
	int64_t dup = -1;

	(void)state;
	rec(ps, 1000, 0, 5, 0, 0); /* sequences 0..4 */
	assert_int_equal(pidstate_check(ps, 1000, 0, 5, 5, &dup), PIDSTATE_APPEND);
	assert_int_equal(pidstate_check(ps, 1000, 0, 0, 4, &dup), PIDSTATE_DUPLICATE);
	assert_int_equal(pidstate_expire(ps, NOW, EXP, ALL), 1);

	assert_int_equal(pidstate_check(ps, 1000, 0, 5, 5, &dup), PIDSTATE_UNKNOWN_PID);
	assert_int_equal(pidstate_check(ps, 1000, 0, 0, 0, &dup), PIDSTATE_APPEND);
	rec(ps, 1000, 0, 1, 5, NOW);
	assert_int_equal(pidstate_check(ps, 1000, 0, 1, 1, &dup), PIDSTATE_APPEND);
	assert_int_equal(pidstate_check(ps, 1000, 0, 0, 0, &dup), PIDSTATE_DUPLICATE);
	assert_int_equal(dup, 5);
	pidstate_free(ps);
}

/* A last write ahead of the pass (the clock stepped back) counts from the
 * pass: the producer is not immortal. */
static void test_pidstate_expire_future_write_counts_from_now(void **state)
{
	pidstate *ps = pidstate_new();
	int64_t ms;

	(void)state;
	rec(ps, 1000, 0, 1, 0, NOW + 1000 * EXP);
	assert_int_equal(pidstate_expire(ps, NOW, EXP, ALL), 0);
	assert_int_equal(pidstate_last_write(ps, 1000, &ms), 0);
	assert_int_equal(ms, NOW);
	assert_int_equal(pidstate_expire(ps, NOW + EXP - 1, EXP, ALL), 0);
	assert_int_equal(pidstate_expire(ps, NOW + EXP, EXP, ALL), 1);
	pidstate_free(ps);
}

/* Replayed batches take the time given (the recovery's). */
static void test_pidstate_observe_takes_the_given_time(void **state)
{
	pidstate *ps = pidstate_new();
	int64_t ms;

	(void)state;
	assert_int_equal(pidstate_observe(ps, 1000, 0, 0, 0, 0, 0, 123), 0);
	assert_int_equal(pidstate_last_write(ps, 1000, &ms), 0);
	assert_int_equal(ms, 123);
	assert_int_equal(pidstate_observe(ps, 1000, 0, 1, 1, 1, 1, 456), 0);
	assert_int_equal(pidstate_last_write(ps, 1000, &ms), 0);
	assert_int_equal(ms, 456);
	assert_int_equal(pidstate_last_write(ps, 1001, &ms), -ENOENT);
	pidstate_free(ps);
}

static void test_pidstate_snapshot_v2_keeps_times(void **state)
{
	pidstate *ps = pidstate_new(), *back = pidstate_new();
	uint8_t *buf = NULL;
	int64_t covered = -1, ms, dup = -1;
	long len;

	(void)state;
	rec(ps, 1, 0, 1, 0, 11);
	rec(ps, 1000, 0, 2, 1, 22);
	rec(ps, 1000, 2, 2, 3, 33);
	rec(ps, 5000, 0, 1, 5, NOW - 1);
	rec(ps, 6000, 0, 1, 9, 44); /* above the covered end: left out */
	len = pidstate_encode(ps, 9, &buf);
	assert_true(len > 0);
	assert_int_equal(buf[7], 2); /* version, big-endian u32 at 4 */
	assert_int_equal(pidstate_decode(back, buf, (size_t)len, NOW + 999, &covered), 0);
	assert_int_equal(covered, 9);
	assert_int_equal(pidstate_count(back), 3);
	assert_int_equal(pidstate_last_write(back, 1, &ms), 0);
	assert_int_equal(ms, 11);
	assert_int_equal(pidstate_last_write(back, 1000, &ms), 0);
	assert_int_equal(ms, 33);
	assert_int_equal(pidstate_last_write(back, 5000, &ms), 0);
	assert_int_equal(ms, NOW - 1);
	assert_false(known(back, 6000));
	assert_int_equal(pidstate_check(back, 1000, 0, 0, 1, &dup), PIDSTATE_DUPLICATE);
	assert_int_equal(dup, 1);
	assert_int_equal(pidstate_check(back, 1000, 0, 4, 4, &dup), PIDSTATE_APPEND);
	/* the loaded times drive expiry: 1000 is old, 5000 recent */
	assert_int_equal(pidstate_expire(back, NOW, EXP, 9), 1);
	assert_false(known(back, 1000));
	assert_true(known(back, 5000));
	assert_true(known(back, 1));

	/* a damaged byte: not a snapshot, state unchanged */
	buf[20] ^= 1;
	assert_int_equal(pidstate_decode(back, buf, (size_t)len, NOW, &covered), -EINVAL);
	assert_int_equal(pidstate_count(back), 2);
	free(buf);
	pidstate_free(back);
	pidstate_free(ps);
}

/* A snapshot as brokers before version 2 wrote it (no last write). */
static size_t v1_snapshot(uint32_t version, uint8_t **out)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_w_i32(&b, 0x534c5053);
	wire_w_i32(&b, (int32_t)version);
	wire_w_i64(&b, 7);             /* covered end */
	wire_w_i32(&b, 2);             /* producers */
	wire_w_i64(&b, 1);             /* the commits' producer */
	wire_w_i16(&b, 3);
	wire_w_i8(&b, 1);
	wire_w_i32(&b, 0), wire_w_i32(&b, 0), wire_w_i64(&b, 0), wire_w_i64(&b, 0);
	wire_w_i64(&b, 1000);
	wire_w_i16(&b, 0);
	wire_w_i8(&b, 2);
	wire_w_i32(&b, 0), wire_w_i32(&b, 2), wire_w_i64(&b, 1), wire_w_i64(&b, 3);
	wire_w_i32(&b, 3), wire_w_i32(&b, 5), wire_w_i64(&b, 4), wire_w_i64(&b, 6);
	wire_w_i32(&b, (int32_t)crc32c(0, b.data, b.len));
	assert_false(b.oom);
	*out = b.data;
	return b.len;
}

static void test_pidstate_snapshot_v1_loads_with_load_time(void **state)
{
	pidstate *ps = pidstate_new();
	uint8_t *buf;
	size_t len = v1_snapshot(1, &buf);
	int64_t covered = -1, ms, dup = -1;

	(void)state;
	assert_int_equal(pidstate_decode(ps, buf, len, NOW, &covered), 0);
	assert_int_equal(covered, 7);
	assert_int_equal(pidstate_count(ps), 2);
	assert_int_equal(pidstate_last_write(ps, 1000, &ms), 0);
	assert_int_equal(ms, NOW);
	assert_int_equal(pidstate_last_write(ps, 1, &ms), 0);
	assert_int_equal(ms, NOW);
	assert_int_equal(pidstate_check(ps, 1000, 0, 3, 5, &dup), PIDSTATE_DUPLICATE);
	assert_int_equal(dup, 4);
	assert_int_equal(pidstate_last_seq(ps, 1, 3), 0);
	/* not expired at once, but EXP after the load */
	assert_int_equal(pidstate_expire(ps, NOW + EXP - 1, EXP, covered), 0);
	assert_int_equal(pidstate_expire(ps, NOW + EXP, EXP, covered), 1);
	assert_true(known(ps, 1));
	free(buf);

	/* an unknown version is not a snapshot */
	len = v1_snapshot(3, &buf);
	assert_int_equal(pidstate_decode(ps, buf, len, NOW, &covered), -EINVAL);
	free(buf);
	pidstate_free(ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pidstate_expire_forgets_idle_clients_only),
		cmocka_unit_test(test_pidstate_expire_keeps_batches_above_covered_end),
		cmocka_unit_test(test_pidstate_expired_producer_is_unknown),
		cmocka_unit_test(test_pidstate_expire_future_write_counts_from_now),
		cmocka_unit_test(test_pidstate_observe_takes_the_given_time),
		cmocka_unit_test(test_pidstate_snapshot_v2_keeps_times),
		cmocka_unit_test(test_pidstate_snapshot_v1_loads_with_load_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
