#!/usr/bin/env python3
"""Dead-letter copy rate: how long a broker takes to copy a backlog of N
discarded transactions to transaction.dead.letter.topic
(docs/transactions.md "Dead-letter topic").

    bench/dead_letter_backlog.py [--n 20000] [--partitions 1]
                                 [--sluiced build-rel/broker/sluiced ...]

Prepares N half messages (200-byte values, checks far away) once, marks
them all DISCARDED in sluice.db with the broker stopped, then for each
sluiced given (interleaved builds: each on its own copy of that data
directory) starts it and times until sluice.db records every copy.  The
first build makes the data, so name the oldest first.
Prints copies/s per build.  Not a test: the figures move with the disk.
"""
import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from harness import (API_TXN_PREPARE, Broker, Conn, build_batch,  # noqa: E402
                     parse_txn_prepare, pipeline, txn_prepare_body)


def prepare_backlog(sluiced, n, partitions, work):
    os.environ["SLUICED"] = sluiced
    b = Broker(name="dlq-bench-setup", sets={
        "transaction.timeout.ms": 3600000,
        "transaction.dead.letter.topic": "dlq"})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("o", 1)
        c.create_topic("dlq", partitions)
        batch = build_batch([(None, b"v" * 200)])
        body = txn_prepare_body("bench", "o", 0, batch)
        for r in pipeline(c, API_TXN_PREPARE, 1, [body] * n, window=256):
            err = parse_txn_prepare(r)[0]
            if err:
                sys.exit("prepare failed: error %d" % err)
    b.stop()
    db = sqlite3.connect(os.path.join(b.data_dir, "sluice.db"))
    db.execute("UPDATE txn_half SET state = 'DISCARDED', ended_ms = 1,"
               " discard_reason = 'bench' WHERE state = 'PENDING'")
    db.commit()
    db.close()
    data = os.path.join(work, "data")
    shutil.copytree(b.data_dir, data)
    shutil.rmtree(b.workdir, ignore_errors=True)
    return data


def copied(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM txn_half WHERE state = 'DISCARDED'"
                          " AND dead_letter_offset IS NOT NULL").fetchone()[0]
    finally:
        db.close()


def run_one(sluiced, data, n):
    os.environ["SLUICED"] = sluiced
    b = Broker(name="dlq-bench", sets={
        "transaction.timeout.ms": 3600000,
        "transaction.dead.letter.topic": "dlq"})
    shutil.rmtree(b.data_dir, ignore_errors=True)
    shutil.copytree(data, b.data_dir)
    t0 = time.monotonic()
    b.start()
    path = os.path.join(b.data_dir, "sluice.db")
    while copied(path) < n:
        if time.monotonic() - t0 > 600:
            sys.exit("%s: not done in 10 minutes (%d of %d)" % (sluiced, copied(path), n))
        time.sleep(0.05)
    secs = time.monotonic() - t0
    b.stop()
    shutil.rmtree(b.workdir, ignore_errors=True)
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sluiced", action="append")
    a = ap.parse_args()
    builds = a.sluiced or ["build-rel/broker/sluiced"]
    builds = [os.path.abspath(s) for s in builds]
    work = tempfile.mkdtemp(prefix="sluice-dlq-bench-")
    try:
        # the first build makes the data: a newer one migrates it, an
        # older one would refuse a newer schema
        data = prepare_backlog(builds[0], a.n, a.partitions, work)
        for r in range(a.rounds):
            order = builds if r % 2 == 0 else builds[::-1]
            for s in order:
                secs = run_one(s, data, a.n)
                print("%d %s %d copies in %.2f s (start-up included): %.0f copies/s"
                      % (r + 1, s, a.n, secs, a.n / secs), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
