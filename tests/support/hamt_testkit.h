/*
 * Helpers shared by the HAMT tests: key objects and a release hook that
 * counts and frees them.
 */
#ifndef STATECACHE_TESTS_HAMT_TESTKIT_H
#define STATECACHE_TESTS_HAMT_TESTKIT_H

#include <stddef.h>
#include <stdint.h>

#include "statecache/hamt.h"
#include "tests/support/testkit.h"

/* Counters of the release hook; pass a pointer as release_ctx. */
typedef struct tk_hamt_counter {
	size_t released;
	size_t made; /* keys made by tk_hamt_key_new with this counter */
} tk_hamt_counter;

/* A key object holding a copy of bytes[0..len) (malloc; aborts on OOM).
 * `c` (may be NULL) counts it as made. */
sc_hamt_key *tk_hamt_key_new(tk_hamt_counter *c, const void *bytes, size_t len);
/* Same, with the bytes of a C string. */
sc_hamt_key *tk_hamt_key_str(tk_hamt_counter *c, const char *s);
/* Release hook: counts in ctx (a tk_hamt_counter) and frees the key. */
void tk_hamt_release(void *ctx, const sc_hamt_key *key, void *value);
/* Options with tk_hamt_release, counter `c`, a fixed seed and `hash`. */
sc_hamt_options tk_hamt_options(tk_hamt_counter *c, sc_hamt_hash_fn hash);

/* Hashes that force collisions: constant, and only the low 3 bits of
 * XXH3 (8 distinct values). */
uint64_t tk_hamt_hash_const(const void *key, size_t len, uint64_t seed);
uint64_t tk_hamt_hash_3bit(const void *key, size_t len, uint64_t seed);
/* Hash with only 4 bits, spread over bits 0, 21, 42 and 63 so that the
 * trie splits near the root, in the middle and at the last level. */
uint64_t tk_hamt_hash_spread4(const void *key, size_t len, uint64_t seed);

#endif
