#!/usr/bin/env python3
"""Transactional half messages (extension APIs 1000 TxnPrepare, 1001 TxnEnd,
1002 TxnCheckPoll, 1003 TxnList, 1004 TxnDescribe; docs/protocol.md): a
prepared message is invisible; commit appends it exactly once (a second
commit appends nothing — RocketMQ issue #5574); rollback never shows it;
opposite or unknown decisions are errors that change nothing; a commit
interrupted by a crash (left COMMITTING in sluice.db) is appended exactly
once at the next start.  Version 1 of TxnPrepare / TxnCheckPoll (producer
instance names: checks go to the preparing instance on whichever
connection it polls; a second poll of an instance replaces the first),
resume and TxnDescribe, fsync durability of a commit (the answer waits for
the log's fdatasync, with the SLOWSYNC shim; recovery syncs before
recording), the purge of old ended transactions, DeleteTopics
discarding a topic's half messages, and producers that vanish
mid-request.

Env: SLUICED, SLOWSYNC (fsync case; empty = skipped).
"""
import os
import re
import socket
import subprocess
import sqlite3
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_ALTER_CONFIGS, Broker, Conn, ERR_NONE, Writer,  # noqa: E402
                     build_batch,
                     check, check_eq, fetch_all, produce_body, run, run_cmd,
                     walk_segment)
from harness import (API_TXN_CHECK_POLL as API_POLL,  # noqa: E402
                     API_TXN_END as API_END, API_TXN_PREPARE as API_PREPARE,
                     ERR_INVALID_REQUEST, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                     TXN_COMMIT, TXN_DISCARDED, TXN_PENDING, TXN_RESUME,
                     TXN_ROLLBACK, log, need_program, parse_txn_check_poll,
                     parse_txn_end, parse_txn_prepare, pipeline,
                     txn_check_poll, txn_check_poll_body, txn_describe,
                     txn_end, txn_end_body, txn_instance_id, txn_list, txn_prepare,
                     txn_prepare_body, wait_for)
from harness import crc32c, encode_record, walk_segment  # noqa: E402
from harness import dead_letter_records, frame, kept_batch, request_header  # noqa: E402

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


