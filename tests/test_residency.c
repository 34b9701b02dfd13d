/*
 * Residency of partitions in the cache (cache/cache_lib.h): cold
 * partitions, eviction, loading, pins, LRU ticks, per-partition figures,
 * and what diffs report of them.
 *
 * The model test runs many partitions with random evicts and loads (of the
 * model's states of the partition) among random applies, promotes and
 * discards; events of a cold partition go to the model only, as a store
 * writes them to its log only. After every promote and discard every
 * resident partition equals the model, every cold one reads as cold, and
 * the figures equal a recount. The other tests check one property each:
 * a view pinned before an eviction, the errors, the snapshot refusal, the
 * LRU order and pins, and diffs across evictions and loads.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "cache/cache_lib.h"
#include "snapshot/snapshot.h"
#include "statecache/cache.h"
#include "statecache/watch.h"
#include "tests/support/refstate.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static bool short_run;

static int setup(void **state)
{
	(void)state;
	seed = tk_seed("test_residency");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	return 0;
}

static sc_str S(const char *s)
{
	return (sc_str){s, strlen(s)};
}

/* The cache of the single-property cases: seed 3, one lane. */
static sc_cache *new_cache(void)
{
	sc_cache *cache;
	sc_error err;
	sc_cache_options o = {.seed = 3, .lanes = 1};
	assert_int_equal(sc_cache_create(&o, &cache, &err), 0);
	return cache;
}

static sc_reader *open_reader(sc_cache *cache)
{
	sc_reader *rd;
	sc_error err;
	assert_int_equal(sc_reader_open(cache, &rd, &err), 0);
	return rd;
}

/* Reclaim with no reader pinning an older version: nothing waits. */
static void expect_all_reclaimed(sc_cache *cache)
{
	sc_cache_reclaim(cache);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
}

/* ==== loading a partition from the model ================================== */

typedef struct load_ctx {
	sc_cache *cache;
	sc_str part;
	uint64_t *rnd;
	int rc;
	size_t n;
} load_ctx;

