/*
 * statecache: projection runners.
 *
 * A projection is a named handler that consumes the event log in position
 * order on a thread of its own, off the append path, from an offset kept
 * in the store (meta "projection/NAME": the last position it finished).
 * It reads the log through a live query (statecache/query.h), so a commit
 * of this process wakes it at once; commits of another process that
 * writes the store are seen by polling (poll_ms).
 *
 * Two kinds:
 *
 *   SC_PROJECTION_EXACTLY_ONCE  the handler gets an LMDB write transaction
 *       of the store's environment and writes its read model into its own
 *       named databases (opts.databases, handles from sc_projection_dbi);
 *       the offset is saved in the same transaction. After any crash the
 *       read model is the fold of exactly the events up to the saved
 *       offset. Its transactions take the store's writer lock: they
 *       alternate with appends, one batch (opts.batch_max events) each.
 *
 *   SC_PROJECTION_AT_LEAST_ONCE  the handler does its side effect (a file,
 *       a socket, another system) with no transaction (txn is NULL); the
 *       offset is saved every opts.save_every events or opts.save_ms
 *       milliseconds, whichever comes first, and when the projection
 *       stops. After a crash the events after the saved offset are
 *       delivered again, each with its position (ev->position), so a
 *       handler can be idempotent.
 *
 * Lanes (at-least-once only): with opts.lanes > 1 the handler runs on
 * that many threads at once. Each event goes to the lane its key picks
 * (opts.key, default the entity id; an empty key falls back to the
 * entity): the events of one key are handled strictly in log order, by
 * one lane; different keys in parallel. The runner hands the lanes one
 * read batch at a time and saves an offset only at a position below
 * which every lane has finished, so a restart skips nothing.
 * (Exactly-once handlers share the store's single LMDB writer, so lanes
 * would only queue: they are refused.)
 *
 * When to use which, and the in-transaction projectors of store.h:
 *   - sc_store_add_projector: the read model must change in the very
 *     transaction of the append (never behind the log, even for a moment),
 *     and the work is tiny: it runs on the appending thread, under the
 *     writer lock, and a failure fails the append.
 *   - exactly-once projection: the read model lives in the store's LMDB
 *     environment and may lag the log; appends never wait for the
 *     handler and never fail because of it; it can be rebuilt (reset).
 *   - at-least-once projection: the effect leaves the store (files,
 *     messages, other databases); make the handler idempotent by position.
 *
 * Errors of the handler: with SC_PROJECTION_RETRY (the default) a failed
 * call is retried, after a backoff that starts at opts.backoff_ms and
 * doubles up to 30 s, at most opts.max_retries times; then the
 * projection stops in state SC_PROJECTION_FAILED with the handler's error
 * in its stats (and returned by sc_projection_wait and
 * sc_projection_stop); the offset stays before the failed events. With
 * SC_PROJECTION_SKIP the failed events are handled once more one at a
 * time, and each event that still fails is skipped and counted
 * (stats.skipped). An exactly-once handler's failed call is rolled back.
 *
 * Names: 1..SC_PROJECTION_NAME_MAX bytes, no '/'. Database names:
 * 1..SC_PROJECTION_NAME_MAX bytes; the LMDB database of projection P's
 * database D is named "projection/P/D" (mdb_dump -s works on it). The
 * store's environment holds at most 32 named databases, six of them its
 * own. Run one runner per projection name per store at a time (in any
 * process): two would both deliver the same events.
 *
 * Offsets written by another process (`statecache projections reset`)
 * are noticed by a running projection at its next save: it adopts the
 * stored offset and goes on from there (an exactly-once projection checks
 * in the transaction of each batch, so its read model stays exact).
 */
#ifndef STATECACHE_PROJECTION_H
#define STATECACHE_PROJECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "statecache/api.h"
#include "statecache/error.h"
#include "statecache/event.h"
#include "statecache/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SC_PROJECTION_NAME_MAX 200
/* Databases one projection may declare. */
#define SC_PROJECTION_DBS_MAX 8
/* Lanes one projection may run. */
#define SC_PROJECTION_LANES_MAX 64

typedef enum sc_projection_kind {
	SC_PROJECTION_EXACTLY_ONCE = 0,
	SC_PROJECTION_AT_LEAST_ONCE = 1,
} sc_projection_kind;

typedef enum sc_projection_on_error {
	SC_PROJECTION_RETRY = 0, /* retry with backoff, then fail */
	SC_PROJECTION_SKIP = 1,	 /* skip each failing event and count it */
} sc_projection_on_error;

