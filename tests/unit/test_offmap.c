/*
 * test_offmap.c — broker/offmap: the committed-offsets map ends as SQLite
 * does whatever order the jobs' changes reach it in.  Jobs are numbered in
 * SQLite order (as offjob_run does) and their changes applied out of order
 * (as dones on different loops may run): a late older upsert loses to a
 * newer upsert, to a newer delete and to a newer group delete, and a late
 * older delete does not remove a newer upsert; every order of a mixed set
 * of jobs ends as the in-order run and shows each job's change (or a newer
 * one) once its own done ran; tombstones are invisible and freed once no
 * older job is in flight, also when jobs keep overlapping and when a job
 * failed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "offmap.h"

enum { PUT, DEL, DELG };

typedef struct op {
	int kind;
	const char *g, *t;
	int32_t p;
	int64_t off;
} op;

typedef struct job {
	uint64_t seq;           /* SQLite order */
	bool failed;            /* its SQL failed: no changes, still ended */
	int nops;
	op ops[3];
	int ticket;
} job;

static offmap *new_map(void)
{
	offmap *m = NULL;

	assert_int_equal(offmap_new(&m), 0);
	return m;
}

static void apply(offmap *m, const job *j)
{
	for (int i = 0; !j->failed && i < j->nops; i++) {
		const op *o = &j->ops[i];
		int rc;

		if (o->kind == PUT)
			rc = offmap_put(m, j->seq, o->g, o->t, o->p, o->off, -1, "m", 1000 + o->off);
		else if (o->kind == DEL)
			rc = offmap_del(m, j->seq, o->g, o->t, o->p);
		else
			rc = offmap_del_group(m, j->seq, o->g);
		assert_true(rc == 0 || rc == OFFMAP_STALE);
	}
}

/* a done: apply, then end */
static void done(offmap *m, const job *j)
{
	apply(m, j);
	offmap_end(m, j->ticket);
}

static int64_t get(offmap *m, const char *g, const char *t, int32_t p)
{
	const offmap_ent *e = offmap_get(m, g, t, p);

	return e ? e->offset : -1;
}

static size_t ntombs(offmap *m)
{
	size_t live, tombs;
	uint64_t inflight;

	offmap_stats(m, &live, &tombs, &inflight);
	return tombs;
}

struct dump {
	char *s;
	size_t n;
	int count;
};

static void dump_one(const offmap_ent *e, void *arg)
{
	struct dump *d = arg;
	char line[128];

	assert_false(e->tomb);
	snprintf(line, sizeof(line), "%s/%s/%d=%lld;", e->group, e->topic, e->part, (long long)e->offset);
	d->s = realloc(d->s, d->n + strlen(line) + 1);
	assert_non_null(d->s);
	memcpy(d->s + d->n, line, strlen(line) + 1);
	d->n += strlen(line);
	d->count++;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The live entries of groups g1 and g2, sorted, as one string (caller
 * frees); checks offmap_each and the live count agree. */
static char *dump(offmap *m)
{
	struct dump d = { calloc(1, 1), 0, 0 };
	char *parts[64], *out, *save = NULL;
	size_t live, tombs, n = 0, len = 1;
	uint64_t inflight;

	offmap_each(m, "g1", dump_one, &d);
	offmap_each(m, "g2", dump_one, &d);
	offmap_stats(m, &live, &tombs, &inflight);
	assert_int_equal(live, d.count);
	for (char *tok = strtok_r(d.s, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
		assert_true(n < 64);
		parts[n++] = tok;
		len += strlen(tok) + 1;
	}
	qsort(parts, n, sizeof(*parts), cmp_str);
	out = calloc(1, len);
	for (size_t i = 0; i < n; i++) {
		strcat(out, parts[i]);
		strcat(out, ";");
	}
	free(d.s);
	return out;
}

static void begin_all(offmap *m, job *jobs, int n)
{
	for (int i = 0; i < n; i++)
		jobs[i].ticket = offmap_begin(m);
}

static void test_offmap_out_of_order_upserts_keep_the_newest(void **state)
{
	offmap *m = new_map();
	job jobs[] = {
		{ 1, false, 1, { { PUT, "g1", "t", 0, 10 } }, 0 },
		{ 2, false, 1, { { PUT, "g1", "t", 0, 20 } }, 0 },
	};

	(void)state;
	begin_all(m, jobs, 2);
	done(m, &jobs[1]);
	assert_int_equal(get(m, "g1", "t", 0), 20);
	done(m, &jobs[0]); /* older, late: dropped */
	assert_int_equal(get(m, "g1", "t", 0), 20);
	assert_int_equal(offmap_get(m, "g1", "t", 0)->commit_ms, 1020);
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);
}

static void test_offmap_late_upsert_does_not_undo_a_newer_delete(void **state)
{
	job del[] = {
		{ 1, false, 2, { { PUT, "g1", "t", 0, 10 }, { PUT, "g1", "t", 1, 11 } }, 0 },
		{ 2, false, 1, { { DEL, "g1", "t", 0, 0 } }, 0 },
	};
	job delg[] = {
		{ 1, false, 2, { { PUT, "g1", "t", 0, 10 }, { PUT, "g2", "t", 0, 12 } }, 0 },
		{ 2, false, 1, { { DELG, "g1", NULL, 0, 0 } }, 0 },
	};
	offmap *m = new_map();

	(void)state;
	begin_all(m, del, 2);
	done(m, &del[1]);
	assert_int_equal(get(m, "g1", "t", 0), -1);
	assert_int_equal(ntombs(m), 1); /* job 1 may still come */
	done(m, &del[0]);
	assert_int_equal(get(m, "g1", "t", 0), -1);
	assert_int_equal(get(m, "g1", "t", 1), 11);
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);

	m = new_map();
	begin_all(m, delg, 2);
	done(m, &delg[1]);
	assert_int_equal(ntombs(m), 1);
	done(m, &delg[0]);
	assert_int_equal(get(m, "g1", "t", 0), -1);
	assert_int_equal(get(m, "g2", "t", 0), 12);
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);
}

