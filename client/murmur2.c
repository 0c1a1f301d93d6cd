/*
 * murmur2.c — the Java client's key partitioner.
 *
 * Kafka's Utils.murmur2(byte[]): MurmurHash2, 32-bit, seed 0x9747b28c,
 * little-endian 4-byte words, tail bytes mixed in the usual order; the
 * partition is toPositive(hash) % n with toPositive(x) = x & 0x7fffffff.
 * librdkafka's "murmur2_random" partitioner computes the same for non-null
 * keys.  Pure functions, thread-safe.
 */
#include "sluice.h"

int32_t sluice_murmur2(const void *key, size_t len)
{
	const uint32_t m = 0x5bd1e995;
	const int r = 24;
	const uint8_t *data = key;
	uint32_t h = 0x9747b28c ^ (uint32_t)len;
	size_t nblocks = len / 4;

	for (size_t i = 0; i < nblocks; i++) {
		const uint8_t *p = data + i * 4;
		uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			     (uint32_t)p[3] << 24;

		k *= m;
		k ^= k >> r;
		k *= m;
		h *= m;
		h ^= k;
	}
	switch (len & 3) {
	case 3:
		h ^= (uint32_t)data[(len & ~(size_t)3) + 2] << 16;
		/* fall through */
	case 2:
		h ^= (uint32_t)data[(len & ~(size_t)3) + 1] << 8;
		/* fall through */
	case 1:
		h ^= (uint32_t)data[len & ~(size_t)3];
		h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return (int32_t)h;
}

int32_t sluice_partition_for_key(const void *key, size_t len, int32_t partition_count)
{
	if (partition_count <= 0)
		return -1;
	return (int32_t)(((uint32_t)sluice_murmur2(key, len) & 0x7fffffff) %
			 (uint32_t)partition_count);
}
