/*
 * Test helpers for the store (store_testkit.h).
 */
#include "tests/support/store_testkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	/* Distinct names. Most events: a random subset of a0..a7 in a
	 * random order. A wide event (one in 32): about three quarters of
	 * a0..a7 and w0..w79, in order or reversed, so that states pass the
	 * 64 attributes the cache builds in one pass. */
	unsigned pick[TK_MAX_ATTRS];
	size_t na = 0;
	if (tk_rand(&r) % 32 == 0) {
		for (unsigned nm = 0; nm < 88 && na < TK_MAX_ATTRS; nm++)
			if (tk_rand(&r) % 4)
				pick[na++] = nm;
		if (tk_rand(&r) & 1)
			for (size_t k = 0; k < na / 2; k++) {
				unsigned x = pick[k];
				pick[k] = pick[na - 1 - k];
				pick[na - 1 - k] = x;
			}
	} else {
		unsigned used = 0;
		na = (size_t)(tk_rand(&r) % (TK_STR_ATTRS + 1));
		if (ev->type != SC_EVENT_REPLACE && na == 0)
			na = 1;
		for (size_t k = 0; k < na; k++) {
			unsigned nm;
			do
				nm = (unsigned)(tk_rand(&r) % 8);
			while (used & (1u << nm));
			used |= 1u << nm;
			pick[k] = nm;
		}
	}
	for (size_t k = 0; k < na; k++) {
		unsigned nm = pick[k];
		n = snprintf(out->names[k], sizeof out->names[k], "%c%u",
			     nm < 8 ? 'a' : 'w', nm < 8 ? nm : nm - 8);
		sc_attr *a = &out->attrs[k];
		a->name = (sc_str){out->names[k], (size_t)n};
		if (ev->type == SC_EVENT_UNSET)
			continue;
		unsigned vt = (unsigned)(tk_rand(&r) % 10);
		/* Strings and bytes need storage: the first few only. */
		if (k >= TK_STR_ATTRS && (vt == 4 || vt == 5 || vt >= 8))
			vt = 1;
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
		    !tk_value_equal(&a->attrs[i].value, &b->attrs[i].value))
			return false;
	}
	for (size_t i = 0; i < a->ntags; i++)
		if (!str_eq(a->tags[i], b->tags[i]))
			return false;
	return true;
}

/* ---- the model ------------------------------------------------------------
 */

uint64_t tk_cache_hash(sc_cache *cache, size_t *len)
{
	sc_reader *r;
	if (sc_reader_open(cache, &r, NULL))
		abort();
	const sc_view *v = sc_reader_begin(r);
	uint64_t h = tk_refstate_view_hash(v);
	if (len)
		*len = sc_view_len(v);
	sc_reader_end(r);
	sc_reader_close(r);
	return h;
}

bool tk_cache_matches(sc_cache *cache, const tk_refstate *m)
{
	sc_reader *r;
	if (sc_reader_open(cache, &r, NULL))
		abort();
	const sc_view *v = sc_reader_begin(r);
	char why[256];
	bool ok = tk_refstate_check_view(m, v, why, sizeof why);
	if (!ok)
		fprintf(stderr, "cache and model differ: %s\n", why);
	if (ok && tk_refstate_view_hash(v) != tk_refstate_hash(m)) {
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
