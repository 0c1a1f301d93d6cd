/*
 * test_crc32c.c — proto/crc32c: known answers (RFC 3720 B.4 vectors and the
 * catalogue check value), the instruction and table paths agreeing on every
 * length and alignment, and continuing a CRC.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "crc32c.h"

/* Deterministic bytes (xorshift), so a failure reproduces. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

/* Checks both implementations against one expected value. */
static void assert_both(const void *buf, size_t len, uint32_t want)
{
	assert_int_equal(crc32c(0, buf, len), want);
	assert_int_equal(crc32c_sw(0, buf, len), want);
}

static void test_crc32c_check_value(void **state)
{
	(void)state;
	assert_both("123456789", 9, 0xE3069283);
}

static void test_crc32c_rfc3720_vectors(void **state)
{
	uint8_t buf[32];

	(void)state;
	memset(buf, 0, sizeof(buf));
	assert_both(buf, sizeof(buf), 0x8A9136AA);
	memset(buf, 0xff, sizeof(buf));
	assert_both(buf, sizeof(buf), 0x62A8AB43);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_both(buf, sizeof(buf), 0x46DD794E);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_both(buf, sizeof(buf), 0x113FDB5C);
}

static void test_crc32c_empty_keeps_crc(void **state)
{
	static const uint8_t none[1];

	(void)state;
	assert_int_equal(crc32c(0, none, 0), 0);
	assert_int_equal(crc32c_sw(0, none, 0), 0);
	assert_int_equal(crc32c(0xE3069283, none, 0), 0xE3069283);
	assert_int_equal(crc32c_sw(0xE3069283, none, 0), 0xE3069283);
}

/* Every length up to 300 at every start offset within a word, then a few
 * large ones: covers the head, word loop and tail of both paths. */
static void test_crc32c_hw_matches_sw(void **state)
{
	static uint8_t buf[70000 + 8];
	static const size_t big[] = { 1024, 4093, 65536, 70000 };

	(void)state;
	fill_random(buf, sizeof(buf), 0x5eed);
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; len <= 300; len++)
			assert_int_equal(crc32c(0, buf + off, len), crc32c_sw(0, buf + off, len));
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		for (size_t off = 0; off < 8; off++)
			assert_int_equal(crc32c(0x12345678, buf + off, big[i]),
					 crc32c_sw(0x12345678, buf + off, big[i]));
}

static void test_crc32c_incremental_equals_one_shot(void **state)
{
	uint8_t buf[1000];
	uint32_t whole, whole_sw;

	(void)state;
	fill_random(buf, sizeof(buf), 42);
	whole = crc32c(0, buf, sizeof(buf));
	whole_sw = crc32c_sw(0, buf, sizeof(buf));
	assert_int_equal(whole, whole_sw);
	for (size_t split = 0; split <= sizeof(buf); split += 7) {
		uint32_t c = crc32c(0, buf, split);
		uint32_t s = crc32c_sw(0, buf, split);

		assert_int_equal(crc32c(c, buf + split, sizeof(buf) - split), whole);
		assert_int_equal(crc32c_sw(s, buf + split, sizeof(buf) - split), whole);
		/* The two paths share the CRC state format. */
		assert_int_equal(crc32c_sw(c, buf + split, sizeof(buf) - split), whole);
	}
}

static void test_crc32c_byte_at_a_time(void **state)
{
	const char *s = "123456789";
	uint32_t c = 0;

	(void)state;
	for (size_t i = 0; i < 9; i++)
		c = crc32c(c, s + i, 1);
	assert_int_equal(c, 0xE3069283);
}

static void test_crc32c_hw_available_is_stable(void **state)
{
	bool hw = crc32c_hw_available();

	(void)state;
	/* Informational: the comparison tests above are only a real hw/sw
	 * comparison on an SSE4.2 machine. */
	print_message("crc32c: SSE4.2 path %s\n", hw ? "in use" : "not available");
	assert_int_equal(crc32c_hw_available(), hw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_check_value),
		cmocka_unit_test(test_crc32c_rfc3720_vectors),
		cmocka_unit_test(test_crc32c_empty_keeps_crc),
		cmocka_unit_test(test_crc32c_hw_matches_sw),
		cmocka_unit_test(test_crc32c_incremental_equals_one_shot),
		cmocka_unit_test(test_crc32c_byte_at_a_time),
		cmocka_unit_test(test_crc32c_hw_available_is_stable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
