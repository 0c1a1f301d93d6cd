/* conn.c — see conn.h. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "api.h"
#include "blog.h"
#include "poison.h"

#define RBUF_MIN (64 * 1024)
/* Memory of finished answers a connection may have waiting for its
 * client to read them before the broker stops reading its requests (as
 * at max.inflight.requests.per.connection): a client that pipelines
 * requests and never reads must not make the broker hold gigabytes.
 * Segment bytes sent with sendfile do not count: they are not in memory. */
#define CONN_MAX_QUEUED_MEM ((size_t)64 << 20)
#define IOV_MAX_PARTS 64

static void on_read(struct ev_loop *loop, ev_io *io, int revents);
static void on_write(struct ev_loop *loop, ev_io *io, int revents);
static void conn_process(conn *c);
static void conn_flush(conn *c);

/* A conn may be closed from deep inside request processing (a failed write
 * during req_finish).  `busy` counts the frames on the stack that use c,
 * plus one while it waits on the worker's flush list (conn_defer_end); a
 * close while busy only marks it dead and the last of them frees it. */
struct conn_ext {
	conn c;
	int busy;
	bool dead;
	bool flush_queued;       /* on w->flush_list (holds a busy count) */
	conn *flush_next;
	size_t queued_mem;       /* resp bytes of finished requests still queued */
};

#define EXT(c) ((struct conn_ext *)(c))

static void peer_name(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
	}
	snprintf(out, cap, "%s:%d", host, port);
}

