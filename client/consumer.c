/*
 * consumer.c — sluice_consumer_t: caller-assigned partitions, background
 * prefetch, zero-copy messages.
 *
 * Owns: the assigned partitions (cpart, freed only at destroy so chunks and
 * in-flight requests may point at them), the queue of fetched chunks, the
 * I/O thread and its kconn, and a second kconn for blocking look-ups.
 *
 * Threads and locking:
 *  - `lock` guards partitions, the chunk queue and its counters.  poll()
 *    walks records under it (a fetch response is split into per-partition
 *    chunks by the I/O thread; records are decoded lazily by poll).
 *  - The I/O thread owns `conn`; `lk_lock` guards `lk` (look-ups).
 * Invariants:
 *  - A chunk holds whole batches of one partition, in offset order, as a
 *    slice of a response buffer it holds a reference on; chunks of a
 *    partition are queued in fetch order.  `epoch` changes on seek: chunks
 *    and responses of an older epoch are dropped.
 *  - At most one Fetch request is in flight; a partition is in it only if it
 *    has fewer than queued.max.messages.kbytes of unconsumed chunks.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cgrp.h"
#include "conf.h"
#include "crc32c.h"
#include "kconn.h"
#include "kerr.h"
#include "recbatch.h"

enum cp_state { CP_NEED_OFFSET, CP_LISTING, CP_FETCHABLE, CP_FETCHING, CP_STOPPED };

struct cpart {
	struct cpart *next;
	char *topic;
	int32_t partition;
	enum cp_state state;
	int64_t fetch_pos;
	int64_t want; /* for CP_NEED_OFFSET: -2 earliest, -1 latest */
	uint32_t epoch;
	int64_t queued_bytes;
	int64_t backoff_until;
	bool eof_reported;
	bool removed;
	bool err_reported;
	int64_t consumed;  /* offset of the last message poll returned + 1, or -1 */
	int64_t committed; /* group: last committed offset known, or -1 */
};

struct chunk {
	struct chunk *next;
	struct cpart *cp;
	uint32_t epoch;
	struct kbuf *buf;
	const uint8_t *p, *end;
	int64_t next_offset;
	recbatch_iter it;
	bool in_batch;
	sluice_err_t err;
	char errstr[384];
	size_t bytes;
};

struct sluice_message {
	struct kbuf *buf;
	sluice_err_t err;
	int32_t partition;
	int64_t offset;
	int64_t ts;
	int ts_type;
	const uint8_t *key, *value, *hdrs;
	int32_t keylen, vlen, nhdrs;
	size_t hdrs_len;
	char *errstr;
	char topic[];
};

struct sluice_consumer {
	struct sluice_conf *conf;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct cpart *parts;
	struct chunk *q_head, *q_tail;
	bool terminate;
	bool wake_pending;
	int wakefd;
	pthread_t thr;
	struct kconn conn;
	int64_t reconnect_at;
	bool fetch_inflight;
	int fetch_ver, lo_ver;
	pthread_mutex_t lk_lock;
	struct kconn lk;
	struct cgrp *grp;  /* set by subscribe(), then fixed until destroy */
	bool manual;       /* partitions were assign()ed by the caller */
};

static void wake_locked(struct sluice_consumer *c)
{
	uint64_t one = 1;

	if (c->wake_pending)
		return;
	c->wake_pending = true;
	if (write(c->wakefd, &one, sizeof(one)) < 0) {
		/* cannot overflow */
	}
}

static void enqueue_locked(struct sluice_consumer *c, struct chunk *ch)
{
	ch->next = NULL;
	if (c->q_tail)
		c->q_tail->next = ch;
	else
		c->q_head = ch;
	c->q_tail = ch;
	ch->cp->queued_bytes += (int64_t)ch->bytes;
	pthread_cond_broadcast(&c->cond);
}

static void chunk_free(struct chunk *ch)
{
	kbuf_unref(ch->buf);
	free(ch);
}

/* Queues an error for a partition (shown once by poll; the message's offset
 * is ch->next_offset, the fetch position unless the caller changes it).
 * Returns the chunk, or NULL when out of memory (nothing queued). */
