/*
 * The durable store: append/read round trips against a reference model,
 * all-or-nothing appends (bad event, projector failure, map full,
 * allocation failures), snapshots under map growth, durability modes,
 * format version checks and upgrades, open never recreating a lost
 * database, atomic creation, file modes, sc_store_verify, and the event
 * codec.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "statecache/store.h"
#include "statecache/testing.h"
#include "statecache/v1/statecache.pb-c.h"
#include "store/event_codec.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

static uint64_t seed;
static const char *root;

/* A fresh store directory name (not created). */
static sc_store_options opts(void)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	/* Most appends leave their events to the tail; every few index it. */
	o.index_lag = 4;
	return o;
}

/* Collects events read back from the store (deep copies by re-decoding
 * is not possible here, so each is re-encoded into a buffer list). */
typedef struct collected {
	size_t n, cap;
	uint8_t **bufs;
	size_t *lens;
	uint64_t *pos;
} collected;

static int collect(void *ctx, const sc_event *ev)
{
	collected *c = ctx;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->bufs = realloc(c->bufs, c->cap * sizeof *c->bufs);
		c->lens = realloc(c->lens, c->cap * sizeof *c->lens);
		c->pos = realloc(c->pos, c->cap * sizeof *c->pos);
	}
	sc_error err;
	int rc = sc_event_encode(ev, &c->bufs[c->n], &c->lens[c->n], &err);
	if (rc)
		return rc;
	c->pos[c->n] = ev->position;
	c->n++;
	return 0;
}

static void collected_free(collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		sc_free(c->bufs[i]);
	free(c->bufs);
	free(c->lens);
	free(c->pos);
	memset(c, 0, sizeof *c);
}

static void collected_get(const collected *c, size_t i, sc_decoded_event *d)
{
	assert_int_equal(
	    sc_event_decode(c->bufs[i], c->lens[i], c->pos[i], d, NULL), 0);
}

static int setup_all(void **state)
{
	SC_UNUSED(state);
	seed = tk_seed("test_store");
	root = tk_tmproot_create("test_store");
	return root ? 0 : -1;
}

/* ---- the fixture --------------------------------------------------------- */

/* Most tests run on one store: a fresh directory and the default options
 * (fx_setup), opened at once (fx_setup_open) or after the test changed an
 * option (fx_open). Teardown closes the store if it is open and removes
 * the directory. */
typedef struct store_fx {
	char dir[256];
	sc_store_options o;
	sc_store *s; /* the open store, or NULL */
} store_fx;

static sc_store *fx_open(store_fx *fx)
{
	assert_null(fx->s);
	fx->s = tk_store_open(fx->dir, &fx->o);
	return fx->s;
}

static void fx_close(store_fx *fx)
{
	sc_store_close(fx->s);
	fx->s = NULL;
}

/* Close and open again with fx->o: the state comes back from the files. */
static sc_store *fx_reopen(store_fx *fx)
{
	fx_close(fx);
	return fx_open(fx);
}

static int fx_setup(void **state)
{
	store_fx *fx = calloc(1, sizeof *fx);
	if (!fx)
		return -1;
	tk_tmproot_dir(fx->dir, sizeof fx->dir);
	fx->o = opts();
	*state = fx;
	return 0;
}

static int fx_setup_open(void **state)
{
	if (fx_setup(state))
		return -1;
	fx_open(*state);
	return 0;
}

static int fx_teardown(void **state)
{
	store_fx *fx = *state;
	fx_close(fx);
	tk_rm_rf(fx->dir);
	free(fx);
	return 0;
}

/* ---- round trips --------------------------------------------------------- */

/* Append a random stream and read it back every way; `lag` is the store's
 * index_lag, so entity reads go through entity_index, the unindexed tail
 * of the log, or both. */
static void append_read_roundtrip(store_fx *fx, uint64_t lag)
{
	fx->o.index_lag = lag;
	sc_store *s = fx_open(fx);
	assert_int_equal(sc_store_last_position(s), 0);

	const unsigned nent = 40;
	const size_t total = 1500;
	tk_event *evs = calloc(total, sizeof *evs);
	uint64_t r = seed;
	size_t done = 0;
	while (done < total) {
		size_t b = 1 + tk_rand(&r) % 60;
		if (b > total - done)
			b = total - done;
		sc_event batch[60];
		for (size_t k = 0; k < b; k++) {
			/* A third of the events are stamped by the store. */
			int64_t t =
			    (done + k) % 3 ? (int64_t)(1000 + done + k) : 0;
			tk_event_gen(seed, done + k, nent, t, &evs[done + k]);
			batch[k] = evs[done + k].ev;
		}
		uint64_t first = 0;
		sc_error err;
		int rc = sc_store_append(s, batch, b, &first, &err);
		if (rc)
			fprintf(stderr, "append: %s\n", err.message);
		assert_int_equal(rc, 0);
		assert_int_equal(first, done + 1);
		done += b;
		assert_int_equal(sc_store_last_position(s), done);
	}

	/* The log: dense positions from 1, each event as appended (time
	 * stamped where it was 0). */
	collected c = {0};
	assert_int_equal(sc_store_events(s, 0, 0, collect, &c, NULL), 0);
	assert_int_equal(c.n, total);
	tk_refstate *m = tk_refstate_new();
	for (size_t i = 0; i < total; i++) {
		sc_decoded_event d;
		collected_get(&c, i, &d);
		assert_int_equal(d.ev.position, i + 1);
		sc_event want = evs[i].ev;
		want.position = i + 1;
		if (want.time == 0) {
			assert_true(d.ev.time != 0);
			want.time = d.ev.time;
		}
		assert_true(tk_event_equal(&d.ev, &want));
		tk_refstate_apply(m, &d.ev);
		sc_decoded_event_free(&d);
	}
	assert_true(tk_cache_matches(sc_store_cache(s), m));

	/* from/limit. */
	collected c2 = {0};
	assert_int_equal(sc_store_events(s, 100, 7, collect, &c2, NULL), 0);
	assert_int_equal(c2.n, 7);
	assert_int_equal(c2.pos[0], 100);
	assert_int_equal(c2.pos[6], 106);
	collected_free(&c2);
	assert_int_equal(sc_store_events(s, total + 1, 0, collect, &c2, NULL),
			 0);
	assert_int_equal(c2.n, 0);

	/* Per-entity reads against a filter of the log, and as-of states
	 * against a per-entity fold. */
	for (unsigned e = 0; e < nent; e += 3) {
		char id[16];
		int n = snprintf(id, sizeof id, "e%u", e);
		sc_str sid = {id, (size_t)n};
		collected ce = {0};
		assert_int_equal(
		    sc_store_entity_events(s, sid, 0, 0, collect, &ce, NULL),
		    0);
		size_t k = 0;
		uint64_t probe = 1 + tk_rand(&r) % total;
		/* The model of positions <= probe. */
		tk_refstate *at_probe = tk_refstate_new();
		for (size_t i = 0; i < total; i++) {
			sc_decoded_event d;
			collected_get(&c, i, &d);
			/* The entity (default partition, id). */
			if (d.ev.entity.len == sid.len && !d.ev.partition.len &&
			    memcmp(d.ev.entity.ptr, id, sid.len) == 0) {
				assert_true(k < ce.n);
				assert_int_equal(ce.pos[k], d.ev.position);
				k++;
				if (d.ev.position <= probe)
					tk_refstate_apply(at_probe, &d.ev);
			}
			sc_decoded_event_free(&d);
		}
		assert_int_equal(k, ce.n);
		sc_entity *got = NULL;
		sc_error err;
		int rc = sc_store_entity_at(s, sid, probe, &got, &err);
		const tk_refentity *want = tk_refstate_lookup(at_probe, sid);
		char why[256];
		if (want) {
			assert_int_equal(rc, 0);
			if (!tk_refstate_entity_equal(want, got, why,
						      sizeof why))
				fail_msg("as of %llu: %s",
					 (unsigned long long)probe, why);
		} else {
			assert_int_equal(rc, SC_NOTFOUND);
			assert_null(got);
		}
		sc_entity_free(got);
		tk_refstate_free(at_probe);
		/* As of the end: the current state. */
		rc = sc_store_entity_at(s, sid, total, &got, NULL);
		const tk_refentity *cur = tk_refstate_lookup(m, sid);
		if (cur) {
			assert_int_equal(rc, 0);
			if (!tk_refstate_entity_equal(cur, got, why,
						      sizeof why))
				fail_msg("as of the end: %s", why);
		} else {
			assert_int_equal(rc, SC_NOTFOUND);
		}
		sc_entity_free(got);
		/* from/limit on the entity's events. */
		if (ce.n > 2) {
			collected cl = {0};
			assert_int_equal(
			    sc_store_entity_events(s, sid, ce.pos[1], 1,
						   collect, &cl, NULL),
			    0);
			assert_int_equal(cl.n, 1);
			assert_int_equal(cl.pos[0], ce.pos[1]);
			collected_free(&cl);
		}
		collected_free(&ce);
	}
	/* An id that is a prefix of others ("e1" vs "e10") and an unknown
	 * one. */
	sc_entity *none = NULL;
	assert_int_equal(
	    sc_store_entity_at(s, (sc_str){"zz", 2}, total, &none, NULL),
	    SC_NOTFOUND);

	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_int_equal(st.last_position, total);
	assert_true(st.map_bytes_used > 0 && st.map_bytes_used <= st.map_size);
	assert_int_equal(st.cache.entities, tk_refstate_len(m));

	/* Reopen: the replayed state is the same, and so are the entity
	 * reads. */
	s = fx_reopen(fx);
	assert_int_equal(sc_store_last_position(s), total);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	for (unsigned e = 1; e < nent; e += 3) {
		char id[16];
		int n = snprintf(id, sizeof id, "e%u", e);
		sc_str sid = {id, (size_t)n};
		collected ce = {0};
		assert_int_equal(
		    sc_store_entity_events(s, sid, 0, 0, collect, &ce, NULL),
		    0);
		size_t k = 0;
		for (size_t i = 0; i < total; i++) {
			if (evs[i].ev.entity.len == sid.len &&
			    !evs[i].ev.partition.len &&
			    memcmp(evs[i].ev.entity.ptr, id, sid.len) == 0) {
				assert_true(k < ce.n);
				assert_int_equal(ce.pos[k], i + 1);
				k++;
			}
		}
		assert_int_equal(k, ce.n);
		collected_free(&ce);
	}

	collected_free(&c);
	tk_refstate_free(m);
	free(evs);
}

