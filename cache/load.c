/*
 * Bulk loading of entity states (cache/load.h): the restore path.
 *
 * A state is laid out as cache/entity.h describes (header, key, table,
 * strings), built here in one pass over attributes that are already sorted
 * and unique, so neither the pointer sort nor the merge of
 * sc_entity_build_loaded is needed. The pending version is opened and
 * accounted for exactly as cache.c does for sc_cache_load_entity.
 *
 * Storing: one update descent finds the previous state of the id, if any.
 * One the pending version made itself means the id came twice (a damaged
 * or crafted snapshot that passed its per-entity checks): an error, nothing
 * changed. One a published version holds is replaced and its bytes are
 * counted as garbage of the superseded version, as cache.c does.
 */
#include "cache/load.h"

#include <errno.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* ==== pending version ===================================================== */

static void counter_add(_Atomic size_t *c, size_t add, size_t sub)
{
	size_t v = atomic_load_explicit(c, memory_order_relaxed);
	atomic_store_explicit(c, v + add - sub, memory_order_relaxed);
}

/* ==== building a state ==================================================== */

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static bool is_blob(sc_value_type t)
{
	return t == SC_VALUE_STRING || t == SC_VALUE_BYTES;
}

int sc_cache_load_measure(sc_str id, const sc_attr *attrs, size_t nattrs,
			  sc_str actor, size_t *bytes, sc_error *err)
{
	/* Every length below 2^32 and at most 2^24 attributes keep these
	 * sums far from overflow in 64 bits. */
	uint64_t strings = (uint64_t)actor.len + 1;
	bool ok = actor.len < UINT32_MAX && nattrs < (1u << 24);
	for (size_t i = 0; ok && i < nattrs; i++) {
		SC_REQUIRE(attrs[i].name.len >= 1 &&
			   attrs[i].name.len <= SC_ATTR_NAME_MAX);
		SC_REQUIRE(attrs[i].value.type != SC_VALUE_NULL);
		strings += attrs[i].name.len + 1;
		if (is_blob(attrs[i].value.type)) {
			ok = attrs[i].value.u.s.len < UINT32_MAX;
			strings += (uint64_t)attrs[i].value.u.s.len + 1;
		}
	}
	uint64_t size = (uint64_t)sc_entity_table_off(id.len) +
			(uint64_t)nattrs * sizeof(sc_entity_rec) + strings;
	if (!ok || size >= UINT32_MAX)
		return sc_entity_too_big(id, err);
	*bytes = align8((size_t)size);
	return SC_OK;
}

void sc_cache_load_write(const sc_cache *cache, sc_str id, const sc_attr *attrs,
			 size_t nattrs, int64_t updated_at, sc_str actor,
			 uint64_t position, void *dst, size_t bytes,
			 sc_cache_loaded *out)
{
	sc_entity *e = dst;
	char *base = dst;
	char *p;
	/* born is set when the state is stored. */
	sc_entity_rec *tab = sc_entity_put_head(e, id, nattrs, position,
						updated_at, 0, actor, &p);
	for (size_t i = 0; i < nattrs; i++)
		p = sc_entity_put_attr(base, p, &tab[i], &attrs[i]);
	size_t size = (size_t)(p - base);
	SC_ENSURE(align8(size) == bytes);
	e->size = (uint32_t)size;
	/* The padding up to 8 bytes is never read; zero it so the block's
	 * bytes do not depend on what the memory held before. */
	memset(p, 0, bytes - size);
	out->off = 0;
	out->hash = sc_hamt_hash(cache->map, id.ptr, id.len);
	out->position = position;
	out->size = (uint32_t)size;
	out->id_len = (uint32_t)id.len;
}

/* ==== storing ============================================================= */

typedef struct replace_ctx {
	sc_cache *cache;
	sc_entity *ne;
	size_t dropped;
} replace_ctx;

