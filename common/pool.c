/* Size-class free list: the out-of-line parts (see common/pool.h). */
#include "common/pool.h"

#include <string.h>

void sc_pool_init(sc_pool *p, size_t max_bytes)
{
	memset(p, 0, sizeof *p);
	p->max_bytes = max_bytes;
}

void sc_pool_drain(sc_pool *p)
{
	for (size_t c = 0; c < sizeof p->head / sizeof p->head[0]; c++) {
		void *b = p->head[c];
		while (b) {
			void *next = *(void **)b;
			SC_POOL_UNPOISON(b, c * 8);
			sc_free(b);
			b = next;
		}
		p->head[c] = NULL;
	}
	p->bytes = 0;
}
