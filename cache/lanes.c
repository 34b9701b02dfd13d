/*
 * Parallel apply: a batch's events applied by several lanes at once.
 *
 * An event goes to the lane that owns its entity's root slot in the map
 * (sc_hamt_lane_of of the id's hash), so all events of one entity go to one
 * lane and are applied there in log order, and lanes change disjoint
 * subtrees of the pending version (hamt/hamt_internal.h). An entity is its
 * partition and its id: every partition the batch names has a tree of its
 * own (cache/cache_internal.h), and each of those trees is split among the
 * lanes by root slot in the same way, so lane k applies its events of
 * partition p into its share of p's tree. A partition the batch names
 * only a few times is not worth splitting (a split and a join cost a node
 * per lane): one lane takes its whole tree (sc_hamt_lane_take), and all its
 * events, the partitions taken going to the lanes in turn. The result is
 * the serial one: the same states in every partition, the same trees (a
 * map's shape depends on its contents only), the same garbage, the same
 * counters, one version published by the promote as before.
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
 * (sc_hamt_lanes_abort, sc_hamt_lane_drop) and the pending version is
 * poisoned.
 *
 * Small batches do not pay for waking threads: below LANES_MIN_BATCH
 * events a batch is applied serially, as is every batch with one lane.
 *
 * The apply runs in two steps (sc_cache_apply_batch_begin / _end), so the
 * writer can do other work of the batch while the workers take lanes
 * (the store writes the batch to its log meanwhile):
 *
 *   writer:   hash + route | split | (caller's work) | lane 6 | wait | join
 *   worker 1:                      | lane 0 | lane 1 | ... | lane 5 |
 *
 * Begin keeps the batch's result when it has one already (a serial apply,
 * a failure before the lanes), for end to report; between the two, every
 * other writer call on the pending version is refused (batch_open), and
 * discard ends the batch first.
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
		/* The writer, freeing a lane's garbage or aborting (a free
		 * job's threads count into bytes_sub: busy). */
		SC_REQUIRE(!l->cache->lanes_freeing);
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

/*
 * The partitions of a batch. Each partition the batch names gets a number,
 * in the order of its first event (the default partition too, when the
 * batch has events of it), and its edit of the pending version is opened
 * then (sc_cache_part_edit), as a serial apply opens it at that event.
 * The edit of each partition with at least SC_LANES_SPLIT_MIN events per
 * lane is split among the lanes, the others' are taken whole by one lane:
 * lane k applies event i into its lane edit edits[of[i]], and the writer
 * joins the partitions' lanes one partition after the other. Written by
 * the writer only, before the lanes run; read by them while they run.
 */
typedef struct part_slot {
	const char *name; /* bytes of the first event naming it; NULL: free */
	uint32_t len;
	uint32_t num;
	uint64_t hash;
} part_slot;

struct sc_lanes_parts {
	uint32_t *of; /* by event of the batch: its partition's number */
	size_t capof;
	sc_hamt_edit **edits; /* by number: the partition's pending edit */
	size_t n, cap;
	int64_t **acc; /* by number: its state bytes' accumulator */
	size_t capacc;
	uint32_t *count; /* by number: the batch's events of the partition */
	size_t capcount;
	uint32_t *owner; /* by number: the lane taking it; LANE_SPLIT: split */
	size_t capowner;
	part_slot *tab; /* the names seen, open addressing on the hash */
	size_t tabcap, tabn;
	uint32_t dflt; /* the default partition's number; UINT32_MAX: none */
};

/* Take lanes of the batch until none is left. */
static void take_lanes(sc_cache *cache, const sc_event *evs,
		       const uint64_t *hashes)
{
	const uint32_t *of = cache->batch_parts->of;
	for (;;) {
		unsigned k = atomic_fetch_add_explicit(&cache->lanes_next, 1,
						       memory_order_relaxed);
		if (k >= cache->nlanes)
			return;
		sc_lane_run(&cache->lanes[k], evs, hashes, of);
	}
}

