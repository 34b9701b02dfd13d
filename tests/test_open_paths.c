/*
 * sc_store_open's refusals: bad options, a missing or wrong directory, a
 * file that is not a store, damaged meta keys and a damaged log end are
 * each refused with their code and a message naming the cause, and leave
 * the store as it was (it opens and holds the model's state once the
 * damage is undone, or at once when the refusal was of the options).
 * An open that runs out of memory at any of its allocations fails cleanly
 * and the next one succeeds.
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
#include <sys/stat.h>

#include <lmdb.h>

#include "statecache/store.h"
#include "statecache/testing.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#define K	 30
#define ENTITIES 9

static const char *root;
static unsigned dirs;
static uint64_t seed;

static int try_open(const char *dir, bool create, bool read_only, sc_store **s,
		    sc_error *err)
{
	sc_store_options o = {0};
	o.create = create;
	o.read_only = read_only;
	o.follow_manual = read_only;
	memset(err, 0, sizeof *err);
	*s = NULL;
	return sc_store_open(dir, &o, s, err);
}

/* A new store of K events in its own directory, closed; the model of its
 * state in *m. */
static void make_store(char *dir, size_t n, tk_refstate **m)
{
	snprintf(dir, n, "%s/s%u", root, dirs++);
	sc_store *s;
	sc_error err;
	assert_int_equal(try_open(dir, true, false, &s, &err), 0);
	*m = tk_refstate_new();
	assert_non_null(*m);
	static tk_event te;
	for (uint64_t i = 0; i < K; i++) {
		tk_event_gen(seed, i, ENTITIES, 1000 + (int64_t)i, &te);
		uint64_t first;
		assert_int_equal(sc_store_append(s, &te.ev, 1, &first, &err),
				 0);
		te.ev.position = first;
		tk_refstate_apply(*m, &te.ev);
	}
	sc_store_close(s);
}

/* Open `dir` and check it holds the model. */
static void assert_opens_as(const char *dir, const tk_refstate *m)
{
	sc_store *s;
	sc_error err;
	int rc = try_open(dir, false, false, &s, &err);
	if (rc)
		fprintf(stderr, "open %s: %s\n", dir, err.message);
	assert_int_equal(rc, 0);
	assert_int_equal(sc_store_last_position(s), K);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
}

/* Read, put or delete one key of database `db` directly with LMDB. */
typedef enum { GET, PUT, DEL } op_kind;

static void raw(const char *dir, const char *db, op_kind op, const char *k,
		size_t klen, void *v, size_t *vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
	MDB_val key = {klen, (void *)k}, val = {0, NULL};
	if (op == GET) {
		assert_int_equal(mdb_get(txn, dbi, &key, &val), 0);
		assert_true(val.mv_size <= *vlen);
		memcpy(v, val.mv_data, val.mv_size);
		*vlen = val.mv_size;
		mdb_txn_abort(txn);
	} else {
		if (op == PUT) {
			val = (MDB_val){*vlen, v};
			assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
		} else {
			assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
		}
		assert_int_equal(mdb_txn_commit(txn), 0);
	}
	mdb_env_close(env);
}

static void put_meta(const char *dir, const char *key, const void *v, size_t n)
{
	raw(dir, "meta", PUT, key, strlen(key), (void *)v, &n);
}

/* The open (writing, then read-only) is refused with `code` and a message
 * holding `want`. */
static void assert_refused(const char *dir, int code, const char *want)
{
	for (int ro = 0; ro < 2; ro++) {
		sc_store *s;
		sc_error err;
		int rc = try_open(dir, false, ro, &s, &err);
		if (rc != code || !strstr(err.message, want))
			fprintf(stderr, "want %d \"%s\", got %d: %s\n", code,
				want, rc, err.message);
		assert_int_equal(rc, code);
		assert_int_equal(err.code, code);
		assert_non_null(strstr(err.message, want));
		assert_null(s);
	}
}

