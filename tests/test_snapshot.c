/*
 * Snapshot format: round trips through a cache, the hand-written protobuf
 * writer against protobuf-c, chunk boundaries, hostile bytes (flipped,
 * truncated, swapped, wrong version or magic, crafted messages that pass
 * every checksum) and allocation failures during encode and restore.
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
#include <xxhash.h>
#include <zstd.h>

#include "snapshot/snapshot.h"
#include "statecache/cache.h"
#include "statecache/testing.h"
#include "statecache/v1/statecache.pb-c.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static int short_run;

/* ---- random data -------------------------------------------------------- */

typedef struct rng {
	uint64_t s;
} rng;

static uint64_t rnd(rng *r)
{
	return tk_rand(&r->s);
}

static size_t rnd_below(rng *r, size_t n)
{
	return (size_t)(rnd(r) % n);
}

/* Random bytes; with `text`, mostly UTF-8 text (ASCII, two-, three- and
 * four-byte sequences) and never a NUL byte; with `text` 2, only UTF-8 (a
 * string value must be). */
static size_t rnd_fill(rng *r, char *buf, size_t len, int text)
{
	if (!text) {
		for (size_t i = 0; i < len; i++)
			buf[i] = (char)rnd(r);
		return len;
	}
	/* Text pieces; the last two are not valid UTF-8, which ids, names
	 * and actors (bytes) may hold, string values not. */
	static const char *pieces[] = {"a",
				       "Z",
				       " ",
				       "\xc3\xa9",
				       "\xe2\x82\xac",
				       "\xf0\x9f\x98\x80",
				       "\xe6\x97\xa5",
				       "~",
				       "\xff",
				       "\xc3"};
	size_t n = 0;
	while (n < len) {
		const char *p = pieces[rnd_below(r, text == 2 ? 8 : 10)];
		size_t pl = strlen(p);
		if (n + pl > len)
			break;
		memcpy(buf + n, p, pl);
		n += pl;
	}
	return n;
}

/* One random state for entity number `k`: ids are unique because they
 * start with k's 4 bytes; lengths go up to SC_ENTITY_ID_MAX. */
typedef struct gen_entity {
	char id[SC_ENTITY_ID_MAX];
	size_t id_len;
	sc_attr attrs[8];
	char names[8][SC_ATTR_NAME_MAX];
	char vals[8][300];
	size_t nattrs;
	char actor[40];
	size_t actor_len;
	int64_t time;
} gen_entity;

static void gen(rng *r, uint32_t k, gen_entity *g)
{
	size_t extra = rnd_below(r, 4) == 0 ? rnd_below(r, SC_ENTITY_ID_MAX - 3)
					    : rnd_below(r, 20);
	g->id[0] = (char)(k >> 24);
	g->id[1] = (char)(k >> 16);
	g->id[2] = (char)(k >> 8);
	g->id[3] = (char)k;
	g->id_len = 4 + rnd_fill(r, g->id + 4, extra, (int)rnd_below(r, 2));
	g->nattrs = rnd_below(r, 7);
	for (size_t i = 0; i < g->nattrs; i++) {
		sc_attr *a = &g->attrs[i];
		/* Distinct names: a leading index byte, then random bytes. */
		g->names[i][0] = (char)('a' + i);
		size_t nl = 1 + rnd_fill(r, g->names[i] + 1,
					 rnd_below(r, 4) == 0
					     ? rnd_below(r, SC_ATTR_NAME_MAX)
					     : rnd_below(r, 12),
					 (int)rnd_below(r, 2));
		a->name = (sc_str){g->names[i], nl};
		switch (rnd_below(r, 5)) {
		case 0:
			a->value.type = SC_VALUE_STRING;
			a->value.u.s.ptr = g->vals[i];
			a->value.u.s.len =
			    rnd_fill(r, g->vals[i], rnd_below(r, 300), 2);
			break;
		case 1:
			a->value.type = SC_VALUE_BYTES;
			a->value.u.s.ptr = g->vals[i];
			a->value.u.s.len =
			    rnd_fill(r, g->vals[i], rnd_below(r, 300), 0);
			break;
		case 2: {
			static const int64_t edge[] = {0, -1, 1, INT64_MIN,
						       INT64_MAX};
			a->value.type = SC_VALUE_INT;
			a->value.u.i = rnd_below(r, 3) ? (int64_t)rnd(r)
						       : edge[rnd_below(r, 5)];
			break;
		}
		case 3: {
			static const double edge[] = {0.0, -0.0, 1e308, -1.5,
						      5e-324};
			a->value.type = SC_VALUE_DOUBLE;
			if (rnd_below(r, 3)) {
				uint64_t bits = rnd(r);
				memcpy(&a->value.u.d, &bits, 8);
				if (a->value.u.d != a->value.u.d)
					a->value.u.d = 0.25; /* no NaN */
			} else {
				a->value.u.d = edge[rnd_below(r, 5)];
			}
			break;
		}
		default:
			a->value.type = SC_VALUE_BOOL;
			a->value.u.b = rnd_below(r, 2);
			break;
		}
	}
	g->actor_len = rnd_below(r, 3) == 0 ? 0 : rnd_fill(r, g->actor, 40, 1);
	g->time = rnd_below(r, 4) == 0 ? 0 : (int64_t)rnd(r);
}

/* A cache holding `n` random entities in one promoted version; positions
 * 1..n (entity k last changed at position k+1). */
