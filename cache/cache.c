/*
 * The versioned entity cache: lifecycle, the writer (apply, load, promote,
 * discard), views, diffs and stats. Readers and reclamation are in
 * cache/reclaim.c, the entity model in cache/entity.c.
 *
 * Memory accounting, kept by the writer so stats cost no walk:
 *   entity_bytes    every entity state alive (added when a state is made,
 *                   subtracted in the release hook when the map lets go);
 *   bytes_awaiting  per superseded version, the HAMT garbage node bytes plus
 *                   the bytes of the published states its edit replaced or
 *                   removed (a state the edit itself created is released at
 *                   once by the map, so it never waits).
 * A state records the generation of the edit that created it (`born`),
 * which tells the two cases apart without a lookup in the base version.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* Bound on the bytes of freed entity states the writer keeps for reuse. */
#define ENTITY_POOL_BYTES ((size_t)8 << 20)

/* ==== small helpers ======================================================= */

/* Single-writer counter update: no read-modify-write instruction needed. */
static void counter_add(_Atomic size_t *c, size_t add, size_t sub)
{
	size_t v = atomic_load_explicit(c, memory_order_relaxed);
	atomic_store_explicit(c, v + add - sub, memory_order_relaxed);
}

static const struct sc_version *writer_current(const sc_cache *cache)
{
	return atomic_load_explicit(&((sc_cache *)cache)->current,
				    memory_order_relaxed);
}

/* Give a state built from the cache's pool back to it. NULL: no-op. */
static void entity_free(sc_cache *cache, sc_entity *e)
{
	if (e)
		sc_pool_free(&cache->entity_pool, e, sc_entity_block_size(e));
}

/* The pool a change allocates from: its lane's, or the writer's. */
static sc_pool *change_pool(const sc_change *c)
{
	return c->lane ? &c->lane->entity_pool : &c->cache->entity_pool;
}

void sc_cache_release_entry(void *ctx, const sc_hamt_key *key, void *value)
{
	sc_cache *cache = ctx;
	sc_entity *e = value;
	SC_REQUIRE(key == sc_entity_key(e));
	SC_UNUSED(key);
	counter_add(&cache->entity_bytes, 0, e->size);
	entity_free(cache, e);
}

/* Map hook: a state was inserted by the open edit iff it carries the edit's
 * generation (states of committed versions carry older ones). */
static bool cache_entry_fresh(void *ctx, const sc_hamt_key *key, void *value)
{
	const sc_cache *cache = ctx;
	const sc_entity *e = value;
	SC_UNUSED(key);
	return e->born == cache->generation;
}

/* ==== lifecycle =========================================================== */

