/*
 * The entity_index database: one row per event, key entity id ++ position
 * (8 bytes big-endian), empty value, so the events of one entity are one
 * range of keys in position order.
 *
 * The index lags the log: it holds a row for every event up to meta
 * "index_through", and an append writes the rows of the events after it
 * in bulk, in its own transaction with the new index_through, once that
 * tail reaches index_lag events. Readers take index_through from meta in
 * their read transaction and scan the log after it.
 */
#include "store/store_internal.h"

#include <string.h>

#include "common/internal.h"

static const MDB_val index_through_key = {sizeof "index_through" - 1,
					  (void *)"index_through"};

int sc_index_through_get(sc_store *store, MDB_txn *txn, uint64_t last,
			 uint64_t *through, sc_error *err)
{
	MDB_val k = index_through_key, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*through = last;
		return 0;
	}
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading meta");
	if (v.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta index_through is %zu bytes, expected "
				    "8; the store is damaged",
				    v.mv_size);
	*through = sc_be64_get(v.mv_data);
	if (*through > last)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta index_through is %llu, past the end "
				    "of the log (%llu); the store is damaged",
				    (unsigned long long)*through,
				    (unsigned long long)last);
	return 0;
}

int sc_index_through_put(sc_store *store, MDB_txn *txn, uint64_t through)
{
	uint8_t b[8];
	sc_be64_put(b, through);
	MDB_val k = index_through_key, v = {8, b};
	return mdb_put(txn, store->dbi_meta, &k, &v, 0);
}

int sc_index_open(sc_store *store, MDB_txn *txn, uint32_t version,
		  sc_error *err)
{
	uint64_t last = atomic_load(&store->last_position);
	MDB_val k = index_through_key, v;
	bool found = mdb_get(txn, store->dbi_meta, &k, &v) == 0;
	int rc =
	    sc_index_through_get(store, txn, last, &store->index_through, err);
	if (rc)
		return rc;
	if (version < 2) {
		uint8_t b[4];
		sc_be32_put(b, SC_STORE_FORMAT_VERSION);
		MDB_val fk = {sizeof "format_version" - 1, "format_version"},
			fv = {4, b};
		rc = mdb_put(txn, store->dbi_meta, &fk, &fv, 0);
	}
	if (!rc && !found)
		rc = sc_index_through_put(store, txn, store->index_through);
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "upgrading the store to format 2");
	return 0;
}

int sc_index_put(sc_store *store, MDB_txn *txn, sc_index_key *scratch,
		 sc_str id, uint64_t pos)
{
	memcpy(scratch->b, id.ptr, id.len);
	sc_be64_put(scratch->b + id.len, pos);
	MDB_val k = {id.len + 8, scratch->b}, v = {0, NULL};
	return mdb_put(txn, store->dbi_index, &k, &v, 0);
}

int sc_index_tail(sc_store *store, MDB_txn *txn, uint64_t first, int *bad,
		  sc_error *err)
{
	if (store->index_through + 1 >= first)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return rc;
	uint8_t kb[8];
	sc_index_key ikey;
	sc_be64_put(kb, store->index_through + 1);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos >= first)
			break;
		sc_str id;
		*bad =
		    sc_event_peek_entity(v.mv_data, v.mv_size, pos, &id, err);
		if (*bad) {
			rc = 0;
			break;
		}
		rc = sc_index_put(store, txn, &ikey, id, pos);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Rows of other ids that share the prefix (an id that is `id` followed by
 * 8 more bytes) are skipped by length. */
int sc_index_walk(sc_store *store, MDB_txn *txn, sc_str id, uint64_t from,
		  uint64_t to, sc_index_pos_fn fn, void *ctx, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_index, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading entity_index");
	sc_index_key lo, hi;
	memcpy(lo.b, id.ptr, id.len);
	memcpy(hi.b, id.ptr, id.len);
	sc_be64_put(lo.b + id.len, from);
	sc_be64_put(hi.b + id.len, to);
	size_t klen = id.len + 8;
	MDB_val k = {klen, lo.b}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		size_t m = k.mv_size < klen ? k.mv_size : klen;
		int c = memcmp(k.mv_data, hi.b, m);
		if (c > 0 || (c == 0 && k.mv_size > klen))
			break; /* past id ++ to */
		/* Keys of length klen between lo and hi start with id; other
		 * lengths there belong to other entities. */
		if (k.mv_size != klen)
			continue;
		rc = fn(ctx, sc_be64_get((uint8_t *)k.mv_data + id.len));
		if (rc) {
			mdb_cursor_close(cur);
			return rc;
		}
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND || rc == 0)
		return 0;
	return sc_store_lmdb_error(err, rc, "reading entity_index");
}
