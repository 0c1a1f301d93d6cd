/*
 * txn_api.c — Sluice extension APIs for transactional (half) messages,
 * RocketMQ style (docs/transactions.md; byte layouts in docs/protocol.md):
 *   1000 TxnPrepare v0-1  store a half message (a RecordBatch v2) in SQLite
 *   1001 TxnEnd v0        commit (append to the log, exactly once) /
 *                         rollback / unknown / resume (operators)
 *   1003 TxnList v0-1     list transactions of a producer group (operators;
 *                         v1: where each one's dead-letter copy is)
 *   1004 TxnDescribe v0-1 one transaction with its batch (operators; v1:
 *                         where its dead-letter copy is, txn_dead.h)
 *   1002 TxnCheckPoll v0-1 check-back long-poll (txn_check.c)
 *
 * Exactly once: a commit first moves the txn to COMMITTING in SQLite with a
 * per-partition commit sequence (txn/halfstore.c); the end job's
 * after_commit hook then hands it to txn_commit.h, which appends the batch
 * once (as an idempotent batch of a reserved producer id, in commit_seq
 * order, one log write per partition per coordinator round) or records
 * why it cannot; then the answer, then COMMITTED (a lazy job).
 *
 * The append (its commit marker first, txn_marker.h) follows the SQLite
 * COMMIT of COMMITTING at once, without waiting for its WAL sync
 * (coord_job.early): a kill -9 keeps both; after a power loss that keeps
 * the log's copy but not the row, start-up finds the marker and records
 * the commit (docs/transactions.md "When the append happens").
 *
 * Durability (page cache): the answer follows the append at once.
 * Durability (fsync): COMMITTED is recorded, and the answer sent, only once
 * the partition's high watermark covers the batch, i.e. after its
 * fdatasync: the request waits on its loop like an acks=-1 produce
 * (waiters.h), the syncer wakes it.  A client gone or a sync not done in
 * COMMIT_SYNC_TIMEOUT_S hands the mark to the ticker (txn_check_mark_later).
 *
 * Threads: handlers and replies on loops; halfstore calls in coordinator
 * jobs; appends on the coordinator's WAL-sync threads, or for page-cache
 * topics on the coordinator thread (txn_commit.h);
 * sync waits on the request's loop.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "halfstore.h"
#include "kerr.h"
#include "poison.h"
#include "recbatch.h"
#include "reuse.h"
#include "topics.h"
#include "txn_api.h"
#include "txn_commit.h"
#include "txn_dead.h"
#include "waiters.h"

#define COMMIT_SYNC_TIMEOUT_S 30.0

static checksched_policy policy;
static int64_t retention_ms;
static atomic_uint rr_partition;
static enum txn_crash_point crash_at;

static const char *const crash_names[] = {
	[TXN_CRASH_PREPARE_STORED] = "txn_prepare_stored",
	[TXN_CRASH_COMMIT_MARKED_COMMITTING] = "txn_commit_marked_committing",
	[TXN_CRASH_COMMIT_APPENDED] = "txn_commit_appended",
	[TXN_CRASH_COMMIT_MARKED] = "txn_commit_marked",
	[TXN_CRASH_DEAD_APPENDED] = "txn_dead_appended",
};

const checksched_policy *txn_api_policy(void)
{
	return &policy;
}

int64_t txn_api_retention_ms(void)
{
	return retention_ms;
}

static void read_crash_point(void)
{
	const char *e = getenv("SLUICED_CRASH_AT");

	crash_at = TXN_CRASH_NONE;
	if (!e || !*e)
		return;
	for (size_t i = 1; i < sizeof(crash_names) / sizeof(crash_names[0]); i++)
		if (strcmp(e, crash_names[i]) == 0)
			crash_at = (enum txn_crash_point)i;
	if (crash_at == TXN_CRASH_NONE)
		blog(BLOG_WARN, "SLUICED_CRASH_AT=%s: no such crash point (ignored)", e);
	else
		blog(BLOG_WARN, "SLUICED_CRASH_AT=%s: test hook armed, the broker will exit there", e);
}

void txn_api_crash_point(enum txn_crash_point p)
{
	if (crash_at == TXN_CRASH_NONE || crash_at != p)
		return;
	blog(BLOG_WARN, "SLUICED_CRASH_AT=%s reached: exiting with status 137", crash_names[p]);
	_exit(137);
}

void txn_api_init(const config *cfg)
{
	checksched_policy_default(&policy);
	policy.timeout_ms = cfg->transaction_timeout_ms;
	policy.max_checks = cfg->transaction_check_max;
	policy.rate = cfg->transaction_check_rate;
	policy.burst = (uint64_t)cfg->transaction_check_burst;
	policy.lease_ms = cfg->transaction_check_lease_ms;
	policy.backoff_base_ms = cfg->transaction_check_backoff_ms;
	policy.backoff_cap_ms = cfg->transaction_check_backoff_max_ms;
	policy.max_outstanding = (uint32_t)cfg->transaction_check_max_outstanding;
	retention_ms = cfg->transaction_retention_ms;
	txn_dead_init(cfg->transaction_dead_letter_topic);
	read_crash_point();
}

uint64_t txn_api_instance_id(wire_str instance)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 offset basis */

	if (instance.len <= 0)
		return 0;
	for (int32_t i = 0; i < instance.len; i++) {
		h ^= (uint8_t)instance.ptr[i];
		h *= 0x100000001b3ULL;
	}
	return h | 1;
}

