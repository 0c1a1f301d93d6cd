#!/usr/bin/env python3
"""Randomised crash soak of transactional messages (issue #5: "a commit
appears in the log exactly once, whatever crashes").

test_txn_crash.py kills the broker at each named step of one commit. This
test kills it at random moments instead, under a mixed load, several
times in a row:

* Producers (threads, each its own connection) keep a "database" of
  their local transactions: token -> COMMIT or ROLLBACK, recorded before
  the end is sent. Each one prepares a half message carrying its token,
  on a random topic and partition (one topic in fsync durability, one in
  page cache), then:
  - ends it with its decision (most of the time);
  - or abandons it after its local transaction, as a producer that dies
    before the end.
  A prepare whose answer is lost (the broker died) is a local transaction
  that did not happen: ROLLBACK.
* A checker on its own connection answers every check-back from that
  database, and now and then UNKNOWN, which makes the broker ask again.
* The broker is killed with SIGKILL at a random moment, six times, and
  restarted on the same data directory. Twice it is killed again within
  50 ms of answering after a restart, while the producers reconnect.

When the load stops, the broker is restarted once more, and the checker
answers until no transaction is PENDING. Then every partition is read:
- each COMMIT token whose prepare was answered appears exactly once;
- no token appears twice;
- no ROLLBACK token appears;
- each of these transactions ends COMMITTED or ROLLED_BACK, as decided
  (TxnList), and none is DISCARDED.

SOAK_SEED=<n> replays a run's random choices. The broker's timing still
varies from run to run, but the seed is logged with every failure.

Env: SLUICED.
"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, ConnectionClosed, ERR_NONE,  # noqa: E402
                     TXN_COMMIT, TXN_COMMITTED, TXN_DISCARDED, TXN_PENDING,
                     TXN_COMMITTING, TXN_ROLLBACK, TXN_ROLLED_BACK,
                     TXN_UNKNOWN, check, check_eq,
                     decode_batches, fetch_all, log, run, txn_check_poll,
                     txn_end, txn_list, txn_prepare, wait_for)

GROUP = "soak"
TOPICS = {"soak-fsync": "fsync", "soak-page": "pagecache"}
PARTITIONS = 2
PRODUCERS = 4
CYCLES = 6              # kills under load
RUN_S = (1.5, 3.5)      # load before each kill, seconds
ABANDON = 0.1           # prepared, decided, never ended
ROLLBACK_SHARE = 0.25   # of the decisions
UNKNOWN_SHARE = 0.05    # of the checker's answers
LOST = (ConnectionClosed, ConnectionError, OSError)


class Soak:
    """State shared by the producer and checker threads (under lock)."""

    def __init__(self, broker, seed):
        self.b = broker
        self.seed = seed
        self.lock = threading.Lock()
        self.db = {}        # token -> TXN_COMMIT / TXN_ROLLBACK / None
        self.txn_of = {}    # token -> txn id, for prepares answered
        self.topic_of = {}  # token -> its topic
        self.acked = {}     # token -> decision the broker acknowledged
        self.errors = []
        self.stop = threading.Event()
        self.checks = 0

    def decision(self, token):
        with self.lock:
            return self.db.get(token)

    def connect(self):
        """A connection to the broker as it is now, or None while it is
        down."""
        try:
            return Conn(self.b.addr, timeout=5)
        except LOST:
            return None


def token_of(records):
    for bt in decode_batches(records):
        for r in bt.records:
            return r.value.decode()
    return None


def producer(s, k, rnd):
    c = None
    n = 0
    while not s.stop.is_set():
        if c is None:
            c = s.connect()
            if c is None:
                time.sleep(0.02)
                continue
        token = "p%d-%05d" % (k, n)
        n += 1
        topic = rnd.choice(sorted(TOPICS))
        part = rnd.randrange(PARTITIONS)
        decision = TXN_ROLLBACK if rnd.random() < ROLLBACK_SHARE else TXN_COMMIT
        abandon = rnd.random() < ABANDON
        with s.lock:
            s.db[token] = None  # prepare in flight: the checker says UNKNOWN
            s.topic_of[token] = topic
        try:
            err, msg, txn, _ = txn_prepare(c, GROUP, topic, part,
                                           [(b"k", token.encode())])
        except LOST:
            with s.lock:
                s.db[token] = TXN_ROLLBACK  # no answer: local txn not done
            c.close()
            c = None
            continue
        with s.lock:
            if err != ERR_NONE:
                s.errors.append(("prepare", token, err, msg))
                s.db[token] = TXN_ROLLBACK
                continue
            s.txn_of[token] = txn
            s.db[token] = decision  # the local transaction, committed or not
        if abandon:
            continue
        try:
            err, msg, state, _ = txn_end(c, GROUP, txn, decision)
        except LOST:
            c.close()
            c = None
            continue
        want = TXN_COMMITTED if decision == TXN_COMMIT else TXN_ROLLED_BACK
        with s.lock:
            if err != ERR_NONE or state != want:
                s.errors.append(("end", token, txn, decision, err, msg, state))
            else:
                s.acked[token] = decision
    if c is not None:
        c.close()


def checker(s, rnd, until_done=None):
    """Answers check-backs until s.stop (or until_done() is true)."""
    c = None
    while not s.stop.is_set() and not (until_done and until_done()):
        if c is None:
            c = s.connect()
            if c is None:
                time.sleep(0.02)
                continue
        try:
            err, due = txn_check_poll(c, GROUP, 200)
            if err != ERR_NONE:
                with s.lock:
                    s.errors.append(("check poll", err))
                continue
            for txn, _topic, _part, _checks, records in due:
                token = token_of(records)
                d = s.decision(token)
                if d is None or rnd.random() < UNKNOWN_SHARE:
                    d = TXN_UNKNOWN
                err, msg, state, _ = txn_end(c, GROUP, txn, d)
                with s.lock:
                    s.checks += 1
                    if err != ERR_NONE:
                        s.errors.append(("check answer", token, txn, d, err,
                                         msg, state))
        except LOST:
            c.close()
            c = None
    if c is not None:
        c.close()


def run_load(s, rnd):
    threads = [threading.Thread(target=producer,
                                args=(s, k, random.Random(rnd.random())),
                                daemon=True) for k in range(PRODUCERS)]
    threads.append(threading.Thread(target=checker,
                                    args=(s, random.Random(rnd.random())),
                                    daemon=True))
    s.stop.clear()
    for th in threads:
        th.start()
    return threads


def stop_load(s, threads):
    s.stop.set()
    for th in threads:
        th.join(30)
        check(not th.is_alive(), "a load thread did not stop")


def all_txns(addr):
    """TxnList of the group, page by page."""
    out = {}
    with Conn(addr) as c:
        while True:
            page = txn_list(c, GROUP, limit=1000, after=max(out, default=0))
            out.update(page)
            if len(page) < 1000:
                return out


def pending(s):
    return [t for t, row in all_txns(s.b.addr).items()
            if row[3] in (TXN_PENDING, TXN_COMMITTING)]


# checks come soon and often, so that the end needs seconds, not minutes:
# a lease left by a killed checker expires in 2 s
BROKER_SETS = {
    "transaction.timeout.ms": 400, "transaction.check.max": 30,
    "transaction.check.rate": 5000, "transaction.check.burst": 5000,
    "transaction.check.backoff.ms": 200,
    "transaction.check.backoff.max.ms": 1000,
    "transaction.check.lease.ms": 2000}


def log_tokens(addr, topics):
    """{token: copies} in the logs of topics."""
    seen = {}
    for topic in topics:
        for p in range(PARTITIONS):
            for r in fetch_all(addr, topic, p):
                tok = r.value.decode()
                seen[tok] = seen.get(tok, 0) + 1
    return seen


def run_soak(s, rnd, cycles, again=(), after_restart=None):
    """Starts s.b, runs the load, kills the broker (s.b.kill9()) cycles
    times at random moments and restarts it; in the cycles listed in
    again, kills it a second time within 50 ms of the restart.
    after_restart(cycle) runs after each restart, under load."""
    b = s.b
    b.start()
    with Conn(b.addr) as c:
        for name, durability in sorted(TOPICS.items()):
            c.create_topic(name, PARTITIONS, configs={"durability": durability})
    threads = run_load(s, rnd)
    try:
        for cycle in range(cycles):
            time.sleep(rnd.uniform(*RUN_S))
            with s.lock:
                n = len(s.txn_of)
            log("  cycle %d: kill after %d prepares answered" % (cycle, n))
            b.kill9()
            time.sleep(rnd.uniform(0, 0.3))
            b.start()
            if cycle in again:
                # again, while the producers reconnect
                time.sleep(rnd.uniform(0, 0.05))
                b.kill9()
                b.start()
            if after_restart:
                after_restart(cycle)
    finally:
        stop_load(s, threads)
    check_eq(s.errors, [], "errors under load (seed %d)" % s.seed)


def resolve_and_verify(s, rnd):
    """One more kill and restart; the checker answers until nothing is
    pending; then every decided commit is in the log exactly once, nothing
    else is, and every transaction ended as decided."""
    b, seed = s.b, s.seed
    b.kill9()
    b.start()
    resolve = threading.Thread(target=checker,
                               args=(s, random.Random(rnd.random()),
                                     lambda: not pending(s)), daemon=True)
    s.stop.clear()
    resolve.start()
    wait_for(lambda: not pending(s), 90, interval=0.2,
             what="every transaction resolved by check-back (seed %d)" % seed)
    s.stop.set()
    resolve.join(30)
    check_eq(s.errors, [], "errors while resolving (seed %d)" % seed)

    seen = log_tokens(b.addr, TOPICS)
    twice = sorted(t for t, k in seen.items() if k > 1)
    check_eq(twice, [], "tokens in the log more than once (seed %d)" % seed)
    ls = all_txns(b.addr)
    commits = sorted(t for t, d in s.db.items()
                     if d == TXN_COMMIT and t in s.txn_of)
    missing = sorted(t for t in commits if t not in seen)
    check_eq(missing, [], "committed tokens missing from the log (seed %d)" % seed)
    ghosts = sorted(t for t in seen if s.db.get(t) != TXN_COMMIT)
    check_eq(ghosts, [], "rolled back or unknown tokens in the log (seed %d)"
             % seed)
    for tok, d in s.acked.items():
        check((tok in seen) == (d == TXN_COMMIT),
              "acknowledged %s of %s not reflected in the log (seed %d)"
              % ("commit" if d == TXN_COMMIT else "rollback", tok, seed))
    discarded = sorted(t for t, row in ls.items() if row[3] == TXN_DISCARDED)
    check_eq(discarded, [], "discarded transactions (seed %d)" % seed)
    for tok, txn in s.txn_of.items():
        want = TXN_COMMITTED if s.db[tok] == TXN_COMMIT else TXN_ROLLED_BACK
        check_eq(ls.get(txn, (None,) * 4)[3], want,
                 "final state of txn %d (%s, seed %d)" % (txn, tok, seed))
    log("  %d prepares answered, %d commits in the log, %d acknowledged ends, "
        "%d check-back answers" % (len(s.txn_of), len(commits), len(s.acked),
                                   s.checks))
    check(len(commits) >= 100, "too little load to mean anything")


def test_random_kills():
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
    rnd = random.Random(seed)
    log("  SOAK_SEED=%d" % seed)
    s = Soak(Broker(name="txn-soak", sets=BROKER_SETS), seed)
    run_soak(s, rnd, CYCLES, again=(1, 4))
    resolve_and_verify(s, rnd)


if __name__ == "__main__":
    run([("random_kills", test_random_kills, 240)])
