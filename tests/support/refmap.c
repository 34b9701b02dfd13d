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
		fprintf(stderr, "tk_refmap: out of memory\n");
		abort();
	}
	return q;
}

int tk_refmap_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Index of key, or of where it would go; *found says which. */
static size_t search(const tk_refmap *m, const void *key, size_t len,
		     bool *found)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c =
		    tk_refmap_keycmp(m->e[mid].key, m->e[mid].len, key, len);
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

tk_refmap *tk_refmap_new(void)
{
	tk_refmap *m = xrealloc(NULL, sizeof *m);
	m->e = NULL;
	m->n = m->cap = 0;
	return m;
}

tk_refmap *tk_refmap_clone(const tk_refmap *m)
{
	tk_refmap *c = tk_refmap_new();
	c->cap = m->n;
	c->n = m->n;
	c->e = xrealloc(NULL, m->n * sizeof *c->e);
	if (m->n)
		memcpy(c->e, m->e, m->n * sizeof *c->e);
	return c;
}

void tk_refmap_free(tk_refmap *m)
{
	if (!m)
		return;
	free(m->e);
	free(m);
}

void *tk_refmap_get(const tk_refmap *m, const void *key, size_t len)
{
	bool found;
	size_t i = search(m, key, len, &found);
	return found ? m->e[i].value : NULL;
}

void *tk_refmap_set(tk_refmap *m, const void *key, size_t len, void *value)
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

bool tk_refmap_remove(tk_refmap *m, const void *key, size_t len, void **old)
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

size_t tk_refmap_count(const tk_refmap *m)
{
	return m->n;
}

const tk_refmap_entry *tk_refmap_at(const tk_refmap *m, size_t i)
{
	return i < m->n ? &m->e[i] : NULL;
}
