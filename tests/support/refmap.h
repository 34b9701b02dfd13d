/*
 * A deliberately simple reference map for differential tests: byte-string
 * keys to void pointers, kept in one array sorted by (bytes, length).
 * Everything is O(n) or O(log n) and obviously right; it is the oracle the
 * real structures are compared against.
 *
 * The map does not copy key bytes: the caller keeps them alive and
 * unchanged for as long as any tk_refmap (or clone) refers to them.
 * Not thread-safe. Allocation failures abort the test program.
 */
#ifndef STATECACHE_TESTS_REFMAP_H
#define STATECACHE_TESTS_REFMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tk_refmap_entry {
	const void *key;
	size_t len;
	void *value;
} tk_refmap_entry;

typedef struct tk_refmap {
	tk_refmap_entry *e;
	size_t n, cap;
} tk_refmap;

/* A new empty map; free with tk_refmap_free(). */
tk_refmap *tk_refmap_new(void);
/* A copy sharing the key bytes. */
tk_refmap *tk_refmap_clone(const tk_refmap *m);
void tk_refmap_free(tk_refmap *m);

/* The value for key, or NULL when absent. */
void *tk_refmap_get(const tk_refmap *m, const void *key, size_t len);
/* Insert or replace; returns the old value or NULL. */
void *tk_refmap_set(tk_refmap *m, const void *key, size_t len, void *value);
/* Remove; returns true and the old value in *old (may be NULL) if present. */
bool tk_refmap_remove(tk_refmap *m, const void *key, size_t len, void **old);
size_t tk_refmap_count(const tk_refmap *m);
/* Entry i in key order, 0 <= i < count. */
const tk_refmap_entry *tk_refmap_at(const tk_refmap *m, size_t i);
/* Total order used by the map: bytes first, then length. */
int tk_refmap_keycmp(const void *a, size_t alen, const void *b, size_t blen);

#endif
