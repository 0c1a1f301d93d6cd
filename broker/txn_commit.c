/*
 * txn_commit.c — see txn_commit.h.
 *
 * A round's commits are appended partition by partition: under the
 * partition's pid_lock each commit is classified (failed before, duplicate,
 * appended long ago, or new), the new ones go to the log with one
 * partlog_append_v (one write per segment they land in), and the
 * idempotent-producer state records them.  A retried end of the same
 * transaction in the same round has the same sequence as a commit staged
 * just before it: it follows that one (same offset, or same error) instead
 * of being appended twice.  The SQLite fix-ups of failed appends happen
 * after every partition is done, under one coord_lock_db (one WAL sync).
 */
#include "txn_commit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blog.h"
#include "coord.h"
#include "grow.h"
#include "kerr.h"
#include "partlog.h"
#include "pidstate.h"
#include "recbatch.h"
#include "syncer.h"
#include "txn_api.h"
#include "txn_marker.h"

enum {
	APPEND_E_GONE = 1,      /* the topic or partition no longer exists */
	APPEND_E_TOO_LARGE = 2, /* bigger than the topic's segment.bytes */
	APPEND_E_STALE = 3,     /* this sequence was released since the end
				   read it (recheck), or its lead's append
				   failed: a retried end sequences it anew */
	CM_UNDONE = 100,        /* not classified yet */
	CM_QUEUED = 101,        /* new: in the partition's write */
	CM_FOLLOW = 102,        /* same sequence as v[lead], staged before it */
};

/* The round's stage and the scratch of one partition's write: owned by the
 * thread completing rounds (or main at start-up, before that runs). */
static struct {
	txn_commit **v;
	size_t n, cap;
	partlog_batch *pb;   /* per queued commit q: pb[2q] its marker, pb[2q+1] its batch */
	size_t *pbi;         /* queued commit q is v[pbi[q]] */
	uint8_t (*mk)[TXN_MARKER_SIZE]; /* mk[q]: the marker of queued commit q */
	size_t pb_cap, pbi_cap, mk_cap;
	server *srv;
} stage;

/* Rewrites the producer fields of a committed batch and its CRC. */
static void stamp_commit(uint8_t *batch, size_t len, int64_t commit_seq)
{
	recbatch_set_producer(batch, len, HALFSTORE_COMMIT_PID, halfstore_commit_epoch(commit_seq),
			      halfstore_commit_base_seq(commit_seq));
}

static bool grow(void **v, size_t *cap, size_t need, size_t size)
{
	return grow_array(v, cap, need, size, 64) == 0;
}

static bool same_partition(const txn_commit *a, const txn_commit *b)
{
	return a->txn->partition == b->txn->partition && strcmp(a->txn->topic, b->txn->topic) == 0;
}

static void set_ok(txn_commit *c, int64_t offset, int64_t need)
{
	c->rc = 0;
	c->offset = offset;
	c->need = need;
}

enum txn_seq_seen txn_seq_seen(partition *p, int64_t pid, int64_t seq, int32_t count,
			       int64_t *base)
{
	int16_t epoch = halfstore_commit_epoch(seq);
	int32_t first = halfstore_commit_base_seq(seq);
	int verdict = pidstate_check(p->pids, pid, epoch, first, first + count - 1, base);

	if (verdict == PIDSTATE_DUPLICATE)
		return TXN_SEQ_DUPLICATE;
	if (verdict == PIDSTATE_FENCED ||
	    (verdict == PIDSTATE_OUT_OF_ORDER && pidstate_last_seq(p->pids, pid, epoch) >= first))
		return TXN_SEQ_LONG_AGO;
	return TXN_SEQ_NEW;
}

