#!/usr/bin/env python3
"""Disk full: a clear error, never a crash, a hang or lost data
(docs/storage.md "Disk full and I/O errors", docs/protocol.md error table,
docs/transactions.md "Exactly-once commit").

"Disk full" is simulated with RLIMIT_FSIZE: the broker runs with a soft
limit of LIMIT bytes per file and SIGXFSZ ignored (Broker(max_file_bytes=)),
so a write that would grow a file past the limit is cut short by the kernel
(it writes up to the limit) and the next write fails with EFBIG.  SQLite's
files (sluice.db, -wal: a few MiB at most here) stay below the limit; the
topics have a 64 MiB segment.bytes, so their active segment is the file
that runs into it.  `prlimit --pid PID --fsize=unlimited:unlimited`
(util-linux) lifts the limit of the running broker: "space freed".

* produce_disk_full: batches (acks=1 and acks=-1, alternating) until the
  broker answers KAFKA_STORAGE_ERROR (56) — an answer in bounded time on
  the same, still open, connection, not a crash or a close; the broker
  logs the error.  Further batches that do not fit get 56 too; Metadata,
  ListOffsets and Fetch still answer; the log holds exactly the
  acknowledged messages, once, in order, every batch whole (CRC checked),
  and the segment file is exactly as long as those batches (the partial
  write was cut back).  After lifting the limit: produce succeeds at the
  next offset, the log grows past the old limit with no gap or garbage,
  and after a clean restart it is read back the same.
* txn_commit_disk_full: on a topic whose log is a few KiB below the limit,
  half messages are prepared (SQLite, unaffected); a commit that fits is
  appended; commits that do not fit answer 56 with state COMMITTING,
  append nothing, and stay COMMITTING (TxnDescribe, TxnList); a retry
  while still full answers 56 again.  After lifting the limit the retried
  commit appends the message exactly once (COMMITTED, its offset), and a
  second retry answers the same offset and appends nothing.
* txn_retry_order_after_disk_full: commits a then b fail; both are retried
  while still full (b, then a); after lifting the limit a's retry lands
  first; b's retry must still append b, once.
* txn_other_commit_before_retry: a commit fails (disk full, 56); space is
  freed; another transaction of the same partition commits first; then the
  failed one is retried: it must be appended exactly once (not taken for
  "appended long ago" because a later commit sequence reached the log).
* txn_stale_retry_across_rounds: in fsync durability (every fdatasync
  slowed by SLOWSYNC), a second end of the same transaction, on another
  connection, reads its commit sequence while the first end's round waits
  for its WAL sync; the first append fails (disk full) and releases the
  sequence; space is freed and the producer retries at once.  The second
  end must be refused (56, nothing appended: the round that would append
  it reads the transaction's row again and finds the sequence released)
  and the retry appended, once (without that: twice).
* txn_stale_retry_of_a_discarded_commit: the same race with a commit
  larger than segment.bytes and a smaller commit appended behind it: the
  second end must not be answered COMMITTED (it was, at offset -1, with
  nothing in the log, when the released sequence looked "appended long
  ago").
* resequenced_commit_row_lost: a commit that failed on the full disk is
  retried, re-sequenced and appended; a power loss takes its row (not
  the log): start-up finds it by its marker, and it is in the log once.
* log_sync_failure_is_for_good / wal_sync_failure_is_for_good: a failed
  fdatasync (slowsync's SLOWSYNC_FAIL_WHEN) of a segment / of the
  sluice.db WAL: nothing waiting for it is acknowledged, and nothing
  after it either once syncs work again, until a restart, which recovers
  what was acknowledged before.
* restart_after_disk_full: failed produces and a failed commit (COMMITTING)
  while full, then kill -9 with the limit still in force, and a restart
  without it: every batch of the log decodes (CRC), the acknowledged
  messages are there once and in order, nothing refused is, start-up
  recovery appends the COMMITTING transaction exactly once, retrying its
  commit appends nothing more, and the broker takes new messages.
* restart_after_other_commit: as txn_other_commit_before_retry, but the
  broker is killed before the retry: start-up recovery must append the
  failed commit, once.
* dead_letter_disk_full: discarded transactions copied to a dead-letter
  topic whose log is 2 KB below the limit: the two copies that fit are
  appended and recorded, the next fails (logged), and the smaller ones
  after it, which would fit, wait with it, unrecorded, through the steps
  while full.  Once the
  limit is lifted every copy lands once, in the order they were numbered
  (txn id order), at the recorded offsets, the partial write cut back;
  a restart copies nothing more.

Env: SLUICED.  Skipped (77) when prlimit is not installed.
"""
import os
import shutil
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_TXN_END, Broker,  # noqa: E402
                     Conn, ConnectionClosed, DecodeError,
                     dead_letter_records,
                     ERR_INVALID_TXN_STATE, ERR_KAFKA_STORAGE_ERROR,
                     ERR_MESSAGE_TOO_LARGE, ERR_NONE, ERR_REQUEST_TIMED_OUT,
                     LIST_OFFSETS_LATEST,
                     SkipTest, TXN_COMMIT, TXN_COMMITTED, TXN_COMMITTING,
                     TXN_DISCARDED,
                     TXN_PENDING, TestFailure, build_batch, check,
                     check_eq, decode_batches, log, need_program,
                     parse_txn_end, run, run_cmd, txn_describe, txn_end,
                     txn_end_body, txn_list, txn_prepare, wait_for,
                     walk_segment)

LIMIT = 6 << 20            # RLIMIT_FSIZE of the broker: "the disk"
SEGMENT_BYTES = 64 << 20   # the active segment grows into LIMIT, no roll
TOPIC_CONF = {"segment.bytes": SEGMENT_BYTES}
ANSWER_WITHIN = 5.0        # seconds: an error must come back, not a hang
SIGXFSZ_BIT = 1 << (25 - 1)  # SIGXFSZ = 25 on Linux, in SigIgn


# --------------------------------------------------------------------------
# The limit.

def prlimit_path():
    p = shutil.which("prlimit")
    if not p:
        raise SkipTest("prlimit (util-linux) is not installed: cannot lift "
                       "the broker's RLIMIT_FSIZE to show it recovers")
    return p


