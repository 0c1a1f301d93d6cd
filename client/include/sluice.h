/*
 * sluice.h — libsluice, the C client of the Sluice broker (and of any broker
 * that speaks the Kafka protocol: Produce v3+, RecordBatch v2).
 *
 * If you know librdkafka you know this library: string key/value
 * configuration with an errstr buffer, asynchronous produce with client-side
 * batching and delivery callbacks served by a poll call, murmur2 key
 * partitioning identical to the Java client, one error enum.
 *
 * ---------------------------------------------------------------------------
 * Kafka in five sentences.  A broker stores *topics*; a topic is split into
 * numbered *partitions* (0..N-1), and each partition is an append-only log in
 * which every message gets the next *offset* (0, 1, 2, ...).  A message has an
 * optional *key*, a *value* (the payload), optional *headers* (name/value
 * pairs) and a *timestamp*.  A *producer* appends messages; messages with the
 * same key always go to the same partition, so they stay in order.  A
 * *consumer* reads a partition from an offset of its choice, and the broker
 * keeps everything until its retention deletes old data.
 *
 * Your first message (error handling trimmed; see examples/pubsub/):
 *
 *     char errstr[256];
 *     sluice_conf_t *conf = sluice_conf_new();
 *     sluice_conf_set(conf, "bootstrap.servers", "127.0.0.1:9092",
 *                     errstr, sizeof(errstr));
 *     sluice_producer_t *p = sluice_producer_new(conf, errstr, sizeof(errstr));
 *     // on success p owns conf; on failure you still own it
 *     sluice_produce(p, "greetings", SLUICE_PARTITION_ANY,
 *                    NULL, 0, "hello", 5, NULL, 0, NULL);
 *     sluice_producer_flush(p, 10000);   // waits until the broker has it
 *     sluice_producer_destroy(p);
 *
 * And reading it back:
 *
 *     sluice_consumer_t *c = sluice_consumer_new(conf2, errstr, sizeof(errstr));
 *     sluice_consumer_assign(c, "greetings", 0, SLUICE_OFFSET_BEGINNING);
 *     sluice_message_t *m = sluice_consumer_poll(c, 5000);
 *     if (m && !sluice_message_err(m))
 *             printf("%.*s\n", (int)sluice_message_len(m),
 *                    (const char *)sluice_message_value(m));
 *     sluice_message_destroy(m);
 *     sluice_consumer_destroy(c);
 *
 * ---------------------------------------------------------------------------
 * Threads.
 *  - Every producer, consumer and admin handle is independent; handles may be
 *    used from different threads.
 *  - A producer or consumer runs one background I/O thread that owns its
 *    socket to the broker.  No call of this API blocks on the network except
 *    those documented as blocking (flush, poll with a timeout, the admin
 *    calls, the offset look-ups).
 *  - sluice_produce() is thread-safe: many threads may produce through one
 *    producer at once.  sluice_producer_poll/flush may be called from any
 *    thread; delivery callbacks run on the thread that calls them, one at a
 *    time, never on the I/O thread.
 *  - Consumer calls (assign, seek, poll, offset look-ups) are thread-safe;
 *    messages returned by poll may be used and destroyed on any thread.
 *  - A sluice_conf_t is not thread-safe; build it on one thread.
 *  - Never call *_destroy() from inside a callback of the same handle.
 *
 * Ownership rules are stated on each function.  Strings and buffers passed
 * in are copied before the call returns unless said otherwise.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 1
#define SLUICE_VERSION_PATCH 0
/* 0xMMmmpp: compare with sluice_version() to detect a header/library mismatch. */
#define SLUICE_VERSION 0x000100
#define SLUICE_VERSION_STR "0.1.0"

/* The library's version as SLUICE_VERSION (of the library actually linked). */
int sluice_version(void);
/* The same as a string, e.g. "0.1.0". */
const char *sluice_version_str(void);

/* ===========================================================================
 * Errors
 *
 * One enum for everything: 0 = no error, negative = detected by the client
 * ("local"), positive = a Kafka error code returned by the broker (the
 * numbers of the Kafka protocol; names as in Kafka's ERROR_CODES).
 * sluice_err2str() gives a sentence, sluice_err2name() the identifier.
 * =========================================================================== */
