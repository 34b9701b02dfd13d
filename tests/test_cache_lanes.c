/*
 * Parallel apply (sc_cache_apply_batch with several lanes) against serial
 * apply (sc_cache_apply, one event after another, in a cache with one
 * lane): the same random stream goes into both, in batches of random size
 * (many above the size where lanes start), with the same promotes,
 * discards and reader pins. After every batch the two caches must agree on
 * every state (id, attributes, updated_at, updated_by, position), on the
 * order of iteration (the map's shape), and on every stat (version,
 * position, versions alive and awaiting, bytes and nodes awaiting, memory).
 *
 * Streams over named partitions and the default one have the same ids
 * in several partitions, name partitions for the first time inside
 * batches, and are compared partition by partition (names, counts, trees).
 * Streams hit few entities often (one entity's events spread through a
 * batch) and many entities once; the hash is the seeded XXH3 or one of the
 * test kit's colliding hashes (8 values; 4 bits spread over the trie's
 * levels; a constant), so collision nodes and one-lane batches are covered.
 * Allocation failures injected while the lanes run: the batch fails with
 * ENOMEM, discard brings the cache back to the state and memory it had,
 * and the batch then applies as serially. A state grown too big in one
 * lane while another lane's grows too big later in the log: the batch
 * reports the first, with the serial apply's message. Between
 * sc_cache_apply_batch_begin and its end nothing else changes the pending
 * version, and a discard ends the batch first.
 *
 * Through the store: appends (applied in lanes, projectors called once per
 * event in log order) and the replay at open (in lanes, or not) give the
 * state of a serial cache fed the same events. Without projectors the
 * lanes apply a batch while the store writes it: a store with two lanes
 * equals one with one lane, and a batch the cache refuses late in a lane
 * fails as serially and leaves everything as it was.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cache/cache_internal.h"
#include "cache/cache_lib.h"
#include "hamt/hamt_internal.h"
#include "statecache/cache.h"
#include "statecache/store.h"
#include "statecache/testing.h"
#include "tests/support/cache_testkit.h"
#include "tests/support/hamt_testkit.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static uint64_t rnd_state;
static bool short_run;

static uint64_t rnd(void)
{
	return tk_rand(&rnd_state);
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

static int setup_seed(void **state)
{
	(void)state;
	seed = tk_seed("test_cache_lanes");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	return 0;
}

/* ==== events ============================================================== */

/* A batch of events with storage for their strings. */
typedef struct batch {
	sc_event *ev;
	sc_attr *attrs;
	char (*ids)[24];
	size_t n;
} batch;

static const char *const names[] = {"a",     "b",    "count", "level",
				    "owner", "zone", "z9"};
static const char *const strs[] = {"x", "eu-west-1", "someone@example", "",
				   "\xc3\xa9t\xc3\xa9"};

static void batch_alloc(batch *b, size_t cap)
{
	b->ev = calloc(cap, sizeof *b->ev);
	b->attrs = calloc(cap * 4, sizeof *b->attrs);
	b->ids = calloc(cap, sizeof *b->ids);
	assert_non_null(b->ev);
	assert_non_null(b->attrs);
	assert_non_null(b->ids);
}

static void batch_free(batch *b)
{
	free(b->ev);
	free(b->attrs);
	free(b->ids);
}

/* Partition names: part_name(0) is the default partition (""), the
 * others "p1", "p2", ... A stream's batches name more of them as it goes,
 * so partitions are named for the first time inside batches. */
#define NPARTS_MAX 48
static char part_names[NPARTS_MAX][16];

static sc_str part_name(unsigned i)
{
	if (i && !part_names[i][0])
		snprintf(part_names[i], sizeof part_names[i], "p%u", i);
	return (sc_str){part_names[i], strlen(part_names[i])};
}

/* n random events from position pos + 1 over `nent` ids, a few of them
 * hot (every other event goes to one of 8 hot entities). `nparts`: the
 * events are in partitions 0..nparts-1 (0 alone: the default one); the
 * same ids are in every partition, and the hot entities are ids 0..7 of
 * partitions 0..7, so one id is hot in several partitions. */
static void batch_fill(batch *b, size_t n, unsigned nent, uint64_t pos,
		       unsigned nparts)
{
	b->n = n;
	if (!nparts)
		nparts = 1;
	for (size_t i = 0; i < n; i++) {
		bool hot = rnd_below(2);
		unsigned e =
		    hot ? (unsigned)rnd_below(8) : (unsigned)rnd_below(nent);
		snprintf(b->ids[i], sizeof b->ids[i], "ent-%u", e);
		sc_event *ev = &b->ev[i];
		memset(ev, 0, sizeof *ev);
		ev->entity = (sc_str){b->ids[i], strlen(b->ids[i])};
		unsigned pi = hot ? (e + (unsigned)rnd_below(2)) % nparts
			      : rnd_below(3) == 0 ? 0
						  : (unsigned)rnd_below(nparts);
		ev->partition = part_name(pi);
		ev->position = pos + 1 + i;
		ev->time = (int64_t)(pos + 1 + i) * 1000; /* never 0 */
		ev->actor = (sc_str){"tester", rnd_below(3) ? 6 : 0};
		unsigned t = (unsigned)rnd_below(16);
		ev->type = t < 10   ? SC_EVENT_SET
			   : t < 12 ? SC_EVENT_UNSET
			   : t < 14 ? SC_EVENT_REPLACE
				    : SC_EVENT_DELETE;
		if (ev->type == SC_EVENT_DELETE)
			continue;
		sc_attr *a = &b->attrs[i * 4];
		size_t na = 1 + rnd_below(4);
		for (size_t k = 0; k < na; k++) {
			const char *nm = names[rnd_below(7)];
			a[k].name = (sc_str){nm, strlen(nm)};
			unsigned vt = (unsigned)rnd_below(5);
			if (vt == 0) {
				a[k].value.type = SC_VALUE_NULL;
			} else if (vt == 1) {
				const char *s = strs[rnd_below(5)];
				a[k].value.type = SC_VALUE_STRING;
				a[k].value.u.s = (sc_str){s, strlen(s)};
			} else if (vt == 2) {
				a[k].value.type = SC_VALUE_DOUBLE;
				a[k].value.u.d = (double)rnd_below(1000) / 7;
			} else {
				a[k].value.type = SC_VALUE_INT;
				a[k].value.u.i = (int64_t)rnd_below(1u << 20);
			}
		}
		ev->attrs = a;
		ev->nattrs = na;
	}
}

