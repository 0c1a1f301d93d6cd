"""Integration test harness for sluiced (Python 3 standard library only).

What it gives a test script:

* Broker: starts `sluiced` (path from env SLUICED) on 127.0.0.1 port 0 with a
  fresh temporary data directory and extra `--set KEY=VALUE` options, waits
  for the port file, and can stop (SIGTERM), kill -9 and restart it on the
  same data directory.  The broker's stderr goes to a file that is printed
  when a test fails.
* A tiny Kafka codec for raw requests (non-flexible versions): framing,
  ApiVersions v0-v3, Metadata v0-v8, CreateTopics v0-v4, Produce v3 with a
  hand-built RecordBatch v2 (CRC-32C in pure Python), Fetch v4, ListOffsets
  v1, and a record batch decoder for Fetch responses.
* run(): a small test runner.  Every test is bounded by an alarm; the exit
  code is 0 (pass), 1 (fail) or 77 (skip, e.g. kcat missing), as meson's
  test() expects.

Everything talks to 127.0.0.1 only and every socket operation has a timeout.
"""

import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import traceback

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_SKIP = 77

HOST = "127.0.0.1"
SOCK_TIMEOUT = 10.0  # default timeout of every socket operation, seconds

# Kafka API keys and error codes used by the tests.
API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20
API_ALTER_CONFIGS = 33

ERR_NONE = 0
ERR_OFFSET_OUT_OF_RANGE = 1
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_MESSAGE_TOO_LARGE = 10
ERR_TOPIC_ALREADY_EXISTS = 36
ERR_UNSUPPORTED_VERSION = 35
ERR_INVALID_RECORD = 87

# What the broker must advertise at least (the list).
REQUIRED_API_RANGES = {
    API_PRODUCE: (3, 8),
    API_FETCH: (4, 11),
    API_LIST_OFFSETS: (1, 5),
    API_METADATA: (0, 8),
    API_API_VERSIONS: (0, 2),
    API_CREATE_TOPICS: (0, 4),
    API_DELETE_TOPICS: (0, 3),
}

LIST_OFFSETS_LATEST = -1
LIST_OFFSETS_EARLIEST = -2


class SkipTest(Exception):
    """Raise to end the whole script with exit code 77."""


class TestFailure(AssertionError):
    pass


class TestTimeout(Exception):
    pass


def check(cond, msg):
    """Fail the current test with msg unless cond holds."""
    if not cond:
        raise TestFailure(msg)


def check_eq(got, expected, what):
    if got != expected:
        raise TestFailure("%s: expected %r, got %r" % (what, expected, got))


def log(*args):
    print(*args, flush=True)


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), table driven, pure Python.

def _make_crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _CRC32C_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


# --------------------------------------------------------------------------
# Primitive encoders / decoders.

class Writer:
    def __init__(self):
        self.parts = []

    def raw(self, b):
        self.parts.append(bytes(b))
        return self

    def i8(self, v):
        return self.raw(struct.pack(">b", v))

    def i16(self, v):
        return self.raw(struct.pack(">h", v))

    def i32(self, v):
        return self.raw(struct.pack(">i", v))

    def u32(self, v):
        return self.raw(struct.pack(">I", v))

    def i64(self, v):
        return self.raw(struct.pack(">q", v))

    def boolean(self, v):
        return self.i8(1 if v else 0)

    def string(self, s):
        """int16-length string; None = null (-1)."""
        if s is None:
            return self.i16(-1)
        b = s.encode() if isinstance(s, str) else bytes(s)
        return self.i16(len(b)).raw(b)

    def bytes_(self, b):
        """int32-length bytes; None = null (-1)."""
        if b is None:
            return self.i32(-1)
        return self.i32(len(b)).raw(b)

    def array(self, items, fn):
        """int32 count then fn(self, item) for each; None = null (-1)."""
        if items is None:
            return self.i32(-1)
        self.i32(len(items))
        for it in items:
            fn(self, it)
        return self

    def uvarint(self, v):
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        return self.raw(out)

    def varint(self, v):
        """zig-zag signed varint (works for 32 and 64-bit values)."""
        return self.uvarint((v << 1) ^ (v >> 63))

    def compact_string(self, s):
        if s is None:
            return self.uvarint(0)
        b = s.encode() if isinstance(s, str) else bytes(s)
        return self.uvarint(len(b) + 1).raw(b)

    def getvalue(self):
        return b"".join(self.parts)


class DecodeError(Exception):
    pass


class Reader:
    def __init__(self, data, pos=0):
        self.data = bytes(data)
        self.pos = pos

    def remaining(self):
        return len(self.data) - self.pos

    def _take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError("need %d bytes at %d, have %d"
                              % (n, self.pos, len(self.data) - self.pos))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def raw(self, n):
        return self._take(n)

    def i8(self):
        return struct.unpack(">b", self._take(1))[0]

    def i16(self):
        return struct.unpack(">h", self._take(2))[0]

    def i32(self):
        return struct.unpack(">i", self._take(4))[0]

    def u32(self):
        return struct.unpack(">I", self._take(4))[0]

    def i64(self):
        return struct.unpack(">q", self._take(8))[0]

    def boolean(self):
        return self.i8() != 0

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        return self._take(n).decode("utf-8", "replace")

    def bytes_(self):
        n = self.i32()
        if n < 0:
            return None
        return self._take(n)

    def array(self, fn):
        n = self.i32()
        if n < 0:
            return None
        if n > self.remaining():
            raise DecodeError("array count %d larger than what is left" % n)
        return [fn(self) for _ in range(n)]

    def uvarint(self):
        shift = 0
        v = 0
        while True:
            b = self._take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
            if shift > 63:
                raise DecodeError("varint too long")

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def varbytes(self):
        n = self.varint()
        if n < 0:
            return None
        return self._take(n)


# --------------------------------------------------------------------------
# RecordBatch v2.

class Record:
    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(self, key=None, value=None, headers=(), timestamp=None,
                 offset=None):
        self.key = key
        self.value = value
        self.headers = list(headers)
        self.timestamp = timestamp
        self.offset = offset

    def __repr__(self):
        return ("Record(offset=%r, ts=%r, key=%r, value=%r, headers=%r)"
                % (self.offset, self.timestamp, self.key,
                   self.value if self.value is None or len(self.value) < 40
                   else self.value[:40] + b"...", self.headers))