typedef enum sluice_err {
	SLUICE_ERR_TIMED_OUT = -1,            /* the operation's time limit passed */
	SLUICE_ERR_QUEUE_FULL = -2,           /* queue.buffering.max.* reached: poll, then retry */
	SLUICE_ERR_BAD_CONFIG = -3,           /* unknown key or invalid value */
	SLUICE_ERR_UNKNOWN_TOPIC = -4,        /* topic not known to this client (or to the broker) */
	SLUICE_ERR_UNKNOWN_PARTITION = -5,    /* partition outside 0..N-1 */
	SLUICE_ERR_TRANSPORT = -6,            /* connection to the broker failed or was lost */
	SLUICE_ERR_UNSUPPORTED_COMPRESSION = -7, /* compressed batch (only "none" is supported) */
	SLUICE_ERR_MSG_SIZE_TOO_LARGE = -8,   /* message larger than message.max.bytes */
	SLUICE_ERR_INVALID_ARG = -9,          /* bad argument (NULL handle, negative length, ...) */
	SLUICE_ERR_NO_MEMORY = -10,           /* allocation failed */
	SLUICE_ERR_UNSUPPORTED_FEATURE = -11, /* the broker does not implement the API (see ApiVersions) */
	SLUICE_ERR_BAD_MSG = -12,             /* malformed response or batch from the broker */
	SLUICE_ERR_MSG_TIMED_OUT = -13,       /* message not delivered within message.timeout.ms */
	SLUICE_ERR_DESTROYED = -14,           /* handle destroyed before the operation completed */
	SLUICE_ERR_STATE = -15,               /* call not valid now (e.g. partition not assigned) */
	SLUICE_ERR_PARTITION_EOF = -16,       /* consumer reached the end of a partition (enable.partition.eof) */
	SLUICE_ERR_FATAL = -17,               /* idempotent producer hit an unrecoverable error */
	SLUICE_ERR__LOCAL_MIN = -17,

	SLUICE_ERR_NO_ERROR = 0,

	/* Broker errors: the Kafka codes (a selection; any positive code the
	 * broker sends is passed through and named by sluice_err2name()). */
	SLUICE_ERR_UNKNOWN_SERVER_ERROR = -100, /* Kafka's -1, moved out of the local range */
	SLUICE_ERR_OFFSET_OUT_OF_RANGE = 1,
	SLUICE_ERR_CORRUPT_MESSAGE = 2,
	SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION = 3,
	SLUICE_ERR_LEADER_NOT_AVAILABLE = 5,
	SLUICE_ERR_NOT_LEADER_OR_FOLLOWER = 6,
	SLUICE_ERR_REQUEST_TIMED_OUT = 7,
	SLUICE_ERR_MESSAGE_TOO_LARGE = 10,
	SLUICE_ERR_NETWORK_EXCEPTION = 13,
	SLUICE_ERR_INVALID_TOPIC_EXCEPTION = 17,
	SLUICE_ERR_RECORD_LIST_TOO_LARGE = 18,
	SLUICE_ERR_NOT_ENOUGH_REPLICAS = 19,
	SLUICE_ERR_INVALID_REQUIRED_ACKS = 21,
	SLUICE_ERR_INVALID_TIMESTAMP = 32,
	SLUICE_ERR_UNSUPPORTED_VERSION = 35,
	SLUICE_ERR_TOPIC_ALREADY_EXISTS = 36,
	SLUICE_ERR_INVALID_PARTITIONS = 37,
	SLUICE_ERR_INVALID_REPLICATION_FACTOR = 38,
	SLUICE_ERR_INVALID_CONFIG = 40,
	SLUICE_ERR_INVALID_REQUEST = 42,
	SLUICE_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
	SLUICE_ERR_DUPLICATE_SEQUENCE_NUMBER = 46,
	SLUICE_ERR_INVALID_PRODUCER_EPOCH = 47,
	SLUICE_ERR_INVALID_TXN_STATE = 48,    /* transaction already ended the other way, or discarded */
	SLUICE_ERR_KAFKA_STORAGE_ERROR = 56,
	SLUICE_ERR_COORDINATOR_NOT_AVAILABLE = 15,
	SLUICE_ERR_NOT_COORDINATOR = 16,
	SLUICE_ERR_ILLEGAL_GENERATION = 22,
	SLUICE_ERR_INCONSISTENT_GROUP_PROTOCOL = 23,
	SLUICE_ERR_UNKNOWN_MEMBER_ID = 25,
	SLUICE_ERR_REBALANCE_IN_PROGRESS = 27,
	SLUICE_ERR_UNKNOWN_PRODUCER_ID = 59,
	SLUICE_ERR_NON_EMPTY_GROUP = 68,
	SLUICE_ERR_GROUP_ID_NOT_FOUND = 69,
	SLUICE_ERR_MEMBER_ID_REQUIRED = 79,
	SLUICE_ERR_FENCED_INSTANCE_ID = 82, /* group.instance.id taken over by a newer consumer: fatal */
	SLUICE_ERR_UNSUPPORTED_COMPRESSION_TYPE = 76,
	SLUICE_ERR_INVALID_RECORD = 87,
	SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED = 89,
	SLUICE_ERR_TRANSACTIONAL_ID_NOT_FOUND = 105, /* no such transaction id (never, or purged) */
} sluice_err_t;

/* A human-readable description ("Local: queue full", "Broker: unknown topic
 * or partition").  Never NULL; static storage. */
const char *sluice_err2str(sluice_err_t err);
/* The identifier without prefix ("QUEUE_FULL", "UNKNOWN_TOPIC_OR_PARTITION").
 * Never NULL; static storage. */
const char *sluice_err2name(sluice_err_t err);
/* Non-zero if a Kafka error (or a local transport/time-out error) may go
 * away by itself, so retrying the operation makes sense.
 * SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED is not: a topic's produce rate limit
 * rejected the batch on purpose, and the producer reports it in the delivery
 * callback at once instead of retrying (docs/flow-control.md). */
int sluice_err_is_retriable(sluice_err_t err);

/* ===========================================================================
 * Configuration
 *
 * Keys (defaults in brackets); values are strings, validated by set():
 *  bootstrap.servers      "host:port[,host:port...]": where the broker is [localhost:9092]
 *  client.id              sent in every request, shows up in broker logs [sluice]
 *  request.timeout.ms     time to wait for one response [30000]
 *  socket.timeout.ms      alias of request.timeout.ms
 *  retry.backoff.ms       wait before retrying a failed request [100]
 *  reconnect.backoff.ms   wait before reconnecting after a failure [100]
 *  enable.partition.eof   consumer: poll returns SLUICE_ERR_PARTITION_EOF when a
 *                         partition is read to its end [false]
 * Producer:
 *  acks                   0 (no answer), 1 (written by the leader), -1 or all [-1]
 *  linger.ms              how long a partition's batch waits for more messages [5]
 *  batch.size             largest batch in bytes (a bigger message is sent alone) [1000000]
 *  batch.num.messages     largest batch in messages [100000]
 *  compression.type       only "none" (anything else: SLUICE_ERR_BAD_CONFIG, "unsupported") [none]
 *  message.max.bytes      largest message (key + value + headers + ~20 B framing) [1000000]
 *  retries                attempts after the first for a retriable error [2147483647]
 *  message.timeout.ms     give up on a message after this long (0 = never) [300000]
 *  enable.idempotence     exactly-once per partition via producer id + sequence [false]
 *  max.in.flight          produce requests on the wire at once [5]
 *  queue.buffering.max.messages  messages produced but not yet reported [1000000]
 *  queue.buffering.max.kbytes    KiB of such messages [32768]: like the Java
 *                         client's buffer.memory; a queue that fits in the
 *                         CPU caches and is reused is much faster than a
 *                         1 GiB one whose buffers are touched once (64 KiB
 *                         messages: ~1.0-1.4 GB/s vs ~0.25 GB/s here)
 *                         produce() returns SLUICE_ERR_QUEUE_FULL when either
 *                         limit would be exceeded; poll to serve reports.
 * Consumer:
 *  fetch.min.bytes        the broker answers once it has this much [1]
 *  fetch.max.wait.ms      ... or after this long [500]
 *  fetch.max.bytes        largest fetch response [52428800]
 *  max.partition.fetch.bytes  largest share of one partition in a response [1048576]
 *  queued.max.messages.kbytes prefetched data buffered per partition, KiB [65536]
 *  auto.offset.reset      earliest|smallest|beginning, latest|largest|end, or error [latest]
 *  check.crcs             verify the CRC of every fetched batch [false]
 * Consumer groups (only with group.id and sluice_consumer_subscribe()):
 *  group.id               the consumer group to join [""; none]
 *  group.instance.id      static membership (KIP-345): a stable name of this
 *                         member, unique in the group.  A consumer that closes
 *                         does NOT send LeaveGroup: its partitions stay
 *                         assigned (and unread) until session.timeout.ms,
 *                         and a restart with the same id within that time
 *                         gets the same partitions back without waiting.  A
 *                         second consumer joining with the same id fences
 *                         the first: poll returns SLUICE_ERR_FENCED_INSTANCE_ID
 *                         (fatal, see sluice_consumer_poll) [""; dynamic]
 *  partition.assignment.strategy  "range", "roundrobin" or both, in order of
 *                         preference (librdkafka's default) [range,roundrobin]
 *  session.timeout.ms     the broker evicts a member silent this long [45000]
 *  heartbeat.interval.ms  heartbeat period (background thread) [3000]
 *  max.poll.interval.ms   rebalance timeout sent in JoinGroup, and the
 *                         longest a rebalance waits for the application to
 *                         poll and run its REVOKED callback [300000]
 *  enable.auto.commit     commit consumed positions periodically, on revoke
 *                         and on destroy [true]
 *  auto.commit.interval.ms  period of the automatic commit [5000]
 *  topic.metadata.refresh.interval.ms  how often a regex subscription is
 *                         matched again against the broker's topics [300000]
 *
 * A configuration is a plain value owned by whoever holds it.
 * =========================================================================== */
