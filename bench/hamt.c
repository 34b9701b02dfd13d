/*
 * HAMT benchmark: lookups (hit, miss), building a map in one edit, one
 * version per insert, and memory per entry; measured side by side with
 * GLib's GHashTable and a plain open-addressing table (linear probing,
 * power-of-two capacity, the same XXH3 hash, key pointer + value per slot),
 * the practical floor for a keyed lookup.
 *
 * Workload: N keys "entity-%08d" inserted in shuffled order; lookups use
 * separately allocated copies of the keys in another random order; misses
 * use keys that are not present. Each figure is the best of 3 runs.
 * Output: one JSON object per line.
 *
 *   bench/hamt [N]      (default 1000000)
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "statecache/hamt.h"

#define REPS 3
#define SEED 0x9e3779b97f4a7c15ull

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Memory the process has taken: what malloc handed out (overhead
 * included) plus the slabs the map's pool mapped, by resident pages. */
static size_t memory_in_use(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size = 0, resident = 0;
	if (!f || fscanf(f, "%llu %llu", &size, &resident) != 2) {
		fprintf(stderr, "bench/hamt: cannot read /proc/self/statm\n");
		exit(1);
	}
	fclose(f);
	return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "bench/hamt: out of memory\n");
		exit(1);
	}
	return p;
}

static sc_hamt_key *key_make(const char *prefix, unsigned i)
{
	char buf[64];
	int len = snprintf(buf, sizeof buf, "%s-%08u", prefix, i);
	sc_hamt_key *k = xmalloc(sizeof *k + (size_t)len + 1);
	k->len = (uint32_t)len;
	k->reserved = 0;
	memcpy(k->bytes, buf, (size_t)len + 1);
	return k;
}

