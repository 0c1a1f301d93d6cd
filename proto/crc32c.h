/*
 * crc32c.h — CRC-32C (Castagnoli), as RecordBatch v2 uses it.
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run
 * time, thread-safe), with a slicing table fallback.  Both give identical
 * results; crc32c_sw() is exposed so tests can compare them.
 * Thread-safe: pure functions.
 */
#ifndef SLUICE_CRC32C_H
#define SLUICE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: pass crc = 0 to start.  crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The table implementation, whatever the CPU. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* True if crc32c() uses the SSE4.2 instruction on this CPU. */
bool crc32c_hw_available(void);

#endif
