/*
 * Residency and the memory budget (sc_store_options.memory_budget).
 *
 * With a budget, a named partition is resident (its tree is in the cache)
 * or cold (its states are only in its checkpoints and the log). Open loads
 * the default partition and the pinned ones and marks every other
 * partition of the catalog cold. Every change of residency happens under
 * write_mu, the store's writer lock, on the cache's pending version, and
 * is promoted at once, as a version of its own:
 *
 *   load   sc_store_get_in / sc_store_partition_make_resident / a pin:
 *          its newest checkpoint that verifies and its tail
 *          (sc_store_partition_load), promoted, then the eviction below
 *          (never of that partition); a checkpoint of a cold partition
 *          loads it for its encoding only (below);
 *   evict  after a load and after every append: while the resident bytes
 *          pass the budget, the least recently used unpinned partitions
 *          (sc_cache_part_coldest) leave the version, all in one promote.
 *          A reader pinning an older version keeps reading them.
 *
 * Appends never load: sc_residency_append_check, before the append's
 * transaction, marks the batch's events of cold partitions, which the
 * transaction writes to the log and the catalog (their partition's tail)
 * but does not apply to the cache (sc_residency_filter gives the cache the
 * others); the next load folds them in from the tail. The state-size limit
 * (SC_STATE_SNAPSHOT_MAX) still holds for them: every partition has a
 * bound on its largest state (exact at its last load or eviction, then
 * grown by a sound increment per event appended while it is cold); while
 * the bound proves that an event fits it is accepted, otherwise its
 * entity's exact state is folded from the log through entity_index
 * (sc_store_entity_at_in at the last committed position, then the batch's
 * earlier events of that entity) and the event applied to it. A partition
 * cold since open gets its bound at its first such append, from the store
 * (bound_from_store: its newest checkpoint's largest chunk and its tail).
 *
 * A cold partition's tail is kept short by the checkpoint thread as for a
 * resident one: sc_checkpoint_take loads the partition through the same
 * load, without marking it used or evicting others
 * (sc_residency_load_quiet), pins the view it encodes, then evicts it
 * again (sc_residency_evict_again): a checkpoint leaves the resident set
 * as it found it.
 *
 * Figures per partition (loads, evictions, a histogram of load times) are
 * kept here under write_mu, in a table keyed by the partition's name.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "snapshot/snapshot.h"

/* Load times: bucket i counts loads of less than 2^i microseconds (the
 * last bucket: the rest). */
#define HIST_BUCKETS 32
/* Partitions sc_cache_part_coldest offers per round. */
#define EVICT_ROUND 64

typedef struct res_part {
	char *name; /* owned; NULL: free slot */
	size_t name_len;
	uint64_t hash;
	uint64_t loads, evictions;
	uint32_t hist[HIST_BUCKETS];
	/* The largest snapshot bytes any of its states may have: exact at
	 * the last load or eviction, then grown by its cold appends. */
	uint64_t bound;
	bool bound_known;
	/* What the current batch's cold events of it add to the bound so
	 * far (valid when batch is the residency's batch count). */
	uint64_t batch_grow;
	uint64_t batch;
} res_part;

struct sc_store_residency {
	res_part *parts;
	size_t cap, n;
	/* The writer's own reader (under write_mu only): LRU touches and
	 * the walks that measure a partition's largest state. */
	sc_reader *reader;
	/* The current batch: which events are of cold partitions, and the
	 * others, for the cache (under write_mu). */
	bool *cold;
	uint64_t batch; /* checks of a batch so far (batch_grow) */
	sc_event *apply;
	size_t *apply_idx;
	size_t cap_batch, napply;
	bool any_cold;
	/* Events appended and loaded since the store's mapped pages were
	 * last released (release_map). */
	uint64_t since_release;
	/* Totals. */
	_Atomic uint64_t loads, evictions;
	uint32_t hist[HIST_BUCKETS];
};

static bool name_eq(const res_part *p, sc_str s)
{
	return p->name_len == s.len &&
	       (!s.len || memcmp(p->name, s.ptr, s.len) == 0);
}

static res_part *slot_of(res_part *parts, size_t cap, uint64_t h, sc_str name)
{
	size_t i = (size_t)h & (cap - 1);
	while (parts[i].name &&
	       (parts[i].hash != h || !name_eq(&parts[i], name)))
		i = (i + 1) & (cap - 1);
	return &parts[i];
}

