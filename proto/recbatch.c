/*
 * recbatch.c — see recbatch.h.
 *
 * Everything here reads a buffer that may come straight from a hostile
 * client, so every length goes through wire_rd, which never reads past its
 * end.  Records are parsed in a reader bounded by the record's own length
 * varint: a key or header that overruns its record is caught even when the
 * batch has bytes to spare after it.
 */
#include "recbatch.h"

#include "crc32c.h"

/* batchLength counts everything after itself: the 61-byte header minus the
 * baseOffset and batchLength fields. */
#define RECBATCH_MIN_LENGTH (RECBATCH_HEADER_SIZE - RECBATCH_LOG_OVERHEAD)

_Static_assert(RECBATCH_MIN_LENGTH == 49, "batchLength floor");
_Static_assert(RECBATCH_OFF_COUNT + 4 == RECBATCH_HEADER_SIZE, "header layout");

#define CODEC_NONE 0
#define CODEC_MAX 4 /* zstd */

static int codec_of(const recbatch_hdr *h)
{
	return h->attributes & RECBATCH_ATTR_COMPRESSION_MASK;
}

/* Adds without the undefined behaviour of signed overflow: a hostile delta
 * may wrap, and callers that care check with __builtin_add_overflow. */
static int64_t add_wrap(int64_t a, int64_t b)
{
	return (int64_t)((uint64_t)a + (uint64_t)b);
}

int recbatch_parse_hdr(const uint8_t *p, size_t len, recbatch_hdr *h)
{
	int32_t blen;

	if (len < RECBATCH_HEADER_SIZE)
		return RECBATCH_E_TRUNCATED;
	blen = (int32_t)wire_get32(p + RECBATCH_OFF_LENGTH);
	if (blen < RECBATCH_MIN_LENGTH) /* also catches negative lengths */
		return RECBATCH_E_LENGTH;
	if ((size_t)blen > len - RECBATCH_LOG_OVERHEAD)
		return RECBATCH_E_TRUNCATED;
	if ((int8_t)p[RECBATCH_OFF_MAGIC] != 2)
		return RECBATCH_E_MAGIC;

	h->base_offset = (int64_t)wire_get64(p);
	h->length = blen;
	h->leader_epoch = (int32_t)wire_get32(p + RECBATCH_OFF_LEADER_EPOCH);
	h->magic = (int8_t)p[RECBATCH_OFF_MAGIC];
	h->crc = wire_get32(p + RECBATCH_OFF_CRC);
	h->attributes = (int16_t)wire_get16(p + RECBATCH_OFF_ATTR);
	h->last_offset_delta = (int32_t)wire_get32(p + RECBATCH_OFF_LAST_DELTA);
	h->base_timestamp = (int64_t)wire_get64(p + RECBATCH_OFF_BASE_TS);
	h->max_timestamp = (int64_t)wire_get64(p + RECBATCH_OFF_MAX_TS);
	h->producer_id = (int64_t)wire_get64(p + RECBATCH_OFF_PRODUCER_ID);
	h->producer_epoch = (int16_t)wire_get16(p + RECBATCH_OFF_PRODUCER_EPOCH);
	h->base_sequence = (int32_t)wire_get32(p + RECBATCH_OFF_BASE_SEQ);
	h->record_count = (int32_t)wire_get32(p + RECBATCH_OFF_COUNT);
	return RECBATCH_OK;
}

/* The CRC covers attributes to the end of the batch (not len: the caller's
 * buffer may hold more batches after this one). */
static int check_crc(const uint8_t *p, const recbatch_hdr *h)
{
	size_t end = (size_t)h->length + RECBATCH_LOG_OVERHEAD;
	uint32_t crc = crc32c(0, p + RECBATCH_OFF_ATTR, end - RECBATCH_OFF_ATTR);

	return crc == h->crc ? RECBATCH_OK : RECBATCH_E_CRC;
}

