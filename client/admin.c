/*
 * admin.c — sluice_admin_t: blocking topic administration.
 *
 * Owns one kconn used only under `lock` by the calling thread (every call
 * is a request/response round trip; no background thread).  Each call
 * connects if needed and checks ApiVersions before picking a version; an
 * API the broker does not list gives SLUICE_ERR_UNSUPPORTED_FEATURE with
 * "not supported by this broker".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "kconn.h"

struct sluice_admin {
	struct sluice_conf *conf;
	pthread_mutex_t lock;
	struct kconn conn;
};

struct sluice_topic_list {
	size_t n;
	sluice_topic_info_t *t;
};

sluice_admin_t *sluice_admin_new(sluice_conf_t *conf, char *errstr, size_t errstr_size)
{
	struct sluice_admin *a;

	if (!conf) {
		conf_errf(errstr, errstr_size, "conf must not be NULL");
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		conf_errf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	a->conf = conf; /* owned from here on */
	pthread_mutex_init(&a->lock, NULL);
	kconn_init(&a->conn, conf);
	return a;
}

void sluice_admin_destroy(sluice_admin_t *a)
{
	if (!a)
		return;
	kconn_close(&a->conn, SLUICE_ERR_DESTROYED, NULL);
	pthread_mutex_destroy(&a->lock);
	sluice_conf_destroy(a->conf);
	free(a);
}

/* Connects if needed and returns the version to use, or a negative error
 * with errstr set. */
static int prepare(struct sluice_admin *a, int api, int vmin, int vmax, const char *what,
		   int timeout_ms, char *errstr, size_t errstr_size)
{
	int v;

	if (!kconn_up(&a->conn)) {
		int rc = kconn_connect(&a->conn, timeout_ms);

		if (rc) {
			conf_errf(errstr, errstr_size, "cannot reach the broker: %s", a->conn.errstr);
			return rc;
		}
	}
	v = kconn_version(&a->conn, api, vmin, vmax);
	if (v < 0) {
		conf_errf(errstr, errstr_size, "%s is not supported by this broker", what);
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	}
	return v;
}

static void set_errmsg(wire_str msg, sluice_err_t err, char *errstr, size_t errstr_size)
{
	if (msg.len > 0)
		conf_errf(errstr, errstr_size, "%s: %.*s", sluice_err2str(err), msg.len, msg.ptr);
	else
		conf_errf(errstr, errstr_size, "%s", sluice_err2str(err));
}

sluice_err_t sluice_admin_create_topic(sluice_admin_t *a, const char *topic, int32_t partitions,
				       const sluice_config_entry_t *configs, size_t nconfigs,
				       int timeout_ms, char *errstr, size_t errstr_size)
{
	struct kbuf *resp;
	struct kreq *r;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	wire_rd rd;

	if (!a || !topic || (nconfigs && !configs))
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	ver = prepare(a, API_CREATE_TOPICS, 0, 4, "CreateTopics", timeout_ms, errstr, errstr_size);
	if (ver < 0) {
		err = ver;
		goto out;
	}
	r = kreq_new(&a->conn, API_CREATE_TOPICS, (int16_t)ver);
	if (!r) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	wire_w_i32(&r->wb, 1);
	wire_w_str(&r->wb, topic);
	wire_w_i32(&r->wb, partitions);
	wire_w_i16(&r->wb, -1 /* broker default replication */);
	wire_w_i32(&r->wb, 0); /* assignments */
	wire_w_i32(&r->wb, (int32_t)nconfigs);
	for (size_t i = 0; i < nconfigs; i++) {
		wire_w_str(&r->wb, configs[i].name);
		wire_w_str(&r->wb, configs[i].value);
	}
	wire_w_i32(&r->wb, timeout_ms);
	if (ver >= 1)
		wire_w_i8(&r->wb, 0);
	rc = kconn_call(&a->conn, r, &resp, timeout_ms);
	if (rc) {
		conf_errf(errstr, errstr_size, "CreateTopics: %s", sluice_err2str(rc));
		err = rc;
		goto out;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 2)
		wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 4) >= 1) {
		wire_str msg = { NULL, -1 };
		int16_t e;

		wire_rd_str(&rd);
		e = wire_rd_i16(&rd);
		if (ver >= 1)
			msg = wire_rd_str(&rd);
		if (!rd.err) {
			err = e;
			if (e)
				set_errmsg(msg, e, errstr, errstr_size);
		}
	}
	kbuf_unref(resp);
