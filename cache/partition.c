/*
 * Named partitions (cache/cache_internal.h): the writer's registry of
 * partitions by name, the edit of each partition in the pending version,
 * and the partition table of a version (the top-level map from a
 * partition's name to its tree), rebuilt at a promote that changed a named
 * partition.
 *
 * The table is an array sorted by name (diffs and listings walk it in that
 * order) with an open-addressing index on the names' hashes: a lookup
 * costs one hash of the name and about one entry; a promote that changes
 * named partitions copies the P entries (a few bytes each) and rebuilds
 * the index once. The default partition is not in it: its tree is the
 * version's root, reached as in a store without partitions.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* ==== names =============================================================== */

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t m = alen < blen ? alen : blen;
	int c = m ? memcmp(a, b, m) : 0;
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

const sc_part_ref *sc_parts_find(const sc_hamt *map, const struct sc_parts *t,
				 sc_str name)
{
	if (!t || !t->n || !name.len || !name.ptr)
		return NULL;
	uint64_t h = sc_hamt_hash(map, name.ptr, name.len);
	for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
		uint32_t k = t->slots[i];
		if (k == UINT32_MAX)
			return NULL;
		const sc_part_ref *r = &t->items[k];
		if (r->hash == h && r->p->len == name.len &&
		    memcmp(r->p->name, name.ptr, name.len) == 0)
			return r;
	}
}

/* Slots of the lookup index of a table of at most `cap` entries: a power
 * of two, at least twice cap. */
static size_t parts_slots(size_t cap)
{
	size_t s = 4;
	while (s < 2 * cap)
		s *= 2;
	return s;
}

/* Fill t's lookup index (t->slots points at `nslots` slots). */
static void parts_index(struct sc_parts *t, size_t nslots)
{
	t->mask = nslots - 1;
	for (size_t i = 0; i < nslots; i++)
		t->slots[i] = UINT32_MAX;
	for (size_t k = 0; k < t->n; k++) {
		size_t i = (size_t)t->items[k].hash & t->mask;
		while (t->slots[i] != UINT32_MAX)
			i = (i + 1) & t->mask;
		t->slots[i] = (uint32_t)k;
	}
}

/* ==== the registry ======================================================== */

/* The slot of `name` (hash h) in the registry: its partition's, or the
 * empty one where it would go. The registry is never full (grown at half
 * load). */
static struct sc_partition **reg_slot(const sc_cache *cache, sc_str name,
				      uint64_t h)
{
	size_t mask = cache->reg_cap - 1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		struct sc_partition *p = cache->reg[i];
		if (!p || (p->hash == h && p->len == name.len &&
			   memcmp(p->name, name.ptr, name.len) == 0))
			return &cache->reg[i];
	}
}

static int reg_grow(sc_cache *cache)
{
	size_t cap = cache->reg_cap ? cache->reg_cap * 2 : 16;
	struct sc_partition **old = cache->reg;
	size_t oldcap = cache->reg_cap;
	struct sc_partition **reg = sc_calloc(cap, sizeof *reg);
	if (!reg)
		return ENOMEM;
	cache->reg = reg;
	cache->reg_cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		struct sc_partition *p = old[i];
		if (p)
			*reg_slot(cache, (sc_str){p->name, p->len}, p->hash) =
			    p;
	}
	sc_free(old);
	return SC_OK;
}

/* The record of `name` (not empty), made on first use. */
static int reg_get(sc_cache *cache, sc_str name, struct sc_partition **out)
{
	if ((cache->reg_n + 1) * 2 > cache->reg_cap && reg_grow(cache))
		return ENOMEM;
	uint64_t h = sc_hamt_hash(cache->map, name.ptr, name.len);
	struct sc_partition **slot = reg_slot(cache, name, h);
	if (!*slot) {
		struct sc_partition *p = sc_calloc(1, sizeof *p + name.len + 1);
		if (!p)
			return ENOMEM;
		p->hash = h;
		p->len = (uint32_t)name.len;
		memcpy(p->name, name.ptr, name.len);
		*slot = p;
		cache->reg_n++;
	}
	*out = *slot;
	return SC_OK;
}

struct sc_partition *sc_cache_part_known(const sc_cache *cache, sc_str name)
{
	if (!cache->reg_n || !name.len)
		return NULL;
	uint64_t h = sc_hamt_hash(cache->map, name.ptr, name.len);
	return *reg_slot(cache, name, h);
}

int sc_cache_part_record(sc_cache *cache, sc_str name,
			 struct sc_partition **out)
{
	return reg_get(cache, name, out);
}

int sc_cache_part_edit(sc_cache *cache, sc_str part, sc_hamt_edit **out,
		       sc_error *err)
{
	int64_t *bytes;
	return sc_cache_part_open(cache, part, out, &bytes, err);
}

