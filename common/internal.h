/*
 * Internal helpers shared by every layer: error reports, allocation,
 * assertions. Not installed.
 */
#ifndef STATECACHE_COMMON_INTERNAL_H
#define STATECACHE_COMMON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "statecache/error.h"

/* Fill `err` (may be NULL) with `code` and a formatted message; returns
 * `code` so callers can `return sc_error_set(...)`. */
int sc_error_set(sc_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocation wrappers; a test can make one fail (statecache/testing.h). */
void *sc_malloc(size_t n);
void *sc_calloc(size_t count, size_t n);
void *sc_realloc(void *p, size_t n);
void sc_free(void *p);
/* Make the array *p (of *cap elements of `elem` bytes, from sc_realloc)
 * hold at least `need` elements, doubling from 8. Returns 0 or ENOMEM
 * (also when the size overflows); *p and *cap are unchanged on failure. */
int sc_grow_array(void **p, size_t *cap, size_t need, size_t elem);
/* For allocators layered on these (common/pool.h) that hand out a block
 * without calling sc_malloc: true when the injected failure is due now,
 * counted as one allocation like sc_malloc counts. */
bool sc_alloc_fail_now(void);

/* Crash tests: SIGKILL the process here when SC_KILLPOINT names this point
 * (common/killpoint.c). Writer-thread only. Compiled only into test builds
 * (SC_KILLPOINTS, set by the Makefile in every mode but release): a
 * release build has no kill point and ignores the variable. */
#ifdef SC_KILLPOINTS
void sc_killpoint(const char *name);
#else
static inline void sc_killpoint(const char *name)
{
	(void)name;
}
#endif

/*
 * Invariants. SC_REQUIRE states a precondition, SC_INSIST a condition in
 * the middle, SC_ENSURE a postcondition. Checked in debug builds
 * (SC_DEBUG), compiled out otherwise. They guard the library's own logic,
 * never input: bad input is an error code.
 */
#ifdef SC_DEBUG
#include <stdio.h>
#include <stdlib.h>
#define SC_ASSERT_(kind, cond)                                                 \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__,    \
				__LINE__, kind, #cond);                        \
			abort();                                               \
		}                                                              \
	} while (0)
#else
#define SC_ASSERT_(kind, cond) ((void)0)
#endif
#define SC_REQUIRE(cond) SC_ASSERT_("REQUIRE", cond)
#define SC_INSIST(cond)	 SC_ASSERT_("INSIST", cond)
#define SC_ENSURE(cond)	 SC_ASSERT_("ENSURE", cond)

#define SC_UNUSED(x) ((void)(x))

#endif