int sc_cache_create(const sc_cache_options *opt, sc_cache **out, sc_error *err)
{
	if (!out)
		return sc_error_set(err, SC_EINVAL, "out is NULL");
	*out = NULL;
	sc_cache_options o = {0};
	if (opt)
		o = *opt;
	/* Aligned by hand: sc_malloc has no aligned variant. */
	void *block = sc_calloc(1, sizeof(sc_cache) + 64);
	struct sc_version *v0 = sc_calloc(1, sizeof *v0);
	if (!block || !v0) {
		sc_free(block);
		sc_free(v0);
		return sc_error_set(err, ENOMEM, "out of memory for a cache");
	}
	sc_cache *cache =
	    (sc_cache *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
	cache->block = block;
	sc_hamt_options ho = {
	    .seed = o.seed,
	    .release = sc_cache_release_entry,
	    .release_ctx = cache,
	    .hash = o.hash,
	    .flags = o.hamt_flags,
	    .fresh = cache_entry_fresh,
	};
	sc_pool_init(&cache->entity_pool, ENTITY_POOL_BYTES, SC_POOL_DEFAULT);
	int rc = sc_hamt_create(&ho, &cache->map);
	if (rc) {
		sc_free(block);
		sc_free(v0);
		if (rc == ENOMEM)
			return sc_error_set(err, rc,
					    "out of memory for the entity map");
		return sc_error_set(err, rc,
				    "cannot create the entity map: %s (no "
				    "random seed? pass options.seed)",
				    sc_strerror(rc));
	}
	rc = sc_reclaim_init(cache, o.max_readers, err);
	if (rc) {
		sc_hamt_destroy(cache->map);
		sc_free(block);
		sc_free(v0);
		return rc;
	}
	rc = sc_lanes_init(cache, o.lanes, err);
	if (rc) {
		sc_reclaim_fini(cache);
		sc_hamt_destroy(cache->map);
		sc_free(block);
		sc_free(v0);
		return rc;
	}
	v0->cache = cache;
	cache->oldest = v0;
	atomic_init(&cache->current, v0);
	atomic_init(&cache->current_number, 0);
	atomic_init(&cache->current_len, 0);
	atomic_init(&cache->current_position, 0);
	atomic_init(&cache->hook, NULL);
	atomic_init(&cache->lru_tick, 1);
	atomic_init(&cache->resident_state_bytes, 0);
	atomic_init(&cache->entity_bytes, 0);
	atomic_init(&cache->versions_alive, 1);
	atomic_init(&cache->bytes_awaiting, 0);
	atomic_init(&cache->nodes_awaiting, 0);
	atomic_init(&cache->readers_open, 0);
	*out = cache;
	return SC_OK;
}

void sc_cache_destroy(sc_cache *cache)
{
	if (!cache)
		return;
	sc_cache_hook *hook =
	    atomic_load_explicit(&cache->hook, memory_order_acquire);
	if (hook)
		hook->destroy(hook);
	sc_cache_apply_batch_end(cache, NULL, NULL);
	sc_lanes_stop(cache);
	sc_cache_discard(cache);
	struct sc_version *cur =
	    atomic_load_explicit(&cache->current, memory_order_relaxed);
	while (cache->oldest != cur) {
		struct sc_version *v = cache->oldest;
		cache->oldest = v->next;
		sc_version_free(cache, v);
	}
	sc_hamt_root_free(cache->map, cur->root);
	sc_cache_parts_fini(cache);
	sc_free(cur->parts);
	sc_free(cur);
	sc_hamt_destroy(cache->map);
	sc_pool_destroy(&cache->entity_pool);
	sc_lanes_fini(cache);
	sc_reclaim_fini(cache);
	sc_free(cache->block);
}

/* ==== writer ============================================================== */

int sc_cache_pending_open(sc_cache *cache, sc_error *err)
{
	if (cache->edit)
		return SC_OK;
	const struct sc_version *cur = writer_current(cache);
	int rc = sc_hamt_edit_begin(cache->map, cur->root, &cache->edit);
	if (rc) {
		cache->edit = NULL;
		cache->poisoned = true;
		return sc_error_set(err, rc,
				    "cannot open a pending version (%s); "
				    "discard, then retry",
				    sc_strerror(rc));
	}
	cache->generation++;
	cache->pending_position = cur->position;
	cache->pending_garbage_entity_bytes = 0;
	return SC_OK;
}

int sc_cache_check_writable(const sc_cache *cache, sc_error *err)
{
	if (cache->batch_open)
		return sc_error_set(err, SC_ESTATE,
				    "a batch is being applied to the pending "
				    "version; end it "
				    "(sc_cache_apply_batch_end) first");
	if (cache->poisoned)
		return sc_error_set(err, SC_EPOISONED,
				    "the pending version is unusable after an "
				    "earlier failure; discard it");
	return SC_OK;
}

int sc_cache_poison(sc_cache *cache, int rc, sc_error *err, const char *what)
{
	cache->poisoned = true;
	if (rc == SC_EPOISONED)
		return sc_cache_check_writable(cache, err);
	return sc_error_set(err, rc,
			    "%s failed (%s); the pending version is "
			    "unusable: discard it",
			    what, sc_strerror(rc));
}

/* ---- the one write path ---------------------------------------------------
 * Every state entering the pending version goes through an sc_change
 * (cache_internal.h): the map's update calls sc_change_update with the
 * previous state of the id, found by the same descent that stores the new
 * one, and sc_change_done accounts for the result. */

/* Bytes `prev` adds to the edit's garbage when it leaves the map: its size
 * if a published version holds it, 0 if this edit created it (the map
 * releases such a state at once, so read this before the change). */
static size_t dropped_bytes(const sc_cache *cache, const sc_entity *prev)
{
	return prev && prev->born != cache->generation ? prev->size : 0;
}

int sc_change_update(void *ctx, const sc_hamt_key *old_key, void *old_value,
		     const sc_hamt_key **new_key, void **new_value)
{
	sc_change *c = ctx;
	sc_cache *cache = c->cache;
	const sc_entity *prev = old_value;
	SC_UNUSED(old_key);
	if (c->unique && prev && prev->born == cache->generation)
		return SC_ECORRUPT;
	if (c->ev) {
		int rc = sc_entity_build_in(prev, c->ev, cache->generation,
					    change_pool(c), &c->ne, c->err);
		if (rc) {
			c->ne = NULL;
			c->build_failed = true;
			return rc;
		}
	}
	/* Read now: a previous state made by this edit is freed by the
	 * change. */
	c->dropped = dropped_bytes(cache, prev);
	c->prev_size = prev ? prev->size : 0;
	*new_key = c->ne ? sc_entity_key(c->ne) : NULL;
	*new_value = c->ne;
	return SC_OK;
}

int sc_change_done(sc_change *c, int rc)
{
	sc_cache *cache = c->cache;
	sc_lane *l = c->lane;
	if (rc) {
		if (c->ne)
			sc_pool_free(change_pool(c), c->ne,
				     sc_entity_block_size(c->ne));
		c->ne = NULL;
		return rc;
	}
	if (c->bytes)
		*c->bytes +=
		    (int64_t)(c->ne ? c->ne->size : 0) - (int64_t)c->prev_size;
	if (l) {
		/* Folded into the cache by the writer (cache/lanes.c). */
		l->bytes_add += c->ne ? c->ne->size : 0;
		if (c->ne && c->ne->size > l->state_size_max)
			l->state_size_max = c->ne->size;
		l->garbage_bytes += c->dropped;
		if (c->position > l->position)
			l->position = c->position;
		return SC_OK;
	}
	if (c->ne) {
		counter_add(&cache->entity_bytes, c->ne->size, 0);
		if (c->ne->size > cache->state_size_max)
			cache->state_size_max = c->ne->size;
	}
	cache->pending_garbage_entity_bytes += c->dropped;
	if (c->position > cache->pending_position)
		cache->pending_position = c->position;
	return SC_OK;
}

/* ---- queued apply ---------------------------------------------------------
 * Most of an apply in a big cache is memory misses: the map's path to the
 * entity and the previous state. So an event is copied and queued in the
 * map's edit (sc_hamt_edit_update_later) for a few applies while its path
 * and previous state are prefetched, and applied when it leaves the queue;
 * anything that reads the pending version (lookups, diff, promote) applies
 * the queue first. Validation stays synchronous, so SC_EINVAL is returned
 * by the apply that has the bad event. A state too big to build
 * (SC_ETOOBIG) must be reported the same way, so an event is queued only
 * when no state can get that big: the previous state is at most every
 * state alive plus what the queued events add, each at most
 * APPLY_LATER_MAX. Likewise for a state too big for a snapshot: queued
 * only while the largest state ever stored plus what the queue may add
 * stays within SC_ENTITY_SNAPSHOT_SURE, whose states always fit (an event
 * adds to a state at most its copy's bytes). ENOMEM while a queued event is
 * applied poisons the pending version like an ENOMEM in apply: the call that
 * meets it (a later apply, or promote) returns the error; discard, as for any
 * ENOMEM. */

/* Events with more bytes than this apply at once. */
#define APPLY_LATER_MAX ((size_t)64 << 10)
/* Bound on what the queue may hold ahead of an event (it holds fewer than
 * 64 changes). */
#define APPLY_QUEUE_BOUND (64 * APPLY_LATER_MAX)
_Static_assert(SC_ENTITY_SNAPSHOT_SURE > 2 * APPLY_QUEUE_BOUND,
	       "states of a few MiB can still be queued");

typedef struct apply_job {
	sc_change change; /* what the map's callbacks get */
	size_t block;	  /* bytes of this allocation */
	size_t index;	  /* in a lane: the event's index in its batch */
	sc_event ev;	  /* points into this block */
	sc_attr attrs[];
} apply_job;

/* Bytes an event's copy needs after the job header, or SIZE_MAX when more
 * than APPLY_LATER_MAX. */
static size_t job_payload(const sc_event *ev)
{
	size_t n = ev->entity.len + ev->actor.len + ev->partition.len;
	if (ev->type == SC_EVENT_DELETE)
		return n;
	if (ev->nattrs > APPLY_LATER_MAX / sizeof(sc_attr))
		return SIZE_MAX;
	n += ev->nattrs * sizeof(sc_attr);
	for (size_t i = 0; i < ev->nattrs && n <= APPLY_LATER_MAX; i++) {
		const sc_attr *a = &ev->attrs[i];
		n += a->name.len;
		if (ev->type != SC_EVENT_UNSET &&
		    (a->value.type == SC_VALUE_STRING ||
		     a->value.type == SC_VALUE_BYTES)) {
			if (a->value.u.s.len > APPLY_LATER_MAX)
				return SIZE_MAX;
			n += a->value.u.s.len;
		}
	}
	return n <= APPLY_LATER_MAX ? n : SIZE_MAX;
}

static char *copy_str(char *p, sc_str *s)
{
	if (s->len)
		memcpy(p, s->ptr, s->len);
	s->ptr = s->len ? p : NULL;
	return p + s->len;
}

/* A copy of `ev` (validated) that needs nothing of the caller's, from the
 * pool of lane l (NULL: the writer's). */
static apply_job *job_make(sc_cache *cache, sc_lane *l, const sc_event *ev,
			   size_t payload)
{
	size_t block = (sizeof(apply_job) + payload + 7u) & ~(size_t)7u;
	apply_job *j =
	    sc_pool_alloc(l ? &l->entity_pool : &cache->entity_pool, block);
	if (!j)
		return NULL;
	j->change = (sc_change){.cache = cache,
				.lane = l,
				.ev = &j->ev,
				.err = l ? &l->err : NULL,
				.position = ev->position};
	j->block = block;
	j->ev = *ev;
	j->ev.tags = NULL;
	j->ev.ntags = 0;
	size_t na = ev->type == SC_EVENT_DELETE ? 0 : ev->nattrs;
	j->ev.nattrs = na;
	j->ev.attrs = na ? j->attrs : NULL;
	char *p = (char *)(j->attrs + na);
	p = copy_str(p, &j->ev.entity);
	p = copy_str(p, &j->ev.actor);
	p = copy_str(p, &j->ev.partition);
	for (size_t i = 0; i < na; i++) {
		sc_attr *a = &j->attrs[i];
		*a = ev->attrs[i];
		p = copy_str(p, &a->name);
		if (ev->type == SC_EVENT_UNSET)
			a->value.type = SC_VALUE_NULL;
		else if (a->value.type == SC_VALUE_STRING ||
			 a->value.type == SC_VALUE_BYTES)
			p = copy_str(p, &a->value.u.s);
	}
	SC_ENSURE(p <= (char *)j + block);
	return j;
}

static void lane_fail(sc_lane *l, size_t i, int rc, bool built);

static void job_done(void *ctx, int rc)
{
	apply_job *j =
	    (apply_job *)(void *)((char *)ctx - offsetof(apply_job, change));
	sc_cache *cache = j->change.cache;
	sc_lane *l = j->change.lane;
	/* SC_ESTATE: dropped by a discard. */
	if (sc_change_done(&j->change, rc) && rc != SC_ESTATE) {
		if (l)
			lane_fail(l, j->index, rc, j->change.build_failed);
		else
			cache->poisoned = true;
	}
	sc_pool_free(change_pool(&j->change), j, j->block);
}

/* Queue `ev` if it can be applied later (see above); SC_ETOOBIG is
 * returned (not an error) when it must be applied at once. */
static int apply_later(sc_cache *cache, sc_hamt_edit *edit, int64_t *bytes,
		       const sc_event *ev, sc_error *err)
{
	size_t payload = job_payload(ev);
	size_t alive =
	    atomic_load_explicit(&cache->entity_bytes, memory_order_relaxed);
	if (payload == SIZE_MAX ||
	    alive >= UINT32_MAX - 2 * APPLY_QUEUE_BOUND ||
	    cache->state_size_max >
		SC_ENTITY_SNAPSHOT_SURE - 2 * APPLY_QUEUE_BOUND)
		return SC_ETOOBIG;
	apply_job *j = job_make(cache, NULL, ev, payload);
	if (!j)
		return sc_cache_poison(cache, ENOMEM, err, "queueing an event");
	j->change.bytes = bytes;
	const char *id = j->ev.entity.ptr;
	size_t len = j->ev.entity.len;
	int rc = sc_hamt_edit_update_later(
	    edit, id, len, sc_hamt_hash(cache->map, id, len), sc_change_update,
	    job_done, &j->change);
	if (rc) {
		sc_pool_free(&cache->entity_pool, j, j->block);
		return sc_cache_poison(cache, rc, err,
				       "applying an earlier event");
	}
	return SC_OK;
}

int sc_cache_apply(sc_cache *cache, const sc_event *ev, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL, "cache is NULL");
	int rc = sc_entity_validate_event(ev, err);
	if (rc)
		return rc;
	return sc_cache_apply_valid(cache, ev, err);
}

