/*
 * kconn.h — one Kafka protocol connection: framing, correlation ids,
 * ApiVersions negotiation, pipelined requests with completion callbacks.
 *
 * Owns: the socket, the queued and in-flight requests (kreq), the buffer of
 * the response being read.  Responses arrive in request order (Kafka
 * guarantees it per connection); each completes its request's callback.
 *
 * Threads: a kconn belongs to exactly one thread (a handle's I/O thread, or
 * the caller of a blocking admin call under the handle's lock).
 *
 * Callbacks: `cb(c, req, err, resp, ctx)` runs exactly once per request sent
 * with kconn_send(): err 0 and resp = the response frame (resp->data starts
 * at the correlation id; 4 bytes in comes the body), or err < 0
 * (SLUICE_ERR_TRANSPORT, SLUICE_ERR_TIMED_OUT, SLUICE_ERR_DESTROYED) and resp
 * NULL.  The callback may keep resp by taking a reference (kbuf_ref).  It
 * must not close the connection; it may send new requests.
 */
#ifndef SLUICE_CLIENT_KCONN_H
#define SLUICE_CLIENT_KCONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "conf.h"
#include "wire.h"

enum {
	API_PRODUCE = 0,
	API_FETCH = 1,
	API_LIST_OFFSETS = 2,
	API_METADATA = 3,
	API_API_VERSIONS = 18,
	API_CREATE_TOPICS = 19,
	API_DELETE_TOPICS = 20,
	API_INIT_PRODUCER_ID = 22,
	API_DESCRIBE_CONFIGS = 32,
	API_ALTER_CONFIGS = 33,
	API_MAX_KEY = 64,
	/* Sluice extensions (docs/protocol.md): keys API_EXT_BASE.. are kept
	 * in the version table after the Kafka keys. */
	API_EXT_BASE = 1000,
	API_TXN_PREPARE = 1000,
	API_TXN_END = 1001,
	API_TXN_CHECK_POLL = 1002,
	API_TXN_LIST = 1003,
	API_TXN_DESCRIBE = 1004,
	API_EXT_N = 16,
};

/* A reference-counted byte buffer (response frames).  Thread-safe refs. */
struct kbuf {
	atomic_int refs;
	size_t len;
	size_t cap; /* allocated bytes after the header */
	uint8_t data[];
};

/* Buffers of 64 KiB and more come from (and return to) a small
 * process-wide pool guarded by a mutex: large fresh mallocs are mmap'd and
 * page-fault on first touch, which costs more than the data copy. */
struct kbuf *kbuf_new(size_t len);
void kbuf_ref(struct kbuf *b);
void kbuf_unref(struct kbuf *b); /* NULL-safe */

struct kconn;
struct kreq;
typedef void kreq_cb(struct kconn *c, struct kreq *req, int err, struct kbuf *resp, void *ctx);

struct kreq_splice {
	size_t at; /* position in wb where the bytes go */
	const uint8_t *p;
	size_t len;
};

struct kreq {
	struct kreq *next;
	int32_t corr;
	int16_t api, ver;
	bool no_response; /* acks=0 produce: completes once written */
	int extra_timeout_ms; /* added to request.timeout.ms (fetch long-poll) */
	wire_buf wb;
	struct kreq_splice *splices;
	int nsplices, splices_cap;
	struct iovec *iov;
	int iovcnt, iov_i;
	int64_t sent_ms;
	kreq_cb *cb;
	void *ctx;
};

struct kconn {
	int fd; /* -1 when not connected */
	const struct sluice_conf *conf;
	int server_idx;
	int32_t next_corr;
	int16_t bmin[API_MAX_KEY + API_EXT_N], bmax[API_MAX_KEY + API_EXT_N]; /* broker ranges
									      * (kconn_api_slot); bmax -1 = absent */
	struct kreq *out_head, *out_tail;   /* not yet fully written */
	struct kreq *wait_head, *wait_tail; /* written, awaiting the response */
	int nwait;
	uint8_t rhdr[4];
	size_t rhdr_got;
	struct kbuf *rbuf;
	size_t rgot;
	/* Read staging: small responses (produce acks, metadata) arrive with
	 * their size prefix, and often several at once, in one read(); large
	 * bodies are read straight into their kbuf. */
	size_t rs_off, rs_len;
	uint8_t rstage[4096];
	char errstr[256]; /* why the last connect/close happened */
};

void kconn_init(struct kconn *c, const struct sluice_conf *conf);
/* Closes the socket and completes every request with err.  Safe when closed. */
void kconn_close(struct kconn *c, int err, const char *why);

/* Blocking connect to the next bootstrap server + ApiVersions handshake,
 * within timeout_ms.  Returns 0 or a negative sluice_err_t (errstr set);
 * the connection stays closed on failure. */
int kconn_connect(struct kconn *c, int timeout_ms);
static inline bool kconn_up(const struct kconn *c) { return c->fd >= 0; }

/* Index of api in bmin/bmax, or -1 for a key the table does not keep. */
static inline int kconn_api_slot(int api)
{
	if (api >= 0 && api < API_MAX_KEY)
		return api;
	if (api >= API_EXT_BASE && api < API_EXT_BASE + API_EXT_N)
		return API_MAX_KEY + (api - API_EXT_BASE);
	return -1;
}

/* Highest version of api in [cmin, cmax] the broker supports, or -1. */
int kconn_version(const struct kconn *c, int api, int cmin, int cmax);

/* Starts a request: writes the frame header (size filled in by send). */
struct kreq *kreq_new(struct kconn *c, int16_t api, int16_t ver);
/* Places len bytes at p at the current end of the request without copying;
 * they must stay valid until the callback ran. */
void kreq_splice(struct kreq *r, const void *p, size_t len);
void kreq_free(struct kreq *r);
/* Queues r (ownership passes to the connection) and completes it with cb.
 * On a closed connection, or if the request could not be built (oom), the
 * callback runs at once with SLUICE_ERR_TRANSPORT / NO_MEMORY. */
void kconn_send(struct kconn *c, struct kreq *r, kreq_cb *cb, void *ctx);

/* Events to poll for (POLLIN, plus POLLOUT when data is queued). */
short kconn_events(const struct kconn *c);
/* Handles poll's revents: writes, reads, completes callbacks.  On error the
 * connection is closed (all requests fail).  Returns 0 or negative err. */
int kconn_io(struct kconn *c, short revents, int64_t now_ms);
/* Closes the connection if the oldest in-flight request is older than
 * request.timeout.ms (+ its extra).  Returns ms until the next check. */
int kconn_check_timeouts(struct kconn *c, int64_t now_ms);

/* Sends r and waits for its response (blocking, up to timeout_ms),
 * connecting first if needed.  On 0 *resp holds a reference the caller
 * drops; on failure returns negative err and the connection may be closed. */
int kconn_call(struct kconn *c, struct kreq *r, struct kbuf **resp, int timeout_ms);

/* Monotonic and wall clocks in ms. */
int64_t kclock_ms(void);
int64_t kwall_ms(void);

#endif
