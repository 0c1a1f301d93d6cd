/*
 * txn_check.c — check-back for transactional half messages: the TxnCheckPoll
 * long-poll (extension API 1002, docs/protocol.md) and the ticker that hands
 * due transactions to polling producers (docs/transactions.md), purges old
 * ended transactions and records commits nobody waits for any more.
 *
 * A producer of a group parks a poll (room for max_txns checks, max_wait_ms).
 * It is registered in the scheduler under its producer instance's id (v1,
 * txn_api_instance_id: the same id as the origin of the transactions that
 * instance prepared on any of its connections) or else under its
 * connection.  One parked poll per id: a second one replaces the first,
 * which is answered at once (empty).  Every 100 ms the ticker (a timer on
 * loop 0) asks the scheduler (txn/checksched: global check rate, who to
 * ask — the preparing instance or connection first, else round-robin over
 * the group) how many checks may go out, leases that many due transactions
 * from the half store on the coordinator thread (indexed rows, so none is
 * skipped or checked twice at once), writes each into the chosen poll's
 * response and hands the polls back to their loops.  A transaction of a
 * group nobody polls for counts as an unanswered check (backoff; discarded
 * after transaction.check.max), as does a check whose lease ran out.  A
 * leased transaction that nobody could take (the group's pollers all
 * between two polls, or the rate used up at hand-out) has its lease
 * released in the next job and is due again RELEASE_DELAY_MS later, not
 * after the whole lease (30 s), and without counting as a check.  The
 * producer answers with TxnEnd (commit, rollback, or 0 = unknown).
 *
 * Registrations: a poll's connection closing while it is parked
 * unregisters its id (unless another poll holds it now); an id that has had
 * no parked poll for lease_ms is unregistered by the ticker (its connection
 * may have closed between two polls, which this module cannot see), so a
 * group whose producers all died gets "no producer" checks and ends up
 * discarded instead of waiting forever.
 *
 * Housekeeping on the same ticker, in the same coordinator job:
 *  - purge: every PURGE_INTERVAL_MS up to PURGE_BATCH committed /
 *    rolled-back transactions ended more than transaction.retention.ms ago
 *    are deleted; while a batch comes back full, again at the next tick
 *    with twice the batch (up to PURGE_BATCH_MAX: 80,000 rows/s at 100 ms
 *    ticks, so a sustained 20,000 txn/s does not outgrow its retention,
 *    yet one job never holds the coordinator for long);
 *  - marks handed over by txn_api.c (txn_check_mark_later): recorded
 *    COMMITTED once their partition's high watermark covers them;
 *  - with transaction.dead.letter.topic set, a step of txn_dead.h
 *    (discarded transactions copied to that topic).
 * And, in a lazy coordinator job of its own (drop_submit: one at a time,
 * DROP_BATCH rows, the next at once while they come back full): the
 * batches of COMMITTED rows whose log copy is synced now are dropped
 * (txn_check_record_commit keeps them until then, page-cache durability:
 * start-up appends them again if a power loss took the copy).
 *
 * Threads: polls, the scheduler and the ticker state are guarded by `lock`;
 * a parked poll's response is written under it by whoever fills it (its
 * own loop does not touch a parked request) and handed back with a task on
 * its loop.  SQLite only in the ticker's coordinator job.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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
#include "txn_dead.h"

#define TICK_S 0.1
#define MAX_BATCH 1000
#define MAX_EXPIRE 256
#define PURGE_INTERVAL_MS 1000
/* A leased check nobody could take is due again this much later (a few
 * ticks: pollers between two polls are back by then). */
#define RELEASE_DELAY_MS 200
#define PURGE_BATCH 1000
#define PURGE_BATCH_MAX 8000
/* Batches of synced commits dropped per job, at most: the periodic flush
 * makes a second of commits droppable at once, and a job runs as a lazy
 * coordinator job (a batch of its own, when nothing else waits), so a
 * small one keeps the batches answers wait for short; a full one is
 * followed by the next at once. */
#define DROP_BATCH 500

