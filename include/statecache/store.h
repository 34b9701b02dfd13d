/*
 * statecache: the durable store.
 *
 * A store is a directory holding one LMDB environment with these named
 * databases (inspect them with `mdb_stat -a DIR`, `mdb_dump -s NAME DIR`):
 *
 *   events        key: position, 8 bytes big-endian; value: protobuf Event
 *   entity_index  key: epoch (4 bytes BE: position >> 16) ++ key id ++
 *                 position (8 bytes BE); value: empty; rows for every
 *                 position up to meta "index_through" (the key id is the
 *                 entity id up to 499 bytes, else its first 483 bytes ++
 *                 its XXH3-128 hash; store/README.md)
 *   tag_index     key: key id of a tag ++ position; value: empty; a row
 *                 for every non-empty tag of every event up to meta
 *                 "query_index_through" (statecache/query.h reads it)
 *   partition_index  key: key id of the partition ++ position; value:
 *                 empty; a row for every event with a partition, up to
 *                 "query_index_through"
 *   snapshots     key: position (8 bytes BE) ++ part (4 bytes BE); part 0
 *                 is the header, part i chunk i-1 (see snapshot/FORMAT.md)
 *   meta          key: ASCII name; value: "format_version" (4 bytes BE),
 *                 "created_at" (8 bytes BE, unix ns), "created_by" (text),
 *                 "hash_seed" (8 bytes BE: the seed of the cache's hash
 *                 map, made at the first open; options.cache.seed
 *                 overrides it), "projector/NAME" (8 bytes BE: the
 *                 projector's offset), "last_position" (8 bytes BE: the
 *                 last position committed), "index_through" (8 bytes BE:
 *                 entity_index is complete up to this position; see
 *                 sc_store_options.index_lag), "query_index_through" (8
 *                 bytes BE: tag_index and partition_index are complete up
 *                 to this position; they lag as entity_index does),
 *                 "projection/NAME" (a projection's offset, kind and
 *                 state: statecache/projection.h)
 *   projection/NAME/DB  the databases of exactly-once projections
 *
 * store/README.md is the operator's guide (inspection, map size, backups).
 *
 * The event log is the source of truth. The cache (sc_store_cache) is its
 * projection: sc_store_append writes a batch in one LMDB write transaction,
 * calls every projector inside it, commits, then promotes the cache. Open
 * restores the newest snapshot that verifies and replays the log after it.
 *
 * Thread safety: sc_store_append and sc_store_snapshot may be called from
 * any thread. Appends from several threads at once share write
 * transactions (group commit, see sc_store_append); one transaction is
 * written at a time. A snapshot encodes without blocking appends and takes
 * the writer lock only to store its records. Read functions (sc_store_events,
 * _entity_events, _entity_at, _snapshots, _stats_get, _last_position, _verify)
 * may be called from any thread at any time; their callbacks must not call
 * sc_store_append or sc_store_snapshot (a map growth would wait for the
 * read to end).
 * sc_store_close must not race with any other call. Cache readers follow
 * cache.h.
 */
#ifndef STATECACHE_STORE_H
#define STATECACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "statecache/api.h"
#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"
#include "statecache/watch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_store sc_store;

/*
 * Durability modes: what an acknowledged append (sc_store_append returned
 * 0) survives. Each promise is what the power-loss test (tests/powerloss,
 * `make powerloss`) measures: crash states built from a recorded trace of
 * the store's writes and syncs, where every write not yet synced is kept,
 * dropped or torn at a 512- or 4096-byte boundary, with crash points in
 * appends, snapshots, map growth, reopening and the store's creation. In
 * every mode a process crash (kill -9, abort) loses nothing acknowledged:
 * a committed append is in the OS page cache.
 *
 * Creating a store is atomic in every mode (see `create` below): a crash
 * of the machine during it leaves no store or a complete empty one.
 *
 * All modes open the LMDB environment with the same flags apart from the
 * sync ones (none uses MDB_WRITEMAP, which LMDB forbids mixing with plain
 * opens of one environment), so processes with different modes, such as
 * a writer in nosync and the CLI's readers, may share a store.
 */
typedef enum sc_durability {
	/* Every commit is flushed twice (the data pages, then the meta page
	 * through a synchronous write) before append returns: an OS crash or
	 * power loss loses no acknowledged append and never corrupts. */
	SC_DURABILITY_FULL = 0,
	/* Commits are not flushed (MDB_NOSYNC); close flushes. A process
	 * crash loses nothing. An OS crash or power loss while the store is
	 * open in nosync (from open to close) can damage it or lose any
	 * number of recent appends, so the session keeps a marker file in the
	 * store's directory (nosync-session.PID) that close removes after its
	 * flush: the next open after such a crash refuses the store with
	 * SC_ECORRUPT, naming the marker, and never reads the possibly
	 * damaged file (LMDB can crash on one). Restore a backup, or delete
	 * the marker to open it anyway at that risk. sync_interval_ms bounds
	 * the age of unflushed appends. */
	SC_DURABILITY_NOSYNC = 1,
	/* One flush per commit (MDB_NOMETASYNC): the data pages are flushed
	 * before the meta page is written, and the meta page is flushed by
	 * the next commit (or close). An OS crash or power loss may undo the
	 * last acknowledged append, never more, and never corrupts: LMDB's
	 * atomicity and consistency hold, durability lags one commit. */
	SC_DURABILITY_CONSISTENT = 2,
} sc_durability;