typedef struct sluice_conf sluice_conf_t;

/* A configuration with every default.  NULL only when out of memory. */
sluice_conf_t *sluice_conf_new(void);
/* Frees conf (NULL is fine).  Do not call it on a conf a handle took over. */
void sluice_conf_destroy(sluice_conf_t *conf);
/* A deep copy (callbacks included), or NULL when out of memory. */
sluice_conf_t *sluice_conf_dup(const sluice_conf_t *conf);

/* Sets key to value.  Returns SLUICE_ERR_NO_ERROR, or SLUICE_ERR_BAD_CONFIG
 * with a sentence in errstr (unknown key, value out of range, "unsupported"
 * compression) and conf unchanged.  errstr may be NULL (errstr_size 0). */
sluice_err_t sluice_conf_set(sluice_conf_t *conf, const char *key, const char *value,
			     char *errstr, size_t errstr_size);
/* Copies the current value of key (as a string) into dest.  Returns
 * SLUICE_ERR_NO_ERROR; SLUICE_ERR_BAD_CONFIG for an unknown key;
 * SLUICE_ERR_INVALID_ARG if dest_size is too small (*dest_size then holds the
 * size needed).  On input *dest_size is the capacity of dest. */
sluice_err_t sluice_conf_get(const sluice_conf_t *conf, const char *key, char *dest,
			     size_t *dest_size);

/* ===========================================================================
 * Producer
 * =========================================================================== */
typedef struct sluice_producer sluice_producer_t;

#define SLUICE_PARTITION_ANY (-1) /* let the partitioner choose */

/* One header: name (NUL-terminated) and a value of value_len bytes; value
 * NULL = null value. */
typedef struct sluice_header {
	const char *name;
	const void *value;
	size_t value_len;
} sluice_header_t;

/* What a delivery callback is told about one message.  Valid only during the
 * callback. */
typedef struct sluice_delivery {
	const char *topic;
	int32_t partition;
	int64_t offset;   /* -1 if unknown (error, or acks=0) */
	int64_t timestamp; /* CreateTime, ms since the epoch */
	sluice_err_t err; /* SLUICE_ERR_NO_ERROR: the broker has it */
	void *opaque;     /* the opaque given to sluice_produce() */
} sluice_delivery_t;

/* Called once per produced message, from sluice_producer_poll() or
 * sluice_producer_flush() on the caller's thread (never from the I/O
 * thread), in produce order within a partition. */
typedef void sluice_delivery_cb(sluice_producer_t *p, const sluice_delivery_t *dr, void *ctx);

/* Sets the delivery callback and its ctx (not owned) on conf. */
void sluice_conf_set_delivery_cb(sluice_conf_t *conf, sluice_delivery_cb *cb, void *ctx);

/* Creates a producer and starts its I/O thread.  Does not wait for the
 * broker: connection problems show up as delivery errors.
 * On success returns the producer, which takes ownership of conf (do not
 * use or destroy conf again).  On failure returns NULL with a sentence in
 * errstr, and the caller still owns conf. */
sluice_producer_t *sluice_producer_new(sluice_conf_t *conf, char *errstr, size_t errstr_size);
/* Waits up to request.timeout.ms for outstanding messages to be delivered
 * (their callbacks run here), fails the rest with SLUICE_ERR_DESTROYED (also
 * reported), stops the thread and frees everything.  NULL is fine. */
void sluice_producer_destroy(sluice_producer_t *p);

/* Queues one message; never blocks on the network and never calls a
 * callback.  topic: NUL-terminated name.  partition: 0..N-1 or
 * SLUICE_PARTITION_ANY (murmur2 of the key like the Java client; no key:
 * "sticky", one random partition until its batch is sent).  key may be NULL
 * (null key: distinct from keylen 0 with a non-NULL key, the empty key);
 * value likewise.  headers: nheaders entries or NULL.  All bytes are copied
 * before return.  opaque is handed back in the delivery report.
 * Returns SLUICE_ERR_NO_ERROR (the delivery callback will report the
 * outcome), or, with nothing queued and no report to come:
 * SLUICE_ERR_QUEUE_FULL, SLUICE_ERR_MSG_SIZE_TOO_LARGE,
 * SLUICE_ERR_UNKNOWN_PARTITION (partition outside what metadata says),
 * SLUICE_ERR_INVALID_ARG, SLUICE_ERR_FATAL (idempotence failed for good). */
sluice_err_t sluice_produce(sluice_producer_t *p, const char *topic, int32_t partition,
			    const void *key, size_t keylen, const void *value, size_t len,
			    const sluice_header_t *headers, size_t nheaders, void *opaque);

/* Serves delivery reports: runs the delivery callback for every message
 * whose outcome is known, waiting up to timeout_ms (0: don't wait, -1:
 * forever) for the first one.  Returns the number of reports served. */
int sluice_producer_poll(sluice_producer_t *p, int timeout_ms);
/* Sends everything queued now (ignoring linger.ms) and waits until every
 * message has been reported, serving callbacks like poll.  Returns
 * SLUICE_ERR_NO_ERROR or SLUICE_ERR_TIMED_OUT (messages remain). */
sluice_err_t sluice_producer_flush(sluice_producer_t *p, int timeout_ms);
/* Messages produced but not yet reported to a callback. */
int sluice_producer_outq_len(sluice_producer_t *p);

