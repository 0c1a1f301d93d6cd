/*
 * txn_api.c — Sluice extension APIs for transactional (half) messages,
 * RocketMQ style (docs/transactions.md; byte layouts in docs/protocol.md):
 *   1000 TxnPrepare v0   store a half message (a RecordBatch v2) in SQLite
 *   1001 TxnEnd v0       commit (append to the log, exactly once) / rollback
 *   1003 TxnList v0      list transactions of a producer group (operators)
 *   1002 TxnCheckPoll v0 check-back long-poll (txn_check.c)
 *
 * Exactly once: a commit first moves the txn to COMMITTING in SQLite with a
 * per-partition commit sequence (txn/halfstore.c), then appends the batch as
 * an idempotent batch of the reserved producer id HALFSTORE_COMMIT_PID with
 * that sequence, then records the offset (COMMITTED).  A retried end, or
 * start-up recovery of a COMMITTING txn, appends again: the partition's
 * idempotent-producer state answers a duplicate with its original offset,
 * and a sequence at or below the last one appended is never appended again.
 *
 * Threads: handlers run on loops; every halfstore call runs in a
 * coordinator job; the append runs back on the request's loop.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "crc32c.h"
#include "halfstore.h"
#include "kerr.h"
#include "recbatch.h"
#include "syncer.h"
#include "topics.h"
#include "txn_api.h"

static checksched_policy policy;
static atomic_uint rr_partition;

const checksched_policy *txn_api_policy(void)
{
	return &policy;
}

void txn_api_init(const config *cfg)
{
	checksched_policy_default(&policy);
	policy.timeout_ms = cfg->transaction_timeout_ms;
	policy.max_checks = cfg->transaction_check_max;
}

/* Rewrites the producer fields of a committed batch and its CRC. */
static void stamp_commit(uint8_t *batch, size_t len, int64_t commit_seq)
{
	wire_put64(batch + RECBATCH_OFF_PRODUCER_ID, HALFSTORE_COMMIT_PID);
	wire_put16(batch + RECBATCH_OFF_PRODUCER_EPOCH, (uint16_t)halfstore_commit_epoch(commit_seq));
	wire_put32(batch + RECBATCH_OFF_BASE_SEQ, (uint32_t)halfstore_commit_base_seq(commit_seq));
	wire_put32(batch + RECBATCH_OFF_CRC,
		   crc32c(0, batch + RECBATCH_OFF_ATTR, len - RECBATCH_OFF_ATTR));
}

/* Appends a COMMITTING txn's batch once.  Returns 0 with *offset (-1 when
 * it was appended before but its offset is no longer known), or a Kafka
 * error. */
static int16_t append_commit(topics *reg, syncer *sy, halfstore_txn *t, int64_t *offset)
{
	topic *tp = topics_get(reg, t->topic, strlen(t->topic));
	int32_t last = t->record_count - 1;
	int16_t epoch = halfstore_commit_epoch(t->commit_seq);
	int32_t seq = halfstore_commit_base_seq(t->commit_seq);
	partition *p;
	int64_t base = -1;
	int rc, verdict;

	if (!tp || t->partition < 0 || t->partition >= tp->nparts) {
		if (tp)
			topic_unref(tp);
		return KERR_UNKNOWN_TOPIC_OR_PARTITION;
	}
	p = &tp->parts[t->partition];
	if (!t->batch) {
		/* the batch is dropped once the offset is recorded: appended */
		topic_unref(tp);
		*offset = -1;
		return KERR_NONE;
	}
	stamp_commit(t->batch, t->batch_len, t->commit_seq);
	pthread_mutex_lock(&p->pid_lock);
	verdict = pidstate_check(p->pids, HALFSTORE_COMMIT_PID, epoch, seq, seq + last, &base);
	if (verdict == PIDSTATE_DUPLICATE) {
		*offset = base;
		rc = 0;
	} else if (verdict == PIDSTATE_FENCED ||
		   (verdict == PIDSTATE_OUT_OF_ORDER && pidstate_last_seq(p->pids, HALFSTORE_COMMIT_PID,
								       epoch) >= seq)) {
		/* appended long ago (out of the dedup window): never twice */
		*offset = -1;
		rc = 0;
	} else {
		/* the reserved producer may skip sequences (a commit whose
		 * topic vanished), so gaps are accepted */
		rc = partlog_append(p->log, t->batch, t->batch_len,
				    (int64_t)wire_get64(t->batch + RECBATCH_OFF_MAX_TS), now_ms(), &base);
		if (rc == 0) {
			pidstate_record(p->pids, HALFSTORE_COMMIT_PID, epoch, seq, seq + last, base,
					base + last);
			*offset = base;
		}
	}
	pthread_mutex_unlock(&p->pid_lock);
	if (rc == 0 && base >= 0 && sy) {
		if (partition_synced(p))
			syncer_mark_dirty(sy, p);
		else
			partition_wake(p);
	}
	topic_unref(tp);
	if (rc != 0)
		BLOG_RL(BLOG_ERROR, "txn %lld: append to %s-%d failed: %s", (long long)t->txn_id, t->topic,
			t->partition, rc < 0 ? strerror(-rc) : "batch too large");
	return rc == 0 ? KERR_NONE : KERR_KAFKA_STORAGE_ERROR;
}

