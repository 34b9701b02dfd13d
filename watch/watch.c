/*
 * Change feeds (include/statecache/watch.h).
 *
 * ==== The scheme ===========================================================
 *
 * Publication. A cache with watchers carries one hub (hung on it with
 * cache/cache_lib.h at the first sc_watch_open). At the end of every
 * promote the writer bumps the hub's sequence word and, only when a watcher
 * sleeps, wakes them all with one futex call: the same constant work
 * whatever the number of watchers, none of it per watcher.
 *
 *   writer (promote):  publish v            (cache: release stores, fence)
 *                      seq += 1             (seq_cst)
 *                      if waiters: futex_wake(seq, all)
 *
 *   watcher (wait):    waiters += 1         (seq_cst)
 *                      s := seq             (seq_cst)
 *                      if newest <= last delivered: futex_wait(seq, s)
 *                      waiters -= 1
 *
 * No wake-up is lost: if the writer's increment comes after the watcher's
 * read of s, the writer's read of `waiters` (after its increment in the
 * single order of seq_cst operations) sees the watcher, and futex_wait
 * returns at once when seq is no longer s; if it comes before, the watcher
 * read s from it, so the version published before it is visible to the
 * watcher's check of the newest version. A watcher that opens while a
 * promote runs is covered by the fences of sc_cache_hook_install.
 *
 * Delivery. A watcher holds two reader slots: one pins `at`, the last
 * version it delivered; the other pins the newest version while a batch is
 * built, and afterwards the version the batch started from, whose states
 * the batch's `before` pointers name, until the application asks for the
 * next batch. A batch is the diff of `at` and the newest version
 * (sc_view_diff, shared subtrees skipped), filtered, on the watcher's own
 * thread. Holding back: the versions from the oldest one pinned to the
 * newest stay allocated; their bytes are garbage_before(newest) -
 * garbage_before(pinned) (cache/cache_lib.h), checked against the limit
 * each time a batch is built.
 */
#include "statecache/watch.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_lib.h"
#include "common/internal.h"

/* ==== futex =============================================================== */

/* Wait while *word == val, until the absolute CLOCK_MONOTONIC `deadline`
 * (NULL: no limit). Returns false when the deadline passed. */
static bool futex_wait_until(_Atomic uint32_t *word, uint32_t val,
			     const struct timespec *deadline)
{
	long rc = syscall(SYS_futex, (uint32_t *)word,
			  FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, deadline,
			  NULL, FUTEX_BITSET_MATCH_ANY);
	return !(rc == -1 && errno == ETIMEDOUT);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
		INT_MAX, NULL, NULL, 0);
}

/* ==== the hub ============================================================= */

typedef struct watch_hub {
	sc_cache_hook hook; /* first: the cache sees the hub as its hook */
	/* Bumped by every promote; the futex word watchers sleep on. */
	_Atomic uint32_t seq;
	_Atomic uint32_t waiters;
	/* garbage_before of the newest version, for stats from any thread. */
	_Atomic uint64_t newest_garbage;
} watch_hub;

static void hub_promoted(sc_cache_hook *hook, const sc_view *newest)
{
	watch_hub *hub = (watch_hub *)hook;
	atomic_store_explicit(&hub->newest_garbage,
			      sc_view_garbage_before(newest),
			      memory_order_relaxed);
	atomic_fetch_add(&hub->seq, 1);
	if (atomic_load(&hub->waiters))
		futex_wake_all(&hub->seq);
}

static void hub_destroy(sc_cache_hook *hook)
{
	sc_free(hook);
}

/* The cache's hub, hung on it now if it has none. NULL: out of memory. */
static watch_hub *hub_get(sc_cache *cache)
{
	watch_hub *hub = sc_calloc(1, sizeof *hub);
	if (!hub)
		return NULL;
	hub->hook.promoted = hub_promoted;
	hub->hook.destroy = hub_destroy;
	atomic_init(&hub->seq, 0);
	atomic_init(&hub->waiters, 0);
	atomic_init(&hub->newest_garbage, 0);
	sc_cache_hook *got = sc_cache_hook_install(cache, &hub->hook);
	if (got != &hub->hook) {
		sc_free(hub);
		hub = (watch_hub *)got;
	}
	return hub;
}

