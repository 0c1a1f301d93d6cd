/*
 * test_segment.c — one segment: append and lookup, the sparse offset and
 * time indexes, lazy loading and validation of damaged index files, a
 * failed index write leaving the segment unchanged, and group appends
 * (segment_append_v) matching one-by-one appends with one log write.
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
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "fileio.h"
#include "recbatch.h"
#include "segment.h"
#include "wire.h"

#define BASE 1000
#define MAX_BATCHES (SEGMENT_APPEND_MAX + 8)

#include "batchgen.h"
#include "writecount.h"

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
	char dir2[80]; /* a second segment of the same base, for comparisons */
	segment *s;
	segment *s2;
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
	snprintf(f->dir2, sizeof(f->dir2), "%s/v", f->dir);
	if (mkdir(f->dir2, 0755) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	segment_unref(f->s);
	segment_unref(f->s2);
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

static void path_in(const char *dir, const char *ext, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/%020d%s", dir, BASE, ext);
}

static void path_of(const struct fx *f, const char *ext, char *buf)
{
	path_in(f->dir, ext, buf);
}

static uint8_t *slurp_in(const char *dir, const char *ext, size_t *len)
{
	char path[PATH_MAX];
	struct stat st;
	uint8_t *buf;
	int fd;

	path_in(dir, ext, path);
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

static uint8_t *slurp(const struct fx *f, const char *ext, size_t *len)
{
	return slurp_in(f->dir, ext, len);
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

/* ---- group appends (segment_append_v) ---- */

/* A group of n batches of varied sizes and timestamps (ts0 and up, not in
 * order), offsets from `first` on, ready for segment_append_v. */
struct group {
	uint8_t *b[MAX_BATCHES];
	struct iovec iov[MAX_BATCHES];
	int64_t ts[MAX_BATCHES];
	int records[MAX_BATCHES];
	int n;
};

static void group_make(struct group *g, int n, int64_t first, int64_t ts0)
{
	assert_true(n <= MAX_BATCHES);
	g->n = n;
	for (int i = 0; i < n; i++) {
		size_t len;

		g->records[i] = 1 + i % 4;
		g->ts[i] = ts0 + (i * 37) % 50;
		g->b[i] = make_batch(g->records[i], g->ts[i], (size_t)(20 + (i * 53) % 120), &len);
		recbatch_set_base_offset(g->b[i], first);
		g->iov[i] = (struct iovec){ .iov_base = g->b[i], .iov_len = len };
		first += g->records[i];
	}
}

static void group_free(struct group *g)
{
	for (int i = 0; i < g->n; i++)
		free(g->b[i]);
	g->n = 0;
}

/* Records g's batches [from, from + k) in f->w as appended after the last
 * one recorded (what the segment should now hold). */
static void note_group(struct fx *f, const struct group *g, int from, int k)
{
	for (int i = from; i < from + k; i++) {
		struct written *w = &f->w[f->n];

		assert_true(f->n < MAX_BATCHES);
		w->pos = f->n ? f->w[f->n - 1].pos + f->w[f->n - 1].len : 0;
		w->len = g->iov[i].iov_len;
		w->base = (int64_t)wire_get64(g->b[i]);
		w->count = g->records[i];
		w->ts = g->ts[i];
		f->n++;
	}
}

static int max_writes_per_fd(void)
{
	int m = 0;

	for (int i = 0; i < n_counted_fds; i++)
		m = count_n[i] > m ? count_n[i] : m;
	return m;
}

static void check_same_file(const char *dir_a, const char *dir_b, const char *ext)
{
	size_t la, lb;
	uint8_t *a = slurp_in(dir_a, ext, &la), *b = slurp_in(dir_b, ext, &lb);

	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la);
	free(a);
	free(b);
}

/* a and b answer every lookup alike. */
static void check_same_lookups(segment *a, segment *b, int64_t ts_lo, int64_t ts_hi)
{
	int64_t end = segment_end_offset(a), ma, mb;

	assert_int_equal(segment_size(a), segment_size(b));
	assert_int_equal(segment_end_offset(b), end);
	assert_int_equal(segment_index_entries(a), segment_index_entries(b));
	assert_int_equal(segment_timeindex_entries(a), segment_timeindex_entries(b));
	assert_int_equal(segment_max_timestamp(a, &ma), 0);
	assert_int_equal(segment_max_timestamp(b, &mb), 0);
	assert_int_equal(ma, mb);
	for (int64_t off = BASE - 1; off <= end; off++) {
		segment_span sa, sb;

		assert_int_equal(segment_lookup(a, off), segment_lookup(b, off));
		assert_int_equal(segment_find(a, off, segment_visible(a), INT64_MAX, 1, &sa), 0);
		assert_int_equal(segment_find(b, off, segment_visible(b), INT64_MAX, 1, &sb), 0);
		assert_int_equal(sa.pos, sb.pos);
		assert_int_equal(sa.len, sb.len);
		assert_int_equal(sa.first_offset, sb.first_offset);
	}
	for (int64_t ts = ts_lo; ts <= ts_hi; ts++) {
		int64_t oa, ta, ob, tb;

		assert_int_equal(segment_lookup_time(a, ts), segment_lookup_time(b, ts));
		assert_int_equal(segment_find_time(a, ts, segment_visible(a), INT64_MAX, &oa, &ta),
				 0);
		assert_int_equal(segment_find_time(b, ts, segment_visible(b), INT64_MAX, &ob, &tb),
				 0);
		assert_int_equal(oa, ob);
		assert_int_equal(ta, tb);
	}
}

static void test_segment_append_v_matches_one_by_one(void **state)
{
	static const int groups[] = { 1, 9, 2, 17, 31 };
	static const char *const exts[] = { ".log", ".index", ".timeindex" };
	const uint32_t interval = 300;
	struct fx *f = *state;
	uint32_t rel[MAX_BATCHES], pos[MAX_BATCHES];
	struct group g;
	int at = 0, mid = 0;
	size_t n_idx, len;
	uint8_t *file;
	segment *t;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	assert_int_equal(segment_create(f->dir2, BASE, &f->s2), 0);
	group_make(&g, 60, BASE, 100);
	note_group(f, &g, 0, g.n);
	/* f->s, the reference: one batch at a time. */
	for (int i = 0; i < g.n; i++)
		assert_int_equal(segment_append(f->s, g.b[i], g.iov[i].iov_len, g.ts[i], interval),
				 0);
	segment_publish(f->s, segment_size(f->s));

	/* f->s2: in groups, each with one log write and at most one write
	 * per index file. */
	for (size_t k = 0; k < sizeof(groups) / sizeof(groups[0]); k++) {
		int n = groups[k];

		count_writes();
		assert_int_equal(segment_append_v(f->s2, g.iov + at, n, g.ts + at, interval), 0);
		fileio_reset();
		assert_int_equal(writes_to(segment_fd(f->s2)), 1);
		assert_int_equal(pwritev_calls, n > 1); /* one buffer: a pwrite */
		assert_true(max_writes_per_fd() <= 1);
		at += n;
		assert_int_equal(segment_size(f->s2), f->w[at - 1].pos + f->w[at - 1].len);
		assert_int_equal(segment_end_offset(f->s2), f->w[at - 1].base + f->w[at - 1].count);
	}
	assert_int_equal(at, g.n);
	segment_publish(f->s2, segment_size(f->s2));

	/* The interval put entries inside the groups, not only at their
	 * first batches. */
	n_idx = expected_index(f, interval, rel, pos);
	at = 0;
	for (size_t k = 0; k < sizeof(groups) / sizeof(groups[0]); k++) {
		for (int i = at + 1; i < at + groups[k]; i++)
			for (size_t j = 0; j < n_idx; j++)
				mid += pos[j] == f->w[i].pos;
		at += groups[k];
	}
	assert_true(mid >= 5);

	/* Byte for byte the same files ... */
	for (size_t e = 0; e < 3; e++)
		check_same_file(f->dir, f->dir2, exts[e]);
	file = slurp_in(f->dir2, ".index", &len);
	assert_int_equal(len, n_idx * SEGMENT_INDEX_ENTRY_SIZE);
	for (size_t j = 0; j < n_idx; j++) {
		assert_int_equal(wire_get32(file + j * 8), rel[j]);
		assert_int_equal(wire_get32(file + j * 8 + 4), pos[j]);
	}
	free(file);
	assert_true(segment_timeindex_entries(f->s2) >= 2);

	/* ... and the same answers, in memory and loaded from the files. */
	check_same_lookups(f->s, f->s2, 90, 160);
	check_find_all(f);
	check_find_time_all(f, 90, 160);
	t = f->s;
	f->s = f->s2;
	f->s2 = t;
	check_find_all(f);
	check_find_time_all(f, 90, 160);
	segment_unref(f->s);
	f->s = NULL;
	assert_int_equal(segment_open(f->dir2, BASE, segment_end_offset(f->s2), interval, &f->s), 0);
	check_same_lookups(f->s2, f->s, 90, 160);
	group_free(&g);
}

/* fileio seam: every write stops after at most 700 bytes (mid-batch), as
 * a kernel may write short; fileio_pwritev_all must continue each. */
static int short_writes;

static ssize_t pwrite_short(int fd, const void *buf, size_t n, off_t pos)
{
	short_writes++;
	return pwrite(fd, buf, n < 700 ? n : 700, pos);
}

static ssize_t pwritev_short(int fd, const struct iovec *iov, int cnt, off_t pos)
{
	struct iovec win[MAX_BATCHES];
	size_t left = 700;
	int m = 0;

	short_writes++;
	pwritev_calls++;
	for (; m < cnt && left > 0; m++) {
		win[m] = iov[m];
		if (win[m].iov_len > left)
			win[m].iov_len = left;
		left -= win[m].iov_len;
	}
	return pwritev(fd, win, m, pos);
}

static void test_segment_append_v_continues_short_writes(void **state)
{
	static const char *const exts[] = { ".log", ".index", ".timeindex" };
	struct fx *f = *state;
	struct group g;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	assert_int_equal(segment_create(f->dir2, BASE, &f->s2), 0);
	group_make(&g, 40, BASE, 100);
	note_group(f, &g, 0, g.n);
	for (int i = 0; i < g.n; i++)
		assert_int_equal(segment_append(f->s, g.b[i], g.iov[i].iov_len, g.ts[i], 200), 0);
	short_writes = pwritev_calls = 0;
	fileio.pwrite = pwrite_short;
	fileio.pwritev = pwritev_short;
	assert_int_equal(segment_append_v(f->s2, g.iov, g.n, g.ts, 200), 0);
	fileio_reset();
	assert_true(pwritev_calls > 5);
	for (size_t e = 0; e < 3; e++)
		check_same_file(f->dir, f->dir2, exts[e]);
	segment_publish(f->s, segment_size(f->s));
	segment_publish(f->s2, segment_size(f->s2));
	check_same_lookups(f->s, f->s2, 90, 160);
	group_free(&g);
}

/* fileio seam: the fail_at-th write (pwrite or pwritev) writes half its
 * bytes, every later one fails with ENOSPC. */
static int write_calls, fail_at;

static ssize_t pwrite_half(int fd, const void *buf, size_t n, off_t pos)
{
	if (++write_calls < fail_at)
		return pwrite(fd, buf, n, pos);
	if (write_calls == fail_at && n > 1)
		return pwrite(fd, buf, n / 2, pos);
	errno = ENOSPC;
	return -1;
}

static ssize_t pwritev_half(int fd, const struct iovec *iov, int cnt, off_t pos)
{
	pwritev_calls++;
	if (++write_calls < fail_at)
		return pwritev(fd, iov, cnt, pos);
	if (write_calls > fail_at) {
		errno = ENOSPC;
		return -1;
	}
	return pwritev_first_half(fd, iov, cnt, pos);
}

/* Everything a failed append must leave as it was. */
struct seg_state {
	uint64_t size;
	int64_t end, max_ts;
	size_t n_idx, n_tidx;
	uint8_t *file[3];
	size_t len[3];
};

static const char *const seg_exts[] = { ".log", ".index", ".timeindex" };

static void state_take(struct fx *f, struct seg_state *st)
{
	st->size = segment_size(f->s);
	st->end = segment_end_offset(f->s);
	st->n_idx = segment_index_entries(f->s);
	st->n_tidx = segment_timeindex_entries(f->s);
	assert_int_equal(segment_max_timestamp(f->s, &st->max_ts), 0);
	for (int e = 0; e < 3; e++)
		st->file[e] = slurp(f, seg_exts[e], &st->len[e]);
}

static void state_check(struct fx *f, const struct seg_state *st)
{
	int64_t max_ts;

	assert_int_equal(segment_size(f->s), st->size);
	assert_int_equal(segment_end_offset(f->s), st->end);
	assert_int_equal(segment_index_entries(f->s), st->n_idx);
	assert_int_equal(segment_timeindex_entries(f->s), st->n_tidx);
	assert_int_equal(segment_max_timestamp(f->s, &max_ts), 0);
	assert_int_equal(max_ts, st->max_ts);
	for (int e = 0; e < 3; e++) {
		size_t len;
		uint8_t *now = slurp(f, seg_exts[e], &len);

		assert_int_equal(len, st->len[e]);
		assert_memory_equal(now, st->file[e], len);
		free(now);
	}
}

static void state_free(struct seg_state *st)
{
	for (int e = 0; e < 3; e++)
		free(st->file[e]);
}

static void test_segment_append_v_failed_write_leaves_nothing(void **state)
{
	struct fx *f = *state;
	struct seg_state before;
	struct group g;
	segment_span sp;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 6; i++)
		append(f, 1, 10 + i, 100, 150);
	state_take(f, &before);
	/* Timestamps above the ones before: the group adds time entries. */
	group_make(&g, 5, segment_end_offset(f->s), 50);

	/* 1: the pwritev writes half the group, then ENOSPC; 2: the log is
	 * written, half the .index entries; 3: the .timeindex write fails. */
	for (int at = 1; at <= 3; at++) {
		write_calls = pwritev_calls = 0;
		fail_at = at;
		fileio.pwrite = pwrite_half;
		fileio.pwritev = pwritev_half;
		assert_int_equal(segment_append_v(f->s, g.iov, g.n, g.ts, 150), -ENOSPC);
		fileio_reset();
		assert_true(write_calls >= at); /* the failing write did happen */
		assert_true(pwritev_calls >= 1);
		state_check(f, &before);
	}

	/* Space is back: the group lands at the old end. */
	assert_int_equal(segment_append_v(f->s, g.iov, g.n, g.ts, 150), 0);
	note_group(f, &g, 0, g.n);
	assert_true(segment_index_entries(f->s) > before.n_idx);
	assert_true(segment_timeindex_entries(f->s) > before.n_tidx);
	segment_publish(f->s, segment_size(f->s));
	assert_int_equal(segment_find(f->s, before.end, segment_visible(f->s), INT64_MAX, 1, &sp),
			 0);
	assert_int_equal(sp.pos, before.size);
	assert_int_equal(sp.first_offset, before.end);
	assert_int_equal(segment_size(f->s), f->w[f->n - 1].pos + f->w[f->n - 1].len);
	check_find_all(f);
	check_find_time_all(f, 0, 110);
	state_free(&before);
	group_free(&g);
}

static void test_segment_append_v_checks_the_group(void **state)
{
	struct fx *f = *state;
	struct seg_state before;
	struct group g;
	int64_t off3;
	size_t len;

	assert_int_equal(segment_create(f->dir, BASE, &f->s), 0);
	for (int i = 0; i < 3; i++)
		append(f, 2, 5, 50, 4096);
	state_take(f, &before);
	group_make(&g, SEGMENT_APPEND_MAX + 1, segment_end_offset(f->s), 10);

	assert_int_equal(segment_append_v(f->s, g.iov, 0, g.ts, 4096), -EINVAL);
	assert_int_equal(segment_append_v(f->s, g.iov, SEGMENT_APPEND_MAX + 1, g.ts, 4096), -EINVAL);
	/* A gap between two batches' offsets. */
	off3 = (int64_t)wire_get64(g.b[3]);
	recbatch_set_base_offset(g.b[3], off3 + 1);
	assert_int_equal(segment_append_v(f->s, g.iov, 5, g.ts, 4096), -EINVAL);
	recbatch_set_base_offset(g.b[3], off3);
	/* A batch shorter than a header. */
	len = g.iov[2].iov_len;
	g.iov[2].iov_len = RECBATCH_HEADER_SIZE - 1;
	assert_int_equal(segment_append_v(f->s, g.iov, 5, g.ts, 4096), -EINVAL);
	g.iov[2].iov_len = len;
	/* A negative lastOffsetDelta. */
	wire_put32(g.b[4] + RECBATCH_OFF_LAST_DELTA, 0xffffffffu);
	assert_int_equal(segment_append_v(f->s, g.iov, 5, g.ts, 4096), -EINVAL);
	wire_put32(g.b[4] + RECBATCH_OFF_LAST_DELTA, (uint32_t)(g.records[4] - 1));
	state_check(f, &before);

	/* The largest group: one pwritev. */
	count_writes();
	assert_int_equal(segment_append_v(f->s, g.iov, SEGMENT_APPEND_MAX, g.ts, 4096), 0);
	fileio_reset();
	assert_int_equal(writes_to(segment_fd(f->s)), 1);
	assert_int_equal(pwritev_calls, 1);
	note_group(f, &g, 0, SEGMENT_APPEND_MAX);
	segment_publish(f->s, segment_size(f->s));
	assert_int_equal(segment_size(f->s), f->w[f->n - 1].pos + f->w[f->n - 1].len);
	check_find_all(f);
	state_free(&before);
	group_free(&g);
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
		cmocka_unit_test_setup_teardown(test_segment_append_v_matches_one_by_one, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_segment_append_v_continues_short_writes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_segment_append_v_failed_write_leaves_nothing,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_append_v_checks_the_group, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
