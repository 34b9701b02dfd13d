/*
 * sc_store_watch_resume: a watch resumed after a log position, across a
 * reopen of the store, delivers as its first batch exactly the change set
 * the model computes (the entities the events after the position touched,
 * each with its state then and now, classified by the filter), and the
 * watcher it hands over to goes on from the version that batch ends at:
 * its next batch is the model's change set from there, so nothing is
 * missed or doubled. A resume built on a thread that has exited keeps
 * its batch whole. A position beyond the end of the log is an error.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/store.h"
#include "statecache/watch.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#define NENT 150

static const char *root;
static uint64_t seed;

static void event_at(uint64_t pos, tk_event *out)
{
	tk_event_gen(seed, pos - 1, NENT, (int64_t)(5000 + pos), out);
	out->ev.position = pos;
}

/* The model folded up to `pos`. */
static tk_refstate *model_at(uint64_t pos)
{
	tk_refstate *m = tk_refstate_new();
	static tk_event e;
	for (uint64_t p = 1; p <= pos; p++) {
		event_at(p, &e);
		tk_refstate_apply(m, &e.ev);
	}
	return m;
}

static sc_store *open_store(const char *dir, bool create)
{
	sc_store_options o = {0};
	o.create = create;
	o.index_lag = 16; /* as-of reads over the index and the tail */
	o.snapshot_every = 97;
	return tk_store_open(dir, &o);
}

static void append_to(sc_store *s, uint64_t to, uint64_t *rng)
{
	static tk_event e[8];
	sc_event evs[8];
	while (sc_store_last_position(s) < to) {
		uint64_t last = sc_store_last_position(s);
		size_t n = 1 + (size_t)tk_rand_below(rng, 8);
		if (n > to - last)
			n = (size_t)(to - last);
		for (size_t i = 0; i < n; i++) {
			event_at(last + 1 + i, &e[i]);
			evs[i] = e[i].ev;
		}
		sc_error err;
		assert_int_equal(sc_store_append(s, evs, n, NULL, &err), 0);
	}
}

static bool has_prefix(sc_str id, const char *prefix)
{
	size_t n = strlen(prefix);
	return id.len >= n && memcmp(id.ptr, prefix, n) == 0;
}

