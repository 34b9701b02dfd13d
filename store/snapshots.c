/*
 * Snapshots in the store: write, list, prune, restore.
 *
 * Records live in the `snapshots` database under key position (8 bytes
 * big-endian) ++ part (4 bytes big-endian): part 0 is the header, part i
 * chunk i-1 (snapshot/snapshot.h has the bytes). A snapshot is written in
 * one write transaction, so it is either whole or absent; it can still be
 * damaged on disk later, which restore detects (checksums, counts) and
 * answers by falling back to an older snapshot or a full replay.
 *
 * Encoding runs from a pinned view, holding neither the store's writer
 * mutex nor an LMDB write transaction: appends go on meanwhile. Only the
 * short transaction that stores the blobs takes the writer mutex.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "snapshot/snapshot.h"

#define SNAP_KEY_LEN 12

static void snap_key(uint8_t *k, uint64_t position, uint32_t part)
{
	sc_be64_put(k, position);
	sc_be32_put(k + 8, part);
}

static double mono_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- listing ------------------------------------------------------------- */

/* The distinct positions held in the snapshots database, newest first
 * (a snapshot whose header record is missing still shows up, so restore
 * can name it). *out is sc_malloc'd. */
static int list_positions(sc_store *store, MDB_txn *txn, uint64_t **out,
			  size_t *n, sc_error *err)
{
	*out = NULL;
	*n = 0;
	size_t cap = 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_snapshots, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "listing snapshots");
	MDB_val k, v;
	int op = MDB_LAST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_PREV;
		if (k.mv_size != SNAP_KEY_LEN)
			continue; /* not ours; restore ignores it */
		uint64_t pos = sc_be64_get(k.mv_data);
		if (*n && (*out)[*n - 1] == pos)
			continue;
		if (sc_grow_array((void **)out, &cap, *n + 1, sizeof **out)) {
			mdb_cursor_close(cur);
			sc_free(*out);
			*out = NULL;
			return sc_error_set(err, ENOMEM,
					    "out of memory listing snapshots");
		}
		(*out)[(*n)++] = pos;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND) {
		sc_free(*out);
		*out = NULL;
		return sc_store_lmdb_error(err, rc, "listing snapshots");
	}
	return 0;
}

/* Delete every record of the snapshot at `position`. */
static int delete_snapshot(sc_store *store, MDB_txn *txn, uint64_t position)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_snapshots, &cur);
	if (rc)
		return rc;
	uint8_t kb[SNAP_KEY_LEN];
	snap_key(kb, position, 0);
	MDB_val k = {SNAP_KEY_LEN, kb}, v;
	/* After mdb_cursor_del, MDB_NEXT yields the record that followed the
	 * deleted one. */
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size < 8 || sc_be64_get(k.mv_data) != position)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int sc_store_snapshots(sc_store *store, sc_snapshot_info *out, size_t max,
		       sc_error *err)
{
	if (!store || (max && !out))
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_snapshots needs a store and room "
				    "for the result");
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint64_t *pos;
	size_t n;
	rc = list_positions(store, txn, &pos, &n, err);
	if (rc) {
		sc_store_read_end(store, txn);
		return rc;
	}
	size_t got = 0;
	for (size_t i = 0; i < n && got < max; i++) {
		uint8_t kb[SNAP_KEY_LEN];
		snap_key(kb, pos[i], 0);
		MDB_val k = {SNAP_KEY_LEN, kb}, v;
		if (mdb_get(txn, store->dbi_snapshots, &k, &v))
			continue;
		sc_snapshot_header h;
		if (sc_snapshot_header_decode(v.mv_data, v.mv_size, &h, NULL))
			continue; /* damaged: not a snapshot one can use */
		sc_snapshot_info *si = &out[got++];
		memset(si, 0, sizeof *si);
		si->position = h.position;
		si->entities = h.entity_count;
		si->chunks = h.chunk_count;
		si->bytes_raw = h.bytes_raw;
		si->bytes_compressed = v.mv_size;
		for (uint32_t c = 0; c < h.chunk_count; c++) {
			snap_key(kb, pos[i], c + 1);
			MDB_val ck = {SNAP_KEY_LEN, kb}, cv;
			if (mdb_get(txn, store->dbi_snapshots, &ck, &cv) == 0)
				si->bytes_compressed += cv.mv_size;
		}
		sc_snapshot_header_clear(&h);
	}
	sc_free(pos);
	sc_store_read_end(store, txn);
	return (int)got;
}

/* ---- writing ------------------------------------------------------------- */

/* Store the encoded snapshot and prune to snapshot_keep, inside the
 * snapshot's write transaction. */
