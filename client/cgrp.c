/*
 * cgrp.c — consumer-group membership (contract in cgrp.h).
 *
 * The group thread loop: find the coordinator; if a (re)join is needed,
 * revoke (the hook below), then JoinGroup (MEMBER_ID_REQUIRED: retry with
 * the id given), the leader computes every member's assignment, SyncGroup,
 * OffsetFetch, assign, queue ASSIGNED; otherwise heartbeat every
 * heartbeat.interval.ms, commit every auto.commit.interval.ms or when
 * asked, re-match the subscription every topic.metadata.refresh.interval.ms.
 * Errors: REBALANCE_IN_PROGRESS -> rejoin; UNKNOWN_MEMBER_ID /
 * ILLEGAL_GENERATION -> rejoin with an empty member id (a static member
 * first rejoins with its old id, so that a newer instance with the same
 * group.instance.id fences it); NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
 * a lost connection -> find the coordinator again; FENCED_INSTANCE_ID ->
 * fatal: unassign, queue REVOKED and the error for poll, stop.
 *
 * The revocation hook (revoke()), in this order:
 *   1. hold: poll stops returning messages (it still serves events);
 *   2. with a rebalance callback: REVOKED (every assigned partition) is
 *      queued and the thread waits until a poll (or cgrp_destroy) has run
 *      the callback, at most max.poll.interval.ms; meanwhile it serves
 *      commit requests (a sync commit from inside the callback) and
 *      heartbeats;
 *   3. enable.auto.commit: commit the positions;
 *   4. unassign (buffered messages are dropped), then JoinGroup.
 * The hold lasts until poll has served the next ASSIGNED with nothing else
 * queued, so ASSIGNED comes before any message of the new assignment.
 */
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrp.h"
#include "conf.h"
#include "grpproto.h"
#include "kconn.h"

enum {
	API_OFFSET_COMMIT = 8,
	API_OFFSET_FETCH = 9,
	API_FIND_COORDINATOR = 10,
	API_JOIN_GROUP = 11,
	API_HEARTBEAT = 12,
	API_LEAVE_GROUP = 13,
	API_SYNC_GROUP = 14,
};

/* ev 0: the fatal error g->fatal_err (no callback; poll returns it). */
#define CGRP_EV_FATAL 0

struct cgrp_event {
	struct cgrp_event *next;
	int ev; /* sluice_rebalance_event_t or CGRP_EV_FATAL */
	uint64_t seq; /* REVOKED: g->rev_served is set to it once served */
	struct grpproto_tplist parts;
};

struct cgrp {
	sluice_consumer_t *c;
	const struct sluice_conf *conf;
	struct sluice_conf coord_conf; /* conf with servers = the coordinator */
	struct kconn boot, coord;
	sluice_admin_t *admin;
	pthread_t thr;
	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t cond;
	bool terminate, started, exited;
	/* subscription */
	char **subs;
	int nsubs;
	char **topics; /* current match, sorted */
	int ntopics;
	uint64_t sub_version, joined_sub_version;
	/* membership (group thread only, read under lock by commit) */
	char member_id[256];
	const char *instance_id; /* group.instance.id, NULL: dynamic member */
	int32_t generation;
	bool have_coord, need_join, in_group;
	/* FENCED_INSTANCE_ID (group thread sets it; fatal_posted once handled) */
	int16_t fatal_err;
	bool fatal_posted;
	int64_t next_hb, next_commit, next_meta, backoff_until;
	/* commit requests */
	uint64_t commit_req, commit_done;
	sluice_err_t commit_err;
	/* events for poll */
	struct cgrp_event *ev_head, *ev_tail;
	atomic_bool pending;
	/* revocation hook: see the file comment */
	atomic_bool hold;     /* poll must not return messages */
	bool revoking;        /* between revoke() start and unassign */
	uint64_t ev_seq, rev_served; /* events queued; last REVOKED served */
	pthread_mutex_t serve_lock;
};

static int timeout_ms(const struct cgrp *g) { return g->conf->request_timeout_ms; }

/* ---- events ---- */

/* Queues an event (takes *parts, left empty).  Returns its sequence
 * number (> 0), or 0 when out of memory (the event is lost). */
static uint64_t post_event(struct cgrp *g, int ev, struct grpproto_tplist *parts)
{
	struct cgrp_event *e = calloc(1, sizeof(*e));
	uint64_t seq;

	if (!e) {
		grpproto_tplist_free(parts);
		return 0;
	}
	e->ev = ev;
	e->parts = *parts; /* ownership moves to the event */
	memset(parts, 0, sizeof(*parts));
	pthread_mutex_lock(&g->lock);
	seq = e->seq = ++g->ev_seq;
	if (g->ev_tail)
		g->ev_tail->next = e;
	else
		g->ev_head = e;
	g->ev_tail = e;
	atomic_store(&g->pending, true);
	pthread_cond_broadcast(&g->cond); /* cgrp_destroy serves events too */
	pthread_mutex_unlock(&g->lock);
	consumer_grp_wake(g->c);
	return seq;
}

bool cgrp_pending(struct cgrp *g) { return atomic_load(&g->pending); }

bool cgrp_holding(struct cgrp *g) { return atomic_load(&g->hold); }

