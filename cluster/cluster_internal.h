/*
 * cluster/: the publisher and the follower of a NATS JetStream stream
 * (include/statecache/cluster.h). Private to this folder.
 *
 * Files: batch.c (the Batch message: encoding and hostile decoding),
 * connect.c (connections, stream creation, subject tokens, errors),
 * publisher.c, follower.c.
 */
#ifndef STATECACHE_CLUSTER_INTERNAL_H
#define STATECACHE_CLUSTER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "statecache/cluster.h"
#include "store/event_codec.h"

/* Longest stream name accepted (NATS allows more; a node stores it). */
#define SC_CLUSTER_STREAM_MAX 63

/* The stream name of `opt` (the default when NULL), checked: 1..63 bytes
 * of letters, digits, '-' and '_'. NULL (err set) when invalid. */
const char *sc_cluster_stream_name(const sc_cluster_options *opt,
				   sc_error *err);

/* Connect to opt->url with reconnection to every listed server forever
 * (100 ms apart) and a JetStream context with opt->timeout_ms. */
int sc_cluster_connect(const sc_cluster_options *opt, natsConnection **nc,
		       jsCtx **js, sc_error *err);

/* SC_ENATS with "WHAT: the client's text (jerr N)". */
int sc_cluster_nats_error(sc_error *err, const char *what, natsStatus s,
			  jsErrCode jerr);

/* ---- batches (batch.c) ----------------------------------------------------
 */

/* Bytes of the Batch holding events[0..n) (already validated). */
size_t sc_cluster_batch_size(const sc_event *events, size_t n);

/* Write that encoding to `out` (sc_cluster_batch_size bytes). */
void sc_cluster_batch_write(const sc_event *events, size_t n, uint8_t *out);

/* A decoded batch: events point into the message's bytes. */
typedef struct sc_cluster_batch {
	sc_decoded_event *decoded;
	sc_event *events; /* copies of decoded[i].ev */
	size_t n;
} sc_cluster_batch;

/*
 * Decode `len` bytes of a Batch: at least one event, each decoded with the
 * store's hostile decoder (sc_event_decode), nothing but field 1.
 * Errors: SC_ECORRUPT (the message says what and at which event), ENOMEM.
 * On failure *out holds nothing to free.
 */
int sc_cluster_batch_decode(const void *buf, size_t len, sc_cluster_batch *out,
			    sc_error *err);
void sc_cluster_batch_free(sc_cluster_batch *b);

#endif