/* Flags for sluice_produce_ex(). */
/* Zero-copy value: the producer keeps a pointer to the value instead of
 * copying it, and writes it to the socket straight from the caller's memory
 * (the CRC is computed over it in place).  Only values of 16 KiB and more
 * are kept by reference (smaller ones, and messages produced before the
 * topic's metadata is known, are copied as usual); key and headers are
 * always copied.
 * Ownership rule: the caller keeps owning the value and must not change or
 * free it until the message's delivery report has been served (its delivery
 * callback has returned, whatever the outcome), or, without a delivery
 * callback, until sluice_producer_flush() returned SLUICE_ERR_NO_ERROR or
 * sluice_producer_destroy() returned.  The same buffer may be passed for
 * many messages.  The value still counts against
 * queue.buffering.max.kbytes like a copied one. */
#define SLUICE_MSG_F_NOCOPY 0x1u

/* sluice_produce() with flags (0 or SLUICE_MSG_F_NOCOPY; other bits:
 * SLUICE_ERR_INVALID_ARG).  sluice_produce() is sluice_produce_ex(..., 0). */
sluice_err_t sluice_produce_ex(sluice_producer_t *p, const char *topic, int32_t partition,
			       const void *key, size_t keylen, const void *value, size_t len,
			       const sluice_header_t *headers, size_t nheaders, void *opaque,
			       unsigned flags);

/* ===========================================================================
 * Consumer: partitions assigned by the caller (assign), or by a consumer
 * group (group.id + subscribe)
 * =========================================================================== */
typedef struct sluice_consumer sluice_consumer_t;
typedef struct sluice_message sluice_message_t;

/* A topic partition with an offset (meaning depends on the call) and an
 * error. */
typedef struct sluice_topic_partition {
	const char *topic;
	int32_t partition;
	int64_t offset;
	sluice_err_t err;
} sluice_topic_partition_t;

typedef enum sluice_rebalance_event {
	SLUICE_REBALANCE_ASSIGNED = 1, /* parts: the new assignment (offset: -1001) */
	SLUICE_REBALANCE_REVOKED = 2,  /* parts: the partitions taken away */
} sluice_rebalance_event_t;

/* Group rebalance hook.  Runs inside sluice_consumer_poll() (and, for the
 * last REVOKED, inside sluice_consumer_destroy()) on the caller's thread.
 * There is no assign() to call, unlike librdkafka: the library applies the
 * change itself.  A rebalance (eager: every partition is revoked) goes in
 * this order:
 *  1. the group must rebalance (a member joined or left, the subscription
 *     changed, destroy): poll stops returning messages;
 *  2. the next poll runs the callback with REVOKED and every assigned
 *     partition.  The partitions are still assigned and nothing has been
 *     committed or left yet: commit what you processed here, e.g.
 *     sluice_consumer_commit(c, 1) (allowed inside the callback; it
 *     returns the broker's answer);
 *  3. after the callback returns: with enable.auto.commit, the positions
 *     are committed; the partitions are unassigned (buffered messages are
 *     dropped) and the group is rejoined;
 *  4. a later poll runs the callback with ASSIGNED (the new assignment,
 *     fetched from the committed offsets, auto.offset.reset where none)
 *     before it returns any message of it.
 * If the application does not poll within max.poll.interval.ms after
 * step 1, the library does step 3 without it (as the broker would evict it
 * anyway); the REVOKED callback then runs late, on the next poll, as a
 * mere notification (a commit in it no longer covers those partitions).
 * Without a callback step 2 is skipped (no waiting for poll).
 * When the group fences this member (SLUICE_ERR_FENCED_INSTANCE_ID) the
 * partitions already belong to someone else: REVOKED is only a notification
 * (nothing is committed) and poll then returns the error.
 * parts is valid only during the call; offset is SLUICE_OFFSET_INVALID. */
typedef void sluice_rebalance_cb(sluice_consumer_t *c, sluice_rebalance_event_t ev,
				 const sluice_topic_partition_t *parts, size_t nparts, void *ctx);
/* Sets the rebalance callback and its ctx (not owned) on conf. */
void sluice_conf_set_rebalance_cb(sluice_conf_t *conf, sluice_rebalance_cb *cb, void *ctx);

#define SLUICE_OFFSET_BEGINNING (-2) /* the oldest message still kept */
#define SLUICE_OFFSET_END (-1)       /* the next message to be produced */
#define SLUICE_OFFSET_INVALID (-1001) /* use auto.offset.reset */

/* Creates a consumer.  Same ownership rule as sluice_producer_new(): on
 * success it owns conf, on failure (NULL, errstr filled) the caller does. */
sluice_consumer_t *sluice_consumer_new(sluice_conf_t *conf, char *errstr, size_t errstr_size);
/* In a group: runs the revocation (the REVOKED callback on this thread,
 * then the commit with enable.auto.commit) and sends LeaveGroup, except
 * with group.instance.id (a static member keeps its partitions until
 * session.timeout.ms).  Then stops the I/O thread and frees the consumer.
 * Messages still held by the application stay valid until they are
 * destroyed.  NULL is fine. */
void sluice_consumer_destroy(sluice_consumer_t *c);

/* Starts reading topic/partition at offset (absolute, SLUICE_OFFSET_BEGINNING,
 * SLUICE_OFFSET_END, or SLUICE_OFFSET_INVALID = auto.offset.reset).
 * Assigning an already assigned partition behaves like seek.  Does not
 * block; a partition that does not exist shows up as an error message from
 * poll.  Returns SLUICE_ERR_NO_ERROR or SLUICE_ERR_INVALID_ARG/NO_MEMORY. */
sluice_err_t sluice_consumer_assign(sluice_consumer_t *c, const char *topic, int32_t partition,
				    int64_t offset);
/* Stops reading a partition; its buffered messages are dropped. */
sluice_err_t sluice_consumer_unassign(sluice_consumer_t *c, const char *topic, int32_t partition);
/* Moves an assigned partition to offset (same values as assign): messages
 * already buffered for it are dropped and poll continues from there.
 * SLUICE_ERR_STATE if the partition is not assigned. */
sluice_err_t sluice_consumer_seek(sluice_consumer_t *c, const char *topic, int32_t partition,
				  int64_t offset);

/* Returns the next message, waiting up to timeout_ms (0: don't wait, -1:
 * forever), or NULL on time-out.  The caller owns the message and must
 * sluice_message_destroy() it.  A message may carry an error instead of
 * data (sluice_message_err() != 0: e.g. SLUICE_ERR_UNSUPPORTED_COMPRESSION
 * or UNKNOWN_TOPIC_OR_PARTITION for a partition, which then stops until
 * seek; SLUICE_ERR_PARTITION_EOF).  Messages of one partition come in
 * offset order.
 * In a group poll also runs the rebalance callback (see
 * sluice_rebalance_cb for the order), and returns no message while a
 * rebalance is in progress.  SLUICE_ERR_FENCED_INSTANCE_ID (topic "",
 * partition -1) is fatal, returned once: another consumer joined with
 * this group.instance.id; this one has no partitions any more and never
 * rejoins (commit returns the same error): destroy it. */
