/*
 * test_partlog.c — a partition log: offsets, reads, rolling, retention,
 * synced visibility, reopen and crash recovery from damaged tails, the
 * recovery checkpoint, disk-full through the fileio seam, time lookups,
 * readers running beside an appender, and multi-batch appends
 * (partlog_append_v) matching single appends with one write per segment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"
#include "fileio.h"
#include "partlog.h"
#include "recbatch.h"
#include "wire.h"

#define MAX_BATCHES 4096

#include "batchgen.h"
#include "writecount.h"

/* ---- fixture ---- */

/* One appended batch, as the test remembers it. */
struct written {
	int64_t base;
	int count;
	size_t len;
	int64_t ts;
	int64_t seg;  /* base offset of the segment it went to */
	uint64_t pos; /* position in that segment's .log */
};

struct fx {
	char dir[64];
	char dir2[64]; /* a second log beside it, for comparisons */
	partlog_conf conf;
	partlog *pl;
	partlog *pl2;
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
	char base[] = "/tmp/sluice-plog-XXXXXX";

	if (!f || !mkdtemp(base))
		return -1;
	/* A subdirectory: partlog_open creates it. */
	snprintf(f->dir, sizeof(f->dir), "%s/t-0", base);
	snprintf(f->dir2, sizeof(f->dir2), "%s/t-1", base);
	f->conf = (partlog_conf){
		.segment_bytes = 1 << 20,
		.segment_ms = -1,
		.retention_ms = -1,
		.retention_bytes = -1,
		.index_interval_bytes = 256,
		.synced = false,
	};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char base[64];

	partlog_close(f->pl);
	partlog_close(f->pl2);
	fileio_reset();
	snprintf(base, sizeof(base), "%.*s", (int)(strrchr(f->dir, '/') - f->dir), f->dir);
	nftw(base, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void open_log(struct fx *f, uint64_t *truncated)
{
	uint64_t t = 12345;

	assert_int_equal(partlog_open(f->dir, &f->conf, &f->pl, &t), 0);
	assert_int_not_equal(t, 12345);
	if (truncated)
		*truncated = t;
}

static void reopen(struct fx *f, uint64_t *truncated)
{
	partlog_close(f->pl);
	f->pl = NULL;
	open_log(f, truncated);
}

/* Which segment the next append of len bytes goes to, as the contract says. */
static int64_t seg_of_next(const struct fx *f, size_t len, int64_t now)
{
	const struct written *last = f->n ? &f->w[f->n - 1] : NULL;

	(void)now;
	if (!last)
		return 0;
	if (last->pos + last->len + len > f->conf.segment_bytes)
		return last->base + last->count;
	return last->seg;
}

static int64_t append_at(struct fx *f, int records, int64_t ts, size_t vlen, int64_t now)
{
	size_t len;
	uint8_t *b = make_batch(records, ts, vlen, &len);
	int64_t end = partlog_end_offset(f->pl), off;
	struct written *w = &f->w[f->n];

	w->seg = seg_of_next(f, len, now);
	w->pos = f->n && w->seg == f->w[f->n - 1].seg ? f->w[f->n - 1].pos + f->w[f->n - 1].len : 0;
	assert_int_equal(partlog_append(f->pl, b, len, ts, now, &off), 0);
	assert_int_equal(off, end);
	assert_int_equal((int64_t)wire_get64(b), off); /* baseOffset rewritten */
	assert_int_equal(partlog_end_offset(f->pl), end + records);
	w->base = off;
	w->count = records;
	w->len = len;
	w->ts = ts;
	f->n++;
	free(b);
	return off;
}

static int64_t append(struct fx *f, int records, int64_t ts, size_t vlen)
{
	return append_at(f, records, ts, vlen, 1000);
}

static void seg_path(const struct fx *f, int64_t base, const char *ext, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/%020" PRId64 "%s", f->dir, base, ext);
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static bool seg_exists(const struct fx *f, int64_t base)
{
	char p[PATH_MAX];

	seg_path(f, base, ".log", p);
	return exists(p);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static int count_logs(const struct fx *f)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strlen(de->d_name) == 24 && !strcmp(de->d_name + 20, ".log");
	closedir(d);
	return n;
}

/* Flips one byte of a file at pos. */
static void flip(const char *path, uint64_t pos)
{
	uint8_t c;
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)pos), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)pos), 1);
	close(fd);
}

/* Flips a byte inside batch i's records (covered by the CRC, not a header
 * field any reader looks at). */
static void corrupt_batch(const struct fx *f, int i)
{
	char p[PATH_MAX];

	seg_path(f, f->w[i].seg, ".log", p);
	flip(p, f->w[i].pos + f->w[i].len - 3);
}

/* Reads at `offset` and checks the range: whole valid batches, starting at
 * the one containing offset, consecutive offsets, within max_bytes unless
 * a single batch.  Returns the number of batches. */
static int check_read(struct fx *f, int64_t offset, size_t max_bytes)
{
	partlog_range r;
	uint8_t *buf;
	size_t at = 0;
	int64_t next;
	int n = 0, i = 0;

	assert_int_equal(partlog_read(f->pl, offset, max_bytes, &r), 0);
	assert_true(r.len > 0);
	while (f->w[i].base + f->w[i].count <= offset)
		i++;
	assert_int_equal(r.first_offset, f->w[i].base);
	assert_int_equal(r.pos, f->w[i].pos);
	buf = malloc(r.len);
	assert_non_null(buf);
	assert_int_equal(pread(r.fd, buf, r.len, r.pos), (ssize_t)r.len);
	next = r.first_offset;
	while (at < r.len) {
		recbatch_hdr h;
		size_t size = recbatch_size(buf + at, r.len - at);

		assert_true(size >= RECBATCH_HEADER_SIZE && size <= r.len - at);
		assert_int_equal(recbatch_parse_hdr(buf + at, size, &h), RECBATCH_OK);
		assert_int_equal(recbatch_check_crc(buf + at, size), RECBATCH_OK);
		assert_int_equal(h.base_offset, next);
		assert_int_equal(size, f->w[i + n].len);
		assert_int_equal(f->w[i + n].seg, f->w[i].seg); /* one segment */
		next = h.base_offset + h.last_offset_delta + 1;
		at += size;
		n++;
	}
	assert_true(next <= partlog_hw(f->pl));
	assert_true(n == 1 || r.len <= max_bytes);
	free(buf);
	partlog_range_release(&r);
	assert_null(r.seg);
	return n;
}

static void check_read_every_offset(struct fx *f, int from_batch)
{
	for (int i = from_batch; i < f->n; i++)
		for (int k = 0; k < f->w[i].count; k++)
			check_read(f, f->w[i].base + k, 1);
}

static void sync_ckpt(struct fx *f)
{
	int64_t end;

	assert_int_equal(partlog_sync(f->pl, &end), 0);
	assert_int_equal(end, partlog_end_offset(f->pl));
	assert_int_equal(partlog_checkpoint(f->pl), 0);
}

/* ---- offsets and reads ---- */

/* Bytes of a one-record batch with a 100-byte value: tests size their
 * segments in such batches. */
static size_t one_batch_len(void)
{
	size_t len;

	free(make_batch(1, 0, 100, &len));
	return len;
}

static void test_partlog_append_assigns_consecutive_offsets(void **state)
{
	struct fx *f = *state;
	int64_t expect = 0;

	open_log(f, NULL);
	assert_int_equal(partlog_start_offset(f->pl), 0);
	assert_int_equal(partlog_end_offset(f->pl), 0);
	assert_int_equal(partlog_hw(f->pl), 0);
	for (int i = 0; i < 500; i++) {
		int records = 1 + (i * 7) % 13;

		assert_int_equal(append(f, records, 1000 + i, (size_t)(i % 50)), expect);
		expect += records;
		assert_int_equal(partlog_hw(f->pl), expect);
	}
	assert_int_equal(partlog_end_offset(f->pl), expect);
	assert_true(partlog_dirty(f->pl));
	check_read_every_offset(f, 0);
}

