/*
 * txn_api.c — Sluice extension APIs for transactional (half) messages,
 * RocketMQ style (docs/transactions.md; byte layouts in docs/protocol.md):
 *   1000 TxnPrepare v0-1  store a half message (a RecordBatch v2) in SQLite
 *   1001 TxnEnd v0        commit (append to the log, exactly once) /
 *                         rollback / unknown / resume (operators)
 *   1003 TxnList v0       list transactions of a producer group (operators)
 *   1004 TxnDescribe v0   one transaction with its batch (operators)
 *   1002 TxnCheckPoll v0-1 check-back long-poll (txn_check.c)
 *
 * Exactly once: a commit first moves the txn to COMMITTING in SQLite with a
 * per-partition commit sequence (txn/halfstore.c), then appends the batch as
 * an idempotent batch of the reserved producer id HALFSTORE_COMMIT_PID with
 * that sequence, then records the offset (COMMITTED), then answers.  A
 * retried end, or start-up recovery of a COMMITTING txn, appends again: the
 * partition's idempotent-producer state answers a duplicate with its
 * original offset, and a sequence at or below the last one appended is
 * taken as appended long ago.
 *
 * That last rule is only true if the appends of a partition happen in
 * commit_seq order, so they all run in the after_commit hooks of the end
 * jobs (coord.h, on a WAL-sync thread of the coordinator, one round at a
 * time): those run one after another in job order, right after the commit
 * that gave the sequences is durable, which is the sequence order.  An
 * append that wrote nothing (disk full) releases its sequence
 * (halfstore_unseq, synchronously in the same hook through coord_lock_db:
 * the statement commits on its own and is synced before the hook goes on);
 * the retried end takes a new one in the coordinator's order, so it is
 * appended after everything sequenced before it.  (Taking the new sequence
 * at the failure, as first built, lost the commit when later ones were
 * appended before the retry: its sequence then read as "appended long
 * ago".)  An end job that read the sequence before it was released finds
 * it in the partition's failed-sequence ring and answers "retry" instead.
 *
 * Durability (fsync): COMMITTED is recorded, and the answer sent, only once
 * the partition's high watermark covers the batch, i.e. after its
 * fdatasync: the request waits on its loop like an acks=-1 produce
 * (waiters.h), the syncer wakes it.  A client gone or a sync not done in
 * COMMIT_SYNC_TIMEOUT_S hands the mark to the ticker (txn_check_mark_later).
 *
 * Threads: handlers and replies on loops; halfstore calls in coordinator
 * jobs (or, for the fix-ups above, under coord_lock_db); appends on
 * the coordinator's WAL-sync threads (one at a time); sync waits on the
 * request's loop.
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
#include "crc32c.h"
#include "halfstore.h"
#include "kerr.h"
#include "recbatch.h"
#include "syncer.h"
#include "topics.h"
#include "txn_api.h"
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

/* Calls _exit(137) if SLUICED_CRASH_AT named p: a crash there, minus the
 * kernel's part (the page cache survives, as with kill -9). */
static void txn_api_crash_point(enum txn_crash_point p)
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

/* ---- the append ---- */

enum {
	APPEND_E_GONE = 1,      /* the topic or partition no longer exists */
	APPEND_E_TOO_LARGE = 2, /* bigger than the topic's segment.bytes */
	APPEND_E_STALE = 3,     /* an append with this sequence failed: it is
				   released, a retried end sequences it anew */
};

/* Under p->pid_lock: the failed-append ring (topics.h). */
static bool seq_failed(const partition *p, int64_t seq)
{
	for (size_t i = 0; i < sizeof(p->txn_failed_seq) / sizeof(p->txn_failed_seq[0]); i++)
		if (p->txn_failed_seq[i] == seq + 1)
			return true;
	return false;
}

static void note_failed_seq(partition *p, int64_t seq)
{
	size_t n = sizeof(p->txn_failed_seq) / sizeof(p->txn_failed_seq[0]);

	p->txn_failed_seq[p->txn_failed_next++ % n] = seq + 1;
}

typedef struct commit_res {
	topic *t;        /* referenced */
	partition *p;
	int64_t offset;  /* -1: appended long ago, offset no longer known */
	int64_t need;    /* the log must be durable up to here before COMMITTED */
} commit_res;

