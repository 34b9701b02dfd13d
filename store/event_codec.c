/*
 * Event records: sc_event <-> protobuf statecache.v1.Event (event_codec.h).
 */
#include "store/event_codec.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "common/wire.h"

/* ---- validation ---------------------------------------------------------- */

static int validate_field(sc_str s, const char *what, sc_error *err)
{
	if (s.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "%s is %zu bytes, the limit is %d; shorten "
				    "it",
				    what, s.len, SC_EVENT_FIELD_MAX);
	if (s.len && !s.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "%s has length %zu but a NULL pointer",
				    what, s.len);
	return 0;
}

/* A string or bytes value within the log's limits. */
static int validate_stored_value(const sc_value *v, size_t i, sc_error *err)
{
	if (v->type != SC_VALUE_STRING && v->type != SC_VALUE_BYTES)
		return 0;
	if (v->u.s.len > SC_EVENT_VALUE_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "value of attribute %zu is %zu bytes, the "
				    "limit is %u",
				    i, v->u.s.len, SC_EVENT_VALUE_MAX);
	if (v->type == SC_VALUE_STRING && v->u.s.len &&
	    memchr(v->u.s.ptr, 0, v->u.s.len))
		return sc_error_set(err, SC_EINVAL,
				    "string value of attribute %zu contains a "
				    "NUL byte; use a bytes value for binary "
				    "data",
				    i);
	return 0;
}

/* Framing bytes of one attribute or tag, or of the event's own fields, are
 * under RECORD_OVERHEAD each: keys, length varints and a scalar value. */
#define RECORD_OVERHEAD 32

/* The log refuses to read a record over SC_EVENT_RECORD_MAX, so it must
 * not write one. `payload` counts the event's bytes; the exact size is
 * computed only when payload and framing could exceed the limit. */
static int validate_record_size(const sc_event *ev, size_t payload,
				sc_error *err)
{
	size_t bound = payload + RECORD_OVERHEAD * (ev->nattrs + ev->ntags + 8);
	if (bound <= SC_EVENT_RECORD_MAX)
		return 0;
	/* A time of 0 is stamped at append: count the 9 bytes it takes. */
	size_t size = sc_event_encoded_size(ev) + (ev->time ? 0 : 1 + 8);
	if (size <= SC_EVENT_RECORD_MAX)
		return 0;
	return sc_error_set(err, SC_EINVAL,
			    "the event takes %zu bytes encoded, the limit is "
			    "%u; split its attributes over several events",
			    size, SC_EVENT_RECORD_MAX);
}

/* sc_event_validate; `stored`: an event read back from the log, whose
 * string values may predate the UTF-8 rule (sc_entity_validate_stored). */
static int validate(const sc_event *ev, bool stored, sc_error *err)
{
	/* What an event means is the cache's to check, once. */
	int rc = stored ? sc_entity_validate_stored(ev, err)
			: sc_entity_validate_event(ev, err);
	if (rc)
		return rc;
	/* What the log can hold. */
	if (ev->nattrs > SC_EVENT_ATTRS_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "%zu attributes, the limit is %d",
				    ev->nattrs, SC_EVENT_ATTRS_MAX);
	if (ev->type == SC_EVENT_DELETE && ev->nattrs)
		return sc_error_set(err, SC_EINVAL,
				    "a `delete` event carries no attributes "
				    "(it has %zu)",
				    ev->nattrs);
	/* Bytes the record carries, for a cheap bound on its size. */
	size_t payload = ev->entity.len + ev->actor.len + ev->partition.len;
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_value *v = &ev->attrs[i].value;
		payload += ev->attrs[i].name.len;
		if (ev->type == SC_EVENT_UNSET)
			continue;
		rc = validate_stored_value(v, i, err);
		if (rc)
			return rc;
		if (v->type == SC_VALUE_STRING || v->type == SC_VALUE_BYTES)
			payload += v->u.s.len;
	}
	rc = validate_field(ev->actor, "actor", err);
	if (!rc)
		rc = validate_field(ev->partition, "partition", err);
	if (rc)
		return rc;
	if (ev->ntags > SC_EVENT_TAGS_MAX)
		return sc_error_set(err, SC_EINVAL, "%zu tags, the limit is %d",
				    ev->ntags, SC_EVENT_TAGS_MAX);
	if (ev->ntags && !ev->tags)
		return sc_error_set(err, SC_EINVAL,
				    "ntags is %zu but tags is NULL", ev->ntags);
	for (size_t i = 0; i < ev->ntags; i++) {
		rc = validate_field(ev->tags[i], "a tag", err);
		if (rc)
			return rc;
		payload += ev->tags[i].len;
	}
	return validate_record_size(ev, payload, err);
}

