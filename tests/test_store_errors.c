/*
 * The store's refusals: damaged meta values, a path that is not a
 * directory, calls without what they need, a callback that stops a read,
 * and the mapping of LMDB's errors to the library's codes. Each must come
 * back as its code with a message saying what is wrong, never as a crash
 * or a half-open store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/store.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

static uint64_t seed;
static const char *root;

static int setup_all(void **state)
{
	(void)state;
	seed = tk_seed("test_store_errors");
	root = tk_tmproot_create("test_store_errors");
	return root ? 0 : -1;
}

/* ---- the fixture --------------------------------------------------------- */

/* A store of 30 generated events in a fresh directory, closed again: the
 * tests damage its files or open it in ways it must refuse. */
typedef struct store_fx {
	char dir[256];
	sc_store_options o;
	sc_store *s; /* open store, or NULL */
} store_fx;

static int fx_setup(void **state)
{
	store_fx *fx = calloc(1, sizeof *fx);
	if (!fx)
		return -1;
	tk_tmproot_dir(fx->dir, sizeof fx->dir);
	fx->o.create = true;
	fx->o.durability = SC_DURABILITY_NOSYNC;
	fx->o.cache.seed = seed | 1;
	fx->o.index_lag = 4;
	sc_error err;
	if (sc_store_open(fx->dir, &fx->o, &fx->s, &err)) {
		fprintf(stderr, "open: %s\n", err.message);
		return -1;
	}
	for (uint64_t i = 0; i < 30; i++) {
		tk_event g;
		tk_event_gen(seed, i, 10, (int64_t)i + 1, &g);
		if (sc_store_append(fx->s, &g.ev, 1, NULL, &err)) {
			fprintf(stderr, "append: %s\n", err.message);
			return -1;
		}
	}
	sc_store_close(fx->s);
	fx->s = NULL;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	store_fx *fx = *state;
	sc_store_close(fx->s);
	tk_rm_rf(fx->dir);
	free(fx);
	return 0;
}

/* Put (or with len 0 delete) meta `key` straight through LMDB, the store
 * closed. */
static void meta_put(const char *dir, const char *key, const void *val,
		     size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 32);
	assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)val};
	if (len)
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	else
		assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Open must fail with `code` and a message containing `needle`. */
static void assert_open_fails(store_fx *fx, int code, const char *needle)
{
	sc_error err;
	sc_store *s = NULL;
	int rc = sc_store_open(fx->dir, &fx->o, &s, &err);
	if (rc != code || !strstr(err.message, needle))
		fail_msg("open: expected %d with '%s', got %d: %s", code,
			 needle, rc, err.message);
	assert_null(s);
	assert_int_equal(err.code, code);
}

/* ---- damaged meta -------------------------------------------------------- */

static void test_format_version_of_wrong_size(void **state)
{
	store_fx *fx = *state;
	uint8_t five[5] = {0, 0, 0, 2, 0};
	meta_put(fx->dir, "format_version", five, sizeof five);
	assert_open_fails(fx, SC_ECORRUPT, "format_version is 5 bytes");
}

static void test_format_version_zero(void **state)
{
	store_fx *fx = *state;
	uint8_t zero[4] = {0};
	meta_put(fx->dir, "format_version", zero, sizeof zero);
	assert_open_fails(fx, SC_ECORRUPT, "format_version is 0");
}

static void test_index_through_of_wrong_size(void **state)
{
	store_fx *fx = *state;
	uint8_t three[3] = {0, 0, 1};
	meta_put(fx->dir, "index_through", three, sizeof three);
	assert_open_fails(fx, SC_ECORRUPT, "index_through is 3 bytes");
}

static void test_index_through_past_the_log(void **state)
{
	store_fx *fx = *state;
	uint8_t past[8] = {0, 0, 0, 0, 0, 0, 0, 31}; /* the log ends at 30 */
	meta_put(fx->dir, "index_through", past, sizeof past);
	assert_open_fails(fx, SC_ECORRUPT, "past the end of the log");
}