static struct chunk *error_chunk_locked(struct sluice_consumer *c, struct cpart *cp,
					sluice_err_t err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static struct chunk *error_chunk_locked(struct sluice_consumer *c, struct cpart *cp,
					sluice_err_t err, const char *fmt, ...)
{
	struct chunk *ch = calloc(1, sizeof(*ch));
	va_list ap;

	if (!ch)
		return NULL;
	ch->cp = cp;
	ch->epoch = cp->epoch;
	ch->err = err;
	ch->next_offset = cp->fetch_pos;
	va_start(ap, fmt);
	vsnprintf(ch->errstr, sizeof(ch->errstr), fmt, ap);
	va_end(ap);
	enqueue_locked(c, ch);
	return ch;
}

/* ---- I/O thread ---- */

struct freq {
	struct sluice_consumer *c;
	int n;
	struct {
		struct cpart *cp;
		uint32_t epoch;
		int64_t offset;
	} e[];
};

static struct freq *freq_new(struct sluice_consumer *c, int n)
{
	struct freq *f = malloc(sizeof(*f) + (size_t)n * sizeof(f->e[0]));

	if (f) {
		f->c = c;
		f->n = 0;
	}
	return f;
}

static int freq_find(struct freq *f, wire_str topic, int32_t partition)
{
	for (int i = 0; i < f->n; i++)
		if (f->e[i].cp->partition == partition && wire_str_eq(topic, f->e[i].cp->topic))
			return i;
	return -1;
}

static void partition_error_locked(struct sluice_consumer *c, struct cpart *cp, int16_t perr,
				   int64_t now)
{
	if (perr == KERR_OFFSET_OUT_OF_RANGE) {
		if (c->conf->auto_offset_reset == SLUICE_OFFSET_INVALID) {
			error_chunk_locked(c, cp, perr,
					   "%s [%d]: offset %lld out of range (auto.offset.reset=error)",
					   cp->topic, cp->partition, (long long)cp->fetch_pos);
			cp->state = CP_STOPPED;
		} else {
			cp->state = CP_NEED_OFFSET;
			cp->want = c->conf->auto_offset_reset;
		}
		return;
	}
	if (!cp->err_reported) {
		error_chunk_locked(c, cp, perr, "%s [%d]: %s", cp->topic, cp->partition,
				   sluice_err2str(perr));
		cp->err_reported = true;
	}
	cp->backoff_until = now + (sluice_err_is_retriable(perr) ? c->conf->retry_backoff_ms : 1000);
}

static void fetch_cb(struct kconn *kc, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct freq *f = ctx;
	struct sluice_consumer *c = f->c;
	int64_t now = kclock_ms();
	int ver = req->ver;
	wire_rd rd;
	int32_t nt;

	pthread_mutex_lock(&c->lock);
	c->fetch_inflight = false;
	for (int i = 0; i < f->n; i++)
		if (f->e[i].cp->state == CP_FETCHING && f->e[i].cp->epoch == f->e[i].epoch)
			f->e[i].cp->state = CP_FETCHABLE;
	if (err) {
		pthread_mutex_unlock(&c->lock);
		free(f);
		return;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	wire_rd_i32(&rd); /* throttle */
	if (ver >= 7) {
		wire_rd_i16(&rd);
		wire_rd_i32(&rd);
	}
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt && !rd.err; t++) {
		wire_str topic = wire_rd_str(&rd);
		int32_t np = wire_rd_array(&rd, 4 + 2 + 16 + 4 + 4);

		for (int32_t j = 0; j < np && !rd.err; j++) {
			int32_t idx = wire_rd_i32(&rd);
			int16_t perr = wire_rd_i16(&rd);
			int64_t hwm = wire_rd_i64(&rd);
			int32_t na;
			wire_str recs;
			int k;
			struct cpart *cp;
			const uint8_t *p, *end, *good;
			int64_t next, bad_first = -1, bad_last = -1;
			sluice_err_t berr = 0;

			wire_rd_i64(&rd); /* last stable offset */
			if (ver >= 5)
				wire_rd_i64(&rd);
			na = wire_rd_array(&rd, 16);
			if (na > 0)
				wire_rd_take(&rd, (size_t)na * 16);
			if (ver >= 11)
				wire_rd_i32(&rd);
			recs = wire_rd_bytes(&rd);
			if (rd.err)
				break;
			k = freq_find(f, topic, idx);
			if (k < 0)
				continue;
			cp = f->e[k].cp;
			if (cp->removed || cp->epoch != f->e[k].epoch || cp->state != CP_FETCHABLE)
				continue;
			if (perr) {
				partition_error_locked(c, cp, perr, now);
				continue;
			}
			cp->err_reported = false;
			p = (const uint8_t *)recs.ptr;
			end = p + (recs.len > 0 ? recs.len : 0);
			good = p;
			next = cp->fetch_pos;
			while (end - good >= RECBATCH_HEADER_SIZE) {
				recbatch_hdr h;
				size_t sz = recbatch_size(good, (size_t)(end - good));

				if (!sz || sz > (size_t)(end - good))
					break; /* partial batch at the end */
				if (recbatch_parse_hdr(good, sz, &h) != RECBATCH_OK) {
					berr = SLUICE_ERR_BAD_MSG;
					break;
				}
				if (h.base_offset + h.last_offset_delta < cp->fetch_pos) {
					good += sz; /* wholly below the position */
					continue;
				}
				if (h.attributes & RECBATCH_ATTR_COMPRESSION_MASK) {
					berr = SLUICE_ERR_UNSUPPORTED_COMPRESSION;
					bad_first = h.base_offset;
					bad_last = h.base_offset + h.last_offset_delta;
					break;
				}
				if (c->conf->check_crcs && recbatch_check_crc(good, sz) != RECBATCH_OK) {
					berr = SLUICE_ERR_BAD_MSG;
					break;
				}
				next = h.base_offset + h.last_offset_delta + 1;
				good += sz;
			}
			if (good > p && next > cp->fetch_pos) {
				struct chunk *ch = calloc(1, sizeof(*ch));

				if (ch) {
					kbuf_ref(resp);
					ch->buf = resp;
					ch->cp = cp;
					ch->epoch = cp->epoch;
					ch->p = p;
					ch->end = good;
					ch->next_offset = cp->fetch_pos;
					ch->bytes = (size_t)(good - p);
					enqueue_locked(c, ch);
					cp->fetch_pos = next;
					cp->eof_reported = false;
				}
			} else if (berr) {
				if (berr == SLUICE_ERR_UNSUPPORTED_COMPRESSION) {
					/* Never decompressed (no zlib & co): one error
					 * whose offset is the batch's last, so that
					 * seek(offset + 1) skips exactly this batch. */
					static const char *const codecs[] = {
						"none", "gzip", "snappy", "lz4", "zstd",
					};
					int codec = good[RECBATCH_OFF_ATTR + 1] & 7;
					struct chunk *ech = error_chunk_locked(
						c, cp, berr,
						"%s [%d] offsets %lld..%lld: %s-compressed batch "
						"(codec %d): libsluice reads only uncompressed "
						"batches; partition stopped, seek to %lld to skip it",
						cp->topic, cp->partition, (long long)bad_first,
						(long long)bad_last, codec <= 4 ? codecs[codec] : "unknown",
						codec, (long long)bad_last + 1);

					if (ech)
						ech->next_offset = bad_last;
				} else
					error_chunk_locked(c, cp, berr,
							   "%s [%d] offset %lld: malformed or corrupt batch",
							   cp->topic, cp->partition,
							   (long long)cp->fetch_pos);
				cp->state = CP_STOPPED;
			} else if (good == p && recs.len > 0 && end - p >= 12 && next == cp->fetch_pos &&
				   recbatch_size(p, (size_t)(end - p)) > (size_t)(end - p)) {
				/* A batch larger than the partition limit. */
				error_chunk_locked(c, cp, SLUICE_ERR_MSG_SIZE_TOO_LARGE,
						   "%s [%d] offset %lld: batch larger than "
						   "max.partition.fetch.bytes",
						   cp->topic, cp->partition, (long long)cp->fetch_pos);
				cp->state = CP_STOPPED;
			} else if (next >= hwm && c->conf->partition_eof && !cp->eof_reported) {
				error_chunk_locked(c, cp, SLUICE_ERR_PARTITION_EOF, "%s [%d] at offset %lld",
						   cp->topic, cp->partition, (long long)next);
				cp->eof_reported = true;
			}
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(f);
}

static void send_fetch(struct sluice_consumer *c, struct freq *f)
{
	struct kreq *r = kreq_new(&c->conn, API_FETCH, (int16_t)c->fetch_ver);
	int ver = c->fetch_ver;

	if (!r) {
		free(f);
		return;
	}
	r->extra_timeout_ms = c->conf->fetch_max_wait_ms;
	wire_w_i32(&r->wb, -1);
	wire_w_i32(&r->wb, c->conf->fetch_max_wait_ms);
	wire_w_i32(&r->wb, c->conf->fetch_min_bytes);
	wire_w_i32(&r->wb, c->conf->fetch_max_bytes);
	wire_w_i8(&r->wb, 0); /* read_uncommitted */
	if (ver >= 7) {
		wire_w_i32(&r->wb, 0);
		wire_w_i32(&r->wb, -1);
	}
	/* One topic entry per partition (simple and valid). */
	wire_w_i32(&r->wb, f->n);
	for (int i = 0; i < f->n; i++) {
		wire_w_str(&r->wb, f->e[i].cp->topic);
		wire_w_i32(&r->wb, 1);
		wire_w_i32(&r->wb, f->e[i].cp->partition);
		if (ver >= 9)
			wire_w_i32(&r->wb, -1);
		wire_w_i64(&r->wb, f->e[i].offset);
		if (ver >= 5)
			wire_w_i64(&r->wb, -1);
		wire_w_i32(&r->wb, c->conf->max_partition_fetch_bytes);
	}
	if (ver >= 7)
		wire_w_i32(&r->wb, 0);
	if (ver >= 11)
		wire_w_str(&r->wb, "");
	c->fetch_inflight = true;
	kconn_send(&c->conn, r, fetch_cb, f);
}

static void list_cb(struct kconn *kc, struct kreq *req, int err, struct kbuf *resp, void *ctx)
{
	struct freq *f = ctx;
	struct sluice_consumer *c = f->c;
	int64_t now = kclock_ms();
	int ver = req->ver;
	wire_rd rd;
	int32_t nt;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < f->n; i++)
		if (f->e[i].cp->state == CP_LISTING && f->e[i].cp->epoch == f->e[i].epoch) {
			f->e[i].cp->state = CP_NEED_OFFSET;
			if (err)
				f->e[i].cp->backoff_until = now + c->conf->retry_backoff_ms;
		}
	if (!err) {
		wire_rd_init(&rd, resp->data + 4, resp->len - 4);
		if (ver >= 2)
			wire_rd_i32(&rd);
		nt = wire_rd_array(&rd, 6);
		for (int32_t t = 0; t < nt && !rd.err; t++) {
			wire_str topic = wire_rd_str(&rd);
			int32_t np = wire_rd_array(&rd, 22);

			for (int32_t j = 0; j < np && !rd.err; j++) {
				int32_t idx = wire_rd_i32(&rd);
				int16_t perr = wire_rd_i16(&rd);
				int64_t off;
				int k;

				wire_rd_i64(&rd);
				off = wire_rd_i64(&rd);
				if (ver >= 4)
					wire_rd_i32(&rd);
				k = freq_find(f, topic, idx);
				if (rd.err || k < 0)
					continue;
				if (f->e[k].cp->epoch != f->e[k].epoch || f->e[k].cp->removed)
					continue;
				if (perr) {
					partition_error_locked(c, f->e[k].cp, perr, now);
					continue;
				}
				f->e[k].cp->fetch_pos = off;
				f->e[k].cp->state = CP_FETCHABLE;
				f->e[k].cp->err_reported = false;
			}
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(f);
}

static void send_list(struct sluice_consumer *c, struct freq *f)
{
	struct kreq *r = kreq_new(&c->conn, API_LIST_OFFSETS, (int16_t)c->lo_ver);

	if (!r) {
		free(f);
		return;
	}
	wire_w_i32(&r->wb, -1);
	if (c->lo_ver >= 2)
		wire_w_i8(&r->wb, 0);
	wire_w_i32(&r->wb, f->n);
	for (int i = 0; i < f->n; i++) {
		wire_w_str(&r->wb, f->e[i].cp->topic);
		wire_w_i32(&r->wb, 1);
		wire_w_i32(&r->wb, f->e[i].cp->partition);
		if (c->lo_ver >= 4)
			wire_w_i32(&r->wb, -1);
		wire_w_i64(&r->wb, f->e[i].offset);
	}
	kconn_send(&c->conn, r, list_cb, f);
}

static void *io_main(void *arg)
{
	struct sluice_consumer *c = arg;

	for (;;) {
		int64_t now = kclock_ms(), next = now + 1000;
		struct freq *ff = NULL, *lf = NULL;
		struct pollfd pfd[2];
		int nparts = 0, timeout;
		bool was_up;

		if (!kconn_up(&c->conn) && now >= c->reconnect_at) {
			int rc = kconn_connect(&c->conn, c->conf->request_timeout_ms < 10000
								 ? c->conf->request_timeout_ms
								 : 10000);

			now = kclock_ms();
			if (rc) {
				c->reconnect_at = now + (c->conf->reconnect_backoff_ms ?: 1);
			} else {
				c->fetch_ver = kconn_version(&c->conn, API_FETCH, 4, 11);
				c->lo_ver = kconn_version(&c->conn, API_LIST_OFFSETS, 1, 5);
			}
		}
		was_up = kconn_up(&c->conn);
		pthread_mutex_lock(&c->lock);
		c->wake_pending = false;
		if (c->terminate) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		for (struct cpart *cp = c->parts; cp; cp = cp->next)
			nparts++;
		if (kconn_up(&c->conn) && nparts) {
			ff = c->fetch_inflight ? NULL : freq_new(c, nparts);
			lf = freq_new(c, nparts);
			for (struct cpart *cp = c->parts; cp; cp = cp->next) {
				if (cp->removed)
					continue;
				if (cp->backoff_until > now) {
					if (cp->backoff_until < next)
						next = cp->backoff_until;
					continue;
				}
				if (cp->state == CP_NEED_OFFSET && lf) {
					if (c->lo_ver < 0) {
						error_chunk_locked(c, cp, SLUICE_ERR_UNSUPPORTED_FEATURE,
								   "broker lacks ListOffsets v1+");
						cp->state = CP_STOPPED;
						continue;
					}
					cp->state = CP_LISTING;
					lf->e[lf->n].cp = cp;
					lf->e[lf->n].epoch = cp->epoch;
					lf->e[lf->n++].offset = cp->want;
				} else if (cp->state == CP_FETCHABLE && ff &&
					   cp->queued_bytes < c->conf->queued_max_kbytes * 1024) {
					if (c->fetch_ver < 0) {
						error_chunk_locked(c, cp, SLUICE_ERR_UNSUPPORTED_FEATURE,
								   "broker lacks Fetch v4+");
						cp->state = CP_STOPPED;
						continue;
					}
					cp->state = CP_FETCHING;
					ff->e[ff->n].cp = cp;
					ff->e[ff->n].epoch = cp->epoch;
					ff->e[ff->n++].offset = cp->fetch_pos;
				}
			}
		}
		pthread_mutex_unlock(&c->lock);
		if (lf && lf->n)
			send_list(c, lf);
		else
			free(lf);
		if (ff && ff->n)
			send_fetch(c, ff);
		else
			free(ff);
		if (kconn_up(&c->conn) && (kconn_events(&c->conn) & POLLOUT))
			kconn_io(&c->conn, POLLOUT, kclock_ms());
		now = kclock_ms();
		{
			int tc = kconn_check_timeouts(&c->conn, now);

			if (now + tc < next)
				next = now + tc;
		}
		if (!kconn_up(&c->conn) && c->reconnect_at < next)
			next = c->reconnect_at;
		timeout = next > now ? (int)(next - now) : 0;
		pfd[0].fd = c->wakefd;
		pfd[0].events = POLLIN;
		pfd[1].fd = c->conn.fd;
		pfd[1].events = kconn_events(&c->conn);
		if (poll(pfd, pfd[1].fd >= 0 ? 2 : 1, timeout) > 0) {
			if (pfd[0].revents & POLLIN) {
				uint64_t v;

				if (read(c->wakefd, &v, sizeof(v)) < 0) {
					/* EAGAIN */
				}
			}
			if (pfd[1].fd >= 0 && pfd[1].revents)
				kconn_io(&c->conn, pfd[1].revents, kclock_ms());
		}
		/* Lost during this round: reconnect after the backoff (only
		 * then; see producer.c). */
		if (was_up && !kconn_up(&c->conn))
			c->reconnect_at = kclock_ms() + c->conf->reconnect_backoff_ms;
	}
	kconn_close(&c->conn, SLUICE_ERR_DESTROYED, NULL);
	return NULL;
}

/* ---- public ---- */

sluice_consumer_t *sluice_consumer_new(sluice_conf_t *conf, char *errstr, size_t errstr_size)
{
	struct sluice_consumer *c;

	if (!conf) {
		conf_errf(errstr, errstr_size, "conf must not be NULL");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		conf_errf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	c->conf = conf;
	c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->wakefd < 0) {
		conf_errf(errstr, errstr_size, "eventfd: %s", strerror(errno));
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->lk_lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	kconn_init(&c->conn, conf);
	kconn_init(&c->lk, conf);
	if (pthread_create(&c->thr, NULL, io_main, c)) {
		conf_errf(errstr, errstr_size, "cannot start the I/O thread");
		close(c->wakefd);
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->lk_lock);
		pthread_cond_destroy(&c->cond);
		free(c);
		return NULL;
	}
	return c; /* owns conf from here on */
}

void sluice_consumer_destroy(sluice_consumer_t *c)
{
	if (!c)
		return;
	cgrp_destroy(c->grp); /* commits and leaves while the partitions exist */
	pthread_mutex_lock(&c->lock);
	c->terminate = true;
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thr, NULL);
	kconn_close(&c->lk, SLUICE_ERR_DESTROYED, NULL);
	while (c->q_head) {
		struct chunk *ch = c->q_head;

		c->q_head = ch->next;
		chunk_free(ch);
	}
	while (c->parts) {
		struct cpart *cp = c->parts;

		c->parts = cp->next;
		free(cp->topic);
		free(cp);
	}
	close(c->wakefd);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->lk_lock);
	pthread_cond_destroy(&c->cond);
	sluice_conf_destroy(c->conf);
	free(c);
}

static struct cpart *cpart_find(struct sluice_consumer *c, const char *topic, int32_t partition)
{
	for (struct cpart *cp = c->parts; cp; cp = cp->next)
		if (!cp->removed && cp->partition == partition && !strcmp(cp->topic, topic))
			return cp;
	return NULL;
}

static void cpart_set_offset(struct sluice_consumer *c, struct cpart *cp, int64_t offset)
{
	cp->epoch++;
	cp->backoff_until = 0;
	cp->eof_reported = false;
	cp->err_reported = false;
	if (offset == SLUICE_OFFSET_INVALID)
		offset = c->conf->auto_offset_reset == SLUICE_OFFSET_INVALID ? SLUICE_OFFSET_END
									     : c->conf->auto_offset_reset;
	if (offset >= 0) {
		cp->fetch_pos = offset;
		cp->state = CP_FETCHABLE;
	} else {
		cp->want = offset;
		cp->state = CP_NEED_OFFSET;
	}
	/* queued chunks of the old epoch are dropped by poll */
	wake_locked(c);
}

static sluice_err_t assign_locked(struct sluice_consumer *c, const char *topic, int32_t partition,
				  int64_t offset, int64_t committed);

sluice_err_t sluice_consumer_assign(sluice_consumer_t *c, const char *topic, int32_t partition,
				    int64_t offset)
{
	sluice_err_t err;

	if (!c || !topic || !*topic || partition < 0 ||
	    (offset < 0 && offset != SLUICE_OFFSET_BEGINNING && offset != SLUICE_OFFSET_END &&
	     offset != SLUICE_OFFSET_INVALID))
		return SLUICE_ERR_INVALID_ARG;
	if (c->grp)
		return SLUICE_ERR_STATE; /* the group assigns */
	pthread_mutex_lock(&c->lock);
	c->manual = true;
	err = assign_locked(c, topic, partition, offset, -1);
	pthread_mutex_unlock(&c->lock);
	return err;
}

static sluice_err_t assign_locked(struct sluice_consumer *c, const char *topic, int32_t partition,
				  int64_t offset, int64_t committed)
{
	struct cpart *cp;

	cp = cpart_find(c, topic, partition);
	if (!cp) {
		cp = calloc(1, sizeof(*cp));
		if (!cp || !(cp->topic = strdup(topic))) {
			free(cp);
			return SLUICE_ERR_NO_MEMORY;
		}
		cp->partition = partition;
		cp->next = c->parts;
		c->parts = cp;
	}
	cp->consumed = -1;
	cp->committed = committed;
	cpart_set_offset(c, cp, offset);
	return SLUICE_ERR_NO_ERROR;
}

sluice_err_t sluice_consumer_seek(sluice_consumer_t *c, const char *topic, int32_t partition,
				  int64_t offset)
{
	struct cpart *cp;

	if (!c || !topic)
		return SLUICE_ERR_INVALID_ARG;
	if (offset < 0 && offset != SLUICE_OFFSET_BEGINNING && offset != SLUICE_OFFSET_END &&
	    offset != SLUICE_OFFSET_INVALID)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&c->lock);
	cp = cpart_find(c, topic, partition);
	if (cp)
		cpart_set_offset(c, cp, offset);
	pthread_mutex_unlock(&c->lock);
	return cp ? SLUICE_ERR_NO_ERROR : SLUICE_ERR_STATE;
}

sluice_err_t sluice_consumer_unassign(sluice_consumer_t *c, const char *topic, int32_t partition)
{
	struct cpart *cp;

	if (!c || !topic)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&c->lock);
	cp = cpart_find(c, topic, partition);
	if (cp) {
		cp->removed = true;
		cp->epoch++;
	}
	pthread_mutex_unlock(&c->lock);
	return cp ? SLUICE_ERR_NO_ERROR : SLUICE_ERR_STATE;
}

