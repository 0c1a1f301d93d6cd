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

With --faults (meson test `client_faults`) it runs the second list instead,
the issue #3 leftovers; each test's docstring says what it asserts:

* idempotent producer re-initialisation (KIP-360 style epoch bump) after
  UNKNOWN_PRODUCER_ID (real broker: retention deleted the producer's
  batches, restart without the producer snapshot) and after
  OUT_OF_ORDER_SEQUENCE_NUMBER (real broker: the log lost an acknowledged
  tail); InitProducerId v4 with the current id/epoch (fault proxy); the
  unsafe case fails with SLUICE_ERR_FATAL instead of duplicating; a bump
  waits until every batch that may be in the log is answered;
* retries of retriable Produce errors (fault proxy answering
  NOT_LEADER_OR_FOLLOWER / REQUEST_TIMED_OUT, or losing the response) and
  non-retriable errors reported at once;
* consumer: gzip batches written by kcat give one
  SLUICE_ERR_UNSUPPORTED_COMPRESSION message each, never garbage, and
  seek(offset + 1) continues after them; offsets_for_times + seek +
  query_watermarks end to end.

The fault proxy (FaultProxy below) sits on 127.0.0.1 between libsluice and
a real sluiced: it forwards requests, and for Produce can answer an error
itself, forward and then drop the connection (the response is lost), or
drop before forwarding, as a test's rule decides per batch.