void txn_seq_record(partition *p, int64_t pid, int64_t seq, int32_t count, int64_t base,
		    int64_t now)
{
	int32_t first = halfstore_commit_base_seq(seq);

	if (pidstate_record(p->pids, pid, halfstore_commit_epoch(seq), first, first + count - 1,
			    base, base + count - 1, now) < 0)
		BLOG_RL(BLOG_WARN, "%s-%d: no memory to remember producer %lld's sequence %lld",
			p->topic->name, p->index, (long long)pid, (long long)seq);
}

int64_t txn_seq_last(partition *p, int64_t pid)
{
	int16_t epoch;
	int32_t last;
	bool found;

	pthread_mutex_lock(&p->pid_lock);
	found = pidstate_last(p->pids, pid, &epoch, &last) == 0;
	pthread_mutex_unlock(&p->pid_lock);
	return found ? (int64_t)epoch * HALFSTORE_SEQ_SPAN + last : -1;
}

/* Under p->pid_lock: what to do with c (stamped).  Queues a new one in the
 * write scratch at *m. */
static void classify(partition *p, txn_commit **v, size_t k, size_t *m, int64_t *last_queued)
{
	txn_commit *c = v[k];
	halfstore_txn *t = c->txn;
	int64_t base = -1;
	enum txn_seq_seen seen = txn_seq_seen(p, HALFSTORE_COMMIT_PID, t->commit_seq,
					      t->record_count, &base);

	if (seen == TXN_SEQ_DUPLICATE) {
		set_ok(c, base, base + t->record_count);
	} else if (seen == TXN_SEQ_LONG_AGO) {
		/* appended long ago (out of the dedup window): never twice */
		BLOG_RL(BLOG_WARN, "txn %lld: commit sequence %lld of %s-%d is at or below the "
				   "last appended and out of the dedup window: taken as appended "
				   "before (offset unknown), not appended again",
			(long long)t->txn_id, (long long)t->commit_seq, p->topic->name, p->index);
		set_ok(c, -1, partlog_end_offset(p->log));
	} else if (*m && t->commit_seq <= *last_queued) {
		/* sequences are taken in increasing order: a lower or equal
		 * one not known to pidstate is a retried end of a commit
		 * queued in this round */
		c->rc = APPEND_E_STALE;
		for (size_t q = 0; q < *m; q++) {
			if (v[stage.pbi[q]]->txn->commit_seq == t->commit_seq) {
				c->rc = CM_FOLLOW;
				c->lead = stage.pbi[q];
			}
		}
	} else {
		/* the reserved producer may skip sequences (a commit whose
		 * topic vanished, a re-sequenced one), so gaps are accepted;
		 * its marker goes first, in the same write (txn_marker.h) */
		int64_t max_ts = (int64_t)wire_get64(t->batch + RECBATCH_OFF_MAX_TS);

		txn_marker_build(stage.mk[*m], t->txn_id, t->commit_seq, max_ts);
		stage.pb[2 * *m] = (partlog_batch){
			.batch = stage.mk[*m],
			.len = TXN_MARKER_SIZE,
			.max_ts = max_ts,
		};
		stage.pb[2 * *m + 1] = (partlog_batch){
			.batch = t->batch,
			.len = t->batch_len,
			.max_ts = max_ts,
		};
		stage.pbi[(*m)++] = k;
		*last_queued = t->commit_seq;
		c->rc = CM_QUEUED;
	}
}

/* Under p->pid_lock: writes the m queued commits, each its marker then its
 * batch, and records them in pidstate; a batch too large is skipped with
 * its error, an I/O error fails the rest (nothing of them is in the log).
 * A marker whose batch did not follow it (too large, or a failed write
 * after a segment roll) stays in the log alone: consumers skip it, and
 * start-up only trusts a marker followed by its commit. */