/* ==== comparison ========================================================== */

/* The same partitions, in the same order, with the same counts. */
static void check_partitions(const sc_view *va, const sc_view *vb,
			     const char *when)
{
	assert_int_equal(sc_view_len_all(va), sc_view_len_all(vb));
	size_t np = sc_view_partition_count(va);
	if (np != sc_view_partition_count(vb))
		fail_msg("%s (seed %llu): %zu partitions, the lanes' cache has "
			 "%zu",
			 when, (unsigned long long)seed, np,
			 sc_view_partition_count(vb));
	for (size_t i = 0; i < np; i++) {
		sc_str x = sc_view_partition(va, i),
		       y = sc_view_partition(vb, i);
		if (x.len != y.len || memcmp(x.ptr, y.ptr, x.len))
			fail_msg("%s (seed %llu): partition %zu is %.*s, the "
				 "lanes' cache has %.*s",
				 when, (unsigned long long)seed, i, (int)x.len,
				 x.ptr, (int)y.len, y.ptr);
	}
	for (unsigned p = 0; p < NPARTS_MAX; p++)
		if (sc_view_len_in(va, part_name(p)) !=
		    sc_view_len_in(vb, part_name(p)))
			fail_msg("%s (seed %llu): partition p%u holds %zu "
				 "entities, %zu in the lanes' cache",
				 when, (unsigned long long)seed, p,
				 sc_view_len_in(va, part_name(p)),
				 sc_view_len_in(vb, part_name(p)));
}

static void check_same(sc_cache *ser, sc_cache *par, const char *when)
{
	sc_cache_stats a, b;
	sc_cache_stats_get(ser, &a);
	sc_cache_stats_get(par, &b);
	if (a.entities != b.entities || a.version != b.version ||
	    a.position != b.position || a.versions_alive != b.versions_alive ||
	    a.versions_awaiting != b.versions_awaiting ||
	    a.bytes_awaiting != b.bytes_awaiting ||
	    a.nodes_awaiting != b.nodes_awaiting ||
	    a.memory_bytes != b.memory_bytes)
		fail_msg("%s (seed %llu): stats differ: entities %zu/%zu "
			 "version %llu/%llu position %llu/%llu alive %zu/%zu "
			 "awaiting %zu/%zu bytes %zu/%zu nodes %zu/%zu memory "
			 "%zu/%zu",
			 when, (unsigned long long)seed, a.entities, b.entities,
			 (unsigned long long)a.version,
			 (unsigned long long)b.version,
			 (unsigned long long)a.position,
			 (unsigned long long)b.position, a.versions_alive,
			 b.versions_alive, a.versions_awaiting,
			 b.versions_awaiting, a.bytes_awaiting,
			 b.bytes_awaiting, a.nodes_awaiting, b.nodes_awaiting,
			 a.memory_bytes, b.memory_bytes);
	sc_reader *ra, *rb;
	assert_int_equal(sc_reader_open(ser, &ra, NULL), 0);
	assert_int_equal(sc_reader_open(par, &rb, NULL), 0);
	const sc_view *va = sc_reader_begin(ra), *vb = sc_reader_begin(rb);
	assert_int_equal(sc_view_version(va), sc_view_version(vb));
	assert_int_equal(sc_view_position(va), sc_view_position(vb));
	check_partitions(va, vb, when);
	const struct sc_version *pv = (const struct sc_version *)(void *)vb;
	char why[256];
	if (sc_hamt_check(par->map, pv->root, why, sizeof why))
		fail_msg("%s (seed %llu): the lanes' map is not valid: %s",
			 when, (unsigned long long)seed, why);
	for (size_t i = 0; pv->parts && i < pv->parts->n; i++)
		if (sc_hamt_check(par->map, pv->parts->items[i].root, why,
				  sizeof why))
			fail_msg("%s (seed %llu): the lanes' tree of "
				 "partition %s is not valid: %s",
				 when, (unsigned long long)seed,
				 pv->parts->items[i].p->name, why);
	/* Same seed and hash: the same contents iterate in the same order
	 * only if the trees have the same shape. */
	sc_view_iter ia, ib;
	sc_view_iter_init_all(va, &ia);
	sc_view_iter_init_all(vb, &ib);
	const sc_entity *ea, *eb;
	size_t n = 0;
	while ((ea = sc_view_iter_next(&ia))) {
		eb = sc_view_iter_next(&ib);
		if (!eb || !sc_entity_equal(ea, eb))
			fail_msg("%s (seed %llu): entity %zu (%s) differs",
				 when, (unsigned long long)seed, n,
				 sc_entity_id(ea).ptr);
		n++;
	}
	assert_null(sc_view_iter_next(&ib));
	sc_reader_close(ra);
	sc_reader_close(rb);
}

/* ==== the property ======================================================== */

/* Batches over named partitions with partitions split among the lanes
 * and partitions taken whole by one lane, and with every partition
 * split. */
static unsigned mixed_batches, split_batches;

