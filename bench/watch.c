/*
 * Watchers: the cost of a batch, the writer's throughput with watchers,
 * and the delivery latency. The state is 1,000,000 entities of the
 * workload's 5-attribute `set` events (bench/bench.h).
 *
 * watch_diff      two versions differing in k entities (k = 1, 100,
 *                 10,000, 100,000, each a `set` of an entity that exists):
 *                 the time of the sc_watch_next that returns the batch (the
 *                 diff, the filter, the changed attribute names) per changed
 *                 entity, averaged over enough rounds. Peer
 *                 ghashtable_compare: the same change set found by
 *                 comparing two hash-table copies of the state (id -> a
 *                 struct of the 5 values, updated_at and position): every
 *                 entry of the new copy looked up in the old one and
 *                 compared, then every entry of the old one looked up in
 *                 the new one for removals.
 * watch_writer    events per second of a writer applying batches of 100
 *                 random `set`s and promoting each: with 4 watchers keeping
 *                 up (each on its own thread, blocked in sc_watch_next
 *                 between promotes), and with 4 watchers of which one
 *                 stalls (it asks for a batch only after 1,000 promotes),
 *                 against the same writer with no watcher, in the same run.
 *                 The watchers' threads share the machine's cores with the
 *                 writer: watch_writer_cpu gives, for the same runs, the
 *                 writer thread's CPU time per event (peer: no watchers;
 *                 ratio peer / ours, 1 when the watchers cost the writer
 *                 nothing of its own work) and the cores the writer and the
 *                 watchers used, which tell a slower writer from a starved
 *                 one.
 * watch_writer_bound  the best ratio the machine allows: the writer's
 *                 CPU time per promote of 100 events with no watcher (w)
 *                 and the keeping-up watchers' CPU time per promote (d,
 *                 all four), measured above; on C cores a promote takes at
 *                 least max(w, (w + d) / C) of wall time, so the ratio is
 *                 at most w / that. of_bound: the keeping-up ratio as a
 *                 share of it.
 * watch_latency   from just before sc_cache_promote of a batch of 100 to
 *                 the return of the sc_watch_next (blocked, no timeout) that
 *                 delivers it, on another thread; the writer waits for each
 *                 delivery before the next batch. p50 and p99 over 2,000.
 *
 * Each throughput is the best of SC_BENCH_REPEAT runs (default 3).
 * SC_BENCH_ONLY=diff, writer or latency runs one part.
 */
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "statecache/cache.h"
#include "statecache/watch.h"

#define NENTITIES 1000000u

static char (*ids)[16];
static uint64_t position;

static sc_str id_of(unsigned i)
{
	return (sc_str){ids[i], strlen(ids[i])};
}

static void sc_set(sc_cache *cache, unsigned i, int64_t gen)
{
	bench_apply_set(cache, id_of(i), ++position, gen, gen + i);
}

static void promote(sc_cache *cache)
{
	if (sc_cache_promote(cache)) {
		fprintf(stderr, "promote failed\n");
		exit(1);
	}
}

static sc_watcher *watch_open(sc_cache *cache)
{
	sc_watcher *w;
	sc_error err;
	sc_watch_options o = {.max_held_bytes = SIZE_MAX};
	if (sc_watch_open(cache, &o, &w, &err)) {
		fprintf(stderr, "watch_open: %s\n", err.message);
		exit(1);
	}
	return w;
}

static const sc_watch_batch *watch_next(sc_watcher *w, int timeout_ms)
{
	const sc_watch_batch *b;
	sc_error err;
	if (sc_watch_next(w, timeout_ms, &b, &err)) {
		fprintf(stderr, "watch_next: %s\n", err.message);
		exit(1);
	}
	return b;
}

/* k distinct random entities into out[]. */
static void pick_distinct(unsigned *out, size_t k, uint64_t *r,
			  unsigned char *mark)
{
	for (size_t n = 0; n < k;) {
		unsigned i = (unsigned)(bench_rnd_next(r) % NENTITIES);
		if (mark[i])
			continue;
		mark[i] = 1;
		out[n++] = i;
	}
	for (size_t n = 0; n < k; n++)
		mark[out[n]] = 0;
}

