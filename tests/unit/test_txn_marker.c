/*
 * test_txn_marker.c — broker/txn_marker: the commit marker is one valid
 * control batch (CRC, header, one record that a record walker reads) whose
 * key is Kafka's COMMIT control key and whose value carries the txn id and
 * commit sequence back out; anything else — a data batch, a corrupted
 * marker, a marker of another length — is not taken for one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "crc32c.h"
#include "recbatch.h"
#include "txn_marker.h"
#include "wire.h"

static void test_round_trip(void **state)
{
	static const int64_t ids[][2] = {
		{ 1, 0 }, { 1000, 5 }, { INT64_MAX, ((int64_t)3 << 31) + 7 }, { 42, INT64_MAX },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		uint8_t m[TXN_MARKER_SIZE];
		int64_t txn = -5, seq = -5;

		txn_marker_build(m, ids[i][0], ids[i][1], 1700000000123);
		assert_true(txn_marker_parse(m, sizeof(m), &txn, &seq));
		assert_int_equal(txn, ids[i][0]);
		assert_int_equal(seq, ids[i][1]);
	}
}

/* What consumers and the log see: a control batch, not idempotent, with
 * one record whose key is (version 0, type 1 = COMMIT). */
static void test_is_a_kafka_control_batch(void **state)
{
	uint8_t m[TXN_MARKER_SIZE];
	recbatch_hdr h;
	recbatch_iter it;
	recbatch_record rec;

	(void)state;
	txn_marker_build(m, 77, 9, 1700000000123);
	assert_int_equal(recbatch_size(m, sizeof(m)), TXN_MARKER_SIZE);
	assert_int_equal(recbatch_parse_hdr(m, sizeof(m), &h), RECBATCH_OK);
	assert_int_equal(recbatch_check_crc(m, sizeof(m)), RECBATCH_OK);
	assert_int_equal(h.attributes, RECBATCH_ATTR_CONTROL);
	assert_int_equal(h.producer_id, -1);
	assert_int_equal(h.producer_epoch, -1);
	assert_int_equal(h.base_sequence, -1);
	assert_int_equal(h.record_count, 1);
	assert_int_equal(h.last_offset_delta, 0);
	assert_int_equal(h.base_timestamp, 1700000000123);
	assert_int_equal(h.max_timestamp, 1700000000123);
	/* producers may not send control batches: the full check says so */
	assert_int_equal(recbatch_validate(m, sizeof(m), NULL, NULL), RECBATCH_E_CONTROL);
	assert_int_equal(recbatch_iter_init(&it, m, sizeof(m)), RECBATCH_OK);
	assert_int_equal(recbatch_iter_next(&it, &rec), 1);
	assert_int_equal(rec.key.len, 4);
	assert_int_equal(wire_get16((const uint8_t *)rec.key.ptr), 0);
	assert_int_equal(wire_get16((const uint8_t *)rec.key.ptr + 2), 1);
	assert_int_equal(rec.value.len, 26);
	assert_int_equal(wire_get16((const uint8_t *)rec.value.ptr), 0); /* marker version */
	assert_int_equal(rec.header_count, 0);
	assert_int_equal(recbatch_iter_next(&it, &rec), 0);
}

static void test_rejects_others(void **state)
{
	uint8_t m[TXN_MARKER_SIZE], big[TXN_MARKER_SIZE + 1];
	int64_t txn, seq;

	(void)state;
	txn_marker_build(m, 77, 9, 0);
	/* any flipped bit under the CRC */
	for (size_t i = RECBATCH_OFF_ATTR; i < sizeof(m); i++) {
		m[i] ^= 0x10;
		assert_false(txn_marker_parse(m, sizeof(m), &txn, &seq));
		m[i] ^= 0x10;
	}
	/* the right bytes with a recomputed CRC but not a marker: no control
	 * bit, or the key's type is ABORT (0) */
	m[RECBATCH_OFF_ATTR + 1] = 0;
	wire_put32(m + RECBATCH_OFF_CRC, crc32c(0, m + RECBATCH_OFF_ATTR, sizeof(m) - RECBATCH_OFF_ATTR));
	assert_false(txn_marker_parse(m, sizeof(m), &txn, &seq));
	txn_marker_build(m, 77, 9, 0);
	m[RECBATCH_HEADER_SIZE + 8] = 0; /* type low byte */
	wire_put32(m + RECBATCH_OFF_CRC, crc32c(0, m + RECBATCH_OFF_ATTR, sizeof(m) - RECBATCH_OFF_ATTR));
	assert_false(txn_marker_parse(m, sizeof(m), &txn, &seq));
	/* a length that is not the marker's */
	txn_marker_build(big, 77, 9, 0);
	assert_false(txn_marker_parse(big, sizeof(big), &txn, &seq));
	assert_false(txn_marker_parse(big, TXN_MARKER_SIZE - 1, &txn, &seq));
	txn_marker_build(m, 77, 9, 0);
	assert_true(txn_marker_parse(m, sizeof(m), &txn, &seq));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_is_a_kafka_control_batch),
		cmocka_unit_test(test_rejects_others),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
