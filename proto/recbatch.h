/*
 * recbatch.h — Kafka RecordBatch v2 (magic 2): header access, validation,
 * and a zero-copy record iterator.
 *
 * Layout (DESIGN §4; all big-endian):
 *   0 baseOffset int64 | 8 batchLength int32 (bytes after this field)
 *  12 partitionLeaderEpoch int32 | 16 magic int8 (=2) | 17 crc uint32
 *  21 attributes int16 | 23 lastOffsetDelta int32 | 27 baseTimestamp int64
 *  35 maxTimestamp int64 | 43 producerId int64 | 51 producerEpoch int16
 *  53 baseSequence int32 | 57 recordCount int32 | 61 records...
 * The CRC (CRC-32C) covers bytes 21..end; baseOffset, batchLength and the
 * leader epoch are outside it, so the broker may rewrite baseOffset.
 *
 * Owns nothing: every function reads (or, for the setters, writes) the
 * caller's buffer; recbatch_add_headers() appends to the caller's wire_buf.
 * Thread-safe: pure functions.
 */
#ifndef SLUICE_RECBATCH_H
#define SLUICE_RECBATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define RECBATCH_HEADER_SIZE 61
#define RECBATCH_LOG_OVERHEAD 12 /* baseOffset + batchLength */
#define RECBATCH_OFF_LENGTH 8
#define RECBATCH_OFF_LEADER_EPOCH 12
#define RECBATCH_OFF_MAGIC 16
#define RECBATCH_OFF_CRC 17
#define RECBATCH_OFF_ATTR 21
#define RECBATCH_OFF_LAST_DELTA 23
#define RECBATCH_OFF_BASE_TS 27
#define RECBATCH_OFF_MAX_TS 35
#define RECBATCH_OFF_PRODUCER_ID 43
#define RECBATCH_OFF_PRODUCER_EPOCH 51
#define RECBATCH_OFF_BASE_SEQ 53
#define RECBATCH_OFF_COUNT 57

#define RECBATCH_ATTR_COMPRESSION_MASK 0x07
#define RECBATCH_ATTR_TIMESTAMP_TYPE 0x08 /* 1 = LogAppendTime */
#define RECBATCH_ATTR_TRANSACTIONAL 0x10
#define RECBATCH_ATTR_CONTROL 0x20

/* Outcomes (positive, STYLE §4).  The broker maps them to Kafka errors:
 * TRUNCATED/LENGTH/MAGIC/CRC -> CORRUPT_MESSAGE, COUNT/RECORD/CONTROL ->
 * INVALID_RECORD, TIMESTAMP -> INVALID_TIMESTAMP, COMPRESSION ->
 * UNSUPPORTED_COMPRESSION_TYPE. */
enum recbatch_err {
	RECBATCH_OK = 0,
	RECBATCH_E_TRUNCATED,   /* fewer bytes than the header or batchLength says */
	RECBATCH_E_LENGTH,      /* batchLength < 49 (header minus overhead) or absurd */
	RECBATCH_E_MAGIC,       /* magic != 2 */
	RECBATCH_E_CRC,         /* CRC-32C mismatch */
	RECBATCH_E_COUNT,       /* recordCount <= 0, != lastOffsetDelta + 1, or != records walked */
	RECBATCH_E_RECORD,      /* a record's framing is bad (length, varints, key/value/headers overrun) */
	RECBATCH_E_TIMESTAMP,   /* baseTimestamp/maxTimestamp below -1 */
	RECBATCH_E_COMPRESSION, /* compression codec > 4 (zstd) */
	RECBATCH_E_CONTROL,     /* control or transactional batch from a producer (not supported) */
};

typedef struct recbatch_hdr {
	int64_t base_offset;
	int32_t length; /* batchLength: the batch is length + 12 bytes */
	int32_t leader_epoch;
	int8_t magic;
	uint32_t crc;
	int16_t attributes;
	int32_t last_offset_delta;
	int64_t base_timestamp;
	int64_t max_timestamp;
	int64_t producer_id;
	int16_t producer_epoch;
	int32_t base_sequence;
	int32_t record_count;
} recbatch_hdr;

/* Total size of the batch starting at p (length field + 12), or 0 if fewer
 * than 12 bytes are available. */
static inline size_t recbatch_size(const uint8_t *p, size_t avail)
{
	int32_t l;

	if (avail < RECBATCH_LOG_OVERHEAD)
		return 0;
	l = (int32_t)wire_get32(p + RECBATCH_OFF_LENGTH);
	return l < 0 ? 0 : (size_t)l + RECBATCH_LOG_OVERHEAD;
}

