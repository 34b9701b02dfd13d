/*
 * Store concurrency: one writer appends deterministic batches while a
 * snapshot thread takes snapshots, the store's checkpoint thread writes
 * checkpoints and reader threads read the log, the
 * per-entity index, as-of states, stats and the cache, all at once. The
 * map starts tiny so it grows (remaps) while readers are active. Readers
 * check what they see against the deterministic stream; at the end the
 * state equals the reference model, and again after a reopen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "statecache/store.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/thread_testkit.h"

#define NENT 97

static uint64_t seed;

typedef struct shared {
	sc_store *store;
	atomic_int done;
	atomic_long reads, snapshots;
	atomic_int failed;
} shared;

static void event_at(uint64_t position, tk_event *out)
{
	tk_event_gen(seed, position - 1, NENT, (int64_t)position, out);
}

typedef struct reader_ctx {
	uint64_t next;
	int bad;
} reader_ctx;

static int check_event(void *ctx, const sc_event *ev)
{
	reader_ctx *c = ctx;
	tk_event want;
	event_at(ev->position, &want);
	want.ev.position = ev->position;
	if ((c->next && ev->position != c->next) ||
	    !tk_event_equal(ev, &want.ev)) {
		c->bad = 1;
		return 1;
	}
	c->next = ev->position + 1;
	return 0;
}

static int check_entity_event(void *ctx, const sc_event *ev)
{
	reader_ctx *c = ctx;
	tk_event want;
	event_at(ev->position, &want);
	want.ev.position = ev->position;
	if (ev->position < c->next || !tk_event_equal(ev, &want.ev)) {
		c->bad = 1;
		return 1;
	}
	c->next = ev->position + 1;
	return 0;
}

static void *reader_main(void *p)
{
	shared *sh = p;
	uint64_t r = seed ^ (uint64_t)(uintptr_t)&r;
	sc_reader *cr;
	if (sc_reader_open(sc_store_cache(sh->store), &cr, NULL)) {
		atomic_store(&sh->failed, 1);
		return NULL;
	}
	while (!atomic_load(&sh->done) && !atomic_load(&sh->failed)) {
		uint64_t last = sc_store_last_position(sh->store);
		uint64_t from = last ? 1 + tk_rand(&r) % last : 1;
		reader_ctx c = {from, 0};
		sc_error err;
		if (sc_store_events(sh->store, from, 50, check_event, &c,
				    &err) ||
		    c.bad || (last && c.next <= from)) {
			fprintf(stderr, "reader: events from %llu: %s\n",
				(unsigned long long)from,
				c.bad ? "wrong event" : err.message);
			atomic_store(&sh->failed, 1);
			break;
		}
		char id[16];
		int n = snprintf(id, sizeof id, "e%u",
				 (unsigned)(tk_rand(&r) % NENT));
		sc_str sid = {id, (size_t)n};
		reader_ctx ce = {0, 0};
		if (sc_store_entity_events(sh->store, sid, 0, 20,
					   check_entity_event, &ce, &err) ||
		    ce.bad) {
			fprintf(stderr, "reader: entity events: %s\n",
				ce.bad ? "wrong event" : err.message);
			atomic_store(&sh->failed, 1);
			break;
		}
		sc_entity *e = NULL;
		int rc = sc_store_entity_at(sh->store, sid, last, &e, &err);
		if (rc == 0) {
			sc_str got = sc_entity_id(e);
			if (got.len != sid.len ||
			    memcmp(got.ptr, id, sid.len) ||
			    sc_entity_position(e) > last) {
				atomic_store(&sh->failed, 1);
			}
			sc_entity_free(e);
		} else if (rc != SC_NOTFOUND) {
			fprintf(stderr, "reader: entity_at: %s\n", err.message);
			atomic_store(&sh->failed, 1);
		}
		sc_store_stats st;
		if (sc_store_stats_get(sh->store, &st, NULL) ||
		    st.map_bytes_used > st.map_size)
			atomic_store(&sh->failed, 1);
		const sc_view *v = sc_reader_begin(cr);
		if (sc_view_len(v) > NENT)
			atomic_store(&sh->failed, 1);
		sc_reader_end(cr);
		atomic_fetch_add(&sh->reads, 1);
	}
	sc_reader_close(cr);
	return NULL;
}

static void *snapshot_main(void *p)
{
	shared *sh = p;
	while (!atomic_load(&sh->done) && !atomic_load(&sh->failed)) {
		sc_error err;
		if (sc_store_snapshot(sh->store, NULL, &err)) {
			fprintf(stderr, "snapshot: %s\n", err.message);
			atomic_store(&sh->failed, 1);
			break;
		}
		atomic_fetch_add(&sh->snapshots, 1);
	}
	return NULL;
}

static void test_concurrent_append_read_snapshot(void **state)
{
	SC_UNUSED(state);
	assert_non_null(tk_tmproot_create("stress_store"));
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.map_size = 128 << 10; /* grows while readers run */
	o.snapshot_keep = 2;
	o.cache.seed = seed | 1;
	/* The checkpoint thread writes every few hundred events, while the
	 * map grows and the snapshots are taken. */
	o.checkpoint_tail = 200;
	o.checkpoint_entities_per_chunk = 8;
	sc_store *s = NULL;
	sc_error err;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);

	shared sh = {.store = s};
	pthread_t readers[2], snap;
	tk_threads_start(readers, 2, reader_main, &sh, 0);
	tk_threads_start(&snap, 1, snapshot_main, &sh, 0);

	const uint64_t total = getenv("SC_TEST_SHORT") ? 3000 : 20000;
	tk_refstate *m = tk_refstate_new();
	uint64_t r = seed, pos = 0;
	tk_event g[20];
	sc_event batch[20];
	while (pos < total && !atomic_load(&sh.failed)) {
		size_t n = 1 + tk_rand(&r) % 20;
		for (size_t k = 0; k < n; k++) {
			event_at(pos + 1 + k, &g[k]);
			batch[k] = g[k].ev;
		}
		assert_int_equal(tk_store_append_model(s, batch, n, m),
				 pos + 1);
		pos += n;
	}
	atomic_store(&sh.done, 1);
	tk_threads_join(readers, 2);
	tk_threads_join(&snap, 1);
	assert_int_equal(atomic_load(&sh.failed), 0);
	printf("%llu events, %ld reader rounds, %ld snapshots\n",
	       (unsigned long long)pos, atomic_load(&sh.reads),
	       atomic_load(&sh.snapshots));
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.map_size > (128 << 10)); /* it grew */
	assert_int_equal(sc_store_checkpoints_wait(s, NULL), 0);
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.checkpoints_written > 0);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	sc_store_close(s);

	/* Reopened by its checkpoints: the tails after them only (of the
	 * default partition and p1, each under the bound). */
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	assert_true(tk_cache_matches(sc_store_cache(s), m));
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.open_events_replayed < 2 * 200);
	sc_store_close(s);
	tk_refstate_free(m);
	assert_int_equal(tk_tmproot_remove(), 0);
}

int main(void)
{
	seed = tk_seed("stress_store");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_concurrent_append_read_snapshot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
