/*
 * Snapshot decoding (snapshot.h): verify a header record, then verify,
 * decompress and decode its chunks one at a time.
 *
 * Everything here reads hostile bytes. The order of the checks matters:
 * every size is compared with a fixed cap or with the (already verified)
 * header before anything of that size is allocated, and a chunk is checked
 * whole before the first entity reaches the caller.
 */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <string.h>

#include <xxhash.h>

#include "snapshot/snapshot_internal.h"
#include "statecache/v1/statecache.pb-c.h"

typedef Statecache__V1__SnapshotHeader pb_header;
typedef Statecache__V1__SnapshotChunk pb_chunk;
typedef Statecache__V1__EntityState pb_state;
typedef Statecache__V1__Attr pb_attr;
typedef Statecache__V1__Value pb_value;

/* ---- protobuf-c allocation ---------------------------------------------- */

/* protobuf-c reports a failed allocation and malformed input alike (NULL);
 * the allocator records the former so the caller can say ENOMEM. */
static void *pb_alloc(void *data, size_t size)
{
	void *p = sc_malloc(size ? size : 1);
	if (!p && data)
		*(int *)data = 1;
	return p;
}

static void pb_free(void *data, void *p)
{
	SC_UNUSED(data);
	sc_free(p);
}

/* ---- the header --------------------------------------------------------- */

static int header_corrupt(sc_error *err, const char *what)
{
	return sc_error_set(err, SC_ECORRUPT,
			    "snapshot header is corrupt: %s; the snapshot "
			    "cannot be used (restore from an older one or "
			    "replay the log)",
			    what);
}

void sc_snapshot_header_clear(sc_snapshot_header *h)
{
	if (!h)
		return;
	/* The three arrays are one block, chunk_checksums first. */
	sc_free(h->chunk_checksums);
	memset(h, 0, sizeof *h);
}

/* The counts must agree with each other and with the caps before anyone
 * trusts them for an allocation. */
static int header_check(const pb_header *m, uint32_t version, sc_error *err)
{
	if (m->format_version != version)
		return header_corrupt(err, "the protobuf format_version "
					   "differs from the record's");
	if (m->chunk_count > SC_SNAPSHOT_CHUNKS_MAX)
		return header_corrupt(err, "too many chunks");
	if (m->n_chunk_checksums != m->chunk_count ||
	    m->n_chunk_raw_sizes != m->chunk_count ||
	    m->n_chunk_entity_counts != m->chunk_count)
		return header_corrupt(err, "the per-chunk lists do not have "
					   "chunk_count entries");
	uint64_t total = 0;
	for (size_t i = 0; i < m->chunk_count; i++) {
		uint64_t raw = m->chunk_raw_sizes[i];
		uint64_t n = m->chunk_entity_counts[i];
		if (raw < SC_SNAPSHOT_ENTITY_MIN_BYTES ||
		    raw > SC_SNAPSHOT_CHUNK_RAW_MAX)
			return header_corrupt(err, "a chunk's raw size is out "
						   "of range");
		if (n < 1 || n > SC_SNAPSHOT_CHUNK_ENTITIES_MAX ||
		    n > raw / SC_SNAPSHOT_ENTITY_MIN_BYTES)
			return header_corrupt(err, "a chunk's entity count is "
						   "out of range");
		total += n; /* at most 2^20 * 2^20: no overflow */
	}
	if (total != m->entity_count)
		return header_corrupt(err, "the chunks' entity counts do not "
					   "add up to entity_count");
	return 0;
}

