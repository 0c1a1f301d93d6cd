/*
 * txn_check.c — check-back for transactional half messages: the TxnCheckPoll
 * long-poll (extension API 1002, docs/protocol.md) and the ticker that hands
 * due transactions to polling producers (docs/transactions.md).
 *
 * A producer of a group parks a poll (room for max_txns checks, max_wait_ms).
 * Every 100 ms the ticker (a timer on loop 0) asks the scheduler
 * (txn/checksched: global check rate, who to ask — the preparing connection
 * first, else round-robin over the group) how many checks may go out, leases
 * that many due transactions from the half store on the coordinator thread
 * (indexed rows, so none is skipped or checked twice at once), writes each
 * into the chosen poll's response and hands the polls back to their loops.
 * A transaction of a group nobody polls for counts as an unanswered check
 * (backoff; discarded after transaction.check.max), as does a check whose
 * lease ran out.  The producer answers with TxnEnd (commit, rollback, or 0 =
 * unknown).
 *
 * Threads: polls, the scheduler and the ticker state are guarded by `lock`;
 * a parked poll's response is written under it by whoever fills it (its
 * own loop does not touch a parked request) and handed back with
 * req_post_finish.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "blog.h"
#include "checksched.h"
#include "coord.h"
#include "halfstore.h"
#include "kerr.h"
#include "txn_api.h"

#define TICK_S 0.1
#define MAX_BATCH 1000

typedef struct poll {
	struct poll *next;
	req *r;                 /* parked: holds a reference */
	uint64_t conn;
	int32_t max, n;
	size_t count_at;        /* placeholder for the entry count */
	ev_timer timer;         /* max_wait on the poll's own loop */
	loop_task done;         /* filled by the ticker: finish on own loop */
} poll;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* all below */
static checksched *cs;
static checksched_policy pol;
static poll *polls;
static bool job_in_flight;
static int64_t *pend_none;      /* no producer to ask: record as checks */
static size_t npend_none;
static server *srv_g;
static worker *tick_w;
static ev_timer tick;

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Lock held.  Unlinks p; true if it was linked. */
static bool unlink_poll(poll *p)
{
	for (poll **pp = &polls; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			return true;
		}
	}
	return false;
}

static poll *find_poll(uint64_t cid)
{
	for (poll *p = polls; p; p = p->next)
		if (p->conn == cid)
			return p;
	return NULL;
}

static void poll_free_state(req *r)
{
	free(r->state);
}

static void done_task(loop_task *t)
{
	poll *p = (poll *)((char *)t - offsetof(poll, done));
	req *r = p->r;

	ev_timer_stop(r->w->loop, &p->timer);
	r->cancel = NULL;
	req_finish(r);
	req_unref(r); /* the park's reference */
}

/* Lock held, p unlinked: completes the response and hands it back. */
static void complete(poll *p)
{
	wire_patch32(&p->r->resp, p->count_at, p->n);
	checksched_park(cs, p->conn, 0);
	p->done.fn = done_task;
	worker_post(p->r->w, &p->done);
}

static void poll_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	poll *p = t->data;
	bool mine;

	pthread_mutex_lock(&lock);
	mine = unlink_poll(p);
	if (mine) {
		wire_patch32(&p->r->resp, p->count_at, p->n);
		checksched_park(cs, p->conn, 0);
	}
	pthread_mutex_unlock(&lock);
	if (mine) {
		p->r->cancel = NULL;
		req_finish(p->r);
		req_unref(p->r);
	}
}

static void poll_cancel(req *r)
{
	poll *p = r->state;
	bool mine;

	ev_timer_stop(r->w->loop, &p->timer);
	pthread_mutex_lock(&lock);
	mine = unlink_poll(p);
	checksched_unregister(cs, p->conn);
	pthread_mutex_unlock(&lock);
	if (mine)
		req_unref(r);
}

