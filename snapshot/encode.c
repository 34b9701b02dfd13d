/*
 * Snapshot encoding (snapshot.h): a pinned view -> protobuf SnapshotChunk
 * messages -> zstd frames, plus the header record that lists them.
 *
 * The protobuf bytes are written by hand rather than through protobuf-c's
 * message structs: building 4096 EntityState/Attr/Value structs per chunk
 * only to serialise them again would cost more than the compression. The
 * writer below emits exactly what protobuf-c would pack for the same
 * message (fields in number order, proto3 zero scalars omitted, oneof
 * members always present); tests/test_snapshot.c checks that byte for
 * byte against protobuf-c.
 */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "common/wire.h"
#include "snapshot/snapshot_internal.h"
#include "statecache/v1/statecache.pb-c.h"

/* ---- protobuf wire writing ----------------------------------------------- */

/* Field tags: (field number << 3) | wire type. */
enum {
	TAG_CHUNK_ENTITIES = 0x0a,   /* 1, length-delimited */
	TAG_STATE_ID = 0x0a,	     /* 1, length-delimited */
	TAG_STATE_ATTRS = 0x12,	     /* 2, length-delimited */
	TAG_STATE_UPDATED_AT = 0x19, /* 3, fixed64 */
	TAG_STATE_UPDATED_BY = 0x22, /* 4, length-delimited */
	TAG_STATE_POSITION = 0x28,   /* 5, varint */
	TAG_STATE_PARTITION = 0x32,  /* 6, length-delimited */
	TAG_ATTR_NAME = 0x0a,	     /* 1, length-delimited */
	TAG_ATTR_VALUE = 0x12,	     /* 2, length-delimited */
};

static uint8_t *put_bytes(uint8_t *p, uint8_t tag, sc_str s)
{
	return sc_wire_put_len(p, tag, s.ptr, s.len);
}

static size_t attr_len(const sc_attr *a)
{
	return sc_wire_len_size(a->name.len) +
	       sc_wire_len_size(sc_wire_value_size(&a->value));
}

/* ---- entity checks and size ---------------------------------------------- */

static int bad_entity(sc_error *err, sc_str id, const char *what)
{
	int shown = id.len > 64 ? 64 : (int)id.len;
	return sc_error_set(err, SC_EINVAL,
			    "entity '%.*s%s' cannot be stored in a snapshot: "
			    "%s",
			    shown, id.ptr, id.len > 64 ? "..." : "", what);
}

/*
 * One entity, read once through the cache's accessors: the first PLAN_ATTRS
 * attributes and their encoded sizes are kept here so that writing does not
 * compute them again (entities with more attributes read the rest twice).
 */
#define PLAN_ATTRS 32

typedef struct plan {
	sc_str id, by, part;
	int64_t updated_at;
	uint64_t position;
	size_t nattrs;
	size_t len; /* EntityState message bytes */
	sc_attr attrs[PLAN_ATTRS];
	uint32_t value_len[PLAN_ATTRS], attr_len[PLAN_ATTRS];
} plan;

/* Check what the decoder will check, so a snapshot that encodes also
 * restores, and compute the EntityState message size. */