sluice_err_t cgrp_serve(struct cgrp *g, char *errstr, size_t errstr_size)
{
	sluice_err_t fatal = SLUICE_ERR_NO_ERROR;

	pthread_mutex_lock(&g->serve_lock);
	while (!fatal) {
		struct cgrp_event *e;
		sluice_topic_partition_t *v;
		int n, k = 0;

		pthread_mutex_lock(&g->lock);
		e = g->ev_head;
		if (e) {
			g->ev_head = e->next;
			if (!g->ev_head)
				g->ev_tail = NULL;
		}
		atomic_store(&g->pending, g->ev_head != NULL);
		pthread_mutex_unlock(&g->lock);
		if (!e)
			break;
		if (e->ev == CGRP_EV_FATAL) {
			if (errstr) {
				fatal = g->fatal_err;
				if (errstr_size)
					snprintf(errstr, errstr_size,
						 "group %s: group.instance.id \"%s\" was fenced: another "
						 "consumer joined with the same group.instance.id "
						 "(FENCED_INSTANCE_ID); this consumer has left the group "
						 "for good",
						 g->conf->group_id, g->instance_id ? g->instance_id : "");
			}
			free(e);
			continue;
		}
		n = grpproto_tplist_count(&e->parts);
		v = calloc((size_t)(n ? n : 1), sizeof(*v));
		if (v && g->conf->rebalance_cb) {
			for (int i = 0; i < e->parts.n; i++)
				for (int j = 0; j < e->parts.t[i].nparts; j++) {
					v[k].topic = e->parts.t[i].topic;
					v[k].partition = e->parts.t[i].parts[j];
					v[k++].offset = SLUICE_OFFSET_INVALID;
				}
			g->conf->rebalance_cb(g->c, (sluice_rebalance_event_t)e->ev, v, (size_t)k,
					      g->conf->rebalance_ctx);
		}
		free(v);
		pthread_mutex_lock(&g->lock);
		if (e->ev == SLUICE_REBALANCE_REVOKED && e->seq > g->rev_served) {
			g->rev_served = e->seq; /* revoke() may go on */
			pthread_cond_broadcast(&g->cond);
		} else if (e->ev == SLUICE_REBALANCE_ASSIGNED && !g->ev_head && !g->revoking &&
			   !g->fatal_err) {
			atomic_store(&g->hold, false); /* messages may flow again */
		}
		pthread_mutex_unlock(&g->lock);
		grpproto_tplist_free(&e->parts);
		free(e);
	}
	pthread_mutex_unlock(&g->serve_lock);
	return fatal;
}

/* ---- requests ---- */

static int coord_call(struct cgrp *g, struct kreq *r, struct kbuf **resp, int tmo)
{
	int rc = kconn_call(&g->coord, r, resp, tmo);

	if (rc && rc != SLUICE_ERR_NO_MEMORY)
		g->have_coord = false;
	return rc;
}

static bool coord_error(struct cgrp *g, int16_t err)
{
	if (err == SLUICE_ERR_NOT_COORDINATOR || err == SLUICE_ERR_COORDINATOR_NOT_AVAILABLE ||
	    err == 14 /* COORDINATOR_LOAD_IN_PROGRESS */) {
		g->have_coord = false;
		kconn_close(&g->coord, SLUICE_ERR_TRANSPORT, "not the coordinator");
		return true;
	}
	return false;
}

/* Handles a membership error of Heartbeat/OffsetCommit/SyncGroup. */
static void member_error(struct cgrp *g, int16_t err)
{
	if (coord_error(g, err))
		return;
	if (err == SLUICE_ERR_FENCED_INSTANCE_ID) {
		g->fatal_err = err;
		g->need_join = false;
	} else if (err == SLUICE_ERR_UNKNOWN_MEMBER_ID || err == SLUICE_ERR_ILLEGAL_GENERATION) {
		/* a static member keeps its id for one JoinGroup: if a newer
		 * instance took over, the broker answers FENCED_INSTANCE_ID;
		 * otherwise UNKNOWN_MEMBER_ID and join_group() clears it */
		if (!g->instance_id)
			g->member_id[0] = '\0';
		g->generation = -1;
		g->need_join = true;
	} else if (err == SLUICE_ERR_REBALANCE_IN_PROGRESS) {
		g->need_join = true;
	}
}

static int find_coordinator(struct cgrp *g)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver, rc;
	wire_rd rd;
	int16_t err;
	wire_str host;
	int32_t port;

	if (!kconn_up(&g->boot) && (rc = kconn_connect(&g->boot, timeout_ms(g))))
		return rc;
	ver = kconn_version(&g->boot, API_FIND_COORDINATOR, 0, 2);
	if (ver < 0)
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	r = kreq_new(&g->boot, API_FIND_COORDINATOR, (int16_t)ver);
	if (!r)
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, g->conf->group_id);
	if (ver >= 1)
		wire_w_i8(&r->wb, 0);
	rc = kconn_call(&g->boot, r, &resp, timeout_ms(g));
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 1)
		wire_rd_i32(&rd);
	err = wire_rd_i16(&rd);
	if (ver >= 1)
		wire_rd_str(&rd);
	wire_rd_i32(&rd);
	host = wire_rd_str(&rd);
	port = wire_rd_i32(&rd);
	rc = rd.err ? SLUICE_ERR_BAD_MSG : err;
	if (!rc && (port <= 0 || port > 65535 ||
		    !wire_str_copy(host, g->coord_conf.servers[0].host,
				   sizeof(g->coord_conf.servers[0].host))))
		rc = SLUICE_ERR_BAD_MSG;
	kbuf_unref(resp);
	if (rc)
		return rc;
	g->coord_conf.servers[0].port = (uint16_t)port;
	g->coord_conf.nservers = 1;
	kconn_close(&g->coord, SLUICE_ERR_TRANSPORT, NULL);
	kconn_init(&g->coord, &g->coord_conf);
	rc = kconn_connect(&g->coord, timeout_ms(g));
	if (rc)
		return rc;
	g->have_coord = true;
	return 0;
}

