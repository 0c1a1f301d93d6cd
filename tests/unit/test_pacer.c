/*
 * test_pacer.c — broker/pacer on a real libev loop and timerfd: entries run
 * in (deadline, start order) order and never early; 100 us spacing gives
 * separate wake-ups (not 1 ms clumps); the timerfd is set once for a run of
 * increasing deadlines (no syscall per entry); stop, restart from a
 * callback, a callback stopping another due entry, moving a pending entry,
 * and free with entries pending.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "pacer.h"

#define US 1000LL
#define MS 1000000LL

/* What the callbacks saw. */
struct log {
	int n, want;
	int order[512];
	int64_t late[512];   /* pacer_now_ns() in the callback - deadline */
	int64_t now_arg[512];
	struct ev_loop *loop;
	pacer *p;
};

struct item {
	pacer_entry e;
	int id;
	int restarts;        /* for the restart test */
	pacer_entry *victim; /* for the stop-another test */
	struct log *log;
};

static void on_due(pacer_entry *e, int64_t now)
{
	struct item *it = e->data;
	struct log *l = it->log;

	assert_true(l->n < 512);
	l->order[l->n] = it->id;
	l->late[l->n] = pacer_now_ns() - e->deadline_ns;
	l->now_arg[l->n] = now;
	assert_true(now >= e->deadline_ns); /* never early */
	l->n++;
	if (it->victim)
		pacer_stop(l->p, it->victim);
	if (it->restarts > 0) {
		it->restarts--;
		/* already past: must still wait for the next loop iteration */
		assert_int_equal(pacer_start(l->p, e, now - 1), 0);
	}
	if (l->n >= l->want)
		ev_break(l->loop, EVBREAK_ALL);
}

static void on_guard(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)t;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until want callbacks ran (or 5 s passed). */
static void run_until(struct log *l, int want)
{
	ev_timer guard;

	l->want = want;
	ev_timer_init(&guard, on_guard, 5.0, 0.);
	ev_timer_start(l->loop, &guard);
	ev_run(l->loop, 0);
	ev_timer_stop(l->loop, &guard);
}

static void setup_log(struct log *l, pacer *p)
{
	memset(l, 0, sizeof(*l));
	l->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(l->loop);
	assert_int_equal(pacer_init(p, l->loop), 0);
	l->p = p;
}

static void teardown_log(struct log *l, pacer *p)
{
	pacer_free(p);
	ev_loop_destroy(l->loop);
}

static void init_items(struct item *it, int n, struct log *l)
{
	memset(it, 0, sizeof(*it) * (size_t)n);
	for (int i = 0; i < n; i++) {
		it[i].id = i;
		it[i].log = l;
		pacer_entry_init(&it[i].e, on_due, &it[i]);
	}
}

static void test_pacer_runs_in_deadline_then_start_order(void **state)
{
	struct item it[5];
	struct log l;
	pacer p;
	int64_t now = pacer_now_ns();

	(void)state;
	setup_log(&l, &p);
	init_items(it, 5, &l);
	assert_int_equal(pacer_start(&p, &it[0].e, now + 3 * MS), 0);
	assert_int_equal(pacer_start(&p, &it[1].e, now + 1 * MS), 0);
	assert_int_equal(pacer_start(&p, &it[2].e, now + 2 * MS), 0);
	assert_int_equal(pacer_start(&p, &it[3].e, now + 2 * MS), 0); /* tie: after 2 */
	assert_int_equal(pacer_start(&p, &it[4].e, now + 1 * MS - 1), 0);
	assert_true(pacer_pending(&it[0].e));
	run_until(&l, 5);
	assert_int_equal(l.n, 5);
	assert_int_equal(l.order[0], 4);
	assert_int_equal(l.order[1], 1);
	assert_int_equal(l.order[2], 2);
	assert_int_equal(l.order[3], 3);
	assert_int_equal(l.order[4], 0);
	for (int i = 0; i < 5; i++) {
		assert_true(l.late[i] >= 0);
		assert_false(pacer_pending(&it[i].e));
	}
	teardown_log(&l, &p);
}

