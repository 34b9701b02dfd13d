/*
 * Child processes of a cmocka test (sys_testkit.h). Apart from the rest
 * of the kit because it calls cmocka, which the fuzzers that link
 * libsctest.a do not link.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/sys_testkit.h"

pid_t tk_child_start(int (*f)(void *arg, int fd), void *arg, int *up)
{
	int fds[2] = {-1, -1};
	if (up)
		assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (up)
			close(fds[0]);
		_exit(f(arg, fds[1]));
	}
	if (up) {
		close(fds[1]);
		*up = fds[0];
	}
	return pid;
}

int tk_child_wait(pid_t pid)
{
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

int tk_child_run(int (*f)(void *arg, int fd), void *arg)
{
	return tk_child_wait(tk_child_start(f, arg, NULL));
}

bool tk_exited(int status, int code)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool tk_killed(int status, int sig)
{
	return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

void tk_killpoint_arm(const char *point)
{
	if (point)
		setenv("SC_KILLPOINT", point, 1);
	else
		unsetenv("SC_KILLPOINT");
}
