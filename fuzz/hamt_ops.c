/*
 * libFuzzer harness: the HAMT against the reference map.
 *
 * Input: byte 0 picks the hash (XXH3, 3 bits, 4 bits spread over the
 * levels, or constant) so that deep paths and collision nodes get fuzzed
 * too; then pairs (op, key id). Keys come from a small alphabet so that
 * sets, replaces and removes hit each other. Up to four committed versions
 * stay alive; every step compares the touched key in the open edit and in
 * every kept version with the references, and the end compares everything
 * (iteration, count, check, diff). An op can also make the next allocation
 * fail, which must poison the edit and leave the versions intact.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/hamt.h"
#include "statecache/testing.h"

#include "tests/support/hamt_testkit.h"
#include "tests/support/refmap.h"

#define KEEP 4
#define V(x) ((void *)(uintptr_t)(x))

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "hamt_ops: %s\n", what);
		abort();
	}
}

/* Key `id` (0..255): 1..8 bytes over "abcd", so many share prefixes. */
static size_t key_bytes(unsigned id, unsigned char *out)
{
	size_t len = 1 + id % 8;
	for (size_t j = 0; j < len; j++)
		out[j] = (unsigned char)('a' + ((id >> (j % 4)) + j) % 4);
	return len;
}

typedef struct kept {
	sc_hamt_root root;
	tk_refmap *ref;
	sc_hamt_garbage *g; /* garbage of the commit that made it */
} kept;

typedef struct state {
	sc_hamt *m;
	tk_hamt_counter c;
	kept v[KEEP + 1];
	int nv;
	sc_hamt_edit *e;
	tk_refmap *eref;
	uint64_t serial;
	/* Reference keys need stable bytes: one buffer per key id. */
	unsigned char kb[256][8];
	size_t kl[256];
} state;

static void check_key(state *s, const unsigned char *k, size_t len)
{
	if (s->e)
		must(sc_hamt_edit_get(s->e, k, len) ==
			 tk_refmap_get(s->eref, k, len),
		     "edit lookup differs from the reference");
	for (int i = 0; i < s->nv; i++)
		must(sc_hamt_get(s->m, s->v[i].root, k, len) ==
			 tk_refmap_get(s->v[i].ref, k, len),
		     "version lookup differs from the reference");
}

static void check_whole(state *s, sc_hamt_root r, const tk_refmap *ref)
{
	char why[256];
	if (sc_hamt_check(s->m, r, why, sizeof why) != SC_OK) {
		fprintf(stderr, "hamt_ops: %s\n", why);
		abort();
	}
	must(sc_hamt_count(r) == tk_refmap_count(ref), "count differs");
	sc_hamt_iter it;
	sc_hamt_iter_init(&it, r);
	const sc_hamt_key *k;
	void *v;
	size_t n = 0;
	while (sc_hamt_iter_next(&it, &k, &v)) {
		must(tk_refmap_get(ref, k->bytes, k->len) == v,
		     "iterated entry differs from the reference");
		n++;
	}
	must(n == tk_refmap_count(ref), "iteration count differs");
}

typedef struct diff_check {
	const tk_refmap *a, *b;
	size_t n;
} diff_check;

static int on_diff(void *ctx, sc_diff_kind kind, const sc_hamt_key *key,
		   void *oldv, void *newv)
{
	diff_check *d = ctx;
	void *ra = tk_refmap_get(d->a, key->bytes, key->len);
	void *rb = tk_refmap_get(d->b, key->bytes, key->len);
	must(ra == oldv && rb == newv, "diff values differ from references");
	must(kind == (ra && rb ? SC_DIFF_CHANGED
		      : ra     ? SC_DIFF_REMOVED
			       : SC_DIFF_ADDED),
	     "diff kind wrong");
	must(ra != rb, "diff reported an unchanged key");
	d->n++;
	return 0;
}

static void check_diff(state *s, int i, int j)
{
	diff_check d = {s->v[i].ref, s->v[j].ref, 0};
	must(sc_hamt_diff(s->m, s->v[i].root, s->v[j].root, on_diff, &d) == 0,
	     "diff failed");
	/* Count the reference differences: the diff must report them all. */
	size_t want = 0;
	for (size_t x = 0; x < tk_refmap_count(d.a); x++) {
		const tk_refmap_entry *e = tk_refmap_at(d.a, x);
		if (tk_refmap_get(d.b, e->key, e->len) != e->value)
			want++;
	}
	for (size_t x = 0; x < tk_refmap_count(d.b); x++) {
		const tk_refmap_entry *e = tk_refmap_at(d.b, x);
		if (!tk_refmap_get(d.a, e->key, e->len))
			want++;
	}
	must(d.n == want, "diff missed or repeated a difference");
}

