/*
 * statecache: queries of the event log.
 *
 * A query delivers the events of the log that match it, in position
 * order, each with its position:
 *
 *   SC_QUERY_ALL        every event
 *   SC_QUERY_ENTITY     the events of one entity, (partition, id)
 *                       (entity_index)
 *   SC_QUERY_TAG        the events carrying one tag (tag_index)
 *   SC_QUERY_PARTITION  the events of one partition (partition_index)
 *
 * starting at a position (`from`, the offset a consumer saved). Positions
 * are dense and gap-free: the log holds every position from 1 to the last
 * committed one, each committed exactly once and never rewritten, so a
 * consumer that saved the position of the last event it handled resumes
 * with from = that position + 1 and misses nothing.
 *
 * A query is finite or live:
 *
 *   finite  delivers what was committed when it was opened, then ends
 *           (sc_query_next sets *ev to NULL).
 *   live    delivers what is committed, then waits for new commits and
 *           goes on until the caller stops it (sc_query_cancel, or its
 *           own timeout). A commit of this process wakes it at once (it
 *           waits on a condition the append signals after its promote);
 *           commits of another process that writes the same store are seen
 *           by polling the log's end every poll_ms milliseconds.
 *
 * Tag and partition queries read their index (one row per tag and one for
 * the partition of each event), and scan only the unindexed tail of the
 * log: the indexes lag the log by fewer than sc_store_options.index_lag
 * events, as entity_index does (store/README.md). An index key is
 * key_id(value) ++ position (the key id of store/README.md: the value
 * itself up to 499 bytes, a cut and a hash beyond), so every valid tag and
 * partition (1..4096 bytes) is indexed; the query checks each event it
 * reads back and skips those whose value differs. Events without a partition
 * are in no partition query; empty tags are not indexed.
 *
 * Memory: a query reads ahead in batches (at most 256 events or about
 * 4 MiB, at least one event) which it copies out of LMDB, so it holds no
 * read transaction between calls and never delays the writer.
 *
 * Thread safety: one query is used by one thread at a time, except
 * sc_query_cancel, which any thread may call at any time before
 * sc_query_close. Different queries of one store run in parallel with
 * each other and with appends. Close every query before its store.
 */
#ifndef STATECACHE_QUERY_H
#define STATECACHE_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/api.h"
#include "statecache/error.h"
#include "statecache/event.h"
#include "statecache/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sc_query_kind {
	SC_QUERY_ALL = 0,
	SC_QUERY_ENTITY = 1,
	SC_QUERY_TAG = 2,
	SC_QUERY_PARTITION = 3,
} sc_query_kind;

/* The poll interval of a live query when spec.poll_ms is 0. */
#define SC_QUERY_POLL_MS_DEFAULT 100

typedef struct sc_query_spec {
	sc_query_kind kind;
	/* The entity id (1..SC_ENTITY_ID_MAX bytes), the tag or the partition
	 * (1..SC_EVENT_FIELD_MAX bytes); ignored by SC_QUERY_ALL. Copied. */
	sc_str key;
	/* The first position to deliver; 0 means 1. */
	uint64_t from;
	/* Wait for new commits after the end instead of ending. */
	bool live;
	/* Live queries: how often, in milliseconds, to look for commits made
	 * by another process. 0: SC_QUERY_POLL_MS_DEFAULT; negative: never
	 * (only this process's commits wake the query). */
	int poll_ms;
	/* SC_QUERY_ENTITY: the entity's partition (0..SC_EVENT_FIELD_MAX
	 * bytes; empty, the default partition: an entity is (partition, id),
	 * statecache/cache.h). Ignored by the other kinds. Copied. */
	sc_str partition;
} sc_query_spec;

typedef struct sc_query sc_query;

/*
 * sc_query_open - a query of `store` as `spec` describes it (*out, closed
 * with sc_query_close). A finite query ends at the last position committed
 * now, by this or any other process (meta "last_position", read in a read
 * transaction); no event is read yet.
 * Any thread. Errors: SC_EINVAL (no store, unknown kind, a key of a size
 * the kind does not allow), ENOMEM, SC_EREADERS, SC_ECORRUPT, SC_ELMDB.
 */
SC_API int sc_query_open(sc_store *store, const sc_query_spec *spec,
			 sc_query **out, sc_error *err);

/*
 * sc_query_next - the next matching event, in position order.
 *
 * On success returns 0 and sets *ev to the event, or, at the end of a
 * finite query, to NULL. The event (and every pointer in it) is owned by
 * the query and valid until the next call of sc_query_next,
 * sc_query_next_batch or sc_query_close on it.
 *
 * When no matching event is committed yet, a live query waits:
 * timeout_ms < 0 without limit, 0 not at all, > 0 at most that long.
 * Errors: ETIMEDOUT (no event within timeout_ms; the query goes on with
 * the next call), ECANCELED (sc_query_cancel was called; every later call
 * returns it too), SC_ECORRUPT (a record or an index row is damaged: the
 * message names the position; the events before it are delivered first,
 * and every later call returns the same error: a query never goes on past
 * damage), SC_ETOOBIG (a record over SC_EVENT_RECORD_MAX: likewise
 * reported at its position on every later call), SC_EREADERS, SC_ELMDB, ENOMEM
 * (these three may be retried).
 */
SC_API int sc_query_next(sc_query *q, int timeout_ms, const sc_event **ev,
			 sc_error *err);

/*
 * sc_query_next_batch - up to `max` next matching events at once:
 * evs[0..*n) in position order, valid as sc_query_next's. Waits as
 * sc_query_next only while no event is available; then returns those
 * read ahead (at least one). *n == 0 with 0 returned: a finite query
 * ended. Errors: SC_EINVAL (max 0 or NULL pointers), and those of
 * sc_query_next.
 */
SC_API int sc_query_next_batch(sc_query *q, int timeout_ms,
			       const sc_event **evs, size_t max, size_t *n,
			       sc_error *err);

/*
 * sc_query_position - the position of the last event delivered (the
 * offset to save: resume with from = this + 1), or from - 1 before the
 * first. Same thread as sc_query_next.
 */
SC_API uint64_t sc_query_position(const sc_query *q);

/*
 * sc_query_cancel - stop the query: a sc_query_next waiting in another
 * thread returns ECANCELED at once, and so does every later call. Any
 * thread, any number of times, until sc_query_close. Not
 * async-signal-safe (it takes a mutex): from a signal, let a thread that
 * waits for the signal (sigwait) call it.
 */
SC_API void sc_query_cancel(sc_query *q);

/*
 * sc_query_close - free the query and everything it delivered. Must not
 * race with any other call on the query. NULL is a no-op.
 */
SC_API void sc_query_close(sc_query *q);

#ifdef __cplusplus
}
#endif

#endif