typedef enum sc_projection_state {
	SC_PROJECTION_RUNNING = 0,
	SC_PROJECTION_PAUSED = 1,
	SC_PROJECTION_STOPPED = 2,
	SC_PROJECTION_FAILED = 3,
} sc_projection_state;

typedef struct sc_projection sc_projection;

/*
 * The handler: handle evs[0..n) (1 <= n <= batch_max, in position order;
 * with lanes, those of one lane). Exactly-once: `txn` is the write
 * transaction the offset is saved in; write only the projection's own
 * databases through it (sc_projection_dbi) and do not commit or abort it.
 * At-least-once: txn is NULL. The events are valid during the call only.
 * Return 0, or an error code with err set (the policy decides what
 * follows; an exactly-once call's writes are rolled back). MDB_MAP_FULL
 * from an LMDB call may be returned as is: the map is grown and the call
 * made again. Must not call sc_projection_stop, _wait, _pause or _seek
 * on its own projection, nor append to the store.
 */
typedef int (*sc_projection_fn)(void *ctx, sc_projection *p, MDB_txn *txn,
				const sc_event *const *evs, size_t n,
				sc_error *err);

/* The routing key of an event for lanes; an empty result means the
 * entity. Called on the runner thread; the result may point into ev. */
typedef sc_str (*sc_projection_key_fn)(void *ctx, const sc_event *ev);

typedef struct sc_projection_options {
	const char *name; /* copied */
	sc_projection_kind kind;
	sc_projection_fn handler;
	void *ctx; /* borrowed until sc_projection_stop returns */
	/* Exactly-once: the databases of its read model (NULL-terminated,
	 * at most SC_PROJECTION_DBS_MAX), created at start when missing. */
	const char *const *databases;
	size_t batch_max;    /* events per handler call; 0: 256 */
	uint64_t save_every; /* at-least-once: save after this many; 0: 1024 */
	unsigned save_ms;    /* at-least-once: or this old; 0: 1000 */
	sc_projection_on_error on_error;
	unsigned max_retries;	  /* retry policy; 0: 5 */
	unsigned backoff_ms;	  /* first backoff; 0: 10 */
	unsigned lanes;		  /* at-least-once: handler threads; 0: 1 */
	sc_projection_key_fn key; /* NULL: the entity */
	int poll_ms;		  /* as sc_query_spec.poll_ms */
	bool start_paused;
} sc_projection_options;

typedef struct sc_projection_stats {
	sc_projection_state state;
	uint64_t offset;	/* saved offset */
	uint64_t handled;	/* last position handled (>= offset) */
	uint64_t last_position; /* the store's last commit */
	uint64_t events_behind; /* last_position - handled */
	double seconds_behind;	/* newest event time - first unhandled one */
	uint64_t skipped;	/* events skipped (SKIP policy) */
	uint64_t retries;	/* failed handler calls retried */
	int error;		/* SC_PROJECTION_FAILED: the code */
	char message[SC_ERROR_MESSAGE_MAX]; /* and what went wrong */
} sc_projection_stats;

/*
 * sc_projection_start - start the projection `opts` describes on a new
 * thread, from its saved offset (0 for a new one; the offset record is
 * created then). Creates its databases, then returns; the handler runs
 * on the projection's threads. *out is owned by the caller, who ends it
 * with sc_projection_stop before closing the store.
 * Errors: SC_EINVAL (no store, handler or name; a bad name or database
 * name; lanes with exactly-once; too many databases or lanes; the store
 * holds a projection of that name of the other kind), SC_ECORRUPT
 * (a damaged offset record), SC_EMAPFULL, SC_ELMDB (e.g. MDB_DBS_FULL:
 * the environment holds 32 databases already), ENOMEM, EAGAIN (no thread).
 */
SC_API int sc_projection_start(sc_store *store,
			       const sc_projection_options *opts,
			       sc_projection **out, sc_error *err);

/*
 * sc_projection_stop - stop the projection, join its threads, save the
 * offset of what was handled (at-least-once; an exactly-once offset is
 * always saved) and free it. A handler call under way finishes first.
 * Returns 0, or the error the projection failed with (err says what), or
 * the error of the final save. NULL is a no-op. Not from the handler.
 */
SC_API int sc_projection_stop(sc_projection *p, sc_error *err);

/* Pause: no handler call starts until sc_projection_resume (a call under
 * way finishes). Any thread. */
SC_API void sc_projection_pause(sc_projection *p);
SC_API void sc_projection_resume(sc_projection *p);