static bool write_queued(partition *p, txn_commit **v, size_t m, int64_t now)
{
	size_t done = 0, n = 2 * m;
	bool appended = false;

	while (done < n) {
		size_t na = 0;
		int r = partlog_append_v(p->log, stage.pb + done, n - done, now, &na);

		for (size_t i = done | 1; i < done + na; i += 2) {
			txn_commit *c = v[stage.pbi[i / 2]];
			int64_t base = stage.pb[i].base_offset;

			txn_seq_record(p, HALFSTORE_COMMIT_PID, c->txn->commit_seq,
				       c->txn->record_count, base, now);
			set_ok(c, base, base + c->txn->record_count);
			c->appended = true;
			appended = true;
		}
		done += na;
		if (r == 0)
			break;
		if (r == PARTLOG_E_TOO_LARGE) {
			v[stage.pbi[done / 2]]->rc = APPEND_E_TOO_LARGE;
			done = (done / 2 + 1) * 2; /* on to the next marker */
			continue;
		}
		for (size_t q = done / 2; q < m; q++) {
			txn_commit *c = v[stage.pbi[q]];

			c->rc = r < 0 ? r : -EIO;
		}
		break;
	}
	return appended;
}

/* Appends every commit of v[i]'s partition from v[i] on (rc CM_UNDONE). */
static void append_partition(topics *reg, syncer *sy, txn_commit **v, size_t n, size_t i,
			     int64_t now)
{
	const halfstore_txn *t0 = v[i]->txn;
	topic *tp = topics_get(reg, t0->topic, strlen(t0->topic));
	int64_t last_queued = -1, need = 0;
	bool appended = false;
	size_t m = 0;
	partition *p;

	if (!tp || t0->partition < 0 || t0->partition >= tp->nparts) {
		for (size_t k = i; k < n; k++)
			if (v[k]->rc == CM_UNDONE && same_partition(v[k], v[i]))
				v[k]->rc = APPEND_E_GONE;
		if (tp)
			topic_unref(tp);
		return;
	}
	p = &tp->parts[t0->partition];
	pthread_mutex_lock(&p->pid_lock);
	for (size_t k = i; k < n; k++) {
		txn_commit *c = v[k];

		if (c->rc != CM_UNDONE || !same_partition(c, v[i]))
			continue;
		if (!c->txn->batch) {
			/* the batch is dropped once the offset is recorded */
			set_ok(c, -1, partlog_end_offset(p->log));
			continue;
		}
		stamp_commit(c->txn->batch, c->txn->batch_len, c->txn->commit_seq);
		classify(p, v, k, &m, &last_queued);
	}
	if (m)
		appended = write_queued(p, v, m, now);
	pthread_mutex_unlock(&p->pid_lock);
	for (size_t k = i; k < n; k++) {
		txn_commit *c = v[k];

		if (c->rc != 0 || c->p || !same_partition(c, v[i]))
			continue;
		topic_ref(tp);
		c->t = tp;
		c->p = p;
		if (c->need > need)
			need = c->need;
	}
	if (sy && need) {
		if (partition_synced(p)) {
			if (partlog_hw(p->log) < need)
				syncer_mark_dirty(sy, p);
		} else if (appended) {
			partition_wake(p);
		}
	}
	topic_unref(tp);
}

/* Appends v[0..n) (commit_seq order within each partition).  Returns 1 if
 * any failed in a way settle() records in SQLite, 0 if not, -1 if there
 * was no memory to start (nothing appended; each is answered "retry"). */
