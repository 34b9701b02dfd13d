/*
 * statecache: nodes that follow one replicated NATS JetStream stream.
 *
 * Built into its own library (libstatecache_cluster.a), only when the NATS
 * C client (libnats) is installed; the core library never needs it. Link
 * it before libstatecache.a and add `pkg-config --libs libnats`.
 *
 * The stream is the source of truth of the cluster and gives the global
 * order. Writers publish batches of events (sc_cluster_publish); every
 * batch is one NATS message, a protobuf statecache.v1.Batch
 * (proto/statecache/v1/cluster.proto), on the subject STREAM.TOKEN where
 * TOKEN names the batch's partition (sc_cluster_partition_token): all the
 * events of a batch belong to one partition. A node (sc_cluster_follower)
 * applies every message of the partitions it follows to its own store,
 * one LMDB transaction per message that also stores the stream sequence
 * reached, so that a restart resumes exactly after it.
 *
 * Stream layout: the stream named S holds the subjects "S.>";
 * sc_cluster_stream_create makes one. Server version: written and tested
 * against nats-server 2.9.10 (Debian 12), and relies on nothing newer:
 * message de-duplication by Nats-Msg-Id (2.2), expected-last-subject-
 * sequence headers (2.2), ordered push consumers with a start sequence.
 * Limits of 2.9 that the code handles: one filter subject per consumer
 * (a node reads the whole stream through one consumer and filters by
 * partition itself, so it sees every stream sequence and detects any gap),
 * and a retried conditional publish that was stored may come back as a
 * wrong-last-sequence conflict instead of a duplicate (fixed in 2.10.14;
 * sc_cluster_publish recognises its own message and reports success).
 *
 * Thread safety: a publisher may be used by one thread at a time (use one
 * per thread); a follower runs its own thread, and sc_cluster_follower_wait
 * and _sequence may be called from any thread while it runs.
 */
#ifndef STATECACHE_CLUSTER_H
#define STATECACHE_CLUSTER_H

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

/* The stream name used when none is given. */
#define SC_CLUSTER_DEFAULT_STREAM "statecache"

/* Longest subject token sc_cluster_partition_token writes, NUL included. */
#define SC_CLUSTER_TOKEN_MAX 72

/* Where and how to reach the cluster. */
typedef struct sc_cluster_options {
	/* One URL or several separated by commas ("nats://127.0.0.1:4222,
	 * nats://127.0.0.1:4223"); the client reconnects to any of them. */
	const char *url;
	/* Stream name (letters, digits, '-' and '_'); NULL: "statecache". */
	const char *stream;
	/* Wait for one JetStream reply (a publish ack, a stream request), in
	 * milliseconds; 0: 5000. */
	int64_t timeout_ms;
} sc_cluster_options;

/*
 * sc_cluster_partition_token - the subject token of `partition` (any
 * bytes, at most SC_EVENT_FIELD_MAX): "x" followed by the lowercase hex of
 * the bytes when the partition has at most 32 bytes ("x" alone for the
 * default, empty partition), else "h" followed by the hex of its
 * XXH3-128 hash. Writes a NUL-terminated token of at most
 * SC_CLUSTER_TOKEN_MAX bytes to `out`. A node never trusts the token: it
 * checks the partition of every event it receives. Pure, thread-safe.
 * Errors: SC_EINVAL (partition too long).
 */
SC_API int sc_cluster_partition_token(sc_str partition,
				      char out[SC_CLUSTER_TOKEN_MAX],
				      sc_error *err);

/*
 * sc_cluster_stream_create - create the stream opt->stream (subjects
 * "STREAM.>", file storage, `replicas` copies, 1..5) if it does not exist;
 * an existing stream is left as it is and is not an error. The de-
 * duplication window of message ids is the server's default (2 minutes):
 * a publish retried later than that may be stored twice.
 * Errors: SC_EINVAL, SC_ENATS (cannot connect, JetStream unavailable, the
 * stream cannot be created: the message carries the server's text).
 */