static void test_append_read_roundtrip_indexed(void **state)
{
	append_read_roundtrip(*state, 1);
}

static void test_append_read_roundtrip_lagging(void **state)
{
	append_read_roundtrip(*state, 97);
}

static void test_append_read_roundtrip_unindexed(void **state)
{
	append_read_roundtrip(*state, 1u << 20);
}

/* An entity id that is another id followed by 8 bytes must not leak into
 * the other's index walk. */
static void entity_index_prefix_ids(store_fx *fx, uint64_t lag)
{
	fx->o.index_lag = lag;
	sc_store *s = fx_open(fx);
	char longid[9 + 8];
	memcpy(longid, "a", 1);
	/* "a" ++ BE(2) ++ "zzzzzzzz": sorts between a's rows. */
	uint8_t be2[8] = {0, 0, 0, 0, 0, 0, 0, 2};
	memcpy(longid + 1, be2, 8);
	memcpy(longid + 9, "zzzzzzzz", 8);
	sc_attr at = {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event evs[4] = {
	    {.entity = {"a", 1},
	     .type = SC_EVENT_SET,
	     .attrs = &at,
	     .nattrs = 1,
	     .time = 5},
	    {.entity = {longid, 17},
	     .type = SC_EVENT_SET,
	     .attrs = &at,
	     .nattrs = 1,
	     .time = 5},
	    {.entity = {"a", 1},
	     .type = SC_EVENT_SET,
	     .attrs = &at,
	     .nattrs = 1,
	     .time = 6},
	    {.entity = {"ab", 2}, .type = SC_EVENT_DELETE, .time = 7},
	};
	assert_int_equal(sc_store_append(s, evs, 4, NULL, NULL), 0);
	collected c = {0};
	assert_int_equal(sc_store_entity_events(s, (sc_str){"a", 1}, 0, 0,
						collect, &c, NULL),
			 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.pos[0], 1);
	assert_int_equal(c.pos[1], 3);
	collected_free(&c);
	assert_int_equal(sc_store_entity_events(s, (sc_str){longid, 17}, 0, 0,
						collect, &c, NULL),
			 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.pos[0], 2);
	collected_free(&c);
	sc_entity *e = NULL;
	assert_int_equal(sc_store_entity_at(s, (sc_str){"a", 1}, 2, &e, NULL),
			 0);
	assert_int_equal(sc_entity_position(e), 1);
	sc_entity_free(e);
	assert_int_equal(sc_store_entity_at(s, (sc_str){"ab", 2}, 4, &e, NULL),
			 SC_NOTFOUND);
}

static void test_entity_index_prefix_ids_indexed(void **state)
{
	entity_index_prefix_ids(*state, 1); /* every row in entity_index */
}

static void test_entity_index_prefix_ids_tail(void **state)
{
	entity_index_prefix_ids(*state, 100); /* every event in the tail */
}

/* The rows of one catch-up are sorted in LMDB's key order before they
 * are written (a debug build checks every pair): ids that share long
 * prefixes, that are prefixes of one another, that are cut and hashed,
 * in named partitions, and a catch-up that spans two epochs (65,536
 * positions each). Every entity's events read back through the index. */
static void test_entity_index_sorts_catch_up(void **state)
{
	store_fx *fx = *state;
	fx->o.index_lag = 20000;
	sc_store *s = fx_open(fx);
	enum { N = 80000, B = 5000, KINDS = 7 };
	static char longid[700];
	memset(longid, 'q', sizeof longid);
	sc_event *evs = calloc(B, sizeof *evs);
	char(*ids)[32] = calloc(B, sizeof *ids);
	assert_non_null(evs);
	assert_non_null(ids);
	sc_attr at = {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	/* counts[k]: events of kind k's probe entity. */
	size_t counts[KINDS] = {0};
	for (size_t first = 0; first < N; first += B) {
		for (size_t j = 0; j < B; j++) {
			size_t i = first + j, kind = i % KINDS;
			sc_event *ev = &evs[j];
			*ev = (sc_event){.type = SC_EVENT_SET,
					 .attrs = &at,
					 .nattrs = 1,
					 .time = (int64_t)i + 1};
			int n;
			switch (kind) {
			case 0: /* a long shared prefix */
				n = snprintf(ids[j], sizeof ids[j],
					     "entity-0000000%zu", i % 977);
				break;
			case 1: /* prefixes of one another: p, p0, p00, ... */
				n = snprintf(ids[j], sizeof ids[j], "p%.*s",
					     (int)(i % 13), "0000000000000");
				break;
			case 2: /* cut and hashed: 600..699 bytes */
				ev->entity = (sc_str){longid, 600 + i % 100};
				n = -1;
				break;
			case 3: /* in a named partition */
				n = snprintf(ids[j], sizeof ids[j], "d%zu",
					     i % 31);
				ev->partition = (sc_str){"tenant", 6};
				break;
			default: /* short, random-ish */
				n = snprintf(ids[j], sizeof ids[j], "%zx",
					     (i * 2654435761u) % 5003);
				break;
			}
			if (n >= 0)
				ev->entity = (sc_str){ids[j], (size_t)n};
			if (i % 977 == 5 && kind == 0)
				counts[0]++;
			if (i % 13 == 0 && kind == 1)
				counts[1]++;
			if (i % 100 == 7 && kind == 2)
				counts[2]++;
			if (i % 31 == 3 && kind == 3)
				counts[3]++;
		}
		assert_int_equal(sc_store_append(s, evs, B, NULL, NULL), 0);
	}
	assert_int_equal(sc_store_verify(s, NULL), 0);
	size_t rows, through;
	assert_true(tk_index_state(s, &rows, &through));
	assert_true(through >= 65536 + B);
	struct {
		sc_str partition, id;
		size_t n;
	} probes[] = {
	    {{"", 0}, {"entity-00000005", 15}, counts[0]},
	    {{"", 0}, {"p", 1}, counts[1]},
	    {{"", 0}, {longid, 607}, counts[2]},
	    {{"tenant", 6}, {"d3", 2}, counts[3]},
	};
	for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
		assert_true(probes[k].n > 0);
		collected c = {0};
		assert_int_equal(sc_store_entity_events_in(
				     s, probes[k].partition, probes[k].id, 0, 0,
				     collect, &c, NULL),
				 0);
		assert_int_equal(c.n, probes[k].n);
		for (size_t i = 1; i < c.n; i++)
			assert_true(c.pos[i - 1] < c.pos[i]);
		collected_free(&c);
	}
	free(ids);
	free(evs);
}

/* ---- all or nothing ------------------------------------------------------ */

typedef struct snapshot_of {
	uint64_t last;
	uint64_t hash;
	size_t len;
	size_t log_events;
	size_t index_rows;
	uint64_t index_through;
} snapshot_of;

static int count_event(void *ctx, const sc_event *ev)
{
	SC_UNUSED(ev);
	(*(size_t *)ctx)++;
	return 0;
}

static snapshot_of observe(sc_store *s)
{
	snapshot_of o;
	o.last = sc_store_last_position(s);
	o.hash = tk_cache_hash(sc_store_cache(s), &o.len);
	o.log_events = 0;
	assert_int_equal(
	    sc_store_events(s, 0, 0, count_event, &o.log_events, NULL), 0);
	assert_true(tk_index_state(s, &o.index_rows, &o.index_through));
	/* The index holds exactly the positions up to index_through. */
	assert_int_equal(o.index_rows, o.index_through);
	assert_true(o.index_through <= o.last);
	return o;
}

static void assert_same(snapshot_of a, snapshot_of b)
{
	assert_int_equal(a.last, b.last);
	assert_int_equal(a.hash, b.hash);
	assert_int_equal(a.len, b.len);
	assert_int_equal(a.log_events, b.log_events);
	assert_int_equal(a.index_rows, b.index_rows);
	assert_int_equal(a.index_through, b.index_through);
}

static void fill(sc_store *s, size_t n, uint64_t base)
{
	for (size_t i = 0; i < n; i++) {
		tk_event e;
		tk_event_gen(seed, base + i, 20, (int64_t)(base + i + 1), &e);
		assert_int_equal(sc_store_append(s, &e.ev, 1, NULL, NULL), 0);
	}
}

static void test_bad_event_rejects_batch(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx->s;
	fill(s, 30, 0);
	snapshot_of before = observe(s);

	tk_event g[6];
	sc_event batch[6];
	for (int i = 0; i < 6; i++) {
		tk_event_gen(seed, 100 + (uint64_t)i, 20, 9, &g[i]);
		batch[i] = g[i].ev;
	}
	sc_attr bad_attr = {{"", 0}, {.type = SC_VALUE_INT}};
	const char nul_str[] = {'a', 0, 'b'};
	sc_attr nul_attr = {{"n", 1},
			    {.type = SC_VALUE_STRING, .u.s = {nul_str, 3}}};
	char big[SC_ENTITY_ID_MAX + 1];
	memset(big, 'x', sizeof big);
	struct {
		sc_event ev;
		const char *needle;
	} cases[] = {
	    {{.entity = {"", 0}, .type = SC_EVENT_SET}, "entity id"},
	    {{.entity = {big, sizeof big}, .type = SC_EVENT_SET}, "entity id"},
	    {{.entity = {"x", 1}, .type = (sc_event_type)9}, "unknown event"},
	    {{.entity = {"x", 1},
	      .type = SC_EVENT_SET,
	      .attrs = &bad_attr,
	      .nattrs = 1},
	     "name"},
	    {{.entity = {"x", 1},
	      .type = SC_EVENT_SET,
	      .attrs = &nul_attr,
	      .nattrs = 1},
	     "NUL"},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		batch[3] = cases[c].ev;
		sc_error err;
		int rc = sc_store_append(s, batch, 6, NULL, &err);
		assert_int_equal(rc, SC_EINVAL);
		assert_int_equal(err.code, SC_EINVAL);
		assert_non_null(strstr(err.message, "event 3"));
		assert_non_null(strstr(err.message, cases[c].needle));
		assert_same(before, observe(s));
	}
}

/* The store accepts what the cache accepts: a null value in a replace
 * counts as absent, in the cache, after a replay and in an as-of read. */
static void test_replace_with_null(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx->s;
	sc_attr at[2] = {{{"a", 1}, {.type = SC_VALUE_INT, .u.i = 7}},
			 {{"b", 1}, {.type = SC_VALUE_NULL}}};
	sc_event ev = {.entity = {"r", 1},
		       .type = SC_EVENT_REPLACE,
		       .attrs = at,
		       .nattrs = 2,
		       .time = 1};
	sc_error err;
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, &err), 0);
	for (int round = 0; round < 2; round++) {
		sc_reader *r;
		assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL),
				 0);
		const sc_entity *e = sc_reader_get(r, (sc_str){"r", 1});
		assert_non_null(e);
		assert_int_equal(sc_entity_attr_count(e), 1);
		sc_value v;
		assert_true(sc_entity_find(e, (sc_str){"a", 1}, &v));
		assert_int_equal(v.u.i, 7);
		assert_false(sc_entity_find(e, (sc_str){"b", 1}, &v));
		sc_entity *at1 = NULL;
		assert_int_equal(
		    sc_store_entity_at(s, (sc_str){"r", 1}, 1, &at1, NULL), 0);
		assert_true(sc_entity_equal(at1, e));
		sc_entity_free(at1);
		sc_reader_close(r);
		/* Again from a replay of the log. */
		s = fx_reopen(fx);
	}
}