sluice_message_t *sluice_consumer_poll(sluice_consumer_t *c, int timeout_ms);

/* Joins group.id and consumes topics[0..n-1] (copied).  A name starting
 * with '^' is a POSIX extended regular expression matched against every
 * topic the broker lists, re-evaluated every
 * topic.metadata.refresh.interval.ms.  The partitions are assigned by the
 * group (the range or roundrobin assignor, wire-compatible with the Java
 * client and librdkafka); rebalances are reported through the rebalance
 * callback.  Does not block: the group is joined by a background thread.
 * Calling it again replaces the subscription (and rejoins).
 * Returns SLUICE_ERR_NO_ERROR; SLUICE_ERR_BAD_CONFIG when group.id is not
 * set; SLUICE_ERR_INVALID_ARG for an empty list, a bad regex, or when
 * partitions were assign()ed by hand; SLUICE_ERR_NO_MEMORY. */
sluice_err_t sluice_consumer_subscribe(sluice_consumer_t *c, const char *const *topics, size_t n);

/* Commits the position (offset of the last message returned by poll + 1)
 * of every assigned partition that moved since the last commit.
 * sync != 0: waits (up to request.timeout.ms) and returns the outcome;
 * sync == 0: queues the commit and returns SLUICE_ERR_NO_ERROR at once.
 * May be called from inside the rebalance callback (REVOKED: this is how
 * the application commits before its partitions go).
 * Returns SLUICE_ERR_STATE when the consumer is not in a group or has no
 * assignment yet; a broker error (e.g. REBALANCE_IN_PROGRESS,
 * ILLEGAL_GENERATION: the group moved on, the partitions are about to be
 * revoked); SLUICE_ERR_FENCED_INSTANCE_ID once fenced. */
sluice_err_t sluice_consumer_commit(sluice_consumer_t *c, int sync);

/* Where one assigned partition stands. */
typedef struct sluice_partition_lag {
	const char *topic;
	int32_t partition;
	int64_t position;  /* next offset poll will return, -1 if not known yet */
	int64_t committed; /* the group's committed offset, -1 if none */
	int64_t end;       /* high watermark, -1 if the look-up failed */
	int64_t lag;       /* end - (committed, else position), -1 if unknown */
} sluice_partition_lag_t;

/* The current assignment with positions, committed offsets (OffsetFetch,
 * only in a group) and end offsets (ListOffsets); blocks up to
 * timeout_ms per look-up.  On success *lags receives an array of *n
 * entries, freed with sluice_partition_lags_destroy(); on failure both are
 * untouched. */
sluice_err_t sluice_consumer_lag(sluice_consumer_t *c, sluice_partition_lag_t **lags, size_t *n,
				 int timeout_ms);
void sluice_partition_lags_destroy(sluice_partition_lag_t *lags, size_t n);

/* ListOffsets look-ups; these block for up to timeout_ms.
 * *offset receives the first offset whose timestamp is >= ts_ms (-1 if
 * none); it is written only on SLUICE_ERR_NO_ERROR. */
sluice_err_t sluice_consumer_offsets_for_times(sluice_consumer_t *c, const char *topic,
					       int32_t partition, int64_t ts_ms, int64_t *offset,
					       int timeout_ms);
/* Low and high watermarks: the oldest kept offset and the next offset to be
 * written.  Written only on success. */
sluice_err_t sluice_consumer_query_watermarks(sluice_consumer_t *c, const char *topic,
					      int32_t partition, int64_t *low, int64_t *high,
					      int timeout_ms);

/* ---- messages ----
 * A message is a view into the fetched response buffer (no copy); it keeps
 * that buffer alive until destroyed.  The pointers returned below live as
 * long as the message.  NULL-safe destroy. */
void sluice_message_destroy(sluice_message_t *m);
sluice_err_t sluice_message_err(const sluice_message_t *m);
/* For an error message: a sentence saying what happened. */
const char *sluice_message_errstr(const sluice_message_t *m);
const char *sluice_message_topic(const sluice_message_t *m);
int32_t sluice_message_partition(const sluice_message_t *m);
int64_t sluice_message_offset(const sluice_message_t *m);
/* ms since the epoch; *type (if non-NULL) = 0 CreateTime, 1 LogAppendTime. */
int64_t sluice_message_timestamp(const sluice_message_t *m, int *type);
/* NULL for a null key (an empty key gives a non-NULL pointer and 0). */
const void *sluice_message_key(const sluice_message_t *m, size_t *keylen);
/* NULL for a null value; length via sluice_message_len(). */
const void *sluice_message_value(const sluice_message_t *m);
size_t sluice_message_len(const sluice_message_t *m);
size_t sluice_message_header_count(const sluice_message_t *m);
/* Walks the headers: *pos starts at 0.  Returns 1 with the next header in
 * name, name_len, value and value_len (value NULL = null), 0 at the end.
 * Header names are not NUL-terminated. */
int sluice_message_header_next(const sluice_message_t *m, size_t *pos, const char **name,
			       size_t *name_len, const void **value, size_t *value_len);
/* The first header named name (value NULL = null header); returns 1 if
 * found, 0 if not. */
int sluice_message_header_get(const sluice_message_t *m, const char *name, const void **value,
			      size_t *value_len);

/* ===========================================================================
 * Admin (blocking calls; each waits up to timeout_ms)
 * =========================================================================== */
typedef struct sluice_admin sluice_admin_t;

/* Same ownership rule as sluice_producer_new(). */
sluice_admin_t *sluice_admin_new(sluice_conf_t *conf, char *errstr, size_t errstr_size);
void sluice_admin_destroy(sluice_admin_t *a);

/* One name/value configuration entry (value NULL: not set / sensitive). */
typedef struct sluice_config_entry {
	const char *name;
	const char *value;
	int is_default;   /* 1 if the broker reports it as a default */
	int is_read_only;
} sluice_config_entry_t;

/* Creates a topic with partitions partitions (-1: the broker's
 * num.partitions) and the given configs (may be NULL when nconfigs is 0;
 * values must be non-NULL).  On a broker error errstr gets its message. */
sluice_err_t sluice_admin_create_topic(sluice_admin_t *a, const char *topic, int32_t partitions,
				       const sluice_config_entry_t *configs, size_t nconfigs,
				       int timeout_ms, char *errstr, size_t errstr_size);
sluice_err_t sluice_admin_delete_topic(sluice_admin_t *a, const char *topic, int timeout_ms,
				       char *errstr, size_t errstr_size);

