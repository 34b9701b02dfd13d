/*
 * Watchers (include/statecache/watch.h) against the reference model
 * (tests/support/refstate).
 *
 * Each watcher under test keeps its own copy of the state it watches: the
 * initial state plus every batch applied, each entity stored as a
 * serialisation of its state (so the copy needs nothing of the cache once a
 * batch is released). Every batch is checked as it is applied: an added id
 * is not in the copy, an updated or removed one is and its `before` equals
 * the copy, an update changes the state and names exactly the attributes
 * whose values differ, no id appears twice, version and position ranges
 * follow each other without gap. After every batch that ends at a version
 * (everything but a part of the initial state), the copy equals the model
 * at that version, entity by entity, with the watcher's filter applied.
 *
 * The random run drives random event streams with random promotes and
 * discards, watchers with random lags and filters, watchers opened midway
 * with the initial state, and watchers over a small limit that must
 * resync. Directed tests cover coalescing (net changes only), the initial
 * state and its marker, heartbeats, the wake-up of a waiting watcher by a
 * promote on another thread, the limit and stats, allocation failures, and
 * the memory the cache gets back once the watchers close.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "statecache/cache.h"
#include "statecache/store.h"
#include "statecache/testing.h"
#include "statecache/watch.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

/* ==== randomness ========================================================== */

static uint64_t seed;
static uint64_t rnd_state;

static uint64_t rnd(void)
{
	return tk_rand(&rnd_state);
}

static uint64_t rnd_below(uint64_t n)
{
	return tk_rand_below(&rnd_state, n);
}

static int setup_seed(void **state)
{
	(void)state;
	seed = tk_seed("test_watch");
	return 0;
}

static bool short_run(void)
{
	return getenv("SC_TEST_SHORT") != NULL;
}

/* ==== serialised states =================================================== */

typedef struct buf {
	char *p;
	size_t n, cap;
} buf;

static void buf_put(buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void buf_str(buf *b, sc_str s)
{
	uint32_t len = (uint32_t)s.len;
	buf_put(b, &len, sizeof len);
	buf_put(b, s.ptr, s.len);
}

static void buf_value(buf *b, const sc_value *v)
{
	unsigned char t = (unsigned char)v->type;
	buf_put(b, &t, 1);
	switch (v->type) {
	case SC_VALUE_INT:
		buf_put(b, &v->u.i, sizeof v->u.i);
		break;
	case SC_VALUE_DOUBLE:
		buf_put(b, &v->u.d, sizeof v->u.d);
		break;
	case SC_VALUE_BOOL: {
		unsigned char x = v->u.b;
		buf_put(b, &x, 1);
		break;
	}
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		buf_str(b, v->u.s);
		break;
	default:
		break;
	}
}

static void ser_entity(buf *b, const sc_entity *e)
{
	b->n = 0;
	buf_str(b, sc_entity_id(e));
	int64_t at = sc_entity_updated_at(e);
	uint64_t pos = sc_entity_position(e);
	buf_put(b, &at, sizeof at);
	buf_str(b, sc_entity_updated_by(e));
	buf_put(b, &pos, sizeof pos);
	for (size_t i = 0; i < sc_entity_attr_count(e); i++) {
		sc_attr a = sc_entity_attr(e, i);
		buf_str(b, a.name);
		buf_value(b, &a.value);
	}
}

static int name_cmp(sc_str a, sc_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	return c ? c : (a.len > b.len) - (a.len < b.len);
}

static int refattr_cmp(const void *x, const void *y)
{
	return name_cmp(((const tk_refattr *)x)->name,
			((const tk_refattr *)y)->name);
}

static void ser_ref(buf *b, const tk_refentity *re)
{
	b->n = 0;
	buf_str(b, re->id);
	buf_put(b, &re->updated_at, sizeof re->updated_at);
	buf_str(b, re->updated_by);
	buf_put(b, &re->position, sizeof re->position);
	tk_refattr *v = malloc((re->nattrs + 1) * sizeof *v);
	assert_non_null(v);
	if (re->nattrs)
		memcpy(v, re->attrs, re->nattrs * sizeof *v);
	qsort(v, re->nattrs, sizeof *v, refattr_cmp);
	for (size_t i = 0; i < re->nattrs; i++) {
		buf_str(b, v[i].name);
		buf_value(b, &v[i].value);
	}
	free(v);
}

/* ==== the watcher's copy: id -> serialised state ========================= */

#define COPY_BUCKETS 256

typedef struct centry {
	char *id;
	size_t idlen;
	char *ser;
	size_t serlen;
	uint64_t mark; /* batch that last touched it */
	struct centry *next;
} centry;

typedef struct copymap {
	centry *b[COPY_BUCKETS];
	size_t n;
} copymap;

static unsigned bucket_of(sc_str id)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < id.len; i++)
		h = (h ^ (unsigned char)id.ptr[i]) * 16777619u;
	return h % COPY_BUCKETS;
}

static centry *copy_find(copymap *m, sc_str id)
{
	for (centry *e = m->b[bucket_of(id)]; e; e = e->next)
		if (e->idlen == id.len && memcmp(e->id, id.ptr, id.len) == 0)
			return e;
	return NULL;
}

static void copy_put(copymap *m, sc_str id, const buf *ser, uint64_t mark)
{
	centry *e = copy_find(m, id);
	if (!e) {
		e = calloc(1, sizeof *e);
		assert_non_null(e);
		e->id = malloc(id.len);
		assert_non_null(e->id);
		memcpy(e->id, id.ptr, id.len);
		e->idlen = id.len;
		unsigned k = bucket_of(id);
		e->next = m->b[k];
		m->b[k] = e;
		m->n++;
	}
	free(e->ser);
	e->ser = malloc(ser->n);
	assert_non_null(e->ser);
	memcpy(e->ser, ser->p, ser->n);
	e->serlen = ser->n;
	e->mark = mark;
}

static void copy_del(copymap *m, sc_str id)
{
	for (centry **pp = &m->b[bucket_of(id)]; *pp; pp = &(*pp)->next) {
		centry *e = *pp;
		if (e->idlen == id.len && memcmp(e->id, id.ptr, id.len) == 0) {
			*pp = e->next;
			free(e->id);
			free(e->ser);
			free(e);
			m->n--;
			return;
		}
	}
	fail_msg("copy_del: id not in the copy");
}

