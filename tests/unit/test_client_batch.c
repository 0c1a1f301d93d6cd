/*
 * test_client_batch.c — libsluice's RecordBatch v2 builder (client/batch.c).
 *
 * 1. A two-record batch written out by hand from the layout in
 *    proto/recbatch.h (CRC computed here with the table implementation)
 *    must come out byte for byte.
 * 2. Every uncompressed batch librdkafka sent in tests/captures (b-produce,
 *    e-idempotent: Produce v7 requests) is decoded and rebuilt record by
 *    record with the same timestamps and producer fields: the rebuilt batch
 *    must equal librdkafka's bytes exactly, CRC included.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "crc32c.h"
#include "recbatch.h"
#include "wire.h"

#ifndef CAPTURES_DIR
#error "the build defines CAPTURES_DIR"
#endif

/* record 0: ts 1000, key "k", value "v1", no headers
 * record 1: ts 1005, null key, empty value, header h=x */
static const uint8_t hand[] = {
	0, 0, 0, 0, 0, 0, 0, 0,     /* baseOffset */
	0, 0, 0, 70,                /* batchLength = 82 - 12 */
	0xff, 0xff, 0xff, 0xff,     /* partitionLeaderEpoch -1 */
	2,                          /* magic */
	0, 0, 0, 0,                 /* crc: filled in by the test */
	0, 0,                       /* attributes: CreateTime, none */
	0, 0, 0, 1,                 /* lastOffsetDelta */
	0, 0, 0, 0, 0, 0, 0x03, 0xe8, /* baseTimestamp 1000 */
	0, 0, 0, 0, 0, 0, 0x03, 0xed, /* maxTimestamp 1005 */
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producerId -1 */
	0xff, 0xff,                 /* producerEpoch -1 */
	0xff, 0xff, 0xff, 0xff,     /* baseSequence -1 */
	0, 0, 0, 2,                 /* recordCount */
	/* record 0: length 9 (zz 0x12), attr, tsDelta 0, offDelta 0,
	 * key len 1 (zz 2) 'k', value len 2 (zz 4) "v1", 0 headers */
	0x12, 0x00, 0x00, 0x00, 0x02, 'k', 0x04, 'v', '1', 0x00,
	/* record 1: length 10 (zz 0x14), attr, tsDelta 5 (zz 0x0a),
	 * offDelta 1 (zz 2), key null (zz 1), value "" (0), 1 header (zz 2):
	 * "h" (zz 2), "x" (zz 2) */
	0x14, 0x00, 0x0a, 0x02, 0x01, 0x00, 0x02, 0x02, 'h', 0x02, 'x',
};

static void test_client_batch_matches_hand_vector(void **state)
{
	uint8_t want[sizeof(hand)];
	struct batch b;
	sluice_header_t h = { "h", "x", 1 };
	recbatch_hdr hdr;

	(void)state;
	memcpy(want, hand, sizeof(hand));
	wire_put32(want + RECBATCH_OFF_CRC,
		   crc32c_sw(0, want + RECBATCH_OFF_ATTR, sizeof(want) - RECBATCH_OFF_ATTR));
	assert_int_equal(batch_init(&b, 0), 0);
	assert_int_equal(batch_append(&b, 1 << 20, 1000, "k", 1, "v1", 2, NULL, 0, NULL), 0);
	assert_int_equal(batch_append(&b, 1 << 20, 1005, NULL, 0, "", 0, &h, 1, NULL), 0);
	assert_int_equal(batch_record_size(0, 0, 1, 2, NULL, 0), 10);
	assert_int_equal(batch_record_size(5, 1, -1, 0, &h, 1), 11);
	batch_seal(&b, -1, -1, -1);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.buf, want, sizeof(want));
	assert_int_equal(recbatch_validate(b.buf, b.len, &hdr, NULL), RECBATCH_OK);
	assert_int_equal(hdr.record_count, 2);
	/* Idempotent fields land at their offsets and the CRC follows. */
	batch_seal(&b, 0x0102030405060708LL, 7, 42);
	assert_int_equal(recbatch_validate(b.buf, b.len, &hdr, NULL), RECBATCH_OK);
	assert_true(hdr.producer_id == 0x0102030405060708LL);
	assert_int_equal(hdr.producer_epoch, 7);
	assert_int_equal(hdr.base_sequence, 42);
	batch_free(&b);
}

