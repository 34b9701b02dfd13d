/*
 * tag_index and partition_index: the rows that let a query find the
 * events of one tag or one partition without a scan of the log.
 *
 *   tag_index        key = key_id(tag) ++ position (8 bytes BE), one row
 *                    per non-empty tag of each event; value empty
 *   partition_index  key = key_id(partition) ++ position, one row per
 *                    event with a partition; value empty
 *
 * key_id is entity_index's (sc_index_key_id): the value whole up to 499
 * bytes, else its first 483 bytes ++ its XXH3-128 hash, so every valid
 * tag and partition (up to 4096 bytes) has a key within LMDB's 511 bytes,
 * and an append never fails for the length of a value. A key id may stand
 * for several values: a query checks every event it reads back.
 *
 * The indexes lag the log as entity_index does, and for the same reason:
 * rows written by every commit dirty a page per distinct value, which a
 * durable append pays for in writes (about half its rate with 2 tags and
 * a partition per event); written in bulk they cost a fraction. They hold
 * the rows of every event up to meta "query_index_through"; an append
 * whose last position is index_lag or more past it writes the rows of the
 * events after it, read back from the log, and of its own, with the new
 * "query_index_through", in its own transaction. Queries read the indexes
 * up to "query_index_through" in their read transaction and scan the log
 * after it, so no committed event is ever missing from an answer.
 *
 * A store of a format before 4 had no such indexes. The first open by
 * this build creates them empty and sets "query_index_through" to 0 and
 * the format to 4 in open's transaction; an open that finds the indexes
 * index_lag or more events behind (the whole log, after an upgrade)
 * indexes the events after "query_index_through" in transactions of at
 * most BUILD_ROWS rows before it returns. An open interrupted meanwhile
 * leaves the key where it was, and the next open goes on from it.
 */
#include "store/store_internal.h"

#include <stdio.h>
#include <string.h>

#include "common/internal.h"

/* Rows written by one open-time build transaction at most (an event's
 * rows are never split): far below the pages LMDB lets one transaction
 * change. */
#define BUILD_ROWS 32768

static const MDB_val through_key = {sizeof "query_index_through" - 1,
				    (void *)"query_index_through"};

static int put_row(MDB_txn *txn, MDB_dbi dbi, sc_index_key *k, sc_str value,
		   uint64_t pos)
{
	size_t n = sc_index_key_id(k->b, value);
	sc_be64_put(k->b + n, pos);
	MDB_val key = {n + 8, k->b}, v = {0, NULL};
	return mdb_put(txn, dbi, &key, &v, 0);
}

/* The rows of `ev` at `pos`. Returns an LMDB code. */
static int put_event(sc_store *store, MDB_txn *txn, sc_index_key *scratch,
		     const sc_event *ev, uint64_t pos)
{
	for (size_t i = 0; i < ev->ntags; i++) {
		if (!ev->tags[i].len)
			continue;
		int rc =
		    put_row(txn, store->dbi_tags, scratch, ev->tags[i], pos);
		if (rc)
			return rc;
	}
	if (!ev->partition.len)
		return 0;
	return put_row(txn, store->dbi_partitions, scratch, ev->partition, pos);
}

/* An LMDB failure writing rows: MDB_MAP_FULL as is (the transaction runs
 * again in a larger map), others translated. */
static int write_error(sc_error *err, int rc)
{
	if (rc == MDB_MAP_FULL)
		return rc;
	return sc_store_lmdb_error(err, rc, "indexing tags and partitions");
}

/* meta "query_index_through" in txn: *found false when absent. */
static int through_read(sc_store *store, MDB_txn *txn, bool *found,
			uint64_t *through, sc_error *err)
{
	MDB_val k = through_key, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	*found = rc == 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading meta");
	if (v.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta query_index_through is %zu bytes, "
				    "expected 8; the store is damaged",
				    v.mv_size);
	*through = sc_be64_get(v.mv_data);
	return 0;
}

