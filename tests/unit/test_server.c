/*
 * test_server.c — broker/server's hand-off door, worker_post(), on real
 * libev loops (no threads: the loops are never run, their ev_async is only
 * inspected): a post queues its task in order and wakes the loop at once;
 * between worker_post_defer() and the outermost worker_post_flush() the
 * tasks still queue at once but each loop is woken only at the flush, once,
 * however many tasks it got; nested pairs flush only at the outer one; past
 * the deferral table's size a loop is woken at once rather than never.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "server.h"

#define NW 20 /* more loops than the deferral table holds (16) */

static int woken[NW];

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)revents;
	woken[((worker *)a->data)->id]++;
}

static void task_fn(loop_task *t)
{
	(void)t;
}

static void setup_workers(worker *w, int n)
{
	memset(w, 0, sizeof(*w) * (size_t)n);
	memset(woken, 0, sizeof(woken));
	for (int i = 0; i < n; i++) {
		w[i].id = i;
		w[i].loop = ev_loop_new(EVFLAG_AUTO);
		assert_non_null(w[i].loop);
		pthread_mutex_init(&w[i].q_lock, NULL);
		ev_async_init(&w[i].async_w, on_wake);
		w[i].async_w.data = &w[i];
		ev_async_start(w[i].loop, &w[i].async_w);
	}
}

static void teardown_workers(worker *w, int n)
{
	for (int i = 0; i < n; i++) {
		ev_async_stop(w[i].loop, &w[i].async_w);
		ev_loop_destroy(w[i].loop);
		pthread_mutex_destroy(&w[i].q_lock);
	}
}

/* Runs w's loop once without blocking: the async callback counts a wake-up
 * if one was sent, and the pending flag is cleared. */
static void spin(worker *w)
{
	ev_run(w->loop, EVRUN_NOWAIT);
}

static void test_post_wakes_at_once_and_queues_in_order(void **state)
{
	worker w[1];
	loop_task t[2] = { { .fn = task_fn }, { .fn = task_fn } };

	(void)state;
	setup_workers(w, 1);
	worker_post(&w[0], &t[0]);
	assert_true(ev_async_pending(&w[0].async_w));
	worker_post(&w[0], &t[1]);
	assert_ptr_equal(w[0].q_head, &t[0]);
	assert_ptr_equal(t[0].next, &t[1]);
	assert_ptr_equal(w[0].q_tail, &t[1]);
	spin(&w[0]);
	assert_int_equal(woken[0], 1); /* libev folds the two sends */
	teardown_workers(w, 1);
}

static void test_deferred_posts_wake_each_loop_once_at_the_flush(void **state)
{
	worker w[2];
	loop_task t[5];

	(void)state;
	for (int i = 0; i < 5; i++)
		t[i] = (loop_task){ .fn = task_fn };
	setup_workers(w, 2);
	worker_post_defer();
	worker_post(&w[0], &t[0]);
	worker_post(&w[1], &t[1]);
	worker_post(&w[0], &t[2]);
	/* queued already, nobody woken */
	assert_ptr_equal(w[0].q_head, &t[0]);
	assert_ptr_equal(t[0].next, &t[2]);
	assert_ptr_equal(w[1].q_head, &t[1]);
	assert_false(ev_async_pending(&w[0].async_w));
	assert_false(ev_async_pending(&w[1].async_w));
	/* a nested pair flushes only at the outer flush */
	worker_post_defer();
	worker_post(&w[1], &t[3]);
	worker_post_flush();
	assert_false(ev_async_pending(&w[0].async_w));
	assert_false(ev_async_pending(&w[1].async_w));
	worker_post_flush();
	assert_true(ev_async_pending(&w[0].async_w));
	assert_true(ev_async_pending(&w[1].async_w));
	spin(&w[0]);
	spin(&w[1]);
	assert_int_equal(woken[0], 1);
	assert_int_equal(woken[1], 1);
	/* after the flush, posts wake at once again */
	worker_post(&w[1], &t[4]);
	assert_true(ev_async_pending(&w[1].async_w));
	teardown_workers(w, 2);
}

static void test_deferral_table_full_wakes_at_once(void **state)
{
	worker w[NW];
	loop_task t[NW];
	int pending = 0;

	(void)state;
	setup_workers(w, NW);
	worker_post_defer();
	for (int i = 0; i < NW; i++) {
		t[i] = (loop_task){ .fn = task_fn };
		worker_post(&w[i], &t[i]);
		pending += ev_async_pending(&w[i].async_w) != 0;
	}
	/* the loops beyond the table could not wait: woken at once */
	assert_true(pending > 0);
	assert_true(pending < NW);
	worker_post_flush();
	for (int i = 0; i < NW; i++)
		assert_true(ev_async_pending(&w[i].async_w));
	teardown_workers(w, NW);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_wakes_at_once_and_queues_in_order),
		cmocka_unit_test(test_deferred_posts_wake_each_loop_once_at_the_flush),
		cmocka_unit_test(test_deferral_table_full_wakes_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