static void copy_clear(copymap *m)
{
	for (unsigned k = 0; k < COPY_BUCKETS; k++)
		while (m->b[k]) {
			centry *e = m->b[k];
			m->b[k] = e->next;
			free(e->id);
			free(e->ser);
			free(e);
		}
	m->n = 0;
}

static bool ser_equal(const buf *b, const centry *e)
{
	return e && e->serlen == b->n && memcmp(e->ser, b->p, b->n) == 0;
}

/* ==== filters ============================================================= */

typedef struct tfilter {
	const char *prefix; /* NULL: none */
	bool by_partition;
	const char *partition;
	bool pred; /* attribute "a" absent, not an int, or even */
} tfilter;

static bool pred_value(bool found, const sc_value *v)
{
	return !found || v->type != SC_VALUE_INT || (v->u.i & 1) == 0;
}

static bool pred_fn(void *ctx, const sc_entity *e)
{
	(void)ctx;
	sc_value v;
	bool found = sc_entity_find(e, (sc_str){"a", 1}, &v);
	return pred_value(found, &v);
}

static bool filter_ref(const tfilter *f, const tk_refentity *re)
{
	if (f->prefix && (re->id.len < strlen(f->prefix) ||
			  memcmp(re->id.ptr, f->prefix, strlen(f->prefix))))
		return false;
	if (f->by_partition && f->partition[0])
		return false;
	if (f->pred) {
		sc_value v;
		bool found = tk_refentity_find(re, (sc_str){"a", 1}, &v);
		return pred_value(found, &v);
	}
	return true;
}

static sc_watch_options filter_options(const tfilter *f, sc_watch_start start)
{
	sc_watch_options o = {.start = start};
	if (f->prefix)
		o.prefix = (sc_str){f->prefix, strlen(f->prefix)};
	o.by_partition = f->by_partition;
	if (f->by_partition)
		o.partition = (sc_str){f->partition, strlen(f->partition)};
	if (f->pred)
		o.match = pred_fn;
	return o;
}

static const tfilter filters[] = {
    {0},
    {.prefix = "p/"},
    {.prefix = "q/e1"},
    {.by_partition = true, .partition = ""},
    {.by_partition = true, .partition = "other"},
    {.pred = true},
    {.prefix = "p/", .pred = true},
};
#define NFILTERS (sizeof filters / sizeof filters[0])

/* ==== a watcher under test ================================================ */

typedef struct tw {
	sc_watcher *w;
	tfilter f;
	copymap copy;
	/* The filtered model when it opened with the initial state. */
	copymap expect;
	bool live; /* initial state complete (or started now) */
	uint64_t last_version, last_position;
	uint64_t batches; /* to mark copy entries */
	unsigned lag;	  /* percent of steps it skips */
	size_t max_held;
	size_t resyncs;
} tw;

static buf sb, sb2;

static void snap_one(void *ctx, const tk_refentity *re);

static void tw_open(tw *t, sc_cache *cache, const tk_refstate *rs,
		    const tfilter *f, sc_watch_start start, size_t initial_max,
		    size_t max_held)
{
	memset(t, 0, sizeof *t);
	t->f = *f;
	t->max_held = max_held;
	sc_watch_options o = filter_options(f, start);
	o.initial_batch_max = initial_max;
	o.max_held_bytes = max_held;
	sc_error err;
	int rc = sc_watch_open(cache, &o, &t->w, &err);
	if (rc)
		fail_msg("sc_watch_open: %s", err.message);
	t->live = start == SC_WATCH_START_NOW;
	if (!t->live)
		tk_refstate_foreach(rs, snap_one, t);
	if (t->live) {
		sc_cache_stats st;
		sc_cache_stats_get(cache, &st);
		t->last_version = st.version;
		t->last_position = st.position;
	}
}

static void tw_close(tw *t)
{
	sc_watch_close(t->w);
	t->w = NULL;
	copy_clear(&t->copy);
	copy_clear(&t->expect);
}

typedef struct model_check {
	const tfilter *f;
	copymap *copy;
	size_t matched;
	const char *bad;
} model_check;

static void check_one(void *ctx, const tk_refentity *re)
{
	model_check *c = ctx;
	if (!filter_ref(c->f, re))
		return;
	c->matched++;
	ser_ref(&sb2, re);
	centry *e = copy_find(c->copy, re->id);
	if (!ser_equal(&sb2, e) && !c->bad)
		c->bad = e ? "an entity's state differs from the model"
			   : "an entity of the model is missing";
}

static void snap_one(void *ctx, const tk_refentity *re)
{
	tw *t = ctx;
	if (!filter_ref(&t->f, re))
		return;
	ser_ref(&sb2, re);
	copy_put(&t->expect, re->id, &sb2, 0);
}

/* The copy equals the state the initial state was read from. */
static void check_initial(tw *t)
{
	if (t->copy.n != t->expect.n)
		fail_msg("initial state of %zu entities, expected %zu (seed "
			 "%llu)",
			 t->copy.n, t->expect.n, (unsigned long long)seed);
	for (unsigned k = 0; k < COPY_BUCKETS; k++)
		for (centry *e = t->expect.b[k]; e; e = e->next) {
			centry *c =
			    copy_find(&t->copy, (sc_str){e->id, e->idlen});
			if (!c || c->serlen != e->serlen ||
			    memcmp(c->ser, e->ser, e->serlen))
				fail_msg("initial state differs (seed %llu)",
					 (unsigned long long)seed);
		}
}

/* The copy equals the model, filtered, entity by entity. */
static void check_copy(tw *t, const tk_refstate *rs)
{
	model_check c = {.f = &t->f, .copy = &t->copy};
	tk_refstate_foreach(rs, check_one, &c);
	if (c.bad)
		fail_msg("watcher copy: %s (seed %llu)", c.bad,
			 (unsigned long long)seed);
	if (c.matched != t->copy.n)
		fail_msg("watcher copy holds %zu entities, the model %zu "
			 "(seed %llu)",
			 t->copy.n, c.matched, (unsigned long long)seed);
}

