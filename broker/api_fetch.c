/*
 * api_fetch.c — Fetch v4-11 and ListOffsets v1-5.
 *
 * Fetch answers with the segment bytes themselves: the response header and
 * per-partition fields are built in memory, each partition's records are a
 * sendfile(2) range of its segment file (conn.h), so a fetched batch never
 * enters user space.  A fetch that finds fewer than min_bytes waits up to
 * max_wait_ms on the partitions' waiters (woken by the append or sync that
 * publishes new data, not by a polling timer), then answers with what there
 * is.  Fetch sessions (KIP-227) are not kept: session id 0 tells clients to
 * send full fetch requests, which every client supports.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "blog.h"
#include "kerr.h"
#include "recbatch.h"
#include "topics.h"

typedef struct fentry {
	int32_t index;
	int64_t offset;
	int32_t max_bytes;
	partition *p;        /* NULL if the topic or partition is unknown */
	int16_t err;
	partlog_range range; /* filled by gather, released or sent */
} fentry;

typedef struct ftopic {
	char name[TOPIC_NAME_MAX + 1];
	topic *t;            /* referenced, or NULL */
	int first, n;
} ftopic;

typedef struct fetch_state {
	waitset ws;
	ev_timer timer;
	req *r;
	int32_t min_bytes, max_bytes;
	int ntopics, nentries;
	ftopic *topics;
	fentry *entries;
} fetch_state;

static void release_ranges(fetch_state *fs)
{
	for (int i = 0; i < fs->nentries; i++)
		if (fs->entries[i].range.seg)
			partlog_range_release(&fs->entries[i].range);
}

static void fetch_free(req *r)
{
	fetch_state *fs = r->state;

	if (fs->entries)
		release_ranges(fs);
	for (int i = 0; fs->topics && i < fs->ntopics; i++)
		if (fs->topics[i].t)
			topic_unref(fs->topics[i].t);
	waitset_free(&fs->ws);
	free(fs->topics);
	free(fs->entries);
	free(fs);
}

/* Reads the ranges to send; returns the bytes found (errors count as
 * "something to say": they make the fetch answer at once). */
static size_t gather(fetch_state *fs, bool *any_error)
{
	size_t total = 0;
	int32_t budget = fs->max_bytes;

	*any_error = false;
	release_ranges(fs);
	for (int i = 0; i < fs->nentries; i++) {
		fentry *e = &fs->entries[i];
		size_t want;
		int rc;

		e->err = KERR_NONE;
		if (!e->p || atomic_load(&e->p->topic->deleted)) {
			e->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			*any_error = true;
			continue;
		}
		want = (size_t)(e->max_bytes < budget ? e->max_bytes : budget);
		if (want == 0 && total > 0)
			continue; /* response full; the client asks again */
		rc = partlog_read(e->p->log, e->offset, want ? want : 1, &e->range);
		if (rc == PARTLOG_E_OFFSET_OUT_OF_RANGE) {
			e->err = KERR_OFFSET_OUT_OF_RANGE;
			*any_error = true;
			continue;
		}
		if (rc != 0) {
			BLOG_RL(BLOG_ERROR, "fetch %s-%d at %lld: %s", e->p->topic->name, e->index,
				(long long)e->offset, rc < 0 ? strerror(-rc) : "corrupt segment");
			e->err = KERR_KAFKA_STORAGE_ERROR;
			*any_error = true;
			continue;
		}
		if (total > 0 && e->range.len > want) {
			/* Only the first partition with data may pass the
			 * limits with its first batch (KIP-74: so that a batch
			 * larger than them still makes progress); after it they
			 * hold, and this partition's first batch waits for the
			 * next fetch. */
			partlog_range_release(&e->range);
			continue;
		}
		total += e->range.len;
		budget -= (int32_t)(e->range.len < (size_t)budget ? e->range.len : (size_t)budget);
	}
	return total;
}