static int write_snapshot_body(sc_store *store, MDB_txn *txn, void *ctx,
			       sc_error *err)
{
	const sc_snapshot_encoded *enc = ctx;
	uint8_t kb[SNAP_KEY_LEN];
	int rc;
	for (uint32_t i = 0; i <= enc->chunk_count; i++) {
		const sc_snapshot_blob *b =
		    i ? &enc->chunks[i - 1] : &enc->header;
		snap_key(kb, enc->position, i);
		MDB_val k = {SNAP_KEY_LEN, kb}, v = {b->len, b->data};
		rc = mdb_put(txn, store->dbi_snapshots, &k, &v, 0);
		if (rc)
			goto lmdb_fail;
		if (i == enc->chunk_count / 2)
			sc_killpoint("snapshot_mid_write");
	}
	/* Keep the newest snapshot_keep (this one included). */
	uint64_t *pos;
	size_t n;
	rc = list_positions(store, txn, &pos, &n, err);
	if (rc)
		return rc;
	for (size_t i = store->opt.snapshot_keep; i < n && !rc; i++)
		rc = delete_snapshot(store, txn, pos[i]);
	sc_free(pos);
	if (rc)
		goto lmdb_fail;
	return 0;
lmdb_fail:
	if (rc == MDB_MAP_FULL)
		return rc;
	return sc_store_lmdb_error(err, rc, "storing the snapshot");
}

static int snapshot_exists(sc_store *store, uint64_t position, bool *exists,
			   sc_error *err)
{
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint8_t kb[SNAP_KEY_LEN];
	snap_key(kb, position, 0);
	MDB_val k = {SNAP_KEY_LEN, kb}, v;
	rc = mdb_get(txn, store->dbi_snapshots, &k, &v);
	sc_store_read_end(store, txn);
	*exists = rc == 0;
	if (rc && rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc, "reading snapshots");
	return 0;
}

int sc_store_snapshot(sc_store *store, sc_snapshot_info *info, sc_error *err)
{
	sc_error_clear(err);
	if (!store)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_snapshot needs a store");
	if (store->opt.read_only)
		return sc_store_read_only_error(err, "taking a snapshot");
	double t0 = mono_seconds();
	pthread_mutex_lock(&store->snap_mu);
	sc_reader *reader = NULL;
	int rc = sc_reader_open(store->cache, &reader, err);
	if (rc) {
		pthread_mutex_unlock(&store->snap_mu);
		return rc;
	}
	const sc_view *view = sc_reader_begin(reader);
	uint64_t position = sc_view_position(view);
	bool exists = false;
	rc = snapshot_exists(store, position, &exists, err);
	if (rc || exists || position == 0) {
		/* Nothing new to write (an empty log or a snapshot of this
		 * very position is already stored). */
		sc_reader_close(reader);
		pthread_mutex_unlock(&store->snap_mu);
		if (!rc && info) {
			memset(info, 0, sizeof *info);
			info->position = position;
			info->entities = sc_cache_len(store->cache);
		}
		return rc;
	}
	/* A compression helper thread only pays when a core is left for it
	 * besides the encoder and the appending writer: with two or fewer,
	 * the three threads fight for the cores and appends slow down about
	 * twice as much as the snapshot speeds up. */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	sc_snapshot_params p = {.zstd_level = store->opt.zstd_level,
				.compress_inline = ncpu > 0 && ncpu <= 2};
	sc_snapshot_encoded *enc = NULL;
	rc = sc_snapshot_encode(view, &p, &enc, err);
	sc_reader_end(reader);
	sc_reader_close(reader);
	if (rc) {
		pthread_mutex_unlock(&store->snap_mu);
		return rc;
	}
	sc_killpoint("snapshot_before_write");
	pthread_mutex_lock(&store->write_mu);
	rc = sc_store_write(store, "storing the snapshot", write_snapshot_body,
			    NULL, enc, err);
	if (!rc) {
		uint64_t last = atomic_load(&store->last_position);
		store->since_snapshot = last - enc->position;
	}
	pthread_mutex_unlock(&store->write_mu);
	pthread_mutex_unlock(&store->snap_mu);
	if (!rc && info) {
		info->position = enc->position;
		info->entities = enc->entity_count;
		info->chunks = enc->chunk_count;
		info->bytes_raw = enc->bytes_raw;
		info->bytes_compressed = enc->bytes_compressed;
		info->seconds = mono_seconds() - t0;
	}
	sc_snapshot_encoded_free(enc);
	return rc;
}

/* ---- restore ------------------------------------------------------------- */

/* Chunks loaded between two releases of the map pages they were read
 * from. A release (madvise) costs a TLB flush on every core the process
 * runs on, which the load's helper thread makes two; a few MiB of stored
 * chunks may stay mapped meanwhile. */
