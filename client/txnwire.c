/*
 * txnwire.c — encode/decode of the transaction extension APIs (see
 * txnwire.h; layouts in docs/protocol.md "Sluice extensions").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "recbatch.h"
#include "txnwire.h"

#define SPLICE_MIN_BYTES (16u << 10)

static sluice_err_t broker_err(int16_t e)
{
	return e == -1 ? SLUICE_ERR_UNKNOWN_SERVER_ERROR : (sluice_err_t)e;
}

/* errstr for a broker error: its message if it sent one. */
static void set_broker_errstr(sluice_err_t err, wire_str msg, const char *what, char *errstr,
			      size_t errstr_size)
{
	if (msg.len > 0)
		conf_errf(errstr, errstr_size, "%s: %s: %.*s", what, sluice_err2str(err), msg.len,
			  msg.ptr);
	else
		conf_errf(errstr, errstr_size, "%s: %s", what, sluice_err2str(err));
}

int txnwire_version(const struct kconn *c, int api, int cmax, char *errstr, size_t errstr_size)
{
	int v = kconn_version(c, api, 0, cmax);

	if (v < 0) {
		conf_errf(errstr, errstr_size,
			  "transaction API %d is not supported by this broker (not a Sluice broker?)", api);
		return SLUICE_ERR_UNSUPPORTED_FEATURE;
	}
	return v;
}

/* Sends r and returns the response body reader; on a local error closes
 * nothing more than kconn_call did and fills errstr. */
static sluice_err_t call(struct kconn *c, struct kreq *r, int timeout_ms, const char *what,
			 struct kbuf **resp, wire_rd *rd, char *errstr, size_t errstr_size)
{
	int rc = kconn_call(c, r, resp, timeout_ms);

	if (rc) {
		conf_errf(errstr, errstr_size, "%s: %s", what, sluice_err2str(rc));
		return (sluice_err_t)rc;
	}
	wire_rd_init(rd, (*resp)->data + 4, (*resp)->len - 4);
	return SLUICE_ERR_NO_ERROR;
}

struct kreq *txnwire_prepare_req(struct kconn *c, const struct txnwire_prepare *a, int *ver,
				 char *errstr, size_t errstr_size)
{
	struct kreq *r;

	*ver = txnwire_version(c, API_TXN_PREPARE, 1, errstr, errstr_size);
	if (*ver < 0)
		return NULL;
	if (!(r = kreq_new(c, API_TXN_PREPARE, (int16_t)*ver))) {
		*ver = SLUICE_ERR_NO_MEMORY;
		return NULL;
	}
	wire_w_str(&r->wb, a->group);
	wire_w_str(&r->wb, a->topic);
	wire_w_i32(&r->wb, a->partition);
	wire_w_i32(&r->wb, a->check_timeout_ms);
	/* A large message goes out from the caller's buffer (writev); a small
	 * one is cheaper to copy than to splice. */
	if (a->batch_len >= SPLICE_MIN_BYTES) {
		wire_w_i32(&r->wb, (int32_t)a->batch_len);
		kreq_splice(r, a->batch, a->batch_len);
	} else {
		wire_w_bytes(&r->wb, a->batch, (int32_t)a->batch_len);
	}
	if (*ver >= 1)
		wire_w_str(&r->wb, a->instance && a->instance[0] ? a->instance : NULL);
	return r;
}

sluice_err_t txnwire_prepare_resp(const struct kbuf *resp, int ver, int32_t req_partition,
				  int64_t *txn_id, int32_t *partition, char *errstr,
				  size_t errstr_size)
{
	sluice_err_t err = SLUICE_ERR_NO_ERROR;
	wire_rd rd;
	wire_str msg;
	int16_t e;

	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	e = wire_rd_i16(&rd);
	msg = wire_rd_str(&rd);
	*txn_id = wire_rd_i64(&rd);
	*partition = ver >= 1 ? wire_rd_i32(&rd) : req_partition;
	if (rd.err) {
		conf_errf(errstr, errstr_size, "TxnPrepare: malformed response");
		err = SLUICE_ERR_BAD_MSG;
	} else if (e) {
		err = broker_err(e);
		set_broker_errstr(err, msg, "TxnPrepare", errstr, errstr_size);
	}
	if (err)
		*txn_id = -1;
	return err;
}

