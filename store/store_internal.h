/*
 * What the files of store/ share. Not installed.
 *
 * The files, each one idea, and what each calls (no cycle):
 *
 *   env.c           the LMDB environment: error codes, warnings, read
 *                   transactions, map growth, and sc_store_write, the one
 *                   way any file writes (every write transaction is one)
 *   entity_index.c  the entity_index database: its keys, index_through,
 *                   the catch-up of the lagging tail      -> env
 *   tag_index.c     tag_index and partition_index: their rows, written in
 *                   bulk by the append that finds them index_lag behind,
 *                   and their build at open       -> env, entity_index
 *   query.c         queries of the log and the wake-up of live ones
 *                                                 -> env, entity_index,
 *                                                    tag_index
 *   projector.c     projectors: registration, offsets in meta, calls
 *                                                          -> env
 *   projection.c    projection runners: their threads, offsets in meta
 *                   ("projection/NAME"), their databases  -> env, query
 *   snapshots.c     snapshots: write, list, prune, restore -> env
 *   checkpoints.c   per-partition checkpoints, the partition catalog,
 *                   the load of one partition, the checkpoint thread
 *                                        -> env, entity_index, tag_index
 *   residency.c     the memory budget: cold partitions, loads on read,
 *                   eviction, appends to cold partitions, figures
 *                                     -> env, entity_index, checkpoints
 *                   (the one pair that calls both ways: checkpoints.c
 *                   loads a cold partition through sc_residency_ensure
 *                   before it checkpoints it)
 *   log.c           the event log: one append transaction, replay,
 *                   reads          -> env, entity_index, tag_index,
 *                                     query, projector, snapshots
 *   group.c         sc_store_append and group commit: concurrent appends
 *                   share one write transaction  -> log, snapshots
 *   sync.c          the background flush of nosync, and the session
 *                   markers that let open refuse a store an OS crash
 *                   cut mid-session                        -> env
 *   open.c          open and close: the directory, meta, the databases
 *                                                          -> all above
 *
 * Locks, in the order they are taken:
 *
 *   group_mu  the queue of waiting appends (group.c); never held across a
 *             transaction, and released before write_mu is taken.
 *   snap_mu   one sc_store_snapshot at a time (held while encoding).
 *   ckpt_mu   one checkpoint write or drop at a time (held while
 *             encoding; taken before write_mu, never under it).
 *   write_mu  one writer: held for a whole append, and by a snapshot only
 *             for its short write transaction. Map growth happens under it.
 *             A partition's load and every eviction (residency.c) run
 *             under it too, as the cache's writer.
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
#include <string.h>

#include "statecache/store.h"
#include "store/event_codec.h"

/* Value of the meta key "format_version" written by this build. Format 2
 * added the lagging index (index_through); format 3 keyed the index rows
 * of long ids by a cut and a hash; format 4 files every entity_index row
 * under its epoch of the log first (entity_index.c), so an append writes
 * into the newest epoch only, and adds tag_index and partition_index;
 * format 5 makes an event's partition part of its entity's identity: the
 * entity_index rows of named partitions are keyed by the partition's hash
 * too, and snapshots are of format 2. At open, an older store's
 * entity_index rows are dropped when they are keyed by the id first
 * (formats 1..3) or when its log names a partition, and written again by
 * the appends that follow (at most SC_INDEX_CATCHUP_MAX events each); the
 * snapshots of a store whose log names a partition are dropped (open
 * replays the log); the tag and partition indexes of a store before
 * format 4 are built from its log (tag_index.c); reads scan what is not
 * indexed yet. Format 6 adds the databases checkpoints (per-partition
 * checkpoints) and partition_catalog (every partition, its last position,
 * event count and tail); an older store gets them in open's transaction,
 * the catalog built from its log (checkpoints.c). */
#define SC_STORE_FORMAT_VERSION 6u

/* index_lag when the options give 0, and its largest value: an index
 * catch-up of that many rows of the longest keys stays far below the dirty
 * pages LMDB allows one transaction. */