int sc_cache_apply_valid(sc_cache *cache, const sc_event *ev, sc_error *err)
{
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	/* An event of a cold partition is refused before anything opens
	 * (once the pending version is open, sc_cache_part_open refuses
	 * it). */
	if (ev->partition.len && cache->ncold && !cache->edit) {
		rc = sc_cache_part_check_cold(cache, ev->partition, err);
		if (rc)
			return rc;
	}
	bool opened = !cache->edit;
	rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	/* The default partition's tree is the edit opened above. */
	sc_hamt_edit *edit = cache->edit;
	int64_t *bytes = &cache->default_bytes_pending;
	if (ev->partition.len) {
		rc = sc_cache_part_open(cache, ev->partition, &edit, &bytes,
					err);
		if (rc)
			return rc;
	}
	rc = apply_later(cache, edit, bytes, ev, err);
	if (rc != SC_ETOOBIG)
		return rc;
	sc_change c = {.cache = cache,
		       .ev = ev,
		       .err = err,
		       .position = ev->position,
		       .bytes = bytes};
	rc = sc_change_done(&c, sc_hamt_edit_update(edit, ev->entity.ptr,
						    ev->entity.len,
						    sc_change_update, &c));
	if (rc && c.build_failed && rc != ENOMEM) {
		/* SC_ETOOBIG: nothing changed; close the edits opened for
		 * it (nothing was pending before). */
		if (opened)
			sc_cache_discard(cache);
		return rc;
	}
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       c.build_failed
					   ? "building an entity state"
					   : "storing an entity state");
	return SC_OK;
}

