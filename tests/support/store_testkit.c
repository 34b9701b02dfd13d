/*
 * Test helpers for the store (store_testkit.h).
 */
#include "tests/support/store_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

/* ---- event streams ------------------------------------------------------- */

void tk_event_gen(uint64_t seed, uint64_t i, unsigned nentities, int64_t time,
		  tk_event *out)
{
	uint64_t r = seed ^ (i * 0x2545f4914f6cdd1dull);
	tk_rand(&r);
	memset(out, 0, sizeof *out);
	sc_event *ev = &out->ev;
	unsigned ent = (unsigned)(tk_rand(&r) % (nentities ? nentities : 1));
	int n = snprintf(out->id, sizeof out->id, "e%u", ent);
	ev->entity = (sc_str){out->id, (size_t)n};
	unsigned t = (unsigned)(tk_rand(&r) % 100);
	ev->type = t < 60   ? SC_EVENT_SET
		   : t < 72 ? SC_EVENT_UNSET
		   : t < 92 ? SC_EVENT_REPLACE
			    : SC_EVENT_DELETE;
	ev->time = time;
	if (tk_rand(&r) % 4) {
		n = snprintf(out->actor, sizeof out->actor, "actor%u",
			     (unsigned)(tk_rand(&r) % 5));
		ev->actor = (sc_str){out->actor, (size_t)n};
	}
	if (tk_rand(&r) % 8 == 0) {
		out->tags[0] = (sc_str){"hot", 3};
		out->tags[1] = (sc_str){"t\0x", 3};
		ev->tags = out->tags;
		ev->ntags = 1 + tk_rand(&r) % 2;
		ev->partition = (sc_str){"p1", 2};
	}
	if (ev->type == SC_EVENT_DELETE)
		return;
	/* Distinct names: a random subset of a0..a7 in a random order. */
	unsigned used = 0;
	size_t na = (size_t)(tk_rand(&r) % (TK_MAX_ATTRS + 1));
	if (ev->type != SC_EVENT_REPLACE && na == 0)
		na = 1;
	for (size_t k = 0; k < na; k++) {
		unsigned nm;
		do
			nm = (unsigned)(tk_rand(&r) % 8);
		while (used & (1u << nm));
		used |= 1u << nm;
		n = snprintf(out->names[k], sizeof out->names[k], "a%u", nm);
		sc_attr *a = &out->attrs[k];
		a->name = (sc_str){out->names[k], (size_t)n};
		if (ev->type == SC_EVENT_UNSET)
			continue;
		unsigned vt = (unsigned)(tk_rand(&r) % 10);
		if (vt == 0 && ev->type == SC_EVENT_SET) {
			a->value.type = SC_VALUE_NULL;
		} else if (vt < 4) {
			a->value.type = SC_VALUE_INT;
			a->value.u.i = (int64_t)tk_rand(&r);
		} else if (vt < 6) {
			a->value.type = SC_VALUE_STRING;
			n = snprintf(out->strs[k], sizeof out->strs[k], "v%llu",
				     (unsigned long long)(tk_rand(&r) % 1000));
			a->value.u.s = (sc_str){out->strs[k], (size_t)n};
		} else if (vt < 7) {
			a->value.type = SC_VALUE_DOUBLE;
			a->value.u.d = (double)(tk_rand(&r) % 100000) / 7.0;
		} else if (vt < 8) {
			a->value.type = SC_VALUE_BOOL;
			a->value.u.b = tk_rand(&r) & 1;
		} else {
			a->value.type = SC_VALUE_BYTES;
			size_t bl = (size_t)(tk_rand(&r) % 12);
			for (size_t b = 0; b < bl; b++)
				out->strs[k][b] = (char)tk_rand(&r);
			a->value.u.s = (sc_str){out->strs[k], bl};
		}
	}
	ev->attrs = out->attrs;
	ev->nattrs = na;
}

