/*
 * sc_store_backup: a copy taken while another thread appends is a whole
 * committed state of the source. The copy opens, its state equals an
 * independent replay (tests/support/refstate) of the events it holds, its
 * log is the source's log up to its last position P, and its state is the
 * source's state as of P. Plus the destination rules and the file modes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

/* Events per append; every committed state ends on a multiple of it. */
#define BATCH 50
/* Distinct entity ids the events touch. */
#define IDS 300

static const char *root;

static sc_store *open_store(const char *dir, bool create, sc_durability dur)
{
	sc_store_options o = {0};
	o.create = create;
	o.durability = dur;
	o.snapshot_every = 700; /* the copies hold snapshots too */
	o.index_lag = 64;
	return tk_store_open(dir, &o);
}

/* ---- a deterministic event stream -----------------------------------------
 */

typedef struct gen_batch {
	sc_event ev[BATCH];
	sc_attr attrs[BATCH][2];
	char ids[BATCH][16];
	char strs[BATCH][24];
} gen_batch;

/* Batch number b: every event type, ids revisited, string and int values. */
static void gen_fill(gen_batch *g, uint64_t b)
{
	for (size_t i = 0; i < BATCH; i++) {
		uint64_t n = b * BATCH + i;
		sc_event *ev = &g->ev[i];
		memset(ev, 0, sizeof *ev);
		int idlen = snprintf(g->ids[i], sizeof g->ids[i], "e%03u",
				     (unsigned)((n * 7919u) % IDS));
		int slen = snprintf(g->strs[i], sizeof g->strs[i], "v%llu",
				    (unsigned long long)n);
		ev->entity = (sc_str){g->ids[i], (size_t)idlen};
		ev->actor = n % 3 ? (sc_str){"writer", 6} : (sc_str){NULL, 0};
		sc_attr *a = g->attrs[i];
		a[0] = (sc_attr){{"s", 1},
				 {.type = SC_VALUE_STRING,
				  .u.s = {g->strs[i], (size_t)slen}}};
		a[1] = (sc_attr){{"n", 1},
				 {.type = SC_VALUE_INT, .u.i = (int64_t)n}};
		switch (n % 10) {
		case 7:
			ev->type = SC_EVENT_UNSET;
			ev->attrs = a;
			ev->nattrs = 1;
			break;
		case 8:
			ev->type = SC_EVENT_REPLACE;
			ev->attrs = a + 1;
			ev->nattrs = 1;
			break;
		case 9:
			ev->type = SC_EVENT_DELETE;
			break;
		default:
			ev->type = SC_EVENT_SET;
			ev->attrs = a;
			ev->nattrs = 2;
		}
	}
}

static void append_batch(sc_store *s, uint64_t b)
{
	static gen_batch g; /* one appending thread at a time */
	gen_fill(&g, b);
	sc_error err;
	int rc = sc_store_append(s, g.ev, BATCH, NULL, &err);
	if (rc)
		fprintf(stderr, "append: %s\n", err.message);
	assert_int_equal(rc, 0);
}

/* ---- the appending thread --------------------------------------------------
 */

typedef struct writer {
	sc_store *store;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t batches; /* appended so far (under mu) */
	bool stop;	  /* under mu */
	int failed;	  /* an append failed (under mu) */
} writer;

static void *writer_main(void *arg)
{
	writer *w = arg;
	static gen_batch g;
	for (uint64_t b = 1;; b++) {
		pthread_mutex_lock(&w->mu);
		bool stop = w->stop;
		pthread_mutex_unlock(&w->mu);
		if (stop)
			break;
		gen_fill(&g, b);
		sc_error err;
		int rc = sc_store_append(w->store, g.ev, BATCH, NULL, &err);
		pthread_mutex_lock(&w->mu);
		if (rc) {
			fprintf(stderr, "writer: %s\n", err.message);
			w->failed = rc;
			w->stop = true;
		} else {
			w->batches++;
		}
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		if (rc)
			break;
	}
	return NULL;
}

/* Wait until the writer appended at least `n` batches (or failed). */
static uint64_t writer_wait(writer *w, uint64_t n)
{
	pthread_mutex_lock(&w->mu);
	while (w->batches < n && !w->failed)
		pthread_cond_wait(&w->cv, &w->mu);
	uint64_t b = w->batches;
	int failed = w->failed;
	pthread_mutex_unlock(&w->mu);
	assert_int_equal(failed, 0);
	return b;
}

/* ---- checks -------------------------------------------------------------- */

