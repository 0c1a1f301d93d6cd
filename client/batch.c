/*
 * batch.c — RecordBatch v2 builder (see batch.h for the layout contract).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "crc32c.h"
#include "recbatch.h"
#include "wire.h"

int batch_init(struct batch *b, size_t initial_cap)
{
	memset(b, 0, sizeof(*b));
	if (initial_cap < RECBATCH_HEADER_SIZE + 64)
		initial_cap = RECBATCH_HEADER_SIZE + 64;
	b->buf = malloc(initial_cap);
	if (!b->buf)
		return -ENOMEM;
	b->cap = initial_cap;
	b->len = RECBATCH_HEADER_SIZE;
	b->base_seq = -1;
	b->base_offset = -1;
	return 0;
}

void batch_free(struct batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b->opaques);
	free(b->ext);
	b->buf = NULL;
	b->opaques = NULL;
	b->ext = NULL;
	b->n_ext = b->ext_cap = 0;
	b->ext_bytes = 0;
}

void batch_reset(struct batch *b)
{
	b->len = RECBATCH_HEADER_SIZE;
	b->count = 0;
	b->n_ext = 0;
	b->ext_bytes = 0;
	if (b->opaques)
		memset(b->opaques, 0, b->opaques_cap * sizeof(void *));
}

static inline size_t uvarint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline size_t zz32_size(int32_t v)
{
	return uvarint_size((uint32_t)((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static inline size_t zz64_size(int64_t v)
{
	return uvarint_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline uint8_t *put_uvarint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline uint8_t *put_zz32(uint8_t *p, int32_t v)
{
	return put_uvarint(p, (uint32_t)((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static inline uint8_t *put_zz64(uint8_t *p, int64_t v)
{
	return put_uvarint(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static size_t body_size(int64_t ts_delta, int32_t offset_delta, int32_t keylen, int32_t vlen,
			const sluice_header_t *hdrs, size_t nhdrs)
{
	size_t n = 1 + zz64_size(ts_delta) + zz32_size(offset_delta);

	n += zz32_size(keylen) + (keylen > 0 ? (size_t)keylen : 0);
	n += zz32_size(vlen) + (vlen > 0 ? (size_t)vlen : 0);
	n += zz32_size((int32_t)nhdrs);
	for (size_t i = 0; i < nhdrs; i++) {
		size_t kl = strlen(hdrs[i].name);
		int32_t hvl = hdrs[i].value ? (int32_t)hdrs[i].value_len : -1;

		n += zz32_size((int32_t)kl) + kl + zz32_size(hvl) + (hvl > 0 ? (size_t)hvl : 0);
	}
	return n;
}

size_t batch_record_size(int64_t ts_delta, int32_t offset_delta, int32_t keylen, int32_t vlen,
			 const sluice_header_t *hdrs, size_t nhdrs)
{
	size_t body = body_size(ts_delta, offset_delta, keylen, vlen, hdrs, nhdrs);

	return zz32_size((int32_t)body) + body;
}

static int append(struct batch *b, size_t max_bytes, int64_t ts, const void *key, int32_t keylen,
		  const void *value, int32_t vlen, const sluice_header_t *hdrs, size_t nhdrs,
		  void *opaque, bool by_ref)
{
	int64_t ts_delta;
	size_t body, need;
	uint8_t *p;

	if (!key)
		keylen = -1;
	if (!value)
		vlen = -1;
	if (b->count == 0)
		b->base_ts = b->max_ts = ts;
	ts_delta = ts - b->base_ts;
	if (vlen <= 0)
		by_ref = false;
	body = body_size(ts_delta, b->count, keylen, vlen, hdrs, nhdrs);
	need = zz32_size((int32_t)body) + body;
	if (b->count > 0 && batch_wire_len(b) + need > max_bytes)
		return 1;
	if (by_ref) {
		need -= (size_t)vlen; /* what goes into buf */
		if (b->n_ext == b->ext_cap) {
			int ncap = b->ext_cap ? b->ext_cap * 2 : 16;
			struct batch_ext *ne = realloc(b->ext, (size_t)ncap * sizeof(*ne));

			if (!ne)
				return -ENOMEM;
			b->ext = ne;
			b->ext_cap = ncap;
		}
	}
	if (b->len + need > b->cap) {
		size_t ncap = b->cap * 2;
		uint8_t *nb;

		while (ncap < b->len + need)
			ncap *= 2;
		if (b->count > 0 && ncap > max_bytes && max_bytes >= b->len + need)
			ncap = max_bytes;
		nb = realloc(b->buf, ncap);
		if (!nb)
			return -ENOMEM;
		b->buf = nb;
		b->cap = ncap;
	}
	if (opaque || b->opaques) {
		if ((size_t)b->count >= b->opaques_cap) {
			size_t ncap = b->opaques_cap ? b->opaques_cap * 2 : 64;
			void **no;

			while (ncap <= (size_t)b->count)
				ncap *= 2;
			no = realloc(b->opaques, ncap * sizeof(void *));
			if (!no)
				return -ENOMEM;
			memset(no + b->opaques_cap, 0, (ncap - b->opaques_cap) * sizeof(void *));
			b->opaques = no;
			b->opaques_cap = ncap;
		}
		b->opaques[b->count] = opaque;
	}
	p = b->buf + b->len;
	p = put_zz32(p, (int32_t)body);
	*p++ = 0; /* record attributes */
	p = put_zz64(p, ts_delta);
	p = put_zz32(p, b->count);
	p = put_zz32(p, keylen);
	if (keylen > 0) {
		memcpy(p, key, (size_t)keylen);
		p += keylen;
	}
	p = put_zz32(p, vlen);
	if (by_ref) {
		b->ext[b->n_ext].at = (size_t)(p - b->buf);
		b->ext[b->n_ext].p = value;
		b->ext[b->n_ext].len = (size_t)vlen;
		b->n_ext++;
		b->ext_bytes += (size_t)vlen;
	} else if (vlen > 0) {
		memcpy(p, value, (size_t)vlen);
		p += vlen;
	}
	p = put_zz32(p, (int32_t)nhdrs);
	for (size_t i = 0; i < nhdrs; i++) {
		size_t kl = strlen(hdrs[i].name);
		int32_t hvl = hdrs[i].value ? (int32_t)hdrs[i].value_len : -1;

		p = put_zz32(p, (int32_t)kl);
		memcpy(p, hdrs[i].name, kl);
		p += kl;
		p = put_zz32(p, hvl);
		if (hvl > 0) {
			memcpy(p, hdrs[i].value, (size_t)hvl);
			p += hvl;
		}
	}
	b->len = (size_t)(p - b->buf);
	if (ts > b->max_ts)
		b->max_ts = ts;
	b->count++;
	return 0;
}