sluice_err_t txnwire_prepare(struct kconn *c, const struct txnwire_prepare *a, int timeout_ms,
			     int64_t *txn_id, int32_t *partition, char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	wire_rd rd;

	if (!(r = txnwire_prepare_req(c, a, &ver, errstr, errstr_size)))
		return (sluice_err_t)ver;
	err = call(c, r, timeout_ms, "TxnPrepare", &resp, &rd, errstr, errstr_size);
	if (err)
		return err;
	err = txnwire_prepare_resp(resp, ver, a->partition, txn_id, partition, errstr, errstr_size);
	kbuf_unref(resp);
	return err;
}

struct kreq *txnwire_end_req(struct kconn *c, const char *group, int64_t txn_id, int decision,
			     int flags, int32_t check_no, int *ver, char *errstr, size_t errstr_size)
{
	struct kreq *r;

	*ver = txnwire_version(c, API_TXN_END, 1, errstr, errstr_size);
	if (*ver < 0)
		return NULL;
	if (!(r = kreq_new(c, API_TXN_END, (int16_t)*ver))) {
		*ver = SLUICE_ERR_NO_MEMORY;
		return NULL;
	}
	wire_w_str(&r->wb, group ? group : "");
	wire_w_i64(&r->wb, txn_id);
	wire_w_i8(&r->wb, (int8_t)decision);
	wire_w_i8(&r->wb, (int8_t)flags);
	if (*ver >= 1)
		wire_w_i32(&r->wb, check_no);
	return r;
}

sluice_err_t txnwire_end_resp(const struct kbuf *resp, int *state, int64_t *offset, char *errstr,
			      size_t errstr_size)
{
	sluice_err_t err = SLUICE_ERR_NO_ERROR;
	wire_rd rd;
	wire_str msg;
	int16_t e;
	int8_t st;
	int64_t off;

	wire_rd_init(&rd, resp->data + 4, resp->len - 4);
	e = wire_rd_i16(&rd);
	msg = wire_rd_str(&rd);
	st = wire_rd_i8(&rd);
	off = wire_rd_i64(&rd);
	if (rd.err) {
		conf_errf(errstr, errstr_size, "TxnEnd: malformed response");
		err = SLUICE_ERR_BAD_MSG;
	} else if (e) {
		err = broker_err(e);
		set_broker_errstr(err, msg, "TxnEnd", errstr, errstr_size);
	} else {
		if (state)
			*state = st;
		if (offset)
			*offset = off;
	}
	return err;
}

sluice_err_t txnwire_end(struct kconn *c, const char *group, int64_t txn_id, int decision,
			 int flags, int32_t check_no, int timeout_ms, int *state, int64_t *offset,
			 char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver;
	wire_rd rd;

	if (!(r = txnwire_end_req(c, group, txn_id, decision, flags, check_no, &ver, errstr,
				   errstr_size)))
		return (sluice_err_t)ver;
	err = call(c, r, timeout_ms, "TxnEnd", &resp, &rd, errstr, errstr_size);
	if (err)
		return err;
	err = txnwire_end_resp(resp, state, offset, errstr, errstr_size);
	kbuf_unref(resp);
	return err;
}

sluice_err_t txnwire_check_poll(struct kconn *c, const char *group, const char *instance,
				int max_wait_ms, int max_txns, int timeout_ms, struct kbuf **resp,
				struct txnwire_check **checks, size_t *n)
{
	struct txnwire_check *v = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver = txnwire_version(c, API_TXN_CHECK_POLL, 1, NULL, 0);
	int32_t cnt;
	wire_rd rd;
	int16_t e;

