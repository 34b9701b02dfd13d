/*
 * The event log: append, replay, reads (include/statecache/store.h).
 *
 * What must hold:
 * - The events database holds positions 1..last densely. entity_index has
 *   a row for every event up to meta index_through (the index lags the
 *   log by fewer than index_lag events; entity reads scan the rest).
 * - An append is one LMDB write transaction. The cache's pending version
 *   and every projector see the batch inside that transaction; only after
 *   the commit is the cache promoted. Any failure aborts the transaction,
 *   discards the pending version and calls the rollback hooks, so the log,
 *   the cache and the projectors are exactly as before.
 * - Event times are stamped before encoding, so what is stored is what the
 *   cache applied and what a replay applies again.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"

#define REPLAY_BATCH 8192
/* Events replayed between two releases of the map pages they touched (a
 * divisor of REPLAY_BATCH). */
#define REPLAY_RELEASE_EVERY 512

/* ---- the log's end ------------------------------------------------------- */

static const MDB_val last_position_key = {sizeof "last_position" - 1,
					  (void *)"last_position"};

int sc_store_meta_last_get(sc_store *store, MDB_txn *txn, uint64_t *last,
			   sc_error *err)
{
	MDB_val k = last_position_key, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND)
		return SC_NOTFOUND;
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading meta");
	if (v.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta last_position is %zu bytes, expected "
				    "8; the store is damaged",
				    v.mv_size);
	*last = sc_be64_get(v.mv_data);
	return 0;
}

int sc_store_meta_last_put(sc_store *store, MDB_txn *txn, uint64_t last)
{
	uint8_t b[8];
	sc_be64_put(b, last);
	MDB_val k = last_position_key, v = {8, b};
	return mdb_put(txn, store->dbi_meta, &k, &v, 0);
}

/* ---- replay -------------------------------------------------------------- */

/* Events replay decoded since the last release of their pages, applied to
 * the cache together (in its lanes) before the release. */
typedef struct replay_chunk {
	sc_decoded_event d[REPLAY_RELEASE_EVERY];
	sc_event ev[REPLAY_RELEASE_EVERY];
	size_t n;
} replay_chunk;

/* Apply the chunk's events (apply false: drop them) and empty it. */
static int replay_flush(sc_store *store, replay_chunk *c, bool apply,
			sc_error *err)
{
	int rc = 0;
	if (apply && c->n)
		rc = sc_cache_apply_batch_valid(store->cache, c->ev, c->n, NULL,
						err);
	for (size_t i = 0; i < c->n; i++)
		sc_decoded_event_free(&c->d[i]);
	c->n = 0;
	return rc;
}

int sc_store_replay(sc_store *store, uint64_t after, sc_error *err)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	replay_chunk *chunk = sc_calloc(1, sizeof *chunk);
	if (!chunk)
		return sc_error_set(err, ENOMEM,
				    "out of memory for replaying the log");
	int rc = sc_store_read_cursor(store, store->dbi_events,
				      "replaying the log", &txn, &cur, err);
	if (rc) {
		sc_free(chunk);
		return rc;
	}
	uint8_t kb[8];
	sc_be64_put(kb, after + 1);
	MDB_val k = {8, kb}, v;
	uint64_t expect = after + 1;
	size_t in_batch = 0;
	/* Bounds of the values read since the last release of their pages. */
	const uint8_t *lo = NULL, *hi = NULL;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos != expect) {
			rc =
			    sc_error_set(err, SC_ECORRUPT,
					 "the event log has a gap or a bad key "
					 "at position %llu (found %llu); the "
					 "store is damaged",
					 (unsigned long long)expect,
					 (unsigned long long)pos);
			goto fail;
		}
		const uint8_t *vb = v.mv_data, *ve = vb + v.mv_size;
		if (!lo || vb < lo)
			lo = vb;
		if (ve > hi)
			hi = ve;
		sc_decoded_event *d = &chunk->d[chunk->n];
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, d, err);
		if (rc)
			goto fail;
		chunk->ev[chunk->n++] = d->ev;
		expect++;
		if (++in_batch % REPLAY_RELEASE_EVERY == 0) {
			rc = replay_flush(store, chunk, true, err);
			if (rc)
				goto fail;
			/* The tail's leaf pages are scattered over the file
			 * (freed pages are reused) and a touch maps a whole
			 * page-cache folio, often far more than the page;
			 * keep only the last few hundred events' mapped. */
			sc_store_release_pages(lo, hi);
			lo = hi = NULL;
		}
		if (in_batch == REPLAY_BATCH) {
			in_batch = 0;
			rc = sc_cache_promote(store->cache);
			if (rc) {
				sc_error_set(err, rc,
					     "promoting a replay batch failed "
					     "(%s)",
					     sc_strerror(rc));
				goto fail;
			}
		}
	}
	if (rc != MDB_NOTFOUND) {
		rc = sc_store_lmdb_error(err, rc, "replaying the log");
		goto fail;
	}
	rc = replay_flush(store, chunk, true, err);
	if (rc)
		goto fail;
	sc_free(chunk);
	chunk = NULL;
	/* Inside the read transaction: the map cannot move meanwhile. */
	sc_store_release_pages(lo, hi);
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	/* A log shorter than what open read as committed is damage; a
	 * longer one is another process's appends since open's transaction:
	 * this store's state is then as of the end of the replay. */
	if (expect - 1 < atomic_load(&store->last_position)) {
		sc_cache_discard(store->cache);
		return sc_error_set(
		    err, SC_ECORRUPT,
		    "replay ended at position %llu but the log "
		    "ends at %llu; the store is damaged",
		    (unsigned long long)(expect - 1),
		    (unsigned long long)atomic_load(&store->last_position));
	}
	atomic_store(&store->last_position, expect - 1);
	rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		return sc_error_set(err, rc, "promoting the replay failed (%s)",
				    sc_strerror(rc));
	}
	return 0;
