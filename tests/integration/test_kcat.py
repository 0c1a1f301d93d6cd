#!/usr/bin/env python3
"""kcat against sluiced: metadata listing, keyed produce of 100,000 lines
into 3 partitions and read-back with per-partition order, and a
single-partition run checking total order.

Env: SLUICED (broker path), KCAT (kcat program, default 'kcat').
Exit 77 when kcat or the broker is missing.
"""
import os
import re
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, check, check_eq, log, need_program,  # noqa: E402
                     run, run_cmd)

N_LINES = int(os.environ.get("KCAT_N", "100000"))


def kcat_prog():
    return need_program("KCAT", "kcat")


def start_broker(name):
    kcat = kcat_prog()  # skip before starting anything when kcat is missing
    b = Broker(name=name)
    b.start()
    return kcat, b


def kcat_list(kcat, addr, topic=None):
    argv = [kcat, "-L", "-b", addr, "-m", "15"]
    if topic:
        argv += ["-t", topic]
    rc, out, err = run_cmd(argv, timeout=60, what="kcat -L")
    text = out.decode("utf-8", "replace")
    check_eq(rc, 0, "kcat -L exit status (stderr: %s)"
             % err.decode("utf-8", "replace")[-2000:])
    brokers = re.findall(r"^\s+broker (-?\d+) at ([\d.]+):(\d+)", text, re.M)
    topics = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r'^\s+topic "([^"]+)" with (\d+) partitions:', line)
        if m:
            cur = m.group(1)
            topics[cur] = {"count": int(m.group(2)), "parts": {},
                           "error": None}
            continue
        m = re.match(r'^\s+topic "([^"]+)" error: (.*)', line)
        if m:
            topics[m.group(1)] = {"count": 0, "parts": {},
                                  "error": m.group(2)}
            cur = None
            continue
        m = re.match(r"^\s+partition (\d+), leader (-?\d+)", line)
        if m and cur:
            topics[cur]["parts"][int(m.group(1))] = int(m.group(2))
    return text, brokers, topics


def test_list():
    kcat, b = start_broker("kcat-list")
    with Conn(b.addr) as c:
        c.create_topic("kl1", 1)
        c.create_topic("kl3", 3)
    text, brokers, topics = kcat_list(kcat, b.addr)
    log(text.rstrip())
    check_eq(len(brokers), 1, "number of brokers in kcat -L")
    node, host, port = brokers[0]
    check_eq((host, int(port)), ("127.0.0.1", b.port),
             "advertised broker address")
    for name, n in (("kl1", 1), ("kl3", 3)):
        check(name in topics, "topic %s missing from kcat -L:\n%s"
              % (name, text))
        t = topics[name]
        check_eq(t["count"], n, "partition count of %s" % name)
        check_eq(sorted(t["parts"]), list(range(n)),
                 "partitions listed for %s" % name)
        for p, leader in t["parts"].items():
            check_eq(leader, int(node), "leader of %s [%d]" % (name, p))
    # The same for one topic.
    text, _, topics = kcat_list(kcat, b.addr, "kl3")
    check("kl3" in topics and topics["kl3"]["count"] == 3,
          "kcat -L -t kl3 output:\n%s" % text)


def produce_lines(kcat, addr, topic, n):
    data = "".join("key-%d:value-%d\n" % (i, i) for i in range(n)).encode()
    rc, out, err = run_cmd([kcat, "-P", "-b", addr, "-t", topic, "-K", ":",
                            "-X", "acks=all"],
                           timeout=180, input_data=data, what="kcat -P")
    errtext = err.decode("utf-8", "replace")
    check_eq(rc, 0, "kcat -P exit status (stderr tail: %s)"
             % errtext[-2000:])
    check("ERROR" not in errtext and "failed" not in errtext.lower(),
          "kcat -P reported errors:\n%s" % errtext[-3000:])