static int entity_plan(const sc_entity *e, uint64_t view_position, plan *pl,
		       sc_error *err)
{
	pl->len = 0;
	pl->nattrs = 0;
	sc_str id = pl->id = sc_entity_id(e);
	sc_str by = pl->by = sc_entity_updated_by(e);
	sc_str part = pl->part = sc_entity_partition(e);
	pl->updated_at = sc_entity_updated_at(e);
	pl->position = sc_entity_position(e);
	if (id.len < 1 || id.len > SC_ENTITY_ID_MAX)
		return bad_entity(err, id, "id length out of range");
	if (by.len > SC_SNAPSHOT_ACTOR_MAX)
		return bad_entity(err, id, "updated_by is too long");
	if (part.len > SC_EVENT_FIELD_MAX)
		return bad_entity(err, id, "its partition is too long");
	if (pl->position > view_position)
		return bad_entity(err, id,
				  "its position is beyond the version's");
	size_t n = sc_wire_len_size(id.len);
	size_t nattrs = pl->nattrs = sc_entity_attr_count(e);
	sc_str prev = {NULL, 0};
	for (size_t i = 0; i < nattrs; i++) {
		sc_attr a = sc_entity_attr(e, i);
		if (a.name.len < 1 || a.name.len > SC_ATTR_NAME_MAX)
			return bad_entity(err, id,
					  "an attribute name length is out of "
					  "range");
		if (i) {
			size_t m =
			    prev.len < a.name.len ? prev.len : a.name.len;
			int c = memcmp(prev.ptr, a.name.ptr, m);
			if (c > 0 || (c == 0 && prev.len >= a.name.len))
				return bad_entity(err, id,
						  "attributes are not sorted "
						  "by name or repeat one");
		}
		prev = a.name;
		switch (a.value.type) {
		case SC_VALUE_STRING:
			if (a.value.u.s.len &&
			    memchr(a.value.u.s.ptr, 0, a.value.u.s.len))
				return bad_entity(err, id,
						  "a string value holds a NUL "
						  "byte");
			/* fall through */
		case SC_VALUE_BYTES:
			if (a.value.u.s.len > SC_SNAPSHOT_VALUE_MAX)
				return bad_entity(err, id,
						  "a value is over the size "
						  "limit");
			break;
		case SC_VALUE_INT:
		case SC_VALUE_DOUBLE:
		case SC_VALUE_BOOL:
			break;
		default:
			return bad_entity(err, id,
					  "an attribute has a null or unknown "
					  "value type");
		}
		size_t vl = sc_wire_value_size(&a.value);
		size_t al = sc_wire_len_size(a.name.len) + sc_wire_len_size(vl);
		if (i < PLAN_ATTRS) {
			pl->attrs[i] = a;
			pl->value_len[i] = (uint32_t)vl;
			pl->attr_len[i] = (uint32_t)al;
		}
		n += sc_wire_len_size(al);
	}
	if (pl->updated_at)
		n += 1 + 8;
	if (by.len)
		n += sc_wire_len_size(by.len);
	if (pl->position)
		n += 1 + sc_wire_varint_len(pl->position);
	if (part.len)
		n += sc_wire_len_size(part.len);
	pl->len = n;
	return 0;
}

/* Write one `entities` field of SnapshotChunk (tag, length, EntityState). */
static uint8_t *put_entity(uint8_t *p, const sc_entity *e, const plan *pl)
{
	*p++ = TAG_CHUNK_ENTITIES;
	p = sc_wire_put_varint(p, pl->len);
	p = put_bytes(p, TAG_STATE_ID, pl->id);
	for (size_t i = 0; i < pl->nattrs; i++) {
		sc_attr a;
		size_t vl, al;
		if (i < PLAN_ATTRS) {
			a = pl->attrs[i];
			vl = pl->value_len[i];
			al = pl->attr_len[i];
		} else {
			a = sc_entity_attr(e, i);
			vl = sc_wire_value_size(&a.value);
			al = attr_len(&a);
		}
		*p++ = TAG_STATE_ATTRS;
		p = sc_wire_put_varint(p, al);
		p = put_bytes(p, TAG_ATTR_NAME, a.name);
		*p++ = TAG_ATTR_VALUE;
		p = sc_wire_put_varint(p, vl);
		p = sc_wire_put_value(p, &a.value);
	}
	if (pl->updated_at) {
		*p++ = TAG_STATE_UPDATED_AT;
		p = sc_wire_put_fixed64(p, (uint64_t)pl->updated_at);
	}
	if (pl->by.len)
		p = put_bytes(p, TAG_STATE_UPDATED_BY, pl->by);
	if (pl->position) {
		*p++ = TAG_STATE_POSITION;
		p = sc_wire_put_varint(p, pl->position);
	}
	if (pl->part.len)
		p = put_bytes(p, TAG_STATE_PARTITION, pl->part);
	return p;
}

/* ---- the compressor ---------------------------------------------------------
 *
 * Walking the version and writing protobuf is bound by memory latency,
 * compression by arithmetic: on two cores they overlap. The encoder fills
 * one chunk buffer while a compressor thread compresses the previous one.
 * At most one job is in flight, so chunks come back in order; the job's
 * fields belong to the compressor thread from submit until it reports the
 * job done (both transitions under `mu`). If the thread cannot be started,
 * the encoder compresses inline instead; the bytes are the same.
 */

enum { JOB_NONE, JOB_QUEUED, JOB_DONE, JOB_QUIT };

