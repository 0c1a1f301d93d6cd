/*
 * group.c — see group.h.
 *
 * Versions: FindCoordinator 0-2, JoinGroup 0-5, SyncGroup 0-3, Heartbeat
 * 0-3, LeaveGroup 0-3, OffsetCommit 0-7, OffsetFetch 1-5, DescribeGroups
 * 0-4, ListGroups 0-2, DeleteGroups 0-1, OffsetDelete 0.
 *
 * SQLite table (schema version 2, coord.c):
 *   group_offsets(group_id TEXT, topic TEXT, partition INTEGER,
 *                 committed_offset INTEGER, leader_epoch INTEGER,
 *                 metadata TEXT, commit_ms INTEGER,
 *                 PRIMARY KEY(group_id, topic, partition)) WITHOUT ROWID
 */
#include "group.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "kerr.h"
#include "offmap.h"
#include "stmtcache.h"
#include "topics.h"

#define MAX_ID 255
#define MAX_OFFSET_METADATA 4096
#define TICK_S 0.1

enum gstate { G_EMPTY, G_PREPARING, G_COMPLETING, G_STABLE };

static const char *const state_names[] = { "Empty", "PreparingRebalance", "CompletingRebalance", "Stable" };

typedef struct proto {
	char *name;
	uint8_t *meta;
	int32_t len;
} proto;

typedef struct member {
	struct member *next;
	char *id;
	char *instance_id;      /* NULL: dynamic member */
	char client_id[128];
	char host[72];
	int32_t session_ms, rebalance_ms;
	proto *protos;
	int nprotos;
	uint8_t *assign;
	int32_t assign_len;
	int64_t last_seen;      /* monotonic ms */
	req *join_req;          /* parked JoinGroup, holds a reference */
	req *sync_req;          /* parked SyncGroup, holds a reference */
} member;

typedef struct pending_id {
	char *id;
	int64_t expires;
} pending_id;

typedef struct group {
	struct group *next;
	char *id;
	enum gstate state;
	int32_t generation;
	char *protocol_type;    /* NULL: a group known only by its offsets */
	char *protocol;         /* chosen at the last completed join */
	char *leader;           /* member id */
	member *members;
	int nmembers;
	int64_t deadline;       /* PREPARING: join ends; COMPLETING: sync due */
	int64_t initial_until;  /* PREPARING from EMPTY: wait for more members */
	int64_t empty_since;    /* wall ms: when it last became Empty (KIP-211) */
	pending_id *pending;    /* ids handed out with MEMBER_ID_REQUIRED */
	int npending;
} group;

struct groups {
	server *srv;
	/* Coordinator thread only (offjob_run), no lock: the last sequence
	 * number stamped on an offjob. */
	uint64_t seq;
	pthread_mutex_t lock;   /* everything below */
	group *list;
	offmap *offs;           /* committed offsets (offmap.h) */
	worker *w;              /* ticker's loop */
	ev_timer tick;
	int64_t next_expiry;
};

static groups *G; /* one coordinator per process; handlers reach it here */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dupn(const char *s, int32_t n)
{
	char *d = malloc((size_t)(n > 0 ? n : 0) + 1);

	if (!d)
		return NULL;
	if (n > 0)
		memcpy(d, s, (size_t)n);
	d[n > 0 ? n : 0] = '\0';
	return d;
}

static char *dupstr(wire_str s)
{
	return s.len < 0 ? NULL : dupn(s.ptr, s.len);
}

/* ---- groups and members ---- */

static group *group_find(groups *gs, const char *id, size_t len)
{
	for (group *g = gs->list; g; g = g->next)
		if (strlen(g->id) == len && !memcmp(g->id, id, len))
			return g;
	return NULL;
}

static group *group_get_or_create(groups *gs, const char *id)
{
	group *g = group_find(gs, id, strlen(id));

	if (g)
		return g;
	g = calloc(1, sizeof(*g));
	if (!g || !(g->id = strdup(id))) {
		free(g);
		return NULL;
	}
	g->state = G_EMPTY;
	g->empty_since = now_ms();
	g->next = gs->list;
	gs->list = g;
	return g;
}

/* The last member is gone: offsets.retention.minutes counts from now. */
static void group_set_empty(group *g)
{
	g->state = G_EMPTY;
	g->empty_since = now_ms();
}

static void group_unlink_free(groups *gs, group *g)
{
	group **p = &gs->list;

	while (*p && *p != g)
		p = &(*p)->next;
	if (*p)
		*p = g->next;
	for (int i = 0; i < g->npending; i++)
		free(g->pending[i].id);
	free(g->pending);
	free(g->id);
	free(g->protocol_type);
	free(g->protocol);
	free(g->leader);
	free(g);
}

static member *member_find(group *g, const char *id, size_t len)
{
	for (member *m = g->members; m; m = m->next)
		if (strlen(m->id) == len && !memcmp(m->id, id, len))
			return m;
	return NULL;
}

static member *member_by_instance(group *g, const char *inst)
{
	for (member *m = g->members; m; m = m->next)
		if (m->instance_id && !strcmp(m->instance_id, inst))
			return m;
	return NULL;
}

static void protos_free(member *m)
{
	for (int i = 0; i < m->nprotos; i++) {
		free(m->protos[i].name);
		free(m->protos[i].meta);
	}
	free(m->protos);
	m->protos = NULL;
	m->nprotos = 0;
}

static const proto *member_proto(const member *m, const char *name)
{
	for (int i = 0; name && i < m->nprotos; i++)
		if (!strcmp(m->protos[i].name, name))
			return &m->protos[i];
	return NULL;
}

/* ---- responses to parked requests ---- */

static void write_join(req *r, int16_t err, int32_t gen, const char *protocol, const char *leader,
		       const char *member_id, group *g)
{
	wire_buf *b = &r->resp;
	int16_t ver = r->api_version;

	if (ver >= 2)
		wire_w_i32(b, 0);
	wire_w_i16(b, err);
	wire_w_i32(b, gen);
	wire_w_str(b, protocol ? protocol : "");
	wire_w_str(b, leader ? leader : "");
	wire_w_str(b, member_id ? member_id : "");
	if (!g) {
		wire_w_i32(b, 0);
		return;
	}
	wire_w_i32(b, g->nmembers);
	for (member *m = g->members; m; m = m->next) {
		const proto *p = member_proto(m, g->protocol);

		wire_w_str(b, m->id);
		if (ver >= 5)
			wire_w_str(b, m->instance_id);
		wire_w_bytes(b, p ? p->meta : (const uint8_t *)"", p ? p->len : 0);
	}
}

static void write_sync(req *r, int16_t err, const uint8_t *assign, int32_t len)
{
	if (r->api_version >= 1)
		wire_w_i32(&r->resp, 0);
	wire_w_i16(&r->resp, err);
	wire_w_bytes(&r->resp, assign ? assign : (const uint8_t *)"", assign ? len : 0);
}

/* Answers a parked join with an error and hands it back to its loop. */
static void fail_join(member *m, int16_t err)
{
	req *r = m->join_req;

	if (!r)
		return;
	m->join_req = NULL;
	write_join(r, err, -1, NULL, NULL, m->id, NULL);
	req_post_finish(r);
}

static void fail_sync(member *m, int16_t err)
{
	req *r = m->sync_req;

	if (!r)
		return;
	m->sync_req = NULL;
	write_sync(r, err, NULL, 0);
	req_post_finish(r);
}

static void member_free(member *m, int16_t err)
{
	fail_join(m, err);
	fail_sync(m, err);
	protos_free(m);
	free(m->assign);
	free(m->instance_id);
	free(m->id);
	free(m);
}

static void member_remove(group *g, member *m, int16_t err)
{
	member **p = &g->members;

	while (*p && *p != m)
		p = &(*p)->next;
	if (*p)
		*p = m->next;
	g->nmembers--;
	if (g->leader && !strcmp(g->leader, m->id)) {
		free(g->leader);
		g->leader = NULL;
	}
	member_free(m, err);
}

/* ---- the state machine ---- */