/* Called for non-fatal problems (a snapshot skipped at open). */
typedef void (*sc_warn_fn)(void *ctx, const char *message);

typedef struct sc_store_options {
	sc_durability durability;
	/* Create the directory/store if missing. Creation is atomic: a crash
	 * leaves no store or a complete empty one (store/README.md). */
	bool create;
	size_t map_size; /* initial map size; 0: 64 MiB */
	/* Growth limit; 0: 64 GiB. A write that fills the map doubles it up
	 * to this limit and retries; at the limit it fails with SC_EMAPFULL
	 * and nothing changes. */
	size_t map_size_max;
	/* Take a snapshot once this many events were appended since the last
	 * one; 0: never. The snapshot runs synchronously at the end of the
	 * append that crosses the threshold (after its commit); if it fails
	 * the append still succeeds and opt.warn gets the reason. */
	uint64_t snapshot_every;
	unsigned snapshot_keep; /* snapshots kept; 0: 2 */
	int zstd_level;		/* 0: 3 */
	sc_warn_fn warn;	/* NULL: warnings go to stderr */
	void *warn_ctx;
	sc_cache_options cache;
	/* entity_index rows (and, the same way, tag_index and
	 * partition_index rows) are written in bulk, by the append that
	 * brings the unindexed tail of the log to this many events; until
	 * then the entity reads (and tag and partition queries) scan that
	 * tail. A few random index pages per event are
	 * most of what a durable append writes, so this trades at most
	 * index_lag events scanned per entity read for several times the
	 * append rate. 1: every append indexes its own events. 0: 4096.
	 * Larger than 65536 is taken as 65536 (a catch-up stays well within
	 * what one LMDB transaction may change). */
	uint64_t index_lag;
	/* Permission bits of the store's files when it is created (data.mdb,
	 * lock.mdb), set exactly whatever the umask; the directory, when
	 * open creates it, gets the same plus search permission wherever
	 * read permission is given. 0: 0600 (directory 0700), private to the
	 * owner. 0660 lets a group of processes share the store (0770; LMDB
	 * readers need write access to lock.mdb). Opening an
	 * existing store whose data.mdb other users can read warns (through
	 * warn) unless these bits include read for others. */
	unsigned file_mode;
	/* Durability nosync only: a background thread flushes the store
	 * (mdb_env_sync) every this many milliseconds, so no append stays
	 * unflushed much longer (an OS crash during the session still makes
	 * open refuse the store; see SC_DURABILITY_NOSYNC). Started by open,
	 * stopped and joined by close. 0: no background flush. Ignored by
	 * the other modes. */
	unsigned sync_interval_ms;
	/* Open an existing store for reading only, beside the process that
	 * writes it (or none): the environment is opened MDB_RDONLY, open
	 * runs no write transaction (a store of an older format, which needs
	 * an upgrade, is refused with SC_EVERSION: open it read-write once),
	 * the writer lock is never taken, and appends and snapshots fail
	 * with SC_EINVAL ("opened read-only"). create must be false;
	 * durability, sync_interval_ms and index_lag are ignored. The cache
	 * is restored from the newest snapshot and the log after it, then
	 * follows the log (see follow_interval_ms and sc_store_refresh): its
	 * readers and watchers see each batch another process commits once
	 * this store replayed it. A crash of this process never harms the
	 * writer (LMDB drops a dead reader's slot at the writer's next open
	 * or reader check), nor the writer's this one. The process needs
	 * write access to lock.mdb (LMDB's reader table), not to data.mdb. */
	bool read_only;
	/* read_only: a thread of the store polls meta "last_position" every
	 * this many milliseconds and replays what was committed since into
	 * the cache (sc_store_refresh). 0: 100. */
	unsigned follow_interval_ms;
	/* read_only: no such thread; the cache moves only when the caller
	 * calls sc_store_refresh. */
	bool follow_manual;
	/* Per-partition checkpoints. A partition's tail is the count of its
	 * events after its newest checkpoint; once it reaches
	 * checkpoint_tail (0: 100,000; SC_CHECKPOINT_NEVER: never) the
	 * store's checkpoint thread writes a checkpoint of that partition
	 * from a pinned view, off the appenders' path (a failure is a
	 * warning; the append is committed; the partition is tried again
	 * once its tail has grown by another checkpoint_tail events). The
	 * default partition is also due once it has a tail and the log after
	 * its newest checkpoint holds 4 x checkpoint_tail events, which bounds
	 * the log scan that open makes for it. So open replays at most about
	 * checkpoint_tail events per partition. No thread in read-only stores.
	 */
	uint64_t checkpoint_tail;
	unsigned checkpoint_keep; /* checkpoints kept per partition; 0: 3 */
	/* Entities per chunk of a checkpoint; 0: 4096 (snapshot format). */
	uint32_t checkpoint_entities_per_chunk;
	/* The memory budget: the bytes of resident state (entity states
	 * plus an estimate of their HAMT nodes, as sc_store_stats_get
	 * reports resident_bytes) the store keeps at most. 0: no budget,
	 * every partition resident (a store that never names a partition
	 * behaves as without partitions). With a budget, open loads the
	 * default partition and the pinned ones only, each from its newest
	 * checkpoint and its tail, and marks every other partition cold,
	 * so open takes the same time whatever the store's size; a store
	 * without checkpoints (written by an older build, or with
	 * checkpoint_tail never) opens the same way, replaying the events
	 * of those partitions, and its checkpoint thread then writes the
	 * checkpoints of every partition whose tail is due. A cold
	 * partition is loaded by sc_store_get_in and
	 * sc_store_partition_make_resident; after every load and append the
	 * least recently used unpinned partitions are evicted until the
	 * resident bytes are within the budget (the default partition, the
	 * pinned partitions and the partition a call needs are never
	 * evicted, so they may exceed it). Appends to a cold partition are
	 * written to the log only. Whole-store snapshots (sc_store_snapshot,
	 * snapshot_every) need every partition resident: with cold
	 * partitions they fail with SC_ESTATE; checkpoints replace them.
	 * Ignored by read-only opens (they hold every partition). */
	size_t memory_budget;
	/* Partitions pinned resident from open (loaded at open, never
	 * evicted): npinned names, borrowed for the call of sc_store_open
	 * only. sc_store_partition_pin pins and unpins later. */
	const sc_str *pinned;
	size_t npinned;
} sc_store_options;

