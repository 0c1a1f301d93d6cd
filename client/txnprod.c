/*
 * txnprod.c — sluice_txn_producer_t: RocketMQ-style transactional messages
 * (prepare a half message → local transaction → commit/rollback, and
 * check-back answered from the application's database).  Public contract
 * in sluice.h ("Transactional producer"); broker side in
 * docs/transactions.md.
 *
 * Owns: its conf; a pool of idle connections (`idle`, under `lock`: a
 * calling thread takes one for the whole call, so concurrent calls run in
 * parallel on separate sockets, and gives it back); a topic → partition
 * count cache for key partitioning (under `lock`); the check thread and
 * its connection (that thread only); the I/O thread of the asynchronous
 * calls and its two connections (that thread only): prepares pipelined on
 * one, ends (first sends and retries) on the other.  A connection answers
 * in request order, so an end sharing the prepares' connection would wait
 * for the answers of every prepare sent before it (each held by the
 * broker's fsync) even when the broker has its own answer ready sooner.
 *
 * Threads: every public call is thread-safe.  The check thread long-polls
 * TxnCheckPoll (v1 carries transaction.instance.id, so the broker asks this
 * instance first about the transactions it prepared) and answers each
 * check with TxnEnd after running the application's check callback.
 */
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "conf.h"
#include "kconn.h"
#include "txnwire.h"

#define CHECK_WAIT_MS 500 /* poll length: also how soon destroy stops the thread */
#define CHECK_MAX_TXNS 64
#define TOPIC_CACHE_MAX 64

struct txconn {
	struct txconn *next;
	struct kconn kc;
	struct batch b; /* the half message being prepared; its buffer is reused
			   (at most message.max.bytes per pooled connection) */
};

struct tcache {
	char topic[256];
	int32_t nparts;
};

/* One asynchronous prepare or end (txn_prepare_async / txn_end_async).
 * Recycled through the producer's free list with its batch buffer, so a
 * steady stream of transactions allocates nothing. */
enum { AOP_PREPARE, AOP_END };
struct aop {
	struct aop *next;
	int kind;
	int ver;              /* version of the request sent */
	char topic[256];      /* prepare */
	int32_t partition;    /* prepare: the requested one */
	struct batch b;       /* prepare: the half message */
	int64_t txn_id;       /* end */
	int decision;         /* end */
	int64_t deadline_ms;  /* end: retries stop here */
	int64_t retry_at_ms;  /* end: waiting in the retry list until then */
	sluice_txn_prepared_cb *prepared;
	sluice_txn_ended_cb *ended;
	void *opaque;
	char errstr[256];
};

/* One of the I/O thread's connections (indexed by AK_*), connected lazily
 * and retried after reconnect.backoff.ms independently of the other. */
enum { AK_PREPARE, AK_END, AK_N };
struct aconn {
	struct kconn kc; /* aop_cb gets &kc: aconn_of() finds the rest */
	struct sluice_txn_producer *p;
	int64_t reconnect_at_ms;
};

struct sluice_txn_producer {
	struct sluice_conf *conf; /* owned; read-only after new() */
	char instance[256];
	pthread_mutex_t lock; /* idle, topics */
	struct txconn *idle;
	struct tcache topics[TOPIC_CACHE_MAX];
	int ntopics;
	sluice_admin_t *admin; /* metadata lookups; its own lock */
	pthread_t check_thr;
	bool check_started;
	atomic_bool stop;
	/* Asynchronous calls: the queue and free list under alock, the rest
	 * (ac, retries) owned by the I/O thread. */
	pthread_mutex_t alock;
	struct aop *aq_head, *aq_tail; /* queued, not yet sent */
	struct aop *afree;
	bool astop, wake_pending, io_started;
	int wakefd;
	pthread_t io_thr;
	struct aconn ac[AK_N];
	struct aop *retries;  /* ends waiting for their retry (on ac[AK_END]) */
};

static struct aconn *aconn_of(struct kconn *c)
{
	return (struct aconn *)((char *)c - offsetof(struct aconn, kc));
}

/* ---- connection pool ---- */

static void conn_put(struct sluice_txn_producer *p, struct txconn *c)
{
	pthread_mutex_lock(&p->lock);
	c->next = p->idle;
	p->idle = c;
	pthread_mutex_unlock(&p->lock);
}

