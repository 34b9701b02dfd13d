/*
 * Projectors: registration refusals (bad arguments, out of memory) leave
 * the set of projectors as it was; removal; a refusing projector aborts
 * the append with SC_EPROJECTOR naming it, the event and its message, and
 * the store keeps the model's state; offsets (sc_store_projector_position)
 * follow the commits and a damaged offset is reported as such.
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

#include <lmdb.h>

#include "statecache/store.h"
#include "statecache/testing.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#define ENTITIES 20

typedef struct counter {
	unsigned applied;   /* events seen by apply */
	unsigned commits;   /* commit calls */
	unsigned rollbacks; /* rollback calls */
	uint64_t refuse_at; /* position whose event apply refuses; 0: none */
	bool with_message;  /* the refusal fills the sc_error */
	bool damage_offset; /* apply writes a 3-byte "projector/bad" */
} counter;

typedef struct fixture {
	char root[64];
	sc_store *store;
	tk_refstate *model;
	uint64_t seed;
	uint64_t next; /* next event number of the stream */
} fixture;

static int count_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
		       sc_error *err)
{
	counter *c = ctx;
	if (c->refuse_at && ev->position == c->refuse_at) {
		if (c->with_message) {
			snprintf(err->message, sizeof err->message,
				 "read model rejects %.*s", (int)ev->entity.len,
				 ev->entity.ptr);
			err->code = SC_EINVAL;
			return SC_EINVAL;
		}
		return ENOSPC;
	}
	if (c->damage_offset) {
		MDB_dbi meta;
		int rc = mdb_dbi_open(txn, "meta", 0, &meta);
		if (rc)
			return rc;
		MDB_val k = {sizeof "projector/bad" - 1, "projector/bad"},
			v = {3, "abc"};
		rc = mdb_put(txn, meta, &k, &v, 0);
		if (rc)
			return rc;
	}
	c->applied++;
	return 0;
}

static void count_commit(void *ctx)
{
	((counter *)ctx)->commits++;
}

static void count_rollback(void *ctx)
{
	((counter *)ctx)->rollbacks++;
}

static sc_projector projector_of(const char *name, counter *c)
{
	sc_projector p = {0};
	p.name = name;
	p.apply = count_apply;
	p.commit = count_commit;
	p.rollback = count_rollback;
	p.ctx = c;
	return p;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	sc_store_options o = {0};
	f->store = tk_store_create(f->root, sizeof f->root, &o);
	f->model = tk_refstate_new();
	assert_non_null(f->model);
	f->seed = tk_seed("test_projector");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_testing_fail_alloc_after(-1);
	sc_store_close(f->store);
	tk_refstate_free(f->model);
	bool removed = tk_rm_rf(f->root);
	free(f);
	return removed ? 0 : -1;
}

/* Append `n` events of the stream one call; on success fold them into the
 * model. Returns the append's code. */
static int append_n(fixture *f, size_t n, sc_error *err)
{
	static tk_event te[8];
	sc_event evs[8];
	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		tk_event_gen(f->seed, f->next + i, ENTITIES,
			     5000 + (int64_t)(f->next + i), &te[i]);
		evs[i] = te[i].ev;
	}
	uint64_t first = 0;
	int rc = sc_store_append(f->store, evs, n, &first, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		evs[i].position = first + i;
		tk_refstate_apply(f->model, &evs[i]);
	}
	f->next += n;
	return 0;
}

static void assert_state(fixture *f, uint64_t last)
{
	assert_int_equal(sc_store_last_position(f->store), last);
	assert_true(tk_cache_matches(sc_store_cache(f->store), f->model));
}

