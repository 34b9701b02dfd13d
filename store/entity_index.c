/*
 * The entity_index database: one row per event, empty value, keyed so
 * that the events of one entity (partition, id) are one range of keys in
 * position order:
 *
 *   key = key_id(partition, id) ++ position (8 bytes big-endian)
 *
 * The default partition (empty name), as in format 3:
 *   key_id("", id) = id                            if id is 1..503 bytes
 *                  = id[0..487) ++ XXH3-128(id)     if id is 504..1024 bytes
 * A named partition P (1..4096 bytes), from format 4:
 *   key_id(P, id)  = XXH3-128(P) ++ id              if id is 1..487 bytes
 *                  = XXH3-128(P) ++ id[0..471) ++ XXH3-128(id)
 *                                                   if id is 488..1024 bytes
 * (each hash 16 bytes, in its canonical big-endian form).
 *
 * LMDB keys are at most 511 bytes, so an id is kept whole as long as it
 * fits with its position (and its partition's hash), and every longer id
 * is cut and completed by its hash: every valid (partition, id) has a key
 * of at most 511 bytes. The rows of one named partition share a 16-byte
 * prefix. A key_id does not name one entity alone (a 503-byte id may equal
 * another id's cut ++ hash, a default-partition id may begin with a
 * partition's hash, two long ids or two partitions may share a hash), so a
 * reader checks the partition and the id of every event it reads through
 * the index and skips the others.
 *
 * The index lags the log: it holds a row for every event up to meta
 * "index_through", and an append writes the rows of the events after it
 * in bulk, in its own transaction with the new index_through, once that
 * tail reaches index_lag events. Readers take index_through from meta in
 * their read transaction and scan the log after it.
 */
#include "store/store_internal.h"

#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/internal.h"

_Static_assert(SC_INDEX_ID_WHOLE_MAX + 8 == SC_INDEX_KEY_MAX,
	       "a whole id and its position fill a key");
_Static_assert(SC_INDEX_ID_CUT + 16 + 8 <= SC_INDEX_KEY_MAX,
	       "a cut id, its hash and its position fit a key");
_Static_assert(SC_INDEX_ID_CUT + 16 <= SC_INDEX_ID_WHOLE_MAX,
	       "a cut id and its hash are no longer than a whole id");
_Static_assert(16 + SC_INDEX_PART_ID_WHOLE_MAX + 8 == SC_INDEX_KEY_MAX,
	       "a partition's hash, a whole id and its position fill a key");
_Static_assert(SC_INDEX_PART_ID_CUT + 16 == SC_INDEX_PART_ID_WHOLE_MAX,
	       "in a named partition, a cut id and its hash fill a key");

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

/*
 * Move a store of format 1..3 to format 4. Up to format 3 an event's
 * partition did not name its entity: the index keyed every row by the id
 * alone, and snapshots (format 1) hold no partition. A store whose log
 * never names a partition is already a format 4 store. Otherwise the rows
 * of the events that name one are keyed again, and the snapshots, which
 * put every entity into one namespace, are dropped (open then replays the
 * log; the next snapshot is of format 2). One pass over the log, once.
 */
static int upgrade_partitions(sc_store *store, MDB_txn *txn, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "upgrading the store");
	MDB_val k, v;
	sc_index_key old, ikey;
	bool named = false;
	int bad = 0;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != 8)
			continue; /* open's log checks report it */
		uint64_t pos = sc_be64_get(k.mv_data);
		sc_str part, id;
		bad = sc_event_peek_key(v.mv_data, v.mv_size, pos, &part, &id,
					err);
		if (bad)
			break;
		if (!part.len)
			continue;
		named = true;
		if (pos > store->index_through)
			continue;
		size_t n = sc_index_key_id(old.b, id);
		sc_be64_put(old.b + n, pos);
		MDB_val ok = {n + 8, old.b};
		rc = mdb_del(txn, store->dbi_index, &ok, NULL);
		if (rc && rc != MDB_NOTFOUND)
			break;
		rc = sc_index_put(store, txn, &ikey, part, id, pos);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	if (bad)
		return bad;
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (!rc && named)
		rc = mdb_drop(txn, store->dbi_snapshots, 0);
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc)
		return sc_store_lmdb_error(err, rc, "upgrading the store");
	if (named)
		sc_store_warn(store,
			      "the log names partitions: entity_index rows "
			      "keyed again and the snapshots of the previous "
			      "format dropped (open replays the log; take a "
			      "snapshot)");
	return 0;
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
	if (version < 4) {
		rc = upgrade_partitions(store, txn, err);
		if (rc)
			return rc;
	}
	if (version < SC_STORE_FORMAT_VERSION) {
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
					   "upgrading the store's format");
	return 0;
}

/* Write XXH3-128(s), canonical, to k; returns 16. */
static size_t put_hash128(uint8_t *k, sc_str s)
{
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(s.ptr, s.len));
	memcpy(k, h.digest, sizeof h.digest);
	return sizeof h.digest;
}