typedef struct proj_state {
	int calls, fail_at, commits, rollbacks;
	MDB_dbi dbi;
	bool use_db;
} proj_state;

static int proj_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
		      sc_error *err)
{
	proj_state *p = ctx;
	if (p->calls++ == p->fail_at) {
		if (err)
			snprintf(err->message, sizeof err->message,
				 "refusing position %llu",
				 (unsigned long long)ev->position);
		return SC_EINVAL;
	}
	if (p->use_db) {
		MDB_val k = {ev->entity.len, (void *)ev->entity.ptr};
		uint64_t pos = ev->position;
		MDB_val v = {8, &pos};
		return mdb_put(txn, p->dbi, &k, &v, 0);
	}
	return 0;
}

static void proj_commit(void *ctx)
{
	((proj_state *)ctx)->commits++;
}

static void proj_rollback(void *ctx)
{
	((proj_state *)ctx)->rollbacks++;
}

static void test_projector_failure_rolls_back(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx->s;
	fill(s, 10, 0);

	/* A projector with its own database in the store's environment. */
	proj_state ps = {.fail_at = -1, .use_db = true};
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "proj", MDB_CREATE, &ps.dbi), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	sc_projector p = {"counter", proj_apply, proj_commit, proj_rollback,
			  &ps};
	assert_int_equal(sc_store_add_projector(s, &p, NULL), 0);
	sc_projector bad = {"", NULL, NULL, NULL, NULL};
	assert_int_equal(sc_store_add_projector(s, &bad, NULL), SC_EINVAL);

	uint64_t off = 99;
	assert_int_equal(sc_store_projector_position(s, "counter", &off, NULL),
			 0);
	assert_int_equal(off, 0);
	fill(s, 5, 10);
	assert_int_equal(ps.commits, 5);
	assert_int_equal(sc_store_projector_position(s, "counter", &off, NULL),
			 0);
	assert_int_equal(off, 15);
	snapshot_of before = observe(s);

	tk_event g[4];
	sc_event batch[4];
	for (int i = 0; i < 4; i++) {
		tk_event_gen(seed, 50 + (uint64_t)i, 20, 9, &g[i]);
		batch[i] = g[i].ev;
	}
	ps.fail_at = ps.calls + 2;
	sc_error err;
	int rc = sc_store_append(s, batch, 4, NULL, &err);
	assert_int_equal(rc, SC_EPROJECTOR);
	assert_non_null(strstr(err.message, "counter"));
	assert_non_null(strstr(err.message, "event 2"));
	assert_non_null(strstr(err.message, "refusing position 18"));
	assert_int_equal(ps.rollbacks, 1);
	assert_int_equal(ps.commits, 5);
	assert_same(before, observe(s));
	/* The projector's own rows of the failed batch are gone too. */
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	MDB_stat st;
	assert_int_equal(mdb_stat(txn, ps.dbi, &st), 0);
	mdb_txn_abort(txn);
	size_t rows_before = st.ms_entries;

	/* The failed append left the offset alone. */
	assert_int_equal(sc_store_projector_position(s, "counter", &off, NULL),
			 0);
	assert_int_equal(off, 15);
	ps.fail_at = -1;
	assert_int_equal(sc_store_append(s, batch, 4, NULL, NULL), 0);
	assert_int_equal(sc_store_projector_position(s, "counter", &off, NULL),
			 0);
	assert_int_equal(off, 19);
	assert_int_equal(ps.commits, 6);
	assert_int_equal(sc_store_last_position(s), before.last + 4);
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	assert_int_equal(mdb_stat(txn, ps.dbi, &st), 0);
	mdb_txn_abort(txn);
	assert_true(st.ms_entries >= rows_before);
	/* Offsets survive a reopen. */
	s = fx_reopen(fx);
	assert_int_equal(sc_store_projector_position(s, "counter", &off, NULL),
			 0);
	assert_int_equal(off, 19);
	assert_int_equal(sc_store_projector_position(s, "", &off, NULL),
			 SC_EINVAL);
}

static void test_map_full(void **state)
{
	store_fx *fx = *state;
	fx->o.map_size = 64 << 10;
	fx->o.map_size_max = 512 << 10;
	sc_store *s = fx_open(fx);
	tk_refstate *m = tk_refstate_new();
	uint64_t i = 0;
	int rc = 0;
	sc_error err;
	snapshot_of before = observe(s);
	/* Batches of 50 events with 1 KiB values until the limit. */
	static char blob[1024];
	memset(blob, 'v', sizeof blob);
	for (;;) {
		tk_event g[50];
		sc_event batch[50];
		sc_attr big[50];
		for (int k = 0; k < 50; k++) {
			tk_event_gen(seed, i + (uint64_t)k, 500,
				     (int64_t)(i + (uint64_t)k + 1), &g[k]);
			batch[k] = g[k].ev;
			big[k] = (sc_attr){{"blob", 4},
					   {.type = SC_VALUE_BYTES,
					    .u.s = {blob, sizeof blob}}};
			batch[k].type = SC_EVENT_SET;
			batch[k].attrs = &big[k];
			batch[k].nattrs = 1;
		}
		before = observe(s);
		rc = sc_store_append(s, batch, 50, NULL, &err);
		if (rc)
			break;
		for (int k = 0; k < 50; k++) {
			batch[k].position = i + (uint64_t)k + 1;
			tk_refstate_apply(m, &batch[k]);
		}
		i += 50;
		assert_true(i < 100000);
	}
	assert_int_equal(rc, SC_EMAPFULL);
	assert_non_null(strstr(err.message, "map_size_max"));
	assert_non_null(strstr(err.message, "524288"));
	assert_true(i > 0); /* the map grew from 64 KiB before failing */
	assert_same(before, observe(s));
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	fx_close(fx);

	/* A larger limit: the same store takes the batch. */
	fx->o.map_size_max = 64 << 20;
	s = fx_open(fx);
	assert_int_equal(sc_store_last_position(s), i);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	fill(s, 100, i);
	assert_int_equal(sc_store_last_position(s), i + 100);
	tk_refstate_free(m);
}

static void test_alloc_failure_append(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx->s;
	fill(s, 40, 0);
	tk_event g[8];
	sc_event batch[8];
	for (int i = 0; i < 8; i++) {
		tk_event_gen(seed, 200 + (uint64_t)i, 20, 9, &g[i]);
		batch[i] = g[i].ev;
	}
	int failures = 0;
	for (long n = 0;; n++) {
		snapshot_of before = observe(s);
		sc_error err;
		sc_testing_fail_alloc_after(n);
		int rc = sc_store_append(s, batch, 8, NULL, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc == 0)
			break;
		failures++;
		assert_int_equal(rc, ENOMEM);
		assert_same(before, observe(s));
		assert_true(n < 10000);
	}
	printf("append survived %d injected allocation failures\n", failures);
	assert_int_equal(sc_store_last_position(s), 48);
	/* The state equals a replay of the log. */
	uint64_t h = tk_cache_hash(sc_store_cache(s), NULL);
	s = fx_reopen(fx);
	assert_int_equal(tk_cache_hash(sc_store_cache(s), NULL), h);
}

/* ---- open ---------------------------------------------------------------- */

/* Overwrite meta format_version (a format 1 store also loses
 * index_through). */
