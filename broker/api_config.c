/*
 * api_config.c — DescribeConfigs (v0-3) and AlterConfigs (v0-1).
 *
 * Topic resources (type 2) list every topic key (config.h) with its value
 * and source (TOPIC_CONFIG when set at creation or by AlterConfigs,
 * DEFAULT_CONFIG otherwise), plus read-only counters of the produce gate
 * (sluice.produce.admitted / queued / rejected: docs/flow-control.md).
 * The broker resource (type 4) lists the broker keys, read-only: they come
 * from the config file and the command line.
 *
 * AlterConfigs replaces a topic's whole set of overrides, as Kafka's
 * (non-incremental) AlterConfigs does; keys not given return to the broker
 * defaults.  The new set is committed to sluice.db first, then applied to
 * the live topic (its logs and its gate) and answered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "blog.h"
#include "coord.h"
#include "kerr.h"
#include "topics.h"

#define RES_TOPIC 2
#define RES_BROKER 4
#define SRC_TOPIC 1
#define SRC_STATIC_BROKER 4
#define SRC_DEFAULT 5
#define TYPE_STRING 2
#define TYPE_LONG 5
#define MAX_OVERRIDES 64

static void write_entry(wire_buf *b, int16_t ver, const char *name, const char *value, bool read_only,
			int8_t source)
{
	wire_w_str(b, name);
	wire_w_str(b, value);
	wire_w_i8(b, read_only);
	if (ver == 0)
		wire_w_i8(b, source == SRC_DEFAULT);
	else
		wire_w_i8(b, source);
	wire_w_i8(b, 0);          /* is_sensitive */
	if (ver >= 1)
		wire_w_i32(b, 0); /* synonyms */
	if (ver >= 3) {
		wire_w_i8(b, TYPE_STRING);
		wire_w_str(b, NULL);
	}
}

/* Is key wanted?  keys == NULL (n < 0): all. */
static bool wanted(wire_rd keys, int32_t n, const char *key)
{
	if (n < 0)
		return true;
	for (int32_t i = 0; i < n; i++)
		if (wire_str_eq(wire_rd_str(&keys), key))
			return true;
	return false;
}

struct ov_find {
	const char *key;
	bool found;
};

static void ov_match(const char *key, const char *value, void *arg)
{
	struct ov_find *f = arg;

	if (!strcmp(key, f->key))
		f->found = true;
}

static void describe_topic(wire_buf *b, int16_t ver, topic *t, wire_rd keys, int32_t nkeys)
{
	topic_conf conf;
	gate_stats st;
	const char *key;
	char value[64];
	size_t at = wire_w_placeholder32(b);
	int32_t n = 0;

	topic_get_conf(t, &conf);
	for (int i = 0; topic_conf_get(&conf, i, &key, value, sizeof(value)); i++) {
		struct ov_find f = { key, false };

		if (!wanted(keys, nkeys, key))
			continue;
		topic_each_override(t, ov_match, &f);
		write_entry(b, ver, key, value, false, f.found ? SRC_TOPIC : SRC_DEFAULT);
		n++;
	}
	pthread_mutex_lock(&t->gate_lock);
	st = t->gate.stats;
	pthread_mutex_unlock(&t->gate_lock);
	{
		const char *names[] = { "sluice.produce.admitted", "sluice.produce.queued",
					"sluice.produce.rejected" };
		uint64_t vals[] = { st.admitted, st.queued, st.rejected };

		for (int i = 0; i < 3; i++) {
			if (!wanted(keys, nkeys, names[i]))
				continue;
			snprintf(value, sizeof(value), "%llu", (unsigned long long)vals[i]);
			write_entry(b, ver, names[i], value, true, SRC_DEFAULT);
			n++;
		}
	}
	wire_patch32(b, at, n);
}

static void describe_broker(wire_buf *b, int16_t ver, const config *cfg, wire_rd keys, int32_t nkeys)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	size_t at = wire_w_placeholder32(b);
	int32_t n = 0;

	if (!f) {
		b->oom = true;
		return;
	}
	config_print(f, cfg);
	fclose(f);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *eq = strchr(line, '=');

		if (!eq)
			continue;
		*eq = '\0';
		if (!wanted(keys, nkeys, line))
			continue;
		write_entry(b, ver, line, eq + 1, true, SRC_STATIC_BROKER);
		n++;
	}
	free(text);
	wire_patch32(b, at, n);
}