/* An update names exactly the attributes whose values differ. */
static void check_changed(const sc_watch_change *c)
{
	for (size_t i = 1; i < c->nchanged; i++)
		assert_true(name_cmp(c->changed[i - 1], c->changed[i]) < 0);
	const sc_entity *sides[2] = {c->before, c->after};
	size_t expect = 0;
	for (int s = 0; s < 2; s++)
		for (size_t i = 0; i < sc_entity_attr_count(sides[s]); i++) {
			sc_attr a = sc_entity_attr(sides[s], i);
			sc_value other;
			bool in_other =
			    sc_entity_find(sides[!s], a.name, &other);
			if (s == 1 && in_other)
				continue; /* counted from the first side */
			bool differs =
			    !in_other || !sc_value_equal(&a.value, &other);
			bool listed = false;
			for (size_t k = 0; k < c->nchanged; k++)
				listed |= name_cmp(c->changed[k], a.name) == 0;
			assert_true(differs == listed);
			expect += differs;
		}
	assert_int_equal(expect, c->nchanged);
}

/* Apply one batch to the copy, checking it on the way. */
static void tw_apply(tw *t, const sc_watch_batch *b)
{
	uint64_t mark = ++t->batches;
	switch (b->kind) {
	case SC_WATCH_INITIAL:
		assert_false(t->live);
		assert_int_equal(b->from_version, 0);
		assert_int_equal(b->from_position, 0);
		assert_int_equal(b->nupdated + b->nremoved, 0);
		assert_true(b->nadded > 0);
		break;
	case SC_WATCH_INITIAL_DONE:
		assert_false(t->live);
		assert_int_equal(b->from_version, b->to_version);
		assert_int_equal(b->nadded + b->nupdated + b->nremoved, 0);
		t->live = true;
		break;
	case SC_WATCH_CHANGES:
	case SC_WATCH_HEARTBEAT:
		assert_true(t->live);
		assert_int_equal(b->from_version, t->last_version);
		assert_int_equal(b->from_position, t->last_position);
		assert_true(b->to_version >= b->from_version);
		if (b->kind == SC_WATCH_CHANGES)
			assert_true(b->to_version > b->from_version &&
				    b->nadded + b->nupdated + b->nremoved > 0);
		else
			assert_int_equal(b->nadded + b->nupdated + b->nremoved,
					 0);
		break;
	default:
		fail_msg("unknown batch kind %d", (int)b->kind);
	}
	for (size_t i = 0; i < b->nadded; i++) {
		const sc_watch_change *c = &b->added[i];
		assert_null(c->before);
		assert_non_null(c->after);
		assert_int_equal(c->partition.len, 0);
		assert_true(
		    c->id.len == sc_entity_id(c->after).len &&
		    !memcmp(c->id.ptr, sc_entity_id(c->after).ptr, c->id.len));
		assert_null(copy_find(&t->copy, c->id));
		ser_entity(&sb, c->after);
		copy_put(&t->copy, c->id, &sb, mark);
	}
	for (size_t i = 0; i < b->nupdated; i++) {
		const sc_watch_change *c = &b->updated[i];
		assert_non_null(c->before);
		assert_non_null(c->after);
		centry *e = copy_find(&t->copy, c->id);
		assert_non_null(e);
		assert_true(e->mark != mark); /* once per batch */
		ser_entity(&sb, c->before);
		assert_true(ser_equal(&sb, e));
		ser_entity(&sb2, c->after);
		/* A net change: the state is not the one it was. */
		assert_false(sb.n == sb2.n && !memcmp(sb.p, sb2.p, sb.n));
		check_changed(c);
		copy_put(&t->copy, c->id, &sb2, mark);
	}
	for (size_t i = 0; i < b->nremoved; i++) {
		const sc_watch_change *c = &b->removed[i];
		assert_non_null(c->before);
		assert_null(c->after);
		centry *e = copy_find(&t->copy, c->id);
		assert_non_null(e);
		assert_true(e->mark != mark);
		ser_entity(&sb, c->before);
		assert_true(ser_equal(&sb, e));
		copy_del(&t->copy, c->id);
	}
	if (b->kind != SC_WATCH_INITIAL) {
		t->last_version = b->to_version;
		t->last_position = b->to_position;
	}
}

/* One sc_watch_next without waiting, checked and applied; false when it
 * had to resync. */
static bool tw_step(tw *t, sc_cache *cache, const tk_refstate *rs,
		    const sc_watch_batch **last)
{
	const sc_watch_batch *b;
	sc_error err;
	int rc = sc_watch_next(t->w, 0, &b, &err);
	if (rc == SC_ERESYNC) {
		assert_null(b);
		sc_watch_stats st;
		sc_watch_stats_get(t->w, &st);
		assert_true(st.resync);
		assert_false(st.holding);
		assert_int_equal(sc_watch_next(t->w, 0, &b, NULL), SC_ERESYNC);
		return false;
	}
	if (rc)
		fail_msg("sc_watch_next: %s", err.message);
	tw_apply(t, b);
	if (last)
		*last = b;
	if (b->kind == SC_WATCH_INITIAL_DONE) {
		/* It ends at the version pinned at open. */
		check_initial(t);
	} else if (b->kind != SC_WATCH_INITIAL) {
		/* Single-threaded: the batch ends at the newest version. */
		sc_cache_stats st;
		sc_cache_stats_get(cache, &st);
		if (b->to_version != st.version ||
		    b->to_position != st.position)
			fail_msg("batch %d ends at version %llu position %llu, "
				 "the cache is at %llu, %llu (seed %llu)",
				 (int)b->kind,
				 (unsigned long long)b->to_version,
				 (unsigned long long)b->to_position,
				 (unsigned long long)st.version,
				 (unsigned long long)st.position,
				 (unsigned long long)seed);
		check_copy(t, rs);
	}
	return true;
}

/* Call next until the watcher is live and current. */
static void tw_drain(tw *t, sc_cache *cache, const tk_refstate *rs)
{
	for (;;) {
		const sc_watch_batch *b = NULL;
		if (!tw_step(t, cache, rs, &b))
			fail_msg("unexpected resync");
		if (b->kind == SC_WATCH_HEARTBEAT)
			return;
	}
}

/* ==== random events ======================================================= */

#define MAX_ATTRS 5

typedef struct gen {
	unsigned nids;
	char id[32];
	char names[MAX_ATTRS][4];
	char strs[MAX_ATTRS][12];
	sc_attr attrs[MAX_ATTRS];
	sc_event ev;
	uint64_t position;
} gen;