static void test_partlog_read_bounds(void **state)
{
	struct fx *f = *state;
	partlog_range r;
	size_t three;
	int64_t hw;

	open_log(f, NULL);
	/* Empty log: offset 0 is the hw, 1 is past it. */
	assert_int_equal(partlog_read(f->pl, 0, 1000, &r), 0);
	assert_int_equal(r.len, 0);
	partlog_range_release(&r);
	assert_int_equal(partlog_read(f->pl, 1, 1000, &r), PARTLOG_E_OFFSET_OUT_OF_RANGE);

	for (int i = 0; i < 20; i++)
		append(f, 3, 5000, 100);
	hw = partlog_hw(f->pl);
	three = f->w[0].len + f->w[1].len + f->w[2].len;

	assert_int_equal(check_read(f, 0, three), 3);
	assert_int_equal(check_read(f, 0, three - 1), 2);
	assert_int_equal(check_read(f, 1, 1), 1);          /* at least one batch */
	assert_int_equal(check_read(f, 0, SIZE_MAX), 20);
	assert_int_equal(check_read(f, hw - 1, SIZE_MAX), 1);

	assert_int_equal(partlog_read(f->pl, hw, 1000, &r), 0);
	assert_int_equal(r.len, 0);
	partlog_range_release(&r);
	assert_int_equal(partlog_read(f->pl, hw + 1, 1000, &r), PARTLOG_E_OFFSET_OUT_OF_RANGE);
	assert_int_equal(partlog_read(f->pl, -1, 1000, &r), PARTLOG_E_OFFSET_OUT_OF_RANGE);
}

static void test_partlog_batch_too_large(void **state)
{
	struct fx *f = *state;
	size_t len;
	uint8_t *b = make_batch(1, 0, 2000, &len);
	int64_t off = -7;

	f->conf.segment_bytes = 1000;
	open_log(f, NULL);
	assert_int_equal(partlog_append(f->pl, b, len, 0, 0, &off), PARTLOG_E_TOO_LARGE);
	assert_int_equal(off, -7);
	assert_int_equal(partlog_end_offset(f->pl), 0);
	free(b);
}

/* ---- rolling ---- */

static void test_partlog_roll_by_size(void **state)
{
	struct fx *f = *state;
	size_t len;
	uint8_t *b = make_batch(2, 0, 200, &len);

	free(b);
	f->conf.segment_bytes = 3 * len + 10; /* three batches per segment */
	open_log(f, NULL);
	for (int i = 0; i < 10; i++)
		append(f, 2, 100 + i, 200);
	assert_int_equal(count_logs(f), 4);
	for (int64_t base = 0; base < 20; base += 6) {
		char p[PATH_MAX];

		seg_path(f, base, ".log", p);
		assert_true(exists(p));
		assert_int_equal(file_size(p), base < 18 ? 3 * len : len);
		seg_path(f, base, ".index", p);
		assert_true(exists(p));
		seg_path(f, base, ".timeindex", p);
		assert_true(exists(p));
	}
	assert_true(seg_exists(f, 18));
	assert_int_equal(partlog_size_bytes(f->pl), 10 * len);
	check_read_every_offset(f, 0);
	/* A range stays inside one segment. */
	assert_int_equal(check_read(f, 0, SIZE_MAX), 3);
	assert_int_equal(check_read(f, 17, SIZE_MAX), 1);
}

static void test_partlog_roll_by_time(void **state)
{
	struct fx *f = *state;

	f->conf.segment_ms = 100;
	open_log(f, NULL);
	append_at(f, 1, 0, 10, 1000);
	append_at(f, 1, 0, 10, 1050);
	append_at(f, 1, 0, 10, 1100); /* 100 ms old: not older than segment_ms */
	assert_int_equal(count_logs(f), 1);
	{
		size_t len;
		uint8_t *b = make_batch(1, 0, 10, &len);
		int64_t off;

		assert_int_equal(partlog_append(f->pl, b, len, 0, 1101, &off), 0);
		assert_int_equal(off, 3);
		free(b);
	}
	assert_int_equal(count_logs(f), 2);
	assert_true(seg_exists(f, 3));
	/* The new segment's clock starts at its first append. */
	{
		size_t len;
		uint8_t *b = make_batch(1, 0, 10, &len);
		int64_t off;

		assert_int_equal(partlog_append(f->pl, b, len, 0, 1201, &off), 0);
		assert_int_equal(count_logs(f), 2);
		assert_int_equal(partlog_append(f->pl, b, len, 0, 1202, &off), 0);
		assert_int_equal(off, 5);
		assert_int_equal(count_logs(f), 3);
		assert_true(seg_exists(f, 5));
		free(b);
	}
}

/* ---- retention ---- */

static void test_partlog_retention_by_bytes(void **state)
{
	struct fx *f = *state;
	partlog_range r;
	size_t len = one_batch_len();
	int deleted = -1;

	f->conf.segment_bytes = 2 * len; /* two batches per segment */
	open_log(f, NULL);
	for (int i = 0; i < 11; i++)
		append(f, 1, 1000, 100);
	assert_int_equal(count_logs(f), 6);

	/* No limit: nothing goes. */
	assert_int_equal(partlog_retention(f->pl, 1000000, &deleted), 0);
	assert_int_equal(deleted, 0);

	/* Keep at least 5 batches' worth: the rest must stay >= the limit. */
	f->conf.retention_bytes = (int64_t)(5 * len);
	partlog_set_conf(f->pl, &f->conf);
	assert_int_equal(partlog_retention(f->pl, 1000, &deleted), 0);
	assert_int_equal(deleted, 3);
	assert_int_equal(partlog_start_offset(f->pl), 6);
	assert_int_equal(partlog_size_bytes(f->pl), 5 * len);
	assert_false(seg_exists(f, 0));
	assert_false(seg_exists(f, 2));
	assert_false(seg_exists(f, 4));
	assert_true(seg_exists(f, 6));
	assert_int_equal(partlog_read(f->pl, 5, 100, &r), PARTLOG_E_OFFSET_OUT_OF_RANGE);
	check_read_every_offset(f, 6);

	/* Limit 0: everything but the active segment. */
	f->conf.retention_bytes = 0;
	partlog_set_conf(f->pl, &f->conf);
	assert_int_equal(partlog_retention(f->pl, 1000, &deleted), 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(partlog_start_offset(f->pl), 10);
	assert_int_equal(count_logs(f), 1);
	assert_int_equal(partlog_end_offset(f->pl), 11);
	check_read_every_offset(f, 10);

	/* The start survives a reopen. */
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, NULL);
	assert_int_equal(partlog_start_offset(f->pl), 10);
	assert_int_equal(partlog_end_offset(f->pl), 11);
	assert_int_equal(append(f, 1, 1000, 100), 11);
}

