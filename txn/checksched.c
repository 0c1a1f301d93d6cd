/* checksched.c — see checksched.h. */
#include "checksched.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tokenbucket.h"

#define NS_PER_MS 1000000LL

typedef struct grp {
	char *name;
	size_t nconns;
	size_t rr;    /* position in cs->conns after which the next pick looks */
} grp;

typedef struct cconn {
	uint64_t id;
	grp *g;
	uint32_t slots; /* free slots of the parked poll */
} cconn;

/* An outstanding check; txn == 0 marks an empty slot (txn ids start at 1). */
typedef struct outst {
	int64_t txn;
	uint64_t conn;
	int32_t check_no;
	int64_t until;  /* INT64_MIN: expired (connection went away) */
} outst;

struct checksched {
	checksched_policy pol;
	tokenbucket tb;
	grp **groups;
	size_t ngroups, capgroups;
	cconn *conns;     /* in registration order */
	size_t nconns, capconns;
	outst *out;       /* open addressing, linear probing, capacity 2^k */
	size_t nout, capout;
};

/* ---- policy ---- */

void checksched_policy_default(checksched_policy *p)
{
	p->timeout_ms = CHECKSCHED_DEFAULT_TIMEOUT_MS;
	p->backoff_base_ms = CHECKSCHED_DEFAULT_BACKOFF_BASE_MS;
	p->backoff_cap_ms = CHECKSCHED_DEFAULT_BACKOFF_CAP_MS;
	p->max_checks = CHECKSCHED_DEFAULT_MAX_CHECKS;
	p->lease_ms = CHECKSCHED_DEFAULT_LEASE_MS;
	p->rate = CHECKSCHED_DEFAULT_RATE;
	p->burst = CHECKSCHED_DEFAULT_BURST;
	p->max_outstanding = CHECKSCHED_DEFAULT_MAX_OUTSTANDING;
}

int checksched_policy_validate(const checksched_policy *p)
{
	tokenbucket tb;

	if (!p || p->timeout_ms < 0 || p->backoff_base_ms < 1 ||
	    p->backoff_cap_ms < p->backoff_base_ms || p->max_checks < 1 || p->lease_ms < 1 ||
	    p->max_outstanding < 1 || tokenbucket_init(&tb, p->rate, p->burst) != 0)
		return -EINVAL;
	return 0;
}

static int64_t add_sat(int64_t a, int64_t b)
{
	return a > INT64_MAX - b ? INT64_MAX : a + b;
}

int64_t checksched_first_check(const checksched_policy *p, int64_t now_ms, int64_t override_ms)
{
	return add_sat(now_ms, override_ms > 0 ? override_ms : p->timeout_ms);
}

int64_t checksched_next_check(const checksched_policy *p, int32_t check_count, int64_t now_ms)
{
	int64_t wait = p->backoff_base_ms;

	if (check_count >= p->max_checks)
		return -1;
	for (int32_t i = 1; i < check_count && wait < p->backoff_cap_ms; i++)
		wait = wait > p->backoff_cap_ms / 2 ? p->backoff_cap_ms : wait * 2;
	if (wait > p->backoff_cap_ms)
		wait = p->backoff_cap_ms;
	return add_sat(now_ms, wait);
}

/* ---- new / free ---- */

int checksched_new(const checksched_policy *p, int64_t now_ms, checksched **out)
{
	checksched *cs;

	if (checksched_policy_validate(p) != 0)
		return -EINVAL;
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->pol = *p;
	tokenbucket_init(&cs->tb, p->rate, p->burst); /* validated above */
	(void)now_ms; /* the bucket starts full; its clock starts at the first use */
	*out = cs;
	return 0;
}

void checksched_free(checksched *cs)
{
	if (!cs)
		return;
	for (size_t i = 0; i < cs->ngroups; i++) {
		free(cs->groups[i]->name);
		free(cs->groups[i]);
	}
	free(cs->groups);
	free(cs->conns);
	free(cs->out);
	free(cs);
}

int checksched_set_policy(checksched *cs, const checksched_policy *p, int64_t now_ms)
{
	if (checksched_policy_validate(p) != 0)
		return -EINVAL;
	if (tokenbucket_set(&cs->tb, p->rate, p->burst, now_ms * NS_PER_MS) != 0)
		return -EINVAL;
	cs->pol = *p;
	return 0;
}

const checksched_policy *checksched_get_policy(const checksched *cs)
{
	return &cs->pol;
}

/* ---- registry ---- */

static grp *group_find(const checksched *cs, const char *name)
{
	for (size_t i = 0; i < cs->ngroups; i++)
		if (strcmp(cs->groups[i]->name, name) == 0)
			return cs->groups[i];
	return NULL;
}

