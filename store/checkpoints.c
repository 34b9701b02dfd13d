/*
 * Per-partition checkpoints and the partition catalog (store format 6).
 *
 * partition_catalog, one row per partition the log names (the default
 * partition included, once it has an event), keyed by the partition's key
 * id (sc_part_key: 17 bytes), value:
 *
 *   version (1 byte, 1) | last (8) | events (8) | tail (8) | checkpoint (8)
 *   | the partition's name (the rest)
 *
 * all big-endian: the position of its last event, its event count, the
 * events after its newest checkpoint (the tail) and that checkpoint's
 * position (0: none). Every append updates the rows of the partitions its
 * batch touches, one put each, in its own transaction; so open knows every
 * partition and its tail without reading the log.
 *
 * checkpoints, keyed key id (17) ++ position (8, BE) ++ part (4, BE): part
 * 0 the snapshot header (snapshot/snapshot.h, with one_partition and the
 * partition's name), part i chunk i-1, and part CKPT_COUNT_PART the
 * partition's event count up to the position (8 bytes BE; it gives the
 * tail back when newer checkpoints are dropped). A checkpoint is written
 * in one transaction with its catalog row, so it is whole or absent; it
 * may be damaged on disk later, which a load detects (checksums, counts,
 * the partition named by its header) and answers by falling back to an
 * older checkpoint or a full replay of that partition.
 *
 * Encoding runs from a view pinned under write_mu (so the view is exactly
 * the committed log, and the catalog's count read then is its count),
 * then without the writer mutex and without a write transaction; only the
 * short storing transaction goes through sc_store_write.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "snapshot/snapshot.h"

#define CKPT_KEY_LEN	(SC_PART_KEY_LEN + 12)
#define CKPT_COUNT_PART UINT32_MAX
#define CAT_FIXED	33
#define CAT_VERSION	1

/* The default partition is due once its tail is non-empty and the log
 * after its newest checkpoint holds this many times the bound: open scans
 * that stretch of the log for it. */
#define DEFAULT_LAG_FACTOR 4
/* Events of a partition's tail read through partition_index between two
 * releases of their map pages. Each is likely on a page of its own, which
 * the kernel maps with up to 15 neighbours (fault-around): 64 of them
 * keep a few MiB mapped at most. */
#define TAIL_RELEASE_EVERY 64
/* The same for a scan of the log, whose values are contiguous. */
#define SCAN_RELEASE_EVERY 512

static double mono_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

size_t sc_part_key(uint8_t *k, sc_str partition)
{
	memset(k, 0, SC_PART_KEY_LEN);
	if (partition.len) {
		XXH128_canonical_t h;
		XXH128_canonicalFromHash(
		    &h, XXH3_128bits(partition.ptr, partition.len));
		k[0] = 1;
		memcpy(k + 1, h.digest, sizeof h.digest);
	}
	return SC_PART_KEY_LEN;
}

static void ckpt_key(uint8_t *k, const uint8_t *pk, uint64_t pos, uint32_t part)
{
	memcpy(k, pk, SC_PART_KEY_LEN);
	sc_be64_put(k + SC_PART_KEY_LEN, pos);
	sc_be32_put(k + SC_PART_KEY_LEN + 8, part);
}

static bool str_eq(sc_str a, const void *b, size_t blen)
{
	return a.len == blen && (!blen || memcmp(a.ptr, b, blen) == 0);
}

/* ---- the catalog --------------------------------------------------------- */

/* Decode a catalog row; false when damaged. name points into v. */
static bool cat_decode(const MDB_val *v, sc_partition_info *out)
{
	const uint8_t *p = v->mv_data;
	if (v->mv_size < CAT_FIXED || p[0] != CAT_VERSION)
		return false;
	memset(out, 0, sizeof *out);
	out->last_position = sc_be64_get(p + 1);
	out->events = sc_be64_get(p + 9);
	out->tail = sc_be64_get(p + 17);
	out->checkpoint_position = sc_be64_get(p + 25);
	out->name.ptr = (const char *)p + CAT_FIXED;
	out->name.len = v->mv_size - CAT_FIXED;
	return out->name.len <= SC_EVENT_FIELD_MAX;
}

static int cat_put(sc_store *store, MDB_txn *txn, const sc_partition_info *r)
{
	uint8_t k[SC_PART_KEY_LEN];
	sc_part_key(k, r->name);
	MDB_val kv = {SC_PART_KEY_LEN, k}, v = {CAT_FIXED + r->name.len, NULL};
	int rc = mdb_put(txn, store->dbi_catalog, &kv, &v, MDB_RESERVE);
	if (rc)
		return rc;
	uint8_t *p = v.mv_data;
	p[0] = CAT_VERSION;
	sc_be64_put(p + 1, r->last_position);
	sc_be64_put(p + 9, r->events);
	sc_be64_put(p + 17, r->tail);
	sc_be64_put(p + 25, r->checkpoint_position);
	if (r->name.len)
		memcpy(p + CAT_FIXED, r->name.ptr, r->name.len);
	return 0;
}

/* The row of `partition` in txn: SC_NOTFOUND when the partition has no
 * event; SC_ECORRUPT for a damaged row or one of another name. */
static int cat_get(sc_store *store, MDB_txn *txn, sc_str partition,
		   sc_partition_info *out, sc_error *err)
{
	uint8_t k[SC_PART_KEY_LEN];
	sc_part_key(k, partition);
	MDB_val kv = {SC_PART_KEY_LEN, k}, v;
	int rc = mdb_get(txn, store->dbi_catalog, &kv, &v);
	if (rc == MDB_NOTFOUND)
		return SC_NOTFOUND;
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "reading partition_catalog");
	if (!cat_decode(&v, out) ||
	    !str_eq(partition, out->name.ptr, out->name.len))
		return sc_error_set(
		    err, SC_ECORRUPT,
		    "the partition_catalog row of partition "
		    "'%.*s' is damaged; the store is damaged",
		    (int)(partition.len > 64 ? 64 : partition.len),
		    partition.ptr ? partition.ptr : "");
	return 0;
}

/* Whether the row is due for a checkpoint with the log ending at `last`. */
static bool cat_due(const sc_store *store, const sc_partition_info *r,
		    uint64_t last)
{
	uint64_t bound = store->opt.checkpoint_tail;
	if (bound == SC_CHECKPOINT_NEVER || !r->tail)
		return false;
	if (r->tail >= bound)
		return true;
	return !r->name.len &&
	       last - r->checkpoint_position >= DEFAULT_LAG_FACTOR * bound;
}

/* A batch's partitions, counted in an open-addressing table (no sort). */
typedef struct part_count {
	sc_str part;
	uint64_t hash; /* 0: free slot */
	uint64_t count, last;
} part_count;

/* One partition's share of a batch: count events, last position; its
 * row read and rewritten in place through `cur` (one search). */