def end(c, group, txn, decision, operator=False, check_no=None):
    """TxnEnd v0, or v1 naming the check it answers (check_no: its
    check_count as handed out, -1 for none)."""
    w = Writer().string(group).i64(txn).i8(decision).i8(1 if operator else 0)
    if check_no is not None:
        w.i32(check_no)
    r = c.request(API_TXN_END, 0 if check_no is None else 1, w.getvalue())
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
        # offset 0 is the commit marker (docs/transactions.md)
        err, state, off = end(c, "order-svc", t1, COMMIT)
        check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 1), "commit")
        check_eq(values(b.addr, "orders"),
                 [b"order-1 created", b"order-1 items"], "committed once")
        err, state, off = end(c, "order-svc", t1, COMMIT)
        check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 1),
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
        check_eq(ls[t2][4], 0, "an unknown end nobody asked for: not a check")
    b.restart()
    with Conn(b.addr) as c:
        check_eq(end(c, "order-svc", t1, COMMIT)[2], 1,
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
    # the appended one: as if the offset had not been recorded, its batch
    # already dropped from sluice.db (as once the log is synced past it)
    db.execute("UPDATE txn_half SET state = 'COMMITTING', log_offset = NULL, "
               "batch = NULL WHERE txn_id = ?", (done,))
    # the other: as if the broker died right after the SQLite commit step
    seq = db.execute("SELECT next_seq FROM txn_seq WHERE topic = 'orders' "
                     "AND partition = 0").fetchone()[0]
    # (ended now: an old ended_ms would be purged by the retention timer)
    db.execute("UPDATE txn_half SET state = 'COMMITTING', commit_seq = ?, ended_ms = ? "
               "WHERE txn_id = ?", (seq, int(time.time() * 1000), lost))
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
        check_eq(ls[lost][5], 3, "offset of the recovered commit (after its marker at 2)")
        check_eq(end(c, "g", lost, COMMIT)[2], 3, "retried end: same offset")
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



def test_unknown_counts_once_per_check():
    """An "unknown" answer counts as a check only while a check of the
    transaction is out.  A retried or late one (or one nobody asked for)
    counted too: with transaction.check.max 2, one check answered twice
    discarded the transaction.  Now it stays PENDING with one check."""
    b = Broker(name="txn-unknown-once",
               sets={"transaction.timeout.ms": 300, "transaction.check.max": 2})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        t = prepare(c, "shop", "orders", 0, [(b"k", b"v")])
        # unasked: not counted
        check_eq(end(c, "shop", t, UNKNOWN)[:2], (ERR_NONE, ST_PENDING),
                 "an unasked unknown")
        got = []
        for _ in range(20):
            got = check_poll(c, "shop", 1000)
            if got:
                break
        check_eq([x[0] for x in got], [t], "the check")
        for k in range(2):
            check_eq(end(c, "shop", t, UNKNOWN)[:2], (ERR_NONE, ST_PENDING),
                     "unknown answer %d" % k)
        d = txn_describe(c, t)
        check_eq((d["state"], d["check_count"]), (TXN_PENDING, 1),
                 "one check, answered twice")
    b.stop()


def test_late_unknown_is_not_the_next_checks():
    """TxnEnd v1 names the check it answers.  An "unknown" for check 1
    that arrives after its lease ran out (counted as no answer) while
    check 2 is out changes nothing; v0 took it for check 2's answer, so
    check 2's own answer was then ignored.  A v1 "unknown" that names no
    check (-1, as a local transaction's) never counts."""
    b = Broker(name="txn-late-unknown", sets={
        "transaction.timeout.ms": 200, "transaction.check.lease.ms": 500,
        "transaction.check.backoff.ms": 300, "transaction.check.max": 5})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        t = prepare(c, "late", "orders", 0, [(b"k", b"v")])
        checks = []
        t0 = time.monotonic()
        while len(checks) < 2 and time.monotonic() - t0 < 15:
            checks += [x[3] for x in check_poll(c, "late", 500) if x[0] == t]
        check_eq(checks, [0, 1], "check 1 unanswered (its lease ran out), then "
                 "check 2 (check_count as handed out)")
        check_eq(end(c, "late", t, UNKNOWN, check_no=0)[:2], (ERR_NONE, ST_PENDING),
                 "the late unknown of check 1")
        check_eq(end(c, "late", t, UNKNOWN, check_no=-1)[:2], (ERR_NONE, ST_PENDING),
                 "an unknown of no check")
        check_eq(txn_describe(c, t)["check_count"], 1,
                 "neither counted: only the lease of check 1 did")
        check_eq(end(c, "late", t, UNKNOWN, check_no=1)[:2], (ERR_NONE, ST_PENDING),
                 "check 2's own unknown")
        check_eq(txn_describe(c, t)["check_count"], 2, "check 2 answered: counted")
        check_eq(end(c, "late", t, UNKNOWN, check_no=1)[:2], (ERR_NONE, ST_PENDING),
                 "check 2's unknown again")
        check_eq(txn_describe(c, t)["check_count"], 2, "a retried answer is not counted")
        check_eq(end(c, "late", t, UNKNOWN, check_no=-2)[0], ERR_INVALID_REQUEST,
                 "check_count below -1")
        check_eq(end(c, "late", t, COMMIT, check_no=0)[:2], (ERR_NONE, ST_COMMITTED),
                 "a commit ends it, whatever check it names")
    check_eq(values(b.addr, "orders"), [b"v"], "committed once")
    b.stop()


def test_busy_poller_gets_the_rest_soon():
    """A transaction leased for a group whose only poller is busy between
    two polls (CHECKSCHED_E_BUSY) is released and offered again within a
    few ticks — not after its 30 s lease — and that does not count as a
    check (check_count still 0 when it is finally handed out)."""
    b = Broker(name="txn-busy-poller")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        txns = [prepare(c, "busy", "orders", 0, [(b"k", b"v%d" % i)], timeout_ms=100)
                for i in range(6)]
    with Conn(b.addr) as poller:
        first = check_poll(poller, "busy", 3000, max_txns=1)
        check_eq(len(first), 1, "one check in the first poll (max_txns 1)")
        # busy: registered, no parked poll, while the ticker leases the
        # other five (each tick, 100 ms)
        time.sleep(1.0)
        got = {first[0][0]: first[0][3]}
        check_eq(end(poller, "busy", first[0][0], COMMIT)[0], ERR_NONE, "commit")
        t0 = time.monotonic()
        while len(got) < 6 and time.monotonic() - t0 < 8:
            for txn, _, _, checks, _ in check_poll(poller, "busy", 500):
                check(txn not in got, "txn %d offered twice" % txn)
                got[txn] = checks
                check_eq(end(poller, "busy", txn, COMMIT)[0], ERR_NONE, "commit")
        took = time.monotonic() - t0
        check_eq(sorted(got), sorted(txns), "every transaction checked, well before "
                 "the 30 s lease (%.1f s)" % took)
        check_eq(set(got.values()), {0}, "a released lease is not a check")
    check_eq(sorted(values(b.addr, "orders")), sorted(b"v%d" % i for i in range(6)),
             "all six committed once")


def test_check_lease_and_backoff_keys():
    """transaction.check.lease.ms / .backoff.ms: a check handed out and
    never answered counts as unanswered after the lease (0.5 s here, not
    30 s) and is offered again after the backoff (0.3 s), with check_count
    1; a backoff cap below the backoff is refused at start, with the key
    named; the keys are listed by --help and --print-config."""
    b = Broker(name="txn-lease-keys", sets={
        "transaction.timeout.ms": 200, "transaction.check.lease.ms": 500,
        "transaction.check.backoff.ms": 300, "transaction.check.max.outstanding": 50})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        txn = prepare(c, "lease", "orders", 0, [(b"k", b"v")])
    with Conn(b.addr) as poller:
        first = check_poll(poller, "lease", 3000)
        check_eq([x[0] for x in first], [txn], "first check")
        t0 = time.monotonic()
        again = []
        while not again and time.monotonic() - t0 < 10:
            again = check_poll(poller, "lease", 500)  # the first is never answered
        took = time.monotonic() - t0
        check_eq([(x[0], x[3]) for x in again], [(txn, 1)],
                 "offered again after lease + backoff, counted once")
        check(0.6 <= took < 3.0, "lease 0.5 s + backoff 0.3 s, not 30 s: %.2f s" % took)
        check_eq(end(poller, "lease", txn, COMMIT)[0], ERR_NONE, "commit")
    exe = os.environ["SLUICED"]
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10).stdout
    for key in ("transaction.check.lease.ms", "transaction.check.backoff.ms",
                "transaction.check.backoff.max.ms", "transaction.check.max.outstanding"):
        check(key in out, "%s in --help" % key)
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([exe, "-d", d, "-l", "127.0.0.1:0",
                            "--set", "transaction.check.backoff.ms=1000",
                            "--set", "transaction.check.backoff.max.ms=500"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode != 0, "a cap below the backoff is refused")
        check("transaction.check.backoff.max.ms" in r.stderr, "the error names the key: %r"
              % r.stderr[-300:])


# ---- concurrent commits of one partition --------------------------------

def in_threads(fn, n, timeout=60):
    """Runs fn(0) .. fn(n - 1) on n threads at once and waits for them."""
    threads = [threading.Thread(target=fn, args=(k,), daemon=True)
               for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)


def test_commits_while_durability_flips():
    """A page-cache topic's commits are appended and answered right after
    their SQLite commit, an fsync topic's only after its WAL sync
    (coord_job.early).  A partition's commits must still reach the log in
    commit sequence order when its topic changes durability under load: a
    lower sequence appended after a higher one reads as "appended long ago"
    and is acknowledged but lost.  600 commits from six connections while
    another flips the topic between fsync and pagecache every few ms: each
    is answered at an offset and is in the log exactly once there."""
    n, conns = 600, 6
    b = Broker(name="txn-durability-flips", sets={"num.network.threads": 2})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("f", 1)
        bodies = [txn_prepare_body("g", "f", 0, build_batch([(None, b"v%04d" % i)]),
                                   version=0) for i in range(n)]
        txns = [parse_txn_prepare(r, 0)[2]
                for r in pipeline(c, API_PREPARE, 0, bodies, window=100)]
    answers = {}
    done = threading.Event()
    flips = [0]

    def flipper():
        with Conn(b.addr) as c:
            while not done.is_set():
                mode = ("fsync", "pagecache")[flips[0] % 2]
                w = Writer().i32(1).i8(2).string("f").i32(1)
                w.string("durability").string(mode).i8(0)
                r = c.request(API_ALTER_CONFIGS, 0, w.getvalue())
                r.i32()
                r.i32()
                check_eq(r.i16(), ERR_NONE, "AlterConfigs durability=" + mode)
                flips[0] += 1
                time.sleep(0.003)

    def committer(k):
        mine = txns[k::conns]
        with Conn(b.addr) as c:
            for i, r in enumerate(pipeline(
                    c, API_END, 0, [txn_end_body("g", t, TXN_COMMIT) for t in mine],
                    window=8)):
                answers[mine[i]] = parse_txn_end(r)
    fl = threading.Thread(target=flipper, daemon=True)
    fl.start()
    in_threads(committer, conns)
    done.set()
    fl.join(10)
    log("  %d durability flips during the commits" % flips[0])
    check(flips[0] >= 4, "the durability flipped while committing")
    check_eq(len(answers), n, "every commit answered")
    bad = [(t, a) for t, a in answers.items()
           if a[:3] != (ERR_NONE, None, ST_COMMITTED) or a[3] < 0]
    check_eq(bad[:5], [], "commits not answered COMMITTED at an offset")
    recs = fetch_all(b.addr, "f", 0)
    check_eq(sorted(r.value for r in recs), [b"v%04d" % i for i in range(n)],
             "each committed message exactly once")
    at = {r.value: r.offset for r in recs}
    for i in range(n):
        check_eq(answers[txns[i]][3], at[b"v%04d" % i], "offset answered for txn %d" % txns[i])
    b.stop()


def test_concurrent_commits_all_land():
    """Commits of two partitions from eight connections (both event loops)
    at once, every end sent twice back to back (a client retrying before
    the first answer): every acknowledged commit is in the log exactly once
    with the offset it was answered, and both ends of a transaction answer
    the same.  (Appends made on the requests' loops could land out of
    commit_seq order; the lower sequence was then taken as "appended long
    ago" and its commit acknowledged with offset -1 but lost — 595 of 2000
    in one run before the appends moved to the coordinator thread.  The two
    ends of one transaction usually share a coordinator round, whose
    commits are appended with one write per partition — across segment
    rolls here: 2 KiB segments —, and the second must follow the first,
    not be appended again.)"""
    n, conns, parts = 1000, 8, 2
    b = Broker(name="txn-concurrent", sets={"num.network.threads": 2})
    b.start()
    with Conn(b.addr) as c:
        # small segments: a round's appends cross segment rolls
        c.create_topic("s", parts, configs={"segment.bytes": 2048})
        bodies = [txn_prepare_body("g", "s", i % parts,
                                   build_batch([(None, b"m%04d" % i)]),
                                   version=0)
                  for i in range(n)]
        txns = [parse_txn_prepare(r, 0)[2]
                for r in pipeline(c, API_PREPARE, 0, bodies, window=200)]
    answers = {}

    def committer(k):
        mine = [t for t in txns[k::conns] for _ in range(2)]
        with Conn(b.addr) as c:
            for i, r in enumerate(pipeline(
                    c, API_END, 0,
                    [txn_end_body("g", t, TXN_COMMIT) for t in mine],
                    window=16)):
                answers.setdefault(mine[i], []).append(parse_txn_end(r))
    in_threads(committer, conns)
    check_eq(len(answers), n, "every commit answered")
    # the second end: the first's offset, or -1 ("appended, offset no
    # longer known": more than pidstate's window of 5 commits of the
    # partition were appended in between and the COMMITTED mark with the
    # offset is not recorded yet)
    bad = [(t, a) for t, a in answers.items()
           if len(a) != 2 or a[0][:3] != (ERR_NONE, None, ST_COMMITTED)
           or a[0][3] < 0 or a[1][:3] != a[0][:3]
           or a[1][3] not in (a[0][3], -1)]
    check_eq(bad[:5], [], "ends not both answered COMMITTED at its offset")
    for p in range(parts):
        recs = fetch_all(b.addr, "s", p)
        check_eq(sorted(r.value for r in recs),
                 [b"m%04d" % i for i in range(p, n, parts)],
                 "partition %d: each committed message exactly once" % p)
        at = {r.value: r.offset for r in recs}
        for i in range(p, n, parts):
            check_eq(answers[txns[i]][0][3], at[b"m%04d" % i],
                     "offset answered for txn %d" % txns[i])
        segs = [f for f in os.listdir(os.path.join(b.data_dir, "s-%d" % p))
                if f.endswith(".log")]
        check(len(segs) >= 10, "partition %d rolled its segments: %d"
              % (p, len(segs)))


# ---- version 1: partitions and producer instances ----------------------

def origin_of(b, txn):
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    try:
        return db.execute("SELECT origin FROM txn_half WHERE txn_id = ?",
                          (txn,)).fetchone()[0]
    finally:
        db.close()


def test_prepare_v1_partition_and_origin():
    b = Broker(name="txn-v1")
    b.start()
    with Conn(b.addr) as c:
        _, ranges = c.api_versions(0)
        check_eq((ranges[1000], ranges[1001], ranges[1002], ranges[1003],
                  ranges[1004]), ((0, 1), (0, 1), (0, 1), (0, 1), (0, 1)),
                 "ApiVersions of the transaction APIs")
        c.create_topic("rr", 3)
        got = []
        for i in range(6):
            err, msg, txn, part = txn_prepare(c, "g", "rr", -1,
                                              [(None, b"rr%d" % i)],
                                              instance="inst-A")
            check_eq(err, ERR_NONE, "prepare v1 (%s)" % msg)
            got.append((txn, part))
        parts = [p for _, p in got]
        check_eq(sorted(parts), [0, 0, 1, 1, 2, 2],
                 "partition -1: the broker picks round-robin: %r" % parts)
        check(all(parts[i] != parts[i + 1] for i in range(5)),
              "round-robin, not the same partition twice in a row: %r"
              % parts)
        err, _, fixed, part = txn_prepare(c, "g", "rr", 2, [(None, b"fixed")])
        check_eq((err, part), (ERR_NONE, 2), "an explicit partition is kept")
        err, _, v0, part = txn_prepare(c, "g", "rr", 1, [(None, b"v0")],
                                       version=0)
        check_eq((err, part), (ERR_NONE, None), "v0: no partition field")
        err, _, _, part = txn_prepare(c, "g", "nope", -1, [(None, b"x")])
        check_eq((err, part), (ERR_UNKNOWN_TOPIC_OR_PARTITION, -1),
                 "an error answers partition -1")
        for txn, part in got:
            check_eq(txn_end(c, "g", txn, TXN_COMMIT)[0], ERR_NONE, "commit")
        check_eq(txn_end(c, "g", fixed, TXN_COMMIT)[0], ERR_NONE, "commit")
        for p in range(3):
            want = sorted([b"rr%d" % i for i, (_, pp) in enumerate(got)
                           if pp == p] + ([b"fixed"] if p == 2 else []))
            check_eq(sorted(values_p(b.addr, "rr", p)), want,
                     "each message in the partition the prepare answered")
        # origins: the FNV-1a id of the instance; a connection otherwise
        check_eq(origin_of(b, got[0][0]), txn_instance_id("inst-A"),
                 "origin of an instance's transaction")
        err, _, empty, _ = txn_prepare(c, "g", "rr", 0, [(None, b"e")],
                                       instance="")
        for t in (fixed, v0, empty):
            o = origin_of(b, t)
            check(o != 0 and o % 8 == 0, "origin of a transaction without "
                  "instance is its (8-aligned) connection: %#x" % o)


def values_p(addr, topic, partition):
    return [r.value for r in fetch_all(addr, topic, partition)]


class Poller:
    """A thread long-polling checks for a group on its own connection until
    stopped; records (monotonic time, txn_id) of every check it gets."""

    def __init__(self, addr, group, instance=None, max_wait_ms=5000):
        self.conn = Conn(addr)
        self.group, self.instance, self.max_wait = group, instance, max_wait_ms
        self.got = []
        self.polls = 0
        self.error = None
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            while not self.stop:
                err, checks = txn_check_poll(self.conn, self.group,
                                             self.max_wait, 100,
                                             instance=self.instance)
                check_eq(err, ERR_NONE, "TxnCheckPoll")
                now = time.monotonic()
                self.got += [(now, x[0]) for x in checks]
                self.polls += 1
        except Exception as e:  # noqa: BLE001 — reported by join()
            if not self.stop:
                self.error = e

    def ids(self):
        return [t for _, t in self.got]

    def join(self):
        self.stop = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the recv
        except OSError:
            pass
        self.conn.close()
        self.th.join(10)
        if self.error:
            raise self.error


def test_checks_go_to_the_preparing_instance():
    """A client prepares on pooled connections (closed since) and polls on a
    separate one: the checks of its transactions go to it, not to the other
    instance polling the group; without an instance they round-robin."""
    b = Broker(name="txn-instance", sets={"transaction.timeout.ms": 400})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
    pa = Poller(b.addr, "shop", instance="inst-A")
    pb = Poller(b.addr, "shop", instance="inst-B")
    try:
        time.sleep(0.3)  # both parked
        mine = []
        for k in range(2):
            with Conn(b.addr) as pooled:
                for i in range(3):
                    err, _, t, _ = txn_prepare(pooled, "shop", "o", 0,
                                               [(None, b"a%d%d" % (k, i))],
                                               instance="inst-A")
                    check_eq(err, ERR_NONE, "prepare")
                    mine.append(t)
        wait_for(lambda: len(pa.got) + len(pb.got) >= 6, 10,
                 what="the six checks")
        check_eq(sorted(pa.ids()), sorted(mine),
                 "every check of inst-A's transactions went to inst-A")
        check_eq(pb.ids(), [], "nothing went to inst-B")
        anon = []
        with Conn(b.addr) as pooled:
            for i in range(4):
                anon.append(txn_prepare(pooled, "shop", "o", 0,
                                        [(None, b"n%d" % i)])[2])
        wait_for(lambda: len(pa.got) + len(pb.got) >= 10, 10,
                 what="the four checks without instance")
        a_anon = [t for t in pa.ids() if t in anon]
        b_anon = [t for t in pb.ids() if t in anon]
        check_eq(sorted(a_anon + b_anon), sorted(anon), "each checked once")
        check(a_anon and b_anon, "without instance the group's pollers take "
              "turns: A %r, B %r" % (a_anon, b_anon))
    finally:
        pa.join()
        pb.join()
    with Conn(b.addr) as c:
        for t in mine + anon:
            check_eq(txn_end(c, "shop", t, TXN_COMMIT)[0], ERR_NONE,
                     "any connection may answer")
    check_eq(len(values(b.addr, "o")), 10, "ten commits")


def test_second_poll_of_an_instance_replaces_the_first():
    b = Broker(name="txn-repoll", sets={"transaction.timeout.ms": 300})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
    x, y = Conn(b.addr), Conn(b.addr)
    res = {}

    def first_poll():
        t0 = time.monotonic()
        res["x"] = txn_check_poll(x, "grp", 10000, 10, instance="I")
        res["dt"] = time.monotonic() - t0
    th = threading.Thread(target=first_poll, daemon=True)
    th.start()
    time.sleep(0.3)
    corr = y.send_request(API_POLL, 1, txn_check_poll_body("grp", 8000, 10,
                                                            instance="I"))
    th.join(5)
    check("dt" in res, "the replaced poll was not answered")
    check_eq(res["x"], (ERR_NONE, []), "the replaced poll: empty")
    check(res["dt"] < 3, "the replaced poll answered after %.2f s" % res["dt"])
    with Conn(b.addr) as pooled:
        t1 = txn_prepare(pooled, "grp", "o", 0, [(None, b"1")],
                         instance="I")[2]
    err, checks = parse_txn_check_poll(y.request_reply(corr))
    check_eq([c_[0] for c_ in checks], [t1], "the new poll gets the check")
    # the old connection closing leaves the new registration alone
    x.close()
    time.sleep(0.2)
    corr = y.send_request(API_POLL, 1, txn_check_poll_body("grp", 8000, 10,
                                                            instance="I"))
    with Conn(b.addr) as pooled:
        t2 = txn_prepare(pooled, "grp", "o", 0, [(None, b"2")],
                         instance="I")[2]
    err, checks = parse_txn_check_poll(y.request_reply(corr))
    check_eq([c_[0] for c_ in checks], [t2], "still registered after the "
             "replaced poll's connection closed")
    # the parked poll's connection closing unregisters the instance: a check
    # then finds no producer and counts as unanswered
    y.send_request(API_POLL, 1, txn_check_poll_body("grp", 8000, 10,
                                                     instance="I"))
    time.sleep(0.2)
    y.close()
    with Conn(b.addr) as c:
        t3 = txn_prepare(c, "grp", "o", 0, [(None, b"3")], instance="I")[2]
        wait_for(lambda: txn_describe(c, t3)["check_count"] == 1, 10,
                 what="an unanswered check of t3 (no producer)")
        check_eq(txn_describe(c, t1)["check_count"], 1,
                 "t1's check, out to the closed connection, expired")


# ---- resume and describe -----------------------------------------------

def test_resume_and_describe():
    b = Broker(name="txn-resume", sets={"transaction.timeout.ms": 200,
                                        "transaction.check.max": 1})
    b.start()
    batch = build_batch([(b"k", b"resumed")])
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        t0 = int(time.time() * 1000)
        err, _, txn, _ = txn_prepare(c, "g", "o", 0, batch)
        check_eq(err, ERR_NONE, "prepare")
        d = txn_describe(c, txn)
        check_eq((d["error"], d["message"], d["txn_id"], d["group"],
                  d["topic"], d["partition"], d["state"], d["ended_ms"],
                  d["check_count"], d["log_offset"], d["discard_reason"],
                  d["commit_seq"], d["records"]),
                 (ERR_NONE, None, txn, "g", "o", 0, TXN_PENDING, -1, 0, -1,
                  None, -1, batch), "describe a pending transaction")
        check(t0 - 5 <= d["created_ms"] <= t0 + 5000, "created_ms")
        check(d["next_check_ms"] >= d["created_ms"] + 200, "next_check_ms")
        # nobody polls: one unanswered check discards it (check.max 1)
        wait_for(lambda: txn_describe(c, txn)["state"] == TXN_DISCARDED, 10,
                 what="the discard")
        d = txn_describe(c, txn)
        check(d["discard_reason"] and "1 checks" in d["discard_reason"],
              "discard reason: %r" % d["discard_reason"])
        check_eq(d["records"], batch, "a discarded txn keeps its batch")
        err, msg, state, _ = txn_end(c, "g", txn, TXN_COMMIT)
        check_eq((err, state), (ERR_INVALID_TXN_STATE, TXN_DISCARDED),
                 "commit of a discarded txn without the operator flag")
        check(d["discard_reason"] in msg, "the answer says why: %r" % msg)
        err, _, state, off = txn_end(c, "g", txn, TXN_RESUME)
        check_eq((err, state, off), (ERR_INVALID_REQUEST, -1, -1),
                 "resume without the operator flag")
        check_eq(txn_end(c, "g", 4242, TXN_RESUME, operator=True)[0],
                 ERR_TXN_NOT_FOUND, "resume of an unknown txn")
        p = Poller(b.addr, "g")
        try:
            time.sleep(0.3)
            before = int(time.time() * 1000)
            err, _, state, off = txn_end(c, "g", txn, TXN_RESUME,
                                         operator=True)
            check_eq((err, state, off), (ERR_NONE, TXN_PENDING, -1),
                     "operator resume")
            d = txn_describe(c, txn)
            check_eq((d["state"], d["check_count"], d["discard_reason"],
                      d["ended_ms"]), (TXN_PENDING, 0, None, -1),
                     "resumed: pending, count reset")
            check(d["next_check_ms"] <= before + 1000 or
                  d["next_check_ms"] >= before + 29000,
                  "due now (or already leased to the poller): %d vs %d"
                  % (d["next_check_ms"], before))
            wait_for(lambda: txn in p.ids(), 10,
                     what="the resumed txn checked at once")
            err, _, state, _ = txn_end(c, "g", txn, TXN_RESUME, operator=True)
            check_eq((err, state), (ERR_INVALID_TXN_STATE, TXN_PENDING),
                     "resume of a pending txn")
            err, _, state, off = txn_end(c, "g", txn, TXN_COMMIT)
            check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 1),
                     "the check's answer: commit")
        finally:
            p.join()
        d = txn_describe(c, txn)
        check_eq((d["state"], d["log_offset"], d["commit_seq"], d["records"]),
                 (ST_COMMITTED, 1, 0, None),
                 "describe after commit: offset, sequence, no batch")
        check(d["ended_ms"] >= before, "ended_ms")
        err, _, state, _ = txn_end(c, "g", txn, TXN_RESUME, operator=True)
        check_eq((err, state), (ERR_INVALID_TXN_STATE, ST_COMMITTED),
                 "resume of a committed txn")
        # unknown: error 105, every other field zero / empty / null
        r = c.request(1004, 0, Writer().i64(987654).getvalue())
        check_eq(r.i16(), ERR_TXN_NOT_FOUND, "describe unknown")
        r.string()
        rest = r.raw(r.remaining())
        check_eq(rest, Writer().i64(0).string("").string("").i32(0).i8(0)
                 .i64(0).i64(0).i32(0).i64(0).i64(0).string(None).i64(0)
                 .bytes_(None).getvalue(), "describe unknown: the fields")
    check_eq(values(b.addr, "o"), [b"resumed"], "appended once")