static bool str_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool tk_event_equal(const sc_event *a, const sc_event *b)
{
	if (a->position != b->position || a->type != b->type ||
	    a->time != b->time || !str_eq(a->entity, b->entity) ||
	    !str_eq(a->actor, b->actor) ||
	    !str_eq(a->partition, b->partition) || a->nattrs != b->nattrs ||
	    a->ntags != b->ntags)
		return false;
	for (size_t i = 0; i < a->nattrs; i++) {
		if (!str_eq(a->attrs[i].name, b->attrs[i].name))
			return false;
		if (a->type != SC_EVENT_UNSET &&
		    !sc_value_equal(&a->attrs[i].value, &b->attrs[i].value))
			return false;
	}
	for (size_t i = 0; i < a->ntags; i++)
		if (!str_eq(a->tags[i], b->tags[i]))
			return false;
	return true;
}

/* ---- the reference model ------------------------------------------------- */

/* Open addressing, linear probing; deleted entities keep no slot (the
 * table is rebuilt without them when it grows). */
typedef struct slot {
	char *id;
	size_t len;
	sc_entity *e; /* NULL: entity currently absent */
} slot;

struct tk_model {
	slot *slots;
	size_t cap, used, live;
};

static uint64_t hash_id(const char *p, size_t n)
{
	return XXH3_64bits(p, n);
}

tk_model *tk_model_new(void)
{
	tk_model *m = calloc(1, sizeof *m);
	m->cap = 64;
	m->slots = calloc(m->cap, sizeof(slot));
	return m;
}

void tk_model_free(tk_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++) {
		free(m->slots[i].id);
		sc_entity_free(m->slots[i].e);
	}
	free(m->slots);
	free(m);
}

static slot *find_slot(const tk_model *m, const char *p, size_t n)
{
	size_t i = (size_t)hash_id(p, n) & (m->cap - 1);
	for (;;) {
		slot *s = &m->slots[i];
		if (!s->id || (s->len == n && memcmp(s->id, p, n) == 0))
			return s;
		i = (i + 1) & (m->cap - 1);
	}
}

static void model_grow(tk_model *m)
{
	slot *old = m->slots;
	size_t oc = m->cap;
	m->cap *= 2;
	m->slots = calloc(m->cap, sizeof(slot));
	m->used = 0;
	for (size_t i = 0; i < oc; i++) {
		if (!old[i].id)
			continue;
		if (!old[i].e) {
			free(old[i].id);
			continue;
		}
		*find_slot(m, old[i].id, old[i].len) = old[i];
		m->used++;
	}
	free(old);
}

void tk_model_apply(tk_model *m, const sc_event *ev)
{
	if ((m->used + 1) * 2 > m->cap)
		model_grow(m);
	slot *s = find_slot(m, ev->entity.ptr, ev->entity.len);
	sc_entity *next = NULL;
	sc_error err;
	int rc = sc_entity_apply(s->id ? s->e : NULL, ev, &next, &err);
	if (rc) {
		fprintf(stderr, "model: sc_entity_apply failed: %s\n",
			err.message);
		abort();
	}
	if (!s->id) {
		s->id = malloc(ev->entity.len);
		memcpy(s->id, ev->entity.ptr, ev->entity.len);
		s->len = ev->entity.len;
		m->used++;
	}
	if (s->e)
		m->live--;
	sc_entity_free(s->e);
	s->e = next;
	if (next)
		m->live++;
}

size_t tk_model_len(const tk_model *m)
{
	return m->live;
}

const sc_entity *tk_model_get(const tk_model *m, sc_str id)
{
	slot *s = find_slot(m, id.ptr, id.len);
	return s->id ? s->e : NULL;
}

/* ---- hashes -------------------------------------------------------------- */

static void feed_str(XXH3_state_t *st, sc_str s)
{
	uint64_t n = s.len;
	XXH3_64bits_update(st, &n, sizeof n);
	if (s.len)
		XXH3_64bits_update(st, s.ptr, s.len);
}

