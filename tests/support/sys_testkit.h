/*
 * Test helpers for what a test needs of the system: one temporary
 * directory per program that holds its stores. Part of the test kit
 * library (libsctest.a).
 *
 * Not thread-safe: create, name and remove directories from the thread
 * that runs the tests.
 */
#ifndef STATECACHE_TESTS_SYS_TESTKIT_H
#define STATECACHE_TESTS_SYS_TESTKIT_H

#include <stdbool.h>
#include <stddef.h>

/*
 * tk_tmproot_create - create a fresh directory /tmp/sc_<name>.XXXXXX, the
 * root below which the program keeps its stores. Returns its path (owned
 * by the kit, valid until tk_tmproot_remove), or NULL with a message on
 * stderr when it cannot be created. One root per process: a second call
 * replaces the first root's name without removing it.
 */
const char *tk_tmproot_create(const char *name);

/* tk_tmproot_dir - the path of a new directory below the root,
 * "<root>/s<N>" with N counting from 0; not created. */
void tk_tmproot_dir(char *out, size_t len);

/* tk_tmproot_remove - remove the root and everything below it. 0 on
 * success; -1 (with a message on stderr) when there is no root or it
 * could not be removed. */
int tk_tmproot_remove(void);

/* tk_tmproot_teardown - tk_tmproot_remove with the signature of a cmocka
 * group teardown; `state` is ignored. */
int tk_tmproot_teardown(void **state);

/* tk_rm_rf - remove `path` and everything below it (rm -rf); true on
 * success, a missing path included; a failure is said on stderr. */
bool tk_rm_rf(const char *path);

#endif