fail:
	if (chunk) {
		replay_flush(store, chunk, false, NULL);
		sc_free(chunk);
	}
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	sc_cache_discard(store->cache);
	return rc;
}

/* ---- append -------------------------------------------------------------- */

/* The events of one append transaction: store->batch[0..n), the batches
 * of one or more callers (part k ends before ends[k]). */
typedef struct append_batch {
	const sc_event *evs;
	size_t n;
	uint64_t first;
	/* This append indexes the tail (it brings it to index_lag events),
	 * up to `through`. */
	bool index;
	uint64_t through;
	const size_t *ends;
	size_t nparts;
	/* On SC_EPROJECTOR: the part of the refused event. */
	size_t vetoed;
} append_batch;

/* Undo of an append attempt: the cache and the projectors as before. */
static void rollback(sc_store *store, void *ctx)
{
	(void)ctx;
	sc_cache_discard(store->cache);
	sc_projectors_rollback(store);
}

/* An LMDB failure inside the append's transaction: MDB_MAP_FULL as is (the
 * map grows and the append runs again), others translated. */
static int append_lmdb_error(sc_error *err, int rc)
{
	if (rc == MDB_MAP_FULL)
		return rc;
	return sc_store_lmdb_error(err, rc, "appending events");
}

/* The cache's result for a batch: crc (0: applied) and, on a refusal,
 * the refused event's index in the transaction's batch. */
typedef struct apply_result {
	int crc;
	size_t refused;
	sc_error cerr;
} apply_result;

/* End the cache's apply of the batch (aevs[0..an): the events of resident
 * partitions, aidx their indexes in the batch, or NULL: all) and map its
 * refused event back into the batch. */
static void apply_end(sc_store *store, size_t an, const size_t *aidx,
		      apply_result *r)
{
	size_t refused = an;
	r->crc = sc_cache_apply_batch_end(store->cache, &refused, &r->cerr);
	if (!r->crc)
		return;
	if (refused >= an)
		refused = an - 1;
	r->refused = aidx ? aidx[refused] : refused;
}

/* The error of an append whose event r->refused the cache refused: the
 * event is named by its index in its caller's part of the batch. */
static int refused_error(const append_batch *b, const apply_result *r,
			 sc_error *err)
{
	size_t part = 0, part_start = 0;
	while (r->refused >= b->ends[part])
		part_start = b->ends[part++];
	return sc_error_set(err, r->crc,
			    "event %zu (position %llu): the cache rejected "
			    "it: %s",
			    r->refused - part_start,
			    (unsigned long long)(b->first + r->refused),
			    r->cerr.message);
}

/* Every write of the batch in the append's transaction: the log records
 * (each event handed to the projectors in log order), the tag index, the
 * catalog, the entity index's catch-up, the log's end and the projectors'
 * offsets. `ar`, when not NULL, is the cache's result, known already: the
 * loop stops at the event it refused, where a serial apply would. Reads
 * the events and the store's LMDB state only, never the cache: it runs
 * while the cache's lanes apply the batch. */
