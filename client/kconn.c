/*
 * kconn.c — Kafka connection: socket, framing, ApiVersions, pipelining.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kconn.h"

int64_t kclock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t kwall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define KBUF_POOL_MIN (64u << 10)
#define KBUF_POOL_MAX 32

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kbuf *pool[KBUF_POOL_MAX];
static int npool;

static void pool_cleanup(void) __attribute__((destructor));
static void pool_cleanup(void)
{
	pthread_mutex_lock(&pool_lock);
	while (npool)
		free(pool[--npool]);
	pthread_mutex_unlock(&pool_lock);
}

struct kbuf *kbuf_new(size_t len)
{
	struct kbuf *b = NULL;
	size_t cap = len;

	if (len >= KBUF_POOL_MIN) {
		pthread_mutex_lock(&pool_lock);
		for (int i = npool - 1; i >= 0; i--)
			if (pool[i]->cap >= len && pool[i]->cap <= 4 * len) {
				b = pool[i];
				pool[i] = pool[--npool];
				break;
			}
		pthread_mutex_unlock(&pool_lock);
		/* round up so buffers are reusable for similar sizes */
		cap = (len + (KBUF_POOL_MIN - 1)) & ~(size_t)(KBUF_POOL_MIN - 1);
	}
	if (!b) {
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->cap = cap;
	}
	atomic_init(&b->refs, 1);
	b->len = len;
	return b;
}

void kbuf_ref(struct kbuf *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void kbuf_unref(struct kbuf *b)
{
	if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (b->cap >= KBUF_POOL_MIN) {
		pthread_mutex_lock(&pool_lock);
		if (npool < KBUF_POOL_MAX) {
			pool[npool++] = b;
			b = NULL;
		}
		pthread_mutex_unlock(&pool_lock);
	}
	free(b);
}

void kconn_init(struct kconn *c, const struct sluice_conf *conf)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->conf = conf;
	c->next_corr = 1;
	for (int i = 0; i < API_MAX_KEY + API_EXT_N; i++)
		c->bmin[i] = c->bmax[i] = -1;
}

void kreq_free(struct kreq *r)
{
	if (!r)
		return;
	wire_buf_free(&r->wb);
	free(r->splices);
	free(r->iov);
	free(r);
}

static void complete(struct kconn *c, struct kreq *r, int err, struct kbuf *resp)
{
	if (r->cb)
		r->cb(c, r, err, resp, r->ctx);
	kreq_free(r);
}

void kconn_close(struct kconn *c, int err, const char *why)
{
	struct kreq *lists[2] = { c->wait_head, c->out_head };

	if (why)
		snprintf(c->errstr, sizeof(c->errstr), "%s", why);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->wait_head = c->wait_tail = c->out_head = c->out_tail = NULL;
	c->nwait = 0;
	kbuf_unref(c->rbuf);
	c->rbuf = NULL;
	c->rhdr_got = 0;
	c->rgot = 0;
	c->rs_off = c->rs_len = 0;
	for (int i = 0; i < 2; i++) {
		struct kreq *r = lists[i];

		while (r) {
			struct kreq *next = r->next;

			complete(c, r, err, NULL);
			r = next;
		}
	}
}

struct kreq *kreq_new(struct kconn *c, int16_t api, int16_t ver)
{
	struct kreq *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	wire_buf_init(&r->wb);
	r->api = api;
	r->ver = ver;
	r->corr = c->next_corr++;
	if (c->next_corr == INT32_MAX)
		c->next_corr = 1;
	wire_w_i32(&r->wb, 0); /* size, patched in send */
	wire_w_i16(&r->wb, api);
	wire_w_i16(&r->wb, ver);
	wire_w_i32(&r->wb, r->corr);
	wire_w_str(&r->wb, c->conf->client_id);
	return r;
}