/* Rewrites the producer fields of a committed batch and its CRC. */
static void stamp_commit(uint8_t *batch, size_t len, int64_t commit_seq)
{
	wire_put64(batch + RECBATCH_OFF_PRODUCER_ID, HALFSTORE_COMMIT_PID);
	wire_put16(batch + RECBATCH_OFF_PRODUCER_EPOCH, (uint16_t)halfstore_commit_epoch(commit_seq));
	wire_put32(batch + RECBATCH_OFF_BASE_SEQ, (uint32_t)halfstore_commit_base_seq(commit_seq));
	wire_put32(batch + RECBATCH_OFF_CRC,
		   crc32c(0, batch + RECBATCH_OFF_ATTR, len - RECBATCH_OFF_ATTR));
}

/* Under p->pid_lock: appends t's stamped batch unless it is in the log
 * already.  0 with res->offset/need, PARTLOG_E_TOO_LARGE or -errno. */
static int append_locked(partition *p, halfstore_txn *t, commit_res *res)
{
	int32_t last = t->record_count - 1;
	int16_t epoch = halfstore_commit_epoch(t->commit_seq);
	int32_t seq = halfstore_commit_base_seq(t->commit_seq);
	int64_t base = -1;
	int verdict = pidstate_check(p->pids, HALFSTORE_COMMIT_PID, epoch, seq, seq + last, &base);
	int rc = 0;

	if (seq_failed(p, t->commit_seq)) {
		/* read before its failure released it: not in the log */
		rc = APPEND_E_STALE;
	} else if (verdict == PIDSTATE_DUPLICATE) {
		res->offset = base;
		res->need = base + last + 1;
	} else if (verdict == PIDSTATE_FENCED ||
		   (verdict == PIDSTATE_OUT_OF_ORDER &&
		    pidstate_last_seq(p->pids, HALFSTORE_COMMIT_PID, epoch) >= seq)) {
		/* appended long ago (out of the dedup window): never twice */
		res->offset = -1;
		res->need = partlog_end_offset(p->log);
	} else {
		/* the reserved producer may skip sequences (a commit whose
		 * topic vanished, a re-sequenced one), so gaps are accepted */
		rc = partlog_append(p->log, t->batch, t->batch_len,
				    (int64_t)wire_get64(t->batch + RECBATCH_OFF_MAX_TS), now_ms(), &base);
		if (rc == 0) {
			pidstate_record(p->pids, HALFSTORE_COMMIT_PID, epoch, seq, seq + last, base,
					base + last);
			res->offset = base;
			res->need = base + last + 1;
		} else if (rc < 0) {
			note_failed_seq(p, t->commit_seq);
		}
	}
	return rc;
}

/* Appends a COMMITTING txn's batch once.  Call in commit_seq order per
 * partition (the WAL-sync thread, or main at start-up).  Returns 0 with
 * *res (the caller drops res->t), APPEND_E_GONE, APPEND_E_TOO_LARGE, or
 * -errno (nothing of it reached the log); *res is written only on 0. */
static int append_commit(topics *reg, syncer *sy, halfstore_txn *t, commit_res *res)
{
	topic *tp = topics_get(reg, t->topic, strlen(t->topic));
	commit_res out = { .t = tp, .offset = -1, .need = 0 };
	partition *p;
	int rc = 0;

	if (!tp || t->partition < 0 || t->partition >= tp->nparts) {
		rc = APPEND_E_GONE;
		goto done;
	}
	p = &tp->parts[t->partition];
	out.p = p;
	if (!t->batch) {
		/* the batch is dropped once the offset is recorded: appended */
		out.need = partlog_end_offset(p->log);
	} else {
		stamp_commit(t->batch, t->batch_len, t->commit_seq);
		pthread_mutex_lock(&p->pid_lock);
		rc = append_locked(p, t, &out);
		pthread_mutex_unlock(&p->pid_lock);
		if (rc == PARTLOG_E_TOO_LARGE)
			rc = APPEND_E_TOO_LARGE;
	}
	if (rc == 0 && sy) {
		if (partition_synced(p)) {
			if (partlog_hw(p->log) < out.need)
				syncer_mark_dirty(sy, p);
		} else if (out.offset >= 0) {
			partition_wake(p);
		}
	}
done:
	if (rc != 0) {
		BLOG_RL(BLOG_ERROR, "txn %lld: append to %s-%d failed: %s", (long long)t->txn_id, t->topic,
			t->partition,
			rc < 0 ? strerror(-rc)
			: rc == APPEND_E_GONE ? "no such topic or partition"
			: rc == APPEND_E_STALE ? "an earlier append of this commit failed (sequence released)"
					       : "batch too large");
		if (tp)
			topic_unref(tp);
	} else {
		*res = out;
	}
	return rc;
}