int txn_api_drop_topic(sqlite3 *db, const char *name)
{
	int64_t n = halfstore_drop_topic(db, name, now_ms());

	if (n < 0) {
		blog(BLOG_ERROR, "topic %s deleted: cannot discard its half messages: %s", name,
		     halfstore_strerror((int)n));
		return SQLITE_ERROR;
	}
	if (n > 0)
		blog(BLOG_INFO, "topic %s deleted: %lld pending transaction(s) discarded", name, (long long)n);
	return SQLITE_OK;
}

/* ---- jobs ---- */

enum job_kind { JOB_PREPARE, JOB_END, JOB_MARK, JOB_LIST, JOB_DESCRIBE };

enum { DECIDE_UNKNOWN = 0, DECIDE_COMMIT = 1, DECIDE_ROLLBACK = 2, DECIDE_RESUME = 3 };

typedef struct txn_job {
	coord_job job;
	req *r;                  /* referenced */
	enum job_kind kind;
	halfstore_prepare_args pa;
	uint8_t *batch;          /* prepare: the copy, in inline_batch (the same
				    allocation: the request buffer is reused
				    before the coordinator runs) */
	char group[256], topic[256];
	int64_t txn_id;
	int decision;            /* DECIDE_* */
	unsigned flags;
	int hs_rc;               /* halfstore outcome */
	halfstore_txn txn;       /* end, describe: the row after the call */
	int64_t offset;
	bool check_out;          /* end: a check of it was out (txn_check_answered) */
	int32_t check_no;        /* end: the check it answers (v1), or HALFSTORE_ANY_CHECK */
	int16_t kerr;
	char msg[200];           /* the answer's error message when kerr is set */
	halfstore_txn *list;
	size_t nlist;
	int32_t limit;
	int64_t after;
	unsigned state_mask;
	/* commit: staged by the after_commit hook, appended by the round's */
	txn_commit cm;           /* cm.t referenced until handed on */
	bool staged;
	waitset ws;              /* waiting for the sync (fsync durability) */
	bool ws_init;
	ev_timer timer;
	void (*after_wait)(struct txn_job *j);
	/* reuse (job_alloc): kept when the job is released to its loop */
	worker *home;            /* the loop of its request: released there */
	struct txn_job *next_free; /* in home->txn_cache */
	halfstore_buf rowbuf;    /* owned: end's row (txn) lives here */
	size_t inline_cap;       /* bytes of inline_batch */
	uint8_t inline_batch[]; /* prepare only: rec.len bytes */
} txn_job;

static txn_job *job_of(loop_task *t)
{
	return (txn_job *)((char *)t - offsetof(txn_job, job.done));
}

/* Released jobs stay on their request's loop for reuse (worker.txn_cache),
 * with their inline batch room and row storage, so a transaction's two
 * jobs (prepare; end, then its mark) allocate nothing: at most
 * JOB_CACHE_MAX per loop, each keeping at most JOB_CACHE_BYTES.  A loop's
 * jobs are released on it (their done tasks run there), or on main after
 * the loops stopped (server_free, which then calls txn_api_cache_free).
 * Under ASan a cached job is poisoned (poison.h). */
#define JOB_CACHE_MAX 256
#define JOB_CACHE_BYTES (64 * 1024)

static void job_destroy(txn_job *j)
{
	free(j->rowbuf.p);
	free(j);
}