def _b(x):
    if x is None or isinstance(x, (bytes, bytearray)):
        return x
    return str(x).encode()


def encode_record(offset_delta, ts_delta, key, value, headers=()):
    w = Writer()
    w.i8(0)  # attributes
    w.varint(ts_delta)
    w.varint(offset_delta)
    key = _b(key)
    value = _b(value)
    if key is None:
        w.varint(-1)
    else:
        w.varint(len(key)).raw(key)
    if value is None:
        w.varint(-1)
    else:
        w.varint(len(value)).raw(value)
    w.varint(len(headers))
    for hk, hv in headers:
        hk = _b(hk)
        hv = _b(hv)
        w.varint(len(hk)).raw(hk)
        if hv is None:
            w.varint(-1)
        else:
            w.varint(len(hv)).raw(hv)
    body = w.getvalue()
    return Writer().varint(len(body)).raw(body).getvalue()


def build_batch(records, base_timestamp=None, base_offset=0,
                record_count=None, last_offset_delta=None, bad_crc=False,
                attributes=0, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, magic=2):
    """Build a RecordBatch v2.

    records: list of Record, or of (key, value) / (key, value, headers) /
    (key, value, headers, timestamp) tuples.  A record without a timestamp
    gets base_timestamp (now when None).  record_count / last_offset_delta
    override the true values (for malformed-batch tests); bad_crc flips the
    CRC.
    """
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = []
    for r in records:
        if not isinstance(r, Record):
            r = Record(*r[:3], timestamp=(r[3] if len(r) > 3 else None))
        recs.append(r)
    ts = [r.timestamp if r.timestamp is not None else base_timestamp
          for r in recs]
    first_ts = min(ts) if ts else base_timestamp
    max_ts = max(ts) if ts else base_timestamp
    body = b"".join(encode_record(i, ts[i] - first_ts, r.key, r.value,
                                  r.headers)
                    for i, r in enumerate(recs))
    if last_offset_delta is None:
        last_offset_delta = len(recs) - 1
    if record_count is None:
        record_count = len(recs)
    after_crc = (Writer().i16(attributes).i32(last_offset_delta)
                 .i64(first_ts).i64(max_ts).i64(producer_id)
                 .i16(producer_epoch).i32(base_sequence).i32(record_count)
                 .raw(body).getvalue())
    crc = crc32c(after_crc)
    if bad_crc:
        crc ^= 0x5A5A5A5A
    # batchLength counts from partitionLeaderEpoch to the end.
    batch_length = 4 + 1 + 4 + len(after_crc)
    return (Writer().i64(base_offset).i32(batch_length).i32(-1).i8(magic)
            .u32(crc).raw(after_crc).getvalue())


class Batch:
    def __init__(self):
        self.base_offset = None
        self.batch_length = None
        self.magic = None
        self.crc = None
        self.crc_ok = None
        self.attributes = None
        self.is_control = None
        self.last_offset_delta = None
        self.base_timestamp = None
        self.max_timestamp = None
        self.record_count = None
        self.records = []

    def __repr__(self):
        return ("Batch(base=%d, len=%d, count=%d, lod=%d, crc_ok=%s)"
                % (self.base_offset, self.batch_length, self.record_count,
                   self.last_offset_delta, self.crc_ok))


def decode_batches(data, allow_partial=True):
    """Decode the record batches of a Fetch 'records' field.

    A partial batch at the end (allowed by the protocol) is ignored when
    allow_partial.  Raises DecodeError for anything malformed, including a
    CRC mismatch.
    """
    out = []
    if not data:
        return out
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 12:
            if allow_partial:
                break
            raise DecodeError("truncated batch header at %d" % pos)
        base_offset, blen = struct.unpack_from(">qi", data, pos)
        if blen < 49:
            raise DecodeError("batchLength %d too small at %d" % (blen, pos))
        if pos + 12 + blen > n:
            if allow_partial:
                break
            raise DecodeError("truncated batch at %d" % pos)
        r = Reader(data[pos:pos + 12 + blen])
        b = Batch()
        b.base_offset = r.i64()
        b.batch_length = r.i32()
        r.i32()  # partitionLeaderEpoch
        b.magic = r.i8()
        if b.magic != 2:
            raise DecodeError("magic %d at %d" % (b.magic, pos))
        b.crc = r.u32()
        b.crc_ok = crc32c(r.data[r.pos:]) == b.crc
        if not b.crc_ok:
            raise DecodeError("CRC mismatch in batch at offset %d"
                              % b.base_offset)
        b.attributes = r.i16()
        b.is_control = bool(b.attributes & 0x20)
        b.last_offset_delta = r.i32()
        b.base_timestamp = r.i64()
        b.max_timestamp = r.i64()
        r.i64()
        r.i16()
        r.i32()  # producer id, epoch, base sequence
        b.record_count = r.i32()
        if b.attributes & 0x7:
            raise DecodeError("compressed batch (not used by these tests)")
        for _ in range(b.record_count):
            rlen = r.varint()
            rr = Reader(r.raw(rlen))
            rr.i8()
            ts_delta = rr.varint()
            off_delta = rr.varint()
            key = rr.varbytes()
            value = rr.varbytes()
            hn = rr.varint()
            headers = []
            for _ in range(hn):
                hk = rr.varbytes()
                hv = rr.varbytes()
                headers.append((hk, hv))
            b.records.append(Record(key, value, headers,
                                    b.base_timestamp + ts_delta,
                                    b.base_offset + off_delta))
        out.append(b)
        pos += 12 + blen
    return out


# --------------------------------------------------------------------------
# Connections and requests.

class ConnectionClosed(Exception):
    pass


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def request_header(api_key, api_version, corr_id, client_id="sluice-it"):
    return (Writer().i16(api_key).i16(api_version).i32(corr_id)
            .string(client_id).getvalue())


def produce_body(parts, acks=-1, timeout_ms=10000):
    """Produce v3..v8 request body.  parts: list of (topic, partition,
    records_bytes)."""
    by_topic = {}
    for t, p, data in parts:
        by_topic.setdefault(t, []).append((p, data))
    w = Writer().string(None).i16(acks).i32(timeout_ms)
    w.array(list(by_topic.items()),
            lambda w_, tp: (w_.string(tp[0]),
                            w_.array(tp[1], lambda w2, pd:
                                     w2.i32(pd[0]).bytes_(pd[1]))))
    return w.getvalue()