/* Take lanes' garbage chains until none is left: a thread taking lane k
 * frees free_by[k] into lane k's map, as it would apply lane k. */
static void take_frees(sc_cache *cache, sc_hamt_garbage **by)
{
	for (;;) {
		unsigned k = atomic_fetch_add_explicit(&cache->lanes_next, 1,
						       memory_order_relaxed);
		if (k >= cache->nlanes)
			return;
		sc_hamt_garbage_free(cache->map, by[k]);
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
		bool freeing = cache->lanes_freeing;
		sc_hamt_garbage **by = cache->free_by;
		const sc_event *evs = cache->batch_events;
		const uint64_t *hashes = cache->hashes;
		pthread_mutex_unlock(&cache->lanes_lock);
		if (freeing)
			take_frees(cache, by);
		else
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

/* The owner of a partition split among the lanes. */
#define LANE_SPLIT UINT32_MAX

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
		sc_free(cache->lanes[k].edits);
		sc_free(cache->lanes[k].pbytes);
	}
	sc_free(cache->hashes);
	struct sc_lanes_parts *bp = cache->batch_parts;
	if (bp) {
		sc_free(bp->of);
		sc_free(bp->edits);
		sc_free(bp->acc);
		sc_free(bp->count);
		sc_free(bp->owner);
		sc_free(bp->tab);
		sc_free(bp);
		cache->batch_parts = NULL;
	}
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

/* Give the batch a partition: its number is the next one. */
static int part_add(struct sc_lanes_parts *bp, sc_hamt_edit *edit, int64_t *acc,
		    uint32_t *num)
{
	if (sc_grow_array((void **)&bp->edits, &bp->cap, bp->n + 1,
			  sizeof *bp->edits) ||
	    sc_grow_array((void **)&bp->acc, &bp->capacc, bp->n + 1,
			  sizeof *bp->acc) ||
	    sc_grow_array((void **)&bp->count, &bp->capcount, bp->n + 1,
			  sizeof *bp->count) ||
	    sc_grow_array((void **)&bp->owner, &bp->capowner, bp->n + 1,
			  sizeof *bp->owner))
		return ENOMEM;
	bp->edits[bp->n] = edit;
	bp->acc[bp->n] = acc;
	bp->count[bp->n] = 0;
	*num = (uint32_t)bp->n++;
	return SC_OK;
}

/* The slot of name (hash h) in the table of names: its own, or the free
 * one where it goes. The table is never full (grown at half load). */
static part_slot *part_slot_of(const struct sc_lanes_parts *bp, sc_str name,
			       uint64_t h)
{
	size_t mask = bp->tabcap - 1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		part_slot *s = &bp->tab[i];
		if (!s->name || (s->hash == h && s->len == name.len &&
				 memcmp(s->name, name.ptr, name.len) == 0))
			return s;
	}
}

static int part_tab_grow(struct sc_lanes_parts *bp)
{
	size_t cap = bp->tabcap ? bp->tabcap * 2 : 16;
	part_slot *old = bp->tab;
	size_t oldcap = bp->tabcap;
	part_slot *tab = sc_calloc(cap, sizeof *tab);
	if (!tab)
		return ENOMEM;
	bp->tab = tab;
	bp->tabcap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].name)
			*part_slot_of(bp, (sc_str){old[i].name, old[i].len},
				      old[i].hash) = old[i];
	sc_free(old);
	return SC_OK;
}

/* The number of named partition `name` in the batch; at its first event,
 * its pending edit is opened and it gets the next number. Errors: ENOMEM
 * (the pending version is poisoned, err says so). */