def dead_letter_copies(addr):
    """{txn id: (partition, number of records)} in the topic dlq."""
    out = {}
    for part, _, txn in dead_letter_records(addr, "dlq", 2):
        p, n = out.get(txn, (part, 0))
        check_eq(p, part, "txn %d copied to one partition" % txn)
        out[txn] = (part, n + 1)
    return out


def dead_letter_broker(name, extra=None):
    """A broker that discards at the first unanswered check (100 ms after
    the prepare) and copies discards to the topic dlq."""
    sets = {"transaction.timeout.ms": 100, "transaction.check.max": 1,
            "transaction.dead.letter.topic": "dlq"}
    sets.update(extra or {})
    b = Broker(name=name, sets=sets)
    b.start()
    return b


def test_dead_letter_topic():
    """transaction.dead.letter.topic: a discarded transaction's message is
    copied there once, with its key, value and headers and the
    transaction's own; a missing topic is waited for; a restart copies
    nothing again; a resumed then re-discarded one is copied again."""
    b = dead_letter_broker("txn-dead")
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        recs = [(b"k1", b"first", [("trace", b"t-1")]), (None, b"second")]
        err, _, t1, _ = txn_prepare(c, "gd", "o", 0, build_batch(recs))
        check_eq(err, ERR_NONE, "prepare")
        wait_for(lambda: txn_describe(c, t1)["state"] == TXN_DISCARDED, 10,
                 what="the discard")
        # no topic yet: logged, and the copy waits for it
        wait_for(lambda: "dead-letter topic dlq does not exist"
                 in b.log_text(), 10, what="the missing-topic warning")
        c.create_topic("dlq", 2)
        wait_for(lambda: t1 in dead_letter_copies(b.addr), 10,
                 what="the copy once the topic exists")
        part, n = dead_letter_copies(b.addr)[t1]
        check_eq((part, n), (t1 % 2, 2),
                 "partition: txn id modulo the partitions; both records")
        got = [r for r in fetch_all(b.addr, "dlq", part)]
        check_eq([(r.key, r.value) for r in got],
                 [(b"k1", b"first"), (None, b"second")], "records copied")
        h0 = [(k if isinstance(k, str) else k.decode(), v)
              for k, v in got[0].headers]
        check_eq(h0[0], ("trace", b"t-1"), "the record's own header first")
        h = dict(h0)
        check_eq((h["sluice.txn.id"], h["sluice.txn.group"],
                  h["sluice.txn.topic"], h["sluice.txn.partition"]),
                 (str(t1).encode(), b"gd", b"o", b"0"), "transaction headers")
        check(b"1 checks" in h["sluice.txn.reason"],
              "reason header: %r" % h["sluice.txn.reason"])
        # a second discard, then a resume and a new discard: copied again
        err, _, t2, _ = txn_prepare(c, "gd", "o", 0,
                                    build_batch([(b"k2", b"other")]))
        wait_for(lambda: t2 in dead_letter_copies(b.addr), 10,
                 what="the second copy")
        # TxnDescribe v1 says where the copy is (once recorded: next look)
        part2 = dead_letter_copies(b.addr)[t2][0]
        at = [r.offset for r in fetch_all(b.addr, "dlq", part2)
              if (("sluice.txn.id", str(t2).encode()) in
                  [(k if isinstance(k, str) else k.decode(), v)
                   for k, v in r.headers])]
        wait_for(lambda: txn_describe(c, t2, 1)["dead_letter_offset"] >= 0,
                 10, what="the copy recorded")
        check_eq(txn_describe(c, t2, 1)["dead_letter_offset"], at[0],
                 "TxnDescribe v1: the copy's offset")
        ls = txn_list(c, "gd", version=1)
        check_eq((ls[t2][3], ls[t2][7]), (TXN_DISCARDED, at[0]),
                 "TxnList v1: the copy's offset")
        check_eq(len(txn_list(c, "gd")[t2]), 7, "TxnList v0: without it")
        check_eq(txn_describe(c, t1, 1)["state"], TXN_DISCARDED, "v1 fields")
        err, _, state, _ = txn_end(c, "gd", t1, TXN_RESUME, operator=True)
        check_eq((err, state), (ERR_NONE, TXN_PENDING), "resume")
    # the resumed one is discarded and copied again
    wait_for(lambda: sum(len(fetch_all(b.addr, "dlq", p))
                         for p in range(2)) == 5, 15, what="the third copy")
    b.stop()
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    rows = dict(db.execute("SELECT txn_id, dead_letter_offset FROM txn_half"
                           " WHERE state = 'DISCARDED'").fetchall())
    db.close()
    check_eq(sorted(rows), sorted([t1, t2]), "both discarded again")
    check(all(v is not None for v in rows.values()),
          "every copy recorded: %r" % rows)
    b.start()
    time.sleep(1.5)  # a look or more after the restart
    n = sum(len(fetch_all(b.addr, "dlq", p)) for p in range(2))
    check_eq(n, 2 + 1 + 2, "t1 twice (2 records each), t2 once; nothing "
             "copied again after the restart")
    b.stop()


