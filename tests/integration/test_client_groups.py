#!/usr/bin/env python3
"""libsluice consumer groups against a real sluiced (issue #4, client side).

* two libsluice members (`sluice consume --group`) and one librdkafka
  member (rdk_group) share a group on a 6-partition topic: the partitions
  are split and every message is consumed exactly once;
* a libsluice member killed with SIGKILL: its partitions move to the others
  after the session timeout, nothing is lost;
* all members stop (commit, leave), the broker restarts, a new member
  resumes from the committed offsets (nothing consumed twice);
* `sluice group list / describe / reset-offsets / delete` end to end.

Env: SLUICED, SLUICE_CLI, RDK_GROUP (skips the librdkafka member when
empty).  Exit 77 = skipped.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, check, check_eq, log, need_program,  # noqa: E402
                     run, run_cmd, wait_for)

SESSION_MS = 3000
_tmp = tempfile.mkdtemp(prefix="sluice-it-cgroups-")


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


if __name__ == "__main__":
    run([("client_group_members_share_and_survive",
          test_client_group_members_share_and_survive, 150)])