	*resp = NULL;
	if (ver < 0)
		return (sluice_err_t)ver;
	if (!(r = kreq_new(c, API_TXN_CHECK_POLL, (int16_t)ver)))
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, group);
	wire_w_i32(&r->wb, max_wait_ms);
	wire_w_i32(&r->wb, max_txns);
	if (ver >= 1)
		wire_w_str(&r->wb, instance && instance[0] ? instance : NULL);
	r->extra_timeout_ms = max_wait_ms;
	err = call(c, r, timeout_ms + max_wait_ms, "TxnCheckPoll", resp, &rd, NULL, 0);
	if (err)
		return err;
	e = wire_rd_i16(&rd);
	cnt = wire_rd_array(&rd, 8 + 2 + 4 + 4 + 4);
	if (!rd.err && cnt > 0 && !(v = calloc((size_t)cnt, sizeof(*v))))
		err = SLUICE_ERR_NO_MEMORY;
	for (int32_t i = 0; !err && !rd.err && i < cnt; i++) {
		v[i].txn_id = wire_rd_i64(&rd);
		v[i].topic = wire_rd_str(&rd);
		v[i].partition = wire_rd_i32(&rd);
		v[i].check_count = wire_rd_i32(&rd);
		v[i].records = wire_rd_bytes(&rd);
	}
	if (!err && rd.err)
		err = SLUICE_ERR_BAD_MSG;
	else if (!err && e)
		err = broker_err(e);
	if (err) {
		free(v);
		kbuf_unref(*resp);
		*resp = NULL;
		return err;
	}
	*checks = v;
	*n = cnt > 0 ? (size_t)cnt : 0;
	return SLUICE_ERR_NO_ERROR;
}

/* ---- first record of a half message ---- */

int txnwire_first_record(const uint8_t *batch, size_t len, sluice_txn_check_t *out,
			 sluice_header_t *hdrs, size_t nhdr_cap, char *names, size_t names_cap)
{
	recbatch_iter it;
	recbatch_record rec;
	recbatch_header_kv kv;
	size_t pos = 0, used = 0;
	int rc;

	if (recbatch_iter_init(&it, batch, len) != RECBATCH_OK || recbatch_iter_next(&it, &rec) != 1)
		return -1;
	out->key = rec.key.len >= 0 ? rec.key.ptr : NULL;
	out->key_len = rec.key.len >= 0 ? (size_t)rec.key.len : 0;
	out->value = rec.value.len >= 0 ? rec.value.ptr : NULL;
	out->value_len = rec.value.len >= 0 ? (size_t)rec.value.len : 0;
	out->headers = hdrs;
	out->nheaders = 0;
	while (out->nheaders < nhdr_cap && (rc = recbatch_record_header(&rec, &pos, &kv)) == 1) {
		size_t nl = kv.key.len > 0 ? (size_t)kv.key.len : 0;
		sluice_header_t *h = &hdrs[out->nheaders];

		if (used + nl + 1 > names_cap)
			break;
		memcpy(names + used, kv.key.ptr, nl);
		names[used + nl] = '\0';
		h->name = names + used;
		h->value = kv.value.len >= 0 ? kv.value.ptr : NULL;
		h->value_len = kv.value.len >= 0 ? (size_t)kv.value.len : 0;
		used += nl + 1;
		out->nheaders++;
	}
	return 0;
}

/* ---- TxnList / TxnDescribe: decoded into owned sluice_txn_info_t ---- */

/* Every string of an entry, its message and its header array live in one
 * allocation that starts with the header array (t->headers, always set);
 * sluice_txn_infos_destroy frees that. */
struct blob {
	char *p;
	size_t used, cap;
};

static const char *blob_str(struct blob *b, wire_str s)
{
	char *d;

	if (s.len < 0)
		return NULL;
	d = b->p + b->used;
	memcpy(d, s.ptr, (size_t)s.len);
	d[s.len] = '\0';
	b->used += (size_t)s.len + 1;
	return d;
}

static size_t wlen(wire_str s) { return s.len > 0 ? (size_t)s.len + 1 : 1; }

/* Reads the fields shared by TxnList entries and TxnDescribe. */
struct raw_info {
	int64_t txn_id, created_ms, ended_ms, next_check_ms, log_offset;
	wire_str group, topic, reason;
	int32_t partition, check_count;
	int8_t state;
};

