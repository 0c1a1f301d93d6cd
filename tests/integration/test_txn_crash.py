#!/usr/bin/env python3
"""Crash tests of transactional commits: exactly once whatever step the
broker dies at.

* Kill at each step: the broker runs with SLUICED_CRASH_AT=<point> (a test
  hook, docs/transactions.md) and exits with status 137 when a transaction
  reaches that point: after the prepare's SQLite commit (before its
  answer), after the COMMITTING step, after the log append, after the
  COMMITTED step (which is recorded after the answer: there the client
  gets its success first).  Otherwise the client sees its connection die;
  the broker restarts without the hook; retrying the commit answers
  success; the topic holds the message exactly once and the transaction is
  COMMITTED.
* kill -9 during 1000 concurrent commits (eight connections, two
  partitions): after the restart every commit that was acknowledged is in
  the log exactly once, no message is there twice, and retrying every
  commit appends each of the others exactly once.
* Dead-letter copies (transaction.dead.letter.topic): the broker dies
  (SLUICED_CRASH_AT=txn_dead_appended) after appending copies and before
  recording them; after the restart each discarded transaction has
  exactly one copy, at the offset recorded for it.  The same with the
  dead-letter topic deleted and re-created with one partition before the
  restart: each is copied to the new topic once, and records of the old
  topic are not taken for lost copies.  A copy given up (too large) next
  to one appended before the crash stays given up (-2).
* A power loss (either durability) that keeps a commit's log append but
  loses its COMMITTING row (simulated by restoring sluice.db): start-up
  finds its marker and records it COMMITTED; nothing is appended twice and
  a later commit is still appended.  A marker whose commit was lost
  re-attaches nothing.

Env: SLUICED.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_TXN_END, API_TXN_PREPARE, Broker, Conn,  # noqa: E402
                     ConnectionClosed, ERR_NONE, TXN_COMMIT, TXN_COMMITTED,
                     TXN_DISCARDED, TXN_PENDING,
                     build_batch, check, check_eq, dead_letter_offsets,
                     fetch_all, log, segment_batches,
                     parse_txn_end, parse_txn_prepare, pipeline, run,
                     txn_describe, txn_end, txn_end_body, txn_list,
                     txn_prepare, txn_prepare_body, wait_for)

POINTS = ("txn_prepare_stored", "txn_commit_marked_committing",
          "txn_commit_appended", "txn_commit_marked")


def payloads(addr, topic, partitions):
    out = []
    for p in range(partitions):
        out += [r.value for r in fetch_all(addr, topic, p)]
    return out


def dies(fn):
    """Runs fn, which must lose its connection (the broker exits)."""
    try:
        fn()
    except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as e:
        return str(e) or type(e).__name__
    raise AssertionError("the request was answered: the crash point was "
                         "not reached")


def crash_at(point):
    b = Broker(name="txn-kill-" + point, env={"SLUICED_CRASH_AT": point})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
    value = b"order-of-" + point.encode()
    txn = None
    with Conn(b.addr) as c:
        if point == "txn_prepare_stored":
            dies(lambda: txn_prepare(c, "shop", "orders", 0, [(b"k", value)]))
        else:
            err, _, txn, _ = txn_prepare(c, "shop", "orders", 0,
                                         [(b"k", value)])
            check_eq(err, ERR_NONE, "prepare")
            if point == "txn_commit_marked":
                # the mark follows the answer (txn_api.c submit_mark)
                err, msg, state, off = txn_end(c, "shop", txn, TXN_COMMIT)
                # offset 0 is the commit marker (docs/transactions.md)
                check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 1),
                         "commit answered before the mark (%s)" % msg)
            else:
                dies(lambda: txn_end(c, "shop", txn, TXN_COMMIT))
    b.proc.wait(20)
    check_eq(b.proc.returncode, 137, "broker exit status at %s" % point)
    b.kill9()
    b.env = {}
    b.start()
    with Conn(b.addr) as c:
        if txn is None:
            # the client never learnt the id: the operator view has it
            ls = txn_list(c, "shop")
            check_eq(len(ls), 1, "the prepare was stored before the crash")
            txn = list(ls)[0]
        err, msg, state, off = txn_end(c, "shop", txn, TXN_COMMIT)
        check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 1),
                 "retried commit after a crash at %s (%s)" % (point, msg))
        check_eq(txn_describe(c, txn)["state"], TXN_COMMITTED, "state")
        # once more: nothing appended twice
        check_eq(txn_end(c, "shop", txn, TXN_COMMIT)[:4],
                 (ERR_NONE, None, TXN_COMMITTED, 1), "second retry")
        # the broker goes on: a new transaction commits normally
        t2 = txn_prepare(c, "shop", "orders", 0, [(b"k", b"after")])[2]
        err, _, state, _ = txn_end(c, "shop", t2, TXN_COMMIT)
        check_eq((err, state), (ERR_NONE, TXN_COMMITTED),
                 "a new commit after the restart")
    check_eq(payloads(b.addr, "orders", 1), [value, b"after"],
             "the message exactly once after a crash at %s" % point)


def make_case(point):
    return lambda: crash_at(point)


def lose_db_after(b, commit):
    """A power loss that keeps the log but loses the SQLite WAL written by
    commit(): sluice.db is put back as it was before, after a kill -9."""
    import shutil
    saved = os.path.join(b.workdir, "db-before-commit")
    os.mkdir(saved)
    for f in ("sluice.db", "sluice.db-wal"):
        shutil.copy(os.path.join(b.data_dir, f), saved)
    commit()
    b.kill9()
    os.remove(os.path.join(b.data_dir, "sluice.db-shm"))
    for f in ("sluice.db", "sluice.db-wal"):
        shutil.copy(os.path.join(saved, f), b.data_dir)


def power_loss_keeps_the_log(durability):
    """A commit is appended (its marker first) right after its COMMITTING
    row is committed to the WAL, before that WAL is synced, and in fsync
    durability answered once the log is synced.  A power loss can then keep
    the log's copy and lose the row: the transaction is PENDING again and
    its commit sequence free.  Start-up finds the marker + commit pair and
    records the transaction COMMITTED: a retried end, or its check-back,
    appends nothing more (without the markers, the check-back appended it a
    second time), and a later commit takes the next sequence (it is not
    taken for a duplicate: answered, never appended)."""
    b = Broker(name="txn-power-loss-" + durability,
               sets={"log.durability": durability})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        t1 = txn_prepare(c, "shop", "orders", 0, [(b"k", b"first")])[2]
        t2 = txn_prepare(c, "shop", "orders", 0, [(b"k", b"second")])[2]

    def commit():
        with Conn(b.addr) as c:
            err, msg, state, off = txn_end(c, "shop", t1, TXN_COMMIT)
            check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 1),
                     "first commit, after its marker (%s)" % msg)
    lose_db_after(b, commit)
    b.start()
    with Conn(b.addr) as c:
        d = txn_describe(c, t1)
        check_eq((d["state"], d["log_offset"], d["commit_seq"]),
                 (TXN_COMMITTED, 1, 0),
                 "the lost row, found again through its marker")
        check_eq(txn_end(c, "shop", t1, TXN_COMMIT)[:4],
                 (ERR_NONE, None, TXN_COMMITTED, 1), "retried first commit")
        err, msg, state, off = txn_end(c, "shop", t2, TXN_COMMIT)
        check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 3),
                 "a commit after the loss goes to the next offset (%s)" % msg)
    check_eq(payloads(b.addr, "orders", 1), [b"first", b"second"],
             "each commit once")


def test_power_loss_keeps_only_the_marker():
    """A marker is trusted only with its commit right behind it: a power
    loss that keeps the marker but not the batch (cut off here) leaves the
    transaction PENDING, and its retried commit appends it once."""
    b = Broker(name="txn-power-loss-marker")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        t1 = txn_prepare(c, "shop", "orders", 0, [(b"k", b"first")])[2]

    def commit():
        with Conn(b.addr) as c:
            check_eq(txn_end(c, "shop", t1, TXN_COMMIT)[:4],
                     (ERR_NONE, None, TXN_COMMITTED, 1), "first commit")
    lose_db_after(b, commit)
    seg = os.path.join(b.data_dir, "orders-0", "%020d.log" % 0)
    check(os.path.getsize(seg) > 98, "the marker and the commit are written")
    os.truncate(seg, 98)  # the marker alone (broker/txn_marker.h)
    b.start()
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, t1)["state"], TXN_PENDING,
                 "a marker without its commit re-attaches nothing")
        err, msg, state, off = txn_end(c, "shop", t1, TXN_COMMIT)
        check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 2),
                 "the commit, appended again after the lone marker (%s)" % msg)
    check_eq(payloads(b.addr, "orders", 1), [b"first"], "the commit once")


def discards_then_crash(name):
    """A broker with a 2-partition dead-letter topic "dlq", which dies
    (SLUICED_CRASH_AT=txn_dead_appended) after appending the first copies
    of 12 discards, before recording them.  Returns it and their ids."""
    sets = {"transaction.timeout.ms": 100, "transaction.check.max": 1,
            "transaction.dead.letter.topic": "dlq"}
    b = Broker(name=name, sets=sets,
               env={"SLUICED_CRASH_AT": "txn_dead_appended"})
    b.start()
    ids = []
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 2)
        for k in range(12):
            err, _, t, _ = txn_prepare(c, "gc", "o", 0,
                                       [(None, b"lost-%d" % k)])
            check_eq(err, ERR_NONE, "prepare %d" % k)
            ids.append(t)
    b.proc.wait(30)
    check_eq(b.proc.returncode, 137, "the broker died after the appends")
    b.kill9()
    return b, ids


def test_recreated_topic_commit_row_lost():
    """A topic with five commits (recorded at offsets up to 9) is deleted
    and created again.  Its first commit there (offsets 0-1) is followed by
    20 plain messages, and a power loss keeps the log but loses the
    commit's row.  Start-up must find it by its marker: the highest
    recorded commit of that name is the old topic's, whose offset 9 holds
    a plain message now, so the search starts at the log's start.  (It
    started at 9, found nothing, and the retried end appended the message
    a second time.)"""
    b = Broker(name="txn-recreated-lost")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1)
        for i in range(5):
            t = txn_prepare(c, "shop", "orders", 0, [(b"k", b"old%d" % i)])[2]
            check_eq(txn_end(c, "shop", t, TXN_COMMIT)[0], ERR_NONE,
                     "old commit %d" % i)
        wait_for(lambda: txn_describe(c, t)["state"] == TXN_COMMITTED, 10,
                 what="the old commits recorded")
        check_eq(c.delete_topics(["orders"]), {"orders": ERR_NONE}, "delete")
        c.recreate_topic("orders", 1)
        new = txn_prepare(c, "shop", "orders", 0, [(b"k", b"new")])[2]

    def commit():
        with Conn(b.addr) as c:
            err, msg, state, off = txn_end(c, "shop", new, TXN_COMMIT)
            check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 1),
                     "the new commit (%s)" % msg)
            for i in range(20):
                check_eq(c.produce1("orders", 0,
                                    build_batch([(None, b"plain%d" % i)]))[0],
                         ERR_NONE, "plain %d" % i)

    lose_db_after(b, commit)
    b.start()
    with Conn(b.addr) as c:
        d = txn_describe(c, new)
        check_eq((d["state"], d["log_offset"]), (TXN_COMMITTED, 1),
                 "the new commit, found by its marker")
        err, msg, state, off = txn_end(c, "shop", new, TXN_COMMIT)
        check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, 1),
                 "its retried end (%s)" % msg)
    check_eq([v for v in payloads(b.addr, "orders", 1) if v == b"new"],
             [b"new"], "the new commit once")
    b.stop()


def test_dead_letter_crash_exactly_once():
    """12 discards on a 2-partition dead-letter topic: the first step
    appends 5 copies per partition (at most a dedup window's worth) and
    the broker dies before recording them.  After the restart the step
    reads them again with their numbers: the log knows them, nothing is
    appended twice, and the rest are copied once."""
    b, ids = discards_then_crash("txn-dead-crash")
    before = batches_on_disk(b, "dlq", 2)
    # all 12 are usually discarded by one tick (then 5 + 5); fewer if the
    # prepares straddled a tick; never more than 5 a partition
    check(1 <= before <= 10, "copies appended before the crash: %d" % before)
    log("  %d copies appended before the crash" % before)
    b.env = {}
    b.start()
    with Conn(b.addr) as c:
        wait_for(lambda: all(txn_describe(c, t, 1)["dead_letter_offset"] >= 0
                             for t in ids), 20, what="every copy recorded")
        recorded = {t: txn_describe(c, t, 1)["dead_letter_offset"] for t in ids}
        check(all(txn_describe(c, t, 1)["state"] == TXN_DISCARDED for t in ids),
              "still discarded")
    copies = dead_letter_offsets(b.addr, "dlq", 2)
    check_eq(sorted(copies), sorted(ids), "a copy of each")
    check_eq({t: v for t, v in copies.items() if len(v) != 1}, {},
             "no copy twice")
    check_eq({t: v[0] for t, v in copies.items()}, recorded,
             "the recorded offsets are the copies'")
    check_eq(b.log_text().count("not appended again"), before,
             "the copies appended before the crash were found in the log")
    b.stop()


def restart_recreating_dlq(b, sets, partitions):
    """Restarts b with the dead-letter topic off, deletes and re-creates
    "dlq" with `partitions`, then restarts it with `sets` (the topic on)."""
    b.stop()
    b.sets = dict(sets, **{"transaction.dead.letter.topic": ""})
    b.start()
    with Conn(b.addr) as c:
        check_eq(c.delete_topics(["dlq"]), {"dlq": ERR_NONE}, "dlq deleted")
        c.recreate_topic("dlq", partitions)
    b.stop()
    b.sets = dict(sets)
    b.start()


def test_dead_letter_topic_recreated():
    """The dead-letter topic deleted and re-created with fewer partitions
    while copies wait: 12 discards numbered on 2 partitions, 10 appended,
    none recorded (the broker dies).  The copies belong to the topic they
    were numbered for: on the new 1-partition topic, each is numbered again
    and copied once.  Then the topic is re-created again after every copy
    is recorded, and the broker restarted: start-up takes the records, now
    beyond the new topic's end, for another topic's and not for copies a
    power loss took (nothing is copied again), and the next copies go to
    the new topic once each."""
    b, ids = discards_then_crash("txn-dead-recreated")
    sets = dict(b.sets)
    b.env = {}

    def copied_once(txns):
        with Conn(b.addr) as c:
            wait_for(lambda: all(txn_describe(c, t, 1)["dead_letter_offset"]
                                 >= 0 for t in txns), 20,
                     what="every copy recorded")
            got = {t: txn_describe(c, t, 1) for t in txns}
        check(all(got[t]["state"] == TXN_DISCARDED for t in txns),
              "still discarded")
        check_eq(dead_letter_offsets(b.addr, "dlq", 1),
                 {t: [got[t]["dead_letter_offset"]] for t in txns},
                 "each copied once, at its recorded offset, in the new topic")

    restart_recreating_dlq(b, sets, 1)
    copied_once(ids)
    check_eq(b.log_text().count("not the topic the copies were numbered for"),
             1, "the change of topic logged")

    restart_recreating_dlq(b, sets, 1)
    more = []
    with Conn(b.addr) as c:
        for k in range(3):
            err, _, t, _ = txn_prepare(c, "gc", "o", 0,
                                       [(None, b"later-%d" % k)])
            check_eq(err, ERR_NONE, "later prepare %d" % k)
            more.append(t)
    copied_once(more)
    text = b.log_text()
    check("lost with the end of its log" not in text,
          "the old topic's records taken for lost copies")
    check("no longer exists" not in text, "a copy given up")
    b.stop()


def test_dead_letter_give_up_then_crash():
    """A copy that can never be written (larger than the dead-letter
    topic's segment.bytes) is given up (-2) and a smaller one discarded
    with it is copied; the broker dies right after the small one's append.
    The give-up must be recorded before that append: were the small copy
    in the log with the give-up unrecorded, the restarted broker would read
    the big one's sequence as below the log's last and record it "copied,
    offset unknown" (-3), which the old code did."""
    sets = {"transaction.timeout.ms": 100, "transaction.check.max": 1,
            "transaction.dead.letter.topic": "dlq"}
    b = Broker(name="txn-dead-give-up", sets=sets,
               env={"SLUICED_CRASH_AT": "txn_dead_appended"})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 1, {"segment.bytes": 1024})
        big = txn_prepare(c, "gc", "o", 0, [(None, b"B" * 1500)])[2]
        small = txn_prepare(c, "gc", "o", 0, [(None, b"small")])[2]
    b.proc.wait(30)
    check_eq(b.proc.returncode, 137, "the broker died after the append")
    b.kill9()
    b.env = {}
    b.start()
    with Conn(b.addr) as c:
        wait_for(lambda: txn_describe(c, small, 1)["dead_letter_offset"] >= 0,
                 20, what="the small copy recorded")
        at = txn_describe(c, small, 1)["dead_letter_offset"]
        check_eq(txn_describe(c, big, 1)["dead_letter_offset"], -2,
                 "the big copy given up")
    check_eq(dead_letter_offsets(b.addr, "dlq", 1), {small: [at]},
             "the small copy once, at its recorded offset; no big one")
    b.stop()


def test_too_large_commit_then_crash():
    """Two ends in one round: a commit larger than segment.bytes (lowered
    after its prepare), then a small one of the same partition; the broker
    dies right after the small one's append.  The big one is discarded in
    its end's own SQLite transaction, before anything is appended.  (It
    was discarded after the round's appends: the crash left it COMMITTING
    with a sequence below the small one's, start-up took it for "appended
    long ago" and recorded it COMMITTED with nothing in the log.)"""
    from harness import API_TXN_END, pipeline
    b = Broker(name="txn-too-large-crash")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("orders", 1, {"segment.bytes": 1 << 20})
        big = txn_prepare(c, "g", "orders", 0, [(b"k", b"x" * 5000)])[2]
        small = txn_prepare(c, "g", "orders", 0, [(b"k", b"small")])[2]
        c.alter_configs("orders", {"segment.bytes": 4096})
    b.stop()
    b.env = {"SLUICED_CRASH_AT": "txn_commit_appended"}
    b.start()
    with Conn(b.addr) as c:
        try:
            pipeline(c, API_TXN_END, 0, [txn_end_body("g", big, TXN_COMMIT),
                                         txn_end_body("g", small, TXN_COMMIT)])
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            pass
    b.proc.wait(20)
    check_eq(b.proc.returncode, 137, "the broker died after the append")
    b.kill9()
    b.env = {}
    b.start()
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, big)["state"], TXN_DISCARDED,
                 "the big commit after the restart")
        err, msg, state, _ = txn_end(c, "g", big, TXN_COMMIT)
        check_eq(state, TXN_DISCARDED, "its retried end (%d, %s)" % (err, msg))
        check(err != ERR_NONE, "its retried end answers an error")
        err, msg, state, _ = txn_end(c, "g", small, TXN_COMMIT)
        check_eq((err, state), (ERR_NONE, TXN_COMMITTED), "the small one (%s)" % msg)
    check_eq(payloads(b.addr, "orders", 1), [b"small"], "only the small one, once")
    b.stop()


