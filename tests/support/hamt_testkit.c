/*
 * HAMT test helpers. See hamt_testkit.h.
 */
#include "tests/support/hamt_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

sc_hamt_key *tk_hamt_key_new(tk_hamt_counter *c, const void *bytes, size_t len)
{
	sc_hamt_key *k = malloc(sizeof *k + len + 1);
	if (!k) {
		fprintf(stderr, "tk_hamt_key_new: out of memory\n");
		abort();
	}
	k->len = (uint32_t)len;
	k->reserved = 0;
	if (len)
		memcpy(k->bytes, bytes, len);
	k->bytes[len] = '\0';
	if (c)
		c->made++;
	return k;
}

sc_hamt_key *tk_hamt_key_str(tk_hamt_counter *c, const char *s)
{
	return tk_hamt_key_new(c, s, strlen(s));
}

void tk_hamt_release(void *ctx, const sc_hamt_key *key, void *value)
{
	(void)value;
	tk_hamt_counter *c = ctx;
	if (c)
		c->released++;
	free((void *)(uintptr_t)key);
}

sc_hamt_options tk_hamt_options(tk_hamt_counter *c, sc_hamt_hash_fn hash)
{
	sc_hamt_options o = {0};
	o.seed = 0x5eed5eed12345678ull;
	o.release = tk_hamt_release;
	o.release_ctx = c;
	o.hash = hash;
	return o;
}

uint64_t tk_hamt_hash_const(const void *key, size_t len, uint64_t seed)
{
	(void)key;
	(void)len;
	(void)seed;
	return 0x0123456789abcdefull;
}

uint64_t tk_hamt_hash_3bit(const void *key, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(key, len, seed) & 7u;
}

uint64_t tk_hamt_hash_spread4(const void *key, size_t len, uint64_t seed)
{
	uint64_t h = XXH3_64bits_withSeed(key, len, seed);
	return (h & 1u) | ((h >> 1 & 1u) << 21) | ((h >> 2 & 1u) << 42) |
	       ((h >> 3 & 1u) << 63);
}
