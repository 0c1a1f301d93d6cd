#!/usr/bin/env python3
"""Offset-commit throughput: C connections, each pipelining W OffsetCommit
requests (one partition each) for G groups round-robin, for D seconds.
Every commit is answered only after SQLite has it (the coordinator thread
batches all commits queued at one moment into one transaction).

    bench/offset_commit.py [--connections 4] [--window 64] [--groups 1000]
                           [--seconds 5] [--sluiced build-rel/broker/sluiced]

Starts its own broker (temp data dir, page-cache durability) and prints
commits/s.  The client is Python: on 2 shared cores it may be the limit.
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from harness import Broker, Conn, Writer  # noqa: E402

API_OFFSET_COMMIT = 8


def commit_body(group, topic, offset):
    w = Writer().string(group).i32(-1).string("").i64(-1)
    w.i32(1).string(topic).i32(1).i32(0).i64(offset).string(None)
    return w.getvalue()


def worker(addr, idx, args, deadline, counts):
    n = 0
    with Conn(addr) as c:
        inflight = []
        off = 0
        while True:
            now = time.monotonic()
            while len(inflight) < args.window and now < deadline:
                g = "bench-g%d" % ((idx * 7919 + off) % args.groups)
                off += 1
                inflight.append(c.send_request(API_OFFSET_COMMIT, 2,
                                               commit_body(g, "bench", off)))
            if not inflight:
                break
            r = c.request_reply(inflight.pop(0))
            r.i32()  # topics (v2: no throttle field)
            r.string()
            r.i32()
            r.i32()
            if r.i16() != 0:
                raise SystemExit("commit failed")
            n += 1
    counts[idx] = n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sluiced", default=os.environ.get(
        "SLUICED", "build-rel/broker/sluiced"))
    args = ap.parse_args()
    os.environ["SLUICED"] = os.path.abspath(args.sluiced)
    b = Broker(name="bench-commit")
    b.start()
    try:
        with Conn(b.addr) as c:
            c.create_topic("bench", 1)
        counts = [0] * args.connections
        deadline = time.monotonic() + args.seconds
        t0 = time.monotonic()
        ts = [threading.Thread(target=worker,
                               args=(b.addr, i, args, deadline, counts))
              for i in range(args.connections)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        el = time.monotonic() - t0
        total = sum(counts)
        print("offset commits: %d in %.2f s = %.0f commits/s "
              "(%d connections x %d in flight, %d groups)"
              % (total, el, total / el, args.connections, args.window,
                 args.groups))
    finally:
        b.stop()


if __name__ == "__main__":
    main()