void kreq_splice(struct kreq *r, const void *p, size_t len)
{
	if (r->nsplices == r->splices_cap) {
		int ncap = r->splices_cap ? r->splices_cap * 2 : 8;
		struct kreq_splice *ns = realloc(r->splices, (size_t)ncap * sizeof(*ns));

		if (!ns) {
			r->wb.oom = true;
			return;
		}
		r->splices = ns;
		r->splices_cap = ncap;
	}
	r->splices[r->nsplices].at = r->wb.len;
	r->splices[r->nsplices].p = p;
	r->splices[r->nsplices].len = len;
	r->nsplices++;
}

/* Fills in the size and builds the iovec list. */
static int finish(struct kreq *r)
{
	size_t total = r->wb.len, pos = 0;
	int n = 0;

	if (r->wb.oom)
		return -1;
	for (int i = 0; i < r->nsplices; i++)
		total += r->splices[i].len;
	wire_patch32(&r->wb, 0, (int32_t)(total - 4));
	r->iov = malloc((size_t)(2 * r->nsplices + 1) * sizeof(struct iovec));
	if (!r->iov)
		return -1;
	for (int i = 0; i < r->nsplices; i++) {
		if (r->splices[i].at > pos) {
			r->iov[n].iov_base = r->wb.data + pos;
			r->iov[n++].iov_len = r->splices[i].at - pos;
			pos = r->splices[i].at;
		}
		if (r->splices[i].len) {
			r->iov[n].iov_base = (void *)r->splices[i].p;
			r->iov[n++].iov_len = r->splices[i].len;
		}
	}
	if (r->wb.len > pos) {
		r->iov[n].iov_base = r->wb.data + pos;
		r->iov[n++].iov_len = r->wb.len - pos;
	}
	r->iovcnt = n;
	r->iov_i = 0;
	return 0;
}

void kconn_send(struct kconn *c, struct kreq *r, kreq_cb *cb, void *ctx)
{
	r->cb = cb;
	r->ctx = ctx;
	r->next = NULL;
	if (finish(r) < 0) {
		complete(c, r, SLUICE_ERR_NO_MEMORY, NULL);
		return;
	}
	if (c->fd < 0) {
		complete(c, r, SLUICE_ERR_TRANSPORT, NULL);
		return;
	}
	if (c->out_tail)
		c->out_tail->next = r;
	else
		c->out_head = r;
	c->out_tail = r;
}

short kconn_events(const struct kconn *c)
{
	if (c->fd < 0)
		return 0;
	return POLLIN | (c->out_head ? POLLOUT : 0);
}

/* Moves the head of the out queue to the wait queue (or completes it). */
static void written(struct kconn *c, int64_t now_ms)
{
	struct kreq *r = c->out_head;

	c->out_head = r->next;
	if (!c->out_head)
		c->out_tail = NULL;
	r->next = NULL;
	r->sent_ms = now_ms;
	if (r->no_response) {
		complete(c, r, 0, NULL);
		return;
	}
	if (c->wait_tail)
		c->wait_tail->next = r;
	else
		c->wait_head = r;
	c->wait_tail = r;
	c->nwait++;
}

static int do_write(struct kconn *c, int64_t now_ms)
{
	while (c->out_head) {
		struct iovec iov[256];
		int n = 0;
		ssize_t w;

		/* Gather the iovecs of several queued requests into one writev. */
		for (struct kreq *r = c->out_head; r && n < 256; r = r->next)
			for (int i = r->iov_i; i < r->iovcnt && n < 256; i++)
				iov[n++] = r->iov[i];
		w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			snprintf(c->errstr, sizeof(c->errstr), "write: %s", strerror(errno));
			return SLUICE_ERR_TRANSPORT;
		}
		while (w > 0 && c->out_head) {
			struct kreq *r = c->out_head;
			struct iovec *v = &r->iov[r->iov_i];

			if ((size_t)w >= v->iov_len) {
				w -= (ssize_t)v->iov_len;
				v->iov_len = 0;
				r->iov_i++;
			} else {
				v->iov_base = (uint8_t *)v->iov_base + w;
				v->iov_len -= (size_t)w;
				w = 0;
			}
			if (r->iov_i == r->iovcnt)
				written(c, now_ms);
		}
		/* Skip zero-length iovecs left at the head. */
		while (c->out_head && c->out_head->iov_i < c->out_head->iovcnt &&
		       c->out_head->iov[c->out_head->iov_i].iov_len == 0) {
			c->out_head->iov_i++;
			if (c->out_head->iov_i == c->out_head->iovcnt)
				written(c, now_ms);
		}
	}
	return 0;
}

