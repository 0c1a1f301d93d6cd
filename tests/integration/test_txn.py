#!/usr/bin/env python3
"""Transactional half messages (extension APIs 1000 TxnPrepare, 1001 TxnEnd,
1003 TxnList; docs/protocol.md): a prepared message is invisible; commit
appends it exactly once (a second commit appends nothing — RocketMQ issue
#5574); rollback never shows it; opposite or unknown decisions are errors
that change nothing; a commit interrupted by a crash (left COMMITTING in
sluice.db) is appended exactly once at the next start.

Env: SLUICED.
"""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, ERR_NONE, Writer, build_batch,  # noqa: E402
                     check, check_eq, fetch_all, run)

API_TXN_PREPARE = 1000
API_TXN_END = 1001
API_TXN_LIST = 1003
ERR_INVALID_TXN_STATE = 48
ERR_TXN_NOT_FOUND = 105
COMMIT, ROLLBACK, UNKNOWN = 1, 2, 0
ST_PENDING, ST_COMMITTING, ST_COMMITTED, ST_ROLLED_BACK = 0, 1, 2, 3


def prepare(c, group, topic, partition, records, timeout_ms=0):
    w = Writer().string(group).string(topic).i32(partition).i32(timeout_ms)
    w.bytes_(build_batch(records))
    r = c.request(API_TXN_PREPARE, 0, w.getvalue())
    err = r.i16()
    msg = r.string()
    txn = r.i64()
    check_eq(err, ERR_NONE, "TxnPrepare error (%s)" % msg)
    return txn


def end(c, group, txn, decision, operator=False):
    w = Writer().string(group).i64(txn).i8(decision).i8(1 if operator else 0)
    r = c.request(API_TXN_END, 0, w.getvalue())
    err = r.i16()
    r.string()
    state = r.i8()
    offset = r.i64()
    return err, state, offset


def listing(c, group=None):
    w = Writer().string(group).i32(0).i32(100).i64(0)
    r = c.request(API_TXN_LIST, 0, w.getvalue())
    check_eq(r.i16(), ERR_NONE, "TxnList error")
    out = {}
    for _ in range(r.i32()):
        txn = r.i64()
        grp = r.string()
        topic = r.string()
        part = r.i32()
        state = r.i8()
        r.i64()
        r.i64()
        checks = r.i32()
        r.i64()
        off = r.i64()
        r.string()
        out[txn] = (grp, topic, part, state, checks, off)
    return out


def values(addr, topic):
    return [r.value for r in fetch_all(addr, topic, 0)]


def test_commit_rollback_exactly_once():
    b = Broker(name="txn")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        t1 = prepare(c, "order-svc", "orders", 0, [(b"o1", b"order-1 created"),
                                                   (b"o1", b"order-1 items")])
        check_eq(values(b.addr, "orders"), [], "a half message is invisible")
        err, state, off = end(c, "order-svc", t1, COMMIT)
        check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 0), "commit")
        check_eq(values(b.addr, "orders"),
                 [b"order-1 created", b"order-1 items"], "committed once")
        err, state, off = end(c, "order-svc", t1, COMMIT)
        check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 0),
                 "second commit: success, same offset")
        check_eq(len(values(b.addr, "orders")), 2, "nothing appended twice")
        err, _, _ = end(c, "order-svc", t1, ROLLBACK)
        check_eq(err, ERR_INVALID_TXN_STATE, "rollback after commit")

        t2 = prepare(c, "order-svc", "orders", 0, [(b"o2", b"order-2")])
        err, state, _ = end(c, "order-svc", t2, UNKNOWN)
        check_eq((err, state), (ERR_NONE, ST_PENDING), "unknown keeps it")
        err, state, _ = end(c, "order-svc", t2, ROLLBACK)
        check_eq((err, state), (ERR_NONE, ST_ROLLED_BACK), "rollback")
        check_eq(end(c, "order-svc", t2, ROLLBACK)[0], ERR_NONE,
                 "second rollback: success")
        check_eq(end(c, "order-svc", t2, COMMIT)[0], ERR_INVALID_TXN_STATE,
                 "commit after rollback")
        check_eq(end(c, "order-svc", 987654, COMMIT)[0], ERR_TXN_NOT_FOUND,
                 "unknown transaction")
        check_eq(len(values(b.addr, "orders")), 2, "rolled back never visible")
        ls = listing(c, "order-svc")
        check_eq(ls[t1][3], ST_COMMITTED, "listed committed")
        check_eq(ls[t2][3], ST_ROLLED_BACK, "listed rolled back")
        check_eq(ls[t2][4], 1, "the unknown answer counted as a check")
    b.restart()
    with Conn(b.addr) as c:
        check_eq(end(c, "order-svc", t1, COMMIT)[2], 0,
                 "commit after restart: same offset")
        check_eq(len(values(b.addr, "orders")), 2, "still once after restart")


