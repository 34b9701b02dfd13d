/*
 * Partitions: a state of many partitions, read and written one partition
 * at a time, within a memory budget.
 *
 * The workload: P partitions ("part-NNNNN") of E entities each (default
 * 1,000 of 1,000: 1,000,000 entities; SC_BENCH_PARTITIONS and
 * SC_BENCH_PARTITION_ENTITIES set them), every entity made by one `set`
 * of 5 attributes (bench_gen_set; its count is the event's number in the
 * workload, so a read can check it), appended in batches of 1,000 spread
 * uniformly over all partitions, durability nosync. S is the bytes of
 * that state resident (sc_store_stats_get's resident_bytes with every
 * partition loaded); the budget B is S / 10.
 *
 * Lines:
 *   partitions_append  the workload's appends without a budget, and into
 *                      a new store with budget B (most partitions are
 *                      cold, their events go to the log only), each
 *                      against the same events appended to a store
 *                      without partitions (the peer), all in this run.
 *   partitions_get     resident: sc_reader_get_in in a store with every
 *                      partition loaded, against sc_reader_get of the
 *                      same ids in the store without partitions; cold:
 *                      sc_store_get_in of one entity of each partition
 *                      in turn, in a fresh process that opened the store
 *                      with budget B (the load included), p50 and p99.
 *   partitions_rss     peak memory of that process during the sweep, and
 *                      during the workload's appends again (budget B);
 *                      peak_rss_bytes counts the store's mapped file
 *                      pages too, peak_anon_bytes the heap alone.
 *   partitions_oversize  the store of state S with budget B: every
 *                      entity of every partition read back and checked,
 *                      after the ingest and again after a reopen.
 *   partitions_open    sc_store_open with budget B in a fresh process,
 *                      for P partitions and for 10 P (of E / 10
 *                      entities each, the same state size), and without
 *                      a budget for P (every partition loaded).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "statecache/cache.h"
#include "statecache/store.h"

#define BATCH 1000

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bench partitions: %s: %s\n", what, msg);
	exit(1);
}

static unsigned env_count(const char *name, unsigned dflt)
{
	const char *s = getenv(name);
	return s && atoi(s) > 0 ? (unsigned)atoi(s) : dflt;
}

static void rm_rf(const char *dir)
{
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		die("rm", dir);
}

/* The name of partition k. */
static size_t part_name(unsigned k, char *buf, size_t cap)
{
	return (size_t)snprintf(buf, cap, "part-%05u", k);
}

/* Event i of the workload over `parts` partitions of `ents` entities:
 * e = i % (parts * ents) is entity e / parts of partition e % parts, so
 * that a batch touches every partition about evenly; its count is e.
 * With named false the event is in the default partition, its id made
 * unique instead. */
typedef struct work_event {
	bench_gen_event g;
	char part[16];
	char uid[40];
} work_event;

static void work_gen(uint64_t i, unsigned parts, unsigned ents, bool named,
		     work_event *w)
{
	uint64_t n = (uint64_t)parts * ents;
	uint64_t e = i % n;
	unsigned k = (unsigned)(e % parts);
	bench_gen_set(e / parts, ents, &w->g);
	/* bench_gen_set spreads ids over ents; keep the id unique in its
	 * partition whatever the spread: entity number e / parts. */
	int len = snprintf(w->g.id, sizeof w->g.id, "entity-%08llu",
			   (unsigned long long)(e / parts));
	w->g.ev.entity = (sc_str){w->g.id, (size_t)len};
	w->g.attrs[0].value.u.i = (int64_t)e;
	if (named) {
		size_t pl = part_name(k, w->part, sizeof w->part);
		w->g.ev.partition = (sc_str){w->part, pl};
	} else {
		int ul = snprintf(w->uid, sizeof w->uid, "p%05u/entity-%08llu",
				  k, (unsigned long long)(e / parts));
		w->g.ev.entity = (sc_str){w->uid, (size_t)ul};
	}
}

/* Append the workload (every entity once) to `s`; events per second. */
static double ingest(sc_store *s, unsigned parts, unsigned ents, bool named)
{
	uint64_t n = (uint64_t)parts * ents;
	work_event *w = malloc(sizeof *w * BATCH);
	sc_event *evs = malloc(sizeof *evs * BATCH);
	if (!w || !evs)
		die("ingest", "out of memory");
	double t0 = bench_now();
	for (uint64_t i = 0; i < n; i += BATCH) {
		size_t m = n - i < BATCH ? (size_t)(n - i) : BATCH;
		for (size_t j = 0; j < m; j++) {
			work_gen(i + j, parts, ents, named, &w[j]);
			evs[j] = w[j].g.ev;
		}
		sc_error err;
		if (sc_store_append(s, evs, m, NULL, &err))
			die("append", err.message);
	}
	double t = bench_now() - t0;
	free(w);
	free(evs);
	return (double)n / t;
}