static sc_cache *make_cache(uint64_t s, uint32_t n)
{
	sc_cache_options o = {.seed = s | 1};
	sc_cache *c = NULL;
	sc_error err;
	assert_int_equal(sc_cache_create(&o, &c, &err), 0);
	rng r = {s};
	gen_entity *g = malloc(sizeof *g);
	assert_non_null(g);
	for (uint32_t k = 0; k < n; k++) {
		gen(&r, k, g);
		sc_event ev = {
		    .position = k + 1,
		    .entity = {g->id, g->id_len},
		    .type = rnd_below(&r, 2) ? SC_EVENT_SET : SC_EVENT_REPLACE,
		    .attrs = g->attrs,
		    .nattrs = g->nattrs,
		    .time = g->time,
		    .actor = {g->actor, g->actor_len},
		};
		int rc = sc_cache_apply(c, &ev, &err);
		if (rc)
			fail_msg("apply: %s", err.message);
	}
	free(g);
	assert_int_equal(sc_cache_promote(c), 0);
	return c;
}

/* ---- encode, restore, compare ------------------------------------------- */

static sc_snapshot_encoded *encode_cache(sc_cache *c, uint32_t per_chunk)
{
	sc_reader *rd;
	sc_error err;
	assert_int_equal(sc_reader_open(c, &rd, &err), 0);
	const sc_view *v = sc_reader_begin(rd);
	sc_snapshot_params p = {.entities_per_chunk = per_chunk,
				.created_at = 12345};
	sc_snapshot_encoded *enc = NULL;
	int rc = sc_snapshot_encode(v, &p, &enc, &err);
	if (rc)
		fail_msg("encode: %s", err.message);
	assert_int_equal(enc->entity_count, sc_view_len(v));
	assert_int_equal(enc->position, sc_view_position(v));
	sc_reader_close(rd);
	return enc;
}

/* Restore header + chunks into `c`'s pending version with sc_snapshot_load
 * (on one thread: the helper thread's path is test_snapshot_load's);
 * promote on success, discard on failure. Fewer chunks than the header
 * lists stand for a header whose chunk list was cut short while its entity
 * count was not. Returns the first error. */
static int restore(sc_cache *c, const sc_snapshot_blob *header,
		   const sc_snapshot_blob *chunks, uint32_t nchunks,
		   sc_error *err)
{
	sc_snapshot_header h;
	int rc = sc_snapshot_header_decode(header->data, header->len, &h, err);
	if (rc)
		return rc;
	if (nchunks < h.chunk_count)
		h.chunk_count = nchunks;
	const void **ptrs = calloc(nchunks + 1, sizeof *ptrs);
	size_t *lens = calloc(nchunks + 1, sizeof *lens);
	assert_non_null(ptrs);
	assert_non_null(lens);
	for (uint32_t i = 0; i < nchunks; i++) {
		ptrs[i] = chunks[i].data;
		lens[i] = chunks[i].len;
	}
	sc_snapshot_load_params p = {.no_thread = true};
	uint64_t total = 0;
	rc = sc_snapshot_load(&h, (const void *const *)ptrs, lens, c, &p,
			      &total, err);
	if (!rc)
		assert_int_equal(total, h.entity_count);
	free(ptrs);
	free(lens);
	sc_snapshot_header_clear(&h);
	if (!rc)
		rc = sc_cache_promote(c);
	if (rc)
		sc_cache_discard(c);
	return rc;
}

/* Every entity of `a` is in `b`, equal, and the counts match. */
static void assert_same_state(sc_cache *a, sc_cache *b)
{
	sc_reader *ra, *rb;
	assert_int_equal(sc_reader_open(a, &ra, NULL), 0);
	assert_int_equal(sc_reader_open(b, &rb, NULL), 0);
	const sc_view *va = sc_reader_begin(ra);
	const sc_view *vb = sc_reader_begin(rb);
	assert_int_equal(sc_view_len(va), sc_view_len(vb));
	sc_view_iter it;
	sc_view_iter_init(va, &it);
	const sc_entity *e;
	size_t n = 0;
	while ((e = sc_view_iter_next(&it))) {
		const sc_entity *f = sc_view_get(vb, sc_entity_id(e));
		assert_non_null(f);
		assert_true(sc_entity_equal(e, f));
		n++;
	}
	assert_int_equal(n, sc_view_len(vb));
	sc_reader_close(ra);
	sc_reader_close(rb);
}

static void roundtrip(uint64_t s, uint32_t n, uint32_t per_chunk)
{
	sc_cache *src = make_cache(s, n);
	sc_snapshot_encoded *enc = encode_cache(src, per_chunk);
	sc_cache *dst;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &dst, &err), 0);
	int rc =
	    restore(dst, &enc->header, enc->chunks, enc->chunk_count, &err);
	if (rc)
		fail_msg("restore (n=%u, per_chunk=%u): %s", n, per_chunk,
			 err.message);
	assert_same_state(src, dst);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
	sc_cache_destroy(dst);
}

static void test_roundtrip_random(void **state)
{
	(void)state;
	rng r = {seed};
	int rounds = short_run ? 4 : 20;
	for (int i = 0; i < rounds; i++) {
		uint32_t n = (uint32_t)rnd_below(&r, short_run ? 3000 : 20000);
		uint32_t per = (uint32_t)(1 + rnd_below(&r, 700));
		roundtrip(rnd(&r), n, per);
	}
	roundtrip(rnd(&r), short_run ? 10000 : 50000, 0); /* default chunks */
}

