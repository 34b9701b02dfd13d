/*
 * Reclamation of superseded versions (run under ASan/LSan): thousands of
 * promote/discard cycles with views held and released; held views stay
 * intact (ASan would catch a read of freed memory); the number of versions
 * waiting follows the oldest pin exactly; memory returns to the live set
 * once pins end; a thread that exits while pinned releases its pin, and
 * only the pins of readers it used last (a reader may move between
 * threads); reader slots run out cleanly; sc_reader_get and view diffs.
 *
 * SC_TEST_SEED=n repeats a run.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
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
#include "tests/support/refstate.h"
#include "tests/support/testkit.h"

static uint64_t seed, rs_state;

static uint64_t rnd(void)
{
	return tk_rand(&rs_state);
}

static int setup_seed(void **state)
{
	(void)state;
	seed = tk_seed("test_cache_reclaim");
	return 0;
}

static void apply_set(sc_cache *cache, const char *id, int64_t x, uint64_t pos)
{
	sc_attr a = {.name = {"x", 1}, .value.type = SC_VALUE_INT};
	a.value.u.i = x;
	sc_event ev = {.position = pos,
		       .entity = {id, strlen(id)},
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1};
	sc_error err;
	if (sc_cache_apply(cache, &ev, &err))
		fail_msg("apply: %s", err.message);
}

/* ==== many cycles with held views ========================================= */

#define NHELD 8

typedef struct held {
	sc_reader *reader;
	const sc_view *view; /* NULL: not pinned */
	uint64_t hash;	     /* of the view when pinned */
} held;

static void test_cycles_with_held_views(void **state)
{
	(void)state;
	rs_state = seed;
	sc_cache *cache;
	sc_error err;
	sc_cache_options opt = {.seed = seed};
	assert_int_equal(sc_cache_create(&opt, &cache, &err), 0);
	held h[NHELD];
	for (int i = 0; i < NHELD; i++) {
		assert_int_equal(sc_reader_open(cache, &h[i].reader, &err), 0);
		h[i].view = NULL;
	}
	uint64_t pos = 0, version = 0;
	char id[32];
	size_t cycles = getenv("SC_TEST_SHORT") ? 4000 : 20000;
	for (size_t c = 0; c < cycles; c++) {
		size_t n = 1 + rnd() % 20;
		for (size_t k = 0; k < n; k++) {
			snprintf(id, sizeof id, "k%u", (unsigned)(rnd() % 500));
			if (rnd() % 8 == 0) {
				sc_event del = {.position = ++pos,
						.entity = {id, strlen(id)},
						.type = SC_EVENT_DELETE};
				assert_int_equal(
				    sc_cache_apply(cache, &del, NULL), 0);
			} else {
				apply_set(cache, id, (int64_t)rnd(), ++pos);
			}
		}
		if (rnd() % 4 == 0) {
			sc_cache_discard(cache);
		} else {
			assert_int_equal(sc_cache_promote(cache), 0);
			version++;
		}
		/* Pin, re-check or release some views. */
		int i = (int)(rnd() % NHELD);
		if (!h[i].view) {
			h[i].view = sc_reader_begin(h[i].reader);
			assert_int_equal(sc_view_version(h[i].view), version);
			h[i].hash = tk_refstate_view_hash(h[i].view);
		} else if (rnd() % 3 == 0) {
			sc_reader_end(h[i].reader);
			h[i].view = NULL;
		}
		int j = (int)(rnd() % NHELD);
		if (h[j].view)
			assert_true(tk_refstate_view_hash(h[j].view) ==
				    h[j].hash);

		/* Versions alive span from the oldest pin to the newest. */
		sc_cache_reclaim(cache);
		uint64_t oldest = version;
		for (int k = 0; k < NHELD; k++)
			if (h[k].view && sc_view_version(h[k].view) < oldest)
				oldest = sc_view_version(h[k].view);
		sc_cache_stats st;
		sc_cache_stats_get(cache, &st);
		assert_int_equal(st.version, version);
		assert_int_equal(st.versions_awaiting, version - oldest);
		assert_int_equal(st.versions_alive, version - oldest + 1);
		if (oldest == version) {
			assert_int_equal(st.bytes_awaiting, 0);
			assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
		} else {
			assert_int_equal(st.oldest_pinned, oldest);
		}
	}
	for (int i = 0; i < NHELD; i++) {
		if (h[i].view)
			assert_true(tk_refstate_view_hash(h[i].view) ==
				    h[i].hash);
		sc_reader_end(h[i].reader);
	}
	assert_true(sc_cache_reclaim(cache) > 0 || version == 0);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	assert_int_equal(st.nodes_awaiting, 0);
	assert_int_equal(st.oldest_pinned, 0);
	assert_int_equal(st.readers, NHELD);
	assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
	for (int i = 0; i < NHELD; i += 2)
		sc_reader_close(h[i].reader);
	/* the remaining readers are closed by destroy */
	sc_cache_destroy(cache);
}