static int cat_add(sc_store *store, MDB_cursor *cur, sc_str part,
		   uint64_t count, uint64_t last_pos, uint64_t log_last,
		   sc_error *err)
{
	uint8_t k[SC_PART_KEY_LEN];
	sc_part_key(k, part);
	MDB_val kv = {SC_PART_KEY_LEN, k}, v;
	sc_partition_info r;
	int rc = mdb_cursor_get(cur, &kv, &v, MDB_SET_KEY);
	bool found = rc == 0;
	if (rc && rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc,
					   "reading partition_catalog");
	if (found &&
	    (!cat_decode(&v, &r) || !str_eq(part, r.name.ptr, r.name.len)))
		return sc_error_set(err, SC_ECORRUPT,
				    "the partition_catalog row of partition "
				    "'%.*s' is damaged; the store is damaged",
				    (int)(part.len > 64 ? 64 : part.len),
				    part.ptr ? part.ptr : "");
	if (!found)
		memset(&r, 0, sizeof r);
	r.name = part;
	r.last_position = last_pos;
	r.events += count;
	r.tail += count;
	uint8_t buf[CAT_FIXED + SC_EVENT_FIELD_MAX];
	buf[0] = CAT_VERSION;
	sc_be64_put(buf + 1, r.last_position);
	sc_be64_put(buf + 9, r.events);
	sc_be64_put(buf + 17, r.tail);
	sc_be64_put(buf + 25, r.checkpoint_position);
	if (part.len)
		memcpy(buf + CAT_FIXED, part.ptr, part.len);
	MDB_val nv = {CAT_FIXED + part.len, buf};
	kv.mv_size = SC_PART_KEY_LEN;
	kv.mv_data = k;
	rc = mdb_cursor_put(cur, &kv, &nv, found ? MDB_CURRENT : 0);
	if (rc)
		return rc == MDB_MAP_FULL
			   ? rc
			   : sc_store_lmdb_error(err, rc,
						 "writing partition_catalog");
	if (cat_due(store, &r, log_last))
		store->ckpt_due = true;
	return 0;
}

int sc_catalog_append(sc_store *store, MDB_txn *txn, const sc_event *evs,
		      size_t n, uint64_t first, sc_error *err)
{
	uint64_t log_last = first + n - 1;
	bool one = true;
	for (size_t i = 1; i < n && one; i++)
		one = evs[i].partition.len == evs[0].partition.len &&
		      (!evs[0].partition.len ||
		       memcmp(evs[i].partition.ptr, evs[0].partition.ptr,
			      evs[0].partition.len) == 0);
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_catalog, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "writing partition_catalog");
	bool touched_default = !evs[0].partition.len;
	if (one) {
		rc = cat_add(store, cur, evs[0].partition, n, log_last,
			     log_last, err);
	} else {
		size_t cap = 16;
		while (cap < 2 * n)
			cap *= 2;
		part_count *t = sc_calloc(cap, sizeof *t);
		if (!t) {
			mdb_cursor_close(cur);
			return sc_error_set(err, ENOMEM,
					    "out of memory cataloguing a "
					    "batch of %zu events",
					    n);
		}
		for (size_t i = 0; i < n; i++) {
			sc_str p = evs[i].partition;
			if (!p.len)
				touched_default = true;
			uint64_t h = XXH3_64bits(p.ptr, p.len) | 1;
			size_t at = (size_t)h & (cap - 1);
			while (t[at].hash &&
			       (t[at].hash != h ||
				!str_eq(p, t[at].part.ptr, t[at].part.len)))
				at = (at + 1) & (cap - 1);
			if (!t[at].hash) {
				t[at].hash = h;
				t[at].part = p;
			}
			t[at].count++;
			t[at].last = first + i;
		}
		rc = 0;
		for (size_t i = 0; i < cap && !rc; i++)
			if (t[i].hash)
				rc = cat_add(store, cur, t[i].part, t[i].count,
					     t[i].last, log_last, err);
		sc_free(t);
	}
	mdb_cursor_close(cur);
	if (rc || touched_default)
		return rc;
	/* The default partition may fall due by the log growing past its
	 * newest checkpoint. */
	sc_partition_info d;
	rc = cat_get(store, txn, (sc_str){"", 0}, &d, err);
	if (rc == SC_NOTFOUND)
		return 0;
	if (!rc && cat_due(store, &d, log_last))
		store->ckpt_due = true;
	return rc;
}

/* Build the catalog of a store of an older format from its log, in open's
 * transaction. Runs of one partition are counted in memory and put once. */
static int catalog_build(sc_store *store, MDB_txn *txn, sc_error *err)
{
	MDB_cursor *cur, *cat;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading the event log");
	rc = mdb_cursor_open(txn, store->dbi_catalog, &cat);
	if (rc) {
		mdb_cursor_close(cur);
		return sc_store_lmdb_error(err, rc,
					   "writing partition_catalog");
	}
	MDB_val k, v;
	int op = MDB_FIRST;
	char *run = NULL;
	size_t run_len = 0, run_cap = 0;
	uint64_t run_n = 0, run_last = 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != 8) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "an events key is %zu bytes, "
					  "expected 8; the store is damaged",
					  k.mv_size);
			goto out;
		}
		uint64_t pos = sc_be64_get(k.mv_data);
		sc_str p, id;
		rc = sc_event_peek_key(v.mv_data, v.mv_size, pos, &p, &id, err);
		if (rc)
			goto out;
		bool same = run_n && str_eq(p, run, run_len);
		if (!same && run_n) {
			rc = cat_add(store, cat, (sc_str){run, run_len}, run_n,
				     run_last, run_last, err);
			run_n = 0;
		}
		if (!rc && !same) {
			if (p.len + 1 > run_cap) {
				char *nr = sc_realloc(run, p.len + 1);
				if (!nr)
					rc = sc_error_set(err, ENOMEM,
							  "out of memory "
							  "cataloguing "
							  "partitions");
				else {
					run = nr;
					run_cap = p.len + 1;
				}
			}
			if (!rc) {
				if (p.len)
					memcpy(run, p.ptr, p.len);
				run_len = p.len;
			}
		}
		if (rc)
			goto out;
		run_n++;
		run_last = pos;
	}
	if (rc != MDB_NOTFOUND) {
		rc = sc_store_lmdb_error(err, rc, "reading the event log");
		goto out;
	}
	rc = run_n ? cat_add(store, cat, (sc_str){run ? run : "", run_len},
			     run_n, run_last, run_last, err)
		   : 0;
out:
	mdb_cursor_close(cat);
	mdb_cursor_close(cur);
	sc_free(run);
	return rc;
}

