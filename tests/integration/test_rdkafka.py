#!/usr/bin/env python3
"""librdkafka round trip against sluiced: rdk_roundtrip produces 1,000,000
messages (keys, varying values, binary headers) with acks=all into a
3-partition topic and reads them back checking every byte, per-partition
order, no duplicates and nothing missing.

Env: SLUICED, RDK_ROUNDTRIP (path of the built helper; empty = skip),
RDK_N (message count, default 1000000).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Broker, Conn, check_eq, log, need_program, run, run_cmd  # noqa: E402

N = int(os.environ.get("RDK_N", "1000000"))


def roundtrip(n, topic, partitions, timeout):
    rdk = need_program("RDK_ROUNDTRIP")
    b = Broker(name="rdk-%s" % topic)
    b.start()
    with Conn(b.addr) as c:
        c.create_topic(topic, partitions)
    t0 = time.monotonic()
    rc, out, err = run_cmd([rdk, "roundtrip", b.addr, topic, str(n)],
                           timeout=timeout, what="rdk_roundtrip roundtrip")
    dt = time.monotonic() - t0
    text = (out + err).decode("utf-8", "replace")
    # librdkafka's own log lines can be many; keep the report short.
    lines = text.splitlines()
    log("\n".join("  | " + ln for ln in lines[-40:]))
    log("  rdk_roundtrip %d messages: %.1f s" % (n, dt))
    check_eq(rc, 0, "rdk_roundtrip exit status")
    b.check_alive("round trip")
    b.stop()


def test_small():
    roundtrip(1000, "rdk_small", 3, 60)


def test_million():
    roundtrip(N, "rdk_1m", 3, 540)


if __name__ == "__main__":
    run([
        ("rdkafka_roundtrip_small", test_small, 90),
        ("rdkafka_roundtrip_%d" % N, test_million, 570),
    ])
