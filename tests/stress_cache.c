/*
 * Concurrency stress for the versioned cache (run under TSan and ASan).
 *
 * One writer applies random batches of transfers between accounts and
 * promotes or discards each batch; the sum of the integer attribute "bal"
 * over all entities is the same in every promoted version (mid-batch
 * pending states break it, and accounts are closed and opened, so a reader
 * that saw a pending or mixed state would notice). Reader threads:
 *   - pin views and iterate everything, checking the sum, the count, and
 *     that their version numbers never decrease;
 *   - hold some pins across many promotes, re-checking the held view;
 *   - look up random ids with sc_reader_get;
 *   - diff two pinned views (two readers) and check that the changes
 *     balance.
 * One reader thread exits while still pinned; its exit hook must release
 * the pin. At the end: reclaim, no version waits, memory is the live set.
 *
 * A second run applies the batches with sc_cache_apply_batch in a cache of
 * three apply lanes (worker threads of the cache), batches big enough to
 * be split among them, while the readers run the same checks and a stats
 * thread reads the counters the lanes fold in; at the end every account
 * equals the writer's own ledger.
 *
 * The writer runs a bounded number of batches; readers run until it is done.
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
#include <time.h>

#include <cmocka.h>

#include "cache/cache_internal.h"
#include "statecache/cache.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/testkit.h"
#include "tests/support/thread_testkit.h"

#define NACCOUNTS 256
#define START_BAL 1000
#define NREADERS  3

static uint64_t seed;

typedef struct shared {
	sc_cache *cache;
	_Atomic bool done;
	_Atomic size_t views_checked;
	_Atomic size_t long_pins;
	_Atomic size_t diffs;
	_Atomic size_t gets;
	tk_failures fail;
	/* Readers that have checked a view (or stopped): the writer starts
	 * once all have, however the threads are scheduled. */
	tk_gate started;
} shared;

static sc_str id_of(char *buf, size_t cap, unsigned i)
{
	int n = snprintf(buf, cap, "acct-%u", i);
	return (sc_str){buf, (size_t)n};
}

static int64_t bal_of(const sc_entity *e)
{
	sc_value v;
	if (!sc_entity_find(e, (sc_str){"bal", 3}, &v) ||
	    v.type != SC_VALUE_INT)
		return INT64_MIN;
	return v.u.i;
}

/* Sum of "bal" over the view; *count gets the number iterated. */
static int64_t view_sum(const sc_view *view, size_t *count)
{
	int64_t sum = 0;
	size_t n = 0;
	sc_view_iter it;
	sc_view_iter_init(view, &it);
	for (const sc_entity *e; (e = sc_view_iter_next(&it)); n++)
		sum += bal_of(e);
	*count = n;
	return sum;
}

/* ==== writer ============================================================== */

static void set_bal(sc_cache *cache, sc_str id, int64_t bal, uint64_t pos)
{
	sc_attr a[2] = {{.name = {"bal", 3}, .value.type = SC_VALUE_INT},
			{.name = {"note", 4}, .value.type = SC_VALUE_STRING}};
	a[0].value.u.i = bal;
	a[1].value.u.s = (sc_str){"transfer", 8};
	sc_event ev = {.position = pos,
		       .entity = id,
		       .type = SC_EVENT_SET,
		       .attrs = a,
		       .nattrs = 2,
		       .time = (int64_t)pos};
	sc_error err;
	int rc = sc_cache_apply(cache, &ev, &err);
	if (rc)
		fail_msg("apply: %s", err.message);
}

static void writer_run(shared *sh, size_t batches)
{
	sc_cache *cache = sh->cache;
	uint64_t r = seed, pos = 0;
	char b1[32], b2[32];
	/* Open accounts 0..NACCOUNTS/2 with START_BAL each; the others are
	 * closed and open over time. */
	for (unsigned i = 0; i < NACCOUNTS; i++)
		set_bal(cache, id_of(b1, sizeof b1, i),
			i < NACCOUNTS / 2 ? START_BAL : 0, ++pos);
	assert_int_equal(sc_cache_promote(cache), 0);

	for (size_t b = 0; b < batches; b++) {
		uint64_t pos0 = pos;
		size_t n = 1 + tk_rand(&r) % 12;
		for (size_t k = 0; k < n; k++) {
			unsigned x = (unsigned)(tk_rand(&r) % NACCOUNTS);
			unsigned y = (unsigned)(tk_rand(&r) % NACCOUNTS);
			if (x == y)
				continue;
			sc_str ix = id_of(b1, sizeof b1, x);
			sc_str iy = id_of(b2, sizeof b2, y);
			const sc_entity *ex = sc_cache_pending_get(cache, ix);
			const sc_entity *ey = sc_cache_pending_get(cache, iy);
			int64_t bx = ex ? bal_of(ex) : 0;
			int64_t by = ey ? bal_of(ey) : 0;
			if (tk_rand(&r) % 10 == 0 && ex) {
				/* close x: move everything to y first */
				set_bal(cache, iy, by + bx, ++pos);
				sc_event del = {.position = ++pos,
						.entity = ix,
						.type = SC_EVENT_DELETE};
				assert_int_equal(
				    sc_cache_apply(cache, &del, NULL), 0);
				continue;
			}
			int64_t amt = (int64_t)(tk_rand(&r) % 50);
			set_bal(cache, ix, bx - amt, ++pos);
			set_bal(cache, iy, by + amt, ++pos);
		}
		if (tk_rand(&r) % 7 == 0) {
			sc_cache_discard(cache);
			pos = pos0;
		} else {
			assert_int_equal(sc_cache_promote(cache), 0);
		}
	}
	atomic_store_explicit(&sh->done, true, memory_order_release);
}

