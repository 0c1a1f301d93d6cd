#!/usr/bin/env python3
"""libsluice consumer groups against a real sluiced (issue #4, client side).

* two libsluice members (`sluice consume --group`) and one librdkafka
  member (rdk_group) share a group on a 6-partition topic: the partitions
  are split and every message is consumed exactly once;
* a libsluice member killed with SIGKILL: its partitions move to the others
  after the session timeout, nothing is lost;
* all members stop (commit, leave), the broker restarts, a new member
  resumes from the committed offsets (nothing consumed twice);
* `sluice group list / describe / reset-offsets / delete` end to end;
* the revocation hook (client_rebalance.c logs MSG / REVOKE / COMMIT /
  ASSIGN in order): no message of a partition after its REVOKE or before
  its ASSIGN, and the offsets a member commits inside its REVOKED callback
  (auto commit off) are where the next owner starts and what
  `sluice group describe` shows;
* static membership (group.instance.id): a member killed with SIGKILL and
  restarted with the same id gets its partitions back well within the
  session timeout (broker: "static member ... rejoined"); a second
  consumer with the same id fences the first (FENCED_INSTANCE_ID, fatal);
  static members send no LeaveGroup on close.

Env: SLUICED, SLUICE_CLI, CLIENT_REBALANCE, RDK_GROUP (skips the
librdkafka member when empty).  Exit 77 = skipped.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, TestFailure, check, check_eq, log,  # noqa: E402
                     need_program, run, run_cmd, scratch_dir, wait_for)

SESSION_MS = 3000
_tmp = scratch_dir("cgroups")


def cli():
    return need_program("SLUICE_CLI")


def sluice(b, *args, input_data=None, timeout=60):
    argv = [cli(), "-b", b.addr] + list(args)
    rc, out, err = run_cmd(argv, timeout=timeout, input_data=input_data,
                           what="sluice " + args[0])
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def produce(b, topic, first, n):
    data = "".join("k%d:v%d\n" % (i, i) for i in range(first, first + n))
    rc, _, err = sluice(b, "produce", topic, "--key-sep", ":",
                        input_data=data.encode())
    check_eq(rc, 0, "produce exit (%s)" % err[-300:])


class Member:
    seq = 0

    def __init__(self, b, group, topic, kind="sluice"):
        Member.seq += 1
        self.kind = kind
        self.path = os.path.join(_tmp, "m%d.out" % Member.seq)
        self.err_path = self.path + ".err"
        open(self.path, "wb").close()
        if kind == "sluice":
            argv = [cli(), "-b", b.addr,
                    "-X", "session.timeout.ms=%d" % SESSION_MS,
                    "-X", "heartbeat.interval.ms=300",
                    "-X", "auto.commit.interval.ms=500",
                    "-X", "client.id=sluice-m%d" % Member.seq,
                    "consume", topic, "--group", group, "--from", "beginning",
                    "--format", "json"]
        else:
            argv = [os.environ["RDK_GROUP"], b.addr, group, topic, self.path,
                    str(SESSION_MS)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=open(self.path, "wb") if kind == "sluice" else subprocess.DEVNULL,
            stderr=open(self.err_path, "wb"))

    def values(self):
        with open(self.path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
        out = []
        for ln in data.split("\n"):
            if self.kind == "sluice":
                if ln.startswith("{") and ln.endswith("}"):
                    import json
                    m = json.loads(ln)
                    out.append((m["partition"], m["value"]))
            else:
                parts = ln.split(" ", 2)
                if len(parts) == 3 and not ln.startswith("#"):
                    out.append((int(parts[0]), parts[2]))
        return out

    def partitions(self):
        return sorted({p for p, _ in self.values()})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def all_values(members):
    out = []
    for m in members:
        out += [v for _, v in m.values()]
    return out


def expect_exactly(members, first, n, what, timeout=30):
    want = {"v%d" % i for i in range(first, first + n)}

    def done():
        return want <= set(all_values(members))
    wait_for(done, timeout, interval=0.2, what=what)


def test_client_group_members_share_and_survive():
    b = Broker(name="cgroups")
    b.start()
    rc, _, err = sluice(b, "topic", "create", "cg6", "--partitions", "6")
    check_eq(rc, 0, "topic create (%s)" % err)
    members = [Member(b, "cg", "cg6"), Member(b, "cg", "cg6")]
    have_rdk = bool(os.environ.get("RDK_GROUP"))
    if have_rdk:
        members.append(Member(b, "cg", "cg6", kind="rdk"))
    else:
        log("RDK_GROUP not set: the librdkafka member is left out")
    time.sleep(4)  # let the group settle: one generation with every member
    produce(b, "cg6", 0, 600)
    expect_exactly(members, 0, 600, "all 600 messages consumed")
    time.sleep(1.5)
    vals = all_values(members)
    check_eq(len(vals), 600, "messages consumed (no duplicates in a stable group)")
    owned = [set(m.partitions()) for m in members]
    for i, m in enumerate(members):
        log("member %d (%s): partitions %s" % (i, m.kind, sorted(owned[i])))
        check(len(owned[i]) == (2 if have_rdk else 3),
              "member %d got partitions %s" % (i, sorted(owned[i])))
    for i in range(len(owned)):
        for j in range(i + 1, len(owned)):
            check(not (owned[i] & owned[j]), "partitions shared: %s" % owned)

    # describe / list while the group is active
    rc, out, err = sluice(b, "group", "list")
    check_eq(rc, 0, "group list (%s)" % err)
    check("cg\tconsumer" in out, "group list output %r" % out)
    rc, out, err = sluice(b, "group", "describe", "cg")
    check_eq(rc, 0, "group describe (%s)" % err)
    check("state Stable" in out, "describe state: %r" % out)
    check(out.count("  member ") == len(members), "describe members: %r" % out)
    check("client-id sluice-m" in out, "describe client ids: %r" % out)
    check("cg6[" in out, "describe assignment: %r" % out)

    # SIGKILL a libsluice member: its partitions move after the session timeout
    victim = members[0]
    victim.kill9()
    gone = set(victim.partitions())
    survivors = members[1:]
    time.sleep(SESSION_MS / 1000.0 + 2)
    produce(b, "cg6", 600, 600)
    expect_exactly(survivors, 600, 600, "messages after the kill consumed", 40)
    moved = set()
    for m in survivors:
        moved |= set(p for p, v in m.values() if int(v[1:]) >= 600)
    check(gone <= moved, "partitions %s of the killed member moved (got %s)"
          % (sorted(gone), sorted(moved)))

    # stop everyone (commit + leave), restart the broker, resume
    for m in survivors:
        m.stop()
    time.sleep(0.5)
    rc, out, err = sluice(b, "group", "describe", "cg")
    check_eq(rc, 0, "describe after stop (%s)" % err)
    b.stop()
    b.start()
    produce(b, "cg6", 1200, 300)
    again = Member(b, "cg", "cg6")
    expect_exactly([again], 1200, 300, "messages after the restart consumed", 40)
    time.sleep(1)
    old = [v for v in all_values([again]) if int(v[1:]) < 600]
    check(not old, "resumed member re-read %d old messages (not from the "
          "committed offsets)" % len(old))
    again.stop()

    # reset-offsets / delete on the now empty group
    rc, out, err = sluice(b, "group", "reset-offsets", "cg", "--topic", "cg6",
                          "--to-earliest")
    check_eq(rc, 0, "reset-offsets (%s)" % err)
    check_eq(out.count("\t0\n"), 6, "reset-offsets output %r" % out)
    rc, out, err = sluice(b, "group", "describe", "cg")
    check_eq(rc, 0, "describe after reset (%s)" % err)
    lag = sum(int(ln.split("\t")[4]) for ln in out.split("\n")
              if ln.startswith("  cg6\t"))
    check_eq(lag, 1500, "total lag after reset (%r)" % out)
    again = Member(b, "cg", "cg6")
    expect_exactly([again], 0, 1500, "everything re-read after reset", 40)
    check_eq(sluice(b, "group", "delete", "cg")[0], 1, "delete of a non-empty group")
    again.stop()
    rc, out, err = sluice(b, "group", "delete", "cg")
    check_eq(rc, 0, "group delete (%s)" % err)
    rc, out, err = sluice(b, "group", "list")
    check("cg\t" not in out, "deleted group still listed: %r" % out)
    rc, out, err = sluice(b, "group", "describe", "cg")
    check_eq(rc, 1, "describe of a deleted group")
    # usage
    for args in (["group"], ["group", "frob"], ["group", "reset-offsets", "cg"]):
        check_eq(sluice(b, *args)[0], 2, "exit of sluice %s" % " ".join(args))
    for args in (["group", "--help"], ["group", "describe", "--help"]):
        check_eq(sluice(b, *args)[0], 0, "exit of sluice %s" % " ".join(args))
    b.stop()


class Logger:
    """A client_rebalance process and its event log."""
    seq = 0

    def __init__(self, b, group, topic, delay_ms, *sets):
        Logger.seq += 1
        self.path = os.path.join(_tmp, "r%d.log" % Logger.seq)
        self.err_path = self.path + ".err"
        open(self.path, "wb").close()
        self.proc = subprocess.Popen(
            [need_program("CLIENT_REBALANCE"), b.addr, group, topic,
             self.path, str(delay_ms)] + list(sets),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.err_path, "wb"))

    def events(self):
        with open(self.path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").split("\n")
        return [ln.split(" ") for ln in lines if ln]

    def assigns(self):
        return [sorted(int(x) for x in e[1:]) for e in self.events()
                if e[0] == "ASSIGN"]

    def msgs(self):
        return [(int(e[1]), int(e[2])) for e in self.events() if e[0] == "MSG"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def check_order(self, name):
        """Every MSG is of a partition assigned by the last ASSIGN with no
        REVOKE since; a COMMIT comes right after each REVOKE."""
        owned = set()
        prev = None
        for e in self.events():
            if e[0] == "ASSIGN":
                owned = {int(x) for x in e[1:]}
            elif e[0] == "REVOKE":
                check({int(x) for x in e[1:]} == owned,
                      "%s: REVOKE %s of assignment %s" % (name, e[1:], owned))
                owned = set()
            elif e[0] == "COMMIT":
                check(prev is not None and prev[0] == "REVOKE",
                      "%s: COMMIT outside the REVOKE callback" % name)
            elif e[0] == "MSG":
                check(int(e[1]) in owned,
                      "%s: message %s/%s of a partition not assigned (%s)"
                      % (name, e[1], e[2], sorted(owned)))
            prev = e


def test_client_group_revoke_hook_commits_before_rebalance():
    b = Broker(name="cgrevoke", sets={"group.initial.rebalance.delay.ms": "0"})
    b.start()
    rc, _, err = sluice(b, "topic", "create", "rb4", "--partitions", "4")
    check_eq(rc, 0, "topic create (%s)" % err)
    produce(b, "rb4", 0, 400)
    a = Logger(b, "rb", "rb4", 10)  # a slow member: ~10 ms per message
    wait_for(lambda: len(a.msgs()) >= 40, 20, 0.05, "member A consuming")
    check_eq(a.assigns()[0], [0, 1, 2, 3], "A alone gets every partition")
    bb = Logger(b, "rb", "rb4", 0)
    wait_for(lambda: len(set(a.msgs()) | set(bb.msgs())) >= 400, 30, 0.1,
             "all 400 messages consumed by A and B")
    check(len(a.assigns()) >= 2 and bb.assigns(),
          "rebalance seen: A %s, B %s" % (a.assigns(), bb.assigns()))
    check_eq(a.stop(), 0, "A exit")
    check_eq(bb.stop(), 0, "B exit")
    a.check_order("A")
    bb.check_order("B")
    # the commit inside A's REVOKE is where B starts
    first_commit = next(e for e in a.events() if e[0] == "COMMIT")
    check_eq(first_commit[1], "NO_ERROR", "commit inside the REVOKE callback")
    committed = {int(kv.split("=")[0]): int(kv.split("=")[1])
                 for kv in first_commit[2:]}
    moved = set(bb.assigns()[0])
    check(moved, "B got partitions")
    for p in moved:
        first = min((o for q, o in bb.msgs() if q == p), default=None)
        check_eq(first, committed.get(p, 0),
                 "B's first offset of partition %d (A committed %s)"
                 % (p, committed))
    allm = a.msgs() + bb.msgs()
    check_eq(len(allm), 400, "messages delivered (no duplicate)")
    check_eq(len(set(allm)), 400, "distinct messages")
    # the close-time REVOKE commits are visible too
    rc, out, err = sluice(b, "group", "describe", "rb")
    check_eq(rc, 0, "group describe (%s)" % err)
    rows = [ln.split("\t") for ln in out.split("\n") if ln.startswith("  rb4\t")]
    check_eq(len(rows), 4, "describe partitions (%r)" % out)
    for r in rows:
        check_eq(r[2], r[3], "committed == end offset of rb4[%s] (%r)"
                 % (r[1], out))
    b.stop()


def test_client_group_static_member_restart_and_fence():
    b = Broker(name="cgstatic", sets={"group.initial.rebalance.delay.ms": "0"})
    b.start()
    rc, _, err = sluice(b, "topic", "create", "st4", "--partitions", "4")
    check_eq(rc, 0, "topic create (%s)" % err)
    session = "session.timeout.ms=30000"
    s1 = Logger(b, "sg", "st4", 0, "group.instance.id=s1", session)
    wait_for(lambda: s1.assigns(), 15, 0.05, "s1 assigned")
    s2 = Logger(b, "sg", "st4", 0, "group.instance.id=s2", session)

    def settled(m):
        return m.assigns() and len(m.assigns()[-1]) == 2
    wait_for(lambda: settled(s1) and settled(s2), 20, 0.05, "s1 and s2 share st4")
    p1, p2 = s1.assigns()[-1], s2.assigns()[-1]
    check_eq(p1, [0, 1], "s1's partitions (instance ids sort before member ids)")
    # SIGKILL and restart within the session timeout: same partitions, fast
    s1.proc.kill()
    s1.proc.wait()
    t0 = time.monotonic()
    s1b = Logger(b, "sg", "st4", 0, "group.instance.id=s1", session)
    wait_for(lambda: s1b.assigns(), 15, 0.05, "restarted s1 assigned")
    took = time.monotonic() - t0
    log("static member back after %.1f s (session timeout 30 s)" % took)
    check(took < 15, "restarted static member waited %.1f s" % took)
    check_eq(s1b.assigns()[-1], p1, "restarted s1 gets its partitions back")
    wait_for(lambda: s2.assigns()[-1] == p2 and len(s2.assigns()) >= 2, 10, 0.05,
             "s2 keeps %s" % p2)
    with open(b.logs[-1], "rb") as f:
        blog = f.read().decode("utf-8", "replace")
    check("static member s1 rejoined" in blog, "broker log: static rejoin")
    # a second consumer with the same instance id fences the first
    s1c = Logger(b, "sg", "st4", 0, "group.instance.id=s1", session)
    try:
        s1b.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise TestFailure("fenced member still running")
    check_eq(s1b.proc.returncode, 1, "fenced member exit")
    check(["FATAL", "FENCED_INSTANCE_ID"] in s1b.events(),
          "fenced member logged FATAL: %s" % s1b.events()[-3:])
    with open(s1b.err_path, "rb") as f:
        check(b"fenced" in f.read(), "fenced member's error message")
    wait_for(lambda: s1c.assigns() and s1c.assigns()[-1] == p1, 15, 0.05,
             "the new s1 owns %s" % p1)
    # static members send no LeaveGroup on close
    check_eq(s1c.stop(), 0, "s1 exit")
    check_eq(s2.stop(), 0, "s2 exit")
    time.sleep(0.3)
    with open(b.logs[-1], "rb") as f:
        blog = f.read().decode("utf-8", "replace")
    check(" left" not in blog, "a static member sent LeaveGroup")
    rc, out, err = sluice(b, "group", "describe", "sg")
    check_eq(rc, 0, "describe (%s)" % err)
    check(out.count("  member ") == 2,
          "static members still in the group after close: %r" % out)
    b.stop()


if __name__ == "__main__":
    run([("client_group_members_share_and_survive",
          test_client_group_members_share_and_survive, 150),
         ("client_group_revoke_hook_commits_before_rebalance",
          test_client_group_revoke_hook_commits_before_rebalance, 90),
         ("client_group_static_member_restart_and_fence",
          test_client_group_static_member_restart_and_fence, 90)])
