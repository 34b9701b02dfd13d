/*
 * Readers and the reclamation of superseded versions.
 *
 * ==== The scheme ===========================================================
 *
 * A reader table in the manner of LMDB: a fixed array of slots, one cache
 * line each; a reader owns one slot and is the only thread that writes its
 * `pin`. Versions are numbered 0, 1, 2, ... and published by the writer:
 *
 *   writer, promote of version k+1:
 *     W1  current        := v[k+1]        (release)
 *     W2  current_number := k+1           (release)
 *     W3  fence(seq_cst)
 *     W4  min := smallest pin over all slots (acquire loads)
 *     W5  free garbage(j) for every superseded j < min, oldest first
 *
 *   reader, pin (sc_reader_get / sc_reader_begin):
 *     R0  if another thread used the slot last: own it (under slots_lock)
 *     R1  n := current_number             (acquire)
 *     R2  if the reader already holds version n: use it, done (no store)
 *     R3  slot.pin := n                   (release)
 *     R4  fence(seq_cst)
 *     R5  v := current                    (acquire); read through v
 *   unpin: slot.pin := NONE (release).
 *
 * garbage(j) is what the commit that made version j+1 removed from version
 * j: nodes and entity states reachable from v[j] (and possibly older
 * versions) but not from v[j+1] or anything newer.
 *
 * Invariant: a reader that reads through version m has pin p <= m in its
 * slot from before its first read until after its last read. Because W2
 * follows W1 and R1 acquires it, R5 returns a version numbered >= n = p.
 *
 * Why freeing garbage(j) for j < min is safe: the nodes of garbage(j) are
 * reachable only from versions <= j. Take a reader reading through v[m].
 * Either W4 saw its pin p <= m, so min <= p <= m and only j < m is freed,
 * which v[m] cannot reach; or W4 missed it: then the two seq_cst fences
 * order R4 after W3, so R5 saw W1 (or later) and m >= k+1 > every j the
 * writer may free now. A later scan by the writer repeats the argument with
 * its own fence. The pin store is a release and the writer's loads are
 * acquires, so the reader's reads of a version happen before the writer
 * frees anything after seeing that pin move past it (or go to NONE).
 *
 * The read path is a load of current_number, and, only when a newer version
 * exists, one plain store to the reader's own cache line and a fence: no
 * lock, no read-modify-write on a shared line. An idle writer costs readers
 * nothing but that one load.
 *
 * A long pin delays reclamation and never breaks it: every version from the
 * pinned one on stays allocated (stats: versions_awaiting, bytes_awaiting,
 * oldest_pinned); once the pin moves on or ends, the next promote or
 * sc_cache_reclaim frees them. With apply lanes, a lane's garbage goes
 * back into its lane map's pool, and the writer and the lanes' workers
 * free the lanes' garbage at once (cache/lanes.c); the counters are those
 * of a serial free when reclaim returns.
 *
 * A thread that exits while pinned: each reader registers the cache's
 * thread-exit key for its thread (pthread_setspecific); the key's
 * destructor runs at thread exit and sets to NONE the pin of every slot the
 * exiting thread owns, so a dead thread never holds versions. The slot
 * itself stays claimed until sc_reader_close or sc_cache_destroy.
 *
 * A reader may move from thread to thread, one at a time (the store's own
 * reader does, under its write lock). The slot's owner is the thread that
 * used it last, by a number no other thread of the process ever gets (a
 * pthread_t may be reused once its thread is joined). Every pin and unpin
 * first compares the owner with the calling thread's number (R0) and, when
 * they differ, takes the slot under slots_lock, which the hook holds too:
 * the hook of a thread that has handed the reader on either ran before
 * (and the new owner sees what it did) or sees the new owner and leaves
 * the slot alone. Before R0 a pin reads nothing the hook writes.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"
#include "hamt/hamt_internal.h"

/* ==== reader table set-up ================================================= */

/* The calling thread's number, from 1, never reused in the process: the
 * owner of the reader slots it uses. */
static _Atomic uint64_t threads_numbered;
static _Thread_local uint64_t thread_number;