/* A zeroed job of w's with room for inline_len batch bytes, or NULL. */
static txn_job *job_alloc(worker *w, size_t inline_len)
{
	txn_job *j = reuse_get(&w->txn_cache, sizeof(*j), offsetof(txn_job, next_free));
	halfstore_buf keep = { 0 };
	size_t cap = inline_len;

	if (j) {
		UNPOISON(j->inline_batch, j->inline_cap);
		keep = j->rowbuf;
		UNPOISON(keep.p, keep.cap);
		if (j->inline_cap >= inline_len) {
			cap = j->inline_cap;
		} else {
			txn_job *n = realloc(j, sizeof(*j) + inline_len);

			if (!n) {
				job_destroy(j);
				return NULL;
			}
			j = n;
		}
	} else if (!(j = malloc(sizeof(*j) + inline_len))) {
		return NULL;
	}
	memset(j, 0, sizeof(*j));
	j->home = w;
	j->rowbuf = keep;
	j->inline_cap = cap;
	return j;
}

/* Frees j, or keeps it in its loop's cache. */
static void job_release(txn_job *j)
{
	worker *w = j->home;

	if (reuse_full(&w->txn_cache, JOB_CACHE_MAX) ||
	    j->inline_cap + j->rowbuf.cap > JOB_CACHE_BYTES) {
		job_destroy(j);
		return;
	}
	POISON(j->rowbuf.p, j->rowbuf.cap);
	POISON(j->inline_batch, j->inline_cap);
	reuse_put(&w->txn_cache, j, sizeof(*j), offsetof(txn_job, next_free));
}

void txn_api_cache_free(worker *w)
{
	txn_job *j;

	while ((j = reuse_get(&w->txn_cache, sizeof(*j), offsetof(txn_job, next_free)))) {
		UNPOISON(j->rowbuf.p, j->rowbuf.cap);
		job_destroy(j);
	}
}

static void txn_job_free(txn_job *j)
{
	if (j->ws_init)
		waitset_free(&j->ws);
	if (j->cm.t)
		topic_unref(j->cm.t);
	halfstore_txn_clear(&j->txn);
	halfstore_txns_free(j->list, j->nlist);
	job_release(j);
}

/* Resume, then read the row back for the answer's state. */
static int run_resume(sqlite3 *db, txn_job *j, int64_t now)
{
	int rc = halfstore_resume(db, j->txn_id, now);

	if (rc >= 0 && rc != HALFSTORE_E_NOT_FOUND) {
		int g = halfstore_get(db, j->txn_id, &j->txn);

		if (g < 0)
			rc = g;
	}
	return rc;
}

/* Coordinator thread, in the end's batch: a commit just sequenced whose
 * batch is larger than its topic's segment.bytes (lowered since the
 * prepare) is discarded in the same SQLite transaction, so its sequence is
 * never seen taken and unwritten.  Were it discarded after the round's
 * appends, a crash or power loss in between would leave it COMMITTING
 * below a later commit's sequence in the log: "appended long ago",
 * COMMITTED with nothing appended.  (segment.bytes lowered between this
 * check and the append is still caught there.)  The halfstore outcome. */
static int discard_if_too_large(sqlite3 *db, txn_job *j, int rc, int64_t now)
{
	topic_conf conf;
	topic *t;
	int hs;

	if (rc < 0 || j->decision != DECIDE_COMMIT || j->txn.state != HALFSTORE_COMMITTING ||
	    !j->txn.topic)
		return rc;
	t = topics_get(j->r->w->srv->topics, j->txn.topic, strlen(j->txn.topic));
	if (!t)
		return rc; /* the append says "topic deleted" */
	topic_get_conf(t, &conf);
	topic_unref(t);
	if (j->txn.batch_len <= conf.log.segment_bytes)
		return rc;
	hs = halfstore_discard(db, j->txn_id, TXN_TOO_LARGE_REASON, now);
	if (hs != HALFSTORE_OK)
		return hs < 0 ? hs : rc;
	j->txn.state = HALFSTORE_DISCARDED;
	j->kerr = KERR_MESSAGE_TOO_LARGE;
	snprintf(j->msg, sizeof(j->msg), TXN_TOO_LARGE_REASON ": transaction discarded, nothing "
		 "appended");
	blog(BLOG_WARN, "txn %lld: %s", (long long)j->txn_id, j->msg);
	return rc;
}