/*
 * sc_store_open - open (or with opt->create, create) the store in `dir`.
 *
 * Clears stale LMDB readers, checks the format version and that the
 * store's databases exist (an existing store's are never created anew)
 * and that the log ends at the last position committed, restores the
 * newest snapshot that verifies (others, and snapshots beyond the end of
 * the log, are skipped with a warning through opt->warn naming the
 * position and the reason), then replays the events after it. `opt` may be
 * NULL (defaults: durability full, no create). A store is created
 * atomically (a crash leaves none or a complete empty one) with the files
 * private to the owner unless opt->file_mode says otherwise; opening an
 * existing store that every user can read warns through opt->warn. On
 * success *out is owned by the caller (sc_store_close). One process may
 * open a directory once.
 * Errors: SC_NOTFOUND (no store and create is false), SC_EVERSION (newer
 * format), SC_ECORRUPT (an event record does not decode, the log has a
 * gap or ends before meta "last_position", one of the store's databases
 * is missing, data.mdb is an LMDB file that is not a store, or an OS crash
 * cut a nosync session: see SC_DURABILITY_NOSYNC; the message names what),
 * SC_EINVAL (bad options, an unknown durability, read_only with create),
 * SC_EVERSION also for a read-only open of a store that needs an upgrade,
 * EAGAIN (the background flush thread of sync_interval_ms, or the follow
 * thread of a read-only store, cannot start), SC_ELMDB, ENOMEM, errno
 * values. A read-only open of a directory without a store is SC_NOTFOUND
 * and creates nothing.
 */
SC_API int sc_store_open(const char *dir, const sc_store_options *opt,
			 sc_store **out, sc_error *err);

/*
 * sc_store_refresh - bring the cache of a read-only store up to the end of
 * the log: in one read transaction, read meta "last_position" and replay
 * the events committed after the cache's position into the cache, then
 * promote (a catch-up of many events promotes every 8192 events, each
 * version the state at its position). Wakes sc_store_wait_position and
 * live queries. *position (may be NULL) is the position the cache reached.
 * The follow thread calls it every follow_interval_ms; any thread may call
 * it too (calls are serialized). Errors: SC_EINVAL (a store opened for
 * writing: it is always current), SC_ECORRUPT (a record does not decode,
 * the log has a gap), SC_ELMDB, ENOMEM (nothing promoted; call again).
 */
SC_API int sc_store_refresh(sc_store *store, uint64_t *position, sc_error *err);

/*
 * sc_store_wait_position - wait until the store's cache holds position
 * `position` (sc_store_last_position >= position), at most `timeout_ms`
 * milliseconds (-1: no limit). On a store opened for writing the appends
 * of this process move it; on a read-only store the follow thread or
 * sc_store_refresh does. A bounded wait on a condition, woken by every
 * promote of the store. Any thread. Returns 0, or ETIMEDOUT (the position
 * is not there yet), SC_EINVAL.
 */
SC_API int sc_store_wait_position(sc_store *store, uint64_t position,
				  int timeout_ms, sc_error *err);

/* True when the store was opened with options.read_only. */
SC_API bool sc_store_read_only(const sc_store *store);

/* sc_store_close - close the store and free its cache. Cache readers must
 * be closed first, no other call may be running, and no thread that used
 * a reader, appended or called sc_watch_next may be exiting meanwhile (as
 * for sc_cache_destroy). Stops the background flush of sync_interval_ms,
 * then flushes once in durability consistent and nosync, and in nosync
 * removes the session marker once that flush succeeded: after close
 * returned an OS crash loses nothing. A failed flush leaves the marker
 * (open will refuse the store after a restart of the machine). NULL is a
 * no-op. */
SC_API void sc_store_close(sc_store *store);

/* The store's cache; read the current state through sc_reader_*. Owned by
 * the store. */
SC_API sc_cache *sc_store_cache(sc_store *store);