typedef struct poll {
	struct poll *next;
	req *r;                 /* parked: holds a reference */
	uint64_t id;            /* instance id or connection */
	int32_t max, n;
	size_t count_at;        /* placeholder for the entry count */
	ev_timer timer;         /* max_wait on the poll's own loop */
	loop_task done;         /* filled by the ticker: finish on own loop */
} poll;

/* A registered id and since when it has had no parked poll (0: parked). */
typedef struct reg {
	uint64_t id;
	int64_t idle_since;
} reg;

/* A commit appended, waiting for its sync to be recorded (nobody waits for
 * the answer). */
typedef struct later {
	int64_t txn_id, offset, need;
	topic *t;               /* referenced */
	partition *p;
} later;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* all below */
static checksched *cs;
static checksched_policy pol;
static poll *polls;
static reg *regs;
static size_t nregs, capregs;
static later *laters;
static size_t nlaters, caplaters;
static bool job_in_flight;
static int64_t *pend_none;      /* no producer to ask: record as checks */
static size_t npend_none;
static int64_t *pend_release;   /* leased, not handed out: release the lease */
static size_t npend_release;
static int64_t next_purge;      /* mono ms */
static int64_t purge_batch = PURGE_BATCH; /* rows per purge job now */
static server *srv_g;
static worker *tick_w;
static ev_timer tick;

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- registrations (lock held) ---- */

static reg *reg_find(uint64_t id)
{
	for (size_t i = 0; i < nregs; i++)
		if (regs[i].id == id)
			return &regs[i];
	return NULL;
}

/* idle_since 0: a poll is parked now. */
static void reg_touch(uint64_t id, int64_t idle_since)
{
	reg *g = reg_find(id);

	if (!g && nregs == capregs) {
		size_t cap = capregs ? capregs * 2 : 16;
		reg *n = realloc(regs, sizeof(*n) * cap);

		if (!n)
			return; /* not tracked: only its idle expiry is lost */
		regs = n;
		capregs = cap;
	}
	if (!g) {
		g = &regs[nregs++];
		g->id = id;
	}
	g->idle_since = idle_since;
}

static void reg_forget(uint64_t id)
{
	reg *g = reg_find(id);

	if (g)
		*g = regs[--nregs];
}

/* Unregisters ids idle for longer than a lease. */
static void reg_expire(int64_t now)
{
	for (size_t i = 0; i < nregs;) {
		if (regs[i].idle_since != 0 && now - regs[i].idle_since > pol.lease_ms) {
			checksched_unregister(cs, regs[i].id);
			regs[i] = regs[--nregs];
		} else {
			i++;
		}
	}
}

/* ---- polls ---- */

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

static poll *find_poll(uint64_t id)
{
	for (poll *p = polls; p; p = p->next)
		if (p->id == id)
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
	checksched_park(cs, p->id, 0);
	reg_touch(p->id, mono_ms());
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
		checksched_park(cs, p->id, 0);
		reg_touch(p->id, mono_ms());
	}
	pthread_mutex_unlock(&lock);
	if (mine) {
		p->r->cancel = NULL;
		req_finish(p->r);
		req_unref(p->r);
	}
}

/* The poll's connection closed.  Its id is unregistered (its outstanding
 * checks expire at once) unless another poll holds the id now: a producer
 * instance that re-polled on another connection stays. */
static void poll_cancel(req *r)
{
	poll *p = r->state;
	bool mine;

	ev_timer_stop(r->w->loop, &p->timer);
	pthread_mutex_lock(&lock);
	mine = unlink_poll(p);
	if (mine || !find_poll(p->id)) {
		checksched_unregister(cs, p->id);
		reg_forget(p->id);
	}
	pthread_mutex_unlock(&lock);
	if (mine)
		req_unref(r);
}

static void poll_reject(req *r, int16_t err)
{
	wire_w_i16(&r->resp, err);
	wire_w_i32(&r->resp, 0);
	req_finish(r);
}

