/*
 * The largest entity state: one that takes exactly SC_STATE_SNAPSHOT_MAX
 * bytes in a snapshot chunk is accepted, snapshotted and restored; any
 * event (or load) that would make a larger one is refused with SC_ETOOBIG
 * when it is applied, and leaves the cache and the store as they were, so
 * that no later snapshot can fail on it. Real sizes: values of
 * SC_EVENT_VALUE_MAX bytes, states of 64 MiB.
 *
 * The expected sizes come from the protobuf wire format, computed here
 * independently of the library, and are checked against what the snapshot
 * encoder writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "snapshot/snapshot.h"
#include "statecache/cache.h"
#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static const char *root;
static uint64_t seed;

/* ---- sizes from the wire format ------------------------------------------ */

static uint64_t varint_len(uint64_t v)
{
	uint64_t n = 1;
	for (; v >= 128; v >>= 7)
		n++;
	return n;
}

/* Key, length and payload of a length-delimited field. */
static uint64_t field_len(uint64_t payload)
{
	return 1 + varint_len(payload) + payload;
}

static uint64_t value_len(const sc_value *v)
{
	switch (v->type) {
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		return field_len(v->u.s.len);
	case SC_VALUE_INT:
		return 1 + varint_len(((uint64_t)v->u.i << 1) ^
				      (uint64_t)(v->u.i >> 63));
	case SC_VALUE_DOUBLE:
		return 9;
	case SC_VALUE_BOOL:
		return 2;
	default:
		return 0;
	}
}

/* Bytes a state takes in a snapshot chunk: the chunk's `entities` field
 * holding its EntityState (id 1, attrs 2, updated_at 3 fixed64, updated_by
 * 4, position 5 varint, partition 6; zero scalars, an empty updated_by and
 * the default partition's empty name omitted). */
static uint64_t expect_bytes(size_t id_len, const sc_attr *attrs, size_t n,
			     int64_t updated_at, size_t by_len,
			     uint64_t position, size_t part_len)
{
	uint64_t m = field_len(id_len);
	for (size_t i = 0; i < n; i++)
		m += field_len(field_len(attrs[i].name.len) +
			       field_len(value_len(&attrs[i].value)));
	if (updated_at)
		m += 9;
	if (by_len)
		m += field_len(by_len);
	if (position)
		m += 1 + varint_len(position);
	if (part_len)
		m += field_len(part_len);
	return field_len(m);
}

/* Bytes the snapshot encoder writes for the newest version of `cache`. */
static uint64_t encoded_raw(sc_cache *cache)
{
	sc_reader *r;
	assert_int_equal(sc_reader_open(cache, &r, NULL), 0);
	const sc_view *v = sc_reader_begin(r);
	sc_snapshot_encoded *enc = NULL;
	sc_snapshot_params p = {.compress_inline = true, .zstd_level = 1};
	sc_error err;
	int rc = sc_snapshot_encode(v, &p, &enc, &err);
	if (rc)
		fail_msg("encode: %s", err.message);
	uint64_t raw = enc->bytes_raw;
	sc_snapshot_encoded_free(enc);
	sc_reader_end(r);
	sc_reader_close(r);
	return raw;
}

/* ---- the big entity -------------------------------------------------------
 * "big" holds v0, v1, v2 of SC_EVENT_VALUE_MAX bytes and v3 of FILL bytes,
 * with updated_at 1, no actor and position 2: exactly
 * SC_STATE_SNAPSHOT_MAX bytes in a snapshot. */

#define BIG_POSITION 2
static char *value; /* SC_EVENT_VALUE_MAX bytes */
static size_t fill; /* v3's length */
static const sc_str big_id = {"big", 3};
static const char *const vnames[] = {"v0", "v1", "v2", "v3"};

static sc_attr big_attr(int i, size_t len)
{
	return (sc_attr){{vnames[i], 2},
			 {.type = SC_VALUE_BYTES, .u.s = {value, len}}};
}

/* The attributes of the big state with v3 of `len` bytes. */
static void big_attrs(sc_attr a[4], size_t len)
{
	for (int i = 0; i < 3; i++)
		a[i] = big_attr(i, SC_EVENT_VALUE_MAX);
	a[3] = big_attr(3, len);
}

static uint64_t big_bytes(size_t len, uint64_t position)
{
	sc_attr a[4];
	big_attrs(a, len);
	return expect_bytes(big_id.len, a, 4, 1, 0, position, 0);
}

