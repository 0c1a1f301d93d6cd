/* waiters.c — see waiters.h. */
#include "waiters.h"

#include <errno.h>
#include <stdlib.h>

#include "topics.h"

static void ws_task(loop_task *t)
{
	waitset *ws = (waitset *)((char *)t - offsetof(waitset, task));

	atomic_store(&ws->pending, false);
	if (ws->orphan) {
		ws->orphaned(ws);
		return;
	}
	ws->wake(ws);
}

void waitset_init(waitset *ws, worker *w, void (*wake)(waitset *), void (*orphaned)(waitset *))
{
	ws->w = w;
	ws->task.next = NULL;
	ws->task.fn = ws_task;
	atomic_init(&ws->pending, false);
	ws->orphan = false;
	ws->nodes = &ws->one;
	ws->n = 0;
	ws->cap = 1;
	ws->wake = wake;
	ws->orphaned = orphaned;
}

static void link_node(pwaiter *n)
{
	partition *p = n->part;

	pthread_mutex_lock(&p->wait_lock);
	n->prev = NULL;
	n->next = p->waiters;
	if (p->waiters)
		p->waiters->prev = n;
	p->waiters = n;
	n->linked = true;
	atomic_fetch_add(&p->nwaiters, 1);
	pthread_mutex_unlock(&p->wait_lock);
}

/* Caller holds p->wait_lock. */
static void unlink_locked(pwaiter *n)
{
	partition *p = n->part;

	if (!n->linked)
		return;
	if (n->prev)
		n->prev->next = n->next;
	else
		p->waiters = n->next;
	if (n->next)
		n->next->prev = n->prev;
	n->linked = false;
	atomic_fetch_sub(&p->nwaiters, 1);
}

int waitset_add(waitset *ws, partition *p)
{
	pwaiter *n = NULL;

	for (int i = 0; i < ws->n; i++) {
		if (ws->nodes[i].part == p) {
			n = &ws->nodes[i];
			break;
		}
	}
	if (!n) {
		if (ws->n == ws->cap) {
			/* Nodes are linked into partition lists: never move a linked
			 * one, so grow only while nothing is linked. */
			int cap = ws->cap < 4 ? 4 : ws->cap * 2;
			bool inline_node = ws->nodes == &ws->one;
			pwaiter *nodes;

			waitset_clear(ws);
			nodes = realloc(inline_node ? NULL : ws->nodes, sizeof(*nodes) * (size_t)cap);
			if (!nodes)
				return -ENOMEM;
			if (inline_node)
				nodes[0] = ws->one;
			ws->nodes = nodes;
			ws->cap = cap;
			/* re-link what was registered before */
			for (int i = 0; i < ws->n; i++)
				link_node(&ws->nodes[i]);
		}
		n = &ws->nodes[ws->n++];
		n->part = p;
		n->ws = ws;
		n->linked = false;
	}
	if (!n->linked)
		link_node(n);
	return 0;
}

void waitset_clear(waitset *ws)
{
	for (int i = 0; i < ws->n; i++) {
		pwaiter *n = &ws->nodes[i];

		pthread_mutex_lock(&n->part->wait_lock);
		unlink_locked(n);
		pthread_mutex_unlock(&n->part->wait_lock);
	}
}

bool waitset_release(waitset *ws)
{
	waitset_clear(ws);
	waitset_free(ws);
	ws->nodes = &ws->one;
	ws->n = 0;
	ws->cap = 1;
	/* After the locks above, no waker can reach us; a task posted before
	 * is in the loop's queue and will see `orphan`. */
	if (atomic_load(&ws->pending)) {
		ws->orphan = true;
		return false;
	}
	return true;
}

void waitset_free(waitset *ws)
{
	if (ws->nodes != &ws->one)
		free(ws->nodes);
	ws->nodes = NULL;
}

void partition_wake(partition *p)
{
	/* Pairs with the waiter's register-then-recheck: the new high
	 * watermark was stored before this load, and a waiter re-reads it
	 * after linking, so one of the two sees the other. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load(&p->nwaiters) == 0)
		return;
	worker_post_defer(); /* one wake-up per loop, after the unlock */
	pthread_mutex_lock(&p->wait_lock);
	while (p->waiters) {
		pwaiter *n = p->waiters;
		waitset *ws = n->ws;

		unlink_locked(n);
		if (!atomic_exchange(&ws->pending, true))
			worker_post(ws->w, &ws->task);
	}
	pthread_mutex_unlock(&p->wait_lock);
	worker_post_flush();
}
