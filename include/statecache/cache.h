/*
 * statecache: the versioned entity cache.
 *
 * The cache holds the state of every entity as an immutable version (a HAMT
 * from entity id to entity state per partition). One writer applies events into
 * a pending version and then promotes it (one release store of the version
 * pointer) or discards it (everything it allocated is freed). Any number of
 * reader threads read the newest promoted version without locks: each reader
 * thread owns an sc_reader, whose slot records the version it is using;
 * superseded versions are freed once no slot can reach them (see
 * cache/reclaim.c).
 *
 *   writer:  apply apply apply ... promote        (or discard)
 *                  \ pending version /   \ published, visible to readers
 *   reader:  sc_reader_get / sc_reader_begin ... sc_reader_end
 *
 * Thread safety: writer functions (sc_cache_apply, _apply_batch, _promote,
 * _discard, _load_entity, _pending_*) must be called from one thread at a
 * time (sc_cache_apply_batch hands parts of a batch to the cache's own
 * worker threads and returns when they are done).
 * Reader functions are called by the thread that owns the sc_reader.
 * sc_cache_len and sc_cache_stats_get may be called from any thread.
 *
 * Partitions: an entity is identified by (partition, id). An event whose
 * `partition` is empty belongs to the default partition (empty name); the
 * same id in two partitions is two entities, and the state of a partition
 * is the fold of that partition's events. The calls without a partition
 * (sc_reader_get, sc_view_get, sc_view_len, sc_view_iter_init,
 * sc_cache_pending_get, sc_cache_load_entity) read or write the default
 * partition, so a cache fed by events that never name a partition behaves
 * as one namespace; the `_in` variants take a partition (an empty one is
 * the default), and the `_all` ones span every partition. A view is one
 * version of every partition at once.
 *
 * Residency: a named partition may be cold in a version (the store keeps
 * only a working set of partitions in memory); every call below reads a
 * cold partition as empty (the default partition is always resident). The
 * store's own calls load what they read; cache/cache_lib.h describes
 * residency.
 */
#ifndef STATECACHE_CACHE_H
#define STATECACHE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/api.h"
#include "statecache/error.h"
#include "statecache/event.h"
#include "statecache/hamt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_cache sc_cache;
typedef struct sc_reader sc_reader;
typedef struct sc_view sc_view;
typedef struct sc_entity sc_entity;

/* ---- entity state (immutable once published) --------------------------- */

/*
 * An entity state is one immutable block: id, attributes sorted by name,
 * updated_at, updated_by, position. Every string it returns (id, updated_by,
 * names, string and bytes values) is followed by a NUL byte that its length
 * does not count, so text can be passed to C string functions. Pointers
 * into a state live as long as the state (for a state read from a view: as
 * long as the pin). Accessors are pure and thread-safe.
 */

SC_API sc_str sc_entity_id(const sc_entity *e);
/* The partition the entity belongs to: empty for the default partition
 * (then ptr points at an empty string, never NULL). */
SC_API sc_str sc_entity_partition(const sc_entity *e);
SC_API int64_t sc_entity_updated_at(const sc_entity *e); /* unix ns */
SC_API sc_str sc_entity_updated_by(const sc_entity *e);
SC_API uint64_t sc_entity_position(const sc_entity *e); /* last event applied */
SC_API size_t sc_entity_attr_count(const sc_entity *e);
/* The i-th attribute, attributes sorted by name (bytewise). The returned
 * pointers live as long as the entity. i < sc_entity_attr_count(). */
SC_API sc_attr sc_entity_attr(const sc_entity *e, size_t i);
/* Find an attribute by name; false when absent. */
SC_API bool sc_entity_find(const sc_entity *e, sc_str name, sc_value *out);
/* True when two states hold the same partition, id, attributes,
 * updated_at, updated_by and position. Doubles compare by bit pattern (a NaN
 * equals itself). Two NULLs are equal; NULL and a state are not. */
SC_API bool sc_entity_equal(const sc_entity *a, const sc_entity *b);
/* Bytes of memory the state occupies (its one allocation). */
SC_API size_t sc_entity_memory_bytes(const sc_entity *e);