static int run_end(sqlite3 *db, txn_job *j, int64_t now)
{
	enum halfstore_state st = (enum halfstore_state)-1;
	int rc;

	switch (j->decision) {
	case DECIDE_UNKNOWN:
		if (!j->check_out) {
			/* not the check out: a late answer (its lease ran out
			 * and was counted as no answer; v1 tells it from the
			 * next check's by its number), a retried one, or one
			 * nobody asked for.  Counted, it would take the place of
			 * the check out now or next and discard the transaction
			 * early. */
			int64_t seq;

			rc = halfstore_state_seq(db, j->txn_id, &st, &seq);
			if (rc == HALFSTORE_OK)
				rc = st == HALFSTORE_PENDING ? HALFSTORE_OK_ALREADY : HALFSTORE_E_STATE;
			j->txn.state = st; /* -1 if not found */
			break;
		}
		rc = halfstore_check_answer(db, j->txn_id, HALFSTORE_ANSWER_UNKNOWN, j->check_no, now,
					    &policy, &st);
		j->txn.state = st;
		break;
	case DECIDE_RESUME:
		rc = run_resume(db, j, now);
		break;
	default:
		rc = halfstore_end_into(db, j->txn_id, (enum halfstore_decision)j->decision, j->flags,
					now, &j->rowbuf, &j->txn);
		rc = discard_if_too_large(db, j, rc, now);
		/* the append follows the COMMIT at once, for every durability:
		 * its marker makes the log copy enough (txn_marker.h), so it
		 * need not wait for the WAL sync of COMMITTING.  A rollback
		 * has nothing in the log to stand for it: it is answered once
		 * ROLLED_BACK is synced, or a power loss could make an
		 * acknowledged rollback PENDING again. */
		j->job.early = rc >= 0 && j->txn.topic && j->decision == DECIDE_COMMIT;
		break;
	}
	return rc;
}

/* A concurrent retry may have recorded the commit first (with the offset it
 * knew): answer with what is recorded. */
static int run_mark(sqlite3 *db, txn_job *j)
{
	int rc = txn_check_record_commit(db, j->txn_id, j->offset, j->cm.p, j->cm.need);
	halfstore_txn t;

	if (rc == HALFSTORE_E_CONFLICT && halfstore_get(db, j->txn_id, &t) == HALFSTORE_OK) {
		j->offset = t.log_offset;
		rc = HALFSTORE_OK_ALREADY;
		halfstore_txn_clear(&t);
	}
	return rc;
}

static int txn_run(coord_job *job, sqlite3 *db)
{
	txn_job *j = (txn_job *)job;
	int64_t now = now_ms();

	switch (j->kind) {
	case JOB_PREPARE:
		j->hs_rc = halfstore_prepare(db, &j->pa, now, &policy, &j->txn_id);
		break;
	case JOB_END:
		j->hs_rc = run_end(db, j, now);
		break;
	case JOB_MARK:
		j->hs_rc = run_mark(db, j);
		/* nobody waits for the mark, and a lost one is recovered at
		 * start-up: no WAL sync of its own (a batch of marks alone
		 * costs the device nothing) */
		j->job.early = true;
		break;
	case JOB_LIST:
		j->hs_rc = halfstore_list(db, j->group[0] ? j->group : NULL, j->state_mask,
					  (size_t)j->limit, j->after, &j->list, &j->nlist);
		break;
	case JOB_DESCRIBE:
		j->hs_rc = halfstore_get(db, j->txn_id, &j->txn);
		break;
	}
	return j->hs_rc < 0 ? SQLITE_ERROR : SQLITE_OK;
}

static int16_t map_hs(int rc)
{
	switch (rc) {
	case HALFSTORE_OK:
	case HALFSTORE_OK_ALREADY:
		return KERR_NONE;
	case HALFSTORE_E_NOT_FOUND:
		return KERR_TRANSACTIONAL_ID_NOT_FOUND;
	case HALFSTORE_E_CONFLICT:
	case HALFSTORE_E_STATE:
	case HALFSTORE_E_DISCARDED:
		return KERR_INVALID_TXN_STATE;
	case HALFSTORE_E_INVALID:
		return KERR_INVALID_RECORD;
	default:
		return KERR_KAFKA_STORAGE_ERROR;
	}
}

/* The error of a finished job and its message (NULL: none). */
static int16_t job_error(txn_job *j, const char **msg)
{
	int16_t err = j->kerr;

	if (!err && j->job.rc != SQLITE_OK)
		err = KERR_KAFKA_STORAGE_ERROR;
	if (!err)
		err = map_hs(j->hs_rc);
	if (err && !j->msg[0]) {
		if (j->hs_rc == HALFSTORE_E_DISCARDED && j->txn.discard_reason)
			snprintf(j->msg, sizeof(j->msg), "transaction discarded (%s): only an operator can "
				 "end or resume it", j->txn.discard_reason);
		else
			snprintf(j->msg, sizeof(j->msg), "%s",
				 j->kerr || j->hs_rc == 0 ? kerr_name(err) : halfstore_strerror(j->hs_rc));
	}
	*msg = err ? j->msg : NULL;
	return err;
}