int sc_cache_part_open(sc_cache *cache, sc_str part, sc_hamt_edit **out,
		       int64_t **bytes, sc_error *err)
{
	SC_REQUIRE(cache->edit);
	if (!part.len) {
		*out = cache->edit;
		*bytes = &cache->default_bytes_pending;
		return SC_OK;
	}
	struct sc_partition *p;
	int rc = reg_get(cache, part, &p);
	if (!rc && sc_part_cold_pending(p))
		return sc_cache_part_check_cold(cache, part, err);
	if (!rc && !p->edit) {
		rc = sc_hamt_edit_begin(cache->map, p->root, &p->edit);
		if (rc)
			p->edit = NULL;
		else {
			p->pending_next = cache->pending_parts;
			cache->pending_parts = p;
			cache->npending_parts++;
		}
	}
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       "opening the pending version of a "
				       "partition");
	*out = p->edit;
	*bytes = &p->bytes_pending;
	return SC_OK;
}

/* ==== the pending version ================================================= */

void sc_cache_parts_abort(sc_cache *cache)
{
	for (struct sc_partition *p = cache->pending_parts; p;
	     p = p->pending_next) {
		sc_hamt_edit_abort(p->edit);
		p->edit = NULL;
		p->bytes_pending = 0;
		p->loading = false;
	}
	cache->pending_parts = NULL;
	cache->npending_parts = 0;
	for (struct sc_partition *p = cache->evicting; p; p = p->evict_next) {
		p->evicting = false;
		if (!p->cold)
			cache->ncold--;
	}
	cache->evicting = NULL;
	cache->nevicting = 0;
	cache->default_bytes_pending = 0;
}

int sc_cache_parts_prepare(sc_cache *cache, const struct sc_parts *cur)
{
	size_t np = cache->npending_parts, ne = cache->nevicting;
	if (!np && !ne)
		return SC_OK;
	if (ne && cache->reserved_evicted_cap < ne) {
		sc_hamt_root *r = sc_calloc(ne, sizeof *r);
		if (!r)
			return ENOMEM;
		sc_free(cache->reserved_evicted);
		cache->reserved_evicted = r;
		cache->reserved_evicted_cap = ne;
	}
	/* The sort array holds the evicted partitions too. */
	np += ne;
	size_t cap = (cur ? cur->n : 0) + np;
	if (cache->reserved_parts_cap < cap || !cache->reserved_parts) {
		if (cap >= UINT32_MAX / 4)
			return ENOMEM;
		struct sc_parts *t =
		    sc_malloc(sizeof *t + cap * sizeof(sc_part_ref) +
			      parts_slots(cap) * sizeof(uint32_t));
		if (!t)
			return ENOMEM;
		sc_free(cache->reserved_parts);
		cache->reserved_parts = t;
		cache->reserved_parts_cap = cap;
	}
	if (cache->reserved_pending_cap < np || !cache->reserved_garbage ||
	    !cache->reserved_sorted) {
		sc_hamt_garbage **g = sc_calloc(np, sizeof *g);
		struct sc_partition **s = sc_calloc(np, sizeof *s);
		if (!g || !s) {
			sc_free(g);
			sc_free(s);
			return ENOMEM;
		}
		sc_free(cache->reserved_garbage);
		sc_free(cache->reserved_sorted);
		cache->reserved_garbage = g;
		cache->reserved_sorted = s;
		cache->reserved_pending_cap = np;
	}
	for (struct sc_partition *p = cache->pending_parts; p;
	     p = p->pending_next) {
		int rc = sc_hamt_edit_settle(p->edit);
		if (rc)
			return rc;
	}
	return SC_OK;
}

static int part_ptr_cmp(const void *a, const void *b)
{
	const struct sc_partition *x = *(struct sc_partition *const *)a;
	const struct sc_partition *y = *(struct sc_partition *const *)b;
	return name_cmp(x->name, x->len, y->name, y->len);
}

