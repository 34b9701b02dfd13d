/*
 * Reader throughput: lookups per second by 1 and 2 reader threads (then 4,
 * 8, ... up to the cores online) over 1,000,000 entities with 5 attributes,
 * with the writer idle and with the writer applying and promoting batches of
 * 100 `set` events continuously.
 *
 * Peers, measured in the same run on the same keys and access pattern:
 *   rwlock_ghashtable  a GHashTable of malloc'd states behind a
 *                      writer-preferring pthread_rwlock (readers take the
 *                      read lock per lookup; the writer takes the write
 *                      lock per batch);
 *   cds_lfht           liburcu's lock-free hash table with urcu-memb
 *                      (readers in read-side sections; the writer replaces
 *                      nodes and frees the old ones with call_rcu).
 * Every lookup reads one attribute of the state it finds.
 *
 * Every side's writer applies the same batches (the same entity sequence,
 * the same 5 attributes per set) and runs flat out, as fast as its design
 * lets it; its batch rate is reported, not fixed.
 *
 * Output: one JSON object per (threads, writer, peer) line, with the
 * writer's batch rate of each side when it is busy (peers whose writer
 * waits, e.g. in synchronize_rcu, or blocks readers, leave more CPU to
 * their readers) and where the time went: reader_cores and writer_cores
 * are CPU seconds per second of each side's readers and writer (on 2
 * cores, 2 readers and a writer that never blocks them share the cores;
 * other processes on the machine show up here too), lookup_cpu_ns the
 * readers' CPU time per lookup, the figure least disturbed by other load.
 * Then one readers_busy_vs_idle and one readers_paced_vs_idle line per
 * thread count and implementation.
 *
 * Writer modes: idle; busy (flat out: each side's writer applies batches
 * as fast as it can, so a faster writer does more work and, with 2 readers
 * on 2 cores, takes its share of the cores from them whatever it costs per
 * batch); paced (every side's writer starts SC_BENCH_PACED batches per
 * second, default 500, the same write load for all: what readers lose to
 * a given write rate).
 * Each figure is the best of SC_BENCH_REPEAT (default 3) interleaved
 * measurements of SC_BENCH_SECONDS (default 0.5) each, to damp noise from
 * other processes.
 *
 * Latency: one reader thread makes lookups on a fixed schedule
 * (SC_BENCH_LATENCY_RATE per second, default 5,000, as requests would
 * arrive; sleeping between them) for SC_BENCH_LATENCY_SECONDS (default 2)
 * and times each from the moment it was due to its end, with the CPU's
 * time-stamp counter (calibrated against CLOCK_MONOTONIC): a lookup that
 * waits for a lock counts the wait, and so do the lookups due while it
 * waited (timing each from its own start would count one slow lookup per
 * wait, however long). The writer is idle, or applies and promotes
 * batches of 10,000 sets flat out (one thread: the reader and the writer
 * have a core each on 2 cores); the peer's writer holds its write lock for
 * each batch. One reader_latency line per writer mode gives our p50, p99
 * and p99.9 and the peer's (each side's run with the lowest p99.9 of
 * SC_BENCH_REPEAT), and service_p99.9: each lookup timed from its own
 * start, which leaves waits out (for comparison only). The same line
 * carries the floor, measured in the same rounds: the same schedule with
 * a lookup that reads nothing and a "writer" that keeps the other core
 * busy with work of its own (floor_p99_ns, floor_p999_ns; of_floor is
 * our p99.9 over the floor's): what the machine adds to any reader here,
 * timer wake-ups, the scheduler, other processes. The reader sleeps to
 * within SC_BENCH_LATENCY_SPIN_US (default 50) of each lookup and spins
 * the rest.
 *
 * Profiling knobs: SC_BENCH_THREADS=N and SC_BENCH_WRITER=idle|busy|paced run
 * one case; SC_BENCH_PEERS=0 measures statecache alone; SC_BENCH_BATCH
 * (default 100, at most 10000) sets the writer's batch size for every side.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <urcu/rculfhash.h>

#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "bench/bench.h"
#include "statecache/cache.h"

#define NENTITIES   1000000u
#define NKEYS	    (1u << 20) /* random lookup sequence */
#define MAX_BATCH   10000
#define MAX_READERS 64