static sluice_message_t *msg_new(const struct chunk *ch)
{
	size_t tl = strlen(ch->cp->topic) + 1;
	struct sluice_message *m = malloc(sizeof(*m) + tl);

	if (!m)
		return NULL;
	memcpy(m->topic, ch->cp->topic, tl);
	m->partition = ch->cp->partition;
	m->buf = NULL;
	m->errstr = NULL;
	m->err = 0;
	return m;
}

/* A message carrying only an error of the consumer itself (no partition):
 * topic "", partition -1, offset -1.  NULL when out of memory. */
static sluice_message_t *msg_err_new(sluice_err_t err, const char *errstr)
{
	struct sluice_message *m = calloc(1, sizeof(*m) + 1);

	if (!m)
		return NULL;
	m->err = err;
	m->errstr = strdup(errstr);
	m->partition = -1;
	m->offset = -1;
	m->keylen = m->vlen = -1;
	m->ts = -1;
	return m;
}

/* A control batch (a transaction marker, docs/transactions.md) is never
 * delivered; the position moves past it, as Kafka's clients do, so that a
 * marker after the last message does not show as lag. */
static void skip_control(struct chunk *ch, const uint8_t *b, size_t sz)
{
	recbatch_hdr h;
	int64_t next;

	if (recbatch_parse_hdr(b, sz, &h) != RECBATCH_OK)
		return;
	next = h.base_offset + h.last_offset_delta + 1;
	if (next > ch->next_offset) {
		ch->next_offset = next;
		ch->cp->consumed = next;
	}
}

