/*
 * test_recbatch.c — proto/recbatch: batches built by hand here, checked
 * for every outcome recbatch_validate() documents, then read back with the
 * iterator.  Hostile variants run under ASan/UBSan, so "no crash and an
 * error" is the assertion for the mutation sweep.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "recbatch.h"
#include "wire.h"

#define BASE_TS 1795481878589LL

struct thdr {
	const char *key;
	const char *value; /* NULL = null */
};

struct trec {
	const char *key;   /* NULL = null */
	const char *value; /* NULL = null */
	int64_t ts_delta;
	int nh;
	struct thdr h[2];
};

static const struct trec three[] = {
	{ "key-01", "value-01", 0, 2, { { "origin", "kcat" }, { "scenario", "b" } } },
	{ NULL, "no key", 5, 0, { { NULL, NULL } } },
	{ "no value", NULL, 3, 1, { { "h", NULL } } },
};

/* ---- building batches ---- */

static void put_vstr(wire_buf *b, const char *s)
{
	wire_w_vbytes(b, s, s ? (int32_t)strlen(s) : 0);
}

static void put_record(wire_buf *b, const struct trec *r, int32_t off_delta)
{
	wire_buf body;

	wire_buf_init(&body);
	wire_w_i8(&body, 0);
	wire_w_varlong(&body, r->ts_delta);
	wire_w_varint(&body, off_delta);
	put_vstr(&body, r->key);
	put_vstr(&body, r->value);
	wire_w_varint(&body, r->nh);
	for (int i = 0; i < r->nh; i++) {
		put_vstr(&body, r->h[i].key);
		put_vstr(&body, r->h[i].value);
	}
	assert_false(body.oom);
	wire_w_varint(b, (int32_t)body.len);
	wire_buf_append(b, body.data, body.len);
	wire_buf_free(&body);
}

/* Writes a 61-byte header for count records; end_batch() fills in the
 * length and CRC once the records follow. */
static void begin_batch(wire_buf *b, int32_t count, int16_t attrs)
{
	wire_buf_init(b);
	wire_w_i64(b, 0);          /* baseOffset: the broker assigns it */
	wire_w_i32(b, 0);          /* batchLength, patched */
	wire_w_i32(b, 0);          /* partitionLeaderEpoch */
	wire_w_i8(b, 2);           /* magic */
	wire_w_i32(b, 0);          /* crc, patched */
	wire_w_i16(b, attrs);
	wire_w_i32(b, count - 1);  /* lastOffsetDelta */
	wire_w_i64(b, BASE_TS);
	wire_w_i64(b, BASE_TS + 5);
	wire_w_i64(b, -1);         /* producerId */
	wire_w_i16(b, -1);         /* producerEpoch */
	wire_w_i32(b, -1);         /* baseSequence */
	wire_w_i32(b, count);
	assert_int_equal(b->len, RECBATCH_HEADER_SIZE);
}

static void fix_crc(wire_buf *b)
{
	uint32_t crc = crc32c(0, b->data + RECBATCH_OFF_ATTR, b->len - RECBATCH_OFF_ATTR);

	wire_put32(b->data + RECBATCH_OFF_CRC, crc);
}

static void end_batch(wire_buf *b)
{
	assert_false(b->oom);
	wire_put32(b->data + RECBATCH_OFF_LENGTH, (uint32_t)(b->len - RECBATCH_LOG_OVERHEAD));
	fix_crc(b);
}

static void build_batch(wire_buf *b, const struct trec *r, int n)
{
	begin_batch(b, n, 0);
	for (int i = 0; i < n; i++)
		put_record(b, &r[i], i);
	end_batch(b);
}

/* A batch of n hand-written records: the caller's raw bytes follow the
 * header verbatim, framing errors and all. */
static void build_raw(wire_buf *b, int32_t count, const uint8_t *raw, size_t n)
{
	begin_batch(b, count, 0);
	wire_buf_append(b, raw, n);
	end_batch(b);
}

static void set16(wire_buf *b, size_t at, int16_t v) { wire_put16(b->data + at, (uint16_t)v); }
static void set32(wire_buf *b, size_t at, int32_t v) { wire_put32(b->data + at, (uint32_t)v); }
static void set64(wire_buf *b, size_t at, int64_t v) { wire_put64(b->data + at, (uint64_t)v); }

static int validate(const wire_buf *b)
{
	return recbatch_validate(b->data, b->len, NULL, NULL);
}

/* ---- valid batches ---- */

static void test_recbatch_valid_batch(void **state)
{
	wire_buf b;
	recbatch_hdr h;
	int64_t max_ts = 0;

	(void)state;
	build_batch(&b, three, 3);
	assert_int_equal(recbatch_size(b.data, b.len), b.len);
	assert_int_equal(recbatch_validate(b.data, b.len, &h, &max_ts), RECBATCH_OK);
	assert_int_equal(h.base_offset, 0);
	assert_int_equal(h.length, b.len - 12);
	assert_int_equal(h.leader_epoch, 0);
	assert_int_equal(h.magic, 2);
	assert_int_equal(h.crc, wire_get32(b.data + RECBATCH_OFF_CRC));
	assert_int_equal(h.attributes, 0);
	assert_int_equal(h.last_offset_delta, 2);
	assert_true(h.base_timestamp == BASE_TS);
	assert_true(h.max_timestamp == BASE_TS + 5);
	assert_true(h.producer_id == -1);
	assert_int_equal(h.producer_epoch, -1);
	assert_int_equal(h.base_sequence, -1);
	assert_int_equal(h.record_count, 3);
	/* The largest delta is 5, on the middle record. */
	assert_true(max_ts == BASE_TS + 5);
	assert_int_equal(recbatch_check_crc(b.data, b.len), RECBATCH_OK);
	wire_buf_free(&b);
}