SC_API int sc_cluster_stream_create(const sc_cluster_options *opt, int replicas,
				    sc_error *err);

/* ---- publishing ---------------------------------------------------------- */

typedef struct sc_cluster_publisher sc_cluster_publisher;

/*
 * sc_cluster_publisher_open - connect to the cluster. *out is owned by the
 * caller (sc_cluster_publisher_close). The stream must exist.
 * Errors: SC_EINVAL, SC_ENATS (cannot connect, or no such stream), ENOMEM.
 */
SC_API int sc_cluster_publisher_open(const sc_cluster_options *opt,
				     sc_cluster_publisher **out, sc_error *err);

/* Close the connection and free the publisher. NULL is a no-op. */
SC_API void sc_cluster_publisher_close(sc_cluster_publisher *pub);

/* Options of one publish; NULL or all zero: defaults. */
typedef struct sc_cluster_publish_options {
	/* The message id (1..64 bytes of letters, digits, '-', '_' or
	 * '.'): publishing the same id again within the server's window
	 * stores nothing new and returns the sequence of the first. NULL: a
	 * random 128-bit id. A caller that retries a publish itself (after
	 * a crash, say) passes the id it used before. */
	const char *msg_id;
	/* Optimistic concurrency on the partition: when true, the publish
	 * is stored only if the last message of the batch's partition has
	 * the stream sequence expect_partition_seq (0: the partition has no
	 * message yet); otherwise SC_ECONFLICT. */
	bool expect;
	uint64_t expect_partition_seq;
	/* Attempts after a timeout, a lost connection or a cluster without
	 * a stream leader (an election, a server restart), with the same
	 * id, 50 ms apart doubling up to 1 s; 0: 10. */
	unsigned retries;
} sc_cluster_publish_options;

/* What one publish did. */
typedef struct sc_cluster_publish_result {
	uint64_t sequence; /* stream sequence of the batch */
	/* The message id was stored before (a retry): nothing new stored. */
	bool duplicate;
	unsigned attempts; /* publishes sent, 1 + retries used */
} sc_cluster_publish_result;

/*
 * sc_cluster_publish - publish `n` events (1 or more) as one message.
 *
 * Every event is checked with sc_event_validate, all must name the same
 * partition, and events with time 0 get the current CLOCK_REALTIME time
 * here (so that every node applies the same time). The batch is encoded
 * as one statecache.v1.Batch and must fit the server's maximum message
 * size. A publish that times out, or finds the connection lost, is sent
 * again with the same message id (up to opt->retries times): the server
 * stores it at most once. Returns when the stream stored the batch (a
 * quorum of its replicas); *res (may be NULL) says at which sequence.
 * The caller's events are borrowed for the call only.
 *
 * Errors: SC_EINVAL (n == 0, a bad event or msg_id, events of several
 * partitions), SC_ETOOBIG (the encoded batch exceeds the server's maximum
 * message size; the message gives both sizes: split the batch),
 * SC_ECONFLICT (opt->expect and the partition's last sequence differs:
 * re-read and decide again), SC_ENATS (no ack after every retry, or the
 * server refused the message; whether it was stored is unknown: publish
 * again with the same msg_id), ENOMEM.
 */
SC_API int sc_cluster_publish(sc_cluster_publisher *pub, const sc_event *events,
			      size_t n, const sc_cluster_publish_options *opt,
			      sc_cluster_publish_result *res, sc_error *err);

/*
 * sc_cluster_publisher_max_batch_bytes - the largest encoded batch the
 * server accepts (its max_payload), as learned at connect time.
 */
SC_API size_t sc_cluster_publisher_max_batch_bytes(sc_cluster_publisher *pub);

/* ---- following ----------------------------------------------------------- */

typedef struct sc_cluster_follower sc_cluster_follower;