def test_dead_letter_copy_too_large():
    """A copy that can never be written (larger than the dead-letter
    topic's segments) is given up (TxnDescribe v1: -2) and does not hold
    back the next one."""
    b = dead_letter_broker("txn-dead-big")
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 2, {"segment.bytes": "1024"})
        _, _, big, _ = txn_prepare(c, "gb", "o", 0,
                                   build_batch([(b"k", b"x" * 2000)]))
        _, _, small, _ = txn_prepare(c, "gb", "o", 0,
                                     build_batch([(b"k", b"small")]))
        wait_for(lambda: txn_describe(c, big, 1)["dead_letter_offset"] == -2,
                 10, what="the big copy given up")
        wait_for(lambda: txn_describe(c, small, 1)["dead_letter_offset"] >= 0,
                 10, what="the small copy")
        check_eq(dead_letter_copies(b.addr), {small: (small % 2, 1)},
                 "only the small one copied")
        d = txn_describe(c, big, 1)
        check_eq((d["state"], len(d["records"]) > 2000),
                 (TXN_DISCARDED, True), "the big one keeps its message")
        ls = txn_list(c, "gb", version=1)
        check_eq((ls[big][7], ls[small][7] >= 0), (-2, True),
                 "TxnList v1: given up, and copied")
    check("larger than the topic's segment.bytes" in b.log_text(),
          "the log says why")
    b.stop()


