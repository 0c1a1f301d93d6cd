/*
 * test_captures.c — proto/wire and proto/recbatch against real frames that
 * librdkafka 2.0.2 (kcat and a small C producer) exchanged with its mock
 * broker (tests/captures, decoded in tests/captures/INDEX.md).
 *
 * The Produce v7 requests and Fetch v11 responses are parsed here by hand
 * with wire_rd, down to their record batches, which must validate; the
 * uncompressed ones must hold exactly the records INDEX.md lists.  If the
 * captures are regenerated (capture_all.sh) the keys, partitions and frame
 * order stay the same but CRCs, timestamps and the producer id do not, so
 * those are only checked for consistency, never against fixed values.
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

#include "recbatch.h"
#include "wire.h"

#ifndef CAPTURES_DIR
#error "the build defines CAPTURES_DIR (tests/unit/meson.build)"
#endif

#define MAX_PARTS 16
#define MAX_FILES 64

/* ---- loading frames ---- */

/* Reads CAPTURES_DIR/rel whole; the caller frees.  An exact-size heap
 * buffer, so ASan catches any read past a frame. */
static uint8_t *load(const char *rel, size_t *len)
{
	char path[512];
	FILE *f;
	long n;
	uint8_t *buf;

	snprintf(path, sizeof(path), "%s/%s", CAPTURES_DIR, rel);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists dir's files whose names contain `what` and end in ".bin" but not
 * ".orig.bin", sorted; returns how many (names are malloc'd). */
static int list_frames(const char *dir, const char *what, char **names)
{
	char path[512];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", CAPTURES_DIR, dir);
	d = opendir(path);
	if (!d)
		fail_msg("cannot open %s", path);
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (!strstr(de->d_name, what) || l < 4 || strcmp(de->d_name + l - 4, ".bin") ||
		    strstr(de->d_name, ".orig.bin"))
			continue;
		assert_true(n < MAX_FILES);
		names[n] = malloc(strlen(dir) + l + 2);
		assert_non_null(names[n]);
		sprintf(names[n], "%s/%s", dir, de->d_name);
		n++;
	}
	closedir(d);
	qsort(names, (size_t)n, sizeof(names[0]), cmp_names);
	return n;
}

static void free_names(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
}

/* ---- parsing Produce v7 and Fetch v11 by hand ---- */

/* One partition's records field, pointing into the frame. */
struct part {
	wire_str topic;
	int32_t partition;
	wire_str records;
};

struct produce_req {
	int32_t correlation_id;
	wire_str client_id;
	wire_str transactional_id;
	int16_t acks;
	int32_t timeout_ms;
	int nparts;
	struct part parts[MAX_PARTS];
};

/* Checks the int32 size prefix and starts a reader on the payload. */
static void open_frame(wire_rd *rd, const uint8_t *frame, size_t len)
{
	wire_rd_init(rd, frame, len);
	assert_int_equal(wire_rd_i32(rd), (int32_t)(len - 4));
}

/*
 * Produce v3+ (non-flexible): header int16 api_key, int16 api_version,
 * int32 correlation_id, nullable string client_id; body: nullable string
 * transactional_id, int16 acks, int32 timeout_ms, [topics: string name,
 * [partitions: int32 index, bytes records]].
 */
static void parse_produce(const uint8_t *frame, size_t len, struct produce_req *req)
{
	wire_rd rd;
	int32_t ntopics;

	open_frame(&rd, frame, len);
	assert_int_equal(wire_rd_i16(&rd), 0);
	assert_int_equal(wire_rd_i16(&rd), 7);
	req->correlation_id = wire_rd_i32(&rd);
	req->client_id = wire_rd_str(&rd);
	req->transactional_id = wire_rd_str(&rd);
	req->acks = wire_rd_i16(&rd);
	req->timeout_ms = wire_rd_i32(&rd);
	req->nparts = 0;
	ntopics = wire_rd_array(&rd, 2 + 4);
	for (int32_t t = 0; t < ntopics && !rd.err; t++) {
		wire_str name = wire_rd_str(&rd);
		int32_t nparts = wire_rd_array(&rd, 4 + 4);

		for (int32_t p = 0; p < nparts && !rd.err; p++) {
			struct part *pt = &req->parts[req->nparts];

			assert_true(req->nparts < MAX_PARTS);
			pt->topic = name;
			pt->partition = wire_rd_i32(&rd);
			pt->records = wire_rd_bytes(&rd);
			req->nparts++;
		}
	}
	assert_false(rd.err);
	assert_int_equal(wire_rd_left(&rd), 0);
}

/*
 * Fetch v11 response: int32 correlation_id; int32 throttle_time_ms, int16
 * error_code, int32 session_id, [topics: string topic, [partitions: int32
 * index, int16 error_code, int64 high_watermark, int64 last_stable_offset,
 * int64 log_start_offset, nullable [aborted: int64 producer_id, int64
 * first_offset], int32 preferred_read_replica, nullable bytes records]].
 */
static int parse_fetch(const uint8_t *frame, size_t len, struct part *parts)
{
	wire_rd rd;
	int32_t ntopics;
	int n = 0;

	open_frame(&rd, frame, len);
	wire_rd_i32(&rd); /* correlation_id */
	wire_rd_i32(&rd); /* throttle_time_ms */
	assert_int_equal(wire_rd_i16(&rd), 0);
	wire_rd_i32(&rd); /* session_id */
	ntopics = wire_rd_array(&rd, 2 + 4);
	for (int32_t t = 0; t < ntopics && !rd.err; t++) {
		wire_str topic = wire_rd_str(&rd);
		int32_t nparts = wire_rd_array(&rd, 4 + 2 + 24 + 4 + 4 + 4);

		for (int32_t p = 0; p < nparts && !rd.err; p++) {
			int32_t naborted;

			assert_true(n < MAX_PARTS);
			parts[n].topic = topic;
			parts[n].partition = wire_rd_i32(&rd);
			assert_int_equal(wire_rd_i16(&rd), 0);
			wire_rd_take(&rd, 3 * 8); /* watermarks and log start */
			naborted = wire_rd_array(&rd, 16);
			if (naborted > 0)
				wire_rd_take(&rd, (size_t)naborted * 16);
			wire_rd_i32(&rd); /* preferred_read_replica */
			parts[n].records = wire_rd_bytes(&rd);
			n++;
		}
	}
	assert_false(rd.err);
	assert_int_equal(wire_rd_left(&rd), 0);
	return n;
}

/* ---- walking the batches of a records field ---- */

/*
 * Validates every batch in a records field.  A Fetch response may be cut
 * inside its last batch (the broker fills up to max_bytes), so with
 * allow_partial that one may be TRUNCATED; every complete batch must be OK.
 * Returns the number of complete batches.
 */
static int validate_all(wire_str records, bool allow_partial)
{
	const uint8_t *p = (const uint8_t *)records.ptr;
	size_t left = records.len < 0 ? 0 : (size_t)records.len;
	int n = 0;

	while (left) {
		size_t size = recbatch_size(p, left);
		int err = recbatch_validate(p, left, NULL, NULL);

		if (size == 0 || size > left) {
			/* Runs past the end of the field: the last batch. */
			assert_true(allow_partial);
			assert_int_equal(err, RECBATCH_E_TRUNCATED);
			break;
		}
		if (err)
			fail_msg("batch %d: %s", n, recbatch_strerror(err));
		p += size;
		left -= size;
		n++;
	}
	return n;
}

/* What INDEX.md says one partition's batch holds. */
struct expect {
	const char *topic;
	int32_t partition;
	int n;
	const char *keys[5];
	const char *values[5];
	int nh; /* every record carries the same headers */
	const char *hkeys[2];
	const char *hvalues[2];
};

/* Iterates one uncompressed batch and asserts its records exactly;
 * returns its baseTimestamp for checks across batches. */
static int64_t assert_batch_records(const uint8_t *batch, size_t len, const struct expect *e)
{
	recbatch_iter it;
	recbatch_record rec;
	recbatch_hdr h;
	int64_t max_ts;
	int i = 0, rc;

	assert_int_equal(recbatch_validate(batch, len, &h, &max_ts), RECBATCH_OK);
	assert_int_equal(h.record_count, e->n);
	assert_int_equal(h.last_offset_delta, e->n - 1);
	/* librdkafka stamps a whole batch with one timestamp. */
	assert_true(max_ts == h.base_timestamp);
	assert_true(h.max_timestamp == h.base_timestamp);
	assert_int_equal(recbatch_iter_init(&it, batch, len), RECBATCH_OK);
	while ((rc = recbatch_iter_next(&it, &rec)) == 1) {
		recbatch_header_kv kv;
		size_t pos = 0;
		int nh = 0;

		assert_true(i < e->n);
		assert_true(rec.offset == h.base_offset + i);
		assert_true(rec.timestamp == h.base_timestamp);
		assert_true(wire_str_eq(rec.key, e->keys[i]));
		assert_true(wire_str_eq(rec.value, e->values[i]));
		assert_int_equal(rec.header_count, e->nh);
		while (recbatch_record_header(&rec, &pos, &kv) == 1) {
			assert_true(nh < e->nh);
			assert_true(wire_str_eq(kv.key, e->hkeys[nh]));
			assert_true(wire_str_eq(kv.value, e->hvalues[nh]));
			nh++;
		}
		assert_int_equal(nh, e->nh);
		i++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(i, e->n);
	return h.base_timestamp;
}

#define KCAT_HDRS 2, { "origin", "scenario" }, { "kcat", "b" }

/* kcat -K : into t3: which partition got which line (INDEX.md, b-produce). */
static const struct expect t3[3] = {
	{ "t3", 0, 2, { "key-07", "key-10" }, { "value-07", "value-10" }, KCAT_HDRS },
	{ "t3", 1, 5, { "key-02", "key-03", "key-05", "key-06", "key-08" },
	  { "value-02", "value-03", "value-05", "value-06", "value-08" }, KCAT_HDRS },
	{ "t3", 2, 3, { "key-01", "key-04", "key-09" },
	  { "value-01", "value-04", "value-09" }, KCAT_HDRS },
};

static const struct expect idem[2] = {
	{ "idem", 0, 3, { "idem-key-0", "idem-key-1", "idem-key-2" },
	  { "idem-value-0", "idem-value-1", "idem-value-2" }, 0, { NULL, NULL }, { NULL, NULL } },
	{ "idem", 0, 2, { "idem-key-3", "idem-key-4" },
	  { "idem-value-3", "idem-value-4" }, 0, { NULL, NULL }, { NULL, NULL } },
};

/* The one partition of a Produce request (librdkafka sends one each). */
static struct part produce_part(const uint8_t *frame, size_t len, const char *client)
{
	struct produce_req req;

	parse_produce(frame, len, &req);
	assert_true(wire_str_eq(req.client_id, client));
	assert_int_equal(req.transactional_id.len, -1);
	assert_int_equal(req.acks, -1);
	assert_int_equal(req.timeout_ms, 30000);
	assert_int_equal(req.nparts, 1);
	return req.parts[0];
}

/* ---- Produce ---- */

static void test_captures_b_produce_records(void **state)
{
	static const char *const files[] = {
		"b-produce/0007-req-Produce-v7.bin",
		"b-produce/0009-req-Produce-v7.bin",
		"b-produce/0010-req-Produce-v7.bin",
	};
	bool seen[3] = { false, false, false };
	int64_t ts = 0;

	(void)state;
	for (size_t f = 0; f < 3; f++) {
		size_t len;
		uint8_t *frame = load(files[f], &len);
		struct part pt = produce_part(frame, len, "rdkafka");
		const struct expect *e;
		int64_t bts;

		assert_true(wire_str_eq(pt.topic, "t3"));
		assert_true(pt.partition >= 0 && pt.partition < 3);
		assert_false(seen[pt.partition]);
		seen[pt.partition] = true;
		e = &t3[pt.partition];
		assert_int_equal(validate_all(pt.records, false), 1);
		assert_int_equal(recbatch_size((const uint8_t *)pt.records.ptr,
					       (size_t)pt.records.len), (size_t)pt.records.len);
		bts = assert_batch_records((const uint8_t *)pt.records.ptr,
					   (size_t)pt.records.len, e);
		/* kcat produced all ten lines at once. */
		if (f)
			assert_true(bts == ts);
		ts = bts;
		free(frame);
	}
}

static void test_captures_b_produce_header_fields(void **state)
{
	size_t len;
	uint8_t *frame = load("b-produce/0007-req-Produce-v7.bin", &len);
	struct part pt = produce_part(frame, len, "rdkafka");
	recbatch_hdr h;

	(void)state;
	assert_int_equal(recbatch_validate((const uint8_t *)pt.records.ptr,
					   (size_t)pt.records.len, &h, NULL), RECBATCH_OK);
	assert_true(h.base_offset == 0);
	assert_int_equal(h.length, pt.records.len - RECBATCH_LOG_OVERHEAD);
	assert_int_equal(h.leader_epoch, 0);
	assert_int_equal(h.magic, 2);
	assert_int_equal(h.attributes, 0);
	assert_true(h.producer_id == -1);
	assert_int_equal(h.producer_epoch, -1);
	assert_int_equal(h.base_sequence, -1);
	assert_int_equal(recbatch_check_crc((const uint8_t *)pt.records.ptr,
					    (size_t)pt.records.len), RECBATCH_OK);
	free(frame);
}

static void test_captures_e_idempotent_records(void **state)
{
	static const char *const files[] = {
		"e-idempotent/0009-req-Produce-v7.bin",
		"e-idempotent/0011-req-Produce-v7.bin",
	};
	int64_t pid = 0;
	int32_t seq = 0;

	(void)state;
	for (size_t f = 0; f < 2; f++) {
		size_t len;
		uint8_t *frame = load(files[f], &len);
		struct part pt = produce_part(frame, len, "idem_producer");
		const uint8_t *p = (const uint8_t *)pt.records.ptr;
		recbatch_hdr h;

		assert_true(wire_str_eq(pt.topic, "idem"));
		assert_int_equal(pt.partition, 0);
		assert_int_equal(validate_all(pt.records, false), 1);
		assert_batch_records(p, (size_t)pt.records.len, &idem[f]);
		assert_int_equal(recbatch_parse_hdr(p, (size_t)pt.records.len, &h), RECBATCH_OK);
		/* One producer id and epoch; sequences continue across batches. */
		assert_true(h.producer_id >= 0);
		assert_int_equal(h.producer_epoch, 0);
		if (f)
			assert_true(h.producer_id == pid);
		assert_int_equal(h.base_sequence, seq);
		pid = h.producer_id;
		seq += h.record_count;
		free(frame);
	}
}

static void test_captures_f_gzip_validates_not_iterable(void **state)
{
	size_t len;
	uint8_t *frame = load("f-gzip/0007-req-Produce-v7.bin", &len);
	struct part pt = produce_part(frame, len, "rdkafka");
	const uint8_t *p = (const uint8_t *)pt.records.ptr;
	recbatch_iter it;
	recbatch_hdr h;
	int64_t max_ts = 0;

	(void)state;
	assert_true(wire_str_eq(pt.topic, "gz"));
	assert_int_equal(pt.partition, 0);
	assert_int_equal(validate_all(pt.records, false), 1);
	assert_int_equal(recbatch_validate(p, (size_t)pt.records.len, &h, &max_ts), RECBATCH_OK);
	assert_int_equal(h.attributes & RECBATCH_ATTR_COMPRESSION_MASK, 1);
	assert_int_equal(h.record_count, 5);
	assert_int_equal(h.last_offset_delta, 4);
	/* Compressed: the header's maxTimestamp, records unread. */
	assert_true(max_ts == h.max_timestamp);
	assert_int_equal(recbatch_iter_init(&it, p, (size_t)pt.records.len),
			 RECBATCH_E_COMPRESSION);
	free(frame);
}

static void test_captures_corrupt_byte_is_crc_error(void **state)
{
	size_t len;
	uint8_t *frame = load("b-produce/0009-req-Produce-v7.bin", &len);
	struct part pt = produce_part(frame, len, "rdkafka");
	uint8_t *p = (uint8_t *)pt.records.ptr; /* our own heap copy */
	size_t n = (size_t)pt.records.len;

	(void)state;
	assert_int_equal(recbatch_validate(p, n, NULL, NULL), RECBATCH_OK);
	/* The last byte is inside the last record's last header value. */
	p[n - 1] ^= 0x20;
	assert_int_equal(recbatch_validate(p, n, NULL, NULL), RECBATCH_E_CRC);
	assert_int_equal(recbatch_check_crc(p, n), RECBATCH_E_CRC);
	p[n - 1] ^= 0x20;
	/* A byte of the header covered by the CRC: producerEpoch. */
	p[RECBATCH_OFF_PRODUCER_EPOCH] ^= 0x01;
	assert_int_equal(recbatch_validate(p, n, NULL, NULL), RECBATCH_E_CRC);
	p[RECBATCH_OFF_PRODUCER_EPOCH] ^= 0x01;
	/* baseOffset is not covered: the broker rewrites it. */
	recbatch_set_base_offset(p, 42);
	assert_int_equal(recbatch_validate(p, n, NULL, NULL), RECBATCH_OK);
	free(frame);
}

/* ---- Fetch ---- */

/* c-consume read back everything b-produce wrote: the same records per
 * partition, at offsets 0..n-1. */
static void test_captures_c_consume_fetch_records(void **state)
{
	char *names[MAX_FILES];
	int nfiles = list_frames("c-consume", "-resp-Fetch-v11", names);
	int found[3] = { 0, 0, 0 };

	(void)state;
	assert_true(nfiles >= 1);
	for (int f = 0; f < nfiles; f++) {
		struct part parts[MAX_PARTS];
		size_t len;
		uint8_t *frame = load(names[f], &len);
		int n = parse_fetch(frame, len, parts);

		for (int i = 0; i < n; i++) {
			const uint8_t *p = (const uint8_t *)parts[i].records.ptr;
			int nb;

			assert_true(wire_str_eq(parts[i].topic, "t3"));
			assert_true(parts[i].partition >= 0 && parts[i].partition < 3);
			nb = validate_all(parts[i].records, true);
			if (nb == 0)
				continue;
			assert_int_equal(nb, 1);
			assert_batch_records(p, (size_t)parts[i].records.len,
					     &t3[parts[i].partition]);
			found[parts[i].partition]++;
		}
		free(frame);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(found[i], 1);
	free_names(names, nfiles);
}

/* Every Fetch response of every consuming scenario: all batches valid,
 * tolerating only a cut last batch per partition. */
static void test_captures_fetch_batches_validate(void **state)
{
	static const char *const dirs[] = { "c-consume", "d-group", "g-consume-gzip" };
	int batches = 0;

	(void)state;
	for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
		char *names[MAX_FILES];
		int nfiles = list_frames(dirs[d], "-resp-Fetch-v11", names);

		assert_true(nfiles >= 1);
		for (int f = 0; f < nfiles; f++) {
			struct part parts[MAX_PARTS];
			size_t len;
			uint8_t *frame = load(names[f], &len);
			int n = parse_fetch(frame, len, parts);

			for (int i = 0; i < n; i++)
				batches += validate_all(parts[i].records, true);
			free(frame);
		}
		free_names(names, nfiles);
	}
	/* c: 3, d: 3, g: 1 (INDEX.md). */
	assert_int_equal(batches, 7);
}

/* A Fetch response cut inside its last batch, as a broker filling
 * max_bytes may send it: the complete batches still validate. */
static void test_captures_fetch_partial_last_batch(void **state)
{
	size_t len;
	uint8_t *frame = load("c-consume/0016-resp-Fetch-v11.bin", &len);
	struct part parts[MAX_PARTS];
	int n = parse_fetch(frame, len, parts);

	(void)state;
	for (int i = 0; i < n; i++) {
		size_t full = (size_t)parts[i].records.len;
		uint8_t *two = malloc(2 * full);
		wire_str cut;

		if (!full) {
			free(two);
			continue;
		}
		assert_non_null(two);
		memcpy(two, parts[i].records.ptr, full);
		memcpy(two + full, parts[i].records.ptr, full);
		/* Every cut of the second copy: one good batch, then a stub. */
		for (size_t l = full + 1; l < 2 * full; l++) {
			uint8_t *t = malloc(l);

			assert_non_null(t);
			memcpy(t, two, l);
			cut.ptr = (const char *)t;
			cut.len = (int32_t)l;
			assert_int_equal(validate_all(cut, true), 1);
			free(t);
		}
		free(two);
	}
	free(frame);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_captures_b_produce_records),
		cmocka_unit_test(test_captures_b_produce_header_fields),
		cmocka_unit_test(test_captures_e_idempotent_records),
		cmocka_unit_test(test_captures_f_gzip_validates_not_iterable),
		cmocka_unit_test(test_captures_corrupt_byte_is_crc_error),
		cmocka_unit_test(test_captures_c_consume_fetch_records),
		cmocka_unit_test(test_captures_fetch_batches_validate),
		cmocka_unit_test(test_captures_fetch_partial_last_batch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
