/*
 * The store object, shared by store.c (open, append, reads) and
 * snapshots.c (snapshot write, list, restore). Not installed.
 *
 * Locks, in the order they are taken:
 *
 *   snap_mu   one sc_store_snapshot at a time (held while encoding).
 *   write_mu  one writer: held for a whole append, and by a snapshot only
 *             for its short write transaction. Map growth happens under it.
 *   map_lock  rwlock: every read transaction holds it shared; growing the
 *             map (mdb_env_set_mapsize, which requires that no transaction
 *             is active in the process) holds it exclusive.
 */
#ifndef STATECACHE_STORE_INTERNAL_H
#define STATECACHE_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "statecache/store.h"
#include "store/event_codec.h"

/* Value of the meta key "format_version" written by this build. */
#define SC_STORE_FORMAT_VERSION 2u

/* index_lag when the options give 0. */
#define SC_STORE_INDEX_LAG_DEFAULT 4096u

struct sc_store {
	MDB_env *env;
	MDB_dbi dbi_events, dbi_index, dbi_snapshots, dbi_meta;
	sc_cache *cache;
	sc_store_options opt;

	pthread_mutex_t snap_mu;
	pthread_mutex_t write_mu;
	pthread_rwlock_t map_lock;

	_Atomic uint64_t last_position;
	/* entity_index holds a row for every event up to this position
	 * (meta key "index_through", committed with those rows). Written
	 * under write_mu; readers take it from meta in their own read
	 * transaction, consistent with the log they see. */
	uint64_t index_through;
	uint64_t since_snapshot; /* events appended since the last snapshot */
	bool stale; /* a committed batch could not be promoted: reopen */
	/* When open restored a snapshot and found no events after it, the
	 * promoted version holds the state at restored_position, but its
	 * sc_view_position is only the newest entity position (a trailing
	 * delete leaves no entity behind). A snapshot of that version would
	 * be filed under the wrong position; it is also redundant. */
	uint64_t restored_version, restored_position;

	/* Writer-only scratch (under write_mu). */
	sc_projector *projectors;
	size_t nprojectors;
	sc_event *batch;
	size_t cap_batch;

	/* The background flush of sync_interval_ms (sync.c); NULL: none. */
	struct sc_store_syncer *syncer;
	/* nosync session markers (sync.c); NULL: none. */
	struct sc_store_session *session;
};

/*
 * ThreadSanitizer cannot see how LMDB orders a write transaction after the
 * readers of the pages it reuses (reader-table slots and meta pages in
 * uninstrumented code), and reports those page writes as races with earlier
 * reads. In TSan builds only, every write transaction holds map_lock
 * exclusively, which creates exactly the happens-before edges LMDB
 * guarantees. Other builds take no lock here: readers never wait for the
 * writer.
 */
#if defined(__SANITIZE_THREAD__)
#define SC_STORE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SC_STORE_TSAN 1
#endif
#endif

static inline void sc_store_tsan_write_begin(struct sc_store *s)
{
#ifdef SC_STORE_TSAN
	pthread_rwlock_wrlock(&s->map_lock);
#else
	(void)s;
#endif
}

static inline void sc_store_tsan_write_end(struct sc_store *s)
{
#ifdef SC_STORE_TSAN
	pthread_rwlock_unlock(&s->map_lock);
#else
	(void)s;
#endif
}

/* Big-endian 64-bit keys: LMDB's bytewise order is numeric order. */
static inline void sc_be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t sc_be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline void sc_be32_put(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint32_t sc_be32_get(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Turn an LMDB return code into an sc code with a message naming `what`. */
int sc_store_lmdb_error(sc_error *err, int rc, const char *what);

/* Send a warning to opt.warn (or stderr). */
void sc_store_warn(sc_store *store, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Start the background flush thread when the options ask for one
 * (durability nosync, sync_interval_ms > 0); 0 otherwise. Errors: ENOMEM,
 * a pthread_create error. */
int sc_store_sync_start(sc_store *store, sc_error *err);
/* Stop and join that thread; a no-op when there is none. */
void sc_store_sync_stop(sc_store *store);
/* First of all (even before looking for data.mdb, which such a session
 * may not have made durable): refuse (SC_ECORRUPT) a store whose nosync
 * session was cut by a restart of the machine. Errors: SC_ECORRUPT, errno
 * values. */
int sc_store_session_check(const char *dir, sc_error *err);
/* Before mdb_env_open: the same check, and in nosync create this
 * session's marker (synced). Errors: SC_ECORRUPT, ENOMEM, errno values. */
int sc_store_session_begin(sc_store *store, const char *dir, sc_error *err);
/* After mdb_env_open: flush and forget the markers of crashed processes.
 * Errors: SC_ELMDB. */
int sc_store_session_opened(sc_store *store, sc_error *err);
/* At close: remove this session's marker if `flushed` (the last commit
 * reached the disk) or the environment was never opened. */
void sc_store_session_end(sc_store *store, bool flushed);

/* Begin a read transaction; holds map_lock shared until sc_store_read_end. */
int sc_store_read_begin(sc_store *store, MDB_txn **txn, sc_error *err);
void sc_store_read_end(sc_store *store, MDB_txn *txn);

/* Grow the map after MDB_MAP_FULL (write_mu held, no transaction open in
 * the writer). SC_EMAPFULL at map_size_max. */
int sc_store_grow_map(sc_store *store, sc_error *err);

/* Drop the process's page-table entries for the pages of the LMDB map
 * that hold bytes lo..hi-1 (madvise MADV_DONTNEED on the pages containing
 * them, so the range never leaves the map). Restore and replay touch each
 * page once; every touched page (with the kernel's fault-around
 * neighbours) would otherwise stay in the process's RSS. The map is a
 * MAP_SHARED file mapping, so the pages stay in the page cache, dirty ones
 * stay dirty, and any later access, even through a pointer still held,
 * faults the same bytes back in. Best effort: a failure only leaves the
 * pages mapped. lo..hi must lie inside one LMDB map (values or keys read
 * through it); lo >= hi is a no-op. */
void sc_store_release_pages(const void *lo, const void *hi);

/* Replay the log after `after` into the cache (open-time, single thread).
 * Promotes in batches. On failure the pending version is discarded. */
int sc_store_replay(sc_store *store, uint64_t after, sc_error *err);

/* Restore the newest snapshot that verifies into the cache; *position is
 * its position (0: none restored, the cache is empty). Open-time. */
int sc_store_restore(sc_store *store, uint64_t *position, sc_error *err);

#endif
