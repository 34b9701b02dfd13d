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

#ifdef __cplusplus
extern "C" {
#endif

/* Limits enforced on every event. */
#define SC_ENTITY_ID_MAX 1024 /* bytes, ids are 1..1024 */
#define SC_ATTR_NAME_MAX 255  /* bytes, names are 1..255 */

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
bool sc_value_equal(const sc_value *a, const sc_value *b);

/* The name of an event type ("set", ...), or NULL for an unknown value. */
const char *sc_event_type_name(sc_event_type type);

#ifdef __cplusplus
}
#endif

#endif