/* The record of `name`, made when `create` (NULL: none, or ENOMEM). */
static res_part *part_get(struct sc_store_residency *r, sc_str name,
			  bool create)
{
	uint64_t h = XXH3_64bits(name.ptr, name.len);
	if (r->cap) {
		res_part *p = slot_of(r->parts, r->cap, h, name);
		if (p->name || !create)
			return p->name ? p : NULL;
	}
	if (!create)
		return NULL;
	if ((r->n + 1) * 2 > r->cap) {
		size_t nc = r->cap ? r->cap * 2 : 64;
		res_part *np = sc_calloc(nc, sizeof *np);
		if (!np)
			return NULL;
		for (size_t i = 0; i < r->cap; i++)
			if (r->parts[i].name)
				*slot_of(np, nc, r->parts[i].hash,
					 (sc_str){r->parts[i].name,
						  r->parts[i].name_len}) =
				    r->parts[i];
		sc_free(r->parts);
		r->parts = np;
		r->cap = nc;
	}
	res_part *p = slot_of(r->parts, r->cap, h, name);
	p->name = sc_malloc(name.len + 1);
	if (!p->name)
		return NULL;
	if (name.len)
		memcpy(p->name, name.ptr, name.len);
	p->name[name.len] = '\0';
	p->name_len = name.len;
	p->hash = h;
	r->n++;
	return p;
}

static unsigned hist_bucket(double seconds)
{
	double us = seconds * 1e6;
	unsigned b = 0;
	while (b + 1 < HIST_BUCKETS && us >= (double)(1ull << b))
		b++;
	return b;
}

/* The upper bound, in seconds, of the bucket holding the q-quantile. */
static double hist_quantile(const uint32_t *h, double q)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += h[i];
	if (!total)
		return 0;
	uint64_t want = (uint64_t)(q * (double)total);
	if (want < 1)
		want = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h[i];
		if (seen >= want)
			return (double)(1ull << i) / 1e6;
	}
	return (double)(1ull << (HIST_BUCKETS - 1)) / 1e6;
}

/* The largest snapshot bytes of a state of `partition` in the newest
 * version. Under write_mu. */
static uint64_t largest_state(sc_store *store, sc_str partition)
{
	struct sc_store_residency *r = store->res;
	if (!r->reader)
		return SC_STATE_SNAPSHOT_MAX;
	const sc_view *view = sc_reader_begin(r->reader);
	sc_view_iter it;
	sc_view_iter_init_in(view, partition, &it);
	uint64_t max = 0;
	for (const sc_entity *e; (e = sc_view_iter_next(&it));) {
		uint64_t b = sc_entity_snapshot_bytes(e);
		if (b > max)
			max = b;
	}
	sc_reader_end(r->reader);
	return max;
}

/* Mark `partition` used now (an LRU touch through the writer's reader). */
static void touch(sc_store *store, sc_str partition)
{
	struct sc_store_residency *r = store->res;
	if (!r->reader)
		return;
	sc_cache_lru_advance(store->cache);
	const sc_view *view = sc_reader_begin(r->reader);
	(void)sc_view_get_in(view, partition, (sc_str){"", 0});
	sc_reader_end(r->reader);
}

static int cmp_name(sc_str a, sc_str b)
{
	size_t m = a.len < b.len ? a.len : b.len;
	int c = m ? memcmp(a.ptr, b.ptr, m) : 0;
	if (c)
		return c;
	return a.len < b.len ? -1 : a.len > b.len;
}

/* The figures of `name` in list[0..n) (the default partition first, then
 * name order), or NULL. */
