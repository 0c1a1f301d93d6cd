#!/usr/bin/env python3
"""Mutation fuzzing of every advertised API (Sluice's transaction extensions
included) against a real broker: valid
requests of each API and version are corrupted (bit flips, truncation,
huge lengths and counts, random tails) and sent on fresh connections; the
broker must answer or close the connection, never crash or stall, and a
normal client must keep working.  Deterministic (seeded); bounded count.

Env: SLUICED, FUZZ_N (mutations per request template, default 40).
"""
import os
import random
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, Writer, build_batch, check,  # noqa: E402
                     frame, produce_body, request_header, run)

N = int(os.environ.get("FUZZ_N", "40"))


def templates():
    """(api_key, version, body) of valid requests."""
    batch = build_batch([(b"k", b"v", [("h", b"x")])],
                        producer_id=-1)
    t = []
    for v in range(3, 9):
        t.append((0, v, produce_body([("fz", 0, batch)], acks=1)))
    fetch = (Writer().i32(-1).i32(0).i32(1).i32(1 << 20).i8(0))
    for v in range(4, 12):
        w = Writer().i32(-1).i32(0).i32(1).i32(1 << 20).i8(0)
        if v >= 7:
            w.i32(0).i32(-1)
        w.i32(1).string("fz").i32(1).i32(0)
        if v >= 9:
            w.i32(-1)
        w.i64(0)
        if v >= 5:
            w.i64(-1)
        w.i32(1 << 20)
        if v >= 7:
            w.i32(0)
        if v >= 11:
            w.string("")
        t.append((1, v, w.getvalue()))
    del fetch
    for v in range(1, 6):
        w = Writer().i32(-1)
        if v >= 2:
            w.i8(0)
        w.i32(1).string("fz").i32(1).i32(0)
        if v >= 4:
            w.i32(-1)
        w.i64(-1)
        t.append((2, v, w.getvalue()))
    for v in range(0, 9):
        w = Writer().i32(1).string("fz")
        if v >= 4:
            w.i8(1)
        if v >= 8:
            w.i8(0).i8(0)
        t.append((3, v, w.getvalue()))
    t.append((8, 2, Writer().string("g").i32(-1).string("").i64(-1).i32(1)
              .string("fz").i32(1).i32(0).i64(5).string(None).getvalue()))
    t.append((9, 1, Writer().string("g").i32(1).string("fz").i32(1).i32(0)
              .getvalue()))
    t.append((10, 1, Writer().string("g").i8(0).getvalue()))
    proto = Writer().i16(0).i32(1).string("fz").bytes_(None).getvalue()
    for v in range(0, 6):
        w = Writer().string("fg").i32(6000)
        if v >= 1:
            w.i32(6000)
        w.string("")
        if v >= 5:
            w.string(None)
        w.string("consumer").i32(1).string("range").bytes_(proto)
        t.append((11, v, w.getvalue()))
    t.append((12, 0, Writer().string("fg").i32(1).string("m").getvalue()))
    t.append((13, 3, Writer().string("fg").i32(1).string("m").string(None)
              .getvalue()))
    t.append((14, 0, Writer().string("fg").i32(1).string("m").i32(1)
              .string("m").bytes_(b"\x00\x00").getvalue()))
    t.append((15, 0, Writer().i32(1).string("fg").getvalue()))
    t.append((16, 0, b""))
    t.append((18, 0, b""))
    t.append((19, 0, Writer().i32(1).string("fz2").i32(1).i16(1).i32(0)
              .i32(1).string("retention.ms").string("1000").i32(1000)
              .getvalue()))
    t.append((20, 0, Writer().i32(1).string("nope").i32(1000).getvalue()))
    t.append((22, 0, Writer().string(None).i32(1000).getvalue()))
    t.append((32, 1, Writer().i32(1).i8(2).string("fz").i32(-1).i8(0)
              .getvalue()))
    t.append((33, 0, Writer().i32(1).i8(2).string("fz").i32(1)
              .string("retention.ms").string("5000").i8(1).getvalue()))
    t.append((42, 0, Writer().i32(1).string("nog").getvalue()))
    t.append((47, 0, Writer().string("g").i32(1).string("fz").i32(1).i32(0)
              .getvalue()))
    # Sluice transaction extensions (docs/protocol.md)
    for v in (0, 1):
        w = (Writer().string("fzg").string("fz").i32(-1).i32(0)
             .bytes_(batch))
        if v >= 1:
            w.string("inst-1")
        t.append((1000, v, w.getvalue()))
    for decision in (0, 1, 2, 3):
        t.append((1001, 0, Writer().string("fzg").i64(1).i8(decision)
                  .i8(1 if decision == 3 else 0).getvalue()))
    for v in (0, 1):
        w = Writer().string("fzg").i32(50).i32(10)
        if v >= 1:
            w.string("inst-1")
        t.append((1002, v, w.getvalue()))
    for v in (0, 1):
        t.append((1003, v, Writer().string(None).i32(0).i32(100).i64(0)
                  .getvalue()))
    for v in (0, 1):
        t.append((1004, v, Writer().i64(1).getvalue()))
    return t


def mutate(rng, body):
    b = bytearray(body)
    kind = rng.randrange(6)
    if kind == 0 and b:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1 and b:
        b = b[:rng.randrange(len(b))]
    elif kind == 2 and len(b) >= 4:
        i = rng.randrange(len(b) - 3)
        b[i:i + 4] = struct.pack(">i", rng.choice(
            [-1, -2, 0x7fffffff, 0x10000000, 65535, -32768]))
    elif kind == 3 and len(b) >= 2:
        i = rng.randrange(len(b) - 1)
        b[i:i + 2] = struct.pack(">h", rng.choice([-1, -2, 32767, 0]))
    elif kind == 4:
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        b = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 80)))
    return bytes(b)


def send_one(addr, key, ver, body):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.sendall(frame(request_header(key, ver, 7) + body))
        s.settimeout(1)
        try:
            s.recv(65536)  # an answer or a close; either is fine
        except socket.timeout:
            pass  # a request that waits (long-poll, parked join): fine
    finally:
        s.close()


def test_fuzz_all_apis():
    b = Broker(name="fuzz", sets={"group.initial.rebalance.delay.ms": 0})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("fz", 2)
    rng = random.Random(20261124)
    sent = 0
    for key, ver, body in templates():
        for _ in range(N):
            send_one(b.addr, key, ver, mutate(rng, body))
            sent += 1
        check(b.alive(), "broker died after fuzzing api %d v%d" % (key, ver))
    with Conn(b.addr) as c:
        c.api_versions()
        res = c.produce([("fz", 0, build_batch([(None, b"after")]))])
        check(res[("fz", 0)][0] == 0, "produce after fuzzing")
    check(b.alive(), "broker alive after %d fuzzed requests" % sent)


if __name__ == "__main__":
    run([("fuzz_all_apis", test_fuzz_all_apis, 240)])
