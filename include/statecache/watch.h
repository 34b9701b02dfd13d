/*
 * statecache: watching the state - the entities added, updated and removed,
 * version by version.
 *
 * A watcher follows one cache. Each call of sc_watch_next returns one batch:
 * the net change between the last version the watcher delivered and the
 * newest promoted version, computed as a diff of the two versions (shared
 * subtrees skipped, so the cost follows the size of the change, not of the
 * state). Because versions are persistent maps, no change log is kept and
 * nothing can be missed: a watcher that falls behind gets one batch with
 * every net change since the version it last saw, whatever happened in
 * between (an entity added and removed meanwhile does not appear).
 *
 *   writer:   apply .. promote v5 | apply .. promote v6 | promote v7
 *                          \ wake-up           \ wake-up      \ wake-up
 *   watcher:  next -> (4,5]       next -> (5,6]   ...   (stalled)
 *             next -> (6,9]  one coalesced batch: the diff of v6 and v9
 *
 * Order and atomicity: batches come in version order and their version
 * ranges (from_version, to_version] follow each other without gap or
 * overlap. A batch always ends at a promoted version (one a reader could
 * have pinned), so the changes of one promote - one store append - are
 * never split between batches. A watcher that keeps up gets one batch per
 * promote that changes something it matches.
 *
 * The writer is never slowed: promote only publishes (it wakes the waiting
 * watchers, with no work per watcher); the diff runs in sc_watch_next, on
 * the watcher's thread. A watcher pins, as a cache reader does, the last
 * version it delivered (and, while the application holds a batch, the
 * version the batch starts from); a pin delays reclamation of every newer
 * superseded version. sc_watch_stats_get shows what a watcher holds back;
 * past its limit (max_held_bytes) sc_watch_next returns SC_ERESYNC and the
 * watcher lets go: open a new one with the initial state.
 *
 * A watcher uses two reader slots of its cache (sc_cache_options.max_readers)
 * and hangs a wake-up hook on the cache at its first use. Open watchers on a
 * store's cache with sc_watch_open(sc_store_cache(store), ...): every
 * sc_store_append promotes once, so a batch covers whole appends.
 *
 * Partitions the store keeps cold (not in memory): an eviction or a load is
 * no change of state, so no batch reports a partition's entities removed
 * when it becomes cold, nor added when it is loaded again. A batch from a
 * version in which a partition is resident to one in which it is cold
 * reports its changes up to the eviction; a batch that starts while it is
 * cold reports nothing of it (the changes it took while cold and up to
 * that batch's end are not reported); later batches report its changes
 * again. Keep a partition pinned resident to see every change of it.
 *
 * Resuming after a log position (a consumer's restart): sc_store_watch_resume
 * in statecache/store.h. Following a store that another process writes:
 * open the store with options.read_only (its cache follows the log) and
 * watch its cache as any other.
 *
 * Thread safety: a watcher is used by one thread at a time (any thread, in
 * turn). Its pins are reader pins, released by the cache's thread-exit hook
 * when the thread that last called sc_watch_next exits: close the watcher
 * before that thread exits, or keep calling it from a thread that lives as
 * long as the watcher. Until the first sc_watch_next no thread's exit
 * releases them (the thread that opened the watcher may exit first).
 * sc_watch_stats_get may be called from any thread. Different watchers are
 * independent. Close every watcher before sc_cache_destroy.
 */
#ifndef STATECACHE_WATCH_H
#define STATECACHE_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/api.h"
#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_watcher sc_watcher;

/* Where a watcher starts. */
typedef enum sc_watch_start {
	/* Changes after the version newest at open. */
	SC_WATCH_START_NOW = 0,
	/* The matching state of the version newest at open, as SC_WATCH_INITIAL
	 * batches of added entities, then an SC_WATCH_INITIAL_DONE batch, then
	 * the changes after that version. */
	SC_WATCH_START_INITIAL = 1,
} sc_watch_start;

/*
 * A predicate on entity states: true when the watcher wants `e`. Called by
 * sc_watch_next on its caller's thread, for the states before and after
 * each change (an entity whose state comes to match is delivered as added,
 * one whose state stops matching as removed). Must be a pure function of the
 * state and must not call into the watcher.
 */
typedef bool (*sc_watch_match_fn)(void *ctx, const sc_entity *e);

/* Default max_held_bytes. */
#define SC_WATCH_HELD_DEFAULT ((size_t)256 << 20)
/* Default initial_batch_max. */
#define SC_WATCH_INITIAL_BATCH_DEFAULT 4096

typedef struct sc_watch_options {
	sc_watch_start start;
	/* Only ids that start with these bytes; empty: every id. Copied. */
	sc_str prefix;
	/* With by_partition, only entities of this partition (empty: the
	 * default partition); the initial state then walks that partition
	 * alone. Without by_partition, every partition. Copied. */
	bool by_partition;
	sc_str partition;
	/* Optional predicate on states, applied after prefix and partition. */
	sc_watch_match_fn match;
	void *match_ctx;
	/* Bytes of superseded versions the watcher may hold back (see
	 * sc_watch_next); 0: SC_WATCH_HELD_DEFAULT, SIZE_MAX: no limit. */
	size_t max_held_bytes;
	/* Most entities in one SC_WATCH_INITIAL batch; 0: the default. */
	size_t initial_batch_max;
} sc_watch_options;

