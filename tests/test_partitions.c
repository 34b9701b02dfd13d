/*
 * Partitions: an entity is (partition, id). The state of every partition is
 * the fold of its own events, checked against the reference model (which
 * keys its entities by (partition, id) and shares no code with the cache)
 * after random batches over many partitions, promoted or discarded, and
 * across snapshots and reopens of a store; the same id in two partitions
 * is two entities; reads by partition (get, len, iteration, as-of reads,
 * the events of an entity) see their partition alone; watchers filter by
 * partition; a store written by the previous format (tests/data/format3)
 * opens with the same state, verifies and takes appends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "statecache/cache.h"
#include "statecache/store.h"
#include "statecache/watch.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static bool short_run;
static const char *root;

static int setup(void **state)
{
	(void)state;
	seed = tk_seed("test_partitions");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	root = tk_tmproot_create("test_partitions");
	return root ? 0 : -1;
}

static sc_str S(const char *s)
{
	return (sc_str){s, strlen(s)};
}

static bool str_len_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* ==== partition names and random events =================================== */

/* Partition names: the default one, short ones, one that is a prefix of
 * another, bytes with a NUL, and one of the longest length. */
#define NPARTS 10
static char long_part[SC_EVENT_FIELD_MAX];
static sc_str parts[NPARTS];

/* Ids: a few, shared by every partition, one of the longest length. */
#define NIDS 6
static char long_id[SC_ENTITY_ID_MAX];
static sc_str ids[NIDS];

static void names_init(void)
{
	memset(long_part, 'p', sizeof long_part);
	memset(long_id, 'i', sizeof long_id);
	static const char bin[] = {'b', 0, 'x'};
	parts[0] = S("");
	parts[1] = S("a");
	parts[2] = S("ab");
	parts[3] = S("b");
	parts[4] = (sc_str){bin, sizeof bin};
	parts[5] = S("tenant-0042");
	parts[6] = S("x");
	parts[7] = S("zz");
	parts[8] = S("\xff");
	parts[9] = (sc_str){long_part, sizeof long_part};
	ids[0] = S("x");
	ids[1] = S("a");
	ids[2] = S("ab");
	ids[3] = S("user-1");
	ids[4] = S("tenant-0042");
	ids[5] = (sc_str){long_id, sizeof long_id};
}

typedef struct rev {
	sc_event ev;
	sc_attr attrs[4];
	char vals[4][16];
} rev;

static const char *const attr_names[] = {"a", "b", "c", "d"};

/* A random valid event of a random (partition, id). */
static void rev_make(uint64_t *rng, uint64_t pos, rev *r)
{
	memset(r, 0, sizeof *r);
	sc_event *ev = &r->ev;
	ev->partition = parts[tk_rand_below(rng, NPARTS)];
	ev->entity = ids[tk_rand_below(rng, NIDS)];
	ev->position = pos;
	ev->time = (int64_t)pos * 1000;
	ev->actor = tk_rand_below(rng, 2) ? S("svc") : S("");
	unsigned k = (unsigned)tk_rand_below(rng, 100);
	ev->type = k < 60   ? SC_EVENT_SET
		   : k < 75 ? SC_EVENT_UNSET
		   : k < 90 ? SC_EVENT_REPLACE
			    : SC_EVENT_DELETE;
	if (ev->type == SC_EVENT_DELETE)
		return;
	size_t n = (size_t)tk_rand_below(rng, 4);
	for (size_t i = 0; i < n; i++) {
		sc_attr *a = &r->attrs[i];
		a->name = S(attr_names[tk_rand_below(rng, 4)]);
		unsigned t = (unsigned)tk_rand_below(rng, 4);
		if (t == 0) {
			a->value.type = SC_VALUE_INT;
			a->value.u.i = (int64_t)tk_rand(rng);
		} else if (t == 1) {
			int len = snprintf(r->vals[i], sizeof r->vals[i], "v%u",
					   (unsigned)tk_rand_below(rng, 1000));
			a->value.type = SC_VALUE_STRING;
			a->value.u.s = (sc_str){r->vals[i], (size_t)len};
		} else if (t == 2 && ev->type == SC_EVENT_SET) {
			a->value.type = SC_VALUE_NULL;
		} else {
			a->value.type = SC_VALUE_BOOL;
			a->value.u.b = tk_rand_below(rng, 2);
		}
	}
	ev->attrs = r->attrs;
	ev->nattrs = n;
}

