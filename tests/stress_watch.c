/*
 * Concurrency stress for watchers (run under TSan and ASan).
 *
 * One writer moves balances between accounts in random batches, each
 * promoted (or, sometimes, discarded): the sum of "bal" over the accounts
 * is the same in every promoted version, accounts are closed and opened,
 * and every promote sets the entity "meta" to the number of the version it
 * makes. Four watchers follow it, each on its own thread, each keeping a
 * copy of what it watches:
 *   - every entity, from version 0, keeping up;
 *   - ids starting with "acct-1", opened with the initial state while the
 *     writer runs;
 *   - accounts whose balance is even (a predicate on the state);
 *   - every entity, stalling after each batch until the writer has promoted
 *     many more versions (the stall ends on the writer's own promote
 *     counter, signalled through a condition variable), then catching up in
 *     one coalesced batch, its stats showing what it holds back meanwhile.
 * Readers pin views and check the sum and "meta" meanwhile.
 *
 * Checked: in every batch of an unfiltered watcher, "meta" changed and now
 * names the version the batch ends at, and the copy's sum is the invariant
 * (a batch split inside a promote, or a pending state, breaks one or the
 * other); the filters hold for every change; at the end every copy equals
 * the final version, entity by entity, filter applied (nothing lost); and
 * once watchers and readers close, nothing waits for reclamation and the
 * cache's memory is the live set.
 *
 * SC_TEST_SEED=n repeats the writer's choices; SC_TEST_SHORT=1 shortens.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "statecache/cache.h"
#include "statecache/watch.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/testkit.h"
#include "tests/support/thread_testkit.h"

#define NACCOUNTS 128
#define START_BAL 1000
#define TOTAL	  ((int64_t)NACCOUNTS * START_BAL)
#define NREADERS  2
#define NWATCHERS 4

static uint64_t seed;

static uint64_t rnd_next(uint64_t *s)
{
	return tk_rand(s);
}

static bool short_run(void)
{
	return getenv("SC_TEST_SHORT") != NULL;
}

typedef struct shared {
	sc_cache *cache;
	_Atomic bool done;
	_Atomic uint64_t final_version;
	/* Promotes so far, and the condition the stalled watcher waits on. */
	pthread_mutex_t lock;
	pthread_cond_t promoted;
	uint64_t promotes; /* under lock */
	tk_failures fail;
	_Atomic size_t views_checked;
} shared;

static sc_str acct_id(char *buf, size_t cap, unsigned i)
{
	int n = snprintf(buf, cap, "acct-%u", i);
	return (sc_str){buf, (size_t)n};
}

static int64_t int_of(const sc_entity *e, const char *name)
{
	sc_value v;
	if (!sc_entity_find(e, (sc_str){name, strlen(name)}, &v) ||
	    v.type != SC_VALUE_INT)
		return INT64_MIN;
	return v.u.i;
}

static bool is_meta(sc_str id)
{
	return id.len == 4 && memcmp(id.ptr, "meta", 4) == 0;
}

/* Account number of an id "acct-N", or -1. */
static int acct_of(sc_str id)
{
	if (id.len < 6 || memcmp(id.ptr, "acct-", 5))
		return -1;
	int n = 0;
	for (size_t i = 5; i < id.len; i++) {
		if (id.ptr[i] < '0' || id.ptr[i] > '9')
			return -1;
		n = n * 10 + (id.ptr[i] - '0');
	}
	return n < NACCOUNTS ? n : -1;
}

/* ==== writer ============================================================== */

static void put(sc_cache *cache, sc_str id, const char *name, int64_t v,
		uint64_t *pos)
{
	sc_attr a = {.name = {name, strlen(name)}, .value.type = SC_VALUE_INT};
	a.value.u.i = v;
	sc_event ev = {.position = ++*pos,
		       .entity = id,
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .time = (int64_t)*pos};
	sc_error err;
	if (sc_cache_apply(cache, &ev, &err)) {
		fprintf(stderr, "apply: %s\n", err.message);
		abort();
	}
}

static void drop(sc_cache *cache, sc_str id, uint64_t *pos)
{
	sc_event ev = {.position = ++*pos,
		       .entity = id,
		       .type = SC_EVENT_DELETE,
		       .time = (int64_t)*pos};
	if (sc_cache_apply(cache, &ev, NULL))
		abort();
}