typedef struct job {
	const uint8_t *raw; /* input: a chunk's protobuf bytes */
	size_t raw_len;
	uint64_t entities;
	uint8_t *out; /* result: the stored chunk, owned by the job */
	size_t out_len;
	uint64_t checksum;
	int rc;
	sc_error err;
} job;

typedef struct compressor {
	ZSTD_CCtx *cctx;
	uint8_t *z; /* compression output, reused */
	size_t z_cap;
	bool threaded;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state; /* JOB_*, under mu */
	job job;
} compressor;

static int nomem(sc_error *err, const char *what)
{
	return sc_error_set(err, ENOMEM,
			    "out of memory encoding a snapshot (%s); free "
			    "memory or snapshot later",
			    what);
}

/* Compress j->raw into a new block of exactly the frame's size. The frame
 * goes to a scratch buffer reused for every chunk first: a fresh
 * compressBound-sized block per chunk would cost page faults on memory
 * mostly never used. */
static void job_run(compressor *c, job *j)
{
	j->out = NULL;
	j->rc = 0;
	size_t bound = ZSTD_compressBound(j->raw_len);
	if (bound > c->z_cap) {
		uint8_t *z = sc_realloc(c->z, bound);
		if (!z) {
			j->rc = nomem(&j->err, "compression buffer");
			return;
		}
		c->z = z;
		c->z_cap = bound;
	}
	size_t n = ZSTD_compress2(c->cctx, c->z, bound, j->raw, j->raw_len);
	if (ZSTD_isError(n)) {
		if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
			j->rc = nomem(&j->err, "zstd context");
		else
			j->rc = sc_error_set(&j->err, EIO,
					     "zstd failed to compress a "
					     "snapshot chunk: %s",
					     ZSTD_getErrorName(n));
		return;
	}
	j->out = sc_malloc(n);
	if (!j->out) {
		j->rc = nomem(&j->err, "compressed chunk");
		return;
	}
	memcpy(j->out, c->z, n);
	j->out_len = n;
	j->checksum = XXH3_64bits(j->out, n);
}

static void *compressor_main(void *arg)
{
	compressor *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->state == JOB_NONE || c->state == JOB_DONE)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->state == JOB_QUIT)
			break;
		pthread_mutex_unlock(&c->mu);
		job_run(c, &c->job);
		pthread_mutex_lock(&c->mu);
		c->state = JOB_DONE;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void compressor_start(compressor *c, bool want_thread)
{
	c->state = JOB_NONE;
	if (!want_thread)
		return;
	if (pthread_mutex_init(&c->mu, NULL))
		return;
	if (pthread_cond_init(&c->cv, NULL)) {
		pthread_mutex_destroy(&c->mu);
		return;
	}
	if (pthread_create(&c->thread, NULL, compressor_main, c)) {
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		return;
	}
	c->threaded = true;
}

/* Wait until no job is queued; true if a finished job awaits collection. */
static bool compressor_wait(compressor *c)
{
	if (!c->threaded) {
		bool done = c->state == JOB_DONE;
		c->state = JOB_NONE;
		return done;
	}
	pthread_mutex_lock(&c->mu);
	while (c->state == JOB_QUEUED)
		pthread_cond_wait(&c->cv, &c->mu);
	bool done = c->state == JOB_DONE;
	c->state = JOB_NONE;
	pthread_mutex_unlock(&c->mu);
	return done;
}