/* Pops the head chunk (lock held) and lets the I/O thread refill. */
static void pop_chunk_locked(struct sluice_consumer *c)
{
	struct chunk *ch = c->q_head;
	int64_t limit = c->conf->queued_max_kbytes * 1024;
	bool was_full = ch->cp->queued_bytes >= limit;

	c->q_head = ch->next;
	if (!c->q_head)
		c->q_tail = NULL;
	ch->cp->queued_bytes -= (int64_t)ch->bytes;
	if (was_full && ch->cp->queued_bytes < limit)
		wake_locked(c);
	chunk_free(ch);
}

sluice_message_t *sluice_consumer_poll(sluice_consumer_t *c, int timeout_ms)
{
	struct timespec deadline;
	struct sluice_message *m = NULL;

	if (!c)
		return NULL;
	if (timeout_ms > 0) {
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct chunk *ch = c->q_head;
		recbatch_record rec;
		int rc;

		if (c->grp && cgrp_pending(c->grp)) {
			/* rebalance callbacks run here, on the caller's thread */
			char errstr[512];
			sluice_err_t fatal;

			pthread_mutex_unlock(&c->lock);
			fatal = cgrp_serve(c->grp, errstr, sizeof(errstr));
			pthread_mutex_lock(&c->lock);
			if (fatal) {
				m = msg_err_new(fatal, errstr);
				break;
			}
			continue;
		}
		/* during a rebalance (cgrp.h: hold) buffered messages wait */
		if (!ch || (c->grp && cgrp_holding(c->grp))) {
			if (timeout_ms == 0)
				break;
			if (timeout_ms < 0)
				pthread_cond_wait(&c->cond, &c->lock);
			else if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT)
				timeout_ms = 0; /* one last look, without waiting */
			continue;
		}
		if (ch->epoch != ch->cp->epoch || ch->cp->removed) {
			pop_chunk_locked(c);
			continue;
		}
		if (ch->err) {
			m = msg_new(ch);
			if (m) {
				m->err = ch->err;
				m->offset = ch->next_offset;
				m->errstr = strdup(ch->errstr);
				m->key = m->value = m->hdrs = NULL;
				m->keylen = m->vlen = -1;
				m->nhdrs = 0;
				m->hdrs_len = 0;
				m->ts = -1;
				m->ts_type = 0;
			}
			pop_chunk_locked(c);
			break;
		}
		if (!ch->in_batch) {
			size_t sz;
			const uint8_t *b = ch->p;

			if (ch->p >= ch->end) {
				pop_chunk_locked(c);
				continue;
			}
			sz = recbatch_size(b, (size_t)(ch->end - b));
			ch->p += sz;
			if (b[RECBATCH_OFF_ATTR + 1] & RECBATCH_ATTR_CONTROL) {
				skip_control(ch, b, sz); /* transaction markers */
				continue;
			}
			if (recbatch_iter_init(&ch->it, b, sz) != RECBATCH_OK)
				continue;
			ch->in_batch = true;
		}
		rc = recbatch_iter_next(&ch->it, &rec);
		if (rc <= 0) {
			ch->in_batch = false;
			continue;
		}
		if (rec.offset < ch->next_offset)
			continue;
		ch->next_offset = rec.offset + 1;
		ch->cp->consumed = rec.offset + 1;
		m = msg_new(ch);
		if (!m)
			break;
		kbuf_ref(ch->buf);
		m->buf = ch->buf;
		m->offset = rec.offset;
		m->ts = (ch->it.hdr.attributes & RECBATCH_ATTR_TIMESTAMP_TYPE) ? ch->it.hdr.max_timestamp
										 : rec.timestamp;
		m->ts_type = (ch->it.hdr.attributes & RECBATCH_ATTR_TIMESTAMP_TYPE) ? 1 : 0;
		m->key = (const uint8_t *)rec.key.ptr;
		m->keylen = rec.key.len;
		m->value = (const uint8_t *)rec.value.ptr;
		m->vlen = rec.value.len;
		m->nhdrs = rec.header_count;
		m->hdrs = rec.headers;
		m->hdrs_len = rec.headers_len;
		break;
	}
	pthread_mutex_unlock(&c->lock);
	return m;
}