/* Topic matching: subs are names or ^regexes. */
static bool sub_match(struct cgrp *g, const char *topic)
{
	for (int i = 0; i < g->nsubs; i++) {
		if (g->subs[i][0] == '^') {
			regex_t re;
			bool m = false;

			if (!regcomp(&re, g->subs[i], REG_EXTENDED | REG_NOSUB)) {
				m = !regexec(&re, topic, 0, NULL, 0);
				regfree(&re);
			}
			if (m)
				return true;
		} else if (!strcmp(g->subs[i], topic)) {
			return true;
		}
	}
	return false;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strv(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Metadata of every topic into *meta (names strdup'ed). */
static int fetch_metadata(struct cgrp *g, struct grpproto_topic_meta **meta, int *n)
{
	sluice_topic_list_t *l = NULL;
	struct grpproto_topic_meta *m;
	sluice_err_t err = sluice_admin_list_topics(g->admin, NULL, &l, timeout_ms(g));
	size_t cnt;

	if (err)
		return err;
	cnt = sluice_topic_list_count(l);
	m = calloc(cnt ? cnt : 1, sizeof(*m));
	if (!m) {
		sluice_topic_list_destroy(l);
		return SLUICE_ERR_NO_MEMORY;
	}
	for (size_t i = 0; i < cnt; i++) {
		const sluice_topic_info_t *ti = sluice_topic_list_get(l, i);

		m[i].topic = strdup(ti->name);
		m[i].partitions = ti->err ? 0 : ti->partition_count;
		if (!m[i].topic) {
			for (size_t j = 0; j < i; j++)
				free((char *)m[j].topic);
			free(m);
			sluice_topic_list_destroy(l);
			return SLUICE_ERR_NO_MEMORY;
		}
	}
	sluice_topic_list_destroy(l);
	*meta = m;
	*n = (int)cnt;
	return 0;
}

static void free_meta(struct grpproto_topic_meta *m, int n)
{
	for (int i = 0; i < n && m; i++)
		free((char *)m[i].topic);
	free(m);
}

/* Re-matches the subscription; sets need_join when the topic set changed. */
static void refresh_subscription(struct cgrp *g)
{
	struct grpproto_topic_meta *meta = NULL;
	int nm = 0, nt = 0;
	char **v;
	bool changed;

	if (fetch_metadata(g, &meta, &nm))
		return;
	v = calloc((size_t)(nm + g->nsubs + 1), sizeof(char *));
	if (!v) {
		free_meta(meta, nm);
		return;
	}
	pthread_mutex_lock(&g->lock);
	for (int i = 0; i < nm; i++)
		if (sub_match(g, meta[i].topic))
			v[nt++] = strdup(meta[i].topic);
	/* plain names not (yet) known still go into the subscription */
	for (int i = 0; i < g->nsubs; i++) {
		bool seen = false;

		if (g->subs[i][0] == '^')
			continue;
		for (int j = 0; j < nt; j++)
			if (v[j] && !strcmp(v[j], g->subs[i]))
				seen = true;
		if (!seen)
			v[nt++] = strdup(g->subs[i]);
	}
	for (int i = 0; i < nt; i++)
		if (!v[i]) {
			pthread_mutex_unlock(&g->lock);
			free_strv(v, nt);
			free_meta(meta, nm);
			return;
		}
	qsort(v, (size_t)nt, sizeof(char *), cmp_str);
	changed = nt != g->ntopics;
	for (int i = 0; !changed && i < nt; i++)
		changed = strcmp(v[i], g->topics[i]) != 0;
	if (changed) {
		free_strv(g->topics, g->ntopics);
		g->topics = v;
		g->ntopics = nt;
		g->need_join = true;
	} else {
		free_strv(v, nt);
	}
	pthread_mutex_unlock(&g->lock);
	free_meta(meta, nm);
}

/* OffsetCommit of the positions that moved.  0 or error. */
static int commit_positions(struct cgrp *g, const struct cgrp_pos *v, int n)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver, rc, cnt = 0, ntopics = 0;
	int16_t first = 0;
	wire_rd rd;
	int32_t nt;

	for (int i = 0; i < n; i++)
		if (v[i].consumed >= 0 && v[i].consumed != v[i].committed)
			cnt++;
	if (!cnt)
		return 0;
	if (!g->have_coord || !kconn_up(&g->coord))
		return SLUICE_ERR_COORDINATOR_NOT_AVAILABLE;
	ver = kconn_version(&g->coord, API_OFFSET_COMMIT, 2, 7);
	if (ver < 0)
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	r = kreq_new(&g->coord, API_OFFSET_COMMIT, (int16_t)ver);
	if (!r)
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, g->conf->group_id);
	wire_w_i32(&r->wb, g->generation);
	wire_w_str(&r->wb, g->member_id);
	if (ver >= 7)
		wire_w_str(&r->wb, g->instance_id);
	if (ver <= 4)
		wire_w_i64(&r->wb, -1);
	/* one topic entry per partition run of the same topic */
	{
		size_t at = wire_w_placeholder32(&r->wb);

		for (int i = 0; i < n;) {
			int j = i, np = 0;
			size_t pat;

			if (v[i].consumed < 0 || v[i].consumed == v[i].committed) {
				i++;
				continue;
			}
			wire_w_str(&r->wb, v[i].topic);
			pat = wire_w_placeholder32(&r->wb);
			for (; j < n && !strcmp(v[j].topic, v[i].topic); j++) {
				if (v[j].consumed < 0 || v[j].consumed == v[j].committed)
					continue;
				wire_w_i32(&r->wb, v[j].partition);
				wire_w_i64(&r->wb, v[j].consumed);
				if (ver >= 6)
					wire_w_i32(&r->wb, -1);
				wire_w_str(&r->wb, "");
				np++;
			}
			wire_patch32(&r->wb, pat, np);
			ntopics++;
			i = j;
		}
		wire_patch32(&r->wb, at, ntopics);
	}
	rc = coord_call(g, r, &resp, timeout_ms(g));
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 3)
		wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt && !rd.err; t++) {
		wire_str name = wire_rd_str(&rd);
		int32_t np = wire_rd_array(&rd, 6);
		char tn[256];

		if (!wire_str_copy(name, tn, sizeof(tn)))
			tn[0] = '\0';
		for (int32_t p = 0; p < np && !rd.err; p++) {
			int32_t idx = wire_rd_i32(&rd);
			int16_t e = wire_rd_i16(&rd);

			if (rd.err)
				break;
			if (e && !first)
				first = e;
			if (!e)
				for (int i = 0; i < n; i++)
					if (v[i].partition == idx && !strcmp(v[i].topic, tn))
						consumer_grp_set_committed(g->c, tn, idx, v[i].consumed);
		}
	}
	kbuf_unref(resp);
	if (rd.err)
		return SLUICE_ERR_BAD_MSG;
	if (first)
		member_error(g, first);
	return first;
}