/*
 * sc_entity_apply - the state that `ev` makes of `prev` (NULL: the entity
 * does not exist), as a standalone entity the caller owns; *out is NULL when
 * the event leaves the entity deleted. Used for per-entity folds (as-of
 * reads) outside any version. Semantics, as sc_cache_apply: `set` merges
 * (a null value removes the name; with duplicate names the last one wins);
 * `unset` removes the names (values ignored); `replace` makes the
 * attributes exactly the event's, a null value counting as absent (last
 * duplicate wins); `delete` gives NULL. Every event but delete leaves the
 * entity existing, so an unset of a missing entity creates it empty.
 * The new state belongs to the event's partition. `prev` is only read.
 * Errors: SC_EINVAL (bad event, or its id or partition differs from
 * prev's), SC_ETOOBIG (the state would be larger than one entity may be,
 * as sc_cache_apply says), ENOMEM; *out is NULL then.
 */
SC_API int sc_entity_apply(const sc_entity *prev, const sc_event *ev,
			   sc_entity **out, sc_error *err);

/* Free a standalone entity (from sc_entity_apply or sc_store_entity_at).
 * Never pass an entity read from a view. NULL is a no-op. */
SC_API void sc_entity_free(sc_entity *e);

/* ---- lifecycle ----------------------------------------------------------- */

typedef struct sc_cache_options {
	uint64_t seed;	      /* HAMT hash seed; 0: random */
	sc_hamt_hash_fn hash; /* NULL: XXH3; tests may force collisions */
	unsigned hamt_flags;  /* SC_HAMT_PROTECT in debug runs */
	unsigned max_readers; /* reader slots; 0: 126 */
	/* Threads applying a batch in sc_cache_apply_batch (apply lanes):
	 * 0: the cores online, at most 8; 1: every event on the calling
	 * thread (no worker thread); more than 8 counts as 8. n start n - 1
	 * worker threads with the cache, joined by sc_cache_destroy. The
	 * workers also help the writer free a reclaimed version's garbage
	 * when there is much of it (promote, sc_cache_reclaim). */
	unsigned lanes;
} sc_cache_options;

/*
 * sc_cache_create - an empty cache (version 0, no entities).
 *
 * `opt` may be NULL. Errors: ENOMEM, EIO (no random seed), EAGAIN (a lane's
 * worker thread could not be started: see options.lanes).
 */
SC_API int sc_cache_create(const sc_cache_options *opt, sc_cache **out,
			   sc_error *err);

/*
 * sc_cache_destroy - discard any pending version and free everything.
 *
 * No reader may be inside a pin, and no thread that used a reader may be
 * exiting concurrently; readers not closed are closed (their handles become
 * invalid). NULL is a no-op.
 */
SC_API void sc_cache_destroy(sc_cache *cache);

/* ---- writer -------------------------------------------------------------- */

/*
 * sc_cache_apply - apply one event to the pending version (opened on the
 * first apply after a promote or discard).
 *
 * The event changes the entity (ev->partition, ev->entity) (an empty
 * partition: the default one). The event's position becomes the entity's
 * position, its time updated_at, its actor updated_by. Semantics as
 * sc_entity_apply; a delete of a missing entity changes no entity but still
 * counts as applied (the version's position advances). Validation happens
 * before anything is touched. Errors: SC_EINVAL (empty or over-long id or
 * name, a partition longer than SC_EVENT_FIELD_MAX, unknown type, bad value
 * type, a string value that is not valid UTF-8 (binary data goes in a bytes
 * value), NULL pointer with a non-zero length; the pending version is
 * unchanged and the message names the field), SC_ETOOBIG (the entity's
 * state would take more than 64 MiB in a snapshot, about the sum of its
 * partition, attribute names and values, which one snapshot chunk must
 * hold; the pending version is unchanged and the message names the entity
 * and its size: split its attributes over several entities), ENOMEM (the
 * pending version is poisoned: discard it), SC_EPOISONED. Events are
 * applied a few calls late (their memory misses overlap), so an ENOMEM met
 * by an event may come back from a later apply, from sc_cache_prepare or
 * from sc_cache_promote.
 */
