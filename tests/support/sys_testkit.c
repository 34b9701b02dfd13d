/*
 * The test kit for the system (sys_testkit.h).
 */
#include "tests/support/sys_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- temporary directories ----------------------------------------------- */

static char tmproot[256];
static unsigned tmproot_dirs;

const char *tk_tmproot_create(const char *name)
{
	snprintf(tmproot, sizeof tmproot, "/tmp/sc_%s.XXXXXX", name);
	tmproot_dirs = 0;
	if (!mkdtemp(tmproot)) {
		perror("mkdtemp");
		tmproot[0] = '\0';
		return NULL;
	}
	return tmproot;
}

void tk_tmproot_dir(char *out, size_t len)
{
	snprintf(out, len, "%s/s%u", tmproot, tmproot_dirs++);
}

bool tk_rm_rf(const char *path)
{
	char cmd[1200];
	if (snprintf(cmd, sizeof cmd, "rm -rf '%s'", path) >= (int)sizeof cmd) {
		fprintf(stderr, "tk_rm_rf: path too long: %s\n", path);
		return false;
	}
	if (system(cmd) != 0) {
		fprintf(stderr, "could not remove %s\n", path);
		return false;
	}
	return true;
}

int tk_tmproot_remove(void)
{
	if (!tmproot[0]) {
		fprintf(stderr, "tk_tmproot_remove: no root was created\n");
		return -1;
	}
	if (!tk_rm_rf(tmproot))
		return -1;
	tmproot[0] = '\0';
	return 0;
}

int tk_tmproot_teardown(void **state)
{
	(void)state;
	return tk_tmproot_remove();
}