static void test_roundtrip_empty(void **state)
{
	(void)state;
	sc_cache *src = make_cache(seed, 0);
	sc_snapshot_encoded *enc = encode_cache(src, 0);
	assert_int_equal(enc->chunk_count, 0);
	assert_int_equal(enc->entity_count, 0);
	assert_int_equal(enc->bytes_raw, 0);
	sc_snapshot_header h;
	sc_error err;
	assert_int_equal(sc_snapshot_header_decode(enc->header.data,
						   enc->header.len, &h, &err),
			 0);
	assert_int_equal(h.chunk_count, 0);
	assert_int_equal(h.entity_count, 0);
	assert_int_equal(h.format_version, SC_SNAPSHOT_FORMAT_VERSION);
	assert_int_equal(h.created_at, 12345);
	assert_int_equal(sc_snapshot_check_total(&h, 0, &err), 0);
	assert_int_equal(sc_snapshot_check_total(&h, 1, &err), SC_ECORRUPT);
	sc_snapshot_header_clear(&h);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
	roundtrip(seed, 0, 0);
}

static void test_roundtrip_one(void **state)
{
	(void)state;
	for (uint64_t i = 0; i < 20; i++)
		roundtrip(seed + i, 1, 0);
}

/* Exactly N and N+1 entities with N per chunk: one full chunk, then a
 * second chunk of one. */
static void test_chunk_boundaries(void **state)
{
	(void)state;
	static const uint32_t sizes[] = {1, 2, 7, 64, 4096};
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		uint32_t n = sizes[i];
		for (uint32_t extra = 0; extra < 2; extra++) {
			sc_cache *c = make_cache(seed + n, n + extra);
			sc_snapshot_encoded *enc =
			    encode_cache(c, n == 4096 ? 0 : n);
			assert_int_equal(enc->chunk_count, 1 + extra);
			sc_snapshot_header h;
			assert_int_equal(
			    sc_snapshot_header_decode(
				enc->header.data, enc->header.len, &h, NULL),
			    0);
			assert_int_equal(h.chunk_entity_counts[0], n);
			if (extra)
				assert_int_equal(h.chunk_entity_counts[1], 1);
			uint64_t raw = 0;
			for (uint32_t k = 0; k < h.chunk_count; k++)
				raw += h.chunk_raw_sizes[k];
			assert_int_equal(raw, enc->bytes_raw);
			assert_int_equal(h.bytes_raw, enc->bytes_raw);
			sc_snapshot_header_clear(&h);
			sc_snapshot_encoded_free(enc);
			sc_cache_destroy(c);
			roundtrip(seed + n, n + extra, n == 4096 ? 0 : n);
		}
	}
}

/* ---- the hand-written protobuf writer against protobuf-c ---------------- */

static uint8_t *inflate_chunk(const sc_snapshot_blob *b, size_t *len)
{
	unsigned long long n = ZSTD_getFrameContentSize(b->data, b->len);
	assert_true(n != ZSTD_CONTENTSIZE_ERROR &&
		    n != ZSTD_CONTENTSIZE_UNKNOWN);
	uint8_t *raw = malloc(n ? n : 1);
	assert_non_null(raw);
	size_t got = ZSTD_decompress(raw, n, b->data, b->len);
	assert_false(ZSTD_isError(got));
	assert_int_equal(got, n);
	*len = got;
	return raw;
}

/* Our chunk bytes decode with protobuf-c and re-pack to the same bytes:
 * the writer produces protobuf-c's canonical encoding. */
static void test_wire_matches_protobuf_c(void **state)
{
	(void)state;
	sc_cache *c = make_cache(seed ^ 0x77, short_run ? 2000 : 10000);
	sc_snapshot_encoded *enc = encode_cache(c, 300);
	assert_true(enc->chunk_count > 1);
	for (uint32_t i = 0; i < enc->chunk_count; i++) {
		size_t len;
		uint8_t *raw = inflate_chunk(&enc->chunks[i], &len);
		Statecache__V1__SnapshotChunk *m =
		    statecache__v1__snapshot_chunk__unpack(NULL, len, raw);
		assert_non_null(m);
		size_t plen =
		    statecache__v1__snapshot_chunk__get_packed_size(m);
		assert_int_equal(plen, len);
		uint8_t *again = malloc(plen);
		assert_non_null(again);
		assert_int_equal(statecache__v1__snapshot_chunk__pack(m, again),
				 plen);
		assert_memory_equal(again, raw, len);
		free(again);
		statecache__v1__snapshot_chunk__free_unpacked(m, NULL);
		free(raw);
	}
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
}

/* Entities with more attributes than the encoder keeps at hand (it reads
 * the rest twice) encode byte-exact and round-trip. */
