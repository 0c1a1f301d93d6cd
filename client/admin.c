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
#include "grpproto.h"
#include "kconn.h"
#include "txnwire.h"

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

/* prepare() plus a new request of the chosen version: the preamble of every
 * admin call.  0 with *r and *ver, or an error (errstr set). */
static sluice_err_t begin_request(struct sluice_admin *a, int api, int vmin, int vmax,
				  const char *what, int timeout_ms, char *errstr, size_t errstr_size,
				  struct kreq **r, int *ver)
{
	int v = prepare(a, api, vmin, vmax, what, timeout_ms, errstr, errstr_size);

	if (v < 0)
		return (sluice_err_t)v;
	*r = kreq_new(&a->conn, (int16_t)api, (int16_t)v);
	if (!*r)
		return SLUICE_ERR_NO_MEMORY;
	*ver = v;
	return SLUICE_ERR_NO_ERROR;
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
	err = begin_request(a, API_CREATE_TOPICS, 0, 4, "CreateTopics", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
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
	err = begin_request(a, API_DELETE_TOPICS, 0, 3, "DeleteTopics", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
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
	err = begin_request(a, API_DESCRIBE_CONFIGS, 0, 3, "DescribeConfigs", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
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
	err = begin_request(a, API_ALTER_CONFIGS, 0, 1, "AlterConfigs", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
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

/* ---- consumer groups ---- */

enum {
	API_OFFSET_COMMIT_ = 8,
	API_OFFSET_FETCH_ = 9,
	API_DESCRIBE_GROUPS = 15,
	API_LIST_GROUPS = 16,
	API_DELETE_GROUPS = 42,
};

/* Sends r and returns the response body reader; *resp to unref. */
static int admin_call(struct sluice_admin *a, struct kreq *r, struct kbuf **resp, wire_rd *rd,
		      int timeout_ms, const char *what, char *errstr, size_t errstr_size)
{
	int rc = kconn_call(&a->conn, r, resp, timeout_ms);

	if (rc) {
		conf_errf(errstr, errstr_size, "%s: %s", what, sluice_err2str(rc));
		return rc;
	}
	wire_rd_init(rd, (*resp)->data + 4, (*resp)->len - 4);
	return 0;
}

sluice_err_t sluice_admin_list_groups(sluice_admin_t *a, sluice_group_info_t **groups, size_t *n,
				      int timeout_ms, char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	sluice_group_info_t *v = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	int32_t ng;
	size_t cnt = 0;
	wire_rd rd;

	if (!a || !groups || !n)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	err = begin_request(a, API_LIST_GROUPS, 0, 2, "ListGroups", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
	err = admin_call(a, r, &resp, &rd, timeout_ms, "ListGroups", errstr, errstr_size);
	if (err)
		goto out;
	if (ver >= 1)
		wire_rd_i32(&rd);
	err = wire_rd_i16(&rd);
	ng = wire_rd_array(&rd, 4);
	if (rd.err) {
		err = SLUICE_ERR_BAD_MSG;
		goto out;
	}
	if (err) {
		conf_errf(errstr, errstr_size, "ListGroups: %s", sluice_err2str(err));
		goto out;
	}
	v = calloc((size_t)(ng > 0 ? ng : 1), sizeof(*v));
	if (!v) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	for (int32_t i = 0; i < ng && !rd.err; i++) {
		v[i].group_id = dup_str(wire_rd_str(&rd));
		v[i].protocol_type = dup_str(wire_rd_str(&rd));
		cnt++;
		if (!v[i].group_id || !v[i].protocol_type)
			err = SLUICE_ERR_NO_MEMORY;
	}
	if (rd.err)
		err = SLUICE_ERR_BAD_MSG;
	if (!err) {
		*groups = v;
		*n = cnt;
		v = NULL;
	}
out:
	sluice_group_infos_destroy(v, cnt);
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

void sluice_group_infos_destroy(sluice_group_info_t *groups, size_t n)
{
	for (size_t i = 0; groups && i < n; i++) {
		free((char *)groups[i].group_id);
		free((char *)groups[i].protocol_type);
	}
	free(groups);
}

void sluice_topic_partitions_destroy(sluice_topic_partition_t *parts, size_t n)
{
	for (size_t i = 0; parts && i < n; i++)
		free((char *)parts[i].topic);
	free(parts);
}

void sluice_group_description_destroy(sluice_group_description_t *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nmembers; i++) {
		free((char *)d->members[i].member_id);
		free((char *)d->members[i].client_id);
		free((char *)d->members[i].client_host);
		sluice_topic_partitions_destroy(d->members[i].assignment, d->members[i].nassignment);
	}
	free(d->members);
	free((char *)d->group_id);
	free((char *)d->state);
	free((char *)d->protocol_type);
	free((char *)d->protocol);
	free(d);
}

/* Flattens a decoded assignment into a sluice_topic_partition_t array. */
static int tplist_flatten(const struct grpproto_tplist *l, sluice_topic_partition_t **out,
			  size_t *n)
{
	int cnt = grpproto_tplist_count(l), k = 0;
	sluice_topic_partition_t *v = calloc((size_t)(cnt ? cnt : 1), sizeof(*v));

	if (!v)
		return -1;
	for (int i = 0; i < l->n; i++)
		for (int j = 0; j < l->t[i].nparts; j++, k++) {
			v[k].topic = strdup(l->t[i].topic);
			v[k].partition = l->t[i].parts[j];
			v[k].offset = SLUICE_OFFSET_INVALID;
			if (!v[k].topic) {
				sluice_topic_partitions_destroy(v, (size_t)k);
				return -1;
			}
		}
	*out = v;
	*n = (size_t)cnt;
	return 0;
}

sluice_err_t sluice_admin_describe_group(sluice_admin_t *a, const char *group,
					 sluice_group_description_t **desc, int timeout_ms,
					 char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	sluice_group_description_t *d = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	int32_t nm;
	wire_rd rd;

	if (!a || !group || !desc)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	err = begin_request(a, API_DESCRIBE_GROUPS, 0, 4, "DescribeGroups", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
	wire_w_i32(&r->wb, 1);
	wire_w_str(&r->wb, group);
	if (ver >= 3)
		wire_w_i8(&r->wb, 0);
	err = admin_call(a, r, &resp, &rd, timeout_ms, "DescribeGroups", errstr, errstr_size);
	if (err)
		goto out;
	if (ver >= 1)
		wire_rd_i32(&rd);
	err = SLUICE_ERR_BAD_MSG;
	if (wire_rd_array(&rd, 12) != 1)
		goto out;
	d = calloc(1, sizeof(*d));
	if (!d) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	d->err = wire_rd_i16(&rd);
	d->group_id = dup_str(wire_rd_str(&rd));
	d->state = dup_str(wire_rd_str(&rd));
	d->protocol_type = dup_str(wire_rd_str(&rd));
	d->protocol = dup_str(wire_rd_str(&rd));
	nm = wire_rd_array(&rd, 16);
	if (rd.err)
		goto out;
	d->members = calloc((size_t)(nm > 0 ? nm : 1), sizeof(*d->members));
	if (!d->members) {
		err = SLUICE_ERR_NO_MEMORY;
		goto out;
	}
	for (int32_t i = 0; i < nm && !rd.err; i++) {
		sluice_group_member_t *m = &d->members[d->nmembers++];
		wire_str asg;
		struct grpproto_tplist l = { 0 };

		m->member_id = dup_str(wire_rd_str(&rd));
		if (ver >= 4)
			wire_rd_str(&rd);
		m->client_id = dup_str(wire_rd_str(&rd));
		m->client_host = dup_str(wire_rd_str(&rd));
		wire_rd_bytes(&rd);
		asg = wire_rd_bytes(&rd);
		if (rd.err)
			break;
		if (d->protocol_type && !strcmp(d->protocol_type, "consumer") &&
		    !grpproto_assignment_decode(asg.ptr, asg.len > 0 ? (size_t)asg.len : 0, &l)) {
			grpproto_tplist_sort(&l);
			if (tplist_flatten(&l, &m->assignment, &m->nassignment))
				m->nassignment = 0;
			grpproto_tplist_free(&l);
		}
	}
	if (ver >= 3)
		wire_rd_i32(&rd);
	if (rd.err)
		goto out;
	err = SLUICE_ERR_NO_ERROR;
	*desc = d;
	d = NULL;
out:
	sluice_group_description_destroy(d);
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_group_offsets(sluice_admin_t *a, const char *group,
					sluice_topic_partition_t **parts, size_t *n, int timeout_ms,
					char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	sluice_topic_partition_t *v = NULL;
	size_t cnt = 0, cap = 0;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	int32_t nt;
	wire_rd rd;

	if (!a || !group || !parts || !n)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	err = begin_request(a, API_OFFSET_FETCH_, 2, 5, "OffsetFetch v2+", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
	wire_w_str(&r->wb, group);
	wire_w_i32(&r->wb, -1); /* all topics */
	err = admin_call(a, r, &resp, &rd, timeout_ms, "OffsetFetch", errstr, errstr_size);
	if (err)
		goto out;
	if (ver >= 3)
		wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt && !rd.err; t++) {
		wire_str name = wire_rd_str(&rd);
		int32_t np = wire_rd_array(&rd, 16);

		for (int32_t p = 0; p < np && !rd.err; p++) {
			int32_t idx = wire_rd_i32(&rd);
			int64_t off = wire_rd_i64(&rd);
			int16_t e;

			if (ver >= 5)
				wire_rd_i32(&rd);
			wire_rd_str(&rd);
			e = wire_rd_i16(&rd);
			if (rd.err)
				break;
			if (cnt == cap) {
				size_t nc = cap ? cap * 2 : 16;
				sluice_topic_partition_t *nv = realloc(v, nc * sizeof(*nv));

				if (!nv) {
					err = SLUICE_ERR_NO_MEMORY;
					goto out;
				}
				v = nv;
				cap = nc;
			}
			v[cnt].topic = dup_str(name);
			v[cnt].partition = idx;
			v[cnt].offset = off;
			v[cnt].err = e;
			if (!v[cnt++].topic) {
				err = SLUICE_ERR_NO_MEMORY;
				goto out;
			}
		}
	}
	err = wire_rd_i16(&rd);
	if (rd.err)
		err = SLUICE_ERR_BAD_MSG;
	else if (err)
		conf_errf(errstr, errstr_size, "OffsetFetch: %s", sluice_err2str(err));
	if (!err) {
		*parts = v;
		*n = cnt;
		v = NULL;
	}
out:
	sluice_topic_partitions_destroy(v, cnt);
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_commit_group_offsets(sluice_admin_t *a, const char *group,
					       sluice_topic_partition_t *parts, size_t n,
					       int timeout_ms, char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	int32_t nt;
	wire_rd rd;

	if (!a || !group || (n && !parts))
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	err = begin_request(a, API_OFFSET_COMMIT_, 2, 7, "OffsetCommit v2+", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
	wire_w_str(&r->wb, group);
	wire_w_i32(&r->wb, -1); /* no generation */
	wire_w_str(&r->wb, "");
	if (ver >= 7)
		wire_w_str(&r->wb, NULL);
	if (ver <= 4)
		wire_w_i64(&r->wb, -1);
	wire_w_i32(&r->wb, (int32_t)n); /* one topic entry per partition */
	for (size_t i = 0; i < n; i++) {
		wire_w_str(&r->wb, parts[i].topic);
		wire_w_i32(&r->wb, 1);
		wire_w_i32(&r->wb, parts[i].partition);
		wire_w_i64(&r->wb, parts[i].offset);
		if (ver >= 6)
			wire_w_i32(&r->wb, -1);
		wire_w_str(&r->wb, "");
	}
	err = admin_call(a, r, &resp, &rd, timeout_ms, "OffsetCommit", errstr, errstr_size);
	if (err)
		goto out;
	if (ver >= 3)
		wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt && !rd.err; t++) {
		wire_str name = wire_rd_str(&rd);
		int32_t np = wire_rd_array(&rd, 6);

		for (int32_t p = 0; p < np && !rd.err; p++) {
			int32_t idx = wire_rd_i32(&rd);
			int16_t e = wire_rd_i16(&rd);

			for (size_t i = 0; !rd.err && i < n; i++)
				if (parts[i].partition == idx && wire_str_eq(name, parts[i].topic))
					parts[i].err = e;
			if (!rd.err && e && !err) {
				err = e;
				conf_errf(errstr, errstr_size, "OffsetCommit: %s", sluice_err2str(e));
			}
		}
	}
	if (rd.err)
		err = SLUICE_ERR_BAD_MSG;
out:
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_delete_group(sluice_admin_t *a, const char *group, int timeout_ms,
				       char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	wire_rd rd;

	if (!a || !group)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	err = begin_request(a, API_DELETE_GROUPS, 0, 1, "DeleteGroups", timeout_ms, errstr,
			    errstr_size, &r, &ver);
	if (err)
		goto out;
	wire_w_i32(&r->wb, 1);
	wire_w_str(&r->wb, group);
	err = admin_call(a, r, &resp, &rd, timeout_ms, "DeleteGroups", errstr, errstr_size);
	if (err)
		goto out;
	wire_rd_i32(&rd);
	if (wire_rd_array(&rd, 4) == 1) {
		wire_rd_str(&rd);
		err = wire_rd_i16(&rd);
	} else {
		err = SLUICE_ERR_BAD_MSG;
	}
	if (rd.err)
		err = SLUICE_ERR_BAD_MSG;
	if (err)
		conf_errf(errstr, errstr_size, "DeleteGroups: %s", sluice_err2str(err));
out:
	kbuf_unref(resp);
	pthread_mutex_unlock(&a->lock);
	return err;
}

/* ---- transactions (operators) ---- */

sluice_err_t sluice_admin_list_txns(sluice_admin_t *a, const char *group, unsigned state_mask,
				    int64_t after_txn_id, int limit, sluice_txn_info_t **txns,
				    size_t *n, int timeout_ms, char *errstr, size_t errstr_size)
{
	sluice_err_t err;
	int v;

	if (!a || !txns || !n || limit <= 0 || limit > 10000)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	v = prepare(a, API_TXN_LIST, 0, 0, "TxnList", timeout_ms, errstr, errstr_size);
	err = v < 0 ? (sluice_err_t)v
		    : txnwire_list(&a->conn, group, state_mask, limit, after_txn_id, timeout_ms,
				   txns, n, errstr, errstr_size);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_describe_txn(sluice_admin_t *a, int64_t txn_id, sluice_txn_info_t **txn,
				       int timeout_ms, char *errstr, size_t errstr_size)
{
	sluice_err_t err;
	int v;

	if (!a || !txn)
		return SLUICE_ERR_INVALID_ARG;
	pthread_mutex_lock(&a->lock);
	v = prepare(a, API_TXN_DESCRIBE, 0, 0, "TxnDescribe", timeout_ms, errstr, errstr_size);
	err = v < 0 ? (sluice_err_t)v
		    : txnwire_describe(&a->conn, txn_id, timeout_ms, txn, errstr, errstr_size);
	pthread_mutex_unlock(&a->lock);
	return err;
}

/* TxnEnd with the operator flag (decision 1 commit, 2 rollback, 3 resume). */
static sluice_err_t operator_end(sluice_admin_t *a, int64_t txn_id, int decision, int *state,
				 int64_t *offset, int timeout_ms, char *errstr, size_t errstr_size)
{
	sluice_err_t err;
	int v;

	pthread_mutex_lock(&a->lock);
	v = prepare(a, API_TXN_END, 0, 0, "TxnEnd", timeout_ms, errstr, errstr_size);
	err = v < 0 ? (sluice_err_t)v
		    : txnwire_end(&a->conn, "", txn_id, decision, 1, -1, timeout_ms, state,
				  offset, errstr, errstr_size);
	pthread_mutex_unlock(&a->lock);
	return err;
}

sluice_err_t sluice_admin_end_txn(sluice_admin_t *a, int64_t txn_id, sluice_txn_decision_t decision,
				  int *state, int64_t *offset, int timeout_ms, char *errstr,
				  size_t errstr_size)
{
	if (!a || (decision != SLUICE_TXN_COMMIT && decision != SLUICE_TXN_ROLLBACK))
		return SLUICE_ERR_INVALID_ARG;
	return operator_end(a, txn_id, (int)decision, state, offset, timeout_ms, errstr,
			    errstr_size);
}

sluice_err_t sluice_admin_resume_txn(sluice_admin_t *a, int64_t txn_id, int timeout_ms,
				     char *errstr, size_t errstr_size)
{
	if (!a)
		return SLUICE_ERR_INVALID_ARG;
	return operator_end(a, txn_id, 3, NULL, NULL, timeout_ms, errstr, errstr_size);
}
