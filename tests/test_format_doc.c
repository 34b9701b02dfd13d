/*
 * What snapshot/FORMAT.md, store/README.md and the .proto comments promise
 * a reader of the store's bytes, checked with a stock reader: the records
 * are read from LMDB and decoded with protobuf-c and zstd only, never with
 * the library's own decoders.
 *
 *   - Event.time and EntityState.updated_at are signed unix nanoseconds;
 *     an event appended with time 0 is stored with the append time.
 *   - An `unset` attribute is an Attr without a value; a `set` with null is
 *     an Attr with an empty Value (no kind).
 *   - updated_at is the last event's time, updated_by its actor (reset to
 *     "" by an event without one), position its position.
 *   - A `set {}` (or `unset`) on a missing entity creates an empty entity;
 *     a `delete` of a missing entity is logged and gets a position.
 *   - A string value holding a NUL byte is refused (use a bytes value);
 *     ids, actors and bytes values may hold any bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>
#include <zstd.h>

#include "statecache/store.h"
#include "statecache/v1/statecache.pb-c.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

static const char *root;

static sc_store *open_new(char *dir, size_t n)
{
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = 0x5eed;
	return tk_store_create(dir, n, &o);
}

static uint64_t append1(sc_store *s, const sc_event *ev)
{
	uint64_t first = 0;
	sc_error err;
	int rc = sc_store_append(s, ev, 1, &first, &err);
	if (rc)
		fprintf(stderr, "append: %s\n", err.message);
	assert_int_equal(rc, 0);
	return first;
}

static sc_str S(const char *s)
{
	return (sc_str){s, strlen(s)};
}

/* The current state of `id` copied out (NULL: absent). */
static sc_entity *state_of(sc_store *s, const char *id)
{
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	const sc_entity *e = sc_reader_get(r, S(id));
	sc_entity *copy = NULL;
	if (e) {
		/* A replace with the same attributes rebuilds an equal state
		 * the caller owns. */
		size_t n = sc_entity_attr_count(e);
		sc_attr *a = calloc(n ? n : 1, sizeof *a);
		assert_non_null(a);
		for (size_t i = 0; i < n; i++)
			a[i] = sc_entity_attr(e, i);
		sc_event ev = {.position = sc_entity_position(e),
			       .entity = sc_entity_id(e),
			       .type = SC_EVENT_REPLACE,
			       .attrs = a,
			       .nattrs = n,
			       .time = sc_entity_updated_at(e),
			       .actor = sc_entity_updated_by(e)};
		assert_int_equal(sc_entity_apply(NULL, &ev, &copy, NULL), 0);
		free(a);
	}
	sc_reader_close(r);
	return copy;
}

/* The raw record of the event at `position`, decoded by protobuf-c. */
static Statecache__V1__Event *raw_event(sc_store *s, uint64_t position)
{
	MDB_env *env = sc_store_env(s);
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
	uint8_t key[8];
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(position >> (56 - 8 * i));
	MDB_val k = {sizeof key, key}, v;
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	Statecache__V1__Event *ev =
	    statecache__v1__event__unpack(NULL, v.mv_size, v.mv_data);
	mdb_txn_abort(txn);
	assert_non_null(ev);
	return ev;
}

/* The first chunk of the newest snapshot, decompressed with zstd and
 * decoded by protobuf-c. */
static Statecache__V1__SnapshotChunk *raw_chunk(sc_store *s)
{
	MDB_env *env = sc_store_env(s);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *c;
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "snapshots", 0, &dbi), 0);
	assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
	MDB_val k, v;
	/* The newest header is the last part-0 key; its chunk 0 follows. */
	assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_LAST), 0);
	while (
	    !(k.mv_size == 12 && !memcmp((char *)k.mv_data + 8, "\0\0\0\0", 4)))
		assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_PREV), 0);
	assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_NEXT), 0);
	assert_int_equal(k.mv_size, 12);
	assert_int_equal(((uint8_t *)k.mv_data)[11], 1);
	unsigned long long raw = ZSTD_getFrameContentSize(v.mv_data, v.mv_size);
	assert_true(raw != ZSTD_CONTENTSIZE_UNKNOWN &&
		    raw != ZSTD_CONTENTSIZE_ERROR);
	void *buf = malloc(raw ? raw : 1);
	assert_non_null(buf);
	size_t got = ZSTD_decompress(buf, raw, v.mv_data, v.mv_size);
	assert_false(ZSTD_isError(got));
	assert_int_equal(got, raw);
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	Statecache__V1__SnapshotChunk *chunk =
	    statecache__v1__snapshot_chunk__unpack(NULL, got, buf);
	free(buf);
	assert_non_null(chunk);
	return chunk;
}

