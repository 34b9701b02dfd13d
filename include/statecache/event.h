/*
 * statecache: events and attribute values, as the caller builds them.
 *
 * These are plain borrowed views: every pointer belongs to the caller and
 * only has to stay valid for the duration of the call it is passed to. The
 * library copies what it keeps.
 */
#ifndef STATECACHE_EVENT_H
#define STATECACHE_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/api.h"
#include "statecache/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits enforced on every event (sc_event_validate). Sizes are in bytes. */
#define SC_ENTITY_ID_MAX    1024	/* an entity id: 1..1024 bytes */
#define SC_ATTR_NAME_MAX    255		/* an attribute name: 1..255 bytes */
#define SC_EVENT_ATTRS_MAX  65536	/* attributes of one event */
#define SC_EVENT_TAGS_MAX   1024	/* tags of one event */
#define SC_EVENT_FIELD_MAX  4096	/* the actor, the partition, a tag */
#define SC_EVENT_VALUE_MAX  (16u << 20) /* one string or bytes value */
#define SC_EVENT_RECORD_MAX (64u << 20) /* the event encoded in the log */

/* A byte string: `len` bytes at `ptr` (not NUL-terminated in general). */
typedef struct sc_str {
	const char *ptr;
	size_t len;
} sc_str;

typedef enum sc_value_type {
	SC_VALUE_NULL = 0, /* in a `set`: remove the attribute */
	SC_VALUE_STRING = 1,
	SC_VALUE_INT = 2,
	SC_VALUE_DOUBLE = 3,
	SC_VALUE_BOOL = 4,
	SC_VALUE_BYTES = 5,
} sc_value_type;

typedef struct sc_value {
	sc_value_type type;
	union {
		int64_t i;
		double d;
		bool b;
		sc_str s; /* SC_VALUE_STRING and SC_VALUE_BYTES */
	} u;
} sc_value;

typedef struct sc_attr {
	sc_str name;
	sc_value value; /* ignored for `unset` */
} sc_attr;

typedef enum sc_event_type {
	SC_EVENT_SET = 1,     /* merge attrs; a null value removes that key */
	SC_EVENT_UNSET = 2,   /* remove the named attrs */
	SC_EVENT_REPLACE = 3, /* attrs become exactly these */
	SC_EVENT_DELETE = 4,  /* the entity is gone */
} sc_event_type;

typedef struct sc_event {
	uint64_t position; /* assigned by the store; 0 when not yet appended */
	sc_str entity;	   /* 1..SC_ENTITY_ID_MAX bytes */
	sc_event_type type;
	const sc_attr *attrs; /* set/replace: name and value; unset: names */
	size_t nattrs;
	int64_t time; /* unix nanoseconds; 0: stamped at append */
	sc_str actor; /* may be empty */
	sc_str partition;
	const sc_str *tags;
	size_t ntags;
} sc_event;

/* True when two values have the same type and contents. Doubles compare
 * by bit pattern, so a NaN equals itself and 0.0 differs from -0.0. */
SC_API bool sc_value_equal(const sc_value *a, const sc_value *b);

/* The name of an event type ("set", ...), or NULL for an unknown value. */
SC_API const char *sc_event_type_name(sc_event_type type);

/*
 * sc_event_validate - check `ev` against every rule the store holds an
 * event to: sc_store_append refuses a batch exactly when this refuses one
 * of its events, so a caller can check an event before it joins a batch
 * (the position and the time are not checked: the store assigns the one
 * and stamps the other when it is 0). An event is valid when:
 *
 * - `ev` is not NULL and `type` is one of sc_event_type;
 * - the entity id is 1..SC_ENTITY_ID_MAX bytes;
 * - a `delete` has no attributes; other types have at most
 *   SC_EVENT_ATTRS_MAX, each with a name of 1..SC_ATTR_NAME_MAX bytes;
 * - in a `set` or a `replace` every value has a known sc_value_type (null
 *   allowed), and a string or bytes value is at most SC_EVENT_VALUE_MAX
 *   bytes; a string value holds no NUL byte (use a bytes value for binary
 *   data); an `unset` names attributes only, its values are ignored;
 * - the actor and the partition are at most SC_EVENT_FIELD_MAX bytes each;
 *   there are at most SC_EVENT_TAGS_MAX tags of at most SC_EVENT_FIELD_MAX
 *   bytes each;
 * - the whole event encoded for the log is at most SC_EVENT_RECORD_MAX
 *   bytes;
 * - no pointer is NULL where its length or count is not 0.
 *
 * Pure: reads `ev` only, allocates nothing. Thread-safe.
 * Returns SC_OK, or SC_EINVAL with a message in `err` (may be NULL) naming
 * the field and the limit.
 */
SC_API int sc_event_validate(const sc_event *ev, sc_error *err);

#ifdef __cplusplus
}
#endif

#endif