SC_API int sc_cache_apply(sc_cache *cache, const sc_event *ev, sc_error *err);

/*
 * sc_cache_apply_batch - apply events[0..n-1] to the pending version, in
 * order, with the cache's apply lanes (options.lanes).
 *
 * The events are split by entity: every event of an entity goes to the same
 * lane, which applies them in log order, and lanes apply different
 * entities at the same time, on the calling thread and the cache's worker
 * threads (a few lanes per thread, taken in turn). The result is
 * exactly that of applying the events one by one with sc_cache_apply: the
 * same states, entity positions, version position, and stats after the
 * promote (the pending version is published by one promote, as always).
 * Small batches (a few hundred events) and caches with one lane apply on
 * the calling thread. An entity is its partition and its id: each
 * partition's tree is split among the lanes the same way, so batches over
 * named partitions apply in lanes too; a partition the batch names only a
 * few times (fewer than a few events per lane) goes whole to one lane, the
 * lanes taking such partitions in turn. Writer thread, like
 * sc_cache_apply.
 *
 * Every event is validated before anything is touched: SC_EINVAL names
 * the first bad event, the pending version is unchanged. Any other failure
 * reports the first failing event in log order (*failed, if not NULL,
 * receives its index, 0 for a failure of no event in particular, n on
 * success) with its error: SC_ETOOBIG, ENOMEM or SC_EPOISONED; the pending
 * version is then poisoned, whatever part of the batch it holds: discard
 * it (sc_cache_discard frees everything). With several lanes an ENOMEM
 * may name an event other than the one a serial apply would have run out
 * of memory on (the lanes allocate in a different order).
 */
SC_API int sc_cache_apply_batch(sc_cache *cache, const sc_event *events,
				size_t n, size_t *failed, sc_error *err);

/*
 * sc_cache_load_entity - put a whole entity state into the pending version,
 * replacing any state of the same id. For restoring snapshots. Attributes
 * need not be sorted; duplicate names are SC_EINVAL. Errors as apply.
 */
SC_API int sc_cache_load_entity(sc_cache *cache, sc_str id,
				const sc_attr *attrs, size_t nattrs,
				int64_t updated_at, sc_str updated_by,
				uint64_t position, sc_error *err);
/* sc_cache_load_entity of the entity (partition, id); an empty partition
 * is the default one. SC_EINVAL also for a partition longer than
 * SC_EVENT_FIELD_MAX. */
SC_API int sc_cache_load_entity_in(sc_cache *cache, sc_str partition, sc_str id,
				   const sc_attr *attrs, size_t nattrs,
				   int64_t updated_at, sc_str updated_by,
				   uint64_t position, sc_error *err);

/*
 * sc_cache_prepare - apply every event still queued and reserve what
 * promote needs, so that the next sc_cache_promote cannot fail. For a
 * writer that commits the same batch elsewhere between the two (the store
 * commits its LMDB transaction there): a failure here still lets it roll
 * everything back. No-op returning 0 with nothing pending. Errors:
 * SC_EPOISONED, ENOMEM (the pending version is poisoned: discard it).
 */
SC_API int sc_cache_prepare(sc_cache *cache, sc_error *err);

/*
 * sc_cache_promote - publish the pending version with one release store.
 *
 * Readers that pin after this see it whole. Superseded versions no reader
 * can reach are freed here. With nothing pending it is a no-op returning 0.
 * After a successful sc_cache_prepare (and no apply since) it returns 0.
 * Errors: SC_EPOISONED (discard instead), ENOMEM (nothing was published;
 * the pending version is now poisoned: discard it).
 */
SC_API int sc_cache_promote(sc_cache *cache);

/* sc_cache_discard - drop the pending version and free all it allocated;
 * also clears the poisoned state. No-op when nothing is pending. */
SC_API void sc_cache_discard(sc_cache *cache);

/* True while a pending version is open. */
SC_API bool sc_cache_pending(const sc_cache *cache);

/* Lookup in the pending version (or the published one when none is
 * pending), for the writer thread only: the default partition, or
 * `partition` (_in). */
