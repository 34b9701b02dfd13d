/*
 * Group commit: many threads append at once (run under ThreadSanitizer by
 * make test). Batches have random sizes; some are invalid (refused before
 * they join a group), some hold an event a projector refuses (the group is
 * written again without them). Every event names its thread, its batch and
 * its index in the batch, so the log can be checked against what each
 * caller was told: every acknowledged batch is in the log once, whole, at
 * the positions its caller got, and nothing else is (a refused batch is
 * absent). The cache equals the log folded into the reference state, also
 * after a reopen, and the projector saw exactly the committed events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "statecache/store.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/thread_testkit.h"

#define APPENDERS 16
#define NENT	  61
#define BATCH_MAX 12

static uint64_t seed;

/* ---- the events ---------------------------------------------------------- */

/* Event k of batch b of thread t: a set of t, b, k and a value on one of
 * NENT entities; actor "veto" when the projector must refuse it. */
typedef struct gen_event {
	sc_event ev;
	sc_attr attrs[4];
	char id[16];
} gen_event;

static void gen(unsigned t, unsigned b, unsigned k, uint64_t *r, bool veto,
		gen_event *g)
{
	int n = snprintf(g->id, sizeof g->id, "e%u",
			 (unsigned)tk_rand_below(r, NENT));
	g->attrs[0] = (sc_attr){{"t", 1}, {.type = SC_VALUE_INT, .u.i = t}};
	g->attrs[1] = (sc_attr){{"b", 1}, {.type = SC_VALUE_INT, .u.i = b}};
	g->attrs[2] = (sc_attr){{"k", 1}, {.type = SC_VALUE_INT, .u.i = k}};
	g->attrs[3] = (sc_attr){
	    {"v", 1},
	    {.type = SC_VALUE_INT, .u.i = (int64_t)tk_rand_below(r, 1000)}};
	memset(&g->ev, 0, sizeof g->ev);
	g->ev.entity = (sc_str){g->id, (size_t)n};
	g->ev.type = SC_EVENT_SET;
	g->ev.attrs = g->attrs;
	g->ev.nattrs = 4;
	g->ev.time = 1 + (int64_t)tk_rand_below(r, 1000000);
	g->ev.actor = veto ? (sc_str){"veto", 4} : (sc_str){"ok", 2};
}

/* The (t, b, k) an event carries; false if it has not the three. */
static bool event_tag(const sc_event *ev, int64_t tag[3])
{
	if (ev->nattrs != 4)
		return false;
	for (int i = 0; i < 3; i++) {
		if (ev->attrs[i].value.type != SC_VALUE_INT)
			return false;
		tag[i] = ev->attrs[i].value.u.i;
	}
	return true;
}

/* ---- the projector ------------------------------------------------------- */

/* Refuses events whose actor is "veto"; counts the events of committed
 * transactions and checks that it sees positions in order. Its callbacks
 * run under the writer lock, so plain fields suffice. */
typedef struct veto_projector {
	uint64_t committed; /* events of committed transactions */
	uint64_t pending;   /* events of the open transaction */
	uint64_t next;	    /* position expected next */
	uint64_t rollbacks;
	int bad;
} veto_projector;

static int veto_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
		      sc_error *err)
{
	veto_projector *p = ctx;
	SC_UNUSED(txn);
	if (ev->position != p->next + p->pending)
		p->bad = 1;
	if (ev->actor.len == 4 && memcmp(ev->actor.ptr, "veto", 4) == 0)
		return sc_error_set(err, 1, "vetoed");
	p->pending++;
	return 0;
}

static void veto_commit(void *ctx)
{
	veto_projector *p = ctx;
	/* A slower writer: more appends queue up behind it. */
	sched_yield();
	p->committed += p->pending;
	p->next += p->pending;
	p->pending = 0;
}

static void veto_rollback(void *ctx)
{
	veto_projector *p = ctx;
	p->pending = 0;
	p->rollbacks++;
}

/* Durability full: appends queue up behind each sync, so groups form. */
static sc_store *open_store(const char *dir, veto_projector *vp)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_FULL;
	o.map_size = 128 << 10; /* grows during groups */
	o.cache.seed = seed | 1;
	o.index_lag = 5; /* catch-ups inside groups */
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		fail_msg("open: %s", err.message);
	if (vp) {
		*vp = (veto_projector){.next = sc_store_last_position(s) + 1};
		sc_projector p = {"veto", veto_apply, veto_commit,
				  veto_rollback, vp};
		assert_int_equal(sc_store_add_projector(s, &p, &err), 0);
	}
	return s;
}

