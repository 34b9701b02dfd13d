/*
 * What the change feeds (watch/) need of the cache, and nothing more: a
 * hook that promote calls after it publishes a version, the newest version
 * number, and the bytes a run of superseded versions holds.
 *
 * Library-internal: not installed. The cache layer implements it
 * (cache/cache.c); watch/ is its only user.
 */
#ifndef STATECACHE_CACHE_HOOK_H
#define STATECACHE_CACHE_HOOK_H

#include <stdint.h>

#include "statecache/cache.h"

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