/* ==== the watcher ========================================================= */

typedef enum watch_phase {
	PHASE_INITIAL, /* the state of `at` as added, then the marker */
	PHASE_LIVE,    /* changes */
	PHASE_RESYNC,  /* over the limit: nothing pinned */
} watch_phase;

/* A growing array of changes. */
typedef struct change_vec {
	sc_watch_change *v;
	size_t n, cap;
} change_vec;

struct sc_watcher {
	sc_cache *cache;
	watch_hub *hub;
	/* Filter (copies of the option strings in one block). */
	char *strings;
	sc_str prefix;
	bool by_partition;
	sc_str partition;
	sc_watch_match_fn match;
	void *match_ctx;
	size_t max_held;
	size_t initial_max;

	/* rd[cur] pins `at`; rd[!cur] pins `prev` when set. */
	sc_reader *rd[2];
	int cur;
	const sc_view *at;
	const sc_view *prev;
	watch_phase phase;
	sc_view_iter it; /* PHASE_INITIAL: over `at` */
	uint64_t reported_version, reported_position;

	/* The batch being built or handed out. */
	sc_watch_batch batch;
	change_vec added, updated, removed;
	sc_str *names;
	size_t nnames, names_cap;

	/* Stats (written by the watcher's thread, read by any). */
	_Atomic uint64_t st_version;
	_Atomic uint64_t st_pinned;
	_Atomic uint64_t st_pinned_garbage;
	_Atomic uint64_t st_batches;
	_Atomic uint64_t st_changes;
	_Atomic bool st_holding;
	_Atomic bool st_resync;
};

static const sc_str default_partition = {"", 0};

static bool str_starts(sc_str s, sc_str prefix)
{
	return s.len >= prefix.len &&
	       (!prefix.len || memcmp(s.ptr, prefix.ptr, prefix.len) == 0);
}

static bool watch_matches(const sc_watcher *w, const sc_entity *e)
{
	if (!e)
		return false;
	if (w->prefix.len && !str_starts(sc_entity_id(e), w->prefix))
		return false;
	if (w->by_partition) {
		sc_str p = sc_entity_partition(e);
		if (p.len != w->partition.len ||
		    (p.len && memcmp(p.ptr, w->partition.ptr, p.len) != 0))
			return false;
	}
	return !w->match || w->match(w->match_ctx, e);
}

/* Record which version the watcher pins oldest, for stats. */
static void note_pins(sc_watcher *w)
{
	const sc_view *oldest = w->prev ? w->prev : w->at;
	atomic_store_explicit(&w->st_pinned, sc_view_version(oldest),
			      memory_order_relaxed);
	atomic_store_explicit(&w->st_pinned_garbage,
			      sc_view_garbage_before(oldest),
			      memory_order_relaxed);
}