/* A connected connection for this thread's call, or NULL with *err. */
static struct txconn *conn_get(struct sluice_txn_producer *p, sluice_err_t *err, char *errstr,
			       size_t errstr_size)
{
	struct txconn *c;
	int rc;

	pthread_mutex_lock(&p->lock);
	c = p->idle;
	if (c)
		p->idle = c->next;
	pthread_mutex_unlock(&p->lock);
	if (!c) {
		if (!(c = calloc(1, sizeof(*c))) || batch_init(&c->b, 256)) {
			free(c);
			*err = SLUICE_ERR_NO_MEMORY;
			return NULL;
		}
		kconn_init(&c->kc, p->conf);
	}
	if (kconn_up(&c->kc))
		return c;
	rc = kconn_connect(&c->kc, p->conf->request_timeout_ms);
	if (rc) {
		conf_errf(errstr, errstr_size, "cannot reach the broker: %s", c->kc.errstr);
		*err = (sluice_err_t)rc;
		conn_put(p, c); /* closed; the next call reconnects it */
		return NULL;
	}
	return c;
}

static void conns_free(struct txconn *c)
{
	while (c) {
		struct txconn *next = c->next;

		kconn_close(&c->kc, SLUICE_ERR_DESTROYED, NULL);
		batch_free(&c->b);
		free(c);
		c = next;
	}
}

/* ---- partitioning ---- */

/* The partition count of topic, from the cache or a Metadata lookup.
 * Returns > 0 or a negative/broker error. */
static int32_t topic_nparts(struct sluice_txn_producer *p, const char *topic, char *errstr,
			    size_t errstr_size)
{
	sluice_topic_list_t *l = NULL;
	const sluice_topic_info_t *ti;
	int32_t n = 0;
	sluice_err_t err;

	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < p->ntopics && !n; i++)
		if (!strcmp(p->topics[i].topic, topic))
			n = p->topics[i].nparts;
	pthread_mutex_unlock(&p->lock);
	if (n > 0)
		return n;
	err = sluice_admin_list_topics(p->admin, topic, &l, p->conf->request_timeout_ms);
	if (err) {
		conf_errf(errstr, errstr_size, "metadata of \"%s\": %s", topic, sluice_err2str(err));
		return err;
	}
	ti = sluice_topic_list_count(l) ? sluice_topic_list_get(l, 0) : NULL;
	if (!ti || ti->err || ti->partition_count <= 0) {
		err = ti && ti->err ? ti->err : SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION;
		conf_errf(errstr, errstr_size, "topic \"%s\": %s", topic, sluice_err2str(err));
		sluice_topic_list_destroy(l);
		return err;
	}
	n = ti->partition_count;
	sluice_topic_list_destroy(l);
	pthread_mutex_lock(&p->lock);
	if (strlen(topic) < sizeof(p->topics[0].topic)) {
		struct tcache *t = &p->topics[p->ntopics < TOPIC_CACHE_MAX ? p->ntopics++ : 0];

		snprintf(t->topic, sizeof(t->topic), "%s", topic);
		t->nparts = n;
	}
	pthread_mutex_unlock(&p->lock);
	return n;
}

static void topic_forget(struct sluice_txn_producer *p, const char *topic)
{
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < p->ntopics; i++)
		if (!strcmp(p->topics[i].topic, topic))
			p->topics[i] = p->topics[--p->ntopics];
	pthread_mutex_unlock(&p->lock);
}

/* ---- prepare / end ---- */

/* Builds the half message in b (reset first): one RecordBatch v2 with one
 * record (producer fields -1: the broker stamps its own at commit). */
static sluice_err_t build_batch(struct sluice_txn_producer *p, struct batch *b, const void *key,
				size_t key_len, const void *value, size_t value_len,
				const sluice_header_t *hdrs, size_t nhdrs, char *errstr,
				size_t errstr_size)
{
	batch_reset(b);
	if (batch_append(b, SIZE_MAX, kwall_ms(), key, key ? (int32_t)key_len : -1, value,
			 value ? (int32_t)value_len : -1, hdrs, nhdrs, NULL) < 0)
		return SLUICE_ERR_NO_MEMORY;
	batch_seal(b, -1, -1, -1);
	if (b->len > (size_t)p->conf->message_max_bytes) {
		conf_errf(errstr, errstr_size, "message of %zu bytes exceeds message.max.bytes (%d)",
			  b->len, p->conf->message_max_bytes);
		return SLUICE_ERR_MSG_SIZE_TOO_LARGE;
	}
	return SLUICE_ERR_NO_ERROR;
}

