/*
 * Concurrency stress for partition residency (run under TSan and ASan).
 *
 * Named partitions of accounts; the writer moves money between two
 * accounts of one resident partition, evicts resident partitions and loads
 * cold ones back from its own ledger, in random pending versions that it
 * promotes or discards. In every promoted version each resident partition
 * holds all its accounts and the same total, and every account's "neg" is
 * minus its "bal" (a torn or mixed state breaks one of these). Readers:
 *   - pin views and walk every partition: a resident one whole (count,
 *     total, no torn account), a cold one empty; version numbers never go
 *     back;
 *   - hold a view across many promotes (evictions among them) and walk
 *     it again: the partitions resident in it still read whole;
 *   - look accounts up with sc_reader_get_in (touching LRU ticks while
 *     the writer ranks partitions with sc_cache_part_coldest);
 *   - read sc_cache_resident_bytes and the stats.
 * At the end: every partition loaded, the whole state equals the ledger,
 * nothing waits for reclamation, the figures equal a recount.
 *
 * SC_TEST_SEED=n repeats the writer's choices; SC_TEST_SHORT=1 shortens.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/cache_internal.h"
#include "cache/cache_lib.h"
#include "statecache/cache.h"
#include "tests/support/testkit.h"
#include "tests/support/thread_testkit.h"

#define NPARTS	  8
#define NACC	  32
#define START_BAL 100
#define NREADERS  3

static uint64_t seed;

typedef struct shared {
	sc_cache *cache;
	_Atomic bool done;
	tk_failures fail;
	_Atomic size_t views, long_pins, gets;
} shared;

static char part_names[NPARTS][8];
static char acc_names[NACC][8];

static sc_str part(unsigned p)
{
	return (sc_str){part_names[p], strlen(part_names[p])};
}

static sc_str acc(unsigned a)
{
	return (sc_str){acc_names[a], strlen(acc_names[a])};
}

static int64_t int_of(const sc_entity *e, const char *name)
{
	sc_value v;
	if (!sc_entity_find(e, (sc_str){name, strlen(name)}, &v) ||
	    v.type != SC_VALUE_INT)
		return INT64_MIN;
	return v.u.i;
}

/* ==== writer ============================================================== */

typedef struct writer {
	sc_cache *cache;
	uint64_t rnd, pos;
	int64_t bal[NPARTS][NACC];
	bool cold[NPARTS];
} writer;

static void put(writer *w, unsigned p, unsigned a, int64_t bal)
{
	sc_attr at[2] = {{.name = {"bal", 3}, .value.type = SC_VALUE_INT},
			 {.name = {"neg", 3}, .value.type = SC_VALUE_INT}};
	at[0].value.u.i = bal;
	at[1].value.u.i = -bal;
	sc_event ev = {.position = ++w->pos,
		       .partition = part(p),
		       .entity = acc(a),
		       .type = SC_EVENT_SET,
		       .attrs = at,
		       .nattrs = 2,
		       .time = (int64_t)w->pos};
	sc_error err;
	if (sc_cache_apply(w->cache, &ev, &err))
		fail_msg("apply: %s", err.message);
}

/* Load partition p from the ledger through the restore's steps. */
static void load(writer *w, unsigned p)
{
	sc_error err;
	if (sc_cache_part_load_begin(w->cache, part(p), NULL, &err))
		fail_msg("load_begin: %s", err.message);
	for (unsigned a = 0; a < NACC; a++) {
		sc_attr at[2] = {
		    {.name = {"bal", 3}, .value.type = SC_VALUE_INT},
		    {.name = {"neg", 3}, .value.type = SC_VALUE_INT}};
		at[0].value.u.i = w->bal[p][a];
		at[1].value.u.i = -w->bal[p][a];
		size_t bytes;
		assert_int_equal(sc_cache_load_measure(part(p), acc(a), at, 2,
						       (sc_str){"", 0}, &bytes,
						       &err),
				 0);
		uint64_t img[64];
		assert_true(bytes <= sizeof img);
		sc_cache_loaded l;
		sc_cache_load_write(w->cache, part(p), acc(a), at, 2, 1,
				    (sc_str){"", 0}, w->pos, img, bytes, &l);
		if (sc_cache_load_store(w->cache, img, &l, &err))
			fail_msg("load_store: %s", err.message);
	}
}