static int append_all(topics *reg, syncer *sy, txn_commit **v, size_t n)
{
	int64_t now = now_ms();
	int failed = 0;

	for (size_t i = 0; i < n; i++) {
		v[i]->rc = v[i]->stale ? APPEND_E_STALE : CM_UNDONE;
		v[i]->t = NULL;
		v[i]->p = NULL;
		v[i]->appended = false;
	}
	if (!grow((void **)&stage.pb, &stage.pb_cap, 2 * n, sizeof(*stage.pb)) ||
	    !grow((void **)&stage.pbi, &stage.pbi_cap, n, sizeof(*stage.pbi)) ||
	    !grow((void **)&stage.mk, &stage.mk_cap, n, sizeof(*stage.mk))) {
		blog(BLOG_ERROR, "txn commits: no memory to append %zu of them", n);
		for (size_t i = 0; i < n; i++)
			v[i]->rc = APPEND_E_STALE;
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (v[i]->rc == CM_UNDONE)
			append_partition(reg, sy, v, n, i, now);
	for (size_t i = 0; i < n; i++) {
		txn_commit *c = v[i];

		if (c->rc == CM_FOLLOW)
			continue;
		if (c->rc != 0) {
			BLOG_RL(BLOG_ERROR, "txn %lld: append to %s-%d failed: %s",
				(long long)c->txn->txn_id, c->txn->topic, c->txn->partition,
				c->rc < 0 ? strerror(-c->rc)
				: c->rc == APPEND_E_GONE ? "no such topic or partition"
				: c->rc == APPEND_E_STALE ? "an earlier append of this commit failed "
							    "(sequence released)"
							  : "batch too large");
			if (c->rc != APPEND_E_STALE)
				failed = 1;
		}
	}
	return failed;
}

/* After a failed append (c->rc): the txn can never be appended (discarded
 * with a reason) or gets a new sequence (retried later).  Sets c->kerr and
 * c->msg. */
static void append_failed(sqlite3 *db, txn_commit *c)
{
	halfstore_txn *t = c->txn;
	bool unseq = false;
	int hs;

	if (t->state == HALFSTORE_COMMITTED && c->rc < 0) {
		/* start-up, an unsynced commit whose copy the log lost, and the
		 * disk refuses it again: it keeps its batch for the next start */
		c->kerr = KERR_KAFKA_STORAGE_ERROR;
		snprintf(c->msg, sizeof(c->msg), "append failed (%s)", strerror(-c->rc));
		blog(BLOG_ERROR, "txn %lld: recorded COMMITTED before its log copy was synced; the "
				 "copy is lost and appending it again failed (%s): tried again at the "
				 "next start", (long long)t->txn_id, strerror(-c->rc));
		return;
	}
	if (t->state == HALFSTORE_COMMITTED) {
		/* start-up, an unsynced commit that can never be appended again
		 * (topic gone, or too large now): it stays COMMITTED at its
		 * offset; its batch is of no use any more */
		hs = halfstore_mark_committed(db, t->txn_id, -1);
		c->kerr = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		snprintf(c->msg, sizeof(c->msg), "cannot append it again");
		blog(BLOG_WARN, "txn %lld: recorded COMMITTED before its log copy was synced, and the "
				"copy cannot be checked or appended again (%s): left COMMITTED at its "
				"offset, batch dropped (%s)",
		     (long long)t->txn_id,
		     c->rc == APPEND_E_GONE ? "topic or partition deleted"
					    : TXN_TOO_LARGE_REASON,
		     halfstore_strerror(hs));
		return;
	}
	if (c->rc == APPEND_E_GONE || c->rc == APPEND_E_TOO_LARGE) {
		const char *why = c->rc == APPEND_E_GONE ? "topic deleted"
							 : TXN_TOO_LARGE_REASON;

		hs = halfstore_discard(db, t->txn_id, why, now_ms());
		if (hs == HALFSTORE_OK)
			t->state = HALFSTORE_DISCARDED;
		c->kerr = c->rc == APPEND_E_GONE ? KERR_UNKNOWN_TOPIC_OR_PARTITION : KERR_MESSAGE_TOO_LARGE;
		snprintf(c->msg, sizeof(c->msg), "%s: transaction discarded, nothing appended", why);
	} else {
		/* sequenced anew by the retried end (halfstore.h) */
		hs = halfstore_unseq(db, t->txn_id);
		unseq = true;
		c->kerr = KERR_KAFKA_STORAGE_ERROR;
		snprintf(c->msg, sizeof(c->msg), "append failed (%s); nothing appended, retry the commit",
			 strerror(-c->rc));
	}
	blog(hs == HALFSTORE_OK ? BLOG_WARN : BLOG_ERROR, "txn %lld: %s (%s)", (long long)t->txn_id,
	     c->msg, hs == HALFSTORE_OK ? (unseq ? "commit sequence released" : "discarded")
					: halfstore_strerror(hs));
}

static bool needs_fixup(const txn_commit *c)
{
	return c->rc != 0 && c->rc != APPEND_E_STALE && c->rc != CM_FOLLOW;
}

/* The answers: failures recorded in db (NULL: could not lock it), then the
 * duplicates take their first copy's outcome. */
static void settle(sqlite3 *db, txn_commit **v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		txn_commit *c = v[i];

		if (c->rc == APPEND_E_STALE) {
			c->kerr = KERR_KAFKA_STORAGE_ERROR;
			snprintf(c->msg, sizeof(c->msg),
				 "an earlier append of this commit failed; nothing appended, retry the commit");
		} else if (needs_fixup(c)) {
			if (db) {
				append_failed(db, c);
			} else {
				c->kerr = KERR_KAFKA_STORAGE_ERROR;
				snprintf(c->msg, sizeof(c->msg), "append failed; retry the commit");
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		txn_commit *c = v[i], *lead;

		if (c->rc != CM_FOLLOW)
			continue;
		lead = v[c->lead];
		c->kerr = lead->rc == 0 ? 0 : KERR_KAFKA_STORAGE_ERROR;
		if (lead->rc != 0)
			snprintf(c->msg, sizeof(c->msg), "%s", lead->msg);
		if (lead->rc == 0) {
			topic_ref(lead->t);
			c->t = lead->t;
			c->p = lead->p;
			c->offset = lead->offset;
			c->need = lead->need;
		}
		c->rc = lead->rc == 0 ? 0 : APPEND_E_STALE;
	}
}

/* The thread completing rounds, before append_all: the retried ends whose
 * row no longer has the sequence they read become stale.  An earlier
 * round released it after a failed append (rounds complete in order, so
 * its fix-ups are in SQLite now), or the row moved on: the commit then
 * answers "retry", which reads the row anew.  COMMITTED with the same
 * sequence is not stale (it was appended: duplicate, or long ago).  One
 * read per retry; first ends take their sequence after every release that
 * could concern them and are not read. */
static void recheck(txn_commit **v, size_t n)
{
	sqlite3 *db = NULL;

	for (size_t i = 0; i < n; i++) {
		txn_commit *c = v[i];
		enum halfstore_state st = HALFSTORE_PENDING;
		int64_t seq = -1;
		int hs;

		c->stale = false;
		if (!c->recheck)
			continue;
		if (!db)
			db = coord_lock_db(stage.srv->coord);
		hs = halfstore_state_seq(db, c->txn->txn_id, &st, &seq);
		c->stale = hs != HALFSTORE_OK || seq != c->txn->commit_seq ||
			   (st != HALFSTORE_COMMITTING && st != HALFSTORE_COMMITTED);
		if (c->stale)
			blog(BLOG_WARN, "txn %lld: a retried end read commit sequence %lld, released "
					"since (its append failed, or it was discarded): answered "
					"\"retry\"",
			     (long long)c->txn->txn_id, (long long)c->txn->commit_seq);
	}
	if (db)
		coord_release_db(stage.srv->coord);
}

void txn_commit_start(server *srv)
{
	stage.srv = srv;
	coord_set_round_hook(srv->coord, txn_commit_flush, srv);
}

void txn_commit_stage(txn_commit *c)
{
	c->kerr = 0;
	c->msg[0] = '\0';
	c->t = NULL;
	c->p = NULL;
	c->offset = -1;
	c->need = 0;
	if (!grow((void **)&stage.v, &stage.cap, stage.n + 1, sizeof(*stage.v))) {
		/* no room to queue it: append what is queued, then it alone */
		txn_commit_flush(stage.srv);
		if (!stage.cap) {
			txn_commit *one[1] = { c };
			server *srv = stage.srv;
			int failed;

			recheck(one, 1);
			failed = append_all(srv->topics, srv->syncer, one, 1);
			sqlite3 *db = failed > 0 ? coord_lock_db(srv->coord) : NULL;

			settle(db, one, 1);
			if (db && coord_unlock_db(srv->coord) != SQLITE_OK && c->kerr == 0)
				c->kerr = KERR_KAFKA_STORAGE_ERROR;
			return;
		}
	}
	stage.v[stage.n++] = c;
}

void txn_commit_flush(void *arg)
{
	server *srv = arg;
	size_t n = stage.n;
	sqlite3 *db = NULL;
	int failed;

	if (!n)
		return;
	txn_api_crash_point(TXN_CRASH_COMMIT_MARKED_COMMITTING);
	recheck(stage.v, n);
	failed = append_all(srv->topics, srv->syncer, stage.v, n);
	for (size_t i = 0; i < n; i++)
		if (stage.v[i]->rc == 0)
			txn_api_crash_point(TXN_CRASH_COMMIT_APPENDED);
	if (failed > 0)
		db = coord_lock_db(srv->coord);
	settle(db, stage.v, n);
	if (db && coord_unlock_db(srv->coord) != SQLITE_OK) {
		/* the fix-ups may not be durable: answer "retry" */
		for (size_t i = 0; i < n; i++)
			if (stage.v[i]->rc != 0)
				stage.v[i]->kerr = KERR_KAFKA_STORAGE_ERROR;
	}
	stage.n = 0;
}

/* ---- start-up recovery ---- */

/* Syncs the partitions in v (main, before the syncer runs: it does what
 * the syncer's round would), whatever their durability: recover_mark then
 * drops the batches, so the log's copies must be on disk.  Every one, even
 * when nothing was appended now: a batch found in the log may have been
 * written by the previous process and never synced.  v is in partition
 * order, so one sync per run of the same partition.  0 or -errno. */
static int recover_sync(txn_commit *v, size_t n)
{
	partition *prev = NULL;
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		partition *p = v[i].p;

		if (!p || p == prev)
			continue;
		prev = p;
		rc = partlog_sync(p->log, NULL);
		if (rc == 0)
			p->ckpt_stale = true;
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

/* Records the recovered commits COMMITTED, in one transaction (one WAL
 * sync).  An unsynced COMMITTED row (page-cache durability) found whole
 * in the log only drops its batch: those are counted, not logged one by
 * one (a clean stop leaves up to a flush interval of them). */
static void recover_mark(sqlite3 *db, txn_commit *c, size_t n)
{
	size_t kept = 0, again = 0;

	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		bool was_committed = c[i].txn->state == HALFSTORE_COMMITTED;
		int rc;

		if (c[i].kerr)
			continue;
		rc = halfstore_mark_committed(db, c[i].txn->txn_id, c[i].offset);
		if (rc >= 0 && was_committed && !c[i].appended) {
			kept++;
			continue;
		}
		again += was_committed && rc >= 0;
		blog(rc < 0 ? BLOG_ERROR : was_committed ? BLOG_DEBUG : BLOG_INFO,
		     "transactions: recovered commit of txn %lld: %s (offset %lld)",
		     (long long)c[i].txn->txn_id,
		     rc < 0 ? halfstore_strerror(rc)
		     : was_committed ? "its log copy was lost (power loss?): appended again, once"
				     : "appended once",
		     (long long)c[i].offset);
	}
	if (kept || again)
		blog(again ? BLOG_WARN : BLOG_INFO,
		     "transactions: %zu commit(s) recorded before their log copy was synced: %zu "
		     "found in the log, %zu lost with it (power loss?) and appended again, once",
		     kept + again, kept, again);
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		blog(BLOG_ERROR, "transactions: cannot record recovered commits (they stay COMMITTING)");
	}
}

/* Start-up, main: the commit sequence that follows the last commit in p's
 * log, from pidstate.  False if the log holds none. */
static bool log_next_seq(partition *p, int64_t *next)
{
	int64_t last = txn_seq_last(p, HALFSTORE_COMMIT_PID);

	if (last >= 0)
		*next = last + 1;
	return last >= 0;
}

/* A commit found in the log behind its marker. */
struct found {
	int64_t txn_id, commit_seq, offset;
};

/* The walk of one partition's log tail for marker + commit pairs at or
 * above next_seq. */
struct marker_scan {
	int64_t next_seq;
	bool have;                   /* the previous batch was a marker */
	int64_t mk_txn, mk_seq, mk_off;
	struct found *v;
	size_t n, cap;
};

static int scan_batch(void *arg, const uint8_t *b, size_t len, const recbatch_hdr *h)
{
	struct marker_scan *sc = arg;
	bool pair = sc->have && h->base_offset == sc->mk_off + 1 &&
		    h->producer_id == HALFSTORE_COMMIT_PID &&
		    h->producer_epoch == halfstore_commit_epoch(sc->mk_seq) &&
		    h->base_sequence == halfstore_commit_base_seq(sc->mk_seq);
	int64_t txn, seq;

	if (txn_marker_parse(b, len, &txn, &seq)) {
		sc->have = true;
		sc->mk_txn = txn;
		sc->mk_seq = seq;
		sc->mk_off = h->base_offset;
		return 0;
	}
	sc->have = false;
	if (!pair || sc->mk_seq < sc->next_seq)
		return 0;
	if (!grow((void **)&sc->v, &sc->cap, sc->n + 1, sizeof(*sc->v)))
		return -ENOMEM;
	sc->v[sc->n++] = (struct found){ sc->mk_txn, sc->mk_seq, h->base_offset };
	return 0;
}

struct commit_probe {
	int64_t offset, seq;
	bool there;
};

static int probe_batch(void *arg, const uint8_t *b, size_t len, const recbatch_hdr *h)
{
	struct commit_probe *pr = arg;

	(void)b;
	(void)len;
	pr->there = h->base_offset == pr->offset && h->producer_id == HALFSTORE_COMMIT_PID &&
		    h->producer_epoch == halfstore_commit_epoch(pr->seq) &&
		    h->base_sequence == halfstore_commit_base_seq(pr->seq);
	return 1; /* the first batch only */
}

/* Start-up, main: whether p's log holds the commit numbered seq at offset.
 * Not when the row is of a deleted topic of the same name (txn_seq
 * continues across the deletion, so its commits are the highest-sequenced
 * rows until the new topic's are recorded): its offset means nothing in
 * this log, and searching from there would miss commits. */
static bool commit_at(partition *p, int64_t offset, int64_t seq)
{
	struct commit_probe pr = { offset, seq, false };

	if (offset >= partlog_end_offset(p->log))
		return false;
	return partition_each_batch(p, offset, probe_batch, &pr) >= 0 && pr.there;
}

/* Start-up, main: the commits of p whose rows a power loss took (the log
 * holds sequences at or above SQLite's next_seq) are found by their
 * markers and recorded COMMITTED (docs/transactions.md "Commit markers"):
 * their check-back would otherwise append them a second time.  0 or -1
 * (logged). */
static int reattach_partition(sqlite3 *db, topic *tp, partition *p)
{
	struct marker_scan sc = { 0 };
	int64_t last_off, last_seq, from, log_next;
	int rc;

	if (!log_next_seq(p, &log_next))
		return 0;
	rc = halfstore_seq_state(db, tp->name, p->index, &sc.next_seq, &last_off, &last_seq);
	if (rc != 0 || log_next <= sc.next_seq)
		return rc == 0 ? 0 : -1;
	from = partlog_start_offset(p->log);
	if (last_off > from && commit_at(p, last_off, last_seq))
		from = last_off;
	rc = partition_each_batch(p, from, scan_batch, &sc);
	for (size_t i = 0; rc == 0 && i < sc.n; i++) {
		const struct found *f = &sc.v[i];
		int hs = halfstore_reattach(db, f->txn_id, tp->name, p->index, f->commit_seq, f->offset,
					    now_ms());

		if (hs < 0)
			rc = hs;
		blog(hs == HALFSTORE_OK || hs == HALFSTORE_OK_ALREADY ? BLOG_WARN : BLOG_ERROR,
		     "transactions: txn %lld found committed in %s-%d at offset %lld after its row was "
		     "lost: %s",
		     (long long)f->txn_id, tp->name, p->index, (long long)f->offset,
		     hs == HALFSTORE_OK ? "recorded COMMITTED" : halfstore_strerror(hs));
	}
	if (rc != 0)
		blog(BLOG_ERROR, "transactions: cannot search %s-%d for commits whose rows were lost: %s",
		     tp->name, p->index, strerror(-rc));
	free(sc.v);
	return rc == 0 ? 0 : -1;
}

/* Start-up, main: p's next commit_seq above the last commit its log holds
 * (halfstore_seq_floor says why), before anything takes a new one.  0 or
 * -1. */
static int raise_seq_floor(sqlite3 *db, topic *tp, partition *p)
{
	int64_t next;

	if (!log_next_seq(p, &next))
		return 0;
	return halfstore_seq_floor(db, tp->name, p->index, next) == 0 ? 0 : -1;
}

/* Start-up, main: fn for every partition, all in one SQLite transaction
 * (rolled back, and `what` logged, if one fails).  0 or -1. */
static int each_partition_in_tx(sqlite3 *db, topics *reg,
				int (*fn)(sqlite3 *db, topic *tp, partition *p), const char *what)
{
	topic **list = NULL;
	int n = 0, rc;

	if (topics_list(reg, &list, &n) < 0)
		return -1;
	rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
	for (int i = 0; i < n && rc == 0; i++)
		for (int32_t k = 0; k < list[i]->nparts && rc == 0; k++)
			rc = fn(db, list[i], &list[i]->parts[k]);
	if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = -1;
	if (rc != 0) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		blog(BLOG_ERROR, "transactions: cannot %s: %s", what, sqlite3_errmsg(db));
	}
	topics_list_free(list, n);
	return rc;
}

