/*
 * Concurrency of projections (run under ThreadSanitizer by make test): a
 * writer appends a fixed count of events in random batches while three
 * projections (exactly-once, at-least-once, at-least-once with four lanes
 * and random handler delays) and two live queries consume the log; a
 * pause, resume and seek hit the projections meanwhile. The test ends (no
 * deadlock) and checks that no consumer missed or reordered an event:
 * the queries and the single-lane projections see positions 1..N in
 * order, the lanes see each key's events in order and every position,
 * and the exactly-once model holds every event once.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statecache/projection.h"
#include "statecache/query.h"
#include "statecache/store.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

#define NKEYS 17

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #c);                                 \
			exit(1);                                               \
		}                                                              \
	} while (0)

static uint64_t seed;
static uint64_t total;

static unsigned key_of(uint64_t pos)
{
	uint64_t s = seed ^ (pos * 0x9e3779b97f4a7c15ull);
	return (unsigned)(tk_rand(&s) % NKEYS);
}

static unsigned parse_key(const sc_event *ev)
{
	return (unsigned)strtoul(ev->entity.ptr + 1, NULL, 10);
}

/* ---- consumers ----------------------------------------------------------- */

typedef struct seq_ctx {
	uint64_t next; /* the position expected next */
	bool broken;
} seq_ctx;

/* Exactly-once: count per key, and check the order. */
static const char *const eo_dbs[] = {"counts", NULL};

static int eo_handler(void *vctx, sc_projection *p, MDB_txn *txn,
		      const sc_event *const *evs, size_t n, sc_error *err)
{
	seq_ctx *c = vctx;
	MDB_dbi dbi;
	int rc = sc_projection_dbi(p, "counts", &dbi, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		/* After a seek to 0 the log starts again. */
		if (evs[i]->position == 1)
			c->next = 1;
		if (evs[i]->position != c->next)
			c->broken = true;
		c->next = evs[i]->position + 1;
		MDB_val k = {evs[i]->entity.len, (void *)evs[i]->entity.ptr}, v;
		uint64_t count = 0;
		rc = mdb_get(txn, dbi, &k, &v);
		if (rc == 0)
			memcpy(&count, v.mv_data, 8);
		else if (rc != MDB_NOTFOUND)
			return rc;
		count++;
		v = (MDB_val){8, &count};
		rc = mdb_put(txn, dbi, &k, &v, 0);
		if (rc)
			return rc;
	}
	return 0;
}

static int seq_handler(void *vctx, sc_projection *p, MDB_txn *txn,
		       const sc_event *const *evs, size_t n, sc_error *err)
{
	(void)p;
	(void)txn;
	(void)err;
	seq_ctx *c = vctx;
	for (size_t i = 0; i < n; i++) {
		if (evs[i]->position != c->next)
			c->broken = true;
		c->next = evs[i]->position + 1;
	}
	return 0;
}

typedef struct lane_ctx {
	pthread_mutex_t mu;
	uint64_t last[NKEYS];
	uint8_t *seen;
	uint64_t rng;
	bool broken;
} lane_ctx;

static int lane_handler(void *vctx, sc_projection *p, MDB_txn *txn,
			const sc_event *const *evs, size_t n, sc_error *err)
{
	(void)p;
	(void)txn;
	(void)err;
	lane_ctx *c = vctx;
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&c->mu);
		unsigned k = parse_key(evs[i]);
		if (evs[i]->position <= c->last[k])
			c->broken = true;
		c->last[k] = evs[i]->position;
		c->seen[evs[i]->position] = 1;
		uint64_t spins = tk_rand_below(&c->rng, 16);
		pthread_mutex_unlock(&c->mu);
		for (uint64_t j = 0; j < spins; j++)
			sched_yield();
	}
	return 0;
}

typedef struct reader {
	sc_store *s;
	pthread_t t;
	bool broken;
	uint64_t got;
} reader;

static void *reader_main(void *arg)
{
	reader *r = arg;
	sc_query_spec spec = {.kind = SC_QUERY_ALL, .live = true};
	sc_query *q;
	sc_error err;
	CHECK(sc_query_open(r->s, &spec, &q, &err) == 0);
	while (r->got < total) {
		const sc_event *ev;
		CHECK(sc_query_next(q, -1, &ev, &err) == 0);
		if (ev->position != r->got + 1)
			r->broken = true;
		r->got = ev->position;
	}
	sc_query_close(q);
	return NULL;
}

/* ---- the writer ---------------------------------------------------------- */