static const sc_cache_part_info *info_find(const sc_cache_part_info *list,
					   size_t n, sc_str name)
{
	if (!name.len)
		return n && !list[0].name.len ? &list[0] : NULL;
	size_t lo = n && !list[0].name.len ? 1 : 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_name(list[mid].name, name);
		if (!c)
			return &list[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The figures of every partition the cache knows (sc_free'd). Under
 * write_mu. */
static int part_list(sc_store *store, sc_cache_part_info **out, size_t *n,
		     sc_error *err)
{
	size_t cnt = sc_cache_part_list(store->cache, NULL, 0);
	sc_cache_part_info *list = sc_malloc((cnt ? cnt : 1) * sizeof *list);
	if (!list)
		return sc_error_set(
		    err, ENOMEM, "out of memory listing %zu partitions", cnt);
	*n = sc_cache_part_list(store->cache, list, cnt);
	if (*n > cnt)
		*n = cnt;
	*out = list;
	return 0;
}

/* Evict `name` (resident, unpinned) in the pending version, keeping its
 * exact bound for its cold appends. */
static int evict_mark(sc_store *store, sc_str name, sc_error *err)
{
	res_part *p = part_get(store->res, name, true);
	if (!p)
		return sc_error_set(err, ENOMEM,
				    "out of memory evicting a partition");
	uint64_t big = largest_state(store, name);
	int rc = sc_cache_part_evict(store->cache, name, err);
	if (rc)
		return rc;
	p->bound = big;
	p->bound_known = true;
	p->evictions++;
	return 0;
}

int sc_residency_evict(sc_store *store, sc_str keep, sc_error *err)
{
	struct sc_store_residency *r = store->res;
	size_t budget = store->opt.memory_budget;
	if (!r || !budget)
		return 0;
	size_t total = sc_cache_resident_bytes(store->cache);
	if (total <= budget)
		return 0;
	sc_cache_part_info *list;
	size_t nlist;
	int rc = part_list(store, &list, &nlist, err);
	if (rc)
		return rc;
	sc_str names[EVICT_ROUND];
	size_t evicted = 0;
	while (!rc && total > budget) {
		size_t k =
		    sc_cache_part_coldest(store->cache, names, EVICT_ROUND);
		size_t round = 0;
		for (size_t i = 0; i < k && total > budget; i++) {
			if (keep.len && !cmp_name(names[i], keep))
				continue;
			const sc_cache_part_info *pi =
			    info_find(list, nlist, names[i]);
			rc = evict_mark(store, names[i], err);
			if (rc)
				break;
			size_t b = pi ? pi->bytes : 0;
			total = b < total ? total - b : 0;
			round++;
		}
		evicted += round;
		if (!round)
			break;
	}
	sc_free(list);
	if (rc) {
		sc_cache_discard(store->cache);
		return rc;
	}
	if (!evicted)
		return 0;
	sc_killpoint("residency_evict_before_promote");
	rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		return sc_error_set(err, rc,
				    "promoting the eviction of %zu partitions "
				    "failed (%s)",
				    evicted, sc_strerror(rc));
	}
	atomic_fetch_add(&r->evictions, evicted);
	return 0;
}

/* Load `partition` (cold) and promote it; figures and bound. */
/* Appended and loaded events between two releases of the mapped pages. */
#define RELEASE_EVERY 16384

/*
 * Release every page of the store's file this process has mapped
 * (madvise MADV_DONTNEED: the pages stay in the page cache and a later
 * read maps them again). An append reads the pages of the B-trees it
 * writes into, and a sweep over cold partitions the pages of their
 * indexes: under a memory budget the process would otherwise keep, in its
 * resident set, every page it ever read, however small its state. Done
 * once every RELEASE_EVERY events appended or loaded, under write_mu;
 * readers of other threads that are in the middle of a read map the pages
 * they need again (the data are the same).
 */
static void release_map(sc_store *store, uint64_t events)
{
	struct sc_store_residency *r = store->res;
	r->since_release += events;
	if (r->since_release < RELEASE_EVERY)
		return;
	r->since_release = 0;
	sc_store_release_map(store);
}

static int load_one(sc_store *store, sc_str partition, uint64_t *replayed,
		    sc_error *err)
{
	struct sc_store_residency *r = store->res;
	res_part *p = part_get(r, partition, true);
	if (!p)
		return sc_error_set(err, ENOMEM,
				    "out of memory loading a partition");
	double secs = 0;
	uint64_t events = 0;
	int rc = sc_store_partition_load(store, partition, &events, &secs, err);
	if (replayed)
		*replayed = events;
	if (rc)
		return rc;
	sc_killpoint("residency_load_before_promote");
	rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		return sc_error_set(err, rc,
				    "promoting a loaded partition failed (%s)",
				    sc_strerror(rc));
	}
	/* The entities it restored count as events read. */
	size_t entities = 0;
	if (r->reader) {
		entities =
		    sc_view_len_in(sc_reader_begin(r->reader), partition);
		sc_reader_end(r->reader);
	}
	release_map(store, events + entities + 1);
	p->loads++;
	unsigned b = hist_bucket(secs);
	p->hist[b]++;
	r->hist[b]++;
	atomic_fetch_add(&r->loads, 1);
	p->bound = largest_state(store, partition);
	p->bound_known = true;
	return 0;
}

/* Load `partition` if it is cold (*loaded says whether it was). *managed
 * is false, and nothing done, for the default partition or a store
 * without a memory budget. Errors: SC_ESTATE (the state is behind the
 * log), those of load_one. */
static int load_cold(sc_store *store, sc_str partition, bool *managed,
		     bool *loaded, sc_error *err)
{
	*loaded = false;
	*managed = partition.len && store->res;
	if (!*managed)
		return 0;
	if (store->stale)
		return sc_error_set(err, SC_ESTATE,
				    "the store's state is behind its log; "
				    "reopen it");
	if (sc_cache_part_residency(store->cache, partition) !=
	    SC_RESIDENCY_COLD)
		return 0;
	int rc = load_one(store, partition, NULL, err);
	*loaded = rc == 0;
	return rc;
}

int sc_residency_load_quiet(sc_store *store, sc_str partition, bool *loaded,
			    sc_error *err)
{
	bool managed;
	return load_cold(store, partition, &managed, loaded, err);
}

void sc_residency_evict_again(sc_store *store, sc_str partition)
{
	sc_error e;
	sc_error_clear(&e);
	int rc = evict_mark(store, partition, &e);
	if (!rc) {
		sc_killpoint("residency_evict_before_promote");
		rc = sc_cache_promote(store->cache);
		if (rc)
			sc_error_set(&e, rc, "promoting it failed (%s)",
				     sc_strerror(rc));
	}
	if (rc) {
		sc_cache_discard(store->cache);
		sc_store_warn(store,
			      "evicting partition '%.*s' again after its "
			      "checkpoint failed (it stays resident): %s",
			      (int)(partition.len > 64 ? 64 : partition.len),
			      partition.ptr, e.message);
		return;
	}
	atomic_fetch_add(&store->res->evictions, 1);
}

int sc_residency_ensure(sc_store *store, sc_str partition, sc_error *err)
{
	bool managed, loaded;
	int rc = load_cold(store, partition, &managed, &loaded, err);
	if (rc || !managed)
		return rc;
	touch(store, partition);
	sc_error e;
	sc_error_clear(&e);
	if (sc_residency_evict(store, partition, &e))
		sc_store_warn(store,
			      "evicting partitions to stay within the memory "
			      "budget failed (they stay resident): %s",
			      e.message);
	return 0;
}

/* ---- open and close ------------------------------------------------------
 */

typedef struct name_list {
	char **names;
	size_t *lens;
	size_t n, cap;
	uint64_t events_default;
} name_list;

static int collect_name(void *ctx, const sc_partition_info *p)
{
	name_list *l = ctx;
	if (!p->name.len)
		return 0;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		char **nn = sc_realloc(l->names, nc * sizeof *nn);
		if (!nn)
			return ENOMEM;
		l->names = nn;
		size_t *nl = sc_realloc(l->lens, nc * sizeof *nl);
		if (!nl)
			return ENOMEM;
		l->lens = nl;
		l->cap = nc;
	}
	char *c = sc_malloc(p->name.len + 1);
	if (!c)
		return ENOMEM;
	memcpy(c, p->name.ptr, p->name.len);
	l->names[l->n] = c;
	l->lens[l->n++] = p->name.len;
	return 0;
}