/* The same transfers as writer_run, decided from the writer's own ledger
 * and applied a batch at a time by the cache's lanes. */
typedef struct ledger {
	int64_t bal[NACCOUNTS];
	bool open[NACCOUNTS];
} ledger;

#define LANES_MAX_EVENTS 1200

/* A batch being made: its events, and the storage they point into. */
typedef struct lanes_batch {
	char ids[NACCOUNTS][16];
	sc_event evs[LANES_MAX_EVENTS];
	sc_attr attrs[LANES_MAX_EVENTS][2];
	size_t n;
	uint64_t pos;
} lanes_batch;

/* Append to b: a delete of account a, or a set of its ledger balance. */
static void put_event(lanes_batch *b, const ledger *led, unsigned a, bool del)
{
	size_t n = b->n++;
	uint64_t pos = ++b->pos;
	b->evs[n] = (sc_event){.position = pos,
			       .entity = {b->ids[a], strlen(b->ids[a])},
			       .time = (int64_t)pos};
	if (del) {
		b->evs[n].type = SC_EVENT_DELETE;
		return;
	}
	b->attrs[n][0] = (sc_attr){.name = {"bal", 3},
				   .value.type = SC_VALUE_INT,
				   .value.u.i = led->bal[a]};
	b->attrs[n][1] = (sc_attr){.name = {"note", 4},
				   .value.type = SC_VALUE_STRING,
				   .value.u.s = {"transfer", 8}};
	b->evs[n].type = SC_EVENT_SET;
	b->evs[n].attrs = b->attrs[n];
	b->evs[n].nattrs = 2;
}

static void writer_run_lanes(shared *sh, size_t batches, ledger *led)
{
	sc_cache *cache = sh->cache;
	uint64_t r = seed;
	static lanes_batch lb;
	lanes_batch *b = &lb;
	b->n = 0;
	b->pos = 0;
	for (unsigned i = 0; i < NACCOUNTS; i++)
		id_of(b->ids[i], sizeof b->ids[i], i);
	for (unsigned i = 0; i < NACCOUNTS; i++) {
		led->bal[i] = i < NACCOUNTS / 2 ? START_BAL : 0;
		led->open[i] = true;
		put_event(b, led, i, false);
	}
	sc_error err;
	if (sc_cache_apply_batch(cache, b->evs, b->n, NULL, &err))
		fail_msg("apply_batch: %s", err.message);
	assert_int_equal(sc_cache_promote(cache), 0);

	for (size_t k = 0; k < batches; k++) {
		uint64_t pos0 = b->pos;
		ledger before = *led;
		b->n = 0;
		/* Most batches are split among the lanes, some are not. */
		size_t transfers = tk_rand(&r) % 4 ? 150 + tk_rand(&r) % 400
						   : 1 + tk_rand(&r) % 20;
		for (size_t t = 0; t < transfers; t++) {
			unsigned x = (unsigned)(tk_rand(&r) % NACCOUNTS);
			unsigned y = (unsigned)(tk_rand(&r) % NACCOUNTS);
			if (x == y)
				continue;
			if (tk_rand(&r) % 10 == 0 && led->open[x]) {
				led->bal[y] += led->bal[x];
				led->bal[x] = 0;
				led->open[x] = false;
				led->open[y] = true;
				put_event(b, led, y, false);
				put_event(b, led, x, true);
				continue;
			}
			int64_t amt = (int64_t)(tk_rand(&r) % 50);
			led->bal[x] -= amt;
			led->bal[y] += amt;
			led->open[x] = led->open[y] = true;
			put_event(b, led, x, false);
			put_event(b, led, y, false);
		}
		if (sc_cache_apply_batch(cache, b->evs, b->n, NULL, &err))
			fail_msg("apply_batch: %s", err.message);
		if (tk_rand(&r) % 7 == 0) {
			sc_cache_discard(cache);
			b->pos = pos0;
			*led = before;
		} else {
			assert_int_equal(sc_cache_promote(cache), 0);
		}
	}
	atomic_store_explicit(&sh->done, true, memory_order_release);
}

