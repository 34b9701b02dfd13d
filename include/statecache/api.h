/*
 * statecache: the mark of the library's API.
 *
 * The library is built with -fvisibility=hidden: libstatecache.so exports
 * exactly the functions whose declarations in these headers carry SC_API,
 * and nothing of its internals. Every public header includes this one.
 */
#ifndef STATECACHE_API_H
#define STATECACHE_API_H

#if defined(__GNUC__) || defined(__clang__)
#define SC_API __attribute__((visibility("default")))
#else
#define SC_API
#endif

#endif