/* ==== peer: two hash-table copies ========================================= */

typedef struct peer_state {
	int64_t count;
	double level;
	bool online;
	char owner[16];
	char zone[16];
	int64_t updated_at;
	uint64_t position;
} peer_state;

static void peer_fill(peer_state *p, unsigned i, int64_t gen, uint64_t pos)
{
	memset(p, 0, sizeof *p);
	p->count = gen + i;
	p->level = (double)gen / 3.0;
	p->online = gen & 1;
	memcpy(p->owner, "someone@example", 16);
	memcpy(p->zone, "eu-west-1", 10);
	p->updated_at = gen;
	p->position = pos;
}

static GHashTable *peer_table(void)
{
	return g_hash_table_new_full(g_str_hash, g_str_equal, NULL, free);
}

static void peer_put(GHashTable *t, unsigned i, int64_t gen, uint64_t pos)
{
	peer_state *p = g_hash_table_lookup(t, ids[i]);
	if (!p) {
		p = malloc(sizeof *p);
		g_hash_table_insert(t, ids[i], p);
	}
	peer_fill(p, i, gen, pos);
}

/* The changes from `a` to `b`: added and updated from b, removed from a. */
static size_t peer_compare(GHashTable *a, GHashTable *b)
{
	size_t changes = 0;
	GHashTableIter it;
	gpointer key, value;
	g_hash_table_iter_init(&it, b);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		peer_state *old = g_hash_table_lookup(a, key);
		if (!old || memcmp(old, value, sizeof *old))
			changes++;
	}
	g_hash_table_iter_init(&it, a);
	while (g_hash_table_iter_next(&it, &key, &value))
		if (!g_hash_table_lookup(b, key))
			changes++;
	return changes;
}

/* ==== watch_diff ========================================================== */

static void bench_diff(sc_cache *cache, GHashTable *old_t, GHashTable *new_t)
{
	const size_t ks[] = {1, 100, 10000, 100000};
	unsigned *pick = malloc(sizeof *pick * 100000);
	unsigned char *mark = calloc(NENTITIES, 1);
	uint64_t r = 77;
	int64_t gen = 1;
	sc_watcher *w = watch_open(cache);
	for (size_t x = 0; x < sizeof ks / sizeof ks[0]; x++) {
		size_t k = ks[x];
		/* Enough rounds for at least 100,000 changes timed, at least
		 * 3 rounds. */
		size_t rounds = k >= 33334 ? 3 : 100000 / k;
		if (rounds > 2000)
			rounds = 2000;
		double ours = 0;
		for (size_t round = 0; round < rounds; round++) {
			pick_distinct(pick, k, &r, mark);
			gen++;
			for (size_t n = 0; n < k; n++)
				sc_set(cache, pick[n], gen);
			promote(cache);
			double t0 = bench_now();
			const sc_watch_batch *b = watch_next(w, 0);
			ours += bench_now() - t0;
			if (b->nupdated != k || b->nadded || b->nremoved) {
				fprintf(stderr,
					"watch_diff: %zu updates for k=%zu\n",
					b->nupdated, k);
				exit(1);
			}
		}
		/* Peer: new_t differs from old_t in the last round's k. */
		pick_distinct(pick, k, &r, mark);
		for (size_t n = 0; n < k; n++)
			peer_put(new_t, pick[n], gen + 1, position + n + 1);
		double peer = 1e30;
		for (int rep = 0; rep < 2; rep++) {
			double t0 = bench_now();
			size_t found = peer_compare(old_t, new_t);
			double t = bench_now() - t0;
			peer = t < peer ? t : peer;
			if (found != k) {
				fprintf(stderr, "peer found %zu for k=%zu\n",
					found, k);
				exit(1);
			}
		}
		for (size_t n = 0; n < k; n++) {
			peer_state *o =
			    g_hash_table_lookup(old_t, ids[pick[n]]);
			peer_state *p =
			    g_hash_table_lookup(new_t, ids[pick[n]]);
			*p = *o;
		}
		double ns = ours * 1e9 / (double)(rounds * k);
		double peer_ns = peer * 1e9 / (double)k;
		printf("{\"name\":\"watch_diff\",\"entities\":%u,\"k\":%zu,"
		       "\"ns_per_change\":%.1f,\"peer\":\"ghashtable_compare\","
		       "\"peer_ns_per_change\":%.1f}\n",
		       NENTITIES, k, ns, peer_ns);
		fflush(stdout);
	}
	sc_watch_close(w);
	free(pick);
	free(mark);
}