int sc_watch_open(sc_cache *cache, const sc_watch_options *opt,
		  sc_watcher **out, sc_error *err)
{
	if (!cache || !out)
		return sc_error_set(err, SC_EINVAL, "cache or out is NULL");
	*out = NULL;
	sc_watch_options o = {0};
	if (opt)
		o = *opt;
	if ((!o.prefix.ptr && o.prefix.len) ||
	    (!o.partition.ptr && o.partition.len))
		return sc_error_set(
		    err, SC_EINVAL,
		    "watch %s has a NULL pointer and length %zu",
		    o.prefix.len ? "prefix" : "partition",
		    o.prefix.len ? o.prefix.len : o.partition.len);
	if (o.start != SC_WATCH_START_NOW && o.start != SC_WATCH_START_INITIAL)
		return sc_error_set(err, SC_EINVAL,
				    "unknown watch start %d; use "
				    "SC_WATCH_START_NOW or _INITIAL",
				    (int)o.start);
	sc_watcher *w = sc_calloc(1, sizeof *w);
	size_t slen = o.prefix.len + o.partition.len;
	char *strings = sc_malloc(slen + 1);
	watch_hub *hub = w && strings ? hub_get(cache) : NULL;
	if (!hub) {
		sc_free(w);
		sc_free(strings);
		return sc_error_set(err, ENOMEM, "out of memory for a watcher");
	}
	if (o.prefix.len)
		memcpy(strings, o.prefix.ptr, o.prefix.len);
	if (o.partition.len)
		memcpy(strings + o.prefix.len, o.partition.ptr,
		       o.partition.len);
	strings[slen] = '\0';
	w->cache = cache;
	w->hub = hub;
	w->strings = strings;
	w->prefix = (sc_str){strings, o.prefix.len};
	w->by_partition = o.by_partition;
	w->partition = (sc_str){strings + o.prefix.len, o.partition.len};
	w->match = o.match;
	w->match_ctx = o.match_ctx;
	w->max_held =
	    o.max_held_bytes ? o.max_held_bytes : SC_WATCH_HELD_DEFAULT;
	w->initial_max = o.initial_batch_max ? o.initial_batch_max
					     : SC_WATCH_INITIAL_BATCH_DEFAULT;
	for (int i = 0; i < 2; i++) {
		int rc = sc_reader_open(cache, &w->rd[i], err);
		if (rc) {
			sc_reader_close(w->rd[0]);
			sc_free(strings);
			sc_free(w);
			if (rc == SC_EREADERS)
				return sc_error_set(
				    err, rc,
				    "a watcher needs two free reader slots and "
				    "the cache has fewer; close readers or "
				    "watchers, or raise max_readers");
			return rc;
		}
	}
	w->cur = 0;
	w->at = sc_reader_begin(w->rd[0]);
	if (o.start == SC_WATCH_START_INITIAL) {
		w->phase = PHASE_INITIAL;
		/* A watcher of one partition walks that partition only. */
		if (w->by_partition)
			sc_view_iter_init_in(w->at, w->partition, &w->it);
		else
			sc_view_iter_init_all(w->at, &w->it);
	} else {
		w->phase = PHASE_LIVE;
		w->reported_version = sc_view_version(w->at);
		w->reported_position = sc_view_position(w->at);
	}
	atomic_init(&w->st_version, w->reported_version);
	atomic_init(&w->st_pinned, 0);
	atomic_init(&w->st_pinned_garbage, 0);
	atomic_init(&w->st_batches, 0);
	atomic_init(&w->st_changes, 0);
	atomic_init(&w->st_holding, true);
	atomic_init(&w->st_resync, false);
	note_pins(w);
	/* Any thread may call sc_watch_next first: until one does, no
	 * thread's exit releases the pins. */
	sc_reader_disown(w->rd[0]);
	sc_reader_disown(w->rd[1]);
	*out = w;
	return SC_OK;
}

void sc_watch_close(sc_watcher *w)
{
	if (!w)
		return;
	sc_reader_close(w->rd[0]);
	sc_reader_close(w->rd[1]);
	sc_free(w->added.v);
	sc_free(w->updated.v);
	sc_free(w->removed.v);
	sc_free(w->names);
	sc_free(w->strings);
	sc_free(w);
}

/* ==== building a batch ==================================================== */

static void batch_reset(sc_watcher *w)
{
	w->added.n = w->updated.n = w->removed.n = 0;
	w->nnames = 0;
}

/* Room for one more change: false when out of memory. */
static bool change_reserve(change_vec *cv)
{
	return cv->n < cv->cap || sc_grow_array((void **)&cv->v, &cv->cap,
						cv->n + 1, sizeof *cv->v) == 0;
}

static sc_watch_change *change_push(change_vec *cv)
{
	if (!change_reserve(cv))
		return NULL;
	sc_watch_change *c = &cv->v[cv->n++];
	memset(c, 0, sizeof *c);
	c->partition = default_partition;
	return c;
}

static int name_push(sc_watcher *w, sc_str name)
{
	if (w->nnames == w->names_cap &&
	    sc_grow_array((void **)&w->names, &w->names_cap, w->nnames + 1,
			  sizeof *w->names))
		return ENOMEM;
	w->names[w->nnames++] = name;
	return SC_OK;
}

