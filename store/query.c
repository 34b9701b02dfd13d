/*
 * Queries of the log (include/statecache/query.h).
 *
 * A query reads ahead: one read transaction copies the records of the
 * next matching positions (a batch) out of LMDB into the query's decode
 * arena and decodes each there (once the next record is found: its bytes
 * are fetched into the CPU's cache meanwhile, see PREFETCH_BYTES), then
 * ends; the calls deliver the decoded events. `next` is the first position no
 * batch has looked at yet; every position before it was either decoded or known
 * not to match, so a batch that ends short and delivers nothing means the
 * query has seen the whole log up to next - 1 (a full batch of rows that
 * did not match sets `more`: read on).
 *
 * Which positions a batch looks at:
 *   all        the log from next on
 *   entity     entity_index up to meta index_through, then the log after
 *              it (the index lags), each event's id checked
 *   tag,       tag_index or partition_index up to meta
 *   partition  query_index_through (positions read BATCH_EVENTS at a
 *              time, then looked up in order), then the log after it
 *              (these indexes lag too), each event's tags or partition
 *              peeked at (its framing checked, sc_event_peek_tag / _key)
 * Index rows name a key id, which may stand for other values too (see
 * tag_index.c): every event read through an index is checked against the
 * query when it is decoded, and the others are skipped.
 *
 * The end of the log a batch stops at is meta last_position read in its
 * transaction; a finite query also stops at the last position committed
 * when it was opened.
 *
 * Waking a live query: when a batch finds nothing, the query waits on
 * store->query_cv until store->last_position (this process's appends)
 * reaches `next`, or its poll interval passes (other processes' appends),
 * or it is cancelled, or its timeout passes; then it reads a new batch.
 * The waiter counts itself in query_waiters (under query_mu) before it
 * checks last_position; an append stores last_position before it reads
 * query_waiters (both sequentially consistent), so either the waiter sees
 * the new position or the append sees the waiter and signals it under
 * query_mu, which the waiter holds until it waits: no wake-up is lost,
 * and an append with no waiter takes no lock.
 */
#include "statecache/query.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/internal.h"
#include "store/store_internal.h"

/* The events an index names are looked up on one cursor: one WALK_MAX or
 * fewer positions ahead of it by stepping (MDB_NEXT, which reads the
 * nodes in between, in order), farther by a search (MDB_SET: on the
 * cursor's page LMDB searches that page, else from the root). A search
 * costs about as much as a dozen steps, mostly in cache misses on the
 * nodes its binary search touches (measured: tags on every 4th event read
 * 15% faster stepping, on every 16th no faster). */
#define WALK_MAX 8

/* An index's next position more than WALK_MAX ahead is searched for,
 * from the root when it is not on the cursor's page, and the search's
 * cost is in cache misses on the leaf it lands on: the header and the
 * nodes its binary search reads. The events database grows by appends,
 * so the leaf after a record's page is most often the next page of the
 * map (3 of 4 in bench/query's log): before the search, while the
 * record before is decoded, a line every PAGE_PREFETCH_STRIDE bytes of
 * that page is fetched into the cache. Measured in bench/query, whose
 * SQLite reads between the query's evict the log from the cache, tags 16
 * events apart read 10 to 20% faster with it (strides of 192 to 768
 * bytes alike; the whole page once per page, no faster). A wrong guess
 * costs a few prefetches; the data pointer LMDB returned is only used to
 * compute an address, never read beyond its record. */
#define PAGE_PREFETCH_STRIDE 384

/* A batch copies at most this many records, or this many bytes (but at
 * least one record). */
#define BATCH_EVENTS 256
#define BATCH_BYTES  ((size_t)4 << 20)

/* Bytes of a record fetched into the CPU's cache when it is found, before
 * the record found before it is copied and decoded. */
#define PREFETCH_BYTES 512

struct sc_query {
	sc_store *store;
	sc_query_kind kind;
	char *key;
	size_t keylen;
	char *part; /* SC_QUERY_ENTITY: the partition; NULL: the default */
	size_t partlen;
	bool live;
	size_t psize;	    /* LMDB's page size */
	int poll_ms;	    /* < 0: never poll */
	uint64_t next;	    /* first position no batch has looked at */
	uint64_t end;	    /* finite queries: the last position */
	uint64_t delivered; /* position of the last event delivered */
	atomic_bool cancelled;
	/* Damage met (SC_ECORRUPT, or SC_ETOOBIG for a record over the
	 * limit): every later call reports it, once the
	 * events read before it are delivered; a retry from the position
	 * after them could sort past a damaged key and go on silently. */
	sc_error fault;

