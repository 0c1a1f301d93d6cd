/*
 * api_meta.c — Metadata (v0-8), CreateTopics (v0-4), DeleteTopics (v0-3).
 *
 * Topic creation and deletion change the SQLite catalogue, so their replies
 * wait for the coordinator thread's commit (a topic a client was told about
 * survives a crash); the loop never calls SQLite itself.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "kerr.h"
#include "topics.h"
#include "txn_api.h"

#define MAX_PARTITIONS 100000
#define MAX_TOPIC_CONFIGS 64

static server *srv_of(req *r)
{
	return r->w->srv;
}

/* ---- catalogue jobs ---- */

/* One SQLite job on behalf of a request: inserts created topics or deletes
 * deleted ones, then calls `reply` on the request's loop. */
typedef struct cat_topic {
	char *name;        /* owned: as the client sent it (echoed back) */
	topic *t;          /* referenced, or NULL */
	bool act;          /* created/deleted by this request: update the catalogue */
	int16_t err;
	/* Owned, or NULL.  Kept out of line: a Metadata or CreateTopics
	 * request names up to a few bytes per topic, and a struct of 1.5 KB
	 * per name let 400 KB of names take 330 MB. */
	char *msg;         /* the error's message (set_msg), or NULL */
	int nconf;
	char **keys, **values; /* MAX_TOPIC_CONFIGS each once a config is given */
} cat_topic;

typedef struct cat_job {
	coord_job job;
	req *r;            /* referenced */
	bool insert;       /* true: insert created topics; false: delete */
	int n;
	cat_topic *topics; /* owned */
	void (*reply)(struct cat_job *cj);
	/* Metadata: what the client asked for */
	bool all;
} cat_job;

static void cat_job_free(cat_job *cj)
{
	for (int i = 0; i < cj->n; i++) {
		cat_topic *ct = &cj->topics[i];

		if (ct->t)
			topic_unref(ct->t);
		free(ct->name);
		free(ct->msg);
		for (int k = 0; k < ct->nconf; k++) {
			free(ct->keys[k]);
			free(ct->values[k]);
		}
		free(ct->keys);
		free(ct->values);
	}
	free(cj->topics);
	free(cj);
}