static void set_format_version(sc_store *s, uint8_t version,
			       bool drop_index_through)
{
	MDB_txn *txn;
	MDB_dbi meta;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	uint8_t b[4] = {0, 0, 0, version};
	MDB_val k = {14, "format_version"}, v = {4, b};
	assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
	MDB_val tk = {13, "index_through"};
	if (drop_index_through)
		assert_int_equal(mdb_del(txn, meta, &tk, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

/* Every entity's events (ids e0..e(nent-1)) read through entity_index and
 * the tail equal the log filtered by that id, in order; and as of every
 * position the fold is the same as a fold of that filter. */
static void check_entity_reads(sc_store *s, unsigned nent)
{
	collected all = {0};
	assert_int_equal(sc_store_events(s, 0, 0, collect, &all, NULL), 0);
	for (unsigned e = 0; e < nent; e++) {
		char id[16];
		int n = snprintf(id, sizeof id, "e%u", e);
		sc_str sid = {id, (size_t)n};
		collected ce = {0};
		assert_int_equal(
		    sc_store_entity_events(s, sid, 0, 0, collect, &ce, NULL),
		    0);
		size_t k = 0;
		tk_refstate *fold = tk_refstate_new();
		for (size_t i = 0; i < all.n; i++) {
			sc_decoded_event d;
			collected_get(&all, i, &d);
			/* The entity (default partition, id). */
			if (d.ev.entity.len == sid.len && !d.ev.partition.len &&
			    memcmp(d.ev.entity.ptr, id, sid.len) == 0) {
				assert_true(k < ce.n);
				assert_int_equal(ce.pos[k], d.ev.position);
				k++;
				tk_refstate_apply(fold, &d.ev);
			}
			sc_decoded_event_free(&d);
			sc_entity *got = NULL;
			int rc =
			    sc_store_entity_at(s, sid, all.pos[i], &got, NULL);
			const tk_refentity *want =
			    tk_refstate_lookup(fold, sid);
			char why[256];
			if (want) {
				assert_int_equal(rc, 0);
				if (!tk_refstate_entity_equal(want, got, why,
							      sizeof why))
					fail_msg("as of %llu: %s",
						 (unsigned long long)all.pos[i],
						 why);
			} else {
				assert_int_equal(rc, SC_NOTFOUND);
			}
			sc_entity_free(got);
		}
		assert_int_equal(k, ce.n);
		tk_refstate_free(fold);
		collected_free(&ce);
	}
	collected_free(&all);
}

/* The index lags the log by fewer than index_lag events; an append that
 * would index the tail and fails leaves index and meta as they were;
 * reopening with another lag reads the same and indexes the tail at the
 * next append that reaches the new lag. */
static void test_index_lag_reopen_and_failure(void **state)
{
	store_fx *fx = *state;
	fx->o.index_lag = 10;
	sc_store *s = fx_open(fx);
	fill(s, 8, 0);
	snapshot_of before = observe(s);
	assert_int_equal(before.index_through, 0);
	check_entity_reads(s, 20);

	proj_state ps = {.fail_at = 1};
	sc_projector p = {"fails", proj_apply, proj_commit, proj_rollback, &ps};
	assert_int_equal(sc_store_add_projector(s, &p, NULL), 0);
	tk_event g[3];
	sc_event batch[3];
	for (int i = 0; i < 3; i++) {
		tk_event_gen(seed, 8 + (uint64_t)i, 20, 50 + i, &g[i]);
		batch[i] = g[i].ev;
	}
	sc_error err;
	assert_int_equal(sc_store_append(s, batch, 3, NULL, &err),
			 SC_EPROJECTOR);
	assert_same(before, observe(s));
	check_entity_reads(s, 20);
	assert_int_equal(sc_store_append(s, batch, 3, NULL, &err), 0);
	snapshot_of after = observe(s);
	assert_int_equal(after.last, 11);
	assert_int_equal(after.index_through, 11);
	fill(s, 5, 11);
	assert_int_equal(observe(s).index_through, 11);
	check_entity_reads(s, 20);
	fx_close(fx);

	/* Another lag after a reopen: the meta value holds. */
	fx->o.index_lag = 3;
	s = fx_open(fx);
	assert_int_equal(observe(s).index_through, 11);
	check_entity_reads(s, 20);
	fill(s, 1, 16);
	assert_int_equal(observe(s).index_through, 17);
	fill(s, 2, 17);
	assert_int_equal(observe(s).index_through, 17);
	check_entity_reads(s, 20);
	fx_close(fx);

	fx->o.index_lag = 1;
	s = fx_open(fx);
	fill(s, 1, 19);
	assert_int_equal(observe(s).index_through, 20);
	check_entity_reads(s, 20);
}

/* A format 1 store (entity_index complete, no index_through) opens as
 * the current format: its index rows (keyed by the id first) are dropped,
 * reads scan the log, and the next indexing append indexes it again. */
static void test_format_1_store_is_upgraded(void **state)
{
	store_fx *fx = *state;
	fx->o.index_lag = 1;
	sc_store *s = fx_open(fx);
	fill(s, 12, 0);
	set_format_version(s, 1, true);
	fx_close(fx);

	fx->o.index_lag = 5;
	s = fx_open(fx);
	snapshot_of now = observe(s);
	assert_int_equal(now.index_through, 0);
	assert_int_equal(now.index_rows, 0);
	check_entity_reads(s, 20);
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val k = {14, "format_version"}, v;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
	assert_int_equal(v.mv_size, 4);
	assert_int_equal(((uint8_t *)v.mv_data)[3], SC_STORE_FORMAT_VERSION);
	mdb_txn_abort(txn);
	fill(s, 3, 12);
	/* The first of them brought the tail to index_lag: 1..13. */
	now = observe(s);
	assert_int_equal(now.index_through, 13);
	assert_int_equal(now.index_rows, 13);
	check_entity_reads(s, 20);
	assert_int_equal(sc_store_verify(s, NULL), 0);
}

/* Every entity's events (ids e0..e(nent-1) of the default partition,
 * nent <= 64) read through entity_index and the tail equal the log
 * filtered by that entity: one pass
 * over the log, for stores too large for check_entity_reads. */
static void check_entity_events(sc_store *s, unsigned nent)
{
	collected ce[64] = {{0}};
	size_t next[64] = {0};
	assert_true(nent <= 64);
	for (unsigned e = 0; e < nent; e++) {
		char id[16];
		int n = snprintf(id, sizeof id, "e%u", e);
		assert_int_equal(
		    sc_store_entity_events(s, (sc_str){id, (size_t)n}, 0, 0,
					   collect, &ce[e], NULL),
		    0);
	}
	collected all = {0};
	assert_int_equal(sc_store_events(s, 0, 0, collect, &all, NULL), 0);
	for (size_t i = 0; i < all.n; i++) {
		sc_decoded_event d;
		collected_get(&all, i, &d);
		char id[16];
		for (unsigned e = 0; e < nent; e++) {
			int n = snprintf(id, sizeof id, "e%u", e);
			/* The entity (default partition, e<e>). */
			if (d.ev.partition.len ||
			    d.ev.entity.len != (size_t)n ||
			    memcmp(d.ev.entity.ptr, id, (size_t)n) != 0)
				continue;
			assert_true(next[e] < ce[e].n);
			assert_int_equal(ce[e].pos[next[e]], d.ev.position);
			next[e]++;
		}
		sc_decoded_event_free(&d);
	}
	for (unsigned e = 0; e < nent; e++) {
		assert_int_equal(next[e], ce[e].n);
		collected_free(&ce[e]);
	}
	collected_free(&all);
}

/* An upgraded store's whole log is a backlog to index: each append
 * indexes at most SC_INDEX_CATCHUP_MAX events of it, and its own events
 * only once the backlog is done; reads are right all along. */
static void test_upgrade_backlog_caught_up_in_pieces(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx_open(fx);
	const size_t n = SC_INDEX_CATCHUP_MAX + 3000, b = 2000;
	tk_event *g = malloc(b * sizeof *g);
	sc_event *batch = malloc(b * sizeof *batch);
	assert_non_null(g);
	assert_non_null(batch);
	for (size_t i = 0; i < n; i += b) {
		for (size_t k = 0; k < b; k++) {
			tk_event_gen(seed, i + k, 20, (int64_t)(i + k + 1),
				     &g[k]);
			batch[k] = g[k].ev;
		}
		assert_int_equal(sc_store_append(s, batch, b, NULL, NULL), 0);
	}
	free(g);
	free(batch);
	set_format_version(s, 3, false);
	fx_close(fx);

	fx->o.index_lag = 5;
	s = fx_open(fx);
	assert_int_equal(observe(s).index_through, 0);
	uint64_t last = sc_store_last_position(s);
	fill(s, 1, last);
	assert_int_equal(observe(s).index_through, SC_INDEX_CATCHUP_MAX);
	check_entity_events(s, 20);
	fill(s, 1, last + 1);
	assert_int_equal(observe(s).index_through, last + 2);
	check_entity_events(s, 20);
	assert_int_equal(sc_store_verify(s, NULL), 0);
}

/* Append n events of ids e0..e4, every third in partition "eu" when
 * `named`, the others in the default partition. */
static void fill_parts(sc_store *s, size_t n, bool named)
{
	for (size_t i = 0; i < n; i++) {
		char id[8];
		int len = snprintf(id, sizeof id, "e%zu", i % 5);
		sc_attr a = {{"n", 1},
			     {.type = SC_VALUE_INT, .u.i = (int64_t)i}};
		sc_event ev = {.entity = {id, (size_t)len},
			       .type = SC_EVENT_SET,
			       .attrs = &a,
			       .nattrs = 1,
			       .time = (int64_t)i + 1};
		if (named && i % 3 == 0)
			ev.partition = (sc_str){"eu", 2};
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	}
}

/* The events of (partition, e<e>) read through the index and the tail
 * are those of the log, in order. */
static void check_part_reads(sc_store *s, sc_str part)
{
	collected all = {0};
	assert_int_equal(sc_store_events(s, 0, 0, collect, &all, NULL), 0);
	for (unsigned e = 0; e < 5; e++) {
		char id[8];
		int len = snprintf(id, sizeof id, "e%u", e);
		collected ce = {0};
		assert_int_equal(sc_store_entity_events_in(
				     s, part, (sc_str){id, (size_t)len}, 0, 0,
				     collect, &ce, NULL),
				 0);
		size_t k = 0;
		for (size_t i = 0; i < all.n; i++) {
			sc_decoded_event d;
			collected_get(&all, i, &d);
			if (d.ev.partition.len == part.len &&
			    (!part.len ||
			     !memcmp(d.ev.partition.ptr, part.ptr, part.len)) &&
			    d.ev.entity.len == (size_t)len &&
			    !memcmp(d.ev.entity.ptr, id, (size_t)len)) {
				assert_true(k < ce.n);
				assert_int_equal(ce.pos[k], d.ev.position);
				k++;
			}
			sc_decoded_event_free(&d);
		}
		assert_int_equal(k, ce.n);
		assert_true(k > 0);
		collected_free(&ce);
	}
	collected_free(&all);
}

/* A format 4 store (entity_index rows keyed by epoch ++ id, partitions
 * not part of an entity's identity): one whose log never names a
 * partition keeps its rows and its snapshot; one whose log names a
 * partition has its rows dropped (written again by the appends) and its
 * snapshot deleted. Reads by (partition, id) are right throughout. */
static void test_format_4_store_is_upgraded(void **state)
{
	SC_UNUSED(state);
	for (int named = 0; named < 2; named++) {
		char dir[256];
		tk_tmproot_dir(dir, sizeof dir);
		sc_store_options o = opts();
		o.index_lag = 1;
		sc_store *s = tk_store_open(dir, &o);
		fill_parts(s, 60, named);
		assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
		fill_parts(s, 10, named);
		set_format_version(s, 4, false);
		sc_store_close(s);

		o.index_lag = 5;
		s = tk_store_open(dir, &o);
		snapshot_of now = observe(s);
		sc_snapshot_info info[4];
		int nsnap = sc_store_snapshots(s, info, 4, NULL);
		if (named) {
			assert_int_equal(now.index_through, 0);
			assert_int_equal(nsnap, 0);
		} else {
			assert_int_equal(now.index_through, 70);
			assert_int_equal(nsnap, 1);
		}
		check_part_reads(s, (sc_str){"", 0});
		if (named)
			check_part_reads(s, (sc_str){"eu", 2});
		fill_parts(s, 6, named);
		now = observe(s);
		/* The appends indexed the log again (fewer than index_lag
		 * events left to the tail). */
		assert_true(now.index_through > 76 - 5);
		check_part_reads(s, (sc_str){"", 0});
		if (named)
			check_part_reads(s, (sc_str){"eu", 2});
		assert_int_equal(sc_store_verify(s, NULL), 0);
		sc_store_close(s);
		tk_rm_rf(dir);
	}
}

/* A format 2 store (index rows of every id kept whole, ids up to 503
 * bytes indexable) opens as the current format; reads of any id are right
 * before and after the index is written again. */
static void test_format_2_store_is_upgraded(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options o = opts();
	o.index_lag = 1;
	sc_store *s = tk_store_open(dir, &o);
	char id[SC_INDEX_ID_WHOLE_MAX];
	memset(id, 'w', sizeof id);
	sc_attr at = {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event ev = {.entity = {id, sizeof id},
		       .type = SC_EVENT_SET,
		       .attrs = &at,
		       .nattrs = 1,
		       .time = 3};
	fill(s, 5, 0);
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	fill(s, 5, 5);
	set_format_version(s, 2, false);
	sc_store_close(s);

	s = tk_store_open(dir, &o);
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val k = {14, "format_version"}, v;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
	assert_int_equal(((uint8_t *)v.mv_data)[3], SC_STORE_FORMAT_VERSION);
	mdb_txn_abort(txn);
	collected c = {0};
	assert_int_equal(sc_store_entity_events(s, (sc_str){id, sizeof id}, 0,
						0, collect, &c, NULL),
			 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.pos[0], 6);
	collected_free(&c);
	check_entity_reads(s, 20);
	sc_store_close(s);
	tk_rm_rf(dir);
}

/* A raw LMDB write transaction on the closed store in `dir`: drop (del 1)
 * or empty (del 0) the database `name`, or with del < 0 delete its first
 * record. */
static void raw_damage(const char *dir, const char *name, int del)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, name, 0, &dbi), 0);
	if (del >= 0) {
		assert_int_equal(mdb_drop(txn, dbi, del), 0);
	} else {
		MDB_cursor *cur;
		MDB_val k, v;
		assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
		assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
		assert_int_equal(mdb_cursor_del(cur, 0), 0);
		mdb_cursor_close(cur);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Open never makes anew what an existing store must have: a lost
 * database, or a log shorter than what was committed, is SC_ECORRUPT
 * naming it; sc_store_verify finds damage open does not look for. */
static void test_open_never_recreates(void **state)
{
	SC_UNUSED(state);
	static const struct {
		const char *db;
		int del;
		const char *says;
	} cases[] = {
	    {"events", 1, "no events database"},
	    {"entity_index", 1, "no entity_index database"},
	    {"snapshots", 1, "no snapshots database"},
	    {"meta", 1, "no meta database"},
	    {"events", 0, "position 30 was committed"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char dir[256];
		tk_tmproot_dir(dir, sizeof dir);
		sc_store_options o = opts();
		sc_store *s = tk_store_open(dir, &o);
		fill(s, 30, 0);
		assert_int_equal(sc_store_verify(s, NULL), 0);
		sc_store_close(s);
		raw_damage(dir, cases[i].db, cases[i].del);
		for (int create = 0; create < 2; create++) {
			o.create = create;
			sc_error err;
			s = NULL;
			assert_int_equal(sc_store_open(dir, &o, &s, &err),
					 SC_ECORRUPT);
			assert_null(s);
			if (!strstr(err.message, cases[i].says))
				fprintf(stderr, "%s\n", err.message);
			assert_non_null(strstr(err.message, cases[i].says));
		}
		tk_rm_rf(dir);
	}

	/* An LMDB environment that is not a store is not made one unasked. */
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options o = opts();
	sc_store *s = tk_store_open(dir, &o);
	sc_store_close(s);
	raw_damage(dir, "meta", 1);
	raw_damage(dir, "events", 1);
	raw_damage(dir, "entity_index", 1);
	raw_damage(dir, "snapshots", 1);
	o.create = false;
	sc_error err;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_ECORRUPT);
	assert_non_null(strstr(err.message, "not a store"));
	tk_rm_rf(dir);

	/* A lost index row: open does not read the index, verify does. */
	tk_tmproot_dir(dir, sizeof dir);
	o = opts();
	o.index_lag = 1;
	s = tk_store_open(dir, &o);
	fill(s, 30, 0);
	sc_store_close(s);
	raw_damage(dir, "entity_index", -1);
	s = tk_store_open(dir, &o);
	assert_int_equal(sc_store_verify(s, &err), SC_ECORRUPT);
	assert_non_null(strstr(err.message, "29 rows"));
	sc_store_close(s);
	tk_rm_rf(dir);
}

static int exit_at_once(void *arg, int fd)
{
	(void)arg;
	(void)fd;
	return 0;
}

/* The pid of a process that has exited. */
static pid_t dead_pid(void)
{
	pid_t pid = tk_child_start(exit_at_once, NULL, NULL);
	tk_child_wait(pid);
	return pid;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* The path of this program, for a child that creates a store. */
static const char *self_path;

/* A child that creates the store `dir` and is killed just before it
 * links data.mdb into place. */
static int create_killed(void *dir, int fd)
{
	(void)fd;
	tk_killpoint_arm("create_before_link");
	execl(self_path, self_path, "--create", (char *)dir, (char *)NULL);
	return 5;
}

/* Creating a store is atomic: a creation killed before its data.mdb is in
 * place leaves no store, and the next creation removes what it left;
 * a torn data.mdb is reported, never taken for a new store. */
static void test_create_is_atomic(void **state)
{
	SC_UNUSED(state);
	char dir[256], path[600];
	sc_error err;
	sc_store *s = NULL;

	/* A creation killed just before linking data.mdb into place. */
	tk_tmproot_dir(dir, sizeof dir);
	assert_true(tk_killed(tk_child_run(create_killed, dir), SIGKILL));
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	assert_false(exists(path));
	sc_store_options o = opts();
	o.create = false;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_NOTFOUND);
	/* What it left: a temporary directory with a whole environment. */
	snprintf(path, sizeof path, "ls -a '%s' | grep -q '^.sc-creating-'",
		 dir);
	assert_int_equal(system(path), 0);
	o.create = true;
	s = tk_store_open(dir, &o);
	fill(s, 5, 0);
	sc_store_close(s);
	assert_int_not_equal(system(path), 0);
	s = tk_store_open(dir, &o);
	assert_int_equal(sc_store_last_position(s), 5);
	sc_store_close(s);
	tk_rm_rf(dir);

	/* A leftover of a process that is gone, with a torn data.mdb in it,
	 * is removed; one of a live process is left alone. */
	tk_tmproot_dir(dir, sizeof dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	char gone[300], live[300];
	snprintf(gone, sizeof gone, "%s/.sc-creating-%ld-abcdef", dir,
		 (long)dead_pid());
	snprintf(live, sizeof live, "%s/.sc-creating-%ld-abcdef", dir,
		 (long)getpid());
	assert_int_equal(mkdir(gone, 0700), 0);
	assert_int_equal(mkdir(live, 0700), 0);
	static uint8_t page[8192];
	memset(page + 4096, 0xa5, 4096);
	snprintf(path, sizeof path, "%s/data.mdb", gone);
	write_file(path, page, sizeof page);
	s = tk_store_open(dir, &o);
	sc_store_close(s);
	assert_false(exists(gone));
	assert_true(exists(live));
	tk_rm_rf(dir);

	/* A torn data.mdb in place (page 1 written, page 0 not): an error
	 * that says so, with or without create; the file is left as it is. */
	tk_tmproot_dir(dir, sizeof dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	write_file(path, page, sizeof page);
	assert_int_equal(chmod(path, 0600), 0);
	for (int create = 0; create < 2; create++) {
		o.create = create;
		assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_ECORRUPT);
		assert_null(s);
		assert_non_null(strstr(err.message, "not an LMDB file"));
	}
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, sizeof page);
	tk_rm_rf(dir);
}

static int warned;

static void note_warning(void *ctx, const char *message)
{
	SC_UNUSED(ctx);
	if (strstr(message, "readable by every user"))
		warned++;
}

static unsigned mode_of(const char *dir, const char *file)
{
	char path[512];
	snprintf(path, sizeof path, "%s%s%s", dir, file ? "/" : "",
		 file ? file : "");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

/* A new store is private to its owner (0700 / 0600), or has the mode the
 * options ask for, whatever the umask; an existing store readable by
 * others is opened with a warning. */
static void test_file_modes(void **state)
{
	SC_UNUSED(state);
	mode_t old = umask(022);
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options o = opts();
	o.warn = note_warning;
	sc_store *s = tk_store_open(dir, &o);
	fill(s, 3, 0);
	sc_store_close(s);
	assert_int_equal(mode_of(dir, NULL), 0700);
	assert_int_equal(mode_of(dir, "data.mdb"), 0600);
	assert_int_equal(mode_of(dir, "lock.mdb"), 0600);
	tk_rm_rf(dir);

	/* A group of processes sharing a store, under a strict umask. */
	umask(077);
	tk_tmproot_dir(dir, sizeof dir);
	o.file_mode = 0660;
	s = tk_store_open(dir, &o);
	sc_store_close(s);
	assert_int_equal(mode_of(dir, NULL), 0770);
	assert_int_equal(mode_of(dir, "data.mdb"), 0660);
	assert_int_equal(mode_of(dir, "lock.mdb"), 0660);
	umask(022);

	/* Readable by others: a warning at open, unless asked for. */
	char path[512];
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	assert_int_equal(chmod(path, 0644), 0);
	o.file_mode = 0;
	warned = 0;
	s = tk_store_open(dir, &o);
	sc_store_close(s);
	assert_int_equal(warned, 1);
	o.file_mode = 0644;
	warned = 0;
	s = tk_store_open(dir, &o);
	sc_store_close(s);
	assert_int_equal(warned, 0);
	tk_rm_rf(dir);

	o.file_mode = 01777;
	sc_error err;
	s = NULL;
	tk_tmproot_dir(dir, sizeof dir);
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_EINVAL);
	assert_false(exists(dir));
	umask(old);
}

/* A store written in one durability mode reopens in the other: the mode is
 * not stored. */
static void durability_reopen(store_fx *fx, sc_durability first,
			      sc_durability then)
{
	fx->o.durability = first;
	sc_store *s = fx_open(fx);
	fill(s, 25, 0);
	uint64_t h = tk_cache_hash(sc_store_cache(s), NULL);
	fx_close(fx);
	fx->o.durability = then;
	fx->o.create = false;
	s = fx_open(fx);
	assert_int_equal(sc_store_last_position(s), 25);
	assert_int_equal(tk_cache_hash(sc_store_cache(s), NULL), h);
	fill(s, 5, 25);
}

static void test_durability_full_then_nosync(void **state)
{
	durability_reopen(*state, SC_DURABILITY_FULL, SC_DURABILITY_NOSYNC);
}

static void test_durability_nosync_then_full(void **state)
{
	durability_reopen(*state, SC_DURABILITY_NOSYNC, SC_DURABILITY_FULL);
}

static void test_durability_unknown(void **state)
{
	store_fx *fx = *state;
	fx->o.durability = (sc_durability)7;
	sc_store *s = NULL;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &s, NULL), SC_EINVAL);
	assert_null(s);
}

/* Replay and restore drop the map pages they read from the process's page
 * tables as they go: the state replayed across many release points (with
 * and without a snapshot) matches the state before reopening, and a value
 * read through the map still holds its bytes after its pages are
 * released. */
static void replay_releases_pages(store_fx *fx, bool snap)
{
	sc_store *s = fx->s;
	fill(s, 1500, 0);
	if (snap)
		assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
	fill(s, 1300, 1500);
	uint64_t h = tk_cache_hash(sc_store_cache(s), NULL);
	fx->o.create = false;
	s = fx_reopen(fx);
	assert_int_equal(sc_store_last_position(s), 2800);
	assert_int_equal(tk_cache_hash(sc_store_cache(s), NULL), h);

	MDB_txn *txn;
	assert_int_equal(sc_store_read_begin(s, &txn, NULL), 0);
	uint8_t kb[8];
	sc_be64_put(kb, 777);
	MDB_val k = {8, kb}, v;
	assert_int_equal(mdb_get(txn, s->dbi_events, &k, &v), 0);
	uint8_t *copy = malloc(v.mv_size);
	assert_non_null(copy);
	memcpy(copy, v.mv_data, v.mv_size);
	sc_store_release_pages(v.mv_data,
			       (const uint8_t *)v.mv_data + v.mv_size);
	assert_memory_equal(v.mv_data, copy, v.mv_size);
	free(copy);
	sc_store_read_end(s, txn);
}

static void test_replay_releases_pages_log(void **state)
{
	replay_releases_pages(*state, false);
}

static void test_replay_releases_pages_snapshot(void **state)
{
	replay_releases_pages(*state, true);
}

static void test_open_errors(void **state)
{
	store_fx *fx = *state;
	fx->o.create = false;
	sc_store *s = NULL;
	sc_error err;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &s, &err), SC_NOTFOUND);
	assert_non_null(strstr(err.message, "create"));

	/* A newer format version is refused. */
	fx->o.create = true;
	s = fx_open(fx);
	fill(s, 3, 0);
	set_format_version(s, SC_STORE_FORMAT_VERSION + 1, false);
	fx_close(fx);
	s = NULL;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &s, &err), SC_EVERSION);
	assert_null(s);
	char want[32];
	snprintf(want, sizeof want, "format version %u",
		 SC_STORE_FORMAT_VERSION + 1);
	assert_non_null(strstr(err.message, want));
}