/* A damaged or missing hash seed only costs restore speed: open makes a
 * new one and the state is the same. */
static void test_hash_seed_damaged_or_missing(void **state)
{
	store_fx *fx = *state;
	fx->o.cache.seed = 0; /* the store's own seed */
	sc_error err;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &fx->s, &err), 0);
	size_t len;
	uint64_t h = tk_cache_hash(sc_store_cache(fx->s), &len);
	assert_int_equal(sc_store_snapshot(fx->s, NULL, NULL), 0);
	sc_store_close(fx->s);
	fx->s = NULL;
	uint8_t bad[3] = {1, 2, 3};
	meta_put(fx->dir, "hash_seed", bad, sizeof bad);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(sc_store_open(fx->dir, &fx->o, &fx->s, &err),
				 0);
		size_t len2;
		assert_int_equal(tk_cache_hash(sc_store_cache(fx->s), &len2),
				 h);
		assert_int_equal(len2, len);
		assert_int_equal(sc_store_last_position(fx->s), 30);
		sc_store_close(fx->s);
		fx->s = NULL;
		meta_put(fx->dir, "hash_seed", NULL, 0);
	}
}

/* ---- open ---------------------------------------------------------------- */

static void test_open_refusals(void **state)
{
	store_fx *fx = *state;
	sc_error err;
	sc_store *s = NULL;
	assert_int_equal(sc_store_open(NULL, &fx->o, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "directory"));
	assert_int_equal(sc_store_open(fx->dir, &fx->o, NULL, &err), SC_EINVAL);

	/* A regular file where the store should be. */
	char file[300];
	snprintf(file, sizeof file, "%s/data.mdb", fx->dir);
	assert_int_equal(sc_store_open(file, &fx->o, &s, &err), ENOTDIR);
	assert_null(s);
	assert_non_null(strstr(err.message, "not a directory"));

	/* An existing directory without a store, create off. */
	sc_store_options o = fx->o;
	o.create = false;
	assert_int_equal(sc_store_open(root, &o, &s, &err), SC_NOTFOUND);
	assert_non_null(strstr(err.message, "data.mdb"));

	/* map_size above map_size_max is lowered to it. */
	o.map_size = 64u << 20;
	o.map_size_max = 32u << 20;
	assert_int_equal(sc_store_open(fx->dir, &o, &fx->s, &err), 0);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(fx->s, &st, &err), 0);
	assert_true(st.map_size <= (32u << 20));
	assert_int_equal(st.last_position, 30);
}

/* ---- calls without what they need ---------------------------------------- */

static int count_events(void *ctx, const sc_event *ev)
{
	(void)ev;
	(*(int *)ctx)++;
	return 0;
}

/* Stops the read with 42 at the stop_at-th event. */
typedef struct stopper {
	int seen, stop_at;
} stopper;

static int stop_at(void *ctx, const sc_event *ev)
{
	(void)ev;
	stopper *st = ctx;
	return ++st->seen == st->stop_at ? 42 : 0;
}