out:
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_delete_topic(sluice_admin_t *a, const char *topic, int timeout_ms,
				       char *errstr, size_t errstr_size)
{
	struct kbuf *resp;
	struct kreq *r;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	wire_rd rd;

	if (!a || !topic)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	ver = prepare(a, API_DELETE_TOPICS, 0, 3, "DeleteTopics", timeout_ms, errstr, errstr_size);
	if (ver < 0) {
		err = ver;
		goto out;
	}
	r = kreq_new(&a->conn, API_DELETE_TOPICS, (int16_t)ver);
	if (!r) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	wire_w_i32(&r->wb, 1);
	wire_w_str(&r->wb, topic);
	wire_w_i32(&r->wb, timeout_ms);
	rc = kconn_call(&a->conn, r, &resp, timeout_ms);
	if (rc) {
		conf_errf(errstr, errstr_size, "DeleteTopics: %s", sluice_err2str(rc));
		err = rc;
		goto out;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 1)
		wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 4) >= 1) {
		int16_t e;

		wire_rd_str(&rd);
		e = wire_rd_i16(&rd);
		if (!rd.err) {
			err = e;
			if (e)
				conf_errf(errstr, errstr_size, "%s", sluice_err2str(e));
		}
	}
	kbuf_unref(resp);
out:
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_list_topics(sluice_admin_t *a, const char *topic,
				      sluice_topic_list_t **list, int timeout_ms)
{
	struct sluice_topic_list *l = NULL;
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	int32_t nt;
	wire_rd rd;

	if (!a || !list)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	ver = prepare(a, API_METADATA, 1, 8, "Metadata", timeout_ms, NULL, 0);
	if (ver < 0) {
		err = ver;
		goto out;
	}
	r = kreq_new(&a->conn, API_METADATA, (int16_t)ver);
	if (!r) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	if (topic) {
		wire_w_i32(&r->wb, 1);
		wire_w_str(&r->wb, topic);
	} else {
		wire_w_i32(&r->wb, -1);
	}
	if (ver >= 4)
		wire_w_i8(&r->wb, 0); /* describe must not create */
	if (ver >= 8) {
		wire_w_i8(&r->wb, 0);
		wire_w_i8(&r->wb, 0);
	}
	rc = kconn_call(&a->conn, r, &resp, timeout_ms);
	if (rc) {
		err = rc;
		goto out;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	if (ver >= 3)
		wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 14);
	for (int32_t i = 0; i < nt && !rd.err; i++) {
		wire_rd_i32(&rd);
		wire_rd_str(&rd);
		wire_rd_i32(&rd);
		wire_rd_str(&rd);
	}
	if (ver >= 2)
		wire_rd_str(&rd);
	wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 8);
	l = calloc(1, sizeof(*l));
	if (!l || (nt > 0 && !(l->t = calloc((size_t)nt, sizeof(*l->t))))) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	for (int32_t i = 0; i < nt && !rd.err; i++) {
		sluice_topic_info_t *ti = &l->t[l->n];
		int16_t terr = wire_rd_i16(&rd);
		wire_str name = wire_rd_str(&rd);
		int32_t np;
		char *nm;

		ti->is_internal = wire_rd_i8(&rd);
		np = wire_rd_array(&rd, 18);
		for (int32_t j = 0; j < np && !rd.err; j++) {
			wire_rd_i16(&rd);
			wire_rd_i32(&rd);
			wire_rd_i32(&rd);
			if (ver >= 7)
				wire_rd_i32(&rd);
			wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
			wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
			if (ver >= 5)
				wire_rd_take(&rd, 4 * (size_t)wire_rd_array(&rd, 4));
		}
		if (ver >= 8)
			wire_rd_i32(&rd);
		if (rd.err || name.len < 0)
			break;
		nm = malloc((size_t)name.len + 1);
		if (!nm) {
			err = SLUICE_ERR_NO_MEMORY;
			goto out;
		}
		memcpy(nm, name.ptr, (size_t)name.len);
		nm[name.len] = '\0';
		ti->name = nm;
		ti->err = terr;
		ti->partition_count = np > 0 ? np : 0;
		l->n++;
	}
	if (rd.err)
		goto out;
	*list = l;
	l = NULL;
	err = SLUICE_ERR_NO_ERROR;
out:
	kbuf_unref(resp);
	sluice_topic_list_destroy(l);
	pthread_mutex_unlock(&a->lock);
	return err;
}

size_t sluice_topic_list_count(const sluice_topic_list_t *l) { return l ? l->n : 0; }

const sluice_topic_info_t *sluice_topic_list_get(const sluice_topic_list_t *l, size_t i)
{
	return l && i < l->n ? &l->t[i] : NULL;
}

void sluice_topic_list_destroy(sluice_topic_list_t *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		free((char *)l->t[i].name);
	free(l->t);
	free(l);
}

static char *dup_str(wire_str s)
{
	char *p;

	if (s.len < 0)
		return NULL;
	p = malloc((size_t)s.len + 1);
	if (p) {
		memcpy(p, s.ptr, (size_t)s.len);
		p[s.len] = '\0';
	}
	return p;
}

void sluice_config_entries_destroy(sluice_config_entry_t *configs, size_t nconfigs)
{
	if (!configs)
		return;
	for (size_t i = 0; i < nconfigs; i++) {
		free((char *)configs[i].name);
		free((char *)configs[i].value);
	}
	free(configs);
}

