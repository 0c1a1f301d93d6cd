/*
 * checksched.h — check-back scheduling for transactional half messages
 * (DESIGN §6.4-5): when to ask, how often, and whom.
 *
 * What it owns: the check policy (timeout before the first check, doubling
 * backoff with a cap, maximum number of checks), one global token bucket
 * that paces checks so a backlog of unresolved transactions (100,000 after
 * an outage) does not storm the producers, a registry of live producer
 * connections per producer group with their parked check-poll requests, and
 * the checks handed out and not yet answered ("outstanding").  Pure logic:
 * no SQLite, no I/O, no clock of its own — every call that needs the time is
 * given now_ms (int64 milliseconds of a monotonic-ish clock; a clock that
 * steps back is treated as "no time passed" by the bucket).
 *
 * Connections are opaque uint64 ids chosen by the broker (never 0, which
 * means "no connection").  Group names are copied.
 *
 * How the broker drives it (docs/transactions.md):
 *  1. A producer's check-poll request (extension API 1002) registers its
 *     connection in its group and parks a poll with room for n checks:
 *     checksched_register + checksched_park.
 *  2. A timer asks checksched_budget for how many checks may go out now and
 *     fetches at most that many due transactions from the half store
 *     (halfstore_due_checks, which leases them).
 *  3. For each, checksched_dispatch picks the connection (the origin
 *     connection of the transaction if it is registered and polling, else
 *     round-robin over the group's other polling connections), takes a
 *     token, consumes one slot of that connection's parked poll and records
 *     the check as outstanding until lease_ms from now.
 *  4. An answer (COMMIT / ROLLBACK / UNKNOWN) removes it: checksched_answered.
 *     checksched_expire returns the checks whose lease ran out unanswered
 *     (also those of connections that went away); the broker records them
 *     as NO_ANSWER in the half store.
 *
 * Threads: not thread-safe.  One instance, used from one thread (the
 * broker's transaction loop).
 *
 * Complexity: groups and connections are kept in arrays searched linearly
 * (a broker has at most some hundreds of producer connections); outstanding
 * checks are in a hash table keyed by txn_id (their number is bounded by
 * rate * lease and by max_outstanding).
 *
 * Errors: negative -errno (-ENOMEM, -EINVAL) is fatal for the call and
 * changes nothing; positive CHECKSCHED_E_* are documented outcomes.
 */
#ifndef SLUICE_CHECKSCHED_H
#define SLUICE_CHECKSCHED_H

#include <stddef.h>
#include <stdint.h>

enum {
	CHECKSCHED_OK = 0,
	CHECKSCHED_E_NO_PRODUCER = 1, /* no connection of the group is registered */
	CHECKSCHED_E_BUSY = 2,        /* registered, but none has a parked poll */
	CHECKSCHED_E_RATE = 3,        /* the global check rate is used up: later */
	CHECKSCHED_E_OUTSTANDING = 4, /* this txn already has a check out */
	CHECKSCHED_E_FULL = 5,        /* max_outstanding checks are out */
	CHECKSCHED_E_NOT_FOUND = 6,   /* no such connection / outstanding check */
};

/* Defaults (RocketMQ's: first check after 6 s, at most 15 checks). */
#define CHECKSCHED_DEFAULT_TIMEOUT_MS 6000          /* transaction.timeout.ms */
#define CHECKSCHED_DEFAULT_BACKOFF_BASE_MS 6000
#define CHECKSCHED_DEFAULT_BACKOFF_CAP_MS 300000    /* 5 min */
#define CHECKSCHED_DEFAULT_MAX_CHECKS 15            /* transaction.check.max */
#define CHECKSCHED_DEFAULT_LEASE_MS 30000
#define CHECKSCHED_DEFAULT_RATE 100.0               /* checks per second */
#define CHECKSCHED_DEFAULT_BURST 200
#define CHECKSCHED_DEFAULT_MAX_OUTSTANDING 10000

typedef struct checksched_policy {
	int64_t timeout_ms;      /* prepare -> first check, >= 0 */
	int64_t backoff_base_ms; /* wait after the 1st unanswered check, >= 1 */
	int64_t backoff_cap_ms;  /* waits double up to this, >= base */
	int32_t max_checks;      /* the check_count that discards, >= 1 */
	int64_t lease_ms;        /* how long a check handed out waits, >= 1 */
	double rate;             /* checks handed out per second (tokenbucket) */
	uint64_t burst;          /* checks handed out at once, >= 1 */
	uint32_t max_outstanding; /* checks out at once, >= 1 */
} checksched_policy;

typedef struct checksched checksched;

/* ---- policy (no instance needed) ---- */

/* Fills *p with the defaults above. */
void checksched_policy_default(checksched_policy *p);

/* 0 if every field is within the limits noted above (rate as
 * tokenbucket_init accepts it), else -EINVAL. */
int checksched_policy_validate(const checksched_policy *p);

