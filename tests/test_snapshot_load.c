/*
 * Whole-snapshot restore (sc_snapshot_load): the pipelined load with its
 * helper thread against the same load on one thread and against the
 * entity-by-entity path (sc_snapshot_chunk_decode + sc_cache_load_entity);
 * the first error in chunk order whichever thread finds it; an id given
 * twice; loading over a non-empty version; allocation failures.
 *
 * Deterministic given the seed, which is printed; set SC_TEST_SEED to
 * repeat a run.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "snapshot/snapshot.h"
#include "statecache/cache.h"
#include "statecache/testing.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static int short_run;

static uint64_t rnd(uint64_t *s)
{
	return tk_rand(s);
}

/* A cache of n entities with 0..6 attributes of every kind, some deleted
 * again, promoted. */
static sc_cache *make_cache(uint64_t *r, size_t n)
{
	sc_cache *c;
	sc_error err;
	sc_cache_options o = {.seed = 7};
	assert_int_equal(sc_cache_create(&o, &c, &err), 0);
	static const char *names[] = {"a", "b", "color", "d", "n", "zz"};
	for (size_t i = 0; i < n; i++) {
		char id[64], str[40], bytes[8];
		/* Ids depend on i only: two caches share them. */
		snprintf(id, sizeof id, "e-%zu%s", i,
			 i % 7 == 0 ? "-with-a-longer-id" : "");
		snprintf(str, sizeof str, "s%llu", (unsigned long long)rnd(r));
		for (size_t k = 0; k < sizeof bytes; k++)
			bytes[k] = (char)rnd(r);
		sc_attr a[6];
		size_t na = 0;
		for (size_t k = 0; k < 6; k++) {
			if (rnd(r) % 3 == 0)
				continue;
			a[na].name = (sc_str){names[k], strlen(names[k])};
			switch (k % 5) {
			case 0:
				a[na].value.type = SC_VALUE_STRING;
				a[na].value.u.s = (sc_str){str, strlen(str)};
				break;
			case 1:
				a[na].value.type = SC_VALUE_INT;
				a[na].value.u.i = (int64_t)rnd(r);
				break;
			case 2:
				a[na].value.type = SC_VALUE_DOUBLE;
				a[na].value.u.d = (double)rnd(r) / 3.0;
				break;
			case 3:
				a[na].value.type = SC_VALUE_BOOL;
				a[na].value.u.b = rnd(r) & 1;
				break;
			default:
				a[na].value.type = SC_VALUE_BYTES;
				a[na].value.u.s = (sc_str){bytes, sizeof bytes};
			}
			na++;
		}
		sc_event ev = {
		    .position = i + 1,
		    .entity = {id, strlen(id)},
		    .type = rnd(r) % 10 == 0 ? SC_EVENT_DELETE : SC_EVENT_SET,
		    .attrs = a,
		    .nattrs = na,
		    .time = (int64_t)rnd(r),
		    .actor = {"actor", rnd(r) % 2 ? 5u : 0u},
		};
		assert_int_equal(sc_cache_apply(c, &ev, &err), 0);
	}
	assert_int_equal(sc_cache_promote(c), 0);
	return c;
}

static sc_snapshot_encoded *encode(sc_cache *c, uint32_t per_chunk)
{
	sc_reader *rd;
	sc_error err;
	assert_int_equal(sc_reader_open(c, &rd, &err), 0);
	const sc_view *v = sc_reader_begin(rd);
	sc_snapshot_params p = {.entities_per_chunk = per_chunk,
				.created_at = 1};
	sc_snapshot_encoded *enc = NULL;
	if (sc_snapshot_encode(v, &p, &enc, &err))
		fail_msg("encode: %s", err.message);
	sc_reader_close(rd);
	return enc;
}

/* Chunk pointers and lengths of `enc`. */
typedef struct parts {
	const void **chunks;
	size_t *lens;
} parts;

static parts parts_of(const sc_snapshot_encoded *enc)
{
	parts p;
	p.chunks = calloc(enc->chunk_count + 1, sizeof *p.chunks);
	p.lens = calloc(enc->chunk_count + 1, sizeof *p.lens);
	assert_non_null(p.chunks);
	assert_non_null(p.lens);
	for (uint32_t i = 0; i < enc->chunk_count; i++) {
		p.chunks[i] = enc->chunks[i].data;
		p.lens[i] = enc->chunks[i].len;
	}
	return p;
}

static void parts_free(parts *p)
{
	free(p->chunks);
	free(p->lens);
}

/* Chunks done, in the order reported. */
typedef struct done_log {
	uint32_t n;
	uint32_t order_ok;
} done_log;

static void on_done(void *ctx, uint32_t index, const void *bytes, size_t len)
{
	done_log *d = ctx;
	assert_non_null(bytes);
	assert_true(len > 0);
	if (index != d->n)
		d->order_ok = 0;
	d->n++;
}

