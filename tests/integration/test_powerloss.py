#!/usr/bin/env python3
"""Power loss: what the broker synced survives, what it did not sync is
gone, and it still keeps its promises.

The broker runs under libpowercut.so (tests/integration/powercut.c). The
shim journals what every write to the data directory replaces, and when
each fdatasync/fsync began and returned. The test kills the broker with
SIGKILL, then `powercut_apply()` undoes every write that no completed sync
covers. That is the worst case a power cut allows: every unsynced byte
lost. SQLite's -shm file is deleted, as a reboot would. Then the broker
starts again on what is left.

* produce_fsync: a producer writes numbered messages with acks=all to
  an fsync-durability topic. There are three power cuts at random
  moments. After each one, every acknowledged message is in the log,
  exactly once and in order, and the broker takes new messages.
* transactions: the load of test_txn_soak.py (producers that commit,
  roll back or abandon, a checker that answers check-backs from their
  decisions, an fsync and a page-cache topic), with power cuts instead
  of kill -9. After each cut, every commit acknowledged on the fsync
  topic is in its log. In the end, once the checker has resolved
  everything, every decided commit is in the log exactly once, nothing
  else is, and every transaction ends as decided. In page-cache
  durability a cut takes the log copies of acknowledged commits too:
  start-up appends them again (their rows keep the batch until the log is
  synced) or, if their rows went with them, check-back commits them
  again, once.
* reappend_disk_full: a page-cache commit recorded COMMITTED, its log
  copy taken by a power cut, and the disk full at the next start, so
  that appending it again fails. Its row must keep the batch, and the
  start after that (space freed) appends it, once.
* dead_letter_copies_lost: dead-letter copies recorded in sluice.db (the
  step that records them waits for its WAL sync), their page-cache log
  copies taken by the cut: start-up copies them again, once each.  And the rollback
  acknowledged just before the cut is still a rollback after it.

SOAK_SEED=<n> replays the random choices.

Env: SLUICED, POWERCUT (path of libpowercut.so).
"""
import os
import random
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, ConnectionClosed, ERR_NONE,  # noqa: E402
                     TXN_COMMIT, TXN_COMMITTED, TXN_ROLLBACK, TXN_ROLLED_BACK,
                     build_batch, check, check_eq,
                     dead_letter_offsets, fetch_all, kept_batch, log,
                     need_program, run,
                     txn_describe, txn_end, txn_prepare, wait_for,
                     walk_segment)
import test_txn_soak as soak  # noqa: E402

HDR = struct.Struct("=IB3xQQQII")
MAGIC = 0x54554350


def powercut_apply(journal, data_dir):
    """Undoes every write of the journal that no completed sync of its
    file covers, newest first; deletes SQLite's -shm files.  Returns the
    number of writes undone."""
    with open(journal, "rb") as f:
        data = f.read()
    pending = {}
    pos = 0
    while pos + HDR.size <= len(data):
        magic, typ, seq, a, b, plen, dlen = HDR.unpack_from(data, pos)
        check_eq(magic, MAGIC, "powercut journal record at %d" % pos)
        end = pos + HDR.size + plen + dlen
        if end > len(data):
            break  # torn by the kill: its write never happened
        path = data[pos + HDR.size:pos + HDR.size + plen].decode()
        body = data[pos + HDR.size + plen:end]
        pos = end
        typ = chr(typ)
        if typ in "WT":
            pending.setdefault(path, []).append((seq, typ, a, b, body))
        elif typ == "E":
            pending[path] = [r for r in pending.get(path, []) if r[0] > a]
        elif typ == "R":
            old, new = path.split("\0")
            pending.pop(new, None)
            moved = pending.pop(old, [])
            if moved:
                pending[new] = moved
        elif typ == "U":
            pending.pop(path, None)
    undone = 0
    for path, recs in pending.items():
        if not os.path.exists(path):
            continue
        with open(path, "r+b") as f:
            for seq, typ, a, b, body in reversed(recs):
                if typ == "W":
                    if body:
                        f.seek(a)
                        f.write(body)
                    f.truncate(b)
                else:  # T: back to its size, then its cut bytes
                    f.truncate(b)
                    if body:
                        f.seek(a)
                        f.write(body)
                undone += 1
    for dirpath, _, files in os.walk(data_dir):
        for name in files:
            if name.endswith("-shm"):
                os.unlink(os.path.join(dirpath, name))
    return undone