#define SC_STORE_INDEX_LAG_DEFAULT 4096u
#define SC_STORE_INDEX_LAG_MAX	   65536u
/* Events of the log's unindexed backlog one append indexes at most. */
#define SC_INDEX_CATCHUP_MAX 65536u

/* entity_index keys (entity_index.c): ids up to WHOLE_MAX bytes are kept
 * whole, longer ones cut to CUT bytes ++ a 16-byte hash; with the 4-byte
 * epoch and the 8-byte position a key is at most SC_INDEX_KEY_MAX bytes,
 * LMDB's limit. */
#define SC_INDEX_ID_WHOLE_MAX 499u
#define SC_INDEX_ID_CUT	      483u
#define SC_INDEX_KEY_MAX      511u
/* The same in a named partition, behind the 16-byte hash of its name. */
#define SC_INDEX_PART_ID_WHOLE_MAX 483u
#define SC_INDEX_PART_ID_CUT	   467u

struct sc_store {
	MDB_env *env;
	MDB_dbi dbi_events, dbi_index, dbi_snapshots, dbi_meta;
	MDB_dbi dbi_tags, dbi_partitions;     /* tag_index, partition_index */
	MDB_dbi dbi_checkpoints, dbi_catalog; /* checkpoints,
						 partition_catalog */
	sc_cache *cache;
	sc_store_options opt;

	pthread_mutex_t snap_mu;
	pthread_mutex_t ckpt_mu;
	pthread_mutex_t write_mu;
	pthread_rwlock_t map_lock;

	/* Appends waiting to be written, oldest first; the first is the
	 * leader, which writes a group of them (group.c). Under group_mu. */
	pthread_mutex_t group_mu;
	struct sc_append_req *group_head, *group_tail;
	uint64_t groups_shared; /* transactions that held >1 batch */
	/* Appenders seen at the last handoff (the group written and those
	 * queued behind it) and how long its transaction took: what the
	 * next leader waits for, and for how long at most (group.c). */
	size_t group_seen;
	int64_t group_write_ns;
	int64_t group_handoff_ns;    /* when (CLOCK_MONOTONIC) */
	int64_t group_linger_max_ns; /* the cap of a wait: open sets
					SC_GROUP_LINGER_MAX_NS, tests more */
	size_t group_want;	 /* the group a lingering leader waits for */
	bool group_lingering;	 /* a leader waits for its group */
	uint64_t group_lingered; /* leaders that waited */

	_Atomic uint64_t last_position;
	/* entity_index holds a row for every event up to this position
	 * (meta key "index_through", committed with those rows). Written
	 * under write_mu; readers take it from meta in their own read
	 * transaction, consistent with the log they see. */
	uint64_t index_through;
	uint64_t since_snapshot; /* events appended since the last snapshot */
	bool stale; /* a committed batch could not be promoted: reopen */

	/* Live queries wait on query_cv (under query_mu) while they have
	 * read the whole log; every append signals it after its promote
	 * when query_waiters says someone waits (query.c). */
	pthread_mutex_t query_mu;
	pthread_cond_t query_cv;
	_Atomic int query_waiters;

	/* Writer-only scratch (under write_mu). */
	sc_projector *projectors;
	size_t nprojectors;
	sc_event *batch;
	size_t cap_batch;

	/* The background flush of sync_interval_ms (sync.c); NULL: none. */
	struct sc_store_syncer *syncer;
	/* nosync session markers (sync.c); NULL: none. */
	struct sc_store_session *session;
	/* A read-only store's log follower (follow.c); NULL: not read-only. */
	struct sc_store_follower *follower;

	/* The checkpoint thread (checkpoints.c); NULL: none. */
	struct sc_store_checkpointer *checkpointer;
	/* A partition this append touched is due for a checkpoint (set in
	 * the append's transaction, under write_mu). */
	bool ckpt_due;
	/* Events open replayed after the checkpoints or the snapshot it
	 * restored, and checkpoints written since open. */
	uint64_t open_replayed;
	_Atomic uint64_t checkpoints_written;
	/* Residency and the memory budget (residency.c); NULL in read-only
	 * stores. */
	struct sc_store_residency *res;
};

