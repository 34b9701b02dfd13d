/*
 * The versioned cache: versions, reader slots, the cache object. Private
 * to cache/ (cache.c: writer, views, stats; reclaim.c: readers and
 * reclamation; load.c: restore); other layers use cache/cache_lib.h.
 */
#ifndef STATECACHE_CACHE_INTERNAL_H
#define STATECACHE_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache_lib.h"
#include "cache/entity.h"
#include "common/pool.h"
#include "statecache/cache.h"

/* A slot's pin when the reader pins nothing. */
#define SC_PIN_NONE UINT64_MAX

/*
 * Partitions. An entity is (partition, id). The default partition (empty
 * name) is the version's `root`, exactly the map a store that never names
 * a partition has. Every named partition has a tree of its own in the same
 * map family (separate trees, so each has its own edit while a version is
 * pending: hamt.h allows that) and the version's partition table maps its
 * name to its root: the top-level map from a partition to its state, so a
 * partition is read, iterated and counted without touching any other, and
 * a partition's tree can later be loaded or dropped alone.
 *
 * struct sc_partition: the writer's record of a named partition, made the
 * first time an event, a restored state, an eviction, a load or a pin
 * names it and kept until the cache is destroyed (readers reach its name
 * through tables of versions; the name never changes). The registry
 * (cache->reg) finds it by name.
 */
struct sc_partition {
	uint64_t hash;		/* of the name, in the cache's map */
	sc_hamt_root root;	/* in the newest promoted version (writer) */
	sc_hamt_edit *edit;	/* open in the pending version, or NULL */
	sc_hamt_root next_root; /* scratch of promote */
	struct sc_partition *pending_next; /* partitions with an edit open */
	/* Residency (cache/residency.c). Writer fields: */
	struct sc_partition *evict_next; /* partitions evicted in pending */
	size_t bytes;			 /* state bytes of `root` */
	int64_t bytes_pending; /* their change in the pending version */
	uint32_t epoch;	       /* bumped by every load */
	bool cold;	       /* cold in the newest promoted version */
	bool evicting;	       /* made cold by the pending version */
	bool loading;	       /* made resident by the pending version */
	bool pinned;	       /* never offered for eviction */
	/* LRU tick of the last read: readers store it (relaxed) only when
	 * it differs from cache->lru_tick (sc_part_touch). */
	_Atomic uint64_t used;
	uint32_t len;
	char name[]; /* len bytes and a NUL */
};

/* A version's named partitions with at least one entity, sorted by name
 * (bytewise, a shorter name first on a tie). Immutable once published;
 * successive versions share it until one changes a named partition: the
 * version whose successor replaces it frees it. */
typedef struct sc_part_ref {
	const struct sc_partition *p;
	uint64_t hash;	   /* p->hash, here so a lookup skips other entries */
	sc_hamt_root root; /* empty when cold */
	/* Cold: the tree the partition had when it was evicted, for diffs
	 * only (cache/residency.c says when it may be read). */
	sc_hamt_root last;
	uint32_t epoch; /* the partition's load the tree comes from */
	bool cold;
} sc_part_ref;

/* A version's named partitions with at least one entity, and the cold
 * ones (cache/residency.c). */
struct sc_parts {
	size_t n;
	size_t entities; /* in all of them */
	size_t cold;	 /* entries that are cold */
	/* Open addressing on the name's hash: slots[h & mask] onwards holds
	 * the index of each entry, UINT32_MAX where none; at most half full.
	 * A lookup costs one hash of the name and about one entry, however
	 * many partitions there are (sc_parts_find). */
	uint32_t *slots;
	size_t mask;
	sc_part_ref items[];
};

/* A partition's bytes: its states' and the estimate of its nodes. */
static inline size_t sc_part_bytes(size_t state_bytes, size_t entities)
{
	return state_bytes + entities * SC_PART_NODE_BYTES_PER_ENTITY;
}

/* Whether p is cold in the pending version: cold and not being loaded,
 * or being evicted. Writer. */
