/*
 * throttleq.c — see throttleq.h.
 */
#include "throttleq.h"

#include <errno.h>
#include <stddef.h>

int throttleq_init(throttleq *q, uint32_t max_queued, int64_t max_wait_ns)
{
	if (max_wait_ns < 0)
		return -EINVAL;
	q->head = NULL;
	q->tail = NULL;
	q->len = 0;
	q->max_queued = max_queued;
	q->max_wait_ns = max_wait_ns;
	return 0;
}

int throttleq_set_limits(throttleq *q, uint32_t max_queued, int64_t max_wait_ns)
{
	if (max_wait_ns < 0)
		return -EINVAL;
	q->max_queued = max_queued;
	q->max_wait_ns = max_wait_ns;
	return 0;
}

void throttleq_node_init(throttleq_node *node)
{
	node->prev = NULL;
	node->next = NULL;
	node->q = NULL;
	node->release_ns = 0;
	node->msgs = 0;
	node->bytes = 0;
}

int64_t throttleq_next_release(const throttleq *q)
{
	return q->head ? q->head->release_ns : INT64_MAX;
}

int64_t throttleq_last_release(const throttleq *q)
{
	return q->tail ? q->tail->release_ns : INT64_MIN;
}

int throttleq_push(throttleq *q, throttleq_node *node, int64_t release_ns)
{
	if (node->q)
		return -EINVAL;
	if (throttleq_full(q))
		return THROTTLEQ_E_FULL;
	if (q->tail && release_ns < q->tail->release_ns)
		release_ns = q->tail->release_ns; /* keep FIFO: never overtake */
	node->release_ns = release_ns;
	node->q = q;
	node->next = NULL;
	node->prev = q->tail;
	if (q->tail)
		q->tail->next = node;
	else
		q->head = node;
	q->tail = node;
	q->len++;
	return 0;
}

static void unlink_node(throttleq *q, throttleq_node *node)
{
	if (node->prev)
		node->prev->next = node->next;
	else
		q->head = node->next;
	if (node->next)
		node->next->prev = node->prev;
	else
		q->tail = node->prev;
	node->prev = NULL;
	node->next = NULL;
	node->q = NULL;
	q->len--;
}

throttleq_node *throttleq_pop_ready(throttleq *q, int64_t now_ns)
{
	throttleq_node *node = q->head;

	if (!node || node->release_ns > now_ns)
		return NULL;
	unlink_node(q, node);
	return node;
}

bool throttleq_remove(throttleq *q, throttleq_node *node)
{
	if (node->q != q)
		return false;
	unlink_node(q, node);
	return true;
}
