/*
 * Forced hash collisions: a constant hash (every key in one collision node
 * at the bottom of a chain of single-child nodes) and hashes with 3 and 4
 * bits (a few large collision nodes). Thousands of keys: every key
 * reachable, removable, iteration complete, check() clean, diff exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/hamt.h"
#include "tests/support/hamt_testkit.h"

#define V(x) ((void *)(uintptr_t)(x))

static void assert_check(const sc_hamt *m, sc_hamt_root r)
{
	char why[256];
	if (sc_hamt_check(m, r, why, sizeof why) != SC_OK)
		fail_msg("sc_hamt_check: %s", why);
}

static void key_name(char *buf, size_t cap, unsigned i)
{
	snprintf(buf, cap, "collide-%u", i);
}

typedef struct diff_tally {
	unsigned added, removed, changed;
	unsigned char *seen; /* per key id: reported once */
} diff_tally;

static int tally(void *ctx, sc_diff_kind kind, const sc_hamt_key *key,
		 void *old_value, void *new_value)
{
	diff_tally *t = ctx;
	unsigned id = 0;
	assert_int_equal(sscanf((const char *)key->bytes, "collide-%u", &id),
			 1);
	assert_int_equal(t->seen[id], 0);
	t->seen[id] = 1;
	if (kind == SC_DIFF_ADDED) {
		assert_null(old_value);
		t->added++;
	} else if (kind == SC_DIFF_REMOVED) {
		assert_null(new_value);
		t->removed++;
	} else {
		assert_ptr_not_equal(old_value, new_value);
		t->changed++;
	}
	return 0;
}

static void run_collide(sc_hamt_hash_fn hash, unsigned n,
			size_t want_collision_nodes)
{
	tk_hamt_counter c = {0};
	sc_hamt_options o = tk_hamt_options(&c, hash);
	sc_hamt *m;
	assert_int_equal(sc_hamt_create(&o, &m), SC_OK);
	char k[32];

	/* Version 1: all n keys, inserted in one edit. */
	sc_hamt_edit *e;
	sc_hamt_garbage *g;
	sc_hamt_root r1, r2, r3;
	assert_int_equal(sc_hamt_edit_begin(m, (sc_hamt_root){0}, &e), SC_OK);
	for (unsigned i = 0; i < n; i++) {
		key_name(k, sizeof k, i);
		assert_int_equal(
		    sc_hamt_edit_set(e, tk_hamt_key_str(&c, k), V(i + 1)),
		    SC_OK);
	}
	assert_int_equal(sc_hamt_edit_commit(e, &r1, &g), SC_OK);
	assert_null(g);
	assert_int_equal(sc_hamt_count(r1), n);
	assert_check(m, r1);
	sc_hamt_stats st;
	sc_hamt_stats_get(m, r1, &st);
	assert_int_equal(st.collision_nodes, want_collision_nodes);
	assert_int_equal(st.max_depth, SC_HAMT_MAX_DEPTH - 1);
	assert_int_equal(st.entries, n);

	for (unsigned i = 0; i < n; i++) {
		key_name(k, sizeof k, i);
		assert_ptr_equal(sc_hamt_get(m, r1, k, strlen(k)), V(i + 1));
	}
	key_name(k, sizeof k, n);
	assert_null(sc_hamt_get(m, r1, k, strlen(k)));

	/* Iteration sees every key once. */
	unsigned char *seen = calloc(n + 1, 1);
	assert_non_null(seen);
	sc_hamt_iter it;
	sc_hamt_iter_init(&it, r1);
	const sc_hamt_key *key;
	void *val;
	unsigned cnt = 0;
	while (sc_hamt_iter_next(&it, &key, &val)) {
		unsigned id = (unsigned)(uintptr_t)val - 1;
		assert_true(id < n);
		assert_int_equal(seen[id], 0);
		seen[id] = 1;
		cnt++;
	}
	assert_int_equal(cnt, n);

	/* Version 2: remove every third key, change every fifth, add 100. */
	unsigned removed = 0, changed = 0;
	assert_int_equal(sc_hamt_edit_begin(m, r1, &e), SC_OK);
	for (unsigned i = 0; i < n; i++) {
		key_name(k, sizeof k, i);
		if (i % 3 == 0) {
			assert_int_equal(sc_hamt_edit_remove(e, k, strlen(k)),
					 SC_OK);
			removed++;
		} else if (i % 5 == 0) {
			assert_int_equal(
			    sc_hamt_edit_set(e, tk_hamt_key_str(&c, k),
					     V(i + 1 + n)),
			    SC_OK);
			changed++;
		}
	}
	for (unsigned i = n; i < n + 100; i++) {
		key_name(k, sizeof k, i);
		assert_int_equal(
		    sc_hamt_edit_set(e, tk_hamt_key_str(&c, k), V(i + 1)),
		    SC_OK);
	}
	assert_int_equal(sc_hamt_edit_commit(e, &r2, &g), SC_OK);
	assert_check(m, r2);
	assert_int_equal(sc_hamt_count(r2), n - removed + 100);
	assert_check(m, r1); /* untouched */

	diff_tally t = {0};
	t.seen = calloc(n + 100, 1);
	assert_non_null(t.seen);
	assert_int_equal(sc_hamt_diff(m, r1, r2, tally, &t), 0);
	assert_int_equal(t.added, 100);
	assert_int_equal(t.removed, removed);
	assert_int_equal(t.changed, changed);
	free(t.seen);
	sc_hamt_garbage_free(m, g);

	/* Version 3: remove everything left, one key at a time, checking
	 * the shape as collision nodes shrink and collapse. */
	assert_int_equal(sc_hamt_edit_begin(m, r2, &e), SC_OK);
	size_t left = sc_hamt_count(r2);
	for (unsigned i = 0; i < n + 100; i++) {
		key_name(k, sizeof k, i);
		int rc = sc_hamt_edit_remove(e, k, strlen(k));
		if (i < n && i % 3 == 0) {
			assert_int_equal(rc, SC_NOTFOUND);
			continue;
		}
		assert_int_equal(rc, SC_OK);
		left--;
		assert_null(sc_hamt_edit_get(e, k, strlen(k)));
		if (left < 40 || i % 499 == 0)
			assert_check(m, sc_hamt_edit_root(e));
	}
	assert_int_equal(sc_hamt_edit_commit(e, &r3, &g), SC_OK);
	assert_null(r3.node);
	assert_int_equal(sc_hamt_count(r3), 0);
	sc_hamt_garbage_free(m, g);
	assert_int_equal(c.released, c.made);
	assert_int_equal(sc_hamt_allocated_bytes(m), 0);
	sc_hamt_destroy(m);
	free(seen);
}

