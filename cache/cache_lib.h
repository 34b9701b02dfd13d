/*
 * What the rest of the library may call of the cache layer beyond
 * statecache/cache.h. Not installed. The one header of cache/ that other
 * layers include (store/ validates and applies events, snapshot/ restores
 * states); cache_internal.h and entity.h are private to cache/.
 *
 *   store/     sc_entity_validate_event   before a batch's transaction
 *              sc_entity_validate_stored  on every event read back
 *              sc_entity_apply_valid      as-of reads fold read events
 *              sc_cache_apply_valid       apply what was validated
 *              sc_cache_apply_batch_valid the same for a batch, in lanes
 *   snapshot/  sc_cache_load_*            the restore: states laid out off
 *                                         the writer, stored by it
 *   watch/     sc_cache_hook_install      a wake-up at every promote, the
 *              sc_cache_version_newest    newest version and the bytes
 *              sc_view_garbage_before     superseded versions hold
 *
 * Writer-side calls (apply, load_begin, load_store) run on the cache's
 * writer thread, like every other change to the pending version.
 */
#ifndef STATECACHE_CACHE_LIB_H
#define STATECACHE_CACHE_LIB_H

#include <stddef.h>
#include <stdint.h>

#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

/* ---- validation and apply ------------------------------------------------ */

/*
 * The largest snapshot encoding of one entity state: its EntityState
 * message with the framing one entity takes in a SnapshotChunk (the
 * field's key and length), as sc_entity_snapshot_bytes counts it. A
 * snapshot chunk holds at least this much (snapshot/snapshot.h asserts it),
 * so every state the cache holds can be snapshotted. The cache refuses
 * (SC_ETOOBIG, nothing changed) an event or a load that would make a
 * larger state: checked when the event is accepted, never left to a later
 * snapshot to fail on.
 */
#define SC_STATE_SNAPSHOT_MAX (64u << 20)

/*
 * sc_entity_snapshot_bytes - bytes `e` takes in a snapshot chunk: the
 * EntityState message snapshot/encode.c writes for it, with its key and
 * length in the chunk. Any thread; `e` is only read.
 */
size_t sc_entity_snapshot_bytes(const sc_entity *e);

/*
 * sc_entity_validate_event - check `ev` as sc_cache_apply does: id length,
 * known type, attribute names, value types, string values that are valid
 * UTF-8, NULL pointers with non-zero lengths. Errors: SC_EINVAL with a
 * message naming the field (and, for a string value that is not UTF-8,
 * the entity and the attribute).
 */
int sc_entity_validate_event(const sc_event *ev, sc_error *err);

/*
 * sc_entity_validate_stored - sc_entity_validate_event for an event read
 * back from a log: every check but the UTF-8 one of string values. Stores
 * written before string values had to be UTF-8 may hold others; what was
 * committed stays readable (appends refuse them).
 */
int sc_entity_validate_stored(const sc_event *ev, sc_error *err);

/*
 * sc_entity_apply_valid - sc_entity_apply (cache.h) of an event its caller
 * already checked (with sc_entity_validate_event or, for an event read
 * from a log, sc_entity_validate_stored). Any thread. Errors: ENOMEM,
 * SC_ETOOBIG, SC_EINVAL (the event's id is not the state's).
 */
int sc_entity_apply_valid(const sc_entity *prev, const sc_event *ev,
			  sc_entity **out, sc_error *err);

/*
 * sc_cache_apply_valid - sc_cache_apply of an event its caller already
 * checked with sc_entity_validate_event (the store validates every event of
 * a batch before its transaction, and decoding validates what replay
 * reads). Errors as sc_cache_apply but SC_EINVAL.
 */
int sc_cache_apply_valid(sc_cache *cache, const sc_event *ev, sc_error *err);

/*
 * sc_cache_apply_batch_valid - sc_cache_apply_batch (cache.h) of events its
 * caller already checked with sc_entity_validate_event: the apply lanes
 * for the store's appends and its replay. Errors as sc_cache_apply_batch
 * but SC_EINVAL; on any error discard the pending version.
 */
int sc_cache_apply_batch_valid(sc_cache *cache, const sc_event *events,
			       size_t n, size_t *failed, sc_error *err);

/* ---- restore ------------------------------------------------------------- */