static void test_partlog_retention_by_time(void **state)
{
	struct fx *f = *state;
	size_t len = one_batch_len();
	int deleted = -1;

	f->conf.segment_bytes = 2 * len;
	open_log(f, NULL);
	/* Segment k holds timestamps 1000k + {0, 500}. */
	for (int i = 0; i < 10; i++)
		append(f, 1, 1000 * (i / 2) + 500 * (i % 2), 100);
	assert_int_equal(count_logs(f), 5);

	f->conf.retention_ms = 1000;
	partlog_set_conf(f->pl, &f->conf);
	/* now 2600: segments with max ts < 1600 go (k = 0: 500, k = 1: 1500). */
	assert_int_equal(partlog_retention(f->pl, 2600, &deleted), 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(partlog_start_offset(f->pl), 4);
	assert_false(seg_exists(f, 0));
	assert_false(seg_exists(f, 2));
	assert_true(seg_exists(f, 4));

	/* After a reopen the old segments' ages come from their time indexes. */
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, NULL);
	assert_int_equal(partlog_retention(f->pl, 3600, &deleted), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(partlog_start_offset(f->pl), 6);

	/* Far future: all but the active segment. */
	assert_int_equal(partlog_retention(f->pl, 1000000, &deleted), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(count_logs(f), 1);
	assert_true(seg_exists(f, 8));
	check_read_every_offset(f, 8);
}

static void test_partlog_retention_keeps_range_fd_valid(void **state)
{
	struct fx *f = *state;
	partlog_range r;
	size_t len;
	uint8_t *b = make_batch(1, 0, 100, &len), *buf;
	int deleted;

	free(b);
	f->conf.segment_bytes = 2 * len;
	f->conf.retention_bytes = 0;
	open_log(f, NULL);
	for (int i = 0; i < 6; i++)
		append(f, 1, 0, 100);
	assert_int_equal(partlog_read(f->pl, 0, SIZE_MAX, &r), 0);
	assert_int_equal(r.len, 2 * len);
	assert_int_equal(partlog_retention(f->pl, 0, &deleted), 0);
	assert_int_equal(deleted, 2);
	assert_false(seg_exists(f, 0));
	buf = malloc(r.len);
	assert_non_null(buf);
	assert_int_equal(pread(r.fd, buf, r.len, r.pos), (ssize_t)r.len);
	assert_int_equal(recbatch_check_crc(buf, len), RECBATCH_OK);
	free(buf);
	partlog_range_release(&r);
}

/* ---- synced mode ---- */

static void test_partlog_synced_mode_hw_moves_on_sync(void **state)
{
	struct fx *f = *state;
	partlog_range r;
	size_t len;
	uint8_t *b = make_batch(2, 0, 100, &len);
	int64_t synced;

	free(b);
	f->conf.synced = true;
	f->conf.segment_bytes = 2 * len;
	open_log(f, NULL);
	for (int i = 0; i < 5; i++)
		append(f, 2, 0, 100); /* rolls twice */
	assert_int_equal(partlog_end_offset(f->pl), 10);
	assert_int_equal(partlog_hw(f->pl), 0);
	assert_int_equal(partlog_read(f->pl, 0, SIZE_MAX, &r), 0);
	assert_int_equal(r.len, 0);
	partlog_range_release(&r);
	assert_int_equal(partlog_read(f->pl, 1, SIZE_MAX, &r), PARTLOG_E_OFFSET_OUT_OF_RANGE);
	assert_true(partlog_dirty(f->pl));

	assert_int_equal(partlog_durable_end(f->pl), 0);
	assert_int_equal(partlog_sync(f->pl, &synced), 0);
	assert_int_equal(synced, 10);
	assert_int_equal(partlog_hw(f->pl), 10);
	assert_int_equal(partlog_durable_end(f->pl), 10);
	assert_false(partlog_dirty(f->pl));
	check_read_every_offset(f, 0);

	append(f, 1, 0, 100);
	assert_int_equal(partlog_hw(f->pl), 10);
	assert_int_equal(partlog_durable_end(f->pl), 10); /* appended, not synced */
	assert_int_equal(partlog_read(f->pl, 10, SIZE_MAX, &r), 0);
	assert_int_equal(r.len, 0);
	partlog_range_release(&r);
	assert_int_equal(partlog_sync(f->pl, &synced), 0);
	assert_int_equal(partlog_hw(f->pl), 11);
	check_read_every_offset(f, 0);
}

static int fsync_calls;

static int fdatasync_eio(int fd)
{
	(void)fd;
	fsync_calls++;
	errno = EIO;
	return -1;
}

static void test_partlog_failed_sync_keeps_hw(void **state)
{
	struct fx *f = *state;
	int64_t synced = -5, off;
	uint8_t *b;
	size_t len;

	f->conf.synced = true;
	open_log(f, NULL);
	append(f, 3, 0, 10);
	fileio.fdatasync = fdatasync_eio;
	assert_int_equal(partlog_sync(f->pl, &synced), -EIO);
	assert_true(fsync_calls > 0);
	assert_int_equal(synced, -5);
	assert_int_equal(partlog_hw(f->pl), 0);
	assert_true(partlog_dirty(f->pl));
	/* for good: the kernel may have dropped the pages it failed to
	 * write, and a later fdatasync would not say so */
	fileio_reset();
	fsync_calls = 0;
	assert_int_equal(partlog_sync(f->pl, &synced), -EIO);
	assert_int_equal(partlog_sync_data(f->pl, &synced), -EIO);
	assert_int_equal(synced, -5);
	assert_int_equal(partlog_hw(f->pl), 0);
	b = make_batch(1, 0, 10, &len);
	assert_int_equal(partlog_append(f->pl, b, len, 0, 1000, &off), -EIO);
	free(b);
	assert_int_equal(partlog_end_offset(f->pl), 3);
}

/* ---- reopen and recovery ---- */

static void test_partlog_reopen_after_clean_close(void **state)
{
	struct fx *f = *state;
	uint64_t truncated, size;
	int64_t off, ts;
	size_t len;
	uint8_t *b = make_batch(1, 0, 150, &len);

	free(b);
	f->conf.segment_bytes = 4 * len;
	open_log(f, NULL);
	for (int i = 0; i < 30; i++)
		append(f, 1 + i % 3, 10 * i, 150 - (size_t)(i % 3) * 50);
	size = partlog_size_bytes(f->pl);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, &truncated); /* close writes the final checkpoint */
	assert_int_equal(truncated, 0);
	assert_int_equal(partlog_end_offset(f->pl), f->w[29].base + f->w[29].count);
	assert_int_equal(partlog_hw(f->pl), partlog_end_offset(f->pl));
	assert_int_equal(partlog_start_offset(f->pl), 0);
	assert_int_equal(partlog_size_bytes(f->pl), size);
	check_read_every_offset(f, 0);
	assert_int_equal(partlog_offset_for_time(f->pl, 155, &off, &ts), 0);
	assert_int_equal(off, f->w[16].base);
	assert_int_equal(ts, 160);
	off = append(f, 2, 300, 10);
	assert_int_equal(off, f->w[29].base + f->w[29].count);
	check_read_every_offset(f, 25);
}

/* Common start of the crash tests: `synced_n` batches synced and
 * checkpointed, then more written but never synced, then a "crash" (close
 * without sync writes no checkpoint). */
static void crash_setup(struct fx *f, int synced_n, int total)
{
	open_log(f, NULL);
	for (int i = 0; i < total; i++) {
		append(f, 1 + i % 4, 100 + i, 60 + (size_t)(i * 13) % 90);
		if (i == synced_n - 1)
			sync_ckpt(f);
	}
	partlog_close(f->pl);
	f->pl = NULL;
}

/* After recovery: batches [0, good) are intact and readable, the end is
 * right after them, and a new append continues there. */
static void check_recovered(struct fx *f, int good)
{
	int64_t end = good ? f->w[good - 1].base + f->w[good - 1].count : 0;

	assert_int_equal(partlog_end_offset(f->pl), end);
	assert_int_equal(partlog_hw(f->pl), end);
	f->n = good;
	check_read_every_offset(f, 0);
	assert_int_equal(append(f, 2, 999, 20), end);
	check_read_every_offset(f, good > 2 ? good - 2 : 0);
	/* And the recovered log reopens cleanly. */
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	{
		uint64_t t;

		reopen(f, &t);
		assert_int_equal(t, 0);
	}
	assert_int_equal(partlog_end_offset(f->pl), end + 2);
	check_read_every_offset(f, 0);
}

static uint64_t batches_bytes(const struct fx *f, int from, int to)
{
	uint64_t n = 0;

	for (int i = from; i < to; i++)
		n += f->w[i].len;
	return n;
}

static void test_partlog_recover_truncated_mid_batch(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;

	crash_setup(f, 10, 20);
	seg_path(f, 0, ".log", p);
	assert_int_equal(truncate(p, (off_t)(file_size(p) - 17)), 0);
	open_log(f, &truncated);
	assert_int_equal(truncated, f->w[19].len - 17);
	check_recovered(f, 19);
}

static void test_partlog_recover_zero_filled_tail(void **state)
{
	struct fx *f = *state;
	static const uint8_t zeros[4096];
	char p[PATH_MAX];
	uint64_t truncated;
	int fd;

	crash_setup(f, 10, 20);
	seg_path(f, 0, ".log", p);
	fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
	close(fd);
	open_log(f, &truncated);
	assert_int_equal(truncated, 0); /* zeros are an end (preallocation), never data */
	assert_int_equal(file_size(p), batches_bytes(f, 0, 20));
	check_recovered(f, 20);
}

/* 12 one-record batches in 4 segments of 3 (bases 0, 3, 6, 9), the
 * checkpoint inside segment 3 (after batch 3), closed without a sync of
 * the rest: what a crash leaves for recovery to scan from there. */
static void four_segments_closed(struct fx *f)
{
	size_t len = one_batch_len();

	f->conf.segment_bytes = 3 * len;
	open_log(f, NULL);
	for (int i = 0; i < 12; i++) {
		append(f, 1, 100 + i, 100);
		if (i == 3)
			sync_ckpt(f);
	}
	partlog_close(f->pl);
	f->pl = NULL;
	assert_int_equal(count_logs(f), 4);
}

/* Writes n zero bytes at the end of a file (what preallocation leaves). */
static void append_zeros(const char *path, size_t n)
{
	static const uint8_t zeros[4096];
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0 && n <= sizeof(zeros));
	assert_int_equal(write(fd, zeros, n), (ssize_t)n);
	close(fd);
}