static inline bool sc_part_cold_pending(const struct sc_partition *p)
{
	return (p->cold && !p->loading) || p->evicting;
}

/* Note a reader's use of partition p for the LRU (cache/residency.c): one
 * relaxed load of the global tick and of p's, and a relaxed store only
 * when they differ: no read-modify-write, and at most one store to p's
 * line per partition and tick. Any thread. */
static inline void sc_part_touch(const struct sc_partition *p,
				 const _Atomic uint64_t *tick)
{
	_Atomic uint64_t *u = (_Atomic uint64_t *)&p->used;
	uint64_t t = atomic_load_explicit(tick, memory_order_relaxed);
	if (atomic_load_explicit(u, memory_order_relaxed) != t)
		atomic_store_explicit(u, t, memory_order_relaxed);
}

/* The entry of `name` in table `t` (may be NULL) of a cache whose map is
 * `map`, or NULL. Any thread. */
const sc_part_ref *sc_parts_find(const sc_hamt *map, const struct sc_parts *t,
				 sc_str name);

/* The edit of partition `part` in the pending version (open, with the
 * default partition's edit opened first: sc_cache_pending_open), opened
 * on first use. Writer. Errors: ENOMEM (the pending version is poisoned).
 */
int sc_cache_part_edit(sc_cache *cache, sc_str part, sc_hamt_edit **out,
		       sc_error *err);

/* sc_cache_part_edit that also gives the accumulator of the partition's
 * state bytes in the pending version (sc_change.bytes) and refuses a cold
 * partition: SC_ESTATE, nothing changed (cache/residency.c). */
int sc_cache_part_open(sc_cache *cache, sc_str part, sc_hamt_edit **out,
		       int64_t **bytes, sc_error *err);

/* SC_ESTATE with a message when `part` is cold in the pending version
 * (cold and not being loaded, or being evicted); 0 otherwise. Writer. */
int sc_cache_part_check_cold(const sc_cache *cache, sc_str part, sc_error *err);

/* The record of `name` (not empty), made on first use. Writer. Errors:
 * ENOMEM (nothing changed). */
int sc_cache_part_record(sc_cache *cache, sc_str name,
			 struct sc_partition **out);

/* The record of `name` if the writer knows it, else NULL. Writer. */
struct sc_partition *sc_cache_part_known(const sc_cache *cache, sc_str name);

/* Abort every partition edit of the pending version (discard). */
void sc_cache_parts_abort(sc_cache *cache);

/* Allocate what promote needs for the named partitions (the next table,
 * with room for every entry of `cur` and every pending partition, the
 * array of their garbage lists, a sort array), then do every queued change
 * of their edits. Errors: ENOMEM, or the error of a queued change. */
int sc_cache_parts_prepare(sc_cache *cache, const struct sc_parts *cur);

/*
 * Commit every partition edit (prepared, so this cannot fail) and make the
 * next version's table: *next is `cur` when no named partition's tree
 * changed, else the reserved table, filled (the caller owns it then). The
 * garbage lists go to *garbage (an array the caller owns then; NULL when
 * there are none), their count, bytes and nodes to *ngarbage, *gbytes,
 * *gnodes. Every partition's root becomes its committed one.
 */
void sc_cache_parts_commit(sc_cache *cache, struct sc_parts *cur,
			   struct sc_parts **next, sc_hamt_garbage ***garbage,
			   size_t *ngarbage, size_t *gbytes, size_t *gnodes);

/* After sc_cache_parts_commit: the trees of the partitions the pending
 * version evicted (an array the caller owns then, NULL when none), their
 * count, and their bytes (estimated: cache/residency.c). The figures of
 * every partition become those of the new version. */
void sc_cache_parts_evicted(sc_cache *cache, sc_hamt_root **roots, size_t *n,
			    size_t *bytes);

/* Free every named partition's tree (the last version's), the registry
 * and what prepare kept. For sc_cache_destroy, after the discard. */
