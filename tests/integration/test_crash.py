#!/usr/bin/env python3
"""Crash tests: with log.durability=fsync every acknowledged message must
survive kill -9 of the broker, in order, without gaps or duplicates; and a
log whose tail holds garbage (zero fill, random bytes, a torn batch) must be
recovered: everything acknowledged still served, new produce continues.

Env: SLUICED, RDK_ROUNDTRIP (empty = skip).
"""
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, build_batch, check, check_eq, fetch_all,  # noqa: E402
                     log, need_program, run, run_cmd, wait_for, walk_segment,
                     TestFailure)

KILL_DELAYS = (1.0, 1.6, 2.2)   # seconds after the first acknowledgement
BIG_N = 200000000                # produce-log never finishes on its own


def read_acked(path):
    """Ids the producer logged as acknowledged (complete lines only)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        lines = lines[:-1]  # a partial last line: killed mid-write
    return [int(x) for x in lines if x]


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def start_producer(rdk, b, topic, ackfile, logfile):
    lf = open(logfile, "wb")
    p = subprocess.Popen([rdk, "-X", "message.timeout.ms=10000",
                          "produce-log", b.addr, topic, str(BIG_N), ackfile],
                         stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    lf.close()
    return p


def kill_producer(p):
    if p.poll() is None:
        p.kill()
    p.wait(10)


def consume_all(rdk, b, topic, outfile):
    rc, _, err = run_cmd([rdk, "consume-all", b.addr, topic, outfile],
                         timeout=180, what="rdk_roundtrip consume-all")
    check_eq(rc, 0, "consume-all exit status (stderr tail: %s)"
             % err.decode("utf-8", "replace")[-2000:])
    with open(outfile, "rb") as f:
        return f.read().decode().split("\n")[:-1]


def verify_crash_result(topic, values, acked):
    check(acked, "%s: no message was acknowledged before the kill" % topic)
    check(all(acked[k] < acked[k + 1] for k in range(len(acked) - 1)),
          "%s: the producer's acknowledgements are out of order" % topic)
    last = acked[-1]
    for idx, v in enumerate(values):
        if v != str(idx):
            what = "duplicate" if v in values[:idx] else "gap/wrong value"
            raise TestFailure("%s: offset %d holds %r, expected %r (%s); "
                              "%d values read, last acked id %d"
                              % (topic, idx, v, str(idx), what, len(values),
                                 last))
    check(len(values) > last,
          "%s: acknowledged ids lost: last acked %d but only %d messages "
          "(0..%d) survived the crash" % (topic, last, len(values),
                                          len(values) - 1))


def crash_once(rdk, b, topic, delay):
    """Produce, kill -9 mid-stream, restart; returns (values, acked)."""
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
    ackfile = os.path.join(b.workdir, topic + ".acked")
    plog = os.path.join(b.workdir, topic + ".producer.log")
    p = start_producer(rdk, b, topic, ackfile, plog)
    try:
        wait_for(lambda: count_lines(ackfile) > 0 or p.poll() is not None,
                 20, what="the first acknowledgement of %s" % topic)
        check(p.poll() is None, "producer exited early: %s"
              % open(plog, "rb").read()[-2000:].decode("utf-8", "replace"))
        time.sleep(delay)
        b.check_alive("producing to %s" % topic)
        before = count_lines(ackfile)
        b.kill9()
        time.sleep(0.7)
    finally:
        kill_producer(p)
    acked = read_acked(ackfile)
    log("  %s: killed broker after %.1f s; %d acked at kill time, %d acked "
        "in total (last id %s)" % (topic, delay, before, len(acked),
                                   acked[-1] if acked else None))
    t0 = time.monotonic()
    b.start()
    log("  restart took %.2f s" % (time.monotonic() - t0))
    values = consume_all(rdk, b, topic,
                         os.path.join(b.workdir, topic + ".consumed"))
    log("  %s: %d messages served after restart" % (topic, len(values)))
    verify_crash_result(topic, values, acked)
    return values, acked


def test_kill9_fsync():
    rdk = need_program("RDK_ROUNDTRIP")
    b = Broker(sets={"log.durability": "fsync"}, name="crash")
    b.start()
    survived = {}
    for k, delay in enumerate(KILL_DELAYS):
        topic = "crash%d" % k
        values, _ = crash_once(rdk, b, topic, delay)
        survived[topic] = values
        # Earlier topics must be untouched by later crashes and recoveries.
        for old in sorted(survived):
            if old == topic:
                continue
            again = consume_all(rdk, b, old,
                                os.path.join(b.workdir, old + ".again"))
            check(again == survived[old],
                  "%s changed after a later crash: %d messages before, %d "
                  "now" % (old, len(survived[old]), len(again)))
    with Conn(b.addr) as c:
        for topic, values in survived.items():
            err, _, end = c.list_offset1(topic, 0, -1)
            check_eq((err, end), (0, len(values)),
                     "ListOffsets latest of %s after recovery" % topic)
    b.stop()


def active_log(b, topic):
    logs = b.segment_files(topic, 0)
    check(logs, "no .log file in %s" % b.partition_dir(topic, 0))
    return logs[-1]


def last_batch_bytes(path):
    """The bytes of the last complete record batch in a segment file."""
    return walk_segment(path)[0]


def last_batch_any(b, topic):
    """The last complete batch of the newest segment that has one."""
    for path in reversed(b.segment_files(topic, 0)):
        last = last_batch_bytes(path)
        if last is not None:
            return last
    return None


def produce_after(b, topic, expected, tag):
    """Raw produce of one record after recovery: it must land right at the
    end, and the whole partition must read back as expected + [it]."""
    val = ("after-%s" % tag).encode()
    with Conn(b.addr) as c:
        err, base = c.produce1(topic, 0, build_batch([(None, val)]))
        check_eq(err, 0, "produce after recovery (%s)" % tag)
        check_eq(base, len(expected),
                 "base offset of the first produce after recovery (%s)" % tag)
    expected.append(val.decode())
    # Random access goes through the (rebuilt) offset index.
    rng = random.Random(len(expected))
    probes = sorted(set([0, len(expected) - 1, len(expected) - 2,
                         len(expected) // 2] +
                        [rng.randrange(len(expected)) for _ in range(20)]))
    with Conn(b.addr) as c:
        for off in probes:
            if off < 0:
                continue
            fp = c.fetch1(topic, 0, off, pmax=64 * 1024)
            check_eq(fp.error, 0, "fetch at %d after %s" % (off, tag))
            hit = [m for m in fp.messages() if m.offset == off]
            check(hit and hit[0].value.decode() == expected[off],
                  "after %s: fetch at offset %d returned %r, expected %r"
                  % (tag, off, hit[0].value if hit else fp.messages()[:2],
                     expected[off]))
    recs = fetch_all(b.addr, topic, 0)
    got = [r.value.decode() for r in recs]
    if got != expected:
        idx = next((i for i, (x, y) in enumerate(zip(got, expected))
                    if x != y), min(len(got), len(expected)))
        raise TestFailure("%s after %s: %d messages read, %d expected; first "
                          "difference at offset %d: got %r, expected %r"
                          % (topic, tag, len(got), len(expected), idx,
                             got[idx] if idx < len(got) else None,
                             expected[idx] if idx < len(expected) else None))


def test_garbage_tail():
    rdk = need_program("RDK_ROUNDTRIP")
    # Small segments: recovery must look at the right (last) one.
    b = Broker(sets={"log.durability": "fsync",
                     "log.segment.bytes": 1 << 20}, name="tail")
    b.start()
    topic = "tail"
    # Some acknowledged data written under a crash.
    values, acked = crash_once(rdk, b, topic, 1.0)
    expected = list(values)
    rng = random.Random(20261124)

    cases = [
        ("zero-fill 4 KiB after kill -9", "kill", lambda path: b"\0" * 4096),
        ("random 4 KiB after clean stop", "stop",
         lambda path: bytes(rng.getrandbits(8) for _ in range(4096))),
        ("torn copy of the last batch after kill -9", "kill", None),
        ("plausible header with bad CRC after kill -9", "kill", None),
    ]
    for name, how, make in cases:
        if how == "kill":
            b.kill9()
        else:
            b.stop()
        path = active_log(b, topic)
        size0 = os.path.getsize(path)
        if make is not None:
            junk = make(path)
        elif name.startswith("torn"):
            last = last_batch_any(b, topic)
            check(last is not None, "no complete batch found in %s" % path)
            junk = last[:len(last) // 2]  # a write cut in half
        else:
            last = last_batch_any(b, topic)
            check(last is not None, "no complete batch found in %s" % path)
            j = bytearray(last)
            j[len(j) // 2] ^= 0xFF  # right length, magic 2, CRC mismatch
            junk = bytes(j)
        # Right after the last batch: after kill -9 the file goes on
        # with the zeros preallocated for the next appends (fsync
        # durability), which recovery takes for a clean end; the junk
        # must hide that end as a torn write would.
        end = walk_segment(path)[1]
        with open(path, "r+b") as f:
            f.seek(end)
            f.write(junk)
        log("  %s: wrote %d bytes at %d of %s (%d bytes; %d segments)"
            % (name, len(junk), end, os.path.basename(path), size0,
               len(b.segment_files(topic, 0))))
        b.start()
        with Conn(b.addr) as c:
            err, _, end = c.list_offset1(topic, 0, -1)
            check_eq((err, end), (0, len(expected)),
                     "ListOffsets latest after recovery from %s" % name)
        got = consume_all(rdk, b, topic,
                          os.path.join(b.workdir, "tail.consumed"))
        check(got == expected,
              "after %s: %d messages served, %d expected (acked ids up to "
              "%d)" % (name, len(got), len(expected), acked[-1]))
        produce_after(b, topic, expected, name.split()[0])
    b.stop()


if __name__ == "__main__":
    run([
        ("crash_kill9_fsync_x3", test_kill9_fsync, 300),
        ("crash_garbage_tail", test_garbage_tail, 240),
    ])