static void writer_run(shared *sh, writer *w, size_t rounds)
{
	for (unsigned p = 0; p < NPARTS; p++)
		for (unsigned a = 0; a < NACC; a++) {
			w->bal[p][a] = START_BAL;
			put(w, p, a, START_BAL);
		}
	assert_int_equal(sc_cache_promote(w->cache), 0);
	sc_error err;
	/* The rounds asked for, and more until every reader has done its
	 * work at least once (a long pin needs promotes to end). */
	for (size_t r = 0;
	     r < rounds || !atomic_load(&sh->views) ||
	     !atomic_load(&sh->long_pins) || !atomic_load(&sh->gets);
	     r++) {
		int64_t saved[NPARTS][NACC];
		bool saved_cold[NPARTS];
		memcpy(saved, w->bal, sizeof saved);
		memcpy(saved_cold, w->cold, sizeof saved_cold);
		bool touched[NPARTS] = {0};
		/* Evict the least recently used partition, or a random one,
		 * and load a cold one. */
		if (tk_rand(&w->rnd) % 3 == 0) {
			sc_str c;
			unsigned p = (unsigned)(tk_rand(&w->rnd) % NPARTS);
			if (tk_rand(&w->rnd) % 2 &&
			    sc_cache_part_coldest(w->cache, &c, 1) == 1)
				p = (unsigned)(c.ptr[1] - '0');
			if (!w->cold[p]) {
				assert_int_equal(sc_cache_part_evict(
						     w->cache, part(p), &err),
						 0);
				w->cold[p] = touched[p] = true;
			}
		}
		if (tk_rand(&w->rnd) % 3 == 0) {
			unsigned p = (unsigned)(tk_rand(&w->rnd) % NPARTS);
			if (w->cold[p] && !touched[p]) {
				load(w, p);
				w->cold[p] = false;
				touched[p] = true;
			}
		}
		size_t n = tk_rand(&w->rnd) % 6;
		for (size_t k = 0; k < n; k++) {
			unsigned p = (unsigned)(tk_rand(&w->rnd) % NPARTS);
			if (w->cold[p])
				continue;
			unsigned x = (unsigned)(tk_rand(&w->rnd) % NACC);
			unsigned y = (unsigned)(tk_rand(&w->rnd) % NACC);
			if (x == y)
				continue;
			int64_t amt = (int64_t)(tk_rand(&w->rnd) % 50);
			w->bal[p][x] -= amt;
			w->bal[p][y] += amt;
			put(w, p, x, w->bal[p][x]);
			put(w, p, y, w->bal[p][y]);
		}
		if (tk_rand(&w->rnd) % 10 == 0) {
			sc_cache_discard(w->cache);
			memcpy(w->bal, saved, sizeof saved);
			memcpy(w->cold, saved_cold, sizeof saved_cold);
		} else {
			assert_int_equal(sc_cache_promote(w->cache), 0);
		}
		sc_cache_part_info info[NPARTS + 1];
		assert_int_equal(sc_cache_part_list(w->cache, info, NPARTS + 1),
				 1 + NPARTS);
		if (tk_failures_count(&sh->fail))
			break;
	}
}

/* ==== readers ============================================================= */

/* Walk every partition of v; false (reported) on a violation. `resident`
 * (may be NULL) receives which are resident. */
static bool check_view(shared *sh, const sc_view *v, bool *resident)
{
	size_t in_memory = 0;
	/* Version 0, before the accounts open, is empty. */
	if (sc_view_version(v) == 0) {
		if (resident)
			memset(resident, 0, NPARTS * sizeof *resident);
		return sc_view_len_all(v) == 0;
	}
	for (unsigned p = 0; p < NPARTS; p++) {
		sc_residency r = sc_view_residency(v, part(p));
		if (resident)
			resident[p] = r == SC_RESIDENCY_RESIDENT;
		sc_view_iter it;
		sc_view_iter_init_in(v, part(p), &it);
		int64_t sum = 0;
		size_t n = 0;
		for (const sc_entity *e; (e = sc_view_iter_next(&it)); n++) {
			int64_t b = int_of(e, "bal");
			if (b == INT64_MIN || int_of(e, "neg") != -b) {
				tk_failure(&sh->fail, "torn account in %s",
					   part_names[p]);
				return false;
			}
			sum += b;
		}
		if (r == SC_RESIDENCY_COLD) {
			if (n || sc_view_len_in(v, part(p)) ||
			    sc_view_get_in(v, part(p), acc(0))) {
				tk_failure(&sh->fail, "cold %s reads entities",
					   part_names[p]);
				return false;
			}
			continue;
		}
		if (r != SC_RESIDENCY_RESIDENT || n != NACC ||
		    sum != (int64_t)NACC * START_BAL) {
			tk_failure(
			    &sh->fail,
			    "%s: residency %d, %zu accounts, total %lld in "
			    "version %llu",
			    part_names[p], (int)r, n, (long long)sum,
			    (unsigned long long)sc_view_version(v));
			return false;
		}
		in_memory += n;
	}
	if (sc_view_len_all(v) != in_memory) {
		tk_failure(&sh->fail, "len_all %zu, walked %zu",
			   sc_view_len_all(v), in_memory);
		return false;
	}
	return true;
}

typedef struct reader_arg {
	shared *sh;
	int kind;
} reader_arg;

