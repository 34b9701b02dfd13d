/*
 * The entity_index database: one row per event, empty value, keyed so
 * that the events of one entity (partition, id) within one epoch of the
 * log are one range of keys in position order:
 *
 *   key = epoch(position) (4 bytes BE) ++ key_id(partition, id)
 *         ++ position (8 bytes BE)
 *
 *   epoch(p)  = p >> 16 (65,536 positions an epoch; the last epoch, from
 *               2^48 on, takes every later position)
 *
 * The default partition (empty name):
 *   key_id("", id) = id                             if id is 1..499 bytes
 *                  = id[0..483) ++ XXH3-128(id)      if id is 500..1024 bytes
 * A named partition P (1..4096 bytes):
 *   key_id(P, id)  = XXH3-128(P) ++ id               if id is 1..483 bytes
 *                  = XXH3-128(P) ++ id[0..467) ++ XXH3-128(id)
 *                                                    if id is 484..1024 bytes
 * (each hash 16 bytes, in its canonical big-endian form).
 *
 * Why epochs first: the rows an append writes are those of the newest
 * events, so they all fall in the newest epoch's key range, a B-tree
 * subrange of at most 65,536 rows. Keyed by the entity first, the rows of
 * a catch-up land in random leaves all over an index that grows with the
 * log, and every leaf they touch is copied and written at the commit: an
 * append got slower as the store grew. Now it touches at most the leaves
 * of one epoch, whatever the size of the log. A reader pays one seek per
 * epoch its range of positions spans.
 *
 * LMDB keys are at most 511 bytes, so an id is kept whole as long as it
 * fits with the epoch, its position (and its partition's hash), and every
 * longer id is cut and completed by its hash: every valid (partition, id)
 * has a key of at most 511 bytes. A key_id does not name one entity alone
 * (a 499-byte id may equal another id's cut ++ hash, a default-partition
 * id may begin with a partition's hash, two long ids or two partitions may
 * share a hash), so a reader checks the partition and the id of every
 * event it reads through the index and skips the others.
 *
 * The index lags the log: it holds a row for every event up to meta
 * "index_through", and an append writes the rows of the events after it
 * in bulk (sorted, through one cursor), in its own transaction with the
 * new index_through, once that tail reaches index_lag events. Readers take
 * index_through from meta in their read transaction and scan the log
 * after it.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/internal.h"

#define EPOCH_BYTES 4u
#define EPOCH_SHIFT 16

_Static_assert(EPOCH_BYTES + SC_INDEX_ID_WHOLE_MAX + 8 == SC_INDEX_KEY_MAX,
	       "an epoch, a whole id and its position fill a key");
_Static_assert(EPOCH_BYTES + SC_INDEX_ID_CUT + 16 + 8 <= SC_INDEX_KEY_MAX,
	       "an epoch, a cut id, its hash and its position fit a key");
_Static_assert(SC_INDEX_ID_CUT + 16 <= SC_INDEX_ID_WHOLE_MAX,
	       "a cut id and its hash are no longer than a whole id");
_Static_assert(EPOCH_BYTES + 16 + SC_INDEX_PART_ID_WHOLE_MAX + 8 ==
		   SC_INDEX_KEY_MAX,
	       "an epoch, a partition's hash, a whole id and its position fill "
	       "a key");
_Static_assert(SC_INDEX_PART_ID_CUT + 16 == SC_INDEX_PART_ID_WHOLE_MAX,
	       "in a named partition, a cut id and its hash fill a key");

static uint64_t epoch_of(uint64_t pos)
{
	uint64_t e = pos >> EPOCH_SHIFT;
	return e > UINT32_MAX ? UINT32_MAX : e;
}

/* The first and last positions of epoch e. */
static uint64_t epoch_first(uint64_t e)
{
	return e << EPOCH_SHIFT;
}

static uint64_t epoch_last(uint64_t e)
{
	return e == UINT32_MAX ? UINT64_MAX : ((e + 1) << EPOCH_SHIFT) - 1;
}

