/*
 * test_segment.c — one segment: append and lookup, the sparse offset and
 * time indexes, lazy loading and validation of damaged index files, and a
 * failed index write leaving the segment unchanged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fileio.h"
#include "recbatch.h"
#include "segment.h"
#include "wire.h"

#define BASE 1000
#define MAX_BATCHES 64

#include "batchgen.h"

/* ---- fixture: a directory and a record of what was appended ---- */

struct written {
	uint64_t pos;
	size_t len;
	int64_t base;
	int count;
	int64_t ts;
};

struct fx {
	char dir[64];
	segment *s;
	struct written w[MAX_BATCHES];
	int n;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/sluice-seg-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	segment_unref(f->s);
	fileio_reset();
	nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void append(struct fx *f, int records, int64_t ts, size_t vlen, uint32_t interval)
{
	size_t len;
	uint8_t *b = make_batch(records, ts, vlen, &len);
	struct written *w = &f->w[f->n++];

	w->pos = segment_size(f->s);
	w->len = len;
	w->base = segment_end_offset(f->s);
	w->count = records;
	w->ts = ts;
	recbatch_set_base_offset(b, w->base);
	assert_int_equal(segment_append(f->s, b, len, ts, interval), 0);
	assert_int_equal(segment_size(f->s), w->pos + len);
	assert_int_equal(segment_end_offset(f->s), w->base + records);
	segment_publish(f->s, segment_size(f->s));
	free(b);
}

static void path_of(const struct fx *f, const char *ext, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/%020d%s", f->dir, BASE, ext);
}

static uint8_t *slurp(const struct fx *f, const char *ext, size_t *len)
{
	char path[PATH_MAX];
	struct stat st;
	uint8_t *buf;
	int fd;

	path_of(f, ext, path);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const struct fx *f, const char *ext, const void *buf, size_t len)
{
	char path[PATH_MAX];
	int fd;

	path_of(f, ext, path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* The entries the format comment prescribes for what f wrote. */
static size_t expected_index(const struct fx *f, uint32_t interval, uint32_t *rel, uint32_t *pos)
{
	uint64_t last = 0;
	size_t n = 0;

	for (int i = 0; i < f->n; i++) {
		if (f->w[i].pos > last && f->w[i].pos - last >= interval) {
			rel[n] = (uint32_t)(f->w[i].base - BASE);
			pos[n++] = (uint32_t)f->w[i].pos;
			last = f->w[i].pos;
		}
	}
	return n;
}

/* segment_find at every offset returns the batch containing it. */
static void check_find_all(struct fx *f)
{
	for (int i = 0; i < f->n; i++) {
		for (int k = 0; k < f->w[i].count; k++) {
			segment_span sp;

			assert_int_equal(segment_find(f->s, f->w[i].base + k, segment_visible(f->s),
						      INT64_MAX, 1, &sp), 0);
			assert_int_equal(sp.pos, f->w[i].pos);
			assert_int_equal(sp.len, f->w[i].len);
			assert_int_equal(sp.first_offset, f->w[i].base);
		}
	}
}

/* segment_find_time agrees with a linear search for many timestamps. */
static void check_find_time_all(struct fx *f, int64_t lo, int64_t hi)
{
	for (int64_t ts = lo; ts <= hi; ts++) {
		int64_t want = -1, want_ts = -1, off, fts;

		for (int i = 0; i < f->n; i++) {
			if (f->w[i].ts >= ts) {
				want = f->w[i].base;
				want_ts = f->w[i].ts;
				break;
			}
		}
		assert_int_equal(segment_find_time(f->s, ts, segment_visible(f->s), INT64_MAX, &off,
						   &fts), 0);
		assert_int_equal(off, want);
		assert_int_equal(fts, want_ts);
	}
}

/* ---- tests ---- */

static void test_segment_append_lookup(void **state)
{
	struct fx *f = *state;
	segment_span sp;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	assert_int_equal(segment_base(f->s), BASE);
	assert_int_equal(segment_end_offset(f->s), BASE);
	for (int i = 0; i < 20; i++)
		append(f, 1 + i % 4, 100 + i, 40, 256);
	check_find_all(f);

	/* max_bytes: at least one batch, then whole batches that fit. */
	assert_int_equal(segment_find(f->s, BASE, segment_visible(f->s), INT64_MAX,
				      f->w[0].len + f->w[1].len + f->w[2].len - 1, &sp), 0);
	assert_int_equal(sp.len, f->w[0].len + f->w[1].len);
	/* hw cuts the range at a batch boundary. */
	assert_int_equal(segment_find(f->s, BASE, segment_visible(f->s), f->w[3].base, SIZE_MAX,
				      &sp), 0);
	assert_int_equal(sp.len, f->w[3].pos);
	/* visible cuts it too; past the end nothing is found. */
	assert_int_equal(segment_find(f->s, BASE, f->w[2].pos, INT64_MAX, SIZE_MAX, &sp), 0);
	assert_int_equal(sp.len, f->w[2].pos);
	assert_int_equal(segment_find(f->s, segment_end_offset(f->s), segment_visible(f->s),
				      INT64_MAX, SIZE_MAX, &sp), 0);
	assert_int_equal(sp.len, 0);
}

static void test_segment_index_entries_at_interval(void **state)
{
	struct fx *f = *state;
	uint32_t rel[MAX_BATCHES], pos[MAX_BATCHES];
	size_t n, len;
	uint8_t *file;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 40; i++)
		append(f, 2, 100, (size_t)(20 + (i * 37) % 150), 500);
	n = expected_index(f, 500, rel, pos);
	assert_true(n > 5);
	assert_int_equal(segment_index_entries(f->s), n);

	file = slurp(f, ".index", &len);
	assert_int_equal(len, n * SEGMENT_INDEX_ENTRY_SIZE);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(wire_get32(file + i * 8), rel[i]);
		assert_int_equal(wire_get32(file + i * 8 + 4), pos[i]);
		/* The floor of an indexed offset is its own entry. */
		assert_int_equal(segment_lookup(f->s, BASE + rel[i]), pos[i]);
		assert_int_equal(segment_lookup(f->s, BASE + rel[i] - 1), i ? pos[i - 1] : 0);
	}
	assert_int_equal(segment_lookup(f->s, BASE), 0);
	free(file);
	check_find_all(f);
}

static void test_segment_time_index(void **state)
{
	struct fx *f = *state;
	static const int64_t ts[] = { 50, 40, 60, 60, 55, 70, 90, 80, 85, 95, 95, 100, 30, 120,
				      110, 130, 140, 135, 150, 149 };
	int64_t last_ts = -1;
	size_t n, len;
	uint8_t *file;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
		append(f, 1, ts[i], 60, 200);
	n = segment_timeindex_entries(f->s);
	assert_true(n >= 3);

	file = slurp(f, ".timeindex", &len);
	assert_int_equal(len, n * SEGMENT_TIMEINDEX_ENTRY_SIZE);
	for (size_t i = 0; i < n; i++) {
		int64_t t = (int64_t)wire_get64(file + i * 12);
		uint32_t rel = wire_get32(file + i * 12 + 8);
		int k = 0;

		/* Strictly increasing, naming the first batch with that max. */
		assert_true(t > last_ts);
		last_ts = t;
		while (f->w[k].ts != t)
			k++;
		assert_int_equal(rel, f->w[k].base - BASE);
		for (int j = 0; j < k; j++)
			assert_true(f->w[j].ts < t);
		assert_int_equal(segment_lookup_time(f->s, t), BASE + rel);
	}
	free(file);
	assert_int_equal(segment_lookup_time(f->s, 0), BASE);
	check_find_time_all(f, 0, 160);
}

static void test_segment_lazy_index_load(void **state)
{
	struct fx *f = *state;
	uint32_t rel[MAX_BATCHES], pos[MAX_BATCHES];
	uint8_t lie[8];
	int64_t max_ts;
	size_t n;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 30; i++)
		append(f, 3, 1000 + (i % 7) * 10 + i, 50, 300);
	n = expected_index(f, 300, rel, pos);
	segment_unref(f->s);