static int name_cmp(sc_str a, sc_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	if (c)
		return c;
	return (a.len > b.len) - (a.len < b.len);
}

/* Append to the names the attributes that differ between two states (both
 * sorted by name); *count gets how many. */
static int changed_names(sc_watcher *w, const sc_entity *a, const sc_entity *b,
			 size_t *count)
{
	size_t na = sc_entity_attr_count(a), nb = sc_entity_attr_count(b);
	size_t i = 0, j = 0, start = w->nnames;
	while (i < na || j < nb) {
		sc_attr x = {0}, y = {0};
		int c;
		if (i == na) {
			y = sc_entity_attr(b, j);
			c = 1;
		} else if (j == nb) {
			x = sc_entity_attr(a, i);
			c = -1;
		} else {
			x = sc_entity_attr(a, i);
			y = sc_entity_attr(b, j);
			c = name_cmp(x.name, y.name);
		}
		int rc = SC_OK;
		if (c < 0) {
			rc = name_push(w, x.name);
			i++;
		} else if (c > 0) {
			rc = name_push(w, y.name);
			j++;
		} else {
			if (!sc_value_equal(&x.value, &y.value))
				rc = name_push(w, y.name);
			i++;
			j++;
		}
		if (rc)
			return rc;
	}
	*count = w->nnames - start;
	return SC_OK;
}

static int diff_one(void *ctx, sc_diff_kind kind, const sc_entity *old,
		    const sc_entity *new_)
{
	sc_watcher *w = ctx;
	SC_UNUSED(kind);
	bool in_old = watch_matches(w, old), in_new = watch_matches(w, new_);
	sc_watch_change *c;
	if (in_old && in_new) {
		c = change_push(&w->updated);
		if (!c)
			return ENOMEM;
		/* `changed` is set once the names array stops moving. */
		if (changed_names(w, old, new_, &c->nchanged)) {
			w->updated.n--;
			return ENOMEM;
		}
	} else if (in_new) {
		c = change_push(&w->added);
	} else if (in_old) {
		c = change_push(&w->removed);
	} else {
		return SC_OK;
	}
	if (!c)
		return ENOMEM;
	c->id = sc_entity_id(in_new ? new_ : old);
	c->partition = sc_entity_partition(in_new ? new_ : old);
	c->before = in_old ? old : NULL;
	c->after = in_new ? new_ : NULL;
	return SC_OK;
}

/* Point each update at its names (appended in the order of the updates). */
static void fix_names(sc_watcher *w)
{
	size_t off = 0;
	for (size_t i = 0; i < w->updated.n; i++) {
		sc_watch_change *c = &w->updated.v[i];
		c->changed = c->nchanged ? w->names + off : NULL;
		off += c->nchanged;
	}
	SC_ENSURE(off == w->nnames);
}

static const sc_watch_batch *batch_out(sc_watcher *w, sc_watch_kind kind,
				       uint64_t from_v, uint64_t from_p,
				       const sc_view *to)
{
	sc_watch_batch *b = &w->batch;
	/* Batches tile the version line. */
	SC_REQUIRE(kind == SC_WATCH_INITIAL || kind == SC_WATCH_INITIAL_DONE ||
		   from_v == w->reported_version);
	SC_REQUIRE(from_v <= sc_view_version(to));
	b->kind = kind;
	b->from_version = from_v;
	b->from_position = from_p;
	b->to_version = sc_view_version(to);
	b->to_position = sc_view_position(to);
	b->added = w->added.v;
	b->nadded = w->added.n;
	b->updated = w->updated.v;
	b->nupdated = w->updated.n;
	b->removed = w->removed.v;
	b->nremoved = w->removed.n;
	size_t n = b->nadded + b->nupdated + b->nremoved;
	if (kind != SC_WATCH_HEARTBEAT) {
		atomic_store_explicit(
		    &w->st_batches,
		    atomic_load_explicit(&w->st_batches, memory_order_relaxed) +
			1,
		    memory_order_relaxed);
		atomic_store_explicit(
		    &w->st_changes,
		    atomic_load_explicit(&w->st_changes, memory_order_relaxed) +
			n,
		    memory_order_relaxed);
	}
	if (kind != SC_WATCH_INITIAL) {
		w->reported_version = b->to_version;
		w->reported_position = b->to_position;
		atomic_store_explicit(&w->st_version, b->to_version,
				      memory_order_relaxed);
	}
	return b;
}

