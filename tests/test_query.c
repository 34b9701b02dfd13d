/*
 * Queries of the log (statecache/query.h) against an independent model:
 * a plain array of the events appended, each with its position, entity,
 * partition and tags. Every query's answer is compared with the model's
 * events filtered by a loop over the array.
 *
 * Covered: every kind (all, entity, tag, partition), finite and live,
 * from random positions, through sc_query_next and sc_query_next_batch;
 * tags and partitions of every size class (1 byte, whole keys up to 503
 * bytes, cut-and-hashed keys up to 4096 bytes, a value equal to another's
 * key id, values that are prefixes of others); entity_index lags of 1 to
 * 4096; a store whose tag and partition indexes are being built (meta
 * query_index_through), and the build of an older store's indexes in
 * several transactions; the store of format 3 in tests/data made by the
 * previous format; a format 4 store without its tag_index refused;
 * batches of large events (the decode arena over many chunks); damaged
 * records in the unindexed tail, skipped or reported as the query's peek
 * at tags and partition finds them, and through tag_index; a position the index
 * names missing from the log, reached by stepping and by searching; tag queries
 * whose index part spans several reads of positions and batches, with rows that
 * match nothing for whole batches, then the tail; an events key of another
 * length than 8, ordered as LMDB's default order; cancellation; argument
 * errors.
 *
 * SC_TEST_SEED=n repeats a run; SC_TEST_SHORT=1 shortens it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "statecache/query.h"
#include "statecache/store.h"
#include "store/store_internal.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;
static bool short_run;
static const char *root;

/* ---- values -------------------------------------------------------------- */

/* The values tags and partitions take: every size class of key id, and a
 * few random sizes. */
#define NVALUES 16
static sc_str values[NVALUES];

static sc_str make_value(size_t len, char fill, char last)
{
	char *p = malloc(len);
	assert_non_null(p);
	memset(p, fill, len);
	p[len - 1] = last;
	return (sc_str){p, len};
}

static void values_init(void)
{
	size_t i = 0;
	values[i++] = (sc_str){"a", 1};
	values[i++] = (sc_str){"ab", 2}; /* "a" is its prefix */
	values[i++] = (sc_str){"b", 1};
	values[i++] = make_value(SC_INDEX_ID_WHOLE_MAX, 'w', '1');
	values[i++] = make_value(SC_INDEX_ID_WHOLE_MAX + 1, 'w', '1');
	values[i++] = make_value(SC_EVENT_FIELD_MAX, 'h', '1');
	values[i++] = make_value(SC_EVENT_FIELD_MAX, 'h', '2'); /* same cut */
	values[i++] = make_value(1000, 'h', '3');
	values[i++] = make_value(SC_INDEX_ID_CUT, 'h', 'h');
	/* A whole value equal to the key id of the 4096-byte one. */
	char *k = malloc(SC_INDEX_KEY_MAX);
	assert_non_null(k);
	size_t n = sc_index_key_id((uint8_t *)k, values[5]);
	assert_int_equal(n, SC_INDEX_ID_CUT + 16);
	values[i++] = (sc_str){k, n};
	values[i++] = make_value(2, 'a', 'b'); /* "ab" again, other bytes */
	values[i++] = make_value(300, 'm', 'm');
	/* Sizes anywhere in 1..4096, from the run's seed. */
	uint64_t rs = seed ^ 0xa11;
	for (char c = 'p'; i < NVALUES; c++)
		values[i++] = make_value(
		    1 + tk_rand_below(&rs, SC_EVENT_FIELD_MAX), c, c);
	assert_int_equal(i, NVALUES);
	/* values[10] must equal values[1] to test duplicates of a value in
	 * one event: "ab". */
	assert_memory_equal(values[10].ptr, "ab", 2);
}

static void values_free(void)
{
	for (size_t i = 3; i < NVALUES; i++)
		free((void *)values[i].ptr);
}

/* ---- the model ----------------------------------------------------------- */

#define MAX_TAGS  4
#define NENTITIES 6

typedef struct model_ev {
	uint64_t pos;
	int entity;
	int partition; /* -1: none */
	int tags[MAX_TAGS];
	size_t ntags;
} model_ev;

typedef struct model {
	model_ev *evs;
	size_t n, cap;
} model;

static char entity_ids[NENTITIES][1100];
static size_t entity_lens[NENTITIES];

static void entities_init(void)
{
	for (int i = 0; i < NENTITIES; i++) {
		size_t len = i < 3 ? 2 : i == 3 ? 503 : SC_ENTITY_ID_MAX;
		memset(entity_ids[i], 'e', len);
		entity_ids[i][len - 1] = (char)('0' + i);
		entity_lens[i] = len;
	}
}

/* Append `n` random events in batches; the model records them. */
static void append_random(sc_store *s, model *m, size_t n, uint64_t *rs)
{
	sc_event evs[64];
	sc_str tags[64][MAX_TAGS];
	sc_attr attr[64];
	model_ev mev[64];
	while (n) {
		size_t b = 1 + tk_rand_below(rs, 40);
		if (b > n)
			b = n;
		for (size_t i = 0; i < b; i++) {
			model_ev *me = &mev[i];
			me->entity = (int)tk_rand_below(rs, NENTITIES);
			me->partition = tk_rand_below(rs, 4) == 0
					    ? -1
					    : (int)tk_rand_below(rs, NVALUES);
			me->ntags = tk_rand_below(rs, MAX_TAGS + 1);
			for (size_t t = 0; t < me->ntags; t++) {
				me->tags[t] = (int)tk_rand_below(rs, NVALUES);
				tags[i][t] = values[me->tags[t]];
			}
			attr[i] = (sc_attr){
			    {"n", 1},
			    {.type = SC_VALUE_INT, .u.i = (int64_t)(m->n + i)}};
			evs[i] =
			    (sc_event){.entity = {entity_ids[me->entity],
						  entity_lens[me->entity]},
				       .type = SC_EVENT_SET,
				       .attrs = &attr[i],
				       .nattrs = 1,
				       .partition = me->partition < 0
							? (sc_str){NULL, 0}
							: values[me->partition],
				       .tags = tags[i],
				       .ntags = me->ntags};
		}
		uint64_t first;
		sc_error err;
		int rc = sc_store_append(s, evs, b, &first, &err);
		if (rc)
			fprintf(stderr, "append: %s\n", err.message);
		assert_int_equal(rc, 0);
		assert_int_equal(first, m->n + 1);
		for (size_t i = 0; i < b; i++) {
			if (m->n == m->cap) {
				m->cap = m->cap ? 2 * m->cap : 256;
				m->evs =
				    realloc(m->evs, m->cap * sizeof *m->evs);
				assert_non_null(m->evs);
			}
			mev[i].pos = first + i;
			m->evs[m->n++] = mev[i];
		}
		n -= b;
	}
}

