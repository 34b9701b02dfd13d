/*
 * Entity states of more than 64 attributes: the cache builds a state of
 * up to 64 attributes in one pass and takes a second, general merge when
 * the old and the new attributes together are more. These tests drive
 * that merge with sets, unsets and replaces of many attributes, null
 * values among them (a null in a set removes the name), and compare every
 * state with the reference state (tests/support/refstate), which shares
 * no code with the cache: once through sc_entity_apply, once through a
 * cache's pending and promoted versions.
 *
 * The random part is deterministic given the seed it prints; set
 * SC_TEST_SEED to repeat a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "statecache/cache.h"
#include "tests/support/refstate.h"
#include "tests/support/testkit.h"

/* More names than the one-pass build takes (64). */
#define NNAMES 120

static char names[NNAMES][8];
static uint64_t seed;

static sc_str name_of(unsigned i)
{
	return (sc_str){names[i], strlen(names[i])};
}

static int setup_all(void **state)
{
	(void)state;
	for (unsigned i = 0; i < NNAMES; i++)
		snprintf(names[i], sizeof names[i], "n%03u", i);
	seed = tk_seed("test_entity_merge");
	return 0;
}

/* One entity's state folded both ways, compared after every event. */
typedef struct pair {
	sc_entity *e; /* from sc_entity_apply, NULL when absent */
	tk_refstate *ref;
	uint64_t pos;
} pair;

static void pair_init(pair *p)
{
	p->e = NULL;
	p->ref = tk_refstate_new();
	p->pos = 0;
}

static void pair_free(pair *p)
{
	sc_entity_free(p->e);
	tk_refstate_free(p->ref);
}

/* Apply ev (position and time filled in) to both and compare. */
static void pair_apply(pair *p, sc_event *ev)
{
	ev->position = ++p->pos;
	ev->time = (int64_t)p->pos * 10;
	sc_entity *next = NULL;
	sc_error err;
	int rc = sc_entity_apply(p->e, ev, &next, &err);
	if (rc)
		fail_msg("sc_entity_apply: %s", err.message);
	sc_entity_free(p->e);
	p->e = next;
	tk_refstate_apply(p->ref, ev);
	char why[256];
	if (!tk_refstate_entity_equal(tk_refstate_lookup(p->ref, ev->entity),
				      p->e, why, sizeof why))
		fail_msg("after event %llu (type %d, %zu attrs): %s",
			 (unsigned long long)p->pos, (int)ev->type, ev->nattrs,
			 why);
}

static sc_event event_of(sc_event_type type, sc_attr *attrs, size_t n)
{
	sc_event ev = {.entity = {"wide", 4},
		       .type = type,
		       .attrs = attrs,
		       .nattrs = n,
		       .actor = {"merger", 6}};
	return ev;
}

/* Attributes `first`..`first + n - 1` set to their index, or null where
 * `null_every` divides the index (0: never). */
static size_t attrs_of(sc_attr *out, unsigned first, unsigned n,
		       unsigned null_every)
{
	for (unsigned k = 0; k < n; k++) {
		unsigned i = first + k;
		out[k].name = name_of(i);
		if (null_every && i % null_every == 0) {
			out[k].value.type = SC_VALUE_NULL;
		} else {
			out[k].value.type = SC_VALUE_INT;
			out[k].value.u.i = (int64_t)i;
		}
	}
	return n;
}

/* ==== fixed cases ========================================================= */

/* 60 attributes, then a set of 20 where every other one is null: 10 of the
 * nulls name existing attributes, and the old and new together are 80. */
static void test_set_nulls_remove_in_wide_merge(void **state)
{
	(void)state;
	pair p;
	pair_init(&p);
	sc_attr a[NNAMES];
	sc_event ev = event_of(SC_EVENT_SET, a, attrs_of(a, 0, 60, 0));
	pair_apply(&p, &ev);
	assert_int_equal(sc_entity_attr_count(p.e), 60);

	ev = event_of(SC_EVENT_SET, a, attrs_of(a, 50, 20, 2));
	pair_apply(&p, &ev);
	/* 0..49 stay, 50..69 odd ones set, even ones gone. */
	assert_int_equal(sc_entity_attr_count(p.e), 60);
	sc_value v;
	assert_false(sc_entity_find(p.e, name_of(50), &v));
	assert_false(sc_entity_find(p.e, name_of(68), &v));
	assert_true(sc_entity_find(p.e, name_of(69), &v));
	assert_int_equal(v.u.i, 69);
	pair_free(&p);
}