static inline void recbatch_set_base_offset(uint8_t *batch, int64_t off)
{
	wire_put64(batch, (uint64_t)off);
}

/* Rewrites the producer fields of the whole batch (batch, len >= 61) and
 * its CRC, which covers them (and everything else from the attributes
 * on: change those first). */
void recbatch_set_producer(uint8_t *batch, size_t len, int64_t producer_id, int16_t epoch,
			   int32_t base_sequence);

/* Decodes the 61-byte header.  Checks only that len >= 61, that batchLength
 * is at least 49 and that the whole batch fits in len, and magic == 2;
 * returns RECBATCH_OK or TRUNCATED/LENGTH/MAGIC.  *h is filled on OK only. */
int recbatch_parse_hdr(const uint8_t *p, size_t len, recbatch_hdr *h);

/* Full check of one batch as received from a producer (the broker calls it
 * before appending):  header (as above), CRC, recordCount == lastOffsetDelta
 * + 1 and > 0, timestamps >= -1, codec <= 4, no control/transactional bit;
 * for an uncompressed batch, walks every record without copying: each
 * record's length varint covers exactly its fields, offsetDelta equals its
 * index, key/value/header lengths stay inside the record, and the number of
 * records equals recordCount.  Compressed batches are never decompressed.
 * On RECBATCH_OK fills *h (if h) and, if max_ts, the largest record
 * timestamp (baseTimestamp + max delta for uncompressed batches, else
 * maxTimestamp). */
int recbatch_validate(const uint8_t *p, size_t len, recbatch_hdr *h, int64_t *max_ts);

/* Lighter check used by log recovery: header + CRC only. */
int recbatch_check_crc(const uint8_t *p, size_t len);

const char *recbatch_strerror(int err);

/* ---- record iteration (uncompressed batches only) ---- */

typedef struct recbatch_header_kv {
	wire_str key;
	wire_str value;
} recbatch_header_kv;

typedef struct recbatch_record {
	int64_t offset;    /* baseOffset + offsetDelta */
	int64_t timestamp; /* baseTimestamp + timestampDelta */
	int8_t attributes;
	wire_str key;   /* len -1 = null; points into the batch */
	wire_str value; /* len -1 = null; points into the batch */
	int32_t header_count;
	const uint8_t *headers; /* header_count (key, value) pairs, varint-framed */
	size_t headers_len;
} recbatch_record;

typedef struct recbatch_iter {
	wire_rd rd;
	recbatch_hdr hdr;
	int32_t index;
} recbatch_iter;

/* Starts iterating a batch whose header parses (CRC is not checked here).
 * Returns RECBATCH_OK, a header error, or RECBATCH_E_COMPRESSION if the
 * batch is compressed. */
int recbatch_iter_init(recbatch_iter *it, const uint8_t *batch, size_t len);
/* 1: *rec filled; 0: no more records; negative: -RECBATCH_E_RECORD. */
int recbatch_iter_next(recbatch_iter *it, recbatch_record *rec);
/* Walks the headers of a record: returns 1 with *kv, 0 at the end, or
 * -RECBATCH_E_RECORD.  *pos starts at 0. */
int recbatch_record_header(const recbatch_record *rec, size_t *pos, recbatch_header_kv *kv);

/* ---- copying (uncompressed batches only) ---- */

/* Appends to out a copy of the uncompressed batch (batch, len) in which
 * every record carries its own headers followed by the n_extra headers of
 * extra (key and value lengths as given; a value with len -1 is null).
 * The copy is a plain batch: baseOffset 0, partitionLeaderEpoch -1,
 * attributes of the original with the transactional and control bits
 * cleared, the same lastOffsetDelta, baseTimestamp, maxTimestamp and
 * recordCount, producerId -1, producerEpoch -1, baseSequence -1, records
 * re-encoded (attributes, timestampDelta, offsetDelta, key, value kept),
 * batchLength and CRC computed.  Returns RECBATCH_OK; RECBATCH_E_COMPRESSION
 * for a compressed batch; a header error or RECBATCH_E_RECORD for a batch
 * whose header or records do not parse; RECBATCH_E_TRUNCATED if out ran
 * out of memory (out->oom).  On any error out is left as it was (its
 * length restored).
 * The CRC of the original is not checked.  An extra header that cannot be
 * one (null key, a length below -1) is RECBATCH_E_RECORD; a copy whose
 * lengths or header count would not fit an int32 is RECBATCH_E_LENGTH.
 * After an out-of-memory failure out->oom stays set.  batch must not point
 * into out: appending may move out's memory. */
int recbatch_add_headers(const uint8_t *batch, size_t len, const recbatch_header_kv *extra,
			 int n_extra, wire_buf *out);

#endif