def batches_on_disk(b, topic, partitions):
    """How many record batches the topic's segment files hold (the broker
    stopped)."""
    return sum(1 for part in range(partitions)
               for seg in b.segment_files(topic, part)
               for _ in segment_batches(seg))


N = 1000
CONNS = 8


def test_kill9_during_concurrent_commits():
    b = Broker(name="txn-kill9-stream")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("stream", 2)
        bodies = [txn_prepare_body("bulk", "stream", i % 2,
                                   build_batch([(None, b"m%04d" % i)]),
                                   timeout_ms=3600000) for i in range(N)]
        txns = []
        for r in pipeline(c, API_TXN_PREPARE, 1, bodies, window=200):
            err, msg, txn, _ = parse_txn_prepare(r, 1)
            check_eq(err, ERR_NONE, "prepare (%s)" % msg)
            txns.append(txn)
    value_of = {t: b"m%04d" % i for i, t in enumerate(txns)}
    acked = set()
    lock = threading.Lock()
    errors = []

    def committer(k):
        mine = txns[k::CONNS]

        def on_reply(i, r):
            err, msg, state, _ = parse_txn_end(r)
            if err != ERR_NONE or state != TXN_COMMITTED:
                errors.append((mine[i], err, msg, state))
            with lock:
                acked.add(mine[i])
        try:
            with Conn(b.addr) as c:
                pipeline(c, API_TXN_END, 0,
                         [txn_end_body("bulk", t, TXN_COMMIT) for t in mine],
                         window=16, on_reply=on_reply)
        except (ConnectionClosed, OSError):
            pass  # the broker was killed
    threads = [threading.Thread(target=committer, args=(k,), daemon=True)
               for k in range(CONNS)]
    for th in threads:
        th.start()
    wait_for(lambda: len(acked) >= N // 5, 30, interval=0.001,
             what="a fifth of the commits acknowledged")
    b.kill9()
    for th in threads:
        th.join(10)
    check_eq(errors, [], "commit errors before the kill")
    n_acked = len(acked)
    log("  killed after %d of %d commits were acknowledged" % (n_acked, N))
    check(n_acked < N, "the kill came after every commit (test too slow to "
          "kill mid-stream)")
    b.start()
    vals = payloads(b.addr, "stream", 2)
    seen = {}
    for v in vals:
        seen[v] = seen.get(v, 0) + 1
    twice = sorted(v for v, k in seen.items() if k > 1)
    check_eq(twice, [], "messages in the log more than once")
    missing = sorted(t for t in acked if value_of[t] not in seen)
    check_eq(missing, [], "acknowledged commits missing from the log")
    log("  after the restart: %d in the log (%d acknowledged)"
        % (len(vals), n_acked))
    # every commit retried: the rest appended, nothing twice
    with Conn(b.addr) as c:
        for r in pipeline(c, API_TXN_END, 0,
                          [txn_end_body("bulk", t, TXN_COMMIT) for t in txns],
                          window=200):
            err, msg, state, _ = parse_txn_end(r)
            check_eq((err, state), (ERR_NONE, TXN_COMMITTED),
                     "retried commit (%s)" % msg)
    vals = payloads(b.addr, "stream", 2)
    check_eq(sorted(vals), sorted(value_of.values()),
             "after retrying every commit: each message exactly once")


if __name__ == "__main__":
    run([("kill_at_" + p, make_case(p), 90) for p in POINTS] + [
        ("kill9_during_concurrent_commits",
         test_kill9_during_concurrent_commits, 180),
        ("power_loss_keeps_the_log_pagecache",
         lambda: power_loss_keeps_the_log("pagecache"), 60),
        ("power_loss_keeps_the_log_fsync",
         lambda: power_loss_keeps_the_log("fsync"), 60),
        ("power_loss_keeps_only_the_marker",
         test_power_loss_keeps_only_the_marker, 60),
        ("dead_letter_crash_exactly_once",
         test_dead_letter_crash_exactly_once, 90),
        ("dead_letter_topic_recreated", test_dead_letter_topic_recreated, 90),
        ("dead_letter_give_up_then_crash",
         test_dead_letter_give_up_then_crash, 60),
        ("too_large_commit_then_crash", test_too_large_commit_then_crash, 60),
        ("recreated_topic_commit_row_lost",
         test_recreated_topic_commit_row_lost, 60),
    ])
