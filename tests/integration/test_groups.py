#!/usr/bin/env python3
"""Consumer groups with real librdkafka consumers (rdk_group.c): three members
of one group on a 6-partition topic get two partitions each and consume
every message once; a second group gets every message too; a member killed
with SIGKILL is evicted after its session timeout and its partitions move;
committed offsets survive a broker restart (consumption resumes, nothing
skipped); a rebalance storm loses nothing and commits only move forward.
Also the admin side raw: ListGroups, DescribeGroups, OffsetFetch,
DeleteGroups, OffsetDelete.  Commits and deletes of one offset racing from
many connections: OffsetFetch then answers what sluice.db holds.  The
coordinator's edges, raw: a removed member's commit is refused; a fenced
static member's LeaveGroup leaves its replacement alone; a member parked in
SyncGroup outlives its session timeout; a JoinGroup with a null protocol
name leaves no member behind; an Empty group's offsets expire
offsets.retention.minutes after it emptied (KIP-211).

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
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15
API_LIST_GROUPS = 16
API_DELETE_GROUPS = 42
API_OFFSET_DELETE = 47
ERR_ILLEGAL_GENERATION = 22
ERR_UNKNOWN_MEMBER_ID = 25
ERR_REBALANCE_IN_PROGRESS = 27
ERR_NON_EMPTY_GROUP = 68
ERR_GROUP_ID_NOT_FOUND = 69
ERR_FENCED_INSTANCE_ID = 82

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
    """A simple (generation -1) commit that must succeed."""
    check_eq(commit_err(c, group, -1, "", topic, part, off), ERR_NONE,
             "OffsetCommit error")


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


# ---- the coordinator's edges, raw (JoinGroup v3/v5, SyncGroup v3) ----

def join_body(group, member="", instance=None, session_ms=10000,
              protos=(("range", b"\0"),), ver=3):
    w = Writer().string(group).i32(session_ms).i32(session_ms).string(member)
    if ver >= 5:
        w.string(instance)
    w.string("consumer").i32(len(protos))
    for name, meta in protos:
        w.string(name).bytes_(meta)
    return w.getvalue()


def join_reply(r):
    """(error, generation, member id, leader) of a JoinGroup v2+ answer."""
    r.i32()
    err, gen = r.i16(), r.i32()
    r.string()
    leader = r.string()
    return err, gen, r.string(), leader


def join(c, group, member="", instance=None, session_ms=10000):
    ver = 5 if instance is not None else 3
    return join_reply(c.request(API_JOIN_GROUP, ver, join_body(
        group, member, instance, session_ms, ver=ver)))


def sync_body(group, gen, member, instance=None, assign=()):
    w = Writer().string(group).i32(gen).string(member).string(instance)
    w.i32(len(assign))
    for mid, data in assign:
        w.string(mid).bytes_(data)
    return w.getvalue()


def sync_reply(r):
    """(error, assignment) of a SyncGroup v1+ answer."""
    r.i32()
    return r.i16(), r.bytes_()


def sync(c, group, gen, member, instance=None, assign=()):
    return sync_reply(c.request(API_SYNC_GROUP, 3, sync_body(
        group, gen, member, instance, assign)))


def heartbeat(c, group, gen, member):
    r = c.request(API_HEARTBEAT, 0, Writer().string(group).i32(gen)
                  .string(member).getvalue())
    return r.i16()


def leave_v3(c, group, identities):
    """LeaveGroup v3: (top error, [(member id, instance id, error)])."""
    w = Writer().string(group).i32(len(identities))
    for mid, inst in identities:
        w.string(mid).string(inst)
    r = c.request(API_LEAVE_GROUP, 3, w.getvalue())
    r.i32()
    err = r.i16()
    return err, [(r.string(), r.string(), r.i16()) for _ in range(r.i32())]


def sole_member(c, group):
    """Joins and syncs group as its only member: (generation, member id)."""
    err, gen, mid, _ = join(c, group)
    check_eq(err, ERR_NONE, "JoinGroup error")
    check_eq(sync(c, group, gen, mid, assign=[(mid, b"")])[0], ERR_NONE,
             "SyncGroup error")
    return gen, mid


def leave_v1(c, group, mid):
    r = c.request(API_LEAVE_GROUP, 1, Writer().string(group).string(mid).getvalue())
    r.i32()
    check_eq(r.i16(), ERR_NONE, "LeaveGroup error")


def commit_err(c, group, gen, member, topic, part, off):
    w = (Writer().string(group).i32(gen).string(member).i64(-1).i32(1)
         .string(topic).i32(1).i32(part).i64(off).string(""))
    r = c.request(API_OFFSET_COMMIT, 2, w.getvalue())
    r.i32()
    r.string()
    r.i32()
    r.i32()
    return r.i16()


def edge_broker(name, delay_ms=0):
    b = Broker(name=name, sets={"group.initial.rebalance.delay.ms": delay_ms})
    b.start()
    return b


def test_removed_member_commit_refused():
    """A member that left (a zombie) commits with its old generation and
    member id: UNKNOWN_MEMBER_ID, nothing stored (it was taken: offset 99
    stored).  A bogus member at generation 7: UNKNOWN_MEMBER_ID on an
    Empty group, ILLEGAL_GENERATION on an unknown one.  Generation -1
    ("simple", assign()ed consumers) commits still work."""
    b = edge_broker("zombie-commit")
    with Conn(b.addr) as c:
        c.create_topic("zt", 1)
        gen, mid = sole_member(c, "z1")
        leave_v1(c, "z1", mid)
        check_eq(commit_err(c, "z1", gen, mid, "zt", 0, 99),
                 ERR_UNKNOWN_MEMBER_ID, "the removed member's commit")
        check_eq(offset_fetch(c, "z1", "zt", 1), {0: -1},
                 "offsets after the refused commit")
        check_eq(commit_err(c, "z1", 7, "bogus", "zt", 0, 98),
                 ERR_UNKNOWN_MEMBER_ID, "a bogus member's commit (Empty group)")
        check_eq(commit_err(c, "z-none", 7, "bogus", "zt", 0, 97),
                 ERR_ILLEGAL_GENERATION, "a commit at generation 7 to an "
                 "unknown group")
        check("z-none" not in list_groups(c), "the refused commit made a group")
        check_eq(commit_err(c, "z1", -1, "", "zt", 0, 5), ERR_NONE,
                 "a simple commit to the Empty group")
        check_eq(commit_err(c, "z-simple", -1, "", "zt", 0, 6), ERR_NONE,
                 "a simple commit to a new group")
        check_eq(offset_fetch(c, "z1", "zt", 1), {0: 5}, "z1 offsets")
        check_eq(offset_fetch(c, "z-simple", "zt", 1), {0: 6},
                 "z-simple offsets")
    b.stop()


def test_fenced_static_leave_keeps_replacement():
    """Static member I1 joins as A; I1 joins again as B (A is fenced).  A's
    LeaveGroup v3 (A, I1): FENCED_INSTANCE_ID for it, B stays (it was
    removed).  An admin removal ("", I1) removes B."""
    b = edge_broker("fenced-leave")
    with Conn(b.addr) as ca, Conn(b.addr) as cb:
        err, gen, a_id, _ = join(ca, "z2", instance="I1")
        check_eq(err, ERR_NONE, "A's JoinGroup error")
        check_eq(sync(ca, "z2", gen, a_id, "I1", [(a_id, b"")])[0], ERR_NONE,
                 "A's SyncGroup error")
        err, gen, b_id, _ = join(cb, "z2", instance="I1")
        check_eq(err, ERR_NONE, "B's JoinGroup error")
        check(b_id != a_id, "B got A's member id")
        err, res = leave_v3(ca, "z2", [(a_id, "I1")])
        check_eq(err, ERR_NONE, "LeaveGroup top-level error")
        check_eq(res, [(a_id, "I1", ERR_FENCED_INSTANCE_ID)],
                 "the fenced member's LeaveGroup result")
        check_eq(describe_group(ca, "z2")[1], [b_id], "members after the "
                 "fenced member's LeaveGroup")
        err, res = leave_v3(ca, "z2", [("", "I1")])
        check_eq(res, [("", "I1", ERR_NONE)], "admin removal by instance")
        check_eq(describe_group(ca, "z2")[1], [], "members after it")
    b.stop()


def test_member_waiting_in_sync_outlives_session():
    """Leader (session 20 s) and follower (session 1 s) join together; the
    follower's SyncGroup waits 2.5 s for the leader's.  A member waiting
    for its join or sync answer is alive (as Kafka): the follower gets its
    assignment (it got UNKNOWN_MEMBER_ID, the leader REBALANCE_IN_PROGRESS),
    and its session starts again with the answer."""
    b = edge_broker("sync-wait", delay_ms=1000)
    with Conn(b.addr) as c1, Conn(b.addr) as c2:
        k1 = c1.send_request(API_JOIN_GROUP, 3, join_body("z3", session_ms=20000))
        time.sleep(0.2)
        k2 = c2.send_request(API_JOIN_GROUP, 3, join_body("z3", session_ms=1000))
        j1, j2 = join_reply(c1.request_reply(k1)), join_reply(c2.request_reply(k2))
        check_eq((j1[0], j2[0]), (ERR_NONE, ERR_NONE), "JoinGroup errors")
        check_eq(j1[1], j2[1], "generations")
        check_eq(j1[3], j1[2], "the first joiner leads")
        gen, lead, fol = j1[1], j1[2], j2[2]
        k2 = c2.send_request(API_SYNC_GROUP, 3, sync_body("z3", gen, fol))
        time.sleep(2.5)
        got = sync(c1, "z3", gen, lead, assign=[(lead, b"L"), (fol, b"F")])
        check_eq(got, (ERR_NONE, b"L"), "the leader's SyncGroup")
        check_eq(sync_reply(c2.request_reply(k2)), (ERR_NONE, b"F"),
                 "the waiting follower's SyncGroup")
        time.sleep(0.5)
        check_eq(heartbeat(c2, "z3", gen, fol), ERR_NONE,
                 "the follower's heartbeat 0.5 s after its assignment")
        check_eq(heartbeat(c1, "z3", gen, lead), ERR_NONE,
                 "the leader's heartbeat")
    b.stop()


def test_null_protocol_name_leaves_no_member():
    """A JoinGroup whose protocol name is null is malformed (the name is
    not nullable, as the group id): the connection is closed and no member
    is left behind, so a valid JoinGroup right after succeeds (it got
    INCONSISTENT_GROUP_PROTOCOL from a member without protocols)."""
    b = edge_broker("null-proto")
    with Conn(b.addr) as c:
        c.send_request(API_JOIN_GROUP, 3, join_body(
            "z4", protos=((None, b"\0"),)))
        closed = c.wait_closed(5)
    with Conn(b.addr) as c:
        err, gen, mid, _ = join(c, "z4")
        check_eq(err, ERR_NONE, "the valid JoinGroup after it")
        check_eq(describe_group(c, "z4")[1], [mid], "members")
    check(closed, "the broker kept the connection open")
    b.stop()


def test_offsets_expire_retention_after_group_empties():
    """KIP-211: the offsets of a consumer group expire
    offsets.retention.minutes (here 1) after the group became Empty, not
    after the last commit.  The member commits at ~1 s and leaves at ~62 s;
    with the retention checked every 0.5 s
    (offsets.retention.check.interval.ms) they are still there at ~64 s
    (before, the first check after the leave dropped them: the commit was
    older than a minute) and gone by ~125 s."""
    b = Broker(name="kip211", sets={"group.initial.rebalance.delay.ms": 0,
                                    "offsets.retention.minutes": 1,
                                    "offsets.retention.check.interval.ms": 500})
    b.start()
    t0 = time.monotonic()
    with Conn(b.addr) as c:
        c.create_topic("kt", 1)
        gen, mid = sole_member(c, "z6")
        check_eq(commit_err(c, "z6", gen, mid, "kt", 0, 42), ERR_NONE,
                 "the member's commit")
        while time.monotonic() - t0 < 62:
            check_eq(heartbeat(c, "z6", gen, mid), ERR_NONE, "Heartbeat")
            time.sleep(2)
        leave_v1(c, "z6", mid)
        left = time.monotonic()
        time.sleep(2)
        check_eq(offset_fetch(c, "z6", "kt", 1), {0: 42}, "offsets 2 s after "
                 "the group became Empty (the commit is over a minute old)")
        time.sleep(max(0, left + 60 - time.monotonic()))
        wait_for(lambda: offset_fetch(c, "z6", "kt", 1) == {0: -1}, 15, interval=0.5,
                 what="the offsets expired a minute after the group became Empty")
    b.stop()


# Two minutes of waiting and no timing bound a neighbour's load could
# break: meson runs it on its own (groups_retention, beside other tests),
# and a run of the whole file without names leaves it out.
SLOW = "offsets_expire_retention_after_group_empties"

if __name__ == "__main__":
    run([t for t in [
        ("group_spread_eviction_and_restart",
         test_group_spread_eviction_and_restart, 180),
        ("rebalance_storm", test_rebalance_storm, 150),
        ("racing_commits_fetch_what_sqlite_holds",
         test_racing_commits_fetch_what_sqlite_holds, 120),
        ("removed_member_commit_refused",
         test_removed_member_commit_refused, 60),
        ("fenced_static_leave_keeps_replacement",
         test_fenced_static_leave_keeps_replacement, 60),
        ("member_waiting_in_sync_outlives_session",
         test_member_waiting_in_sync_outlives_session, 60),
        ("null_protocol_name_leaves_no_member",
         test_null_protocol_name_leaves_no_member, 60),
        (SLOW, test_offsets_expire_retention_after_group_empties, 180),
    ] if sys.argv[1:] or t[0] != SLOW])
