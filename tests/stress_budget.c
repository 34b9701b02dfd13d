/*
 * Concurrency stress for the memory budget (run under TSan and ASan).
 *
 * A store with a budget far below its state: named partitions of
 * accounts, each account's state holding "bal" and "neg" = -bal, set
 * together by every event (a torn or mixed state breaks the pair). The
 * writer appends batches to random partitions, resident or cold, while
 * the checkpoint thread checkpoints (and so loads) partitions whose tail
 * is due. Readers, each with its own cache reader:
 *   - read random accounts through sc_store_get_in (loading cold
 *     partitions, evicting others): the pair holds;
 *   - pin views with sc_store_begin_in and walk the partition: every
 *     account whole, and the view's version and position never go back;
 *   - make partitions resident and read the store's figures.
 * At the end every partition, loaded, equals the writer's ledger.
 *
 * SC_TEST_SEED=n repeats the writer's choices; SC_TEST_SHORT=1 shortens.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "statecache/cache.h"
#include "statecache/store.h"
#include "tests/support/testkit.h"
#include "tests/support/thread_testkit.h"

#define NPARTS	 16
#define NACC	 24
#define NREADERS 3

static uint64_t seed;
static char tmpl[] = "/tmp/sc_stress_budget.XXXXXX";
static char part_names[NPARTS][16];
static sc_str parts[NPARTS];
static char acc_names[NACC][16];
static sc_str accs[NACC];

typedef struct shared {
	sc_store *store;
	_Atomic bool done;
	_Atomic int failures;
	_Atomic size_t gets, walks;
	char why[256];
	pthread_mutex_t why_lock;
	/* Readers that have made a get (or stopped): the writer starts once
	 * all have, so every reader reads while the writer writes, however
	 * the threads are scheduled. */
	tk_gate started;
} shared;

static void report(shared *sh, const char *fmt, ...)
{
	pthread_mutex_lock(&sh->why_lock);
	if (!atomic_load(&sh->failures)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(sh->why, sizeof sh->why, fmt, ap);
		va_end(ap);
	}
	atomic_fetch_add(&sh->failures, 1);
	pthread_mutex_unlock(&sh->why_lock);
}

static bool attr_int(const sc_entity *e, const char *name, int64_t *out)
{
	sc_value v;
	if (!sc_entity_find(e, (sc_str){name, strlen(name)}, &v) ||
	    v.type != SC_VALUE_INT)
		return false;
	*out = v.u.i;
	return true;
}

/* The pair holds: bal and neg present, neg == -bal. */
static bool whole(const sc_entity *e)
{
	int64_t bal, neg;
	return attr_int(e, "bal", &bal) && attr_int(e, "neg", &neg) &&
	       neg == -bal;
}

typedef struct reader_arg {
	shared *sh;
	uint64_t rng;
} reader_arg;

static void *reader_main(void *vp)
{
	reader_arg *ra = vp;
	shared *sh = ra->sh;
	sc_reader *r;
	if (sc_reader_open(sc_store_cache(sh->store), &r, NULL)) {
		report(sh, "reader_open failed");
		tk_gate_arrive(&sh->started);
		return NULL;
	}
	uint64_t last_version = 0, last_pos = 0;
	bool counted = false;
	while (!atomic_load(&sh->done) && !atomic_load(&sh->failures)) {
		sc_str p = parts[tk_rand_below(&ra->rng, NPARTS)];
		unsigned op = (unsigned)tk_rand_below(&ra->rng, 10);
		sc_error err;
		if (op < 6) {
			const sc_entity *e;
			int rc = sc_store_get_in(
			    sh->store, r, p,
			    accs[tk_rand_below(&ra->rng, NACC)], &e, &err);
			if (rc == 0 && !whole(e))
				report(sh, "torn account in %.*s", (int)p.len,
				       p.ptr);
			else if (rc && rc != SC_NOTFOUND)
				report(sh, "get_in: %s", err.message);
			sc_reader_end(r);
			atomic_fetch_add(&sh->gets, 1);
			if (!counted) {
				counted = true;
				tk_gate_arrive(&sh->started);
			}
		} else if (op < 9) {
			const sc_view *v;
			int rc = sc_store_begin_in(sh->store, r, p, &v, &err);
			if (rc) {
				report(sh, "begin_in: %s", err.message);
				break;
			}
			uint64_t ver = sc_view_version(v);
			uint64_t pos = sc_view_position(v);
			if (ver < last_version || pos < last_pos)
				report(sh,
				       "a view went back: version %llu after "
				       "%llu, position %llu after %llu",
				       (unsigned long long)ver,
				       (unsigned long long)last_version,
				       (unsigned long long)pos,
				       (unsigned long long)last_pos);
			last_version = ver;
			last_pos = pos;
			sc_view_iter it;
			sc_view_iter_init_in(v, p, &it);
			for (const sc_entity *e; (e = sc_view_iter_next(&it));)
				if (!whole(e))
					report(sh, "torn account in a walk");
			sc_reader_end(r);
			atomic_fetch_add(&sh->walks, 1);
		} else {
			if (sc_store_partition_make_resident(sh->store, p,
							     &err))
				report(sh, "make_resident: %s", err.message);
			sc_store_stats st;
			if (sc_store_stats_get(sh->store, &st, &err))
				report(sh, "stats: %s", err.message);
		}
	}
	if (!counted)
		tk_gate_arrive(&sh->started);
	sc_reader_close(r);
	return NULL;
}