static char (*ids)[16];
static unsigned *lookup_seq;
static double seconds = 0.5;
static int batch = 100; /* sets per writer batch (SC_BENCH_BATCH) */

static void sleep_seconds(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

static size_t id_len(unsigned i)
{
	return strlen(ids[i]);
}

/* ==== a generic driver ==================================================== */

typedef struct impl impl;
struct impl {
	const char *name;
	void (*reader_init)(impl *m);
	void (*reader_fini)(impl *m);
	/* one lookup of entity i; returns the attribute read */
	int64_t (*lookup)(impl *m, void *rctx, unsigned i);
	void *(*reader_ctx)(impl *m);
	void (*reader_ctx_free)(impl *m, void *rctx);
	/* one writer batch of `batch` sets */
	void (*write_batch)(impl *m, uint64_t *rnd, int64_t gen);
};

/* One per reader thread, each on its own cache lines: the driver's flags
 * and the results must not share a line with another thread's. */
typedef struct run {
	_Alignas(64) impl *m;
	atomic_bool stop;
	atomic_bool go;
	unsigned index;
	uint64_t count;
	int64_t sink;
	double cpu; /* thread CPU seconds spent in the timed loop */
} run;

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *reader_thread(void *p)
{
	run *r = p;
	impl *m = r->m;
	if (m->reader_init)
		m->reader_init(m);
	void *ctx = m->reader_ctx ? m->reader_ctx(m) : NULL;
	while (!atomic_load_explicit(&r->go, memory_order_acquire))
		;
	uint64_t n = 0;
	int64_t sink = 0;
	unsigned k = r->index * (NKEYS / 2);
	double c0 = thread_cpu();
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		for (int j = 0; j < 256; j++) {
			sink +=
			    m->lookup(m, ctx, lookup_seq[k++ & (NKEYS - 1)]);
		}
		n += 256;
	}
	r->cpu = thread_cpu() - c0;
	r->count = n;
	r->sink = sink;
	if (m->reader_ctx_free)
		m->reader_ctx_free(m, ctx);
	if (m->reader_fini)
		m->reader_fini(m);
	return NULL;
}

typedef struct writer_run {
	_Alignas(64) impl *m;
	double period; /* seconds per batch when paced, 0: flat out */
	atomic_bool stop;
	uint64_t batches;
	double cpu;
} writer_run;

static void *writer_thread(void *p)
{
	writer_run *w = p;
	uint64_t rnd = 12345;
	int64_t gen = 0;
	if (w->m->reader_init)
		w->m->reader_init(w->m);
	uint64_t batches = 0;
	double c0 = thread_cpu();
	double next = bench_now();
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		w->m->write_batch(w->m, &rnd, ++gen);
		batches++;
		if (w->period > 0) {
			/* Paced: batches start on a fixed schedule; a writer
			 * that falls behind does not burst to catch up. */
			next += w->period;
			double t = bench_now();
			if (t < next)
				sleep_seconds(next - t);
			else
				next = t;
		}
	}
	w->cpu = thread_cpu() - c0;
	w->batches = batches;
	if (w->m->reader_fini)
		w->m->reader_fini(w->m);
	return NULL;
}

/* One measurement. The CPU figures tell what each side got of the two
 * cores: readers that share them with a busy writer (or with anything else
 * running) get less than `threads` cores. */
typedef struct result {
	double lookups_per_s;
	double batches_per_s; /* writer batches per second (busy) */
	double reader_cores;  /* reader CPU seconds per second */
	double writer_cores;  /* writer CPU seconds per second */
	double lookup_cpu_ns; /* reader CPU time per lookup */
} result;

enum { WRITER_IDLE, WRITER_BUSY, WRITER_PACED, WRITER_MODES };
static const char *const writer_mode_name[WRITER_MODES] = {"idle", "busy",
							   "paced"};
static double paced_rate = 500; /* batches per second (SC_BENCH_PACED) */

/* Lookups per second with `threads` readers, writer idle, busy (flat out)
 * or paced (paced_rate batches per second). */