static int64_t max_rebalance_ms(group *g)
{
	int64_t mx = 0;

	for (member *m = g->members; m; m = m->next)
		if (m->rebalance_ms > mx)
			mx = m->rebalance_ms;
	return mx;
}

static void prepare_rebalance(groups *gs, group *g, int64_t now)
{
	if (g->state == G_COMPLETING)
		for (member *m = g->members; m; m = m->next)
			fail_sync(m, KERR_REBALANCE_IN_PROGRESS);
	if (g->state == G_EMPTY)
		g->initial_until = now + gs->srv->cfg->group_initial_rebalance_delay_ms;
	else if (g->state != G_PREPARING)
		g->initial_until = 0;
	if (g->state != G_PREPARING)
		g->deadline = now + max_rebalance_ms(g);
	g->state = G_PREPARING;
}

static const char *choose_protocol(group *g, member *first)
{
	for (int i = 0; i < first->nprotos; i++) {
		const char *name = first->protos[i].name;
		bool all = true;

		for (member *m = g->members; m && all; m = m->next)
			all = member_proto(m, name) != NULL;
		if (all)
			return name;
	}
	return first->nprotos ? first->protos[0].name : "";
}

static void complete_join(groups *gs, group *g, int64_t now)
{
	member *m, *next, *lead = NULL;
	const char *chosen;
	int64_t max_session = 0;

	for (m = g->members; m; m = next) {
		next = m->next;
		if (!m->join_req) {
			blog(BLOG_INFO, "group %s: member %s did not rejoin in time; removed", g->id, m->id);
			member_remove(g, m, KERR_UNKNOWN_MEMBER_ID);
		}
	}
	g->generation++;
	if (g->nmembers == 0) {
		group_set_empty(g);
		free(g->protocol);
		g->protocol = NULL;
		return;
	}
	if (g->leader)
		lead = member_find(g, g->leader, strlen(g->leader));
	if (!lead) {
		/* the earliest joiner leads: members are kept newest-first */
		for (m = g->members; m; m = m->next)
			lead = m;
		free(g->leader);
		g->leader = strdup(lead->id);
	}
	chosen = choose_protocol(g, lead);
	free(g->protocol);
	g->protocol = strdup(chosen);
	g->state = G_COMPLETING;
	for (m = g->members; m; m = m->next) {
		req *r = m->join_req;
		bool is_leader = m == lead;

		if (m->session_ms > max_session)
			max_session = m->session_ms;
		m->join_req = NULL;
		m->last_seen = now;
		write_join(r, KERR_NONE, g->generation, g->protocol, g->leader, m->id, is_leader ? g : NULL);
		req_post_finish(r);
	}
	g->deadline = now + max_session;
	blog(BLOG_INFO, "group %s: generation %d with %d member(s), protocol %s, leader %s", g->id,
	     g->generation, g->nmembers, g->protocol ? g->protocol : "?", g->leader ? g->leader : "?");
}

static void try_complete_join(groups *gs, group *g, int64_t now)
{
	bool all = true;

	if (g->state != G_PREPARING)
		return;
	for (member *m = g->members; m && all; m = m->next)
		all = m->join_req != NULL;
	if (now < g->initial_until && now < g->deadline)
		return; /* initial delay: let more members arrive together */
	if (all || now >= g->deadline)
		complete_join(gs, g, now);
}

static void tick_group(groups *gs, group *g, int64_t now)
{
	member *m, *next;
	bool lost = false;

	for (int i = 0; i < g->npending;) {
		if (g->pending[i].expires <= now) {
			free(g->pending[i].id);
			g->pending[i] = g->pending[--g->npending];
		} else {
			i++;
		}
	}
	for (m = g->members; m; m = next) {
		next = m->next;
		/* as Kafka: a member waiting for its join or sync answer is
		 * alive; its session restarts when it gets the answer */
		if (m->join_req || m->sync_req || now - m->last_seen <= m->session_ms)
			continue;
		blog(BLOG_INFO, "group %s: member %s missed its session timeout (%d ms); removed", g->id,
		     m->id, m->session_ms);
		member_remove(g, m, KERR_UNKNOWN_MEMBER_ID);
		lost = true;
	}
	if (g->state == G_COMPLETING && now >= g->deadline) {
		/* the leader never sent the assignment: drop who did not sync */
		for (m = g->members; m; m = next) {
			next = m->next;
			if (!m->sync_req) {
				blog(BLOG_INFO, "group %s: member %s did not sync in time; removed", g->id, m->id);
				member_remove(g, m, KERR_UNKNOWN_MEMBER_ID);
			}
		}
		lost = true;
	}
	if (lost && g->state != G_EMPTY) {
		if (g->nmembers == 0 && g->state != G_PREPARING) {
			group_set_empty(g);
			g->generation++;
		} else {
			prepare_rebalance(gs, g, now);
		}
	}
	try_complete_join(gs, g, now);
}

/* ---- SQLite jobs ---- */

enum { OP_UPSERT, OP_DEL_ONE, OP_DEL_GROUP };

typedef struct offop {
	int kind;
	char *group, *topic, *meta;
	int32_t part;
	int64_t offset;
	int32_t epoch;
	int64_t commit_ms;
	int16_t err;            /* decided before the job, or by it */
} offop;

/* A change of group_offsets: its ops run in one coordinator job, then its
 * done (on the submitter's loop) applies them to the offsets map and
 * answers.  Ordering (offmap.h): offjob_begin counts it in the map under
 * gs->lock before it is submitted, offjob_run stamps seq in SQLite order,
 * offjob_done applies the ops with that seq and ends it. */
typedef struct offjob {
	coord_job job;
	req *r;                 /* referenced, or NULL (expiry) */
	int nops;
	offop *ops;
	int16_t top_err;
	void (*reply)(struct offjob *oj);
	int ticket;             /* offmap_begin's, for offmap_end */
	uint64_t seq;           /* written by offjob_run (coordinator thread),
				   read by offjob_done once the job is posted */
} offjob;

