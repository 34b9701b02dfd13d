/*
 * Bulk loading of entity states into the pending version: the restore
 * path. Internal to the library (the snapshot layer is the caller).
 *
 * sc_cache_load_entity (cache.h) takes attributes in any order, checks
 * every field, sorts and looks the id up before it stores the state. A
 * snapshot's states come checked and sorted already (the decoder verifies
 * every limit and the name order), so this path builds each state in one
 * allocation straight from its sorted attributes and stores it without a
 * separate lookup.
 *
 * Writer thread only, like every other change to the pending version. On
 * any error the caller discards the pending version (sc_cache_discard).
 */
#ifndef STATECACHE_CACHE_LOAD_H
#define STATECACHE_CACHE_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

/*
 * sc_cache_load_sorted - store the state (id, attrs, updated_at,
 * updated_by, position) in the pending version (opened if none is),
 * replacing the state of that id a published version holds. A state of
 * that id the pending version made itself (loaded or applied) is an error:
 * a snapshot never holds an id twice.
 *
 * The caller guarantees what the snapshot decoder checks: id 1..
 * SC_ENTITY_ID_MAX bytes, names 1..SC_ATTR_NAME_MAX bytes in strictly
 * increasing bytewise order, no SC_VALUE_NULL value, every pointer valid
 * for its length (debug builds assert it). Errors: SC_ECORRUPT (the id is
 * in the pending version already; nothing changed), SC_ETOOBIG (the state
 * would take 4 GiB or more; nothing changed), ENOMEM (the pending version
 * is poisoned), SC_EPOISONED, or the map's error.
 */
int sc_cache_load_sorted(sc_cache *cache, sc_str id, const sc_attr *attrs,
			 size_t nattrs, int64_t updated_at, sc_str updated_by,
			 uint64_t position, sc_error *err);

/*
 * The same in steps, so that other threads can do the decoding and lay
 * the states out while the writer allocates and stores them. The writer
 * allocates every block itself: later changes free and reuse state blocks
 * on the writer thread, and glibc gives each thread its own heap, so
 * blocks allocated elsewhere would leave their memory stranded there once
 * freed.
 *
 *   sc_cache_load_begin    open the pending version (writer); *born is
 *                          its generation.
 *   sc_cache_load_measure  bytes of a state's image (a multiple of 8);
 *                          SC_ETOOBIG for 4 GiB or more (any thread).
 *   sc_cache_load_write    lay the state out at dst (`bytes` from measure,
 *                          8-aligned) and fill *out but for `off` (any
 *                          thread; reads the cache's map pointer only, to
 *                          hash the id). Same requirements on the state as
 *                          sc_cache_load_sorted.
 *   sc_cache_load_store    copy an image into a new block and put it into
 *                          the pending version (writer). Errors as
 *                          sc_cache_load_sorted.
 *
 * The pending version must stay open from begin to the last store.
 */

/* What storing an image needs besides the image itself, so the writer
 * reads nothing else of it. */
typedef struct sc_cache_loaded {
	size_t off;    /* the image's offset in the caller's buffer */
	uint64_t hash; /* sc_hamt_hash of the id in the cache's map */
	uint64_t position;
	uint32_t size; /* the state's size (the image is rounded up to 8) */
	uint32_t id_len;
} sc_cache_loaded;

int sc_cache_load_begin(sc_cache *cache, uint64_t *born, sc_error *err);
int sc_cache_load_measure(sc_str id, const sc_attr *attrs, size_t nattrs,
			  sc_str updated_by, size_t *bytes, sc_error *err);
void sc_cache_load_write(const sc_cache *cache, sc_str id, const sc_attr *attrs,
			 size_t nattrs, int64_t updated_at, sc_str updated_by,
			 uint64_t position, void *dst, size_t bytes,
			 sc_cache_loaded *out);
int sc_cache_load_store(sc_cache *cache, const void *image,
			const sc_cache_loaded *l, sc_error *err);

#endif