static int setup(void **state)
{
	(void)state;
	root = tk_tmproot_create("test_open_paths");
	seed = tk_seed("test_open_paths");
	return root ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	sc_testing_fail_alloc_after(-1);
	return tk_tmproot_remove();
}

static void test_option_refusals(void **state)
{
	(void)state;
	char dir[256];
	tk_refstate *m;
	make_store(dir, sizeof dir, &m);
	sc_store *s = (sc_store *)&s;
	sc_error err;

	assert_int_equal(sc_store_open(NULL, NULL, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "needs a directory"));
	assert_int_equal(sc_store_open(dir, NULL, NULL, &err), SC_EINVAL);

	sc_store_options o = {0};
	o.durability = (sc_durability)99;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "unknown durability 99"));
	assert_null(s);

	o = (sc_store_options){0};
	o.read_only = true;
	o.create = true;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "cannot create a store"));

	o = (sc_store_options){0};
	o.file_mode = 01600;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "file_mode 1600 has bits"));

	/* Huge options are clamped, not refused. */
	o = (sc_store_options){0};
	o.index_lag = UINT64_MAX;
	o.map_size = (size_t)1 << 40;
	o.map_size_max = (size_t)1 << 30;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, &err), 0);
	assert_int_equal(st.last_position, K);
	assert_true(st.map_size <= ((size_t)1 << 30));
	assert_true(st.map_bytes_used > 0);
	assert_int_equal(sc_store_stats_get(NULL, &st, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "needs a store"));
	assert_int_equal(sc_store_stats_get(s, NULL, &err), SC_EINVAL);
	sc_store_close(s);

	assert_opens_as(dir, m);
	tk_refstate_free(m);
}