static void count_kinds(const batch *b, unsigned np, unsigned nlanes)
{
	if (np < 2)
		return;
	size_t count[NPARTS_MAX] = {0};
	for (size_t i = 0; i < b->n; i++)
		for (unsigned p = 0; p < np; p++)
			if (b->ev[i].partition.len == part_name(p).len &&
			    !memcmp(b->ev[i].partition.ptr, part_name(p).ptr,
				    part_name(p).len)) {
				count[p]++;
				break;
			}
	unsigned split = 0, taken = 0;
	for (unsigned p = 0; p < np; p++) {
		if (count[p] >= (size_t)SC_LANES_SPLIT_MIN * nlanes)
			split++;
		else if (count[p])
			taken++;
	}
	if (split && taken)
		mixed_batches++;
	else if (split)
		split_batches++;
}

/* SC_HAMT_PROTECT for the caches make_cache makes. */
static unsigned hamt_flags;

static sc_cache *make_cache(unsigned lanes, sc_hamt_hash_fn hash)
{
	sc_cache_options o = {.seed = 0x5eed,
			      .hash = hash,
			      .lanes = lanes,
			      .hamt_flags = hamt_flags};
	sc_cache *c;
	sc_error err;
	if (sc_cache_create(&o, &c, &err))
		fail_msg("create: %s", err.message);
	return c;
}

/* A serial cache and one of `lanes` lanes, each with a reader that can
 * hold pins across promotes (in both alike, so that garbage waits and its
 * stats are compared too), and a batch of up to 3,000 events. */
typedef struct pair {
	sc_cache *ser, *par;
	sc_reader *pa, *pb;
	batch b;
} pair;

static void pair_open(pair *p, unsigned lanes, sc_hamt_hash_fn hash)
{
	p->ser = make_cache(1, hash);
	p->par = make_cache(lanes, hash);
	assert_int_equal(p->par->nthreads, lanes);
	assert_int_equal(sc_reader_open(p->ser, &p->pa, NULL), 0);
	assert_int_equal(sc_reader_open(p->par, &p->pb, NULL), 0);
	batch_alloc(&p->b, 3000);
}

static void pair_close(pair *p)
{
	sc_reader_close(p->pa);
	sc_reader_close(p->pb);
	batch_free(&p->b);
	sc_cache_destroy(p->ser);
	sc_cache_destroy(p->par);
}

/* `nparts` > 0: three batches in four have events of up to nparts
 * partitions (the default one and named ones; batch k names at most 3k + 2,
 * so later batches name partitions for the first time), the others are of
 * the default partition alone, into the same pending versions. */
static void run_stream_in(unsigned lanes, sc_hamt_hash_fn hash, unsigned nent,
			  unsigned nbatches, unsigned nparts)
{
	rnd_state = seed ^ (lanes * 0x9e37u) ^ nent;
	pair p;
	pair_open(&p, lanes, hash);
	sc_cache *ser = p.ser, *par = p.par;
	sc_reader *pa = p.pa, *pb = p.pb;
	batch *b = &p.b;
	uint64_t pos = 0;
	char when[64];
	for (unsigned k = 0; k < nbatches; k++) {
		size_t n =
		    rnd_below(4) ? 200 + rnd_below(2800) : 1 + rnd_below(300);
		unsigned np = nparts && k % 4 != 3 ? nparts : 0;
		if (np > 3 * k + 2)
			np = 3 * k + 2;
		batch_fill(b, n, nent, pos, np);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(sc_cache_apply(ser, &b->ev[i], NULL),
					 0);
		size_t failed = 0;
		sc_error err;
		if (sc_cache_apply_batch(par, b->ev, n, &failed, &err))
			fail_msg("batch %u: %s", k, err.message);
		assert_int_equal(failed, n);
		if (n >= 256) {
			/* The lanes took the batch between them. */
			size_t routed = 0;
			for (unsigned l = 0; l < par->nlanes; l++)
				routed += par->lanes[l].nidx;
			assert_int_equal(routed, n);
			count_kinds(b, np, par->nlanes);
		}
		unsigned what = (unsigned)rnd_below(8);
		if (what == 0) {
			sc_cache_discard(ser);
			sc_cache_discard(par);
		} else {
			/* Sometimes a second batch joins the pending
			 * version before the promote. */
			if (what != 1) {
				assert_int_equal(sc_cache_promote(ser), 0);
				assert_int_equal(sc_cache_promote(par), 0);
			}
			pos += n;
		}
		if (rnd_below(3) == 0) {
			sc_reader_begin(pa);
			sc_reader_begin(pb);
		} else if (rnd_below(2) == 0) {
			sc_reader_end(pa);
			sc_reader_end(pb);
		}
		if (what == 1)
			continue;
		assert_int_equal(sc_cache_promote(ser), 0);
		assert_int_equal(sc_cache_promote(par), 0);
		snprintf(when, sizeof when, "batch %u of %zu events", k, n);
		check_same(ser, par, when);
	}
	assert_int_equal(sc_cache_promote(ser), 0);
	assert_int_equal(sc_cache_promote(par), 0);
	sc_reader_end(pa);
	sc_reader_end(pb);
	sc_cache_reclaim(ser);
	sc_cache_reclaim(par);
	check_same(ser, par, "the end");
	/* No pin, nothing pending: memory is the live set, in both (the
	 * test kit's count walks the default partition's tree alone; with
	 * named partitions the stats are compared with the serial cache's
	 * above). */
	sc_cache_stats st;
	sc_cache_stats_get(par, &st);
	if (!nparts)
		assert_int_equal(st.memory_bytes, tk_live_bytes(par));
	pair_close(&p);
}

static void run_stream(unsigned lanes, sc_hamt_hash_fn hash, unsigned nent,
		       unsigned nbatches)
{
	run_stream_in(lanes, hash, nent, nbatches, 0);
}

static unsigned rounds(unsigned full)
{
	return short_run ? full / 4 + 1 : full;
}