static int dispatch(struct kconn *c, struct kbuf *b)
{
	struct kreq *r = c->wait_head;
	int32_t corr;

	if (b->len < 4 || !r) {
		snprintf(c->errstr, sizeof(c->errstr), "unexpected response frame");
		return SLUICE_ERR_BAD_MSG;
	}
	corr = (int32_t)wire_get32(b->data);
	if (corr != r->corr) {
		snprintf(c->errstr, sizeof(c->errstr), "response correlation id %d, expected %d",
			 corr, r->corr);
		return SLUICE_ERR_BAD_MSG;
	}
	c->wait_head = r->next;
	if (!c->wait_head)
		c->wait_tail = NULL;
	c->nwait--;
	complete(c, r, 0, b);
	return 0;
}

/* Takes what the staging buffer holds for the frame being read (size
 * prefix, then body).  Returns 0, or negative err. */
static int take_staged(struct kconn *c)
{
	while (c->rs_off < c->rs_len) {
		size_t avail = c->rs_len - c->rs_off, n;

		if (c->rhdr_got < 4) {
			n = 4 - c->rhdr_got < avail ? 4 - c->rhdr_got : avail;
			memcpy(c->rhdr + c->rhdr_got, c->rstage + c->rs_off, n);
			c->rs_off += n;
			c->rhdr_got += n;
			if (c->rhdr_got == 4) {
				int32_t sz = (int32_t)wire_get32(c->rhdr);

				if (sz < 4 || sz > 1 << 30) {
					snprintf(c->errstr, sizeof(c->errstr), "bad response size %d", sz);
					return SLUICE_ERR_BAD_MSG;
				}
				c->rbuf = kbuf_new((size_t)sz);
				if (!c->rbuf)
					return SLUICE_ERR_NO_MEMORY;
				c->rgot = 0;
			}
			continue;
		}
		n = c->rbuf->len - c->rgot < avail ? c->rbuf->len - c->rgot : avail;
		memcpy(c->rbuf->data + c->rgot, c->rstage + c->rs_off, n);
		c->rs_off += n;
		c->rgot += n;
		if (c->rgot == c->rbuf->len) {
			struct kbuf *b = c->rbuf;
			int err;

			c->rbuf = NULL;
			c->rhdr_got = 0;
			err = dispatch(c, b);
			kbuf_unref(b);
			if (err)
				return err;
			if (c->fd < 0)
				return 0; /* closed by the callback */
		}
	}
	return 0;
}

static int do_read(struct kconn *c)
{
	for (int rounds = 0; rounds < 64; rounds++) {
		/* A large body goes straight into its buffer (no staging copy). */
		bool direct = c->rhdr_got == 4 && c->rbuf->len - c->rgot >= sizeof(c->rstage);
		size_t want = direct ? c->rbuf->len - c->rgot : sizeof(c->rstage);
		ssize_t n = read(c->fd, direct ? c->rbuf->data + c->rgot : c->rstage, want);
		int err;

		if (n == 0) {
			snprintf(c->errstr, sizeof(c->errstr), "connection closed by the broker");
			return SLUICE_ERR_TRANSPORT;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			snprintf(c->errstr, sizeof(c->errstr), "read: %s", strerror(errno));
			return SLUICE_ERR_TRANSPORT;
		}
		if (direct) {
			c->rgot += (size_t)n;
			if (c->rgot == c->rbuf->len) {
				struct kbuf *b = c->rbuf;

				c->rbuf = NULL;
				c->rhdr_got = 0;
				err = dispatch(c, b);
				kbuf_unref(b);
				if (err)
					return err;
			}
		} else {
			/* Consumes all of it: frames are dispatched, a partial
			 * body is copied into its buffer. */
			c->rs_off = 0;
			c->rs_len = (size_t)n;
			err = take_staged(c);
			c->rs_off = c->rs_len = 0;
			if (err)
				return err;
		}
		if (c->fd < 0)
			return 0; /* closed by a callback */
		/* A short read means the socket is drained: no EAGAIN round. */
		if ((size_t)n < want)
			return 0;
	}
	return 0;
}