static void test_client_batch_respects_size_limit(void **state)
{
	struct batch b;
	char big[200];
	int n = 0;

	(void)state;
	memset(big, 'z', sizeof(big));
	assert_int_equal(batch_init(&b, 0), 0);
	/* An empty batch takes a record larger than the limit... */
	assert_int_equal(batch_append(&b, 100, 1, NULL, 0, big, sizeof(big), NULL, 0, NULL), 0);
	/* ...a non-empty one refuses what would exceed it. */
	assert_int_equal(batch_append(&b, 100, 1, NULL, 0, "a", 1, NULL, 0, NULL), 1);
	batch_free(&b);
	assert_int_equal(batch_init(&b, 0), 0);
	while (batch_append(&b, 1000, 1, NULL, 0, big, 50, NULL, 0, (void *)(intptr_t)(n + 1)) == 0)
		n++;
	assert_true(b.len <= 1000);
	assert_true(n > 10);
	assert_int_equal(b.count, n);
	assert_true(b.opaques[n - 1] == (void *)(intptr_t)n);
	batch_seal(&b, -1, -1, -1);
	assert_int_equal(recbatch_validate(b.buf, b.len, NULL, NULL), RECBATCH_OK);
	batch_free(&b);
}

static void test_client_batch_null_and_empty_are_distinct(void **state)
{
	struct batch b;
	recbatch_iter it;
	recbatch_record r;

	(void)state;
	assert_int_equal(batch_init(&b, 0), 0);
	assert_int_equal(batch_append(&b, 1 << 20, 5, NULL, 0, NULL, 0, NULL, 0, NULL), 0);
	assert_int_equal(batch_append(&b, 1 << 20, 4, "", 0, "", 0, NULL, 0, NULL), 0);
	batch_seal(&b, -1, -1, -1);
	assert_int_equal(recbatch_iter_init(&it, b.buf, b.len), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &r), 1);
	assert_int_equal(r.key.len, -1);
	assert_int_equal(r.value.len, -1);
	assert_true(r.timestamp == 5);
	assert_int_equal(recbatch_iter_next(&it, &r), 1);
	assert_int_equal(r.key.len, 0);
	assert_int_equal(r.value.len, 0);
	assert_true(r.timestamp == 4); /* negative delta */
	assert_true(it.hdr.max_timestamp == 5);
	batch_free(&b);
}

/* ---- captures ---- */