/* A set that is nothing but nulls, over an entity of 64 attributes: the
 * merge must remove every name it lists and keep the rest. */
static void test_set_only_nulls_over_64(void **state)
{
	(void)state;
	pair p;
	pair_init(&p);
	sc_attr a[NNAMES];
	sc_event ev = event_of(SC_EVENT_SET, a, attrs_of(a, 0, 64, 0));
	pair_apply(&p, &ev);
	ev = event_of(SC_EVENT_SET, a, attrs_of(a, 0, 64, 1));
	/* Names 0..63 null, plus 64..69 null too (absent: no effect). */
	attrs_of(a + 64, 64, 6, 1);
	ev.nattrs = 70;
	pair_apply(&p, &ev);
	assert_int_equal(sc_entity_attr_count(p.e), 0);
	pair_free(&p);
}

/* Duplicated names in one wide event (the event is sorted and the last of
 * each name wins): a null after a value removes, a value after a null
 * sets. */
static void test_duplicates_with_nulls_in_wide_merge(void **state)
{
	(void)state;
	pair p;
	pair_init(&p);
	sc_attr a[2 * NNAMES];
	sc_event ev = event_of(SC_EVENT_SET, a, attrs_of(a, 0, 40, 0));
	pair_apply(&p, &ev);
	size_t n = attrs_of(a, 20, 40, 0); /* 20..59 values */
	n += attrs_of(a + n, 30, 40, 1);   /* 30..69 nulls, later */
	n += attrs_of(a + n, 65, 5, 0);	   /* 65..69 values, last */
	ev = event_of(SC_EVENT_SET, a, n);
	pair_apply(&p, &ev);
	/* 0..29 kept, 30..64 removed, 65..69 set. */
	assert_int_equal(sc_entity_attr_count(p.e), 35);
	pair_free(&p);
}

/* Replace and unset of many attributes: nulls in a replace count as
 * absent; an unset of 70 names over 70 attributes leaves none. */
static void test_replace_and_unset_wide(void **state)
{
	(void)state;
	pair p;
	pair_init(&p);
	sc_attr a[NNAMES];
	sc_event ev = event_of(SC_EVENT_REPLACE, a, attrs_of(a, 10, 80, 3));
	pair_apply(&p, &ev);
	ev = event_of(SC_EVENT_SET, a, attrs_of(a, 0, 70, 7));
	pair_apply(&p, &ev);
	ev = event_of(SC_EVENT_UNSET, a, attrs_of(a, 5, 70, 0));
	pair_apply(&p, &ev);
	ev = event_of(SC_EVENT_REPLACE, a, attrs_of(a, 0, 66, 0));
	pair_apply(&p, &ev);
	assert_int_equal(sc_entity_attr_count(p.e), 66);
	pair_free(&p);
}

/* ==== random histories ==================================================== */

/* A random event on "wide": 1..90 distinct names (any order), a fifth of
 * the values null in sets and replaces, strings and bytes among them. */