static bool same(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static const sc_watch_change *find(const sc_watch_change *v, size_t n,
				   sc_str partition, sc_str id)
{
	const sc_watch_change *hit = NULL;
	for (size_t i = 0; i < n; i++)
		if (same(v[i].id, id) && same(v[i].partition, partition)) {
			assert_null(hit); /* each entity once */
			hit = &v[i];
		}
	return hit;
}

/* The batch holds exactly the model's change set from `a` (at position
 * pa) to `b` (at pb) for ids with `prefix`. */
static void check_changes(const sc_watch_batch *batch, const tk_refstate *a,
			  uint64_t pa, const tk_refstate *b, uint64_t pb,
			  const char *prefix)
{
	size_t want[3] = {0, 0, 0};
	/* Distinct (partition, id) the events in (pa, pb] touched: the test
	 * kit's events are in the default partition or in "p1". */
	static char seen[2][NENT + 1];
	memset(seen, 0, sizeof seen);
	static tk_event e;
	char why[256];
	for (uint64_t p = pa + 1; p <= pb; p++) {
		event_at(p, &e);
		sc_str id = e.ev.entity, part = e.ev.partition;
		unsigned num = (unsigned)strtoul(id.ptr + 1, NULL, 10);
		assert_true(num <= NENT);
		int pi = part.len != 0;
		if (seen[pi][num] || !has_prefix(id, prefix))
			continue;
		seen[pi][num] = 1;
		const tk_refentity *old = tk_refstate_lookup_in(a, part, id);
		const tk_refentity *now = tk_refstate_lookup_in(b, part, id);
		const sc_watch_change *c;
		if (old && now) {
			want[1]++;
			c = find(batch->updated, batch->nupdated, part, id);
			assert_non_null(c);
			assert_true(tk_refstate_entity_equal(old, c->before,
							     why, sizeof why));
			assert_true(tk_refstate_entity_equal(now, c->after, why,
							     sizeof why));
		} else if (now) {
			want[0]++;
			c = find(batch->added, batch->nadded, part, id);
			assert_non_null(c);
			assert_null(c->before);
			assert_true(tk_refstate_entity_equal(now, c->after, why,
							     sizeof why));
		} else if (old) {
			want[2]++;
			c = find(batch->removed, batch->nremoved, part, id);
			assert_non_null(c);
			assert_null(c->after);
			assert_true(tk_refstate_entity_equal(old, c->before,
							     why, sizeof why));
		}
	}
	assert_int_equal(batch->nadded, want[0]);
	assert_int_equal(batch->nupdated, want[1]);
	assert_int_equal(batch->nremoved, want[2]);
	assert_int_equal(batch->from_position, pa);
	assert_int_equal(batch->to_position, pb);
}

typedef struct resume_arg {
	sc_store *s;
	sc_watch_options o;
	uint64_t pos;
	sc_watcher *w;
	sc_watch_resume *r;
	int rc;
	sc_error err;
} resume_arg;

static void *resume_thread(void *p)
{
	resume_arg *a = p;
	a->rc =
	    sc_store_watch_resume(a->s, &a->o, a->pos, &a->w, &a->r, &a->err);
	return NULL;
}

/* With on_thread, the resume is built on a thread that exits at once, and
 * the store appends (promoting and reclaiming) before this thread reads
 * the first batch: the batch's version stays pinned until it is freed. */
static void resume_case(uint64_t before_reopen, uint64_t pos, uint64_t total,
			const char *prefix, bool on_thread)
{
	char dir[512];
	tk_tmproot_dir(dir, sizeof dir);
	uint64_t rng = seed ^ pos;
	sc_store *s = open_store(dir, true);
	append_to(s, before_reopen, &rng);
	sc_store_close(s);
	s = open_store(dir, false);
	append_to(s, total, &rng);

	resume_arg ra = {.s = s, .pos = pos};
	ra.o.prefix = (sc_str){prefix, strlen(prefix)};
	uint64_t now = total;
	if (on_thread) {
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, resume_thread, &ra),
				 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		if (!ra.rc)
			append_to(s, now += 30, &rng);
	} else {
		resume_thread(&ra);
	}
	if (ra.rc)
		fprintf(stderr, "resume: %s\n", ra.err.message);
	assert_int_equal(ra.rc, 0);
	sc_watcher *w = ra.w;
	sc_watch_resume *r = ra.r;
	sc_error err;
	const sc_watch_batch *first = sc_watch_resume_batch(r);
	assert_int_equal(first->kind, SC_WATCH_CHANGES);
	tk_refstate *a = model_at(pos), *b = model_at(total);
	check_changes(first, a, pos, b, total, prefix);
	uint64_t v = first->to_version;
	sc_watch_resume_free(r);

	/* The hand-over: the watcher's next batch starts where the first
	 * ended and holds the change set from there. */
	const sc_watch_batch *nb;
	if (!on_thread) {
		assert_int_equal(sc_watch_next(w, 0, &nb, &err), 0);
		assert_int_equal(nb->kind, SC_WATCH_HEARTBEAT);
	}
	append_to(s, now + 60, &rng);
	assert_int_equal(sc_watch_next(w, 0, &nb, &err), 0);
	assert_int_equal(nb->kind, SC_WATCH_CHANGES);
	assert_int_equal(nb->from_version, v);
	tk_refstate *c = model_at(now + 60);
	check_changes(nb, b, total, c, now + 60, prefix);
	sc_watch_close(w);
	tk_refstate_free(a);
	tk_refstate_free(b);
	tk_refstate_free(c);
	sc_store_close(s);
}

static void test_resume_across_reopen(void **state)
{
	(void)state;
	resume_case(300, 120, 700, "", false);	 /* from before the reopen */
	resume_case(300, 450, 700, "e1", false); /* after it, with a prefix */
	resume_case(300, 0, 400, "", false);	 /* from the start */
	resume_case(300, 400, 400, "", false);	 /* from the end: nothing */
	resume_case(300, 120, 700, "", true);	 /* built on another thread */
}

static void test_resume_beyond_end(void **state)
{
	(void)state;
	char dir[512];
	tk_tmproot_dir(dir, sizeof dir);
	uint64_t rng = seed;
	sc_store *s = open_store(dir, true);
	append_to(s, 50, &rng);
	sc_watcher *w = (sc_watcher *)&rng;
	sc_watch_resume *r = (sc_watch_resume *)&rng;
	sc_error err;
	assert_int_equal(sc_store_watch_resume(s, NULL, 51, &w, &r, &err),
			 SC_EINVAL);
	assert_null(w);
	assert_null(r);
	assert_non_null(strstr(err.message, "ends at 50"));
	sc_watch_options o = {.start = SC_WATCH_START_INITIAL};
	assert_int_equal(sc_store_watch_resume(s, &o, 10, &w, &r, &err),
			 SC_EINVAL);
	/* Nothing stays open: the store closes cleanly. */
	sc_store_close(s);
}

static int setup(void **state)
{
	(void)state;
	seed = tk_seed("test_watch_resume");
	root = tk_tmproot_create("test_watch_resume");
	return root ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resume_across_reopen),
	    cmocka_unit_test(test_resume_beyond_end),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
