/*
 * A size-class free list for one thread's allocations of small blocks.
 *
 * The writer frees whole garbage lists at once (thousands of HAMT nodes and
 * entity states per promote) and allocates the same sizes again for the
 * next batch. Handing those blocks to glibc and back costs far more than
 * the work itself: the freed chunks go through the unsorted bin and get
 * coalesced and split again, and a heap top freed whole is trimmed and
 * faulted in again. A pool keeps freed blocks on a LIFO list per exact size
 * (multiples of 8 up to SC_POOL_MAX_SIZE) and reuses them, up to a bound on
 * the bytes it holds; anything else goes to sc_malloc/sc_free.
 *
 * Every block is a plain sc_malloc block of exactly its size, so sc_free on
 * a pooled block is valid. Allocation from a list consults the failure
 * injection like sc_malloc does, so tests see the same failure points.
 * Not thread-safe: one pool per writer. Under AddressSanitizer the bytes of
 * a listed block past its link are poisoned, so a use after free still
 * traps.
 */
#ifndef STATECACHE_COMMON_POOL_H
#define STATECACHE_COMMON_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define SC_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SC_POOL_ASAN 1
#endif
#endif
#ifdef SC_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define SC_POOL_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define SC_POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SC_POOL_POISON(p, n)   ((void)(p), (void)(n))
#define SC_POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define SC_POOL_MAX_SIZE 1024u

typedef struct sc_pool {
	void *head[SC_POOL_MAX_SIZE / 8 + 1]; /* by size / 8 */
	size_t bytes;			      /* held in the lists */
	size_t max_bytes;		      /* bound on `bytes` */
} sc_pool;

/* An empty pool that holds at most `max_bytes` of free blocks. */
void sc_pool_init(sc_pool *p, size_t max_bytes);

/* Free every listed block (the pool stays usable). */
void sc_pool_drain(sc_pool *p);

static inline int sc_pool_class(size_t size)
{
	return (size & 7u) == 0 && size >= 8 && size <= SC_POOL_MAX_SIZE
		   ? (int)(size >> 3)
		   : -1;
}

/* A block of `size` bytes, or NULL (out of memory, or injected failure). */
static inline void *sc_pool_alloc(sc_pool *p, size_t size)
{
	int c = sc_pool_class(size);
	void *b = c >= 0 ? p->head[c] : NULL;
	if (!b)
		return sc_malloc(size);
	if (sc_alloc_fail_now())
		return NULL;
	p->head[c] = *(void **)b;
	p->bytes -= size;
	/* Listed blocks are cold (freed long ago, in bulk): start loading the
	 * next one now, the caller is about to write this one. */
	if (p->head[c])
		__builtin_prefetch(p->head[c], 1);
	SC_POOL_UNPOISON(b, size);
	return b;
}

/* Give back a block of `size` bytes (from sc_pool_alloc or sc_malloc with
 * exactly this size). NULL is a no-op. */
static inline void sc_pool_free(sc_pool *p, void *b, size_t size)
{
	int c = sc_pool_class(size);
	if (!b)
		return;
	if (c < 0 || p->bytes + size > p->max_bytes) {
		sc_free(b);
		return;
	}
	*(void **)b = p->head[c];
	p->head[c] = b;
	p->bytes += size;
	SC_POOL_POISON((char *)b + sizeof(void *), size - sizeof(void *));
}

#endif