SC_API const sc_entity *sc_cache_pending_get(const sc_cache *cache, sc_str id);
SC_API const sc_entity *sc_cache_pending_get_in(const sc_cache *cache,
						sc_str partition, sc_str id);

/*
 * sc_cache_reclaim - free superseded versions no reader can reach now.
 * Promote does this too; call it after readers end long pins. Writer thread.
 * Returns the number of versions freed.
 */
SC_API size_t sc_cache_reclaim(sc_cache *cache);

/* ---- readers ------------------------------------------------------------- */

/*
 * sc_reader_open - claim a reader slot for the calling thread.
 *
 * A reader is used by one thread at a time; it may be handed from one
 * thread to another (the handing over must synchronize, as with a mutex).
 * The thread that last called sc_reader_get(_in), sc_reader_begin or
 * sc_reader_end on it (or opened it) owns it: if that thread exits while
 * the reader holds a pin, a thread-exit hook releases the pin, and the
 * views and states read through it become invalid. So a thread taking a
 * reader over takes its own pin (a get or begin) before the one that
 * handed it on may exit; from then on that thread's exit leaves the reader
 * alone. The slot stays claimed until sc_reader_close (or
 * sc_cache_destroy). Errors: SC_EREADERS (all slots taken), ENOMEM.
 */
SC_API int sc_reader_open(sc_cache *cache, sc_reader **out, sc_error *err);

/* sc_reader_close - release any pin and the slot. NULL is a no-op. */
SC_API void sc_reader_close(sc_reader *reader);

/*
 * sc_reader_get - the state of `id` (default partition) in the newest
 * promoted version, or NULL. sc_reader_get_in: of (partition, id).
 *
 * Pins that version in the reader's slot; the returned pointer stays valid
 * until the next sc_reader_get(_in), sc_reader_begin or sc_reader_end on
 * this reader. No lock, no atomic read-modify-write; a named partition
 * costs one more lookup (of its name in the version's partition table).
 */
SC_API const sc_entity *sc_reader_get(sc_reader *reader, sc_str id);
SC_API const sc_entity *sc_reader_get_in(sc_reader *reader, sc_str partition,
					 sc_str id);

/*
 * sc_reader_begin - pin the newest promoted version and return a view of it.
 *
 * Everything read through the view is from that one version, whole. The view
 * is valid until sc_reader_end (or the next begin/get on this reader). A pin
 * may be held as long as wanted; it delays reclamation, never breaks it.
 */
SC_API const sc_view *sc_reader_begin(sc_reader *reader);

/* sc_reader_end - release the reader's pin. */
SC_API void sc_reader_end(sc_reader *reader);

/* ---- views --------------------------------------------------------------- */

/*
 * A view is one promoted version, whole, pinned by the reader that returned
 * it. Every function below is lock-free and allocation-free, may be called
 * by the thread owning the reader (or any thread the owner hands the view
 * to while it keeps the pin), and returns states that live as long as the
 * pin. sc_view_get: the state of `id` in the default partition, or NULL
 * (also for an empty, over-long or NULL id); sc_view_get_in: of
 * (partition, id). sc_view_len: the number of entities of the default
 * partition, O(1); sc_view_len_in: of one partition (0 for a partition
 * without entities), O(log partitions); sc_view_len_all: of every
 * partition, O(1).
 */
SC_API const sc_entity *sc_view_get(const sc_view *view, sc_str id);
SC_API const sc_entity *sc_view_get_in(const sc_view *view, sc_str partition,
				       sc_str id);
SC_API size_t sc_view_len(const sc_view *view);
SC_API size_t sc_view_len_in(const sc_view *view, sc_str partition);
SC_API size_t sc_view_len_all(const sc_view *view);
/* The partitions holding at least one entity in the view, and the cold
 * ones (whose entities are not in memory): the default partition first
 * (when it has entities), then the named ones in bytewise order of their
 * names. sc_view_partition: the i-th name (i < sc_view_partition_count),
 * valid while the view is pinned. sc_view_len_all and the _all iteration
 * count and walk the entities in memory only. */
