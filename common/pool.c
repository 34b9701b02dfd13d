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
