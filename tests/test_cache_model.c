/*
 * The versioned cache against the reference model (tests/support/refstate):
 * random event streams with random promote and discard points; after each
 * promote the promoted state equals the model (touched entities every
 * time, everything every so often); discarded batches are rolled back in
 * the model too. Invalid events must leave the pending version unchanged.
 * Also: allocation failures during apply and promote poison the pending
 * version, discard restores it, nothing leaks.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <errno.h>
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
#include "statecache/testing.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/refstate.h"
#include "tests/support/testkit.h"

/* ==== randomness ========================================================== */

static uint64_t seed;

static uint64_t rnd_state;

static uint64_t rnd(void)
{
	return tk_rand(&rnd_state);
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

static int setup_seed(void **state)
{
	(void)state;
	seed = tk_seed("test_cache_model");
	return 0;
}

static bool short_run(void)
{
	return getenv("SC_TEST_SHORT") != NULL;
}

/* ==== random events ======================================================= */

#define MAX_ATTRS 80
/* Events name up to NARROW_ATTRS of a..l; one in eight is wide: up to
 * MAX_ATTRS of WIDE_NAMES names, on one of the first WIDE_IDS ids, so those
 * entities grow past 64 attributes and the merge of a big old state with
 * an event (old + new > 64, with nulls in sets among them) runs too. */
#define NARROW_ATTRS 8
#define WIDE_NAMES   96
#define WIDE_IDS     8

typedef struct gen {
	unsigned nids;
	char id[32];
	char names[MAX_ATTRS][8];
	char strs[MAX_ATTRS][24];
	sc_attr attrs[MAX_ATTRS];
	sc_event ev;
	uint64_t position;
} gen;

static const char *actors[] = {"", "alice", "bob"};

/* A random valid event over ids e0..e{nids-1} and names a..l (narrow) or
 * w00..w95 (wide). */
static const sc_event *gen_event(gen *g)
{
	bool wide = rnd_below(8) == 0;
	unsigned nids = wide && g->nids > WIDE_IDS ? WIDE_IDS : g->nids;
	snprintf(g->id, sizeof g->id, "e%u", (unsigned)rnd_below(nids));
	unsigned r = (unsigned)rnd_below(100);
	sc_event_type type = r < 60   ? SC_EVENT_SET
			     : r < 70 ? SC_EVENT_UNSET
			     : r < 85 ? SC_EVENT_REPLACE
				      : SC_EVENT_DELETE;
	/* A wide delete is rare: the wide entities keep their attributes. */
	if (wide && type == SC_EVENT_DELETE && rnd_below(4))
		type = SC_EVENT_SET;
	size_t n = rnd_below(wide ? MAX_ATTRS : NARROW_ATTRS);
	for (size_t i = 0; i < n; i++) {
		int nl;
		if (wide)
			nl = snprintf(g->names[i], sizeof g->names[i], "w%02u",
				      (unsigned)rnd_below(WIDE_NAMES));
		else
			nl = snprintf(g->names[i], sizeof g->names[i], "%c",
				      'a' + (int)rnd_below(12));
		sc_attr *a = &g->attrs[i];
		a->name = (sc_str){g->names[i], (size_t)nl};
		unsigned t = (unsigned)rnd_below(6);
		a->value.type = (sc_value_type)t;
		switch (t) {
		case SC_VALUE_INT:
			a->value.u.i = (int64_t)rnd_below(1000) - 500;
			break;
		case SC_VALUE_DOUBLE:
			a->value.u.d = (double)rnd_below(1000) / 8.0;
			break;
		case SC_VALUE_BOOL:
			a->value.u.b = rnd_below(2);
			break;
		case SC_VALUE_STRING:
		case SC_VALUE_BYTES: {
			size_t len = rnd_below(sizeof g->strs[i]);
			for (size_t k = 0; k < len; k++)
				g->strs[i][k] = (char)('a' + rnd_below(26));
			a->value.u.s = (sc_str){g->strs[i], len};
			break;
		}
		default:
			break;
		}
	}
	g->ev = (sc_event){
	    .position = ++g->position,
	    .entity = {g->id, strlen(g->id)},
	    .type = type,
	    .attrs = g->attrs,
	    .nattrs = n,
	    .time = (int64_t)g->position * 1000 + (int64_t)rnd_below(999),
	    .actor = {actors[g->position % 3], strlen(actors[g->position % 3])},
	};
	return &g->ev;
}

/* Make the generated event invalid in one of several ways. */
static void spoil_event(gen *g)
{
	switch (rnd_below(5)) {
	case 0:
		g->ev.entity.len = 0;
		break;
	case 1:
		g->ev.entity.len = SC_ENTITY_ID_MAX + 1;
		break;
	case 2:
		g->ev.type = (sc_event_type)(7 + rnd_below(3));
		break;
	default:
		g->ev.type = SC_EVENT_SET;
		g->attrs[0].name = (sc_str){g->names[0], 0};
		g->attrs[0].value.type = SC_VALUE_INT;
		if (rnd_below(2)) {
			g->attrs[0].name.len = 1;
			g->attrs[0].value.type = (sc_value_type)17;
		}
		g->ev.nattrs = 1 + rnd_below(NARROW_ATTRS - 1);
		break;
	}
}

/* ==== helpers ============================================================= */

typedef struct diff_check {
	const tk_refstate *rs;
	size_t count;
	bool ok;
	char why[256];
} diff_check;

static int diff_cb(void *ctx, sc_diff_kind kind, const sc_entity *old,
		   const sc_entity *new_)
{
	diff_check *d = ctx;
	d->count++;
	const sc_entity *e = new_ ? new_ : old;
	const tk_refentity *re = tk_refstate_lookup(d->rs, sc_entity_id(e));
	switch (kind) {
	case SC_DIFF_ADDED:
		d->ok &=
		    !old && new_ &&
		    tk_refstate_entity_equal(re, new_, d->why, sizeof d->why);
		break;
	case SC_DIFF_REMOVED:
		d->ok &= old && !new_ && !re;
		break;
	case SC_DIFF_CHANGED:
		d->ok &=
		    old && new_ && old != new_ &&
		    tk_refstate_entity_equal(re, new_, d->why, sizeof d->why);
		break;
	}
	return 0;
}

/* ==== the model run ======================================================= */

static uint64_t collide_hash(const void *key, size_t len, uint64_t s)
{
	/* 16 distinct hashes: deep collision chains everywhere. */
	const unsigned char *p = key;
	uint64_t h = s;
	for (size_t i = 0; i < len; i++)
		h = h * 31 + p[i];
	return (h & 15) * 0x9E3779B97F4A7C15ull;
}

static void run_model(size_t nevents, unsigned nids, sc_hamt_hash_fn hash,
		      unsigned hamt_flags)
{
	rnd_state = seed ^ 0x5DEECE66Dull ^ nevents;
	sc_cache_options opt = {
	    .seed = 42, .hash = hash, .hamt_flags = hamt_flags};
	sc_cache *cache;
	sc_error err;
	assert_int_equal(sc_cache_create(&opt, &cache, &err), 0);
	sc_reader *reader, *lagger;
	assert_int_equal(sc_reader_open(cache, &reader, &err), 0);
	/* Pins a version for a few batches now and then, so superseded
	 * versions wait with their garbage. */
	assert_int_equal(sc_reader_open(cache, &lagger, &err), 0);
	bool lagging = false;
	tk_refstate *rs = tk_refstate_new();
	gen g = {.nids = nids};
	sc_str *touched = malloc(1000 * sizeof *touched);
	char(*touched_ids)[32] = malloc(1000 * 32);
	uint64_t version = 0, promoted_position = 0;
	size_t done = 0, batches = 0, invalid = 0, discards = 0;
	size_t wide_seen = 0; /* states of more than 64 attributes checked */
	char why[256];

	while (done < nevents) {
		size_t size = 1 + rnd_below(rnd_below(4) ? 50 : 1000);
		size_t ntouched = 0;
		tk_refstate_begin(rs);
		uint64_t batch_start_pos = g.position;
		for (size_t i = 0; i < size; i++, done++) {
			const sc_event *ev = gen_event(&g);
			if (rnd_below(40) == 0) {
				/* A rejected event changes nothing. */
				spoil_event(&g);
				bool was_pending = sc_cache_pending(cache);
				sc_str id = {g.id, strlen(g.id)};
				const sc_entity *before =
				    sc_cache_pending_get(cache, id);
				assert_int_equal(
				    sc_cache_apply(cache, ev, &err), SC_EINVAL);
				assert_int_equal(err.code, SC_EINVAL);
				assert_true(err.message[0] != '\0');
				assert_true(sc_cache_pending(cache) ==
					    was_pending);
				assert_ptr_equal(
				    sc_cache_pending_get(cache, id), before);
				g.position--; /* the position is not used */
				invalid++;
				continue;
			}
			int rc = sc_cache_apply(cache, ev, &err);
			if (rc)
				fail_msg("apply: %s (seed %llu)", err.message,
					 (unsigned long long)seed);
			tk_refstate_apply(rs, ev);
			memcpy(touched_ids[ntouched % 1000], g.id, 32);
			touched[ntouched % 1000] = (sc_str){
			    touched_ids[ntouched % 1000], strlen(g.id)};
			ntouched++;
			/* The writer sees its pending state. */
			if (rnd_below(8) == 0 &&
			    !tk_refstate_entity_equal(
				tk_refstate_lookup(rs, ev->entity),
				sc_cache_pending_get(cache, ev->entity), why,
				sizeof why))
				fail_msg("pending: %s (seed %llu)", why,
					 (unsigned long long)seed);
		}
		batches++;
		if (rnd_below(5) == 0) {
			sc_cache_discard(cache);
			tk_refstate_rollback(rs);
			g.position = batch_start_pos;
			discards++;
			assert_false(sc_cache_pending(cache));
		} else {
			bool had_pending = sc_cache_pending(cache);
			if (had_pending && rnd_below(4) == 0) {
				diff_check d = {.rs = rs, .ok = true};
				assert_int_equal(
				    sc_cache_pending_diff(cache, diff_cb, &d),
				    0);
				if (!d.ok)
					fail_msg("pending diff: %s (seed "
						 "%llu)",
						 d.why,
						 (unsigned long long)seed);
				assert_true(d.count <= ntouched);
			}
			assert_int_equal(sc_cache_promote(cache), 0);
			tk_refstate_commit(rs);
			if (had_pending) {
				version++;
				promoted_position = g.position;
			}
		}
		const sc_view *view = sc_reader_begin(reader);
		assert_int_equal(sc_view_version(view), version);
		assert_int_equal(sc_view_position(view), promoted_position);
		assert_int_equal(sc_view_len(view), tk_refstate_len(rs));
		assert_int_equal(sc_cache_len(cache), tk_refstate_len(rs));
		size_t nt = ntouched < 1000 ? ntouched : 1000;
		if (!tk_refstate_check_ids(rs, view, touched, nt, why,
					   sizeof why))
			fail_msg("after batch %zu: %s (seed %llu)", batches,
				 why, (unsigned long long)seed);
		for (size_t k = 0; k < nt; k++) {
			const sc_entity *e = sc_view_get(view, touched[k]);
			if (e && sc_entity_attr_count(e) > 64)
				wide_seen++;
		}
		if (batches % 25 == 0) {
			if (!tk_refstate_check_view(rs, view, why, sizeof why))
				fail_msg("full check after batch %zu: %s "
					 "(seed %llu)",
					 batches, why,
					 (unsigned long long)seed);
			assert_true(tk_refstate_hash(rs) ==
				    tk_refstate_view_hash(view));
			char hwhy[256];
			assert_int_equal(
			    sc_hamt_check(
				cache->map,
				((const struct sc_version *)view)->root, hwhy,
				sizeof hwhy),
			    0);
		}
		sc_reader_end(reader);
		/* The stats are exact whatever is pinned: nothing is pending,
		 * so every byte alive is the newest version's or waits in a
		 * superseded version's garbage. */
		if (batches % 4 == 0) {
			sc_cache_stats st;
			sc_cache_stats_get(cache, &st);
			assert_int_equal(st.memory_bytes,
					 tk_live_bytes(cache) +
					     st.bytes_awaiting);
			assert_int_equal(st.entities, tk_refstate_len(rs));
			assert_int_equal(st.position, promoted_position);
		}
		if (rnd_below(8) == 0) {
			if (lagging)
				sc_reader_end(lagger);
			else
				assert_non_null(sc_reader_begin(lagger));
			lagging = !lagging;
		}
		/* No reader pins anything and nothing is pending: memory is
		 * the live set's. */
		if (batches % 50 == 0 && !lagging) {
			sc_cache_reclaim(cache);
			sc_cache_stats st;
			sc_cache_stats_get(cache, &st);
			assert_int_equal(st.versions_awaiting, 0);
			assert_int_equal(st.bytes_awaiting, 0);
			assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
		}
	}
	const sc_view *view = sc_reader_begin(reader);
	if (!tk_refstate_check_view(rs, view, why, sizeof why))
		fail_msg("final: %s (seed %llu)", why,
			 (unsigned long long)seed);
	assert_true(tk_refstate_hash(rs) == tk_refstate_view_hash(view));
	sc_reader_end(reader);
	printf("model: %zu events, %zu batches (%zu discarded), %zu invalid, "
	       "%zu entities, %zu checks of states over 64 attributes\n",
	       done, batches, discards, invalid, tk_refstate_len(rs),
	       wide_seen);
	assert_true(wide_seen > 0);
	sc_reader_close(lagger);
	sc_reader_close(reader);
	sc_cache_destroy(cache);
	tk_refstate_free(rs);
	free(touched);
	free(touched_ids);
}

static void test_model_random(void **state)
{
	(void)state;
	run_model(short_run() ? 100000 : 400000, 2000, NULL, 0);
}

static void test_model_collisions(void **state)
{
	(void)state;
	run_model(short_run() ? 20000 : 100000, 300, collide_hash, 0);
}

/* Published nodes read-only: a write to an immutable version traps. */
static void test_model_protected(void **state)
{
	(void)state;
	run_model(short_run() ? 3000 : 20000, 200, NULL, SC_HAMT_PROTECT);
}

static void test_model_load_entity(void **state)
{
	(void)state;
	sc_cache *cache;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &cache, &err), 0);
	sc_attr a[3] = {{.name = {"z", 1}, .value.type = SC_VALUE_INT},
			{.name = {"a", 1}, .value.type = SC_VALUE_BOOL},
			{.name = {"m", 1}, .value.type = SC_VALUE_STRING}};
	a[2].value.u.s = (sc_str){"hi", 2};
	sc_str id = {"ent", 3};
	assert_int_equal(
	    sc_cache_load_entity(cache, id, a, 3, 5, (sc_str){0}, 9, &err), 0);
	const sc_entity *e = sc_cache_pending_get(cache, id);
	assert_non_null(e);
	assert_string_equal(sc_entity_attr(e, 0).name.ptr, "a");
	assert_string_equal(sc_entity_attr(e, 2).name.ptr, "z");
	assert_int_equal(sc_entity_position(e), 9);
	/* duplicates and nulls are rejected, the pending state unchanged */
	a[1].name = (sc_str){"z", 1};
	assert_int_equal(
	    sc_cache_load_entity(cache, id, a, 3, 5, (sc_str){0}, 10, &err),
	    SC_EINVAL);
	assert_non_null(strstr(err.message, "more than once"));
	a[1].name = (sc_str){"b", 1};
	a[1].value.type = SC_VALUE_NULL;
	assert_int_equal(
	    sc_cache_load_entity(cache, id, a, 3, 5, (sc_str){0}, 10, &err),
	    SC_EINVAL);
	assert_ptr_equal(sc_cache_pending_get(cache, id), e);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.entities, 1);
	assert_int_equal(st.position, 9);
	assert_int_equal(st.version, 1);
	/* promote with nothing pending is a no-op */
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.version, 1);
	sc_cache_destroy(cache);
}

