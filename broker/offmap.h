/*
 * offmap.h — the in-memory copy of the committed consumer-group offsets
 * (SQLite table group_offsets, group.c), which OffsetFetch and the offsets
 * expiry read, and the rule that keeps it equal to SQLite whatever order
 * the changes reach it in.
 *
 * Why an order rule: every change to group_offsets is a coordinator job
 * (coord.h).  The jobs run on the coordinator thread in one order (the
 * SQLite order), but each job's done — which applies the job's changes to
 * this map — runs afterwards on the loop of the request that submitted it,
 * and two loops are two threads: the done of an older job may come after
 * the done of a newer one.  So each change carries the job's sequence
 * number, stamped by the job's run() on the coordinator thread (1, 2, 3 …
 * in SQLite order; 0 for what start-up loads), and:
 *   - every key (group, topic, partition) remembers the sequence of the
 *     change that last wrote it; a change older than that is dropped
 *     (OFFMAP_STALE);
 *   - a delete leaves a tombstone carrying its sequence, and a group delete
 *     a group tombstone, so that an older upsert arriving after them is
 *     dropped rather than bringing the offset back.  Tombstones are
 *     invisible to every reader (offmap_get, offmap_each).
 * The map then ends up as SQLite is once every done has run — except
 * for a change whose job is reported failed after SQLite committed it
 * (the WAL sync failed: the client got an error, the change stays out of
 * the map until a restart loads it) or that found no memory — and a change
 * is visible (or superseded by a newer one) as soon as its own done has
 * applied it: the reply to the request comes after that, so a client sees
 * its commit, or a newer one, on any connection (read-your-writes).
 *
 * Tombstone lifetime: a tombstone is needed only while a job older than it
 * may still apply its changes.  Each job calls offmap_begin before it is
 * submitted (so before run() stamps it) and offmap_end after its done has
 * applied its changes — also when its SQL failed and it changes nothing.
 * Jobs are counted in two generations: a tombstone made now is freed once
 * every job begun before now has ended.  That costs O(1) per job (no map
 * scan), and tombstones go even if jobs keep overlapping so the count of
 * jobs in flight never drops to 0.
 *
 * Threads: none of its own, no lock: the caller serializes every call
 * (group.c holds the coordinator state lock, groups->lock).  The sequence
 * counter is not here: it belongs to the coordinator thread (group.c,
 * offjob_run).
 */
#ifndef SLUICE_OFFMAP_H
#define SLUICE_OFFMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct offmap offmap;

/* One committed offset.  Callers read the first fields only (valid until
 * the next call that changes the map); the rest is the map's. */
typedef struct offmap_ent {
	char *group;
	char *topic;            /* NULL: a group tombstone (never shown) */
	int32_t part;
	int64_t offset;
	int32_t epoch;
	char *meta;             /* never NULL on a live entry */
	int64_t commit_ms;
	/* the map's */
	struct offmap_ent *next;                /* hash chain */
	uint64_t seq;                           /* change that last wrote it */
	bool tomb;
	struct offmap_ent *tnext, **tpprev;     /* tombstones: in tombs[gen] */
} offmap_ent;

/* A change older than what the map already holds for its key: dropped. */
#define OFFMAP_STALE 1

/* Returns 0 and *out, or -ENOMEM (*out untouched). */
int offmap_new(offmap **out);
/* Frees the map and every entry.  Accepts NULL. */
void offmap_free(offmap *m);

/* A job that will change the map: call before it is submitted (before its
 * sequence is stamped).  Returns the ticket to give offmap_end. */
int offmap_begin(offmap *m);
/* The job's changes are applied (or it failed and has none): may free the
 * tombstones no job still in flight is older than. */
void offmap_end(offmap *m, int ticket);

/* Upsert of (g, t, p) by the change numbered seq (0: loaded at start-up).
 * Copies the strings (meta NULL is stored as "").  Returns 0 (applied),
 * OFFMAP_STALE (a newer change of the key, or a newer delete of g, is
 * already applied: nothing changed) or -ENOMEM (nothing changed). */
int offmap_put(offmap *m, uint64_t seq, const char *g, const char *t, int32_t p, int64_t off,
	       int32_t epoch, const char *meta, int64_t commit_ms);
/* Delete of (g, t, p) by change seq: the key is hidden behind a tombstone.
 * Returns 0, OFFMAP_STALE or -ENOMEM (no memory for the tombstone of a key
 * the map did not hold: nothing changed, and an older upsert still in
 * flight could show that key again). */
int offmap_del(offmap *m, uint64_t seq, const char *g, const char *t, int32_t p);
/* Delete of every offset of group g by change seq (entries of g written by
 * newer changes stay).  Returns 0, OFFMAP_STALE or -ENOMEM (the entries are
 * gone, but no group tombstone guards against older upserts in flight). */
int offmap_del_group(offmap *m, uint64_t seq, const char *g);

/* The live entry of (g, t, p), or NULL. */
const offmap_ent *offmap_get(const offmap *m, const char *g, const char *t, int32_t p);
/* Calls fn on every live entry of group g, in no particular order; fn must
 * not change the map. */
void offmap_each(const offmap *m, const char *g, void (*fn)(const offmap_ent *e, void *arg),
		 void *arg);
/* Counts, for tests and statistics: live entries, tombstones (of keys and
 * of groups), jobs begun and not ended. */
void offmap_stats(const offmap *m, size_t *live, size_t *tombs, uint64_t *inflight);

#endif