/* ==== watch_writer ======================================================== */

#define WATCHERS    4
#define STALL_EVERY 1000 /* promotes between the stalled watcher's batches */

typedef struct run_shared {
	sc_cache *cache;
	_Atomic bool done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Promotes so far and the count the stalled watcher waits for: each
	 * side stores its own, then loads the other's (seq_cst), so the
	 * writer signals or the watcher sees the count. */
	_Atomic uint64_t promotes;
	_Atomic uint64_t target;
} run_shared;

typedef struct watcher_arg {
	run_shared *rs;
	sc_watcher *w;
	bool stalled;
	size_t batches;
} watcher_arg;

static void *watcher_main(void *p)
{
	watcher_arg *a = p;
	run_shared *rs = a->rs;
	uint64_t seen = 0;
	while (!atomic_load(&rs->done)) {
		if (a->stalled) {
			pthread_mutex_lock(&rs->lock);
			atomic_store(&rs->target, seen + STALL_EVERY);
			while (atomic_load(&rs->promotes) <
				   seen + STALL_EVERY &&
			       !atomic_load(&rs->done))
				pthread_cond_wait(&rs->cond, &rs->lock);
			seen = atomic_load(&rs->promotes);
			pthread_mutex_unlock(&rs->lock);
		}
		const sc_watch_batch *b = watch_next(a->w, 50);
		if (b->kind == SC_WATCH_CHANGES)
			a->batches++;
	}
	return NULL;
}

typedef struct writer_result {
	double events_per_s;
	double writer_cpu_ns; /* per event */
	double writer_cores, watcher_cores;
} writer_result;

static double cpu_seconds(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The writer's figures with `nwatch` watchers (the first one stalled when
 * `stall`). */
static writer_result writer_run(sc_cache *cache, int nwatch, bool stall,
				size_t events, uint64_t seed)
{
	run_shared rs = {.cache = cache};
	pthread_mutex_init(&rs.lock, NULL);
	pthread_cond_init(&rs.cond, NULL);
	atomic_init(&rs.target, UINT64_MAX);
	atomic_init(&rs.promotes, 0);
	watcher_arg args[WATCHERS];
	pthread_t th[WATCHERS];
	for (int i = 0; i < nwatch; i++) {
		args[i] = (watcher_arg){
		    .rs = &rs, .w = watch_open(cache), .stalled = stall && !i};
		pthread_create(&th[i], NULL, watcher_main, &args[i]);
	}
	uint64_t r = seed;
	double t0 = bench_now();
	double w0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
	double p0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (size_t done = 0; done < events;) {
		for (size_t k = 0; k < 100; k++, done++)
			sc_set(cache,
			       (unsigned)(bench_rnd_next(&r) % NENTITIES),
			       (int64_t)done);
		promote(cache);
		if (stall) {
			/* Tell the stalled watcher when its stall is over;
			 * a lock only then, not per promote. */
			uint64_t n = atomic_load_explicit(
					 &rs.promotes, memory_order_relaxed) +
				     1;
			atomic_store(&rs.promotes, n);
			if (n >= atomic_load(&rs.target)) {
				pthread_mutex_lock(&rs.lock);
				pthread_cond_signal(&rs.cond);
				pthread_mutex_unlock(&rs.lock);
			}
		}
	}
	double wall = bench_now() - t0;
	double wcpu = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - w0;
	double pcpu = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - p0;
	writer_result res = {
	    .events_per_s = (double)events / wall,
	    .writer_cpu_ns = wcpu * 1e9 / (double)events,
	    .writer_cores = wcpu / wall,
	    .watcher_cores = (pcpu - wcpu) / wall,
	};
	pthread_mutex_lock(&rs.lock);
	atomic_store(&rs.done, true);
	pthread_cond_broadcast(&rs.cond);
	pthread_mutex_unlock(&rs.lock);
	for (int i = 0; i < nwatch; i++) {
		pthread_join(th[i], NULL);
		sc_watch_close(args[i].w);
	}
	sc_cache_reclaim(cache);
	pthread_mutex_destroy(&rs.lock);
	pthread_cond_destroy(&rs.cond);
	return res;
}

