/*
 * Differential property test: the HAMT against tests/support/refmap.
 *
 * A random sequence of set / replace / remove / get / commit / abort / begin
 * runs on one map while a window of committed versions is kept alive, each
 * with a reference copy: the last few versions plus some older ones that
 * live for a random while (like long-running readers). After every step the
 * touched key is looked up in the open edit and in every kept version and
 * compared with the references. Periodically every kept version is compared
 * whole (iteration, count, sc_hamt_check) and diff is checked against a
 * reference diff for random pairs of kept versions.
 *
 * Garbage is freed exactly as a reclaimer would: the garbage of the commit
 * that made version i is freed once no kept version is older than i. So
 * ASan proves that nothing a kept version can reach was freed, and LSan and
 * the release counter prove that everything else was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/hamt.h"
#include "tests/support/hamt_testkit.h"
#include "tests/support/refmap.h"

#define V(x) ((void *)(uintptr_t)(x))

/* ==== key pool =========================================================== */

typedef struct pool_key {
	unsigned char *bytes;
	size_t len;
} pool_key;

typedef struct pool {
	pool_key *k;
	size_t n;
} pool;

/* Keys in three size classes: 1-2 bytes, "entity-%08u", 100..1024 bytes. */
static void pool_make(pool *p, size_t n, uint64_t *rng)
{
	p->n = n;
	p->k = calloc(n, sizeof *p->k);
	assert_non_null(p->k);
	for (size_t i = 0; i < n; i++) {
		unsigned char buf[SC_HAMT_KEY_MAX];
		size_t len;
		unsigned cls = i % 10;
		if (cls == 0) {
			/* short: unique by index */
			if (i / 10 < 256) {
				buf[0] = (unsigned char)(i / 10);
				len = 1;
			} else {
				buf[0] = (unsigned char)((i / 10) >> 8);
				buf[1] = (unsigned char)(i / 10);
				len = 2;
			}
		} else if (cls == 9) {
			len = (size_t)snprintf((char *)buf, sizeof buf,
					       "long-%zu-", i);
			size_t want = 100 + tk_rand(rng) % 925;
			while (len < want)
				buf[len++] =
				    (unsigned char)('a' + tk_rand(rng) % 26);
		} else {
			len = (size_t)snprintf((char *)buf, sizeof buf,
					       "entity-%08zu", i);
		}
		p->k[i].bytes = malloc(len);
		assert_non_null(p->k[i].bytes);
		memcpy(p->k[i].bytes, buf, len);
		p->k[i].len = len;
	}
}

static void pool_free(pool *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->k[i].bytes);
	free(p->k);
}

/* ==== versions and their garbage ========================================= */

typedef struct version {
	sc_hamt_root root;
	tk_refmap *ref;	    /* NULL once dropped from the window */
	sc_hamt_garbage *g; /* garbage of the commit that made it */
	long long expires;  /* version index after which it is dropped */
} version;

typedef struct world {
	sc_hamt *m;
	tk_hamt_counter c;
	pool keys;
	uint64_t rng;
	version *v;
	size_t nv, capv;
	size_t oldest;	 /* first version whose garbage is not freed */
	sc_hamt_edit *e; /* open edit or NULL */
	tk_refmap *eref; /* reference of the open edit */
	uint64_t serial;
	size_t recent; /* how many latest versions stay kept */
	/* statistics, printed at the end */
	unsigned long ops, commits, aborts, diffs, full_checks;
} world;

static void world_push_version(world *w, sc_hamt_root r, tk_refmap *ref,
			       sc_hamt_garbage *g)
{
	if (w->nv == w->capv) {
		w->capv = w->capv ? 2 * w->capv : 1024;
		w->v = realloc(w->v, w->capv * sizeof *w->v);
		assert_non_null(w->v);
	}
	version *x = &w->v[w->nv++];
	x->root = r;
	x->ref = ref;
	x->g = g;
	/* Most versions live while they are among the last few; some live
	 * on for a random while, pinning the garbage after them. */
	x->expires = -1;
	if (tk_rand(&w->rng) % 80 == 0)
		x->expires = (long long)(w->nv + tk_rand(&w->rng) % 400);
}

static bool version_kept(const world *w, size_t i)
{
	if (i + w->recent >= w->nv)
		return true;
	return w->v[i].expires >= (long long)w->nv;
}