/* A topic as Metadata describes it. */
typedef struct sluice_topic_info {
	const char *name;
	sluice_err_t err;     /* per-topic error (e.g. UNKNOWN_TOPIC_OR_PARTITION) */
	int32_t partition_count;
	int is_internal;
} sluice_topic_info_t;

typedef struct sluice_topic_list sluice_topic_list_t;
/* Lists every topic (topic == NULL) or describes one (without creating it).
 * On success *list receives a list the caller frees with
 * sluice_topic_list_destroy(); on failure *list is untouched. */
sluice_err_t sluice_admin_list_topics(sluice_admin_t *a, const char *topic,
				      sluice_topic_list_t **list, int timeout_ms);
size_t sluice_topic_list_count(const sluice_topic_list_t *l);
/* Borrowed pointer, valid until the list is destroyed. */
const sluice_topic_info_t *sluice_topic_list_get(const sluice_topic_list_t *l, size_t i);
void sluice_topic_list_destroy(sluice_topic_list_t *l);

/* DescribeConfigs of a topic.  If the broker does not list DescribeConfigs
 * in ApiVersions, returns SLUICE_ERR_UNSUPPORTED_FEATURE with "not supported
 * by this broker" in errstr.  On success *configs receives an array of
 * *nconfigs entries, freed with sluice_config_entries_destroy(). */
sluice_err_t sluice_admin_describe_topic_configs(sluice_admin_t *a, const char *topic,
						 sluice_config_entry_t **configs, size_t *nconfigs,
						 int timeout_ms, char *errstr, size_t errstr_size);
void sluice_config_entries_destroy(sluice_config_entry_t *configs, size_t nconfigs);
/* AlterConfigs of a topic (replaces the topic's set of overrides, as Kafka's
 * AlterConfigs does).  Same rule as describe when the broker lacks it. */
sluice_err_t sluice_admin_alter_topic_configs(sluice_admin_t *a, const char *topic,
					      const sluice_config_entry_t *configs, size_t nconfigs,
					      int timeout_ms, char *errstr, size_t errstr_size);

/* ---- consumer groups ---- */

/* One group as ListGroups shows it. */
typedef struct sluice_group_info {
	const char *group_id;
	const char *protocol_type; /* "consumer" for Kafka consumers */
} sluice_group_info_t;

/* ListGroups.  On success *groups receives an array of *n entries freed
 * with sluice_group_infos_destroy(); on failure both are untouched. */
sluice_err_t sluice_admin_list_groups(sluice_admin_t *a, sluice_group_info_t **groups, size_t *n,
				      int timeout_ms, char *errstr, size_t errstr_size);
void sluice_group_infos_destroy(sluice_group_info_t *groups, size_t n);

/* A member of a described group. */
typedef struct sluice_group_member {
	const char *member_id;
	const char *client_id;
	const char *client_host;
	/* The member's assignment, decoded when protocol_type is "consumer"
	 * (offset fields: -1001). */
	sluice_topic_partition_t *assignment;
	size_t nassignment;
} sluice_group_member_t;

typedef struct sluice_group_description {
	const char *group_id;
	sluice_err_t err;
	const char *state;         /* Empty, PreparingRebalance, CompletingRebalance, Stable, Dead */
	const char *protocol_type;
	const char *protocol;      /* the chosen assignor */
	sluice_group_member_t *members;
	size_t nmembers;
} sluice_group_description_t;

/* DescribeGroups of one group.  On success *desc receives a description
 * freed with sluice_group_description_destroy() (check desc->err: Kafka
 * answers an unknown group with state "Dead" and no members); on failure
 * *desc is untouched. */
sluice_err_t sluice_admin_describe_group(sluice_admin_t *a, const char *group,
					 sluice_group_description_t **desc, int timeout_ms,
					 char *errstr, size_t errstr_size);
void sluice_group_description_destroy(sluice_group_description_t *d);

/* OffsetFetch of every committed offset of group.  On success *parts
 * receives an array of *n entries (offset: the committed offset) freed with
 * sluice_topic_partitions_destroy(); on failure both are untouched. */
sluice_err_t sluice_admin_group_offsets(sluice_admin_t *a, const char *group,
					sluice_topic_partition_t **parts, size_t *n, int timeout_ms,
					char *errstr, size_t errstr_size);
/* OffsetCommit outside any generation (the group must have no active
 * members, as for Kafka's reset-offsets): commits parts[i].offset.  A
 * per-partition error is written to parts[i].err and the first one is
 * returned. */
sluice_err_t sluice_admin_commit_group_offsets(sluice_admin_t *a, const char *group,
					       sluice_topic_partition_t *parts, size_t n,
					       int timeout_ms, char *errstr, size_t errstr_size);
/* DeleteGroups of one group (NON_EMPTY_GROUP while it has members,
 * GROUP_ID_NOT_FOUND if unknown). */
sluice_err_t sluice_admin_delete_group(sluice_admin_t *a, const char *group, int timeout_ms,
				       char *errstr, size_t errstr_size);
/* Frees an array whose topic strings were allocated by the library. */
void sluice_topic_partitions_destroy(sluice_topic_partition_t *parts, size_t n);

