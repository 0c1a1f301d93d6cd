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
	API_TXN_LIST = 1003,
};

void txn_api_init(const config *cfg);
/* Appends (exactly once) every transaction left COMMITTING by a crash and
 * marks it COMMITTED.  Returns 0 or -1. */
int txn_api_recover(sqlite3 *db, topics *reg);

int api_txn_prepare(req *r, wire_rd *rd);
int api_txn_end(req *r, wire_rd *rd);
int api_txn_list(req *r, wire_rd *rd);

#endif
