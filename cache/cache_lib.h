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
 *              sc_cache_apply_batch_begin the same in two steps, so the
 *              sc_cache_apply_batch_end   caller works while lanes run
 *   snapshot/  sc_cache_load_*            the restore: states laid out off
 *                                         the writer, stored by it
 *              sc_view_cold_count         refuse a view that lacks a
 *                                         partition
 *   store/     sc_cache_part_*            residency: evict, load, pin, LRU,
 *              sc_view_residency          figures (cache/residency.c)
 *   watch/     sc_cache_hook_install      a wake-up at every promote, the
 *              sc_cache_version_newest    newest version and the bytes
 *              sc_view_garbage_before     superseded versions hold
 *   watch/,    sc_reader_own              a pin kept from call to call,
 *   store/     sc_reader_disown           handed to whichever thread next
 *
 * Writer-side calls (apply, load_begin, load_store) run on the cache's
 * writer thread, like every other change to the pending version.
 */
#ifndef STATECACHE_CACHE_LIB_H
#define STATECACHE_CACHE_LIB_H

#include <stdbool.h>
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

/*
 * sc_cache_apply_batch_begin / sc_cache_apply_batch_end -
 * sc_cache_apply_batch_valid in two steps, so that the writer does other
 * work (the store: its LMDB writes of the batch) while the cache's worker
 * threads apply it. Begin routes the batch to the lanes, splits the
 * pending version among them and wakes the workers, who start taking
 * lanes; it returns without the calling thread taking any. End takes the
 * lanes left (the calling thread works with the workers, as in one call),
 * waits for the workers, folds the lanes' counters and joins their trees;
 * it returns what sc_cache_apply_batch_valid would have (the same error,
 * message and *failed: the first failing event in log order). With one
 * lane, or a batch too small for lanes, begin applies the whole batch
 * serially and end only reports it. A failure before the lanes start is
 * kept by begin and reported by end. On any error discard the pending
 * version, as with sc_cache_apply_batch_valid.
 *
 * Between begin and end the lanes change the pending version: the caller
 * reads nothing of it (sc_cache_pending_get, sc_cache_part_residency,
 * diffs) and changes nothing of the cache; every writer call that would
 * (apply, load, evict, prepare) fails with SC_ESTATE and promote
 * returns SC_ESTATE. While the lanes run, sc_cache_reclaim frees nothing
 * (returns 0; the versions wait for the next promote or reclaim).
 * sc_cache_discard and sc_cache_destroy end a batch in flight first (its
 * result is dropped). The events must stay valid and
 * unchanged until end returns; the caller may read them.
 *
 * Writer thread, both. Begin returns SC_OK, or SC_ESTATE (err says so)
 * when a batch is in flight already, which it leaves as it is; every
 * other failure is the batch's, reported by end. End with no batch in
 * flight returns SC_OK and *failed 0, so a second end is harmless.
 * *failed (may be NULL) is as for sc_cache_apply_batch_valid.
 */
int sc_cache_apply_batch_begin(sc_cache *cache, const sc_event *events,
			       size_t n, sc_error *err);
int sc_cache_apply_batch_end(sc_cache *cache, size_t *failed, sc_error *err);

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