int api_describe_configs(req *r, wire_rd *rd)
{
	server *srv = r->w->srv;
	int16_t ver = r->api_version;
	wire_buf *b = &r->resp;
	wire_rd scan = *rd;
	int32_t nres = wire_rd_array(&scan, 7);
	char node[16];

	for (int32_t i = 0; i < nres && !scan.err; i++) {
		int32_t nk;

		(void)wire_rd_i8(&scan);
		(void)wire_rd_str(&scan);
		nk = wire_rd_array(&scan, 2);
		for (int32_t k = 0; k < nk; k++)
			(void)wire_rd_str(&scan);
	}
	if (ver >= 1)
		(void)wire_rd_i8(&scan);
	if (ver >= 3)
		(void)wire_rd_i8(&scan);
	if (scan.err)
		return API_MALFORMED;
	snprintf(node, sizeof(node), "%d", srv->cfg->node_id);
	wire_w_i32(b, 0); /* throttle */
	nres = wire_rd_array(rd, 7);
	wire_w_i32(b, nres > 0 ? nres : 0);
	for (int32_t i = 0; i < nres; i++) {
		int8_t type = wire_rd_i8(rd);
		wire_str name = wire_rd_str(rd);
		int32_t nk = wire_rd_array(rd, 2);
		wire_rd keys = *rd;
		topic *t = NULL;

		for (int32_t k = 0; k < nk; k++)
			(void)wire_rd_str(rd);
		if (type == RES_TOPIC && name.len > 0)
			t = topics_get(srv->topics, name.ptr, (size_t)name.len);
		if (type == RES_TOPIC && !t) {
			wire_w_i16(b, KERR_UNKNOWN_TOPIC_OR_PARTITION);
			wire_w_str(b, "unknown topic");
		} else if (type == RES_BROKER && name.len > 0 && !wire_str_eq(name, node)) {
			wire_w_i16(b, KERR_INVALID_REQUEST);
			wire_w_str(b, "unknown broker id");
		} else if (type != RES_TOPIC && type != RES_BROKER) {
			wire_w_i16(b, KERR_INVALID_REQUEST);
			wire_w_str(b, "only topic (2) and broker (4) resources are supported");
		} else {
			wire_w_i16(b, KERR_NONE);
			wire_w_str(b, NULL);
		}
		wire_w_i8(b, type);
		wire_w_strn(b, name.ptr ? name.ptr : "", (int16_t)(name.len > 0 ? name.len : 0));
		if (t)
			describe_topic(b, ver, t, keys, nk);
		else if (type == RES_BROKER && (name.len <= 0 || wire_str_eq(name, node)))
			describe_broker(b, ver, srv->cfg, keys, nk);
		else
			wire_w_i32(b, 0);
		if (t)
			topic_unref(t);
	}
	req_finish(r);
	return API_OK;
}

/* ---- AlterConfigs ---- */

typedef struct alter_res {
	int8_t type;
	char *name;            /* owned */
	int16_t err;
	char msg[256];
	topic *t;              /* referenced when the topic is altered */
	topic_conf conf;
	int n;
	char *keys[MAX_OVERRIDES], *vals[MAX_OVERRIDES];
} alter_res;

typedef struct alter_job {
	coord_job job;
	req *r;                /* referenced */
	int nres;
	alter_res *res;
	bool validate_only;
} alter_job;

static void alter_job_free(alter_job *aj)
{
	for (int i = 0; i < aj->nres; i++) {
		alter_res *a = &aj->res[i];

		free(a->name);
		if (a->t)
			topic_unref(a->t);
		for (int k = 0; k < a->n; k++) {
			free(a->keys[k]);
			free(a->vals[k]);
		}
	}
	free(aj->res);
	free(aj);
}

