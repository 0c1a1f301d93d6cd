/*
 * api_produce.c — Produce v3-8.
 *
 * The whole request is parsed and every batch validated (length, magic,
 * CRC, record framing: recbatch_validate) before anything is appended; a
 * partition whose data is bad gets its error and nothing of it is written.
 * Each batch is appended with one write (partlog_append rewrites baseOffset
 * in place, in the connection's read buffer: no copy).
 *
 * acks: 0 → no response; 1 / -1 → answered after the append (pagecache
 * durability) or after the sync that covers it (fsync durability, any acks
 * but 0): the request then waits on the partitions' high watermarks
 * (waiters.h) with the request's timeout.
 *
 * Rate-limited topics (docs/flow-control.md) pass their gate first: admit,
 * reject at once (nothing waits: no coordinator, no syncer, no timer), or
 * park.  A parked request is released by its loop's pacer (pacer.h, a
 * timerfd with microsecond deadlines), at the release time its gate gave
 * it, never by an ev_timer: libev rounds those to whole milliseconds and
 * would release in 1 ms clumps.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "kerr.h"
#include "pacer.h"
#include "pidstate.h"
#include "quota.h"
#include "recbatch.h"
#include "syncer.h"
#include "topics.h"

typedef struct pentry {
	partition *p;       /* NULL when err is set before the append */
	int32_t index;
	int16_t err;
	int64_t base;       /* first offset appended, -1 if none */
	int64_t end;        /* offset after the last appended batch */
	const uint8_t *records; /* in the read buffer (valid during the handler),
				   or in ps->parked_copy once parked */
	int32_t records_len;
	int64_t nrecords;   /* records in all its batches */
} pentry;

typedef struct ptopic {
	char name[TOPIC_NAME_MAX + 1];
	topic *t;           /* referenced, or NULL */
	int first, n;       /* entries[first..first+n) */
	throttleq_node node;/* parked in t's gate (node.q != NULL while parked) */
	bool parked;
} ptopic;

typedef struct produce_state {
	waitset ws;
	ev_timer timer;     /* sync wait timeout */
	pacer_entry release;/* parked: due when every node of ours is released */
	req *r;
	int16_t acks;
	int32_t timeout_ms;
	int32_t throttle_ms;
	int ntopics, nentries;
	ptopic *topics;
	pentry *entries;
	uint8_t *parked_copy; /* owned: the records of a parked request */
} produce_state;

static void produce_free(req *r)
{
	produce_state *ps = r->state;

	for (int i = 0; ps->topics && i < ps->ntopics; i++)
		if (ps->topics[i].t)
			topic_unref(ps->topics[i].t);
	waitset_free(&ps->ws);
	free(ps->parked_copy);
	free(ps->topics);
	free(ps->entries);
	free(ps);
}

static int16_t map_recbatch(int e)
{
	switch (e) {
	case RECBATCH_E_COUNT:
	case RECBATCH_E_RECORD:
	case RECBATCH_E_CONTROL:
		return KERR_INVALID_RECORD;
	case RECBATCH_E_TIMESTAMP:
		return KERR_INVALID_TIMESTAMP;
	case RECBATCH_E_COMPRESSION:
		return KERR_UNSUPPORTED_COMPRESSION_TYPE;
	default:
		return KERR_CORRUPT_MESSAGE;
	}
}

/* Checks every batch of one partition's records and counts them; returns a
 * Kafka error. */