def gzip_batch(values):
    """A RecordBatch v2 whose records are gzip-compressed (attributes 1),
    with producer fields set (id 5000, epoch 3, sequence 7)."""
    import gzip
    ts = int(time.time() * 1000)
    body = gzip.compress(b"".join(encode_record(i, 0, None, v, ())
                                  for i, v in enumerate(values)))
    after_crc = (Writer().i16(1).i32(len(values) - 1).i64(ts).i64(ts)
                 .i64(5000).i16(3).i32(7).i32(len(values)).raw(body)
                 .getvalue())
    return (Writer().i64(0).i32(4 + 1 + 4 + len(after_crc)).i32(-1).i8(2)
            .u32(crc32c(after_crc)).raw(after_crc).getvalue()), body


def test_dead_letter_compressed_copied_as_is():
    """A compressed half message cannot take the headers without being
    decompressed: its copy is the batch as prepared (producer
    fields those of the first dead-letter copy of its partition: the
    reserved producer 2, epoch 0, sequence 0; CRC recomputed)."""
    b = dead_letter_broker("txn-dead-gzip")
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 1)
        batch, body = gzip_batch([b"g1", b"g2"])
        err, _, t, _ = txn_prepare(c, "gz", "o", 0, batch)
        check_eq(err, ERR_NONE, "prepare a gzip batch")
        wait_for(lambda: txn_describe(c, t, 1)["dead_letter_offset"] >= 0, 10,
                 what="the copy")
    b.stop()
    last, _ = walk_segment(b.segment_files("dlq", 0)[0])
    check(last is not None, "a batch in dlq")
    after_crc = last[21:]
    check_eq(int.from_bytes(last[17:21], "big"), crc32c(after_crc), "CRC")
    check_eq((int.from_bytes(last[21:23], "big"),
              int.from_bytes(last[43:51], "big", signed=True),
              int.from_bytes(last[51:53], "big", signed=True),
              int.from_bytes(last[53:57], "big", signed=True),
              int.from_bytes(last[57:61], "big")),
             (1, 2, 0, 0, 2), "attributes, producer fields, count")
    check_eq(last[61:], body, "the compressed records as prepared")


def test_dead_letter_backlog():
    """More discards than one step reads (100): every one is copied once,
    in full batches one after another."""
    n = 250
    b = dead_letter_broker("txn-dead-many", {"transaction.check.rate": 5000,
                                             "transaction.check.burst": 1000})
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 2)
        ids = set()
        for k in range(n):
            err, _, t, _ = txn_prepare(c, "gm", "o", 0,
                                       build_batch([(None, b"m%d" % k)]))
            check_eq(err, ERR_NONE, "prepare %d" % k)
            ids.add(t)
        wait_for(lambda: len(dead_letter_copies(b.addr)) == n, 30,
                 what="%d copies" % n)
        copies = dead_letter_copies(b.addr)
        check_eq(set(copies), ids, "one copy of each discarded transaction")
        check(all(cnt == 1 for _, cnt in copies.values()), "no copy twice")
        wait_for(lambda: all(txn_describe(c, t, 1)["dead_letter_offset"] >= 0
                             for t in ids), 10, what="every copy recorded")
    b.stop()


def test_upgrade_from_schema_4():
    """A sluice.db of schema version 4 (before the dead-letter column) is
    migrated at start-up: the column and its index appear, then the index
    of unsynced commits (version 6), then the numbering of dead-letter
    copies (version 7), then the table txn_dead_topic (version 8), version
    8 is recorded, the transactions kept work, and a second start changes
    nothing."""
    b = Broker(name="txn-upgrade", sets={"transaction.timeout.ms": 60000})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        err, _, txn, _ = txn_prepare(c, "g", "o", 0,
                                     build_batch([(b"k", b"kept")]))
        check_eq(err, ERR_NONE, "prepare")
    b.stop()
    path = os.path.join(b.data_dir, "sluice.db")
    db = sqlite3.connect(path)
    db.execute("DROP INDEX txn_half_dead")
    db.execute("DROP INDEX txn_half_unsynced")
    db.execute("DROP INDEX txn_half_dead_out")
    db.execute("DROP TABLE txn_dead_seq")
    db.execute("DROP TABLE txn_dead_topic")
    db.execute("ALTER TABLE txn_half DROP COLUMN dead_letter_offset")
    db.execute("ALTER TABLE txn_half DROP COLUMN dead_letter_seq")
    db.execute("ALTER TABLE txn_half DROP COLUMN dead_letter_partition")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    for start in range(2):
        b.start()
        with Conn(b.addr) as c:
            d = txn_describe(c, txn, 1)
            check_eq((d["state"], d["dead_letter_offset"]), (TXN_PENDING, -1),
                     "the kept transaction after start %d" % start)
            if start == 1:
                check_eq(end(c, "g", txn, COMMIT)[0], ERR_NONE, "commit")
        b.stop()
        db = sqlite3.connect(path)
        cols = [r[1] for r in db.execute("PRAGMA table_info(txn_half)")]
        check_eq((db.execute("PRAGMA user_version").fetchone()[0],
                  [c for c in cols if c.startswith("dead_letter_")],
                  db.execute("SELECT count(*) FROM sqlite_schema WHERE name IN"
                             " ('txn_half_dead', 'txn_half_unsynced',"
                             " 'txn_half_dead_out', 'txn_dead_seq',"
                             " 'txn_dead_topic')")
                  .fetchone()[0]),
                 (8, ["dead_letter_offset", "dead_letter_seq",
                      "dead_letter_partition"], 5),
                 "schema after start %d" % start)
        db.close()
    b.start()
    check_eq(values(b.addr, "o"), [b"kept"], "committed after the upgrade")
    b.stop()


def test_pagecache_commit_keeps_batch_until_synced():
    """A page-cache commit is answered and recorded COMMITTED at once, but
    its row keeps the batch until the log is synced past it (the periodic
    flush), so that start-up can append it again if a power loss takes the
    log's copy (test_powerloss.py).  Here: no flush for a minute, so the
    batch stays; a restart finds the copy in the log and drops the batch
    without appending twice.  With a 200 ms flush the batch goes by
    itself."""
    b = Broker(name="txn-unsynced", sets={"log.flush.interval.ms": 60000})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("pc", 1)
        txn = prepare(c, "g", "pc", 0, [(b"k", b"kept-until-synced")])
        err, state, off = end(c, "g", txn, COMMIT)
        check_eq((err, state), (ERR_NONE, ST_COMMITTED), "commit answered")
        wait_for(lambda: kept_batch(b, txn) == ("COMMITTED", 1), 10,
                 what="COMMITTED with its batch kept")
        d = txn_describe(c, txn)
        check_eq((d["state"], d["log_offset"]), (ST_COMMITTED, off), "TxnDescribe")
    b.stop()  # the final flush syncs the log; the row still keeps its batch
    b.start()
    check_eq(kept_batch(b, txn), ("COMMITTED", 0), "dropped at start-up")
    check("1 found in the log, 0 lost" in b.log_text(), "start-up says so")
    check_eq(values(b.addr, "pc"), [b"kept-until-synced"], "in the log once")
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, txn)["log_offset"], off, "offset kept")
    b.stop()

    b = Broker(name="txn-unsynced-flush", sets={"log.flush.interval.ms": 200})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("pc", 1)
        txn = prepare(c, "g", "pc", 0, [(b"k", b"v")])
        check_eq(end(c, "g", txn, COMMIT)[0], ERR_NONE, "commit")
    wait_for(lambda: kept_batch(b, txn) == ("COMMITTED", 0), 10,
             what="the batch dropped after the flush")
    b.stop()


# ---- fsync durability ---------------------------------------------------

DELAY = 0.3  # seconds SLOWSYNC adds to every fsync / fdatasync