static void test_recbatch_max_ts_from_records(void **state)
{
	/* maxTimestamp in the header says +5; the records say +9. */
	static const struct trec r[] = {
		{ "a", "1", 9, 0, { { NULL, NULL } } },
		{ "b", "2", -2, 0, { { NULL, NULL } } },
	};
	wire_buf b;
	int64_t max_ts = 0;

	(void)state;
	build_batch(&b, r, 2);
	assert_int_equal(recbatch_validate(b.data, b.len, NULL, &max_ts), RECBATCH_OK);
	assert_true(max_ts == BASE_TS + 9);
	wire_buf_free(&b);
}

static void test_recbatch_outputs_untouched_on_error(void **state)
{
	wire_buf b;
	recbatch_hdr h;
	int64_t max_ts = 77;

	(void)state;
	build_batch(&b, three, 3);
	b.data[b.len - 1] ^= 1;
	memset(&h, 0xab, sizeof(h));
	assert_int_equal(recbatch_validate(b.data, b.len, &h, &max_ts), RECBATCH_E_CRC);
	assert_int_equal(h.record_count, (int32_t)0xabababab);
	assert_true(max_ts == 77);
	wire_buf_free(&b);
}

static void test_recbatch_trailing_bytes_ignored(void **state)
{
	wire_buf b;
	size_t len;

	(void)state;
	build_batch(&b, three, 3);
	len = b.len;
	/* A second (partial) batch after the first one does not matter. */
	wire_buf_append(&b, b.data, 20);
	assert_int_equal(recbatch_size(b.data, b.len), len);
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

static void test_recbatch_compressed_not_walked(void **state)
{
	static const uint8_t junk[] = { 0x1f, 0x8b, 0xff, 0xff, 0xff, 0xff, 0x00, 0x13 };
	recbatch_iter it;
	wire_buf b;
	int64_t max_ts = 0;

	(void)state;
	/* gzip, with bytes that are no records at all: never decompressed. */
	begin_batch(&b, 5, 1);
	wire_buf_append(&b, junk, sizeof(junk));
	end_batch(&b);
	assert_int_equal(recbatch_validate(b.data, b.len, NULL, &max_ts), RECBATCH_OK);
	assert_true(max_ts == BASE_TS + 5); /* the header's maxTimestamp */
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_E_COMPRESSION);
	/* zstd (4) is the last known codec. */
	set16(&b, RECBATCH_OFF_ATTR, 4);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

/* ---- header errors ---- */

static void test_recbatch_truncated(void **state)
{
	wire_buf b;
	recbatch_hdr h;

	(void)state;
	build_batch(&b, three, 3);
	assert_int_equal(recbatch_validate(b.data, b.len - 1, NULL, NULL), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_validate(b.data, 61, NULL, NULL), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_validate(b.data, 60, NULL, NULL), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_validate(b.data, 0, NULL, NULL), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_parse_hdr(b.data, b.len - 1, &h), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_check_crc(b.data, 12), RECBATCH_E_TRUNCATED);
	assert_int_equal(recbatch_size(b.data, 11), 0);
	wire_buf_free(&b);
}

static void test_recbatch_short_length(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set32(&b, RECBATCH_OFF_LENGTH, 48);
	assert_int_equal(validate(&b), RECBATCH_E_LENGTH);
	set32(&b, RECBATCH_OFF_LENGTH, 0);
	assert_int_equal(validate(&b), RECBATCH_E_LENGTH);
	set32(&b, RECBATCH_OFF_LENGTH, -1);
	assert_int_equal(validate(&b), RECBATCH_E_LENGTH);
	assert_int_equal(recbatch_size(b.data, b.len), 0);
	set32(&b, RECBATCH_OFF_LENGTH, INT32_MIN);
	assert_int_equal(validate(&b), RECBATCH_E_LENGTH);
	/* Longer than the buffer is truncation, not a bad length. */
	set32(&b, RECBATCH_OFF_LENGTH, INT32_MAX);
	assert_int_equal(validate(&b), RECBATCH_E_TRUNCATED);
	wire_buf_free(&b);
}

static void test_recbatch_header_only_batch_has_no_records(void **state)
{
	wire_buf b;

	(void)state;
	/* batchLength 49 exactly: a header that claims one record. */
	begin_batch(&b, 1, 0);
	end_batch(&b);
	assert_int_equal(wire_get32(b.data + RECBATCH_OFF_LENGTH), 49);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	wire_buf_free(&b);
}

static void test_recbatch_magic(void **state)
{
	wire_buf b;
	recbatch_iter it;

	(void)state;
	build_batch(&b, three, 3);
	b.data[RECBATCH_OFF_MAGIC] = 1;
	assert_int_equal(validate(&b), RECBATCH_E_MAGIC);
	assert_int_equal(recbatch_check_crc(b.data, b.len), RECBATCH_E_MAGIC);
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_E_MAGIC);
	b.data[RECBATCH_OFF_MAGIC] = 3;
	assert_int_equal(validate(&b), RECBATCH_E_MAGIC);
	wire_buf_free(&b);
}

