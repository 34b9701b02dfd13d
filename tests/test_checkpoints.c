/*
 * Per-partition checkpoints: after random streams over several partitions
 * (the default one and one with a 4096-byte name among them), random
 * checkpoints, snapshots and reopens, every partition equals the reference
 * model's fold of its events; a damaged checkpoint of one partition (a
 * flipped byte, a truncated chunk, a missing chunk) falls back for that
 * partition alone, with a warning naming it; automatic checkpoints keep
 * every partition's tail near the bound, so open replays at most about
 * the bound per partition; an operator lists a partition's checkpoints and
 * chooses an older one; a process killed at named points inside a
 * checkpoint's write or load loses nothing committed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "statecache/cache.h"
#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static bool short_run;
static const char *root;
static const char *self_exe;

static void names_init(void);

static int setup(void **state)
{
	(void)state;
	seed = tk_seed("test_checkpoints");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	names_init();
	root = tk_tmproot_create("test_checkpoints");
	return root ? 0 : -1;
}

static sc_str S(const char *s)
{
	return (sc_str){s, strlen(s)};
}

/* ==== partitions and random events ======================================== */

#define NPARTS 5
static char long_part[SC_EVENT_FIELD_MAX];
static sc_str parts[NPARTS];

static bool part_used[NPARTS];

#define NIDS 12
static char id_buf[NIDS][8];
static sc_str ids[NIDS];

static void names_init(void)
{
	memset(long_part, 'p', sizeof long_part);
	parts[0] = S("");
	parts[1] = S("a");
	parts[2] = S("ab");
	parts[3] = S("tenant-0042");
	parts[4] = (sc_str){long_part, sizeof long_part};
	for (int i = 0; i < NIDS; i++) {
		int n = snprintf(id_buf[i], sizeof id_buf[i], "e%d", i);
		ids[i] = (sc_str){id_buf[i], (size_t)n};
	}
}

typedef struct rev {
	sc_event ev;
	sc_attr attrs[3];
	char vals[3][16];
} rev;

static const char *const attr_names[] = {"a", "b", "c"};

/* A random valid event of a random entity of partition `part`. */
static void rev_make(uint64_t *rng, sc_str part, rev *r)
{
	memset(r, 0, sizeof *r);
	sc_event *ev = &r->ev;
	ev->partition = part;
	ev->entity = ids[tk_rand_below(rng, NIDS)];
	ev->time = 1000 + (int64_t)tk_rand_below(rng, 1000);
	ev->actor = tk_rand_below(rng, 2) ? S("svc") : S("");
	unsigned k = (unsigned)tk_rand_below(rng, 100);
	ev->type = k < 65   ? SC_EVENT_SET
		   : k < 80 ? SC_EVENT_UNSET
		   : k < 92 ? SC_EVENT_REPLACE
			    : SC_EVENT_DELETE;
	if (ev->type == SC_EVENT_DELETE)
		return;
	size_t n = (size_t)tk_rand_below(rng, 3) + 1;
	for (size_t i = 0; i < n; i++) {
		sc_attr *a = &r->attrs[i];
		a->name = S(attr_names[i]);
		if (tk_rand_below(rng, 2)) {
			a->value.type = SC_VALUE_INT;
			a->value.u.i = (int64_t)tk_rand(rng);
		} else {
			int len = snprintf(r->vals[i], sizeof r->vals[i], "v%u",
					   (unsigned)tk_rand_below(rng, 1000));
			a->value.type = SC_VALUE_STRING;
			a->value.u.s = (sc_str){r->vals[i], (size_t)len};
		}
	}
	ev->attrs = r->attrs;
	ev->nattrs = n;
}

/* Append `n` random events (a random partition each, or all of `only`
 * when only >= 0) in one batch and fold them into the model. */
static void append_random(sc_store *s, tk_refstate *m, uint64_t *rng, size_t n,
			  int only)
{
	rev *rs = calloc(n, sizeof *rs);
	sc_event *evs = calloc(n, sizeof *evs);
	assert_non_null(rs);
	assert_non_null(evs);
	for (size_t i = 0; i < n; i++) {
		size_t pi = only >= 0 ? (size_t)only
				      : (size_t)tk_rand_below(rng, NPARTS);
		part_used[pi] = true;
		sc_str p = parts[pi];
		rev_make(rng, p, &rs[i]);
		evs[i] = rs[i].ev;
	}
	tk_store_append_model(s, evs, n, m);
	free(rs);
	free(evs);
}