static int16_t validate_records(pentry *e, topic *t)
{
	topic_conf conf;
	recbatch_hdr h;

	size_t pos = 0, len = (size_t)e->records_len;

	if (!e->records || len == 0)
		return KERR_CORRUPT_MESSAGE;
	topic_get_conf(t, &conf);
	while (pos < len) {
		size_t size = recbatch_size(e->records + pos, len - pos);
		int rc;

		if (size == 0 || size > len - pos) {
			BLOG_RL(BLOG_WARN, "produce to %s-%d: truncated record batch", t->name, e->index);
			return KERR_CORRUPT_MESSAGE;
		}
		if (size > (size_t)conf.max_message_bytes)
			return KERR_MESSAGE_TOO_LARGE;
		rc = recbatch_validate(e->records + pos, size, &h, NULL);
		if (rc == RECBATCH_OK)
			e->nrecords += h.record_count;
		if (rc != RECBATCH_OK) {
			BLOG_RL(BLOG_WARN, "produce to %s-%d: %s", t->name, e->index, recbatch_strerror(rc));
			return map_recbatch(rc);
		}
		if (h.producer_id >= 0 && h.producer_id < PIDSTATE_FIRST_CLIENT_PID) {
			BLOG_RL(BLOG_WARN, "produce to %s-%d: producer id %lld is reserved for the "
					   "broker's own batches (InitProducerId hands out ids from %d)",
				t->name, e->index, (long long)h.producer_id, PIDSTATE_FIRST_CLIENT_PID);
			return KERR_INVALID_PRODUCER_ID_MAPPING;
		}
		pos += size;
	}
	return KERR_NONE;
}

static const int16_t pid_errors[] = {
	[PIDSTATE_OUT_OF_ORDER] = KERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
	[PIDSTATE_FENCED] = KERR_INVALID_PRODUCER_EPOCH,
	[PIDSTATE_UNKNOWN_PID] = KERR_UNKNOWN_PRODUCER_ID,
};

/* An idempotent batch: deduplicated against the producer's last batches,
 * appended and recorded under the partition's pid_lock.  Returns what
 * partlog_append returned (0 for a duplicate, with *base its original
 * offset); a sequence or epoch problem is returned in *kerr (nothing
 * appended). */
static int append_idempotent(pentry *e, uint8_t *batch, size_t size, const recbatch_hdr *h,
			     int64_t max_ts, int64_t now, int64_t *base, int16_t *kerr)
{
	partition *p = e->p;
	int32_t last_seq = pidstate_seq_add(h->base_sequence, h->last_offset_delta);
	int verdict, rc;

	pthread_mutex_lock(&p->pid_lock);
	verdict = pidstate_check(p->pids, h->producer_id, h->producer_epoch, h->base_sequence, last_seq,
				 base);
	if (verdict == PIDSTATE_DUPLICATE) {
		pthread_mutex_unlock(&p->pid_lock);
		BLOG_RL(BLOG_INFO, "produce to %s-%d: duplicate batch of producer %lld (seq %d) answered "
			"with its offset %lld", p->topic->name, e->index, (long long)h->producer_id,
			h->base_sequence, (long long)*base);
		return 0;
	}
	if (verdict != PIDSTATE_APPEND) {
		pthread_mutex_unlock(&p->pid_lock);
		*kerr = pid_errors[verdict];
		return 0;
	}
	rc = partlog_append(p->log, batch, size, max_ts, now, base);
	/* now (the broker's clock, not the batch's CreateTime): the
	 * producer's last write, for producer.id.expiration.ms */
	if (rc == 0 && pidstate_record(p->pids, h->producer_id, h->producer_epoch, h->base_sequence,
				       last_seq, *base, *base + h->last_offset_delta, now) < 0)
		BLOG_RL(BLOG_ERROR, "out of memory recording producer state");
	pthread_mutex_unlock(&p->pid_lock);
	return rc;
}