static const sc_event *gen_event(gen *g)
{
	unsigned i = (unsigned)rnd_below(g->nids);
	snprintf(g->id, sizeof g->id, "%s/e%u", i % 3 ? "p" : "q", i);
	unsigned r = (unsigned)rnd_below(100);
	sc_event_type type = r < 60   ? SC_EVENT_SET
			     : r < 70 ? SC_EVENT_UNSET
			     : r < 82 ? SC_EVENT_REPLACE
				      : SC_EVENT_DELETE;
	size_t n = rnd_below(MAX_ATTRS);
	for (size_t k = 0; k < n; k++) {
		g->names[k][0] = (char)('a' + rnd_below(5));
		sc_attr *a = &g->attrs[k];
		a->name = (sc_str){g->names[k], 1};
		unsigned t = (unsigned)rnd_below(4);
		a->value.type = t == 0	 ? SC_VALUE_NULL
				: t == 1 ? SC_VALUE_STRING
					 : SC_VALUE_INT;
		if (a->value.type == SC_VALUE_INT)
			a->value.u.i = (int64_t)rnd_below(4);
		if (a->value.type == SC_VALUE_STRING) {
			size_t len = rnd_below(sizeof g->strs[k]);
			for (size_t j = 0; j < len; j++)
				g->strs[k][j] = (char)('a' + rnd_below(3));
			a->value.u.s = (sc_str){g->strs[k], len};
		}
	}
	g->ev = (sc_event){
	    .position = ++g->position,
	    .entity = {g->id, strlen(g->id)},
	    .type = type,
	    .attrs = g->attrs,
	    .nattrs = n,
	    .time = (int64_t)g->position * 10,
	    .actor = {"w", rnd_below(2)},
	};
	return &g->ev;
}

/* A batch of events into the cache and the model; promoted or discarded.
 * Returns true when promoted. */
static bool write_batch(sc_cache *cache, tk_refstate *rs, gen *g, size_t n,
			bool promote)
{
	tk_refstate_begin(rs);
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = gen_event(g);
		sc_error err;
		if (sc_cache_apply(cache, ev, &err))
			fail_msg("apply: %s", err.message);
		tk_refstate_apply(rs, ev);
	}
	if (promote) {
		assert_int_equal(sc_cache_promote(cache), 0);
		tk_refstate_commit(rs);
	} else {
		sc_cache_discard(cache);
		tk_refstate_rollback(rs);
	}
	return promote;
}

static sc_cache *new_cache(void)
{
	sc_cache_options co = {.seed = rnd() | 1};
	sc_cache *cache;
	sc_error err;
	if (sc_cache_create(&co, &cache, &err))
		fail_msg("sc_cache_create: %s", err.message);
	return cache;
}

/* The set-up of a single-property case: the random stream from the seed,
 * a new cache and, with rs, an empty model. Undone by case_end. */
static sc_cache *case_begin(tk_refstate **rs)
{
	rnd_state = seed;
	sc_cache *cache = new_cache();
	if (rs)
		*rs = tk_refstate_new();
	return cache;
}

static void case_end(sc_cache *cache, tk_refstate *rs)
{
	tk_refstate_free(rs);
	sc_cache_destroy(cache);
}

