/*
 * Reference map: a sorted array. See refmap.h.
 */
#include "tests/support/refmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fprintf(stderr, "refmap: out of memory\n");
		abort();
	}
	return q;
}

int refmap_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Index of key, or of where it would go; *found says which. */
static size_t search(const refmap *m, const void *key, size_t len, bool *found)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = refmap_keycmp(m->e[mid].key, m->e[mid].len, key, len);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

refmap *refmap_new(void)
{
	refmap *m = xrealloc(NULL, sizeof *m);
	m->e = NULL;
	m->n = m->cap = 0;
	return m;
}

refmap *refmap_clone(const refmap *m)
{
	refmap *c = refmap_new();
	c->cap = m->n;
	c->n = m->n;
	c->e = xrealloc(NULL, m->n * sizeof *c->e);
	if (m->n)
		memcpy(c->e, m->e, m->n * sizeof *c->e);
	return c;
}

void refmap_free(refmap *m)
{
	if (!m)
		return;
	free(m->e);
	free(m);
}

void *refmap_get(const refmap *m, const void *key, size_t len)
{
	bool found;
	size_t i = search(m, key, len, &found);
	return found ? m->e[i].value : NULL;
}

void *refmap_set(refmap *m, const void *key, size_t len, void *value)
{
	bool found;
	size_t i = search(m, key, len, &found);
	if (found) {
		void *old = m->e[i].value;
		m->e[i].key = key;
		m->e[i].value = value;
		return old;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 16;
		m->e = xrealloc(m->e, m->cap * sizeof *m->e);
	}
	memmove(m->e + i + 1, m->e + i, (m->n - i) * sizeof *m->e);
	m->e[i].key = key;
	m->e[i].len = len;
	m->e[i].value = value;
	m->n++;
	return NULL;
}

bool refmap_remove(refmap *m, const void *key, size_t len, void **old)
{
	bool found;
	size_t i = search(m, key, len, &found);
	if (!found)
		return false;
	if (old)
		*old = m->e[i].value;
	memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof *m->e);
	m->n--;
	return true;
}

size_t refmap_count(const refmap *m)
{
	return m->n;
}

const refmap_entry *refmap_at(const refmap *m, size_t i)
{
	return i < m->n ? &m->e[i] : NULL;
}
