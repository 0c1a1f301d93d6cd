/* pidstate.c — see pidstate.h. */
#include "pidstate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "wire.h"

#define SNAP_MAGIC 0x534c5053u /* "SLPS" */
#define SNAP_VERSION 2u   /* written; 1 (no last_write_ms) is still read */
/* Smallest producer entry (no batch) of each version, to bound count. */
#define SNAP_V1_ENTRY 11
#define SNAP_V2_ENTRY 19

typedef struct pbatch {
	int32_t first_seq, last_seq;
	int64_t base_offset, last_offset;
} pbatch;

typedef struct pentry {
	int64_t pid;
	int16_t epoch;
	uint8_t n;                       /* batches held, newest last */
	int64_t last_write;              /* wall clock ms of its last append */
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

int pidstate_last_write(const pidstate *ps, int64_t pid, int64_t *ms)
{
	bool found;
	size_t i = find(ps, pid, &found);

	if (!found)
		return -ENOENT;
	*ms = ps->e[i].last_write;
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

static int put(pidstate *ps, int64_t pid, int16_t epoch, const pbatch *b, int64_t now_ms)
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
	e->last_write = now_ms;
	return 0;
}

int pidstate_record(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		    int64_t base_offset, int64_t last_offset, int64_t now_ms)
{
	pbatch b = { first_seq, last_seq, base_offset, last_offset };

	return put(ps, pid, epoch, &b, now_ms);
}

int pidstate_observe(pidstate *ps, int64_t pid, int16_t epoch, int32_t first_seq, int32_t last_seq,
		     int64_t base_offset, int64_t last_offset, int64_t now_ms)
{
	bool found;
	size_t i = find(ps, pid, &found);

	if (found && epoch < ps->e[i].epoch)
		return 0; /* a fenced producer's stray batch: keep the newer state */
	return pidstate_record(ps, pid, epoch, first_seq, last_seq, base_offset, last_offset, now_ms);
}

/*
 * Why expiring is safe for recovery.  After a restart the state is the
 * snapshot (batches below its covered_end) plus the replay of the log from
 * covered_end.  Expiry only removes producers whose batches all lie below
 * covered_end (the durable end), and the syncer writes the snapshot in the
 * same pass, under the same pid_lock hold (partition_snapshot_producers):
 * the new snapshot leaves them out and the replay starts above their
 * batches, so a restart forgets them too and agrees with the running
 * broker.  If that snapshot is lost (write failure, crash before the
 * rename), the older one brings them back: the restarted broker then
 * knows more than the running one did, which is what every restart did
 * before expiry existed, never less — so a retry the running broker
 * would have found a duplicate is still found one.  They expire again at
 * a later pass.
 *
 * A producer with a batch at or above covered_end is kept even when idle
 * (an fsync sync can take longer than a short expiration): in fsync
 * durability it may still wait for the acknowledgement of that batch, and
 * its retry must still be recognised.  Once the client holds the
 * acknowledgement it has no reason to retry; one retrying after
 * producer.id.expiration.ms (24 h by default, against a client's
 * delivery.timeout.ms of 2 minutes) is unknown, as in Kafka.
 *
 * The broker's own producers are never expired: a commit's sequence at or
 * below the last one appended means "in the log already" (txn_commit.h
 * txn_seq_seen); forgotten, a re-driven commit of a partition idle for a
 * day would be appended twice.
 */
size_t pidstate_expire(pidstate *ps, int64_t now_ms, int64_t expiration_ms, int64_t covered_end)
{
	size_t kept = 0, n = ps->n;

	for (size_t i = 0; i < n; i++) {
		pentry *e = &ps->e[i];

		if (e->last_write > now_ms)
			e->last_write = now_ms; /* the clock stepped back */
		if (e->pid < PIDSTATE_FIRST_CLIENT_PID || now_ms - e->last_write < expiration_ms ||
		    (e->n && e->b[e->n - 1].last_offset >= covered_end)) {
			if (kept != i)
				ps->e[kept] = *e; /* compacting keeps the order */
			kept++;
		}
	}
	ps->n = kept;
	return n - kept;
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
		wire_w_i64(&b, e->last_write);
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

int pidstate_decode(pidstate *ps, const uint8_t *buf, size_t len, int64_t now_ms,
		    int64_t *covered_end)
{
	pidstate tmp = { 0 };
	wire_rd rd;
	int64_t end;
	uint32_t n, version;

	if (len < 24 || wire_get32(buf + len - 4) != crc32c(0, buf, len - 4))
		return -EINVAL;
	wire_rd_init(&rd, buf, len - 4);
	if ((uint32_t)wire_rd_i32(&rd) != SNAP_MAGIC)
		return -EINVAL;
	version = (uint32_t)wire_rd_i32(&rd);
	if (version != 1 && version != SNAP_VERSION)
		return -EINVAL;
	end = wire_rd_i64(&rd);
	n = (uint32_t)wire_rd_i32(&rd);
	if (n > wire_rd_left(&rd) / (version == 1 ? SNAP_V1_ENTRY : SNAP_V2_ENTRY))
		return -EINVAL;
	for (uint32_t i = 0; i < n && !rd.err; i++) {
		int64_t pid = wire_rd_i64(&rd);
		int16_t epoch = wire_rd_i16(&rd);
		/* version 1 kept no time: the load time, so that none of its
		 * producers expires before producer.id.expiration.ms from now */
		int64_t last_write = version == 1 ? now_ms : wire_rd_i64(&rd);
		uint8_t nb = (uint8_t)wire_rd_i8(&rd);

		if (nb > PIDSTATE_WINDOW)
			rd.err = true;
		for (int k = 0; k < nb && !rd.err; k++) {
			pbatch b;

			b.first_seq = wire_rd_i32(&rd);
			b.last_seq = wire_rd_i32(&rd);
			b.base_offset = wire_rd_i64(&rd);
			b.last_offset = wire_rd_i64(&rd);
			if (!rd.err && put(&tmp, pid, epoch, &b, last_write) < 0)
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
