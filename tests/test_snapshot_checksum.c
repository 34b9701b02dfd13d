/*
 * The snapshot format's own chunk checksum (snapshot/FORMAT.md: the header
 * holds the XXH3-64 of every stored chunk) is checked on restore, and is
 * the check that rejects these chunks: each one is a valid zstd frame with
 * its content size and frame checksum, holding a protobuf message that
 * passes every other check, so neither zstd nor the size or message checks
 * can catch it.
 *
 * - A chunk whose payload was altered and compressed again (re-sealed):
 *   its bytes no longer have the checksum the header records.
 * - A header whose record of the chunk's checksum was altered (and whose
 *   own record checksum was computed again): the chunk is intact, the
 *   recorded checksum is not its own.
 *
 * Each is shown to decode once the header records the chunk's real
 * checksum, so only that comparison can refuse it; the decoder must refuse
 * it with SC_ECORRUPT and the message of that check, and a store must skip
 * the snapshot with a warning saying so and replay the log instead.
 */
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
#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

/* What the decoder says when the stored bytes do not have the recorded
 * checksum. */
#define CHECKSUM_MESSAGE "checksum mismatch"

#define NENT 40

/* Event k: entity "c<k>" with a string value holding a marker that a test
 * can find in the decompressed chunk and change without breaking it. */
typedef struct marked {
	sc_event ev;
	sc_attr attrs[2];
	char id[16];
	char text[32];
} marked;

static void marked_event(unsigned k, marked *m)
{
	memset(m, 0, sizeof *m);
	int n = snprintf(m->id, sizeof m->id, "c%u", k);
	int t = snprintf(m->text, sizeof m->text, "mark-AAAA-%04u", k);
	m->attrs[0] =
	    (sc_attr){{"text", 4},
		      {.type = SC_VALUE_STRING, .u.s = {m->text, (size_t)t}}};
	m->attrs[1] =
	    (sc_attr){{"n", 1}, {.type = SC_VALUE_INT, .u.i = (int64_t)k}};
	m->ev = (sc_event){.position = k + 1,
			   .entity = {m->id, (size_t)n},
			   .type = SC_EVENT_SET,
			   .attrs = m->attrs,
			   .nattrs = 2,
			   .time = (int64_t)k + 100,
			   .actor = {"writer", 6}};
}

/* ---- helpers ------------------------------------------------------------- */

/* Decompress one chunk record (a zstd frame with its content size). */
static uint8_t *inflate_chunk(const uint8_t *z, size_t zlen, size_t *len)
{
	unsigned long long n = ZSTD_getFrameContentSize(z, zlen);
	assert_true(n != ZSTD_CONTENTSIZE_ERROR &&
		    n != ZSTD_CONTENTSIZE_UNKNOWN);
	uint8_t *raw = malloc(n ? n : 1);
	assert_non_null(raw);
	size_t got = ZSTD_decompress(raw, n, z, zlen);
	assert_false(ZSTD_isError(got));
	assert_int_equal(got, n);
	*len = (size_t)n;
	return raw;
}

/* Compress `raw` into a frame as the encoder writes them: content size and
 * frame checksum present. */
static uint8_t *seal_frame(const uint8_t *raw, size_t len, size_t *zlen)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	assert_non_null(cc);
	assert_false(
	    ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1)));
	assert_false(ZSTD_isError(
	    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1)));
	/* Another level than the encoder's: other bytes even for the
	 * same content. */
	assert_false(ZSTD_isError(
	    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1)));
	size_t cap = ZSTD_compressBound(len);
	uint8_t *z = malloc(cap);
	assert_non_null(z);
	size_t n = ZSTD_compress2(cc, z, cap, raw, len);
	assert_false(ZSTD_isError(n));
	ZSTD_freeCCtx(cc);
	*zlen = n;
	return z;
}

/* Change every "AAAA" marker in `raw` to "BBBB" (same length, valid
 * UTF-8, no NUL): the message stays well formed. Returns the count. */
static size_t alter_markers(uint8_t *raw, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i + 4 <= len; i++) {
		if (memcmp(raw + i, "AAAA", 4) == 0) {
			memcpy(raw + i, "BBBB", 4);
			n++;
		}
	}
	return n;
}

/* The chunk re-sealed around altered content: a valid zstd frame (its own
 * checksum and the header's raw size hold) with other bytes. */