/* Every partition of the store's cache equals the model's. */
static void check_store(sc_store *s, const tk_refstate *m)
{
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	const sc_view *v = sc_reader_begin(r);
	tk_view_check_model(v, m, "state differs from the model");
	char why[512];
	for (size_t i = 0; i < NPARTS; i++) {
		bool ok = tk_refstate_check_partition(m, v, parts[i], why,
						      sizeof why);
		if (!ok)
			fprintf(stderr, "partition %zu differs: %s\n", i, why);
		assert_true(ok);
	}
	assert_int_equal(sc_view_position(v), sc_store_last_position(s));
	sc_reader_end(r);
	sc_reader_close(r);
}

/* Warnings, collected. */
typedef struct warns {
	char text[16384];
	size_t len;
	unsigned n;
} warns;

static void warn_collect(void *ctx, const char *msg)
{
	warns *w = ctx;
	w->n++;
	int k =
	    snprintf(w->text + w->len, sizeof w->text - w->len, "%s\n", msg);
	if (k > 0 && w->len + (size_t)k < sizeof w->text)
		w->len += (size_t)k;
}

static sc_store *open_store(const char *dir, uint64_t tail, uint32_t per_chunk,
			    warns *w)
{
	sc_store_options o = {.create = true,
			      .durability = SC_DURABILITY_NOSYNC,
			      .checkpoint_tail = tail,
			      .checkpoint_entities_per_chunk = per_chunk,
			      .index_lag = 64,
			      .warn = w ? warn_collect : NULL,
			      .warn_ctx = w};
	return tk_store_open(dir, &o);
}

/* open_store of a new store in a fresh directory (its path in dir). */
static sc_store *new_store(char *dir, size_t dir_len, uint64_t tail,
			   uint32_t per_chunk)
{
	tk_tmproot_dir(dir, dir_len);
	return open_store(dir, tail, per_chunk, NULL);
}

static int count_part(void *ctx, const sc_partition_info *p)
{
	size_t *n = ctx;
	(*n)++;
	assert_true(p->tail <= p->events && p->last_position > 0);
	return 0;
}

/* The partitions of `parts` that append_random gave an event since the
 * last reset. */
static size_t partitions_with_events(void)
{
	size_t n = 0;
	for (size_t i = 0; i < NPARTS; i++)
		n += part_used[i];
	return n;
}

/* ==== the differential property ======================================== */

static void test_differential(void **state)
{
	(void)state;
	uint64_t rng = seed ^ 0x5151;
	unsigned rounds = short_run ? 6 : 20;
	for (unsigned round = 0; round < rounds; round++) {
		char dir[256];
		tk_refstate *m = tk_refstate_new();
		memset(part_used, 0, sizeof part_used);
		uint64_t tail = 20 + tk_rand_below(&rng, 60);
		sc_store *s = new_store(dir, sizeof dir, tail, 2);
		unsigned steps = short_run ? 40 : 120;
		for (unsigned i = 0; i < steps; i++) {
			unsigned k = (unsigned)tk_rand_below(&rng, 100);
			if (k < 70) {
				int only =
				    tk_rand_below(&rng, 3) == 0
					? (int)tk_rand_below(&rng, NPARTS)
					: -1;
				append_random(s, m, &rng,
					      1 + tk_rand_below(&rng, 40),
					      only);
			} else if (k < 80) {
				sc_checkpoint_info ci;
				sc_error err;
				sc_str p = parts[tk_rand_below(&rng, NPARTS)];
				int rc = sc_store_checkpoint(s, p, &ci, &err);
				if (rc)
					fprintf(stderr, "checkpoint: %s\n",
						err.message);
				assert_int_equal(rc, 0);
			} else if (k < 84) {
				assert_int_equal(
				    sc_store_snapshot(s, NULL, NULL), 0);
			} else if (k < 88) {
				assert_int_equal(
				    sc_store_checkpoints_wait(s, NULL), 0);
			} else {
				/* Reopen: with automatic checkpoints or
				 * without them. */
				sc_store_close(s);
				s = open_store(dir,
					       tk_rand_below(&rng, 4)
						   ? tail
						   : SC_CHECKPOINT_NEVER,
					       2, NULL);
				check_store(s, m);
			}
		}
		sc_store_close(s);
		s = open_store(dir, tail, 2, NULL);
		check_store(s, m);
		sc_error verr;
		int vrc = sc_store_verify(s, &verr);
		if (vrc)
			fprintf(stderr, "verify: %s\n", verr.message);
		assert_int_equal(vrc, 0);
		size_t listed = 0;
		assert_int_equal(
		    sc_store_partitions(s, count_part, &listed, NULL), 0);
		assert_int_equal(listed, partitions_with_events());
		/* The catalog counts every partition's events. */
		for (size_t i = 0; i < NPARTS; i++) {
			sc_partition_info pi;
			int rc =
			    sc_store_partition_info(s, parts[i], &pi, NULL);
			assert_true(rc == 0 || rc == SC_NOTFOUND);
			if (rc == 0)
				assert_true(pi.tail <= pi.events);
		}
		sc_store_close(s);
		tk_refstate_free(m);
	}
}

