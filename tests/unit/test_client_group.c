/*
 * test_client_group.c — consumer-group embedded protocol (client/grpproto.c):
 * the range and roundrobin assignors against Kafka's documented results,
 * byte-exact ConsumerProtocolSubscription/Assignment encodings (the bytes
 * librdkafka 2.0.2 sends), and decoding of the real librdkafka
 * JoinGroup/SyncGroup frames in tests/captures/d-group; static membership
 * (KIP-345): member order by group.instance.id, the group.instance.id
 * setting and FENCED_INSTANCE_ID.
 *
 * The order of the rebalance callback (REVOKED before the commit and the
 * rejoin, ASSIGNED before any message) needs a group coordinator: it is
 * tested against sluiced in tests/integration/test_client_groups.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpproto.h"
#include "sluice.h"

#ifndef CAPTURES_DIR
#error "the build defines CAPTURES_DIR (tests/unit/meson.build)"
#endif

static uint8_t *load(const char *rel, size_t *len)
{
	char path[1024];
	FILE *f;
	long n;
	uint8_t *p;

	snprintf(path, sizeof(path), "%s/%s", CAPTURES_DIR, rel);
	f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* "t:0,1;u:2" style rendering of an assignment (sorted). */
static void render(const struct grpproto_tplist *l, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (int i = 0; i < l->n; i++) {
		o += (size_t)snprintf(out + o, cap - o, "%s%s:", i ? ";" : "", l->t[i].topic);
		for (int j = 0; j < l->t[i].nparts; j++)
			o += (size_t)snprintf(out + o, cap - o, "%s%d", j ? "," : "", l->t[i].parts[j]);
	}
}

static struct grpproto_sub make_sub(const char **topics, int n)
{
	struct grpproto_sub s = { 0 };

	s.version = 1;
	s.topics = (char **)topics;
	s.ntopics = n;
	return s;
}

static void run_assign(const char *name, const char **ids, struct grpproto_sub *subs, int nm,
		       const struct grpproto_topic_meta *meta, int nt, const char **expect)
{
	struct grpproto_member m[8];
	char buf[512];

	memset(m, 0, sizeof(m));
	for (int i = 0; i < nm; i++) {
		m[i].member_id = ids[i];
		m[i].sub = &subs[i];
	}
	assert_int_equal(grpproto_assign(name, m, nm, meta, nt), 0);
	for (int i = 0; i < nm; i++) {
		render(&m[i].assigned, buf, sizeof(buf));
		assert_string_equal(buf, expect[i]);
		grpproto_tplist_free(&m[i].assigned);
	}
}

static void test_client_group_range_two_members_three_partitions(void **state)
{
	const char *t[] = { "t" };
	const char *ids[] = { "m-b", "m-a" }; /* given unsorted: sorted by id */
	struct grpproto_sub s[] = { make_sub(t, 1), make_sub(t, 1) };
	const struct grpproto_topic_meta meta[] = { { "t", 3 } };
	const char *expect[] = { "t:2", "t:0,1" };

	(void)state;
	run_assign("range", ids, s, 2, meta, 1, expect);
}

static void test_client_group_range_per_topic(void **state)
{
	/* Kafka's RangeAssignor javadoc: C0, C1 on t0, t1 with 3 partitions each:
	 * C0: [t0p0, t0p1, t1p0, t1p1], C1: [t0p2, t1p2] */
	const char *t[] = { "t0", "t1" };
	const char *ids[] = { "C0", "C1" };
	struct grpproto_sub s[] = { make_sub(t, 2), make_sub(t, 2) };
	const struct grpproto_topic_meta meta[] = { { "t1", 3 }, { "t0", 3 } };
	const char *expect[] = { "t0:0,1;t1:0,1", "t0:2;t1:2" };

	(void)state;
	run_assign("range", ids, s, 2, meta, 2, expect);
}

