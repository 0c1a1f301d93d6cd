#!/usr/bin/env python3
"""examples/order_cart (issue #5) end to end: run.sh --short starts its own
broker and runs the order service (transactional producer with check-back,
own SQLite) and two cart services (consumer group, own SQLite, idempotent)
through the injected failures: order service killed after prepare and after
its local commit, broker killed mid-commit (SLUICED_CRASH_AT), cart service
killed mid-batch.  run.sh then checks that every committed order cleared its
cart exactly once, that no cart was touched for an order that does not
exist, and that the topic holds each committed order once.  Also: the same
run with the cart service's redelivery check disabled (--no-dedup) must
fail those checks, so they are not vacuous.

No sanitizer report may appear in any log of the run (kept with --keep and
scanned here).

Env: SLUICED, SLUICE_CLI, ORDER_CART_ORDER_SERVICE, ORDER_CART_CART_SERVICE,
ORDER_CART_RUN (examples/order_cart/run.sh).
"""
import glob
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SkipTest, check, log, run, run_cmd  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ERROR: UndefinedBehaviorSanitizer")


def prog(var):
    path = os.environ.get(var, "")
    if not path or not os.access(path, os.X_OK):
        raise SkipTest("%s is not set to a program" % var)
    return path


def run_scenario(*extra):
    """Runs run.sh --short --keep [extra]; returns (rc, output).  Fails on a
    sanitizer report in any log of the run, then removes its directory."""
    script = os.environ.get("ORDER_CART_RUN", "")
    if not script or not os.path.exists(script):
        raise SkipTest("ORDER_CART_RUN is not set to run.sh")
    os.environ["ORDER_SERVICE"] = prog("ORDER_CART_ORDER_SERVICE")
    os.environ["CART_SERVICE"] = prog("ORDER_CART_CART_SERVICE")
    os.environ["SLUICE"] = prog("SLUICE_CLI")
    os.environ["SLUICED"] = prog("SLUICED")
    rc, out, err = run_cmd(["bash", script, "--short", "--keep"] + list(extra),
                           timeout=200, what="run.sh --short")
    text = out.decode("utf-8", "replace")
    log(text)
    if err:
        log(err.decode("utf-8", "replace")[-3000:])
    m = re.search(r"run\.sh: kept (\S+)", text)
    if m and os.path.isdir(m.group(1)):
        work = m.group(1)
        reports = []
        for path in sorted(glob.glob(os.path.join(work, "*.log"))):
            with open(path, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if any(s in line for s in SANITIZER_MARKERS):
                        reports.append("%s: %s" % (os.path.basename(path), line))
        if reports:
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
        check(not reports, "sanitizer reports:\n  " + "\n  ".join(reports[:20]))
    return rc, text


def test_failure_scenario():
    rc, text = run_scenario()
    check(rc == 0, "run.sh --short exited with %d" % rc)
    check("FAILED" not in text, "a check FAILED")
    check("PASS: every committed order cleared its cart exactly once" in text,
          "no PASS line")
    for what in ("CRASH at prepared", "CRASH at local-committed",
                 "no order row -> ROLLBACK", "order row found -> COMMIT",
                 "CRASH after", "redelivery skipped"):
        check(what in text, "the run shows no %r" % what)


def test_checks_catch_double_clear():
    rc, text = run_scenario("--no-dedup")
    check(rc == 1, "run.sh --no-dedup exited with %d, expected 1" % rc)
    check("FAILED every order cleared its cart exactly once" in text,
          "the double clear was not reported")
    check("FAIL: see the FAILED lines" in text, "no FAIL line")


if __name__ == "__main__":
    run([
        ("failure_scenario", test_failure_scenario, 220),
        ("checks_catch_double_clear", test_checks_catch_double_clear, 220),
    ])