/* ---- residency -----------------------------------------------------------
 *
 * A named partition is resident (its tree is in memory, in every version
 * from the one that loaded it or first gave it an entity) or cold (its
 * entry in the version's partition table says so; its states are not in
 * memory: they are in the store's log and checkpoints). The default
 * partition (empty name, the version's root) is always resident: it can be
 * neither evicted nor loaded.
 *
 * In a view, a cold partition reads as empty through every call of
 * statecache/cache.h: sc_view_get_in and sc_reader_get_in give NULL,
 * sc_view_len_in 0, sc_view_iter_init_in nothing; sc_view_len_all and
 * sc_view_iter_init_all count and walk the resident partitions only;
 * sc_view_partition_count and sc_view_partition list the cold partitions
 * too (in name order with the others). sc_view_residency tells a cold
 * partition from an absent one, and sc_view_cold_count says whether a
 * view holds the whole state (snapshot/encode.c refuses a view with a
 * cold partition: SC_ESTATE).
 *
 * Changes are versions like any other: sc_cache_part_evict and
 * sc_cache_part_load_begin work in the pending version and take effect at
 * its promote. An evicted tree becomes garbage of the version it leaves
 * and is freed by the ordinary reclamation once no reader pins that
 * version or an older one: a view pinned before the eviction still reads
 * the partition whole.
 *
 * Diffs (sc_view_diff, watchers) report changes of state, never of
 * residency; for a partition P and views a (older) and b (newer):
 *   - resident in both: the changes from a's states to b's (when P was
 *     evicted and loaded again between them, a state its load brought
 *     back unchanged is not reported; what changed while P was cold is
 *     reported as the change from a's state);
 *   - resident in a, cold in b: the changes from a's states to those P
 *     had when it was evicted (its entities are not reported removed);
 *   - cold in a (resident or cold in b): nothing. This is the gap a
 *     watcher sees: the changes P took while cold, its load and its
 *     changes up to b are not reported to a watcher whose last delivered
 *     version has P cold; the diffs after b report P's changes again. A
 *     watcher that needs every change of P keeps P pinned resident.
 * sc_cache_pending_diff reports nothing of a partition the pending
 * version evicts or loads.
 *
 * LRU: every named partition has a last-used tick. sc_reader_get_in and
 * sc_view_get_in of a named partition copy the cache's coarse tick into it
 * with a relaxed load of the tick, a relaxed load of the partition's, and
 * a relaxed store only when the two differ: no atomic read-modify-write,
 * and at most one store to the partition's record per tick (DESIGN.md:
 * readers make no atomic RMW on a shared line on the lookup path). The
 * writer advances the tick at every promote and at sc_cache_lru_advance.
 * Ticks are relaxed hints: a read racing with a promote may record either
 * tick.
 *
 * Figures: the writer keeps, for every partition, its entity count and its
 * bytes (entity states, exact, plus SC_PART_NODE_BYTES_PER_ENTITY bytes of
 * HAMT nodes per entity, an estimate) in the newest promoted version,
 * through apply, the apply lanes, loads, evictions and discards.
 */

/* The estimate of a tree's HAMT node bytes per entity: the entity's slot
 * (16 bytes) and its share of the nodes above it. */
#define SC_PART_NODE_BYTES_PER_ENTITY 32u

/* Residency of a partition in a view. */
typedef enum sc_residency {
	SC_RESIDENCY_ABSENT = 0,   /* no entity in memory and not cold: an
				      unknown partition, or a resident one
				      without entities */
	SC_RESIDENCY_RESIDENT = 1, /* its states are in the view */
	SC_RESIDENCY_COLD = 2,	   /* its states are not in memory */
} sc_residency;

/*
 * sc_view_residency - whether `partition` is resident, cold or absent in
 * the view. The default partition (empty) is always resident. A store-level
 * read tells "not found" (RESIDENT or ABSENT: the entity does not exist,
 * when the store marked every partition it did not load cold) from "not
 * loaded" (COLD). Lock-free, O(log partitions); the view must be pinned;
 * does not touch the LRU tick.
 */
sc_residency sc_view_residency(const sc_view *view, sc_str partition);

/* sc_view_cold_count - the number of cold partitions in the view (0: the
 * view holds every partition's state), O(1). The view must be pinned. */
size_t sc_view_cold_count(const sc_view *view);

/*
 * sc_cache_part_residency - residency of `partition` in the pending version
 * (or the newest promoted one when none is pending), as a writer sees it
 * before applying an event: COLD when it is cold and not being loaded, or
 * being evicted (an event of it is refused: route it to the log only).
 * Writer thread.
 */
sc_residency sc_cache_part_residency(const sc_cache *cache, sc_str partition);

/*
 * sc_cache_part_evict - make partition `name` cold in the pending version
 * (opened if none is). At promote its tree leaves the version: it goes,
 * whole, into the garbage of the version it leaves, freed with that
 * version's garbage; the version promoted and its successors read the
 * partition as cold until a load. A partition the cache holds nothing of
 * becomes cold too (a store opening with every partition cold marks them
 * so). An event of a cold partition is refused by sc_cache_apply(_valid,
 * _batch) with SC_ESTATE, nothing changed (a batch stops at that event
 * and, like every failed batch, must be discarded); states loaded into it
 * by sc_cache_load_store / sc_cache_load_entity_in are refused the same way
 * until sc_cache_part_load_begin. A discard cancels the eviction. Writer
 * thread.
 *
 * Errors: SC_EINVAL (empty name: the default partition is always resident;
 * NULL pointer; longer than SC_EVENT_FIELD_MAX), SC_ESTATE (pinned; already
 * cold or evicted in the pending version; changed or loaded by the pending
 * version: promote first), SC_EPOISONED, ENOMEM (nothing changed, or the
 * pending version is poisoned when it failed to open). Nothing changes on
 * an error.
 */