static int commit_now(struct cgrp *g)
{
	struct cgrp_pos *v = NULL;
	int n = 0, rc;

	if (!g->in_group)
		return SLUICE_ERR_STATE;
	if (consumer_grp_positions(g->c, false, &v, &n))
		return SLUICE_ERR_NO_MEMORY;
	rc = commit_positions(g, v, n);
	free(v);
	return rc;
}

static void heartbeat(struct cgrp *g);

/* Waits on g->cond (lock held) until the absolute kclock time `until` or a
 * broadcast, whichever comes first. */
static void cond_wait_until(struct cgrp *g, int64_t until)
{
	int64_t now = kclock_ms();
	struct timespec ts;

	if (until <= now)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (until - now) / 1000;
	ts.tv_nsec += (long)((until - now) % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&g->cond, &g->lock, &ts);
}

/* Answers the commit requests made so far (lock held on entry and exit). */
static void serve_commit_locked(struct cgrp *g)
{
	uint64_t want = g->commit_req;
	int rc;

	pthread_mutex_unlock(&g->lock);
	rc = commit_now(g);
	pthread_mutex_lock(&g->lock);
	g->commit_err = rc;
	g->commit_done = want;
	pthread_cond_broadcast(&g->cond);
}

/* Step 2 of the hook: waits until REVOKED number seq has been served (its
 * callback returned), max.poll.interval.ms at most, serving commit
 * requests and heartbeats meanwhile.  Also during cgrp_destroy (terminate
 * set): cgrp_destroy serves the event. */
static void revoke_wait(struct cgrp *g, uint64_t seq)
{
	int64_t deadline = kclock_ms() + g->conf->max_poll_interval_ms;

	pthread_mutex_lock(&g->lock);
	while (g->rev_served < seq && kclock_ms() < deadline) {
		int64_t until = deadline;

		if (g->commit_req != g->commit_done) {
			serve_commit_locked(g);
			continue;
		}
		if (g->have_coord && !g->fatal_err && g->generation >= 0) {
			if (kclock_ms() >= g->next_hb) {
				pthread_mutex_unlock(&g->lock);
				heartbeat(g);
				g->next_hb = kclock_ms() + g->conf->heartbeat_interval_ms;
				pthread_mutex_lock(&g->lock);
				continue;
			}
			if (g->next_hb < until)
				until = g->next_hb;
		}
		cond_wait_until(g, until);
	}
	pthread_mutex_unlock(&g->lock);
}

/* The revocation hook (file comment): hold, REVOKED + wait for the
 * callback, commit (enable.auto.commit), unassign.  fenced: the partitions
 * already belong to another member: REVOKED is only a notification (no
 * wait, no commit). */
static void revoke(struct cgrp *g, bool fenced)
{
	struct cgrp_pos *v = NULL;
	struct grpproto_tplist l = { 0 };
	int n = 0;
	uint64_t seq = 0;

	if (!g->in_group)
		return;
	pthread_mutex_lock(&g->lock);
	g->revoking = true;
	atomic_store(&g->hold, true); /* 1 */
	pthread_mutex_unlock(&g->lock);
	if (g->conf->rebalance_cb && !consumer_grp_positions(g->c, false, &v, &n)) { /* 2 */
		for (int i = 0; i < n; i++)
			grpproto_tplist_add(&l, v[i].topic, strlen(v[i].topic), v[i].partition);
		free(v);
		v = NULL;
		grpproto_tplist_sort(&l);
		seq = post_event(g, SLUICE_REBALANCE_REVOKED, &l);
		if (seq && !fenced)
			revoke_wait(g, seq);
	}
	if (g->conf->auto_commit && !fenced) /* 3 */
		commit_now(g);
	g->in_group = false; /* 4 */
	if (!consumer_grp_positions(g->c, true, &v, &n))
		free(v);
	pthread_mutex_lock(&g->lock);
	g->revoking = false;
	pthread_mutex_unlock(&g->lock);
}

/* FENCED_INSTANCE_ID: unassigns (REVOKED as a notification), queues the
 * error for poll; the thread then only answers commits with the error. */
static void enter_fatal(struct cgrp *g)
{
	struct grpproto_tplist none = { 0 };

	revoke(g, true);
	g->in_group = false;
	g->need_join = false;
	post_event(g, CGRP_EV_FATAL, &none);
	g->fatal_posted = true;
}