static void check_view(const tk_refstate *m, const sc_view *v)
{
	tk_view_check_model(v, m, "view differs from the model");
	assert_int_equal(tk_refstate_hash(m), tk_refstate_view_hash(v));
}

/* ==== the cache against the model ========================================= */

typedef struct diff_check {
	const tk_refstate *m; /* the model at the newer version */
	size_t n;
	bool ok;
} diff_check;

/* Every change a diff reports is the model's state of that entity. */
static int diff_one(void *ctx, sc_diff_kind kind, const sc_entity *old,
		    const sc_entity *new_)
{
	diff_check *d = ctx;
	d->n++;
	const sc_entity *e = new_ ? new_ : old;
	const tk_refentity *re = tk_refstate_lookup_in(
	    d->m, sc_entity_partition(e), sc_entity_id(e));
	if (kind == SC_DIFF_REMOVED)
		d->ok &= re == NULL;
	else
		d->ok &= tk_refstate_entity_equal(re, new_, NULL, 0);
	if (kind == SC_DIFF_CHANGED)
		d->ok &= str_len_eq(sc_entity_partition(old),
				    sc_entity_partition(new_));
	return 0;
}

static void test_cache_model(void **state)
{
	(void)state;
	names_init();
	uint64_t rng = seed;
	sc_cache_options co = {.seed = seed | 1};
	sc_cache *cache;
	assert_int_equal(sc_cache_create(&co, &cache, NULL), 0);
	sc_reader *r, *r_old;
	assert_int_equal(sc_reader_open(cache, &r, NULL), 0);
	assert_int_equal(sc_reader_open(cache, &r_old, NULL), 0);
	tk_refstate *m = tk_refstate_new();
	uint64_t pos = 0;
	int rounds = short_run ? 300 : 3000;
	for (int round = 0; round < rounds; round++) {
		const sc_view *before = sc_reader_begin(r_old);
		bool discard = tk_rand_below(&rng, 8) == 0;
		tk_refstate_begin(m);
		size_t n = 1 + (size_t)tk_rand_below(&rng, 24);
		uint64_t p = pos;
		for (size_t i = 0; i < n; i++) {
			rev e;
			rev_make(&rng, ++p, &e);
			assert_int_equal(sc_cache_apply(cache, &e.ev, NULL), 0);
			tk_refstate_apply(m, &e.ev);
			/* The writer reads the pending version by partition. */
			assert_true(tk_refstate_entity_equal(
			    tk_refstate_lookup_in(m, e.ev.partition,
						  e.ev.entity),
			    sc_cache_pending_get_in(cache, e.ev.partition,
						    e.ev.entity),
			    NULL, 0));
		}
		if (discard) {
			sc_cache_discard(cache);
			tk_refstate_rollback(m);
		} else {
			assert_int_equal(sc_cache_promote(cache), 0);
			tk_refstate_commit(m);
			pos = p;
		}
		const sc_view *v = sc_reader_begin(r);
		assert_int_equal(sc_view_len_all(v), tk_refstate_len(m));
		assert_int_equal(sc_cache_len(cache), tk_refstate_len(m));
		if (round % 10 == 0 || round == rounds - 1)
			check_view(m, v);
		/* Every reported change is the model's; a diff of a version
		 * with itself reports none. */
		diff_check d = {m, 0, true};
		assert_int_equal(sc_view_diff(before, v, diff_one, &d), 0);
		assert_true(d.ok);
		if (discard)
			assert_int_equal(d.n, 0);
		for (size_t k = 0; k < NPARTS; k++)
			assert_int_equal(sc_view_len_in(v, parts[k]),
					 tk_refstate_len_in(m, parts[k]));
		sc_reader_end(r_old);
	}
	sc_reader_close(r);
	sc_reader_close(r_old);
	tk_refstate_free(m);
	sc_cache_destroy(cache);
}

