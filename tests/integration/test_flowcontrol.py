#!/usr/bin/env python3
"""Token-bucket produce gate (docs/flow-control.md) against a real broker:
a topic limited to 1,000 msgs/s with burst 100 offered 20,000 msgs/s for
3 s admits 100 + 3,000 (within 2 %), rejects the rest at once with
THROTTLING_QUOTA_EXCEEDED and a throttle-time hint, loses nothing admitted;
the rejects are fast (bench/reject_latency: p99 under 1 ms on a quiet
machine); parked requests are released in order at the configured rate,
and at 100,000 msgs/s smoothly, spaced by the rate, not in 1 ms clumps
(bench/release_pacing); limits are changed live with AlterConfigs and shown
by DescribeConfigs.

Env: SLUICED; REJECT_LATENCY and RELEASE_PACING (the bench programs;
default: <build>/bench/NAME next to <build>/broker/sluiced).

Exit 77 (skipped) when every other case passed but this machine clearly
cannot pace at 100 us: in every try a bare 100 us timerfd sleep already
woke more than 200 us late, or other processes used half a core or more,
or a thread sleeping 1 ms at a time woke more than 1 ms late at p99.  The
pacing claim was then not verified, and the log says why.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_PRODUCE, Broker, Conn, ERR_NONE,  # noqa: E402
                     EXIT_SKIP, Writer, build_batch, check,
                     check_eq, fetch_all, log, parse_produce, produce_body,
                     run)

ERR_THROTTLING = 89
API_DESCRIBE_CONFIGS = 32


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
        # Python's own overhead dominates here: the bounded figure is the C
        # client's (test_reject_latency_c).
        log("  reject latency p50 %.3f ms, p99 %.3f ms (Python client, "
            "informational)" % (reject_lat[len(reject_lat) // 2] * 1e3,
                                p99 * 1e3))
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
        c.alter_configs("paced", {"produce.rate.messages": "1",
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
        c.alter_configs("paced", {})
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


# --------------------------------------------------------------------------
# The C bench programs: reject latency and release pacing.

def bench_prog(name):
    """Path of a bench program: $NAME (upper case) or <build>/bench/name
    next to <build>/broker/sluiced."""
    path = os.environ.get(name.upper(), "")
    if not path:
        build = os.path.dirname(os.path.dirname(os.path.abspath(
            os.environ.get("SLUICED", ""))))
        path = os.path.join(build, "bench", name)
    check(os.access(path, os.X_OK),
          "%s not found at %s (build it: ninja -C BUILD bench/%s, or set %s)"
          % (name, path, name, name.upper()))
    return path


def broker_uses_asan(b):
    """True if the running broker has the AddressSanitizer runtime mapped:
    its timings are then those of an instrumented build."""
    try:
        with open("/proc/%d/maps" % b.proc.pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


def run_bench(argv, timeout):
    """Runs a bench program; returns its RESULT line as a dict of floats."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    for line in out.splitlines():
        if not line.startswith("RESULT "):
            log("  " + line)
    check(p.returncode in (0, 1), "%s exited with %d: %s"
          % (os.path.basename(argv[0]), p.returncode,
             p.stderr.decode("utf-8", "replace")[-2000:]))
    m = re.search(r"^RESULT (.*)$", out, re.M)
    check(m is not None, "no RESULT line from %s: %s"
          % (os.path.basename(argv[0]), p.stderr.decode()[-2000:]))
    return {k: float(v) for k, v in
            (kv.split("=", 1) for kv in m.group(1).split())}


# A run is a "loaded machine" run, to which latency bounds meant for a
# quiet machine are not applied (tests run on a shared 2-core VM), when
# other processes used this many cores meanwhile (of 2), or when a thread
# of the bench program sleeping 1 ms at a time woke this late at p99 (us):
# then any thread, the broker's too, waited that long for a core.
LOADED_CORES = 0.25
LOADED_PROBE_P99_US = 500


def loaded(res):
    return (res["other_cores"] >= LOADED_CORES
            or res["probe_p99_us"] >= LOADED_PROBE_P99_US)


def test_reject_latency_c():
    """Issue #6: 1,000 msgs/s, burst 100, no queue; one producer offers
    20,000 msgs/s (requests of 10) for 3 s over a raw socket: admitted
    within 2 % of burst + rate x T, the rest rejected with p99 under 1 ms
    (send -> response read).  Up to 3 tries: one quiet run must meet the
    bound.  Under ASan the bound is 3 ms; a loaded run (see loaded()) is
    only held to 20 ms (still no waiting for anything: no timer, no sync,
    no coordinator)."""
    prog = bench_prog("reject_latency")
    b = Broker(name="flow-rejlat")
    b.start()
    asan = broker_uses_asan(b)
    bound_us = 3000.0 if asan else 1000.0
    tries = []
    for attempt in range(3):
        res = run_bench([prog, "-b", b.addr, "-t", "rejlat%d" % attempt,
                         "-r", "20000", "-m", "10", "-d", "3000",
                         "--rate", "1000", "--burst", "100",
                         "--broker-pid", str(b.proc.pid)], timeout=60)
        check_eq(res["other"], 0, "requests failed with other errors")
        check(abs(res["admitted_msgs"] - res["bound"])
              <= 0.02 * res["bound"] + 10,
              "admitted %d msgs, bound %.1f +- 2 %%"
              % (res["admitted_msgs"], res["bound"]))
        check(res["rejected_msgs"] > 0, "nothing was rejected")
        tries.append(res)
        log("  try %d: reject p99 %.0f us (bound %.0f us%s); machine: other "
            "processes %.2f cores, 1 ms sleeps woke %.0f us late at p99%s"
            % (attempt + 1, res["rej_p99_us"], bound_us,
               ", ASan" if asan else "", res["other_cores"],
               res["probe_p99_us"], " (loaded)" if loaded(res) else ""))
        if res["rej_p99_us"] < bound_us:
            return
    quiet = [t for t in tries if not loaded(t)]
    check(not quiet, "reject p99 %s us on a quiet machine, bound %.0f us"
          % ([round(t["rej_p99_us"]) for t in quiet], bound_us))
    best = min(t["rej_p99_us"] for t in tries)
    log("  machine loaded in every try: the %.0f us bound is not checked, "
        "only 20 ms" % bound_us)
    check(best < 20000, "reject p99 %.0f us even allowing for load" % best)


