/*
 * Event records: sc_event <-> protobuf statecache.v1.Event (event_codec.h).
 */
#include "store/event_codec.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cache/entity.h"
#include "common/internal.h"

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

int sc_event_validate(const sc_event *ev, sc_error *err)
{
	/* What an event means is the cache's to check, once. */
	int rc = sc_entity_validate_event(ev, err);
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
	if (ev->type != SC_EVENT_UNSET)
		for (size_t i = 0; i < ev->nattrs; i++) {
			rc = validate_stored_value(&ev->attrs[i].value, i, err);
			if (rc)
				return rc;
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
	}
	return 0;
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

/* Wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Every field number here is below 16: a key is one byte. */
static uint8_t *put_key(uint8_t *p, unsigned field, unsigned wt)
{
	*p++ = (uint8_t)(field << 3 | wt);
	return p;
}

static uint8_t *put_fixed64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static size_t len_field_size(size_t n)
{
	return 1 + varint_len(n) + n;
}

static uint8_t *put_len_field(uint8_t *p, unsigned field, const char *b,
			      size_t n)
{
	p = put_key(p, field, WT_LEN);
	p = put_varint(p, n);
	if (n)
		memcpy(p, b, n);
	return p + n;
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

/* Bytes of the statecache.v1.Value body (0 for null: an empty message). */
static size_t value_size(const sc_value *v)
{
	switch (v->type) {
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		return len_field_size(v->u.s.len);
	case SC_VALUE_INT:
		return 1 + varint_len(zigzag(v->u.i));
	case SC_VALUE_DOUBLE:
		return 1 + 8;
	case SC_VALUE_BOOL:
		return 1 + 1;
	default:
		return 0;
	}
}

static uint8_t *put_value(uint8_t *p, const sc_value *v)
{
	uint64_t bits;
	switch (v->type) {
	case SC_VALUE_STRING:
		return put_len_field(p, 1, v->u.s.ptr, v->u.s.len);
	case SC_VALUE_INT:
		p = put_key(p, 2, WT_VARINT);
		return put_varint(p, zigzag(v->u.i));
	case SC_VALUE_DOUBLE:
		memcpy(&bits, &v->u.d, 8);
		p = put_key(p, 3, WT_I64);
		return put_fixed64(p, bits);
	case SC_VALUE_BOOL:
		p = put_key(p, 4, WT_VARINT);
		*p++ = v->u.b ? 1 : 0;
		return p;
	case SC_VALUE_BYTES:
		return put_len_field(p, 5, v->u.s.ptr, v->u.s.len);
	default:
		return p;
	}
}

/* Bytes of one statecache.v1.Attr body; an unset's attributes carry no
 * value field at all. */
static size_t attr_size(const sc_attr *a, bool unset)
{
	size_t n = len_field_size(a->name.len);
	if (!unset) {
		size_t v = value_size(&a->value);
		n += 1 + varint_len(v) + v;
	}
	return n;
}

size_t sc_event_encoded_size(const sc_event *ev)
{
	bool unset = ev->type == SC_EVENT_UNSET;
	size_t n = 0;
	if (ev->entity.len)
		n += len_field_size(ev->entity.len);
	if (ev->type)
		n += 1 + varint_len((uint64_t)ev->type);
	for (size_t i = 0; i < ev->nattrs; i++) {
		size_t a = attr_size(&ev->attrs[i], unset);
		n += 1 + varint_len(a) + a;
	}
	if (ev->time)
		n += 1 + 8;
	if (ev->actor.len)
		n += len_field_size(ev->actor.len);
	if (ev->partition.len)
		n += len_field_size(ev->partition.len);
	for (size_t i = 0; i < ev->ntags; i++)
		n += len_field_size(ev->tags[i].len);
	return n;
}

uint8_t *sc_event_write(const sc_event *ev, uint8_t *out)
{
	bool unset = ev->type == SC_EVENT_UNSET;
	uint8_t *p = out;
	if (ev->entity.len)
		p = put_len_field(p, 1, ev->entity.ptr, ev->entity.len);
	if (ev->type) {
		p = put_key(p, 2, WT_VARINT);
		p = put_varint(p, (uint64_t)ev->type);
	}
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_attr *a = &ev->attrs[i];
		p = put_key(p, 3, WT_LEN);
		p = put_varint(p, attr_size(a, unset));
		p = put_len_field(p, 1, a->name.ptr, a->name.len);
		if (unset)
			continue;
		p = put_key(p, 2, WT_LEN);
		p = put_varint(p, value_size(&a->value));
		p = put_value(p, &a->value);
	}
	if (ev->time) {
		p = put_key(p, 4, WT_I64);
		p = put_fixed64(p, (uint64_t)ev->time);
	}
	if (ev->actor.len)
		p = put_len_field(p, 5, ev->actor.ptr, ev->actor.len);
	if (ev->partition.len)
		p = put_len_field(p, 6, ev->partition.ptr, ev->partition.len);
	for (size_t i = 0; i < ev->ntags; i++)
		p = put_len_field(p, 7, ev->tags[i].ptr, ev->tags[i].len);
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
	SC_ENSURE((size_t)(sc_event_write(ev, buf) - buf) == size);
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

typedef struct rd {
	const uint8_t *p, *end;
} rd;

static bool rd_varint(rd *r, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (r->p == r->end)
			return false;
		uint8_t b = *r->p++;
		if (shift == 63 && b > 1)
			return false; /* more than 64 bits */
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

static bool rd_fixed64(rd *r, uint64_t *v)
{
	if (r->end - r->p < 8)
		return false;
	uint64_t x = 0;
	for (int i = 7; i >= 0; i--)
		x = (x << 8) | r->p[i];
	r->p += 8;
	*v = x;
	return true;
}

static bool rd_bytes(rd *r, sc_str *out)
{
	uint64_t n;
	if (!rd_varint(r, &n) || n > (uint64_t)(r->end - r->p))
		return false;
	out->ptr = n ? (const char *)r->p : "";
	out->len = (size_t)n;
	r->p += n;
	return true;
}

/* Read a field key; false at the end or on a malformed key. */
static bool rd_key(rd *r, uint32_t *field, uint32_t *wt)
{
	uint64_t k;
	if (!rd_varint(r, &k) || (k >> 3) == 0 || (k >> 3) > UINT32_MAX)
		return false;
	*field = (uint32_t)(k >> 3);
	*wt = (uint32_t)(k & 7);
	return true;
}

static bool rd_skip(rd *r, uint32_t wt)
{
	uint64_t v;
	sc_str s;
	switch (wt) {
	case 0:
		return rd_varint(r, &v);
	case 1:
		return rd_fixed64(r, &v);
	case 2:
		return rd_bytes(r, &s);
	case 5:
		if (r->end - r->p < 4)
			return false;
		r->p += 4;
		return true;
	default:
		return false; /* groups and reserved wire types */
	}
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
static const char *decode_value(sc_str bytes, sc_value *v)
{
	rd r = {(const uint8_t *)bytes.ptr,
		(const uint8_t *)bytes.ptr + bytes.len};
	v->type = SC_VALUE_NULL;
	uint32_t f, wt;
	while (r.p < r.end) {
		if (!rd_key(&r, &f, &wt))
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
			if (!rd_varint(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_INT;
			v->u.i = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
			break;
		case 3:
			if (!rd_fixed64(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_DOUBLE;
			memcpy(&v->u.d, &x, sizeof x);
			break;
		case 4:
			if (!rd_varint(&r, &x))
				return "truncated value";
			v->type = SC_VALUE_BOOL;
			v->u.b = x != 0;
			break;
		default:
			if (!rd_skip(&r, wt))
				return "malformed unknown value field";
		}
	}
	return NULL;
}

/* statecache.v1.Attr into *a. */
static const char *decode_attr(sc_str bytes, sc_attr *a)
{
	rd r = {(const uint8_t *)bytes.ptr,
		(const uint8_t *)bytes.ptr + bytes.len};
	a->name = (sc_str){"", 0};
	a->value.type = SC_VALUE_NULL;
	uint32_t f, wt;
	while (r.p < r.end) {
		if (!rd_key(&r, &f, &wt))
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
		} else if (!rd_skip(&r, wt)) {
			return "malformed unknown attribute field";
		}
	}
	return NULL;
}

int sc_event_decode(const void *buf, size_t len, uint64_t position,
		    sc_decoded_event *out, sc_error *err)
{
	memset(out, 0, sizeof *out);
	if (len > SC_EVENT_RECORD_MAX)
		return too_big(err, position, len);
	const uint8_t *start = len ? buf : (const uint8_t *)"";
	/* Pass 1: structure and counts, nothing allocated. */
	static const uint32_t want[8] = {0, 2, 0, 2, 1, 2, 2, 2};
	size_t nattrs = 0, ntags = 0;
	rd r = {start, start + len};
	uint32_t f = 0, wt = 0;
	while (r.p < r.end) {
		if (!rd_key(&r, &f, &wt))
			return corrupt(err, position, "malformed field key");
		if (f < 8 && wt != want[f])
			return corrupt(err, position,
				       "field with the wrong wire type");
		if (!rd_skip(&r, wt))
			return corrupt(err, position, "truncated field");
		if (f == 3 && ++nattrs > SC_EVENT_ATTRS_MAX)
			return corrupt(err, position, "too many attributes");
		if (f == 7 && ++ntags > SC_EVENT_TAGS_MAX)
			return corrupt(err, position, "too many tags");
	}
	if (nattrs || ntags) {
		out->attrs = sc_malloc(nattrs * sizeof(sc_attr) +
				       ntags * sizeof(sc_str));
		if (!out->attrs)
			return sc_error_set(err, ENOMEM,
					    "out of memory decoding the event "
					    "at position %llu",
					    (unsigned long long)position);
		out->tags = (sc_str *)(out->attrs + nattrs);
	}
	/* Pass 2: the values. */
	sc_event *ev = &out->ev;
	ev->position = position;
	ev->entity = ev->actor = ev->partition = (sc_str){"", 0};
	uint64_t type = 0, x = 0;
	size_t ia = 0, it = 0;
	const char *why = NULL;
	r = (rd){start, start + len};
	while (!why && r.p < r.end) {
		rd_key(&r, &f, &wt); /* checked in pass 1 */
		sc_str s = {"", 0};
		switch (f) {
		case 1:
			rd_bytes(&r, &ev->entity);
			break;
		case 2:
			rd_varint(&r, &type);
			break;
		case 3:
			rd_bytes(&r, &s);
			why = decode_attr(s, &out->attrs[ia++]);
			break;
		case 4:
			rd_fixed64(&r, &x);
			ev->time = (int64_t)x;
			break;
		case 5:
			rd_bytes(&r, &ev->actor);
			break;
		case 6:
			rd_bytes(&r, &ev->partition);
			break;
		case 7:
			rd_bytes(&r, &out->tags[it++]);
			break;
		default:
			rd_skip(&r, wt);
		}
	}
	if (!why && (type < SC_EVENT_SET || type > SC_EVENT_DELETE))
		why = "unknown event type";
	if (why) {
		sc_decoded_event_free(out);
		return corrupt(err, position, why);
	}
	ev->type = (sc_event_type)type;
	ev->attrs = nattrs ? out->attrs : NULL;
	ev->nattrs = nattrs;
	ev->tags = ntags ? out->tags : NULL;
	ev->ntags = ntags;
	if (ev->type == SC_EVENT_UNSET)
		for (size_t i = 0; i < nattrs; i++)
			out->attrs[i].value.type = SC_VALUE_NULL;
	sc_error inner;
	if (sc_event_validate(ev, &inner)) {
		sc_decoded_event_free(out);
		return corrupt(err, position, inner.message);
	}
	return 0;
}

int sc_event_peek_entity(const void *buf, size_t len, uint64_t position,
			 sc_str *id, sc_error *err)
{
	if (len > SC_EVENT_RECORD_MAX)
		return too_big(err, position, len);
	const uint8_t *start = len ? buf : (const uint8_t *)"";
	rd r = {start, start + len};
	uint32_t f = 0, wt = 0;
	*id = (sc_str){"", 0};
	while (r.p < r.end) {
		if (!rd_key(&r, &f, &wt))
			return corrupt(err, position, "malformed field key");
		if (f == 1 && wt != 2)
			return corrupt(err, position,
				       "field with the wrong wire type");
		if (!(f == 1 ? rd_bytes(&r, id) : rd_skip(&r, wt)))
			return corrupt(err, position, "truncated field");
	}
	if (id->len < 1 || id->len > SC_ENTITY_ID_MAX)
		return corrupt(err, position, "entity id out of limits");
	return 0;
}

void sc_decoded_event_free(sc_decoded_event *d)
{
	if (!d)
		return;
	sc_free(d->attrs);
	memset(d, 0, sizeof *d);
}