static void test_offmap_late_delete_does_not_undo_a_newer_upsert(void **state)
{
	job del[] = {
		{ 1, false, 1, { { DEL, "g1", "t", 0, 0 } }, 0 },
		{ 2, false, 1, { { PUT, "g1", "t", 0, 20 } }, 0 },
	};
	job delg[] = {
		{ 1, false, 1, { { DELG, "g1", NULL, 0, 0 } }, 0 },
		{ 2, false, 1, { { PUT, "g1", "t", 0, 20 } }, 0 },
	};
	offmap *m = new_map();

	(void)state;
	assert_int_equal(offmap_put(m, 0, "g1", "t", 0, 5, -1, NULL, 1), 0); /* loaded */
	begin_all(m, del, 2);
	done(m, &del[1]);
	done(m, &del[0]);
	assert_int_equal(get(m, "g1", "t", 0), 20);
	assert_string_equal(offmap_get(m, "g1", "t", 0)->meta, "m");
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);

	m = new_map();
	assert_int_equal(offmap_put(m, 0, "g1", "t", 0, 5, -1, NULL, 1), 0);
	assert_int_equal(offmap_put(m, 0, "g1", "t", 1, 6, -1, NULL, 1), 0);
	begin_all(m, delg, 2);
	done(m, &delg[1]);
	done(m, &delg[0]);
	assert_int_equal(get(m, "g1", "t", 0), 20); /* written after the delete */
	assert_int_equal(get(m, "g1", "t", 1), -1); /* written before it */
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);
}

/* One job's changes share a seq and apply in their SQL order. */
static void test_offmap_same_job_changes_apply_in_order(void **state)
{
	job jobs[] = {
		{ 1, false, 2, { { PUT, "g1", "t", 0, 5 }, { PUT, "g1", "t", 0, 7 } }, 0 },
		{ 2, false, 2, { { PUT, "g1", "t", 1, 5 }, { DEL, "g1", "t", 1, 0 } }, 0 },
		{ 3, false, 2, { { DELG, "g2", NULL, 0, 0 }, { PUT, "g2", "t", 0, 9 } }, 0 },
		{ 4, false, 2, { { DEL, "g1", "t", 2, 0 }, { PUT, "g1", "t", 2, 3 } }, 0 },
	};
	offmap *m = new_map();

	(void)state;
	begin_all(m, jobs, 4);
	for (int i = 3; i >= 0; i--)
		done(m, &jobs[i]);
	assert_int_equal(get(m, "g1", "t", 0), 7);
	assert_int_equal(get(m, "g1", "t", 1), -1);
	assert_int_equal(get(m, "g2", "t", 0), 9);
	assert_int_equal(get(m, "g1", "t", 2), 3);
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);
}

