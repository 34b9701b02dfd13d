/*
 * Snapshot decoding (snapshot.h): verify a header record, then verify,
 * decompress and decode its chunks one at a time.
 *
 * Everything here reads hostile bytes. The order of the checks matters:
 * every size is compared with a fixed cap or with the (already verified)
 * header before anything of that size is allocated, and a chunk is checked
 * whole before the first entity reaches the caller. The header goes through
 * protobuf-c (small, once per snapshot); chunks are parsed in place.
 */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <xxhash.h>

#include "cache/cache_lib.h"
#include "common/wire.h"
#include "snapshot/snapshot_internal.h"
#include "statecache/v1/statecache.pb-c.h"

typedef Statecache__V1__SnapshotHeader pb_header;

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
	sc_free(h->partition);
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
	if (m->one_partition) {
		if (m->partition.len > SC_EVENT_FIELD_MAX) {
			sc_free(out->chunk_checksums);
			memset(out, 0, sizeof *out);
			rc = header_corrupt(err, "its partition name is too "
						 "long");
			goto done;
		}
		out->one_partition = true;
		out->partition_len = m->partition.len;
		out->partition = sc_malloc(m->partition.len + 1);
		if (!out->partition) {
			sc_free(out->chunk_checksums);
			memset(out, 0, sizeof *out);
			rc = sc_error_set(err, ENOMEM,
					  "out of memory decoding a snapshot "
					  "header");
			goto done;
		}
		if (m->partition.len)
			memcpy(out->partition, m->partition.data,
			       m->partition.len);
		out->partition[m->partition.len] = 0;
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

/*
 * What decompression keeps from one chunk to the next: the zstd context
 * (its window buffers are the largest part of it) and the output buffer,
 * which grows to the largest raw size seen (at most
 * SC_SNAPSHOT_CHUNK_RAW_MAX). Making both afresh per chunk cost a context
 * setup and, worse, a large malloc/free per chunk that fragments the heap
 * the restored states are allocated from.
 */
typedef struct inflater {
	ZSTD_DCtx *dctx;
	uint8_t *buf;
	size_t cap;
} inflater;

static void inflater_fini(inflater *z)
{
	ZSTD_freeDCtx(z->dctx);
	sc_free(z->buf);
	memset(z, 0, sizeof *z);
}

/* Verify the stored bytes and decompress them into z->buf, whose first
 * raw-size bytes (the header's) are then the chunk's protobuf bytes. */
static int chunk_inflate(inflater *z, const sc_snapshot_header *h,
			 uint32_t index, const uint8_t *bytes, size_t len,
			 sc_error *err)
{
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
	if (z->cap < raw) {
		/* No copy of the old contents: sc_free + sc_malloc. */
		sc_free(z->buf);
		z->cap = 0;
		z->buf = sc_malloc(raw);
		if (z->buf)
			z->cap = raw;
	}
	if (z->buf && !z->dctx) {
		z->dctx = ZSTD_createDCtx_advanced(sc_zstd_mem);
		if (z->dctx && ZSTD_isError(ZSTD_DCtx_setParameter(
				   z->dctx, ZSTD_d_windowLogMax,
				   SC_SNAPSHOT_WINDOW_LOG_MAX))) {
			ZSTD_freeDCtx(z->dctx);
			z->dctx = NULL;
		}
	}
	if (!z->buf || !z->dctx)
		return sc_error_set(err, ENOMEM,
				    "out of memory decompressing snapshot "
				    "chunk %u (%llu bytes)",
				    index, (unsigned long long)raw);
	/* A failed frame leaves the context mid-frame; the decompression
	 * below starts a new one, but say so rather than rely on it. */
	ZSTD_DCtx_reset(z->dctx, ZSTD_reset_session_only);
	size_t n = ZSTD_decompressDCtx(z->dctx, z->buf, raw, bytes, len);
	if (ZSTD_isError(n)) {
		if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
			return sc_error_set(err, ENOMEM,
					    "out of memory decompressing "
					    "snapshot chunk %u",
					    index);
		return sc_error_set(err, SC_ECORRUPT,
				    "snapshot at position %llu, chunk %u "
				    "is corrupt: zstd: %s",
				    (unsigned long long)h->position, index,
				    ZSTD_getErrorName(n));
	}
	if (n != raw)
		return chunk_corrupt(err, h, index,
				     "decompressed size differs from the "
				     "header's");
	return 0;
}

/* ---- reading SnapshotChunk bytes ---------------------------------------- */

/*
 * The chunk's protobuf bytes are read in place, without protobuf-c: its
 * unpacker makes one allocation per message, string and array, which
 * costs more than the rest of a restore together. The reader is strict
 * where protobuf would be lenient: a singular field given twice, a Value
 * with more than one kind, a string value holding a NUL byte, a known field
 * with the wrong wire type are all corrupt. Unknown fields are skipped, as
 * protobuf readers do, so a later writer may add fields. Every length is
 * checked against the bytes left before it is used.
 */

typedef sc_wire_rd rd;

/* The next field's number and wire type; false at the end or on bad
 * bytes (*bad tells which). */
static bool rd_field(rd *r, uint32_t *num, unsigned *wire, bool *bad)
{
	*bad = false;
	if (r->p == r->end)
		return false;
	uint32_t w;
	if (!sc_wire_rd_key(r, num, &w)) {
		*bad = true;
		return false;
	}
	*wire = w;
	return true;
}

static sc_str str_of_rd(rd s)
{
	sc_str out = {(const char *)s.p, (size_t)(s.end - s.p)};
	if (!out.len)
		out.ptr = "";
	return out;
}

static bool str_less(sc_str a, sc_str b)
{
	size_t m = a.len < b.len ? a.len : b.len;
	int c = memcmp(a.ptr, b.ptr, m);
	return c < 0 || (c == 0 && a.len < b.len);
}

/* Value: exactly one kind. */
static const char *read_value(rd r, sc_value *v)
{
	int kinds = 0;
	uint32_t num;
	unsigned wire;
	bool bad;
	memset(v, 0, sizeof *v);
	while (rd_field(&r, &num, &wire, &bad)) {
		uint64_t x;
		rd s;
		switch (num) {
		case 1: /* string_value */
		case 5: /* bytes_value */
			if (wire != 2 || !sc_wire_rd_sub(&r, &s))
				return "a value is malformed";
			v->type = num == 1 ? SC_VALUE_STRING : SC_VALUE_BYTES;
			v->u.s = str_of_rd(s);
			if (v->u.s.len > SC_SNAPSHOT_VALUE_MAX)
				return "a value is over the size limit";
			if (num == 1 && memchr(v->u.s.ptr, 0, v->u.s.len))
				return "a string value holds a NUL byte";
			break;
		case 2: /* int_value, zigzag */
			if (wire != 0 || !sc_wire_rd_varint(&r, &x))
				return "a value is malformed";
			v->type = SC_VALUE_INT;
			v->u.i = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
			break;
		case 3: /* double_value */
			if (wire != 1 || !sc_wire_rd_fixed64(&r, &x))
				return "a value is malformed";
			v->type = SC_VALUE_DOUBLE;
			memcpy(&v->u.d, &x, sizeof x);
			break;
		case 4: /* bool_value */
			if (wire != 0 || !sc_wire_rd_varint(&r, &x) || x > 1)
				return "a value is malformed";
			v->type = SC_VALUE_BOOL;
			v->u.b = x != 0;
			break;
		default:
			if (!sc_wire_rd_skip(&r, wire))
				return "a value is malformed";
			continue;
		}
		kinds++;
	}
	if (bad)
		return "a value is malformed";
	if (kinds != 1)
		return kinds ? "a value has more than one kind"
			     : "an attribute value is null";
	return NULL;
}

static const char *read_attr(rd r, sc_attr *a)
{
	bool have_name = false, have_value = false;
	uint32_t num;
	unsigned wire;
	bool bad;
	while (rd_field(&r, &num, &wire, &bad)) {
		rd s;
		if (num == 1 || num == 2) {
			if (wire != 2 || !sc_wire_rd_sub(&r, &s))
				return "an attribute is malformed";
			bool *seen = num == 1 ? &have_name : &have_value;
			if (*seen)
				return "an attribute repeats a field";
			*seen = true;
			if (num == 1) {
				a->name = str_of_rd(s);
			} else {
				const char *why = read_value(s, &a->value);
				if (why)
					return why;
			}
		} else if (!sc_wire_rd_skip(&r, wire)) {
			return "an attribute is malformed";
		}
	}
	if (bad)
		return "an attribute is malformed";
	if (!have_value)
		return "an attribute has no value";
	if (!have_name || a->name.len < 1 || a->name.len > SC_ATTR_NAME_MAX)
		return "an attribute name length is out of range";
	return NULL;
}

/*
 * EntityState: check it and, when `attrs` is not NULL, fill `e` (attrs
 * holds room for every attribute: the caller counted them in a first
 * pass). *nattrs is the attribute count either way.
 */
static const char *read_state(rd r, uint64_t max_position,
			      sc_snapshot_entity *e, sc_attr *attrs,
			      size_t *nattrs)
{
	unsigned seen = 0; /* bit per singular field number */
	uint32_t num;
	unsigned wire;
	bool bad;
	sc_attr a, prev = {{NULL, 0}, {0}};
	memset(e, 0, sizeof *e);
	e->id.ptr = e->updated_by.ptr = e->partition.ptr = "";
	*nattrs = 0;
	while (rd_field(&r, &num, &wire, &bad)) {
		rd s;
		uint64_t x;
		if (num >= 1 && num <= 6 && num != 2) {
			if (seen & (1u << num))
				return "an entity repeats a field";
			seen |= 1u << num;
		}
		switch (num) {
		case 1: /* id */
		case 4: /* updated_by */
		case 6: /* partition */
			if (wire != 2 || !sc_wire_rd_sub(&r, &s))
				return "an entity is malformed";
			if (num == 1)
				e->id = str_of_rd(s);
			else if (num == 4)
				e->updated_by = str_of_rd(s);
			else
				e->partition = str_of_rd(s);
			break;
		case 2: { /* attrs */
			if (wire != 2 || !sc_wire_rd_sub(&r, &s))
				return "an entity is malformed";
			const char *why = read_attr(s, &a);
			if (why)
				return why;
			if (*nattrs && !str_less(prev.name, a.name))
				return "attribute names are not sorted or "
				       "repeat";
			prev = a;
			if (attrs)
				attrs[*nattrs] = a;
			++*nattrs;
			break;
		}
		case 3: /* updated_at */
			if (wire != 1 || !sc_wire_rd_fixed64(&r, &x))
				return "an entity is malformed";
			e->updated_at = (int64_t)x;
			break;
		case 5: /* position */
			if (wire != 0 || !sc_wire_rd_varint(&r, &x))
				return "an entity is malformed";
			e->position = x;
			break;
		default:
			if (!sc_wire_rd_skip(&r, wire))
				return "an entity is malformed";
		}
	}
	if (bad)
		return "an entity is malformed";
	if (e->id.len < 1 || e->id.len > SC_ENTITY_ID_MAX)
		return "an entity id length is out of range";
	if (e->updated_by.len > SC_SNAPSHOT_ACTOR_MAX)
		return "an entity's updated_by is too long";
	if (e->partition.len > SC_EVENT_FIELD_MAX)
		return "an entity's partition is too long";
	if (e->position > max_position)
		return "an entity's position is beyond the snapshot's";
	e->attrs = attrs;
	e->nattrs = *nattrs;
	return NULL;
}

/* A checkpoint (one_partition) holds only entities of its partition. */
static const char *part_check(const sc_snapshot_header *h,
			      const sc_snapshot_entity *e)
{
	if (!h->one_partition)
		return NULL;
	if (e->partition.len != h->partition_len ||
	    (h->partition_len &&
	     memcmp(e->partition.ptr, h->partition, h->partition_len) != 0))
		return "an entity of another partition than the checkpoint's";
	return NULL;
}

/*
 * Walk the SnapshotChunk's entities. With fn NULL: check everything and
 * count entities and the largest attribute count. With fn: decode again
 * (the bytes are known good) and call fn for each entity.
 */
static const char *read_chunk(rd r, const sc_snapshot_header *h,
			      uint64_t max_position, sc_attr *attrs,
			      sc_snapshot_entity_fn fn, void *ctx,
			      uint64_t *count, size_t *max_attrs, int *fn_rc)
{
	uint32_t num;
	unsigned wire;
	bool bad;
	*count = 0;
	*max_attrs = 0;
	while (rd_field(&r, &num, &wire, &bad)) {
		rd s;
		if (num != 1) {
			if (!sc_wire_rd_skip(&r, wire))
				return "not a valid SnapshotChunk message";
			continue;
		}
		if (wire != 2 || !sc_wire_rd_sub(&r, &s))
			return "not a valid SnapshotChunk message";
		sc_snapshot_entity e;
		size_t n;
		const char *why = read_state(s, max_position, &e, attrs, &n);
		if (!why)
			why = part_check(h, &e);
		if (why)
			return why;
		if (n > *max_attrs)
			*max_attrs = n;
		++*count;
		if (fn) {
			*fn_rc = fn(ctx, &e);
			if (*fn_rc)
				return NULL;
		}
	}
	if (bad)
		return "not a valid SnapshotChunk message";
	return NULL;
}

/*
 * Inflate chunk `index` into z->buf and check all of it (pass 1): on
 * success *count is its entity count (equal to the header's) and
 * *max_attrs the largest attribute count of one entity.
 */
static int chunk_check(inflater *z, const sc_snapshot_header *h, uint32_t index,
		       const void *bytes, size_t len, uint64_t *count,
		       size_t *max_attrs, sc_error *err)
{
	if (index >= h->chunk_count)
		return sc_error_set(err, SC_EINVAL,
				    "snapshot chunk index %u is out of range; "
				    "the snapshot has %u chunks",
				    index, h->chunk_count);
	int rc = chunk_inflate(z, h, index, bytes, len, err);
	if (rc)
		return rc;
	rd all = {z->buf, z->buf + h->chunk_raw_sizes[index]};
	int fn_rc = 0;
	const char *why = read_chunk(all, h, h->position, NULL, NULL, NULL,
				     count, max_attrs, &fn_rc);
	if (why)
		return chunk_corrupt(err, h, index, why);
	if (*count != h->chunk_entity_counts[index])
		return chunk_corrupt(err, h, index,
				     "entity count differs from the header's");
	return 0;
}

/* An attribute array of at least n entries in *attrs (grown, never
 * shrunk). */
static int attrs_reserve(sc_attr **attrs, size_t *cap, size_t n, uint32_t index,
			 sc_error *err)
{
	if (n <= *cap)
		return 0;
	sc_free(*attrs);
	*cap = 0;
	*attrs = sc_malloc(n * sizeof **attrs);
	if (!*attrs)
		return sc_error_set(err, ENOMEM,
				    "out of memory decoding snapshot chunk %u",
				    index);
	*cap = n;
	return 0;
}

/* Pass 2 over bytes chunk_check accepted: fn for each entity. */
static int chunk_emit(const uint8_t *raw, const sc_snapshot_header *h,
		      uint32_t index, sc_attr *attrs, sc_snapshot_entity_fn fn,
		      void *ctx)
{
	rd all = {raw, raw + h->chunk_raw_sizes[index]};
	uint64_t count;
	size_t max_attrs;
	int fn_rc = 0;
	const char *why = read_chunk(all, h, h->position, attrs, fn, ctx,
				     &count, &max_attrs, &fn_rc);
	SC_INSIST(!why);
	SC_UNUSED(why);
	return fn_rc;
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
	inflater z = {0};
	uint64_t count;
	size_t max_attrs, cap = 0;
	sc_attr *attrs = NULL;
	/* The whole chunk is checked before fn sees any entity. */
	int rc = chunk_check(&z, h, index, bytes, len, &count, &max_attrs, err);
	if (!rc)
		rc = attrs_reserve(&attrs, &cap, max_attrs, index, err);
	if (!rc)
		rc = chunk_emit(z.buf, h, index, attrs, fn, ctx);
	if (!rc && entities)
		*entities = count;
	sc_free(attrs);
	inflater_fini(&z);
	return rc;
}

/* ---- loading a whole snapshot on two threads ---------------------------- */

/*
 * Two threads share the work of a restore: the calling thread (the
 * writer) and a helper. Either one takes the next chunk nobody has taken,
 * verifies and decompresses it and lays its entities' states out in the
 * chunk's slot (zstd, parsing, the states' bytes); only the writer stores
 * them, strictly in chunk order: it allocates each state's block, copies
 * the image in and puts it into the map. (Blocks are allocated on the
 * writer so that they live in the writer's malloc arena, where later
 * changes free and reuse them; see cache/cache_lib.h.) Bounds: chunk c is
 * taken only once chunk c - LOAD_SLOTS is stored, so at most LOAD_SLOTS
 * chunks' images wait in slots, and each thread holds one chunk's raw
 * bytes. A thread that fails on chunk c records the error in c's slot and
 * no chunk after c is taken; the writer reports the error when it reaches
 * c, so it is the first one in chunk order, the same as a restore on one
 * thread gives.
 */

#define LOAD_SLOTS 3

/* What one thread keeps from chunk to chunk. */
typedef struct load_worker {
	inflater z;
	sc_attr *attrs;
	size_t cap_attrs;
} load_worker;

typedef struct load_slot {
	sc_cache_loaded *states; /* laid out, not yet stored */
	size_t n, cap;
	uint8_t *images; /* the states' images, 8-aligned, at states[k].off */
	size_t used, room;
	bool done; /* states or the error are ready */
	int rc;
	sc_error err;
} load_slot;

typedef struct load_pipe {
	const sc_snapshot_header *h;
	const void *const *chunks;
	const size_t *lens;
	const sc_cache *cache; /* its map hashes the ids */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint32_t next_take; /* chunks below it are taken */
	uint32_t stored;    /* chunks below it are in the map */
	uint32_t limit;	    /* take nothing at or above it (failure) */
	bool stop;	    /* the writer gave up */
	load_slot slot[LOAD_SLOTS];
} load_pipe;

static void slot_drop(load_slot *s)
{
	s->n = 0;
	s->used = 0;
}

/* Room for `bytes` more image bytes in the slot (grown, never shrunk:
 * the slot's next chunk needs about as much). */
static int images_reserve(load_slot *s, size_t bytes, uint32_t c, sc_error *err)
{
	if (bytes <= s->room - s->used)
		return 0;
	size_t need = s->used + bytes, room = s->room ? s->room : 1u << 16;
	while (room < need)
		room = room > SIZE_MAX / 2 ? need : room * 2;
	uint8_t *p = sc_realloc(s->images, room);
	if (!p)
		return sc_error_set(
		    err, ENOMEM, "out of memory decoding snapshot chunk %u", c);
	s->images = p;
	s->room = room;
	return 0;
}

/*
 * One pass over a decompressed chunk: each entity is checked exactly as
 * read_chunk checks it and its state is laid out at once in the slot. The
 * images stay outside the map until the whole chunk has passed, so the
 * chunk is still verified whole before any of it is loaded; on failure the
 * caller empties the slot. After `want` entities the rest are only checked
 * (the count check then fails). Returns why the bytes are bad, or NULL;
 * *rc is set on an allocation failure (the walk stops there).
 */
static const char *read_chunk_build(rd r, const sc_snapshot_header *h,
				    uint64_t max_position,
				    const sc_cache *cache, load_worker *w,
				    load_slot *s, uint64_t want, uint32_t c,
				    uint64_t *count, int *rc, sc_error *err)
{
	uint32_t num;
	unsigned wire;
	bool bad;
	*count = 0;
	while (rd_field(&r, &num, &wire, &bad)) {
		rd sub;
		if (num != 1) {
			if (!sc_wire_rd_skip(&r, wire))
				return "not a valid SnapshotChunk message";
			continue;
		}
		if (wire != 2 || !sc_wire_rd_sub(&r, &sub))
			return "not a valid SnapshotChunk message";
		sc_snapshot_entity e;
		size_t n;
		const char *why = read_state(sub, max_position, &e, NULL, &n);
		if (!why)
			why = part_check(h, &e);
		if (why)
			return why;
		if (++*count > want)
			continue;
		/* The entity's bytes are in L1 now: read them again into the
		 * attribute array, sized for them. */
		*rc = attrs_reserve(&w->attrs, &w->cap_attrs, n, c, err);
		if (*rc)
			return NULL;
		why = read_state(sub, max_position, &e, w->attrs, &n);
		SC_INSIST(!why);
		size_t bytes;
		*rc =
		    sc_cache_load_measure(e.partition, e.id, e.attrs, e.nattrs,
					  e.updated_by, &bytes, err);
		if (!*rc)
			*rc = images_reserve(s, bytes, c, err);
		if (*rc)
			return NULL;
		sc_cache_loaded *l = &s->states[s->n++];
		sc_cache_load_write(cache, e.partition, e.id, e.attrs, e.nattrs,
				    e.updated_at, e.updated_by, e.position,
				    s->images + s->used, bytes, l);
		l->off = s->used;
		s->used += bytes;
	}
	if (bad)
		return "not a valid SnapshotChunk message";
	return NULL;
}

/* Verify, decompress and build chunk c into its slot (no lock held). */
static int chunk_build(load_pipe *p, load_worker *w, uint32_t c, load_slot *s)
{
	const sc_snapshot_header *h = p->h;
	sc_error_clear(&s->err);
	int rc = chunk_inflate(&w->z, h, c, p->chunks[c], p->lens[c], &s->err);
	if (rc)
		return rc;
	uint64_t raw = h->chunk_raw_sizes[c], want = h->chunk_entity_counts[c];
	/* A chunk cannot hold more (checked by the header decoder; again
	 * here for hand-made headers, before `want` sizes an array). */
	if (want > SC_SNAPSHOT_CHUNK_ENTITIES_MAX ||
	    want > raw / SC_SNAPSHOT_ENTITY_MIN_BYTES)
		return chunk_corrupt(&s->err, h, c,
				     "entity count differs from the header's");
	if (want > s->cap) {
		sc_free(s->states);
		s->cap = 0;
		s->states = sc_malloc(want * sizeof *s->states);
		if (!s->states)
			return sc_error_set(&s->err, ENOMEM,
					    "out of memory decoding snapshot "
					    "chunk %u",
					    c);
		s->cap = want;
	}
	rd all = {w->z.buf, w->z.buf + raw};
	uint64_t count;
	const char *why = read_chunk_build(all, h, h->position, p->cache, w, s,
					   want, c, &count, &rc, &s->err);
	if (!rc && why)
		rc = chunk_corrupt(&s->err, h, c, why);
	if (!rc && count != want)
		rc = chunk_corrupt(&s->err, h, c,
				   "entity count differs from the header's");
	if (rc)
		slot_drop(s);
	return rc;
}

/* Take the next chunk if one may be taken: its index, or UINT32_MAX.
 * p->mu held. */
static uint32_t take_locked(load_pipe *p)
{
	uint32_t c = p->next_take;
	if (p->stop || c >= p->limit || c >= p->stored + LOAD_SLOTS)
		return UINT32_MAX;
	p->next_take++;
	return c;
}

/* Build chunk c and publish the result. p->mu not held. */
static void take_and_build(load_pipe *p, load_worker *w, uint32_t c)
{
	load_slot *s = &p->slot[c % LOAD_SLOTS];
	int rc = chunk_build(p, w, c, s);
	pthread_mutex_lock(&p->mu);
	s->rc = rc;
	s->done = true;
	if (rc && c < p->limit)
		p->limit = c + 1; /* chunks after c are not needed */
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void *load_helper(void *arg)
{
	load_pipe *p = arg;
	load_worker w = {0};
	pthread_mutex_lock(&p->mu);
	for (;;) {
		uint32_t c = take_locked(p);
		if (c == UINT32_MAX) {
			if (p->stop || p->next_take >= p->limit)
				break;
			pthread_cond_wait(&p->cv, &p->mu);
			continue;
		}
		pthread_mutex_unlock(&p->mu);
		take_and_build(p, &w, c);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	inflater_fini(&w.z);
	sc_free(w.attrs);
	return NULL;
}

int sc_snapshot_load(const sc_snapshot_header *h, const void *const *chunks,
		     const size_t *lens, sc_cache *cache,
		     const sc_snapshot_load_params *params, uint64_t *entities,
		     sc_error *err)
{
	if (entities)
		*entities = 0;
	if (!h || !cache || (h->chunk_count && (!chunks || !lens)))
		return sc_error_set(err, SC_EINVAL,
				    "sc_snapshot_load needs a header, the "
				    "chunks and a cache");
	sc_snapshot_load_params prm = {0};
	if (params)
		prm = *params;
	load_pipe p = {.h = h, .chunks = chunks, .lens = lens, .cache = cache};
	p.limit = h->chunk_count;
	uint64_t born;
	int rc = sc_cache_load_begin(cache, h->position, &born, err);
	if (rc)
		return rc;
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.cv, NULL);
	pthread_t th;
	bool threaded = !prm.no_thread && h->chunk_count > 1 &&
			pthread_create(&th, NULL, load_helper, &p) == 0;
	load_worker w = {0};
	uint64_t total = 0;
	for (uint32_t i = 0; i < h->chunk_count && !rc; i++) {
		load_slot *s = &p.slot[i % LOAD_SLOTS];
		/* Build chunks while chunk i is not ready (it may be the
		 * helper's), then store it. */
		pthread_mutex_lock(&p.mu);
		while (!s->done) {
			uint32_t c = take_locked(&p);
			if (c != UINT32_MAX) {
				pthread_mutex_unlock(&p.mu);
				take_and_build(&p, &w, c);
				pthread_mutex_lock(&p.mu);
			} else {
				pthread_cond_wait(&p.cv, &p.mu);
			}
		}
		pthread_mutex_unlock(&p.mu);
		rc = s->rc;
		if (rc) {
			if (err)
				*err = s->err;
			break;
		}
		size_t k = 0;
		for (; k < s->n && !rc; k++)
			rc = sc_cache_load_store(cache,
						 s->images + s->states[k].off,
						 &s->states[k], err);
		if (rc) {
			slot_drop(s);
			if (rc == SC_ECORRUPT)
				rc = chunk_corrupt(err, h, i,
						   "an entity id appears twice "
						   "in the snapshot");
			break;
		}
		total += s->n;
		slot_drop(s);
		pthread_mutex_lock(&p.mu);
		s->done = false;
		p.stored = i + 1;
		pthread_cond_broadcast(&p.cv);
		pthread_mutex_unlock(&p.mu);
		if (prm.chunk_done)
			prm.chunk_done(prm.ctx, i, chunks[i], lens[i]);
	}
	if (threaded) {
		pthread_mutex_lock(&p.mu);
		p.stop = true;
		pthread_cond_broadcast(&p.cv);
		pthread_mutex_unlock(&p.mu);
		pthread_join(th, NULL);
	}
	/* States built for chunks that were never stored. */
	for (int k = 0; k < LOAD_SLOTS; k++) {
		sc_free(p.slot[k].states);
		sc_free(p.slot[k].images);
	}
	inflater_fini(&w.z);
	sc_free(w.attrs);
	pthread_cond_destroy(&p.cv);
	pthread_mutex_destroy(&p.mu);
	if (!rc)
		rc = sc_snapshot_check_total(h, total, err);
	if (!rc && entities)
		*entities = total;
	return rc;
}