/* ===========================================================================
 * Transactional producer: half messages with check-back (RocketMQ style;
 * design in docs/transactions.md)
 *
 * Use it when "write my database row" and "publish the event" must both
 * happen or neither:
 *
 *     static sluice_txn_decision_t create_order(sluice_txn_producer_t *p,
 *                                               int64_t txn_id, void *arg)
 *     {
 *             // one local DB transaction: the order row AND txn_id
 *             if (insert_order(arg, txn_id) == OK) return SLUICE_TXN_COMMIT;
 *             return SLUICE_TXN_ROLLBACK;
 *     }
 *     static sluice_txn_decision_t check(sluice_txn_producer_t *p,
 *                                        const sluice_txn_check_t *c, void *ctx)
 *     {
 *             // the broker lost track of c->txn_id: look it up in YOUR DB
 *             return order_exists_for_txn(ctx, c->txn_id) ? SLUICE_TXN_COMMIT
 *                                                         : SLUICE_TXN_ROLLBACK;
 *     }
 *     sluice_conf_set(conf, "transaction.group", "order-service", errstr, n);
 *     sluice_conf_set_txn_check_cb(conf, check, db);
 *     sluice_txn_producer_t *p = sluice_txn_producer_new(conf, errstr, n);
 *     sluice_txn_result_t res;
 *     sluice_txn_send(p, "order-created", SLUICE_PARTITION_ANY, key, klen,
 *                     value, vlen, NULL, 0, create_order, &order, &res,
 *                     errstr, n);
 *
 * sluice_txn_send() stores the message on the broker as a half message
 * (durable, invisible to consumers), runs the local-transaction callback,
 * and commits (the message is appended to the topic once and becomes
 * visible) or rolls back according to its answer.  If the process dies
 * between the two, or the callback answers SLUICE_TXN_UNKNOWN, the broker
 * later asks a live producer of the same transaction.group — this process
 * again after a restart, or any other instance — through the check callback,
 * which must answer from the application's own database (that is why the
 * local transaction should record txn_id).  UNKNOWN, or no answer, is asked
 * again with backoff; after transaction.check.max checks (broker setting,
 * 15) the message is discarded and an operator resolves it with
 * `sluice txn commit|rollback|resume`.
 *
 * Keys (besides bootstrap.servers, client.id, request.timeout.ms,
 * message.max.bytes):
 *  transaction.group        producer group (required): who may be asked about
 *                           this producer's transactions [""]
 *  transaction.instance.id  this instance's name; checks of the transactions
 *                           it prepared go to it first while it polls
 *                           [host:pid:random]
 *  transaction.check.timeout.ms  prepare → first check (0: the broker's
 *                           transaction.timeout.ms, 6000) [0]
 *
 * Threads: every function here is thread-safe; concurrent sluice_txn_send()
 * calls run in parallel, each on its own pooled connection (open as many
 * as there are concurrent callers).  The local-transaction callback runs on
 * the caller's thread inside sluice_txn_send().  The check callback runs on
 * the producer's check thread (started by sluice_txn_producer_new() when a
 * check callback is set; it long-polls the broker), one check at a time;
 * it must not call sluice_txn_producer_destroy().
 * =========================================================================== */
typedef struct sluice_txn_producer sluice_txn_producer_t;

typedef enum sluice_txn_decision {
	SLUICE_TXN_UNKNOWN = 0,  /* not known yet: the broker asks again later */
	SLUICE_TXN_COMMIT = 1,   /* append the message; consumers see it */
	SLUICE_TXN_ROLLBACK = 2, /* discard it; nobody ever sees it */
} sluice_txn_decision_t;

/* A half message the broker asks about.  Pointers are borrowed for the
 * duration of the callback. */
typedef struct sluice_txn_check {
	int64_t txn_id;
	const char *topic;
	int32_t partition;
	int32_t check_count;   /* earlier checks that got no decision */
	const void *key;       /* NULL: null key */
	size_t key_len;
	const void *value;     /* NULL: null value */
	size_t value_len;
	const sluice_header_t *headers;
	size_t nheaders;
} sluice_txn_check_t;

typedef sluice_txn_decision_t sluice_txn_check_cb(sluice_txn_producer_t *p,
						  const sluice_txn_check_t *check, void *ctx);
/* The check callback of producers created from conf (NULL: none; then no
 * check thread runs and this instance is never asked). */
void sluice_conf_set_txn_check_cb(sluice_conf_t *conf, sluice_txn_check_cb *cb, void *ctx);

/* The local transaction, run by sluice_txn_send() between prepare and end.
 * txn_id is the broker's id of the half message: store it with the local
 * change so the check callback can find the outcome. */
typedef sluice_txn_decision_t sluice_txn_local_cb(sluice_txn_producer_t *p, int64_t txn_id,
						  void *arg);

/* Creates a transactional producer (ownership of conf as for
 * sluice_producer_new()).  Connects, checks that the broker has the
 * transaction APIs (else NULL with "not supported by this broker"), and
 * starts the check thread if a check callback is set.  NULL + errstr on
 * failure (e.g. transaction.group missing). */
sluice_txn_producer_t *sluice_txn_producer_new(sluice_conf_t *conf, char *errstr,
					       size_t errstr_size);
/* Stops the check thread (waits for a running check callback), closes the
 * connections.  Transactions prepared and not ended stay on the broker and
 * are resolved by check-back.  NULL-safe. */
void sluice_txn_producer_destroy(sluice_txn_producer_t *p);

typedef struct sluice_txn_result {
	int64_t txn_id;                 /* -1 if the prepare failed */
	sluice_txn_decision_t decision; /* what the local transaction answered */
	int32_t partition;              /* -1 if the broker chose (null key, PARTITION_ANY) */
	int64_t offset;                 /* log offset of a commit, else -1 */
} sluice_txn_result_t;

/* prepare → local(p, txn_id, arg) → end(decision), synchronously.
 * partition SLUICE_PARTITION_ANY: by key (murmur2, as sluice_produce), or
 * round-robin by the broker for a null key.  Returns:
 *  - the prepare's error (res->txn_id -1, local not run), e.g.
 *    SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION, SLUICE_ERR_MSG_SIZE_TOO_LARGE,
 *    SLUICE_ERR_TRANSPORT;
 *  - SLUICE_ERR_NO_ERROR once the decision reached the broker (for COMMIT:
 *    the message is in the log at res->offset; for UNKNOWN: the broker will
 *    ask the check callback);
 *  - the end's error (res->decision tells what was meant): the broker may or
 *    may not have it; check-back settles it, so this is not a failure of
 *    the transaction's atomicity.
 * The end is retried on transport errors within request.timeout.ms; a
 * retried commit never appends twice. */
sluice_err_t sluice_txn_send(sluice_txn_producer_t *p, const char *topic, int32_t partition,
			     const void *key, size_t key_len, const void *value, size_t value_len,
			     const sluice_header_t *headers, size_t nheaders,
			     sluice_txn_local_cb *local, void *arg, sluice_txn_result_t *res,
			     char *errstr, size_t errstr_size);

/* The same two steps for callers who run the local transaction themselves:
 * sluice_txn_prepare() stores the half message and gives its id (and the
 * partition, -1 when the broker picks); sluice_txn_end() commits, rolls back
 * or answers UNKNOWN.  Ending twice with the same decision is a success that
 * changes nothing (offset: where the commit landed); the opposite decision
 * after the end is SLUICE_ERR_INVALID_TXN_STATE; an unknown id
 * SLUICE_ERR_TRANSACTIONAL_ID_NOT_FOUND.  offset may be NULL. */
sluice_err_t sluice_txn_prepare(sluice_txn_producer_t *p, const char *topic, int32_t partition,
				const void *key, size_t key_len, const void *value,
				size_t value_len, const sluice_header_t *headers, size_t nheaders,
				int64_t *txn_id, int32_t *partition_out, char *errstr,
				size_t errstr_size);
sluice_err_t sluice_txn_end(sluice_txn_producer_t *p, int64_t txn_id,
			    sluice_txn_decision_t decision, int64_t *offset, char *errstr,
			    size_t errstr_size);