static sc_store *open_store(const char *dir, bool create, size_t budget)
{
	sc_store_options o = {0};
	o.create = create;
	o.memory_budget = budget;
	o.durability = SC_DURABILITY_NOSYNC;
	o.map_size = (size_t)1 << 30;
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		die("open", err.message);
	return s;
}

/* The ids (and partitions) of n random entities of the workload, made
 * before the timing so that it times the gets alone. */
typedef struct get_keys {
	work_event *w;
	uint64_t n;
} get_keys;

static get_keys keys_make(unsigned parts, unsigned ents, bool named, uint64_t n)
{
	get_keys k = {malloc(sizeof *k.w * n), n};
	if (!k.w)
		die("keys", "out of memory");
	uint64_t seed = 0x9e3779b97f4a7c15ull, total = (uint64_t)parts * ents;
	for (uint64_t i = 0; i < n; i++) {
		work_gen(bench_rnd_next(&seed) % total, parts, ents, named,
			 &k.w[i]);
		/* work_gen points into its own struct: keep the pointers
		 * right for this slot. */
		if (named)
			k.w[i].g.ev.partition.ptr = k.w[i].part;
		k.w[i].g.ev.entity.ptr = named ? k.w[i].g.id : k.w[i].uid;
	}
	return k;
}

/* Nanoseconds per get of the keys, read through `r` (named:
 * sc_reader_get_in, else sc_reader_get). */
static double get_ns(sc_reader *r, const get_keys *k, bool named)
{
	uint64_t found = 0;
	double t0 = bench_now();
	for (uint64_t i = 0; i < k->n; i++) {
		const sc_event *ev = &k->w[i].g.ev;
		const sc_entity *x =
		    named ? sc_reader_get_in(r, ev->partition, ev->entity)
			  : sc_reader_get(r, ev->entity);
		found += x != NULL;
	}
	double t = bench_now() - t0;
	if (found != k->n)
		die("get", "an entity of the workload is missing");
	return t * 1e9 / (double)k->n;
}

/* ---- peak memory of a phase ----------------------------------------------
 * A thread samples /proc/self/statm every millisecond: the peak of the
 * resident set (every page, the store's mapped file pages too) and of its
 * anonymous part (resident - shared: the heap, where the state lives).
 * The store's file pages are page cache the kernel may drop at any time;
 * both figures are reported. */
typedef struct rss_watch {
	pthread_t thread;
	atomic_bool stop;
	size_t peak_rss, peak_anon;
} rss_watch;

static void rss_sample(rss_watch *w)
{
	static long page;
	if (!page)
		page = sysconf(_SC_PAGESIZE);
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return;
	unsigned long size, res, shared;
	if (fscanf(f, "%lu %lu %lu", &size, &res, &shared) == 3) {
		size_t rss = (size_t)res * (size_t)page;
		size_t anon = (size_t)(res - shared) * (size_t)page;
		if (rss > w->peak_rss)
			w->peak_rss = rss;
		if (anon > w->peak_anon)
			w->peak_anon = anon;
	}
	fclose(f);
}

static void *rss_main(void *arg)
{
	rss_watch *w = arg;
	struct timespec ms = {0, 1000000};
	while (!atomic_load(&w->stop)) {
		rss_sample(w);
		nanosleep(&ms, NULL);
	}
	rss_sample(w);
	return NULL;
}

static void rss_start(rss_watch *w)
{
	w->peak_rss = w->peak_anon = 0;
	atomic_store(&w->stop, false);
	rss_sample(w);
	if (pthread_create(&w->thread, NULL, rss_main, w))
		die("rss", "cannot start the sampling thread");
}

static void rss_stop(rss_watch *w)
{
	atomic_store(&w->stop, true);
	pthread_join(w->thread, NULL);
}

/* Run fn(ctx) in a fresh process, so that its memory is its own; it
 * prints its lines itself. Exits if it fails. */
static void in_child(void (*fn)(void *), void *ctx)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		die("fork", "failed");
	if (pid == 0) {
		fn(ctx);
		fflush(stdout);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		die("child", "a measuring process failed");
}

typedef struct phase {
	const char *dir;
	unsigned parts, ents;
	size_t budget, state;
} phase;

/* partitions_open: open (and close) in this fresh process. */
static void child_open(void *arg)
{
	const phase *ph = arg;
	double t0 = bench_now();
	sc_store *s = open_store(ph->dir, false, ph->budget);
	double t = bench_now() - t0;
	sc_store_close(s);
	printf("{\"name\":\"partitions_open\",\"partitions\":%u,"
	       "\"entities\":%llu,\"budget_bytes\":%zu,\"seconds\":%.3f}\n",
	       ph->parts, (unsigned long long)ph->parts * ph->ents, ph->budget,
	       t);
}