static void test_add_refusals(void **state)
{
	fixture *f = *state;
	counter c = {0};
	sc_error err;

	assert_int_equal(sc_store_add_projector(f->store, NULL, &err),
			 SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	assert_non_null(strstr(err.message, "name of 1..255 bytes"));

	sc_projector p = projector_of("", &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "name of 1..255 bytes"));

	p = projector_of(NULL, &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), SC_EINVAL);

	char longname[257];
	memset(longname, 'n', 256);
	longname[256] = '\0';
	p = projector_of(longname, &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), SC_EINVAL);

	p = projector_of("noapply", &c);
	p.apply = NULL;
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "apply function"));

	/* Out of memory copying the name, then growing the array. */
	p = projector_of("oom", &c);
	for (long at = 0; at < 2; at++) {
		sc_testing_fail_alloc_after(at);
		assert_int_equal(sc_store_add_projector(f->store, &p, &err),
				 ENOMEM);
		sc_testing_fail_alloc_after(-1);
		assert_int_equal(err.code, ENOMEM);
		assert_non_null(
		    strstr(err.message, "out of memory adding projector oom"));
	}

	/* None of them was registered: an append calls nobody. */
	assert_int_equal(append_n(f, 3, &err), 0);
	assert_int_equal(c.applied, 0);
	assert_int_equal(c.commits, 0);
	assert_int_equal(sc_store_remove_projector(f->store, "oom"),
			 SC_NOTFOUND);
	uint64_t pos = 99;
	assert_int_equal(
	    sc_store_projector_position(f->store, "oom", &pos, &err), 0);
	assert_int_equal(pos, 0);
	assert_state(f, 3);

	/* A name of exactly 255 bytes is accepted. */
	longname[255] = '\0';
	p = projector_of(longname, &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), 0);
	assert_int_equal(append_n(f, 2, &err), 0);
	assert_int_equal(c.applied, 2);
	assert_int_equal(
	    sc_store_projector_position(f->store, longname, &pos, &err), 0);
	assert_int_equal(pos, 5);
	assert_int_equal(sc_store_remove_projector(f->store, longname), 0);
}

static void test_remove(void **state)
{
	fixture *f = *state;
	counter a = {0}, b = {0}, c = {0};
	sc_error err;
	sc_projector pa = projector_of("a", &a), pb = projector_of("b", &b),
		     pc = projector_of("c", &c);
	assert_int_equal(sc_store_add_projector(f->store, &pa, &err), 0);
	assert_int_equal(sc_store_add_projector(f->store, &pb, &err), 0);
	assert_int_equal(sc_store_add_projector(f->store, &pc, &err), 0);

	assert_int_equal(sc_store_remove_projector(NULL, "a"), SC_EINVAL);
	assert_int_equal(sc_store_remove_projector(f->store, NULL), SC_EINVAL);
	assert_int_equal(sc_store_remove_projector(f->store, "zz"),
			 SC_NOTFOUND);

	assert_int_equal(append_n(f, 2, &err), 0);
	assert_int_equal(sc_store_remove_projector(f->store, "b"), 0);
	assert_int_equal(sc_store_remove_projector(f->store, "b"), SC_NOTFOUND);
	assert_int_equal(append_n(f, 3, &err), 0);
	assert_int_equal(a.applied, 5);
	assert_int_equal(b.applied, 2);
	assert_int_equal(c.applied, 5);
	assert_int_equal(a.commits, 2);
	assert_int_equal(b.commits, 1);

	/* The removed one's offset stays where its last commit left it. */
	uint64_t pos = 0;
	assert_int_equal(sc_store_projector_position(f->store, "b", &pos, &err),
			 0);
	assert_int_equal(pos, 2);
	assert_int_equal(sc_store_projector_position(f->store, "a", &pos, &err),
			 0);
	assert_int_equal(pos, 5);
	assert_int_equal(sc_store_remove_projector(f->store, "a"), 0);
	assert_int_equal(sc_store_remove_projector(f->store, "c"), 0);
	assert_state(f, 5);
}

