/*
 * grpproto.c — consumer-group embedded protocol codecs and assignors
 * (contract in grpproto.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grpproto.h"

int grpproto_tplist_add(struct grpproto_tplist *l, const char *topic, size_t tlen, int32_t part)
{
	struct grpproto_topic *t = NULL;

	for (int i = 0; i < l->n; i++)
		if (strlen(l->t[i].topic) == tlen && !memcmp(l->t[i].topic, topic, tlen)) {
			t = &l->t[i];
			break;
		}
	if (!t) {
		char *name;

		if (l->n == l->cap) {
			int nc = l->cap ? l->cap * 2 : 4;
			struct grpproto_topic *nt = realloc(l->t, (size_t)nc * sizeof(*nt));

			if (!nt)
				return -ENOMEM;
			l->t = nt;
			l->cap = nc;
		}
		name = malloc(tlen + 1);
		if (!name)
			return -ENOMEM;
		memcpy(name, topic, tlen);
		name[tlen] = '\0';
		t = &l->t[l->n++];
		memset(t, 0, sizeof(*t));
		t->topic = name;
	}
	if (part < 0)
		return 0; /* topic only */
	if (t->nparts == t->cap) {
		int nc = t->cap ? t->cap * 2 : 8;
		int32_t *np = realloc(t->parts, (size_t)nc * sizeof(*np));

		if (!np)
			return -ENOMEM;
		t->parts = np;
		t->cap = nc;
	}
	t->parts[t->nparts++] = part;
	return 0;
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_topic(const void *a, const void *b)
{
	return strcmp(((const struct grpproto_topic *)a)->topic,
		      ((const struct grpproto_topic *)b)->topic);
}

void grpproto_tplist_sort(struct grpproto_tplist *l)
{
	if (l->n > 1)
		qsort(l->t, (size_t)l->n, sizeof(*l->t), cmp_topic);
	for (int i = 0; i < l->n; i++)
		if (l->t[i].nparts > 1)
			qsort(l->t[i].parts, (size_t)l->t[i].nparts, sizeof(int32_t), cmp_i32);
}

int grpproto_tplist_count(const struct grpproto_tplist *l)
{
	int n = 0;

	for (int i = 0; i < l->n; i++)
		n += l->t[i].nparts;
	return n;
}

void grpproto_tplist_free(struct grpproto_tplist *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->n; i++) {
		free(l->t[i].topic);
		free(l->t[i].parts);
	}
	free(l->t);
	memset(l, 0, sizeof(*l));
}

/* ---- codecs ---- */

static void encode_tplist(wire_buf *b, const struct grpproto_tplist *l)
{
	wire_w_i32(b, l ? l->n : 0);
	for (int i = 0; l && i < l->n; i++) {
		wire_w_str(b, l->t[i].topic);
		wire_w_i32(b, l->t[i].nparts);
		for (int j = 0; j < l->t[i].nparts; j++)
			wire_w_i32(b, l->t[i].parts[j]);
	}
}

/* Reads [topic, [int32]] into out; 0, -ENOMEM or GRPPROTO_E_BAD. */
static int decode_tplist(wire_rd *rd, struct grpproto_tplist *out)
{
	int32_t nt = wire_rd_array(rd, 6);

	for (int32_t i = 0; i < nt && !rd->err; i++) {
		wire_str name = wire_rd_str(rd);
		int32_t np = wire_rd_array(rd, 4);

		if (rd->err || name.len < 0)
			return GRPPROTO_E_BAD;
		if (grpproto_tplist_add(out, name.ptr, (size_t)name.len, -1))
			return -ENOMEM;
		for (int32_t j = 0; j < np && !rd->err; j++) {
			int32_t p = wire_rd_i32(rd);

			if (!rd->err && grpproto_tplist_add(out, name.ptr, (size_t)name.len, p))
				return -ENOMEM;
		}
	}
	return rd->err ? GRPPROTO_E_BAD : 0;
}