static void test_directory_refusals(void **state)
{
	(void)state;
	char dir[256], file[300];
	sc_store *s;
	sc_error err;

	snprintf(dir, sizeof dir, "%s/none", root);
	assert_int_equal(try_open(dir, false, false, &s, &err), SC_NOTFOUND);
	assert_non_null(strstr(err.message, "no store at"));
	assert_non_null(strstr(err.message, "create option"));
	struct stat st;
	assert_int_equal(stat(dir, &st), -1);
	/* A read-only open creates nothing either. */
	assert_int_equal(try_open(dir, false, true, &s, &err), SC_NOTFOUND);
	assert_int_equal(stat(dir, &st), -1);

	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(try_open(dir, false, false, &s, &err), SC_NOTFOUND);
	assert_non_null(strstr(err.message, "no data.mdb"));
	snprintf(file, sizeof file, "%s/data.mdb", dir);
	assert_int_equal(stat(file, &st), -1);

	snprintf(file, sizeof file, "%s/plain", root);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(try_open(file, true, false, &s, &err), ENOTDIR);
	assert_non_null(strstr(err.message, "is not a directory"));
	assert_int_equal(stat(file, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 0);

	/* Below a file: stat fails with ENOTDIR, named. */
	char below[400];
	snprintf(below, sizeof below, "%s/x", file);
	assert_int_equal(try_open(below, true, false, &s, &err), ENOTDIR);
	assert_non_null(strstr(err.message, "cannot access"));
}

static void test_not_a_store(void **state)
{
	(void)state;
	char dir[256];
	size_t n = 1;

	/* An LMDB file with a database of its own and no meta. */
	snprintf(dir, sizeof dir, "%s/other", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	raw(dir, "other", PUT, "k", 1, "v", &n);
	assert_refused(dir, SC_ECORRUPT,
		       "without a statecache meta database: it is not a store");

	/* One of the store's databases but no meta: damaged. */
	snprintf(dir, sizeof dir, "%s/nometa", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	raw(dir, "events", PUT, "k", 1, "v", &n);
	assert_refused(dir, SC_ECORRUPT,
		       "has a events database but no meta database");
}

static void test_meta_damage(void **state)
{
	(void)state;
	char dir[256];
	tk_refstate *m;
	make_store(dir, sizeof dir, &m);
	uint8_t ver[8], last[8], b[8];
	size_t verlen = sizeof ver, lastlen = sizeof last;
	raw(dir, "meta", GET, "format_version", 14, ver, &verlen);
	raw(dir, "meta", GET, "last_position", 13, last, &lastlen);
	assert_int_equal(verlen, 4);
	assert_int_equal(lastlen, 8);

	put_meta(dir, "format_version", "abc", 3);
	assert_refused(dir, SC_ECORRUPT, "format_version is 3 bytes");
	put_meta(dir, "format_version", "\0\0\0\0", 4);
	assert_refused(dir, SC_ECORRUPT, "format_version is 0");
	put_meta(dir, "format_version", "\x7f\0\0\0", 4);
	assert_refused(dir, SC_EVERSION, "use a newer statecache");
	raw(dir, "meta", DEL, "format_version", 14, NULL, NULL);
	assert_refused(dir, SC_ECORRUPT, "meta has no format_version");
	put_meta(dir, "format_version", ver, verlen);
	assert_opens_as(dir, m);

	/* Meta says more was committed than the log holds. */
	memset(b, 0, sizeof b);
	b[7] = K + 5;
	put_meta(dir, "last_position", b, 8);
	assert_refused(dir, SC_ECORRUPT, "acknowledged events are missing");
	/* Without the key (a store older than it), the open writes it. */
	raw(dir, "meta", DEL, "last_position", 13, NULL, NULL);
	assert_opens_as(dir, m);
	lastlen = sizeof b;
	raw(dir, "meta", GET, "last_position", 13, b, &lastlen);
	assert_int_equal(lastlen, 8);
	assert_memory_equal(b, last, 8);

	/* A damaged hash seed is replaced: the state is the same. */
	put_meta(dir, "hash_seed", "xyz", 3);
	assert_opens_as(dir, m);
	lastlen = sizeof b;
	raw(dir, "meta", GET, "hash_seed", 9, b, &lastlen);
	assert_int_equal(lastlen, 8);

	/* An events key that is not a position. */
	size_t one = 1;
	raw(dir, "events", PUT, "abc", 3, "v", &one);
	assert_refused(dir, SC_ECORRUPT, "an events key is 3 bytes");
	raw(dir, "events", DEL, "abc", 3, NULL, NULL);
	assert_opens_as(dir, m);
	tk_refstate_free(m);
}

/* Allocation number `at` of an open fails, for every `at` until an open
 * needs no more: each failed open returns an error with a message and
 * leaves nothing open; the store then opens with the model's state. */
static void test_open_out_of_memory(void **state)
{
	(void)state;
	char dir[256];
	tk_refstate *m;
	make_store(dir, sizeof dir, &m);
	/* An open whose failing allocation is absorbed (a fallback) also
	 * succeeds; 20 successes in a row: the open needs no more. */
	long at = 0, failed = 0;
	for (unsigned ok_run = 0; ok_run < 20; at++) {
		assert_true(at < 100000);
		sc_store *s;
		sc_error err;
		sc_testing_fail_alloc_after(at);
		int rc = try_open(dir, false, false, &s, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc == 0) {
			assert_int_equal(sc_store_last_position(s), K);
			assert_true(tk_cache_matches(sc_store_cache(s), m));
			sc_store_close(s);
			ok_run++;
			continue;
		}
		ok_run = 0;
		failed++;
		assert_null(s);
		assert_int_equal(err.code, rc);
		assert_true(err.message[0] != '\0');
	}
	assert_true(failed > 0);
	assert_opens_as(dir, m);
	tk_refstate_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_option_refusals),
	    cmocka_unit_test(test_directory_refusals),
	    cmocka_unit_test(test_not_a_store),
	    cmocka_unit_test(test_meta_damage),
	    cmocka_unit_test(test_open_out_of_memory),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