/* A crash can leave zeros at the end of a rolled segment whose trim was
 * not synced yet: recovery takes them for that segment's end and keeps the
 * later segments (a damaged batch would delete them). */
static void test_partlog_recover_zeros_before_later_segments(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;

	four_segments_closed(f);
	seg_path(f, 3, ".log", p);
	append_zeros(p, 4096);
	seg_path(f, 6, ".log", p);
	append_zeros(p, 7); /* shorter than a batch's length field */
	open_log(f, &truncated);
	assert_int_equal(truncated, 0);
	assert_int_equal(count_logs(f), 4);
	assert_int_equal(file_size(p), batches_bytes(f, 6, 9));
	check_recovered(f, 12);
}

/* ---- preallocation (partlog_fill_ahead) ---- */

static void test_partlog_fill_ahead_synced_only(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated, size;
	int refilled = 0;

	open_log(f, NULL); /* page-cache mode: nothing to gain, nothing written */
	append(f, 2, 0, 100);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	seg_path(f, 0, ".log", p);
	assert_int_equal(file_size(p), f->w[0].len);
	partlog_close(f->pl);
	f->pl = NULL;

	f->conf.synced = true;
	open_log(f, NULL);
	assert_int_equal(partlog_fill_ahead(f->pl, 0), 0); /* 0: off */
	assert_int_equal(file_size(p), f->w[0].len);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	size = f->w[0].len;
	assert_int_equal(file_size(p), size + 64 * 1024);
	/* More than half is left: nothing more is written. */
	append(f, 3, 0, 100);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	assert_int_equal(file_size(p), size + 64 * 1024);
	/* The appends write over the zeros; a look every 20 appends (~4.6
	 * KiB, a sync's worth) writes nothing while more than half is left,
	 * then the next 64 KiB past the end. */
	for (int i = 0; i < 200; i++) {
		append(f, 1, i, 150);
		if (i % 20 == 19) {
			uint64_t before = file_size(p);

			size = partlog_size_bytes(f->pl);
			assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
			if (before >= size + 32 * 1024) {
				assert_int_equal(file_size(p), before);
			} else {
				assert_int_equal(file_size(p), size + 64 * 1024);
				refilled++;
			}
		}
	}
	assert_int_equal(refilled, 1);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	check_read_every_offset(f, 0);
	size = partlog_size_bytes(f->pl);
	/* A clean close cuts the zeros; the reopen scans nothing away. */
	reopen(f, &truncated);
	assert_int_equal(truncated, 0);
	assert_int_equal(file_size(p), size);
	assert_int_equal(partlog_size_bytes(f->pl), size);
	check_read_every_offset(f, 0);
}

/* Appends that outrun half a preallocation between two looks (syncs) get
 * no more zeros: at that rate the data makes the sync's cost, and zeros
 * would double the bytes written.  A slower pace brings them back. */
static void test_partlog_fill_ahead_skips_when_appends_outrun(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t size;

	f->conf.synced = true;
	open_log(f, NULL);
	append(f, 2, 0, 100);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	seg_path(f, 0, ".log", p);
	assert_int_equal(file_size(p), f->w[0].len + 64 * 1024);
	for (int i = 0; i < 400; i++) /* ~92 KiB before the next look */
		append(f, 1, i, 150);
	size = partlog_size_bytes(f->pl);
	assert_true(size > f->w[0].len + 64 * 1024);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	assert_int_equal(file_size(p), size); /* grown by the appends only */
	append(f, 1, 400, 150);
	size = partlog_size_bytes(f->pl);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	assert_int_equal(file_size(p), size + 64 * 1024);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	check_read_every_offset(f, 0);
}