/* Returns the group, creating it, or NULL (no memory). */
static grp *group_get(checksched *cs, const char *name)
{
	grp *g = group_find(cs, name);

	if (g)
		return g;
	if (cs->ngroups == cs->capgroups) {
		size_t cap = cs->capgroups ? cs->capgroups * 2 : 8;
		grp **ng = realloc(cs->groups, sizeof(*ng) * cap);

		if (!ng)
			return NULL;
		cs->groups = ng;
		cs->capgroups = cap;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->name = strdup(name);
	if (!g->name) {
		free(g);
		return NULL;
	}
	g->rr = SIZE_MAX;
	cs->groups[cs->ngroups++] = g;
	return g;
}

/* Drops g if no connection is left in it. */
static void group_release(checksched *cs, grp *g)
{
	if (g->nconns > 0)
		return;
	for (size_t i = 0; i < cs->ngroups; i++) {
		if (cs->groups[i] == g) {
			cs->groups[i] = cs->groups[--cs->ngroups];
			break;
		}
	}
	free(g->name);
	free(g);
}

static cconn *conn_find(const checksched *cs, uint64_t id)
{
	for (size_t i = 0; i < cs->nconns; i++)
		if (cs->conns[i].id == id)
			return &cs->conns[i];
	return NULL;
}

int checksched_register(checksched *cs, const char *group, uint64_t conn)
{
	cconn *c;
	grp *g, *old;

	if (conn == 0 || !group)
		return -EINVAL;
	c = conn_find(cs, conn);
	if (c && strcmp(c->g->name, group) == 0)
		return 0;
	g = group_get(cs, group);
	if (!g)
		return -ENOMEM;
	if (c) {
		old = c->g;
		old->nconns--;
		c->g = g;
		c->slots = 0;
		g->nconns++;
		group_release(cs, old);
		return 0;
	}
	if (cs->nconns == cs->capconns) {
		size_t cap = cs->capconns ? cs->capconns * 2 : 16;
		cconn *nc = realloc(cs->conns, sizeof(*nc) * cap);

		if (!nc) {
			group_release(cs, g);
			return -ENOMEM;
		}
		cs->conns = nc;
		cs->capconns = cap;
	}
	cs->conns[cs->nconns++] = (cconn){ .id = conn, .g = g, .slots = 0 };
	g->nconns++;
	return 0;
}

int checksched_unregister(checksched *cs, uint64_t conn)
{
	cconn *c = conn_find(cs, conn);
	grp *g;
	size_t i;

	if (!c)
		return CHECKSCHED_E_NOT_FOUND;
	g = c->g;
	i = (size_t)(c - cs->conns);
	/* Keep the order (round-robin fairness): close the gap. */
	memmove(&cs->conns[i], &cs->conns[i + 1], sizeof(*c) * (cs->nconns - i - 1));
	cs->nconns--;
	for (size_t k = 0; k < cs->ngroups; k++) {
		grp *h = cs->groups[k];

		if (h->rr != SIZE_MAX && h->rr >= i)
			h->rr = h->rr == 0 ? SIZE_MAX : h->rr - 1;
	}
	g->nconns--;
	group_release(cs, g);
	for (size_t k = 0; k < cs->capout; k++)
		if (cs->out[k].txn != 0 && cs->out[k].conn == conn)
			cs->out[k].until = INT64_MIN;
	return 0;
}

int checksched_park(checksched *cs, uint64_t conn, uint32_t slots)
{
	cconn *c = conn_find(cs, conn);

	if (!c)
		return CHECKSCHED_E_NOT_FOUND;
	c->slots = slots;
	return 0;
}

uint32_t checksched_slots(const checksched *cs, uint64_t conn)
{
	const cconn *c = conn_find(cs, conn);

	return c ? c->slots : 0;
}

/* ---- outstanding checks: hash table ---- */

static size_t hslot(int64_t txn, size_t cap)
{
	uint64_t x = (uint64_t)txn;

	/* splitmix64 finalizer */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x & (cap - 1);
}

static outst *out_find(const checksched *cs, int64_t txn)
{
	if (cs->capout == 0)
		return NULL;
	for (size_t i = hslot(txn, cs->capout);; i = (i + 1) & (cs->capout - 1)) {
		if (cs->out[i].txn == txn)
			return &cs->out[i];
		if (cs->out[i].txn == 0)
			return NULL;
	}
}

static void out_put_raw(outst *tab, size_t cap, const outst *e)
{
	size_t i = hslot(e->txn, cap);

	while (tab[i].txn != 0)
		i = (i + 1) & (cap - 1);
	tab[i] = *e;
}

/* Makes room for one more entry (load <= 1/2).  0 or -ENOMEM. */
static int out_reserve(checksched *cs)
{
	size_t cap;
	outst *nt;

	if ((cs->nout + 1) * 2 <= cs->capout)
		return 0;
	cap = cs->capout ? cs->capout * 2 : 64;
	nt = calloc(cap, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i < cs->capout; i++)
		if (cs->out[i].txn != 0)
			out_put_raw(nt, cap, &cs->out[i]);
	free(cs->out);
	cs->out = nt;
	cs->capout = cap;
	return 0;
}

/* Removes the entry at e, shifting later entries of the probe run back. */
static void out_del(checksched *cs, outst *e)
{
	size_t mask = cs->capout - 1;
	size_t i = (size_t)(e - cs->out), j = i;

	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (cs->out[j].txn == 0)
			break;
		home = hslot(cs->out[j].txn, cs->capout);
		/* Move j into the hole at i unless its home lies in (i, j]. */
		if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		cs->out[i] = cs->out[j];
		i = j;
	}
	cs->out[i].txn = 0;
	cs->nout--;
}