static void write_end_reply(txn_job *j)
{
	wire_buf *b = &j->r->resp;
	const char *msg;
	int16_t err = job_error(j, &msg);

	wire_w_i16(b, err);
	wire_w_str(b, msg);
	wire_w_i8(b, (int8_t)j->txn.state);
	wire_w_i64(b, j->offset);
}

static void finish_job(txn_job *j)
{
	req_finish(j->r);
	req_unref(j->r);
	txn_job_free(j);
}

/* done runs on the request's loop; after (NULL: none) on the coordinator
 * thread once the job's batch committed, in submission order (coord.h) —
 * the end jobs' appends, see the top. */
static void submit(txn_job *j, void (*done)(loop_task *), void (*after)(coord_job *))
{
	j->job.run = txn_run;
	j->job.after_commit = after;
	j->job.w = j->r->w;
	j->job.done.fn = done;
	/* one halfstore call, atomic on its own (halfstore.h), or read-only */
	j->job.atomic = j->kind != JOB_END || j->decision != DECIDE_RESUME;
	/* an operator's view includes the COMMITTED marks queued before it */
	j->job.after_lazy = j->kind == JOB_LIST || j->kind == JOB_DESCRIBE;
	if (j->kind == JOB_MARK)
		coord_submit_lazy(j->r->w->srv->coord, &j->job);
	else
		coord_submit(j->r->w->srv->coord, &j->job);
}

/* ---- TxnPrepare ---- */

static void write_prepare_reply(req *r, int16_t err, const char *msg, int64_t txn_id, int32_t part)
{
	wire_w_i16(&r->resp, err);
	wire_w_str(&r->resp, err ? msg : NULL);
	wire_w_i64(&r->resp, err ? -1 : txn_id);
	if (r->api_version >= 1)
		wire_w_i32(&r->resp, err ? -1 : part);
}

static void prepare_done(loop_task *t)
{
	txn_job *j = job_of(t);
	const char *msg;
	int16_t err = job_error(j, &msg);

	if (!err)
		txn_api_crash_point(TXN_CRASH_PREPARE_STORED);
	write_prepare_reply(j->r, err, msg, j->txn_id, j->pa.partition);
	finish_job(j);
}

/* Checks a prepare's fields; returns a Kafka error with *why, or 0 with
 * *t (referenced). */
static int16_t prepare_check(server *srv, txn_job *j, wire_str group, wire_str tname, int32_t part,
			     wire_str rec, topic **t, const char **why)
{
	topic_conf conf;
	recbatch_hdr h;

	*t = NULL;
	if (!wire_str_copy(group, j->group, sizeof(j->group)) || !j->group[0]) {
		*why = "producer group must be 1-255 bytes";
		return KERR_INVALID_REQUEST;
	}
	if (!wire_str_copy(tname, j->topic, sizeof(j->topic)) ||
	    !(*t = topics_get(srv->topics, j->topic, strlen(j->topic)))) {
		*why = "unknown topic";
		return KERR_UNKNOWN_TOPIC_OR_PARTITION;
	}
	if (part < -1 || part >= (*t)->nparts) {
		*why = "unknown partition";
		return KERR_UNKNOWN_TOPIC_OR_PARTITION;
	}
	if (rec.len <= 0 || recbatch_size((const uint8_t *)rec.ptr, (size_t)rec.len) != (size_t)rec.len) {
		*why = "records must be exactly one RecordBatch v2";
		return KERR_CORRUPT_MESSAGE;
	}
	if (recbatch_validate((const uint8_t *)rec.ptr, (size_t)rec.len, &h, NULL) != RECBATCH_OK) {
		*why = "invalid record batch (length, magic, CRC or records)";
		return KERR_CORRUPT_MESSAGE;
	}
	topic_get_conf(*t, &conf);
	if (rec.len > conf.max_message_bytes) {
		*why = "batch larger than max.message.bytes";
		return KERR_MESSAGE_TOO_LARGE;
	}
	return KERR_NONE;
}