	/* The current batch: evs[0..nev) decoded (evs[iev..nev) not yet
	 * delivered), their records and arrays in `arena`, which the next
	 * batch reuses: a batch is read only once the calls delivered every
	 * event of the one before, and those stay valid until the next
	 * call. */
	sc_event *evs; /* BATCH_EVENTS of them */
	size_t nev, iev;
	bool more; /* the batch ended full: the log may hold more now */
	sc_decode_arena arena;
};

/* ---- waking -------------------------------------------------------------- */

void sc_query_notify(sc_store *store)
{
	if (atomic_load(&store->query_waiters) == 0)
		return;
	pthread_mutex_lock(&store->query_mu);
	pthread_cond_broadcast(&store->query_cv);
	pthread_mutex_unlock(&store->query_mu);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait until this process commits position q->next, the poll interval
 * passes, `deadline` (monotonic ns; < 0: none) passes or the query is
 * cancelled. */
static void wait_commit(sc_query *q, int64_t deadline)
{
	sc_store *s = q->store;
	int64_t until = deadline;
	if (q->poll_ms >= 0) {
		int64_t poll = mono_ns() + (int64_t)q->poll_ms * 1000000;
		if (until < 0 || poll < until)
			until = poll;
	}
	pthread_mutex_lock(&s->query_mu);
	atomic_fetch_add(&s->query_waiters, 1);
	while (!atomic_load(&q->cancelled) &&
	       atomic_load(&s->last_position) < q->next) {
		if (until < 0) {
			pthread_cond_wait(&s->query_cv, &s->query_mu);
			continue;
		}
		struct timespec ts = {(time_t)(until / 1000000000),
				      (long)(until % 1000000000)};
		if (pthread_cond_timedwait(&s->query_cv, &s->query_mu, &ts) ==
		    ETIMEDOUT)
			break;
	}
	atomic_fetch_sub(&s->query_waiters, 1);
	pthread_mutex_unlock(&s->query_mu);
}

void sc_query_cancel(sc_query *q)
{
	if (!q)
		return;
	atomic_store(&q->cancelled, true);
	pthread_mutex_lock(&q->store->query_mu);
	pthread_cond_broadcast(&q->store->query_cv);
	pthread_mutex_unlock(&q->store->query_mu);
}

/* ---- open and close ------------------------------------------------------ */

int sc_query_open(sc_store *store, const sc_query_spec *spec, sc_query **out,
		  sc_error *err)
{
	sc_error_clear(err);
	if (!store || !spec || !out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_query_open needs a store, a spec and "
				    "an out pointer");
	*out = NULL;
	size_t max = 0;
	const char *what = NULL;
	switch (spec->kind) {
	case SC_QUERY_ALL:
		break;
	case SC_QUERY_ENTITY:
		max = SC_ENTITY_ID_MAX;
		what = "an entity id";
		break;
	case SC_QUERY_TAG:
		max = SC_EVENT_FIELD_MAX;
		what = "a tag";
		break;
	case SC_QUERY_PARTITION:
		max = SC_EVENT_FIELD_MAX;
		what = "a partition";
		break;
	default:
		return sc_error_set(err, SC_EINVAL,
				    "unknown query kind %d; use one of "
				    "sc_query_kind",
				    (int)spec->kind);
	}
	if (spec->kind == SC_QUERY_ENTITY &&
	    (spec->partition.len > SC_EVENT_FIELD_MAX ||
	     (spec->partition.len && !spec->partition.ptr)))
		return sc_error_set(err, SC_EINVAL,
				    "the query's partition is %zu bytes; a "
				    "partition is 0..%d bytes",
				    spec->partition.len, SC_EVENT_FIELD_MAX);
	if (what &&
	    (spec->key.len < 1 || spec->key.len > max || !spec->key.ptr))
		return sc_error_set(
		    err, SC_EINVAL,
		    "the query's key is %zu bytes; %s is 1..%zu "
		    "bytes",
		    spec->key.len, what, max);
	sc_query *q = sc_calloc(1, sizeof *q);
	if (!q)
		return sc_error_set(err, ENOMEM, "out of memory for a query");
	q->store = store;
	q->kind = spec->kind;
	q->live = spec->live;
	q->poll_ms = spec->poll_ms == 0	 ? SC_QUERY_POLL_MS_DEFAULT
		     : spec->poll_ms < 0 ? -1
					 : spec->poll_ms;
	MDB_stat st;
	q->psize = mdb_env_stat(store->env, &st) == 0 ? st.ms_psize : 0;
	q->next = spec->from ? spec->from : 1;
	q->delivered = q->next - 1;
	/* The end of the log as meta says: with the commits of other
	 * processes. */
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (!rc) {
		rc = sc_store_meta_last_get(store, txn, &q->end, err);
		sc_store_read_end(store, txn);
	}
	if (rc) {
		sc_free(q);
		return rc;
	}
	atomic_init(&q->cancelled, false);
	if (what) {
		q->key = sc_malloc(spec->key.len);
		if (!q->key) {
			sc_free(q);
			return sc_error_set(err, ENOMEM,
					    "out of memory for a query");
		}
		memcpy(q->key, spec->key.ptr, spec->key.len);
		q->keylen = spec->key.len;
	}
	if (spec->kind == SC_QUERY_ENTITY && spec->partition.len) {
		q->part = sc_malloc(spec->partition.len);
		if (!q->part) {
			sc_free(q->key);
			sc_free(q);
			return sc_error_set(err, ENOMEM,
					    "out of memory for a query");
		}
		memcpy(q->part, spec->partition.ptr, spec->partition.len);
		q->partlen = spec->partition.len;
	}
	*out = q;
	return 0;
}

void sc_query_close(sc_query *q)
{
	if (!q)
		return;
	sc_decode_arena_free(&q->arena);
	sc_free(q->evs);
	sc_free(q->key);
	sc_free(q->part);
	sc_free(q);
}

uint64_t sc_query_position(const sc_query *q)
{
	return q->delivered;
}

/* ---- reading a batch ----------------------------------------------------- */

typedef struct batch {
	sc_query *q;
	MDB_txn *txn;
	/* On the events database: the positions an index names only grow
	 * (see WALK_MAX). */
	MDB_cursor *events;
	uint64_t at;   /* the position `events` is on; 0: none yet */
	uint64_t hi;   /* the last position this batch may look at */
	uint64_t seen; /* every position up to this one is looked at */
	size_t nrecs;  /* records taken, `pend` included */
	size_t bytes;  /* and their bytes */
	bool full;
	uint64_t ahead; /* the position the index names next; 0: none */
	/* The record taken last, copied and decoded once the next one is
	 * found (its bytes reach the cache meanwhile) or the batch ends; it
	 * points into the map, valid while txn is. */
	bool pend;
	uint64_t pend_pos;
	MDB_val pend_val;
	sc_error *err;
} batch;

static bool matches(const sc_query *q, const sc_event *ev);

/* Copy the record `v` at `pos` into the arena and decode it there into
 * q->evs[nev], kept if it matches the query (an index's key id may stand
 * for other values too). */
static int batch_decode(batch *b, uint64_t pos, const MDB_val *v)
{
	sc_query *q = b->q;
	void *copy = NULL;
	sc_event *ev = &q->evs[q->nev];
	/* A record over the limit is refused as it is, not copied first (a
	 * damaged store could make it as large as the map). */
	if (v->mv_size > SC_EVENT_RECORD_MAX)
		return sc_event_decode_arena(v->mv_data, v->mv_size, pos,
					     &q->arena, ev, b->err);
	if (v->mv_size) {
		copy = sc_decode_arena_alloc(&q->arena, v->mv_size);
		if (!copy)
			return sc_error_set(b->err, ENOMEM,
					    "out of memory reading events");
		memcpy(copy, v->mv_data, v->mv_size);
	}
	int rc =
	    sc_event_decode_arena(copy, v->mv_size, pos, &q->arena, ev, b->err);
	if (rc)
		return rc;
	if (matches(q, ev))
		q->nev++;
	return 0;
}

/* Decode the pending record, if any. */
static int batch_flush(batch *b)
{
	if (!b->pend)
		return 0;
	b->pend = false;
	return batch_decode(b, b->pend_pos, &b->pend_val);
}

/* Fetch lines of the page after the one `rec` (a record LMDB returned)
 * is on into the cache (PAGE_PREFETCH_STRIDE). */
static void prefetch_next_page(const sc_query *q, const void *rec)
{
	size_t ps = q->psize;
	if (!ps || (ps & (ps - 1)))
		return;
	uintptr_t page = ((uintptr_t)rec & ~(uintptr_t)(ps - 1)) + ps;
	for (size_t off = 0; off < ps; off += PAGE_PREFETCH_STRIDE)
		__builtin_prefetch((const void *)(page + off));
}

/* Take the record `v` at `pos` into the batch: start fetching its bytes
 * (and, when the index's next position will be searched for, the next
 * page's), then decode the one taken before meanwhile. */
static int batch_add(batch *b, uint64_t pos, const MDB_val *v)
{
	const char *p = v->mv_data;
	for (size_t off = 64; off < v->mv_size && off < PREFETCH_BYTES;
	     off += 64)
		__builtin_prefetch(p + off);
	if (b->ahead > pos && b->ahead - pos > WALK_MAX)
		prefetch_next_page(b->q, p);
	int rc = batch_flush(b);
	if (rc)
		return rc;
	b->pend = true;
	b->pend_pos = pos;
	b->pend_val = *v;
	b->seen = pos;
	b->bytes += v->mv_size;
	if (++b->nrecs >= BATCH_EVENTS || b->bytes >= BATCH_BYTES)
		b->full = true;
	return 0;
}

static bool str_eq(sc_str a, const char *p, size_t n)
{
	return a.len == n && (n == 0 || memcmp(a.ptr, p, n) == 0);
}

static bool matches(const sc_query *q, const sc_event *ev)
{
	switch (q->kind) {
	case SC_QUERY_ENTITY:
		return str_eq(ev->entity, q->key, q->keylen) &&
		       str_eq(ev->partition, q->part, q->partlen);
	case SC_QUERY_TAG:
		for (size_t i = 0; i < ev->ntags; i++)
			if (str_eq(ev->tags[i], q->key, q->keylen))
				return true;
		return false;
	case SC_QUERY_PARTITION:
		return str_eq(ev->partition, q->key, q->keylen);
	default:
		return true;
	}
}

/* Whether the log record at pos (not through an index) belongs to the
 * query, from a peek at the fields the query names: the record's framing
 * is checked here, the whole record when it is decoded to be delivered. */
static int record_matches(batch *b, const MDB_val *v, uint64_t pos, bool *yes)
{
	sc_query *q = b->q;
	*yes = true;
	if (q->kind == SC_QUERY_ALL)
		return 0;
	if (q->kind == SC_QUERY_TAG)
		return sc_event_peek_tag(v->mv_data, v->mv_size, pos,
					 (sc_str){q->key, q->keylen}, yes,
					 b->err);
	sc_str part, id;
	int rc =
	    sc_event_peek_key(v->mv_data, v->mv_size, pos, &part, &id, b->err);
	if (rc)
		return rc;
	if (q->kind == SC_QUERY_ENTITY)
		*yes = str_eq(id, q->key, q->keylen) &&
		       str_eq(part, q->part, q->partlen);
	else
		*yes = str_eq(part, q->key, q->keylen);
	return 0;
}

/* Look at the log's records at positions [from, b->hi] (the tail no
 * index covers yet): take those of the query. */
static int batch_scan(batch *b, uint64_t from)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(b->txn, b->q->store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(b->err, rc, "reading events");
	uint8_t kb[8];
	sc_be64_put(kb, from);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	while (!b->full && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != 8) {
			rc = sc_error_set(b->err, SC_ECORRUPT,
					  "an events key is %zu bytes, "
					  "expected 8; the store is damaged",
					  k.mv_size);
			goto out;
		}
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos > b->hi)
			break;
		bool yes;
		if ((rc = record_matches(b, &v, pos, &yes)))
			goto out;
		if (yes && (rc = batch_add(b, pos, &v)))
			goto out;
		b->seen = pos;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(b->err, rc, "reading events");
	if (!rc && !b->full)
		b->seen = b->hi;
out:
	mdb_cursor_close(cur);
	return rc;
}