void sc_cache_parts_fini(sc_cache *cache);

/*
 * A promoted version. A view handed to readers is a version (sc_view is
 * struct sc_version). Immutable once published, except `garbage`, `next`
 * and `garbage_*`, which only the writer touches, and only once the version
 * has been superseded.
 */
struct sc_version {
	sc_hamt_root root;	/* the default partition */
	struct sc_parts *parts; /* named partitions; NULL: none */
	uint64_t number;
	uint64_t position;
	sc_cache *cache;
	/* What the commit that made version number+1 removed from this one;
	 * freed once no reader pins a version <= number. */
	sc_hamt_garbage *garbage;
	/* The same for named partitions: their trees' garbage lists and the
	 * partition table it replaced (NULL when it kept it). */
	sc_hamt_garbage **part_garbage;
	size_t npart_garbage;
	struct sc_parts *parts_replaced;
	/* Trees of partitions the commit evicted, freed whole with it. */
	sc_hamt_root *evicted;
	size_t nevicted;
	size_t garbage_bytes; /* HAMT node bytes + entity bytes it holds */
	size_t garbage_nodes;
	/* garbage_bytes summed over every older version (cache/cache_lib.h) */
	uint64_t garbage_before;
	struct sc_version *next; /* the next newer version (writer) */
};

/*
 * A reader slot: two cache lines of its own (false sharing would turn the
 * readers' pin stores into shared-line traffic). The slot array is the
 * reader table; a reader handle is a pointer to its slot.
 *
 * The first line is everything a lookup reads: the pin, copies of the
 * pinned version's number and root and of the map, so a lookup never reads
 * the version struct (which the writer writes when it supersedes that
 * version, and which malloc may have placed next to memory the writer
 * writes), and the owner. The second line holds what only open and close
 * touch.
 */
struct sc_reader {
	_Alignas(64) _Atomic uint64_t pin; /* version number or SC_PIN_NONE */
	/* Written by the owner, by the owner's thread-exit hook, and by open
	 * and close (the last two under slots_lock). */
	uint64_t number;		  /* version->number; SC_PIN_NONE */
	sc_hamt_root root;		  /* version->root */
	const struct sc_version *version; /* the pinned version, or NULL */
	/* Set once, when the cache is created. */
	const sc_hamt *map; /* cache->map */
	sc_cache *cache;
	/* The owner: the thread that used the slot last, by its number
	 * (cache/reclaim.c; never reused), 0 for none. Written under
	 * slots_lock; read by the thread about to use the slot (before it
	 * takes it over) and by the thread-exit hooks. */
	uint64_t owner;
	/* Cold, under cache->slots_lock: the slot's claim (read by open,
	 * close and the hooks). */
	_Alignas(64) bool in_use;
};
_Static_assert(offsetof(struct sc_reader, in_use) == 64,
	       "a lookup reads one line of its reader slot");

/*
 * An apply lane (cache/lanes.c): one share of a batch's events, those whose
 * entity hashes to the root slots the lane owns (hamt/hamt_internal.h), applied
 * in log order by one thread into lane edits of the pending version (one
 * per partition the batch names: each partition's tree is split by root
 * slot the same way, so an entity, its partition and id, stays in one
 * lane and one tree). The
 * threads applying a batch (the writer and the cache's workers) take the
 * lanes one after another until none is left; there are several lanes per
 * thread, so a thread that is held up leaves its share to the others. A
 * lane allocates entity states from its own pool and counts what it adds
 * to the cache's figures in fields of its own; the writer folds them into
 * the cache once the lanes are done. Lane k's HAMT lane map releases
 * states into lane k (sc_lane_release_entry), so that each pool gets back
 * the states it handed out. A partition the batch names only a few times
 * is not split: one lane takes its whole tree (sc_hamt_lane_take).
 */
