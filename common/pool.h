/*
 * A size-class free list for one thread's allocations of small blocks.
 *
 * The writer frees whole garbage lists at once (thousands of HAMT nodes and
 * entity states per promote) and allocates the same sizes again for the
 * next batch. Handing those blocks to glibc and back costs far more than
 * the work itself: the freed chunks go through the unsorted bin and get
 * coalesced and split again, and a heap top freed whole is trimmed and
 * faulted in again. A pool keeps freed blocks on a LIFO list per exact size
 * (multiples of 8 up to SC_POOL_MAX_SIZE) and reuses them; other sizes go
 * to sc_malloc/sc_free.
 *
 * Where a class's list is empty the block comes from the pool's source:
 *
 *   SC_POOL_SLABS   carved from slabs the pool maps itself: 64 KiB first,
 *                   doubling to 2 MiB, 2 MiB-aligned from then on and
 *                   advised for transparent huge pages, populated when
 *                   mapped. A held reader view makes the writer allocate
 *                   fresh memory for every batch; carved from a slab it
 *                   costs one fault per 2 MiB instead of one per 4 KiB page
 *                   plus glibc's bin searches, and the blocks carry no
 *                   malloc header. Such a block must go back through
 *                   sc_pool_free, never sc_free; the pool keeps every block
 *                   it carved (no bound) and unmaps its slabs in
 *                   sc_pool_destroy, so its memory is the peak of what the
 *                   writer held live and pooled at once.
 *   SC_POOL_MALLOC  plain sc_malloc blocks of exactly their size, kept up
 *                   to max_bytes; sc_free on such a block is valid. Used
 *                   under AddressSanitizer (SC_POOL_DEFAULT), where each
 *                   block then keeps its redzones and leak tracking.
 *
 * Allocation from a list or a slab consults the failure injection like
 * sc_malloc does, so tests see the same failure points. Not thread-safe:
 * one pool per writer. Under AddressSanitizer a listed block and the part
 * of a slab not yet carved are poisoned, so a use after free still traps;
 * only the blocks serving as chunks (one in size/8 of the listed blocks,
 * see below) stay unpoisoned.
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

typedef enum sc_pool_source {
	SC_POOL_MALLOC,
	SC_POOL_SLABS,
} sc_pool_source;

#ifdef SC_POOL_ASAN
#define SC_POOL_DEFAULT SC_POOL_MALLOC
#else
#define SC_POOL_DEFAULT SC_POOL_SLABS
#endif

/*
 * The blocks of one size are kept without writing into most of them: a
 * freed block is either stored as a pointer in the class's current *chunk*
 * or, when the chunk is full, becomes the new chunk itself:
 *
 *   chunk block:  [ link to the previous (full) chunk | ptr | ptr | ... ]
 *                   word 0                             words 1..size/8-1
 *
 * Taking a block pops a pointer from the chunk (a line just used, so a
 * hit) instead of reading a link out of the cold block; only when the
 * chunk is empty is the chunk block itself handed out. A promote frees
 * thousands of blocks last touched a batch ago, and the next batch takes
 * them again: neither side reads or writes a cold block for the list.
 * Blocks of 8 bytes hold no pointer: their list is a plain linked list.
 */
typedef struct sc_pool_class {
	void **chunk;  /* current chunk, or NULL when the class is empty */
	uint32_t fill; /* pointers held in the current chunk */
} sc_pool_class;

typedef struct sc_pool {
	sc_pool_class cls[SC_POOL_MAX_SIZE / 8 + 1]; /* by size / 8 */
	size_t bytes;				     /* held in the lists */
	size_t max_bytes; /* bound on `bytes` (SC_POOL_MALLOC) */
	sc_pool_source source;
	char *carve, *carve_end; /* the newest slab's part not yet carved */
	void *slabs;		 /* mapped slabs, linked through word 0 */
	size_t next_slab;	 /* bytes of the next slab */
	size_t mapped;		 /* bytes of all slabs */
} sc_pool;

/* An empty pool taking new blocks from `source`; with SC_POOL_MALLOC it
 * keeps at most `max_bytes` of free blocks in its lists. */
void sc_pool_init(sc_pool *p, size_t max_bytes, sc_pool_source source);

/* Give back what the pool holds and can give back: with SC_POOL_MALLOC
 * every listed block; with SC_POOL_SLABS nothing (listed blocks stay for
 * reuse). The pool stays usable. */
void sc_pool_trim(sc_pool *p);

/* Release everything: the listed blocks and every slab. No block of the
 * pool may be in use any more. The pool is left empty and usable. */
void sc_pool_destroy(sc_pool *p);

/* A block of `size` (a class size) for a class with an empty list: from
 * the pool's source. NULL: out of memory or injected failure. */
void *sc_pool_refill(sc_pool *p, size_t size);

static inline int sc_pool_class_of(size_t size)
{
	return (size & 7u) == 0 && size >= 8 && size <= SC_POOL_MAX_SIZE
		   ? (int)(size >> 3)
		   : -1;
}

/* A block of `size` bytes, or NULL (out of memory, or injected failure). */
static inline void *sc_pool_alloc(sc_pool *p, size_t size)
{
	int c = sc_pool_class_of(size);
	sc_pool_class *k = c >= 0 ? &p->cls[c] : NULL;
	if (!k)
		return sc_malloc(size);
	if (!k->chunk)
		return sc_pool_refill(p, size);
	if (sc_alloc_fail_now())
		return NULL;
	void *b;
	if (k->fill) {
		b = k->chunk[k->fill--];
		/* The caller is about to write this cold block; start loading
		 * (for writing, up to five lines) the one the next call of
		 * this size will hand out. */
		const char *next = k->fill ? (const char *)k->chunk[k->fill]
					   : (const char *)k->chunk;
		for (size_t off = 0; off < size && off < 320; off += 64)
			__builtin_prefetch(next + off, 1);
	} else {
		b = k->chunk;
		k->chunk = (void **)k->chunk[0];
		k->fill = k->chunk ? (uint32_t)(size / 8 - 1) : 0;
		if (k->chunk)
			__builtin_prefetch(k->chunk, 0);
	}
	p->bytes -= size;
	SC_POOL_UNPOISON(b, size);
	return b;
}

/* Give back a block of `size` bytes from sc_pool_alloc(p, size) (with
 * SC_POOL_MALLOC also any sc_malloc block of exactly this size). NULL is a
 * no-op. */
static inline void sc_pool_free(sc_pool *p, void *b, size_t size)
{
	int c = sc_pool_class_of(size);
	if (!b)
		return;
	if (c < 0 ||
	    (p->source == SC_POOL_MALLOC && p->bytes + size > p->max_bytes)) {
		sc_free(b);
		return;
	}
	sc_pool_class *k = &p->cls[c];
	if (k->chunk && k->fill < size / 8 - 1) {
		k->chunk[++k->fill] = b;
		SC_POOL_POISON(b, size);
	} else {
		/* b becomes the chunk: it stays unpoisoned while it is one. */
		void **nc = b;
		nc[0] = k->chunk;
		k->chunk = nc;
		k->fill = 0;
	}
	p->bytes += size;
}

#endif