/* A mixed run of jobs, as SQLite ran them (seq order). */
static const job mixed[] = {
	{ 1, false, 2, { { PUT, "g1", "t", 0, 10 }, { PUT, "g2", "t", 0, 10 } }, 0 },
	{ 2, false, 2, { { PUT, "g1", "t", 0, 20 }, { PUT, "g1", "u", 1, 21 } }, 0 },
	{ 3, false, 1, { { DEL, "g1", "t", 0, 0 } }, 0 },
	{ 4, true, 1, { { PUT, "g2", "t", 0, 99 } }, 0 },
	{ 5, false, 1, { { DELG, "g1", NULL, 0, 0 } }, 0 },
	{ 6, false, 2, { { PUT, "g1", "u", 2, 62 }, { PUT, "g2", "t", 0, 60 } }, 0 },
	{ 7, false, 2, { { DEL, "g2", "t", 0, 0 }, { PUT, "g1", "t", 0, 70 } }, 0 },
};
#define NMIXED ((int)(sizeof(mixed) / sizeof(mixed[0])))

static bool covers(const op *o, const char *g, const char *t, int32_t p)
{
	return !strcmp(o->g, g) && (o->kind == DELG || (o->kind == DEL && !strcmp(o->t, t) && o->p == p));
}

/* Read-your-writes: right after j's done, each key j wrote shows j's
 * change or a newer one; if absent, a newer applied job deleted it. */
static void check_visible(offmap *m, const job *j, const bool *applied)
{
	for (int i = 0; !j->failed && i < j->nops; i++) {
		const op *o = &j->ops[i];
		const offmap_ent *e;
		bool deleted = false;

		if (o->kind != PUT)
			continue;
		e = offmap_get(m, o->g, o->t, o->p);
		if (e) {
			assert_true(e->seq >= j->seq);
			continue;
		}
		for (int k = 0; k < NMIXED; k++)
			for (int x = 0; applied[k] && !mixed[k].failed && mixed[k].seq > j->seq &&
					x < mixed[k].nops; x++)
				deleted |= covers(&mixed[k].ops[x], o->g, o->t, o->p);
		assert_true(deleted);
	}
}

static int permutations;

static void run_order(const int *order, const char *want)
{
	offmap *m = new_map();
	job jobs[NMIXED];
	bool applied[NMIXED] = { false };
	char *got;

	memcpy(jobs, mixed, sizeof(jobs));
	assert_int_equal(offmap_put(m, 0, "g1", "u", 1, 1, -1, NULL, 1), 0); /* loaded */
	assert_int_equal(offmap_put(m, 0, "g2", "v", 0, 1, -1, NULL, 1), 0);
	begin_all(m, jobs, NMIXED);
	for (int i = 0; i < NMIXED; i++) {
		done(m, &jobs[order[i]]);
		applied[order[i]] = true;
		check_visible(m, &jobs[order[i]], applied);
	}
	got = dump(m);
	if (strcmp(got, want))
		fail_msg("done order %d%d%d%d%d%d%d: got %s, want %s", order[0] + 1, order[1] + 1,
			 order[2] + 1, order[3] + 1, order[4] + 1, order[5] + 1, order[6] + 1, got, want);
	assert_int_equal(ntombs(m), 0);
	free(got);
	offmap_free(m);
	permutations++;
}

static void permute(int *order, int k, const char *want)
{
	if (k == NMIXED) {
		run_order(order, want);
		return;
	}
	for (int i = k; i < NMIXED; i++) {
		int t = order[k];

		order[k] = order[i];
		order[i] = t;
		permute(order, k + 1, want);
		order[i] = order[k];
		order[k] = t;
	}
}

static void test_offmap_every_done_order_ends_as_sqlite(void **state)
{
	/* SQLite after jobs 1..7 (job 4 failed; job 5 deleted g1's rows of
	 * jobs 1-2 and the loaded g1/u/1; job 7 deleted g2/t/0) */
	const char *want = "g1/t/0=70;g1/u/2=62;g2/v/0=1;";
	int order[NMIXED];

	(void)state;
	for (int i = 0; i < NMIXED; i++)
		order[i] = i;
	run_order(order, want); /* in order first: the expectation itself */
	permutations = 0;
	permute(order, 0, want);
	assert_int_equal(permutations, 5040);
}