/* Leader: computes the SyncGroup assignments into r. */
static int leader_assign(struct cgrp *g, struct kreq *r, const char *protocol, wire_rd *members,
			 int32_t nmem, int join_ver)
{
	struct grpproto_member *m = calloc((size_t)(nmem ? nmem : 1), sizeof(*m));
	struct grpproto_sub *subs = calloc((size_t)(nmem ? nmem : 1), sizeof(*subs));
	char **ids = calloc((size_t)(nmem ? nmem : 1), sizeof(char *));
	char **insts = calloc((size_t)(nmem ? nmem : 1), sizeof(char *));
	struct grpproto_topic_meta *meta = NULL;
	int nm = 0, rc = SLUICE_ERR_NO_MEMORY;
	wire_buf ab;

	wire_buf_init(&ab);
	if (!m || !subs || !ids || !insts)
		goto out;
	for (int32_t i = 0; i < nmem; i++) {
		wire_str id = wire_rd_str(members);
		wire_str inst = { NULL, -1 };
		wire_str md;

		if (join_ver >= 5)
			inst = wire_rd_str(members);
		md = wire_rd_bytes(members);
		if (members->err || id.len < 0 || md.len < 0) {
			rc = SLUICE_ERR_BAD_MSG;
			goto out;
		}
		ids[i] = strndup(id.ptr, (size_t)id.len);
		if (!ids[i])
			goto out;
		if (inst.len >= 0 && !(insts[i] = strndup(inst.ptr, (size_t)inst.len)))
			goto out;
		m[i].instance_id = insts[i];
		if (grpproto_sub_decode(md.ptr, (size_t)md.len, &subs[i])) {
			rc = SLUICE_ERR_BAD_MSG;
			goto out;
		}
		m[i].member_id = ids[i];
		m[i].sub = &subs[i];
	}
	if (fetch_metadata(g, &meta, &nm)) {
		rc = SLUICE_ERR_TRANSPORT;
		goto out;
	}
	rc = grpproto_assign(protocol, m, nmem, meta, nm);
	if (rc) {
		rc = rc < 0 ? SLUICE_ERR_NO_MEMORY : SLUICE_ERR_INCONSISTENT_GROUP_PROTOCOL;
		goto out;
	}
	wire_w_i32(&r->wb, nmem);
	for (int32_t i = 0; i < nmem; i++) {
		wire_buf_reset(&ab);
		grpproto_assignment_encode(&ab, &m[i].assigned);
		wire_w_str(&r->wb, ids[i]);
		wire_w_bytes(&r->wb, ab.data, (int32_t)ab.len);
	}
	rc = ab.oom ? SLUICE_ERR_NO_MEMORY : 0;
out:
	for (int32_t i = 0; m && subs && ids && insts && i < nmem; i++) {
		grpproto_tplist_free(&m[i].assigned);
		grpproto_sub_free(&subs[i]);
		free(ids[i]);
		free(insts[i]);
	}
	free(m);
	free(subs);
	free(ids);
	free(insts);
	free_meta(meta, nm);
	wire_buf_free(&ab);
	return rc;
}

/* OffsetFetch for l; committed[i] in l's flattened order (-1 = none). */
static int fetch_committed(struct cgrp *g, const struct grpproto_tplist *l, int64_t *committed)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver, rc;
	wire_rd rd;
	int32_t nt;

	ver = kconn_version(&g->coord, API_OFFSET_FETCH, 1, 5);
	if (ver < 0)
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	r = kreq_new(&g->coord, API_OFFSET_FETCH, (int16_t)ver);
	if (!r)
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, g->conf->group_id);
	wire_w_i32(&r->wb, l->n);
	for (int i = 0; i < l->n; i++) {
		wire_w_str(&r->wb, l->t[i].topic);
		wire_w_i32(&r->wb, l->t[i].nparts);
		for (int j = 0; j < l->t[i].nparts; j++)
			wire_w_i32(&r->wb, l->t[i].parts[j]);
	}
	rc = coord_call(g, r, &resp, timeout_ms(g));
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 3)
		wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt && !rd.err; t++) {
		wire_str name = wire_rd_str(&rd);
		int32_t np = wire_rd_array(&rd, 14);

		for (int32_t p = 0; p < np && !rd.err; p++) {
			int32_t idx = wire_rd_i32(&rd);
			int64_t off = wire_rd_i64(&rd);
			int16_t e;
			int k = 0;

			if (ver >= 5)
				wire_rd_i32(&rd);
			wire_rd_str(&rd);
			e = wire_rd_i16(&rd);
			for (int i = 0; i < l->n; i++)
				for (int j = 0; j < l->t[i].nparts; j++, k++)
					if (!rd.err && !e && l->t[i].parts[j] == idx &&
					    wire_str_eq(name, l->t[i].topic))
						committed[k] = off;
		}
	}
	if (ver >= 2 && !rd.err) {
		int16_t e = wire_rd_i16(&rd);

		if (!rd.err && e) {
			kbuf_unref(resp);
			coord_error(g, e);
			return e;
		}
	}
	kbuf_unref(resp);
	return rd.err ? SLUICE_ERR_BAD_MSG : 0;
}

/* One JoinGroup + SyncGroup round.  0 when assigned; else an error (the
 * caller backs off unless need_join is already set again). */