static inline uint64_t self_number(void)
{
	uint64_t n = thread_number;
	if (__builtin_expect(!n, 0))
		thread_number = n =
		    atomic_fetch_add_explicit(&threads_numbered, 1,
					      memory_order_relaxed) +
		    1;
	return n;
}

/* Forget the pinned version (owner thread, or under slots_lock). */
static void reader_unpinned(struct sc_reader *r)
{
	r->version = NULL;
	r->number = SC_PIN_NONE;
	r->root = (sc_hamt_root){0};
}

/* Thread-exit hook: drop the pins of every slot the exiting thread owns. */
static void reader_thread_exit(void *arg)
{
	sc_cache *cache = arg;
	uint64_t self = thread_number;
	pthread_mutex_lock(&cache->slots_lock);
	unsigned high =
	    atomic_load_explicit(&cache->slots_high, memory_order_relaxed);
	for (unsigned i = 0; i < high; i++) {
		struct sc_reader *r = &cache->slots[i];
		if (!r->in_use || r->owner != self)
			continue;
		reader_unpinned(r);
		atomic_store_explicit(&r->pin, SC_PIN_NONE,
				      memory_order_release);
	}
	pthread_mutex_unlock(&cache->slots_lock);
}

int sc_reclaim_init(sc_cache *cache, unsigned max_readers, sc_error *err)
{
	if (max_readers == 0)
		max_readers = 126;
	size_t bytes = (size_t)max_readers * sizeof(struct sc_reader) + 64;
	void *block = sc_calloc(1, bytes);
	if (!block)
		return sc_error_set(err, ENOMEM,
				    "out of memory for %u reader slots",
				    max_readers);
	uintptr_t p = ((uintptr_t)block + 63) & ~(uintptr_t)63;
	cache->slots_block = block;
	cache->slots = (struct sc_reader *)p;
	cache->max_readers = max_readers;
	for (unsigned i = 0; i < max_readers; i++) {
		atomic_init(&cache->slots[i].pin, SC_PIN_NONE);
		cache->slots[i].cache = cache;
		cache->slots[i].map = cache->map;
		cache->slots[i].number = SC_PIN_NONE;
	}
	atomic_init(&cache->slots_high, 0);
	int rc = pthread_mutex_init(&cache->slots_lock, NULL);
	if (rc) {
		sc_free(block);
		return sc_error_set(err, rc, "pthread_mutex_init failed: %s",
				    sc_strerror(rc));
	}
	rc = pthread_key_create(&cache->exit_key, reader_thread_exit);
	if (rc) {
		pthread_mutex_destroy(&cache->slots_lock);
		sc_free(block);
		return sc_error_set(err, rc,
				    "pthread_key_create failed (%s); too many "
				    "caches open at once",
				    sc_strerror(rc));
	}
	return SC_OK;
}

void sc_reclaim_fini(sc_cache *cache)
{
	pthread_key_delete(cache->exit_key);
	pthread_mutex_destroy(&cache->slots_lock);
	sc_free(cache->slots_block);
}

/* ==== readers ============================================================= */

/* Arm the calling thread's exit hook for the cache (once per thread). */
static void reader_arm_exit(sc_cache *cache)
{
	if (pthread_getspecific(cache->exit_key) != cache)
		(void)pthread_setspecific(cache->exit_key, cache);
}

/* Make the calling thread the slot's owner (R0 above). */
static void reader_take(struct sc_reader *r)
{
	sc_cache *cache = r->cache;
	pthread_mutex_lock(&cache->slots_lock);
	r->owner = self_number();
	pthread_mutex_unlock(&cache->slots_lock);
	reader_arm_exit(cache);
}

/* Own the slot before touching it: one compare unless the reader comes
 * from another thread. */
static inline void reader_claim(struct sc_reader *r)
{
	if (__builtin_expect(r->owner != self_number(), 0))
		reader_take(r);
}