int sc_checkpoints_open(sc_store *store, MDB_txn *txn, const char *dir,
			bool fresh, uint32_t version, sc_error *err)
{
	bool create = fresh || version < 6;
	if (store->opt.read_only && create)
		create = false; /* refused before: needs the upgrade */
	const struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {{"checkpoints", &store->dbi_checkpoints},
		   {"partition_catalog", &store->dbi_catalog}};
	for (size_t i = 0; i < 2; i++) {
		int rc = mdb_dbi_open(txn, dbs[i].name, create ? MDB_CREATE : 0,
				      dbs[i].dbi);
		if (rc == MDB_NOTFOUND)
			return sc_error_set(
			    err, SC_ECORRUPT,
			    "the store in %s has format %u but no %s "
			    "database: the file is damaged; restore it from a "
			    "backup",
			    dir, version, dbs[i].name);
		if (rc == MDB_MAP_FULL)
			return rc;
		if (rc)
			return sc_store_lmdb_error(err, rc,
						   "opening the checkpoint "
						   "databases");
	}
	if (fresh || version >= 6)
		return 0;
	/* Whatever an older store holds under these names is not ours (a
	 * store moved back to an older format, by hand): both start empty,
	 * then the catalog is counted from the log. */
	int rc = mdb_drop(txn, store->dbi_checkpoints, 0);
	if (!rc)
		rc = mdb_drop(txn, store->dbi_catalog, 0);
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "emptying the checkpoint databases");
	return catalog_build(store, txn, err);
}

/* ---- verification ---------------------------------------------------------
 */

/* One partition's figures counted from the log, in an open-addressing
 * table keyed by the partition key. */
typedef struct vrow {
	uint8_t key[SC_PART_KEY_LEN];
	bool used, seen;
	uint64_t events, last;
} vrow;

typedef struct vtable {
	vrow *rows;
	size_t cap, n;
} vtable;

static vrow *vt_slot(vrow *rows, size_t cap, const uint8_t *key)
{
	uint64_t h;
	memcpy(&h, key + 1, sizeof h);
	size_t i = (size_t)(h ^ key[0]) & (cap - 1);
	while (rows[i].used && memcmp(rows[i].key, key, SC_PART_KEY_LEN) != 0)
		i = (i + 1) & (cap - 1);
	return &rows[i];
}

static vrow *vt_get(vtable *t, const uint8_t *key)
{
	if ((t->n + 1) * 2 > t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 64;
		vrow *nr = sc_calloc(nc, sizeof *nr);
		if (!nr)
			return NULL;
		for (size_t i = 0; i < t->cap; i++)
			if (t->rows[i].used)
				*vt_slot(nr, nc, t->rows[i].key) = t->rows[i];
		sc_free(t->rows);
		t->rows = nr;
		t->cap = nc;
	}
	vrow *r = vt_slot(t->rows, t->cap, key);
	if (!r->used) {
		r->used = true;
		memcpy(r->key, key, SC_PART_KEY_LEN);
		t->n++;
	}
	return r;
}

/* Count a log record's partition in the table `ctx`. */
static int vt_count_row(void *ctx, const MDB_val *k, const MDB_val *v,
			sc_error *err)
{
	uint64_t pos = k->mv_size == 8 ? sc_be64_get(k->mv_data) : 0;
	sc_str p, id;
	int rc = sc_event_peek_key(v->mv_data, v->mv_size, pos, &p, &id, err);
	if (rc)
		return rc;
	uint8_t key[SC_PART_KEY_LEN];
	sc_part_key(key, p);
	vrow *r = vt_get(ctx, key);
	if (!r)
		return sc_error_set(err, ENOMEM,
				    "out of memory verifying the catalog");
	r->events++;
	r->last = pos;
	return 0;
}

/* Check a catalog row against the counts in the table `ctx`, marking it
 * seen. */
static int vt_check_row(void *ctx, const MDB_val *k, const MDB_val *v,
			sc_error *err)
{
	vtable *t = ctx;
	sc_partition_info pi;
	uint8_t key[SC_PART_KEY_LEN];
	bool ok = k->mv_size == SC_PART_KEY_LEN && cat_decode(v, &pi);
	if (ok) {
		sc_part_key(key, pi.name);
		ok = memcmp(key, k->mv_data, SC_PART_KEY_LEN) == 0;
	}
	if (!ok)
		return sc_error_set(err, SC_ECORRUPT,
				    "partition_catalog has a damaged row");
	vrow *r = t->cap ? vt_slot(t->rows, t->cap, key) : NULL;
	uint64_t events = 0, last = 0;
	if (r && r->used) {
		r->seen = true;
		events = r->events;
		last = r->last;
	}
	if (pi.events != events || pi.last_position != last ||
	    pi.tail > pi.events)
		return sc_error_set(
		    err, SC_ECORRUPT,
		    "partition_catalog says partition '%.*s' has %llu events, "
		    "the last at %llu (tail %llu), but the log holds %llu, the "
		    "last at %llu",
		    (int)(pi.name.len > 64 ? 64 : pi.name.len), pi.name.ptr,
		    (unsigned long long)pi.events,
		    (unsigned long long)pi.last_position,
		    (unsigned long long)pi.tail, (unsigned long long)events,
		    (unsigned long long)last);
	return 0;
}

int sc_catalog_verify(sc_store *store, MDB_txn *txn, sc_error *err)
{
	vtable t = {NULL, 0, 0};
	int rc = sc_store_rows(txn, store->dbi_events, "verifying the catalog",
			       vt_count_row, &t, err);
	if (!rc)
		rc = sc_store_rows(txn, store->dbi_catalog,
				   "verifying the catalog", vt_check_row, &t,
				   err);
	for (size_t i = 0; !rc && i < t.cap; i++)
		if (t.rows[i].used && !t.rows[i].seen)
			rc = sc_error_set(err, SC_ECORRUPT,
					  "partition_catalog has no row for a "
					  "partition of %llu events (the last "
					  "at %llu)",
					  (unsigned long long)t.rows[i].events,
					  (unsigned long long)t.rows[i].last);
	sc_free(t.rows);
	return rc;
}

/* ---- listing ------------------------------------------------------------- */

/* The distinct checkpoint positions of the partition keyed pk in txn,
 * newest first. *out is sc_malloc'd. */
static int ckpt_positions(sc_store *store, MDB_txn *txn, const uint8_t *pk,
			  uint64_t **out, size_t *n, sc_error *err)
{
	*out = NULL;
	*n = 0;
	size_t cap = 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_checkpoints, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "listing checkpoints");
	uint8_t kb[CKPT_KEY_LEN];
	ckpt_key(kb, pk, 0, 0);
	MDB_val k = {CKPT_KEY_LEN, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != CKPT_KEY_LEN ||
		    memcmp(k.mv_data, pk, SC_PART_KEY_LEN) != 0)
			break;
		uint64_t pos =
		    sc_be64_get((uint8_t *)k.mv_data + SC_PART_KEY_LEN);
		if (*n && (*out)[*n - 1] == pos)
			continue;
		if (sc_grow_array((void **)out, &cap, *n + 1, sizeof **out)) {
			mdb_cursor_close(cur);
			sc_free(*out);
			*out = NULL;
			return sc_error_set(
			    err, ENOMEM, "out of memory listing checkpoints");
		}
		(*out)[(*n)++] = pos;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND) {
		sc_free(*out);
		*out = NULL;
		return sc_store_lmdb_error(err, rc, "listing checkpoints");
	}
	/* Newest first. */
	for (size_t i = 0; i < *n / 2; i++) {
		uint64_t t = (*out)[i];
		(*out)[i] = (*out)[*n - 1 - i];
		(*out)[*n - 1 - i] = t;
	}
	return 0;
}