/* ==== damaged checkpoints ============================================== */

static void part_key(uint8_t *k, sc_str p)
{
	memset(k, 0, 17);
	if (p.len) {
		XXH128_canonical_t h;
		XXH128_canonicalFromHash(&h, XXH3_128bits(p.ptr, p.len));
		k[0] = 1;
		memcpy(k + 1, h.digest, 16);
	}
}

enum damage { FLIP, TRUNCATE, MISSING, HEADER };

/* Damage chunk 0 (or the header) of the checkpoint of `p` at `pos`. */
static void damage(sc_store *s, sc_str p, uint64_t pos, enum damage how)
{
	MDB_env *env = sc_store_env(s);
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "checkpoints", 0, &dbi), 0);
	uint8_t kb[29];
	part_key(kb, p);
	for (int i = 7; i >= 0; i--)
		kb[17 + 7 - i] = (uint8_t)(pos >> (8 * i));
	uint32_t part = how == HEADER ? 0 : 1;
	kb[25] = (uint8_t)(part >> 24);
	kb[26] = (uint8_t)(part >> 16);
	kb[27] = (uint8_t)(part >> 8);
	kb[28] = (uint8_t)part;
	MDB_val k = {sizeof kb, kb}, v;
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	uint8_t *copy = malloc(v.mv_size);
	memcpy(copy, v.mv_data, v.mv_size);
	MDB_val nv = {v.mv_size, copy};
	if (how == MISSING) {
		assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	} else {
		if (how == TRUNCATE)
			nv.mv_size /= 2;
		else
			copy[v.mv_size / 2] ^= 0x10;
		assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	free(copy);
}

static void test_damaged(void **state)
{
	(void)state;
	static const char *const how_names[] = {"flip", "truncate", "missing",
						"header"};
	for (int how = FLIP; how <= HEADER; how++) {
		for (size_t victim = 0; victim < NPARTS; victim += 2) {
			uint64_t rng = seed ^ (uint64_t)(how * 31 + victim);
			char dir[256];
			tk_refstate *m = tk_refstate_new();
			sc_store *s =
			    new_store(dir, sizeof dir, SC_CHECKPOINT_NEVER, 3);
			uint64_t newest[NPARTS], older[NPARTS];
			for (int round = 0; round < 2; round++) {
				for (int j = 0; j < 4; j++)
					append_random(s, m, &rng, 30, -1);
				for (size_t i = 0; i < NPARTS; i++) {
					sc_checkpoint_info ci;
					assert_int_equal(
					    sc_store_checkpoint(s, parts[i],
								&ci, NULL),
					    0);
					assert_true(ci.entities > 0);
					(round ? newest : older)[i] =
					    ci.position;
				}
			}
			append_random(s, m, &rng, 25, -1);
			damage(s, parts[victim], newest[victim],
			       (enum damage)how);
			sc_checkpoint_info list[8];
			int n = sc_store_checkpoints(s, parts[victim], list, 8,
						     NULL);
			assert_int_equal(n, 2);
			assert_int_equal(list[0].position, newest[victim]);
			assert_false(list[0].verifies);
			assert_true(list[1].verifies);
			sc_store_close(s);

			warns w = {0};
			s = open_store(dir, SC_CHECKPOINT_NEVER, 3, &w);
			check_store(s, m);
			if (w.n != 1)
				fprintf(stderr, "%s: warnings:\n%s",
					how_names[how], w.text);
			assert_int_equal(w.n, 1);
			char want[64];
			snprintf(want, sizeof want, "at position %llu",
				 (unsigned long long)newest[victim]);
			assert_non_null(strstr(w.text, want));
			char pname[80];
			snprintf(pname, sizeof pname, "partition '%.*s'",
				 (int)(parts[victim].len > 64
					   ? 64
					   : parts[victim].len),
				 parts[victim].ptr);
			assert_non_null(strstr(w.text, pname));
			/* Only the victim went back to its older
			 * checkpoint; a second damage sends it to a full
			 * replay of the partition. */
			damage(s, parts[victim], older[victim],
			       (enum damage)how);
			sc_store_close(s);
			memset(&w, 0, sizeof w);
			s = open_store(dir, SC_CHECKPOINT_NEVER, 3, &w);
			check_store(s, m);
			assert_int_equal(w.n, 2);
			assert_non_null(strstr(w.text, "a full replay"));
			sc_store_close(s);
			tk_refstate_free(m);
		}
	}
}

