/*
 * statecache: hooks for tests. Not for production use.
 */
#ifndef STATECACHE_TESTING_H
#define STATECACHE_TESTING_H

#include "statecache/api.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * sc_testing_fail_alloc_after - make the library's allocation number n
 * (counting from 0, from this call on) fail once, as if out of memory.
 * A negative n turns injection off. Process-wide; meant for single-threaded
 * fault-injection tests.
 */
SC_API void sc_testing_fail_alloc_after(long n);

#ifdef __cplusplus
}
#endif

#endif