void sluice_message_destroy(sluice_message_t *m)
{
	if (!m)
		return;
	kbuf_unref(m->buf);
	free(m->errstr);
	free(m);
}

sluice_err_t sluice_message_err(const sluice_message_t *m) { return m->err; }
const char *sluice_message_errstr(const sluice_message_t *m)
{
	return m->errstr ? m->errstr : sluice_err2str(m->err);
}
const char *sluice_message_topic(const sluice_message_t *m) { return m->topic; }
int32_t sluice_message_partition(const sluice_message_t *m) { return m->partition; }
int64_t sluice_message_offset(const sluice_message_t *m) { return m->offset; }

int64_t sluice_message_timestamp(const sluice_message_t *m, int *type)
{
	if (type)
		*type = m->ts_type;
	return m->ts;
}

const void *sluice_message_key(const sluice_message_t *m, size_t *keylen)
{
	if (keylen)
		*keylen = m->keylen > 0 ? (size_t)m->keylen : 0;
	return m->keylen < 0 ? NULL : (m->key ? (const void *)m->key : (const void *)"");
}

const void *sluice_message_value(const sluice_message_t *m)
{
	return m->vlen < 0 ? NULL : (m->value ? (const void *)m->value : (const void *)"");
}

size_t sluice_message_len(const sluice_message_t *m) { return m->vlen > 0 ? (size_t)m->vlen : 0; }
size_t sluice_message_header_count(const sluice_message_t *m) { return (size_t)m->nhdrs; }