/* sc_store_verify checks the catalog against the log. */
static void test_verify_catalog(void **state)
{
	(void)state;
	uint64_t rng = seed ^ 0x7e;
	char dir[256];
	tk_refstate *m = tk_refstate_new();
	sc_store *s = new_store(dir, sizeof dir, SC_CHECKPOINT_NEVER, 0);
	for (int i = 0; i < 5; i++)
		append_random(s, m, &rng, 20, -1);
	assert_int_equal(sc_store_verify(s, NULL), 0);
	MDB_env *env = sc_store_env(s);
	for (int how = 0; how < 2; how++) {
		MDB_txn *txn;
		MDB_dbi dbi;
		assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
		assert_int_equal(
		    mdb_dbi_open(txn, "partition_catalog", 0, &dbi), 0);
		uint8_t kb[17];
		part_key(kb, parts[3]);
		MDB_val k = {sizeof kb, kb}, v;
		assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
		uint8_t *saved = malloc(v.mv_size);
		memcpy(saved, v.mv_data, v.mv_size);
		MDB_val sv = {v.mv_size, saved};
		if (how == 0) {
			uint8_t *copy = malloc(v.mv_size);
			memcpy(copy, v.mv_data, v.mv_size);
			copy[16]++; /* the event count's low byte */
			MDB_val nv = {v.mv_size, copy};
			assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
			free(copy);
		} else {
			assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
		}
		assert_int_equal(mdb_txn_commit(txn), 0);
		sc_error err;
		assert_int_equal(sc_store_verify(s, &err), SC_ECORRUPT);
		assert_non_null(strstr(err.message, "partition_catalog"));
		assert_non_null(
		    strstr(err.message, how == 0 ? "'tenant-0042'" : "no row"));
		assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
		assert_int_equal(mdb_put(txn, dbi, &k, &sv, 0), 0);
		assert_int_equal(mdb_txn_commit(txn), 0);
		free(saved);
		assert_int_equal(sc_store_verify(s, NULL), 0);
	}
	sc_store_close(s);
	tk_refstate_free(m);
}

/* ==== choosing a checkpoint ============================================ */

static void test_choose(void **state)
{
	(void)state;
	uint64_t rng = seed ^ 0xc4;
	char dir[256];
	tk_refstate *m = tk_refstate_new();
	sc_store *s = new_store(dir, sizeof dir, SC_CHECKPOINT_NEVER, 0);
	sc_str p = parts[3];
	uint64_t pos[5];
	for (int i = 0; i < 5; i++) {
		append_random(s, m, &rng, 20, 3);
		append_random(s, m, &rng, 7, 0);
		sc_checkpoint_info ci;
		assert_int_equal(sc_store_checkpoint(s, p, &ci, NULL), 0);
		pos[i] = ci.position;
	}
	/* Three kept (the default). */
	sc_checkpoint_info list[8];
	assert_int_equal(sc_store_checkpoints(s, p, list, 8, NULL), 3);
	assert_int_equal(list[0].position, pos[4]);
	assert_int_equal(list[2].position, pos[2]);
	sc_partition_info pi;
	assert_int_equal(sc_store_partition_info(s, p, &pi, NULL), 0);
	assert_int_equal(pi.events, 100);
	assert_int_equal(pi.tail, 0);
	assert_int_equal(pi.checkpoint_position, pos[4]);
	size_t dropped = 0;
	assert_int_equal(
	    sc_store_checkpoints_drop_after(s, p, pos[2], &dropped, NULL), 0);
	assert_int_equal(dropped, 2);
	assert_int_equal(sc_store_partition_info(s, p, &pi, NULL), 0);
	assert_int_equal(pi.checkpoint_position, pos[2]);
	assert_int_equal(pi.tail, 40);
	assert_int_equal(sc_store_checkpoints(s, p, list, 8, NULL), 1);
	sc_store_close(s);
	s = open_store(dir, SC_CHECKPOINT_NEVER, 0, NULL);
	check_store(s, m);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	/* The partition's 40 events after pos[2]; the default partition has
	 * no checkpoint: all of its 35. */
	assert_int_equal(st.open_events_replayed, 40 + 35);
	sc_store_close(s);
	tk_refstate_free(m);
}