int txn_api_recover(sqlite3 *db, topics *reg)
{
	halfstore_txn *v = NULL;
	size_t n = 0;
	int rc = halfstore_committing(db, &v, &n);

	if (rc != HALFSTORE_OK) {
		blog(BLOG_ERROR, "transactions: cannot list COMMITTING: %s", halfstore_strerror(rc));
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		int64_t off = -1;
		int16_t err = append_commit(reg, NULL, &v[i], &off);

		if (err == KERR_NONE)
			halfstore_mark_committed(db, v[i].txn_id, off);
		blog(err ? BLOG_ERROR : BLOG_INFO, "transactions: recovered commit of txn %lld: %s (offset %lld)",
		     (long long)v[i].txn_id, err ? kerr_name(err) : "appended once", (long long)off);
	}
	halfstore_txns_free(v, n);
	return 0;
}

/* ---- jobs ---- */

typedef struct txn_job {
	coord_job job;
	req *r;                  /* referenced */
	int kind;                /* 0 prepare, 1 end, 2 mark committed, 3 list */
	halfstore_prepare_args pa;
	uint8_t *batch;          /* owned copy for prepare */
	char group[256], topic[256];
	int64_t txn_id;
	int decision;            /* 0 unknown, 1 commit, 2 rollback */
	unsigned flags;
	int hs_rc;               /* halfstore outcome */
	halfstore_txn txn;       /* end: the row after the call */
	int64_t offset;
	int16_t kerr;
	halfstore_txn *list;
	size_t nlist;
	int32_t limit;
	int64_t after;
	unsigned state_mask;
} txn_job;

static void txn_job_free(txn_job *j)
{
	free(j->batch);
	halfstore_txn_clear(&j->txn);
	halfstore_txns_free(j->list, j->nlist);
	free(j);
}