int sc_event_validate(const sc_event *ev, sc_error *err)
{
	return validate(ev, false, err);
}

/* ---- encoding ---------------------------------------------------------------
 *
 * A direct wire-format writer: the size is computed from the event, then
 * the bytes are written straight into the caller's buffer (the LMDB page
 * reserved for the record), with no message structs and no allocation.
 * The output is what protobuf-c writes for the same message: fields in
 * number order, proto3 defaults (empty bytes, type 0, time 0) left out,
 * a oneof member written whenever it is the set case.
 */

/* One-byte keys: (field << 3) | wire type. */
#define KEY(field, wire) ((uint8_t)((field) << 3 | (wire)))

/* A length-delimited field from an sc_str. */
static uint8_t *put_str(uint8_t *p, unsigned field, sc_str s)
{
	return sc_wire_put_len(p, KEY(field, SC_WIRE_LEN), s.ptr, s.len);
}

/* Bytes of one statecache.v1.Attr body; an unset's attributes carry no
 * value field at all. */
static size_t attr_size(const sc_attr *a, bool unset)
{
	size_t n = sc_wire_len_size(a->name.len);
	if (!unset) {
		size_t v = sc_wire_value_size(&a->value);
		n += 1 + sc_wire_varint_len(v) + v;
	}
	return n;
}

size_t sc_event_encoded_size(const sc_event *ev)
{
	bool unset = ev->type == SC_EVENT_UNSET;
	size_t n = 0;
	if (ev->entity.len)
		n += sc_wire_len_size(ev->entity.len);
	if (ev->type)
		n += 1 + sc_wire_varint_len((uint64_t)ev->type);
	for (size_t i = 0; i < ev->nattrs; i++) {
		size_t a = attr_size(&ev->attrs[i], unset);
		n += 1 + sc_wire_varint_len(a) + a;
	}
	if (ev->time)
		n += 1 + 8;
	if (ev->actor.len)
		n += sc_wire_len_size(ev->actor.len);
	if (ev->partition.len)
		n += sc_wire_len_size(ev->partition.len);
	for (size_t i = 0; i < ev->ntags; i++)
		n += sc_wire_len_size(ev->tags[i].len);
	return n;
}

uint8_t *sc_event_write(const sc_event *ev, uint8_t *out)
{
	bool unset = ev->type == SC_EVENT_UNSET;
	uint8_t *p = out;
	if (ev->entity.len)
		p = put_str(p, 1, ev->entity);
	if (ev->type) {
		*p++ = KEY(2, SC_WIRE_VARINT);
		p = sc_wire_put_varint(p, (uint64_t)ev->type);
	}
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_attr *a = &ev->attrs[i];
		size_t name = sc_wire_len_size(a->name.len);
		*p++ = KEY(3, SC_WIRE_LEN);
		if (unset) {
			p = sc_wire_put_varint(p, name);
			p = put_str(p, 1, a->name);
			continue;
		}
		/* attr_size, with the value's size computed once. */
		size_t v = sc_wire_value_size(&a->value);
		p = sc_wire_put_varint(p, name + 1 + sc_wire_varint_len(v) + v);
		p = put_str(p, 1, a->name);
		*p++ = KEY(2, SC_WIRE_LEN);
		p = sc_wire_put_varint(p, v);
		p = sc_wire_put_value(p, &a->value);
	}
	if (ev->time) {
		*p++ = KEY(4, SC_WIRE_I64);
		p = sc_wire_put_fixed64(p, (uint64_t)ev->time);
	}
	if (ev->actor.len)
		p = put_str(p, 5, ev->actor);
	if (ev->partition.len)
		p = put_str(p, 6, ev->partition);
	for (size_t i = 0; i < ev->ntags; i++)
		p = put_str(p, 7, ev->tags[i]);
	return p;
}

int sc_event_encode(const sc_event *ev, uint8_t **out, size_t *len,
		    sc_error *err)
{
	int rc = sc_event_validate(ev, err);
	if (rc)
		return rc;
	size_t size = sc_event_encoded_size(ev);
	uint8_t *buf = sc_malloc(size ? size : 1);
	if (!buf)
		return sc_error_set(err, ENOMEM,
				    "out of memory for a %zu-byte event record",
				    size);
	uint8_t *end = sc_event_write(ev, buf);
	SC_ENSURE((size_t)(end - buf) == size);
	(void)end;
	*out = buf;
	*len = size;
	return 0;
}