def fsize_limit(pid):
    """The soft RLIMIT_FSIZE of process pid: bytes, or None (unlimited)."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max file size"):
                soft = line[len("Max file size"):].split()[0]
                return None if soft == "unlimited" else int(soft)
    raise TestFailure("no 'Max file size' in /proc/%d/limits" % pid)


def sigxfsz_ignored(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & SIGXFSZ_BIT)
    return False


def limited_broker(name, env=None):
    prlimit_path()
    b = Broker(name=name, max_file_bytes=LIMIT, env=env)
    b.start()
    check_eq(fsize_limit(b.proc.pid), LIMIT, "the broker's RLIMIT_FSIZE")
    check(sigxfsz_ignored(b.proc.pid), "SIGXFSZ is not ignored by the "
          "broker (a write past the limit would kill it)")
    return b


def lift_limit(b):
    """Space freed: the running broker's RLIMIT_FSIZE becomes unlimited."""
    b.check_alive("the disk-full phase")
    rc, out, err = run_cmd([prlimit_path(), "--pid", str(b.proc.pid),
                            "--fsize=unlimited:unlimited"], timeout=10)
    check_eq(rc, 0, "prlimit exit status (stderr: %r)" % err)
    check_eq(fsize_limit(b.proc.pid), None, "RLIMIT_FSIZE after prlimit")
    log("  limit lifted")


# --------------------------------------------------------------------------
# The log.

def log_file_bytes(b, topic, partition=0):
    """Bytes of the partition's .log segment files on disk, up to the end
    of the last whole batch of each.  A file may go on past it only with
    zeros (what fsync durability preallocates, docs/storage.md): anything
    else there is left over from a partial write."""
    files = b.segment_files(topic, partition)
    check(files, "no segment file for %s-%d" % (topic, partition))
    total = 0
    for path in files:
        pos = walk_segment(path)[1]
        with open(path, "rb") as f:
            f.seek(pos)
            rest = f.read()
        check(rest.count(0) == len(rest), "%s: %d bytes after the last batch, "
              "not all zeros (a partial write left behind?)"
              % (os.path.basename(path), len(rest)))
        total += pos
    return total


def read_log(addr, topic, partition=0):
    """Every record of the partition from offset 0 to the high watermark,
    batch by batch: each must decode whole (CRC checked by the decoder)
    and start where the previous one ended.  Returns (records, batch bytes
    in total, high watermark)."""
    recs = []
    nbytes = 0
    off = 0
    deadline = time.monotonic() + 30
    with Conn(addr, timeout=15) as c:
        while True:
            check(time.monotonic() < deadline, "reading %s-%d timed out at "
                  "offset %d" % (topic, partition, off))
            fp = c.fetch1(topic, partition, off, max_wait_ms=0, pmax=8 << 20)
            check_eq(fp.error, ERR_NONE, "Fetch %s-%d@%d error"
                     % (topic, partition, off))
            hw = fp.high_watermark
            if off >= hw:
                break
            try:
                batches = decode_batches(fp.records or b"")
            except DecodeError as e:
                raise TestFailure("corrupt batch in %s-%d at or after offset "
                                  "%d: %s" % (topic, partition, off, e))
            check(batches, "Fetch %s-%d@%d (high watermark %d): no whole "
                  "batch in %d bytes" % (topic, partition, off, hw,
                                         len(fp.records or b"")))
            for bt in batches:
                check_eq(bt.base_offset, off, "base offset of the next batch "
                         "of %s-%d" % (topic, partition))
                check_eq(len(bt.records), bt.last_offset_delta + 1,
                         "records in the batch at %d" % off)
                for k, r in enumerate(bt.records):
                    check_eq(r.offset, off + k, "record offset")
                if not bt.is_control:  # commit markers take an offset only
                    recs.extend(bt.records)
                nbytes += 12 + bt.batch_length
                off += bt.last_offset_delta + 1
    check_eq(off, hw, "end of the last batch vs the high watermark")
    return recs, nbytes, hw


def check_log(b, topic, expected, refused=(), what=""):
    """The log holds exactly `expected` (values, in order, once), none of
    `refused`, and the segment files hold those batches and nothing else."""
    recs, nbytes, hw = read_log(b.addr, topic)
    values = [r.value for r in recs]
    if values != list(expected):
        dup = len(values) - len(set(values))
        missing = [v[:24] for v in expected if v not in set(values)]
        extra = [v[:24] for v in values if v not in set(expected)]
        raise TestFailure("%s: the log holds %d messages (%d duplicates), "
                          "expected %d; missing %r; unexpected %r"
                          % (what, len(values), dup, len(expected),
                             missing[:5], extra[:5]))
    bad = set(values) & set(refused)
    check(not bad, "%s: %d refused messages are in the log"
          % (what, len(bad)))
    on_disk = log_file_bytes(b, topic)
    check_eq(on_disk, nbytes, "%s: bytes of %s's segment files vs its "
             "batches (a partial write left behind?)" % (what, topic))
    return recs, nbytes, hw


# --------------------------------------------------------------------------
# Messages.

