/*
 * lathist.h — the latency histogram of the benchmarks (`sluice bench`,
 * bench/rdkafka_produce.c), header-only so programs that do not link
 * libsluice can share it.
 *
 * Log-linear in microseconds: 64 powers of two x 32 steps, so any value is
 * kept with a relative error under 3 %, in fixed memory (16 KiB), with no
 * allocation per sample.  A histogram is a plain value owned by one thread;
 * merge per-thread histograms at the end.
 */
#ifndef SLUICE_LATHIST_H
#define SLUICE_LATHIST_H

#include <math.h>
#include <stdint.h>

#define LATHIST_SUB 32

struct lathist {
	uint64_t n[64 * LATHIST_SUB];
	uint64_t count;
};

static inline void lathist_add(struct lathist *h, int64_t us)
{
	uint64_t v = us < 0 ? 0 : (uint64_t)us;
	int e = 0;

	while ((v >> e) >= LATHIST_SUB)
		e++;
	h->n[e * LATHIST_SUB + (int)(v >> e)]++;
	h->count++;
}

/* The pct-th percentile in microseconds (0 for an empty histogram). */
static inline double lathist_pct(const struct lathist *h, double pct)
{
	uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->count), seen = 0;

	for (int i = 0; h->count && i < 64 * LATHIST_SUB; i++) {
		seen += h->n[i];
		if (seen >= want && h->n[i]) {
			int e = i / LATHIST_SUB, m = i % LATHIST_SUB;

			return (double)(((uint64_t)m << e) + ((1ull << e) >> 1));
		}
	}
	return 0;
}

static inline void lathist_merge(struct lathist *into, const struct lathist *from)
{
	for (int i = 0; i < 64 * LATHIST_SUB; i++)
		into->n[i] += from->n[i];
	into->count += from->count;
}

#endif