int api_txn_prepare(req *r, wire_rd *rd)
{
	server *srv = r->w->srv;
	wire_str group = wire_rd_str(rd), tname = wire_rd_str(rd);
	int32_t part = wire_rd_i32(rd), timeout_ms = wire_rd_i32(rd);
	wire_str rec = wire_rd_bytes(rd);
	wire_str instance = { NULL, -1 };
	const char *why = NULL;
	txn_job *j;
	topic *t;
	int16_t err;

	if (r->api_version >= 1)
		instance = wire_rd_str(rd);
	if (rd->err)
		return API_MALFORMED;
	j = job_alloc(r->w, rec.len > 0 ? (size_t)rec.len : 0);
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->batch = j->inline_batch;
	err = prepare_check(srv, j, group, tname, part, rec, &t, &why);
	if (!err && part == -1)
		part = (int32_t)(atomic_fetch_add(&rr_partition, 1) % (unsigned)t->nparts);
	if (t)
		topic_unref(t);
	if (err) {
		write_prepare_reply(r, err, why, -1, -1);
		job_release(j);
		req_finish(r);
		return API_OK;
	}
	memcpy(j->batch, rec.ptr, (size_t)rec.len);
	j->kind = JOB_PREPARE;
	j->pa.producer_group = j->group;
	j->pa.topic = j->topic;
	j->pa.partition = part;
	j->pa.batch = j->batch;
	j->pa.batch_len = (size_t)rec.len;
	/* a named instance: its checks can go to any of its connections */
	j->pa.origin = txn_api_instance_id(instance);
	if (!j->pa.origin)
		j->pa.origin = (uint64_t)(uintptr_t)r->conn;
	j->pa.check_timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	req_ref(r);
	submit(j, prepare_done, NULL);
	return API_OK;
}

/* ---- TxnEnd ---- */

/* The COMMITTED mark is recorded after the answer (it is off the commit's
 * critical path: one coordinator round trip less per transaction).  Safe:
 * the batch is appended and durable when the answer goes out; if the mark
 * is lost (crash, SQLite error) the row stays COMMITTING, and start-up
 * recovery re-appends it, which the commit producer's sequence turns into
 * "already appended" (see the top). */
static void mark_done(loop_task *t)
{
	txn_job *j = job_of(t);

	if (j->job.rc != SQLITE_OK || j->hs_rc < 0)
		blog(BLOG_WARN, "txn %lld: appended at %lld but the COMMITTED mark failed; recorded "
				"at the next start", (long long)j->txn_id, (long long)j->offset);
	else if (j->hs_rc == HALFSTORE_OK || j->hs_rc == HALFSTORE_OK_ALREADY)
		txn_api_crash_point(TXN_CRASH_COMMIT_MARKED);
	req_unref(j->r); /* answered in submit_mark */
	txn_job_free(j);
}

static void submit_mark(txn_job *j)
{
	j->txn.state = HALFSTORE_COMMITTED;
	if (j->r->conn)
		write_end_reply(j);
	req_finish(j->r); /* keeps our reference until mark_done */
	j->kind = JOB_MARK;
	submit(j, mark_done, NULL);
}

/* Nobody waits for the answer any more: the ticker records the commit once
 * the batch is durable.  Finishes j. */
static void hand_over(txn_job *j)
{
	txn_check_mark_later(j->txn_id, j->cm.offset, j->cm.t, j->cm.p, j->cm.need);
	j->cm.t = NULL;
	finish_job(j);
}

static void sync_timed_out(txn_job *j)
{
	j->kerr = KERR_REQUEST_TIMED_OUT;
	snprintf(j->msg, sizeof(j->msg), "appended, but not synced within %.0f s; it is recorded once "
		 "synced (retry the end to learn the outcome)", COMMIT_SYNC_TIMEOUT_S);
	if (j->r->conn)
		write_end_reply(j);
	hand_over(j);
}

/* 1: durable; 0: registered on the partition's high watermark; -1: no
 * memory to wait. */
static int durable_or_wait(txn_job *j)
{
	partition *p = j->cm.p;

	for (int pass = 0; pass < 2; pass++) {
		if (partlog_hw(p->log) >= j->cm.need)
			return 1;
		if (pass == 0 && waitset_add(&j->ws, p) < 0)
			return -1;
		/* registered: re-check, the sync may have landed in between */
	}
	return 0;
}

/* Ends the sync wait, then next(j) — now, or when the queued wake-up task
 * runs (waitset_release). */
static void leave_wait(txn_job *j, void (*next)(txn_job *))
{
	req *r = j->r;

	ev_timer_stop(r->w->loop, &j->timer);
	r->cancel = NULL;
	r->state = NULL;
	j->after_wait = next;
	if (waitset_release(&j->ws))
		next(j);
}

static void wait_orphaned(waitset *ws)
{
	txn_job *j = (txn_job *)((char *)ws - offsetof(txn_job, ws));

	j->after_wait(j);
}

static void wait_woken(waitset *ws)
{
	txn_job *j = (txn_job *)((char *)ws - offsetof(txn_job, ws));
	int rc;

	if (atomic_load(&j->r->w->stop)) {
		leave_wait(j, hand_over); /* the coordinator is going away */
		return;
	}
	rc = durable_or_wait(j);
	if (rc == 1)
		leave_wait(j, submit_mark);
	else if (rc < 0)
		leave_wait(j, sync_timed_out);
}