static int part_number(sc_cache *cache, sc_str name, uint32_t *num,
		       sc_error *err)
{
	struct sc_lanes_parts *bp = cache->batch_parts;
	if ((bp->tabn + 1) * 2 > bp->tabcap && part_tab_grow(bp))
		return sc_cache_poison(cache, ENOMEM, err, "routing a batch");
	uint64_t h = sc_hamt_hash(cache->map, name.ptr, name.len);
	part_slot *s = part_slot_of(bp, name, h);
	if (s->name) {
		*num = s->num;
		return SC_OK;
	}
	sc_hamt_edit *edit;
	int64_t *acc;
	/* A cold partition is refused (SC_ESTATE), as a serial apply
	 * refuses its first event. */
	int rc = sc_cache_part_open(cache, name, &edit, &acc, err);
	if (rc)
		return rc;
	if (part_add(bp, edit, acc, num))
		return sc_cache_poison(cache, ENOMEM, err, "routing a batch");
	*s = (part_slot){name.ptr, (uint32_t)name.len, *num, h};
	bp->tabn++;
	return SC_OK;
}

/* Events ahead whose ids route loads while it hashes one. */
#define ROUTE_AHEAD 16

/* Hash every event's id and number its partition; give each lane its
 * events, in order: a partition the batch names often enough is split
 * among the lanes, each of the others goes whole to one lane, in turn.
 * Errors: ENOMEM (the pending version is poisoned; *failed is the event
 * whose partition could not be opened, else 0). */
static int route(sc_cache *cache, const sc_event *evs, size_t n, size_t *failed,
		 sc_error *err)
{
	unsigned nl = cache->nlanes;
	if (!cache->batch_parts &&
	    !(cache->batch_parts = sc_calloc(1, sizeof *cache->batch_parts)))
		return sc_cache_poison(cache, ENOMEM, err, "routing a batch");
	struct sc_lanes_parts *bp = cache->batch_parts;
	if (sc_grow_array((void **)&cache->hashes, &cache->caphashes, n,
			  sizeof *cache->hashes) ||
	    sc_grow_array((void **)&bp->of, &bp->capof, n, sizeof *bp->of))
		return sc_cache_poison(cache, ENOMEM, err, "routing a batch");
	for (unsigned k = 0; k < nl; k++) {
		sc_lane *l = &cache->lanes[k];
		if (sc_grow_array((void **)&l->idx, &l->capidx, n,
				  sizeof *l->idx))
			return sc_cache_poison(cache, ENOMEM, err,
					       "routing a batch");
		l->nidx = 0;
		l->nedits = 0;
	}
	bp->n = 0;
	bp->dflt = UINT32_MAX;
	if (bp->tabn) {
		memset(bp->tab, 0, bp->tabcap * sizeof *bp->tab);
		bp->tabn = 0;
	}
	/* Events of one partition often come in runs. */
	sc_str last = {NULL, 0};
	uint32_t last_num = 0;
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = &evs[i];
		/* The ids lie wherever the caller put them: load them ahead,
		 * so that the hashes' misses overlap. */
		if (i + ROUTE_AHEAD < n)
			__builtin_prefetch(evs[i + ROUTE_AHEAD].entity.ptr);
		sc_str p = ev->partition;
		uint32_t num = 0;
		if (!p.len) {
			if (bp->dflt == UINT32_MAX &&
			    part_add(bp, cache->edit,
				     &cache->default_bytes_pending, &bp->dflt))
				return sc_cache_poison(cache, ENOMEM, err,
						       "routing a batch");
			num = bp->dflt;
		} else if (last.ptr && p.len == last.len &&
			   memcmp(p.ptr, last.ptr, p.len) == 0) {
			num = last_num;
		} else {
			int rc = part_number(cache, p, &num, err);
			if (rc) {
				if (failed)
					*failed = i;
				return rc;
			}
			last = p;
			last_num = num;
		}
		bp->of[i] = num;
		bp->count[num]++;
		cache->hashes[i] =
		    sc_hamt_hash(cache->map, ev->entity.ptr, ev->entity.len);
	}
	for (unsigned k = 0; k < nl; k++) {
		sc_lane *l = &cache->lanes[k];
		if (sc_grow_array((void **)&l->edits, &l->capedits, bp->n,
				  sizeof *l->edits) ||
		    sc_grow_array((void **)&l->pbytes, &l->cappbytes, bp->n,
				  sizeof *l->pbytes))
			return sc_cache_poison(cache, ENOMEM, err,
					       "routing a batch");
		l->nedits = bp->n;
		memset(l->pbytes, 0, bp->n * sizeof *l->pbytes);
	}
	unsigned next = 0;
	for (size_t j = 0; j < bp->n; j++) {
		if (bp->count[j] >= (size_t)SC_LANES_SPLIT_MIN * nl) {
			bp->owner[j] = LANE_SPLIT;
		} else {
			bp->owner[j] = next;
			next = (next + 1) % nl;
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t o = bp->owner[bp->of[i]];
		unsigned k =
		    o == LANE_SPLIT ? sc_hamt_lane_of(cache->hashes[i], nl) : o;
		sc_lane *l = &cache->lanes[k];
		l->idx[l->nidx++] = (uint32_t)i;
	}
	return SC_OK;
}