/*
 * sc_projection_wait - wait until the projection has handled every event
 * up to `position` (stats.handled >= position), at most timeout_ms (< 0:
 * no limit). Any thread but the handler's. Errors: ETIMEDOUT, the error
 * the projection failed with, ECANCELED (it was stopped).
 */
SC_API int sc_projection_wait(sc_projection *p, uint64_t position,
			      int timeout_ms, sc_error *err);

/*
 * sc_projection_seek - make the running projection go on after
 * `position` (its next event is position + 1) and save that offset; 0
 * rebuilds from the start, and for exactly-once also empties its
 * databases in the same transaction. Waits until it is done. An
 * exactly-once read model is exact only after a seek to 0 (or to the
 * offset it had). Any thread but the handler's. Errors: SC_EINVAL
 * (position beyond the log), SC_ESTATE (the projection stopped or
 * failed), and those of a write.
 */
SC_API int sc_projection_seek(sc_projection *p, uint64_t position,
			      sc_error *err);

/* The projection's state, offsets, lag and counts; lag read from the
 * store now. Any thread. Errors: SC_ELMDB, SC_ECORRUPT. */
SC_API int sc_projection_stats_get(sc_projection *p, sc_projection_stats *out,
				   sc_error *err);

/*
 * sc_projection_dbi - the handle of the projection's database `db` (one
 * of opts.databases), valid in any transaction of the store's environment
 * (the handler's, or a read transaction of the caller's to read the
 * model) until the store closes. Any thread. Errors: SC_NOTFOUND.
 */
SC_API int sc_projection_dbi(sc_projection *p, const char *db, MDB_dbi *dbi,
			     sc_error *err);

/* ---- projections at rest (no runner needed) ------------------------------ */

/*
 * sc_projection_open_db - the handle of database `db` of projection
 * `name`, which must exist (a projection started once with it), to read a
 * read model without running the projection: valid in any transaction of
 * sc_store_env(store) until the store closes. Not concurrently with
 * sc_projection_start or another sc_projection_open_db (LMDB opens
 * databases one transaction at a time). Errors: SC_EINVAL, SC_NOTFOUND,
 * SC_ELMDB.
 */
SC_API int sc_projection_open_db(sc_store *store, const char *name,
				 const char *db, MDB_dbi *dbi, sc_error *err);

/* sc_projection_offset - the saved offset of projection `name` (0 when
 * it never saved one; *exists says whether it has a record). Any thread.
 * Errors: SC_EINVAL, SC_ECORRUPT, SC_ELMDB. */
SC_API int sc_projection_offset(sc_store *store, const char *name,
				uint64_t *offset, bool *exists, sc_error *err);

/*
 * sc_projection_reset - set the saved offset of projection `name` to
 * `position` (0: rebuild from the start; then its databases, every
 * "projection/NAME/..." of the environment, are emptied in the same
 * transaction). A runner of it, in this or another process, adopts the
 * offset at its next save. Any thread (not from a handler). Errors:
 * SC_EINVAL (bad name, position beyond the log), SC_NOTFOUND (no such
 * projection), SC_EMAPFULL, SC_ELMDB.
 */
SC_API int sc_projection_reset(sc_store *store, const char *name,
			       uint64_t position, sc_error *err);

/* One projection as sc_projection_list reports it. name is valid during
 * the call. state is the last one its runner recorded: at start, with
 * every save, when it pauses (with what it handled), fails and stops; a
 * runner that was killed leaves the one it had ("running"). */
typedef struct sc_projection_info {
	const char *name;
	sc_projection_kind kind;
	sc_projection_state state;
	uint64_t offset;
	uint64_t events_behind;
	double seconds_behind;
} sc_projection_info;

typedef int (*sc_projection_info_fn)(void *ctx, const sc_projection_info *info);

/*
 * sc_projection_list - call fn for every projection with an offset record
 * in the store, in name order. Lag: events_behind is the last position
 * minus the offset; seconds_behind the time of the newest event minus
 * that of the first event not yet saved (0 when none is behind). Returns
 * 0, fn's non-zero value, SC_ECORRUPT, SC_ELMDB.
 */
SC_API int sc_projection_list(sc_store *store, sc_projection_info_fn fn,
			      void *ctx, sc_error *err);

/* "running", "paused", "stopped", "failed"; "exactly-once",
 * "at-least-once". */
SC_API const char *sc_projection_state_name(sc_projection_state s);
SC_API const char *sc_projection_kind_name(sc_projection_kind k);

#ifdef __cplusplus
}
#endif

#endif
