/*
 * crc32c.c — see crc32c.h.
 *
 * CRC-32C, reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF.  The public functions take and return the finished (xored)
 * value, so a CRC is continued by passing the previous result back in.
 *
 * Two implementations:
 *  - the SSE4.2 crc32 instruction, 8 bytes per step (x86-64 only, compiled
 *    with a target attribute so the rest of the build needs no -msse4.2);
 *  - slicing-by-8 tables, 8 bytes per step with 8 table look-ups.
 * The choice and the tables are made once, on first use or from a
 * constructor, whichever comes first (see crc32c_init()).
 */
#include "crc32c.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HAVE_SSE42 1
#include <nmmintrin.h>
#else
#define CRC32C_HAVE_SSE42 0
#endif

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_tab[8][256];
static bool crc_hw;

/* 0 = not built, 1 = a thread is building, 2 = ready. */
static atomic_int crc_state;

static void build_tables(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		crc_tab[0][i] = c;
	}
	/* Table k advances a byte through k further zero bytes. */
	for (int t = 1; t < 8; t++)
		for (int i = 0; i < 256; i++) {
			uint32_t c = crc_tab[t - 1][i];

			crc_tab[t][i] = (c >> 8) ^ crc_tab[0][c & 0xff];
		}
}

static bool detect_hw(void)
{
#if CRC32C_HAVE_SSE42
	/* Needed when this runs from a constructor, before libgcc's own. */
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
#else
	return false;
#endif
}

/*
 * Builds the tables and picks the implementation exactly once.  The first
 * caller does the work; a concurrent caller waits for it, so nobody reads a
 * half-built table.  The release store publishes both the tables and
 * crc_hw to every later acquire load.
 */
static void crc32c_init(void)
{
	int expected = 0;

	if (atomic_load_explicit(&crc_state, memory_order_acquire) == 2)
		return;
	if (atomic_compare_exchange_strong(&crc_state, &expected, 1)) {
		build_tables();
		crc_hw = detect_hw();
		atomic_store_explicit(&crc_state, 2, memory_order_release);
		return;
	}
	while (atomic_load_explicit(&crc_state, memory_order_acquire) != 2)
		sched_yield();
}

/* Runs the one-time set-up before main() so the hot path never waits. */
__attribute__((constructor)) static void crc32c_ctor(void)
{
	crc32c_init();
}

static uint32_t sw_update(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		/* Little-endian by construction, whatever the host order. */
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
				     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);

		crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
		      crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
		      crc_tab[3][p[4]] ^ crc_tab[2][p[5]] ^
		      crc_tab[1][p[6]] ^ crc_tab[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if CRC32C_HAVE_SSE42
__attribute__((target("sse4.2")))
static uint32_t hw_update(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;

	/* Byte steps up to an 8-byte boundary, then whole words. */
	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8); /* aligned here, but memcpy keeps UBSan quiet */
		c = _mm_crc32_u64(c, w);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	crc32c_init();
	return ~sw_update(~crc, buf, len);
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc32c_init();
#if CRC32C_HAVE_SSE42
	if (crc_hw)
		return ~hw_update(~crc, buf, len);
#endif
	return ~sw_update(~crc, buf, len);
}

bool crc32c_hw_available(void)
{
	crc32c_init();
	return crc_hw;
}
