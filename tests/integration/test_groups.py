#!/usr/bin/env python3
"""Consumer groups with real librdkafka consumers (rdk_group.c): three members
of one group on a 6-partition topic get two partitions each and consume
every message once; a second group gets every message too; a member killed
with SIGKILL is evicted after its session timeout and its partitions move;
committed offsets survive a broker restart (consumption resumes, nothing
skipped); a rebalance storm loses nothing and commits only move forward.
Also the admin side raw: ListGroups, DescribeGroups, OffsetFetch,
DeleteGroups, OffsetDelete.  Commits and deletes of one offset racing from
many connections: OffsetFetch then answers what sluice.db holds.

Env: SLUICED, KCAT (producing), RDK_GROUP (the consumer program).
"""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, ERR_NONE, Writer, check,  # noqa: E402
                     check_eq, log, need_program, run, run_cmd, scratch_dir,
                     wait_for)

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_DESCRIBE_GROUPS = 15
API_LIST_GROUPS = 16
API_DELETE_GROUPS = 42
API_OFFSET_DELETE = 47
ERR_NON_EMPTY_GROUP = 68
ERR_GROUP_ID_NOT_FOUND = 69

SESSION_MS = 6000
_tmp = scratch_dir("groups")


class Consumer:
    """rdk_group (librdkafka, at-least-once: offsets stored after the
    message is written) in the background; '<partition> <offset> <value>'
    lines into a file."""
    seq = 0

    def __init__(self, prog, addr, group, topic, session_ms=SESSION_MS):
        Consumer.seq += 1
        self.path = os.path.join(_tmp, "c%d.out" % Consumer.seq)
        self.err_path = self.path + ".err"
        open(self.path, "wb").close()
        self.proc = subprocess.Popen(
            [prog, addr, group, topic, self.path, str(session_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.err_path, "wb"))

    def lines(self):
        with open(self.path, "rb") as f:
            data = f.read()
        out = []
        for ln in data.split(b"\n"):
            if ln.startswith(b"#"):
                continue
            parts = ln.split(b" ", 2)
            if len(parts) == 3:
                out.append((int(parts[0]), int(parts[1]), parts[2]))
        return out

    def partitions(self):
        return sorted({p for p, _, _ in self.lines()})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # commits, leaves
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def produce(kcat, addr, topic, first, n):
    data = b"".join(b"k%d:v%d\n" % (i, i) for i in range(first, first + n))
    rc, _, err = run_cmd([kcat, "-P", "-b", addr, "-t", topic, "-K", ":"],
                         60, input_data=data)
    check_eq(rc, 0, "kcat -P exit status (%s)" % err[-300:])


def values(consumers):
    out = []
    for c in consumers:
        out += [v for _, _, v in c.lines()]
    return out


def offset_fetch(c, group, topic, nparts):
    w = Writer().string(group).i32(1).string(topic).i32(nparts)
    for p in range(nparts):
        w.i32(p)
    r = c.request(API_OFFSET_FETCH, 1, w.getvalue())
    out = {}
    for _ in range(r.i32()):
        r.string()
        for _ in range(r.i32()):
            p = r.i32()
            off = r.i64()
            r.string()
            check_eq(r.i16(), ERR_NONE, "OffsetFetch partition error")
            out[p] = off
    return out


def describe_group(c, group):
    w = Writer().i32(1).string(group)
    r = c.request(API_DESCRIBE_GROUPS, 0, w.getvalue())
    check_eq(r.i32(), 1, "DescribeGroups count")
    err = r.i16()
    r.string()
    state = r.string()
    r.string()
    r.string()
    members = []
    for _ in range(r.i32()):
        mid = r.string()
        r.string()
        r.string()
        r.bytes_()
        r.bytes_()
        members.append(mid)
    check_eq(err, ERR_NONE, "DescribeGroups error")
    return state, members


def list_groups(c):
    r = c.request(API_LIST_GROUPS, 0, b"")
    check_eq(r.i16(), ERR_NONE, "ListGroups error")
    return {r.string(): r.string() for _ in range(r.i32())}


def delete_group(c, group):
    r = c.request(API_DELETE_GROUPS, 0, Writer().i32(1).string(group)
                  .getvalue())
    r.i32()
    check_eq(r.i32(), 1, "DeleteGroups results")
    r.string()
    return r.i16()


def test_group_spread_eviction_and_restart():
    kcat = need_program("KCAT", "kcat")
    rdk = need_program("RDK_GROUP")
    b = Broker(name="groups", sets={"group.initial.rebalance.delay.ms": 1500})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("g6", 6)
    produce(kcat, b.addr, "g6", 0, 6000)
    group = [Consumer(rdk, b.addr, "grpA", "g6") for _ in range(3)]
    other = Consumer(rdk, b.addr, "grpB", "g6")
    wait_for(lambda: len(values(group)) >= 6000, 40, what="grpA drains 6000")
    wait_for(lambda: len(other.lines()) >= 6000, 40, what="grpB drains 6000")
    time.sleep(0.5)
    vals = values(group)
    check_eq(len(vals), 6000, "messages consumed by grpA")
    check_eq(len(set(vals)), 6000, "each message once within grpA")
    parts = [c.partitions() for c in group]
    log("  grpA assignment: %s" % parts)
    check(all(len(p) == 2 for p in parts), "two partitions each: %s" % parts)
    check_eq(sorted(sum(parts, [])), list(range(6)), "partitions disjoint")
    check_eq(len(set(v for _, _, v in other.lines())), 6000,
             "grpB got every message")
    with Conn(b.addr) as c:
        groups = list_groups(c)
        check_eq(groups.get("grpA"), "consumer", "grpA listed")
        state, members = describe_group(c, "grpA")
        check_eq((state, len(members)), ("Stable", 3), "grpA described")

    # SIGKILL one member: evicted after the session timeout
    victim = group[0]
    lost = victim.partitions()
    victim.kill9()
    t_kill = time.monotonic()
    produce(kcat, b.addr, "g6", 6000, 600)
    survivors = group[1:]

    def members_now():
        with Conn(b.addr) as c:
            return len(describe_group(c, "grpA")[1])
    wait_for(lambda: members_now() == 2, SESSION_MS / 1000 + 15,
             what="the killed member evicted")
    evicted_after = time.monotonic() - t_kill
    log("  killed member evicted after %.1f s (session %d ms)"
        % (evicted_after, SESSION_MS))
    check(evicted_after >= SESSION_MS / 1000 - 1,
          "evicted before its session timeout (%.1f s)" % evicted_after)
    wait_for(lambda: len(set(values(survivors)) | set(victim_values(victim)))
             >= 6600, 40, what="survivors consume the new messages")
    new_parts = sorted(set(sum([s.partitions() for s in survivors], [])))
    check(set(lost) <= set(new_parts),
          "the killed member's partitions %s moved (%s)" % (lost, new_parts))
    for s in survivors:
        s.stop()
    other.stop()

    # committed offsets survive a broker restart
    with Conn(b.addr) as c:
        committed = offset_fetch(c, "grpA", "g6", 6)
    check_eq(sum(committed.values()), 6600, "committed offsets of grpA")
    b.restart()
    with Conn(b.addr) as c:
        check_eq(offset_fetch(c, "grpA", "g6", 6), committed,
                 "offsets after restart")
    produce(kcat, b.addr, "g6", 6600, 60)
    resumed = Consumer(rdk, b.addr, "grpA", "g6")
    wait_for(lambda: len(resumed.lines()) >= 60, 30,
             what="resumed consumer gets the new messages")
    time.sleep(1.0)
    got = sorted(int(v[1:]) for v in values([resumed]))
    check(got == list(range(6600, 6660)),
          "resumed from the committed offsets: expected 6600..6659, got %d "
          "messages from %s to %s" % (len(got), got[:1], got[-1:]))
    resumed.stop()
    with Conn(b.addr) as c:
        check_eq(delete_group(c, "grpA"), ERR_NONE, "DeleteGroups empty group")
        check_eq(delete_group(c, "grpA"), ERR_GROUP_ID_NOT_FOUND,
                 "DeleteGroups unknown group")
        check_eq(offset_fetch(c, "grpA", "g6", 6), {p: -1 for p in range(6)},
                 "offsets gone with the group")


def victim_values(victim):
    return [v for _, _, v in victim.lines()]


def test_rebalance_storm():
    kcat = need_program("KCAT", "kcat")
    rdk = need_program("RDK_GROUP")
    b = Broker(name="storm", sets={"group.initial.rebalance.delay.ms": 0})
    b.start()
    with Conn(b.addr) as c:
        c.create_topic("storm", 4)
    stop = threading.Event()
    produced = [0]
    commits = {}
    regress = []

    def producer():
        i = 0
        while not stop.is_set() and i < 20000:
            produce(kcat, b.addr, "storm", i, 500)
            i += 500
            produced[0] = i
            time.sleep(0.1)

    def watcher():
        with Conn(b.addr) as c:
            while not stop.is_set():
                for p, off in offset_fetch(c, "storm-g", "storm", 4).items():
                    if off < commits.get(p, -1):
                        regress.append((p, commits[p], off))
                    commits[p] = max(off, commits.get(p, -1))
                time.sleep(0.05)

    threads = [threading.Thread(target=producer),
               threading.Thread(target=watcher)]
    for t in threads:
        t.start()
    members = []
    everyone = []
    try:
        for cycle in range(6):
            members.append(Consumer(rdk, b.addr, "storm-g", "storm", 2000))
            everyone.append(members[-1])
            time.sleep(0.7)
            if len(members) > 2:
                # alternately a clean leave and a SIGKILL (evicted after
                # its 2 s session timeout)
                m = members.pop(0)
                if cycle % 2:
                    m.kill9()
                else:
                    m.stop()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    final = Consumer(rdk, b.addr, "storm-g", "storm", 2000)
    members.append(final)
    everyone.append(final)
    try:
        wait_for(lambda: set(range(produced[0])) <= {
            int(v.split(b"v")[-1]) for v in values(everyone)},
            60, what="every produced message processed at least once")
    finally:
        for m in members:
            m.stop()
    check(not regress, "committed offsets went backwards: %s" % regress[:5])
    log("  storm: %d messages, commits %s" % (produced[0], commits))


def commit_one(c, group, topic, part, off):
    w = (Writer().string(group).i32(-1).string("").i64(-1).i32(1)
         .string(topic).i32(1).i32(part).i64(off).string(""))
    r = c.request(API_OFFSET_COMMIT, 2, w.getvalue())
    r.i32()
    r.string()
    r.i32()
    r.i32()
    check_eq(r.i16(), ERR_NONE, "OffsetCommit error")


def offset_delete(c, group, topic, part):
    w = Writer().string(group).i32(1).string(topic).i32(1).i32(part)
    r = c.request(API_OFFSET_DELETE, 0, w.getvalue())
    return r.i16()  # GROUP_ID_NOT_FOUND after a DeleteGroups: fine


def test_racing_commits_fetch_what_sqlite_holds():
    """Each round, 8 connections (spread over both loops) change one offset
    at the same moment: 5 commit it, 2 delete it (OffsetDelete), 1 deletes
    its group (DeleteGroups).  Their SQL runs in one order, their answers'
    map updates run on two loops in any order; once all are answered,
    OffsetFetch must answer what sluice.db holds.  Before the updates were
    ordered by the SQLite order (broker/offmap.c) about a third of the
    rounds differed."""
    b = Broker(name="commit-race", sets={"num.network.threads": 2})
    b.start()
    n, rounds = 8, 300
    Conn(b.addr).create_topic("race", 1)
    conns = [Conn(b.addr) for _ in range(n)]
    bar = threading.Barrier(n + 1, timeout=60)
    failed = []

    def member(i):
        try:
            for rnd in range(rounds):
                bar.wait()
                if i < 5:
                    commit_one(conns[i], "race-g", "race", 0, rnd * 100 + i)
                elif i < 7:
                    offset_delete(conns[i], "race-g", "race", 0)
                elif rnd % 4 == 0:
                    delete_group(conns[i], "race-g")
                bar.wait()
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            failed.append(e)
            bar.abort()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    db = sqlite3.connect("file:%s?mode=ro"
                         % os.path.join(b.data_dir, "sluice.db"),
                         uri=True, timeout=10)
    differ = []
    try:
        for rnd in range(rounds):
            bar.wait()
            bar.wait()
            got = offset_fetch(conns[0], "race-g", "race", 1)[0]
            row = db.execute("SELECT committed_offset FROM group_offsets"
                             " WHERE group_id = 'race-g'").fetchone()
            want = row[0] if row else -1
            if got != want:
                differ.append((rnd, got, want))
    except threading.BrokenBarrierError:
        pass
    finally:
        db.close()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
    check(not failed, "a racing connection failed: %r" % failed[:1])
    check(not differ, "%d of %d rounds: OffsetFetch differs from sluice.db "
          "(round, fetched, in sluice.db): %s"
          % (len(differ), rounds, differ[:5]))
    b.stop()


if __name__ == "__main__":
    run([
        ("group_spread_eviction_and_restart",
         test_group_spread_eviction_and_restart, 180),
        ("rebalance_storm", test_rebalance_storm, 150),
        ("racing_commits_fetch_what_sqlite_holds",
         test_racing_commits_fetch_what_sqlite_holds, 120),
    ])
