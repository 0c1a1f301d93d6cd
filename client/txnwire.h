/*
 * txnwire.h — requests and responses of the transaction extension APIs
 * (TxnPrepare 1000, TxnEnd 1001, TxnCheckPoll 1002, TxnList 1003,
 * TxnDescribe 1004; byte layouts in docs/protocol.md), shared by the
 * transactional producer (txnprod.c) and the admin calls (admin.c).
 *
 * Each call is one blocking round trip on a connection the caller owns and
 * has connected (kconn rules: one thread at a time).  Returns
 * SLUICE_ERR_NO_ERROR, a broker error (positive Kafka code, errstr = the
 * broker's message when it sent one), or a local error (negative; on
 * SLUICE_ERR_TRANSPORT / TIMED_OUT the connection is closed).
 *
 * Decoded strings and bytes in txnwire_info / txnwire_check point into the
 * response buffer the caller receives (*resp) and keeps alive.
 */
#ifndef SLUICE_CLIENT_TXNWIRE_H
#define SLUICE_CLIENT_TXNWIRE_H

#include <stdint.h>

#include "kconn.h"
#include "sluice.h"

/* The highest version of an extension API both sides speak (cmax), or
 * SLUICE_ERR_UNSUPPORTED_FEATURE with "<what> is not supported by this
 * broker" in errstr. */
int txnwire_version(const struct kconn *c, int api, int cmax, char *errstr, size_t errstr_size);

struct txnwire_prepare {
	const char *group;
	const char *instance;   /* NULL/"" = none (v0 semantics) */
	const char *topic;
	int32_t partition;      /* -1: the broker picks */
	int32_t check_timeout_ms;
	const uint8_t *batch;   /* one RecordBatch v2; large ones are sent from here */
	size_t batch_len;
};

/* TxnPrepare.  *txn_id and *partition (-1 when a v0 broker picked) on
 * success. */
sluice_err_t txnwire_prepare(struct kconn *c, const struct txnwire_prepare *a, int timeout_ms,
			     int64_t *txn_id, int32_t *partition, char *errstr, size_t errstr_size);

/* The two halves of TxnPrepare for pipelined use (txnprod.c's asynchronous
 * calls): the request (NULL with *ver = the error, errstr set), and the
 * decoding of its response frame (ver = the version the request used). */
struct kreq *txnwire_prepare_req(struct kconn *c, const struct txnwire_prepare *a, int *ver,
				 char *errstr, size_t errstr_size);
sluice_err_t txnwire_prepare_resp(const struct kbuf *resp, int ver, int32_t req_partition,
				  int64_t *txn_id, int32_t *partition, char *errstr,
				  size_t errstr_size);

/* TxnEnd.  decision 0 unknown, 1 commit, 2 rollback, 3 resume; flags bit 0
 * operator; check_no: the check_count of the check this answers (as
 * TxnCheckPoll handed it out), -1 if it answers no check (sent from v1 on:
 * the broker then counts an "unknown" only as that check's answer).
 * *state (may be NULL) and *offset (may be NULL) on success. */
sluice_err_t txnwire_end(struct kconn *c, const char *group, int64_t txn_id, int decision,
			 int flags, int32_t check_no, int timeout_ms, int *state, int64_t *offset,
			 char *errstr, size_t errstr_size);

/* The two halves of TxnEnd, as for TxnPrepare. */
struct kreq *txnwire_end_req(struct kconn *c, const char *group, int64_t txn_id, int decision,
			     int flags, int32_t check_no, int *ver, char *errstr,
			     size_t errstr_size);
sluice_err_t txnwire_end_resp(const struct kbuf *resp, int *state, int64_t *offset, char *errstr,
			      size_t errstr_size);

/* One check handed out by TxnCheckPoll. */
struct txnwire_check {
	int64_t txn_id;
	wire_str topic;
	int32_t partition;
	int32_t check_count;
	wire_str records;
};

/* TxnCheckPoll: waits up to max_wait_ms on the broker.  On success *resp
 * holds the response (caller unrefs) and *checks an array of *n entries
 * pointing into it (caller frees the array). */
sluice_err_t txnwire_check_poll(struct kconn *c, const char *group, const char *instance,
				int max_wait_ms, int max_txns, int timeout_ms, struct kbuf **resp,
				struct txnwire_check **checks, size_t *n);

/* TxnList / TxnDescribe into the public sluice_txn_info_t, with every string
 * and the message copied into one allocation per entry (freed by
 * sluice_txn_infos_destroy). */
sluice_err_t txnwire_list(struct kconn *c, const char *group, unsigned state_mask, int limit,
			  int64_t after_txn_id, int timeout_ms, sluice_txn_info_t **txns, size_t *n,
			  char *errstr, size_t errstr_size);
sluice_err_t txnwire_describe(struct kconn *c, int64_t txn_id, int timeout_ms,
			      sluice_txn_info_t **txn, char *errstr, size_t errstr_size);

/* The first record of a batch as a check sees it.  Header names are copied
 * into names (NUL-terminated, at most nhdr_cap headers).  Returns 0 or -1
 * (compressed or malformed batch). */
int txnwire_first_record(const uint8_t *batch, size_t len, sluice_txn_check_t *out,
			 sluice_header_t *hdrs, size_t nhdr_cap, char *names, size_t names_cap);

#endif