	/* Open only stats the log: a change to the index after open shows
	 * in the first lookup. */
	assert_int_equal(segment_open(f->dir, BASE, f->w[f->n - 1].base + 3, 300, &f->s), 0);
	assert_int_equal(segment_size(f->s), f->w[f->n - 1].pos + f->w[f->n - 1].len);
	assert_int_equal(segment_visible(f->s), segment_size(f->s));
	wire_put32(lie, rel[0]);
	wire_put32(lie + 4, pos[0] + 1); /* monotonic, in range, but not a batch start */
	spit(f, ".index", lie, sizeof(lie));
	assert_int_equal(segment_lookup(f->s, BASE + rel[0]), pos[0] + 1);
	/* ... and whatever it says is checked against the log. */
	check_find_all(f);
	segment_unref(f->s);

	/* With the real file back, the loaded index equals the written one. */
	f->s = NULL;
	{
		uint8_t buf[MAX_BATCHES * 8];

		for (size_t i = 0; i < n; i++) {
			wire_put32(buf + i * 8, rel[i]);
			wire_put32(buf + i * 8 + 4, pos[i]);
		}
		spit(f, ".index", buf, n * 8);
	}
	assert_int_equal(segment_open(f->dir, BASE, -1, 300, &f->s), 0);
	assert_int_equal(segment_index_entries(f->s), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(segment_lookup(f->s, BASE + rel[i]), pos[i]);
	assert_int_equal(segment_max_timestamp(f->s, &max_ts), 0);
	assert_int_equal(max_ts, 1000 + 6 * 10 + 27);
	check_find_all(f);
	check_find_time_all(f, 990, 1100);
}

static void test_segment_garbage_index_validated(void **state)
{
	struct fx *f = *state;
	uint32_t rel[MAX_BATCHES], pos[MAX_BATCHES];
	uint8_t junk[4096], *orig;
	size_t n, len;
	int64_t end;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 40; i++)
		append(f, 2, 500 + i, 40, 250);
	end = segment_end_offset(f->s);
	n = expected_index(f, 250, rel, pos);
	segment_unref(f->s);
	f->s = NULL;
	orig = slurp(f, ".index", &len);
	assert_int_equal(len, n * 8);