/* Apply the event at `position` that sets n = `n` on entity x of
 * partition `part` (NULL: no partition given). */
static void set_x(sc_cache *cache, uint64_t position, const char *part,
		  int64_t n)
{
	sc_attr a = {S("n"), {.type = SC_VALUE_INT, .u.i = n}};
	sc_event ev = {.position = position,
		       .entity = S("x"),
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .partition = part ? S(part) : (sc_str){NULL, 0}};
	assert_int_equal(sc_cache_apply(cache, &ev, NULL), 0);
}

/* One id in two partitions is two entities; the default partition is what
 * the calls without a partition read. */
static void test_same_id_two_partitions(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	set_x(cache, 1, NULL, 1);
	set_x(cache, 2, "eu", 2);
	set_x(cache, 3, "us", 3);
	assert_int_equal(sc_cache_promote(cache), 0);

	sc_reader *r;
	assert_int_equal(sc_reader_open(cache, &r, NULL), 0);
	sc_value v;
	const sc_entity *e0 = sc_reader_get(r, S("x"));
	assert_non_null(e0);
	assert_true(sc_entity_find(e0, S("n"), &v));
	assert_int_equal(v.u.i, 1);
	assert_int_equal(sc_entity_partition(e0).len, 0);
	assert_non_null(sc_entity_partition(e0).ptr);
	assert_ptr_equal(sc_reader_get_in(r, S(""), S("x")), e0);
	const sc_entity *eu = sc_reader_get_in(r, S("eu"), S("x"));
	assert_non_null(eu);
	assert_true(sc_entity_find(eu, S("n"), &v));
	assert_int_equal(v.u.i, 2);
	assert_memory_equal(sc_entity_partition(eu).ptr, "eu", 2);
	assert_false(sc_entity_equal(e0, eu));
	assert_null(sc_reader_get_in(r, S("e"), S("x")));
	assert_null(sc_reader_get_in(r, S("eu"), S("y")));

	const sc_view *view = sc_reader_begin(r);
	assert_int_equal(sc_view_len(view), 1);
	assert_int_equal(sc_view_len_in(view, S("eu")), 1);
	assert_int_equal(sc_view_len_in(view, S("nope")), 0);
	assert_int_equal(sc_view_len_all(view), 3);
	assert_int_equal(sc_cache_len(cache), 3);
	assert_int_equal(sc_view_partition_count(view), 3);
	assert_int_equal(sc_view_partition(view, 0).len, 0);
	assert_memory_equal(sc_view_partition(view, 1).ptr, "eu", 2);
	assert_memory_equal(sc_view_partition(view, 2).ptr, "us", 2);
	sc_view_iter it;
	sc_view_iter_init(view, &it);
	assert_ptr_equal(sc_view_iter_next(&it), e0);
	assert_null(sc_view_iter_next(&it));
	sc_view_iter_init_in(view, S("us"), &it);
	const sc_entity *eus = sc_view_iter_next(&it);
	assert_non_null(eus);
	assert_ptr_equal(sc_view_get_in(view, S("us"), S("x")), eus);
	assert_null(sc_view_iter_next(&it));
	sc_view_iter_init_in(view, S("none"), &it);
	assert_null(sc_view_iter_next(&it));
	size_t n = 0;
	sc_view_iter_init_all(view, &it);
	while (sc_view_iter_next(&it))
		n++;
	assert_int_equal(n, 3);

	/* Deleting one leaves the others; the emptied partition is no
	 * longer listed. */
	sc_event del = {.position = 4,
			.entity = S("x"),
			.type = SC_EVENT_DELETE,
			.partition = S("eu")};
	assert_int_equal(sc_cache_apply(cache, &del, NULL), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	view = sc_reader_begin(r);
	assert_null(sc_view_get_in(view, S("eu"), S("x")));
	assert_non_null(sc_view_get(view, S("x")));
	assert_non_null(sc_view_get_in(view, S("us"), S("x")));
	assert_int_equal(sc_view_partition_count(view), 2);
	assert_int_equal(sc_view_len_all(view), 2);

	/* A standalone fold keeps the partition, and refuses an event of
	 * another partition. */
	sc_attr a = {S("n"), {.type = SC_VALUE_INT, .u.i = 3}};
	sc_event ev = {.position = 3,
		       .entity = S("x"),
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1};
	sc_entity *s1, *s2;
	ev.partition = S("eu");
	assert_int_equal(sc_entity_apply(NULL, &ev, &s1, NULL), 0);
	assert_memory_equal(sc_entity_partition(s1).ptr, "eu", 2);
	ev.partition = S("us");
	sc_error err;
	assert_int_equal(sc_entity_apply(s1, &ev, &s2, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "partition"));
	sc_entity_free(s1);

	/* A partition over the limit is refused, nothing changed. */
	char big[SC_EVENT_FIELD_MAX + 1];
	memset(big, 'q', sizeof big);
	ev.partition = (sc_str){big, sizeof big};
	assert_int_equal(sc_cache_apply(cache, &ev, &err), SC_EINVAL);
	assert_false(sc_cache_pending(cache));
	/* Loading by partition. */
	assert_int_equal(sc_cache_load_entity_in(cache, S("eu"), S("y"), &a, 1,
						 5, S("l"), 4, NULL),
			 0);
	assert_non_null(sc_cache_pending_get_in(cache, S("eu"), S("y")));
	assert_null(sc_cache_pending_get(cache, S("y")));
	assert_int_equal(sc_cache_promote(cache), 0);
	view = sc_reader_begin(r);
	assert_non_null(sc_view_get_in(view, S("eu"), S("y")));
	sc_reader_close(r);
	sc_cache_destroy(cache);
}

/* ==== the store: snapshots, reopen, as-of reads ============================
 */

static sc_store_options store_opts(void)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	/* A small lag: reads cross the index and the tail. */
	o.index_lag = 7;
	return o;
}

