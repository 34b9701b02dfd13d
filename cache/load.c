/*
 * Bulk loading of entity states (cache/cache_lib.h): the restore path.
 *
 * A state is laid out as cache/entity.h describes (header, key, table,
 * strings), built here in one pass over attributes that are already sorted
 * and unique, so neither the pointer sort nor the merge of
 * sc_entity_build_loaded is needed.
 *
 * Storing goes through the one write path of cache.c (sc_change): one
 * update descent finds the previous state of the id, if any. One the
 * pending version made itself means the id came twice (a damaged or
 * crafted snapshot that passed its per-entity checks): an error, nothing
 * changed. One a published version holds is replaced and its bytes are
 * counted as garbage of the superseded version.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* ==== building a state ==================================================== */

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static bool is_blob(sc_value_type t)
{
	return t == SC_VALUE_STRING || t == SC_VALUE_BYTES;
}

int sc_cache_load_measure(sc_str part, sc_str id, const sc_attr *attrs,
			  size_t nattrs, sc_str actor, size_t *bytes,
			  sc_error *err)
{
	/* Every length below 2^32 and at most 2^24 attributes keep these
	 * sums far from overflow in 64 bits. */
	SC_REQUIRE(part.len <= SC_EVENT_FIELD_MAX);
	uint64_t strings =
	    (uint64_t)actor.len + 1 + (part.len ? part.len + 1 : 0);
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

void sc_cache_load_write(const sc_cache *cache, sc_str part, sc_str id,
			 const sc_attr *attrs, size_t nattrs,
			 int64_t updated_at, sc_str actor, uint64_t position,
			 void *dst, size_t bytes, sc_cache_loaded *out)
{
	sc_entity *e = dst;
	char *base = dst;
	char *p;
	/* born is set when the state is stored. */
	sc_entity_rec *tab = sc_entity_put_head(e, part, id, nattrs, position,
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

int sc_cache_load_begin(sc_cache *cache, uint64_t position, uint64_t *born,
			sc_error *err)
{
	int rc = sc_cache_check_writable(cache, err);
	if (!rc)
		rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	/* The state restored is the state at `position`, whatever the
	 * positions of the entities left in it. */
	if (position > cache->pending_position)
		cache->pending_position = position;
	*born = cache->generation;
	return SC_OK;
}

/* Put block `ne` (its image complete, born set) into the pending version
 * through the one write path; on error it is freed. */
static int store_block(sc_cache *cache, sc_entity *ne, const sc_cache_loaded *l,
		       sc_error *err)
{
	const char *id = (const char *)sc_entity_key(ne)->bytes;
	sc_change c = {
	    .cache = cache, .ne = ne, .position = l->position, .unique = true};
	sc_hamt_edit *edit;
	/* Poisons on failure; SC_ESTATE (nothing changed) for a cold
	 * partition not being loaded. */
	int prc = sc_cache_part_open(cache, sc_entity_partition(ne), &edit,
				     &c.bytes, err);
	if (prc)
		return sc_change_done(&c, prc);
	int rc = sc_hamt_edit_update_hashed(edit, id, l->id_len, l->hash,
					    sc_change_update, &c);
	if (rc == SC_ECORRUPT)
		sc_error_set(err, rc,
			     "entity '%.*s' is loaded twice into one pending "
			     "version",
			     (int)(l->id_len > 64 ? 64 : l->id_len), id);
	else if (rc)
		sc_cache_poison(cache, rc, err, "storing an entity state");
	return sc_change_done(&c, rc);
}

int sc_cache_load_store(sc_cache *cache, const void *image,
			const sc_cache_loaded *l, sc_error *err)
{
	SC_REQUIRE(cache->edit);
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	/* A crafted snapshot may describe a state larger than one chunk
	 * may hold when snapshotted again: refused like such an event. */
	rc = sc_entity_check_snapshot(image, err);
	if (rc)
		return rc;
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
