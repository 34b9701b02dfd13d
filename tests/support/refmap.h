/*
 * A deliberately simple reference map for differential tests: byte-string
 * keys to void pointers, kept in one array sorted by (bytes, length).
 * Everything is O(n) or O(log n) and obviously right; it is the oracle the
 * real structures are compared against.
 *
 * The map does not copy key bytes: the caller keeps them alive and
 * unchanged for as long as any refmap (or clone) refers to them.
 * Not thread-safe. Allocation failures abort the test program.
 */
#ifndef STATECACHE_TESTS_REFMAP_H
#define STATECACHE_TESTS_REFMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct refmap_entry {
	const void *key;
	size_t len;
	void *value;
} refmap_entry;

typedef struct refmap {
	refmap_entry *e;
	size_t n, cap;
} refmap;

/* A new empty map; free with refmap_free(). */
refmap *refmap_new(void);
/* A copy sharing the key bytes. */
refmap *refmap_clone(const refmap *m);
void refmap_free(refmap *m);

/* The value for key, or NULL when absent. */
void *refmap_get(const refmap *m, const void *key, size_t len);
/* Insert or replace; returns the old value or NULL. */
void *refmap_set(refmap *m, const void *key, size_t len, void *value);
/* Remove; returns true and the old value in *old (may be NULL) if present. */
bool refmap_remove(refmap *m, const void *key, size_t len, void **old);
size_t refmap_count(const refmap *m);
/* Entry i in key order, 0 <= i < count. */
const refmap_entry *refmap_at(const refmap *m, size_t i);
/* Total order used by the map: bytes first, then length. */
int refmap_keycmp(const void *a, size_t alen, const void *b, size_t blen);

#endif