static void test_partlog_fill_ahead_stays_in_segment_and_rolled_are_trimmed(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;
	size_t len = one_batch_len();

	f->conf.synced = true;
	f->conf.segment_bytes = 3 * len + 50;
	open_log(f, NULL);
	append(f, 1, 0, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	seg_path(f, 0, ".log", p);
	assert_int_equal(file_size(p), 3 * len + 50); /* never past segment_bytes */
	append(f, 1, 1, 100);
	append(f, 1, 2, 100);
	append(f, 1, 3, 100); /* rolls: segment 0 is full */
	assert_int_equal(count_logs(f), 2);
	/* The rolled segment is cut to its batches when synced. */
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	assert_int_equal(file_size(p), batches_bytes(f, 0, 3));
	assert_int_equal(partlog_fill_ahead(f->pl, 64 * 1024), 0);
	seg_path(f, 3, ".log", p);
	assert_int_equal(file_size(p), 3 * len + 50);
	append(f, 1, 4, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	assert_int_equal(partlog_checkpoint(f->pl), 0);
	reopen(f, &truncated);
	assert_int_equal(truncated, 0);
	assert_int_equal(file_size(p), batches_bytes(f, 3, 5));
	check_read_every_offset(f, 0);
}

/* A process killed with zeros ahead of its log (no close cuts them): the
 * next open ends the log at the last batch and reports nothing cut. */
static void test_partlog_fill_ahead_survives_a_kill(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;
	int status;
	pid_t pid;

	f->conf.synced = true;
	open_log(f, NULL);
	for (int i = 0; i < 5; i++)
		append(f, 2, i, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	assert_int_equal(partlog_checkpoint(f->pl), 0);
	partlog_close(f->pl);
	f->pl = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The child appends 3 more batches over preallocated zeros,
		 * syncs them, preallocates again and dies. */
		partlog *pl;
		int64_t off;
		size_t len;
		uint8_t *b = make_batch(2, 7, 100, &len);
		int bad = partlog_open(f->dir, &f->conf, &pl, NULL) != 0 ||
			  partlog_fill_ahead(pl, 64 * 1024) != 0;

		for (int i = 0; i < 3 && !bad; i++)
			bad = partlog_append(pl, b, len, 7, 1000, &off) != 0;
		bad = bad || partlog_sync(pl, NULL) != 0 || partlog_fill_ahead(pl, 64 * 1024) != 0;
		_exit(bad);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	seg_path(f, 0, ".log", p);
	assert_true(file_size(p) > batches_bytes(f, 0, 5) + 3 * f->w[0].len);
	open_log(f, &truncated);
	assert_int_equal(truncated, 0);
	assert_int_equal(partlog_end_offset(f->pl), 16);
	assert_int_equal(file_size(p), batches_bytes(f, 0, 5) + 3 * f->w[0].len);
	for (int i = 0; i < 3; i++) { /* what the child wrote, as the test's own */
		f->w[f->n] = f->w[0];
		f->w[f->n].base = 10 + 2 * i;
		f->w[f->n].pos = f->w[f->n - 1].pos + f->w[f->n - 1].len;
		f->w[f->n].ts = 7;
		f->n++;
	}
	assert_int_equal(partlog_hw(f->pl), 16);
	check_read_every_offset(f, 0);
	assert_int_equal(append(f, 1, 9, 100), 16);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	check_read_every_offset(f, 0);
}

/* A disk that fills up during a preallocation: the first call writes
 * 100 KiB of what it was given, every later write fails with ENOSPC. */
static int fill_writes;

static ssize_t pwritev_100k_then_enospc(int fd, const struct iovec *iov, int n, off_t pos)
{
	(void)iov; (void)n;
	if (fill_writes++ == 0) {
		static const uint8_t zeros[100 * 1024];

		return pwrite(fd, zeros, sizeof(zeros), pos);
	}
	errno = ENOSPC;
	return -1;
}

static ssize_t pwrite_full_disk(int fd, const void *buf, size_t n, off_t pos)
{
	(void)fd; (void)buf; (void)n; (void)pos;
	errno = ENOSPC;
	return -1;
}

/* A failed preallocation costs speed only: the error is returned, the log
 * and its end are unchanged, appends go on (into the zeros written, then
 * growing the file), and the next open finds every batch. */
static void test_partlog_failed_fill_costs_nothing(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated, size;

	f->conf.synced = true;
	open_log(f, NULL);
	append(f, 2, 0, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	size = partlog_size_bytes(f->pl);
	fill_writes = 0;
	fileio.pwritev = pwritev_100k_then_enospc;
	fileio.pwrite = pwrite_full_disk;
	assert_int_equal(partlog_fill_ahead(f->pl, 256 * 1024), -ENOSPC);
	seg_path(f, 0, ".log", p);
	assert_int_equal(file_size(p), size + 100 * 1024);
	assert_int_equal(partlog_size_bytes(f->pl), size);
	assert_int_equal(partlog_end_offset(f->pl), 2);
	/* Still short of half: the next sync's preallocation tries again. */
	assert_int_equal(partlog_fill_ahead(f->pl, 256 * 1024), -ENOSPC);
	fileio_reset();
	for (int i = 0; i < 800; i++) /* ~180 KiB: past the zeros written */
		append(f, 1, i, 150);
	assert_true(partlog_size_bytes(f->pl) > size + 128 * 1024);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	check_read_every_offset(f, 0);
	reopen(f, &truncated);
	assert_int_equal(truncated, 0);
	check_read_every_offset(f, 0);
}

/* Appends never wait for a fill below them, and one that reaches the
 * zeros being written waits for them: otherwise the zeros land over it. */
static sem_t fill_entered, fill_release;
static atomic_bool hold_fill;

static ssize_t pwritev_holding_zeros(int fd, const struct iovec *iov, int n, off_t pos)
{
	if (atomic_load(&hold_fill) && n > 1 && iov[0].iov_len == 64 * 1024 &&
	    ((const uint8_t *)iov[0].iov_base)[0] == 0) {
		atomic_store(&hold_fill, false);
		sem_post(&fill_entered);
		sem_wait(&fill_release);
	}
	return pwritev(fd, iov, n, pos);
}

struct bg_append {
	partlog *pl;
	uint8_t *batch;
	size_t len;
	int64_t off;
	atomic_bool done;
};

static void *fill_thread(void *arg)
{
	return (void *)(intptr_t)partlog_fill_ahead(arg, 256 * 1024);
}

static void *append_thread(void *arg)
{
	struct bg_append *a = arg;
	int r = partlog_append(a->pl, a->batch, a->len, 5, 1000, &a->off);

	atomic_store(&a->done, true);
	return (void *)(intptr_t)r;
}

static void test_partlog_append_waits_for_the_fill(void **state)
{
	struct fx *f = *state;
	struct bg_append a = { 0 };
	pthread_t tf, ta;
	void *rf, *ra;

	f->conf.synced = true;
	open_log(f, NULL);
	append(f, 2, 0, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	sem_init(&fill_entered, 0, 0);
	sem_init(&fill_release, 0, 0);
	atomic_store(&hold_fill, true);
	fileio.pwritev = pwritev_holding_zeros;
	assert_int_equal(pthread_create(&tf, NULL, fill_thread, f->pl), 0);
	sem_wait(&fill_entered); /* zeros about to go over [end, end + 256 KiB) */
	a.pl = f->pl;
	a.batch = make_batch(3, 5, 120, &a.len);
	assert_int_equal(pthread_create(&ta, NULL, append_thread, &a), 0);
	usleep(100 * 1000);
	assert_false(atomic_load(&a.done));
	sem_post(&fill_release);
	assert_int_equal(pthread_join(tf, &rf), 0);
	assert_int_equal(pthread_join(ta, &ra), 0);
	fileio_reset();
	assert_int_equal((intptr_t)rf, 0);
	assert_int_equal((intptr_t)ra, 0);
	assert_int_equal(a.off, 2);
	f->w[1] = (struct written){ .base = 2, .count = 3, .len = a.len, .ts = 5, .seg = 0,
				    .pos = f->w[0].len };
	f->n = 2;
	free(a.batch);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	check_read_every_offset(f, 0); /* the batch, not zeros */
	sem_destroy(&fill_entered);
	sem_destroy(&fill_release);
}


static void test_partlog_recover_bit_flip_in_last_batch(void **state)
{
	struct fx *f = *state;
	uint64_t truncated;

	crash_setup(f, 10, 20);
	corrupt_batch(f, 19);
	open_log(f, &truncated);
	assert_int_equal(truncated, f->w[19].len);
	check_recovered(f, 19);
}

static void test_partlog_recover_bit_flip_in_middle_batch(void **state)
{
	struct fx *f = *state;
	uint64_t truncated;

	crash_setup(f, 10, 20);
	corrupt_batch(f, 14);
	open_log(f, &truncated);
	assert_int_equal(truncated, batches_bytes(f, 14, 20));
	check_recovered(f, 14);
}

static void test_partlog_recover_deletes_later_segments(void **state)
{
	struct fx *f = *state;
	uint64_t truncated;

	four_segments_closed(f);
	corrupt_batch(f, 4); /* second batch of segment 3 */
	open_log(f, &truncated);
	assert_int_equal(truncated, batches_bytes(f, 4, 12));
	assert_int_equal(count_logs(f), 2);
	assert_false(seg_exists(f, 6));
	assert_false(seg_exists(f, 9));
	check_recovered(f, 4);
}

static void test_partlog_recover_reads_only_after_checkpoint(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;
	size_t len = one_batch_len();

	f->conf.segment_bytes = 4 * len;
	open_log(f, NULL);
	for (int i = 0; i < 10; i++)
		append(f, 1, i, 100);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	partlog_close(f->pl); /* final checkpoint at the end */
	f->pl = NULL;

	/* A CRC-detectable flip in the first batch of the first and of the
	 * checkpointed segment: open reads neither. */
	corrupt_batch(f, 0);
	corrupt_batch(f, 8);
	open_log(f, &truncated);
	assert_int_equal(truncated, 0);
	assert_int_equal(partlog_end_offset(f->pl), 10);
	partlog_close(f->pl);
	f->pl = NULL;

	/* Proof the flip is detectable: without the checkpoint the full scan
	 * cuts the log at batch 0. */
	snprintf(p, sizeof(p), "%s/recovery.ckpt", f->dir);
	assert_int_equal(unlink(p), 0);
	open_log(f, &truncated);
	assert_int_equal(truncated, batches_bytes(f, 0, 10));
	assert_int_equal(partlog_end_offset(f->pl), 0);
	assert_int_equal(count_logs(f), 1);
}

static void test_partlog_torn_checkpoint_falls_back(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;

	open_log(f, NULL);
	for (int i = 0; i < 5; i++)
		append(f, 1, i, 50);
	sync_ckpt(f); /* seq 1: slot 1, after batch 4 */
	for (int i = 5; i < 10; i++)
		append(f, 1, i, 50);
	sync_ckpt(f); /* seq 2: slot 0, after batch 9 */
	partlog_close(f->pl);
	f->pl = NULL;

	/* Batch 7 is bad; the newest slot says it is trusted, the older one
	 * says it must be scanned.  Tear the newest slot. */
	corrupt_batch(f, 7);
	snprintf(p, sizeof(p), "%s/recovery.ckpt", f->dir);
	assert_int_equal(file_size(p), 512 + 44);
	flip(p, 20);
	open_log(f, &truncated);
	assert_int_equal(truncated, batches_bytes(f, 7, 10));
	check_recovered(f, 7);
}

static void test_partlog_both_checkpoint_slots_torn_scans_all(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	uint64_t truncated;

	open_log(f, NULL);
	for (int i = 0; i < 6; i++) {
		append(f, 2, i, 50);
		sync_ckpt(f);
	}
	partlog_close(f->pl);
	f->pl = NULL;
	corrupt_batch(f, 2);
	snprintf(p, sizeof(p), "%s/recovery.ckpt", f->dir);
	flip(p, 3);        /* slot 0 magic */
	flip(p, 512 + 41); /* slot 1 crc */
	open_log(f, &truncated);
	assert_int_equal(truncated, batches_bytes(f, 2, 6));
	check_recovered(f, 2);
}

static void test_partlog_open_ignores_unknown_and_deletes_tmp(void **state)
{
	struct fx *f = *state;
	char p[PATH_MAX];
	int fd;

	open_log(f, NULL);
	append(f, 1, 0, 10);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	partlog_close(f->pl);
	f->pl = NULL;
	snprintf(p, sizeof(p), "%s/README", f->dir);
	fd = open(p, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/00000000000000000001.log.tmp", f->dir);
	fd = open(p, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	open_log(f, NULL);
	assert_false(exists(p));
	snprintf(p, sizeof(p), "%s/README", f->dir);
	assert_true(exists(p));
	assert_int_equal(partlog_end_offset(f->pl), 1);
}

/* ---- disk full through the fileio seam ---- */

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

static ssize_t pwrite_enospc(int fd, const void *buf, size_t n, off_t pos)
{
	(void)fd; (void)buf; (void)n; (void)pos;
	errno = ENOSPC;
	return -1;
}

static void check_enospc_leaves_log_unchanged(struct fx *f, int fail_at)
{
	char p[PATH_MAX];
	uint64_t disk, size;
	int64_t end, hw, off = -3;
	size_t len;
	uint8_t *b = make_batch(3, 77, 300, &len);

	seg_path(f, f->w[f->n - 1].seg, ".log", p);
	disk = file_size(p);
	size = partlog_size_bytes(f->pl);
	end = partlog_end_offset(f->pl);
	hw = partlog_hw(f->pl);
	pwrite_calls = 0;
	pwrite_fail_at = fail_at;
	fileio.pwrite = fail_at ? pwrite_short_then_enospc : pwrite_enospc;
	assert_int_equal(partlog_append(f->pl, b, len, 77, 1000, &off), -ENOSPC);
	fileio_reset();
	assert_int_equal(off, -3);
	assert_int_equal(file_size(p), disk);
	assert_int_equal(partlog_size_bytes(f->pl), size);
	assert_int_equal(partlog_end_offset(f->pl), end);
	assert_int_equal(partlog_hw(f->pl), hw);
	free(b);
}

static void test_partlog_enospc_leaves_log_unchanged(void **state)
{
	struct fx *f = *state;
	uint64_t t;

	f->conf.index_interval_bytes = 1; /* every later batch writes an index entry */
	open_log(f, NULL);
	for (int i = 0; i < 5; i++)
		append(f, 2, 10, 100);
	check_enospc_leaves_log_unchanged(f, 0); /* nothing written */
	check_enospc_leaves_log_unchanged(f, 1); /* half the batch, then ENOSPC */
	check_enospc_leaves_log_unchanged(f, 2); /* batch ok, half the index entry */
	check_enospc_leaves_log_unchanged(f, 3); /* batch and index, time index fails */

	/* Space is back: the same offsets are assigned, everything reads. */
	assert_int_equal(append(f, 3, 77, 300), 10);
	assert_int_equal(append(f, 1, 78, 10), 13);
	check_read_every_offset(f, 0);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, &t);
	assert_int_equal(t, 0);
	check_read_every_offset(f, 0);
}

/* ---- time lookups ---- */

static void check_offset_for_time(struct fx *f, int64_t lo, int64_t hi)
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
		assert_int_equal(partlog_offset_for_time(f->pl, ts, &off, &fts), 0);
		assert_int_equal(off, want);
		assert_int_equal(fts, want_ts);
	}
}

static void test_partlog_offset_for_time(void **state)
{
	struct fx *f = *state;
	int64_t off = 0, ts = 0;
	size_t len;
	uint8_t *b = make_batch(1, 0, 80, &len);

	free(b);
	f->conf.segment_bytes = 6 * len;
	f->conf.index_interval_bytes = (uint32_t)len;
	open_log(f, NULL);
	assert_int_equal(partlog_offset_for_time(f->pl, 0, &off, &ts), 0);
	assert_int_equal(off, -1);
	assert_int_equal(ts, -1);
	/* Mostly rising, with steps back and repeats. */
	for (int i = 0; i < 40; i++)
		append(f, 1 + i % 2, 1000 + 10 * i - (i % 5 == 3 ? 45 : 0), 80);
	check_offset_for_time(f, 990, 1400);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, NULL); /* old segments now load their indexes lazily */
	check_offset_for_time(f, 990, 1400);
}

static void test_partlog_offset_for_time_sees_only_hw(void **state)
{
	struct fx *f = *state;
	int64_t off, ts;

	f->conf.synced = true;
	open_log(f, NULL);
	append(f, 1, 100, 10);
	assert_int_equal(partlog_offset_for_time(f->pl, 50, &off, &ts), 0);
	assert_int_equal(off, -1);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	assert_int_equal(partlog_offset_for_time(f->pl, 50, &off, &ts), 0);
	assert_int_equal(off, 0);
	assert_int_equal(ts, 100);
}

/* ---- destroy ---- */

static void test_partlog_destroy_removes_everything(void **state)
{
	struct fx *f = *state;
	partlog *pl;
	size_t len = one_batch_len();

	f->conf.segment_bytes = 2 * len;
	open_log(f, NULL);
	for (int i = 0; i < 5; i++)
		append(f, 1, 0, 100);
	sync_ckpt(f);
	pl = f->pl;
	f->pl = NULL; /* destroy frees it whatever it returns */
	assert_int_equal(partlog_destroy(pl), 0);
	assert_false(exists(f->dir));
}

/* ---- readers beside an appender ---- */

struct race {
	struct fx *f;
	atomic_bool stop;
	atomic_long reads;
};

static void *reader(void *arg)
{
	struct race *rc = arg;
	partlog *pl = rc->f->pl;
	unsigned seed = (unsigned)(uintptr_t)&seed;
	uint8_t *buf = malloc(1 << 16);

	while (!atomic_load(&rc->stop)) {
		int64_t hw = partlog_hw(pl), offset, next;
		partlog_range r;
		size_t at = 0;

		if (hw == 0)
			continue;
		offset = rand_r(&seed) % hw;
		/* cmocka's asserts are for the main thread: abort() here. */
		if (partlog_read(pl, offset, 1 << 16, &r) != 0 || r.len == 0 || r.len > (1 << 16)) {
			fprintf(stderr, "read at %" PRId64 " (hw %" PRId64 ") failed\n", offset, hw);
			abort();
		}
		if (pread(r.fd, buf, r.len, r.pos) != (ssize_t)r.len)
			abort();
		next = r.first_offset;
		while (at < r.len) {
			size_t size = recbatch_size(buf + at, r.len - at);

			if (size < RECBATCH_HEADER_SIZE || size > r.len - at ||
			    recbatch_check_crc(buf + at, size) != RECBATCH_OK ||
			    (int64_t)wire_get64(buf + at) != next)
				abort();
			next += (int32_t)wire_get32(buf + at + RECBATCH_OFF_LAST_DELTA) + 1;
			at += size;
		}
		if (r.first_offset > offset || next <= offset || next > partlog_hw(pl))
			abort();
		partlog_range_release(&r);
		atomic_fetch_add(&rc->reads, 1);
	}
	free(buf);
	return NULL;
}

static void test_partlog_readers_beside_appender(void **state)
{
	struct fx *f = *state;
	struct race rc = { .f = f };
	pthread_t t[3];
	size_t len;
	uint8_t *b = make_batch(1, 0, 200, &len);
	int deleted;

	free(b);
	f->conf.segment_bytes = 20 * len;
	open_log(f, NULL);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &rc), 0);
	for (int i = 0; i < 3000; i++) {
		size_t blen;
		uint8_t *batch = make_batch(1 + i % 3, i, (size_t)(i % 200), &blen);
		int64_t off;

		assert_int_equal(partlog_append(f->pl, batch, blen, i, 1000, &off), 0);
		free(batch);
		if (i % 500 == 499) {
			assert_int_equal(partlog_sync(f->pl, NULL), 0);
			assert_int_equal(partlog_checkpoint(f->pl), 0);
		}
	}
	atomic_store(&rc.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_true(atomic_load(&rc.reads) > 0);
	/* Retention with the readers gone must leave a readable log. */
	f->conf.retention_bytes = (int64_t)(40 * len);
	partlog_set_conf(f->pl, &f->conf);
	assert_int_equal(partlog_retention(f->pl, 0, &deleted), 0);
	assert_true(deleted > 0);
}

/* ---- multi-batch appends (partlog_append_v) ---- */

static void vbatch_make(partlog_batch *v, int records, int64_t ts, size_t vlen)
{
	size_t len;

	v->batch = make_batch(records, ts, vlen, &len);
	v->len = len;
	v->max_ts = ts;
	v->base_offset = -1;
}

static void vbatch_free(partlog_batch *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].batch);
}