static void wait_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	leave_wait(t->data, sync_timed_out);
}

/* The connection closed (or the broker stops): keep nothing of the loop. */
static void wait_cancel(req *r)
{
	leave_wait(r->state, hand_over);
}

/* On the request's loop, the batch appended: COMMITTED (and the answer)
 * once it is durable — at once in page-cache durability, after the
 * syncer's fdatasync in fsync durability. */
static void commit_wait(txn_job *j)
{
	req *r = j->r;
	int rc;

	waitset_init(&j->ws, r->w, wait_woken, wait_orphaned);
	j->ws_init = true;
	if (atomic_load(&r->w->stop)) {
		hand_over(j); /* the coordinator may be closed already */
		return;
	}
	rc = durable_or_wait(j);
	if (rc != 0) {
		/* Durable at the re-check after registering: a sync in
		 * between may have posted the wake-up task already, and the
		 * job must outlive it (it lives in the job: released and
		 * reused before the task ran, the loop called a zeroed one). */
		j->after_wait = rc > 0 ? submit_mark : sync_timed_out;
		if (waitset_release(&j->ws))
			j->after_wait(j);
		return;
	}
	r->state = j;
	r->cancel = wait_cancel;
	ev_timer_init(&j->timer, wait_timeout, COMMIT_SYNC_TIMEOUT_S, 0.);
	j->timer.data = j;
	ev_timer_start(r->w->loop, &j->timer);
}

/* Once the end job's batch committed — on the coordinator thread right
 * after the COMMIT (coord_job.early: COMMITTING survives a kill -9, as the
 * append does, and the commit marker covers a power loss), or on the
 * WAL-sync thread completing the round when its batch could not complete
 * early — queues the append for the round hook (txn_commit.h), which
 * appends in commit_seq order before done is posted. */
static void end_after_commit(coord_job *job)
{
	txn_job *j = (txn_job *)job;

	if (j->decision != DECIDE_COMMIT || j->txn.state != HALFSTORE_COMMITTING ||
	    (j->hs_rc != HALFSTORE_OK && j->hs_rc != HALFSTORE_OK_ALREADY))
		return;
	j->cm.txn = &j->txn;
	/* COMMITTING before this end (OK_ALREADY; or sequenced anew by it,
	 * which the recheck finds unchanged) */
	j->cm.recheck = j->hs_rc == HALFSTORE_OK_ALREADY;
	j->staged = true;
	txn_commit_stage(&j->cm);
}

static void end_done(loop_task *t)
{
	txn_job *j = job_of(t);

	if (j->staged && j->cm.kerr) {
		j->kerr = j->cm.kerr;
		snprintf(j->msg, sizeof(j->msg), "%s", j->cm.msg);
	} else if (j->staged && j->cm.p) {
		j->offset = j->cm.offset;
		commit_wait(j);
		return;
	}
	j->offset = j->txn.log_offset;
	if (j->r->conn)
		write_end_reply(j);
	finish_job(j);
}

static void end_reject(req *r, const char *why)
{
	wire_w_i16(&r->resp, KERR_INVALID_REQUEST);
	wire_w_str(&r->resp, why);
	wire_w_i8(&r->resp, -1);
	wire_w_i64(&r->resp, -1);
	req_finish(r);
}

int api_txn_end(req *r, wire_rd *rd)
{
	wire_str group = wire_rd_str(rd);
	int64_t txn_id = wire_rd_i64(rd);
	int8_t decision = wire_rd_i8(rd);
	int8_t flags = wire_rd_i8(rd);
	/* v1: which check an answer is for (its check_count as handed out),
	 * -1 for an end that answers no check */
	int32_t check_no = r->api_version >= 1 ? wire_rd_i32(rd) : CHECKSCHED_ANY_CHECK;
	txn_job *j;

	if (rd->err || group.len < 0)
		return API_MALFORMED;
	if (check_no < -1) {
		end_reject(r, "check_count must be -1 (no check) or the check's check_count");
		return API_OK;
	}
	if (decision < DECIDE_UNKNOWN || decision > DECIDE_RESUME) {
		end_reject(r, "decision must be 0 (unknown), 1 (commit), 2 (rollback) or 3 (resume)");
		return API_OK;
	}
	if (decision == DECIDE_RESUME && !(flags & 1)) {
		end_reject(r, "resume (decision 3) needs the operator flag");
		return API_OK;
	}
	j = job_alloc(r->w, 0);
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = JOB_END;
	j->txn_id = txn_id;
	j->decision = decision;
	j->flags = (flags & 1) ? HALFSTORE_F_OPERATOR : 0;
	j->check_no = check_no; /* -1 = HALFSTORE_ANY_CHECK = CHECKSCHED_ANY_CHECK */
	j->offset = -1;
	j->txn.log_offset = -1;
	j->txn.state = (enum halfstore_state)-1;
	/* A v1 end that names no check never counts as a check's answer; a
	 * decision ends the transaction, whichever check is out. */
	if (decision == DECIDE_UNKNOWN && r->api_version >= 1 && check_no < 0)
		j->check_out = false;
	else
		j->check_out = txn_check_answered(
			txn_id, decision == DECIDE_UNKNOWN ? check_no : CHECKSCHED_ANY_CHECK);
	req_ref(r);
	/* a rollback, answered after its WAL sync, appends nothing: without
	 * the hook it does not hold back the early completion of the commits
	 * of its batch (coord.h) */
	submit(j, end_done, decision == DECIDE_ROLLBACK ? NULL : end_after_commit);
	return API_OK;
}