/* A damaged event record makes open fail with SC_ECORRUPT naming the
 * position, not crash or load a partial state. */
static void test_corrupt_event_record(void **state)
{
	store_fx *fx = *state;
	sc_store *s = fx->s;
	fill(s, 10, 0);
	MDB_txn *txn;
	MDB_dbi ev;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "events", 0, &ev), 0);
	uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 7};
	uint8_t junk[3] = {0x12, 0xff, 0xff};
	MDB_val k = {8, key}, v = {3, junk};
	assert_int_equal(mdb_put(txn, ev, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	fx_close(fx);
	s = NULL;
	sc_error err;
	assert_int_equal(sc_store_open(fx->dir, &fx->o, &s, &err), SC_ECORRUPT);
	assert_null(s);
	assert_non_null(strstr(err.message, "position 7"));
}

/* ---- the event codec ----------------------------------------------------- */

/* protobuf-c reads our record and, packing what it read, writes the same
 * bytes: the encoder writes canonical protobuf. */
static void assert_same_as_protobuf_c(const uint8_t *buf, size_t len)
{
	Statecache__V1__Event *m =
	    statecache__v1__event__unpack(NULL, len, buf);
	assert_non_null(m);
	size_t n = statecache__v1__event__get_packed_size(m);
	assert_int_equal(n, len);
	uint8_t *again = malloc(n ? n : 1);
	assert_int_equal(statecache__v1__event__pack(m, again), n);
	assert_memory_equal(again, buf, n);
	free(again);
	statecache__v1__event__free_unpacked(m, NULL);
}

/* Values at the edges of every type, an unset, and empty optional fields:
 * encoded, decoded by us and by protobuf-c. */
static void test_codec_edge_values(void **state)
{
	SC_UNUSED(state);
	sc_attr a[] = {
	    {{"i", 1}, {.type = SC_VALUE_INT, .u.i = INT64_MIN}},
	    {{"j", 1}, {.type = SC_VALUE_INT, .u.i = INT64_MAX}},
	    {{"k", 1}, {.type = SC_VALUE_INT, .u.i = 0}},
	    {{"l", 1}, {.type = SC_VALUE_INT, .u.i = -1}},
	    {{"d", 1}, {.type = SC_VALUE_DOUBLE, .u.d = -0.0}},
	    {{"b", 1}, {.type = SC_VALUE_BOOL, .u.b = false}},
	    {{"s", 1}, {.type = SC_VALUE_STRING, .u.s = {"", 0}}},
	    {{"y", 1}, {.type = SC_VALUE_BYTES, .u.s = {"", 0}}},
	    {{"z", 1}, {.type = SC_VALUE_BYTES, .u.s = {"\0\1", 2}}},
	    {{"n", 1}, {.type = SC_VALUE_NULL}},
	};
	sc_str tags[] = {{"", 0}, {"t", 1}};
	sc_event evs[] = {
	    {.entity = {"e", 1},
	     .type = SC_EVENT_SET,
	     .attrs = a,
	     .nattrs = sizeof a / sizeof a[0],
	     .time = INT64_MIN,
	     .tags = tags,
	     .ntags = 2},
	    {.entity = {"e", 1},
	     .type = SC_EVENT_UNSET,
	     .attrs = a,
	     .nattrs = 3,
	     .actor = {"me", 2},
	     .partition = {"p", 1}},
	    {.entity = {"e", 1}, .type = SC_EVENT_DELETE, .time = -1},
	};
	for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
		uint8_t *buf;
		size_t len;
		assert_int_equal(sc_event_encode(&evs[i], &buf, &len, NULL), 0);
		sc_decoded_event d;
		assert_int_equal(sc_event_decode(buf, len, 0, &d, NULL), 0);
		sc_event want = evs[i];
		if (want.type == SC_EVENT_UNSET) {
			/* An unset carries names only. */
			static sc_attr names[3];
			for (size_t k = 0; k < want.nattrs; k++)
				names[k] = (sc_attr){a[k].name,
						     {.type = SC_VALUE_NULL}};
			want.attrs = names;
		}
		assert_true(tk_event_equal(&d.ev, &want));
		sc_decoded_event_free(&d);
		assert_same_as_protobuf_c(buf, len);
		sc_free(buf);
	}
}

