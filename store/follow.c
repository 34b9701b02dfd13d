/*
 * Read-only stores: following a log another process writes
 * (include/statecache/store.h: read_only, sc_store_refresh,
 * sc_store_wait_position).
 *
 * What must hold:
 * - A read-only store never begins a write transaction (sc_store_write,
 *   sc_store_append and sc_store_snapshot refuse) and never takes the
 *   writer's LMDB lock: its only LMDB use is read transactions.
 * - The cache of a read-only store has one writer: whoever holds
 *   follower.mu (the follow thread or a caller of sc_store_refresh).
 * - Each refresh reads meta "last_position" and the events up to it in one
 *   read transaction, so it replays exactly what a commit of the writer
 *   made durable, whole; every promoted version is the fold of the log up
 *   to its position (sc_view_position), as in the writer's process.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "cache/cache_lib.h"
#include "common/internal.h"

/* Events applied between two promotes of a long catch-up. */
#define FOLLOW_BATCH 8192
/* Events decoded and applied together (in the cache's lanes). */
#define FOLLOW_CHUNK 512

struct sc_store_follower {
	pthread_mutex_t mu; /* one refresh at a time: the cache's writer */
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv;
	bool stop;
	bool thread_started;
	bool failing; /* the last refresh failed (warned once) */
	pthread_t thread;
	sc_decoded_event d[FOLLOW_CHUNK];
	sc_event ev[FOLLOW_CHUNK];
};

int sc_store_read_only_error(sc_error *err, const char *what)
{
	return sc_error_set(err, SC_EINVAL,
			    "%s: the store was opened read-only "
			    "(options.read_only); open it for writing in the "
			    "process that writes it",
			    what);
}

/* Apply and free the n decoded events of the chunk. */
static int flush_chunk(sc_store *store, size_t n, bool apply, sc_error *err)
{
	struct sc_store_follower *f = store->follower;
	int rc = 0;
	if (apply && n)
		rc = sc_cache_apply_batch_valid(store->cache, f->ev, n, NULL,
						err);
	for (size_t i = 0; i < n; i++)
		sc_decoded_event_free(&f->d[i]);
	return rc;
}

/* Promote what was applied up to `pos` and publish it. */
static int publish(sc_store *store, uint64_t pos, sc_error *err)
{
	int rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		return sc_error_set(err, rc,
				    "promoting the events up to position %llu "
				    "failed (%s)",
				    (unsigned long long)pos, sc_strerror(rc));
	}
	atomic_store(&store->last_position, pos);
	sc_query_notify(store);
	return 0;
}

/* One refresh, under f->mu. */
static int refresh_locked(sc_store *store, sc_error *err)
{
	struct sc_store_follower *f = store->follower;
	uint64_t have = atomic_load(&store->last_position);
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = sc_store_read_cursor(store, store->dbi_events,
				      "following the log", &txn, &cur, err);
	if (rc)
		return rc;
	uint64_t last = 0;
	rc = sc_store_meta_last_get(store, txn, &last, err);
	if (rc == SC_NOTFOUND) {
		rc = 0;
		last = have;
	}
	if (rc || last <= have) {
		mdb_cursor_close(cur);
		sc_store_read_end(store, txn);
		return rc;
	}
	uint8_t kb[8];
	sc_be64_put(kb, have + 1);
	MDB_val k = {8, kb}, v;
	uint64_t expect = have + 1;
	size_t n = 0;
	int op = MDB_SET_RANGE;
	while (expect <= last) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		op = MDB_NEXT;
		if (rc && rc != MDB_NOTFOUND) {
			rc = sc_store_lmdb_error(err, rc, "following the log");
			goto fail;
		}
		uint64_t pos =
		    !rc && k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos != expect) {
			rc = sc_error_set(
			    err, SC_ECORRUPT,
			    "the event log has a gap or a bad key at position "
			    "%llu (found %llu) though position %llu was "
			    "committed; the store is damaged",
			    (unsigned long long)expect, (unsigned long long)pos,
			    (unsigned long long)last);
			goto fail;
		}
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, &f->d[n], err);
		if (rc)
			goto fail;
		f->ev[n] = f->d[n].ev;
		n++;
		if (n == FOLLOW_CHUNK || expect == last) {
			rc = flush_chunk(store, n, true, err);
			n = 0;
			if (rc)
				goto fail;
		}
		if (expect == last || (expect - have) % FOLLOW_BATCH == 0) {
			rc = publish(store, expect, err);
			if (rc)
				goto fail;
		}
		expect++;
	}
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return 0;
fail:
	flush_chunk(store, n, false, NULL);
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	sc_cache_discard(store->cache);
	return rc;
}