static int append_writes(sc_store *store, MDB_txn *txn, append_batch *b,
			 const apply_result *ar, sc_error *err)
{
	uint8_t key[8];
	uint64_t last = b->first + b->n - 1;
	size_t part = 0, part_start = 0;
	/* One cursor for the batch: after an append it stays on the log's
	 * last leaf, so the next append finds its place without a descent
	 * from the root. */
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return append_lmdb_error(err, rc);
	for (size_t i = 0; i < b->n; i++) {
		const sc_event *ev = &b->evs[i];
		uint64_t pos = b->first + i;
		/* Messages name the event by its index in its caller's
		 * batch. */
		while (i >= b->ends[part])
			part_start = b->ends[part++];
		sc_be64_put(key, pos);
		MDB_val k = {8, key}, v = {sc_event_encoded_size(ev), NULL};
		rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND | MDB_RESERVE);
		if (rc) {
			mdb_cursor_close(cur);
			return append_lmdb_error(err, rc);
		}
		sc_event_write(ev, v.mv_data);
		if (ar && ar->crc && i == ar->refused) {
			mdb_cursor_close(cur);
			return refused_error(b, ar, err);
		}
		rc = sc_projectors_apply(store, txn, ev, i - part_start, pos,
					 err);
		if (rc) {
			mdb_cursor_close(cur);
			b->vetoed = part;
			return rc;
		}
	}
	mdb_cursor_close(cur);
	rc = sc_tag_index_append(store, txn, b->evs, b->n, b->first, err);
	if (rc)
		return rc;
	rc = sc_catalog_append(store, txn, b->evs, b->n, b->first, err);
	if (rc)
		return rc;
	if (b->index) {
		/* The tail before the batch and the batch, in one sorted
		 * pass. */
		rc = sc_index_catch_up(store, txn, b->first, b->evs, b->n,
				       &b->through, err);
		if (rc)
			return rc;
		rc = sc_index_through_put(store, txn, b->through);
		if (rc)
			return append_lmdb_error(err, rc);
	}
	rc = sc_store_meta_last_put(store, txn, last);
	if (rc)
		return append_lmdb_error(err, rc);
	/* Each projector's offset commits with the events it applied. */
	rc = sc_projectors_put_offsets(store, txn, last);
	if (rc)
		return append_lmdb_error(err, rc);
	return 0;
}

/*
 * Write the batch and apply it to the cache and every projector inside
 * the append's write transaction.
 *
 * Without projectors the cache applies the batch in its lanes while this
 * thread does the batch's LMDB writes (sc_cache_apply_batch_begin /
 * _end): the two read the events only and touch disjoint state. The apply
 * ends on every path, before anything else touches the cache; a refusal
 * then fails the append with the error a serial apply gives, whatever
 * the writes did (a refused batch commits nothing). With projectors the
 * cache applies first and the loop meets the event it refused (if any)
 * where a serial apply would, before a projector sees it.
 */
static int append_body(sc_store *store, MDB_txn *txn, void *ctx, sc_error *err)
{
	append_batch *b = ctx;
	uint64_t last = b->first + b->n - 1;
	b->vetoed = b->nparts;
	apply_result ar = {0};
	sc_error_clear(&ar.cerr);
	/* Events of cold partitions go to the log only (residency.c). */
	const sc_event *aevs = b->evs;
	size_t an = b->n;
	const size_t *aidx = NULL;
	sc_residency_filter(store, &aevs, &an, &aidx);
	bool overlap = store->nprojectors == 0;
	int rc;
	if (an) {
		rc = sc_cache_apply_batch_begin(store->cache, aevs, an, err);
		if (rc)
			return rc;
	}
	if (overlap) {
		rc = append_writes(store, txn, b, NULL, err);
		if (an)
			apply_end(store, an, aidx, &ar);
		/* A full map reruns the whole append after the map grows,
		 * the apply too: a refusal that came of memory running out
		 * gets its second chance, as in the serial order. */
		if (ar.crc && rc != MDB_MAP_FULL)
			return refused_error(b, &ar, err);
	} else {
		if (an)
			apply_end(store, an, aidx, &ar);
		rc = append_writes(store, txn, b, &ar, err);
	}
	if (rc)
		return rc;
	if (aidx) {
		/* The version is the log's up to the batch's end, even when
		 * its last events went to cold partitions only. */
		uint64_t born;
		sc_error cerr;
		rc = sc_cache_load_begin(store->cache, last, &born, &cerr);
		if (rc)
			return sc_error_set(err, rc, "%s", cerr.message);
	}
	/* Every queued cache change done and promote's memory reserved: after
	 * the commit, promote cannot fail. */
	rc = sc_cache_prepare(store->cache, err);
	if (rc)
		return rc;
	sc_killpoint("append_before_commit");
	if (b->nparts > 1)
		sc_killpoint("group_before_commit");
	return 0;
}