static void append_records(pentry *e, int64_t now)
{
	uint8_t *rec = (uint8_t *)e->records; /* the conn's read buffer: ours to rewrite */
	size_t pos = 0, len = (size_t)e->records_len;

	while (pos < len) {
		size_t size = recbatch_size(rec + pos, len - pos);
		int64_t max_ts = 0, base;
		recbatch_hdr h;
		int rc;

		recbatch_validate(rec + pos, size, &h, &max_ts);
		if (h.producer_id >= 0) {
			int16_t kerr = KERR_NONE;

			rc = append_idempotent(e, rec + pos, size, &h, max_ts, now, &base, &kerr);
			if (kerr) {
				e->err = kerr;
				return;
			}
		} else {
			rc = partlog_append(e->p->log, rec + pos, size, max_ts, now, &base);
		}
		if (rc != 0) {
			BLOG_RL(BLOG_ERROR, "append to %s-%d failed: %s", e->p->topic->name, e->index,
				rc < 0 ? strerror(-rc) : "batch larger than a segment");
			e->err = rc == PARTLOG_E_TOO_LARGE ? KERR_MESSAGE_TOO_LARGE : KERR_KAFKA_STORAGE_ERROR;
			return; /* batches before this one stay: they are whole */
		}
		if (e->base < 0)
			e->base = base;
		e->end = base + h.last_offset_delta + 1;
		pos += size;
	}
}

static void build_response(req *r)
{
	produce_state *ps = r->state;
	wire_buf *b = &r->resp;

	wire_w_i32(b, ps->ntopics);
	for (int i = 0; i < ps->ntopics; i++) {
		ptopic *pt = &ps->topics[i];

		wire_w_str(b, pt->name);
		wire_w_i32(b, pt->n);
		for (int k = pt->first; k < pt->first + pt->n; k++) {
			pentry *e = &ps->entries[k];

			wire_w_i32(b, e->index);
			wire_w_i16(b, e->err);
			wire_w_i64(b, e->err ? -1 : e->base);
			if (r->api_version >= 2)
				wire_w_i64(b, -1); /* log_append_time: CreateTime topics */
			if (r->api_version >= 5)
				wire_w_i64(b, e->p ? partlog_start_offset(e->p->log) : -1);
			if (r->api_version >= 8) {
				wire_w_i32(b, 0);        /* record_errors */
				wire_w_str(b, NULL);     /* error_message */
			}
		}
	}
	wire_w_i32(b, ps->throttle_ms);
}

static void produce_complete(produce_state *ps)
{
	req *r = ps->r;

	ev_timer_stop(r->w->loop, &ps->timer);
	if (!waitset_release(&ps->ws))
		req_ref(r); /* a queued wake-up task drops it */
	r->cancel = NULL;
	build_response(r);
	req_finish(r);
}

/* The entries not synced yet fail with REQUEST_TIMED_OUT: their data is
 * in the log, but its sync was not seen, so a retry is the client's call. */
static void fail_unsynced(produce_state *ps)
{
	for (int i = 0; i < ps->nentries; i++) {
		pentry *e = &ps->entries[i];

		if (e->p && e->base >= 0 && !e->err && partlog_hw(e->p->log) < e->end)
			e->err = KERR_REQUEST_TIMED_OUT;
	}
}

/* True if every appended partition's high watermark covers our batches;
 * otherwise registers on those that do not. */
static bool synced_or_wait(produce_state *ps)
{
	bool all = true;

	for (int pass = 0; pass < 2; pass++) {
		all = true;
		for (int i = 0; i < ps->nentries; i++) {
			pentry *e = &ps->entries[i];

			if (!e->p || e->base < 0 || partlog_hw(e->p->log) >= e->end)
				continue;
			all = false;
			if (pass == 0 && waitset_add(&ps->ws, e->p) < 0) {
				/* no memory to wait: answer now, but not success for
				 * what is not synced (an idempotent retry dedups) */
				fail_unsynced(ps);
				return true;
			}
		}
		if (all)
			break;
		/* registered: re-check, an append may have landed in between */
	}
	return all;
}

static void produce_wake(waitset *ws)
{
	produce_state *ps = (produce_state *)ws;

	if (synced_or_wait(ps))
		produce_complete(ps);
}

static void produce_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	produce_state *ps = t->data;

	fail_unsynced(ps);
	produce_complete(ps);
}

static void produce_orphaned(waitset *ws)
{
	req_unref(((produce_state *)ws)->r);
}

