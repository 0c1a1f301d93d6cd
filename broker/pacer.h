/*
 * pacer.h — a precise one-shot timer service per event loop, for events that
 * must happen at a given microsecond rather than in the same millisecond
 * (the release of parked produce requests: 10 µs apart at 100,000 msgs/s).
 *
 * Why not ev_timer: libev's epoll backend sleeps in epoll_wait, whose
 * timeout is whole milliseconds (rounded up), so ev_timers due within one
 * millisecond all run together, after it: releases come in ~1 ms clumps.  A
 * timerfd has no such rounding and no timer slack; when it expires the fd
 * becomes readable and epoll_wait returns at once.
 *
 * What it owns: one timerfd (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC),
 * the ev_io watching it (highest priority, so a due release runs before the
 * other callbacks of the same loop iteration), and a binary min-heap of
 * pointers to pending entries, ordered by (deadline, start order): entries
 * due at the same nanosecond run in the order they were started.  Entries
 * are intrusive and caller-owned: embed a pacer_entry, keep it valid while
 * it is pending (until its callback runs or pacer_stop).
 *
 * Cost: the timerfd is set (one timerfd_settime, absolute deadline) only
 * when the earliest deadline moves earlier than the one it is set for, and
 * once per firing to the next deadline: one syscall per release step, never
 * one per entry.  pacer_stop never makes a syscall: a timerfd left set for
 * an entry that was stopped fires, finds nothing due and re-arms.
 *
 * Firing: every entry due at the moment of the wake-up runs, in order.  An
 * entry a callback starts (even with a deadline already past) runs at the
 * next loop iteration at the earliest: the timerfd is re-armed, in the past
 * if need be, so it fires at once, after the socket I/O of the iteration;
 * nothing spins and the loop's connections are never starved.
 *
 * Threads: a pacer belongs to one loop; every call comes from that loop's
 * thread.  Times are CLOCK_MONOTONIC nanoseconds (pacer_now_ns()).
 *
 * Errors: -errno from timerfd_create / allocation, as documented per call.
 */
#ifndef SLUICE_PACER_H
#define SLUICE_PACER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pacer_entry pacer_entry;

/* Runs on the loop's thread when the entry is due; now_ns is the clock read
 * at the wake-up (>= the deadline).  The entry is no longer pending: the
 * callback may start it again, free it, or start and stop others. */
typedef void pacer_fn(pacer_entry *e, int64_t now_ns);

struct pacer_entry {
	int64_t deadline_ns; /* absolute CLOCK_MONOTONIC ns, set by pacer_start */
	uint64_t seq;        /* start order: ties run first-started first */
	uint32_t slot;       /* heap index + 1; 0 when not pending */
	pacer_fn *fn;
	void *data;          /* for the callback */
};

typedef struct pacer_stats {
	uint64_t wakeups;  /* timerfd firings handled */
	uint64_t arms;     /* timerfd_settime calls */
	uint64_t run;      /* callbacks run */
} pacer_stats;

typedef struct pacer {
	struct ev_loop *loop;
	int tfd;           /* -1 before pacer_init succeeds */
	ev_io io;
	pacer_entry **heap;
	uint32_t len, cap;
	uint64_t next_seq;
	int64_t armed_ns;  /* what the timerfd is set to; INT64_MAX = not set */
	pacer_stats stats;
} pacer;

/* ---- new / free ---- */

/* Creates the timerfd and starts watching it on loop.  Returns 0, or -errno
 * (timerfd_create, allocation), in which case *p holds no resources and
 * pacer_free(p) is a no-op. */
int pacer_init(pacer *p, struct ev_loop *loop);

/* Stops the watcher, closes the timerfd, frees the heap.  Pending entries
 * are forgotten (their callbacks never run).  Accepts a zeroed or failed
 * pacer. */
void pacer_free(pacer *p);

/* ---- operations ---- */

/* Prepares an entry (not pending) with its callback. */
void pacer_entry_init(pacer_entry *e, pacer_fn *fn, void *data);

static inline bool pacer_pending(const pacer_entry *e) { return e->slot != 0; }

/* Schedules e to run at deadline_ns (absolute; a time in the past runs it at
 * the next loop iteration, never from inside this call).  If e is pending
 * already it is moved.  Returns 0, or -ENOMEM (heap growth failed: e is
 * left as it was), or -errno from timerfd_settime (e stays scheduled, but
 * the wake-up may come late: callers should treat it as fatal for the
 * request). */
int pacer_start(pacer *p, pacer_entry *e, int64_t deadline_ns);

/* Unschedules e if pending (no syscall).  Safe on an entry that is not. */
void pacer_stop(pacer *p, pacer_entry *e);

/* CLOCK_MONOTONIC in nanoseconds: the clock of every deadline. */
int64_t pacer_now_ns(void);

#endif
