/*
 * Helpers for tests that look inside the cache (they include
 * cache/cache_internal.h themselves).
 */
#ifndef STATECACHE_TESTS_CACHE_TESTKIT_H
#define STATECACHE_TESTS_CACHE_TESTKIT_H

#include <stddef.h>

#include "statecache/cache.h"

/* Bytes of the newest promoted version alone: its HAMT nodes and entity
 * states, counted by walking it. Writer thread. */
size_t tk_live_bytes(sc_cache *cache);

#endif