int sc_snapshot_header_decode(const void *bytes, size_t len,
			      sc_snapshot_header *out, sc_error *err)
{
	const uint8_t *p = bytes;
	memset(out, 0, sizeof *out);
	if (len > SC_SNAPSHOT_HEADER_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "snapshot header is %zu bytes, over the "
				    "%u-byte limit; it is not a valid header",
				    len, SC_SNAPSHOT_HEADER_MAX);
	if (!p || len < SC_SNAPSHOT_MAGIC_LEN ||
	    memcmp(p, SC_SNAPSHOT_MAGIC, SC_SNAPSHOT_MAGIC_LEN) != 0)
		return header_corrupt(err, "wrong magic (not a statecache "
					   "snapshot)");
	if (len < SC_SNAPSHOT_HEADER_FIXED + SC_SNAPSHOT_HEADER_TRAILER)
		return header_corrupt(err, "truncated");
	uint32_t version = sc_get_be32(p + 8);
	if (version == 0)
		return header_corrupt(err, "format version 0");
	if (version > SC_SNAPSHOT_FORMAT_VERSION)
		return sc_error_set(err, SC_EVERSION,
				    "snapshot format version %u is newer than "
				    "this build reads (%d); upgrade statecache "
				    "or replay the log",
				    version, SC_SNAPSHOT_FORMAT_VERSION);
	uint32_t pb_len = sc_get_be32(p + 12);
	if ((uint64_t)pb_len + SC_SNAPSHOT_HEADER_FIXED +
		SC_SNAPSHOT_HEADER_TRAILER !=
	    len)
		return header_corrupt(err, "its length does not match the "
					   "record (truncated or extended)");
	if (XXH3_64bits(p, len - 8) != sc_get_be64(p + len - 8))
		return header_corrupt(err, "checksum mismatch");

	int failed = 0;
	ProtobufCAllocator alloc = {pb_alloc, pb_free, &failed};
	pb_header *m = statecache__v1__snapshot_header__unpack(
	    &alloc, pb_len, p + SC_SNAPSHOT_HEADER_FIXED);
	if (!m && failed)
		return sc_error_set(err, ENOMEM,
				    "out of memory decoding a snapshot header");
	if (!m)
		return header_corrupt(err, "not a valid SnapshotHeader "
					   "message");
	int rc = header_check(m, version, err);
	if (rc)
		goto done;
	if (m->chunk_count) {
		uint64_t *a = sc_malloc(3 * sizeof(uint64_t) * m->chunk_count);
		if (!a) {
			rc = sc_error_set(err, ENOMEM,
					  "out of memory decoding a snapshot "
					  "header");
			goto done;
		}
		size_t n = m->chunk_count;
		out->chunk_checksums = a;
		out->chunk_raw_sizes = a + n;
		out->chunk_entity_counts = a + 2 * n;
		memcpy(out->chunk_checksums, m->chunk_checksums, n * 8);
		memcpy(out->chunk_raw_sizes, m->chunk_raw_sizes, n * 8);
		memcpy(out->chunk_entity_counts, m->chunk_entity_counts, n * 8);
		for (size_t i = 0; i < n; i++)
			out->bytes_raw += m->chunk_raw_sizes[i];
	}
	out->format_version = version;
	out->position = m->position;
	out->entity_count = m->entity_count;
	out->chunk_count = m->chunk_count;
	out->created_at = (int64_t)m->created_at;
done:
	statecache__v1__snapshot_header__free_unpacked(m, &alloc);
	return rc;
}

int sc_snapshot_check_total(const sc_snapshot_header *h, uint64_t entities,
			    sc_error *err)
{
	if (h->entity_count != entities)
		return sc_error_set(err, SC_ECORRUPT,
				    "snapshot at position %llu holds %llu "
				    "entities in its chunks but its header "
				    "says %llu; the snapshot cannot be used",
				    (unsigned long long)h->position,
				    (unsigned long long)entities,
				    (unsigned long long)h->entity_count);
	return 0;
}

/* ---- chunks ------------------------------------------------------------- */

static int chunk_corrupt(sc_error *err, const sc_snapshot_header *h,
			 uint32_t index, const char *what)
{
	return sc_error_set(err, SC_ECORRUPT,
			    "snapshot at position %llu, chunk %u of %u is "
			    "corrupt: %s; the snapshot cannot be used",
			    (unsigned long long)h->position, index,
			    h->chunk_count, what);
}

/* Verify the stored bytes and decompress them into a new buffer of exactly
 * the header's raw size. */