typedef enum sc_watch_kind {
	/* The net changes from from_version to to_version. */
	SC_WATCH_CHANGES = 1,
	/* A part of the state at to_version, every entity as added;
	 * from_version is 0 (the empty version). */
	SC_WATCH_INITIAL = 2,
	/* The initial state is complete; no changes, from_version =
	 * to_version = the version it was read from. */
	SC_WATCH_INITIAL_DONE = 3,
	/* sc_watch_next timed out: nothing the watcher matches changed up to
	 * to_version, the newest version it has seen (current when the wait
	 * ended). No changes. */
	SC_WATCH_HEARTBEAT = 4,
} sc_watch_kind;

/*
 * One changed entity. `before` is its state at the batch's from_version
 * (NULL when added), `after` its state at to_version (NULL when removed).
 * For an update, `changed` lists the names (sorted bytewise) of the
 * attributes added, removed or given another value; it may be empty when
 * only updated_at, updated_by or position moved. The entity is
 * (partition, id); the partition is empty for the default partition.
 * Every pointer lives as long as the batch.
 */
typedef struct sc_watch_change {
	sc_str partition;
	sc_str id;
	const sc_entity *before;
	const sc_entity *after;
	const sc_str *changed;
	size_t nchanged;
} sc_watch_change;

/*
 * A batch. Versions are cache version numbers (sc_view_version), positions
 * the position of the last event applied in a version (sc_view_position):
 * the batch covers the versions after from_version up to to_version and
 * the log positions after from_position up to to_position. Each entity
 * appears at most once in a batch. The batch and everything it points to
 * are owned by the watcher and stay valid until the next sc_watch_next or
 * sc_watch_close on it.
 */
typedef struct sc_watch_batch {
	sc_watch_kind kind;
	uint64_t from_version;
	uint64_t to_version;
	uint64_t from_position;
	uint64_t to_position;
	const sc_watch_change *added;
	size_t nadded;
	const sc_watch_change *updated;
	size_t nupdated;
	const sc_watch_change *removed;
	size_t nremoved;
} sc_watch_batch;

/*
 * sc_watch_open - open a watcher on `cache` with the filter and start of
 * `opt` (NULL: every entity, from now). It pins the newest version at once.
 * Errors: SC_EINVAL (cache or out NULL, a NULL pointer with a non-zero
 * length), SC_EREADERS (fewer than two free reader slots), ENOMEM.
 */
SC_API int sc_watch_open(sc_cache *cache, const sc_watch_options *opt,
			 sc_watcher **out, sc_error *err);

/*
 * sc_watch_close - release the watcher's pins and reader slots and free it
 * (its last batch with it). NULL is a no-op. The versions it held back are
 * freed by the writer's next promote or sc_cache_reclaim.
 */
SC_API void sc_watch_close(sc_watcher *w);

/*
 * sc_watch_next - the next batch.
 *
 * First releases the previous batch. With a newer version than the last
 * delivered, returns at once the net changes up to the newest version (an
 * SC_WATCH_CHANGES batch; versions whose changes the filter drops entirely
 * are passed over without a batch). Otherwise waits up to `timeout_ms`
 * milliseconds (-1: no limit, 0: no wait) for a promote, and when none
 * comes returns an SC_WATCH_HEARTBEAT batch. With SC_WATCH_START_INITIAL,
 * the initial batches come first. *out points to the batch, owned by the
 * watcher.
 *
 * Errors (*out NULL): SC_EINVAL (w or out NULL), SC_ERESYNC when the
 * superseded versions from the last delivered one to the newest hold more
 * than max_held_bytes - the watcher releases them and returns SC_ERESYNC
 * from then on; close it and open another with SC_WATCH_START_INITIAL -,
 * ENOMEM (nothing delivered; the watcher is unchanged: call again).
 * The limit is checked here: a watcher that stops calling sc_watch_next
 * keeps its pin until it calls again or is closed (its stats show it).
 */
SC_API int sc_watch_next(sc_watcher *w, int timeout_ms,
			 const sc_watch_batch **out, sc_error *err);

typedef struct sc_watch_stats {
	uint64_t version;	/* to_version of the last batch (0: none) */
	uint64_t newest;	/* newest promoted version of the cache */
	uint64_t pinned;	/* oldest version the watcher pins */
	uint64_t versions_held; /* newest - pinned: superseded versions the
				   watcher keeps from reclamation */
	size_t bytes_held;	/* what those versions hold (HAMT nodes and
				   entity states freed once they go) */
	size_t max_held_bytes;	/* its limit */
	uint64_t batches;	/* batches returned, heartbeats excluded */
	uint64_t changes;	/* changes delivered */
	bool holding;		/* false once over the limit or closed */
	bool resync;		/* over its limit: sc_watch_next fails */
} sc_watch_stats;

/*
 * sc_watch_stats_get - what the watcher holds back and has delivered. Any
 * thread, while the watcher is open; each field is read atomically but the
 * set is not one snapshot while the watcher or the writer runs. Only the
 * versions the watcher pins alone are freed when it lets go: another
 * watcher or reader pinning an older version keeps them too.
 */
SC_API void sc_watch_stats_get(const sc_watcher *w, sc_watch_stats *out);

#ifdef __cplusplus
}
#endif

#endif
