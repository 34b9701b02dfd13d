/*
 * Event records: sc_event <-> protobuf statecache.v1.Event bytes.
 *
 * The event log stores one Event message per position (the position is the
 * record's key, not part of the message). The decoder treats its input as
 * hostile: the record length is capped, every limit of event.h is checked
 * after unpacking, and unknown event types or value kinds are rejected, so
 * a decoded event always passes sc_event_validate() (event.h).
 *
 * Strings are protobuf `string` fields, which protobuf-c and most readers
 * represent as NUL-terminated C strings; a string value may therefore not
 * contain a NUL byte (use a bytes value for binary data).
 * sc_event_validate() rejects it.
 *
 * Encoding and decoding read and write the wire format directly (see
 * event_codec.c); the output is what protobuf-c writes. Every allocation
 * goes through sc_malloc/sc_free, so allocation-failure injection reaches
 * the codec.
 */
#ifndef STATECACHE_STORE_EVENT_CODEC_H
#define STATECACHE_STORE_EVENT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/error.h"
#include "statecache/event.h"

/* Bytes of the protobuf encoding of `ev` (already validated). */
size_t sc_event_encoded_size(const sc_event *ev);

/* Write that encoding to `out` (room for sc_event_encoded_size bytes);
 * returns the end of what it wrote. The bytes are those protobuf-c packs
 * for the same message. */
uint8_t *sc_event_write(const sc_event *ev, uint8_t *out);

/*
 * sc_event_encode - validate and encode `ev` into a new buffer (*out, freed
 * with sc_free). Errors: SC_EINVAL, ENOMEM.
 */
int sc_event_encode(const sc_event *ev, uint8_t **out, size_t *len,
		    sc_error *err);

/*
 * A decoded event: `ev` points into the decoded record's bytes (which must
 * outlive it) and into arrays owned by this object. Valid until
 * sc_decoded_event_free().
 */
typedef struct sc_decoded_event {
	sc_event ev;
	sc_attr *attrs; /* one allocation: attrs, then tags */
	sc_str *tags;
} sc_decoded_event;

/*
 * sc_event_decode - decode `len` bytes into *out, with `position` as the
 * event's position. The event borrows `buf`: keep it alive and unchanged
 * while *out is used. On success *out must be freed with
 * sc_decoded_event_free(); on failure *out holds nothing to free.
 * Every check of sc_event_validate holds but the UTF-8 one of string
 * values: a store written before that rule may hold others, and what was
 * committed stays readable.
 * Errors: SC_ECORRUPT (malformed or out of limits; the message says which),
 * SC_ETOOBIG (len > SC_EVENT_RECORD_MAX), ENOMEM.
 */
int sc_event_decode(const void *buf, size_t len, uint64_t position,
		    sc_decoded_event *out, sc_error *err);

/*
 * A decode arena: the attribute and tag arrays of events decoded by
 * sc_event_decode_arena, in chunks that never move, so every event decoded
 * since the last reset stays valid. Zero-initialise it; one thread at a
 * time.
 */
typedef struct sc_decode_arena {
	struct sc_decode_chunk *first, *cur;
} sc_decode_arena;

/*
 * sc_event_decode_arena - sc_event_decode into *ev, whose arrays come from
 * `a` (valid until sc_decode_arena_reset or _free of it) instead of an
 * allocation of their own: nothing to free per event. The same checks and
 * errors as sc_event_decode; on failure *ev is not an event, and what it
 * took from the arena is returned at the next reset.
 */
int sc_event_decode_arena(const void *buf, size_t len, uint64_t position,
			  sc_decode_arena *a, sc_event *ev, sc_error *err);

/* `n` bytes aligned for any type from `a`, or NULL when out of memory. */
void *sc_decode_arena_alloc(sc_decode_arena *a, size_t n);

/* Reuse the arena's memory: everything decoded into it is invalid. */
void sc_decode_arena_reset(sc_decode_arena *a);

/* Free the arena's memory; it is empty (and usable) again. */
void sc_decode_arena_free(sc_decode_arena *a);

/*
 * sc_event_peek_entity - the entity id of an encoded event, without
 * decoding the rest: *id points into `buf`. Checks the record's framing
 * and the id's length only; sc_event_decode checks everything.
 * Errors: SC_ECORRUPT, SC_ETOOBIG (as sc_event_decode).
 */
int sc_event_peek_entity(const void *buf, size_t len, uint64_t position,
			 sc_str *id, sc_error *err);

/*
 * sc_event_peek_key - sc_event_peek_entity that also gives the event's
 * partition (empty for the default one; points into `buf`), checked to be
 * at most SC_EVENT_FIELD_MAX bytes: the two name the entity.
 */
int sc_event_peek_key(const void *buf, size_t len, uint64_t position,
		      sc_str *partition, sc_str *id, sc_error *err);

/*
 * sc_event_peek_tag - whether an encoded event carries the tag `tag`
 * (*has), without decoding the rest. Checks the record's framing (every
 * field's key, wire type and length), the count of tags and each tag's
 * length only; sc_event_decode checks everything.
 * Errors: SC_ECORRUPT, SC_ETOOBIG (as sc_event_decode).
 */
int sc_event_peek_tag(const void *buf, size_t len, uint64_t position,
		      sc_str tag, bool *has, sc_error *err);

/* Free a decoded event. Zeroed or already freed objects are a no-op. */
void sc_decoded_event_free(sc_decoded_event *d);

#endif
