#!/usr/bin/env python3
"""Idempotent producers: InitProducerId hands out unique producer ids, the
broker deduplicates a retried batch (same producer id, epoch and sequence
range) by answering with its original offset, rejects sequence gaps, and
keeps that state across a clean restart and across kill -9.  Producer ids
below 1000, the broker's own, are refused.  A producer idle for
producer.id.expiration.ms is forgotten.

Env: SLUICED.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, ERR_NONE, Writer,  # noqa: E402
                     build_batch, check, check_eq, fetch_all, run, wait_for)

API_INIT_PRODUCER_ID = 22
ERR_COORDINATOR_NOT_AVAILABLE = 15
ERR_OUT_OF_ORDER_SEQUENCE = 45
ERR_INVALID_PRODUCER_EPOCH = 47
ERR_INVALID_PRODUCER_ID_MAPPING = 49
ERR_UNKNOWN_PRODUCER_ID = 59


def init_producer_id(c, transactional_id=None, version=0):
    w = Writer().string(transactional_id).i32(60000)
    r = c.request(API_INIT_PRODUCER_ID, version, w.getvalue())
    throttle = r.i32()
    err = r.i16()
    pid = r.i64()
    epoch = r.i16()
    check(throttle == 0, "throttle %d" % throttle)
    return err, pid, epoch


def batch(pid, epoch, seq, n, tag):
    return build_batch([(b"k%d" % (seq + i), b"%s-%d" % (tag, seq + i))
                        for i in range(n)],
                       producer_id=pid, producer_epoch=epoch,
                       base_sequence=seq)


def end_offset(c, topic):
    res = c.list_offsets([(topic, 0, -1)])
    err, _, off = res[(topic, 0)]
    check_eq(err, ERR_NONE, "ListOffsets error")
    return off


def values(addr, topic):
    return [r.value for r in fetch_all(addr, topic, 0)]


def test_init_producer_id():
    b = Broker(name="idem-init")
    b.start()
    with Conn(b.addr) as c:
        pids = set()
        for v in (0, 1):
            err, pid, epoch = init_producer_id(c, version=v)
            check_eq(err, ERR_NONE, "InitProducerId v%d error" % v)
            check(pid >= 0, "producer id %d" % pid)
            check_eq(epoch, 0, "epoch")
            pids.add(pid)
        check_eq(len(pids), 2, "distinct producer ids")
        err, pid, _ = init_producer_id(c, transactional_id="txn-1")
        check_eq(err, ERR_COORDINATOR_NOT_AVAILABLE,
                 "InitProducerId with a transactional id")
    b.restart()
    with Conn(b.addr) as c:
        err, pid, _ = init_producer_id(c)
        check_eq(err, ERR_NONE, "InitProducerId after restart")
        check(pid not in pids, "producer id %d reused after restart" % pid)


def test_dedup_and_sequence_errors():
    b = Broker(name="idem-dedup")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        _, pid, epoch = init_producer_id(c)
        first = batch(pid, epoch, 0, 3, b"a")
        check_eq(c.produce1("idem", 0, first), (ERR_NONE, 0), "first batch")
        check_eq(c.produce1("idem", 0, first), (ERR_NONE, 0),
                 "retried batch answered with its original offset")
        check_eq(end_offset(c, "idem"), 3, "end offset after a duplicate")
        check_eq(c.produce1("idem", 0, batch(pid, epoch, 3, 2, b"a")),
                 (ERR_NONE, 3), "next batch")
        # an older batch still within the last five is a duplicate too
        check_eq(c.produce1("idem", 0, first), (ERR_NONE, 0),
                 "older duplicate")
        err, _ = c.produce1("idem", 0, batch(pid, epoch, 9, 1, b"gap"))
        check_eq(err, ERR_OUT_OF_ORDER_SEQUENCE, "sequence gap")
        err, _ = c.produce1("idem", 0, batch(pid + 1000, 0, 5, 1, b"u"))
        check_eq(err, ERR_UNKNOWN_PRODUCER_ID, "unknown producer not at 0")
        # a new epoch restarts the sequence; the old epoch is fenced
        check_eq(c.produce1("idem", 0, batch(pid, epoch + 1, 0, 1, b"e1")),
                 (ERR_NONE, 5), "new epoch at sequence 0")
        err, _ = c.produce1("idem", 0, batch(pid, epoch, 5, 1, b"old"))
        check_eq(err, ERR_INVALID_PRODUCER_EPOCH, "fenced epoch")
        check_eq(end_offset(c, "idem"), 6, "end offset")
        check_eq(len(values(b.addr, "idem")), 6, "records in the log")


def test_reserved_producer_ids_refused():
    """Producer ids below 1000 are the broker's own (transaction commits
    use 1).  A client batch with one is refused (49) and appends nothing:
    accepted, its epoch 7 fenced the commits' epoch 0, and every later
    commit to the partition was answered COMMITTED and never appended."""
    from harness import TXN_COMMIT, TXN_COMMITTED, txn_end, txn_prepare
    b = Broker(name="idem-reserved")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        for pid in (0, 1, 2, 999):
            err, _ = c.produce1("idem", 0, batch(pid, 7, 0, 1, b"rogue"))
            check_eq(err, ERR_INVALID_PRODUCER_ID_MAPPING,
                     "a batch of reserved producer id %d" % pid)
        check_eq(end_offset(c, "idem"), 0, "nothing appended")
        err, _, txn, _ = txn_prepare(c, "g", "idem", 0, [(None, b"order")])
        check_eq(err, ERR_NONE, "prepare")
        err, msg, state, off = txn_end(c, "g", txn, TXN_COMMIT)
        check_eq((err, state), (ERR_NONE, TXN_COMMITTED), "commit (%s)" % msg)
        check(off >= 0, "the commit's offset: %d" % off)
    check_eq(values(b.addr, "idem"), [b"order"], "the commit in the log")


def test_snapshot_ahead_of_a_cut_log():
    """A clean stop writes the producer snapshot (covering offsets 0-9);
    then a byte of batch 3 rots and the recovery checkpoint is gone, so
    start-up cuts the log at offset 3.  The snapshot, ahead of the log, is
    not used, not even in part: a retry of batch 8 is out of order (45),
    not a "duplicate" at offset 8, past the log's end, with nothing
    stored (as it was when the rejected snapshot stayed in memory)."""
    b = Broker(name="idem-snapshot-cut")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        _, pid, epoch = init_producer_id(c)
        sent = [batch(pid, epoch, i, 1, b"s") for i in range(10)]
        for i, bt in enumerate(sent):
            check_eq(c.produce1("idem", 0, bt), (ERR_NONE, i), "batch %d" % i)
    b.stop()
    seg = b.segment_files("idem", 0)[0]
    with open(seg, "r+b") as f:
        data = f.read()
        at = data.index(b"s-3")  # batch 3's value
        f.seek(at)
        f.write(b"X")
    os.remove(os.path.join(b.partition_dir("idem", 0), "recovery.ckpt"))
    b.start()
    with Conn(b.addr) as c:
        check_eq(end_offset(c, "idem"), 3, "the log cut at the rotten batch")
        err, base = c.produce1("idem", 0, sent[8])
        check_eq(err, ERR_OUT_OF_ORDER_SEQUENCE,
                 "a retry of batch 8 (answered offset %d)" % base)
        check_eq(c.produce1("idem", 0, sent[3]), (ERR_NONE, 3),
                 "batch 3 again, in sequence")
    check_eq(values(b.addr, "idem"), [b"s-%d" % i for i in range(4)],
             "the log")


def test_sequence_wraps():
    """Sequences wrap from 2^31-1 to 0, as Kafka's do: after a batch of
    2^31-2 records from 0, a 4-record batch at 2^31-2 ends at sequence 1
    and the next starts at 2.  (The sum
    overflowed: undefined behaviour, and the next batch was out of order,
    which Kafka clients take as fatal for the producer.)  The first batch
    claims 2^31-2 records to get there at once: compressed, so the broker
    counts them without unpacking."""
    big = 2 ** 31 - 2
    b = Broker(name="idem-wrap")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        _, pid, epoch = init_producer_id(c)
        first = build_batch([(None, b"x")], attributes=1, record_count=big,
                            last_offset_delta=big - 1, producer_id=pid,
                            producer_epoch=epoch, base_sequence=0)
        check_eq(c.produce1("idem", 0, first), (ERR_NONE, 0), "the big batch")
        wrap = batch(pid, epoch, 2 ** 31 - 2, 4, b"w")
        check_eq(c.produce1("idem", 0, wrap), (ERR_NONE, big),
                 "the batch across the wrap")
        check_eq(c.produce1("idem", 0, wrap), (ERR_NONE, big),
                 "its retry: a duplicate")
        check_eq(c.produce1("idem", 0, batch(pid, epoch, 2, 2, b"a")),
                 (ERR_NONE, big + 4), "the next batch, at sequence 2")
        err, _ = c.produce1("idem", 0, batch(pid, epoch, 0, 1, b"b"))
        check_eq(err, ERR_OUT_OF_ORDER_SEQUENCE, "sequence 0 again")
    b.restart()
    with Conn(b.addr) as c:
        check_eq(c.produce1("idem", 0, batch(pid, epoch, 4, 1, b"c")),
                 (ERR_NONE, big + 6), "after a restart, sequence 4")


def restart_keeps_state(kill):
    b = Broker(name="idem-restart", sets={"log.flush.interval.ms": 100})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        _, pid, epoch = init_producer_id(c)
        sent = []
        seq = 0
        for i in range(20):
            bt = batch(pid, epoch, seq, 5, b"r")
            check_eq(c.produce1("idem", 0, bt), (ERR_NONE, seq), "batch %d" % i)
            sent.append((seq, bt))
            seq += 5
    if kill:
        b.kill9()
        b.start()
    else:
        b.restart()
    with Conn(b.addr) as c:
        # the last five batches are remembered: each retry is a duplicate
        for s, bt in sent[-5:]:
            check_eq(c.produce1("idem", 0, bt), (ERR_NONE, s),
                     "retry of seq %d after restart" % s)
        check_eq(end_offset(c, "idem"), 100, "nothing appended twice")
        check_eq(c.produce1("idem", 0, batch(pid, epoch, seq, 1, b"n")),
                 (ERR_NONE, 100), "the producer continues in sequence")
        vals = values(b.addr, "idem")
        check_eq(len(vals), 101, "records")
        check_eq(len(set(vals)), 101, "no duplicate record")


def test_restart_clean():
    restart_keeps_state(kill=False)


def test_restart_kill9():
    restart_keeps_state(kill=True)


def test_idle_producer_expires():
    """producer.id.expiration.ms (1 s here; checked every 100 ms): a
    producer that has not written for that long is forgotten, as Kafka
    does — its next sequence answers UNKNOWN_PRODUCER_ID (59), a batch at
    sequence 0 starts it afresh — while one writing every 0.2 s is kept.
    On "quiet", written to by nobody else, the periodic check finds it (no
    snapshot is written there after a flush); on "idem" the snapshot after
    each flush does.  Either pass rewrites the snapshot, so a restart does
    not bring the forgotten producer back.  The key is validated (>= 1)
    and listed."""
    b = Broker(name="idem-expiry", sets={
        "producer.id.expiration.ms": 1000,
        "producer.id.expiration.check.interval.ms": 100,
        "log.flush.interval.ms": 100})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("idem", 1)
        c.create_topic("quiet", 1)
        _, idle, epoch = init_producer_id(c)
        _, busy, bepoch = init_producer_id(c)
        for t in ("idem", "quiet"):
            check_eq(c.produce1(t, 0, batch(idle, epoch, 0, 2, b"i")),
                     (ERR_NONE, 0), "the idle producer's batch to %s" % t)
        seq = 0

        def busy_writes():
            nonlocal seq
            err, _ = c.produce1("idem", 0, batch(busy, bepoch, seq, 1, b"b"))
            check_eq(err, ERR_NONE, "busy producer, sequence %d" % seq)
            seq += 1

        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            busy_writes()
            time.sleep(0.2)
        for t in ("idem", "quiet"):
            # due after 1.1 s; a loaded machine may run the pass later,
            # and the busy producer keeps writing meanwhile
            wait_for(lambda: busy_writes() or
                     "%s-0: expired 1 producer id(s)" % t in b.log_text(), 10,
                     interval=0.2, what="the expiry logged for %s" % t)
            err, _ = c.produce1(t, 0, batch(idle, epoch, 2, 1, b"i"))
            check_eq(err, ERR_UNKNOWN_PRODUCER_ID,
                     "the idle producer's next sequence to %s" % t)
        check_eq(c.produce1("idem", 0, batch(busy, bepoch, seq, 1, b"b")),
                 (ERR_NONE, 2 + seq), "the busy producer goes on")
        seq += 1
    b.restart()
    with Conn(b.addr) as c:
        for t in ("idem", "quiet"):
            err, _ = c.produce1(t, 0, batch(idle, epoch, 2, 1, b"i"))
            check_eq(err, ERR_UNKNOWN_PRODUCER_ID,
                     "after a restart, still forgotten on %s" % t)
        check_eq(c.produce1("idem", 0, batch(idle, epoch, 0, 1, b"again")),
                 (ERR_NONE, 2 + seq), "sequence 0: a new producer")
        check_eq(c.produce1("idem", 0, batch(idle, epoch, 1, 1, b"again")),
                 (ERR_NONE, 3 + seq), "and its next batch")
        check_eq(c.produce1("idem", 0, batch(busy, bepoch, seq, 1, b"b")),
                 (ERR_NONE, 4 + seq), "the busy producer, after the restart")
    exe = os.environ["SLUICED"]
    out = subprocess.run([exe, "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    check("producer.id.expiration.ms" in out, "the key in --help")
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([exe, "-d", d, "-l", "127.0.0.1:0",
                            "--set", "producer.id.expiration.ms=0"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode != 0, "an expiration of 0 is refused")
        check("producer.id.expiration.ms" in r.stderr,
              "the error names the key: %r" % r.stderr[-300:])


if __name__ == "__main__":
    run([
        ("init_producer_id", test_init_producer_id, 60),
        ("dedup_and_sequence_errors", test_dedup_and_sequence_errors, 60),
        ("reserved_producer_ids_refused", test_reserved_producer_ids_refused,
         60),
        ("snapshot_ahead_of_a_cut_log", test_snapshot_ahead_of_a_cut_log, 60),
        ("sequence_wraps", test_sequence_wraps, 60),
        ("restart_clean_keeps_producer_state", test_restart_clean, 90),
        ("restart_kill9_keeps_producer_state", test_restart_kill9, 90),
        ("idle_producer_expires", test_idle_producer_expires, 60),
    ])