/* Client gone: parked nodes leave their gates and give their tokens back. */
static void unpark_cancel(produce_state *ps)
{
	int64_t now = pacer_now_ns();

	for (int i = 0; i < ps->ntopics; i++) {
		ptopic *pt = &ps->topics[i];

		if (!pt->parked)
			continue;
		pthread_mutex_lock(&pt->t->gate_lock);
		gate_cancel(&pt->t->gate, &pt->node, now);
		pthread_mutex_unlock(&pt->t->gate_lock);
		pt->parked = false;
	}
}

/* Pacer: pops every node of our gates due at now (ours or another
 * request's: the tokens of a due node are spent either way, and popping in
 * FIFO order is what keeps the order).  Returns 0 when all our nodes are
 * released, else the latest release time still ahead (defensive: the pacer
 * never fires before the deadline we gave it, which is our latest node's
 * release time). */
static int64_t unpark_release(produce_state *ps, int64_t now)
{
	int64_t left = 0;

	for (int i = 0; i < ps->ntopics; i++) {
		ptopic *pt = &ps->topics[i];

		if (!pt->parked)
			continue;
		pthread_mutex_lock(&pt->t->gate_lock);
		while (gate_pop_ready(&pt->t->gate, now))
			;
		if (pt->node.q) {
			if (pt->node.release_ns > left)
				left = pt->node.release_ns;
		} else {
			pt->parked = false;
		}
		pthread_mutex_unlock(&pt->t->gate_lock);
	}
	return left;
}

static void produce_cancel(req *r)
{
	produce_state *ps = r->state;

	unpark_cancel(ps);
	pacer_stop(&r->w->pacer, &ps->release);
	ev_timer_stop(r->w->loop, &ps->timer);
	if (!waitset_release(&ps->ws))
		req_ref(r); /* the pending wake-up task drops it */
}

/* First pass: framing only, counts topics and partitions. */
static int count_request(wire_rd *rd, int *ntopics, int *nentries)
{
	int32_t nt = wire_rd_array(rd, 6);

	*ntopics = 0;
	*nentries = 0;
	for (int32_t i = 0; i < nt && !rd->err; i++) {
		int32_t np;

		(void)wire_rd_str(rd);
		np = wire_rd_array(rd, 8);
		for (int32_t k = 0; k < np && !rd->err; k++) {
			(void)wire_rd_i32(rd);
			(void)wire_rd_bytes(rd);
		}
		*nentries += np > 0 ? np : 0;
	}
	*ntopics = nt > 0 ? nt : 0;
	return rd->err ? -1 : 0;
}

static void resolve_entry(server *srv, ptopic *pt, pentry *e)
{
	e->base = -1;
	e->end = -1;
	if (!pt->t) {
		e->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		return;
	}
	if (e->index < 0 || e->index >= pt->t->nparts) {
		e->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		return;
	}
	e->p = &pt->t->parts[e->index];
	e->err = validate_records(e, pt->t);
	if (e->err)
		e->p = NULL;
}

static int parse_request(req *r, wire_rd *rd, produce_state *ps)
{
	server *srv = r->w->srv;
	int32_t nt = wire_rd_array(rd, 6);
	int k = 0;

	for (int32_t i = 0; i < nt; i++) {
		ptopic *pt = &ps->topics[i];
		wire_str name = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 8);

		if (!wire_str_copy(name, pt->name, sizeof(pt->name)))
			pt->name[0] = '\0';
		else
			pt->t = topics_get(srv->topics, name.ptr, (size_t)name.len);
		pt->first = k;
		pt->n = np;
		for (int32_t j = 0; j < np; j++, k++) {
			pentry *e = &ps->entries[k];
			wire_str rec;

			e->index = wire_rd_i32(rd);
			rec = wire_rd_bytes(rd);
			e->records = (const uint8_t *)rec.ptr;
			e->records_len = rec.len;
			resolve_entry(srv, pt, e);
		}
	}
	return rd->err ? -1 : 0;
}