static bool str_is(sc_str a, sc_str b)
{
	return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* Whether the model's event matches (kind, key). */
static bool model_matches(const model_ev *e, const sc_query_spec *spec)
{
	sc_str key = spec->key;
	switch (spec->kind) {
	case SC_QUERY_ALL:
		return true;
	case SC_QUERY_ENTITY:
		/* An entity is (partition, id). */
		return str_is((sc_str){entity_ids[e->entity],
				       entity_lens[e->entity]},
			      key) &&
		       str_is(e->partition < 0 ? (sc_str){"", 0}
					       : values[e->partition],
			      spec->partition);
	case SC_QUERY_TAG:
		for (size_t t = 0; t < e->ntags; t++)
			if (str_is(values[e->tags[t]], key))
				return true;
		return false;
	case SC_QUERY_PARTITION:
		return e->partition >= 0 && str_is(values[e->partition], key);
	}
	return false;
}

/* The delivered event is the model's event at its position. */
static void check_event(const model *m, const sc_event *ev)
{
	assert_true(ev->position >= 1 && ev->position <= m->n);
	const model_ev *e = &m->evs[ev->position - 1];
	assert_int_equal(e->pos, ev->position);
	assert_true(str_is(ev->entity, (sc_str){entity_ids[e->entity],
						entity_lens[e->entity]}));
	assert_int_equal(ev->nattrs, 1);
	assert_int_equal(ev->attrs[0].value.u.i, (int64_t)(ev->position - 1));
	assert_int_equal(ev->ntags, e->ntags);
	for (size_t t = 0; t < e->ntags; t++)
		assert_true(str_is(ev->tags[t], values[e->tags[t]]));
	if (e->partition < 0)
		assert_int_equal(ev->partition.len, 0);
	else
		assert_true(str_is(ev->partition, values[e->partition]));
}

/* The position of the first model event after `after` matching the query
 * and at most `end`, or 0. */
static uint64_t model_next(const model *m, const sc_query_spec *spec,
			   uint64_t after, uint64_t end)
{
	for (uint64_t p = after + 1; p <= end && p <= m->n; p++)
		if (model_matches(&m->evs[p - 1], spec))
			return p;
	return 0;
}

/* A random partition for an entity query: the default one or one the
 * model's events may name. */
static sc_str random_partition(uint64_t *rs)
{
	return tk_rand_below(rs, 2) ? (sc_str){"", 0}
				    : values[tk_rand_below(rs, NVALUES)];
}

/* A random query key for `kind`. */
static sc_str random_key(sc_query_kind kind, uint64_t *rs)
{
	if (kind == SC_QUERY_ENTITY) {
		int e = (int)tk_rand_below(rs, NENTITIES);
		return (sc_str){entity_ids[e], entity_lens[e]};
	}
	if (kind == SC_QUERY_ALL)
		return (sc_str){NULL, 0};
	return values[tk_rand_below(rs, NVALUES)];
}

/* Drain q (finite, or live with timeout 0 until ETIMEDOUT), checking each
 * event against the model; `*after` is the last position delivered. */
static void drain(const model *m, sc_query *q, const sc_query_spec *spec,
		  uint64_t end, uint64_t *after, bool batch, uint64_t *rs)
{
	for (;;) {
		const sc_event *evs[64];
		size_t n = 0;
		sc_error err;
		int rc;
		if (batch) {
			size_t max = 1 + tk_rand_below(rs, 64);
			rc = sc_query_next_batch(q, 0, evs, max, &n, &err);
			assert_true(n <= max);
		} else {
			rc = sc_query_next(q, 0, &evs[0], &err);
			n = rc == 0 && evs[0] ? 1 : 0;
		}
		if (spec->live && rc == ETIMEDOUT) {
			assert_int_equal(n, 0);
			break;
		}
		if (rc)
			fprintf(stderr, "query: %s\n", err.message);
		assert_int_equal(rc, 0);
		if (n == 0) {
			assert_false(spec->live);
			break;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t want = model_next(m, spec, *after, end);
			assert_int_equal(evs[i]->position, want);
			check_event(m, evs[i]);
			*after = want;
		}
		assert_int_equal(sc_query_position(q), *after);
	}
	assert_int_equal(model_next(m, spec, *after, end), 0);
}

static sc_query *open_query(sc_store *s, const sc_query_spec *spec)
{
	sc_query *q = NULL;
	sc_error err;
	int rc = sc_query_open(s, spec, &q, &err);
	if (rc)
		fprintf(stderr, "sc_query_open: %s\n", err.message);
	assert_int_equal(rc, 0);
	return q;
}

/* Random finite and live queries of every kind against the model. */
static void random_queries(sc_store *s, const model *m, size_t count,
			   uint64_t *rs)
{
	for (size_t i = 0; i < count; i++) {
		sc_query_spec spec = {0};
		spec.kind = (sc_query_kind)tk_rand_below(rs, 4);
		spec.key = random_key(spec.kind, rs);
		spec.partition = random_partition(rs);
		spec.from = tk_rand_below(rs, m->n + 3);
		spec.live = tk_rand_below(rs, 2);
		spec.poll_ms = -1;
		bool batch = tk_rand_below(rs, 2);
		sc_query *q = open_query(s, &spec);
		uint64_t after = spec.from ? spec.from - 1 : 0;
		assert_int_equal(sc_query_position(q), after);
		drain(m, q, &spec, m->n, &after, batch, rs);
		sc_query_close(q);
	}
}

static sc_store_options opts(uint64_t lag)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	o.index_lag = lag;
	return o;
}

/* A new store in a fresh directory (its path in dir), opened with
 * opts(lag); *o keeps the options for a reopen. */
static sc_store *new_store_in(char *dir, size_t dir_len, uint64_t lag,
			      sc_store_options *o)
{
	*o = opts(lag);
	return tk_store_create(dir, dir_len, o);
}

/* A new store in a fresh directory, opened with opts(lag). */
static sc_store *new_store(uint64_t lag)
{
	char dir[256];
	sc_store_options o;
	return new_store_in(dir, sizeof dir, lag, &o);
}

/* Write the record of the log at `pos` directly: `len` bytes of `rec`
 * (damage a test makes). */
