/*
 * statecache: a persistent hash array mapped trie (HAMT).
 *
 * Maps byte-string keys (1..SC_HAMT_KEY_MAX bytes) to opaque value pointers.
 * A map family (sc_hamt) holds the hash seed, the hooks and the allocation
 * counters; its contents live in immutable versions (sc_hamt_root) made by
 * edits. Nodes follow CHAMP: each node has one bitmap for inline entries and
 * one for sub-nodes, with both arrays compressed:
 *
 *     node: [datamap][nodemap] | entry entry ... | child child ...
 *              32 bits  32 bits   (key, value)      node pointers
 *
 *     hash bits 0..4 pick the slot at depth 0, bits 5..9 at depth 1, ...
 *     depth 12 uses the last 4 bits; keys whose 64-bit hashes are all equal
 *     share a collision node below it.
 *
 * Canonical form: after any removal a node left with a single entry and no
 * children is pulled into its parent, so two versions with the same contents
 * have the same shape whatever the order of operations.
 *
 * Entries: an entry is the pair (key object, value). The caller allocates
 * the key object (sc_hamt_key, often inside the value's own allocation) and
 * hands the pair to the map with sc_hamt_edit_set(); from then on the map
 * owns the pair and gives it back exactly once to the release hook when no
 * version can reach it any more. Lookups take plain bytes.
 *
 * Memory: see hamt/DESIGN.md. In short, an edit changes nodes it created in
 * place and copies published ones; the published nodes and entries it
 * replaced are collected into a garbage list, returned by commit, which the
 * caller frees (sc_hamt_garbage_free) once no reader can reach the version
 * the edit started from. Abort frees exactly what the edit created.
 *
 * Thread safety: a version (sc_hamt_root) is immutable and may be read by
 * any number of threads at once with sc_hamt_get / iteration / diff, as long
 * as the caller guarantees its nodes are not freed meanwhile. Edits, commit,
 * abort and garbage_free are for one writer thread at a time per map.
 */
#ifndef STATECACHE_HAMT_H
#define STATECACHE_HAMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/api.h"
#include "statecache/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest key in bytes. */
#define SC_HAMT_KEY_MAX 1024
/* Depth of the deepest bitmap node (0-based) plus the collision level. */
#define SC_HAMT_MAX_DEPTH 14

/* A key object. `len` is 1..SC_HAMT_KEY_MAX. The caller allocates it and
 * must keep it unchanged until the release hook receives it. */
typedef struct sc_hamt_key {
	uint32_t len;
	uint32_t reserved; /* set to 0 */
	unsigned char bytes[];
} sc_hamt_key;

struct sc_hamt_node;
typedef struct sc_hamt sc_hamt;
typedef struct sc_hamt_edit sc_hamt_edit;
typedef struct sc_hamt_garbage sc_hamt_garbage;

/* An immutable version: the root node and the entry count. Copy it freely;
 * treat the fields as private. The zero value is the empty map. */
typedef struct sc_hamt_root {
	const struct sc_hamt_node *node;
	size_t count;
} sc_hamt_root;

/* Called once for every entry that leaves the map for good: when garbage
 * holding it is freed, when an aborted edit drops an entry it inserted, or
 * when a root is freed whole. Runs on the thread that frees. */
typedef void (*sc_hamt_release_fn)(void *ctx, const sc_hamt_key *key,
				   void *value);

/* Replaces the seeded XXH3 hash; for tests that force collisions. */
typedef uint64_t (*sc_hamt_hash_fn)(const void *key, size_t len, uint64_t seed);

/* Make the nodes of every committed version read-only (mprotect), so that a
 * write to a published node traps. Each node then takes whole pages: debug
 * and test builds only. */
#define SC_HAMT_PROTECT 0x1u

/*
 * Optional: whether the pair (key, value) was inserted by the edit that is
 * open now. The map asks only about pairs that leave an edit's tree (replaced
 * or removed, or freed by abort) and sit in a node the edit made: those are
 * either pairs the edit inserted (released at once) or pairs of the base
 * version (garbage). Without the hook the map finds out by looking the pair
 * up in the base version, one more descent per replacement. The answer must
 * be exact: true for a pair of the base version frees memory readers use.
 * Called on the writer thread with `release_ctx`.
 */
typedef bool (*sc_hamt_fresh_fn)(void *ctx, const sc_hamt_key *key,
				 void *value);

typedef struct sc_hamt_options {
	uint64_t seed;		    /* 0: a random seed from getrandom() */
	sc_hamt_release_fn release; /* may be NULL */
	void *release_ctx;
	sc_hamt_hash_fn hash;	/* NULL: XXH3 64-bit with `seed` */
	unsigned flags;		/* SC_HAMT_PROTECT */
	sc_hamt_fresh_fn fresh; /* may be NULL: see sc_hamt_fresh_fn */
} sc_hamt_options;

/*
 * sc_hamt_create - make a new, empty map family.
 *
 * `opt` may be NULL for defaults. On success *out owns the map; free it with
 * sc_hamt_destroy(). Errors: ENOMEM; EIO if no random seed could be read.
 */