/* Appends every admitted entry and answers (now, or after the sync). */
static void produce_append(produce_state *ps)
{
	req *r = ps->r;
	server *srv = r->w->srv;
	bool wait_sync = false;
	int64_t now = now_ms();

	for (int i = 0; i < ps->nentries; i++) {
		pentry *e = &ps->entries[i];

		if (!e->p)
			continue;
		append_records(e, now);
		if (e->base < 0)
			continue;
		if (partition_synced(e->p)) {
			syncer_mark_dirty(srv->syncer, e->p);
			wait_sync = true;
		} else {
			partition_wake(e->p);
		}
	}
	if (ps->acks == 0) {
		r->no_response = true;
		req_finish(r);
		return;
	}
	if (!wait_sync || synced_or_wait(ps)) {
		build_response(r);
		req_finish(r);
		return;
	}
	r->cancel = produce_cancel;
	ev_timer_init(&ps->timer, produce_timeout, (ps->timeout_ms > 0 ? ps->timeout_ms : 30000) / 1000.0, 0.);
	ps->timer.data = ps;
	ev_timer_start(r->w->loop, &ps->timer);
}

/* Broker stopping: a parked request is answered with a retriable error
 * (the client retries against the restarted broker); nothing of it was
 * appended. */
static void fail_topic_entries(produce_state *ps, ptopic *pt, int16_t err);

static void produce_shutdown(req *r)
{
	produce_state *ps = r->state;
	bool parked = false;

	for (int i = 0; i < ps->ntopics; i++)
		parked |= ps->topics[i].parked;
	if (!parked)
		return; /* a sync wait is answered by the final sync */
	unpark_cancel(ps);
	pacer_stop(&r->w->pacer, &ps->release);
	r->cancel = NULL;
	r->shutdown = NULL;
	for (int i = 0; i < ps->ntopics; i++)
		fail_topic_entries(ps, &ps->topics[i], KERR_NOT_LEADER_OR_FOLLOWER);
	if (ps->acks == 0) {
		r->no_response = true;
		req_finish(r);
		return;
	}
	build_response(r);
	req_finish(r);
}

/* Gives up waiting: the entries of topics still parked are answered with
 * err (their tokens go back); the rest of the request goes on.  Defined
 * with the gate code. */
static void unpark_fail(produce_state *ps, int16_t err);

/* The pacer: our release time has come. */
static void produce_released(pacer_entry *e, int64_t now)
{
	produce_state *ps = e->data;
	int64_t until = unpark_release(ps, now);

	if (until > 0 && pacer_start(&ps->r->w->pacer, &ps->release, until) == 0)
		return;
	if (until > 0)
		unpark_fail(ps, KERR_UNKNOWN_SERVER_ERROR); /* cannot wait: answer */
	ps->r->cancel = NULL;
	ps->r->shutdown = NULL;
	produce_append(ps);
}

static void fail_topic_entries(produce_state *ps, ptopic *pt, int16_t err)
{
	for (int k = pt->first; k < pt->first + pt->n; k++) {
		ps->entries[k].err = ps->entries[k].err ? ps->entries[k].err : err;
		ps->entries[k].p = NULL;
	}
}

static void unpark_fail(produce_state *ps, int16_t err)
{
	for (int i = 0; i < ps->ntopics; i++)
		if (ps->topics[i].parked)
			fail_topic_entries(ps, &ps->topics[i], err);
	unpark_cancel(ps);
	pacer_stop(&ps->r->w->pacer, &ps->release);
}

/* The token-bucket gate of each limited topic (flow-control.md): admit,
 * park (returns the latest release time, CLOCK_MONOTONIC ns, or 0 when
 * nothing is parked) or reject its entries with THROTTLING_QUOTA_EXCEEDED
 * and a throttle-time hint. */