int sc_store_refresh(sc_store *store, uint64_t *position, sc_error *err)
{
	sc_error_clear(err);
	if (!store)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_refresh needs a store");
	if (!store->follower)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_refresh: the store was opened "
				    "for writing; its cache is always current");
	pthread_mutex_lock(&store->follower->mu);
	int rc = refresh_locked(store, err);
	pthread_mutex_unlock(&store->follower->mu);
	if (position)
		*position = atomic_load(&store->last_position);
	return rc;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000),
			      (long)(ns % 1000000000)};
	return ts;
}

int sc_store_wait_position(sc_store *store, uint64_t position, int timeout_ms,
			   sc_error *err)
{
	sc_error_clear(err);
	if (!store)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_wait_position needs a store");
	if (atomic_load(&store->last_position) >= position)
		return 0;
	int64_t deadline =
	    timeout_ms < 0 ? -1 : mono_ns() + (int64_t)timeout_ms * 1000000;
	pthread_mutex_lock(&store->query_mu);
	atomic_fetch_add(&store->query_waiters, 1);
	int rc = 0;
	while (atomic_load(&store->last_position) < position) {
		if (deadline < 0) {
			pthread_cond_wait(&store->query_cv, &store->query_mu);
			continue;
		}
		if (mono_ns() >= deadline) {
			rc = ETIMEDOUT;
			break;
		}
		struct timespec ts = to_timespec(deadline);
		pthread_cond_timedwait(&store->query_cv, &store->query_mu, &ts);
	}
	atomic_fetch_sub(&store->query_waiters, 1);
	pthread_mutex_unlock(&store->query_mu);
	if (rc)
		return sc_error_set(
		    err, rc,
		    "position %llu not reached within %d ms "
		    "(the store holds up to %llu)",
		    (unsigned long long)position, timeout_ms,
		    (unsigned long long)atomic_load(&store->last_position));
	return 0;
}

pthread_mutex_t *sc_store_follow_mutex(sc_store *store)
{
	return &store->follower->mu;
}

bool sc_store_read_only(const sc_store *store)
{
	return store && store->opt.read_only;
}

static void *follow_main(void *arg)
{
	sc_store *store = arg;
	struct sc_store_follower *f = store->follower;
	int64_t interval = (int64_t)store->opt.follow_interval_ms * 1000000;
	pthread_mutex_lock(&f->stop_mu);
	while (!f->stop) {
		struct timespec ts = to_timespec(mono_ns() + interval);
		pthread_cond_timedwait(&f->stop_cv, &f->stop_mu, &ts);
		if (f->stop)
			break;
		pthread_mutex_unlock(&f->stop_mu);
		sc_error err;
		sc_error_clear(&err);
		pthread_mutex_lock(&f->mu);
		int rc = refresh_locked(store, &err);
		pthread_mutex_unlock(&f->mu);
		/* A failure is reported once; the next poll tries again. */
		if (rc && !f->failing)
			sc_store_warn(store, "following the log: %s",
				      err.message);
		f->failing = rc != 0;
		pthread_mutex_lock(&f->stop_mu);
	}
	pthread_mutex_unlock(&f->stop_mu);
	return NULL;
}

int sc_store_follow_start(sc_store *store, uint64_t snap_pos, sc_error *err)
{
	struct sc_store_follower *f = sc_calloc(1, sizeof *f);
	if (!f)
		return sc_error_set(err, ENOMEM,
				    "out of memory for the log follower");
	pthread_mutex_init(&f->mu, NULL);
	pthread_mutex_init(&f->stop_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->stop_cv, &ca);
	pthread_condattr_destroy(&ca);
	store->follower = f;
	atomic_store(&store->last_position, snap_pos);
	int rc = refresh_locked(store, err);
	if (rc || store->opt.follow_manual)
		return rc;
	rc = pthread_create(&f->thread, NULL, follow_main, store);
	if (rc)
		return sc_error_set(err, rc,
				    "cannot start the thread that follows the "
				    "log: %s",
				    strerror(rc));
	f->thread_started = true;
	return 0;
}

void sc_store_follow_stop(sc_store *store)
{
	struct sc_store_follower *f = store->follower;
	if (!f)
		return;
	if (f->thread_started) {
		pthread_mutex_lock(&f->stop_mu);
		f->stop = true;
		pthread_cond_signal(&f->stop_cv);
		pthread_mutex_unlock(&f->stop_mu);
		pthread_join(f->thread, NULL);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_mutex_destroy(&f->stop_mu);
	pthread_cond_destroy(&f->stop_cv);
	sc_free(f);
	store->follower = NULL;
}