static void assert_mode(const char *path, mode_t want)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	if ((st.st_mode & 0777) != want)
		fprintf(stderr, "%s: mode %o, want %o\n", path,
			(unsigned)(st.st_mode & 0777), (unsigned)want);
	assert_int_equal(st.st_mode & 0777, want);
}

static int ref_apply(void *ctx, const sc_event *ev)
{
	tk_refstate_apply(ctx, ev);
	return 0;
}

/* A reference state folded from `s`'s events 1..upto. */
static tk_refstate *replay(sc_store *s, uint64_t upto)
{
	tk_refstate *rs = tk_refstate_new();
	sc_error err;
	assert_int_equal(sc_store_events(s, 1, upto, ref_apply, rs, &err), 0);
	return rs;
}

static void assert_view_equals(sc_store *s, const tk_refstate *rs,
			       const char *what)
{
	tk_store_check_model(s, rs, what);
}

/* The raw record at `pos` in `s`'s log: 0 and *v filled, or MDB_NOTFOUND. */
static int raw_record(MDB_txn *txn, MDB_dbi dbi, uint64_t pos, MDB_val *v)
{
	uint8_t key[8];
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(pos >> (56 - 8 * i));
	MDB_val k = {sizeof key, key};
	return mdb_get(txn, dbi, &k, v);
}

/* The copy's log is byte for byte the source's log up to p, and ends
 * there. */
static void assert_log_prefix(sc_store *src, sc_store *copy, uint64_t p)
{
	MDB_txn *ts, *tc;
	MDB_dbi ds, dc;
	assert_int_equal(
	    mdb_txn_begin(sc_store_env(src), NULL, MDB_RDONLY, &ts), 0);
	assert_int_equal(
	    mdb_txn_begin(sc_store_env(copy), NULL, MDB_RDONLY, &tc), 0);
	assert_int_equal(mdb_dbi_open(ts, "events", 0, &ds), 0);
	assert_int_equal(mdb_dbi_open(tc, "events", 0, &dc), 0);
	for (uint64_t pos = 1; pos <= p; pos++) {
		MDB_val a, b;
		assert_int_equal(raw_record(ts, ds, pos, &a), 0);
		assert_int_equal(raw_record(tc, dc, pos, &b), 0);
		assert_int_equal(a.mv_size, b.mv_size);
		assert_memory_equal(a.mv_data, b.mv_data, a.mv_size);
	}
	MDB_val none;
	assert_int_equal(raw_record(tc, dc, p + 1, &none), MDB_NOTFOUND);
	mdb_txn_abort(ts);
	mdb_txn_abort(tc);
}

/* Everything a copy of `src` must be: private modes, opens, equals a
 * replay of its own events and the source as of its last position. */
static uint64_t check_copy(sc_store *src, const char *dest, uint64_t at_least)
{
	char path[512];
	assert_mode(dest, 0700);
	snprintf(path, sizeof path, "%s/data.mdb", dest);
	assert_mode(path, 0600);
	snprintf(path, sizeof path, "%s/data.mdb.partial", dest);
	assert_int_equal(access(path, F_OK), -1);

	sc_store *copy = open_store(dest, false, SC_DURABILITY_FULL);
	uint64_t p = sc_store_last_position(copy);
	assert_true(p >= at_least);
	assert_true(p <= sc_store_last_position(src));
	assert_int_equal(p % BATCH, 0); /* a committed batch boundary */

	assert_log_prefix(src, copy, p);
	tk_refstate *own = replay(copy, 0);
	assert_view_equals(copy, own, "copy against a replay of its log");
	tk_refstate_free(own);
	tk_refstate *asof = replay(src, p);
	assert_view_equals(copy, asof, "copy against the source as of P");
	tk_refstate_free(asof);
	sc_store_close(copy);
	return p;
}

/* ---- tests --------------------------------------------------------------- */

/* Back up while a second thread appends; the writer is known to have
 * appended `before` batches when the backup starts and goes on until
 * some batches after it returned. */