static uint8_t *resealed_altered(const uint8_t *chunk, size_t len,
				 uint64_t raw_size, size_t *out_len)
{
	size_t rl;
	uint8_t *raw = inflate_chunk(chunk, len, &rl);
	assert_int_equal(rl, raw_size);
	assert_true(alter_markers(raw, rl) > 0);
	uint8_t *z = seal_frame(raw, rl, out_len);
	free(raw);
	/* zstd accepts the frame: content size present and equal to the
	 * header's raw size, frame checksum verified. */
	size_t again;
	uint8_t *check = inflate_chunk(z, *out_len, &again);
	assert_int_equal(again, raw_size);
	free(check);
	return z;
}

typedef struct seen {
	size_t entities, altered;
} seen;

static int count_entity(void *ctx, const sc_snapshot_entity *e)
{
	seen *s = ctx;
	s->entities++;
	for (size_t i = 0; i < e->nattrs; i++) {
		sc_str v = e->attrs[i].value.u.s;
		if (e->attrs[i].value.type == SC_VALUE_STRING && v.len >= 9 &&
		    memcmp(v.ptr, "mark-BBBB", 9) == 0)
			s->altered++;
	}
	return 0;
}

/* A cache of NENT marked entities, encoded as one chunk. */
static sc_snapshot_encoded *encode_marked(void)
{
	sc_cache *c;
	assert_int_equal(sc_cache_create(NULL, &c, NULL), 0);
	for (unsigned k = 0; k < NENT; k++) {
		marked m;
		marked_event(k, &m);
		assert_int_equal(sc_cache_apply(c, &m.ev, NULL), 0);
	}
	assert_int_equal(sc_cache_promote(c), 0);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(c, &rd, NULL), 0);
	sc_snapshot_params p = {.created_at = 1};
	sc_snapshot_encoded *enc = NULL;
	sc_error err;
	int rc = sc_snapshot_encode(sc_reader_begin(rd), &p, &enc, &err);
	if (rc)
		fail_msg("encode: %s", err.message);
	sc_reader_end(rd);
	sc_reader_close(rd);
	sc_cache_destroy(c);
	assert_int_equal(enc->chunk_count, 1);
	return enc;
}

/* Decode chunk 0; on failure, nothing may have reached the callback. */
static int decode_chunk(const sc_snapshot_header *h, const uint8_t *bytes,
			size_t len, seen *s, sc_error *err)
{
	memset(s, 0, sizeof *s);
	int rc = sc_snapshot_chunk_decode(h, 0, bytes, len, count_entity, s,
					  NULL, err);
	if (rc)
		assert_int_equal(s->entities, 0);
	return rc;
}

static void assert_checksum_refusal(int rc, const sc_error *err)
{
	assert_int_equal(rc, SC_ECORRUPT);
	assert_int_equal(err->code, SC_ECORRUPT);
	if (!strstr(err->message, CHECKSUM_MESSAGE))
		fail_msg("refused by another check: %s", err->message);
	assert_non_null(strstr(err->message, "chunk 0 of 1"));
}

/* ---- the decoder --------------------------------------------------------- */

static void test_resealed_chunk_is_refused(void **state)
{
	(void)state;
	sc_snapshot_encoded *enc = encode_marked();
	sc_snapshot_header h;
	assert_int_equal(sc_snapshot_header_decode(enc->header.data,
						   enc->header.len, &h, NULL),
			 0);
	size_t zl;
	uint8_t *z = resealed_altered(enc->chunks[0].data, enc->chunks[0].len,
				      h.chunk_raw_sizes[0], &zl);

	/* Only the format's checksum tells this chunk from the real one. */
	sc_error err;
	seen s;
	assert_checksum_refusal(decode_chunk(&h, z, zl, &s, &err), &err);

	/* With the header recording the new bytes' checksum, every other
	 * check passes and the altered values come out. */
	uint64_t saved = h.chunk_checksums[0];
	h.chunk_checksums[0] = XXH3_64bits(z, zl);
	assert_int_equal(decode_chunk(&h, z, zl, &s, &err), 0);
	assert_int_equal(s.entities, NENT);
	assert_int_equal(s.altered, NENT);
	h.chunk_checksums[0] = saved;

	/* The original chunk still decodes, unaltered. */
	assert_int_equal(
	    decode_chunk(&h, enc->chunks[0].data, enc->chunks[0].len, &s, &err),
	    0);
	assert_int_equal(s.entities, NENT);
	assert_int_equal(s.altered, 0);
	free(z);
	sc_snapshot_header_clear(&h);
	sc_snapshot_encoded_free(enc);
}

