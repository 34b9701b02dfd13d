#include "tests/support/cache_testkit.h"

#include <stdatomic.h>

#include "cache/cache_internal.h"

size_t tk_live_bytes(sc_cache *cache)
{
	const struct sc_version *v = atomic_load(&cache->current);
	sc_hamt_stats hs;
	sc_hamt_stats_get(cache->map, v->root, &hs);
	size_t bytes = hs.bytes;
	sc_hamt_iter it;
	sc_hamt_iter_init(&it, v->root);
	const sc_hamt_key *k;
	void *val;
	while (sc_hamt_iter_next(&it, &k, &val))
		bytes += sc_entity_memory_bytes(val);
	return bytes;
}
