/*
 * blog.h — the broker's log lines (stderr): "2026-11-24T01:02:03.456Z WARN msg".
 *
 * Thread-safe: every line is formatted into a local buffer and written with
 * one write(2), so lines from different threads never interleave.
 * BLOG_RL() rate-limits a call site (at most BLOG_RL_BURST lines per second,
 * then a count of what was suppressed), so a client sending garbage in a loop
 * cannot flood the log: bad input is "logged once".
 */
#ifndef SLUICE_BLOG_H
#define SLUICE_BLOG_H

#include <stdatomic.h>
#include <stdint.h>

enum blog_level { BLOG_DEBUG, BLOG_INFO, BLOG_WARN, BLOG_ERROR };

/* Lines below this level are dropped; set once at start-up. */
extern int blog_threshold;

/* Parses "debug|info|warn|error"; returns the level or -1. */
int blog_parse_level(const char *s);

void blog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define BLOG_RL_BURST 10

typedef struct blog_rl {
	_Atomic int64_t window_ms; /* start of the current one-second window */
	atomic_uint used;          /* lines logged in the window */
	atomic_uint suppressed;
} blog_rl;

/* True if the call site may log now; *suppressed gets the skipped count. */
int blog_rl_allow(blog_rl *rl, unsigned *suppressed);

#define BLOG_RL(level, fmt, ...) do { \
	static blog_rl rl_; \
	unsigned sup_; \
	if (blog_rl_allow(&rl_, &sup_)) { \
		if (sup_) \
			blog(level, fmt " (%u similar suppressed)", ##__VA_ARGS__, sup_); \
		else \
			blog(level, fmt, ##__VA_ARGS__); \
	} \
} while (0)

#endif