static void backup_during_appends(unsigned flags, sc_durability dur)
{
	char src_dir[256], dest[256];
	tk_tmproot_dir(src_dir, sizeof src_dir);
	tk_tmproot_dir(dest, sizeof dest);
	sc_store *src = open_store(src_dir, true, dur);
	append_batch(src, 0);

	writer w = {.store = src};
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);

	const uint64_t before = 20;
	writer_wait(&w, before);
	sc_error err;
	int rc = sc_store_backup(src, dest, flags, &err);
	if (rc)
		fprintf(stderr, "backup: %s\n", err.message);
	uint64_t after = writer_wait(&w, 0);
	/* Let the writer append past the copy, so "as of P" is not "now". */
	writer_wait(&w, after + 3);
	pthread_mutex_lock(&w.mu);
	w.stop = true;
	pthread_mutex_unlock(&w.mu);
	pthread_join(t, NULL);
	assert_int_equal(w.failed, 0);
	assert_int_equal(rc, 0);

	/* The batch appended first and the `before` ones the writer had
	 * finished are in the copy. */
	uint64_t p = check_copy(src, dest, (1 + before) * BATCH);
	/* Nothing appended after the backup returned is in it: at most the
	 * batches the writer had finished then, and the one it was in (its
	 * commit may precede its append's return). */
	assert_true(p <= (2 + after) * BATCH);
	assert_true(sc_store_last_position(src) >= (1 + after + 3) * BATCH);
	fprintf(stderr,
		"backup%s: copy at position %llu; %llu batches "
		"appended while it ran\n",
		flags ? " (compact)" : "", (unsigned long long)p,
		(unsigned long long)(after - before));
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	sc_store_close(src);
}

static void test_backup_during_appends(void **state)
{
	(void)state;
	backup_during_appends(0, SC_DURABILITY_NOSYNC);
}

static void test_backup_compact_during_appends(void **state)
{
	(void)state;
	backup_during_appends(SC_BACKUP_COMPACT, SC_DURABILITY_FULL);
}

/* An existing empty directory is accepted and keeps its mode; the source
 * stays usable and a second backup of it is the same log. */
static void test_backup_into_empty_dir(void **state)
{
	(void)state;
	char src_dir[256], dest[256], dest2[256];
	tk_tmproot_dir(src_dir, sizeof src_dir);
	tk_tmproot_dir(dest, sizeof dest);
	tk_tmproot_dir(dest2, sizeof dest2);
	sc_store *src = open_store(src_dir, true, SC_DURABILITY_FULL);
	for (uint64_t b = 0; b < 4; b++)
		append_batch(src, b);
	assert_int_equal(mkdir(dest, 0750), 0);
	assert_int_equal(chmod(dest, 0750), 0);
	sc_error err;
	assert_int_equal(sc_store_backup(src, dest, SC_BACKUP_COMPACT, &err),
			 0);
	assert_mode(dest, 0750);
	append_batch(src, 4);
	assert_int_equal(sc_store_backup(src, dest2, 0, &err), 0);
	check_copy(src, dest2, 5 * BATCH);
	sc_store *c = open_store(dest, false, SC_DURABILITY_FULL);
	assert_int_equal(sc_store_last_position(c), 4 * BATCH);
	sc_store_close(c);
	sc_store_close(src);
}

static void test_backup_refuses_bad_destinations(void **state)
{
	(void)state;
	char src_dir[256], dest[256], path[512];
	tk_tmproot_dir(src_dir, sizeof src_dir);
	tk_tmproot_dir(dest, sizeof dest);
	sc_store *src = open_store(src_dir, true, SC_DURABILITY_NOSYNC);
	append_batch(src, 0);
	sc_error err;

	/* A non-empty directory is never written to. */
	assert_int_equal(mkdir(dest, 0700), 0);
	snprintf(path, sizeof path, "%s/keep", dest);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(sc_store_backup(src, dest, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "not empty"));
	snprintf(path, sizeof path, "%s/data.mdb", dest);
	assert_int_equal(access(path, F_OK), -1);
	/* The source directory itself is not empty either. */
	assert_int_equal(sc_store_backup(src, src_dir, 0, &err), SC_EINVAL);

	/* A file. */
	snprintf(path, sizeof path, "%s/keep", dest);
	assert_int_equal(sc_store_backup(src, path, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "not a directory"));

	/* A parent that does not exist: the errno, naming the path. */
	snprintf(path, sizeof path, "%s/no/such", root);
	assert_int_equal(sc_store_backup(src, path, 0, &err), ENOENT);
	assert_non_null(strstr(err.message, path));

	/* Bad arguments. */
	tk_tmproot_dir(path, sizeof path);
	assert_int_equal(sc_store_backup(src, path, 0x80, &err), SC_EINVAL);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(sc_store_backup(src, "", 0, &err), SC_EINVAL);
	assert_int_equal(sc_store_backup(NULL, path, 0, &err), SC_EINVAL);
	sc_store_close(src);
}

static int setup(void **state)
{
	(void)state;
	root = tk_tmproot_create("test_backup");
	return root ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_backup_during_appends),
	    cmocka_unit_test(test_backup_compact_during_appends),
	    cmocka_unit_test(test_backup_into_empty_dir),
	    cmocka_unit_test(test_backup_refuses_bad_destinations),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