int sc_reader_open(sc_cache *cache, sc_reader **out, sc_error *err)
{
	if (!cache || !out)
		return sc_error_set(err, SC_EINVAL, "cache or out is NULL");
	*out = NULL;
	pthread_mutex_lock(&cache->slots_lock);
	struct sc_reader *r = NULL;
	for (unsigned i = 0; i < cache->max_readers; i++) {
		if (!cache->slots[i].in_use) {
			r = &cache->slots[i];
			if (i >= atomic_load_explicit(&cache->slots_high,
						      memory_order_relaxed))
				atomic_store_explicit(&cache->slots_high, i + 1,
						      memory_order_release);
			break;
		}
	}
	if (r) {
		r->in_use = true;
		r->owner = self_number();
		reader_unpinned(r);
		atomic_store_explicit(&r->pin, SC_PIN_NONE,
				      memory_order_relaxed);
		atomic_fetch_add_explicit(&cache->readers_open, 1,
					  memory_order_relaxed);
	}
	pthread_mutex_unlock(&cache->slots_lock);
	if (!r)
		return sc_error_set(err, SC_EREADERS,
				    "all %u reader slots are taken; close "
				    "readers or raise max_readers",
				    cache->max_readers);
	reader_arm_exit(cache);
	*out = r;
	return SC_OK;
}

void sc_reader_close(sc_reader *reader)
{
	if (!reader)
		return;
	sc_cache *cache = reader->cache;
	pthread_mutex_lock(&cache->slots_lock);
	reader_unpinned(reader);
	atomic_store_explicit(&reader->pin, SC_PIN_NONE, memory_order_release);
	reader->in_use = false;
	reader->owner = 0;
	atomic_fetch_sub_explicit(&cache->readers_open, 1,
				  memory_order_relaxed);
	pthread_mutex_unlock(&cache->slots_lock);
}

void sc_reader_own(sc_reader *reader)
{
	reader_claim(reader);
}

void sc_reader_disown(sc_reader *reader)
{
	sc_cache *cache = reader->cache;
	pthread_mutex_lock(&cache->slots_lock);
	reader->owner = 0;
	pthread_mutex_unlock(&cache->slots_lock);
}

/* Pin the newest version when it is not the one pinned already (R3..R5
 * above): the slow path, once per version a reader moves to. */
static void reader_repin(struct sc_reader *r, uint64_t n)
{
	sc_cache *cache = r->cache;
	atomic_store_explicit(&r->pin, n, memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);
	const struct sc_version *v =
	    atomic_load_explicit(&cache->current, memory_order_acquire);
	SC_INSIST(v->number >= n);
	r->version = v;
	/* v->number, not n: the version read through is v. The pin n <= it
	 * protects it; the next call sees current_number >= v->number. */
	r->number = v->number;
	r->root = v->root;
}

/* Pin the newest version (R0..R5 above). The fast path reads the slot's
 * line, the cache's read-mostly line and the thread's number, and writes
 * nothing. */
static inline void reader_pin(struct sc_reader *r)
{
	reader_claim(r);
	uint64_t n = atomic_load_explicit(&r->cache->current_number,
					  memory_order_acquire);
	if (__builtin_expect(r->number != n, 0))
		reader_repin(r, n);
}

const sc_entity *sc_reader_get(sc_reader *reader, sc_str id)
{
	reader_pin(reader);
	if (!id.ptr)
		return NULL;
	return sc_hamt_get(reader->map, reader->root, id.ptr, id.len);
}

const sc_entity *sc_reader_get_in(sc_reader *reader, sc_str partition,
				  sc_str id)
{
	if (!partition.len)
		return sc_reader_get(reader, id);
	reader_pin(reader);
	if (!id.ptr)
		return NULL;
	const sc_part_ref *r =
	    sc_parts_find(reader->map, reader->version->parts, partition);
	if (!r)
		return NULL;
	sc_part_touch(r->p, &reader->cache->lru_tick);
	return sc_hamt_get(reader->map, r->root, id.ptr, id.len);
}

const sc_view *sc_reader_begin(sc_reader *reader)
{
	reader_pin(reader);
	return (const sc_view *)reader->version;
}

