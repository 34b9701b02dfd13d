/*
 * Helpers every benchmark program uses: a monotonic clock and a small,
 * fast pseudo-random generator (the same stream for ours and the peers).
 */
#ifndef STATECACHE_BENCH_BENCH_H
#define STATECACHE_BENCH_BENCH_H

#include <stdint.h>
#include <time.h>

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

#endif