/* After the watchers close: nothing waits, memory is the live set. */
static void check_memory_back(sc_cache *cache)
{
	sc_cache_reclaim(cache);
	sc_cache_stats st;
	sc_cache_stats_get(cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	assert_int_equal(st.memory_bytes, tk_live_bytes(cache));
}

/* ==== the random run ====================================================== */

#define NWATCH 6

static void test_model_random(void **state)
{
	(void)state;
	rnd_state = seed;
	unsigned rounds = short_run() ? 12 : 60;
	unsigned steps = short_run() ? 250 : 1200;
	size_t resyncs = 0, batches_checked = 0;
	for (unsigned round = 0; round < rounds; round++) {
		sc_cache *cache = new_cache();
		tk_refstate *rs = tk_refstate_new();
		gen g = {.nids = 8 + (unsigned)rnd_below(40)};
		tw ws[NWATCH];
		/* ws[0]: every entity, keeps up: one batch per promote. */
		tw_open(&ws[0], cache, rs, &filters[0], SC_WATCH_START_NOW, 0,
			0);
		for (int i = 1; i < NWATCH; i++) {
			size_t held =
			    i == NWATCH - 1 ? 300 + rnd_below(3000) : 0;
			tw_open(&ws[i], cache, rs,
				&filters[rnd_below(NFILTERS)],
				SC_WATCH_START_NOW, 0, held);
			ws[i].lag = (unsigned)rnd_below(95);
		}
		for (unsigned s = 0; s < steps; s++) {
			unsigned r = (unsigned)rnd_below(100);
			if (r < 65) {
				bool promoted =
				    write_batch(cache, rs, &g, 1 + rnd_below(6),
						rnd_below(100) < 80);
				const sc_watch_batch *b = NULL;
				tw_step(&ws[0], cache, rs, &b);
				batches_checked++;
				if (promoted && b->kind == SC_WATCH_CHANGES)
					assert_int_equal(b->to_version,
							 b->from_version + 1);
			} else if (r < 68) {
				/* Reopen one with the initial state. */
				int i = 1 + (int)rnd_below(NWATCH - 1);
				size_t held = ws[i].max_held;
				unsigned lag = ws[i].lag;
				tw_close(&ws[i]);
				tw_open(&ws[i], cache, rs,
					&filters[rnd_below(NFILTERS)],
					SC_WATCH_START_INITIAL,
					1 + rnd_below(6), held);
				ws[i].lag = lag;
			}
			for (int i = 1; i < NWATCH; i++) {
				if (rnd_below(100) < ws[i].lag)
					continue;
				batches_checked++;
				if (tw_step(&ws[i], cache, rs, NULL))
					continue;
				/* Over the limit: reopen with the state. */
				resyncs++;
				size_t held = ws[i].max_held;
				tfilter f = ws[i].f;
				tw_close(&ws[i]);
				tw_open(&ws[i], cache, rs, &f,
					SC_WATCH_START_INITIAL,
					1 + rnd_below(6), held);
				ws[i].lag = (unsigned)rnd_below(95);
			}
		}
		for (int i = 0; i < NWATCH; i++) {
			/* Over-limit watchers may fail here: reopen. */
			if (!tw_step(&ws[i], cache, rs, NULL)) {
				tfilter f = ws[i].f;
				tw_close(&ws[i]);
				tw_open(&ws[i], cache, rs, &f,
					SC_WATCH_START_INITIAL, 0, 0);
			}
			tw_drain(&ws[i], cache, rs);
			tw_close(&ws[i]);
		}
		check_memory_back(cache);
		tk_refstate_free(rs);
		sc_cache_destroy(cache);
	}
	printf("test_watch: %zu batches checked, %zu resyncs\n",
	       batches_checked, resyncs);
	assert_true(resyncs > 0);
}

/* ==== directed tests ====================================================== */

static void put_int(sc_cache *cache, tk_refstate *rs, uint64_t *pos,
		    const char *id, const char *name, int64_t v)
{
	sc_attr a = {.name = {name, strlen(name)}, .value.type = SC_VALUE_INT};
	a.value.u.i = v;
	sc_event ev = {.position = ++*pos,
		       .entity = {id, strlen(id)},
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .time = (int64_t)*pos};
	sc_error err;
	if (sc_cache_apply(cache, &ev, &err))
		fail_msg("apply: %s", err.message);
	if (rs)
		tk_refstate_apply(rs, &ev);
}

static void del(sc_cache *cache, tk_refstate *rs, uint64_t *pos, const char *id)
{
	sc_event ev = {.position = ++*pos,
		       .entity = {id, strlen(id)},
		       .type = SC_EVENT_DELETE,
		       .time = (int64_t)*pos};
	assert_int_equal(sc_cache_apply(cache, &ev, NULL), 0);
	if (rs)
		tk_refstate_apply(rs, &ev);
}

static bool id_is(sc_str id, const char *s)
{
	return id.len == strlen(s) && !memcmp(id.ptr, s, id.len);
}

/* A lagging watcher gets one batch of net changes: an entity added then
 * removed meanwhile is absent, one updated twice appears once with its
 * first and last states, one removed and added again is an update. */
static void test_coalesce_net(void **state)
{
	(void)state;
	tk_refstate *rs;
	sc_cache *cache = case_begin(&rs);
	uint64_t pos = 0;
	put_int(cache, rs, &pos, "keep", "a", 1);
	put_int(cache, rs, &pos, "gone", "a", 1);
	put_int(cache, rs, &pos, "back", "a", 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	tw t;
	tw_open(&t, cache, rs, &filters[0], SC_WATCH_START_INITIAL, 0, 0);
	tw_drain(&t, cache, rs);
	uint64_t from = t.last_version;

	put_int(cache, rs, &pos, "temp", "a", 1); /* added ... */
	put_int(cache, rs, &pos, "keep", "b", 2);
	assert_int_equal(sc_cache_promote(cache), 0);
	del(cache, rs, &pos, "temp"); /* ... and removed: not seen */
	put_int(cache, rs, &pos, "keep", "b", 3);
	del(cache, rs, &pos, "gone");
	del(cache, rs, &pos, "back");
	assert_int_equal(sc_cache_promote(cache), 0);
	put_int(cache, rs, &pos, "back", "a", 1);
	put_int(cache, rs, &pos, "new", "c", 7);
	assert_int_equal(sc_cache_promote(cache), 0);

	const sc_watch_batch *b;
	assert_true(tw_step(&t, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->from_version, from);
	assert_int_equal(b->to_version, from + 3);
	assert_int_equal(b->to_position, pos);
	assert_int_equal(b->nadded, 1);
	assert_true(id_is(b->added[0].id, "new"));
	assert_int_equal(b->nremoved, 1);
	assert_true(id_is(b->removed[0].id, "gone"));
	assert_int_equal(b->nupdated, 2);
	for (size_t i = 0; i < 2; i++) {
		const sc_watch_change *c = &b->updated[i];
		if (id_is(c->id, "keep")) {
			/* b appeared: only "b" changed. */
			assert_int_equal(c->nchanged, 1);
			assert_true(id_is(c->changed[0], "b"));
			sc_value v;
			assert_true(
			    sc_entity_find(c->after, c->changed[0], &v));
			assert_int_equal(v.u.i, 3);
			assert_false(
			    sc_entity_find(c->before, c->changed[0], &v));
		} else {
			/* Removed and added again with the same attributes:
			 * an update with no attribute changed. */
			assert_true(id_is(c->id, "back"));
			assert_int_equal(c->nchanged, 0);
		}
	}
	/* Caught up: a heartbeat at the same version. */
	assert_true(tw_step(&t, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	assert_int_equal(b->from_version, from + 3);
	assert_int_equal(b->to_version, from + 3);
	tw_close(&t);
	check_memory_back(cache);
	case_end(cache, rs);
}

/* The initial state comes in parts of at most initial_batch_max, then the
 * marker, then the changes; a filter applies to the initial state too. */
static void test_initial_state(void **state)
{
	(void)state;
	tk_refstate *rs;
	sc_cache *cache = case_begin(&rs);
	uint64_t pos = 0;
	char id[16];
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof id, "p/%d", i);
		put_int(cache, rs, &pos, id, "a", i);
		snprintf(id, sizeof id, "q/%d", i);
		put_int(cache, rs, &pos, id, "a", i);
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	put_int(cache, rs, &pos, "p/0", "z", 1);
	assert_int_equal(sc_cache_promote(cache), 0);

	tw t;
	tw_open(&t, cache, rs, &filters[1], SC_WATCH_START_INITIAL, 3, 0);
	size_t sizes[8], nparts = 0;
	const sc_watch_batch *b;
	do {
		assert_true(tw_step(&t, cache, rs, &b));
		if (b->kind == SC_WATCH_INITIAL) {
			assert_true(nparts < 8);
			sizes[nparts++] = b->nadded;
			assert_int_equal(b->to_version, 2);
			assert_int_equal(b->to_position, pos);
		}
	} while (b->kind == SC_WATCH_INITIAL);
	assert_int_equal(b->kind, SC_WATCH_INITIAL_DONE);
	assert_int_equal(b->to_version, 2);
	assert_int_equal(nparts, 4);
	assert_int_equal(sizes[0] + sizes[1] + sizes[2] + sizes[3], 10);
	assert_int_equal(sizes[3], 1);
	assert_int_equal(t.copy.n, 10);

	/* A change outside the prefix passes over without a batch; the next
	 * batch starts where the last one ended. */
	put_int(cache, rs, &pos, "q/1", "a", 100);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&t, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	assert_int_equal(b->from_version, 2);
	assert_int_equal(b->to_version, 3);
	/* Passing over it released version 2. */
	sc_watch_stats st;
	sc_watch_stats_get(t.w, &st);
	assert_int_equal(st.pinned, 3);
	assert_int_equal(st.versions_held, 0);
	put_int(cache, rs, &pos, "q/2", "a", 100);
	assert_int_equal(sc_cache_promote(cache), 0);
	put_int(cache, rs, &pos, "p/3", "a", 100);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&t, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->from_version, 3);
	assert_int_equal(b->to_version, 5);
	assert_int_equal(b->nupdated, 1);
	tw_close(&t);

	/* An empty state: the marker alone. */
	sc_cache *empty = new_cache();
	tk_refstate *rs0 = tk_refstate_new();
	tw_open(&t, empty, rs0, &filters[0], SC_WATCH_START_INITIAL, 0, 0);
	assert_true(tw_step(&t, empty, rs0, &b));
	assert_int_equal(b->kind, SC_WATCH_INITIAL_DONE);
	assert_int_equal(b->to_version, 0);
	tw_close(&t);
	tk_refstate_free(rs0);
	sc_cache_destroy(empty);
	case_end(cache, rs);
}

/* A predicate on the state: an entity coming to match is added, one that
 * stops matching is removed; a foreign partition matches nothing. */
static void test_predicate_and_partition(void **state)
{
	(void)state;
	tk_refstate *rs;
	sc_cache *cache = case_begin(&rs);
	uint64_t pos = 0;
	tw even, other;
	tw_open(&even, cache, rs, &filters[5], SC_WATCH_START_NOW, 0, 0);
	tw_open(&other, cache, rs, &filters[4], SC_WATCH_START_NOW, 0, 0);
	const sc_watch_batch *b;

	put_int(cache, rs, &pos, "x", "a", 1); /* odd: not matched */
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&even, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	put_int(cache, rs, &pos, "x", "a", 2);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&even, cache, rs, &b));
	assert_int_equal(b->nadded, 1);
	put_int(cache, rs, &pos, "x", "a", 4);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&even, cache, rs, &b));
	assert_int_equal(b->nupdated, 1);
	put_int(cache, rs, &pos, "x", "a", 5);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_true(tw_step(&even, cache, rs, &b));
	assert_int_equal(b->nremoved, 1);
	assert_non_null(b->removed[0].before);

	assert_true(tw_step(&other, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	assert_int_equal(b->to_version, 4);
	assert_int_equal(other.copy.n, 0);
	tw_close(&even);
	tw_close(&other);
	case_end(cache, rs);
}

/* Timeouts report the current version and position. */
static void test_heartbeat(void **state)
{
	(void)state;
	sc_cache *cache = case_begin(NULL);
	uint64_t pos = 0;
	put_int(cache, NULL, &pos, "a", "a", 1);
	assert_int_equal(sc_cache_promote(cache), 0);
	sc_watcher *w;
	assert_int_equal(sc_watch_open(cache, NULL, &w, NULL), 0);
	const sc_watch_batch *b;
	for (int timeout = 0; timeout <= 2; timeout++) {
		assert_int_equal(sc_watch_next(w, timeout, &b, NULL), 0);
		assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
		assert_int_equal(b->from_version, 1);
		assert_int_equal(b->to_version, 1);
		assert_int_equal(b->to_position, pos);
		assert_int_equal(b->nadded + b->nupdated + b->nremoved, 0);
	}
	sc_watch_stats st;
	sc_watch_stats_get(w, &st);
	assert_int_equal(st.version, 1);
	assert_int_equal(st.batches, 0);
	sc_watch_close(w);
	case_end(cache, NULL);
}

typedef struct waiter {
	sc_watcher *w;
	const sc_watch_batch *b;
	int rc;
	uint64_t to_version;
	size_t nadded;
} waiter;

static void *wait_thread(void *arg)
{
	waiter *x = arg;
	/* No limit: only a promote ends the wait. */
	x->rc = sc_watch_next(x->w, -1, &x->b, NULL);
	if (!x->rc) {
		x->to_version = x->b->to_version;
		x->nadded = x->b->nadded;
	}
	return NULL;
}

/* A promote on another thread wakes a watcher waiting without a timeout
 * (whether it started waiting before or after the promote). */
static void test_wakeup(void **state)
{
	(void)state;
	sc_cache *cache = case_begin(NULL);
	uint64_t pos = 0;
	for (int round = 0; round < 20; round++) {
		sc_watcher *w;
		assert_int_equal(sc_watch_open(cache, NULL, &w, NULL), 0);
		waiter x = {.w = w};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, wait_thread, &x), 0);
		char id[16];
		snprintf(id, sizeof id, "w%d", round);
		put_int(cache, NULL, &pos, id, "a", round);
		assert_int_equal(sc_cache_promote(cache), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(x.rc, 0);
		assert_int_equal(x.to_version, (uint64_t)round + 1);
		assert_int_equal(x.nadded, 1);
		sc_watch_close(w);
	}
	case_end(cache, NULL);
}