/* ==== a pinned thread that exits ========================================== */

typedef struct handoff_arg {
	sc_cache *cache;
	sc_reader *reader;
	pthread_barrier_t *handed; /* NULL: pin and exit at once */
	uint64_t pinned;
} handoff_arg;

/* Pin through the reader (opening it first when there is none) and exit
 * without ending the pin; with a barrier, first hand the reader to the
 * main thread and wait until told to exit. */
static void *use_and_exit(void *p)
{
	handoff_arg *a = p;
	if (!a->reader && sc_reader_open(a->cache, &a->reader, NULL))
		return NULL;
	a->pinned = sc_view_version(sc_reader_begin(a->reader));
	if (a->handed) {
		pthread_barrier_wait(a->handed); /* handed over */
		pthread_barrier_wait(a->handed); /* may exit */
	}
	return NULL;
}

static void test_thread_exit_releases_pin(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	apply_set(cache, "a", 1, 1);
	assert_int_equal(sc_cache_promote(cache), 0);

	/* A reader held by this thread keeps versions while pinned... */
	sc_reader *mine;
	assert_int_equal(sc_reader_open(cache, &mine, NULL), 0);
	(void)sc_reader_begin(mine);
	apply_set(cache, "a", 2, 2);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 1);
	assert_int_equal(st.oldest_pinned, 1);
	sc_reader_end(mine);

	/* ...a thread that exits pinned does not. */
	handoff_arg a = {.cache = cache};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, use_and_exit, &a), 0);
	pthread_join(th, NULL);
	assert_non_null(a.reader);
	assert_int_equal(a.pinned, 2);
	for (int i = 3; i < 10; i++) {
		apply_set(cache, "a", i, (uint64_t)i);
		assert_int_equal(sc_cache_promote(cache), 0);
	}
	sc_cache_reclaim(cache);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.oldest_pinned, 0);
	assert_int_equal(st.readers, 2); /* the slot stays claimed */
	assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
	sc_reader_close(a.reader);
	sc_reader_close(mine);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.readers, 0);
	sc_cache_destroy(cache);
}

/* ==== a reader that moves between threads =============================== */

static void test_reader_moves_between_threads(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	apply_set(cache, "a", 1, 1);
	assert_int_equal(sc_cache_promote(cache), 0);

	/* A thread pins version 1 and hands the reader over; this thread pins
	 * the same version through it (nothing to repin) and keeps the view
	 * while the first thread exits: its exit must not drop our pin. */
	pthread_barrier_t handed;
	assert_int_equal(pthread_barrier_init(&handed, NULL, 2), 0);
	handoff_arg a = {.cache = cache, .handed = &handed};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, use_and_exit, &a), 0);
	pthread_barrier_wait(&handed);
	assert_non_null(a.reader);
	assert_int_equal(a.pinned, 1);
	const sc_view *v = sc_reader_begin(a.reader);
	assert_int_equal(sc_view_version(v), 1);
	pthread_barrier_wait(&handed);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&handed);
	for (int i = 2; i < 6; i++) {
		apply_set(cache, "a", i, (uint64_t)i);
		assert_int_equal(sc_cache_promote(cache), 0);
	}
	sc_cache_reclaim(cache);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.oldest_pinned, 1);
	assert_int_equal(st.versions_awaiting, 4);
	const sc_entity *e = sc_view_get(v, (sc_str){"a", 1});
	assert_non_null(e);
	sc_value x;
	assert_true(sc_entity_find(e, (sc_str){"x", 1}, &x));
	assert_int_equal(x.u.i, 1);
	sc_reader_end(a.reader);
	sc_cache_reclaim(cache);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);

	/* Threads that take the reader one after another, each pinning and
	 * exiting (glibc hands a new thread the pthread_t of one joined
	 * before): each one's exit releases the pin it left. */
	for (int t = 0; t < 4; t++) {
		handoff_arg b = {.cache = cache, .reader = a.reader};
		assert_int_equal(pthread_create(&th, NULL, use_and_exit, &b),
				 0);
		pthread_join(th, NULL);
		assert_int_equal(b.pinned, 5 + (uint64_t)t);
		apply_set(cache, "a", 6 + t, 6 + (uint64_t)t);
		assert_int_equal(sc_cache_promote(cache), 0);
		sc_cache_reclaim(cache);
		sc_cache_stats_get(cache, &st);
		assert_int_equal(st.versions_awaiting, 0);
		assert_int_equal(st.oldest_pinned, 0);
	}
	/* This thread, its owner again, pins and ends as before. */
	v = sc_reader_begin(a.reader);
	assert_int_equal(sc_view_version(v), 9);
	apply_set(cache, "a", 10, 10);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.oldest_pinned, 9);
	sc_reader_end(a.reader);
	sc_reader_close(a.reader);
	assert_int_equal(sc_cache_reclaim(cache), 1);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.readers, 0);
	assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
	sc_cache_destroy(cache);
}