static uint8_t *load(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Rebuilds one librdkafka batch and compares; returns its record count. */
static int rebuild_and_compare(const uint8_t *orig, size_t len)
{
	recbatch_iter it;
	recbatch_record r;
	struct batch b;
	int rc, n = 0;

	assert_int_equal(recbatch_iter_init(&it, orig, len), RECBATCH_OK);
	assert_int_equal(batch_init(&b, 0), 0);
	while ((rc = recbatch_iter_next(&it, &r)) == 1) {
		sluice_header_t hdrs[8];
		char names[8][64];
		size_t pos = 0, nh = 0;
		recbatch_header_kv kv;

		while (recbatch_record_header(&r, &pos, &kv) == 1) {
			assert_true(nh < 8 && kv.key.len >= 0 && kv.key.len < 64);
			memcpy(names[nh], kv.key.ptr, (size_t)kv.key.len);
			names[nh][kv.key.len] = '\0';
			hdrs[nh].name = names[nh];
			hdrs[nh].value = kv.value.len < 0 ? NULL : kv.value.ptr;
			hdrs[nh].value_len = kv.value.len < 0 ? 0 : (size_t)kv.value.len;
			nh++;
		}
		assert_int_equal(batch_append(&b, 1 << 20, r.timestamp,
					      r.key.len < 0 ? NULL : r.key.ptr, r.key.len,
					      r.value.len < 0 ? NULL : r.value.ptr, r.value.len, hdrs,
					      nh, NULL),
				 0);
		n++;
	}
	assert_int_equal(rc, 0);
	batch_seal(&b, it.hdr.producer_id, it.hdr.producer_epoch, it.hdr.base_sequence);
	/* Everything after baseOffset is identical except the
	 * partitionLeaderEpoch (bytes 12..15, outside the CRC): librdkafka
	 * writes 0, libsluice -1 like the Java producer (NO_PARTITION_LEADER_EPOCH). */
	assert_int_equal(b.len, len);
	assert_memory_equal(b.buf + 8, orig + 8, 4);
	assert_int_equal((int32_t)wire_get32(b.buf + 12), -1);
	assert_memory_equal(b.buf + 16, orig + 16, len - 16);
	batch_free(&b);
	return n;
}

/* Produce v7: header, transactional_id, acks, timeout, [topic, [partition,
 * records]].  Rebuilds every uncompressed batch; returns records seen. */
static int check_produce_frame(const uint8_t *frame, size_t len)
{
	wire_rd rd;
	int32_t nt;
	int n = 0;

	wire_rd_init(&rd, frame, len);
	assert_int_equal(wire_rd_i32(&rd), (int32_t)len - 4);
	assert_int_equal(wire_rd_i16(&rd), 0);
	wire_rd_i16(&rd);
	wire_rd_i32(&rd);
	wire_rd_str(&rd);
	wire_rd_str(&rd);
	wire_rd_i16(&rd);
	wire_rd_i32(&rd);
	nt = wire_rd_array(&rd, 6);
	for (int32_t t = 0; t < nt; t++) {
		int32_t np;

		wire_rd_str(&rd);
		np = wire_rd_array(&rd, 8);
		for (int32_t p = 0; p < np; p++) {
			wire_str recs;
			const uint8_t *q;
			size_t left;

			wire_rd_i32(&rd);
			recs = wire_rd_bytes(&rd);
			assert_false(rd.err);
			q = (const uint8_t *)recs.ptr;
			left = (size_t)recs.len;
			while (left) {
				size_t sz = recbatch_size(q, left);

				assert_true(sz > 0 && sz <= left);
				if (!(q[RECBATCH_OFF_ATTR + 1] & RECBATCH_ATTR_COMPRESSION_MASK))
					n += rebuild_and_compare(q, sz);
				q += sz;
				left -= sz;
			}
		}
	}
	assert_false(rd.err);
	return n;
}

static int check_dir(const char *sub)
{
	char path[512];
	struct dirent *de;
	DIR *d;
	int records = 0;

	snprintf(path, sizeof(path), "%s/%s", CAPTURES_DIR, sub);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		uint8_t *buf;
		size_t len;

		if (!strstr(de->d_name, "-req-Produce-") || strstr(de->d_name, ".orig."))
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s", CAPTURES_DIR, sub, de->d_name);
		buf = load(path, &len);
		records += check_produce_frame(buf, len);
		free(buf);
	}
	closedir(d);
	return records;
}

static void test_client_batch_rebuilds_librdkafka_batches(void **state)
{
	(void)state;
	/* b-produce: 10 keyed records with 2 headers each over 3 partitions. */
	assert_int_equal(check_dir("b-produce"), 10);
	/* e-idempotent: 5 records, producer id / epoch / sequence set. */
	assert_int_equal(check_dir("e-idempotent"), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_batch_matches_hand_vector),
		cmocka_unit_test(test_client_batch_respects_size_limit),
		cmocka_unit_test(test_client_batch_null_and_empty_are_distinct),
		cmocka_unit_test(test_client_batch_rebuilds_librdkafka_batches),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