static void read_raw(wire_rd *rd, struct raw_info *x)
{
	x->txn_id = wire_rd_i64(rd);
	x->group = wire_rd_str(rd);
	x->topic = wire_rd_str(rd);
	x->partition = wire_rd_i32(rd);
	x->state = wire_rd_i8(rd);
	x->created_ms = wire_rd_i64(rd);
	x->ended_ms = wire_rd_i64(rd);
	x->check_count = wire_rd_i32(rd);
	x->next_check_ms = wire_rd_i64(rd);
	x->log_offset = wire_rd_i64(rd);
	x->reason = wire_rd_str(rd);
}

/* Fills t from x (and the message in records, if any).  Returns 0 or -1
 * (out of memory). */
static int build_info(sluice_txn_info_t *t, const struct raw_info *x, wire_str records)
{
	sluice_txn_check_t m = { 0 };
	sluice_header_t hdrs[64];
	char names[4096];
	struct blob b = { 0 };
	sluice_header_t *hv;

	memset(t, 0, sizeof(*t));
	if (records.len > 0 &&
	    txnwire_first_record((const uint8_t *)records.ptr, (size_t)records.len, &m, hdrs, 64,
				 names, sizeof(names)))
		memset(&m, 0, sizeof(m));
	b.cap = wlen(x->group) + wlen(x->topic) + wlen(x->reason) + m.key_len + m.value_len +
		m.nheaders * (sizeof(sluice_header_t) + 1) + sizeof(sluice_header_t);
	for (size_t i = 0; i < m.nheaders; i++)
		b.cap += strlen(hdrs[i].name) + 1 + hdrs[i].value_len;
	if (!(b.p = malloc(b.cap)))
		return -1;
	/* header array first: it needs alignment */
	hv = (sluice_header_t *)(void *)b.p;
	b.used = sizeof(sluice_header_t) * (m.nheaders + 1);
	t->producer_group = blob_str(&b, x->group.len >= 0 ? x->group : (wire_str){ "", 0 });
	t->topic = blob_str(&b, x->topic.len >= 0 ? x->topic : (wire_str){ "", 0 });
	t->discard_reason = blob_str(&b, x->reason);
	if (m.key) {
		t->key = memcpy(b.p + b.used, m.key, m.key_len);
		t->key_len = m.key_len;
		b.used += m.key_len;
	}
	if (m.value) {
		t->value = memcpy(b.p + b.used, m.value, m.value_len);
		t->value_len = m.value_len;
		b.used += m.value_len;
	}
	for (size_t i = 0; i < m.nheaders; i++) {
		hv[i].name = blob_str(&b, (wire_str){ hdrs[i].name, (int32_t)strlen(hdrs[i].name) });
		hv[i].value = hdrs[i].value ? memcpy(b.p + b.used, hdrs[i].value, hdrs[i].value_len) : NULL;
		hv[i].value_len = hdrs[i].value_len;
		b.used += hdrs[i].value_len;
	}
	t->headers = hv;
	t->nheaders = m.nheaders;
	t->txn_id = x->txn_id;
	t->partition = x->partition;
	t->state = x->state;
	t->created_ms = x->created_ms;
	t->ended_ms = x->ended_ms;
	t->check_count = x->check_count;
	t->next_check_ms = x->next_check_ms;
	t->log_offset = x->log_offset;
	t->dead_letter_offset = SLUICE_TXN_DEAD_LETTER_NONE; /* TxnDescribe v1, TxnList v1 set it */
	return 0;
}

void sluice_txn_infos_destroy(sluice_txn_info_t *txns, size_t n)
{
	if (!txns)
		return;
	for (size_t i = 0; i < n; i++)
		free((void *)txns[i].headers); /* the start of the entry's allocation */
	free(txns);
}

const char *sluice_txn_state_name(int state)
{
	static const char *const names[] = { "PENDING", "COMMITTING", "COMMITTED", "ROLLED_BACK",
					     "DISCARDED" };

	return state >= 0 && state < 5 ? names[state] : "?";
}