SC_API size_t sc_view_partition_count(const sc_view *view);
SC_API sc_str sc_view_partition(const sc_view *view, size_t i);
/* The version number: 0 for the empty initial version, +1 per promote. */
SC_API uint64_t sc_view_version(const sc_view *view);
/* The position of the last event this version holds: the last one applied,
 * or the one a restored snapshot was taken at (0: none). */
SC_API uint64_t sc_view_position(const sc_view *view);

typedef struct sc_view_iter {
	sc_hamt_iter it;
	const void *parts; /* private: the partitions still to walk */
	size_t next;
} sc_view_iter;

/* Start iterating over the entities of the default partition of `view`
 * (no allocation; the iterator may live on the stack and is valid while
 * the view is pinned); _in: of one partition, walking no other one; _all:
 * of every partition, one partition after the other in the order of
 * sc_view_partition. */
SC_API void sc_view_iter_init(const sc_view *view, sc_view_iter *it);
SC_API void sc_view_iter_init_in(const sc_view *view, sc_str partition,
				 sc_view_iter *it);
SC_API void sc_view_iter_init_all(const sc_view *view, sc_view_iter *it);
/* The next entity, or NULL at the end. The order is stable for a given
 * version (hash order within a partition), not sorted. */
SC_API const sc_entity *sc_view_iter_next(sc_view_iter *it);

/* Diff callback: ADDED (old NULL), REMOVED (new_ NULL) or CHANGED (both
 * set, different states). Return 0 to go on, non-zero to stop. */
typedef int (*sc_diff_fn)(void *ctx, sc_diff_kind kind, const sc_entity *old,
			  const sc_entity *new_);

/*
 * sc_view_diff - report entities added, removed and updated from view `a`
 * to view `b`, in every partition (sc_entity_partition tells which),
 * skipping subtrees and partitions the versions share. Both views must belong
 * to the same cache and stay pinned during the call. A partition that
 * became cold or was loaded between the two is not reported removed or
 * added (cache/cache_lib.h says what is reported of it). Returns 0 or the
 * callback's non-zero value.
 */
SC_API int sc_view_diff(const sc_view *a, const sc_view *b, sc_diff_fn fn,
			void *ctx);

/*
 * sc_cache_pending_diff - differences from the newest promoted version to
 * the pending one (the change feed of the next promote). Writer thread.
 * Returns 0 at once when nothing is pending, else as sc_view_diff. A state
 * set again to equal content still counts as CHANGED (a new state object).
 */
SC_API int sc_cache_pending_diff(sc_cache *cache, sc_diff_fn fn, void *ctx);

/* ---- stats --------------------------------------------------------------- */

/* Entities in the newest promoted version, every partition. Any thread,
 * O(1). */
SC_API size_t sc_cache_len(const sc_cache *cache);

typedef struct sc_cache_stats {
	size_t entities;	  /* in the newest promoted version (every
				     partition) */
	uint64_t version;	  /* newest promoted version number */
	uint64_t position;	  /* its last event position */
	size_t versions_alive;	  /* promoted versions not yet freed */
	size_t versions_awaiting; /* superseded, waiting for reclamation */
	size_t bytes_awaiting;	  /* node and entity bytes they hold alone */
	size_t nodes_awaiting;
	uint64_t oldest_pinned; /* oldest version a reader pins; 0: none
				   (or version 0 itself) */
	size_t readers;		/* open readers */
	size_t memory_bytes;	/* HAMT nodes + entity states, all versions
				   and the pending one; the writer keeps
				   what it frees for reuse, returned to
				   the system by sc_cache_destroy */
} sc_cache_stats;

/*
 * sc_cache_stats_get - counters kept by the writer, read without a walk.
 *
 * Any thread; each field is read atomically but the set is not one
 * snapshot while the writer runs. With no reader pinned and nothing pending,
 * after sc_cache_reclaim, versions_awaiting and bytes_awaiting are 0 and
 * memory_bytes is exactly the newest version's nodes plus its states.
 */
SC_API void sc_cache_stats_get(const sc_cache *cache, sc_cache_stats *out);

#ifdef __cplusplus
}
#endif

#endif
