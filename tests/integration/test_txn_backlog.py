#!/usr/bin/env python3
"""Check-back under a backlog (docs/transactions.md, "Check-back"): 100,000
half messages prepared at once (pipelined raw TxnPrepare requests, first
check after 1 s) in one producer group, with transaction.check.rate=2000
and transaction.check.burst=500 for test speed.  Two producers poll the
group: A answers every check with "unknown", B never answers (and takes
few, so that its checks, out for a 30 s lease each, stay below the 10,000
that may be out at once: that cap would stop the flow, by design).  The test
records the time of every check handed out and asserts:

* the global rate limit holds: in every window of length T the number of
  checks handed out is at most burst + rate*T (+ one 100 ms tick of slack
  for the ticker's granularity and the client's receive jitter);
* no transaction is handed out twice while a check of it is out: a check
  given to B (never answered) is not repeated within its 30 s lease, and a
  check given to A is repeated only after A's answer and its backoff;
* checks keep flowing: every two seconds of the recording hand out checks
  of transactions not checked before, up to the end (no starvation, no
  stall at the outstanding limit), at a fair share of the rate overall.

Prints the measured rates.  Env: SLUICED.
"""
import bisect
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_TXN_END, API_TXN_PREPARE, Broker, Conn,  # noqa: E402
                     ERR_NONE, TXN_UNKNOWN, build_batch, check, check_eq,
                     log, parse_txn_end, parse_txn_prepare, pipeline, run,
                     txn_check_poll, txn_describe, txn_end_body,
                     txn_prepare_body)

N = 100000
RATE = 2000.0
BURST = 500
TICK = 0.1
SLACK = RATE * TICK          # one tick
LEASE = 30.0                 # checksched's default lease
BACKOFF = 6.0                # wait after the first unanswered check
RECORD_AFTER_PREPARE = 5.0   # seconds of checks recorded after the prepares


class Producer:
    """Polls the group on its own connection; answers every check with
    'unknown' on a second connection (answer=True) or never."""

    def __init__(self, addr, name, answer, max_txns=1000, pause=0.0):
        self.name, self.answer = name, answer
        self.max_txns, self.pause = max_txns, pause
        self.poll_conn = Conn(addr, timeout=30)
        self.ans_conn = Conn(addr, timeout=30) if answer else None
        self.handed = []      # (receive time, txn_id)
        self.answered = {}    # txn_id -> times its answers were sent
        self.stop = False
        self.error = None
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _answer(self, ids):
        t = time.monotonic()
        for txn in ids:
            self.answered.setdefault(txn, []).append(t)
        for r in pipeline(self.ans_conn, API_TXN_END, 0,
                          [txn_end_body("bulk", x, TXN_UNKNOWN) for x in ids],
                          window=1000):
            err, msg, _, _ = parse_txn_end(r)
            check_eq(err, ERR_NONE, "unknown answer (%s)" % msg)

    def _run(self):
        try:
            while not self.stop:
                err, checks = txn_check_poll(self.poll_conn, "bulk", 500,
                                             self.max_txns)
                now = time.monotonic()
                check_eq(err, ERR_NONE, "TxnCheckPoll")
                ids = [x[0] for x in checks]
                self.handed += [(now, x) for x in ids]
                if ids and self.answer:
                    self._answer(ids)
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 — re-raised by join()
            if not self.stop:
                self.error = e

    def join(self):
        self.stop = True
        self.th.join(5)
        for c in (self.poll_conn, self.ans_conn):
            if c:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        self.th.join(10)
        if self.error:
            raise self.error


def max_in_window(times, width):
    """The largest number of times within any [t, t + width]."""
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_right(times, t + width)
        best = max(best, j - i)
    return best