/* The lane edits of partition `num`, taken from the lanes into lanes[]. */
static void part_lanes(sc_cache *cache, size_t num, sc_hamt_edit *lanes[])
{
	for (unsigned k = 0; k < cache->nlanes; k++) {
		lanes[k] = cache->lanes[k].edits[num];
		cache->lanes[k].edits[num] = NULL;
	}
}

/* End the lanes of partitions from..to-1 after a failure: every change of
 * their edits is dropped and the edits are poisoned (discard aborts
 * them). */
static void parts_abort(sc_cache *cache, size_t from, size_t to)
{
	struct sc_lanes_parts *bp = cache->batch_parts;
	sc_hamt_edit *lanes[SC_HAMT_LANES_MAX];
	for (size_t j = from; j < to; j++) {
		part_lanes(cache, j, lanes);
		if (bp->owner[j] == LANE_SPLIT)
			sc_hamt_lanes_abort(bp->edits[j], lanes);
		else
			sc_hamt_lane_drop(bp->edits[j], lanes[bp->owner[j]]);
	}
}

/* Split every partition's edit among the lanes, or give it whole to its
 * lane. On failure the partitions opened so far are aborted. */
static int parts_split(sc_cache *cache)
{
	struct sc_lanes_parts *bp = cache->batch_parts;
	sc_hamt_edit *lanes[SC_HAMT_LANES_MAX];
	for (size_t j = 0; j < bp->n; j++) {
		uint32_t o = bp->owner[j];
		int rc;
		if (o == LANE_SPLIT) {
			rc = sc_hamt_lanes_split(bp->edits[j], lanes);
		} else {
			for (unsigned k = 0; k < cache->nlanes; k++)
				lanes[k] = NULL;
			rc = sc_hamt_lane_take(bp->edits[j], o, &lanes[o]);
		}
		if (rc) {
			parts_abort(cache, 0, j);
			return rc;
		}
		for (unsigned k = 0; k < cache->nlanes; k++)
			cache->lanes[k].edits[j] = lanes[k];
	}
	return SC_OK;
}

/* Join every partition's lanes into its edit. On failure the partitions
 * not joined yet are aborted. */
static int parts_join(sc_cache *cache)
{
	struct sc_lanes_parts *bp = cache->batch_parts;
	sc_hamt_edit *lanes[SC_HAMT_LANES_MAX];
	for (size_t j = 0; j < bp->n; j++) {
		part_lanes(cache, j, lanes);
		uint32_t o = bp->owner[j];
		int rc = o == LANE_SPLIT
			     ? sc_hamt_lanes_join(bp->edits[j], lanes)
			     : sc_hamt_lane_give(bp->edits[j], lanes[o]);
		if (rc) {
			parts_abort(cache, j + 1, bp->n);
			return rc;
		}
	}
	return SC_OK;
}