def test_crash_between_commit_steps():
    """A commit left COMMITTING (the broker died between the SQLite step and
    recording the offset) is appended exactly once at start-up, whether the
    append had happened or not."""
    b = Broker(name="txn-crash")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        done = prepare(c, "g", "orders", 0, [(b"a", b"appended-before-crash")])
        check_eq(end(c, "g", done, COMMIT)[0], ERR_NONE, "commit")
        lost = prepare(c, "g", "orders", 0, [(b"b", b"never-appended")])
    b.kill9()
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    # the appended one: as if the offset had not been recorded (its batch
    # is already dropped from sluice.db, as after any recorded commit)
    db.execute("UPDATE txn_half SET state = 'COMMITTING', log_offset = NULL "
               "WHERE txn_id = ?", (done,))
    # the other: as if the broker died right after the SQLite commit step
    seq = db.execute("SELECT next_seq FROM txn_seq WHERE topic = 'orders' "
                     "AND partition = 0").fetchone()[0]
    db.execute("UPDATE txn_half SET state = 'COMMITTING', commit_seq = ?, ended_ms = 1 "
               "WHERE txn_id = ?", (seq, lost))
    db.execute("UPDATE txn_seq SET next_seq = next_seq + 1 "
               "WHERE topic = 'orders' AND partition = 0")
    db.commit()
    db.close()
    b.start()
    vals = values(b.addr, "orders")
    check_eq(vals, [b"appended-before-crash", b"never-appended"],
             "each commit exactly once after recovery")
    with Conn(b.addr) as c:
        ls = listing(c, "g")
        check_eq((ls[done][3], ls[lost][3]), (ST_COMMITTED, ST_COMMITTED),
                 "both recorded COMMITTED")
        # the first had recorded nothing but was appended: its batch is
        # gone from sluice.db, so it is not appended again (offset unknown)
        check_eq(ls[done][5], -1, "offset of the already appended commit")
        check_eq(ls[lost][5], 1, "offset of the recovered commit")
        check_eq(end(c, "g", lost, COMMIT)[2], 1, "retried end: same offset")
    check_eq(len(values(b.addr, "orders")), 2, "nothing more")


API_TXN_CHECK_POLL = 1002


def check_poll(c, group, max_wait_ms, max_txns=100):
    w = Writer().string(group).i32(max_wait_ms).i32(max_txns)
    r = c.request(API_TXN_CHECK_POLL, 0, w.getvalue())
    check_eq(r.i16(), ERR_NONE, "TxnCheckPoll error")
    out = []
    for _ in range(r.i32()):
        txn = r.i64()
        topic = r.string()
        part = r.i32()
        checks = r.i32()
        records = r.bytes_()
        out.append((txn, topic, part, checks, records))
    return out


def test_check_back():
    b = Broker(name="txn-check", sets={"transaction.timeout.ms": 300})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
    # the producer prepares and dies before ending anything
    with Conn(b.addr) as dead:
        t_commit = prepare(dead, "shop", "orders", 0, [(b"k", b"to-commit")])
        t_rollback = prepare(dead, "shop", "orders", 0, [(b"k", b"to-rollback")])
        t_unknown = prepare(dead, "shop", "orders", 0, [(b"k", b"unknown")])
    with Conn(b.addr) as other:
        got = {}
        deadline = 20
        while len(got) < 3 and deadline > 0:
            for txn, topic, part, checks, rec in check_poll(other, "shop", 1000):
                got[txn] = (topic, part, checks, len(rec) > 0)
            deadline -= 1
        check_eq(sorted(got), sorted([t_commit, t_rollback, t_unknown]),
                 "every pending transaction offered to the group's producer")
        check(all(v[3] for v in got.values()), "the half message comes along")
        check_eq(end(other, "shop", t_commit, COMMIT)[0], ERR_NONE, "commit")
        check_eq(end(other, "shop", t_rollback, ROLLBACK)[0], ERR_NONE,
                 "rollback")
        check_eq(end(other, "shop", t_unknown, UNKNOWN)[1], ST_PENDING,
                 "unknown: still pending")
        # nothing else is due now (the unknown one waits for its backoff)
        check_eq(check_poll(other, "shop", 300), [], "no check twice at once")
        check_eq(values(b.addr, "orders"), [b"to-commit"],
                 "check-back outcome: committed once, rolled back never")
        ls = listing(other, "shop")
        check_eq(ls[t_unknown][3:5], (ST_PENDING, 1), "unknown counted")


if __name__ == "__main__":
    run([
        ("commit_rollback_exactly_once", test_commit_rollback_exactly_once, 60),
        ("crash_between_commit_steps", test_crash_between_commit_steps, 60),
        ("check_back", test_check_back, 60),
    ])
