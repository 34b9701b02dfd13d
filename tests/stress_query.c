/*
 * Concurrency stress for live queries (run under TSan and ASan).
 *
 * One writer thread appends a fixed count of events in random batches
 * while consumer threads follow the store with live queries, each opened
 * before the writer starts and waiting without a timeout, so every event
 * reaches them through the wake-up of a commit (or is found already
 * committed): all events, one tag, a 4096-byte tag, a partition (in
 * batches) and one entity of the default partition and of p0. Each consumer
 * checks every event against the stream's own rule (event i is a pure function
 * of i) and that it gets exactly the expected positions, in order, then stops
 * when it has them all: the test ends only if no wake-up is lost. One more
 * consumer waits on a tag that never comes and ends by sc_query_cancel from the
 * main thread.
 *
 * SC_TEST_SEED=n repeats the writer's batch sizes; SC_TEST_SHORT=1
 * shortens.
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

#include <cmocka.h>

#include <errno.h>

#include "statecache/query.h"
#include "statecache/store.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static uint64_t nevents;
static char long_tag[SC_EVENT_FIELD_MAX];

/* ---- the stream: event i (position i, from 1) ---------------------------- */

typedef struct gen_ev {
	char entity[8], tag[8], part[8];
	sc_str tags[2];
	sc_attr attr;
	sc_event ev;
} gen_ev;

static void gen(uint64_t i, gen_ev *g)
{
	snprintf(g->entity, sizeof g->entity, "e%d", (int)(i % 7));
	snprintf(g->tag, sizeof g->tag, "t%d", (int)(i % 3));
	snprintf(g->part, sizeof g->part, "p%d", (int)(i % 2));
	g->tags[0] = (sc_str){g->tag, strlen(g->tag)};
	g->tags[1] = (sc_str){long_tag, sizeof long_tag};
	g->attr =
	    (sc_attr){{"n", 1}, {.type = SC_VALUE_INT, .u.i = (int64_t)i}};
	g->ev = (sc_event){.entity = {g->entity, strlen(g->entity)},
			   .type = SC_EVENT_SET,
			   .attrs = &g->attr,
			   .nattrs = 1,
			   .partition = i % 4 == 0 ? (sc_str){NULL, 0}
						   : (sc_str){g->part, 2},
			   .tags = g->tags,
			   .ntags = i % 5 == 0 ? 2 : 1};
}

/* ---- consumers ----------------------------------------------------------- */

typedef struct consumer {
	sc_store *store;
	sc_query_spec spec;
	bool batch;
	sc_query *q;
	/* Results, read by the main thread after the join. */
	uint64_t got, want;
	int rc;
	char fault[SC_ERROR_MESSAGE_MAX + 64];
} consumer;

static bool wanted(const consumer *c, uint64_t i)
{
	gen_ev g;
	gen(i, &g);
	const sc_event *ev = &g.ev;
	sc_str k = c->spec.key;
	switch (c->spec.kind) {
	case SC_QUERY_ALL:
		return true;
	case SC_QUERY_ENTITY: {
		/* An entity is (partition, id). */
		sc_str p = c->spec.partition;
		return ev->entity.len == k.len &&
		       !memcmp(ev->entity.ptr, k.ptr, k.len) &&
		       ev->partition.len == p.len &&
		       (!p.len || !memcmp(ev->partition.ptr, p.ptr, p.len));
	}
	case SC_QUERY_TAG:
		for (size_t t = 0; t < ev->ntags; t++)
			if (ev->tags[t].len == k.len &&
			    !memcmp(ev->tags[t].ptr, k.ptr, k.len))
				return true;
		return false;
	case SC_QUERY_PARTITION:
		return ev->partition.len == k.len &&
		       !memcmp(ev->partition.ptr, k.ptr, k.len);
	}
	return false;
}

/* The next wanted position after `after`, or 0 when none is left. */
static uint64_t next_wanted(const consumer *c, uint64_t after)
{
	for (uint64_t i = after + 1; i <= nevents; i++)
		if (wanted(c, i))
			return i;
	return 0;
}

