/*
 * server.h — the broker's runtime: the shared context (struct server) and the
 * event-loop workers.
 *
 * Each worker is one thread running one libev loop.  It owns its listening
 * socket (SO_REUSEPORT: the kernel spreads new connections over workers),
 * its connections and everything hanging off them (requests, timers, fetch
 * waits).  Nothing owned by a worker is touched by another thread, with one
 * door in: worker_post(), a mutex-protected task queue plus an ev_async, which
 * other threads (appenders on other loops, the syncer, the SQLite coordinator)
 * use to hand work back to the owning loop.
 *
 * Each worker also has a pacer (pacer.h): a timerfd-driven timer with
 * microsecond precision, for what must not be rounded to libev's whole
 * milliseconds (the release of parked produce requests).  Loop-owned like
 * everything else of the worker.
 *
 * struct server is created by main() before any thread starts; its pointers
 * are fixed afterwards.  Counters are atomics.
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "pacer.h"
#include "reuse.h"

struct conn;
struct topics;
struct coord;
struct syncer;
struct quota;

/* A unit of work handed to a worker's loop from any thread.  The poster owns
 * the memory until fn runs; fn runs on the worker's thread. */
typedef struct loop_task {
	struct loop_task *next;
	void (*fn)(struct loop_task *t);
} loop_task;

typedef struct worker {
	int id;
	struct server *srv;
	struct ev_loop *loop;
	pthread_t thread;
	int listen_fd;
	ev_io accept_w;
	ev_async async_w;
	ev_timer pause_w;          /* re-enables accept after EMFILE */
	pacer pacer;               /* precise timers of this loop (pacer.h) */
	pthread_mutex_t q_lock;    /* protects q_head/q_tail */
	loop_task *q_head, *q_tail;
	atomic_bool stop;
	struct conn *conns;        /* owned: every open connection of this loop */
	int defer_flush;           /* > 0: req_finish queues (conn_defer_begin) */
	struct conn *flush_list;   /* connections with responses to write (conn.c) */
	reuse_list req_cache;      /* released requests kept for reuse (conn.c) */
	reuse_list txn_cache;      /* released txn jobs kept for reuse (txn_api.c) */
} worker;

typedef struct server {
	const config *cfg;
	struct topics *topics;
	struct coord *coord;
	struct syncer *syncer;
	struct quota *quota;       /* per-client-id produce limits, or NULL */
	int port;                  /* bound port (after server_listen) */
	int nworkers;
	worker *workers;
	atomic_int nconns;
	atomic_uint_fast64_t produced_batches;
} server;

/* Creates the listening sockets (one per worker) and the loops; does not start
 * threads.  Returns 0 or -errno (bind failure is logged). */
int server_listen(server *srv);
/* Starts the worker threads. */
int server_start(server *srv);
/* Asks every worker to close its connections and stop; joins them.  The
 * loops stay allocated so late worker_post() calls stay safe. */
void server_stop(server *srv);
/* After server_stop and after every thread that posts tasks has stopped:
 * runs the tasks still queued, destroys the loops, closes the listeners. */
void server_free(server *srv);

/* Any thread: queue t to run on w's loop. */
void worker_post(worker *w, loop_task *t);
/* Any thread, in pairs that may nest: between them, this thread's
 * worker_post() calls queue their task but wake each loop only once, at the
 * outermost worker_post_flush().  For a thread that completes many jobs at
 * once (the SQLite coordinator, a WAL syncer): a loop woken per task spends
 * its time in wake-ups, and the poster in eventfd writes. */
void worker_post_defer(void);
void worker_post_flush(void);

/* Wall clock in ms (record timestamps, segment ages). */
int64_t now_ms(void);

#endif