typedef struct sc_lane {
	_Alignas(64) sc_cache *cache;
	/* Set by the writer while the lanes run a batch (under lanes_lock):
	 * the release hook counts into bytes_sub instead of the cache. */
	bool busy;
	sc_pool entity_pool;
	/* This batch's lane edits, by the batch's number of a partition
	 * (cache/lanes.c); NULL for a partition the lane has no share of. */
	sc_hamt_edit **edits;
	size_t nedits, capedits;
	/* By the same number: what the lane's changes did to the
	 * partition's state bytes (sc_change.bytes), folded by the writer. */
	int64_t *pbytes;
	size_t cappbytes;
	uint32_t *idx; /* the batch's events of this lane, in order */
	size_t nidx, capidx;
	/* What the batch did, for the writer to fold in. */
	size_t bytes_add, bytes_sub; /* entity states made, released */
	size_t garbage_bytes;	     /* published states dropped */
	size_t state_size_max;	     /* largest state made */
	uint64_t position;	     /* highest position applied */
	/* The lane's first failure (lanes stop at their first). */
	int rc;
	size_t failed_at; /* index of the event in the batch */
	sc_error err;
} sc_lane;

/* A partition is split among the lanes when a batch has at least this
 * many of its events per lane; one lane takes a partition with fewer
 * (cache/lanes.c). */
#define SC_LANES_SPLIT_MIN 4

/* Most threads applying a batch (options.lanes). */
#define SC_CACHE_THREADS_MAX 8

/*
 * Field placement matters: readers read the first group on every lookup,
 * the writer writes the second group on every apply. Keeping them on
 * separate cache lines stops the writer's counters from invalidating the
 * line readers need (the cache must be allocated 64-byte aligned).
 */
struct sc_cache {
	/* ---- read by readers; written by the writer once per promote ---- */
	_Alignas(64) sc_hamt *map;
	/* The newest promoted version; stored with release after the version
	 * is complete. */
	_Atomic(struct sc_version *) current;
	/* Its number; stored (release) after `current`, so a reader that
	 * loads number n (acquire) then loads `current` gets a version >= n. */
	_Atomic uint64_t current_number;
	_Atomic size_t current_len;
	_Atomic uint64_t current_position;
	/* Change feed hook (cache/cache_lib.h), or NULL. */
	_Atomic(struct sc_cache_hook *) hook;
	/* The LRU tick readers copy into the partitions they read; advanced
	 * by the writer (cache/residency.c). */
	_Atomic uint64_t lru_tick;

	/* ---- writer state ---- */
	_Alignas(64) struct sc_version *oldest; /* oldest..current via next */
	sc_hamt_edit *edit;			/* pending version, or NULL */
	bool poisoned;
	/* The next version's record, allocated by sc_cache_prepare so that
	 * promote allocates nothing; freed by discard and destroy. */
	struct sc_version *reserved;
	uint64_t generation; /* of the open edit, bumped per edit */
	uint64_t pending_position;
	size_t pending_garbage_entity_bytes; /* published states it drops */
	/* The largest state ever stored (bytes): bounds what a queued event
	 * can build (cache.c, queued apply). */
	size_t state_size_max;
	/* Freed entity states kept for reuse by size: a promote frees the
	 * states the next batch of events needs again. */
	sc_pool entity_pool;
	/* Named partitions: the registry (open addressing on the name's
	 * hash), those with an edit open in the pending version, and what
	 * prepare allocates so that promote allocates nothing (the next
	 * table, the garbage lists' array, the pending ones sorted). */
	struct sc_partition **reg;
	size_t reg_cap, reg_n;
	struct sc_partition *pending_parts;
	size_t npending_parts;
	struct sc_parts *reserved_parts;
	size_t reserved_parts_cap;
	sc_hamt_garbage **reserved_garbage;
	struct sc_partition **reserved_sorted;
	size_t reserved_pending_cap;
	/* Residency (cache/residency.c): partitions the pending version
	 * evicts, records cold or being evicted, the default partition's
	 * state bytes and their change in the pending version, what prepare
	 * reserves for the evicted trees, the state bytes of every resident
	 * partition (newest promoted version). */
	struct sc_partition *evicting;
	size_t nevicting;
	size_t ncold;
	size_t default_bytes;
	int64_t default_bytes_pending;
	sc_hamt_root *reserved_evicted;
	size_t reserved_evicted_cap;
	size_t nevicted, evicted_bytes; /* from commit to promote */
	size_t resident_bytes_w;	/* state bytes, resident partitions */
	_Atomic size_t resident_state_bytes; /* a copy for any thread */