/* ---- apply in a lane ------------------------------------------------------
 * As sc_cache_apply_valid, into the lane's edit, with the lane's pool: an
 * event is queued when it is small enough to copy, else applied at once.
 * A failure is noted with the event's index (a queued one's in its job), so
 * the batch reports its first failing event whichever lane met it; the
 * lane stops there (its edit is poisoned; the batch is discarded). A state
 * that would grow too big is such a failure like any other, so no bound on
 * the states alive is needed to decide what may be queued. */

/* Note lane l's first failure: event i, error rc. `built`: the build of
 * the state failed and wrote l->err itself. */
static void lane_fail(sc_lane *l, size_t i, int rc, bool built)
{
	if (l->rc)
		return;
	l->rc = rc;
	l->failed_at = i;
	if (!built)
		sc_error_set(&l->err, rc,
			     "storing an entity state failed (%s); the pending "
			     "version is unusable: discard it",
			     sc_strerror(rc));
}

void sc_lane_run(sc_lane *l, const sc_event *evs, const uint64_t *hashes,
		 const uint32_t *part)
{
	sc_cache *cache = l->cache;
	/* A lane's events lie scattered through the batch, last written on
	 * another core: fetch the event LANE_PF_EVENT ahead, and the id and
	 * first attributes of the one LANE_PF_DATA ahead (its struct is in
	 * the cache by then). */
	enum { LANE_PF_EVENT = 16, LANE_PF_DATA = 8 };
	for (size_t k = 0; k < l->nidx && !l->rc; k++) {
		if (k + LANE_PF_EVENT < l->nidx)
			__builtin_prefetch(&evs[l->idx[k + LANE_PF_EVENT]]);
		if (k + LANE_PF_DATA < l->nidx) {
			const sc_event *pe = &evs[l->idx[k + LANE_PF_DATA]];
			__builtin_prefetch(pe->entity.ptr);
			__builtin_prefetch(pe->attrs);
			__builtin_prefetch((const char *)pe->attrs + 64);
		}
		size_t i = l->idx[k];
		const sc_event *ev = &evs[i];
		sc_hamt_edit *ed = l->edits[part[i]];
		size_t payload = job_payload(ev);
		if (payload != SIZE_MAX) {
			apply_job *j = job_make(cache, l, ev, payload);
			if (!j) {
				lane_fail(l, i, ENOMEM, false);
				break;
			}
			j->index = i;
			j->change.bytes = &l->pbytes[part[i]];
			int rc = sc_hamt_edit_update_later(
			    ed, j->ev.entity.ptr, j->ev.entity.len, hashes[i],
			    sc_change_update, job_done, &j->change);
			if (rc) {
				/* An earlier job's failure, noted by its
				 * done; this one was not queued. */
				sc_pool_free(&l->entity_pool, j, j->block);
				lane_fail(l, i, rc, false);
			}
			continue;
		}
		sc_change c = {.cache = cache,
			       .lane = l,
			       .ev = ev,
			       .err = &l->err,
			       .position = ev->position,
			       .bytes = &l->pbytes[part[i]]};
		int rc =
		    sc_change_done(&c, sc_hamt_edit_update_hashed(
					   ed, ev->entity.ptr, ev->entity.len,
					   hashes[i], sc_change_update, &c));
		if (rc)
			lane_fail(l, i, rc, c.build_failed);
	}
	for (size_t j = 0; j < l->nedits && !l->rc; j++) {
		if (!l->edits[j])
			continue;
		int rc = sc_hamt_edit_settle(l->edits[j]);
		if (rc)
			lane_fail(l, l->nidx ? l->idx[l->nidx - 1] : 0, rc,
				  false);
	}
}

