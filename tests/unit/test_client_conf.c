/*
 * test_client_conf.c — libsluice configuration, errors and ownership.
 *
 * Ownership contract (sluice.h): *_new(conf) takes conf on success; on
 * failure the caller keeps it.  The failure tests go on using and then
 * destroy the conf: under ASan a double free or use-after-free fails them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sluice.h"

static void test_client_conf_defaults_readable(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char buf[256];
	size_t sz = sizeof(buf);

	(void)state;
	assert_non_null(c);
	assert_int_equal(sluice_conf_get(c, "linger.ms", buf, &sz), 0);
	assert_string_equal(buf, "5");
	sz = sizeof(buf);
	assert_int_equal(sluice_conf_get(c, "enable.idempotence", buf, &sz), 0);
	assert_string_equal(buf, "false");
	sz = sizeof(buf);
	assert_int_equal(sluice_conf_get(c, "acks", buf, &sz), 0);
	assert_string_equal(buf, "-1");
	sz = 2; /* too small: size needed is returned */
	assert_int_equal(sluice_conf_get(c, "bootstrap.servers", buf, &sz), SLUICE_ERR_INVALID_ARG);
	assert_int_equal(sz, strlen("localhost:9092") + 1);
	sz = sizeof(buf);
	assert_int_equal(sluice_conf_get(c, "no.such.key", buf, &sz), SLUICE_ERR_BAD_CONFIG);
	sluice_conf_destroy(c);
	sluice_conf_destroy(NULL);
}

static void test_client_conf_accepts_valid_values(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256], buf[256];
	size_t sz = sizeof(buf);
	static const char *ok[][2] = {
		{ "bootstrap.servers", "127.0.0.1:9092, localhost:1234,[::1]:9093" },
		{ "client.id", "me" },
		{ "acks", "all" },
		{ "acks", "0" },
		{ "acks", "1" },
		{ "acks", "-1" },
		{ "linger.ms", "0" },
		{ "batch.size", "16384" },
		{ "compression.type", "none" },
		{ "message.max.bytes", "2000000" },
		{ "request.timeout.ms", "1000" },
		{ "retries", "3" },
		{ "retry.backoff.ms", "10" },
		{ "enable.idempotence", "true" },
		{ "queue.buffering.max.messages", "10" },
		{ "queue.buffering.max.kbytes", "1024" },
		{ "fetch.min.bytes", "1" },
		{ "fetch.max.wait.ms", "100" },
		{ "fetch.max.bytes", "1048576" },
		{ "max.partition.fetch.bytes", "65536" },
		{ "auto.offset.reset", "earliest" },
		{ "auto.offset.reset", "smallest" },
		{ "auto.offset.reset", "latest" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (sluice_conf_set(c, ok[i][0], ok[i][1], err, sizeof(err)))
			fail_msg("%s=%s rejected: %s", ok[i][0], ok[i][1], err);
	assert_int_equal(sluice_conf_get(c, "auto.offset.reset", buf, &sz), 0);
	assert_string_equal(buf, "latest");
	sluice_conf_destroy(c);
}

static void test_client_conf_rejects_bad_values_unchanged(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256], buf[64];
	size_t sz = sizeof(buf);
	static const char *bad[][3] = {
		/* key, value, substring of the message */
		{ "no.such.property", "1", "No such configuration property" },
		{ "acks", "2", "must be 0, 1, -1 or all" },
		{ "linger.ms", "abc", "not an integer" },
		{ "linger.ms", "-1", "outside" },
		{ "batch.size", "0", "outside" },
		{ "bootstrap.servers", "", "no server" },
		{ "bootstrap.servers", "host:0", "bad port" },
		{ "bootstrap.servers", "host:99999", "bad port" },
		{ "bootstrap.servers", "host:12x", "bad port" },
		{ "enable.idempotence", "maybe", "true or false" },
		{ "auto.offset.reset", "middle", "earliest, latest or error" },
		{ "compression.type", "gzip", "unsupported" },
		{ "compression.type", "zstd", "unsupported" },
		{ "compression.type", "brotli", "unsupported" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(sluice_conf_set(c, bad[i][0], bad[i][1], err, sizeof(err)),
				 SLUICE_ERR_BAD_CONFIG);
		if (!strstr(err, bad[i][2]))
			fail_msg("%s=%s: message \"%s\" lacks \"%s\"", bad[i][0], bad[i][1], err,
				 bad[i][2]);
	}
	/* Nothing changed. */
	assert_int_equal(sluice_conf_get(c, "linger.ms", buf, &sz), 0);
	assert_string_equal(buf, "5");
	sz = sizeof(buf);
	assert_int_equal(sluice_conf_get(c, "bootstrap.servers", buf, &sz), 0);
	assert_string_equal(buf, "localhost:9092");
	/* NULL errstr is allowed; tiny errstr is truncated, NUL-terminated. */
	assert_int_equal(sluice_conf_set(c, "acks", "7", NULL, 0), SLUICE_ERR_BAD_CONFIG);
	assert_int_equal(sluice_conf_set(c, "acks", "7", err, 4), SLUICE_ERR_BAD_CONFIG);
	assert_int_equal(strlen(err), 3);
	assert_int_equal(sluice_conf_set(NULL, "acks", "1", NULL, 0), SLUICE_ERR_BAD_CONFIG);
	sluice_conf_destroy(c);
}

static void test_client_conf_new_failure_leaves_conf_with_caller(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256] = "";

	(void)state;
	/* Idempotence needs acks=all: producer_new must fail... */
	assert_int_equal(sluice_conf_set(c, "enable.idempotence", "true", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "acks", "1", err, sizeof(err)), 0);
	assert_null(sluice_producer_new(c, err, sizeof(err)));
	assert_non_null(strstr(err, "acks"));
	/* ...and the conf is still ours: usable, then freed exactly once. */
	assert_int_equal(sluice_conf_set(c, "acks", "all", err, sizeof(err)), 0);
	assert_null(sluice_producer_new(NULL, err, sizeof(err)));
	assert_null(sluice_consumer_new(NULL, err, sizeof(err)));
	assert_null(sluice_admin_new(NULL, err, sizeof(err)));
	sluice_conf_destroy(c);
}