static void fetch_respond(fetch_state *fs)
{
	req *r = fs->r;
	wire_buf *b = &r->resp;
	int16_t ver = r->api_version;

	ev_timer_stop(r->w->loop, &fs->timer);
	/* A wake-up task may still be queued (a timer answered first): it
	 * then owns a reference and frees nothing but that. */
	if (!waitset_release(&fs->ws))
		req_ref(r);
	r->cancel = NULL;
	wire_w_i32(b, 0); /* throttle */
	if (ver >= 7) {
		wire_w_i16(b, KERR_NONE);
		wire_w_i32(b, 0); /* session id: sessionless */
	}
	wire_w_i32(b, fs->ntopics);
	for (int i = 0; i < fs->ntopics; i++) {
		ftopic *ft = &fs->topics[i];

		wire_w_str(b, ft->name);
		wire_w_i32(b, ft->n);
		for (int k = ft->first; k < ft->first + ft->n; k++) {
			fentry *e = &fs->entries[k];
			int64_t hw = e->p ? partlog_hw(e->p->log) : -1;
			int64_t start = e->p ? partlog_start_offset(e->p->log) : -1;

			wire_w_i32(b, e->index);
			wire_w_i16(b, e->err);
			wire_w_i64(b, hw);
			wire_w_i64(b, hw);          /* last stable offset */
			if (ver >= 5)
				wire_w_i64(b, start);
			wire_w_i32(b, -1);          /* aborted transactions: null */
			if (ver >= 11)
				wire_w_i32(b, -1);  /* preferred read replica */
			if (e->err || !e->range.seg || e->range.len == 0) {
				wire_w_i32(b, 0);
				continue;
			}
			wire_w_i32(b, (int32_t)e->range.len);
			req_add_file(r, &e->range); /* takes the reference */
		}
	}
	/* The answer holds its segments now (req_add_file), which outlive
	 * their partition: the topics can go at once, so that a consumer
	 * that does not read its answer cannot keep a deleted topic (and its
	 * name, which could not be created again) for as long as it stays
	 * connected.  (The entries' ranges were moved into the answer.) */
	for (int i = 0; i < fs->ntopics; i++) {
		if (fs->topics[i].t)
			topic_unref(fs->topics[i].t);
		fs->topics[i].t = NULL;
	}
	/* Nor are the entries needed any more: an answer waiting for its
	 * client to read it keeps only its bytes (conn.c counts them). */
	free(fs->entries);
	fs->entries = NULL;
	fs->nentries = 0;
	free(fs->topics);
	fs->topics = NULL;
	fs->ntopics = 0;
	req_finish(r);
}

static void fetch_wake(waitset *ws)
{
	fetch_state *fs = (fetch_state *)ws;
	bool err;

	if ((int64_t)gather(fs, &err) >= fs->min_bytes || err) {
		fetch_respond(fs);
		return;
	}
	release_ranges(fs);
	for (int i = 0; i < fs->nentries; i++)
		if (fs->entries[i].p && waitset_add(&fs->ws, fs->entries[i].p) < 0)
			break;
	/* re-check after registering: an append may have slipped in */
	if ((int64_t)gather(fs, &err) >= fs->min_bytes || err)
		fetch_respond(fs);
	else
		release_ranges(fs);
}

static void fetch_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	fetch_state *fs = t->data;
	bool err;

	gather(fs, &err);
	fetch_respond(fs);
}

static void fetch_orphaned(waitset *ws)
{
	req_unref(((fetch_state *)ws)->r);
}

static void fetch_cancel(req *r)
{
	fetch_state *fs = r->state;

	ev_timer_stop(r->w->loop, &fs->timer);
	if (!waitset_release(&fs->ws))
		req_ref(r);
}

/* Broker stopping: answer a waiting fetch with what there is. */
static void fetch_shutdown(req *r)
{
	fetch_state *fs = r->state;
	bool err;

	if (!r->cancel)
		return;
	gather(fs, &err);
	fetch_respond(fs);
}

