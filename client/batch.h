/*
 * batch.h — building one RecordBatch v2 (magic 2, uncompressed) in place.
 *
 * A batch owns one growable buffer: the 61-byte header (filled by
 * batch_seal) followed by the records, framed exactly as proto/recbatch.h
 * reads them (length varint, attributes int8 = 0, timestampDelta varlong,
 * offsetDelta varint, key, value, header count, headers; zig-zag varints).
 * Records are encoded straight into the buffer: no allocation per record
 * (the buffer doubles, amortised, up to the size limit the caller gives).
 * Timestamps are CreateTime: baseTimestamp is the first record's time.
 *
 * Threads: a batch is a plain value; the producer guards it with its lock
 * while open, and after batch_seal() it is read-only until freed.
 */
#ifndef SLUICE_CLIENT_BATCH_H
#define SLUICE_CLIENT_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

struct ptopic;

/* A value kept by reference (batch_append_ref): its len bytes belong on the
 * wire between buf[at - 1] and buf[at].  Segments are in order. */
struct batch_ext {
	size_t at;
	const uint8_t *p;
	size_t len;
};

struct batch {
	struct batch *next;   /* link in a partition queue, request or report list */
	uint8_t *buf;         /* header + records; owned */
	size_t len;           /* bytes used in buf, header included */
	size_t cap;
	struct batch_ext *ext; /* values kept by reference, in wire order */
	int n_ext, ext_cap;
	size_t ext_bytes;     /* sum of ext[].len: wire size = len + ext_bytes */
	int32_t count;        /* records */
	int64_t base_ts;
	int64_t max_ts;
	void **opaques;       /* count entries, or NULL while every opaque was NULL */
	size_t opaques_cap;
	/* producer bookkeeping (batch.c does not touch these) */
	struct ptopic *topic;
	int32_t partition;
	int64_t created_ms;   /* monotonic ms of the first record (linger, timeout) */
	int64_t retry_at_ms;  /* do not send before this (backoff) */
	int attempts;
	int32_t base_seq;     /* idempotence: -1 until assigned */
	bool sealed;
	bool in_flight;
	int64_t base_offset;  /* result */
	sluice_err_t err;     /* result */
	size_t acct_bytes;    /* what the queue limit counted for this batch */
};

/* Prepares an empty batch whose buffer starts at initial_cap bytes (at least
 * the header).  Returns 0 or -ENOMEM (nothing allocated then). */
int batch_init(struct batch *b, size_t initial_cap);
/* Frees the buffer and opaques (the struct itself belongs to the caller). */
void batch_free(struct batch *b);

/* Bytes the record would take in the batch (length prefix included), given
 * its timestamp and offset deltas.  keylen/vlen -1 = null. */
size_t batch_record_size(int64_t ts_delta, int32_t offset_delta, int32_t keylen, int32_t vlen,
			 const sluice_header_t *hdrs, size_t nhdrs);

/* Appends one record.  A record never goes into a non-empty batch if the
 * batch would then exceed max_bytes (1 is returned, nothing changed); an
 * empty batch takes any record.  key/value NULL = null.  opaque is kept for
 * the delivery report.  Returns 0, 1 (does not fit) or -ENOMEM (nothing
 * changed). */
int batch_append(struct batch *b, size_t max_bytes, int64_t ts, const void *key, int32_t keylen,
		 const void *value, int32_t vlen, const sluice_header_t *hdrs, size_t nhdrs,
		 void *opaque);

/* Like batch_append, but the value's bytes are not copied: the batch keeps
 * the pointer (a struct batch_ext) and the caller guarantees they stay valid
 * and unchanged until the batch is freed or reset.  max_bytes applies to the
 * wire size.  Returns 0, 1 or -ENOMEM like batch_append. */
int batch_append_ref(struct batch *b, size_t max_bytes, int64_t ts, const void *key,
		     int32_t keylen, const void *value, int32_t vlen, const sluice_header_t *hdrs,
		     size_t nhdrs, void *opaque);

/* Bytes of the batch on the wire (buf plus the values kept by reference). */
static inline size_t batch_wire_len(const struct batch *b) { return b->len + b->ext_bytes; }

/* Forgets the records (buffer and ext array kept for reuse). */
void batch_reset(struct batch *b);

/* Writes the 61-byte header (baseOffset 0, leader epoch -1, attributes 0
 * (CreateTime, no compression), producer id/epoch/baseSequence as given:
 * -1/-1/-1 for a plain producer) and the CRC-32C.  Can be called again to
 * change the producer fields (the CRC is recomputed, over buf and the values
 * kept by reference in wire order).  count must be > 0. */
void batch_seal(struct batch *b, int64_t producer_id, int16_t producer_epoch, int32_t base_seq);

#endif