/* Wake the workers for the job just set up (a batch's lanes, or the
 * lanes' garbage): they take lanes from the first. Under lanes_lock. */
static void workers_go(sc_cache *cache)
{
	atomic_store_explicit(&cache->lanes_next, 0, memory_order_relaxed);
	cache->lanes_running = cache->nthreads - 1;
	cache->lanes_batch++;
	pthread_cond_broadcast(&cache->lanes_go);
}

/* Start the lanes of the routed batch: the workers take them in turn;
 * the calling thread takes none (lanes_finish). */
static void lanes_start(sc_cache *cache, const sc_event *evs)
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
	cache->lanes_freeing = false;
	workers_go(cache);
	pthread_mutex_unlock(&cache->lanes_lock);
}

/* Take the lanes of the batch no worker has taken yet, then wait for the
 * workers to finish theirs. */
static void lanes_finish(sc_cache *cache)
{
	take_lanes(cache, cache->batch_events, cache->hashes);
	pthread_mutex_lock(&cache->lanes_lock);
	while (cache->lanes_running)
		pthread_cond_wait(&cache->lanes_idle, &cache->lanes_lock);
	for (unsigned k = 0; k < cache->nlanes; k++)
		cache->lanes[k].busy = false;
	pthread_mutex_unlock(&cache->lanes_lock);
}

/* Below this many nodes and entries in the lanes' garbage chains, the
 * writer frees them alone: waking a worker costs about as much as freeing
 * a few thousand. */
#define LANES_FREE_MIN 4096

void sc_lanes_free_garbage(sc_cache *cache, sc_hamt_garbage *by[],
			   size_t lane_items)
{
	unsigned nl = cache->nlanes;
	SC_REQUIRE(cache->nthreads > 1 &&
		   !(cache->batch_open && cache->batch.lanes));
	if (cache->lanes_stop || lane_items < LANES_FREE_MIN) {
		for (unsigned k = 0; k <= nl; k++)
			sc_hamt_garbage_free(cache->map, by[k]);
		return;
	}
	/* As a batch's lanes: the release hook counts into bytes_sub, and
	 * lane k's map is touched by the one thread that took k. */
	pthread_mutex_lock(&cache->lanes_lock);
	for (unsigned k = 0; k < nl; k++) {
		cache->lanes[k].busy = true;
		cache->lanes[k].bytes_sub = 0;
	}
	cache->free_by = by;
	cache->lanes_freeing = true;
	workers_go(cache);
	pthread_mutex_unlock(&cache->lanes_lock);
	/* The map's own chain meanwhile; its hook counts into the cache. */
	sc_hamt_garbage_free(cache->map, by[nl]);
	take_frees(cache, by);
	size_t sub = 0;
	pthread_mutex_lock(&cache->lanes_lock);
	while (cache->lanes_running)
		pthread_cond_wait(&cache->lanes_idle, &cache->lanes_lock);
	for (unsigned k = 0; k < nl; k++) {
		cache->lanes[k].busy = false;
		sub += cache->lanes[k].bytes_sub;
	}
	cache->free_by = NULL;
	cache->lanes_freeing = false;
	cache->lanes_frees++;
	pthread_mutex_unlock(&cache->lanes_lock);
	size_t v =
	    atomic_load_explicit(&cache->entity_bytes, memory_order_relaxed);
	atomic_store_explicit(&cache->entity_bytes, v - sub,
			      memory_order_relaxed);
}

/* Everything of a batch's apply up to its lanes: the serial apply (one
 * thread, or a small batch: done here), else the route, the split and
 * the workers woken. A failure is the batch's result, for its end. */