static void name_list_free(name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		sc_free(l->names[i]);
	sc_free(l->names);
	sc_free(l->lens);
}

static bool is_pinned(const sc_store_options *o, sc_str name)
{
	for (size_t i = 0; i < o->npinned; i++)
		if (!cmp_name(o->pinned[i], name))
			return true;
	return false;
}

int sc_residency_open(sc_store *store, bool *used, sc_error *err)
{
	*used = false;
	const sc_store_options *o = &store->opt;
	if (o->read_only)
		return 0;
	for (size_t i = 0; i < o->npinned; i++)
		if (!o->pinned[i].len ||
		    o->pinned[i].len > SC_EVENT_FIELD_MAX || !o->pinned[i].ptr)
			return sc_error_set(err, SC_EINVAL,
					    "pinned partition %zu is empty or "
					    "longer than %u bytes (the default "
					    "partition is always resident)",
					    i, (unsigned)SC_EVENT_FIELD_MAX);
	struct sc_store_residency *r = sc_calloc(1, sizeof *r);
	if (!r)
		return sc_error_set(err, ENOMEM,
				    "out of memory opening the store");
	store->res = r;
	/* Only a budget makes partitions cold: without one, no reader slot
	 * is taken from the application. */
	int rc = o->memory_budget
		     ? sc_reader_open(store->cache, &r->reader, err)
		     : 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < o->npinned && !rc; i++)
		rc = sc_cache_part_pin(store->cache, o->pinned[i], true, err);
	if (rc || !o->memory_budget)
		return rc;
	name_list l = {0};
	rc = sc_store_partitions(store, collect_name, &l, err);
	if (rc == ENOMEM)
		rc = sc_error_set(err, ENOMEM,
				  "out of memory listing partitions");
	/* Every partition cold but the pinned ones, in one version. */
	bool any = false;
	for (size_t i = 0; !rc && i < l.n; i++) {
		sc_str p = {l.names[i], l.lens[i]};
		if (is_pinned(o, p))
			continue;
		rc = sc_cache_part_evict(store->cache, p, err);
		any = true;
	}
	if (!rc && any)
		rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		name_list_free(&l);
		return rc;
	}
	uint64_t got = 0;
	store->open_replayed = 0;
	rc = load_one(store, (sc_str){"", 0}, &got, err);
	store->open_replayed += got;
	for (size_t i = 0; !rc && i < l.n; i++) {
		sc_str p = {l.names[i], l.lens[i]};
		if (!is_pinned(o, p))
			continue;
		rc = load_one(store, p, &got, err);
		store->open_replayed += got;
	}
	name_list_free(&l);
	if (rc)
		return rc;
	rc = sc_checkpoints_restored(store, err);
	if (rc)
		return rc;
	*used = true;
	return 0;
}

