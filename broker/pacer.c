/*
 * pacer.c — see pacer.h.
 *
 * The timerfd state machine, with armed_ns the absolute time it is set for:
 *  - armed_ns == INT64_MAX: not set (or expired and drained): the next
 *    pacer_start sets it.
 *  - otherwise it fires at armed_ns; pacer_start only sets it again for an
 *    earlier deadline.  After a firing, on_fire sets it to the new earliest
 *    deadline (timerfd_settime also zeroes the expiration count, so the fd
 *    stops being readable without a read), or, with nothing pending, drains
 *    it with one read.
 */
#include "pacer.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PACER_INITIAL_CAP 256

int64_t pacer_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the heap: (deadline, seq) ascending ---- */

static bool before(const pacer_entry *a, const pacer_entry *b)
{
	if (a->deadline_ns != b->deadline_ns)
		return a->deadline_ns < b->deadline_ns;
	return a->seq < b->seq;
}

static void put(pacer *p, uint32_t i, pacer_entry *e)
{
	p->heap[i] = e;
	e->slot = i + 1;
}

static void sift_up(pacer *p, uint32_t i)
{
	pacer_entry *e = p->heap[i];

	while (i > 0 && before(e, p->heap[(i - 1) / 2])) {
		put(p, i, p->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	put(p, i, e);
}

static void sift_down(pacer *p, uint32_t i)
{
	pacer_entry *e = p->heap[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= p->len)
			break;
		if (c + 1 < p->len && before(p->heap[c + 1], p->heap[c]))
			c++;
		if (!before(p->heap[c], e))
			break;
		put(p, i, p->heap[c]);
		i = c;
	}
	put(p, i, e);
}

static void heap_remove(pacer *p, pacer_entry *e)
{
	uint32_t i = e->slot - 1;
	pacer_entry *last = p->heap[--p->len];

	e->slot = 0;
	if (last == e)
		return;
	put(p, i, last);
	if (i > 0 && before(last, p->heap[(i - 1) / 2]))
		sift_up(p, i);
	else
		sift_down(p, i);
}

static int heap_reserve(pacer *p)
{
	uint32_t cap;
	pacer_entry **h;

	if (p->len < p->cap)
		return 0;
	cap = p->cap ? p->cap * 2 : PACER_INITIAL_CAP;
	h = realloc(p->heap, sizeof(*h) * cap);
	if (!h)
		return -ENOMEM;
	p->heap = h;
	p->cap = cap;
	return 0;
}

/* ---- the timerfd ---- */

/* Sets the timerfd to fire at deadline_ns (absolute; a past time fires at
 * once).  Returns 0 or -errno. */
static int arm(pacer *p, int64_t deadline_ns)
{
	struct itimerspec its = { { 0, 0 }, { 0, 0 } };

	if (deadline_ns < 1)
		deadline_ns = 1; /* it_value 0 would disarm */
	its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000);
	its.it_value.tv_nsec = (long)(deadline_ns % 1000000000);
	p->stats.arms++;
	if (timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		p->armed_ns = INT64_MAX;
		return -errno;
	}
	p->armed_ns = deadline_ns;
	return 0;
}

/* After a firing: aims the timerfd at the earliest pending deadline, or
 * drains its expiration count when nothing is pending (or when setting it
 * failed: a readable fd left as it is would make the loop spin; the
 * pending entries then wait for the next pacer_start, which sets it). */
static void rearm_after_fire(pacer *p)
{
	uint64_t ticks;

	if (p->len > 0 && arm(p, p->heap[0]->deadline_ns) == 0)
		return;
	/* EAGAIN (nothing to read) is fine: it only means no expiration is
	 * counted, which is what we want. */
	if (read(p->tfd, &ticks, sizeof(ticks)) < 0)
		ticks = 0;
	p->armed_ns = INT64_MAX;
}

static void on_fire(struct ev_loop *loop, ev_io *io, int revents)
{
	pacer *p = io->data;
	int64_t now = pacer_now_ns();
	uint64_t started_before = p->next_seq;

	p->stats.wakeups++;
	/* Only what was started before and is due at the wake-up: work that
	 * callbacks start, or that keeps coming due, waits for the next loop
	 * iteration (after the loop's socket I/O), so nothing spins here. */
	while (p->len > 0 && p->heap[0]->deadline_ns <= now && p->heap[0]->seq < started_before) {
		pacer_entry *e = p->heap[0];

		heap_remove(p, e);
		p->stats.run++;
		e->fn(e, now);
	}
	rearm_after_fire(p);
}

/* ---- public ---- */

void pacer_entry_init(pacer_entry *e, pacer_fn *fn, void *data)
{
	e->deadline_ns = 0;
	e->seq = 0;
	e->slot = 0;
	e->fn = fn;
	e->data = data;
}

int pacer_init(pacer *p, struct ev_loop *loop)
{
	pacer np = { .loop = loop, .tfd = -1, .armed_ns = INT64_MAX };
	int rc;

	np.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (np.tfd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = heap_reserve(&np);
	if (rc < 0)
		goto fail;
	*p = np;
	ev_io_init(&p->io, on_fire, p->tfd, EV_READ);
	ev_set_priority(&p->io, EV_MAXPRI);
	p->io.data = p;
	ev_io_start(loop, &p->io);
	return 0;

fail:
	if (np.tfd >= 0)
		close(np.tfd);
	*p = (pacer){ .tfd = -1, .armed_ns = INT64_MAX };
	return rc;
}

void pacer_free(pacer *p)
{
	if (p->tfd >= 0) {
		ev_io_stop(p->loop, &p->io);
		close(p->tfd);
	}
	for (uint32_t i = 0; i < p->len; i++)
		p->heap[i]->slot = 0;
	free(p->heap);
	*p = (pacer){ .tfd = -1, .armed_ns = INT64_MAX };
}

int pacer_start(pacer *p, pacer_entry *e, int64_t deadline_ns)
{
	int rc = 0;

	if (pacer_pending(e))
		heap_remove(p, e);
	else if ((rc = heap_reserve(p)) < 0)
		return rc;
	e->deadline_ns = deadline_ns;
	e->seq = p->next_seq++;
	p->len++;
	put(p, p->len - 1, e);
	sift_up(p, p->len - 1);
	if (deadline_ns < p->armed_ns)
		rc = arm(p, deadline_ns);
	return rc;
}

void pacer_stop(pacer *p, pacer_entry *e)
{
	if (pacer_pending(e))
		heap_remove(p, e);
}
