#!/usr/bin/env python3
"""libsluice and the `sluice` CLI against a real sluiced.

* CLI topic commands end to end (create/list/describe/config/delete, usage
  errors and exit codes);
* a produce/consume round trip of 1,000,000 keyed messages through the CLI
  (libsluice producer and consumer) with a byte-for-byte check and
  per-partition key order;
* interop: libsluice-produced messages (keys, headers) read by kcat, and
  kcat (librdkafka) produced messages (keys, headers, null keys, null
  values, timestamps) read by libsluice;
* idempotent producer across a broker restart: no loss, no duplicate
  (skipped with a clear message while the broker lacks InitProducerId).

Env: SLUICED, SLUICE_CLI (the sluice program), KCAT.  Exit 77 = skipped.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, SkipTest, check, check_eq, log,  # noqa: E402
                     need_program, run, run_cmd)

N_ROUNDTRIP = int(os.environ.get("CLIENT_N", "1000000"))
API_INIT_PRODUCER_ID = 22


def cli():
    return need_program("SLUICE_CLI")


def sluice(b, *args, input_data=None, timeout=300, stdout_path=None):
    argv = [cli(), "-b", b.addr] + list(args)
    rc, out, err = run_cmd(argv, timeout=timeout, input_data=input_data,
                           stdout_path=stdout_path, what="sluice " + args[0])
    return rc, out, err.decode("utf-8", "replace")


def start(name, sets=None):
    cli()
    b = Broker(name=name, sets=sets)
    b.start()
    return b


def test_cli_topics():
    b = start("cli-topics")
    rc, out, err = sluice(b, "topic", "create", "ct1", "--partitions", "3")
    check_eq(rc, 0, "topic create exit (%s)" % err)
    rc, out, err = sluice(b, "topic", "create", "ct1", "--partitions", "3")
    check_eq(rc, 1, "second create exit")
    check("already exists" in err, "create error message: %r" % err)
    rc, out, err = sluice(b, "topic", "list")
    check_eq(rc, 0, "list exit")
    check(b"ct1\t3" in out, "list output %r" % out)
    rc, out, err = sluice(b, "topic", "describe", "ct1")
    check_eq(rc, 0, "describe exit (%s)" % err)
    check(b"topic ct1: 3 partitions" in out, "describe output %r" % out)
    rc, out, err = sluice(b, "topic", "describe", "nosuch")
    check_eq(rc, 1, "describe of a missing topic")
    rc, out, err = sluice(b, "topic", "config", "ct1")
    check(rc in (0, 1), "config exit %d" % rc)
    if rc == 1:
        check("not supported by this broker" in err,
              "config error should say unsupported: %r" % err)
    rc, out, err = sluice(b, "topic", "delete", "ct1")
    check_eq(rc, 0, "delete exit (%s)" % err)
    rc, out, err = sluice(b, "topic", "list")
    check(b"ct1" not in out, "deleted topic still listed: %r" % out)
    # usage errors: exit 2
    for args in (["topic"], ["topic", "frob", "x"], ["consume"],
                 ["produce", "t", "--acks", "7"], ["nosuchcmd"],
                 ["consume", "t", "--from", "middle"]):
        rc, out, err = sluice(b, *args)
        check_eq(rc, 2, "exit status of sluice %s (%s)" % (" ".join(args), err))
    for args in (["--help"], ["topic", "--help"], ["produce", "--help"],
                 ["consume", "--help"], ["bench", "--help"]):
        rc, out, err = sluice(b, *args)
        check_eq(rc, 0, "exit status of sluice %s" % " ".join(args))
        check(b"Usage" in out, "help text of %s" % " ".join(args))


def consume_json(b, topic, count=None, timeout=600, extra=()):
    fd, path = tempfile.mkstemp(prefix="sluice-consume-")
    os.close(fd)
    args = ["consume", topic, "--from", "beginning", "-F", "json",
            "--timeout", "20000"] + list(extra)
    if count:
        args += ["--count", str(count)]
    else:
        args += ["--exit-at-end"]
    rc, _, err = sluice(b, *args, timeout=timeout, stdout_path=path)
    check_eq(rc, 0, "consume exit status (%s)" % err[-2000:])
    rows = []
    with open(path, "rb") as f:
        for line in f:
            rows.append(json.loads(line))
    os.unlink(path)
    return rows


def test_roundtrip_1m():
    b = start("cli-roundtrip")
    rc, _, err = sluice(b, "topic", "create", "rt", "--partitions", "3")
    check_eq(rc, 0, "create (%s)" % err)
    n = N_ROUNDTRIP
    lines = b"".join(b"k%05d:value-%07d-%s\n" % (i % 1000, i, b"x" * (i % 50))
                     for i in range(n))
    t0 = time.monotonic()
    rc, _, err = sluice(b, "produce", "rt", "--key-sep", ":",
                        "--header", "src=it", input_data=lines, timeout=900)
    check_eq(rc, 0, "produce exit status (%s)" % err[-2000:])
    log("produced %d in %.1f s" % (n, time.monotonic() - t0))
    t0 = time.monotonic()
    rows = consume_json(b, "rt", count=n, timeout=900)
    log("consumed %d in %.1f s" % (len(rows), time.monotonic() - t0))
    check_eq(len(rows), n, "messages read back")
    seen = set()
    last_by_key = {}
    offsets = {}
    from_key_part = {}
    for r in rows:
        v = r["value"]
        i = int(v[6:13])
        check_eq(v, "value-%07d-%s" % (i, "x" * (i % 50)), "value bytes")
        check_eq(r["key"], "k%05d" % (i % 1000), "key of message %d" % i)
        check_eq(r["headers"], [["src", "it"]], "headers")
        check(i not in seen, "duplicate message %d" % i)
        seen.add(i)
        k = r["key"]
        check(last_by_key.get(k, -1) < i, "key %s out of order" % k)
        last_by_key[k] = i
        p = r["partition"]
        check_eq(from_key_part.setdefault(k, p), p, "key %s in one partition" % k)
        check_eq(r["offset"], offsets.get(p, 0), "offsets of partition %d" % p)
        offsets[p] = r["offset"] + 1
    check_eq(len(seen), n, "distinct messages")


def kcat_prog():
    return need_program("KCAT", "kcat")


def test_kcat_reads_libsluice():
    kcat = kcat_prog()
    b = start("cli-kcat-reads")
    lines = b"".join(b"key%d:val%d\n" % (i, i) for i in range(1000))
    rc, _, err = sluice(b, "produce", "kr", "--key-sep", ":", "--header",
                        "h1=v1", "--header", "h2=v2", input_data=lines)
    check_eq(rc, 0, "produce (%s)" % err)
    rc, out, err = run_cmd([kcat, "-C", "-b", b.addr, "-t", "kr", "-e",
                            "-f", "%k|%s|%h|%p|%o\\n"], timeout=60)
    check_eq(rc, 0, "kcat exit (%s)" % err)
    got = out.decode().splitlines()
    check_eq(len(got), 1000, "kcat read count")
    seen = set()
    for line in got:
        k, v, h, p, o = line.split("|")
        check_eq(v, "val" + k[3:], "value for " + k)
        check_eq(h, "h1=v1,h2=v2", "headers as kcat prints them")
        seen.add(k)
    check_eq(len(seen), 1000, "distinct keys")


def test_libsluice_reads_kcat():
    kcat = kcat_prog()
    b = start("cli-reads-kcat")
    with Conn(b.addr) as c:
        c.create_topic("kw", 1)
    # keyed lines with headers; a line without the delimiter has no key
    data = b"a:1\nb:2\nnokey\n:emptykey\nc:\n"
    t0 = int(time.time() * 1000)
    rc, _, err = run_cmd([kcat, "-P", "-b", b.addr, "-t", "kw", "-K:",
                          "-H", "hk=hv", "-H", "empty=", "-Z"],
                         input_data=data, timeout=60)
    check_eq(rc, 0, "kcat -P (%s)" % err)
    t1 = int(time.time() * 1000)
    rows = consume_json(b, "kw")
    log("\n".join(json.dumps(r) for r in rows))
    check_eq(len(rows), 5, "messages read")
    keys = [r.get("key") for r in rows]
    vals = [r.get("value") for r in rows]
    check_eq(keys[:2], ["a", "b"], "keys")
    check_eq(vals[:2], ["1", "2"], "values")
    check(keys[2] is None and vals[2] == "nokey",
          "line without delimiter: null key (got %r, %r)" % (keys[2], vals[2]))
    # -Z: empty key/value are sent as NULL
    check(keys[3] is None and vals[3] == "emptykey", "empty key -> null: %r" % rows[3])
    check(keys[4] == "c" and vals[4] is None, "empty value -> null: %r" % rows[4])
    for r in rows:
        check(t0 - 5000 <= r["timestamp"] <= t1 + 5000,
              "timestamp %d not near produce time" % r["timestamp"])
        check_eq(r["headers"][0], ["hk", "hv"], "header hk")
        check(r["headers"][1][0] == "empty", "header 'empty' %r" % r["headers"])
    check_eq([r["offset"] for r in rows], list(range(5)), "offsets")


def test_idempotent_restart():
    b = start("cli-idem")
    with Conn(b.addr) as c:
        err, ranges = c.api_versions(0)
    if API_INIT_PRODUCER_ID not in ranges:
        raise SkipTest("broker lacks InitProducerId (idempotent producer "
                       "support not in sluiced yet): idempotence test skipped")
    with Conn(b.addr) as c:
        c.create_topic("idem", 2)
    n = 300000
    path = os.path.join(b.workdir, "idem-input.txt")
    with open(path, "wb") as f:
        f.write(b"".join(b"k%d:%d\n" % (i % 97, i) for i in range(n)))
    port = b.port
    argv = [cli(), "-b", b.addr, "-X", "enable.idempotence=true",
            "-X", "linger.ms=2", "-X", "batch.size=16384",
            "produce", "idem", "--key-sep", ":", "--file", path]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.7)
    b.stop()
    time.sleep(0.5)
    b.start(extra_sets={"listeners": "127.0.0.1:%d" % port})
    check_eq(b.port, port, "broker restarted on the same port")
    out, err = proc.communicate(timeout=300)
    check_eq(proc.returncode, 0, "idempotent produce exit (%s)"
             % err.decode()[-2000:])
    rows = consume_json(b, "idem")
    vals = [int(r["value"]) for r in rows]
    check_eq(len(vals), len(set(vals)), "no duplicates (%d rows)" % len(vals))
    check_eq(sorted(vals), list(range(n)), "no loss")


if __name__ == "__main__":
    run([
        ("cli_topics", test_cli_topics, 120),
        ("roundtrip_1m", test_roundtrip_1m, 1200),
        ("kcat_reads_libsluice", test_kcat_reads_libsluice, 120),
        ("libsluice_reads_kcat", test_libsluice_reads_kcat, 120),
        ("idempotent_restart", test_idempotent_restart, 600),
    ])
