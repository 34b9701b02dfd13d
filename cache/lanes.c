/*
 * Parallel apply: a batch's events applied by several lanes at once.
 *
 * An event goes to the lane that owns its entity's root slot in the map
 * (sc_hamt_lane_of of the id's hash), so all events of one entity go to one
 * lane and are applied there in log order, and lanes change disjoint
 * subtrees of the pending version (hamt/hamt_internal.h). The result is the
 * serial one: the same states, the same tree (the map's shape depends on
 * its contents only), the same garbage, the same counters, one version
 * published by the promote as before.
 *
 *   writer:   hash + route | split | lane 0 | lane 2 | lane 5 | wait | join
 *   worker 1:                      | lane 1 | lane 3 | lane 4 | lane 6 |
 *
 * There are LANES_PER_THREAD lanes per thread; the writer wakes the
 * workers, and they and the writer take the lanes in turn until none is
 * left, so a thread the scheduler holds up, or a lane of slow events,
 * leaves the rest of the batch to the others. Nothing but the batch's
 * inputs and each lane's own memory is touched while they run (lane maps,
 * pools and counters are per lane). Then it
 * folds the lanes' counters into the cache and joins their trees into the
 * pending version. If any lane failed, the first failing event in log
 * order is reported, every change of the pending version is dropped
 * (sc_hamt_lanes_abort) and the pending version is poisoned.
 *
 * Small batches do not pay for waking threads: below LANES_MIN_BATCH
 * events a batch is applied serially, as is every batch with one lane.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* Fewer events than this are applied serially. */
#define LANES_MIN_BATCH 256

/* ==== hooks of the lane maps ============================================== */

void sc_lane_release_entry(void *ctx, const sc_hamt_key *key, void *value)
{
	sc_lane *l = ctx;
	sc_entity *e = value;
	SC_REQUIRE(key == sc_entity_key(e));
	SC_UNUSED(key);
	if (l->busy) {
		l->bytes_sub += e->size;
	} else {
		/* The writer, freeing a lane's garbage or aborting. */
		_Atomic size_t *c = &l->cache->entity_bytes;
		size_t v = atomic_load_explicit(c, memory_order_relaxed);
		atomic_store_explicit(c, v - e->size, memory_order_relaxed);
	}
	sc_pool_free(&l->entity_pool, e, sc_entity_block_size(e));
}

bool sc_lane_entry_fresh(void *ctx, const sc_hamt_key *key, void *value)
{
	const sc_lane *l = ctx;
	const sc_entity *e = value;
	SC_UNUSED(key);
	return e->born == l->cache->generation;
}

/* ==== workers ============================================================= */

/* Take lanes of the batch until none is left. */
static void take_lanes(sc_cache *cache, const sc_event *evs,
		       const uint64_t *hashes)
{
	for (;;) {
		unsigned k = atomic_fetch_add_explicit(&cache->lanes_next, 1,
						       memory_order_relaxed);
		if (k >= cache->nlanes)
			return;
		sc_lane_run(&cache->lanes[k], evs, hashes);
	}
}

static void *lane_worker(void *arg)
{
	sc_cache *cache = arg;
	uint64_t seen = 0;
	pthread_mutex_lock(&cache->lanes_lock);
	for (;;) {
		while (cache->lanes_batch == seen && !cache->lanes_stop)
			pthread_cond_wait(&cache->lanes_go, &cache->lanes_lock);
		if (cache->lanes_stop)
			break;
		seen = cache->lanes_batch;
		const sc_event *evs = cache->batch_events;
		const uint64_t *hashes = cache->hashes;
		pthread_mutex_unlock(&cache->lanes_lock);
		take_lanes(cache, evs, hashes);
		pthread_mutex_lock(&cache->lanes_lock);
		if (--cache->lanes_running == 0)
			pthread_cond_signal(&cache->lanes_idle);
	}
	pthread_mutex_unlock(&cache->lanes_lock);
	return NULL;
}

/* Stop and join workers 1..n-1. */
static void stop_workers(sc_cache *cache, unsigned n)
{
	pthread_mutex_lock(&cache->lanes_lock);
	cache->lanes_stop = true;
	pthread_cond_broadcast(&cache->lanes_go);
	pthread_mutex_unlock(&cache->lanes_lock);
	for (unsigned k = 1; k < n; k++)
		pthread_join(cache->workers[k], NULL);
}

/* Lanes per thread: enough that a thread held up (by the scheduler, or by
 * a share of slow events) leaves its work to the others. */
#define LANES_PER_THREAD 4

