/*
 * statecache: error codes and error reports.
 *
 * Every fallible function returns an int: 0 (SC_OK) on success, otherwise an
 * error code. Library errors are negative numbers in the range
 * [SC_ERROR_LAST, SC_ERROR_FIRST]; operating-system errors are positive errno
 * values (ENOMEM, EIO, ENOSPC, EACCES, ...). One space, as in LMDB: any code
 * can be passed to sc_strerror().
 *
 * Functions that can fail for a reason worth naming also take an optional
 * `sc_error *err` (may be NULL). On failure they fill it with the code and a
 * message that says what went wrong and what to do about it. There is no
 * global or thread-local error state.
 */
#ifndef STATECACHE_ERROR_H
#define STATECACHE_ERROR_H

#include "statecache/api.h"

#ifdef __cplusplus
extern "C" {
#endif

enum sc_code {
	SC_OK = 0,
	/* The requested key, entity, position or snapshot does not exist. */
	SC_NOTFOUND = -30600,
	/* An argument or an event is invalid (empty id, over-long name, unknown
	 * event type, bad value type). Nothing was changed. */
	SC_EINVAL = -30601,
	/* Stored or received bytes failed to decode or verify (bad checksum,
	 * truncated, malformed). Nothing was changed. */
	SC_ECORRUPT = -30602,
	/* Stored data has a format version this build cannot read. */
	SC_EVERSION = -30603,
	/* A size limit was exceeded (key, value, batch, decompressed size). */
	SC_ETOOBIG = -30604,
	/* The store reached its configured maximum map size. */
	SC_EMAPFULL = -30605,
	/* A projector's apply callback failed; the append was rolled back. */
	SC_EPROJECTOR = -30606,
	/* The call is not valid in the object's current state (for example a
	 * second edit while one is open, or promote with nothing pending). */
	SC_ESTATE = -30607,
	/* An LMDB call failed for a reason not covered above; the message
	 * carries LMDB's own text. */
	SC_ELMDB = -30608,
	/* Every reader slot is taken. */
	SC_EREADERS = -30609,
	/* A previous allocation failure left an edit unusable; only abort or
	 * discard is valid. */
	SC_EPOISONED = -30610,
	/* A watcher fell so far behind that the versions it holds back
	 * exceed its limit; it delivers nothing more: close it and open a
	 * new one with the initial state. */
	SC_ERESYNC = -30611,
	/* An optimistic-concurrency condition failed: the partition's last
	 * stream sequence is not the one expected (cluster.h). Nothing was
	 * stored; read again and decide again. */
	SC_ECONFLICT = -30612,
	/* A node is behind the stream's retention: messages after its saved
	 * sequence are gone (cluster.h). Nothing was skipped; bootstrap the
	 * node from a newer copy of another node's store. */
	SC_EBEHIND = -30613,
	/* A NATS or JetStream call failed (no connection, no ack, refused);
	 * the message carries the client's or the server's text. */
	SC_ENATS = -30614,
	SC_ERROR_FIRST = SC_NOTFOUND,
	SC_ERROR_LAST = SC_ENATS,
};

/* Capacity of sc_error.message, terminating NUL included. */
#define SC_ERROR_MESSAGE_MAX 256

/* A filled-in error report. `code` is one of the codes above or an errno
 * value; `message` is a NUL-terminated sentence naming the cause. */
typedef struct sc_error {
	int code;
	char message[SC_ERROR_MESSAGE_MAX];
} sc_error;

/*
 * sc_strerror - a short static description of `code`.
 *
 * Works for library codes and errno values. Never returns NULL. The string
 * is static and must not be freed. Thread-safe.
 */
SC_API const char *sc_strerror(int code);

/*
 * sc_error_clear - reset `err` to SC_OK with an empty message.
 *
 * `err` may be NULL. Thread-safe for distinct `err` objects.
 */
SC_API void sc_error_clear(sc_error *err);

#ifdef __cplusplus
}
#endif

#endif