int batch_append(struct batch *b, size_t max_bytes, int64_t ts, const void *key, int32_t keylen,
		 const void *value, int32_t vlen, const sluice_header_t *hdrs, size_t nhdrs,
		 void *opaque)
{
	return append(b, max_bytes, ts, key, keylen, value, vlen, hdrs, nhdrs, opaque, false);
}

int batch_append_ref(struct batch *b, size_t max_bytes, int64_t ts, const void *key,
		     int32_t keylen, const void *value, int32_t vlen, const sluice_header_t *hdrs,
		     size_t nhdrs, void *opaque)
{
	return append(b, max_bytes, ts, key, keylen, value, vlen, hdrs, nhdrs, opaque, true);
}

void batch_seal(struct batch *b, int64_t producer_id, int16_t producer_epoch, int32_t base_seq)
{
	uint8_t *h = b->buf;

	wire_put64(h, 0);
	wire_put32(h + RECBATCH_OFF_LENGTH, (uint32_t)(batch_wire_len(b) - RECBATCH_LOG_OVERHEAD));
	wire_put32(h + RECBATCH_OFF_LEADER_EPOCH, (uint32_t)-1);
	h[RECBATCH_OFF_MAGIC] = 2;
	wire_put16(h + RECBATCH_OFF_ATTR, 0);
	wire_put32(h + RECBATCH_OFF_LAST_DELTA, (uint32_t)(b->count - 1));
	wire_put64(h + RECBATCH_OFF_BASE_TS, (uint64_t)b->base_ts);
	wire_put64(h + RECBATCH_OFF_MAX_TS, (uint64_t)b->max_ts);
	wire_put64(h + RECBATCH_OFF_PRODUCER_ID, (uint64_t)producer_id);
	wire_put16(h + RECBATCH_OFF_PRODUCER_EPOCH, (uint16_t)producer_epoch);
	wire_put32(h + RECBATCH_OFF_BASE_SEQ, (uint32_t)base_seq);
	wire_put32(h + RECBATCH_OFF_COUNT, (uint32_t)b->count);
	{
		/* CRC over buf and the by-reference values, in wire order. */
		size_t pos = RECBATCH_OFF_ATTR;
		uint32_t crc = 0;

		for (int i = 0; i < b->n_ext; i++) {
			crc = crc32c(crc, h + pos, b->ext[i].at - pos);
			crc = crc32c(crc, b->ext[i].p, b->ext[i].len);
			pos = b->ext[i].at;
		}
		crc = crc32c(crc, h + pos, b->len - pos);
		wire_put32(h + RECBATCH_OFF_CRC, crc);
	}
	b->base_seq = base_seq;
	b->sealed = true;
}