static int txn_run(coord_job *job, sqlite3 *db)
{
	txn_job *j = (txn_job *)job;
	int64_t now = now_ms();

	switch (j->kind) {
	case 0:
		j->hs_rc = halfstore_prepare(db, &j->pa, now, &policy, &j->txn_id);
		break;
	case 1:
		if (j->decision == 0) {
			enum halfstore_state st;

			j->hs_rc = halfstore_check_answer(db, j->txn_id, HALFSTORE_ANSWER_UNKNOWN, now, &policy,
							  &st);
			j->txn.state = st;
		} else {
			j->hs_rc = halfstore_end(db, j->txn_id, (enum halfstore_decision)j->decision, j->flags,
						 now, &j->txn);
		}
		break;
	case 2:
		j->hs_rc = halfstore_mark_committed(db, j->txn_id, j->offset);
		break;
	case 3:
		j->hs_rc = halfstore_list(db, j->group[0] ? j->group : NULL, j->state_mask,
					  (size_t)j->limit, j->after, &j->list, &j->nlist);
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

static void write_end_reply(txn_job *j)
{
	wire_buf *b = &j->r->resp;
	int16_t err = j->kerr ? j->kerr : map_hs(j->hs_rc);

	wire_w_i16(b, err);
	wire_w_str(b, err ? (j->kerr ? kerr_name(err) : halfstore_strerror(j->hs_rc)) : NULL);
	wire_w_i8(b, (int8_t)j->txn.state);
	wire_w_i64(b, j->offset);
}

static void finish_job(txn_job *j)
{
	req_finish(j->r);
	req_unref(j->r);
	txn_job_free(j);
}

static void submit(txn_job *j, void (*done)(loop_task *))
{
	j->job.run = txn_run;
	j->job.w = j->r->w;
	j->job.done.fn = done;
	coord_submit(j->r->w->srv->coord, &j->job);
}

/* ---- TxnPrepare ---- */

static void prepare_done(loop_task *t)
{
	txn_job *j = (txn_job *)((char *)t - offsetof(txn_job, job.done));
	int16_t err = j->job.rc != SQLITE_OK ? KERR_KAFKA_STORAGE_ERROR : map_hs(j->hs_rc);

	wire_w_i16(&j->r->resp, err);
	wire_w_str(&j->r->resp, err ? halfstore_strerror(j->hs_rc) : NULL);
	wire_w_i64(&j->r->resp, err ? -1 : j->txn_id);
	finish_job(j);
}

int api_txn_prepare(req *r, wire_rd *rd)
{
	server *srv = r->w->srv;
	wire_str group = wire_rd_str(rd), tname = wire_rd_str(rd);
	int32_t part = wire_rd_i32(rd), timeout_ms = wire_rd_i32(rd);
	wire_str rec = wire_rd_bytes(rd);
	txn_job *j;
	topic *t = NULL;
	topic_conf conf;
	recbatch_hdr h;
	int16_t err = KERR_NONE;
	const char *why = NULL;

	if (rd->err)
		return API_MALFORMED;
	j = calloc(1, sizeof(*j));
	if (!j)
		return API_MALFORMED;
	j->r = r;
	if (!wire_str_copy(group, j->group, sizeof(j->group)) || !j->group[0]) {
		err = KERR_INVALID_REQUEST;
		why = "producer group must be 1-255 bytes";
	} else if (!wire_str_copy(tname, j->topic, sizeof(j->topic)) ||
		   !(t = topics_get(srv->topics, j->topic, strlen(j->topic)))) {
		err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		why = "unknown topic";
	} else if (part < -1 || part >= t->nparts) {
		err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		why = "unknown partition";
	} else if (rec.len <= 0 || recbatch_size((const uint8_t *)rec.ptr, (size_t)rec.len) != (size_t)rec.len) {
		err = KERR_CORRUPT_MESSAGE;
		why = "records must be exactly one RecordBatch v2";
	} else if (recbatch_validate((const uint8_t *)rec.ptr, (size_t)rec.len, &h, NULL) != RECBATCH_OK) {
		err = KERR_CORRUPT_MESSAGE;
		why = "invalid record batch (length, magic, CRC or records)";
	} else if (topic_get_conf(t, &conf), rec.len > conf.max_message_bytes) {
		err = KERR_MESSAGE_TOO_LARGE;
		why = "batch larger than max.message.bytes";
	}
	if (err) {
		wire_w_i16(&r->resp, err);
		wire_w_str(&r->resp, why);
		wire_w_i64(&r->resp, -1);
		if (t)
			topic_unref(t);
		free(j);
		req_finish(r);
		return API_OK;
	}
	if (part == -1)
		part = (int32_t)(atomic_fetch_add(&rr_partition, 1) % (unsigned)t->nparts);
	topic_unref(t);
	j->batch = malloc((size_t)rec.len);
	if (!j->batch) {
		free(j);
		return API_MALFORMED;
	}
	memcpy(j->batch, rec.ptr, (size_t)rec.len);
	j->pa.producer_group = j->group;
	j->pa.topic = j->topic;
	j->pa.partition = part;
	j->pa.batch = j->batch;
	j->pa.batch_len = (size_t)rec.len;
	j->pa.origin = (uint64_t)(uintptr_t)r->conn;
	j->pa.check_timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	req_ref(r);
	submit(j, prepare_done);
	return API_OK;
}

/* ---- TxnEnd ---- */

static void mark_done(loop_task *t)
{
	txn_job *j = (txn_job *)((char *)t - offsetof(txn_job, job.done));

	if (j->job.rc != SQLITE_OK || j->hs_rc < 0)
		j->kerr = KERR_KAFKA_STORAGE_ERROR; /* appended; recovery records it */
	j->hs_rc = HALFSTORE_OK;
	j->txn.state = HALFSTORE_COMMITTED;
	if (j->r->conn)
		write_end_reply(j);
	finish_job(j);
}

static void end_done(loop_task *t)
{
	txn_job *j = (txn_job *)((char *)t - offsetof(txn_job, job.done));
	server *srv = j->r->w->srv;

	j->offset = j->txn.log_offset;
	if (j->job.rc != SQLITE_OK && j->hs_rc >= 0)
		j->kerr = KERR_KAFKA_STORAGE_ERROR;
	if (!j->kerr && j->decision == HALFSTORE_COMMIT && j->txn.state == HALFSTORE_COMMITTING &&
	    (j->hs_rc == HALFSTORE_OK || j->hs_rc == HALFSTORE_OK_ALREADY)) {
		/* append (once), then record the offset */
		j->kerr = append_commit(srv->topics, srv->syncer, &j->txn, &j->offset);
		if (!j->kerr) {
			j->kind = 2;
			submit(j, mark_done);
			return;
		}
	}
	if (j->r->conn)
		write_end_reply(j);
	finish_job(j);
}

int api_txn_end(req *r, wire_rd *rd)
{
	wire_str group = wire_rd_str(rd);
	int64_t txn_id = wire_rd_i64(rd);
	int8_t decision = wire_rd_i8(rd);
	int8_t flags = wire_rd_i8(rd);
	txn_job *j;

	if (rd->err || group.len < 0)
		return API_MALFORMED;
	if (decision < 0 || decision > 2) {
		wire_w_i16(&r->resp, KERR_INVALID_REQUEST);
		wire_w_str(&r->resp, "decision must be 0 (unknown), 1 (commit) or 2 (rollback)");
		wire_w_i8(&r->resp, -1);
		wire_w_i64(&r->resp, -1);
		req_finish(r);
		return API_OK;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = 1;
	j->txn_id = txn_id;
	j->decision = decision;
	j->flags = (flags & 1) ? HALFSTORE_F_OPERATOR : 0;
	j->offset = -1;
	j->txn.log_offset = -1;
	j->txn.state = (enum halfstore_state)-1;
	txn_check_answered(txn_id);
	req_ref(r);
	submit(j, end_done);
	return API_OK;
}

/* ---- TxnList ---- */

static void list_done(loop_task *t)
{
	txn_job *j = (txn_job *)((char *)t - offsetof(txn_job, job.done));
	wire_buf *b = &j->r->resp;
	int16_t err = j->job.rc != SQLITE_OK ? KERR_KAFKA_STORAGE_ERROR : map_hs(j->hs_rc);

	wire_w_i16(b, err);
	wire_w_i32(b, err ? 0 : (int32_t)j->nlist);
	for (size_t i = 0; !err && i < j->nlist; i++) {
		halfstore_txn *x = &j->list[i];

		wire_w_i64(b, x->txn_id);
		wire_w_str(b, x->producer_group);
		wire_w_str(b, x->topic);
		wire_w_i32(b, x->partition);
		wire_w_i8(b, (int8_t)x->state);
		wire_w_i64(b, x->created_ms);
		wire_w_i64(b, x->ended_ms);
		wire_w_i32(b, x->check_count);
		wire_w_i64(b, x->next_check_ms);
		wire_w_i64(b, x->log_offset);
		wire_w_str(b, x->discard_reason);
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
	j = calloc(1, sizeof(*j));
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = 3;
	if (group.len > 0 && !wire_str_copy(group, j->group, sizeof(j->group)))
		j->group[0] = '\0';
	j->state_mask = mask > 0 ? (unsigned)mask & HALFSTORE_MASK_ALL : HALFSTORE_MASK_ALL;
	j->limit = limit > 0 && limit <= 10000 ? limit : 1000;
	j->after = after;
	req_ref(r);
	submit(j, list_done);
	return API_OK;
}
