/*
 * test_client_murmur2.c — libsluice's key partitioner against the Java
 * client's murmur2 (values from Kafka's UtilsTest and computed by the Java
 * algorithm; re-checked with an independent Python port when written).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "sluice.h"

static const struct {
	const char *key;
	int32_t hash;
	int32_t p3, p7; /* toPositive(hash) % 3 and % 7 */
} vectors[] = {
	{ "21", -973932308, 0, 3 },
	{ "foobar", -790332482, 0, 0 },
	{ "a-little-bit-long-string", -985981536, 2, 1 },
	{ "a-little-bit-longer-string", -1486304829, 2, 0 },
	{ "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 2, 3 },
	{ "abc", 479470107, 0, 4 },
	{ "", 275646681, 0, 2 },
};

static void test_client_murmur2_matches_java(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
		assert_int_equal(sluice_murmur2(vectors[i].key, strlen(vectors[i].key)),
				 vectors[i].hash);
}

static void test_client_murmur2_partition_is_positive_modulo(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const char *k = vectors[i].key;

		assert_int_equal(sluice_partition_for_key(k, strlen(k), 3), vectors[i].p3);
		assert_int_equal(sluice_partition_for_key(k, strlen(k), 7), vectors[i].p7);
		assert_int_equal(sluice_partition_for_key(k, strlen(k), 1), 0);
	}
	assert_int_equal(sluice_partition_for_key("x", 1, 0), -1);
}

static void test_client_murmur2_tail_bytes_are_unsigned(void **state)
{
	/* Bytes >= 0x80 in the tail: Java masks them with 0xff. */
	const unsigned char k[] = { 0xff, 0x80, 0x7f };
	int32_t a = sluice_murmur2(k, 3), b = sluice_murmur2(k, 2);

	(void)state;
	assert_int_not_equal(a, b);
	assert_int_equal(sluice_murmur2(k, 3), a); /* deterministic */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_murmur2_matches_java),
		cmocka_unit_test(test_client_murmur2_partition_is_positive_modulo),
		cmocka_unit_test(test_client_murmur2_tail_bytes_are_unsigned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