static void note_promote(shared *sh)
{
	pthread_mutex_lock(&sh->lock);
	sh->promotes++;
	pthread_cond_broadcast(&sh->promoted);
	pthread_mutex_unlock(&sh->lock);
}

static void run_writer(shared *sh, unsigned batches)
{
	sc_cache *cache = sh->cache;
	uint64_t r = seed, pos = 0, version = 0;
	int64_t bal[NACCOUNTS], saved[NACCOUNTS];
	bool open[NACCOUNTS], saved_open[NACCOUNTS];
	char id[32], id2[32];
	for (unsigned i = 0; i < NACCOUNTS; i++) {
		bal[i] = START_BAL;
		open[i] = true;
		put(cache, acct_id(id, sizeof id, i), "bal", bal[i], &pos);
	}
	put(cache, (sc_str){"meta", 4}, "version", (int64_t)++version, &pos);
	assert_int_equal(sc_cache_promote(cache), 0);
	note_promote(sh);
	for (unsigned b = 0; b < batches; b++) {
		memcpy(saved, bal, sizeof bal);
		memcpy(saved_open, open, sizeof open);
		unsigned n = 1 + (unsigned)(rnd_next(&r) % 8);
		for (unsigned k = 0; k < n; k++) {
			unsigned i = (unsigned)(rnd_next(&r) % NACCOUNTS);
			unsigned j = (unsigned)(rnd_next(&r) % NACCOUNTS);
			if (i == j)
				continue;
			unsigned what = (unsigned)(rnd_next(&r) % 10);
			if (!open[j]) {
				/* Open j with i's money (i keeps 0). */
				if (!open[i])
					continue;
				bal[j] = bal[i];
				bal[i] = 0;
				open[j] = true;
				put(cache, acct_id(id, sizeof id, j), "bal",
				    bal[j], &pos);
				put(cache, acct_id(id2, sizeof id2, i), "bal",
				    0, &pos);
			} else if (!open[i]) {
				continue;
			} else if (what == 0) {
				/* Close i into j. */
				bal[j] += bal[i];
				bal[i] = 0;
				open[i] = false;
				put(cache, acct_id(id, sizeof id, j), "bal",
				    bal[j], &pos);
				drop(cache, acct_id(id2, sizeof id2, i), &pos);
			} else {
				int64_t amt = (int64_t)(rnd_next(&r) % 50) - 25;
				bal[i] -= amt;
				bal[j] += amt;
				put(cache, acct_id(id, sizeof id, i), "bal",
				    bal[i], &pos);
				put(cache, acct_id(id2, sizeof id2, j), "bal",
				    bal[j], &pos);
			}
		}
		put(cache, (sc_str){"meta", 4}, "version", (int64_t)version + 1,
		    &pos);
		if (rnd_next(&r) % 10 == 0) {
			sc_cache_discard(cache);
			memcpy(bal, saved, sizeof bal);
			memcpy(open, saved_open, sizeof open);
			continue;
		}
		assert_int_equal(sc_cache_promote(cache), 0);
		version++;
		note_promote(sh);
	}
	atomic_store(&sh->final_version, version);
	pthread_mutex_lock(&sh->lock);
	atomic_store(&sh->done, true);
	pthread_cond_broadcast(&sh->promoted);
	pthread_mutex_unlock(&sh->lock);
}

/* ==== watchers ============================================================ */

typedef enum wkind { W_ALL, W_PREFIX, W_EVEN, W_STALLED } wkind;

typedef struct slot {
	bool present;
	int64_t bal;
	uint64_t position;
} slot;

typedef struct watcher_ctx {
	shared *sh;
	wkind kind;
	sc_watcher *w;
	slot acct[NACCOUNTS];
	slot meta;
	bool live;
	uint64_t last_version;
	size_t batches, changes, stalls, coalesced;
	uint64_t max_held_versions;
	size_t max_held_bytes;
} watcher_ctx;

static bool even_bal(void *ctx, const sc_entity *e)
{
	(void)ctx;
	int64_t b = int_of(e, "bal");
	return b != INT64_MIN && (b & 1) == 0;
}

/* Whether the watcher of kind k wants entity e (NULL: no). */
static bool wants(wkind k, const sc_entity *e)
{
	if (!e)
		return false;
	sc_str id = sc_entity_id(e);
	switch (k) {
	case W_PREFIX:
		return id.len >= 6 && memcmp(id.ptr, "acct-1", 6) == 0;
	case W_EVEN:
		return even_bal(NULL, e);
	default:
		return true;
	}
}

