/*
 * Allocation with a failure-injection hook for tests.
 *
 * Every allocation the library makes itself goes through sc_malloc and
 * friends, so tests can make the n-th allocation from now fail and check
 * that the failing call leaves everything as it was.
 */
#include "common/internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "statecache/testing.h"

/* Allocations left before the injected failure; negative: never fail. */
static _Atomic long fail_countdown = -1;

void sc_testing_fail_alloc_after(long n)
{
	atomic_store_explicit(&fail_countdown, n, memory_order_relaxed);
}

static int should_fail(void)
{
	long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
	if (n < 0)
		return 0;
	n = atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
	if (n == 0) {
		atomic_store_explicit(&fail_countdown, -1,
				      memory_order_relaxed);
		return 1;
	}
	return 0;
}

bool sc_alloc_fail_now(void)
{
	return should_fail() != 0;
}

void *sc_malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return malloc(n);
}

void *sc_calloc(size_t count, size_t n)
{
	if (should_fail())
		return NULL;
	return calloc(count, n);
}

void *sc_realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return realloc(p, n);
}

void sc_free(void *p)
{
	free(p);
}

int sc_grow_array(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 8;
	while (n < need) {
		if (n > SIZE_MAX / 2)
			return ENOMEM;
		n *= 2;
	}
	if (elem && n > SIZE_MAX / elem)
		return ENOMEM;
	void *q = sc_realloc(*p, n * elem);
	if (!q)
		return ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}