/* An index row: take the event it names. */
static int batch_indexed(void *ctx, uint64_t pos)
{
	batch *b = ctx;
	if (b->full)
		return 1;
	int rc;
	if (!b->events &&
	    (rc = mdb_cursor_open(b->txn, b->q->store->dbi_events, &b->events)))
		return sc_store_lmdb_error(b->err, rc, "reading events");
	uint8_t kb[8];
	sc_be64_put(kb, pos);
	MDB_val ek = {8, kb}, v;
	if (b->at && pos > b->at && pos - b->at <= WALK_MAX) {
		/* Close ahead: step there (the log is dense). */
		rc = 0;
		while (!rc && ++b->at < pos)
			rc = mdb_cursor_get(b->events, NULL, NULL, MDB_NEXT);
		if (!rc)
			rc = mdb_cursor_get(b->events, &ek, &v, MDB_NEXT);
		if (!rc && (ek.mv_size != 8 || sc_be64_get(ek.mv_data) != pos))
			return sc_error_set(b->err, SC_ECORRUPT,
					    "the event log has a gap or a bad "
					    "key before position %llu; the "
					    "store is damaged",
					    (unsigned long long)pos);
	} else {
		rc = mdb_cursor_get(b->events, &ek, &v, MDB_SET);
	}
	b->at = rc ? 0 : pos;
	if (rc == MDB_NOTFOUND)
		return sc_error_set(b->err, SC_ECORRUPT,
				    "an index names position %llu, which is "
				    "not in the log; the store is damaged",
				    (unsigned long long)pos);
	if (rc)
		return sc_store_lmdb_error(b->err, rc, "reading events");
	/* Tag and partition rows are checked when the event is decoded. */
	bool yes = true;
	if (b->q->kind == SC_QUERY_ENTITY &&
	    (rc = record_matches(b, &v, pos, &yes)))
		return rc;
	if (yes)
		return batch_add(b, pos, &v);
	return 0;
}