int recbatch_check_crc(const uint8_t *p, size_t len)
{
	recbatch_hdr h;
	int err = recbatch_parse_hdr(p, len, &h);

	return err ? err : check_crc(p, &h);
}

/* One record's framing, as found in the record reader. */
struct rec_raw {
	int8_t attributes;
	int64_t ts_delta;
	int32_t offset_delta;
	wire_str key;
	wire_str value;
	int32_t header_count;
	const uint8_t *headers;
	size_t headers_len;
};

/* Skips header_count (key, value) pairs; a null key is malformed. */
static void skip_headers(wire_rd *rd, int32_t count)
{
	for (int32_t i = 0; i < count && !rd->err; i++) {
		wire_str k = wire_rd_vbytes(rd);

		if (k.len < 0)
			rd->err = true;
		wire_rd_vbytes(rd);
	}
}

/*
 * Reads one record from rd.  The record's length varint must cover exactly
 * its fields: a record reader bounded by that length catches both overruns
 * and trailing junk.  Returns RECBATCH_OK or RECBATCH_E_RECORD; rd is left
 * in error on failure.
 */
static int read_record(wire_rd *rd, struct rec_raw *r)
{
	int32_t len = wire_rd_varint(rd);
	const uint8_t *body;
	wire_rd in;

	if (rd->err || len < 0)
		goto fail;
	body = wire_rd_take(rd, (size_t)len);
	if (!body)
		goto fail;
	wire_rd_init(&in, body, (size_t)len);
	r->attributes = wire_rd_i8(&in);
	r->ts_delta = wire_rd_varlong(&in);
	r->offset_delta = wire_rd_varint(&in);
	r->key = wire_rd_vbytes(&in);
	r->value = wire_rd_vbytes(&in);
	r->header_count = wire_rd_varint(&in);
	/* Each header takes at least two bytes (two length varints). */
	if (r->header_count < 0 || (size_t)r->header_count > wire_rd_left(&in) / 2)
		goto fail;
	r->headers = in.p;
	skip_headers(&in, r->header_count);
	if (in.err || in.p != in.end)
		goto fail;
	r->headers_len = (size_t)(in.p - r->headers);
	return RECBATCH_OK;
fail:
	rd->err = true;
	return RECBATCH_E_RECORD;
}

/*
 * Walks every record of an uncompressed batch whose header, CRC and count
 * already passed.  Too few or too many records for recordCount is COUNT;
 * a malformed record (or offsetDelta out of sequence) is RECORD.
 */
static int walk_records(const uint8_t *p, const recbatch_hdr *h, int64_t *max_delta)
{
	size_t end = (size_t)h->length + RECBATCH_LOG_OVERHEAD;
	int64_t maxd = INT64_MIN;
	wire_rd rd;

	wire_rd_init(&rd, p + RECBATCH_HEADER_SIZE, end - RECBATCH_HEADER_SIZE);
	for (int32_t i = 0; i < h->record_count; i++) {
		struct rec_raw r;

		if (!wire_rd_left(&rd))
			return RECBATCH_E_COUNT;
		if (read_record(&rd, &r))
			return RECBATCH_E_RECORD;
		if (r.offset_delta != i)
			return RECBATCH_E_RECORD;
		if (r.ts_delta > maxd)
			maxd = r.ts_delta;
	}
	if (wire_rd_left(&rd))
		return RECBATCH_E_COUNT;
	*max_delta = maxd;
	return RECBATCH_OK;
}

/* Checks that need only the header, in the order recbatch.h lists them. */
static int check_fields(const recbatch_hdr *h)
{
	if (h->record_count <= 0 ||
	    (int64_t)h->record_count != (int64_t)h->last_offset_delta + 1)
		return RECBATCH_E_COUNT;
	if (h->base_timestamp < -1 || h->max_timestamp < -1)
		return RECBATCH_E_TIMESTAMP;
	if (codec_of(h) > CODEC_MAX)
		return RECBATCH_E_COMPRESSION;
	if (h->attributes & (RECBATCH_ATTR_CONTROL | RECBATCH_ATTR_TRANSACTIONAL))
		return RECBATCH_E_CONTROL;
	return RECBATCH_OK;
}