static int load(sc_cache *c, const sc_snapshot_encoded *enc, const void **ch,
		const size_t *lens, bool no_thread, done_log *d, sc_error *err)
{
	sc_snapshot_header h;
	int rc = sc_snapshot_header_decode(enc->header.data, enc->header.len,
					   &h, err);
	if (rc)
		return rc;
	sc_snapshot_load_params p = {
	    .no_thread = no_thread, .chunk_done = on_done, .ctx = d};
	uint64_t got = 0;
	rc = sc_snapshot_load(&h, (const void *const *)ch, lens, c, &p, &got,
			      err);
	if (!rc)
		assert_int_equal(got, h.entity_count);
	sc_snapshot_header_clear(&h);
	if (!rc)
		rc = sc_cache_promote(c);
	if (rc)
		sc_cache_discard(c);
	return rc;
}

/* Every entity of `a` is in `b` with equal contents and size. */
static void assert_same(sc_cache *a, sc_cache *b)
{
	sc_reader *ra, *rb;
	assert_int_equal(sc_reader_open(a, &ra, NULL), 0);
	assert_int_equal(sc_reader_open(b, &rb, NULL), 0);
	const sc_view *va = sc_reader_begin(ra), *vb = sc_reader_begin(rb);
	assert_int_equal(sc_view_len(va), sc_view_len(vb));
	sc_view_iter it;
	sc_view_iter_init(va, &it);
	const sc_entity *e;
	while ((e = sc_view_iter_next(&it))) {
		const sc_entity *f = sc_view_get(vb, sc_entity_id(e));
		assert_non_null(f);
		assert_true(sc_entity_equal(e, f));
		assert_int_equal(sc_entity_memory_bytes(e),
				 sc_entity_memory_bytes(f));
	}
	sc_reader_close(ra);
	sc_reader_close(rb);
}

static int load_entity_cb(void *ctx, const sc_snapshot_entity *e)
{
	return sc_cache_load_entity(ctx, e->id, e->attrs, e->nattrs,
				    e->updated_at, e->updated_by, e->position,
				    NULL);
}

/* ---- tests -------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	(void)state;
	uint64_t r = seed;
	static const uint32_t per_chunk[] = {1, 3, 64, 4096};
	size_t n = short_run ? 700 : 3000;
	for (size_t k = 0; k < 4; k++) {
		sc_cache *src = make_cache(&r, n);
		sc_snapshot_encoded *enc = encode(src, per_chunk[k]);
		parts p = parts_of(enc);
		sc_cache *c[2];
		for (int t = 0; t < 2; t++) {
			sc_error err;
			/* One seed: the same map shape, the same bytes. */
			sc_cache_options o = {.seed = 99};
			assert_int_equal(sc_cache_create(&o, &c[t], &err), 0);
			done_log d = {0, 1};
			int rc =
			    load(c[t], enc, p.chunks, p.lens, t == 1, &d, &err);
			if (rc)
				fail_msg("load: %s", err.message);
			assert_int_equal(d.n, enc->chunk_count);
			assert_true(d.order_ok);
			assert_same(src, c[t]);
			assert_same(c[t], src);
		}
		/* The entity-by-entity path builds the very same states. */
		sc_cache *ref;
		assert_int_equal(sc_cache_create(NULL, &ref, NULL), 0);
		sc_snapshot_header h;
		assert_int_equal(sc_snapshot_header_decode(enc->header.data,
							   enc->header.len, &h,
							   NULL),
				 0);
		for (uint32_t i = 0; i < h.chunk_count; i++)
			assert_int_equal(sc_snapshot_chunk_decode(
					     &h, i, p.chunks[i], p.lens[i],
					     load_entity_cb, ref, NULL, NULL),
					 0);
		sc_snapshot_header_clear(&h);
		assert_int_equal(sc_cache_promote(ref), 0);
		assert_same(ref, c[0]);
		sc_cache_stats s0, s1;
		sc_cache_stats_get(c[0], &s0);
		sc_cache_stats_get(c[1], &s1);
		assert_int_equal(s0.memory_bytes, s1.memory_bytes);
		assert_int_equal(s0.entities, sc_cache_len(src));
		sc_cache_destroy(ref);
		sc_cache_destroy(c[0]);
		sc_cache_destroy(c[1]);
		parts_free(&p);
		sc_snapshot_encoded_free(enc);
		sc_cache_destroy(src);
	}
}

/* A damaged chunk: the same error on one thread and with the helper, no
 * chunk at or after it reported done, the cache as before. */