static sc_store *open_store(const char *dir)
{
	sc_store_options o = store_opts();
	return tk_store_open(dir, &o);
}

static void check_store(sc_store *s, const tk_refstate *m)
{
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	check_view(m, sc_reader_begin(r));
	sc_reader_close(r);
	sc_error err;
	int rc = sc_store_verify(s, &err);
	if (rc)
		fprintf(stderr, "verify: %s\n", err.message);
	assert_int_equal(rc, 0);
}

/* Events of one entity through the store, in order. */
typedef struct collect {
	sc_str partition, id;
	uint64_t last;
	size_t n;
	bool ok;
} collect;

static int collect_one(void *ctx, const sc_event *ev)
{
	collect *c = ctx;
	c->ok &= str_len_eq(ev->partition, c->partition) &&
		 str_len_eq(ev->entity, c->id) && ev->position > c->last;
	c->last = ev->position;
	c->n++;
	return 0;
}

static void test_store_roundtrip(void **state)
{
	(void)state;
	names_init();
	char dir[600];
	tk_tmproot_dir(dir, sizeof dir);
	uint64_t rng = seed ^ 0x5a5a;
	tk_refstate *m = tk_refstate_new();
	sc_store *s = open_store(dir);
	enum { BATCHES = 40 };
	int batches = short_run ? BATCHES / 2 : BATCHES * 4;
	uint64_t pos = 0;
	/* The events as appended, to fold as-of states from. */
	size_t cap = (size_t)batches * 16;
	rev *log = calloc(cap, sizeof *log);
	assert_non_null(log);
	for (int b = 0; b < batches; b++) {
		rev evs[16];
		size_t n = 1 + (size_t)tk_rand_below(&rng, 16);
		sc_event list[16];
		for (size_t i = 0; i < n; i++) {
			rev_make(&rng, pos + 1 + i, &evs[i]);
			list[i] = evs[i].ev;
		}
		uint64_t first;
		assert_int_equal(sc_store_append(s, list, n, &first, NULL), 0);
		assert_int_equal(first, pos + 1);
		for (size_t i = 0; i < n; i++) {
			tk_refstate_apply(m, &list[i]);
			log[pos + i] = evs[i];
			log[pos + i].ev.attrs = log[pos + i].attrs;
			for (size_t k = 0; k < list[i].nattrs; k++) {
				sc_attr *a = &log[pos + i].attrs[k];
				if (a->value.type == SC_VALUE_STRING)
					a->value.u.s.ptr = log[pos + i].vals[k];
			}
		}
		pos += n;
		unsigned what = (unsigned)tk_rand_below(&rng, 8);
		if (what == 0) {
			assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
		} else if (what == 1) {
			sc_store_close(s);
			s = open_store(dir);
			check_store(s, m);
		}
	}
	check_store(s, m);
	assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
	sc_store_close(s);
	s = open_store(dir);
	check_store(s, m);

	/* As-of reads and the events of an entity, partition by partition,
	 * against a fold of the log. */
	for (size_t pi = 0; pi < NPARTS; pi++) {
		for (size_t ii = 0; ii < NIDS; ii++) {
			uint64_t at = 1 + tk_rand_below(&rng, pos);
			tk_refstate *f = tk_refstate_new();
			size_t want = 0;
			for (uint64_t k = 0; k < pos; k++) {
				const sc_event *ev = &log[k].ev;
				if (!str_len_eq(ev->partition, parts[pi]) ||
				    !str_len_eq(ev->entity, ids[ii]))
					continue;
				want++;
				if (ev->position <= at)
					tk_refstate_apply(f, ev);
			}
			sc_entity *e = NULL;
			int rc = sc_store_entity_at_in(s, parts[pi], ids[ii],
						       at, &e, NULL);
			const tk_refentity *re =
			    tk_refstate_lookup_in(f, parts[pi], ids[ii]);
			assert_int_equal(rc, re ? 0 : SC_NOTFOUND);
			assert_true(tk_refstate_entity_equal(re, e, NULL, 0));
			sc_entity_free(e);
			collect c = {parts[pi], ids[ii], 0, 0, true};
			assert_int_equal(
			    sc_store_entity_events_in(s, parts[pi], ids[ii], 0,
						      0, collect_one, &c, NULL),
			    0);
			assert_true(c.ok);
			assert_int_equal(c.n, want);
			if (pi == 0) {
				collect d = {parts[0], ids[ii], 0, 0, true};
				assert_int_equal(sc_store_entity_events(
						     s, ids[ii], 0, 0,
						     collect_one, &d, NULL),
						 0);
				assert_int_equal(d.n, want);
			}
			tk_refstate_free(f);
		}
	}
	free(log);
	sc_store_close(s);
	tk_refstate_free(m);
}

