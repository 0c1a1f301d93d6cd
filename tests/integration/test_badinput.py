#!/usr/bin/env python3
"""Hostile and broken clients: each case on its own connection, and after
EACH case a normal client must still work (ApiVersions + produce + fetch on
a new connection) and the broker process must be alive.  Also the
connection limit and Fetch long-poll timing.

Env: SLUICED.
"""
import os
import random
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_API_VERSIONS, API_FETCH, API_METADATA, API_PRODUCE,  # noqa: E402
                     Broker, Writer,
                     Conn, ConnectionClosed, ERR_CORRUPT_MESSAGE,
                     ERR_INVALID_RECORD, ERR_MESSAGE_TOO_LARGE, ERR_NONE,
                     ERR_UNKNOWN_TOPIC_OR_PARTITION, ERR_UNSUPPORTED_VERSION,
                     Reader, build_batch, check, check_api_ranges,
                     check_eq, fetch_body, frame, log, produce_body,
                     request_header, run, sanity_roundtrip)

SOCKET_REQUEST_MAX = 1 << 20       # socket.request.max.bytes for this broker
MESSAGE_MAX = 100 * 1024           # message.max.bytes for this broker
MAX_CONNECTIONS = 50
OK_TOPIC = "ok"                    # where the sanity round trips go
BIG_TOPIC = "big"                  # data for the abandoned large fetch

_broker = [None]


def broker():
    """One broker shared by the cases of this file (a case that kills it
    fails, and the next case starts a new one)."""
    b = _broker[0]
    if b is not None and b.alive():
        return b
    b = Broker(sets={
        "auto.create.topics.enable": "false",
        "socket.request.max.bytes": SOCKET_REQUEST_MAX,
        "message.max.bytes": MESSAGE_MAX,
        "max.connections": MAX_CONNECTIONS,
    }, name="badinput", shared=True)
    b.start()
    with Conn(b.addr) as c:
        c.create_topic(OK_TOPIC, 1)
        c.create_topic(BIG_TOPIC, 1)
    _broker[0] = b
    return b