static result measure(impl *m, unsigned threads, int mode)
{
	bool busy = mode != WRITER_IDLE;
	run r[MAX_READERS];
	pthread_t th[MAX_READERS], wt;
	writer_run w = {.m = m,
			.period = mode == WRITER_PACED ? 1.0 / paced_rate : 0};
	atomic_init(&w.stop, false);
	for (unsigned i = 0; i < threads; i++) {
		r[i] = (run){.m = m, .index = i};
		atomic_init(&r[i].stop, false);
		atomic_init(&r[i].go, false);
		pthread_create(&th[i], NULL, reader_thread, &r[i]);
	}
	if (busy)
		pthread_create(&wt, NULL, writer_thread, &w);
	double t0 = bench_now();
	for (unsigned i = 0; i < threads; i++)
		atomic_store(&r[i].go, true);
	sleep_seconds(seconds);
	for (unsigned i = 0; i < threads; i++)
		atomic_store(&r[i].stop, true);
	uint64_t total = 0;
	double cpu = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		total += r[i].count;
		cpu += r[i].cpu;
	}
	double t = bench_now() - t0;
	result res = {.lookups_per_s = (double)total / t,
		      .reader_cores = cpu / t,
		      .lookup_cpu_ns = total ? cpu * 1e9 / (double)total : 0};
	if (busy) {
		atomic_store(&w.stop, true);
		pthread_join(wt, NULL);
		double tw = bench_now() - t0;
		res.batches_per_s = (double)w.batches / tw;
		res.writer_cores = w.cpu / tw;
	}
	return res;
}

/* ==== latency ============================================================= */

/* Nanoseconds from a cheap clock: the time-stamp counter where there is
 * one (a few ns to read), scaled by a factor measured at start. */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static double tsc_ns = 1.0; /* ns per tick */
static inline uint64_t ticks(void)
{
	return __rdtsc();
}
static void ticks_calibrate(void)
{
	double t0 = bench_now();
	uint64_t c0 = ticks();
	sleep_seconds(0.05);
	tsc_ns = (bench_now() - t0) * 1e9 / (double)(ticks() - c0);
}
#else
static double tsc_ns = 1.0;
static inline uint64_t ticks(void)
{
	return (uint64_t)(bench_now() * 1e9);
}
static void ticks_calibrate(void)
{
}
#endif

/* Lookups per second a latency reader makes (SC_BENCH_LATENCY_RATE). */
static double latency_rate = 5000;
/* Seconds of each latency measurement (SC_BENCH_LATENCY_SECONDS). */
static double latency_seconds = 2;
/* Microseconds before each lookup the reader stops sleeping and spins
 * (SC_BENCH_LATENCY_SPIN_US; at least the interval between lookups: the
 * reader never sleeps). */
static double latency_spin_us = 50;

/* Log-linear histogram: exact below 2048 ticks, then 64 buckets per
 * doubling (1.6% wide). */
#define HIST_EXACT 2048u
#define HIST_SUB   64u
#define HIST_N	   (HIST_EXACT + 53u * HIST_SUB)

static unsigned hist_bucket(uint64_t v)
{
	if (v < HIST_EXACT)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	return HIST_EXACT + (msb - 11u) * HIST_SUB +
	       (unsigned)((v >> (msb - 6u)) & (HIST_SUB - 1u));
}

static uint64_t hist_value(unsigned b)
{
	if (b < HIST_EXACT)
		return b;
	unsigned msb = (b - HIST_EXACT) / HIST_SUB + 11u;
	uint64_t sub = (b - HIST_EXACT) % HIST_SUB;
	return ((uint64_t)1 << msb) | (sub << (msb - 6u));
}

typedef struct latency {
	double p50_ns, p99_ns, p999_ns;
	double service_p999_ns; /* timed from each lookup's own start */
	uint64_t lookups;
} latency;

typedef struct lat_run {
	_Alignas(64) impl *m;
	atomic_bool stop;
	atomic_bool go;
	uint64_t *hist;	   /* HIST_N counters: from when each was due */
	uint64_t *service; /* the same, from when each started */
	uint64_t count;
	int64_t sink;
} lat_run;

