/*
 * libFuzzer harness for the snapshot decoders (snapshot/snapshot.h).
 *
 * The first input byte picks what the rest is (byte % 4):
 *   0  a header record, as stored
 *   1  a header record whose trailing checksum the harness recomputes, so
 *      mutations reach the protobuf and consistency checks
 *   2  a chunk record (a zstd frame), with a header built to match it: its
 *      checksum, raw size (the frame's content size when small, else
 *      taken from the input) and an entity count taken from the input
 *   3  a SnapshotChunk protobuf message that the harness compresses, with a
 *      header giving its real size and entity count, so mutations reach the
 *      entity checks
 * Every input must either fail with a clean error code and a message, or
 * decode into entities that obey every limit the decoder promises.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "snapshot/snapshot.h"
#include "statecache/v1/statecache.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Raw sizes above this are not worth allocating per fuzz input. */
#define FUZZ_RAW_MAX (1u << 20)

static void check_error(int rc, const sc_error *err)
{
	if (rc != SC_ECORRUPT && rc != SC_EVERSION && rc != SC_ETOOBIG)
		abort();
	if (err->code != rc || !err->message[0])
		abort();
}

static int str_less(sc_str a, sc_str b)
{
	size_t m = a.len < b.len ? a.len : b.len;
	int c = memcmp(a.ptr, b.ptr, m);
	return c < 0 || (c == 0 && a.len < b.len);
}

typedef struct seen {
	uint64_t position, count;
} seen;

static int check_entity(void *ctx, const sc_snapshot_entity *e)
{
	seen *s = ctx;
	if (e->id.len < 1 || e->id.len > SC_ENTITY_ID_MAX || !e->id.ptr)
		abort();
	if (e->updated_by.len > SC_SNAPSHOT_ACTOR_MAX || !e->updated_by.ptr)
		abort();
	if (e->position > s->position)
		abort();
	for (size_t i = 0; i < e->nattrs; i++) {
		const sc_attr *a = &e->attrs[i];
		if (a->name.len < 1 || a->name.len > SC_ATTR_NAME_MAX)
			abort();
		if (i && !str_less(e->attrs[i - 1].name, a->name))
			abort();
		switch (a->value.type) {
		case SC_VALUE_STRING:
			if (memchr(a->value.u.s.ptr, 0, a->value.u.s.len))
				abort();
			/* fall through */
		case SC_VALUE_BYTES:
			if (a->value.u.s.len > SC_SNAPSHOT_VALUE_MAX ||
			    !a->value.u.s.ptr)
				abort();
			break;
		case SC_VALUE_INT:
		case SC_VALUE_DOUBLE:
		case SC_VALUE_BOOL:
			break;
		default:
			abort();
		}
	}
	s->count++;
	return 0;
}

static void fuzz_header(const uint8_t *data, size_t size, int reseal)
{
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return;
	if (size)
		memcpy(copy, data, size);
	if (reseal && size >= 24) {
		uint64_t x = XXH3_64bits(copy, size - 8);
		for (int i = 0; i < 8; i++)
			copy[size - 8 + i] = (uint8_t)(x >> (56 - 8 * i));
	}
	sc_snapshot_header h;
	sc_error err;
	int rc = sc_snapshot_header_decode(copy, size, &h, &err);
	free(copy);
	if (rc) {
		check_error(rc, &err);
		if (h.chunk_count || h.chunk_checksums)
			abort();
		return;
	}
	uint64_t total = 0, raw = 0;
	for (uint32_t i = 0; i < h.chunk_count; i++) {
		if (h.chunk_raw_sizes[i] > SC_SNAPSHOT_CHUNK_RAW_MAX ||
		    !h.chunk_entity_counts[i])
			abort();
		total += h.chunk_entity_counts[i];
		raw += h.chunk_raw_sizes[i];
	}
	if (total != h.entity_count || raw != h.bytes_raw ||
	    h.format_version < 1 ||
	    h.format_version > SC_SNAPSHOT_FORMAT_VERSION)
		abort();
	if (sc_snapshot_check_total(&h, total, NULL) != 0)
		abort();
	sc_snapshot_header_clear(&h);
}