def slow_env(log_calls=False):
    lib = need_program("SLOWSYNC")
    env = {"LD_PRELOAD": lib, "SLOWSYNC_MS": str(int(DELAY * 1000)),
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":verify_asan_link_order=0").lstrip(":")}
    if log_calls:
        env["SLOWSYNC_LOG"] = "1"
    return env


def test_fsync_commit_answers_after_the_sync():
    """log.durability=fsync: the commit's answer (and COMMITTED) wait for
    the fdatasync of the appended batch.  The syncer is kept busy with four
    other partitions (1.2 s of syncs) so the log sync lags behind the
    append: an answer that did not wait would come before the message is
    visible."""
    b = Broker(name="txn-fsync", env=slow_env(),
               sets={"log.durability": "fsync", "log.flush.interval.ms": 100})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("busy", 4)
        c.create_topic("orders", 1)
        txn = txn_prepare(c, "g", "orders", 0, [(b"k", b"durable")])[2]
    socks = [Conn(b.addr) for _ in range(4)]
    with Conn(b.addr) as c, Conn(b.addr) as reader:
        t_send = time.monotonic()
        corrs = [s_.send_request(0, 3, produce_body(
            [("busy", i, build_batch([(None, b"busy%d" % i)]))]))
            for i, s_ in enumerate(socks)]
        err, _, state, off = txn_end(c, "g", txn, TXN_COMMIT)
        dt = time.monotonic() - t_send
        fp = reader.fetch1("orders", 0, 0, max_wait_ms=0)
        log("  commit answered after %.2f s" % dt)
        check_eq((err, state, off), (ERR_NONE, ST_COMMITTED, 1), "commit")
        check_eq(fp.high_watermark, 2, "high watermark when the commit is "
                 "answered: the batch is synced")
        check_eq([m.value for m in fp.messages()], [b"durable"],
                 "the committed message is visible at the answer")
        # at least the log's own sync (the COMMITTING row's WAL sync is not
        # on the answer's path: the commit marker makes the log copy enough)
        check(dt >= DELAY, "answered after %.2f s: before its sync" % dt)
        for s_, corr in zip(socks, corrs):
            s_.request_reply(corr)
            s_.close()
    # recovery: a commit left COMMITTING is synced before it is recorded
    with Conn(b.addr) as c:
        t2 = txn_prepare(c, "g", "orders", 0, [(b"k", b"recovered")])[2]
    b.kill9()
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    seq = db.execute("SELECT next_seq FROM txn_seq WHERE topic = 'orders'"
                     ).fetchone()[0]
    db.execute("UPDATE txn_half SET state = 'COMMITTING', commit_seq = ?, "
               "ended_ms = ? WHERE txn_id = ?",
               (seq, int(time.time() * 1000), t2))
    db.execute("UPDATE txn_seq SET next_seq = next_seq + 1 "
               "WHERE topic = 'orders'")
    db.commit()
    db.close()
    b.env = slow_env(log_calls=True)
    b.start()
    lines = open(b.logs[-1], "rb").read().decode("utf-8", "replace")
    i_rec = lines.find("recovered commit of txn %d" % t2)
    i_sync = lines.find("orders-0/")
    check(i_rec > 0, "recovery logged")
    check(0 <= i_sync < i_rec, "the partition log was fdatasync'ed before "
          "the recovered commit was recorded")
    check_eq(values(b.addr, "orders"), [b"durable", b"recovered"],
             "each once")


# ---- purge ---------------------------------------------------------------

def test_purge_after_retention():
    b = Broker(name="txn-purge", sets={"transaction.retention.ms": 1500,
                                       "transaction.timeout.ms": 100,
                                       "transaction.check.max": 1})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        committed = txn_prepare(c, "g", "o", 0, [(None, b"c")])[2]
        rolled = txn_prepare(c, "g", "o", 0, [(None, b"r")])[2]
        discarded = txn_prepare(c, "nobody", "o", 0, [(None, b"d")])[2]
        pending = txn_prepare(c, "g", "o", 0, [(None, b"p")],
                              timeout_ms=3600000)[2]
        check_eq(txn_end(c, "g", committed, TXN_COMMIT)[0], ERR_NONE, "commit")
        check_eq(txn_end(c, "g", rolled, TXN_ROLLBACK)[0], ERR_NONE,
                 "rollback")
        wait_for(lambda: txn_describe(c, discarded)["state"] == TXN_DISCARDED,
                 10, what="the discard")
        time.sleep(0.5)
        check_eq(txn_describe(c, committed)["state"], ST_COMMITTED,
                 "kept while younger than transaction.retention.ms")
        wait_for(lambda: txn_describe(c, committed)["error"] ==
                 ERR_TXN_NOT_FOUND, 10, what="the purge of the committed txn")
        check_eq(txn_describe(c, rolled)["error"], ERR_TXN_NOT_FOUND,
                 "rolled back: purged")
        time.sleep(1.5)
        check_eq(txn_describe(c, discarded)["state"], TXN_DISCARDED,
                 "a discarded txn is kept until resolved")
        check_eq(txn_describe(c, pending)["state"], TXN_PENDING,
                 "a pending txn is kept")
        check_eq(txn_end(c, "g", committed, TXN_COMMIT)[0], ERR_TXN_NOT_FOUND,
                 "a late end of a purged txn: not found, nothing appended")
    check_eq(values(b.addr, "o"), [b"c"], "the log is untouched")


def test_checkpoints_run_beside_the_coordinator():
    """sluice.db's WAL is copied into the database file by the
    checkpointer thread (coord.c), every 200 ms, not only by SQLite's
    automatic checkpoint in the coordinator's commits, which the broker
    raises to 10,000 frames (a checkpoint there makes every job wait): a
    few thousand half messages, far below that threshold, reach the
    database file within a second while the broker runs."""
    b = Broker(name="txn-checkpointer")
    b.start()
    dbf = os.path.join(b.data_dir, "sluice.db")
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        time.sleep(0.5)
        size0 = os.path.getsize(dbf)
        bodies = [txn_prepare_body("g", "o", 0,
                                   build_batch([(None, b"x" * 300)]), version=0)
                  for _ in range(3000)]
        for r in pipeline(c, API_PREPARE, 0, bodies, window=50):
            check_eq(parse_txn_prepare(r, 0)[0], ERR_NONE, "prepare")
    wal = os.path.getsize(dbf + "-wal")
    check(wal < 10000 * 4096, "the WAL (%d bytes) is below the automatic "
          "checkpoint's threshold: only the checkpointer can have copied it"
          % wal)
    wait_for(lambda: os.path.getsize(dbf) > size0 + 500000, 3.0,
             what="sluice.db to grow from %d bytes: the half messages "
             "checkpointed into it while the broker runs" % size0)
    b.stop()
    check(re.search(r"coordinator: .*; [1-9][0-9]* checkpoints", b.log_text()),
          "the coordinator's exit line counts the checkpointer's runs")


def test_purge_catches_up_with_a_backlog():
    """A backlog of 30,000 expired ended transactions (written into
    sluice.db while the broker was down) is purged in a few ticks: the
    purge batch doubles while batches come back full (1000, 2000, 4000,
    then 8000 per tick).  At the old fixed 1000 per second it took 30 s,
    below a sustained 20,000 txn/s."""
    n = 30000
    b = Broker(name="txn-purge-backlog",
               sets={"transaction.retention.ms": 1000})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        kept = txn_prepare(c, "g", "o", 0, [(None, b"k")],
                           timeout_ms=3600000)[2]
    b.stop()
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    old = int(time.time() * 1000) - 3600000
    with db:
        db.executemany(
            "INSERT INTO txn_half(producer_group, topic, partition, batch,"
            " batch_len, record_count, state, created_ms, ended_ms,"
            " next_check_ms, origin, commit_seq, log_offset)"
            " VALUES('g', 'o', 0, NULL, 70, 1, ?, ?, ?, 0, 0, NULL, ?)",
            [("ROLLED_BACK" if i % 2 else "COMMITTED", old, old + i,
              None if i % 2 else i) for i in range(n)])
    db.close()
    b.start()
    t0 = time.monotonic()

    def left():
        d = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"),
                            timeout=5)
        try:
            return d.execute("SELECT count(*) FROM txn_half WHERE state IN"
                             " ('COMMITTED', 'ROLLED_BACK')").fetchone()[0]
        finally:
            d.close()
    wait_for(lambda: left() == 0, 20, what="the purge of the backlog")
    took = time.monotonic() - t0
    log("30,000 expired rows purged in %.1f s" % took)
    check(took < 12, "purged in %.1f s: the batch should grow past 1000/s"
          % took)
    text = b.log_text(max_lines=400)
    for k in (1000, 2000, 4000, 8000):
        check("purged %d ended transaction(s)" % k in text,
              "a purge pass of %d rows (the batch doubles)" % k)
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, kept)["state"], TXN_PENDING,
                 "a pending txn is not purged")