/* Write the row key of the event of (partition, id) at `pos` to k; its
 * length. */
static size_t row_key(uint8_t *k, sc_str partition, sc_str id, uint64_t pos)
{
	sc_be32_put(k, (uint32_t)epoch_of(pos));
	size_t n =
	    EPOCH_BYTES + sc_index_key_of(k + EPOCH_BYTES, partition, id);
	sc_be64_put(k + n, pos);
	return n + 8;
}

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
 * Move a store of format 1..4 to format 5. Up to format 4 an event's
 * partition did not name its entity: the index keyed every row by the id
 * alone, and snapshots (format 1) hold no partition. Rows of formats 1..3
 * are keyed by the id first, not by the epoch: they are dropped. Rows of
 * format 4 are keyed as in format 5 as long as the log never names a
 * partition; otherwise they are dropped too. Appends then index the log
 * again from its start, at most SC_INDEX_CATCHUP_MAX events at a time, and
 * reads scan what is not indexed yet. When the log names a partition the
 * snapshots, which put every entity into one namespace, are dropped as
 * well (open then replays the log; the next snapshot is of format 2). One
 * pass over the log, once. *dropped says whether entity_index was emptied.
 */
static int upgrade_partitions(sc_store *store, MDB_txn *txn, uint32_t version,
			      bool *dropped, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "upgrading the store");
	MDB_val k, v;
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
		if (part.len) {
			named = true;
			break;
		}
	}
	mdb_cursor_close(cur);
	if (bad)
		return bad;
	if (rc == MDB_NOTFOUND)
		rc = 0;
	*dropped = false;
	if (!rc && (version < 4 || named)) {
		rc = mdb_drop(txn, store->dbi_index, 0);
		if (!rc) {
			store->index_through = 0;
			*dropped = true;
		}
	}
	if (!rc && named)
		rc = mdb_drop(txn, store->dbi_snapshots, 0);
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc)
		return sc_store_lmdb_error(err, rc, "upgrading the store");
	if (named)
		sc_store_warn(store,
			      "the log names partitions: entity_index rows "
			      "dropped (appends index the log again) and the "
			      "snapshots of the previous format dropped (open "
			      "replays the log; take a snapshot)");
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
	if (version < 5) {
		bool dropped = false;
		rc = upgrade_partitions(store, txn, version, &dropped, err);
		if (rc)
			return rc;
		if (dropped)
			found = false;
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

/* The rows of `value` at positions from..to (store_internal.h). */
size_t sc_index_range(sc_index_key *lo, sc_index_key *hi, sc_str value,
		      uint64_t from, uint64_t to)
{
	size_t idlen = sc_index_key_id(lo->b, value);
	memcpy(hi->b, lo->b, idlen);
	sc_be64_put(lo->b + idlen, from);
	sc_be64_put(hi->b + idlen, to);
	return idlen;
}

/* The rows of one catch-up: keys laid out in one buffer, sorted before
 * they are written. */
typedef struct row {
	uint64_t word; /* the sort's word (rows_sort) */
	const uint8_t *key;
	size_t len;
} row;

typedef struct row_set {
	uint8_t *buf;
	size_t used, cap;
	size_t *off; /* row i's key starts at buf + off[i] */
	size_t n, cap_off;
} row_set;

static int rows_add(row_set *r, sc_str partition, sc_str id, uint64_t pos)
{
	if (r->cap - r->used < SC_INDEX_KEY_MAX + 2 &&
	    sc_grow_array((void **)&r->buf, &r->cap,
			  r->used + SC_INDEX_KEY_MAX + 2, 1))
		return ENOMEM;
	if (r->n == r->cap_off && sc_grow_array((void **)&r->off, &r->cap_off,
						r->n + 1, sizeof *r->off))
		return ENOMEM;
	/* One length byte over 255 would not do: keep lengths apart. */
	uint8_t *k = r->buf + r->used + 2;
	size_t len = row_key(k, partition, id, pos);
	k[-2] = (uint8_t)(len >> 8);
	k[-1] = (uint8_t)len;
	r->off[r->n++] = r->used;
	r->used += len + 2;
	return 0;
}

/* LMDB's default key order: bytewise, a prefix first. The keys of a
 * catch-up share their epoch and often a long prefix of their ids, which
 * a comparison sort would read again at every comparison. So the rows are
 * sorted by the 8 bytes that follow the prefix all their keys share (an
 * LSD radix sort on that word, zero past a key's end: where two words
 * differ, so do their keys, the same way), and each run of equal words
 * the same way from its own longer shared prefix. */

/* Compare x and y, whose first d bytes are equal, in LMDB's order. */
static int row_cmp_from(const row *x, const row *y, size_t d)
{
	size_t m = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key + d, y->key + d, m - d);
	if (c)
		return c;
	return x->len < y->len ? -1 : x->len > y->len;
}

