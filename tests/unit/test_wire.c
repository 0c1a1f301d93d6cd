/*
 * test_wire.c — proto/wire: every primitive written and read back, varints
 * against hand-written byte vectors, and the reader's refusal to overrun.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define BYTES(...) ((const uint8_t[]){ __VA_ARGS__ }), sizeof((const uint8_t[]){ __VA_ARGS__ })

/* Asserts that b holds exactly the n bytes at want. */
static void assert_buf(const wire_buf *b, const uint8_t *want, size_t n)
{
	assert_false(b->oom);
	assert_int_equal(b->len, n);
	assert_memory_equal(b->data, want, n);
}

/* ---- fixed-size integers ---- */

static void test_wire_int_big_endian(void **state)
{
	wire_buf b;

	(void)state;
	wire_buf_init(&b);
	wire_w_i8(&b, -2);
	wire_w_i16(&b, 0x1234);
	wire_w_i32(&b, 0x01020304);
	wire_w_i64(&b, 0x0102030405060708);
	assert_buf(&b, BYTES(0xfe, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04,
			     0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08));
	wire_buf_free(&b);
}

static void test_wire_int_round_trip(void **state)
{
	static const int8_t v8[] = { 0, 1, -1, INT8_MIN, INT8_MAX };
	static const int16_t v16[] = { 0, 1, -1, INT16_MIN, INT16_MAX };
	static const int32_t v32[] = { 0, 1, -1, INT32_MIN, INT32_MAX };
	static const int64_t v64[] = { 0, 1, -1, INT64_MIN, INT64_MAX };
	wire_buf b;
	wire_rd rd;

	(void)state;
	wire_buf_init(&b);
	for (size_t i = 0; i < 5; i++) {
		wire_w_i8(&b, v8[i]);
		wire_w_i16(&b, v16[i]);
		wire_w_i32(&b, v32[i]);
		wire_w_i64(&b, v64[i]);
	}
	assert_int_equal(b.len, 5 * 15);
	wire_rd_init(&rd, b.data, b.len);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(wire_rd_i8(&rd), v8[i]);
		assert_int_equal(wire_rd_i16(&rd), v16[i]);
		assert_int_equal(wire_rd_i32(&rd), v32[i]);
		assert_true(wire_rd_i64(&rd) == v64[i]);
	}
	assert_false(rd.err);
	assert_int_equal(wire_rd_left(&rd), 0);
	wire_buf_free(&b);
}

/* ---- varints ---- */

struct vec {
	int64_t v;
	uint8_t bytes[10];
	size_t n;
};

static const struct vec varint_vecs[] = {
	{ 0, { 0x00 }, 1 },
	{ -1, { 0x01 }, 1 },
	{ 1, { 0x02 }, 1 },
	{ 63, { 0x7e }, 1 },
	{ -64, { 0x7f }, 1 },
	{ 64, { 0x80, 0x01 }, 2 },
	{ -65, { 0x81, 0x01 }, 2 },
	{ 300, { 0xd8, 0x04 }, 2 },
	{ INT32_MAX, { 0xfe, 0xff, 0xff, 0xff, 0x0f }, 5 },
	{ INT32_MIN, { 0xff, 0xff, 0xff, 0xff, 0x0f }, 5 },
};

static const struct vec varlong_vecs[] = {
	{ 0, { 0x00 }, 1 },
	{ -1, { 0x01 }, 1 },
	{ 1, { 0x02 }, 1 },
	{ 63, { 0x7e }, 1 },
	{ -64, { 0x7f }, 1 },
	{ 64, { 0x80, 0x01 }, 2 },
	{ INT32_MAX, { 0xfe, 0xff, 0xff, 0xff, 0x0f }, 5 },
	{ INT32_MIN, { 0xff, 0xff, 0xff, 0xff, 0x0f }, 5 },
	{ (int64_t)INT32_MAX + 1, { 0x80, 0x80, 0x80, 0x80, 0x10 }, 5 },
	{ INT64_MAX, { 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 10 },
	{ INT64_MIN, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 10 },
};

#define NVEC(a) (sizeof(a) / sizeof((a)[0]))

static void test_wire_varint_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < NVEC(varint_vecs); i++) {
		const struct vec *t = &varint_vecs[i];
		wire_buf b;
		wire_rd rd;

		wire_buf_init(&b);
		wire_w_varint(&b, (int32_t)t->v);
		assert_buf(&b, t->bytes, t->n);
		assert_int_equal(wire_varint_size((int32_t)t->v), t->n);
		wire_rd_init(&rd, t->bytes, t->n);
		assert_int_equal(wire_rd_varint(&rd), t->v);
		assert_false(rd.err);
		assert_int_equal(wire_rd_left(&rd), 0);
		wire_buf_free(&b);
	}
}