static void drop_oldest(state *s)
{
	tk_refmap_free(s->v[0].ref);
	memmove(&s->v[0], &s->v[1], (size_t)(s->nv - 1) * sizeof s->v[0]);
	s->nv--;
	/* The new oldest version's garbage held what the dropped one had. */
	sc_hamt_garbage_free(s->m, s->v[0].g);
	s->v[0].g = NULL;
}

static void edit_end(state *s, int commit)
{
	if (commit) {
		sc_hamt_root r;
		sc_hamt_garbage *g;
		must(sc_hamt_edit_commit(s->e, &r, &g) == SC_OK,
		     "commit failed");
		s->v[s->nv++] = (kept){r, s->eref, g};
		if (s->nv > KEEP)
			drop_oldest(s);
	} else {
		sc_hamt_edit_abort(s->e);
		tk_refmap_free(s->eref);
	}
	s->e = NULL;
	s->eref = NULL;
}

static void edit_start(state *s)
{
	sc_hamt_root base = s->nv ? s->v[s->nv - 1].root : (sc_hamt_root){0};
	must(sc_hamt_edit_begin(s->m, base, &s->e) == SC_OK, "begin failed");
	s->eref =
	    s->nv ? tk_refmap_clone(s->v[s->nv - 1].ref) : tk_refmap_new();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static state s;
	memset(&s, 0, sizeof s);
	for (unsigned i = 0; i < 256; i++)
		s.kl[i] = key_bytes(i, s.kb[i]);
	static const sc_hamt_hash_fn hashes[4] = {
	    NULL, tk_hamt_hash_3bit, tk_hamt_hash_spread4, tk_hamt_hash_const};
	sc_hamt_options o = tk_hamt_options(&s.c, hashes[data[0] % 4]);
	must(sc_hamt_create(&o, &s.m) == SC_OK, "create failed");

	/* At most 1024 ops per input keeps each run short. */
	if (size > 2049)
		size = 2049;
	for (size_t p = 1; p + 1 < size; p += 2) {
		unsigned op = data[p] % 16, id = data[p + 1];
		const unsigned char *k = s.kb[id];
		size_t len = s.kl[id];
		if (!s.e)
			edit_start(&s);
		if (op < 7) { /* set */
			sc_hamt_key *key = tk_hamt_key_new(&s.c, k, len);
			void *v = V(++s.serial);
			must(sc_hamt_edit_set(s.e, key, v) == SC_OK,
			     "set failed");
			tk_refmap_set(s.eref, k, len, v);
		} else if (op < 10) { /* remove */
			int had = tk_refmap_remove(s.eref, k, len, NULL);
			must(sc_hamt_edit_remove(s.e, k, len) ==
				 (had ? SC_OK : SC_NOTFOUND),
			     "remove result differs");
		} else if (op == 10) {
			edit_end(&s, 1);
		} else if (op == 11) {
			edit_end(&s, 0);
		} else if (op == 12 && s.nv >= 2) {
			check_diff(&s, id % s.nv, (id / 4) % s.nv);
		} else if (op == 13) { /* fail an allocation of this set */
			sc_hamt_key *key = tk_hamt_key_new(&s.c, k, len);
			sc_testing_fail_alloc_after(id % 4);
			int rc = sc_hamt_edit_set(s.e, key, V(++s.serial));
			sc_testing_fail_alloc_after(-1);
			if (rc == SC_OK) {
				tk_refmap_set(s.eref, k, len, V(s.serial));
			} else {
				must(rc == ENOMEM, "set: ENOMEM expected");
				must(sc_hamt_edit_set(s.e, key, V(1)) ==
					 SC_EPOISONED,
				     "poisoned edit accepted a set");
				free(key); /* still ours after a failure */
				s.c.made--;
				must(sc_hamt_edit_commit(
					 s.e, &(sc_hamt_root){0},
					 &(sc_hamt_garbage *){NULL}) ==
					 SC_EPOISONED,
				     "poisoned edit committed");
				edit_end(&s, 0);
			}
		} else if (op == 14 && len > 1) { /* near miss */
			check_key(&s, k, len - 1);
		}
		check_key(&s, k, len);
	}

	if (s.e)
		check_whole(&s, sc_hamt_edit_root(s.e), s.eref);
	for (int i = 0; i < s.nv; i++) {
		check_whole(&s, s.v[i].root, s.v[i].ref);
		if (i > 0)
			check_diff(&s, i - 1, i);
	}
	if (s.e)
		edit_end(&s, 0);
	while (s.nv > 1)
		drop_oldest(&s);
	if (s.nv) {
		sc_hamt_root_free(s.m, s.v[0].root);
		tk_refmap_free(s.v[0].ref);
	}
	must(s.c.released == s.c.made, "a pair was not released exactly once");
	must(sc_hamt_allocated_bytes(s.m) == 0, "node memory leaked");
	sc_hamt_destroy(s.m);
	return 0;
}
