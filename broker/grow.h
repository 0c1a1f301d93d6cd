/*
 * grow.h — the one growable-array helper of the broker (partlog, segment,
 * txn_commit): doubles the capacity until `need` elements fit.
 * Header-only; no thread rules of its own (the caller owns the array).
 */
#ifndef SLUICE_GROW_H
#define SLUICE_GROW_H

#include <errno.h>
#include <stdlib.h>

/* Makes *arr hold at least need elements of elem bytes (first: the
 * capacity of a new array).  Returns 0 or -ENOMEM (*arr unchanged). */
static inline int grow_array(void **arr, size_t *cap, size_t need, size_t elem, size_t first)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : first;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

#endif