typedef struct opener {
	sc_cache *cache;
	sc_watcher *w;
	bool wait; /* hand over and wait to be told to exit */
	pthread_barrier_t handed;
} opener;

/* Open a watcher and exit, at once or when told. */
static void *open_and_exit(void *arg)
{
	opener *o = arg;
	if (sc_watch_open(o->cache, NULL, &o->w, NULL))
		o->w = NULL;
	if (o->wait) {
		pthread_barrier_wait(&o->handed); /* handed over */
		pthread_barrier_wait(&o->handed); /* may exit */
	}
	return NULL;
}

/* A watcher opened on one thread and used on another: the opener's exit,
 * before or after the other thread's first sc_watch_next, leaves its pins
 * alone (they go with the thread that calls sc_watch_next), so the versions
 * it has not delivered stay whole. */
static void test_handed_over(void **state)
{
	(void)state;
	for (int called_first = 0; called_first < 2; called_first++) {
		sc_cache *cache = case_begin(NULL);
		uint64_t pos = 0;
		put_int(cache, NULL, &pos, "a", "x", 0);
		assert_int_equal(sc_cache_promote(cache), 0);
		opener o = {.cache = cache, .wait = called_first};
		assert_int_equal(pthread_barrier_init(&o.handed, NULL, 2), 0);
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, open_and_exit, &o),
				 0);
		const sc_watch_batch *b;
		if (called_first) {
			pthread_barrier_wait(&o.handed);
			assert_non_null(o.w);
			assert_int_equal(sc_watch_next(o.w, 0, &b, NULL), 0);
			assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
			pthread_barrier_wait(&o.handed);
		}
		assert_int_equal(pthread_join(th, NULL), 0);
		pthread_barrier_destroy(&o.handed);
		assert_non_null(o.w);
		for (int i = 1; i <= 5; i++) {
			put_int(cache, NULL, &pos, "a", "x", i);
			assert_int_equal(sc_cache_promote(cache), 0);
		}
		sc_cache_reclaim(cache);
		sc_cache_stats st;
		sc_cache_stats_get(cache, &st);
		assert_int_equal(st.oldest_pinned, 1);
		assert_int_equal(sc_watch_next(o.w, 0, &b, NULL), 0);
		assert_int_equal(b->kind, SC_WATCH_CHANGES);
		assert_int_equal(b->from_version, 1);
		assert_int_equal(b->to_version, 6);
		assert_int_equal(b->nupdated, 1);
		sc_value v;
		assert_true(
		    sc_entity_find(b->updated[0].before, (sc_str){"x", 1}, &v));
		assert_int_equal(v.u.i, 0);
		assert_true(
		    sc_entity_find(b->updated[0].after, (sc_str){"x", 1}, &v));
		assert_int_equal(v.u.i, 5);
		sc_watch_close(o.w);
		check_memory_back(cache);
		case_end(cache, NULL);
	}
}