static slot *slot_of(watcher_ctx *c, sc_str id)
{
	if (is_meta(id))
		return &c->meta;
	int i = acct_of(id);
	return i < 0 ? NULL : &c->acct[i];
}

static void apply_change(watcher_ctx *c, const sc_watch_change *ch,
			 bool present)
{
	slot *s = slot_of(c, ch->id);
	if (!s) {
		tk_failure(&c->sh->fail, "watcher %d: unknown id %.*s",
			   (int)c->kind, (int)ch->id.len, ch->id.ptr);
		return;
	}
	if (s->present == present && !ch->before) {
		tk_failure(&c->sh->fail, "watcher %d: %.*s added twice",
			   (int)c->kind, (int)ch->id.len, ch->id.ptr);
		return;
	}
	if (ch->before &&
	    (!s->present || s->position != sc_entity_position(ch->before))) {
		tk_failure(&c->sh->fail,
			   "watcher %d: %.*s before-state is not the copy",
			   (int)c->kind, (int)ch->id.len, ch->id.ptr);
		return;
	}
	const sc_entity *e = present ? ch->after : ch->before;
	if ((ch->after && !wants(c->kind, ch->after)) ||
	    (ch->before && !wants(c->kind, ch->before)))
		tk_failure(&c->sh->fail,
			   "watcher %d: a change outside its filter",
			   (int)c->kind);
	s->present = present;
	s->bal = int_of(e, is_meta(ch->id) ? "version" : "bal");
	s->position = sc_entity_position(e);
}

static void check_batch(watcher_ctx *c, const sc_watch_batch *b)
{
	bool meta_seen = false;
	for (size_t i = 0; i < b->nadded; i++) {
		apply_change(c, &b->added[i], true);
		meta_seen |= is_meta(b->added[i].id);
	}
	for (size_t i = 0; i < b->nupdated; i++) {
		apply_change(c, &b->updated[i], true);
		meta_seen |= is_meta(b->updated[i].id);
	}
	for (size_t i = 0; i < b->nremoved; i++)
		apply_change(c, &b->removed[i], false);
	if (b->kind == SC_WATCH_INITIAL)
		return;
	if (b->kind == SC_WATCH_INITIAL_DONE) {
		c->last_version = b->to_version;
		return;
	}
	if (b->from_version != c->last_version)
		tk_failure(&c->sh->fail,
			   "watcher %d: batch from %llu, last ended at %llu",
			   (int)c->kind, (unsigned long long)b->from_version,
			   (unsigned long long)c->last_version);
	c->last_version = b->to_version;
	if (b->kind != SC_WATCH_CHANGES)
		return;
	if (b->to_version > b->from_version + 1)
		c->coalesced++;
	if (c->kind != W_ALL && c->kind != W_STALLED)
		return;
	/* Every promote changes meta: it is in every batch, at the end. */
	if (!meta_seen || !c->meta.present ||
	    (uint64_t)c->meta.bal != b->to_version)
		tk_failure(
		    &c->sh->fail,
		    "watcher %d: batch (%llu,%llu] does not end with meta "
		    "at its version (meta %lld)",
		    (int)c->kind, (unsigned long long)b->from_version,
		    (unsigned long long)b->to_version, (long long)c->meta.bal);
	int64_t sum = 0;
	for (unsigned i = 0; i < NACCOUNTS; i++)
		if (c->acct[i].present)
			sum += c->acct[i].bal;
	if (sum != TOTAL)
		tk_failure(&c->sh->fail,
			   "watcher %d: sum %lld after batch (%llu,%llu]",
			   (int)c->kind, (long long)sum,
			   (unsigned long long)b->from_version,
			   (unsigned long long)b->to_version);
}

/* The stalled watcher: wait until the writer has promoted `more` versions
 * since the watcher's last batch (or is done). */
