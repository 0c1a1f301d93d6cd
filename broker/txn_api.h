/*
 * txn_api.h — Sluice extension APIs for transactional half messages
 * (txn_api.c; formats in docs/protocol.md, design in docs/transactions.md).
 *
 * Threads: txn_api_init and txn_api_recover on main at start-up, before the
 * coordinator thread starts (they use its database directly); the handlers
 * on any loop.
 */
#ifndef SLUICE_TXN_API_H
#define SLUICE_TXN_API_H

#include <sqlite3.h>

#include "config.h"
#include "conn.h"
#include "topics.h"

enum {
	API_TXN_PREPARE = 1000,
	API_TXN_END = 1001,
	API_TXN_CHECK_POLL = 1002,
	API_TXN_LIST = 1003,
};

struct checksched_policy;

void txn_api_init(const config *cfg);
/* Appends (exactly once) every transaction left COMMITTING by a crash and
 * marks it COMMITTED.  Returns 0 or -1. */
int txn_api_recover(sqlite3 *db, topics *reg);

int api_txn_prepare(req *r, wire_rd *rd);
int api_txn_end(req *r, wire_rd *rd);
int api_txn_list(req *r, wire_rd *rd);
int api_txn_check_poll(req *r, wire_rd *rd);

/* txn_check.c: starts the check-back ticker on w (before the loops run);
 * stop after the loops and the coordinator have stopped. */
int txn_check_start(server *srv, worker *w);
void txn_check_stop(void);
/* A TxnEnd answered txn_id (its check, if out, is done). */
void txn_check_answered(int64_t txn_id);
/* The check policy from the broker configuration. */
const struct checksched_policy *txn_api_policy(void);

#endif