static int64_t apply_gates(produce_state *ps)
{
	int64_t now = pacer_now_ns(), park = 0, hint = 0;
	uint64_t all_msgs = 0, all_bytes = 0;

	/* the client id's own limit first: fail-fast, never parks */
	for (int k = 0; k < ps->nentries; k++) {
		if (!ps->entries[k].p)
			continue;
		all_msgs += (uint64_t)ps->entries[k].nrecords;
		all_bytes += (uint64_t)ps->entries[k].records_len;
	}
	if (all_msgs && !quota_admit(ps->r->w->srv->quota, ps->r->client_id, all_msgs, all_bytes, now,
				     &hint)) {
		int64_t ms = hint == TOKENBUCKET_NEVER ? INT32_MAX : (hint + 999999) / 1000000;

		for (int i = 0; i < ps->ntopics; i++)
			fail_topic_entries(ps, &ps->topics[i], KERR_THROTTLING_QUOTA_EXCEEDED);
		ps->throttle_ms = (int32_t)(ms > INT32_MAX ? INT32_MAX : ms);
		return 0;
	}

	for (int i = 0; i < ps->ntopics; i++) {
		ptopic *pt = &ps->topics[i];
		uint64_t msgs = 0, bytes = 0;
		int64_t wait = 0;
		int verdict;

		if (!pt->t || !atomic_load(&pt->t->gated))
			continue;
		for (int k = pt->first; k < pt->first + pt->n; k++) {
			if (!ps->entries[k].p)
				continue;
			msgs += (uint64_t)ps->entries[k].nrecords;
			bytes += (uint64_t)ps->entries[k].records_len;
		}
		if (!msgs)
			continue;
		pthread_mutex_lock(&pt->t->gate_lock);
		verdict = gate_decide(&pt->t->gate, now, msgs, bytes, ps->acks ? &pt->node : NULL, &wait);
		pthread_mutex_unlock(&pt->t->gate_lock);
		if (verdict == GATE_QUEUE) {
			pt->parked = true;
			if (now + wait > park)
				park = now + wait; /* = the node's release time */
		} else if (verdict == GATE_REJECT) {
			int64_t ms = wait == TOKENBUCKET_NEVER ? INT32_MAX : (wait + 999999) / 1000000;

			fail_topic_entries(ps, pt, KERR_THROTTLING_QUOTA_EXCEEDED);
			if (ms > ps->throttle_ms)
				ps->throttle_ms = (int32_t)(ms > INT32_MAX ? INT32_MAX : ms);
		}
	}
	return park;
}

/* A parked request outlives the read buffer: copy its admitted records. */
static int copy_parked(produce_state *ps)
{
	size_t total = 0, pos = 0;

	for (int i = 0; i < ps->nentries; i++)
		if (ps->entries[i].p)
			total += (size_t)ps->entries[i].records_len;
	ps->parked_copy = malloc(total ? total : 1);
	if (!ps->parked_copy)
		return -ENOMEM;
	for (int i = 0; i < ps->nentries; i++) {
		pentry *e = &ps->entries[i];

		if (!e->p)
			continue;
		memcpy(ps->parked_copy + pos, e->records, (size_t)e->records_len);
		e->records = ps->parked_copy + pos;
		pos += (size_t)e->records_len;
	}
	return 0;
}