int api_txn_check_poll(req *r, wire_rd *rd)
{
	wire_str group = wire_rd_str(rd);
	int32_t max_wait = wire_rd_i32(rd), max = wire_rd_i32(rd);
	char g[256];
	poll *p;

	if (rd->err)
		return API_MALFORMED;
	if (!wire_str_copy(group, g, sizeof(g)) || !g[0]) {
		wire_w_i16(&r->resp, KERR_INVALID_REQUEST);
		wire_w_i32(&r->resp, 0);
		req_finish(r);
		return API_OK;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return API_MALFORMED;
	p->r = r;
	p->conn = (uint64_t)(uintptr_t)r->conn;
	p->max = max > 0 && max <= MAX_BATCH ? max : 100;
	wire_w_i16(&r->resp, KERR_NONE);
	p->count_at = wire_w_placeholder32(&r->resp);
	r->state = p;
	r->free_state = poll_free_state;
	r->cancel = poll_cancel;
	req_ref(r); /* the park */
	pthread_mutex_lock(&lock);
	checksched_register(cs, g, p->conn);
	checksched_park(cs, p->conn, (uint32_t)p->max);
	p->next = polls;
	polls = p;
	pthread_mutex_unlock(&lock);
	ev_timer_init(&p->timer, poll_timer, (max_wait > 0 ? max_wait : 0) / 1000.0, 0.);
	p->timer.data = p;
	ev_timer_start(r->w->loop, &p->timer);
	return API_OK;
}

void txn_check_answered(int64_t txn_id)
{
	pthread_mutex_lock(&lock);
	if (cs)
		checksched_answered(cs, txn_id, NULL);
	pthread_mutex_unlock(&lock);
}

/* ---- the ticker's jobs ---- */

typedef struct tick_job {
	coord_job job;
	int64_t now, budget;
	halfstore_txn *due;     /* leased: to hand out */
	size_t ndue;
	int64_t *none;          /* unanswered: record as checks */
	size_t nnone;
} tick_job;

static int tick_run(coord_job *job, sqlite3 *db)
{
	tick_job *t = (tick_job *)job;
	int64_t wall = now_ms();

	for (size_t i = 0; i < t->nnone; i++) {
		enum halfstore_state st;

		if (halfstore_check_answer(db, t->none[i], HALFSTORE_ANSWER_NONE, wall, &pol, &st) ==
		    HALFSTORE_OK && st == HALFSTORE_DISCARDED)
			blog(BLOG_WARN, "transaction %lld discarded after %d unanswered checks",
			     (long long)t->none[i], pol.max_checks);
	}
	if (t->budget > 0 &&
	    halfstore_due_checks(db, wall, (size_t)t->budget, pol.lease_ms, &t->due, &t->ndue) < 0)
		return SQLITE_ERROR;
	return SQLITE_OK;
}

static void hand_out(tick_job *t)
{
	for (size_t i = 0; i < t->ndue; i++) {
		halfstore_txn *x = &t->due[i];
		uint64_t cid = 0;
		int rc = checksched_dispatch(cs, x->txn_id, x->producer_group, x->origin, t->now, &cid);
		poll *p;

		if (rc == CHECKSCHED_E_NO_PRODUCER) {
			int64_t *nn = realloc(pend_none, sizeof(*nn) * (npend_none + 1));

			if (nn) {
				pend_none = nn;
				pend_none[npend_none++] = x->txn_id;
			}
			continue;
		}
		if (rc != CHECKSCHED_OK || !(p = find_poll(cid)))
			continue; /* busy or rate: the lease runs out, it comes back */
		wire_w_i64(&p->r->resp, x->txn_id);
		wire_w_str(&p->r->resp, x->topic);
		wire_w_i32(&p->r->resp, x->partition);
		wire_w_i32(&p->r->resp, x->check_count);
		wire_w_bytes(&p->r->resp, x->batch, x->batch ? (int32_t)x->batch_len : 0);
		p->n++;
	}
	/* answer every poll that got something now */
	for (poll **pp = &polls; *pp;) {
		poll *p = *pp;

		if (p->n > 0) {
			*pp = p->next;
			complete(p);
		} else {
			pp = &p->next;
		}
	}
}

static void tick_done(loop_task *lt)
{
	tick_job *t = (tick_job *)((char *)lt - offsetof(tick_job, job.done));

	pthread_mutex_lock(&lock);
	if (t->job.rc == SQLITE_OK)
		hand_out(t);
	job_in_flight = false;
	pthread_mutex_unlock(&lock);
	halfstore_txns_free(t->due, t->ndue);
	free(t->none);
	free(t);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	int64_t expired[256];
	tick_job *t;
	size_t n;

	pthread_mutex_lock(&lock);
	if (job_in_flight) {
		pthread_mutex_unlock(&lock);
		return;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		pthread_mutex_unlock(&lock);
		return;
	}
	t->now = mono_ms();
	n = checksched_expire(cs, t->now, expired, 256);
	/* with nobody polling, due txns are still leased and counted (a
	 * group with no live producer gets NO_ANSWER checks, RocketMQ-like) */
	t->budget = checksched_budget(cs, t->now);
	if (!n && !npend_none && t->budget <= 0) {
		pthread_mutex_unlock(&lock);
		free(t);
		return;
	}
	t->none = malloc(sizeof(*t->none) * (n + npend_none + 1));
	if (t->none) {
		memcpy(t->none, expired, sizeof(*t->none) * n);
		if (npend_none)
			memcpy(t->none + n, pend_none, sizeof(*t->none) * npend_none);
		t->nnone = n + npend_none;
		free(pend_none);
		pend_none = NULL;
		npend_none = 0;
	}
	job_in_flight = true;
	pthread_mutex_unlock(&lock);
	t->job.run = tick_run;
	t->job.w = tick_w;
	t->job.done.fn = tick_done;
	coord_submit(srv_g->coord, &t->job);
}

int txn_check_start(server *srv, worker *w)
{
	pol = *txn_api_policy();
	if (checksched_new(&pol, mono_ms(), &cs) < 0)
		return -1;
	srv_g = srv;
	tick_w = w;
	ev_timer_init(&tick, on_tick, TICK_S, TICK_S);
	ev_timer_start(w->loop, &tick);
	return 0;
}

void txn_check_stop(void)
{
	pthread_mutex_lock(&lock);
	checksched_free(cs);
	cs = NULL;
	free(pend_none);
	pend_none = NULL;
	npend_none = 0;
	pthread_mutex_unlock(&lock);
}