/* Drop versions out of the window; free garbage no kept version needs. */
static void world_reclaim(world *w)
{
	for (size_t i = w->oldest; i < w->nv; i++)
		if (w->v[i].ref && !version_kept(w, i)) {
			tk_refmap_free(w->v[i].ref);
			w->v[i].ref = NULL;
		}
	/* Garbage of version i holds what version i-1 had: free it once no
	 * kept version is older than i. */
	while (w->oldest + 1 < w->nv && !w->v[w->oldest].ref) {
		w->oldest++;
		sc_hamt_garbage_free(w->m, w->v[w->oldest].g);
		w->v[w->oldest].g = NULL;
	}
}

static sc_hamt_root world_latest(const world *w)
{
	return w->nv ? w->v[w->nv - 1].root : (sc_hamt_root){0};
}

/* ==== checks ============================================================= */

static void check_key_everywhere(world *w, const void *key, size_t len)
{
	if (w->e) {
		void *want = tk_refmap_get(w->eref, key, len);
		assert_ptr_equal(sc_hamt_edit_get(w->e, key, len), want);
	}
	for (size_t i = w->oldest; i < w->nv; i++) {
		if (!w->v[i].ref)
			continue;
		void *want = tk_refmap_get(w->v[i].ref, key, len);
		assert_ptr_equal(sc_hamt_get(w->m, w->v[i].root, key, len),
				 want);
	}
}

static void check_whole(world *w, sc_hamt_root r, const tk_refmap *ref)
{
	char why[256];
	if (sc_hamt_check(w->m, r, why, sizeof why) != SC_OK)
		fail_msg("check: %s", why);
	assert_int_equal(sc_hamt_count(r), tk_refmap_count(ref));
	sc_hamt_iter it;
	sc_hamt_iter_init(&it, r);
	const sc_hamt_key *k;
	void *v;
	size_t n = 0;
	while (sc_hamt_iter_next(&it, &k, &v)) {
		assert_ptr_equal(tk_refmap_get(ref, k->bytes, k->len), v);
		n++;
	}
	assert_int_equal(n, tk_refmap_count(ref));
	/* Every reference key is found by lookup too. */
	for (size_t i = 0; i < tk_refmap_count(ref); i++) {
		const tk_refmap_entry *x = tk_refmap_at(ref, i);
		assert_ptr_equal(sc_hamt_get(w->m, r, x->key, x->len),
				 x->value);
	}
}

static void check_all_versions(world *w)
{
	w->full_checks++;
	for (size_t i = w->oldest; i < w->nv; i++)
		if (w->v[i].ref)
			check_whole(w, w->v[i].root, w->v[i].ref);
	if (w->e)
		check_whole(w, sc_hamt_edit_root(w->e), w->eref);
}

typedef struct diff_item {
	const void *key;
	size_t len;
	int kind;
	void *oldv, *newv;
} diff_item;

typedef struct diff_list {
	diff_item *it;
	size_t n, cap;
} diff_list;

static void diff_add(diff_list *d, int kind, const void *key, size_t len,
		     void *oldv, void *newv)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->it = realloc(d->it, d->cap * sizeof *d->it);
		assert_non_null(d->it);
	}
	d->it[d->n++] = (diff_item){key, len, kind, oldv, newv};
}

static int diff_collect(void *ctx, sc_diff_kind kind, const sc_hamt_key *key,
			void *old_value, void *new_value)
{
	diff_add(ctx, (int)kind, key->bytes, key->len, old_value, new_value);
	return 0;
}

static int diff_item_cmp(const void *a, const void *b)
{
	const diff_item *x = a, *y = b;
	return tk_refmap_keycmp(x->key, x->len, y->key, y->len);
}