static void test_client_group_range_six_partitions_three_members(void **state)
{
	const char *t[] = { "t6" };
	const char *ids[] = { "a", "b", "c" };
	struct grpproto_sub s[] = { make_sub(t, 1), make_sub(t, 1), make_sub(t, 1) };
	const struct grpproto_topic_meta meta[] = { { "t6", 6 }, { "other", 4 } };
	const char *expect[] = { "t6:0,1", "t6:2,3", "t6:4,5" };

	(void)state;
	run_assign("range", ids, s, 3, meta, 2, expect);
}

static void test_client_group_roundrobin_interleaves(void **state)
{
	/* Kafka's RoundRobinAssignor javadoc: C0, C1 on t0, t1 with 3
	 * partitions each: C0: [t0p0, t0p2, t1p1], C1: [t0p1, t1p0, t1p2] */
	const char *t[] = { "t1", "t0" };
	const char *ids[] = { "C1", "C0" };
	struct grpproto_sub s[] = { make_sub(t, 2), make_sub(t, 2) };
	const struct grpproto_topic_meta meta[] = { { "t1", 3 }, { "t0", 3 } };
	const char *expect[] = { "t0:1;t1:0,2", "t0:0,2;t1:1" };

	(void)state;
	run_assign("roundrobin", ids, s, 2, meta, 2, expect);
}

static void test_client_group_roundrobin_unequal_subscriptions(void **state)
{
	/* javadoc: C0 [t0], C1 [t0, t1], C2 [t0, t1, t2]; t0:1, t1:2, t2:3 ->
	 * C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0, t2p1, t2p2] */
	const char *s0[] = { "t0" }, *s1[] = { "t0", "t1" }, *s2[] = { "t0", "t1", "t2" };
	const char *ids[] = { "C0", "C1", "C2" };
	struct grpproto_sub s[] = { make_sub(s0, 1), make_sub(s1, 2), make_sub(s2, 3) };
	const struct grpproto_topic_meta meta[] = { { "t0", 1 }, { "t1", 2 }, { "t2", 3 } };
	const char *expect[] = { "t0:0", "t1:0", "t1:1;t2:0,1,2" };

	(void)state;
	run_assign("roundrobin", ids, s, 3, meta, 3, expect);
}

static void test_client_group_unknown_assignor_rejected(void **state)
{
	struct grpproto_member m = { 0 };

	(void)state;
	assert_int_equal(grpproto_assign("sticky", &m, 1, NULL, 0), GRPPROTO_E_BAD);
}

static void run_assign_static(const char *name, const char **ids, const char **insts,
			      struct grpproto_sub *subs, int nm,
			      const struct grpproto_topic_meta *meta, int nt, const char **expect)
{
	struct grpproto_member m[8];
	char buf[512];

	memset(m, 0, sizeof(m));
	for (int i = 0; i < nm; i++) {
		m[i].member_id = ids[i];
		m[i].instance_id = insts[i];
		m[i].sub = &subs[i];
	}
	assert_int_equal(grpproto_assign(name, m, nm, meta, nt), 0);
	for (int i = 0; i < nm; i++) {
		render(&m[i].assigned, buf, sizeof(buf));
		assert_string_equal(buf, expect[i]);
		grpproto_tplist_free(&m[i].assigned);
	}
}

static void test_client_group_range_orders_static_members_by_instance_id(void **state)
{
	/* Java's MemberInfo order: instance ids first (sorted), then member
	 * ids.  "s1" restarted with a member id that sorts after "s2"'s still
	 * gets the first range, so a restart keeps its partitions. */
	const char *t[] = { "t" };
	const char *ids[] = { "zzz-new", "aaa", "0-dynamic" };
	const char *insts[] = { "s1", "s2", NULL };
	struct grpproto_sub s[] = { make_sub(t, 1), make_sub(t, 1), make_sub(t, 1) };
	const struct grpproto_topic_meta meta[] = { { "t", 6 } };
	const char *expect[] = { "t:0,1", "t:2,3", "t:4,5" };

	(void)state;
	run_assign_static("range", ids, insts, s, 3, meta, 1, expect);
}