/* ==== readers ============================================================= */

typedef struct reader_arg {
	shared *sh;
	unsigned index;
	bool exit_pinned; /* leave the thread with a pin held */
	sc_reader *left_open;
} reader_arg;

static bool check_view(shared *sh, const sc_view *view, uint64_t *last,
		       const char *what)
{
	size_t n;
	int64_t sum = view_sum(view, &n);
	uint64_t ver = sc_view_version(view);
	if (sum != (int64_t)(NACCOUNTS / 2) * START_BAL && ver > 0) {
		tk_failure(&sh->fail, "%s: version %llu sums to %lld", what,
			   (unsigned long long)ver, (long long)sum);
		return false;
	}
	if (n != sc_view_len(view)) {
		tk_failure(&sh->fail, "%s: iterated %zu, len %zu", what, n,
			   sc_view_len(view));
		return false;
	}
	if (ver < *last) {
		tk_failure(&sh->fail, "%s: version went back from %llu to %llu",
			   what, (unsigned long long)*last,
			   (unsigned long long)ver);
		return false;
	}
	*last = ver;
	atomic_fetch_add_explicit(&sh->views_checked, 1, memory_order_relaxed);
	return true;
}

typedef struct diff_sum {
	int64_t delta;
	size_t n;
} diff_sum;

static int diff_cb(void *ctx, sc_diff_kind kind, const sc_entity *old,
		   const sc_entity *new_)
{
	diff_sum *d = ctx;
	(void)kind;
	d->delta += (new_ ? bal_of(new_) : 0) - (old ? bal_of(old) : 0);
	d->n++;
	return 0;
}

static bool writer_done(shared *sh)
{
	return atomic_load_explicit(&sh->done, memory_order_acquire);
}

static void *reader_main(void *p)
{
	reader_arg *ra = p;
	shared *sh = ra->sh;
	sc_reader *rd, *rd2;
	sc_error err;
	if (sc_reader_open(sh->cache, &rd, &err) ||
	    sc_reader_open(sh->cache, &rd2, &err)) {
		tk_failure(&sh->fail, "reader_open: %s", err.message);
		tk_gate_arrive(&sh->started);
		return NULL;
	}
	uint64_t r = seed * 7919 + ra->index + 1, last = 0, last2 = 0;
	char buf[32];
	bool arrived = false;
	while (!writer_done(sh) && !tk_failures_count(&sh->fail)) {
		unsigned what = (unsigned)(tk_rand(&r) % 100);
		if (what < 40) {
			const sc_view *v = sc_reader_begin(rd);
			check_view(sh, v, &last, "scan");
			sc_reader_end(rd);
			if (!arrived) {
				arrived = true;
				tk_gate_arrive(&sh->started);
			}
		} else if (what < 45) {
			/* Hold a pin across many promotes (bounded by the
			 * writer finishing), re-checking the same view. */
			const sc_view *v = sc_reader_begin(rd);
			uint64_t held = sc_view_version(v);
			uint64_t mine = last;
			for (int k = 0; k < 1000 && !writer_done(sh); k++) {
				sc_cache_stats st;
				sc_cache_stats_get(sh->cache, &st);
				if (st.version >= held + 20)
					break;
				uint64_t again = held;
				if (!check_view(sh, v, &again, "held"))
					break;
			}
			last = mine > held ? mine : held;
			atomic_fetch_add(&sh->long_pins, 1);
			sc_reader_end(rd);
		} else if (what < 50) {
			/* Two pins, older and newer: changes balance. */
			const sc_view *a = sc_reader_begin(rd);
			check_view(sh, a, &last, "diff-a");
			for (int k = 0; k < 200; k++) {
				const sc_view *tmp = sc_reader_begin(rd2);
				if (sc_view_version(tmp) > sc_view_version(a) ||
				    writer_done(sh))
					break;
			}
			const sc_view *b = sc_reader_begin(rd2);
			check_view(sh, b, &last2, "diff-b");
			diff_sum d = {0, 0};
			sc_view_diff(a, b, diff_cb, &d);
			if (d.delta != 0 && sc_view_version(a) > 0)
				tk_failure(
				    &sh->fail, "diff %llu..%llu: delta %lld",
				    (unsigned long long)sc_view_version(a),
				    (unsigned long long)sc_view_version(b),
				    (long long)d.delta);
			atomic_fetch_add(&sh->diffs, 1);
			sc_reader_end(rd2);
			sc_reader_end(rd);
		} else {
			for (int k = 0; k < 50; k++) {
				unsigned i =
				    (unsigned)(tk_rand(&r) % NACCOUNTS);
				sc_str id = id_of(buf, sizeof buf, i);
				const sc_entity *e = sc_reader_get(rd, id);
				if (e && (sc_entity_id(e).len != id.len ||
					  memcmp(sc_entity_id(e).ptr, id.ptr,
						 id.len) != 0 ||
					  bal_of(e) == INT64_MIN))
					tk_failure(&sh->fail,
						   "get %s: wrong entity", buf);
			}
			atomic_fetch_add(&sh->gets, 50);
			sc_reader_end(rd);
		}
	}
	if (!arrived)
		tk_gate_arrive(&sh->started);
	sc_reader_close(rd2);
	if (ra->exit_pinned) {
		/* Exit holding a pin: the thread-exit hook must drop it. */
		(void)sc_reader_begin(rd);
		ra->left_open = rd;
		return NULL;
	}
	sc_reader_close(rd);
	return NULL;
}