size_t checksched_outstanding(const checksched *cs)
{
	return cs->nout;
}

/* ---- choosing and handing out ---- */

int checksched_pick(checksched *cs, const char *group, uint64_t origin, uint64_t *conn)
{
	grp *g = group ? group_find(cs, group) : NULL;
	size_t start;

	if (!g)
		return CHECKSCHED_E_NO_PRODUCER;
	if (origin != 0) {
		cconn *o = conn_find(cs, origin);

		if (o && o->g == g && o->slots > 0) {
			*conn = origin;
			return CHECKSCHED_OK;
		}
	}
	start = g->rr == SIZE_MAX ? 0 : g->rr + 1;
	for (size_t k = 0; k < cs->nconns; k++) {
		size_t i = (start + k) % cs->nconns;

		if (cs->conns[i].g == g && cs->conns[i].slots > 0) {
			g->rr = i;
			*conn = cs->conns[i].id;
			return CHECKSCHED_OK;
		}
	}
	return CHECKSCHED_E_BUSY;
}

int64_t checksched_budget(const checksched *cs, int64_t now_ms)
{
	int64_t avail = tokenbucket_available(&cs->tb, now_ms * NS_PER_MS);
	int64_t room = (int64_t)cs->pol.max_outstanding - (int64_t)cs->nout;

	if (room < avail)
		avail = room;
	return avail < 0 ? 0 : avail;
}

int checksched_dispatch(checksched *cs, int64_t txn_id, int32_t check_no, const char *group,
			uint64_t origin, int64_t now_ms, uint64_t *conn)
{
	uint64_t who;
	cconn *c;
	int rc;

	if (txn_id <= 0)
		return -EINVAL;
	if (out_find(cs, txn_id))
		return CHECKSCHED_E_OUTSTANDING;
	if (cs->nout >= cs->pol.max_outstanding)
		return CHECKSCHED_E_FULL;
	if (out_reserve(cs) != 0)
		return -ENOMEM;
	/* Pick before taking a token: a group with nobody to ask must not use
	 * up the rate other groups could use.  The round-robin cursor moving on
	 * a rate refusal is harmless. */
	rc = checksched_pick(cs, group, origin, &who);
	if (rc != CHECKSCHED_OK)
		return rc;
	if (!tokenbucket_take(&cs->tb, now_ms * NS_PER_MS, 1))
		return CHECKSCHED_E_RATE;
	c = conn_find(cs, who);
	c->slots--;
	out_put_raw(cs->out, cs->capout,
		    &(outst){ .txn = txn_id, .conn = who, .check_no = check_no,
			      .until = add_sat(now_ms, cs->pol.lease_ms) });
	cs->nout++;
	*conn = who;
	return CHECKSCHED_OK;
}

int checksched_answered(checksched *cs, int64_t txn_id, int32_t check_no, uint64_t *conn)
{
	outst *e = txn_id > 0 ? out_find(cs, txn_id) : NULL;

	if (!e || (check_no != CHECKSCHED_ANY_CHECK && check_no != e->check_no))
		return CHECKSCHED_E_NOT_FOUND;
	if (conn)
		*conn = e->conn;
	out_del(cs, e);
	return CHECKSCHED_OK;
}

size_t checksched_expire(checksched *cs, int64_t now_ms, int64_t *txn_ids, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < cs->capout && n < max; i++)
		if (cs->out[i].txn != 0 && cs->out[i].until <= now_ms)
			txn_ids[n++] = cs->out[i].txn;
	/* Delete after collecting: a deletion shifts entries backwards, which
	 * could move one past the scan. */
	for (size_t k = 0; k < n; k++)
		out_del(cs, out_find(cs, txn_ids[k]));
	return n;
}