SC_API int sc_hamt_create(const sc_hamt_options *opt, sc_hamt **out);

/*
 * sc_hamt_destroy - free the map family.
 *
 * Every version's nodes must have been freed before (garbage lists freed,
 * the last root given to sc_hamt_root_free, any edit aborted). NULL is a
 * no-op.
 */
SC_API void sc_hamt_destroy(sc_hamt *map);

/*
 * sc_hamt_get - the value stored under `key` in `root`, or NULL.
 *
 * Lock-free and allocation-free. Thread-safe as described above. Keys longer
 * than SC_HAMT_KEY_MAX or empty are never present.
 */
SC_API void *sc_hamt_get(const sc_hamt *map, sc_hamt_root root, const void *key,
			 size_t len);

/* sc_hamt_count - the number of entries in `root`, O(1). */
static inline size_t sc_hamt_count(sc_hamt_root root)
{
	return root.count;
}

/*
 * sc_hamt_edit_begin - open an edit on top of `base`.
 *
 * `base` must be a committed version of `map` that stays alive until the edit
 * ends (or the empty root). Several edits of one map may be open at once
 * when their bases share no node (separate trees built by separate edits,
 * such as one tree per namespace): an edit changes in place only the nodes
 * it made and lists as garbage the published nodes it replaces, so two
 * edits over one shared node would both list it. Errors: ENOMEM.
 */
SC_API int sc_hamt_edit_begin(sc_hamt *map, sc_hamt_root base,
			      sc_hamt_edit **out);

/*
 * sc_hamt_edit_set - insert or replace the entry for key->bytes.
 *
 * On success the map owns (key, value). The set may be done a few calls
 * later, while its path is prefetched (hamt/DESIGN.md); every other call on
 * the edit sees it done. If an entry with equal bytes existed,
 * the old pair is dropped (released later with the garbage, or at once if
 * this edit inserted it). Setting the very same (key, value) pair again is a
 * no-op. A key object belongs to one pair: a new value for the same key
 * comes with its own key object, since the old pair's key goes to the
 * release hook with the old value. Writer thread; O(depth), allocates the
 * changed path. Errors: SC_EINVAL (key length 0 or > SC_HAMT_KEY_MAX; nothing
 * changed, the caller keeps the pair), ENOMEM (the edit is poisoned: every
 * later call but abort returns SC_EPOISONED; the caller keeps the pair;
 * the failure may come from doing an earlier set, whose pair the map keeps
 * and abort releases).
 */
SC_API int sc_hamt_edit_set(sc_hamt_edit *edit, const sc_hamt_key *key,
			    void *value);

/*
 * sc_hamt_edit_remove - remove the entry for `key`.
 *
 * Errors: SC_NOTFOUND (nothing changed), ENOMEM and SC_EPOISONED as above.
 */
SC_API int sc_hamt_edit_remove(sc_hamt_edit *edit, const void *key, size_t len);

/*
 * The decision of an update: called once with the entry now stored under the
 * key (old_key and old_value NULL when there is none). Return 0 and set
 * *new_key to NULL to remove the entry (nothing happens if there is none),
 * or set *new_key and *new_value to the pair to store: new_key's bytes must
 * equal the key updated. Storing the old pair again changes nothing. Any
 * other return value is handed back by sc_hamt_edit_update, which then
 * changes nothing. The callback must not call into the map.
 */
typedef int (*sc_hamt_update_fn)(void *ctx, const sc_hamt_key *old_key,
				 void *old_value, const sc_hamt_key **new_key,
				 void **new_value);

/*
 * sc_hamt_edit_update - read, decide and write the entry for `key` with one
 * descent of the tree: the same result as sc_hamt_edit_get followed by
 * sc_hamt_edit_set or sc_hamt_edit_remove, in about a third of the work.
 *
 * `fn` runs once unless the call fails before it (SC_EINVAL, SC_EPOISONED,
 * or ENOMEM doing the sets queued before it).
 * The old pair, if replaced or removed, is dropped as by sc_hamt_edit_set
 * (it may go to the release hook before this returns: read what you need of
 * it inside `fn`). On success the map owns the new pair. Writer thread.
 * Errors: SC_EINVAL (key length 0 or > SC_HAMT_KEY_MAX, fn NULL, or the new
 * key's bytes differ from `key`: nothing changed, the caller keeps the new
 * pair), the callback's own non-zero code (nothing changed), ENOMEM (the
 * edit is poisoned as for sc_hamt_edit_set; the caller keeps the new pair),
 * SC_EPOISONED.
 */
SC_API int sc_hamt_edit_update(sc_hamt_edit *edit, const void *key, size_t len,
			       sc_hamt_update_fn fn, void *ctx);

/* sc_hamt_edit_get - lookup in the edit's current, uncommitted state. */
SC_API void *sc_hamt_edit_get(const sc_hamt_edit *edit, const void *key,
			      size_t len);

/* sc_hamt_edit_root - the edit's current state, for iteration or diff by the
 * writer thread. Valid until the next change to the edit or its end. */