/* Stats show what a lagging watcher holds back; over its limit it lets go
 * and must resync; a new watcher with the initial state takes over. */
static void test_limit_and_stats(void **state)
{
	(void)state;
	tk_refstate *rs;
	sc_cache *cache = case_begin(&rs);
	uint64_t pos = 0;
	char id[16];
	for (int i = 0; i < 200; i++) {
		snprintf(id, sizeof id, "e%d", i);
		put_int(cache, rs, &pos, id, "a", i);
	}
	assert_int_equal(sc_cache_promote(cache), 0);
	tw lazy, strict;
	tw_open(&lazy, cache, rs, &filters[0], SC_WATCH_START_INITIAL, 0,
		SIZE_MAX);
	tw_open(&strict, cache, rs, &filters[0], SC_WATCH_START_INITIAL, 0,
		4096);
	tw_drain(&lazy, cache, rs);
	tw_drain(&strict, cache, rs);
	sc_watch_stats st;
	sc_watch_stats_get(lazy.w, &st);
	assert_int_equal(st.versions_held, 0);
	assert_int_equal(st.bytes_held, 0);
	for (int v = 0; v < 10; v++) {
		for (int i = 0; i < 20; i++) {
			snprintf(id, sizeof id, "e%d", (v * 20 + i) % 200);
			put_int(cache, rs, &pos, id, "b", v);
		}
		assert_int_equal(sc_cache_promote(cache), 0);
	}
	sc_watch_stats_get(lazy.w, &st);
	assert_int_equal(st.newest, 11);
	assert_int_equal(st.pinned, 1);
	assert_int_equal(st.versions_held, 10);
	assert_true(st.bytes_held > 4096);
	assert_true(st.holding);
	sc_cache_stats cs;
	sc_cache_stats_get(cache, &cs);
	assert_int_equal(cs.versions_awaiting, 10);
	assert_int_equal(st.bytes_held, cs.bytes_awaiting);

	/* The strict watcher is over its limit: it lets go. */
	assert_false(tw_step(&strict, cache, rs, NULL));
	sc_watch_stats_get(strict.w, &st);
	assert_int_equal(st.versions_held, 0);
	assert_int_equal(st.bytes_held, 0);
	/* The lazy one catches up in one batch and, once it asks for the
	 * next, holds nothing. */
	const sc_watch_batch *b;
	assert_true(tw_step(&lazy, cache, rs, &b));
	assert_int_equal(b->from_version, 1);
	assert_int_equal(b->to_version, 11);
	assert_int_equal(b->nupdated, 200);
	sc_watch_stats_get(lazy.w, &st);
	assert_int_equal(st.pinned, 1);	 /* the batch's states */
	assert_int_equal(st.batches, 3); /* initial, marker, changes */
	assert_int_equal(st.changes, 400);
	assert_true(tw_step(&lazy, cache, rs, &b));
	assert_int_equal(b->kind, SC_WATCH_HEARTBEAT);
	sc_watch_stats_get(lazy.w, &st);
	assert_int_equal(st.pinned, 11);
	assert_int_equal(st.versions_held, 0);
	assert_int_equal(st.bytes_held, 0);
	/* Both released their pins: every superseded version goes. */
	sc_cache_reclaim(cache);
	sc_cache_stats_get(cache, &cs);
	assert_int_equal(cs.versions_awaiting, 0);

	tw_close(&strict);
	tw_open(&strict, cache, rs, &filters[0], SC_WATCH_START_INITIAL, 0,
		4096);
	tw_drain(&strict, cache, rs);
	assert_int_equal(strict.copy.n, 200);
	tw_close(&strict);
	tw_close(&lazy);
	check_memory_back(cache);
	case_end(cache, rs);
}

/* An allocation failure while a batch is built changes nothing: the next
 * call delivers the whole batch. */
