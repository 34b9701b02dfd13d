/*
 * The append entry and the group commit's fallback: sc_store_append
 * refusals (arguments, an invalid event, a read-only store) return their
 * code and a message naming the cause and change nothing; an empty batch
 * reports the next position; a group whose transaction fails as a whole
 * (out of memory) is written again batch by batch, every caller gets its
 * own range and the state equals the model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "statecache/store.h"
#include "statecache/testing.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

/* Appenders queued behind the writer lock. */
#define N 6
/* Events per appender's batch. */
#define PER 4

typedef struct fixture {
	char root[64];
	sc_store *store;
	tk_refstate *model;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	sc_store_options o = {0};
	f->store = tk_store_create(f->root, sizeof f->root, &o);
	f->model = tk_refstate_new();
	assert_non_null(f->model);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_testing_fail_alloc_after(-1);
	if (f->store)
		sc_store_close(f->store);
	tk_refstate_free(f->model);
	bool removed = tk_rm_rf(f->root);
	free(f);
	return removed ? 0 : -1;
}

/* One appender's batch: PER set events on entities of its own. */
typedef struct appender {
	sc_store *store;
	unsigned t;
	sc_event ev[PER];
	sc_attr attr[PER];
	char id[PER][16];
	uint64_t first;
	int rc;
	sc_error err;
} appender;

static void appender_fill(appender *a, unsigned round)
{
	for (unsigned i = 0; i < PER; i++) {
		int len =
		    snprintf(a->id[i], sizeof a->id[i], "t%u-%u", a->t, i);
		a->attr[i] = (sc_attr){
		    .name = {"n", 1},
		    .value = {.type = SC_VALUE_INT,
			      .u.i = (int64_t)(round * 1000 + a->t * 10 + i)}};
		a->ev[i] = (sc_event){.entity = {a->id[i], (size_t)len},
				      .type = SC_EVENT_SET,
				      .attrs = &a->attr[i],
				      .nattrs = 1,
				      .time = 1000 + round};
	}
}

static void *appender_main(void *arg)
{
	appender *a = arg;
	a->rc = sc_store_append(a->store, a->ev, PER, &a->first, &a->err);
	return NULL;
}

/* Fold every appender's batch into the model in position order. */
static void model_apply(tk_refstate *m, appender *a, size_t n)
{
	uint64_t done = 0;
	for (size_t k = 0; k < n; k++) {
		appender *next = NULL;
		for (size_t i = 0; i < n; i++)
			if (a[i].first > done &&
			    (!next || a[i].first < next->first))
				next = &a[i];
		assert_non_null(next);
		for (unsigned i = 0; i < PER; i++) {
			sc_event ev = next->ev[i];
			ev.position = next->first + i;
			tk_refstate_apply(m, &ev);
		}
		done = next->first;
	}
}

/* Every appender's range: PER positions each, together 1..n*PER. */
static void assert_ranges(appender *a, size_t n, uint64_t base)
{
	bool seen[N] = {0};
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(a[i].rc, 0);
		uint64_t k = a[i].first - base;
		assert_int_equal(k % PER, 0);
		assert_true(k / PER < n);
		assert_false(seen[k / PER]);
		seen[k / PER] = true;
	}
}

/* A projector that arms the allocation failure after the first commit,
 * so the first library allocation of the next (shared) transaction fails. */
typedef struct arm {
	unsigned commits;
	bool armed;
} arm;

static int arm_apply(void *ctx, MDB_txn *txn, const sc_event *ev, sc_error *err)
{
	(void)ctx;
	(void)txn;
	(void)ev;
	(void)err;
	return 0;
}

static void arm_commit(void *ctx)
{
	arm *a = ctx;
	if (a->commits++ == 0) {
		sc_testing_fail_alloc_after(0);
		a->armed = true;
	}
}