void sc_cache_parts_commit(sc_cache *cache, struct sc_parts *cur,
			   struct sc_parts **next, sc_hamt_garbage ***garbage,
			   size_t *ngarbage, size_t *gbytes, size_t *gnodes)
{
	*next = cur;
	*garbage = NULL;
	*ngarbage = 0;
	*gbytes = *gnodes = 0;
	size_t np = cache->npending_parts, ne = cache->nevicting;
	if (!np && !ne)
		return;
	sc_hamt_garbage **g = cache->reserved_garbage;
	struct sc_partition **sorted = cache->reserved_sorted;
	size_t ng = 0, ns = 0;
	bool changed = false;
	for (struct sc_partition *p = cache->pending_parts; p;
	     p = p->pending_next) {
		sc_hamt_garbage *pg = NULL;
		int rc = sc_hamt_edit_commit(p->edit, &p->next_root, &pg);
		SC_INSIST(rc == SC_OK);
		SC_UNUSED(rc);
		p->edit = NULL;
		if (pg) {
			sc_hamt_garbage_info gi;
			sc_hamt_garbage_info_get(pg, &gi);
			*gbytes += gi.bytes;
			*gnodes += gi.nodes;
			g[ng++] = pg;
		}
		if (p->next_root.node != p->root.node || p->loading)
			changed = true;
		sorted[ns++] = p;
	}
	for (struct sc_partition *p = cache->evicting; p; p = p->evict_next) {
		changed = true;
		sorted[ns++] = p;
	}
	SC_ENSURE(ns == np + ne);
	if (ng) {
		*garbage = g;
		*ngarbage = ng;
		cache->reserved_garbage = NULL;
	}
	if (changed) {
		qsort(sorted, ns, sizeof *sorted, part_ptr_cmp);
		struct sc_parts *t = cache->reserved_parts;
		size_t tcap = cache->reserved_parts_cap;
		cache->reserved_parts = NULL;
		cache->reserved_parts_cap = 0;
		size_t i = 0, j = 0, n = 0, entities = 0, cold = 0;
		size_t cn = cur ? cur->n : 0;
		while (i < cn || j < ns) {
			int c;
			if (i == cn)
				c = 1;
			else if (j == ns)
				c = -1;
			else
				c = name_cmp(cur->items[i].p->name,
					     cur->items[i].p->len,
					     sorted[j]->name, sorted[j]->len);
			sc_part_ref r;
			if (c < 0) {
				r = cur->items[i++];
			} else {
				const struct sc_partition *sp = sorted[j++];
				/* Evicted: cold, and its last tree kept for
				 * diffs while the old version lives. */
				if (sp->evicting)
					r = (sc_part_ref){.p = sp,
							  .hash = sp->hash,
							  .last = sp->root,
							  .epoch = sp->epoch,
							  .cold = true};
				else
					r = (sc_part_ref){.p = sp,
							  .hash = sp->hash,
							  .root = sp->next_root,
							  .epoch = sp->epoch};
				if (c == 0)
					i++;
			}
			if (!r.cold && !sc_hamt_count(r.root))
				continue;
			t->items[n++] = r;
			entities += sc_hamt_count(r.root);
			cold += r.cold;
		}
		t->n = n;
		t->entities = entities;
		t->cold = cold;
		t->slots = (uint32_t *)(void *)(t->items + tcap);
		parts_index(t, parts_slots(tcap));
		*next = t;
	}
	size_t nev = 0, evbytes = 0;
	for (size_t k = 0; k < ns; k++) {
		struct sc_partition *p = sorted[k];
		if (p->evicting) {
			if (p->root.node)
				cache->reserved_evicted[nev++] = p->root;
			evbytes +=
			    sc_part_bytes(p->bytes, sc_hamt_count(p->root));
			cache->resident_bytes_w -= p->bytes;
			p->root = (sc_hamt_root){0};
			p->bytes = 0;
			p->cold = true;
			p->evicting = false;
			continue;
		}
		p->root = p->next_root;
		p->bytes = (size_t)((int64_t)p->bytes + p->bytes_pending);
		cache->resident_bytes_w =
		    (size_t)((int64_t)cache->resident_bytes_w +
			     p->bytes_pending);
		p->bytes_pending = 0;
		if (p->loading) {
			if (p->cold)
				cache->ncold--;
			p->cold = false;
			p->loading = false;
		}
	}
	cache->nevicted = nev;
	cache->evicted_bytes = evbytes;
	cache->pending_parts = NULL;
	cache->npending_parts = 0;
	cache->evicting = NULL;
	cache->nevicting = 0;
}

void sc_cache_parts_evicted(sc_cache *cache, sc_hamt_root **roots, size_t *n,
			    size_t *bytes)
{
	*roots = NULL;
	*n = cache->nevicted;
	*bytes = cache->evicted_bytes;
	if (cache->nevicted) {
		*roots = cache->reserved_evicted;
		cache->reserved_evicted = NULL;
		cache->reserved_evicted_cap = 0;
	}
	cache->nevicted = 0;
	cache->evicted_bytes = 0;
	/* The default partition's figures. */
	cache->default_bytes = (size_t)((int64_t)cache->default_bytes +
					cache->default_bytes_pending);
	cache->resident_bytes_w = (size_t)((int64_t)cache->resident_bytes_w +
					   cache->default_bytes_pending);
	cache->default_bytes_pending = 0;
	atomic_store_explicit(&cache->resident_state_bytes,
			      cache->resident_bytes_w, memory_order_relaxed);
	/* A new LRU tick per promote. */
	atomic_store_explicit(
	    &cache->lru_tick,
	    atomic_load_explicit(&cache->lru_tick, memory_order_relaxed) + 1,
	    memory_order_relaxed);
}

void sc_cache_parts_fini(sc_cache *cache)
{
	for (size_t i = 0; i < cache->reg_cap; i++) {
		struct sc_partition *p = cache->reg[i];
		if (!p)
			continue;
		sc_hamt_root_free(cache->map, p->root);
		sc_free(p);
	}
	sc_free(cache->reg);
	sc_free(cache->reserved_parts);
	sc_free(cache->reserved_garbage);
	sc_free(cache->reserved_sorted);
	sc_free(cache->reserved_evicted);
}
