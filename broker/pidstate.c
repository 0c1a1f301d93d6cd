/* pidstate.c — see pidstate.h. */
#include "pidstate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "wire.h"

#define SNAP_MAGIC 0x534c5053u /* "SLPS" */
#define SNAP_VERSION 1u
#define SNAP_BATCH_SIZE 24

typedef struct pbatch {
	int32_t first_seq, last_seq;
	int64_t base_offset, last_offset;
} pbatch;

typedef struct pentry {
	int64_t pid;
	int16_t epoch;
	uint8_t n;                       /* batches held, newest last */
	pbatch b[PIDSTATE_WINDOW];
} pentry;

/* A sorted array: producers per partition are few (one per producer
 * process), and lookups are a binary search. */
struct pidstate {
	pentry *e;
	size_t n, cap;
};

pidstate *pidstate_new(void)
{
	return calloc(1, sizeof(pidstate));
}

void pidstate_free(pidstate *ps)
{
	if (!ps)
		return;
	free(ps->e);
	free(ps);
}

size_t pidstate_count(const pidstate *ps)
{
	return ps->n;
}

/* Index of pid, or where it would go (*found false). */
static size_t find(const pidstate *ps, int64_t pid, bool *found)
{
	size_t lo = 0, hi = ps->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ps->e[mid].pid < pid)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < ps->n && ps->e[lo].pid == pid;
	return lo;
}

/* Sequences wrap at INT32_MAX back to 0, as in Kafka. */
static int32_t next_seq(int32_t s)
{
	return s == INT32_MAX ? 0 : s + 1;
}

int32_t pidstate_last_seq(const pidstate *ps, int64_t pid, int16_t epoch)
{
	bool found;
	size_t i = find(ps, pid, &found);

	if (!found || ps->e[i].epoch != epoch || ps->e[i].n == 0)
		return -1;
	return ps->e[i].b[ps->e[i].n - 1].last_seq;
}

int pidstate_last(const pidstate *ps, int64_t pid, int16_t *epoch, int32_t *last_seq)
{
	bool found;
	size_t i = find(ps, pid, &found);

	if (!found || ps->e[i].n == 0)
		return -ENOENT;
	*epoch = ps->e[i].epoch;
	*last_seq = ps->e[i].b[ps->e[i].n - 1].last_seq;
	return 0;
}

int pidstate_check(const pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq,
		   int32_t last_seq, int64_t *dup_base)
{
	bool found;
	size_t i = find(ps, pid, &found);
	const pentry *e;

	if (!found)
		return first_seq == 0 ? PIDSTATE_APPEND : PIDSTATE_UNKNOWN_PID;
	e = &ps->e[i];
	if (epoch < e->epoch)
		return PIDSTATE_FENCED;
	if (epoch > e->epoch)
		return first_seq == 0 ? PIDSTATE_APPEND : PIDSTATE_OUT_OF_ORDER;
	for (int k = 0; k < e->n; k++) {
		if (e->b[k].first_seq == first_seq && e->b[k].last_seq == last_seq) {
			*dup_base = e->b[k].base_offset;
			return PIDSTATE_DUPLICATE;
		}
	}
	if (e->n && first_seq != next_seq(e->b[e->n - 1].last_seq))
		return PIDSTATE_OUT_OF_ORDER;
	return PIDSTATE_APPEND;
}

static int put(pidstate *ps, int64_t pid, int16_t epoch, const pbatch *b)
{
	bool found;
	size_t i = find(ps, pid, &found);
	pentry *e;

	if (!found) {
		if (ps->n == ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 4;
			pentry *ne = realloc(ps->e, sizeof(*ne) * cap);

			if (!ne)
				return -ENOMEM;
			ps->e = ne;
			ps->cap = cap;
		}
		memmove(&ps->e[i + 1], &ps->e[i], sizeof(*ps->e) * (ps->n - i));
		ps->n++;
		memset(&ps->e[i], 0, sizeof(ps->e[i]));
		ps->e[i].pid = pid;
		ps->e[i].epoch = epoch;
	}
	e = &ps->e[i];
	if (epoch != e->epoch) {
		e->epoch = epoch; /* a new epoch starts a new sequence space */
		e->n = 0;
	}
	if (e->n == PIDSTATE_WINDOW) {
		memmove(&e->b[0], &e->b[1], sizeof(e->b[0]) * (PIDSTATE_WINDOW - 1));
		e->n--;
	}
	e->b[e->n++] = *b;
	return 0;
}

