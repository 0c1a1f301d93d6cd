#!/usr/bin/env python3
"""Every advertised version of the implemented APIs, spoken raw:
ApiVersions v0-v2, Metadata v0-v8 (and topic auto-creation), CreateTopics
v0-v4 (with its error cases), Produce v3-v8, Fetch v4-v11, ListOffsets v1-v5,
DeleteTopics v0-v3; multi-topic produce, KIP-74 fetch sizing, topic-level
max.message.bytes; the broker's thread names.

Env: SLUICED.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_API_VERSIONS, API_CREATE_TOPICS, API_PRODUCE,  # noqa: E402
                     Broker, Conn, Writer,
                     ERR_MESSAGE_TOO_LARGE, ERR_NONE,
                     ERR_TOPIC_ALREADY_EXISTS, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                     build_batch, check, check_api_ranges, check_eq, log,
                     parse_api_versions, parse_produce, produce_body, run,
                     wait_for)

ERR_INVALID_TOPIC = 17
ERR_INVALID_PARTITIONS = 37
ERR_INVALID_REPLICATION_FACTOR = 38
ERR_INVALID_CONFIG = 40
ERR_LEADER_NOT_AVAILABLE = 5

_broker = [None]


def broker():
    b = _broker[0]
    if b is not None and b.alive():
        return b
    b = Broker(sets={"num.partitions": 3}, name="protocol", shared=True)
    b.start()
    _broker[0] = b
    return b


def test_api_versions():
    b = broker()
    with Conn(b.addr) as c:
        ref = None
        for v in (0, 1, 2):
            r = c.request(API_API_VERSIONS, v, b"")
            err, ranges = parse_api_versions(r, v)
            check_eq(err, ERR_NONE, "ApiVersions v%d error" % v)
            check_eq(r.remaining(), 0, "bytes after ApiVersions v%d" % v)
            check_api_ranges(ranges, "ApiVersions v%d" % v)
            if ref is None:
                ref = ranges
            check_eq(ranges, ref, "ranges of ApiVersions v%d vs v0" % v)
        log("  advertised: %s" % sorted(ref.items()))


def test_metadata_versions():
    b = broker()
    with Conn(b.addr) as c:
        c.create_topic("md3", 3)
        for v in range(0, 9):
            md = c.metadata(["md3"], version=v)
            check_eq(len(md.brokers), 1, "Metadata v%d broker count" % v)
            node, host, port = md.brokers[0]
            check_eq((host, port), ("127.0.0.1", b.port),
                     "Metadata v%d broker address" % v)
            if v >= 1:
                check_eq(md.controller, node, "Metadata v%d controller" % v)
            check("md3" in md.topics, "Metadata v%d: no md3 in %r"
                  % (v, md.topics))
            err, parts = md.topics["md3"]
            check_eq(err, ERR_NONE, "Metadata v%d md3 error" % v)
            check_eq(sorted(parts), [0, 1, 2], "Metadata v%d partitions" % v)
            for p, (perr, leader) in parts.items():
                check_eq((perr, leader), (ERR_NONE, node),
                         "Metadata v%d md3[%d] (error, leader)" % (v, p))
            md = c.metadata(None, version=v)
            check("md3" in md.topics, "Metadata v%d all topics: %r"
                  % (v, sorted(md.topics)))


def test_metadata_auto_create():
    b = broker()
    with Conn(b.addr) as c:
        md = c.metadata(["auto-no"], version=4, allow_auto_create=False)
        check_eq(md.topics.get("auto-no", (None,))[0],
                 ERR_UNKNOWN_TOPIC_OR_PARTITION,
                 "Metadata v4 allow_auto_topic_creation=false")
        for v, name in ((4, "auto-v4"), (1, "auto-v1")):
            def created():
                md = c.metadata([name], version=v, allow_auto_create=True)
                err, parts = md.topics.get(name, (None, {}))
                check(err in (ERR_NONE, ERR_LEADER_NOT_AVAILABLE),
                      "Metadata v%d auto-create %s: error %r"
                      % (v, name, err))
                return err == ERR_NONE and parts
            parts = wait_for(created, 5, 0.1, what="auto-created " + name)
            check_eq(sorted(parts), [0, 1, 2], "partitions of auto-created "
                     "%s (num.partitions=3)" % name)
        md = c.metadata(None, version=1)
        check("auto-no" not in md.topics, "auto-no was created anyway")


def test_create_topics_versions_and_errors():
    b = broker()
    with Conn(b.addr) as c:
        for v in range(0, 5):
            name = "ct-v%d" % v
            res = c.create_topics([(name, 2, {"retention.ms": 3600000})],
                                  version=v)
            check_eq(res.get(name, (None,))[0], ERR_NONE,
                     "CreateTopics v%d" % v)
            res = c.create_topics([(name, 2)], version=v)
            check_eq(res[name][0], ERR_TOPIC_ALREADY_EXISTS,
                     "CreateTopics v%d of an existing topic" % v)
        res = c.create_topics([("ct-zero", 0), ("ct-neg", -5)], version=2)
        check_eq(res["ct-zero"][0], ERR_INVALID_PARTITIONS,
                 "CreateTopics with 0 partitions")
        check_eq(res["ct-neg"][0], ERR_INVALID_PARTITIONS,
                 "CreateTopics with -5 partitions")
        res = c.create_topics([("ct-default", -1)], version=4)
        check_eq(res["ct-default"][0], ERR_NONE,
                 "CreateTopics v4 with num_partitions=-1 (broker default)")
        md = c.metadata(["ct-default"], version=1)
        check_eq(len(md.topics["ct-default"][1]), 3,
                 "partitions of ct-default (num.partitions=3)")
        for bad in ("", "bad/name", "..", "sp ace"):
            res = c.create_topics([(bad, 1)], version=2)
            check_eq(res.get(bad, (None,))[0], ERR_INVALID_TOPIC,
                     "CreateTopics with invalid name %r" % bad[:20])
        res = c.create_topics([("ct-badcfg", 1, {"retention.ms": "abc"})],
                              version=2)
        check_eq(res["ct-badcfg"][0], ERR_INVALID_CONFIG,
                 "CreateTopics with retention.ms=abc")
        res = c.create_topics([("ct-unkcfg", 1, {"no.such.config": "1"})],
                              version=2)
        check_eq(res["ct-unkcfg"][0], ERR_INVALID_CONFIG,
                 "CreateTopics with an unknown config key")
        res = c.create_topics([("ct-validate", 1)], version=1,
                              validate_only=True)
        check_eq(res["ct-validate"][0], ERR_NONE,
                 "CreateTopics validate_only")
        md = c.metadata(None, version=1)
        check("ct-validate" not in md.topics,
              "validate_only created the topic")
        for bad in ("ct-zero", "ct-neg", "ct-badcfg", "ct-unkcfg"):
            check(bad not in md.topics, "%s was created despite its error"
                  % bad)
        # Every topic config the issue lists is accepted.
        cfg = {"segment.bytes": 1048576, "segment.ms": 3600000,
               "retention.ms": 86400000, "retention.bytes": 1 << 30,
               "durability": "fsync", "max.message.bytes": 2000}
        c.create_topic("ct-allcfg", 1, cfg)
        # Replication factor 3 on one broker: Kafka answers 38; noted only.
        res = c.create_topics([("ct-rf3", 1, {}, 3), ("ct-rf-1", 1, {}, -1)],
                              version=4)
        if res["ct-rf3"][0] != ERR_INVALID_REPLICATION_FACTOR:
            log("  NOTE: CreateTopics with replication_factor=3 on one "
                "broker answered %r (Kafka: 38 INVALID_REPLICATION_FACTOR)"
                % (res["ct-rf3"],))
        check_eq(res["ct-rf-1"][0], ERR_NONE,
                 "CreateTopics v4 with replication_factor=-1 (default)")
        # A 250-character name: the answer must carry the name asked for
        # (clients match results by name).
        long_name = "x" * 250
        res = c.create_topics([(long_name, 1)], version=2)
        check(long_name in res, "CreateTopics of a 250-character name: the "
              "answer names %r instead of the requested topic"
              % [k[:20] for k in res])
        check_eq(res[long_name][0], ERR_INVALID_TOPIC,
                 "CreateTopics with a 250-character name")


def test_produce_fetch_versions():
    b = broker()
    topic = "pf"
    with Conn(b.addr) as c:
        c.create_topic(topic, 1)
        off = 0
        for v in range(3, 9):
            batch = build_batch([(b"k%d" % v, b"produce-v%d" % v),
                                 (None, b"second")])
            corr = c.send_request(API_PRODUCE, v, produce_body(
                [(topic, 0, batch)]))
            r = c.request_reply(corr)
            res = parse_produce(r, v)
            check_eq(res.get((topic, 0)), (ERR_NONE, off),
                     "Produce v%d (error, base offset)" % v)
            off += 2
        for v in range(4, 12):
            res = c.fetch([(topic, 0, 0, 1 << 20)], version=v)
            if None in res:
                raise AssertionError("Fetch v%d top-level error %d"
                                     % (v, res[None]))
            fp = res[(topic, 0)]
            check_eq(fp.error, ERR_NONE, "Fetch v%d error" % v)
            check_eq(fp.high_watermark, off, "Fetch v%d high watermark" % v)
            check_eq(fp.last_stable_offset, off, "Fetch v%d LSO" % v)
            if v >= 5:
                check_eq(fp.log_start_offset, 0, "Fetch v%d log start" % v)
            vals = [m.value for m in fp.messages()]
            check_eq(vals, [x for pv in range(3, 9) for x in
                            (b"produce-v%d" % pv, b"second")],
                     "Fetch v%d values" % v)
            res = c.fetch([("nope", 0, 0, 1 << 20)], version=v)
            check_eq(res[("nope", 0)].error, ERR_UNKNOWN_TOPIC_OR_PARTITION,
                     "Fetch v%d of an unknown topic" % v)
        for v in range(1, 6):
            res = c.list_offsets([(topic, 0, -1)], version=v)
            check_eq(res[(topic, 0)][0::2], (ERR_NONE, off),
                     "ListOffsets v%d latest" % v)
            res = c.list_offsets([(topic, 0, -2)], version=v)
            check_eq(res[(topic, 0)][0::2], (ERR_NONE, 0),
                     "ListOffsets v%d earliest" % v)


def test_multi_topic_produce_and_acks1():
    b = broker()
    with Conn(b.addr) as c:
        c.create_topic("mt-a", 2)
        c.create_topic("mt-b", 1)
        parts = [("mt-a", 0, build_batch([(None, b"a0")])),
                 ("mt-a", 1, build_batch([(None, b"a1")])),
                 ("mt-b", 0, build_batch([(None, b"b0")])),
                 ("mt-b", 3, build_batch([(None, b"b3")]))]
        for acks in (1, -1):
            res = c.produce(parts, acks=acks)
            check_eq(sorted(res), sorted((t, p) for t, p, _ in parts),
                     "partitions answered (acks=%d)" % acks)
            want = 0 if acks == 1 else 1
            for t, p, _ in parts[:3]:
                check_eq(res[(t, p)], (ERR_NONE, want),
                         "%s-%d acks=%d" % (t, p, acks))
            check_eq(res[("mt-b", 3)][0], ERR_UNKNOWN_TOPIC_OR_PARTITION,
                     "mt-b partition 3 (does not exist)")
        res = c.fetch([("mt-a", 0, 0, 1 << 20), ("mt-a", 1, 0, 1 << 20),
                       ("mt-b", 0, 0, 1 << 20)])
        for (t, p), want in ((("mt-a", 0), b"a0"), (("mt-a", 1), b"a1"),
                             (("mt-b", 0), b"b0")):
            vals = [m.value for m in res[(t, p)].messages()]
            check_eq(vals, [want, want], "values of %s-%d" % (t, p))


def test_fetch_sizing_kip74():
    b = broker()
    with Conn(b.addr) as c:
        c.create_topic("kip74", 1)
        for k in range(3):
            err, _ = c.produce1("kip74", 0, build_batch(
                [(None, bytes([65 + k]) * 20000)]))
            check_eq(err, ERR_NONE, "produce")
        # A partition limit smaller than the first batch still returns that
        # whole batch, so a consumer always makes progress.
        fp = c.fetch1("kip74", 0, 0, pmax=100)
        msgs = fp.messages()
        check(msgs and msgs[0].offset == 0 and len(msgs[0].value) == 20000,
              "Fetch with partition_max_bytes=100 must return the first "
              "(20 KB) batch whole, got %d records field bytes"
              % len(fp.records or b""))
        res = c.fetch([("kip74", 0, 0, 1 << 20)], max_bytes=1)
        msgs = res[("kip74", 0)].messages()
        check(msgs and msgs[0].offset == 0,
              "Fetch with max_bytes=1 must return the first batch whole")
        # The partition limit bounds the rest.
        fp = c.fetch1("kip74", 0, 0, pmax=30000)
        check(len(fp.records or b"") <= 30000 + 20100,
              "Fetch with partition_max_bytes=30000 returned %d bytes"
              % len(fp.records or b""))
        # Only the first partition with data may pass the limits: after
        # it, a partition whose first batch does not fit gets nothing.
        c.create_topic("kip74b", 2)
        check_eq(c.produce1("kip74b", 0, build_batch([(None, b"s" * 300)]))[0],
                 ERR_NONE, "produce small")
        check_eq(c.produce1("kip74b", 1, build_batch([(None, b"L" * 1000)]))[0],
                 ERR_NONE, "produce large")
        res = c.fetch([("kip74b", 0, 0, 1 << 20), ("kip74b", 1, 0, 1 << 20)], max_bytes=800)
        check_eq([len(m.value) for m in res[("kip74b", 0)].messages()], [300],
                 "max_bytes 800: the first partition's batch")
        check_eq(res[("kip74b", 1)].messages(), [],
                 "max_bytes 800: the second partition's 1 KB batch waits")
        res = c.fetch([("kip74b", 0, 0, 1 << 20), ("kip74b", 1, 0, 100)])
        check_eq(res[("kip74b", 1)].messages(), [],
                 "partition_max_bytes 100 on the second partition with data")
        res = c.fetch([("kip74b", 0, 1, 1 << 20), ("kip74b", 1, 0, 100)], max_bytes=800)
        check_eq([len(m.value) for m in res[("kip74b", 1)].messages()], [1000],
                 "the first partition with data passes both limits")


def test_create_topics_repeated_names():
    """A name given twice in one CreateTopics: the first is created, the
    repeat answers INVALID_REQUEST (42).  40,000 names in one request
    (validate_only) are checked at once: the pairwise check held the
    connection's loop for seconds (8.6 s at 40,000 names), and every
    other client on it."""
    b = broker()

    def create(names, validate_only):
        w = Writer().array(names, lambda w_, n: w_.string(n).i32(1).i16(1).i32(0).i32(0))
        w.i32(10000).boolean(validate_only)
        with Conn(b.addr, timeout=5) as c:
            r = c.request(API_CREATE_TOPICS, 2, w.getvalue())
            r.i32()  # throttle
            return r.array(lambda rr: (rr.string(), rr.i16(), rr.string()))

    got = create(["rep-a", "rep-b", "rep-a"], False)
    check_eq([(n, e) for n, e, _ in got], [("rep-a", ERR_NONE), ("rep-b", ERR_NONE),
                                           ("rep-a", 42)], "a repeated name")
    check("twice" in (got[2][2] or ""), "the message says why: %r" % (got[2][2],))
    names = ["many-%05d" % i for i in range(40000)] + ["many-00007"]
    got = create(names, True)
    check_eq([i for i, x in enumerate(got) if x[1] != ERR_NONE], [40000],
             "only the repeat fails, answered within the 5 s socket timeout")


def test_topic_max_message_bytes():
    b = broker()
    with Conn(b.addr) as c:
        c.create_topic("small-msgs", 1, {"max.message.bytes": 1000})
        err, _ = c.produce1("small-msgs", 0, build_batch(
            [(None, b"z" * 2000)]))
        check_eq(err, ERR_MESSAGE_TOO_LARGE,
                 "2 KB batch to a topic with max.message.bytes=1000")
        err, _ = c.produce1("small-msgs", 0, build_batch([(None, b"z" * 500)]))
        check_eq(err, ERR_NONE, "500-byte batch, max.message.bytes=1000")


def test_delete_topics_versions():
    b = broker()
    with Conn(b.addr) as c:
        for v in range(0, 4):
            name = "del-v%d" % v
            c.create_topic(name, 1)
            res = c.delete_topics([name], version=v)
            check_eq(res, {name: ERR_NONE}, "DeleteTopics v%d" % v)
        md = c.metadata(None, version=1)
        left = [t for t in md.topics if t.startswith("del-v")]
        check(not left, "deleted topics still listed: %r" % left)


def test_thread_names():
    """The broker's threads carry their role (top -H, perf, gdb)."""
    b = broker()
    task = "/proc/%d/task" % b.proc.pid
    names = set()
    for tid in os.listdir(task):
        with open(os.path.join(task, tid, "comm")) as f:
            names.add(f.read().strip())
    for want in ("sl-loop0", "sl-coord", "sl-walsync", "sl-checkpoint",
                 "sl-logsync"):
        check(want in names, "no thread named %s among %s" % (want, sorted(names)))


def _final_stop():
    b = _broker[0]
    if b is not None and b.alive():
        b.stop()


if __name__ == "__main__":
    run([
        ("api_versions_v0_v2", test_api_versions, 30),
        ("metadata_v0_v8", test_metadata_versions, 30),
        ("metadata_auto_create", test_metadata_auto_create, 30),
        ("create_topics_v0_v4_and_errors",
         test_create_topics_versions_and_errors, 30),
        ("produce_v3_v8_fetch_v4_v11_listoffsets_v1_v5",
         test_produce_fetch_versions, 30),
        ("multi_topic_produce_acks1", test_multi_topic_produce_and_acks1, 30),
        ("fetch_sizing_kip74", test_fetch_sizing_kip74, 30),
        ("create_topics_repeated_names", test_create_topics_repeated_names, 60),
        ("topic_max_message_bytes", test_topic_max_message_bytes, 30),
        ("delete_topics_v0_v3", test_delete_topics_versions, 30),
        ("thread_names", test_thread_names, 30),
        ("clean_shutdown", _final_stop, 30),
    ])