static void test_recbatch_crc_flipped_bit(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	/* A bit in a value, in the attributes, in the CRC itself. */
	b.data[b.len - 10] ^= 0x04;
	assert_int_equal(validate(&b), RECBATCH_E_CRC);
	assert_int_equal(recbatch_check_crc(b.data, b.len), RECBATCH_E_CRC);
	b.data[b.len - 10] ^= 0x04;
	b.data[RECBATCH_OFF_ATTR + 1] ^= 0x80;
	assert_int_equal(validate(&b), RECBATCH_E_CRC);
	b.data[RECBATCH_OFF_ATTR + 1] ^= 0x80;
	b.data[RECBATCH_OFF_CRC + 3] ^= 0x01;
	assert_int_equal(validate(&b), RECBATCH_E_CRC);
	b.data[RECBATCH_OFF_CRC + 3] ^= 0x01;
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

static void test_recbatch_crc_skips_offset_and_epoch(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set32(&b, 12, 99); /* partitionLeaderEpoch is outside the CRC */
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

/* ---- count, timestamp, codec and control errors ---- */

static void test_recbatch_count_vs_last_offset_delta(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set32(&b, RECBATCH_OFF_LAST_DELTA, 3);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	set32(&b, RECBATCH_OFF_LAST_DELTA, INT32_MAX);
	set32(&b, RECBATCH_OFF_COUNT, INT32_MIN);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	/* count 0 with lastOffsetDelta -1 agrees, but is empty. */
	set32(&b, RECBATCH_OFF_LAST_DELTA, -1);
	set32(&b, RECBATCH_OFF_COUNT, 0);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	wire_buf_free(&b);
}

static void test_recbatch_fewer_records_than_count(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set32(&b, RECBATCH_OFF_LAST_DELTA, 3);
	set32(&b, RECBATCH_OFF_COUNT, 4);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	wire_buf_free(&b);
}

static void test_recbatch_more_records_than_count(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set32(&b, RECBATCH_OFF_LAST_DELTA, 1);
	set32(&b, RECBATCH_OFF_COUNT, 2);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_COUNT);
	wire_buf_free(&b);
}

static void test_recbatch_timestamp(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set64(&b, RECBATCH_OFF_BASE_TS, -5);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_TIMESTAMP);
	set64(&b, RECBATCH_OFF_BASE_TS, BASE_TS);
	set64(&b, RECBATCH_OFF_MAX_TS, -5);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_TIMESTAMP);
	/* -1 means "no timestamp" and is allowed. */
	set64(&b, RECBATCH_OFF_MAX_TS, -1);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

static void test_recbatch_timestamp_delta_overflow(void **state)
{
	static const struct trec r[] = { { "k", "v", INT64_MAX, 0, { { NULL, NULL } } } };
	wire_buf b;

	(void)state;
	build_batch(&b, r, 1);
	assert_int_equal(validate(&b), RECBATCH_E_TIMESTAMP);
	wire_buf_free(&b);
}

static void test_recbatch_codec(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	for (int16_t codec = 5; codec <= 7; codec++) {
		set16(&b, RECBATCH_OFF_ATTR, codec);
		fix_crc(&b);
		assert_int_equal(validate(&b), RECBATCH_E_COMPRESSION);
	}
	wire_buf_free(&b);
}

static void test_recbatch_control_bit(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set16(&b, RECBATCH_OFF_ATTR, RECBATCH_ATTR_CONTROL);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_CONTROL);
	wire_buf_free(&b);
}

static void test_recbatch_transactional_bit(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	set16(&b, RECBATCH_OFF_ATTR, RECBATCH_ATTR_TRANSACTIONAL);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_E_CONTROL);
	/* LogAppendTime alone is fine. */
	set16(&b, RECBATCH_OFF_ATTR, RECBATCH_ATTR_TIMESTAMP_TYPE);
	fix_crc(&b);
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

/* ---- record framing errors (records written byte by byte) ---- */

/* One good record: len 8 (zig-zag 0x10), attrs 0, ts 0, off 0, key "a",
 * value "b", no headers. */
#define GOOD_REC 0x10, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b', 0x00

static void test_recbatch_raw_good_record(void **state)
{
	static const uint8_t raw[] = { GOOD_REC };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_OK);
	wire_buf_free(&b);
}