int kconn_io(struct kconn *c, short revents, int64_t now_ms)
{
	int err = 0;

	if (c->fd < 0)
		return 0;
	if (revents & (POLLERR | POLLNVAL)) {
		kconn_close(c, SLUICE_ERR_TRANSPORT, "socket error");
		return SLUICE_ERR_TRANSPORT;
	}
	if (revents & (POLLIN | POLLHUP))
		err = do_read(c);
	if (!err && c->fd >= 0 && c->out_head)
		err = do_write(c, now_ms);
	if (err) {
		char why[256];

		snprintf(why, sizeof(why), "%s", c->errstr);
		kconn_close(c, err, why);
	}
	return err;
}

int kconn_check_timeouts(struct kconn *c, int64_t now_ms)
{
	struct kreq *r = c->wait_head;
	int64_t deadline;

	if (c->fd < 0 || !r)
		return 1000;
	deadline = r->sent_ms + c->conf->request_timeout_ms + r->extra_timeout_ms;
	if (now_ms >= deadline) {
		kconn_close(c, SLUICE_ERR_TIMED_OUT, "request timed out (request.timeout.ms)");
		return 0;
	}
	return (int)(deadline - now_ms);
}

int kconn_version(const struct kconn *c, int api, int cmin, int cmax)
{
	int v;

	int slot = kconn_api_slot(api);

	if (slot < 0 || c->bmax[slot] < 0)
		return -1;
	v = cmax < c->bmax[slot] ? cmax : c->bmax[slot];
	if (v < cmin || v < c->bmin[slot])
		return -1;
	return v;
}

/* ---- blocking helpers used during connect and by kconn_call ---- */

struct call_result {
	bool done;
	int err;
	struct kbuf *resp;
};

static void call_cb(struct kconn *c, struct kreq *r, int err, struct kbuf *resp, void *ctx)
{
	struct call_result *res = ctx;

	res->done = true;
	res->err = err;
	if (resp) {
		kbuf_ref(resp);
		res->resp = resp;
	}
}

static int wait_result(struct kconn *c, struct call_result *res, int64_t deadline)
{
	while (!res->done) {
		struct pollfd pfd = { .fd = c->fd, .events = kconn_events(c) };
		int64_t now = kclock_ms();
		int rc;

		if (c->fd < 0)
			break;
		if (now >= deadline) {
			kconn_close(c, SLUICE_ERR_TIMED_OUT, "request timed out");
			break;
		}
		rc = poll(&pfd, 1, (int)(deadline - now));
		if (rc < 0 && errno != EINTR) {
			kconn_close(c, SLUICE_ERR_TRANSPORT, "poll failed");
			break;
		}
		if (rc > 0)
			kconn_io(c, pfd.revents, kclock_ms());
	}
	return res->done ? res->err : SLUICE_ERR_TRANSPORT;
}