static void test_offmap_tombstones_invisible_and_freed(void **state)
{
	job jobs[] = {
		{ 1, false, 1, { { PUT, "g1", "t", 5, 10 } }, 0 },
		{ 2, false, 2, { { DEL, "g1", "t", 0, 0 }, { DEL, "g1", "t", 5, 0 } }, 0 },
		{ 3, false, 1, { { DELG, "g2", NULL, 0, 0 } }, 0 },
	};
	offmap *m = new_map();
	char *d;

	(void)state;
	assert_int_equal(offmap_put(m, 0, "g1", "t", 0, 1, -1, NULL, 1), 0);
	assert_int_equal(offmap_put(m, 0, "g2", "t", 0, 2, -1, NULL, 1), 0);
	begin_all(m, jobs, 3);
	done(m, &jobs[1]);
	done(m, &jobs[2]);
	/* job 1 is older and still in flight: 2 key + 1 group tombstones */
	assert_int_equal(ntombs(m), 3);
	assert_null(offmap_get(m, "g1", "t", 0));
	assert_null(offmap_get(m, "g1", "t", 5));
	assert_null(offmap_get(m, "g2", "t", 0));
	d = dump(m); /* checks offmap_each skips them */
	assert_string_equal(d, "");
	free(d);
	done(m, &jobs[0]);
	assert_int_equal(ntombs(m), 0);
	assert_null(offmap_get(m, "g1", "t", 5));
	/* a delete with no other job in flight leaves nothing behind */
	jobs[0].seq = 4;
	jobs[0].ticket = offmap_begin(m);
	jobs[0].ops[0] = (op){ DEL, "g1", "t", 9, 0 };
	done(m, &jobs[0]);
	assert_int_equal(ntombs(m), 0);
	offmap_free(m);
}

/* Jobs overlap without a gap (in flight never drops to 0): a tombstone is
 * still freed once the jobs begun before it have ended. */
static void test_offmap_tombstones_freed_while_jobs_keep_overlapping(void **state)
{
	offmap *m = new_map();
	job prev = { 1, false, 1, { { PUT, "g1", "t", 0, 1 } }, 0 };
	uint64_t seq = 2, inflight;
	size_t live, tombs;

	(void)state;
	prev.ticket = offmap_begin(m);
	for (int32_t i = 1; i <= 100; i++) {
		job cur = { seq++, false, 1, { { DEL, "g1", "t", i, 0 } }, 0 };
		job next = { seq++, false, 1, { { PUT, "g1", "t", 0, (int64_t)seq } }, 0 };

		cur.ticket = offmap_begin(m);
		done(m, &cur);
		assert_int_equal(ntombs(m), 1); /* prev is older and in flight */
		next.ticket = offmap_begin(m);
		done(m, &prev);
		offmap_stats(m, &live, &tombs, &inflight);
		assert_int_equal(inflight, 1); /* next */
		assert_int_equal(tombs, 0);
		prev = next;
	}
	done(m, &prev);
	offmap_stats(m, &live, &tombs, &inflight);
	assert_int_equal(tombs, 0);
	assert_int_equal(inflight, 0);
	assert_int_equal(live, 1);
	assert_int_equal(get(m, "g1", "t", 0), (int64_t)seq);
	offmap_free(m);
}

/* A job whose SQL failed changes nothing but must end: else tombstones
 * would wait for it forever. */
static void test_offmap_failed_job_releases_tombstones(void **state)
{
	job jobs[] = {
		{ 1, true, 1, { { PUT, "g1", "t", 0, 10 } }, 0 },
		{ 2, false, 1, { { DEL, "g1", "t", 0, 0 } }, 0 },
	};
	offmap *m = new_map();
	size_t live, tombs;
	uint64_t inflight;

	(void)state;
	begin_all(m, jobs, 2);
	done(m, &jobs[1]);
	assert_int_equal(ntombs(m), 1);
	done(m, &jobs[0]);
	offmap_stats(m, &live, &tombs, &inflight);
	assert_int_equal(live, 0);
	assert_int_equal(tombs, 0);
	assert_int_equal(inflight, 0);
	offmap_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_offmap_out_of_order_upserts_keep_the_newest),
		cmocka_unit_test(test_offmap_late_upsert_does_not_undo_a_newer_delete),
		cmocka_unit_test(test_offmap_late_delete_does_not_undo_a_newer_upsert),
		cmocka_unit_test(test_offmap_same_job_changes_apply_in_order),
		cmocka_unit_test(test_offmap_every_done_order_ends_as_sqlite),
		cmocka_unit_test(test_offmap_tombstones_invisible_and_freed),
		cmocka_unit_test(test_offmap_tombstones_freed_while_jobs_keep_overlapping),
		cmocka_unit_test(test_offmap_failed_job_releases_tombstones),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