static void stall(watcher_ctx *c, uint64_t more)
{
	shared *sh = c->sh;
	pthread_mutex_lock(&sh->lock);
	uint64_t target = c->last_version + more;
	while (sh->promotes < target && !atomic_load(&sh->done))
		pthread_cond_wait(&sh->promoted, &sh->lock);
	bool reached = sh->promotes >= target;
	pthread_mutex_unlock(&sh->lock);
	sc_watch_stats st;
	sc_watch_stats_get(c->w, &st);
	if (reached) {
		c->stalls++;
		/* It pins at most its last batch's start: >= `more` behind. */
		if (st.versions_held < more || !st.holding)
			tk_failure(&sh->fail,
				   "stalled watcher holds %llu versions back "
				   "after %llu promotes",
				   (unsigned long long)st.versions_held,
				   (unsigned long long)more);
	}
	if (st.versions_held > c->max_held_versions)
		c->max_held_versions = st.versions_held;
	if (st.bytes_held > c->max_held_bytes)
		c->max_held_bytes = st.bytes_held;
}

static void *watcher_main(void *arg)
{
	watcher_ctx *c = arg;
	shared *sh = c->sh;
	uint64_t stall_for = short_run() ? 40 : 300;
	for (;;) {
		if (c->kind == W_STALLED && c->live)
			stall(c, stall_for);
		const sc_watch_batch *b;
		sc_error err;
		int rc = sc_watch_next(c->w, 20, &b, &err);
		if (rc) {
			tk_failure(&sh->fail, "watcher %d: next: %s",
				   (int)c->kind, err.message);
			break;
		}
		if (b->kind == SC_WATCH_INITIAL_DONE)
			c->live = true;
		if (b->kind != SC_WATCH_HEARTBEAT) {
			c->batches++;
			c->changes += b->nadded + b->nupdated + b->nremoved;
		}
		check_batch(c, b);
		if (tk_failures_count(&sh->fail))
			break;
		if (c->live && atomic_load(&sh->done) &&
		    c->last_version == atomic_load(&sh->final_version))
			break;
	}
	return NULL;
}

/* ==== readers ============================================================= */

static void *reader_main(void *arg)
{
	shared *sh = arg;
	sc_reader *rd;
	sc_error err;
	if (sc_reader_open(sh->cache, &rd, &err)) {
		tk_failure(&sh->fail, "reader_open: %s", err.message);
		return NULL;
	}
	uint64_t last = 0;
	while (!atomic_load(&sh->done) && !tk_failures_count(&sh->fail)) {
		const sc_view *v = sc_reader_begin(rd);
		uint64_t ver = sc_view_version(v);
		if (ver < last)
			tk_failure(
			    &sh->fail, "reader went back from %llu to %llu",
			    (unsigned long long)last, (unsigned long long)ver);
		last = ver;
		if (ver) {
			int64_t sum = 0;
			sc_view_iter it;
			sc_view_iter_init(v, &it);
			for (const sc_entity *e; (e = sc_view_iter_next(&it));)
				if (!is_meta(sc_entity_id(e)))
					sum += int_of(e, "bal");
			const sc_entity *m =
			    sc_view_get(v, (sc_str){"meta", 4});
			if (sum != TOTAL || !m ||
			    (uint64_t)int_of(m, "version") != ver)
				tk_failure(
				    &sh->fail, "reader: version %llu sum %lld",
				    (unsigned long long)ver, (long long)sum);
		}
		sc_reader_end(rd);
		atomic_fetch_add(&sh->views_checked, 1);
	}
	sc_reader_close(rd);
	return NULL;
}

/* ==== the run ============================================================= */

typedef struct opener {
	watcher_ctx *c;
	sc_watch_options opt;
} opener;

/* The prefix watcher opens on its own thread, while the writer runs. */
static void *late_watcher_main(void *arg)
{
	opener *o = arg;
	sc_error err;
	if (sc_watch_open(o->c->sh->cache, &o->opt, &o->c->w, &err)) {
		tk_failure(&o->c->sh->fail, "late open: %s", err.message);
		return NULL;
	}
	return watcher_main(o->c);
}

/* The copy equals the final version, filter applied. */
static void check_final(watcher_ctx *c, const sc_view *v)
{
	char id[32];
	for (unsigned i = 0; i < NACCOUNTS; i++) {
		const sc_entity *e = sc_view_get(v, acct_id(id, sizeof id, i));
		bool want = wants(c->kind, e);
		const slot *s = &c->acct[i];
		if (want != s->present ||
		    (want && (s->bal != int_of(e, "bal") ||
			      s->position != sc_entity_position(e))))
			fail_msg("watcher %d: %s differs at the end (present "
				 "%d/%d, seed %llu)",
				 (int)c->kind, id, (int)s->present, (int)want,
				 (unsigned long long)seed);
	}
	const sc_entity *m = sc_view_get(v, (sc_str){"meta", 4});
	assert_true(wants(c->kind, m) == c->meta.present);
}