static int parse_fetch(req *r, wire_rd *rd, fetch_state *fs, int32_t *max_wait)
{
	server *srv = r->w->srv;
	int16_t ver = r->api_version;
	const uint8_t *topics_at;
	wire_rd scan;
	int32_t nt;
	int k = 0;

	(void)wire_rd_i32(rd); /* replica id */
	*max_wait = wire_rd_i32(rd);
	fs->min_bytes = wire_rd_i32(rd);
	fs->max_bytes = wire_rd_i32(rd);
	(void)wire_rd_i8(rd);  /* isolation level: no transactions, same data */
	if (ver >= 7) {
		(void)wire_rd_i32(rd);
		(void)wire_rd_i32(rd);
	}
	topics_at = rd->p;
	/* pass 1: count */
	scan = *rd;
	nt = wire_rd_array(&scan, 6);
	for (int32_t i = 0; i < nt && !scan.err; i++) {
		int32_t np;

		(void)wire_rd_str(&scan);
		np = wire_rd_array(&scan, 16);
		for (int32_t j = 0; j < np && !scan.err; j++)
			(void)wire_rd_take(&scan, 4 + (ver >= 9 ? 4 : 0) + 8 + (ver >= 5 ? 8 : 0) + 4);
		fs->nentries += np > 0 ? np : 0;
	}
	if (scan.err)
		return -1;
	fs->ntopics = nt > 0 ? nt : 0;
	fs->topics = calloc((size_t)fs->ntopics + 1, sizeof(*fs->topics));
	fs->entries = calloc((size_t)fs->nentries + 1, sizeof(*fs->entries));
	if (!fs->topics || !fs->entries)
		return -1;
	/* pass 2: fill */
	wire_rd_init(rd, topics_at, (size_t)(rd->end - topics_at));
	nt = wire_rd_array(rd, 6);
	for (int32_t i = 0; i < nt; i++) {
		ftopic *ft = &fs->topics[i];
		wire_str name = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 16);

		if (wire_str_copy(name, ft->name, sizeof(ft->name)))
			ft->t = topics_get(srv->topics, name.ptr, (size_t)name.len);
		ft->first = k;
		ft->n = np;
		for (int32_t j = 0; j < np; j++, k++) {
			fentry *e = &fs->entries[k];

			e->index = wire_rd_i32(rd);
			if (ver >= 9)
				(void)wire_rd_i32(rd); /* current leader epoch */
			e->offset = wire_rd_i64(rd);
			if (ver >= 5)
				(void)wire_rd_i64(rd); /* log start offset (followers) */
			e->max_bytes = wire_rd_i32(rd);
			if (e->max_bytes < 0)
				e->max_bytes = 0;
			if (ft->t && e->index >= 0 && e->index < ft->t->nparts)
				e->p = &ft->t->parts[e->index];
		}
	}
	if (ver >= 7) {
		int32_t nf = wire_rd_array(rd, 6);

		for (int32_t i = 0; i < nf; i++) {
			int32_t np;

			(void)wire_rd_str(rd);
			np = wire_rd_array(rd, 4);
			wire_rd_take(rd, (size_t)(np > 0 ? np : 0) * 4);
		}
	}
	if (ver >= 11)
		(void)wire_rd_str(rd); /* rack id */
	return rd->err ? -1 : 0;
}

int api_fetch(req *r, wire_rd *rd)
{
	fetch_state *fs = calloc(1, sizeof(*fs));
	int32_t max_wait = 0;
	bool err;

	if (!fs)
		return API_MALFORMED;
	r->state = fs;
	r->free_state = fetch_free;
	fs->r = r;
	waitset_init(&fs->ws, r->w, fetch_wake, fetch_orphaned);
	ev_timer_init(&fs->timer, fetch_timeout, 0., 0.);
	fs->timer.data = fs;
	if (parse_fetch(r, rd, fs, &max_wait) < 0)
		return API_MALFORMED;
	if (fs->max_bytes <= 0)
		fs->max_bytes = INT32_MAX;
	if (max_wait <= 0 || (int64_t)gather(fs, &err) >= fs->min_bytes || err || fs->nentries == 0) {
		if (max_wait <= 0)
			gather(fs, &err);
		fetch_respond(fs);
		return API_OK;
	}
	r->cancel = fetch_cancel;
	r->shutdown = fetch_shutdown;
	ev_timer_set(&fs->timer, max_wait / 1000.0, 0.);
	ev_timer_start(r->w->loop, &fs->timer);
	fetch_wake(&fs->ws); /* registers, re-checks */
	return API_OK;
}