static void bench_writer(sc_cache *cache, int repeat)
{
	const size_t events = 1000000;
	writer_result best[3] = {{0}};
	for (int k = 0; k < repeat; k++) {
		uint64_t seed = 500u + (unsigned)k;
		writer_result x[3] = {
		    writer_run(cache, 0, false, events, seed),
		    writer_run(cache, WATCHERS, false, events, seed),
		    writer_run(cache, WATCHERS, true, events, seed),
		};
		for (int m = 0; m < 3; m++)
			if (x[m].events_per_s > best[m].events_per_s)
				best[m] = x[m];
	}
	const char *modes[3] = {"none", "keeping_up", "stalled"};
	const writer_result *none = &best[0];
	/* The bound the machine sets: per promote of 100 events the writer
	 * needs w CPU seconds (its own, with no watcher) and the watchers
	 * keeping up need d (measured in that run); on `cores` cores a
	 * promote takes at least max(w, (w + d) / cores) of wall time. */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	double w = none->writer_cpu_ns * 100 / 1e3;
	double d = best[1].watcher_cores * 1e6 /
		   (best[1].events_per_s / 100); /* us per promote */
	double wall = (w + d) / (double)(cores > 0 ? cores : 1);
	if (wall < w)
		wall = w;
	printf("{\"name\":\"watch_writer_bound\",\"watchers\":%d,"
	       "\"cores\":%ld,\"writer_us_per_promote\":%.1f,"
	       "\"watchers_us_per_promote\":%.1f,\"bound_ratio\":%.3f,"
	       "\"keeping_up_ratio\":%.3f,\"of_bound\":%.3f}\n",
	       WATCHERS, cores, w, d, w / wall,
	       best[1].events_per_s / none->events_per_s,
	       best[1].events_per_s / none->events_per_s / (w / wall));
	for (int m = 1; m < 3; m++)
		printf("{\"name\":\"watch_writer\",\"watchers\":%d,\"mode\":"
		       "\"%s\",\"events_per_s\":%.0f,\"peer\":\"no_watchers\","
		       "\"peer_events_per_s\":%.0f,\"ratio\":%.3f}\n",
		       WATCHERS, modes[m], best[m].events_per_s,
		       none->events_per_s,
		       best[m].events_per_s / none->events_per_s);
	for (int m = 1; m < 3; m++)
		printf("{\"name\":\"watch_writer_cpu\",\"watchers\":%d,"
		       "\"mode\":\"%s\",\"writer_cpu_ns_per_event\":%.0f,"
		       "\"peer\":\"no_watchers\","
		       "\"peer_writer_cpu_ns_per_event\":%.0f,\"ratio\":%.3f,"
		       "\"writer_cores\":%.2f,\"watcher_cores\":%.2f,"
		       "\"peer_writer_cores\":%.2f}\n",
		       WATCHERS, modes[m], best[m].writer_cpu_ns,
		       none->writer_cpu_ns,
		       none->writer_cpu_ns / best[m].writer_cpu_ns,
		       best[m].writer_cores, best[m].watcher_cores,
		       none->writer_cores);
	fflush(stdout);
}