static void test_enomem(void **state)
{
	(void)state;
	tk_refstate *rs;
	sc_cache *cache = case_begin(&rs);
	gen g = {.nids = 60};
	tw t[2];
	tw_open(&t[0], cache, rs, &filters[0], SC_WATCH_START_NOW, 0, 0);
	tw_open(&t[1], cache, rs, &filters[1], SC_WATCH_START_NOW, 0, 0);
	size_t failures = 0;
	for (int round = 0; round < 12; round++) {
		write_batch(cache, rs, &g, 40, true);
		for (int i = 0; i < 2; i++) {
			for (long n = 0;; n++) {
				const sc_watch_batch *b;
				sc_testing_fail_alloc_after(n);
				int rc = sc_watch_next(t[i].w, 0, &b, NULL);
				sc_testing_fail_alloc_after(-1);
				if (rc == ENOMEM) {
					assert_null(b);
					failures++;
					continue;
				}
				assert_int_equal(rc, 0);
				tw_apply(&t[i], b);
				check_copy(&t[i], rs);
				break;
			}
		}
		/* An initial state under failures too. */
		tw_close(&t[1]);
		tw_open(&t[1], cache, rs, &filters[round % NFILTERS],
			SC_WATCH_START_INITIAL, 0, 0);
		for (long n = 0; !t[1].live; n++) {
			const sc_watch_batch *b;
			sc_testing_fail_alloc_after(n % 3);
			int rc = sc_watch_next(t[1].w, 0, &b, NULL);
			sc_testing_fail_alloc_after(-1);
			if (rc == ENOMEM) {
				failures++;
				continue;
			}
			assert_int_equal(rc, 0);
			tw_apply(&t[1], b);
		}
		check_copy(&t[1], rs);
	}
	assert_true(failures > 0);
	tw_close(&t[0]);
	tw_close(&t[1]);
	case_end(cache, rs);
}

/* On a store's cache every append is one promote: a batch covers whole
 * appends, its position range starting and ending at append boundaries. */
static void test_store_appends(void **state)
{
	(void)state;
	rnd_state = seed;
	assert_non_null(tk_tmproot_create("test_watch"));
	char dir[256];
	sc_store_options so = {.durability = SC_DURABILITY_NOSYNC,
			       .cache.seed = 11};
	sc_store *store = tk_store_create(dir, sizeof dir, &so);
	sc_error err;
	sc_cache *cache = sc_store_cache(store);
	tk_refstate *rs = tk_refstate_new();
	tw t;
	tw_open(&t, cache, rs, &filters[0], SC_WATCH_START_NOW, 0, 0);
	gen g = {.nids = 30};
	bool boundary[2048] = {true}; /* position 0: the empty start */
	/* Each event keeps its own copy of what gen_event reuses. */
	sc_event evs[12];
	sc_attr attrs[12][MAX_ATTRS];
	char idbuf[12][32], names[12][MAX_ATTRS][4], strs[12][MAX_ATTRS][12];
	size_t nbatches = 0;
	while (g.position < 1800) {
		size_t n = 1 + rnd_below(12);
		uint64_t start = g.position;
		for (size_t i = 0; i < n; i++) {
			evs[i] = *gen_event(&g);
			memcpy(idbuf[i], g.id, sizeof g.id);
			evs[i].entity.ptr = idbuf[i];
			memcpy(names[i], g.names, sizeof g.names);
			memcpy(strs[i], g.strs, sizeof g.strs);
			memcpy(attrs[i], g.attrs, sizeof g.attrs);
			for (size_t k = 0; k < evs[i].nattrs; k++) {
				attrs[i][k].name.ptr = names[i][k];
				if (attrs[i][k].value.type == SC_VALUE_STRING)
					attrs[i][k].value.u.s.ptr = strs[i][k];
			}
			evs[i].attrs = attrs[i];
			evs[i].position = 0;
			if (evs[i].type == SC_EVENT_DELETE)
				evs[i].nattrs = 0; /* the store insists */
		}
		uint64_t first;
		if (sc_store_append(store, evs, n, &first, &err))
			fail_msg("append: %s", err.message);
		assert_int_equal(first, start + 1);
		for (size_t i = 0; i < n; i++) {
			evs[i].position = first + i;
			tk_refstate_apply(rs, &evs[i]);
		}
		boundary[first + n - 1] = true;
		if (rnd_below(100) < 30) {
			const sc_watch_batch *b;
			assert_true(tw_step(&t, cache, rs, &b));
			assert_true(boundary[b->from_position]);
			assert_true(boundary[b->to_position]);
			nbatches++;
		}
	}
	tw_drain(&t, cache, rs);
	assert_true(nbatches > 0);
	tw_close(&t);
	tk_refstate_free(rs);
	sc_store_close(store);
	assert_int_equal(tk_tmproot_remove(), 0);
}

static void test_args(void **state)
{
	(void)state;
	sc_cache_options co = {.seed = 7, .max_readers = 3};
	sc_cache *cache;
	assert_int_equal(sc_cache_create(&co, &cache, NULL), 0);
	sc_error err;
	sc_watcher *w, *w2;
	assert_int_equal(sc_watch_open(NULL, NULL, &w, &err), SC_EINVAL);
	sc_watch_options o = {.prefix = {NULL, 3}};
	assert_int_equal(sc_watch_open(cache, &o, &w, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "prefix"));
	o = (sc_watch_options){.start = (sc_watch_start)9};
	assert_int_equal(sc_watch_open(cache, &o, &w, &err), SC_EINVAL);
	assert_int_equal(sc_watch_open(cache, NULL, &w, &err), 0);
	/* Two slots each: the third slot is not enough for another. */
	assert_int_equal(sc_watch_open(cache, NULL, &w2, &err), SC_EREADERS);
	assert_non_null(strstr(err.message, "two free reader slots"));
	assert_int_equal(sc_watch_next(NULL, 0, NULL, &err), SC_EINVAL);
	sc_watch_close(w);
	sc_watch_close(NULL);
	assert_string_equal(sc_strerror(SC_ERESYNC),
			    "watcher too far behind; reopen it with the "
			    "initial state");
	sc_cache_destroy(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model_random),
	    cmocka_unit_test(test_coalesce_net),
	    cmocka_unit_test(test_initial_state),
	    cmocka_unit_test(test_predicate_and_partition),
	    cmocka_unit_test(test_heartbeat),
	    cmocka_unit_test(test_wakeup),
	    cmocka_unit_test(test_handed_over),
	    cmocka_unit_test(test_limit_and_stats),
	    cmocka_unit_test(test_enomem),
	    cmocka_unit_test(test_store_appends),
	    cmocka_unit_test(test_args),
	};
	int rc = cmocka_run_group_tests(tests, setup_seed, NULL);
	free(sb.p);
	free(sb2.p);
	return rc;
}