/* The header record: magic, version, length, the protobuf header, then
 * XXH3-64 of everything before it, big-endian (FORMAT.md). */
static void reseal_header(uint8_t *rec, size_t len)
{
	uint64_t sum = XXH3_64bits(rec, len - 8);
	for (int i = 7; i >= 0; i--, sum >>= 8)
		rec[len - 8 + (size_t)i] = (uint8_t)sum;
}

static void test_altered_recorded_checksum_is_refused(void **state)
{
	(void)state;
	sc_snapshot_encoded *enc = encode_marked();
	uint64_t real = XXH3_64bits(enc->chunks[0].data, enc->chunks[0].len);
	/* chunk_checksums is a repeated fixed64: the value little-endian in
	 * the protobuf message. */
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(real >> (8 * i));
	size_t len = enc->header.len;
	uint8_t *rec = malloc(len);
	assert_non_null(rec);
	memcpy(rec, enc->header.data, len);
	uint8_t *at = memmem(rec + 16, len - 24, le, 8);
	assert_non_null(at);
	at[3] ^= 0x10;
	reseal_header(rec, len);

	sc_snapshot_header h;
	sc_error err;
	assert_int_equal(sc_snapshot_header_decode(rec, len, &h, &err), 0);
	assert_int_equal(h.chunk_checksums[0], real ^ (0x10ull << 24));
	seen s;
	assert_checksum_refusal(
	    decode_chunk(&h, enc->chunks[0].data, enc->chunks[0].len, &s, &err),
	    &err);
	sc_snapshot_header_clear(&h);
	free(rec);
	sc_snapshot_encoded_free(enc);
}

/* ---- the store ----------------------------------------------------------- */

typedef struct warnings {
	int count;
	char text[2048];
} warnings;

static void on_warn(void *ctx, const char *msg)
{
	warnings *w = ctx;
	w->count++;
	size_t used = strlen(w->text);
	snprintf(w->text + used, sizeof w->text - used, "%s\n", msg);
}

/* A store whose newest snapshot has its only chunk re-sealed around
 * altered content: open must skip it (with a warning naming the check)
 * and replay the log, never restore the altered values. */
static void test_store_skips_resealed_chunk(void **state)
{
	(void)state;
	assert_non_null(tk_tmproot_create("test_snapshot_checksum"));
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	warnings w = {0};
	sc_store_options o = {.create = true,
			      .durability = SC_DURABILITY_NOSYNC,
			      .warn = on_warn,
			      .warn_ctx = &w};
	sc_store *s;
	sc_error err;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	tk_refstate *model = tk_refstate_new();
	for (unsigned k = 0; k < NENT; k++) {
		marked m;
		marked_event(k, &m);
		assert_int_equal(sc_store_append(s, &m.ev, 1, NULL, NULL), 0);
		tk_refstate_apply(model, &m.ev);
	}
	sc_snapshot_info si;
	assert_int_equal(sc_store_snapshot(s, &si, NULL), 0);
	assert_int_equal(si.position, NENT);
	assert_int_equal(si.chunks, 1);

	/* Re-seal chunk 0 (key: position ++ part 1, big-endian). */
	uint8_t kb[12] = {0};
	for (int i = 0; i < 8; i++)
		kb[i] = (uint8_t)((uint64_t)NENT >> (56 - 8 * i));
	kb[11] = 1;
	MDB_env *env = sc_store_env(s);
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "snapshots", 0, &dbi), 0);
	MDB_val k = {12, kb}, v;
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	size_t zl;
	unsigned long long raw = ZSTD_getFrameContentSize(v.mv_data, v.mv_size);
	uint8_t *z = resealed_altered(v.mv_data, v.mv_size, raw, &zl);
	MDB_val nv = {zl, z};
	assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	free(z);
	sc_store_close(s);

	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	if (w.count != 1 || !strstr(w.text, CHECKSUM_MESSAGE))
		fail_msg("expected one warning about the chunk checksum, "
			 "got %d: %s",
			 w.count, w.text);
	assert_non_null(strstr(w.text, "full replay"));
	assert_true(tk_cache_matches(sc_store_cache(s), model));
	sc_store_close(s);
	tk_refstate_free(model);
	assert_int_equal(tk_tmproot_remove(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resealed_chunk_is_refused),
	    cmocka_unit_test(test_altered_recorded_checksum_is_refused),
	    cmocka_unit_test(test_store_skips_resealed_chunk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