def raw_socket(b, timeout=10):
    s = socket.create_connection(("127.0.0.1", b.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def closed_or_silent(sock, timeout):
    """Read until EOF/reset or timeout.  Returns (closed, bytes_received)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(got)
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return False, bytes(got)
            if not chunk:
                return True, bytes(got)
            got += chunk
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return True, bytes(got)


def send_ignoring_reset(sock, data):
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return False


def case(fn):
    """Wrap a case: run it, then the sanity round trip."""
    def wrapped():
        b = broker()
        fn(b)
        sanity_roundtrip(b, OK_TOPIC, what=fn.__name__)
    wrapped.__name__ = fn.__name__
    return wrapped


# ---------------------------------------------------------------- cases

@case
def garbage_bytes(b):
    rng = random.Random(1)
    # 1. random bytes: the first four are a huge or negative length.
    s = raw_socket(b)
    send_ignoring_reset(s, b"\xde\xad\xbe\xef" + bytes(
        rng.getrandbits(8) for _ in range(4096)))
    closed, _ = closed_or_silent(s, 5)
    s.close()
    check(closed, "connection not closed after 4 KiB of garbage with a "
          "bogus length prefix")
    # 2. a well-sized frame full of garbage (header mostly unparsable).
    for n in (1, 3, 7, 9, 64, 1000):
        s = raw_socket(b)
        body = bytes(rng.getrandbits(8) for _ in range(n))
        send_ignoring_reset(s, frame(body))
        closed, data = closed_or_silent(s, 1.0)  # error answer or close
        log("    %4d-byte garbage frame: %s, %d bytes answered"
            % (n, "closed" if closed else "left open", len(data)))
        s.close()
        b.check_alive("garbage frame of %d bytes" % n)
    # 3. a valid header with a client id length beyond the frame.
    s = raw_socket(b)
    send_ignoring_reset(s, frame(struct.pack(">hhih", 18, 0, 7, 500) + b"x"))
    closed, data = closed_or_silent(s, 5)
    s.close()
    log("    client id longer than its frame: %s, %d bytes answered"
        % ("closed" if closed else "left open", len(data)))
    check(closed or data, "a header whose client id overruns the frame got "
          "neither an answer nor a close within 5 s")


@case
def frame_length_minus_one(b):
    s = raw_socket(b)
    send_ignoring_reset(s, struct.pack(">i", -1) + b"\0" * 16)
    closed, data = closed_or_silent(s, 5)
    s.close()
    check(closed, "connection not closed after frame length -1")


@case
def frame_length_2gib(b):
    s = raw_socket(b)
    send_ignoring_reset(s, struct.pack(">i", 0x7FFFFFFF) +
                        request_header(18, 0, 1))
    closed, data = closed_or_silent(s, 5)
    s.close()
    check(closed, "connection not closed after a frame length of 2 GiB")


@case
def truncated_frame_then_close(b):
    s = raw_socket(b)
    payload = request_header(18, 0, 1)
    send_ignoring_reset(s, struct.pack(">i", 100) + payload)  # 100 promised
    s.close()
    time.sleep(0.2)


@case
def unknown_api_key(b):
    with Conn(b.addr) as c:
        corr = c.send_request(9999, 0, b"\0\0\0\0")
        closed, data = closed_or_silent(c.sock, 5)
        log("    api key 9999: %s, answer %s"
            % ("closed" if closed else "open", data.hex()))
        if data:
            check(len(data) >= 8, "short answer to api key 9999: %r" % data)
            size, got_corr = struct.unpack(">ii", data[:8])
            check_eq(got_corr, corr, "correlation id of the answer to api "
                     "key 9999")
        else:
            check(closed, "api key 9999: neither an answer nor a close "
                  "within 5 s")


@case
def produce_v99(b):
    with Conn(b.addr) as c:
        corr = c.send_request(API_PRODUCE, 99, b"\0" * 32)
        c.settimeout(5)
        try:
            payload = c.recv_frame()
        except (ConnectionClosed, ConnectionResetError):
            log("    Produce v99: connection closed")
            return  # closing is allowed
        except socket.timeout:
            raise AssertionError("Produce v99: no answer and no close "
                                 "within 5 s")
        log("    Produce v99: answer %s" % payload.hex())
        r = Reader(payload)
        check_eq(r.i32(), corr, "correlation id of the Produce v99 answer")
        if r.remaining() >= 2:
            # Whatever layout, error 35 must be visible as the first int16
            # error field Kafka would put there; we accept it anywhere in
            # the first bytes as a hint, but require it somewhere.
            check(struct.pack(">h", ERR_UNSUPPORTED_VERSION) in payload[4:],
                  "Produce v99 answer carries no UNSUPPORTED_VERSION (35): "
                  "%r" % payload[:64])


@case
def fetch_v99_and_api_versions_v99(b):
    for key in (API_FETCH, API_API_VERSIONS):
        with Conn(b.addr) as c:
            corr = c.send_request(key, 99, b"")
            c.settimeout(5)
            try:
                payload = c.recv_frame()
            except (ConnectionClosed, ConnectionResetError):
                log("    api %d v99: connection closed" % key)
                continue
            log("    api %d v99: answer %s" % (key, payload[:40].hex()))
            check_eq(struct.unpack(">i", payload[:4])[0], corr,
                     "correlation id of the answer to api %d v99" % key)


@case
def api_versions_v3(b):
    with Conn(b.addr) as c:
        corr, payload = c.api_versions_v3_raw()
        r = Reader(payload)
        check_eq(r.i32(), corr, "ApiVersions v3 correlation id")
        err = r.i16()
        check_eq(err, ERR_UNSUPPORTED_VERSION, "ApiVersions v3 error code")
        ranges = {}
        for k, lo, hi in r.array(lambda x: (x.i16(), x.i16(), x.i16())):
            ranges[k] = (lo, hi)
        check_eq(r.remaining(), 0, "bytes after the v0-layout ApiVersions "
                 "body (answer %s)" % payload.hex())
        check_api_ranges(ranges, "ApiVersions v3 error answer")
        check_eq(ranges[API_API_VERSIONS][1], 2,
                 "advertised max ApiVersions version")
        # The same connection keeps working (librdkafka retries with v0).
        err, ranges0 = c.api_versions(0)
        check_eq(err, ERR_NONE, "ApiVersions v0 after the v3 attempt")
        check_eq(ranges0, ranges, "ranges in the v0 answer vs the error "
                 "answer")
        err, ranges2 = c.api_versions(2)
        check_eq(err, ERR_NONE, "ApiVersions v2")


@case
def produce_bad_crc(b):
    with Conn(b.addr) as c:
        batch = build_batch([(b"k", b"v" * 50)], bad_crc=True)
        err, _ = c.produce1(OK_TOPIC, 0, batch)
        check_eq(err, ERR_CORRUPT_MESSAGE, "Produce with a wrong CRC")
        # Nothing of it may be visible.
        err, _, end = c.list_offset1(OK_TOPIC, 0, -1)
        fp = c.fetch1(OK_TOPIC, 0, max(0, end - 1))
        for m in fp.messages():
            check(m.value != b"v" * 50, "the corrupt batch was stored")


@case
def produce_unknown_topic(b):
    with Conn(b.addr) as c:
        err, _ = c.produce1("no-such-topic", 0, build_batch([(b"k", b"v")]))
        check_eq(err, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                 "Produce to an unknown topic (auto-create off)")
        err, _ = c.produce1(OK_TOPIC, 7, build_batch([(b"k", b"v")]))
        check_eq(err, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                 "Produce to partition 7 of a 1-partition topic")
        md = c.metadata(["no-such-topic"], version=4, allow_auto_create=True)
        check("no-such-topic" not in md.topics or
              md.topics["no-such-topic"][0] == ERR_UNKNOWN_TOPIC_OR_PARTITION,
              "Metadata with auto-create disabled: %r" % md.topics)


@case
def produce_count_mismatch(b):
    with Conn(b.addr) as c:
        recs = [(b"k1", b"v1"), (b"k2", b"v2")]
        for kw in ({"record_count": 3}, {"record_count": 1},
                   {"last_offset_delta": 5}):
            err, _ = c.produce1(OK_TOPIC, 0, build_batch(recs, **kw))
            check(err in (ERR_INVALID_RECORD, ERR_CORRUPT_MESSAGE),
                  "Produce with %r: expected INVALID_RECORD (87) or "
                  "CORRUPT_MESSAGE (2), got %d" % (kw, err))
        # magic 1 and a truncated batch.
        err, _ = c.produce1(OK_TOPIC, 0, build_batch(recs, magic=1))
        check(err != ERR_NONE, "Produce of a magic-1 batch was accepted")
        err, _ = c.produce1(OK_TOPIC, 0, build_batch(recs)[:-3])
        check(err != ERR_NONE, "Produce of a truncated batch was accepted")


@case
def request_over_socket_max(b):
    s = raw_socket(b)
    size = 2 * SOCKET_REQUEST_MAX
    hdr = request_header(API_PRODUCE, 3, 1)
    body = hdr + b"\0" * (size - len(hdr))
    sent = send_ignoring_reset(s, struct.pack(">i", size) + body)
    closed, data = closed_or_silent(s, 5)
    s.close()
    check(closed, "connection not closed after a %d-byte request "
          "(socket.request.max.bytes=%d)" % (size, SOCKET_REQUEST_MAX))
    check(not data, "got an answer to an oversized request: %r" % data[:32])
    log("    (all bytes sent before close: %s)" % sent)


@case
def batch_over_message_max(b):
    with Conn(b.addr) as c:
        batch = build_batch([(b"k", b"x" * (2 * MESSAGE_MAX))])
        err, _ = c.produce1(OK_TOPIC, 0, batch)
        check_eq(err, ERR_MESSAGE_TOO_LARGE, "Produce of a %d-byte batch "
                 "(message.max.bytes=%d)" % (len(batch), MESSAGE_MAX))
        # Just under the limit is fine.
        batch = build_batch([(b"k", b"y" * (MESSAGE_MAX - 200))])
        err, _ = c.produce1(OK_TOPIC, 0, batch)
        check_eq(err, ERR_NONE, "Produce of a %d-byte batch "
                 "(message.max.bytes=%d)" % (len(batch), MESSAGE_MAX))


@case
def disconnect_mid_request(b):
    for cut in (2, 10, 40):
        s = raw_socket(b)
        req = frame(request_header(API_PRODUCE, 3, 1) +
                    produce_body([(OK_TOPIC, 0, build_batch(
                        [(b"k", b"half" * 100)]))]))
        send_ignoring_reset(s, req[:len(req) * cut // 100 or 1])
        s.close()
    time.sleep(0.2)


@case
def disconnect_mid_response(b):
    # ~4 MiB of data, then fetch all of it several times and go away.
    with Conn(b.addr) as c:
        err, _, end = c.list_offset1(BIG_TOPIC, 0, -1)
        while end < 60:
            batch = build_batch([(None, os.urandom(64 * 1024))])
            err, base = c.produce1(BIG_TOPIC, 0, batch)
            check_eq(err, ERR_NONE, "produce to %s" % BIG_TOPIC)
            end = base + 1
    for _ in range(3):
        c = Conn(b.addr)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(3):
            c.send_request(API_FETCH, 4, c.fetch_request(
                [(BIG_TOPIC, 0, 0, 64 << 20)], max_wait_ms=0))
        time.sleep(0.1)
        # close with unread data: the kernel sends RST
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          struct.pack("ii", 1, 0))
        c.close()
    time.sleep(0.3)


@case
def connection_limit(b):
    socks = []
    try:
        for _ in range(200):
            try:
                socks.append(raw_socket(b, timeout=5))
            except OSError:
                pass  # refused or timed out: also a way to say no
        opened = len(socks)
        # Extra connections must be closed by the broker.
        deadline = time.monotonic() + 5
        closed = set()
        while time.monotonic() < deadline and opened - len(closed) > \
                MAX_CONNECTIONS:
            live = [s for s in socks if s not in closed]
            r, _, _ = select.select(live, [], [], 0.2)
            for s in r:
                try:
                    if not s.recv(4096):
                        closed.add(s)
                except OSError:
                    closed.add(s)
        still_open = opened - len(closed)
        log("    %d of 200 connected, %d closed by the broker, %d open"
            % (opened, len(closed), still_open))
        check(still_open <= MAX_CONNECTIONS,
              "%d connections still open with max.connections=%d"
              % (still_open, MAX_CONNECTIONS))
        b.check_alive("200 connections")
        # An open one that the broker kept must be served.
        live = [s for s in socks if s not in closed]
        if live:
            s = live[0]
            s.settimeout(5)
            s.sendall(frame(request_header(API_API_VERSIONS, 0, 42)))
            hdr = s.recv(8)
            check(len(hdr) == 8 and struct.unpack(">ii", hdr)[1] == 42,
                  "an accepted connection was not served (got %r)" % hdr)
    finally:
        for s in socks:
            s.close()
    # After they close, normal clients work again (the broker may need a
    # moment to notice the closes).
    deadline = time.monotonic() + 5
    while True:
        try:
            sanity_roundtrip(b, OK_TOPIC, what="closing 200 connections")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def fd_exhaustion_at_accept():
    """With RLIMIT_NOFILE=64, 100 clients connect: accept() fails with
    EMFILE.  The broker must survive, must not spin (the listening socket
    stays readable while accept fails), must not flood its log, and must
    serve clients again once they go away."""
    b = Broker(name="emfile", max_fds=64)
    b.start()
    with Conn(b.addr) as c:
        c.create_topic(OK_TOPIC, 1)
    socks = []
    try:
        for _ in range(100):
            try:
                socks.append(raw_socket(b, timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        cpu0 = b.cpu_seconds()
        time.sleep(2.0)
        cpu = b.cpu_seconds() - cpu0
        b.check_alive("fd exhaustion")
        with open(b.logs[-1], "rb") as f:
            lines = f.read().count(b"\n")
        log("    %d clients connected with 64 fds: broker used %.2f s CPU in "
            "2 s, log has %d lines" % (len(socks), cpu, lines))
    finally:
        for s in socks:
            s.close()
    check(cpu < 0.5, "the broker spins while accept() fails with EMFILE: "
          "%.2f s of CPU in 2 s with idle clients" % cpu)
    check(lines < 2000, "log flooded while accept() fails: %d lines" % lines)
    deadline = time.monotonic() + 5
    while True:
        try:
            sanity_roundtrip(b, OK_TOPIC, what="fd exhaustion")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    b.stop()


@case
def fetch_long_poll_timeout(b):
    with Conn(b.addr) as c:
        c.create_topic("empty", 1)
        for wait_ms in (500, 1000):
            t0 = time.monotonic()
            fp = c.fetch1("empty", 0, 0, max_wait_ms=wait_ms)
            dt = time.monotonic() - t0
            check_eq(fp.error, ERR_NONE, "Fetch on an empty partition")
            check(not fp.messages(), "records from an empty partition")
            log("    Fetch max_wait_ms=%d on an empty partition answered "
                "after %.3f s" % (wait_ms, dt))
            check(dt >= wait_ms / 1000.0 * 0.8,
                  "Fetch max_wait_ms=%d answered after only %.3f s"
                  % (wait_ms, dt))
            check(dt <= wait_ms / 1000.0 + 1.5,
                  "Fetch max_wait_ms=%d answered after %.3f s"
                  % (wait_ms, dt))


@case
def fetch_long_poll_woken_by_produce(b):
    with Conn(b.addr) as c:
        c.create_topic("wake", 1)
    result = {}

    def fetcher():
        try:
            with Conn(b.addr) as c2:
                t0 = time.monotonic()
                fp = c2.fetch1("wake", 0, 0, max_wait_ms=5000)
                result["t"] = time.monotonic()
                result["dt"] = result["t"] - t0
                result["fp"] = fp
        except Exception as e:  # reported by the main thread
            result["exc"] = e
    th = threading.Thread(target=fetcher, daemon=True)
    th.start()
    time.sleep(0.5)
    check("t" not in result and "exc" not in result,
          "the 5 s Fetch returned before any produce: %r" % result)
    with Conn(b.addr) as c:
        t_produce = time.monotonic()
        err, base = c.produce1("wake", 0, build_batch([(b"k", b"wake-up")]))
        check_eq(err, ERR_NONE, "produce that should wake the Fetch")
    th.join(8)
    check(not th.is_alive(), "the long-poll Fetch never returned")
    if "exc" in result:
        raise result["exc"]
    lag = result["t"] - t_produce
    log("    Fetch woken %.3f s after the produce (%.3f s in total)"
        % (lag, result["dt"]))
    check(lag < 1.0, "Fetch(max_wait_ms=5000) returned %.3f s after the "
          "produce (expected < 1 s: woken by the append)" % lag)
    vals = [m.value for m in result["fp"].messages()]
    check(b"wake-up" in vals, "the woken Fetch did not carry the record: %r"
          % vals)


@case
def pipelined_requests_answered_in_order(b):
    # Kafka guarantees responses in request order on a connection.
    with Conn(b.addr) as c:
        corrs = []
        for i in range(20):
            if i % 2:
                corrs.append(c.send_request(API_API_VERSIONS, 0, b""))
            else:
                corrs.append(c.send_request(API_PRODUCE, 3, c.produce_request(
                    [(OK_TOPIC, 0, build_batch([(b"p", b"%d" % i)]))])))
        for want in corrs:
            got = struct.unpack(">i", c.recv_frame()[:4])[0]
            check_eq(got, want, "correlation id order of pipelined answers")


@case
def slow_reader_gets_every_answer_whole(b):
    """300 pipelined requests sent at once, their answers mixing memory
    parts and sendfile parts (ApiVersions; Fetch of the partition's
    batches; acks=0 Produce, no answer), read slowly through a 4 KiB
    receive buffer.  The broker writes the finished answers of a read
    together (one writev over many of them) and picks up mid-iovec after
    every short write: each answer must arrive whole, in order, and
    parse."""
    with Conn(b.addr) as c:
        for i in range(3):
            err, _ = c.produce1(OK_TOPIC, 0, build_batch(
                [(b"s", bytes([65 + i]) * 3000)]))
            check_eq(err, ERR_NONE, "produce for the slow reader")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", b.port))
    reqs, want = [], []
    for i in range(300):
        corr = 1000 + i
        if i % 3 == 0:
            reqs.append(frame(request_header(API_API_VERSIONS, 0, corr)))
            want.append((corr, API_API_VERSIONS))
        elif i % 3 == 1:
            reqs.append(frame(request_header(API_FETCH, 4, corr) + fetch_body(
                [(OK_TOPIC, 0, 0, 1 << 20)], max_wait_ms=0)))
            want.append((corr, API_FETCH))
        else:
            reqs.append(frame(request_header(API_PRODUCE, 3, corr) +
                              produce_body([(OK_TOPIC, 0, build_batch(
                                  [(None, b"acks0-%d" % i)]))], acks=0)))
    sender = threading.Thread(target=s.sendall, args=(b"".join(reqs),),
                              daemon=True)
    sender.start()
    buf = bytearray()
    got = 0
    while got < len(want):
        chunk = s.recv(700)
        check(chunk, "connection closed after %d of %d answers"
              % (got, len(want)))
        buf += chunk
        if got % 40 == 0:
            time.sleep(0.002)  # a slow reader: the socket fills up
        while len(buf) >= 4:
            (size,) = struct.unpack(">i", buf[:4])
            if len(buf) < 4 + size:
                break
            r = Reader(bytes(buf[4:4 + size]))
            del buf[:4 + size]
            corr, api = want[got]
            check_eq(r.i32(), corr, "answer %d in order" % got)
            if api == API_API_VERSIONS:
                check_eq(r.i16(), ERR_NONE, "ApiVersions error")
            else:
                r.i32()  # throttle
                check_eq(r.i32(), 1, "Fetch: one topic")
                check_eq(r.string(), OK_TOPIC, "Fetch: the topic")
                check_eq(r.i32(), 1, "Fetch: one partition")
                check_eq(r.i32(), 0, "Fetch: partition 0")
                check_eq(r.i16(), ERR_NONE, "Fetch error")
                r.i64()  # high watermark
                r.i64()  # last stable offset
                aborted = r.i32()
                check(aborted in (-1, 0), "no aborted transactions")
                records = r.bytes_()
                check(records is not None and len(records) > 9000,
                      "Fetch answer %d carries the batches (%r bytes)"
                      % (got, None if records is None else len(records)))
                check_eq(r.remaining(), 0, "Fetch answer %d: nothing after"
                         " the records" % got)
            got += 1
    check_eq(bytes(buf), b"", "no bytes after the last answer")
    sender.join(10)
    s.close()


@case
def acks_zero_gets_no_answer(b):
    with Conn(b.addr) as c:
        c.send_request(API_PRODUCE, 3, c.produce_request(
            [(OK_TOPIC, 0, build_batch([(b"a0", b"fire-and-forget")]))],
            acks=0))
        corr = c.send_request(API_API_VERSIONS, 0, b"")
        r = Reader(c.recv_frame())
        check_eq(r.i32(), corr, "first answer after an acks=0 Produce "
                 "(must be the ApiVersions answer)")


def _peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


@case
def metadata_many_names_bounded_memory(b):
    """Metadata naming 200,000 topics (empty names: 2 bytes each, a 400 KB
    request) answers each UNKNOWN/INVALID and costs tens of MB, not the
    330 MB a 1.5 KB struct per name took."""
    with Conn(b.addr, timeout=30) as c:
        before = _peak_rss_mb(b.proc.pid)
        w = Writer().array([""] * 200000, lambda w_, n: w_.string(n)).boolean(False)
        r = c.request(API_METADATA, 4, w.getvalue())
        r.i32()  # throttle
        r.array(lambda rr: (rr.i32(), rr.string(), rr.string(), rr.i32()))  # brokers
        r.string()  # cluster id
        r.i32()  # controller
        errs = r.array(lambda rr: (rr.i16(), rr.string(), rr.boolean(),
                                   rr.array(lambda p: None)))
        check_eq(len(errs), 200000, "one answer per name")
        check(all(e[0] != ERR_NONE for e in errs), "every empty name is an error")
        grew = _peak_rss_mb(b.proc.pid) - before
        check(grew < 150, "peak memory grew by %d MB for a 400 KB request" % grew)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        check(chunk, "connection closed %d bytes short" % (n - len(buf)))
        buf += chunk
    return bytes(buf)


@case
def unread_answers_stop_reading(b):
    """A client that pipelines Fetch requests with large answers (30,000
    partitions of an unknown topic: ~0.9 MB of answer each) and reads
    nothing: the broker stops reading its requests once 64 MB of answers
    wait for it (the sender stalls well before its 150th request, which
    max.inflight.requests.per.connection alone would have let through:
    ~135 MB of answers held, plus the fetches' state), then serves every
    answer, in order, once the client reads."""
    n_req, n_parts = 150, 30000
    body = fetch_body([("no-such-topic", p, 0, 1024) for p in range(n_parts)],
                      max_wait_ms=0)
    s = raw_socket(b, timeout=60)
    sent = [0]

    def send_all():
        try:
            for i in range(n_req):
                s.sendall(frame(request_header(API_FETCH, 4, i + 1) + body))
                sent[0] += 1
        except OSError:
            pass

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 2.0:
        check(sent[0] < n_req, "the broker read all %d requests while their "
              "answers (~135 MB) went unread" % n_req)
        if sent[0] != last:
            last, since = sent[0], time.monotonic()
        time.sleep(0.1)
    log("sender stalled after %d requests" % sent[0])
    got = 0
    for _ in range(n_req):
        size, corr = struct.unpack(">ii", recv_exact(s, 8))
        check_eq(corr, got + 1, "answers in order")
        recv_exact(s, size - 4)
        got += 1
    sender.join(10)
    s.close()


TESTS = [
    metadata_many_names_bounded_memory,
    unread_answers_stop_reading,
    garbage_bytes, frame_length_minus_one, frame_length_2gib,
    truncated_frame_then_close, unknown_api_key, produce_v99,
    fetch_v99_and_api_versions_v99, api_versions_v3, produce_bad_crc,
    produce_unknown_topic, produce_count_mismatch, request_over_socket_max,
    batch_over_message_max, disconnect_mid_request, disconnect_mid_response,
    connection_limit, fd_exhaustion_at_accept, fetch_long_poll_timeout,
    fetch_long_poll_woken_by_produce, pipelined_requests_answered_in_order,
    slow_reader_gets_every_answer_whole, acks_zero_gets_no_answer,
]


def _final_stop():
    b = _broker[0]
    if b is not None and b.alive():
        b.stop()


if __name__ == "__main__":
    # The broker is shared by all cases (Broker(shared=True) keeps it out of
    # the per-test cleanup); the last case stops it cleanly (SIGTERM must
    # give exit status 0).
    tests = [(t.__name__, t, 60) for t in TESTS]
    tests.append(("clean_shutdown", _final_stop, 30))
    run(tests)
