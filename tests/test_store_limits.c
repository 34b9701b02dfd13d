/*
 * Every documented limit of an event at its maximum (id, attribute name,
 * actor, partition, tag, tags per event, attributes per event, value and
 * record size), in a store driven past every internal threshold: the
 * index catch-up (index_lag), automatic snapshots (snapshot_every), more
 * entities than a snapshot chunk holds, and map growth from a 64 KiB map.
 * What the log accepted must stay readable, indexable and restorable, and
 * later appends must keep working.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/internal.h"
#include "snapshot/snapshot.h"
#include "statecache/store.h"
#include "store/event_codec.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

static const char *root;

/* Entities of the volume part, and events appended in it. */
#define NENT	     4200u
#define NEVENTS	     5200u
#define SNAP_EVERY   2500u
#define BATCH	     50u
#define NAME_MAX_LEN SC_ATTR_NAME_MAX

/* One id of each length class, by entity number: ids kept whole in the
 * index (short, and the longest two, 498 and 499 bytes), and ids cut and
 * hashed (500, 600, 1024 bytes). Long ids of one length share everything
 * but their last 8 bytes, so their index keys share the cut and differ by
 * the hash only. */
static size_t make_id(char *buf, unsigned n)
{
	static const size_t lens[] = {0,
				      SC_INDEX_ID_WHOLE_MAX - 1,
				      SC_INDEX_ID_WHOLE_MAX,
				      SC_INDEX_ID_WHOLE_MAX + 1,
				      600,
				      SC_ENTITY_ID_MAX};
	size_t len = lens[n % 6];
	if (len == 0)
		return (size_t)snprintf(buf, 24, "s%u", n);
	memset(buf, 'L', len);
	char tail[9];
	snprintf(tail, sizeof tail, "%08u", n);
	memcpy(buf + len - 8, tail, 8);
	return len;
}

typedef struct big_parts {
	char name[NAME_MAX_LEN];
	char field[SC_EVENT_FIELD_MAX]; /* actor, partition, every tag */
	sc_str tags[SC_EVENT_TAGS_MAX];
	char *value; /* SC_EVENT_VALUE_MAX bytes */
	sc_attr *attrs;
	char (*names)[8];
} big_parts;

static void big_parts_init(big_parts *b)
{
	memset(b->name, 'n', sizeof b->name);
	memset(b->field, 'f', sizeof b->field);
	for (size_t i = 0; i < SC_EVENT_TAGS_MAX; i++)
		b->tags[i] = (sc_str){b->field, sizeof b->field};
	b->value = malloc(SC_EVENT_VALUE_MAX);
	assert_non_null(b->value);
	for (size_t i = 0; i < SC_EVENT_VALUE_MAX; i++)
		b->value[i] = (char)('a' + i % 23);
	b->attrs = calloc(SC_EVENT_ATTRS_MAX, sizeof *b->attrs);
	b->names = calloc(SC_EVENT_ATTRS_MAX, sizeof *b->names);
	assert_non_null(b->attrs);
	assert_non_null(b->names);
}

static void big_parts_free(big_parts *b)
{
	free(b->value);
	free(b->attrs);
	free(b->names);
}

/* An event with the longest actor, partition and attribute name, and the
 * most tags, each of the longest size. */
static sc_event event_max_fields(big_parts *b, sc_str id)
{
	b->attrs[0] = (sc_attr){{b->name, sizeof b->name},
				{.type = SC_VALUE_INT, .u.i = 7}};
	return (sc_event){.entity = id,
			  .type = SC_EVENT_SET,
			  .attrs = b->attrs,
			  .nattrs = 1,
			  .actor = {b->field, sizeof b->field},
			  .partition = {b->field, sizeof b->field},
			  .tags = b->tags,
			  .ntags = SC_EVENT_TAGS_MAX,
			  .time = 1};
}

/* An event with the most attributes. */
static sc_event event_max_attrs(big_parts *b, sc_str id)
{
	for (size_t i = 0; i < SC_EVENT_ATTRS_MAX; i++) {
		int n = snprintf(b->names[i], sizeof b->names[i], "a%05zu", i);
		b->attrs[i] =
		    (sc_attr){{b->names[i], (size_t)n},
			      {.type = SC_VALUE_INT, .u.i = (int64_t)i}};
	}
	return (sc_event){.entity = id,
			  .type = SC_EVENT_SET,
			  .attrs = b->attrs,
			  .nattrs = SC_EVENT_ATTRS_MAX,
			  .time = 2};
}

/* An event of values of the largest size that encodes to exactly
 * `size` bytes: three values of SC_EVENT_VALUE_MAX, every tag, and a
 * fourth value that makes up the rest. */