int sc_cache_load_entity(sc_cache *cache, sc_str id, const sc_attr *attrs,
			 size_t nattrs, int64_t updated_at, sc_str updated_by,
			 uint64_t position, sc_error *err)
{
	return sc_cache_load_entity_in(cache, (sc_str){"", 0}, id, attrs,
				       nattrs, updated_at, updated_by, position,
				       err);
}

int sc_cache_load_entity_in(sc_cache *cache, sc_str partition, sc_str id,
			    const sc_attr *attrs, size_t nattrs,
			    int64_t updated_at, sc_str updated_by,
			    uint64_t position, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL, "cache is NULL");
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	sc_entity *ne;
	/* Build first (it validates) so a bad state changes nothing; the
	 * generation is the one the edit will have if it is opened now. */
	uint64_t gen = cache->edit ? cache->generation : cache->generation + 1;
	rc = sc_entity_build_loaded(partition, id, attrs, nattrs, updated_at,
				    updated_by, position, gen,
				    &cache->entity_pool, &ne, err);
	if (rc == ENOMEM)
		return sc_cache_poison(cache, rc, err,
				       "building an entity state");
	if (rc)
		return rc;
	rc = sc_cache_pending_open(cache, err);
	if (rc) {
		entity_free(cache, ne);
		return rc;
	}
	SC_INSIST(ne->born == cache->generation);
	sc_hamt_edit *edit;
	int64_t *bytes;
	rc = sc_cache_part_open(cache, partition, &edit, &bytes, err);
	if (rc) {
		entity_free(cache, ne);
		return rc;
	}
	sc_change c = {
	    .cache = cache, .ne = ne, .position = position, .bytes = bytes};
	rc = sc_change_done(&c, sc_hamt_edit_update(edit, id.ptr, id.len,
						    sc_change_update, &c));
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       "storing an entity state");
	return SC_OK;
}

int sc_cache_prepare(sc_cache *cache, sc_error *err)
{
	if (!cache)
		return sc_error_set(err, SC_EINVAL, "cache is NULL");
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	if (!cache->edit)
		return SC_OK;
	if (!cache->reserved) {
		cache->reserved = sc_calloc(1, sizeof *cache->reserved);
		if (!cache->reserved)
			return sc_cache_poison(cache, ENOMEM, err,
					       "reserving the next version");
	}
	rc = sc_hamt_edit_settle(cache->edit);
	if (!rc)
		rc =
		    sc_cache_parts_prepare(cache, writer_current(cache)->parts);
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       "applying the queued events");
	return SC_OK;
}