/* After a failed append (WAL-sync thread or start-up): the txn can never
 * be appended (discarded with a reason) or gets a new sequence (retried
 * later).  Returns the Kafka error for the answer and writes its message. */
static int16_t append_failed(sqlite3 *db, halfstore_txn *t, int rc, char *msg, size_t cap)
{
	bool unseq = false;
	int16_t err;
	int hs;

	if (rc == APPEND_E_GONE || rc == APPEND_E_TOO_LARGE) {
		const char *why = rc == APPEND_E_GONE ? "topic deleted"
						      : "batch larger than the topic's segment.bytes";

		hs = halfstore_discard(db, t->txn_id, why, now_ms());
		if (hs == HALFSTORE_OK)
			t->state = HALFSTORE_DISCARDED;
		err = rc == APPEND_E_GONE ? KERR_UNKNOWN_TOPIC_OR_PARTITION : KERR_MESSAGE_TOO_LARGE;
		snprintf(msg, cap, "%s: transaction discarded, nothing appended", why);
	} else {
		/* sequenced anew by the retried end (halfstore.h) */
		hs = halfstore_unseq(db, t->txn_id);
		unseq = true;
		err = KERR_KAFKA_STORAGE_ERROR;
		snprintf(msg, cap, "append failed (%s); nothing appended, retry the commit",
			 strerror(-rc));
	}
	blog(hs == HALFSTORE_OK ? BLOG_WARN : BLOG_ERROR, "txn %lld: %s (%s)", (long long)t->txn_id, msg,
	     hs == HALFSTORE_OK ? (unseq ? "commit sequence released" : "discarded")
				: halfstore_strerror(hs));
	return err;
}

/* ---- start-up recovery ---- */

/* Syncs the fsync-durability partitions in v (main, before the syncer
 * runs: it does what the syncer's round would).  Every one, even when
 * nothing was appended now: a batch found in the log may have been written
 * by the previous process and never synced.  v is in partition order, so
 * one sync per run of the same partition.  0 or -errno. */
static int recover_sync(commit_res *v, size_t n)
{
	partition *prev = NULL;
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		partition *p = v[i].p;
		int64_t end;

		if (!p || p == prev || !partition_synced(p))
			continue;
		prev = p;
		rc = partlog_sync(p->log, &end);
		if (rc == 0) {
			p->ckpt_stale = true;
			p->synced_end = end;
		}
	}
	return rc;
}

/* Start-up, main: COMMITTING rows whose append failed (no commit_seq,
 * listed after the others of their partition) get their new sequence now,
 * durably (synchronous=FULL for that commit) before anything is appended,
 * as a retried end would.  v[i] is replaced by the sequenced row.  0 or -1
 * (logged). */