static int replace_update(void *ctx, const sc_hamt_key *old_key,
			  void *old_value, const sc_hamt_key **new_key,
			  void **new_value)
{
	replace_ctx *r = ctx;
	const sc_entity *prev = old_value;
	SC_UNUSED(old_key);
	/* A load never meets a state its own pending version made: that is
	 * an id given twice. */
	if (prev && prev->born == r->cache->generation)
		return SC_ECORRUPT;
	/* A state a published version holds waits for reclamation. */
	r->dropped = prev ? prev->size : 0;
	*new_key = sc_entity_key(r->ne);
	*new_value = r->ne;
	return SC_OK;
}

int sc_cache_load_begin(sc_cache *cache, uint64_t *born, sc_error *err)
{
	if (cache->poisoned)
		return sc_error_set(err, SC_EPOISONED,
				    "the pending version is unusable after an "
				    "allocation failure; discard it");
	int rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	*born = cache->generation;
	return SC_OK;
}

/* Put block `ne` (its image complete, born set) into the pending version;
 * on error it is freed. */
static int store_block(sc_cache *cache, sc_entity *ne, const sc_cache_loaded *l,
		       sc_error *err)
{
	const char *id = (const char *)sc_entity_key(ne)->bytes;
	replace_ctx r = {.cache = cache, .ne = ne};
	int rc = sc_hamt_edit_update_hashed(cache->edit, id, l->id_len, l->hash,
					    replace_update, &r);
	if (rc) {
		if (rc == SC_ECORRUPT)
			rc = sc_error_set(
			    err, rc,
			    "entity '%.*s' is loaded twice "
			    "into one pending version",
			    (int)(l->id_len > 64 ? 64 : l->id_len), id);
		else
			rc = sc_cache_poison(cache, rc, err,
					     "inserting an entity");
		sc_pool_free(&cache->entity_pool, ne, sc_entity_block_size(ne));
		return rc;
	}
	counter_add(&cache->entity_bytes, l->size, 0);
	cache->pending_garbage_entity_bytes += r.dropped;
	if (l->position > cache->pending_position)
		cache->pending_position = l->position;
	return SC_OK;
}

int sc_cache_load_store(sc_cache *cache, const void *image,
			const sc_cache_loaded *l, sc_error *err)
{
	SC_REQUIRE(cache->edit);
	if (cache->poisoned)
		return sc_error_set(err, SC_EPOISONED,
				    "the pending version is unusable after an "
				    "allocation failure; discard it");
	size_t bytes = ((size_t)l->size + 7u) & ~(size_t)7u;
	/* Allocated here, on the writer thread: from its pool and its malloc
	 * arena, where later changes free and reuse state blocks. */
	sc_entity *ne = sc_pool_alloc(&cache->entity_pool, bytes);
	if (!ne)
		return sc_cache_poison(cache, ENOMEM, err,
				       "building an entity state");
	memcpy(ne, image, bytes);
	ne->born = cache->generation;
	return store_block(cache, ne, l, err);
}

int sc_cache_load_sorted(sc_cache *cache, sc_str id, const sc_attr *attrs,
			 size_t nattrs, int64_t updated_at, sc_str updated_by,
			 uint64_t position, sc_error *err)
{
	SC_REQUIRE(cache && id.ptr && id.len >= 1 &&
		   id.len <= SC_ENTITY_ID_MAX);
	SC_REQUIRE(!nattrs || attrs);
	uint64_t born = 0; /* set by sc_cache_load_begin on success */
	int rc = sc_cache_load_begin(cache, &born, err);
	if (rc)
		return rc;
	size_t bytes;
	rc = sc_cache_load_measure(id, attrs, nattrs, updated_by, &bytes, err);
	if (rc)
		return rc;
	sc_entity *ne = sc_pool_alloc(&cache->entity_pool, bytes);
	if (!ne)
		return sc_cache_poison(cache, ENOMEM, err,
				       "building an entity state");
	sc_cache_loaded l;
	sc_cache_load_write(cache, id, attrs, nattrs, updated_at, updated_by,
			    position, ne, bytes, &l);
	ne->born = born;
	return store_block(cache, ne, &l, err);
}