static void test_lanes_equal_serial(void **state)
{
	(void)state;
	run_stream(2, NULL, 100, rounds(60));
	run_stream(2, NULL, 20000, rounds(60));
	run_stream(3, NULL, 3000, rounds(40));
	run_stream(8, NULL, 50000, rounds(30));
	/* Published nodes read-only: a lane writing one would trap. */
	hamt_flags = SC_HAMT_PROTECT;
	run_stream(2, NULL, 2000, rounds(8));
	hamt_flags = 0;
}

/* Batches over named partitions and the default one, between batches of
 * the default partition alone: the same states, trees and counts in every
 * partition as a serial apply. The colliding hashes collide the
 * partitions' names too. */
static void test_lanes_partitions(void **state)
{
	(void)state;
	mixed_batches = split_batches = 0;
	run_stream_in(2, NULL, 100, rounds(60), 3);
	run_stream_in(2, NULL, 2000, rounds(60), NPARTS_MAX);
	run_stream_in(4, NULL, 5000, rounds(30), 12);
	run_stream_in(8, NULL, 300, rounds(20), NPARTS_MAX);
	run_stream_in(2, tk_hamt_hash_spread4, 500, rounds(20), 6);
	run_stream_in(3, tk_hamt_hash_3bit, 400, rounds(20), 16);
	run_stream_in(2, tk_hamt_hash_const, 40, rounds(15), 5);
	hamt_flags = SC_HAMT_PROTECT;
	run_stream_in(2, NULL, 1000, rounds(8), 10);
	hamt_flags = 0;
	/* Both kinds of batch were met. */
	assert_true(mixed_batches > 0);
	assert_true(split_batches > 0);
}

static void test_lanes_collisions(void **state)
{
	(void)state;
	run_stream(2, tk_hamt_hash_3bit, 500, rounds(30));
	run_stream(2, tk_hamt_hash_spread4, 500, rounds(30));
	run_stream(4, tk_hamt_hash_spread4, 2000, rounds(20));
	run_stream(2, tk_hamt_hash_const, 60, rounds(20));
}

/* Garbage of several versions, held by a pin and freed by one reclaim,
 * three times: the writer and the lanes' workers free the lanes' share of
 * it together, and every counter is the serial cache's after each promote
 * and each reclaim; with the default partition alone the memory is then
 * the live set. `nparts`: batches over that many partitions (lane garbage
 * of named partitions' trees); `mix`: every other batch goes half through
 * sc_cache_apply into the same pending version (the writer's own garbage
 * beside the lanes'). */
static void free_garbage_run(unsigned lanes, unsigned nparts, bool mix,
			     unsigned nent)
{
	rnd_state = seed ^ 0xf4eeu ^ nparts ^ lanes;
	pair p;
	pair_open(&p, lanes, NULL);
	sc_cache *ser = p.ser, *par = p.par;
	batch *b = &p.b;
	uint64_t pos = 0;
	char when[64];
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned k = 0; k < 8; k++) {
			if (k == 2) {
				sc_reader_begin(p.pa);
				sc_reader_begin(p.pb);
			}
			batch_fill(b, 3000, nent, pos, nparts);
			for (size_t i = 0; i < b->n; i++)
				assert_int_equal(
				    sc_cache_apply(ser, &b->ev[i], NULL), 0);
			size_t h = mix && (k & 1) ? b->n / 2 : 0;
			for (size_t i = 0; i < h; i++)
				assert_int_equal(
				    sc_cache_apply(par, &b->ev[i], NULL), 0);
			sc_error err;
			if (sc_cache_apply_batch(par, b->ev + h, b->n - h, NULL,
						 &err))
				fail_msg("batch %u: %s", k, err.message);
			assert_int_equal(sc_cache_promote(ser), 0);
			assert_int_equal(sc_cache_promote(par), 0);
			pos += b->n;
			snprintf(when, sizeof when, "round %u, promote %u",
				 round, k);
			check_same(ser, par, when);
		}
		/* Versions wait for the pin; one reclaim frees them all,
		 * the lanes' share in parallel. */
		uint64_t frees = par->lanes_frees;
		sc_reader_end(p.pa);
		sc_reader_end(p.pb);
		size_t freed = sc_cache_reclaim(ser);
		assert_true(freed >= 5);
		assert_int_equal(sc_cache_reclaim(par), freed);
		/* From the second round on the trees are full and the
		 * garbage is big (the first round fills them). */
		if (round && par->lanes_frees != frees + 1)
			fail_msg(
			    "lanes %u, %u partitions, round %u: the lanes "
			    "freed the garbage %llu times, not once",
			    lanes, nparts, round,
			    (unsigned long long)(par->lanes_frees - frees));
		snprintf(when, sizeof when, "round %u, the reclaim", round);
		check_same(ser, par, when);
		sc_cache_stats st;
		sc_cache_stats_get(par, &st);
		assert_int_equal(st.bytes_awaiting, 0);
		if (!nparts)
			assert_int_equal(st.memory_bytes, tk_live_bytes(par));
	}
	pair_close(&p);
}

static void test_lanes_free_garbage(void **state)
{
	(void)state;
	free_garbage_run(2, 0, false, 20000);
	free_garbage_run(2, 0, true, 20000);
	free_garbage_run(2, 6, true, 20000);
	free_garbage_run(4, NPARTS_MAX, true, 20000);
	free_garbage_run(8, 3, false, 5000);
	/* Published nodes read-only: a free into the wrong map would trap. */
	hamt_flags = SC_HAMT_PROTECT;
	free_garbage_run(2, 4, true, 20000);
	hamt_flags = 0;
}

/* While a batch's lanes run, reclaim frees nothing (the lane maps are
 * theirs) and the versions wait for the next one; a batch begin applied
 * serially (one lane, or too small) does not hold reclaim back. */