/* Insertion sort of v[0..n), whose keys share their first d bytes. */
static void rows_insertion(row *v, size_t n, size_t d)
{
	for (size_t i = 1; i < n; i++) {
		row x = v[i];
		size_t j = i;
		for (; j > 0 && row_cmp_from(&v[j - 1], &x, d) > 0; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
}

/* The length of the prefix every key of v[0..n) shares. */
static size_t rows_common_prefix(const row *v, size_t n)
{
	size_t l = v[0].len;
	for (size_t i = 1; i < n && l; i++) {
		if (v[i].len < l)
			l = v[i].len;
		if (!memcmp(v[i].key, v[0].key, l))
			continue;
		size_t j = 0;
		while (v[i].key[j] == v[0].key[j])
			j++;
		l = j;
	}
	return l;
}

/* Below this many rows, insertion sort. */
#define ROWS_SMALL 16

/* Sort v[0..n) (distinct keys) in LMDB's order, with tmp[0..n) and
 * count[0..256) as scratch. Each level of recursion sorts keys that share
 * a longer prefix than the level above, so the depth is at most a key's
 * length. */
static void rows_sort(row *v, row *tmp, size_t n, size_t *count)
{
	size_t l = 0;
	for (;;) {
		if (n <= ROWS_SMALL) {
			rows_insertion(v, n, l);
			return;
		}
		l = rows_common_prefix(v, n);
		/* A key that ends at the shared prefix (one at most: keys are
		 * distinct) comes first; the others are sorted past it. */
		size_t i = 0;
		while (i < n && v[i].len != l)
			i++;
		if (i == n)
			break;
		row x = v[i];
		memmove(v + 1, v, i * sizeof *v);
		v[0] = x;
		v++;
		n--;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t w = 0;
		for (size_t j = l; j < l + 8; j++)
			w = w << 8 | (j < v[i].len ? v[i].key[j] : 0);
		v[i].word = w;
	}
	for (unsigned shift = 0; shift < 64; shift += 8) {
		memset(count, 0, 256 * sizeof *count);
		for (size_t i = 0; i < n; i++)
			count[(v[i].word >> shift) & 0xff]++;
		/* A byte every row has leaves the order as it is. */
		if (count[(v[0].word >> shift) & 0xff] == n)
			continue;
		size_t at = 0;
		for (unsigned b = 0; b < 256; b++) {
			size_t c = count[b];
			count[b] = at;
			at += c;
		}
		for (size_t i = 0; i < n; i++)
			tmp[count[(v[i].word >> shift) & 0xff]++] = v[i];
		memcpy(v, tmp, n * sizeof *v);
	}
	/* Every key is longer than l, so the keys of a run of equal words
	 * share more than l bytes. */
	for (size_t s = 0, e; s < n; s = e) {
		for (e = s + 1; e < n && v[e].word == v[s].word; e++)
			;
		if (e - s > 1)
			rows_sort(v + s, tmp, e - s, count);
	}
}

/* Write the rows sorted, through one cursor: a key on the leaf the cursor
 * is on skips the descent from the root. Returns 0, MDB_MAP_FULL, or an sc
 * code with err set. */
static int rows_write(sc_store *store, MDB_txn *txn, row_set *r, sc_error *err)
{
	if (!r->n)
		return 0;
	row *v = sc_malloc(2 * r->n * sizeof *v);
	if (!v)
		return sc_error_set(err, ENOMEM,
				    "out of memory sorting %zu entity_index "
				    "rows",
				    r->n);
	for (size_t i = 0; i < r->n; i++) {
		const uint8_t *p = r->buf + r->off[i];
		v[i] = (row){0, p + 2, ((size_t)p[0] << 8) | p[1]};
	}
	size_t count[256];
	rows_sort(v, v + r->n, r->n, count);
#ifdef SC_DEBUG
	for (size_t i = 1; i < r->n; i++)
		SC_ENSURE(row_cmp_from(&v[i - 1], &v[i], 0) < 0);
#endif
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_index, &cur);
	if (!rc) {
		for (size_t i = 0; !rc && i < r->n; i++) {
			MDB_val k = {v[i].len, (void *)v[i].key}, e = {0, NULL};
			rc = mdb_cursor_put(cur, &k, &e, 0);
		}
		mdb_cursor_close(cur);
	}
	sc_free(v);
	if (rc && rc != MDB_MAP_FULL)
		return sc_store_lmdb_error(err, rc, "writing entity_index");
	return rc;
}

/* Add the rows of the log's events from..to (read back in txn) to r.
 * Returns 0 or an sc code with err set. */
static int rows_add_log(sc_store *store, MDB_txn *txn, row_set *r,
			uint64_t from, uint64_t to, sc_error *err)
{
	MDB_cursor *cur;
	int lrc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (lrc)
		return sc_store_lmdb_error(err, lrc,
					   "reading the log to index it");
	uint8_t kb[8];
	sc_be64_put(kb, from);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE, rc = 0;
	uint64_t expect = from;
	while (expect <= to && (lrc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos != expect) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the event log has a gap or a bad "
					  "key at position %llu; the store is "
					  "damaged",
					  (unsigned long long)expect);
			break;
		}
		sc_str part, id;
		rc = sc_event_peek_key(v.mv_data, v.mv_size, pos, &part, &id,
				       err);
		if (rc)
			break;
		if (rows_add(r, part, id, pos)) {
			rc = sc_error_set(err, ENOMEM,
					  "out of memory indexing the log");
			break;
		}
		expect++;
	}
	mdb_cursor_close(cur);
	if (rc)
		return rc;
	if (lrc && lrc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, lrc,
					   "reading the log to index it");
	if (expect <= to)
		return sc_error_set(err, SC_ECORRUPT,
				    "the event log ends at position %llu, "
				    "before %llu; the store is damaged",
				    (unsigned long long)(expect - 1),
				    (unsigned long long)to);
	return 0;
}

