/*
 * txn_dead.h — the dead-letter topic of transactions
 * (transaction.dead.letter.topic; RocketMQ's TRANS_CHECK_MAX_TIME_TOPIC):
 * every DISCARDED transaction's half message is appended there once, as a
 * plain batch whose records carry the original key, value and headers plus
 * sluice.txn.id, sluice.txn.group, sluice.txn.topic, sluice.txn.partition
 * and sluice.txn.reason (docs/transactions.md "Dead-letter topic").
 *
 * The check-back ticker (txn_check.c) drives it, one step per tick:
 *  - in the ticker's coordinator job, txn_dead_run records the copies the
 *    previous step wrote (txn_half.dead_letter_offset) and reads the next
 *    discarded transactions without one (halfstore_dead_letters);
 *  - on the ticker's loop, once that job is done, txn_dead_write appends
 *    them to the topic (partition: txn id modulo its partitions).
 * At least once: a crash between an append and its record appends that
 * copy again after the restart (consumers can tell by sluice.txn.id).  A
 * missing topic is logged and retried; the transactions wait, still
 * DISCARDED and queryable.
 *
 * Owns: the transactions read and the copies written between two steps.
 * Threads: txn_dead_due and txn_dead_write on the ticker's loop,
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

/* Most transactions read (and copied) per step. */
#define TXN_DEAD_BATCH 100

/* Start-up, before the ticker: the topic's name (copied), "" = off. */
void txn_dead_init(const char *name);
/* True if the next ticker job should run a step: enabled, and copies to
 * record, a full batch last time, or TXN_DEAD_INTERVAL_MS since the last
 * look. */
bool txn_dead_due(int64_t mono_now);
/* Coordinator thread, in the ticker's job (when txn_dead_due said so).
 * Returns 0, or -errno if SQLite failed (the job is rolled back: the
 * copies stay to be recorded at the next step). */
int txn_dead_run(sqlite3 *db);
/* The ticker's loop, after the job: appends what txn_dead_run read, or
 * keeps the copies to record if the job failed (ok false). */
void txn_dead_write(server *srv, bool ok, int64_t mono_now);
/* Shutdown: frees what is held (the copies not yet recorded are written
 * again after the restart). */
void txn_dead_stop(void);

#endif