static void reclaim_in_batch(unsigned lanes, size_t n, bool waits)
{
	rnd_state = seed ^ 0x77u ^ n;
	sc_cache *c = make_cache(lanes, NULL);
	sc_reader *r;
	assert_int_equal(sc_reader_open(c, &r, NULL), 0);
	batch b;
	batch_alloc(&b, 3000);
	uint64_t pos = 0;
	for (unsigned k = 0; k < 4; k++) {
		if (k == 1)
			sc_reader_begin(r);
		batch_fill(&b, 3000, 20000, pos, 0);
		assert_int_equal(sc_cache_apply_batch(c, b.ev, b.n, NULL, NULL),
				 0);
		assert_int_equal(sc_cache_promote(c), 0);
		pos += b.n;
	}
	sc_reader_end(r);
	batch_fill(&b, n, 20000, pos, 0);
	assert_int_equal(sc_cache_apply_batch_begin(c, b.ev, n, NULL), 0);
	assert_int_equal(sc_cache_reclaim(c), waits ? 0 : 3);
	size_t failed;
	assert_int_equal(sc_cache_apply_batch_end(c, &failed, NULL), 0);
	assert_int_equal(failed, n);
	assert_int_equal(sc_cache_reclaim(c), waits ? 3 : 0);
	assert_int_equal(sc_cache_promote(c), 0);
	sc_cache_stats st;
	sc_cache_stats_get(c, &st);
	assert_int_equal(st.versions_awaiting, 0);
	assert_int_equal(st.bytes_awaiting, 0);
	assert_int_equal(st.memory_bytes, tk_live_bytes(c));
	sc_reader_close(r);
	batch_free(&b);
	sc_cache_destroy(c);
}

static void test_lanes_reclaim_in_batch(void **state)
{
	(void)state;
	reclaim_in_batch(2, 3000, true);
	reclaim_in_batch(2, 100, false);
	reclaim_in_batch(2, 0, false);
	reclaim_in_batch(1, 3000, false);
}

/* ==== allocation failure in a lane ======================================== */

/* `nparts` > 0: the batches are over that many partitions at first, and
 * name new ones as they go (a failure may land where a partition's tree
 * is opened). */
static void run_alloc_failure(unsigned nparts)
{
	rnd_state = seed ^ 0xfa11 ^ nparts;
	sc_cache *ser = make_cache(1, NULL), *par = make_cache(2, NULL);
	batch b;
	batch_alloc(&b, 2000);
	uint64_t pos = 0;
	/* A map to change: states and nodes from earlier versions. */
	for (int k = 0; k < 3; k++) {
		batch_fill(&b, 2000, 5000, pos, nparts);
		for (size_t i = 0; i < b.n; i++)
			assert_int_equal(sc_cache_apply(ser, &b.ev[i], NULL),
					 0);
		assert_int_equal(
		    sc_cache_apply_batch(par, b.ev, b.n, NULL, NULL), 0);
		assert_int_equal(sc_cache_promote(ser), 0);
		assert_int_equal(sc_cache_promote(par), 0);
		pos += b.n;
	}
	check_same(ser, par, "before the failures");
	unsigned failures = 0, tries = short_run ? 40 : 200;
	for (unsigned t = 0; t < tries; t++) {
		unsigned np = nparts ? nparts + t / 4 : 0;
		batch_fill(&b, 1000, 5000, pos,
			   np < NPARTS_MAX ? np : NPARTS_MAX);
		/* Some failures land in the routing or the split, most in a
		 * lane (one of the two threads), some not at all. */
		long at = (long)rnd_below(t < tries / 2 ? 200 : 6000);
		size_t failed = 0;
		sc_error err;
		sc_testing_fail_alloc_after(at);
		int rc = sc_cache_apply_batch(par, b.ev, b.n, &failed, &err);
		sc_testing_fail_alloc_after(-1);
		if (rc) {
			failures++;
			assert_int_equal(rc, ENOMEM);
			assert_true(failed < b.n);
			assert_int_equal(sc_cache_promote(par), SC_EPOISONED);
			sc_cache_discard(par);
			/* Nothing of the batch is left, nothing leaked. */
			check_same(ser, par, "after a failed batch");
			assert_int_equal(
			    sc_cache_apply_batch(par, b.ev, b.n, NULL, NULL),
			    0);
		}
		for (size_t i = 0; i < b.n; i++)
			assert_int_equal(sc_cache_apply(ser, &b.ev[i], NULL),
					 0);
		assert_int_equal(sc_cache_promote(ser), 0);
		assert_int_equal(sc_cache_promote(par), 0);
		pos += b.n;
		check_same(ser, par, "after a batch");
	}
	assert_true(failures > 0);
	batch_free(&b);
	sc_cache_destroy(ser);
	sc_cache_destroy(par);
}

static void test_lanes_alloc_failure(void **state)
{
	(void)state;
	run_alloc_failure(0);
	run_alloc_failure(4);
}

/* ==== a state too big ===================================================== */

/* Put, at event `at` and the three before it 100 apart, events that set a
 * 16 MiB value each in a new attribute of `id` in `part`: the fourth makes
 * the state too big for a snapshot. */
static void put_big(batch *b, size_t at, sc_str part, const char *id,
		    const char *bytes)
{
	static const char *const big_names[] = {"b0", "b1", "b2", "b3"};
	for (size_t k = 0; k < 4; k++) {
		size_t i = at - 300 + 100 * k;
		sc_event *ev = &b->ev[i];
		snprintf(b->ids[i], sizeof b->ids[i], "%s", id);
		ev->entity = (sc_str){b->ids[i], strlen(b->ids[i])};
		ev->partition = part;
		ev->type = SC_EVENT_SET;
		sc_attr *a = &b->attrs[i * 4];
		a->name = (sc_str){big_names[k], 2};
		a->value.type = SC_VALUE_BYTES;
		a->value.u.s = (sc_str){bytes, SC_EVENT_VALUE_MAX};
		ev->attrs = a;
		ev->nattrs = 1;
	}
}