/* ---- ListOffsets ---- */

/* partlog finds the first batch whose max timestamp reaches ts; Kafka
 * answers with the record: walk an uncompressed batch to it (a compressed
 * batch is never decompressed, so its answer stays the batch's). */
static void refine_to_record(partlog *log, int64_t ts, int64_t *off, int64_t *found_ts)
{
	partlog_range r;
	recbatch_iter it;
	recbatch_record rec;
	uint8_t *buf;

	if (partlog_read(log, *off, 1, &r) != 0)
		return;
	buf = r.len ? malloc(r.len) : NULL;
	if (buf && pread(r.fd, buf, r.len, r.pos) == (ssize_t)r.len &&
	    recbatch_iter_init(&it, buf, recbatch_size(buf, r.len)) == RECBATCH_OK) {
		while (recbatch_iter_next(&it, &rec) == 1) {
			if (rec.offset >= *off && rec.timestamp >= ts) {
				*off = rec.offset;
				*found_ts = rec.timestamp;
				break;
			}
		}
	}
	free(buf);
	partlog_range_release(&r);
}

static void list_one(wire_buf *b, int16_t ver, topic *t, int32_t index, int64_t ts)
{
	int64_t off = -1, found_ts = -1;
	int16_t err = KERR_NONE;

	if (!t || index < 0 || index >= t->nparts) {
		err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
	} else {
		partlog *log = t->parts[index].log;

		if (ts == -1) {
			off = partlog_hw(log);
		} else if (ts == -2) {
			off = partlog_start_offset(log);
		} else if (ts < 0) {
			err = KERR_INVALID_REQUEST; /* -3 (max timestamp) needs v7 */
		} else {
			int rc = partlog_offset_for_time(log, ts, &off, &found_ts);

			if (rc < 0) {
				err = KERR_KAFKA_STORAGE_ERROR;
				off = -1;
			} else if (off >= partlog_hw(log)) {
				off = found_ts = -1; /* not visible yet */
			} else if (off >= 0) {
				refine_to_record(log, ts, &off, &found_ts);
			}
		}
	}
	wire_w_i32(b, index);
	wire_w_i16(b, err);
	wire_w_i64(b, found_ts);
	wire_w_i64(b, off);
	if (ver >= 4)
		wire_w_i32(b, 0); /* leader epoch */
}

int api_list_offsets(req *r, wire_rd *rd)
{
	server *srv = r->w->srv;
	int16_t ver = r->api_version;
	wire_buf *b = &r->resp;
	int32_t nt;
	wire_rd scan;

	(void)wire_rd_i32(rd); /* replica id */
	if (ver >= 2)
		(void)wire_rd_i8(rd);
	/* validate the framing before answering anything */
	scan = *rd;
	nt = wire_rd_array(&scan, 6);
	for (int32_t i = 0; i < nt && !scan.err; i++) {
		int32_t np;

		(void)wire_rd_str(&scan);
		np = wire_rd_array(&scan, 12);
		wire_rd_take(&scan, (size_t)(np > 0 ? np : 0) * (12 + (ver >= 4 ? 4 : 0)));
	}
	if (scan.err || rd->err)
		return API_MALFORMED;
	if (ver >= 2)
		wire_w_i32(b, 0); /* throttle */
	nt = wire_rd_array(rd, 6);
	wire_w_i32(b, nt < 0 ? 0 : nt);
	for (int32_t i = 0; i < nt; i++) {
		wire_str name = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 12);
		topic *t = name.len >= 0 ? topics_get(srv->topics, name.ptr, (size_t)name.len) : NULL;

		wire_w_strn(b, name.ptr ? name.ptr : "", (int16_t)(name.len > 0 ? name.len : 0));
		wire_w_i32(b, np);
		for (int32_t j = 0; j < np; j++) {
			int32_t index = wire_rd_i32(rd);
			int64_t ts;

			if (ver >= 4)
				(void)wire_rd_i32(rd);
			ts = wire_rd_i64(rd);
			list_one(b, ver, t, index, ts);
		}
		if (t)
			topic_unref(t);
	}
	req_finish(r);
	return API_OK;
}