uint64_t tk_entity_hash(const sc_entity *e)
{
	XXH3_state_t *st = XXH3_createState();
	XXH3_64bits_reset(st);
	feed_str(st, sc_entity_id(e));
	feed_str(st, sc_entity_updated_by(e));
	int64_t at = sc_entity_updated_at(e);
	uint64_t pos = sc_entity_position(e);
	XXH3_64bits_update(st, &at, sizeof at);
	XXH3_64bits_update(st, &pos, sizeof pos);
	size_t n = sc_entity_attr_count(e);
	for (size_t i = 0; i < n; i++) {
		sc_attr a = sc_entity_attr(e, i);
		feed_str(st, a.name);
		int t = (int)a.value.type;
		XXH3_64bits_update(st, &t, sizeof t);
		switch (a.value.type) {
		case SC_VALUE_INT:
			XXH3_64bits_update(st, &a.value.u.i, 8);
			break;
		case SC_VALUE_DOUBLE:
			XXH3_64bits_update(st, &a.value.u.d, 8);
			break;
		case SC_VALUE_BOOL: {
			uint8_t b = a.value.u.b;
			XXH3_64bits_update(st, &b, 1);
			break;
		}
		case SC_VALUE_STRING:
		case SC_VALUE_BYTES:
			feed_str(st, a.value.u.s);
			break;
		case SC_VALUE_NULL:
			break;
		}
	}
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

uint64_t tk_model_hash(const tk_model *m)
{
	uint64_t h = 0;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].e)
			h += tk_entity_hash(m->slots[i].e);
	return h;
}

uint64_t tk_view_hash(const sc_view *v)
{
	uint64_t h = 0;
	sc_view_iter it;
	sc_view_iter_init(v, &it);
	const sc_entity *e;
	while ((e = sc_view_iter_next(&it)))
		h += tk_entity_hash(e);
	return h;
}

uint64_t tk_cache_hash(sc_cache *cache, size_t *len)
{
	sc_reader *r;
	if (sc_reader_open(cache, &r, NULL))
		abort();
	const sc_view *v = sc_reader_begin(r);
	uint64_t h = tk_view_hash(v);
	if (len)
		*len = sc_view_len(v);
	sc_reader_end(r);
	sc_reader_close(r);
	return h;
}

bool tk_cache_matches(sc_cache *cache, const tk_model *m)
{
	sc_reader *r;
	if (sc_reader_open(cache, &r, NULL))
		abort();
	const sc_view *v = sc_reader_begin(r);
	bool ok = true;
	if (sc_view_len(v) != tk_model_len(m)) {
		fprintf(stderr, "cache has %zu entities, model %zu\n",
			sc_view_len(v), tk_model_len(m));
		ok = false;
	}
	for (size_t i = 0; ok && i < m->cap; i++) {
		const slot *s = &m->slots[i];
		if (!s->id)
			continue;
		const sc_entity *e = sc_view_get(v, (sc_str){s->id, s->len});
		if (!s->e && e) {
			fprintf(stderr,
				"entity %.*s: in the cache, deleted in "
				"the model\n",
				(int)s->len, s->id);
			ok = false;
		} else if (s->e && (!e || !sc_entity_equal(e, s->e))) {
			fprintf(stderr, "entity %.*s: %s\n", (int)s->len, s->id,
				e ? "differs" : "missing from the cache");
			ok = false;
		}
	}
	if (ok && tk_view_hash(v) != tk_model_hash(m)) {
		fprintf(stderr, "state hashes differ\n");
		ok = false;
	}
	sc_reader_end(r);
	sc_reader_close(r);
	return ok;
}

bool tk_index_state(sc_store *s, size_t *rows, uint64_t *through)
{
	MDB_txn *txn;
	MDB_dbi idx, meta;
	MDB_stat st;
	MDB_val k = {13, "index_through"}, v;
	if (mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn) != 0)
		return false;
	bool ok = mdb_dbi_open(txn, "entity_index", 0, &idx) == 0 &&
		  mdb_dbi_open(txn, "meta", 0, &meta) == 0 &&
		  mdb_stat(txn, idx, &st) == 0 &&
		  mdb_get(txn, meta, &k, &v) == 0 && v.mv_size == 8;
	if (ok) {
		*rows = st.ms_entries;
		*through = 0;
		for (int i = 0; i < 8; i++)
			*through = *through << 8 | ((uint8_t *)v.mv_data)[i];
	} else {
		fprintf(stderr, "cannot read entity_index and index_through\n");
	}
	mdb_txn_abort(txn);
	return ok;
}