/* ---- appenders ----------------------------------------------------------- */

typedef enum kind { OK, INVALID, VETOED } kind;

typedef struct outcome {
	uint64_t first;
	unsigned n;
	kind kind;
} outcome;

typedef struct appender {
	sc_store *store;
	unsigned t;
	unsigned rounds;
	outcome *out;
	int bad;
	/* Fixed plan (test_group_forms): one batch of this kind and size. */
	int plan_kind, plan_n;
} appender;

static int append_one(appender *a, unsigned b, uint64_t *r, kind kd, unsigned n)
{
	gen_event g[BATCH_MAX];
	sc_event batch[BATCH_MAX];
	unsigned bad_at = (unsigned)tk_rand_below(r, n);
	for (unsigned k = 0; k < n; k++) {
		gen(a->t, b, k, r, kd == VETOED && k == bad_at, &g[k]);
		batch[k] = g[k].ev;
	}
	if (kd == INVALID)
		batch[bad_at].entity.len = 0;
	uint64_t first = 0;
	sc_error err;
	int rc = sc_store_append(a->store, batch, n, &first, &err);
	int want = kd == OK ? 0 : kd == INVALID ? SC_EINVAL : SC_EPROJECTOR;
	if (rc != want) {
		fprintf(stderr,
			"thread %u batch %u: append returned %d (%s), "
			"expected %d\n",
			a->t, b, rc, rc ? err.message : "ok", want);
		return 1;
	}
	if (kd == VETOED && !strstr(err.message, "projector veto"))
		return 1;
	a->out[b] = (outcome){first, n, kd};
	return 0;
}

static void *appender_main(void *p)
{
	appender *a = p;
	uint64_t r = seed ^ (0x9E3779B97F4A7C15ull * (a->t + 1));
	if (a->plan_n) {
		a->bad = append_one(a, 0, &r, (kind)a->plan_kind,
				    (unsigned)a->plan_n);
		return NULL;
	}
	for (unsigned b = 0; b < a->rounds && !a->bad; b++) {
		unsigned roll = (unsigned)tk_rand_below(&r, 10);
		kind kd = roll == 0 ? INVALID : roll == 1 ? VETOED : OK;
		unsigned n = 1 + (unsigned)tk_rand_below(&r, BATCH_MAX);
		a->bad = append_one(a, b, &r, kd, n);
	}
	return NULL;
}

/* ---- checks -------------------------------------------------------------- */

typedef struct log_copy {
	uint64_t n;
	int64_t (*tag)[3];
	tk_refstate *model;
	int bad;
} log_copy;

static int copy_event(void *ctx, const sc_event *ev)
{
	log_copy *c = ctx;
	if (ev->position != c->n + 1 || !event_tag(ev, c->tag[c->n])) {
		c->bad = 1;
		return 1;
	}
	c->n++;
	tk_refstate_apply(c->model, ev);
	return 0;
}

/* Every acknowledged batch in the log whole at its positions, nothing
 * else in the log, and the cache equal to the log. */
static void check_log(sc_store *s, appender *a, unsigned nthreads,
		      uint64_t *acked_events)
{
	uint64_t last = sc_store_last_position(s);
	log_copy c = {0, calloc(last + 1, sizeof *c.tag), tk_refstate_new(), 0};
	assert_non_null(c.tag);
	assert_int_equal(sc_store_events(s, 1, 0, copy_event, &c, NULL), 0);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.n, last);
	uint8_t *seen = calloc(last + 1, 1);
	assert_non_null(seen);
	uint64_t acked = 0;
	for (unsigned t = 0; t < nthreads; t++) {
		unsigned rounds = a[t].plan_n ? 1 : a[t].rounds;
		for (unsigned b = 0; b < rounds; b++) {
			outcome *o = &a[t].out[b];
			if (o->kind != OK)
				continue;
			assert_true(o->first >= 1 &&
				    o->first + o->n - 1 <= last);
			for (unsigned k = 0; k < o->n; k++) {
				uint64_t p = o->first + k;
				assert_int_equal(seen[p], 0);
				seen[p] = 1;
				assert_int_equal(c.tag[p - 1][0], t);
				assert_int_equal(c.tag[p - 1][1], b);
				assert_int_equal(c.tag[p - 1][2], k);
			}
			acked += o->n;
		}
	}
	/* The acknowledged batches tile the log: refused ones are absent. */
	assert_int_equal(acked, last);
	assert_true(tk_cache_matches(sc_store_cache(s), c.model));
	assert_int_equal(sc_store_verify(s, NULL), 0);
	*acked_events = acked;
	tk_refstate_free(c.model);
	free(c.tag);
	free(seen);
}