static int recover_sequence(sqlite3 *db, halfstore_txn *v, size_t n)
{
	sqlite3_stmt *st;
	int sync = 2, rc = 0;
	size_t i;

	for (i = 0; i < n && v[i].commit_seq >= 0; i++)
		;
	if (i == n)
		return 0; /* none */
	if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			sync = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (sqlite3_exec(db, "PRAGMA synchronous=FULL; BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		rc = -1;
	for (size_t k = 0; k < n && rc == 0; k++) {
		halfstore_txn t;
		int hs;

		if (v[k].commit_seq >= 0)
			continue;
		/* t is written on OK, OK_ALREADY, E_CONFLICT, E_DISCARDED */
		hs = halfstore_end(db, v[k].txn_id, HALFSTORE_COMMIT, 0, now_ms(), &t);
		if (hs != HALFSTORE_OK && hs != HALFSTORE_OK_ALREADY) {
			if (hs == HALFSTORE_E_CONFLICT || hs == HALFSTORE_E_DISCARDED)
				halfstore_txn_clear(&t);
			rc = -1;
			break;
		}
		if (t.commit_seq < 0) { /* cannot be: it was just sequenced */
			halfstore_txn_clear(&t);
			rc = -1;
			break;
		}
		halfstore_txn_clear(&v[k]);
		v[k] = t;
	}
	if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = -1;
	if (rc != 0) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		blog(BLOG_ERROR, "transactions: cannot sequence the commits whose append failed: %s",
		     sqlite3_errmsg(db));
	}
	sqlite3_exec(db, sync == 1 ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL,
		     NULL, NULL);
	return rc;
}

int txn_api_recover(sqlite3 *db, topics *reg)
{
	halfstore_txn *v = NULL;
	commit_res *res = NULL;
	size_t n = 0;
	int rc = halfstore_committing(db, &v, &n);
	int ret = -1;

	if (rc != HALFSTORE_OK) {
		blog(BLOG_ERROR, "transactions: cannot list COMMITTING: %s", halfstore_strerror(rc));
		goto out;
	}
	res = calloc(n + 1, sizeof(*res));
	if (!res)
		goto out;
	if (recover_sequence(db, v, n) != 0)
		goto out;
	/* in commit_seq order per partition, as at run time */
	for (size_t i = 0; i < n; i++) {
		char msg[160];

		rc = append_commit(reg, NULL, &v[i], &res[i]);
		if (rc != 0)
			append_failed(db, &v[i], rc, msg, sizeof(msg)); /* res[i].p stays NULL */
	}
	rc = recover_sync(res, n);
	if (rc < 0) {
		blog(BLOG_ERROR, "transactions: cannot sync recovered commits: %s", strerror(-rc));
		goto out;
	}
	/* one transaction for every mark: one WAL sync */
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		if (!res[i].p)
			continue;
		rc = halfstore_mark_committed(db, v[i].txn_id, res[i].offset);
		blog(rc < 0 ? BLOG_ERROR : BLOG_INFO, "transactions: recovered commit of txn %lld: %s (offset %lld)",
		     (long long)v[i].txn_id, rc < 0 ? halfstore_strerror(rc) : "appended once",
		     (long long)res[i].offset);
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		blog(BLOG_ERROR, "transactions: cannot record recovered commits (they stay COMMITTING)");
	}
	ret = 0;
out:
	for (size_t i = 0; res && i < n; i++)
		if (res[i].t)
			topic_unref(res[i].t);
	free(res);
	halfstore_txns_free(v, n);
	return ret;
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
	int16_t kerr;
	char msg[200];           /* the answer's error message when kerr is set */
	halfstore_txn *list;
	size_t nlist;
	int32_t limit;
	int64_t after;
	unsigned state_mask;
	/* commit, after the append */
	commit_res cr;           /* cr.t referenced until handed on */
	waitset ws;              /* waiting for the sync (fsync durability) */
	bool ws_init;
	ev_timer timer;
	void (*after_wait)(struct txn_job *j);
	uint8_t inline_batch[]; /* prepare only: rec.len bytes */
} txn_job;

static txn_job *job_of(loop_task *t)
{
	return (txn_job *)((char *)t - offsetof(txn_job, job.done));
}