/* 100 entries 100 us apart: a timer rounded to whole milliseconds would
 * run them in about 10 clumps; the pacer wakes for (nearly) each one.  The
 * bound leaves room for a loaded machine merging neighbours. */
/* One round of the 100 us test; returns the number of distinct wake-ups
 * (the order, "never early" and the timerfd-set bound are asserted). */
static int wakes_per_100us_round(void)
{
	enum { N = 100 };
	struct item it[N];
	struct log l;
	pacer p;
	int64_t t0 = pacer_now_ns() + 2 * MS;
	int distinct = 1;

	setup_log(&l, &p);
	init_items(it, N, &l);
	for (int i = 0; i < N; i++)
		assert_int_equal(pacer_start(&p, &it[i].e, t0 + i * 100 * US), 0);
	run_until(&l, N);
	assert_int_equal(l.n, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(l.order[i], i);
	for (int i = 1; i < N; i++)
		distinct += l.now_arg[i] != l.now_arg[i - 1];
	print_message("pacer: %d entries 100 us apart ran in %d wake-ups (%llu timerfd sets)\n", N,
		      distinct, (unsigned long long)p.stats.arms);
	assert_true(p.stats.wakeups >= (uint64_t)distinct);
	/* one set at the first start, then one per wake-up at most */
	assert_true(p.stats.arms <= p.stats.wakeups + 1);
	teardown_log(&l, &p);
	return distinct;
}

/* 100 entries 100 us apart run in many wake-ups, not in clumps: at least a
 * third of them distinct.  That part depends on this process getting a
 * core every 100 us, which a loaded machine (the rest of the test suite
 * running in parallel on 2 cores) does not always give: up to 5 rounds,
 * one of which must show it; order, "never early" and the bound on timerfd
 * sets hold in every round. */
static void test_pacer_wakes_per_100us_step(void **state)
{
	int best = 0;

	(void)state;
	for (int round = 0; round < 5 && best < 100 / 3; round++) {
		int d = wakes_per_100us_round();

		if (d > best)
			best = d;
		if (best < 100 / 3)
			usleep(50 * 1000); /* let whatever held the cores move on */
	}
	assert_true(best >= 100 / 3);
}

/* Increasing deadlines (what a gate's FIFO gives): only the first start
 * sets the timerfd; stops never do. */
static void test_pacer_one_syscall_for_a_run_of_starts(void **state)
{
	enum { N = 1000 };
	struct item *it = calloc(N, sizeof(*it));
	struct log l;
	pacer p;
	int64_t t0 = pacer_now_ns() + 10LL * 1000 * MS;

	(void)state;
	assert_non_null(it);
	setup_log(&l, &p);
	init_items(it, N, &l);
	for (int i = 0; i < N; i++)
		assert_int_equal(pacer_start(&p, &it[i].e, t0 + i * US), 0);
	assert_int_equal(p.stats.arms, 1);
	assert_int_equal(p.len, N);
	for (int i = 0; i < N; i += 2)
		pacer_stop(&p, &it[i].e);
	assert_int_equal(p.stats.arms, 1);
	assert_int_equal(p.len, N / 2);
	/* an earlier deadline sets it again */
	assert_int_equal(pacer_start(&p, &it[0].e, t0 - MS), 0);
	assert_int_equal(p.stats.arms, 2);
	teardown_log(&l, &p);
	for (int i = 0; i < N; i++)
		assert_false(pacer_pending(&it[i].e)); /* free forgot them */
	free(it);
}

static void test_pacer_stop_and_move(void **state)
{
	struct item it[4];
	struct log l;
	pacer p;
	int64_t now = pacer_now_ns();

	(void)state;
	setup_log(&l, &p);
	init_items(it, 4, &l);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pacer_start(&p, &it[i].e, now + (i + 1) * MS), 0);
	pacer_stop(&p, &it[0].e); /* the one the timerfd is set for */
	pacer_stop(&p, &it[0].e); /* twice: harmless */
	pacer_stop(&p, &it[2].e);
	assert_false(pacer_pending(&it[0].e));
	/* move 1 after 3 */
	assert_int_equal(pacer_start(&p, &it[1].e, now + 5 * MS), 0);
	run_until(&l, 2);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.order[0], 3);
	assert_int_equal(l.order[1], 1);
	assert_true(p.stats.wakeups >= 2); /* the early, stopped one woke us too */
	teardown_log(&l, &p);
}