static void test_wire_varlong_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < NVEC(varlong_vecs); i++) {
		const struct vec *t = &varlong_vecs[i];
		wire_buf b;
		wire_rd rd;

		wire_buf_init(&b);
		wire_w_varlong(&b, t->v);
		assert_buf(&b, t->bytes, t->n);
		assert_int_equal(wire_varlong_size(t->v), t->n);
		wire_rd_init(&rd, t->bytes, t->n);
		assert_true(wire_rd_varlong(&rd) == t->v);
		assert_false(rd.err);
		assert_int_equal(wire_rd_left(&rd), 0);
		wire_buf_free(&b);
	}
}

static void test_wire_uvarint_vectors(void **state)
{
	static const struct {
		uint32_t v;
		uint8_t bytes[5];
		size_t n;
	} vecs[] = {
		{ 0, { 0x00 }, 1 },
		{ 1, { 0x01 }, 1 },
		{ 127, { 0x7f }, 1 },
		{ 128, { 0x80, 0x01 }, 2 },
		{ 16383, { 0xff, 0x7f }, 2 },
		{ 16384, { 0x80, 0x80, 0x01 }, 3 },
		{ UINT32_MAX, { 0xff, 0xff, 0xff, 0xff, 0x0f }, 5 },
	};

	(void)state;
	for (size_t i = 0; i < NVEC(vecs); i++) {
		wire_buf b;
		wire_rd rd;

		wire_buf_init(&b);
		wire_w_uvarint(&b, vecs[i].v);
		assert_buf(&b, vecs[i].bytes, vecs[i].n);
		wire_rd_init(&rd, vecs[i].bytes, vecs[i].n);
		assert_int_equal(wire_rd_uvarint(&rd), vecs[i].v);
		assert_false(rd.err);
		wire_buf_free(&b);
	}
}

static void test_wire_uvarlong_round_trip(void **state)
{
	static const uint8_t max[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	static const uint8_t v300[] = { 0xac, 0x02 };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, max, sizeof(max));
	assert_true(wire_rd_uvarlong(&rd) == UINT64_MAX);
	assert_false(rd.err);
	wire_rd_init(&rd, v300, sizeof(v300));
	assert_true(wire_rd_uvarlong(&rd) == 300);
	assert_false(rd.err);
}

static void test_wire_varint_rejects_malformed(void **state)
{
	/* Continuation bit on the last byte available. */
	static const uint8_t cut[] = { 0x80, 0x80 };
	/* Six bytes: longer than any 32-bit varint. */
	static const uint8_t long32[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
	/* Five bytes whose value needs 33 bits. */
	static const uint8_t wide32[] = { 0xff, 0xff, 0xff, 0xff, 0x1f };
	/* Eleven bytes: longer than any 64-bit varint. */
	static const uint8_t long64[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
					  0x80, 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t empty[1];
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, cut, sizeof(cut));
	assert_int_equal(wire_rd_varint(&rd), 0);
	assert_true(rd.err);
	wire_rd_init(&rd, long32, sizeof(long32));
	assert_int_equal(wire_rd_uvarint(&rd), 0);
	assert_true(rd.err);
	wire_rd_init(&rd, wide32, sizeof(wide32));
	assert_int_equal(wire_rd_uvarint(&rd), 0);
	assert_true(rd.err);
	wire_rd_init(&rd, long64, sizeof(long64));
	assert_true(wire_rd_varlong(&rd) == 0);
	assert_true(rd.err);
	wire_rd_init(&rd, empty, 0);
	assert_int_equal(wire_rd_varint(&rd), 0);
	assert_true(rd.err);
}

/* ---- the sticky error ---- */

static void test_wire_overrun_is_sticky(void **state)
{
	static const uint8_t buf[] = { 0x00, 0x01, 0x02 };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, buf, sizeof(buf));
	assert_int_equal(wire_rd_i32(&rd), 0);
	assert_true(rd.err);
	/* Three bytes are still there, but every later read fails. */
	assert_int_equal(wire_rd_i8(&rd), 0);
	assert_int_equal(wire_rd_i16(&rd), 0);
	assert_null(wire_rd_take(&rd, 1));
	assert_int_equal(wire_rd_left(&rd), 0);
	assert_int_equal(wire_rd_str(&rd).len, -1);
	assert_true(rd.err);
}

