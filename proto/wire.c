/*
 * wire.c — see wire.h.
 */
#include "wire.h"

#include <stdlib.h>

static uint64_t rd_uleb(wire_rd *rd, int max_bytes)
{
	uint64_t v = 0;
	int shift = 0;

	for (int i = 0; i < max_bytes; i++) {
		const uint8_t *p = wire_rd_take(rd, 1);

		if (!p)
			return 0;
		v |= (uint64_t)(p[0] & 0x7f) << shift;
		if (!(p[0] & 0x80))
			return v;
		shift += 7;
	}
	rd->err = true; /* too long: malformed */
	return 0;
}

uint32_t wire_rd_uvarint(wire_rd *rd)
{
	uint64_t v = rd_uleb(rd, 5);

	if (v > UINT32_MAX) {
		rd->err = true;
		return 0;
	}
	return (uint32_t)v;
}

uint64_t wire_rd_uvarlong(wire_rd *rd)
{
	return rd_uleb(rd, 10);
}

int32_t wire_rd_varint(wire_rd *rd)
{
	uint32_t u = wire_rd_uvarint(rd);

	return (int32_t)((u >> 1) ^ (~(u & 1) + 1));
}

int64_t wire_rd_varlong(wire_rd *rd)
{
	uint64_t u = wire_rd_uvarlong(rd);

	return (int64_t)((u >> 1) ^ (~(u & 1) + 1));
}

static wire_str rd_sized(wire_rd *rd, int64_t len)
{
	wire_str s = { NULL, -1 };

	if (rd->err)
		return s;
	if (len == -1)
		return s;
	if (len < 0 || (uint64_t)len > (uint64_t)(rd->end - rd->p)) {
		rd->err = true;
		return s;
	}
	s.ptr = (const char *)rd->p;
	s.len = (int32_t)len;
	rd->p += len;
	return s;
}

wire_str wire_rd_str(wire_rd *rd)
{
	int16_t len = wire_rd_i16(rd);

	return rd_sized(rd, len);
}

wire_str wire_rd_bytes(wire_rd *rd)
{
	int32_t len = wire_rd_i32(rd);

	return rd_sized(rd, len);
}

wire_str wire_rd_vbytes(wire_rd *rd)
{
	int32_t len = wire_rd_varint(rd);

	return rd_sized(rd, len);
}

int32_t wire_rd_array(wire_rd *rd, size_t min_elem_size)
{
	int32_t n = wire_rd_i32(rd);

	if (rd->err)
		return 0;
	if (n == -1)
		return -1;
	if (n < 0 || (min_elem_size && (uint64_t)n * min_elem_size > (uint64_t)(rd->end - rd->p))) {
		rd->err = true;
		return 0;
	}
	return n;
}

bool wire_str_copy(wire_str s, char *dst, size_t cap)
{
	if (s.len < 0 || (size_t)s.len >= cap) {
		if (cap)
			dst[0] = '\0';
		return false;
	}
	memcpy(dst, s.ptr, (size_t)s.len);
	dst[s.len] = '\0';
	return true;
}

bool wire_str_eq(wire_str s, const char *z)
{
	size_t n = strlen(z);

	return s.len >= 0 && (size_t)s.len == n && memcmp(s.ptr, z, n) == 0;
}

/* ---- writer ---- */

void wire_buf_init(wire_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->oom = false;
}

void wire_buf_free(wire_buf *b)
{
	free(b->data);
	wire_buf_init(b);
}

void wire_buf_reset(wire_buf *b)
{
	b->len = 0;
	b->oom = false;
}

uint8_t *wire_buf_reserve(wire_buf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *d;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return NULL;
			}
			cap *= 2;
		}
		d = realloc(b->data, cap);
		if (!d) {
			b->oom = true;
			return NULL;
		}
		b->data = d;
		b->cap = cap;
	}
	return b->data + b->len;
}

uint8_t *wire_buf_append(wire_buf *b, const void *src, size_t n)
{
	uint8_t *p = wire_buf_reserve(b, n);

	if (!p)
		return NULL;
	if (n)
		memcpy(p, src, n);
	b->len += n;
	return p;
}

void wire_w_i8(wire_buf *b, int8_t v)
{
	uint8_t *p = wire_buf_reserve(b, 1);

	if (p) {
		p[0] = (uint8_t)v;
		b->len += 1;
	}
}

void wire_w_i16(wire_buf *b, int16_t v)
{
	uint8_t *p = wire_buf_reserve(b, 2);

	if (p) {
		wire_put16(p, (uint16_t)v);
		b->len += 2;
	}
}

void wire_w_i32(wire_buf *b, int32_t v)
{
	uint8_t *p = wire_buf_reserve(b, 4);

	if (p) {
		wire_put32(p, (uint32_t)v);
		b->len += 4;
	}
}

void wire_w_i64(wire_buf *b, int64_t v)
{
	uint8_t *p = wire_buf_reserve(b, 8);

	if (p) {
		wire_put64(p, (uint64_t)v);
		b->len += 8;
	}
}

static void w_uleb(wire_buf *b, uint64_t v)
{
	uint8_t *p = wire_buf_reserve(b, 10);
	size_t n = 0;

	if (!p)
		return;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	b->len += n;
}

void wire_w_uvarint(wire_buf *b, uint32_t v)
{
	w_uleb(b, v);
}

void wire_w_varint(wire_buf *b, int32_t v)
{
	w_uleb(b, (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)));
}

void wire_w_varlong(wire_buf *b, int64_t v)
{
	w_uleb(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

void wire_w_strn(wire_buf *b, const char *s, int16_t len)
{
	if (!s) {
		wire_w_i16(b, -1);
		return;
	}
	wire_w_i16(b, len);
	wire_buf_append(b, s, (size_t)len);
}

void wire_w_str(wire_buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	wire_w_strn(b, s, (int16_t)(n > INT16_MAX ? INT16_MAX : n));
}

void wire_w_bytes(wire_buf *b, const void *p, int32_t len)
{
	if (!p) {
		wire_w_i32(b, -1);
		return;
	}
	wire_w_i32(b, len);
	wire_buf_append(b, p, (size_t)len);
}

void wire_w_vbytes(wire_buf *b, const void *p, int32_t len)
{
	if (!p) {
		wire_w_varint(b, -1);
		return;
	}
	wire_w_varint(b, len);
	wire_buf_append(b, p, (size_t)len);
}

size_t wire_w_placeholder32(wire_buf *b)
{
	size_t at = b->len;

	wire_w_i32(b, 0);
	return at;
}

void wire_patch32(wire_buf *b, size_t at, int32_t v)
{
	if (!b->oom && at <= b->len && b->len - at >= 4)
		wire_put32(b->data + at, (uint32_t)v);
}

static size_t uleb_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

size_t wire_varint_size(int32_t v)
{
	return uleb_size((uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)));
}

size_t wire_varlong_size(int64_t v)
{
	return uleb_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}
