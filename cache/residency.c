/*
 * Residency of named partitions (cache/cache_lib.h): eviction, loading,
 * pins, the LRU ticks and the per-partition figures.
 *
 * A partition's record (struct sc_partition) says what the writer knows:
 * cold in the newest promoted version, evicted or loaded by the pending
 * one, pinned, its state bytes. A version's partition table lists a cold
 * partition with an empty root, so every read of statecache/cache.h finds
 * nothing there without a check of its own, and with the tree it had when
 * it was evicted (`last`), which only sc_view_diff reads: when diffing a
 * view a in which the partition is resident against a newer view b in
 * which it is cold, the eviction that made it cold happened after a, so
 * `last` is the tree of a version between a and b; it is garbage of that
 * version, which cannot be freed while a is pinned (reclamation frees the
 * oldest versions first, and only below the smallest pin).
 *
 * An evicted tree is freed whole (sc_hamt_root_free) with the garbage of
 * the version it leaves (cache/reclaim.c): the partition had no edit in the
 * pending version that evicted it (refused), and a load starts a new tree
 * from the empty root, so no later version shares a node of it, nor any
 * garbage list of an older version (their nodes and states left the
 * partition's tree before it was evicted): the order in which one
 * reclaim frees them does not matter.
 *
 * Figures: a change made on the writer thread adds the new state's size
 * and subtracts the previous one's in its partition's accumulator
 * (sc_change.bytes); the apply lanes count theirs in lane-private
 * accumulators, one per partition of the batch, which the writer folds
 * into each partition's once the lanes are done (cache/lanes.c).
 * The accumulators are the pending version's; promote folds them into the
 * partitions' figures, discard drops them.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"

/* ==== checks ============================================================== */

static int name_check(sc_str name, const char *what, sc_error *err)
{
	if (!name.len)
		return sc_error_set(err, SC_EINVAL,
				    "cannot %s the default partition: it is "
				    "always resident",
				    what);
	if (!name.ptr)
		return sc_error_set(err, SC_EINVAL, "partition name is NULL");
	if (name.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "partition name of %zu bytes; at most %u",
				    name.len, (unsigned)SC_EVENT_FIELD_MAX);
	return SC_OK;
}

static int shown(size_t len)
{
	return (int)(len > 64 ? 64 : len);
}

int sc_cache_part_check_cold(const sc_cache *cache, sc_str part, sc_error *err)
{
	const struct sc_partition *p = sc_cache_part_known(cache, part);
	if (!p || !sc_part_cold_pending(p))
		return SC_OK;
	return sc_error_set(err, SC_ESTATE,
			    "partition '%.*s' is cold: its events go to the "
			    "log only, or load it first",
			    shown(part.len), part.ptr);
}

sc_residency sc_cache_part_residency(const sc_cache *cache, sc_str partition)
{
	if (!partition.len)
		return SC_RESIDENCY_RESIDENT;
	const struct sc_partition *p = sc_cache_part_known(cache, partition);
	if (!p)
		return SC_RESIDENCY_ABSENT;
	if (sc_part_cold_pending(p))
		return SC_RESIDENCY_COLD;
	if (p->loading || p->edit)
		return SC_RESIDENCY_RESIDENT;
	return sc_hamt_count(p->root) ? SC_RESIDENCY_RESIDENT
				      : SC_RESIDENCY_ABSENT;
}

/* ==== views =============================================================== */

sc_residency sc_view_residency(const sc_view *view, sc_str partition)
{
	const struct sc_version *v =
	    (const struct sc_version *)(const void *)view;
	if (!partition.len)
		return SC_RESIDENCY_RESIDENT;
	const sc_part_ref *r =
	    sc_parts_find(v->cache->map, v->parts, partition);
	if (!r)
		return SC_RESIDENCY_ABSENT;
	return r->cold ? SC_RESIDENCY_COLD : SC_RESIDENCY_RESIDENT;
}

size_t sc_view_cold_count(const sc_view *view)
{
	const struct sc_version *v =
	    (const struct sc_version *)(const void *)view;
	return v->parts ? v->parts->cold : 0;
}

/* ==== evict and load ====================================================== */

/* What an eviction or a load checks first: a cache, a valid name, a
 * writable pending version; *p is the partition's record (made if new). */
static int part_change_begin(sc_cache *cache, sc_str name, const char *what,
			     struct sc_partition **p, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL, "cache is NULL");
	int rc = name_check(name, what, err);
	if (!rc)
		rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	if (sc_cache_part_record(cache, name, p))
		return sc_error_set(err, ENOMEM,
				    "out of memory for a partition record");
	return SC_OK;
}

int sc_cache_part_evict(sc_cache *cache, sc_str name, sc_error *err)
{
	struct sc_partition *p;
	int rc = part_change_begin(cache, name, "evict", &p, err);
	if (rc)
		return rc;
	if (p->pinned)
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is pinned resident; "
				    "unpin it first",
				    shown(name.len), name.ptr);
	if (sc_part_cold_pending(p))
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is cold already",
				    shown(name.len), name.ptr);
	if (p->edit || p->loading)
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is changed by the "
				    "pending version; promote it first",
				    shown(name.len), name.ptr);
	rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	p->evicting = true;
	p->evict_next = cache->evicting;
	cache->evicting = p;
	cache->nevicting++;
	if (!p->cold)
		cache->ncold++;
	return SC_OK;
}