def fetch_body(parts, max_wait_ms=100, min_bytes=1, max_bytes=64 << 20,
               version=4, isolation_level=0):
    """Fetch v4..v11 request body.  parts: list of (topic, partition,
    offset, partition_max_bytes).  No fetch session (v7+: session 0,
    epoch -1 = full request without a session)."""
    check(4 <= version <= 11, "Fetch v%d is not encoded here" % version)
    by_topic = {}
    for t, p, off, pmax in parts:
        by_topic.setdefault(t, []).append((p, off, pmax))
    w = (Writer().i32(-1).i32(max_wait_ms).i32(min_bytes).i32(max_bytes)
         .i8(isolation_level))
    if version >= 7:
        w.i32(0).i32(-1)

    def part(w2, x):
        w2.i32(x[0])
        if version >= 9:
            w2.i32(-1)  # current leader epoch
        w2.i64(x[1])
        if version >= 5:
            w2.i64(-1)  # log start offset (followers only)
        w2.i32(x[2])
    w.array(list(by_topic.items()),
            lambda w_, tp: (w_.string(tp[0]), w_.array(tp[1], part)))
    if version >= 7:
        w.i32(0)  # forgotten topics
    if version >= 11:
        w.string("")  # rack id
    return w.getvalue()


class Conn:
    """A blocking client connection with a timeout on every operation."""

    def __init__(self, addr, timeout=SOCK_TIMEOUT, client_id="sluice-it"):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)),
                                             timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0
        self.client_id = client_id

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionClosed("connection closed by broker after %d of"
                                       " %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def recv_frame(self):
        """Return one response payload (starting with the correlation id)."""
        (size,) = struct.unpack(">i", self.recv_exact(4))
        if size < 4 or size > 512 << 20:
            raise DecodeError("bad response frame size %d" % size)
        return self.recv_exact(size)

    def send_request(self, api_key, api_version, body, corr_id=None):
        if corr_id is None:
            self.corr += 1
            corr_id = self.corr
        hdr = request_header(api_key, api_version, corr_id, self.client_id)
        self.send_raw(frame(hdr + body))
        return corr_id

    def request_reply(self, corr):
        """Read the next response and check its correlation id; returns a
        Reader positioned after the response header."""
        r = Reader(self.recv_frame())
        check_eq(r.i32(), corr, "correlation id of the response")
        return r

    def request(self, api_key, api_version, body):
        """Send a request and return a Reader positioned after the response
        header (correlation id checked)."""
        corr = self.send_request(api_key, api_version, body)
        payload = self.recv_frame()
        r = Reader(payload)
        got = r.i32()
        check_eq(got, corr, "correlation id of api %d v%d response"
                 % (api_key, api_version))
        return r

    def wait_closed(self, timeout=5.0):
        """True if the peer closes (EOF or reset) within timeout; bytes that
        arrive meanwhile are read and discarded."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            return True

    # -- ApiVersions -------------------------------------------------------

    def api_versions(self, version=0):
        r = self.request(API_API_VERSIONS, version, b"")
        return parse_api_versions(r, version)

    def api_versions_v3_raw(self):
        """Send a flexible ApiVersions v3 request the way librdkafka 2.0.2
        does (request header v2) and return (corr_id, payload)."""
        self.corr += 1
        corr = self.corr
        hdr = (Writer().i16(API_API_VERSIONS).i16(3).i32(corr)
               .string(self.client_id).uvarint(0).getvalue())
        body = (Writer().compact_string("librdkafka")
                .compact_string("2.0.2").uvarint(0).getvalue())
        self.send_raw(frame(hdr + body))
        return corr, self.recv_frame()

    # -- Metadata ----------------------------------------------------------

    def metadata(self, topics=None, version=1, allow_auto_create=True):
        """topics None = all topics."""
        w = Writer()
        if topics is None:
            if version == 0:
                w.i32(0)
            else:
                w.i32(-1)
        else:
            w.array(topics, lambda w_, t: w_.string(t))
        if version >= 4:
            w.boolean(allow_auto_create)
        if version >= 8:
            w.boolean(False).boolean(False)
        r = self.request(API_METADATA, version, w.getvalue())
        return parse_metadata(r, version)

    # -- CreateTopics ------------------------------------------------------

    def create_topics(self, topics, version=2, timeout_ms=10000,
                      validate_only=False):
        """topics: list of (name, num_partitions[, {config: value}[,
        replication_factor]]).
        Returns {name: (error_code, error_message)}."""
        def enc_topic(w, t):
            name, nparts = t[0], t[1]
            configs = t[2] if len(t) > 2 else {}
            rf = t[3] if len(t) > 3 else 1
            w.string(name).i32(nparts).i16(rf)
            w.i32(0)  # no manual assignments
            w.array(sorted(configs.items()),
                    lambda w_, kv: w_.string(kv[0]).string(str(kv[1])))
        w = Writer().array(topics, enc_topic).i32(timeout_ms)
        if version >= 1:
            w.boolean(validate_only)
        r = self.request(API_CREATE_TOPICS, version, w.getvalue())
        if version >= 2:
            r.i32()  # throttle

        def dec(rr):
            name = rr.string()
            err = rr.i16()
            msg = rr.string() if version >= 1 else None
            return name, (err, msg)
        res = dict(r.array(dec))
        check_eq(r.remaining(), 0, "trailing bytes in CreateTopics v%d"
                 % version)
        return res

    def create_topic(self, name, partitions=1, configs=None, version=2):
        res = self.create_topics([(name, partitions, configs or {})],
                                 version=version)
        check(name in res, "CreateTopics: no result for %s: %r" % (name, res))
        err, msg = res[name]
        check(err == ERR_NONE, "CreateTopics %s: error %d (%s)"
              % (name, err, msg))

    def recreate_topic(self, name, partitions=1, configs=None, timeout=10):
        """CreateTopics of a name just deleted: TOPIC_ALREADY_EXISTS (36)
        while the deletion finishes (as Kafka may answer), so retried."""
        wait_for(lambda: self.create_topics([(name, partitions, configs or {})])
                 [name][0] == ERR_NONE or None, timeout, 0.05,
                 what="CreateTopics %s after its deletion" % name)

    # -- AlterConfigs v0 ---------------------------------------------------

    def alter_configs(self, topic, conf):
        """conf ({key: value}) becomes topic's whole set of overrides."""
        w = Writer().i32(1).i8(2).string(topic).i32(len(conf))
        for k, v in conf.items():
            w.string(k).string(str(v))
        r = self.request(API_ALTER_CONFIGS, 0, w.i8(0).getvalue())
        r.i32()  # throttle
        check_eq(r.i32(), 1, "AlterConfigs resources")
        err = r.i16()
        msg = r.string()
        check_eq(err, ERR_NONE, "AlterConfigs of %s (%s)" % (topic, msg))

    # -- DeleteTopics ------------------------------------------------------

    def delete_topics(self, names, version=1, timeout_ms=10000):
        """Returns {name: error_code}."""
        w = Writer().array(names, lambda w_, n: w_.string(n)).i32(timeout_ms)
        r = self.request(API_DELETE_TOPICS, version, w.getvalue())
        if version >= 1:
            r.i32()  # throttle
        res = dict(r.array(lambda rr: (rr.string(), rr.i16())))
        check_eq(r.remaining(), 0, "trailing bytes in DeleteTopics v%d"
                 % version)
        return res

    # -- Produce v3 --------------------------------------------------------

    def produce_request(self, parts, acks=-1, timeout_ms=10000, version=3):
        return produce_body(parts, acks, timeout_ms)

    def produce(self, parts, acks=-1, timeout_ms=10000, version=3):
        """Returns {(topic, partition): (error, base_offset)}."""
        body = self.produce_request(parts, acks, timeout_ms, version)
        r = self.request(API_PRODUCE, version, body)
        return parse_produce(r, version)

    def produce1(self, topic, partition, batch, acks=-1):
        res = self.produce([(topic, partition, batch)], acks=acks)
        return res[(topic, partition)]

    # -- Fetch v4 ----------------------------------------------------------

    def fetch_request(self, parts, max_wait_ms=100, min_bytes=1,
                      max_bytes=64 << 20, version=4):
        return fetch_body(parts, max_wait_ms, min_bytes, max_bytes, version)

    def fetch(self, parts, max_wait_ms=100, min_bytes=1, max_bytes=64 << 20,
              version=4):
        """Returns {(topic, partition): FetchPartition}."""
        body = self.fetch_request(parts, max_wait_ms, min_bytes, max_bytes,
                                  version)
        r = self.request(API_FETCH, version, body)
        return parse_fetch(r, version)

    def fetch1(self, topic, partition, offset, max_wait_ms=100,
               pmax=8 << 20):
        res = self.fetch([(topic, partition, offset, pmax)],
                         max_wait_ms=max_wait_ms)
        check((topic, partition) in res,
              "Fetch: no answer for %s-%d" % (topic, partition))
        return res[(topic, partition)]

    # -- ListOffsets v1 ----------------------------------------------------

    def list_offsets(self, parts, version=1, isolation_level=0):
        """parts: list of (topic, partition, timestamp).  Returns
        {(topic, partition): (error, timestamp, offset)} (v1..v5)."""
        check(1 <= version <= 5, "ListOffsets v%d not encoded" % version)
        by_topic = {}
        for t, p, ts in parts:
            by_topic.setdefault(t, []).append((p, ts))
        w = Writer().i32(-1)
        if version >= 2:
            w.i8(isolation_level)

        def part(w2, x):
            w2.i32(x[0])
            if version >= 4:
                w2.i32(-1)
            w2.i64(x[1])
        w.array(list(by_topic.items()),
                lambda w_, tp: (w_.string(tp[0]), w_.array(tp[1], part)))
        r = self.request(API_LIST_OFFSETS, version, w.getvalue())
        if version >= 2:
            r.i32()  # throttle

        def dpart(r2):
            p, err, ts, off = r2.i32(), r2.i16(), r2.i64(), r2.i64()
            if version >= 4:
                r2.i32()
            return p, err, ts, off
        out = {}
        for t, plist in r.array(lambda rr: (rr.string(), rr.array(dpart))):
            for p, err, ts, off in plist:
                out[(t, p)] = (err, ts, off)
        check_eq(r.remaining(), 0, "trailing bytes in ListOffsets v%d"
                 % version)
        return out

    def list_offset1(self, topic, partition, ts):
        res = self.list_offsets([(topic, partition, ts)])
        check((topic, partition) in res,
              "ListOffsets: no answer for %s-%d" % (topic, partition))
        return res[(topic, partition)]


def parse_api_versions(r, version):
    err = r.i16()
    ranges = {}
    for k, lo, hi in r.array(lambda rr: (rr.i16(), rr.i16(), rr.i16())):
        ranges[k] = (lo, hi)
    if version >= 1 and err != ERR_UNSUPPORTED_VERSION:
        r.i32()  # throttle
    return err, ranges


class Metadata:
    def __init__(self):
        self.brokers = []        # (node_id, host, port)
        self.controller = None
        self.topics = {}         # name -> (error, {partition: (err, leader)})


def parse_metadata(r, version):
    md = Metadata()
    if version >= 3:
        r.i32()

    def broker(rr):
        node = rr.i32()
        host = rr.string()
        port = rr.i32()
        if version >= 1:
            rr.string()  # rack
        return node, host, port
    md.brokers = r.array(broker)
    if version >= 2:
        r.string()  # cluster id
    if version >= 1:
        md.controller = r.i32()

    def part(rr):
        err = rr.i16()
        idx = rr.i32()
        leader = rr.i32()
        if version >= 7:
            rr.i32()
        rr.array(lambda x: x.i32())
        rr.array(lambda x: x.i32())
        if version >= 5:
            rr.array(lambda x: x.i32())
        return idx, (err, leader)

    def topic(rr):
        err = rr.i16()
        name = rr.string()
        if version >= 1:
            rr.boolean()
        parts = dict(rr.array(part))
        if version >= 8:
            rr.i32()
        return name, (err, parts)
    md.topics = dict(r.array(topic))
    if version >= 8:
        r.i32()
    check_eq(r.remaining(), 0, "trailing bytes in Metadata v%d" % version)
    return md


def parse_produce(r, version):
    out = {}

    def part(rr):
        idx = rr.i32()
        err = rr.i16()
        base = rr.i64()
        if version >= 2:
            rr.i64()  # log append time
        if version >= 5:
            rr.i64()  # log start offset
        if version >= 8:
            rr.array(lambda x: (x.i32(), x.string()))
            rr.string()
        return idx, err, base
    for t, plist in r.array(lambda rr: (rr.string(), rr.array(part))):
        for idx, err, base in plist:
            out[(t, idx)] = (err, base)
    if version >= 1:
        r.i32()
    check_eq(r.remaining(), 0, "trailing bytes in Produce v%d" % version)
    return out


class FetchPartition:
    def __init__(self):
        self.error = None
        self.high_watermark = None
        self.last_stable_offset = None
        self.log_start_offset = None
        self.top_error = None
        self.records = b""

    def batches(self):
        return decode_batches(self.records or b"")

    def messages(self):
        """The records of the data batches: control batches (the broker's
        commit markers) are skipped, as Kafka clients skip them."""
        out = []
        for b in self.batches():
            if not b.is_control:
                out.extend(b.records)
        return out


def parse_fetch(r, version=4):
    """Fetch v4..v11 response body (after the correlation id)."""
    r.i32()  # throttle
    top_error = None
    if version >= 7:
        top_error = r.i16()
        r.i32()  # session id
    out = {}

    def part(rr):
        fp = FetchPartition()
        idx = rr.i32()
        fp.error = rr.i16()
        fp.high_watermark = rr.i64()
        fp.last_stable_offset = rr.i64()
        if version >= 5:
            fp.log_start_offset = rr.i64()
        rr.array(lambda x: (x.i64(), x.i64()))  # aborted transactions
        if version >= 11:
            rr.i32()  # preferred read replica
        fp.records = rr.bytes_()
        fp.top_error = top_error
        return idx, fp
    for t, plist in r.array(lambda rr: (rr.string(), rr.array(part))):
        for idx, fp in plist:
            out[(t, idx)] = fp
    check_eq(r.remaining(), 0, "trailing bytes in Fetch v%d" % version)
    if top_error:
        out[None] = top_error
    return out


def parse_fetch_v4(r):
    return parse_fetch(r, 4)


def segment_batches(path):
    """The complete record batches of a segment file, in order (framing
    only: baseOffset, batchLength).  Zeros may follow the last one, written
    ahead by fsync durability's preallocation (docs/storage.md)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        blen = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
        if blen <= 0 or pos + 12 + blen > len(data):
            break
        yield data[pos:pos + 12 + blen]
        pos += 12 + blen


def walk_segment(path):
    """(the last complete record batch of a segment file or None, the
    position after it): where the log ends."""
    last, pos = None, 0
    for last in segment_batches(path):
        pos += len(last)
    return last, pos


def fetch_all(addr, topic, partition, start=0, end=None, timeout=60.0,
              pmax=4 << 20):
    """Read a partition from start up to end (default: the high watermark
    at the first answer).  Returns the list of Records in offset order.
    Checks offsets are consecutive, with no duplicates; control batches
    (commit markers) take their offsets but are not returned."""
    out = []
    off = start
    deadline = time.monotonic() + timeout
    with Conn(addr) as c:
        while True:
            check(time.monotonic() < deadline,
                  "fetch_all %s-%d: timed out at offset %d (end %r)"
                  % (topic, partition, off, end))
            fp = c.fetch1(topic, partition, off, max_wait_ms=100, pmax=pmax)
            check_eq(fp.error, ERR_NONE, "Fetch %s-%d@%d error"
                     % (topic, partition, off))
            if end is None:
                end = fp.high_watermark
            if off >= end:
                break
            for b in fp.batches():
                if b.is_control:
                    last = b.base_offset + b.last_offset_delta
                    if last >= off:
                        check_eq(b.base_offset, off, "next offset in %s-%d"
                                 % (topic, partition))
                        off = last + 1
                    continue
                for rec in b.records:
                    if rec.offset < off:
                        continue  # Kafka may return the whole batch
                    check_eq(rec.offset, off, "next offset in %s-%d"
                             % (topic, partition))
                    out.append(rec)
                    off += 1
                    if off >= end:
                        break
                if off >= end:
                    break
    return out


# --------------------------------------------------------------------------
# The broker process.

_ALL_BROKERS = []     # brokers of the running test, cleaned up after it
_SHARED_BROKERS = []  # brokers shared by several tests of a script
_SCRATCH = []         # scratch_dir()s of the script, removed if all passed


def scratch_dir(prefix):
    """A temporary directory for a script's own files (consumer output,
    example databases): removed by run() once every test passed, kept and
    named otherwise (or with SLUICE_KEEP_TMP=1), like a broker's work
    directory."""
    d = tempfile.mkdtemp(prefix="sluice-it-%s-" % prefix)
    _SCRATCH.append(d)
    return d


class Broker:
    """A sluiced child process with its own temporary data directory.

    sets: dict of config key -> value passed as --set KEY=VALUE.
    """

    def __init__(self, sets=None, name="broker", workdir=None, shared=False,
                 env=None, max_fds=None, max_file_bytes=None):
        self.exe = os.environ.get("SLUICED", "")
        if not self.exe:
            raise SkipTest("SLUICED is not set")
        if not os.access(self.exe, os.X_OK):
            raise SkipTest("SLUICED=%s is not an executable" % self.exe)
        self.sets = dict(sets or {})
        self.name = name
        self.workdir = workdir or tempfile.mkdtemp(prefix="sluice-it-%s-"
                                                   % name)
        self.data_dir = os.path.join(self.workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.proc = None
        self.addr = None
        self.port = None
        self.starts = 0
        self.logs = []
        self.shared = shared
        self.env = dict(env or {})
        self.max_fds = max_fds  # RLIMIT_NOFILE for the broker process
        # Soft RLIMIT_FSIZE for the broker process (None: inherited), with
        # SIGXFSZ ignored so that a write past it fails with EFBIG instead
        # of killing the broker: a "disk full" for files growing past it.
        # The hard limit stays as inherited, so `prlimit --pid PID
        # --fsize=unlimited` can lift it from outside.  Set it to None
        # before start() for a restart without the limit.
        self.max_file_bytes = max_file_bytes
        (_SHARED_BROKERS if shared else _ALL_BROKERS).append(self)

    def start(self, timeout=20.0, extra_sets=None):
        check(self.proc is None or self.proc.poll() is not None,
              "broker already running")
        self.starts += 1
        port_file = os.path.join(self.workdir, "port.%d" % self.starts)
        log_path = os.path.join(self.workdir, "stderr.%d.log" % self.starts)
        self.logs.append(log_path)
        argv = [self.exe, "-d", self.data_dir, "-l", HOST + ":0",
                "--port-file", port_file]
        sets = dict(self.sets)
        sets.update(extra_sets or {})
        for k, v in sets.items():
            argv += ["--set", "%s=%s" % (k, v)]
        self.argv = argv
        self.logf = open(log_path, "wb")
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        preexec = None
        if self.max_fds and self.max_file_bytes is None:
            import resource
            lim = self.max_fds

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (lim, lim))
        elif self.max_file_bytes is not None:
            import resource
            nofile = self.max_fds
            fsize = self.max_file_bytes

            def preexec():
                if nofile:
                    resource.setrlimit(resource.RLIMIT_NOFILE,
                                       (nofile, nofile))
                # Popen resets SIGXFSZ to SIG_DFL before preexec_fn runs
                # (restore_signals); an ignored disposition survives exec.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                soft = fsize if hard == resource.RLIM_INFINITY \
                    else min(fsize, hard)
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf,
                                     cwd=self.workdir, env=env,
                                     preexec_fn=preexec)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TestFailure("broker exited with status %s before "
                                  "writing its port file (argv: %s)"
                                  % (self.proc.returncode, " ".join(argv)))
            try:
                with open(port_file) as f:
                    txt = f.read().strip()
                if txt:
                    self.port = int(txt)
                    break
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TestFailure("broker wrote no port file within %.0f s "
                                  "(argv: %s)" % (timeout, " ".join(argv)))
            time.sleep(0.02)
        check(0 < self.port < 65536, "bad port %r in port file" % self.port)
        self.addr = "%s:%d" % (HOST, self.port)
        return self.addr

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0, expect_clean=True):
        """SIGTERM and wait; fails the test if it does not exit 0 in time."""
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            self.proc = None
            if expect_clean and rc not in (None, 0):
                raise TestFailure("broker had already exited with %s" % rc)
            return rc
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
            self.logf.close()
            raise TestFailure("broker did not exit within %.0f s of SIGTERM"
                              % timeout)
        self.proc = None
        self.logf.close()
        if expect_clean and rc != 0:
            raise TestFailure("broker exited with status %d after SIGTERM "
                              "(expected 0)" % rc)
        return rc

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        try:
            self.logf.close()
        except Exception:
            pass

    def restart(self, timeout=20.0, extra_sets=None):
        """Stop (if running) and start again on the same data directory."""
        if self.alive():
            self.stop()
        return self.start(timeout=timeout, extra_sets=extra_sets)

    def cpu_seconds(self):
        """User + system CPU time the broker process has used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self, what=""):
        if not self.alive():
            rc = self.proc.returncode if self.proc else None
            raise TestFailure("broker process is dead (exit status %s)%s"
                              % (rc, (" after " + what) if what else ""))

    def log_text(self, max_lines=150):
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out.append("----- %s (%d lines%s) -----"
                       % (p, len(lines),
                          ", last %d shown" % max_lines
                          if len(lines) > max_lines else ""))
            out.extend(lines[-max_lines:])
        return "\n".join(out)

    SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                         b"WARNING: ThreadSanitizer", b"runtime error:",
                         b"ERROR: UndefinedBehaviorSanitizer")

    def sanitizer_reports(self):
        """Lines of the broker's logs where a sanitizer reported something."""
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    for line in f:
                        if any(m in line for m in self.SANITIZER_MARKERS):
                            out.append("%s: %s" % (os.path.basename(p),
                                                   line.decode("utf-8",
                                                               "replace")
                                                   .rstrip()))
            except OSError:
                pass
        return out

    def partition_dir(self, topic, partition):
        return os.path.join(self.data_dir, "%s-%d" % (topic, partition))

    def segment_files(self, topic, partition, ext=".log"):
        d = self.partition_dir(topic, partition)
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(ext))
        except FileNotFoundError:
            return []
        return [os.path.join(d, n) for n in names]

    def cleanup(self):
        self.kill9()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Helpers every test uses.