static void test_wire_take_exact(void **state)
{
	static const uint8_t buf[] = { 1, 2, 3, 4 };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, buf, sizeof(buf));
	assert_ptr_equal(wire_rd_take(&rd, 3), buf);
	assert_int_equal(wire_rd_left(&rd), 1);
	assert_ptr_equal(wire_rd_take(&rd, 1), buf + 3);
	assert_ptr_equal(wire_rd_take(&rd, 0), buf + 4);
	assert_false(rd.err);
	assert_null(wire_rd_take(&rd, 1));
	assert_true(rd.err);
}

/* ---- strings and bytes ---- */

static void test_wire_str_round_trip(void **state)
{
	wire_buf b;
	wire_rd rd;
	wire_str s;

	(void)state;
	wire_buf_init(&b);
	wire_w_str(&b, "sluice");
	wire_w_str(&b, "");
	wire_w_str(&b, NULL);
	wire_w_strn(&b, "abcdef", 3);
	assert_buf(&b, BYTES(0, 6, 's', 'l', 'u', 'i', 'c', 'e', 0, 0, 0xff, 0xff,
			     0, 3, 'a', 'b', 'c'));
	wire_rd_init(&rd, b.data, b.len);
	s = wire_rd_str(&rd);
	assert_true(wire_str_eq(s, "sluice"));
	s = wire_rd_str(&rd);
	assert_int_equal(s.len, 0);
	assert_true(wire_str_eq(s, ""));
	s = wire_rd_str(&rd);
	assert_int_equal(s.len, -1);
	assert_null(s.ptr);
	assert_false(wire_str_eq(s, ""));
	assert_true(wire_str_eq(wire_rd_str(&rd), "abc"));
	assert_false(rd.err);
	assert_int_equal(wire_rd_left(&rd), 0);
	wire_buf_free(&b);
}

static void test_wire_bytes_round_trip(void **state)
{
	static const uint8_t payload[] = { 0x00, 0xff, 0x10 };
	wire_buf b;
	wire_rd rd;
	wire_str s;

	(void)state;
	wire_buf_init(&b);
	wire_w_bytes(&b, payload, 3);
	wire_w_bytes(&b, NULL, 0);
	wire_w_bytes(&b, payload, 0);
	wire_w_vbytes(&b, payload, 3);
	wire_w_vbytes(&b, NULL, 0);
	wire_w_vbytes(&b, payload, 0);
	assert_buf(&b, BYTES(0, 0, 0, 3, 0x00, 0xff, 0x10, 0xff, 0xff, 0xff, 0xff,
			     0, 0, 0, 0, 0x06, 0x00, 0xff, 0x10, 0x01, 0x00));
	wire_rd_init(&rd, b.data, b.len);
	s = wire_rd_bytes(&rd);
	assert_int_equal(s.len, 3);
	assert_memory_equal(s.ptr, payload, 3);
	assert_int_equal(wire_rd_bytes(&rd).len, -1);
	assert_int_equal(wire_rd_bytes(&rd).len, 0);
	s = wire_rd_vbytes(&rd);
	assert_int_equal(s.len, 3);
	assert_memory_equal(s.ptr, payload, 3);
	assert_int_equal(wire_rd_vbytes(&rd).len, -1);
	assert_int_equal(wire_rd_vbytes(&rd).len, 0);
	assert_false(rd.err);
	assert_int_equal(wire_rd_left(&rd), 0);
	wire_buf_free(&b);
}