static void test_read_arguments_and_stops(void **state)
{
	store_fx *fx = *state;
	sc_error err;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &fx->s, &err), 0);
	sc_store *s = fx->s;
	int n = 0;
	assert_int_equal(sc_store_events(s, 0, 0, NULL, &n, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "callback"));
	assert_int_equal(sc_store_events(NULL, 0, 0, count_events, &n, &err),
			 SC_EINVAL);
	assert_int_equal(
	    sc_store_entity_events(s, (sc_str){"e1", 2}, 0, 0, NULL, &n, &err),
	    SC_EINVAL);
	assert_int_equal(sc_store_entity_events(s, (sc_str){"", 0}, 0, 0,
						count_events, &n, &err),
			 SC_EINVAL);
	assert_non_null(strstr(err.message, "entity id is 0 bytes"));
	char big[SC_ENTITY_ID_MAX + 1];
	memset(big, 'x', sizeof big);
	assert_int_equal(sc_store_entity_events(s, (sc_str){big, sizeof big}, 0,
						0, count_events, &n, &err),
			 SC_EINVAL);
	assert_int_equal(
	    sc_store_entity_at(s, (sc_str){"e1", 2}, 30, NULL, &err),
	    SC_EINVAL);
	sc_entity *e = NULL;
	assert_int_equal(sc_store_entity_at(s, (sc_str){"", 0}, 30, &e, &err),
			 SC_EINVAL);
	assert_null(e);
	assert_int_equal(sc_store_stats_get(s, NULL, &err), SC_EINVAL);
	assert_int_equal(sc_store_append(NULL, NULL, 0, NULL, &err), SC_EINVAL);
	assert_int_equal(sc_store_append(s, NULL, 2, NULL, &err), SC_EINVAL);
	assert_int_equal(sc_store_last_position(s), 30);

	/* A callback's non-zero value stops the read and comes back. */
	stopper st = {0, 3};
	assert_int_equal(sc_store_events(s, 0, 0, stop_at, &st, &err), 42);
	assert_int_equal(st.seen, 3);
	/* Entity reads: e1's events from entity_index (the fixture's, as
	 * the stream made them) and three more in the unindexed tail (the
	 * lag is now far away); a stop at any of them. */
	sc_store_close(s);
	fx->o.index_lag = 1u << 20;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &fx->s, &err), 0);
	s = fx->s;
	sc_attr at = {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event ev = {.entity = {"e1", 2},
		       .type = SC_EVENT_SET,
		       .attrs = &at,
		       .nattrs = 1,
		       .time = 99};
	for (int k = 0; k < 3; k++)
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, &err), 0);
	int all = 0;
	assert_int_equal(sc_store_entity_events(s, (sc_str){"e1", 2}, 0, 0,
						count_events, &all, &err),
			 0);
	assert_true(all >= 3);
	for (int k = 1; k <= all; k++) {
		st = (stopper){0, k};
		assert_int_equal(sc_store_entity_events(s, (sc_str){"e1", 2}, 0,
							0, stop_at, &st, &err),
				 42);
		assert_int_equal(st.seen, k);
	}
}

/* ---- LMDB's errors ------------------------------------------------------- */

static void test_lmdb_errors_map_to_codes(void **state)
{
	(void)state;
	static const struct {
		int lmdb, code;
		const char *needle;
	} cases[] = {
	    {ENOMEM, ENOMEM, "out of memory"},
	    {EACCES, EACCES, "doing it"},
	    {MDB_MAP_FULL, SC_EMAPFULL, "map_size_max"},
	    {MDB_TXN_FULL, SC_ETOOBIG, "split the batch"},
	    {MDB_READERS_FULL, SC_EREADERS, "close idle read transactions"},
	    {MDB_CORRUPTED, SC_ECORRUPT, "backup"},
	    {MDB_PAGE_NOTFOUND, SC_ECORRUPT, "backup"},
	    {MDB_INVALID, SC_ECORRUPT, "backup"},
	    {MDB_VERSION_MISMATCH, SC_EVERSION, "LMDB version"},
	    {MDB_BAD_TXN, SC_ELMDB, "doing it"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		sc_error err;
		int rc = sc_store_lmdb_error(&err, cases[i].lmdb, "doing it");
		assert_int_equal(rc, cases[i].code);
		assert_int_equal(err.code, cases[i].code);
		if (!strstr(err.message, cases[i].needle))
			fail_msg("LMDB error %d: '%s' lacks '%s'",
				 cases[i].lmdb, err.message, cases[i].needle);
		assert_non_null(strstr(err.message, "doing it"));
	}
	assert_int_equal(sc_store_lmdb_error(NULL, MDB_MAP_FULL, "x"),
			 SC_EMAPFULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_format_version_of_wrong_size,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_format_version_zero, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_index_through_of_wrong_size,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_index_through_past_the_log,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_hash_seed_damaged_or_missing,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_refusals, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_read_arguments_and_stops,
					    fx_setup, fx_teardown),
	    cmocka_unit_test(test_lmdb_errors_map_to_codes),
	};
	return cmocka_run_group_tests(tests, setup_all, tk_tmproot_teardown);
}