/* ==== the test ============================================================ */

static void *stats_main(void *p)
{
	shared *sh = p;
	uint64_t last = 0;
	while (!writer_done(sh)) {
		sc_cache_stats st;
		sc_cache_stats_get(sh->cache, &st);
		if (st.version < last)
			tk_failure(&sh->fail, "stats: version went back");
		last = st.version;
	}
	return NULL;
}

static void run_stress(bool lanes)
{
	seed = tk_seed("stress_cache");
	size_t batches = getenv("SC_TEST_SHORT") ? 3000 : 30000;

	shared sh = {0};
	tk_failures_init(&sh.fail);
	tk_gate_init(&sh.started);
	sc_error err;
	sc_cache_options opt = {.seed = seed, .lanes = lanes ? 3 : 1};
	assert_int_equal(sc_cache_create(&opt, &sh.cache, &err), 0);
	pthread_t stats_th;
	tk_threads_start(&stats_th, 1, stats_main, &sh, 0);
	static ledger led;
	pthread_t th[NREADERS];
	reader_arg ra[NREADERS];
	for (unsigned i = 0; i < NREADERS; i++)
		ra[i] =
		    (reader_arg){.sh = &sh, .index = i, .exit_pinned = i == 0};
	tk_threads_start(th, NREADERS, reader_main, ra, sizeof ra[0]);
	tk_gate_wait(&sh.started, NREADERS);
	if (lanes)
		writer_run_lanes(&sh, batches / 10, &led);
	else
		writer_run(&sh, batches);
	tk_threads_join(th, NREADERS);
	tk_threads_join(&stats_th, 1);
	if (tk_failures_count(&sh.fail))
		fail_msg("%d failures, first: %s (seed %llu)",
			 tk_failures_count(&sh.fail), sh.fail.first,
			 (unsigned long long)seed);
	printf("stress_cache: %zu views checked, %zu long pins, %zu diffs, "
	       "%zu gets\n",
	       atomic_load(&sh.views_checked), atomic_load(&sh.long_pins),
	       atomic_load(&sh.diffs), atomic_load(&sh.gets));
	assert_true(atomic_load(&sh.views_checked) > 0);

	/* Reader 0 exited pinned: its slot is still open, its pin gone. */
	sc_cache_stats st;
	sc_cache_stats_get(sh.cache, &st);
	assert_int_equal(st.readers, 1);
	assert_int_equal(st.oldest_pinned, 0);
	sc_cache_reclaim(sh.cache);
	sc_cache_stats_get(sh.cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	assert_int_equal(st.nodes_awaiting, 0);
	assert_int_equal(st.memory_bytes, tk_live_bytes(sh.cache));
	if (lanes) {
		char buf[32];
		for (unsigned i = 0; i < NACCOUNTS; i++) {
			const sc_entity *e = sc_cache_pending_get(
			    sh.cache, id_of(buf, sizeof buf, i));
			assert_int_equal(e != NULL, led.open[i]);
			if (e)
				assert_int_equal(bal_of(e), led.bal[i]);
		}
	}
	sc_reader_close(ra[0].left_open);
	sc_cache_destroy(sh.cache);
	tk_gate_destroy(&sh.started);
	tk_failures_destroy(&sh.fail);
}

static void test_stress(void **state)
{
	(void)state;
	run_stress(false);
}

static void test_stress_lanes(void **state)
{
	(void)state;
	run_stress(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stress),
	    cmocka_unit_test(test_stress_lanes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