void sc_reader_end(sc_reader *reader)
{
	reader_claim(reader);
	reader_unpinned(reader);
	atomic_store_explicit(&reader->pin, SC_PIN_NONE, memory_order_release);
}

/* ==== writer side ========================================================= */

uint64_t sc_reclaim_min_pinned(sc_cache *cache)
{
	atomic_thread_fence(memory_order_seq_cst); /* W3 */
	unsigned high =
	    atomic_load_explicit(&cache->slots_high, memory_order_acquire);
	uint64_t min = SC_PIN_NONE;
	for (unsigned i = 0; i < high; i++) {
		uint64_t p = atomic_load_explicit(&cache->slots[i].pin,
						  memory_order_acquire);
		if (p < min)
			min = p;
	}
	return min;
}

void sc_version_free(sc_cache *cache, struct sc_version *v)
{
	sc_hamt_garbage_free(cache->map, v->garbage);
	for (size_t i = 0; i < v->npart_garbage; i++)
		sc_hamt_garbage_free(cache->map, v->part_garbage[i]);
	sc_free(v->part_garbage);
	sc_free(v->parts_replaced);
	/* Evicted trees: no later version shares a node of them. */
	for (size_t i = 0; i < v->nevicted; i++)
		sc_hamt_root_free(cache->map, v->evicted[i]);
	sc_free(v->evicted);
	atomic_store_explicit(
	    &cache->bytes_awaiting,
	    atomic_load_explicit(&cache->bytes_awaiting, memory_order_relaxed) -
		v->garbage_bytes,
	    memory_order_relaxed);
	atomic_store_explicit(
	    &cache->nodes_awaiting,
	    atomic_load_explicit(&cache->nodes_awaiting, memory_order_relaxed) -
		v->garbage_nodes,
	    memory_order_relaxed);
	atomic_store_explicit(
	    &cache->versions_alive,
	    atomic_load_explicit(&cache->versions_alive, memory_order_relaxed) -
		1,
	    memory_order_relaxed);
	sc_free(v);
}

/* Move v's garbage lists onto the chains by[] of the maps they free into
 * (sc_hamt_garbage_sort); returns the nodes and entries of the lanes'. */
static size_t version_sort_garbage(sc_cache *cache, struct sc_version *v,
				   sc_hamt_garbage *by[])
{
	size_t n = sc_hamt_garbage_sort(cache->map, v->garbage, by);
	v->garbage = NULL;
	for (size_t i = 0; i < v->npart_garbage; i++) {
		n += sc_hamt_garbage_sort(cache->map, v->part_garbage[i], by);
		v->part_garbage[i] = NULL;
	}
	return n;
}

size_t sc_reclaim_run(sc_cache *cache)
{
	struct sc_version *cur =
	    atomic_load_explicit(&cache->current, memory_order_relaxed);
	/* While a batch's lanes run the lane maps are theirs: the versions
	 * wait for the next reclaim (cache/cache_lib.h). */
	if (cache->oldest == cur || (cache->batch_open && cache->batch.lanes))
		return 0;
	uint64_t min = sc_reclaim_min_pinned(cache);
	size_t freed = 0;
	/* With apply lanes, the versions' garbage goes by the map it frees
	 * into, and the lanes' chains are freed by the writer and the
	 * workers at once (sc_lanes_free_garbage). */
	bool lanes = cache->nthreads > 1;
	sc_hamt_garbage *by[SC_HAMT_LANES_MAX + 1] = {NULL};
	size_t lane_items = 0;
	while (cache->oldest != cur && cache->oldest->number < min) {
		struct sc_version *v = cache->oldest;
		cache->oldest = v->next;
		if (lanes)
			lane_items += version_sort_garbage(cache, v, by);
		sc_version_free(cache, v);
		freed++;
	}
	if (lanes && freed)
		sc_lanes_free_garbage(cache, by, lane_items);
	return freed;
}

size_t sc_cache_reclaim(sc_cache *cache)
{
	return cache ? sc_reclaim_run(cache) : 0;
}