int sc_tag_index_through_get(sc_store *store, MDB_txn *txn, uint64_t last,
			     uint64_t *through, sc_error *err)
{
	bool found;
	int rc = through_read(store, txn, &found, through, err);
	if (rc)
		return rc;
	if (!found || *through > last)
		*through = last;
	return 0;
}

static int through_put(sc_store *store, MDB_txn *txn, uint64_t through)
{
	uint8_t b[8];
	sc_be64_put(b, through);
	MDB_val k = through_key, v = {8, b};
	return mdb_put(txn, store->dbi_meta, &k, &v, 0);
}

/* Index the log's events in [from, to], read back in txn, stopping after
 * the event that brings the rows written to `max_rows` (0: no limit);
 * *done is the last position indexed. */
static int index_log(sc_store *store, MDB_txn *txn, uint64_t from, uint64_t to,
		     size_t max_rows, uint64_t *done, sc_error *err)
{
	*done = from - 1;
	if (from > to)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return write_error(err, rc);
	uint8_t kb[8];
	sc_be64_put(kb, from);
	MDB_val k = {8, kb}, v;
	sc_index_key ikey;
	size_t rows = 0;
	int op = MDB_SET_RANGE;
	while ((!max_rows || rows < max_rows) &&
	       (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos > to)
			break;
		if (pos != *done + 1) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the event log has a gap or a bad "
					  "key at position %llu; the store "
					  "is damaged",
					  (unsigned long long)(*done + 1));
			goto out;
		}
		sc_decoded_event d;
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, &d, err);
		if (rc)
			goto out;
		rc = put_event(store, txn, &ikey, &d.ev, pos);
		rows += d.ev.ntags + 1;
		sc_decoded_event_free(&d);
		if (rc) {
			rc = write_error(err, rc);
			goto out;
		}
		*done = pos;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = write_error(err, rc);
	if (!rc && !max_rows && *done != to)
		rc = sc_error_set(err, SC_ECORRUPT,
				  "the event log ends at position %llu, "
				  "before %llu; the store is damaged",
				  (unsigned long long)*done,
				  (unsigned long long)to);
out:
	mdb_cursor_close(cur);
	return rc;
}

int sc_tag_index_append(sc_store *store, MDB_txn *txn, const sc_event *evs,
			size_t n, uint64_t first, sc_error *err)
{
	uint64_t last = first + n - 1, through = 0;
	bool found;
	int rc = through_read(store, txn, &found, &through, err);
	if (rc)
		return rc;
	/* A store without the key (none made by this format) is indexed
	 * up to the batch, and gets it now. */
	if (!found)
		through = first - 1;
	else if (last - through < store->opt.index_lag)
		return 0;
	uint64_t done;
	rc = index_log(store, txn, through + 1, first - 1, 0, &done, err);
	if (rc)
		return rc;
	sc_index_key ikey;
	for (size_t i = 0; i < n; i++) {
		rc = put_event(store, txn, &ikey, &evs[i], first + i);
		if (rc)
			return write_error(err, rc);
	}
	rc = through_put(store, txn, last);
	return rc ? write_error(err, rc) : 0;
}

int sc_tag_index_open(sc_store *store, MDB_txn *txn, const char *dir,
		      bool fresh, uint32_t version, sc_error *err)
{
	bool create = fresh || version < 4;
	const struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {
	    {"tag_index", &store->dbi_tags},
	    {"partition_index", &store->dbi_partitions},
	};
	for (size_t i = 0; i < 2; i++) {
		int rc = mdb_dbi_open(txn, dbs[i].name, create ? MDB_CREATE : 0,
				      dbs[i].dbi);
		if (rc == MDB_NOTFOUND)
			return sc_error_set(
			    err, SC_ECORRUPT,
			    "the store in %s has no %s database though its "
			    "format (%u) has one: the file is damaged; "
			    "restore it from a backup",
			    dir, dbs[i].name, version);
		if (rc == MDB_MAP_FULL)
			return rc;
		if (rc) {
			char what[64];
			snprintf(what, sizeof what, "opening database %s",
				 dbs[i].name);
			return sc_store_lmdb_error(err, rc, what);
		}
	}
	/* A new store, or an older one whose log sc_tag_index_build
	 * indexes after open's transaction (the format it gets in this one
	 * is 4). */
	if (create) {
		int rc = through_put(store, txn, 0);
		if (rc == MDB_MAP_FULL)
			return rc;
		if (rc)
			return sc_store_lmdb_error(err, rc,
						   fresh ? "writing meta"
							 : "upgrading the "
							   "store's format");
	}
	return 0;
}