int api_txn_check_poll(req *r, wire_rd *rd)
{
	wire_str group = wire_rd_str(rd);
	int32_t max_wait = wire_rd_i32(rd), max = wire_rd_i32(rd);
	wire_str instance = { NULL, -1 };
	char g[256];
	poll *p, *old;

	if (r->api_version >= 1)
		instance = wire_rd_str(rd);
	if (rd->err)
		return API_MALFORMED;
	if (!wire_str_copy(group, g, sizeof(g)) || !g[0]) {
		poll_reject(r, KERR_INVALID_REQUEST);
		return API_OK;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return API_MALFORMED;
	p->r = r;
	p->id = txn_api_instance_id(instance);
	if (!p->id)
		p->id = (uint64_t)(uintptr_t)r->conn;
	p->max = max > 0 && max <= MAX_BATCH ? max : 100;
	wire_w_i16(&r->resp, KERR_NONE);
	p->count_at = wire_w_placeholder32(&r->resp);
	r->state = p;
	r->free_state = poll_free_state;
	r->cancel = poll_cancel;
	req_ref(r); /* the park */
	pthread_mutex_lock(&lock);
	/* one parked poll per id: the newer one replaces (the instance may
	 * have re-polled on a new connection before the broker noticed the
	 * old one die) */
	old = find_poll(p->id);
	if (old && unlink_poll(old))
		complete(old);
	if (checksched_register(cs, g, p->id) == 0)
		checksched_park(cs, p->id, (uint32_t)p->max);
	reg_touch(p->id, 0);
	p->next = polls;
	polls = p;
	pthread_mutex_unlock(&lock);
	ev_timer_init(&p->timer, poll_timer, (max_wait > 0 ? max_wait : 0) / 1000.0, 0.);
	p->timer.data = p;
	ev_timer_start(r->w->loop, &p->timer);
	return API_OK;
}

bool txn_check_answered(int64_t txn_id, int32_t check_no)
{
	bool out = true;

	pthread_mutex_lock(&lock);
	if (cs)
		out = checksched_answered(cs, txn_id, check_no, NULL) == CHECKSCHED_OK;
	pthread_mutex_unlock(&lock);
	return out;
}

void txn_check_mark_later(int64_t txn_id, int64_t offset, topic *t, partition *p, int64_t need)
{
	later *n;

	pthread_mutex_lock(&lock);
	if (nlaters == caplaters) {
		size_t cap = caplaters ? caplaters * 2 : 16;

		n = realloc(laters, sizeof(*n) * cap);
		if (n) {
			laters = n;
			caplaters = cap;
		}
	}
	if (nlaters < caplaters) {
		laters[nlaters++] = (later){ txn_id, offset, need, t, p };
		t = NULL;
	}
	pthread_mutex_unlock(&lock);
	if (t) {
		/* no memory: it stays COMMITTING until a retry or a restart */
		blog(BLOG_ERROR, "txn %lld: out of memory; left COMMITTING", (long long)txn_id);
		topic_unref(t);
	}
}

/* ---- the ticker's jobs ---- */

typedef struct tick_job {
	coord_job job;
	int64_t now, budget;
	halfstore_txn *due;     /* leased: to hand out */
	size_t ndue;
	int64_t *none;          /* unanswered: record as checks */
	size_t nnone;
	int64_t *release;       /* leased but never handed out */
	size_t nrelease;
	later *marks;           /* durable now: record COMMITTED */
	size_t nmarks;
	bool purge;
	int64_t purged;
	int64_t purge_limit;
	bool dead;              /* a dead-letter step (txn_dead.h) */
} tick_job;

/* COMMITTED rows may still keep their batch (txn_check_record_commit):
 * set and cleared on the coordinator thread, read by the ticker. */
static atomic_bool unsynced;

/* Coordinator thread: a commit whose log copy is not synced yet keeps its
 * batch (halfstore_mark_committed_unsynced), else it is dropped. */
int txn_check_record_commit(sqlite3 *db, int64_t txn_id, int64_t offset, partition *p,
			    int64_t need)
{
	if (p && partlog_durable_end(p->log) < need) {
		/* a retry that found it appended long ago (offset -1) cannot
		 * say which range must be synced before its batch goes: the
		 * end that appended it records it (or start-up, which appends
		 * a COMMITTING row again, once) */
		if (offset < 0)
			return HALFSTORE_OK;
		atomic_store(&unsynced, true);
		return halfstore_mark_committed_unsynced(db, txn_id, offset);
	}
	return halfstore_mark_committed(db, txn_id, offset);
}

/* Coordinator thread: drops the batches of the unsynced COMMITTED rows
 * whose partition is now synced past them, at most DROP_BATCH; clears
 * `unsynced` once none is left.  The number dropped, or -errno. */
static int64_t drop_synced(sqlite3 *db)
{
	topic **list;
	int n;
	int64_t dropped = 0, left = 0;

	if (topics_list(srv_g->topics, &list, &n) < 0)
		return -ENOMEM;
	for (int i = 0; i < n && dropped < DROP_BATCH; i++) {
		for (int k = 0; k < list[i]->nparts && dropped < DROP_BATCH; k++) {
			int64_t r = halfstore_drop_synced(db, list[i]->name, k,
							  partlog_durable_end(list[i]->parts[k].log),
							  (size_t)(DROP_BATCH - dropped));

			if (r < 0) {
				topics_list_free(list, n);
				return r;
			}
			dropped += r;
		}
	}
	topics_list_free(list, n);
	if (dropped < DROP_BATCH && halfstore_unsynced_count(db, &left) == 0 && left == 0)
		atomic_store(&unsynced, false);
	return dropped;
}

static void run_marks(sqlite3 *db, tick_job *t)
{
	for (size_t i = 0; i < t->nmarks; i++) {
		int rc = txn_check_record_commit(db, t->marks[i].txn_id, t->marks[i].offset,
						 t->marks[i].p, t->marks[i].need);

		blog(rc < 0 ? BLOG_ERROR : BLOG_DEBUG, "txn %lld: commit recorded after its sync: %s",
		     (long long)t->marks[i].txn_id, halfstore_strerror(rc));
	}
}

static int tick_run(coord_job *job, sqlite3 *db)
{
	tick_job *t = (tick_job *)job;
	int64_t wall = now_ms();
	int numbered;

	for (size_t i = 0; i < t->nnone; i++) {
		enum halfstore_state st;

		if (halfstore_check_answer(db, t->none[i], HALFSTORE_ANSWER_NONE, HALFSTORE_ANY_CHECK,
					   wall, &pol, &st) == HALFSTORE_OK &&
		    st == HALFSTORE_DISCARDED)
			blog(BLOG_WARN, "transaction %lld discarded after %d unanswered checks",
			     (long long)t->none[i], pol.max_checks);
	}
	for (size_t i = 0; i < t->nrelease; i++)
		(void)halfstore_release_lease(db, t->release[i], wall + RELEASE_DELAY_MS);
	run_marks(db, t);
	if (t->purge) {
		/* a failure rolls back only the purge (its own savepoint) */
		t->purged = halfstore_purge(db, wall - txn_api_retention_ms(), false,
					    (size_t)t->purge_limit);
		if (t->purged < 0)
			BLOG_RL(BLOG_ERROR, "transactions: purge failed: %s",
				halfstore_strerror((int)t->purged));
	}
	if (t->budget > 0 &&
	    halfstore_due_checks(db, wall, (size_t)t->budget, pol.lease_ms, &t->due, &t->ndue) < 0)
		return SQLITE_ERROR;
	numbered = t->dead ? txn_dead_run(db) : 0;
	if (numbered < 0)
		return SQLITE_ERROR;
	/* No WAL sync before the hand-out: nothing a client is told rests on
	 * this job being durable.  A power loss can only drop leases, unanswered
	 * checks counted and marks, so a transaction is checked again (or
	 * marked at start-up).  It would otherwise take a device sync ten times
	 * a second on an idle broker.  Except when dead-letter copies were
	 * numbered or recorded: that must be durable before the next copies
	 * are appended (txn_dead.h). */
	t->job.early = numbered == 0;
	return SQLITE_OK;
}

/* Tokens are taken at the time of the hand-out, not of the tick: the
 * coordinator job between the two takes a variable time, and the rate
 * limit is a promise about when checks reach producers. */
static void hand_out(tick_job *t)
{
	int64_t now = mono_ms();

	for (size_t i = 0; i < t->ndue; i++) {
		halfstore_txn *x = &t->due[i];
		uint64_t id = 0;
		int rc = checksched_dispatch(cs, x->txn_id, x->check_count, x->producer_group,
					      x->origin, now, &id);
		poll *p;

		if (rc == CHECKSCHED_E_NO_PRODUCER) {
			int64_t *nn = realloc(pend_none, sizeof(*nn) * (npend_none + 1));

			if (nn) {
				pend_none = nn;
				pend_none[npend_none++] = x->txn_id;
			}
			continue;
		}
		if (rc == CHECKSCHED_E_BUSY || rc == CHECKSCHED_E_RATE || rc == CHECKSCHED_E_FULL) {
			/* nobody took it: due again soon, not after the lease */
			int64_t *nr = realloc(pend_release, sizeof(*nr) * (npend_release + 1));

			if (nr) {
				pend_release = nr;
				pend_release[npend_release++] = x->txn_id;
			}
			continue;
		}
		if (rc != CHECKSCHED_OK || !(p = find_poll(id)))
			continue; /* out already, or its poll vanished: the lease runs out */
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

/* Lock held: puts marks back (their job failed) or drops their topics. */
static void marks_done(tick_job *t, bool recorded)
{
	for (size_t i = 0; i < t->nmarks; i++) {
		if (!recorded && nlaters < caplaters)
			laters[nlaters++] = t->marks[i];
		else
			topic_unref(t->marks[i].t);
	}
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents);

static void tick_done(loop_task *lt)
{
	tick_job *t = (tick_job *)((char *)lt - offsetof(tick_job, job.done));
	bool ok = t->job.rc == SQLITE_OK, again;

	pthread_mutex_lock(&lock);
	if (ok)
		hand_out(t);
	marks_done(t, ok);
	if (t->purge) {
		bool full = t->purged == t->purge_limit;

		next_purge = full ? t->now : t->now + PURGE_INTERVAL_MS;
		purge_batch = full ? (purge_batch * 2 < PURGE_BATCH_MAX ? purge_batch * 2
								       : PURGE_BATCH_MAX)
				   : PURGE_BATCH;
	}
	pthread_mutex_unlock(&lock);
	/* before the next job can start: txn_dead's state is this job's */
	if (t->dead)
		txn_dead_write(srv_g, ok, mono_ms());
	pthread_mutex_lock(&lock);
	job_in_flight = false;
	pthread_mutex_unlock(&lock);
	if (t->purged > 0)
		blog(BLOG_INFO, "transactions: purged %lld ended transaction(s) older than %lld ms",
		     (long long)t->purged, (long long)txn_api_retention_ms());
	halfstore_txns_free(t->due, t->ndue);
	free(t->none);
	free(t->release);
	free(t->marks);
	again = t->dead && txn_dead_again();
	free(t);
	/* a dead-letter backlog: the next step now, not at the next tick */
	if (again)
		on_tick(tick_w->loop, &tick, 0);
}

/* Lock held: moves the handed-over commits that are durable now (or whose
 * topic is gone: nothing left to wait for) into t. */
static void take_marks(tick_job *t)
{
	for (size_t i = 0; i < nlaters;) {
		later *l = &laters[i];

		if (partlog_hw(l->p->log) < l->need && !atomic_load(&l->t->deleted)) {
			i++;
			continue;
		}
		if (!t->marks)
			t->marks = malloc(sizeof(*t->marks) * nlaters);
		if (!t->marks)
			return;
		t->marks[t->nmarks++] = *l;
		*l = laters[--nlaters];
	}
}

/* Lock held: the unanswered checks to record (expired leases, nobody to
 * ask).  false on no memory. */
static bool take_none(tick_job *t)
{
	int64_t expired[MAX_EXPIRE];
	size_t n = checksched_expire(cs, t->now, expired, MAX_EXPIRE);

	if (!n && !npend_none)
		return true;
	t->none = malloc(sizeof(*t->none) * (n + npend_none));
	if (!t->none)
		return false;
	memcpy(t->none, expired, sizeof(*t->none) * n);
	if (npend_none)
		memcpy(t->none + n, pend_none, sizeof(*t->none) * npend_none);
	t->nnone = n + npend_none;
	free(pend_none);
	pend_none = NULL;
	npend_none = 0;
	return true;
}

/* Lock held: the leases to release (hand_out could not place them). */
static void take_release(tick_job *t)
{
	t->release = pend_release;
	t->nrelease = npend_release;
	pend_release = NULL;
	npend_release = 0;
}

/* The drop job (drop_synced): one at a time (drop_in_flight, under lock);
 * the ticker's loop submits it (one allocation per DROP_BATCH rows). */
typedef struct drop_job {
	coord_job job;
	int64_t dropped;
} drop_job;
static bool drop_in_flight;

static int drop_run(coord_job *job, sqlite3 *db)
{
	drop_job *d = (drop_job *)job;

	d->dropped = drop_synced(db);
	if (d->dropped < 0)
		BLOG_RL(BLOG_ERROR, "transactions: dropping the batches of synced commits: %s",
			halfstore_strerror((int)d->dropped));
	/* a power loss can only undo drops: start-up recovery redoes them */
	job->early = true;
	return SQLITE_OK;
}

static void drop_submit(void);

static void drop_done(loop_task *lt)
{
	drop_job *d = (drop_job *)((char *)lt - offsetof(drop_job, job.done));
	/* not while stopping: server_free runs the last tasks after the
	 * coordinator is closed */
	bool again = d->dropped == DROP_BATCH && !atomic_load(&tick_w->stop);

	free(d);
	pthread_mutex_lock(&lock);
	drop_in_flight = false;
	pthread_mutex_unlock(&lock);
	if (again)
		drop_submit();
}

/* Ticker's loop: a drop job, unless one is out. */
static void drop_submit(void)
{
	drop_job *d;
	bool go;

	pthread_mutex_lock(&lock);
	go = !drop_in_flight && cs; /* cs: not stopped */
	drop_in_flight |= go;
	pthread_mutex_unlock(&lock);
	if (!go)
		return;
	d = calloc(1, sizeof(*d));
	if (!d) {
		pthread_mutex_lock(&lock);
		drop_in_flight = false; /* the next tick tries again */
		pthread_mutex_unlock(&lock);
		return;
	}
	d->job.run = drop_run;
	d->job.w = tick_w;
	d->job.done.fn = drop_done;
	coord_submit_lazy(srv_g->coord, &d->job);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	tick_job *t = NULL;
	bool go = false;

	if (atomic_load(&unsynced))
		drop_submit();

	pthread_mutex_lock(&lock);
	if (!job_in_flight)
		t = calloc(1, sizeof(*t));
	if (t) {
		t->now = mono_ms();
		reg_expire(t->now);
		/* with nobody polling, due txns are still leased and counted (a
		 * group with no live producer gets NO_ANSWER checks,
		 * RocketMQ-like) */
		t->budget = checksched_budget(cs, t->now);
		t->purge = t->now >= next_purge;
		t->purge_limit = purge_batch;
		take_marks(t);
		take_release(t);
		t->dead = txn_dead_due(srv_g, t->now);
		go = take_none(t) &&
		     (t->nnone || t->nrelease || t->budget > 0 || t->purge || t->nmarks || t->dead);
		job_in_flight = go;
		if (!go)
			marks_done(t, false);
	}
	pthread_mutex_unlock(&lock);
	if (!go) {
		if (t) {
			free(t->none);
			free(t->marks);
			free(t->release);
		}
		free(t);
		return;
	}
	t->job.run = tick_run;
	t->job.w = tick_w;
	t->job.done.fn = tick_done;
	coord_submit(srv_g->coord, &t->job);
}

int txn_check_start(server *srv, worker *w)
{
	pol = *txn_api_policy();
	if (checksched_new(&pol, mono_ms(), &cs) < 0) {
		blog(BLOG_ERROR, "transaction check policy out of range (transaction.check.*)");
		return -1;
	}
	srv_g = srv;
	tick_w = w;
	next_purge = mono_ms();
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
	free(pend_release);
	pend_release = NULL;
	npend_release = 0;
	free(regs);
	regs = NULL;
	nregs = capregs = 0;
	/* left COMMITTING: start-up recovery records them */
	for (size_t i = 0; i < nlaters; i++)
		topic_unref(laters[i].t);
	free(laters);
	laters = NULL;
	nlaters = caplaters = 0;
	pthread_mutex_unlock(&lock);
	txn_dead_stop();
}