void sc_residency_close(sc_store *store)
{
	struct sc_store_residency *r = store->res;
	if (!r)
		return;
	sc_reader_close(r->reader);
	for (size_t i = 0; i < r->cap; i++)
		sc_free(r->parts[i].name);
	sc_free(r->parts);
	sc_free(r->cold);
	sc_free(r->apply);
	sc_free(r->apply_idx);
	sc_free(r);
	store->res = NULL;
}

/* ---- appends ------------------------------------------------------------- */

/* A sound bound on how much one event can grow a state's snapshot bytes:
 * each attribute's name and value come from the event, with at most a
 * few dozen bytes of framing each; updated_by is at most the event. */
static uint64_t grow_bound(const sc_event *ev)
{
	return 2 * (uint64_t)sc_event_encoded_size(ev) +
	       48 * (uint64_t)ev->nattrs + 256;
}

static bool same_entity(const sc_event *a, const sc_event *b)
{
	return a->partition.len == b->partition.len &&
	       a->entity.len == b->entity.len &&
	       (!a->partition.len || memcmp(a->partition.ptr, b->partition.ptr,
					    a->partition.len) == 0) &&
	       memcmp(a->entity.ptr, b->entity.ptr, a->entity.len) == 0;
}

/* ---- a cold partition's bound, from the store --------------------------- */

/* Grow the bound by an event of the partition. */
static int bound_add(void *ctx, const sc_event *ev)
{
	*(uint64_t *)ctx += grow_bound(ev);
	return 0;
}

/*
 * A bound on the largest state of `partition` as of the last commit,
 * without loading it: the largest chunk of its newest checkpoint (a chunk
 * holds every state it encodes whole, so none is larger), plus the growth
 * bound of each of its events after that checkpoint (all of them without
 * a checkpoint, or when its header does not decode). Read once per
 * partition cold since open; one walk of its tail.
 */
static int bound_from_store(sc_store *store, sc_str partition, uint64_t *out,
			    sc_error *err)
{
	sc_partition_info pi;
	int rc = sc_store_partition_info(store, partition, &pi, err);
	if (rc == SC_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc)
		return rc;
	MDB_txn *txn;
	rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint64_t bound = 0;
	uint64_t base = pi.checkpoint_position;
	if (base) {
		uint8_t kb[SC_PART_KEY_LEN + 12];
		sc_part_key(kb, partition);
		sc_be64_put(kb + SC_PART_KEY_LEN, base);
		sc_be32_put(kb + SC_PART_KEY_LEN + 8, 0);
		MDB_val k = {sizeof kb, kb}, v;
		sc_snapshot_header h;
		sc_error e;
		if (mdb_get(txn, store->dbi_checkpoints, &k, &v) == 0 &&
		    sc_snapshot_header_decode(v.mv_data, v.mv_size, &h, &e) ==
			0) {
			for (uint32_t i = 0; i < h.chunk_count; i++)
				if (h.chunk_raw_sizes[i] > bound)
					bound = h.chunk_raw_sizes[i];
			sc_snapshot_header_clear(&h);
		} else {
			base = 0;
		}
	}
	rc = sc_partition_walk(store, txn, partition, base,
			       atomic_load(&store->last_position), bound_add,
			       &bound, err);
	sc_store_read_end(store, txn);
	if (!rc)
		*out = bound;
	return rc;
}

/* The exact check of event i of a cold partition: fold its entity as of
 * the last commit, then the batch's earlier events of it, then it. */