/*
 * sc_cache_load_entity (cache.h) takes attributes in any order, checks
 * every field, sorts and looks the id up before it stores the state. A
 * snapshot's states come checked and sorted already (the decoder verifies
 * every limit and the name order), so the restore builds each state in one
 * pass straight from its sorted attributes and stores it without a
 * separate lookup. It runs in steps, so that other threads can do the
 * decoding and lay the states out while the writer allocates and stores
 * them. The writer allocates every block itself: later changes free and
 * reuse state blocks on the writer thread, and glibc gives each thread its
 * own heap, so blocks allocated elsewhere would leave their memory
 * stranded there once freed.
 *
 *   sc_cache_load_begin    open the pending version (writer) for the
 *                          state at `position` (the snapshot's): the
 *                          pending position becomes it, if larger, so
 *                          sc_view_position of the version promoted is the
 *                          snapshot's even when its last events left no
 *                          entity of that position (a delete). *born is
 *                          the pending version's generation.
 *   sc_cache_load_measure  bytes of a state's image (a multiple of 8);
 *                          SC_ETOOBIG for 4 GiB or more (any thread).
 *   sc_cache_load_write    lay the state out at dst (`bytes` from measure,
 *                          8-aligned) and fill *out but for `off` (any
 *                          thread; reads the cache's map pointer only, to
 *                          hash the id).
 *   sc_cache_load_store    copy an image into a new block and put it into
 *                          the pending version (writer).
 *
 * A state belongs to `partition` (empty: the default one); the store puts
 * it into that partition's tree.
 * The caller guarantees what the snapshot decoder checks: id 1..
 * SC_ENTITY_ID_MAX bytes, a partition of at most SC_EVENT_FIELD_MAX
 * bytes, names 1..SC_ATTR_NAME_MAX bytes in strictly
 * increasing bytewise order, no SC_VALUE_NULL value, every pointer valid
 * for its length (debug builds assert part of it). The pending version
 * must stay open from begin to the last store; on any error the caller
 * discards it (sc_cache_discard).
 */

/* What storing an image needs besides the image itself, so the writer
 * reads nothing else of it. */
typedef struct sc_cache_loaded {
	size_t off;    /* the image's offset in the caller's buffer */
	uint64_t hash; /* the id's hash in the cache's map */
	uint64_t position;
	uint32_t size; /* the state's size (the image is rounded up to 8) */
	uint32_t id_len;
} sc_cache_loaded;

int sc_cache_load_begin(sc_cache *cache, uint64_t position, uint64_t *born,
			sc_error *err);
int sc_cache_load_measure(sc_str partition, sc_str id, const sc_attr *attrs,
			  size_t nattrs, sc_str updated_by, size_t *bytes,
			  sc_error *err);
void sc_cache_load_write(const sc_cache *cache, sc_str partition, sc_str id,
			 const sc_attr *attrs, size_t nattrs,
			 int64_t updated_at, sc_str updated_by,
			 uint64_t position, void *dst, size_t bytes,
			 sc_cache_loaded *out);
/* Errors: SC_ECORRUPT (the id is in the pending version already, made by
 * it: a snapshot never holds an id twice; nothing changed), SC_ETOOBIG
 * (the state would take more than SC_STATE_SNAPSHOT_MAX in a snapshot;
 * nothing changed), ENOMEM (the pending version is poisoned),
 * SC_EPOISONED, or the map's error. */
int sc_cache_load_store(sc_cache *cache, const void *image,
			const sc_cache_loaded *l, sc_error *err);

/* ---- change feeds ----------------------------------------------------------
 */

/*
 * A hook hung on a cache. The writer calls `promoted` at the end of every
 * successful sc_cache_promote, after the new version is published, with
 * that version (pinned by nothing: read only its number and the counters
 * below through it, during the call). It runs on the writer thread and must
 * neither block nor allocate: a wake-up, never per-watcher work.
 * sc_cache_destroy calls `destroy` once, first, when a hook is installed.
 */
typedef struct sc_cache_hook {
	void (*promoted)(struct sc_cache_hook *hook, const sc_view *newest);
	void (*destroy)(struct sc_cache_hook *hook);
} sc_cache_hook;

/*
 * sc_cache_hook_install - hang `hook` on `cache` unless one is there
 * already; returns the hook installed (`hook`, or the earlier one: then the
 * caller still owns `hook`). Any thread. A promote that runs at the same
 * time either calls the hook or has published its version before the
 * install returns (a sequentially consistent fence on both sides), so a
 * caller that reads sc_cache_version_newest after installing misses no
 * version.
 */
sc_cache_hook *sc_cache_hook_install(sc_cache *cache, sc_cache_hook *hook);

/* The newest promoted version number (acquire). Any thread. */
uint64_t sc_cache_version_newest(const sc_cache *cache);

/*
 * sc_view_garbage_before - bytes (HAMT nodes and entity states) that the
 * commits making versions 1..n dropped from their base versions, n being
 * the view's version: the sum of what every older version holds alone
 * while it waits for reclamation. What versions a..b-1 hold back together
 * is garbage_before(b) - garbage_before(a). The view must be pinned.
 */
uint64_t sc_view_garbage_before(const sc_view *view);

#endif