static void test_wire_negative_length_rejected(void **state)
{
	static const uint8_t str_m2[] = { 0xff, 0xfe, 'x', 'x' };
	static const uint8_t str_min[] = { 0x80, 0x00 };
	static const uint8_t bytes_m2[] = { 0xff, 0xff, 0xff, 0xfe, 'x', 'x' };
	static const uint8_t bytes_min[] = { 0x80, 0x00, 0x00, 0x00 };
	static const uint8_t vbytes_m2[] = { 0x03, 'x', 'x' };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, str_m2, sizeof(str_m2));
	assert_int_equal(wire_rd_str(&rd).len, -1);
	assert_true(rd.err);
	wire_rd_init(&rd, str_min, sizeof(str_min));
	wire_rd_str(&rd);
	assert_true(rd.err);
	wire_rd_init(&rd, bytes_m2, sizeof(bytes_m2));
	assert_int_equal(wire_rd_bytes(&rd).len, -1);
	assert_true(rd.err);
	wire_rd_init(&rd, bytes_min, sizeof(bytes_min));
	wire_rd_bytes(&rd);
	assert_true(rd.err);
	wire_rd_init(&rd, vbytes_m2, sizeof(vbytes_m2));
	assert_int_equal(wire_rd_vbytes(&rd).len, -1);
	assert_true(rd.err);
}

static void test_wire_length_past_end_rejected(void **state)
{
	static const uint8_t str[] = { 0x00, 0x05, 'a', 'b', 'c', 'd' };
	static const uint8_t bytes[] = { 0x7f, 0xff, 0xff, 0xff, 'a' };
	static const uint8_t vbytes[] = { 0x04, 'a' };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, str, sizeof(str));
	assert_int_equal(wire_rd_str(&rd).len, -1);
	assert_true(rd.err);
	wire_rd_init(&rd, bytes, sizeof(bytes));
	assert_int_equal(wire_rd_bytes(&rd).len, -1);
	assert_true(rd.err);
	wire_rd_init(&rd, vbytes, sizeof(vbytes));
	assert_int_equal(wire_rd_vbytes(&rd).len, -1);
	assert_true(rd.err);
}

static void test_wire_str_copy(void **state)
{
	wire_str s = { "topic", 5 };
	wire_str null = { NULL, -1 };
	char dst[8];

	(void)state;
	assert_true(wire_str_copy(s, dst, sizeof(dst)));
	assert_string_equal(dst, "topic");
	/* Needs 6 bytes with the NUL. */
	assert_false(wire_str_copy(s, dst, 5));
	assert_string_equal(dst, "");
	assert_true(wire_str_copy(s, dst, 6));
	assert_false(wire_str_copy(null, dst, sizeof(dst)));
	assert_string_equal(dst, "");
	assert_false(wire_str_eq(s, "topi"));
	assert_false(wire_str_eq(s, "topics"));
}

/* ---- arrays ---- */

static void test_wire_array_counts(void **state)
{
	static const uint8_t two[] = { 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8 };
	static const uint8_t null[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t neg[] = { 0xff, 0xff, 0xff, 0xfe };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, two, sizeof(two));
	assert_int_equal(wire_rd_array(&rd, 4), 2);
	assert_false(rd.err);
	wire_rd_init(&rd, two, sizeof(two));
	/* Two elements of 5 bytes cannot fit in 8. */
	assert_int_equal(wire_rd_array(&rd, 5), 0);
	assert_true(rd.err);
	wire_rd_init(&rd, null, sizeof(null));
	assert_int_equal(wire_rd_array(&rd, 4), -1);
	assert_false(rd.err);
	wire_rd_init(&rd, neg, sizeof(neg));
	assert_int_equal(wire_rd_array(&rd, 4), 0);
	assert_true(rd.err);
}

static void test_wire_array_caps_huge_count(void **state)
{
	static const uint8_t huge[] = { 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0 };
	wire_rd rd;

	(void)state;
	wire_rd_init(&rd, huge, sizeof(huge));
	assert_int_equal(wire_rd_array(&rd, 1), 0);
	assert_true(rd.err);
	wire_rd_init(&rd, huge, 3);
	assert_int_equal(wire_rd_array(&rd, 1), 0);
	assert_true(rd.err);
}

/* ---- the writer ---- */