void conn_accept(worker *w, int fd)
{
	struct conn_ext *x = calloc(1, sizeof(*x));
	conn *c = &x->c;
	int one = 1;

	if (!x) {
		close(fd);
		atomic_fetch_sub(&w->srv->nconns, 1);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->w = w;
	c->fd = fd;
	peer_name(fd, c->peer, sizeof(c->peer));
	ev_io_init(&c->rio, on_read, fd, EV_READ);
	c->rio.data = c;
	ev_io_init(&c->wio, on_write, fd, EV_WRITE);
	c->wio.data = c;
	ev_io_start(w->loop, &c->rio);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	blog(BLOG_DEBUG, "connection from %s", c->peer);
}

static void conn_free(conn *c)
{
	worker *w = c->w;

	while (c->q_head) {
		req *r = c->q_head;

		c->q_head = r->next;
		r->conn = NULL;
		if (r->cancel)
			r->cancel(r);
		req_unref(r);
	}
	close(c->fd);
	free(c->rbuf);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	atomic_fetch_sub(&w->srv->nconns, 1);
	free(EXT(c));
}

void conn_close(conn *c, int level, const char *reason)
{
	struct conn_ext *x = EXT(c);

	if (x->dead)
		return;
	if (level >= BLOG_WARN)
		BLOG_RL(level, "closing connection from %s: %s", c->peer, reason);
	else
		blog(level, "closing connection from %s: %s", c->peer, reason);
	x->dead = true;
	ev_io_stop(c->w->loop, &c->rio);
	ev_io_stop(c->w->loop, &c->wio);
	if (x->busy == 0)
		conn_free(c);
}

static void enter(conn *c)
{
	EXT(c)->busy++;
}

static bool leave(conn *c);

void conn_shutdown(conn *c)
{
	req **waiting = calloc((size_t)c->nreq + 1, sizeof(*waiting));
	int n = 0;

	enter(c);
	/* Hooks finish requests and the flush frees them: hold references
	 * over the whole walk. */
	for (req *r = c->q_head; waiting && r; r = r->next) {
		if (!r->done && r->shutdown) {
			req_ref(r);
			waiting[n++] = r;
		}
	}
	for (int i = 0; i < n; i++) {
		if (!EXT(c)->dead && waiting[i]->conn && waiting[i]->shutdown)
			waiting[i]->shutdown(waiting[i]);
		req_unref(waiting[i]);
	}
	free(waiting);
	if (!EXT(c)->dead)
		conn_flush(c);
	if (leave(c))
		conn_close(c, BLOG_DEBUG, "broker shutting down");
}

/* Returns false if c was freed. */
static bool leave(conn *c)
{
	struct conn_ext *x = EXT(c);

	if (--x->busy == 0 && x->dead) {
		conn_free(c);
		return false;
	}
	return !x->dead;
}

/* ---- requests ---- */

/* Released requests stay on their loop for reuse, with their response
 * buffer's memory: a request and its answer then cost no allocation (a
 * transaction is two requests, each one message).  At most REQ_CACHE_MAX
 * per loop, buffers up to REQ_CACHE_BUF bytes (a big fetch answer's buffer
 * is freed).  Under ASan a cached request and its buffer are poisoned, so
 * a use after the last req_unref is still caught. */
#define REQ_CACHE_MAX 256
#define REQ_CACHE_BUF (64 * 1024)

/* A zeroed request with an empty response buffer, from w's cache if it
 * has one. */
static req *req_alloc(worker *w)
{
	req *r = reuse_get(&w->req_cache, sizeof(*r), offsetof(req, next));
	wire_buf keep;

	if (!r)
		return calloc(1, sizeof(*r));
	keep = r->resp;
	UNPOISON(keep.data, keep.cap);
	memset(r, 0, sizeof(*r));
	r->resp = keep;
	wire_buf_reset(&r->resp);
	return r;
}

/* Frees r, or keeps it (and its response buffer) in its loop's cache. */
static void req_release(req *r)
{
	worker *w = r->w;

	if (reuse_full(&w->req_cache, REQ_CACHE_MAX) || r->resp.cap > REQ_CACHE_BUF) {
		wire_buf_free(&r->resp);
		free(r);
		return;
	}
	POISON(r->resp.data, r->resp.cap);
	reuse_put(&w->req_cache, r, sizeof(*r), offsetof(req, next));
}

void req_cache_free(worker *w)
{
	req *r;

	while ((r = reuse_get(&w->req_cache, sizeof(*r), offsetof(req, next)))) {
		UNPOISON(r->resp.data, r->resp.cap);
		wire_buf_free(&r->resp);
		free(r);
	}
}

static req *req_new(conn *c, int16_t key, int16_t ver, int32_t corr)
{
	req *r = req_alloc(c->w);

	if (!r)
		return NULL;
	r->conn = c;
	r->w = c->w;
	r->refs = 1;
	r->api_key = key;
	r->api_version = ver;
	r->corr_id = corr;
	wire_w_i32(&r->resp, 0); /* frame size, patched by req_finish */
	wire_w_i32(&r->resp, corr);
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
	c->nreq++;
	return r;
}

static void post_finish_task(loop_task *t)
{
	req *r = (req *)((char *)t - offsetof(req, post));

	req_finish(r);
	req_unref(r);
}

void req_post_finish(req *r)
{
	r->post.fn = post_finish_task;
	worker_post(r->w, &r->post);
}

void req_ref(req *r)
{
	r->refs++;
}

void req_unref(req *r)
{
	if (--r->refs > 0)
		return;
	for (int i = 0; i < r->nparts; i++)
		if (r->parts[i].kind == PART_FILE)
			partlog_range_release(&r->parts[i].range);
	free(r->parts);
	if (r->free_state)
		r->free_state(r);
	req_release(r);
}

static out_part *add_part(req *r)
{
	if (r->nparts == r->cap_parts) {
		int cap = r->cap_parts ? r->cap_parts * 2 : 8;
		out_part *p = realloc(r->parts, sizeof(*p) * (size_t)cap);

		if (!p)
			return NULL;
		r->parts = p;
		r->cap_parts = cap;
	}
	return &r->parts[r->nparts++];
}

static bool close_mem_part(req *r)
{
	out_part *p;

	if (r->resp.len == r->mem_mark)
		return true;
	p = add_part(r);
	if (!p)
		return false;
	p->kind = PART_MEM;
	p->off = r->mem_mark;
	p->len = r->resp.len - r->mem_mark;
	r->mem_mark = r->resp.len;
	return true;
}

void req_add_file(req *r, partlog_range *range)
{
	out_part *p;

	if (!close_mem_part(r) || !(p = add_part(r))) {
		/* Memory is gone: the response cannot be built; fail it. */
		r->resp.oom = true;
		partlog_range_release(range);
		return;
	}
	p->kind = PART_FILE;
	p->range = *range;
	p->off = 0;
	p->len = range->len;
	r->file_bytes += range->len;
	range->seg = NULL;
}

/* Too many requests queued, or too many bytes of answers unread: stop
 * reading requests. */
static bool over_limits(const conn *c)
{
	return c->nreq >= c->w->srv->cfg->max_inflight_per_conn ||
	       EXT(c)->queued_mem >= CONN_MAX_QUEUED_MEM;
}

static void pause_reading(conn *c)
{
	c->paused = true;
	ev_io_stop(c->w->loop, &c->rio);
}

/* Stops reading requests while over the limits (a request finished
 * whose answer the client does not read), resumes once the queue has room
 * again (it paused at max.inflight.requests.per.connection or
 * CONN_MAX_QUEUED_MEM).  c is entered. */
static void update_reading(conn *c)
{
	if (!c->paused) {
		if (over_limits(c))
			pause_reading(c);
	} else if (!over_limits(c)) {
		c->paused = false;
		ev_io_start(c->w->loop, &c->rio);
		conn_process(c);
	}
}

static void queue_flush(conn *c)
{
	struct conn_ext *x = EXT(c);

	if (x->flush_queued)
		return;
	x->flush_queued = true;
	enter(c);
	x->flush_next = c->w->flush_list;
	c->w->flush_list = c;
}

static void flush_queued(worker *w)
{
	while (w->flush_list) {
		conn *c = w->flush_list;

		w->flush_list = EXT(c)->flush_next;
		EXT(c)->flush_queued = false;
		if (!EXT(c)->dead) {
			conn_flush(c);
			if (!EXT(c)->dead)
				update_reading(c);
		}
		leave(c); /* frees c if it was closed meanwhile */
	}
}

void conn_defer_begin(worker *w)
{
	w->defer_flush++;
}

void conn_defer_end(worker *w)
{
	if (--w->defer_flush == 0)
		flush_queued(w);
}

void req_finish(req *r)
{
	conn *c = r->conn;

	if (!c)
		return; /* the connection is gone: nobody to answer */
	if (r->parts)
		close_mem_part(r);
	if (r->resp.oom) {
		r->done = true;
		conn_close(c, BLOG_ERROR, "out of memory building a response");
		return;
	}
	wire_patch32(&r->resp, 0, (int32_t)(r->resp.len + r->file_bytes - 4));
	r->done = true;
	/* counted once, whatever calls this more than once */
	EXT(c)->queued_mem += r->resp.len - r->queued_mem;
	r->queued_mem = r->resp.len;
	if (c->w->defer_flush > 0) {
		queue_flush(c);
		return;
	}
	enter(c);
	conn_flush(c);
	if (!EXT(c)->dead)
		update_reading(c);
	leave(c);
}

/* ---- writing ---- */

static void pop_head(conn *c)
{
	req *r = c->q_head;

	c->q_head = r->next;
	if (!c->q_head)
		c->q_tail = NULL;
	c->nreq--;
	EXT(c)->queued_mem -= r->queued_mem;
	c->part_idx = 0;
	c->part_off = 0;
	req_unref(r);
}

/* r's response as parts: its own list, or the whole buffer as one. */
static const out_part *req_parts(const req *r, out_part *whole, int *n)
{
	if (r->parts) {
		*n = r->nparts;
		return r->parts;
	}
	*whole = (out_part){ PART_MEM, 0, r->resp.len, { 0 } };
	*n = 1;
	return whole;
}

/* The memory parts to write next, from the write cursor on, across
 * consecutive finished responses, up to a file part, an unfinished
 * response or cap iovecs.  Returns the count (>= 1 when the head's current
 * part is in memory). */
static int gather(const conn *c, struct iovec *iov, int cap)
{
	int k = 0, idx = c->part_idx;
	size_t skip = c->part_off;

	for (const req *r = c->q_head; r && r->done && k < cap; r = r->next) {
		out_part whole;
		int nparts;
		const out_part *parts = req_parts(r, &whole, &nparts);

		if (r->no_response)
			continue; /* nothing to send: popped on the way */
		for (int i = idx; i < nparts; i++) {
			if (parts[i].kind != PART_MEM || k == cap)
				return k;
			iov[k].iov_base = r->resp.data + parts[i].off + skip;
			iov[k++].iov_len = parts[i].len - skip;
			skip = 0;
		}
		idx = 0;
	}
	return k;
}

/* Moves the write cursor over n bytes written, popping every response
 * written whole (and the answerless ones after it). */
static void advance(conn *c, size_t n)
{
	while (c->q_head && c->q_head->done) {
		req *r = c->q_head;
		out_part whole;
		int nparts;
		const out_part *parts = req_parts(r, &whole, &nparts);
		size_t left;

		if (r->no_response || c->part_idx == nparts) {
			pop_head(c);
			continue;
		}
		if (n == 0)
			return;
		left = parts[c->part_idx].len - c->part_off;
		if (n < left) {
			c->part_off += n;
			return;
		}
		n -= left;
		c->part_idx++;
		c->part_off = 0;
	}
}

/* Writes finished responses in request order, as much as the socket takes:
 * the memory parts of consecutive responses with one writev, a segment
 * range with sendfile.  Stops at an unfinished response (write watcher
 * off) or a full socket (watcher on); may close c. */
static void conn_flush(conn *c)
{
	struct iovec iov[IOV_MAX_PARTS];

	for (;;) {
		const out_part *p;
		out_part whole;
		int nparts;
		ssize_t n;
		req *r;

		advance(c, 0); /* answerless responses at the head */
		r = c->q_head;
		if (!r || !r->done)
			break;
		p = &req_parts(r, &whole, &nparts)[c->part_idx];
		if (p->kind == PART_MEM) {
			n = writev(c->fd, iov, gather(c, iov, IOV_MAX_PARTS));
		} else {
			off_t off = p->range.pos + (off_t)c->part_off;

			n = sendfile(c->fd, p->range.fd, &off, p->len - c->part_off);
			if (n == 0) {
				/* The file is shorter than the range: it was
				 * truncated under us; the frame cannot be completed. */
				conn_close(c, BLOG_ERROR, "segment file shorter than the range being sent");
				return;
			}
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				ev_io_start(c->w->loop, &c->wio);
				return;
			}
			conn_close(c, BLOG_DEBUG, strerror(errno));
			return;
		}
		advance(c, (size_t)n);
	}
	ev_io_stop(c->w->loop, &c->wio);
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents)
{
	conn *c = io->data;

	enter(c);
	conn_flush(c);
	if (!EXT(c)->dead)
		update_reading(c);
	leave(c);
}