static int exact_check(sc_store *store, const sc_event *evs, size_t i,
		       sc_error *err)
{
	const sc_event *ev = &evs[i];
	sc_entity *cur = NULL;
	sc_error e;
	sc_error_clear(&e);
	int rc =
	    sc_store_entity_at_in(store, ev->partition, ev->entity,
				  atomic_load(&store->last_position), &cur, &e);
	if (rc == SC_NOTFOUND) {
		cur = NULL;
		rc = 0;
	}
	if (rc)
		return sc_error_set(err, rc, "%s", e.message);
	for (size_t j = 0; j <= i && !rc; j++) {
		if (!store->res->cold[j] || !same_entity(&evs[j], ev))
			continue;
		sc_entity *next = NULL;
		rc = sc_entity_apply_valid(cur, &evs[j], &next, &e);
		if (!rc) {
			sc_entity_free(cur);
			cur = next;
		}
	}
	sc_entity_free(cur);
	if (rc)
		return sc_error_set(err, rc, "%s", e.message);
	return 0;
}

int sc_residency_append_check(sc_store *store, const sc_event *evs, size_t n,
			      const size_t *ends, size_t nparts, sc_error *err)
{
	struct sc_store_residency *r = store->res;
	(void)nparts;
	if (!r)
		return 0;
	r->any_cold = false;
	r->napply = n;
	if (!store->opt.memory_budget)
		return 0;
	if (n > r->cap_batch) {
		size_t cap = r->cap_batch ? r->cap_batch : 64;
		while (cap < n)
			cap *= 2;
		bool *c = sc_realloc(r->cold, cap * sizeof *c);
		if (c)
			r->cold = c;
		sc_event *a = c ? sc_realloc(r->apply, cap * sizeof *a) : NULL;
		if (a)
			r->apply = a;
		size_t *x =
		    a ? sc_realloc(r->apply_idx, cap * sizeof *x) : NULL;
		if (x)
			r->apply_idx = x;
		if (!x)
			return sc_error_set(err, ENOMEM,
					    "out of memory for a batch of %zu "
					    "events",
					    n);
		r->cap_batch = cap;
	}
	size_t napply = 0, part = 0, part_start = 0;
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = &evs[i];
		r->cold[i] =
		    ev->partition.len &&
		    sc_cache_part_residency(store->cache, ev->partition) ==
			SC_RESIDENCY_COLD;
		if (!r->cold[i]) {
			r->apply[napply] = *ev;
			r->apply_idx[napply++] = i;
			continue;
		}
		r->any_cold = true;
	}
	r->napply = napply;
	if (!r->any_cold)
		return 0;
	/* The state-size limit of the cold events: the partition's bound
	 * with the batch's earlier cold events of it, else the exact
	 * state. */
	r->batch++;
	for (size_t i = 0; i < n; i++) {
		while (i >= ends[part])
			part_start = ends[part++];
		if (!r->cold[i])
			continue;
		res_part *p = part_get(r, evs[i].partition, true);
		if (p) {
			/* The batch's cold events of the partition up to
			 * this one, summed as they come: one pass. */
			if (p->batch != r->batch) {
				p->batch = r->batch;
				p->batch_grow = 0;
			}
			p->batch_grow += grow_bound(&evs[i]);
		}
		if (evs[i].type == SC_EVENT_DELETE)
			continue;
		if (p && !p->bound_known) {
			/* Cold since open: its bound from its newest
			 * checkpoint and its tail, once. */
			sc_error e;
			sc_error_clear(&e);
			uint64_t b;
			if (!bound_from_store(store, evs[i].partition, &b,
					      &e)) {
				p->bound = b;
				p->bound_known = true;
			}
		}
		bool fits = false;
		if (p && p->bound_known)
			fits =
			    p->bound + p->batch_grow <= SC_STATE_SNAPSHOT_MAX;
		if (fits)
			continue;
		sc_error e;
		sc_error_clear(&e);
		int rc = exact_check(store, evs, i, &e);
		if (rc)
			return sc_error_set(
			    err, rc, "event %zu (position %llu): %s",
			    i - part_start, (unsigned long long)evs[i].position,
			    e.message);
	}
	return 0;
}

bool sc_residency_filter(sc_store *store, const sc_event **evs, size_t *n,
			 const size_t **idx)
{
	struct sc_store_residency *r = store->res;
	*idx = NULL;
	if (!r || !r->any_cold)
		return false;
	*evs = r->apply;
	*n = r->napply;
	*idx = r->apply_idx;
	return true;
}