/* Records in f->w a batch that partlog_append_v put at base (the segment
 * and position as the size rule says, like append_at). */
static void note_appended(struct fx *f, const partlog_batch *v, int records)
{
	struct written *w = &f->w[f->n];

	w->seg = seg_of_next(f, v->len, 0);
	w->pos = f->n && w->seg == f->w[f->n - 1].seg ? f->w[f->n - 1].pos + f->w[f->n - 1].len : 0;
	w->base = v->base_offset;
	w->count = records;
	w->len = v->len;
	w->ts = v->max_ts;
	assert_int_equal(w->base, f->n ? f->w[f->n - 1].base + f->w[f->n - 1].count : 0);
	assert_int_equal((int64_t)wire_get64(v->batch), w->base);
	f->n++;
}

/* The .log fd of pl's segment starting at base. */
static int log_fd(partlog *pl, int64_t base)
{
	partlog_range r;
	int fd;

	assert_int_equal(partlog_read(pl, base, 1, &r), 0);
	assert_int_equal(r.first_offset, base);
	fd = r.fd;
	partlog_range_release(&r);
	return fd;
}

static void check_same_file(const struct fx *f, int64_t base, const char *ext)
{
	char pa[PATH_MAX], pb[PATH_MAX];
	uint64_t la, lb;
	uint8_t *a, *b;
	int fa, fb;

	seg_path(f, base, ext, pa);
	snprintf(pb, sizeof(pb), "%s%s", f->dir2, pa + strlen(f->dir));
	la = file_size(pa);
	lb = file_size(pb);
	assert_int_equal(la, lb);
	a = malloc(la + 1);
	b = malloc(lb + 1);
	assert_true(a && b);
	fa = open(pa, O_RDONLY);
	fb = open(pb, O_RDONLY);
	assert_true(fa >= 0 && fb >= 0);
	assert_int_equal(pread(fa, a, la, 0), (ssize_t)la);
	assert_int_equal(pread(fb, b, lb, 0), (ssize_t)lb);
	assert_memory_equal(a, b, la);
	close(fa);
	close(fb);
	free(a);
	free(b);
}

