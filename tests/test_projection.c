/*
 * Projection runners (statecache/projection.h).
 *
 * The log is deterministic: the event at position p belongs to entity
 * "k<n>" (n a function of the seed and p) and carries amt = a function of
 * p. The exactly-once read model (database "sums": entity -> count, sum,
 * last position) is compared with the fold of the events up to the saved
 * offset, computed here by a loop over positions. The at-least-once sink
 * is a file of (run, position) records.
 *
 * Covered: both kinds from a fresh and a saved offset; batches; pause and
 * resume; seek and reset (databases emptied, rebuilt equal); the error
 * policies (retry then fail, transient errors retried, skip and count);
 * lanes with random handler delays (per-key order, nothing lost); the
 * list and lag; crashes: the test re-runs itself as a child that appends
 * and projects, killed by SIGKILL after a random number of handler calls
 * or at a named kill point (projection_handler, projection_mid_batch,
 * projection_before_save, projection_after_save); after each kill the
 * exactly-once model equals the fold up to its saved offset, and the
 * at-least-once sink resumed exactly after its saved offset.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/internal.h"
#include "statecache/projection.h"
#include "statecache/store.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

#define NKEYS 13

static uint64_t seed;
static bool short_run;
static const char *root;
static const char *self;

/* ---- the log ---------------------------------------------------------------
 */

static uint64_t mix(uint64_t x)
{
	uint64_t s = x;
	return tk_rand(&s);
}

static unsigned key_of(uint64_t pos)
{
	return (unsigned)(mix(seed ^ (pos * 0x9e3779b97f4a7c15ull)) % NKEYS);
}

static int64_t amt_of(uint64_t pos)
{
	return (int64_t)(mix(seed + pos) % 1000);
}

typedef struct gen_event {
	sc_event ev;
	sc_attr attr;
	char id[16];
} gen_event;

static void gen(uint64_t pos, gen_event *g)
{
	memset(g, 0, sizeof *g);
	int n = snprintf(g->id, sizeof g->id, "k%u", key_of(pos));
	g->attr.name = (sc_str){"amt", 3};
	g->attr.value.type = SC_VALUE_INT;
	g->attr.value.u.i = amt_of(pos);
	g->ev.entity = (sc_str){g->id, (size_t)n};
	g->ev.type = SC_EVENT_SET;
	g->ev.attrs = &g->attr;
	g->ev.nattrs = 1;
	g->ev.time = 1700000000000000000ll + (int64_t)pos * 1000000;
}

/* Append positions last+1..to in batches of 1..16 events. */
static void append_to(sc_store *s, uint64_t to)
{
	gen_event g[16];
	sc_event evs[16];
	sc_error err;
	uint64_t pos = sc_store_last_position(s) + 1;
	while (pos <= to) {
		size_t n = 1 + (size_t)(mix(seed ^ pos) % 16);
		if (n > to - pos + 1)
			n = (size_t)(to - pos + 1);
		for (size_t i = 0; i < n; i++) {
			gen(pos + i, &g[i]);
			evs[i] = g[i].ev;
		}
		uint64_t first;
		int rc = sc_store_append(s, evs, n, &first, &err);
		if (rc)
			fprintf(stderr, "append: %s\n", err.message);
		assert_int_equal(rc, 0);
		assert_int_equal(first, pos);
		pos += n;
	}
}

static sc_store *open_store(const char *dir)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	return tk_store_open(dir, &o);
}

/* A new store in a fresh directory (its path in dir) holding the events
 * of positions 1..events. */
static sc_store *new_store_with(char *dir, size_t dir_len, uint64_t events)
{
	tk_tmproot_dir(dir, dir_len);
	sc_store *s = open_store(dir);
	append_to(s, events);
	return s;
}

static unsigned parse_key(const sc_event *ev)
{
	return (unsigned)strtoul(ev->entity.ptr + 1, NULL, 10);
}

/* ---- the exactly-once model ------------------------------------------------
 */

typedef struct sums_row {
	uint64_t count, sum, last;
} sums_row;

typedef struct eo_ctx {
	int fail_at;	  /* fail every call containing this position */
	int fail_times;	  /* ... this many times (-1: always) */
	int ack_fd;	  /* crash child: one byte per call */
	bool kill_mid;	  /* call the mid-batch kill point */
	size_t max_batch; /* the largest n seen */
} eo_ctx;

static const char *const eo_dbs[] = {"sums", NULL};