/* Apply the batch and expect it to fail at event `at` with SC_ETOOBIG;
 * then discard. The message goes to *err. */
static void expect_too_big(sc_cache *c, batch *b, size_t at, sc_error *err)
{
	size_t failed = 0;
	assert_int_equal(sc_cache_apply_batch(c, b->ev, b->n, &failed, err),
			 SC_ETOOBIG);
	assert_int_equal(failed, at);
	assert_int_equal(sc_cache_promote(c), SC_EPOISONED);
	sc_cache_discard(c);
}

/* Two entities of a batch over named partitions grow too big, in
 * different lanes: the batch reports the first in log order, with the
 * message a serial apply gives, and leaves nothing. */
static void test_lanes_too_big(void **state)
{
	(void)state;
	rnd_state = seed ^ 0xb16;
	sc_cache *ser = make_cache(1, NULL), *par = make_cache(2, NULL);
	batch b;
	batch_alloc(&b, 1000);
	/* Something published in every partition first. */
	batch_fill(&b, 1000, 300, 0, 6);
	assert_int_equal(sc_cache_apply_batch(ser, b.ev, b.n, NULL, NULL), 0);
	assert_int_equal(sc_cache_apply_batch(par, b.ev, b.n, NULL, NULL), 0);
	assert_int_equal(sc_cache_promote(ser), 0);
	assert_int_equal(sc_cache_promote(par), 0);
	/* "big" in p1, and an id of another lane in p2. */
	unsigned lane =
	    sc_hamt_lane_of(sc_hamt_hash(par->map, "big", 3), par->nlanes);
	char other[16];
	for (unsigned k = 0;; k++) {
		snprintf(other, sizeof other, "big%u", k);
		if (sc_hamt_lane_of(
			sc_hamt_hash(par->map, other, strlen(other)),
			par->nlanes) != lane)
			break;
	}
	char *bytes = malloc(SC_EVENT_VALUE_MAX);
	assert_non_null(bytes);
	memset(bytes, 'x', SC_EVENT_VALUE_MAX);
	batch_fill(&b, 1000, 300, 1000, 6);
	put_big(&b, 600, part_name(1), "big", bytes);
	put_big(&b, 610, part_name(2), other, bytes);
	sc_error es, ep;
	expect_too_big(ser, &b, 600, &es);
	expect_too_big(par, &b, 600, &ep);
	assert_string_equal(es.message, ep.message);
	assert_non_null(strstr(ep.message, "'big'"));
	check_same(ser, par, "after a state too big");
	/* The other one first. */
	batch_fill(&b, 1000, 300, 1000, 6);
	put_big(&b, 600, part_name(2), other, bytes);
	put_big(&b, 610, part_name(1), "big", bytes);
	expect_too_big(ser, &b, 600, &es);
	expect_too_big(par, &b, 600, &ep);
	assert_string_equal(es.message, ep.message);
	assert_non_null(strstr(ep.message, other));
	check_same(ser, par, "after a state too big");
	free(bytes);
	batch_free(&b);
	sc_cache_destroy(ser);
	sc_cache_destroy(par);
}

/* An invalid event anywhere in a batch: SC_EINVAL naming it, nothing
 * applied. */
static void test_lanes_invalid_event(void **state)
{
	(void)state;
	rnd_state = seed ^ 0xbad;
	sc_cache *par = make_cache(2, NULL);
	batch b;
	batch_alloc(&b, 1000);
	for (unsigned nparts = 0; nparts <= 8; nparts += 8) {
		batch_fill(&b, 1000, 100, 0, nparts);
		b.ev[700].entity.len = 0;
		size_t failed = 0;
		sc_error err;
		assert_int_equal(
		    sc_cache_apply_batch(par, b.ev, b.n, &failed, &err),
		    SC_EINVAL);
		assert_int_equal(failed, 700);
		assert_non_null(strstr(err.message, "event 700"));
		assert_false(sc_cache_pending(par));
	}
	batch_free(&b);
	sc_cache_destroy(par);
}

/* ==== begin and end ======================================================= */

/* A batch between sc_cache_apply_batch_begin and its end: every other
 * change of the pending version is refused, the end reports the batch as
 * one call would, a second end is harmless, and a discard ends the batch
 * in flight before it drops the pending version. */
static void test_lanes_begin_end(void **state)
{
	(void)state;
	rnd_state = seed ^ 0xbe91;
	sc_cache *ser = make_cache(1, NULL), *par = make_cache(2, NULL);
	batch b;
	batch_alloc(&b, 1000);
	sc_error err;
	size_t failed = 0;
	uint64_t pos = 0;
	for (unsigned nparts = 0; nparts <= 6; nparts += 6) {
		batch_fill(&b, 1000, 300, pos, nparts);
		assert_int_equal(
		    sc_cache_apply_batch_begin(par, b.ev, b.n, &err), 0);
		assert_int_equal(sc_cache_apply(par, &b.ev[0], &err),
				 SC_ESTATE);
		/* A second begin leaves the batch in flight as it is. */
		assert_int_equal(
		    sc_cache_apply_batch_begin(par, b.ev, b.n, &err),
		    SC_ESTATE);
		assert_int_equal(
		    sc_cache_apply_batch(par, b.ev, b.n, &failed, &err),
		    SC_ESTATE);
		assert_int_equal(sc_cache_prepare(par, &err), SC_ESTATE);
		assert_int_equal(sc_cache_promote(par), SC_ESTATE);
		assert_int_equal(sc_cache_apply_batch_end(par, &failed, &err),
				 0);
		assert_int_equal(failed, b.n);
		failed = 1;
		assert_int_equal(sc_cache_apply_batch_end(par, &failed, &err),
				 0);
		assert_int_equal(failed, 0);
		assert_int_equal(sc_cache_promote(par), 0);
		assert_int_equal(
		    sc_cache_apply_batch(ser, b.ev, b.n, NULL, NULL), 0);
		assert_int_equal(sc_cache_promote(ser), 0);
		pos += b.n;
		check_same(ser, par, "after a batch begun and ended");

		/* Discarded in flight: as if never begun. */
		batch_fill(&b, 1000, 300, pos, nparts);
		assert_int_equal(
		    sc_cache_apply_batch_begin(par, b.ev, b.n, &err), 0);
		sc_cache_discard(par);
		assert_false(sc_cache_pending(par));
		assert_int_equal(sc_cache_apply_batch_end(par, &failed, &err),
				 0);
		check_same(ser, par, "after a batch discarded in flight");
	}
	batch_free(&b);
	sc_cache_destroy(ser);
	sc_cache_destroy(par);
}