sluice_err_t sluice_txn_prepare(sluice_txn_producer_t *p, const char *topic, int32_t partition,
				const void *key, size_t key_len, const void *value,
				size_t value_len, const sluice_header_t *headers, size_t nheaders,
				int64_t *txn_id, int32_t *partition_out, char *errstr,
				size_t errstr_size)
{
	struct txnwire_prepare a = { 0 };
	struct txconn *c;
	sluice_err_t err;
	int32_t part = partition;

	if (!p || !topic || !topic[0] || !txn_id || partition < -1)
		return SLUICE_ERR_INVALID_ARG;
	*txn_id = -1;
	if (key_len > INT32_MAX || value_len > INT32_MAX || (nheaders && !headers)) {
		conf_errf(errstr, errstr_size, "invalid key, value or headers");
		return SLUICE_ERR_INVALID_ARG;
	}
	if (partition == SLUICE_PARTITION_ANY && key) {
		int32_t n = topic_nparts(p, topic, errstr, errstr_size);

		if (n <= 0)
			return (sluice_err_t)n;
		part = sluice_partition_for_key(key, key_len, n);
	}
	if (!(c = conn_get(p, &err, errstr, errstr_size)))
		return err;
	err = build_batch(p, &c->b, key, key_len, value, value_len, headers, nheaders, errstr,
			  errstr_size);
	if (!err) {
		a.group = p->conf->txn_group;
		a.instance = p->instance;
		a.topic = topic;
		a.partition = part;
		a.check_timeout_ms = p->conf->txn_check_timeout_ms;
		a.batch = c->b.buf;
		a.batch_len = c->b.len;
		err = txnwire_prepare(&c->kc, &a, p->conf->request_timeout_ms, txn_id, &part, errstr,
				      errstr_size);
	}
	conn_put(p, c);
	if (err == SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION)
		topic_forget(p, topic);
	if (!err && partition_out)
		*partition_out = part;
	return err;
}

static bool transient(sluice_err_t err)
{
	return err == SLUICE_ERR_TRANSPORT || err == SLUICE_ERR_TIMED_OUT ||
	       err == SLUICE_ERR_KAFKA_STORAGE_ERROR || err == SLUICE_ERR_REQUEST_TIMED_OUT;
}

/* TxnEnd, retried on transport errors until request.timeout.ms has passed
 * (ending is idempotent on the broker, so a retry never appends twice). */
static sluice_err_t end_retry(struct sluice_txn_producer *p, int64_t txn_id, int decision,
			      int64_t *offset, char *errstr, size_t errstr_size)
{
	int64_t deadline = kclock_ms() + p->conf->request_timeout_ms;
	sluice_err_t err;

	for (;;) {
		struct txconn *c = conn_get(p, &err, errstr, errstr_size);

		if (c) {
			err = txnwire_end(&c->kc, p->conf->txn_group, txn_id, decision, 0, -1,
					  p->conf->request_timeout_ms, NULL, offset, errstr,
					  errstr_size);
			conn_put(p, c);
		}
		if (!transient(err) || kclock_ms() + p->conf->retry_backoff_ms >= deadline)
			return err;
		usleep((useconds_t)p->conf->retry_backoff_ms * 1000);
	}
}

sluice_err_t sluice_txn_end(sluice_txn_producer_t *p, int64_t txn_id,
			    sluice_txn_decision_t decision, int64_t *offset, char *errstr,
			    size_t errstr_size)
{
	if (!p || decision < SLUICE_TXN_UNKNOWN || decision > SLUICE_TXN_ROLLBACK)
		return SLUICE_ERR_INVALID_ARG;
	if (offset)
		*offset = -1;
	return end_retry(p, txn_id, (int)decision, offset, errstr, errstr_size);
}