int sc_cache_part_load_begin(sc_cache *cache, sc_str name, uint64_t *born,
			     sc_error *err)
{
	struct sc_partition *p;
	int rc = part_change_begin(cache, name, "load", &p, err);
	if (rc)
		return rc;
	if (p->evicting || p->loading || p->edit)
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is evicted, loaded or "
				    "changed by the pending version; promote "
				    "it first",
				    shown(name.len), name.ptr);
	if (!p->cold && sc_hamt_count(p->root))
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is resident already",
				    shown(name.len), name.ptr);
	rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	/* Marked loading first: the edit of a cold partition opens only
	 * then. Its base is empty (a cold record's root is). */
	p->loading = true;
	sc_hamt_edit *edit;
	int64_t *bytes;
	rc = sc_cache_part_open(cache, name, &edit, &bytes, err);
	if (rc) {
		p->loading = false;
		return rc;
	}
	p->epoch++;
	atomic_store_explicit(
	    &p->used,
	    atomic_load_explicit(&cache->lru_tick, memory_order_relaxed),
	    memory_order_relaxed);
	if (born)
		*born = cache->generation;
	return SC_OK;
}

/* ==== pins and LRU ======================================================== */

int sc_cache_part_pin(sc_cache *cache, sc_str name, bool pinned, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL, "cache is NULL");
	int rc = name_check(name, "pin", err);
	if (rc)
		return rc;
	struct sc_partition *p;
	if (sc_cache_part_record(cache, name, &p))
		return sc_error_set(err, ENOMEM,
				    "out of memory for a partition record");
	if (pinned && p->evicting)
		return sc_error_set(err, SC_ESTATE,
				    "partition '%.*s' is being evicted by the "
				    "pending version: promote or discard it "
				    "first, then pin it",
				    (int)(name.len > 64 ? 64 : name.len),
				    name.ptr);
	p->pinned = pinned;
	return SC_OK;
}

void sc_cache_lru_advance(sc_cache *cache)
{
	atomic_store_explicit(
	    &cache->lru_tick,
	    atomic_load_explicit(&cache->lru_tick, memory_order_relaxed) + 1,
	    memory_order_relaxed);
}

static const struct sc_version *writer_current(const sc_cache *cache)
{
	return atomic_load_explicit(&((sc_cache *)cache)->current,
				    memory_order_relaxed);
}

size_t sc_cache_part_coldest(sc_cache *cache, sc_str *out, size_t k)
{
	const struct sc_parts *t = writer_current(cache)->parts;
	if (!t || !k)
		return 0;
	/* The table is in name order, so keeping the first of equal ticks
	 * (strictly older ones move ahead) breaks ties by name. */
	const struct sc_partition *best[64];
	uint64_t ticks[64];
	size_t kk = k < 64 ? k : 64, n = 0;
	for (size_t i = 0; i < t->n; i++) {
		const struct sc_partition *p = t->items[i].p;
		if (t->items[i].cold || p->pinned || p->edit || p->loading ||
		    p->evicting)
			continue;
		uint64_t u =
		    atomic_load_explicit(&p->used, memory_order_relaxed);
		if (n == kk && u >= ticks[n - 1])
			continue;
		size_t j = n < kk ? n++ : n - 1;
		while (j > 0 && ticks[j - 1] > u) {
			ticks[j] = ticks[j - 1];
			best[j] = best[j - 1];
			j--;
		}
		ticks[j] = u;
		best[j] = p;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = (sc_str){best[i]->name, best[i]->len};
	return n;
}

/* ==== figures ============================================================= */

size_t sc_cache_part_list(sc_cache *cache, sc_cache_part_info *out, size_t cap)
{
	const struct sc_version *v = writer_current(cache);
	const struct sc_parts *t = v->parts;
	size_t n = 1 + (t ? t->n : 0);
	if (cap)
		out[0] = (sc_cache_part_info){
		    .name = {"", 0},
		    .residency = SC_RESIDENCY_RESIDENT,
		    .entities = sc_hamt_count(v->root),
		    .bytes = sc_part_bytes(cache->default_bytes,
					   sc_hamt_count(v->root))};
	for (size_t i = 0; t && i < t->n && i + 1 < cap; i++) {
		const sc_part_ref *r = &t->items[i];
		const struct sc_partition *p = r->p;
		size_t count = sc_hamt_count(r->root);
		out[i + 1] = (sc_cache_part_info){
		    .name = {p->name, p->len},
		    .residency =
			r->cold ? SC_RESIDENCY_COLD : SC_RESIDENCY_RESIDENT,
		    .pinned = p->pinned,
		    .entities = count,
		    .bytes = r->cold ? 0 : sc_part_bytes(p->bytes, count),
		    .last_used =
			atomic_load_explicit(&p->used, memory_order_relaxed)};
	}
	return n;
}

size_t sc_cache_resident_bytes(const sc_cache *cache)
{
	sc_cache *c = (sc_cache *)cache;
	return sc_part_bytes(
	    atomic_load_explicit(&c->resident_state_bytes,
				 memory_order_relaxed),
	    atomic_load_explicit(&c->current_len, memory_order_relaxed));
}