static void test_stress(void **state)
{
	(void)state;
	seed = tk_seed("stress_budget");
	bool short_run = getenv("SC_TEST_SHORT") != NULL;
	char *dir = mkdtemp(tmpl);
	assert_non_null(dir);
	for (int i = 0; i < NPARTS; i++) {
		snprintf(part_names[i], sizeof part_names[i], "t%02d", i);
		parts[i] = (sc_str){part_names[i], strlen(part_names[i])};
	}
	for (int i = 0; i < NACC; i++) {
		snprintf(acc_names[i], sizeof acc_names[i], "acc%02d", i);
		accs[i] = (sc_str){acc_names[i], strlen(acc_names[i])};
	}
	sc_store_options o = {.create = true,
			      .durability = SC_DURABILITY_NOSYNC,
			      .memory_budget = 6000,
			      .checkpoint_tail = 40};
	shared sh = {0};
	pthread_mutex_init(&sh.why_lock, NULL);
	tk_gate_init(&sh.started);
	sc_error err;
	assert_int_equal(sc_store_open(dir, &o, &sh.store, &err), 0);
	static int64_t ledger[NPARTS][NACC];
	static bool set[NPARTS][NACC];
	pthread_t th[NREADERS];
	reader_arg ra[NREADERS];
	for (int i = 0; i < NREADERS; i++) {
		ra[i] = (reader_arg){&sh, seed ^ (0x9e37u * (unsigned)(i + 1))};
		assert_int_equal(
		    pthread_create(&th[i], NULL, reader_main, &ra[i]), 0);
	}
	tk_gate_wait(&sh.started, NREADERS);
	uint64_t rng = seed;
	int batches = short_run ? 300 : 2000;
	for (int b = 0; b < batches && !atomic_load(&sh.failures); b++) {
		sc_event evs[6];
		sc_attr attrs[6][2];
		size_t n = 1 + (size_t)tk_rand_below(&rng, 6);
		int pi[6], ai[6];
		for (size_t i = 0; i < n; i++) {
			pi[i] = (int)tk_rand_below(&rng, NPARTS);
			ai[i] = (int)tk_rand_below(&rng, NACC);
			int64_t bal = (int64_t)tk_rand_below(&rng, 1000000);
			attrs[i][0] = (sc_attr){
			    {"bal", 3}, {.type = SC_VALUE_INT, .u.i = bal}};
			attrs[i][1] = (sc_attr){
			    {"neg", 3}, {.type = SC_VALUE_INT, .u.i = -bal}};
			evs[i] = (sc_event){.partition = parts[pi[i]],
					    .entity = accs[ai[i]],
					    .type = SC_EVENT_REPLACE,
					    .attrs = attrs[i],
					    .nattrs = 2};
		}
		int rc = sc_store_append(sh.store, evs, n, NULL, &err);
		if (rc)
			fail_msg("append: %s", err.message);
		for (size_t i = 0; i < n; i++) {
			ledger[pi[i]][ai[i]] = attrs[i][0].value.u.i;
			set[pi[i]][ai[i]] = true;
		}
	}
	atomic_store(&sh.done, true);
	for (int i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	if (atomic_load(&sh.failures))
		fail_msg("%s", sh.why);
	/* Every partition, loaded, is the ledger. */
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(sh.store), &r, NULL), 0);
	for (int p = 0; p < NPARTS; p++) {
		for (int a = 0; a < NACC; a++) {
			const sc_entity *e;
			int rc = sc_store_get_in(sh.store, r, parts[p], accs[a],
						 &e, &err);
			if (!set[p][a]) {
				assert_int_equal(rc, SC_NOTFOUND);
				continue;
			}
			assert_int_equal(rc, 0);
			int64_t bal;
			assert_true(attr_int(e, "bal", &bal));
			assert_true(bal == ledger[p][a]);
			assert_true(whole(e));
		}
	}
	sc_reader_end(r);
	sc_reader_close(r);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(sh.store, &st, &err), 0);
	assert_true(st.partition_loads > 0);
	assert_true(st.partition_evictions > 0);
	assert_true(atomic_load(&sh.gets) > 0);
	fprintf(stderr,
		"stress_budget: %d batches, %zu gets, %zu walks, %llu loads, "
		"%llu evictions\n",
		batches, atomic_load(&sh.gets), atomic_load(&sh.walks),
		(unsigned long long)st.partition_loads,
		(unsigned long long)st.partition_evictions);
	sc_store_close(sh.store);
	tk_gate_destroy(&sh.started);
	pthread_mutex_destroy(&sh.why_lock);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