static void compressor_submit(compressor *c)
{
	if (!c->threaded) {
		job_run(c, &c->job);
		c->state = JOB_DONE;
		return;
	}
	pthread_mutex_lock(&c->mu);
	c->state = JOB_QUEUED;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* Stop the thread (after compressor_wait) and free everything. */
static void compressor_stop(compressor *c)
{
	if (c->threaded) {
		pthread_mutex_lock(&c->mu);
		c->state = JOB_QUIT;
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		c->threaded = false;
	}
	ZSTD_freeCCtx(c->cctx);
	sc_free(c->z);
}

/* ---- the encoder -------------------------------------------------------- */

typedef struct encoder {
	compressor comp;
	uint32_t per_chunk;
	uint8_t *raw; /* protobuf bytes of the open chunk */
	size_t raw_len, raw_cap;
	uint64_t raw_entities; /* entities in the open chunk */
	uint8_t *spare;	       /* the other buffer: the job's input */
	size_t spare_cap;
	sc_snapshot_encoded *s;
	uint32_t cap_chunks;
	uint64_t *raw_sizes, *entity_counts, *checksums; /* per chunk */
} encoder;

static int grow_chunks(encoder *en, sc_error *err)
{
	sc_snapshot_encoded *s = en->s;
	if (s->chunk_count < en->cap_chunks)
		return 0;
	if (s->chunk_count >= SC_SNAPSHOT_CHUNKS_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "a snapshot may have at most %u chunks; "
				    "raise entities_per_chunk",
				    SC_SNAPSHOT_CHUNKS_MAX);
	uint32_t n = en->cap_chunks ? en->cap_chunks * 2 : 16;
	sc_snapshot_blob *c = sc_realloc(s->chunks, n * sizeof *c);
	if (!c)
		return nomem(err, "chunk list");
	s->chunks = c;
	uint64_t **arrays[] = {&en->raw_sizes, &en->entity_counts,
			       &en->checksums};
	for (size_t i = 0; i < 3; i++) {
		uint64_t *a = sc_realloc(*arrays[i], n * sizeof **arrays[i]);
		if (!a)
			return nomem(err, "chunk list");
		*arrays[i] = a;
	}
	en->cap_chunks = n;
	return 0;
}

/* Wait for the job in flight, if any, and append its chunk. */
static int collect(encoder *en, sc_error *err)
{
	if (!compressor_wait(&en->comp))
		return 0;
	job *j = &en->comp.job;
	int rc = j->rc;
	if (rc) {
		if (err)
			*err = j->err;
		return rc;
	}
	rc = grow_chunks(en, err);
	if (rc) {
		sc_free(j->out);
		j->out = NULL;
		return rc;
	}
	sc_snapshot_encoded *s = en->s;
	uint32_t i = s->chunk_count++;
	s->chunks[i].data = j->out;
	s->chunks[i].len = j->out_len;
	j->out = NULL;
	en->raw_sizes[i] = j->raw_len;
	en->entity_counts[i] = j->entities;
	en->checksums[i] = j->checksum;
	s->bytes_raw += j->raw_len;
	s->bytes_compressed += j->out_len;
	return 0;
}

/* Hand the open chunk to the compressor and continue in the other buffer. */
static int flush_chunk(encoder *en, sc_error *err)
{
	if (!en->raw_entities)
		return 0;
	int rc = collect(en, err);
	if (rc)
		return rc;
	job *j = &en->comp.job;
	j->raw = en->raw;
	j->raw_len = en->raw_len;
	j->entities = en->raw_entities;
	compressor_submit(&en->comp);
	uint8_t *b = en->raw;
	size_t cap = en->raw_cap;
	en->raw = en->spare;
	en->raw_cap = en->spare_cap;
	en->spare = b;
	en->spare_cap = cap;
	en->raw_len = 0;
	en->raw_entities = 0;
	return 0;
}

static int add_entity(encoder *en, const sc_entity *e, uint64_t position,
		      sc_error *err)
{
	plan pl;
	int rc = entity_plan(e, position, &pl, err);
	if (rc)
		return rc;
	size_t need = sc_wire_len_size(pl.len);
	if (need > SC_SNAPSHOT_CHUNK_RAW_MAX) {
		sc_str id = sc_entity_id(e);
		return sc_error_set(err, SC_ETOOBIG,
				    "entity '%.*s' takes %zu bytes encoded, "
				    "over the %u-byte chunk limit; it cannot "
				    "be snapshotted",
				    id.len > 64 ? 64 : (int)id.len, id.ptr,
				    need, SC_SNAPSHOT_CHUNK_RAW_MAX);
	}
	if (en->raw_len + need > SC_SNAPSHOT_CHUNK_RAW_MAX) {
		rc = flush_chunk(en, err);
		if (rc)
			return rc;
	}
	if (en->raw_len + need > en->raw_cap) {
		size_t cap = en->raw_cap ? en->raw_cap : 64 * 1024;
		while (cap < en->raw_len + need)
			cap *= 2;
		uint8_t *r = sc_realloc(en->raw, cap);
		if (!r)
			return nomem(err, "chunk buffer");
		en->raw = r;
		en->raw_cap = cap;
	}
	uint8_t *end = put_entity(en->raw + en->raw_len, e, &pl);
	SC_INSIST((size_t)(end - en->raw) == en->raw_len + need);
	SC_UNUSED(end);
	en->raw_len += need;
	en->raw_entities++;
	if (en->raw_entities >= en->per_chunk ||
	    en->raw_len >= SC_SNAPSHOT_CHUNK_RAW_TARGET)
		return flush_chunk(en, err);
	return 0;
}

/* ---- the header record --------------------------------------------------- */

static int encode_header(encoder *en, const sc_snapshot_params *prm,
			 sc_error *err)
{
	int64_t created_at = prm->created_at;
	sc_snapshot_encoded *s = en->s;
	Statecache__V1__SnapshotHeader h =
	    STATECACHE__V1__SNAPSHOT_HEADER__INIT;
	h.format_version = SC_SNAPSHOT_FORMAT_VERSION;
	h.position = s->position;
	h.entity_count = s->entity_count;
	h.chunk_count = s->chunk_count;
	h.n_chunk_checksums = s->chunk_count;
	h.chunk_checksums = en->checksums;
	h.n_chunk_raw_sizes = s->chunk_count;
	h.chunk_raw_sizes = en->raw_sizes;
	h.n_chunk_entity_counts = s->chunk_count;
	h.chunk_entity_counts = en->entity_counts;
	h.created_at = (uint64_t)created_at;
	if (prm->one_partition) {
		h.one_partition = true;
		h.partition.len = prm->partition.len;
		h.partition.data = (uint8_t *)prm->partition.ptr;
	}
	size_t pb = statecache__v1__snapshot_header__get_packed_size(&h);
	size_t len = SC_SNAPSHOT_HEADER_FIXED + pb + SC_SNAPSHOT_HEADER_TRAILER;
	if (len > SC_SNAPSHOT_HEADER_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "snapshot header would be %zu bytes, over "
				    "the %u-byte limit; raise "
				    "entities_per_chunk",
				    len, SC_SNAPSHOT_HEADER_MAX);
	uint8_t *p = sc_malloc(len);
	if (!p)
		return nomem(err, "header");
	memcpy(p, SC_SNAPSHOT_MAGIC, SC_SNAPSHOT_MAGIC_LEN);
	sc_put_be32(p + 8, SC_SNAPSHOT_FORMAT_VERSION);
	sc_put_be32(p + 12, (uint32_t)pb);
	size_t packed = statecache__v1__snapshot_header__pack(
	    &h, p + SC_SNAPSHOT_HEADER_FIXED);
	SC_INSIST(packed == pb);
	SC_UNUSED(packed);
	sc_put_be64(p + len - 8, XXH3_64bits(p, len - 8));
	s->header.data = p;
	s->header.len = len;
	s->bytes_compressed += len;
	return 0;
}

/* ---- public ------------------------------------------------------------- */

void sc_snapshot_encoded_free(sc_snapshot_encoded *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < s->chunk_count; i++)
		sc_free(s->chunks[i].data);
	sc_free(s->chunks);
	sc_free(s->header.data);
	sc_free(s);
}