/* The three full values, then v3 (position 1 and 2). */
static sc_event big_first(sc_attr a[3])
{
	for (int i = 0; i < 3; i++)
		a[i] = big_attr(i, SC_EVENT_VALUE_MAX);
	return (sc_event){.position = 1,
			  .entity = big_id,
			  .type = SC_EVENT_SET,
			  .attrs = a,
			  .nattrs = 3,
			  .time = 1};
}

static sc_event big_second(sc_attr *a, size_t len)
{
	*a = big_attr(3, len);
	return (sc_event){.position = BIG_POSITION,
			  .entity = big_id,
			  .type = SC_EVENT_SET,
			  .attrs = a,
			  .nattrs = 1,
			  .time = 1};
}

/* The smallest change that makes the big state larger: one more
 * attribute. */
static const sc_attr one_more = {{"w", 1},
				 {.type = SC_VALUE_BOOL, .u.b = true}};

static void expect_too_big(int rc, const sc_error *err)
{
	assert_int_equal(rc, SC_ETOOBIG);
	char limit[32];
	snprintf(limit, sizeof limit, "%u", SC_STATE_SNAPSHOT_MAX);
	if (!strstr(err->message, "'big'") || !strstr(err->message, limit) ||
	    !strstr(err->message, "split"))
		fail_msg("message does not name the entity, the limit and the "
			 "way out: %s",
			 err->message);
}

static int setup_all(void **state)
{
	SC_UNUSED(state);
	seed = tk_seed("test_state_limit");
	root = tk_tmproot_create("test_state_limit");
	value = malloc(SC_EVENT_VALUE_MAX);
	if (!root || !value)
		return -1;
	for (size_t i = 0; i < SC_EVENT_VALUE_MAX; i++)
		value[i] = (char)(i * 7 % 251);
	/* Every varint length is the same across the few bytes searched, so
	 * the size is linear in v3's length here. */
	fill = SC_EVENT_VALUE_MAX;
	while (fill && big_bytes(fill, BIG_POSITION) > SC_STATE_SNAPSHOT_MAX)
		fill--;
	return big_bytes(fill, BIG_POSITION) == SC_STATE_SNAPSHOT_MAX ? 0 : -1;
}

static int teardown_all(void **state)
{
	SC_UNUSED(state);
	free(value);
	return tk_tmproot_remove();
}

/* ---- the exact size ------------------------------------------------------ */

static sc_value random_value(uint64_t *r, char *buf, size_t cap)
{
	sc_value v = {0};
	switch (tk_rand_below(r, 5)) {
	case 0:
		v.type = SC_VALUE_INT;
		v.u.i = (int64_t)(tk_rand(r) >> tk_rand_below(r, 64));
		if (tk_rand_below(r, 2))
			v.u.i = -v.u.i - 1;
		break;
	case 1:
		v.type = SC_VALUE_DOUBLE;
		v.u.d = (double)tk_rand(r) / 3.0;
		break;
	case 2:
		v.type = SC_VALUE_BOOL;
		v.u.b = tk_rand_below(r, 2);
		break;
	default: {
		/* Lengths around the varint steps, 127/128 and 16383/16384. */
		static const size_t lens[] = {0, 1, 127, 128, 16383, 16384};
		size_t len = tk_rand_below(r, 2)
				 ? lens[tk_rand_below(r, 6)]
				 : (size_t)tk_rand_below(r, cap + 1);
		v.type = tk_rand_below(r, 2) ? SC_VALUE_STRING : SC_VALUE_BYTES;
		v.u.s = (sc_str){buf, len};
		break;
	}
	}
	return v;
}

/* sc_entity_snapshot_bytes agrees with the wire format and with the
 * encoder, and stays within 19/16 of the state's bytes (the bound that
 * lets the cache skip the count for states of SC_ENTITY_SNAPSHOT_SURE
 * bytes or fewer). */