int sc_cache_promote(sc_cache *cache)
{
	if (!cache)
		return SC_EINVAL;
	if (cache->batch_open)
		return SC_ESTATE;
	if (cache->poisoned)
		return SC_EPOISONED;
	if (!cache->edit)
		return SC_OK;
	/* Every allocation first, and every queued change done, so that
	 * nothing below fails half-way through the partitions. */
	int rc = sc_cache_prepare(cache, NULL);
	if (rc)
		return rc;
	struct sc_version *v = cache->reserved;
	cache->reserved = NULL;
	sc_hamt_root root;
	sc_hamt_garbage *garbage = NULL;
	rc = sc_hamt_edit_commit(cache->edit, &root, &garbage);
	if (rc) {
		cache->reserved = v;
		cache->poisoned = true;
		return rc;
	}
	cache->edit = NULL;

	struct sc_version *old =
	    atomic_load_explicit(&cache->current, memory_order_relaxed);
	sc_hamt_garbage_info gi = {0};
	if (garbage)
		sc_hamt_garbage_info_get(garbage, &gi);
	struct sc_parts *parts;
	size_t pbytes, pnodes;
	sc_cache_parts_commit(cache, old->parts, &parts, &old->part_garbage,
			      &old->npart_garbage, &pbytes, &pnodes);
	if (parts != old->parts)
		old->parts_replaced = old->parts;
	size_t ebytes;
	sc_cache_parts_evicted(cache, &old->evicted, &old->nevicted, &ebytes);
	old->garbage = garbage;
	old->garbage_bytes =
	    gi.bytes + pbytes + ebytes + cache->pending_garbage_entity_bytes;
	old->garbage_nodes = gi.nodes + pnodes;
	counter_add(&cache->bytes_awaiting, old->garbage_bytes, 0);
	counter_add(&cache->nodes_awaiting, old->garbage_nodes, 0);
	counter_add(&cache->versions_alive, 1, 0);

	v->root = root;
	v->parts = parts;
	v->number = old->number + 1;
	v->position = cache->pending_position;
	v->cache = cache;
	v->garbage_before = old->garbage_before + old->garbage_bytes;
	old->next = v;

	/* Publication: W1 and W2 of cache/reclaim.c, in that order. */
	atomic_store_explicit(&cache->current, v, memory_order_release);
	atomic_store_explicit(&cache->current_number, v->number,
			      memory_order_release);
	atomic_store_explicit(&cache->current_len,
			      sc_hamt_count(root) +
				  (parts ? parts->entities : 0),
			      memory_order_relaxed);
	atomic_store_explicit(&cache->current_position, v->position,
			      memory_order_relaxed);
	/* Pairs with the fence of sc_cache_hook_install. */
	atomic_thread_fence(memory_order_seq_cst);
	sc_cache_hook *hook =
	    atomic_load_explicit(&cache->hook, memory_order_acquire);
	if (hook)
		hook->promoted(hook, (const sc_view *)v);
	sc_reclaim_run(cache);
	return SC_OK;
}

void sc_cache_discard(sc_cache *cache)
{
	if (!cache)
		return;
	/* A batch in flight ends first: its lanes change the edits. */
	sc_cache_apply_batch_end(cache, NULL, NULL);
	sc_cache_parts_abort(cache);
	sc_hamt_edit_abort(cache->edit);
	cache->edit = NULL;
	cache->poisoned = false;
	sc_free(cache->reserved);
	cache->reserved = NULL;
	cache->pending_garbage_entity_bytes = 0;
}

bool sc_cache_pending(const sc_cache *cache)
{
	return cache && cache->edit != NULL;
}

const sc_entity *sc_cache_pending_get(const sc_cache *cache, sc_str id)
{
	if (!id.ptr)
		return NULL;
	if (cache->edit)
		return sc_hamt_edit_get(cache->edit, id.ptr, id.len);
	return sc_hamt_get(cache->map, writer_current(cache)->root, id.ptr,
			   id.len);
}

const sc_entity *sc_cache_pending_get_in(const sc_cache *cache,
					 sc_str partition, sc_str id)
{
	if (!partition.len)
		return sc_cache_pending_get(cache, id);
	if (!id.ptr || !partition.ptr)
		return NULL;
	const struct sc_partition *p = sc_cache_part_known(cache, partition);
	if (!p)
		return NULL;
	if (p->edit)
		return sc_hamt_edit_get(p->edit, id.ptr, id.len);
	return sc_hamt_get(cache->map, p->root, id.ptr, id.len);
}

/* ==== views =============================================================== */

static const struct sc_version *as_version(const sc_view *view)
{
	return (const struct sc_version *)(const void *)view;
}

const sc_entity *sc_view_get(const sc_view *view, sc_str id)
{
	const struct sc_version *v = as_version(view);
	if (!id.ptr)
		return NULL;
	return sc_hamt_get(v->cache->map, v->root, id.ptr, id.len);
}

/* The tree of `partition` in version v; false when it has no entity. */
static bool view_root(const struct sc_version *v, sc_str partition,
		      sc_hamt_root *out)
{
	if (!partition.len) {
		*out = v->root;
		return true;
	}
	const sc_part_ref *r =
	    sc_parts_find(v->cache->map, v->parts, partition);
	if (!r)
		return false;
	*out = r->root;
	return true;
}

