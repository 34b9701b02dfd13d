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
 * Output: one JSON object per batch size. Each figure is the best of
 * SC_BENCH_REPEAT runs (default 3) to damp noise from other processes.
 * SC_BENCH_BATCH=n runs only batch size n.
 */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
	int repeat = 3;
	const char *s = getenv("SC_BENCH_REPEAT");
	if (s && atoi(s) > 0)
		repeat = atoi(s);
	ids = malloc(sizeof *ids * NENTITIES);
	for (unsigned i = 0; i < NENTITIES; i++)
		snprintf(ids[i], sizeof ids[i], "dev-%07u", i);

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
	return 0;
}