SC_API sc_hamt_root sc_hamt_edit_root(const sc_hamt_edit *edit);

/*
 * sc_hamt_edit_commit - end the edit and return the new immutable version.
 *
 * *garbage receives what the base version held that the new one does not
 * (nodes and entries); free it with sc_hamt_garbage_free() once no reader can
 * reach the base version. It is NULL when there is nothing to free. The edit
 * is freed. With SC_HAMT_PROTECT, the new nodes become read-only here.
 * Errors: SC_EPOISONED (the edit stays open: abort it), ENOMEM (same).
 */
SC_API int sc_hamt_edit_commit(sc_hamt_edit *edit, sc_hamt_root *out,
			       sc_hamt_garbage **garbage);

/*
 * sc_hamt_edit_abort - end the edit, freeing every node it made and releasing
 * every entry it inserted. The base version is untouched. NULL is a no-op.
 */
SC_API void sc_hamt_edit_abort(sc_hamt_edit *edit);

/* Size of a garbage list: nodes, node bytes, and entries it will release. */
typedef struct sc_hamt_garbage_info {
	size_t nodes;
	size_t bytes;
	size_t entries;
} sc_hamt_garbage_info;

SC_API void sc_hamt_garbage_info_get(const sc_hamt_garbage *g,
				     sc_hamt_garbage_info *out);

/*
 * sc_hamt_garbage_free - free the nodes and release the entries of `g`.
 *
 * Only when no reader can still reach the version the edit started from.
 * Writer thread. NULL is a no-op.
 */
SC_API void sc_hamt_garbage_free(sc_hamt *map, sc_hamt_garbage *g);

/*
 * sc_hamt_root_free - free every node reachable from `root` and release every
 * entry in it. Only valid when `root` is the last version alive (all garbage
 * lists up to it freed, no reader). Used at shutdown. Writer thread.
 */
SC_API void sc_hamt_root_free(sc_hamt *map, sc_hamt_root root);

/* ---- iteration --------------------------------------------------------- */

/* Iterator over one version; stack-allocatable, no allocation. The order is
 * stable for a given version (hash order). Fields are private. */
typedef struct sc_hamt_iter {
	const struct sc_hamt_node *stack[SC_HAMT_MAX_DEPTH + 1];
	uint32_t pos[SC_HAMT_MAX_DEPTH + 1];
	int depth;
} sc_hamt_iter;

SC_API void sc_hamt_iter_init(sc_hamt_iter *it, sc_hamt_root root);

/* Next entry, or false at the end. *key and *value stay valid as long as the
 * version does. */
SC_API bool sc_hamt_iter_next(sc_hamt_iter *it, const sc_hamt_key **key,
			      void **value);

/* ---- diff -------------------------------------------------------------- */

typedef enum sc_diff_kind {
	SC_DIFF_ADDED = 1,   /* in new only: old_value NULL */
	SC_DIFF_REMOVED = 2, /* in old only: new_value NULL */
	SC_DIFF_CHANGED = 3, /* in both, different value pointers */
} sc_diff_kind;

/* Return 0 to go on, anything else to stop the diff with that value. */
typedef int (*sc_hamt_diff_fn)(void *ctx, sc_diff_kind kind,
			       const sc_hamt_key *key, void *old_value,
			       void *new_value);

/*
 * sc_hamt_diff - report every difference from `old_root` to `new_root`.
 *
 * Subtrees the two versions share (same node pointer) are skipped, so the
 * cost follows the size of the change, not of the map. Both must be versions
 * of `map`. Returns 0, or the callback's non-zero value.
 */
SC_API int sc_hamt_diff(const sc_hamt *map, sc_hamt_root old_root,
			sc_hamt_root new_root, sc_hamt_diff_fn fn, void *ctx);

/* ---- stats and checks ---------------------------------------------------- */

typedef struct sc_hamt_stats {
	size_t entries;
	size_t nodes; /* bitmap nodes and collision nodes */
	size_t collision_nodes;
	size_t bytes; /* bytes of node memory reachable from the root */
	size_t max_depth;
	size_t depth_histogram[SC_HAMT_MAX_DEPTH + 1]; /* nodes per depth */
} sc_hamt_stats;

/* Walk `root` and fill *out. O(nodes). */
SC_API void sc_hamt_stats_get(const sc_hamt *map, sc_hamt_root root,
			      sc_hamt_stats *out);

/* Bytes of node memory the map family holds now (all live versions, edits
 * and unfreed garbage). Any thread. */
SC_API size_t sc_hamt_allocated_bytes(const sc_hamt *map);

/*
 * sc_hamt_check - verify the invariants of `root`: bitmap popcounts match the
 * arrays, every key sits at the slot its hash names, canonical form, no empty
 * node below the root, collision nodes only at full depth with equal hashes,
 * count matches. Returns SC_OK, or SC_ECORRUPT with a description in `why`
 * (may be NULL). O(entries).
 */
SC_API int sc_hamt_check(const sc_hamt *map, sc_hamt_root root, char *why,
			 size_t why_len);

#ifdef __cplusplus
}
#endif

#endif