/* ==== reader slots, get, diff ============================================= */

static void test_reader_slots_run_out(void **state)
{
	(void)state;
	sc_cache *cache;
	sc_cache_options opt = {.max_readers = 3};
	assert_int_equal(sc_cache_create(&opt, &cache, NULL), 0);
	sc_reader *r[4];
	sc_error err;
	for (int i = 0; i < 3; i++)
		assert_int_equal(sc_reader_open(cache, &r[i], &err), 0);
	assert_int_equal(sc_reader_open(cache, &r[3], &err), SC_EREADERS);
	assert_null(r[3]);
	assert_non_null(strstr(err.message, "max_readers"));
	sc_reader_close(r[1]);
	assert_int_equal(sc_reader_open(cache, &r[3], &err), 0);
	sc_reader_close(NULL);
	sc_cache_destroy(cache);
	sc_cache_destroy(NULL);
}

static void test_reader_get_follows_promotes(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	sc_reader *r;
	assert_int_equal(sc_reader_open(cache, &r, NULL), 0);
	sc_str id = {"a", 1};
	assert_null(sc_reader_get(r, id));
	apply_set(cache, "a", 1, 1);
	assert_null(sc_reader_get(r, id)); /* pending is invisible */
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_entity *e = sc_reader_get(r, id);
	assert_non_null(e);
	assert_int_equal(sc_entity_position(e), 1);
	/* the pin from get keeps e's version */
	apply_set(cache, "a", 2, 2);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 1);
	sc_value v;
	assert_true(sc_entity_find(e, (sc_str){"x", 1}, &v));
	assert_int_equal(v.u.i, 1);
	e = sc_reader_get(r, id); /* re-pins the newest */
	assert_int_equal(sc_entity_position(e), 2);
	sc_cache_reclaim(cache);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	sc_reader_end(r);
	sc_reader_close(r);
	sc_cache_destroy(cache);
}

typedef struct diff_rec {
	int added, removed, changed;
} diff_rec;

static int rec_cb(void *ctx, sc_diff_kind kind, const sc_entity *old,
		  const sc_entity *new_)
{
	diff_rec *d = ctx;
	if (kind == SC_DIFF_ADDED && !old && new_)
		d->added++;
	else if (kind == SC_DIFF_REMOVED && old && !new_)
		d->removed++;
	else if (kind == SC_DIFF_CHANGED && old && new_)
		d->changed++;
	else
		fail_msg("inconsistent diff entry");
	return 0;
}

static int stop_cb(void *ctx, sc_diff_kind kind, const sc_entity *old,
		   const sc_entity *new_)
{
	(void)ctx, (void)kind, (void)old, (void)new_;
	return 77;
}

static void test_view_diff_two_readers(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	char id[16];
	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof id, "e%d", i);
		apply_set(cache, id, i, (uint64_t)i + 1);
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_reader *r1, *r2;
	assert_int_equal(sc_reader_open(cache, &r1, NULL), 0);
	assert_int_equal(sc_reader_open(cache, &r2, NULL), 0);
	const sc_view *a = sc_reader_begin(r1);
	apply_set(cache, "e1", 1000, 101); /* changed */
	apply_set(cache, "new", 5, 102);   /* added */
	sc_event del = {
	    .position = 103, .entity = {"e2", 2}, .type = SC_EVENT_DELETE};
	assert_int_equal(sc_cache_apply(cache, &del, NULL), 0);
	diff_rec pd = {0};
	assert_int_equal(sc_cache_pending_diff(cache, rec_cb, &pd), 0);
	assert_int_equal(pd.added, 1);
	assert_int_equal(pd.removed, 1);
	assert_int_equal(pd.changed, 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *b = sc_reader_begin(r2);
	assert_int_equal(sc_view_version(b), sc_view_version(a) + 1);
	assert_int_equal(sc_view_position(b), 103);
	diff_rec d = {0};
	assert_int_equal(sc_view_diff(a, b, rec_cb, &d), 0);
	assert_int_equal(d.added, 1);
	assert_int_equal(d.removed, 1);
	assert_int_equal(d.changed, 1);
	assert_int_equal(sc_view_diff(a, b, stop_cb, NULL), 77);
	diff_rec none = {0};
	assert_int_equal(sc_view_diff(b, b, rec_cb, &none), 0);
	assert_int_equal(none.added + none.removed + none.changed, 0);
	assert_int_equal(sc_cache_pending_diff(cache, rec_cb, &none), 0);
	sc_reader_close(r1);
	sc_reader_close(r2);
	sc_cache_destroy(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cycles_with_held_views),
	    cmocka_unit_test(test_thread_exit_releases_pin),
	    cmocka_unit_test(test_reader_moves_between_threads),
	    cmocka_unit_test(test_reader_slots_run_out),
	    cmocka_unit_test(test_reader_get_follows_promotes),
	    cmocka_unit_test(test_view_diff_two_readers),
	};
	return cmocka_run_group_tests(tests, setup_seed, NULL);
}