int recbatch_validate(const uint8_t *p, size_t len, recbatch_hdr *h, int64_t *max_ts)
{
	recbatch_hdr hd;
	int64_t ts;
	int err;

	err = recbatch_parse_hdr(p, len, &hd);
	if (!err)
		err = check_crc(p, &hd);
	if (!err)
		err = check_fields(&hd);
	if (err)
		return err;
	ts = hd.max_timestamp;
	if (codec_of(&hd) == CODEC_NONE) {
		int64_t maxd;

		err = walk_records(p, &hd, &maxd);
		if (err)
			return err;
		/* A delta that overflows the base is no timestamp at all. */
		if (__builtin_add_overflow(hd.base_timestamp, maxd, &ts) || ts < -1)
			return RECBATCH_E_TIMESTAMP;
	}
	if (h)
		*h = hd;
	if (max_ts)
		*max_ts = ts;
	return RECBATCH_OK;
}

const char *recbatch_strerror(int err)
{
	switch (err) {
	case RECBATCH_OK:
		return "the record batch is valid";
	case RECBATCH_E_TRUNCATED:
		return "the record batch is cut short";
	case RECBATCH_E_LENGTH:
		return "the record batch length is too small to hold its header";
	case RECBATCH_E_MAGIC:
		return "the record batch is not in the v2 format (magic 2)";
	case RECBATCH_E_CRC:
		return "the record batch CRC does not match its contents";
	case RECBATCH_E_COUNT:
		return "the record count does not match the records in the batch";
	case RECBATCH_E_RECORD:
		return "a record in the batch is malformed";
	case RECBATCH_E_TIMESTAMP:
		return "the record batch has an invalid timestamp";
	case RECBATCH_E_COMPRESSION:
		return "the record batch uses an unsupported compression codec";
	case RECBATCH_E_CONTROL:
		return "control and transactional batches are not supported";
	}
	return "unknown record batch error";
}

/* ---- record iteration ---- */

int recbatch_iter_init(recbatch_iter *it, const uint8_t *batch, size_t len)
{
	recbatch_hdr h;
	int err = recbatch_parse_hdr(batch, len, &h);

	if (err)
		return err;
	if (codec_of(&h) != CODEC_NONE)
		return RECBATCH_E_COMPRESSION;
	wire_rd_init(&it->rd, batch + RECBATCH_HEADER_SIZE,
		     (size_t)h.length + RECBATCH_LOG_OVERHEAD - RECBATCH_HEADER_SIZE);
	it->hdr = h;
	it->index = 0;
	return RECBATCH_OK;
}

/*
 * Stops after recordCount records.  A record that does not parse (including
 * one missing because the batch ends early) is an error, and stays one:
 * rd's error is sticky.
 */
int recbatch_iter_next(recbatch_iter *it, recbatch_record *rec)
{
	struct rec_raw r;

	if (it->rd.err)
		return -RECBATCH_E_RECORD;
	if (it->index >= it->hdr.record_count)
		return 0;
	if (read_record(&it->rd, &r))
		return -RECBATCH_E_RECORD;
	rec->offset = add_wrap(it->hdr.base_offset, r.offset_delta);
	rec->timestamp = add_wrap(it->hdr.base_timestamp, r.ts_delta);
	rec->attributes = r.attributes;
	rec->key = r.key;
	rec->value = r.value;
	rec->header_count = r.header_count;
	rec->headers = r.headers;
	rec->headers_len = r.headers_len;
	it->index++;
	return 1;
}