sluice_err_t sluice_txn_send(sluice_txn_producer_t *p, const char *topic, int32_t partition,
			     const void *key, size_t key_len, const void *value, size_t value_len,
			     const sluice_header_t *headers, size_t nheaders,
			     sluice_txn_local_cb *local, void *arg, sluice_txn_result_t *res,
			     char *errstr, size_t errstr_size)
{
	sluice_txn_result_t r = { -1, SLUICE_TXN_UNKNOWN, -1, -1 };
	sluice_err_t err;

	if (!local) {
		conf_errf(errstr, errstr_size, "a local-transaction callback is required");
		err = SLUICE_ERR_INVALID_ARG;
		goto out;
	}
	err = sluice_txn_prepare(p, topic, partition, key, key_len, value, value_len, headers,
				 nheaders, &r.txn_id, &r.partition, errstr, errstr_size);
	if (err)
		goto out;
	r.decision = local(p, r.txn_id, arg);
	if (r.decision < SLUICE_TXN_UNKNOWN || r.decision > SLUICE_TXN_ROLLBACK)
		r.decision = SLUICE_TXN_UNKNOWN; /* garbage answer: let check-back decide */
	err = end_retry(p, r.txn_id, (int)r.decision, &r.offset, errstr, errstr_size);
	if (r.decision != SLUICE_TXN_COMMIT)
		r.offset = -1;
out:
	if (res)
		*res = r;
	return err;
}

/* ---- asynchronous calls: two pipelined connections on an I/O thread ---- */

/* The connection op goes on: ends never queue behind prepares' answers. */
static struct kconn *aop_conn(struct sluice_txn_producer *p, const struct aop *op)
{
	return &p->ac[op->kind == AOP_PREPARE ? AK_PREPARE : AK_END].kc;
}

static struct aop *aop_get(struct sluice_txn_producer *p)
{
	struct aop *op;

	pthread_mutex_lock(&p->alock);
	op = p->afree;
	if (op)
		p->afree = op->next;
	pthread_mutex_unlock(&p->alock);
	if (!op) {
		if (!(op = calloc(1, sizeof(*op))) || batch_init(&op->b, 256)) {
			free(op);
			return NULL;
		}
	}
	op->next = NULL;
	op->errstr[0] = '\0';
	return op;
}

static void aop_put(struct sluice_txn_producer *p, struct aop *op)
{
	pthread_mutex_lock(&p->alock);
	op->next = p->afree;
	p->afree = op;
	pthread_mutex_unlock(&p->alock);
}

static void aops_free(struct aop *op)
{
	while (op) {
		struct aop *next = op->next;

		batch_free(&op->b);
		free(op);
		op = next;
	}
}

/* Runs op's callback with err and recycles op. */
static void aop_complete(struct sluice_txn_producer *p, struct aop *op, sluice_err_t err,
			 int64_t txn_id, int32_t partition, int64_t offset)
{
	if (err && !op->errstr[0])
		conf_errf(op->errstr, sizeof(op->errstr), "%s: %s",
			  op->kind == AOP_PREPARE ? "TxnPrepare" : "TxnEnd", sluice_err2str(err));
	if (op->kind == AOP_PREPARE)
		op->prepared(p, err, err ? -1 : txn_id, partition, op->errstr, op->opaque);
	else
		op->ended(p, err, op->txn_id, offset, op->errstr, op->opaque);
	aop_put(p, op);
}

static void *aio_main(void *arg);

/* Queues op for the I/O thread (started on first use).  Returns 0, or
 * SLUICE_ERR_DESTROYED / a start failure (op not queued). */
static sluice_err_t aop_enqueue(struct sluice_txn_producer *p, struct aop *op)
{
	sluice_err_t err = SLUICE_ERR_NO_ERROR;
	bool wake = false;

	pthread_mutex_lock(&p->alock);
	if (p->astop) {
		err = SLUICE_ERR_DESTROYED;
	} else if (!p->io_started) {
		p->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (p->wakefd < 0 || pthread_create(&p->io_thr, NULL, aio_main, p)) {
			if (p->wakefd >= 0)
				close(p->wakefd);
			p->wakefd = -1;
			err = SLUICE_ERR_NO_MEMORY; /* no thread or eventfd: resources */
		} else {
			p->io_started = true;
		}
	}
	if (!err) {
		if (p->aq_tail)
			p->aq_tail->next = op;
		else
			p->aq_head = op;
		p->aq_tail = op;
		/* one wake-up per batch of calls; none from the I/O thread
		 * itself (a callback), which looks at the queue before it
		 * polls again */
		if (!p->wake_pending && !pthread_equal(pthread_self(), p->io_thr)) {
			p->wake_pending = true;
			wake = true;
		}
	}
	pthread_mutex_unlock(&p->alock);
	if (wake)
		(void)eventfd_write(p->wakefd, 1);
	return err;
}