/* ---- projectors ---------------------------------------------------------- */

/*
 * A projector is called for every event appended after it was registered,
 * inside the append's LMDB write transaction, after the cache (the first
 * projector) applied the batch: one event after another, in log order,
 * never in parallel, even when the cache applies the batch in its apply
 * lanes (options.cache.lanes). Returning non-zero aborts the whole append (the
 * caller gets SC_EPROJECTOR naming the projector, the event index and the
 * message the projector put in its sc_error); then `rollback` is called.
 * After a successful commit `commit` is called. Projectors may keep their
 * own LMDB databases in the same environment (sc_store_env) and write them
 * through `txn`; such writes commit or roll back with the events. A
 * projector that needs the history catches up with sc_store_events.
 * All three callbacks run under the writer lock, one call at a time, on
 * the thread that writes the transaction: with appends from several
 * threads at once, that may be another appender's thread (group commit).
 * A transaction may hold the batches of several callers, in position
 * order; when apply refuses an event, rollback is called and the
 * transaction is written again without that event's batch.
 * For read models that may lag the log (kept off the append path, with
 * their own thread, offset, batches and rebuilds), use a projection
 * runner instead: statecache/projection.h says when to use which.
 */
typedef struct sc_projector {
	const char *name;
	int (*apply)(void *ctx, MDB_txn *txn, const sc_event *ev,
		     sc_error *err);
	void (*commit)(void *ctx);   /* after the commit; may be NULL */
	void (*rollback)(void *ctx); /* after an abort; may be NULL */
	void *ctx;
} sc_projector;

/* Register a projector (the struct and its name are copied; ctx is
 * borrowed until close). Safe between appends from any thread.
 * Errors: SC_EINVAL (no apply, or a name not of 1..255 bytes), ENOMEM. */
SC_API int sc_store_add_projector(sc_store *store, const sc_projector *p,
				  sc_error *err);

/* Unregister the projector `name` (the first registered under it): it is
 * called no more, its ctx is no longer borrowed. Its offset in meta stays.
 * Safe between appends from any thread. Returns 0, SC_NOTFOUND (no such
 * projector), SC_EINVAL (NULL argument). */
SC_API int sc_store_remove_projector(sc_store *store, const char *name);

/*
 * sc_store_projector_position - the last position whose events the
 * projector `name` applied in a committed append (its offset, stored in
 * meta under "projector/NAME" in the same transaction as the events);
 * 0 if it never did. A projector registered late, or with its own durable
 * state, compares this with sc_store_last_position to know what to catch
 * up (sc_store_events). Any thread. Errors: SC_EINVAL, SC_ECORRUPT,
 * SC_ELMDB.
 */
SC_API int sc_store_projector_position(sc_store *store, const char *name,
				       uint64_t *position, sc_error *err);

/* The LMDB environment, for projectors that keep their own databases (up
 * to 32 named databases in all, four of them the store's). Do not close it
 * or write to the store's databases. */
SC_API MDB_env *sc_store_env(sc_store *store);

/* ---- writing ------------------------------------------------------------- */

/*
 * sc_store_append - append `n` events as one transaction.
 *
 * Every event is validated first. Positions are assigned densely from
 * last+1 (the caller's `position` fields are ignored); events with time 0
 * get the current CLOCK_REALTIME time, and that stamped time is what is
 * stored (a replay applies the same events). The batch is written in one
 * LMDB write transaction (synced before returning in durability full),
 * the cache and every projector apply it inside that transaction, and the
 * cache is promoted after the commit: readers see the whole batch or none
 * of it. The caller's events are borrowed for the call only. n == 0 is a
 * no-op that sets *first to the next position.
 *
 * Group commit: appends called from several threads at once are written
 * together. While one transaction is being written and synced, the
 * appends that arrive queue up; the first of them then writes the queued
 * batches (up to 64 of them holding at most 65,536 events together; the
 * first goes whatever its size) in one transaction, so one sync makes all of
 * them durable. Each batch is still all or nothing and gets one contiguous
 * range of positions; batches written together are in the order their appends
 * queued. A batch that fails validation never joins a transaction. If a
 * projector refuses an event, the transaction is aborted and written again
 * without that event's batch: only its caller gets SC_EPROJECTOR. Any other
 * failure of a shared transaction makes each of its batches be written alone,
 * so every caller gets the outcome of its own batch. Durability is unchanged:
 * a call returns only after the transaction holding its batch was
 * committed (and synced, in durability full) and the cache promoted.
 * An append with nobody else appending waits for no other thread, but
 * right after a commit that saw several: the first of the queued appends
 * then waits for the appenders that commit saw (the batches it wrote and
 * those queued behind it, at most 64) until its group is that large or
 * full, at most a quarter of that commit's write time and never over
 * 2 ms, so that appenders released together are written together. It does not
 * wait when that commit saw one appender, when it ended longer ago than its
 * write took, or when the wait would be under 25 us (a write under 100 us,
 * as commits without a sync usually are).
 *
 * On success *first (may be NULL) is the first position. On any failure
 * nothing of the batch is written, the cache is unchanged and the
 * projectors were rolled back. Errors: SC_EINVAL (a bad event; the message
 * names its index and field), SC_EMAPFULL (map_size_max reached; the message
 * names the limit), SC_ETOOBIG (a batch too large for one transaction, or an
 * event that would make its entity's state take more than 64 MiB in a
 * snapshot, as sc_cache_apply says: the message names the event and the
 * entity; split the entity's attributes over several entities),
 * SC_EPROJECTOR, SC_ELMDB, ENOMEM, EIO. Promoting the cache after the
 * commit cannot fail: everything it needs (queued changes applied, memory
 * reserved) is done before the commit, and a failure there aborts the
 * append like any other. Debug builds assert it; should it ever fail in a
 * release build, the events are committed, the error's message says so
 * and names their positions, and further appends fail with SC_ESTATE
 * until the store is reopened (which replays them).
 *
 * With a memory budget, the events of partitions that are cold are
 * written to the log only (their partition's state catches up when it is
 * next loaded), never loading the partition; the state-size limit holds
 * for them all the same (store/README.md, Residency and the memory
 * budget). The append then evicts partitions to stay within the budget.
 */