def wait_for(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %.1f s waiting for %s"
                              % (timeout, what))
        time.sleep(interval)


def check_api_ranges(ranges, what="ApiVersions"):
    for key, (lo, hi) in REQUIRED_API_RANGES.items():
        check(key in ranges, "%s: api key %d not advertised (got %r)"
              % (what, key, ranges))
        blo, bhi = ranges[key]
        check(blo <= lo and bhi >= hi,
              "%s: api key %d advertised %d..%d, need at least %d..%d"
              % (what, key, blo, bhi, lo, hi))


_sanity_counter = [0]


def sanity_roundtrip(broker, topic, partition=0, what=""):
    """A normal client on a new connection: ApiVersions v0, produce one
    record, fetch it back.  Also checks the broker process is alive."""
    broker.check_alive(what)
    _sanity_counter[0] += 1
    val = ("sanity-%d-%d" % (_sanity_counter[0], random.getrandbits(32))
           ).encode()
    try:
        with Conn(broker.addr, timeout=10) as c:
            err, ranges = c.api_versions(0)
            check_eq(err, ERR_NONE, "ApiVersions v0 error")
            check_api_ranges(ranges)
            err, base = c.produce1(topic, partition,
                                   build_batch([(b"k", val)]))
            check_eq(err, ERR_NONE, "sanity produce error")
            fp = c.fetch1(topic, partition, base)
            check_eq(fp.error, ERR_NONE, "sanity fetch error")
            msgs = [m for m in fp.messages() if m.offset == base]
            check(msgs and msgs[0].value == val,
                  "sanity fetch at %d: expected value %r, got %r"
                  % (base, val, fp.messages()[:3]))
    except (OSError, ConnectionClosed, DecodeError) as e:
        raise TestFailure("normal client failed%s: %s: %s"
                          % ((" after " + what) if what else "",
                             type(e).__name__, e))
    broker.check_alive(what)