int sluice_message_header_next(const sluice_message_t *m, size_t *pos, const char **name,
			       size_t *name_len, const void **value, size_t *value_len)
{
	recbatch_record rec = { 0 };
	recbatch_header_kv kv;

	rec.header_count = m->nhdrs;
	rec.headers = m->hdrs;
	rec.headers_len = m->hdrs_len;
	if (!m->hdrs || recbatch_record_header(&rec, pos, &kv) != 1)
		return 0;
	*name = kv.key.ptr ? kv.key.ptr : "";
	*name_len = kv.key.len > 0 ? (size_t)kv.key.len : 0;
	*value = kv.value.len < 0 ? NULL : (kv.value.ptr ? kv.value.ptr : "");
	*value_len = kv.value.len > 0 ? (size_t)kv.value.len : 0;
	return 1;
}

int sluice_message_header_get(const sluice_message_t *m, const char *name, const void **value,
			      size_t *value_len)
{
	size_t pos = 0, nl, want = strlen(name);
	const char *n;

	while (sluice_message_header_next(m, &pos, &n, &nl, value, value_len))
		if (nl == want && !memcmp(n, name, nl))
			return 1;
	return 0;
}

/* ---- blocking look-ups on the second connection ---- */

static sluice_err_t lookup(struct sluice_consumer *c, const char *topic, int32_t partition,
			   int64_t ts, int64_t *out, int timeout_ms)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	wire_rd rd;

	if (!kconn_up(&c->lk)) {
		rc = kconn_connect(&c->lk, timeout_ms);
		if (rc)
			return rc;
	}
	ver = kconn_version(&c->lk, API_LIST_OFFSETS, 1, 5);
	if (ver < 0)
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	r = kreq_new(&c->lk, API_LIST_OFFSETS, (int16_t)ver);
	if (!r)
		return SLUICE_ERR_NO_MEMORY;
	wire_w_i32(&r->wb, -1);
	if (ver >= 2)
		wire_w_i8(&r->wb, 0);
	wire_w_i32(&r->wb, 1);
	wire_w_str(&r->wb, topic);
	wire_w_i32(&r->wb, 1);
	wire_w_i32(&r->wb, partition);
	if (ver >= 4)
		wire_w_i32(&r->wb, -1);
	wire_w_i64(&r->wb, ts);
	rc = kconn_call(&c->lk, r, &resp, timeout_ms);
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 2)
		wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 6) == 1) {
		wire_rd_str(&rd);
		if (wire_rd_array(&rd, 22) == 1) {
			int16_t perr;
			int64_t off;

			wire_rd_i32(&rd);
			perr = wire_rd_i16(&rd);
			wire_rd_i64(&rd);
			off = wire_rd_i64(&rd);
			if (!rd.err) {
				err = perr;
				if (!perr)
					*out = off;
			}
		}
	}
	kbuf_unref(resp);
	return err;
}