Env: SLUICED, SLUICE_CLI (the sluice program), KCAT; for --faults also
CLIENT_PRODUCE_STEPS and CLIENT_CONSUME_CHECK (tests/integration/*.c).
Exit 77 = skipped.
"""
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, Reader, SkipTest, Writer,  # noqa: E402
                     build_batch, check, check_eq, decode_batches, fetch_all,
                     frame, log, need_program, run, run_cmd, wait_for)

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


# --------------------------------------------------------------------------
# Issue #3 leftovers (--faults): retries, epoch bump, compressed batches,
# offset look-ups.

API_PRODUCE = 0
API_METADATA = 3
API_API_VERSIONS = 18
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_REQUEST_TIMED_OUT = 7
ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERR_UNKNOWN_PRODUCER_ID = 59
ERR_INVALID_RECORD = 87


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_frame(sock):
    hdr = _recv_exact(sock, 4)
    if hdr is None:
        return None
    (size,) = struct.unpack(">i", hdr)
    check(0 < size < 256 << 20, "proxy: bad frame size %d" % size)
    return _recv_exact(sock, size)


class FaultProxy:
    """Kafka proxy on 127.0.0.1 in front of a real sluiced, one upstream
    connection per client connection, requests handled one at a time (so
    responses stay in request order).

    rule(proxy, batch) decides the fate of each partition's batch of a
    Produce request; batch is a dict with topic, partition, pid, epoch,
    seq, count, first (value of the first record), attempt (how many
    times a batch with this first value was seen, from 1).  It returns
    "forward", ("error", code, log_start_offset), "drop" (close the client
    connection, forward nothing) or "forward_drop" (forward the request,
    read the response, close the client connection: the response is lost).
    A request-level drop wins over the rest.  Every decision is appended to
    self.seen as (batch, action, upstream result or None).

    init_pid_v3: advertise InitProducerId v0-4 in ApiVersions and answer
    v3/v4 here: a request with producer id -1 gets a new id from the broker
    (InitProducerId v1 upstream), one with an id gets the same id and
    epoch + 1 (what a Kafka broker does on KIP-360 bumps).  Calls are
    recorded in self.init_calls as (version, pid_in, epoch_in, pid_out,
    epoch_out).

    produce_min0: advertise Produce from v0 (sluiced says v3): librdkafka
    up to 2.11 compresses with gzip/snappy/lz4 only when the broker lists
    Produce v0, and otherwise sends uncompressed batches.

    Metadata answers name the proxy as the broker, so clients that connect
    to partition leaders (librdkafka) stay behind it too.
    """

    def __init__(self, upstream, rule=None, init_pid_v3=False, produce_min0=False):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rule = rule or (lambda proxy, b: "forward")
        self.init_pid_v3 = init_pid_v3
        self.produce_min0 = produce_min0
        self.lock = threading.Lock()
        self.seen = []
        self.init_calls = []
        self.attempts = {}
        self.errors = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.socks = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        for s in [self.lsock] + self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            c.settimeout(60)
            self.socks.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, client):
        up = None
        try:
            up = socket.create_connection(self.upstream, timeout=60)
            self.socks.append(up)
            while not self.closed:
                req = _recv_frame(client)
                if req is None:
                    return
                api, ver, corr = struct.unpack_from(">hhi", req)
                if api == API_PRODUCE:
                    if not self._produce(client, up, req, ver, corr):
                        return
                elif api == API_INIT_PRODUCER_ID and ver >= 3:
                    client.sendall(frame(self._init_pid_v3(up, req, ver, corr)))
                else:
                    resp = self._forward(up, req)
                    if api == API_API_VERSIONS and ver <= 2:
                        resp = self._patch_api_versions(resp)
                    elif api == API_METADATA:
                        resp = self._patch_metadata(resp, ver)
                    client.sendall(frame(resp))
        except Exception as e:  # noqa: BLE001 (reported by check_clean)
            if not self.closed:
                self.errors.append(repr(e))
        finally:
            for s in (client, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _forward(self, up, req):
        up.sendall(frame(req))
        resp = _recv_frame(up)
        check(resp is not None, "proxy: upstream closed the connection")
        return resp

    def _patch_api_versions(self, resp):
        r = Reader(resp)
        w = Writer().i32(r.i32()).i16(r.i16())
        keys = r.array(lambda x: [x.i16(), x.i16(), x.i16()])
        for k in keys:
            if k[0] == API_INIT_PRODUCER_ID and self.init_pid_v3:
                k[2] = 4
            if k[0] == API_PRODUCE and self.produce_min0:
                k[1] = 0
        w.array(keys, lambda w_, k: w_.i16(k[0]).i16(k[1]).i16(k[2]))
        w.raw(r.raw(r.remaining()))
        return w.getvalue()

    def _patch_metadata(self, resp, ver):
        r = Reader(resp)
        w = Writer().i32(r.i32())
        if ver >= 3:
            w.i32(r.i32())
        port = int(self.addr.rsplit(":", 1)[1])

        def broker(x):
            node, _, _ = x.i32(), x.string(), x.i32()
            rack = x.string() if ver >= 1 else None
            return node, rack
        brokers = r.array(broker)

        def wbroker(w_, b):
            w_.i32(b[0]).string("127.0.0.1").i32(port)
            if ver >= 1:
                w_.string(b[1])
        w.array(brokers, wbroker)
        w.raw(r.raw(r.remaining()))
        return w.getvalue()

    def _init_pid_v3(self, up, req, ver, corr):
        r = Reader(req, 8)
        r.string()  # client id
        check_eq(r.uvarint(), 0, "InitProducerId v%d: request header tags" % ver)
        n = r.uvarint()
        check_eq(n, 0, "InitProducerId v%d: transactional id (null)" % ver)
        r.i32()  # transaction timeout
        pid_in, epoch_in = r.i64(), r.i16()
        check_eq(r.uvarint(), 0, "InitProducerId v%d: tagged fields" % ver)
        check_eq(r.remaining(), 0, "InitProducerId v%d: trailing bytes" % ver)
        err = 0
        if pid_in < 0:
            body = (Writer().i16(API_INIT_PRODUCER_ID).i16(1).i32(corr)
                    .string("fault-proxy").string(None).i32(60000).getvalue())
            rr = Reader(self._forward(up, body))
            rr.i32()
            rr.i32()
            err, pid_out, epoch_out = rr.i16(), rr.i64(), rr.i16()
        else:
            pid_out, epoch_out = pid_in, epoch_in + 1
        with self.lock:
            self.init_calls.append((ver, pid_in, epoch_in, pid_out, epoch_out))
        return (Writer().i32(corr).uvarint(0).i32(0).i16(err).i64(pid_out)
                .i16(epoch_out).uvarint(0).getvalue())

    @staticmethod
    def _batch_info(records):
        h = struct.unpack_from(">qiibIhiqqqhii", records)
        vals = []
        if not h[5] & 7:  # compressed batches are passed on unread
            vals = [rec.value for b in decode_batches(records) for rec in b.records]
        return dict(pid=h[9], epoch=h[10], seq=h[11], count=h[12],
                    first=((vals or [b""])[0] or b"").decode(), records=records)

    def _produce(self, client, up, req, ver, corr):
        r = Reader(req, 8)
        client_id = r.string()
        txn, acks, timeout = r.string(), r.i16(), r.i32()
        topics = r.array(lambda x: (x.string(), x.array(
            lambda y: (y.i32(), y.bytes_()))))
        batches, actions = [], {}
        with self.lock:
            for t, parts in topics:
                for idx, records in parts:
                    b = self._batch_info(records)
                    b.update(topic=t, partition=idx)
                    self.attempts[b["first"]] = self.attempts.get(b["first"], 0) + 1
                    b["attempt"] = self.attempts[b["first"]]
                    batches.append(b)
        for b in batches:
            actions[(b["topic"], b["partition"])] = self.rule(self, b)
        acts = list(actions.values())
        results = {}
        if "drop" in acts:
            self._record(batches, actions, results, force="drop")
            return False
        fwd = [(t, [(i, rec) for i, rec in parts if actions[(t, i)] in
                    ("forward", "forward_drop")]) for t, parts in topics]
        fwd = [(t, parts) for t, parts in fwd if parts]
        if fwd:
            body = (Writer().i16(API_PRODUCE).i16(ver).i32(corr)
                    .string(client_id).string(txn).i16(acks).i32(timeout)
                    .array(fwd, lambda w, tp: (w.string(tp[0]), w.array(
                        tp[1], lambda w2, p: w2.i32(p[0]).bytes_(p[1]))))
                    .getvalue())
            rr = Reader(self._forward(up, body))
            rr.i32()

            def part(x):
                idx, err, base = x.i32(), x.i16(), x.i64()
                x.i64()
                lso = x.i64() if ver >= 5 else -1
                if ver >= 8:
                    x.array(lambda y: (y.i32(), y.string()))
                    x.string()
                return idx, err, base, lso
            for t, plist in rr.array(lambda x: (x.string(), x.array(part))):
                for idx, err, base, lso in plist:
                    results[(t, idx)] = (err, base, lso)
        for key, a in actions.items():
            if isinstance(a, tuple):
                results[key] = (a[1], -1, a[2])
        self._record(batches, actions, results)
        if "forward_drop" in acts:
            return False

        def wpart(w, idx, t):
            err, base, lso = results[(t, idx)]
            w.i32(idx).i16(err).i64(base).i64(-1)
            if ver >= 5:
                w.i64(lso)
            if ver >= 8:
                w.i32(0).string(None)
        resp = (Writer().i32(corr).array(topics, lambda w, tp: (
            w.string(tp[0]), w.array(tp[1], lambda w2, p: wpart(w2, p[0], tp[0]))))
            .i32(0).getvalue())
        client.sendall(frame(resp))
        return True

    def _record(self, batches, actions, results, force=None):
        with self.lock:
            for b in batches:
                key = (b["topic"], b["partition"])
                self.seen.append((b, force or actions[key], results.get(key)))

    def batches_of(self, first):
        """[(batch, action, result)] for the batch whose first value is first."""
        with self.lock:
            return [x for x in self.seen if x[0]["first"] == first]

    def check_clean(self):
        check(not self.errors, "fault proxy errors: %s" % self.errors)


def check_no_sanitizer(text, what):
    """UBSan only prints (the exit status stays 0): look at the output."""
    bad = [ln for ln in text.splitlines()
           if any(m in ln for m in ("runtime error:", "AddressSanitizer",
                                    "LeakSanitizer"))]
    check(not bad, "%s: sanitizer reports:\n  %s" % (what, "\n  ".join(bad[:20])))


class StepProducer:
    """client_produce_steps driven through its stdin (see that file)."""

    def __init__(self, broker_addr, *props):
        exe = need_program("CLIENT_PRODUCE_STEPS")
        argv = [exe, broker_addr]
        for p in props:
            argv += ["-X", p]
        self.errf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errf)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.reports = []

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.decode().rstrip("\n"))
        self.lines.put(None)

    def cmd(self, line, until, timeout=60):
        """Sends line; returns the output lines up to the one starting with
        until (included).  DR lines are also kept in self.reports."""
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                got = "<timeout>"
            check(got is not None and got != "<timeout>",
                  "client_produce_steps: no %r after %r (%s); stderr:\n%s"
                  % (until, line, got, self.stderr()))
            out.append(got)
            if got.startswith("DR "):
                _, value, part, off, err = got.split(" ")
                self.reports.append((value, int(part), int(off), err))
            if got.startswith(until):
                return out

    def produce(self, topic, partition, count, prefix):
        return self.cmd("produce %s %d %d %s" % (topic, partition, count, prefix),
                        ("PRODUCED", "PRODUCE_ERR"))[-1]

    def flush(self, ms=30000):
        return self.cmd("flush %d" % ms, "FLUSHED", timeout=ms / 1000 + 30)[-1]

    def quit(self):
        self.cmd("quit", "BYE", timeout=60)
        self.proc.wait(30)
        check_eq(self.proc.returncode, 0, "client_produce_steps exit status")
        check_no_sanitizer(self.stderr(), "client_produce_steps")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode("utf-8", "replace")

    def report(self, value):
        got = [r for r in self.reports if r[0] == value]
        check_eq(len(got), 1, "delivery reports of %s (%r)" % (value, got))
        return got[0]


def check_flushed(sp, what):
    got = sp.flush()
    check(got == "FLUSHED OK", "%s: %s; reports %r; producer stderr:\n%s"
          % (what, got, sp.reports[-20:], sp.stderr()[-3000:]))


def log_values(addr, topic, partition=0):
    """(offset, value) of every record from the log start.  A topic with
    retention.bytes 1 may lose its oldest segments between the ListOffsets
    and the Fetch (OFFSET_OUT_OF_RANGE): then read again from the new
    start."""
    for attempt in range(10):
        with Conn(addr) as c:
            err, _, start = c.list_offset1(topic, partition, -2)
        try:
            return [(r.offset, r.value.decode()) for r in
                    fetch_all(addr, topic, partition, start=start)]
        except AssertionError as e:
            if "expected 0, got 1" not in str(e) or attempt == 9:
                raise
            time.sleep(0.1)


def check_once(addr, topic, expected, partition=0, what=""):
    """Every value of expected is in the log exactly once, in that order;
    returns {value: offset}."""
    got = log_values(addr, topic, partition)
    vals = [v for _, v in got]
    for v in expected:
        check_eq(vals.count(v), 1, "%s: copies of %s in %s-%d (log %r)"
                 % (what, v, topic, partition, vals))
    pos = [vals.index(v) for v in expected]
    check_eq(pos, sorted(pos), "%s: order in %s-%d" % (what, topic, partition))
    return {v: off for off, v in got}


def values(prefix, n):
    return ["%s-%d" % (prefix, i) for i in range(n)]


def check_delivered(sp, prefix, n, offsets=None):
    for v in values(prefix, n):
        _, _, off, err = sp.report(v)
        check_eq(err, "OK", "delivery report of %s" % v)
        if offsets is not None:
            check_eq(off, offsets[v], "reported offset of %s" % v)


def restart_same_port(b, before_start=None):
    port = b.port
    b.stop()
    if before_start:
        before_start()
    b.start(extra_sets={"listeners": "127.0.0.1:%d" % port})
    check_eq(b.port, port, "broker restarted on the same port")


IDEM = ("enable.idempotence=true", "retry.backoff.ms=100", "linger.ms=5")


def test_idempotent_unknown_producer_id():
    """Real broker: retention deletes every batch of the producer and the
    broker restarts without its producer snapshot, so it no longer knows the
    producer id.  The next batch gets UNKNOWN_PRODUCER_ID; the producer
    re-initialises (new id, sequence 0) and delivers it exactly once."""
    b = start("faults-unknown-pid", sets={"log.retention.check.interval.ms": "50"})
    with Conn(b.addr) as c:
        c.create_topic("up", 1, configs={"segment.bytes": "1024",
                                          "retention.bytes": "1"})
    sp = StepProducer(b.addr, *IDEM)
    try:
        check_eq(sp.produce("up", 0, 5, "a"), "PRODUCED 5", "produce a")
        check_flushed(sp, "flush a")
        check_delivered(sp, "a", 5)
        # Other producers' data rolls segments; retention deletes ours.
        with Conn(b.addr) as c:
            for i in range(6):
                err, _ = c.produce1("up", 0, build_batch([(None, b"f" * 700)]))
                check_eq(err, 0, "filler produce")

            def trimmed():
                return c.list_offset1("up", 0, -2)[2] > 4
            wait_for(trimmed, 20, what="retention to delete the producer's batches")
        snap = os.path.join(b.partition_dir("up", 0), "producers.snapshot")
        restart_same_port(b, lambda: os.path.exists(snap) and os.unlink(snap))
        check_eq(sp.produce("up", 0, 5, "b"), "PRODUCED 5", "produce b")
        check_flushed(sp, "flush b")
        offs = check_once(b.addr, "up", values("b", 5), what="after the bump")
        check_delivered(sp, "b", 5, offs)
        err = sp.stderr()
        check("UNKNOWN_PRODUCER_ID" in err and "re-initialised" in err,
              "producer log should tell about the re-initialisation:\n" + err)
        sp.quit()
    finally:
        sp.kill()


def test_idempotent_out_of_order():
    """Real broker: the log loses an acknowledged tail (last segment cut,
    recovery checkpoint and producer snapshot removed), so the producer's
    next sequence leaves a gap: OUT_OF_ORDER_SEQUENCE_NUMBER on the head
    batch.  The producer re-initialises and the new batch is delivered once;
    what the broker kept is not duplicated."""
    b = start("faults-oos")
    with Conn(b.addr) as c:
        c.create_topic("oos", 1)
    sp = StepProducer(b.addr, *IDEM)
    try:
        for prefix in ("a", "c"):
            check_eq(sp.produce("oos", 0, 5, prefix), "PRODUCED 5", "produce")
            check_flushed(sp, "flush " + prefix)
        d = b.partition_dir("oos", 0)

        def cut_tail():
            for name in ("producers.snapshot", "recovery.ckpt"):
                if os.path.exists(os.path.join(d, name)):
                    os.unlink(os.path.join(d, name))
            seg = b.segment_files("oos", 0)[-1]
            os.truncate(seg, os.path.getsize(seg) - 1)
        restart_same_port(b, cut_tail)
        check_eq([v for _, v in log_values(b.addr, "oos")], values("a", 5),
                 "log after the cut (batch c lost)")
        check_eq(sp.produce("oos", 0, 5, "b"), "PRODUCED 5", "produce b")
        check_flushed(sp, "flush b")
        offs = check_once(b.addr, "oos", values("a", 5) + values("b", 5))
        check_delivered(sp, "b", 5, offs)
        check("OUT_OF_ORDER_SEQUENCE_NUMBER" in sp.stderr(),
              "producer log should name the error:\n" + sp.stderr())
        sp.quit()
    finally:
        sp.kill()


def test_idempotent_epoch_bump_v4():
    """Fault proxy advertising InitProducerId v0-4: the re-initialisation
    after UNKNOWN_PRODUCER_ID sends InitProducerId v4 with the current id
    and epoch, gets the same id with epoch + 1, and resends the batch with
    that epoch from sequence 0; the real broker appends it once."""
    b = start("faults-bump-v4")
    with Conn(b.addr) as c:
        c.create_topic("eb", 1)

    def rule(proxy, bt):
        if bt["first"] == "b-0" and bt["attempt"] == 1:
            return ("error", ERR_UNKNOWN_PRODUCER_ID, 0)
        return "forward"
    px = FaultProxy(b.addr, rule, init_pid_v3=True)
    sp = StepProducer(px.addr, *IDEM)
    try:
        sp.produce("eb", 0, 5, "a")
        check_flushed(sp, "flush a")
        sp.produce("eb", 0, 5, "b")
        check_flushed(sp, "flush b")
        offs = check_once(b.addr, "eb", values("a", 5) + values("b", 5))
        check_delivered(sp, "a", 5, offs)
        check_delivered(sp, "b", 5, offs)
        calls = px.init_calls
        check_eq(len(calls), 2, "InitProducerId calls %r" % calls)
        ver, pid_in, epoch_in, pid, epoch = calls[0]
        check(ver == 4 and pid_in == -1 and epoch_in == -1 and pid >= 0,
              "first InitProducerId %r" % (calls[0],))
        check_eq(calls[1], (4, pid, 0, pid, 1), "the bump: v4 with the current id and epoch")
        tries = [(x[0]["pid"], x[0]["epoch"], x[0]["seq"], x[1]) for x in px.batches_of("b-0")]
        check_eq(tries, [(pid, 0, 5, ("error", ERR_UNKNOWN_PRODUCER_ID, 0)),
                         (pid, 1, 0, "forward")], "attempts of batch b")
        sp.quit()
        px.check_clean()
    finally:
        sp.kill()
        px.close()


def test_idempotent_bump_safety():
    """A batch whose earlier attempt got no answer may be in the log.
    (1) UNKNOWN_PRODUCER_ID for it while the broker's log start is before
    our last acknowledged record (the state was not deleted with the log):
    it cannot have been written, the producer re-initialises, one copy.
    (2) The same with the log start past our last acknowledged record
    (retention could have deleted it together with the state): the producer
    does not resend it under a new id; the batch and later produce calls
    fail with SLUICE_ERR_FATAL and the log has it once (the lost attempt)."""
    b = start("faults-bump-safety")
    with Conn(b.addr) as c:
        c.create_topic("us", 1)
        c.create_topic("uf", 1)

    def rule(proxy, bt):
        if bt["first"] == "b-0":  # safe: never reached the broker
            return {1: "drop", 2: ("error", ERR_UNKNOWN_PRODUCER_ID, 0)}.get(
                bt["attempt"], "forward")
        if bt["first"] == "x-0":  # unsafe: written, answer lost
            return {1: "forward_drop", 2: ("error", ERR_UNKNOWN_PRODUCER_ID, 10)}.get(
                bt["attempt"], "forward")
        return "forward"
    px = FaultProxy(b.addr, rule)
    sp = StepProducer(px.addr, *IDEM)
    try:
        sp.produce("us", 0, 5, "a")
        check_flushed(sp, "flush a")
        sp.produce("us", 0, 5, "b")
        check_flushed(sp, "flush (safe case)")
        offs = check_once(b.addr, "us", values("a", 5) + values("b", 5), what="safe case")
        check_delivered(sp, "b", 5, offs)
        pids = [x[0]["pid"] for x in px.batches_of("b-0")]
        check(len(pids) == 3 and pids[0] == pids[1] != pids[2],
              "safe case: two attempts under the old id, then a new one: %r" % pids)
        sp.quit()
        sp = StepProducer(px.addr, *IDEM)
        sp.produce("uf", 0, 5, "w")
        check_flushed(sp, "flush w")
        sp.produce("uf", 0, 5, "x")
        check_flushed(sp, "flush (unsafe case)")
        for v in values("x", 5):
            check_eq(sp.report(v)[3], "FATAL", "delivery report of %s" % v)
        check_eq(sp.produce("uf", 0, 1, "y"), "PRODUCE_ERR FATAL after 0",
                 "produce after the fatal error")
        check_once(b.addr, "uf", values("w", 5) + values("x", 5), what="unsafe case")
        check_eq(len(px.batches_of("x-0")), 2, "unsafe case: no third attempt")
        check("could duplicate" in sp.stderr(),
              "the fatal error should say why:\n" + sp.stderr())
        sp.quit()
        px.check_clean()
    finally:
        sp.kill()
        px.close()


def test_idempotent_bump_waits_for_unresolved():
    """Partition 1's batch y was written but its answer lost, and its
    retries are refused (NOT_LEADER_OR_FOLLOWER) for a while; meanwhile
    partition 0's batch x gets UNKNOWN_PRODUCER_ID.  The re-initialisation
    must wait until y is answered under the old id (the broker finds the
    duplicate and gives its offset): only then is x resent under the new
    id.  Each message once, y reported at its first offset."""
    b = start("faults-bump-wait")
    with Conn(b.addr) as c:
        c.create_topic("rv", 2)

    def rule(proxy, bt):
        if bt["first"] == "y-0":
            if bt["attempt"] == 1:
                return "forward_drop"
            if bt["attempt"] <= 4:
                return ("error", ERR_NOT_LEADER_OR_FOLLOWER, 0)
        if bt["first"] == "x-0" and bt["attempt"] == 1:
            return ("error", ERR_UNKNOWN_PRODUCER_ID, 0)
        return "forward"
    px = FaultProxy(b.addr, rule)
    sp = StepProducer(px.addr, "enable.idempotence=true", "retry.backoff.ms=300",
                      "linger.ms=1")
    try:
        sp.produce("rv", 0, 3, "a")
        sp.produce("rv", 1, 3, "w")
        check_flushed(sp, "flush warm-up")
        sp.produce("rv", 1, 1, "y")
        sp.cmd("sleep 400", "SLEPT")
        sp.produce("rv", 0, 1, "x")
        check_flushed(sp, "flush")
        offs0 = check_once(b.addr, "rv", values("a", 3) + ["x-0"], partition=0)
        offs1 = check_once(b.addr, "rv", values("w", 3) + ["y-0"], partition=1)
        check_delivered(sp, "x", 1, offs0)
        check_delivered(sp, "y", 1, offs1)
        ys = px.batches_of("y-0")
        xs = px.batches_of("x-0")
        check_eq(len(ys), 5, "attempts of y")
        old = ys[0][0]["pid"]
        check(all(x[0]["pid"] == old and x[0]["seq"] == 3 for x in ys),
              "y always resent under the old id with its sequence: %r"
              % [(x[0]["pid"], x[0]["seq"]) for x in ys])
        check_eq(ys[0][2][1], offs1["y-0"], "y's offset from its lost attempt")
        check_eq(len(xs), 2, "attempts of x")
        check(xs[0][0]["pid"] == old and xs[1][0]["pid"] != old and xs[1][0]["seq"] == 0,
              "x resent under a new id from sequence 0: %r"
              % [(x[0]["pid"], x[0]["seq"]) for x in xs])
        order = [x[0]["first"] for x in px.seen]
        x_resent = [i for i, f in enumerate(order) if f == "x-0"][1]
        y_last = [i for i, f in enumerate(order) if f == "y-0"][-1]
        check(x_resent > y_last, "x resent only after y's last attempt: %r" % order)
        sp.quit()
        px.check_clean()
    finally:
        sp.kill()
        px.close()


def test_retries_retriable_errors():
    """The broker (through the fault proxy) answers NOT_LEADER_OR_FOLLOWER
    three times and REQUEST_TIMED_OUT twice, then accepts: every message
    is reported delivered once, at consecutive offsets, and is in the log
    once.  With idempotence, a lost response (written, connection dropped)
    is retried and answered as a duplicate: still one copy."""
    b = start("faults-retries")
    with Conn(b.addr) as c:
        c.create_topic("rr", 1)
        c.create_topic("ri", 1)
    count = {"rr": 0}

    def rule(proxy, bt):
        if bt["topic"] == "rr":
            count["rr"] += 1
            n = count["rr"]
            if n <= 3:
                return ("error", ERR_NOT_LEADER_OR_FOLLOWER, 0)
            if n <= 5:
                return ("error", ERR_REQUEST_TIMED_OUT, 0)
        if bt["topic"] == "ri" and bt["first"] == "i-0" and bt["attempt"] == 1:
            return "forward_drop"
        return "forward"
    px = FaultProxy(b.addr, rule)
    sp = StepProducer(px.addr, "retry.backoff.ms=50", "linger.ms=20")
    try:
        sp.produce("rr", 0, 50, "r")
        check_flushed(sp, "flush")
        offs = check_once(b.addr, "rr", values("r", 50))
        check_eq(sorted(offs.values()), list(range(50)), "offsets in the log")
        check_delivered(sp, "r", 50, offs)
        acts = [x[1] for x in px.seen if x[0]["topic"] == "rr"]
        check_eq(acts[:5], [("error", ERR_NOT_LEADER_OR_FOLLOWER, 0)] * 3
                 + [("error", ERR_REQUEST_TIMED_OUT, 0)] * 2, "proxy answers")
        check(all(a == "forward" for a in acts[5:]), "then forwarded: %r" % acts)
        sp.quit()
        sp = StepProducer(px.addr, *IDEM)
        sp.produce("ri", 0, 20, "i")
        check_flushed(sp, "flush (idempotent)")
        offs = check_once(b.addr, "ri", values("i", 20), what="lost response")
        check_delivered(sp, "i", 20, offs)
        tries = px.batches_of("i-0")
        check_eq([t[1] for t in tries], ["forward_drop", "forward"],
                 "the lost response was retried once")
        check_eq(tries[0][2][1], offs["i-0"], "retry answered with the first offset")
        sp.quit()
        px.check_clean()
    finally:
        sp.kill()
        px.close()


def test_non_retriable_reported_at_once():
    """INVALID_RECORD (not retriable) is reported in the delivery callback
    for every message of the batch at once: one Produce attempt, no wait
    for retry.backoff.ms (5 s here), nothing in the log."""
    b = start("faults-nonretriable")
    with Conn(b.addr) as c:
        c.create_topic("nr", 1)

    def rule(proxy, bt):
        return ("error", ERR_INVALID_RECORD, 0) if bt["topic"] == "nr" else "forward"
    px = FaultProxy(b.addr, rule)
    sp = StepProducer(px.addr, "retry.backoff.ms=5000", "linger.ms=5")
    try:
        sp.produce("nr", 0, 10, "n")
        t0 = time.monotonic()
        check_flushed(sp, "flush")
        took = time.monotonic() - t0
        check(took < 3.0, "reports took %.1f s (a retry would wait 5 s)" % took)
        for v in values("n", 10):
            check_eq(sp.report(v)[3], "INVALID_RECORD", "report of " + v)
        check_eq(len([x for x in px.seen if x[0]["topic"] == "nr"]), 1,
                 "Produce attempts for nr")
        check_eq(log_values(b.addr, "nr"), [], "log of nr")
        sp.quit()
        px.check_clean()
    finally:
        sp.kill()
        px.close()


def consume_check(addr, *args, timeout=120):
    exe = need_program("CLIENT_CONSUME_CHECK")
    rc, out, err = run_cmd([exe, addr] + [str(a) for a in args], timeout=timeout)
    lines = out.decode().splitlines()
    log("client_consume_check %s:\n  %s" % (" ".join(map(str, args)), "\n  ".join(lines)))
    check_eq(rc, 0, "client_consume_check exit (%s)" % err.decode()[-2000:])
    check_no_sanitizer(err.decode("utf-8", "replace"), "client_consume_check")
    return lines


def test_consumer_compressed_batch():
    """kcat (librdkafka) writes gzip batches between uncompressed ones.
    libsluice returns every uncompressed message byte for byte, one
    UNSUPPORTED_COMPRESSION error per compressed batch (offset = the batch's
    last, errstr naming the codec and the offsets), nothing from inside the
    compressed batches, and continues after seek(offset + 1)."""
    kcat = kcat_prog()
    b = start("faults-gzip")
    with Conn(b.addr) as c:
        c.create_topic("cz", 1)
    rc, _, err = sluice(b, "produce", "cz", "--partition", "0",
                        input_data=b"plain-0\nplain-1\nplain-2\n")
    check_eq(rc, 0, "produce plain (%s)" % err)
    zlines = b"".join(b"zipped-%d-%s\n" % (i, b"z" * 200) for i in range(20))
    # librdkafka 2.0.2 compresses only if the broker lists Produce v0:
    # through the proxy, which says so (and forwards everything).
    px = FaultProxy(b.addr, produce_min0=True)
    try:
        rc, _, err = run_cmd([kcat, "-P", "-b", px.addr, "-t", "cz", "-p", "0",
                              "-z", "gzip"], input_data=zlines, timeout=60)
        check_eq(rc, 0, "kcat -z gzip (%s)" % err)
        px.check_clean()
    finally:
        px.close()
    rc, _, err = sluice(b, "produce", "cz", "--partition", "0",
                        input_data=b"plain-3\nplain-4\n")
    check_eq(rc, 0, "produce plain (%s)" % err)
    with Conn(b.addr) as c:
        fp = c.fetch1("cz", 0, 0)
    # the raw log: which offsets are in compressed batches
    raw = fp.records
    pos, zbatches = 0, []
    while pos + 61 <= len(raw):
        base, blen = struct.unpack_from(">qi", raw, pos)
        attrs, last = struct.unpack_from(">hi", raw, pos + 21)
        if attrs & 7:
            zbatches.append((base, base + last, attrs & 7))
        pos += 12 + blen
    check(zbatches and all(z[2] == 1 for z in zbatches),
          "kcat should have written gzip batches: %r" % zbatches)
    lines = consume_check(b.addr, "read", "cz", 0, 5)
    msgs = [ln.split(" ", 3) for ln in lines if ln.startswith("MSG ")]
    check_eq([m[3] for m in msgs], ["plain-%d" % i for i in range(5)],
             "uncompressed messages, byte for byte, nothing else")
    check_eq([int(m[1]) for m in msgs], [0, 1, 2, zbatches[-1][1] + 1, zbatches[-1][1] + 2],
             "offsets of the uncompressed messages")
    errs = [ln.split(" ", 3) for ln in lines if ln.startswith("ERR ")]
    check_eq([(int(e[1]), e[2]) for e in errs],
             [(z[1], "UNSUPPORTED_COMPRESSION") for z in zbatches],
             "one error per compressed batch, at its last offset")
    for e, z in zip(errs, zbatches):
        check("offsets %d..%d" % (z[0], z[1]) in e[3] and "gzip" in e[3]
              and "seek to %d" % (z[1] + 1) in e[3], "error string: %r" % e[3])
    check_eq([int(ln.split()[1]) for ln in lines if ln.startswith("SEEK ")],
             [z[1] + 1 for z in zbatches], "seeks")


def test_consumer_times_seek_watermarks():
    """Records written with known timestamps (10 records, t0 + 1000*i, in
    three batches): offsets_for_times finds the first record at or after
    each time (also between two records, and -1 after the last), seek to
    it makes poll return exactly that record (also backwards), and
    query_watermarks gives 0..10; on a topic whose first segments were
    deleted by retention the low watermark follows the log start."""
    b = start("faults-times", sets={"log.retention.check.interval.ms": "50"})
    t0 = 1700000000000
    with Conn(b.addr) as c:
        c.create_topic("tm", 1)
        for lo, hi in ((0, 3), (3, 7), (7, 10)):
            err, _ = c.produce1("tm", 0, build_batch(
                [(None, "v%d" % i, (), t0 + 1000 * i) for i in range(lo, hi)]))
            check_eq(err, 0, "produce tm")
    queries = [t0 + 5000, t0, t0 + 9000, t0 + 2500, t0 + 3000, t0 + 20000, 0]
    lines = consume_check(b.addr, "times", "tm", 0, *queries)
    check_eq(lines[0], "WM 0 10", "watermarks")
    expect = {t0 + 5000: 5, t0: 0, t0 + 9000: 9, t0 + 2500: 3, t0 + 3000: 3,
              t0 + 20000: -1, 0: 0}
    got = [ln.split(" ") for ln in lines if ln.startswith("TS ")]
    check_eq(len(got), len(queries), "answers")
    for q, g in zip(queries, got):
        check_eq(int(g[1]), q, "query order")
        off = expect[q]
        check_eq(int(g[2]), off, "offsets_for_times(%d)" % q)
        if off >= 0:
            check_eq(g[3:], [str(off), str(t0 + 1000 * off), "v%d" % off],
                     "message after seek to %d" % off)
    with Conn(b.addr) as c:
        c.create_topic("tw", 1, configs={"segment.bytes": "1024", "retention.bytes": "1"})
        for i in range(6):
            c.produce1("tw", 0, build_batch([(None, b"w" * 700)]))
        wait_for(lambda: c.list_offset1("tw", 0, -2)[2] > 0, 20,
                 what="retention on tw")
        lo, hi = c.list_offset1("tw", 0, -2)[2], c.list_offset1("tw", 0, -1)[2]
    lines = consume_check(b.addr, "times", "tw", 0)
    check_eq(lines[0], "WM %d %d" % (lo, hi), "watermarks after retention")


def test_idle_clients_survive_broker_restart():
    """A producer with nothing to send and a consumer waiting in poll while
    sluiced restarts (same port): both reconnect on their own (the I/O
    threads used to postpone the reconnection forever when nothing else
    woke them): the producer's next messages are delivered and the
    consumer, still in the same poll loop, receives them."""
    b = start("faults-idle-restart")
    with Conn(b.addr) as c:
        c.create_topic("ir", 1)
    sp = StepProducer(b.addr, "linger.ms=1", "reconnect.backoff.ms=100")
    cons = subprocess.Popen([need_program("CLIENT_CONSUME_CHECK"), b.addr, "read", "ir",
                             "0", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = queue.Queue()

    def reader():
        for ln in cons.stdout:
            lines.put(ln.decode().rstrip("\n"))
        lines.put(None)
    threading.Thread(target=reader, daemon=True).start()

    def wait_msgs(n, timeout):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                ln = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                ln = None
            check(ln is not None, "consumer: %d of %d messages (%r)" % (len(got), n, got))
            if ln.startswith("MSG "):
                got.append(ln.split(" ", 3)[3])
        return got
    try:
        sp.produce("ir", 0, 5, "a")
        check_flushed(sp, "flush a")
        check_eq(wait_msgs(5, 30), values("a", 5), "consumed before the restart")
        restart_same_port(b)
        time.sleep(1.0)  # both clients idle, connections lost
        sp.produce("ir", 0, 5, "b")
        check_flushed(sp, "flush b")
        check_delivered(sp, "b", 5)
        check_eq(wait_msgs(5, 8), values("b", 5), "consumed after the restart")
        cons.wait(10)
        check_eq(cons.returncode, 0, "consumer exit")
        check_no_sanitizer(cons.stderr.read().decode("utf-8", "replace"), "consumer")
        sp.quit()
    finally:
        sp.kill()
        if cons.poll() is None:
            cons.kill()
            cons.wait(10)


FAULT_TESTS = [
    ("idle_clients_survive_broker_restart", test_idle_clients_survive_broker_restart, 120),
    ("idempotent_unknown_producer_id", test_idempotent_unknown_producer_id, 180),
    ("idempotent_out_of_order", test_idempotent_out_of_order, 180),
    ("idempotent_epoch_bump_v4", test_idempotent_epoch_bump_v4, 120),
    ("idempotent_bump_safety", test_idempotent_bump_safety, 180),
    ("idempotent_bump_waits_for_unresolved", test_idempotent_bump_waits_for_unresolved, 180),
    ("retries_retriable_errors", test_retries_retriable_errors, 180),
    ("non_retriable_reported_at_once", test_non_retriable_reported_at_once, 120),
    ("consumer_compressed_batch", test_consumer_compressed_batch, 120),
    ("consumer_times_seek_watermarks", test_consumer_times_seek_watermarks, 120),
]


if __name__ == "__main__":
    if "--faults" in sys.argv[1:]:
        sys.argv.remove("--faults")
        run(FAULT_TESTS)
    run([
        ("cli_topics", test_cli_topics, 120),
        ("roundtrip_1m", test_roundtrip_1m, 1200),
        ("kcat_reads_libsluice", test_kcat_reads_libsluice, 120),
        ("libsluice_reads_kcat", test_libsluice_reads_kcat, 120),
        ("idempotent_restart", test_idempotent_restart, 600),
    ])
