/*
 * producer.c — sluice_producer_t: batching producer with a background I/O
 * thread.
 *
 * Owns: topics (ptopic) and their partitions (ppart), each partition's open
 * batch and its queue of closed batches, the list of finished batches
 * awaiting their delivery reports, the kconn, the I/O thread.
 *
 * Threads and locking:
 *  - `lock` guards topics, partitions, open batches, queues, counters and
 *    the report list.  sluice_produce() takes it once per message.
 *  - The I/O thread is the only one that touches the connection and the
 *    batches once closed (in_flight, base_seq, results); it reads and
 *    changes queue links only under `lock`.  It seals (CRC) outside the lock.
 *  - `poll_lock` serialises delivery callbacks (poll/flush from several
 *    threads run callbacks one at a time).
 * Invariants:
 *  - A partition queue holds its closed, unfinished batches in produce
 *    order; in-flight batches are a prefix of the sendable part of it, so a
 *    batch waiting for a retry is never overtaken.
 *  - q_msgs/q_bytes count every message from produce() until its report is
 *    served (or, without a delivery callback, until it is finished).
 *
 * Idempotence (enable.idempotence): every batch carries the producer id,
 * epoch and the partition's next sequence, assigned when it is first sent
 * (sealed); a retry resends the same bytes, so the broker answers a batch it
 * already has with its original offset.
 *  - While a batch is queued, b->err records what is known of its earlier
 *    attempts: 0 = none can be in the log (never sent, or every attempt was
 *    answered with an error: the broker appends nothing then),
 *    MAYBE_WRITTEN = an attempt ended without an answer (connection lost,
 *    time-out), so the broker may have appended it.  Sticky until the batch
 *    is acknowledged or a sequence error proves it absent.  A batch can only
 *    be in the log if every batch before it in its partition is, so only a
 *    partition's head matters.
 *  - Sequence errors (UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE_NUMBER) on
 *    a batch that is not its partition's head are a consequence of the
 *    head's failure: retried.  On the head they mean the broker does not
 *    have it and lost or never had what came before (state deleted with the
 *    log by retention, log truncated): the producer re-initialises
 *    ("epoch bump", KIP-360), see bump_request_locked().  It first stops
 *    sending anything new, waits until no request is in flight and resends,
 *    under the old id, every partition head that may be in the log until
 *    the broker answers it (so nothing written under the old id is sent
 *    again under the new one); then it asks InitProducerId again (v3-4
 *    with the current id and epoch: the same id with the next epoch, or a
 *    new id; v0-1: a new id) and every queued batch gets new sequences
 *    from 0.  The one case where
 *    that is not safe is UNKNOWN_PRODUCER_ID for a head that may be in the
 *    log while the broker's log start is past our last acknowledged record
 *    (retention may have deleted it with the state): the producer fails
 *    with SLUICE_ERR_FATAL instead of risking a duplicate.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "batch.h"
#include "conf.h"
#include "kconn.h"
#include "kerr.h"
#include "recbatch.h"

#define MAX_INFLIGHT_PER_PART 5
/* Spare batch structs and batch buffers kept for reuse.  Buffers are never
 * given back to malloc while the producer lives, up to what the queue limit
 * (queue.buffering.max.kbytes / batch.size, see pool_max) can hold at once:
 * fresh large mallocs are mmap'd, every page faults on first touch and
 * free() unmaps them again, which cost more than the copy itself. */
#define FREE_BATCHES_MIN 32
#define FREE_BATCHES_LIMIT 4096
/* Values at least this long are kept by reference with SLUICE_MSG_F_NOCOPY
 * (smaller ones are copied: an iovec and a CRC pass cost more). */
#define NOCOPY_MIN_BYTES (16u << 10)
#define PRODUCE_MIN_VER 3
#define PRODUCE_MAX_VER 8
/* b->err of a queued batch: an attempt may have been appended (see top). */
#define MAYBE_WRITTEN SLUICE_ERR_TRANSPORT
/* Re-initialisations in a row without an acknowledged batch in between
 * before the producer gives up (a broker that keeps losing its state). */
#define MAX_BUMPS_WITHOUT_ACK 3

struct ppart {
	int32_t id;
	struct batch *cur;
	struct batch *q_head, *q_tail;
	int inflight;
	int32_t next_seq;
	int64_t acked_end; /* offset after the last record acknowledged under the
			      current producer id and epoch; 0 = none */
};

struct ptopic {
	struct ptopic *next;
	char *name;
	int32_t nparts; /* -1 until metadata is known */
	struct ppart *parts;
	int32_t sticky;
	bool md_inflight;
	int64_t md_next_ms;
	wire_buf pending; /* messages produced before metadata: see pending_add() */
	int npending;
	int64_t pending_since_ms;
};

struct sluice_producer {
	struct sluice_conf *conf;
	pthread_mutex_t lock;
	pthread_cond_t dr_cond;
	pthread_mutex_t poll_lock;
	struct ptopic *topics;
	struct ptopic *last_topic; /* lookup cache */
	int64_t q_msgs, q_bytes;
	struct batch *dr_head, *dr_tail;
	struct batch *free_batches;
	int nfree;
	uint8_t **bufpool; /* spare batch buffers of batch_size + 64 bytes */
	int nbufpool;
	int pool_max; /* bound of nfree and nbufpool */
	int flush_req;
	bool terminate;
	/* I/O thread */
	pthread_t thr;
	int wakefd;
	bool wake_pending;
	int64_t io_sleep_until; /* 0 = awake */
	struct kconn conn;
	int64_t reconnect_at;
	int inflight_reqs;
	int produce_ver;
	/* idempotence */
	int64_t pid;
	int16_t epoch;
	bool pid_ready, pid_inflight;
	int64_t pid_retry_at;  /* InitProducerId answered a retriable error */
	bool bump;             /* re-initialise once drained (see top) */
	int bumps_since_ack;
	sluice_err_t fatal;
	char fatal_str[256];
	uint64_t rnd;
};

static uint32_t rnd32(struct sluice_producer *p)
{
	p->rnd ^= p->rnd << 13;
	p->rnd ^= p->rnd >> 7;
	p->rnd ^= p->rnd << 17;
	return (uint32_t)(p->rnd >> 11);
}

/* Wakes the I/O thread.  Called with lock held. */
static void wake_locked(struct sluice_producer *p)
{
	uint64_t one = 1;

	if (p->wake_pending)
		return;
	p->wake_pending = true;
	/* Awake (io_sleep_until 0): it looks at wake_pending, under the lock,
	 * before it sleeps, and then does not sleep: no syscall needed. */
	if (!p->io_sleep_until)
		return;
	if (write(p->wakefd, &one, sizeof(one)) < 0) {
		/* eventfd counter overflow cannot happen with wake_pending */
	}
}

static struct ptopic *topic_find(struct sluice_producer *p, const char *name)
{
	struct ptopic *t = p->last_topic;

	if (t && !strcmp(t->name, name))
		return t;
	for (t = p->topics; t; t = t->next)
		if (!strcmp(t->name, name)) {
			p->last_topic = t;
			return t;
		}
	return NULL;
}

static struct ptopic *topic_add(struct sluice_producer *p, const char *name)
{
	struct ptopic *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->name = strdup(name);
	if (!t->name) {
		free(t);
		return NULL;
	}
	t->nparts = -1;
	t->sticky = -1;
	wire_buf_init(&t->pending);
	t->next = p->topics;
	p->topics = t;
	p->last_topic = t;
	return t;
}

