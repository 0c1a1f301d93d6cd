/*
 * txn_marker.c — see txn_marker.h.
 */
#include "txn_marker.h"

#include <string.h>

#include "crc32c.h"
#include "recbatch.h"
#include "wire.h"

/* The one record, after the batch header.  Lengths are zig-zag varints
 * that fit one byte: the record body is 36 bytes (72), the key 4 (8), the
 * value 26 (52). */
#define REC_OFF RECBATCH_HEADER_SIZE
#define KEY_OFF (REC_OFF + 5)    /* length, attributes, ts delta, offset delta, key length */
#define VALUE_OFF (KEY_OFF + 5)  /* key, value length */
#define VALUE_LEN 26
#define SLTX_OFF (VALUE_OFF + 6) /* version int16, coordinator epoch int32 */
#define CTRL_COMMIT 1

static const uint8_t magic[4] = { 'S', 'L', 'T', 'X' };

void txn_marker_build(uint8_t out[TXN_MARKER_SIZE], int64_t txn_id, int64_t commit_seq, int64_t ts)
{
	uint8_t *r = out + REC_OFF;

	memset(out, 0, TXN_MARKER_SIZE);
	wire_put32(out + RECBATCH_OFF_LENGTH, TXN_MARKER_SIZE - RECBATCH_LOG_OVERHEAD);
	out[RECBATCH_OFF_MAGIC] = 2;
	wire_put16(out + RECBATCH_OFF_ATTR, RECBATCH_ATTR_CONTROL);
	wire_put64(out + RECBATCH_OFF_BASE_TS, (uint64_t)ts);
	wire_put64(out + RECBATCH_OFF_MAX_TS, (uint64_t)ts);
	wire_put64(out + RECBATCH_OFF_PRODUCER_ID, UINT64_MAX);   /* -1 */
	wire_put16(out + RECBATCH_OFF_PRODUCER_EPOCH, UINT16_MAX); /* -1 */
	wire_put32(out + RECBATCH_OFF_BASE_SEQ, UINT32_MAX);       /* -1 */
	wire_put32(out + RECBATCH_OFF_COUNT, 1);
	r[0] = (TXN_MARKER_SIZE - REC_OFF - 1) * 2; /* record length */
	/* r[1] attributes, r[2] timestamp delta, r[3] offset delta: 0 */
	r[4] = 4 * 2;                               /* key length */
	wire_put16(out + KEY_OFF, 0);               /* control key version */
	wire_put16(out + KEY_OFF + 2, CTRL_COMMIT);
	out[VALUE_OFF - 1] = VALUE_LEN * 2;
	/* value: version 0, coordinator epoch 0, then ours */
	memcpy(out + SLTX_OFF, magic, sizeof(magic));
	wire_put64(out + SLTX_OFF + 4, (uint64_t)txn_id);
	wire_put64(out + SLTX_OFF + 12, (uint64_t)commit_seq);
	/* out[TXN_MARKER_SIZE - 1]: no headers */
	wire_put32(out + RECBATCH_OFF_CRC,
		   crc32c(0, out + RECBATCH_OFF_ATTR, TXN_MARKER_SIZE - RECBATCH_OFF_ATTR));
}

bool txn_marker_parse(const uint8_t *p, size_t len, int64_t *txn_id, int64_t *commit_seq)
{
	if (len != TXN_MARKER_SIZE || recbatch_size(p, len) != TXN_MARKER_SIZE ||
	    p[RECBATCH_OFF_MAGIC] != 2 ||
	    !(wire_get16(p + RECBATCH_OFF_ATTR) & RECBATCH_ATTR_CONTROL) ||
	    wire_get32(p + RECBATCH_OFF_COUNT) != 1 || p[REC_OFF] != (TXN_MARKER_SIZE - REC_OFF - 1) * 2 ||
	    wire_get16(p + KEY_OFF + 2) != CTRL_COMMIT || p[VALUE_OFF - 1] != VALUE_LEN * 2 ||
	    memcmp(p + SLTX_OFF, magic, sizeof(magic)) != 0 ||
	    wire_get32(p + RECBATCH_OFF_CRC) !=
		    crc32c(0, p + RECBATCH_OFF_ATTR, TXN_MARKER_SIZE - RECBATCH_OFF_ATTR))
		return false;
	*txn_id = (int64_t)wire_get64(p + SLTX_OFF + 4);
	*commit_seq = (int64_t)wire_get64(p + SLTX_OFF + 12);
	return true;
}