/* The same two steps without blocking, pipelined: many transactions in
 * flight from one thread (an event-driven service, or a gateway that hands
 * the local transaction to its own workers).  Prepares share one
 * connection and ends another: a connection is answered in request order,
 * so an end there would wait for the answers of the prepares sent before
 * it, which the broker gives only once their half messages are durable.
 *
 * sluice_txn_prepare_async() queues the half message and returns at once
 * (SLUICE_ERR_NO_ERROR, or an argument/size error without calling cb);
 * cb(p, err, txn_id, partition, errstr, opaque) then runs exactly once with
 * the prepare's outcome, as sluice_txn_prepare() would return it.
 * sluice_txn_end_async() queues the decision; cb(p, err, txn_id, offset,
 * errstr, opaque) runs once it is answered, with what sluice_txn_end()
 * would return (transport errors are retried within request.timeout.ms, as
 * there).  errstr is "" on success and borrowed for the call.
 *
 * Threads: callable from any thread, including from inside these
 * callbacks.  The callbacks run on the producer's I/O thread (started by
 * the first asynchronous call), one at a time: they must not block — run
 * the local transaction elsewhere, or keep it short — and must not destroy
 * the producer.  sluice_txn_producer_destroy() completes everything still
 * queued or in flight with SLUICE_ERR_DESTROYED (on the destroying thread
 * once the I/O thread stopped).  A prepare with a key and
 * SLUICE_PARTITION_ANY looks the topic's partition count up once (blocking
 * Metadata call on the calling thread; cached afterwards).  Copies key,
 * value and headers: the caller's buffers are free at return. */
typedef void sluice_txn_prepared_cb(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
				    int32_t partition, const char *errstr, void *opaque);
typedef void sluice_txn_ended_cb(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
				 int64_t offset, const char *errstr, void *opaque);
sluice_err_t sluice_txn_prepare_async(sluice_txn_producer_t *p, const char *topic,
				      int32_t partition, const void *key, size_t key_len,
				      const void *value, size_t value_len,
				      const sluice_header_t *headers, size_t nheaders,
				      sluice_txn_prepared_cb *cb, void *opaque);
sluice_err_t sluice_txn_end_async(sluice_txn_producer_t *p, int64_t txn_id,
				  sluice_txn_decision_t decision, sluice_txn_ended_cb *cb,
				  void *opaque);

/* ---- transactions, for operators (admin handle) ---- */

typedef enum sluice_txn_state {
	SLUICE_TXN_PENDING = 0,     /* prepared, not ended: checks will come */
	SLUICE_TXN_COMMITTING = 1,  /* commit decided, append in progress */
	SLUICE_TXN_COMMITTED = 2,
	SLUICE_TXN_ROLLED_BACK = 3,
	SLUICE_TXN_DISCARDED = 4,   /* too many checks without a decision */
} sluice_txn_state_t;

/* "PENDING", "COMMITTING", ...; "?" for anything else. */
const char *sluice_txn_state_name(int state);

typedef struct sluice_txn_info {
	int64_t txn_id;
	const char *producer_group;
	const char *topic;
	int32_t partition;
	int state;               /* sluice_txn_state_t */
	int64_t created_ms;      /* wall clock ms */
	int64_t ended_ms;        /* -1 / 0 while PENDING */
	int32_t check_count;
	int64_t next_check_ms;
	int64_t log_offset;      /* -1 unless COMMITTED */
	const char *discard_reason; /* NULL unless DISCARDED */
	/* sluice_admin_describe_txn() only: the half message (NULL/0 after it
	 * was committed or rolled back: the broker keeps it only while needed) */
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
	const sluice_header_t *headers;
	size_t nheaders;
	/* The offset of its copy in the broker's
	 * transaction.dead.letter.topic, SLUICE_TXN_DEAD_LETTER_NONE if none
	 * (yet, or the broker does not say: a broker without TxnDescribe v1 /
	 * TxnList v1), SLUICE_TXN_DEAD_LETTER_NEVER if it can never be
	 * written there, SLUICE_TXN_DEAD_LETTER_UNKNOWN if copied at an
	 * offset the broker no longer knows (should not happen) */
	int64_t dead_letter_offset;
} sluice_txn_info_t;

#define SLUICE_TXN_DEAD_LETTER_NONE (-1)
#define SLUICE_TXN_DEAD_LETTER_NEVER (-2)
#define SLUICE_TXN_DEAD_LETTER_UNKNOWN (-3)

/* TxnList: transactions of group (NULL: all) whose state bit is in
 * state_mask (1 << SLUICE_TXN_*; 0: all), txn_id > after_txn_id, at most
 * limit (<= 10000), in txn_id order.  *txns freed with
 * sluice_txn_infos_destroy(). */
sluice_err_t sluice_admin_list_txns(sluice_admin_t *a, const char *group, unsigned state_mask,
				    int64_t after_txn_id, int limit, sluice_txn_info_t **txns,
				    size_t *n, int timeout_ms, char *errstr, size_t errstr_size);
/* TxnDescribe: one transaction with its message; *txn freed with
 * sluice_txn_infos_destroy(*txn, 1). */
sluice_err_t sluice_admin_describe_txn(sluice_admin_t *a, int64_t txn_id, sluice_txn_info_t **txn,
				       int timeout_ms, char *errstr, size_t errstr_size);
void sluice_txn_infos_destroy(sluice_txn_info_t *txns, size_t n);
/* Operator decision (TxnEnd with the operator flag): COMMIT or ROLLBACK a
 * PENDING or DISCARDED transaction.  *state receives the state after
 * (may be NULL), *offset where a commit landed (may be NULL). */
sluice_err_t sluice_admin_end_txn(sluice_admin_t *a, int64_t txn_id, sluice_txn_decision_t decision,
				  int *state, int64_t *offset, int timeout_ms, char *errstr,
				  size_t errstr_size);
/* Puts a DISCARDED transaction back to PENDING with its check count reset:
 * the group's producers are asked again at once. */
sluice_err_t sluice_admin_resume_txn(sluice_admin_t *a, int64_t txn_id, int timeout_ms,
				     char *errstr, size_t errstr_size);

/* ===========================================================================
 * Utilities
 * =========================================================================== */
/* Kafka's murmur2 (seed 0x9747b28c) as the Java client computes it. */
int32_t sluice_murmur2(const void *key, size_t len);
/* The partition the producer picks for a key: toPositive(murmur2(key)) % n,
 * the Java client's default and librdkafka's "murmur2_random". */
int32_t sluice_partition_for_key(const void *key, size_t len, int32_t partition_count);

#ifdef __cplusplus
}
#endif
#endif
