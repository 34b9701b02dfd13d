/*
 * HAMT test helpers. See hamt_testkit.h.
 */
#include "tests/support/hamt_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

sc_hamt_key *hamt_tk_key_new(hamt_tk_counter *c, const void *bytes, size_t len)
{
	sc_hamt_key *k = malloc(sizeof *k + len + 1);
	if (!k) {
		fprintf(stderr, "hamt_tk_key_new: out of memory\n");
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

sc_hamt_key *hamt_tk_key_str(hamt_tk_counter *c, const char *s)
{
	return hamt_tk_key_new(c, s, strlen(s));
}

void hamt_tk_release(void *ctx, const sc_hamt_key *key, void *value)
{
	(void)value;
	hamt_tk_counter *c = ctx;
	if (c)
		c->released++;
	free((void *)(uintptr_t)key);
}

sc_hamt_options hamt_tk_options(hamt_tk_counter *c, sc_hamt_hash_fn hash)
{
	sc_hamt_options o = {0};
	o.seed = 0x5eed5eed12345678ull;
	o.release = hamt_tk_release;
	o.release_ctx = c;
	o.hash = hash;
	return o;
}

uint64_t hamt_tk_hash_const(const void *key, size_t len, uint64_t seed)
{
	(void)key;
	(void)len;
	(void)seed;
	return 0x0123456789abcdefull;
}

uint64_t hamt_tk_hash_3bit(const void *key, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(key, len, seed) & 7u;
}

uint64_t hamt_tk_hash_spread4(const void *key, size_t len, uint64_t seed)
{
	uint64_t h = XXH3_64bits_withSeed(key, len, seed);
	return (h & 1u) | ((h >> 1 & 1u) << 21) | ((h >> 2 & 1u) << 42) |
	       ((h >> 3 & 1u) << 63);
}

uint64_t hamt_tk_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t hamt_tk_seed(const char *test)
{
	const char *env = getenv("SC_TEST_SEED");
	uint64_t seed;
	if (env && *env) {
		seed = strtoull(env, NULL, 0);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed =
		    (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
	}
	fprintf(stderr, "%s: seed %llu (rerun with SC_TEST_SEED=%llu)\n", test,
		(unsigned long long)seed, (unsigned long long)seed);
	return seed;
}