static void swap_logs(struct fx *f)
{
	partlog *t = f->pl;

	f->pl = f->pl2;
	f->pl2 = t;
}

#define NV 40

static void test_partlog_append_v_matches_single_appends(void **state)
{
	static const char *const exts[] = { ".log", ".index", ".timeindex" };
	struct fx *f = *state;
	partlog_batch v[NV];
	size_t len, na = 0;
	uint8_t *b = make_batch(2, 0, 100, &len);
	int segs = 0, multi = 0;

	free(b);
	f->conf.segment_bytes = 5 * len;
	f->conf.index_interval_bytes = (uint32_t)len; /* entries inside runs */
	open_log(f, NULL);
	assert_int_equal(partlog_open(f->dir2, &f->conf, &f->pl2, NULL), 0);
	/* f->pl, the reference: one partlog_append per batch. */
	for (int i = 0; i < NV; i++) {
		int records = 1 + i % 3;
		int64_t ts = 1000 + 3 * i - (i % 4 == 1 ? 7 : 0);
		size_t vlen = (size_t)(60 + (i * 29) % 90);

		append(f, records, ts, vlen);
		vbatch_make(&v[i], records, ts, vlen);
	}

	count_writes();
	assert_int_equal(partlog_append_v(f->pl2, v, NV, 1000, &na), 0);
	fileio_reset();
	assert_int_equal(na, NV);
	for (int i = 0; i < NV; i++)
		assert_int_equal(v[i].base_offset, f->w[i].base);
	assert_int_equal(partlog_end_offset(f->pl2), partlog_end_offset(f->pl));
	assert_int_equal(partlog_hw(f->pl2), partlog_hw(f->pl));
	assert_int_equal(partlog_size_bytes(f->pl2), partlog_size_bytes(f->pl));

	/* One log write per segment touched, at most one per index file. */
	for (int i = 0; i < NV; i++) {
		int k = 1;

		if (i > 0 && f->w[i].seg == f->w[i - 1].seg)
			continue;
		segs++;
		while (i + k < NV && f->w[i + k].seg == f->w[i].seg)
			k++;
		multi += k > 1;
		assert_int_equal(writes_to(log_fd(f->pl2, f->w[i].seg)), 1);
		for (size_t e = 0; e < 3; e++)
			check_same_file(f, f->w[i].seg, exts[e]);
	}
	assert_true(segs >= 4);
	assert_int_equal(pwritev_calls, multi);
	for (int i = 0; i < n_counted_fds; i++)
		assert_int_equal(count_n[i], 1);

	/* The same reads and time lookups from both. */
	check_read_every_offset(f, 0);
	check_offset_for_time(f, 990, 1130);
	swap_logs(f);
	assert_int_equal(count_logs(f), segs);
	check_read_every_offset(f, 0);
	check_offset_for_time(f, 990, 1130);
	vbatch_free(v, NV);
}

static void test_partlog_append_v_stops_at_too_large(void **state)
{
	struct fx *f = *state;
	partlog_batch v[10], w[2];
	size_t len, na = 99;
	uint8_t *b = make_batch(2, 0, 100, &len);

	free(b);
	f->conf.segment_bytes = 3 * len + 10; /* three batches per segment */
	open_log(f, NULL);
	append(f, 2, 5, 100);
	for (int i = 0; i < 10; i++)
		vbatch_make(&v[i], i == 6 ? 1 : 2, 10 + i, i == 6 ? 4 * len : 100);

	/* Runs of 2 (filling segment 0), 3 and 1, then batch 6 is refused. */
	assert_int_equal(partlog_append_v(f->pl, v, 10, 1000, &na), PARTLOG_E_TOO_LARGE);
	assert_int_equal(na, 6);
	for (int i = 0; i < 6; i++)
		note_appended(f, &v[i], 2);
	for (int i = 6; i < 10; i++)
		assert_int_equal(v[i].base_offset, -1);
	assert_int_equal(partlog_end_offset(f->pl), 14);
	assert_int_equal(partlog_hw(f->pl), 14);
	assert_int_equal(partlog_size_bytes(f->pl), 7 * len);
	assert_int_equal(count_logs(f), 3);
	check_read_every_offset(f, 0);

	/* The rest goes on from there. */
	assert_int_equal(partlog_append_v(f->pl, v + 7, 3, 1000, &na), 0);
	assert_int_equal(na, 3);
	for (int i = 7; i < 10; i++)
		note_appended(f, &v[i], 2);
	assert_int_equal(partlog_end_offset(f->pl), 20);

	/* A bad header stops the same way, with -EINVAL. */
	vbatch_make(&w[0], 1, 30, 10);
	vbatch_make(&w[1], 1, 31, 10);
	wire_put32(w[1].batch + RECBATCH_OFF_LAST_DELTA, 0xffffffffu);
	assert_int_equal(partlog_append_v(f->pl, w, 2, 1000, &na), -EINVAL);
	assert_int_equal(na, 1);
	note_appended(f, &w[0], 1);
	assert_int_equal(w[1].base_offset, -1);
	assert_int_equal(partlog_end_offset(f->pl), 21);
	check_read_every_offset(f, 0);
	vbatch_free(v, 10);
	vbatch_free(w, 2);
}

/* fileio seam: the second pwritev writes half, then it and every later
 * write fail with ENOSPC. */
static bool disk_full;

static ssize_t pwrite_unless_full(int fd, const void *buf, size_t n, off_t pos)
{
	if (disk_full) {
		errno = ENOSPC;
		return -1;
	}
	return pwrite(fd, buf, n, pos);
}

static ssize_t pwritev_second_fails(int fd, const struct iovec *iov, int cnt, off_t pos)
{
	if (++pwritev_calls < 2)
		return pwritev(fd, iov, cnt, pos);
	if (disk_full) {
		errno = ENOSPC;
		return -1;
	}
	disk_full = true;
	return pwritev_first_half(fd, iov, cnt, pos);
}

