/*
 * entity_index, tag_index and partition_index: a damaged row or a damaged
 * meta key of an index is reported (by the open or by sc_store_verify) as
 * SC_ECORRUPT with a message naming what is wrong; an undamaged store
 * verifies. And an append whose index catch-up runs out of memory commits
 * nothing: the store keeps the model's state and verifies.
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

#include <lmdb.h>

#include "statecache/store.h"
#include "statecache/testing.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

/* Events of the store each damage case starts from. */
#define K 40

static const char *root;
static unsigned dirs;

typedef struct gen {
	sc_event ev;
	sc_attr attr;
	sc_str tag;
	char id[16], tagb[16], part[16];
} gen;

/* Event i: entity e<i%7>, tag t<i%3>, partition p<i%2>. */
static void gen_event(gen *g, unsigned i)
{
	int il = snprintf(g->id, sizeof g->id, "e%u", i % 7);
	int tl = snprintf(g->tagb, sizeof g->tagb, "t%u", i % 3);
	int pl = snprintf(g->part, sizeof g->part, "p%u", i % 2);
	g->attr = (sc_attr){.name = {"n", 1},
			    .value = {.type = SC_VALUE_INT, .u.i = (int64_t)i}};
	g->tag = (sc_str){g->tagb, (size_t)tl};
	g->ev = (sc_event){.entity = {g->id, (size_t)il},
			   .type = SC_EVENT_SET,
			   .attrs = &g->attr,
			   .nattrs = 1,
			   .time = 100 + i,
			   .partition = {g->part, (size_t)pl},
			   .tags = &g->tag,
			   .ntags = 1};
}

static sc_store *open_dir(const char *dir, bool create, int *rc, sc_error *err)
{
	sc_store_options o = {0};
	o.create = create;
	o.index_lag = 1; /* every append brings the indexes up to date */
	sc_store *s = NULL;
	*rc = sc_store_open(dir, &o, &s, err);
	return s;
}

/* A new store of K events in its own directory, closed. */
static void make_store(char *dir, size_t n)
{
	snprintf(dir, n, "%s/s%u", root, dirs++);
	int rc;
	sc_error err;
	sc_store *s = open_dir(dir, true, &rc, &err);
	assert_int_equal(rc, 0);
	for (unsigned i = 0; i < K; i++) {
		gen g;
		gen_event(&g, i);
		rc = sc_store_append(s, &g.ev, 1, NULL, &err);
		if (rc)
			fprintf(stderr, "append: %s\n", err.message);
		assert_int_equal(rc, 0);
	}
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
}

typedef enum { PUT, DEL } op_kind;