/* An end that failed transiently waits for its retry, unless its time is
 * up (then it completes with err). */
static void end_retry_later(struct sluice_txn_producer *p, struct aop *op, sluice_err_t err)
{
	int64_t now = kclock_ms();

	if (now + p->conf->retry_backoff_ms >= op->deadline_ms) {
		aop_complete(p, op, err, op->txn_id, -1, -1);
		return;
	}
	op->errstr[0] = '\0';
	op->retry_at_ms = now + p->conf->retry_backoff_ms;
	op->next = p->retries;
	p->retries = op;
}

static void aop_cb(struct kconn *c, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct aop *op = ctx;
	struct sluice_txn_producer *p = aconn_of(c)->p;
	int64_t txn_id = -1, offset = -1;
	int32_t part = -1;
	sluice_err_t e = (sluice_err_t)err;

	(void)req;
	if (op->kind == AOP_PREPARE) {
		if (!e)
			e = txnwire_prepare_resp(resp, op->ver, op->partition, &txn_id, &part,
						 op->errstr, sizeof(op->errstr));
		if (e == SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION)
			topic_forget(p, op->topic);
		aop_complete(p, op, e, txn_id, part, -1);
		return;
	}
	if (!e)
		e = txnwire_end_resp(resp, NULL, &offset, op->errstr, sizeof(op->errstr));
	if (transient(e)) {
		end_retry_later(p, op, e);
		return;
	}
	if (op->decision != SLUICE_TXN_COMMIT)
		offset = -1;
	aop_complete(p, op, e, op->txn_id, -1, offset);
}

/* Sends op on its connection (up). */
static void aop_send(struct sluice_txn_producer *p, struct aop *op)
{
	struct kconn *kc = aop_conn(p, op);
	struct kreq *r;

	if (op->kind == AOP_PREPARE) {
		struct txnwire_prepare a = {
			.group = p->conf->txn_group,
			.instance = p->instance,
			.topic = op->topic,
			.partition = op->partition,
			.check_timeout_ms = p->conf->txn_check_timeout_ms,
			.batch = op->b.buf,
			.batch_len = op->b.len,
		};

		r = txnwire_prepare_req(kc, &a, &op->ver, op->errstr, sizeof(op->errstr));
	} else {
		r = txnwire_end_req(kc, p->conf->txn_group, op->txn_id, op->decision, 0, -1,
				    &op->ver, op->errstr, sizeof(op->errstr));
	}
	if (!r) {
		aop_complete(p, op, (sluice_err_t)op->ver, -1, -1, -1);
		return;
	}
	kconn_send(kc, r, aop_cb, op);
}

/* Sends (or, with the broker unreachable, fails or defers) each op of the
 * list. */
static void aops_dispatch(struct sluice_txn_producer *p, struct aop *list)
{
	while (list) {
		struct aop *op = list;

		list = op->next;
		op->next = NULL;
		if (kconn_up(aop_conn(p, op)))
			aop_send(p, op);
		else if (op->kind == AOP_END)
			end_retry_later(p, op, SLUICE_ERR_TRANSPORT);
		else
			aop_complete(p, op, SLUICE_ERR_TRANSPORT, -1, -1, -1);
	}
}

/* The retries that are due, unlinked; *next_ms lowered to the next one. */
static struct aop *due_retries(struct sluice_txn_producer *p, int64_t now, int64_t *next_ms)
{
	struct aop **pp = &p->retries, *due = NULL;

	while (*pp) {
		struct aop *op = *pp;

		if (op->retry_at_ms <= now) {
			*pp = op->next;
			op->next = due;
			due = op;
		} else {
			if (op->retry_at_ms < *next_ms)
				*next_ms = op->retry_at_ms;
			pp = &op->next;
		}
	}
	return due;
}