static int join_group(struct cgrp *g)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver, sver, rc, ntopics;
	wire_rd rd;
	int16_t err;
	int32_t gen, nmem;
	wire_str proto, leader, mid;
	char protocol[64], strat[256], *save = NULL, *tok;
	bool is_leader;
	wire_buf md;
	const char **tv;
	struct grpproto_tplist l = { 0 };
	int64_t *committed = NULL;
	int cnt;

	ver = kconn_version(&g->coord, API_JOIN_GROUP, 0, 5);
	sver = kconn_version(&g->coord, API_SYNC_GROUP, 0, 3);
	if (ver < 0 || sver < 0)
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	r = kreq_new(&g->coord, API_JOIN_GROUP, (int16_t)ver);
	if (!r)
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, g->conf->group_id);
	wire_w_i32(&r->wb, g->conf->session_timeout_ms);
	if (ver >= 1)
		wire_w_i32(&r->wb, g->conf->max_poll_interval_ms);
	wire_w_str(&r->wb, g->member_id);
	if (ver >= 5)
		wire_w_str(&r->wb, g->instance_id);
	wire_w_str(&r->wb, "consumer");
	pthread_mutex_lock(&g->lock);
	ntopics = g->ntopics;
	tv = calloc((size_t)(ntopics ? ntopics : 1), sizeof(char *));
	wire_buf_init(&md);
	for (int i = 0; tv && i < ntopics; i++)
		tv[i] = g->topics[i];
	if (tv)
		grpproto_sub_encode(&md, tv, ntopics);
	g->joined_sub_version = g->sub_version;
	pthread_mutex_unlock(&g->lock);
	free(tv);
	snprintf(strat, sizeof(strat), "%s", g->conf->assignment_strategy);
	{
		size_t at = wire_w_placeholder32(&r->wb);
		int np = 0;

		for (tok = strtok_r(strat, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
			wire_w_str(&r->wb, tok);
			wire_w_bytes(&r->wb, md.data, (int32_t)md.len);
			np++;
		}
		wire_patch32(&r->wb, at, np);
	}
	if (md.oom || !tv) {
		wire_buf_free(&md);
		kreq_free(r);
		return SLUICE_ERR_NO_MEMORY;
	}
	wire_buf_free(&md);
	r->extra_timeout_ms = g->conf->max_poll_interval_ms;
	rc = coord_call(g, r, &resp, timeout_ms(g) + g->conf->max_poll_interval_ms);
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 2)
		wire_rd_i32(&rd);
	err = wire_rd_i16(&rd);
	gen = wire_rd_i32(&rd);
	proto = wire_rd_str(&rd);
	leader = wire_rd_str(&rd);
	mid = wire_rd_str(&rd);
	nmem = wire_rd_array(&rd, 6);
	if (rd.err) {
		kbuf_unref(resp);
		return SLUICE_ERR_BAD_MSG;
	}
	if (err) {
		if (err == SLUICE_ERR_MEMBER_ID_REQUIRED) {
			wire_str_copy(mid, g->member_id, sizeof(g->member_id));
			g->need_join = true;
		} else if (err == SLUICE_ERR_UNKNOWN_MEMBER_ID ||
			   err == SLUICE_ERR_ILLEGAL_GENERATION) {
			g->member_id[0] = '\0';
			g->need_join = true;
		} else if (err == SLUICE_ERR_REBALANCE_IN_PROGRESS) {
			g->need_join = true;
		} else if (err == SLUICE_ERR_FENCED_INSTANCE_ID) {
			g->fatal_err = err;
		} else {
			coord_error(g, err);
		}
		kbuf_unref(resp);
		return err;
	}
	wire_str_copy(mid, g->member_id, sizeof(g->member_id));
	g->generation = gen;
	if (!wire_str_copy(proto, protocol, sizeof(protocol)))
		protocol[0] = '\0';
	is_leader = leader.len == mid.len && leader.len > 0 && !memcmp(leader.ptr, mid.ptr, (size_t)mid.len);
	/* SyncGroup */
	r = kreq_new(&g->coord, API_SYNC_GROUP, (int16_t)sver);
	if (!r) {
		kbuf_unref(resp);
		return SLUICE_ERR_NO_MEMORY;
	}
	wire_w_str(&r->wb, g->conf->group_id);
	wire_w_i32(&r->wb, g->generation);
	wire_w_str(&r->wb, g->member_id);
	if (sver >= 3)
		wire_w_str(&r->wb, g->instance_id);
	if (is_leader) {
		rc = leader_assign(g, r, protocol, &rd, nmem, ver);
		if (rc) {
			kbuf_unref(resp);
			kreq_free(r);
			return rc;
		}
	} else {
		wire_w_i32(&r->wb, 0);
	}
	kbuf_unref(resp);
	resp = NULL;
	r->extra_timeout_ms = g->conf->max_poll_interval_ms;
	rc = coord_call(g, r, &resp, timeout_ms(g) + g->conf->max_poll_interval_ms);
	if (rc)
		return rc;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (sver >= 1)
		wire_rd_i32(&rd);
	err = wire_rd_i16(&rd);
	{
		wire_str a = wire_rd_bytes(&rd);

		if (rd.err) {
			kbuf_unref(resp);
			return SLUICE_ERR_BAD_MSG;
		}
		if (err) {
			kbuf_unref(resp);
			member_error(g, err);
			return err;
		}
		rc = grpproto_assignment_decode(a.ptr, a.len > 0 ? (size_t)a.len : 0, &l);
	}
	kbuf_unref(resp);
	if (rc)
		return rc < 0 ? SLUICE_ERR_NO_MEMORY : SLUICE_ERR_BAD_MSG;
	grpproto_tplist_sort(&l);
	cnt = grpproto_tplist_count(&l);
	committed = malloc((size_t)(cnt ? cnt : 1) * sizeof(*committed));
	if (!committed) {
		grpproto_tplist_free(&l);
		return SLUICE_ERR_NO_MEMORY;
	}
	for (int i = 0; i < cnt; i++)
		committed[i] = -1;
	if (cnt && (rc = fetch_committed(g, &l, committed))) {
		grpproto_tplist_free(&l);
		free(committed);
		g->need_join = true;
		return rc;
	}
	atomic_store(&g->hold, true); /* until ASSIGNED has been served */
	for (int i = 0, k = 0; i < l.n; i++)
		for (int j = 0; j < l.t[i].nparts; j++, k++)
			consumer_grp_assign(g->c, l.t[i].topic, l.t[i].parts[j],
					    committed[k] >= 0 ? committed[k] : SLUICE_OFFSET_INVALID,
					    committed[k]);
	free(committed);
	g->in_group = true;
	post_event(g, SLUICE_REBALANCE_ASSIGNED, &l);
	return 0;
}