const sc_entity *sc_view_get_in(const sc_view *view, sc_str partition,
				sc_str id)
{
	const struct sc_version *v = as_version(view);
	if (!partition.len)
		return sc_view_get(view, id);
	if (!id.ptr)
		return NULL;
	const sc_part_ref *r =
	    sc_parts_find(v->cache->map, v->parts, partition);
	if (!r)
		return NULL;
	sc_part_touch(r->p, &v->cache->lru_tick);
	return sc_hamt_get(v->cache->map, r->root, id.ptr, id.len);
}

size_t sc_view_len(const sc_view *view)
{
	return sc_hamt_count(as_version(view)->root);
}

size_t sc_view_len_in(const sc_view *view, sc_str partition)
{
	sc_hamt_root root;
	if (!view_root(as_version(view), partition, &root))
		return 0;
	return sc_hamt_count(root);
}

size_t sc_view_len_all(const sc_view *view)
{
	const struct sc_version *v = as_version(view);
	return sc_hamt_count(v->root) + (v->parts ? v->parts->entities : 0);
}

size_t sc_view_partition_count(const sc_view *view)
{
	const struct sc_version *v = as_version(view);
	return (v->parts ? v->parts->n : 0) + (sc_hamt_count(v->root) ? 1 : 0);
}

sc_str sc_view_partition(const sc_view *view, size_t i)
{
	const struct sc_version *v = as_version(view);
	if (sc_hamt_count(v->root)) {
		if (i == 0)
			return (sc_str){"", 0};
		i--;
	}
	SC_REQUIRE(v->parts && i < v->parts->n);
	const struct sc_partition *p = v->parts->items[i].p;
	return (sc_str){p->name, p->len};
}

uint64_t sc_view_version(const sc_view *view)
{
	return as_version(view)->number;
}

uint64_t sc_view_position(const sc_view *view)
{
	return as_version(view)->position;
}

void sc_view_iter_init(const sc_view *view, sc_view_iter *it)
{
	sc_hamt_iter_init(&it->it, as_version(view)->root);
	it->parts = NULL;
	it->next = 0;
}

void sc_view_iter_init_in(const sc_view *view, sc_str partition,
			  sc_view_iter *it)
{
	sc_hamt_root root = {0};
	(void)view_root(as_version(view), partition, &root);
	sc_hamt_iter_init(&it->it, root);
	it->parts = NULL;
	it->next = 0;
}

void sc_view_iter_init_all(const sc_view *view, sc_view_iter *it)
{
	const struct sc_version *v = as_version(view);
	sc_hamt_iter_init(&it->it, v->root);
	it->parts = v->parts;
	it->next = 0;
}

const sc_entity *sc_view_iter_next(sc_view_iter *it)
{
	const sc_hamt_key *key;
	void *value;
	while (!sc_hamt_iter_next(&it->it, &key, &value)) {
		const struct sc_parts *t = it->parts;
		if (!t || it->next >= t->n)
			return NULL;
		sc_hamt_iter_init(&it->it, t->items[it->next++].root);
	}
	return value;
}

/* ==== diffs =============================================================== */

typedef struct diff_ctx {
	sc_diff_fn fn;
	void *ctx;
	/* The trees come from different loads of their partition: states
	 * equal in content are the same state loaded again, no change. */
	bool skip_equal;
} diff_ctx;

static int diff_adapter(void *ctx, sc_diff_kind kind, const sc_hamt_key *key,
			void *old_value, void *new_value)
{
	diff_ctx *d = ctx;
	SC_UNUSED(key);
	if (d->skip_equal && kind == SC_DIFF_CHANGED &&
	    sc_entity_equal(old_value, new_value))
		return 0;
	return d->fn(d->ctx, kind, old_value, new_value);
}

static int parts_name_cmp(const sc_part_ref *x, const sc_part_ref *y)
{
	size_t m = x->p->len < y->p->len ? x->p->len : y->p->len;
	int c = memcmp(x->p->name, y->p->name, m);
	if (c)
		return c;
	return x->p->len < y->p->len ? -1 : x->p->len > y->p->len;
}

/* The trees to diff for one partition, entries ra (of version a) and rb
 * (of b; NULL: not listed, so empty and resident), `b_newer` telling
 * which version is the newer; false when nothing is reported (residency,
 * cache/cache_lib.h). A cold entry's `last` is read only when it is the
 * newer one's and the older one is not cold (cache/residency.c). */
static bool diff_trees(const sc_part_ref *ra, const sc_part_ref *rb,
		       bool b_newer, sc_hamt_root *xa, sc_hamt_root *xb,
		       bool *skip_equal)
{
	const sc_part_ref *older = b_newer ? ra : rb;
	const sc_part_ref *newer = b_newer ? rb : ra;
	if (older && older->cold)
		return false;
	sc_hamt_root o = older ? older->root : (sc_hamt_root){0};
	sc_hamt_root n = (sc_hamt_root){0};
	if (newer)
		n = newer->cold ? newer->last : newer->root;
	*skip_equal = older && newer && older->epoch != newer->epoch;
	*xa = b_newer ? o : n;
	*xb = b_newer ? n : o;
	return xa->node != xb->node;
}