/* ==== watchers ==============================================================
 */

static void test_watch_partition(void **state)
{
	(void)state;
	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	set_x(cache, 1, "eu", 1);
	assert_int_equal(sc_cache_promote(cache), 0);

	sc_watch_options eu = {.start = SC_WATCH_START_INITIAL,
			       .by_partition = true,
			       .partition = S("eu")};
	sc_watch_options def = {.start = SC_WATCH_START_NOW,
				.by_partition = true};
	sc_watch_options all = {.start = SC_WATCH_START_NOW};
	sc_watcher *weu, *wdef, *wall;
	assert_int_equal(sc_watch_open(cache, &eu, &weu, NULL), 0);
	assert_int_equal(sc_watch_open(cache, &def, &wdef, NULL), 0);
	assert_int_equal(sc_watch_open(cache, &all, &wall, NULL), 0);

	const sc_watch_batch *b;
	assert_int_equal(sc_watch_next(weu, 0, &b, NULL), 0);
	assert_int_equal(b->kind, SC_WATCH_INITIAL);
	assert_int_equal(b->nadded, 1);
	assert_memory_equal(b->added[0].partition.ptr, "eu", 2);
	assert_int_equal(sc_watch_next(weu, 0, &b, NULL), 0);
	assert_int_equal(b->kind, SC_WATCH_INITIAL_DONE);

	/* x in the default partition, in us, and again in eu. */
	set_x(cache, 2, "", 1);
	set_x(cache, 3, "us", 1);
	set_x(cache, 4, "eu", 2);
	assert_int_equal(sc_cache_promote(cache), 0);

	assert_int_equal(sc_watch_next(weu, 0, &b, NULL), 0);
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->nadded + b->nremoved, 0);
	assert_int_equal(b->nupdated, 1);
	assert_int_equal(b->updated[0].partition.len, 2);
	assert_memory_equal(b->updated[0].partition.ptr, "eu", 2);

	assert_int_equal(sc_watch_next(wdef, 0, &b, NULL), 0);
	assert_int_equal(b->kind, SC_WATCH_CHANGES);
	assert_int_equal(b->nadded, 1);
	assert_int_equal(b->nupdated + b->nremoved, 0);
	assert_int_equal(b->added[0].partition.len, 0);

	assert_int_equal(sc_watch_next(wall, 0, &b, NULL), 0);
	assert_int_equal(b->nadded, 2);
	assert_int_equal(b->nupdated, 1);
	size_t named = 0;
	for (size_t i = 0; i < b->nadded; i++)
		named += b->added[i].partition.len != 0;
	assert_int_equal(named, 1);

	sc_watch_close(weu);
	sc_watch_close(wdef);
	sc_watch_close(wall);
	sc_cache_destroy(cache);
}

