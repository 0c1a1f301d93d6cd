/*
 * txn_marker.h — the commit marker: a one-record control batch that the
 * broker writes right before each transaction commit it appends, in the
 * same write, naming the transaction and its commit sequence
 * (docs/transactions.md "Commit markers"; layout in docs/storage.md).
 *
 * Why: a commit's log copy can be on disk while its COMMITTING row is not
 * (the answer waits for the log's sync only, and the kernel may write the
 * log back at any time).  After such a power loss the row is PENDING again;
 * start-up finds the marker + commit pair in the log tail and records the
 * transaction COMMITTED instead of letting its check-back append it twice.
 * The commit batch alone cannot say which transaction it was: two pending
 * transactions may carry identical records.
 *
 * Consumers skip it as they skip Kafka's transaction markers: the control
 * bit is set, the key is a COMMIT control key (version 0, type 1), which
 * librdkafka and the Java client ignore; the value starts as Kafka's
 * end-transaction marker (version, coordinator epoch) and continues with
 * "SLTX", txn_id and commit_seq.  Producer id, epoch and sequence are -1,
 * so idempotent-producer state never sees it.
 *
 * Owns nothing; pure functions on the caller's buffer, any thread.
 */
#ifndef SLUICE_TXN_MARKER_H
#define SLUICE_TXN_MARKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TXN_MARKER_SIZE 98

/* Writes the marker of (txn_id, commit_seq) into out (TXN_MARKER_SIZE
 * bytes), CRC included, base offset 0 (the log assigns it), both
 * timestamps ts (the commit batch's, so the time index is not disturbed). */
void txn_marker_build(uint8_t out[TXN_MARKER_SIZE], int64_t txn_id, int64_t commit_seq, int64_t ts);

/* True if the batch p[0..len) is a commit marker with a good CRC; then
 * *txn_id and *commit_seq are set. */
bool txn_marker_parse(const uint8_t *p, size_t len, int64_t *txn_id, int64_t *commit_seq);

#endif
