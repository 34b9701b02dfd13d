/*
 * Apply throughput: `set` events of 5 attributes over 1,000,000 entities,
 * in batches of 1, 100 and 10,000 events, promoting after each batch
 * (promote includes reclaiming the superseded version).
 *
 * Peer, measured in the same run on the same event sequence:
 *   ghashtable_inplace  a GHashTable of malloc'd states, each set updating
 *                       the state in place (no versions, no readers
 *                       possible while writing: the floor of what an
 *                       apply costs).
 *
 * apply_lanes: the same events in batches of 10,000 through
 * sc_cache_apply_batch, in a cache with 2 apply lanes (then 4 and 8 where
 * there are that many cores) against one with 1 lane (one_lane: every
 * event on the calling thread), both promoting after each batch; only
 * the apply and the promote are timed, not making the batch.
 * parallel_floor is this machine's own speedup with as many threads, in
 * the same rounds, on a trivially parallel memory-bound loop (each thread
 * sums its own 256 MiB array at random indexes): on a VM whose vCPUs do
 * not give that many cores' worth, it is the most any lanes figure can
 * get.
 *
 * apply_lanes_partitions: the same, with the 1,000,000 entities spread
 * over 100 named partitions (entity i in partition i % 100, so a batch
 * names every partition about 100 times: each partition's tree is split
 * among the lanes as the default partition's is), then over 1,000 (about
 * 10 times: with 2 threads, each partition goes whole to one lane).
 *
 * Output: one JSON object per batch size, then apply_lanes, then
 * apply_lanes_partitions. Each figure is
 * the best of SC_BENCH_REPEAT runs (default 3) to damp noise from other
 * processes. SC_BENCH_BATCH=n runs only batch size n (apply_lanes with
 * 10000).
 */
#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "statecache/cache.h"

#define NENTITIES 1000000u

static char (*ids)[16];

/* ==== statecache ========================================================== */

static uint64_t position;

static void sc_set(sc_cache *cache, unsigned i, int64_t gen)
{
	bench_apply_set(cache, (sc_str){ids[i], strlen(ids[i])}, ++position,
			gen, gen + i);
}

static double sc_run(sc_cache *cache, size_t batch, size_t events,
		     uint64_t seed)
{
	uint64_t r = seed;
	double t0 = bench_now();
	for (size_t done = 0; done < events;) {
		for (size_t k = 0; k < batch; k++, done++)
			sc_set(cache,
			       (unsigned)(bench_rnd_next(&r) % NENTITIES),
			       (int64_t)done);
		if (sc_cache_promote(cache)) {
			fprintf(stderr, "promote failed\n");
			exit(1);
		}
	}
	return (double)events / (bench_now() - t0);
}

/* ==== apply lanes ========================================================= */

#define LANES_BATCH 10000
/* Most lanes measured (a cache has at most 8). */
#define SC_LANES_BENCH_MAX 8

typedef struct lanes_batch {
	sc_event ev[LANES_BATCH];
	sc_attr attrs[LANES_BATCH][5];
} lanes_batch;

/* Named partitions of apply_lanes_partitions. */
#define NPARTS_MAX 1000
static char part_names[NPARTS_MAX][8];

/* Event k of the batch: a set (as sc_set makes it) of entity i, in
 * partition i % nparts (nparts 0: the default partition). */
static void lanes_event(lanes_batch *b, size_t k, unsigned i, int64_t gen,
			unsigned nparts)
{
	sc_attr *a = b->attrs[k];
	a[0] = (sc_attr){.name = {"count", 5},
			 .value.type = SC_VALUE_INT,
			 .value.u.i = gen + i};
	a[1] = (sc_attr){.name = {"level", 5},
			 .value.type = SC_VALUE_DOUBLE,
			 .value.u.d = (double)gen / 3.0};
	a[2] = (sc_attr){.name = {"online", 6},
			 .value.type = SC_VALUE_BOOL,
			 .value.u.b = gen & 1};
	a[3] = (sc_attr){.name = {"owner", 5},
			 .value.type = SC_VALUE_STRING,
			 .value.u.s = {"someone@example", 15}};
	a[4] = (sc_attr){.name = {"zone", 4},
			 .value.type = SC_VALUE_STRING,
			 .value.u.s = {"eu-west-1", 9}};
	b->ev[k] = (sc_event){.position = ++position,
			      .entity = {ids[i], strlen(ids[i])},
			      .type = SC_EVENT_SET,
			      .attrs = a,
			      .nattrs = 5,
			      .time = gen};
	if (nparts) {
		const char *p = part_names[i % nparts];
		b->ev[k].partition = (sc_str){p, strlen(p)};
	}
}

static void lanes_apply(sc_cache *cache, lanes_batch *b, size_t n)
{
	sc_error err = {0};
	if (sc_cache_apply_batch(cache, b->ev, n, NULL, &err) ||
	    sc_cache_promote(cache)) {
		fprintf(stderr, "apply_batch: %s\n", err.message);
		exit(1);
	}
}