/* The events tag_index or partition_index (dbi) lists for the query in
 * [q->next, through], read BATCH_EVENTS positions at a time. */
static int batch_from_index(batch *b, MDB_dbi dbi, const char *name,
			    uint64_t through)
{
	sc_query *q = b->q;
	uint64_t pos[BATCH_EVENTS];
	uint64_t from = q->next;
	while (!b->full && from <= through) {
		size_t n;
		int rc = sc_tag_index_positions(
		    b->txn, dbi, name, (sc_str){q->key, q->keylen}, from,
		    through, pos, BATCH_EVENTS, &n, b->err);
		for (size_t i = 0; !rc && i < n && !b->full; i++) {
			b->ahead = i + 1 < n ? pos[i + 1] : 0;
			rc = batch_indexed(b, pos[i]);
		}
		b->ahead = 0;
		/* (A last row at the largest position ends the walk: from
		 * would wrap to 0.) */
		if (rc || n < BATCH_EVENTS || pos[n - 1] >= through)
			return rc;
		from = pos[n - 1] + 1;
	}
	return 0;
}

/* Read the next batch of q in one read transaction. */
static int fetch(sc_query *q, sc_error *err)
{
	q->nev = q->iev = 0;
	q->more = false;
	sc_decode_arena_reset(&q->arena);
	if (q->fault.code) {
		if (err)
			*err = q->fault;
		return q->fault.code;
	}
	if (!q->evs) {
		q->evs = sc_malloc(BATCH_EVENTS * sizeof *q->evs);
		if (!q->evs)
			return sc_error_set(err, ENOMEM,
					    "out of memory for a query's "
					    "events");
	}
	batch b = {.q = q, .err = err};
	int rc = sc_store_read_begin(q->store, &b.txn, err);
	if (rc)
		return rc;
	uint64_t last = 0;
	rc = sc_store_meta_last_get(q->store, b.txn, &last, err);
	if (rc)
		goto out;
	b.hi = q->live || last < q->end ? last : q->end;
	if (q->next > b.hi)
		goto out;
	b.seen = q->next - 1;
	uint64_t through = b.hi;
	MDB_dbi dbi = 0;
	const char *name = NULL;
	switch (q->kind) {
	case SC_QUERY_ALL:
		through = q->next - 1;
		break;
	case SC_QUERY_ENTITY:
		rc = sc_index_through_get(q->store, b.txn, last, &through, err);
		dbi = q->store->dbi_index;
		name = "entity_index";
		break;
	case SC_QUERY_TAG:
	case SC_QUERY_PARTITION:
		rc = sc_tag_index_through_get(q->store, b.txn, last, &through,
					      err);
		dbi = q->kind == SC_QUERY_TAG ? q->store->dbi_tags
					      : q->store->dbi_partitions;
		name =
		    q->kind == SC_QUERY_TAG ? "tag_index" : "partition_index";
		break;
	}
	if (rc)
		goto out;
	if (through > b.hi)
		through = b.hi;
	if (name && through >= q->next) {
		sc_str key = {q->key, q->keylen};
		/* entity_index files its rows by epoch first
		 * (entity_index.c); the query indexes do not. */
		if (q->kind == SC_QUERY_ENTITY)
			rc = sc_index_walk(
			    q->store, b.txn,
			    (sc_str){q->part ? q->part : "", q->partlen}, key,
			    q->next, through, batch_indexed, &b, err);
		else
			rc = batch_from_index(&b, dbi, name, through);
		if (rc == 1 && b.full)
			rc = 0;
		if (rc)
			goto out;
		if (!b.full)
			b.seen = through;
	}
	/* The log after the index's reach. */
	if (!b.full && b.hi > b.seen)
		rc = batch_scan(&b, b.seen + 1);
out:;
	/* The record taken last (its failure comes first in the log). */
	int frc = batch_flush(&b);
	if (frc)
		rc = frc;
	if (b.events)
		mdb_cursor_close(b.events);
	sc_store_read_end(q->store, b.txn);
	if (rc == SC_ECORRUPT || rc == SC_ETOOBIG) {
		q->fault.code = rc;
		if (err)
			memcpy(q->fault.message, err->message,
			       sizeof q->fault.message);
		else
			snprintf(q->fault.message, sizeof q->fault.message,
				 "the store is damaged");
	}
	if (rc && q->nev) {
		/* Deliver what was read before the fault; the next batch
		 * starts after it and meets the fault again (damage: the
		 * recorded one). */
		q->next = q->evs[q->nev - 1].position + 1;
		sc_error_clear(err);
		return 0;
	}
	if (rc)
		return rc;
	if (b.seen + 1 > q->next)
		q->next = b.seen + 1;
	q->more = b.full;
	return 0;
}