int sc_cache_part_evict(sc_cache *cache, sc_str name, sc_error *err);

/*
 * sc_cache_part_load_begin - make partition `name`, cold or unknown, resident
 * in the pending version (opened if none is) with an empty tree, into which
 * the caller stores the partition's states with sc_cache_load_measure /
 * _write / _store (partition `name`) or sc_cache_load_entity_in; the other
 * partitions and the rest of the pending version are untouched. At promote
 * the partition is resident with exactly the states stored; the pending
 * position advances to the largest position among them, as for any state.
 * *born (may be NULL) is the pending version's generation. A discard
 * cancels the load (the partition stays as it was). Writer thread.
 *
 * Errors: SC_EINVAL (empty name, NULL pointer, over-long name), SC_ESTATE
 * (resident with entities; already loaded, evicted or changed by the
 * pending version), SC_EPOISONED, ENOMEM. Nothing changes on an error but
 * the pending version being opened.
 */
int sc_cache_part_load_begin(sc_cache *cache, sc_str name, uint64_t *born,
			     sc_error *err);

/*
 * sc_cache_part_pin - pin (`pinned` true) or unpin partition `name`: a
 * pinned partition is never offered by sc_cache_part_coldest and
 * sc_cache_part_evict refuses it. Takes effect at once (not a version
 * change); may name a partition not known yet. Writer thread. Errors:
 * SC_EINVAL (empty name: the default partition is always resident; NULL
 * pointer; over-long name), SC_ESTATE (pinning a partition the pending
 * version evicts: promote or discard first), ENOMEM.
 */
int sc_cache_part_pin(sc_cache *cache, sc_str name, bool pinned, sc_error *err);

/*
 * sc_cache_part_coldest - the at most k (more than 64 counts as 64) least
 * recently used partitions that can be evicted: named, resident with at
 * least one entity in the newest promoted version, not pinned, neither
 * changed, loaded nor evicted by the pending version. Writes their names to
 * out[0..], the least recently used first (equal ticks: name order); returns
 * how many. The names live as long as the cache. Writer thread; O(partitions *
 * k).
 */
size_t sc_cache_part_coldest(sc_cache *cache, sc_str *out, size_t k);

/* sc_cache_lru_advance - start a new LRU tick (promote does it too), so
 * that reads from now on rank after those before. Writer thread. */
void sc_cache_lru_advance(sc_cache *cache);

/* One partition's figures in the newest promoted version. */
typedef struct sc_cache_part_info {
	sc_str name;		/* empty: the default partition; lives as
				   long as the cache */
	sc_residency residency; /* RESIDENT or COLD */
	bool pinned;
	size_t entities;    /* 0 when cold */
	size_t bytes;	    /* state bytes + node estimate; 0 when cold */
	uint64_t last_used; /* LRU tick of the last read (0: never) */
} sc_cache_part_info;

/*
 * sc_cache_part_list - the figures of the default partition, then of every
 * partition the newest promoted version lists (resident with entities, or
 * cold), in name order: out[0..cap) receives the first cap of them; returns
 * how many there are (call with cap 0 to size `out`). Writer thread
 * (figures are the writer's); O(partitions).
 */
size_t sc_cache_part_list(sc_cache *cache, sc_cache_part_info *out, size_t cap);

/* sc_cache_resident_bytes - bytes of every resident partition in the
 * newest promoted version (the sum of their sc_cache_part_info.bytes).
 * Any thread (relaxed loads: not one snapshot while the writer runs). */
size_t sc_cache_resident_bytes(const sc_cache *cache);

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

/*
 * sc_reader_own - make the calling thread the owner of `reader`, as every
 * pin and unpin through it does first: a pin the reader holds from another
 * thread is released at this thread's exit from now on, not at that
 * thread's. For a pin kept across calls without touching the reader (a
 * watcher's last delivered version). Costs one compare when the calling
 * thread owns it already.
 */
void sc_reader_own(sc_reader *reader);

/*
 * sc_reader_disown - leave `reader` without an owner: no thread's exit
 * releases its pin until a thread pins or unpins through it (and so owns
 * it) or it is closed. For a pin handed out with an object that any thread
 * may use next (a watcher between sc_watch_open and its first
 * sc_watch_next). Takes the cache's reader-table lock.
 */
void sc_reader_disown(sc_reader *reader);

#endif