/* Entities kept in flight ahead of the encoder, and the bytes of each
 * prefetched: the state's header, id, attribute table and usually its
 * strings (one allocation; reading past its end is harmless for a
 * prefetch). */
#define PREFETCH_AHEAD 16
#define PREFETCH_BYTES 256

static void prefetch_entity(const sc_entity *e)
{
	for (size_t off = 0; off < PREFETCH_BYTES; off += 64)
		__builtin_prefetch((const char *)e + off);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int sc_snapshot_encode(const sc_view *view, const sc_snapshot_params *p,
		       sc_snapshot_encoded **out, sc_error *err)
{
	if (out)
		*out = NULL;
	if (!view || !out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_snapshot_encode needs a view and an "
				    "output pointer");
	/* A view with cold partitions lacks their states: a snapshot of it
	 * would not be the state at its position. */
	size_t cold = sc_view_cold_count(view);
	if (p && p->one_partition)
		cold =
		    p->partition.len &&
		    sc_view_residency(view, p->partition) == SC_RESIDENCY_COLD;
	if (cold)
		return sc_error_set(err, SC_ESTATE,
				    "the view has %zu cold partitions whose "
				    "states are not in memory; load them or "
				    "checkpoint partitions one by one",
				    cold);
	sc_snapshot_params prm = {0};
	if (p)
		prm = *p;
	if (!prm.zstd_level)
		prm.zstd_level = 3;
	if (!prm.entities_per_chunk)
		prm.entities_per_chunk = SC_SNAPSHOT_CHUNK_ENTITIES_DEFAULT;
	if (prm.entities_per_chunk > SC_SNAPSHOT_CHUNK_ENTITIES_MAX)
		return sc_error_set(
		    err, SC_EINVAL, "entities_per_chunk is %u, the limit is %u",
		    prm.entities_per_chunk, SC_SNAPSHOT_CHUNK_ENTITIES_MAX);
	if (prm.zstd_level < ZSTD_minCLevel() ||
	    prm.zstd_level > ZSTD_maxCLevel())
		return sc_error_set(
		    err, SC_EINVAL, "zstd level %d is out of range %d..%d",
		    prm.zstd_level, ZSTD_minCLevel(), ZSTD_maxCLevel());
	if (!prm.created_at)
		prm.created_at = now_ns();
	if (prm.one_partition && (prm.partition.len > SC_EVENT_FIELD_MAX ||
				  (prm.partition.len && !prm.partition.ptr)))
		return sc_error_set(err, SC_EINVAL,
				    "a checkpoint's partition must be at most "
				    "%u bytes",
				    (unsigned)SC_EVENT_FIELD_MAX);

	encoder en = {.per_chunk = prm.entities_per_chunk};
	int rc = 0;
	en.s = sc_calloc(1, sizeof *en.s);
	if (!en.s)
		return nomem(err, "snapshot");
	en.s->position = sc_view_position(view);
	en.comp.cctx = ZSTD_createCCtx_advanced(sc_zstd_mem);
	if (!en.comp.cctx) {
		rc = nomem(err, "zstd context");
		goto done;
	}
	if (ZSTD_isError(ZSTD_CCtx_setParameter(
		en.comp.cctx, ZSTD_c_compressionLevel, prm.zstd_level)) ||
	    ZSTD_isError(
		ZSTD_CCtx_setParameter(en.comp.cctx, ZSTD_c_checksumFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(en.comp.cctx,
						ZSTD_c_contentSizeFlag, 1))) {
		rc = sc_error_set(err, SC_EINVAL,
				  "zstd rejected the compression parameters");
		goto done;
	}
	compressor_start(&en.comp, !prm.compress_inline);

	/* The iterator yields entities in hash order, so each one is a cache
	 * miss; keeping a few in flight turns the walk from latency-bound into
	 * bandwidth-bound. */
	sc_view_iter it;
	if (prm.one_partition)
		sc_view_iter_init_in(view, prm.partition, &it);
	else
		sc_view_iter_init_all(view, &it);
	const sc_entity *ahead[PREFETCH_AHEAD];
	size_t head = 0, inflight = 0;
	for (;;) {
		while (inflight < PREFETCH_AHEAD) {
			const sc_entity *nx = sc_view_iter_next(&it);
			if (!nx)
				break;
			prefetch_entity(nx);
			ahead[(head + inflight++) % PREFETCH_AHEAD] = nx;
		}
		if (!inflight)
			break;
		const sc_entity *e = ahead[head];
		head = (head + 1) % PREFETCH_AHEAD;
		inflight--;
		rc = add_entity(&en, e, en.s->position, err);
		if (rc)
			goto done;
		en.s->entity_count++;
	}
	rc = flush_chunk(&en, err);
	if (!rc)
		rc = collect(&en, err);
	if (!rc)
		rc = encode_header(&en, &prm, err);
	SC_ENSURE(rc ||
		  en.s->entity_count ==
		      (prm.one_partition ? sc_view_len_in(view, prm.partition)
					 : sc_view_len_all(view)));

done:
	/* A job may still be in flight after an error: wait for it before
	 * freeing its input, and drop its output. */
	if (compressor_wait(&en.comp))
		sc_free(en.comp.job.out);
	compressor_stop(&en.comp);
	sc_free(en.raw);
	sc_free(en.spare);
	sc_free(en.raw_sizes);
	sc_free(en.entity_counts);
	sc_free(en.checksums);
	if (rc) {
		sc_snapshot_encoded_free(en.s);
		return rc;
	}
	*out = en.s;
	return 0;
}
