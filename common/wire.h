/*
 * Protobuf wire format: the primitives the event codec (store/) and the
 * snapshot chunk codec (snapshot/) read and write directly, without
 * protobuf-c's message structs. Not installed.
 *
 * Writers assume the caller sized the buffer (sc_wire_varint_len and the
 * field sizes). Readers treat their input as hostile: every read checks
 * the bytes left, a varint is at most 10 bytes and 64 bits.
 */
#ifndef STATECACHE_COMMON_WIRE_H
#define STATECACHE_COMMON_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "statecache/event.h"

/* Wire types. */
enum { SC_WIRE_VARINT = 0, SC_WIRE_I64 = 1, SC_WIRE_LEN = 2, SC_WIRE_I32 = 5 };

/* ---- writing ------------------------------------------------------------- */

static inline size_t sc_wire_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline uint8_t *sc_wire_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Little-endian, as protobuf's fixed64, sfixed64 and double. */
static inline uint8_t *sc_wire_put_fixed64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, 8); /* one store */
#else
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
#endif
	return p + 8;
}

/* Key (one byte: field numbers below 16), length and bytes of a
 * length-delimited field. */
static inline uint8_t *sc_wire_put_len(uint8_t *p, uint8_t key, const void *b,
				       size_t n)
{
	*p++ = key;
	p = sc_wire_put_varint(p, n);
	if (n)
		memcpy(p, b, n);
	return p + n;
}

/* Bytes of a length-delimited field with a one-byte key. */
static inline size_t sc_wire_len_size(size_t payload)
{
	return 1 + sc_wire_varint_len(payload) + payload;
}

/* sint64 encoding. */
static inline uint64_t sc_wire_zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

static inline uint64_t sc_wire_double_bits(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof u);
	return u;
}

/* The body of a statecache.v1.Value (events and snapshot chunks share the
 * message): bytes, then the writer. Null is the empty message. */
static inline size_t sc_wire_value_size(const sc_value *v)
{
	switch (v->type) {
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		return sc_wire_len_size(v->u.s.len);
	case SC_VALUE_INT:
		return 1 + sc_wire_varint_len(sc_wire_zigzag(v->u.i));
	case SC_VALUE_DOUBLE:
		return 1 + 8;
	case SC_VALUE_BOOL:
		return 1 + 1;
	default:
		return 0;
	}
}

static inline uint8_t *sc_wire_put_value(uint8_t *p, const sc_value *v)
{
	switch (v->type) {
	case SC_VALUE_STRING: /* field 1 */
		return sc_wire_put_len(p, 1 << 3 | SC_WIRE_LEN, v->u.s.ptr,
				       v->u.s.len);
	case SC_VALUE_BYTES: /* field 5 */
		return sc_wire_put_len(p, 5 << 3 | SC_WIRE_LEN, v->u.s.ptr,
				       v->u.s.len);
	case SC_VALUE_INT: /* field 2, sint64 */
		*p++ = 2 << 3 | SC_WIRE_VARINT;
		return sc_wire_put_varint(p, sc_wire_zigzag(v->u.i));
	case SC_VALUE_DOUBLE: /* field 3 */
		*p++ = 3 << 3 | SC_WIRE_I64;
		return sc_wire_put_fixed64(p, sc_wire_double_bits(v->u.d));
	case SC_VALUE_BOOL: /* field 4 */
		*p++ = 4 << 3 | SC_WIRE_VARINT;
		*p++ = v->u.b ? 1 : 0;
		return p;
	default:
		return p;
	}
}

/* ---- reading ------------------------------------------------------------- */

typedef struct sc_wire_rd {
	const uint8_t *p, *end;
} sc_wire_rd;

static inline bool sc_wire_rd_varint(sc_wire_rd *r, uint64_t *out)
{
	/* Keys, lengths and small values: one byte. */
	if (r->p < r->end && *r->p < 0x80) {
		*out = *r->p++;
		return true;
	}
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (r->p == r->end)
			return false;
		uint8_t b = *r->p++;
		if (shift == 63 && b > 1)
			return false; /* over 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

static inline bool sc_wire_rd_fixed64(sc_wire_rd *r, uint64_t *out)
{
	if (r->end - r->p < 8)
		return false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t v;
	memcpy(&v, r->p, 8); /* one load */
#else
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | r->p[i];
#endif
	r->p += 8;
	*out = v;
	return true;
}

/* A length-delimited field's payload, as a sub-reader. */
static inline bool sc_wire_rd_sub(sc_wire_rd *r, sc_wire_rd *sub)
{
	uint64_t n;
	if (!sc_wire_rd_varint(r, &n) || n > (uint64_t)(r->end - r->p))
		return false;
	sub->p = r->p;
	sub->end = r->p + n;
	r->p += n;
	return true;
}

/* A field key; false at a malformed key or field number 0. */
static inline bool sc_wire_rd_key(sc_wire_rd *r, uint32_t *field,
				  uint32_t *wire)
{
	uint64_t k;
	if (!sc_wire_rd_varint(r, &k) || (k >> 3) == 0 || (k >> 3) > UINT32_MAX)
		return false;
	*field = (uint32_t)(k >> 3);
	*wire = (uint32_t)(k & 7);
	return true;
}

/* Skip a field's value; groups (3, 4) and unknown wire types fail. */
static inline bool sc_wire_rd_skip(sc_wire_rd *r, uint32_t wire)
{
	uint64_t v;
	sc_wire_rd sub;
	switch (wire) {
	case SC_WIRE_VARINT:
		return sc_wire_rd_varint(r, &v);
	case SC_WIRE_I64:
		return sc_wire_rd_fixed64(r, &v);
	case SC_WIRE_LEN:
		return sc_wire_rd_sub(r, &sub);
	case SC_WIRE_I32:
		if (r->end - r->p < 4)
			return false;
		r->p += 4;
		return true;
	}
	return false;
}

#endif
