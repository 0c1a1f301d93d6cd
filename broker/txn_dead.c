/* txn_dead.c — see txn_dead.h. */
#include "txn_dead.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blog.h"
#include "halfstore.h"
#include "partlog.h"
#include "pidstate.h"
#include "recbatch.h"
#include "syncer.h"
#include "topics.h"
#include "txn_api.h"
#include "txn_commit.h"

/* How often an idle broker looks for new discards (they come from checks
 * that went unanswered, seconds apart at the least). */
#define TXN_DEAD_INTERVAL_MS 1000

typedef struct copied {
	int64_t txn_id, offset;
} copied;

/* Handed between the ticker's loop and the coordinator (txn_dead.h). */
static char topic_name[256];   /* "" = off; set before the ticker starts */
static halfstore_txn *todo;    /* owned: read by the last step, to append */
static size_t ntodo;
static copied done[TXN_DEAD_BATCH]; /* appended, to record */
static size_t ndone;
static bool full;              /* the last step made progress and left some:
				  the next one runs at once (txn_dead_again) */
static int32_t nparts;         /* the topic's partitions at the last look
				  (0: no topic), for the numbering */
static uint8_t topic_id[16];   /* and its id: the copies are numbered for it */
static int64_t next_look;      /* mono ms */
static wire_buf out;           /* the copy being built; reused */

void txn_dead_init(const char *name)
{
	snprintf(topic_name, sizeof(topic_name), "%s", name ? name : "");
	next_look = 0;
}

bool txn_dead_due(server *srv, int64_t mono_now)
{
	topic *t;

	if (!topic_name[0] || !(ndone || full || mono_now >= next_look))
		return false;
	t = topics_get(srv->topics, topic_name, strlen(topic_name));
	nparts = t ? t->nparts : 0;
	if (t) {
		memcpy(topic_id, t->id, sizeof(topic_id));
		topic_unref(t);
	}
	return true;
}

/* Before numbering copies for the topic with `id` (or repairing its
 * records): if they were numbered for another topic, the copies not yet
 * recorded are numbered again, for this one.  1 if so, 0, or -errno. */
static int belong_to(sqlite3 *db, const uint8_t id[16])
{
	int64_t n = halfstore_dead_topic(db, id);

	if (n < 0) {
		blog(BLOG_ERROR, "dead-letter topic %s: %s", topic_name,
		     halfstore_strerror((int)n));
		return (int)n;
	}
	if (n > 0)
		blog(BLOG_WARN, "dead-letter topic %s is not the topic the copies were numbered for "
				"(re-created, or transaction.dead.letter.topic changed): %lld copy(ies) "
				"not yet recorded numbered again for it; the records of earlier copies "
				"are offsets in the other topic",
		     topic_name, (long long)(n - 1));
	return n > 0;
}

int txn_dead_run(sqlite3 *db)
{
	bool numbered = false, moved = false;
	int rc = 0;

	for (size_t i = 0; i < ndone && rc >= 0; i++) {
		rc = halfstore_mark_dead_lettered(db, done[i].txn_id, done[i].offset);
		/* E_STATE: an operator resumed it meanwhile; the copy stays */
		if (rc > 0 && rc != HALFSTORE_E_STATE)
			blog(BLOG_WARN, "txn %lld: dead-letter copy at %lld not recorded: %s",
			     (long long)done[i].txn_id, (long long)done[i].offset,
			     halfstore_strerror(rc));
	}
	if (rc >= 0 && nparts > 0) {
		rc = belong_to(db, topic_id);
		moved = rc > 0;
	}
	if (rc >= 0)
		rc = halfstore_dead_letters(db, TXN_DEAD_BATCH, nparts, &todo, &ntodo, &numbered);
	/* records too: were they lost with the WAL, the copies appended
	 * unrecorded would span two steps, more than the dedup window; and a
	 * change of topic (rare), which the records follow */
	return rc < 0 ? rc : numbered || moved || ndone > 0;
}

/* A plain copy of a compressed batch (its records cannot take headers
 * without decompressing), its transactional and control bits cleared. */
static int copy_plain(const halfstore_txn *x)
{
	uint8_t *b;

	wire_buf_reset(&out);
	b = wire_buf_append(&out, x->batch, x->batch_len);
	if (!b)
		return RECBATCH_E_TRUNCATED;
	recbatch_set_base_offset(b, 0);
	wire_put32(b + RECBATCH_OFF_LEADER_EPOCH, (uint32_t)-1); /* outside the CRC */
	wire_put16(b + RECBATCH_OFF_ATTR,
		   (uint16_t)(wire_get16(b + RECBATCH_OFF_ATTR) &
			      ~(RECBATCH_ATTR_TRANSACTIONAL | RECBATCH_ATTR_CONTROL)));
	return RECBATCH_OK; /* producer fields and CRC: append_copy stamps them */
}

static wire_str text(const char *s)
{
	return (wire_str){ s, s ? (int32_t)strlen(s) : -1 };
}

