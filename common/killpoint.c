/*
 * Named kill points for crash tests.
 *
 * A crash test sets SC_KILLPOINT=name (optionally name:N to die on the N-th
 * pass, counting from 1) in a child's environment; the child SIGKILLs itself
 * when it reaches that point. With the variable unset this is one load and
 * a predictable branch.
 *
 * Test builds only (SC_KILLPOINTS): in a release build sc_killpoint is an
 * empty inline function (common/internal.h) and this file compiles to
 * nothing, so no environment variable can make a production process kill
 * itself.
 */
#include "common/internal.h"

#ifdef SC_KILLPOINTS

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *kill_name;
static size_t kill_name_len;
static _Atomic long kill_countdown = 1;
/* 0: not read yet, 1: off, 2: armed. Written once before arming; the
 * environment is read again harmlessly if two threads race here. */
static _Atomic int kill_state;

void sc_killpoint(const char *name)
{
	int state = atomic_load_explicit(&kill_state, memory_order_acquire);
	if (state == 1)
		return;
	if (state == 0) {
		const char *v = getenv("SC_KILLPOINT");
		if (!v || !*v) {
			atomic_store_explicit(&kill_state, 1,
					      memory_order_release);
			return;
		}
		const char *colon = strchr(v, ':');
		kill_name = v;
		kill_name_len = colon ? (size_t)(colon - v) : strlen(v);
		long n = colon ? strtol(colon + 1, NULL, 10) : 1;
		atomic_store_explicit(&kill_countdown, n < 1 ? 1 : n,
				      memory_order_relaxed);
		atomic_store_explicit(&kill_state, 2, memory_order_release);
	}
	if (strlen(name) != kill_name_len ||
	    memcmp(name, kill_name, kill_name_len) != 0)
		return;
	if (atomic_fetch_sub_explicit(&kill_countdown, 1,
				      memory_order_relaxed) > 1)
		return;
	kill(getpid(), SIGKILL);
}

#endif /* SC_KILLPOINTS */