SC_API int sc_store_append(sc_store *store, const sc_event *events, size_t n,
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
 * Pins the newest promoted version through a cache reader and encodes it
 * without holding the store's writer lock or an LMDB write transaction;
 * appends from other threads go on meanwhile. The records are then stored
 * in one short write transaction, which also deletes snapshots beyond
 * snapshot_keep. If a snapshot of that position already exists (or the
 * log is empty) nothing is written and 0 is returned. One snapshot runs at
 * a time. *info may be NULL. Open restores the newest snapshot only in
 * a store that holds no checkpoint (sc_store_checkpoint); one that does
 * loads each partition from its own checkpoints (store/README.md).
 * Errors: SC_EINVAL, SC_ETOOBIG, SC_EMAPFULL, SC_ESTATE (a memory budget
 * left partitions cold: a snapshot needs every partition in memory;
 * checkpoints replace it), SC_ELMDB, ENOMEM; on failure the stored
 * snapshots are as before.
 */
SC_API int sc_store_snapshot(sc_store *store, sc_snapshot_info *info,
			     sc_error *err);

/* ---- reading ------------------------------------------------------------- */

/* Last appended position (0: empty log). Any thread. */
SC_API uint64_t sc_store_last_position(sc_store *store);

/* Return 0 to go on, non-zero to stop with that value. The event and its
 * strings are valid during the call only; it runs inside an LMDB read
 * transaction (keep it short, and do not append from it). */
typedef int (*sc_event_fn)(void *ctx, const sc_event *ev);

/* Events with position >= from (0 means 1), in order, at most `limit`
 * (0: all), each decoded and checked. Returns 0, the callback's non-zero
 * value, or SC_ECORRUPT (a record fails to decode), SC_ELMDB, ENOMEM. */
SC_API int sc_store_events(sc_store *store, uint64_t from, uint64_t limit,
			   sc_event_fn fn, void *ctx, sc_error *err);

/* Events of one entity with position >= from, in order, at most `limit`
 * (0: all), found through entity_index (one seek per 65,536 positions
 * spanned) and a scan of the fewer than index_lag events it does not
 * cover yet (after a store of an older format is opened, of the whole log
 * until the appends that follow have indexed it again, at most 65,536
 * events each), in one read transaction. The entity is `id` of the
 * default partition; _in: (partition, id), an empty partition being the
 * default one. Errors: SC_EINVAL (bad id, or a partition longer than
 * SC_EVENT_FIELD_MAX), and those of sc_store_events. */
SC_API int sc_store_entity_events(sc_store *store, sc_str id, uint64_t from,
				  uint64_t limit, sc_event_fn fn, void *ctx,
				  sc_error *err);
SC_API int sc_store_entity_events_in(sc_store *store, sc_str partition,
				     sc_str id, uint64_t from, uint64_t limit,
				     sc_event_fn fn, void *ctx, sc_error *err);

/*
 * sc_store_entity_at - the state of `id` (default partition; _in: of
 * (partition, id)) as of `position` (inclusive),
 * folded with sc_entity_apply from that entity's events only, found as
 * sc_store_entity_events finds them (no replay of the log). *out is a new
 * entity the caller frees with sc_entity_free(). SC_NOTFOUND if it did not
 * exist then (never created, or deleted). Other errors as
 * sc_store_entity_events.
 */
SC_API int sc_store_entity_at(sc_store *store, sc_str id, uint64_t position,
			      sc_entity **out, sc_error *err);
SC_API int sc_store_entity_at_in(sc_store *store, sc_str partition, sc_str id,
				 uint64_t position, sc_entity **out,
				 sc_error *err);

/*
 * sc_store_verify - check the log's own consistency, reading the whole
 * log and entity_index in one read transaction: positions dense from 1 to
 * the last, every record decodes, meta "last_position" (the last position
 * committed, written by every append) equals the last position, and
 * entity_index holds exactly one row for every position up to meta
 * "index_through", keyed by that event's (partition, id), and tag_index
 * and partition_index hold exactly the rows of the events' tags and
 * partitions (statecache/query.h), and partition_catalog holds one row
 * per partition with its event count and last position. Snapshots are checked
 * by open (a damaged one is skipped) and the state by comparing with a replay
 * (statecache verify). Any thread; its cost grows with the log. Errors:
 * SC_ECORRUPT (the message names the first fault), SC_EINVAL, SC_ELMDB,
 * ENOMEM.
 */
SC_API int sc_store_verify(sc_store *store, sc_error *err);

/* Snapshots held, newest first (those whose header fails to verify are
 * left out; seconds is 0). Returns how many were written to `out` (at most
 * `max`), or a negative error code. */
SC_API int sc_store_snapshots(sc_store *store, sc_snapshot_info *out,
			      size_t max, sc_error *err);

/* checkpoint_tail: no automatic checkpoint. */
#define SC_CHECKPOINT_NEVER UINT64_MAX

/* One checkpoint of a partition (sc_store_checkpoints). */
typedef struct sc_checkpoint_info {
	uint64_t position; /* the log position it holds the partition at */
	uint64_t entities;
	uint64_t bytes;	    /* stored bytes, header and chunks */
	int64_t created_at; /* unix ns */
	/* Its header and every chunk verify (checksums, counts, the
	 * partition named by its header): a load would use it. */
	bool verifies;
} sc_checkpoint_info;

/*
 * sc_store_checkpoint - write a checkpoint of one partition (empty: the
 * default partition) now: the partition's entities in the newest version
 * (pinned under the writer lock for an instant, then encoded without it,
 * with the snapshot chunk format), stored in one short write transaction
 * that also drops the partition's checkpoints beyond checkpoint_keep and
 * sets the partition's tail to 0 as of the checkpoint. Nothing is written
 * when a checkpoint of that position exists or the log is empty. A cold
 * partition (memory_budget) is loaded for the encoding and made cold again
 * once its version is pinned, so the resident partitions stay as they
 * were (the checkpoint thread does the same for a cold partition whose
 * tail is due). *info may be NULL. Thread-safe; one checkpoint is written at a
 * time. Errors:
 * SC_EINVAL (read-only store, partition longer than SC_EVENT_FIELD_MAX),
 * SC_ESTATE, SC_ETOOBIG, SC_EMAPFULL, SC_ELMDB, ENOMEM; on failure the
 * stored checkpoints are as before.
 */
SC_API int sc_store_checkpoint(sc_store *store, sc_str partition,
			       sc_checkpoint_info *info, sc_error *err);

/*
 * sc_store_checkpoints - the checkpoints held for `partition`, newest
 * first, each verified in full (verifies false: a load would skip it).
 * Returns how many were written to `out` (at most `max`), or a negative
 * error code (SC_EINVAL, SC_ELMDB, ENOMEM). Any thread; reads every
 * chunk.
 */
SC_API int sc_store_checkpoints(sc_store *store, sc_str partition,
				sc_checkpoint_info *out, size_t max,
				sc_error *err);

/*
 * sc_store_checkpoints_drop_after - delete the checkpoints of `partition`
 * newer than `position`, so that the next load of the partition (the
 * next open) starts from the newest one at or before it (or a full replay
 * of the partition when none is left); the catalog's tail and checkpoint
 * position follow. The state in memory is unchanged. *dropped (may be
 * NULL) is the count deleted. Thread-safe. Errors: SC_EINVAL (read-only
 * store, bad partition), SC_EMAPFULL, SC_ELMDB, ENOMEM.
 */
SC_API int sc_store_checkpoints_drop_after(sc_store *store, sc_str partition,
					   uint64_t position, size_t *dropped,
					   sc_error *err);

/* A partition in the store's catalog (sc_store_partition_info). */
typedef struct sc_partition_info {
	sc_str name;		      /* the name asked for */
	uint64_t last_position;	      /* of its last event */
	uint64_t events;	      /* its events in the log */
	uint64_t tail;		      /* its events after checkpoint_position */
	uint64_t checkpoint_position; /* of its newest checkpoint; 0: none */
} sc_partition_info;

/*
 * sc_store_partition_info - the catalog row of `partition` (empty: the
 * default partition), as of the last commit. Any thread. Errors:
 * SC_NOTFOUND (no event names the partition; *out zeroed), SC_EINVAL,
 * SC_ECORRUPT, SC_ELMDB.
 */
SC_API int sc_store_partition_info(sc_store *store, sc_str partition,
				   sc_partition_info *out, sc_error *err);

/* Called once per partition by sc_store_partitions; `p->name` is valid
 * during the call only. Non-zero stops the walk with that value. */
typedef int (*sc_partition_fn)(void *ctx, const sc_partition_info *p);

/*
 * sc_store_partitions - call fn with the catalog row of every partition
 * that has an event (the default partition's too), in the order of their
 * keys (not by name), as of the last commit, in one read transaction
 * (keep fn short; do not append from it). Any thread. Errors: fn's value,
 * SC_EINVAL, SC_ECORRUPT (a damaged row), SC_ELMDB.
 */
SC_API int sc_store_partitions(sc_store *store, sc_partition_fn fn, void *ctx,
			       sc_error *err);

/*
 * sc_store_checkpoints_wait - return once the checkpoint thread has
 * handled every append that made a partition due before the call (it
 * wrote their checkpoints or warned). For tests and tools that want the
 * automatic checkpoints on disk; returns at once without the thread.
 * Thread-safe. Errors: SC_EINVAL.
 */
SC_API int sc_store_checkpoints_wait(sc_store *store, sc_error *err);

typedef struct sc_store_stats {
	uint64_t last_position;
	/* Residency (memory_budget): the budget (0: none), the bytes of the
	 * resident partitions, the partitions resident (the default one
	 * included) and cold, and every partition's loads and evictions
	 * since open with the load time's median and 99th percentile (upper
	 * bounds of a histogram of power-of-two microseconds; 0 without a
	 * load). */
	size_t memory_budget;
	size_t resident_bytes;
	size_t partitions_resident;
	size_t partitions_cold;
	uint64_t partition_loads;
	uint64_t partition_evictions;
	double load_seconds_p50;
	double load_seconds_p99;
	/* Events open applied after the checkpoints (or the snapshot) it
	 * restored, every partition together. */
	uint64_t open_events_replayed;
	/* Checkpoints written since open, automatic or not. */
	uint64_t checkpoints_written;
	size_t map_size;       /* current LMDB map size */
	size_t map_bytes_used; /* pages in use * page size */
	sc_cache_stats cache;
} sc_store_stats;

/* Store and cache statistics. Any thread but a projector's callback (the
 * residency figures take the store's writer lock for an instant, which an
 * append holds while it calls projectors). Errors: SC_EINVAL, SC_ELMDB. */
SC_API int sc_store_stats_get(sc_store *store, sc_store_stats *out,
			      sc_error *err);

/* ---- residency and the memory budget ------------------------------------ */

/*
 * sc_store_get_in - the state of (partition, id) through `reader` (a
 * reader of sc_store_cache(store), owned by the calling thread), loading
 * the partition first when it is cold in the newest version: the load
 * takes the store's writer lock as an append does, restores the
 * partition from its newest checkpoint that verifies and its later
 * events, promotes it and evicts other partitions to stay within
 * memory_budget; reads of resident partitions by other threads go on
 * meanwhile, and threads that want the same cold partition at once load
 * it once. On success *out is the state, valid as sc_reader_get_in's
 * result is (until the next get, begin or end on `reader`), from one
 * version at least as new as the newest when the call began; the reader
 * then pins that version. SC_NOTFOUND (*out NULL): no such entity. To
 * read one entity of a cold partition without making the partition
 * resident, use sc_store_entity_at_in(store, partition, id,
 * sc_store_last_position(store), ...), which folds that entity's events
 * only. Errors: SC_EINVAL (NULL pointers, a partition longer than
 * SC_EVENT_FIELD_MAX, a read-only store reading a partition it lacks),
 * SC_ESTATE (the store must be reopened), and those of a load:
 * SC_ECORRUPT, ENOMEM, SC_ETOOBIG, SC_ELMDB. Thread-safe.
 */
SC_API int sc_store_get_in(sc_store *store, sc_reader *reader, sc_str partition,
			   sc_str id, const sc_entity **out, sc_error *err);

/*
 * sc_store_begin_in - sc_reader_begin(reader) with `partition` resident in
 * the view: when it is cold in the newest version it is loaded first, as
 * by sc_store_get_in. *view (NULL on error) is valid until sc_reader_end
 * or the next begin or get on `reader`, and reads every partition as one
 * version (other partitions may be cold in it). Errors: those of
 * sc_store_get_in. Thread-safe.
 */
SC_API int sc_store_begin_in(sc_store *store, sc_reader *reader,
			     sc_str partition, const sc_view **view,
			     sc_error *err);

/*
 * sc_store_partition_make_resident - load `partition` when it is cold (as
 * sc_store_get_in does) and mark it most recently used; a no-op for a
 * resident partition or one without events. The partition may be evicted
 * again by a later load or append (pin it to keep it). Errors: those of
 * sc_store_get_in. Thread-safe.
 */
SC_API int sc_store_partition_make_resident(sc_store *store, sc_str partition,
					    sc_error *err);

/*
 * sc_store_partition_pin - pin `partition` resident (`pinned` true: it is
 * loaded now when cold and never evicted) or unpin it (it becomes
 * evictable). Pins last until close (opt.pinned pins at open). Errors:
 * SC_EINVAL (the default partition, always resident; NULL store; a
 * partition longer than SC_EVENT_FIELD_MAX), ENOMEM, and those of a load.
 * Thread-safe.
 */
SC_API int sc_store_partition_pin(sc_store *store, sc_str partition,
				  bool pinned, sc_error *err);

/* One partition's residency and figures (sc_store_partition_stats). */
typedef struct sc_partition_stats {
	sc_str name;   /* empty: the default partition */
	bool resident; /* false: cold, its states not in memory */
	bool pinned;
	size_t entities;	   /* in memory; 0 when cold */
	size_t bytes;		   /* resident bytes; 0 when cold */
	uint64_t last_position;	   /* of its last event (catalog) */
	uint64_t events;	   /* its events in the log (catalog) */
	uint64_t tail;		   /* its events after its newest checkpoint */
	uint64_t loads, evictions; /* since open */
	double load_seconds_p50, load_seconds_p99; /* 0: never loaded */
} sc_partition_stats;

/* Called once per partition by sc_store_partition_stats; `p->name` is
 * valid during the call only. Non-zero stops the walk with that value. */
typedef int (*sc_partition_stats_fn)(void *ctx, const sc_partition_stats *p);

/*
 * sc_store_partition_stats - call fn with the figures of every partition
 * of the catalog (every partition with an event, resident or cold), in the
 * catalog's order, as of one moment under the store's writer lock (fn
 * runs after it is released; do not call it from a projector's
 * callback, which runs under that lock). Errors: SC_EINVAL, ENOMEM,
 * SC_ECORRUPT, SC_ELMDB, or fn's value. Thread-safe.
 */
SC_API int sc_store_partition_stats(sc_store *store, sc_partition_stats_fn fn,
				    void *ctx, sc_error *err);

/* ---- watching from a log position --------------------------------------- */

/* The first batch of a resumed watch (sc_store_watch_resume). */
typedef struct sc_watch_resume sc_watch_resume;

/*
 * sc_store_watch_resume - a watcher of the store's cache (statecache/
 * watch.h) that resumes after log position `position`, as a consumer that
 * saw the state up to `position` before a restart needs it.
 *
 * Pins the newest promoted version V (at position Q) and opens at it a
 * watcher with the filter of `opt` (opt->start must be
 * SC_WATCH_START_NOW; NULL: every entity), holding off promotes meanwhile,
 * so that the watcher's first batch starts exactly at V. Then builds
 * *first: one SC_WATCH_CHANGES batch from position `position` to Q
 * (from_version 0, to_version V): every entity an event after `position`
 * touched, with its state as of `position` (sc_store_entity_at) as
 * `before` and its state in V as `after`, classified as sc_watch_next
 * does (added, updated when the two differ, removed; an entity that
 * matches the filter in neither state is left out). Together, *first and
 * the batches of *watcher hold every change after `position` once: none
 * missed, none doubled. position == Q gives an empty *first.
 *
 * The log is never compacted, so every position up to the end of the log
 * can be resumed from; a position beyond it is an error. The cost of
 * *first follows the events after `position` (read from the log) and the
 * entities they touch (one as-of read each).
 *
 * *watcher is closed with sc_watch_close, *first freed with
 * sc_watch_resume_free (its batch points into it; it pins V with a cache
 * reader until then, whichever threads exit meanwhile). Any thread; the
 * watcher is then used as watch.h says, and *first may be read and freed
 * on any thread, one at a time. Errors: SC_EINVAL (a NULL argument,
 * opt->start not SC_WATCH_START_NOW, a position beyond the end of the log:
 * the message names both), the errors of sc_watch_open, of
 * sc_store_events and sc_store_entity_at, ENOMEM; on error nothing is left
 * open.
 */
SC_API int sc_store_watch_resume(sc_store *store, const sc_watch_options *opt,
				 uint64_t position, sc_watcher **watcher,
				 sc_watch_resume **first, sc_error *err);

/* The batch of a resume (valid until sc_watch_resume_free). */
SC_API const sc_watch_batch *
sc_watch_resume_batch(const sc_watch_resume *resume);

/* Free the first batch and release its pin. NULL is a no-op. */
SC_API void sc_watch_resume_free(sc_watch_resume *resume);

/* ---- backup -------------------------------------------------------------- */

/* sc_store_backup flag: compact while copying (MDB_CP_COMPACT): free pages
 * are left out and pages renumbered, so the copy is smaller and takes
 * longer; it holds the same data. */
#define SC_BACKUP_COMPACT 0x1u

/*
 * sc_store_backup - write a consistent copy of the store into `dest_dir`.
 *
 * The copy is the whole LMDB environment as of one committed transaction
 * (LMDB's mdb_env_copyfd2): every database (the log, the entity index, the
 * snapshots, meta, projector databases), nothing half-written. Appends by
 * other threads, and by other processes that have the store open, go on
 * while it runs (only a map growth needed meanwhile waits for the copy to
 * end); the copy holds every event committed before it began and none
 * committed after. Open the copy like any store (sc_store_open, or
 * `statecache --db DEST_DIR ...`).
 *
 * `dest_dir` must not exist (it is created, mode 0700) or must be an empty
 * directory (its mode is left as it is). The copy is written to
 * `dest_dir/data.mdb.partial` (mode 0600), synced, renamed to
 * `dest_dir/data.mdb` and the directory synced, so a `data.mdb` in
 * `dest_dir` is always complete and durable. Before returning, the copy is
 * opened read-only and must hold the store's databases and its
 * format_version. On failure what was written is removed (and the
 * directory, if this call created it); a process killed during the copy
 * leaves `data.mdb.partial`, which is safe to delete.
 *
 * `flags`: 0 or SC_BACKUP_COMPACT. Any thread; may run alongside appends,
 * snapshots and reads of the same store, and more than one backup at a
 * time (to different directories). The store stays open and unchanged.
 * Errors: SC_EINVAL (NULL or empty arguments, unknown flags, `dest_dir`
 * exists and is not an empty directory), SC_ECORRUPT (the copy does not
 * open as a store), SC_ELMDB and errno values (the message names the
 * file and the failed step, e.g. ENOSPC writing the copy).
 */
SC_API int sc_store_backup(sc_store *store, const char *dest_dir,
			   unsigned flags, sc_error *err);

#ifdef __cplusplus
}
#endif

#endif
