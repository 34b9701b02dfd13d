/*
 * statecache: the durable store.
 *
 * A store is a directory holding one LMDB environment with these named
 * databases (inspect them with `mdb_stat -a DIR`, `mdb_dump -s NAME DIR`):
 *
 *   events        key: position, 8 bytes big-endian; value: protobuf Event
 *   entity_index  key: entity id ++ position (8 bytes big-endian); value: empty
 *   snapshots     key: position ++ part (see snapshot/FORMAT.md)
 *   meta          key: ASCII name; value: format version, creation info,
 *                 projector offsets
 *
 * The event log is the source of truth. The cache (sc_store_cache) is its
 * projection: sc_store_append writes a batch in one LMDB write transaction,
 * calls every projector inside it, commits, then promotes the cache. Open
 * restores the newest snapshot that verifies and replays the log after it.
 *
 * Thread safety: sc_store_append, sc_store_snapshot and sc_store_close are
 * serialized by the store (one writer at a time); read functions may be
 * called from any thread; cache readers follow cache.h.
 */
#ifndef STATECACHE_STORE_H
#define STATECACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_store sc_store;

typedef enum sc_durability {
	/* Every commit is synced to disk before append returns: survives a
	 * process crash and a power loss. */
	SC_DURABILITY_FULL = 0,
	/* Commits are not synced (MDB_NOSYNC): survives a process crash; a
	 * power loss or OS crash may lose the last commits (never corrupts). */
	SC_DURABILITY_NOSYNC = 1,
} sc_durability;

/* Called for non-fatal problems (a snapshot skipped at open). */
typedef void (*sc_warn_fn)(void *ctx, const char *message);

typedef struct sc_store_options {
	sc_durability durability;
	bool create;		 /* create the directory/store if missing */
	size_t map_size;	 /* initial map size; 0: 64 MiB */
	size_t map_size_max;	 /* growth limit; 0: 64 GiB */
	uint64_t snapshot_every; /* snapshot after this many events; 0: never */
	unsigned snapshot_keep;	 /* snapshots kept; 0: 2 */
	int zstd_level;		 /* 0: 3 */
	sc_warn_fn warn;	 /* NULL: warnings go to stderr */
	void *warn_ctx;
	sc_cache_options cache;
} sc_store_options;

/*
 * sc_store_open - open (or with opt->create, create) the store in `dir`.
 *
 * Clears stale LMDB readers, restores the newest snapshot that verifies
 * (others are skipped with a warning), replays the events after it.
 * `opt` may be NULL. Errors: SC_NOTFOUND (no store and create is false),
 * SC_EVERSION, SC_ECORRUPT (an event record does not decode), SC_ELMDB,
 * errno values.
 */
int sc_store_open(const char *dir, const sc_store_options *opt, sc_store **out,
		  sc_error *err);

/* sc_store_close - close the store and free its cache. Readers must be
 * closed first. NULL is a no-op. */
void sc_store_close(sc_store *store);

/* The store's cache; read the current state through sc_reader_*. Owned by
 * the store. */
sc_cache *sc_store_cache(sc_store *store);

/* ---- projectors ---------------------------------------------------------- */

/*
 * A projector is called for every appended event inside the append's LMDB
 * write transaction (and for every replayed event at open, with txn NULL).
 * Returning non-zero aborts the whole append. The cache is the first
 * projector; others may keep their own LMDB databases in the same
 * environment (sc_store_env) and write them through `txn`.
 */
typedef struct sc_projector {
	const char *name;
	int (*apply)(void *ctx, MDB_txn *txn, const sc_event *ev,
		     sc_error *err);
	void (*commit)(void *ctx);   /* after the commit; may be NULL */
	void (*rollback)(void *ctx); /* after an abort; may be NULL */
	void *ctx;
} sc_projector;

/* Register a projector (copied). Writer thread, between appends.
 * Errors: SC_EINVAL (no apply or name), ENOMEM. */
int sc_store_add_projector(sc_store *store, const sc_projector *p,
			   sc_error *err);

/* The LMDB environment, for projectors that keep their own databases. */
MDB_env *sc_store_env(sc_store *store);

/* ---- writing ------------------------------------------------------------- */

/*
 * sc_store_append - append `n` events as one transaction.
 *
 * Positions are assigned densely from last+1 (the caller's `position`
 * fields are ignored); events without time get the current time. On
 * success *first (may be NULL) is the first position. On any failure
 * nothing is written and the cache is unchanged. Errors: SC_EINVAL (a bad
 * event; the message names its index), SC_EMAPFULL (map_size_max reached),
 * SC_EPROJECTOR, SC_ELMDB, ENOMEM, EIO.
 */
int sc_store_append(sc_store *store, const sc_event *events, size_t n,
		    uint64_t *first, sc_error *err);

typedef struct sc_snapshot_info {
	uint64_t position;
	uint64_t entities;
	uint32_t chunks;
	uint64_t bytes_raw;	   /* encoded protobuf bytes */
	uint64_t bytes_compressed; /* stored bytes */
	double seconds;
} sc_snapshot_info;

/*
 * sc_store_snapshot - encode the newest promoted version and store it.
 *
 * Encoding runs outside the LMDB write lock; appends from other threads go
 * on meanwhile. Older snapshots beyond snapshot_keep are deleted. *info may
 * be NULL.
 */
int sc_store_snapshot(sc_store *store, sc_snapshot_info *info, sc_error *err);

/* ---- reading ------------------------------------------------------------- */

/* Last appended position (0: empty log). */
uint64_t sc_store_last_position(sc_store *store);

/* Return 0 to go on, non-zero to stop with that value. The event and its
 * strings are valid during the call only. */
typedef int (*sc_event_fn)(void *ctx, const sc_event *ev);

/* Events with position >= from, in order, at most `limit` (0: all). */
int sc_store_events(sc_store *store, uint64_t from, uint64_t limit,
		    sc_event_fn fn, void *ctx, sc_error *err);

/* Events of one entity with position >= from, in order. */
int sc_store_entity_events(sc_store *store, sc_str id, uint64_t from,
			   uint64_t limit, sc_event_fn fn, void *ctx,
			   sc_error *err);

/*
 * sc_store_entity_at - the state of `id` as of `position` (inclusive),
 * folded from that entity's events only. *out is a new entity the caller
 * frees with sc_entity_free(). SC_NOTFOUND if it did not exist then.
 */
int sc_store_entity_at(sc_store *store, sc_str id, uint64_t position,
		       sc_entity **out, sc_error *err);

/* Snapshots held, newest first. Returns how many were written to `out`
 * (at most `max`), or a negative error. */
int sc_store_snapshots(sc_store *store, sc_snapshot_info *out, size_t max,
		       sc_error *err);

typedef struct sc_store_stats {
	uint64_t last_position;
	size_t map_size;       /* current LMDB map size */
	size_t map_bytes_used; /* pages in use * page size */
	sc_cache_stats cache;
} sc_store_stats;

int sc_store_stats_get(sc_store *store, sc_store_stats *out, sc_error *err);

#ifdef __cplusplus
}
#endif

#endif