# ---- DeleteTopics --------------------------------------------------------

def test_delete_topic_discards_half_messages():
    b = Broker(name="txn-drop")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("gone", 2)
        c.create_topic("kept", 1)
        t1 = txn_prepare(c, "g", "gone", 0, [(None, b"1")])[2]
        t2 = txn_prepare(c, "g", "gone", 1, [(None, b"2")])[2]
        tk = txn_prepare(c, "g", "kept", 0, [(None, b"k")])[2]
        check_eq(c.delete_topics(["gone"]), {"gone": ERR_NONE}, "delete")
        for t in (t1, t2):
            d = txn_describe(c, t)
            check_eq((d["state"], d["discard_reason"]),
                     (TXN_DISCARDED, "topic deleted"), "discarded with reason")
        check_eq(txn_describe(c, tk)["state"], TXN_PENDING,
                 "another topic's txn is untouched")
        err, msg, state, off = txn_end(c, "g", t1, TXN_COMMIT)
        check_eq((err, state, off), (ERR_INVALID_TXN_STATE, TXN_DISCARDED, -1),
                 "commit after the delete")
        check("topic deleted" in (msg or ""), "a clear error: %r" % msg)
        # even an operator commit cannot append to a topic that is gone
        err, msg, state, off = txn_end(c, "g", t2, TXN_COMMIT, operator=True)
        check_eq((err, state, off),
                 (ERR_UNKNOWN_TOPIC_OR_PARTITION, TXN_DISCARDED, -1),
                 "operator commit after the delete")
        check("topic deleted" in (msg or ""), "says why: %r" % msg)
        check_eq(txn_end(c, "g", t2, TXN_ROLLBACK, operator=True)[0],
                 ERR_NONE, "an operator may roll it back")
        check_eq(txn_end(c, "g", tk, TXN_COMMIT)[0], ERR_NONE,
                 "the other topic commits")
    check_eq(values(b.addr, "kept"), [b"k"], "kept topic")
    b.restart()
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, t1)["state"], TXN_DISCARDED,
                 "still discarded after a restart")
        # re-created: its commits continue the old topic's sequences, which
        # its new partitions accept; an operator commit appends t1 there
        c.recreate_topic("gone", 2)
        t3 = txn_prepare(c, "g", "gone", 0, [(None, b"3")])[2]
        check_eq(txn_end(c, "g", t3, TXN_COMMIT)[0], ERR_NONE, "commit in the new topic")
        check_eq(txn_end(c, "g", t1, TXN_COMMIT, operator=True)[0], ERR_NONE,
                 "operator commit of the old topic's txn")
    check_eq(values_p(b.addr, "gone", 0), [b"3", b"1"], "both, once each")
    b.restart()
    check_eq(values_p(b.addr, "gone", 0), [b"3", b"1"], "the same after a restart")
    b.stop()


def test_operator_commit_after_too_large():
    """A commit larger than segment.bytes is discarded, nothing appended
    but its marker, and later commits move the partition's sequences on.
    Once segment.bytes is raised an operator commits it: it is appended
    once, with a new commit sequence.  (The discard releases the one it
    had.  Reused, it lay below the partition's last and was taken for
    "appended long ago": the commit was answered COMMITTED and nothing was
    appended.)"""
    from harness import ERR_MESSAGE_TOO_LARGE
    b = Broker(name="txn-op-too-large")
    b.start()
    small = [b"small-%d" % i for i in range(8)]
    with Conn(b.addr) as c:
        c.create_topic("orders", 1, {"segment.bytes": 4096})
        big = prepare(c, "g", "orders", 0, [(b"k", b"x" * 5000)])
        err, state, _ = end(c, "g", big, COMMIT)
        check_eq((err, state), (ERR_MESSAGE_TOO_LARGE, TXN_DISCARDED),
                 "a commit larger than segment.bytes")
        for v in small:
            t = prepare(c, "g", "orders", 0, [(b"k", v)])
            check_eq(end(c, "g", t, COMMIT)[:2], (ERR_NONE, ST_COMMITTED),
                     "commit of %r" % v)
        c.alter_configs("orders", {"segment.bytes": 1 << 20})
        err, state, off = end(c, "g", big, COMMIT, operator=True)
        check_eq((err, state), (ERR_NONE, ST_COMMITTED), "operator commit")
        check(off >= 0, "answered with its offset: %d" % off)
        check_eq(end(c, "g", big, COMMIT, operator=True),
                 (ERR_NONE, ST_COMMITTED, off), "committed again: the same")
    check_eq(values(b.addr, "orders"), small + [b"x" * 5000],
             "the big one once, after the others")
    b.restart()
    check_eq(values(b.addr, "orders"), small + [b"x" * 5000],
             "the same after a restart")
    b.stop()


def test_prepare_bad_input():
    """A bad half message gets a clear error and stores nothing: wrong CRC,
    bytes that are not one RecordBatch, two batches, a batch over the
    topic's max.message.bytes, an unknown topic or partition, an empty
    group; and the broker keeps working."""
    from harness import ERR_CORRUPT_MESSAGE, ERR_MESSAGE_TOO_LARGE
    b = Broker(name="txn-bad")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 2, configs={"max.message.bytes": "2000"})
        good = build_batch([(b"k", b"v")])
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0x01
        cases = [
            ("wrong CRC", "shop", "orders", 0, bytes(bad_crc), ERR_CORRUPT_MESSAGE),
            ("not a batch", "shop", "orders", 0, b"hello world", ERR_CORRUPT_MESSAGE),
            ("two batches", "shop", "orders", 0, good + good, ERR_CORRUPT_MESSAGE),
            ("truncated", "shop", "orders", 0, good[:-3], ERR_CORRUPT_MESSAGE),
            ("too large", "shop", "orders", 0,
             build_batch([(None, b"x" * 5000)]), ERR_MESSAGE_TOO_LARGE),
            ("unknown topic", "shop", "nope", 0, good, ERR_UNKNOWN_TOPIC_OR_PARTITION),
            ("unknown partition", "shop", "orders", 7, good,
             ERR_UNKNOWN_TOPIC_OR_PARTITION),
            ("empty group", "", "orders", 0, good, ERR_INVALID_REQUEST),
        ]
        for what, group, topic, part, batch, want in cases:
            err, msg, txn, _ = txn_prepare(c, group, topic, part, batch)
            check_eq(err, want, "TxnPrepare with %s (%s)" % (what, msg))
            check(msg, "an error message for %s" % what)
            check_eq(txn, -1, "no txn id for %s" % what)
        check_eq(len(txn_list(c)), 0, "nothing stored by bad prepares")
        err, _, txn, _ = txn_prepare(c, "shop", "orders", 0, good)
        check_eq(err, ERR_NONE, "a good prepare after the bad ones")
        check_eq(txn_end(c, "shop", txn, TXN_COMMIT)[0], ERR_NONE, "commit")
    check_eq([r.value for r in fetch_all(b.addr, "orders", 0)], [b"v"],
             "only the good message in the log")


