/*
 * Helpers the benchmark programs share: a monotonic clock, a small, fast
 * pseudo-random generator (the same stream for ours and the peers), and
 * the workload's `set` event of 5 attributes.
 */
#ifndef STATECACHE_BENCH_BENCH_H
#define STATECACHE_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "statecache/cache.h"

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: the next value of the stream in *s (never 0). */
static inline uint64_t bench_rnd_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Apply the workload's event to `cache`: a `set` of 5 attributes (count,
 * level, online, owner, zone) on `id` at `position`, made from `gen` and
 * `count`. Exits on failure. */
static inline void bench_apply_set(sc_cache *cache, sc_str id,
				   uint64_t position, int64_t gen,
				   int64_t count)
{
	sc_attr a[5] = {
	    {.name = {"count", 5}, .value.type = SC_VALUE_INT},
	    {.name = {"level", 5}, .value.type = SC_VALUE_DOUBLE},
	    {.name = {"online", 6}, .value.type = SC_VALUE_BOOL},
	    {.name = {"owner", 5}, .value.type = SC_VALUE_STRING},
	    {.name = {"zone", 4}, .value.type = SC_VALUE_STRING},
	};
	a[0].value.u.i = count;
	a[1].value.u.d = (double)gen / 3.0;
	a[2].value.u.b = gen & 1;
	a[3].value.u.s = (sc_str){"someone@example", 15};
	a[4].value.u.s = (sc_str){"eu-west-1", 9};
	sc_event ev = {.position = position,
		       .entity = id,
		       .type = SC_EVENT_SET,
		       .attrs = a,
		       .nattrs = 5,
		       .time = gen};
	sc_error err;
	if (sc_cache_apply(cache, &ev, &err)) {
		fprintf(stderr, "apply: %s\n", err.message);
		exit(1);
	}
}

#endif