static int chunk_inflate(const sc_snapshot_header *h, uint32_t index,
			 const uint8_t *bytes, size_t len, uint8_t **out,
			 sc_error *err)
{
	*out = NULL;
	if (len > SC_SNAPSHOT_CHUNK_STORED_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "snapshot chunk %u is %zu bytes, over the "
				    "%u-byte limit",
				    index, len, SC_SNAPSHOT_CHUNK_STORED_MAX);
	if (!bytes || !len)
		return chunk_corrupt(err, h, index, "empty");
	if (XXH3_64bits(bytes, len) != h->chunk_checksums[index])
		return chunk_corrupt(err, h, index,
				     "checksum mismatch (damaged, or chunks "
				     "out of order)");
	uint64_t raw = h->chunk_raw_sizes[index];
	/* Checked by the header decoder; checked again for hand-made headers
	 * (tests, fuzzers) so nothing below depends on who built `h`. */
	if (raw < SC_SNAPSHOT_ENTITY_MIN_BYTES ||
	    raw > SC_SNAPSHOT_CHUNK_RAW_MAX)
		return chunk_corrupt(err, h, index,
				     "the header's raw size is out of range");
	unsigned long long fcs = ZSTD_getFrameContentSize(bytes, len);
	if (fcs == ZSTD_CONTENTSIZE_ERROR)
		return chunk_corrupt(err, h, index, "not a zstd frame");
	if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
		return chunk_corrupt(err, h, index,
				     "zstd frame without a content size");
	if (fcs != raw)
		return chunk_corrupt(err, h, index,
				     "zstd content size differs from the "
				     "header's raw size");
	size_t frame = ZSTD_findFrameCompressedSize(bytes, len);
	if (ZSTD_isError(frame) || frame != len)
		return chunk_corrupt(err, h, index,
				     "not exactly one zstd frame");
	uint8_t *buf = sc_malloc(raw);
	ZSTD_DCtx *dctx = buf ? ZSTD_createDCtx_advanced(sc_zstd_mem) : NULL;
	if (!dctx) {
		sc_free(buf);
		return sc_error_set(err, ENOMEM,
				    "out of memory decompressing snapshot "
				    "chunk %u (%llu bytes)",
				    index, (unsigned long long)raw);
	}
	int rc = 0;
	size_t n = ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax,
					  SC_SNAPSHOT_WINDOW_LOG_MAX);
	if (!ZSTD_isError(n))
		n = ZSTD_decompressDCtx(dctx, buf, raw, bytes, len);
	if (ZSTD_isError(n)) {
		if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
			rc = sc_error_set(err, ENOMEM,
					  "out of memory decompressing "
					  "snapshot chunk %u",
					  index);
		else
			rc = sc_error_set(err, SC_ECORRUPT,
					  "snapshot at position %llu, chunk %u "
					  "is corrupt: zstd: %s",
					  (unsigned long long)h->position,
					  index, ZSTD_getErrorName(n));
	} else if (n != raw) {
		rc = chunk_corrupt(err, h, index,
				   "decompressed size differs from the "
				   "header's");
	}
	ZSTD_freeDCtx(dctx);
	if (rc) {
		sc_free(buf);
		return rc;
	}
	*out = buf;
	return 0;
}

static sc_str str_of(ProtobufCBinaryData b)
{
	sc_str s = {(const char *)b.data, b.len};
	if (!b.len)
		s.ptr = "";
	return s;
}

static int name_less(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
	size_t m = a.len < b.len ? a.len : b.len;
	int c = memcmp(a.data, b.data, m);
	return c < 0 || (c == 0 && a.len < b.len);
}

/* Check one decoded entity against every limit a cache entity obeys. */
static const char *state_check(const pb_state *s, uint64_t max_position)
{
	if (s->id.len < 1 || s->id.len > SC_ENTITY_ID_MAX)
		return "an entity id length is out of range";
	if (s->updated_by.len > SC_SNAPSHOT_ACTOR_MAX)
		return "an entity's updated_by is too long";
	if (s->position > max_position)
		return "an entity's position is beyond the snapshot's";
	for (size_t i = 0; i < s->n_attrs; i++) {
		const pb_attr *a = s->attrs[i];
		if (a->name.len < 1 || a->name.len > SC_ATTR_NAME_MAX)
			return "an attribute name length is out of range";
		if (i && !name_less(s->attrs[i - 1]->name, a->name))
			return "attribute names are not sorted or repeat";
		const pb_value *v = a->value;
		if (!v)
			return "an attribute has no value";
		switch (v->kind_case) {
		case STATECACHE__V1__VALUE__KIND_STRING_VALUE:
			if (strlen(v->string_value) > SC_SNAPSHOT_VALUE_MAX)
				return "a string value is over the size limit";
			break;
		case STATECACHE__V1__VALUE__KIND_BYTES_VALUE:
			if (v->bytes_value.len > SC_SNAPSHOT_VALUE_MAX)
				return "a bytes value is over the size limit";
			break;
		case STATECACHE__V1__VALUE__KIND_INT_VALUE:
		case STATECACHE__V1__VALUE__KIND_DOUBLE_VALUE:
		case STATECACHE__V1__VALUE__KIND_BOOL_VALUE:
			break;
		default:
			return "an attribute value is null or of an unknown "
			       "kind";
		}
	}
	return NULL;
}

static sc_value value_of(const pb_value *v)
{
	sc_value out;
	memset(&out, 0, sizeof out);
	switch (v->kind_case) {
	case STATECACHE__V1__VALUE__KIND_STRING_VALUE:
		out.type = SC_VALUE_STRING;
		out.u.s.ptr = v->string_value;
		out.u.s.len = strlen(v->string_value);
		break;
	case STATECACHE__V1__VALUE__KIND_BYTES_VALUE:
		out.type = SC_VALUE_BYTES;
		out.u.s = str_of(v->bytes_value);
		break;
	case STATECACHE__V1__VALUE__KIND_INT_VALUE:
		out.type = SC_VALUE_INT;
		out.u.i = v->int_value;
		break;
	case STATECACHE__V1__VALUE__KIND_DOUBLE_VALUE:
		out.type = SC_VALUE_DOUBLE;
		out.u.d = v->double_value;
		break;
	case STATECACHE__V1__VALUE__KIND_BOOL_VALUE:
		out.type = SC_VALUE_BOOL;
		out.u.b = v->bool_value != 0;
		break;
	default:
		SC_INSIST(0); /* state_check rejected it */
		break;
	}
	return out;
}