static struct batch *batch_get(struct sluice_producer *p, size_t need)
{
	struct batch *b = p->free_batches;
	size_t cap = (size_t)p->conf->batch_size + 64;

	if (b) {
		p->free_batches = b->next;
		p->nfree--;
	} else {
		b = calloc(1, sizeof(*b));
		if (!b)
			return NULL;
	}
	batch_reset(b);
	b->next = NULL;
	b->sealed = b->in_flight = false;
	b->attempts = 0;
	b->retry_at_ms = 0;
	b->base_seq = -1;
	b->base_offset = -1;
	b->err = 0;
	b->acct_bytes = 0;
	/* Whole-size buffers, recycled: fresh large mallocs are mmap'd and
	 * every page faults on first touch, which costs more than the copy. */
	if (cap < need)
		cap = need;
	if (!b->buf) {
		if (cap == (size_t)p->conf->batch_size + 64 && p->nbufpool) {
			b->buf = p->bufpool[--p->nbufpool];
		} else {
			b->buf = malloc(cap);
			if (!b->buf) {
				b->next = p->free_batches;
				p->free_batches = b;
				p->nfree++;
				return NULL;
			}
		}
		b->cap = cap;
	}
	return b;
}

/* Gives the batch's buffer back to the pool (the struct stays for its
 * delivery report). */
static void batch_drop_buf(struct sluice_producer *p, struct batch *b)
{
	if (!b->buf)
		return;
	if (b->cap == (size_t)p->conf->batch_size + 64 && p->nbufpool < p->pool_max)
		p->bufpool[p->nbufpool++] = b->buf;
	else
		free(b->buf);
	b->buf = NULL;
	b->cap = 0;
	/* The values kept by reference are released with the buffer: the
	 * report may now tell the caller it can reuse them. */
	b->n_ext = 0;
	b->ext_bytes = 0;
}

static void batch_put(struct sluice_producer *p, struct batch *b)
{
	batch_drop_buf(p, b);
	if (p->nfree < p->pool_max) {
		b->next = p->free_batches;
		p->free_batches = b;
		p->nfree++;
		return;
	}
	batch_free(b);
	free(b);
}

/* Closes the open batch of a partition: it joins the send queue. */
static void close_cur_locked(struct sluice_producer *p, struct ptopic *t, struct ppart *pp)
{
	struct batch *b = pp->cur;

	if (!b)
		return;
	pp->cur = NULL;
	b->next = NULL;
	if (pp->q_tail)
		pp->q_tail->next = b;
	else
		pp->q_head = b;
	pp->q_tail = b;
	if (t->sticky == pp->id)
		t->sticky = -1;
}

/* Puts a finished batch on the report list (or frees it without callback). */
static void finish_locked(struct sluice_producer *p, struct batch *b)
{
	b->next = NULL;
	batch_drop_buf(p, b);
	if (!p->conf->dr_cb) {
		p->q_msgs -= b->count;
		p->q_bytes -= (int64_t)b->acct_bytes;
		batch_put(p, b);
		pthread_cond_broadcast(&p->dr_cond);
		return;
	}
	if (p->dr_tail)
		p->dr_tail->next = b;
	else
		p->dr_head = b;
	p->dr_tail = b;
	pthread_cond_broadcast(&p->dr_cond);
}

static int append_locked(struct sluice_producer *p, struct ptopic *t, int32_t partition,
			 int64_t ts, const void *key, int32_t keylen, const void *value, int32_t vlen,
			 const sluice_header_t *hdrs, size_t nhdrs, void *opaque, size_t rsize,
			 bool by_ref)
{
	struct ppart *pp;
	int rc;

	if (partition == SLUICE_PARTITION_ANY) {
		if (key) {
			partition = sluice_partition_for_key(key, (size_t)keylen, t->nparts);
		} else {
			if (t->sticky < 0)
				t->sticky = (int32_t)(rnd32(p) % (uint32_t)t->nparts);
			partition = t->sticky;
		}
	}
	pp = &t->parts[partition];
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!pp->cur) {
			pp->cur = batch_get(p, rsize + RECBATCH_HEADER_SIZE);
			if (!pp->cur)
				return SLUICE_ERR_NO_MEMORY;
			pp->cur->topic = t;
			pp->cur->partition = partition;
			pp->cur->created_ms = kclock_ms();
			/* The I/O thread must see the new batch by its linger
			 * deadline: wake it if it sleeps past that, and also if it
			 * is awake (io_sleep_until 0): it may already have done
			 * its housekeeping and be about to sleep (wake_pending
			 * makes that sleep 0). */
			if (!p->io_sleep_until ||
			    pp->cur->created_ms + p->conf->linger_ms < p->io_sleep_until)
				wake_locked(p);
		}
		if (pp->cur->count >= p->conf->batch_num_messages)
			rc = 1;
		else if (by_ref)
			rc = batch_append_ref(pp->cur, (size_t)p->conf->batch_size, ts, key, keylen,
					      value, vlen, hdrs, nhdrs, opaque);
		else
			rc = batch_append(pp->cur, (size_t)p->conf->batch_size, ts, key, keylen, value,
					  vlen, hdrs, nhdrs, opaque);
		if (rc == 0) {
			pp->cur->acct_bytes += rsize;
			if (batch_wire_len(pp->cur) + 64 >= (size_t)p->conf->batch_size ||
			    pp->cur->count >= p->conf->batch_num_messages) {
				int32_t part = pp->id;

				close_cur_locked(p, t, pp);
				(void)part;
				wake_locked(p);
			}
			return 0;
		}
		if (rc < 0)
			return SLUICE_ERR_NO_MEMORY;
		/* Full: close it and start a new one. */
		close_cur_locked(p, t, pp);
		wake_locked(p);
		if (t->sticky < 0 && partition == pp->id && !key) {
			/* sticky moved on: keep this message on its partition anyway */
		}
	}
	return SLUICE_ERR_NO_MEMORY;
}

/* Records a message for a topic whose partition count is not known yet.
 * Layout: i32 partition, i64 ts, i32 keylen (-1 null), key, i32 vlen, value,
 * i32 nhdrs, per header: i32 namelen (with NUL), name, i32 vlen, value;
 * then the opaque pointer's bytes. */
static int pending_add(struct ptopic *t, int32_t partition, int64_t ts, const void *key,
		       int32_t keylen, const void *value, int32_t vlen, const sluice_header_t *hdrs,
		       size_t nhdrs, void *opaque)
{
	wire_buf *w = &t->pending;
	size_t mark = w->len;

	wire_w_i32(w, partition);
	wire_w_i64(w, ts);
	wire_w_i32(w, key ? keylen : -1);
	if (key && keylen)
		wire_buf_append(w, key, (size_t)keylen);
	wire_w_i32(w, value ? vlen : -1);
	if (value && vlen)
		wire_buf_append(w, value, (size_t)vlen);
	wire_w_i32(w, (int32_t)nhdrs);
	for (size_t i = 0; i < nhdrs; i++) {
		size_t nl = strlen(hdrs[i].name) + 1;

		wire_w_i32(w, (int32_t)nl);
		wire_buf_append(w, hdrs[i].name, nl);
		wire_w_i32(w, hdrs[i].value ? (int32_t)hdrs[i].value_len : -1);
		if (hdrs[i].value && hdrs[i].value_len)
			wire_buf_append(w, hdrs[i].value, hdrs[i].value_len);
	}
	wire_buf_append(w, &opaque, sizeof(opaque));
	if (w->oom) {
		w->oom = false;
		w->len = mark;
		return SLUICE_ERR_NO_MEMORY;
	}
	if (t->npending == 0)
		t->pending_since_ms = kclock_ms();
	t->npending++;
	return 0;
}