def value(tag, n, size):
    """A recognisable value of `size` bytes: the tag repeated, so garbage
    or a shifted write shows up."""
    head = b"%s-%06d:" % (tag.encode(), n)
    body = (b"%s/%06d|" % (tag.encode(), n)) * (size // 8 + 2)
    return (head + body)[:size]


def timed_produce(c, topic, batch, acks, what):
    """One Produce on c; the answer must come within ANSWER_WITHIN s on the
    same connection.  Returns (error, base offset, seconds)."""
    t0 = time.monotonic()
    try:
        err, base = c.produce1(topic, 0, batch, acks=acks)
    except socket.timeout:
        raise TestFailure("%s: no answer within %.0f s (hang)"
                          % (what, c.sock.gettimeout()))
    except (ConnectionClosed, OSError) as e:
        raise TestFailure("%s: connection lost instead of an error answer: "
                          "%s: %s" % (what, type(e).__name__, e))
    dt = time.monotonic() - t0
    check(dt < ANSWER_WITHIN, "%s: answered after %.1f s" % (what, dt))
    return err, base, dt


def fill(b, c, topic, free, batch_bytes=200 << 10):
    """Produces (acks=1) until the topic's log file is about `free` bytes
    below LIMIT.  Returns the values appended, in order."""
    vals = []
    n = 0
    while True:
        room = LIMIT - free - log_file_bytes(b, topic)
        if room < 1024:
            break
        size = min(batch_bytes, room) - 100  # record/batch overhead
        v = value("fill", n, size)
        batch = build_batch([(b"fill", v)])
        check(len(batch) <= room, "fill batch of %d bytes for %d of room"
              % (len(batch), room))
        err, base, _ = timed_produce(c, topic, batch, 1, "fill %d" % n)
        check_eq((err, base), (ERR_NONE, len(vals)), "fill produce %d" % n)
        vals.append(v)
        n += 1
    left = LIMIT - log_file_bytes(b, topic)
    check(free <= left < free + 1024, "filled to %d bytes below the limit, "
          "wanted %d" % (left, free))
    return vals


def check_broker_logged(b, needle, what):
    b.logf.flush()
    text = b.log_text(max_lines=100000)
    check(needle in text, "%s: %r not in the broker's log" % (what, needle))


# --------------------------------------------------------------------------
# 1. Produce.

def test_produce_disk_full():
    b = limited_broker("diskfull-produce")
    topic = "full"
    with Conn(b.addr) as c0:
        c0.create_topic(topic, 1, TOPIC_CONF)
    acked = []          # values acknowledged, in log order
    refused = []
    acked_bytes = 0
    c = Conn(b.addr, timeout=15)
    n = 0
    first_err = None
    size = 100 << 10    # ~4 x 25 KiB per batch: about 60 batches to the limit
    while first_err is None:
        check(n < 200, "no error after %d batches (%d bytes acknowledged): "
              "the limit is not in force?" % (n, acked_bytes))
        vals = [value("p", n * 4 + k, size // 4) for k in range(4)]
        batch = build_batch([(b"k%d" % n, v) for v in vals])
        acks = 1 if n % 2 == 0 else -1
        before = log_file_bytes(b, topic)
        err, base, dt = timed_produce(c, topic, batch, acks,
                                      "produce %d (acks=%d)" % (n, acks))
        if err == ERR_NONE:
            check_eq(base, len(acked), "base offset of batch %d" % n)
            check(before + len(batch) <= LIMIT, "batch %d acknowledged but "
                  "it cannot fit below the limit (%d + %d > %d)"
                  % (n, before, len(batch), LIMIT))
            acked.extend(vals)
            acked_bytes += len(batch)
        else:
            check_eq(err, ERR_KAFKA_STORAGE_ERROR, "error of produce %d "
                     "(acks=%d) at the limit" % (n, acks))
            check(before + len(batch) > LIMIT, "batch %d refused although "
                  "it fits (%d + %d <= %d)" % (n, before, len(batch), LIMIT))
            check(before < LIMIT, "the log file reached the limit exactly: "
                  "no partial write to cut back (resize the batches)")
            first_err = (n, acks, dt, LIMIT - before)
            refused.extend(vals)
        n += 1
    log("  batch %d (acks=%d) refused with KAFKA_STORAGE_ERROR after %.3f s;"
        " %d messages (%d bytes) acknowledged; the kernel wrote %d bytes of"
        " it before EFBIG" % (first_err[0], first_err[1], first_err[2],
                              len(acked), acked_bytes, first_err[3]))
    b.check_alive("the first failed append")
    check_eq(log_file_bytes(b, topic), acked_bytes,
             "segment file size after the failed append (cut back to the "
             "acknowledged batches)")
    check_broker_logged(b, "File too large", "failed append")
    # More batches that do not fit, both acks, on the same connection and
    # a new one: each refused in bounded time, nothing written.
    with Conn(b.addr, timeout=15) as c2:
        for k, (conn, acks) in enumerate([(c, 1), (c, -1), (c2, -1),
                                          (c2, 1)]):
            vals = [value("r", k * 4 + j, size // 4) for j in range(4)]
            err, _, _ = timed_produce(conn, topic, build_batch(
                [(b"r", v) for v in vals]), acks, "refused produce %d "
                "(acks=%d)" % (k, acks))
            check_eq(err, ERR_KAFKA_STORAGE_ERROR, "produce %d (acks=%d) "
                     "while the disk is full" % (k, acks))
            refused.extend(vals)
            check_eq(log_file_bytes(b, topic), acked_bytes,
                     "segment file size after refused produce %d" % k)
        # The broker still serves: Metadata and ListOffsets on the
        # connection that got the errors, Fetch below.
        md = c.metadata([topic], version=1)
        check(topic in md.topics, "Metadata: no %s" % topic)
        terr, parts = md.topics[topic]
        check_eq((terr, parts.get(0, (None,))[0]), (ERR_NONE, ERR_NONE),
                 "Metadata error of %s while the disk is full" % topic)
        err, _, latest = c.list_offset1(topic, 0, LIST_OFFSETS_LATEST)
        check_eq((err, latest), (ERR_NONE, len(acked)),
                 "ListOffsets latest while the disk is full")
    b.check_alive("refused produces")
    _, _, hw = check_log(b, topic, acked, refused, "while the disk is full")
    check_eq(hw, len(acked), "high watermark while the disk is full")

    lift_limit(b)
    for k in range(4):
        acks = 1 if k % 2 == 0 else -1
        vals = [value("after", k * 4 + j, size // 4) for j in range(4)]
        batch = build_batch([(b"after", v) for v in vals])
        err, base, _ = timed_produce(c, topic, batch, acks,
                                     "produce %d after the limit was lifted"
                                     % k)
        check_eq((err, base), (ERR_NONE, len(acked)),
                 "produce %d (acks=%d) after the limit was lifted" % (k, acks))
        acked.extend(vals)
        acked_bytes += len(batch)
    c.close()
    check(log_file_bytes(b, topic) > LIMIT, "the log did not grow past the "
          "old limit")
    _, nbytes, _ = check_log(b, topic, acked, refused,
                             "after the limit was lifted")
    check_eq(nbytes, acked_bytes, "bytes of the acknowledged batches")
    b.restart()
    check_log(b, topic, acked, refused, "after a clean restart")


# --------------------------------------------------------------------------
# 2. Transactions.

GROUP = "orders-svc"


def prepare_ok(c, topic, v, what):
    err, msg, txn, part = txn_prepare(c, GROUP, topic, 0, [(b"order", v)],
                                      timeout_ms=3600000)
    check_eq((err, part), (ERR_NONE, 0), "prepare %s (%s)" % (what, msg))
    return txn


def commit_fails(c, txn, what):
    """TxnEnd(commit) while the disk is full: KAFKA_STORAGE_ERROR with a
    message, in bounded time; the transaction stays COMMITTING."""
    t0 = time.monotonic()
    err, msg, state, off = txn_end(c, GROUP, txn, TXN_COMMIT)
    dt = time.monotonic() - t0
    check(dt < ANSWER_WITHIN, "commit %s answered after %.1f s" % (what, dt))
    check_eq((err, state, off), (ERR_KAFKA_STORAGE_ERROR, TXN_COMMITTING, -1),
             "commit %s while the disk is full (message %r)" % (what, msg))
    check(msg, "commit %s: KAFKA_STORAGE_ERROR without a message" % what)
    d = txn_describe(c, txn)
    check_eq((d["error"], d["state"], d["log_offset"]),
             (ERR_NONE, TXN_COMMITTING, -1),
             "TxnDescribe of %s after its failed commit" % what)
    return msg


def copies(b, topic, v):
    return [r.value for r in read_log(b.addr, topic)[0]].count(v)


def offset_of(b, topic, v):
    """Where v is in the log (-2 if it is not)."""
    return next((r.offset for r in read_log(b.addr, topic)[0]
                 if r.value == v), -2)


def commit_ok(c, b, topic, txn, v, what):
    """TxnEnd(commit) answers success, COMMITTED at the offset where the
    message is in the log, exactly once."""
    err, msg, state, off = txn_end(c, GROUP, txn, TXN_COMMIT)
    offset = offset_of(b, topic, v)
    check_eq((err, state, off, copies(b, topic, v)),
             (ERR_NONE, TXN_COMMITTED, offset, 1),
             "commit %s: (error, state, offset, copies in the log) "
             "(message %r)" % (what, msg))
    d = txn_describe(c, txn)
    check_eq((d["state"], d["log_offset"]), (TXN_COMMITTED, offset),
             "TxnDescribe of %s after its commit" % what)


def recovered_once(c, b, topic, txn, v, what):
    """After a restart: txn is COMMITTED at the offset where its message is
    in the log, exactly once (start-up recovery appended it)."""
    offset = offset_of(b, topic, v)
    d = txn_describe(c, txn)
    check_eq((d["state"], d["log_offset"], copies(b, topic, v)),
             (TXN_COMMITTED, offset, 1),
             "transaction %s after the restart (state, offset, copies in "
             "the log)" % what)


def committing(c):
    return sorted(txn_list(c, GROUP, state_mask=1 << TXN_COMMITTING))


def test_txn_commit_disk_full():
    b = limited_broker("diskfull-txn")
    topic = "orders"
    with Conn(b.addr, timeout=15) as c:
        c.create_topic(topic, 1, TOPIC_CONF)
        expected = fill(b, c, topic, free=24000)
        room = LIMIT - log_file_bytes(b, topic)
        # prepares go to SQLite: unaffected by the full log
        v_small = value("small", 0, room // 4)
        v_big1 = value("big", 1, room + 4096)
        v_big2 = value("big", 2, room + 8192)
        t_small = prepare_ok(c, topic, v_small, "small")
        t_big1 = prepare_ok(c, topic, v_big1, "big1")
        t_big2 = prepare_ok(c, topic, v_big2, "big2")
        # one that fits is appended
        commit_ok(c, b, topic, t_small, v_small,
                  "small (fits)")
        expected.append(v_small)
        # those that do not fit: 56, COMMITTING, nothing appended
        msg = commit_fails(c, t_big1, "big1")
        log("  commit refused: %r" % msg)
        commit_fails(c, t_big2, "big2")
        check_eq(committing(c), sorted([t_big1, t_big2]),
                 "TxnList COMMITTING while the disk is full")
        check_broker_logged(b, "File too large", "failed commit append")
        check_log(b, topic, expected, [v_big1, v_big2],
                  "after the failed commits")
        # a retry while still full (of the last one to fail: the retry
        # order case is txn_retry_order_after_disk_full): the same answer,
        # still nothing appended
        commit_fails(c, t_big2, "big2 retried while full")
        check_log(b, topic, expected, [v_big1, v_big2],
                  "after a retried commit while full")
        b.check_alive("failed commits")

        lift_limit(b)
        commit_ok(c, b, topic, t_big1, v_big1,
                  "big1 retried after the limit was lifted")
        expected.append(v_big1)
        commit_ok(c, b, topic, t_big2, v_big2,
                  "big2 retried after the limit was lifted")
        expected.append(v_big2)
        check_eq(committing(c), [], "TxnList COMMITTING at the end")
        # second retries: the same offsets, nothing appended
        commit_ok(c, b, topic, t_big1, v_big1,
                  "big1, second retry")
        commit_ok(c, b, topic, t_big2, v_big2,
                  "big2, second retry")
        commit_ok(c, b, topic, t_small, v_small,
                  "small, retried")
    check_log(b, topic, expected, (), "after the retried commits")


def test_txn_retry_order_after_disk_full():
    """Two producers' commits fail; both retry while the disk is full (the
    first one last); once there is space the first one's retry lands
    first.  The second one's retry must still append its message."""
    b = limited_broker("diskfull-txn-retry-order")
    topic = "orders"
    with Conn(b.addr, timeout=15) as c:
        c.create_topic(topic, 1, TOPIC_CONF)
        expected = fill(b, c, topic, free=16000)
        room = LIMIT - log_file_bytes(b, topic)
        v_a = value("a", 0, room + 4096)
        v_b = value("b", 1, room + 8192)
        t_a = prepare_ok(c, topic, v_a, "a")
        t_b = prepare_ok(c, topic, v_b, "b")
        commit_fails(c, t_a, "a")
        commit_fails(c, t_b, "b")
        commit_fails(c, t_b, "b retried while full")
        commit_fails(c, t_a, "a retried while full")
        lift_limit(b)
        commit_ok(c, b, topic, t_a, v_a,
                  "a retried after the limit was lifted")
        expected.append(v_a)
        commit_ok(c, b, topic, t_b, v_b,
                  "b retried after a's retry landed")
        expected.append(v_b)
    check_log(b, topic, expected, (), "after the retried commits")


def a_fails_then_b_commits(b, c, topic):
    """On a topic filled close to the limit: a's commit fails (disk full),
    the space is freed, and another transaction b of the partition commits
    first.  Returns (values expected in the log, a's txn id, a's value)."""
    c.create_topic(topic, 1, TOPIC_CONF)
    expected = fill(b, c, topic, free=16000)
    room = LIMIT - log_file_bytes(b, topic)
    v_a = value("a", 0, room + 4096)
    v_b = value("b", 1, 2000)
    t_a = prepare_ok(c, topic, v_a, "a")
    t_b = prepare_ok(c, topic, v_b, "b")
    commit_fails(c, t_a, "a")
    lift_limit(b)
    commit_ok(c, b, topic, t_b, v_b, "b (after the limit was lifted)")
    expected.append(v_b)
    return expected, t_a, v_a


def test_txn_other_commit_before_retry():
    """A commit fails (disk full); space is freed; another transaction of
    the same partition commits first; then the failed one is retried: it
    must be appended, once."""
    b = limited_broker("diskfull-txn-other")
    topic = "orders"
    with Conn(b.addr, timeout=15) as c:
        expected, t_a, v_a = a_fails_then_b_commits(b, c, topic)
        # ...then the failed commit is retried: appended, once
        commit_ok(c, b, topic, t_a, v_a,
                  "a retried after b committed")
        expected.append(v_a)
        commit_ok(c, b, topic, t_a, v_a,
                  "a, second retry")
    check_log(b, topic, expected, (), "after the retried commit")


SLOW_SYNC_MS = 400  # txn_stale_retry_across_rounds: each fdatasync


def set_limit(b, limit):
    """The running broker's soft RLIMIT_FSIZE becomes limit bytes."""
    rc, out, err = run_cmd([prlimit_path(), "--pid", str(b.proc.pid),
                            "--fsize=%d:unlimited" % limit], timeout=10)
    check_eq(rc, 0, "prlimit exit status (stderr: %r)" % err)
    check_eq(fsize_limit(b.proc.pid), limit, "RLIMIT_FSIZE after prlimit")


def stale_round(b, c, c2, topic, expected, n, delay):
    """One try of txn_stale_retry_across_rounds: c2's end follows c's by
    delay seconds.  Returns c2's answer's message."""
    room = 16000
    set_limit(b, log_file_bytes(b, topic) + room)
    v = value("a", n, room + 4096)
    t = prepare_ok(c, topic, v, "a%d" % n)
    h = prepare_ok(c, topic, b"helper", "helper of a%d" % n)
    end = txn_end_body(GROUP, t, TXN_COMMIT)
    # First an "unknown" answer: a job that cannot complete early
    # (coord_job.early), so its round waits for its WAL sync (SLOW_SYNC_MS).
    # The commit, a quarter of a sync later, is then late too (a round with
    # hooks is pending): its batch waits for the next round, which the
    # syncer takes when the helper's sync is done, and its append comes a
    # sync after that.  The second end comes in between (delay after the
    # commit, about a sync): it reads the commit sequence, in a round of
    # its own.
    slow = SLOW_SYNC_MS / 1000.0
    corr_h = c.send_request(API_TXN_END, 0, txn_end_body(GROUP, h, 0))
    time.sleep(0.25 * slow)
    corr = c.send_request(API_TXN_END, 0, end)
    time.sleep(delay)
    corr2 = c2.send_request(API_TXN_END, 0, end)
    check_eq(parse_txn_end(c.request_reply(corr_h))[0], ERR_NONE,
             "the helper's unknown answer")
    err, msg, state, off = parse_txn_end(c.request_reply(corr))
    check_eq((err, state), (ERR_KAFKA_STORAGE_ERROR, TXN_COMMITTING),
             "the first commit of a%d, disk full (message %r)" % (n, msg))
    lift_limit(b)
    # the producer retries at once, before c2's round is appended
    err, msg, state, off = txn_end(c, GROUP, t, TXN_COMMIT)
    check_eq((err, state, off), (ERR_NONE, TXN_COMMITTED, offset_of(b, topic, v)),
             "the retry of a%d after space was freed (message %r)" % (n, msg))
    err2, msg2, state2, off2 = parse_txn_end(c2.request_reply(corr2))
    log("  a%d, second end %.2f s after the first: error %d (%r)"
        % (n, delay, err2, msg2))
    check_eq(copies(b, topic, v), 1, "copies of a%d in the log" % n)
    check_eq(err2 in (ERR_NONE, ERR_KAFKA_STORAGE_ERROR) and
             off2 in (-1, offset_of(b, topic, v)), True,
             "the second end of a%d: error %d, offset %d (message %r)"
             % (n, err2, off2, msg2))
    commit_ok(c2, b, topic, t, v, "a%d, retried on c2" % n)
    expected.append(v)
    return msg2 or ""


def slow_env():
    """Every fdatasync of the broker slowed by SLOW_SYNC_MS (SLOWSYNC)."""
    return {"LD_PRELOAD": need_program("SLOWSYNC"),
            "SLOWSYNC_MS": str(SLOW_SYNC_MS),
            "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                             ":verify_asan_link_order=0").lstrip(":")}


def hold_wal(b):
    """An operator's read transaction on sluice.db (close it when done):
    while it lasts, SQLite never restarts the WAL, whose header sync
    (slowed too) would hold the coordinator and put both ends of a stale
    round in one batch."""
    reader = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"),
                             isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM txn_half").fetchone()
    return reader


def stale_delays():
    """The second end must come after the syncer took the commit's round
    (0.75 sync after the commit) and before its append (1.75 syncs): tried
    in the middle first, then nearer the edges (a loaded machine stretches
    the timeline)."""
    return [k * SLOW_SYNC_MS / 1000.0 for k in (1.25, 1.1, 1.4, 1.0, 1.6)]


def test_txn_stale_retry_across_rounds():
    """A batch holding a job that cannot complete early (here a check-back
    answered "unknown"; in general a job that failed) has its commits
    appended after its WAL sync, while the coordinator runs the next
    batches; the batches behind it wait for it.  An end retried on
    another connection in that time reads the transaction's commit sequence
    (COMMITTING: "already") before the first append fails and releases it.
    If space is freed before the retry's round, that round must not append
    with the released sequence (broker/txn_commit.c recheck: it reads the
    row again): it answers KAFKA_STORAGE_ERROR.  Otherwise the producer's
    own retry, sequenced anew, appends the message a second time.  Every
    fdatasync is slowed (SLOWSYNC) so the rounds are far apart; the second
    end can still land in the first one's round (then it shares its
    answer), so this tries a few delays until the recheck answered once."""
    b = limited_broker("diskfull-txn-stale", env=slow_env())
    topic = "orders"
    exercised = False
    with Conn(b.addr, timeout=15) as c, Conn(b.addr, timeout=15) as c2:
        c.create_topic(topic, 1, TOPIC_CONF)
        expected = fill(b, c, topic, free=16000)
        c.alter_configs(topic, dict(TOPIC_CONF, durability="fsync"))
        reader = hold_wal(b)
        for n, delay in enumerate(stale_delays()):
            if "earlier append" in stale_round(b, c, c2, topic, expected, n,
                                               delay):
                exercised = True
                break
        reader.close()
    check(exercised, "the second end never read the released sequence "
          "(it always shared the first one's round): the race was not "
          "provoked")
    check_log(b, topic, expected, (), "after the retries")


def test_txn_stale_retry_of_a_discarded_commit():
    """A stale round, as in txn_stale_retry_across_rounds, with a commit
    that can never be appended (larger than segment.bytes, lowered after
    its prepare) and a smaller commit of the same partition behind it.  A
    second end of the big one, on another connection, about a sync later,
    must not be answered COMMITTED.  (It read the big one's sequence
    before its round discarded it, and with the small one's sequence above
    it in the log it passed for "appended long ago": COMMITTED at offset
    -1, nothing in the log, the row DISCARDED.  Since session 14 the
    discard happens in the big end's own SQLite transaction, so the second
    end reads DISCARDED; the round's recheck of retried ends would catch
    it too.)"""
    b = Broker(name="txn-stale-discarded", env=slow_env())
    b.start()
    topic = "small-segments"
    slow = SLOW_SYNC_MS / 1000.0
    with Conn(b.addr, timeout=15) as c, Conn(b.addr, timeout=15) as c2:
        c.create_topic(topic, 1, {"durability": "fsync"})
        reader = hold_wal(b)
        big = prepare_ok(c, topic, value("big", 0, 5000), "big")
        t_small = prepare_ok(c, topic, value("small", 0, 100), "small")
        h = prepare_ok(c, topic, b"helper", "helper")
        c.alter_configs(topic, {"durability": "fsync", "segment.bytes": 4096})
        end = txn_end_body(GROUP, big, TXN_COMMIT)
        # the "unknown" answer makes the round late (stale_round)
        corr_h = c.send_request(API_TXN_END, 0, txn_end_body(GROUP, h, 0))
        time.sleep(0.25 * slow)
        corr = c.send_request(API_TXN_END, 0, end)
        corr_s = c.send_request(API_TXN_END, 0,
                                txn_end_body(GROUP, t_small, TXN_COMMIT))
        time.sleep(1.25 * slow)
        corr2 = c2.send_request(API_TXN_END, 0, end)
        check_eq(parse_txn_end(c.request_reply(corr_h))[0], ERR_NONE,
                 "the helper's unknown answer")
        err, msg, state, _ = parse_txn_end(c.request_reply(corr))
        check_eq((err, state), (ERR_MESSAGE_TOO_LARGE, TXN_DISCARDED),
                 "the big commit (message %r)" % msg)
        err, msg, state, _ = parse_txn_end(c.request_reply(corr_s))
        check_eq((err, state), (ERR_NONE, TXN_COMMITTED),
                 "the small commit (message %r)" % msg)
        err2, msg2, state2, off2 = parse_txn_end(c2.request_reply(corr2))
        log("  second end: error %d, state %d, offset %d (%r)"
            % (err2, state2, off2, msg2))
        check(err2 in (ERR_INVALID_TXN_STATE, ERR_KAFKA_STORAGE_ERROR),
              "the second end of the discarded big commit: error %d, state "
              "%d, offset %d" % (err2, state2, off2))
        err3, msg3, state3, _ = txn_end(c2, GROUP, big, TXN_COMMIT)
        check_eq((err3, state3), (ERR_INVALID_TXN_STATE, TXN_DISCARDED),
                 "a retry of big (message %r)" % msg3)
        reader.close()
    vals = [r.value for r in read_log(b.addr, topic)[0]]
    check_eq([v[:5] for v in vals], [b"small"], "only the small commit")
    b.stop()


def failing_sync_env(b, suffix):
    """slowsync without delay, failing the syncs of files ending with
    suffix (EIO) while <workdir>/fail exists.  Returns (env, trigger)."""
    trigger = os.path.join(b.workdir, "fail")
    env = dict(slow_env(), SLOWSYNC_MS="0", SLOWSYNC_FAIL_WHEN=trigger,
               SLOWSYNC_FAIL_SUFFIX=suffix)
    return env, trigger


def test_log_sync_failure_is_for_good():
    """A segment's fdatasync fails (EIO) in fsync durability: the produce
    waiting for it is not acknowledged (REQUEST_TIMED_OUT), and the
    partition stays failed once the disk "recovers" (appends refused with
    KAFKA_STORAGE_ERROR, high watermark unchanged): a later sync that
    succeeded could vouch for pages the kernel dropped.  A restart
    recovers: what was acknowledged is there, and produce works again."""
    b = Broker(name="sync-fails-log", sets={"log.durability": "fsync"})
    b.env, trigger = failing_sync_env(b, ".log")
    b.start()
    with Conn(b.addr, timeout=15) as c:
        c.create_topic("t", 1)
        check_eq(c.produce1("t", 0, build_batch([(None, b"before")])),
                 (ERR_NONE, 0), "acknowledged before the failure")
        open(trigger, "w").close()
        res = c.produce([("t", 0, build_batch([(None, b"during")]))],
                        timeout_ms=1000)
        check_eq(res[("t", 0)][0], ERR_REQUEST_TIMED_OUT,
                 "a produce whose sync failed")
        os.remove(trigger)
        time.sleep(0.3)
        err, _ = c.produce1("t", 0, build_batch([(None, b"after")]))
        check_eq(err, ERR_KAFKA_STORAGE_ERROR, "a produce after the failure")
        check_eq(c.fetch1("t", 0, 0, max_wait_ms=0).high_watermark, 1,
                 "the high watermark after the failure")
    check("appends to it are refused" in b.log_text(10000),
          "the log says the failure is for good")
    b.stop()
    b.env = {}
    b.start()
    with Conn(b.addr, timeout=15) as c:
        err, base = c.produce1("t", 0, build_batch([(None, b"restarted")]))
        check_eq(err, ERR_NONE, "a produce after the restart")
    vals = [r.value for r in read_log(b.addr, "t")[0]]
    check_eq((vals[0], vals[-1]), (b"before", b"restarted"),
             "the log after the restart: %r" % vals)
    b.stop()


def test_wal_sync_failure_is_for_good():
    """The sluice.db WAL's fdatasync fails (EIO): the prepare waiting for
    it is not acknowledged, and neither is any later one once the disk
    "recovers", until a restart, after which the transaction prepared
    before the failure is there and prepares work again."""
    b = Broker(name="sync-fails-wal")
    b.env, trigger = failing_sync_env(b, "-wal")
    b.start()
    with Conn(b.addr, timeout=15) as c:
        c.create_topic("t", 1)
        kept = prepare_ok(c, "t", b"kept", "before the failure")
        open(trigger, "w").close()
        err, msg, _, _ = txn_prepare(c, GROUP, "t", 0, [(None, b"during")])
        check(err != ERR_NONE, "a prepare whose WAL sync failed (%s)" % msg)
        os.remove(trigger)
        err, msg, _, _ = txn_prepare(c, GROUP, "t", 0, [(None, b"after")])
        check(err != ERR_NONE, "a prepare after the failure (%s)" % msg)
    b.stop(expect_clean=False)
    b.env = {}
    b.start()
    with Conn(b.addr, timeout=15) as c:
        check_eq(txn_describe(c, kept)["state"], TXN_PENDING,
                 "the transaction prepared before the failure")
        prepare_ok(c, "t", b"restarted", "after the restart")
        commit_ok(c, b, "t", kept, b"kept", "the kept one")
    b.stop()


# --------------------------------------------------------------------------
# 3. kill -9 while full, restart without the limit.

def restart_unlimited(b):
    b.kill9()
    b.max_file_bytes = None
    b.start()
    check_eq(fsize_limit(b.proc.pid), None, "RLIMIT_FSIZE after the restart")


def test_restart_after_disk_full():
    b = limited_broker("diskfull-restart")
    topic = "full"
    with Conn(b.addr, timeout=15) as c:
        c.create_topic(topic, 1, TOPIC_CONF)
        acked = fill(b, c, topic, free=12000)
        room = LIMIT - log_file_bytes(b, topic)
        refused = []
        for k, acks in enumerate((1, -1, 1)):
            v = value("refused", k, room + 1000 * (k + 1))
            err, _, _ = timed_produce(c, topic, build_batch([(b"r", v)]),
                                      acks, "refused produce %d" % k)
            check_eq(err, ERR_KAFKA_STORAGE_ERROR, "produce %d (acks=%d) "
                     "while the disk is full" % (k, acks))
            refused.append(v)
        v_c = value("committing", 0, room + 2048)
        v_p = value("pending", 0, 3000)
        t_c = prepare_ok(c, topic, v_c, "c")
        t_p = prepare_ok(c, topic, v_p, "p")
        commit_fails(c, t_c, "c")
        check_eq(committing(c), [t_c], "TxnList COMMITTING before the kill")
    check_eq(log_file_bytes(b, topic), LIMIT - room,
             "segment file size before the kill")
    restart_unlimited(b)
    with Conn(b.addr, timeout=15) as c:
        # start-up recovery appended the COMMITTING transaction, once
        recovered_once(c, b, topic, t_c, v_c, "c")
        expected = acked + [v_c]
        check_log(b, topic, expected, refused, "after the restart")
        check_eq(txn_describe(c, t_p)["state"], TXN_PENDING,
                 "the pending transaction after the restart")
        # retrying its commit appends nothing more
        commit_ok(c, b, topic, t_c, v_c,
                  "c retried after the restart")
        check_log(b, topic, expected, refused, "after retrying c")
        commit_ok(c, b, topic, t_p, v_p,
                  "p after the restart")
        expected.append(v_p)
        # the broker takes what it refused before
        for k, v in enumerate(refused):
            end = read_log(b.addr, topic)[2]
            err, base, _ = timed_produce(c, topic, build_batch([(b"r", v)]),
                                         -1, "produce %d after the restart"
                                         % k)
            check_eq((err, base), (ERR_NONE, end),
                     "produce %d after the restart" % k)
            expected.append(v)
        check_eq(committing(c), [], "TxnList COMMITTING at the end")
    check_log(b, topic, expected, (), "at the end")


def test_resequenced_commit_row_lost():
    """A commit fails on the full disk (its sequence released, durably);
    space is freed and the retry takes a new sequence, is appended behind
    its marker and answered.  A power loss keeps the log and loses the
    retry's row (simulated: the broker killed and sluice.db put back as it
    was after the failure).  Start-up finds the marker and its batch:
    the row, COMMITTING without a sequence, is recorded COMMITTED there.
    (It was refused, sequenced anew and appended a second time.)"""
    b = limited_broker("diskfull-reseq-lost")
    topic = "orders"
    with Conn(b.addr, timeout=15) as c:
        c.create_topic(topic, 1, TOPIC_CONF)
        fill(b, c, topic, free=24000)
        room = LIMIT - log_file_bytes(b, topic)
        v = value("reseq", 0, room + 4096)
        t = prepare_ok(c, topic, v, "reseq")
        commit_fails(c, t, "reseq")
        time.sleep(0.5)
        saved = os.path.join(b.workdir, "db-after-failure")
        os.mkdir(saved)
        for f in ("sluice.db", "sluice.db-wal"):
            shutil.copy(os.path.join(b.data_dir, f), saved)
        lift_limit(b)
        commit_ok(c, b, topic, t, v, "reseq, retried after space was freed")
    b.kill9()
    for f in ("sluice.db", "sluice.db-wal"):
        shutil.copy(os.path.join(saved, f), b.data_dir)
    if os.path.exists(os.path.join(b.data_dir, "sluice.db-shm")):
        os.remove(os.path.join(b.data_dir, "sluice.db-shm"))
    b.max_file_bytes = None
    b.start()
    with Conn(b.addr, timeout=15) as c:
        check_eq(txn_describe(c, t)["state"], TXN_COMMITTED,
                 "the retried commit after the restart")
        check_eq(copies(b, topic, v), 1, "the message once")
        commit_ok(c, b, topic, t, v, "reseq, retried after the restart")
    b.stop()


def test_restart_after_other_commit():
    """A commit fails (disk full), space is freed, another transaction of
    the partition commits, and the broker is killed before the failed one
    is retried: start-up recovery must append it, once."""
    b = limited_broker("diskfull-restart-other")
    topic = "orders"
    with Conn(b.addr, timeout=15) as c:
        expected, t_a, v_a = a_fails_then_b_commits(b, c, topic)
    restart_unlimited(b)
    with Conn(b.addr, timeout=15) as c:
        recovered_once(c, b, topic, t_a, v_a, "a")
        expected.append(v_a)
        commit_ok(c, b, topic, t_a, v_a,
                  "a retried after the restart")
    check_log(b, topic, expected, (), "after the restart")


# --------------------------------------------------------------------------
# 4. Dead-letter copies.

def dead_letter_log(b):
    """[(txn id, offset)] of the copies in dlq-0, in log order (the fill's
    records have no sluice.txn.id)."""
    return [(txn, off) for _, off, txn in dead_letter_records(b.addr, "dlq", 1)
            if txn is not None]


def test_dead_letter_disk_full():
    prlimit_path()
    b = Broker(name="diskfull-dead-letter", max_file_bytes=LIMIT, sets={
        "transaction.timeout.ms": 100, "transaction.check.max": 1,
        "transaction.dead.letter.topic": "dlq"})
    b.start()
    check_eq(fsize_limit(b.proc.pid), LIMIT, "the broker's RLIMIT_FSIZE")
    with Conn(b.addr, timeout=15) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", 1, TOPIC_CONF)
        fill(b, c, "dlq", free=2000)
        ids = []
        # 600, 600, then 1500 (does not fit), then small ones that would
        # fit behind it: they must wait for it (a copy appended after a
        # later-numbered one would be taken for appended long ago)
        for k, size in enumerate((600, 600, 1500, 60, 60, 60, 60, 60)):
            err, _, t, _ = txn_prepare(c, "gf", "o", 0,
                                       [(None, value("dead", k, size))])
            check_eq(err, ERR_NONE, "prepare %d" % k)
            ids.append(t)

        def dead(t):
            return txn_describe(c, t, 1)["dead_letter_offset"]
        wait_for(lambda: "no dead-letter copy in dlq yet" in b.log_text(), 15,
                 what="a failed copy logged")
        landed = dead_letter_log(b)
        check_eq(len(landed), 2, "the copies that fit: %r" % landed)
        check_eq(landed, [(t, dead(t)) for t in ids[:len(landed)]],
                 "the first copies, in order, recorded at their offsets")
        time.sleep(2.5)  # steps while full: the rest wait, unrecorded
        check_eq(dead_letter_log(b), landed, "nothing more while full")
        check_eq([dead(t) for t in ids[len(landed):]],
                 [-1] * (len(ids) - len(landed)), "the rest unrecorded")
        log_file_bytes(b, "dlq")  # the partial write was cut back
        lift_limit(b)
        wait_for(lambda: all(dead(t) >= 0 for t in ids), 15,
                 what="every copy recorded")
        got = dead_letter_log(b)
        check_eq(got, [(t, dead(t)) for t in ids],
                 "each copy once, in numbering order, at its recorded offset")
    b.stop()
    b.start()
    time.sleep(1.5)  # a step or more
    check_eq(dead_letter_log(b), got, "nothing more after a restart")
    b.stop()


if __name__ == "__main__":
    run([
        ("produce_disk_full", test_produce_disk_full, 60),
        ("txn_commit_disk_full", test_txn_commit_disk_full, 60),
        ("txn_retry_order_after_disk_full",
         test_txn_retry_order_after_disk_full, 60),
        ("txn_other_commit_before_retry", test_txn_other_commit_before_retry,
         60),
        ("txn_stale_retry_across_rounds", test_txn_stale_retry_across_rounds,
         60),
        ("txn_stale_retry_of_a_discarded_commit",
         test_txn_stale_retry_of_a_discarded_commit, 60),
        ("restart_after_disk_full", test_restart_after_disk_full, 60),
        ("restart_after_other_commit", test_restart_after_other_commit, 60),
        ("resequenced_commit_row_lost", test_resequenced_commit_row_lost, 60),
        ("log_sync_failure_is_for_good", test_log_sync_failure_is_for_good, 60),
        ("wal_sync_failure_is_for_good", test_wal_sync_failure_is_for_good, 60),
        ("dead_letter_disk_full", test_dead_letter_disk_full, 60),
    ])