static void *latency_reader(void *p)
{
	lat_run *r = p;
	impl *m = r->m;
	if (m->reader_init)
		m->reader_init(m);
	void *ctx = m->reader_ctx ? m->reader_ctx(m) : NULL;
	while (!atomic_load_explicit(&r->go, memory_order_acquire))
		;
	/* Sleep to within the spin time of each lookup and spin the rest: a
	 * reader that spun all along would use its share of a busy machine's
	 * CPU and then wait for the scheduler (what it measured would be that
	 * wait); one that sleeps is woken at once. Exact timer wake-ups. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	const uint64_t spin = (uint64_t)(latency_spin_us * 1e3 / tsc_ns);
	uint64_t n = 0;
	int64_t sink = 0;
	unsigned k = 0;
	uint64_t every = (uint64_t)(1e9 / latency_rate / tsc_ns);
	uint64_t due = ticks();
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		for (int j = 0; j < 16; j++) {
			uint64_t now = ticks();
			if (due > now + spin)
				sleep_seconds((double)(due - now - spin) *
					      tsc_ns / 1e9);
			while (ticks() < due)
				;
			uint64_t t0 = ticks();
			sink +=
			    m->lookup(m, ctx, lookup_seq[k++ & (NKEYS - 1)]);
			uint64_t t1 = ticks();
			r->hist[hist_bucket(t1 - due)]++;
			r->service[hist_bucket(t1 - t0)]++;
			due += every;
		}
		n += 16;
	}
	r->count = n;
	r->sink = sink;
	if (m->reader_ctx_free)
		m->reader_ctx_free(m, ctx);
	if (m->reader_fini)
		m->reader_fini(m);
	return NULL;
}

static double hist_pct(const uint64_t *h, uint64_t total, double q)
{
	uint64_t want = (uint64_t)((double)total * q), seen = 0;
	for (unsigned b = 0; b < HIST_N; b++) {
		seen += h[b];
		if (seen > want)
			return (double)hist_value(b) * tsc_ns;
	}
	return 0;
}

/* One reader timing each lookup for `seconds`, the writer idle or busy. */
static latency measure_latency(impl *m, bool busy)
{
	static uint64_t hist[HIST_N], service[HIST_N];
	memset(hist, 0, sizeof hist);
	memset(service, 0, sizeof service);
	lat_run r = {.m = m, .hist = hist, .service = service};
	atomic_init(&r.stop, false);
	atomic_init(&r.go, false);
	writer_run w = {.m = m};
	atomic_init(&w.stop, false);
	pthread_t th, wt;
	pthread_create(&th, NULL, latency_reader, &r);
	if (busy)
		pthread_create(&wt, NULL, writer_thread, &w);
	atomic_store(&r.go, true);
	sleep_seconds(latency_seconds);
	atomic_store(&r.stop, true);
	pthread_join(th, NULL);
	if (busy) {
		atomic_store(&w.stop, true);
		pthread_join(wt, NULL);
	}
	latency l = {.lookups = r.count};
	l.p50_ns = hist_pct(hist, r.count, 0.50);
	l.p99_ns = hist_pct(hist, r.count, 0.99);
	l.p999_ns = hist_pct(hist, r.count, 0.999);
	l.service_p999_ns = hist_pct(service, r.count, 0.999);
	return l;
}

/* The floor of the latency lines: the same schedule with nothing to look
 * up (what the machine adds: timer wake-ups, the scheduler, other
 * processes); its "writer" keeps the other core busy with work of its
 * own, touching no memory the reader reads. */
static int64_t floor_lookup(impl *m, void *ctx, unsigned i)
{
	(void)m;
	(void)ctx;
	return (int64_t)i;
}

static void floor_write_batch(impl *m, uint64_t *rnd, int64_t gen)
{
	(void)m;
	(void)gen;
	/* About as long as a batch of sets: one random step per set. */
	uint64_t x = *rnd;
	for (int i = 0; i < batch * 64; i++)
		x = bench_rnd_next(&x) ^ (uint64_t)i;
	*rnd = x | 1;
}

static impl floor_impl = {
    .name = "floor", .lookup = floor_lookup, .write_batch = floor_write_batch};

/* The reader_latency lines: statecache and the rwlock peer, batches of
 * 10,000, writer idle and busy, and the floor measured in the same
 * rounds. */
static void latency_bench(impl *sc, impl *peer, int repeat, const char *ws)
{
	int saved = batch;
	batch = MAX_BATCH;
	ticks_calibrate();
	for (int mode = WRITER_IDLE; mode <= WRITER_BUSY; mode++) {
		if (ws && strcmp(ws, writer_mode_name[mode]) != 0)
			continue;
		latency x = {.p999_ns = 1e30}, y = {.p999_ns = 1e30};
		latency f = {.p999_ns = 1e30};
		for (int k = 0; k < repeat; k++) {
			latency a = measure_latency(sc, mode == WRITER_BUSY);
			if (a.p999_ns < x.p999_ns)
				x = a;
			latency z =
			    measure_latency(&floor_impl, mode == WRITER_BUSY);
			if (z.p999_ns < f.p999_ns)
				f = z;
			if (!peer)
				continue;
			latency b = measure_latency(peer, mode == WRITER_BUSY);
			if (b.p999_ns < y.p999_ns)
				y = b;
		}
		if (!peer)
			y.p999_ns = 0;
		printf("{\"name\":\"reader_latency\",\"threads\":1,"
		       "\"rate\":%.0f,"
		       "\"writer\":\"%s\",\"batch\":%d,\"p50_ns\":%.0f,"
		       "\"p99_ns\":%.0f,\"p999_ns\":%.0f,"
		       "\"peer\":\"rwlock_ghashtable\",\"peer_p50_ns\":%.0f,"
		       "\"peer_p99_ns\":%.0f,\"peer_p999_ns\":%.0f,"
		       "\"service_p999_ns\":%.0f,\"peer_service_p999_ns\":%.0f,"
		       "\"ratio\":%.4f,\"floor_p99_ns\":%.0f,"
		       "\"floor_p999_ns\":%.0f,\"of_floor\":%.3f}\n",
		       latency_rate, writer_mode_name[mode], batch, x.p50_ns,
		       x.p99_ns, x.p999_ns, y.p50_ns, y.p99_ns, y.p999_ns,
		       x.service_p999_ns, y.service_p999_ns,
		       y.p999_ns > 0 ? x.p999_ns / y.p999_ns : 0.0, f.p99_ns,
		       f.p999_ns, f.p999_ns > 0 ? x.p999_ns / f.p999_ns : 0.0);
		fflush(stdout);
	}
	batch = saved;
}

/* ==== statecache ========================================================== */

typedef struct sc_impl {
	impl base;
	sc_cache *cache;
	uint64_t pos;
} sc_impl;

static void sc_set(sc_impl *s, unsigned i, int64_t gen)
{
	bench_apply_set(s->cache, (sc_str){ids[i], id_len(i)}, ++s->pos, gen,
			gen + i);
}

static void *sc_reader_ctx(impl *m)
{
	sc_impl *s = (sc_impl *)m;
	sc_reader *r;
	sc_error err;
	if (sc_reader_open(s->cache, &r, &err)) {
		fprintf(stderr, "reader: %s\n", err.message);
		exit(1);
	}
	return r;
}

static void sc_reader_ctx_free(impl *m, void *rctx)
{
	(void)m;
	sc_reader_end(rctx);
	sc_reader_close(rctx);
}

static int64_t sc_lookup(impl *m, void *rctx, unsigned i)
{
	(void)m;
	const sc_entity *e = sc_reader_get(rctx, (sc_str){ids[i], id_len(i)});
	return e ? sc_entity_attr(e, 0).value.u.i : 0;
}

static void sc_write_batch(impl *m, uint64_t *rnd, int64_t gen)
{
	sc_impl *s = (sc_impl *)m;
	for (int k = 0; k < batch; k++)
		sc_set(s, (unsigned)(bench_rnd_next(rnd) % NENTITIES), gen);
	if (sc_cache_promote(s->cache)) {
		fprintf(stderr, "promote failed\n");
		exit(1);
	}
}

static void sc_impl_init(sc_impl *s)
{
	s->base = (impl){.name = "statecache",
			 .lookup = sc_lookup,
			 .reader_ctx = sc_reader_ctx,
			 .reader_ctx_free = sc_reader_ctx_free,
			 .write_batch = sc_write_batch};
	/* One writer thread, as the peers have (no apply lanes). */
	sc_cache_options o = {.lanes = 1};
	sc_error err;
	if (sc_cache_create(&o, &s->cache, &err)) {
		fprintf(stderr, "create: %s\n", err.message);
		exit(1);
	}
	for (unsigned i = 0; i < NENTITIES; i++) {
		sc_set(s, i, 0);
		if (i % 10000 == 9999)
			sc_cache_promote(s->cache);
	}
	sc_cache_promote(s->cache);
}

/* ==== peer state (the same 5 attributes, as a C struct) =================== */

typedef struct peer_state {
	int64_t count;
	double level;
	bool online;
	char owner[16];
	char zone[16];
} peer_state;

static peer_state *peer_state_new(unsigned i, int64_t gen)
{
	peer_state *p = malloc(sizeof *p);
	p->count = gen + i;
	p->level = (double)gen / 3.0;
	p->online = gen & 1;
	memcpy(p->owner, "someone@example", 16);
	memcpy(p->zone, "eu-west-1", 10);
	return p;
}

/* ==== peer: rwlock + GHashTable =========================================== */

typedef struct gh_impl {
	impl base;
	GHashTable *table;
	pthread_rwlock_t lock;
} gh_impl;

static int64_t gh_lookup(impl *m, void *rctx, unsigned i)
{
	(void)rctx;
	gh_impl *g = (gh_impl *)m;
	pthread_rwlock_rdlock(&g->lock);
	peer_state *p = g_hash_table_lookup(g->table, ids[i]);
	int64_t v = p ? p->count : 0;
	pthread_rwlock_unlock(&g->lock);
	return v;
}

static void gh_write_batch(impl *m, uint64_t *rnd, int64_t gen)
{
	gh_impl *g = (gh_impl *)m;
	static unsigned which[MAX_BATCH]; /* one writer at a time */
	static peer_state *ns[MAX_BATCH];
	for (int k = 0; k < batch; k++) {
		which[k] = (unsigned)(bench_rnd_next(rnd) % NENTITIES);
		ns[k] = peer_state_new(which[k], gen);
	}
	pthread_rwlock_wrlock(&g->lock);
	for (int k = 0; k < batch; k++) /* frees the old value */
		g_hash_table_replace(g->table, ids[which[k]], ns[k]);
	pthread_rwlock_unlock(&g->lock);
}

static void gh_impl_init(gh_impl *g)
{
	g->base = (impl){.name = "rwlock_ghashtable",
			 .lookup = gh_lookup,
			 .write_batch = gh_write_batch};
	g->table = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, free);
	/* Writer-preferring, or two readers starve the writer entirely. */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(
	    &attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&g->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	for (unsigned i = 0; i < NENTITIES; i++)
		g_hash_table_insert(g->table, ids[i], peer_state_new(i, 0));
}

/* ==== peer: liburcu cds_lfht ============================================== */

typedef struct lf_node {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	const char *key;
	size_t len;
	peer_state *state;
} lf_node;

typedef struct lf_impl {
	impl base;
	struct cds_lfht *ht;
} lf_impl;

static unsigned long lf_hash(const char *key, size_t len)
{
	return (unsigned long)XXH3_64bits(key, len);
}

static int lf_match(struct cds_lfht_node *node, const void *key)
{
	const lf_node *n = caa_container_of(node, lf_node, node);
	return strcmp(n->key, key) == 0;
}

static void lf_reader_init(impl *m)
{
	(void)m;
	urcu_memb_register_thread();
}

static void lf_reader_fini(impl *m)
{
	(void)m;
	urcu_memb_unregister_thread();
}

static int64_t lf_lookup(impl *m, void *rctx, unsigned i)
{
	(void)rctx;
	lf_impl *l = (lf_impl *)m;
	struct cds_lfht_iter it;
	int64_t v = 0;
	urcu_memb_read_lock();
	cds_lfht_lookup(l->ht, lf_hash(ids[i], id_len(i)), lf_match, ids[i],
			&it);
	struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
	if (node)
		v = caa_container_of(node, lf_node, node)->state->count;
	urcu_memb_read_unlock();
	return v;
}

static lf_node *lf_node_new(unsigned i, int64_t gen)
{
	lf_node *n = malloc(sizeof *n);
	cds_lfht_node_init(&n->node);
	n->key = ids[i];
	n->len = id_len(i);
	n->state = peer_state_new(i, gen);
	return n;
}

static void lf_node_free_rcu(struct rcu_head *head)
{
	lf_node *n = caa_container_of(head, lf_node, rcu);
	free(n->state);
	free(n);
}

static void lf_write_batch(impl *m, uint64_t *rnd, int64_t gen)
{
	lf_impl *l = (lf_impl *)m;
	for (int k = 0; k < batch; k++) {
		unsigned i = (unsigned)(bench_rnd_next(rnd) % NENTITIES);
		lf_node *n = lf_node_new(i, gen);
		urcu_memb_read_lock();
		struct cds_lfht_node *o = cds_lfht_add_replace(
		    l->ht, lf_hash(n->key, n->len), lf_match, n->key, &n->node);
		urcu_memb_read_unlock();
		if (o)
			urcu_memb_call_rcu(
			    &caa_container_of(o, lf_node, node)->rcu,
			    lf_node_free_rcu);
	}
}

static void lf_impl_init(lf_impl *l)
{
	l->base = (impl){.name = "cds_lfht",
			 .reader_init = lf_reader_init,
			 .reader_fini = lf_reader_fini,
			 .lookup = lf_lookup,
			 .write_batch = lf_write_batch};
	l->ht = cds_lfht_new_flavor(1u << 20, 1u << 20, 0, CDS_LFHT_AUTO_RESIZE,
				    &urcu_memb_flavor, NULL);
	urcu_memb_register_thread();
	for (unsigned i = 0; i < NENTITIES; i++) {
		lf_node *n = lf_node_new(i, 0);
		urcu_memb_read_lock();
		cds_lfht_add(l->ht, lf_hash(n->key, n->len), &n->node);
		urcu_memb_read_unlock();
	}
	urcu_memb_unregister_thread();
}

/* ==== main ================================================================ */

int main(void)
{
	const char *s = getenv("SC_BENCH_SECONDS");
	if (s && atof(s) > 0)
		seconds = atof(s);
	const char *bs = getenv("SC_BENCH_BATCH");
	if (bs && atoi(bs) > 0 && atoi(bs) <= MAX_BATCH)
		batch = atoi(bs);
	ids = malloc(sizeof *ids * NENTITIES);
	for (unsigned i = 0; i < NENTITIES; i++)
		snprintf(ids[i], sizeof ids[i], "dev-%07u", i);
	lookup_seq = malloc(sizeof *lookup_seq * NKEYS);
	uint64_t r = 42;
	for (unsigned i = 0; i < NKEYS; i++)
		lookup_seq[i] = (unsigned)(bench_rnd_next(&r) % NENTITIES);

	static sc_impl sc;
	static gh_impl gh;
	static lf_impl lf;
	/* SC_BENCH_PEERS=0 measures statecache alone (for profiling). */
	const char *ps = getenv("SC_BENCH_PEERS");
	int npeers = ps && atoi(ps) == 0 ? 0 : 2;
	sc_impl_init(&sc);
	if (npeers) {
		gh_impl_init(&gh);
		lf_impl_init(&lf);
	}

	int repeat = 3;
	const char *rs = getenv("SC_BENCH_REPEAT");
	if (rs && atoi(rs) > 0)
		repeat = atoi(rs);
	const char *lr = getenv("SC_BENCH_LATENCY_RATE");
	if (lr && atof(lr) > 0)
		latency_rate = atof(lr);
	const char *lsec = getenv("SC_BENCH_LATENCY_SECONDS");
	if (lsec && atof(lsec) > 0)
		latency_seconds = atof(lsec);
	const char *lsp = getenv("SC_BENCH_LATENCY_SPIN_US");
	if (lsp && atof(lsp) > 0)
		latency_spin_us = atof(lsp);
	const char *pr = getenv("SC_BENCH_PACED");
	if (pr && atof(pr) > 0)
		paced_rate = atof(pr);
	/* Narrowing for profiling: SC_BENCH_THREADS=N, SC_BENCH_WRITER=
	 * idle|busy|paced. */
	const char *ts = getenv("SC_BENCH_THREADS");
	const char *ws = getenv("SC_BENCH_WRITER");
	impl *all[3] = {&sc.base, &gh.base, &lf.base};
	int nimpl = 1 + npeers;
	/* 1 and 2 reader threads, then doubling up to the cores online. */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned top = ncpu > 2 ? (unsigned)ncpu : 2;
	if (top > MAX_READERS)
		top = MAX_READERS;
	for (unsigned threads = 1; threads <= top;
	     threads = threads < 2 ? threads + 1 : threads * 2) {
		if (ts && (unsigned)atoi(ts) != threads)
			continue;
		result best[WRITER_MODES][3] = {{{0}}};
		for (int mode = 0; mode < WRITER_MODES; mode++) {
			if (ws && strcmp(ws, writer_mode_name[mode]) != 0)
				continue;
			/* Best of `repeat` interleaved runs per contender. */
			for (int k = 0; k < repeat; k++) {
				for (int c = 0; c < nimpl; c++) {
					result v =
					    measure(all[c], threads, mode);
					if (v.lookups_per_s >
					    best[mode][c].lookups_per_s)
						best[mode][c] = v;
				}
			}
			const result *x = &best[mode][0];
			for (int c = nimpl > 1 ? 1 : 0; c < nimpl; c++) {
				const result *y = &best[mode][c];
				printf(
				    "{\"name\":\"readers\",\"threads\":%u,"
				    "\"writer\":\"%s\",\"lookups_per_s\":%.0f,"
				    "\"peer\":\"%s\",\"peer_lookups_per_s\":"
				    "%.0f,\"ratio\":%.3f,"
				    "\"writer_batches_per_s\":%.0f,"
				    "\"peer_writer_batches_per_s\":%.0f,"
				    "\"reader_cores\":%.2f,"
				    "\"peer_reader_cores\":%.2f,"
				    "\"writer_cores\":%.2f,"
				    "\"peer_writer_cores\":%.2f,"
				    "\"lookup_cpu_ns\":%.0f,"
				    "\"peer_lookup_cpu_ns\":%.0f}\n",
				    threads, writer_mode_name[mode],
				    x->lookups_per_s, c ? all[c]->name : "none",
				    y->lookups_per_s,
				    y->lookups_per_s > 0
					? x->lookups_per_s / y->lookups_per_s
					: 0.0,
				    x->batches_per_s, y->batches_per_s,
				    x->reader_cores, y->reader_cores,
				    x->writer_cores, y->writer_cores,
				    x->lookup_cpu_ns, y->lookup_cpu_ns);
				fflush(stdout);
			}
		}
		/* Readers with a busy (or paced) writer against readers
		 * alone. The ratio is the product of two factors, printed
		 * too: the share of the cores the readers kept (cores_ratio;
		 * a writer that never blocks readers competes with them for
		 * the cores when readers + writer outnumber them) and the
		 * CPU time per lookup (cpu_per_lookup_ratio; what the
		 * writer's memory traffic costs each lookup). */
		for (int mode = WRITER_BUSY; !ws && mode < WRITER_MODES; mode++)
			for (int c = 0; c < nimpl; c++) {
				const result *i = &best[WRITER_IDLE][c];
				const result *b = &best[mode][c];
				printf("{\"name\":\"readers_%s_vs_idle\","
				       "\"threads\":%u,\"impl\":\"%s\","
				       "\"ratio\":%.3f,\"cores_ratio\":%.3f,"
				       "\"cpu_per_lookup_ratio\":%.3f}\n",
				       writer_mode_name[mode], threads,
				       all[c]->name,
				       i->lookups_per_s > 0
					   ? b->lookups_per_s / i->lookups_per_s
					   : 0.0,
				       i->reader_cores > 0
					   ? b->reader_cores / i->reader_cores
					   : 0.0,
				       i->lookup_cpu_ns > 0
					   ? b->lookup_cpu_ns / i->lookup_cpu_ns
					   : 0.0);
			}
	}
	if (!ts || atoi(ts) == 1)
		latency_bench(&sc.base, npeers ? &gh.base : NULL, repeat, ws);
	sc_cache_destroy(sc.cache);
	if (npeers)
		g_hash_table_destroy(gh.table);
	return 0;
}
