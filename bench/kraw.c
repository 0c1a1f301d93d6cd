/*
 * kraw.c — see kraw.h.
 */
#include "kraw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"

#define API_PRODUCE 0
#define API_CREATE_TOPICS 19
#define FRAME_MAX (64 << 20)

/* RecordBatch v2 field offsets (proto/recbatch.h). */
#define RB_HEADER 61
#define RB_OFF_LENGTH 8
#define RB_OFF_MAGIC 16
#define RB_OFF_CRC 17
#define RB_OFF_ATTR 21

int64_t kraw_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kraw_real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- a growable big-endian writer ---- */

typedef struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
} wbuf;

static uint8_t *w_room(wbuf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		uint8_t *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return NULL;
		}
		b->p = p;
		b->cap = cap;
	}
	b->len += n;
	return b->p + b->len - n;
}

static void w_be(wbuf *b, uint64_t v, int bytes)
{
	uint8_t *p = w_room(b, (size_t)bytes);

	for (int i = 0; p && i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static void w_raw(wbuf *b, const void *src, size_t n)
{
	uint8_t *p = w_room(b, n);

	if (p)
		memcpy(p, src, n);
}

static void w_str(wbuf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	w_be(b, s ? n : (uint16_t)-1, 2);
	w_raw(b, s, n);
}

static void w_varint(wbuf *b, int64_t v)
{
	uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);

	while (u >= 0x80) {
		w_be(b, (u & 0x7f) | 0x80, 1);
		u >>= 7;
	}
	w_be(b, u, 1);
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

/* Frame header: size placeholder, api key/version, corr 0, client id. */
static void w_header(wbuf *b, int16_t key, int16_t ver, const char *client_id)
{
	w_be(b, 0, 4);
	w_be(b, (uint16_t)key, 2);
	w_be(b, (uint16_t)ver, 2);
	w_be(b, 0, 4);
	w_str(b, client_id);
}

static void patch_size(wbuf *b)
{
	if (!b->oom)
		put_be(b->p, b->len - 4, 4);
}

/* One RecordBatch v2 of nrec records with null keys and vlen-byte values. */
static void w_batch(wbuf *b, int nrec, size_t vlen)
{
	size_t start = b->len;
	int64_t ts = kraw_real_ns() / 1000000;
	uint8_t *h = w_room(b, RB_HEADER);
	uint8_t *v;

	if (!h)
		return;
	memset(h, 0, RB_HEADER);
	for (int i = 0; i < nrec; i++) {
		wbuf rec = { 0 };

		w_be(&rec, 0, 1);       /* attributes */
		w_varint(&rec, 0);      /* timestampDelta */
		w_varint(&rec, i);      /* offsetDelta */
		w_varint(&rec, -1);     /* null key */
		w_varint(&rec, (int64_t)vlen);
		v = w_room(&rec, vlen);
		if (v)
			memset(v, 'a' + i % 26, vlen);
		w_varint(&rec, 0);      /* no headers */
		if (rec.oom)
			b->oom = true;
		w_varint(b, (int64_t)rec.len);
		w_raw(b, rec.p, rec.len);
		free(rec.p);
	}
	if (b->oom)
		return;
	h = b->p + start;
	put_be(h + RB_OFF_LENGTH, b->len - start - 12, 4);
	h[RB_OFF_MAGIC] = 2;
	put_be(h + 23, (uint32_t)(nrec - 1), 4);       /* lastOffsetDelta */
	put_be(h + 27, (uint64_t)ts, 8);               /* baseTimestamp */
	put_be(h + 35, (uint64_t)ts, 8);               /* maxTimestamp */
	put_be(h + 43, (uint64_t)-1, 8);               /* producerId: none */
	put_be(h + 51, 0xffff, 2);                     /* producerEpoch */
	put_be(h + 53, 0xffffffffu, 4);                /* baseSequence */
	put_be(h + 57, (uint32_t)nrec, 4);             /* recordCount */
	put_be(h + RB_OFF_CRC, crc32c(0, h + RB_OFF_ATTR, b->len - start - RB_OFF_ATTR), 4);
}

int kraw_produce_frame(kraw_frame *f, const char *client_id, const char *topic, int nrec,
		       size_t vlen, int16_t acks, int32_t timeout_ms)
{
	wbuf b = { 0 };
	size_t at;

	w_header(&b, API_PRODUCE, 3, client_id);
	w_str(&b, NULL);                 /* transactional id */
	w_be(&b, (uint16_t)acks, 2);
	w_be(&b, (uint32_t)timeout_ms, 4);
	w_be(&b, 1, 4);                  /* one topic */
	w_str(&b, topic);
	w_be(&b, 1, 4);                  /* one partition */
	w_be(&b, 0, 4);                  /* partition 0 */
	at = b.len;
	w_be(&b, 0, 4);                  /* records size, patched */
	w_batch(&b, nrec, vlen);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	put_be(b.p + at, b.len - at - 4, 4);
	patch_size(&b);
	f->data = b.p;
	f->len = b.len;
	return 0;
}

void kraw_frame_set_corr(kraw_frame *f, int32_t corr)
{
	put_be(f->data + 8, (uint32_t)corr, 4);
}

void kraw_frame_free(kraw_frame *f)
{
	free(f->data);
	f->data = NULL;
	f->len = 0;
}

/* ---- connection ---- */

int kraw_connect(kraw *k, const char *hostport, bool rx_timestamps)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(hostport, ':');
	int one = 1, rc;

	k->fd = -1;
	k->rbuf = NULL;
	k->rcap = 0;
	k->rlen = 0;
	if (!colon || (size_t)(colon - hostport) >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (k->fd < 0)
		return -errno;
	setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (rx_timestamps)
		setsockopt(k->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	if (connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		kraw_close(k);
		return rc;
	}
	return 0;
}

void kraw_close(kraw *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	free(k->rbuf);
	k->rbuf = NULL;
	k->rcap = 0;
	k->rlen = 0;
}

int kraw_send(kraw *k, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(k->fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One recvmsg of up to len bytes (at least 1); *ts = the arrival time of
 * the last skb read, if the kernel gave one.  Returns the count or -errno
 * (-ECONNRESET at end of stream). */
static ssize_t recv_some(kraw *k, uint8_t *dst, size_t len, int64_t *ts)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct timespec)) * 2];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { dst, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	ssize_t n;

	do
		n = recvmsg(k->fd, &mh, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
			struct timespec t;

			memcpy(&t, CMSG_DATA(c), sizeof(t));
			*ts = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
		}
	}
	return n;
}

/* Reads exactly len bytes; *ts = the arrival time of the last skb read. */
static int read_exact(kraw *k, uint8_t *dst, size_t len, int64_t *ts)
{
	while (len > 0) {
		ssize_t n = recv_some(k, dst, len, ts);

		if (n < 0)
			return (int)n;
		dst += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Room for at least want more bytes after rlen. */
static int rbuf_room(kraw *k, size_t want)
{
	size_t cap = k->rcap ? k->rcap : 65536;
	uint8_t *p;

	while (cap < k->rlen + want)
		cap *= 2;
	if (cap == k->rcap)
		return 0;
	p = realloc(k->rbuf, cap);
	if (!p)
		return -ENOMEM;
	k->rbuf = p;
	k->rcap = cap;
	return 0;
}

int kraw_read_frames(kraw *k, kraw_frame_fn *fn, void *ctx)
{
	size_t pos = 0;
	int64_t ts = 0;
	ssize_t n;
	int rc;

	rc = rbuf_room(k, 16384);
	if (rc < 0)
		return rc;
	n = recv_some(k, k->rbuf + k->rlen, k->rcap - k->rlen, &ts);
	if (n < 0)
		return (int)n;
	k->rlen += (size_t)n;
	while (rc == 0 && k->rlen - pos >= 4) {
		uint32_t size = (uint32_t)get_be(k->rbuf + pos, 4);

		if (size < 4 || size > FRAME_MAX)
			return -EPROTO;
		if (k->rlen - pos - 4 < size) {
			rc = rbuf_room(k, size + 4); /* the rest comes next call */
			break;
		}
		rc = fn(ctx, (int32_t)get_be(k->rbuf + pos + 4, 4), k->rbuf + pos + 8, size - 4, ts);
		pos += 4 + size;
	}
	memmove(k->rbuf, k->rbuf + pos, k->rlen - pos);
	k->rlen -= pos;
	return rc;
}

int kraw_recv(kraw *k, int32_t *corr, const uint8_t **body, size_t *len, int64_t *rx_real_ns)
{
	uint8_t hdr[4];
	int64_t ts = 0;
	uint32_t size;
	int rc;

	rc = read_exact(k, hdr, 4, &ts);
	if (rc < 0)
		return rc;
	size = (uint32_t)get_be(hdr, 4);
	if (size < 4 || size > FRAME_MAX)
		return -EPROTO;
	if (size > k->rcap) {
		uint8_t *p = realloc(k->rbuf, size);

		if (!p)
			return -ENOMEM;
		k->rbuf = p;
		k->rcap = size;
	}
	rc = read_exact(k, k->rbuf, size, &ts);
	if (rc < 0)
		return rc;
	*corr = (int32_t)get_be(k->rbuf, 4);
	*body = k->rbuf + 4;
	*len = size - 4;
	*rx_real_ns = ts;
	return 0;
}

/* ---- responses ---- */

/* A bounds-checked reader. */
typedef struct rd {
	const uint8_t *p;
	size_t left;
	bool err;
} rd;

static uint64_t r_be(rd *r, int bytes)
{
	uint64_t v;

	if (r->err || r->left < (size_t)bytes) {
		r->err = true;
		return 0;
	}
	v = get_be(r->p, bytes);
	r->p += bytes;
	r->left -= (size_t)bytes;
	return v;
}

static void r_skip_str(rd *r)
{
	int16_t n = (int16_t)r_be(r, 2);

	if (n < 0)
		return;
	if (r->left < (size_t)n) {
		r->err = true;
		return;
	}
	r->p += n;
	r->left -= (size_t)n;
}

int kraw_parse_produce(const uint8_t *body, size_t len, int16_t *err, int64_t *base,
		       int32_t *throttle_ms)
{
	rd r = { body, len, false };
	int16_t e = 0;
	int64_t b = -1;

	if ((int32_t)r_be(&r, 4) != 1)
		return -EPROTO;
	r_skip_str(&r);
	if ((int32_t)r_be(&r, 4) != 1)
		return -EPROTO;
	(void)r_be(&r, 4);            /* partition */
	e = (int16_t)r_be(&r, 2);
	b = (int64_t)r_be(&r, 8);
	(void)r_be(&r, 8);            /* log append time */
	*throttle_ms = (int32_t)r_be(&r, 4);
	if (r.err)
		return -EPROTO;
	*err = e;
	*base = b;
	return 0;
}

int kraw_create_topic(kraw *k, const char *topic, int nparts, const char *const *kv, int nkv,
		      int16_t *err)
{
	wbuf b = { 0 };
	const uint8_t *body;
	size_t len;
	int32_t corr;
	int64_t ts;
	int rc;

	w_header(&b, API_CREATE_TOPICS, 1, "kraw");
	w_be(&b, 1, 4);
	w_str(&b, topic);
	w_be(&b, (uint32_t)nparts, 4);
	w_be(&b, 1, 2);                  /* replication factor */
	w_be(&b, 0, 4);                  /* no assignments */
	w_be(&b, (uint32_t)(nkv / 2), 4);
	for (int i = 0; i + 1 < nkv; i += 2) {
		w_str(&b, kv[i]);
		w_str(&b, kv[i + 1]);
	}
	w_be(&b, 10000, 4);              /* timeout */
	w_be(&b, 0, 1);                  /* validate only: no */
	patch_size(&b);
	rc = b.oom ? -ENOMEM : kraw_send(k, b.p, b.len);
	free(b.p);
	if (rc < 0)
		return rc;
	rc = kraw_recv(k, &corr, &body, &len, &ts);
	if (rc < 0)
		return rc;
	{
		rd r = { body, len, false };

		if ((int32_t)r_be(&r, 4) != 1)
			return -EPROTO;
		r_skip_str(&r);
		*err = (int16_t)r_be(&r, 2);
		if (r.err)
			return -EPROTO;
	}
	return 0;
}