#define RESOURCE_TOPIC 2

sluice_err_t sluice_admin_describe_topic_configs(sluice_admin_t *a, const char *topic,
						 sluice_config_entry_t **configs, size_t *nconfigs,
						 int timeout_ms, char *errstr, size_t errstr_size)
{
	sluice_config_entry_t *out = NULL;
	size_t nout = 0;
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	wire_rd rd;

	if (!a || !topic || !configs || !nconfigs)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	ver = prepare(a, API_DESCRIBE_CONFIGS, 0, 3, "DescribeConfigs", timeout_ms, errstr,
		      errstr_size);
	if (ver < 0) {
		err = ver;
		goto out;
	}
	r = kreq_new(&a->conn, API_DESCRIBE_CONFIGS, (int16_t)ver);
	if (!r) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	wire_w_i32(&r->wb, 1);
	wire_w_i8(&r->wb, RESOURCE_TOPIC);
	wire_w_str(&r->wb, topic);
	wire_w_i32(&r->wb, -1); /* all keys */
	if (ver >= 1)
		wire_w_i8(&r->wb, 0);
	if (ver >= 3)
		wire_w_i8(&r->wb, 0);
	rc = kconn_call(&a->conn, r, &resp, timeout_ms);
	if (rc) {
		conf_errf(errstr, errstr_size, "DescribeConfigs: %s", sluice_err2str(rc));
		err = rc;
		goto out;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 8) >= 1) {
		int16_t e = wire_rd_i16(&rd);
		wire_str msg = wire_rd_str(&rd);
		int32_t nc;

		wire_rd_i8(&rd);
		wire_rd_str(&rd);
		nc = wire_rd_array(&rd, 6);
		if (!rd.err && e) {
			set_errmsg(msg, e, errstr, errstr_size);
			err = e;
			goto out;
		}
		if (nc > 0 && !(out = calloc((size_t)nc, sizeof(*out)))) {
			err = SLUICE_ERR_NO_MEMORY;
			goto out;
		}
		for (int32_t i = 0; i < nc && !rd.err; i++) {
			wire_str name = wire_rd_str(&rd), value = wire_rd_str(&rd);
			int ro = wire_rd_i8(&rd), isdef = 0;

			if (ver == 0) {
				isdef = wire_rd_i8(&rd);
			} else {
				int8_t src = wire_rd_i8(&rd);

				isdef = src == 5; /* DEFAULT_CONFIG */
			}
			wire_rd_i8(&rd); /* sensitive */
			if (ver >= 1) {
				int32_t ns = wire_rd_array(&rd, 5);

				for (int32_t k = 0; k < ns && !rd.err; k++) {
					wire_rd_str(&rd);
					wire_rd_str(&rd);
					wire_rd_i8(&rd);
				}
			}
			if (ver >= 3) {
				wire_rd_i8(&rd);
				wire_rd_str(&rd);
			}
			if (rd.err)
				break;
			out[nout].name = dup_str(name);
			out[nout].value = dup_str(value);
			out[nout].is_read_only = ro;
			out[nout].is_default = isdef;
			nout++;
		}
		if (!rd.err) {
			*configs = out;
			*nconfigs = nout;
			out = NULL;
			err = SLUICE_ERR_NO_ERROR;
		}
	}
out:
	sluice_config_entries_destroy(out, nout);
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_alter_topic_configs(sluice_admin_t *a, const char *topic,
					      const sluice_config_entry_t *configs, size_t nconfigs,
					      int timeout_ms, char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err = SLUICE_ERR_BAD_MSG;
	int ver, rc;
	wire_rd rd;

	if (!a || !topic || (nconfigs && !configs))
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	ver = prepare(a, API_ALTER_CONFIGS, 0, 1, "AlterConfigs", timeout_ms, errstr, errstr_size);
	if (ver < 0) {
		err = ver;
		goto out;
	}
	r = kreq_new(&a->conn, API_ALTER_CONFIGS, (int16_t)ver);
	if (!r) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	wire_w_i32(&r->wb, 1);
	wire_w_i8(&r->wb, RESOURCE_TOPIC);
	wire_w_str(&r->wb, topic);
	wire_w_i32(&r->wb, (int32_t)nconfigs);
	for (size_t i = 0; i < nconfigs; i++) {
		wire_w_str(&r->wb, configs[i].name);
		wire_w_str(&r->wb, configs[i].value);
	}
	wire_w_i8(&r->wb, 0); /* validate_only */
	rc = kconn_call(&a->conn, r, &resp, timeout_ms);
	if (rc) {
		conf_errf(errstr, errstr_size, "AlterConfigs: %s", sluice_err2str(rc));
		err = rc;
		goto out;
	}
	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 8) >= 1) {
		int16_t e = wire_rd_i16(&rd);
		wire_str msg = wire_rd_str(&rd);

		if (!rd.err) {
			err = e;
			if (e)
				set_errmsg(msg, e, errstr, errstr_size);
		}
	}
out:
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}