static int alter_run(coord_job *job, sqlite3 *db)
{
	alter_job *aj = (alter_job *)job;

	for (int i = 0; i < aj->nres; i++) {
		alter_res *a = &aj->res[i];
		sqlite3_stmt *st;
		int rc;

		if (a->err || !a->t)
			continue;
		rc = sqlite3_prepare_v2(db, "DELETE FROM topic_configs WHERE topic = ?", -1, &st, NULL);
		if (rc == SQLITE_OK) {
			sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
			rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
			sqlite3_finalize(st);
		}
		for (int k = 0; rc == SQLITE_OK && k < a->n; k++) {
			rc = sqlite3_prepare_v2(db, "INSERT INTO topic_configs(topic, key, value) VALUES(?, ?, ?)",
						-1, &st, NULL);
			if (rc != SQLITE_OK)
				break;
			sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, a->keys[k], -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, a->vals[k], -1, SQLITE_STATIC);
			rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
			sqlite3_finalize(st);
		}
		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

static void alter_reply(alter_job *aj)
{
	wire_buf *b = &aj->r->resp;

	wire_w_i32(b, 0);
	wire_w_i32(b, aj->nres);
	for (int i = 0; i < aj->nres; i++) {
		alter_res *a = &aj->res[i];

		wire_w_i16(b, a->err);
		wire_w_str(b, a->err ? a->msg : NULL);
		wire_w_i8(b, a->type);
		wire_w_str(b, a->name ? a->name : "");
	}
}

static void alter_done(loop_task *t)
{
	alter_job *aj = (alter_job *)((char *)t - offsetof(alter_job, job.done));

	for (int i = 0; i < aj->nres; i++) {
		alter_res *a = &aj->res[i];
		topic_overrides ov = { (const char *const *)a->keys, (const char *const *)a->vals, a->n };

		if (a->err || !a->t)
			continue;
		if (aj->job.rc != SQLITE_OK) {
			a->err = KERR_KAFKA_STORAGE_ERROR;
			snprintf(a->msg, sizeof(a->msg), "catalogue update failed: %s", sqlite3_errstr(aj->job.rc));
		} else if (topic_set_conf(a->t, &a->conf, &ov) < 0) {
			a->err = KERR_UNKNOWN_SERVER_ERROR;
			snprintf(a->msg, sizeof(a->msg), "cannot apply the new configuration");
		} else {
			blog(BLOG_INFO, "topic %s: configuration altered (%d override(s))", a->name, a->n);
		}
	}
	if (aj->r->conn)
		alter_reply(aj);
	req_finish(aj->r);
	req_unref(aj->r);
	alter_job_free(aj);
}

static void alter_parse_resource(req *r, wire_rd *rd, alter_res *a)
{
	server *srv = r->w->srv;
	wire_str name;
	int32_t n;

	a->type = wire_rd_i8(rd);
	name = wire_rd_str(rd);
	a->name = name.len >= 0 ? strndup(name.ptr, (size_t)name.len) : strdup("");
	n = wire_rd_array(rd, 4);
	a->conf = srv->cfg->topic_defaults;
	if (a->type == RES_TOPIC && a->name)
		a->t = topics_get(srv->topics, a->name, strlen(a->name));
	if (a->type == RES_BROKER) {
		a->err = KERR_INVALID_REQUEST;
		snprintf(a->msg, sizeof(a->msg), "broker settings are static: edit the config file and restart");
	} else if (a->type != RES_TOPIC) {
		a->err = KERR_INVALID_REQUEST;
		snprintf(a->msg, sizeof(a->msg), "only topic (2) resources can be altered");
	} else if (!a->t) {
		a->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
		snprintf(a->msg, sizeof(a->msg), "unknown topic");
	}
	for (int32_t i = 0; i < n && !rd->err; i++) {
		wire_str k = wire_rd_str(rd), v = wire_rd_str(rd);
		char key[128], val[128], err[CONFIG_ERRLEN];

		if (a->err || v.len < 0)
			continue; /* null value: back to the default */
		if (!wire_str_copy(k, key, sizeof(key)) || !wire_str_copy(v, val, sizeof(val))) {
			a->err = KERR_INVALID_CONFIG;
			snprintf(a->msg, sizeof(a->msg), "config key or value too long");
		} else if (topic_conf_set(&a->conf, key, val, err, sizeof(err)) < 0) {
			a->err = KERR_INVALID_CONFIG;
			snprintf(a->msg, sizeof(a->msg), "%s", err);
		} else if (a->n == MAX_OVERRIDES) {
			a->err = KERR_INVALID_CONFIG;
			snprintf(a->msg, sizeof(a->msg), "too many configs");
		} else {
			a->keys[a->n] = strdup(key);
			a->vals[a->n] = strdup(val);
			if (a->keys[a->n] && a->vals[a->n])
				a->n++;
		}
	}
	if (!a->err && !topic_conf_check(&a->conf, a->msg, sizeof(a->msg)))
		a->err = KERR_INVALID_CONFIG;
}

int api_alter_configs(req *r, wire_rd *rd)
{
	int32_t nres = wire_rd_array(rd, 7);
	alter_job *aj = calloc(1, sizeof(*aj));

	if (!aj || !(aj->res = calloc((size_t)(nres > 0 ? nres : 1), sizeof(*aj->res)))) {
		free(aj);
		return API_MALFORMED;
	}
	aj->nres = nres > 0 ? nres : 0;
	for (int32_t i = 0; i < nres && !rd->err; i++)
		alter_parse_resource(r, rd, &aj->res[i]);
	aj->validate_only = wire_rd_i8(rd) != 0;
	if (rd->err) {
		alter_job_free(aj);
		return API_MALFORMED;
	}
	aj->r = r;
	if (aj->validate_only) {
		alter_reply(aj);
		req_finish(r);
		alter_job_free(aj);
		return API_OK;
	}
	req_ref(r); /* dropped in alter_done */
	aj->job.run = alter_run;
	aj->job.w = r->w;
	aj->job.done.fn = alter_done;
	coord_submit(r->w->srv->coord, &aj->job);
	return API_OK;
}