int sc_snapshot_chunk_decode(const sc_snapshot_header *h, uint32_t index,
			     const void *bytes, size_t len,
			     sc_snapshot_entity_fn fn, void *ctx,
			     uint64_t *entities, sc_error *err)
{
	if (entities)
		*entities = 0;
	if (!h || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_snapshot_chunk_decode needs a header "
				    "and a callback");
	if (index >= h->chunk_count)
		return sc_error_set(err, SC_EINVAL,
				    "snapshot chunk index %u is out of range; "
				    "the snapshot has %u chunks",
				    index, h->chunk_count);
	uint8_t *raw;
	int rc = chunk_inflate(h, index, bytes, len, &raw, err);
	if (rc)
		return rc;
	size_t raw_len = h->chunk_raw_sizes[index];
	int failed = 0;
	ProtobufCAllocator alloc = {pb_alloc, pb_free, &failed};
	pb_chunk *m =
	    statecache__v1__snapshot_chunk__unpack(&alloc, raw_len, raw);
	sc_free(raw); /* peak: raw bytes + decoded message, never more */
	if (!m && failed)
		return sc_error_set(err, ENOMEM,
				    "out of memory decoding snapshot chunk %u",
				    index);
	if (!m)
		return chunk_corrupt(err, h, index,
				     "not a valid SnapshotChunk message");
	sc_attr *attrs = NULL;
	/* Our encoder writes the canonical protobuf-c encoding. Bytes that
	 * re-pack to a different size hide something the decoded message does
	 * not show: a string holding a NUL byte (a C string would cut it
	 * short), a field given twice (protobuf-c keeps the last) or an
	 * over-long varint. Unknown fields are kept by protobuf-c and re-pack
	 * to the same size: they are skipped, as protobuf readers do. */
	if (statecache__v1__snapshot_chunk__get_packed_size(m) != raw_len) {
		rc = chunk_corrupt(err, h, index,
				   "not in canonical form (a string with a "
				   "NUL byte, or a field given twice)");
		goto done;
	}
	if (m->n_entities != h->chunk_entity_counts[index]) {
		rc = chunk_corrupt(err, h, index,
				   "entity count differs from the header's");
		goto done;
	}
	size_t max_attrs = 0;
	for (size_t i = 0; i < m->n_entities; i++) {
		const char *why = state_check(m->entities[i], h->position);
		if (why) {
			rc = chunk_corrupt(err, h, index, why);
			goto done;
		}
		if (m->entities[i]->n_attrs > max_attrs)
			max_attrs = m->entities[i]->n_attrs;
	}
	if (max_attrs) {
		attrs = sc_malloc(max_attrs * sizeof *attrs);
		if (!attrs) {
			rc = sc_error_set(err, ENOMEM,
					  "out of memory decoding snapshot "
					  "chunk %u",
					  index);
			goto done;
		}
	}
	for (size_t i = 0; i < m->n_entities; i++) {
		const pb_state *s = m->entities[i];
		for (size_t j = 0; j < s->n_attrs; j++) {
			attrs[j].name = str_of(s->attrs[j]->name);
			attrs[j].value = value_of(s->attrs[j]->value);
		}
		sc_snapshot_entity e = {
		    .id = str_of(s->id),
		    .attrs = attrs,
		    .nattrs = s->n_attrs,
		    .updated_at = s->updated_at,
		    .updated_by = str_of(s->updated_by),
		    .position = s->position,
		};
		rc = fn(ctx, &e);
		if (rc)
			goto done;
	}
	if (entities)
		*entities = m->n_entities;
done:
	sc_free(attrs);
	statecache__v1__snapshot_chunk__free_unpacked(m, &alloc);
	return rc;
}

/* ---- loading into a cache ----------------------------------------------- */

typedef struct load_ctx {
	sc_cache *cache;
	sc_error *err;
} load_ctx;

static int load_one(void *ctx, const sc_snapshot_entity *e)
{
	load_ctx *l = ctx;
	return sc_cache_load_entity(l->cache, e->id, e->attrs, e->nattrs,
				    e->updated_at, e->updated_by, e->position,
				    l->err);
}

int sc_snapshot_chunk_load(const sc_snapshot_header *h, uint32_t index,
			   const void *bytes, size_t len, sc_cache *cache,
			   uint64_t *entities, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL,
				    "sc_snapshot_chunk_load needs a cache");
	load_ctx l = {cache, err};
	return sc_snapshot_chunk_decode(h, index, bytes, len, load_one, &l,
					entities, err);
}