/* ==== next ================================================================ */

/* Let go of everything and fail from now on. */
static int resync(sc_watcher *w, uint64_t held, uint64_t newest, sc_error *err)
{
	uint64_t from = sc_view_version(w->at);
	sc_reader_end(w->rd[0]);
	sc_reader_end(w->rd[1]);
	w->at = w->prev = NULL;
	w->phase = PHASE_RESYNC;
	atomic_store_explicit(&w->st_holding, false, memory_order_relaxed);
	atomic_store_explicit(&w->st_resync, true, memory_order_relaxed);
	return sc_error_set(
	    err, SC_ERESYNC,
	    "the watcher is %llu versions behind (from %llu "
	    "to %llu), holding %llu bytes back, over its limit "
	    "of %zu; close it and open a new one with the "
	    "initial state",
	    (unsigned long long)(newest - from), (unsigned long long)from,
	    (unsigned long long)newest, (unsigned long long)held, w->max_held);
}

/* SC_ERESYNC when the versions from `at` to `newest` hold more than the
 * limit. */
static int check_held(sc_watcher *w, const sc_view *newest, sc_error *err)
{
	uint64_t held =
	    sc_view_garbage_before(newest) - sc_view_garbage_before(w->at);
	if (held <= w->max_held)
		return SC_OK;
	return resync(w, held, sc_view_version(newest), err);
}

/* The next part of the initial state, or the marker after it. */
static int next_initial(sc_watcher *w, const sc_watch_batch **out,
			sc_error *err)
{
	const sc_view *newest = sc_reader_begin(w->rd[!w->cur]);
	int rc = check_held(w, newest, err);
	if (rc)
		return rc;
	sc_reader_end(w->rd[!w->cur]);
	/* Room is made before an entity is taken from the iterator, so an
	 * allocation failure loses none. */
	const sc_entity *e;
	while (w->added.n < w->initial_max) {
		if (!change_reserve(&w->added)) {
			if (w->added.n)
				break;
			return sc_error_set(err, ENOMEM,
					    "out of memory for the initial "
					    "state; call again");
		}
		if (!(e = sc_view_iter_next(&w->it)))
			break;
		if (!watch_matches(w, e))
			continue;
		sc_watch_change *c = change_push(&w->added);
		c->id = sc_entity_id(e);
		c->partition = sc_entity_partition(e);
		c->after = e;
	}
	if (w->added.n) {
		*out = batch_out(w, SC_WATCH_INITIAL, 0, 0, w->at);
		return SC_OK;
	}
	w->phase = PHASE_LIVE;
	*out = batch_out(w, SC_WATCH_INITIAL_DONE, sc_view_version(w->at),
			 sc_view_position(w->at), w->at);
	return SC_OK;
}

/* Sleep until a promote after `seen` or the deadline (NULL: none); false
 * when the deadline passed first. */
static bool wait_promote(sc_watcher *w, uint64_t seen,
			 const struct timespec *deadline)
{
	watch_hub *hub = w->hub;
	bool in_time = true;
	atomic_fetch_add(&hub->waiters, 1);
	for (;;) {
		uint32_t s = atomic_load(&hub->seq);
		if (sc_cache_version_newest(w->cache) > seen)
			break;
		if (!futex_wait_until(&hub->seq, s, deadline)) {
			in_time = sc_cache_version_newest(w->cache) > seen;
			break;
		}
	}
	atomic_fetch_sub(&hub->waiters, 1);
	return in_time;
}