static void test_many_attrs(void **state)
{
	(void)state;
	sc_cache *src = make_cache(seed ^ 0x55, 10);
	char names[80][4];
	sc_attr a[80];
	for (int i = 0; i < 80; i++) {
		names[i][0] = 'a';
		names[i][1] = (char)('0' + i / 10);
		names[i][2] = (char)('0' + i % 10);
		names[i][3] = '\0';
		a[i].name = (sc_str){names[i], 3};
		a[i].value.type = (sc_value_type)(1 + i % 5);
		a[i].value.u.i = i * 1000003;
		if (a[i].value.type == SC_VALUE_STRING ||
		    a[i].value.type == SC_VALUE_BYTES)
			a[i].value.u.s = (sc_str){names[i], 3};
		if (a[i].value.type == SC_VALUE_BOOL)
			a[i].value.u.b = i & 1;
	}
	sc_event ev = {.position = 100,
		       .entity = {"wide", 4},
		       .type = SC_EVENT_SET,
		       .attrs = a,
		       .nattrs = 80,
		       .time = -5,
		       .actor = {"x", 1}};
	sc_error err;
	assert_int_equal(sc_cache_apply(src, &ev, &err), 0);
	assert_int_equal(sc_cache_promote(src), 0);
	sc_snapshot_encoded *enc = encode_cache(src, 4);
	for (uint32_t i = 0; i < enc->chunk_count; i++) {
		size_t len;
		uint8_t *raw = inflate_chunk(&enc->chunks[i], &len);
		Statecache__V1__SnapshotChunk *m =
		    statecache__v1__snapshot_chunk__unpack(NULL, len, raw);
		assert_non_null(m);
		uint8_t *again = malloc(len);
		assert_int_equal(statecache__v1__snapshot_chunk__pack(m, again),
				 len);
		assert_memory_equal(again, raw, len);
		free(again);
		statecache__v1__snapshot_chunk__free_unpacked(m, NULL);
		free(raw);
	}
	sc_cache *dst;
	assert_int_equal(sc_cache_create(NULL, &dst, NULL), 0);
	assert_int_equal(
	    restore(dst, &enc->header, enc->chunks, enc->chunk_count, &err), 0);
	assert_same_state(src, dst);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(src);
	sc_cache_destroy(dst);
}

/* The helper-thread compressor and inline compression give the same
 * bytes. */
static void test_inline_same_bytes(void **state)
{
	(void)state;
	sc_cache *c = make_cache(seed ^ 0x44, 1500);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(c, &rd, NULL), 0);
	const sc_view *v = sc_reader_begin(rd);
	sc_snapshot_encoded *a, *b;
	sc_snapshot_params p = {.entities_per_chunk = 100, .created_at = 7};
	assert_int_equal(sc_snapshot_encode(v, &p, &a, NULL), 0);
	p.compress_inline = true;
	assert_int_equal(sc_snapshot_encode(v, &p, &b, NULL), 0);
	assert_int_equal(a->chunk_count, 15);
	assert_int_equal(a->chunk_count, b->chunk_count);
	assert_int_equal(a->header.len, b->header.len);
	assert_memory_equal(a->header.data, b->header.data, a->header.len);
	for (uint32_t i = 0; i < a->chunk_count; i++) {
		assert_int_equal(a->chunks[i].len, b->chunks[i].len);
		assert_memory_equal(a->chunks[i].data, b->chunks[i].data,
				    a->chunks[i].len);
	}
	sc_snapshot_encoded_free(a);
	sc_snapshot_encoded_free(b);
	sc_reader_close(rd);
	sc_cache_destroy(c);
}

/* ---- hostile bytes ------------------------------------------------------- */

/* A target cache with a small promoted state of its own; after a failed
 * restore it must still equal `ref`. */
typedef struct target {
	sc_cache *c, *ref;
} target;

static void target_init(target *t)
{
	t->c = make_cache(seed ^ 0xabc, 50);
	t->ref = make_cache(seed ^ 0xabc, 50);
}

static void target_check_unchanged(target *t)
{
	assert_false(sc_cache_pending(t->c));
	assert_same_state(t->ref, t->c);
}

static void target_free(target *t)
{
	sc_cache_destroy(t->c);
	sc_cache_destroy(t->ref);
}

static sc_snapshot_blob blob_dup(const sc_snapshot_blob *b)
{
	sc_snapshot_blob d = {malloc(b->len ? b->len : 1), b->len};
	assert_non_null(d.data);
	memcpy(d.data, b->data, b->len);
	return d;
}

static int is_clean_error(int rc, const sc_error *err)
{
	return (rc == SC_ECORRUPT || rc == SC_EVERSION || rc == SC_ETOOBIG) &&
	       err->code == rc && err->message[0];
}

static void test_corrupt_header(void **state)
{
	(void)state;
	rng r = {seed ^ 0x11};
	sc_cache *c = make_cache(seed, 500);
	sc_snapshot_encoded *enc = encode_cache(c, 50);
	target t;
	target_init(&t);
	sc_error err;
	int iters = short_run ? 300 : 3000;
	for (int it = 0; it < iters; it++) {
		sc_snapshot_blob h = blob_dup(&enc->header);
		size_t off = rnd_below(&r, h.len);
		h.data[off] ^= (uint8_t)(1 + rnd_below(&r, 255));
		int rc = restore(t.c, &h, enc->chunks, enc->chunk_count, &err);
		assert_true(is_clean_error(rc, &err));
		free(h.data);
	}
	/* Truncated at every length, and extended by a byte. */
	for (size_t len = 0; len < enc->header.len; len++) {
		sc_snapshot_header hd;
		int rc =
		    sc_snapshot_header_decode(enc->header.data, len, &hd, &err);
		assert_true(is_clean_error(rc, &err));
		assert_null(hd.chunk_checksums);
	}
	sc_snapshot_blob longer = {malloc(enc->header.len + 1),
				   enc->header.len + 1};
	memcpy(longer.data, enc->header.data, enc->header.len);
	longer.data[enc->header.len] = 0;
	assert_int_equal(
	    restore(t.c, &longer, enc->chunks, enc->chunk_count, &err),
	    SC_ECORRUPT);
	free(longer.data);
	target_check_unchanged(&t);
	target_free(&t);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
}

/* Rewrite the version field and re-seal the record's checksum, so only the
 * version is wrong. */
static void reseal(sc_snapshot_blob *h)
{
	uint64_t x = XXH3_64bits(h->data, h->len - 8);
	for (int i = 0; i < 8; i++)
		h->data[h->len - 8 + i] = (uint8_t)(x >> (56 - 8 * i));
}

