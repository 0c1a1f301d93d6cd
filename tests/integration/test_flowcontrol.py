#!/usr/bin/env python3
"""Token-bucket produce gate (docs/flow-control.md) against a real broker:
a topic limited to 1,000 msgs/s with burst 100 offered 20,000 msgs/s for
3 s admits 100 + 3,000 (within 2 %), rejects the rest at once with
THROTTLING_QUOTA_EXCEEDED and a throttle-time hint, loses nothing admitted;
parked requests are released in order at the configured rate; limits are
changed live with AlterConfigs and shown by DescribeConfigs.

Env: SLUICED.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_PRODUCE, Broker, Conn, ERR_NONE, Writer,  # noqa: E402
                     build_batch, check, check_eq, fetch_all, log,
                     parse_produce, produce_body, run)

ERR_THROTTLING = 89
API_DESCRIBE_CONFIGS = 32
API_ALTER_CONFIGS = 33


def describe(c, topic):
    w = Writer().i32(1).i8(2).string(topic).i32(-1).i8(0)
    r = c.request(API_DESCRIBE_CONFIGS, 1, w.getvalue())
    r.i32()
    out = {}
    for _ in range(r.i32()):
        err = r.i16()
        r.string()
        r.i8()
        r.string()
        check_eq(err, ERR_NONE, "DescribeConfigs error")
        for _ in range(r.i32()):
            name = r.string()
            value = r.string()
            r.i8()
            r.i8()
            r.i8()
            for _ in range(r.i32()):
                r.string()
                r.string()
                r.i8()
            out[name] = value
    return out


def alter(c, topic, configs):
    w = Writer().i32(1).i8(2).string(topic).i32(len(configs))
    for k, v in configs.items():
        w.string(k).string(v)
    w.i8(0)
    r = c.request(API_ALTER_CONFIGS, 0, w.getvalue())
    r.i32()
    check_eq(r.i32(), 1, "AlterConfigs results")
    err = r.i16()
    msg = r.string()
    check_eq(err, ERR_NONE, "AlterConfigs error (%s)" % msg)


def produce_raw(c, topic, batch, throttle_out=None):
    body = produce_body([(topic, 0, batch)], acks=1)
    r = c.request(API_PRODUCE, 3, body)
    res = parse_produce_with_throttle(r, throttle_out)
    return res[(topic, 0)]


def parse_produce_with_throttle(r, throttle_out):
    out = {}
    for _ in range(r.i32()):
        t = r.string()
        for _ in range(r.i32()):
            idx = r.i32()
            err = r.i16()
            base = r.i64()
            r.i64()  # log append time (v2+)
            out[(t, idx)] = (err, base)
    thr = r.i32()
    if throttle_out is not None:
        throttle_out.append(thr)
    return out


def test_bucket_exact_and_fast_rejects():
    b = Broker(name="flow")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("limited", 1, configs={
            "produce.rate.messages": "1000",
            "produce.burst.messages": "100",
            "produce.queue.max.wait.ms": "0"})
        per_req = 10
        offered_rate = 20000
        duration = 3.0
        interval = per_req / offered_rate
        admitted = rejected = 0
        reject_lat = []
        hints = []
        seq = 0
        t0 = time.monotonic()
        next_send = t0
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            if now < next_send:
                time.sleep(min(next_send - now, 0.001))
                continue
            next_send += interval
            batch = build_batch([(None, b"m%d" % (seq + i))
                                 for i in range(per_req)])
            seq += per_req
            ts = time.monotonic()
            thr = []
            err, _ = produce_raw(c, "limited", batch, thr)
            lat = time.monotonic() - ts
            if err == ERR_NONE:
                admitted += per_req
            else:
                check_eq(err, ERR_THROTTLING, "rejected produce error")
                rejected += per_req
                reject_lat.append(lat)
                hints.append(thr[0])
        elapsed = time.monotonic() - t0
        expected = 100 + 1000 * elapsed
        log("  offered %d msgs in %.2f s: admitted %d (expected %.0f), "
            "rejected %d" % (seq, elapsed, admitted, expected, rejected))
        check(abs(admitted - expected) <= 0.02 * expected + per_req,
              "admitted %d, expected %.0f +- 2%%" % (admitted, expected))
        check(rejected > 0, "nothing was rejected")
        reject_lat.sort()
        p99 = reject_lat[int(len(reject_lat) * 0.99) - 1]
        log("  reject latency p50 %.3f ms, p99 %.3f ms (Python client)"
            % (reject_lat[len(reject_lat) // 2] * 1e3, p99 * 1e3))
        check(p99 < 0.005, "p99 reject latency %.2f ms" % (p99 * 1e3))
        check(all(0 < h <= 1000 for h in hints),
              "throttle hints in (0, 1000] ms: %s" % sorted(set(hints))[:5])
        stats = describe(c, "limited")
        check_eq(stats["sluice.produce.admitted"], str(admitted // per_req),
                 "admitted counter (requests)")
        check_eq(stats["sluice.produce.rejected"], str(rejected // per_req),
                 "rejected counter (requests)")
    got = fetch_all(b.addr, "limited", 0)
    check_eq(len(got), admitted, "admitted messages in the log")


def test_queue_releases_in_order_at_rate():
    b = Broker(name="flow-queue")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("paced", 1, configs={
            "produce.rate.messages": "200",
            "produce.burst.messages": "1",
            "produce.queue.max.wait.ms": "2000",
            "produce.queue.max.requests": "1000"})
        # pipeline 100 one-message requests: they are parked and released
        # one every 5 ms, in order
        n = 100
        corrs = []
        t0 = time.monotonic()
        for i in range(n):
            body = produce_body([("paced", 0, build_batch(
                [(None, b"p%03d" % i)]))], acks=1)
            corrs.append(c.send_request(API_PRODUCE, 3, body))
        bases = []
        for corr in corrs:
            r = c.request_reply(corr)
            err, base = parse_produce(r, 3)[("paced", 0)]
            check_eq(err, ERR_NONE, "parked request answered")
            bases.append(base)
        elapsed = time.monotonic() - t0
        check_eq(bases, list(range(n)), "released in arrival order")
        # 1 at once, then 99 more at 200/s: about 0.5 s
        check(0.40 <= elapsed <= 1.5, "100 requests at 200/s took %.2f s"
              % elapsed)
        log("  100 parked requests released in %.3f s" % elapsed)
        # a request that would wait longer than the queue allows: rejected
        alter(c, "paced", {"produce.rate.messages": "1",
                           "produce.burst.messages": "1",
                           "produce.queue.max.wait.ms": "100"})
        cfg = describe(c, "paced")
        check_eq(cfg["produce.rate.messages"], "1", "altered rate shown")
        check_eq(cfg["segment.bytes"], "1073741824", "default kept")
        # the bucket keeps its (empty) level across the change: wait for
        # one token at the new rate
        time.sleep(1.1)
        err, _ = produce_raw(c, "paced", build_batch([(None, b"x")]))
        err2, _ = produce_raw(c, "paced", build_batch([(None, b"y")]))
        check_eq((err, err2), (ERR_NONE, ERR_THROTTLING),
                 "second message within a second at 1/s")
        alter(c, "paced", {})
        for i in range(50):
            err, _ = produce_raw(c, "paced", build_batch([(None, b"z")]))
            check_eq(err, ERR_NONE, "limit removed")


def test_disconnect_while_parked():
    b = Broker(name="flow-disc")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("slow", 1, configs={
            "produce.rate.messages": "10",
            "produce.burst.messages": "1",
            "produce.queue.max.wait.ms": "5000"})
    c = Conn(b.addr)
    for i in range(20):
        c.send_request(API_PRODUCE, 3, produce_body(
            [("slow", 0, build_batch([(None, b"gone%d" % i)]))], acks=1))
    time.sleep(0.2)
    c.close()
    time.sleep(0.3)
    with Conn(b.addr) as c2:
        # the cancelled requests gave their tokens back: a new one waits
        # at most one token interval
        t0 = time.monotonic()
        err, _ = produce_raw(c2, "slow", build_batch([(None, b"after")]))
        check_eq(err, ERR_NONE, "produce after a parked client vanished")
        check(time.monotonic() - t0 < 1.0, "not stuck behind cancelled ones")
    b.stop()


def test_shutdown_answers_parked():
    b = Broker(name="flow-stop")
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("stopq", 1, configs={
            "produce.rate.messages": "1",
            "produce.burst.messages": "1",
            "produce.queue.max.wait.ms": "60000"})
        err, _ = produce_raw(c, "stopq", build_batch([(None, b"first")]))
        check_eq(err, ERR_NONE, "first message takes the only token")
        corrs = [c.send_request(API_PRODUCE, 3, produce_body(
            [("stopq", 0, build_batch([(None, b"parked%d" % i)]))], acks=1))
            for i in range(3)]
        time.sleep(0.3)
        b.proc.terminate()  # SIGTERM: clean shutdown
        errs = []
        for corr in corrs:
            r = c.request_reply(corr)
            errs.append(parse_produce(r, 3)[("stopq", 0)][0])
        check_eq(errs, [6, 6, 6], "parked requests answered NOT_LEADER_OR_"
                 "FOLLOWER (retriable) at shutdown")
        check_eq(b.proc.wait(10), 0, "clean exit")


def test_per_client_id_limit():
    b = Broker(name="flow-client", sets={
        "client.produce.rate.messages": "5",
        "client.produce.burst.messages": "10"})
    b.start()
    with Conn(b.addr, client_id="alice") as a, \
            Conn(b.addr, client_id="bob") as bob:
        a.create_topic("shared", 1)
        res = {"alice": [], "bob": []}
        for i in range(20):
            for name, c in (("alice", a), ("bob", bob)):
                thr = []
                err, _ = produce_raw(c, "shared", build_batch(
                    [(None, b"%s%d" % (name.encode(), i))]), thr)
                res[name].append((err, thr[0]))
        for name in ("alice", "bob"):
            ok = sum(1 for e, _ in res[name] if e == ERR_NONE)
            check(10 <= ok <= 11, "%s: %d of 20 admitted (burst 10, rate 5/s)"
                  % (name, ok))
            check(all(e in (ERR_NONE, ERR_THROTTLING) for e, _ in res[name]),
                  "%s: only admitted or throttled" % name)
            check(all(t > 0 for e, t in res[name] if e == ERR_THROTTLING),
                  "%s: throttle hints" % name)
        log("  per-client limits: each client id has its own bucket")


if __name__ == "__main__":
    run([
        ("bucket_exact_and_fast_rejects", test_bucket_exact_and_fast_rejects,
         60),
        ("queue_releases_in_order_at_rate",
         test_queue_releases_in_order_at_rate, 60),
        ("disconnect_while_parked", test_disconnect_while_parked, 60),
        ("shutdown_answers_parked", test_shutdown_answers_parked, 60),
        ("per_client_id_limit", test_per_client_id_limit, 60),
    ])