/* One build transaction: the rows of the events after query_index_through,
 * up to BUILD_ROWS of them. *(bool *)ctx: the log is all indexed. */
static int build_body(sc_store *store, MDB_txn *txn, void *ctx, sc_error *err)
{
	bool *complete = ctx;
	uint64_t last, through;
	int rc = sc_store_meta_last_get(store, txn, &last, err);
	if (!rc)
		rc = sc_tag_index_through_get(store, txn, last, &through, err);
	if (rc)
		return rc;
	*complete = through == last;
	if (*complete)
		return 0;
	uint64_t done;
	rc = index_log(store, txn, through + 1, last, BUILD_ROWS, &done, err);
	if (!rc && done > through) {
		int prc = through_put(store, txn, done);
		if (prc)
			rc = write_error(err, prc);
	}
	*complete = !rc && done == last;
	return rc;
}

int sc_tag_index_build(sc_store *store, sc_error *err)
{
	for (;;) {
		MDB_txn *txn;
		int rc = sc_store_read_begin(store, &txn, err);
		if (rc)
			return rc;
		uint64_t last, through;
		rc = sc_store_meta_last_get(store, txn, &last, err);
		if (!rc)
			rc = sc_tag_index_through_get(store, txn, last,
						      &through, err);
		sc_store_read_end(store, txn);
		if (rc)
			return rc;
		/* A tail shorter than index_lag is the next appends' to
		 * index: an open that finds no more writes nothing. */
		if (last - through < store->opt.index_lag)
			return 0;
		bool complete = false;
		rc = sc_store_write(store,
				    "indexing the tags and partitions of the "
				    "log",
				    build_body, NULL, &complete, err);
		if (rc || complete)
			return rc;
	}
}

/* ---- reading ------------------------------------------------------------- */

int sc_tag_index_positions(MDB_txn *txn, MDB_dbi dbi, const char *name,
			   sc_str value, uint64_t from, uint64_t to,
			   uint64_t *pos, size_t max, size_t *n, sc_error *err)
{
	*n = 0;
	if (from > to || !max)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		goto fail;
	sc_index_key lo, hi;
	size_t idlen = sc_index_range(&lo, &hi, value, from, to);
	size_t klen = idlen + 8;
	MDB_val k = {klen, lo.b}, v;
	int op = MDB_SET_RANGE;
	while (*n < max && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		const uint8_t *kb = k.mv_data;
		if (k.mv_size == klen && memcmp(kb, lo.b, idlen) == 0) {
			/* A row of this key id: its position ends the walk
			 * once past `to`. */
			uint64_t p = sc_be64_get(kb + idlen);
			if (p > to)
				break;
			pos[(*n)++] = p;
			continue;
		}
		/* At or after lo ++ from, a key of this length with another
		 * key id is past the walk; keys of other lengths up to
		 * hi belong to other key ids that share its bytes. */
		if (k.mv_size == klen)
			break;
		size_t m = k.mv_size < klen ? k.mv_size : klen;
		int c = memcmp(kb, hi.b, m);
		if (c > 0 || (c == 0 && k.mv_size > klen))
			break;
	}
	mdb_cursor_close(cur);
	if (rc == 0 || rc == MDB_NOTFOUND)
		return 0;
fail:;
	char what[48];
	snprintf(what, sizeof what, "reading %s", name);
	return sc_store_lmdb_error(err, rc, what);
}