static void heartbeat(struct cgrp *g)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver = kconn_version(&g->coord, API_HEARTBEAT, 0, 3);
	wire_rd rd;
	int16_t err;

	if (ver < 0)
		return;
	r = kreq_new(&g->coord, API_HEARTBEAT, (int16_t)ver);
	if (!r)
		return;
	wire_w_str(&r->wb, g->conf->group_id);
	wire_w_i32(&r->wb, g->generation);
	wire_w_str(&r->wb, g->member_id);
	if (ver >= 3)
		wire_w_str(&r->wb, g->instance_id);
	if (coord_call(g, r, &resp, timeout_ms(g)))
		return;
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 1)
		wire_rd_i32(&rd);
	err = wire_rd_i16(&rd);
	kbuf_unref(resp);
	if (!rd.err && err)
		member_error(g, err);
}

/* LeaveGroup (v3: a one-member batch).  Dynamic members only: a static
 * member never leaves on close (Kafka semantics). */
static void leave_group(struct cgrp *g)
{
	struct kreq *r;
	struct kbuf *resp = NULL;
	int ver;

	if (!g->have_coord || !kconn_up(&g->coord) || !g->member_id[0])
		return;
	ver = kconn_version(&g->coord, API_LEAVE_GROUP, 0, 3);
	if (ver < 0)
		return;
	r = kreq_new(&g->coord, API_LEAVE_GROUP, (int16_t)ver);
	if (!r)
		return;
	wire_w_str(&r->wb, g->conf->group_id);
	if (ver >= 3) { /* KIP-345: a batch of members */
		wire_w_i32(&r->wb, 1);
		wire_w_str(&r->wb, g->member_id);
		wire_w_str(&r->wb, g->instance_id);
	} else {
		wire_w_str(&r->wb, g->member_id);
	}
	if (!coord_call(g, r, &resp, timeout_ms(g) < 5000 ? timeout_ms(g) : 5000))
		kbuf_unref(resp);
}

static void wait_until(struct cgrp *g, int64_t until)
{
	if (g->terminate || g->commit_req != g->commit_done)
		return;
	cond_wait_until(g, until);
}

static void *cgrp_main(void *arg)
{
	struct cgrp *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->terminate) {
		int64_t now = kclock_ms(), next;
		uint64_t want;
		int rc;

		if (g->fatal_err) {
			/* fenced: no more group I/O until destroy */
			if (!g->fatal_posted) {
				pthread_mutex_unlock(&g->lock);
				enter_fatal(g);
				pthread_mutex_lock(&g->lock);
			}
			if (g->commit_req != g->commit_done) {
				g->commit_err = g->fatal_err;
				g->commit_done = g->commit_req;
				pthread_cond_broadcast(&g->cond);
			}
			if (!g->terminate)
				pthread_cond_wait(&g->cond, &g->lock);
			continue;
		}
		if (!g->nsubs || now < g->backoff_until) {
			wait_until(g, g->nsubs ? g->backoff_until : now + 1000);
			if (!g->nsubs && g->commit_req != g->commit_done) {
				g->commit_err = SLUICE_ERR_STATE;
				g->commit_done = g->commit_req;
				pthread_cond_broadcast(&g->cond);
			}
			continue;
		}
		pthread_mutex_unlock(&g->lock);
		if (now >= g->next_meta) {
			refresh_subscription(g);
			g->next_meta = kclock_ms() + g->conf->metadata_refresh_ms;
		}
		if (!g->have_coord && (rc = find_coordinator(g))) {
			pthread_mutex_lock(&g->lock);
			g->backoff_until = kclock_ms() + (g->conf->retry_backoff_ms > 500 ? g->conf->retry_backoff_ms : 500);
			continue;
		}
		pthread_mutex_lock(&g->lock);
		if (g->sub_version != g->joined_sub_version)
			g->need_join = true;
		pthread_mutex_unlock(&g->lock);
		if (g->need_join) {
			revoke(g, false);
			if (g->fatal_err) {
				pthread_mutex_lock(&g->lock);
				continue;
			}
			g->need_join = false;
			rc = join_group(g);
			pthread_mutex_lock(&g->lock);
			if (rc && !g->need_join) {
				g->need_join = true;
				g->backoff_until = kclock_ms() + g->conf->retry_backoff_ms;
			}
			g->next_hb = kclock_ms() + g->conf->heartbeat_interval_ms;
			if (!g->next_commit)
				g->next_commit = kclock_ms() + g->conf->auto_commit_interval_ms;
			continue;
		}
		pthread_mutex_lock(&g->lock);
		want = g->commit_req;
		pthread_mutex_unlock(&g->lock);
		now = kclock_ms();
		if (want != g->commit_done ||
		    (g->conf->auto_commit && now >= g->next_commit)) {
			rc = commit_now(g);
			g->next_commit = kclock_ms() + g->conf->auto_commit_interval_ms;
			pthread_mutex_lock(&g->lock);
			if (want != g->commit_done) {
				g->commit_err = rc;
				g->commit_done = want;
				pthread_cond_broadcast(&g->cond);
			}
			pthread_mutex_unlock(&g->lock);
		}
		if (kclock_ms() >= g->next_hb && !g->need_join) {
			heartbeat(g);
			g->next_hb = kclock_ms() + g->conf->heartbeat_interval_ms;
		}
		pthread_mutex_lock(&g->lock);
		if (g->need_join || !g->have_coord)
			continue;
		next = g->next_hb;
		if (g->conf->auto_commit && g->next_commit < next)
			next = g->next_commit;
		if (g->next_meta < next)
			next = g->next_meta;
		wait_until(g, next);
	}
	pthread_mutex_unlock(&g->lock);
	/* close: the revocation hook (cgrp_destroy runs the callback), then
	 * LeaveGroup, except for a static member: like Kafka's, it keeps its
	 * partitions until session.timeout.ms so that a restart with the same
	 * group.instance.id gets them back without a rebalance of the others */
	if (g->in_group && !g->fatal_err) {
		revoke(g, false);
		if (!g->instance_id)
			leave_group(g);
	}
	pthread_mutex_lock(&g->lock);
	g->commit_err = SLUICE_ERR_DESTROYED;
	g->commit_done = g->commit_req;
	g->exited = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* ---- public side ---- */