size_t sc_index_key_of(uint8_t *k, sc_str partition, sc_str id)
{
	if (!partition.len)
		return sc_index_key_id(k, id);
	size_t n = put_hash128(k, partition);
	if (id.len <= SC_INDEX_PART_ID_WHOLE_MAX) {
		memcpy(k + n, id.ptr, id.len);
		return n + id.len;
	}
	memcpy(k + n, id.ptr, SC_INDEX_PART_ID_CUT);
	n += SC_INDEX_PART_ID_CUT;
	return n + put_hash128(k + n, id);
}

/* Write key_id(id) to k; returns its length. */
size_t sc_index_key_id(uint8_t *k, sc_str id)
{
	if (id.len <= SC_INDEX_ID_WHOLE_MAX) {
		memcpy(k, id.ptr, id.len);
		return id.len;
	}
	memcpy(k, id.ptr, SC_INDEX_ID_CUT);
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(id.ptr, id.len));
	memcpy(k + SC_INDEX_ID_CUT, h.digest, sizeof h.digest);
	return SC_INDEX_ID_CUT + sizeof h.digest;
}

int sc_index_put(sc_store *store, MDB_txn *txn, sc_index_key *scratch,
		 sc_str partition, sc_str id, uint64_t pos)
{
	size_t n = sc_index_key_of(scratch->b, partition, id);
	sc_be64_put(scratch->b + n, pos);
	MDB_val k = {n + 8, scratch->b}, v = {0, NULL};
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
		sc_str part, id;
		*bad = sc_event_peek_key(v.mv_data, v.mv_size, pos, &part, &id,
					 err);
		if (*bad) {
			rc = 0;
			break;
		}
		rc = sc_index_put(store, txn, &ikey, part, id, pos);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Rows of other key_ids that share the prefix (a key_id that is this one
 * followed by 8 more bytes) are skipped by length; rows of other ids with
 * the same key_id are the caller's to skip. */
int sc_index_walk(sc_store *store, MDB_txn *txn, sc_str partition, sc_str id,
		  uint64_t from, uint64_t to, sc_index_pos_fn fn, void *ctx,
		  sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_index, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading entity_index");
	sc_index_key lo, hi;
	size_t idlen = sc_index_key_of(lo.b, partition, id);
	memcpy(hi.b, lo.b, idlen);
	sc_be64_put(lo.b + idlen, from);
	sc_be64_put(hi.b + idlen, to);
	size_t klen = idlen + 8;
	MDB_val k = {klen, lo.b}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		size_t m = k.mv_size < klen ? k.mv_size : klen;
		int c = memcmp(k.mv_data, hi.b, m);
		if (c > 0 || (c == 0 && k.mv_size > klen))
			break; /* past id ++ to */
		/* Keys of length klen between lo and hi start with this
		 * key_id; other lengths there belong to other entities. */
		if (k.mv_size != klen)
			continue;
		rc = fn(ctx, sc_be64_get((uint8_t *)k.mv_data + idlen));
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

int sc_index_verify(sc_store *store, MDB_txn *txn, uint64_t through,
		    sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_index, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "verifying entity_index");
	MDB_val k, v;
	uint64_t rows = 0;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		rows++;
		if (k.mv_size < 9 || k.mv_size > SC_INDEX_KEY_MAX) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "an entity_index key is %zu bytes",
					  k.mv_size);
			goto out;
		}
		size_t idlen = k.mv_size - 8;
		uint64_t pos = sc_be64_get((uint8_t *)k.mv_data + idlen);
		if (pos < 1 || pos > through) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "entity_index has a row for position "
					  "%llu, beyond index_through (%llu)",
					  (unsigned long long)pos,
					  (unsigned long long)through);
			goto out;
		}
		uint8_t pk[8];
		sc_be64_put(pk, pos);
		MDB_val ek = {8, pk}, ev;
		rc = mdb_get(txn, store->dbi_events, &ek, &ev);
		if (rc) {
			rc = rc == MDB_NOTFOUND
				 ? sc_error_set(err, SC_ECORRUPT,
						"entity_index names position "
						"%llu, which is not in the log",
						(unsigned long long)pos)
				 : sc_store_lmdb_error(
				       err, rc, "verifying entity_index");
			goto out;
		}
		sc_str part, id;
		rc = sc_event_peek_key(ev.mv_data, ev.mv_size, pos, &part, &id,
				       err);
		if (rc)
			goto out;
		sc_index_key want;
		if (sc_index_key_of(want.b, part, id) != idlen ||
		    memcmp(want.b, k.mv_data, idlen) != 0) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the entity_index row of position "
					  "%llu is not keyed by its entity",
					  (unsigned long long)pos);
			goto out;
		}
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc, "verifying entity_index");
	if (rows != through)
		return sc_error_set(err, SC_ECORRUPT,
				    "entity_index has %llu rows, but "
				    "index_through is %llu (one row per "
				    "position)",
				    (unsigned long long)rows,
				    (unsigned long long)through);
	return 0;
out:
	mdb_cursor_close(cur);
	return rc;
}
