/* Size-class free list: the out-of-line parts (see common/pool.h). */
#include "common/pool.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define SLAB_FIRST ((size_t)64 << 10)
#define SLAB_HUGE  ((size_t)2 << 20) /* x86-64 and arm64 (4 KiB pages) */

/* Each slab starts with this header; blocks are carved after it. */
typedef struct slab {
	struct slab *next;
	size_t bytes;
} slab;

void sc_pool_init(sc_pool *p, size_t max_bytes, sc_pool_source source)
{
	memset(p, 0, sizeof *p);
	p->max_bytes = max_bytes;
	p->source = source;
	p->next_slab = SLAB_FIRST;
}

/* Hand every listed block to sc_free and empty the lists. */
static void free_listed(sc_pool *p)
{
	for (size_t c = 1; c < sizeof p->cls / sizeof p->cls[0]; c++) {
		sc_pool_class *k = &p->cls[c];
		while (k->chunk) {
			void **chunk = k->chunk;
			for (uint32_t i = 1; i <= k->fill; i++) {
				SC_POOL_UNPOISON(chunk[i], c * 8);
				sc_free(chunk[i]);
			}
			k->chunk = (void **)chunk[0];
			k->fill = k->chunk ? (uint32_t)(c - 1) : 0;
			sc_free(chunk);
		}
	}
	p->bytes = 0;
}

void sc_pool_trim(sc_pool *p)
{
	if (p->source == SC_POOL_MALLOC)
		free_listed(p);
}

void sc_pool_destroy(sc_pool *p)
{
	if (p->source == SC_POOL_MALLOC) {
		free_listed(p);
		return;
	}
	slab *s = p->slabs;
	while (s) {
		slab *next = s->next;
		size_t n = s->bytes;
		/* The shadow of a later mapping at this address must not
		 * inherit the poison. */
		SC_POOL_UNPOISON(s, n);
		munmap(s, n);
		s = next;
	}
	sc_pool_init(p, p->max_bytes, p->source);
}

/* Map `n` bytes; from SLAB_HUGE on, aligned to it and advised for huge
 * pages. Returns NULL when the kernel refuses. */
static void *map_slab(size_t n)
{
	int prot = PROT_READ | PROT_WRITE;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	if (n < SLAB_HUGE) {
		void *m = mmap(NULL, n, prot, flags, -1, 0);
		return m == MAP_FAILED ? NULL : m;
	}
	/* Over-map by one huge page and cut the ends off at the alignment. */
	void *m = mmap(NULL, n + SLAB_HUGE, prot, flags, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	uintptr_t a = (uintptr_t)m;
	uintptr_t start = (a + SLAB_HUGE - 1) & ~(uintptr_t)(SLAB_HUGE - 1);
	if (start > a)
		munmap(m, start - a);
	if (a + SLAB_HUGE > start)
		munmap((char *)start + n, a + SLAB_HUGE - start);
#ifdef MADV_HUGEPAGE
	madvise((void *)start, n, MADV_HUGEPAGE);
#endif
	return (void *)start;
}

void *sc_pool_refill(sc_pool *p, size_t size)
{
	if (p->source == SC_POOL_MALLOC)
		return sc_malloc(size);
	if (sc_alloc_fail_now())
		return NULL;
	if ((size_t)(p->carve_end - p->carve) < size) {
		size_t n = p->next_slab;
		slab *s = map_slab(n);
		if (!s)
			return NULL;
#ifdef MADV_POPULATE_WRITE
		/* One call faults the whole slab in: the writer would take
		 * each of its pages' faults in the middle of a batch. */
		madvise(s, n, MADV_POPULATE_WRITE);
#endif
		/* The old slab's tail (a multiple of 8 below `size`, so a
		 * class size) joins its class list. */
		size_t tail = (size_t)(p->carve_end - p->carve);
		if (tail >= 8) {
			SC_POOL_UNPOISON(p->carve, tail);
			sc_pool_free(p, p->carve, tail);
		}
		s->next = p->slabs;
		s->bytes = n;
		p->slabs = s;
		p->mapped += n;
		p->carve = (char *)s + sizeof *s;
		p->carve_end = (char *)s + n;
		SC_POOL_POISON(p->carve, n - sizeof *s);
		if (n < SLAB_HUGE)
			p->next_slab = 2 * n;
	}
	void *b = p->carve;
	p->carve += size;
	SC_POOL_UNPOISON(b, size);
	return b;
}