static int eo_handler(void *vctx, sc_projection *p, MDB_txn *txn,
		      const sc_event *const *evs, size_t n, sc_error *err)
{
	eo_ctx *c = vctx;
	if (n > c->max_batch)
		c->max_batch = n;
	MDB_dbi dbi;
	int rc = sc_projection_dbi(p, "sums", &dbi, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = evs[i];
		if (c->fail_at && ev->position == (uint64_t)c->fail_at &&
		    c->fail_times != 0) {
			if (c->fail_times > 0)
				c->fail_times--;
			return sc_error_set(err, EIO, "refusing position %d",
					    c->fail_at);
		}
		if (c->kill_mid && i == n / 2)
			sc_killpoint("projection_mid_batch");
		MDB_val k = {ev->entity.len, (void *)ev->entity.ptr}, v;
		sums_row r = {0, 0, 0};
		rc = mdb_get(txn, dbi, &k, &v);
		if (rc == 0)
			memcpy(&r, v.mv_data, sizeof r);
		else if (rc != MDB_NOTFOUND)
			return rc;
		if (r.last >= ev->position)
			return sc_error_set(err, SC_ESTATE,
					    "position %llu after %llu",
					    (unsigned long long)ev->position,
					    (unsigned long long)r.last);
		r.count++;
		r.sum += (uint64_t)ev->attrs[0].value.u.i;
		r.last = ev->position;
		v = (MDB_val){sizeof r, &r};
		rc = mdb_put(txn, dbi, &k, &v, 0);
		if (rc)
			return rc;
	}
	if (c->ack_fd >= 0) {
		char b = 1;
		if (write(c->ack_fd, &b, 1) != 1)
			return sc_error_set(err, EIO, "ack");
	}
	return 0;
}

/* Compare the model in `dbi` with the fold of positions 1..upto, skipping
 * position `skip` (0: none). */
static void check_model(sc_store *s, MDB_dbi dbi, uint64_t upto, uint64_t skip)
{
	sums_row want[NKEYS];
	memset(want, 0, sizeof want);
	for (uint64_t p = 1; p <= upto; p++) {
		if (p == skip)
			continue;
		sums_row *r = &want[key_of(p)];
		r->count++;
		r->sum += (uint64_t)amt_of(p);
		r->last = p;
	}
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	size_t rows = 0;
	for (unsigned k = 0; k < NKEYS; k++) {
		char id[16];
		int n = snprintf(id, sizeof id, "k%u", k);
		MDB_val kv = {(size_t)n, id}, v;
		int rc = mdb_get(txn, dbi, &kv, &v);
		if (want[k].count == 0) {
			assert_int_equal(rc, MDB_NOTFOUND);
			continue;
		}
		assert_int_equal(rc, 0);
		rows++;
		sums_row got;
		assert_int_equal(v.mv_size, sizeof got);
		memcpy(&got, v.mv_data, sizeof got);
		assert_int_equal(got.count, want[k].count);
		assert_int_equal(got.sum, want[k].sum);
		assert_int_equal(got.last, want[k].last);
	}
	MDB_stat st;
	assert_int_equal(mdb_stat(txn, dbi, &st), 0);
	assert_int_equal(st.ms_entries, rows);
	mdb_txn_abort(txn);
}

static sc_projection *start_eo(sc_store *s, eo_ctx *c, size_t batch,
			       sc_projection_on_error pol)
{
	sc_projection_options o = {0};
	o.name = "sums";
	o.kind = SC_PROJECTION_EXACTLY_ONCE;
	o.handler = eo_handler;
	o.ctx = c;
	o.databases = eo_dbs;
	o.batch_max = batch;
	o.on_error = pol;
	o.max_retries = 3;
	o.backoff_ms = 1;
	sc_projection *p = NULL;
	sc_error err;
	int rc = sc_projection_start(s, &o, &p, &err);
	if (rc)
		fprintf(stderr, "start: %s\n", err.message);
	assert_int_equal(rc, 0);
	return p;
}

static void wait_for(sc_projection *p, uint64_t pos)
{
	sc_error err;
	int rc = sc_projection_wait(p, pos, -1, &err);
	if (rc)
		fprintf(stderr, "wait: %s\n", err.message);
	assert_int_equal(rc, 0);
}

/* Run the exactly-once projection (batches of 10, retry) until it has
 * handled position `pos`, then stop it. */
static void run_eo_to(sc_store *s, eo_ctx *ec, uint64_t pos)
{
	sc_projection *p = start_eo(s, ec, 10, SC_PROJECTION_RETRY);
	wait_for(p, pos);
	sc_error err;
	assert_int_equal(sc_projection_stop(p, &err), 0);
}