static void append_all(sc_store *s)
{
	uint64_t rng = seed;
	sc_event evs[32];
	sc_attr attrs[32];
	char ids[32][16];
	sc_error err;
	uint64_t pos = 1;
	while (pos <= total) {
		size_t n = 1 + (size_t)tk_rand_below(&rng, 32);
		if (n > total - pos + 1)
			n = (size_t)(total - pos + 1);
		for (size_t i = 0; i < n; i++) {
			int len = snprintf(ids[i], sizeof ids[i], "k%u",
					   key_of(pos + i));
			attrs[i] =
			    (sc_attr){.name = {"n", 1},
				      .value = {.type = SC_VALUE_INT,
						.u.i = (int64_t)(pos + i)}};
			evs[i] = (sc_event){.entity = {ids[i], (size_t)len},
					    .type = SC_EVENT_SET,
					    .attrs = &attrs[i],
					    .nattrs = 1};
		}
		CHECK(sc_store_append(s, evs, n, NULL, &err) == 0);
		pos += n;
	}
}

int main(void)
{
	seed = tk_seed("stress_projection");
	total = getenv("SC_TEST_SHORT") ? 3000 : 30000;
	CHECK(tk_tmproot_create("stress_projection"));
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options so = {0};
	so.create = true;
	so.durability = SC_DURABILITY_NOSYNC;
	so.cache.seed = seed | 1;
	sc_store *s;
	sc_error err;
	CHECK(sc_store_open(dir, &so, &s, &err) == 0);

	seq_ctx eo = {.next = 1}, alo = {.next = 1};
	lane_ctx lc = {.rng = seed + 1};
	pthread_mutex_init(&lc.mu, NULL);
	lc.seen = calloc(total + 1, 1);
	CHECK(lc.seen);

	sc_projection_options o1 = {.name = "eo",
				    .kind = SC_PROJECTION_EXACTLY_ONCE,
				    .handler = eo_handler,
				    .ctx = &eo,
				    .databases = eo_dbs,
				    .batch_max = 64};
	sc_projection_options o2 = {.name = "alo",
				    .kind = SC_PROJECTION_AT_LEAST_ONCE,
				    .handler = seq_handler,
				    .ctx = &alo,
				    .batch_max = 16,
				    .save_every = 100};
	sc_projection_options o3 = {.name = "lanes",
				    .kind = SC_PROJECTION_AT_LEAST_ONCE,
				    .handler = lane_handler,
				    .ctx = &lc,
				    .batch_max = 8,
				    .save_every = 50,
				    .lanes = 4};
	sc_projection *p1, *p2, *p3;
	CHECK(sc_projection_start(s, &o1, &p1, &err) == 0);
	CHECK(sc_projection_start(s, &o2, &p2, &err) == 0);
	CHECK(sc_projection_start(s, &o3, &p3, &err) == 0);
	reader r[2] = {{.s = s}, {.s = s}};
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&r[i].t, NULL, reader_main, &r[i]) == 0);

	append_all(s);
	/* Controls while they catch up. */
	sc_projection_pause(p2);
	sc_projection_stats st;
	CHECK(sc_projection_stats_get(p2, &st, &err) == 0);
	sc_projection_resume(p2);
	CHECK(sc_projection_seek(p1, 0, &err) == 0);

	CHECK(sc_projection_wait(p1, total, -1, &err) == 0);
	CHECK(sc_projection_wait(p2, total, -1, &err) == 0);
	CHECK(sc_projection_wait(p3, total, -1, &err) == 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(r[i].t, NULL);
		CHECK(!r[i].broken && r[i].got == total);
	}
	MDB_dbi dbi;
	CHECK(sc_projection_dbi(p1, "counts", &dbi, &err) == 0);
	CHECK(sc_projection_stop(p1, &err) == 0);
	CHECK(sc_projection_stop(p2, &err) == 0);
	CHECK(sc_projection_stop(p3, &err) == 0);
	CHECK(!eo.broken && eo.next == total + 1);
	CHECK(!alo.broken && alo.next == total + 1);
	CHECK(!lc.broken);
	for (uint64_t i = 1; i <= total; i++)
		CHECK(lc.seen[i]);

	/* The exactly-once model counted every event once. */
	uint64_t want[NKEYS] = {0};
	for (uint64_t i = 1; i <= total; i++)
		want[key_of(i)]++;
	MDB_txn *txn;
	CHECK(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn) == 0);
	for (unsigned k = 0; k < NKEYS; k++) {
		char id[16];
		int len = snprintf(id, sizeof id, "k%u", k);
		MDB_val kv = {(size_t)len, id}, v;
		int rc = mdb_get(txn, dbi, &kv, &v);
		uint64_t got = 0;
		if (rc == 0)
			memcpy(&got, v.mv_data, 8);
		CHECK(got == want[k]);
	}
	mdb_txn_abort(txn);
	for (const char *n = "eo"; n; n = strcmp(n, "eo") == 0 ? "alo" : NULL) {
		uint64_t off;
		CHECK(sc_projection_offset(s, n, &off, NULL, &err) == 0);
		CHECK(off == total);
	}
	sc_store_close(s);
	free(lc.seen);
	pthread_mutex_destroy(&lc.mu);
	tk_tmproot_remove(); /* says on stderr if it could not */
	printf("stress_projection: %llu events, 3 projections, 2 live queries: "
	       "ok\n",
	       (unsigned long long)total);
	return 0;
}