static void test_codec_roundtrip_and_hostile_bytes(void **state)
{
	SC_UNUSED(state);
	uint64_t r = seed;
	for (uint64_t i = 0; i < 2000; i++) {
		tk_event g;
		tk_event_gen(seed, i, 50, (int64_t)tk_rand(&r), &g);
		g.ev.position = i + 1;
		uint8_t *buf = NULL;
		size_t len = 0;
		assert_int_equal(sc_event_encode(&g.ev, &buf, &len, NULL), 0);
		sc_decoded_event d;
		assert_int_equal(sc_event_decode(buf, len, i + 1, &d, NULL), 0);
		assert_true(tk_event_equal(&d.ev, &g.ev));
		sc_decoded_event_free(&d);
		assert_same_as_protobuf_c(buf, len);
		/* Mutations: decode either fails cleanly or yields an event
		 * that passes validation. */
		for (int k = 0; k < 8 && len; k++) {
			uint8_t *mut = malloc(len);
			memcpy(mut, buf, len);
			mut[tk_rand(&r) % len] ^=
			    (uint8_t)(1 + tk_rand(&r) % 255);
			size_t ml = k & 1 ? len : tk_rand(&r) % len;
			sc_error err;
			int rc = sc_event_decode(mut, ml, 1, &d, &err);
			if (rc == 0) {
				/* Valid but, as a stored event may be, for
				 * string bytes that are not UTF-8. */
				if (sc_event_validate(&d.ev, &err)) {
					assert_non_null(
					    strstr(err.message, "UTF-8"));
					assert_int_equal(
					    sc_entity_validate_stored(&d.ev,
								      NULL),
					    0);
				}
				sc_decoded_event_free(&d);
			} else {
				assert_int_equal(rc, SC_ECORRUPT);
				assert_non_null(strstr(err.message, "corrupt"));
			}
			free(mut);
		}
		sc_free(buf);
	}
	/* Unknown type 7 (field 2 varint) in an otherwise valid record. */
	uint8_t rec[] = {0x0a, 0x01, 'x', 0x10, 0x07};
	sc_decoded_event d;
	sc_error err;
	assert_int_equal(sc_event_decode(rec, sizeof rec, 3, &d, &err),
			 SC_ECORRUPT);
	assert_non_null(strstr(err.message, "position 3"));
	/* Empty entity id. */
	uint8_t rec2[] = {0x10, 0x01};
	assert_int_equal(sc_event_decode(rec2, sizeof rec2, 3, &d, &err),
			 SC_ECORRUPT);
	/* Over the length cap. */
	assert_int_equal(
	    sc_event_decode(rec, (size_t)SC_EVENT_RECORD_MAX + 1, 3, &d, &err),
	    SC_ETOOBIG);
	/* Allocation failures surface as ENOMEM, never as corruption. */
	tk_event g;
	tk_event_gen(seed, 1, 5, 1, &g);
	g.ev.type = SC_EVENT_SET;
	uint8_t *buf;
	size_t len;
	assert_int_equal(sc_event_encode(&g.ev, &buf, &len, NULL), 0);
	for (long n = 0;; n++) {
		sc_testing_fail_alloc_after(n);
		int rc = sc_event_decode(buf, len, 1, &d, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc == 0) {
			sc_decoded_event_free(&d);
			break;
		}
		assert_int_equal(rc, ENOMEM);
	}
	sc_free(buf);
}