/* Batches of LANES_BATCH set events (as sc_set makes them) through
 * sc_cache_apply_batch, a promote after each. Only the apply and the
 * promote are timed: making the batch is the input's cost, not the
 * cache's (it leaves the batch's ids in the CPU cache, as decoding them
 * would). */
static double lanes_run(sc_cache *cache, lanes_batch *b, size_t events,
			uint64_t seed, unsigned nparts)
{
	uint64_t r = seed;
	double t = 0;
	for (size_t done = 0; done < events;) {
		for (size_t k = 0; k < LANES_BATCH; k++, done++)
			lanes_event(b, k,
				    (unsigned)(bench_rnd_next(&r) % NENTITIES),
				    (int64_t)done, nparts);
		double t0 = bench_now();
		lanes_apply(cache, b, LANES_BATCH);
		t += bench_now() - t0;
	}
	return (double)events / t;
}

/* ---- the machine's own parallel floor ---- */

#define FLOOR_WORDS ((size_t)32 << 20) /* 256 MiB of uint64_t */
#define FLOOR_STEPS ((size_t)20 << 20)

typedef struct floor_arg {
	uint64_t *a;
	uint64_t sum;
} floor_arg;

static void *floor_walk(void *p)
{
	floor_arg *f = p;
	uint64_t x = 88172645463325252ull, sum = 0;
	for (size_t i = 0; i < FLOOR_STEPS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		sum += f->a[x & (FLOOR_WORDS - 1)];
	}
	f->sum = sum;
	return NULL;
}

/* The floor's arrays, one per thread. */
static floor_arg *floor_make(unsigned threads)
{
	floor_arg *f = calloc(threads, sizeof *f);
	for (unsigned t = 0; f && t < threads; t++) {
		f[t].a = malloc(FLOOR_WORDS * sizeof(uint64_t));
		if (!f[t].a)
			break;
		for (size_t i = 0; i < FLOOR_WORDS; i++)
			f[t].a[i] = i * 2654435761u;
	}
	if (!f || !f[threads - 1].a) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	return f;
}

/* Seconds floor_walk takes on 1 thread (*one) and on `threads` threads at
 * once (*all). */
static void floor_time(floor_arg *f, unsigned threads, double *one, double *all)
{
	double t0 = bench_now();
	floor_walk(&f[0]);
	*one = bench_now() - t0;
	pthread_t th[SC_LANES_BENCH_MAX];
	t0 = bench_now();
	for (unsigned t = 1; t < threads; t++)
		pthread_create(&th[t], NULL, floor_walk, &f[t]);
	floor_walk(&f[0]);
	for (unsigned t = 1; t < threads; t++)
		pthread_join(th[t], NULL);
	*all = bench_now() - t0;
}

/* A cache of `lanes` lanes holding every entity (in its partition). */
static sc_cache *lanes_cache(unsigned lanes, lanes_batch *b, unsigned nparts)
{
	sc_cache_options o = {.lanes = lanes};
	sc_cache *cache;
	sc_error err;
	if (sc_cache_create(&o, &cache, &err)) {
		fprintf(stderr, "create: %s\n", err.message);
		exit(1);
	}
	if (!nparts) {
		for (unsigned i = 0; i < NENTITIES; i++)
			sc_set(cache, i, 0);
		sc_cache_promote(cache);
		return cache;
	}
	for (unsigned i = 0; i < NENTITIES; i += LANES_BATCH) {
		for (unsigned k = 0; k < LANES_BATCH; k++)
			lanes_event(b, k, i + k, 0, nparts);
		lanes_apply(cache, b, LANES_BATCH);
	}
	return cache;
}

/* `lanes` lanes against one, and the machine's `lanes`-thread floor,
 * measured in turn in each of `repeat` rounds (each figure the best).
 * nparts: the entities are in that many named partitions (0: in the
 * default one). */