static void test_version_and_magic(void **state)
{
	(void)state;
	sc_cache *c = make_cache(seed, 10);
	sc_snapshot_encoded *enc = encode_cache(c, 0);
	sc_error err;
	sc_snapshot_header hd;
	sc_snapshot_blob h = blob_dup(&enc->header);
	h.data[11] = SC_SNAPSHOT_FORMAT_VERSION + 1;
	reseal(&h);
	assert_int_equal(sc_snapshot_header_decode(h.data, h.len, &hd, &err),
			 SC_EVERSION);
	assert_non_null(strstr(err.message, "newer"));
	h.data[8] = 0x7f; /* a far future version */
	reseal(&h);
	assert_int_equal(sc_snapshot_header_decode(h.data, h.len, &hd, &err),
			 SC_EVERSION);
	memset(h.data + 8, 0, 4);
	reseal(&h);
	assert_int_equal(sc_snapshot_header_decode(h.data, h.len, &hd, &err),
			 SC_ECORRUPT);
	free(h.data);
	h = blob_dup(&enc->header);
	h.data[0] = 'X';
	reseal(&h);
	assert_int_equal(sc_snapshot_header_decode(h.data, h.len, &hd, &err),
			 SC_ECORRUPT);
	assert_non_null(strstr(err.message, "magic"));
	free(h.data);
	/* A chunk given as a header. */
	assert_int_equal(sc_snapshot_header_decode(enc->chunks[0].data,
						   enc->chunks[0].len, &hd,
						   &err),
			 SC_ECORRUPT);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
}

static int count_entity(void *ctx, const sc_snapshot_entity *e)
{
	(void)e;
	(*(uint64_t *)ctx)++;
	return 0;
}

static void test_corrupt_chunks(void **state)
{
	(void)state;
	rng r = {seed ^ 0x22};
	sc_cache *c = make_cache(seed ^ 3, 600);
	sc_snapshot_encoded *enc = encode_cache(c, 100);
	assert_true(enc->chunk_count >= 3);
	target t;
	target_init(&t);
	sc_error err;
	uint32_t nc = enc->chunk_count;
	sc_snapshot_blob *chunks = malloc(nc * sizeof *chunks);
	int iters = short_run ? 200 : 2000;
	for (int it = 0; it < iters; it++) {
		memcpy(chunks, enc->chunks, nc * sizeof *chunks);
		uint32_t k = (uint32_t)rnd_below(&r, nc);
		sc_snapshot_blob bad = blob_dup(&enc->chunks[k]);
		switch (it % 3) {
		case 0:
			bad.data[rnd_below(&r, bad.len)] ^=
			    (uint8_t)(1 + rnd_below(&r, 255));
			break;
		case 1:
			bad.len = rnd_below(&r, bad.len);
			break;
		default: {
			/* Swap chunk k with another. */
			uint32_t j =
			    (uint32_t)((k + 1 + rnd_below(&r, nc - 1)) % nc);
			chunks[j] = bad;
			bad = blob_dup(&enc->chunks[j]);
			break;
		}
		}
		chunks[k] = bad;
		int rc = restore(t.c, &enc->header, chunks, nc, &err);
		assert_int_equal(rc, SC_ECORRUPT);
		assert_int_equal(err.code, SC_ECORRUPT);
		free(bad.data);
		if (it % 3 == 2) {
			for (uint32_t j = 0; j < nc; j++)
				if (chunks[j].data != enc->chunks[j].data &&
				    j != k)
					free(chunks[j].data);
		}
	}
	/* A missing last chunk: every chunk verifies, the total does not. */
	assert_int_equal(restore(t.c, &enc->header, enc->chunks, nc - 1, &err),
			 SC_ECORRUPT);
	assert_non_null(strstr(err.message, "entities"));
	target_check_unchanged(&t);

	/* Out-of-range index. */
	sc_snapshot_header h;
	assert_int_equal(sc_snapshot_header_decode(enc->header.data,
						   enc->header.len, &h, &err),
			 0);
	uint64_t seen = 0;
	assert_int_equal(sc_snapshot_chunk_decode(
			     &h, nc, enc->chunks[0].data, enc->chunks[0].len,
			     count_entity, &seen, NULL, &err),
			 SC_EINVAL);
	/* The right chunk under the wrong index. */
	assert_int_equal(sc_snapshot_chunk_decode(
			     &h, 1, enc->chunks[0].data, enc->chunks[0].len,
			     count_entity, &seen, NULL, &err),
			 SC_ECORRUPT);
	assert_non_null(strstr(err.message, "checksum"));
	assert_int_equal(seen, 0);
	sc_snapshot_header_clear(&h);
	free(chunks);
	target_free(&t);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
}

/* A chunk damaged *and* given a matching checksum (as a hostile writer
 * would) still never loads wrong data: zstd's frame checksum, the size
 * checks or the protobuf checks catch it, or the damage was in bits that
 * do not change the content. */