/* Diff the named partitions of two tables, partition by partition in name
 * order; a partition in one table only is all added or all removed, but
 * for residency (diff_trees). */
static int diff_parts(const sc_hamt *map, const struct sc_parts *ta,
		      const struct sc_parts *tb, bool b_newer, diff_ctx *d)
{
	if (ta == tb)
		return 0;
	size_t na = ta ? ta->n : 0, nb = tb ? tb->n : 0, i = 0, j = 0;
	int rc = 0;
	while (!rc && (i < na || j < nb)) {
		int c = i == na ? 1
			: j == nb
			    ? -1
			    : parts_name_cmp(&ta->items[i], &tb->items[j]);
		const sc_part_ref *ra = NULL, *rb = NULL;
		if (c <= 0)
			ra = &ta->items[i++];
		if (c >= 0)
			rb = &tb->items[j++];
		sc_hamt_root xa, xb;
		if (diff_trees(ra, rb, b_newer, &xa, &xb, &d->skip_equal))
			rc = sc_hamt_diff(map, xa, xb, diff_adapter, d);
		d->skip_equal = false;
	}
	return rc;
}

int sc_view_diff(const sc_view *a, const sc_view *b, sc_diff_fn fn, void *ctx)
{
	const struct sc_version *va = as_version(a), *vb = as_version(b);
	SC_REQUIRE(va->cache == vb->cache);
	diff_ctx d = {fn, ctx, false};
	int rc =
	    sc_hamt_diff(va->cache->map, va->root, vb->root, diff_adapter, &d);
	if (!rc)
		rc = diff_parts(va->cache->map, va->parts, vb->parts,
				vb->number >= va->number, &d);
	return rc;
}

int sc_cache_pending_diff(sc_cache *cache, sc_diff_fn fn, void *ctx)
{
	if (!cache->edit)
		return 0;
	diff_ctx d = {fn, ctx, false};
	int rc = sc_hamt_diff(cache->map, writer_current(cache)->root,
			      sc_hamt_edit_root(cache->edit), diff_adapter, &d);
	/* A load is no change of state (cache/cache_lib.h, residency). */
	for (struct sc_partition *p = cache->pending_parts; p && !rc;
	     p = p->pending_next)
		if (!p->loading)
			rc = sc_hamt_diff(cache->map, p->root,
					  sc_hamt_edit_root(p->edit),
					  diff_adapter, &d);
	return rc;
}

/* ==== change feed hook (cache/cache_lib.h) =============================== */

sc_cache_hook *sc_cache_hook_install(sc_cache *cache, sc_cache_hook *hook)
{
	sc_cache_hook *expected = NULL;
	if (!atomic_compare_exchange_strong(&cache->hook, &expected, hook))
		hook = expected;
	atomic_thread_fence(memory_order_seq_cst);
	return hook;
}

uint64_t sc_cache_version_newest(const sc_cache *cache)
{
	return atomic_load_explicit(&((sc_cache *)cache)->current_number,
				    memory_order_acquire);
}

uint64_t sc_view_garbage_before(const sc_view *view)
{
	return as_version(view)->garbage_before;
}

/* ==== stats =============================================================== */

size_t sc_cache_len(const sc_cache *cache)
{
	return atomic_load_explicit(&((sc_cache *)cache)->current_len,
				    memory_order_relaxed);
}

void sc_cache_stats_get(const sc_cache *cache_c, sc_cache_stats *out)
{
	sc_cache *cache = (sc_cache *)cache_c;
	memset(out, 0, sizeof *out);
	out->entities =
	    atomic_load_explicit(&cache->current_len, memory_order_relaxed);
	out->version =
	    atomic_load_explicit(&cache->current_number, memory_order_relaxed);
	out->position = atomic_load_explicit(&cache->current_position,
					     memory_order_relaxed);
	out->versions_alive =
	    atomic_load_explicit(&cache->versions_alive, memory_order_relaxed);
	out->versions_awaiting =
	    out->versions_alive ? out->versions_alive - 1 : 0;
	out->bytes_awaiting =
	    atomic_load_explicit(&cache->bytes_awaiting, memory_order_relaxed);
	out->nodes_awaiting =
	    atomic_load_explicit(&cache->nodes_awaiting, memory_order_relaxed);
	unsigned high =
	    atomic_load_explicit(&cache->slots_high, memory_order_acquire);
	uint64_t min = SC_PIN_NONE;
	for (unsigned i = 0; i < high; i++) {
		uint64_t p = atomic_load_explicit(&cache->slots[i].pin,
						  memory_order_relaxed);
		if (p < min)
			min = p;
	}
	out->oldest_pinned = min == SC_PIN_NONE ? 0 : min;
	out->readers =
	    atomic_load_explicit(&cache->readers_open, memory_order_relaxed);
	out->memory_bytes =
	    sc_hamt_allocated_bytes(cache->map) +
	    atomic_load_explicit(&cache->entity_bytes, memory_order_relaxed);
}
