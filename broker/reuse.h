/*
 * reuse.h — a bounded stack of released objects one thread keeps for
 * reuse, so that the objects of every request (conn.c's requests,
 * txn_api.c's jobs) cost no allocation once warm.
 *
 * The list owns the objects it holds.  Each object links to the next
 * through the pointer at link_off inside it.  While cached, an object's
 * first `size` bytes are poisoned under ASan (poison.h), so a use after
 * its release is caught as with free().  Memory the object points to (a
 * response buffer, a row buffer) is the caller's to poison before
 * reuse_put and to unpoison after reuse_get.
 *
 * Threads: a list belongs to one thread (a loop's lists: that loop; after
 * the loops stopped, main).  Header-only.
 */
#ifndef SLUICE_REUSE_H
#define SLUICE_REUSE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "poison.h"

typedef struct reuse_list {
	void *head; /* owned: the last object put */
	int n;
} reuse_list;

/* True if the list holds max objects already: free instead of putting. */
static inline bool reuse_full(const reuse_list *l, int max)
{
	return l->n >= max;
}

/* Takes the last object put (unpoisoned, its other bytes as they were
 * left), or NULL if the list is empty. */
static inline void *reuse_get(reuse_list *l, size_t size, size_t link_off)
{
	char *o = l->head;

	if (!o)
		return NULL;
	UNPOISON(o, size);
	memcpy(&l->head, o + link_off, sizeof(void *));
	l->n--;
	return o;
}

/* Keeps o (the caller checked reuse_full): o belongs to the list now. */
static inline void reuse_put(reuse_list *l, void *o, size_t size, size_t link_off)
{
	memcpy((char *)o + link_off, &l->head, sizeof(void *));
	l->head = o;
	l->n++;
	POISON(o, size);
}

#endif
