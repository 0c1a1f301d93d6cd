/*
 * txn_dead.h — the dead-letter topic of transactions
 * (transaction.dead.letter.topic; RocketMQ's TRANS_CHECK_MAX_TIME_TOPIC):
 * every DISCARDED transaction's half message is appended there exactly
 * once, as a batch whose records carry the original key, value and headers
 * plus sluice.txn.id, sluice.txn.group, sluice.txn.topic,
 * sluice.txn.partition and sluice.txn.reason (docs/transactions.md
 * "Dead-letter topic").
 *
 * The check-back ticker (txn_check.c) drives it, one step per tick, or
 * back to back while a backlog makes progress (txn_dead_again):
 *  - in the ticker's coordinator job, txn_dead_run records the copies the
 *    previous step wrote (txn_half.dead_letter_offset), reads the next
 *    discarded transactions without one and numbers the new ones
 *    (halfstore_dead_letters: partition txn id modulo the topic's
 *    partitions, and a sequence); a job that numbered or recorded some
 *    waits for its WAL sync;
 *  - on the ticker's loop, once that job is done, txn_dead_write appends
 *    them, as idempotent batches of HALFSTORE_DEAD_PID with their
 *    sequences, in sequence order per partition, at most PIDSTATE_WINDOW
 *    per partition and step, a partition's later copies held back after a
 *    failed one.
 * Exactly once: a crash between an append and its record reads the copy
 * again after the restart, and the partition's idempotent-producer state
 * knows it (duplicate: its first offset).  A power loss that keeps a
 * record and loses the copy is repaired at start-up (txn_dead_recover).
 * The numbers and records belong to one topic (its topic id,
 * halfstore_dead_topic): the topic re-created, or another one named, and
 * the copies not yet recorded are numbered again for it, and the records
 * are not taken for its copies by the repair.
 * A missing topic is logged and retried; the transactions wait, still
 * DISCARDED and queryable.
 *
 * Owns: the transactions read and the copies written between two steps.
 * Threads: txn_dead_due, txn_dead_write and txn_dead_again on the ticker's
 * loop,
 * txn_dead_recover on main at start-up (before the ticker),
 * txn_dead_run on the coordinator thread inside the ticker's job.  The
 * ticker has one job in flight at most, and the job's completion orders
 * the two: the state is handed from one thread to the other, never used
 * by both at once.
 */
#ifndef SLUICE_TXN_DEAD_H
#define SLUICE_TXN_DEAD_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "server.h"
#include "topics.h"

/* Most transactions read (and copied) per step. */
#define TXN_DEAD_BATCH 100

/* Start-up, before the ticker: the topic's name (copied), "" = off. */
void txn_dead_init(const char *name);
/* True if the next ticker job should run a step: enabled, and copies to
 * record, more to do after the last step (txn_dead_again), or
 * TXN_DEAD_INTERVAL_MS since the last look.  Notes the topic's partition
 * count for the step's numbering. */
bool txn_dead_due(server *srv, int64_t mono_now);
/* Coordinator thread, in the ticker's job (when txn_dead_due said so).
 * Returns 1 if it numbered copies or recorded some (the job must then be
 * durable before txn_dead_write appends: a number before its copy, and
 * the copies appended but unrecorded never more than one step's), 0, or
 * -errno if SQLite failed (the job is rolled back: the copies stay to be
 * recorded at the next step). */
int txn_dead_run(sqlite3 *db);
/* The ticker's loop, after the job: appends what txn_dead_run read, or
 * keeps the copies to record if the job failed (ok false). */
void txn_dead_write(server *srv, bool ok, int64_t mono_now);
/* The ticker's loop, after txn_dead_write: true if that step made
 * progress and left copies to write (a full read, or copies held back by
 * the per-partition limit), so the ticker runs the next step at once
 * rather than at its next tick: at most PIDSTATE_WINDOW copies per
 * partition and step, one step a tick would copy 50 a second. */
bool txn_dead_again(void);
/* Start-up, main thread, after the logs are recovered and before the
 * ticker: for each partition of the dead-letter topic, copies recorded at
 * or beyond its log's end and numbered after the last sequence it holds
 * were lost by a power loss; they are copied again
 * (halfstore_dead_lost).  0 or -errno. */
int txn_dead_recover(sqlite3 *db, topics *reg);
/* Shutdown: frees what is held (the copies not yet recorded are written
 * again after the restart). */
void txn_dead_stop(void);

#endif