/* ---- decoding ---------------------------------------------------------------
 *
 * A direct wire-format reader instead of protobuf-c's unpack: replay
 * decodes every event of the log, and unpack's one allocation per message,
 * attribute and value dominated open. The decoded event points into the
 * caller's buffer; one allocation holds the attribute and tag arrays.
 *
 * Hostile input rules: every varint is at most 10 bytes, every length is
 * checked against the bytes left, groups (wire types 3 and 4) are
 * rejected, a known field with the wrong wire type is an error (as in
 * protobuf-c), unknown fields are skipped, a repeated scalar field keeps
 * the last value. Counts are capped before anything is allocated.
 */

/* A length-delimited field as an sc_str pointing into the input. */
static inline bool rd_bytes(sc_wire_rd *r, sc_str *out)
{
	sc_wire_rd sub;
	if (!sc_wire_rd_sub(r, &sub))
		return false;
	out->len = (size_t)(sub.end - sub.p);
	out->ptr = out->len ? (const char *)sub.p : "";
	return true;
}

static int corrupt(sc_error *err, uint64_t position, const char *what)
{
	return sc_error_set(err, SC_ECORRUPT,
			    "event record at position %llu is corrupt: %s; "
			    "restore the store from a backup or truncate the "
			    "log before it",
			    (unsigned long long)position, what);
}

static int too_big(sc_error *err, uint64_t position, size_t len)
{
	return sc_error_set(err, SC_ETOOBIG,
			    "event record at position %llu is %zu bytes, over "
			    "the %u-byte limit",
			    (unsigned long long)position, len,
			    SC_EVENT_RECORD_MAX);
}