static sc_event event_of_size(big_parts *b, sc_str id, size_t size)
{
	static const char *names[] = {"v0", "v1", "v2", "v3"};
	for (int i = 0; i < 4; i++)
		b->attrs[i] = (sc_attr){
		    {names[i], 2},
		    {.type = SC_VALUE_BYTES,
		     .u.s = {b->value, i < 3 ? SC_EVENT_VALUE_MAX : 0}}};
	sc_event ev = {.entity = id,
		       .type = SC_EVENT_SET,
		       .attrs = b->attrs,
		       .nattrs = 4,
		       .tags = b->tags,
		       .ntags = SC_EVENT_TAGS_MAX,
		       .time = 3};
	/* The fourth value's length prefix grows with it: converge. */
	for (int round = 0; round < 4; round++) {
		size_t now = sc_event_encoded_size(&ev);
		size_t len = b->attrs[3].value.u.s.len;
		b->attrs[3].value.u.s.len = len + (size - now);
	}
	assert_int_equal(sc_event_encoded_size(&ev), size);
	return ev;
}

/* Collects the positions of the events read back, checking their id. */
typedef struct positions {
	sc_str id;
	uint64_t pos[16];
	size_t n;
} positions;

static int collect_pos(void *ctx, const sc_event *ev)
{
	positions *p = ctx;
	assert_int_equal(ev->entity.len, p->id.len);
	assert_memory_equal(ev->entity.ptr, p->id.ptr, p->id.len);
	assert_true(p->n < 16);
	p->pos[p->n++] = ev->position;
	return 0;
}

/* Expected positions of an id: recorded as the events are appended. */
typedef struct expect {
	char id[SC_ENTITY_ID_MAX];
	size_t len;
	sc_str partition; /* empty: the default partition */
	uint64_t pos[16];
	size_t n;
} expect;

static void expect_add(expect *e, uint64_t pos)
{
	assert_true(e->n < 16);
	e->pos[e->n++] = pos;
}

/* The entity's events read through the index and the tail are exactly
 * the expected ones, and its state as of the end is the model's. */
static void check_entity(sc_store *s, const tk_refstate *m, const expect *e)
{
	sc_str id = {e->id, e->len};
	positions got = {.id = id};
	sc_error err;
	int rc = sc_store_entity_events_in(s, e->partition, id, 0, 0,
					   collect_pos, &got, &err);
	if (rc)
		fprintf(stderr, "entity events: %s\n", err.message);
	assert_int_equal(rc, 0);
	assert_int_equal(got.n, e->n);
	for (size_t i = 0; i < e->n; i++)
		assert_int_equal(got.pos[i], e->pos[i]);
	sc_entity *at = NULL;
	rc = sc_store_entity_at_in(s, e->partition, id,
				   sc_store_last_position(s), &at, &err);
	assert_int_equal(rc, 0);
	const tk_refentity *want = tk_refstate_lookup_in(m, e->partition, id);
	assert_non_null(want);
	char why[256];
	if (!tk_refstate_entity_equal(want, at, why, sizeof why))
		fail_msg("entity state: %s", why);
	sc_entity_free(at);
}

static void append_one(sc_store *s, tk_refstate *m, sc_event *ev, expect *e)
{
	uint64_t first = tk_store_append_model(s, ev, 1, m);
	if (e)
		expect_add(e, first);
}

static int warnings;

static void count_warning(void *ctx, const char *message)
{
	SC_UNUSED(ctx);
	fprintf(stderr, "warning: %s\n", message);
	warnings++;
}

/* Append events n0..n1-1 of the volume stream (entity n % NENT), in
 * batches; record the positions of the entities in `watch`. */
static void append_volume(sc_store *s, tk_refstate *m, unsigned n0, unsigned n1,
			  expect *watch, size_t nwatch)
{
	static char ids[BATCH][SC_ENTITY_ID_MAX];
	for (unsigned n = n0; n < n1; n += BATCH) {
		sc_event evs[BATCH];
		sc_attr at[BATCH];
		unsigned b = n1 - n < BATCH ? n1 - n : BATCH;
		for (unsigned k = 0; k < b; k++) {
			unsigned ent = (n + k) % NENT;
			size_t len = make_id(ids[k], ent);
			at[k] = (sc_attr){
			    {"n", 1},
			    {.type = SC_VALUE_INT, .u.i = (int64_t)(n + k)}};
			evs[k] = (sc_event){.entity = {ids[k], len},
					    .type = SC_EVENT_SET,
					    .attrs = &at[k],
					    .nattrs = 1,
					    .time = (int64_t)(n + k + 10)};
		}
		uint64_t first = tk_store_append_model(s, evs, b, m);
		for (unsigned k = 0; k < b; k++) {
			for (size_t w = 0; w < nwatch; w++)
				if (watch[w].len == evs[k].entity.len &&
				    memcmp(watch[w].id, ids[k], watch[w].len) ==
					0)
					expect_add(&watch[w], first + k);
		}
	}
}