/* Big-endian 64-bit keys: LMDB's bytewise order is numeric order. */
static inline void sc_be64_put(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
	memcpy(p, &v, sizeof v);
#else
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
#endif
}

static inline uint64_t sc_be64_get(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* One load and a byte swap: every step of LMDB's searches of the
	 * events database compares two keys (events_key_cmp). */
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return __builtin_bswap64(v);
#else
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
#endif
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

/* ---- env.c: the environment and the one write path ---------------------- */

/* Turn an LMDB return code into an sc code with a message naming `what`. */
int sc_store_lmdb_error(sc_error *err, int rc, const char *what);

/* Send a warning to opt.warn (or stderr). */
void sc_store_warn(sc_store *store, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* CLOCK_REALTIME in unix nanoseconds. */
int64_t sc_store_now_ns(void);

/* Begin a read transaction; holds map_lock shared until sc_store_read_end. */
int sc_store_read_begin(sc_store *store, MDB_txn **txn, sc_error *err);
void sc_store_read_end(sc_store *store, MDB_txn *txn);

/* A read transaction and a cursor on `dbi` in it; on failure neither is
 * open and err names `what`. End with mdb_cursor_close and
 * sc_store_read_end. */
int sc_store_read_cursor(sc_store *store, MDB_dbi dbi, const char *what,
			 MDB_txn **txn, MDB_cursor **cur, sc_error *err);

/* Called with each row of a database in key order; non-zero stops the
 * walk and is returned (set err). */
typedef int (*sc_row_fn)(void *ctx, const MDB_val *k, const MDB_val *v,
			 sc_error *err);

/* Every row of `dbi` in `txn`, in key order, to fn. Returns 0, fn's
 * code, or an LMDB error translated with `what` ("reading X"). */
int sc_store_rows(MDB_txn *txn, MDB_dbi dbi, const char *what, sc_row_fn fn,
		  void *ctx, sc_error *err);

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

/* The bounds of the values read from the map since their pages were last
 * released: sc_release_span_add notes one and releases the span's pages
 * every `every` values; sc_release_span_flush releases what is left.
 * Within the read transaction the values were read in (the map cannot
 * move meanwhile). Zero-initialise. */
typedef struct sc_release_span {
	const uint8_t *lo, *hi;
	uint64_t seen;
} sc_release_span;
void sc_release_span_add(sc_release_span *r, const void *bytes, size_t len,
			 unsigned every);
void sc_release_span_flush(sc_release_span *r);
/* Release every page of the store's data file that this process has
 * mapped (sc_store_release_pages over the whole mapping, found in
 * /proc/self/maps): the pages stay in the page cache and a later read
 * maps them again. Safe while other threads read; costs a TLB flush.
 * Takes map_lock shared: call it with no transaction open. */
void sc_store_release_map(sc_store *store);

/*
 * The body of a write transaction. Returns 0 to commit; MDB_MAP_FULL
 * (untranslated) to have the map grown and the body run again in a new
 * transaction; any other value (an sc code or errno, with err set) to
 * abort and fail with that value.
 */
typedef int (*sc_store_txn_fn)(sc_store *store, MDB_txn *txn, void *ctx,
			       sc_error *err);

/* Called after every failed attempt (before a retry, or before the
 * failure is returned), to undo what the body did outside LMDB. */
typedef void (*sc_store_undo_fn)(sc_store *store, void *ctx);

/*
 * sc_store_write - run `body` in one LMDB write transaction and commit it;
 * every write of the store goes through here.
 *
 * Begins the transaction (adopting the map size after another process
 * grew it, MDB_MAP_RESIZED), runs body, commits. When the body or the
 * commit hit MDB_MAP_FULL, aborts, calls undo, doubles the map (up to
 * opt.map_size_max) and runs body again in a new transaction. Holds the
 * TSan bracket (map_lock exclusive, TSan builds only) for the life of each
 * transaction. The caller holds write_mu (open, which runs before any
 * other thread can see the store, need not). `what` names the write in
 * error messages ("appending 3 events"). undo may be NULL.
 * Errors: the body's, SC_EMAPFULL (map_size_max reached), and the LMDB
 * errors of begin and commit translated by sc_store_lmdb_error.
 */
int sc_store_write(sc_store *store, const char *what, sc_store_txn_fn body,
		   sc_store_undo_fn undo, void *ctx, sc_error *err);

/* ---- entity_index.c ------------------------------------------------------ */

/* Read meta "index_through" in txn into *through; a store without the key
 * (format 1, which indexed every event as it was appended) is complete up
 * to `last`. Readers that do not know the end pass UINT64_MAX. Errors:
 * SC_ECORRUPT, SC_ELMDB. */
int sc_index_through_get(sc_store *store, MDB_txn *txn, uint64_t last,
			 uint64_t *through, sc_error *err);

/* Write meta "index_through". Returns an LMDB code. */
int sc_index_through_put(sc_store *store, MDB_txn *txn, uint64_t through);

/* At open: learn how far entity_index reaches (store->index_through), and
 * move an older store to this build's format (a format 1 reader would not
 * know that the index may lag, a format 2 reader could not find the rows
 * of long ids). A new store gets index_through = 0 here,
 * before its first append. store->last_position must be set. */
int sc_index_open(sc_store *store, MDB_txn *txn, uint32_t version,
		  sc_error *err);

/* The longest a group commit's leader waits for its group (group.c). */
#define SC_GROUP_LINGER_MAX_NS 2000000

/* Scratch for one entity_index key. */
typedef struct sc_index_key {
	uint8_t b[SC_INDEX_KEY_MAX];
} sc_index_key;

/* Write the key id of `id` (entity_index.c has the layout) to k, room
 * for SC_INDEX_ID_WHOLE_MAX bytes; returns its length. */
size_t sc_index_key_id(uint8_t *k, sc_str id);

/* The keys of `value`'s rows at positions from..to (its key id ++ each
 * position, big-endian) into lo and hi; returns the key id's length (the
 * keys are 8 bytes longer). */
size_t sc_index_range(sc_index_key *lo, sc_index_key *hi, sc_str value,
		      uint64_t from, uint64_t to);

/* Write the key id of the entity (partition, id) to k (room for
 * SC_INDEX_KEY_MAX - 8 bytes): sc_index_key_id for the default partition;
 * returns its length. */
size_t sc_index_key_of(uint8_t *k, sc_str partition, sc_str id);

/* Check that entity_index holds exactly one row for every position up to
 * `through`, each keyed by the key id of its event's (partition, id). Errors:
 * SC_ECORRUPT naming the first fault, SC_ELMDB. */
int sc_index_verify(sc_store *store, MDB_txn *txn, uint64_t through,
		    sc_error *err);

/*
 * sc_index_catch_up - write the entity_index rows of the log's events
 * after store->index_through and before `first` (read back in txn) and of
 * the n events evs at first.. (this append's, written to the log in txn
 * already), sorted. A backlog of SC_INDEX_CATCHUP_MAX events or more (a
 * store being upgraded) is indexed only that far, without evs. *through is
 * then the last position indexed, for meta index_through. Returns 0,
 * MDB_MAP_FULL (untranslated: the map grows and the append runs again),
 * or an sc code with err set (SC_ECORRUPT: a record that does not decode
 * or a gap; ENOMEM; SC_ELMDB...).
 */
int sc_index_catch_up(sc_store *store, MDB_txn *txn, uint64_t first,
		      const sc_event *evs, size_t n, uint64_t *through,
		      sc_error *err);

/* Called with each position entity_index lists for an id; non-zero stops
 * the walk with that value. */
typedef int (*sc_index_pos_fn)(void *ctx, uint64_t pos);

/* Call fn, in order, with the positions in [from, to] that entity_index
 * lists under the key of (partition, id) in txn. They may include events
 * of other entities (see the key layout in entity_index.c): fn checks.
 * Errors: fn's value, SC_ELMDB. */
int sc_index_walk(sc_store *store, MDB_txn *txn, sc_str partition, sc_str id,
		  uint64_t from, uint64_t to, sc_index_pos_fn fn, void *ctx,
		  sc_error *err);

/* ---- tag_index.c --------------------------------------------------------- */

/* Inside the append's transaction, after the batch `evs` (n events from
 * position `first`) is written: when the batch's last position is
 * index_lag or more past meta "query_index_through", write the tag_index
 * and partition_index rows of the events after it (read back from the
 * log) and of the batch, and move it to the batch's last position.
 * Returns 0, MDB_MAP_FULL (untranslated), or an sc code with err set. */
int sc_tag_index_append(sc_store *store, MDB_txn *txn, const sc_event *evs,
			size_t n, uint64_t first, sc_error *err);

/* At open, in open's transaction: open tag_index and partition_index, or
 * create them (with meta "query_index_through" 0) for a new store
 * (`fresh`) or one of a format before 4. A store of format 4 or later
 * without them is damaged: refused. Errors: SC_ECORRUPT, MDB_MAP_FULL
 * (untranslated), SC_ELMDB. */
int sc_tag_index_open(sc_store *store, MDB_txn *txn, const char *dir,
		      bool fresh, uint32_t version, sc_error *err);

/* After open's transaction: when meta "query_index_through" is index_lag
 * or more behind the log (the whole log of an upgraded store), index the
 * events after it, in transactions of a bounded size, until it is not. */
int sc_tag_index_build(sc_store *store, sc_error *err);

/* Read meta "query_index_through" in txn: the indexes hold the rows of
 * every event up to it (at most `last`; `last` when absent). Errors:
 * SC_ECORRUPT, SC_ELMDB. */
int sc_tag_index_through_get(sc_store *store, MDB_txn *txn, uint64_t last,
			     uint64_t *through, sc_error *err);

/* The positions in [from, to] that `dbi` (tag_index or partition_index;
 * `name` names it in errors) lists under the key id of `value`, in order:
 * at most `max` of them into pos[0..*n), read on one cursor in txn. *n <
 * max: there are no more up to `to`; else the next call goes on from
 * pos[max - 1] + 1. Rows of other values with the same key id are
 * included: the caller checks each event. Errors: SC_ELMDB. */
int sc_tag_index_positions(MDB_txn *txn, MDB_dbi dbi, const char *name,
			   sc_str value, uint64_t from, uint64_t to,
			   uint64_t *pos, size_t max, size_t *n, sc_error *err);

/* Check that tag_index and partition_index hold exactly the rows of the
 * events up to meta query_index_through (`last` when absent): every row
 * names an event with a value of its key id, every value of every event
 * has its row. Errors: SC_ECORRUPT naming the first fault, SC_ELMDB. */
int sc_tag_index_verify(sc_store *store, MDB_txn *txn, uint64_t last,
			sc_error *err);

/* ---- query.c ------------------------------------------------------------- */

/* Wake the live queries that wait for a commit (after each append's
 * promote, last_position already stored). Cheap when none waits. */
void sc_query_notify(sc_store *store);

/* ---- projector.c --------------------------------------------------------- */

/* Call every projector's apply for the event `i` of a batch at `pos`
 * inside txn. Errors: SC_EPROJECTOR naming the projector. */
int sc_projectors_apply(sc_store *store, MDB_txn *txn, const sc_event *ev,
			size_t i, uint64_t pos, sc_error *err);

/* Store every projector's offset (`last`) in txn. Returns an LMDB code. */
int sc_projectors_put_offsets(sc_store *store, MDB_txn *txn, uint64_t last);

/* Call every projector's commit (after a commit) or rollback (after an
 * abort) hook. */
void sc_projectors_commit(sc_store *store);
void sc_projectors_rollback(sc_store *store);

/* Free the registered projectors (at close). */
void sc_projectors_free(sc_store *store);

/* ---- snapshots.c --------------------------------------------------------- */

/* Restore the newest snapshot that verifies into the cache; *position is
 * its position (0: none restored, the cache is empty). Open-time. */
int sc_store_restore(sc_store *store, uint64_t *position, sc_error *err);

/* ---- log.c --------------------------------------------------------------- */

/* Meta "last_position" (8 bytes BE): the last position committed, written
 * by every append in its transaction, cross-checked with the log at open.
 * get: SC_NOTFOUND when absent (a store made before the key), SC_ECORRUPT,
 * SC_ELMDB. put: returns an LMDB code. */
int sc_store_meta_last_get(sc_store *store, MDB_txn *txn, uint64_t *last,
			   sc_error *err);
int sc_store_meta_last_put(sc_store *store, MDB_txn *txn, uint64_t last);

/*
 * sc_log_stamp - copy `n` validated events of one caller into the writer's
 * scratch store->batch at `off` (growing it), with positions from `first`
 * and the current time on those with time 0. Caller holds write_mu.
 * Errors: ENOMEM (the scratch is unchanged).
 */
int sc_log_stamp(sc_store *store, size_t off, const sc_event *events, size_t n,
		 uint64_t first, sc_error *err);

/*
 * sc_log_append_commit - append the stamped events store->batch[0..n) in
 * one write transaction (positions from last_position + 1, as stamped):
 * write them, index them when the tail reaches index_lag, apply them to
 * the cache and every projector, commit, promote the cache and call the
 * projectors' commit hooks. They are the batches of `nparts` callers, part
 * k ending before ends[k] (ends[nparts - 1] == n); messages name an event
 * by its index in its part. On failure nothing is written, the cache is
 * as before and the projectors were rolled back; on SC_EPROJECTOR
 * *vetoed is the part holding the refused event (else nparts). A failure
 * after the commit (promote; see promote_committed) sets store->stale.
 * Caller holds write_mu and checked store->stale.
 */
int sc_log_append_commit(sc_store *store, size_t n, const size_t *ends,
			 size_t nparts, size_t *vetoed, sc_error *err);

/* ---- group.c ------------------------------------------------------------- */

/*
 * sc_group_append - append a validated batch of n > 0 events, in a write
 * transaction shared with the batches other threads append at the same
 * time (group.c says how). Returns as sc_store_append.
 */
int sc_group_append(sc_store *store, const sc_event *events, size_t n,
		    uint64_t *first, sc_error *err);

/* Appends in the queue, its leader included (for tests). */
size_t sc_group_queued(sc_store *store);

/* Replay the log after `after` into the cache (open-time, single thread).
 * Promotes in batches. On failure the pending version is discarded. */
int sc_store_replay(sc_store *store, uint64_t after, sc_error *err);

/* ---- sync.c: the background flush and nosync sessions ------------------ */

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

/* ---- checkpoints.c ------------------------------------------------------- */

/* A partition's key id in checkpoints and partition_catalog: byte 0 then
 * 16 zero bytes for the default partition, byte 1 then the XXH3-128 hash
 * of the name (canonical) for a named one. */
#define SC_PART_KEY_LEN 17u
size_t sc_part_key(uint8_t *k, sc_str partition);

/* In open's transaction, after find_last_position: open checkpoints and
 * partition_catalog, or create them for a new store or one of a format
 * before 6, whose catalog is then built from its log. A store of format 6
 * without them is damaged: refused. Errors: SC_ECORRUPT, ENOMEM,
 * MDB_MAP_FULL (untranslated), SC_ELMDB. */
int sc_checkpoints_open(sc_store *store, MDB_txn *txn, const char *dir,
			bool fresh, uint32_t version, sc_error *err);

/* In the append's transaction, after the batch is written: add the batch
 * (n events from `first`) to the catalog rows of the partitions it
 * touches, one put each; sets store->ckpt_due when one falls due.
 * Returns 0, MDB_MAP_FULL (untranslated) or an sc code with err set. */
int sc_catalog_append(sc_store *store, MDB_txn *txn, const sc_event *evs,
		      size_t n, uint64_t first, sc_error *err);

/* Check partition_catalog against the log read in txn: one row per
 * partition with an event, its event count and last position, a tail no
 * larger than its count. Errors: SC_ECORRUPT naming the first fault,
 * ENOMEM, SC_ELMDB. */
int sc_catalog_verify(sc_store *store, MDB_txn *txn, sc_error *err);

/*
 * sc_store_partition_load - restore the one partition `partition` (empty:
 * the default one) as of the store's last committed position into the
 * cache's pending version: its newest checkpoint that verifies (a damaged
 * one is skipped with a warning naming the partition and the position,
 * then older ones, then a full replay of the partition), then its events
 * after that checkpoint (a named partition: partition_index up to meta
 * query_index_through and a scan of the log after it; the default
 * partition: a scan of the log after its checkpoint up to its last event,
 * skipping the events of named partitions).
 *
 * The cache must have nothing pending, and the partition must hold no
 * entity in the newest version (never loaded, or dropped from it): the
 * states are put in as a restore does. On success the partition is in the
 * pending version, not promoted (the caller promotes); *replayed (may be
 * NULL) is the count of events applied after the checkpoint and *seconds
 * (may be NULL) the time the load took. On failure the pending version
 * is discarded. Writer thread, under write_mu once the store is open
 * (open calls it before any other thread sees the store).
 * Errors: SC_EINVAL (something pending), SC_ECORRUPT (the log or an index
 * is damaged), ENOMEM, SC_ETOOBIG, SC_ELMDB.
 */
int sc_store_partition_load(sc_store *store, sc_str partition,
			    uint64_t *replayed, double *seconds, sc_error *err);

/*
 * sc_partition_walk - call fn with every event of `partition` (empty: the
 * default one) at a position in (from, to], in position order, decoded
 * and checked: a named partition's through partition_index up to meta
 * query_index_through and a scan of the log after it, the default
 * partition's by a scan of the log that passes over other partitions'
 * records after a peek at their key. The map pages read are released as
 * the walk goes. txn: a read transaction. Errors: SC_ECORRUPT (a record
 * does not decode, the index names a position the log lacks), SC_ELMDB,
 * ENOMEM, or fn's value (non-zero stops the walk).
 */
typedef int (*sc_part_event_fn)(void *ctx, const sc_event *ev);
int sc_partition_walk(sc_store *store, MDB_txn *txn, sc_str partition,
		      uint64_t from, uint64_t to, sc_part_event_fn fn,
		      void *ctx, sc_error *err);

/* At open, after sc_cache_create: when the store holds any checkpoint,
 * load every partition of the catalog with sc_store_partition_load,
 * promote each, and give the version the log's last position (*used
 * true, *replayed the events applied after checkpoints); without
 * checkpoints do nothing (*used false: open restores the newest snapshot
 * as before). */
int sc_checkpoints_restore(sc_store *store, bool *used, uint64_t *replayed,
			   sc_error *err);

/* SC_EINVAL, naming function `fn`, unless `store` is not NULL and
 * `partition` a valid partition (at most SC_EVENT_FIELD_MAX bytes, a
 * pointer when not empty); else 0. */
int sc_store_partition_arg(sc_store *store, sc_str partition, const char *fn,
			   sc_error *err);

/* After open loaded partitions from their checkpoints (here or under a
 * memory budget, residency.c): promote a version at the log's last
 * position, whatever positions its entities hold. Errors: the cache's
 * (nothing pending after). */
int sc_checkpoints_restored(sc_store *store, sc_error *err);

/* Encode and store a checkpoint of `partition` from a view pinned under
 * write_mu; keeps checkpoint_keep of them. Takes ckpt_mu and write_mu:
 * never call it holding either. */
int sc_checkpoint_take(sc_store *store, sc_str partition,
		       sc_checkpoint_info *info, sc_error *err);

/* The checkpoint thread: started by open for a writing store unless
 * checkpoint_tail is SC_CHECKPOINT_NEVER, kicked after an append that
 * made a partition due, stopped and joined by close. */
int sc_checkpointer_start(sc_store *store, sc_error *err);
void sc_checkpointer_kick(sc_store *store);
void sc_checkpointer_stop(sc_store *store);

/* ---- residency.c: the memory budget -------------------------------------- */

/* At open, after sc_cache_create (a writing store): set up residency and
 * the pins of opt.pinned; with a memory budget, mark every named
 * partition of the catalog cold but the pinned ones, load the default
 * partition and the pinned ones, give the version the log's last position
 * and set *used (open then restores nothing else). Errors: SC_EINVAL (a
 * bad pinned name), those of sc_store_partition_load. */
int sc_residency_open(sc_store *store, bool *used, sc_error *err);
/* At close: free what residency holds (its reader first). */
void sc_residency_close(sc_store *store);

/* Under write_mu: make `partition` resident (load it when cold, promote),
 * mark it used, and evict others to stay within the budget (a failed
 * eviction is a warning). Errors: SC_ESTATE (stale), those of
 * sc_store_partition_load. */
int sc_residency_ensure(sc_store *store, sc_str partition, sc_error *err);

/* Under write_mu, for a checkpoint: load `partition` when it is cold
 * (*loaded true) without marking it used and without evicting others;
 * sc_residency_evict_again makes it cold again once the caller pinned the
 * view it encodes, so a checkpoint leaves the resident set as it found
 * it. Errors: those of sc_residency_ensure. The eviction's failure is a
 * warning (the partition stays resident). */
int sc_residency_load_quiet(sc_store *store, sc_str partition, bool *loaded,
			    sc_error *err);
void sc_residency_evict_again(sc_store *store, sc_str partition);

/* Under write_mu, nothing pending: evict the least recently used unpinned
 * partitions but `keep` (empty: none) until the resident bytes are within
 * the budget, in one promote. Errors: ENOMEM, the cache's. */
int sc_residency_evict(sc_store *store, sc_str keep, sc_error *err);

/* Under write_mu, before the append's transaction of the stamped events
 * evs[0..n) (parts ending before ends[k], for messages): find the events
 * of cold partitions and check the state-size limit for them. Errors:
 * SC_ETOOBIG naming the event, ENOMEM, those of sc_store_entity_at_in. */
int sc_residency_append_check(sc_store *store, const sc_event *evs, size_t n,
			      const size_t *ends, size_t nparts, sc_error *err);

/* Inside the append's transaction: when the batch checked last has events
 * of cold partitions, set *evs and *n to the others (the ones the cache
 * applies) and *idx to their indexes in the batch, and return true. */
bool sc_residency_filter(sc_store *store, const sc_event **evs, size_t *n,
			 const size_t **idx);

/* After the append's promote: grow the bounds of the cold partitions it
 * wrote to, then evict to the budget. */
void sc_residency_append_done(sc_store *store, const sc_event *evs, size_t n);

/* The residency figures of sc_store_stats_get. Takes write_mu. */
void sc_residency_stats(sc_store *store, sc_store_stats *out);

/* ---- follow.c: read-only stores ----------------------------------------- */

/* The error of every write on a read-only store (`what`: "appending"). */
int sc_store_read_only_error(sc_error *err, const char *what);
/* After a read-only open's restore (of the snapshot at `snap_pos`, 0:
 * none): set up the follower, replay the log after snap_pos up to the
 * last position committed (as sc_store_refresh) and start the follow
 * thread unless opt.follow_manual. Errors: those of sc_store_refresh,
 * ENOMEM, EAGAIN. */
int sc_store_follow_start(sc_store *store, uint64_t snap_pos, sc_error *err);
/* The lock a read-only store's refresh holds while it writes the cache
 * and promotes (held, no version is promoted). */
pthread_mutex_t *sc_store_follow_mutex(sc_store *store);
/* Stop and join the follow thread, free the follower; no-op without. */
void sc_store_follow_stop(sc_store *store);

#endif