/* Delete every record of the checkpoint at `pos`. */
static int ckpt_delete(sc_store *store, MDB_txn *txn, const uint8_t *pk,
		       uint64_t pos)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_checkpoints, &cur);
	if (rc)
		return rc;
	uint8_t kb[CKPT_KEY_LEN];
	ckpt_key(kb, pk, pos, 0);
	MDB_val k = {CKPT_KEY_LEN, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != CKPT_KEY_LEN ||
		    memcmp(k.mv_data, pk, SC_PART_KEY_LEN) != 0 ||
		    sc_be64_get((uint8_t *)k.mv_data + SC_PART_KEY_LEN) != pos)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The header of the checkpoint at pos, checked against the partition and
 * the position, with every chunk record present. On success *h owns its
 * arrays and chunks/lens (sc_malloc'd) point into the map. */
static int ckpt_open(sc_store *store, MDB_txn *txn, sc_str partition,
		     const uint8_t *pk, uint64_t pos, sc_snapshot_header *h,
		     const void ***chunks, size_t **lens, uint64_t *bytes,
		     sc_error *err)
{
	*chunks = NULL;
	*lens = NULL;
	uint8_t kb[CKPT_KEY_LEN];
	ckpt_key(kb, pk, pos, 0);
	MDB_val k = {CKPT_KEY_LEN, kb}, v;
	int rc = mdb_get(txn, store->dbi_checkpoints, &k, &v);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_ECORRUPT,
				    "its header record is missing");
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading its header");
	rc = sc_snapshot_header_decode(v.mv_data, v.mv_size, h, err);
	if (rc)
		return rc;
	*bytes = v.mv_size;
	if (h->position != pos)
		rc = sc_error_set(err, SC_ECORRUPT,
				  "its header says position %llu",
				  (unsigned long long)h->position);
	else if (!h->one_partition ||
		 !str_eq(partition, h->partition, h->partition_len))
		rc = sc_error_set(err, SC_ECORRUPT,
				  "its header names another partition");
	if (!rc && h->chunk_count) {
		*chunks = sc_malloc(h->chunk_count * sizeof **chunks);
		*lens = sc_malloc(h->chunk_count * sizeof **lens);
		if (!*chunks || !*lens)
			rc = sc_error_set(err, ENOMEM,
					  "out of memory listing %u chunks",
					  h->chunk_count);
	}
	for (uint32_t i = 0; !rc && i < h->chunk_count; i++) {
		ckpt_key(kb, pk, pos, i + 1);
		MDB_val ck = {CKPT_KEY_LEN, kb}, cv;
		rc = mdb_get(txn, store->dbi_checkpoints, &ck, &cv);
		if (rc == MDB_NOTFOUND)
			rc = sc_error_set(err, SC_ECORRUPT,
					  "chunk %u of %u is missing", i,
					  h->chunk_count);
		else if (rc)
			rc = sc_store_lmdb_error(err, rc, "reading a chunk");
		else {
			(*chunks)[i] = cv.mv_data;
			(*lens)[i] = cv.mv_size;
			*bytes += cv.mv_size;
		}
	}
	if (rc) {
		sc_free(*chunks);
		sc_free(*lens);
		*chunks = NULL;
		*lens = NULL;
		sc_snapshot_header_clear(h);
	}
	return rc;
}

static int count_entity(void *ctx, const sc_snapshot_entity *e)
{
	(void)ctx;
	(void)e;
	return 0;
}

