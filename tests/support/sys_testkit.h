/*
 * The test kit for what a test needs of the system: one temporary
 * directory per program that holds its stores, and child processes (a
 * store shared with another process, a process killed at a kill point).
 * Part of the test kit library (libsctest.a).
 *
 * Not thread-safe: create, name and remove directories from the thread
 * that runs the tests.
 */
#ifndef STATECACHE_TESTS_SYS_TESTKIT_H
#define STATECACHE_TESTS_SYS_TESTKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

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

/* ---- child processes ------------------------------------------------------
 * For cmocka test programs only (child_testkit.c, which calls cmocka): a
 * fork, pipe or wait that fails fails the running test. */

/*
 * tk_child_start - fork a child that runs f(arg, fd) and _exits with what
 * it returns. Buffered stdio is flushed first, so nothing is written
 * twice. With `up` a pipe runs from the child to the parent: f gets its
 * write end as fd (the read end closed in the child) and *up is the read
 * end (the write end closed in the parent; the caller closes it);
 * without (NULL), fd is -1. Returns the child's pid; wait for it with
 * tk_child_wait.
 */
pid_t tk_child_start(int (*f)(void *arg, int fd), void *arg, int *up);

/* tk_child_wait - wait for the child `pid` to end; its wait status. */
int tk_child_wait(pid_t pid);

/* tk_child_run - tk_child_start without a pipe, then tk_child_wait: the
 * wait status of the child that ran f(arg, -1). */
int tk_child_run(int (*f)(void *arg, int fd), void *arg);

/* tk_exited - true when the wait status `status` is an exit with `code`. */
bool tk_exited(int status, int code);

/* tk_killed - true when the wait status `status` is a death by signal
 * `sig`. */
bool tk_killed(int status, int sig);

/* tk_killpoint_arm - set SC_KILLPOINT to `point` ("" included) in this
 * process (a child about to run or exec the code under test); NULL
 * unsets it. */
void tk_killpoint_arm(const char *point);

#endif