	/* ---- counters for stats (atomic: read from any thread) ---- */
	_Atomic size_t entity_bytes; /* all entity states alive */
	_Atomic size_t versions_alive;
	_Atomic size_t bytes_awaiting;
	_Atomic size_t nodes_awaiting;
	_Atomic size_t readers_open;

	/* ---- reader table (cache/reclaim.c) ---- */
	_Alignas(64) pthread_mutex_t slots_lock; /* claim/release of slots */
	struct sc_reader *slots;
	void *slots_block; /* the allocation `slots` is aligned within */
	unsigned max_readers;
	_Atomic unsigned slots_high; /* slots [0, high) may be in use */
	pthread_key_t exit_key;	     /* thread-exit hook releasing pins */
	void *block;		     /* the allocation holding this struct */

	/* ---- apply lanes (cache/lanes.c); nthreads 1: none ---- */
	unsigned nthreads; /* threads applying a batch, the writer's too */
	unsigned nlanes;   /* lanes a batch is split into */
	sc_lane *lanes;
	pthread_t workers[SC_CACHE_THREADS_MAX]; /* 1..nthreads-1 */
	void *lanes_block; /* the allocation `lanes` is aligned within */
	uint64_t *hashes;  /* the batch's hashes, by event */
	size_t caphashes;
	pthread_mutex_t lanes_lock;  /* guards the fields below */
	pthread_cond_t lanes_go;     /* writer to workers: a batch, or stop */
	pthread_cond_t lanes_idle;   /* last worker to writer: all done */
	uint64_t lanes_batch;	     /* bumped per batch */
	unsigned lanes_running;	     /* workers still on the batch */
	_Atomic unsigned lanes_next; /* the next lane a thread takes */
	bool lanes_stop;
	/* The workers' job: a batch's lanes (batch_events), or freeing the
	 * lanes' garbage chains free_by[k] (sc_lanes_free_garbage). */
	bool lanes_freeing;
	sc_hamt_garbage **free_by;
	uint64_t lanes_frees; /* garbage freed by the lanes (tests) */
	const sc_event *batch_events;
	struct sc_lanes_parts *batch_parts; /* the batch's partitions */
	/* The batch between sc_cache_apply_batch_begin and its end (writer
	 * only): while batch_open, every other change of the pending version
	 * is refused (sc_cache_check_writable) and discard ends it first. */
	bool batch_open;
	struct sc_cache_batch {
		size_t n;
		bool lanes; /* its lanes run; else rc, failed, err are its
			       result (a serial apply, or a failure first) */
		int rc;
		size_t failed;
		sc_error err;
	} batch;
};

/* Open the pending version on top of the current one if none is open: a
 * new edit, a new generation, no garbage yet. Poisons on failure. */
int sc_cache_pending_open(sc_cache *cache, sc_error *err);

/* SC_EPOISONED, with the one message saying so, when the pending version
 * is unusable; 0 otherwise. */
int sc_cache_check_writable(const sc_cache *cache, sc_error *err);

/* Mark the pending version unusable (only discard is valid after) and
 * report `rc` from `what`; returns rc. */
int sc_cache_poison(sc_cache *cache, int rc, sc_error *err, const char *what);

/*
 * A change of one id in the pending version: the one write path of a state
 * entering it, whether an event is applied at once or queued, or a state is
 * loaded or restored. The map's update calls sc_change_update (which builds
 * the new state from `ev`, or takes `ne` as given, and notes what the
 * previous state adds to the edit's garbage); sc_change_done then does the
 * accounting once the update has returned.
 */