int sc_index_catch_up(sc_store *store, MDB_txn *txn, uint64_t first,
		      const sc_event *evs, size_t n, uint64_t *through,
		      sc_error *err)
{
	uint64_t from = store->index_through + 1;
	uint64_t tail_end = first - 1;
	bool own = true;
	if (tail_end >= from && tail_end - from >= SC_INDEX_CATCHUP_MAX) {
		/* A backlog (a store being upgraded): a bounded piece of it
		 * now, the rest by the next appends. */
		tail_end = from + SC_INDEX_CATCHUP_MAX - 1;
		own = false;
	}
	row_set r = {0};
	int rc = 0;
	if (tail_end >= from)
		rc = rows_add_log(store, txn, &r, from, tail_end, err);
	for (size_t i = 0; !rc && own && i < n; i++)
		if (rows_add(&r, evs[i].partition, evs[i].entity, first + i))
			rc = sc_error_set(err, ENOMEM,
					  "out of memory indexing %zu events",
					  n);
	if (!rc)
		rc = rows_write(store, txn, &r, err);
	sc_free(r.buf);
	sc_free(r.off);
	if (!rc)
		*through = own ? first + n - 1 : tail_end;
	return rc;
}

/* Walk an index keyed key_id ++ position (tag_index, partition_index:
 * no epoch). Rows of other key_ids that share the prefix (a key_id that is this
 * one followed by 8 more bytes) are skipped by length; rows of other ids with
 * the same key_id are the caller's to skip. */