int sc_store_checkpoints(sc_store *store, sc_str partition,
			 sc_checkpoint_info *out, size_t max, sc_error *err)
{
	sc_error_clear(err);
	if (!store || (max && !out) || (partition.len && !partition.ptr) ||
	    partition.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_checkpoints needs a store, a "
				    "partition of at most %u bytes and room "
				    "for the result",
				    (unsigned)SC_EVENT_FIELD_MAX);
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint8_t pk[SC_PART_KEY_LEN];
	sc_part_key(pk, partition);
	uint64_t *pos;
	size_t n;
	rc = ckpt_positions(store, txn, pk, &pos, &n, err);
	if (rc) {
		sc_store_read_end(store, txn);
		return rc;
	}
	size_t got = 0;
	for (size_t i = 0; i < n && got < max; i++) {
		sc_checkpoint_info *ci = &out[got++];
		memset(ci, 0, sizeof *ci);
		ci->position = pos[i];
		sc_snapshot_header h;
		const void **chunks;
		size_t *lens;
		uint64_t bytes = 0;
		sc_error e;
		sc_error_clear(&e);
		int crc = ckpt_open(store, txn, partition, pk, pos[i], &h,
				    &chunks, &lens, &bytes, &e);
		if (crc)
			continue; /* listed, not verifying */
		ci->entities = h.entity_count;
		ci->bytes = bytes;
		ci->created_at = h.created_at;
		ci->verifies = true;
		for (uint32_t c = 0; c < h.chunk_count && ci->verifies; c++)
			ci->verifies = sc_snapshot_chunk_decode(
					   &h, c, chunks[c], lens[c],
					   count_entity, NULL, NULL, &e) == 0;
		sc_free(chunks);
		sc_free(lens);
		sc_snapshot_header_clear(&h);
	}
	sc_free(pos);
	sc_store_read_end(store, txn);
	return (int)got;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct ckpt_write {
	const sc_snapshot_encoded *enc;
	sc_str partition;
	uint8_t pk[SC_PART_KEY_LEN];
	uint64_t events_at; /* the partition's events up to enc->position */
} ckpt_write;

static int ckpt_write_body(sc_store *store, MDB_txn *txn, void *ctx,
			   sc_error *err)
{
	ckpt_write *w = ctx;
	const sc_snapshot_encoded *enc = w->enc;
	uint8_t kb[CKPT_KEY_LEN];
	int rc = 0;
	for (uint32_t i = 0; i <= enc->chunk_count && !rc; i++) {
		const sc_snapshot_blob *b =
		    i ? &enc->chunks[i - 1] : &enc->header;
		ckpt_key(kb, w->pk, enc->position, i);
		MDB_val k = {CKPT_KEY_LEN, kb}, v = {b->len, b->data};
		rc = mdb_put(txn, store->dbi_checkpoints, &k, &v, 0);
		if (i == enc->chunk_count / 2)
			sc_killpoint("checkpoint_mid_write");
	}
	uint8_t cb[8];
	sc_be64_put(cb, w->events_at);
	ckpt_key(kb, w->pk, enc->position, CKPT_COUNT_PART);
	MDB_val k = {CKPT_KEY_LEN, kb}, v = {8, cb};
	if (!rc)
		rc = mdb_put(txn, store->dbi_checkpoints, &k, &v, 0);
	uint64_t *pos = NULL;
	size_t n = 0;
	if (!rc) {
		rc = ckpt_positions(store, txn, w->pk, &pos, &n, err);
		if (rc)
			return rc;
	}
	for (size_t i = store->opt.checkpoint_keep; i < n && !rc; i++)
		rc = ckpt_delete(store, txn, w->pk, pos[i]);
	sc_free(pos);
	sc_partition_info r;
	if (!rc) {
		/* A partition without events has no row (its checkpoint is
		 * empty and never loaded). */
		int grc = cat_get(store, txn, w->partition, &r, err);
		if (grc && grc != SC_NOTFOUND)
			return grc;
		/* The row is rewritten from the caller's name, not from
		 * the map's bytes the put may move. */
		r.name = w->partition;
		if (!grc && enc->position >= r.checkpoint_position) {
			r.checkpoint_position = enc->position;
			r.tail = r.events - w->events_at;
			rc = cat_put(store, txn, &r);
		}
	}
	if (!rc)
		sc_killpoint("checkpoint_before_commit");
	if (rc == MDB_MAP_FULL)
		return rc;
	if (rc)
		return sc_store_lmdb_error(err, rc, "storing the checkpoint");
	return 0;
}

int sc_checkpoint_take(sc_store *store, sc_str partition,
		       sc_checkpoint_info *info, sc_error *err)
{
	if (info)
		memset(info, 0, sizeof *info);
	pthread_mutex_lock(&store->ckpt_mu);
	sc_reader *reader = NULL;
	int rc = sc_reader_open(store->cache, &reader, err);
	if (rc) {
		pthread_mutex_unlock(&store->ckpt_mu);
		return rc;
	}
	/* Under write_mu the newest version is the committed log, and the
	 * catalog read now counts the partition's events in it. */
	ckpt_write w = {.partition = partition};
	sc_part_key(w.pk, partition);
	pthread_mutex_lock(&store->write_mu);
	const sc_view *view = NULL;
	uint64_t position = 0;
	bool exists = false;
	if (store->stale)
		rc = sc_error_set(err, SC_ESTATE,
				  "the store's state is behind its log; "
				  "reopen it before checkpointing");
	/* A cold partition is loaded first, and made cold again once the
	 * view is pinned (residency.c). */
	bool loaded = false;
	if (!rc)
		rc = sc_residency_load_quiet(store, partition, &loaded, err);
	MDB_txn *txn = NULL;
	if (!rc)
		rc = sc_store_read_begin(store, &txn, err);
	if (!rc) {
		view = sc_reader_begin(reader);
		position = sc_view_position(view);
		sc_partition_info r;
		rc = cat_get(store, txn, partition, &r, err);
		if (rc == SC_NOTFOUND)
			rc = 0;
		else if (!rc)
			w.events_at = r.events;
		uint8_t kb[CKPT_KEY_LEN];
		ckpt_key(kb, w.pk, position, 0);
		MDB_val k = {CKPT_KEY_LEN, kb}, v;
		if (!rc)
			exists =
			    mdb_get(txn, store->dbi_checkpoints, &k, &v) == 0;
		sc_store_read_end(store, txn);
	}
	if (loaded)
		sc_residency_evict_again(store, partition);
	pthread_mutex_unlock(&store->write_mu);
	if (rc || exists || position == 0) {
		if (!rc && info) {
			info->position = position;
			info->entities = sc_view_len_in(view, partition);
			info->verifies = exists;
		}
		sc_reader_close(reader);
		pthread_mutex_unlock(&store->ckpt_mu);
		return rc;
	}
	sc_snapshot_params p = {.zstd_level = store->opt.zstd_level,
				.entities_per_chunk =
				    store->opt.checkpoint_entities_per_chunk,
				.compress_inline = true,
				.one_partition = true,
				.partition = partition};
	sc_snapshot_encoded *enc = NULL;
	rc = sc_snapshot_encode(view, &p, &enc, err);
	sc_reader_end(reader);
	sc_reader_close(reader);
	if (rc) {
		pthread_mutex_unlock(&store->ckpt_mu);
		return rc;
	}
	w.enc = enc;
	sc_killpoint("checkpoint_before_write");
	pthread_mutex_lock(&store->write_mu);
	rc = sc_store_write(store, "storing a checkpoint", ckpt_write_body,
			    NULL, &w, err);
	pthread_mutex_unlock(&store->write_mu);
	if (!rc)
		atomic_fetch_add(&store->checkpoints_written, 1);
	pthread_mutex_unlock(&store->ckpt_mu);
	if (!rc && info) {
		info->position = enc->position;
		info->entities = enc->entity_count;
		info->bytes = enc->bytes_compressed;
		info->created_at = sc_store_now_ns();
		info->verifies = true;
	}
	sc_snapshot_encoded_free(enc);
	return rc;
}

int sc_store_partition_arg(sc_store *store, sc_str partition, const char *fn,
			   sc_error *err)
{
	if (!store || (partition.len && !partition.ptr) ||
	    partition.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "%s needs a store and a partition of at "
				    "most %u bytes",
				    fn, (unsigned)SC_EVENT_FIELD_MAX);
	return 0;
}

int sc_store_checkpoint(sc_store *store, sc_str partition,
			sc_checkpoint_info *info, sc_error *err)
{
	sc_error_clear(err);
	int rc = sc_store_partition_arg(store, partition, "sc_store_checkpoint",
					err);
	if (rc)
		return rc;
	if (store->opt.read_only)
		return sc_store_read_only_error(err, "taking a checkpoint");
	return sc_checkpoint_take(store, partition, info, err);
}

typedef struct drop_ctx {
	sc_str partition;
	uint8_t pk[SC_PART_KEY_LEN];
	uint64_t after;
	size_t dropped;
} drop_ctx;

static int drop_body(sc_store *store, MDB_txn *txn, void *ctx, sc_error *err)
{
	drop_ctx *d = ctx;
	d->dropped = 0;
	uint64_t *pos;
	size_t n;
	int rc = ckpt_positions(store, txn, d->pk, &pos, &n, err);
	if (rc)
		return rc;
	size_t i = 0;
	for (; i < n && pos[i] > d->after && !rc; i++, d->dropped++)
		rc = ckpt_delete(store, txn, d->pk, pos[i]);
	/* The newest left: its position and count give the tail back. */
	uint64_t newest = i < n ? pos[i] : 0, at = 0;
	sc_free(pos);
	if (rc)
		return rc == MDB_MAP_FULL
			   ? rc
			   : sc_store_lmdb_error(err, rc,
						 "dropping checkpoints");
	if (newest) {
		uint8_t kb[CKPT_KEY_LEN];
		ckpt_key(kb, d->pk, newest, CKPT_COUNT_PART);
		MDB_val k = {CKPT_KEY_LEN, kb}, v;
		if (mdb_get(txn, store->dbi_checkpoints, &k, &v) == 0 &&
		    v.mv_size == 8)
			at = sc_be64_get(v.mv_data);
	}
	sc_partition_info r;
	rc = cat_get(store, txn, d->partition, &r, err);
	if (rc == SC_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	r.name = d->partition; /* not the map's bytes the put may move */
	r.checkpoint_position = newest;
	r.tail = at <= r.events ? r.events - at : r.events;
	rc = cat_put(store, txn, &r);
	if (rc == MDB_MAP_FULL)
		return rc;
	return rc ? sc_store_lmdb_error(err, rc, "writing partition_catalog")
		  : 0;
}

int sc_store_checkpoints_drop_after(sc_store *store, sc_str partition,
				    uint64_t position, size_t *dropped,
				    sc_error *err)
{
	sc_error_clear(err);
	int rc = sc_store_partition_arg(store, partition,
					"sc_store_checkpoints_drop_after", err);
	if (rc)
		return rc;
	if (store->opt.read_only)
		return sc_store_read_only_error(err, "dropping checkpoints");
	drop_ctx d = {.partition = partition, .after = position};
	sc_part_key(d.pk, partition);
	pthread_mutex_lock(&store->ckpt_mu);
	pthread_mutex_lock(&store->write_mu);
	rc = sc_store_write(store, "dropping checkpoints", drop_body, NULL, &d,
			    err);
	pthread_mutex_unlock(&store->write_mu);
	pthread_mutex_unlock(&store->ckpt_mu);
	if (dropped)
		*dropped = rc ? 0 : d.dropped;
	return rc;
}

int sc_store_partition_info(sc_store *store, sc_str partition,
			    sc_partition_info *out, sc_error *err)
{
	sc_error_clear(err);
	int rc = sc_store_partition_arg(store, partition,
					"sc_store_partition_info", err);
	if (rc)
		return rc;
	if (!out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_partition_info needs an out "
				    "pointer");
	MDB_txn *txn;
	rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	rc = cat_get(store, txn, partition, out, err);
	sc_store_read_end(store, txn);
	if (rc == SC_NOTFOUND)
		memset(out, 0, sizeof *out);
	out->name = partition; /* the caller's, not the map's */
	return rc;
}

/* The caller's callback of sc_store_partitions. */
struct list_ctx {
	sc_partition_fn fn;
	void *ctx;
};

static int list_row(void *ctx, const MDB_val *k, const MDB_val *v,
		    sc_error *err)
{
	(void)k;
	struct list_ctx *l = ctx;
	sc_partition_info pi;
	if (!cat_decode(v, &pi))
		return sc_error_set(err, SC_ECORRUPT,
				    "partition_catalog has a damaged row; the "
				    "store is damaged");
	return l->fn(l->ctx, &pi);
}

int sc_store_partitions(sc_store *store, sc_partition_fn fn, void *ctx,
			sc_error *err)
{
	sc_error_clear(err);
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_partitions needs a store and a "
				    "callback");
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	struct list_ctx l = {fn, ctx};
	rc = sc_store_rows(txn, store->dbi_catalog, "listing partitions",
			   list_row, &l, err);
	sc_store_read_end(store, txn);
	return rc;
}

/* ---- loading one partition ------------------------------------------------
 */

/* Chunks loaded between two releases of their map pages (as a
 * snapshot's restore). */
#define RELEASE_EVERY 32

static void chunk_done(void *ctx, uint32_t index, const void *bytes, size_t len)
{
	SC_UNUSED(index);
	sc_release_span_add(ctx, bytes, len, RELEASE_EVERY);
}

/* Load the checkpoint at pos into the pending version. */
static int ckpt_load(sc_store *store, MDB_txn *txn, sc_str partition,
		     const uint8_t *pk, uint64_t pos, sc_error *err)
{
	sc_snapshot_header h;
	const void **chunks;
	size_t *lens;
	uint64_t bytes;
	int rc = ckpt_open(store, txn, partition, pk, pos, &h, &chunks, &lens,
			   &bytes, err);
	if (rc)
		return rc;
	sc_killpoint("checkpoint_load");
	/* As a snapshot's restore: a helper thread when a second core is
	 * online and there is a second chunk for it (most partitions' are
	 * one chunk: a thread per load would cost more than it saves), and
	 * the map pages read dropped as the load goes. */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	sc_release_span span = {0};
	sc_snapshot_load_params p = {.no_thread = (ncpu > 0 && ncpu < 2) ||
						  h.chunk_count < 2,
				     .chunk_done = chunk_done,
				     .ctx = &span};
	rc = sc_snapshot_load(&h, (const void *const *)chunks, lens,
			      store->cache, &p, NULL, err);
	sc_release_span_flush(&span);
	sc_free(chunks);
	sc_free(lens);
	sc_snapshot_header_clear(&h);
	return rc;
}

/* ---- walking one partition's events -------------------------------------- */

typedef struct part_walk {
	sc_store *store;
	MDB_txn *txn;
	sc_str partition;
	sc_part_event_fn fn;
	void *ctx;
	sc_error *err;
	sc_release_span span; /* the values read */
} part_walk;

/* Hand the event at pos to fn when it is of the partition. Events of other
 * partitions are passed over after a peek at their key (the default
 * partition's scan passes over every named one). */
static int walk_one(part_walk *w, const MDB_val *v, uint64_t pos)
{
	sc_str part, id;
	int rc =
	    sc_event_peek_key(v->mv_data, v->mv_size, pos, &part, &id, w->err);
	if (rc)
		return rc;
	if (!str_eq(w->partition, part.ptr, part.len))
		return 0;
	sc_decoded_event d;
	rc = sc_event_decode(v->mv_data, v->mv_size, pos, &d, w->err);
	if (rc)
		return rc;
	if (str_eq(w->partition, d.ev.partition.ptr, d.ev.partition.len))
		rc = w->fn(w->ctx, &d.ev);
	sc_decoded_event_free(&d);
	return rc;
}

static int walk_indexed(part_walk *w, uint64_t pos)
{
	uint8_t kb[8];
	sc_be64_put(kb, pos);
	MDB_val k = {8, kb}, v;
	int rc = mdb_get(w->txn, w->store->dbi_events, &k, &v);
	if (rc)
		return sc_error_set(w->err, SC_ECORRUPT,
				    "partition_index lists position %llu, "
				    "which the log does not hold; the store "
				    "is damaged",
				    (unsigned long long)pos);
	rc = walk_one(w, &v, pos);
	/* Scattered over the log, each likely on a page of its own. */
	sc_release_span_add(&w->span, v.mv_data, v.mv_size, TAIL_RELEASE_EVERY);
	return rc;
}

/* The partition's events at the positions in [from, to] that
 * partition_index lists, read from it a batch at a time. */
static int walk_listed(part_walk *w, uint64_t from, uint64_t to)
{
	enum { BATCH = 256 };
	uint64_t pos[BATCH];
	for (;;) {
		size_t n;
		int rc = sc_tag_index_positions(
		    w->txn, w->store->dbi_partitions, "partition_index",
		    w->partition, from, to, pos, BATCH, &n, w->err);
		for (size_t i = 0; !rc && i < n; i++)
			rc = walk_indexed(w, pos[i]);
		if (rc || n < BATCH)
			return rc;
		from = pos[BATCH - 1] + 1;
	}
}

/* The partition's events in (from, to] of the log, by a scan. */
static int walk_scan(part_walk *w, uint64_t from, uint64_t to)
{
	if (from >= to)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(w->txn, w->store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(w->err, rc, "reading the event log");
	uint8_t kb[8];
	sc_be64_put(kb, from + 1);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	for (;;) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		if (rc) {
			rc = rc == MDB_NOTFOUND
				 ? 0
				 : sc_store_lmdb_error(w->err, rc,
						       "reading the event log");
			break;
		}
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos > to)
			break;
		rc = walk_one(w, &v, pos);
		sc_release_span_add(&w->span, v.mv_data, v.mv_size,
				    SCAN_RELEASE_EVERY);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc;
}

int sc_partition_walk(sc_store *store, MDB_txn *txn, sc_str partition,
		      uint64_t from, uint64_t to, sc_part_event_fn fn,
		      void *ctx, sc_error *err)
{
	if (from >= to)
		return 0;
	part_walk w = {store, txn, partition, fn, ctx, err, {0}};
	int rc = 0;
	uint64_t qit = 0;
	if (partition.len) {
		rc = sc_tag_index_through_get(
		    store, txn, atomic_load(&store->last_position), &qit, err);
		if (qit > to)
			qit = to;
		if (!rc && qit > from)
			rc = walk_listed(&w, from + 1, qit);
	}
	if (!rc)
		rc = walk_scan(&w, qit > from ? qit : from, to);
	sc_release_span_flush(&w.span);
	return rc;
}

/* A load's tail: each event applied to the pending version. */
typedef struct tail_replay {
	sc_store *store;
	uint64_t replayed;
	sc_error *err;
} tail_replay;

static int tail_apply(void *ctx, const sc_event *ev)
{
	tail_replay *t = ctx;
	t->replayed++;
	return sc_cache_apply_valid(t->store->cache, ev, t->err);
}

/* A cold partition takes states only once the pending version loads it. */
static int part_begin(sc_store *store, sc_str partition, sc_error *err)
{
	if (partition.len && sc_cache_part_residency(store->cache, partition) ==
				 SC_RESIDENCY_COLD)
		return sc_cache_part_load_begin(store->cache, partition, NULL,
						err);
	return 0;
}

int sc_store_partition_load(sc_store *store, sc_str partition,
			    uint64_t *replayed, double *seconds, sc_error *err)
{
	double t0 = mono_seconds();
	if (replayed)
		*replayed = 0;
	if (sc_cache_pending(store->cache))
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_partition_load needs a cache "
				    "with nothing pending");
	int rc = part_begin(store, partition, err);
	if (rc) {
		sc_cache_discard(store->cache);
		return rc;
	}
	MDB_txn *txn;
	rc = sc_store_read_begin(store, &txn, err);
	if (rc) {
		sc_cache_discard(store->cache);
		return rc;
	}
	uint64_t last = atomic_load(&store->last_position);
	uint8_t pk[SC_PART_KEY_LEN];
	sc_part_key(pk, partition);
	sc_partition_info r;
	rc = cat_get(store, txn, partition, &r, err);
	bool none = rc == SC_NOTFOUND;
	if (none)
		rc = 0;
	uint64_t *pos = NULL;
	size_t n = 0;
	if (!rc && !none)
		rc = ckpt_positions(store, txn, pk, &pos, &n, err);
	uint64_t base = 0;
	int pl = (int)(partition.len > 64 ? 64 : partition.len);
	const char *pn = partition.len ? partition.ptr : "";
	const char *shown = partition.len ? "" : "(default)";
	for (size_t i = 0; !rc && i < n; i++) {
		if (pos[i] > last) {
			sc_store_warn(store,
				      "checkpoint of partition '%.*s'%s at "
				      "position %llu skipped: it is beyond "
				      "the end of the log (%llu)",
				      pl, pn, shown, (unsigned long long)pos[i],
				      (unsigned long long)last);
			continue;
		}
		sc_error e;
		sc_error_clear(&e);
		int lrc = ckpt_load(store, txn, partition, pk, pos[i], &e);
		if (!lrc) {
			base = pos[i];
			break;
		}
		sc_cache_discard(store->cache);
		if (lrc == ENOMEM) {
			rc =
			    sc_error_set(err, lrc,
					 "loading the checkpoint of partition "
					 "'%.*s'%s at position %llu: %s",
					 pl, pn, shown,
					 (unsigned long long)pos[i], e.message);
			break;
		}
		sc_store_warn(store,
			      "checkpoint of partition '%.*s'%s at position "
			      "%llu skipped: %s; trying %s",
			      pl, pn, shown, (unsigned long long)pos[i],
			      e.message[0] ? e.message : sc_strerror(lrc),
			      i + 1 < n ? "an older checkpoint"
					: "a full replay of the partition");
		rc = part_begin(store, partition, err);
	}
	sc_free(pos);
	tail_replay t = {store, 0, err};
	if (!rc && !none && r.last_position > base)
		rc = sc_partition_walk(store, txn, partition, base,
				       r.last_position < last ? r.last_position
							      : last,
				       tail_apply, &t, err);
	sc_store_read_end(store, txn);
	if (rc) {
		sc_cache_discard(store->cache);
		return rc;
	}
	if (replayed)
		*replayed = t.replayed;
	if (seconds)
		*seconds = mono_seconds() - t0;
	return 0;
}