static void test_limits_at_volume(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	snprintf(dir, sizeof dir, "%s/limits", root);
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.map_size = 64 << 10;
	o.map_size_max = (size_t)4 << 30;
	o.snapshot_every = SNAP_EVERY;
	o.warn = count_warning;
	o.cache.seed = 42;
	sc_store *s = NULL;
	sc_error err;
	int rc;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	tk_refstate *m = tk_refstate_new();
	big_parts *b = calloc(1, sizeof *b);
	assert_non_null(b);
	big_parts_init(b);

	/* Watched: one entity of every id length class, the three carriers
	 * of the largest events (the one of the longest fields in the
	 * partition of the longest name), and a 499-byte id equal to the
	 * index key of a 1024-byte one of the default partition (its cut ++
	 * its hash). */
	enum { NWATCH = 6 + 4 };
	expect *w = calloc(NWATCH, sizeof *w);
	assert_non_null(w);
	for (unsigned i = 0; i < 6; i++)
		w[i].len = make_id(w[i].id, 1000 + i);
	for (unsigned i = 6; i < 9; i++) {
		w[i].len = SC_ENTITY_ID_MAX;
		memset(w[i].id, 'M', SC_ENTITY_ID_MAX);
		w[i].id[SC_ENTITY_ID_MAX - 1] = (char)('0' + i);
	}
	w[6].partition = (sc_str){b->field, sizeof b->field};
	w[9].len = SC_INDEX_ID_WHOLE_MAX;
	memcpy(w[9].id, w[7].id, SC_INDEX_ID_CUT);
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(w[7].id, w[7].len));
	memcpy(w[9].id + SC_INDEX_ID_CUT, h.digest, 16);

	/* One event of each kind of maximum among the volume, each before an
	 * index catch-up and a snapshot. */
	append_volume(s, m, 0, 100, w, 6);
	sc_event ev = event_max_fields(b, (sc_str){w[6].id, w[6].len});
	append_one(s, m, &ev, &w[6]);
	sc_attr one = {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event twin = {.entity = {w[9].id, w[9].len},
			 .type = SC_EVENT_SET,
			 .attrs = &one,
			 .nattrs = 1,
			 .time = 4};
	append_one(s, m, &twin, &w[9]);
	append_volume(s, m, 100, 2000, w, 6);
	ev = event_max_attrs(b, (sc_str){w[7].id, w[7].len});
	append_one(s, m, &ev, &w[7]);
	append_volume(s, m, 2000, 3000, w, 6);
	ev = event_of_size(b, (sc_str){w[8].id, w[8].len}, SC_EVENT_RECORD_MAX);
	append_one(s, m, &ev, &w[8]);

	/* One byte more is refused when it is appended, and nothing changes. */
	uint64_t last = sc_store_last_position(s);
	ev = event_of_size(b, (sc_str){w[8].id, w[8].len},
			   SC_EVENT_RECORD_MAX + 1);
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "split"));
	assert_int_equal(sc_store_last_position(s), last);

	/* The rest of the volume: index catch-ups, a second snapshot. */
	append_volume(s, m, 3000, NEVENTS, w, 6);
	twin.time = 5;
	append_one(s, m, &twin, &w[9]);
	ev = event_max_fields(b, (sc_str){w[6].id, w[6].len});
	ev.time = 6;
	append_one(s, m, &ev, &w[6]);

	assert_int_equal(warnings, 0);
	size_t rows;
	uint64_t through;
	assert_true(tk_index_state(s, &rows, &through));
	assert_true(through >= SC_STORE_INDEX_LAG_DEFAULT);
	sc_snapshot_info snaps[4];
	assert_int_equal(sc_store_snapshots(s, snaps, 4, NULL), 2);
	assert_true(snaps[0].position >= 2 * SNAP_EVERY);
	assert_true(snaps[0].entities > SC_SNAPSHOT_CHUNK_ENTITIES_DEFAULT);
	assert_true(snaps[0].chunks >= 2);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.map_size >= (size_t)SC_EVENT_RECORD_MAX);
	for (size_t i = 0; i < NWATCH; i++)
		check_entity(s, m, &w[i]);
	const tk_refentity *wide =
	    tk_refstate_lookup(m, (sc_str){w[7].id, w[7].len});
	assert_non_null(wide);
	assert_int_equal(wide->nattrs, SC_EVENT_ATTRS_MAX);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	sc_store_close(s);

	/* Reopened: the newest snapshot restores, the log after it replays,
	 * and the store takes more events of every kind. */
	o.map_size = 0;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	assert_int_equal(warnings, 0);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	append_volume(s, m, NEVENTS, NEVENTS + 3000, w, 6);
	ev = event_max_attrs(b, (sc_str){w[7].id, w[7].len});
	ev.time = 7;
	append_one(s, m, &ev, &w[7]);
	assert_true(tk_index_state(s, &rows, &through));
	assert_true(through >= 2 * SC_STORE_INDEX_LAG_DEFAULT);
	for (size_t i = 0; i < NWATCH; i++)
		check_entity(s, m, &w[i]);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(warnings, 0);
	rc = sc_store_verify(s, &err);
	if (rc)
		fprintf(stderr, "verify: %s\n", err.message);
	assert_int_equal(rc, 0);
	sc_store_close(s);

	free(w);
	big_parts_free(b);
	free(b);
	tk_refstate_free(m);
}

static int setup_all(void **state)
{
	SC_UNUSED(state);
	root = tk_tmproot_create("test_store_limits");
	return root ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_limits_at_volume),
	};
	return cmocka_run_group_tests(tests, setup_all, tk_tmproot_teardown);
}
