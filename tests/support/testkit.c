/*
 * The test kit's seed and generator (testkit.h).
 */
#include "tests/support/testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t tk_seed(const char *program)
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
	fprintf(stderr, "%s: seed %llu (rerun with SC_TEST_SEED=%llu)\n",
		program, (unsigned long long)seed, (unsigned long long)seed);
	return seed;
}

uint64_t tk_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t tk_rand_below(uint64_t *state, uint64_t n)
{
	return tk_rand(state) % n;
}