int sc_log_stamp(sc_store *store, size_t off, const sc_event *events, size_t n,
		 uint64_t first, sc_error *err)
{
	if (off + n > store->cap_batch) {
		size_t cap = store->cap_batch ? store->cap_batch : 16;
		while (cap < off + n)
			cap *= 2;
		sc_event *nb = sc_realloc(store->batch, cap * sizeof *nb);
		if (!nb)
			return sc_error_set(err, ENOMEM,
					    "out of memory for a batch of %zu "
					    "events",
					    off + n);
		store->batch = nb;
		store->cap_batch = cap;
	}
	int64_t now = 0;
	for (size_t i = 0; i < n; i++) {
		sc_event *ev = &store->batch[off + i];
		*ev = events[i];
		ev->position = first + i;
		if (events[i].time == 0) {
			if (!now)
				now = sc_store_now_ns();
			ev->time = now;
		}
	}
	return 0;
}

/*
 * Promote the pending version after the commit. sc_cache_prepare succeeded
 * before the commit, so promote cannot fail; if it ever did, the cache
 * would be behind the log, and the store refuses further appends
 * (SC_ESTATE) until it is reopened, which replays the batch.
 */
static int promote_committed(sc_store *store, size_t n, sc_error *err)
{
	int rc = sc_cache_promote(store->cache);
	SC_INSIST(rc == 0);
	if (!rc)
		return 0;
	sc_cache_discard(store->cache);
	store->stale = true;
	return sc_error_set(err, rc,
			    "the batch was committed at positions %llu..%llu "
			    "but the cache could not be updated (%s); close "
			    "and reopen the store to replay it",
			    (unsigned long long)store->batch[0].position,
			    (unsigned long long)store->batch[n - 1].position,
			    sc_strerror(rc));
}

int sc_log_append_commit(sc_store *store, size_t n, const size_t *ends,
			 size_t nparts, size_t *vetoed, sc_error *err)
{
	SC_REQUIRE(n > 0 && nparts > 0 && ends[nparts - 1] == n);
	uint64_t start = atomic_load(&store->last_position) + 1;
	uint64_t last = start + n - 1;
	append_batch b = {.evs = store->batch,
			  .n = n,
			  .first = start,
			  .index = last - store->index_through >=
				   store->opt.index_lag,
			  .ends = ends,
			  .nparts = nparts,
			  .vetoed = nparts};
	store->ckpt_due = false;
	*vetoed = nparts; /* no batch vetoed by a projector */
	int rc = sc_residency_append_check(store, store->batch, n, ends, nparts,
					   err);
	if (rc)
		return rc;
	rc = sc_store_write(store, "appending events", append_body, rollback,
			    &b, err);
	*vetoed = b.vetoed;
	if (rc)
		return rc;
	if (b.index)
		store->index_through = b.through;
	atomic_store(&store->last_position, last);
	rc = promote_committed(store, n, err);
	if (rc)
		return rc;
	sc_query_notify(store);
	sc_killpoint("append_after_commit");
	sc_projectors_commit(store);
	store->since_snapshot += n;
	sc_residency_append_done(store, store->batch, n);
	if (store->ckpt_due)
		sc_checkpointer_kick(store);
	return 0;
}

/* ---- reads --------------------------------------------------------------- */

uint64_t sc_store_last_position(sc_store *store)
{
	return atomic_load(&store->last_position);
}

/* Decode the event record `v` at `pos` and hand it to fn; the decoded event
 * lives only for the call. */
static int emit_event(const MDB_val *v, uint64_t pos, sc_event_fn fn, void *ctx,
		      sc_error *err)
{
	sc_decoded_event d;
	int rc = sc_event_decode(v->mv_data, v->mv_size, pos, &d, err);
	if (rc)
		return rc;
	rc = fn(ctx, &d.ev);
	sc_decoded_event_free(&d);
	return rc;
}