static int offop_run(sqlite3 *db, offop *op)
{
	static const char *const sql[] = {
		"INSERT OR REPLACE INTO group_offsets(group_id, topic, partition, committed_offset,"
		" leader_epoch, metadata, commit_ms) VALUES(?, ?, ?, ?, ?, ?, ?)",
		"DELETE FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?",
		"DELETE FROM group_offsets WHERE group_id = ?",
	};
	sqlite3_stmt *st;
	int rc = stmtcache_prepare(db, sql[op->kind], &st); /* coordinator thread */

	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_text(st, 1, op->group, -1, SQLITE_STATIC);
	if (op->kind != OP_DEL_GROUP) {
		sqlite3_bind_text(st, 2, op->topic, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, op->part);
	}
	if (op->kind == OP_UPSERT) {
		sqlite3_bind_int64(st, 4, op->offset);
		sqlite3_bind_int(st, 5, op->epoch);
		sqlite3_bind_text(st, 6, op->meta ? op->meta : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 7, op->commit_ms);
	}
	rc = sqlite3_step(st);
	stmtcache_release(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int offjob_run(coord_job *job, sqlite3 *db)
{
	offjob *oj = (offjob *)job;

	/* coordinator thread: jobs run one at a time in the order SQLite
	 * applies them, so this numbers them in that order */
	oj->seq = ++G->seq;
	for (int i = 0; i < oj->nops; i++) {
		offop *op = &oj->ops[i];
		int rc;

		if (op->err)
			continue;
		rc = offop_run(db, op);
		if (rc != SQLITE_OK) {
			BLOG_RL(BLOG_ERROR, "group offsets: %s", sqlite3_errstr(rc));
			return rc; /* the whole job is rolled back */
		}
	}
	return SQLITE_OK;
}

static void offjob_free(offjob *oj)
{
	for (int i = 0; i < oj->nops; i++) {
		free(oj->ops[i].group);
		free(oj->ops[i].topic);
		free(oj->ops[i].meta);
	}
	free(oj->ops);
	free(oj);
}

/* On the request's loop (or the ticker's) after the commit.  The dones of
 * jobs submitted from different loops may run in any order: the seq rule
 * of offmap.h makes the map end as SQLite does anyway. */
static void offjob_done(loop_task *t)
{
	offjob *oj = (offjob *)((char *)t - offsetof(offjob, job.done));
	groups *gs = G;

	pthread_mutex_lock(&gs->lock);
	for (int i = 0; i < oj->nops; i++) {
		offop *op = &oj->ops[i];
		int rc;

		if (op->err)
			continue;
		if (oj->job.rc != SQLITE_OK) {
			op->err = KERR_KAFKA_STORAGE_ERROR;
			continue;
		}
		/* the map changes only once SQLite has it: a fetch never
		 * returns an offset a restart would lose */
		if (op->kind == OP_UPSERT) {
			rc = offmap_put(gs->offs, oj->seq, op->group, op->topic, op->part, op->offset,
					op->epoch, op->meta, op->commit_ms);
			/* its group may have gone while the job ran (an Empty
			 * group without offsets yet, freed by expire_offsets
			 * or DeleteGroups): an offset always has a group, as
			 * after a restart (load_offsets) */
			if (rc == 0 && !group_get_or_create(gs, op->group))
				rc = -ENOMEM;
		} else if (op->kind == OP_DEL_ONE) {
			rc = offmap_del(gs->offs, oj->seq, op->group, op->topic, op->part);
		} else {
			rc = offmap_del_group(gs->offs, oj->seq, op->group);
		}
		if (rc < 0) {
			BLOG_RL(BLOG_ERROR, "group %s: offsets map: out of memory", op->group);
			op->err = KERR_UNKNOWN_SERVER_ERROR;
		}
	}
	/* also after a failed job: it no longer holds tombstones back */
	offmap_end(gs->offs, oj->ticket);
	pthread_mutex_unlock(&gs->lock);
	if (oj->r) {
		if (oj->r->conn)
			oj->reply(oj);
		req_finish(oj->r);
		req_unref(oj->r);
	}
	offjob_free(oj);
}

static offjob *offjob_new(req *r, int nops, void (*reply)(offjob *))
{
	offjob *oj = calloc(1, sizeof(*oj));

	if (!oj)
		return NULL;
	oj->ops = calloc((size_t)(nops > 0 ? nops : 1), sizeof(*oj->ops));
	if (!oj->ops) {
		free(oj);
		return NULL;
	}
	oj->nops = nops;
	oj->r = r;
	oj->reply = reply;
	oj->job.run = offjob_run;
	oj->job.done.fn = offjob_done;
	return oj;
}

/* gs->lock held: counts oj among the map's jobs in flight (offmap_begin):
 * a tombstone made while it is in flight, which its change may be older
 * than, stays until its done.  Call once, before offjob_submit (the lock
 * may be dropped in between). */
static void offjob_begin(groups *gs, offjob *oj)
{
	oj->ticket = offmap_begin(gs->offs);
}

/* After offjob_begin; any thread, lock held or not. */
static void offjob_submit(groups *gs, offjob *oj, worker *w)
{
	oj->job.w = w;
	if (oj->r)
		req_ref(oj->r); /* dropped in offjob_done */
	coord_submit(gs->srv->coord, &oj->job);
}

/* ---- ticker ---- */

static void newest_commit(const offmap_ent *e, void *arg)
{
	int64_t *newest = arg;

	if (e->commit_ms > *newest)
		*newest = e->commit_ms;
}

/* KIP-211: the offsets of an Empty consumer group expire
 * offsets.retention.minutes after its newest commit or after it became
 * Empty, whichever is later; those of a group that never had members (or
 * known only from sluice.db since a restart) after its newest commit. */
static void expire_offsets(groups *gs)
{
	int64_t cutoff = now_ms() - gs->srv->cfg->offsets_retention_minutes * 60000;
	group *g, *next;

	for (g = gs->list; g; g = next) {
		int64_t newest = INT64_MIN;
		offjob *oj;

		next = g->next;
		if (g->nmembers > 0)
			continue;
		offmap_each(gs->offs, g->id, newest_commit, &newest);
		if (newest != INT64_MIN && g->protocol_type && g->empty_since > newest)
			newest = g->empty_since;
		if (newest != INT64_MIN && newest >= cutoff)
			continue;
		if (newest != INT64_MIN) {
			oj = offjob_new(NULL, 1, NULL);
			if (!oj || !(oj->ops[0].group = strdup(g->id))) {
				if (oj)
					offjob_free(oj);
				continue;
			}
			oj->ops[0].kind = OP_DEL_GROUP;
			blog(BLOG_INFO, "group %s: offsets expired (offsets.retention.minutes)", g->id);
			offjob_begin(gs, oj);
			offjob_submit(gs, oj, gs->w);
		}
		if (g->state == G_EMPTY)
			group_unlink_free(gs, g);
	}
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
	groups *gs = t->data;
	int64_t now = mono_ms();
	group *g, *next;

	pthread_mutex_lock(&gs->lock);
	for (g = gs->list; g; g = next) {
		next = g->next;
		tick_group(gs, g, now);
	}
	if (now >= gs->next_expiry) {
		expire_offsets(gs);
		gs->next_expiry = now + gs->srv->cfg->offsets_retention_check_interval_ms;
	}
	pthread_mutex_unlock(&gs->lock);
}

/* ---- life cycle ---- */

static int load_offsets(groups *gs, sqlite3 *db)
{
	sqlite3_stmt *st;
	int n = 0, rc;

	rc = sqlite3_prepare_v2(db,
				"SELECT group_id, topic, partition, committed_offset, leader_epoch, metadata,"
				" commit_ms FROM group_offsets",
				-1, &st, NULL);
	if (rc != SQLITE_OK) {
		blog(BLOG_ERROR, "load group offsets: %s", sqlite3_errmsg(db));
		return -1;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *g = (const char *)sqlite3_column_text(st, 0);
		const char *t = (const char *)sqlite3_column_text(st, 1);
		const char *m = (const char *)sqlite3_column_text(st, 5);

		/* seq 0: older than every job */
		if (!g || !t ||
		    offmap_put(gs->offs, 0, g, t, sqlite3_column_int(st, 2), sqlite3_column_int64(st, 3),
			       sqlite3_column_int(st, 4), m, sqlite3_column_int64(st, 6)) < 0 ||
		    !group_get_or_create(gs, g)) {
			sqlite3_finalize(st);
			return -1;
		}
		n++;
	}
	sqlite3_finalize(st);
	blog(BLOG_INFO, "loaded %d committed offset(s)", n);
	return 0;
}

int groups_new(server *srv, sqlite3 *db, groups **out)
{
	groups *gs = calloc(1, sizeof(*gs));

	if (!gs)
		return -ENOMEM;
	gs->srv = srv;
	pthread_mutex_init(&gs->lock, NULL);
	if (offmap_new(&gs->offs) < 0 || load_offsets(gs, db) < 0) {
		groups_free(gs);
		return -1;
	}
	G = gs;
	*out = gs;
	return 0;
}

void groups_start(groups *gs, worker *w)
{
	gs->w = w;
	gs->next_expiry = mono_ms() + gs->srv->cfg->offsets_retention_check_interval_ms;
	ev_timer_init(&gs->tick, on_tick, TICK_S, TICK_S);
	gs->tick.data = gs;
	ev_timer_start(w->loop, &gs->tick);
}

void groups_free(groups *gs)
{
	if (!gs)
		return;
	while (gs->list) {
		group *g = gs->list;

		while (g->members) {
			member *m = g->members;

			g->members = m->next;
			member_free(m, KERR_COORDINATOR_NOT_AVAILABLE);
		}
		group_unlink_free(gs, g);
	}
	offmap_free(gs->offs);
	pthread_mutex_destroy(&gs->lock);
	if (G == gs)
		G = NULL;
	free(gs);
}

/* ---- parked request cancellation (connection closed) ---- */

static void group_req_cancel(req *r)
{
	groups *gs = G;

	pthread_mutex_lock(&gs->lock);
	for (group *g = gs->list; g; g = g->next) {
		for (member *m = g->members; m; m = m->next) {
			if (m->join_req == r) {
				m->join_req = NULL;
				req_unref(r);
			}
			if (m->sync_req == r) {
				m->sync_req = NULL;
				req_unref(r);
			}
		}
	}
	pthread_mutex_unlock(&gs->lock);
}

static void park(req *r)
{
	req_ref(r); /* dropped by req_post_finish's task, or by cancel */
	r->cancel = group_req_cancel;
}

/* ---- FindCoordinator ---- */

int api_find_coordinator(req *r, wire_rd *rd)
{
	const config *cfg = r->w->srv->cfg;
	wire_buf *b = &r->resp;
	int8_t type = 0;
	const char *host = cfg->advertised_host[0] ? cfg->advertised_host : cfg->listen_host;

	(void)wire_rd_str(rd);
	if (r->api_version >= 1)
		type = wire_rd_i8(rd);
	if (rd->err)
		return API_MALFORMED;
	if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
		host = "127.0.0.1";
	if (r->api_version >= 1)
		wire_w_i32(b, 0);
	if (type != 0) {
		wire_w_i16(b, KERR_COORDINATOR_NOT_AVAILABLE);
		if (r->api_version >= 1)
			wire_w_str(b, "Kafka transactions are not supported; use Sluice transactional messages");
		wire_w_i32(b, -1);
		wire_w_str(b, "");
		wire_w_i32(b, -1);
	} else {
		wire_w_i16(b, KERR_NONE);
		if (r->api_version >= 1)
			wire_w_str(b, NULL);
		wire_w_i32(b, cfg->node_id);
		wire_w_str(b, host);
		wire_w_i32(b, r->w->srv->port);
	}
	req_finish(r);
	return API_OK;
}

/* ---- JoinGroup ---- */

typedef struct join_args {
	wire_str group_id, member_id, instance_id, protocol_type;
	int32_t session_ms, rebalance_ms;
	int32_t nprotos;
	const uint8_t *protos_at;
} join_args;

static int parse_join(req *r, wire_rd *rd, join_args *a)
{
	a->group_id = wire_rd_str(rd);
	a->session_ms = wire_rd_i32(rd);
	a->rebalance_ms = r->api_version >= 1 ? wire_rd_i32(rd) : a->session_ms;
	a->member_id = wire_rd_str(rd);
	a->instance_id = (wire_str){ NULL, -1 };
	if (r->api_version >= 5)
		a->instance_id = wire_rd_str(rd);
	a->protocol_type = wire_rd_str(rd);
	a->nprotos = wire_rd_array(rd, 6);
	a->protos_at = rd->p;
	for (int32_t i = 0; i < a->nprotos; i++) {
		if (wire_rd_str(rd).len < 0)
			return -1; /* a null name: not nullable, as a null group id */
		(void)wire_rd_bytes(rd);
	}
	return rd->err || a->group_id.len < 0 || a->member_id.len < 0 || a->protocol_type.len < 0 ? -1 : 0;
}

static int set_protos(member *m, const join_args *a)
{
	wire_rd rd;
	proto *p = calloc((size_t)(a->nprotos > 0 ? a->nprotos : 1), sizeof(*p));

	if (!p)
		return -ENOMEM;
	wire_rd_init(&rd, a->protos_at, (size_t)-1 >> 1);
	for (int32_t i = 0; i < a->nprotos; i++) {
		wire_str name = wire_rd_str(&rd);
		wire_str meta = wire_rd_bytes(&rd);

		p[i].name = dupstr(name);
		p[i].meta = (uint8_t *)dupn(meta.ptr, meta.len);
		p[i].len = meta.len > 0 ? meta.len : 0;
		if (!p[i].name || !p[i].meta) {
			member tmp = { .protos = p, .nprotos = i + 1 };

			protos_free(&tmp);
			return -ENOMEM;
		}
	}
	protos_free(m);
	m->protos = p;
	m->nprotos = a->nprotos;
	return 0;
}

/* Does the joiner share a protocol with every current member? */
static bool protocols_compatible(group *g, const join_args *a, const char *type)
{
	wire_rd rd;

	if (g->nmembers == 0)
		return true;
	if (!g->protocol_type || strcmp(g->protocol_type, type))
		return false;
	wire_rd_init(&rd, a->protos_at, (size_t)-1 >> 1);
	for (int32_t i = 0; i < a->nprotos; i++) {
		wire_str name = wire_rd_str(&rd);
		char n[MAX_ID + 1];
		bool all = true;

		(void)wire_rd_bytes(&rd);
		if (!wire_str_copy(name, n, sizeof(n)))
			continue;
		for (member *m = g->members; m && all; m = m->next)
			all = member_proto(m, n) != NULL;
		if (all)
			return true;
	}
	return false;
}

static char *new_member_id(const char *client_id)
{
	uint8_t rnd[16];
	char *id = malloc(MAX_ID + 1);
	int n;

	if (!id)
		return NULL;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x42, sizeof(rnd));
	n = snprintf(id, MAX_ID + 1, "%.64s-", client_id[0] ? client_id : "member");
	for (int i = 0; i < 16 && n < MAX_ID - 2; i++)
		n += snprintf(id + n, (size_t)(MAX_ID + 1 - n), "%02x", rnd[i]);
	return id;
}

static bool take_pending(group *g, const char *id)
{
	for (int i = 0; i < g->npending; i++) {
		if (!strcmp(g->pending[i].id, id)) {
			free(g->pending[i].id);
			g->pending[i] = g->pending[--g->npending];
			return true;
		}
	}
	return false;
}

static int add_pending(group *g, const char *id, int64_t expires)
{
	pending_id *p = realloc(g->pending, sizeof(*p) * (size_t)(g->npending + 1));

	if (!p)
		return -ENOMEM;
	g->pending = p;
	if (!(p[g->npending].id = strdup(id)))
		return -ENOMEM;
	p[g->npending++].expires = expires;
	return 0;
}

/* A member not yet in g (member_link adds it): takes id_owned, also on
 * failure (NULL). */
static member *member_new(char *id_owned, const char *instance, req *r)
{
	member *m = calloc(1, sizeof(*m));

	if (!m) {
		free(id_owned);
		return NULL;
	}
	m->id = id_owned;
	if (instance && !(m->instance_id = strdup(instance))) {
		free(m->id);
		free(m);
		return NULL;
	}
	snprintf(m->client_id, sizeof(m->client_id), "%s", r->client_id);
	if (r->conn) {
		snprintf(m->host, sizeof(m->host), "/%s", r->conn->peer);
		char *colon = strrchr(m->host, ':');
		if (colon)
			*colon = '\0';
	}
	return m;
}

static void member_link(group *g, member *m)
{
	m->next = g->members;
	g->members = m;
	g->nmembers++;
}

/* Under the lock.  Returns 0 with the request parked, or a Kafka error to
 * answer at once (*mid_out names the member id to put in the answer). */
static int16_t join_locked(groups *gs, req *r, const join_args *a, int64_t now, char **mid_out)
{
	const config *cfg = gs->srv->cfg;
	char gid[MAX_ID + 1], mid[MAX_ID + 1], inst[MAX_ID + 1], type[MAX_ID + 1];
	bool has_inst = a->instance_id.len >= 0;
	member *m = NULL;
	bool fresh = false; /* m is new: linked once its protocols are set */
	group *g;

	if (!wire_str_copy(a->group_id, gid, sizeof(gid)) || !gid[0])
		return KERR_INVALID_GROUP_ID;
	if (!wire_str_copy(a->member_id, mid, sizeof(mid)) || !wire_str_copy(a->protocol_type, type, sizeof(type)))
		return KERR_UNKNOWN_MEMBER_ID;
	if (has_inst && !wire_str_copy(a->instance_id, inst, sizeof(inst)))
		return KERR_INVALID_REQUEST;
	if (a->session_ms < cfg->group_min_session_timeout_ms || a->session_ms > cfg->group_max_session_timeout_ms)
		return KERR_INVALID_SESSION_TIMEOUT;
	if (a->nprotos <= 0)
		return KERR_INCONSISTENT_GROUP_PROTOCOL;
	g = group_get_or_create(gs, gid);
	if (!g)
		return KERR_UNKNOWN_SERVER_ERROR;
	if (!protocols_compatible(g, a, type))
		return KERR_INCONSISTENT_GROUP_PROTOCOL;

	if (mid[0]) {
		m = member_find(g, mid, strlen(mid));
		if (!m && has_inst && member_by_instance(g, inst))
			return KERR_FENCED_INSTANCE_ID;
		if (!m && !take_pending(g, mid))
			return KERR_UNKNOWN_MEMBER_ID;
		if (!m) {
			m = member_new(strdup(mid), has_inst ? inst : NULL, r);
			if (!m)
				return KERR_UNKNOWN_SERVER_ERROR;
			fresh = true;
		}
	} else {
		char *id = new_member_id(r->client_id);
		member *old = has_inst ? member_by_instance(g, inst) : NULL;

		if (!id)
			return KERR_UNKNOWN_SERVER_ERROR;
		if (!has_inst && r->api_version >= 4) {
			/* KIP-394: hand out the id; the client joins again with it */
			int rc = add_pending(g, id, now + a->session_ms);

			*mid_out = id;
			return rc < 0 ? KERR_UNKNOWN_SERVER_ERROR : KERR_MEMBER_ID_REQUIRED;
		}
		if (old) {
			/* a restarted static member: the old id is fenced */
			blog(BLOG_INFO, "group %s: static member %s rejoined as %s", g->id, inst, id);
			member_remove(g, old, KERR_FENCED_INSTANCE_ID);
		}
		m = member_new(id, has_inst ? inst : NULL, r);
		if (!m)
			return KERR_UNKNOWN_SERVER_ERROR;
		fresh = true;
	}
	if (set_protos(m, a) < 0) {
		if (fresh)
			member_free(m, KERR_UNKNOWN_SERVER_ERROR);
		return KERR_UNKNOWN_SERVER_ERROR;
	}
	if (fresh)
		member_link(g, m);
	if (!g->protocol_type || g->nmembers == 1) {
		free(g->protocol_type);
		g->protocol_type = strdup(type);
	}
	m->session_ms = a->session_ms;
	m->rebalance_ms = a->rebalance_ms > 0 ? a->rebalance_ms : a->session_ms;
	m->last_seen = now;
	fail_join(m, KERR_REBALANCE_IN_PROGRESS); /* a duplicate join replaces the old one */
	park(r);
	m->join_req = r;
	if (g->state != G_PREPARING)
		prepare_rebalance(gs, g, now);
	try_complete_join(gs, g, now);
	return KERR_NONE;
}

int api_join_group(req *r, wire_rd *rd)
{
	groups *gs = G;
	join_args a;
	char *mid = NULL;
	int16_t err;

	if (parse_join(r, rd, &a) < 0)
		return API_MALFORMED;
	pthread_mutex_lock(&gs->lock);
	err = join_locked(gs, r, &a, mono_ms(), &mid);
	pthread_mutex_unlock(&gs->lock);
	if (err == KERR_NONE)
		return API_OK; /* parked: answered when the join completes */
	if (!mid)
		mid = dupstr(a.member_id);
	write_join(r, err, -1, NULL, NULL, mid, NULL);
	free(mid);
	req_finish(r);
	return API_OK;
}

/* A request naming a static instance that now belongs to another member
 * id comes from a fenced (replaced) member: FENCED_INSTANCE_ID, as Kafka. */
static bool fenced(group *g, wire_str inst, wire_str mid)
{
	char i[MAX_ID + 1];
	member *m;

	if (!g || inst.len <= 0 || !wire_str_copy(inst, i, sizeof(i)))
		return false;
	m = member_by_instance(g, i);
	return m && !(mid.len >= 0 && strlen(m->id) == (size_t)mid.len &&
		      !memcmp(m->id, mid.ptr, (size_t)mid.len));
}

/* ---- SyncGroup ---- */

typedef struct sync_args {
	wire_str group_id, member_id, instance_id;
	int32_t generation;
	int32_t nassign;
	const uint8_t *assign_at;
} sync_args;

static void deliver_syncs(group *g, int64_t now)
{
	for (member *m = g->members; m; m = m->next) {
		req *r = m->sync_req;

		if (!r)
			continue;
		m->sync_req = NULL;
		m->last_seen = now; /* its session starts again with the answer */
		write_sync(r, KERR_NONE, m->assign, m->assign_len);
		req_post_finish(r);
	}
}

static int16_t apply_assignments(group *g, const sync_args *a)
{
	wire_rd rd;

	for (member *m = g->members; m; m = m->next) {
		free(m->assign);
		m->assign = NULL;
		m->assign_len = 0;
	}
	wire_rd_init(&rd, a->assign_at, (size_t)-1 >> 1);
	for (int32_t i = 0; i < a->nassign; i++) {
		wire_str id = wire_rd_str(&rd);
		wire_str as = wire_rd_bytes(&rd);
		member *m = id.len >= 0 ? member_find(g, id.ptr, (size_t)id.len) : NULL;

		if (!m)
			continue;
		free(m->assign);
		m->assign = (uint8_t *)dupn(as.ptr, as.len);
		m->assign_len = m->assign && as.len > 0 ? as.len : 0;
		if (!m->assign)
			return KERR_UNKNOWN_SERVER_ERROR;
	}
	return KERR_NONE;
}

static int16_t sync_locked(groups *gs, req *r, const sync_args *a, int64_t now, member **ready)
{
	group *g = a->group_id.len > 0 ? group_find(gs, a->group_id.ptr, (size_t)a->group_id.len) : NULL;
	member *m = g && a->member_id.len > 0 ? member_find(g, a->member_id.ptr, (size_t)a->member_id.len) : NULL;
	int16_t err;

	if (fenced(g, a->instance_id, a->member_id))
		return KERR_FENCED_INSTANCE_ID;
	if (!m)
		return KERR_UNKNOWN_MEMBER_ID;
	if (a->generation != g->generation)
		return KERR_ILLEGAL_GENERATION;
	m->last_seen = now;
	if (g->state == G_PREPARING)
		return KERR_REBALANCE_IN_PROGRESS;
	if (g->state == G_STABLE) {
		*ready = m;
		return KERR_NONE;
	}
	fail_sync(m, KERR_REBALANCE_IN_PROGRESS);
	park(r);
	m->sync_req = r;
	if (g->leader && !strcmp(g->leader, m->id)) {
		err = apply_assignments(g, a);
		if (err)
			return KERR_NONE; /* parked; answered below with the error */
		g->state = G_STABLE;
		deliver_syncs(g, now);
		blog(BLOG_INFO, "group %s: generation %d stable", g->id, g->generation);
	}
	return KERR_NONE;
}

int api_sync_group(req *r, wire_rd *rd)
{
	groups *gs = G;
	sync_args a;
	member *ready = NULL;
	int16_t err;

	a.group_id = wire_rd_str(rd);
	a.generation = wire_rd_i32(rd);
	a.member_id = wire_rd_str(rd);
	a.instance_id = (wire_str){ NULL, -1 };
	if (r->api_version >= 3)
		a.instance_id = wire_rd_str(rd);
	a.nassign = wire_rd_array(rd, 6);
	a.assign_at = rd->p;
	for (int32_t i = 0; i < a.nassign; i++) {
		(void)wire_rd_str(rd);
		(void)wire_rd_bytes(rd);
	}
	if (rd->err)
		return API_MALFORMED;
	pthread_mutex_lock(&gs->lock);
	err = sync_locked(gs, r, &a, mono_ms(), &ready);
	if (!err && ready)
		write_sync(r, KERR_NONE, ready->assign, ready->assign_len);
	pthread_mutex_unlock(&gs->lock);
	if (err || ready) {
		if (err)
			write_sync(r, err, NULL, 0);
		req_finish(r);
	}
	return API_OK;
}

/* ---- Heartbeat ---- */

int api_heartbeat(req *r, wire_rd *rd)
{
	groups *gs = G;
	wire_str gid = wire_rd_str(rd);
	int32_t gen = wire_rd_i32(rd);
	wire_str mid = wire_rd_str(rd), inst = { NULL, -1 };
	int16_t err = KERR_NONE;
	group *g;
	member *m = NULL;

	if (r->api_version >= 3)
		inst = wire_rd_str(rd);
	if (rd->err)
		return API_MALFORMED;
	pthread_mutex_lock(&gs->lock);
	g = gid.len > 0 ? group_find(gs, gid.ptr, (size_t)gid.len) : NULL;
	if (g && mid.len > 0)
		m = member_find(g, mid.ptr, (size_t)mid.len);
	if (fenced(g, inst, mid))
		err = KERR_FENCED_INSTANCE_ID, m = NULL;
	else if (!m)
		err = KERR_UNKNOWN_MEMBER_ID;
	else if (gen != g->generation)
		err = KERR_ILLEGAL_GENERATION;
	else if (g->state == G_PREPARING)
		err = KERR_REBALANCE_IN_PROGRESS;
	if (m)
		m->last_seen = mono_ms();
	pthread_mutex_unlock(&gs->lock);
	if (r->api_version >= 1)
		wire_w_i32(&r->resp, 0);
	wire_w_i16(&r->resp, err);
	req_finish(r);
	return API_OK;
}

/* ---- LeaveGroup ---- */

/* One member identity of a LeaveGroup, as Kafka's handleLeaveGroup: an
 * empty member id with an instance id is an admin removal of whoever holds
 * the instance; a member id whose instance now belongs to another member id
 * is a fenced static member (FENCED_INSTANCE_ID: its replacement stays);
 * otherwise the member id names the member. */
static int16_t leave_one(groups *gs, group *g, wire_str mid, wire_str inst, int64_t now)
{
	member *m = NULL;
	char id[MAX_ID + 1];

	if (mid.len <= 0) {
		if (inst.len > 0 && wire_str_copy(inst, id, sizeof(id)))
			m = member_by_instance(g, id);
	} else if (wire_str_copy(mid, id, sizeof(id)) && take_pending(g, id)) {
		return KERR_NONE; /* KIP-394: a member id handed out, never joined */
	} else if (fenced(g, inst, mid)) {
		return KERR_FENCED_INSTANCE_ID;
	} else {
		m = member_find(g, mid.ptr, (size_t)mid.len);
	}
	if (!m)
		return KERR_UNKNOWN_MEMBER_ID;
	blog(BLOG_INFO, "group %s: member %s left", g->id, m->id);
	member_remove(g, m, KERR_UNKNOWN_MEMBER_ID);
	if (g->nmembers == 0 && g->state != G_PREPARING) {
		group_set_empty(g);
		g->generation++;
	} else {
		prepare_rebalance(gs, g, now);
		try_complete_join(gs, g, now);
	}
	return KERR_NONE;
}

int api_leave_group(req *r, wire_rd *rd)
{
	groups *gs = G;
	wire_buf *b = &r->resp;
	wire_str gid = wire_rd_str(rd), mid = { NULL, -1 }, none = { NULL, -1 };
	const uint8_t *members_at = NULL;
	int32_t n = 0;
	int16_t err = KERR_NONE;
	int64_t now = mono_ms();
	group *g;

	if (r->api_version < 3) {
		mid = wire_rd_str(rd);
	} else {
		n = wire_rd_array(rd, 4);
		members_at = rd->p;
		for (int32_t i = 0; i < n; i++) {
			(void)wire_rd_str(rd);
			(void)wire_rd_str(rd);
		}
	}
	if (rd->err || gid.len < 0)
		return API_MALFORMED;
	if (r->api_version >= 1)
		wire_w_i32(b, 0);
	pthread_mutex_lock(&gs->lock);
	g = group_find(gs, gid.ptr, (size_t)gid.len);
	if (r->api_version < 3) {
		err = g ? leave_one(gs, g, mid, none, now) : KERR_UNKNOWN_MEMBER_ID;
		wire_w_i16(b, err);
	} else {
		wire_rd mr;

		wire_w_i16(b, g ? KERR_NONE : KERR_UNKNOWN_MEMBER_ID);
		wire_w_i32(b, g ? n : 0);
		wire_rd_init(&mr, members_at, (size_t)(rd->end - members_at));
		for (int32_t i = 0; g && i < n; i++) {
			wire_str m = wire_rd_str(&mr), inst = wire_rd_str(&mr);

			wire_w_strn(b, m.ptr ? m.ptr : "", (int16_t)(m.len > 0 ? m.len : 0));
			if (inst.len >= 0)
				wire_w_strn(b, inst.ptr, (int16_t)inst.len);
			else
				wire_w_str(b, NULL);
			wire_w_i16(b, leave_one(gs, g, m, inst, now));
		}
	}
	pthread_mutex_unlock(&gs->lock);
	req_finish(r);
	return API_OK;
}

/* ---- OffsetCommit ---- */

/* As Kafka's GroupCoordinator (2.5+ order): a "simple" commit
 * (generation < 0: assign()ed consumers, admin tools) is taken by an Empty
 * or unknown group only; any other commit must come from a current member
 * at the current generation.  A removed member's (a zombie's) commit is
 * refused. */
static int16_t check_commit(group *g, int32_t gen, wire_str mid)
{
	member *m;

	if (!g)
		return gen < 0 ? KERR_NONE : KERR_ILLEGAL_GENERATION;
	if (gen < 0 && g->state == G_EMPTY)
		return KERR_NONE;
	m = mid.len > 0 ? member_find(g, mid.ptr, (size_t)mid.len) : NULL;
	if (!m)
		return KERR_UNKNOWN_MEMBER_ID;
	if (gen != g->generation)
		return KERR_ILLEGAL_GENERATION;
	if (g->state == G_COMPLETING)
		return KERR_REBALANCE_IN_PROGRESS;
	return KERR_NONE;
}

typedef struct commit_topic {
	char *name;
	int first, n;
} commit_topic;

typedef struct commit_reply {
	int ntopics;
	commit_topic *topics;
} commit_reply;

static void write_commit_reply(offjob *oj)
{
	req *r = oj->r;
	commit_reply *cr = r->state;

	if (r->api_version >= 3)
		wire_w_i32(&r->resp, 0);
	wire_w_i32(&r->resp, cr->ntopics);
	for (int i = 0; i < cr->ntopics; i++) {
		wire_w_str(&r->resp, cr->topics[i].name);
		wire_w_i32(&r->resp, cr->topics[i].n);
		for (int k = cr->topics[i].first; k < cr->topics[i].first + cr->topics[i].n; k++) {
			wire_w_i32(&r->resp, oj->ops[k].part);
			wire_w_i16(&r->resp, oj->top_err ? oj->top_err : oj->ops[k].err);
		}
	}
}

static void commit_reply_free(req *r)
{
	commit_reply *cr = r->state;

	for (int i = 0; i < cr->ntopics; i++)
		free(cr->topics[i].name);
	free(cr->topics);
	free(cr);
}

int api_offset_commit(req *r, wire_rd *rd)
{
	groups *gs = G;
	int16_t ver = r->api_version;
	wire_str gid = wire_rd_str(rd), mid = { NULL, -1 }, inst = { NULL, -1 };
	int32_t gen = -1, nt;
	const uint8_t *topics_at;
	wire_rd scan;
	int nops = 0, k = 0;
	commit_reply *cr;
	offjob *oj;
	int64_t wall = now_ms();
	char g_id[MAX_ID + 1];

	if (ver >= 1) {
		gen = wire_rd_i32(rd);
		mid = wire_rd_str(rd);
	}
	if (ver >= 7)
		inst = wire_rd_str(rd);
	if (ver >= 2 && ver <= 4)
		(void)wire_rd_i64(rd); /* retention time: broker setting wins */
	topics_at = rd->p;
	scan = *rd;
	nt = wire_rd_array(&scan, 6);
	for (int32_t i = 0; i < nt && !scan.err; i++) {
		int32_t np;

		(void)wire_rd_str(&scan);
		np = wire_rd_array(&scan, 14);
		for (int32_t j = 0; j < np && !scan.err; j++) {
			wire_rd_take(&scan, 4 + 8 + (ver >= 6 ? 4 : 0) + (ver == 1 ? 8 : 0));
			(void)wire_rd_str(&scan);
		}
		nops += np > 0 ? np : 0;
	}
	if (scan.err || rd->err || !wire_str_copy(gid, g_id, sizeof(g_id)))
		return API_MALFORMED;
	cr = calloc(1, sizeof(*cr));
	oj = offjob_new(r, nops, write_commit_reply);
	if (!cr || !oj || !(cr->topics = calloc((size_t)(nt > 0 ? nt : 1), sizeof(*cr->topics)))) {
		free(cr);
		if (oj)
			offjob_free(oj);
		return API_MALFORMED;
	}
	r->state = cr;
	r->free_state = commit_reply_free;
	cr->ntopics = nt > 0 ? nt : 0;
	wire_rd_init(rd, topics_at, (size_t)(rd->end - topics_at));
	nt = wire_rd_array(rd, 6);
	for (int32_t i = 0; i < nt; i++) {
		wire_str tname = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 14);
		topic *t = tname.len > 0 ? topics_get(r->w->srv->topics, tname.ptr, (size_t)tname.len) : NULL;

		cr->topics[i].name = dupstr(tname);
		cr->topics[i].first = k;
		cr->topics[i].n = np;
		for (int32_t j = 0; j < np; j++, k++) {
			offop *op = &oj->ops[k];
			wire_str meta;

			op->kind = OP_UPSERT;
			op->part = wire_rd_i32(rd);
			op->offset = wire_rd_i64(rd);
			op->epoch = ver >= 6 ? wire_rd_i32(rd) : -1;
			if (ver == 1)
				(void)wire_rd_i64(rd);
			meta = wire_rd_str(rd);
			op->commit_ms = wall;
			op->group = strdup(g_id);
			op->topic = dupstr(tname);
			op->meta = dupstr(meta);
			if (!op->group || !op->topic)
				op->err = KERR_UNKNOWN_SERVER_ERROR;
			else if (!t || op->part < 0 || op->part >= t->nparts)
				op->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			else if (meta.len > MAX_OFFSET_METADATA)
				op->err = KERR_OFFSET_METADATA_TOO_LARGE;
		}
		if (t)
			topic_unref(t);
	}
	pthread_mutex_lock(&gs->lock);
	{
		group *g = group_find(gs, g_id, strlen(g_id));

		oj->top_err = !g_id[0] ? KERR_INVALID_GROUP_ID
			    : fenced(g, inst, mid) ? KERR_FENCED_INSTANCE_ID
						   : check_commit(g, gen, mid);
		if (!oj->top_err && !g && !group_get_or_create(gs, g_id))
			oj->top_err = KERR_UNKNOWN_SERVER_ERROR;
	}
	offjob_begin(gs, oj);
	pthread_mutex_unlock(&gs->lock);
	if (oj->top_err) {
		for (int i = 0; i < oj->nops; i++)
			oj->ops[i].err = oj->top_err;
	}
	offjob_submit(gs, oj, r->w);
	return API_OK;
}

