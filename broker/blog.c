/* blog.c — see blog.h. */
#include "blog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int blog_threshold = BLOG_INFO;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

int blog_parse_level(const char *s)
{
	for (int i = 0; i <= BLOG_ERROR; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return BLOG_WARN;
	return -1;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void blog(int level, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	va_list ap;
	int r;

	if (level < blog_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
		     level_names[level < 0 || level > BLOG_ERROR ? BLOG_ERROR : level]);
	n += r > 0 ? (size_t)r : 0;
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n += r > 0 ? (size_t)r : 0;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}

int blog_rl_allow(blog_rl *rl, unsigned *suppressed)
{
	int64_t now = mono_ms();
	int64_t start = atomic_load_explicit(&rl->window_ms, memory_order_relaxed);

	if (now - start >= 1000 &&
	    atomic_compare_exchange_strong(&rl->window_ms, &start, now))
		atomic_store(&rl->used, 0);
	if (atomic_fetch_add(&rl->used, 1) >= BLOG_RL_BURST) {
		atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
		return 0;
	}
	*suppressed = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
	return 1;
}
