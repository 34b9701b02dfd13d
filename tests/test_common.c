/*
 * common/: error codes and reports (sc_strerror, sc_error_set), and the
 * kill points crash tests arm through SC_KILLPOINT (each case in a child
 * process, which must die by SIGKILL exactly where armed).
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
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "statecache/error.h"
#include "tests/support/sys_testkit.h"

/* ---- errors -------------------------------------------------------------- */

static void test_every_code_has_its_own_message(void **state)
{
	(void)state;
	static const int codes[] = {
	    SC_OK,	 SC_NOTFOUND, SC_EINVAL,   SC_ECORRUPT,
	    SC_EVERSION, SC_ETOOBIG,  SC_EMAPFULL, SC_EPROJECTOR,
	    SC_ESTATE,	 SC_ELMDB,    SC_EREADERS, SC_EPOISONED,
	};
	size_t n = sizeof codes / sizeof codes[0];
	for (size_t i = 0; i < n; i++) {
		const char *m = sc_strerror(codes[i]);
		assert_non_null(m);
		assert_true(strlen(m) > 3);
		assert_string_not_equal(m, "unknown error code");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(m, sc_strerror(codes[j]));
	}
	/* errno values share the space: strerror's words. */
	assert_string_equal(sc_strerror(ENOMEM), strerror(ENOMEM));
	assert_string_equal(sc_strerror(ENOTDIR), strerror(ENOTDIR));
	/* A negative code the library does not define. */
	assert_string_equal(sc_strerror(-1000000), "unknown error code");
}

static void test_error_set_and_clear(void **state)
{
	(void)state;
	sc_error err;
	assert_int_equal(sc_error_set(&err, SC_EINVAL, "bad %s %d", "thing", 7),
			 SC_EINVAL);
	assert_int_equal(err.code, SC_EINVAL);
	assert_string_equal(err.message, "bad thing 7");
	sc_error_clear(&err);
	assert_int_equal(err.code, SC_OK);
	assert_string_equal(err.message, "");
	/* NULL reports are allowed everywhere: the code still comes back. */
	assert_int_equal(sc_error_set(NULL, SC_ECORRUPT, "ignored"),
			 SC_ECORRUPT);
	sc_error_clear(NULL);
	/* A message longer than the report is cut, NUL-terminated. */
	char longer[2 * SC_ERROR_MESSAGE_MAX];
	memset(longer, 'm', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	sc_error_set(&err, SC_ETOOBIG, "%s", longer);
	assert_int_equal(strlen(err.message), SC_ERROR_MESSAGE_MAX - 1);
}

/* ---- kill points --------------------------------------------------------- */

/* Run `calls` passes of the point "tk.point" (after one of another point)
 * in a child whose SC_KILLPOINT is `armed` (NULL: unset). The child exits
 * with 7 if it lives through them. Returns the wait status. */
typedef struct killpoint_run {
	const char *armed;
	int calls;
} killpoint_run;

static int killpoint_child(void *arg, int fd)
{
	(void)fd;
	const killpoint_run *k = arg;
	tk_killpoint_arm(k->armed);
	sc_killpoint("tk.other");
	sc_killpoint("tk.poin"); /* a prefix is another point */
	for (int i = 0; i < k->calls; i++)
		sc_killpoint("tk.point");
	return 7;
}

static int run_child(const char *armed, int calls)
{
	killpoint_run k = {armed, calls};
	return tk_child_run(killpoint_child, &k);
}

static void assert_killed(int status)
{
	assert_true(tk_killed(status, SIGKILL));
}

static void assert_lived(int status)
{
	assert_true(tk_exited(status, 7));
}

static void test_killpoints(void **state)
{
	(void)state;
	assert_lived(run_child(NULL, 5));
	assert_lived(run_child("", 5));
	assert_killed(run_child("tk.point", 1));
	assert_lived(run_child("tk.point:3", 2));
	assert_killed(run_child("tk.point:3", 3));
	assert_killed(run_child("tk.point:0", 1)); /* counts below 1: 1 */
	assert_lived(run_child("tk.elsewhere", 5));
	assert_lived(run_child("tk.point.longer:1", 5));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_code_has_its_own_message),
	    cmocka_unit_test(test_error_set_and_clear),
	    cmocka_unit_test(test_killpoints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