int sc_store_events(sc_store *store, uint64_t from, uint64_t limit,
		    sc_event_fn fn, void *ctx, sc_error *err)
{
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_events needs a store and a "
				    "callback");
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = sc_store_read_cursor(store, store->dbi_events,
				      "reading events", &txn, &cur, err);
	if (rc)
		return rc;
	uint8_t kb[8];
	sc_be64_put(kb, from ? from : 1);
	MDB_val k = {8, kb}, v;
	uint64_t count = 0;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (limit && count >= limit)
			break;
		if (k.mv_size != 8) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "an events key is %zu bytes, "
					  "expected 8; the store is damaged",
					  k.mv_size);
			goto out;
		}
		rc = emit_event(&v, sc_be64_get(k.mv_data), fn, ctx, err);
		if (rc)
			goto out;
		count++;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading events");
out:
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return rc;
}

/* One walk over the events of an entity. */
typedef struct entity_walk {
	sc_store *store;
	MDB_txn *txn;
	sc_str partition, id;
	uint64_t limit, count;
	bool full; /* limit reached */
	sc_event_fn fn;
	void *ctx;
	sc_error *err;
} entity_walk;

static bool str_same(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Whether the event record `v` at `pos` is of the walk's entity; false
 * with *rc set when it does not decode. */
static bool walk_wants(entity_walk *w, const MDB_val *v, uint64_t pos, int *rc)
{
	sc_str part, id;
	*rc =
	    sc_event_peek_key(v->mv_data, v->mv_size, pos, &part, &id, w->err);
	return !*rc && str_same(id, w->id) && str_same(part, w->partition);
}

/* An entity_index row: read the event it names and hand it on. */
static int walk_indexed(void *ctx, uint64_t pos)
{
	entity_walk *w = ctx;
	if (w->limit && w->count >= w->limit) {
		w->full = true;
		return 1;
	}
	uint8_t kb[8];
	sc_be64_put(kb, pos);
	MDB_val ek = {8, kb}, ev;
	int rc = mdb_get(w->txn, w->store->dbi_events, &ek, &ev);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(w->err, SC_ECORRUPT,
				    "entity_index names position %llu, which "
				    "is not in the log; the store is damaged",
				    (unsigned long long)pos);
	if (rc)
		return sc_store_lmdb_error(w->err, rc, "reading events");
	/* The key names the entity only up to a hash (entity_index.c). */
	if (!walk_wants(w, &ev, pos, &rc))
		return rc;
	rc = emit_event(&ev, pos, w->fn, w->ctx, w->err);
	if (rc)
		return rc;
	w->count++;
	return 0;
}

/* Walk the log records with positions in [from, to] (the tail
 * entity_index does not cover yet), handing on those of the entity. */
static int walk_tail(entity_walk *w, uint64_t from, uint64_t to)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(w->txn, w->store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(w->err, rc, "reading events");
	uint8_t kb[8];
	sc_be64_put(kb, from);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos > to || (w->limit && w->count >= w->limit))
			break;
		if (!walk_wants(w, &v, pos, &rc)) {
			if (rc)
				goto out;
			continue;
		}
		rc = emit_event(&v, pos, w->fn, w->ctx, w->err);
		if (rc)
			goto out;
		w->count++;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(w->err, rc, "reading events");
out:
	mdb_cursor_close(cur);
	return rc;
}

/* Hand fn each event of `id` with a position in [from, to]: those
 * entity_index lists, then those of the unindexed tail of the log, in one
 * read transaction. */
static int walk_entity(sc_store *store, sc_str partition, sc_str id,
		       uint64_t from, uint64_t to, uint64_t limit,
		       sc_event_fn fn, void *ctx, sc_error *err)
{
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "entity reads need a store and a callback");
	if (id.len < 1 || id.len > SC_ENTITY_ID_MAX || !id.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "entity id is %zu bytes; it must be 1..%d",
				    id.len, SC_ENTITY_ID_MAX);
	if (partition.len > SC_EVENT_FIELD_MAX ||
	    (partition.len && !partition.ptr))
		return sc_error_set(err, SC_EINVAL,
				    "partition is %zu bytes; it must be "
				    "0..%d",
				    partition.len, SC_EVENT_FIELD_MAX);
	entity_walk w = {.store = store,
			 .partition = partition,
			 .id = id,
			 .limit = limit,
			 .fn = fn,
			 .ctx = ctx,
			 .err = err};
	int rc = sc_store_read_begin(store, &w.txn, err);
	if (rc)
		return rc;
	/* The index covers positions up to index_through as this transaction
	 * sees it; a store without the key indexes everything. */
	uint64_t through;
	rc = sc_index_through_get(store, w.txn, UINT64_MAX, &through, err);
	if (!rc)
		rc = sc_index_walk(store, w.txn, partition, id, from,
				   to < through ? to : through, walk_indexed,
				   &w, err);
	if (w.full)
		rc = 0;
	if (!rc && to > through && !w.full)
		rc = walk_tail(&w, from > through ? from : through + 1, to);
	sc_store_read_end(store, w.txn);
	return rc;
}