static void test_collide_const(void **state)
{
	(void)state;
	run_collide(tk_hamt_hash_const, 5000, 1);
}

static void test_collide_3bit(void **state)
{
	(void)state;
	run_collide(tk_hamt_hash_3bit, 5000, 8);
}

static void test_collide_spread4(void **state)
{
	(void)state;
	run_collide(tk_hamt_hash_spread4, 5000, 16);
}

/* Two keys whose hashes differ only in the last 4 bits: they split at the
 * deepest bitmap level; removing one pulls the other back to the root. */
static uint64_t hash_top_bit(const void *key, size_t len, uint64_t seed)
{
	(void)seed;
	const unsigned char *b = key;
	return (uint64_t)(b[len - 1] & 1u) << 63;
}

static void test_split_at_last_level(void **state)
{
	(void)state;
	tk_hamt_counter c = {0};
	sc_hamt_options o = tk_hamt_options(&c, hash_top_bit);
	sc_hamt *m;
	assert_int_equal(sc_hamt_create(&o, &m), SC_OK);
	sc_hamt_edit *e;
	sc_hamt_root r, r2;
	sc_hamt_garbage *g;
	assert_int_equal(sc_hamt_edit_begin(m, (sc_hamt_root){0}, &e), SC_OK);
	assert_int_equal(sc_hamt_edit_set(e, tk_hamt_key_str(&c, "a0"), V(1)),
			 SC_OK);
	assert_int_equal(sc_hamt_edit_set(e, tk_hamt_key_str(&c, "a1"), V(2)),
			 SC_OK);
	assert_int_equal(sc_hamt_edit_commit(e, &r, &g), SC_OK);
	assert_check(m, r);
	sc_hamt_stats st;
	sc_hamt_stats_get(m, r, &st);
	assert_int_equal(st.max_depth, SC_HAMT_MAX_DEPTH - 2);
	assert_int_equal(st.collision_nodes, 0);
	assert_int_equal(st.nodes, SC_HAMT_MAX_DEPTH - 1);

	assert_int_equal(sc_hamt_edit_begin(m, r, &e), SC_OK);
	assert_int_equal(sc_hamt_edit_remove(e, "a0", 2), SC_OK);
	assert_int_equal(sc_hamt_edit_commit(e, &r2, &g), SC_OK);
	assert_check(m, r2);
	sc_hamt_stats_get(m, r2, &st);
	assert_int_equal(st.nodes, 1);
	assert_ptr_equal(sc_hamt_get(m, r2, "a1", 2), V(2));
	sc_hamt_garbage_info gi;
	sc_hamt_garbage_info_get(g, &gi);
	assert_int_equal(gi.nodes, SC_HAMT_MAX_DEPTH - 1);
	sc_hamt_garbage_free(m, g);
	sc_hamt_root_free(m, r2);
	assert_int_equal(c.released, c.made);
	sc_hamt_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_collide_const),
	    cmocka_unit_test(test_collide_3bit),
	    cmocka_unit_test(test_collide_spread4),
	    cmocka_unit_test(test_split_at_last_level),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
