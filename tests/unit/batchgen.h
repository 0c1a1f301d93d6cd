/*
 * batchgen.h — test-only: builds a valid RecordBatch v2 of n uncompressed
 * records for the storage unit tests (test_segment.c, test_partlog.c).
 * Include after cmocka.h, crc32c.h, recbatch.h and wire.h.
 */
#ifndef SLUICE_TEST_BATCHGEN_H
#define SLUICE_TEST_BATCHGEN_H

#include <stdlib.h>
#include <string.h>

/* ---- a valid RecordBatch v2 of n uncompressed records ---- */

static size_t put_varint(uint8_t *p, int64_t v)
{
	uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	size_t n = 0;

	while (u >= 0x80) {
		p[n++] = (uint8_t)(u | 0x80);
		u >>= 7;
	}
	p[n++] = (uint8_t)u;
	return n;
}

/* n records with vlen-byte values, every timestamp ts; baseOffset 0. */
static uint8_t *make_batch(int n, int64_t ts, size_t vlen, size_t *len)
{
	size_t cap = RECBATCH_HEADER_SIZE + (size_t)n * (vlen + 32);
	uint8_t *b = calloc(1, cap);
	size_t off = RECBATCH_HEADER_SIZE;
	int64_t max_ts;

	assert_non_null(b);
	for (int i = 0; i < n; i++) {
		uint8_t body[32];
		size_t bl = 0;

		body[bl++] = 0;                        /* attributes */
		bl += put_varint(body + bl, 0);        /* timestampDelta */
		bl += put_varint(body + bl, i);        /* offsetDelta */
		bl += put_varint(body + bl, -1);       /* null key */
		bl += put_varint(body + bl, (int64_t)vlen);
		off += put_varint(b + off, (int64_t)(bl + vlen + 1));
		memcpy(b + off, body, bl);
		off += bl;
		memset(b + off, 'a' + i % 26, vlen);
		off += vlen;
		b[off++] = 0;                          /* no headers */
	}
	wire_put32(b + RECBATCH_OFF_LENGTH, (uint32_t)(off - RECBATCH_LOG_OVERHEAD));
	b[RECBATCH_OFF_MAGIC] = 2;
	wire_put32(b + RECBATCH_OFF_LAST_DELTA, (uint32_t)(n - 1));
	wire_put64(b + RECBATCH_OFF_BASE_TS, (uint64_t)ts);
	wire_put64(b + RECBATCH_OFF_MAX_TS, (uint64_t)ts);
	wire_put64(b + RECBATCH_OFF_PRODUCER_ID, (uint64_t)-1);
	wire_put16(b + RECBATCH_OFF_PRODUCER_EPOCH, 0xffff);
	wire_put32(b + RECBATCH_OFF_BASE_SEQ, 0xffffffffu);
	wire_put32(b + RECBATCH_OFF_COUNT, (uint32_t)n);
	wire_put32(b + RECBATCH_OFF_CRC, crc32c(0, b + RECBATCH_OFF_ATTR, off - RECBATCH_OFF_ATTR));
	assert_int_equal(recbatch_validate(b, off, NULL, &max_ts), RECBATCH_OK);
	assert_int_equal(max_ts, ts);
	*len = off;
	return b;
}

#endif