int sc_store_entity_events(sc_store *store, sc_str id, uint64_t from,
			   uint64_t limit, sc_event_fn fn, void *ctx,
			   sc_error *err)
{
	return walk_entity(store, (sc_str){"", 0}, id, from, UINT64_MAX, limit,
			   fn, ctx, err);
}

int sc_store_entity_events_in(sc_store *store, sc_str partition, sc_str id,
			      uint64_t from, uint64_t limit, sc_event_fn fn,
			      void *ctx, sc_error *err)
{
	return walk_entity(store, partition, id, from, UINT64_MAX, limit, fn,
			   ctx, err);
}

struct fold {
	sc_entity *state;
	sc_error *err;
	int rc;
};

static int fold_one(void *ctx, const sc_event *ev)
{
	struct fold *f = ctx;
	sc_entity *next = NULL;
	/* Decoding checked the event (sc_entity_validate_stored). */
	int rc = sc_entity_apply_valid(f->state, ev, &next, f->err);
	if (rc) {
		f->rc = rc;
		return rc;
	}
	sc_entity_free(f->state);
	f->state = next;
	return 0;
}

int sc_store_entity_at(sc_store *store, sc_str id, uint64_t position,
		       sc_entity **out, sc_error *err)
{
	return sc_store_entity_at_in(store, (sc_str){"", 0}, id, position, out,
				     err);
}

int sc_store_entity_at_in(sc_store *store, sc_str partition, sc_str id,
			  uint64_t position, sc_entity **out, sc_error *err)
{
	if (!out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_entity_at needs an out pointer");
	*out = NULL;
	struct fold f = {NULL, err, 0};
	int rc = walk_entity(store, partition, id, 1, position, 0, fold_one, &f,
			     err);
	if (rc) {
		sc_entity_free(f.state);
		return rc;
	}
	if (!f.state)
		return sc_error_set(
		    err, SC_NOTFOUND,
		    "entity %.*s%s%.*s did not exist at "
		    "position %llu",
		    (int)(id.len > 64 ? 64 : id.len), id.ptr,
		    partition.len ? " of partition " : "",
		    (int)(partition.len > 64 ? 64 : partition.len),
		    partition.len ? partition.ptr : "",
		    (unsigned long long)position);
	*out = f.state;
	return 0;
}

/* ---- verify -------------------------------------------------------------- */

int sc_store_verify(sc_store *store, sc_error *err)
{
	sc_error_clear(err);
	if (!store)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_verify needs a store");
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = sc_store_read_cursor(store, store->dbi_events,
				      "verifying the log", &txn, &cur, err);
	if (rc)
		return rc;
	MDB_val k, v;
	uint64_t expect = 1;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos != expect) {
			rc =
			    sc_error_set(err, SC_ECORRUPT,
					 "the event log has a gap or a bad key "
					 "at position %llu (found %llu)",
					 (unsigned long long)expect,
					 (unsigned long long)pos);
			goto out;
		}
		sc_decoded_event d;
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, &d, err);
		if (rc)
			goto out;
		sc_decoded_event_free(&d);
		expect++;
	}
	if (rc != MDB_NOTFOUND) {
		rc = sc_store_lmdb_error(err, rc, "verifying the log");
		goto out;
	}
	uint64_t last = expect - 1, committed = last, through;
	rc = sc_store_meta_last_get(store, txn, &committed, err);
	if (rc == SC_NOTFOUND)
		rc = 0;
	if (rc)
		goto out;
	if (committed != last) {
		rc = sc_error_set(err, SC_ECORRUPT,
				  "the event log ends at position %llu but "
				  "meta last_position is %llu",
				  (unsigned long long)last,
				  (unsigned long long)committed);
		goto out;
	}
	rc = sc_index_through_get(store, txn, last, &through, err);
	if (!rc)
		rc = sc_index_verify(store, txn, through, err);
	if (!rc)
		rc = sc_tag_index_verify(store, txn, last, err);
	if (!rc)
		rc = sc_catalog_verify(store, txn, err);
out:
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return rc;
}