/* ---- reading ---- */

static void bad_input(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad_input(conn *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* the answers to the requests before the bad one still go out */
	if (EXT(c)->flush_queued)
		conn_flush(c);
	conn_close(c, BLOG_WARN, msg);
}

/* Handles one whole frame (payload without the size field). */
static void handle_frame(conn *c, uint8_t *payload, size_t len)
{
	wire_rd rd;
	int16_t key, ver;
	int32_t corr;
	const api_def *api;
	wire_str cid;
	req *r;

	wire_rd_init(&rd, payload, len);
	key = wire_rd_i16(&rd);
	ver = wire_rd_i16(&rd);
	corr = wire_rd_i32(&rd);
	if (rd.err) {
		bad_input(c, "request of %zu bytes is shorter than a request header", len);
		return;
	}
	api = api_find(key);
	if (!api) {
		bad_input(c, "unknown API key %d (version %d, correlation id %d)", key, ver, corr);
		return;
	}
	if (ver < api->min || ver > api->max) {
		if (key == API_API_VERSIONS) {
			/* Kafka's answer: error 35 in the v0 layout with our
			 * ranges; the client retries with a version we have. */
			r = req_new(c, key, 0, corr);
			if (r)
				api_versions_unsupported(r);
			return;
		}
		bad_input(c, "unsupported version %d of %s (we support %d-%d)", ver, api->name, api->min,
			  api->max);
		return;
	}
	cid = wire_rd_str(&rd);
	if (rd.err) {
		bad_input(c, "malformed request header");
		return;
	}
	r = req_new(c, key, ver, corr);
	if (!r) {
		conn_close(c, BLOG_ERROR, "out of memory");
		return;
	}
	if (cid.len > 0) {
		size_t n = (size_t)cid.len < sizeof(r->client_id) ? (size_t)cid.len : sizeof(r->client_id) - 1;

		memcpy(r->client_id, cid.ptr, n);
		r->client_id[n] = '\0';
	}
	req_ref(r); /* the handler may finish r; keep it until we check */
	if (api->fn(r, &rd) == API_MALFORMED) {
		bad_input(c, "malformed %s v%d request (correlation id %d)", api->name, ver, corr);
		/* conn_close (now or when the frame unwinds) drops the queue's ref */
	}
	req_unref(r);
}

static void conn_process(conn *c)
{
	const config *cfg = c->w->srv->cfg;
	size_t pos = 0;

	while (!EXT(c)->dead && !c->paused && c->rlen - pos >= 4) {
		int32_t size = (int32_t)wire_get32(c->rbuf + pos);

		if (size < 8 || size > cfg->socket_request_max_bytes) {
			bad_input(c, "frame size %d outside [8, socket.request.max.bytes=%d]", size,
				  cfg->socket_request_max_bytes);
			return;
		}
		if (c->rlen - pos - 4 < (size_t)size)
			break;
		handle_frame(c, c->rbuf + pos + 4, (size_t)size);
		pos += 4 + (size_t)size;
		if (over_limits(c) && !EXT(c)->dead)
			pause_reading(c);
	}
	if (EXT(c)->dead)
		return;
	if (pos) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	}
}