/* The copy of x in `out`: its records with the transaction's headers. */
static int build_copy(const halfstore_txn *x)
{
	char id[24], part[16];
	recbatch_header_kv h[5];
	int rc;

	if (!x->batch || x->batch_len < RECBATCH_HEADER_SIZE)
		return RECBATCH_E_TRUNCATED;
	snprintf(id, sizeof(id), "%" PRId64, x->txn_id);
	snprintf(part, sizeof(part), "%" PRId32, x->partition);
	h[0] = (recbatch_header_kv){ text("sluice.txn.id"), text(id) };
	h[1] = (recbatch_header_kv){ text("sluice.txn.group"), text(x->producer_group) };
	h[2] = (recbatch_header_kv){ text("sluice.txn.topic"), text(x->topic) };
	h[3] = (recbatch_header_kv){ text("sluice.txn.partition"), text(part) };
	h[4] = (recbatch_header_kv){ text("sluice.txn.reason"), text(x->discard_reason) };
	wire_buf_reset(&out);
	rc = recbatch_add_headers(x->batch, x->batch_len, h, 5, &out);
	if (rc == RECBATCH_E_COMPRESSION)
		rc = copy_plain(x);
	return rc;
}

/* Under p->pid_lock: appends the copy in `out` (numbered: x's dead-letter
 * sequence) unless the partition's idempotent-producer state says it is
 * there already, as after a crash between an append and its record.  0
 * with *offset (HALFSTORE_DEAD_UNKNOWN: there, offset out of the dedup
 * window), or -errno / PARTLOG_E_TOO_LARGE from the append. */
static int append_once(partition *p, const halfstore_txn *x, int64_t max_ts, int64_t *offset)
{
	int64_t base = -1;
	enum txn_seq_seen seen = txn_seq_seen(p, HALFSTORE_DEAD_PID, x->dead_letter_seq,
					      x->record_count, &base);
	int64_t now;
	int rc;

	if (seen == TXN_SEQ_DUPLICATE) {
		blog(BLOG_INFO, "txn %lld: dead-letter copy found in the log at offset %lld (appended "
				"before a restart): not appended again",
		     (long long)x->txn_id, (long long)base);
		*offset = base;
		return 0;
	}
	if (seen == TXN_SEQ_LONG_AGO) {
		/* copies are appended in sequence order: a lower one is there */
		blog(BLOG_WARN, "txn %lld: dead-letter copy appended long ago, offset no longer "
				"known: not appended again",
		     (long long)x->txn_id);
		*offset = HALFSTORE_DEAD_UNKNOWN;
		return 0;
	}
	/* new (gaps in the sequence are accepted: a copy given up, a resumed
	 * transaction, keep their numbers) */
	now = now_ms();
	rc = partlog_append(p->log, out.data, out.len, max_ts, now, offset);
	if (rc == 0)
		txn_seq_record(p, HALFSTORE_DEAD_PID, x->dead_letter_seq, x->record_count, *offset,
			       now);
	return rc;
}

/* Appends x's copy to partition p of the dead-letter topic, once.  0 with
 * *offset; -errno (the disk: try again); or a positive RECBATCH_* /
 * PARTLOG_E_TOO_LARGE (never possible). */
static int append_copy(server *srv, partition *p, const halfstore_txn *x, int64_t *offset)
{
	int64_t max_ts = 0;
	int rc = build_copy(x);

	if (rc == RECBATCH_OK) {
		recbatch_set_producer(out.data, out.len, HALFSTORE_DEAD_PID,
				      halfstore_commit_epoch(x->dead_letter_seq),
				      halfstore_commit_base_seq(x->dead_letter_seq));
		rc = recbatch_validate(out.data, out.len, NULL, &max_ts);
	}
	if (rc != RECBATCH_OK)
		return rc;
	pthread_mutex_lock(&p->pid_lock);
	rc = append_once(p, x, max_ts, offset);
	pthread_mutex_unlock(&p->pid_lock);
	if (rc != 0)
		return rc;
	if (partition_synced(p))
		syncer_mark_dirty(srv->syncer, p);
	else
		partition_wake(p);
	return 0;
}

/* Whether x's copy can be appended in this step to the partition it is
 * numbered for (held[] per partition: copies appended this step, or -1
 * after a failure).  At most PIDSTATE_WINDOW per partition and step: then
 * every copy appended and not yet recorded is in the dedup window, so a
 * crash before the record never costs its offset. */
static bool may_append(const halfstore_txn *x, const int *held)
{
	int h = held[x->dead_letter_partition];

	return h >= 0 && h < PIDSTATE_WINDOW;
}

/* Logs and records a copy that can never be written (rc > 0). */
static void give_up(const halfstore_txn *x, int rc, const char *why)
{
	blog(BLOG_ERROR, "txn %lld: no dead-letter copy in %s: %s; given up (the transaction "
			 "stays DISCARDED with its message)",
	     (long long)x->txn_id, topic_name,
	     why ? why : rc == PARTLOG_E_TOO_LARGE ? "larger than the topic's segment.bytes"
						   : recbatch_strerror(rc));
	done[ndone++] = (copied){ x->txn_id, HALFSTORE_DEAD_GIVEN_UP };
}