void grpproto_sub_encode(wire_buf *b, const char *const *topics, int n)
{
	wire_w_i16(b, 1);
	wire_w_i32(b, n);
	for (int i = 0; i < n; i++)
		wire_w_str(b, topics[i]);
	wire_w_bytes(b, "", 0); /* user_data: empty, not null (as librdkafka) */
	wire_w_i32(b, 0);       /* owned_partitions (eager protocol: none) */
}

void grpproto_sub_free(struct grpproto_sub *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->ntopics; i++)
		free(s->topics[i]);
	free(s->topics);
	grpproto_tplist_free(&s->owned);
	memset(s, 0, sizeof(*s));
}

int grpproto_sub_decode(const void *p, size_t len, struct grpproto_sub *out)
{
	struct grpproto_sub s = { 0 };
	wire_rd rd;
	int32_t nt;
	int rc = GRPPROTO_E_BAD;

	wire_rd_init(&rd, p, len);
	s.version = wire_rd_i16(&rd);
	if (rd.err || s.version < 0)
		goto fail;
	nt = wire_rd_array(&rd, 2);
	if (rd.err || nt < 0)
		goto fail;
	if (nt > 0 && !(s.topics = calloc((size_t)nt, sizeof(char *)))) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int32_t i = 0; i < nt; i++) {
		wire_str t = wire_rd_str(&rd);

		if (rd.err || t.len < 0)
			goto fail;
		s.topics[i] = malloc((size_t)t.len + 1);
		if (!s.topics[i]) {
			rc = -ENOMEM;
			goto fail;
		}
		memcpy(s.topics[i], t.ptr, (size_t)t.len);
		s.topics[i][t.len] = '\0';
		s.ntopics++;
	}
	wire_rd_bytes(&rd); /* user_data */
	if (rd.err)
		goto fail;
	/* v1+ owned partitions: "ignorable", may be absent when a v0 reader
	 * wrote it; later fields (generation, rack) are skipped. */
	if (s.version >= 1 && wire_rd_left(&rd) > 0) {
		rc = decode_tplist(&rd, &s.owned);
		if (rc)
			goto fail;
	}
	*out = s;
	return 0;
fail:
	grpproto_sub_free(&s);
	return rc;
}

void grpproto_assignment_encode(wire_buf *b, const struct grpproto_tplist *l)
{
	wire_w_i16(b, 0);
	encode_tplist(b, l);
	wire_w_bytes(b, "", 0); /* user_data: empty, as librdkafka */
}

int grpproto_assignment_decode(const void *p, size_t len, struct grpproto_tplist *out)
{
	struct grpproto_tplist l = { 0 };
	wire_rd rd;
	int rc;

	if (len == 0) {
		*out = l;
		return 0;
	}
	wire_rd_init(&rd, p, len);
	if (wire_rd_i16(&rd) < 0 || rd.err)
		return GRPPROTO_E_BAD;
	rc = decode_tplist(&rd, &l);
	if (!rc && wire_rd_left(&rd) > 0) {
		wire_rd_bytes(&rd); /* user_data (absent is tolerated) */
		if (rd.err)
			rc = GRPPROTO_E_BAD;
	}
	if (rc) {
		grpproto_tplist_free(&l);
		return rc;
	}
	*out = l;
	return 0;
}

/* ---- assignors ---- */

int grpproto_assignor_known(const char *name)
{
	return !strcmp(name, "range") || !strcmp(name, "roundrobin");
}

static int subscribed(const struct grpproto_member *m, const char *topic)
{
	for (int i = 0; i < m->sub->ntopics; i++)
		if (!strcmp(m->sub->topics[i], topic))
			return 1;
	return 0;
}

static int cmp_member_ptr(const void *a, const void *b)
{
	const struct grpproto_member *x = *(struct grpproto_member *const *)a;
	const struct grpproto_member *y = *(struct grpproto_member *const *)b;

	/* Java's AbstractPartitionAssignor.MemberInfo order (KIP-345): static
	 * members by group.instance.id, before dynamic ones by member id, so a
	 * restarted static member (new member id) gets the same partitions */
	if (x->instance_id && y->instance_id)
		return strcmp(x->instance_id, y->instance_id);
	if (x->instance_id || y->instance_id)
		return x->instance_id ? -1 : 1;
	return strcmp(x->member_id, y->member_id);
}