struct cgrp *cgrp_new(sluice_consumer_t *c)
{
	struct cgrp *g = calloc(1, sizeof(*g));
	sluice_conf_t *ac;

	if (!g)
		return NULL;
	g->c = c;
	g->conf = consumer_grp_conf(c);
	g->coord_conf = *g->conf;
	g->generation = -1;
	g->need_join = true;
	g->instance_id = g->conf->group_instance_id[0] ? g->conf->group_instance_id : NULL;
	atomic_store(&g->hold, true); /* nothing to hand out before ASSIGNED */
	ac = sluice_conf_dup(g->conf);
	if (!ac || !(g->admin = sluice_admin_new(ac, NULL, 0))) {
		sluice_conf_destroy(ac);
		free(g);
		return NULL;
	}
	kconn_init(&g->boot, g->conf);
	kconn_init(&g->coord, &g->coord_conf);
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->serve_lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	if (pthread_create(&g->thr, NULL, cgrp_main, g)) {
		sluice_admin_destroy(g->admin);
		pthread_mutex_destroy(&g->lock);
		pthread_mutex_destroy(&g->serve_lock);
		pthread_cond_destroy(&g->cond);
		free(g);
		return NULL;
	}
	g->started = true;
	return g;
}

void cgrp_destroy(struct cgrp *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->terminate = true;
	pthread_cond_broadcast(&g->cond);
	/* the thread's last revoke waits for its REVOKED callback: run it
	 * here, on the caller's thread */
	while (!g->exited) {
		if (atomic_load(&g->pending)) {
			pthread_mutex_unlock(&g->lock);
			cgrp_serve(g, NULL, 0);
			pthread_mutex_lock(&g->lock);
			continue;
		}
		pthread_cond_wait(&g->cond, &g->lock);
	}
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thr, NULL);
	kconn_close(&g->boot, SLUICE_ERR_DESTROYED, NULL);
	kconn_close(&g->coord, SLUICE_ERR_DESTROYED, NULL);
	sluice_admin_destroy(g->admin);
	while (g->ev_head) {
		struct cgrp_event *e = g->ev_head;

		g->ev_head = e->next;
		grpproto_tplist_free(&e->parts);
		free(e);
	}
	free_strv(g->subs, g->nsubs);
	free_strv(g->topics, g->ntopics);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->serve_lock);
	pthread_cond_destroy(&g->cond);
	free(g);
}

sluice_err_t cgrp_subscribe(struct cgrp *g, const char *const *topics, size_t n)
{
	char **v = calloc(n, sizeof(char *));

	if (!v)
		return SLUICE_ERR_NO_MEMORY;
	for (size_t i = 0; i < n; i++) {
		if (!topics[i] || !*topics[i]) {
			free_strv(v, (int)i);
			return SLUICE_ERR_INVALID_ARG;
		}
		if (topics[i][0] == '^') {
			regex_t re;

			if (regcomp(&re, topics[i], REG_EXTENDED | REG_NOSUB)) {
				free_strv(v, (int)i);
				return SLUICE_ERR_INVALID_ARG;
			}
			regfree(&re);
		}
		v[i] = strdup(topics[i]);
		if (!v[i]) {
			free_strv(v, (int)i);
			return SLUICE_ERR_NO_MEMORY;
		}
	}
	pthread_mutex_lock(&g->lock);
	free_strv(g->subs, g->nsubs);
	g->subs = v;
	g->nsubs = (int)n;
	g->next_meta = 0; /* match now */
	g->sub_version++;
	g->backoff_until = 0;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return SLUICE_ERR_NO_ERROR;
}

sluice_err_t cgrp_commit(struct cgrp *g, bool sync)
{
	uint64_t ticket;
	sluice_err_t err;

	pthread_mutex_lock(&g->lock);
	ticket = ++g->commit_req;
	pthread_cond_broadcast(&g->cond);
	if (!sync) {
		pthread_mutex_unlock(&g->lock);
		return SLUICE_ERR_NO_ERROR;
	}
	while (g->commit_done < ticket)
		pthread_cond_wait(&g->cond, &g->lock);
	err = g->commit_err;
	pthread_mutex_unlock(&g->lock);
	return err;
}