sluice_err_t txnwire_list(struct kconn *c, const char *group, unsigned state_mask, int limit,
			  int64_t after_txn_id, int timeout_ms, sluice_txn_info_t **txns, size_t *n,
			  char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	sluice_txn_info_t *v = NULL;
	struct kreq *r;
	sluice_err_t err;
	int ver = txnwire_version(c, API_TXN_LIST, 1, errstr, errstr_size);
	int32_t cnt, got = 0;
	wire_rd rd;
	int16_t e;

	if (ver < 0)
		return (sluice_err_t)ver;
	if (!(r = kreq_new(c, API_TXN_LIST, (int16_t)ver)))
		return SLUICE_ERR_NO_MEMORY;
	wire_w_str(&r->wb, group && group[0] ? group : NULL);
	wire_w_i32(&r->wb, (int32_t)state_mask);
	wire_w_i32(&r->wb, limit);
	wire_w_i64(&r->wb, after_txn_id);
	err = call(c, r, timeout_ms, "TxnList", &resp, &rd, errstr, errstr_size);
	if (err)
		return err;
	e = wire_rd_i16(&rd);
	cnt = wire_rd_array(&rd, 8 + 2 + 2 + 4 + 1 + 8 * 4 + 4 + 2 + (ver >= 1 ? 8 : 0));
	if (!rd.err && cnt > 0 && !(v = calloc((size_t)cnt, sizeof(*v))))
		err = SLUICE_ERR_NO_MEMORY;
	for (; !err && !rd.err && got < cnt; got++) {
		struct raw_info x;
		int64_t dead = SLUICE_TXN_DEAD_LETTER_NONE;

		read_raw(&rd, &x);
		if (ver >= 1)
			dead = wire_rd_i64(&rd);
		if (!rd.err && build_info(&v[got], &x, (wire_str){ NULL, -1 }))
			err = SLUICE_ERR_NO_MEMORY;
		else if (!rd.err)
			v[got].dead_letter_offset = dead;
		if (rd.err || err)
			break;
	}
	if (!err && rd.err) {
		conf_errf(errstr, errstr_size, "TxnList: malformed response");
		err = SLUICE_ERR_BAD_MSG;
	} else if (!err && e) {
		err = broker_err(e);
		set_broker_errstr(err, (wire_str){ NULL, -1 }, "TxnList", errstr, errstr_size);
	}
	kbuf_unref(resp);
	if (err) {
		sluice_txn_infos_destroy(v, (size_t)got);
		return err;
	}
	*txns = v;
	*n = (size_t)cnt;
	return SLUICE_ERR_NO_ERROR;
}

sluice_err_t txnwire_describe(struct kconn *c, int64_t txn_id, int timeout_ms,
			      sluice_txn_info_t **txn, char *errstr, size_t errstr_size)
{
	struct kbuf *resp = NULL;
	sluice_txn_info_t *t = NULL;
	struct kreq *r;
	struct raw_info x;
	sluice_err_t err;
	int ver = txnwire_version(c, API_TXN_DESCRIBE, 1, errstr, errstr_size);
	int64_t dead = -1;
	wire_str msg, records;
	wire_rd rd;
	int16_t e;

	if (ver < 0)
		return (sluice_err_t)ver;
	if (!(r = kreq_new(c, API_TXN_DESCRIBE, (int16_t)ver)))
		return SLUICE_ERR_NO_MEMORY;
	wire_w_i64(&r->wb, txn_id);
	err = call(c, r, timeout_ms, "TxnDescribe", &resp, &rd, errstr, errstr_size);
	if (err)
		return err;
	e = wire_rd_i16(&rd);
	msg = wire_rd_str(&rd);
	read_raw(&rd, &x);
	(void)wire_rd_i64(&rd); /* commit_seq */
	records = wire_rd_bytes(&rd);
	if (ver >= 1)
		dead = wire_rd_i64(&rd);
	if (rd.err) {
		conf_errf(errstr, errstr_size, "TxnDescribe: malformed response");
		err = SLUICE_ERR_BAD_MSG;
	} else if (e) {
		err = broker_err(e);
		set_broker_errstr(err, msg, "TxnDescribe", errstr, errstr_size);
	} else if (!(t = calloc(1, sizeof(*t))) || build_info(t, &x, records)) {
		free(t);
		t = NULL;
		err = SLUICE_ERR_NO_MEMORY;
	} else {
		t->dead_letter_offset = dead;
	}
	kbuf_unref(resp);
	if (!err)
		*txn = t;
	return err;
}