/* diff(a, b) must equal the merge of the two sorted references. */
static void check_diff(world *w, size_t ia, size_t ib)
{
	w->diffs++;
	const tk_refmap *ra = w->v[ia].ref, *rb = w->v[ib].ref;
	diff_list got = {0}, want = {0};
	assert_int_equal(sc_hamt_diff(w->m, w->v[ia].root, w->v[ib].root,
				      diff_collect, &got),
			 0);
	size_t i = 0, j = 0;
	while (i < tk_refmap_count(ra) || j < tk_refmap_count(rb)) {
		const tk_refmap_entry *x = tk_refmap_at(ra, i),
				      *y = tk_refmap_at(rb, j);
		int c = !x   ? 1
			: !y ? -1
			     : tk_refmap_keycmp(x->key, x->len, y->key, y->len);
		if (c < 0) {
			diff_add(&want, SC_DIFF_REMOVED, x->key, x->len,
				 x->value, NULL);
			i++;
		} else if (c > 0) {
			diff_add(&want, SC_DIFF_ADDED, y->key, y->len, NULL,
				 y->value);
			j++;
		} else {
			if (x->value != y->value)
				diff_add(&want, SC_DIFF_CHANGED, y->key, y->len,
					 x->value, y->value);
			i++;
			j++;
		}
	}
	if (got.n)
		qsort(got.it, got.n, sizeof *got.it, diff_item_cmp);
	assert_int_equal(got.n, want.n);
	for (size_t k = 0; k < got.n; k++) {
		assert_int_equal(got.it[k].len, want.it[k].len);
		assert_memory_equal(got.it[k].key, want.it[k].key,
				    got.it[k].len);
		assert_int_equal(got.it[k].kind, want.it[k].kind);
		assert_ptr_equal(got.it[k].oldv, want.it[k].oldv);
		assert_ptr_equal(got.it[k].newv, want.it[k].newv);
	}
	free(got.it);
	free(want.it);
}

static size_t pick_kept(world *w)
{
	for (;;) {
		size_t i = w->oldest + tk_rand(&w->rng) % (w->nv - w->oldest);
		if (w->v[i].ref)
			return i;
	}
}

/* ==== the run ============================================================ */

typedef struct phase {
	const char *name;
	sc_hamt_hash_fn hash;
	unsigned flags;
	size_t keys;
	unsigned long ops;
	unsigned commit_every; /* mean ops per commit */
	size_t recent;
} phase;

static void world_begin(world *w)
{
	assert_int_equal(sc_hamt_edit_begin(w->m, world_latest(w), &w->e),
			 SC_OK);
	w->eref =
	    w->nv ? tk_refmap_clone(w->v[w->nv - 1].ref) : tk_refmap_new();
}

static void step(world *w, const phase *ph)
{
	w->ops++;
	uint64_t r = tk_rand(&w->rng);
	const pool_key *pk = &w->keys.k[(r >> 8) % w->keys.n];
	unsigned op = (unsigned)(r & 255);

	if (!w->e) {
		world_begin(w);
		return;
	}
	if (tk_rand(&w->rng) % ph->commit_every == 0) {
		if (tk_rand(&w->rng) % 10 == 0) {
			sc_hamt_edit_abort(w->e);
			tk_refmap_free(w->eref);
			w->aborts++;
		} else {
			sc_hamt_root nr;
			sc_hamt_garbage *g;
			assert_int_equal(sc_hamt_edit_commit(w->e, &nr, &g),
					 SC_OK);
			world_push_version(w, nr, w->eref, g);
			w->commits++;
		}
		w->e = NULL;
		w->eref = NULL;
		world_reclaim(w);
	} else if (op < 150) { /* set: insert or replace */
		sc_hamt_key *k = tk_hamt_key_new(&w->c, pk->bytes, pk->len);
		void *v = V(++w->serial);
		assert_int_equal(sc_hamt_edit_set(w->e, k, v), SC_OK);
		tk_refmap_set(w->eref, pk->bytes, pk->len, v);
	} else if (op < 210) { /* remove, hit or miss */
		void *old = NULL;
		bool had = tk_refmap_remove(w->eref, pk->bytes, pk->len, &old);
		int rc = sc_hamt_edit_remove(w->e, pk->bytes, pk->len);
		assert_int_equal(rc, had ? SC_OK : SC_NOTFOUND);
	} else if (op < 220) { /* set a pair already there: a no-op */
		sc_hamt_iter it;
		sc_hamt_iter_init(&it, sc_hamt_edit_root(w->e));
		const sc_hamt_key *k = NULL, *k1;
		void *v = NULL, *v1;
		for (unsigned n = op % 8 + 1;
		     n && sc_hamt_iter_next(&it, &k1, &v1); n--) {
			k = k1;
			v = v1;
		}
		if (k) {
			size_t before = w->c.released;
			assert_int_equal(sc_hamt_edit_set(w->e, k, v), SC_OK);
			assert_int_equal(w->c.released, before);
			check_key_everywhere(w, k->bytes, k->len);
		}
	} else if (op < 235) { /* near miss: a prefix of a pool key */
		if (pk->len > 1)
			check_key_everywhere(w, pk->bytes, pk->len - 1);
	}
	/* else a plain get, hit or miss: the check below */
	check_key_everywhere(w, pk->bytes, pk->len);
}

