/*
 * err.c — sluice_err_t names and descriptions.
 *
 * Local errors (negative) are described here; broker errors (positive) are
 * the Kafka codes, named by proto/kerr and described from a short table of
 * the common ones (the name is used for the rest).
 */
#include <stdio.h>

#include "kerr.h"
#include "sluice.h"

struct desc {
	int code;
	const char *name;
	const char *str;
};

static const struct desc local[] = {
	{ SLUICE_ERR_TIMED_OUT, "TIMED_OUT", "Local: operation timed out" },
	{ SLUICE_ERR_QUEUE_FULL, "QUEUE_FULL", "Local: producer queue full (serve delivery reports with sluice_producer_poll)" },
	{ SLUICE_ERR_BAD_CONFIG, "BAD_CONFIG", "Local: invalid configuration" },
	{ SLUICE_ERR_UNKNOWN_TOPIC, "UNKNOWN_TOPIC", "Local: unknown topic" },
	{ SLUICE_ERR_UNKNOWN_PARTITION, "UNKNOWN_PARTITION", "Local: unknown partition" },
	{ SLUICE_ERR_TRANSPORT, "TRANSPORT", "Local: broker transport failure" },
	{ SLUICE_ERR_UNSUPPORTED_COMPRESSION, "UNSUPPORTED_COMPRESSION", "Local: compressed batch: libsluice reads only uncompressed batches" },
	{ SLUICE_ERR_MSG_SIZE_TOO_LARGE, "MSG_SIZE_TOO_LARGE", "Local: message larger than message.max.bytes" },
	{ SLUICE_ERR_INVALID_ARG, "INVALID_ARG", "Local: invalid argument" },
	{ SLUICE_ERR_NO_MEMORY, "NO_MEMORY", "Local: out of memory" },
	{ SLUICE_ERR_UNSUPPORTED_FEATURE, "UNSUPPORTED_FEATURE", "Local: not supported by this broker" },
	{ SLUICE_ERR_BAD_MSG, "BAD_MSG", "Local: malformed data from the broker" },
	{ SLUICE_ERR_MSG_TIMED_OUT, "MSG_TIMED_OUT", "Local: message timed out (message.timeout.ms)" },
	{ SLUICE_ERR_DESTROYED, "DESTROYED", "Local: handle destroyed" },
	{ SLUICE_ERR_STATE, "STATE", "Local: invalid state for this call" },
	{ SLUICE_ERR_PARTITION_EOF, "PARTITION_EOF", "Local: reached the end of the partition" },
	{ SLUICE_ERR_FATAL, "FATAL", "Local: fatal idempotent producer error" },
	{ SLUICE_ERR_UNKNOWN_SERVER_ERROR, "UNKNOWN_SERVER_ERROR", "Broker: unknown server error" },
	{ SLUICE_ERR_NO_ERROR, "NO_ERROR", "Success" },
};

static const struct desc broker[] = {
	{ 1, NULL, "Broker: offset out of range" },
	{ 2, NULL, "Broker: corrupt message (CRC or framing)" },
	{ 3, NULL, "Broker: unknown topic or partition" },
	{ 5, NULL, "Broker: leader not available" },
	{ 6, NULL, "Broker: not leader for partition" },
	{ 7, NULL, "Broker: request timed out" },
	{ 10, NULL, "Broker: message (batch) too large" },
	{ 13, NULL, "Broker: network exception" },
	{ 17, NULL, "Broker: invalid topic name" },
	{ 21, NULL, "Broker: invalid required acks" },
	{ 32, NULL, "Broker: invalid timestamp" },
	{ 35, NULL, "Broker: unsupported version" },
	{ 36, NULL, "Broker: topic already exists" },
	{ 37, NULL, "Broker: invalid number of partitions" },
	{ 38, NULL, "Broker: invalid replication factor" },
	{ 40, NULL, "Broker: invalid config" },
	{ 42, NULL, "Broker: invalid request" },
	{ 45, NULL, "Broker: out of order sequence number" },
	{ 46, NULL, "Broker: duplicate sequence number" },
	{ 48, NULL, "Broker: transaction already ended otherwise, or discarded (operator must resolve)" },
	{ 105, NULL, "Broker: unknown transaction id" },
	{ 47, NULL, "Broker: invalid producer epoch" },
	{ 56, NULL, "Broker: storage error (disk)" },
	{ 59, NULL, "Broker: unknown producer id" },
	{ 76, NULL, "Broker: unsupported compression type" },
	{ 82, NULL, "Broker: fenced instance id (another consumer joined with this group.instance.id)" },
	{ 87, NULL, "Broker: invalid record" },
	{ 89, NULL, "Broker: throttling quota exceeded" },
};

const char *sluice_err2name(sluice_err_t err)
{
	if (err <= 0) {
		for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
			if (local[i].code == (int)err)
				return local[i].name;
		return "UNKNOWN_LOCAL_ERROR";
	}
	if (err > 32767)
		return "UNKNOWN_ERROR_CODE";
	return kerr_name((int16_t)err);
}

const char *sluice_err2str(sluice_err_t err)
{
	static __thread char buf[96];

	if (err <= 0) {
		for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
			if (local[i].code == (int)err)
				return local[i].str;
		snprintf(buf, sizeof(buf), "Local: unknown error %d", (int)err);
		return buf;
	}
	for (size_t i = 0; i < sizeof(broker) / sizeof(broker[0]); i++)
		if (broker[i].code == (int)err)
			return broker[i].str;
	snprintf(buf, sizeof(buf), "Broker: %s (%d)", sluice_err2name(err), (int)err);
	return buf;
}

/* THROTTLING_QUOTA_EXCEEDED is deliberately not retriable: the broker's
 * produce gate rejected the batch to fail fast (docs/flow-control.md); the
 * application decides (a flash-sale gateway answers "sold out"). */
int sluice_err_is_retriable(sluice_err_t err)
{
	switch ((int)err) {
	case SLUICE_ERR_TIMED_OUT:
	case SLUICE_ERR_TRANSPORT:
	case SLUICE_ERR_QUEUE_FULL:
	case KERR_CORRUPT_MESSAGE: /* Kafka marks it retriable (bit flip on the way) */
	case KERR_UNKNOWN_TOPIC_OR_PARTITION:
	case KERR_LEADER_NOT_AVAILABLE:
	case KERR_NOT_LEADER_OR_FOLLOWER:
	case KERR_REQUEST_TIMED_OUT:
	case KERR_BROKER_NOT_AVAILABLE:
	case KERR_REPLICA_NOT_AVAILABLE:
	case KERR_NETWORK_EXCEPTION:
	case KERR_COORDINATOR_LOAD_IN_PROGRESS:
	case KERR_COORDINATOR_NOT_AVAILABLE:
	case KERR_NOT_COORDINATOR:
	case KERR_NOT_ENOUGH_REPLICAS:
	case KERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
	case KERR_KAFKA_STORAGE_ERROR:
	case KERR_FETCH_SESSION_ID_NOT_FOUND:
	case KERR_INVALID_FETCH_SESSION_EPOCH:
	case KERR_FENCED_LEADER_EPOCH:
	case KERR_UNKNOWN_LEADER_EPOCH:
	case KERR_OFFSET_NOT_AVAILABLE:
	case KERR_PREFERRED_LEADER_NOT_AVAILABLE:
	case KERR_CONCURRENT_TRANSACTIONS:
		return 1;
	default:
		return 0;
	}
}

int sluice_version(void)
{
	return SLUICE_VERSION;
}

const char *sluice_version_str(void)
{
	return SLUICE_VERSION_STR;
}
