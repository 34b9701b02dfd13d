/*
 * Helpers the benchmark programs share: a monotonic clock, a small, fast
 * pseudo-random generator (the same stream for ours and the peers), and
 * the workload's `set` events of 5 attributes, the run count, and a new
 * store of a given durability.
 */
#ifndef STATECACHE_BENCH_BENCH_H
#define STATECACHE_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "statecache/cache.h"
#include "statecache/store.h"

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

/* A generated `set` event of 5 attributes with its own storage: `ev`
 * points into `attrs`, `id` and `str`, so it is valid while the struct is. */
typedef struct bench_gen_event {
	sc_event ev;
	sc_attr attrs[5];
	char id[24];
	char str[24];
} bench_gen_event;

/* Fill *g with event i: entity "entity-NNNNNNNN" ((i * 2654435761) % nent),
 * attributes count, status, temp, online and zone, time and actor set; no
 * position, tags or partition. nent must be > 0. */
static inline void bench_gen_set(uint64_t i, uint64_t nent, bench_gen_event *g)
{
	uint64_t e = (i * 2654435761u) % nent;
	int n = snprintf(g->id, sizeof g->id, "entity-%08llu",
			 (unsigned long long)e);
	int sn = snprintf(g->str, sizeof g->str, "status-%llu",
			  (unsigned long long)(i % 7));
	g->attrs[0] =
	    (sc_attr){{"count", 5}, {.type = SC_VALUE_INT, .u.i = (int64_t)i}};
	g->attrs[1] =
	    (sc_attr){{"status", 6},
		      {.type = SC_VALUE_STRING, .u.s = {g->str, (size_t)sn}}};
	g->attrs[2] = (sc_attr){
	    {"temp", 4},
	    {.type = SC_VALUE_DOUBLE, .u.d = (double)(i % 1000) / 10}};
	g->attrs[3] =
	    (sc_attr){{"online", 6}, {.type = SC_VALUE_BOOL, .u.b = i & 1}};
	g->attrs[4] = (sc_attr){
	    {"zone", 4}, {.type = SC_VALUE_STRING, .u.s = {"eu-west", 7}}};
	memset(&g->ev, 0, sizeof g->ev);
	g->ev.entity = (sc_str){g->id, (size_t)n};
	g->ev.type = SC_EVENT_SET;
	g->ev.attrs = g->attrs;
	g->ev.nattrs = 5;
	g->ev.time = (int64_t)(1700000000000000000ll + (int64_t)i);
	g->ev.actor = (sc_str){"bench", 5};
}

/* The number of runs to take the best of: SC_BENCH_REPEAT if it is a
 * positive number, else 3. */
static inline int bench_repeat(void)
{
	const char *s = getenv("SC_BENCH_REPEAT");
	return s && atoi(s) > 0 ? atoi(s) : 3;
}

/* n ids "dev-NNNNNNN" (i = 0..n-1) in one malloc'd array the caller frees;
 * exits if memory runs out. */
static inline char (*bench_dev_ids(unsigned n))[16]
{
	char(*ids)[16] = malloc(sizeof *ids * n);
	if (!ids) {
		fprintf(stderr, "out of memory for %u ids\n", n);
		exit(1);
	}
	for (unsigned i = 0; i < n; i++)
		snprintf(ids[i], sizeof ids[i], "dev-%07u", i);
	return ids;
}

/* Open (creating) the store in `dir` with durability `dur` and a 1 GiB
 * initial map. Exits on failure. */
static inline sc_store *bench_store_open(const char *dir, sc_durability dur)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = dur;
	o.map_size = (size_t)1 << 30;
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err)) {
		fprintf(stderr, "bench: sc_store_open %s: %s\n", dir,
			err.message);
		exit(1);
	}
	return s;
}

#endif