/* ==== through the store =================================================== */

/* The same entities, in the same order (same seed: same shape), and the
 * same last position. */
static void check_contents(sc_cache *ser, sc_cache *got, const char *when)
{
	sc_reader *ra, *rb;
	assert_int_equal(sc_reader_open(ser, &ra, NULL), 0);
	assert_int_equal(sc_reader_open(got, &rb, NULL), 0);
	const sc_view *va = sc_reader_begin(ra), *vb = sc_reader_begin(rb);
	check_partitions(va, vb, when);
	assert_int_equal(sc_view_position(va), sc_view_position(vb));
	sc_view_iter ia, ib;
	sc_view_iter_init_all(va, &ia);
	sc_view_iter_init_all(vb, &ib);
	const sc_entity *ea;
	while ((ea = sc_view_iter_next(&ia)))
		if (!sc_entity_equal(ea, sc_view_iter_next(&ib)))
			fail_msg("%s (seed %llu): %s differs", when,
				 (unsigned long long)seed,
				 sc_entity_id(ea).ptr);
	assert_null(sc_view_iter_next(&ib));
	sc_reader_close(ra);
	sc_reader_close(rb);
}

/* A projector that wants every event once, in log order. */
typedef struct order_check {
	uint64_t next, committed, calls;
} order_check;

static int order_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
		       sc_error *err)
{
	order_check *o = ctx;
	(void)txn;
	o->calls++;
	if (ev->position != o->next)
		return sc_error_set(err, SC_EINVAL,
				    "event at position %llu, expected %llu",
				    (unsigned long long)ev->position,
				    (unsigned long long)o->next);
	o->next++;
	return 0;
}

static void order_commit(void *ctx)
{
	order_check *o = ctx;
	o->committed = o->next;
}

static void order_rollback(void *ctx)
{
	order_check *o = ctx;
	o->next = o->committed;
}

static sc_store *store_open(const char *dir, unsigned lanes)
{
	sc_store_options o = {.create = true,
			      .durability = SC_DURABILITY_NOSYNC,
			      .cache = {.seed = 0x5eed, .lanes = lanes}};
	return tk_store_open(dir, &o);
}

static void test_lanes_store(void **state)
{
	(void)state;
	rnd_state = seed ^ 0x5704e;
	assert_non_null(tk_tmproot_create("test_cache_lanes"));
	char dir[256];
	tk_tmproot_dir(dir, sizeof dir);
	sc_store *st = store_open(dir, 2);
	order_check oc = {.next = 1, .committed = 1};
	sc_projector p = {.name = "order",
			  .apply = order_apply,
			  .commit = order_commit,
			  .rollback = order_rollback,
			  .ctx = &oc};
	assert_int_equal(sc_store_add_projector(st, &p, NULL), 0);
	sc_cache *ser = make_cache(1, NULL);
	batch b;
	batch_alloc(&b, 2500);
	uint64_t pos = 0;
	unsigned rounds_n = short_run ? 12 : 40;
	for (unsigned k = 0; k < rounds_n; k++) {
		size_t n = 1 + rnd_below(2500);
		/* Every other batch over named partitions. */
		batch_fill(&b, n, 3000, pos, k % 2 ? 2 + k : 0);
		sc_error err;
		if (k % 5 == 4) {
			/* A bad event late in the batch: nothing of it. */
			b.ev[n - 1].entity.len = 0;
			assert_int_equal(
			    sc_store_append(st, b.ev, n, NULL, &err),
			    SC_EINVAL);
			continue;
		}
		uint64_t first = 0;
		if (sc_store_append(st, b.ev, n, &first, &err))
			fail_msg("append: %s", err.message);
		assert_int_equal(first, pos + 1);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(sc_cache_apply(ser, &b.ev[i], NULL),
					 0);
		assert_int_equal(sc_cache_promote(ser), 0);
		pos += n;
		check_contents(ser, sc_store_cache(st), "after an append");
	}
	assert_int_equal(oc.calls, pos);
	assert_int_equal(oc.committed, pos + 1);
	sc_store_close(st);
	/* Replay the whole log, in lanes and serially. */
	for (unsigned lanes = 1; lanes <= 3; lanes++) {
		st = store_open(dir, lanes);
		check_contents(ser, sc_store_cache(st), "after a replay");
		sc_store_close(st);
	}
	batch_free(&b);
	sc_cache_destroy(ser);
	assert_int_equal(tk_tmproot_remove(), 0);
}