static void test_corrupt_chunks_resealed(void **state)
{
	(void)state;
	rng r = {seed ^ 0x33};
	sc_cache *c = make_cache(seed ^ 5, 300);
	sc_snapshot_encoded *enc = encode_cache(c, 100);
	sc_snapshot_header h;
	assert_int_equal(sc_snapshot_header_decode(enc->header.data,
						   enc->header.len, &h, NULL),
			 0);
	int iters = short_run ? 300 : 3000;
	int caught = 0;
	for (int it = 0; it < iters; it++) {
		uint32_t k = (uint32_t)rnd_below(&r, enc->chunk_count);
		sc_snapshot_blob bad = blob_dup(&enc->chunks[k]);
		bad.data[rnd_below(&r, bad.len)] ^=
		    (uint8_t)(1 + rnd_below(&r, 255));
		uint64_t saved = h.chunk_checksums[k];
		h.chunk_checksums[k] = XXH3_64bits(bad.data, bad.len);
		sc_error err;
		uint64_t n = 0, got = 0;
		int rc = sc_snapshot_chunk_decode(&h, k, bad.data, bad.len,
						  count_entity, &n, &got, &err);
		if (rc) {
			assert_true(is_clean_error(rc, &err));
			assert_int_equal(n, 0); /* nothing reached fn */
			caught++;
		} else {
			/* Same content as the original chunk. */
			size_t l1, l2;
			uint8_t *a = inflate_chunk(&bad, &l1);
			uint8_t *b = inflate_chunk(&enc->chunks[k], &l2);
			assert_int_equal(l1, l2);
			assert_memory_equal(a, b, l1);
			free(a);
			free(b);
			assert_int_equal(got, h.chunk_entity_counts[k]);
		}
		h.chunk_checksums[k] = saved;
		free(bad.data);
	}
	assert_true(caught > iters / 2);
	sc_snapshot_header_clear(&h);
	sc_snapshot_encoded_free(enc);
	sc_cache_destroy(c);
}

/* ---- crafted messages that pass every checksum --------------------------- */

/* Build a one-chunk snapshot around protobuf bytes `raw` and try to decode
 * it. */
static int decode_crafted(const uint8_t *raw, size_t len, uint64_t position,
			  uint64_t claimed, sc_error *err)
{
	size_t bound = ZSTD_compressBound(len);
	uint8_t *z = malloc(bound);
	size_t zl = ZSTD_compress(z, bound, raw, len, 3);
	assert_false(ZSTD_isError(zl));
	uint64_t sum = XXH3_64bits(z, zl), raw_size = len, count = claimed;
	sc_snapshot_header h = {
	    .format_version = 1,
	    .position = position,
	    .entity_count = claimed,
	    .chunk_count = 1,
	    .chunk_checksums = &sum,
	    .chunk_raw_sizes = &raw_size,
	    .chunk_entity_counts = &count,
	};
	uint64_t n = 0;
	int rc =
	    sc_snapshot_chunk_decode(&h, 0, z, zl, count_entity, &n, NULL, err);
	free(z);
	if (rc)
		assert_int_equal(n, 0);
	return rc;
}

typedef struct crafted {
	Statecache__V1__SnapshotChunk chunk;
	Statecache__V1__EntityState st, *stp;
	Statecache__V1__Attr at[2], *atp[2];
	Statecache__V1__Value va[2];
} crafted;

static void crafted_init(crafted *m)
{
	statecache__v1__snapshot_chunk__init(&m->chunk);
	statecache__v1__entity_state__init(&m->st);
	m->stp = &m->st;
	m->chunk.n_entities = 1;
	m->chunk.entities = &m->stp;
	m->st.id.data = (uint8_t *)"e1";
	m->st.id.len = 2;
	m->st.position = 5;
	for (int i = 0; i < 2; i++) {
		statecache__v1__attr__init(&m->at[i]);
		statecache__v1__value__init(&m->va[i]);
		m->atp[i] = &m->at[i];
		m->at[i].value = &m->va[i];
		m->va[i].kind_case = STATECACHE__V1__VALUE__KIND_INT_VALUE;
		m->va[i].int_value = i;
	}
	m->at[0].name.data = (uint8_t *)"a";
	m->at[0].name.len = 1;
	m->at[1].name.data = (uint8_t *)"b";
	m->at[1].name.len = 1;
	m->st.n_attrs = 2;
	m->st.attrs = m->atp;
}

static int crafted_decode(crafted *m, uint64_t position, uint64_t claimed,
			  sc_error *err)
{
	size_t len = statecache__v1__snapshot_chunk__get_packed_size(&m->chunk);
	uint8_t *raw = malloc(len ? len : 1);
	statecache__v1__snapshot_chunk__pack(&m->chunk, raw);
	int rc = decode_crafted(raw, len, position, claimed, err);
	free(raw);
	return rc;
}