static uint64_t rng_state = 42;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void shuffle(sc_hamt_key **a, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rnd() % (i + 1);
		sc_hamt_key *t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

/* ==== peer: open addressing ============================================== */

typedef struct oa_slot {
	const sc_hamt_key *key;
	void *value;
} oa_slot;

typedef struct oa_table {
	oa_slot *slots;
	size_t mask, count;
} oa_table;

static inline uint64_t key_hash(const void *bytes, size_t len)
{
	return XXH3_64bits_withSeed(bytes, len, SEED);
}

static void oa_init(oa_table *t, size_t cap)
{
	t->slots = calloc(cap, sizeof *t->slots);
	if (!t->slots)
		exit(1);
	t->mask = cap - 1;
	t->count = 0;
}

static void oa_put_nogrow(oa_table *t, const sc_hamt_key *k, void *v)
{
	size_t i = key_hash(k->bytes, k->len) & t->mask;
	for (;; i = (i + 1) & t->mask) {
		oa_slot *s = &t->slots[i];
		if (!s->key) {
			s->key = k;
			s->value = v;
			t->count++;
			return;
		}
		if (s->key->len == k->len &&
		    memcmp(s->key->bytes, k->bytes, k->len) == 0) {
			s->value = v;
			return;
		}
	}
}

/* Grows at load 1/2 so probes stay short. */
static void oa_put(oa_table *t, const sc_hamt_key *k, void *v)
{
	if ((t->count + 1) * 2 > t->mask + 1) {
		oa_table n;
		oa_init(&n, 2 * (t->mask + 1));
		for (size_t i = 0; i <= t->mask; i++)
			if (t->slots[i].key)
				oa_put_nogrow(&n, t->slots[i].key,
					      t->slots[i].value);
		free(t->slots);
		*t = n;
	}
	oa_put_nogrow(t, k, v);
}

static void *oa_get(const oa_table *t, const void *bytes, size_t len)
{
	size_t i = key_hash(bytes, len) & t->mask;
	for (;; i = (i + 1) & t->mask) {
		const oa_slot *s = &t->slots[i];
		if (!s->key)
			return NULL;
		if (s->key->len == len &&
		    memcmp(s->key->bytes, bytes, len) == 0)
			return s->value;
	}
}

/* ==== peer: GHashTable on length-prefixed keys ============================ */

static guint gh_hash(gconstpointer p)
{
	const sc_hamt_key *k = p;
	return (guint)key_hash(k->bytes, k->len);
}

static gboolean gh_equal(gconstpointer a, gconstpointer b)
{
	const sc_hamt_key *x = a, *y = b;
	return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0;
}

/* ==== runs ================================================================ */

typedef struct ctx {
	size_t n;
	sc_hamt_key **keys;   /* insertion order */
	sc_hamt_key **probes; /* copies, lookup order */
	sc_hamt_key **misses;
	volatile uintptr_t sink;
} ctx;

static sc_hamt *hamt_new(void)
{
	sc_hamt_options o = {0};
	o.seed = SEED;
	sc_hamt *m;
	if (sc_hamt_create(&o, &m) != SC_OK)
		exit(1);
	return m;
}

static sc_hamt_root hamt_build(ctx *c, sc_hamt *m)
{
	sc_hamt_edit *e;
	sc_hamt_root r;
	sc_hamt_garbage *g;
	if (sc_hamt_edit_begin(m, (sc_hamt_root){0}, &e))
		exit(1);
	for (size_t i = 0; i < c->n; i++)
		if (sc_hamt_edit_set(e, c->keys[i], (void *)(i + 1)))
			exit(1);
	if (sc_hamt_edit_commit(e, &r, &g))
		exit(1);
	sc_hamt_garbage_free(m, g);
	return r;
}

static double hamt_build_once(ctx *c)
{
	sc_hamt *m = hamt_new();
	double t0 = now_ns();
	sc_hamt_root r = hamt_build(c, m);
	double t = now_ns() - t0;
	sc_hamt_root_free(m, r);
	sc_hamt_destroy(m);
	return t / (double)c->n;
}

static double gh_build_once(ctx *c)
{
	GHashTable *h = g_hash_table_new(gh_hash, gh_equal);
	double t0 = now_ns();
	for (size_t i = 0; i < c->n; i++)
		g_hash_table_insert(h, c->keys[i], (void *)(i + 1));
	double t = now_ns() - t0;
	g_hash_table_destroy(h);
	return t / (double)c->n;
}

static double oa_build_once(ctx *c)
{
	oa_table t;
	oa_init(&t, 16);
	double t0 = now_ns();
	for (size_t i = 0; i < c->n; i++)
		oa_put(&t, c->keys[i], (void *)(i + 1));
	double dt = now_ns() - t0;
	free(t.slots);
	return dt / (double)c->n;
}

/* One version per insert: begin, set, commit, free the garbage at once. */
static double hamt_persistent_once(ctx *c)
{
	sc_hamt *m = hamt_new();
	sc_hamt_root r = {0};
	double t0 = now_ns();
	for (size_t i = 0; i < c->n; i++) {
		sc_hamt_edit *e;
		sc_hamt_garbage *g;
		if (sc_hamt_edit_begin(m, r, &e) ||
		    sc_hamt_edit_set(e, c->keys[i], (void *)(i + 1)) ||
		    sc_hamt_edit_commit(e, &r, &g))
			exit(1);
		sc_hamt_garbage_free(m, g);
	}
	double t = now_ns() - t0;
	sc_hamt_root_free(m, r);
	sc_hamt_destroy(m);
	return t / (double)c->n;
}

static void keep_min(double *best, double x)
{
	if (x < *best)
		*best = x;
}

typedef void *(*get_fn)(void *tbl, const sc_hamt_key *k);

static double gets_once(ctx *c, void *tbl, get_fn get, sc_hamt_key **ks,
			bool hit)
{
	uintptr_t acc = 0;
	double t0 = now_ns();
	for (size_t i = 0; i < c->n; i++)
		acc += (uintptr_t)get(tbl, ks[i]);
	double t = now_ns() - t0;
	c->sink = acc;
	if (hit != (acc != 0)) {
		fprintf(stderr, "bench/hamt: wrong lookup results\n");
		exit(1);
	}
	return t / (double)c->n;
}

typedef struct hamt_tbl {
	sc_hamt *m;
	sc_hamt_root r;
} hamt_tbl;

static void *get_hamt(void *tbl, const sc_hamt_key *k)
{
	hamt_tbl *t = tbl;
	return sc_hamt_get(t->m, t->r, k->bytes, k->len);
}

static void *get_gh(void *tbl, const sc_hamt_key *k)
{
	return g_hash_table_lookup(tbl, k);
}

static void *get_oa(void *tbl, const sc_hamt_key *k)
{
	return oa_get(tbl, k->bytes, k->len);
}

static void emit(const char *name, size_t n, double ours, const char *peer,
		 double theirs)
{
	printf("{\"name\":\"%s\",\"n\":%zu,\"ns_per_op\":%.1f,\"peer\":\"%s\","
	       "\"peer_ns_per_op\":%.1f,\"ratio\":%.2f}\n",
	       name, n, ours, peer, theirs, ours / theirs);
}

static void emit_bytes(size_t n, double ours, double ours_rss, const char *peer,
		       double theirs, double theirs_rss)
{
	printf("{\"name\":\"hamt_bytes_per_entry\",\"n\":%zu,"
	       "\"bytes_per_entry\":%.1f,\"rss_bytes_per_entry\":%.1f,"
	       "\"peer\":\"%s\",\"peer_bytes_per_entry\":%.1f,"
	       "\"peer_rss_bytes_per_entry\":%.1f,\"ratio\":%.2f}\n",
	       n, ours, ours_rss, peer, theirs, theirs_rss, ours / theirs);
}

int main(int argc, char **argv)
{
	ctx c = {0};
	c.n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	if (c.n < 16) {
		fprintf(stderr, "usage: %s [N >= 16]\n", argv[0]);
		return 2;
	}
	c.keys = xmalloc(c.n * sizeof *c.keys);
	c.probes = xmalloc(c.n * sizeof *c.probes);
	c.misses = xmalloc(c.n * sizeof *c.misses);
	for (size_t i = 0; i < c.n; i++) {
		c.keys[i] = key_make("entity", (unsigned)i);
		c.probes[i] = key_make("entity", (unsigned)i);
		c.misses[i] = key_make("entity", (unsigned)(i + c.n));
	}
	shuffle(c.keys, c.n);
	shuffle(c.probes, c.n);
	shuffle(c.misses, c.n);

	/* Lookups and memory, on tables built once. */
	size_t h0 = memory_in_use();
	hamt_tbl ht = {hamt_new(), {0}};
	ht.r = hamt_build(&c, ht.m);
	size_t h1 = memory_in_use();
	GHashTable *gh = g_hash_table_new(gh_hash, gh_equal);
	for (size_t i = 0; i < c.n; i++)
		g_hash_table_insert(gh, c.keys[i], (void *)(i + 1));
	size_t h2 = memory_in_use();
	oa_table oa;
	oa_init(&oa, 16);
	for (size_t i = 0; i < c.n; i++)
		oa_put(&oa, c.keys[i], (void *)(i + 1));
	size_t h3 = memory_in_use();

	/* Repetitions interleave ours and the peers so that a busy machine
	 * slows all three alike; each figure is the best repetition. */
	double hit_h = 1e300, hit_g = 1e300, hit_o = 1e300;
	double miss_h = 1e300, miss_g = 1e300, miss_o = 1e300;
	for (int rep = 0; rep < 2 * REPS; rep++) {
		keep_min(&hit_h, gets_once(&c, &ht, get_hamt, c.probes, true));
		keep_min(&hit_g, gets_once(&c, gh, get_gh, c.probes, true));
		keep_min(&hit_o, gets_once(&c, &oa, get_oa, c.probes, true));
		keep_min(&miss_h,
			 gets_once(&c, &ht, get_hamt, c.misses, false));
		keep_min(&miss_g, gets_once(&c, gh, get_gh, c.misses, false));
		keep_min(&miss_o, gets_once(&c, &oa, get_oa, c.misses, false));
	}
	emit("hamt_get_hit", c.n, hit_h, "ghashtable", hit_g);
	emit("hamt_get_hit", c.n, hit_h, "open_addressing", hit_o);
	emit("hamt_get_miss", c.n, miss_h, "ghashtable", miss_g);
	emit("hamt_get_miss", c.n, miss_h, "open_addressing", miss_o);

	/* Structure bytes, keys and values excluded: our node bytes; the
	 * peers' bucket arrays (GHashTable: keys, values and hashes per
	 * bucket; open addressing: key pointer and value per slot). The rss
	 * figures are the resident memory each build added, allocator
	 * overhead included. */
	sc_hamt_stats st;
	sc_hamt_stats_get(ht.m, ht.r, &st);
	double n = (double)c.n;
	double gh_buckets = (double)(h2 - h1) / n; /* measured below too */
	emit_bytes(c.n, (double)st.bytes / n, (double)(h1 - h0) / n,
		   "ghashtable", gh_buckets, gh_buckets);
	emit_bytes(c.n, (double)st.bytes / n, (double)(h1 - h0) / n,
		   "open_addressing",
		   (double)((oa.mask + 1) * sizeof(oa_slot)) / n,
		   (double)(h3 - h2) / n);
	fprintf(stderr,
		"hamt: %zu nodes, max depth %zu, %.1f node bytes/entry\n",
		st.nodes, st.max_depth, (double)st.bytes / n);

	sc_hamt_root_free(ht.m, ht.r);
	sc_hamt_destroy(ht.m);
	g_hash_table_destroy(gh);
	free(oa.slots);

	double b_h = 1e300, b_g = 1e300, b_o = 1e300, p_h = 1e300;
	for (int rep = 0; rep < REPS; rep++) {
		keep_min(&b_h, hamt_build_once(&c));
		keep_min(&b_g, gh_build_once(&c));
		keep_min(&b_o, oa_build_once(&c));
		keep_min(&p_h, hamt_persistent_once(&c));
	}
	emit("hamt_build_edit", c.n, b_h, "ghashtable", b_g);
	emit("hamt_build_edit", c.n, b_h, "open_addressing", b_o);
	/* The peers are not persistent: their figure is a plain insert. */
	emit("hamt_set_persistent", c.n, p_h, "ghashtable", b_g);
	emit("hamt_set_persistent", c.n, p_h, "open_addressing", b_o);

	for (size_t i = 0; i < c.n; i++) {
		free(c.keys[i]);
		free(c.probes[i]);
		free(c.misses[i]);
	}
	free(c.keys);
	free(c.probes);
	free(c.misses);
	return 0;
}