static void test_exact_size(void **state)
{
	SC_UNUSED(state);
	uint64_t r = seed;
	static char text[16384];
	memset(text, 'x', sizeof text);
	static char names[40][256];
	for (int round = 0; round < 300; round++) {
		sc_attr attrs[40];
		size_t n = tk_rand_below(&r, 40);
		for (size_t i = 0; i < n; i++) {
			/* Distinct names: a prefix that numbers them. */
			size_t len = 3 + tk_rand_below(&r, 253);
			memset(names[i], 'a' + (int)(tk_rand_below(&r, 26)),
			       len);
			names[i][0] = (char)('A' + i / 26);
			names[i][1] = (char)('a' + i % 26);
			attrs[i].name = (sc_str){names[i], len};
			attrs[i].value = random_value(&r, text, sizeof text);
		}
		char id[SC_ENTITY_ID_MAX];
		size_t id_len = 1 + tk_rand_below(&r, SC_ENTITY_ID_MAX);
		memset(id, 'i', id_len);
		size_t by_len =
		    tk_rand_below(&r, 3) ? 0 : tk_rand_below(&r, 300);
		/* Half the states in a named partition, of lengths around
		 * the varint steps and up to the longest. */
		static const size_t plens[] = {1, 127, 128, SC_EVENT_FIELD_MAX};
		static char part[SC_EVENT_FIELD_MAX];
		memset(part, 'p', sizeof part);
		size_t part_len =
		    tk_rand_below(&r, 2)
			? 0
			: (tk_rand_below(&r, 2)
			       ? plens[tk_rand_below(&r, 4)]
			       : 1 + tk_rand_below(&r, SC_EVENT_FIELD_MAX));
		sc_event ev = {
		    .position = tk_rand(&r) >> tk_rand_below(&r, 64),
		    .entity = {id, id_len},
		    .type = SC_EVENT_REPLACE,
		    .attrs = attrs,
		    .nattrs = n,
		    .time = tk_rand_below(&r, 4) ? (int64_t)tk_rand(&r) : 0,
		    .actor = {text, by_len},
		    .partition = {part, part_len},
		};
		sc_cache *c;
		sc_error err;
		assert_int_equal(sc_cache_create(NULL, &c, &err), 0);
		if (sc_cache_apply(c, &ev, &err))
			fail_msg("round %d: %s", round, err.message);
		assert_int_equal(sc_cache_promote(c), 0);
		const sc_entity *e =
		    sc_cache_pending_get_in(c, ev.partition, ev.entity);
		assert_non_null(e);
		uint64_t want = expect_bytes(id_len, attrs, n, ev.time, by_len,
					     ev.position, part_len);
		assert_int_equal(sc_entity_snapshot_bytes(e), want);
		assert_int_equal(encoded_raw(c), want);
		assert_true(want * 16 <=
			    (uint64_t)sc_entity_memory_bytes(e) * 19);
		sc_cache_destroy(c);
	}
}

/* ---- standalone states --------------------------------------------------- */

static void test_entity_apply(void **state)
{
	SC_UNUSED(state);
	sc_error err;
	sc_attr a[4];
	sc_event ev = big_first(a);
	sc_entity *first = NULL, *full = NULL, *out = NULL;
	assert_int_equal(sc_entity_apply(NULL, &ev, &first, &err), 0);
	sc_attr v3;
	ev = big_second(&v3, fill + 1);
	expect_too_big(sc_entity_apply(first, &ev, &out, &err), &err);
	assert_null(out);
	ev = big_second(&v3, fill);
	assert_int_equal(sc_entity_apply(first, &ev, &full, &err), 0);
	assert_int_equal(sc_entity_snapshot_bytes(full), SC_STATE_SNAPSHOT_MAX);

	/* One more attribute, or a later position of more varint bytes. */
	sc_event more = {.position = BIG_POSITION,
			 .entity = big_id,
			 .type = SC_EVENT_SET,
			 .attrs = &one_more,
			 .nattrs = 1,
			 .time = 1};
	expect_too_big(sc_entity_apply(full, &more, &out, &err), &err);
	assert_null(out);
	more.nattrs = 0;
	more.position = 128;
	expect_too_big(sc_entity_apply(full, &more, &out, &err), &err);
	/* The same size at a position of the same varint length is fine. */
	more.position = 127;
	assert_int_equal(sc_entity_apply(full, &more, &out, &err), 0);
	sc_entity_free(out);
	out = NULL;

	/* A replace that makes the state in one go, and a set that shrinks
	 * it. */
	big_attrs(a, fill + 1);
	sc_event rep = {.position = BIG_POSITION,
			.entity = big_id,
			.type = SC_EVENT_REPLACE,
			.attrs = a,
			.nattrs = 4,
			.time = 1};
	expect_too_big(sc_entity_apply(NULL, &rep, &out, &err), &err);
	assert_null(out);
	ev = big_second(&v3, 10);
	assert_int_equal(sc_entity_apply(full, &ev, &out, &err), 0);
	assert_int_equal(sc_entity_snapshot_bytes(out),
			 big_bytes(10, BIG_POSITION));

	/* The previous states are as they were. */
	assert_int_equal(sc_entity_snapshot_bytes(full), SC_STATE_SNAPSHOT_MAX);
	assert_int_equal(sc_entity_attr_count(full), 4);
	assert_int_equal(sc_entity_attr_count(first), 3);
	sc_entity_free(out);
	sc_entity_free(full);
	sc_entity_free(first);
}

