/*
 * HAMT calls for the cache only: updates with the key's hash given, queued
 * updates whose paths are prefetched while earlier changes are done, and
 * doing the queue at once. Library-internal, not installed: the layers
 * above the cache use the cache's own calls.
 */
#ifndef STATECACHE_HAMT_INTERNAL_H
#define STATECACHE_HAMT_INTERNAL_H

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

#endif