static int batch_start(sc_cache *cache, const sc_event *evs, size_t n,
		       bool *lanes, size_t *failed, sc_error *err)
{
	*lanes = false;
	if (n > UINT32_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "a batch of %zu events is too big; split "
				    "it",
				    n);
	if (cache->nthreads < 2 || n < LANES_MIN_BATCH)
		return apply_serial(cache, evs, n, failed, err);
	int rc = sc_cache_check_writable(cache, err);
	if (rc)
		return rc;
	rc = sc_cache_pending_open(cache, err);
	if (rc)
		return rc;
	rc = route(cache, evs, n, failed, err);
	if (rc) {
		/* A cold partition (SC_ESTATE) fails the batch as a serial
		 * apply fails it: only discard is valid after. */
		cache->poisoned = true;
		return rc;
	}
	rc = parts_split(cache);
	if (rc)
		return sc_cache_poison(cache, rc, err,
				       "opening the apply lanes");
	lanes_start(cache, evs);
	*lanes = true;
	return SC_OK;
}

/* The end of a batch the lanes ran: fold what they counted, report the
 * first failure in log order, or join their trees. */
static int lanes_end(sc_cache *cache, size_t n, size_t *failed, sc_error *err)
{
	lanes_finish(cache);
	sc_lane *first = NULL;
	size_t add = 0, sub = 0;
	for (unsigned k = 0; k < cache->nlanes; k++) {
		sc_lane *l = &cache->lanes[k];
		add += l->bytes_add;
		sub += l->bytes_sub;
		cache->pending_garbage_entity_bytes += l->garbage_bytes;
		/* Each partition's state bytes, as its changes counted them. */
		for (size_t j = 0; j < cache->batch_parts->n; j++)
			*cache->batch_parts->acc[j] += l->pbytes[j];
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
		parts_abort(cache, 0, cache->batch_parts->n);
		cache->poisoned = true;
		*failed = first->failed_at;
		if (err)
			*err = first->err;
		return first->rc;
	}
	int rc = parts_join(cache);
	if (rc) {
		*failed = n - 1;
		return sc_cache_poison(cache, rc, err,
				       "joining the apply lanes");
	}
	*failed = n;
	return SC_OK;
}

int sc_cache_apply_batch_begin(sc_cache *cache, const sc_event *evs, size_t n,
			       sc_error *err)
{
	SC_REQUIRE(cache && (evs || !n));
	/* The batch in flight is the lanes' until its end: touch nothing. */
	if (cache->batch_open)
		return sc_error_set(err, SC_ESTATE,
				    "a batch is being applied already; end it "
				    "first");
	struct sc_cache_batch *b = &cache->batch;
	sc_error_clear(&b->err);
	b->n = n;
	/* A failure of no event in particular is the first event's. */
	b->failed = 0;
	b->rc = batch_start(cache, evs, n, &b->lanes, &b->failed, &b->err);
	cache->batch_open = true;
	return SC_OK;
}

int sc_cache_apply_batch_end(sc_cache *cache, size_t *failed, sc_error *err)
{
	size_t at = 0;
	if (failed)
		*failed = 0;
	if (!cache || !cache->batch_open)
		return SC_OK;
	struct sc_cache_batch *b = &cache->batch;
	cache->batch_open = false;
	int rc = b->rc;
	at = b->failed;
	if (b->lanes) {
		b->lanes = false;
		rc = lanes_end(cache, b->n, &at, err);
	} else if (rc && err) {
		*err = b->err;
	}
	if (failed)
		*failed = at;
	return rc;
}

int sc_cache_apply_batch_valid(sc_cache *cache, const sc_event *evs, size_t n,
			       size_t *failed, sc_error *err)
{
	if (failed)
		*failed = 0;
	if (!cache || (n && !evs))
		return sc_error_set(err, SC_EINVAL, "cache or events is NULL");
	int rc = sc_cache_apply_batch_begin(cache, evs, n, err);
	if (rc)
		return rc;
	return sc_cache_apply_batch_end(cache, failed, err);
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