static void decode_with(const uint8_t *frame, size_t len, uint64_t raw_size,
			uint64_t count)
{
	uint64_t sum = XXH3_64bits(frame, len);
	sc_snapshot_header h = {
	    .format_version = SC_SNAPSHOT_FORMAT_VERSION,
	    .position = 1000,
	    .entity_count = count,
	    .chunk_count = 1,
	    .chunk_checksums = &sum,
	    .chunk_raw_sizes = &raw_size,
	    .chunk_entity_counts = &count,
	    .bytes_raw = raw_size,
	};
	seen s = {h.position, 0};
	sc_error err;
	uint64_t got = 0;
	int rc = sc_snapshot_chunk_decode(&h, 0, frame, len, check_entity, &s,
					  &got, &err);
	/* The restore path (one pass that checks and lays out states) must
	 * accept exactly what the decoder accepts, ids given twice aside,
	 * and fail with the same code otherwise. */
	sc_cache *c = NULL;
	sc_cache_options co = {.seed = 1};
	if (sc_cache_create(&co, &c, NULL) == 0) {
		sc_error lerr;
		const void *chunks[1] = {frame};
		size_t lens[1] = {len};
		sc_snapshot_load_params lp = {.no_thread = true};
		uint64_t loaded = 0;
		int lrc =
		    sc_snapshot_load(&h, chunks, lens, c, &lp, &loaded, &lerr);
		if (lrc)
			check_error(lrc, &lerr);
		if (rc && lrc != rc && lrc != ENOMEM && rc != ENOMEM)
			abort();
		if (!rc && lrc && lrc != ENOMEM &&
		    !(lrc == SC_ECORRUPT && strstr(lerr.message, "twice")))
			abort();
		if (!lrc && (loaded != count || sc_cache_promote(c) != 0 ||
			     sc_cache_len(c) != count))
			abort();
		sc_cache_discard(c);
		sc_cache_destroy(c);
	}
	if (rc) {
		check_error(rc, &err);
		if (s.count)
			abort(); /* entities reached fn before a failure */
		return;
	}
	if (got != count || s.count != count)
		abort();
}

static void fuzz_chunk(const uint8_t *data, size_t size)
{
	if (size < 4)
		return;
	uint64_t count = 1 + (data[0] | (uint64_t)data[1] << 8);
	uint64_t raw = 5 + (data[2] | (uint64_t)data[3] << 8);
	data += 4;
	size -= 4;
	unsigned long long fcs = ZSTD_getFrameContentSize(data, size);
	if (fcs != ZSTD_CONTENTSIZE_ERROR && fcs != ZSTD_CONTENTSIZE_UNKNOWN &&
	    fcs <= FUZZ_RAW_MAX)
		raw = fcs;
	decode_with(data, size, raw, count);
}

static void fuzz_protobuf(const uint8_t *data, size_t size)
{
	/* The real entity count, so the entity checks are reached. */
	Statecache__V1__SnapshotChunk *m =
	    statecache__v1__snapshot_chunk__unpack(NULL, size, data);
	uint64_t count = m ? m->n_entities : 1;
	if (m)
		statecache__v1__snapshot_chunk__free_unpacked(m, NULL);
	size_t bound = ZSTD_compressBound(size);
	uint8_t *z = malloc(bound);
	if (!z)
		return;
	size_t zl = ZSTD_compress(z, bound, data, size, 1);
	if (!ZSTD_isError(zl))
		decode_with(z, zl, size, count ? count : 1);
	free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_header(data + 1, size - 1, 0);
		break;
	case 1:
		fuzz_header(data + 1, size - 1, 1);
		break;
	case 2:
		fuzz_chunk(data + 1, size - 1);
		break;
	default:
		fuzz_protobuf(data + 1, size - 1);
		break;
	}
	return 0;
}
