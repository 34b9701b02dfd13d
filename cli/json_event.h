/*
 * statecache command: the JSON Lines event format.
 *
 * One event per line, one JSON object per event:
 *
 *   {"entity":"user-1","type":"set","attrs":{"name":"Ann","age":31},
 *    "actor":"svc-a","time":"2026-11-23T10:00:00Z","partition":"eu",
 *    "tags":["signup"]}
 *
 * Fields (anything else is an error, and so is a duplicate key):
 *   entity     string, 1..1024 bytes (required)
 *   type       "set" | "unset" | "replace" | "delete" (required)
 *   attrs      set/replace: object name -> value (required; a null value in
 *              a set removes that key, null is invalid in a replace);
 *              unset: array of names (required); delete: must be absent.
 *              Names are 1..255 bytes.
 *   actor      string (optional)
 *   time       RFC 3339 string (optional; the store stamps absent times).
 *              The unix epoch itself (1970-01-01T00:00:00Z) is time 0, which
 *              the store treats as absent.
 *   partition  string (optional)
 *   tags       array of strings (optional)
 *   position   non-negative integer (optional, ignored: the store assigns
 *              positions; accepted so that `events` output can be ingested)
 *
 * Values: JSON string -> string; a number without fraction or exponent ->
 * int64 (a literal outside the int64 range is an error, never silently a
 * double: write it with a fraction or exponent to get a double); any other
 * number -> double; true/false -> bool; {"$bytes":"<base64>"} -> bytes.
 * Arrays and other objects are errors. Strings must be valid UTF-8 (so ids
 * and names from JSON are always UTF-8); \u0000 is allowed in values and ids
 * but not in attribute names (a JSON parser limit).
 *
 * A line is at most SC_CLI_LINE_MAX bytes; longer lines are an error.
 */
#ifndef STATECACHE_CLI_JSON_EVENT_H
#define STATECACHE_CLI_JSON_EVENT_H

#include <stdbool.h>
#include <stddef.h>

#include "cli/buf.h"
#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

/* The longest accepted input line, in bytes, newline excluded. */
#define SC_CLI_LINE_MAX (1u << 20)

/*
 * A decoded event and the memory its pointers refer to. `ev` is valid until
 * the next decode into the same object or sc_cli_event_clear.
 */
typedef struct sc_cli_event {
	sc_event ev;
	void *root; /* the parsed JSON document (json_t *), or NULL */
	char *text; /* a copy of the line, when the fast path decoded it */
	size_t text_cap;
	sc_attr *attrs;
	size_t attrs_cap;
	sc_str *tags;
	size_t tags_cap;
	char *bytes; /* decoded $bytes values */
	size_t bytes_cap;
} sc_cli_event;

void sc_cli_event_init(sc_cli_event *e);
/* Free everything the object holds; it may be reused after init. */
void sc_cli_event_clear(sc_cli_event *e);

/*
 * sc_cli_event_decode - parse one line (`n` bytes, no newline needed) into
 * `e`. On failure returns SC_EINVAL (bad input; the message says what and
 * where: "column 12: ...", "attrs.age: ...") or ENOMEM, and `e` holds no
 * event (e->ev.entity.len == 0).
 */
int sc_cli_event_decode(sc_cli_event *e, const char *line, size_t n,
			sc_error *err);

/*
 * The two decoders behind sc_cli_event_decode (exposed for the tests that
 * compare them): sc_cli_event_decode_fast decodes the plain lines (no
 * escapes, no duplicates, no error) by hand and returns 1, holding no
 * event, for any other line, which it leaves to jansson; ENOMEM on an
 * allocation failure. sc_cli_event_decode_jansson decodes any line with
 * jansson, as sc_cli_event_decode describes. A line both accept decodes to
 * the same event.
 */
int sc_cli_event_decode_fast(sc_cli_event *e, const char *line, size_t n,
			     sc_error *err);
int sc_cli_event_decode_jansson(sc_cli_event *e, const char *line, size_t n,
				sc_error *err);

/*
 * sc_cli_event_encode - append `ev` as one JSON object (no newline) to `b`.
 * With `with_position` the object starts with "position". Attributes of a
 * set/replace are written sorted by name (bytewise); actor, partition and
 * time are omitted when empty/zero, tags when there are none. Returns 0 or
 * ENOMEM.
 */
int sc_cli_event_encode(sc_cli_buf *b, const sc_event *ev, bool with_position);

/*
 * sc_cli_entity_encode - append an entity state as one JSON object (no
 * newline): {"id":...,"attrs":{...},"updated_at":"<RFC 3339 UTC>",
 * "updated_by":...,"position":N}, attributes sorted by name. 0 or ENOMEM.
 * (cli/entity_json.c; needs the cache layer.)
 */
int sc_cli_entity_encode(sc_cli_buf *b, const sc_entity *e);

#endif