def test_kafka_clients_skip_commit_markers():
    """Each commit is preceded in the log by its marker, a control batch
    (docs/transactions.md "Commit markers").  Real Kafka clients skip it as
    they skip Kafka's own transaction markers: kcat (librdkafka) prints
    exactly the committed messages, plain ones between them, at the offsets
    the commits were answered with and without an error; so does
    `sluice consume` (libsluice).  The log ends with a lone marker (a
    commit whose batch did not follow its marker: a failed write after a
    segment roll; written here into the stopped broker's segment), which
    neither client waits for nor stumbles on."""
    kcat = need_program("KCAT", "kcat")
    cli = need_program("SLUICE_CLI")
    b = Broker(name="txn-markers")
    b.start()
    want = []
    with Conn(b.addr) as c:
        c.create_topic("orders", 1, {"segment.bytes": 4096})
        for i in range(3):
            t = prepare(c, "g", "orders", 0, [(b"k", b"committed-%d" % i)])
            r = prepare(c, "g", "orders", 0, [(b"k", b"rolled-back-%d" % i)])
            check_eq(end(c, "g", r, ROLLBACK)[0], ERR_NONE, "rollback")
            err, state, off = end(c, "g", t, COMMIT)
            check_eq((err, state), (ERR_NONE, ST_COMMITTED), "commit %d" % i)
            want.append((off, b"committed-%d" % i))
            if i == 1:
                err, base = c.produce1("orders", 0, build_batch([(None, b"plain")]))
                check_eq(err, ERR_NONE, "plain produce")
                want.append((base, b"plain"))
        lone = prepare(c, "g", "orders", 0, [(b"k", b"never")])
    b.stop()
    seg = b.segment_files("orders", 0)[-1]
    last, pos = walk_segment(seg)
    nxt = (int.from_bytes(last[0:8], "big") +
           int.from_bytes(last[23:27], "big", signed=True) + 1)
    # txn_marker.h: a COMMIT control key, then Kafka's marker value
    # (version, coordinator epoch) and "SLTX", txn id, commit sequence
    marker = build_batch([(b"\x00\x00\x00\x01",
                           b"\x00\x00" + b"\x00" * 4 + b"SLTX" +
                           lone.to_bytes(8, "big") + (99).to_bytes(8, "big"))],
                         base_offset=nxt, attributes=0x20)
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(marker)
    b.start()
    with Conn(b.addr) as c:
        hw = c.fetch1("orders", 0, 0, max_wait_ms=0).high_watermark
    check_eq([o for o, _ in want], [1, 3, 4, 6],
             "offsets: each commit after its marker, the plain message next")
    check_eq(hw, 8, "the log ends with the discarded commit's lone marker")
    rc, out, err = run_cmd([kcat, "-C", "-b", b.addr, "-t", "orders", "-e",
                            "-o", "beginning", "-f", "%o %s\\n"],
                           timeout=60, what="kcat -C")
    errtext = err.decode("utf-8", "replace")
    check_eq(rc, 0, "kcat -C exit status (stderr: %s)" % errtext[-2000:])
    check("ERROR" not in errtext, "kcat -C reported errors:\n%s" % errtext)
    got = [(int(o), v) for o, v in
           (ln.split(b" ", 1) for ln in out.splitlines())]
    check_eq(got, want, "what kcat reads")
    rc, out, err = run_cmd([cli, "-b", b.addr, "consume", "orders", "--from",
                            "beginning", "--exit-at-end", "--timeout", "10000"],
                           timeout=60, what="sluice consume")
    check_eq(rc, 0, "sluice consume exit status (%r)" % err[-2000:])
    check_eq(out.splitlines(), [v for _, v in want], "what sluice consume reads")
    # in a group: the committed position passes the lone marker too (no lag
    # left behind by a message that never comes)
    rc, out, err = run_cmd([cli, "-b", b.addr, "consume", "orders", "-g", "readers",
                            "--from", "beginning", "--exit-at-end", "--timeout",
                            "10000"], timeout=60, what="sluice consume -g")
    check_eq((rc, out.splitlines()), (0, [v for _, v in want]),
             "sluice consume -g (%r)" % err[-2000:])
    rc, out, err = run_cmd([cli, "-b", b.addr, "group", "describe", "readers"],
                           timeout=60, what="sluice group describe")
    rows = [ln.split() for ln in out.decode().splitlines()
            if ln.split()[:2] == ["orders", "0"]]
    check_eq([r[2:5] for r in rows], [["8", "8", "0"]],
             "committed offset, end, lag of the group (%r)" % out)


# ---- clients that vanish mid-request -----------------------------------

def vanish_after(addr, data):
    """Sends data on a new connection and closes it at once."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.sendall(data)
    finally:
        s.close()


def test_clients_vanish_mid_transaction():
    """Producers that go away in the middle of a request: a cut TxnPrepare
    or TxnEnd stores and changes nothing; an end whose sender vanished
    before its answer, retried at once on another connection, answers
    COMMITTED and the message is in the log once; a parked check poll whose
    connection closed gets no check (the group's live producer gets it,
    well before the 30 s lease a dead poller would hold it for)."""
    b = Broker(name="txn-vanish", sets={"transaction.timeout.ms": 300})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        pending = prepare(c, "shop", "o", 0, [(b"k", b"pending")])
    prep = frame(request_header(API_PREPARE, 1, 7) + txn_prepare_body(
        "cut", "o", 0, build_batch([(b"k", b"cut" * 50)]), 0, "inst-cut"))
    endf = frame(request_header(API_END, 0, 8) + txn_end_body("shop", pending, COMMIT))
    for cut in (1, 4, 10, 40, 90, 99):
        vanish_after(b.addr, prep[:len(prep) * cut // 100 or 1])
        vanish_after(b.addr, endf[:len(endf) * cut // 100 or 1])
    check(b.alive(), "broker alive after cut requests")
    with Conn(b.addr) as c:
        check_eq(txn_list(c, "cut"), {}, "a cut TxnPrepare stores nothing")
        check_eq(txn_describe(c, pending)["state"], ST_PENDING,
                 "a cut TxnEnd changes nothing")
        check_eq(end(c, "shop", pending, ROLLBACK)[0], ERR_NONE, "rollback")

        # whole ends, sender gone before the answer, retried at once
        txns = [prepare(c, "shop", "o", 0, [(b"k", b"v%02d" % i)]) for i in range(40)]
    with Conn(b.addr) as retry:
        offsets = set()
        for i, t in enumerate(txns):
            vanish_after(b.addr, frame(request_header(API_END, 0, 9) +
                                       txn_end_body("shop", t, COMMIT)))
            err, state, off = end(retry, "shop", t, COMMIT)
            check_eq((err, state), (ERR_NONE, ST_COMMITTED), "retried end %d" % i)
            offsets.add(off)
        check_eq(len(offsets), len(txns), "one offset per transaction")
    got = values(b.addr, "o")
    check_eq(got, [b"v%02d" % i for i in range(40)],
             "each commit in the log once, in order")

    # a parked poller of instance A vanishes; B polls the group
    dead = Conn(b.addr)
    dead.send_request(API_POLL, 1, txn_check_poll_body("shop", 20000, 100, "inst-A"))
    time.sleep(0.3)  # parked
    dead.close()
    pb = Poller(b.addr, "shop", instance="inst-B")
    try:
        time.sleep(0.3)
        with Conn(b.addr) as c:
            err, _, t_a, _ = txn_prepare(c, "shop", "o", 0, [(None, b"of-A")],
                                         instance="inst-A")
            check_eq(err, ERR_NONE, "prepare of inst-A")
        t0 = time.monotonic()
        wait_for(lambda: t_a in pb.ids(), 10,
                 what="inst-A's check offered to inst-B")
        took = time.monotonic() - t0
        check(took < 5, "check reached the live producer after %.1f s" % took)
    finally:
        pb.join()
    with Conn(b.addr) as c:
        check_eq(end(c, "shop", t_a, COMMIT)[0], ERR_NONE, "commit from B's answer")
    check_eq(values(b.addr, "o")[-1], b"of-A", "in the log")
    check(b.alive(), "broker alive at the end")
    b.stop()


if __name__ == "__main__":
    run([
        ("pagecache_commit_keeps_batch_until_synced",
         test_pagecache_commit_keeps_batch_until_synced),
        ("prepare_bad_input", test_prepare_bad_input, 60),
        ("clients_vanish_mid_transaction", test_clients_vanish_mid_transaction, 60),
        ("commit_rollback_exactly_once", test_commit_rollback_exactly_once, 60),
        ("crash_between_commit_steps", test_crash_between_commit_steps, 60),
        ("check_back", test_check_back, 60),
        ("unknown_counts_once_per_check", test_unknown_counts_once_per_check, 60),
        ("late_unknown_is_not_the_next_checks", test_late_unknown_is_not_the_next_checks, 60),
        ("busy_poller_gets_the_rest_soon", test_busy_poller_gets_the_rest_soon, 60),
        ("check_lease_and_backoff_keys", test_check_lease_and_backoff_keys, 60),
        ("commits_while_durability_flips", test_commits_while_durability_flips, 90),
        ("checkpoints_run_beside_the_coordinator",
         test_checkpoints_run_beside_the_coordinator, 60),
        ("concurrent_commits_all_land", test_concurrent_commits_all_land,
         60),
        ("prepare_v1_partition_and_origin",
         test_prepare_v1_partition_and_origin, 60),
        ("checks_go_to_the_preparing_instance",
         test_checks_go_to_the_preparing_instance, 60),
        ("second_poll_of_an_instance_replaces_the_first",
         test_second_poll_of_an_instance_replaces_the_first, 60),
        ("resume_and_describe", test_resume_and_describe, 60),
        ("dead_letter_topic", test_dead_letter_topic, 60),
        ("dead_letter_copy_too_large", test_dead_letter_copy_too_large, 60),
        ("dead_letter_backlog", test_dead_letter_backlog, 90),
        ("dead_letter_compressed_copied_as_is",
         test_dead_letter_compressed_copied_as_is, 60),
        ("upgrade_from_schema_4", test_upgrade_from_schema_4, 60),
        ("purge_after_retention", test_purge_after_retention, 60),
        ("purge_catches_up_with_a_backlog",
         test_purge_catches_up_with_a_backlog, 60),
        ("delete_topic_discards_half_messages",
         test_delete_topic_discards_half_messages, 60),
        ("operator_commit_after_too_large",
         test_operator_commit_after_too_large, 60),
        # last: a skip (no SLOWSYNC) ends the script
        ("fsync_commit_answers_after_the_sync",
         test_fsync_commit_answers_after_the_sync, 60),
        ("kafka_clients_skip_commit_markers",
         test_kafka_clients_skip_commit_markers, 60),
    ])