/* ---- OffsetFetch ---- */

static void fetch_one(wire_buf *b, int16_t ver, int32_t p, const offmap_ent *e)
{
	wire_w_i32(b, p);
	wire_w_i64(b, e ? e->offset : -1);
	if (ver >= 5)
		wire_w_i32(b, e ? e->epoch : -1);
	wire_w_str(b, e ? e->meta : "");
	wire_w_i16(b, KERR_NONE);
}

static int cmp_off(const void *a, const void *b)
{
	const offmap_ent *x = *(const offmap_ent *const *)a, *y = *(const offmap_ent *const *)b;
	int c = strcmp(x->topic, y->topic);

	return c ? c : (x->part > y->part) - (x->part < y->part);
}

typedef struct ent_list {
	const offmap_ent **v;
	size_t n, cap;
	bool oom;
} ent_list;

static void collect(const offmap_ent *e, void *arg)
{
	ent_list *l = arg;

	if (l->n == l->cap && !l->oom) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		const offmap_ent **v = realloc(l->v, sizeof(*v) * cap);

		if (!v) {
			l->oom = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	if (!l->oom)
		l->v[l->n++] = e;
}

/* OffsetFetch with a null topic list: every committed offset of g. */
static void fetch_all(groups *gs, wire_buf *b, int16_t ver, const char *g)
{
	ent_list l = { 0 };
	size_t at;
	int32_t ntopics = 0;

	offmap_each(gs->offs, g, collect, &l);
	if (l.oom) {
		b->oom = true;
		free(l.v);
		return;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_off);
	at = wire_w_placeholder32(b);
	for (size_t i = 0; i < l.n;) {
		size_t j = i;

		while (j < l.n && !strcmp(l.v[j]->topic, l.v[i]->topic))
			j++;
		wire_w_str(b, l.v[i]->topic);
		wire_w_i32(b, (int32_t)(j - i));
		for (; i < j; i++)
			fetch_one(b, ver, l.v[i]->part, l.v[i]);
		ntopics++;
	}
	wire_patch32(b, at, ntopics);
	free(l.v);
}

int api_offset_fetch(req *r, wire_rd *rd)
{
	groups *gs = G;
	int16_t ver = r->api_version;
	wire_buf *b = &r->resp;
	wire_str gid = wire_rd_str(rd);
	const uint8_t *topics_at = rd->p;
	char g[MAX_ID + 1];
	wire_rd scan = *rd;
	int32_t nt = wire_rd_array(&scan, 6);

	for (int32_t i = 0; i < nt && !scan.err; i++) {
		int32_t np;

		(void)wire_rd_str(&scan);
		np = wire_rd_array(&scan, 4);
		wire_rd_take(&scan, (size_t)(np > 0 ? np : 0) * 4);
	}
	if (scan.err || rd->err || !wire_str_copy(gid, g, sizeof(g)))
		return API_MALFORMED;
	if (ver >= 3)
		wire_w_i32(b, 0);
	wire_rd_init(rd, topics_at, (size_t)(rd->end - topics_at));
	nt = wire_rd_array(rd, 6);
	pthread_mutex_lock(&gs->lock);
	if (nt < 0) {
		fetch_all(gs, b, ver, g);
	} else {
		wire_w_i32(b, nt);
		for (int32_t i = 0; i < nt; i++) {
			wire_str tname = wire_rd_str(rd);
			int32_t np = wire_rd_array(rd, 4);
			char t[TOPIC_NAME_MAX + 1];

			if (!wire_str_copy(tname, t, sizeof(t)))
				t[0] = '\0';
			wire_w_str(b, t);
			wire_w_i32(b, np);
			for (int32_t j = 0; j < np; j++) {
				int32_t p = wire_rd_i32(rd);

				fetch_one(b, ver, p, offmap_get(gs->offs, g, t, p));
			}
		}
	}
	pthread_mutex_unlock(&gs->lock);
	if (ver >= 2)
		wire_w_i16(b, KERR_NONE);
	req_finish(r);
	return API_OK;
}

/* ---- DescribeGroups, ListGroups ---- */

static void describe_one(groups *gs, wire_buf *b, int16_t ver, const char *id)
{
	group *g = group_find(gs, id, strlen(id));

	wire_w_i16(b, KERR_NONE);
	wire_w_str(b, id);
	if (!g) {
		wire_w_str(b, "Dead");
		wire_w_str(b, "");
		wire_w_str(b, "");
		wire_w_i32(b, 0);
	} else {
		wire_w_str(b, state_names[g->state]);
		wire_w_str(b, g->protocol_type ? g->protocol_type : "");
		wire_w_str(b, g->state == G_STABLE || g->state == G_COMPLETING ? g->protocol : "");
		wire_w_i32(b, g->nmembers);
		for (member *m = g->members; m; m = m->next) {
			const proto *p = member_proto(m, g->protocol);

			wire_w_str(b, m->id);
			if (ver >= 4)
				wire_w_str(b, m->instance_id);
			wire_w_str(b, m->client_id);
			wire_w_str(b, m->host);
			wire_w_bytes(b, p ? p->meta : (const uint8_t *)"", p ? p->len : 0);
			wire_w_bytes(b, m->assign ? m->assign : (const uint8_t *)"", m->assign_len);
		}
	}
	if (ver >= 3)
		wire_w_i32(b, INT32_MIN);
}

int api_describe_groups(req *r, wire_rd *rd)
{
	groups *gs = G;
	int32_t n = wire_rd_array(rd, 2);
	const uint8_t *at = rd->p;

	for (int32_t i = 0; i < n; i++)
		(void)wire_rd_str(rd);
	if (r->api_version >= 3)
		(void)wire_rd_i8(rd);
	if (rd->err)
		return API_MALFORMED;
	if (r->api_version >= 1)
		wire_w_i32(&r->resp, 0);
	wire_w_i32(&r->resp, n > 0 ? n : 0);
	wire_rd_init(rd, at, (size_t)(rd->end - at));
	pthread_mutex_lock(&gs->lock);
	for (int32_t i = 0; i < n; i++) {
		char id[MAX_ID + 1];

		if (!wire_str_copy(wire_rd_str(rd), id, sizeof(id)))
			id[0] = '\0';
		describe_one(gs, &r->resp, r->api_version, id);
	}
	pthread_mutex_unlock(&gs->lock);
	req_finish(r);
	return API_OK;
}

int api_list_groups(req *r, wire_rd *rd)
{
	groups *gs = G;
	wire_buf *b = &r->resp;
	size_t at;
	int32_t n = 0;

	if (r->api_version >= 1)
		wire_w_i32(b, 0);
	wire_w_i16(b, KERR_NONE);
	at = wire_w_placeholder32(b);
	pthread_mutex_lock(&gs->lock);
	for (group *g = gs->list; g; g = g->next, n++) {
		wire_w_str(b, g->id);
		wire_w_str(b, g->protocol_type ? g->protocol_type : "");
	}
	pthread_mutex_unlock(&gs->lock);
	wire_patch32(b, at, n);
	req_finish(r);
	return API_OK;
}

/* ---- DeleteGroups, OffsetDelete ---- */

static void write_delete_groups(offjob *oj)
{
	req *r = oj->r;

	wire_w_i32(&r->resp, 0);
	wire_w_i32(&r->resp, oj->nops);
	for (int i = 0; i < oj->nops; i++) {
		wire_w_str(&r->resp, oj->ops[i].group);
		wire_w_i16(&r->resp, oj->ops[i].err);
	}
}

int api_delete_groups(req *r, wire_rd *rd)
{
	groups *gs = G;
	int32_t n = wire_rd_array(rd, 2);
	const uint8_t *at = rd->p;
	offjob *oj;

	for (int32_t i = 0; i < n; i++)
		(void)wire_rd_str(rd);
	if (rd->err)
		return API_MALFORMED;
	oj = offjob_new(r, n > 0 ? n : 0, write_delete_groups);
	if (!oj)
		return API_MALFORMED;
	wire_rd_init(rd, at, (size_t)(rd->end - at));
	pthread_mutex_lock(&gs->lock);
	for (int32_t i = 0; i < n; i++) {
		offop *op = &oj->ops[i];
		wire_str s = wire_rd_str(rd);
		group *g = s.len >= 0 ? group_find(gs, s.ptr, (size_t)s.len) : NULL;

		op->kind = OP_DEL_GROUP;
		op->group = dupstr(s);
		if (!op->group)
			op->group = strdup("");
		if (!g) {
			op->err = KERR_GROUP_ID_NOT_FOUND;
		} else if (g->nmembers > 0) {
			op->err = KERR_NON_EMPTY_GROUP;
		} else {
			blog(BLOG_INFO, "group %s deleted", g->id);
			group_unlink_free(gs, g);
		}
	}
	offjob_begin(gs, oj);
	pthread_mutex_unlock(&gs->lock);
	offjob_submit(gs, oj, r->w);
	return API_OK;
}

static bool subscribed(group *g, const char *tname)
{
	for (member *m = g->members; m; m = m->next) {
		const proto *p = member_proto(m, g->protocol);
		wire_rd rd;
		int32_t n;

		if (!p)
			continue;
		/* ConsumerProtocolSubscription: version, [topics], userdata */
		wire_rd_init(&rd, p->meta, (size_t)p->len);
		(void)wire_rd_i16(&rd);
		n = wire_rd_array(&rd, 2);
		for (int32_t i = 0; i < n && !rd.err; i++)
			if (wire_str_eq(wire_rd_str(&rd), tname))
				return true;
	}
	return false;
}

static void write_offset_delete(offjob *oj)
{
	req *r = oj->r;
	commit_reply *cr = r->state;

	wire_w_i16(&r->resp, oj->top_err);
	wire_w_i32(&r->resp, 0);
	wire_w_i32(&r->resp, oj->top_err ? 0 : cr->ntopics);
	for (int i = 0; !oj->top_err && i < cr->ntopics; i++) {
		wire_w_str(&r->resp, cr->topics[i].name);
		wire_w_i32(&r->resp, cr->topics[i].n);
		for (int k = cr->topics[i].first; k < cr->topics[i].first + cr->topics[i].n; k++) {
			wire_w_i32(&r->resp, oj->ops[k].part);
			wire_w_i16(&r->resp, oj->ops[k].err);
		}
	}
}

int api_offset_delete(req *r, wire_rd *rd)
{
	groups *gs = G;
	wire_str gid = wire_rd_str(rd);
	const uint8_t *at = rd->p;
	wire_rd scan = *rd;
	int32_t nt = wire_rd_array(&scan, 6);
	int nops = 0, k = 0;
	commit_reply *cr;
	offjob *oj;
	group *g;

	for (int32_t i = 0; i < nt && !scan.err; i++) {
		int32_t np;

		(void)wire_rd_str(&scan);
		np = wire_rd_array(&scan, 4);
		wire_rd_take(&scan, (size_t)(np > 0 ? np : 0) * 4);
		nops += np > 0 ? np : 0;
	}
	if (scan.err || gid.len < 0)
		return API_MALFORMED;
	cr = calloc(1, sizeof(*cr));
	oj = offjob_new(r, nops, write_offset_delete);
	if (!cr || !oj || !(cr->topics = calloc((size_t)(nt > 0 ? nt : 1), sizeof(*cr->topics)))) {
		free(cr);
		if (oj)
			offjob_free(oj);
		return API_MALFORMED;
	}
	r->state = cr;
	r->free_state = commit_reply_free;
	cr->ntopics = nt;
	wire_rd_init(rd, at, (size_t)(rd->end - at));
	nt = wire_rd_array(rd, 6);
	pthread_mutex_lock(&gs->lock);
	g = group_find(gs, gid.ptr, (size_t)gid.len);
	if (!g)
		oj->top_err = KERR_GROUP_ID_NOT_FOUND;
	for (int32_t i = 0; i < nt; i++) {
		wire_str tname = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 4);

		cr->topics[i].name = dupstr(tname);
		cr->topics[i].first = k;
		cr->topics[i].n = np;
		for (int32_t j = 0; j < np; j++, k++) {
			offop *op = &oj->ops[k];

			op->kind = OP_DEL_ONE;
			op->part = wire_rd_i32(rd);
			op->group = dupstr(gid);
			op->topic = dupstr(tname);
			if (oj->top_err)
				op->err = oj->top_err;
			else if (!op->group || !op->topic)
				op->err = KERR_UNKNOWN_SERVER_ERROR;
			else if (g->nmembers > 0 && subscribed(g, op->topic))
				op->err = KERR_GROUP_SUBSCRIBED_TO_TOPIC;
		}
	}
	offjob_begin(gs, oj);
	pthread_mutex_unlock(&gs->lock);
	offjob_submit(gs, oj, r->w);
	return API_OK;
}