static void test_crafted_chunks(void **state)
{
	(void)state;
	crafted m;
	sc_error err;
	crafted_init(&m);
	assert_int_equal(crafted_decode(&m, 5, 1, &err), 0);
	/* entity count differs from the header's */
	assert_int_equal(crafted_decode(&m, 5, 2, &err), SC_ECORRUPT);
	/* position beyond the snapshot's */
	assert_int_equal(crafted_decode(&m, 4, 1, &err), SC_ECORRUPT);
	/* null value */
	m.va[1].kind_case = STATECACHE__V1__VALUE__KIND__NOT_SET;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	crafted_init(&m);
	/* missing Value message */
	m.at[0].value = NULL;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	crafted_init(&m);
	/* unsorted, then duplicate names */
	m.at[0].name.data = (uint8_t *)"c";
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	m.at[0].name.data = (uint8_t *)"b";
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	crafted_init(&m);
	/* empty id, over-long id */
	m.st.id.len = 0;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	static uint8_t big[SC_ENTITY_ID_MAX + 1];
	m.st.id.data = big;
	m.st.id.len = sizeof big;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	crafted_init(&m);
	/* empty name */
	m.at[0].name.len = 0;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);
	crafted_init(&m);
	/* over-long updated_by */
	static uint8_t actor[SC_SNAPSHOT_ACTOR_MAX + 1];
	m.st.updated_by.data = actor;
	m.st.updated_by.len = sizeof actor;
	assert_int_equal(crafted_decode(&m, 5, 1, &err), SC_ECORRUPT);

	/* Hand-made bytes: a string value holding a NUL byte, which a C string
	 * would cut short. entities{ id:"e" attrs{ name:"a" value{ s:"x\0y" }}}
	 */
	static const uint8_t nul_string[] = {0x0a, 0x0f, 0x0a, 0x01, 'e',  0x12,
					     0x0a, 0x0a, 0x01, 'a',  0x12, 0x05,
					     0x0a, 0x03, 'x',  0x00, 'y'};
	uint8_t fixed[sizeof nul_string];
	memcpy(fixed, nul_string, sizeof fixed);
	assert_int_equal(decode_crafted(fixed, sizeof fixed, 5, 1, &err),
			 SC_ECORRUPT);
	/* The same without the NUL decodes (the message itself is sound). */
	fixed[15] = 'z';
	assert_int_equal(decode_crafted(fixed, sizeof fixed, 5, 1, &err), 0);
	/* An unknown field appended to the entity (field 15, varint) is
	 * skipped, as protobuf readers do: a later writer may add fields that
	 * this reader can ignore without a new format version. */
	static const uint8_t unknown[] = {0x0a, 0x05, 0x0a, 0x01,
					  'e',	0x78, 0x01};
	assert_int_equal(decode_crafted(unknown, sizeof unknown, 5, 1, &err),
			 0);
	/* Strictness where protobuf would be lenient, and broken framing. */
	static const struct {
		const char *what;
		uint8_t len;
		uint8_t b[16];
	} bad[] = {
	    {"id twice", 8, {0x0a, 0x06, 0x0a, 0x01, 'e', 0x0a, 0x01, 'f'}},
	    {"two kinds",
	     16,
	     {0x0a, 0x0e, 0x0a, 0x01, 'e', 0x12, 0x09, 0x0a, 0x01, 'a', 0x12,
	      0x04, 0x10, 0x02, 0x20, 0x01}},
	    {"bool 2",
	     14,
	     {0x0a, 0x0c, 0x0a, 0x01, 'e', 0x12, 0x07, 0x0a, 0x01, 'a', 0x12,
	      0x02, 0x20, 0x02}},
	    {"id as varint", 4, {0x0a, 0x02, 0x08, 0x01}},
	    {"length past the end", 5, {0x0a, 0x03, 0x0a, 0x05, 'e'}},
	    {"entity past the end", 3, {0x0a, 0x09, 0x0a}},
	    {"truncated varint", 7, {0x0a, 0x05, 0x0a, 0x01, 'e', 0x28, 0x80}},
	    {"group wire type", 6, {0x0a, 0x04, 0x0a, 0x01, 'e', 0x7b}},
	    {"field 0", 6, {0x0a, 0x04, 0x0a, 0x01, 'e', 0x00}},
	    {"updated_at cut", 8, {0x0a, 0x06, 0x0a, 0x01, 'e', 0x19, 1, 2}},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		int rc = decode_crafted(bad[i].b, bad[i].len, 5, 1, &err);
		if (rc != SC_ECORRUPT)
			fail_msg("%s: rc %d", bad[i].what, rc);
	}
	/* Garbage that is not protobuf. */
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	assert_int_equal(decode_crafted(junk, sizeof junk, 5, 1, &err),
			 SC_ECORRUPT);
}

/* A zstd frame without a content size, and one whose content size is
 * larger than the header says, are refused before decompression. */
static void test_frame_sizes(void **state)
{
	(void)state;
	static const uint8_t raw[] = {0x0a, 0x03, 0x0a, 0x01, 'e'};
	uint8_t z[256];
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	ZSTD_inBuffer in = {raw, sizeof raw, 0};
	ZSTD_outBuffer out = {z, sizeof z, 0};
	size_t left = ZSTD_compressStream2(cc, &out, &in, ZSTD_e_end);
	assert_int_equal(left, 0);
	ZSTD_freeCCtx(cc);
	uint64_t sum = XXH3_64bits(z, out.pos), raw_size = sizeof raw,
		 count = 1;
	sc_snapshot_header h = {.format_version = 1,
				.position = 1,
				.entity_count = 1,
				.chunk_count = 1,
				.chunk_checksums = &sum,
				.chunk_raw_sizes = &raw_size,
				.chunk_entity_counts = &count};
	sc_error err;
	uint64_t n = 0;
	assert_int_equal(sc_snapshot_chunk_decode(&h, 0, z, out.pos,
						  count_entity, &n, NULL, &err),
			 SC_ECORRUPT);
	assert_non_null(strstr(err.message, "content size"));
	size_t zl = ZSTD_compress(z, sizeof z, raw, sizeof raw, 1);
	sum = XXH3_64bits(z, zl);
	raw_size = sizeof raw - 1; /* header claims less than the frame */
	assert_int_equal(sc_snapshot_chunk_decode(&h, 0, z, zl, count_entity,
						  &n, NULL, &err),
			 SC_ECORRUPT);
	raw_size = sizeof raw;
	assert_int_equal(sc_snapshot_chunk_decode(&h, 0, z, zl, count_entity,
						  &n, NULL, &err),
			 0);
	assert_int_equal(n, 1);
	/* Trailing bytes after the frame. */
	z[zl] = 0;
	sum = XXH3_64bits(z, zl + 1);
	assert_int_equal(sc_snapshot_chunk_decode(&h, 0, z, zl + 1,
						  count_entity, &n, NULL, &err),
			 SC_ECORRUPT);
}