sluice_err_t sluice_consumer_offsets_for_times(sluice_consumer_t *c, const char *topic,
					       int32_t partition, int64_t ts_ms, int64_t *offset,
					       int timeout_ms)
{
	sluice_err_t err;

	if (!c || !topic || !offset || ts_ms < 0)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&c->lk_lock);
	err = lookup(c, topic, partition, ts_ms, offset, timeout_ms);
	pthread_mutex_unlock(&c->lk_lock);
	return err;
}

sluice_err_t sluice_consumer_query_watermarks(sluice_consumer_t *c, const char *topic,
					      int32_t partition, int64_t *low, int64_t *high,
					      int timeout_ms)
{
	sluice_err_t err;
	int64_t lo = -1, hi = -1;

	if (!c || !topic || !low || !high)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&c->lk_lock);
	err = lookup(c, topic, partition, -2, &lo, timeout_ms);
	if (!err)
		err = lookup(c, topic, partition, -1, &hi, timeout_ms);
	pthread_mutex_unlock(&c->lk_lock);
	if (!err) {
		*low = lo;
		*high = hi;
	}
	return err;
}

/* ---- group hooks (cgrp.h) ---- */

int consumer_grp_positions(sluice_consumer_t *c, bool revoke, struct cgrp_pos **out, int *n)
{
	struct cgrp_pos *v = NULL;
	int cnt = 0, i = 0;

	pthread_mutex_lock(&c->lock);
	for (struct cpart *cp = c->parts; cp; cp = cp->next)
		if (!cp->removed)
			cnt++;
	if (cnt && !(v = calloc((size_t)cnt, sizeof(*v)))) {
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	for (struct cpart *cp = c->parts; cp; cp = cp->next) {
		if (cp->removed)
			continue;
		v[i].topic = cp->topic; /* cparts live until destroy */
		v[i].partition = cp->partition;
		v[i].consumed = cp->consumed;
		v[i].committed = cp->committed;
		v[i].fetch_pos = cp->state == CP_FETCHABLE || cp->state == CP_FETCHING ? cp->fetch_pos : -1;
		i++;
		if (revoke) {
			cp->removed = true;
			cp->epoch++;
		}
	}
	pthread_mutex_unlock(&c->lock);
	*out = v;
	*n = cnt;
	return 0;
}

int consumer_grp_assign(sluice_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
			int64_t committed)
{
	sluice_err_t err;

	pthread_mutex_lock(&c->lock);
	err = assign_locked(c, topic, partition, offset, committed);
	pthread_mutex_unlock(&c->lock);
	return err == SLUICE_ERR_NO_MEMORY ? -ENOMEM : 0;
}

void consumer_grp_set_committed(sluice_consumer_t *c, const char *topic, int32_t partition,
				int64_t offset)
{
	pthread_mutex_lock(&c->lock);
	for (struct cpart *cp = c->parts; cp; cp = cp->next)
		if (cp->partition == partition && !strcmp(cp->topic, topic))
			cp->committed = offset;
	pthread_mutex_unlock(&c->lock);
}

void consumer_grp_wake(sluice_consumer_t *c)
{
	pthread_mutex_lock(&c->lock);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

const struct sluice_conf *consumer_grp_conf(sluice_consumer_t *c) { return c->conf; }

sluice_err_t sluice_consumer_subscribe(sluice_consumer_t *c, const char *const *topics, size_t n)
{
	if (!c || !topics || !n)
		return SLUICE_ERR_INVALID_ARG;
	if (!c->conf->group_id[0])
		return SLUICE_ERR_BAD_CONFIG;
	pthread_mutex_lock(&c->lock);
	if (c->manual) {
		pthread_mutex_unlock(&c->lock);
		return SLUICE_ERR_INVALID_ARG;
	}
	pthread_mutex_unlock(&c->lock);
	if (!c->grp) {
		c->grp = cgrp_new(c);
		if (!c->grp)
			return SLUICE_ERR_NO_MEMORY;
	}
	return cgrp_subscribe(c->grp, topics, n);
}

sluice_err_t sluice_consumer_commit(sluice_consumer_t *c, int sync)
{
	if (!c)
		return SLUICE_ERR_INVALID_ARG;
	if (!c->grp)
		return SLUICE_ERR_STATE;
	return cgrp_commit(c->grp, sync != 0);
}

sluice_err_t sluice_consumer_lag(sluice_consumer_t *c, sluice_partition_lag_t **lags, size_t *n,
				 int timeout_ms)
{
	struct cgrp_pos *v = NULL;
	sluice_partition_lag_t *out = NULL;
	int cnt = 0;

	if (!c || !lags || !n)
		return SLUICE_ERR_INVALID_ARG;
	if (consumer_grp_positions(c, false, &v, &cnt))
		return SLUICE_ERR_NO_MEMORY;
	if (cnt && !(out = calloc((size_t)cnt, sizeof(*out)))) {
		free(v);
		return SLUICE_ERR_NO_MEMORY;
	}
	for (int i = 0; i < cnt; i++) {
		sluice_partition_lag_t *l = &out[i];
		int64_t hi = -1, base;

		l->topic = strdup(v[i].topic);
		if (!l->topic) {
			sluice_partition_lags_destroy(out, (size_t)i);
			free(v);
			return SLUICE_ERR_NO_MEMORY;
		}
		l->partition = v[i].partition;
		l->position = v[i].consumed >= 0 ? v[i].consumed : v[i].fetch_pos;
		l->committed = v[i].committed;
		pthread_mutex_lock(&c->lk_lock);
		if (lookup(c, v[i].topic, v[i].partition, -1, &hi, timeout_ms))
			hi = -1;
		pthread_mutex_unlock(&c->lk_lock);
		l->end = hi;
		base = l->committed >= 0 ? l->committed : l->position;
		l->lag = hi >= 0 && base >= 0 ? (hi > base ? hi - base : 0) : -1;
	}
	free(v);
	*lags = out;
	*n = (size_t)cnt;
	return SLUICE_ERR_NO_ERROR;
}

void sluice_partition_lags_destroy(sluice_partition_lag_t *lags, size_t n)
{
	for (size_t i = 0; lags && i < n; i++)
		free((char *)lags[i].topic);
	free(lags);
}
