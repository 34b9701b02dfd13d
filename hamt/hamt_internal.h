/*
 * HAMT calls for the cache only: updates with the key's hash given, queued
 * updates whose paths are prefetched while earlier changes are done, and
 * doing the queue at once, and lanes (one edit built by several threads).
 * Library-internal, not installed: the layers
 * above the cache use the cache's own calls.
 */
#ifndef STATECACHE_HAMT_INTERNAL_H
#define STATECACHE_HAMT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/hamt.h"

/*
 * sc_hamt_hash - the hash `map` gives the key bytes (its seeded XXH3, or the
 * `hash` option), for sc_hamt_edit_update_hashed and
 * sc_hamt_edit_update_later, so a caller hashes each key once. Any thread.
 */
uint64_t sc_hamt_hash(const sc_hamt *map, const void *key, size_t len);

/*
 * sc_hamt_edit_update_hashed - sc_hamt_edit_update with the key's hash
 * given: `hash` must be sc_hamt_hash(map, key, len) (anything else corrupts
 * the map; debug builds check). Same errors.
 */
int sc_hamt_edit_update_hashed(sc_hamt_edit *edit, const void *key, size_t len,
			       uint64_t hash, sc_hamt_update_fn fn, void *ctx);

/* Called exactly once for each queued update (sc_hamt_edit_update_later):
 * rc is SC_OK when it was done, else why it was not (the callback's code,
 * ENOMEM, or SC_ESTATE when the edit was aborted before it ran). After it
 * the map uses neither `ctx` nor the key bytes. */
typedef void (*sc_hamt_done_fn)(void *ctx, int rc);

/*
 * sc_hamt_edit_update_later - sc_hamt_edit_update_hashed, done a few calls
 * later: the update waits in the edit's queue (with the queued sets) while
 * its path is prefetched, so the memory misses of several changes overlap.
 * `key` bytes and `ctx` must stay valid until `done` runs. Every other call
 * on the edit (lookups, sc_hamt_edit_root, commit, a synchronous update)
 * first does what is queued, in order.
 *
 * The callback runs as for sc_hamt_edit_update, but its error cannot be
 * handed to the caller that queued it: any error of a queued update
 * (including the callback's) poisons the edit, goes to its `done`, and is
 * returned by the call that did it (this one, or a later one on the edit).
 * Returns SC_OK when queued. Errors: SC_EINVAL (as for update; not queued),
 * SC_EPOISONED, or the error of an earlier queued change done here (the edit
 * is then poisoned; this update was not queued and `done` is not called).
 */
int sc_hamt_edit_update_later(sc_hamt_edit *edit, const void *key, size_t len,
			      uint64_t hash, sc_hamt_update_fn fn,
			      sc_hamt_done_fn done, void *ctx);

/*
 * sc_hamt_edit_settle - do every queued change now. After it returns SC_OK,
 * sc_hamt_edit_commit allocates nothing and cannot fail. Errors:
 * SC_EPOISONED, or the error of a queued change (the edit is then
 * poisoned: abort it).
 */
int sc_hamt_edit_settle(sc_hamt_edit *edit);

/* ---- lanes -------------------------------------------------------------- */

/*
 * Lanes: one edit built by several threads at once (the cache's parallel
 * apply).
 *
 * The keys of a map split by the depth-0 fragment of their hash (the root
 * node's slot, hash bits 0..4): lane k of n owns the slots s with
 * s % n == k, and with them the whole subtree under each. A change to a key
 * only reads and writes the path under its slot, and every structural rule
 * that reaches the root (an entry pushed down, a sub-node collapsed into
 * its slot, the last entry removed) is about that one slot, so the lanes'
 * changes commute and their result is the one serial changes would give:
 *
 *   open edit (root R)       split              lanes, each on its own thread
 *   +----------------+   V0 = R's slots 0,2,4..   lane 0: changes under V0
 *   | R: slots 0..31 |-> V1 = R's slots 1,3,5..   lane 1: changes under V1
 *   +----------------+                                  |
 *          ^------------------- join: one new root from V0' and V1'
 *
 * Each lane is an edit of its own (sc_hamt_edit, with the open edit's id, so
 * the nodes the open edit made are the lane's to change in place) whose
 * root V_k holds R's slots of the lane. A lane is used by one thread at a
 * time; which thread may change from one split to the next. It allocates from a
 * lane map: a shadow of the map with a node pool, allocation counter, garbage
 * list and release hook of its own, so that lanes share no writable memory. A
 * lane's garbage stays tied to its lane map and is freed back into it, so each
 * lane's pool gets back what it handed out. The lane maps live as long as
 * the map.
 *
 * Join makes one root node of the lanes' roots (the root is written once)
 * and chains their garbage lists to the open edit's. If nothing changed it
 * keeps R. sc_hamt_allocated_bytes counts the lane maps' nodes.
 */