int txn_commit_recover(sqlite3 *db, topics *reg)
{
	halfstore_txn *v = NULL;
	txn_commit *c = NULL, **pc = NULL;
	size_t n = 0;
	int rc = halfstore_committing(db, &v, &n);
	int ret = -1;

	if (rc != HALFSTORE_OK) {
		blog(BLOG_ERROR, "transactions: cannot list COMMITTING: %s", halfstore_strerror(rc));
		goto out;
	}
	c = calloc(n + 1, sizeof(*c));
	pc = calloc(n + 1, sizeof(*pc));
	if (!c || !pc)
		goto out;
	if (each_partition_in_tx(db, reg, reattach_partition,
				 "record the commits whose rows were lost") != 0 ||
	    each_partition_in_tx(db, reg, raise_seq_floor,
				 "raise the commit sequences past the logs") != 0 ||
	    recover_sequence(db, v, n) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		c[i].txn = &v[i];
		pc[i] = &c[i];
	}
	/* in commit_seq order per partition, as at run time */
	if (append_all(reg, NULL, pc, n) < 0)
		goto out;
	settle(db, pc, n); /* failures: discarded or sequenced anew (kerr set) */
	rc = recover_sync(c, n);
	if (rc < 0) {
		blog(BLOG_ERROR, "transactions: cannot sync recovered commits: %s", strerror(-rc));
		goto out;
	}
	recover_mark(db, c, n);
	ret = 0;
out:
	for (size_t i = 0; c && i < n; i++)
		if (c[i].t)
			topic_unref(c[i].t);
	free(c);
	free(pc);
	halfstore_txns_free(v, n);
	return ret;
}