typedef struct sc_change {
	sc_cache *cache;
	sc_lane *lane;	    /* the lane applying it; NULL: the writer */
	const sc_event *ev; /* build the new state from it; NULL: take `ne` */
	sc_error *err;	    /* for the build's message; may be NULL */
	sc_entity *ne;	    /* the new state; NULL: the id leaves the map */
	uint64_t position;  /* the pending position advances to it */
	size_t dropped;	    /* bytes the previous state adds to the garbage */
	bool unique;	    /* a state this edit made of the id already is
			       SC_ECORRUPT (a restore never holds an id twice) */
	bool build_failed;  /* the update's error comes from the build */
	/* The state bytes of the tree changed, kept by the writer's changes
	 * (new size - previous size); NULL: not kept here (lanes fold
	 * theirs: cache/lanes.c). */
	int64_t *bytes;
	size_t prev_size; /* of the previous state, set by the update */
} sc_change;

/* sc_hamt update callback; ctx is an sc_change. */
int sc_change_update(void *ctx, const sc_hamt_key *old_key, void *old_value,
		     const sc_hamt_key **new_key, void **new_value);

/*
 * sc_change_done - account for change `c` after the map's update returned
 * `rc`. On success the new state counts in entity_bytes, the previous one
 * in the edit's garbage, and the pending position advances. On failure the
 * new state, never stored, is freed (c->ne becomes NULL) and nothing is
 * counted; poisoning is the caller's decision. Returns rc.
 */
int sc_change_done(sc_change *c, int rc);

/* Release hook for HAMT entries: frees the entity (key inside it). */
void sc_cache_release_entry(void *ctx, const sc_hamt_key *key, void *value);

/* lanes.c */
/* Set up apply lanes for `threads` threads (0: the cores online; at most
 * SC_CACHE_THREADS_MAX) and start the worker threads. Errors: ENOMEM,
 * EAGAIN (no thread); nothing is left set up. */
int sc_lanes_init(sc_cache *cache, unsigned lanes, sc_error *err);
/* sc_lanes_stop joins the workers (first thing at destroy); sc_lanes_fini
 * frees the rest once no state of a lane's pool is alive. */
void sc_lanes_stop(sc_cache *cache);
void sc_lanes_fini(sc_cache *cache);
/* Free garbage sorted by sc_hamt_garbage_sort: by[k] into lane k's map,
 * by[nlanes] into the map; the lanes' chains on the writer and the
 * workers at once when they hold at least a few thousand nodes and
 * entries (lane_items). Writer, no batch open. */
void sc_lanes_free_garbage(sc_cache *cache, sc_hamt_garbage *by[],
			   size_t lane_items);
/* The release and fresh hooks of lane k's map; ctx is the sc_lane. */
void sc_lane_release_entry(void *ctx, const sc_hamt_key *key, void *value);
bool sc_lane_entry_fresh(void *ctx, const sc_hamt_key *key, void *value);

/* cache.c: apply lane l's events of `evs` (hashes[i]: the map's hash of
 * event i's id; part[i]: the batch's number of its partition) into
 * l->edits[part[i]] and settle every edit of l->edits; records the lane's
 * first failure. Runs on the lane's thread. */
void sc_lane_run(sc_lane *l, const sc_event *evs, const uint64_t *hashes,
		 const uint32_t *part);

/* reclaim.c */
int sc_reclaim_init(sc_cache *cache, unsigned max_readers, sc_error *err);
void sc_reclaim_fini(sc_cache *cache);
/* The smallest version number any slot pins, or SC_PIN_NONE. Writer side:
 * issues the fence that pairs with the readers' pin fence first. */
uint64_t sc_reclaim_min_pinned(sc_cache *cache);
/* Free every superseded version no slot can reach; returns how many. */
size_t sc_reclaim_run(sc_cache *cache);
/* Free a superseded version's garbage and the version (writer). */
void sc_version_free(sc_cache *cache, struct sc_version *v);

#endif