static void run_phase(const phase *ph)
{
	world w = {0};
	w.rng = tk_seed(ph->name);
	w.recent = ph->recent;
	sc_hamt_options o = tk_hamt_options(&w.c, ph->hash);
	o.flags = ph->flags;
	assert_int_equal(sc_hamt_create(&o, &w.m), SC_OK);
	pool_make(&w.keys, ph->keys, &w.rng);

	unsigned long full_every = ph->ops / 100 + 1;
	unsigned long diff_every = ph->ops / 1000 + 1;
	for (unsigned long i = 0; i < ph->ops; i++) {
		step(&w, ph);
		if (i % full_every == full_every - 1)
			check_all_versions(&w);
		if (i % diff_every == diff_every - 1 && w.nv > w.oldest) {
			size_t a = pick_kept(&w), b = pick_kept(&w);
			check_diff(&w, a, b);
			check_diff(&w, b, a);
		}
	}
	check_all_versions(&w);

	/* Tear down in reclamation order, then the last version whole. */
	if (w.e) {
		sc_hamt_edit_abort(w.e);
		tk_refmap_free(w.eref);
	}
	w.recent = 1;
	for (size_t i = 0; i < w.nv; i++)
		w.v[i].expires = -1;
	world_reclaim(&w);
	if (w.nv) {
		assert_int_equal(w.oldest, w.nv - 1);
		sc_hamt_root_free(w.m, world_latest(&w));
		tk_refmap_free(w.v[w.nv - 1].ref);
	}
	assert_int_equal(w.c.released, w.c.made);
	assert_int_equal(sc_hamt_allocated_bytes(w.m), 0);
	sc_hamt_destroy(w.m);
	fprintf(stderr,
		"%s: %lu ops, %lu commits, %lu aborts, %lu diffs, %lu full "
		"checks, %zu pairs\n",
		ph->name, w.ops, w.commits, w.aborts, w.diffs, w.full_checks,
		w.c.made);
	pool_free(&w.keys);
	free(w.v);
}

static unsigned long scaled(unsigned long short_ops)
{
	const char *s = getenv("SC_TEST_SHORT");
	return (s && *s && strcmp(s, "0") != 0) ? short_ops : short_ops * 5;
}

static void test_property_xxh3(void **state)
{
	(void)state;
	phase ph = {.name = "hamt_property_xxh3",
		    .keys = 3000,
		    .ops = scaled(1000000),
		    .commit_every = 60,
		    .recent = 8};
	run_phase(&ph);
}

/* 16 distinct hashes spread over the levels: deep paths and collision
 * nodes in every operation. */
static void test_property_spread4(void **state)
{
	(void)state;
	phase ph = {.name = "hamt_property_spread4",
		    .hash = tk_hamt_hash_spread4,
		    .keys = 400,
		    .ops = scaled(60000),
		    .commit_every = 40,
		    .recent = 8};
	run_phase(&ph);
}

/* Constant hash: one collision node under a chain of single-child nodes. */
static void test_property_const(void **state)
{
	(void)state;
	phase ph = {.name = "hamt_property_const",
		    .hash = tk_hamt_hash_const,
		    .keys = 60,
		    .ops = scaled(30000),
		    .commit_every = 30,
		    .recent = 6};
	run_phase(&ph);
}

/* Read-only published nodes: a stray write into one would crash here. */
static void test_property_protect(void **state)
{
	(void)state;
	phase ph = {.name = "hamt_property_protect",
		    .flags = SC_HAMT_PROTECT,
		    .keys = 300,
		    .ops = scaled(20000),
		    .commit_every = 50,
		    .recent = 4};
	run_phase(&ph);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_property_xxh3),
	    cmocka_unit_test(test_property_spread4),
	    cmocka_unit_test(test_property_const),
	    cmocka_unit_test(test_property_protect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
