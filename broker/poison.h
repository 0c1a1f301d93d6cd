/*
 * poison.h — ASan poisoning of memory a loop keeps for reuse (conn.c's
 * requests, txn_api.c's jobs): while cached it is poisoned, so a use after
 * the last release is still caught as with free().  No-ops without ASan.
 * Header-only; the caller owns the memory.
 */
#ifndef SLUICE_POISON_H
#define SLUICE_POISON_H

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