#define RESTORE_RELEASE_EVERY 32

/* After each chunk is loaded: its pages of the map need not stay in the
 * process's RSS (restore reads them once). */
static void chunk_done(void *ctx, uint32_t index, const void *bytes, size_t len)
{
	sc_release_span_add(ctx, bytes, len, RESTORE_RELEASE_EVERY);
	if (index == 0)
		sc_killpoint("restore_chunk");
}

/* Load the snapshot at `position` into the pending version. On failure the
 * caller discards. */
static int load_one(sc_store *store, MDB_txn *txn, uint64_t position,
		    sc_error *err)
{
	uint8_t kb[SNAP_KEY_LEN];
	snap_key(kb, position, 0);
	MDB_val k = {SNAP_KEY_LEN, kb}, v;
	int rc = mdb_get(txn, store->dbi_snapshots, &k, &v);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_ECORRUPT,
				    "its header record is missing");
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading its header");
	sc_snapshot_header h;
	rc = sc_snapshot_header_decode(v.mv_data, v.mv_size, &h, err);
	if (rc)
		return rc;
	const void **chunks = NULL;
	size_t *lens = NULL;
	if (h.position != position) {
		rc = sc_error_set(err, SC_ECORRUPT,
				  "its header says position %llu",
				  (unsigned long long)h.position);
		goto out;
	}
	/* Every chunk record first (a missing one fails before anything is
	 * loaded); the values stay in the map while `txn` lives. */
	if (h.chunk_count) {
		chunks = sc_malloc(h.chunk_count * sizeof *chunks);
		lens = sc_malloc(h.chunk_count * sizeof *lens);
		if (!chunks || !lens) {
			rc = sc_error_set(err, ENOMEM,
					  "out of memory listing %u snapshot "
					  "chunks",
					  h.chunk_count);
			goto out;
		}
	}
	for (uint32_t i = 0; i < h.chunk_count; i++) {
		snap_key(kb, position, i + 1);
		MDB_val ck = {SNAP_KEY_LEN, kb}, cv;
		rc = mdb_get(txn, store->dbi_snapshots, &ck, &cv);
		if (rc == MDB_NOTFOUND) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "chunk %u of %u is missing", i,
					  h.chunk_count);
			goto out;
		}
		if (rc) {
			rc = sc_store_lmdb_error(err, rc, "reading a chunk");
			goto out;
		}
		chunks[i] = cv.mv_data;
		lens[i] = cv.mv_size;
	}
	/* A helper thread decompresses the next chunk while this one loads,
	 * when there is a second core for it. */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	sc_release_span span = {0};
	sc_snapshot_load_params p = {.no_thread = ncpu > 0 && ncpu < 2,
				     .chunk_done = chunk_done,
				     .ctx = &span};
	rc = sc_snapshot_load(&h, (const void *const *)chunks, lens,
			      store->cache, &p, NULL, err);
	/* Inside the read transaction: the map cannot move meanwhile. */
	sc_release_span_flush(&span);
out:
	sc_free(chunks);
	sc_free(lens);
	sc_snapshot_header_clear(&h);
	return rc;
}

int sc_store_restore(sc_store *store, uint64_t *position, sc_error *err)
{
	*position = 0;
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint64_t *pos;
	size_t n;
	rc = list_positions(store, txn, &pos, &n, err);
	if (rc) {
		sc_store_read_end(store, txn);
		return rc;
	}
	uint64_t last = atomic_load(&store->last_position);
	for (size_t i = 0; i < n; i++) {
		if (pos[i] > last) {
			sc_store_warn(store,
				      "snapshot at position %llu skipped: it "
				      "is beyond the end of the log (%llu)",
				      (unsigned long long)pos[i],
				      (unsigned long long)last);
			continue;
		}
		sc_error e;
		sc_error_clear(&e);
		rc = load_one(store, txn, pos[i], &e);
		if (rc == 0)
			rc = sc_cache_promote(store->cache);
		if (rc == 0) {
			*position = pos[i];
			break;
		}
		sc_cache_discard(store->cache);
		if (rc == ENOMEM) {
			/* Not the snapshot's fault; an older one or a full
			 * replay would need the memory too. */
			sc_error_set(err, rc,
				     "restoring the snapshot at position %llu: "
				     "%s",
				     (unsigned long long)pos[i], e.message);
			break;
		}
		sc_store_warn(store,
			      "snapshot at position %llu skipped: %s; trying "
			      "%s",
			      (unsigned long long)pos[i],
			      e.message[0] ? e.message : sc_strerror(rc),
			      i + 1 < n ? "an older snapshot"
					: "a full replay of the log");
		rc = 0;
	}
	sc_free(pos);
	sc_store_read_end(store, txn);
	return rc;
}