/* Call fn with the positions lo..hi (one epoch's) that entity_index lists
 * under key_id (the idlen bytes at key + EPOCH_BYTES of both lo_key and
 * hi_key, which the caller filled). Rows of other key_ids that share the
 * prefix (a key_id that is this one followed by more bytes) are skipped by
 * length; rows of other ids with the same key_id are the caller's to skip.
 * Returns 0 or fn's value; an LMDB failure sets *lrc. */
static int walk_epoch(MDB_cursor *cur, sc_index_key *lo_key,
		      sc_index_key *hi_key, size_t idlen, uint64_t lo,
		      uint64_t hi, sc_index_pos_fn fn, void *ctx, int *lrc)
{
	uint32_t e = (uint32_t)epoch_of(lo);
	size_t klen = EPOCH_BYTES + idlen + 8;
	sc_be32_put(lo_key->b, e);
	sc_be32_put(hi_key->b, e);
	sc_be64_put(lo_key->b + klen - 8, lo);
	sc_be64_put(hi_key->b + klen - 8, hi);
	MDB_val k = {klen, lo_key->b}, v;
	int op = MDB_SET_RANGE, rc;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		size_t m = k.mv_size < klen ? k.mv_size : klen;
		int c = memcmp(k.mv_data, hi_key->b, m);
		if (c > 0 || (c == 0 && k.mv_size > klen))
			return 0; /* past epoch ++ id ++ hi */
		/* Keys of length klen between lo and hi start with this
		 * epoch and key_id; other lengths there belong to other
		 * entities. */
		if (k.mv_size != klen)
			continue;
		rc = fn(ctx, sc_be64_get((uint8_t *)k.mv_data + klen - 8));
		if (rc)
			return rc;
	}
	if (rc != MDB_NOTFOUND)
		*lrc = rc;
	return 0;
}

/* One seek per epoch of [from, to]. */
int sc_index_walk(sc_store *store, MDB_txn *txn, sc_str partition, sc_str id,
		  uint64_t from, uint64_t to, sc_index_pos_fn fn, void *ctx,
		  sc_error *err)
{
	if (from > to)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_index, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading entity_index");
	sc_index_key lo, hi;
	size_t idlen = sc_index_key_of(lo.b + EPOCH_BYTES, partition, id);
	memcpy(hi.b + EPOCH_BYTES, lo.b + EPOCH_BYTES, idlen);
	int lrc = 0;
	for (uint64_t e = epoch_of(from); !rc && !lrc && e <= epoch_of(to);
	     e++) {
		uint64_t a = from > epoch_first(e) ? from : epoch_first(e);
		uint64_t z = to < epoch_last(e) ? to : epoch_last(e);
		rc = walk_epoch(cur, &lo, &hi, idlen, a, z, fn, ctx, &lrc);
	}
	mdb_cursor_close(cur);
	if (lrc)
		return sc_store_lmdb_error(err, lrc, "reading entity_index");
	return rc;
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
		if (k.mv_size < EPOCH_BYTES + 9 ||
		    k.mv_size > SC_INDEX_KEY_MAX) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "an entity_index key is %zu bytes",
					  k.mv_size);
			goto out;
		}
		const uint8_t *kb = k.mv_data;
		size_t idlen = k.mv_size - EPOCH_BYTES - 8;
		uint64_t pos = sc_be64_get(kb + EPOCH_BYTES + idlen);
		if (sc_be32_get(kb) != epoch_of(pos)) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the entity_index row of position "
					  "%llu is filed under epoch %u, not "
					  "%u",
					  (unsigned long long)pos,
					  (unsigned)sc_be32_get(kb),
					  (unsigned)epoch_of(pos));
			goto out;
		}
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
		    memcmp(want.b, kb + EPOCH_BYTES, idlen) != 0) {
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