/* ---- encoder input checks ----------------------------------------------- */

static void test_encode_rejects(void **state)
{
	(void)state;
	sc_cache *c = make_cache(seed, 3);
	sc_reader *rd;
	sc_error err;
	assert_int_equal(sc_reader_open(c, &rd, &err), 0);
	const sc_view *v = sc_reader_begin(rd);
	sc_snapshot_encoded *enc = (void *)1;
	sc_snapshot_params p = {.entities_per_chunk =
				    SC_SNAPSHOT_CHUNK_ENTITIES_MAX + 1};
	assert_int_equal(sc_snapshot_encode(v, &p, &enc, &err), SC_EINVAL);
	assert_null(enc);
	p = (sc_snapshot_params){.zstd_level = 1000};
	assert_int_equal(sc_snapshot_encode(v, &p, &enc, &err), SC_EINVAL);
	assert_int_equal(sc_snapshot_encode(NULL, NULL, &enc, &err), SC_EINVAL);
	sc_reader_end(rd);

	/* The cache takes a string value with a NUL byte; the snapshot cannot
	 * hold one (a protobuf string), and says so instead of cutting it. */
	sc_attr a = {{"s", 1}, {.type = SC_VALUE_STRING}};
	a.value.u.s = (sc_str){"x\0y", 3};
	sc_event ev = {.position = 10,
		       .entity = {"nul", 3},
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1};
	assert_int_equal(sc_cache_apply(c, &ev, &err), 0);
	assert_int_equal(sc_cache_promote(c), 0);
	v = sc_reader_begin(rd);
	assert_int_equal(sc_snapshot_encode(v, NULL, &enc, &err), SC_EINVAL);
	assert_null(enc);
	assert_non_null(strstr(err.message, "NUL"));
	sc_reader_close(rd);
	sc_cache_destroy(c);
}

/* ---- allocation failures ------------------------------------------------- */

static void test_alloc_fail_encode(void **state)
{
	(void)state;
	sc_cache *c = make_cache(seed ^ 9, 700);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(c, &rd, NULL), 0);
	const sc_view *v = sc_reader_begin(rd);
	for (int mode = 0; mode < 2; mode++) {
		sc_snapshot_params p = {.entities_per_chunk = 100,
					.compress_inline = mode == 1};
		long failures = 0;
		for (long n = 0;; n++) {
			sc_snapshot_encoded *enc = NULL;
			sc_error err;
			sc_testing_fail_alloc_after(n);
			int rc = sc_snapshot_encode(v, &p, &enc, &err);
			sc_testing_fail_alloc_after(-1);
			if (rc == 0) {
				assert_int_equal(enc->entity_count, 700);
				sc_snapshot_encoded_free(enc);
				break;
			}
			assert_int_equal(rc, ENOMEM);
			assert_int_equal(err.code, ENOMEM);
			assert_null(enc);
			failures++;
			assert_true(n < 100000);
		}
		assert_true(failures > 5);
	}
	sc_reader_close(rd);
	sc_cache_destroy(c);
}

static void test_alloc_fail_restore(void **state)
{
	(void)state;
	sc_cache *src = make_cache(seed ^ 10, 400);
	sc_snapshot_encoded *enc = encode_cache(src, 100);
	target t;
	target_init(&t);
	long failures = 0;
	for (long n = 0;; n += (n < 200 ? 1 : 7)) {
		sc_error err;
		sc_testing_fail_alloc_after(n);
		int rc = restore(t.c, &enc->header, enc->chunks,
				 enc->chunk_count, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc == 0)
			break;
		assert_int_equal(rc, ENOMEM);
		target_check_unchanged(&t);
		failures++;
		assert_true(n < 1000000);
	}
	assert_true(failures > 5);
	/* The restore that succeeded replaced the target's state with the
	 * snapshot's on top of the target's own 50 entities. */
	sc_snapshot_encoded_free(enc);
	sc_cache *fresh;
	assert_int_equal(sc_cache_create(NULL, &fresh, NULL), 0);
	enc = encode_cache(src, 100);
	sc_error err;
	assert_int_equal(
	    restore(fresh, &enc->header, enc->chunks, enc->chunk_count, &err),
	    0);
	assert_same_state(src, fresh);
	sc_cache_destroy(fresh);
	sc_snapshot_encoded_free(enc);
	target_free(&t);
	sc_cache_destroy(src);
}

int main(void)
{
	seed = tk_seed("test_snapshot");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_empty),
	    cmocka_unit_test(test_roundtrip_one),
	    cmocka_unit_test(test_chunk_boundaries),
	    cmocka_unit_test(test_roundtrip_random),
	    cmocka_unit_test(test_wire_matches_protobuf_c),
	    cmocka_unit_test(test_inline_same_bytes),
	    cmocka_unit_test(test_many_attrs),
	    cmocka_unit_test(test_corrupt_header),
	    cmocka_unit_test(test_version_and_magic),
	    cmocka_unit_test(test_corrupt_chunks),
	    cmocka_unit_test(test_corrupt_chunks_resealed),
	    cmocka_unit_test(test_crafted_chunks),
	    cmocka_unit_test(test_frame_sizes),
	    cmocka_unit_test(test_encode_rejects),
	    cmocka_unit_test(test_alloc_fail_encode),
	    cmocka_unit_test(test_alloc_fail_restore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