def need_program(env_name, default=None):
    """Path of a helper program from the environment; SkipTest if missing."""
    p = os.environ.get(env_name, default or "")
    if not p:
        raise SkipTest("%s is not set (program not built)" % env_name)
    if os.sep not in p:
        found = shutil.which(p)
        if not found:
            raise SkipTest("%s=%s not found in PATH" % (env_name, p))
        p = found
    if not os.access(p, os.X_OK):
        raise SkipTest("%s=%s is not executable" % (env_name, p))
    return p


def run_cmd(argv, timeout, input_data=None, stdout_path=None, what=None):
    """Run a helper command with a time limit; returns (rc, stdout, stderr)
    (stdout is None when written to stdout_path)."""
    what = what or os.path.basename(argv[0])
    out_f = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    try:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input_data
                             is not None else subprocess.DEVNULL,
                             stdout=out_f, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(input_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise TestFailure("%s did not finish within %.0f s; stderr tail:"
                              "\n%s" % (what, timeout,
                                        (err or b"")[-3000:].decode(
                                            "utf-8", "replace")))
    finally:
        if stdout_path:
            out_f.close()
    return p.returncode, out, err


# --------------------------------------------------------------------------
# Runner.

class _Alarm:
    def __init__(self, seconds, name):
        self.seconds = seconds
        self.name = name

    def _fire(self, signum, frm):
        raise TestTimeout("test %s exceeded its time limit of %d s"
                          % (self.name, self.seconds))

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def run(tests, default_timeout=120):
    """tests: list of (name, fn) or (name, fn, timeout_seconds).

    Runs them in order (or only those named on the command line), prints a
    line per test with its time, prints the broker logs of a failing test,
    and exits 0 / 1 / 77.
    """
    only = set(sys.argv[1:])
    keep = os.environ.get("SLUICE_KEEP_TMP") == "1"
    failed = []
    passed = 0
    skipped_all = None
    t_all = time.monotonic()
    for t in tests:
        name, fn = t[0], t[1]
        limit = t[2] if len(t) > 2 else default_timeout
        if only and name not in only:
            continue
        del _ALL_BROKERS[:]
        t0 = time.monotonic()
        ok = False
        try:
            with _Alarm(limit, name):
                fn()
                # A broker still running at the end of a test must shut
                # down cleanly (exit 0 on SIGTERM; LeakSanitizer runs here
                # in ASan builds).
                for b in _ALL_BROKERS:
                    if b.alive():
                        b.stop()
            reports = []
            for b in _ALL_BROKERS + _SHARED_BROKERS:
                reports += b.sanitizer_reports()
            check(not reports, "sanitizer reports in the broker log:\n  "
                  + "\n  ".join(reports[:20]))
            ok = True
            passed += 1
            log("PASS %-40s %7.2f s" % (name, time.monotonic() - t0))
        except SkipTest as e:
            skipped_all = str(e)
            ok = True  # nothing to look into: its brokers' dirs go too
            log("SKIP %-40s %s" % (name, e))
        except (TestFailure, TestTimeout, Exception) as e:
            failed.append(name)
            log("FAIL %-40s %7.2f s" % (name, time.monotonic() - t0))
            if isinstance(e, (AssertionError, TestTimeout)):
                log("  reason: %s" % e)
                log("".join(traceback.format_tb(e.__traceback__)[-3:]))
            else:
                log("  unexpected exception:")
                log(traceback.format_exc())
            for b in _ALL_BROKERS + [x for x in _SHARED_BROKERS
                                     if x.starts]:
                if b.alive():
                    state = "still running"
                elif b.proc is not None:
                    state = "exited with %s" % b.proc.returncode
                else:
                    state = "not running"
                log("  broker %s (%s), argv: %s" % (b.name, state,
                                                     " ".join(getattr(
                                                         b, "argv", []))))
                log(b.log_text())
        finally:
            for b in list(_ALL_BROKERS):
                if ok and not keep:
                    b.cleanup()
                else:
                    b.kill9()
                    log("  kept work dir %s" % b.workdir)
        if skipped_all is not None:
            break
    for b in _SHARED_BROKERS:
        if not failed and not keep:
            b.cleanup()
        else:
            b.kill9()
            log("  kept work dir %s" % b.workdir)
    for d in _SCRATCH:
        if not failed and not keep:
            shutil.rmtree(d, ignore_errors=True)
        else:
            log("  kept scratch dir %s" % d)
    total = time.monotonic() - t_all
    if skipped_all is not None and not failed and passed == 0:
        log("SKIPPED: %s" % skipped_all)
        sys.exit(EXIT_SKIP)
    if failed:
        log("%d passed, %d FAILED (%s) in %.1f s"
            % (passed, len(failed), ", ".join(failed), total))
        sys.exit(EXIT_FAIL)
    log("all %d passed in %.1f s" % (passed, total))
    sys.exit(EXIT_PASS)


# --------------------------------------------------------------------------
# Transactional half messages: extension APIs 1000-1004 (docs/protocol.md,
# "Sluice extensions") and pipelined raw requests.

API_TXN_PREPARE = 1000
API_TXN_END = 1001
API_TXN_CHECK_POLL = 1002
API_TXN_LIST = 1003
API_TXN_DESCRIBE = 1004
ERR_REQUEST_TIMED_OUT = 7
ERR_INVALID_REQUEST = 42
ERR_INVALID_TXN_STATE = 48
ERR_KAFKA_STORAGE_ERROR = 56
ERR_TXN_NOT_FOUND = 105          # TRANSACTIONAL_ID_NOT_FOUND
TXN_UNKNOWN, TXN_COMMIT, TXN_ROLLBACK, TXN_RESUME = 0, 1, 2, 3
(TXN_PENDING, TXN_COMMITTING, TXN_COMMITTED, TXN_ROLLED_BACK,
 TXN_DISCARDED) = range(5)


def txn_instance_id(name):
    """The origin id the broker derives from a producer instance name:
    64-bit FNV-1a with the lowest bit set, as SQLite stores it (signed)."""
    h = 0xcbf29ce484222325
    for b in name.encode() if isinstance(name, str) else name:
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    h |= 1
    return h - (1 << 64) if h >= 1 << 63 else h


def txn_prepare_body(group, topic, partition, batch, timeout_ms=0,
                     instance=None, version=1):
    w = Writer().string(group).string(topic).i32(partition).i32(timeout_ms)
    w.bytes_(batch)
    if version >= 1:
        w.string(instance)
    return w.getvalue()


def parse_txn_prepare(r, version=1):
    """Returns (error, message, txn_id, partition or None for v0)."""
    err = r.i16()
    msg = r.string()
    txn = r.i64()
    part = r.i32() if version >= 1 else None
    check_eq(r.remaining(), 0, "trailing bytes in TxnPrepare v%d" % version)
    return err, msg, txn, part


def txn_prepare(c, group, topic, partition, records, timeout_ms=0,
                instance=None, version=1):
    """records: a list for build_batch, or a ready batch (bytes)."""
    batch = records if isinstance(records, bytes) else build_batch(records)
    r = c.request(API_TXN_PREPARE, version, txn_prepare_body(
        group, topic, partition, batch, timeout_ms, instance, version))
    return parse_txn_prepare(r, version)


def txn_end_body(group, txn, decision, operator=False):
    return (Writer().string(group).i64(txn).i8(decision)
            .i8(1 if operator else 0).getvalue())


def parse_txn_end(r):
    """Returns (error, message, state after, log_offset)."""
    out = (r.i16(), r.string(), r.i8(), r.i64())
    check_eq(r.remaining(), 0, "trailing bytes in TxnEnd")
    return out


def txn_end(c, group, txn, decision, operator=False):
    return parse_txn_end(c.request(API_TXN_END, 0,
                                   txn_end_body(group, txn, decision,
                                                operator)))


def txn_describe(c, txn, version=0):
    """Returns a dict of every TxnDescribe field of version 0 or 1."""
    r = c.request(API_TXN_DESCRIBE, version, Writer().i64(txn).getvalue())
    d = {}
    for name, fn in (("error", r.i16), ("message", r.string),
                     ("txn_id", r.i64), ("group", r.string),
                     ("topic", r.string), ("partition", r.i32),
                     ("state", r.i8), ("created_ms", r.i64),
                     ("ended_ms", r.i64), ("check_count", r.i32),
                     ("next_check_ms", r.i64), ("log_offset", r.i64),
                     ("discard_reason", r.string), ("commit_seq", r.i64),
                     ("records", r.bytes_)):
        d[name] = fn()
    if version >= 1:
        d["dead_letter_offset"] = r.i64()
    check_eq(r.remaining(), 0, "trailing bytes in TxnDescribe")
    return d


def dead_letter_records(addr, topic, partitions):
    """[(partition, offset, txn id)] of a dead-letter topic's records in
    log order, txn id from the header sluice.txn.id (None without one)."""
    out = []
    for part in range(partitions):
        for rec in fetch_all(addr, topic, part):
            h = dict((k if isinstance(k, str) else k.decode(), v)
                     for k, v in rec.headers)
            txn = h.get("sluice.txn.id")
            out.append((part, rec.offset, None if txn is None else int(txn)))
    return out


def dead_letter_offsets(addr, topic, partitions):
    """{txn id: [offset of each record copied for it]} in a dead-letter
    topic."""
    out = {}
    for _, off, txn in dead_letter_records(addr, topic, partitions):
        out.setdefault(txn, []).append(off)
    return out


def kept_batch(b, txn):
    """(state, 1 if sluice.db still holds txn's batch else 0), read from
    sluice.db beside the broker (WAL mode), or None without a row."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(b.data_dir, "sluice.db"),
                         uri=True, timeout=10)
    try:
        return db.execute("SELECT state, batch IS NOT NULL FROM txn_half"
                          " WHERE txn_id = ?", (txn,)).fetchone()
    finally:
        db.close()


def txn_list(c, group=None, state_mask=0, limit=10000, after=0, version=0):
    """Returns {txn_id: (group, topic, partition, state, check_count,
    log_offset, discard_reason)}, and dead_letter_offset last in v1."""
    w = Writer().string(group).i32(state_mask).i32(limit).i64(after)
    r = c.request(API_TXN_LIST, version, w.getvalue())
    check_eq(r.i16(), ERR_NONE, "TxnList error")
    out = {}
    for _ in range(r.i32()):
        txn = r.i64()
        grp, topic, part, state = r.string(), r.string(), r.i32(), r.i8()
        r.i64()
        r.i64()
        checks = r.i32()
        r.i64()
        off = r.i64()
        reason = r.string()
        out[txn] = (grp, topic, part, state, checks, off, reason)
        if version >= 1:
            out[txn] += (r.i64(),)
    check_eq(r.remaining(), 0, "trailing bytes in TxnList v%d" % version)
    return out


def txn_check_poll_body(group, max_wait_ms, max_txns=100, instance=None,
                        version=1):
    w = Writer().string(group).i32(max_wait_ms).i32(max_txns)
    if version >= 1:
        w.string(instance)
    return w.getvalue()


def parse_txn_check_poll(r):
    """Returns (error, [(txn_id, topic, partition, check_count, records)])."""
    err = r.i16()
    out = []
    for _ in range(r.i32()):
        out.append((r.i64(), r.string(), r.i32(), r.i32(), r.bytes_()))
    check_eq(r.remaining(), 0, "trailing bytes in TxnCheckPoll")
    return err, out


def txn_check_poll(c, group, max_wait_ms, max_txns=100, instance=None,
                   version=1):
    r = c.request(API_TXN_CHECK_POLL, version, txn_check_poll_body(
        group, max_wait_ms, max_txns, instance, version))
    return parse_txn_check_poll(r)


def pipeline(c, api_key, version, bodies, window=2000, on_reply=None):
    """Sends every body as a request on connection c, keeping at most
    `window` unanswered (the broker reads ahead only
    max.inflight.requests.per.connection; a bounded window keeps both
    socket buffers from filling up), and returns the replies in order as
    Readers positioned after the response header (correlation ids
    checked).  on_reply(i, reader), if given, is called instead of
    collecting."""
    out = []
    buf = bytearray()
    sent = done = 0
    n = len(bodies)
    first_corr = c.corr + 1
    while done < n:
        if sent < n and sent - done < window:
            k = min(n, done + window) - sent
            frames = []
            for body in bodies[sent:sent + k]:
                c.corr += 1
                frames.append(frame(request_header(api_key, version, c.corr,
                                                   c.client_id) + body))
            c.send_raw(b"".join(frames))
            sent += k
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionClosed("connection closed after %d of %d "
                                   "pipelined replies" % (done, n))
        buf += chunk
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = struct.unpack_from(">i", buf, pos)
            if len(buf) - pos - 4 < size:
                break
            r = Reader(bytes(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
            check_eq(r.i32(), first_corr + done, "correlation id of "
                     "pipelined reply %d" % done)
            if on_reply:
                on_reply(done, r)
            else:
                out.append(r)
            done += 1
        del buf[:pos]
    return out