/* ---- TxnList ---- */

/* The fields a TxnList entry and a TxnDescribe answer share, from txn_id
 * to discard_reason (docs/protocol.md). */
static void write_txn_row(wire_buf *b, const halfstore_txn *x)
{
	wire_w_i64(b, x->txn_id);
	wire_w_str(b, x->producer_group ? x->producer_group : "");
	wire_w_str(b, x->topic ? x->topic : "");
	wire_w_i32(b, x->partition);
	wire_w_i8(b, (int8_t)x->state);
	wire_w_i64(b, x->created_ms);
	wire_w_i64(b, x->ended_ms);
	wire_w_i32(b, x->check_count);
	wire_w_i64(b, x->next_check_ms);
	wire_w_i64(b, x->log_offset);
	wire_w_str(b, x->discard_reason);
}

static void list_done(loop_task *t)
{
	txn_job *j = job_of(t);
	wire_buf *b = &j->r->resp;
	const char *msg;
	int16_t err = job_error(j, &msg);

	wire_w_i16(b, err);
	wire_w_i32(b, err ? 0 : (int32_t)j->nlist);
	for (size_t i = 0; !err && i < j->nlist; i++) {
		write_txn_row(b, &j->list[i]);
		if (j->r->api_version >= 1)
			wire_w_i64(b, j->list[i].dead_letter_offset);
	}
	finish_job(j);
}

int api_txn_list(req *r, wire_rd *rd)
{
	wire_str group = wire_rd_str(rd);
	int32_t mask = wire_rd_i32(rd), limit = wire_rd_i32(rd);
	int64_t after = wire_rd_i64(rd);
	txn_job *j;

	if (rd->err)
		return API_MALFORMED;
	j = job_alloc(r->w, 0);
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = JOB_LIST;
	if (group.len > 0 && !wire_str_copy(group, j->group, sizeof(j->group)))
		j->group[0] = '\0';
	j->state_mask = mask > 0 ? (unsigned)mask & HALFSTORE_MASK_ALL : HALFSTORE_MASK_ALL;
	j->limit = limit > 0 && limit <= 10000 ? limit : 1000;
	j->after = after;
	req_ref(r);
	submit(j, list_done, NULL);
	return API_OK;
}

/* ---- TxnDescribe ---- */

static void describe_done(loop_task *t)
{
	txn_job *j = job_of(t);
	wire_buf *b = &j->r->resp;
	const char *msg;
	int16_t err = job_error(j, &msg);
	halfstore_txn none = { .producer_group = NULL };
	halfstore_txn *x = err ? &none : &j->txn;

	/* on error every field after the message is zero, empty or null */
	wire_w_i16(b, err);
	wire_w_str(b, msg);
	write_txn_row(b, x);
	wire_w_i64(b, x->commit_seq);
	/* a COMMITTED row may keep its batch until the log is synced
	 * (txn_check_record_commit): the message is the log's business then */
	if (x->state == HALFSTORE_COMMITTED)
		wire_w_bytes(b, NULL, -1);
	else
		wire_w_bytes(b, x->batch, (int32_t)x->batch_len);
	if (j->r->api_version >= 1)
		wire_w_i64(b, err ? 0 : x->dead_letter_offset);
	finish_job(j);
}

int api_txn_describe(req *r, wire_rd *rd)
{
	int64_t txn_id = wire_rd_i64(rd);
	txn_job *j;

	if (rd->err)
		return API_MALFORMED;
	j = job_alloc(r->w, 0);
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = JOB_DESCRIBE;
	j->txn_id = txn_id;
	req_ref(r);
	submit(j, describe_done, NULL);
	return API_OK;
}