	/* (1) Pure garbage in both files: lookups stay correct. */
	srand(7);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rand();
	spit(f, ".index", junk, sizeof(junk));
	spit(f, ".timeindex", junk, sizeof(junk));
	assert_int_equal(segment_open(f->dir, BASE, end, 250, &f->s), 0);
	check_find_all(f);
	check_find_time_all(f, 490, 545);
	segment_unref(f->s);

	/* (2) Good entries, then one past the log and one going back: that
	 * tail is dropped and re-derived from the log. */
	{
		uint8_t *bad = malloc(len + 16);

		assert_non_null(bad);
		memcpy(bad, orig, len);
		wire_put32(bad + len, rel[n - 1] + 1);
		wire_put32(bad + len + 4, 0x7fffffff);
		memcpy(bad + len + 8, orig, 8);
		spit(f, ".index", bad, len + 16);
		free(bad);
	}
	assert_int_equal(segment_open(f->dir, BASE, end, 250, &f->s), 0);
	assert_int_equal(segment_index_entries(f->s), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(segment_lookup(f->s, BASE + rel[i]), pos[i]);
	check_find_all(f);
	segment_unref(f->s);

	/* (3) Entry n/2 goes backwards: it and the rest are re-derived. */
	{
		uint8_t *bad = malloc(len);

		assert_non_null(bad);
		memcpy(bad, orig, len);
		wire_put32(bad + (n / 2) * 8 + 4, pos[n / 2 - 1] - 1);
		spit(f, ".index", bad, len);
		free(bad);
	}
	assert_int_equal(segment_open(f->dir, BASE, end, 250, &f->s), 0);
	assert_int_equal(segment_index_entries(f->s), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(segment_lookup(f->s, BASE + rel[i]), pos[i]);
	check_find_all(f);
	segment_unref(f->s);

	/* (4) A missing index is rebuilt in memory by walking headers. */
	{
		char path[PATH_MAX];

		path_of(f, ".index", path);
		unlink(path);
		path_of(f, ".timeindex", path);
		unlink(path);
	}
	assert_int_equal(segment_open(f->dir, BASE, end, 250, &f->s), 0);
	assert_int_equal(segment_index_entries(f->s), n);
	check_find_all(f);
	check_find_time_all(f, 490, 545);
	free(orig);
}

/* fileio seam: fail the nth pwrite after writing half of it. */
static int pwrite_calls, pwrite_fail_at;

static ssize_t pwrite_short_then_enospc(int fd, const void *buf, size_t n, off_t pos)
{
	if (++pwrite_calls < pwrite_fail_at)
		return pwrite(fd, buf, n, pos);
	if (pwrite_calls == pwrite_fail_at && n > 1)
		return pwrite(fd, buf, n / 2, pos);
	errno = ENOSPC;
	return -1;
}

static void test_segment_failed_index_write_rolls_back(void **state)
{
	struct fx *f = *state;
	uint8_t *b, *idx_before;
	size_t len, idx_len, n_idx;
	uint64_t size;
	struct stat st;
	char path[PATH_MAX];

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 10; i++)
		append(f, 1, 10 + i, 100, 1);
	size = segment_size(f->s);
	n_idx = segment_index_entries(f->s);
	idx_before = slurp(f, ".index", &idx_len);

	/* Every batch gets an entry at interval 1: the 2nd pwrite is the
	 * index entry; it writes half and then runs out of space. */
	b = make_batch(1, 99, 100, &len);
	recbatch_set_base_offset(b, segment_end_offset(f->s));
	pwrite_calls = 0;
	pwrite_fail_at = 2;
	fileio.pwrite = pwrite_short_then_enospc;
	assert_int_equal(segment_append(f->s, b, len, 99, 1), -ENOSPC);
	fileio_reset();

	assert_int_equal(segment_size(f->s), size);
	assert_int_equal(segment_index_entries(f->s), n_idx);
	path_of(f, ".log", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	{
		size_t l2;
		uint8_t *idx_after = slurp(f, ".index", &l2);

		assert_int_equal(l2, idx_len);
		assert_memory_equal(idx_after, idx_before, idx_len);
		free(idx_after);
	}
	free(idx_before);

	/* The same append then succeeds in place. */
	assert_int_equal(segment_append(f->s, b, len, 99, 1), 0);
	assert_int_equal(segment_size(f->s), size + len);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_segment_append_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_index_entries_at_interval, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_time_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_lazy_index_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_garbage_index_validated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_failed_index_write_rolls_back, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