int api_produce(req *r, wire_rd *rd)
{
	produce_state *ps;
	wire_rd counter;
	int64_t park;

	ps = calloc(1, sizeof(*ps));
	if (!ps)
		return API_MALFORMED;
	r->state = ps;
	r->free_state = produce_free;
	ps->r = r;
	(void)wire_rd_str(rd); /* transactional_id: Kafka transactions are not supported */
	ps->acks = wire_rd_i16(rd);
	ps->timeout_ms = wire_rd_i32(rd);
	counter = *rd;
	if (count_request(&counter, &ps->ntopics, &ps->nentries) < 0)
		return API_MALFORMED;
	ps->topics = calloc((size_t)ps->ntopics + 1, sizeof(*ps->topics));
	ps->entries = calloc((size_t)ps->nentries + 1, sizeof(*ps->entries));
	if (!ps->topics || !ps->entries || parse_request(r, rd, ps) < 0)
		return API_MALFORMED;
	waitset_init(&ps->ws, r->w, produce_wake, produce_orphaned);
	if (ps->acks != 0 && ps->acks != 1 && ps->acks != -1) {
		for (int i = 0; i < ps->nentries; i++) {
			ps->entries[i].err = KERR_INVALID_REQUIRED_ACKS;
			ps->entries[i].p = NULL;
		}
	}
	pacer_entry_init(&ps->release, produce_released, ps);
	park = apply_gates(ps);
	if (park > 0) {
		if (copy_parked(ps) < 0 || pacer_start(&r->w->pacer, &ps->release, park) < 0) {
			unpark_fail(ps, KERR_UNKNOWN_SERVER_ERROR);
		} else {
			r->cancel = produce_cancel;
			r->shutdown = produce_shutdown;
			return API_OK;
		}
	}
	produce_append(ps);
	return API_OK;
}

/* ---- InitProducerId (idempotent producers) ---- */

/* Producer ids come from a counter in sluice.db, so they stay unique across
 * restarts: a restarted broker never hands out an id whose old batches are
 * still in the logs. */
typedef struct pid_job {
	coord_job job;
	req *r;        /* referenced */
	int64_t pid;
} pid_job;

static int pid_run(coord_job *job, sqlite3 *db)
{
	pid_job *pj = (pid_job *)job;
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(db,
				"INSERT INTO meta(key, value) VALUES('next_producer_id', ?1) "
				"ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 "
				"RETURNING CAST(value AS INTEGER)",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_int(st, 1, PIDSTATE_FIRST_CLIENT_PID);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		pj->pid = sqlite3_column_int64(st, 0);
	rc = sqlite3_finalize(st);
	return rc;
}

static void pid_done(loop_task *t)
{
	pid_job *pj = (pid_job *)((char *)t - offsetof(pid_job, job.done));
	req *r = pj->r;
	int ok = pj->job.rc == SQLITE_OK && pj->pid > 0;

	if (!ok)
		blog(BLOG_ERROR, "InitProducerId: cannot allocate a producer id: %s",
		     sqlite3_errstr(pj->job.rc));
	wire_w_i32(&r->resp, 0); /* throttle */
	wire_w_i16(&r->resp, ok ? KERR_NONE : KERR_COORDINATOR_NOT_AVAILABLE);
	wire_w_i64(&r->resp, ok ? pj->pid : -1);
	wire_w_i16(&r->resp, ok ? 0 : -1);
	req_finish(r);
	req_unref(r);
	free(pj);
}

int api_init_producer_id(req *r, wire_rd *rd)
{
	wire_str txn = wire_rd_str(rd);
	pid_job *pj;

	(void)wire_rd_i32(rd); /* transaction timeout */
	if (rd->err)
		return API_MALFORMED;
	if (txn.len >= 0) {
		/* Kafka transactions need a transaction coordinator we do not
		 * have; Sluice's transactional messages are the extension APIs. */
		wire_w_i32(&r->resp, 0);
		wire_w_i16(&r->resp, KERR_COORDINATOR_NOT_AVAILABLE);
		wire_w_i64(&r->resp, -1);
		wire_w_i16(&r->resp, -1);
		req_finish(r);
		return API_OK;
	}
	pj = calloc(1, sizeof(*pj));
	if (!pj)
		return API_MALFORMED;
	pj->r = r;
	req_ref(r); /* dropped in pid_done */
	pj->job.run = pid_run;
	pj->job.w = r->w;
	pj->job.done.fn = pid_done;
	coord_submit(r->w->srv->coord, &pj->job);
	return API_OK;
}