static void test_recbatch_record_length_overrun(void **state)
{
	/* Record length 100 with 8 bytes left in the batch. */
	static const uint8_t raw[] = { 0xc8, 0x01, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b', 0x00 };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_record_length_negative(void **state)
{
	static const uint8_t raw[] = { 0x03, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b', 0x00 };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_record_length_too_long(void **state)
{
	/* Length 9 covers the next record's first byte as junk. */
	static const uint8_t raw[] = { 0x12, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b', 0x00, 0x00 };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_key_length_overrun(void **state)
{
	/* Key length 20 inside an 8-byte record; the next record supplies
	 * enough bytes that only the record bound catches it. */
	static const uint8_t raw[] = { 0x10, 0x00, 0x00, 0x00, 0x28, 'a', 0x02, 'b', 0x00,
				       GOOD_REC, GOOD_REC };
	wire_buf b;

	(void)state;
	build_raw(&b, 3, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_value_length_overrun(void **state)
{
	static const uint8_t raw[] = { 0x10, 0x00, 0x00, 0x00, 0x02, 'a', 0x04, 'b', 0x00 };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_header_overrun(void **state)
{
	/* Two headers announced, one present. */
	static const uint8_t two_for_one[] = { 0x18, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b',
					       0x04, 0x02, 'k', 0x02, 'v' };
	/* A header value longer than the record. */
	static const uint8_t long_value[] = { 0x18, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b',
					      0x02, 0x02, 'k', 0x08, 'v', GOOD_REC };
	/* A null header key. */
	static const uint8_t null_key[] = { 0x16, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b',
					    0x02, 0x01, 0x02, 'v' };
	/* A negative header count. */
	static const uint8_t neg_count[] = { 0x10, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b', 0x01 };
	/* A header count no record could hold. */
	static const uint8_t huge_count[] = { 0x18, 0x00, 0x00, 0x00, 0x02, 'a', 0x02, 'b',
					      0xfe, 0xff, 0xff, 0xff, 0x0f };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, two_for_one, sizeof(two_for_one));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
	build_raw(&b, 2, long_value, sizeof(long_value));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
	build_raw(&b, 1, null_key, sizeof(null_key));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
	build_raw(&b, 1, neg_count, sizeof(neg_count));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
	build_raw(&b, 1, huge_count, sizeof(huge_count));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_offset_delta_out_of_sequence(void **state)
{
	wire_buf b;

	(void)state;
	begin_batch(&b, 2, 0);
	put_record(&b, &three[0], 0);
	put_record(&b, &three[1], 0);
	end_batch(&b);
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_bad_varint_in_record(void **state)
{
	/* A 3-byte record whose offsetDelta varint continues past the
	 * record's end (into a byte the batch does have). */
	static const uint8_t raw[] = { 0x06, 0x00, 0x00, 0x80, 0x00 };
	wire_buf b;

	(void)state;
	build_raw(&b, 1, raw, sizeof(raw));
	assert_int_equal(validate(&b), RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

/* ---- iterator ---- */

static void assert_wstr(wire_str s, const char *want)
{
	if (!want) {
		assert_int_equal(s.len, -1);
		return;
	}
	assert_int_equal(s.len, (int32_t)strlen(want));
	assert_memory_equal(s.ptr, want, strlen(want));
}

/* Reads a batch back and compares it with what built it. */
static void assert_records(const uint8_t *p, size_t len, const struct trec *want, int n,
			   int64_t base_offset)
{
	recbatch_iter it;
	recbatch_record rec;
	int i = 0, rc;

	assert_int_equal(recbatch_iter_init(&it, p, len), RECBATCH_OK);
	while ((rc = recbatch_iter_next(&it, &rec)) == 1) {
		recbatch_header_kv kv;
		size_t pos = 0;
		int nh = 0;

		assert_true(i < n);
		assert_true(rec.offset == base_offset + i);
		assert_true(rec.timestamp == BASE_TS + want[i].ts_delta);
		assert_int_equal(rec.attributes, 0);
		assert_wstr(rec.key, want[i].key);
		assert_wstr(rec.value, want[i].value);
		assert_int_equal(rec.header_count, want[i].nh);
		while ((rc = recbatch_record_header(&rec, &pos, &kv)) == 1) {
			assert_true(nh < want[i].nh);
			assert_wstr(kv.key, want[i].h[nh].key);
			assert_wstr(kv.value, want[i].h[nh].value);
			nh++;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(nh, want[i].nh);
		assert_int_equal(pos, rec.headers_len);
		i++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(i, n);
	/* The end stays the end. */
	assert_int_equal(recbatch_iter_next(&it, &rec), 0);
}

static void test_recbatch_iter_exact_records(void **state)
{
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	assert_records(b.data, b.len, three, 3, 0);
	wire_buf_free(&b);
}

static void test_recbatch_iter_empty_key_and_value(void **state)
{
	static const struct trec r[] = { { "", "", 0, 1, { { "", "" } } } };
	wire_buf b;

	(void)state;
	build_batch(&b, r, 1);
	assert_int_equal(validate(&b), RECBATCH_OK);
	assert_records(b.data, b.len, r, 1, 0);
	wire_buf_free(&b);
}

static void test_recbatch_iter_points_into_batch(void **state)
{
	recbatch_iter it;
	recbatch_record rec;
	wire_buf b;

	(void)state;
	build_batch(&b, three, 3);
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_true((const uint8_t *)rec.key.ptr > b.data);
	assert_true((const uint8_t *)rec.value.ptr + rec.value.len <= b.data + b.len);
	wire_buf_free(&b);
}

static void test_recbatch_iter_bad_record_is_sticky(void **state)
{
	static const uint8_t raw[] = { GOOD_REC, 0xc8, 0x01, 0x00 };
	recbatch_iter it;
	recbatch_record rec;
	wire_buf b;

	(void)state;
	build_raw(&b, 3, raw, sizeof(raw));
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_int_equal(recbatch_iter_next(&it, &rec), -RECBATCH_E_RECORD);
	assert_int_equal(recbatch_iter_next(&it, &rec), -RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_iter_missing_record(void **state)
{
	static const uint8_t raw[] = { GOOD_REC };
	recbatch_iter it;
	recbatch_record rec;
	wire_buf b;

	(void)state;
	build_raw(&b, 2, raw, sizeof(raw));
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_int_equal(recbatch_iter_next(&it, &rec), -RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

static void test_recbatch_record_header_bad_pos(void **state)
{
	recbatch_iter it;
	recbatch_record rec;
	recbatch_header_kv kv;
	wire_buf b;
	size_t pos;

	(void)state;
	build_batch(&b, three, 3);
	assert_int_equal(recbatch_iter_init(&it, b.data, b.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	pos = rec.headers_len + 1;
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), -RECBATCH_E_RECORD);
	/* In the middle of the first header key: the bytes there do not frame. */
	pos = 1;
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), -RECBATCH_E_RECORD);
	wire_buf_free(&b);
}

/* ---- base offset ---- */

static void test_recbatch_set_base_offset_keeps_crc(void **state)
{
	wire_buf b;
	recbatch_hdr h;

	(void)state;
	build_batch(&b, three, 3);
	recbatch_set_base_offset(b.data, 1234567890123LL);
	assert_int_equal(recbatch_validate(b.data, b.len, &h, NULL), RECBATCH_OK);
	assert_true(h.base_offset == 1234567890123LL);
	assert_int_equal(recbatch_check_crc(b.data, b.len), RECBATCH_OK);
	assert_records(b.data, b.len, three, 3, 1234567890123LL);
	wire_buf_free(&b);
}

static void test_recbatch_set_producer_keeps_crc(void **state)
{
	wire_buf b;
	recbatch_hdr h;

	(void)state;
	build_batch(&b, three, 3);
	recbatch_set_producer(b.data, b.len, 1234, 7, 2147483000);
	assert_int_equal(recbatch_validate(b.data, b.len, &h, NULL), RECBATCH_OK);
	assert_true(h.producer_id == 1234);
	assert_int_equal(h.producer_epoch, 7);
	assert_int_equal(h.base_sequence, 2147483000);
	recbatch_set_producer(b.data, b.len, -1, -1, -1);
	assert_int_equal(recbatch_validate(b.data, b.len, &h, NULL), RECBATCH_OK);
	assert_true(h.producer_id == -1);
	assert_int_equal(h.producer_epoch, -1);
	assert_int_equal(h.base_sequence, -1);
	assert_records(b.data, b.len, three, 3, 0);
	wire_buf_free(&b);
}

/* ---- copying with extra headers ---- */

static wire_str ws(const char *s)
{
	wire_str w = { s, s ? (int32_t)strlen(s) : -1 };

	return w;
}

static void assert_wstr_eq(wire_str got, wire_str want)
{
	assert_int_equal(got.len, want.len);
	if (want.len > 0)
		assert_memory_equal(got.ptr, want.ptr, (size_t)want.len);
}

/* The copy at (p, len) against the original batch orig: the plain header
 * recbatch_add_headers() documents, and record by record the same fields,
 * the original's header bytes, then the extra headers. */
static void assert_copy(const wire_buf *orig, const uint8_t *p, size_t len,
			const recbatch_header_kv *extra, int n_extra)
{
	recbatch_hdr oh, h;
	recbatch_iter oit, cit;
	recbatch_record orec, crec;
	int n = 0, rc;

	assert_int_equal(recbatch_parse_hdr(orig->data, orig->len, &oh), RECBATCH_OK);
	assert_int_equal(recbatch_validate(p, len, &h, NULL), RECBATCH_OK);
	assert_int_equal(recbatch_size(p, len), len);
	assert_true(h.base_offset == 0);
	assert_int_equal(h.leader_epoch, -1);
	assert_int_equal(h.attributes,
			 oh.attributes & ~(RECBATCH_ATTR_TRANSACTIONAL | RECBATCH_ATTR_CONTROL));
	assert_int_equal(h.last_offset_delta, oh.last_offset_delta);
	assert_true(h.base_timestamp == oh.base_timestamp);
	assert_true(h.max_timestamp == oh.max_timestamp);
	assert_true(h.producer_id == -1);
	assert_int_equal(h.producer_epoch, -1);
	assert_int_equal(h.base_sequence, -1);
	assert_int_equal(h.record_count, oh.record_count);

	assert_int_equal(recbatch_iter_init(&oit, orig->data, orig->len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_init(&cit, p, len), RECBATCH_OK);
	while ((rc = recbatch_iter_next(&oit, &orec)) == 1) {
		recbatch_header_kv kv;
		size_t pos;

		assert_int_equal(recbatch_iter_next(&cit, &crec), 1);
		/* The copy's baseOffset is 0: its offsets are the deltas. */
		assert_true(crec.offset == orec.offset - oh.base_offset);
		assert_true(crec.timestamp == orec.timestamp);
		assert_int_equal(crec.attributes, orec.attributes);
		assert_wstr_eq(crec.key, orec.key);
		assert_wstr_eq(crec.value, orec.value);
		assert_int_equal(crec.header_count, orec.header_count + n_extra);
		assert_true(crec.headers_len >= orec.headers_len);
		if (orec.headers_len)
			assert_memory_equal(crec.headers, orec.headers, orec.headers_len);
		pos = orec.headers_len;
		for (int i = 0; i < n_extra; i++) {
			assert_int_equal(recbatch_record_header(&crec, &pos, &kv), 1);
			assert_wstr_eq(kv.key, extra[i].key);
			assert_wstr_eq(kv.value, extra[i].value);
		}
		assert_int_equal(recbatch_record_header(&crec, &pos, &kv), 0);
		n++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(recbatch_iter_next(&cit, &crec), 0);
	assert_int_equal(n, oh.record_count);
}

static int add_headers(const wire_buf *b, const recbatch_header_kv *extra, int n_extra,
		       wire_buf *out)
{
	return recbatch_add_headers(b->data, b->len, extra, n_extra, out);
}

static void test_recbatch_add_headers(void **state)
{
	static const struct trec r[] = {
		{ "key-01", "value-01", 0, 0, { { NULL, NULL } } },
		{ NULL, "no key", 7, 1, { { "trace", "abc" } } },
		{ "no value", NULL, 2, 0, { { NULL, NULL } } },
		{ "", "", -3, 0, { { NULL, NULL } } },
	};
	const recbatch_header_kv extra[] = {
		{ ws("sluice.txn.id"), ws("payments-7") },
		{ ws("sluice.txn.aborted"), ws(NULL) },
	};
	recbatch_iter it;
	recbatch_record rec;
	recbatch_header_kv kv;
	wire_buf b, out;
	size_t pos = 0;

	(void)state;
	build_batch(&b, r, 4);
	/* Outside the CRC, and not carried into the copy. */
	set64(&b, 0, 5000);
	set32(&b, 12, 9);
	wire_buf_init(&out);
	assert_int_equal(add_headers(&b, extra, 2, &out), RECBATCH_OK);
	assert_false(out.oom);
	assert_copy(&b, out.data, out.len, extra, 2);
	assert_int_equal(recbatch_check_crc(out.data, out.len), RECBATCH_OK);

	/* Spelled out for the record with a header of its own. */
	assert_int_equal(recbatch_iter_init(&it, out.data, out.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_true(rec.offset == 1);
	assert_true(rec.timestamp == BASE_TS + 7);
	assert_wstr(rec.key, NULL);
	assert_wstr(rec.value, "no key");
	assert_int_equal(rec.header_count, 3);
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), 1);
	assert_wstr(kv.key, "trace");
	assert_wstr(kv.value, "abc");
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), 1);
	assert_wstr(kv.key, "sluice.txn.id");
	assert_wstr(kv.value, "payments-7");
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), 1);
	assert_wstr(kv.key, "sluice.txn.aborted");
	assert_wstr(kv.value, NULL);
	assert_int_equal(recbatch_record_header(&rec, &pos, &kv), 0);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_empty_extra_value(void **state)
{
	/* An empty key and value given as { NULL, 0 } stay empty, not null. */
	const recbatch_header_kv extra[] = { { { NULL, 0 }, { NULL, 0 } } };
	wire_buf b, out;

	(void)state;
	build_batch(&b, three, 3);
	wire_buf_init(&out);
	assert_int_equal(add_headers(&b, extra, 1, &out), RECBATCH_OK);
	assert_copy(&b, out.data, out.len, extra, 1);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_none(void **state)
{
	wire_buf b, out;

	(void)state;
	build_batch(&b, three, 3);
	wire_buf_init(&out);
	assert_int_equal(add_headers(&b, NULL, 0, &out), RECBATCH_OK);
	assert_copy(&b, out.data, out.len, NULL, 0);
	assert_records(out.data, out.len, three, 3, 0);
	/* Nothing to add: the records are the original's bytes. */
	assert_int_equal(out.len, b.len);
	assert_memory_equal(out.data + RECBATCH_HEADER_SIZE, b.data + RECBATCH_HEADER_SIZE,
			    b.len - RECBATCH_HEADER_SIZE);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_plain_copy(void **state)
{
	const recbatch_header_kv extra[] = { { ws("k"), ws("v") } };
	static const int16_t attrs[] = {
		RECBATCH_ATTR_TRANSACTIONAL,
		RECBATCH_ATTR_TRANSACTIONAL | RECBATCH_ATTR_TIMESTAMP_TYPE,
		RECBATCH_ATTR_CONTROL,
	};
	wire_buf b, out;

	(void)state;
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		recbatch_hdr h;

		build_batch(&b, three, 3);
		set16(&b, RECBATCH_OFF_ATTR, attrs[i]);
		set64(&b, RECBATCH_OFF_PRODUCER_ID, 4242);
		set16(&b, RECBATCH_OFF_PRODUCER_EPOCH, 3);
		set32(&b, RECBATCH_OFF_BASE_SEQ, 17);
		fix_crc(&b);
		assert_int_equal(validate(&b), RECBATCH_E_CONTROL);
		wire_buf_init(&out);
		assert_int_equal(add_headers(&b, extra, 1, &out), RECBATCH_OK);
		/* validate() refuses either bit, so OK means both are gone. */
		assert_int_equal(recbatch_validate(out.data, out.len, &h, NULL), RECBATCH_OK);
		assert_int_equal(h.attributes, attrs[i] & RECBATCH_ATTR_TIMESTAMP_TYPE);
		assert_copy(&b, out.data, out.len, extra, 1);
		wire_buf_free(&out);
		wire_buf_free(&b);
	}
}

/* out holds a prefix; a failing call must leave exactly that. */
static void assert_add_fails(const wire_buf *b, const recbatch_header_kv *extra, int n_extra,
			     int want)
{
	static const char prefix[] = "earlier bytes";
	wire_buf out;

	wire_buf_init(&out);
	wire_buf_append(&out, prefix, sizeof(prefix));
	assert_int_equal(add_headers(b, extra, n_extra, &out), want);
	assert_int_equal(out.len, sizeof(prefix));
	assert_false(out.oom);
	assert_memory_equal(out.data, prefix, sizeof(prefix));
	wire_buf_free(&out);
}

static void test_recbatch_add_headers_compressed(void **state)
{
	static const uint8_t junk[] = { 0x1f, 0x8b, 0xff, 0xff, 0xff, 0xff, 0x00, 0x13 };
	const recbatch_header_kv extra[] = { { ws("k"), ws("v") } };
	wire_buf b, out;

	(void)state;
	begin_batch(&b, 5, 1); /* gzip */
	wire_buf_append(&b, junk, sizeof(junk));
	end_batch(&b);
	assert_add_fails(&b, extra, 1, RECBATCH_E_COMPRESSION);
	wire_buf_init(&out);
	assert_int_equal(add_headers(&b, extra, 1, &out), RECBATCH_E_COMPRESSION);
	assert_int_equal(out.len, 0);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_bad_batch(void **state)
{
	/* The second record claims 100 bytes with 2 left: the first one was
	 * already copied when it fails. */
	static const uint8_t overrun[] = { GOOD_REC, 0xc8, 0x01, 0x00 };
	/* recordCount 1, two records. */
	static const uint8_t extra_rec[] = { GOOD_REC, GOOD_REC };
	/* recordCount 2, one record. */
	static const uint8_t missing[] = { GOOD_REC };
	const recbatch_header_kv extra[] = { { ws("k"), ws("v") } };
	const recbatch_header_kv null_key[] = { { ws("k"), ws("v") }, { ws(NULL), ws("v") } };
	const recbatch_header_kv bad_len[] = { { ws("k"), { "v", -2 } } };
	wire_buf b;

	(void)state;
	build_raw(&b, 2, overrun, sizeof(overrun));
	assert_add_fails(&b, extra, 1, RECBATCH_E_RECORD);
	wire_buf_free(&b);
	build_raw(&b, 1, extra_rec, sizeof(extra_rec));
	assert_add_fails(&b, extra, 1, RECBATCH_E_COUNT);
	wire_buf_free(&b);
	build_raw(&b, 2, missing, sizeof(missing));
	assert_add_fails(&b, extra, 1, RECBATCH_E_RECORD);
	wire_buf_free(&b);

	build_batch(&b, three, 3);
	assert_add_fails(&b, null_key, 2, RECBATCH_E_RECORD);
	assert_add_fails(&b, bad_len, 1, RECBATCH_E_RECORD);
	assert_add_fails(&b, extra, -1, RECBATCH_E_RECORD);
	/* Header errors pass through. */
	b.data[RECBATCH_OFF_MAGIC] = 1;
	assert_add_fails(&b, extra, 1, RECBATCH_E_MAGIC);
	b.data[RECBATCH_OFF_MAGIC] = 2;
	b.len = RECBATCH_HEADER_SIZE - 1;
	assert_add_fails(&b, extra, 1, RECBATCH_E_TRUNCATED);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_appends(void **state)
{
	const recbatch_header_kv extra[] = { { ws("sluice.txn.id"), ws("t") } };
	uint8_t prefix[250];
	wire_buf b, out;
	size_t first;

	(void)state;
	for (size_t i = 0; i < sizeof(prefix); i++)
		prefix[i] = (uint8_t)(i * 7);
	build_batch(&b, three, 3);
	wire_buf_init(&out);
	/* Close to the first allocation's 256 bytes: the copy makes out grow,
	 * and the length and CRC must land in the moved memory. */
	wire_buf_append(&out, prefix, sizeof(prefix));
	assert_int_equal(add_headers(&b, extra, 1, &out), RECBATCH_OK);
	assert_memory_equal(out.data, prefix, sizeof(prefix));
	assert_copy(&b, out.data + sizeof(prefix), out.len - sizeof(prefix), extra, 1);
	/* A second copy goes right after the first. */
	first = out.len;
	assert_int_equal(add_headers(&b, NULL, 0, &out), RECBATCH_OK);
	assert_memory_equal(out.data, prefix, sizeof(prefix));
	assert_copy(&b, out.data + sizeof(prefix), first - sizeof(prefix), extra, 1);
	assert_copy(&b, out.data + first, out.len - first, NULL, 0);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

static void test_recbatch_add_headers_oom(void **state)
{
	const recbatch_header_kv extra[] = { { ws("k"), ws("v") } };
	wire_buf b, out;

	(void)state;
	build_batch(&b, three, 3);
	wire_buf_init(&out);
	wire_buf_append(&out, "x", 1);
	/* A buffer that has run out of memory takes no more writes. */
	out.oom = true;
	assert_int_equal(add_headers(&b, extra, 1, &out), RECBATCH_E_TRUNCATED);
	assert_int_equal(out.len, 1);
	assert_true(out.oom);
	wire_buf_free(&out);
	wire_buf_free(&b);
}

/* ---- hostile input sweep ---- */

/* Every byte of the records area xored with a few patterns, with the CRC
 * refreshed so the walk is reached: whatever the outcome, no read goes out
 * of bounds (ASan) and no arithmetic is undefined (UBSan).  A truncation at
 * every length is never OK. */
static void test_recbatch_mutations_never_overrun(void **state)
{
	static const uint8_t pats[] = { 0x01, 0x80, 0xff, 0x7f };
	wire_buf b;
	uint8_t *copy;

	(void)state;
	build_batch(&b, three, 3);
	copy = malloc(b.len);
	assert_non_null(copy);
	for (size_t len = 0; len < b.len; len++) {
		/* An exact-size heap copy so ASan sees any overread. */
		uint8_t *t = malloc(len ? len : 1);

		memcpy(t, b.data, len);
		assert_int_not_equal(recbatch_validate(t, len, NULL, NULL), RECBATCH_OK);
		free(t);
	}
	for (size_t i = 0; i < b.len; i++) {
		if (i >= RECBATCH_OFF_CRC && i < RECBATCH_OFF_ATTR)
			continue; /* recomputed below */
		for (size_t k = 0; k < sizeof(pats); k++) {
			recbatch_iter it;
			recbatch_record rec;
			int rc;

			memcpy(copy, b.data, b.len);
			copy[i] ^= pats[k];
			wire_put32(copy + RECBATCH_OFF_CRC,
				   crc32c(0, copy + RECBATCH_OFF_ATTR, b.len - RECBATCH_OFF_ATTR));
			(void)recbatch_validate(copy, b.len, NULL, NULL);
			if (recbatch_iter_init(&it, copy, b.len) != RECBATCH_OK)
				continue;
			while ((rc = recbatch_iter_next(&it, &rec)) == 1) {
				recbatch_header_kv kv;
				size_t pos = 0;

				while (recbatch_record_header(&rec, &pos, &kv) == 1)
					;
			}
			assert_true(rc == 0 || rc == -RECBATCH_E_RECORD);
		}
	}
	free(copy);
	wire_buf_free(&b);
}

/* The mutation sweep below, for the copy: whatever the bytes, no overrun,
 * and either a copy whose header and CRC hold or out left as it was. */
static void test_recbatch_add_headers_mutations(void **state)
{
	static const uint8_t pats[] = { 0x01, 0x80, 0xff, 0x7f };
	const recbatch_header_kv extra[] = { { ws("k"), ws(NULL) } };
	wire_buf b, out;
	uint8_t *copy;

	(void)state;
	build_batch(&b, three, 3);
	copy = malloc(b.len);
	assert_non_null(copy);
	wire_buf_init(&out);
	for (size_t i = 0; i < b.len; i++) {
		for (size_t k = 0; k < sizeof(pats); k++) {
			memcpy(copy, b.data, b.len);
			copy[i] ^= pats[k];
			wire_buf_reset(&out);
			if (recbatch_add_headers(copy, b.len, extra, 1, &out) != RECBATCH_OK) {
				assert_int_equal(out.len, 0);
				continue;
			}
			assert_int_equal(recbatch_size(out.data, out.len), out.len);
			assert_int_equal(recbatch_check_crc(out.data, out.len), RECBATCH_OK);
		}
	}
	wire_buf_free(&out);
	free(copy);
	wire_buf_free(&b);
}

static void test_recbatch_strerror_covers_all(void **state)
{
	(void)state;
	for (int e = RECBATCH_OK; e <= RECBATCH_E_CONTROL; e++) {
		const char *s = recbatch_strerror(e);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		for (int f = RECBATCH_OK; f < e; f++)
			assert_string_not_equal(s, recbatch_strerror(f));
	}
	assert_non_null(recbatch_strerror(-1));
	assert_non_null(recbatch_strerror(1000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_recbatch_valid_batch),
		cmocka_unit_test(test_recbatch_max_ts_from_records),
		cmocka_unit_test(test_recbatch_outputs_untouched_on_error),
		cmocka_unit_test(test_recbatch_trailing_bytes_ignored),
		cmocka_unit_test(test_recbatch_compressed_not_walked),
		cmocka_unit_test(test_recbatch_truncated),
		cmocka_unit_test(test_recbatch_short_length),
		cmocka_unit_test(test_recbatch_header_only_batch_has_no_records),
		cmocka_unit_test(test_recbatch_magic),
		cmocka_unit_test(test_recbatch_crc_flipped_bit),
		cmocka_unit_test(test_recbatch_crc_skips_offset_and_epoch),
		cmocka_unit_test(test_recbatch_count_vs_last_offset_delta),
		cmocka_unit_test(test_recbatch_fewer_records_than_count),
		cmocka_unit_test(test_recbatch_more_records_than_count),
		cmocka_unit_test(test_recbatch_timestamp),
		cmocka_unit_test(test_recbatch_timestamp_delta_overflow),
		cmocka_unit_test(test_recbatch_codec),
		cmocka_unit_test(test_recbatch_control_bit),
		cmocka_unit_test(test_recbatch_transactional_bit),
		cmocka_unit_test(test_recbatch_raw_good_record),
		cmocka_unit_test(test_recbatch_record_length_overrun),
		cmocka_unit_test(test_recbatch_record_length_negative),
		cmocka_unit_test(test_recbatch_record_length_too_long),
		cmocka_unit_test(test_recbatch_key_length_overrun),
		cmocka_unit_test(test_recbatch_value_length_overrun),
		cmocka_unit_test(test_recbatch_header_overrun),
		cmocka_unit_test(test_recbatch_offset_delta_out_of_sequence),
		cmocka_unit_test(test_recbatch_bad_varint_in_record),
		cmocka_unit_test(test_recbatch_iter_exact_records),
		cmocka_unit_test(test_recbatch_iter_empty_key_and_value),
		cmocka_unit_test(test_recbatch_iter_points_into_batch),
		cmocka_unit_test(test_recbatch_iter_bad_record_is_sticky),
		cmocka_unit_test(test_recbatch_iter_missing_record),
		cmocka_unit_test(test_recbatch_record_header_bad_pos),
		cmocka_unit_test(test_recbatch_set_base_offset_keeps_crc),
		cmocka_unit_test(test_recbatch_set_producer_keeps_crc),
		cmocka_unit_test(test_recbatch_add_headers),
		cmocka_unit_test(test_recbatch_add_headers_empty_extra_value),
		cmocka_unit_test(test_recbatch_add_headers_none),
		cmocka_unit_test(test_recbatch_add_headers_plain_copy),
		cmocka_unit_test(test_recbatch_add_headers_compressed),
		cmocka_unit_test(test_recbatch_add_headers_bad_batch),
		cmocka_unit_test(test_recbatch_add_headers_appends),
		cmocka_unit_test(test_recbatch_add_headers_oom),
		cmocka_unit_test(test_recbatch_mutations_never_overrun),
		cmocka_unit_test(test_recbatch_add_headers_mutations),
		cmocka_unit_test(test_recbatch_strerror_covers_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