static void *consume(void *arg)
{
	consumer *c = arg;
	uint64_t after = 0;
	for (uint64_t i = 1; i <= nevents; i++)
		c->want += wanted(c, i);
	while (c->got < c->want || c->want == 0) {
		const sc_event *evs[32];
		size_t n = 0;
		sc_error err;
		int rc;
		if (c->batch) {
			rc = sc_query_next_batch(c->q, -1, evs, 32, &n, &err);
		} else {
			rc = sc_query_next(c->q, -1, &evs[0], &err);
			n = rc == 0 && evs[0];
		}
		if (rc) {
			c->rc = rc;
			if (rc != ECANCELED)
				snprintf(c->fault, sizeof c->fault, "%s",
					 err.message);
			return NULL;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t w = next_wanted(c, after);
			gen_ev g;
			gen(evs[i]->position, &g);
			if (evs[i]->position != w ||
			    evs[i]->attrs[0].value.u.i !=
				(int64_t)evs[i]->position ||
			    evs[i]->ntags != g.ev.ntags) {
				snprintf(c->fault, sizeof c->fault,
					 "got position %llu, expected %llu",
					 (unsigned long long)evs[i]->position,
					 (unsigned long long)w);
				c->rc = -1;
				return NULL;
			}
			after = w;
			c->got++;
		}
	}
	return NULL;
}

/* ---- the writer ---------------------------------------------------------- */

typedef struct writer {
	sc_store *store;
	uint64_t rs;
	int rc;
} writer;

static void *write_all(void *arg)
{
	writer *w = arg;
	gen_ev *g = malloc(32 * sizeof *g);
	sc_event evs[32];
	uint64_t i = 1;
	while (i <= nevents) {
		size_t b = 1 + tk_rand_below(&w->rs, 32);
		if (i + b - 1 > nevents)
			b = nevents - i + 1;
		for (size_t k = 0; k < b; k++) {
			gen(i + k, &g[k]);
			evs[k] = g[k].ev;
		}
		uint64_t first;
		sc_error err;
		w->rc = sc_store_append(w->store, evs, b, &first, &err);
		if (w->rc || first != i) {
			fprintf(stderr, "append: %s\n", err.message);
			break;
		}
		i += b;
	}
	free(g);
	return NULL;
}

static void test_live_queries(void **state)
{
	(void)state;
	assert_non_null(tk_tmproot_create("stress_query"));
	char dir[256];
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	o.index_lag = 64;
	sc_store *s = tk_store_create(dir, sizeof dir, &o);
	sc_error err;

	consumer cs[] = {
	    {.spec = {.kind = SC_QUERY_ALL}},
	    {.spec = {.kind = SC_QUERY_TAG, .key = {"t1", 2}}, .batch = true},
	    {.spec = {.kind = SC_QUERY_TAG,
		      .key = {long_tag, sizeof long_tag}}},
	    {.spec = {.kind = SC_QUERY_PARTITION, .key = {"p0", 2}},
	     .batch = true},
	    {.spec = {.kind = SC_QUERY_ENTITY, .key = {"e3", 2}}},
	    {.spec = {.kind = SC_QUERY_ENTITY,
		      .key = {"e3", 2},
		      .partition = {"p0", 2}}},
	    {.spec = {.kind = SC_QUERY_TAG, .key = {"never", 5}}},
	};
	enum { NC = sizeof cs / sizeof cs[0] };
	pthread_t th[NC];
	for (size_t i = 0; i < NC; i++) {
		cs[i].store = s;
		cs[i].spec.live = true;
		cs[i].spec.poll_ms = -1; /* woken by commits only */
		assert_int_equal(sc_query_open(s, &cs[i].spec, &cs[i].q, &err),
				 0);
		assert_int_equal(pthread_create(&th[i], NULL, consume, &cs[i]),
				 0);
	}
	writer w = {s, seed, 0};
	pthread_t wt;
	assert_int_equal(pthread_create(&wt, NULL, write_all, &w), 0);
	assert_int_equal(pthread_join(wt, NULL), 0);
	assert_int_equal(w.rc, 0);
	for (size_t i = 0; i + 1 < NC; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		if (cs[i].rc)
			fprintf(stderr, "consumer %zu: %s\n", i, cs[i].fault);
		assert_int_equal(cs[i].rc, 0);
		assert_int_equal(cs[i].got, cs[i].want);
		assert_true(cs[i].want > 0);
		uint64_t last = nevents;
		while (!wanted(&cs[i], last))
			last--;
		assert_int_equal(sc_query_position(cs[i].q), last);
	}
	/* The last one waits for a tag no event has: cancel ends it. */
	sc_query_cancel(cs[NC - 1].q);
	assert_int_equal(pthread_join(th[NC - 1], NULL), 0);
	assert_int_equal(cs[NC - 1].rc, ECANCELED);
	assert_int_equal(cs[NC - 1].got, 0);
	for (size_t i = 0; i < NC; i++)
		sc_query_close(cs[i].q);
	sc_store_close(s);
	tk_tmproot_remove(); /* says on stderr if it could not */
}

int main(void)
{
	seed = tk_seed("stress_query");
	nevents = getenv("SC_TEST_SHORT") ? 3000 : 20000;
	memset(long_tag, 'L', sizeof long_tag);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_live_queries),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