/* ==== automatic checkpoints ============================================ */

static void test_automatic(void **state)
{
	(void)state;
	uint64_t rng = seed ^ 0xa7;
	char dir[256];
	tk_refstate *m = tk_refstate_new();
	const uint64_t bound = 100;
	sc_store *s = new_store(dir, sizeof dir, bound, 3);
	unsigned batches = short_run ? 150 : 600;
	uint64_t max_batch = 0;
	for (unsigned i = 0; i < batches; i++) {
		size_t n = 1 + tk_rand_below(&rng, 60);
		if (n > max_batch)
			max_batch = n;
		/* The default partition gets few events: its checkpoint
		 * falls due by the log's growth past it. */
		int only = tk_rand_below(&rng, 10) == 0
			       ? 0
			       : 1 + (int)tk_rand_below(&rng, NPARTS - 1);
		append_random(s, m, &rng, n, only);
	}
	assert_int_equal(sc_store_checkpoints_wait(s, NULL), 0);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.checkpoints_written >= NPARTS);
	uint64_t last = sc_store_last_position(s);
	for (size_t i = 0; i < NPARTS; i++) {
		sc_partition_info pi;
		assert_int_equal(
		    sc_store_partition_info(s, parts[i], &pi, NULL), 0);
		assert_true(pi.checkpoint_position > 0);
		/* Checked after the last due append was handled. */
		assert_true(pi.tail < bound);
		if (i == 0)
			assert_true(pi.tail == 0 ||
				    last - pi.checkpoint_position < 4 * bound);
		sc_checkpoint_info list[8];
		int n = sc_store_checkpoints(s, parts[i], list, 8, NULL);
		assert_true(n >= 1 && n <= 3);
		for (int j = 0; j < n; j++)
			assert_true(list[j].verifies);
	}
	sc_store_close(s);
	s = open_store(dir, bound, 3, NULL);
	check_store(s, m);
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_true(st.open_events_replayed < NPARTS * bound);
	assert_true(st.open_events_replayed < last / 4);
	sc_store_close(s);
	tk_refstate_free(m);
}

/* A failed automatic checkpoint (no reader slot left for it) is a
 * warning: every append is committed, and the thread does not try that
 * partition again before its tail has grown by another bound. */
static void test_automatic_failure(void **state)
{
	(void)state;
	uint64_t rng = seed ^ 0xfa;
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	warns w = {0};
	sc_store_options o = {.create = true,
			      .durability = SC_DURABILITY_NOSYNC,
			      .checkpoint_tail = 50,
			      .warn = warn_collect,
			      .warn_ctx = &w,
			      .cache.max_readers = 1};
	sc_store *s;
	assert_int_equal(sc_store_open(dir, &o, &s, NULL), 0);
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	tk_refstate *m = tk_refstate_new();
	for (int i = 0; i < 12; i++) {
		append_random(s, m, &rng, 10, 3);
		assert_int_equal(sc_store_checkpoints_wait(s, NULL), 0);
	}
	/* Tried when due at a tail of 50, and again only at 100 (its tail
	 * grown by the bound), not after every append. */
	assert_int_equal(w.n, 2);
	assert_non_null(strstr(w.text, "automatic checkpoint of partition "
				       "'tenant-0042' failed"));
	sc_partition_info pi;
	assert_int_equal(sc_store_partition_info(s, parts[3], &pi, NULL), 0);
	assert_int_equal(pi.events, 120);
	assert_int_equal(pi.tail, 120);
	sc_reader_close(r);
	/* With a slot free the next due append gets its checkpoint. */
	append_random(s, m, &rng, 40, 3);
	assert_int_equal(sc_store_checkpoints_wait(s, NULL), 0);
	assert_int_equal(sc_store_partition_info(s, parts[3], &pi, NULL), 0);
	assert_int_equal(pi.tail, 0);
	check_store(s, m);
	sc_store_close(s);
	tk_refstate_free(m);
}