/* The store's figures that an append changes. */
static void check_store_stats(sc_store *a, sc_store *b, const char *when)
{
	sc_store_stats sa, sb;
	assert_int_equal(sc_store_stats_get(a, &sa, NULL), 0);
	assert_int_equal(sc_store_stats_get(b, &sb, NULL), 0);
	if (sa.last_position != sb.last_position ||
	    sa.resident_bytes != sb.resident_bytes ||
	    sa.partitions_resident != sb.partitions_resident ||
	    sa.partitions_cold != sb.partitions_cold ||
	    sa.map_bytes_used != sb.map_bytes_used)
		fail_msg("%s (seed %llu): store stats differ: last %llu/%llu "
			 "resident bytes %zu/%zu partitions %zu/%zu cold "
			 "%zu/%zu map used %zu/%zu",
			 when, (unsigned long long)seed,
			 (unsigned long long)sa.last_position,
			 (unsigned long long)sb.last_position,
			 sa.resident_bytes, sb.resident_bytes,
			 sa.partitions_resident, sb.partitions_resident,
			 sa.partitions_cold, sb.partitions_cold,
			 sa.map_bytes_used, sb.map_bytes_used);
	check_same(sc_store_cache(a), sc_store_cache(b), when);
}

/* Append the batch to both stores; both take the same positions. */
static void append_both(sc_store *one, sc_store *two, batch *b, uint64_t *pos)
{
	sc_error err;
	uint64_t f1 = 0, f2 = 0;
	if (sc_store_append(one, b->ev, b->n, &f1, &err))
		fail_msg("append (1 lane): %s", err.message);
	if (sc_store_append(two, b->ev, b->n, &f2, &err))
		fail_msg("append (2 lanes): %s", err.message);
	assert_int_equal(f1, *pos + 1);
	assert_int_equal(f2, *pos + 1);
	*pos += b->n;
}

/*
 * Appends without projectors, where the cache applies a batch in its lanes
 * while the store writes it to the log: a store with two lanes ends in
 * the state of one with one lane fed the same batches (states, tree
 * shapes, positions, cache and store figures), and a batch whose apply
 * the cache refuses late (a state grown too big in a lane, while the log
 * records after it are being written) fails with the serial apply's
 * error, naming the event, and leaves the log, the cache and the figures
 * as they were.
 */
static void test_lanes_store_overlap(void **state)
{
	(void)state;
	rnd_state = seed ^ 0x0e71a9;
	assert_non_null(tk_tmproot_create("test_cache_lanes"));
	char d1[256], d2[256];
	tk_tmproot_dir(d1, sizeof d1);
	tk_tmproot_dir(d2, sizeof d2);
	sc_store *one = store_open(d1, 1), *two = store_open(d2, 2);
	batch b;
	batch_alloc(&b, 2500);
	uint64_t pos = 0;
	unsigned rounds_n = short_run ? 10 : 30;
	for (unsigned k = 0; k < rounds_n; k++) {
		size_t n = k % 3 ? 256 + rnd_below(2245) : 1 + rnd_below(300);
		batch_fill(&b, n, 3000, pos, k % 2 ? 2 + k : 0);
		append_both(one, two, &b, &pos);
		assert_int_equal(sc_store_last_position(two), pos);
		check_store_stats(one, two, "after an append");
	}

	/* Refused at event 600 of 1000, in a lane, by both stores. */
	char *bytes = malloc(SC_EVENT_VALUE_MAX);
	assert_non_null(bytes);
	memset(bytes, 'x', SC_EVENT_VALUE_MAX);
	batch_fill(&b, 1000, 300, pos, 6);
	put_big(&b, 600, part_name(1), "big", bytes);
	sc_store_stats before;
	assert_int_equal(sc_store_stats_get(two, &before, NULL), 0);
	sc_error e1, e2;
	assert_int_equal(sc_store_append(one, b.ev, b.n, NULL, &e1),
			 SC_ETOOBIG);
	assert_int_equal(sc_store_append(two, b.ev, b.n, NULL, &e2),
			 SC_ETOOBIG);
	assert_string_equal(e1.message, e2.message);
	char want[64];
	snprintf(want, sizeof want, "event 600 (position %llu)",
		 (unsigned long long)(pos + 601));
	if (!strstr(e2.message, want) || !strstr(e2.message, "'big'"))
		fail_msg("the refusal does not name event 600 and 'big': %s",
			 e2.message);
	free(bytes);
	sc_store_stats after;
	assert_int_equal(sc_store_stats_get(two, &after, NULL), 0);
	assert_int_equal(after.last_position, before.last_position);
	assert_int_equal(after.map_bytes_used, before.map_bytes_used);
	assert_int_equal(after.resident_bytes, before.resident_bytes);
	assert_int_equal(after.cache.version, before.cache.version);
	assert_int_equal(after.cache.entities, before.cache.entities);
	assert_int_equal(after.cache.memory_bytes, before.cache.memory_bytes);
	assert_int_equal(sc_store_last_position(two), pos);
	check_store_stats(one, two, "after a refused batch");
	sc_error err;
	assert_int_equal(sc_store_verify(two, &err), 0);

	/* Both go on from there, and replay to the same state. */
	batch_fill(&b, 2000, 3000, pos, 5);
	append_both(one, two, &b, &pos);
	check_store_stats(one, two, "after a refused batch and an append");
	sc_store_close(two);
	two = store_open(d2, 2);
	assert_int_equal(sc_store_last_position(two), pos);
	check_contents(sc_store_cache(one), sc_store_cache(two),
		       "after a replay");
	sc_store_close(one);
	sc_store_close(two);
	batch_free(&b);
	assert_int_equal(tk_tmproot_remove(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lanes_equal_serial),
	    cmocka_unit_test(test_lanes_collisions),
	    cmocka_unit_test(test_lanes_free_garbage),
	    cmocka_unit_test(test_lanes_reclaim_in_batch),
	    cmocka_unit_test(test_lanes_partitions),
	    cmocka_unit_test(test_lanes_alloc_failure),
	    cmocka_unit_test(test_lanes_too_big),
	    cmocka_unit_test(test_lanes_invalid_event),
	    cmocka_unit_test(test_lanes_begin_end),
	    cmocka_unit_test(test_lanes_store),
	    cmocka_unit_test(test_lanes_store_overlap),
	};
	return cmocka_run_group_tests(tests, setup_seed, NULL);
}