static int handshake(struct kconn *c, int64_t deadline)
{
	int ver = 2;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct call_result res = { 0 };
		struct kreq *r = kreq_new(c, API_API_VERSIONS, (int16_t)ver);
		wire_rd rd;
		int16_t err;
		int32_t n;
		int rc;

		if (!r)
			return SLUICE_ERR_NO_MEMORY;
		kconn_send(c, r, call_cb, &res);
		rc = wait_result(c, &res, deadline);
		if (rc) {
			kbuf_unref(res.resp);
			return rc;
		}
		wire_rd_init(&rd, res.resp->data + 4, res.resp->len - 4);
		err = wire_rd_i16(&rd);
		n = wire_rd_array(&rd, 6);
		for (int32_t i = 0; i < n && !rd.err; i++) {
			int16_t key = wire_rd_i16(&rd), mn = wire_rd_i16(&rd), mx = wire_rd_i16(&rd);
			int slot = kconn_api_slot(key);

			if (slot >= 0) {
				c->bmin[slot] = mn;
				c->bmax[slot] = mx;
			}
		}
		kbuf_unref(res.resp);
		if (rd.err) {
			snprintf(c->errstr, sizeof(c->errstr), "malformed ApiVersions response");
			return SLUICE_ERR_BAD_MSG;
		}
		if (err == 35 && c->bmax[API_API_VERSIONS] >= 0) {
			ver = c->bmax[API_API_VERSIONS] < 2 ? c->bmax[API_API_VERSIONS] : 2;
			continue;
		}
		if (err) {
			snprintf(c->errstr, sizeof(c->errstr), "ApiVersions error %d", err);
			return err;
		}
		return 0;
	}
	snprintf(c->errstr, sizeof(c->errstr), "ApiVersions negotiation failed");
	return SLUICE_ERR_UNSUPPORTED_FEATURE;
}

int kconn_connect(struct kconn *c, int timeout_ms)
{
	const struct conf_server *s;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL, *it;
	int64_t deadline = kclock_ms() + timeout_ms;
	char port[8];
	int fd = -1, rc, one = 1;

	if (c->fd >= 0)
		return 0;
	for (int i = 0; i < API_MAX_KEY + API_EXT_N; i++)
		c->bmin[i] = c->bmax[i] = -1;
	s = &c->conf->servers[c->server_idx % c->conf->nservers];
	c->server_idx++;
	snprintf(port, sizeof(port), "%u", s->port);
	rc = getaddrinfo(s->host, port, &hints, &ai);
	if (rc) {
		snprintf(c->errstr, sizeof(c->errstr), "%s:%s: %s", s->host, port, gai_strerror(rc));
		return SLUICE_ERR_TRANSPORT;
	}
	for (it = ai; it; it = it->ai_next) {
		struct pollfd pfd;
		int64_t left;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		fd = socket(it->ai_family, it->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, it->ai_addr, it->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			snprintf(c->errstr, sizeof(c->errstr), "connect %s:%s: %s", s->host, port,
				 strerror(errno));
			close(fd);
			fd = -1;
			continue;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		left = deadline - kclock_ms();
		if (left < 0)
			left = 0;
		rc = poll(&pfd, 1, (int)left);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
			break;
		snprintf(c->errstr, sizeof(c->errstr), "connect %s:%s: %s", s->host, port,
			 rc == 0 ? "timed out" : strerror(soerr ? soerr : errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return SLUICE_ERR_TRANSPORT;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	rc = handshake(c, deadline);
	if (rc) {
		char why[600];

		snprintf(why, sizeof(why), "%s:%s: %s", s->host, port, c->errstr);
		kconn_close(c, SLUICE_ERR_TRANSPORT, why);
		return rc < 0 ? rc : SLUICE_ERR_TRANSPORT;
	}
	c->errstr[0] = '\0';
	return 0;
}

int kconn_call(struct kconn *c, struct kreq *r, struct kbuf **resp, int timeout_ms)
{
	struct call_result res = { 0 };
	int64_t deadline = kclock_ms() + timeout_ms;
	int rc;

	kconn_send(c, r, call_cb, &res);
	rc = wait_result(c, &res, deadline);
	if (rc) {
		kbuf_unref(res.resp);
		return rc;
	}
	*resp = res.resp;
	return 0;
}