/* ==== a store of an older format ====================================== */

typedef struct counts {
	uint64_t n[3], last[3];
	tk_refstate *m;
} counts;

static int count_event(void *ctx, const sc_event *ev)
{
	counts *c = ctx;
	tk_refstate_apply(c->m, ev);
	size_t k = 2;
	if (!ev->partition.len)
		k = 0;
	else if (ev->partition.len == 2 && !memcmp(ev->partition.ptr, "eu", 2))
		k = 1;
	c->n[k]++;
	c->last[k] = ev->position;
	return 0;
}

/* The first writing open of a store of an older format builds the
 * catalog from its log (a format 5 store keeps its snapshot and restores
 * it, then replays the 100 events after it); checkpoints then work on it
 * and the next open loads by them. */
static void upgrade_one(const char *name, uint64_t snapshots,
			uint64_t first_replay)
{
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	const char *data = getenv("SC_TEST_DATA");
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
		 "mkdir -m 700 '%s' && cp '%s/%s/data.mdb' "
		 "'%s/' && chmod 600 '%s/data.mdb'",
		 dir, data ? data : "tests/data", name, dir, dir);
	assert_int_equal(system(cmd), 0);
	sc_store *s = open_store(dir, SC_CHECKPOINT_NEVER, 0, NULL);
	sc_snapshot_info si[4];
	assert_int_equal(sc_store_snapshots(s, si, 4, NULL), (int)snapshots);
	sc_store_stats st;
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_int_equal(st.open_events_replayed, first_replay);
	counts c = {.m = tk_refstate_new()};
	assert_int_equal(sc_store_events(s, 1, 0, count_event, &c, NULL), 0);
	static const char *const pn[] = {"", "eu", "us"};
	for (size_t i = 0; i < 3; i++) {
		sc_partition_info pi;
		assert_int_equal(
		    sc_store_partition_info(s, S(pn[i]), &pi, NULL), 0);
		assert_int_equal(pi.events, c.n[i]);
		assert_int_equal(pi.tail, c.n[i]);
		assert_int_equal(pi.last_position, c.last[i]);
		assert_int_equal(pi.checkpoint_position, 0);
		assert_int_equal(sc_store_checkpoint(s, S(pn[i]), NULL, NULL),
				 0);
	}
	sc_store_close(s);
	s = open_store(dir, SC_CHECKPOINT_NEVER, 0, NULL);
	assert_int_equal(sc_store_stats_get(s, &st, NULL), 0);
	assert_int_equal(st.open_events_replayed, 0);
	tk_store_check_model(s, c.m, name);
	/* The store says format 6 now. */
	MDB_txn *txn;
	MDB_dbi meta;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	MDB_val k = {sizeof "format_version" - 1, "format_version"}, v;
	assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
	assert_int_equal(v.mv_size, 4);
	assert_int_equal(((uint8_t *)v.mv_data)[3], 6);
	mdb_txn_abort(txn);
	sc_store_close(s);
	tk_refstate_free(c.m);
}

static void test_upgrade(void **state)
{
	(void)state;
	/* Format 3 with partitions: its merged snapshot is dropped, open
	 * replays all 160 events. */
	upgrade_one("format3_partitions", 0, 160);
	upgrade_one("format5", 1, 100);
}

/* ==== crashes inside checkpoint writes and loads ======================= */

/* The child's stream: batch b, event i, is a pure function of (seed, b). */
static void child_batch(uint64_t sd, unsigned b, rev *rs, sc_event *evs,
			size_t *n)
{
	uint64_t rng = sd ^ ((uint64_t)b * 0x9e3779b97f4a7c15ull);
	*n = 5 + tk_rand_below(&rng, 20);
	for (size_t i = 0; i < *n; i++) {
		rev_make(&rng, parts[tk_rand_below(&rng, NPARTS)], &rs[i]);
		evs[i] = rs[i].ev;
	}
}

#define CHILD_BATCHES 40

/* Append the batches, checkpoint a partition after each, reopen halfway
 * (a load), and report each acknowledged last position on fd. */