/* Run N appenders that queue behind the held writer lock. */
static void run_queued(sc_store *s, appender *a, unsigned round)
{
	pthread_t th[N];
	pthread_mutex_lock(&s->write_mu);
	for (unsigned t = 0; t < N; t++) {
		a[t].store = s;
		a[t].t = t;
		appender_fill(&a[t], round);
		assert_int_equal(
		    pthread_create(&th[t], NULL, appender_main, &a[t]), 0);
	}
	/* Polls the queue (no sleep) until every append waits in it. */
	while (sc_group_queued(s) < N)
		sched_yield();
	pthread_mutex_unlock(&s->write_mu);
	for (unsigned t = 0; t < N; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
}

static void test_group_written_batch_by_batch(void **state)
{
	fixture *f = *state;
	sc_store *s = f->store;
	sc_error err;

	/* Without a failure the queued batches share transactions. */
	static appender a[N];
	run_queued(s, a, 1);
	assert_ranges(a, N, 1);
	assert_true(s->groups_shared >= 1);
	model_apply(f->model, a, N);
	assert_true(tk_cache_matches(sc_store_cache(s), f->model));

	/* The first leader's lone commit arms a one-shot allocation failure:
	 * the shared transaction that follows fails as a whole, and each
	 * batch of it is written alone. */
	arm ar = {0};
	sc_projector p = {.name = "arm",
			  .apply = arm_apply,
			  .commit = arm_commit,
			  .ctx = &ar};
	assert_int_equal(sc_store_add_projector(s, &p, &err), 0);
	size_t shared_before = s->groups_shared;
	static appender b[N];
	/* The first leader takes the queue as it finds it (no wait for the
	 * N appenders the last handoff saw). */
	pthread_mutex_lock(&s->group_mu);
	s->group_seen = 0;
	pthread_mutex_unlock(&s->group_mu);
	run_queued(s, b, 2);
	sc_testing_fail_alloc_after(-1);
	assert_true(ar.armed);
	assert_ranges(b, N, 1 + N * PER);
	/* No transaction after the failure held two batches: the first
	 * leader wrote its own alone, the failed group went batch by batch. */
	assert_int_equal(s->groups_shared, shared_before);
	assert_int_equal(ar.commits, N);
	assert_int_equal(sc_store_last_position(s), 2 * N * PER);
	model_apply(f->model, b, N);
	assert_true(tk_cache_matches(sc_store_cache(s), f->model));

	/* The log on disk holds the same: reopen and compare. */
	sc_store_close(s);
	f->store = NULL;
	sc_store_options o = {0};
	assert_int_equal(sc_store_open(f->root, &o, &f->store, &err), 0);
	assert_int_equal(sc_store_last_position(f->store), 2 * N * PER);
	assert_true(tk_cache_matches(sc_store_cache(f->store), f->model));
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* As after a handoff `age_ns` ago that saw `seen` appenders and whose
 * write took `write_ns`. */
static void set_handoff(sc_store *s, size_t seen, int64_t write_ns,
			int64_t age_ns, int64_t max_ns)
{
	pthread_mutex_lock(&s->group_mu);
	s->group_seen = seen;
	s->group_write_ns = write_ns;
	s->group_handoff_ns = now_ns() - age_ns;
	s->group_linger_max_ns = max_ns;
	pthread_mutex_unlock(&s->group_mu);
}

static uint64_t lingered(sc_store *s)
{
	pthread_mutex_lock(&s->group_mu);
	uint64_t n = s->group_lingered;
	pthread_mutex_unlock(&s->group_mu);
	return n;
}

/* A group commit's leader waits for the appenders the last handoff saw
 * (group.c): only after a recent handoff that saw several, only when the
 * wait is worth a sleep, and never longer than the cap; an appender that
 * arrives ends the wait and joins the group. The wait never changes what
 * is written. */
static void test_group_linger(void **state)
{
	fixture *f = *state;
	sc_store *s = f->store;
	static appender a[6];
	for (unsigned k = 0; k < 6; k++) {
		a[k].store = s;
		a[k].t = k;
		appender_fill(&a[k], 1);
	}
	/* No wait: one appender seen; a handoff older than its write; a
	 * wait shorter than the minimum worth a sleep (the cap below it). */
	set_handoff(s, 1, 8000000, 0, SC_GROUP_LINGER_MAX_NS);
	appender_main(&a[0]);
	set_handoff(s, N, 8000000, 1000000000, SC_GROUP_LINGER_MAX_NS);
	appender_main(&a[1]);
	set_handoff(s, N, 8000000, 0, 20000);
	appender_main(&a[2]);
	assert_int_equal(lingered(s), 0);
	/* A recent handoff that saw N, a write of 1 s: a lone appender
	 * waits the whole cap (2 ms: a timed wait never ends early for lack
	 * of time), writes alone, and the next handoff counts it alone. */
	set_handoff(s, N, 1000000000, 0, SC_GROUP_LINGER_MAX_NS);
	int64_t t0 = now_ns();
	appender_main(&a[3]);
	assert_true(now_ns() - t0 >= SC_GROUP_LINGER_MAX_NS);
	assert_int_equal(lingered(s), 1);
	pthread_mutex_lock(&s->group_mu);
	assert_int_equal(s->group_seen, 1);
	assert_false(s->group_lingering);
	pthread_mutex_unlock(&s->group_mu);
	assert_int_equal(s->groups_shared, 0);
	/* Two seen, no cap to speak of: the leader waits until the second
	 * appender queues, whose arrival alone can wake it (a lost wake-up
	 * hangs here), and both go in one transaction. */
	set_handoff(s, 2, INT64_MAX / 2, 0, INT64_MAX / 4);
	pthread_t th[2];
	assert_int_equal(pthread_create(&th[0], NULL, appender_main, &a[4]), 0);
	for (;;) {
		pthread_mutex_lock(&s->group_mu);
		bool waiting = s->group_lingering;
		uint64_t waits = s->group_lingered;
		pthread_mutex_unlock(&s->group_mu);
		if (waiting)
			break;
		if (waits > 1)
			fail_msg("the leader's wait ended before any arrival");
		sched_yield();
	}
	assert_int_equal(pthread_create(&th[1], NULL, appender_main, &a[5]), 0);
	for (unsigned k = 0; k < 2; k++)
		assert_int_equal(pthread_join(th[k], NULL), 0);
	assert_int_equal(lingered(s), 2);
	assert_int_equal(s->groups_shared, 1);
	for (unsigned k = 0; k < 6; k++)
		assert_int_equal(a[k].rc, 0);
	assert_ranges(a, 6, 1);
	model_apply(f->model, a, 6);
	assert_true(tk_cache_matches(sc_store_cache(s), f->model));
}

static void test_append_refusals(void **state)
{
	fixture *f = *state;
	sc_store *s = f->store;
	sc_error err;
	static appender a;
	a.t = 0;
	appender_fill(&a, 1);
	uint64_t first = 0;
	assert_int_equal(sc_store_append(s, a.ev, PER, &first, &err), 0);
	assert_int_equal(first, 1);
	a.first = first;
	model_apply(f->model, &a, 1);

	assert_int_equal(sc_store_append(NULL, a.ev, 1, &first, &err),
			 SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	assert_non_null(strstr(err.message, "needs a store and events"));
	assert_int_equal(sc_store_append(s, NULL, 2, &first, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "needs a store and events"));

	/* An invalid third event: the message names its index, and nothing
	 * of the batch is written. */
	static appender b;
	b.t = 1;
	appender_fill(&b, 2);
	b.ev[2].entity = (sc_str){NULL, 0};
	first = 0;
	int rc = sc_store_append(s, b.ev, PER, &first, &err);
	assert_true(rc != 0);
	assert_int_equal(err.code, rc);
	assert_non_null(strstr(err.message, "event 2: "));
	assert_int_equal(first, 0);
	assert_int_equal(sc_store_last_position(s), PER);

	/* An empty batch (events may be NULL) writes nothing and reports the
	 * next position. */
	assert_int_equal(sc_store_append(s, NULL, 0, &first, &err), 0);
	assert_int_equal(first, PER + 1);
	assert_int_equal(sc_store_append(s, NULL, 0, NULL, &err), 0);
	assert_int_equal(sc_store_last_position(s), PER);
	assert_true(tk_cache_matches(sc_store_cache(s), f->model));

	/* A read-only open of the same store refuses appends, empty ones
	 * included, and its state is the writer's. */
	sc_store_close(s);
	f->store = NULL;
	sc_store_options o = {0};
	o.read_only = true;
	o.follow_manual = true;
	sc_store *ro = tk_store_open(f->root, &o);
	f->store = ro;
	appender_fill(&b, 3);
	rc = sc_store_append(ro, b.ev, PER, &first, &err);
	assert_true(rc != 0);
	assert_int_equal(err.code, rc);
	assert_non_null(strstr(err.message, "appending"));
	assert_non_null(strstr(err.message, "read-only"));
	assert_int_equal(sc_store_append(ro, NULL, 0, &first, &err), rc);
	assert_int_equal(sc_store_last_position(ro), PER);
	assert_true(tk_cache_matches(sc_store_cache(ro), f->model));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_group_written_batch_by_batch,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_linger, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_append_refusals, setup,
					    teardown),
	};
	if (!tk_tmproot_create("test_group_paths"))
		return 1;
	return cmocka_run_group_tests(tests, NULL, tk_tmproot_teardown);
}