static void lanes_bench(int repeat, unsigned lanes, unsigned nparts)
{
	lanes_batch *b = malloc(sizeof *b);
	if (!b) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	sc_cache *many = lanes_cache(lanes, b, nparts),
		 *one = lanes_cache(1, b, nparts);
	floor_arg *f = floor_make(lanes);
	double x = 0, y = 0, f1 = 1e30, fn = 1e30;
	const size_t events = 500000;
	for (int k = 0; k < repeat; k++) {
		uint64_t seed = 7000u + (unsigned)k;
		double ys = lanes_run(one, b, events, seed, nparts);
		double xs = lanes_run(many, b, events, seed, nparts);
		x = xs > x ? xs : x;
		y = ys > y ? ys : y;
		double a, c;
		floor_time(f, lanes, &a, &c);
		f1 = a < f1 ? a : f1;
		fn = c < fn ? c : fn;
	}
	sc_cache_destroy(many);
	sc_cache_destroy(one);
	for (unsigned t = 0; t < lanes; t++)
		free(f[t].a);
	free(f);
	free(b);
	/* The line's name, and its partitions when there are any. */
	char name[64];
	if (nparts)
		snprintf(name, sizeof name,
			 "\"apply_lanes_partitions\",\"partitions\":%u",
			 nparts);
	else
		snprintf(name, sizeof name, "\"apply_lanes\"");
	printf("{\"name\":%s,\"batch\":%d,\"lanes\":%u,"
	       "\"events_per_s\":%.0f,\"peer\":\"one_lane\","
	       "\"peer_events_per_s\":%.0f,\"ratio\":%.3f,"
	       "\"parallel_floor\":%.3f}\n",
	       name, LANES_BATCH, lanes, x, y, y > 0 ? x / y : 0.0,
	       (double)lanes * f1 / fn);
	fflush(stdout);
}

/* ==== peer ================================================================ */

typedef struct peer_state {
	int64_t count;
	double level;
	bool online;
	char owner[16];
	char zone[16];
	int64_t updated_at;
	uint64_t position;
} peer_state;

static void gh_set(GHashTable *t, unsigned i, int64_t gen)
{
	peer_state *p = g_hash_table_lookup(t, ids[i]);
	if (!p) {
		p = calloc(1, sizeof *p);
		g_hash_table_insert(t, ids[i], p);
	}
	p->count = gen + i;
	p->level = (double)gen / 3.0;
	p->online = gen & 1;
	memcpy(p->owner, "someone@example", 16);
	memcpy(p->zone, "eu-west-1", 10);
	p->updated_at = gen;
	p->position = ++position;
}

static double gh_run(GHashTable *t, size_t batch, size_t events, uint64_t seed)
{
	uint64_t r = seed;
	double t0 = bench_now();
	for (size_t done = 0; done < events;) {
		for (size_t k = 0; k < batch; k++, done++)
			gh_set(t, (unsigned)(bench_rnd_next(&r) % NENTITIES),
			       (int64_t)done);
	}
	return (double)events / (bench_now() - t0);
}

int main(void)
{
	int repeat = bench_repeat();
	ids = bench_dev_ids(NENTITIES);

	sc_cache *cache;
	sc_error err;
	if (sc_cache_create(NULL, &cache, &err)) {
		fprintf(stderr, "create: %s\n", err.message);
		return 1;
	}
	for (unsigned i = 0; i < NENTITIES; i++)
		sc_set(cache, i, 0);
	sc_cache_promote(cache);
	GHashTable *t =
	    g_hash_table_new_full(g_str_hash, g_str_equal, NULL, free);
	for (unsigned i = 0; i < NENTITIES; i++)
		gh_set(t, i, 0);

	const size_t batches[] = {1, 100, 10000};
	const size_t events[] = {200000, 500000, 500000};
	const char *only = getenv("SC_BENCH_BATCH"); /* one batch size */
	for (int b = 0; b < 3; b++) {
		if (only && (size_t)atol(only) != batches[b])
			continue;
		double x = 0, y = 0;
		for (int k = 0; k < repeat; k++) {
			uint64_t seed = 1000u * (unsigned)b + (unsigned)k + 1;
			double xs = sc_run(cache, batches[b], events[b], seed);
			double ys = gh_run(t, batches[b], events[b], seed);
			x = xs > x ? xs : x;
			y = ys > y ? ys : y;
		}
		printf(
		    "{\"name\":\"apply\",\"batch\":%zu,\"events_per_s\":%.0f,"
		    "\"peer\":\"ghashtable_inplace\",\"peer_events_per_s\":"
		    "%.0f,\"ratio\":%.3f}\n",
		    batches[b], x, y, y > 0 ? x / y : 0.0);
		fflush(stdout);
	}
	sc_cache_destroy(cache);
	g_hash_table_destroy(t);
	if (!only || atol(only) == LANES_BATCH) {
		/* 2 lanes, then 4 and 8 where the cores are there. */
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		for (unsigned l = 2; l <= SC_LANES_BENCH_MAX; l *= 2)
			if (l == 2 || (long)l <= ncpu)
				lanes_bench(repeat, l, 0);
		for (unsigned p = 0; p < NPARTS_MAX; p++)
			snprintf(part_names[p], sizeof part_names[p], "t%u", p);
		/* With 2 threads, 100 partitions: each split among the
		 * lanes; 1,000: each taken whole by one lane. */
		for (unsigned np = 100; np <= NPARTS_MAX; np *= 10)
			for (unsigned l = 2; l <= SC_LANES_BENCH_MAX; l *= 2)
				if (l == 2 || (long)l <= ncpu)
					lanes_bench(repeat, l, np);
	}
	return 0;
}