static int cmp_meta_ptr(const void *a, const void *b)
{
	const struct grpproto_topic_meta *x = *(const struct grpproto_topic_meta *const *)a;
	const struct grpproto_topic_meta *y = *(const struct grpproto_topic_meta *const *)b;

	return strcmp(x->topic, y->topic);
}

static int assign_range(struct grpproto_member **sorted, int nm,
			const struct grpproto_topic_meta *const *topics, int nt)
{
	struct grpproto_member **subs = malloc((size_t)(nm ? nm : 1) * sizeof(*subs));

	if (!subs)
		return -ENOMEM;
	for (int t = 0; t < nt; t++) {
		int ns = 0, per, extra;

		if (topics[t]->partitions <= 0)
			continue;
		for (int i = 0; i < nm; i++)
			if (subscribed(sorted[i], topics[t]->topic))
				subs[ns++] = sorted[i];
		if (!ns)
			continue;
		per = topics[t]->partitions / ns;
		extra = topics[t]->partitions % ns;
		for (int i = 0; i < ns; i++) {
			int start = per * i + (i < extra ? i : extra);
			int len = per + (i < extra ? 1 : 0);

			for (int p = start; p < start + len; p++)
				if (grpproto_tplist_add(&subs[i]->assigned, topics[t]->topic,
							strlen(topics[t]->topic), p)) {
					free(subs);
					return -ENOMEM;
				}
		}
	}
	free(subs);
	return 0;
}

static int assign_roundrobin(struct grpproto_member **sorted, int nm,
			     const struct grpproto_topic_meta *const *topics, int nt)
{
	int next = 0;

	if (!nm)
		return 0;
	for (int t = 0; t < nt; t++) {
		for (int32_t p = 0; p < topics[t]->partitions; p++) {
			/* the next member in circular order that wants the topic */
			for (int k = 0; k < nm; k++) {
				struct grpproto_member *m = sorted[(next + k) % nm];

				if (!subscribed(m, topics[t]->topic))
					continue;
				if (grpproto_tplist_add(&m->assigned, topics[t]->topic,
							strlen(topics[t]->topic), p))
					return -ENOMEM;
				next = (next + k + 1) % nm;
				break;
			}
		}
	}
	return 0;
}

int grpproto_assign(const char *name, struct grpproto_member *members, int nm,
		    const struct grpproto_topic_meta *topics, int nt)
{
	struct grpproto_member **sorted = NULL;
	const struct grpproto_topic_meta **tsorted = NULL;
	int rc = -ENOMEM;

	if (!grpproto_assignor_known(name))
		return GRPPROTO_E_BAD;
	sorted = malloc((size_t)(nm ? nm : 1) * sizeof(*sorted));
	tsorted = malloc((size_t)(nt ? nt : 1) * sizeof(*tsorted));
	if (!sorted || !tsorted)
		goto out;
	for (int i = 0; i < nm; i++)
		sorted[i] = &members[i];
	for (int i = 0; i < nt; i++)
		tsorted[i] = &topics[i];
	qsort(sorted, (size_t)nm, sizeof(*sorted), cmp_member_ptr);
	qsort(tsorted, (size_t)nt, sizeof(*tsorted), cmp_meta_ptr);
	if (!strcmp(name, "range"))
		rc = assign_range(sorted, nm, tsorted, nt);
	else
		rc = assign_roundrobin(sorted, nm, tsorted, nt);
	for (int i = 0; i < nm; i++) {
		if (rc)
			grpproto_tplist_free(&members[i].assigned);
		else
			grpproto_tplist_sort(&members[i].assigned);
	}
out:
	free(sorted);
	free(tsorted);
	return rc;
}