/* ---- delivering ---------------------------------------------------------- */

/* The next event of the current batch, or NULL when it has no more. */
static const sc_event *take_buffered(sc_query *q)
{
	if (q->iev == q->nev)
		return NULL;
	const sc_event *ev = &q->evs[q->iev++];
	q->delivered = ev->position;
	return ev;
}

/* The next event (waiting as sc_query_next) into *ev; NULL at the end of
 * a finite query. */
static int take_one(sc_query *q, int timeout_ms, const sc_event **ev,
		    sc_error *err)
{
	int64_t deadline =
	    timeout_ms > 0 ? mono_ns() + (int64_t)timeout_ms * 1000000 : -1;
	for (;;) {
		if (atomic_load(&q->cancelled))
			return sc_error_set(err, ECANCELED,
					    "the query was cancelled");
		if ((*ev = take_buffered(q)))
			return 0;
		if (!q->live && q->next > q->end)
			return 0;
		int rc = fetch(q, err);
		if (rc)
			return rc;
		/* A full batch whose events did not match (other values
		 * of a key id): read on, within the call's time. */
		if (q->nev)
			continue;
		if (q->more) {
			if (q->live && deadline >= 0 && mono_ns() >= deadline)
				return sc_error_set(err, ETIMEDOUT,
						    "no new event within %d "
						    "ms",
						    timeout_ms);
			continue;
		}
		if (!q->live)
			return 0;
		if (atomic_load(&q->cancelled))
			continue;
		if (timeout_ms == 0 || (deadline >= 0 && mono_ns() >= deadline))
			return sc_error_set(err, ETIMEDOUT,
					    "no new event within %d ms",
					    timeout_ms);
		wait_commit(q, deadline);
	}
}

int sc_query_next(sc_query *q, int timeout_ms, const sc_event **ev,
		  sc_error *err)
{
	sc_error_clear(err);
	if (!q || !ev)
		return sc_error_set(err, SC_EINVAL,
				    "sc_query_next needs a query and an out "
				    "pointer");
	*ev = NULL;
	return take_one(q, timeout_ms, ev, err);
}

int sc_query_next_batch(sc_query *q, int timeout_ms, const sc_event **evs,
			size_t max, size_t *n, sc_error *err)
{
	sc_error_clear(err);
	if (n)
		*n = 0;
	if (!q || !evs || !n || !max)
		return sc_error_set(err, SC_EINVAL,
				    "sc_query_next_batch needs a query, room "
				    "for at least one event and a count");
	const sc_event *ev;
	int rc = take_one(q, timeout_ms, &ev, err);
	if (rc || !ev)
		return rc;
	size_t got = 0;
	evs[got++] = ev;
	while (got < max && (ev = take_buffered(q)))
		evs[got++] = ev;
	*n = got;
	return 0;
}