/* Most lanes a map can have: one per root slot. */
#define SC_HAMT_LANES_MAX 32

/* The lane of n that owns the key whose hash is `hash`. */
static inline unsigned sc_hamt_lane_of(uint64_t hash, unsigned n)
{
	return (unsigned)(hash & 31u) % n;
}

/*
 * sc_hamt_lanes_setup - give `map` n lane maps (2..SC_HAMT_LANES_MAX); lane
 * k calls release and fresh with ctx[k] instead of the map's release_ctx.
 * Once, before any edit. Errors: SC_EINVAL, ENOMEM (nothing set up).
 */
int sc_hamt_lanes_setup(sc_hamt *map, unsigned n, sc_hamt_release_fn release,
			sc_hamt_fresh_fn fresh, void *const ctx[]);

/*
 * sc_hamt_lanes_split - open lanes[0..n-1] (n as set up) on the open edit
 * `e`. Does the edit's queued changes first. Writer thread; afterwards
 * lanes[k] may be used by one thread, with the edit calls of hamt.h (the
 * queue included), until join or abort; `e` must not be used meanwhile.
 * Errors: SC_EPOISONED, ENOMEM or the error of a queued change (the edit is
 * poisoned, no lane is open).
 */
int sc_hamt_lanes_split(sc_hamt_edit *e, sc_hamt_edit *lanes[]);

/*
 * sc_hamt_lanes_join - end the lanes and put their changes into `e`. Each
 * lane must be settled (sc_hamt_edit_settle returned SC_OK). Writer
 * thread. Errors: ENOMEM (as sc_hamt_lanes_abort: every change the edit
 * holds is dropped and the edit is poisoned; abort it).
 */
int sc_hamt_lanes_join(sc_hamt_edit *e, sc_hamt_edit *lanes[]);

/*
 * sc_hamt_lanes_abort - end the lanes after a failure in any of them: free
 * what the lanes and the edit made (the lanes' queued updates get SC_ESTATE
 * first) and poison `e`, which the caller then aborts. Writer thread.
 */
void sc_hamt_lanes_abort(sc_hamt_edit *e, sc_hamt_edit *lanes[]);

/*
 * A whole tree in one lane: sc_hamt_lane_take opens *lane on the open edit
 * `e` with all of e's tree (not split), on lane map k, so that the thread
 * running lane k changes it with lane k's memory while other lanes run
 * (the edits of other trees, split or taken). sc_hamt_lane_give and
 * sc_hamt_lane_drop end it as sc_hamt_lanes_join and sc_hamt_lanes_abort
 * end split lanes, with the same rules and errors; `e` must not be used
 * in between. Writer thread.
 */
int sc_hamt_lane_take(sc_hamt_edit *e, unsigned k, sc_hamt_edit **lane);
int sc_hamt_lane_give(sc_hamt_edit *e, sc_hamt_edit *lane);
void sc_hamt_lane_drop(sc_hamt_edit *e, sc_hamt_edit *lane);

/*
 * sc_hamt_garbage_sort - move the lists of the garbage chain `g` onto the
 * chain of the map they free into: by[k] for lane k's lists, by[n] (n the
 * lanes set up; 0 when none) for the map's own, each in front of what by[]
 * held. Each chain is then freed by sc_hamt_garbage_free: the map's own on
 * the writer thread; lane k's touches lane map k only, so it may be freed
 * on any one thread while no lane k edit is open (as lanes run, one
 * thread per lane). Returns the nodes and entries of the lanes' lists
 * moved. Writer thread.
 */
size_t sc_hamt_garbage_sort(sc_hamt *map, sc_hamt_garbage *g,
			    sc_hamt_garbage *by[]);

#endif