typedef struct sc_cluster_follower_options {
	sc_cluster_options cluster;
	/* The partitions this node follows; npartitions == 0: all. A node
	 * keeps the set it started with: its saved sequence says nothing of
	 * other partitions, so a later start with another set is refused
	 * (bootstrap a new node for it). */
	const sc_str *partitions;
	size_t npartitions;
	/* Called (from the follower's thread) for what is not an error:
	 * a duplicate delivery dropped, a reconnect. NULL: stderr. */
	sc_warn_fn warn;
	void *warn_ctx;
} sc_cluster_follower_options;

/*
 * sc_cluster_follower_start - make `store` a node of the stream.
 *
 * Reads the node's saved stream sequence (0 for a new store, or the
 * sequence of the store it was copied from with sc_store_backup), checks
 * that the stream still holds every message after it, and starts a
 * thread that reads the stream from that sequence + 1 through an ordered
 * consumer. For each message of a followed partition the thread calls
 * sc_store_append with its events: one LMDB transaction writes them,
 * applies them to the cache and saves the message's stream sequence
 * (LMDB database "cluster", key "stream_sequence"); the cache is
 * promoted after the commit. Messages of other partitions are passed
 * over. A message at or below the sequence reached is dropped (a
 * duplicate delivery); a message after a gap, or a stream that no longer
 * holds the next sequence, stops the follower with SC_EBEHIND: nothing
 * is skipped silently. A message that does not decode, or that the store
 * refuses, stops it with that error. Events stored with time 0 take the
 * message's stream timestamp, the same on every node.
 *
 * The store must not be appended to by anything else while it follows.
 * *out is owned by the caller (sc_cluster_follower_stop).
 * Errors: SC_EINVAL (bad options; the store follows another stream or
 * another partition set), SC_EBEHIND (the stream's first sequence is
 * past the saved sequence + 1: bootstrap from a newer copy), SC_ENATS,
 * SC_ELMDB, ENOMEM.
 */
SC_API int sc_cluster_follower_start(sc_store *store,
				     const sc_cluster_follower_options *opt,
				     sc_cluster_follower **out, sc_error *err);

/*
 * sc_cluster_follower_wait - block until the node reached stream sequence
 * `seq` (applied it, or passed it over as another partition's), for at
 * most timeout_ms milliseconds (< 0: no limit). A reader that wants to see
 * a write waits for the sequence sc_cluster_publish returned, then reads
 * the cache. Woken by the follower after each message; no polling. Any
 * thread. Returns 0; ETIMEDOUT; or the error that stopped the follower
 * (err says why).
 */
SC_API int sc_cluster_follower_wait(sc_cluster_follower *f, uint64_t seq,
				    int64_t timeout_ms, sc_error *err);

/* The stream sequence the node reached (as sc_cluster_follower_wait
 * counts). Any thread. */
SC_API uint64_t sc_cluster_follower_sequence(sc_cluster_follower *f);

/* The error that stopped the follower's thread (0 while it runs); err
 * (may be NULL) gets its message. Any thread. */
SC_API int sc_cluster_follower_status(sc_cluster_follower *f, sc_error *err);

/* Stop the follower's thread, close its connection and free it. What was
 * applied stays applied. The store stays open. Threads blocked in
 * sc_cluster_follower_wait return SC_ESTATE ("stopped") before the
 * follower is freed; none may call it after stop began. NULL is a
 * no-op. */
SC_API void sc_cluster_follower_stop(sc_cluster_follower *f);

/* What a store saved as a node (from any process, running or not). */
typedef struct sc_cluster_node_state {
	/* Stream sequence of the last message applied (0: none). */
	uint64_t sequence;
	/* Messages the stream held after it when it was applied (the lag
	 * then, from the consumer's delivery count). */
	uint64_t pending;
	char stream[64]; /* the stream followed ("" if never) */
} sc_cluster_node_state;

/*
 * sc_cluster_node_state_get - read what `store` saved as a node, in one
 * read transaction. SC_NOTFOUND when the store never followed a stream.
 * Any thread. Errors: SC_ECORRUPT, SC_ELMDB.
 */
SC_API int sc_cluster_node_state_get(sc_store *store,
				     sc_cluster_node_state *out, sc_error *err);

#ifdef __cplusplus
}
#endif

#endif