struct pending_msg {
	int32_t partition;
	int64_t ts;
	wire_str key, value;
	int32_t nhdrs;
	sluice_header_t hdrs[64];
	void *opaque;
};

/* Decodes the next pending message; false at the end. */
static bool pending_next(wire_rd *rd, struct pending_msg *m)
{
	if (!wire_rd_left(rd))
		return false;
	m->partition = wire_rd_i32(rd);
	m->ts = wire_rd_i64(rd);
	m->key = wire_rd_bytes(rd);
	m->value = wire_rd_bytes(rd);
	m->nhdrs = wire_rd_i32(rd);
	for (int32_t i = 0; i < m->nhdrs && !rd->err; i++) {
		wire_str n = wire_rd_bytes(rd), v = wire_rd_bytes(rd);

		if (i < 64) {
			m->hdrs[i].name = n.ptr;
			m->hdrs[i].value = v.len < 0 ? NULL : v.ptr;
			m->hdrs[i].value_len = v.len < 0 ? 0 : (size_t)v.len;
		}
	}
	if (m->nhdrs > 64)
		m->nhdrs = 64;
	memcpy(&m->opaque, wire_rd_take(rd, sizeof(void *)) ?: (const uint8_t *)"\0\0\0\0\0\0\0\0",
	       sizeof(void *));
	return !rd->err;
}

/* Fails every pending message of t with err (reported like any other). */
static void pending_fail_locked(struct sluice_producer *p, struct ptopic *t, sluice_err_t err)
{
	struct batch *b;
	struct pending_msg m;
	wire_rd rd;

	if (!t->npending)
		return;
	b = batch_get(p, 0);
	if (!b)
		return;
	b->topic = t;
	b->partition = -1;
	wire_rd_init(&rd, t->pending.data, t->pending.len);
	while (pending_next(&rd, &m)) {
		/* A record with the same accounting size, never sent. */
		batch_append(b, SIZE_MAX, m.ts, m.key.len < 0 ? NULL : m.key.ptr, m.key.len,
			     m.value.len < 0 ? NULL : m.value.ptr, m.value.len, m.hdrs,
			     (size_t)m.nhdrs, m.opaque);
		b->acct_bytes += batch_record_size(0, 0, m.key.len, m.value.len, m.hdrs,
						   (size_t)m.nhdrs);
	}
	b->err = err;
	b->base_offset = -1;
	wire_buf_reset(&t->pending);
	t->npending = 0;
	finish_locked(p, b);
}

/* Metadata arrived: move pending messages into partition batches. */
static void pending_replay_locked(struct sluice_producer *p, struct ptopic *t)
{
	struct pending_msg m;
	wire_rd rd;

	wire_rd_init(&rd, t->pending.data, t->pending.len);
	while (pending_next(&rd, &m)) {
		size_t rs = batch_record_size(0, 0, m.key.len, m.value.len, m.hdrs, (size_t)m.nhdrs);
		int rc = SLUICE_ERR_UNKNOWN_PARTITION;

		if (m.partition < t->nparts)
			rc = append_locked(p, t, m.partition, m.ts, m.key.len < 0 ? NULL : m.key.ptr,
					   m.key.len, m.value.len < 0 ? NULL : m.value.ptr,
					   m.value.len, m.hdrs, (size_t)m.nhdrs, m.opaque, rs, false);
		if (rc) {
			struct batch *b = batch_get(p, 0);

			if (b) {
				b->topic = t;
				b->partition = m.partition;
				batch_append(b, SIZE_MAX, m.ts, NULL, 0, NULL, 0, NULL, 0, m.opaque);
				b->acct_bytes = rs;
				b->err = rc;
				finish_locked(p, b);
			}
		}
	}
	wire_buf_reset(&t->pending);
	t->npending = 0;
}

sluice_err_t sluice_produce(sluice_producer_t *p, const char *topic, int32_t partition,
			    const void *key, size_t keylen, const void *value, size_t len,
			    const sluice_header_t *headers, size_t nheaders, void *opaque)
{
	return sluice_produce_ex(p, topic, partition, key, keylen, value, len, headers, nheaders,
				 opaque, 0);
}