int sc_watch_next(sc_watcher *w, int timeout_ms, const sc_watch_batch **out,
		  sc_error *err)
{
	if (!w || !out)
		return sc_error_set(err, SC_EINVAL, "watcher or out is NULL");
	*out = NULL;
	/* The pins are released at the exit of the thread that calls now. */
	sc_reader_own(w->rd[0]);
	sc_reader_own(w->rd[1]);
	if (w->phase == PHASE_RESYNC)
		return sc_error_set(err, SC_ERESYNC,
				    "the watcher fell behind over its limit "
				    "of %zu bytes; close it and open a new one "
				    "with the initial state",
				    w->max_held);
	/* The application is done with the previous batch. */
	batch_reset(w);
	if (w->prev) {
		sc_reader_end(w->rd[!w->cur]);
		w->prev = NULL;
		note_pins(w);
	}
	if (w->phase != PHASE_LIVE)
		return next_initial(w, out, err);

	struct timespec deadline_ts, *deadline = NULL;
	if (timeout_ms >= 0) {
		clock_gettime(CLOCK_MONOTONIC, &deadline_ts);
		deadline_ts.tv_sec += timeout_ms / 1000;
		deadline_ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (deadline_ts.tv_nsec >= 1000000000L) {
			deadline_ts.tv_sec++;
			deadline_ts.tv_nsec -= 1000000000L;
		}
		deadline = &deadline_ts;
	}
	for (;;) {
		SC_INSIST(w->at && !w->prev);
		uint64_t at_v = sc_view_version(w->at);
		if (sc_cache_version_newest(w->cache) > at_v) {
			const sc_view *nv = sc_reader_begin(w->rd[!w->cur]);
			SC_INSIST(sc_view_version(nv) > at_v);
			int rc = check_held(w, nv, err);
			if (rc)
				return rc;
			rc = sc_view_diff(w->at, nv, diff_one, w);
			if (rc) {
				sc_reader_end(w->rd[!w->cur]);
				batch_reset(w);
				return sc_error_set(err, ENOMEM,
						    "out of memory building a "
						    "batch of changes; call "
						    "again");
			}
			fix_names(w);
			w->prev = w->at;
			w->at = nv;
			w->cur = !w->cur;
			if (w->added.n + w->updated.n + w->removed.n) {
				note_pins(w);
				*out = batch_out(w, SC_WATCH_CHANGES,
						 w->reported_version,
						 w->reported_position, w->at);
				return SC_OK;
			}
			/* Nothing it matches changed: move on silently. */
			sc_reader_end(w->rd[!w->cur]);
			w->prev = NULL;
			note_pins(w);
			continue;
		}
		if (timeout_ms == 0 || !wait_promote(w, at_v, deadline))
			break;
	}
	*out = batch_out(w, SC_WATCH_HEARTBEAT, w->reported_version,
			 w->reported_position, w->at);
	return SC_OK;
}

/* ==== stats =============================================================== */

void sc_watch_stats_get(const sc_watcher *wc, sc_watch_stats *out)
{
	sc_watcher *w = (sc_watcher *)wc;
	memset(out, 0, sizeof *out);
	out->version =
	    atomic_load_explicit(&w->st_version, memory_order_relaxed);
	out->newest = sc_cache_version_newest(w->cache);
	out->max_held_bytes = w->max_held;
	out->batches =
	    atomic_load_explicit(&w->st_batches, memory_order_relaxed);
	out->changes =
	    atomic_load_explicit(&w->st_changes, memory_order_relaxed);
	out->holding =
	    atomic_load_explicit(&w->st_holding, memory_order_relaxed);
	out->resync = atomic_load_explicit(&w->st_resync, memory_order_relaxed);
	if (!out->holding)
		return;
	out->pinned = atomic_load_explicit(&w->st_pinned, memory_order_relaxed);
	out->versions_held =
	    out->newest > out->pinned ? out->newest - out->pinned : 0;
	uint64_t g =
	    atomic_load_explicit(&w->hub->newest_garbage, memory_order_relaxed);
	uint64_t p =
	    atomic_load_explicit(&w->st_pinned_garbage, memory_order_relaxed);
	out->bytes_held = g > p ? (size_t)(g - p) : 0;
}