static void aio_connect(struct sluice_txn_producer *p, struct aconn *a, int64_t now)
{
	if (kconn_up(&a->kc) || now < a->reconnect_at_ms)
		return;
	if (kconn_connect(&a->kc, p->conf->request_timeout_ms) != 0)
		a->reconnect_at_ms = kclock_ms() + p->conf->reconnect_backoff_ms;
}

/* Connects (if down and not backing off) each connection that list or the
 * retries have work for. */
static void aio_connect_needed(struct sluice_txn_producer *p, const struct aop *list,
			       int64_t now)
{
	bool need[AK_N] = { [AK_END] = p->retries != NULL };

	for (; list && !(need[AK_PREPARE] && need[AK_END]); list = list->next)
		need[list->kind == AOP_PREPARE ? AK_PREPARE : AK_END] = true;
	for (int i = 0; i < AK_N; i++)
		if (need[i])
			aio_connect(p, &p->ac[i], now);
}

static void *aio_main(void *arg)
{
	struct sluice_txn_producer *p = arg;

	for (;;) {
		struct pollfd pfd[1 + AK_N];
		int pconn[1 + AK_N]; /* pfd[i] is ac[pconn[i]] (i >= 1) */
		struct aop *list;
		int64_t now = kclock_ms(), next = now + 100;
		int timeout, n = 1;
		bool stop;

		pthread_mutex_lock(&p->alock);
		list = p->aq_head;
		p->aq_head = p->aq_tail = NULL;
		p->wake_pending = false;
		stop = p->astop;
		pthread_mutex_unlock(&p->alock);
		if (stop) {
			p->aq_head = list; /* failed by aio_stop, after the join */
			break;
		}
		if (list || p->retries)
			aio_connect_needed(p, list, now);
		aops_dispatch(p, list);
		aops_dispatch(p, due_retries(p, now, &next));
		pfd[0] = (struct pollfd){ .fd = p->wakefd, .events = POLLIN };
		for (int i = 0; i < AK_N; i++) {
			struct kconn *kc = &p->ac[i].kc;
			int tc;

			if (!kconn_up(kc))
				continue;
			tc = kconn_check_timeouts(kc, now); /* may close it */
			if (now + tc < next)
				next = now + tc;
			if (!kconn_up(kc))
				continue;
			pfd[n] = (struct pollfd){ .fd = kc->fd, .events = kconn_events(kc) };
			pconn[n++] = i;
		}
		timeout = next > now ? (int)(next - now) : 0;
		/* Callbacks run above (a call failed at dispatch, a timeout)
		 * may have queued new calls without a wake-up (none is sent
		 * from this thread): they go at once, not after the timeout
		 * (100 ms per wave of calls while the broker was down). */
		pthread_mutex_lock(&p->alock);
		if (p->aq_head)
			timeout = 0;
		pthread_mutex_unlock(&p->alock);
		if (poll(pfd, (nfds_t)n, timeout) <= 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			eventfd_t v;

			(void)eventfd_read(p->wakefd, &v);
		}
		/* Callbacks only queue new calls (sent at the next turn) and
		 * never close a connection: each polled fd is still open. */
		for (int i = 1; i < n; i++)
			if (pfd[i].revents)
				kconn_io(&p->ac[pconn[i]].kc, pfd[i].revents, kclock_ms());
	}
	return NULL;
}

/* Stops the I/O thread and fails what it leaves (destroying thread). */
static void aio_stop(struct sluice_txn_producer *p)
{
	struct aop *left;

	pthread_mutex_lock(&p->alock);
	p->astop = true;
	pthread_mutex_unlock(&p->alock);
	if (!p->io_started)
		return;
	(void)eventfd_write(p->wakefd, 1);
	pthread_join(p->io_thr, NULL);
	for (int i = 0; i < AK_N; i++) /* in-flight callbacks */
		kconn_close(&p->ac[i].kc, SLUICE_ERR_DESTROYED, NULL);
	left = p->aq_head;
	p->aq_head = p->aq_tail = NULL;
	while (left) {
		struct aop *op = left;

		left = op->next;
		aop_complete(p, op, SLUICE_ERR_DESTROYED, -1, -1, -1);
	}
	while ((left = p->retries)) {
		p->retries = left->next;
		aop_complete(p, left, SLUICE_ERR_DESTROYED, -1, -1, -1);
	}
	close(p->wakefd);
}