/* ==== watch_latency ======================================================= */

#define LAT_SAMPLES 2000

typedef struct lat_shared {
	sc_watcher *w;
	_Atomic uint64_t t0_ns; /* before the promote of the version */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t delivered; /* under lock: version delivered */
	double lat_us[LAT_SAMPLES];
	size_t n;
} lat_shared;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *latency_watcher(void *p)
{
	lat_shared *ls = p;
	while (ls->n < LAT_SAMPLES) {
		const sc_watch_batch *b = watch_next(ls->w, -1);
		uint64_t t1 = now_ns();
		if (b->kind != SC_WATCH_CHANGES)
			continue;
		uint64_t t0 = atomic_load(&ls->t0_ns);
		ls->lat_us[ls->n++] = (double)(t1 - t0) / 1e3;
		pthread_mutex_lock(&ls->lock);
		ls->delivered = b->to_version;
		pthread_cond_signal(&ls->cond);
		pthread_mutex_unlock(&ls->lock);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void bench_latency(sc_cache *cache)
{
	static lat_shared ls;
	ls.w = watch_open(cache);
	pthread_mutex_init(&ls.lock, NULL);
	pthread_cond_init(&ls.cond, NULL);
	pthread_t th;
	pthread_create(&th, NULL, latency_watcher, &ls);
	uint64_t r = 9;
	for (size_t s = 0; s < LAT_SAMPLES; s++) {
		for (size_t k = 0; k < 100; k++)
			sc_set(cache,
			       (unsigned)(bench_rnd_next(&r) % NENTITIES),
			       (int64_t)s);
		atomic_store(&ls.t0_ns, now_ns());
		promote(cache);
		sc_cache_stats st;
		sc_cache_stats_get(cache, &st);
		pthread_mutex_lock(&ls.lock);
		while (ls.delivered < st.version)
			pthread_cond_wait(&ls.cond, &ls.lock);
		pthread_mutex_unlock(&ls.lock);
	}
	pthread_join(th, NULL);
	sc_watch_close(ls.w);
	qsort(ls.lat_us, LAT_SAMPLES, sizeof ls.lat_us[0], cmp_double);
	printf("{\"name\":\"watch_latency\",\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
	       ls.lat_us[LAT_SAMPLES / 2], ls.lat_us[LAT_SAMPLES * 99 / 100]);
	fflush(stdout);
	pthread_mutex_destroy(&ls.lock);
	pthread_cond_destroy(&ls.cond);
}

/* ==== main ================================================================ */

int main(void)
{
	int repeat = bench_repeat();
	ids = bench_dev_ids(NENTITIES);

	sc_cache *cache;
	sc_error err;
	sc_cache_options co = {.max_readers = 32};
	if (sc_cache_create(&co, &cache, &err)) {
		fprintf(stderr, "create: %s\n", err.message);
		return 1;
	}
	for (unsigned i = 0; i < NENTITIES; i++)
		sc_set(cache, i, 0);
	promote(cache);

	/* The peer's two copies of the same state. */
	GHashTable *old_t = peer_table(), *new_t = peer_table();
	for (unsigned i = 0;
	     i < NENTITIES && (!getenv("SC_BENCH_ONLY") ||
			       !strcmp(getenv("SC_BENCH_ONLY"), "diff"));
	     i++) {
		peer_put(old_t, i, 0, i + 1);
		peer_put(new_t, i, 0, i + 1);
	}
	const char *only = getenv("SC_BENCH_ONLY");
	if (!only || !strcmp(only, "diff"))
		bench_diff(cache, old_t, new_t);
	g_hash_table_destroy(old_t);
	g_hash_table_destroy(new_t);
	if (!only || !strcmp(only, "writer"))
		bench_writer(cache, repeat);
	if (!only || !strcmp(only, "latency"))
		bench_latency(cache);
	sc_cache_destroy(cache);
	free(ids);
	return 0;
}