static void test_stress(void **state)
{
	(void)state;
	shared sh = {0};
	pthread_mutex_init(&sh.lock, NULL);
	pthread_cond_init(&sh.promoted, NULL);
	tk_failures_init(&sh.fail);
	sc_cache_options co = {.seed = seed | 1, .max_readers = 16};
	assert_int_equal(sc_cache_create(&co, &sh.cache, NULL), 0);

	watcher_ctx ws[NWATCHERS];
	memset(ws, 0, sizeof ws);
	pthread_t wth[NWATCHERS], rth[NREADERS];
	opener late = {.c = &ws[W_PREFIX],
		       .opt = {.start = SC_WATCH_START_INITIAL,
			       .prefix = {"acct-1", 6},
			       .initial_batch_max = 7}};
	for (int k = 0; k < NWATCHERS; k++) {
		ws[k].sh = &sh;
		ws[k].kind = (wkind)k;
		ws[k].live = true;
		if (k == W_PREFIX) {
			ws[k].live = false;
			continue;
		}
		sc_watch_options o = {.max_held_bytes = SIZE_MAX};
		if (k == W_EVEN)
			o.match = even_bal;
		sc_error err;
		if (sc_watch_open(sh.cache, &o, &ws[k].w, &err))
			fail_msg("watch_open: %s", err.message);
	}
	for (int k = 0; k < NWATCHERS; k++)
		assert_int_equal(
		    pthread_create(
			&wth[k], NULL,
			k == W_PREFIX ? late_watcher_main : watcher_main,
			k == W_PREFIX ? (void *)&late : (void *)&ws[k]),
		    0);
	tk_threads_start(rth, NREADERS, reader_main, &sh, 0);

	run_writer(&sh, short_run() ? 1500 : 15000);

	tk_threads_join(wth, NWATCHERS);
	tk_threads_join(rth, NREADERS);
	if (tk_failures_count(&sh.fail))
		fail_msg("%d failures, first: %s (seed %llu)",
			 tk_failures_count(&sh.fail), sh.fail.first,
			 (unsigned long long)seed);

	sc_reader *rd;
	assert_int_equal(sc_reader_open(sh.cache, &rd, NULL), 0);
	const sc_view *v = sc_reader_begin(rd);
	assert_int_equal(sc_view_version(v), atomic_load(&sh.final_version));
	for (int k = 0; k < NWATCHERS; k++) {
		check_final(&ws[k], v);
		printf("stress_watch: watcher %d: %zu batches, %zu changes, "
		       "%zu coalesced, %zu stalls, up to %llu versions and "
		       "%zu bytes held\n",
		       k, ws[k].batches, ws[k].changes, ws[k].coalesced,
		       ws[k].stalls,
		       (unsigned long long)ws[k].max_held_versions,
		       ws[k].max_held_bytes);
	}
	sc_reader_close(rd);
	assert_true(ws[W_STALLED].stalls > 0);
	assert_true(ws[W_STALLED].coalesced > 0);
	printf("stress_watch: %llu versions, %zu reader views checked\n",
	       (unsigned long long)atomic_load(&sh.final_version),
	       atomic_load(&sh.views_checked));

	/* While the stalled watcher is open its pin holds versions back;
	 * once every watcher closes, the cache gets its memory back. */
	for (int k = 0; k < NWATCHERS; k++)
		sc_watch_close(ws[k].w);
	sc_cache_reclaim(sh.cache);
	sc_cache_stats st;
	sc_cache_stats_get(sh.cache, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	assert_int_equal(st.readers, 0);
	assert_int_equal(st.memory_bytes, tk_live_bytes(sh.cache));
	sc_cache_destroy(sh.cache);
	pthread_mutex_destroy(&sh.lock);
	pthread_cond_destroy(&sh.promoted);
	tk_failures_destroy(&sh.fail);
}

static int setup_seed(void **state)
{
	(void)state;
	seed = tk_seed("stress_watch");
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stress),
	};
	return cmocka_run_group_tests(tests, setup_seed, NULL);
}