static void test_exactly_once(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store *s = new_store_with(dir, sizeof dir, 500);
	eo_ctx c = {.ack_fd = -1};
	sc_projection *p = start_eo(s, &c, 32, SC_PROJECTION_RETRY);
	/* Events appended while it runs are seen too. */
	append_to(s, 900);
	wait_for(p, 900);
	assert_true(c.max_batch <= 32 && c.max_batch > 1);
	MDB_dbi dbi;
	sc_error err;
	assert_int_equal(sc_projection_dbi(p, "sums", &dbi, &err), 0);
	assert_int_equal(sc_projection_dbi(p, "nope", &dbi, &err), SC_NOTFOUND);
	assert_int_equal(sc_projection_dbi(p, "sums", &dbi, &err), 0);
	check_model(s, dbi, 900, 0);
	sc_projection_stats st;
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.offset, 900);
	assert_int_equal(st.handled, 900);
	assert_int_equal(st.events_behind, 0);
	assert_int_equal(st.state, SC_PROJECTION_RUNNING);

	/* Paused: nothing is handled; the lag shows it. */
	sc_projection_pause(p);
	append_to(s, 950);
	assert_int_equal(sc_projection_wait(p, 950, 20, &err), ETIMEDOUT);
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.state, SC_PROJECTION_PAUSED);
	assert_int_equal(st.handled, 900);
	assert_int_equal(st.events_behind, 50);
	assert_true(st.seconds_behind > 0.04 && st.seconds_behind < 0.06);
	sc_projection_resume(p);
	wait_for(p, 950);
	assert_int_equal(sc_projection_stop(p, &err), 0);

	/* Restart from the saved offset. */
	uint64_t off;
	bool exists;
	assert_int_equal(sc_projection_offset(s, "sums", &off, &exists, &err),
			 0);
	assert_true(exists);
	assert_int_equal(off, 950);
	append_to(s, 1200);
	p = start_eo(s, &c, 7, SC_PROJECTION_RETRY);
	wait_for(p, 1200);
	check_model(s, dbi, 1200, 0);

	/* Seek to 0 rebuilds; the model is equal again. */
	assert_int_equal(sc_projection_seek(p, 0, &err), 0);
	wait_for(p, 1200);
	check_model(s, dbi, 1200, 0);
	assert_int_equal(sc_projection_seek(p, 5000, &err), SC_EINVAL);
	assert_int_equal(sc_projection_stop(p, &err), 0);

	/* A reset at rest empties the databases too. */
	assert_int_equal(sc_projection_reset(s, "sums", 0, &err), 0);
	check_model(s, dbi, 0, 0);
	assert_int_equal(sc_projection_reset(s, "nope", 0, &err), SC_NOTFOUND);
	assert_int_equal(sc_projection_reset(s, "sums", 1201, &err), SC_EINVAL);
	p = start_eo(s, &c, 64, SC_PROJECTION_RETRY);
	wait_for(p, 1200);
	check_model(s, dbi, 1200, 0);
	assert_int_equal(sc_projection_stop(p, &err), 0);
	sc_store_close(s);

	/* Reopened, the database is read without running the projection. */
	s = open_store(dir);
	assert_int_equal(sc_projection_open_db(s, "sums", "sums", &dbi, &err),
			 0);
	check_model(s, dbi, 1200, 0);
	assert_int_equal(sc_projection_open_db(s, "sums", "x", &dbi, &err),
			 SC_NOTFOUND);
	sc_store_close(s);
}

typedef struct list_ctx {
	int n;
	char names[4][32];
	uint64_t behind[4];
} list_ctx;

static int list_fn(void *vctx, const sc_projection_info *info)
{
	list_ctx *c = vctx;
	if (c->n < 4) {
		snprintf(c->names[c->n], sizeof c->names[0], "%s/%s/%s",
			 info->name, sc_projection_kind_name(info->kind),
			 sc_projection_state_name(info->state));
		c->behind[c->n] = info->events_behind;
	}
	c->n++;
	return 0;
}