def test_backlog_is_paced_and_drains():
    b = Broker(name="txn-backlog", sets={
        "transaction.check.rate": int(RATE),
        "transaction.check.burst": BURST,
        "transaction.timeout.ms": 1000,
        "max.inflight.requests.per.connection": 1000,
    })
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("bulk", 4)
    pa = Producer(b.addr, "A", answer=True)
    # B takes at most 100 checks per 0.2 s: its unanswered checks (out for
    # their whole 30 s lease) stay below the 10,000 that may be out at once
    pb = Producer(b.addr, "B", answer=False, max_txns=100, pause=0.2)
    try:
        time.sleep(0.3)
        batch = build_batch([(b"key", b"x" * 100)])
        bodies = [txn_prepare_body("bulk", "bulk", -1, batch, timeout_ms=1000)
                  for _ in range(1)] * N
        t0 = time.monotonic()
        ids = []
        with Conn(b.addr, timeout=60) as c:
            def on_reply(i, r):
                err, msg, txn, _ = parse_txn_prepare(r, 1)
                if err != ERR_NONE:
                    raise AssertionError("prepare %d: %d %s" % (i, err, msg))
                ids.append(txn)
            pipeline(c, API_TXN_PREPARE, 1, bodies, window=2000,
                     on_reply=on_reply)
        t_prep = time.monotonic() - t0
        log("  %d prepares in %.1f s (%.0f/s)" % (N, t_prep, N / t_prep))
        check_eq(len(set(ids)), N, "distinct transaction ids")
        # the broker stays responsive under the backlog
        with Conn(b.addr) as c:
            t1 = time.monotonic()
            d = txn_describe(c, ids[-1])
            log("  describe during the backlog: %.3f s" % (time.monotonic() - t1))
            check_eq(d["error"], ERR_NONE, "describe")
        time.sleep(RECORD_AFTER_PREPARE)
    finally:
        pa.join()
        pb.join()
    handed = sorted(pa.handed + [(t, x) for t, x in pb.handed])
    check(handed, "no check was handed out")
    times = [t for t, _ in handed]
    span = times[-1] - times[0]
    log("  %d checks handed out over %.1f s (%.0f/s; A %d answered unknown, "
        "B %d unanswered)" % (len(times), span, len(times) / max(span, 1e-9),
                              len(pa.handed), len(pb.handed)))
    # 1. the rate limit
    for width in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
        n = max_in_window(times, width)
        bound = BURST + RATE * width + SLACK
        log("  at most %5d checks in any %.2f s window (bound %.0f)"
            % (n, width, bound))
        check(n <= bound, "%d checks within %.2f s: more than burst + rate*T"
              " + slack = %.0f" % (n, width, bound))
    # 2. never twice while a check is out
    by_txn = {}
    for t, x in pa.handed:
        by_txn.setdefault(x, []).append((t, "A"))
    for t, x in pb.handed:
        by_txn.setdefault(x, []).append((t, "B"))
    repeats = 0
    for x, hs in by_txn.items():
        hs.sort()
        for (t1, who), (t2, _) in zip(hs, hs[1:]):
            repeats += 1
            if who == "B":
                check(t2 - t1 >= LEASE - 1, "txn %d handed out again %.2f s "
                      "after an unanswered check (lease %.0f s)"
                      % (x, t2 - t1, LEASE))
            else:
                a = [t for t in pa.answered.get(x, []) if t1 <= t <= t2]
                check(a and t2 - a[0] >= BACKOFF - 1,
                      "txn %d handed out again %.2f s after A's check "
                      "(answered after %s s)"
                      % (x, t2 - t1, [round(t - t1, 2) for t in a]))
    log("  %d distinct transactions checked, %d re-checked after an answer "
        "and its backoff" % (len(by_txn), repeats))
    # 3. no starvation: transactions not checked before keep coming, up to
    # the end (a two-second window absorbs a stall of the shared machine)
    seen = set()
    fresh_per_s = []
    i = 0
    sec = 1
    while times[0] + sec <= times[-1]:
        fresh = 0
        while i < len(handed) and handed[i][0] < times[0] + sec:
            if handed[i][1] not in seen:
                seen.add(handed[i][1])
                fresh += 1
            i += 1
        fresh_per_s.append(fresh)
        sec += 1
    log("  new transactions checked per second: %s" % fresh_per_s)
    check(len(fresh_per_s) >= 4, "checks flowed for only %d s"
          % len(fresh_per_s))
    for k in range(len(fresh_per_s) - 1):
        check(fresh_per_s[k] + fresh_per_s[k + 1] > 0,
              "no new transaction checked in seconds %d-%d: %s"
              % (k, k + 2, fresh_per_s))
    check(sum(fresh_per_s[-2:]) >= RATE / 2, "the flow dried up at the end "
          "(%s): checks out at the limit?" % fresh_per_s[-2:])
    check(len(seen) >= RATE * len(fresh_per_s) / 4,
          "%d distinct checks in %d s: far below the rate"
          % (len(seen), len(fresh_per_s)))


if __name__ == "__main__":
    run([("backlog_is_paced_and_drains", test_backlog_is_paced_and_drains,
          150)])