int sc_lanes_init(sc_cache *cache, unsigned threads, sc_error *err)
{
	unsigned t = threads;
	if (!t) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		t = c < 1		       ? 1
		    : c > SC_CACHE_THREADS_MAX ? SC_CACHE_THREADS_MAX
					       : (unsigned)c;
	}
	if (t > SC_CACHE_THREADS_MAX)
		t = SC_CACHE_THREADS_MAX;
	cache->nthreads = 1;
	cache->nlanes = 1;
	if (t < 2)
		return SC_OK;
	unsigned n = t * LANES_PER_THREAD;
	if (n > SC_HAMT_LANES_MAX)
		n = SC_HAMT_LANES_MAX;
	void *block = sc_calloc(1, n * sizeof(sc_lane) + 64);
	if (!block)
		return sc_error_set(err, ENOMEM,
				    "out of memory for %u apply lanes", n);
	sc_lane *ls = (sc_lane *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
	void *ctx[SC_HAMT_LANES_MAX];
	for (unsigned k = 0; k < n; k++) {
		ls[k].cache = cache;
		sc_pool_init(&ls[k].entity_pool, (size_t)8 << 20,
			     SC_POOL_DEFAULT);
		ctx[k] = &ls[k];
	}
	int rc = sc_hamt_lanes_setup(cache->map, n, sc_lane_release_entry,
				     sc_lane_entry_fresh, ctx);
	if (rc) {
		sc_free(block);
		return sc_error_set(err, rc,
				    "cannot set up %u apply lanes (%s)", n,
				    sc_strerror(rc));
	}
	pthread_mutex_init(&cache->lanes_lock, NULL);
	pthread_cond_init(&cache->lanes_go, NULL);
	pthread_cond_init(&cache->lanes_idle, NULL);
	atomic_init(&cache->lanes_next, 0);
	cache->lanes = ls;
	cache->lanes_block = block;
	cache->lanes_stop = false;
	cache->nlanes = n;
	for (unsigned k = 1; k < t; k++) {
		rc = pthread_create(&cache->workers[k], NULL, lane_worker,
				    cache);
		if (rc) {
			stop_workers(cache, k);
			/* The lane maps go with the map. */
			pthread_cond_destroy(&cache->lanes_idle);
			pthread_cond_destroy(&cache->lanes_go);
			pthread_mutex_destroy(&cache->lanes_lock);
			cache->lanes = NULL;
			cache->lanes_block = NULL;
			cache->nlanes = 1;
			sc_free(block);
			return sc_error_set(err, rc,
					    "cannot start an apply lane's "
					    "thread (%s); pass "
					    "options.lanes = 1 to apply on the "
					    "calling thread only",
					    sc_strerror(rc));
		}
	}
	cache->nthreads = t;
	return SC_OK;
}

void sc_lanes_stop(sc_cache *cache)
{
	if (cache->nthreads < 2 || cache->lanes_stop)
		return;
	stop_workers(cache, cache->nthreads);
}

void sc_lanes_fini(sc_cache *cache)
{
	if (cache->nthreads < 2)
		return;
	for (unsigned k = 0; k < cache->nlanes; k++) {
		sc_pool_destroy(&cache->lanes[k].entity_pool);
		sc_free(cache->lanes[k].idx);
	}
	sc_free(cache->hashes);
	pthread_cond_destroy(&cache->lanes_idle);
	pthread_cond_destroy(&cache->lanes_go);
	pthread_mutex_destroy(&cache->lanes_lock);
	sc_free(cache->lanes_block);
	cache->lanes = NULL;
	cache->nlanes = 1;
	cache->nthreads = 1;
}

/* ==== batches ============================================================= */

/* The serial path: one event after another. */
static int apply_serial(sc_cache *cache, const sc_event *evs, size_t n,
			size_t *failed, sc_error *err)
{
	for (size_t i = 0; i < n; i++) {
		int rc = sc_cache_apply_valid(cache, &evs[i], err);
		if (rc) {
			if (failed)
				*failed = i;
			/* Like every failure of a batch: discard. */
			cache->poisoned = true;
			return rc;
		}
	}
	if (failed)
		*failed = n;
	return SC_OK;
}

/* Whether an event of the batch names a partition. The lanes split the
 * root slots of the default partition's tree only; a batch with events of
 * named partitions is applied serially, each event into its partition's
 * tree. */
static bool any_named(const sc_event *evs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (evs[i].partition.len)
			return true;
	return false;
}

/* Hash every event's id and give each lane its events, in order. */
static int route(sc_cache *cache, const sc_event *evs, size_t n)
{
	unsigned nl = cache->nlanes;
	if (sc_grow_array((void **)&cache->hashes, &cache->caphashes, n,
			  sizeof *cache->hashes))
		return ENOMEM;
	for (unsigned k = 0; k < nl; k++) {
		sc_lane *l = &cache->lanes[k];
		if (sc_grow_array((void **)&l->idx, &l->capidx, n,
				  sizeof *l->idx))
			return ENOMEM;
		l->nidx = 0;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t h = sc_hamt_hash(cache->map, evs[i].entity.ptr,
					  evs[i].entity.len);
		cache->hashes[i] = h;
		sc_lane *l = &cache->lanes[sc_hamt_lane_of(h, nl)];
		l->idx[l->nidx++] = (uint32_t)i;
	}
	return SC_OK;
}