static sc_event random_event(uint64_t *r, sc_attr *a, char (*strs)[16])
{
	unsigned t = (unsigned)tk_rand_below(r, 100);
	sc_event_type type = t < 60   ? SC_EVENT_SET
			     : t < 75 ? SC_EVENT_UNSET
			     : t < 95 ? SC_EVENT_REPLACE
				      : SC_EVENT_DELETE;
	if (type == SC_EVENT_DELETE)
		return event_of(type, NULL, 0);
	unsigned order[NNAMES];
	for (unsigned i = 0; i < NNAMES; i++)
		order[i] = i;
	for (unsigned i = NNAMES - 1; i > 0; i--) {
		unsigned j = (unsigned)tk_rand_below(r, i + 1);
		unsigned x = order[i];
		order[i] = order[j];
		order[j] = x;
	}
	/* Names from the first 100 so that sets overlap the state. */
	size_t n = 1 + tk_rand_below(r, 90), k = 0;
	for (unsigned i = 0; i < NNAMES && k < n; i++) {
		if (order[i] >= 100)
			continue;
		sc_attr *x = &a[k];
		x->name = name_of(order[i]);
		unsigned vt = (unsigned)tk_rand_below(r, 10);
		if (vt < 2) {
			x->value.type = SC_VALUE_NULL;
		} else if (vt < 6) {
			x->value.type = SC_VALUE_INT;
			x->value.u.i = (int64_t)tk_rand(r);
		} else if (vt < 8) {
			x->value.type = SC_VALUE_STRING;
			int len = snprintf(strs[k], 16, "s%u",
					   (unsigned)tk_rand_below(r, 1000));
			x->value.u.s = (sc_str){strs[k], (size_t)len};
		} else if (vt < 9) {
			x->value.type = SC_VALUE_BYTES;
			size_t len = tk_rand_below(r, 15);
			for (size_t b = 0; b < len; b++)
				strs[k][b] = (char)tk_rand(r);
			x->value.u.s = (sc_str){strs[k], len};
		} else {
			x->value.type = SC_VALUE_BOOL;
			x->value.u.b = tk_rand(r) & 1;
		}
		k++;
	}
	return event_of(type, a, k);
}

static void test_random_wide_histories(void **state)
{
	(void)state;
	uint64_t r = seed;
	int histories = getenv("SC_TEST_SHORT") ? 40 : 400;
	sc_attr a[NNAMES];
	char strs[NNAMES][16];
	for (int h = 0; h < histories; h++) {
		pair p;
		pair_init(&p);
		for (int i = 0; i < 60; i++) {
			sc_event ev = random_event(&r, a, strs);
			pair_apply(&p, &ev);
		}
		pair_free(&p);
	}
}

/* The same through a cache: each event applied to the pending version,
 * compared there, and after promote in the published view. */
static void test_random_wide_through_cache(void **state)
{
	(void)state;
	uint64_t r = seed ^ 0x77;
	sc_cache_options o = {.seed = seed | 1};
	sc_cache *c;
	assert_int_equal(sc_cache_create(&o, &c, NULL), 0);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(c, &rd, NULL), 0);
	tk_refstate *ref = tk_refstate_new();
	sc_attr a[NNAMES];
	char strs[NNAMES][16];
	int events = getenv("SC_TEST_SHORT") ? 600 : 6000;
	char why[256];
	for (int i = 0; i < events; i++) {
		sc_event ev = random_event(&r, a, strs);
		char id[8];
		int len = snprintf(id, sizeof id, "w%u",
				   (unsigned)tk_rand_below(&r, 5));
		ev.entity = (sc_str){id, (size_t)len};
		ev.position = (uint64_t)i + 1;
		ev.time = i;
		sc_error err;
		if (sc_cache_apply(c, &ev, &err))
			fail_msg("sc_cache_apply: %s", err.message);
		tk_refstate_apply(ref, &ev);
		if (!tk_refstate_entity_equal(
			tk_refstate_lookup(ref, ev.entity),
			sc_cache_pending_get(c, ev.entity), why, sizeof why))
			fail_msg("pending, event %d: %s", i + 1, why);
		if (i % 7 == 6) {
			assert_int_equal(sc_cache_promote(c), 0);
			const sc_view *v = sc_reader_begin(rd);
			bool ok =
			    tk_refstate_check_view(ref, v, why, sizeof why);
			sc_reader_end(rd);
			if (!ok)
				fail_msg("promoted, event %d: %s", i + 1, why);
		}
	}
	tk_refstate_free(ref);
	sc_reader_close(rd);
	sc_cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_nulls_remove_in_wide_merge),
	    cmocka_unit_test(test_set_only_nulls_over_64),
	    cmocka_unit_test(test_duplicates_with_nulls_in_wide_merge),
	    cmocka_unit_test(test_replace_and_unset_wide),
	    cmocka_unit_test(test_random_wide_histories),
	    cmocka_unit_test(test_random_wide_through_cache),
	};
	return cmocka_run_group_tests(tests, setup_all, NULL);
}