/* ---- a cache --------------------------------------------------------------
 * The refused event is reported by the apply that has it, however events
 * are queued, and leaves the pending version as it was. */
static void test_cache_apply(void **state)
{
	SC_UNUSED(state);
	sc_cache *c;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &c, &err), 0);
	sc_attr a[4], v3;
	sc_event ev = big_first(a);
	assert_int_equal(sc_cache_apply(c, &ev, &err), 0);
	ev = big_second(&v3, fill);
	assert_int_equal(sc_cache_apply(c, &ev, &err), 0);
	assert_int_equal(sc_cache_promote(c), 0);
	const sc_entity *full = sc_cache_pending_get(c, big_id);
	assert_int_equal(sc_entity_snapshot_bytes(full), SC_STATE_SNAPSHOT_MAX);

	/* Small events that could be queued, around one that is refused. */
	char ids[64][8];
	sc_attr one = {{"n", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	for (int i = 0; i < 64; i++) {
		snprintf(ids[i], sizeof ids[i], "s%d", i);
		sc_event s = {.position = 3,
			      .entity = {ids[i], strlen(ids[i])},
			      .type = SC_EVENT_SET,
			      .attrs = &one,
			      .nattrs = 1,
			      .time = 1};
		assert_int_equal(sc_cache_apply(c, &s, &err), 0);
		if (i == 31) {
			sc_event more = {.position = 3,
					 .entity = big_id,
					 .type = SC_EVENT_SET,
					 .attrs = &one_more,
					 .nattrs = 1,
					 .time = 1};
			expect_too_big(sc_cache_apply(c, &more, &err), &err);
		}
	}
	assert_int_equal(sc_cache_prepare(c, &err), 0);
	assert_int_equal(sc_cache_promote(c), 0);
	const sc_entity *e = sc_cache_pending_get(c, big_id);
	assert_ptr_equal(e, full);
	assert_int_equal(sc_entity_position(e), BIG_POSITION);
	assert_false(sc_entity_find(e, one_more.name, NULL));
	uint64_t want = SC_STATE_SNAPSHOT_MAX;
	for (int i = 0; i < 64; i++)
		want += expect_bytes(strlen(ids[i]), &one, 1, 1, 0, 3, 0);
	assert_int_equal(encoded_raw(c), want);
	/* Alone in a pending version, the refused event leaves none open. */
	sc_event more = {.position = 4,
			 .entity = big_id,
			 .type = SC_EVENT_SET,
			 .attrs = &one_more,
			 .nattrs = 1,
			 .time = 1};
	expect_too_big(sc_cache_apply(c, &more, &err), &err);
	assert_false(sc_cache_pending(c));
	sc_cache_destroy(c);
}

/* Loading refuses the same states: sc_cache_load_entity and the restore's
 * steps. */
static void test_cache_load(void **state)
{
	SC_UNUSED(state);
	sc_cache *c;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &c, &err), 0);
	sc_attr a[4];
	big_attrs(a, fill);
	assert_int_equal(sc_cache_load_entity(c, big_id, a, 4, 1, (sc_str){0},
					      BIG_POSITION, &err),
			 0);
	const sc_entity *full = sc_cache_pending_get(c, big_id);
	assert_int_equal(sc_entity_snapshot_bytes(full), SC_STATE_SNAPSHOT_MAX);
	big_attrs(a, fill + 1);
	expect_too_big(sc_cache_load_entity(c, big_id, a, 4, 1, (sc_str){0},
					    BIG_POSITION, &err),
		       &err);
	assert_ptr_equal(sc_cache_pending_get(c, big_id), full);
	assert_int_equal(sc_cache_promote(c), 0);

	/* The restore's steps, with a state one byte too large (the chunk
	 * limit keeps a decoded snapshot from holding one; the cache does not
	 * depend on it). */
	uint64_t born;
	assert_int_equal(sc_cache_load_begin(c, BIG_POSITION, &born, &err), 0);
	size_t bytes;
	assert_int_equal(sc_cache_load_measure((sc_str){"", 0}, big_id, a, 4,
					       (sc_str){0}, &bytes, &err),
			 0);
	void *image = aligned_alloc(8, bytes);
	assert_non_null(image);
	sc_cache_loaded l;
	sc_cache_load_write(c, (sc_str){"", 0}, big_id, a, 4, 1, (sc_str){0},
			    BIG_POSITION, image, bytes, &l);
	expect_too_big(sc_cache_load_store(c, image, &l, &err), &err);
	free(image);
	sc_cache_discard(c);
	assert_ptr_equal(sc_cache_pending_get(c, big_id), full);
	sc_cache_destroy(c);
}