/* ---- verify -------------------------------------------------------------- */

/* Whether `v` has the key id k[0..n). */
static bool has_key_id(sc_str v, const uint8_t *k, size_t n)
{
	sc_index_key mine;
	return v.len && sc_index_key_id(mine.b, v) == n &&
	       memcmp(mine.b, k, n) == 0;
}

/* Every row of `dbi` names an event up to `through` with a tag (tags) or
 * a partition of the row's key id. */
static int verify_rows(sc_store *store, MDB_txn *txn, MDB_dbi dbi,
		       const char *name, bool tags, uint64_t through,
		       sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "verifying an index");
	MDB_val k, v;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size < 9 || k.mv_size > SC_INDEX_KEY_MAX) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "a %s key is %zu bytes", name,
					  k.mv_size);
			break;
		}
		size_t idlen = k.mv_size - 8;
		uint64_t pos = sc_be64_get((uint8_t *)k.mv_data + idlen);
		uint8_t pk[8];
		sc_be64_put(pk, pos);
		MDB_val ek = {8, pk}, ev;
		if (pos < 1 || pos > through ||
		    (rc = mdb_get(txn, store->dbi_events, &ek, &ev))) {
			rc = rc && rc != MDB_NOTFOUND
				 ? sc_store_lmdb_error(err, rc,
						       "verifying an index")
				 : sc_error_set(err, SC_ECORRUPT,
						"%s has a row for position "
						"%llu, which is not an indexed "
						"event of the log",
						name, (unsigned long long)pos);
			break;
		}
		sc_decoded_event d;
		rc = sc_event_decode(ev.mv_data, ev.mv_size, pos, &d, err);
		if (rc)
			break;
		bool found = false;
		if (tags)
			for (size_t i = 0; i < d.ev.ntags && !found; i++)
				found =
				    has_key_id(d.ev.tags[i], k.mv_data, idlen);
		else
			found = has_key_id(d.ev.partition, k.mv_data, idlen);
		sc_decoded_event_free(&d);
		if (!found) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the %s row of position %llu names "
					  "a value the event does not have",
					  name, (unsigned long long)pos);
			break;
		}
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc;
}

/* The row of `value` at pos exists in dbi. */
static int verify_has_row(MDB_txn *txn, MDB_dbi dbi, const char *name,
			  sc_str value, uint64_t pos, sc_error *err)
{
	sc_index_key key;
	size_t n = sc_index_key_id(key.b, value);
	sc_be64_put(key.b + n, pos);
	MDB_val k = {n + 8, key.b}, v;
	int rc = mdb_get(txn, dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_ECORRUPT,
				    "%s has no row for a value of the event "
				    "at position %llu",
				    name, (unsigned long long)pos);
	if (rc)
		return sc_store_lmdb_error(err, rc, "verifying an index");
	return 0;
}

int sc_tag_index_verify(sc_store *store, MDB_txn *txn, uint64_t last,
			sc_error *err)
{
	uint64_t through;
	int rc = sc_tag_index_through_get(store, txn, last, &through, err);
	if (!rc)
		rc = verify_rows(store, txn, store->dbi_tags, "tag_index", true,
				 through, err);
	if (!rc)
		rc = verify_rows(store, txn, store->dbi_partitions,
				 "partition_index", false, through, err);
	if (rc)
		return rc;
	/* Every row that should be there is. */
	MDB_cursor *cur;
	rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "verifying an index");
	MDB_val k, v;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos > through)
			break;
		sc_decoded_event d;
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, &d, err);
		if (rc)
			break;
		for (size_t i = 0; i < d.ev.ntags && !rc; i++)
			if (d.ev.tags[i].len)
				rc = verify_has_row(txn, store->dbi_tags,
						    "tag_index", d.ev.tags[i],
						    pos, err);
		if (!rc && d.ev.partition.len)
			rc = verify_has_row(txn, store->dbi_partitions,
					    "partition_index", d.ev.partition,
					    pos, err);
		sc_decoded_event_free(&d);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc;
}