static void test_client_group_roundrobin_orders_static_members_by_instance_id(void **state)
{
	const char *t[] = { "t" };
	const char *ids[] = { "b", "a" };
	const char *insts[] = { "i1", "i2" };
	struct grpproto_sub s[] = { make_sub(t, 1), make_sub(t, 1) };
	const struct grpproto_topic_meta meta[] = { { "t", 4 } };
	const char *expect[] = { "t:0,2", "t:1,3" };

	(void)state;
	run_assign_static("roundrobin", ids, insts, s, 2, meta, 1, expect);
}

static void test_client_group_instance_id_setting(void **state)
{
	sluice_conf_t *conf = sluice_conf_new();
	char v[300], longv[300];
	size_t n = sizeof(v);

	(void)state;
	assert_non_null(conf);
	n = sizeof(v);
	assert_int_equal(sluice_conf_get(conf, "group.instance.id", v, &n), SLUICE_ERR_NO_ERROR);
	assert_string_equal(v, ""); /* default: dynamic member */
	assert_int_equal(sluice_conf_set(conf, "group.instance.id", "host-7", NULL, 0),
			 SLUICE_ERR_NO_ERROR);
	n = sizeof(v);
	assert_int_equal(sluice_conf_get(conf, "group.instance.id", v, &n), SLUICE_ERR_NO_ERROR);
	assert_string_equal(v, "host-7");
	memset(longv, 'x', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	assert_int_equal(sluice_conf_set(conf, "group.instance.id", longv, NULL, 0),
			 SLUICE_ERR_BAD_CONFIG);
	n = sizeof(v);
	assert_int_equal(sluice_conf_get(conf, "group.instance.id", v, &n), SLUICE_ERR_NO_ERROR);
	assert_string_equal(v, "host-7"); /* unchanged on failure */
	sluice_conf_destroy(conf);
}

static void test_client_group_fenced_instance_id_error(void **state)
{
	(void)state;
	assert_int_equal(SLUICE_ERR_FENCED_INSTANCE_ID, 82);
	assert_string_equal(sluice_err2name(SLUICE_ERR_FENCED_INSTANCE_ID), "FENCED_INSTANCE_ID");
	assert_non_null(strstr(sluice_err2str(SLUICE_ERR_FENCED_INSTANCE_ID), "group.instance.id"));
	assert_false(sluice_err_is_retriable(SLUICE_ERR_FENCED_INSTANCE_ID));
}

/* The subscription and assignment librdkafka 2.0.2 put on the wire for
 * group grp / topic t3 (d-group frames 0019 and 0023). */
static const uint8_t rdk_sub[] = { 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 't', '3',
				   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t rdk_asg[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 't', '3',
				   0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
				   0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00 };

static void test_client_group_subscription_bytes_match_librdkafka(void **state)
{
	const char *t[] = { "t3" };
	wire_buf b;
	struct grpproto_sub s;

	(void)state;
	wire_buf_init(&b);
	grpproto_sub_encode(&b, t, 1);
	assert_false(b.oom);
	assert_int_equal(b.len, sizeof(rdk_sub));
	assert_memory_equal(b.data, rdk_sub, sizeof(rdk_sub));
	assert_int_equal(grpproto_sub_decode(b.data, b.len, &s), 0);
	assert_int_equal(s.version, 1);
	assert_int_equal(s.ntopics, 1);
	assert_string_equal(s.topics[0], "t3");
	grpproto_sub_free(&s);
	wire_buf_free(&b);
}

static void test_client_group_subscription_v0_and_truncated(void **state)
{
	/* v0: version, topics, user_data null */
	const uint8_t v0[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 'a',
			       0x00, 0x01, 'b', 0xff, 0xff, 0xff, 0xff };
	struct grpproto_sub s;

	(void)state;
	assert_int_equal(grpproto_sub_decode(v0, sizeof(v0), &s), 0);
	assert_int_equal(s.version, 0);
	assert_int_equal(s.ntopics, 2);
	assert_string_equal(s.topics[1], "b");
	grpproto_sub_free(&s);
	for (size_t n = 0; n < sizeof(v0); n++)
		assert_int_equal(grpproto_sub_decode(v0, n, &s), GRPPROTO_E_BAD);
}

static void test_client_group_assignment_bytes_match_librdkafka(void **state)
{
	struct grpproto_tplist l = { 0 }, d = { 0 };
	wire_buf b;
	char buf[64];

	(void)state;
	for (int p = 2; p >= 0; p--)
		assert_int_equal(grpproto_tplist_add(&l, "t3", 2, p), 0);
	grpproto_tplist_sort(&l);
	wire_buf_init(&b);
	grpproto_assignment_encode(&b, &l);
	assert_int_equal(b.len, sizeof(rdk_asg));
	assert_memory_equal(b.data, rdk_asg, sizeof(rdk_asg));
	assert_int_equal(grpproto_assignment_decode(b.data, b.len, &d), 0);
	render(&d, buf, sizeof(buf));
	assert_string_equal(buf, "t3:0,1,2");
	grpproto_tplist_free(&d);
	/* empty buffer = empty assignment (Java); a truncated one is an error */
	assert_int_equal(grpproto_assignment_decode(NULL, 0, &d), 0);
	assert_int_equal(d.n, 0);
	assert_int_equal(grpproto_assignment_decode(b.data, 12, &d), GRPPROTO_E_BAD);
	grpproto_tplist_free(&l);
	wire_buf_free(&b);
}

/* Skips the request header: size, api, version, correlation, client id. */
static void skip_req_header(wire_rd *rd)
{
	wire_rd_i32(rd);
	wire_rd_i16(rd);
	wire_rd_i16(rd);
	wire_rd_i32(rd);
	wire_rd_str(rd);
}

static void test_client_group_decodes_librdkafka_joingroup(void **state)
{
	size_t len;
	uint8_t *f = load("d-group/0019-req-JoinGroup-v5.bin", &len);
	wire_rd rd;
	int32_t np;

	(void)state;
	wire_rd_init(&rd, f, len);
	skip_req_header(&rd);
	assert_true(wire_str_eq(wire_rd_str(&rd), "grp"));
	wire_rd_i32(&rd); /* session */
	wire_rd_i32(&rd); /* rebalance */
	assert_int_equal(wire_rd_str(&rd).len, 0); /* empty member id */
	assert_int_equal(wire_rd_str(&rd).len, -1); /* group instance id */
	assert_true(wire_str_eq(wire_rd_str(&rd), "consumer"));
	np = wire_rd_array(&rd, 6);
	assert_int_equal(np, 2);
	for (int i = 0; i < np; i++) {
		wire_str name = wire_rd_str(&rd);
		wire_str md = wire_rd_bytes(&rd);
		struct grpproto_sub s;

		assert_false(rd.err);
		assert_true(wire_str_eq(name, i ? "roundrobin" : "range"));
		assert_int_equal(grpproto_sub_decode(md.ptr, (size_t)md.len, &s), 0);
		assert_int_equal(s.ntopics, 1);
		assert_string_equal(s.topics[0], "t3");
		assert_int_equal(s.owned.n, 0);
		grpproto_sub_free(&s);
		/* and we would have sent exactly these bytes */
		assert_int_equal(md.len, sizeof(rdk_sub));
		assert_memory_equal(md.ptr, rdk_sub, sizeof(rdk_sub));
	}
	assert_int_equal(wire_rd_left(&rd), 0);
	free(f);
}

static void test_client_group_decodes_librdkafka_joingroup_response(void **state)
{
	size_t len;
	uint8_t *f = load("d-group/0020-resp-JoinGroup-v5.bin", &len);
	wire_rd rd;
	struct grpproto_sub s;
	wire_str md;

	(void)state;
	wire_rd_init(&rd, f, len);
	wire_rd_i32(&rd); /* size */
	wire_rd_i32(&rd); /* correlation */
	wire_rd_i32(&rd); /* throttle */
	assert_int_equal(wire_rd_i16(&rd), 0);
	wire_rd_i32(&rd); /* generation */
	assert_true(wire_str_eq(wire_rd_str(&rd), "range"));
	wire_rd_str(&rd); /* leader */
	wire_rd_str(&rd); /* member */
	assert_int_equal(wire_rd_array(&rd, 6), 1);
	wire_rd_str(&rd);
	wire_rd_str(&rd);
	md = wire_rd_bytes(&rd);
	assert_false(rd.err);
	assert_int_equal(grpproto_sub_decode(md.ptr, (size_t)md.len, &s), 0);
	assert_string_equal(s.topics[0], "t3");
	grpproto_sub_free(&s);
	free(f);
}

static void test_client_group_decodes_librdkafka_syncgroup(void **state)
{
	size_t len, rlen;
	uint8_t *f = load("d-group/0023-req-SyncGroup-v3.bin", &len);
	uint8_t *g = load("d-group/0024-resp-SyncGroup-v3.bin", &rlen);
	wire_rd rd;
	wire_str a;
	struct grpproto_tplist l;
	char buf[64];

	(void)state;
	wire_rd_init(&rd, f, len);
	skip_req_header(&rd);
	assert_true(wire_str_eq(wire_rd_str(&rd), "grp"));
	wire_rd_i32(&rd);
	wire_rd_str(&rd);
	wire_rd_str(&rd); /* instance id */
	assert_int_equal(wire_rd_array(&rd, 6), 1);
	wire_rd_str(&rd);
	a = wire_rd_bytes(&rd);
	assert_false(rd.err);
	assert_int_equal(a.len, sizeof(rdk_asg));
	assert_memory_equal(a.ptr, rdk_asg, sizeof(rdk_asg));
	/* the response carries the same assignment back */
	wire_rd_init(&rd, g, rlen);
	wire_rd_i32(&rd);
	wire_rd_i32(&rd);
	wire_rd_i32(&rd);
	assert_int_equal(wire_rd_i16(&rd), 0);
	a = wire_rd_bytes(&rd);
	assert_false(rd.err);
	assert_int_equal(grpproto_assignment_decode(a.ptr, (size_t)a.len, &l), 0);
	render(&l, buf, sizeof(buf));
	assert_string_equal(buf, "t3:0,1,2");
	grpproto_tplist_free(&l);
	free(f);
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_group_range_two_members_three_partitions),
		cmocka_unit_test(test_client_group_range_per_topic),
		cmocka_unit_test(test_client_group_range_six_partitions_three_members),
		cmocka_unit_test(test_client_group_roundrobin_interleaves),
		cmocka_unit_test(test_client_group_roundrobin_unequal_subscriptions),
		cmocka_unit_test(test_client_group_unknown_assignor_rejected),
		cmocka_unit_test(test_client_group_range_orders_static_members_by_instance_id),
		cmocka_unit_test(test_client_group_roundrobin_orders_static_members_by_instance_id),
		cmocka_unit_test(test_client_group_instance_id_setting),
		cmocka_unit_test(test_client_group_fenced_instance_id_error),
		cmocka_unit_test(test_client_group_subscription_bytes_match_librdkafka),
		cmocka_unit_test(test_client_group_subscription_v0_and_truncated),
		cmocka_unit_test(test_client_group_assignment_bytes_match_librdkafka),
		cmocka_unit_test(test_client_group_decodes_librdkafka_joingroup),
		cmocka_unit_test(test_client_group_decodes_librdkafka_joingroup_response),
		cmocka_unit_test(test_client_group_decodes_librdkafka_syncgroup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