static void test_first_error_in_order(void **state)
{
	(void)state;
	uint64_t r = seed ^ 1;
	sc_cache *src = make_cache(&r, 400);
	sc_snapshot_encoded *enc = encode(src, 16);
	assert_true(enc->chunk_count >= 6);
	for (int round = 0; round < (short_run ? 6 : 20); round++) {
		parts p = parts_of(enc);
		uint32_t bad = (uint32_t)(rnd(&r) % enc->chunk_count);
		/* A second damaged chunk after it must not change the
		 * error. */
		uint32_t bad2 = bad + 1 < enc->chunk_count ? bad + 1 : bad;
		uint8_t *copy = malloc(p.lens[bad]);
		uint8_t *copy2 = malloc(p.lens[bad2] + 1);
		memcpy(copy, p.chunks[bad], p.lens[bad]);
		copy[rnd(&r) % p.lens[bad]] ^= 0x40;
		p.chunks[bad] = copy;
		if (bad2 != bad) {
			memcpy(copy2, p.chunks[bad2], p.lens[bad2]);
			copy2[p.lens[bad2]] = 0;
			p.lens[bad2]++; /* wrong length: other message */
			p.chunks[bad2] = copy2;
		}
		sc_error e[2];
		int rc[2];
		for (int t = 0; t < 2; t++) {
			sc_cache *c;
			assert_int_equal(sc_cache_create(NULL, &c, NULL), 0);
			done_log d = {0, 1};
			rc[t] =
			    load(c, enc, p.chunks, p.lens, t == 1, &d, &e[t]);
			assert_int_equal(d.n, bad);
			assert_true(d.order_ok);
			assert_int_equal(sc_cache_len(c), 0);
			assert_false(sc_cache_pending(c));
			sc_cache_destroy(c);
		}
		assert_int_equal(rc[0], SC_ECORRUPT);
		assert_int_equal(rc[1], SC_ECORRUPT);
		assert_string_equal(e[0].message, e[1].message);
		char want[32];
		snprintf(want, sizeof want, "chunk %u ", bad);
		assert_non_null(strstr(e[0].message, want));
		free(copy);
		free(copy2);
		parts_free(&p);
	}
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
}

/* Two chunks holding the same ids (chunk 0 listed twice in a header that
 * vouches for it) pass every per-chunk check; the load must fail. */
static void test_duplicate_ids(void **state)
{
	(void)state;
	uint64_t r = seed ^ 2;
	sc_cache *src = make_cache(&r, 50);
	sc_snapshot_encoded *enc = encode(src, 8);
	sc_snapshot_header h;
	assert_int_equal(sc_snapshot_header_decode(enc->header.data,
						   enc->header.len, &h, NULL),
			 0);
	h.chunk_checksums[1] = h.chunk_checksums[0];
	h.chunk_raw_sizes[1] = h.chunk_raw_sizes[0];
	h.entity_count += h.chunk_entity_counts[0] - h.chunk_entity_counts[1];
	h.chunk_entity_counts[1] = h.chunk_entity_counts[0];
	parts p = parts_of(enc);
	p.chunks[1] = p.chunks[0];
	p.lens[1] = p.lens[0];
	for (int t = 0; t < 2; t++) {
		sc_cache *c;
		assert_int_equal(sc_cache_create(NULL, &c, NULL), 0);
		sc_error err;
		sc_snapshot_load_params prm = {.no_thread = t == 1};
		int rc = sc_snapshot_load(&h, (const void *const *)p.chunks,
					  p.lens, c, &prm, NULL, &err);
		assert_int_equal(rc, SC_ECORRUPT);
		assert_non_null(strstr(err.message, "twice"));
		sc_cache_discard(c);
		assert_int_equal(sc_cache_len(c), 0);
		sc_cache_destroy(c);
	}
	parts_free(&p);
	sc_snapshot_header_clear(&h);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
}

/* Loading over a version that holds other and older states of the same
 * ids: the snapshot's states replace them, the rest stay. */
static void test_load_over_state(void **state)
{
	(void)state;
	uint64_t r = seed ^ 3;
	sc_cache *src = make_cache(&r, 300);
	sc_snapshot_encoded *enc = encode(src, 32);
	parts p = parts_of(enc);
	uint64_t r2 = seed ^ 33; /* the same ids, other values */
	sc_cache *c = make_cache(&r2, 400);
	size_t before = sc_cache_len(c);
	sc_error err;
	done_log d = {0, 1};
	assert_int_equal(load(c, enc, p.chunks, p.lens, false, &d, &err), 0);
	assert_true(sc_cache_len(c) >= before);
	assert_true(sc_cache_len(c) >= sc_cache_len(src));
	sc_reader *ra;
	assert_int_equal(sc_reader_open(src, &ra, NULL), 0);
	const sc_view *va = sc_reader_begin(ra);
	sc_view_iter it;
	sc_view_iter_init(va, &it);
	const sc_entity *e;
	while ((e = sc_view_iter_next(&it)))
		assert_true(sc_entity_equal(
		    e, sc_cache_pending_get(c, sc_entity_id(e))));
	sc_reader_close(ra);
	sc_cache_stats s;
	sc_cache_stats_get(c, &s);
	assert_int_equal(s.bytes_awaiting, 0);
	parts_free(&p);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
	sc_cache_destroy(src);
}