sluice_err_t sluice_produce_ex(sluice_producer_t *p, const char *topic, int32_t partition,
			       const void *key, size_t keylen, const void *value, size_t len,
			       const sluice_header_t *headers, size_t nheaders, void *opaque,
			       unsigned flags)
{
	struct ptopic *t;
	size_t rsize;
	int64_t ts;
	int rc;

	if (!p || !topic || !*topic || partition < SLUICE_PARTITION_ANY || (nheaders && !headers) ||
	    keylen > INT32_MAX || len > INT32_MAX || (flags & ~(unsigned)SLUICE_MSG_F_NOCOPY))
		return SLUICE_ERR_INVALID_ARG;
	for (size_t i = 0; i < nheaders; i++)
		if (!headers[i].name)
			return SLUICE_ERR_INVALID_ARG;
	rsize = batch_record_size(0, 0, key ? (int32_t)keylen : -1, value ? (int32_t)len : -1,
				  headers, nheaders);
	if (rsize + RECBATCH_HEADER_SIZE > (size_t)p->conf->message_max_bytes)
		return SLUICE_ERR_MSG_SIZE_TOO_LARGE;
	ts = kwall_ms();
	pthread_mutex_lock(&p->lock);
	if (p->fatal) {
		pthread_mutex_unlock(&p->lock);
		return SLUICE_ERR_FATAL;
	}
	if (p->q_msgs >= p->conf->queue_max_msgs ||
	    p->q_bytes + (int64_t)rsize > p->conf->queue_max_kbytes * 1024) {
		pthread_mutex_unlock(&p->lock);
		return SLUICE_ERR_QUEUE_FULL;
	}
	t = topic_find(p, topic);
	if (!t) {
		t = topic_add(p, topic);
		if (!t) {
			pthread_mutex_unlock(&p->lock);
			return SLUICE_ERR_NO_MEMORY;
		}
		wake_locked(p);
	}
	if (t->nparts < 0) {
		rc = pending_add(t, partition, ts, key, (int32_t)keylen, value, (int32_t)len, headers,
				 nheaders, opaque);
	} else if (partition >= t->nparts) {
		rc = SLUICE_ERR_UNKNOWN_PARTITION;
	} else {
		rc = append_locked(p, t, partition, ts, key, (int32_t)keylen, value, (int32_t)len,
				   headers, nheaders, opaque, rsize,
				   (flags & SLUICE_MSG_F_NOCOPY) && value && len >= NOCOPY_MIN_BYTES);
	}
	if (rc == 0) {
		p->q_msgs++;
		p->q_bytes += (int64_t)rsize;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* ---- I/O thread: metadata ---- */

static void metadata_cb(struct kconn *c, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct sluice_producer *p = ctx;
	int ver = req->ver;
	int64_t now = kclock_ms();
	wire_rd rd;
	int32_t n;

	pthread_mutex_lock(&p->lock);
	for (struct ptopic *t = p->topics; t; t = t->next)
		if (t->md_inflight) {
			t->md_inflight = false;
			t->md_next_ms = now + p->conf->retry_backoff_ms;
		}
	if (err) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 3)
		wire_rd_i32(&rd); /* throttle */
	n = wire_rd_array(&rd, 14);
	for (int32_t i = 0; i < n && !rd.err; i++) { /* brokers */
		wire_rd_i32(&rd);
		wire_rd_str(&rd);
		wire_rd_i32(&rd);
		wire_rd_str(&rd); /* rack, v1+ */
	}
	if (ver >= 2)
		wire_rd_str(&rd); /* cluster id */
	wire_rd_i32(&rd);         /* controller */
	n = wire_rd_array(&rd, 8);
	for (int32_t i = 0; i < n && !rd.err; i++) {
		int16_t terr = wire_rd_i16(&rd);
		wire_str name = wire_rd_str(&rd);
		int32_t np, maxidx = -1;
		struct ptopic *t = NULL;

		wire_rd_i8(&rd); /* is_internal */
		np = wire_rd_array(&rd, 18);
		for (int32_t j = 0; j < np && !rd.err; j++) {
			int32_t idx;

			wire_rd_i16(&rd);
			idx = wire_rd_i32(&rd);
			wire_rd_i32(&rd); /* leader */
			if (ver >= 7)
				wire_rd_i32(&rd);
			wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
			wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
			if (ver >= 5)
				wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
			if (idx > maxidx)
				maxidx = idx;
		}
		if (ver >= 8)
			wire_rd_i32(&rd);
		if (rd.err)
			break;
		for (struct ptopic *x = p->topics; x; x = x->next)
			if (wire_str_eq(name, x->name))
				t = x;
		if (!t || t->nparts >= 0)
			continue;
		if (terr == 0 && maxidx >= 0) {
			struct ppart *parts = calloc((size_t)maxidx + 1, sizeof(*parts));

			if (!parts)
				continue;
			for (int32_t j = 0; j <= maxidx; j++)
				parts[j].id = j;
			t->parts = parts;
			t->nparts = maxidx + 1;
			pending_replay_locked(p, t);
		} else if (terr && !sluice_err_is_retriable(terr)) {
			pending_fail_locked(p, t, terr);
			t->md_next_ms = now + 1000;
		} else if (terr == KERR_UNKNOWN_TOPIC_OR_PARTITION &&
			   t->npending && now - t->pending_since_ms > p->conf->request_timeout_ms) {
			/* auto-creation is off and the topic does not exist */
			pending_fail_locked(p, t, terr);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

static void send_metadata(struct sluice_producer *p, char **names, int n)
{
	int ver = kconn_version(&p->conn, API_METADATA, 1, 8);
	struct kreq *r;

	if (ver < 0) {
		pthread_mutex_lock(&p->lock);
		for (struct ptopic *t = p->topics; t; t = t->next)
			if (t->md_inflight) {
				t->md_inflight = false;
				pending_fail_locked(p, t, SLUICE_ERR_UNSUPPORTED_FEATURE);
			}
		pthread_mutex_unlock(&p->lock);
		return;
	}
	r = kreq_new(&p->conn, API_METADATA, (int16_t)ver);
	if (!r)
		return;
	wire_w_i32(&r->wb, n);
	for (int i = 0; i < n; i++)
		wire_w_str(&r->wb, names[i]);
	if (ver >= 4)
		wire_w_i8(&r->wb, 1); /* allow_auto_topic_creation */
	if (ver >= 8) {
		wire_w_i8(&r->wb, 0);
		wire_w_i8(&r->wb, 0);
	}
	kconn_send(&p->conn, r, metadata_cb, p);
}

/* ---- I/O thread: InitProducerId ---- */

static void set_fatal_locked(struct sluice_producer *p, sluice_err_t err, const char *why)
{
	p->fatal = err;
	snprintf(p->fatal_str, sizeof(p->fatal_str), "%s", why);
	fprintf(stderr, "libsluice: producer: %s\n", why);
	/* Fail everything queued and not in flight. */
	for (struct ptopic *t = p->topics; t; t = t->next) {
		pending_fail_locked(p, t, err);
		for (int32_t i = 0; i < t->nparts; i++) {
			struct ppart *pp = &t->parts[i];
			struct batch **bp;

			close_cur_locked(p, t, pp);
			bp = &pp->q_head;
			while (*bp) {
				struct batch *b = *bp;

				if (b->in_flight) {
					bp = &b->next;
					continue;
				}
				*bp = b->next;
				b->err = err;
				finish_locked(p, b);
			}
			pp->q_tail = NULL;
			for (struct batch *b = pp->q_head; b; b = b->next)
				pp->q_tail = b;
		}
	}
}

/* Skips the tagged fields of a flexible-version structure. */
static void skip_tags(wire_rd *rd)
{
	uint32_t n = wire_rd_uvarint(rd);

	for (uint32_t i = 0; i < n && !rd->err; i++) {
		wire_rd_uvarint(rd);
		wire_rd_take(rd, wire_rd_uvarint(rd));
	}
}

static void pid_cb(struct kconn *c, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct sluice_producer *p = ctx;
	wire_rd rd;
	int16_t kerr;
	int64_t pid;
	int16_t epoch;

	p->pid_inflight = false;
	if (err)
		return; /* reconnect and retry */
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (req->ver >= 2)
		skip_tags(&rd); /* response header v1 */
	wire_rd_i32(&rd);
	kerr = wire_rd_i16(&rd);
	pid = wire_rd_i64(&rd);
	epoch = wire_rd_i16(&rd);
	if (rd.err || (kerr && !sluice_err_is_retriable(kerr))) {
		char why[200];

		snprintf(why, sizeof(why), "InitProducerId v%d failed: %s", req->ver,
			 rd.err ? "malformed response" : sluice_err2str(kerr));
		pthread_mutex_lock(&p->lock);
		set_fatal_locked(p, rd.err ? SLUICE_ERR_BAD_MSG : kerr, why);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (kerr) {
		p->pid_retry_at = kclock_ms() + p->conf->retry_backoff_ms;
		return;
	}
	if (p->pid >= 0)
		fprintf(stderr,
			"libsluice: producer: idempotent producer re-initialised: producer id %lld "
			"epoch %d (was %lld epoch %d); sequences restart at 0\n",
			(long long)pid, epoch, (long long)p->pid, p->epoch);
	p->pid = pid;
	p->epoch = epoch;
	p->pid_ready = true;
}

/* InitProducerId: v3-4 (flexible; they carry the current id and epoch, so
 * the broker may answer a re-initialisation with the same id and the next
 * epoch, KIP-360) when the broker has them, else v0-1 (a new id each time).
 * The first call sends id -1, epoch -1. */
static void send_init_pid(struct sluice_producer *p)
{
	int ver = kconn_version(&p->conn, API_INIT_PRODUCER_ID, 3, 4);
	struct kreq *r;

	if (ver < 0)
		ver = kconn_version(&p->conn, API_INIT_PRODUCER_ID, 0, 1);
	if (ver < 0) {
		pthread_mutex_lock(&p->lock);
		set_fatal_locked(p, SLUICE_ERR_UNSUPPORTED_FEATURE,
				 "enable.idempotence=true but the broker does not support "
				 "InitProducerId (idempotent producers)");
		pthread_mutex_unlock(&p->lock);
		return;
	}
	r = kreq_new(&p->conn, API_INIT_PRODUCER_ID, (int16_t)ver);
	if (!r)
		return;
	if (ver >= 3) {
		wire_w_uvarint(&r->wb, 0); /* request header v2: no tagged fields */
		wire_w_uvarint(&r->wb, 0); /* transactional_id: null (compact) */
		wire_w_i32(&r->wb, 60000);
		wire_w_i64(&r->wb, p->pid);
		wire_w_i16(&r->wb, p->epoch);
		wire_w_uvarint(&r->wb, 0);
	} else {
		wire_w_str(&r->wb, NULL);
		wire_w_i32(&r->wb, 60000);
	}
	p->pid_inflight = true;
	kconn_send(&p->conn, r, pid_cb, p);
}

/* ---- I/O thread: produce ---- */

struct preq {
	struct sluice_producer *p;
	int n;
	struct batch *b[];
};

static void unlink_batch(struct ppart *pp, struct batch *b)
{
	struct batch **bp = &pp->q_head, *prev = NULL;

	while (*bp && *bp != b) {
		prev = *bp;
		bp = &(*bp)->next;
	}
	if (!*bp)
		return;
	*bp = b->next;
	if (pp->q_tail == b)
		pp->q_tail = prev;
	b->next = NULL;
}

/* The producer id and epoch a sealed batch carries. */
static bool batch_is_current(const struct sluice_producer *p, const struct batch *b)
{
	return b->buf && b->sealed &&
	       (int64_t)wire_get64(b->buf + RECBATCH_OFF_PRODUCER_ID) == p->pid &&
	       (int16_t)wire_get16(b->buf + RECBATCH_OFF_PRODUCER_EPOCH) == p->epoch;
}

/* Asks for a re-initialisation (see the top of this file).  Lock held. */
static void bump_request_locked(struct sluice_producer *p, const struct batch *b, int err)
{
	if (p->bump)
		return;
	p->bump = true;
	fprintf(stderr,
		"libsluice: producer: %s [%d]: %s for base sequence %d (producer id %lld epoch "
		"%d): re-initialising the idempotent producer once the requests in flight are "
		"answered\n",
		b->topic->name, b->partition, sluice_err2name(err), b->base_seq, (long long)p->pid,
		p->epoch);
}

/* True once a requested re-initialisation can go ahead: nothing in flight
 * and no partition head that may be in the log under the current id.
 * Lock held, I/O thread. */
static bool bump_ready_locked(struct sluice_producer *p)
{
	if (p->inflight_reqs)
		return false;
	for (struct ptopic *t = p->topics; t; t = t->next)
		for (int32_t i = 0; i < t->nparts; i++)
			if (t->parts[i].q_head && t->parts[i].q_head->err == MAYBE_WRITTEN)
				return false;
	return true;
}

/* The re-initialisation itself: every queued batch (none is in flight) gets
 * a new sequence from 0 when it is next sent, under the id and epoch the
 * next InitProducerId returns.  Lock held, I/O thread. */
static void bump_locked(struct sluice_producer *p)
{
	for (struct ptopic *t = p->topics; t; t = t->next)
		for (int32_t i = 0; i < t->nparts; i++) {
			struct ppart *pp = &t->parts[i];

			pp->next_seq = 0;
			pp->acked_end = 0;
			for (struct batch *b = pp->q_head; b; b = b->next) {
				b->base_seq = -1; /* resealed by send_produce */
				b->err = 0;
			}
		}
	p->bump = false;
	p->bumps_since_ack++;
	p->pid_ready = false; /* io_main sends InitProducerId */
}

/* UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER for b (not in flight
 * any more, still queued).  Returns true if b stays queued for a retry;
 * false if the producer failed (b has been finished with the fatal error).
 * Lock held. */
static bool seq_error_locked(struct sluice_producer *p, struct ppart *pp, struct batch *b, int err,
			     int64_t log_start, int64_t now)
{
	char why[300];

	b->retry_at_ms = now;
	if (!batch_is_current(p, b) || b != pp->q_head) {
		/* Sent before a re-initialisation, or refused because an
		 * earlier batch of the partition is missing (that one decides
		 * what happens).  Either way the broker did not append it; the
		 * attempt does not count. */
		b->attempts--;
		return true;
	}
	/* The head: everything before it was acknowledged, the broker does not
	 * have it (a batch it has would be a duplicate, answered with its
	 * offset: the broker keeps the last 5 batches, libsluice sends at most
	 * 5 per partition) and lost what came before.  An earlier attempt of b
	 * that got no answer may still have been appended and then deleted
	 * together with the producer state, by retention, only if the log no
	 * longer holds our last acknowledged record. */
	if (err == KERR_UNKNOWN_PRODUCER_ID && b->err == MAYBE_WRITTEN &&
	    !(log_start >= 0 && pp->acked_end > 0 && log_start < pp->acked_end)) {
		snprintf(why, sizeof(why),
			 "%s [%d]: UNKNOWN_PRODUCER_ID for base sequence %d, which an earlier "
			 "attempt without answer may have written before the broker deleted its "
			 "producer state (log start offset %lld, last acknowledged offset %lld): "
			 "resending it could duplicate it, so the producer stops",
			 b->topic->name, b->partition, b->base_seq, (long long)log_start,
			 (long long)pp->acked_end - 1);
		set_fatal_locked(p, SLUICE_ERR_FATAL, why);
		return false;
	}
	if (p->bumps_since_ack >= MAX_BUMPS_WITHOUT_ACK) {
		snprintf(why, sizeof(why),
			 "%s [%d]: %s again after %d re-initialisations without an acknowledged "
			 "batch: the broker keeps losing the producer state",
			 b->topic->name, b->partition, sluice_err2name(err), p->bumps_since_ack);
		set_fatal_locked(p, SLUICE_ERR_FATAL, why);
		return false;
	}
	b->attempts--;
	b->err = 0;
	bump_request_locked(p, b, err);
	return true;
}

/* One batch's outcome: err 0 and base_offset, a Kafka error (with the
 * partition's log start offset, -1 if unknown) or a local one.  Called with
 * lock held. */
static void batch_outcome_locked(struct sluice_producer *p, struct batch *b, int err,
				 int64_t base_offset, int64_t log_start, int64_t now)
{
	struct ppart *pp = &b->topic->parts[b->partition];
	bool expired = p->conf->message_timeout_ms &&
		       now - b->created_ms > p->conf->message_timeout_ms;

	b->in_flight = false;
	pp->inflight--;
	if (err == KERR_DUPLICATE_SEQUENCE_NUMBER)
		err = 0; /* the broker already has it */
	if (err && p->fatal) {
		err = p->fatal; /* nothing is retried any more */
	} else if (p->conf->idempotence && (err == KERR_UNKNOWN_PRODUCER_ID ||
					    err == KERR_OUT_OF_ORDER_SEQUENCE_NUMBER)) {
		if (!p->terminate && !expired)
			seq_error_locked(p, pp, b, err, log_start, now);
		else
			goto finish;
		return;
	}
	/* No answer: it may have been appended (NO_MEMORY: the request was
	 * never built, so it was not sent). */
	if (err < 0 && err != SLUICE_ERR_NO_MEMORY)
		b->err = MAYBE_WRITTEN;
	if (err && (sluice_err_is_retriable(err) || err == SLUICE_ERR_TRANSPORT ||
		    err == SLUICE_ERR_NO_MEMORY) &&
	    !p->terminate && !expired && b->attempts <= p->conf->retries && !p->fatal) {
		b->retry_at_ms = now + p->conf->retry_backoff_ms;
		return;
	}
	if (err && expired && sluice_err_is_retriable(err))
		err = SLUICE_ERR_MSG_TIMED_OUT;
finish:
	if (!err && base_offset >= 0) {
		pp->acked_end = base_offset + b->count;
		p->bumps_since_ack = 0;
	}
	unlink_batch(pp, b);
	b->err = err;
	b->base_offset = err ? -1 : base_offset;
	finish_locked(p, b);
}

static void produce_cb(struct kconn *c, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct preq *pr = ctx;
	struct sluice_producer *p = pr->p;
	int64_t now = kclock_ms();
	int64_t offsets[pr->n], log_starts[pr->n];
	int errs[pr->n];
	wire_rd rd;
	int32_t nt;

	p->inflight_reqs--;
	for (int i = 0; i < pr->n; i++) {
		errs[i] = err ? err : SLUICE_ERR_BAD_MSG;
		offsets[i] = log_starts[i] = -1;
	}
	if (!err && !resp) { /* acks=0: written is all we learn */
		for (int i = 0; i < pr->n; i++)
			errs[i] = 0;
	} else if (!err) {
		wire_rd_init(&rd, resp->data + 4, resp->len - 4);
		nt = wire_rd_array(&rd, 6);
		for (int32_t i = 0; i < nt && !rd.err; i++) {
			wire_str name = wire_rd_str(&rd);
			int32_t np = wire_rd_array(&rd, 14);

			for (int32_t j = 0; j < np && !rd.err; j++) {
				int32_t idx = wire_rd_i32(&rd);
				int16_t perr = wire_rd_i16(&rd);
				int64_t base = wire_rd_i64(&rd), log_start = -1;

				wire_rd_i64(&rd); /* log append time (v2+) */
				if (req->ver >= 5)
					log_start = wire_rd_i64(&rd);
				if (req->ver >= 8) {
					int32_t ne = wire_rd_array(&rd, 6);

					for (int32_t k = 0; k < ne && !rd.err; k++) {
						wire_rd_i32(&rd);
						wire_rd_str(&rd);
					}
					wire_rd_str(&rd);
				}
				if (rd.err)
					break;
				for (int k = 0; k < pr->n; k++)
					if (pr->b[k]->partition == idx &&
					    wire_str_eq(name, pr->b[k]->topic->name)) {
						errs[k] = perr == -1 ? SLUICE_ERR_UNKNOWN_SERVER_ERROR : perr;
						offsets[k] = base;
						log_starts[k] = log_start;
					}
			}
		}
		if (rd.err)
			for (int i = 0; i < pr->n; i++)
				errs[i] = SLUICE_ERR_BAD_MSG;
	}
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < pr->n; i++)
		batch_outcome_locked(p, pr->b[i], errs[i], offsets[i], log_starts[i], now);
	pthread_mutex_unlock(&p->lock);
	free(pr);
}

/* Collects sendable batches (at most one per partition), marks them in
 * flight.  *more is set if a partition has another closed batch behind the
 * one taken (sendable by the next round).  Called with lock held. */
static int collect_locked(struct sluice_producer *p, struct batch **out, int max, int64_t now,
			  int64_t *next_ms, size_t max_bytes, bool *more)
{
	int n = 0;
	size_t bytes = 0;

	for (struct ptopic *t = p->topics; t && n < max; t = t->next)
		for (int32_t i = 0; i < t->nparts && n < max; i++) {
			struct ppart *pp = &t->parts[i];
			struct batch *b = pp->q_head;

			if (pp->inflight >= MAX_INFLIGHT_PER_PART)
				continue;
			/* Waiting for a re-initialisation: only heads that may be
			 * in the log are resent (same id, same bytes) until the
			 * broker answers them. */
			if (p->bump && (!b || b->in_flight || b->err != MAYBE_WRITTEN))
				continue;
			while (b && b->in_flight)
				b = b->next;
			if (!b)
				continue;
			if (b->retry_at_ms > now) {
				if (b->retry_at_ms < *next_ms)
					*next_ms = b->retry_at_ms;
				continue;
			}
			/* Idempotence: a retried batch must wait until the batches
			 * before it are out of flight (resend in order). */
			if (p->conf->idempotence && b->attempts > 0 && b != pp->q_head)
				continue;
			if (n > 0 && bytes + batch_wire_len(b) > max_bytes)
				continue;
			b->in_flight = true;
			b->attempts++;
			pp->inflight++;
			bytes += batch_wire_len(b);
			out[n++] = b;
			if (b->next)
				*more = true;
		}
	return n;
}

static void send_produce(struct sluice_producer *p, struct batch **bs, int n)
{
	struct preq *pr = malloc(sizeof(*pr) + (size_t)n * sizeof(struct batch *));
	struct kreq *r;
	int i = 0;

	if (!pr)
		goto oom;
	pr->p = p;
	pr->n = n;
	/* Seal outside the lock: closed batches belong to this thread. */
	for (i = 0; i < n; i++) {
		struct batch *b = bs[i];

		pr->b[i] = b;
		if (!b->sealed || (p->conf->idempotence && b->base_seq < 0)) {
			if (p->conf->idempotence) {
				struct ppart *pp = &b->topic->parts[b->partition];
				int32_t seq = b->base_seq >= 0 ? b->base_seq : pp->next_seq;

				if (b->base_seq < 0)
					pp->next_seq += b->count;
				batch_seal(b, p->pid, p->epoch, seq);
			} else {
				batch_seal(b, -1, -1, -1);
			}
		}
	}
	r = kreq_new(&p->conn, API_PRODUCE, (int16_t)p->produce_ver);
	if (!r) {
		free(pr);
		goto oom;
	}
	r->no_response = p->conf->acks == 0;
	wire_w_str(&r->wb, NULL); /* transactional_id */
	wire_w_i16(&r->wb, (int16_t)p->conf->acks);
	wire_w_i32(&r->wb, p->conf->request_timeout_ms);
	/* Group by topic: batches of one topic are adjacent because collect
	 * walks topic by topic. */
	{
		int ntopics = 0;

		for (i = 0; i < n; i++)
			if (i == 0 || bs[i]->topic != bs[i - 1]->topic)
				ntopics++;
		wire_w_i32(&r->wb, ntopics);
		for (i = 0; i < n;) {
			int j = i;

			while (j < n && bs[j]->topic == bs[i]->topic)
				j++;
			wire_w_str(&r->wb, bs[i]->topic->name);
			wire_w_i32(&r->wb, j - i);
			for (int k = i; k < j; k++) {
				wire_w_i32(&r->wb, bs[k]->partition);
				struct batch *b = bs[k];
				size_t pos = 0;

				wire_w_i32(&r->wb, (int32_t)batch_wire_len(b));
				/* buf pieces and the values kept by reference, in
				 * wire order: written with one writev, never copied */
				for (int e = 0; e < b->n_ext; e++) {
					kreq_splice(r, b->buf + pos, b->ext[e].at - pos);
					kreq_splice(r, b->ext[e].p, b->ext[e].len);
					pos = b->ext[e].at;
				}
				kreq_splice(r, b->buf + pos, b->len - pos);
			}
			i = j;
		}
	}
	p->inflight_reqs++;
	kconn_send(&p->conn, r, produce_cb, pr);
	return;
oom:
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < n; i++)
		batch_outcome_locked(p, bs[i], SLUICE_ERR_NO_MEMORY, -1, -1, kclock_ms());
	pthread_mutex_unlock(&p->lock);
}

/* Closes lingering batches, expires old ones, lists topics needing
 * metadata.  Returns the next deadline.  Lock held. */
static int64_t housekeeping_locked(struct sluice_producer *p, int64_t now, char **md_names,
				   int *nmd, int max_md)
{
	int64_t next = now + 1000;
	int64_t mto = p->conf->message_timeout_ms;

	for (struct ptopic *t = p->topics; t; t = t->next) {
		if (t->nparts < 0) {
			if (!t->md_inflight && now >= t->md_next_ms && *nmd < max_md &&
			    kconn_up(&p->conn)) {
				t->md_inflight = true;
				md_names[(*nmd)++] = t->name;
			} else if (!t->md_inflight && t->md_next_ms < next) {
				next = t->md_next_ms;
			}
			if (t->npending && mto && now - t->pending_since_ms > mto)
				pending_fail_locked(p, t, SLUICE_ERR_MSG_TIMED_OUT);
			continue;
		}
		for (int32_t i = 0; i < t->nparts; i++) {
			struct ppart *pp = &t->parts[i];

			if (pp->cur) {
				int64_t due = pp->cur->created_ms + p->conf->linger_ms;

				if (due <= now || p->flush_req || p->terminate)
					close_cur_locked(p, t, pp);
				else if (due < next)
					next = due;
			}
			if (mto && pp->q_head && !pp->q_head->in_flight &&
			    now - pp->q_head->created_ms > mto) {
				/* Expire waiting batches (not in flight) at the head. */
				while (pp->q_head && !pp->q_head->in_flight &&
				       now - pp->q_head->created_ms > mto) {
					struct batch *b = pp->q_head;

					unlink_batch(pp, b);
					b->err = SLUICE_ERR_MSG_TIMED_OUT;
					finish_locked(p, b);
				}
			}
		}
	}
	return next;
}

static bool nothing_left_locked(struct sluice_producer *p)
{
	for (struct ptopic *t = p->topics; t; t = t->next) {
		if (t->npending)
			return false;
		for (int32_t i = 0; i < t->nparts; i++)
			if (t->parts[i].cur || t->parts[i].q_head)
				return false;
	}
	return true;
}

static void *io_main(void *arg)
{
	struct sluice_producer *p = arg;
	char *md_names[64];
	struct batch *bs[256];

	for (;;) {
		int64_t now = kclock_ms(), next;
		struct pollfd pfd[2];
		int nmd = 0, n = 0, timeout;
		bool stop, more = false, was_up;

		if (!kconn_up(&p->conn) && now >= p->reconnect_at) {
			int rc = kconn_connect(&p->conn, p->conf->request_timeout_ms < 10000
								 ? p->conf->request_timeout_ms
								 : 10000);

			now = kclock_ms();
			if (rc) {
				p->reconnect_at = now + (p->conf->reconnect_backoff_ms ?: 1);
			} else {
				p->produce_ver = kconn_version(&p->conn, API_PRODUCE, PRODUCE_MIN_VER,
							       PRODUCE_MAX_VER);
				if (p->produce_ver < 0) {
					pthread_mutex_lock(&p->lock);
					set_fatal_locked(p, SLUICE_ERR_UNSUPPORTED_FEATURE,
							 "the broker supports no Produce version in 3..8");
					pthread_mutex_unlock(&p->lock);
				}
			}
		}
		was_up = kconn_up(&p->conn);
		if (kconn_up(&p->conn) && p->conf->idempotence && !p->pid_ready && !p->pid_inflight &&
		    !p->fatal && now >= p->pid_retry_at)
			send_init_pid(p);

		pthread_mutex_lock(&p->lock);
		p->wake_pending = false;
		next = housekeeping_locked(p, now, md_names, &nmd, 64);
		if (kconn_up(&p->conn) && p->produce_ver >= 0 && !p->fatal &&
		    (!p->conf->idempotence || p->pid_ready) &&
		    p->inflight_reqs < p->conf->max_in_flight)
			n = collect_locked(p, bs, 256, now, &next,
					   (size_t)p->conf->message_max_bytes * 4 + (16u << 20), &more);
		if (p->bump && !n && !p->fatal && bump_ready_locked(p)) {
			bump_locked(p);
			more = true; /* InitProducerId goes out in the next round */
		}
		if (!p->pid_ready && p->pid_retry_at > now && p->pid_retry_at < next)
			next = p->pid_retry_at;
		stop = p->terminate && nothing_left_locked(p);
		pthread_mutex_unlock(&p->lock);
		if (stop)
			break;
		if (nmd)
			send_metadata(p, md_names, nmd);
		if (n)
			send_produce(p, bs, n);

		pfd[0].fd = p->wakefd;
		pfd[0].events = POLLIN;
		pfd[1].fd = p->conn.fd;
		pfd[1].events = kconn_events(&p->conn);
		/* Write what was just queued without waiting for poll. */
		if (kconn_up(&p->conn) && (pfd[1].events & POLLOUT))
			kconn_io(&p->conn, POLLOUT, kclock_ms());
		pfd[1].fd = p->conn.fd;
		pfd[1].events = kconn_events(&p->conn);
		now = kclock_ms();
		if (!kconn_up(&p->conn) && p->reconnect_at < next)
			next = p->reconnect_at;
		{
			int tc = kconn_check_timeouts(&p->conn, now);

			if (now + tc < next)
				next = now + tc;
		}
		/* More may be sendable at once: collect takes one batch per
		 * partition per request, so a partition's next batch (up to
		 * MAX_INFLIGHT_PER_PART in flight) needs another round, and with
		 * acks=0 the request just written has already completed.
		 * Without this the thread slept until the next response or
		 * housekeeping deadline (1 s with acks=0) with batches ready. */
		if (n == 256 || nmd || more)
			next = now;
		timeout = next > now ? (int)(next - now) : 0;
		if (n && p->inflight_reqs >= p->conf->max_in_flight)
			timeout = next > now ? (int)(next - now) : 0;
		pthread_mutex_lock(&p->lock);
		if (p->wake_pending)
			timeout = 0;
		p->io_sleep_until = now + timeout;
		if (p->io_sleep_until == 0)
			p->io_sleep_until = 1;
		pthread_mutex_unlock(&p->lock);
		if (poll(pfd, pfd[1].fd >= 0 ? 2 : 1, timeout) > 0) {
			if (pfd[0].revents & POLLIN) {
				uint64_t v;

				if (read(p->wakefd, &v, sizeof(v)) < 0) {
					/* nothing to do: EAGAIN */
				}
			}
			if (pfd[1].fd >= 0 && pfd[1].revents)
				kconn_io(&p->conn, pfd[1].revents, kclock_ms());
		}
		pthread_mutex_lock(&p->lock);
		p->io_sleep_until = 0;
		pthread_mutex_unlock(&p->lock);
		/* Lost during this round: reconnect after the backoff.  (Only
		 * then: re-arming whenever the deadline had passed postponed the
		 * reconnection forever when the thread woke only for it.) */
		if (was_up && !kconn_up(&p->conn))
			p->reconnect_at = kclock_ms() + p->conf->reconnect_backoff_ms;
	}
	kconn_close(&p->conn, SLUICE_ERR_DESTROYED, NULL);
	return NULL;
}

/* ---- public ---- */

sluice_producer_t *sluice_producer_new(sluice_conf_t *conf, char *errstr, size_t errstr_size)
{
	struct sluice_producer *p;

	if (!conf) {
		conf_errf(errstr, errstr_size, "conf must not be NULL");
		return NULL;
	}
	if (conf_finalize(conf, errstr, errstr_size))
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p) {
		conf_errf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	p->conf = conf;
	p->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->wakefd < 0) {
		conf_errf(errstr, errstr_size, "eventfd: %s", strerror(errno));
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->poll_lock, NULL);
	pthread_cond_init(&p->dr_cond, NULL);
	{
		/* Enough spare buffers for a full queue of full batches. */
		int64_t qb = conf->queue_max_kbytes * 1024 / ((int64_t)conf->batch_size + 64) + 8;

		p->pool_max = qb < FREE_BATCHES_MIN	 ? FREE_BATCHES_MIN
			      : qb > FREE_BATCHES_LIMIT ? FREE_BATCHES_LIMIT
							: (int)qb;
	}
	p->bufpool = calloc((size_t)p->pool_max, sizeof(*p->bufpool));
	if (!p->bufpool) {
		conf_errf(errstr, errstr_size, "out of memory");
		close(p->wakefd);
		free(p);
		return NULL;
	}
	kconn_init(&p->conn, conf);
	p->pid = -1;
	p->epoch = -1;
	p->rnd = (uint64_t)kwall_ms() * 0x9E3779B97F4A7C15ull ^ (uintptr_t)p;
	if (!p->rnd)
		p->rnd = 1;
	if (pthread_create(&p->thr, NULL, io_main, p)) {
		conf_errf(errstr, errstr_size, "cannot start the I/O thread");
		close(p->wakefd);
		pthread_mutex_destroy(&p->lock);
		pthread_mutex_destroy(&p->poll_lock);
		pthread_cond_destroy(&p->dr_cond);
		free(p->bufpool);
		free(p);
		return NULL;
	}
	/* conf now belongs to p (freed in destroy). */
	return p;
}

int sluice_producer_poll(sluice_producer_t *p, int timeout_ms)
{
	struct batch *list;
	int served = 0;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->poll_lock);
	pthread_mutex_lock(&p->lock);
	if (!p->dr_head && timeout_ms != 0) {
		struct timespec ts;

		if (timeout_ms < 0) {
			pthread_cond_wait(&p->dr_cond, &p->lock);
		} else {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += timeout_ms / 1000;
			ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&p->dr_cond, &p->lock, &ts);
		}
	}
	list = p->dr_head;
	p->dr_head = p->dr_tail = NULL;
	pthread_mutex_unlock(&p->lock);
	while (list) {
		struct batch *b = list;
		sluice_delivery_t dr;

		list = b->next;
		dr.topic = b->topic->name;
		dr.partition = b->partition;
		dr.err = b->err;
		for (int32_t i = 0; i < b->count; i++) {
			dr.offset = b->err || b->base_offset < 0 ? -1 : b->base_offset + i;
			dr.timestamp = b->base_ts;
			dr.opaque = b->opaques ? b->opaques[i] : NULL;
			p->conf->dr_cb(p, &dr, p->conf->dr_ctx);
		}
		served += b->count;
		pthread_mutex_lock(&p->lock);
		p->q_msgs -= b->count;
		p->q_bytes -= (int64_t)b->acct_bytes;
		batch_put(p, b);
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_unlock(&p->poll_lock);
	return served;
}

sluice_err_t sluice_producer_flush(sluice_producer_t *p, int timeout_ms)
{
	int64_t deadline = kclock_ms() + timeout_ms;
	sluice_err_t rc = SLUICE_ERR_NO_ERROR;

	if (!p)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&p->lock);
	p->flush_req++;
	wake_locked(p);
	pthread_mutex_unlock(&p->lock);
	for (;;) {
		int64_t left = deadline - kclock_ms();
		int64_t q;

		pthread_mutex_lock(&p->lock);
		q = p->q_msgs;
		pthread_mutex_unlock(&p->lock);
		if (q == 0)
			break;
		if (timeout_ms >= 0 && left <= 0) {
			rc = SLUICE_ERR_TIMED_OUT;
			break;
		}
		if (p->conf->dr_cb)
			sluice_producer_poll(p, timeout_ms < 0 ? 100 : (int)(left < 100 ? left : 100));
		else {
			struct timespec ts = { 0, 1000000 };

			pthread_mutex_lock(&p->lock);
			if (p->q_msgs)
				nanosleep(&ts, NULL);
			pthread_mutex_unlock(&p->lock);
		}
	}
	pthread_mutex_lock(&p->lock);
	p->flush_req--;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

int sluice_producer_outq_len(sluice_producer_t *p)
{
	int64_t q;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	q = p->q_msgs;
	pthread_mutex_unlock(&p->lock);
	return (int)q;
}

void sluice_producer_destroy(sluice_producer_t *p)
{
	if (!p)
		return;
	sluice_producer_flush(p, p->conf->request_timeout_ms);
	pthread_mutex_lock(&p->lock);
	p->terminate = true;
	/* Whatever is still queued fails now. */
	for (struct ptopic *t = p->topics; t; t = t->next) {
		pending_fail_locked(p, t, SLUICE_ERR_DESTROYED);
		for (int32_t i = 0; i < t->nparts; i++) {
			struct ppart *pp = &t->parts[i];

			close_cur_locked(p, t, pp);
			for (struct batch *b = pp->q_head, *nx; b; b = nx) {
				nx = b->next;
				if (!b->in_flight) {
					unlink_batch(pp, b);
					b->err = SLUICE_ERR_DESTROYED;
					finish_locked(p, b);
				}
			}
		}
	}
	wake_locked(p);
	pthread_mutex_unlock(&p->lock);
	/* In-flight requests fail with DESTROYED when the thread closes the
	 * connection; terminate prevents their retry. */
	pthread_mutex_lock(&p->lock);
	pthread_mutex_unlock(&p->lock);
	{
		/* The I/O thread stops once nothing is left; in-flight batches
		 * finish with their response or when the connection closes. */
		int64_t deadline = kclock_ms() + p->conf->request_timeout_ms;

		for (;;) {
			bool left;

			pthread_mutex_lock(&p->lock);
			left = !nothing_left_locked(p);
			pthread_mutex_unlock(&p->lock);
			if (!left || kclock_ms() > deadline)
				break;
			sluice_producer_poll(p, 10);
		}
		pthread_mutex_lock(&p->lock);
		if (!nothing_left_locked(p)) {
			/* Give up: close the connection from here is not allowed
			 * (it belongs to the thread); ask it to by clearing queues. */
			for (struct ptopic *t = p->topics; t; t = t->next)
				for (int32_t i = 0; i < t->nparts; i++)
					for (struct batch *b = t->parts[i].q_head; b; b = b->next)
						b->retry_at_ms = INT64_MAX;
		}
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_lock(&p->lock);
	for (struct ptopic *t = p->topics; t; t = t->next)
		for (int32_t i = 0; i < t->nparts; i++)
			while (t->parts[i].q_head) {
				struct batch *b = t->parts[i].q_head;

				t->parts[i].q_head = b->next;
				if (b->in_flight) {
					/* still referenced by a request: the thread's
					 * kconn_close completes it after join */
					continue;
				}
				b->err = SLUICE_ERR_DESTROYED;
				finish_locked(p, b);
			}
	p->terminate = true;
	wake_locked(p);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thr, NULL);
	sluice_producer_poll(p, 0);
	/* Free everything. */
	while (p->topics) {
		struct ptopic *t = p->topics;

		p->topics = t->next;
		for (int32_t i = 0; i < t->nparts; i++)
			if (t->parts[i].cur) {
				batch_free(t->parts[i].cur);
				free(t->parts[i].cur);
			}
		free(t->parts);
		wire_buf_free(&t->pending);
		free(t->name);
		free(t);
	}
	while (p->free_batches) {
		struct batch *b = p->free_batches;

		p->free_batches = b->next;
		batch_free(b);
		free(b);
	}
	while (p->nbufpool)
		free(p->bufpool[--p->nbufpool]);
	free(p->bufpool);
	close(p->wakefd);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->poll_lock);
	pthread_cond_destroy(&p->dr_cond);
	sluice_conf_destroy(p->conf);
	free(p);
}