/* ==== allocation failures ================================================= */

/* An allocation failure leaves the pending version poisoned until discard,
 * which restores the state before it; once sc_cache_prepare succeeded,
 * promote needs no memory. */
static void test_enomem_poisons_and_discard_restores(void **state)
{
	(void)state;
	rnd_state = seed ^ 0xABCDEFull;
	sc_cache *cache;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &cache, &err), 0);
	sc_reader *reader;
	assert_int_equal(sc_reader_open(cache, &reader, &err), 0);
	tk_refstate *rs = tk_refstate_new();
	gen g = {.nids = 200};
	for (int i = 0; i < 2000; i++) {
		const sc_event *ev = gen_event(&g);
		assert_int_equal(sc_cache_apply(cache, ev, &err), 0);
		tk_refstate_apply(rs, ev);
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_cache_reclaim(cache);

	size_t failures = 0, promoted = 0;
	char why[256];
	for (long k = 0; k < 400; k++) {
		sc_cache_stats before;
		sc_cache_stats_get(cache, &before);
		uint64_t pos0 = g.position;
		tk_refstate_begin(rs);
		int rc = 0;
		sc_testing_fail_alloc_after(k % 60);
		int nev = 1 + (int)(k % 7);
		for (int i = 0; i < nev && !rc; i++) {
			const sc_event *ev = gen_event(&g);
			rc = sc_cache_apply(cache, ev, &err);
			if (!rc)
				tk_refstate_apply(rs, ev);
		}
		if (!rc && k % 2) {
			/* Prepared, promote cannot fail: the next allocation
			 * would. */
			rc = sc_cache_prepare(cache, &err);
			if (!rc) {
				sc_testing_fail_alloc_after(0);
				assert_int_equal(sc_cache_promote(cache), 0);
			}
		} else if (!rc) {
			rc = sc_cache_promote(cache);
		}
		sc_testing_fail_alloc_after(-1);
		if (rc) {
			assert_int_equal(rc, ENOMEM);
			failures++;
			/* poisoned: every writer call but discard refuses */
			const sc_event *ev = gen_event(&g);
			assert_int_equal(sc_cache_apply(cache, ev, &err),
					 SC_EPOISONED);
			assert_non_null(strstr(err.message, "discard"));
			assert_int_equal(sc_cache_promote(cache), SC_EPOISONED);
			sc_cache_discard(cache);
			tk_refstate_rollback(rs);
			g.position = pos0;
			sc_cache_stats after;
			sc_cache_stats_get(cache, &after);
			assert_int_equal(after.version, before.version);
			assert_int_equal(after.memory_bytes,
					 before.memory_bytes);
		} else {
			tk_refstate_commit(rs);
			promoted++;
		}
		const sc_view *view = sc_reader_begin(reader);
		if (!tk_refstate_check_view(rs, view, why, sizeof why))
			fail_msg("k=%ld: %s (seed %llu)", k, why,
				 (unsigned long long)seed);
		sc_reader_end(reader);
		sc_cache_reclaim(cache);
	}
	printf("enomem: %zu failures, %zu promoted\n", failures, promoted);
	assert_true(failures > 50);
	assert_true(promoted > 10);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
	sc_reader_close(reader);
	sc_cache_destroy(cache);
	tk_refstate_free(rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model_random),
	    cmocka_unit_test(test_model_collisions),
	    cmocka_unit_test(test_model_protected),
	    cmocka_unit_test(test_model_load_entity),
	    cmocka_unit_test(test_enomem_poisons_and_discard_restores),
	};
	return cmocka_run_group_tests(tests, setup_seed, NULL);
}
