/*
 * test_waiters.c — broker/waiters' waitset on real partitions (their wait
 * lists only) and a real libev loop (never run: its ev_async and queue are
 * inspected): the first partition costs no allocation (the inline node);
 * registering again is a no-op; growing past it keeps every registration
 * linked, in its partition's list; partition_wake unlinks that partition's
 * nodes and posts the waitset's task once; release unlinks everything;
 * waitset_free accepts a released, an unreleased and a zeroed waitset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "topics.h"
#include "waiters.h"

#define NP 6

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)a;
	(void)revents;
}

static void wake_cb(waitset *ws)
{
	(void)ws;
}

static void setup(worker *w, partition *p)
{
	memset(w, 0, sizeof(*w));
	w->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(w->loop);
	pthread_mutex_init(&w->q_lock, NULL);
	ev_async_init(&w->async_w, on_wake);
	ev_async_start(w->loop, &w->async_w);
	memset(p, 0, sizeof(*p) * NP);
	for (int i = 0; i < NP; i++)
		pthread_mutex_init(&p[i].wait_lock, NULL);
}

static void teardown(worker *w, partition *p)
{
	for (int i = 0; i < NP; i++)
		pthread_mutex_destroy(&p[i].wait_lock);
	ev_async_stop(w->loop, &w->async_w);
	ev_loop_destroy(w->loop);
	pthread_mutex_destroy(&w->q_lock);
}

/* 1 if ws has a node in p's wait list. */
static int listed(partition *p, const waitset *ws)
{
	int n = 0;

	for (pwaiter *x = p->waiters; x; x = x->next)
		n += x->ws == ws;
	return n;
}

static void test_one_partition_uses_the_inline_node(void **state)
{
	worker w;
	partition p[NP];
	waitset ws;

	(void)state;
	setup(&w, p);
	waitset_init(&ws, &w, wake_cb, wake_cb);
	assert_int_equal(waitset_add(&ws, &p[0]), 0);
	assert_ptr_equal(ws.nodes, &ws.one);
	assert_int_equal(waitset_add(&ws, &p[0]), 0); /* again: no-op */
	assert_int_equal(ws.n, 1);
	assert_int_equal(atomic_load(&p[0].nwaiters), 1);
	assert_int_equal(listed(&p[0], &ws), 1);
	assert_true(waitset_release(&ws));
	assert_int_equal(atomic_load(&p[0].nwaiters), 0);
	assert_null(p[0].waiters);
	waitset_free(&ws);
	teardown(&w, p);
}

static void test_growth_keeps_every_registration(void **state)
{
	worker w;
	partition p[NP];
	waitset ws;

	(void)state;
	setup(&w, p);
	waitset_init(&ws, &w, wake_cb, wake_cb);
	for (int i = 0; i < NP; i++)
		assert_int_equal(waitset_add(&ws, &p[i]), 0);
	assert_ptr_not_equal(ws.nodes, &ws.one);
	assert_int_equal(ws.n, NP);
	for (int i = 0; i < NP; i++) {
		assert_int_equal(atomic_load(&p[i].nwaiters), 1);
		assert_int_equal(listed(&p[i], &ws), 1);
		assert_ptr_equal(p[i].waiters->part, &p[i]);
	}
	/* a wake unlinks that partition's node and posts the task once */
	partition_wake(&p[2]);
	partition_wake(&p[3]);
	assert_int_equal(atomic_load(&p[2].nwaiters), 0);
	assert_int_equal(listed(&p[3], &ws), 0);
	assert_int_equal(listed(&p[4], &ws), 1);
	assert_ptr_equal(w.q_head, &ws.task);
	assert_ptr_equal(w.q_tail, &ws.task);
	assert_true(ev_async_pending(&w.async_w));
	/* the task is queued: release hands the owner to orphaned() */
	assert_false(waitset_release(&ws));
	for (int i = 0; i < NP; i++)
		assert_int_equal(atomic_load(&p[i].nwaiters), 0);
	waitset_free(&ws);
	teardown(&w, p);
}

static void test_free_without_release_or_init(void **state)
{
	worker w;
	partition p[NP];
	waitset ws, zeroed;

	(void)state;
	setup(&w, p);
	waitset_init(&ws, &w, wake_cb, wake_cb);
	for (int i = 0; i < NP; i++)
		assert_int_equal(waitset_add(&ws, &p[i]), 0);
	waitset_clear(&ws);
	waitset_free(&ws); /* the array: ASan reports a leak if not freed */
	memset(&zeroed, 0, sizeof(zeroed));
	waitset_free(&zeroed);
	teardown(&w, p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_partition_uses_the_inline_node),
		cmocka_unit_test(test_growth_keeps_every_registration),
		cmocka_unit_test(test_free_without_release_or_init),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