sluice_err_t sluice_txn_prepare_async(sluice_txn_producer_t *p, const char *topic,
				      int32_t partition, const void *key, size_t key_len,
				      const void *value, size_t value_len,
				      const sluice_header_t *headers, size_t nheaders,
				      sluice_txn_prepared_cb *cb, void *opaque)
{
	char errstr[256];
	struct aop *op;
	sluice_err_t err;
	int32_t part = partition;

	if (!p || !topic || !topic[0] || strlen(topic) >= sizeof(op->topic) || !cb ||
	    partition < -1 || key_len > INT32_MAX || value_len > INT32_MAX || (nheaders && !headers))
		return SLUICE_ERR_INVALID_ARG;
	if (partition == SLUICE_PARTITION_ANY && key) {
		int32_t n = topic_nparts(p, topic, errstr, sizeof(errstr));

		if (n <= 0)
			return (sluice_err_t)n;
		part = sluice_partition_for_key(key, key_len, n);
	}
	if (!(op = aop_get(p)))
		return SLUICE_ERR_NO_MEMORY;
	err = build_batch(p, &op->b, key, key_len, value, value_len, headers, nheaders, errstr,
			  sizeof(errstr));
	if (!err) {
		op->kind = AOP_PREPARE;
		snprintf(op->topic, sizeof(op->topic), "%s", topic);
		op->partition = part;
		op->prepared = cb;
		op->opaque = opaque;
		err = aop_enqueue(p, op);
	}
	if (err)
		aop_put(p, op);
	return err;
}

sluice_err_t sluice_txn_end_async(sluice_txn_producer_t *p, int64_t txn_id,
				  sluice_txn_decision_t decision, sluice_txn_ended_cb *cb,
				  void *opaque)
{
	struct aop *op;
	sluice_err_t err;

	if (!p || !cb || decision < SLUICE_TXN_UNKNOWN || decision > SLUICE_TXN_ROLLBACK)
		return SLUICE_ERR_INVALID_ARG;
	if (!(op = aop_get(p)))
		return SLUICE_ERR_NO_MEMORY;
	op->kind = AOP_END;
	op->txn_id = txn_id;
	op->decision = (int)decision;
	op->deadline_ms = kclock_ms() + p->conf->request_timeout_ms;
	op->ended = cb;
	op->opaque = opaque;
	err = aop_enqueue(p, op);
	if (err)
		aop_put(p, op);
	return err;
}

/* ---- check-back ---- */

static void answer_check(struct sluice_txn_producer *p, struct kconn *kc,
			 const struct txnwire_check *x)
{
	sluice_txn_check_t chk = { 0 };
	sluice_header_t hdrs[64];
	char names[4096], topic[256];
	sluice_txn_decision_t d = SLUICE_TXN_UNKNOWN;

	if (!wire_str_copy(x->topic, topic, sizeof(topic)))
		topic[0] = '\0';
	chk.txn_id = x->txn_id;
	chk.topic = topic;
	chk.partition = x->partition;
	chk.check_count = x->check_count;
	/* A half message we cannot decode is still asked about: the answer
	 * comes from the application's database, keyed by txn_id. */
	if (x->records.len > 0)
		(void)txnwire_first_record((const uint8_t *)x->records.ptr, (size_t)x->records.len,
					   &chk, hdrs, 64, names, sizeof(names));
	d = p->conf->txn_check_cb(p, &chk, p->conf->txn_check_ctx);
	if (d < SLUICE_TXN_UNKNOWN || d > SLUICE_TXN_ROLLBACK)
		d = SLUICE_TXN_UNKNOWN;
	/* An error here (broker gone, txn already ended by someone else) needs
	 * nothing: an unanswered check is asked again after its lease.  The
	 * answer names its check (check_count), so the broker does not take
	 * an "unknown" that arrives after the lease for the next check's. */
	(void)txnwire_end(kc, p->conf->txn_group, x->txn_id, (int)d, 0, x->check_count,
			  p->conf->request_timeout_ms, NULL, NULL, NULL, 0);
}

static void sleep_unless_stopped(struct sluice_txn_producer *p, int ms)
{
	for (int waited = 0; waited < ms && !atomic_load(&p->stop); waited += 50)
		usleep(50 * 1000);
}