void sc_residency_append_done(sc_store *store, const sc_event *evs, size_t n)
{
	struct sc_store_residency *r = store->res;
	if (!r || !store->opt.memory_budget)
		return;
	if (r->any_cold) {
		for (size_t i = 0; i < n; i++) {
			if (!r->cold[i])
				continue;
			res_part *p = part_get(r, evs[i].partition, false);
			if (p && p->bound_known)
				p->bound += grow_bound(&evs[i]);
		}
		r->any_cold = false;
	}
	release_map(store, n);
	sc_error e;
	sc_error_clear(&e);
	if (sc_residency_evict(store, (sc_str){"", 0}, &e))
		sc_store_warn(store,
			      "evicting partitions to stay within the memory "
			      "budget failed (they stay resident): %s",
			      e.message);
}

/* ---- the public calls ---------------------------------------------------- */

int sc_store_begin_in(sc_store *store, sc_reader *reader, sc_str partition,
		      const sc_view **view, sc_error *err)
{
	sc_error_clear(err);
	int rc =
	    sc_store_partition_arg(store, partition, "sc_store_begin_in", err);
	if (rc)
		return rc;
	if (!reader || !view)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_begin_in needs a reader and an "
				    "out pointer");
	const sc_view *v = sc_reader_begin(reader);
	if (partition.len &&
	    sc_view_residency(v, partition) == SC_RESIDENCY_COLD) {
		sc_reader_end(reader);
		pthread_mutex_lock(&store->write_mu);
		rc = sc_residency_ensure(store, partition, err);
		/* Pinned before another load can evict it again. */
		v = rc ? NULL : sc_reader_begin(reader);
		pthread_mutex_unlock(&store->write_mu);
	}
	*view = v;
	return rc;
}

int sc_store_get_in(sc_store *store, sc_reader *reader, sc_str partition,
		    sc_str id, const sc_entity **out, sc_error *err)
{
	sc_error_clear(err);
	if (!out || (id.len && !id.ptr))
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_get_in needs an id and an out "
				    "pointer");
	*out = NULL;
	int rc =
	    sc_store_partition_arg(store, partition, "sc_store_get_in", err);
	if (rc)
		return rc;
	if (!reader)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_get_in needs a reader");
	/* A state found is resident: one lookup, as sc_reader_get_in. */
	const sc_view *view = sc_reader_begin(reader);
	*out = sc_view_get_in(view, partition, id);
	if (*out)
		return 0;
	if (partition.len &&
	    sc_view_residency(view, partition) == SC_RESIDENCY_COLD) {
		rc = sc_store_begin_in(store, reader, partition, &view, err);
		if (rc)
			return rc;
		*out = sc_view_get_in(view, partition, id);
	}
	return *out ? 0 : SC_NOTFOUND;
}

int sc_store_partition_make_resident(sc_store *store, sc_str partition,
				     sc_error *err)
{
	sc_error_clear(err);
	int rc = sc_store_partition_arg(
	    store, partition, "sc_store_partition_make_resident", err);
	if (rc || !partition.len || !store->res)
		return rc;
	pthread_mutex_lock(&store->write_mu);
	rc = sc_residency_ensure(store, partition, err);
	pthread_mutex_unlock(&store->write_mu);
	return rc;
}

int sc_store_partition_pin(sc_store *store, sc_str partition, bool pinned,
			   sc_error *err)
{
	sc_error_clear(err);
	int rc = sc_store_partition_arg(store, partition,
					"sc_store_partition_pin", err);
	if (rc)
		return rc;
	if (!partition.len)
		return sc_error_set(err, SC_EINVAL,
				    "the default partition is always "
				    "resident: it needs no pin");
	if (!store->res)
		return 0; /* read-only: every partition is resident */
	pthread_mutex_lock(&store->write_mu);
	if (pinned)
		rc = sc_residency_ensure(store, partition, err);
	if (!rc)
		rc = sc_cache_part_pin(store->cache, partition, pinned, err);
	if (!rc && !pinned) {
		sc_error e;
		sc_error_clear(&e);
		if (sc_residency_evict(store, (sc_str){"", 0}, &e))
			sc_store_warn(store,
				      "evicting partitions to stay within the "
				      "memory budget failed: %s",
				      e.message);
	}
	pthread_mutex_unlock(&store->write_mu);
	return rc;
}

/* ---- figures ------------------------------------------------------------- */