/* Read every entity of partition k through sc_store_get_in and check its
 * count; the first get's seconds go to *first. */
static void check_partition(sc_store *s, sc_reader *r, const phase *ph,
			    unsigned k, double *first)
{
	work_event w;
	for (unsigned j = 0; j < ph->ents; j++) {
		uint64_t e = (uint64_t)j * ph->parts + k;
		work_gen(e, ph->parts, ph->ents, true, &w);
		const sc_entity *x = NULL;
		sc_error err;
		double t0 = bench_now();
		int rc = sc_store_get_in(s, r, w.g.ev.partition, w.g.ev.entity,
					 &x, &err);
		if (j == 0 && first)
			*first = bench_now() - t0;
		if (rc)
			die("sc_store_get_in", err.message);
		sc_value v;
		if (!sc_entity_find(x, (sc_str){"count", 5}, &v) ||
		    v.type != SC_VALUE_INT || v.u.i != (int64_t)e)
			die("verify", "an entity does not hold its last event");
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Open with the budget, sweep every partition (the first get of each
 * loads it), then append the workload again; the lines of the sweep's
 * cold gets and both phases' peak memory. */
static void child_sweep(void *arg)
{
	const phase *ph = arg;
	sc_store *s = open_store(ph->dir, false, ph->budget);
	sc_reader *r;
	sc_error err;
	if (sc_reader_open(sc_store_cache(s), &r, &err))
		die("reader", err.message);
	double *lat = malloc(sizeof *lat * ph->parts);
	if (!lat)
		die("sweep", "out of memory");
	rss_watch w;
	rss_start(&w);
	for (unsigned k = 0; k < ph->parts; k++)
		check_partition(s, r, ph, k, &lat[k]);
	rss_stop(&w);
	sc_store_stats st;
	if (sc_store_stats_get(s, &st, &err))
		die("stats", err.message);
	qsort(lat, ph->parts, sizeof *lat, cmp_double);
	printf("{\"name\":\"partitions_get\",\"where\":\"cold\","
	       "\"partitions\":%u,\"loads\":%llu,\"p50_us\":%.0f,"
	       "\"p99_us\":%.0f}\n",
	       ph->parts, (unsigned long long)st.partition_loads,
	       lat[ph->parts / 2] * 1e6, lat[ph->parts * 99 / 100] * 1e6);
	printf("{\"name\":\"partitions_rss\",\"phase\":\"sweep\","
	       "\"peak_rss_bytes\":%zu,\"peak_anon_bytes\":%zu,"
	       "\"budget_bytes\":%zu,\"state_bytes\":%zu}\n",
	       w.peak_rss, w.peak_anon, ph->budget, ph->state);
	free(lat);
	sc_reader_close(r);
	rss_start(&w);
	ingest(s, ph->parts, ph->ents, true);
	rss_stop(&w);
	printf("{\"name\":\"partitions_rss\",\"phase\":\"append\","
	       "\"peak_rss_bytes\":%zu,\"peak_anon_bytes\":%zu,"
	       "\"budget_bytes\":%zu,\"state_bytes\":%zu}\n",
	       w.peak_rss, w.peak_anon, ph->budget, ph->state);
	sc_store_close(s);
}

/* Reopen with the budget and check every entity of every partition. */
static void child_verify(void *arg)
{
	const phase *ph = arg;
	sc_store *s = open_store(ph->dir, false, ph->budget);
	sc_reader *r;
	sc_error err;
	if (sc_reader_open(sc_store_cache(s), &r, &err))
		die("reader", err.message);
	for (unsigned k = 0; k < ph->parts; k++)
		check_partition(s, r, ph, k, NULL);
	sc_store_stats st;
	if (sc_store_stats_get(s, &st, &err))
		die("stats", err.message);
	sc_reader_close(r);
	sc_store_close(s);
	printf("{\"name\":\"partitions_oversize\",\"partitions\":%u,"
	       "\"entities\":%llu,\"state_bytes\":%zu,\"budget_bytes\":%zu,"
	       "\"resident_bytes\":%zu,\"verified\":true}\n",
	       ph->parts, (unsigned long long)ph->parts * ph->ents, ph->state,
	       ph->budget, st.resident_bytes);
}

int main(void)
{
	unsigned parts = env_count("SC_BENCH_PARTITIONS", 1000);
	unsigned ents = env_count("SC_BENCH_PARTITION_ENTITIES", 1000);
	char root[] = "/tmp/sc-bench-partitions-XXXXXX";
	if (!mkdtemp(root))
		die("mkdtemp", root);
	char pdir[600], udir[600], wdir[600], bdir[600];
	snprintf(pdir, sizeof pdir, "%s/partitioned", root);
	snprintf(udir, sizeof udir, "%s/unpartitioned", root);
	snprintf(wdir, sizeof wdir, "%s/wide", root);
	snprintf(bdir, sizeof bdir, "%s/budget", root);
	uint64_t n = (uint64_t)parts * ents;

	/* partitions_append, without a budget */
	double best_p = 0, best_u = 0;
	for (int run = 0; run < bench_repeat(); run++) {
		rm_rf(pdir);
		rm_rf(udir);
		sc_store *u = open_store(udir, true, 0);
		double y = ingest(u, parts, ents, false);
		sc_store_close(u);
		sc_store *p = open_store(pdir, true, 0);
		double x = ingest(p, parts, ents, true);
		sc_store_close(p);
		best_p = x > best_p ? x : best_p;
		best_u = y > best_u ? y : best_u;
	}
	printf("{\"name\":\"partitions_append\",\"partitions\":%u,"
	       "\"entities\":%llu,\"batch\":%d,\"durability\":\"nosync\","
	       "\"budget_bytes\":0,\"events_per_s\":%.0f,\"peer\":"
	       "\"unpartitioned\",\"peer_events_per_s\":%.0f,\"ratio\":%.2f}\n",
	       parts, (unsigned long long)n, BATCH, best_p, best_u,
	       best_p / best_u);
	fflush(stdout);

	/* partitions_get (resident), and S */
	size_t state;
	{
		sc_store *p = open_store(pdir, false, 0);
		sc_store *u = open_store(udir, false, 0);
		sc_store_stats st;
		sc_error err;
		if (sc_store_stats_get(p, &st, &err))
			die("stats", err.message);
		state = st.resident_bytes;
		sc_reader *rp, *ru;
		if (sc_reader_open(sc_store_cache(p), &rp, &err) ||
		    sc_reader_open(sc_store_cache(u), &ru, &err))
			die("reader", err.message);
		get_keys kp = keys_make(parts, ents, true, 1000000);
		get_keys ku = keys_make(parts, ents, false, 1000000);
		double x = 1e18, y = 1e18;
		for (int run = 0; run < bench_repeat(); run++) {
			double a = get_ns(rp, &kp, true);
			double b = get_ns(ru, &ku, false);
			x = a < x ? a : x;
			y = b < y ? b : y;
		}
		printf("{\"name\":\"partitions_get\",\"where\":\"resident\","
		       "\"ns_per_op\":%.1f,\"peer\":\"reader_get\","
		       "\"peer_ns_per_op\":%.1f,\"ratio\":%.2f}\n",
		       x, y, x / y);
		fflush(stdout);
		free(kp.w);
		free(ku.w);
		sc_reader_close(rp);
		sc_reader_close(ru);
		sc_store_close(p);
		sc_store_close(u);
	}
	size_t budget = state / 10 ? state / 10 : 1;

	/* partitions_append into a store with the budget */
	{
		double x = 0;
		for (int run = 0; run < bench_repeat(); run++) {
			rm_rf(bdir);
			sc_store *b = open_store(bdir, true, budget);
			double r = ingest(b, parts, ents, true);
			sc_store_close(b);
			x = r > x ? r : x;
		}
		printf("{\"name\":\"partitions_append\",\"partitions\":%u,"
		       "\"entities\":%llu,\"batch\":%d,\"durability\":"
		       "\"nosync\",\"budget_bytes\":%zu,\"events_per_s\":%.0f,"
		       "\"peer\":\"unpartitioned\",\"peer_events_per_s\":%.0f,"
		       "\"ratio\":%.2f}\n",
		       parts, (unsigned long long)n, BATCH, budget, x, best_u,
		       x / best_u);
		fflush(stdout);
	}
	rm_rf(udir);

	/* The cold gets, peak memory, the state 10 x the budget. */
	phase ph = {bdir, parts, ents, budget, state};
	in_child(child_sweep, &ph);
	in_child(child_verify, &ph);

	/* partitions_open */
	phase po = {pdir, parts, ents, budget, state};
	in_child(child_open, &po);
	po.budget = 0;
	in_child(child_open, &po);
	{
		unsigned wparts = parts * 10, wents = ents / 10 ? ents / 10 : 1;
		sc_store *w = open_store(wdir, true, 0);
		ingest(w, wparts, wents, true);
		sc_store_close(w);
		phase pw = {wdir, wparts, wents, budget, state};
		in_child(child_open, &pw);
	}
	rm_rf(root);
	return 0;
}