/* Makes room to read: at least the rest of the frame being read. */
static bool rbuf_room(conn *c)
{
	size_t need = RBUF_MIN;
	uint8_t *b;

	if (c->rlen >= 4) {
		int32_t size = (int32_t)wire_get32(c->rbuf);

		if (size > 0 && (size_t)size + 4 > need)
			need = (size_t)size + 4;
	}
	if (c->rcap >= need && c->rcap > c->rlen)
		return true;
	if (need <= c->rlen)
		need = c->rlen + RBUF_MIN;
	b = realloc(c->rbuf, need);
	if (!b)
		return false;
	c->rbuf = b;
	c->rcap = need;
	return true;
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents)
{
	conn *c = io->data;
	worker *w = c->w;
	ssize_t n;

	if (!rbuf_room(c)) {
		conn_close(c, BLOG_ERROR, "out of memory for the read buffer");
		return;
	}
	n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
	if (n == 0) {
		if (c->rlen)
			conn_close(c, BLOG_WARN, "client closed the connection in the middle of a request");
		else
			conn_close(c, BLOG_DEBUG, "client closed the connection");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_close(c, BLOG_DEBUG, strerror(errno));
		return;
	}
	c->rlen += (size_t)n;
	conn_defer_begin(w); /* the answers to this read: one write */
	enter(c);
	conn_process(c);
	leave(c); /* may free c */
	conn_defer_end(w);
}