void sc_residency_stats(sc_store *store, sc_store_stats *out)
{
	struct sc_store_residency *r = store->res;
	out->memory_budget = store->opt.memory_budget;
	out->resident_bytes = sc_cache_resident_bytes(store->cache);
	/* The cache's writer: the follower in a read-only store, else the
	 * holder of write_mu. */
	pthread_mutex_t *mu =
	    r ? &store->write_mu : sc_store_follow_mutex(store);
	pthread_mutex_lock(mu);
	size_t n = sc_cache_part_list(store->cache, NULL, 0);
	sc_cache_part_info *list = sc_malloc((n ? n : 1) * sizeof *list);
	if (list) {
		n = sc_cache_part_list(store->cache, list, n);
		for (size_t i = 0; i < n; i++) {
			if (list[i].residency == SC_RESIDENCY_COLD)
				out->partitions_cold++;
			else
				out->partitions_resident++;
		}
		sc_free(list);
	}
	if (r) {
		out->partition_loads = atomic_load(&r->loads);
		out->partition_evictions = atomic_load(&r->evictions);
		out->load_seconds_p50 = hist_quantile(r->hist, 0.50);
		out->load_seconds_p99 = hist_quantile(r->hist, 0.99);
	}
	pthread_mutex_unlock(mu);
}

typedef struct stats_walk {
	sc_store *store;
	sc_cache_part_info *list;
	size_t nlist;
	sc_partition_stats *rows;
	size_t n, cap;
	char *names; /* the rows' names, copied */
	size_t names_len, names_cap;
} stats_walk;

static int stats_row(void *ctx, const sc_partition_info *pi)
{
	stats_walk *w = ctx;
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 64;
		sc_partition_stats *nr = sc_realloc(w->rows, nc * sizeof *nr);
		if (!nr)
			return ENOMEM;
		w->rows = nr;
		w->cap = nc;
	}
	if (w->names_len + pi->name.len + 1 > w->names_cap) {
		size_t nc = w->names_cap ? w->names_cap * 2 : 4096;
		while (nc < w->names_len + pi->name.len + 1)
			nc *= 2;
		char *nn = sc_realloc(w->names, nc);
		if (!nn)
			return ENOMEM;
		w->names = nn;
		w->names_cap = nc;
	}
	sc_partition_stats *s = &w->rows[w->n++];
	memset(s, 0, sizeof *s);
	if (pi->name.len)
		memcpy(w->names + w->names_len, pi->name.ptr, pi->name.len);
	/* An offset for now: the buffer may move. */
	s->name.ptr = NULL;
	s->name.len = pi->name.len;
	s->loads = w->names_len; /* the offset, replaced below */
	w->names_len += pi->name.len;
	s->last_position = pi->last_position;
	s->events = pi->events;
	s->tail = pi->tail;
	sc_str name = pi->name;
	const sc_cache_part_info *ci = info_find(w->list, w->nlist, name);
	s->resident = !ci || ci->residency != SC_RESIDENCY_COLD;
	if (ci) {
		s->pinned = ci->pinned;
		s->entities = ci->entities;
		s->bytes = ci->bytes;
	}
	uint64_t off = s->loads;
	s->loads = 0;
	struct sc_store_residency *r = w->store->res;
	const res_part *p = r ? part_get(r, name, false) : NULL;
	if (p) {
		s->loads = p->loads;
		s->evictions = p->evictions;
		s->load_seconds_p50 = hist_quantile(p->hist, 0.50);
		s->load_seconds_p99 = hist_quantile(p->hist, 0.99);
	}
	s->name.ptr = (const char *)(uintptr_t)off;
	return 0;
}

int sc_store_partition_stats(sc_store *store, sc_partition_stats_fn fn,
			     void *ctx, sc_error *err)
{
	sc_error_clear(err);
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_partition_stats needs a store "
				    "and a callback");
	stats_walk w = {.store = store};
	pthread_mutex_t *mu =
	    store->res ? &store->write_mu : sc_store_follow_mutex(store);
	pthread_mutex_lock(mu);
	int rc = part_list(store, &w.list, &w.nlist, err);
	if (!rc) {
		rc = sc_store_partitions(store, stats_row, &w, err);
		if (rc == ENOMEM)
			rc = sc_error_set(err, ENOMEM,
					  "out of memory listing partitions");
	}
	pthread_mutex_unlock(mu);
	sc_free(w.list);
	for (size_t i = 0; !rc && i < w.n; i++) {
		w.rows[i].name.ptr =
		    w.names ? w.names + (uintptr_t)w.rows[i].name.ptr : "";
		rc = fn(ctx, &w.rows[i]);
	}
	sc_free(w.rows);
	sc_free(w.names);
	return rc;
}