static void test_wire_buf_grows(void **state)
{
	wire_buf b;
	uint8_t chunk[1000];

	(void)state;
	wire_buf_init(&b);
	assert_null(b.data);
	for (size_t i = 0; i < 300; i++) {
		memset(chunk, (int)(i & 0xff), sizeof(chunk));
		assert_non_null(wire_buf_append(&b, chunk, sizeof(chunk)));
	}
	assert_false(b.oom);
	assert_int_equal(b.len, 300 * sizeof(chunk));
	assert_true(b.cap >= b.len);
	for (size_t i = 0; i < 300; i++)
		assert_int_equal(b.data[i * sizeof(chunk) + 999], i & 0xff);
	wire_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	wire_buf_free(&b); /* twice is harmless */
}

static void test_wire_buf_reset_keeps_memory(void **state)
{
	wire_buf b;
	uint8_t *data;
	size_t cap;

	(void)state;
	wire_buf_init(&b);
	wire_w_i64(&b, 42);
	data = b.data;
	cap = b.cap;
	wire_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.data, data);
	assert_int_equal(b.cap, cap);
	wire_w_i8(&b, 7);
	assert_buf(&b, BYTES(7));
	wire_buf_free(&b);
}

static void test_wire_buf_reserve_does_not_advance(void **state)
{
	wire_buf b;
	uint8_t *p;

	(void)state;
	wire_buf_init(&b);
	wire_w_i8(&b, 1);
	p = wire_buf_reserve(&b, 4096);
	assert_non_null(p);
	assert_ptr_equal(p, b.data + 1);
	assert_int_equal(b.len, 1);
	assert_true(b.cap >= 4097);
	wire_buf_free(&b);
}

static void test_wire_buf_oom_is_sticky(void **state)
{
	wire_buf b;

	(void)state;
	wire_buf_init(&b);
	wire_w_i8(&b, 1);
	/* No allocator can satisfy this; the doubling guard refuses it. */
	assert_null(wire_buf_reserve(&b, SIZE_MAX));
	assert_true(b.oom);
	wire_w_i32(&b, 5);
	assert_null(wire_buf_append(&b, "x", 1));
	assert_int_equal(b.len, 1);
	wire_buf_reset(&b);
	assert_false(b.oom);
	wire_buf_free(&b);
}

static void test_wire_placeholder_patch(void **state)
{
	wire_buf b;
	size_t at;

	(void)state;
	wire_buf_init(&b);
	wire_w_i16(&b, 0x0102);
	at = wire_w_placeholder32(&b);
	assert_int_equal(at, 2);
	wire_w_str(&b, "ab");
	wire_patch32(&b, at, (int32_t)(b.len - at - 4));
	assert_buf(&b, BYTES(0x01, 0x02, 0, 0, 0, 4, 0, 2, 'a', 'b'));
	/* A patch that would run past len is ignored. */
	wire_patch32(&b, b.len - 2, -1);
	wire_patch32(&b, b.len, -1);
	assert_buf(&b, BYTES(0x01, 0x02, 0, 0, 0, 4, 0, 2, 'a', 'b'));
	wire_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wire_int_big_endian),
		cmocka_unit_test(test_wire_int_round_trip),
		cmocka_unit_test(test_wire_varint_vectors),
		cmocka_unit_test(test_wire_varlong_vectors),
		cmocka_unit_test(test_wire_uvarint_vectors),
		cmocka_unit_test(test_wire_uvarlong_round_trip),
		cmocka_unit_test(test_wire_varint_rejects_malformed),
		cmocka_unit_test(test_wire_overrun_is_sticky),
		cmocka_unit_test(test_wire_take_exact),
		cmocka_unit_test(test_wire_str_round_trip),
		cmocka_unit_test(test_wire_bytes_round_trip),
		cmocka_unit_test(test_wire_negative_length_rejected),
		cmocka_unit_test(test_wire_length_past_end_rejected),
		cmocka_unit_test(test_wire_str_copy),
		cmocka_unit_test(test_wire_array_counts),
		cmocka_unit_test(test_wire_array_caps_huge_count),
		cmocka_unit_test(test_wire_buf_grows),
		cmocka_unit_test(test_wire_buf_reset_keeps_memory),
		cmocka_unit_test(test_wire_buf_reserve_does_not_advance),
		cmocka_unit_test(test_wire_buf_oom_is_sticky),
		cmocka_unit_test(test_wire_placeholder_patch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