static int crash_child(const char *dir, uint64_t sd, int fd)
{
	names_init();
	sc_store_options o = {.create = true,
			      .checkpoint_tail = SC_CHECKPOINT_NEVER,
			      .checkpoint_entities_per_chunk = 2};
	sc_store *s;
	if (sc_store_open(dir, &o, &s, NULL))
		return 2;
	rev rs[32];
	sc_event evs[32];
	for (unsigned b = 0; b < CHILD_BATCHES; b++) {
		size_t n;
		child_batch(sd, b, rs, evs, &n);
		uint64_t first;
		if (sc_store_append(s, evs, n, &first, NULL))
			return 3;
		uint64_t acked = first + n - 1;
		if (write(fd, &acked, sizeof acked) != sizeof acked)
			return 4;
		if (sc_store_checkpoint(s, parts[b % NPARTS], NULL, NULL))
			return 5;
		if (b == CHILD_BATCHES / 2) {
			sc_store_close(s);
			if (sc_store_open(dir, &o, &s, NULL))
				return 6;
		}
	}
	sc_store_close(s);
	return 0;
}

typedef struct crash_run {
	const char *dir;
	uint64_t seed;
	char killpoint[64];
} crash_run;

/* This program again with --crash-child, its acks written to fd. */
static int exec_crash_child(void *arg, int fd)
{
	const crash_run *c = arg;
	tk_killpoint_arm(c->killpoint);
	char sds[32], fds[16];
	snprintf(sds, sizeof sds, "%llu", (unsigned long long)c->seed);
	snprintf(fds, sizeof fds, "%d", fd);
	execl(self_exe, self_exe, "--crash-child", c->dir, sds, fds,
	      (char *)NULL);
	return 127;
}

static void test_crash(void **state)
{
	(void)state;
	static const char *const points[] = {
	    "checkpoint_before_write", "checkpoint_mid_write",
	    "checkpoint_before_commit", "checkpoint_load"};
	unsigned passes = short_run ? 3 : 8;
	for (size_t pi = 0; pi < sizeof points / sizeof points[0]; pi++) {
		unsigned kills = 0;
		for (unsigned pass = 1; pass <= passes; pass++) {
			char dir[256];
			tk_tmproot_dir(dir, sizeof dir);
			uint64_t sd = seed ^ (pi * 100 + pass);
			crash_run c = {.dir = dir, .seed = sd};
			snprintf(c.killpoint, sizeof c.killpoint, "%s:%u",
				 points[pi], pass * 3 - 2);
			int up;
			pid_t pid = tk_child_start(exec_crash_child, &c, &up);
			uint64_t acked = 0, a;
			while (read(up, &a, sizeof a) == sizeof a)
				acked = a;
			close(up);
			int st = tk_child_wait(pid);
			bool killed = tk_killed(st, SIGKILL);
			assert_true(killed || tk_exited(st, 0));
			kills += killed;
			/* Reopen: nothing acknowledged lost, every
			 * partition the fold of its events in the log. */
			sc_store *s =
			    open_store(dir, SC_CHECKPOINT_NEVER, 2, NULL);
			uint64_t last = sc_store_last_position(s);
			assert_true(last >= acked);
			tk_refstate *m = tk_refstate_new();
			uint64_t pos = 1;
			rev rs[32];
			sc_event evs[32];
			for (unsigned b = 0; pos <= last; b++) {
				size_t n;
				child_batch(sd, b, rs, evs, &n);
				for (size_t i = 0; i < n; i++) {
					evs[i].position = pos++;
					tk_refstate_apply(m, &evs[i]);
				}
			}
			assert_int_equal(pos - 1, last);
			check_store(s, m);
			sc_store_close(s);
			tk_refstate_free(m);
		}
		/* The point is reached: the first pass dies there. */
		assert_true(kills >= 1);
	}
}

int main(int argc, char **argv)
{
	self_exe = "/proc/self/exe";
	if (argc == 5 && strcmp(argv[1], "--crash-child") == 0)
		return crash_child(argv[2], strtoull(argv[3], NULL, 10),
				   atoi(argv[4]));
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_differential),
	    cmocka_unit_test(test_damaged),
	    cmocka_unit_test(test_verify_catalog),
	    cmocka_unit_test(test_choose),
	    cmocka_unit_test(test_automatic),
	    cmocka_unit_test(test_automatic_failure),
	    cmocka_unit_test(test_upgrade),
	    cmocka_unit_test(test_crash),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