/* The message of ct's error (no memory: none, the code still goes out). */
static void set_msg(cat_topic *ct, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_msg(cat_topic *ct, const char *fmt, ...)
{
	char buf[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(ct->msg);
	ct->msg = strdup(buf);
}

static int cat_run(coord_job *job, sqlite3 *db)
{
	cat_job *cj = (cat_job *)job;

	for (int i = 0; i < cj->n; i++) {
		cat_topic *ct = &cj->topics[i];
		int rc;

		if (!ct->act || ct->err)
			continue;
		if (cj->insert)
			rc = coord_topic_insert(db, ct->name, ct->t->nparts, ct->t->id,
						(const char *const *)ct->keys,
						(const char *const *)ct->values, ct->nconf);
		else
			rc = coord_topic_delete(db, ct->name);
		/* its half messages can never be appended: discard them in the
		 * same commit as the catalogue row (a failure is logged; a
		 * commit of one then finds the topic gone and discards it) */
		if (!cj->insert && rc == SQLITE_OK)
			(void)txn_api_drop_topic(db, ct->name);
		if (rc != SQLITE_OK) {
			ct->err = KERR_KAFKA_STORAGE_ERROR;
			set_msg(ct, "catalogue update failed: %s", sqlite3_errstr(rc));
			blog(BLOG_ERROR, "%s topic %s in sluice.db: %s", cj->insert ? "insert" : "delete",
			     ct->name, sqlite3_errstr(rc));
		}
	}
	return SQLITE_OK;
}

static void cat_done(loop_task *t)
{
	cat_job *cj = (cat_job *)((char *)t - offsetof(cat_job, job.done));

	for (int i = 0; i < cj->n; i++) {
		cat_topic *ct = &cj->topics[i];

		if (cj->job.rc != SQLITE_OK && !ct->err && ct->act) {
			ct->err = KERR_KAFKA_STORAGE_ERROR;
			set_msg(ct, "catalogue commit failed: %s", sqlite3_errstr(cj->job.rc));
		}
		/* A created topic that could not be recorded is taken back, so
		 * memory and catalogue agree. */
		if (cj->insert && ct->act && ct->err)
			topics_delete(srv_of(cj->r)->topics, ct->name);
	}
	if (cj->r->conn)
		cj->reply(cj);
	req_finish(cj->r);
	req_unref(cj->r); /* the job's reference, taken in cat_submit */
	cat_job_free(cj);
}

/* Copies the requested name (any length: it is echoed in the answer).
 * Returns false for a null name or no memory (name is then ""). */
static bool set_name(cat_topic *ct, wire_str s)
{
	size_t n = s.len > 0 ? (size_t)s.len : 0;

	free(ct->name);
	ct->name = malloc(n + 1);
	if (!ct->name) {
		ct->name = NULL;
		return false;
	}
	if (n)
		memcpy(ct->name, s.ptr, n);
	ct->name[n] = '\0';
	return s.len >= 0 && strlen(ct->name) == n;
}

static const char *name_of(const cat_topic *ct)
{
	return ct->name ? ct->name : "";
}

static cat_job *cat_job_new(req *r, int n, bool insert, void (*reply)(cat_job *))
{
	cat_job *cj = calloc(1, sizeof(*cj));

	if (!cj)
		return NULL;
	cj->topics = calloc((size_t)(n ? n : 1), sizeof(*cj->topics));
	if (!cj->topics) {
		free(cj);
		return NULL;
	}
	cj->n = n;
	cj->r = r;
	cj->insert = insert;
	cj->reply = reply;
	cj->job.run = cat_run;
	cj->job.w = r->w;
	cj->job.done.fn = cat_done;
	return cj;
}

static void cat_submit(cat_job *cj)
{
	req_ref(cj->r); /* dropped in cat_done */
	coord_submit(srv_of(cj->r)->coord, &cj->job);
}

/* ---- Metadata ---- */

static void write_partitions(wire_buf *b, const topic *t, int16_t ver, int32_t node)
{
	wire_w_i32(b, t->nparts);
	for (int32_t p = 0; p < t->nparts; p++) {
		wire_w_i16(b, KERR_NONE);
		wire_w_i32(b, p);
		wire_w_i32(b, node);        /* leader */
		if (ver >= 7)
			wire_w_i32(b, 0);   /* leader epoch */
		wire_w_i32(b, 1);           /* replicas */
		wire_w_i32(b, node);
		wire_w_i32(b, 1);           /* isr */
		wire_w_i32(b, node);
		if (ver >= 5)
			wire_w_i32(b, 0);   /* offline replicas */
	}
}

static void write_topic(wire_buf *b, int16_t ver, int16_t err, const char *name, const topic *t,
			int32_t node)
{
	wire_w_i16(b, err);
	wire_w_str(b, name);
	if (ver >= 1)
		wire_w_i8(b, 0); /* is_internal */
	if (t)
		write_partitions(b, t, ver, node);
	else
		wire_w_i32(b, 0);
	if (ver >= 8)
		wire_w_i32(b, INT32_MIN); /* authorized operations: not computed */
}

static void metadata_header(req *r)
{
	server *srv = srv_of(r);
	const config *cfg = srv->cfg;
	wire_buf *b = &r->resp;
	int16_t ver = r->api_version;
	const char *host = cfg->advertised_host[0] ? cfg->advertised_host : cfg->listen_host;

	if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
		host = "127.0.0.1";
	if (ver >= 3)
		wire_w_i32(b, 0); /* throttle */
	wire_w_i32(b, 1);         /* brokers */
	wire_w_i32(b, cfg->node_id);
	wire_w_str(b, host);
	wire_w_i32(b, srv->port);
	if (ver >= 1)
		wire_w_str(b, NULL); /* rack */
	if (ver >= 2)
		wire_w_str(b, cfg->cluster_id);
	if (ver >= 1)
		wire_w_i32(b, cfg->node_id); /* controller */
}

static void metadata_all(req *r)
{
	topic **list;
	int n;

	if (topics_list(srv_of(r)->topics, &list, &n) < 0) {
		r->resp.oom = true;
		return;
	}
	wire_w_i32(&r->resp, n);
	for (int i = 0; i < n; i++)
		write_topic(&r->resp, r->api_version, KERR_NONE, list[i]->name, list[i],
			    srv_of(r)->cfg->node_id);
	topics_list_free(list, n);
}

static void metadata_reply(cat_job *cj)
{
	req *r = cj->r;
	int32_t node = srv_of(r)->cfg->node_id;

	metadata_header(r);
	if (cj->all) {
		metadata_all(r);
	} else {
		wire_w_i32(&r->resp, cj->n);
		for (int i = 0; i < cj->n; i++) {
			cat_topic *ct = &cj->topics[i];

			write_topic(&r->resp, r->api_version, ct->err, name_of(ct), ct->err ? NULL : ct->t,
				    node);
		}
	}
	if (r->api_version >= 8)
		wire_w_i32(&r->resp, INT32_MIN); /* cluster authorized operations */
}

int api_metadata(req *r, wire_rd *rd)
{
	server *srv = srv_of(r);
	int16_t ver = r->api_version;
	bool allow_auto = true, need_job = false;
	int32_t n = wire_rd_array(rd, 2);
	const uint8_t *names_at = rd->p;
	cat_job *cj;

	for (int32_t i = 0; i < n; i++)
		(void)wire_rd_str(rd);
	if (ver >= 4)
		allow_auto = wire_rd_i8(rd) != 0;
	if (ver >= 8) {
		(void)wire_rd_i8(rd);
		(void)wire_rd_i8(rd);
	}
	if (rd->err)
		return API_MALFORMED;
	cj = cat_job_new(r, n > 0 ? n : 0, true, metadata_reply);
	if (!cj)
		goto oom;
	/* v0: an empty list means all topics; v1+: null means all. */
	cj->all = n < 0 || (ver == 0 && n == 0);
	wire_rd_init(rd, names_at, (size_t)(rd->end - names_at));
	for (int32_t i = 0; i < n; i++) {
		cat_topic *ct = &cj->topics[i];
		wire_str s = wire_rd_str(rd);
		char err[160];
		int rc;

		if (!set_name(ct, s) || !topics_valid_name(ct->name, strlen(ct->name))) {
			ct->err = KERR_INVALID_TOPIC_EXCEPTION;
			continue;
		}
		ct->t = topics_get(srv->topics, ct->name, strlen(ct->name));
		if (ct->t)
			continue;
		if (!srv->cfg->auto_create_topics || !allow_auto) {
			ct->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			continue;
		}
		rc = topics_create(srv->topics, ct->name, srv->cfg->num_partitions,
				   &srv->cfg->topic_defaults, NULL, &ct->t, err, sizeof(err));
		if (rc == TOPICS_E_EXISTS) {
			/* created by someone else meanwhile */
			ct->t = topics_get(srv->topics, ct->name, strlen(ct->name));
			if (!ct->t)
				ct->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			continue;
		}
		if (rc != TOPICS_OK) {
			ct->err = rc == TOPICS_E_DELETING ? KERR_UNKNOWN_TOPIC_OR_PARTITION
			        : rc == TOPICS_E_INVALID_NAME ? KERR_INVALID_TOPIC_EXCEPTION
							      : KERR_KAFKA_STORAGE_ERROR;
			continue;
		}
		blog(BLOG_INFO, "auto-created topic %s with %d partition(s)", ct->name,
		     srv->cfg->num_partitions);
		need_job = true;
		ct->act = true;
	}
	if (need_job) {
		/* the reply waits until the new topics are in the catalogue */
		cat_submit(cj);
		return API_OK;
	}
	metadata_reply(cj);
	cat_job_free(cj);
	req_finish(r);
	return API_OK;
oom:
	r->resp.oom = true;
	req_finish(r);
	return API_OK;
}

/* ---- CreateTopics ---- */

static void create_reply(cat_job *cj)
{
	req *r = cj->r;

	if (r->api_version >= 2)
		wire_w_i32(&r->resp, 0); /* throttle */
	wire_w_i32(&r->resp, cj->n);
	for (int i = 0; i < cj->n; i++) {
		cat_topic *ct = &cj->topics[i];

		wire_w_str(&r->resp, name_of(ct));
		wire_w_i16(&r->resp, ct->err);
		if (r->api_version >= 1)
			wire_w_str(&r->resp, ct->err ? ct->msg : NULL);
	}
}

static void fail_topic(cat_topic *ct, int16_t err, const char *fmt, const char *arg)
{
	ct->err = err;
	set_msg(ct, fmt, arg);
}

/* Parses one CreatableTopic; validation problems go into ct, only framing
 * errors make the request malformed. */
static void create_parse_topic(req *r, wire_rd *rd, cat_topic *ct, int32_t *nparts, topic_conf *conf)
{
	const config *cfg = srv_of(r)->cfg;
	wire_str name = wire_rd_str(rd);
	int32_t np = wire_rd_i32(rd);
	int16_t rf = wire_rd_i16(rd);
	int32_t nassign = wire_rd_array(rd, 8);
	int32_t nconf;
	char cerr[400];

	if (!set_name(ct, name))
		fail_topic(ct, KERR_INVALID_TOPIC_EXCEPTION, "%s", "topic name is null");
	for (int32_t i = 0; i < nassign; i++) {
		int32_t nb;

		(void)wire_rd_i32(rd); /* partition index */
		nb = wire_rd_array(rd, 4);
		for (int32_t k = 0; k < nb; k++)
			if (wire_rd_i32(rd) != cfg->node_id && !ct->err)
				fail_topic(ct, KERR_INVALID_REPLICA_ASSIGNMENT, "%s",
					   "replica assignment names a broker other than this one");
	}
	*conf = cfg->topic_defaults;
	nconf = wire_rd_array(rd, 4);
	for (int32_t i = 0; i < nconf && !rd->err; i++) {
		wire_str k = wire_rd_str(rd), v = wire_rd_str(rd);
		char key[128], val[128], err[CONFIG_ERRLEN];

		if (ct->err)
			continue;
		if (!wire_str_copy(k, key, sizeof(key)) || !wire_str_copy(v, val, sizeof(val))) {
			fail_topic(ct, KERR_INVALID_CONFIG, "%s", "config key or value null or too long");
			continue;
		}
		if (topic_conf_set(conf, key, val, err, sizeof(err)) < 0) {
			fail_topic(ct, KERR_INVALID_CONFIG, "%s", err);
			continue;
		}
		if (ct->nconf == MAX_TOPIC_CONFIGS) {
			fail_topic(ct, KERR_INVALID_CONFIG, "%s", "too many configs");
			continue;
		}
		if (!ct->keys) {
			ct->keys = calloc(MAX_TOPIC_CONFIGS, sizeof(*ct->keys));
			ct->values = calloc(MAX_TOPIC_CONFIGS, sizeof(*ct->values));
			if (!ct->keys || !ct->values) {
				free(ct->keys);
				free(ct->values);
				ct->keys = ct->values = NULL;
				r->resp.oom = true;
				continue;
			}
		}
		ct->keys[ct->nconf] = strdup(key);
		ct->values[ct->nconf] = strdup(val);
		ct->nconf++;
		if (!ct->keys[ct->nconf - 1] || !ct->values[ct->nconf - 1])
			r->resp.oom = true;
	}
	if (rd->err || ct->err)
		return;
	if (nassign > 0) {
		if (np != -1 || rf != -1) {
			fail_topic(ct, KERR_INVALID_REQUEST, "%s",
				   "give either assignments or partitions/replication factor, not both");
			return;
		}
		np = nassign;
	}
	if (np == -1)
		np = cfg->num_partitions;
	if (np < 1 || np > MAX_PARTITIONS) {
		fail_topic(ct, KERR_INVALID_PARTITIONS, "%s", "number of partitions must be 1..100000");
		return;
	}
	if (rf != -1 && rf != 1 && nassign == 0) {
		fail_topic(ct, KERR_INVALID_REPLICATION_FACTOR, "%s",
			   "replication factor must be 1 (single broker)");
		return;
	}
	if (!topic_conf_check(conf, cerr, sizeof(cerr))) {
		fail_topic(ct, KERR_INVALID_CONFIG, "%s", cerr);
		return;
	}
	if (!topics_valid_name(name_of(ct), strlen(name_of(ct))))
		fail_topic(ct, KERR_INVALID_TOPIC_EXCEPTION, "%s",
			   "topic name must be 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'");
	*nparts = np;
}

/* By name, then by position in the request (the array's order). */
static int cmp_by_name(const void *a, const void *b)
{
	const cat_topic *x = *(const cat_topic *const *)a, *y = *(const cat_topic *const *)b;
	int c = strcmp(name_of(x), name_of(y));

	return c ? c : (x > y) - (x < y);
}

/* Fails every repeat of a name after its first appearance.  Sorted, not
 * compared pairwise: a request of 40,000 names held its loop for seconds. */
static void fail_repeats(cat_job *cj)
{
	cat_topic **v;

	if (cj->n < 2)
		return;
	v = malloc(sizeof(*v) * (size_t)cj->n);
	if (!v) {
		for (int i = 0; i < cj->n; i++)
			if (!cj->topics[i].err)
				fail_topic(&cj->topics[i], KERR_UNKNOWN_SERVER_ERROR, "%s",
					   "out of memory checking the request");
		return;
	}
	for (int i = 0; i < cj->n; i++)
		v[i] = &cj->topics[i];
	qsort(v, (size_t)cj->n, sizeof(*v), cmp_by_name);
	for (int i = 1; i < cj->n; i++)
		if (!v[i]->err && !strcmp(name_of(v[i - 1]), name_of(v[i])))
			fail_topic(v[i], KERR_INVALID_REQUEST, "topic '%s' appears twice in the request",
				   name_of(v[i]));
	free(v);
}

int api_create_topics(req *r, wire_rd *rd)
{
	server *srv = srv_of(r);
	int32_t n = wire_rd_array(rd, 12);
	int32_t *nparts = NULL;
	topic_conf *confs = NULL;
	bool validate_only = false, need_job = false;
	cat_job *cj = cat_job_new(r, n > 0 ? n : 0, true, create_reply);

	if (!cj || !(nparts = calloc((size_t)(n > 0 ? n : 1), sizeof(*nparts))) ||
	    !(confs = calloc((size_t)(n > 0 ? n : 1), sizeof(*confs)))) {
		r->resp.oom = true;
		goto out;
	}
	for (int32_t i = 0; i < n && !rd->err; i++)
		create_parse_topic(r, rd, &cj->topics[i], &nparts[i], &confs[i]);
	(void)wire_rd_i32(rd); /* timeout_ms */
	if (r->api_version >= 1)
		validate_only = wire_rd_i8(rd) != 0;
	if (rd->err) {
		cat_job_free(cj);
		free(nparts);
		free(confs);
		return API_MALFORMED;
	}
	fail_repeats(cj);
	for (int32_t i = 0; i < n; i++) {
		cat_topic *ct = &cj->topics[i];
		topic_overrides ov;
		char err[160];
		int rc;

		if (ct->err)
			continue;
		if (validate_only) {
			topic *t = topics_get(srv->topics, ct->name, strlen(ct->name));

			if (t) {
				fail_topic(ct, KERR_TOPIC_ALREADY_EXISTS, "topic '%s' already exists", ct->name);
				topic_unref(t);
			}
			continue;
		}
		ov.keys = (const char *const *)ct->keys;
		ov.values = (const char *const *)ct->values;
		ov.n = ct->nconf;
		rc = topics_create(srv->topics, ct->name, nparts[i], &confs[i], &ov, &ct->t, err, sizeof(err));
		if (rc != TOPICS_OK) {
			ct->err = rc == TOPICS_E_EXISTS || rc == TOPICS_E_DELETING ? KERR_TOPIC_ALREADY_EXISTS
				: rc == TOPICS_E_INVALID_NAME ? KERR_INVALID_TOPIC_EXCEPTION
							      : KERR_KAFKA_STORAGE_ERROR;
			set_msg(ct, "%s", err);
			continue;
		}
		blog(BLOG_INFO, "created topic %s with %d partition(s)", ct->name, nparts[i]);
		ct->act = true;
		need_job = true;
	}
	free(nparts);
	free(confs);
	nparts = NULL;
	confs = NULL;
	if (need_job) {
		cat_submit(cj);
		return API_OK;
	}
	create_reply(cj);
out:
	if (cj)
		cat_job_free(cj);
	free(nparts);
	free(confs);
	req_finish(r);
	return API_OK;
}

/* ---- DeleteTopics ---- */

static void delete_reply(cat_job *cj)
{
	req *r = cj->r;

	if (r->api_version >= 1)
		wire_w_i32(&r->resp, 0); /* throttle */
	wire_w_i32(&r->resp, cj->n);
	for (int i = 0; i < cj->n; i++) {
		wire_w_str(&r->resp, name_of(&cj->topics[i]));
		wire_w_i16(&r->resp, cj->topics[i].err);
	}
}

int api_delete_topics(req *r, wire_rd *rd)
{
	server *srv = srv_of(r);
	int32_t n = wire_rd_array(rd, 2);
	const uint8_t *names_at = rd->p;
	bool need_job = false;
	cat_job *cj;

	for (int32_t i = 0; i < n; i++)
		(void)wire_rd_str(rd);
	(void)wire_rd_i32(rd); /* timeout_ms */
	if (rd->err)
		return API_MALFORMED;
	cj = cat_job_new(r, n > 0 ? n : 0, false, delete_reply);
	if (!cj) {
		r->resp.oom = true;
		req_finish(r);
		return API_OK;
	}
	wire_rd_init(rd, names_at, (size_t)(rd->end - names_at));
	for (int32_t i = 0; i < n; i++) {
		cat_topic *ct = &cj->topics[i];
		wire_str s = wire_rd_str(rd);

		if (!set_name(ct, s)) {
			ct->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			continue;
		}
		/* Keep a reference until the catalogue commit, so the files
		 * are removed only after the topic is gone from sluice.db. */
		ct->t = topics_get(srv->topics, ct->name, strlen(ct->name));
		if (!ct->t || topics_delete(srv->topics, ct->name) != TOPICS_OK) {
			ct->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
			continue;
		}
		blog(BLOG_INFO, "deleting topic %s", ct->name);
		ct->act = true;
		need_job = true;
	}
	if (need_job) {
		cat_submit(cj);
		return API_OK;
	}
	delete_reply(cj);
	cat_job_free(cj);
	req_finish(r);
	return API_OK;
}