/* ==== a store of the previous format =======================================
 */

static int fold_event(void *ctx, const sc_event *ev)
{
	tk_refstate_apply(ctx, ev);
	return 0;
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		fprintf(stderr, "cannot open %s (run from the source tree)\n",
			from);
	assert_non_null(in);
	FILE *out = fopen(to, "wb");
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/* A copy of the store tests/data/<name> (SC_TEST_DATA, when set, names
 * tests/data) in a fresh directory (its path in dir). */
static void copy_data_store(char *dir, size_t dir_len, const char *name)
{
	tk_tmproot_dir(dir, dir_len);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "mkdir -m 700 '%s'", dir);
	assert_int_equal(system(cmd), 0);
	char file[700];
	snprintf(file, sizeof file, "%s/data.mdb", dir);
	const char *data = getenv("SC_TEST_DATA");
	char src[600];
	snprintf(src, sizeof src, "%s/%s/data.mdb", data ? data : "tests/data",
		 name);
	copy_file(src, file);
	assert_int_equal(chmod(file, 0600), 0);
}

/* tests/data/format3/data.mdb: 300 events of 40 entities (no partition)
 * ingested with the previous format's statecache, a snapshot at 200. */
static void test_previous_format(void **state)
{
	(void)state;
	char dir[600];
	copy_data_store(dir, sizeof dir, "format3");

	sc_store_options o = store_opts();
	o.create = false;
	sc_store *s = tk_store_open(dir, &o);
	assert_int_equal(sc_store_last_position(s), 300);
	/* The snapshot of the previous format was restored. */
	sc_snapshot_info snaps[4];
	assert_int_equal(sc_store_snapshots(s, snaps, 4, NULL), 1);
	assert_int_equal(snaps[0].position, 200);
	tk_refstate *m = tk_refstate_new();
	assert_int_equal(sc_store_events(s, 1, 0, fold_event, m, NULL), 0);
	assert_int_equal(tk_refstate_len(m), 35);
	check_store(s, m);
	/* What the previous format's `statecache scan` printed first. */
	const sc_entity *e;
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	e = sc_reader_get(r, S("acct-01"));
	assert_non_null(e);
	assert_int_equal(sc_entity_position(e), 270);
	sc_value v;
	assert_true(sc_entity_find(e, S("n"), &v));
	assert_int_equal(v.u.i, 269);
	sc_reader_close(r);
	/* Entity reads through the index it wrote. */
	collect c = {S(""), S("acct-01"), 0, 0, true};
	assert_int_equal(sc_store_entity_events(s, S("acct-01"), 0, 0,
						collect_one, &c, NULL),
			 0);
	assert_true(c.ok);
	assert_true(c.n > 0);

	/* It takes appends, partitions included, and reopens. */
	sc_attr a = {S("n"), {.type = SC_VALUE_INT, .u.i = 7}};
	sc_event evs[2] = {
	    {.entity = S("acct-01"),
	     .type = SC_EVENT_SET,
	     .attrs = &a,
	     .nattrs = 1,
	     .time = 5},
	    {.entity = S("acct-01"),
	     .type = SC_EVENT_SET,
	     .attrs = &a,
	     .nattrs = 1,
	     .time = 6,
	     .partition = S("eu")},
	};
	uint64_t first;
	assert_int_equal(sc_store_append(s, evs, 2, &first, NULL), 0);
	assert_int_equal(first, 301);
	evs[0].position = 301;
	evs[1].position = 302;
	tk_refstate_apply(m, &evs[0]);
	tk_refstate_apply(m, &evs[1]);
	check_store(s, m);
	assert_int_equal(sc_store_snapshot(s, NULL, NULL), 0);
	sc_store_close(s);
	s = open_store(dir);
	check_store(s, m);
	sc_store_close(s);
	tk_refstate_free(m);
}