/* The decoder reads the layout the encoder writes on a path of its own
 * (fields in order, each attribute's name then value with one-byte
 * lengths); records in other layouts protobuf allows take the general
 * one. Each of these decodes, plainly and into an arena, to the same
 * event as the canonical record: fields out of order and a repeated
 * entity (the last one counts), an attribute's value before its name, an
 * unknown field in an attribute, a key written in two bytes, a value of
 * two fields (the last one counts), an unknown field between known ones,
 * and a name of 200 bytes (a two-byte length). */
static void test_codec_layouts(void **state)
{
	SC_UNUSED(state);
#define TIME7 0x21, 7, 0, 0, 0, 0, 0, 0, 0
	static const uint8_t canonical[] = {
	    0x0a, 1,	'e', 0x10, 1,	 0x1a,	7,    0x0a, 1,
	    'a',  0x12, 2,   0x10, 10,	 TIME7, 0x2a, 2,    'm',
	    'e',  0x32, 1,   'p',  0x3a, 1,	't'};
	static const uint8_t reordered[] = {
	    0x3a,  1,	 't', 0x32, 1,	  'p',	0x0a, 1,  'x',	0x1a,
	    7,	   0x0a, 1,   'a',  0x12, 2,	0x10, 10, 0x10, 1,
	    TIME7, 0x2a, 2,   'm',  'e',  0x0a, 1,    'e'};
	static const uint8_t value_first[] = {
	    0x0a, 1,	'e',  0x10, 1,	  0x1a,	 7,    0x12, 2,
	    0x10, 10,	0x0a, 1,    'a',  TIME7, 0x2a, 2,    'm',
	    'e',  0x32, 1,    'p',  0x3a, 1,	 't'};
	static const uint8_t attr_unknown[] = {
	    0x0a, 1, 'e',   0x10, 1, 0x1a, 9,	0x0a, 1, 'a', 0x12, 2, 0x10, 10,
	    0x18, 0, TIME7, 0x2a, 2, 'm',  'e', 0x32, 1, 'p', 0x3a, 1, 't'};
	static const uint8_t long_key[] = {
	    0x8a, 0,   1,    'e', 0x10, 1,    0x1a,  7,	   0x0a,
	    1,	  'a', 0x12, 2,	  0x10, 10,   TIME7, 0x2a, 2,
	    'm',  'e', 0x32, 1,	  'p',	0x3a, 1,     't'};
	static const uint8_t two_values[] = {
	    0x0a, 1,   'e',  0x10, 1,	0x1a, 10, 0x0a,	 1,    'a',
	    0x12, 5,   0x0a, 1,	   'z', 0x10, 10, TIME7, 0x2a, 2,
	    'm',  'e', 0x32, 1,	   'p', 0x3a, 1,  't'};
	static const uint8_t unknown_between[] = {
	    0x0a, 1,   'e',  0x4a, 1,	0,    0x10, 1,	   0x1a, 7,
	    0x0a, 1,   'a',  0x12, 2,	0x10, 10,   TIME7, 0x2a, 2,
	    'm',  'e', 0x32, 1,	   'p', 0x3a, 1,    't'};
#undef TIME7
	static const struct {
		const uint8_t *b;
		size_t n;
	} recs[] = {
	    {canonical, sizeof canonical},
	    {reordered, sizeof reordered},
	    {value_first, sizeof value_first},
	    {attr_unknown, sizeof attr_unknown},
	    {long_key, sizeof long_key},
	    {two_values, sizeof two_values},
	    {unknown_between, sizeof unknown_between},
	};
	sc_attr a = {{"a", 1}, {.type = SC_VALUE_INT, .u.i = 5}};
	sc_str tag = {"t", 1};
	sc_event want = {.position = 9,
			 .entity = {"e", 1},
			 .type = SC_EVENT_SET,
			 .attrs = &a,
			 .nattrs = 1,
			 .time = 7,
			 .actor = {"me", 2},
			 .partition = {"p", 1},
			 .tags = &tag,
			 .ntags = 1};
	sc_decode_arena arena = {0};
	for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++) {
		sc_decoded_event d;
		sc_error err;
		int rc = sc_event_decode(recs[i].b, recs[i].n, 9, &d, &err);
		if (rc)
			fprintf(stderr, "record %zu: %s\n", i, err.message);
		assert_int_equal(rc, 0);
		assert_true(tk_event_equal(&d.ev, &want));
		sc_decoded_event_free(&d);
		sc_event ev;
		assert_int_equal(sc_event_decode_arena(recs[i].b, recs[i].n, 9,
						       &arena, &ev, NULL),
				 0);
		assert_true(tk_event_equal(&ev, &want));
	}
	assert_same_as_protobuf_c(canonical, sizeof canonical);
	/* The same event with a name of 200 bytes. */
	char name[200];
	memset(name, 'n', sizeof name);
	a.name = (sc_str){name, sizeof name};
	uint8_t *buf;
	size_t len;
	assert_int_equal(sc_event_encode(&want, &buf, &len, NULL), 0);
	sc_event ev;
	assert_int_equal(sc_event_decode_arena(buf, len, 9, &arena, &ev, NULL),
			 0);
	assert_true(tk_event_equal(&ev, &want));
	sc_free(buf);
	sc_decode_arena_free(&arena);
}

static void expect_valid(const sc_event *ev)
{
	sc_error err;
	int rc = sc_event_validate(ev, &err);
	if (rc)
		fail_msg("valid event refused: %s", err.message);
}

/* Refused with SC_EINVAL and a message that contains `needle`. */
static void expect_invalid(const sc_event *ev, const char *needle)
{
	sc_error err;
	sc_error_clear(&err);
	assert_int_equal(sc_event_validate(ev, &err), SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	if (!strstr(err.message, needle))
		fail_msg("message '%s' does not name '%s'", err.message,
			 needle);
}

/* Each limit of event.h: at the limit valid, one past it refused. */
static void test_event_validate_limits(void **state)
{
	size_t big_len = SC_EVENT_VALUE_MAX + 1;
	char *big = sc_calloc(1, big_len);
	assert_non_null(big);
	memset(big, 'v', big_len);
	sc_attr one = {{"a", 1}, {.type = SC_VALUE_INT, .u.i = 1}};
	sc_event ok = {.entity = {"e", 1},
		       .type = SC_EVENT_SET,
		       .attrs = &one,
		       .nattrs = 1};
	expect_valid(&ok);
	assert_int_equal(sc_event_validate(NULL, NULL), SC_EINVAL);

	sc_event ev = ok;
	ev.entity = (sc_str){big, SC_ENTITY_ID_MAX};
	expect_valid(&ev);
	ev.entity.len++;
	expect_invalid(&ev, "entity id");
	ev.entity.len = 0;
	expect_invalid(&ev, "entity id");

	sc_attr name = one;
	ev = ok;
	ev.attrs = &name;
	name.name = (sc_str){big, SC_ATTR_NAME_MAX};
	expect_valid(&ev);
	name.name.len++;
	expect_invalid(&ev, "name");

	sc_attr *many = sc_calloc(SC_EVENT_ATTRS_MAX + 1, sizeof *many);
	assert_non_null(many);
	for (size_t i = 0; i <= SC_EVENT_ATTRS_MAX; i++)
		many[i] = one;
	ev = ok;
	ev.attrs = many;
	ev.nattrs = SC_EVENT_ATTRS_MAX;
	expect_valid(&ev);
	ev.nattrs++;
	expect_invalid(&ev, "attributes");
	sc_free(many);

	sc_attr val = {{"s", 1}, {.type = SC_VALUE_STRING}};
	ev = ok;
	ev.attrs = &val;
	for (int type = SC_VALUE_STRING; type <= SC_VALUE_BYTES;
	     type += SC_VALUE_BYTES - SC_VALUE_STRING) {
		val.value.type = (sc_value_type)type;
		val.value.u.s = (sc_str){big, SC_EVENT_VALUE_MAX};
		expect_valid(&ev);
		val.value.u.s.len++;
		expect_invalid(&ev, "value of attribute 0");
	}

	sc_str *tags = sc_calloc(SC_EVENT_TAGS_MAX + 1, sizeof *tags);
	assert_non_null(tags);
	for (size_t i = 0; i <= SC_EVENT_TAGS_MAX; i++)
		tags[i] = (sc_str){"t", 1};
	ev = ok;
	ev.tags = tags;
	ev.ntags = SC_EVENT_TAGS_MAX;
	expect_valid(&ev);
	ev.ntags++;
	expect_invalid(&ev, "tags");
	ev.ntags = 2;
	tags[1] = (sc_str){big, SC_EVENT_FIELD_MAX};
	expect_valid(&ev);
	tags[1].len++;
	expect_invalid(&ev, "a tag");
	sc_free(tags);

	ev = ok;
	ev.actor = (sc_str){big, SC_EVENT_FIELD_MAX};
	expect_valid(&ev);
	ev.actor.len++;
	expect_invalid(&ev, "actor");
	ev = ok;
	ev.partition = (sc_str){big, SC_EVENT_FIELD_MAX};
	expect_valid(&ev);
	ev.partition.len++;
	expect_invalid(&ev, "partition");

	/* The record: three values at their limit and a fourth sized so
	 * that the event encodes to exactly SC_EVENT_RECORD_MAX bytes. */
	static const char names[] = "abcd";
	sc_attr rec[4];
	for (int i = 0; i < 4; i++)
		rec[i] = (sc_attr){
		    {&names[i], 1},
		    {.type = SC_VALUE_BYTES, .u.s = {big, SC_EVENT_VALUE_MAX}}};
	ev = ok;
	ev.attrs = rec;
	ev.nattrs = 4;
	ev.time = 1;
	rec[3].value.u.s.len = 0;
	for (int k = 0; k < 4; k++) {
		size_t size = sc_event_encoded_size(&ev);
		rec[3].value.u.s.len += SC_EVENT_RECORD_MAX - size;
	}
	assert_int_equal(sc_event_encoded_size(&ev), SC_EVENT_RECORD_MAX);
	expect_valid(&ev);
	/* A time of 0 is stamped at append: the same size in the log. */
	ev.time = 0;
	expect_valid(&ev);
	rec[3].value.u.s.len++;
	expect_invalid(&ev, "encoded");
	ev.time = 1;
	expect_invalid(&ev, "encoded");

	/* The store refuses what sc_event_validate refuses, before any
	 * write. */
	store_fx *fx = *state;
	sc_error err;
	assert_int_equal(sc_store_append(fx->s, &ev, 1, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "encoded"));
	assert_int_equal(sc_store_last_position(fx->s), 0);
	sc_free(big);
}

/* Counts the warnings of a store (a snapshot skipped at open). */
static void count_warning(void *ctx, const char *message)
{
	SC_UNUSED(message);
	++*(int *)ctx;
}

/* Append `n` entities, each with a value of `len` random (incompressible)
 * bytes, from entity number `base`, and fold them into m. */
static void fill_random_values(sc_store *s, tk_refstate *m, size_t n,
			       size_t base, size_t len)
{
	uint64_t r = seed ^ base;
	uint8_t *blob = malloc(len);
	assert_non_null(blob);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < len; j++)
			blob[j] = (uint8_t)tk_rand(&r);
		char id[24];
		int idn = snprintf(id, sizeof id, "r%zu", base + i);
		sc_attr at = {
		    {"blob", 4},
		    {.type = SC_VALUE_BYTES, .u.s = {(const char *)blob, len}}};
		sc_event ev = {.entity = {id, (size_t)idn},
			       .type = SC_EVENT_SET,
			       .attrs = &at,
			       .nattrs = 1,
			       .time = (int64_t)(base + i + 1)};
		tk_store_append_model(s, &ev, 1, m);
	}
	free(blob);
}