/* A restore gives the version the snapshot's position, not the newest
 * entity's: here the last events are a delete and a delete of a missing
 * entity, so no entity keeps the position; with every entity deleted the
 * snapshot has no chunk at all. */
static void test_restore_position(void **state)
{
	(void)state;
	for (int all_deleted = 0; all_deleted < 2; all_deleted++) {
		sc_cache *src;
		sc_error err;
		assert_int_equal(sc_cache_create(NULL, &src, &err), 0);
		sc_attr a = {.name = {"n", 1}, .value.type = SC_VALUE_INT};
		sc_event ev[4] = {
		    {.position = 1,
		     .entity = {"keep", 4},
		     .type = SC_EVENT_SET},
		    {.position = 2,
		     .entity = {"gone", 4},
		     .type = SC_EVENT_SET},
		    {.position = 3,
		     .entity = {"gone", 4},
		     .type = SC_EVENT_DELETE},
		    {.position = 4,
		     .entity = {"never", 5},
		     .type = SC_EVENT_DELETE},
		};
		ev[0].attrs = ev[1].attrs = &a;
		ev[0].nattrs = ev[1].nattrs = 1;
		if (all_deleted)
			ev[1].entity = ev[2].entity = ev[0].entity;
		for (int i = 0; i < 4; i++)
			assert_int_equal(sc_cache_apply(src, &ev[i], &err), 0);
		assert_int_equal(sc_cache_promote(src), 0);
		sc_snapshot_encoded *enc = encode(src, 8);
		assert_int_equal(enc->position, 4);
		assert_int_equal(enc->chunk_count, all_deleted ? 0 : 1);
		parts p = parts_of(enc);
		for (int t = 0; t < 2; t++) {
			sc_cache *c;
			assert_int_equal(sc_cache_create(NULL, &c, &err), 0);
			done_log d = {0, 1};
			assert_int_equal(
			    load(c, enc, p.chunks, p.lens, t == 1, &d, &err),
			    0);
			sc_reader *rd;
			assert_int_equal(sc_reader_open(c, &rd, &err), 0);
			const sc_view *v = sc_reader_begin(rd);
			assert_int_equal(sc_view_version(v), 1);
			assert_int_equal(sc_view_position(v), 4);
			assert_int_equal(sc_view_len(v), all_deleted ? 0 : 1);
			sc_reader_close(rd);
			sc_cache_stats st;
			sc_cache_stats_get(c, &st);
			assert_int_equal(st.position, 4);
			/* The restored states are accounted for exactly. */
			assert_int_equal(st.memory_bytes, tk_live_bytes(c));
			sc_cache_destroy(c);
		}
		parts_free(&p);
		sc_snapshot_encoded_free(enc);
		sc_cache_destroy(src);
	}
}

/* The n-th allocation fails, for every n until the load succeeds: an
 * error each time, nothing left in the cache, no leak (ASan). */
static void test_alloc_fail(void **state)
{
	(void)state;
	uint64_t r = seed ^ 4;
	sc_cache *src = make_cache(&r, 120);
	sc_snapshot_encoded *enc = encode(src, 16);
	parts p = parts_of(enc);
	for (int t = 0; t < 2; t++) {
		int failures = 0;
		for (long n = 0;; n++) {
			sc_cache *c;
			assert_int_equal(sc_cache_create(NULL, &c, NULL), 0);
			sc_error err;
			done_log d = {0, 1};
			sc_testing_fail_alloc_after(n);
			int rc =
			    load(c, enc, p.chunks, p.lens, t == 1, &d, &err);
			sc_testing_fail_alloc_after(-1);
			if (rc == 0) {
				assert_same(src, c);
				sc_cache_destroy(c);
				break;
			}
			failures++;
			if (rc != ENOMEM && rc != SC_EPOISONED)
				fail_msg("n=%ld: %d %s", n, rc, err.message);
			assert_int_equal(sc_cache_len(c), 0);
			sc_cache_destroy(c);
			assert_true(n < 100000);
		}
		assert_true(failures > 0);
	}
	parts_free(&p);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
}

int main(void)
{
	seed = tk_seed("test_snapshot_load");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_first_error_in_order),
	    cmocka_unit_test(test_duplicate_ids),
	    cmocka_unit_test(test_load_over_state),
	    cmocka_unit_test(test_restore_position),
	    cmocka_unit_test(test_alloc_fail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