static void test_partlog_append_v_io_failure_keeps_first_run(void **state)
{
	struct fx *f = *state;
	partlog_batch v[10];
	char p[PATH_MAX];
	size_t len, na = 99;
	uint8_t *b = make_batch(2, 0, 100, &len);
	partlog_range r;
	uint64_t t;

	free(b);
	f->conf.segment_bytes = 4 * len + 10; /* four batches per segment */
	f->conf.index_interval_bytes = 1;     /* index writes in every run */
	open_log(f, NULL);
	for (int i = 0; i < 10; i++)
		vbatch_make(&v[i], 2, 20 + i, 100);

	/* Run 1 (batches 0-3) fills segment 0; run 2 goes to a new segment
	 * and its pwritev stops half way. */
	pwritev_calls = 0;
	disk_full = false;
	fileio.pwrite = pwrite_unless_full;
	fileio.pwritev = pwritev_second_fails;
	assert_int_equal(partlog_append_v(f->pl, v, 10, 1000, &na), -ENOSPC);
	fileio_reset();
	assert_true(disk_full);
	assert_int_equal(na, 4);
	for (int i = 0; i < 4; i++)
		note_appended(f, &v[i], 2);
	for (int i = 4; i < 10; i++)
		assert_int_equal(v[i].base_offset, -1);
	assert_int_equal(partlog_end_offset(f->pl), 8);
	assert_int_equal(partlog_hw(f->pl), 8);
	assert_int_equal(partlog_size_bytes(f->pl), 4 * len);
	seg_path(f, 0, ".log", p);
	assert_int_equal(file_size(p), 4 * len);
	/* The rolled-to segment holds nothing of run 2. */
	seg_path(f, 8, ".log", p);
	assert_int_equal(file_size(p), 0);
	seg_path(f, 8, ".index", p);
	assert_int_equal(file_size(p), 0);
	check_read_every_offset(f, 0);
	assert_int_equal(partlog_read(f->pl, 8, 1000, &r), 0);
	assert_int_equal(r.len, 0);
	partlog_range_release(&r);

	/* Space is back: the rest lands from offset 8 on. */
	assert_int_equal(partlog_append_v(f->pl, v + 4, 6, 1000, &na), 0);
	assert_int_equal(na, 6);
	for (int i = 4; i < 10; i++)
		note_appended(f, &v[i], 2);
	check_read_every_offset(f, 0);
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	reopen(f, &t);
	assert_int_equal(t, 0);
	check_read_every_offset(f, 0);
	vbatch_free(v, 10);
}

static void test_partlog_append_v_rolls_by_time(void **state)
{
	struct fx *f = *state;
	partlog_batch v[3];
	size_t na;

	f->conf.segment_ms = 100;
	open_log(f, NULL);
	append_at(f, 1, 0, 10, 1000);
	for (int i = 0; i < 3; i++)
		vbatch_make(&v[i], 1, 0, 10);
	/* The first batch rolls; the new segment's clock starts with it. */
	assert_int_equal(partlog_append_v(f->pl, v, 3, 1101, &na), 0);
	assert_int_equal(na, 3);
	assert_int_equal(count_logs(f), 2);
	assert_true(seg_exists(f, 1));
	assert_int_equal(v[2].base_offset, 3);
	assert_int_equal(partlog_append_v(f->pl, v, 1, 1201, &na), 0);
	assert_int_equal(count_logs(f), 2);
	assert_int_equal(partlog_append_v(f->pl, v + 1, 2, 1202, &na), 0);
	assert_int_equal(count_logs(f), 3);
	assert_true(seg_exists(f, 5));
	assert_int_equal(v[2].base_offset, 6);
	vbatch_free(v, 3);
}

/* ---- data-only syncs (partlog_sync_data) ---- */

static int synced_fd[16], n_synced;

static int fdatasync_recording(int fd)
{
	if (n_synced < 16)
		synced_fd[n_synced] = fd;
	n_synced++;
	return fdatasync(fd);
}

/* partlog_sync_data syncs the active .log alone; the checkpoint then syncs
 * the two index files it left (before its own slot write), and a sync with
 * nothing new syncs nothing; reopening from that checkpoint finds every
 * batch and answers lookups. */
static void test_partlog_sync_data_leaves_indexes_to_checkpoint(void **state)
{
	struct fx *f = *state;
	int log;

	f->conf.index_interval_bytes = 1; /* an index entry per batch */
	f->conf.synced = true;
	open_log(f, NULL);
	for (int i = 0; i < 6; i++)
		append(f, 2, 100 + i, 80);
	n_synced = 0;
	fileio.fdatasync = fdatasync_recording;
	assert_int_equal(partlog_sync_data(f->pl, NULL), 0);
	fileio_reset();
	assert_int_equal(partlog_hw(f->pl), 12); /* acknowledged: visible */
	log = log_fd(f->pl, 0);
	assert_int_equal(n_synced, 1);
	assert_int_equal(synced_fd[0], log);

	n_synced = 0;
	fileio.fdatasync = fdatasync_recording;
	assert_int_equal(partlog_checkpoint(f->pl), 0);
	fileio_reset();
	assert_true(n_synced >= 3); /* .index, .timeindex, then the slot */
	for (int i = 0; i < 2; i++)
		assert_int_not_equal(synced_fd[i], log);

	n_synced = 0;
	fileio.fdatasync = fdatasync_recording;
	assert_int_equal(partlog_sync_data(f->pl, NULL), 0);
	assert_int_equal(partlog_checkpoint(f->pl), 0);
	fileio_reset();
	assert_int_equal(n_synced, 0); /* nothing new: no sync at all */

	append(f, 1, 200, 80);
	n_synced = 0;
	fileio.fdatasync = fdatasync_recording;
	assert_int_equal(partlog_sync(f->pl, NULL), 0);
	fileio_reset();
	assert_int_equal(n_synced, 3); /* the full sync: .log and both indexes */

	reopen(f, NULL);
	assert_int_equal(partlog_end_offset(f->pl), 13);
	check_read_every_offset(f, 0);
	check_offset_for_time(f, 100, 200);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_partlog_append_assigns_consecutive_offsets),
		T(test_partlog_read_bounds),
		T(test_partlog_batch_too_large),
		T(test_partlog_roll_by_size),
		T(test_partlog_roll_by_time),
		T(test_partlog_retention_by_bytes),
		T(test_partlog_retention_by_time),
		T(test_partlog_retention_keeps_range_fd_valid),
		T(test_partlog_synced_mode_hw_moves_on_sync),
		T(test_partlog_failed_sync_keeps_hw),
		T(test_partlog_reopen_after_clean_close),
		T(test_partlog_recover_truncated_mid_batch),
		T(test_partlog_recover_zero_filled_tail),
		T(test_partlog_recover_zeros_before_later_segments),
		T(test_partlog_fill_ahead_synced_only),
		T(test_partlog_fill_ahead_skips_when_appends_outrun),
		T(test_partlog_fill_ahead_stays_in_segment_and_rolled_are_trimmed),
		T(test_partlog_fill_ahead_survives_a_kill),
		T(test_partlog_append_waits_for_the_fill),
		T(test_partlog_failed_fill_costs_nothing),
		T(test_partlog_recover_bit_flip_in_last_batch),
		T(test_partlog_recover_bit_flip_in_middle_batch),
		T(test_partlog_recover_deletes_later_segments),
		T(test_partlog_recover_reads_only_after_checkpoint),
		T(test_partlog_torn_checkpoint_falls_back),
		T(test_partlog_both_checkpoint_slots_torn_scans_all),
		T(test_partlog_open_ignores_unknown_and_deletes_tmp),
		T(test_partlog_enospc_leaves_log_unchanged),
		T(test_partlog_offset_for_time),
		T(test_partlog_offset_for_time_sees_only_hw),
		T(test_partlog_destroy_removes_everything),
		T(test_partlog_sync_data_leaves_indexes_to_checkpoint),
		T(test_partlog_readers_beside_appender),
		T(test_partlog_append_v_matches_single_appends),
		T(test_partlog_append_v_stops_at_too_large),
		T(test_partlog_append_v_io_failure_keeps_first_run),
		T(test_partlog_append_v_rolls_by_time),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