static void *reader_main(void *vp)
{
	reader_arg *ra = vp;
	shared *sh = ra->sh;
	sc_reader *rd;
	sc_error err;
	if (sc_reader_open(sh->cache, &rd, &err)) {
		tk_failure(&sh->fail, "reader_open: %s", err.message);
		return NULL;
	}
	uint64_t r = seed ^ (uint64_t)ra->kind, last = 0;
	while (!atomic_load(&sh->done) && !tk_failures_count(&sh->fail)) {
		if (ra->kind == 0) {
			const sc_view *v = sc_reader_begin(rd);
			if (sc_view_version(v) < last) {
				tk_failure(&sh->fail, "version went back");
				break;
			}
			last = sc_view_version(v);
			check_view(sh, v, NULL);
			sc_reader_end(rd);
			atomic_fetch_add(&sh->views, 1);
		} else if (ra->kind == 1) {
			/* A long pin: walk again once the writer moved on
			 * by a few versions (or finished). */
			const sc_view *v = sc_reader_begin(rd);
			bool res[NPARTS], again[NPARTS];
			if (!check_view(sh, v, res))
				break;
			uint64_t at = sc_view_version(v);
			while (sc_cache_version_newest(sh->cache) < at + 8 &&
			       !atomic_load(&sh->done))
				sched_yield();
			if (!check_view(sh, v, again))
				break;
			if (memcmp(res, again, sizeof res)) {
				tk_failure(&sh->fail,
					   "a pinned view changed residency");
				break;
			}
			sc_reader_end(rd);
			atomic_fetch_add(&sh->long_pins, 1);
		} else {
			unsigned p = (unsigned)(tk_rand(&r) % NPARTS);
			unsigned a = (unsigned)(tk_rand(&r) % NACC);
			const sc_entity *e =
			    sc_reader_get_in(rd, part(p), acc(a));
			if (e && int_of(e, "neg") != -int_of(e, "bal")) {
				tk_failure(&sh->fail, "torn get");
				break;
			}
			(void)sc_cache_resident_bytes(sh->cache);
			sc_cache_stats st;
			sc_cache_stats_get(sh->cache, &st);
			atomic_fetch_add(&sh->gets, 1);
		}
	}
	sc_reader_close(rd);
	return NULL;
}

/* ==== the run ============================================================= */

static void test_residency_stress(void **state)
{
	(void)state;
	bool short_run = getenv("SC_TEST_SHORT") != NULL;
	for (unsigned p = 0; p < NPARTS; p++)
		snprintf(part_names[p], sizeof part_names[p], "P%u", p);
	for (unsigned a = 0; a < NACC; a++)
		snprintf(acc_names[a], sizeof acc_names[a], "a%u", a);
	shared sh = {0};
	tk_failures_init(&sh.fail);
	sc_cache_options o = {.seed = seed, .lanes = 1};
	sc_error err;
	assert_int_equal(sc_cache_create(&o, &sh.cache, &err), 0);
	writer *w = calloc(1, sizeof *w);
	assert_non_null(w);
	w->cache = sh.cache;
	w->rnd = seed;
	pthread_t th[NREADERS];
	reader_arg ra[NREADERS];
	for (int i = 0; i < NREADERS; i++)
		ra[i] = (reader_arg){&sh, i};
	tk_threads_start(th, NREADERS, reader_main, ra, sizeof ra[0]);
	writer_run(&sh, w, short_run ? 2000 : 20000);
	atomic_store(&sh.done, true);
	tk_threads_join(th, NREADERS);
	if (tk_failures_count(&sh.fail))
		fail_msg("seed %llu: %s", (unsigned long long)seed,
			 sh.fail.first);

	/* Everything loaded: the state equals the ledger. */
	for (unsigned p = 0; p < NPARTS; p++)
		if (w->cold[p]) {
			load(w, p);
			w->cold[p] = false;
		}
	assert_int_equal(sc_cache_promote(sh.cache), 0);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(sh.cache, &rd, &err), 0);
	const sc_view *v = sc_reader_begin(rd);
	assert_int_equal(sc_view_cold_count(v), 0);
	size_t state_bytes = 0;
	for (unsigned p = 0; p < NPARTS; p++)
		for (unsigned a = 0; a < NACC; a++) {
			const sc_entity *e = sc_view_get_in(v, part(p), acc(a));
			assert_non_null(e);
			assert_int_equal(int_of(e, "bal"), w->bal[p][a]);
			state_bytes += sc_entity_memory_bytes(e);
		}
	assert_int_equal(sc_cache_resident_bytes(sh.cache),
			 sc_part_bytes(state_bytes, NPARTS * NACC));
	sc_reader_end(rd);
	sc_reader_close(rd);
	sc_cache_reclaim(sh.cache);
	sc_cache_stats st;
	sc_cache_stats_get(sh.cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	sc_cache_destroy(sh.cache);
	tk_failures_destroy(&sh.fail);
	free(w);
}

int main(void)
{
	seed = tk_seed("stress_residency");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_residency_stress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