static void test_error_policy(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store *s = new_store_with(dir, sizeof dir, 300);
	sc_error err;
	MDB_dbi dbi;

	/* Always failing: retried, then failed; the offset stays before. */
	eo_ctx c = {.ack_fd = -1, .fail_at = 123, .fail_times = -1};
	sc_projection *p = start_eo(s, &c, 16, SC_PROJECTION_RETRY);
	assert_int_equal(sc_projection_wait(p, 300, -1, &err), EIO);
	assert_non_null(strstr(err.message, "refusing position 123"));
	sc_projection_stats st;
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.state, SC_PROJECTION_FAILED);
	assert_int_equal(st.retries, 3);
	assert_int_equal(st.error, EIO);
	assert_true(st.offset < 123 && st.offset >= 123 - 16);
	assert_int_equal(sc_projection_dbi(p, "sums", &dbi, &err), 0);
	check_model(s, dbi, st.offset, 0);
	/* The store records the failure for other processes. */
	list_ctx lc = {0};
	assert_int_equal(sc_projection_list(s, list_fn, &lc, &err), 0);
	assert_int_equal(lc.n, 1);
	assert_string_equal(lc.names[0], "sums/exactly-once/failed");
	assert_int_equal(sc_projection_stop(p, &err), EIO);

	/* Failing twice: the retries succeed. */
	c = (eo_ctx){.ack_fd = -1, .fail_at = 123, .fail_times = 2};
	p = start_eo(s, &c, 16, SC_PROJECTION_RETRY);
	wait_for(p, 300);
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.retries, 2);
	check_model(s, dbi, 300, 0);
	assert_int_equal(sc_projection_stop(p, &err), 0);

	/* Skip: the one failing event is skipped and counted. */
	assert_int_equal(sc_projection_reset(s, "sums", 0, &err), 0);
	c = (eo_ctx){.ack_fd = -1, .fail_at = 200, .fail_times = -1};
	p = start_eo(s, &c, 16, SC_PROJECTION_SKIP);
	wait_for(p, 300);
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.skipped, 1);
	assert_int_equal(st.offset, 300);
	check_model(s, dbi, 300, 200);
	assert_int_equal(sc_projection_stop(p, &err), 0);
	sc_store_close(s);
}

/* A handler that fails while `failing` is set and tells the test each
 * time it failed. */
typedef struct flaky_ctx {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool failing;
	unsigned failures;
	uint64_t next; /* the position expected next */
	bool broken;
} flaky_ctx;

