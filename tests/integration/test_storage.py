#!/usr/bin/env python3
"""Segment logs seen from outside: segments roll at segment.bytes and stay
readable (also after a restart and after kill -9), retention by bytes and by
time deletes whole old segments and moves the log start up, ListOffsets
earliest / latest / by timestamp, DeleteTopics.

Env: SLUICED.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_FETCH, Broker, Conn, ERR_NONE,  # noqa: E402
                     ERR_OFFSET_OUT_OF_RANGE, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                     Record, build_batch, check, check_eq, fetch_all,
                     fetch_body, frame, log, request_header, run, wait_for)

SEGMENT = 64 * 1024
RECORD = 1024
PER_BATCH = 16          # 16 x 1 KiB records = one ~16.5 KiB batch
TOTAL = 2 * 1024 * 1024  # bytes of values to produce
EARLIEST = -2
LATEST = -1


def value_of(i):
    head = b"%010d|" % i
    return head + bytes((i + j) & 0xFF for j in range(RECORD - len(head)))


def produce_values(addr, topic, start, count, per_batch=PER_BATCH,
                   timestamp=None):
    """Produce values value_of(start..start+count-1); returns the list of
    (base_offset, n) of each batch."""
    out = []
    with Conn(addr) as c:
        i = start
        while i < start + count:
            n = min(per_batch, start + count - i)
            batch = build_batch([(b"k%d" % j, value_of(j))
                                 for j in range(i, i + n)],
                                base_timestamp=timestamp)
            err, base = c.produce1(topic, 0, batch)
            check_eq(err, ERR_NONE, "produce to %s at value %d" % (topic, i))
            out.append((base, n))
            i += n
    return out


def check_values(recs, first_value, what):
    for k, r in enumerate(recs):
        want = value_of(first_value + k)
        if r.value != want:
            raise AssertionError("%s: offset %d holds %r..., expected %r..."
                                 % (what, r.offset, r.value[:12], want[:12]))


def segment_report(b, topic):
    files = b.segment_files(topic, 0)
    return [(os.path.basename(f), os.path.getsize(f)) for f in files]


def check_segment_files(b, topic, max_batch):
    """Names are 20-digit base offsets of the first batch inside; sizes
    stay within segment.bytes (+ one batch, leniently)."""
    files = b.segment_files(topic, 0)
    prev = -1
    for k, f in enumerate(files):
        name = os.path.basename(f)[:-4]
        check(len(name) == 20 and name.isdigit(),
              "segment file name %s is not a 20-digit offset" % f)
        base = int(name)
        check(base > prev, "segment names not increasing: %s" % f)
        prev = base
        with open(f, "rb") as fh:
            head = fh.read(12)
        if len(head) == 12:
            check_eq(int.from_bytes(head[:8], "big"), base,
                     "baseOffset of the first batch in %s" % name)
        if k < len(files) - 1:
            size = os.path.getsize(f)
            check(size <= SEGMENT + max_batch,
                  "closed segment %s is %d bytes (segment.bytes=%d)"
                  % (name, size, SEGMENT))
            if size > SEGMENT:
                log("  NOTE: segment %s is %d bytes > segment.bytes=%d "
                    "(Kafka rolls before a batch would overflow)"
                    % (name, size, SEGMENT))
    return files


def test_segments_roll():
    b = Broker(sets={"log.segment.bytes": SEGMENT}, name="segroll")
    b.start()
    topic = "seg"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
    n = TOTAL // RECORD
    t0 = time.monotonic()
    batches = produce_values(b.addr, topic, 0, n)
    log("  produced %d records in %d batches in %.2f s"
        % (n, len(batches), time.monotonic() - t0))
    check_eq([bo for bo, _ in batches], list(range(0, n, PER_BATCH)),
             "base offsets of the produced batches")
    files = check_segment_files(b, topic, PER_BATCH * (RECORD + 64) + 61)
    log("  %d segment files: %s ..." % (len(files),
                                         segment_report(b, topic)[:4]))
    check(len(files) >= TOTAL // SEGMENT // 2,
          "only %d .log files for %d bytes with segment.bytes=%d"
          % (len(files), TOTAL, SEGMENT))
    recs = fetch_all(b.addr, topic, 0)
    check_eq(len(recs), n, "records read back")
    check_values(recs, 0, topic)
    # Fetch starting in the middle of a batch and of a later segment.
    with Conn(b.addr) as c:
        mid = n // 2 + 3
        fp = c.fetch1(topic, 0, mid)
        check_eq(fp.error, ERR_NONE, "fetch at %d" % mid)
        msgs = [m for m in fp.messages() if m.offset >= mid]
        check(msgs and msgs[0].offset == mid,
              "fetch at %d: first record %r" % (mid, msgs[:1]))
        check_eq(msgs[0].value, value_of(mid), "value at %d" % mid)
        err, _, latest = c.list_offset1(topic, 0, LATEST)
        check_eq((err, latest), (0, n), "ListOffsets latest")
        err, _, earliest = c.list_offset1(topic, 0, EARLIEST)
        check_eq((err, earliest), (0, 0), "ListOffsets earliest")
        fp = c.fetch1(topic, 0, n + 10)
        check_eq(fp.error, ERR_OFFSET_OUT_OF_RANGE,
                 "fetch beyond the end (offset %d, end %d)" % (n + 10, n))
    # Clean restart, then kill -9 and restart: all still there, produce
    # continues at the end.
    for how in ("restart", "kill9"):
        if how == "restart":
            b.stop()
        else:
            b.kill9()
        b.start()
        recs = fetch_all(b.addr, topic, 0)
        check_eq(len(recs), n, "records after %s" % how)
        check_values(recs, 0, "%s after %s" % (topic, how))
        more = produce_values(b.addr, topic, n, PER_BATCH)
        check_eq(more[0][0], n, "base offset of the first produce after %s"
                 % how)
        n += PER_BATCH
    b.stop()


def total_log_bytes(b, topic):
    return sum(os.path.getsize(f) for f in b.segment_files(topic, 0))


def test_retention_bytes():
    b = Broker(sets={"log.retention.check.interval.ms": 200},
               name="retbytes")
    b.start()
    topic = "ret"
    retention = 256 * 1024
    with Conn(b.addr) as c:
        c.create_topic(topic, 1, {"segment.bytes": SEGMENT,
                                  "retention.bytes": retention})
    n = TOTAL // RECORD
    produce_values(b.addr, topic, 0, n)

    def shrunk():
        with Conn(b.addr) as c:
            err, _, earliest = c.list_offset1(topic, 0, EARLIEST)
            check_eq(err, ERR_NONE, "ListOffsets earliest")
        return earliest > 0 and \
            total_log_bytes(b, topic) <= retention + 2 * SEGMENT
    wait_for(shrunk, 15, 0.2, "retention.bytes=%d to delete old segments "
             "(log is %d bytes in %d files)"
             % (retention, total_log_bytes(b, topic),
                len(b.segment_files(topic, 0))))
    files = b.segment_files(topic, 0)
    first_base = int(os.path.basename(files[0])[:-4])
    with Conn(b.addr) as c:
        err, _, earliest = c.list_offset1(topic, 0, EARLIEST)
        err2, _, latest = c.list_offset1(topic, 0, LATEST)
        check_eq((err2, latest), (0, n), "ListOffsets latest after retention")
        log("  after retention: earliest %d, latest %d, %d files, %d bytes"
            % (earliest, latest, len(files), total_log_bytes(b, topic)))
        check_eq(earliest, first_base, "ListOffsets earliest vs the first "
                 "segment's base offset")
        check(total_log_bytes(b, topic) >= retention - SEGMENT,
              "retention deleted too much: %d bytes left (retention.bytes="
              "%d)" % (total_log_bytes(b, topic), retention))
        fp = c.fetch1(topic, 0, 0)
        check_eq(fp.error, ERR_OFFSET_OUT_OF_RANGE,
                 "fetch at offset 0 below the log start %d" % earliest)
    recs = fetch_all(b.addr, topic, 0, start=earliest)
    check_eq(len(recs), n - earliest, "records from earliest to end")
    check_values(recs, earliest, topic)
    # Survives a restart.
    b.stop()
    b.start()
    with Conn(b.addr) as c:
        err, _, e2 = c.list_offset1(topic, 0, EARLIEST)
        check(e2 >= earliest, "log start went back from %d to %d after a "
              "restart" % (earliest, e2))
    b.stop()


def test_retention_ms():
    b = Broker(sets={"log.retention.check.interval.ms": 200},
               name="retms")
    b.start()
    topic = "retms"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1, {"segment.bytes": SEGMENT,
                                  "retention.ms": 60000})
    old_ts = int(time.time() * 1000) - 3600 * 1000
    n_old = 1024 * 1024 // RECORD
    produce_values(b.addr, topic, 0, n_old, timestamp=old_ts)
    n_new = 256 * 1024 // RECORD
    new_batches = produce_values(b.addr, topic, n_old, n_new)
    first_new = new_batches[0][0]

    seen = []

    def settled():
        # retention may take more than one pass (every 200 ms): wait until
        # the log start has moved and then stayed put for three readings
        # 0.3 s apart, or a fetch from it can race the next deletion
        # (OFFSET_OUT_OF_RANGE, as Kafka answers below the log start)
        with Conn(b.addr) as c:
            err, _, earliest = c.list_offset1(topic, 0, EARLIEST)
        seen.append(earliest)
        last = seen[-3:]
        return len(last) == 3 and last[0] > 0 and len(set(last)) == 1 and earliest
    earliest = wait_for(settled, 20, 0.3, "retention.ms to delete segments "
                        "holding only hour-old records")
    log("  earliest after retention.ms: %d (first new record at %d)"
        % (earliest, first_new))
    check(earliest <= first_new, "retention.ms deleted records younger "
          "than retention.ms (earliest %d > first new offset %d)"
          % (earliest, first_new))
    recs = fetch_all(b.addr, topic, 0, start=earliest)
    check_values(recs, earliest, topic)
    check_eq(len(recs), n_old + n_new - earliest, "records left")
    b.stop()


def test_list_offsets_by_timestamp():
    b = Broker(sets={"log.segment.bytes": SEGMENT}, name="lots")
    b.start()
    topic = "ts"
    t0 = 1700000000000
    nb = 300
    per = 4
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
        err, _, off = c.list_offset1(topic, 0, t0)
        check_eq((err, off), (0, -1), "ListOffsets by timestamp on an "
                 "empty partition")
        for k in range(nb):
            recs = [Record(b"k", b"%d-%d" % (k, j) + b"." * 400, (),
                           t0 + k * 1000) for j in range(per)]
            err, base = c.produce1(topic, 0, build_batch(recs))
            check_eq((err, base), (0, k * per), "produce batch %d" % k)
        # Batches whose records carry different timestamps.
        t1 = t0 + nb * 1000 + 10000
        for k in range(10):
            recs = [Record(b"k", b"x", (), t1 + k * 1000 + j * 100)
                    for j in range(per)]
            err, base = c.produce1(topic, 0, build_batch(recs))
            check_eq(err, 0, "produce batch with spread timestamps")
    end = nb * per + 10 * per
    log("  %d segment files" % len(b.segment_files(topic, 0)))

    def queries(c, phase):
        for k in (0, 1, 17, 150, 151, nb - 1):
            ts = t0 + k * 1000
            err, rts, off = c.list_offset1(topic, 0, ts)
            check_eq((err, off), (0, k * per),
                     "%s: ListOffsets ts=%d (batch %d exactly)"
                     % (phase, ts, k))
            check_eq(rts, ts, "%s: timestamp returned for ts=%d" % (phase, ts))
            err, rts, off = c.list_offset1(topic, 0, ts + 1)
            check_eq((err, off), (0, (k + 1) * per),
                     "%s: ListOffsets ts=%d (just after batch %d)"
                     % (phase, ts + 1, k))
        err, _, off = c.list_offset1(topic, 0, t0 - 12345)
        check_eq((err, off), (0, 0), "%s: ListOffsets before all" % phase)
        err, rts, off = c.list_offset1(topic, 0, t1 + 10 ** 9)
        check_eq((err, off), (0, -1), "%s: ListOffsets after all "
                 "(Kafka answers offset -1)" % phase)
        err, _, off = c.list_offset1(topic, 0, EARLIEST)
        check_eq((err, off), (0, 0), "%s: ListOffsets earliest" % phase)
        err, _, off = c.list_offset1(topic, 0, LATEST)
        check_eq((err, off), (0, end), "%s: ListOffsets latest" % phase)
        # Inside an (uncompressed) batch: the exact record, as Kafka.
        ts = t1 + 3 * 1000 + 150
        err, rts, off = c.list_offset1(topic, 0, ts)
        base = nb * per + 3 * per
        check_eq((err, off, rts), (0, base + 2, t1 + 3 * 1000 + 200),
                 "%s: ListOffsets ts inside a batch (exact record)" % phase)
        err, _, off = c.list_offsets([(topic, 5, LATEST)])[(topic, 5)]
        check_eq(err, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                 "ListOffsets on partition 5 of a 1-partition topic")

    with Conn(b.addr) as c:
        queries(c, "live")
    b.stop()
    b.start()
    with Conn(b.addr) as c:
        queries(c, "after restart")
    b.stop()


def test_segment_ms_roll():
    b = Broker(name="segms")
    b.start()
    topic = "segms"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1, {"segment.ms": 300})
        err, _ = c.produce1(topic, 0, build_batch([(None, b"first")]))
        check_eq(err, ERR_NONE, "produce")
        time.sleep(0.8)
        err, base = c.produce1(topic, 0, build_batch([(None, b"second")]))
        check_eq((err, base), (ERR_NONE, 1), "produce after segment.ms")
    files = b.segment_files(topic, 0)
    log("  files: %s" % segment_report(b, topic))
    check(len(files) >= 2, "segment.ms=300: still one segment after 0.8 s "
          "(%s)" % segment_report(b, topic))
    recs = fetch_all(b.addr, topic, 0)
    check_eq([r.value for r in recs], [b"first", b"second"], "values")


def test_concurrent_appends():
    """Many connections append to one partition at once (spread over the
    event loops): every batch lands whole, each writer's batches in its
    order, offsets dense."""
    b = Broker(sets={"num.network.threads": 4,
                     "log.segment.bytes": SEGMENT}, name="concurrent")
    b.start()
    topic = "conc"
    writers, per_writer = 8, 150
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
    errors = []

    def writer(w):
        try:
            with Conn(b.addr) as c:
                for k in range(per_writer):
                    recs = [(b"w%d" % w, b"%d:%d:%d" % (w, k, j) + b"#" * 300)
                            for j in range(1 + (k + w) % 5)]
                    err, _ = c.produce1(topic, 0, build_batch(recs))
                    if err:
                        errors.append("writer %d batch %d: error %d"
                                      % (w, k, err))
                        return
        except Exception as e:
            errors.append("writer %d: %s: %s" % (w, type(e).__name__, e))
    threads = [threading.Thread(target=writer, args=(w,), daemon=True)
               for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check(not errors, "writers failed: %s" % errors[:5])
    expected = sum(1 + (k + w) % 5 for w in range(writers)
                   for k in range(per_writer))
    recs = fetch_all(b.addr, topic, 0)
    check_eq(len(recs), expected, "records after concurrent appends")
    last = {}
    for r in recs:
        w, k, j = (int(x) for x in r.value.split(b"#", 1)[0].split(b":"))
        prev = last.get(w, (-1, -1))
        check((k, j) > prev, "writer %d: batch %d record %d after %r "
              "(order or batch integrity broken)" % (w, k, j, prev))
        if k != prev[0]:
            check(j == 0, "writer %d batch %d starts at record %d" % (w, k, j))
        last[w] = (k, j)
    log("  %d records from %d writers, %d segment files"
        % (len(recs), writers, len(b.segment_files(topic, 0))))


def test_retention_under_load():
    """A producer appends while retention deletes segments every 50 ms and
    a consumer chases the log start: every record read is the one produced
    at that offset, out-of-range answers only below the log start, and the
    broker stays healthy (run it under ASan)."""
    b = Broker(sets={"log.retention.check.interval.ms": 50},
               name="retload")
    b.start()
    topic = "churn"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1, {"segment.bytes": 16 * 1024,
                                  "retention.bytes": 64 * 1024})
    stop = threading.Event()
    problems = []
    produced = [0]

    def producer():
        try:
            with Conn(b.addr) as c:
                i = 0
                while not stop.is_set():
                    err, base = c.produce1(topic, 0, build_batch(
                        [(None, value_of(i + j)) for j in range(4)]))
                    if err or base != i:
                        problems.append("produce at %d: error %d base %d"
                                        % (i, err, base))
                        return
                    i += 4
                    produced[0] = i
        except Exception as e:
            problems.append("producer: %s: %s" % (type(e).__name__, e))

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    reads = resets = 0
    t_end = time.monotonic() + 4
    try:
        with Conn(b.addr) as c:
            off = 0
            while time.monotonic() < t_end and not problems:
                fp = c.fetch1(topic, 0, off, max_wait_ms=50, pmax=32 * 1024)
                if fp.error == ERR_OFFSET_OUT_OF_RANGE:
                    err, _, start = c.list_offset1(topic, 0, EARLIEST)
                    check_eq(err, ERR_NONE, "ListOffsets earliest")
                    check(start > off or off > fp.high_watermark,
                          "OFFSET_OUT_OF_RANGE at %d inside [%d, %d]"
                          % (off, start, fp.high_watermark))
                    off = start
                    resets += 1
                    continue
                check_eq(fp.error, ERR_NONE, "fetch at %d" % off)
                for r in fp.messages():
                    if r.offset < off:
                        continue
                    check_eq(r.offset, off, "next offset read")
                    check(r.value == value_of(off), "offset %d holds the "
                          "value of another offset" % off)
                    off += 1
                    reads += 1
                # Fall behind on purpose now and then.
                if reads and reads % 200 == 0:
                    time.sleep(0.2)
    finally:
        stop.set()
        th.join(10)
    check(not problems, "; ".join(problems[:3]))
    log("  produced %d, read %d, %d jumps to a new log start, %d segment "
        "files at the end" % (produced[0], reads, resets,
                              len(b.segment_files(topic, 0))))
    check(resets > 0 or reads > 0, "nothing read")


def test_delete_topic():
    b = Broker(name="delete")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("gone", 2)
        for p in (0, 1):
            err, _ = c.produce1("gone", p, build_batch([(b"k", b"v")]))
            check_eq(err, 0, "produce to gone-%d" % p)
        res = c.create_topics([("gone", 2)])
        check_eq(res["gone"][0], 36, "CreateTopics of an existing topic "
                 "(TOPIC_ALREADY_EXISTS)")
        res = c.delete_topics(["gone", "never-was"])
        check_eq(res.get("gone"), ERR_NONE, "DeleteTopics gone")
        check_eq(res.get("never-was"), ERR_UNKNOWN_TOPIC_OR_PARTITION,
                 "DeleteTopics of an unknown topic")
        md = c.metadata(["gone"], version=4, allow_auto_create=False)
        check(md.topics.get("gone", (3,))[0] == ERR_UNKNOWN_TOPIC_OR_PARTITION,
              "Metadata after delete: %r" % md.topics)
    # Re-create it (Kafka may answer TOPIC_ALREADY_EXISTS for a moment while
    # the deletion completes): it must be empty, the old data gone.
    with Conn(b.addr) as c:
        c.recreate_topic("gone", 1)
        err, _, off = c.list_offset1("gone", 0, LATEST)
        check_eq((err, off), (0, 0), "latest offset of the re-created topic "
                 "(the deleted topic's data must not come back)")
        fp = c.fetch1("gone", 0, 0)
        check(not fp.messages(), "the re-created topic serves the deleted "
              "topic's records: %r" % fp.messages())
    if os.path.exists(b.partition_dir("gone", 1)):
        raise AssertionError("directory of deleted partition gone-1 still "
                             "exists: %r"
                             % os.listdir(b.partition_dir("gone", 1)))
    b.stop()
    b.start()
    with Conn(b.addr) as c:
        md = c.metadata(None, version=1)
        check_eq(len(md.topics.get("gone", (0, {}))[1]), 1,
                 "partitions of the re-created topic after restart")


def test_delete_topic_under_unread_fetch():
    """A consumer that does not read its Fetch answer (a large one, sent
    from the segments) must not keep a deleted topic alive: the name can
    be created again at once.  Before, the answer held its topic until it
    was written out, so CreateTopics got TOPIC_ALREADY_EXISTS ("marked
    for deletion") for as long as that consumer stayed connected."""
    b = Broker(name="delete-unread")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("slow", 1)
        for _ in range(100):
            err, _ = c.produce1("slow", 0, build_batch([(None, b"z" * 90000)]))
            check_eq(err, ERR_NONE, "produce")
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", b.port))
        try:
            s.sendall(frame(request_header(API_FETCH, 4, 1) +
                            fetch_body([("slow", 0, 0, 64 << 20)], max_wait_ms=0)))
            time.sleep(0.5)  # answered, and stuck in the socket
            check_eq(c.delete_topics(["slow"]).get("slow"), ERR_NONE, "DeleteTopics")
            wait_for(lambda: c.create_topics([("slow", 1)])["slow"][0] == ERR_NONE, 10,
                     interval=0.2, what="the name created again while the "
                     "consumer still holds its unread answer")
        finally:
            s.close()
        err, base = c.produce1("slow", 0, build_batch([(None, b"new")]))
        check_eq((err, base), (ERR_NONE, 0), "the new topic starts empty")
    b.stop()


if __name__ == "__main__":
    run([
        ("storage_segments_roll", test_segments_roll, 120),
        ("storage_retention_bytes", test_retention_bytes, 90),
        ("storage_retention_ms", test_retention_ms, 90),
        ("storage_list_offsets_by_timestamp", test_list_offsets_by_timestamp,
         90),
        ("storage_segment_ms_roll", test_segment_ms_roll, 60),
        ("storage_concurrent_appends", test_concurrent_appends, 120),
        ("storage_retention_under_load", test_retention_under_load, 60),
        ("storage_delete_topic", test_delete_topic, 60),
        ("storage_delete_topic_under_unread_fetch", test_delete_topic_under_unread_fetch, 60),
    ])