class PowercutBroker(Broker):
    """A Broker whose kill9() is a power cut."""

    def __init__(self, name, sets=None):
        self.lib = need_program("POWERCUT")
        super().__init__(name=name, sets=sets)
        self.journal = None
        self.env.update({"LD_PRELOAD": self.lib,
                         "POWERCUT_ROOT": self.data_dir,
                         # ASan wants to be first in the library list
                         "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                          ":verify_asan_link_order=0").lstrip(":")})
        self.cuts = []

    def start(self, *args, **kwargs):
        # a journal per start, kept with the work directory
        self.journal = os.path.join(self.workdir, "powercut.%d" % (self.starts + 1))
        self.env["POWERCUT_JOURNAL"] = self.journal
        return super().start(*args, **kwargs)

    def kill9(self):
        super().kill9()
        if not self.journal or not os.path.exists(self.journal):
            return
        size = os.path.getsize(self.journal) if os.path.exists(self.journal) else 0
        n = powercut_apply(self.journal, self.data_dir)
        self.cuts.append(n)
        log("  power cut: %d unsynced writes undone (journal %d KiB)"
            % (n, size // 1024))


def test_produce_fsync():
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
    rnd = random.Random(seed)
    log("  SOAK_SEED=%d" % seed)
    b = PowercutBroker("powerloss-produce")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("pf", 2, configs={"durability": "fsync"})
    acked = {0: [], 1: []}
    sent = [0]
    stop = threading.Event()
    errors = []

    def producer():
        c = None
        while not stop.is_set():
            if c is None:
                try:
                    c = Conn(b.addr, timeout=5)
                except (ConnectionClosed, OSError):
                    time.sleep(0.02)
                    continue
            p = rnd.randrange(2)
            n = sent[0]
            sent[0] += 5
            vals = [b"m%07d" % (n + i) for i in range(5)]
            try:
                err, _ = c.produce1("pf", p, build_batch([(None, v) for v in vals]))
            except (ConnectionClosed, OSError):
                c.close()
                c = None
                continue
            if err != ERR_NONE:
                errors.append((p, err))
                continue
            acked[p].extend(vals)
        if c is not None:
            c.close()

    def verify(when):
        for p in range(2):
            # acknowledged before the read (the producer goes on meanwhile)
            want = list(acked[p])
            got = [r.value for r in fetch_all(b.addr, "pf", p)]
            check_eq(len(got), len(set(got)), "%s: no message twice in pf-%d" % (when, p))
            check_eq(got, sorted(got), "%s: pf-%d in the order sent" % (when, p))
            missing = sorted(set(want) - set(got))
            check_eq(missing[:5], [], "%s: acknowledged messages lost from pf-%d "
                     "(%d of them; seed %d)" % (when, p, len(missing), seed))

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    try:
        for cycle in range(3):
            time.sleep(rnd.uniform(0.5, 2.0))
            b.kill9()
            b.start()
            verify("after power cut %d" % cycle)
    finally:
        stop.set()
        th.join(30)
    check_eq(errors, [], "produce errors")
    verify("at the end")
    n = sum(len(v) for v in acked.values())
    log("  %d messages acknowledged, %s writes undone by the cuts" % (n, b.cuts))
    check(n >= 500, "too little load to mean anything")
    check(sum(b.cuts) > 0, "the cuts undid nothing: the shim saw no write")


def test_transactions():
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
    rnd = random.Random(seed)
    log("  SOAK_SEED=%d" % seed)
    b = PowercutBroker("powerloss-txn", sets=soak.BROKER_SETS)
    s = soak.Soak(b, seed)

    def fsync_commits_kept(cycle):
        with s.lock:
            acked = [t for t, d in s.acked.items()
                     if d == soak.TXN_COMMIT and s.topic_of[t] == "soak-fsync"]
        seen = soak.log_tokens(b.addr, ["soak-fsync"])
        missing = sorted(t for t in acked if t not in seen)
        check_eq(missing[:5], [], "after power cut %d: acknowledged fsync "
                 "commits lost (%d; seed %d)" % (cycle, len(missing), seed))

    soak.run_soak(s, rnd, cycles=3, after_restart=fsync_commits_kept)
    soak.resolve_and_verify(s, rnd)
    log("  writes undone by the cuts: %s" % b.cuts)
    check(sum(b.cuts) > 0, "the cuts undid nothing: the shim saw no write")


def values(b, topic):
    return [r.value for r in fetch_all(b.addr, topic, 0)]


def wait_state(b, txn, want, what):
    wait_for(lambda: kept_batch(b, txn) == want, 10,
             what="%s: txn %d's row (state, batch kept) = %r" % (what, txn, want))


def test_reappend_disk_full():
    """docs/transactions.md "Power loss in page-cache durability": a
    commit whose log copy the cut took, and whose append at the next start
    fails (RLIMIT_FSIZE at the log's end: "disk full"), keeps its batch and
    is appended at the start after, once."""
    topic = "pc"
    filler = [b"f%05d" % i + b"." * 4000 for i in range(1024)]  # ~4 MiB
    # no periodic flush: nothing syncs the commit's log copy before the cut
    b = PowercutBroker("powerloss-reappend", sets={"log.flush.interval.ms": 600000})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic(topic, 1, configs={"segment.bytes": 64 << 20})
        for i in range(0, len(filler), 64):
            err, _ = c.produce1(topic, 0, build_batch([(None, v) for v in filler[i:i + 64]]))
            check_eq(err, ERR_NONE, "filler produce")
    b.stop()  # each start has its own journal: the cut spares the filler
    seg = b.segment_files(topic, 0)
    check_eq(len(seg), 1, "segment files")
    end = walk_segment(seg[0])[1]
    check_eq(os.path.getsize(seg[0]), end, "segment size (no preallocation)")

    b.start()
    value = b"committed-then-cut"
    with Conn(b.addr) as c:
        err, msg, txn, _ = txn_prepare(c, "g", topic, 0, [(b"k", value)])
        check_eq(err, ERR_NONE, "prepare (%s)" % msg)
        err, msg, state, off = txn_end(c, "g", txn, TXN_COMMIT)
        check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, len(filler) + 1),
                 "commit (%s)" % msg)
        wait_state(b, txn, ("COMMITTED", 1), "before the cut")
        # a prepare's WAL sync makes the COMMITTED row durable
        err, msg, _, _ = txn_prepare(c, "g", topic, 0, [(b"k", b"pending")])
        check_eq(err, ERR_NONE, "second prepare (%s)" % msg)
    b.kill9()
    check_eq(os.path.getsize(seg[0]), end, "segment size after the cut")
    for name in ("sluice.db", "sluice.db-wal"):
        path = os.path.join(b.data_dir, name)
        size = os.path.getsize(path) if os.path.exists(path) else 0
        check(size < end // 2, "%s is %d bytes: too close to the limit (%d) "
              "for the test to mean anything" % (name, size, end))

    # the disk is full at the log's end
    b.max_file_bytes = end
    b.start()
    wait_state(b, txn, ("COMMITTED", 1), "after the start on a full disk")
    text = b.log_text()
    check("appending it again failed" in text and "tried again at the next start" in text,
          "start-up logs the failed append")
    check_eq(values(b, topic), filler, "the log on a full disk")
    with Conn(b.addr) as c:
        check_eq(txn_describe(c, txn)["state"], TXN_COMMITTED, "TxnDescribe")
    Broker.kill9(b)  # a crash, not a cut: this start wrote nothing that counts

    b.max_file_bytes = None
    b.start()
    check("0 found in the log, 1 lost with it (power loss?) and appended again, once"
          in b.log_text(), "start-up appends it again")
    check_eq(values(b, topic), filler + [value], "the log after space was freed")
    wait_state(b, txn, ("COMMITTED", 0), "after the append")
    b.stop()
    b.start()
    check_eq(values(b, topic), filler + [value], "the log after one more start")
    b.stop()


def test_dead_letter_copies_lost():
    """Copies recorded, their log copies lost: copied again, once."""
    b = PowercutBroker("powerloss-dead-letter", sets={
        "transaction.timeout.ms": 100, "transaction.check.max": 1,
        "transaction.dead.letter.topic": "dlq",
        "log.flush.interval.ms": 600000})  # nothing syncs the copies
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 1)
    b.stop()  # each start has its own journal: the cut spares the topics
    b.start()
    with Conn(b.addr) as c:
        ids = [txn_prepare(c, "gp", "o", 0, [(None, b"dead-%d" % k)])[2]
               for k in range(3)]
        wait_for(lambda: all(txn_describe(c, t, 1)["dead_letter_offset"] >= 0
                             for t in ids), 10, what="the copies recorded")
        recorded = {t: txn_describe(c, t, 1)["dead_letter_offset"] for t in ids}
        check_eq(dead_letter_offsets(b.addr, "dlq", 1),
                 {t: [o] for t, o in recorded.items()}, "the copies")
        # a transaction rolled back just before the cut (the records are
        # durable already: the step that records copies waits for its WAL
        # sync); rolled back, it must stay so, not be discarded too
        err, _, rb, _ = txn_prepare(c, "gp", "o", 0, [(None, b"rolled-back")])
        check_eq(err, ERR_NONE, "prepare")
        check_eq(txn_end(c, "gp", rb, TXN_ROLLBACK)[0], ERR_NONE, "rollback")
    b.kill9()
    check_eq(walk_segment(b.segment_files("dlq", 0)[0])[0], None,
             "the cut took the copies")
    b.start()
    with Conn(b.addr) as c:
        wait_for(lambda: all(txn_describe(c, t, 1)["dead_letter_offset"] >= 0
                             for t in ids), 10, what="the copies recorded again")
        again = {t: txn_describe(c, t, 1)["dead_letter_offset"] for t in ids}
        # an acknowledged rollback was synced before its answer
        check_eq(txn_describe(c, rb)["state"], TXN_ROLLED_BACK,
                 "the rollback after the cut")
    check("3 recorded copy(ies) lost with the end of its log (power loss?)"
          in b.log_text(), "start-up says so")
    check_eq(dead_letter_offsets(b.addr, "dlq", 1),
             {t: [o] for t, o in again.items()}, "each copied again, once")
    b.stop()
    b.start()
    time.sleep(1.5)  # a step or more
    check_eq(dead_letter_offsets(b.addr, "dlq", 1),
             {t: [o] for t, o in again.items()}, "nothing more after a restart")
    b.stop()


if __name__ == "__main__":
    run([("produce_fsync", test_produce_fsync, 180),
         ("transactions", test_transactions, 240),
         ("reappend_disk_full", test_reappend_disk_full, 120),
         ("dead_letter_copies_lost", test_dead_letter_copies_lost, 60)])