/* When a transaction prepared at now_ms is first checked: now_ms +
 * timeout_ms, or now_ms + override_ms if override_ms > 0 (a per-message
 * check timeout).  Saturates at INT64_MAX. */
int64_t checksched_first_check(const checksched_policy *p, int64_t now_ms, int64_t override_ms);

/* After a check that got no decision (UNKNOWN or no answer), check_count
 * being the number of such checks so far including this one (>= 1):
 * returns when to check next, now_ms + min(cap, base * 2^(check_count-1)),
 * or -1 if check_count >= max_checks (the transaction is to be discarded). */
int64_t checksched_next_check(const checksched_policy *p, int32_t check_count, int64_t now_ms);

/* ---- new / free ---- */

/* Creates a scheduler with policy *p (copied), its bucket full at now_ms.
 * Returns 0 and *out, or -EINVAL (bad policy) / -ENOMEM with *out untouched. */
int checksched_new(const checksched_policy *p, int64_t now_ms, checksched **out);
void checksched_free(checksched *cs); /* accepts NULL */

/* Changes the policy live (rate and burst keep the bucket's level, see
 * tokenbucket_set).  Checks already out keep their lease.  0 or -EINVAL. */
int checksched_set_policy(checksched *cs, const checksched_policy *p, int64_t now_ms);
const checksched_policy *checksched_get_policy(const checksched *cs);

/* ---- producer registry ---- */

/* Registers connection conn (!= 0) as a live producer of group.  A
 * connection belongs to one group: registering it under another group moves
 * it there (dropping its parked poll).  Registering again in the same group
 * changes nothing.  0, -EINVAL (conn 0, group NULL) or -ENOMEM. */
int checksched_register(checksched *cs, const char *group, uint64_t conn);

/* Forgets conn (its connection closed).  Its outstanding checks are
 * expired at once: the next checksched_expire returns them.  0 or
 * CHECKSCHED_E_NOT_FOUND. */
int checksched_unregister(checksched *cs, uint64_t conn);

/* conn has a parked check-poll request that can carry up to slots more
 * checks (replaces any previous count; 0 = not polling).  0 or
 * CHECKSCHED_E_NOT_FOUND (not registered). */
int checksched_park(checksched *cs, uint64_t conn, uint32_t slots);

/* Free slots of conn's parked poll (0 if not polling or unknown). */
uint32_t checksched_slots(const checksched *cs, uint64_t conn);

/* ---- choosing and handing out ---- */

/* Whom to ask for a transaction of group prepared on origin (0 = unknown):
 * origin if it is registered in group and has a free poll slot, else the
 * next connection of group with a free slot in round-robin order (the
 * cursor advances, so successive picks spread over the group).  Changes
 * nothing else: no token, no slot.  0 and *conn, or CHECKSCHED_E_NO_PRODUCER /
 * CHECKSCHED_E_BUSY with *conn untouched. */
int checksched_pick(checksched *cs, const char *group, uint64_t origin, uint64_t *conn);

/* Checks that may be handed out now: whole tokens available, capped by the
 * room left under max_outstanding (>= 0).  Use it as the limit of
 * halfstore_due_checks so no more transactions are leased than can go. */
int64_t checksched_budget(const checksched *cs, int64_t now_ms);

/* Hands out the check of txn_id: pick (as above), then one token, then one
 * slot of the chosen connection's poll, and records it as outstanding until
 * now_ms + lease_ms, numbered check_no (the transaction's check_count when
 * it is handed out: the producer sends it back with its answer, so a late
 * answer to an earlier check is told from this one's).  Returns 0 with *conn, or (nothing changed, *conn
 * untouched) CHECKSCHED_E_OUTSTANDING, CHECKSCHED_E_FULL,
 * CHECKSCHED_E_NO_PRODUCER, CHECKSCHED_E_BUSY, CHECKSCHED_E_RATE, or
 * -ENOMEM. */
int checksched_dispatch(checksched *cs, int64_t txn_id, int32_t check_no, const char *group,
			uint64_t origin, int64_t now_ms, uint64_t *conn);

/* check_no of an answer that does not say which check it answers. */
#define CHECKSCHED_ANY_CHECK (-1)

/* The check of txn_id numbered check_no (or whichever is out, for
 * CHECKSCHED_ANY_CHECK) was answered (by any connection).  0 with *conn
 * (who was asked; conn may be NULL), or CHECKSCHED_E_NOT_FOUND (not out:
 * never handed out, already answered or expired, or the one out has
 * another number — the answer is still valid for the half store, whose
 * operations are idempotent, but must not count as this check's). */
int checksched_answered(checksched *cs, int64_t txn_id, int32_t check_no, uint64_t *conn);

/* Removes up to max outstanding checks whose lease ended at or before
 * now_ms (or whose connection was unregistered) and writes their txn ids to
 * txn_ids[0..].  Returns how many (call again while it returns max). */
size_t checksched_expire(checksched *cs, int64_t now_ms, int64_t *txn_ids, size_t max);

/* Checks currently out. */
size_t checksched_outstanding(const checksched *cs);

#endif