static int attr_cmp(const void *a, const void *b)
{
	const sc_attr *x = a, *y = b;
	size_t m = x->name.len < y->name.len ? x->name.len : y->name.len;
	int c = memcmp(x->name.ptr, y->name.ptr, m);
	if (c)
		return c;
	return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

/* Store one model entity of ctx->part: through the restore's steps
 * (measure, write, store) or, at random, sc_cache_load_entity_in. */
static void load_one(void *vctx, const tk_refentity *re)
{
	load_ctx *c = vctx;
	if (c->rc || re->partition.len != c->part.len ||
	    memcmp(re->partition.ptr, c->part.ptr, c->part.len) != 0)
		return;
	sc_attr *attrs = calloc(re->nattrs + 1, sizeof *attrs);
	assert_non_null(attrs);
	for (size_t i = 0; i < re->nattrs; i++)
		attrs[i] = (sc_attr){re->attrs[i].name, re->attrs[i].value};
	qsort(attrs, re->nattrs, sizeof *attrs, attr_cmp);
	sc_error err;
	if (tk_rand(c->rnd) % 4 == 0) {
		c->rc = sc_cache_load_entity_in(
		    c->cache, c->part, re->id, attrs, re->nattrs,
		    re->updated_at, re->updated_by, re->position, &err);
	} else {
		size_t bytes;
		c->rc =
		    sc_cache_load_measure(c->part, re->id, attrs, re->nattrs,
					  re->updated_by, &bytes, &err);
		if (!c->rc) {
			void *img = aligned_alloc(8, bytes);
			assert_non_null(img);
			sc_cache_loaded l;
			sc_cache_load_write(c->cache, c->part, re->id, attrs,
					    re->nattrs, re->updated_at,
					    re->updated_by, re->position, img,
					    bytes, &l);
			c->rc = sc_cache_load_store(c->cache, img, &l, &err);
			free(img);
		}
	}
	if (c->rc)
		fail_msg("loading '%.*s': %s", (int)re->id.len, re->id.ptr,
			 err.message);
	c->n++;
	free(attrs);
}

/* Load partition `part` from the model into the pending version. */
static void load_part(sc_cache *cache, const tk_refstate *rs, sc_str part,
		      uint64_t *rnd)
{
	sc_error err;
	uint64_t born;
	int rc = sc_cache_part_load_begin(cache, part, &born, &err);
	if (rc)
		fail_msg("load_begin '%.*s': %s", (int)part.len, part.ptr,
			 err.message);
	load_ctx c = {.cache = cache, .part = part, .rnd = rnd};
	tk_refstate_foreach(rs, load_one, &c);
	assert_int_equal(c.rc, 0);
}

/* ==== checks ============================================================== */

/* The state bytes of partition `part` in the view, recounted. */
static size_t recount_bytes(const sc_view *v, sc_str part, size_t *n)
{
	sc_view_iter it;
	sc_view_iter_init_in(v, part, &it);
	size_t bytes = 0;
	*n = 0;
	for (const sc_entity *e; (e = sc_view_iter_next(&it));) {
		bytes += sc_entity_memory_bytes(e);
		(*n)++;
	}
	return sc_part_bytes(bytes, *n);
}

/* Every partition of parts[0..np) (parts[0] the default) against the
 * model and the expected residency; the figures against a recount. */
static void check_all(sc_cache *cache, sc_reader *rd, const tk_refstate *rs,
		      const sc_str *parts, const bool *cold, size_t np)
{
	char why[512];
	const sc_view *v = sc_reader_begin(rd);
	size_t ncold = 0, resident_bytes = 0;
	sc_cache_part_info info[64];
	size_t ninfo = sc_cache_part_list(cache, info, 64);
	assert_true(ninfo <= 64);
	assert_int_equal(info[0].name.len, 0);
	for (size_t i = 0; i < np; i++) {
		sc_str p = parts[i];
		const sc_cache_part_info *fi = NULL;
		for (size_t k = 0; k < ninfo; k++)
			if (info[k].name.len == p.len &&
			    memcmp(info[k].name.ptr, p.ptr, p.len) == 0)
				fi = &info[k];
		if (cold[i]) {
			ncold++;
			assert_int_equal(sc_view_residency(v, p),
					 SC_RESIDENCY_COLD);
			assert_int_equal(sc_cache_part_residency(cache, p),
					 SC_RESIDENCY_COLD);
			assert_int_equal(sc_view_len_in(v, p), 0);
			sc_view_iter it;
			sc_view_iter_init_in(v, p, &it);
			assert_null(sc_view_iter_next(&it));
			assert_null(sc_view_get_in(v, p, S("e0")));
			assert_null(sc_reader_get_in(rd, p, S("e1")));
			v = sc_reader_begin(rd);
			assert_non_null(fi);
			assert_int_equal(fi->residency, SC_RESIDENCY_COLD);
			assert_int_equal(fi->entities, 0);
			assert_int_equal(fi->bytes, 0);
			continue;
		}
		if (!tk_refstate_check_partition(rs, v, p, why, sizeof why))
			fail_msg("seed %llu: %s", (unsigned long long)seed,
				 why);
		size_t n;
		size_t bytes = recount_bytes(v, p, &n);
		resident_bytes += bytes;
		if (n) {
			assert_int_equal(sc_view_residency(v, p),
					 SC_RESIDENCY_RESIDENT);
			assert_non_null(fi);
			assert_int_equal(fi->residency, SC_RESIDENCY_RESIDENT);
			assert_int_equal(fi->entities, n);
			assert_int_equal(fi->bytes, bytes);
		} else if (p.len) {
			assert_int_equal(sc_view_residency(v, p),
					 SC_RESIDENCY_ABSENT);
			assert_null(fi);
		} else {
			assert_int_equal(fi->bytes, 0);
		}
	}
	assert_int_equal(sc_view_cold_count(v), ncold);
	assert_int_equal(sc_cache_resident_bytes(cache), resident_bytes);
	/* Every entity in memory is of a resident partition. */
	assert_int_equal(sc_view_len_all(v), sc_cache_len(cache));
	size_t all = 0;
	sc_view_iter it;
	sc_view_iter_init_all(v, &it);
	while (sc_view_iter_next(&it))
		all++;
	assert_int_equal(all, sc_view_len_all(v));
	sc_reader_end(rd);
}

/* ==== the model test ====================================================== */

#define NPARTS 13 /* the default one and 12 named */
#define NIDS   8

static const char *attr_names[] = {"a", "b", "cc", "d"};

static void random_event(uint64_t *rnd, sc_event *ev, sc_attr *attrs,
			 char (*strs)[16], sc_str part, sc_str id,
			 uint64_t position)
{
	memset(ev, 0, sizeof *ev);
	ev->partition = part;
	ev->entity = id;
	ev->position = position;
	ev->time = (int64_t)position * 1000;
	ev->actor = S("tester");
	unsigned t = (unsigned)tk_rand_below(rnd, 10);
	ev->type = t < 6   ? SC_EVENT_SET
		   : t < 7 ? SC_EVENT_UNSET
		   : t < 9 ? SC_EVENT_REPLACE
			   : SC_EVENT_DELETE;
	if (ev->type == SC_EVENT_DELETE)
		return;
	size_t na = 1 + tk_rand_below(rnd, 3);
	for (size_t i = 0; i < na; i++) {
		attrs[i].name = S(attr_names[tk_rand_below(rnd, 4)]);
		if (tk_rand_below(rnd, 2)) {
			attrs[i].value = (sc_value){.type = SC_VALUE_INT};
			attrs[i].value.u.i = (int64_t)tk_rand_below(rnd, 1000);
		} else {
			size_t len = 1 + tk_rand_below(rnd, 14);
			for (size_t k = 0; k < len; k++)
				strs[i][k] =
				    (char)('a' + tk_rand_below(rnd, 26));
			attrs[i].value = (sc_value){.type = SC_VALUE_STRING};
			attrs[i].value.u.s = (sc_str){strs[i], len};
		}
	}
	ev->attrs = attrs;
	ev->nattrs = na;
}

static void run_model(unsigned lanes)
{
	uint64_t rnd = seed ^ lanes;
	sc_cache_options o = {.seed = 7, .lanes = lanes};
	sc_cache *cache;
	sc_error err;
	assert_int_equal(sc_cache_create(&o, &cache, &err), 0);
	sc_reader *rd;
	rd = open_reader(cache);
	tk_refstate *rs = tk_refstate_new();

	char names[NPARTS][8];
	sc_str parts[NPARTS];
	bool cold[NPARTS] = {0}, pinned[NPARTS] = {0};
	parts[0] = (sc_str){"", 0};
	for (size_t i = 1; i < NPARTS; i++) {
		snprintf(names[i], sizeof names[i], "p%02zu", i);
		parts[i] = S(names[i]);
	}
	char idnames[NIDS][8];
	sc_str ids[NIDS];
	for (size_t i = 0; i < NIDS; i++) {
		snprintf(idnames[i], sizeof idnames[i], "e%zu", i);
		ids[i] = S(idnames[i]);
	}
	/* The store's view at open: some partitions cold before any load. */
	for (size_t i = 1; i < NPARTS; i += 4) {
		assert_int_equal(sc_cache_part_evict(cache, parts[i], &err), 0);
		cold[i] = true;
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	check_all(cache, rd, rs, parts, cold, NPARTS);

	uint64_t position = 0;
	size_t rounds = short_run ? 150 : 1500;
	size_t evicts = 0, loads = 0, refused = 0, discards = 0;
	for (size_t round = 0; round < rounds; round++) {
		tk_refstate_begin(rs);
		bool now_cold[NPARTS];
		memcpy(now_cold, cold, sizeof cold);
		bool touched[NPARTS] = {0};
		/* Evictions and loads first, as a store does between
		 * batches; sometimes none. */
		size_t nres = 1 + tk_rand_below(&rnd, 3);
		for (size_t k = 0; k < nres; k++) {
			size_t i = 1 + tk_rand_below(&rnd, NPARTS - 1);
			if (touched[i])
				continue;
			touched[i] = true;
			if (now_cold[i]) {
				load_part(cache, rs, parts[i], &rnd);
				now_cold[i] = false;
				loads++;
			} else if (pinned[i]) {
				assert_int_equal(
				    sc_cache_part_evict(cache, parts[i], &err),
				    SC_ESTATE);
			} else {
				assert_int_equal(
				    sc_cache_part_evict(cache, parts[i], &err),
				    0);
				now_cold[i] = true;
				evicts++;
			}
		}
		if (tk_rand_below(&rnd, 20) == 0) {
			size_t i = 1 + tk_rand_below(&rnd, NPARTS - 1);
			bool want = !pinned[i];
			if (want && now_cold[i] && !cold[i]) {
				/* Evicted by this pending version: no pin. */
				assert_int_equal(sc_cache_part_pin(cache,
								   parts[i],
								   true, &err),
						 SC_ESTATE);
			} else {
				pinned[i] = want;
				assert_int_equal(sc_cache_part_pin(cache,
								   parts[i],
								   want, &err),
						 0);
			}
		}
		/* Events; a cold partition's go to the model only. */
		size_t nev = tk_rand_below(&rnd, 24);
		bool big = lanes > 1 && tk_rand_below(&rnd, 8) == 0;
		if (big) {
			/* A batch big enough for the apply lanes, over the
			 * default partition and the resident ones no eviction
			 * or load of this version touched (half of the
			 * batches), so the lanes count every partition's
			 * bytes. */
			bool spread = tk_rand_below(&rnd, 2) == 0;
			size_t n = 400;
			sc_event *evs = calloc(n, sizeof *evs);
			sc_attr(*attrs)[4] = calloc(n, sizeof *attrs);
			char(*strs)[4][16] = calloc(n, sizeof *strs);
			assert_true(evs && attrs && strs);
			for (size_t e = 0; e < n; e++) {
				size_t i =
				    spread ? tk_rand_below(&rnd, NPARTS) : 0;
				if (now_cold[i] || touched[i])
					i = 0;
				random_event(
				    &rnd, &evs[e], attrs[e], strs[e], parts[i],
				    ids[tk_rand_below(&rnd, NIDS)], ++position);
				tk_refstate_apply(rs, &evs[e]);
			}
			size_t failed;
			assert_int_equal(
			    sc_cache_apply_batch(cache, evs, n, &failed, &err),
			    0);
			free(evs);
			free(attrs);
			free(strs);
		}
		for (size_t e = 0; e < nev; e++) {
			size_t i = tk_rand_below(&rnd, NPARTS);
			sc_event ev;
			sc_attr attrs[4];
			char strs[4][16];
			random_event(&rnd, &ev, attrs, strs, parts[i],
				     ids[tk_rand_below(&rnd, NIDS)],
				     ++position);
			tk_refstate_apply(rs, &ev);
			if (now_cold[i]) {
				/* Refused, nothing changed. */
				bool pending = sc_cache_pending(cache);
				assert_int_equal(
				    sc_cache_part_residency(cache, parts[i]),
				    SC_RESIDENCY_COLD);
				assert_int_equal(
				    sc_cache_apply(cache, &ev, &err),
				    SC_ESTATE);
				assert_int_equal(sc_cache_pending(cache),
						 pending);
				refused++;
				continue;
			}
			if (sc_cache_apply(cache, &ev, &err))
				fail_msg("apply: %s", err.message);
			if (i && !touched[i] && !now_cold[i]) {
				/* Changed by the pending version: neither an
				 * eviction nor a load of it now. */
				assert_int_equal(
				    sc_cache_part_evict(cache, parts[i], &err),
				    SC_ESTATE);
				assert_int_equal(
				    sc_cache_part_load_begin(cache, parts[i],
							     NULL, &err),
				    SC_ESTATE);
			}
		}
		if (tk_rand_below(&rnd, 8) == 0) {
			sc_cache_discard(cache);
			tk_refstate_rollback(rs);
			discards++;
		} else {
			assert_int_equal(sc_cache_promote(cache), 0);
			tk_refstate_commit(rs);
			memcpy(cold, now_cold, sizeof cold);
		}
		check_all(cache, rd, rs, parts, cold, NPARTS);
	}
	assert_true(evicts > 0 && loads > 0 && refused > 0 && discards > 0);
	/* Load every cold partition: the whole state equals the model. */
	for (size_t i = 1; i < NPARTS; i++)
		if (cold[i]) {
			load_part(cache, rs, parts[i], &rnd);
			cold[i] = false;
		}
	assert_int_equal(sc_cache_promote(cache), 0);
	check_all(cache, rd, rs, parts, cold, NPARTS);
	char why[512];
	const sc_view *v = sc_reader_begin(rd);
	if (!tk_refstate_check_view(rs, v, why, sizeof why))
		fail_msg("seed %llu: %s", (unsigned long long)seed, why);
	sc_reader_end(rd);
	/* Nothing waits once no reader pins: evicted trees were freed. */
	expect_all_reclaimed(cache);
	sc_reader_close(rd);
	sc_cache_destroy(cache);
	tk_refstate_free(rs);
}

static void test_model(void **state)
{
	(void)state;
	run_model(1);
}

static void test_model_lanes(void **state)
{
	(void)state;
	run_model(3);
}

/* ==== single properties =================================================== */

static void set_int(sc_cache *cache, const char *part, const char *id,
		    const char *name, int64_t v, uint64_t pos)
{
	sc_attr a = {.name = S(name),
		     .value = {.type = SC_VALUE_INT, .u.i = v}};
	sc_event ev = {.partition = S(part),
		       .entity = S(id),
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .position = pos,
		       .time = 1};
	sc_error err;
	if (sc_cache_apply(cache, &ev, &err))
		fail_msg("apply: %s", err.message);
}

static int64_t get_int(const sc_entity *e, const char *name)
{
	sc_value v;
	assert_non_null(e);
	assert_true(sc_entity_find(e, S(name), &v));
	return v.u.i;
}

/* A view pinned before an eviction reads the partition whole; the tree is
 * freed once that pin ends (ASan: no leak, no use after free). */
static void test_pinned_view_keeps_evicted(void **state)
{
	(void)state;
	sc_cache *cache = new_cache();
	sc_error err;
	sc_reader *old, *now;
	old = open_reader(cache);
	now = open_reader(cache);
	for (int i = 0; i < 200; i++) {
		char id[16];
		snprintf(id, sizeof id, "id%d", i);
		set_int(cache, "P", id, "v", i, (uint64_t)i + 1);
		set_int(cache, "Q", id, "v", -i, (uint64_t)i + 1);
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *pinned = sc_reader_begin(old);
	size_t resident = sc_cache_resident_bytes(cache);
	assert_int_equal(sc_cache_part_evict(cache, S("P"), &err), 0);
	/* Pending: the newest version still has P. */
	assert_int_equal(sc_view_residency(pinned, S("P")),
			 SC_RESIDENCY_RESIDENT);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(sc_cache_resident_bytes(cache) < resident);
	const sc_view *v = sc_reader_begin(now);
	assert_int_equal(sc_view_residency(v, S("P")), SC_RESIDENCY_COLD);
	assert_int_equal(sc_view_residency(v, S("Q")), SC_RESIDENCY_RESIDENT);
	assert_int_equal(sc_view_len_in(v, S("P")), 0);
	assert_int_equal(sc_view_len_all(v), 200);
	assert_int_equal(sc_view_cold_count(v), 1);
	assert_int_equal(sc_view_partition_count(v), 2);
	sc_reader_end(now);
	/* More versions on top, reclaimed up to the pinned one. */
	for (int r = 0; r < 5; r++) {
		set_int(cache, "Q", "id0", "v", 1000 + r, 300 + (uint64_t)r);
		assert_int_equal(sc_cache_promote(cache), 0);
	}
	sc_cache_reclaim(cache);
	assert_int_equal(sc_view_len_in(pinned, S("P")), 200);
	for (int i = 0; i < 200; i++) {
		char id[16];
		snprintf(id, sizeof id, "id%d", i);
		assert_int_equal(
		    get_int(sc_view_get_in(pinned, S("P"), S(id)), "v"), i);
	}
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_true(st.bytes_awaiting > 0);
	sc_reader_end(old);
	expect_all_reclaimed(cache);
	sc_reader_close(old);
	sc_reader_close(now);
	sc_cache_destroy(cache);
}

static void test_errors(void **state)
{
	(void)state;
	sc_cache *cache = new_cache();
	sc_error err;
	assert_int_equal(sc_cache_part_evict(cache, S(""), &err), SC_EINVAL);
	assert_int_equal(sc_cache_part_load_begin(cache, S(""), NULL, &err),
			 SC_EINVAL);
	assert_int_equal(sc_cache_part_pin(cache, S(""), true, &err),
			 SC_EINVAL);
	assert_false(sc_cache_pending(cache));
	set_int(cache, "A", "x", "v", 1, 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	/* Resident: a load is refused. */
	assert_int_equal(sc_cache_part_load_begin(cache, S("A"), NULL, &err),
			 SC_ESTATE);
	/* Pinned: an eviction is refused. */
	assert_int_equal(sc_cache_part_pin(cache, S("A"), true, &err), 0);
	assert_int_equal(sc_cache_part_evict(cache, S("A"), &err), SC_ESTATE);
	assert_int_equal(sc_cache_part_pin(cache, S("A"), false, &err), 0);
	assert_false(sc_cache_pending(cache));
	assert_int_equal(sc_cache_part_evict(cache, S("A"), &err), 0);
	assert_int_equal(sc_cache_part_evict(cache, S("A"), &err), SC_ESTATE);
	assert_int_equal(sc_cache_part_load_begin(cache, S("A"), NULL, &err),
			 SC_ESTATE);
	/* Nor is it pinned while its eviction is pending. */
	assert_int_equal(sc_cache_part_pin(cache, S("A"), true, &err),
			 SC_ESTATE);
	/* Discard cancels the eviction. */
	sc_cache_discard(cache);
	assert_int_equal(sc_cache_part_residency(cache, S("A")),
			 SC_RESIDENCY_RESIDENT);
	assert_int_equal(sc_cache_part_evict(cache, S("A"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	/* Cold: events and stray states are refused, nothing changed. */
	sc_attr a = {.name = S("v"), .value = {.type = SC_VALUE_INT, .u.i = 2}};
	sc_event ev = {.partition = S("A"),
		       .entity = S("x"),
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .position = 2};
	assert_int_equal(sc_cache_apply(cache, &ev, &err), SC_ESTATE);
	assert_non_null(strstr(err.message, "cold"));
	assert_false(sc_cache_pending(cache));
	size_t failed;
	assert_int_equal(sc_cache_apply_batch(cache, &ev, 1, &failed, &err),
			 SC_ESTATE);
	assert_int_equal(failed, 0);
	sc_cache_discard(cache);
	assert_int_equal(sc_cache_load_entity_in(cache, S("A"), S("x"), &a, 1,
						 1, S(""), 2, &err),
			 SC_ESTATE);
	sc_cache_discard(cache);
	/* A snapshot of a view with a cold partition is refused. */
	sc_reader *rd;
	rd = open_reader(cache);
	const sc_view *v = sc_reader_begin(rd);
	sc_snapshot_encoded *enc;
	assert_int_equal(sc_snapshot_encode(v, NULL, &enc, &err), SC_ESTATE);
	assert_null(enc);
	sc_reader_end(rd);
	/* Loaded: resident again, its events apply; an empty load leaves
	 * it absent (resident, no entity). */
	assert_int_equal(sc_cache_part_load_begin(cache, S("A"), NULL, &err),
			 0);
	assert_int_equal(sc_cache_part_residency(cache, S("A")),
			 SC_RESIDENCY_RESIDENT);
	assert_int_equal(sc_cache_apply(cache, &ev, &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	v = sc_reader_begin(rd);
	assert_int_equal(get_int(sc_view_get_in(v, S("A"), S("x")), "v"), 2);
	assert_int_equal(sc_view_cold_count(v), 0);
	sc_reader_end(rd);
	assert_int_equal(sc_cache_part_evict(cache, S("B"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_cache_part_load_begin(cache, S("B"), NULL, &err),
			 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	v = sc_reader_begin(rd);
	assert_int_equal(sc_view_residency(v, S("B")), SC_RESIDENCY_ABSENT);
	sc_reader_end(rd);
	sc_reader_close(rd);
	sc_cache_destroy(cache);
}

/* A batch big enough for the apply lanes that names a cold partition
 * fails at that partition's first event, as a serial apply does, and
 * leaves the pending version poisoned: nothing of it can be promoted. */
static void test_lanes_refuse_cold(void **state)
{
	(void)state;
	sc_cache *cache;
	sc_error err;
	sc_cache_options o = {.seed = 3, .lanes = 2};
	assert_int_equal(sc_cache_create(&o, &cache, &err), 0);
	set_int(cache, "A", "x", "v", 1, 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_cache_part_evict(cache, S("A"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	enum { N = 1500, COLD_AT = 1200 };
	sc_event *evs = calloc(N, sizeof *evs);
	char(*ids)[16] = calloc(N, sizeof *ids);
	assert_true(evs && ids);
	sc_attr a = {.name = S("v"), .value = {.type = SC_VALUE_INT, .u.i = 7}};
	for (size_t i = 0; i < N; i++) {
		snprintf(ids[i], sizeof ids[i], "e%zu", i);
		evs[i] = (sc_event){.partition = S(i == COLD_AT ? "A" : "B"),
				    .entity = S(ids[i]),
				    .type = SC_EVENT_SET,
				    .attrs = &a,
				    .nattrs = 1,
				    .position = 2 + i,
				    .time = 1};
	}
	size_t failed = 0;
	assert_int_equal(sc_cache_apply_batch(cache, evs, N, &failed, &err),
			 SC_ESTATE);
	assert_int_equal(failed, COLD_AT);
	assert_non_null(strstr(err.message, "cold"));
	assert_int_not_equal(sc_cache_promote(cache), 0);
	sc_cache_discard(cache);
	assert_int_equal(sc_cache_part_residency(cache, S("B")),
			 SC_RESIDENCY_ABSENT);
	assert_int_equal(sc_cache_len(cache), 0);
	free(evs);
	free(ids);
	sc_cache_destroy(cache);
}

static void test_lru(void **state)
{
	(void)state;
	sc_cache *cache = new_cache();
	sc_error err;
	const char *names[] = {"A", "B", "C", "D"};
	for (int i = 0; i < 4; i++)
		set_int(cache, names[i], "x", "v", i, (uint64_t)i + 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_reader *rd;
	rd = open_reader(cache);
	/* Read C, then (a tick later) A: B and D, never read, come first
	 * (name order on a tie), then C, then A. */
	assert_non_null(sc_reader_get_in(rd, S("C"), S("x")));
	sc_cache_lru_advance(cache);
	const sc_view *v = sc_reader_begin(rd);
	assert_non_null(sc_view_get_in(v, S("A"), S("x")));
	sc_reader_end(rd);
	sc_str out[8];
	assert_int_equal(sc_cache_part_coldest(cache, out, 8), 4);
	assert_string_equal(out[0].ptr, "B");
	assert_string_equal(out[1].ptr, "D");
	assert_string_equal(out[2].ptr, "C");
	assert_string_equal(out[3].ptr, "A");
	assert_int_equal(sc_cache_part_coldest(cache, out, 1), 1);
	assert_string_equal(out[0].ptr, "B");
	/* A pinned one is never offered; a cold one neither. */
	assert_int_equal(sc_cache_part_pin(cache, S("B"), true, &err), 0);
	assert_int_equal(sc_cache_part_evict(cache, S("D"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_cache_part_coldest(cache, out, 8), 2);
	assert_string_equal(out[0].ptr, "C");
	assert_string_equal(out[1].ptr, "A");
	/* Figures list the pin and the tick. */
	sc_cache_part_info info[8];
	assert_int_equal(sc_cache_part_list(cache, info, 8), 5);
	assert_string_equal(info[2].name.ptr, "B");
	assert_true(info[2].pinned);
	assert_int_equal(info[4].residency, SC_RESIDENCY_COLD);
	assert_true(info[1].last_used > info[3].last_used);
	/* A read of an unchanged tick stores nothing (the tick stays). */
	uint64_t t = info[1].last_used;
	assert_non_null(sc_reader_get_in(rd, S("A"), S("x")));
	assert_int_equal(sc_cache_part_list(cache, info, 8), 5);
	assert_true(info[1].last_used >= t);
	sc_reader_close(rd);
	sc_cache_destroy(cache);
}

/* ==== diffs =============================================================== */

typedef struct diff_log {
	size_t added, removed, changed;
	char last[64];
} diff_log;

static int log_diff(void *ctx, sc_diff_kind kind, const sc_entity *old,
		    const sc_entity *new_)
{
	diff_log *d = ctx;
	const sc_entity *e = new_ ? new_ : old;
	snprintf(d->last, sizeof d->last, "%.*s/%.*s",
		 (int)sc_entity_partition(e).len, sc_entity_partition(e).ptr,
		 (int)sc_entity_id(e).len, sc_entity_id(e).ptr);
	if (kind == SC_DIFF_ADDED)
		d->added++;
	else if (kind == SC_DIFF_REMOVED)
		d->removed++;
	else
		d->changed++;
	return 0;
}

static diff_log diff_of(const sc_view *a, const sc_view *b)
{
	diff_log d = {0};
	assert_int_equal(sc_view_diff(a, b, log_diff, &d), 0);
	return d;
}

/* Load P with states: x (kept, as evicted), y deleted while cold (absent),
 * z new, w changed. */
static void load_p(sc_cache *cache, const char *const *ids, const int *vals,
		   size_t n)
{
	sc_error err;
	assert_int_equal(sc_cache_part_load_begin(cache, S("P"), NULL, &err),
			 0);
	for (size_t i = 0; i < n; i++) {
		sc_attr a = {.name = S("v"),
			     .value = {.type = SC_VALUE_INT, .u.i = vals[i]}};
		/* Same updated_at, actor and position as set_int gave x. */
		assert_int_equal(sc_cache_load_entity_in(
				     cache, S("P"), S(ids[i]), &a, 1, 1, S(""),
				     strcmp(ids[i], "x") ? 50 : 1, &err),
				 0);
	}
}

static void test_diff_residency(void **state)
{
	(void)state;
	sc_cache *cache = new_cache();
	sc_error err;
	sc_reader *r1, *r2, *r3;
	r1 = open_reader(cache);
	r2 = open_reader(cache);
	r3 = open_reader(cache);
	set_int(cache, "P", "x", "v", 1, 1);
	set_int(cache, "P", "y", "v", 2, 2);
	set_int(cache, "P", "w", "v", 3, 3);
	set_int(cache, "Q", "q", "v", 9, 4);
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *v1 = sc_reader_begin(r1);

	/* A change, then the eviction: stepwise the eviction reports
	 * nothing; a diff over both reports the change only. */
	set_int(cache, "P", "w", "v", 4, 5);
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *v2 = sc_reader_begin(r2);
	assert_int_equal(sc_cache_part_evict(cache, S("P"), &err), 0);
	diff_log pd = {0};
	assert_int_equal(sc_cache_pending_diff(cache, log_diff, &pd), 0);
	assert_int_equal(pd.added + pd.removed + pd.changed, 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *v3 = sc_reader_begin(r3);
	diff_log d = diff_of(v2, v3);
	assert_int_equal(d.added + d.removed + d.changed, 0);
	d = diff_of(v1, v3);
	assert_int_equal(d.changed, 1);
	assert_int_equal(d.added + d.removed, 0);
	assert_string_equal(d.last, "P/w");
	/* Backwards too. */
	d = diff_of(v3, v1);
	assert_int_equal(d.changed, 1);
	assert_int_equal(d.added + d.removed, 0);
	sc_reader_end(r2);

	/* While cold: y deleted, z added, w changed, x unchanged (the
	 * store's log); then the load. From the cold version: nothing. */
	const char *ids[] = {"x", "w", "z"};
	const int vals[] = {1, 5, 6};
	load_p(cache, ids, vals, 3);
	pd = (diff_log){0};
	assert_int_equal(sc_cache_pending_diff(cache, log_diff, &pd), 0);
	assert_int_equal(pd.added + pd.removed + pd.changed, 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	const sc_view *v4 = sc_reader_begin(r2);
	d = diff_of(v3, v4);
	assert_int_equal(d.added + d.removed + d.changed, 0);
	/* From before the eviction: the changes of state only. */
	d = diff_of(v1, v4);
	assert_int_equal(d.added, 1);
	assert_int_equal(d.removed, 1);
	assert_int_equal(d.changed, 1);
	sc_reader_end(r3);
	/* Q untouched throughout. */
	assert_int_equal(get_int(sc_view_get_in(v4, S("Q"), S("q")), "v"), 9);
	sc_reader_end(r1);
	sc_reader_end(r2);
	sc_reader_close(r1);
	sc_reader_close(r2);
	sc_reader_close(r3);
	sc_cache_destroy(cache);
}

/* A watcher sees no eviction and no load: its batches hold changes of
 * state only, and a batch that starts while a partition is cold reports
 * nothing of it (the documented gap). */
static void test_watch_residency(void **state)
{
	(void)state;
	sc_cache *cache = new_cache();
	sc_error err;
	set_int(cache, "P", "x", "v", 1, 1);
	set_int(cache, "P", "y", "v", 2, 2);
	set_int(cache, "Q", "q", "v", 3, 3);
	set_int(cache, "R", "r", "v", 3, 3);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_watcher *w;
	assert_int_equal(sc_watch_open(cache, NULL, &w, &err), 0);
	const sc_watch_batch *b;

	/* A change of P, then its eviction, in one batch: the change only. */
	set_int(cache, "P", "x", "v", 10, 4);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_cache_part_evict(cache, S("P"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_watch_next(w, 0, &b, &err), 0);
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->nupdated, 1);
	assert_int_equal(b->nadded + b->nremoved, 0);
	assert_string_equal(b->updated[0].partition.ptr, "P");
	assert_string_equal(b->updated[0].id.ptr, "x");

	/* An eviction alone: no batch. */
	assert_int_equal(sc_cache_part_evict(cache, S("R"), &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_watch_next(w, 0, &b, &err), 0);
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	/* A change while P is cold: that change only. */
	set_int(cache, "Q", "q", "v", 4, 5);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_watch_next(w, 0, &b, &err), 0);
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->nupdated, 1);
	assert_int_equal(b->nadded + b->nremoved, 0);
	assert_string_equal(b->updated[0].partition.ptr, "Q");

	/* The load (x changed, y gone while cold): nothing reported. */
	assert_int_equal(sc_cache_part_load_begin(cache, S("P"), NULL, &err),
			 0);
	sc_attr a = {.name = S("v"),
		     .value = {.type = SC_VALUE_INT, .u.i = 11}};
	assert_int_equal(sc_cache_load_entity_in(cache, S("P"), S("x"), &a, 1,
						 1, S(""), 6, &err),
			 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_watch_next(w, 0, &b, &err), 0);
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);

	/* Changes after the load are reported again. */
	set_int(cache, "P", "x", "v", 12, 7);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_watch_next(w, 0, &b, &err), 0);
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->nupdated, 1);
	assert_int_equal(b->nadded + b->nremoved, 0);
	assert_int_equal(get_int(b->updated[0].before, "v"), 11);
	assert_int_equal(get_int(b->updated[0].after, "v"), 12);
	sc_watch_close(w);
	sc_cache_destroy(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model),
	    cmocka_unit_test(test_model_lanes),
	    cmocka_unit_test(test_pinned_view_keeps_evicted),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_lanes_refuse_cold),
	    cmocka_unit_test(test_lru),
	    cmocka_unit_test(test_diff_residency),
	    cmocka_unit_test(test_watch_residency),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