/* The other process of the map-growth test: 2000 appends of 2 KiB
 * values after position 210 to the store dir, opened with *o. */
typedef struct other_appends {
	const char *dir;
	const sc_store_options *o;
} other_appends;

static int append_4mib(void *arg, int fd)
{
	(void)fd;
	const other_appends *oa = arg;
	sc_store *c = NULL;
	if (sc_store_open(oa->dir, oa->o, &c, NULL))
		return 3;
	tk_refstate *cm = tk_refstate_new();
	fill_random_values(c, cm, 2000, 210, 2048);
	tk_refstate_free(cm);
	sc_store_close(c);
	return 0;
}
/* A snapshot larger than the room left in the map grows the map (appends
 * and snapshots share one write path), and a snapshot taken after another
 * process grew the map past this process's adopts the new size
 * (MDB_MAP_RESIZED). Both snapshots restore at the next open. */
static void test_snapshot_grows_map(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options o = opts();
	o.map_size = 64 << 10;
	o.map_size_max = 256 << 20;
	sc_store *s = tk_store_open(dir, &o);
	tk_refstate *m = tk_refstate_new();
	fill_random_values(s, m, 200, 0, 2048);
	sc_store_close(s);

	/* Reopened with a 64 KiB map: LMDB maps just what the file uses, so
	 * the ~400 KiB snapshot cannot fit without growing the map. */
	s = tk_store_open(dir, &o);
	sc_store_stats st0, st1;
	assert_int_equal(sc_store_stats_get(s, &st0, NULL), 0);
	sc_snapshot_info si;
	sc_error err;
	int rc = sc_store_snapshot(s, &si, &err);
	if (rc)
		fprintf(stderr, "snapshot: %s\n", err.message);
	assert_int_equal(rc, 0);
	assert_int_equal(si.position, 200);
	assert_true(si.bytes_compressed > 200 * 2048);
	assert_true(si.bytes_compressed > st0.map_size - st0.map_bytes_used);
	assert_int_equal(sc_store_stats_get(s, &st1, NULL), 0);
	assert_true(st1.map_size > st0.map_size);
	fill_random_values(s, m, 10, 200, 2048);

	/* Another process appends 4 MiB: its map, and the file, grow past
	 * this process's map. */
	other_appends oa = {dir, &o};
	assert_true(tk_exited(tk_child_run(append_4mib, &oa), 0));
	/* This process's version (position 210) has no snapshot yet: its
	 * transactions meet MDB_MAP_RESIZED and adopt the size. */
	rc = sc_store_snapshot(s, &si, &err);
	if (rc)
		fprintf(stderr, "snapshot: %s\n", err.message);
	assert_int_equal(rc, 0);
	assert_int_equal(si.position, 210);
	assert_int_equal(sc_store_stats_get(s, &st1, NULL), 0);
	assert_true(st1.map_size >= 4u << 20);
	sc_store_close(s);

	/* Both snapshots verify; the newest restores and the other process's
	 * events replay after it. */
	int warnings = 0;
	o.warn = count_warning;
	o.warn_ctx = &warnings;
	s = tk_store_open(dir, &o);
	assert_int_equal(warnings, 0);
	assert_int_equal(sc_store_last_position(s), 2210);
	assert_int_equal(sc_cache_len(sc_store_cache(s)), 2210);
	sc_snapshot_info list[4];
	assert_int_equal(sc_store_snapshots(s, list, 4, NULL), 2);
	assert_int_equal(list[0].position, 210);
	assert_int_equal(list[1].position, 200);
	sc_store_close(s);
	tk_refstate_free(m);
	tk_rm_rf(dir);
}

/* A string value that is not UTF-8, committed before appends refused
 * them, stays readable: open replays it, as-of reads fold it, a snapshot
 * keeps it; a new append of the same value is refused. */
static void test_stored_non_utf8_string_reads_back(void **state)
{
	store_fx *fx = *state;
	sc_attr at = {{"k", 1}, {.type = SC_VALUE_STRING, .u.s = {"AAAA", 4}}};
	sc_event ev = {.entity = {"u", 1},
		       .type = SC_EVENT_SET,
		       .attrs = &at,
		       .nattrs = 1,
		       .time = 5};
	assert_int_equal(sc_store_append(fx->s, &ev, 1, NULL, NULL), 0);
	fx_close(fx);

	/* Put the bytes an older version accepted into the record. */
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_open(env, fx->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
	assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
	uint8_t rec[256];
	assert_true(v.mv_size <= sizeof rec);
	memcpy(rec, v.mv_data, v.mv_size);
	uint8_t *a = memmem(rec, v.mv_size, "AAAA", 4);
	assert_non_null(a);
	memcpy(a,
	       "A\xff\xfe"
	       "A",
	       4);
	MDB_val nv = {v.mv_size, rec};
	assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
	mdb_cursor_close(cur);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	for (int round = 0; round < 2; round++) {
		sc_store *s = fx_open(fx);
		sc_reader *r = NULL;
		assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL),
				 0);
		const sc_entity *e = sc_reader_get(r, (sc_str){"u", 1});
		assert_non_null(e);
		sc_value got;
		assert_true(sc_entity_find(e, (sc_str){"k", 1}, &got));
		assert_int_equal(got.type, SC_VALUE_STRING);
		assert_int_equal(got.u.s.len, 4);
		assert_memory_equal(got.u.s.ptr,
				    "A\xff\xfe"
				    "A",
				    4);
		sc_entity *asof = NULL;
		assert_int_equal(
		    sc_store_entity_at(s, (sc_str){"u", 1}, 1, &asof, NULL), 0);
		assert_true(sc_entity_equal(asof, e));
		sc_entity_free(asof);
		sc_reader_close(r);
		assert_int_equal(sc_store_verify(s, NULL), 0);
		/* The next round restores it from a snapshot. */
		if (round == 0)
			assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
		fx_close(fx);
	}
	sc_store *s = fx_open(fx);
	at.value.u.s.ptr = "A\xff\xfe"
			   "A";
	sc_error err;
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "UTF-8"));
	assert_int_equal(sc_store_last_position(s), 1);
}

int main(int argc, char **argv)
{
	/* The child of test_create_is_atomic: create a store (SC_KILLPOINT
	 * says where it dies). */
	if (argc == 3 && strcmp(argv[1], "--create") == 0) {
		sc_store_options o = {.create = true};
		sc_store *s = NULL;
		int rc = sc_store_open(argv[2], &o, &s, NULL);
		sc_store_close(s);
		return rc ? 1 : 0;
	}
	self_path = argv[0];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec_roundtrip_and_hostile_bytes),
	    cmocka_unit_test(test_codec_layouts),
	    cmocka_unit_test(test_codec_edge_values),
	    cmocka_unit_test_setup_teardown(test_event_validate_limits,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_append_read_roundtrip_indexed,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_append_read_roundtrip_lagging,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(
		test_append_read_roundtrip_unindexed, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_index_lag_reopen_and_failure,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_format_1_store_is_upgraded,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(
		test_upgrade_backlog_caught_up_in_pieces, fx_setup,
		fx_teardown),
	    cmocka_unit_test_setup_teardown(
		test_entity_index_prefix_ids_indexed, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_entity_index_prefix_ids_tail,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_entity_index_sorts_catch_up,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_bad_event_rejects_batch,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_replace_with_null,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_projector_failure_rolls_back,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_map_full, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_failure_append,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_durability_full_then_nosync,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_durability_nosync_then_full,
					    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_durability_unknown, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_replay_releases_pages_log,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_replay_releases_pages_snapshot,
					    fx_setup_open, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, fx_setup,
					    fx_teardown),
	    cmocka_unit_test(test_format_2_store_is_upgraded),
	    cmocka_unit_test(test_format_4_store_is_upgraded),
	    cmocka_unit_test(test_snapshot_grows_map),
	    cmocka_unit_test(test_open_never_recreates),
	    cmocka_unit_test(test_create_is_atomic),
	    cmocka_unit_test(test_file_modes),
	    cmocka_unit_test_setup_teardown(
		test_stored_non_utf8_string_reads_back, fx_setup_open,
		fx_teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_event_record,
					    fx_setup_open, fx_teardown),
	};
	return cmocka_run_group_tests(tests, setup_all, tk_tmproot_teardown);
}