static void txn_job_free(txn_job *j)
{
	if (j->ws_init)
		free(j->ws.nodes);
	if (j->cr.t)
		topic_unref(j->cr.t);
	halfstore_txn_clear(&j->txn);
	halfstore_txns_free(j->list, j->nlist);
	free(j);
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

static int run_end(sqlite3 *db, txn_job *j, int64_t now)
{
	enum halfstore_state st = (enum halfstore_state)-1;
	int rc;

	switch (j->decision) {
	case DECIDE_UNKNOWN:
		rc = halfstore_check_answer(db, j->txn_id, HALFSTORE_ANSWER_UNKNOWN, now, &policy, &st);
		j->txn.state = st;
		break;
	case DECIDE_RESUME:
		rc = run_resume(db, j, now);
		break;
	default:
		rc = halfstore_end(db, j->txn_id, (enum halfstore_decision)j->decision, j->flags, now,
				   &j->txn);
		break;
	}
	return rc;
}

/* A concurrent retry may have recorded the commit first (with the offset it
 * knew): answer with what is recorded. */
static int run_mark(sqlite3 *db, txn_job *j)
{
	int rc = halfstore_mark_committed(db, j->txn_id, j->offset);
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
	j = calloc(1, sizeof(*j) + (rec.len > 0 ? (size_t)rec.len : 0));
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
		free(j);
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
	txn_check_mark_later(j->txn_id, j->cr.offset, j->cr.t, j->cr.p, j->cr.need);
	j->cr.t = NULL;
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
	partition *p = j->cr.p;

	for (int pass = 0; pass < 2; pass++) {
		if (partlog_hw(p->log) >= j->cr.need)
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
		waitset_release(&j->ws); /* nothing is linked: nothing pending */
		if (rc > 0)
			submit_mark(j);
		else
			sync_timed_out(j);
		return;
	}
	r->state = j;
	r->cancel = wait_cancel;
	ev_timer_init(&j->timer, wait_timeout, COMMIT_SYNC_TIMEOUT_S, 0.);
	j->timer.data = j;
	ev_timer_start(r->w->loop, &j->timer);
}

/* Coordinator thread, once the end job's batch committed (COMMITTING is
 * durable): the append, in commit_seq order (see the top).  Sets j->cr on
 * success, or j->kerr and its message. */
static void end_after_commit(coord_job *job)
{
	txn_job *j = (txn_job *)job;
	server *srv = j->r->w->srv;
	int rc;

	if (j->decision != DECIDE_COMMIT || j->txn.state != HALFSTORE_COMMITTING ||
	    (j->hs_rc != HALFSTORE_OK && j->hs_rc != HALFSTORE_OK_ALREADY))
		return;
	txn_api_crash_point(TXN_CRASH_COMMIT_MARKED_COMMITTING);
	rc = append_commit(srv->topics, srv->syncer, &j->txn, &j->cr);
	if (rc == APPEND_E_STALE) {
		j->kerr = KERR_KAFKA_STORAGE_ERROR;
		snprintf(j->msg, sizeof(j->msg), "an earlier append of this commit failed; nothing "
			 "appended, retry the commit");
		return;
	}
	if (rc != 0) {
		sqlite3 *db = coord_lock_db(srv->coord);

		j->kerr = append_failed(db, &j->txn, rc, j->msg, sizeof(j->msg));
		if (coord_unlock_db(srv->coord) != SQLITE_OK)
			j->kerr = KERR_KAFKA_STORAGE_ERROR;
		return;
	}
	txn_api_crash_point(TXN_CRASH_COMMIT_APPENDED);
	j->offset = j->cr.offset;
}

static void end_done(loop_task *t)
{
	txn_job *j = job_of(t);

	if (j->cr.p) {
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
	txn_job *j;

	if (rd->err || group.len < 0)
		return API_MALFORMED;
	if (decision < DECIDE_UNKNOWN || decision > DECIDE_RESUME) {
		end_reject(r, "decision must be 0 (unknown), 1 (commit), 2 (rollback) or 3 (resume)");
		return API_OK;
	}
	if (decision == DECIDE_RESUME && !(flags & 1)) {
		end_reject(r, "resume (decision 3) needs the operator flag");
		return API_OK;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = JOB_END;
	j->txn_id = txn_id;
	j->decision = decision;
	j->flags = (flags & 1) ? HALFSTORE_F_OPERATOR : 0;
	j->offset = -1;
	j->txn.log_offset = -1;
	j->txn.state = (enum halfstore_state)-1;
	txn_check_answered(txn_id);
	req_ref(r);
	submit(j, end_done, end_after_commit);
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
	for (size_t i = 0; !err && i < j->nlist; i++)
		write_txn_row(b, &j->list[i]);
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
	wire_w_bytes(b, x->batch, (int32_t)x->batch_len);
	finish_job(j);
}

int api_txn_describe(req *r, wire_rd *rd)
{
	int64_t txn_id = wire_rd_i64(rd);
	txn_job *j;

	if (rd->err)
		return API_MALFORMED;
	j = calloc(1, sizeof(*j));
	if (!j)
		return API_MALFORMED;
	j->r = r;
	j->kind = JOB_DESCRIBE;
	j->txn_id = txn_id;
	req_ref(r);
	submit(j, describe_done, NULL);
	return API_OK;
}