static void test_client_conf_new_success_takes_conf(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256];
	sluice_producer_t *p;
	sluice_consumer_t *k;
	sluice_admin_t *a;

	(void)state;
	/* Nothing listens on port 1: creating handles still succeeds. */
	assert_int_equal(sluice_conf_set(c, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "request.timeout.ms", "200", err, sizeof(err)), 0);
	k = sluice_consumer_new(sluice_conf_dup(c), err, sizeof(err));
	a = sluice_admin_new(sluice_conf_dup(c), err, sizeof(err));
	p = sluice_producer_new(c, err, sizeof(err));
	assert_non_null(p);
	assert_non_null(k);
	assert_non_null(a);
	/* c belongs to p now; destroying p frees it (ASan checks no leak). */
	assert_int_equal(sluice_producer_flush(p, 100), 0);
	sluice_producer_destroy(p);
	sluice_consumer_destroy(k);
	sluice_admin_destroy(a);
}

static void test_client_conf_produce_arg_errors(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256], big[2000];
	sluice_producer_t *p;
	sluice_header_t bad = { NULL, "v", 1 };

	(void)state;
	memset(big, 'b', sizeof(big));
	assert_int_equal(sluice_conf_set(c, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "message.max.bytes", "1000", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "queue.buffering.max.messages", "2", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "request.timeout.ms", "200", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "message.timeout.ms", "300", err, sizeof(err)), 0);
	p = sluice_producer_new(c, err, sizeof(err));
	assert_non_null(p);
	assert_int_equal(sluice_produce(p, NULL, 0, NULL, 0, "v", 1, NULL, 0, NULL),
			 SLUICE_ERR_INVALID_ARG);
	assert_int_equal(sluice_produce(p, "t", -5, NULL, 0, "v", 1, NULL, 0, NULL),
			 SLUICE_ERR_INVALID_ARG);
	assert_int_equal(sluice_produce(p, "t", 0, NULL, 0, "v", 1, &bad, 1, NULL),
			 SLUICE_ERR_INVALID_ARG);
	assert_int_equal(sluice_produce(p, "t", 0, NULL, 0, big, sizeof(big), NULL, 0, NULL),
			 SLUICE_ERR_MSG_SIZE_TOO_LARGE);
	assert_int_equal(sluice_produce(p, "t", 0, NULL, 0, "v", 1, NULL, 0, NULL), 0);
	assert_int_equal(sluice_produce(p, "t", 0, NULL, 0, "v", 1, NULL, 0, NULL), 0);
	assert_int_equal(sluice_produce(p, "t", 0, NULL, 0, "v", 1, NULL, 0, NULL),
			 SLUICE_ERR_QUEUE_FULL);
	assert_int_equal(sluice_producer_outq_len(p), 2);
	/* No broker: the messages time out (message.timeout.ms) and flush ends. */
	assert_int_equal(sluice_producer_flush(p, 5000), 0);
	assert_int_equal(sluice_producer_outq_len(p), 0);
	sluice_producer_destroy(p);
}

