/*
 * conn.h — one client connection and its requests.
 *
 * A connection reads Kafka frames (int32 size + request), hands each to the
 * dispatcher (api.h), and writes responses strictly in request order, as
 * Kafka clients require.  A response is a list of parts: bytes in the
 * request's own buffer, or a byte range of a segment file sent with
 * sendfile(2) — Fetch data never passes through user space.
 *
 * Writing: a response is written when it is finished, except inside a
 * deferral (conn_defer_begin/end: the handling of one read, one batch of
 * tasks posted to the loop), where the finished responses are written
 * together at its end: one writev for all consecutive finished responses
 * held in memory, so a round of transaction answers or a read full of
 * pipelined requests costs one system call per connection, not one per
 * response.  Responses released by timers (the flow-control pacer) go
 * out at once, as their timing is the point.
 *
 * Connection states: READING (normal), PAUSED (too many requests awaiting
 * responses: reading stops until the queue drains, which pushes back on the
 * client through TCP), CLOSING (flushing nothing more; freed at once).
 *
 * Threads: a conn and its reqs belong to the worker loop that accepted it.
 * A req outlives its conn when asynchronous work (a SQLite job, a wake-up
 * task) still refers to it: such work holds a reference (req_ref) and finds
 * req->conn == NULL when the connection has gone.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "partlog.h"
#include "server.h"
#include "wire.h"

enum { PART_MEM, PART_FILE };

typedef struct out_part {
	int kind;
	size_t off, len;       /* PART_MEM: bytes resp.data[off..off+len) */
	partlog_range range;   /* PART_FILE: a referenced segment range */
} out_part;

typedef struct req {
	struct req *next;
	struct conn *conn;     /* NULL once the connection has gone */
	worker *w;
	int refs;              /* loop-owned count: the conn's + async work's */
	int16_t api_key, api_version;
	int32_t corr_id;
	bool done;             /* response complete (or none to send) */
	bool no_response;      /* acks=0 produce */
	wire_buf resp;         /* int32 size, int32 correlation id, body */
	out_part *parts;       /* NULL: the whole of resp is the response */
	int nparts, cap_parts;
	size_t file_bytes;     /* bytes of PART_FILE parts */
	size_t queued_mem;     /* conn.c: resp bytes counted against the conn's
				  unread answers since req_finish */
	size_t mem_mark;       /* start of the resp bytes not yet in a part */
	char client_id[128];   /* from the request header (truncated) */
	loop_task post;        /* req_post_finish */
	/* Handler state for asynchronous requests: freed by req_unref. */
	void *state;
	void (*cancel)(struct req *r); /* conn closing: detach timers/waiters */
	void (*shutdown)(struct req *r); /* broker stopping: answer now if possible */
	void (*free_state)(struct req *r);
} req;

typedef struct conn {
	struct conn *prev, *next; /* worker's list */
	worker *w;
	int fd;
	ev_io rio, wio;
	uint8_t *rbuf;           /* owned: bytes read, not yet a whole frame */
	size_t rlen, rcap;
	req *q_head, *q_tail;    /* owned: requests in arrival order */
	int nreq;
	int part_idx;            /* write cursor in q_head's parts */
	size_t part_off;
	bool paused;
	char peer[64];
} conn;

/* Accepted socket fd → new conn on w (fd is owned by the conn from now on,
 * closed on failure). */
void conn_accept(worker *w, int fd);
/* Closes and frees (reason is logged at debug level, or warn if bad input). */
void conn_close(conn *c, int level, const char *reason);
/* Broker shutdown: answers what waits (parked produce requests get an
 * error, long-polls what they have), writes what the socket takes, closes. */
void conn_shutdown(conn *c);
/* Loop thread: responses finished from here to the matching end are
 * written together at the end (nests). */
void conn_defer_begin(worker *w);
void conn_defer_end(worker *w);

/* Completes r: patches the frame size, marks it done and writes what can be
 * written — at the end of the current deferral if one is open (see the
 * top).  Does nothing when r->conn is NULL (the connection has gone).
 * Never drops a reference: asynchronous work that held one calls
 * req_unref(r) after req_finish(r). */
void req_finish(req *r);
/* Adds a sendfile part: the bytes written to r->resp so far become a memory
 * part, then the range (ownership of its reference moves to r). */
void req_add_file(req *r, partlog_range *range);

/* Any thread, for a request whose response another thread has written
 * while the request was parked (its loop does not touch it meanwhile):
 * hands it back to its loop, which finishes it and drops one reference
 * (the one the parking took). */
void req_post_finish(req *r);

void req_ref(req *r);
void req_unref(req *r);
/* Frees the requests w keeps for reuse (server_free, after the loop's last
 * task ran). */
void req_cache_free(worker *w);

#endif
