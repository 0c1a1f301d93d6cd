#!/usr/bin/env python3
"""examples/flash_sale (issue #6) end to end: run.sh --short against a fresh
broker: 20,000 buy requests in 1 s through the gateway (one user per produce
request) into a topic limited to 1,000 msgs/s with burst 100 and no queue,
then the order worker; run.sh verifies no oversell (stock >= 0, orders <=
stock, no user twice, orders == min(stock, admitted distinct users), the
bucket bound, redelivery changes nothing).  Also: the worker's checker
catches a database that oversold.

Env: SLUICED, SLUICE_CLI, FLASH_SALE_GATEWAY, FLASH_SALE_WORKER,
FLASH_SALE_RUN (examples/flash_sale/run.sh).
"""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, SkipTest, check, log, run, run_cmd,  # noqa: E402
                     scratch_dir)


def prog(var):
    path = os.environ.get(var, "")
    if not path or not os.access(path, os.X_OK):
        raise SkipTest("%s is not set to a program" % var)
    return path


def test_short_sale():
    env_run = prog("FLASH_SALE_RUN")
    b = Broker(name="flash")
    addr = b.start()
    os.environ["GATEWAY"] = prog("FLASH_SALE_GATEWAY")
    os.environ["WORKER"] = prog("FLASH_SALE_WORKER")
    os.environ["SLUICE"] = prog("SLUICE_CLI")
    rc, out, err = run_cmd(["bash", env_run, "--short", "--brokers", addr],
                           timeout=120, what="run.sh --short")
    text = out.decode("utf-8", "replace")
    log(text)
    if rc != 0:
        log(err.decode("utf-8", "replace")[-3000:])
    check(rc == 0, "run.sh --short exited with %d" % rc)
    check("verified: no oversell" in text, "no 'verified: no oversell' line")
    check("ALL CHECKS PASSED: no oversell" in text, "run.sh did not pass")
    check("THROTTLING_QUOTA_EXCEEDED" in text, "no rejects reported")
    b.stop()


def test_checker_catches_oversell():
    worker = prog("FLASH_SALE_WORKER")
    d = scratch_dir("flash")
    db = os.path.join(d, "orders.db")
    # A consistent database first: 2 items, 1 order, stock 1.
    rc, out, _ = run_cmd([worker, "--db", db, "--stock", "2", "--check"],
                         timeout=30)
    check(rc == 0, "empty database should pass the checks: %r" % out)
    con = sqlite3.connect(db)
    for u in (1, 2, 3):  # three orders for two items
        con.execute("INSERT INTO orders (user_id, item, request_id,"
                    " src_partition, src_offset, created_ms)"
                    " VALUES (?, 'sku-1', ?, 0, ?, 0)", (u, u, u))
    con.commit()
    con.close()
    rc, out, _ = run_cmd([worker, "--db", db, "--stock", "2", "--check",
                          "--expect-orders", "2"], timeout=30)
    text = out.decode()
    log(text)
    check(rc == 1, "the checker accepted an oversold database (rc %d)" % rc)
    check("OVERSELL CHECK FAILED" in text, "no failure line")


if __name__ == "__main__":
    run([
        ("short_sale", test_short_sale, 100),
        ("checker_catches_oversell", test_checker_catches_oversell, 30),
    ])