/* Warnings of an open, kept. */
typedef struct warned {
	int n;
	char text[2048];
} warned;

static void on_warn(void *ctx, const char *msg)
{
	warned *w = ctx;
	w->n++;
	snprintf(w->text, sizeof w->text, "%s", msg);
}

/* tests/data/format3_partitions/data.mdb: 160 events of the ids a..e in
 * the default partition and in "eu" and "us" (the previous format put them
 * all in one namespace), indexed as they were appended, a snapshot at 100.
 * The first open under this format keys the index rows of the partitions'
 * events again and drops the snapshot, which holds the merged state. */
static void test_previous_format_partitions(void **state)
{
	(void)state;
	char dir[600];
	copy_data_store(dir, sizeof dir, "format3_partitions");

	warned w = {0};
	sc_store_options o = store_opts();
	o.create = false;
	o.warn = on_warn;
	o.warn_ctx = &w;
	sc_store *s = tk_store_open(dir, &o);
	assert_true(w.n >= 1);
	assert_non_null(strstr(w.text, "partitions"));
	assert_int_equal(sc_store_snapshots(s, NULL, 0, NULL), 0);
	tk_refstate *m = tk_refstate_new();
	assert_int_equal(sc_store_events(s, 1, 0, fold_event, m, NULL), 0);
	assert_true(tk_refstate_len_in(m, S("eu")) > 0);
	assert_true(tk_refstate_len_in(m, S("")) > 0);
	check_store(s, m);
	/* Entity reads find every event of (partition, id) through the rows
	 * keyed again. */
	static const char *const pn[] = {"", "eu", "us"};
	static const char *const in[] = {"a", "b", "c", "d", "e"};
	size_t total = 0;
	for (size_t p = 0; p < 3; p++) {
		for (size_t i = 0; i < 5; i++) {
			collect c = {S(pn[p]), S(in[i]), 0, 0, true};
			assert_int_equal(
			    sc_store_entity_events_in(s, S(pn[p]), S(in[i]), 0,
						      0, collect_one, &c, NULL),
			    0);
			assert_true(c.ok);
			total += c.n;
			sc_entity *e = NULL;
			int rc = sc_store_entity_at_in(s, S(pn[p]), S(in[i]),
						       160, &e, NULL);
			const tk_refentity *re =
			    tk_refstate_lookup_in(m, S(pn[p]), S(in[i]));
			assert_int_equal(rc, re ? 0 : SC_NOTFOUND);
			assert_true(tk_refstate_entity_equal(re, e, NULL, 0));
			sc_entity_free(e);
		}
	}
	assert_int_equal(total, 160);
	sc_store_close(s);
	/* Upgraded once: the next open warns no more. */
	w.n = 0;
	assert_int_equal(sc_store_open(dir, &o, &s, NULL), 0);
	assert_int_equal(w.n, 0);
	check_store(s, m);
	sc_store_close(s);
	tk_refstate_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_id_two_partitions),
	    cmocka_unit_test(test_cache_model),
	    cmocka_unit_test(test_store_roundtrip),
	    cmocka_unit_test(test_watch_partition),
	    cmocka_unit_test(test_previous_format),
	    cmocka_unit_test(test_previous_format_partitions),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