static void test_refusal_aborts_append(void **state)
{
	fixture *f = *state;
	counter c = {0};
	sc_error err;
	sc_projector p = projector_of("picky", &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), 0);
	assert_int_equal(append_n(f, 2, &err), 0);
	assert_state(f, 2);

	/* The second event of the next batch (position 4) is refused with a
	 * message: nothing of the batch is committed. */
	c.refuse_at = 4;
	c.with_message = true;
	assert_int_equal(append_n(f, 3, &err), SC_EPROJECTOR);
	assert_int_equal(err.code, SC_EPROJECTOR);
	assert_non_null(strstr(err.message, "projector picky failed"));
	assert_non_null(strstr(err.message, "event 1 (position 4)"));
	assert_non_null(strstr(err.message, "read model rejects"));
	assert_int_equal(c.rollbacks, 1);
	assert_state(f, 2);

	/* Refused without a message: the code's description stands in. */
	c.with_message = false;
	c.refuse_at = 3;
	assert_int_equal(append_n(f, 1, &err), SC_EPROJECTOR);
	assert_non_null(strstr(err.message, "event 0 (position 3)"));
	assert_non_null(strstr(err.message, sc_strerror(ENOSPC)));
	assert_int_equal(c.rollbacks, 2);
	assert_state(f, 2);

	uint64_t pos = 0;
	assert_int_equal(
	    sc_store_projector_position(f->store, "picky", &pos, &err), 0);
	assert_int_equal(pos, 2);

	/* Accepted again, the same events commit at the same positions. */
	c.refuse_at = 0;
	assert_int_equal(append_n(f, 3, &err), 0);
	assert_state(f, 5);
	assert_int_equal(
	    sc_store_projector_position(f->store, "picky", &pos, &err), 0);
	assert_int_equal(pos, 5);
	/* 2 + 3 committed, plus position 3 of the aborted batch of three
	 * (applied before position 4 was refused, then rolled back). */
	assert_int_equal(c.applied, 6);
	assert_int_equal(c.commits, 2);
	assert_int_equal(sc_store_remove_projector(f->store, "picky"), 0);
}

static void test_position_refusals_and_damage(void **state)
{
	fixture *f = *state;
	sc_error err;
	uint64_t pos = 7;
	assert_int_equal(sc_store_projector_position(NULL, "x", &pos, &err),
			 SC_EINVAL);
	assert_non_null(strstr(err.message, "name of 1..255 bytes"));
	assert_int_equal(sc_store_projector_position(f->store, "", &pos, &err),
			 SC_EINVAL);
	assert_int_equal(
	    sc_store_projector_position(f->store, NULL, &pos, &err), SC_EINVAL);
	assert_int_equal(sc_store_projector_position(f->store, "x", NULL, &err),
			 SC_EINVAL);
	char longname[257];
	memset(longname, 'n', 256);
	longname[256] = '\0';
	assert_int_equal(
	    sc_store_projector_position(f->store, longname, &pos, &err),
	    SC_EINVAL);

	counter c = {0};
	c.damage_offset = true;
	sc_projector p = projector_of("writer", &c);
	assert_int_equal(sc_store_add_projector(f->store, &p, &err), 0);
	assert_int_equal(append_n(f, 1, &err), 0);
	assert_int_equal(
	    sc_store_projector_position(f->store, "bad", &pos, &err),
	    SC_ECORRUPT);
	assert_int_equal(err.code, SC_ECORRUPT);
	assert_non_null(strstr(err.message, "projector bad is 3 bytes"));
	assert_non_null(strstr(err.message, "expected 8"));
	assert_int_equal(pos, 0);
	assert_int_equal(
	    sc_store_projector_position(f->store, "writer", &pos, &err), 0);
	assert_int_equal(pos, 1);
	assert_state(f, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_add_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusal_aborts_append, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_position_refusals_and_damage,
					    setup, teardown),
	};
	if (!tk_tmproot_create("test_projector"))
		return 1;
	return cmocka_run_group_tests(tests, NULL, tk_tmproot_teardown);
}