# Set when the pacing case could not be judged on this machine.
PACING_SKIPPED = []


def pacing_problems(res):
    """What is wrong with one release_pacing run (empty = smooth)."""
    ideal = res["ideal_gap_us"]
    bad = []
    if res["rejected"] or res["other"]:
        bad.append("%d requests rejected / %d failed (the queue should hold "
                   "them)" % (res["rejected"], res["other"]))
    if abs(res["total_err_pct"]) > 2.0:
        bad.append("admitted %d msgs vs burst + rate x T = %.0f (%+.2f %%)"
                   % (res["admitted_msgs"], res["bound"],
                      res["total_err_pct"]))
    if not 0.5 * ideal <= res["gap_p50_us"] <= 1.5 * ideal:
        bad.append("median gap %.1f us, ideal %.1f us"
                   % (res["gap_p50_us"], ideal))
    if res["clumped_pct"] > 25:
        bad.append("%.1f %% of gaps under ideal/4 (clumps)"
                   % res["clumped_pct"])
    if res["ms_in_band_pct"] < 80:
        bad.append("only %.1f %% of 1 ms buckets within +-25 %% of rate x "
                   "1 ms" % res["ms_in_band_pct"])
    if res["sub_empty_pct"] > 10:
        bad.append("%.1f %% of 250 us buckets empty" % res["sub_empty_pct"])
    return bad


def test_release_pacing_100k():
    """Issue #6: parked requests released by timer smoothly, not in bursts,
    with sub-millisecond pacing at 100,000 msgs/s.  A topic at 100,000
    msgs/s, burst 10, queue 500 ms; 4 connections keep 16 requests of 10
    messages each in flight (more than the rate: every request is parked).
    Judged from the kernel arrival times of the responses: total admitted
    within 2 % of burst + rate x T; median gap between releases within
    +-50 % of the ideal 100 us (1 ms clumps give a few us); under 25 % of
    gaps clumped; >= 80 % of 1 ms buckets within +-25 % of 100 msgs; <= 10 %
    of 250 us buckets empty (clumps: 75 %).  Up to 3 tries; skipped (see
    the module docstring) only if every try found the machine swamped."""
    prog = bench_prog("release_pacing")
    b = Broker(name="flow-pacing")
    b.start()
    tries = []
    for attempt in range(3):
        res = run_bench([prog, "-b", b.addr, "-t", "paced%d" % attempt,
                         "--rate", "100000", "--burst", "10", "-m", "10",
                         "-c", "4", "-w", "16", "-d", "2000",
                         "--queue-wait-ms", "500",
                         "--broker-pid", str(b.proc.pid)], timeout=60)
        bad = pacing_problems(res)
        tries.append((res, bad))
        if not bad:
            return
        log("  try %d not smooth: %s" % (attempt + 1, "; ".join(bad)))
    # The machine clearly cannot keep up when, in every try, a bare 100 us
    # timerfd sleep already woke over 200 us late (median), or other
    # processes used half a core or more, or a thread sleeping 1 ms at a
    # time was over 1 ms late at p99.
    swamped = [r for r, _ in tries
               if r["wake_p50_us"] > 200 or r["other_cores"] >= 0.5
               or r["probe_p99_us"] > 1000]
    if len(swamped) == len(tries):
        PACING_SKIPPED.append(
            "this machine cannot pace at 100 us right now: a bare 100 us "
            "timerfd sleep woke %s us late (median), other processes used "
            "%s cores, 1 ms sleeps woke %s us late (p99) during the tries"
            % ([r["wake_p50_us"] for r, _ in tries],
               [r["other_cores"] for r, _ in tries],
               [r["probe_p99_us"] for r, _ in tries]))
        log("  " + PACING_SKIPPED[-1])
        return
    check(False, "releases not smooth in 3 tries: %s" % tries[-1][1])


if __name__ == "__main__":
    try:
        run([
            ("bucket_exact_and_fast_rejects", test_bucket_exact_and_fast_rejects,
             60),
            ("queue_releases_in_order_at_rate",
             test_queue_releases_in_order_at_rate, 60),
            ("disconnect_while_parked", test_disconnect_while_parked, 60),
            ("shutdown_answers_parked", test_shutdown_answers_parked, 60),
            ("per_client_id_limit", test_per_client_id_limit, 60),
            ("reject_latency_c", test_reject_latency_c, 120),
            ("release_pacing_100k", test_release_pacing_100k, 120),
        ])
    except SystemExit as e:
        if e.code == 0 and PACING_SKIPPED:
            log("SKIPPED (exit 77): the other cases passed, but "
                + PACING_SKIPPED[0])
            sys.exit(EXIT_SKIP)
        raise