def consume_lines(kcat, b, topic, path):
    rc, _, err = run_cmd([kcat, "-C", "-b", b.addr, "-t", topic, "-e",
                          "-o", "beginning", "-f", "%p %o %k %s\\n"],
                         timeout=180, stdout_path=path, what="kcat -C")
    errtext = err.decode("utf-8", "replace")
    check_eq(rc, 0, "kcat -C exit status (stderr tail: %s)"
             % errtext[-2000:])
    check("ERROR" not in errtext,
          "kcat -C reported errors:\n%s" % errtext[-3000:])
    rows = []
    with open(path, "rb") as f:
        for ln, line in enumerate(f, 1):
            parts = line.rstrip(b"\n").split(b" ")
            check(len(parts) == 4, "kcat -C line %d malformed: %r"
                  % (ln, line[:200]))
            rows.append((int(parts[0]), int(parts[1]), parts[2].decode(),
                         parts[3].decode()))
    return rows


def verify_rows(rows, n, nparts):
    check_eq(len(rows), n, "number of lines read back by kcat -C")
    got = set((k, v) for _, _, k, v in rows)
    want = set(("key-%d" % i, "value-%d" % i) for i in range(n))
    if got != want:
        missing = sorted(want - got)[:5]
        extra = sorted(got - want)[:5]
        raise AssertionError("read-back differs: %d missing (e.g. %r), %d "
                             "unexpected (e.g. %r)"
                             % (len(want - got), missing, len(got - want),
                                extra))
    next_off = {}
    last_i = {}
    key_part = {}
    for p, off, k, v in rows:
        check(0 <= p < nparts, "partition %d out of range" % p)
        want_off = next_off.get(p, 0)
        check(off == want_off, "partition %d: offset %d where %d expected "
              "(offsets must be consecutive from 0)" % (p, off, want_off))
        next_off[p] = off + 1
        i = int(k.split("-", 1)[1])
        check(i > last_i.get(p, -1), "partition %d: key-%d at offset %d "
              "after key-%d: producer order not kept"
              % (p, i, off, last_i.get(p, -1)))
        last_i[p] = i
        if k in key_part:
            check_eq(p, key_part[k], "partition of %s" % k)
        key_part[k] = p
        # librdkafka's default partitioner (consistent_random) is
        # crc32(key) % partition_count: every key must be where it hashes.
        check_eq(p, zlib.crc32(k.encode()) % nparts,
                 "partition of %s (crc32 partitioner)" % k)
    return next_off


def test_keyed_3_partitions():
    kcat, b = start_broker("kcat-3p")
    topic = "kcat3"
    with Conn(b.addr) as c:
        c.create_topic(topic, 3)
    produce_lines(kcat, b.addr, topic, N_LINES)
    rows = consume_lines(kcat, b, topic, os.path.join(b.workdir, "out3.txt"))
    ends = verify_rows(rows, N_LINES, 3)
    log("  per-partition counts: %s" % sorted(ends.items()))
    check_eq(len(ends), 3, "partitions that received data")
    # High watermarks agree with what was read.
    with Conn(b.addr) as c:
        for p in range(3):
            err, _, off = c.list_offset1(topic, p, -1)
            check_eq((err, off), (0, ends[p]),
                     "ListOffsets latest of %s [%d]" % (topic, p))


def test_single_partition_total_order():
    kcat, b = start_broker("kcat-1p")
    topic = "kcat1"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
    produce_lines(kcat, b.addr, topic, N_LINES)
    rows = consume_lines(kcat, b, topic, os.path.join(b.workdir, "out1.txt"))
    check_eq(len(rows), N_LINES, "lines read back")
    for idx, (p, off, k, v) in enumerate(rows):
        if (p, off, k, v) != (0, idx, "key-%d" % idx, "value-%d" % idx):
            raise AssertionError("line %d: expected %r, got %r"
                                 % (idx, (0, idx, "key-%d" % idx,
                                          "value-%d" % idx), (p, off, k, v)))


if __name__ == "__main__":
    run([
        ("kcat_list", test_list, 60),
        ("kcat_keyed_3_partitions", test_keyed_3_partitions, 300),
        ("kcat_single_partition_order", test_single_partition_total_order,
         300),
    ])