int pidstate_record(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		    int64_t base_offset, int64_t last_offset)
{
	pbatch b = { first_seq, last_seq, base_offset, last_offset };

	return put(ps, pid, epoch, &b);
}

int pidstate_observe(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		     int64_t base_offset, int64_t last_offset)
{
	bool found;
	size_t i = find(ps, pid, &found);

	if (found && epoch < ps->e[i].epoch)
		return 0; /* a fenced producer's stray batch: keep the newer state */
	return pidstate_record(ps, pid, epoch, first_seq, last_seq, base_offset, last_offset);
}

long pidstate_encode(const pidstate *ps, int64_t covered_end, uint8_t **out)
{
	wire_buf b;
	size_t count_at;
	uint32_t count = 0;

	wire_buf_init(&b);
	wire_w_i32(&b, (int32_t)SNAP_MAGIC);
	wire_w_i32(&b, (int32_t)SNAP_VERSION);
	wire_w_i64(&b, covered_end);
	count_at = wire_w_placeholder32(&b);
	for (size_t i = 0; i < ps->n; i++) {
		const pentry *e = &ps->e[i];
		int nb = 0;

		/* only batches below covered_end: the rest may not be durable
		 * yet, and replay after a restart re-adds what survived */
		while (nb < e->n && e->b[nb].last_offset < covered_end)
			nb++;
		if (nb == 0)
			continue;
		count++;
		wire_w_i64(&b, e->pid);
		wire_w_i16(&b, e->epoch);
		wire_w_i8(&b, (int8_t)nb);
		for (int k = 0; k < nb; k++) {
			wire_w_i32(&b, e->b[k].first_seq);
			wire_w_i32(&b, e->b[k].last_seq);
			wire_w_i64(&b, e->b[k].base_offset);
			wire_w_i64(&b, e->b[k].last_offset);
		}
	}
	wire_patch32(&b, count_at, (int32_t)count);
	if (!b.oom)
		wire_w_i32(&b, (int32_t)crc32c(0, b.data, b.len));
	if (b.oom) {
		wire_buf_free(&b);
		return -ENOMEM;
	}
	*out = b.data;
	return (long)b.len;
}

int pidstate_decode(pidstate *ps, const uint8_t *buf, size_t len, int64_t *covered_end)
{
	pidstate tmp = { 0 };
	wire_rd rd;
	int64_t end;
	uint32_t n;

	if (len < 24 || wire_get32(buf + len - 4) != crc32c(0, buf, len - 4))
		return -EINVAL;
	wire_rd_init(&rd, buf, len - 4);
	if ((uint32_t)wire_rd_i32(&rd) != SNAP_MAGIC || (uint32_t)wire_rd_i32(&rd) != SNAP_VERSION)
		return -EINVAL;
	end = wire_rd_i64(&rd);
	n = (uint32_t)wire_rd_i32(&rd);
	if (n > wire_rd_left(&rd) / 11)
		return -EINVAL;
	for (uint32_t i = 0; i < n && !rd.err; i++) {
		int64_t pid = wire_rd_i64(&rd);
		int16_t epoch = wire_rd_i16(&rd);
		uint8_t nb = (uint8_t)wire_rd_i8(&rd);

		if (nb > PIDSTATE_WINDOW)
			rd.err = true;
		for (int k = 0; k < nb && !rd.err; k++) {
			pbatch b;

			b.first_seq = wire_rd_i32(&rd);
			b.last_seq = wire_rd_i32(&rd);
			b.base_offset = wire_rd_i64(&rd);
			b.last_offset = wire_rd_i64(&rd);
			if (!rd.err && put(&tmp, pid, epoch, &b) < 0)
				rd.err = true;
		}
	}
	if (rd.err || wire_rd_left(&rd) != 0) {
		free(tmp.e);
		return -EINVAL;
	}
	free(ps->e);
	*ps = tmp;
	*covered_end = end;
	return 0;
}