/* Appends what the last step read, in its order (per partition: sequence
 * order), then hits the test crash point.  Sets `full` if it made progress
 * and left copies for the next step (held back, or a full read): not on
 * a missing topic or a failing disk, which the next look (a second later)
 * tries again. */
static void write_all(server *srv)
{
	bool appended = false, more = ntodo == TXN_DEAD_BATCH;
	int *held;
	topic *t;

	if (!ntodo)
		return;
	t = topics_get(srv->topics, topic_name, strlen(topic_name));
	if (!t) {
		BLOG_RL(BLOG_WARN, "dead-letter topic %s does not exist (create it): %zu discarded "
				   "transaction(s) wait for their copy",
			topic_name, ntodo);
		return;
	}
	if (memcmp(t->id, topic_id, sizeof(topic_id)) != 0) {
		/* re-created since the step numbered them: numbered again for
		 * it by the next step, at once */
		topic_unref(t);
		full = true;
		return;
	}
	held = calloc((size_t)t->nparts, sizeof(*held));
	if (!held) {
		BLOG_RL(BLOG_ERROR, "dead-letter copies: out of memory, tried again later");
		topic_unref(t);
		return;
	}
	for (size_t i = 0; i < ntodo && ndone < TXN_DEAD_BATCH; i++) {
		const halfstore_txn *x = &todo[i];
		int64_t offset;
		int rc;

		if (x->dead_letter_seq < 0)
			continue; /* read before the topic existed: numbered next step */
		/* should not happen: the same topic (checked above) keeps
		 * its partitions */
		if (x->dead_letter_partition < 0 || x->dead_letter_partition >= t->nparts) {
			give_up(x, 0, "the partition it was numbered for no longer exists");
			continue;
		}
		if (!may_append(x, held)) {
			more = more || held[x->dead_letter_partition] >= 0;
			continue;
		}
		rc = append_copy(srv, &t->parts[x->dead_letter_partition], x, &offset);
		if (rc < 0) {
			/* the disk: this partition's later copies wait too (they
			 * must follow it in the log), all tried at the next step */
			BLOG_RL(BLOG_ERROR, "txn %lld: no dead-letter copy in %s yet: %s",
				(long long)x->txn_id, topic_name, strerror(-rc));
			held[x->dead_letter_partition] = -1;
			continue;
		}
		if (rc > 0) {
			give_up(x, rc, NULL);
			/* recorded (-2) by the next step before a later copy of
			 * its partition is appended: were a later one in the log
			 * unrecorded at a crash, it would pass for appended long
			 * ago (-3) */
			held[x->dead_letter_partition] = -1;
			continue;
		}
		held[x->dead_letter_partition]++;
		appended = true;
		blog(BLOG_INFO, "txn %lld (group %s, discarded: %s) copied to %s at offset %lld",
		     (long long)x->txn_id, x->producer_group,
		     x->discard_reason ? x->discard_reason : "", topic_name, (long long)offset);
		done[ndone++] = (copied){ x->txn_id, offset };
	}
	free(held);
	topic_unref(t);
	full = more && ndone > 0;
	if (appended)
		txn_api_crash_point(TXN_CRASH_DEAD_APPENDED);
}

void txn_dead_write(server *srv, bool ok, int64_t mono_now)
{
	if (ok) {
		/* the copies are recorded: read again only what is left */
		ndone = 0;
		next_look = mono_now + TXN_DEAD_INTERVAL_MS;
	}
	full = false;
	if (ok)
		write_all(srv); /* may set full */
	halfstore_txns_free(todo, ntodo);
	todo = NULL;
	ntodo = 0;
}

bool txn_dead_again(void)
{
	return full;
}

void txn_dead_stop(void)
{
	halfstore_txns_free(todo, ntodo);
	todo = NULL;
	ntodo = 0;
	ndone = 0;
	wire_buf_free(&out);
}

int txn_dead_recover(sqlite3 *db, topics *reg)
{
	topic *t;
	int rc = 0;

	if (!topic_name[0] || !(t = topics_get(reg, topic_name, strlen(topic_name))))
		return 0;
	/* another topic's records say nothing of this one's log */
	rc = belong_to(db, t->id);
	for (int32_t k = 0; k < t->nparts && rc == 0; k++) {
		partition *p = &t->parts[k];
		int64_t n = halfstore_dead_lost(db, k, partlog_end_offset(p->log),
						txn_seq_last(p, HALFSTORE_DEAD_PID));

		if (n < 0) {
			blog(BLOG_ERROR, "dead-letter topic %s partition %d: %s", topic_name, k,
			     halfstore_strerror((int)n));
			rc = (int)n;
		} else if (n > 0) {
			blog(BLOG_WARN, "dead-letter topic %s partition %d: %lld recorded copy(ies) lost "
					"with the end of its log (power loss?): copied again, once",
			     topic_name, k, (long long)n);
		}
	}
	topic_unref(t);
	return rc < 0 ? rc : 0;
}