int recbatch_record_header(const recbatch_record *rec, size_t *pos, recbatch_header_kv *kv)
{
	wire_rd rd;
	wire_str k, v;

	if (*pos == rec->headers_len)
		return 0;
	if (*pos > rec->headers_len)
		return -RECBATCH_E_RECORD;
	wire_rd_init(&rd, rec->headers + *pos, rec->headers_len - *pos);
	k = wire_rd_vbytes(&rd);
	v = wire_rd_vbytes(&rd);
	if (rd.err || k.len < 0)
		return -RECBATCH_E_RECORD;
	*pos = (size_t)(rd.p - rec->headers);
	kv->key = k;
	kv->value = v;
	return 1;
}

void recbatch_set_producer(uint8_t *batch, size_t len, int64_t producer_id, int16_t epoch,
			   int32_t base_sequence)
{
	wire_put64(batch + RECBATCH_OFF_PRODUCER_ID, (uint64_t)producer_id);
	wire_put16(batch + RECBATCH_OFF_PRODUCER_EPOCH, (uint16_t)epoch);
	wire_put32(batch + RECBATCH_OFF_BASE_SEQ, (uint32_t)base_sequence);
	wire_put32(batch + RECBATCH_OFF_CRC,
		   crc32c(0, batch + RECBATCH_OFF_ATTR, len - RECBATCH_OFF_ATTR));
}

/* ---- copying with extra headers ---- */

/* The inverse of add_wrap: the iterator hands out base + delta, and the
 * copy needs the delta back bit for bit, whatever the sum wrapped to. */
static int64_t sub_wrap(int64_t a, int64_t b)
{
	return (int64_t)((uint64_t)a - (uint64_t)b);
}

/* Encoded size of a varint-framed key, value or header field. */
static uint64_t vstr_size(wire_str s)
{
	return wire_varint_size(s.len) + (s.len > 0 ? (uint64_t)s.len : 0);
}

/* Keyed on the length, not the pointer as wire_w_vbytes is: an empty extra
 * header may come as { NULL, 0 }, which must not turn into a null. */
static void w_vstr(wire_buf *b, wire_str s)
{
	wire_w_varint(b, s.len < 0 ? -1 : s.len);
	if (s.len > 0)
		wire_buf_append(b, s.ptr, (size_t)s.len);
}

/* The extra headers take the same bytes in every record: sized once.  A
 * null key would make every copied record malformed. */
static int extra_size(const recbatch_header_kv *extra, int n_extra, uint64_t *size)
{
	uint64_t n = 0;

	if (n_extra < 0)
		return RECBATCH_E_RECORD;
	for (int i = 0; i < n_extra; i++) {
		if (extra[i].key.len < 0 || extra[i].value.len < -1)
			return RECBATCH_E_RECORD;
		/* At most 2^31 headers of 2 * (5 + 2^31 - 1) bytes: no wrap. */
		n += vstr_size(extra[i].key) + vstr_size(extra[i].value);
	}
	if (n > INT32_MAX)
		return RECBATCH_E_LENGTH;
	*size = n;
	return RECBATCH_OK;
}

/* The 61-byte header of the plain copy; batchLength and CRC are patched
 * once the records are written. */
static void w_plain_hdr(wire_buf *b, const recbatch_hdr *h)
{
	int16_t attrs = (int16_t)(h->attributes &
				  ~(RECBATCH_ATTR_TRANSACTIONAL | RECBATCH_ATTR_CONTROL));

	wire_w_i64(b, 0);  /* baseOffset: assigned on append */
	wire_w_i32(b, 0);  /* batchLength, patched */
	wire_w_i32(b, -1); /* partitionLeaderEpoch */
	wire_w_i8(b, 2);   /* magic */
	wire_w_i32(b, 0);  /* crc, patched */
	wire_w_i16(b, attrs);
	wire_w_i32(b, h->last_offset_delta);
	wire_w_i64(b, h->base_timestamp);
	wire_w_i64(b, h->max_timestamp);
	wire_w_i64(b, -1); /* producerId */
	wire_w_i16(b, -1); /* producerEpoch */
	wire_w_i32(b, -1); /* baseSequence */
	wire_w_i32(b, h->record_count);
}