/* statecache.v1.Value into *v; an empty message is null. */
static inline const char *decode_value(sc_str bytes, sc_value *v)
{
	sc_wire_rd r = {(const uint8_t *)bytes.ptr,
			(const uint8_t *)bytes.ptr + bytes.len};
	v->type = SC_VALUE_NULL;
	uint32_t f, wt;
	while (r.p < r.end) {
		if (!sc_wire_rd_key(&r, &f, &wt))
			return "malformed value field";
		uint64_t x;
		if (f >= 1 && f <= 5) {
			static const uint32_t want[6] = {0, 2, 0, 1, 0, 2};
			if (wt != want[f])
				return "value field with the wrong wire type";
		}
		switch (f) {
		case 1:
		case 5:
			if (!rd_bytes(&r, &v->u.s))
				return "truncated value";
			v->type = f == 1 ? SC_VALUE_STRING : SC_VALUE_BYTES;
			break;
		case 2:
			if (!sc_wire_rd_varint(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_INT;
			v->u.i = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
			break;
		case 3:
			if (!sc_wire_rd_fixed64(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_DOUBLE;
			memcpy(&v->u.d, &x, sizeof x);
			break;
		case 4:
			if (!sc_wire_rd_varint(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_BOOL;
			v->u.b = x != 0;
			break;
		default:
			if (!sc_wire_rd_skip(&r, wt))
				return "malformed unknown value field";
		}
	}
	return NULL;
}

/* statecache.v1.Attr into *a. */
static inline const char *decode_attr(sc_str bytes, sc_attr *a)
{
	const uint8_t *p = (const uint8_t *)bytes.ptr;
	/* What the encoder writes: the name, then the value, each with a
	 * one-byte length, and nothing else; the same as the loop below
	 * makes of it. */
	if (bytes.len >= 4 && p[0] == KEY(1, SC_WIRE_LEN) && p[1] < 0x80 &&
	    (size_t)p[1] + 4 <= bytes.len) {
		size_t n = p[1];
		const uint8_t *v = p + 2 + n;
		if (v[0] == KEY(2, SC_WIRE_LEN) && v[1] < 0x80 &&
		    (size_t)v[1] + 4 + n == bytes.len) {
			a->name = n ? (sc_str){(const char *)p + 2, n}
				    : (sc_str){"", 0};
			return decode_value(
			    (sc_str){v[1] ? (const char *)v + 2 : "", v[1]},
			    &a->value);
		}
	}
	sc_wire_rd r = {p, p + bytes.len};
	a->name = (sc_str){"", 0};
	a->value.type = SC_VALUE_NULL;
	uint32_t f, wt;
	while (r.p < r.end) {
		if (!sc_wire_rd_key(&r, &f, &wt))
			return "malformed attribute field";
		if ((f == 1 || f == 2) && wt != 2)
			return "attribute field with the wrong wire type";
		sc_str s = {"", 0};
		if (f == 1) {
			if (!rd_bytes(&r, &a->name))
				return "truncated attribute name";
		} else if (f == 2) {
			if (!rd_bytes(&r, &s))
				return "truncated attribute value";
			const char *why = decode_value(s, &a->value);
			if (why)
				return why;
		} else if (!sc_wire_rd_skip(&r, wt)) {
			return "malformed unknown attribute field";
		}
	}
	return NULL;
}

/*
 * Whether an event decode just built certainly passes validate(ev, true),
 * checked in one loop without calls. Decoding leaves only these rules
 * open: no pointer is NULL, every value has a known type and the counts
 * were capped in pass 1. When this is false, validate runs and names the
 * rule (the record-size bound may fail here and hold exactly there). The
 * fuzzer (fuzz/event_decode.c) checks every decoded event against
 * sc_event_validate, so a rule added there and not here is found.
 */
static bool decoded_valid(const sc_event *ev)
{
	if (ev->entity.len < 1 || ev->entity.len > SC_ENTITY_ID_MAX ||
	    ev->actor.len > SC_EVENT_FIELD_MAX ||
	    ev->partition.len > SC_EVENT_FIELD_MAX ||
	    (ev->type == SC_EVENT_DELETE && ev->nattrs))
		return false;
	size_t payload = ev->entity.len + ev->actor.len + ev->partition.len;
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_attr *a = &ev->attrs[i];
		if (a->name.len < 1 || a->name.len > SC_ATTR_NAME_MAX)
			return false;
		payload += a->name.len;
		if (ev->type == SC_EVENT_UNSET ||
		    (a->value.type != SC_VALUE_STRING &&
		     a->value.type != SC_VALUE_BYTES))
			continue;
		size_t n = a->value.u.s.len;
		if (n > SC_EVENT_VALUE_MAX)
			return false;
		if (a->value.type == SC_VALUE_STRING && n &&
		    memchr(a->value.u.s.ptr, 0, n))
			return false;
		payload += n;
	}
	for (size_t i = 0; i < ev->ntags; i++) {
		if (ev->tags[i].len > SC_EVENT_FIELD_MAX)
			return false;
		payload += ev->tags[i].len;
	}
	return payload + RECORD_OVERHEAD * (ev->nattrs + ev->ntags + 8) <=
	       SC_EVENT_RECORD_MAX;
}

/* sc_event_decode into *ev, its attribute and tag arrays from `a` when
 * it is not NULL, else from one sc_malloc (*own, freed by the caller;
 * NULL when the event has neither). */
static int decode(const void *buf, size_t len, uint64_t position,
		  sc_decode_arena *a, sc_event *ev, sc_attr **own,
		  sc_error *err)
{
	memset(ev, 0, sizeof *ev);
	*own = NULL;
	if (len > SC_EVENT_RECORD_MAX)
		return too_big(err, position, len);
	const uint8_t *start = len ? buf : (const uint8_t *)"";
	/* Pass 1: structure and counts, nothing allocated. */
	static const uint32_t want[8] = {0, 2, 0, 2, 1, 2, 2, 2};
	size_t nattrs = 0, ntags = 0;
	sc_wire_rd r = {start, start + len};
	uint32_t f = 0, wt = 0;
	while (r.p < r.end) {
		if (!sc_wire_rd_key(&r, &f, &wt))
			return corrupt(err, position, "malformed field key");
		if (f < 8 && wt != want[f])
			return corrupt(err, position,
				       "field with the wrong wire type");
		if (!sc_wire_rd_skip(&r, wt))
			return corrupt(err, position, "truncated field");
		if (f == 3 && ++nattrs > SC_EVENT_ATTRS_MAX)
			return corrupt(err, position, "too many attributes");
		if (f == 7 && ++ntags > SC_EVENT_TAGS_MAX)
			return corrupt(err, position, "too many tags");
	}
	sc_attr *attrs = NULL;
	sc_str *tags = NULL;
	if (nattrs || ntags) {
		size_t n = nattrs * sizeof(sc_attr) + ntags * sizeof(sc_str);
		attrs = a ? sc_decode_arena_alloc(a, n) : sc_malloc(n);
		if (!attrs)
			return sc_error_set(err, ENOMEM,
					    "out of memory decoding the event "
					    "at position %llu",
					    (unsigned long long)position);
		tags = (sc_str *)(attrs + nattrs);
		if (!a)
			*own = attrs;
	}
	/* Pass 2: the values. */
	ev->position = position;
	ev->entity = ev->actor = ev->partition = (sc_str){"", 0};
	uint64_t type = 0, x = 0;
	size_t ia = 0, it = 0;
	const char *why = NULL;
	r = (sc_wire_rd){start, start + len};
	/* The fields in the order the encoder writes them, each with a key
	 * of one byte, as the loop below reads them; the loop reads what
	 * follows (and every other layout). */
	if (r.p < r.end && *r.p == KEY(1, SC_WIRE_LEN)) {
		r.p++;
		rd_bytes(&r, &ev->entity);
	}
	if (r.p < r.end && *r.p == KEY(2, SC_WIRE_VARINT)) {
		r.p++;
		sc_wire_rd_varint(&r, &type);
	}
	while (!why && r.p < r.end && *r.p == KEY(3, SC_WIRE_LEN)) {
		sc_str s;
		r.p++;
		rd_bytes(&r, &s);
		why = decode_attr(s, &attrs[ia++]);
	}
	if (!why && r.p < r.end && *r.p == KEY(4, SC_WIRE_I64)) {
		r.p++;
		sc_wire_rd_fixed64(&r, &x);
		ev->time = (int64_t)x;
	}
	if (!why && r.p < r.end && *r.p == KEY(5, SC_WIRE_LEN)) {
		r.p++;
		rd_bytes(&r, &ev->actor);
	}
	if (!why && r.p < r.end && *r.p == KEY(6, SC_WIRE_LEN)) {
		r.p++;
		rd_bytes(&r, &ev->partition);
	}
	while (!why && r.p < r.end && *r.p == KEY(7, SC_WIRE_LEN)) {
		r.p++;
		rd_bytes(&r, &tags[it++]);
	}
	while (!why && r.p < r.end) {
		sc_wire_rd_key(&r, &f, &wt); /* checked in pass 1 */
		sc_str s = {"", 0};
		switch (f) {
		case 1:
			rd_bytes(&r, &ev->entity);
			break;
		case 2:
			sc_wire_rd_varint(&r, &type);
			break;
		case 3:
			rd_bytes(&r, &s);
			why = decode_attr(s, &attrs[ia++]);
			break;
		case 4:
			sc_wire_rd_fixed64(&r, &x);
			ev->time = (int64_t)x;
			break;
		case 5:
			rd_bytes(&r, &ev->actor);
			break;
		case 6:
			rd_bytes(&r, &ev->partition);
			break;
		case 7:
			rd_bytes(&r, &tags[it++]);
			break;
		default:
			sc_wire_rd_skip(&r, wt);
		}
	}
	if (!why && (type < SC_EVENT_SET || type > SC_EVENT_DELETE))
		why = "unknown event type";
	sc_error inner;
	if (!why) {
		ev->type = (sc_event_type)type;
		ev->attrs = nattrs ? attrs : NULL;
		ev->nattrs = nattrs;
		ev->tags = ntags ? tags : NULL;
		ev->ntags = ntags;
		if (ev->type == SC_EVENT_UNSET)
			for (size_t i = 0; i < nattrs; i++)
				attrs[i].value.type = SC_VALUE_NULL;
		if (decoded_valid(ev) || !validate(ev, true, &inner))
			return 0;
		why = inner.message;
	}
	sc_free(*own);
	*own = NULL;
	return corrupt(err, position, why);
}

int sc_event_decode(const void *buf, size_t len, uint64_t position,
		    sc_decoded_event *out, sc_error *err)
{
	memset(out, 0, sizeof *out);
	sc_attr *own;
	int rc = decode(buf, len, position, NULL, &out->ev, &own, err);
	if (rc) {
		memset(out, 0, sizeof *out);
		return rc;
	}
	out->attrs = own;
	out->tags = own ? (sc_str *)(own + out->ev.nattrs) : NULL;
	return 0;
}

int sc_event_decode_arena(const void *buf, size_t len, uint64_t position,
			  sc_decode_arena *a, sc_event *ev, sc_error *err)
{
	sc_attr *own;
	return decode(buf, len, position, a, ev, &own, err);
}

/* ---- the decode arena ---------------------------------------------------- */

/* A chunk of arena memory: its bytes follow the header. */
struct sc_decode_chunk {
	struct sc_decode_chunk *next;
	size_t size, used;
	max_align_t bytes[];
};

#define ARENA_CHUNK ((size_t)64 << 10)

void *sc_decode_arena_alloc(sc_decode_arena *a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	/* The chunks after the current one were used before the last
	 * reset: go on into them while they are too small. */
	struct sc_decode_chunk *c = a->cur;
	while (c && c->size - c->used < n) {
		c = c->next;
		if (c)
			c->used = 0;
	}
	if (!c) {
		size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		c = sc_malloc(sizeof *c + size);
		if (!c)
			return NULL;
		c->size = size;
		c->used = 0;
		/* After the current chunk, ahead of those still unused. */
		if (a->cur) {
			c->next = a->cur->next;
			a->cur->next = c;
		} else {
			c->next = a->first;
			a->first = c;
		}
	}
	a->cur = c;
	void *p = (char *)c->bytes + c->used;
	c->used += n;
	return p;
}

void sc_decode_arena_reset(sc_decode_arena *a)
{
	a->cur = a->first;
	if (a->cur)
		a->cur->used = 0;
}

void sc_decode_arena_free(sc_decode_arena *a)
{
	while (a->first) {
		struct sc_decode_chunk *c = a->first;
		a->first = c->next;
		sc_free(c);
	}
	a->cur = NULL;
}

int sc_event_peek_key(const void *buf, size_t len, uint64_t position,
		      sc_str *partition, sc_str *id, sc_error *err)
{
	if (len > SC_EVENT_RECORD_MAX)
		return too_big(err, position, len);
	const uint8_t *start = len ? buf : (const uint8_t *)"";
	sc_wire_rd r = {start, start + len};
	uint32_t f = 0, wt = 0;
	*id = *partition = (sc_str){"", 0};
	while (r.p < r.end) {
		if (!sc_wire_rd_key(&r, &f, &wt))
			return corrupt(err, position, "malformed field key");
		bool want = f == 1 || f == 6;
		if (want && wt != 2)
			return corrupt(err, position,
				       "field with the wrong wire type");
		if (!(want ? rd_bytes(&r, f == 1 ? id : partition)
			   : sc_wire_rd_skip(&r, wt)))
			return corrupt(err, position, "truncated field");
	}
	if (id->len < 1 || id->len > SC_ENTITY_ID_MAX)
		return corrupt(err, position, "entity id out of limits");
	if (partition->len > SC_EVENT_FIELD_MAX)
		return corrupt(err, position, "partition out of limits");
	return 0;
}

int sc_event_peek_tag(const void *buf, size_t len, uint64_t position,
		      sc_str tag, bool *has, sc_error *err)
{
	*has = false;
	if (len > SC_EVENT_RECORD_MAX)
		return too_big(err, position, len);
	const uint8_t *start = len ? buf : (const uint8_t *)"";
	static const uint32_t want[8] = {0, 2, 0, 2, 1, 2, 2, 2};
	sc_wire_rd r = {start, start + len};
	uint32_t f = 0, wt = 0;
	size_t ntags = 0;
	while (r.p < r.end) {
		if (!sc_wire_rd_key(&r, &f, &wt))
			return corrupt(err, position, "malformed field key");
		if (f < 8 && wt != want[f])
			return corrupt(err, position,
				       "field with the wrong wire type");
		if (f != 7) {
			if (!sc_wire_rd_skip(&r, wt))
				return corrupt(err, position,
					       "truncated field");
			continue;
		}
		sc_str t;
		if (!rd_bytes(&r, &t))
			return corrupt(err, position, "truncated field");
		if (++ntags > SC_EVENT_TAGS_MAX)
			return corrupt(err, position, "too many tags");
		if (t.len > SC_EVENT_FIELD_MAX)
			return corrupt(err, position, "tag out of limits");
		if (t.len == tag.len && t.len &&
		    memcmp(t.ptr, tag.ptr, t.len) == 0)
			*has = true;
	}
	return 0;
}

int sc_event_peek_entity(const void *buf, size_t len, uint64_t position,
			 sc_str *id, sc_error *err)
{
	sc_str partition;
	return sc_event_peek_key(buf, len, position, &partition, id, err);
}

void sc_decoded_event_free(sc_decoded_event *d)
{
	if (!d)
		return;
	sc_free(d->attrs);
	memset(d, 0, sizeof *d);
}
