/*
 * Partitions: a state of many partitions, read and written one partition
 * at a time.
 *
 * The workload: P partitions ("part-NNNNN") of E entities each (default
 * 1,000 of 1,000: 1,000,000 entities; SC_BENCH_PARTITIONS and
 * SC_BENCH_PARTITION_ENTITIES set them), every entity made by one `set`
 * of 5 attributes (bench_gen_set), appended in batches of 1,000 spread
 * uniformly over all partitions, durability nosync.
 *
 * Lines:
 *   partitions_append  the workload's appends, against the same events
 *                      appended to a store without partitions (the peer),
 *                      both in this run.
 *   partitions_get     a get in a resident partition (sc_reader_get_in),
 *                      against sc_reader_get of the same ids in the store
 *                      without partitions, both in this run.
 *   partitions_open    sc_store_open of the partitioned store in a fresh
 *                      process, for P and for 10 P partitions (of E / 10
 *                      entities each, so both states are the same size).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
 * entity i % ents ... spread so that a batch touches every partition
 * about evenly (partition (i * 2654435761) % parts). With named false
 * the event is in the default partition, its id made unique instead. */
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

static sc_store *open_store(const char *dir, bool create)
{
	sc_store_options o = {0};
	o.create = create;
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

/* In a fresh process: seconds to open the store in `dir`. */
static double open_seconds(const char *dir)
{
	int fd[2];
	if (pipe(fd))
		die("pipe", "failed");
	pid_t pid = fork();
	if (pid < 0)
		die("fork", "failed");
	if (pid == 0) {
		close(fd[0]);
		double t0 = bench_now();
		sc_store *s = open_store(dir, false);
		double t = bench_now() - t0;
		sc_store_close(s);
		if (write(fd[1], &t, sizeof t) != (ssize_t)sizeof t)
			_exit(1);
		_exit(0);
	}
	close(fd[1]);
	double t = -1;
	ssize_t got = read(fd[0], &t, sizeof t);
	close(fd[0]);
	int st;
	waitpid(pid, &st, 0);
	if (got != (ssize_t)sizeof t || !WIFEXITED(st) || WEXITSTATUS(st))
		die("open", "the child failed");
	return t;
}

int main(void)
{
	unsigned parts = env_count("SC_BENCH_PARTITIONS", 1000);
	unsigned ents = env_count("SC_BENCH_PARTITION_ENTITIES", 1000);
	char root[] = "/tmp/sc-bench-partitions-XXXXXX";
	if (!mkdtemp(root))
		die("mkdtemp", root);
	char pdir[600], udir[600], wdir[600];
	snprintf(pdir, sizeof pdir, "%s/partitioned", root);
	snprintf(udir, sizeof udir, "%s/unpartitioned", root);
	snprintf(wdir, sizeof wdir, "%s/wide", root);

	/* partitions_append */
	double best_p = 0, best_u = 0;
	for (int run = 0; run < bench_repeat(); run++) {
		rm_rf(pdir);
		rm_rf(udir);
		sc_store *u = open_store(udir, true);
		double y = ingest(u, parts, ents, false);
		sc_store_close(u);
		sc_store *p = open_store(pdir, true);
		double x = ingest(p, parts, ents, true);
		sc_store_close(p);
		best_p = x > best_p ? x : best_p;
		best_u = y > best_u ? y : best_u;
	}
	printf("{\"name\":\"partitions_append\",\"partitions\":%u,"
	       "\"entities\":%llu,\"batch\":%d,\"durability\":\"nosync\","
	       "\"events_per_s\":%.0f,\"peer\":\"unpartitioned\","
	       "\"peer_events_per_s\":%.0f,\"ratio\":%.2f}\n",
	       parts, (unsigned long long)parts * ents, BATCH, best_p, best_u,
	       best_p / best_u);
	fflush(stdout);

	/* partitions_get (resident) */
	{
		sc_store *p = open_store(pdir, false);
		sc_store *u = open_store(udir, false);
		sc_reader *rp, *ru;
		sc_error err;
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

	/* partitions_open: P partitions, then 10 P of a tenth the size */
	printf("{\"name\":\"partitions_open\",\"partitions\":%u,"
	       "\"entities\":%llu,\"seconds\":%.3f}\n",
	       parts, (unsigned long long)parts * ents, open_seconds(pdir));
	fflush(stdout);
	rm_rf(udir);
	{
		unsigned wparts = parts * 10, wents = ents / 10 ? ents / 10 : 1;
		sc_store *w = open_store(wdir, true);
		ingest(w, wparts, wents, true);
		sc_store_close(w);
		printf("{\"name\":\"partitions_open\",\"partitions\":%u,"
		       "\"entities\":%llu,\"seconds\":%.3f}\n",
		       wparts, (unsigned long long)wparts * wents,
		       open_seconds(wdir));
		fflush(stdout);
	}
	rm_rf(root);
	return 0;
}
