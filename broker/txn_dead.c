/* txn_dead.c — see txn_dead.h. */
#include "txn_dead.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blog.h"
#include "halfstore.h"
#include "recbatch.h"
#include "syncer.h"
#include "topics.h"

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
static bool full;              /* the last read filled a batch: look again */
static int64_t next_look;      /* mono ms */
static wire_buf out;           /* the copy being built; reused */

void txn_dead_init(const char *name)
{
	snprintf(topic_name, sizeof(topic_name), "%s", name ? name : "");
	next_look = 0;
}

bool txn_dead_due(int64_t mono_now)
{
	return topic_name[0] && (ndone || full || mono_now >= next_look);
}

int txn_dead_run(sqlite3 *db)
{
	int rc = 0;

	for (size_t i = 0; i < ndone && rc >= 0; i++) {
		rc = halfstore_mark_dead_lettered(db, done[i].txn_id, done[i].offset);
		/* E_STATE: an operator resumed it meanwhile; the copy stays */
		if (rc > 0 && rc != HALFSTORE_E_STATE)
			blog(BLOG_WARN, "txn %lld: dead-letter copy at %lld not recorded: %s",
			     (long long)done[i].txn_id, (long long)done[i].offset,
			     halfstore_strerror(rc));
	}
	if (rc >= 0)
		rc = halfstore_dead_letters(db, TXN_DEAD_BATCH, &todo, &ntodo);
	return rc < 0 ? rc : 0;
}

/* A plain copy of a compressed batch (its records cannot take headers
 * without decompressing): producer fields cleared, CRC recomputed. */
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
	recbatch_set_producer(b, x->batch_len, -1, -1, -1);
	return RECBATCH_OK;
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

/* Appends x's copy to t.  0 with *offset; -errno (the disk: try again);
 * or a positive RECBATCH_* / PARTLOG_E_TOO_LARGE (never possible). */
static int append_copy(server *srv, topic *t, const halfstore_txn *x, int64_t *offset)
{
	partition *p = &t->parts[(uint64_t)x->txn_id % (uint64_t)t->nparts];
	int64_t max_ts = 0;
	int rc = build_copy(x);

	if (rc == RECBATCH_OK)
		rc = recbatch_validate(out.data, out.len, NULL, &max_ts);
	if (rc != RECBATCH_OK)
		return rc;
	rc = partlog_append(p->log, out.data, out.len, max_ts, now_ms(), offset);
	if (rc != 0)
		return rc;
	if (partition_synced(p))
		syncer_mark_dirty(srv->syncer, p);
	else
		partition_wake(p);
	return 0;
}

static void write_all(server *srv)
{
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
	for (size_t i = 0; i < ntodo && ndone < TXN_DEAD_BATCH; i++) {
		const halfstore_txn *x = &todo[i];
		int64_t offset;
		int rc = append_copy(srv, t, x, &offset);

		if (rc < 0) {
			/* the disk: read again at the next step */
			BLOG_RL(BLOG_ERROR, "txn %lld: no dead-letter copy in %s yet: %s",
				(long long)x->txn_id, topic_name, strerror(-rc));
			continue;
		}
		if (rc > 0) {
			/* never possible: recorded as given up, so that it does
			 * not hold back the others at every step */
			blog(BLOG_ERROR, "txn %lld: no dead-letter copy in %s: %s; given up (the "
					 "transaction stays DISCARDED with its message)",
			     (long long)x->txn_id, topic_name,
			     rc == PARTLOG_E_TOO_LARGE ? "larger than the topic's segment.bytes"
						       : recbatch_strerror(rc));
			offset = HALFSTORE_DEAD_GIVEN_UP;
		} else {
			blog(BLOG_INFO, "txn %lld (group %s, discarded: %s) copied to %s at offset %lld",
			     (long long)x->txn_id, x->producer_group,
			     x->discard_reason ? x->discard_reason : "", topic_name, (long long)offset);
		}
		done[ndone++] = (copied){ x->txn_id, offset };
	}
	topic_unref(t);
}

void txn_dead_write(server *srv, bool ok, int64_t mono_now)
{
	if (ok) {
		/* the copies are recorded: read again only what is left */
		ndone = 0;
		full = ntodo == TXN_DEAD_BATCH;
		next_look = mono_now + TXN_DEAD_INTERVAL_MS;
		write_all(srv);
	}
	halfstore_txns_free(todo, ntodo);
	todo = NULL;
	ntodo = 0;
}

void txn_dead_stop(void)
{
	halfstore_txns_free(todo, ntodo);
	todo = NULL;
	ntodo = 0;
	ndone = 0;
	wire_buf_free(&out);
}