/* Run every lane of the batch: the workers and the calling thread take
 * them in turn. */
static void run_lanes(sc_cache *cache, const sc_event *evs)
{
	pthread_mutex_lock(&cache->lanes_lock);
	for (unsigned k = 0; k < cache->nlanes; k++) {
		sc_lane *l = &cache->lanes[k];
		l->busy = true;
		l->rc = 0;
		l->bytes_add = l->bytes_sub = l->garbage_bytes = 0;
		l->state_size_max = 0;
		l->position = 0;
	}
	cache->batch_events = evs;
	atomic_store_explicit(&cache->lanes_next, 0, memory_order_relaxed);
	cache->lanes_running = cache->nthreads - 1;
	cache->lanes_batch++;
	pthread_cond_broadcast(&cache->lanes_go);
	pthread_mutex_unlock(&cache->lanes_lock);

	take_lanes(cache, evs, cache->hashes);

	pthread_mutex_lock(&cache->lanes_lock);
	while (cache->lanes_running)
		pthread_cond_wait(&cache->lanes_idle, &cache->lanes_lock);
	for (unsigned k = 0; k < cache->nlanes; k++)
		cache->lanes[k].busy = false;
	pthread_mutex_unlock(&cache->lanes_lock);
}

int sc_cache_apply_batch_valid(sc_cache *cache, const sc_event *evs, size_t n,
			       size_t *failed, sc_error *err)
{
	/* A failure of no event in particular is the first event's. */
	if (failed)
		*failed = 0;
	if (!cache || (n && !evs))
		return sc_error_set(err, SC_EINVAL, "cache or events is NULL");
	if (n > UINT32_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "a batch of %zu events is too big; split "
				    "it",
				    n);
	if (cache->nthreads < 2 || n < LANES_MIN_BATCH || any_named(evs, n))
		return apply_serial(cache, evs, n, failed, err);
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	if (route(cache, evs, n))
		return sc_cache_poison(cache, ENOMEM, err, "routing a batch");
	sc_hamt_edit *edits[SC_HAMT_LANES_MAX];
	rc = sc_hamt_lanes_split(cache->edit, edits);
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       "opening the apply lanes");
	for (unsigned k = 0; k < cache->nlanes; k++)
		cache->lanes[k].edit = edits[k];
	run_lanes(cache, evs);

	/* Fold what the lanes counted; find the first failure in log order. */
	sc_lane *first = NULL;
	size_t add = 0, sub = 0;
	for (unsigned k = 0; k < cache->nlanes; k++) {
		sc_lane *l = &cache->lanes[k];
		l->edit = NULL;
		add += l->bytes_add;
		sub += l->bytes_sub;
		cache->pending_garbage_entity_bytes += l->garbage_bytes;
		/* The default partition's state bytes changed by what the
		 * lane made, less what it released and dropped. */
		cache->default_bytes_pending += (int64_t)l->bytes_add -
						(int64_t)l->bytes_sub -
						(int64_t)l->garbage_bytes;
		if (l->state_size_max > cache->state_size_max)
			cache->state_size_max = l->state_size_max;
		if (l->position > cache->pending_position)
			cache->pending_position = l->position;
		if (l->rc && (!first || l->failed_at < first->failed_at))
			first = l;
	}
	size_t v =
	    atomic_load_explicit(&cache->entity_bytes, memory_order_relaxed);
	atomic_store_explicit(&cache->entity_bytes, v + add - sub,
			      memory_order_relaxed);
	if (first) {
		sc_hamt_lanes_abort(cache->edit, edits);
		cache->poisoned = true;
		if (failed)
			*failed = first->failed_at;
		if (err)
			*err = first->err;
		return first->rc;
	}
	rc = sc_hamt_lanes_join(cache->edit, edits);
	if (rc) {
		if (failed)
			*failed = n - 1;
		return sc_cache_poison(cache, rc, err,
				       "joining the apply lanes");
	}
	if (failed)
		*failed = n;
	return SC_OK;
}

int sc_cache_apply_batch(sc_cache *cache, const sc_event *evs, size_t n,
			 size_t *failed, sc_error *err)
{
	if (failed)
		*failed = 0;
	if (!cache || (n && !evs))
		return sc_error_set(err, SC_EINVAL, "cache or events is NULL");
	for (size_t i = 0; i < n; i++) {
		sc_error inner;
		int rc = sc_entity_validate_event(&evs[i], &inner);
		if (rc) {
			if (failed)
				*failed = i;
			return sc_error_set(err, rc, "event %zu: %s", i,
					    inner.message);
		}
	}
	return sc_cache_apply_batch_valid(cache, evs, n, failed, err);
}
