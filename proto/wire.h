/*
 * wire.h — Kafka primitive types: a bounds-checked reader and a growable
 * writer.
 *
 * Contract:
 *  - Big-endian integers, zig-zag varints (RecordBatch fields) and unsigned
 *    varints (compact lengths), int16-length strings, int32-length bytes,
 *    int32-count arrays, as in the Kafka protocol guide.
 *  - wire_rd never reads past `end`.  Any read that would sets rd->err and
 *    returns zero / an empty value; later reads keep failing.  Callers parse a
 *    whole request and check rd->err once at the end (STYLE §10).
 *  - Lengths read from the wire are checked against what is left in the
 *    buffer before anything is returned, so a hostile length never drives an
 *    allocation or a read.
 *  - wire_buf grows with realloc; on allocation failure it sets buf->oom and
 *    ignores later writes.  Check buf->oom before sending.
 *
 * Threads: both types are plain values owned by whoever declared them.
 */
#ifndef SLUICE_WIRE_H
#define SLUICE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct wire_rd {
	const uint8_t *p;   /* next unread byte */
	const uint8_t *end; /* one past the last byte */
	bool err;           /* sticky: a read ran past end or a length was bad */
} wire_rd;

/* A string or bytes field seen in place (not copied, not NUL-terminated).
 * len == -1 means null. */
typedef struct wire_str {
	const char *ptr;
	int32_t len;
} wire_str;

static inline void wire_rd_init(wire_rd *rd, const void *buf, size_t len)
{
	rd->p = buf;
	rd->end = rd->p + len;
	rd->err = false;
}

static inline size_t wire_rd_left(const wire_rd *rd)
{
	return rd->err ? 0 : (size_t)(rd->end - rd->p);
}

/* Returns a pointer to the next n bytes and skips them, or NULL (err set). */
static inline const uint8_t *wire_rd_take(wire_rd *rd, size_t n)
{
	const uint8_t *p;

	if (rd->err || (size_t)(rd->end - rd->p) < n) {
		rd->err = true;
		return NULL;
	}
	p = rd->p;
	rd->p += n;
	return p;
}

static inline uint16_t wire_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t wire_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t wire_get64(const uint8_t *p)
{
	return (uint64_t)wire_get32(p) << 32 | wire_get32(p + 4);
}
static inline void wire_put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wire_put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void wire_put64(uint8_t *p, uint64_t v)
{
	wire_put32(p, (uint32_t)(v >> 32));
	wire_put32(p + 4, (uint32_t)v);
}

static inline int8_t wire_rd_i8(wire_rd *rd)
{
	const uint8_t *p = wire_rd_take(rd, 1);
	return p ? (int8_t)p[0] : 0;
}
static inline int16_t wire_rd_i16(wire_rd *rd)
{
	const uint8_t *p = wire_rd_take(rd, 2);
	return p ? (int16_t)wire_get16(p) : 0;
}
static inline int32_t wire_rd_i32(wire_rd *rd)
{
	const uint8_t *p = wire_rd_take(rd, 4);
	return p ? (int32_t)wire_get32(p) : 0;
}
static inline int64_t wire_rd_i64(wire_rd *rd)
{
	const uint8_t *p = wire_rd_take(rd, 8);
	return p ? (int64_t)wire_get64(p) : 0;
}

/* Unsigned LEB128 varint, at most 5 bytes (uvarint) or 10 (uvarlong). */
uint32_t wire_rd_uvarint(wire_rd *rd);
uint64_t wire_rd_uvarlong(wire_rd *rd);
/* Zig-zag signed varints as used inside RecordBatch records. */
int32_t wire_rd_varint(wire_rd *rd);
int64_t wire_rd_varlong(wire_rd *rd);

/* int16 length + bytes; length -1 is null.  Any other negative is an error. */
wire_str wire_rd_str(wire_rd *rd);
/* int32 length + bytes; length -1 is null. */
wire_str wire_rd_bytes(wire_rd *rd);
/* Zig-zag varint length + bytes (record keys, values, headers); -1 is null. */
wire_str wire_rd_vbytes(wire_rd *rd);

/* int32 array count.  -1 (null) is returned as -1.  A count that could not
 * fit in what is left, given that each element takes at least min_elem_size
 * bytes, sets err and returns 0: it caps allocations driven by counts. */
int32_t wire_rd_array(wire_rd *rd, size_t min_elem_size);

/* Copies a wire_str into a NUL-terminated buffer of size cap.  Returns false
 * (and writes an empty string) if it is null or does not fit. */
bool wire_str_copy(wire_str s, char *dst, size_t cap);
/* True if s equals the NUL-terminated string z. */
bool wire_str_eq(wire_str s, const char *z);

/* ---- writer ---- */

typedef struct wire_buf {
	uint8_t *data; /* owned; free with wire_buf_free */
	size_t len;
	size_t cap;
	bool oom;
} wire_buf;

void wire_buf_init(wire_buf *b);
void wire_buf_free(wire_buf *b);
void wire_buf_reset(wire_buf *b); /* len = 0, keeps the memory */
/* Makes room for n more bytes; returns a pointer to them (len not advanced)
 * or NULL with oom set. */
uint8_t *wire_buf_reserve(wire_buf *b, size_t n);
/* Appends n bytes and returns where they went (NULL on oom). */
uint8_t *wire_buf_append(wire_buf *b, const void *src, size_t n);

void wire_w_i8(wire_buf *b, int8_t v);
void wire_w_i16(wire_buf *b, int16_t v);
void wire_w_i32(wire_buf *b, int32_t v);
void wire_w_i64(wire_buf *b, int64_t v);
void wire_w_uvarint(wire_buf *b, uint32_t v);
void wire_w_varint(wire_buf *b, int32_t v);
void wire_w_varlong(wire_buf *b, int64_t v);
/* int16-length string; s == NULL writes null (-1). */
void wire_w_str(wire_buf *b, const char *s);
void wire_w_strn(wire_buf *b, const char *s, int16_t len);
/* int32-length bytes; p == NULL writes null (-1). */
void wire_w_bytes(wire_buf *b, const void *p, int32_t len);
/* Zig-zag varint-length bytes; p == NULL writes null (-1). */
void wire_w_vbytes(wire_buf *b, const void *p, int32_t len);

/* Reserves an int32 to fill in later (sizes, counts); returns its offset. */
size_t wire_w_placeholder32(wire_buf *b);
void wire_patch32(wire_buf *b, size_t at, int32_t v);

/* Size in bytes of v as a zig-zag varint / varlong. */
size_t wire_varint_size(int32_t v);
size_t wire_varlong_size(int64_t v);

#endif