/* Put (or delete) one key of database `db` directly with LMDB. */
static void raw(const char *dir, const char *db, op_kind op, const void *k,
		size_t klen, const void *v, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
	if (op == PUT)
		assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
	else
		assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void be64(uint8_t *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

static void be32(uint8_t *b, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

/* An entity_index key: epoch, key id of (partition, id), position (the
 * store's own key id, store/entity_index.c). */
static size_t index_key(uint8_t *k, uint32_t epoch, const char *partition,
			const char *id, uint64_t pos)
{
	be32(k, epoch);
	size_t n =
	    sc_index_key_of(k + 4, (sc_str){partition, strlen(partition)},
			    (sc_str){id, strlen(id)});
	be64(k + 4 + n, pos);
	return 4 + n + 8;
}

/* A tag_index or partition_index key: value, position. */
static size_t value_key(uint8_t *k, const char *value, uint64_t pos)
{
	size_t n = strlen(value);
	memcpy(k, value, n);
	be64(k + n, pos);
	return n + 8;
}

/* The damaged store is refused, at open or by verify, with SC_ECORRUPT
 * and a message holding `want`. */
static void assert_damage_found(const char *dir, const char *want)
{
	int rc;
	sc_error err;
	memset(&err, 0, sizeof err);
	sc_store *s = open_dir(dir, false, &rc, &err);
	if (!rc) {
		rc = sc_store_verify(s, &err);
		sc_store_close(s);
	}
	if (rc != SC_ECORRUPT || !strstr(err.message, want))
		fprintf(stderr, "want SC_ECORRUPT \"%s\", got %d: %s\n", want,
			rc, err.message);
	assert_int_equal(rc, SC_ECORRUPT);
	assert_int_equal(err.code, SC_ECORRUPT);
	assert_non_null(strstr(err.message, want));
}

static int setup(void **state)
{
	(void)state;
	root = tk_tmproot_create("test_index_paths");
	return root ? 0 : -1;
}

static void test_entity_index_damage(void **state)
{
	(void)state;
	char dir[256];
	uint8_t k[64];

	make_store(dir, sizeof dir);
	raw(dir, "entity_index", PUT, "abc", 3, "", 0);
	assert_damage_found(dir, "an entity_index key is 3 bytes");

	make_store(dir, sizeof dir);
	raw(dir, "entity_index", PUT, k, index_key(k, 5, "p0", "e1", 1), "", 0);
	assert_damage_found(dir, "is filed under epoch 5, not 0");

	make_store(dir, sizeof dir);
	raw(dir, "entity_index", PUT, k, index_key(k, 0, "p1", "e1", K + 3), "",
	    0);
	assert_damage_found(dir, "beyond index_through (40)");

	make_store(dir, sizeof dir);
	raw(dir, "entity_index", PUT, k, index_key(k, 0, "p1", "zz", 2), "", 0);
	assert_damage_found(dir, "position 2 is not keyed by its entity");

	/* Event 7 is of entity e0 in partition p1, at position 8. */
	make_store(dir, sizeof dir);
	raw(dir, "entity_index", DEL, k, index_key(k, 0, "p1", "e0", 8), NULL,
	    0);
	assert_damage_found(dir, "entity_index has 39 rows, but "
				 "index_through is 40");
}

static void test_meta_damage(void **state)
{
	(void)state;
	char dir[256];
	uint8_t b[8];

	make_store(dir, sizeof dir);
	raw(dir, "meta", PUT, "index_through", 13, "abc", 3);
	assert_damage_found(dir, "meta index_through is 3 bytes");

	make_store(dir, sizeof dir);
	be64(b, K + 10);
	raw(dir, "meta", PUT, "index_through", 13, b, 8);
	assert_damage_found(dir, "index_through is 50, past the end");

	make_store(dir, sizeof dir);
	raw(dir, "meta", PUT, "query_index_through", 19, "abcd", 4);
	assert_damage_found(dir, "meta query_index_through is 4 bytes");
}

static void test_tag_and_partition_index_damage(void **state)
{
	(void)state;
	char dir[256];
	uint8_t k[64];

	make_store(dir, sizeof dir);
	raw(dir, "tag_index", PUT, "abc", 3, "", 0);
	assert_damage_found(dir, "a tag_index key is 3 bytes");

	make_store(dir, sizeof dir);
	raw(dir, "partition_index", PUT, "ab", 2, "", 0);
	assert_damage_found(dir, "a partition_index key is 2 bytes");

	make_store(dir, sizeof dir);
	raw(dir, "tag_index", PUT, k, value_key(k, "t1", K + 2), "", 0);
	assert_damage_found(dir, "tag_index has a row for position 42, "
				 "which is not an indexed event");

	/* Event 0 (position 1) has tag t0 and partition p0. */
	make_store(dir, sizeof dir);
	raw(dir, "tag_index", PUT, k, value_key(k, "t2", 1), "", 0);
	assert_damage_found(dir, "the tag_index row of position 1 names a "
				 "value the event does not have");

	make_store(dir, sizeof dir);
	raw(dir, "partition_index", PUT, k, value_key(k, "p1", 1), "", 0);
	assert_damage_found(dir, "the partition_index row of position 1 "
				 "names a value");

	make_store(dir, sizeof dir);
	raw(dir, "tag_index", DEL, k, value_key(k, "t0", 1), NULL, 0);
	assert_damage_found(dir, "tag_index has no row for a value of the "
				 "event at position 1");

	make_store(dir, sizeof dir);
	raw(dir, "partition_index", DEL, k, value_key(k, "p1", 2), NULL, 0);
	assert_damage_found(dir, "partition_index has no row for a value of "
				 "the event at position 2");
}

/* Every allocation of an append that indexes fails in turn: a failed
 * append commits nothing, and the store ends equal to the model. */
static void test_index_out_of_memory(void **state)
{
	(void)state;
	char dir[256];
	make_store(dir, sizeof dir);
	int rc;
	sc_error err;
	sc_store *s = open_dir(dir, false, &rc, &err);
	assert_int_equal(rc, 0);
	tk_refstate *m = tk_refstate_new();
	assert_non_null(m);
	for (unsigned i = 0; i < K; i++) {
		gen g;
		gen_event(&g, i);
		g.ev.position = i + 1;
		tk_refstate_apply(m, &g.ev);
	}
	unsigned next = K, failures = 0;
	for (long at = 0; at < 200; at++) {
		gen g[4];
		sc_event evs[4];
		for (unsigned j = 0; j < 4; j++) {
			gen_event(&g[j], next + j);
			evs[j] = g[j].ev;
		}
		uint64_t first = 0;
		sc_testing_fail_alloc_after(at);
		rc = sc_store_append(s, evs, 4, &first, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc) {
			assert_int_equal(rc, ENOMEM);
			assert_int_equal(err.code, ENOMEM);
			/* The message names the cause, in words or as
			 * the errno text. */
			assert_true(strstr(err.message, "out of memory") ||
				    strstr(err.message, strerror(ENOMEM)));
			assert_int_equal(sc_store_last_position(s), next);
			failures++;
		} else {
			assert_int_equal(first, next + 1);
			for (unsigned j = 0; j < 4; j++) {
				evs[j].position = first + j;
				tk_refstate_apply(m, &evs[j]);
			}
			next += 4;
		}
		assert_true(tk_cache_matches(sc_store_cache(s), m));
	}
	assert_true(failures > 0);
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
	s = open_dir(dir, false, &rc, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(sc_store_last_position(s), next);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
	tk_refstate_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_entity_index_damage),
	    cmocka_unit_test(test_meta_damage),
	    cmocka_unit_test(test_tag_and_partition_index_damage),
	    cmocka_unit_test(test_index_out_of_memory),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