/* The transactional producer's keys and its checks before any network. */
static void test_client_conf_txn_producer(void **state)
{
	sluice_conf_t *c = sluice_conf_new();
	char err[256] = "", got[300];
	size_t gl = sizeof(got);
	sluice_txn_result_t res;

	(void)state;
	assert_int_equal(sluice_conf_set(c, "transaction.check.timeout.ms", "-1", err, sizeof(err)),
			 SLUICE_ERR_BAD_CONFIG);
	assert_non_null(strstr(err, "transaction.check.timeout.ms"));
	assert_int_equal(sluice_conf_set(c, "transaction.check.timeout.ms", "1500", err,
					 sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "transaction.instance.id", "svc-1", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_get(c, "transaction.instance.id", got, &gl), 0);
	assert_string_equal(got, "svc-1");
	/* no transaction.group: refused before connecting, conf still ours */
	assert_null(sluice_txn_producer_new(c, err, sizeof(err)));
	assert_non_null(strstr(err, "transaction.group"));
	/* unreachable broker: refused, conf still ours (ASan: no leak, no double free) */
	assert_int_equal(sluice_conf_set(c, "transaction.group", "g", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err)), 0);
	assert_int_equal(sluice_conf_set(c, "request.timeout.ms", "200", err, sizeof(err)), 0);
	assert_null(sluice_txn_producer_new(c, err, sizeof(err)));
	assert_non_null(strstr(err, "broker"));
	sluice_conf_destroy(c);
	/* NULL handles are argument errors, not crashes */
	assert_int_equal(sluice_txn_send(NULL, "t", 0, NULL, 0, "v", 1, NULL, 0, NULL, NULL, &res, err,
					 sizeof(err)), SLUICE_ERR_INVALID_ARG);
	assert_int_equal(res.txn_id, -1);
	assert_int_equal(sluice_txn_end(NULL, 1, SLUICE_TXN_COMMIT, NULL, err, sizeof(err)),
			 SLUICE_ERR_INVALID_ARG);
	sluice_txn_producer_destroy(NULL);
	assert_string_equal(sluice_txn_state_name(SLUICE_TXN_DISCARDED), "DISCARDED");
	assert_string_equal(sluice_txn_state_name(9), "?");
	assert_string_equal(sluice_err2name(SLUICE_ERR_INVALID_TXN_STATE), "INVALID_TXN_STATE");
	assert_string_equal(sluice_err2name(SLUICE_ERR_TRANSACTIONAL_ID_NOT_FOUND),
			    "TRANSACTIONAL_ID_NOT_FOUND");
}

static void test_client_conf_error_names(void **state)
{
	(void)state;
	assert_string_equal(sluice_err2name(SLUICE_ERR_QUEUE_FULL), "QUEUE_FULL");
	assert_string_equal(sluice_err2name(SLUICE_ERR_NO_ERROR), "NO_ERROR");
	assert_string_equal(sluice_err2name(SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION),
			    "UNKNOWN_TOPIC_OR_PARTITION");
	assert_string_equal(sluice_err2name((sluice_err_t)56), "KAFKA_STORAGE_ERROR");
	assert_non_null(strstr(sluice_err2str(SLUICE_ERR_QUEUE_FULL), "queue full"));
	assert_non_null(strstr(sluice_err2str(SLUICE_ERR_UNSUPPORTED_COMPRESSION), "compressed"));
	assert_non_null(strstr(sluice_err2str((sluice_err_t)100), "UNKNOWN_TOPIC_ID"));
	assert_non_null(sluice_err2str((sluice_err_t)-77));
	assert_true(sluice_err_is_retriable(SLUICE_ERR_NOT_LEADER_OR_FOLLOWER));
	assert_true(sluice_err_is_retriable(SLUICE_ERR_REQUEST_TIMED_OUT));
	assert_true(sluice_err_is_retriable(SLUICE_ERR_KAFKA_STORAGE_ERROR));
	assert_true(sluice_err_is_retriable(SLUICE_ERR_NETWORK_EXCEPTION));
	assert_false(sluice_err_is_retriable(SLUICE_ERR_MESSAGE_TOO_LARGE));
	assert_false(sluice_err_is_retriable(SLUICE_ERR_THROTTLING_QUOTA_EXCEEDED));
	assert_false(sluice_err_is_retriable(SLUICE_ERR_BAD_CONFIG));
	assert_int_equal(sluice_version(), SLUICE_VERSION);
	assert_string_equal(sluice_version_str(), SLUICE_VERSION_STR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_conf_defaults_readable),
		cmocka_unit_test(test_client_conf_accepts_valid_values),
		cmocka_unit_test(test_client_conf_rejects_bad_values_unchanged),
		cmocka_unit_test(test_client_conf_new_failure_leaves_conf_with_caller),
		cmocka_unit_test(test_client_conf_new_success_takes_conf),
		cmocka_unit_test(test_client_conf_produce_arg_errors),
		cmocka_unit_test(test_client_conf_error_names),
		cmocka_unit_test(test_client_conf_txn_producer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