static int flaky_handler(void *vctx, sc_projection *p, MDB_txn *txn,
			 const sc_event *const *evs, size_t n, sc_error *err)
{
	SC_UNUSED(p);
	SC_UNUSED(txn);
	flaky_ctx *c = vctx;
	pthread_mutex_lock(&c->mu);
	bool failing = c->failing;
	if (failing) {
		c->failures++;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	if (failing)
		return sc_error_set(err, EIO, "failing on purpose");
	for (size_t i = 0; i < n; i++) {
		if (evs[i]->position == 1)
			c->next = 1;
		if (evs[i]->position != c->next)
			c->broken = true;
		c->next = evs[i]->position + 1;
	}
	return 0;
}

static void wait_failures(flaky_ctx *c, unsigned n)
{
	pthread_mutex_lock(&c->mu);
	while (c->failures < n)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
}

/* Stop and seek wake a projection that waits out a long backoff. */
static void test_backoff_interrupted(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store *s = new_store_with(dir, sizeof dir, 100);
	flaky_ctx c = {.failing = true, .next = 1};
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	sc_projection_options o = {.name = "flaky",
				   .kind = SC_PROJECTION_AT_LEAST_ONCE,
				   .handler = flaky_handler,
				   .ctx = &c,
				   .batch_max = 10,
				   .max_retries = 1000,
				   .backoff_ms = 3600 * 1000};
	sc_projection *p;
	sc_error err;
	assert_int_equal(sc_projection_start(s, &o, &p, &err), 0);
	wait_failures(&c, 1);
	/* In its hour-long backoff: a seek wakes it and it goes on. */
	pthread_mutex_lock(&c.mu);
	c.failing = false;
	pthread_mutex_unlock(&c.mu);
	assert_int_equal(sc_projection_seek(p, 0, &err), 0);
	wait_for(p, 100);
	assert_false(c.broken);
	sc_projection_stats st;
	assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
	assert_int_equal(st.retries, 1);
	/* Failing again, in backoff: stop wakes it, and it did not fail. */
	pthread_mutex_lock(&c.mu);
	c.failing = true;
	pthread_mutex_unlock(&c.mu);
	append_to(s, 120);
	wait_failures(&c, 2);
	assert_int_equal(sc_projection_stop(p, &err), 0);
	uint64_t off;
	assert_int_equal(sc_projection_offset(s, "flaky", &off, NULL, &err), 0);
	assert_int_equal(off, 100);
	pthread_mutex_destroy(&c.mu);
	pthread_cond_destroy(&c.cv);
	sc_store_close(s);
}

/* ---- at-least-once and lanes -----------------------------------------------
 */

typedef struct alo_ctx {
	pthread_mutex_t mu;
	uint64_t last[NKEYS]; /* per key: the last position seen */
	uint64_t *seen;	      /* per position: times delivered */
	uint64_t nseen;
	uint64_t rng;
	bool order_broken;
	int sink_fd; /* crash child: (run, position) records */
	uint32_t run;
	int ack_fd;
	bool kill_mid;
} alo_ctx;

static int alo_handler(void *vctx, sc_projection *p, MDB_txn *txn,
		       const sc_event *const *evs, size_t n, sc_error *err)
{
	SC_UNUSED(p);
	alo_ctx *c = vctx;
	if (txn)
		return sc_error_set(err, SC_EINVAL, "a transaction");
	for (size_t i = 0; i < n; i++) {
		if (c->kill_mid && i == n / 2)
			sc_killpoint("projection_mid_batch");
		pthread_mutex_lock(&c->mu);
		unsigned k = parse_key(evs[i]);
		if (c->last[k] >= evs[i]->position)
			c->order_broken = true;
		c->last[k] = evs[i]->position;
		if (c->seen && evs[i]->position < c->nseen)
			c->seen[evs[i]->position]++;
		uint64_t spins = tk_rand_below(&c->rng, 64);
		pthread_mutex_unlock(&c->mu);
		/* A random delay: other lanes run meanwhile. */
		for (uint64_t j = 0; j < spins; j++)
			sched_yield();
		if (c->sink_fd >= 0) {
			uint64_t rec[2] = {c->run, evs[i]->position};
			if (write(c->sink_fd, rec, sizeof rec) != sizeof rec)
				return sc_error_set(err, EIO, "sink");
		}
	}
	if (c->ack_fd >= 0) {
		char b = 1;
		if (write(c->ack_fd, &b, 1) != 1)
			return sc_error_set(err, EIO, "ack");
	}
	return 0;
}

static sc_str alo_key(void *ctx, const sc_event *ev)
{
	SC_UNUSED(ctx);
	return ev->entity;
}

static sc_projection *start_alo(sc_store *s, alo_ctx *c, unsigned lanes,
				size_t batch, uint64_t save_every)
{
	sc_projection_options o = {0};
	o.name = "sink";
	o.kind = SC_PROJECTION_AT_LEAST_ONCE;
	o.handler = alo_handler;
	o.ctx = c;
	o.batch_max = batch;
	o.save_every = save_every;
	o.save_ms = 60000;
	o.lanes = lanes;
	o.key = lanes > 2 ? alo_key : NULL;
	sc_projection *p = NULL;
	sc_error err;
	int rc = sc_projection_start(s, &o, &p, &err);
	if (rc)
		fprintf(stderr, "start: %s\n", err.message);
	assert_int_equal(rc, 0);
	return p;
}

static void test_at_least_once_lanes(void **state)
{
	SC_UNUSED(state);
	unsigned lane_counts[] = {1, 2, 4};
	for (size_t li = 0; li < 3; li++) {
		char dir[256];
		uint64_t total = short_run ? 2000 : 8000;
		sc_store *s = new_store_with(dir, sizeof dir, total / 2);
		alo_ctx c = {.sink_fd = -1, .ack_fd = -1, .rng = seed + li};
		pthread_mutex_init(&c.mu, NULL);
		c.nseen = total + 1;
		c.seen = calloc(c.nseen, sizeof *c.seen);
		assert_non_null(c.seen);
		sc_projection *p = start_alo(s, &c, lane_counts[li], 50, 100);
		append_to(s, total);
		wait_for(p, total);
		sc_error err;
		sc_projection_stats st;
		assert_int_equal(sc_projection_stats_get(p, &st, &err), 0);
		assert_int_equal(st.handled, total);
		assert_true(st.offset <= total);
		assert_int_equal(sc_projection_stop(p, &err), 0);
		uint64_t off;
		assert_int_equal(
		    sc_projection_offset(s, "sink", &off, NULL, &err), 0);
		assert_int_equal(off, total); /* stop saves */
		assert_false(c.order_broken);
		for (uint64_t i = 1; i <= total; i++)
			assert_int_equal(c.seen[i], 1);

		/* A projection of one kind does not start as the other. */
		eo_ctx ec = {.ack_fd = -1};
		sc_projection_options o = {.name = "sink",
					   .kind = SC_PROJECTION_EXACTLY_ONCE,
					   .handler = eo_handler,
					   .ctx = &ec};
		assert_int_equal(sc_projection_start(s, &o, &p, &err),
				 SC_EINVAL);
		free(c.seen);
		pthread_mutex_destroy(&c.mu);
		sc_store_close(s);
	}
}

static void test_list_and_arguments(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store *s = new_store_with(dir, sizeof dir, 100);
	sc_error err;
	eo_ctx ec = {.ack_fd = -1};
	run_eo_to(s, &ec, 100);
	sc_projection *p;
	alo_ctx ac = {.sink_fd = -1, .ack_fd = -1};
	pthread_mutex_init(&ac.mu, NULL);
	p = start_alo(s, &ac, 1, 10, 10);
	wait_for(p, 100);
	sc_projection_pause(p);
	append_to(s, 130);
	list_ctx lc = {0};
	assert_int_equal(sc_projection_list(s, list_fn, &lc, &err), 0);
	assert_int_equal(lc.n, 2);
	/* The state a save records: running, or paused if it saved since. */
	assert_true(strcmp(lc.names[0], "sink/at-least-once/running") == 0 ||
		    strcmp(lc.names[0], "sink/at-least-once/paused") == 0);
	assert_string_equal(lc.names[1], "sums/exactly-once/stopped");
	assert_int_equal(lc.behind[1], 30);
	assert_int_equal(sc_projection_stop(p, &err), 0);
	pthread_mutex_destroy(&ac.mu);

	sc_projection_options o = {0};
	o.handler = eo_handler;
	o.kind = SC_PROJECTION_EXACTLY_ONCE;
	const char *bad_names[] = {NULL, "", "a/b"};
	for (size_t i = 0; i < 3; i++) {
		o.name = bad_names[i];
		assert_int_equal(sc_projection_start(s, &o, &p, &err),
				 SC_EINVAL);
	}
	o.name = "x";
	o.lanes = 2;
	assert_int_equal(sc_projection_start(s, &o, &p, &err), SC_EINVAL);
	o.lanes = 0;
	const char *const bad_dbs[] = {"a/b", NULL};
	o.databases = bad_dbs;
	assert_int_equal(sc_projection_start(s, &o, &p, &err), SC_EINVAL);
	o.databases = NULL;
	o.handler = NULL;
	assert_int_equal(sc_projection_start(s, &o, &p, &err), SC_EINVAL);
	assert_int_equal(sc_projection_stop(NULL, &err), 0);
	sc_store_close(s);
}

/* Run `statecache --db dir projections ARGS` in this process, its stdout
 * into `out` (size n). Returns the exit code. */
static int run_cli(const char *dir, char *out, size_t n, int argc, char **argv)
{
	char path[300];
	snprintf(path, sizeof path, "%s/cli.out", root);
	fflush(stdout);
	int saved = dup(1);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	assert_true(dup2(fd, 1) == 1);
	close(fd);
	sc_cli_global g = {.db = dir};
	int code = sc_cli_cmd_projections(&g, argc, argv);
	fflush(stdout);
	assert_true(dup2(saved, 1) == 1);
	close(saved);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t len = fread(out, 1, n - 1, f);
	out[len] = 0;
	fclose(f);
	return code;
}

static void test_cli(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store *s = new_store_with(dir, sizeof dir, 60);
	sc_error err;
	eo_ctx ec = {.ack_fd = -1};
	run_eo_to(s, &ec, 60);
	sc_projection *p;
	append_to(s, 70);
	sc_store_close(s);

	char out[4096];
	char *list[] = {"projections"};
	assert_int_equal(run_cli(dir, out, sizeof out, 1, list), 0);
	assert_string_equal(out,
			    "{\"name\":\"sums\",\"kind\":\"exactly-once\","
			    "\"state\":\"stopped\",\"offset\":60,"
			    "\"events_behind\":10,\"seconds_behind\":0.009}\n");
	char *reset_to[] = {"projections", "reset", "sums", "--to", "30"};
	assert_int_equal(run_cli(dir, out, sizeof out, 5, reset_to), 0);
	assert_int_equal(run_cli(dir, out, sizeof out, 1, list), 0);
	assert_non_null(strstr(out, "\"offset\":30,\"events_behind\":40"));
	char *beyond[] = {"projections", "reset", "sums", "--to", "71"};
	assert_int_equal(run_cli(dir, out, sizeof out, 5, beyond), 1);
	char *unknown[] = {"projections", "reset", "nope"};
	assert_int_equal(run_cli(dir, out, sizeof out, 3, unknown), 1);
	char *noname[] = {"projections", "reset"};
	assert_int_equal(run_cli(dir, out, sizeof out, 2, noname), 2);
	char *bad[] = {"projections", "drop"};
	assert_int_equal(run_cli(dir, out, sizeof out, 2, bad), 2);
	char *reset0[] = {"projections", "reset", "sums"};
	assert_int_equal(run_cli(dir, out, sizeof out, 3, reset0), 0);

	/* Reset to 0 emptied the model; a new run rebuilds it. */
	s = open_store(dir);
	MDB_dbi dbi;
	assert_int_equal(sc_projection_open_db(s, "sums", "sums", &dbi, &err),
			 0);
	check_model(s, dbi, 0, 0);
	p = start_eo(s, &ec, 10, SC_PROJECTION_RETRY);
	wait_for(p, 70);
	check_model(s, dbi, 70, 0);
	assert_int_equal(sc_projection_stop(p, &err), 0);
	sc_store_close(s);
}

/* ---- crashes
 * ----------------------------------------------------------------- */

/* The child: append up to `total` while the projection of `kind` runs,
 * acknowledging each handler call on ack_fd; exit 0 when it handled all. */
static int child_main(const char *dir, int kind, unsigned lanes, uint32_t run,
		      uint64_t total, int ack_fd)
{
	sc_store *s = open_store(dir);
	sc_projection *p;
	eo_ctx ec = {.ack_fd = ack_fd, .kill_mid = true};
	alo_ctx ac = {.ack_fd = ack_fd, .run = run, .kill_mid = true};
	pthread_mutex_init(&ac.mu, NULL);
	ac.rng = seed ^ run;
	if (kind == SC_PROJECTION_EXACTLY_ONCE) {
		p = start_eo(s, &ec, 1 + (size_t)(seed % 11),
			     SC_PROJECTION_RETRY);
	} else {
		char path[300];
		snprintf(path, sizeof path, "%s/sink.bin", dir);
		ac.sink_fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
		assert_true(ac.sink_fd >= 0);
		p = start_alo(s, &ac, lanes, 1 + (size_t)(seed % 9), 13);
	}
	append_to(s, total);
	wait_for(p, total);
	sc_error err;
	assert_int_equal(sc_projection_stop(p, &err), 0);
	sc_store_close(s);
	return 0;
}

/* Run the child once; kill it after `acks` handler calls (0: let it
 * finish or die at its kill point). Returns true when it finished. */
typedef struct child_run {
	const char *dir;
	int kind;
	unsigned lanes;
	uint32_t run;
	uint64_t total;
	const char *killpoint;
} child_run;

/* The child: this program again with --child, its acks written to fd. */
static int exec_child(void *arg, int fd)
{
	const child_run *c = arg;
	tk_killpoint_arm(c->killpoint);
	char a[7][64];
	snprintf(a[0], 64, "%d", c->kind);
	snprintf(a[1], 64, "%u", c->lanes);
	snprintf(a[2], 64, "%u", c->run);
	snprintf(a[3], 64, "%llu", (unsigned long long)c->total);
	snprintf(a[4], 64, "%d", fd);
	snprintf(a[5], 64, "%llu", (unsigned long long)seed);
	execl(self, self, "--child", c->dir, a[0], a[1], a[2], a[3], a[4], a[5],
	      (char *)NULL);
	return 127;
}

static bool run_child(const char *dir, int kind, unsigned lanes, uint32_t run,
		      uint64_t total, const char *killpoint, unsigned acks)
{
	child_run c = {dir, kind, lanes, run, total, killpoint};
	int up;
	pid_t pid = tk_child_start(exec_child, &c, &up);
	unsigned got = 0;
	char b;
	while ((acks == 0 || got < acks) && read(up, &b, 1) == 1)
		got++;
	if (acks && got == acks)
		kill(pid, SIGKILL);
	close(up);
	int st = tk_child_wait(pid);
	if (WIFEXITED(st)) {
		assert_int_equal(WEXITSTATUS(st), 0);
		return true;
	}
	assert_true(tk_killed(st, SIGKILL));
	return false;
}

typedef struct sink_rec {
	uint64_t run, pos;
} sink_rec;

/* Check the at-least-once sink: run r (after the first) began exactly
 * after starts[r], and, without lanes, delivered positions in order. */
static void check_sink(const char *dir, const uint64_t *starts, uint32_t runs,
		       uint64_t covered, bool ordered)
{
	char path[300];
	snprintf(path, sizeof path, "%s/sink.bin", dir);
	FILE *f = fopen(path, "rb");
	uint64_t *count = calloc(covered + 2, sizeof *count);
	assert_non_null(count);
	sink_rec r, prev = {0, 0};
	uint64_t *first = calloc(runs + 1, sizeof *first);
	assert_non_null(first);
	while (f && fread(&r, sizeof r, 1, f) == 1) {
		assert_true(r.run < runs);
		assert_true(r.pos >= 1);
		/* Nothing before the run's start offset is delivered again. */
		assert_true(r.pos > starts[r.run]);
		if (!first[r.run] || r.pos < first[r.run])
			first[r.run] = r.pos;
		if (ordered && r.run == prev.run)
			assert_true(r.pos == prev.pos + 1);
		if (r.pos <= covered)
			count[r.pos]++;
		prev = r;
	}
	if (f)
		fclose(f);
	for (uint32_t i = 0; ordered && i < runs; i++)
		if (first[i])
			assert_int_equal(first[i], starts[i] + 1);
	for (uint64_t i = 1; i <= covered; i++)
		assert_true(count[i] >= 1);
	free(count);
	free(first);
}

static const char *const killpoints[] = {
    "projection_handler",
    "projection_mid_batch",
    "projection_before_save",
    "projection_after_save",
    NULL, /* a random kill */
};

static void crash_run(int kind, unsigned lanes)
{
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	uint64_t total = short_run ? 600 : 3000;
	uint64_t rng = seed ^ (uint64_t)kind ^ ((uint64_t)lanes << 8);
	uint64_t starts[64];
	uint32_t run = 0;
	unsigned kills = 0;
	unsigned kill_runs = short_run ? 8u : 40u;
	bool done = false;
	uint64_t target = 0;
	/* Each killed run has new events to handle: the log grows to total
	 * over the kill runs, then a last run completes. */
	while (!done || target < total) {
		assert_true(run < 64);
		/* The offset this run starts from. */
		uint64_t off = 0;
		sc_error err;
		if (run > 0) {
			sc_store *s = open_store(dir);
			assert_int_equal(
			    sc_projection_offset(s, kind ? "sink" : "sums",
						 &off, NULL, &err),
			    0);
			if (kind == SC_PROJECTION_EXACTLY_ONCE) {
				MDB_dbi dbi;
				assert_int_equal(
				    sc_projection_open_db(s, "sums", "sums",
							  &dbi, &err),
				    0);
				check_model(s, dbi, off, 0);
			}
			sc_store_close(s);
		}
		starts[run] = off;
		const char *kp = NULL;
		unsigned acks = 0;
		char kpbuf[64];
		target =
		    run < kill_runs ? total * (run + 1) / kill_runs : total;
		if (run < kill_runs) {
			size_t i = (size_t)tk_rand_below(&rng, 5);
			if (killpoints[i]) {
				snprintf(kpbuf, sizeof kpbuf, "%s:%u",
					 killpoints[i],
					 1 + (unsigned)tk_rand_below(&rng, 6));
				kp = kpbuf;
			} else {
				acks = 1 + (unsigned)tk_rand_below(&rng, 30);
			}
		}
		done = run_child(dir, kind, lanes, run, target, kp, acks);
		kills += !done;
		run++;
	}
	printf("crash: %s, %u lane(s): %u runs, %u killed\n",
	       sc_projection_kind_name((sc_projection_kind)kind), lanes, run,
	       kills);
	sc_store *s = open_store(dir);
	uint64_t off;
	sc_error err;
	assert_int_equal(
	    sc_projection_offset(s, kind ? "sink" : "sums", &off, NULL, &err),
	    0);
	assert_int_equal(off, total);
	if (kind == SC_PROJECTION_EXACTLY_ONCE) {
		MDB_dbi dbi;
		assert_int_equal(
		    sc_projection_open_db(s, "sums", "sums", &dbi, &err), 0);
		check_model(s, dbi, total, 0);
	} else {
		check_sink(dir, starts, run, total, lanes <= 1);
	}
	sc_store_close(s);
}

static void test_crash_exactly_once(void **state)
{
	SC_UNUSED(state);
	crash_run(SC_PROJECTION_EXACTLY_ONCE, 1);
}

static void test_crash_at_least_once(void **state)
{
	SC_UNUSED(state);
	crash_run(SC_PROJECTION_AT_LEAST_ONCE, 1);
}

static void test_crash_lanes(void **state)
{
	SC_UNUSED(state);
	crash_run(SC_PROJECTION_AT_LEAST_ONCE, 3);
}

static int setup(void **state)
{
	SC_UNUSED(state);
	seed = tk_seed("test_projection");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	root = tk_tmproot_create("test_projection");
	assert_non_null(root);
	return 0;
}

int main(int argc, char **argv)
{
	self = argv[0];
	if (argc == 9 && strcmp(argv[1], "--child") == 0) {
		seed = strtoull(argv[8], NULL, 10);
		return child_main(argv[2], atoi(argv[3]),
				  (unsigned)atoi(argv[4]),
				  (uint32_t)atoi(argv[5]),
				  strtoull(argv[6], NULL, 10), atoi(argv[7]));
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exactly_once),
	    cmocka_unit_test(test_error_policy),
	    cmocka_unit_test(test_backoff_interrupted),
	    cmocka_unit_test(test_at_least_once_lanes),
	    cmocka_unit_test(test_list_and_arguments),
	    cmocka_unit_test(test_cli),
	    cmocka_unit_test(test_crash_exactly_once),
	    cmocka_unit_test(test_crash_at_least_once),
	    cmocka_unit_test(test_crash_lanes),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