/* A callback that starts itself again with a past deadline runs once per
 * loop iteration, not in a loop inside one wake-up. */
static void test_pacer_restart_from_callback_does_not_spin(void **state)
{
	struct item it[1];
	struct log l;
	pacer p;

	(void)state;
	setup_log(&l, &p);
	init_items(it, 1, &l);
	it[0].restarts = 4;
	assert_int_equal(pacer_start(&p, &it[0].e, pacer_now_ns()), 0);
	run_until(&l, 5);
	assert_int_equal(l.n, 5);
	assert_int_equal(p.stats.wakeups, 5);
	assert_false(pacer_pending(&it[0].e));
	teardown_log(&l, &p);
}

static void test_pacer_callback_stops_another_due_entry(void **state)
{
	struct item it[3];
	struct log l;
	pacer p;
	int64_t t = pacer_now_ns() + MS;

	(void)state;
	setup_log(&l, &p);
	init_items(it, 3, &l);
	it[0].victim = &it[1].e;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pacer_start(&p, &it[i].e, t), 0);
	run_until(&l, 2);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.order[0], 0);
	assert_int_equal(l.order[1], 2);
	assert_false(pacer_pending(&it[1].e));
	teardown_log(&l, &p);
}

/* Random starts, moves and stops, all due: one wake-up runs them in
 * (deadline, start order) order — the heap against a sort. */
static void test_pacer_heap_order_random(void **state)
{
	enum { N = 300 };
	struct item *it = calloc(N, sizeof(*it));
	bool live[N] = { false };
	uint64_t x = 88172645463325252ULL;
	struct log l;
	pacer p;
	int nlive = 0;

	(void)state;
	assert_non_null(it);
	setup_log(&l, &p);
	init_items(it, N, &l);
	for (int round = 0; round < 3000; round++) {
		int i;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		i = (int)(x % N);
		if (live[i] && x % 3 == 0) {
			pacer_stop(&p, &it[i].e);
			live[i] = false;
			nlive--;
		} else {
			/* all in the past: 1 .. 64 ns of CLOCK_MONOTONIC */
			assert_int_equal(pacer_start(&p, &it[i].e, 1 + (int64_t)(x >> 20) % 64), 0);
			nlive += !live[i];
			live[i] = true;
		}
	}
	assert_int_equal(p.len, nlive);
	assert_true(nlive <= 512);
	run_until(&l, nlive);
	assert_int_equal(l.n, nlive);
	assert_int_equal(p.stats.wakeups, 1);
	for (int k = 1; k < l.n; k++) {
		pacer_entry *a = &it[l.order[k - 1]].e, *b = &it[l.order[k]].e;

		assert_true(a->deadline_ns < b->deadline_ns ||
			    (a->deadline_ns == b->deadline_ns && a->seq < b->seq));
	}
	teardown_log(&l, &p);
	free(it);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pacer_runs_in_deadline_then_start_order),
		cmocka_unit_test(test_pacer_wakes_per_100us_step),
		cmocka_unit_test(test_pacer_one_syscall_for_a_run_of_starts),
		cmocka_unit_test(test_pacer_stop_and_move),
		cmocka_unit_test(test_pacer_restart_from_callback_does_not_spin),
		cmocka_unit_test(test_pacer_callback_stops_another_due_entry),
		cmocka_unit_test(test_pacer_heap_order_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