/* ---- at open --------------------------------------------------------------
 */

int sc_checkpoints_restored(sc_store *store, sc_error *err)
{
	/* The state is the log's up to its last position, whatever
	 * positions its entities hold. */
	uint64_t born;
	int rc = sc_cache_load_begin(
	    store->cache, atomic_load(&store->last_position), &born, err);
	if (!rc)
		rc = sc_cache_promote(store->cache);
	if (rc)
		sc_cache_discard(store->cache);
	return rc;
}

int sc_checkpoints_restore(sc_store *store, bool *used, uint64_t *replayed,
			   sc_error *err)
{
	*used = false;
	*replayed = 0;
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	MDB_stat st;
	rc = mdb_stat(txn, store->dbi_checkpoints, &st);
	if (rc || !st.ms_entries) {
		sc_store_read_end(store, txn);
		return rc ? sc_store_lmdb_error(err, rc, "reading checkpoints")
			  : 0;
	}
	/* Every partition's name, first: the loads read in their own
	 * transactions. */
	char **names = NULL;
	size_t *lens = NULL, n = 0, cap = 0;
	MDB_cursor *cur;
	rc = mdb_cursor_open(txn, store->dbi_catalog, &cur);
	if (rc) {
		sc_store_read_end(store, txn);
		return sc_store_lmdb_error(err, rc,
					   "reading partition_catalog");
	}
	MDB_val k, v;
	int op = MDB_FIRST;
	while (!rc && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		sc_partition_info r;
		if (!cat_decode(&v, &r)) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "a partition_catalog row is "
					  "damaged; the store is damaged");
			break;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nn = sc_realloc(names, nc * sizeof *nn);
			if (nn)
				names = nn;
			size_t *nl =
			    nn ? sc_realloc(lens, nc * sizeof *nl) : NULL;
			if (nl)
				lens = nl;
			if (!nn || !nl) {
				rc = ENOMEM;
				break;
			}
			cap = nc;
		}
		names[n] = sc_malloc(r.name.len + 1);
		if (!names[n]) {
			rc = ENOMEM;
			break;
		}
		if (r.name.len)
			memcpy(names[n], r.name.ptr, r.name.len);
		lens[n++] = r.name.len;
	}
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	if (rc == ENOMEM)
		rc = sc_error_set(err, ENOMEM,
				  "out of memory listing partitions");
	else if (rc == MDB_NOTFOUND)
		rc = 0;
	else if (rc && rc != SC_ECORRUPT)
		rc = sc_store_lmdb_error(err, rc, "reading partition_catalog");
	for (size_t i = 0; !rc && i < n; i++) {
		uint64_t got = 0;
		rc = sc_store_partition_load(store, (sc_str){names[i], lens[i]},
					     &got, NULL, err);
		if (!rc) {
			*replayed += got;
			rc = sc_cache_promote(store->cache);
			if (rc) {
				sc_cache_discard(store->cache);
				rc = sc_error_set(err, rc,
						  "promoting a loaded "
						  "partition failed (%s)",
						  sc_strerror(rc));
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		sc_free(names[i]);
	sc_free(names);
	sc_free(lens);
	if (rc)
		return rc;
	rc = sc_checkpoints_restored(store, err);
	if (rc)
		return rc;
	*used = true;
	return 0;
}

/* ---- the background checkpointer ----------------------------------------- */

/* Partitions whose last automatic checkpoint failed, remembered so that
 * the thread tries one again only once its tail has grown by another
 * checkpoint_tail events (not after every append). */
#define FAILED_MAX 16

typedef struct failed_part {
	uint64_t hash; /* XXH3-64 of the name; 0: free */
	uint64_t tail; /* the tail when it failed */
} failed_part;

struct sc_store_checkpointer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t kicks, done;
	bool stop;
	/* The thread's own (no lock). */
	failed_part failed[FAILED_MAX];
	unsigned failed_next;
};

static failed_part *failed_find(struct sc_store_checkpointer *c, uint64_t h)
{
	for (unsigned i = 0; i < FAILED_MAX; i++)
		if (c->failed[i].hash == h)
			return &c->failed[i];
	return NULL;
}

/* Whether a due partition is held back by an earlier failure. */
static bool failed_wait(sc_store *store, const sc_partition_info *r)
{
	uint64_t h = XXH3_64bits(r->name.ptr, r->name.len) | 1;
	failed_part *f = failed_find(store->checkpointer, h);
	if (!f)
		return false;
	if (r->tail < f->tail || r->tail - f->tail < store->opt.checkpoint_tail)
		return true;
	f->hash = 0;
	return false;
}

/* Checkpoint every partition due now. */
static void checkpoint_due(sc_store *store)
{
	MDB_txn *txn;
	sc_error err;
	sc_error_clear(&err);
	if (sc_store_read_begin(store, &txn, &err)) {
		sc_store_warn(store, "automatic checkpoint: %s", err.message);
		return;
	}
	uint64_t last = atomic_load(&store->last_position);
	char **names = NULL;
	size_t *lens = NULL, n = 0, cap = 0, lcap = 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_catalog, &cur);
	MDB_val k, v;
	int op = MDB_FIRST;
	while (!rc && mdb_cursor_get(cur, &k, &v, op) == 0) {
		op = MDB_NEXT;
		sc_partition_info r;
		if (!cat_decode(&v, &r) || !cat_due(store, &r, last) ||
		    failed_wait(store, &r))
			continue;
		if (sc_grow_array((void **)&names, &cap, n + 1,
				  sizeof *names) ||
		    sc_grow_array((void **)&lens, &lcap, n + 1, sizeof *lens))
			break;
		names[n] = sc_malloc(r.name.len + 1);
		if (!names[n])
			break;
		if (r.name.len)
			memcpy(names[n], r.name.ptr, r.name.len);
		lens[n++] = r.name.len;
	}
	if (!rc)
		mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	struct sc_store_checkpointer *c = store->checkpointer;
	for (size_t i = 0; i < n; i++) {
		/* Close stops the thread between two checkpoints: what is
		 * left is written by a later session's thread. */
		pthread_mutex_lock(&c->mu);
		bool stop = c->stop;
		pthread_mutex_unlock(&c->mu);
		if (stop) {
			sc_free(names[i]);
			continue;
		}
		sc_error_clear(&err);
		sc_str p = {names[i], lens[i]};
		if (sc_checkpoint_take(store, p, NULL, &err)) {
			sc_store_warn(
			    store,
			    "automatic checkpoint of partition "
			    "'%.*s' failed (the appends are "
			    "committed; it is tried again once "
			    "its tail grows by another %llu "
			    "events): %s",
			    (int)(lens[i] > 64 ? 64 : lens[i]), names[i],
			    (unsigned long long)store->opt.checkpoint_tail,
			    err.message);
			sc_partition_info r;
			if (sc_store_partition_info(store, p, &r, NULL) == 0) {
				failed_part *f =
				    &c->failed[c->failed_next++ % FAILED_MAX];
				f->hash = XXH3_64bits(p.ptr, p.len) | 1;
				f->tail = r.tail;
			}
		}
		sc_free(names[i]);
	}
	sc_free(names);
	sc_free(lens);
}

