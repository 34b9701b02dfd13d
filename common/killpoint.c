/*
 * Named kill points for crash tests.
 *
 * A crash test sets SC_KILLPOINT=name (optionally name:N to die on the N-th
 * pass, counting from 1) in a child's environment; the child SIGKILLs itself
 * when it reaches that point. With the variable unset this is one load and
 * a predictable branch.
 */
#include "common/internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *kill_name;
static size_t kill_name_len;
static long kill_countdown = 1;
static int kill_state; /* 0: not read yet, 1: off, 2: armed */

void sc_killpoint(const char *name)
{
	if (kill_state == 1)
		return;
	if (kill_state == 0) {
		const char *v = getenv("SC_KILLPOINT");
		if (!v || !*v) {
			kill_state = 1;
			return;
		}
		const char *colon = strchr(v, ':');
		kill_name = v;
		kill_name_len = colon ? (size_t)(colon - v) : strlen(v);
		if (colon)
			kill_countdown = strtol(colon + 1, NULL, 10);
		if (kill_countdown < 1)
			kill_countdown = 1;
		kill_state = 2;
	}
	if (strlen(name) != kill_name_len ||
	    memcmp(name, kill_name, kill_name_len) != 0)
		return;
	if (--kill_countdown > 0)
		return;
	kill(getpid(), SIGKILL);
}