/* ---- a store --------------------------------------------------------------
 */

static int warnings;

static void count_warning(void *ctx, const char *message)
{
	SC_UNUSED(ctx);
	fprintf(stderr, "warning: %s\n", message);
	warnings++;
}

static sc_store *store_open(const char *dir)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.warn = count_warning;
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		fail_msg("open: %s", err.message);
	return s;
}

/* Append `n` events the model follows; they take positions from
 * `first`. */
static void append_ok(sc_store *s, tk_refstate *m, sc_event *evs, size_t n)
{
	sc_error err;
	uint64_t first = sc_store_last_position(s) + 1;
	if (sc_store_append(s, evs, n, NULL, &err))
		fail_msg("append: %s", err.message);
	for (size_t i = 0; i < n; i++) {
		evs[i].position = first + i;
		tk_refstate_apply(m, &evs[i]);
	}
}

static void snapshot_ok(sc_store *s, uint64_t position)
{
	sc_snapshot_info info;
	sc_error err;
	if (sc_store_snapshot(s, &info, &err))
		fail_msg("snapshot: %s", err.message);
	assert_int_equal(info.position, position);
}

static void test_store(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	snprintf(dir, sizeof dir, "%s/store", root);
	sc_store *s = store_open(dir);
	tk_refstate *m = tk_refstate_new();
	sc_error err;

	/* Up to the limit, snapshotted, reopened from the snapshot. */
	sc_attr a[3], v3;
	sc_event ev = big_first(a);
	append_ok(s, m, &ev, 1);
	ev = big_second(&v3, fill);
	append_ok(s, m, &ev, 1);
	assert_int_equal(sc_store_last_position(s), BIG_POSITION);
	snapshot_ok(s, BIG_POSITION);
	sc_store_close(s);
	s = store_open(dir);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(warnings, 0);

	/* The event that crosses it, first or last in its batch: refused,
	 * nothing written, nothing changed. */
	sc_attr one = {{"n", 1}, {.type = SC_VALUE_INT, .u.i = 5}};
	sc_event batch[2] = {
	    {.entity = {"other", 5},
	     .type = SC_EVENT_SET,
	     .attrs = &one,
	     .nattrs = 1,
	     .time = 1},
	    {.entity = big_id,
	     .type = SC_EVENT_SET,
	     .attrs = &one_more,
	     .nattrs = 1,
	     .time = 1},
	};
	expect_too_big(sc_store_append(s, batch, 2, NULL, &err), &err);
	sc_event swapped[2] = {batch[1], batch[0]};
	expect_too_big(sc_store_append(s, swapped, 2, NULL, &err), &err);
	assert_int_equal(sc_store_last_position(s), BIG_POSITION);
	assert_true(tk_cache_matches(sc_store_cache(s), m));

	/* Later appends, and a snapshot of the state at the limit with
	 * them. */
	append_ok(s, m, batch, 1); /* position 3 */
	snapshot_ok(s, 3);
	/* A shrink, then growth back up to the limit (positions 2 and 5
	 * take as many bytes). */
	ev = big_second(&v3, 1000);
	append_ok(s, m, &ev, 1); /* position 4 */
	ev = big_second(&v3, fill);
	append_ok(s, m, &ev, 1); /* position 5: back at the limit */
	assert_int_equal(sc_entity_snapshot_bytes(
			     sc_cache_pending_get(sc_store_cache(s), big_id)),
			 SC_STATE_SNAPSHOT_MAX);
	ev = big_second(&v3, fill + 1);
	expect_too_big(sc_store_append(s, &ev, 1, NULL, &err), &err);
	assert_int_equal(sc_store_last_position(s), 5);
	snapshot_ok(s, 5);
	sc_store_close(s);

	s = store_open(dir);
	assert_int_equal(sc_store_last_position(s), 5);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(warnings, 0);
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
	tk_refstate_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_size),
	    cmocka_unit_test(test_entity_apply),
	    cmocka_unit_test(test_cache_apply),
	    cmocka_unit_test(test_cache_load),
	    cmocka_unit_test(test_store),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