static void put_record(sc_store *s, uint64_t pos, const void *rec, size_t len)
{
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	uint8_t kb[8];
	sc_be64_put(kb, pos);
	MDB_val k = {8, kb}, v = {len, (void *)rec};
	assert_int_equal(mdb_put(txn, s->dbi_events, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

/* Append `count` deletes of entity "x", one an append, each in
 * `partition` with the tags tags[0..ntags-1]. */
static void append_deletes(sc_store *s, int count, sc_str partition,
			   const sc_str *tags, size_t ntags)
{
	sc_event ev = {.entity = {"x", 1},
		       .type = SC_EVENT_DELETE,
		       .partition = partition,
		       .tags = tags,
		       .ntags = ntags};
	for (int i = 0; i < count; i++)
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
}

static void check_verify(sc_store *s)
{
	sc_error err;
	int rc = sc_store_verify(s, &err);
	if (rc)
		fprintf(stderr, "verify: %s\n", err.message);
	assert_int_equal(rc, 0);
}

/* ---- tests --------------------------------------------------------------- */

static void check_rows(sc_store *s, const model *m, uint64_t lag);

/* Finite and live queries across entity_index lags, appends between
 * queries; a live query follows appends; a finite one stops at its end. */
static void test_roundtrip(void **state)
{
	SC_UNUSED(state);
	static const uint64_t lags[] = {1, 4, 64, 4096};
	uint64_t rs = seed;
	for (size_t l = 0; l < 4; l++) {
		char dir[256];
		sc_store_options o;
		sc_store *s = new_store_in(dir, sizeof dir, lags[l], &o);
		model m = {0};
		/* An empty log: every query ends or times out at once. */
		random_queries(s, &m, 8, &rs);
		size_t rounds = short_run ? 3 : 6;
		for (size_t r = 0; r < rounds; r++) {
			/* Live queries opened now follow the next appends. */
			sc_query *live[4];
			sc_query_spec lspec[4];
			uint64_t lafter[4];
			for (int k = 0; k < 4; k++) {
				lspec[k] = (sc_query_spec){
				    .kind = (sc_query_kind)k,
				    .key = random_key((sc_query_kind)k, &rs),
				    .partition = random_partition(&rs),
				    .from = tk_rand_below(&rs, m.n + 2),
				    .live = true,
				    .poll_ms = -1};
				live[k] = open_query(s, &lspec[k]);
				lafter[k] =
				    lspec[k].from ? lspec[k].from - 1 : 0;
			}
			/* A finite query opened now ends here. */
			sc_query_spec fspec = {.kind = SC_QUERY_ALL, .from = 1};
			sc_query *fin = open_query(s, &fspec);
			uint64_t fend = m.n, fafter = 0;
			append_random(s, &m, 100 + tk_rand_below(&rs, 200),
				      &rs);
			drain(&m, fin, &fspec, fend, &fafter, true, &rs);
			sc_query_close(fin);
			for (int k = 0; k < 4; k++) {
				drain(&m, live[k], &lspec[k], m.n, &lafter[k],
				      k % 2, &rs);
				sc_query_close(live[k]);
			}
			random_queries(s, &m, short_run ? 40 : 120, &rs);
			check_rows(s, &m, lags[l]);
		}
		check_verify(s);
		sc_store_close(s);
		/* Reopened: the same answers. */
		s = tk_store_open(dir, &o);
		check_rows(s, &m, lags[l]);
		random_queries(s, &m, 40, &rs);
		check_verify(s);
		sc_store_close(s);
		free(m.evs);
	}
}

/* Whether two values have the same index key id (the same row). */
static bool same_key_id(sc_str a, sc_str b)
{
	uint8_t ka[SC_INDEX_KEY_MAX], kb[SC_INDEX_KEY_MAX];
	size_t na = sc_index_key_id(ka, a), nb = sc_index_key_id(kb, b);
	return na == nb && memcmp(ka, kb, na) == 0;
}

/* meta query_index_through. */
static uint64_t tag_through(sc_store *s)
{
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	MDB_val k = {sizeof "query_index_through" - 1, "query_index_through"},
		v;
	assert_int_equal(mdb_get(txn, s->dbi_meta, &k, &v), 0);
	assert_int_equal(v.mv_size, 8);
	uint64_t t = sc_be64_get(v.mv_data);
	mdb_txn_abort(txn);
	return t;
}

/* The indexes' rows: tag_index and partition_index hold exactly one row
 * per (key id of a tag, event) and per event with a partition, for the
 * events up to meta query_index_through, which is at most index_lag - 1
 * behind the log (`lag`; 0: no bound to check). */
static void check_rows(sc_store *s, const model *m, uint64_t lag)
{
	uint64_t through = tag_through(s);
	assert_true(through <= m->n);
	if (lag)
		assert_true(m->n - through < lag);
	size_t want_tags = 0, want_parts = 0;
	for (size_t i = 0; i < through; i++) {
		const model_ev *e = &m->evs[i];
		want_parts += e->partition >= 0;
		for (size_t t = 0; t < e->ntags; t++) {
			bool dup = false;
			for (size_t u = 0; u < t; u++)
				dup |= same_key_id(values[e->tags[u]],
						   values[e->tags[t]]);
			want_tags += !dup;
		}
	}
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	MDB_stat st;
	assert_int_equal(mdb_stat(txn, s->dbi_tags, &st), 0);
	assert_int_equal(st.ms_entries, want_tags);
	assert_int_equal(mdb_stat(txn, s->dbi_partitions, &st), 0);
	assert_int_equal(st.ms_entries, want_parts);
	mdb_txn_abort(txn);
}

/* Empty the tag and partition indexes after position `through` and mark
 * them built up to there, as an older store's build leaves them. */
static void cut_indexes(sc_store *s, uint64_t through)
{
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	MDB_dbi dbis[2] = {s->dbi_tags, s->dbi_partitions};
	for (int d = 0; d < 2; d++) {
		MDB_cursor *cur;
		assert_int_equal(mdb_cursor_open(txn, dbis[d], &cur), 0);
		MDB_val k, v;
		int op = MDB_FIRST;
		while (mdb_cursor_get(cur, &k, &v, op) == 0) {
			op = MDB_NEXT;
			uint64_t pos =
			    sc_be64_get((uint8_t *)k.mv_data + k.mv_size - 8);
			if (pos > through)
				assert_int_equal(mdb_cursor_del(cur, 0), 0);
		}
		mdb_cursor_close(cur);
	}
	uint8_t b[8];
	sc_be64_put(b, through);
	MDB_val k = {sizeof "query_index_through" - 1, "query_index_through"},
		v = {8, b};
	assert_int_equal(mdb_put(txn, s->dbi_meta, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

/* Indexes that cover only part of the log (a build under way): queries
 * scan the rest, miss nothing; a reopen finishes the build. */
static void test_partial_index(void **state)
{
	SC_UNUSED(state);
	uint64_t rs = seed ^ 0x51;
	char dir[256];
	sc_store_options o;
	sc_store *s = new_store_in(dir, sizeof dir, 16, &o);
	model m = {0};
	append_random(s, &m, 600, &rs);
	check_rows(s, &m, 16);
	static const uint64_t cuts[] = {0, 1, 299, 599, 600};
	for (size_t c = 0; c < 5; c++) {
		cut_indexes(s, cuts[c]);
		check_verify(s);
		random_queries(s, &m, short_run ? 40 : 100, &rs);
		/* Appends go on meanwhile and index their own events. */
		append_random(s, &m, 50, &rs);
		random_queries(s, &m, 20, &rs);
		sc_store_close(s);
		s = tk_store_open(dir, &o);
		check_rows(s, &m, 16); /* open indexes a longer tail */
		random_queries(s, &m, 20, &rs);
	}
	sc_store_close(s);
	free(m.evs);
}

/* Set meta format_version (test stores only). */
static void set_version(sc_store *s, uint32_t version)
{
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	uint8_t b[4];
	sc_be32_put(b, version);
	MDB_val k = {14, "format_version"}, v = {4, b};
	assert_int_equal(mdb_put(txn, s->dbi_meta, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

static uint32_t get_version(sc_store *s)
{
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn),
			 0);
	MDB_val k = {14, "format_version"}, v;
	assert_int_equal(mdb_get(txn, s->dbi_meta, &k, &v), 0);
	assert_int_equal(v.mv_size, 4);
	uint32_t ver = sc_be32_get(v.mv_data);
	mdb_txn_abort(txn);
	return ver;
}

/* A format 3 store whose log needs more than one build transaction: its
 * indexes are dropped, then built at open, in steps. */
static void test_upgrade_build_steps(void **state)
{
	SC_UNUSED(state);
	uint64_t rs = seed ^ 0x77;
	char dir[256];
	sc_store_options o;
	sc_store *s = new_store_in(dir, sizeof dir, 16, &o);
	model m = {0};
	/* About 2.5 rows per event: more than one step of 32768 rows. */
	append_random(s, &m, short_run ? 14000 : 30000, &rs);
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	assert_int_equal(mdb_drop(txn, s->dbi_tags, 1), 0);
	assert_int_equal(mdb_drop(txn, s->dbi_partitions, 1), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	set_version(s, 3);
	sc_store_close(s);
	s = tk_store_open(dir, &o);
	assert_int_equal(get_version(s), SC_STORE_FORMAT_VERSION);
	check_rows(s, &m, 16);
	check_verify(s);
	random_queries(s, &m, 40, &rs);
	sc_store_close(s);
	free(m.evs);
}

/* A store of format 4 or later that lost tag_index is damaged: open refuses it
 * and does not make the database anew. */
static void test_missing_index_refused(void **state)
{
	SC_UNUSED(state);
	static const char *const names[] = {"tag_index", "partition_index"};
	for (int d = 0; d < 2; d++) {
		char dir[256];
		sc_store_options o;
		sc_store *s = new_store_in(dir, sizeof dir, 0, &o);
		MDB_txn *txn;
		assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn),
				 0);
		assert_int_equal(
		    mdb_drop(txn, d ? s->dbi_partitions : s->dbi_tags, 1), 0);
		assert_int_equal(mdb_txn_commit(txn), 0);
		sc_store_close(s);
		sc_error err;
		o.create = false;
		s = NULL;
		assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_ECORRUPT);
		assert_null(s);
		assert_non_null(strstr(err.message, names[d]));
	}
}

/* tests/data/store-format3: made by the previous format's `statecache
 * ingest` from 300 events, event i (position i) of entity "e<i%10>" with
 * tags "even" (i%2==0), "three" (i%3==0), 600 x 'L' (i%7==0), 4096 x 'x'
 * (i%50==0), and partition "p<i%3>" when i%5==0, else 4096 x 'P' when
 * i%60==1. */
static void test_format3_store(void **state)
{
	SC_UNUSED(state);
	char dir[256], cmd[1024];
	tk_tmproot_dir(dir, sizeof dir);
	snprintf(cmd, sizeof cmd,
		 "mkdir -p '%s' && cp tests/data/store-format3/data.mdb "
		 "'%s'/ && chmod 600 '%s'/data.mdb",
		 dir, dir, dir);
	assert_int_equal(system(cmd), 0);
	sc_store_options o = opts(1); /* open indexes the whole log */
	o.create = false;
	sc_store *s = tk_store_open(dir, &o);
	assert_int_equal(get_version(s), SC_STORE_FORMAT_VERSION);
	assert_int_equal(sc_store_last_position(s), 300);
	assert_int_equal(tag_through(s), 300);
	check_verify(s);
	char *L = malloc(600), *X = malloc(4096), *P = malloc(4096);
	memset(L, 'L', 600);
	memset(X, 'x', 4096);
	memset(P, 'P', 4096);
	struct {
		sc_query_kind kind;
		sc_str key;
		int mod, rem, not_mod; /* i%mod==rem, and i%not_mod != 0 */
	} qs[] = {
	    {SC_QUERY_TAG, {"even", 4}, 2, 0, 0},
	    {SC_QUERY_TAG, {"three", 5}, 3, 0, 0},
	    {SC_QUERY_TAG, {L, 600}, 7, 0, 0},
	    {SC_QUERY_TAG, {X, 4096}, 50, 0, 0},
	    {SC_QUERY_PARTITION, {"p1", 2}, 15, 10, 0},
	    {SC_QUERY_PARTITION, {P, 4096}, 60, 1, 5},
	    {SC_QUERY_ENTITY, {"e3", 2}, 10, 3, 0},
	};
	for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
		sc_query_spec spec = {
		    .kind = qs[i].kind, .key = qs[i].key, .from = 1};
		sc_query *q = open_query(s, &spec);
		uint64_t want = 0;
		for (;;) {
			const sc_event *ev;
			sc_error err;
			assert_int_equal(sc_query_next(q, 0, &ev, &err), 0);
			want++;
			while (want <= 300 &&
			       !(want % qs[i].mod == (uint64_t)qs[i].rem &&
				 (!qs[i].not_mod || want % qs[i].not_mod)))
				want++;
			if (want > 300) {
				assert_null(ev);
				break;
			}
			assert_non_null(ev);
			assert_int_equal(ev->position, want);
		}
		sc_query_close(q);
	}
	/* The upgraded store takes appends and indexes them. */
	sc_str tag = {"even", 4};
	sc_attr a = {{"n", 1}, {.type = SC_VALUE_INT, .u.i = 301}};
	sc_event ev = {.entity = {"e1", 2},
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1,
		       .tags = &tag,
		       .ntags = 1};
	assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	sc_query_spec spec = {.kind = SC_QUERY_TAG, .key = tag, .from = 299};
	sc_query *q = open_query(s, &spec);
	const sc_event *got;
	assert_int_equal(sc_query_next(q, 0, &got, NULL), 0);
	assert_int_equal(got->position, 300);
	assert_int_equal(sc_query_next(q, 0, &got, NULL), 0);
	assert_int_equal(got->position, 301);
	assert_int_equal(sc_query_next(q, 0, &got, NULL), 0);
	assert_null(got);
	sc_query_close(q);
	sc_store_close(s);
	free(L);
	free(X);
	free(P);
}

/* Put or delete (v NULL) one row of `dbi` directly. */
static void raw_row(sc_store *s, MDB_dbi dbi, const char *id, uint64_t pos,
		    bool put)
{
	uint8_t key[64];
	size_t n = strlen(id);
	memcpy(key, id, n);
	sc_be64_put(key + n, pos);
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	MDB_val k = {n + 8, key}, v = {0, NULL};
	assert_int_equal(put ? mdb_put(txn, dbi, &k, &v, 0)
			     : mdb_del(txn, dbi, &k, NULL),
			 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

static void expect_verify_fails(sc_store *s, const char *what)
{
	sc_error err;
	assert_int_equal(sc_store_verify(s, &err), SC_ECORRUPT);
	if (!strstr(err.message, what))
		fprintf(stderr, "verify said: %s\n", err.message);
	assert_non_null(strstr(err.message, what));
}

/* sc_store_verify finds a missing row, a row of a value the event does
 * not have and a row past the log, in either index. */
static void test_verify_indexes(void **state)
{
	SC_UNUSED(state);
	/* lag 1: every append writes its rows */
	sc_store *s = new_store(1);
	sc_str tags[2] = {{"red", 3}, {"blue", 4}};
	append_deletes(s, 3, (sc_str){"eu", 2}, tags, 2);
	check_verify(s);
	MDB_dbi dbis[2] = {s->dbi_tags, s->dbi_partitions};
	const char *names[2] = {"tag_index", "partition_index"};
	const char *vals[2] = {"red", "eu"};
	for (int d = 0; d < 2; d++) {
		raw_row(s, dbis[d], vals[d], 2, false);
		expect_verify_fails(s, "has no row");
		raw_row(s, dbis[d], vals[d], 2, true);
		check_verify(s);
		raw_row(s, dbis[d], "green", 2, true);
		expect_verify_fails(s, "names a value the event does not have");
		raw_row(s, dbis[d], "green", 2, false);
		raw_row(s, dbis[d], vals[d], 9, true);
		expect_verify_fails(s, names[d]);
		raw_row(s, dbis[d], vals[d], 9, false);
		check_verify(s);
	}
	sc_store_close(s);
}

/* A record that does not decode: every query call that reaches it
 * reports SC_ECORRUPT, again and again; a batch delivers the events
 * before it first. */
/* A record over SC_EVENT_RECORD_MAX (a damaged store): refused at its
 * position, after the events before it, on every later call, through the
 * log and through tag_index. */
static void test_record_over_limit(void **state)
{
	SC_UNUSED(state);
	size_t len = (size_t)SC_EVENT_RECORD_MAX + 1;
	char *rec = calloc(1, len);
	assert_non_null(rec);
	sc_str tag = {"t", 1};
	for (uint64_t lag = 0; lag <= 1; lag++) {
		char dir[256];
		sc_store_options o = opts(lag);
		o.map_size = (size_t)256 << 20;
		sc_store *s = tk_store_create(dir, sizeof dir, &o);
		append_deletes(s, 5, (sc_str){NULL, 0}, &tag, 1);
		put_record(s, 3, rec, len);
		sc_query_spec specs[2] = {{.kind = SC_QUERY_ALL},
					  {.kind = SC_QUERY_TAG, .key = tag}};
		for (int i = 0; i < 2; i++) {
			sc_query *q = open_query(s, &specs[i]);
			const sc_event *e;
			sc_error err;
			assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
			assert_int_equal(e->position, 1);
			assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
			assert_int_equal(e->position, 2);
			for (int k = 0; k < 2; k++) {
				assert_int_equal(sc_query_next(q, 0, &e, &err),
						 SC_ETOOBIG);
				assert_null(e);
				assert_non_null(
				    strstr(err.message, "position 3 is"));
			}
			sc_query_close(q);
		}
		sc_store_close(s);
	}
	free(rec);
}

static void test_damaged_record(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(0);
	sc_str tag = {"t", 1};
	append_deletes(s, 5, (sc_str){NULL, 0}, &tag, 1);
	put_record(s, 3, "\xff\xff\xff\xff", 4);
	/* All events (decoded when delivered), and a tag in the log's
	 * unindexed tail (decoded when read). */
	sc_query_spec specs[2] = {{.kind = SC_QUERY_ALL},
				  {.kind = SC_QUERY_TAG, .key = tag}};
	sc_query *q;
	const sc_event *e;
	sc_error err;
	for (int i = 0; i < 2; i++) {
		q = open_query(s, &specs[i]);
		assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
		assert_int_equal(e->position, 1);
		assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
		assert_int_equal(e->position, 2);
		assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
		assert_null(e);
		assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
		assert_int_equal(sc_query_position(q), 2);
		sc_query_close(q);
	}
	sc_query_spec spec = {.kind = SC_QUERY_ALL};
	q = open_query(s, &spec);
	const sc_event *evs[10];
	size_t n;
	assert_int_equal(sc_query_next_batch(q, 0, evs, 10, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(evs[1]->position, 2);
	assert_int_equal(sc_query_next_batch(q, 0, evs, 10, &n, &err),
			 SC_ECORRUPT);
	assert_int_equal(n, 0);
	assert_int_equal(sc_query_position(q), 2);
	sc_query_close(q);
	sc_store_close(s);
	/* The same through tag_index (every event indexed): the damaged
	 * record is decoded in the batch that reads it, after the events
	 * before it, which are delivered first. */
	s = new_store(1);
	append_deletes(s, 5, (sc_str){NULL, 0}, &tag, 1);
	assert_int_equal(tag_through(s), 5);
	put_record(s, 3, "\xff\xff\xff\xff", 4);
	q = open_query(s, &specs[1]);
	assert_int_equal(sc_query_next_batch(q, 0, evs, 10, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(evs[0]->position, 1);
	assert_int_equal(evs[1]->position, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
		assert_non_null(strstr(err.message, "position 3"));
		assert_null(e);
	}
	assert_int_equal(sc_query_position(q), 2);
	sc_query_close(q);
	sc_store_close(s);
}

/* Attributes of the event at `pos` in test_large_batches: 1, 300 or 2000
 * (the arrays of the last are over one chunk of the decode arena). */
static size_t large_nattrs(uint64_t pos)
{
	static const size_t n[] = {1, 300, 2000, 1, 1};
	return n[pos % 5];
}

static int64_t large_value(uint64_t pos, size_t i)
{
	return (int64_t)(pos * 10000 + i);
}

/* Batches of events whose decoded arrays fill many chunks of the query's
 * decode arena, single events larger than a chunk, smaller ones between:
 * every event of a batch is whole after the call that delivered it (the
 * arena never moves what it handed out), by every kind of query, through
 * the indexes and the unindexed tail (index_lag 64: the last events are
 * in the tail), a tag query crossing thousands of positions in both. */
static void test_large_batches(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(64);
	const uint64_t n = short_run ? 600 : 1500;
	sc_attr *attrs = malloc(2000 * sizeof *attrs);
	char(*names)[8] = malloc(2000 * sizeof *names);
	assert_non_null(attrs);
	assert_non_null(names);
	for (size_t i = 0; i < 2000; i++) {
		int len = snprintf(names[i], sizeof names[i], "a%zu", i);
		attrs[i].name = (sc_str){names[i], (size_t)len};
		attrs[i].value.type = SC_VALUE_INT;
	}
	sc_str tags[2] = {{"all", 3}, {"odd", 3}};
	for (uint64_t pos = 1; pos <= n; pos++) {
		size_t na = large_nattrs(pos);
		for (size_t i = 0; i < na; i++)
			attrs[i].value.u.i = large_value(pos, i);
		sc_event ev = {.entity = {"big", 3},
			       .type = SC_EVENT_SET,
			       .attrs = attrs,
			       .nattrs = na,
			       .partition = {"p", 1},
			       .tags = tags,
			       .ntags = pos % 2 ? 2 : 1};
		sc_error err;
		int rc = sc_store_append(s, &ev, 1, NULL, &err);
		if (rc)
			fprintf(stderr, "append: %s\n", err.message);
		assert_int_equal(rc, 0);
	}
	assert_true(tag_through(s) < n);
	sc_query_spec specs[] = {
	    {.kind = SC_QUERY_ALL},
	    {.kind = SC_QUERY_ENTITY, .key = {"big", 3}, .partition = {"p", 1}},
	    {.kind = SC_QUERY_TAG, .key = {"all", 3}},
	    {.kind = SC_QUERY_TAG, .key = {"odd", 3}, .from = 2},
	    {.kind = SC_QUERY_PARTITION, .key = {"p", 1}},
	};
	for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
		sc_query *q = open_query(s, &specs[k]);
		uint64_t step =
		    specs[k].kind == SC_QUERY_TAG && specs[k].key.ptr[0] == 'o'
			? 2
			: 1;
		uint64_t want = specs[k].from ? specs[k].from + 1 : 1;
		for (;;) {
			const sc_event *evs[256];
			size_t got;
			sc_error err;
			int rc =
			    sc_query_next_batch(q, 0, evs, 256, &got, &err);
			if (rc)
				fprintf(stderr, "query: %s\n", err.message);
			assert_int_equal(rc, 0);
			if (!got)
				break;
			for (size_t e = 0; e < got; e++, want += step) {
				const sc_event *ev = evs[e];
				assert_int_equal(ev->position, want);
				assert_int_equal(ev->nattrs,
						 large_nattrs(want));
				for (size_t i = 0; i < ev->nattrs; i++) {
					assert_true(str_is(ev->attrs[i].name,
							   attrs[i].name));
					assert_int_equal(ev->attrs[i].value.u.i,
							 large_value(want, i));
				}
				assert_int_equal(ev->ntags, want % 2 ? 2 : 1);
				assert_true(str_is(ev->tags[0], tags[0]));
				assert_true(
				    str_is(ev->partition, (sc_str){"p", 1}));
			}
		}
		assert_true(want > n);
		assert_true(want - step <= n);
		sc_query_close(q);
	}
	free(names);
	free(attrs);
	sc_store_close(s);
}

/* A record whose framing holds but whose attribute does not decode, in
 * the log's unindexed tail: tag and partition queries look at the tags
 * and the partition only (sc_event_peek_tag, sc_event_peek_key), so one
 * the record does not match skips it; one it matches decodes it to
 * deliver it and reports SC_ECORRUPT at its position, again and again. A
 * tag over the 4096-byte limit is damage the peek reports. */
static void test_tail_peek(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(4096);
	sc_str tags[2] = {{"t", 1}, {"u", 1}};
	for (int i = 1; i <= 5; i++) {
		sc_event ev = {.entity = {"x", 1},
			       .type = SC_EVENT_DELETE,
			       .partition = {"p", 1},
			       .tags = &tags[i % 2 ? 0 : 1],
			       .ntags = 1};
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	}
	assert_int_equal(tag_through(s), 0);
	/* Position 3: entity "x", type set, tag "t", partition "p", and an
	 * attribute whose name claims 5 bytes of the 0 left. */
	static const uint8_t bad_attr[] = {0x0a, 1,   'x',  0x10, 1,
					   0x1a, 2,   0x0a, 5,	  0x3a,
					   1,	 't', 0x32, 1,	  'p'};
	put_record(s, 3, bad_attr, sizeof bad_attr);
	const sc_event *e;
	sc_error err;
	/* Not matched: skipped. */
	sc_query_spec skip[] = {{.kind = SC_QUERY_TAG, .key = {"u", 1}},
				{.kind = SC_QUERY_PARTITION, .key = {"q", 1}}};
	static const uint64_t skip_want[2][3] = {{2, 4, 0}, {0}};
	for (int i = 0; i < 2; i++) {
		sc_query *q = open_query(s, &skip[i]);
		for (int j = 0; j < 3; j++) {
			assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
			if (!skip_want[i][j]) {
				assert_null(e);
				break;
			}
			assert_int_equal(e->position, skip_want[i][j]);
		}
		sc_query_close(q);
	}
	/* Matched: delivered events before it, then the damage. */
	sc_query_spec hit[] = {{.kind = SC_QUERY_TAG, .key = {"t", 1}},
			       {.kind = SC_QUERY_PARTITION, .key = {"p", 1}}};
	for (int i = 0; i < 2; i++) {
		sc_query *q = open_query(s, &hit[i]);
		assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
		assert_int_equal(e->position, 1);
		if (i == 1) {
			assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
			assert_int_equal(e->position, 2);
		}
		for (int j = 0; j < 2; j++) {
			assert_int_equal(sc_query_next(q, 0, &e, &err),
					 SC_ECORRUPT);
			assert_non_null(strstr(err.message, "position 3"));
		}
		sc_query_close(q);
	}
	/* A tag of 4097 bytes at position 3. */
	size_t big = SC_EVENT_FIELD_MAX + 1;
	uint8_t *rec = malloc(big + 16);
	assert_non_null(rec);
	size_t r = 0;
	rec[r++] = 0x0a;
	rec[r++] = 1;
	rec[r++] = 'x';
	rec[r++] = 0x10;
	rec[r++] = 4;
	rec[r++] = 0x3a;
	rec[r++] = (uint8_t)(0x80 | (big & 0x7f));
	rec[r++] = (uint8_t)(big >> 7);
	memset(rec + r, 't', big);
	r += big;
	put_record(s, 3, rec, r);
	free(rec);
	sc_query *q = open_query(s, &skip[0]);
	assert_int_equal(sc_query_next(q, 0, &e, &err), 0);
	assert_int_equal(e->position, 2);
	assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
	assert_non_null(strstr(err.message, "tag out of limits"));
	sc_query_close(q);
	sc_store_close(s);
}

/* ---- index batches ------------------------------------------------------- */

/* The tags of event `pos` in test_index_batches: "dense" on every event
 * (its events on the same and adjacent pages), "far" on every 37th (each
 * on a page of its own), "d" (a prefix of "dense": rows of another key
 * length between them) on every 3rd, "rare" on two events only. */
static size_t batch_tags(uint64_t pos, uint64_t n, sc_str *tags)
{
	size_t k = 0;
	tags[k++] = (sc_str){"dense", 5};
	if (pos % 37 == 0)
		tags[k++] = (sc_str){"far", 3};
	if (pos % 3 == 0)
		tags[k++] = (sc_str){"d", 1};
	if (pos == n / 2 || pos == n - 1)
		tags[k++] = (sc_str){"rare", 4};
	return k;
}

static bool batch_has(uint64_t pos, uint64_t n, sc_str tag)
{
	sc_str tags[4];
	size_t k = batch_tags(pos, n, tags);
	for (size_t i = 0; i < k; i++)
		if (str_is(tags[i], tag))
			return true;
	return false;
}

/* Read q to its end (finite) or to ETIMEDOUT (live, timeout 0), `max`
 * events a call (1: sc_query_next), checking each against the model. */
static void check_tag_answer(sc_query *q, sc_str tag, uint64_t from, uint64_t n,
			     bool live, size_t max)
{
	uint64_t want = from ? from : 1;
	for (;;) {
		const sc_event *evs[300];
		size_t got = 0;
		sc_error err;
		int rc;
		if (max == 1) {
			rc = sc_query_next(q, 0, &evs[0], &err);
			got = !rc && evs[0];
		} else {
			rc = sc_query_next_batch(q, 0, evs, max, &got, &err);
		}
		if (live && rc == ETIMEDOUT)
			break;
		if (rc)
			fprintf(stderr, "query: %s\n", err.message);
		assert_int_equal(rc, 0);
		if (!got) {
			assert_false(live);
			break;
		}
		assert_true(got <= max);
		for (size_t i = 0; i < got; i++) {
			while (want <= n && !batch_has(want, n, tag))
				want++;
			assert_int_equal(evs[i]->position, want);
			assert_int_equal(evs[i]->nattrs, 1);
			assert_int_equal(evs[i]->attrs[0].value.u.s.len, 100);
			assert_int_equal(evs[i]->attrs[0].value.u.s.ptr[0],
					 'a' + (int)(want % 26));
			assert_true(batch_has(want, n, tag));
			want++;
		}
	}
	while (want <= n && !batch_has(want, n, tag))
		want++;
	assert_true(want > n);
}

/* Tag queries whose index part takes more than one read of positions
 * (BATCH_EVENTS) and more than one batch, each followed by the
 * unindexed tail: a tag on every event, one on every 37th, a tag whose
 * key is a prefix of another's, and one whose index lists 300 events
 * that do not carry it before the two that do (rows another value of
 * its key id would have: whole batches of them match nothing, and the
 * query reads on). Finite and live, from several positions, through
 * sc_query_next and batches of several sizes. */
static void test_index_batches(void **state)
{
	SC_UNUSED(state);
	const uint64_t n = short_run ? 1200 : 3000;
	sc_store *s = new_store(500);
	char val[100];
	for (uint64_t pos = 1; pos <= n; pos++) {
		memset(val, 'a' + (int)(pos % 26), sizeof val);
		sc_attr a = {
		    {"v", 1},
		    {.type = SC_VALUE_STRING, .u.s = {val, sizeof val}}};
		sc_str tags[4];
		sc_event ev = {.entity = {"x", 1},
			       .type = SC_EVENT_SET,
			       .attrs = &a,
			       .nattrs = 1};
		ev.tags = tags;
		ev.ntags = batch_tags(pos, n, tags);
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	}
	uint64_t through = tag_through(s);
	assert_true(through > n / 2 && through < n);
	/* Rows of "rare" for events 1..300, none of which carries it. */
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	for (uint64_t pos = 1; pos <= 300; pos++) {
		uint8_t kb[12];
		memcpy(kb, "rare", 4);
		sc_be64_put(kb + 4, pos);
		MDB_val k = {sizeof kb, kb}, v = {0, NULL};
		assert_int_equal(mdb_put(txn, s->dbi_tags, &k, &v, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	const sc_str tags[] = {{"dense", 5}, {"far", 3}, {"d", 1}, {"rare", 4}};
	const uint64_t froms[] = {0, 2, 300, n / 2, through, through + 1};
	const size_t maxes[] = {1, 7, 256, 300};
	for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++)
		for (size_t f = 0; f < sizeof froms / sizeof froms[0]; f++)
			for (size_t m = 0; m < 4; m++) {
				bool live = (f + m) % 2;
				sc_query_spec spec = {.kind = SC_QUERY_TAG,
						      .key = tags[t],
						      .from = froms[f],
						      .live = live,
						      .poll_ms = -1};
				sc_query *q = open_query(s, &spec);
				check_tag_answer(q, tags[t], froms[f], n, live,
						 maxes[m]);
				sc_query_close(q);
			}
	sc_store_close(s);
}

/* A position the index names but the log lacks (damage) is reported as
 * SC_ECORRUPT whether the query reaches it by stepping the cursor (the
 * tag on every event) or by a search (on every 20th), after the events
 * before it are delivered. */
static void test_index_gap(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(1);
	sc_str tags[2] = {{"every", 5}, {"twenty", 6}};
	for (int i = 1; i <= 60; i++) {
		sc_event ev = {.entity = {"x", 1},
			       .type = SC_EVENT_DELETE,
			       .tags = tags,
			       .ntags = i % 20 == 0 ? 2 : 1};
		assert_int_equal(sc_store_append(s, &ev, 1, NULL, NULL), 0);
	}
	assert_int_equal(tag_through(s), 60);
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	uint8_t kb[8];
	sc_be64_put(kb, 40);
	MDB_val k = {8, kb};
	assert_int_equal(mdb_del(txn, s->dbi_events, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	for (int t = 0; t < 2; t++) {
		sc_query_spec spec = {.kind = SC_QUERY_TAG, .key = tags[t]};
		sc_query *q = open_query(s, &spec);
		uint64_t step = t ? 20 : 1, want = step;
		const sc_event *e;
		sc_error err;
		int rc;
		while ((rc = sc_query_next(q, 0, &e, &err)) == 0) {
			assert_non_null(e);
			assert_int_equal(e->position, want);
			want += step;
		}
		assert_int_equal(rc, SC_ECORRUPT);
		assert_int_equal(want, 40);
		assert_int_equal(sc_query_position(q), 40 - step);
		assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
		sc_query_close(q);
	}
	sc_store_close(s);
}

/* An events key that is not 8 bytes (damage) sorts where LMDB's default
 * comparison puts it, as the store's comparison of events keys must (a
 * 9-byte key starting with position 3: between 3 and 4); a query that
 * meets it keeps reporting it. */
static void test_odd_events_key(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(4096);
	sc_str tag = {"t", 1};
	append_deletes(s, 5, (sc_str){NULL, 0}, &tag, 1);
	MDB_txn *txn;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	uint8_t kb[9] = {0};
	sc_be64_put(kb, 3);
	MDB_val k = {9, kb}, v = {1, "x"};
	assert_int_equal(mdb_put(txn, s->dbi_events, &k, &v, 0), 0);
	/* Its neighbours in the tree. */
	MDB_cursor *cur;
	assert_int_equal(mdb_cursor_open(txn, s->dbi_events, &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_SET), 0);
	MDB_val nk, nv;
	assert_int_equal(mdb_cursor_get(cur, &nk, &nv, MDB_PREV), 0);
	assert_int_equal(nk.mv_size, 8);
	assert_int_equal(sc_be64_get(nk.mv_data), 3);
	assert_int_equal(mdb_cursor_get(cur, &nk, &nv, MDB_NEXT), 0);
	assert_int_equal(mdb_cursor_get(cur, &nk, &nv, MDB_NEXT), 0);
	assert_int_equal(nk.mv_size, 8);
	assert_int_equal(sc_be64_get(nk.mv_data), 4);
	mdb_cursor_close(cur);
	assert_int_equal(mdb_txn_commit(txn), 0);
	/* A query that meets it delivers the events before it, then reports
	 * the damage at every later call: it never goes on past it. */
	sc_query_spec from1 = {.kind = SC_QUERY_TAG, .key = tag, .from = 1};
	sc_query *q = open_query(s, &from1);
	const sc_event *e;
	for (uint64_t want = 1; want <= 3; want++) {
		assert_int_equal(sc_query_next(q, 0, &e, NULL), 0);
		assert_non_null(e);
		assert_int_equal(e->position, want);
	}
	sc_error err;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sc_query_next(q, 0, &e, &err), SC_ECORRUPT);
		assert_non_null(strstr(err.message, "damaged"));
	}
	sc_query_close(q);
	/* A query that starts past it reads on in order. */
	sc_query_spec spec = {.kind = SC_QUERY_TAG, .key = tag, .from = 4};
	q = open_query(s, &spec);
	for (uint64_t want = 4; want <= 6; want++) {
		assert_int_equal(sc_query_next(q, 0, &e, NULL), 0);
		if (want == 6)
			assert_null(e);
		else
			assert_int_equal(e->position, want);
	}
	sc_query_close(q);
	sc_store_close(s);
}

/* The other process of test_other_process: 60 appends to the store in
 * `dir`, the odd ones tagged "odd". Uses nothing of the parent's store. */
static int append_odd(void *dir, int fd)
{
	(void)fd;
	sc_store *c = NULL;
	sc_store_options co = opts(8);
	if (sc_store_open(dir, &co, &c, NULL))
		return 2;
	sc_str tag = {"odd", 3};
	for (int i = 1; i <= 60; i++) {
		sc_event ev = {.entity = {"x", 1},
			       .type = SC_EVENT_DELETE,
			       .tags = &tag,
			       .ntags = (size_t)(i % 2)};
		if (sc_store_append(c, &ev, 1, NULL, NULL))
			return 3;
	}
	sc_store_close(c);
	return 0;
}

/* A live query of a store another process appends to sees its commits by
 * polling; a finite query opened later ends at the other process's last
 * commit. */
static void test_other_process(void **state)
{
	SC_UNUSED(state);
	char dir[256];
	sc_store_options o;
	sc_store *s = new_store_in(dir, sizeof dir, 8, &o);
	sc_query_spec spec = {.kind = SC_QUERY_TAG,
			      .key = {"odd", 3},
			      .live = true,
			      .poll_ms = 5};
	sc_query *q = open_query(s, &spec);
	pid_t pid = tk_child_start(append_odd, dir, NULL);
	for (uint64_t want = 1; want <= 59; want += 2) {
		const sc_event *ev;
		sc_error err;
		int rc = sc_query_next(q, 60000, &ev, &err);
		if (rc)
			fprintf(stderr, "live query: %s\n", err.message);
		assert_int_equal(rc, 0);
		assert_int_equal(ev->position, want);
	}
	assert_true(tk_exited(tk_child_wait(pid), 0));
	const sc_event *ev;
	assert_int_equal(sc_query_next(q, 0, &ev, NULL), ETIMEDOUT);
	sc_query_close(q);
	sc_query_spec fin = {.kind = SC_QUERY_ALL, .from = 58};
	q = open_query(s, &fin);
	for (uint64_t want = 58; want <= 61; want++) {
		assert_int_equal(sc_query_next(q, 0, &ev, NULL), 0);
		if (want == 61)
			assert_null(ev);
		else
			assert_int_equal(ev->position, want);
	}
	sc_query_close(q);
	sc_store_close(s);
}

/* Cancel: a live query returns ECANCELED at once and from then on. */
static void test_cancel(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(0);
	sc_query_spec spec = {.live = true};
	sc_query *q = open_query(s, &spec);
	const sc_event *ev;
	sc_error err;
	assert_int_equal(sc_query_next(q, 0, &ev, &err), ETIMEDOUT);
	assert_int_equal(sc_query_next(q, 1, &ev, &err), ETIMEDOUT);
	sc_query_cancel(q);
	assert_int_equal(sc_query_next(q, -1, &ev, &err), ECANCELED);
	assert_null(ev);
	assert_int_equal(sc_query_next(q, -1, &ev, &err), ECANCELED);
	sc_query_close(q);
	sc_query_cancel(NULL);
	sc_query_close(NULL);
	sc_store_close(s);
}

static void test_bad_arguments(void **state)
{
	SC_UNUSED(state);
	sc_store *s = new_store(0);
	sc_query *q = NULL;
	sc_error err;
	char big[SC_EVENT_FIELD_MAX + 1];
	memset(big, 't', sizeof big);
	sc_query_spec bad[] = {
	    {.kind = SC_QUERY_TAG, .key = {"", 0}},
	    {.kind = SC_QUERY_TAG, .key = {big, sizeof big}},
	    {.kind = SC_QUERY_PARTITION, .key = {NULL, 3}},
	    {.kind = SC_QUERY_ENTITY, .key = {big, SC_ENTITY_ID_MAX + 1}},
	    {.kind = (sc_query_kind)7},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(sc_query_open(s, &bad[i], &q, &err),
				 SC_EINVAL);
		assert_null(q);
		assert_true(err.message[0] != '\0');
	}
	assert_int_equal(sc_query_open(NULL, &bad[0], &q, &err), SC_EINVAL);
	sc_query_spec ok = {.kind = SC_QUERY_TAG, .key = {big, 4096}};
	assert_int_equal(sc_query_open(s, &ok, &q, &err), 0);
	const sc_event *evs[1];
	size_t n;
	assert_int_equal(sc_query_next_batch(q, 0, evs, 0, &n, &err),
			 SC_EINVAL);
	assert_int_equal(sc_query_next_batch(q, 0, evs, 1, &n, &err), 0);
	assert_int_equal(n, 0);
	sc_query_close(q);
	sc_store_close(s);
}

static int setup(void **state)
{
	SC_UNUSED(state);
	seed = tk_seed("test_query");
	short_run = getenv("SC_TEST_SHORT") != NULL;
	root = tk_tmproot_create("test_query");
	assert_non_null(root);
	values_init();
	entities_init();
	return 0;
}

static int teardown(void **state)
{
	SC_UNUSED(state);
	values_free();
	return tk_tmproot_remove();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_partial_index),
	    cmocka_unit_test(test_upgrade_build_steps),
	    cmocka_unit_test(test_missing_index_refused),
	    cmocka_unit_test(test_format3_store),
	    cmocka_unit_test(test_verify_indexes),
	    cmocka_unit_test(test_damaged_record),
	    cmocka_unit_test(test_record_over_limit),
	    cmocka_unit_test(test_large_batches),
	    cmocka_unit_test(test_tail_peek),
	    cmocka_unit_test(test_index_batches),
	    cmocka_unit_test(test_index_gap),
	    cmocka_unit_test(test_odd_events_key),
	    cmocka_unit_test(test_other_process),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
