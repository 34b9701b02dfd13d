/*
 * sc_store_backup refusals and the existing-directory path: every refused
 * call returns its code and a message naming the cause, leaves the source
 * store as it was and the destination as it found it; a compacted copy
 * into an existing empty directory opens and holds the model's state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "statecache/store.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#define EVENTS	 200
#define ENTITIES 40

static const char *root;
static char src[512];
static sc_store *store;
static tk_refstate *model;
static uint64_t seed;

static sc_store *open_dir(const char *dir, bool create)
{
	sc_store_options o = {0};
	o.create = create;
	return tk_store_open(dir, &o);
}

static int setup(void **state)
{
	(void)state;
	root = tk_tmproot_create("test_backup_errors");
	assert_non_null(root);
	seed = tk_seed("test_backup_errors");
	snprintf(src, sizeof src, "%s/src", root);
	store = open_dir(src, true);
	model = tk_refstate_new();
	assert_non_null(model);
	static tk_event te;
	for (uint64_t i = 0; i < EVENTS; i++) {
		tk_event_gen(seed, i, ENTITIES, 1000 + (int64_t)i, &te);
		tk_store_append_model(store, &te.ev, 1, model);
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sc_store_close(store);
	tk_refstate_free(model);
	return tk_tmproot_remove();
}

/* The source still holds exactly its events and the model's state. */
static void assert_source_unchanged(void)
{
	assert_int_equal(sc_store_last_position(store), EVENTS);
	assert_true(tk_cache_matches(sc_store_cache(store), model));
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static void test_bad_arguments(void **state)
{
	(void)state;
	sc_error err;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/args", root);

	memset(&err, 0, sizeof err);
	assert_int_equal(sc_store_backup(NULL, dest, 0, &err), SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	assert_non_null(strstr(err.message, "destination directory"));

	assert_int_equal(sc_store_backup(store, NULL, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "are required"));
	assert_int_equal(sc_store_backup(store, "", 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "are required"));

	assert_int_equal(sc_store_backup(store, dest, 0x6, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "unknown flags 0x6"));
	assert_non_null(strstr(err.message, "SC_BACKUP_COMPACT"));

	/* A destination whose data.mdb.partial would not fit a path. */
	static char longdir[4200];
	memset(longdir, 'x', sizeof longdir - 1);
	longdir[0] = '/';
	longdir[sizeof longdir - 1] = '\0';
	assert_int_equal(sc_store_backup(store, longdir, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "destination path is too long"));

	assert_false(exists(dest));
	assert_source_unchanged();
}

static void test_destination_is_a_file(void **state)
{
	(void)state;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/a_file", root);
	FILE *f = fopen(dest, "w");
	assert_non_null(f);
	assert_int_equal(fputs("keep", f) >= 0, 1);
	assert_int_equal(fclose(f), 0);

	sc_error err;
	assert_int_equal(sc_store_backup(store, dest, 0, &err), SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	assert_non_null(strstr(err.message, "is not a directory"));
	assert_non_null(strstr(err.message, dest));
	struct stat st;
	assert_int_equal(stat(dest, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 4);

	/* Below a file: mkdir fails with ENOTDIR, named in the message. */
	char below[600];
	snprintf(below, sizeof below, "%s/sub", dest);
	assert_int_equal(sc_store_backup(store, below, 0, &err), ENOTDIR);
	assert_non_null(strstr(err.message, "cannot create the directory"));
	assert_non_null(strstr(err.message, below));
	assert_source_unchanged();
}

static void test_destination_parent_missing(void **state)
{
	(void)state;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/no/such/parent", root);
	sc_error err;
	assert_int_equal(sc_store_backup(store, dest, 0, &err), ENOENT);
	assert_int_equal(err.code, ENOENT);
	assert_non_null(strstr(err.message, "cannot create the directory"));
	assert_non_null(strstr(err.message, strerror(ENOENT)));
	char parent[512];
	snprintf(parent, sizeof parent, "%s/no", root);
	assert_false(exists(parent));
	assert_source_unchanged();
}

static void test_destination_not_empty(void **state)
{
	(void)state;
	char dest[512], inside[600], data[600], partial[600];
	snprintf(dest, sizeof dest, "%s/full", root);
	assert_int_equal(mkdir(dest, 0700), 0);
	snprintf(inside, sizeof inside, "%s/other", dest);
	FILE *f = fopen(inside, "w");
	assert_non_null(f);
	assert_int_equal(fclose(f), 0);

	sc_error err;
	assert_int_equal(sc_store_backup(store, dest, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "is not empty"));
	assert_non_null(strstr(err.message, "never overwrites"));
	/* The directory and what it held are left alone. */
	assert_true(exists(inside));
	snprintf(data, sizeof data, "%s/data.mdb", dest);
	snprintf(partial, sizeof partial, "%s/data.mdb.partial", dest);
	assert_false(exists(data));
	assert_false(exists(partial));
	assert_source_unchanged();
}

/* A compacted copy into a directory that exists and is empty. */
static void test_compact_into_empty_directory(void **state)
{
	(void)state;
	char dest[512], partial[600];
	snprintf(dest, sizeof dest, "%s/empty", root);
	assert_int_equal(mkdir(dest, 0755), 0);

	sc_error err;
	int rc = sc_store_backup(store, dest, SC_BACKUP_COMPACT, &err);
	if (rc)
		fprintf(stderr, "backup: %s\n", err.message);
	assert_int_equal(rc, 0);
	snprintf(partial, sizeof partial, "%s/data.mdb.partial", dest);
	assert_false(exists(partial));

	/* A second backup into it is refused: it is no longer empty. */
	assert_int_equal(sc_store_backup(store, dest, 0, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "is not empty"));

	sc_store *copy = open_dir(dest, false);
	assert_int_equal(sc_store_last_position(copy), EVENTS);
	assert_true(tk_cache_matches(sc_store_cache(copy), model));
	sc_store_close(copy);
	assert_source_unchanged();
}

/* The copy cannot be written whole (a file size limit makes the write
 * fail with EFBIG): the backup fails naming the copy, and removes the
 * partial file and the directory it made. */
static void test_copy_write_fails(void **state)
{
	(void)state;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/toobig", root);
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 4096;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	sc_error err;
	int rc = sc_store_backup(store, dest, 0, &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, prev);
	assert_int_equal(rc, err.code);
	assert_true(rc != 0);
	assert_non_null(strstr(err.message, "backup: copying the store"));
	assert_false(exists(dest));
	assert_source_unchanged();

	/* Into a directory that existed: it is left, empty. */
	assert_int_equal(mkdir(dest, 0700), 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	prev = signal(SIGXFSZ, SIG_IGN);
	rc = sc_store_backup(store, dest, SC_BACKUP_COMPACT, &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, prev);
	assert_true(rc != 0);
	assert_non_null(strstr(err.message, "backup: copying the store"));
	char partial[600];
	snprintf(partial, sizeof partial, "%s/data.mdb.partial", dest);
	assert_false(exists(partial));
	assert_true(exists(dest));
	assert_int_equal(rmdir(dest), 0); /* empty */
	assert_source_unchanged();
}

/* No file descriptor left for the partial file (RLIMIT_NOFILE at the
 * lowest free descriptor): refused naming the file, the directory it made
 * removed. */
static void test_partial_cannot_be_created(void **state)
{
	(void)state;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/nofd", root);
	int lowest = dup(0);
	assert_true(lowest >= 0);
	assert_int_equal(close(lowest), 0);
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)lowest;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	sc_error err;
	int rc = sc_store_backup(store, dest, 0, &err);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(rc, EMFILE);
	assert_int_equal(err.code, EMFILE);
	assert_non_null(strstr(err.message, "backup: cannot create"));
	assert_non_null(strstr(err.message, "data.mdb.partial"));
	assert_false(exists(dest));
	assert_source_unchanged();
}

/* Put (or with v NULL, delete) meta `key` of a live store through its
 * environment: damage the copy check must catch. */
static void damage_meta(sc_store *s, const char *key, const void *v, size_t n)
{
	MDB_txn *txn;
	MDB_dbi meta;
	assert_int_equal(mdb_txn_begin(sc_store_env(s), NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	MDB_val k = {strlen(key), (void *)key}, val = {n, (void *)v};
	if (v)
		assert_int_equal(mdb_put(txn, meta, &k, &val, 0), 0);
	else
		assert_int_equal(mdb_del(txn, meta, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
}

/* A copy that does not open as a store is not reported done: the backup
 * fails naming the check, and removes the copy and its directory. */
static void test_copy_check_refuses(void **state)
{
	(void)state;
	char dir[512], dest[512];
	snprintf(dir, sizeof dir, "%s/damaged", root);
	sc_store *s = open_dir(dir, true);
	static tk_event te;
	tk_event_gen(seed, 0, ENTITIES, 1, &te);
	sc_error err;
	assert_int_equal(sc_store_append(s, &te.ev, 1, NULL, &err), 0);

	damage_meta(s, "format_version", NULL, 0);
	snprintf(dest, sizeof dest, "%s/copy_nover", root);
	assert_int_equal(sc_store_backup(s, dest, 0, &err), SC_ECORRUPT);
	assert_int_equal(err.code, SC_ECORRUPT);
	assert_non_null(strstr(err.message, "is not a store"));
	assert_non_null(strstr(err.message, "format_version: not found"));
	assert_false(exists(dest));

	damage_meta(s, "format_version", "abc", 3);
	snprintf(dest, sizeof dest, "%s/copy_badver", root);
	int rc = sc_store_backup(s, dest, 0, &err);
	assert_true(rc != 0);
	assert_int_equal(err.code, rc);
	assert_non_null(strstr(err.message, "reading the copy's "
					    "format_version"));
	assert_false(exists(dest));
	sc_store_close(s);
	assert_source_unchanged();
}

/* An existing destination that cannot be listed (no descriptor left for
 * opendir): refused naming it, the directory left as it was. */
static void test_destination_cannot_be_read(void **state)
{
	(void)state;
	char dest[512];
	snprintf(dest, sizeof dest, "%s/unlisted", root);
	assert_int_equal(mkdir(dest, 0700), 0);
	int lowest = dup(0);
	assert_true(lowest >= 0);
	assert_int_equal(close(lowest), 0);
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)lowest;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	sc_error err;
	int rc = sc_store_backup(store, dest, 0, &err);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(rc, EMFILE);
	assert_int_equal(err.code, EMFILE);
	assert_non_null(strstr(err.message, "backup: cannot read"));
	assert_non_null(strstr(err.message, dest));
	assert_true(exists(dest));
	assert_int_equal(rmdir(dest), 0); /* still empty */
	assert_source_unchanged();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_destination_is_a_file),
	    cmocka_unit_test(test_destination_parent_missing),
	    cmocka_unit_test(test_destination_not_empty),
	    cmocka_unit_test(test_compact_into_empty_directory),
	    cmocka_unit_test(test_copy_write_fails),
	    cmocka_unit_test(test_partial_cannot_be_created),
	    cmocka_unit_test(test_copy_check_refuses),
	    cmocka_unit_test(test_destination_cannot_be_read),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