/* ---- tests --------------------------------------------------------------- */

/* Appends queued behind a busy writer are written as one group; the
 * vetoed ones are left out of it and the others written again. */
static void test_group_forms(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	veto_projector vp;
	sc_store *s = open_store(dir, &vp);
	enum { N = 8 };
	appender a[N];
	outcome out[N];
	pthread_t th[N];
	/* Hold the writer lock so that every append queues up. */
	pthread_mutex_lock(&s->write_mu);
	for (unsigned t = 0; t < N; t++) {
		a[t] = (appender){.store = s,
				  .t = t,
				  .out = &out[t],
				  .plan_kind = t % 3 == 1 ? VETOED : OK,
				  .plan_n = 1 + (int)t};
	}
	tk_threads_start(th, N, appender_main, a, sizeof a[0]);
	/* Polls the queue (no sleep): each append is queued or leading. */
	while (sc_group_queued(s) < N)
		sched_yield();
	pthread_mutex_unlock(&s->write_mu);
	tk_threads_join(th, N);
	for (unsigned t = 0; t < N; t++)
		assert_int_equal(a[t].bad, 0);
	uint64_t acked;
	check_log(s, a, N, &acked);
	/* The first leader wrote what it took before it waited for the
	 * lock; the next took all the rest: at least one shared group. */
	assert_true(s->groups_shared >= 1);
	assert_true(vp.rollbacks >= 1);
	assert_int_equal(vp.bad, 0);
	assert_int_equal(vp.committed, acked);
	sc_store_close(s);
	assert_true(tk_rm_rf(dir));
}

static void test_concurrent_appenders(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	veto_projector vp;
	sc_store *s = open_store(dir, &vp);
	unsigned rounds = getenv("SC_TEST_SHORT") ? 40 : 300;
	appender a[APPENDERS];
	pthread_t th[APPENDERS];
	for (unsigned t = 0; t < APPENDERS; t++) {
		a[t] = (appender){.store = s,
				  .t = t,
				  .rounds = rounds,
				  .out = calloc(rounds, sizeof(outcome))};
		assert_non_null(a[t].out);
	}
	tk_threads_start(th, APPENDERS, appender_main, a, sizeof a[0]);
	tk_threads_join(th, APPENDERS);
	for (unsigned t = 0; t < APPENDERS; t++)
		assert_int_equal(a[t].bad, 0);
	uint64_t acked;
	check_log(s, a, APPENDERS, &acked);
	assert_int_equal(vp.bad, 0);
	assert_int_equal(vp.committed, acked);
	uint64_t pos;
	assert_int_equal(sc_store_projector_position(s, "veto", &pos, NULL), 0);
	assert_int_equal(pos, acked);
	printf("%u threads, %u batches: %llu events acknowledged; %llu "
	       "shared transactions, %llu projector rollbacks\n",
	       APPENDERS, APPENDERS * rounds, (unsigned long long)acked,
	       (unsigned long long)s->groups_shared,
	       (unsigned long long)vp.rollbacks);
	sc_store_close(s);
	/* The reopened store replays the same log into the same state. */
	s = open_store(dir, NULL);
	check_log(s, a, APPENDERS, &acked);
	sc_store_close(s);
	for (unsigned t = 0; t < APPENDERS; t++)
		free(a[t].out);
	assert_true(tk_rm_rf(dir));
}

int main(void)
{
	seed = tk_seed("stress_group");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_group_forms),
	    cmocka_unit_test(test_concurrent_appenders),
	};
	if (!tk_tmproot_create("stress_group"))
		return 1;
	return cmocka_run_group_tests(tests, NULL, tk_tmproot_teardown);
}