static const Statecache__V1__EntityState *
chunk_find(const Statecache__V1__SnapshotChunk *chunk, const char *id)
{
	for (size_t i = 0; i < chunk->n_entities; i++) {
		const Statecache__V1__EntityState *e = chunk->entities[i];
		if (e->id.len == strlen(id) &&
		    !memcmp(e->id.data, id, e->id.len))
			return e;
	}
	return NULL;
}

/* ---- entity fields --------------------------------------------------------
 */

static void test_set_empty_creates_empty_entity(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	sc_event ev = {.entity = S("e1"), .type = SC_EVENT_SET};
	uint64_t p = append1(s, &ev);
	sc_entity *e = state_of(s, "e1");
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	assert_int_equal(sc_entity_position(e), p);
	sc_entity_free(e);
	/* An unset on a missing entity creates it too. */
	sc_attr a = {S("x"), {.type = SC_VALUE_NULL}};
	sc_event un = {.entity = S("e2"),
		       .type = SC_EVENT_UNSET,
		       .attrs = &a,
		       .nattrs = 1};
	p = append1(s, &un);
	e = state_of(s, "e2");
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	assert_int_equal(sc_entity_position(e), p);
	sc_entity_free(e);
	sc_store_close(s);
}

static void test_event_without_actor_resets_updated_by(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	sc_attr a = {S("n"), {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event ev = {.entity = S("u"),
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .time = 1000,
		       .actor = S("svc-a")};
	append1(s, &ev);
	sc_entity *e = state_of(s, "u");
	assert_int_equal(sc_entity_updated_by(e).len, 5);
	sc_entity_free(e);
	sc_attr b = {S("m"), {.type = SC_VALUE_INT, .u.i = 2}};
	sc_event ev2 = {.entity = S("u"),
			.type = SC_EVENT_SET,
			.attrs = &b,
			.nattrs = 1,
			.time = 2000};
	uint64_t p = append1(s, &ev2);
	e = state_of(s, "u");
	assert_int_equal(sc_entity_updated_by(e).len, 0);
	assert_int_equal(sc_entity_updated_at(e), 2000);
	assert_int_equal(sc_entity_position(e), p);
	assert_int_equal(sc_entity_attr_count(e), 2);
	sc_entity_free(e);
	/* Stored without the field (proto3 default: empty bytes). */
	Statecache__V1__Event *r = raw_event(s, p);
	assert_int_equal(r->actor.len, 0);
	statecache__v1__event__free_unpacked(r, NULL);
	sc_store_close(s);
}

static int count_event(void *ctx, const sc_event *ev)
{
	uint64_t *seen = ctx;
	if (ev->type == SC_EVENT_DELETE)
		*seen = ev->position;
	return 0;
}

static void test_delete_of_missing_entity_is_logged(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	sc_event ev = {.entity = S("ghost"), .type = SC_EVENT_DELETE};
	uint64_t p = append1(s, &ev);
	assert_int_equal(p, 1);
	assert_int_equal(sc_store_last_position(s), 1);
	uint64_t seen = 0;
	sc_error err;
	assert_int_equal(sc_store_events(s, 0, 0, count_event, &seen, &err), 0);
	assert_int_equal(seen, 1);
	assert_null(state_of(s, "ghost"));
	Statecache__V1__Event *r = raw_event(s, 1);
	assert_int_equal(r->type,
			 STATECACHE__V1__EVENT_TYPE__EVENT_TYPE_DELETE);
	assert_int_equal(r->n_attrs, 0);
	statecache__v1__event__free_unpacked(r, NULL);
	sc_store_close(s);
}

/* ---- times ------------------------------------------------------------------
 */

static void test_times_are_signed_unix_nanoseconds(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	/* 1969-12-31T23:59:59.5Z: before the epoch, so negative. */
	const int64_t before_epoch = -500000000;
	sc_event ev = {
	    .entity = S("old"), .type = SC_EVENT_SET, .time = before_epoch};
	uint64_t p = append1(s, &ev);
	Statecache__V1__Event *r = raw_event(s, p);
	assert_true(r->time == before_epoch);
	statecache__v1__event__free_unpacked(r, NULL);

	/* Time 0: the store stamps the append time (CLOCK_REALTIME, ns). */
	struct timespec t0, t1;
	clock_gettime(CLOCK_REALTIME, &t0);
	sc_event now = {.entity = S("new"), .type = SC_EVENT_SET};
	uint64_t q = append1(s, &now);
	clock_gettime(CLOCK_REALTIME, &t1);
	r = raw_event(s, q);
	int64_t lo = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec;
	int64_t hi = (int64_t)t1.tv_sec * 1000000000 + t1.tv_nsec;
	assert_true(r->time >= lo && r->time <= hi);
	int64_t stamped = r->time;
	statecache__v1__event__free_unpacked(r, NULL);
	sc_entity *e = state_of(s, "new");
	assert_true(sc_entity_updated_at(e) == stamped);
	sc_entity_free(e);

	/* The snapshot carries the same values. */
	sc_error err;
	assert_int_equal(sc_store_snapshot(s, NULL, &err), 0);
	Statecache__V1__SnapshotChunk *c = raw_chunk(s);
	const Statecache__V1__EntityState *es = chunk_find(c, "old");
	assert_non_null(es);
	assert_true(es->updated_at == before_epoch);
	assert_int_equal(es->position, p);
	es = chunk_find(c, "new");
	assert_non_null(es);
	assert_true(es->updated_at == stamped);
	assert_int_equal(es->position, q);
	statecache__v1__snapshot_chunk__free_unpacked(c, NULL);
	sc_store_close(s);
}

/* ---- attributes on the wire ------------------------------------------------
 */

static void test_unset_and_null_encodings(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	sc_attr two[2] = {{S("a"), {.type = SC_VALUE_STRING, .u.s = S("x")}},
			  {S("b"), {.type = SC_VALUE_INT, .u.i = -3}}};
	sc_event set = {.entity = S("k"),
			.type = SC_EVENT_SET,
			.attrs = two,
			.nattrs = 2,
			.actor = S("svc")};
	append1(s, &set);
	sc_attr null_a = {S("a"), {.type = SC_VALUE_NULL}};
	sc_event setnull = {.entity = S("k"),
			    .type = SC_EVENT_SET,
			    .attrs = &null_a,
			    .nattrs = 1};
	uint64_t pn = append1(s, &setnull);
	sc_attr un_b = {S("b"), {.type = SC_VALUE_INT, .u.i = 9}};
	sc_event unset = {.entity = S("k"),
			  .type = SC_EVENT_UNSET,
			  .attrs = &un_b,
			  .nattrs = 1};
	uint64_t pu = append1(s, &unset);

	/* set with null: an Attr whose Value is present and has no kind. */
	Statecache__V1__Event *r = raw_event(s, pn);
	assert_int_equal(r->n_attrs, 1);
	assert_non_null(r->attrs[0]->value);
	assert_int_equal(r->attrs[0]->value->kind_case,
			 STATECACHE__V1__VALUE__KIND__NOT_SET);
	statecache__v1__event__free_unpacked(r, NULL);
	/* unset: an Attr without a value (the caller's value is not
	 * stored). */
	r = raw_event(s, pu);
	assert_int_equal(r->type, STATECACHE__V1__EVENT_TYPE__EVENT_TYPE_UNSET);
	assert_int_equal(r->n_attrs, 1);
	assert_int_equal(r->attrs[0]->name.len, 1);
	assert_null(r->attrs[0]->value);
	statecache__v1__event__free_unpacked(r, NULL);

	/* Both removed the attribute; the entity still exists. */
	sc_entity *e = state_of(s, "k");
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	sc_entity_free(e);
	sc_store_close(s);
}

/* ---- strings and bytes ------------------------------------------------------
 */

static void test_nul_only_refused_in_string_values(void **state)
{
	(void)state;
	char dir[256];
	sc_store *s = open_new(dir, sizeof dir);
	sc_attr a = {S("s"), {.type = SC_VALUE_STRING, .u.s = {"a\0b", 3}}};
	sc_event ev = {
	    .entity = S("n"), .type = SC_EVENT_SET, .attrs = &a, .nattrs = 1};
	sc_error err;
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "bytes value"));
	assert_int_equal(sc_store_last_position(s), 0);
	/* The same bytes as a bytes value, and NULs in the id and actor,
	 * are accepted and stored as given. */
	a.value.type = SC_VALUE_BYTES;
	ev.entity = (sc_str){"n\0id", 4};
	ev.actor = (sc_str){"\0", 1};
	uint64_t p = append1(s, &ev);
	Statecache__V1__Event *r = raw_event(s, p);
	assert_int_equal(r->entity.len, 4);
	assert_memory_equal(r->entity.data, "n\0id", 4);
	assert_int_equal(r->actor.len, 1);
	assert_int_equal(r->attrs[0]->value->kind_case,
			 STATECACHE__V1__VALUE__KIND_BYTES_VALUE);
	assert_int_equal(r->attrs[0]->value->bytes_value.len, 3);
	statecache__v1__event__free_unpacked(r, NULL);
	sc_store_close(s);
}

static int setup(void **state)
{
	(void)state;
	root = tk_tmproot_create("test_format_doc");
	return root ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_empty_creates_empty_entity),
	    cmocka_unit_test(test_event_without_actor_resets_updated_by),
	    cmocka_unit_test(test_delete_of_missing_entity_is_logged),
	    cmocka_unit_test(test_times_are_signed_unix_nanoseconds),
	    cmocka_unit_test(test_unset_and_null_encodings),
	    cmocka_unit_test(test_nul_only_refused_in_string_values),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