static void *check_main(void *arg)
{
	struct sluice_txn_producer *p = arg;
	struct kconn kc;

	kconn_init(&kc, p->conf);
	while (!atomic_load(&p->stop)) {
		struct txnwire_check *v = NULL;
		struct kbuf *resp = NULL;
		size_t n = 0;
		sluice_err_t err;

		if (!kconn_up(&kc) && kconn_connect(&kc, p->conf->request_timeout_ms)) {
			sleep_unless_stopped(p, p->conf->reconnect_backoff_ms + 100);
			continue;
		}
		err = txnwire_check_poll(&kc, p->conf->txn_group, p->instance, CHECK_WAIT_MS,
					 CHECK_MAX_TXNS, p->conf->request_timeout_ms, &resp, &v, &n);
		if (err) {
			sleep_unless_stopped(p, p->conf->retry_backoff_ms);
			continue;
		}
		for (size_t i = 0; i < n; i++)
			answer_check(p, &kc, &v[i]);
		free(v);
		kbuf_unref(resp);
	}
	kconn_close(&kc, SLUICE_ERR_DESTROYED, NULL);
	return NULL;
}

/* ---- life cycle ---- */

static void default_instance(char *dst, size_t cap)
{
	char host[128] = "host";
	struct timespec ts;

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(dst, cap, "%s:%d:%08lx", host, (int)getpid(),
		 (unsigned long)((uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)ts.tv_sec) &
			 0xffffffffUL);
}

/* Frees p; its conf too only when own_conf (a failed new() leaves conf to
 * the caller). */
static void producer_free(struct sluice_txn_producer *p, bool own_conf)
{
	if (!p)
		return;
	atomic_store(&p->stop, true);
	if (p->check_started)
		pthread_join(p->check_thr, NULL);
	aio_stop(p);
	aops_free(p->afree);
	pthread_mutex_destroy(&p->alock);
	conns_free(p->idle);
	sluice_admin_destroy(p->admin);
	pthread_mutex_destroy(&p->lock);
	if (own_conf)
		sluice_conf_destroy(p->conf);
	free(p);
}

sluice_txn_producer_t *sluice_txn_producer_new(sluice_conf_t *conf, char *errstr,
					       size_t errstr_size)
{
	struct sluice_txn_producer *p;
	sluice_conf_t *aconf;
	struct txconn *c;
	sluice_err_t err;

	if (!conf) {
		conf_errf(errstr, errstr_size, "conf must not be NULL");
		return NULL;
	}
	if (!conf->txn_group[0]) {
		conf_errf(errstr, errstr_size, "transaction.group must be set");
		return NULL;
	}
	if (!(p = calloc(1, sizeof(*p)))) {
		conf_errf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	p->conf = conf;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->alock, NULL);
	p->wakefd = -1;
	for (int i = 0; i < AK_N; i++) {
		kconn_init(&p->ac[i].kc, conf);
		p->ac[i].p = p;
	}
	if (conf->txn_instance[0])
		snprintf(p->instance, sizeof(p->instance), "%s", conf->txn_instance);
	else
		default_instance(p->instance, sizeof(p->instance));
	if (!(aconf = sluice_conf_dup(conf))) {
		conf_errf(errstr, errstr_size, "out of memory");
		goto fail;
	}
	if (!(p->admin = sluice_admin_new(aconf, errstr, errstr_size))) {
		sluice_conf_destroy(aconf);
		goto fail;
	}
	/* Connect once now: a wrong address or a non-Sluice broker should fail
	 * here, not at the first transaction. */
	if (!(c = conn_get(p, &err, errstr, errstr_size)))
		goto fail;
	err = txnwire_version(&c->kc, API_TXN_PREPARE, 1, errstr, errstr_size);
	conn_put(p, c);
	if ((int)err < 0)
		goto fail;
	if (conf->txn_check_cb) {
		if (pthread_create(&p->check_thr, NULL, check_main, p)) {
			conf_errf(errstr, errstr_size, "cannot start the check thread");
			goto fail;
		}
		p->check_started = true;
	}
	return p; /* owns conf from here on */
fail:
	producer_free(p, false);
	return NULL;
}

void sluice_txn_producer_destroy(sluice_txn_producer_t *p)
{
	producer_free(p, true);
}