/*
 * Writes one record of the copy.  Its length varint comes first, so the
 * body is sized before anything is written: no scratch buffer per record.
 * The original's headers are already framed and go in verbatim.  written
 * is what the copy holds so far, to keep batchLength inside an int32.
 */
static int w_record(wire_buf *b, const recbatch_hdr *h, const recbatch_record *rec,
		    const recbatch_header_kv *extra, int n_extra, uint64_t xsize,
		    size_t written)
{
	int32_t off_delta = (int32_t)sub_wrap(rec->offset, h->base_offset);
	int64_t ts_delta = sub_wrap(rec->timestamp, h->base_timestamp);
	int64_t count = (int64_t)rec->header_count + n_extra;
	uint64_t body;

	if (count > INT32_MAX)
		return RECBATCH_E_LENGTH;
	body = 1 + wire_varlong_size(ts_delta) + wire_varint_size(off_delta) +
	       vstr_size(rec->key) + vstr_size(rec->value) +
	       wire_varint_size((int32_t)count) + rec->headers_len + xsize;
	if (body > INT32_MAX ||
	    written + wire_varint_size((int32_t)body) + body >
		    (uint64_t)INT32_MAX + RECBATCH_LOG_OVERHEAD)
		return RECBATCH_E_LENGTH;

	wire_w_varint(b, (int32_t)body);
	wire_w_i8(b, rec->attributes);
	wire_w_varlong(b, ts_delta);
	wire_w_varint(b, off_delta);
	w_vstr(b, rec->key);
	w_vstr(b, rec->value);
	wire_w_varint(b, (int32_t)count);
	wire_buf_append(b, rec->headers, rec->headers_len);
	for (int i = 0; i < n_extra; i++) {
		w_vstr(b, extra[i].key);
		w_vstr(b, extra[i].value);
	}
	return RECBATCH_OK;
}

int recbatch_add_headers(const uint8_t *batch, size_t len, const recbatch_header_kv *extra,
			 int n_extra, wire_buf *out)
{
	size_t start = out->len;
	recbatch_iter it;
	recbatch_record rec;
	uint64_t xsize;
	int32_t walked = 0;
	size_t end;
	uint8_t *p;
	int err, rc;

	err = recbatch_iter_init(&it, batch, len);
	if (err)
		goto out;
	err = extra_size(extra, n_extra, &xsize);
	if (err)
		goto out;
	w_plain_hdr(out, &it.hdr);
	while ((rc = recbatch_iter_next(&it, &rec)) == 1) {
		err = w_record(out, &it.hdr, &rec, extra, n_extra, xsize, out->len - start);
		if (err)
			goto out;
		walked++;
	}
	if (rc < 0) {
		err = RECBATCH_E_RECORD;
		goto out;
	}
	/* The iterator stops after recordCount records: bytes left over mean
	 * more records than the count, as walk_records() sees it. */
	if (walked != it.hdr.record_count || wire_rd_left(&it.rd)) {
		err = RECBATCH_E_COUNT;
		goto out;
	}
	if (out->oom) {
		err = RECBATCH_E_TRUNCATED;
		goto out;
	}
	/* Pointers into out only now: writing may have moved its memory. */
	p = out->data + start;
	end = out->len - start;
	wire_put32(p + RECBATCH_OFF_LENGTH, (uint32_t)(end - RECBATCH_LOG_OVERHEAD));
	wire_put32(p + RECBATCH_OFF_CRC,
		   crc32c(0, p + RECBATCH_OFF_ATTR, end - RECBATCH_OFF_ATTR));
out:
	if (err)
		out->len = start;
	return err;
}