static void *checkpointer_main(void *arg)
{
	sc_store *store = arg;
	struct sc_store_checkpointer *c = store->checkpointer;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->stop && c->done == c->kicks)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stop)
			break;
		uint64_t upto = c->kicks;
		pthread_mutex_unlock(&c->mu);
		checkpoint_due(store);
		pthread_mutex_lock(&c->mu);
		c->done = upto;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int sc_checkpointer_start(sc_store *store, sc_error *err)
{
	if (store->opt.read_only ||
	    store->opt.checkpoint_tail == SC_CHECKPOINT_NEVER)
		return 0;
	struct sc_store_checkpointer *c = sc_calloc(1, sizeof *c);
	if (!c)
		return sc_error_set(err, ENOMEM,
				    "out of memory starting the checkpoint "
				    "thread");
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	store->checkpointer = c;
	int rc = pthread_create(&c->thread, NULL, checkpointer_main, store);
	if (rc) {
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		sc_free(c);
		store->checkpointer = NULL;
		return sc_error_set(err, rc,
				    "cannot start the checkpoint thread: %s",
				    strerror(rc));
	}
	/* Partitions already due at open (a bound lowered, or a crash
	 * before their checkpoint). */
	sc_checkpointer_kick(store);
	return 0;
}

void sc_checkpointer_kick(sc_store *store)
{
	struct sc_store_checkpointer *c = store->checkpointer;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->kicks++;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void sc_checkpointer_stop(sc_store *store)
{
	struct sc_store_checkpointer *c = store->checkpointer;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	sc_free(c);
	store->checkpointer = NULL;
}

int sc_store_checkpoints_wait(sc_store *store, sc_error *err)
{
	sc_error_clear(err);
	if (!store)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_checkpoints_wait needs a store");
	struct sc_store_checkpointer *c = store->checkpointer;
	if (!c)
		return 0;
	pthread_mutex_lock(&c->mu);
	uint64_t want = c->kicks;
	while (c->done < want && !c->stop)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	return 0;
}
