/*
 * offmap.c — see offmap.h.
 *
 * Two chained hash tables: keys holds the live entries and the tombstones
 * of single keys, groups the group tombstones (topic NULL).  Every
 * tombstone is also on tombs[gen], a list of its own, so that freeing them
 * never scans the tables.
 *
 * Generations: offmap_begin counts a job in inflight[open].  The other
 * generation is "closed": it holds only jobs begun before the last flip.
 * A tombstone made now goes on tombs[open]; it can go once every job begun
 * before now has ended, i.e. once both generations as they are now have
 * drained.  reclaim(): when the closed generation is empty, its tombstones
 * are freed, and if the open one has tombstones it is closed (flip: new
 * jobs go to the emptied one) so that they are freed when it drains.
 */
#include "offmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct table {
	offmap_ent **b;
	size_t n, count;
} table;

struct offmap {
	table keys;             /* live entries and key tombstones */
	table groups;           /* group tombstones */
	size_t ntombs;          /* on tombs[0] and tombs[1] */
	uint64_t inflight[2];   /* jobs begun and not ended, per generation */
	int open;               /* the generation offmap_begin counts in */
	offmap_ent *tombs[2];   /* tombs[gen]: freed once gen is closed and drained */
};

static uint64_t hash_key(const char *g, const char *t, int32_t p)
{
	uint64_t h = 1469598103934665603ull;

	for (const char *s = g; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	if (!t)
		return h;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *s = t; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return (h ^ (uint32_t)p) * 1099511628211ull;
}

/* The link that points at (g, t, p) in tb, or the NULL link ending its
 * chain.  t NULL: the group tombstone of g (in the groups table). */
static offmap_ent **slot(const table *tb, const char *g, const char *t, int32_t p)
{
	offmap_ent **e = &tb->b[hash_key(g, t, p) % tb->n];

	while (*e && !(!strcmp((*e)->group, g) &&
		       (!t || ((*e)->part == p && !strcmp((*e)->topic, t)))))
		e = &(*e)->next;
	return e;
}

static int table_init(table *tb, size_t n)
{
	tb->b = calloc(n, sizeof(*tb->b));
	tb->n = n;
	tb->count = 0;
	return tb->b ? 0 : -ENOMEM;
}

static void table_grow(table *tb)
{
	size_t n = tb->n * 2;
	offmap_ent **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* keep the old table: longer chains, still correct */
	for (size_t i = 0; i < tb->n; i++) {
		offmap_ent *e = tb->b[i], *next;

		for (; e; e = next) {
			size_t k = hash_key(e->group, e->topic, e->part) % n;

			next = e->next;
			e->next = b[k];
			b[k] = e;
		}
	}
	free(tb->b);
	tb->b = b;
	tb->n = n;
}

/* Puts e at s, the NULL link slot() returned for its key (s is stale
 * afterwards: the table may grow). */
static void table_insert(table *tb, offmap_ent **s, offmap_ent *e)
{
	e->next = NULL;
	*s = e;
	if (++tb->count > tb->n)
		table_grow(tb);
}

static void table_remove(table *tb, offmap_ent *e)
{
	offmap_ent **s = slot(tb, e->group, e->topic, e->part);

	*s = e->next;
	tb->count--;
}

static offmap_ent *ent_new(const char *g, const char *t, int32_t p)
{
	offmap_ent *e = calloc(1, sizeof(*e));

	if (!e || !(e->group = strdup(g)) || (t && !(e->topic = strdup(t)))) {
		if (e)
			free(e->group);
		free(e);
		return NULL;
	}
	e->part = p;
	return e;
}

static void ent_free(offmap_ent *e)
{
	free(e->group);
	free(e->topic);
	free(e->meta);
	free(e);
}

/* Makes e a tombstone of the open generation. */
static void tomb_link(offmap *m, offmap_ent *e)
{
	offmap_ent **head = &m->tombs[m->open];

	e->tomb = true;
	e->tnext = *head;
	if (e->tnext)
		e->tnext->tpprev = &e->tnext;
	*head = e;
	e->tpprev = head;
	m->ntombs++;
}

static void tomb_unlink(offmap *m, offmap_ent *e)
{
	*e->tpprev = e->tnext;
	if (e->tnext)
		e->tnext->tpprev = e->tpprev;
	e->tomb = false;
	m->ntombs--;
}

static void free_tombs(offmap *m, int gen)
{
	offmap_ent *e, *next;

	for (e = m->tombs[gen]; e; e = next) {
		next = e->tnext;
		table_remove(e->topic ? &m->keys : &m->groups, e);
		ent_free(e);
		m->ntombs--;
	}
	m->tombs[gen] = NULL;
}

/* Frees the tombstones no job in flight is older than (see the top). */
static void reclaim(offmap *m)
{
	for (;;) {
		int closed = !m->open;

		if (m->inflight[closed])
			return;
		free_tombs(m, closed);
		if (!m->tombs[m->open])
			return;
		m->open = closed; /* flip: the old open generation is closed */
	}
}

int offmap_new(offmap **out)
{
	offmap *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	if (table_init(&m->keys, 1024) < 0 || table_init(&m->groups, 64) < 0) {
		offmap_free(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

static void table_free(table *tb)
{
	for (size_t i = 0; tb->b && i < tb->n; i++) {
		offmap_ent *e = tb->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			ent_free(e);
		}
	}
	free(tb->b);
}

void offmap_free(offmap *m)
{
	if (!m)
		return;
	table_free(&m->keys);
	table_free(&m->groups);
	free(m);
}

int offmap_begin(offmap *m)
{
	m->inflight[m->open]++;
	return m->open;
}

void offmap_end(offmap *m, int ticket)
{
	m->inflight[ticket]--;
	reclaim(m);
}

/* The sequence of g's last group delete still remembered, or 0 (a group
 * tombstone with seq 0 cannot exist: jobs are numbered from 1). */
static uint64_t group_deleted(const offmap *m, const char *g)
{
	const offmap_ent *gt = *slot(&m->groups, g, NULL, 0);

	return gt ? gt->seq : 0;
}

/* The link of key (g, t, p) for a change numbered seq, or NULL if the
 * change is stale.  Changes of one job share its seq and apply in their
 * SQL order: a change is stale only if something strictly newer wrote its
 * key or deleted its group. */
static offmap_ent **fresh_slot(offmap *m, uint64_t seq, const char *g, const char *t, int32_t p)
{
	offmap_ent **s;

	if (group_deleted(m, g) > seq)
		return NULL;
	s = slot(&m->keys, g, t, p);
	return *s && (*s)->seq > seq ? NULL : s;
}

int offmap_put(offmap *m, uint64_t seq, const char *g, const char *t, int32_t p, int64_t off,
	       int32_t epoch, const char *meta, int64_t commit_ms)
{
	offmap_ent **s = fresh_slot(m, seq, g, t, p), *e;
	char *mc;

	if (!s)
		return OFFMAP_STALE;
	e = *s;
	mc = strdup(meta ? meta : "");
	if (!mc)
		return -ENOMEM;
	if (!e) {
		e = ent_new(g, t, p);
		if (!e) {
			free(mc);
			return -ENOMEM;
		}
		table_insert(&m->keys, s, e);
	} else if (e->tomb) {
		tomb_unlink(m, e); /* newer than the delete: live again */
	}
	free(e->meta);
	e->meta = mc;
	e->offset = off;
	e->epoch = epoch;
	e->commit_ms = commit_ms;
	e->seq = seq;
	return 0;
}

int offmap_del(offmap *m, uint64_t seq, const char *g, const char *t, int32_t p)
{
	offmap_ent **s = fresh_slot(m, seq, g, t, p), *e;

	if (!s)
		return OFFMAP_STALE;
	e = *s;
	if (!e) {
		/* nothing to hide yet, but an older upsert may still come */
		e = ent_new(g, t, p);
		if (!e)
			return -ENOMEM;
		table_insert(&m->keys, s, e);
	} else if (e->tomb) {
		tomb_unlink(m, e); /* relinked below: it must live longer */
	}
	free(e->meta);
	e->meta = NULL;
	e->seq = seq;
	tomb_link(m, e);
	reclaim(m);
	return 0;
}

int offmap_del_group(offmap *m, uint64_t seq, const char *g)
{
	offmap_ent **gs = slot(&m->groups, g, NULL, 0), *gt = *gs;

	if (gt && gt->seq > seq)
		return OFFMAP_STALE;
	for (size_t i = 0; i < m->keys.n; i++) {
		offmap_ent **pe = &m->keys.b[i];

		while (*pe) {
			offmap_ent *e = *pe;

			if (e->seq <= seq && !strcmp(e->group, g)) {
				*pe = e->next;
				m->keys.count--;
				if (e->tomb)
					tomb_unlink(m, e); /* the group tombstone covers it */
				ent_free(e);
			} else {
				pe = &e->next;
			}
		}
	}
	if (!gt) {
		gt = ent_new(g, NULL, 0);
		if (!gt)
			return -ENOMEM;
		table_insert(&m->groups, gs, gt);
	} else {
		tomb_unlink(m, gt);
	}
	gt->seq = seq;
	tomb_link(m, gt);
	reclaim(m);
	return 0;
}

const offmap_ent *offmap_get(const offmap *m, const char *g, const char *t, int32_t p)
{
	const offmap_ent *e = *slot(&m->keys, g, t, p);

	return e && !e->tomb ? e : NULL;
}

void offmap_each(const offmap *m, const char *g, void (*fn)(const offmap_ent *e, void *arg),
		 void *arg)
{
	for (size_t i = 0; i < m->keys.n; i++)
		for (const offmap_ent *e = m->keys.b[i]; e; e = e->next)
			if (!e->tomb && !strcmp(e->group, g))
				fn(e, arg);
}

void offmap_stats(const offmap *m, size_t *live, size_t *tombs, uint64_t *inflight)
{
	size_t key_tombs = m->ntombs - m->groups.count;

	*live = m->keys.count - key_tombs;
	*tombs = m->ntombs;
	*inflight = m->inflight[0] + m->inflight[1];
}
