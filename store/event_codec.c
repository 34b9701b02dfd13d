/*
 * Event records: sc_event <-> protobuf statecache.v1.Event (event_codec.h).
 */
#include "store/event_codec.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"
#include "statecache/v1/statecache.pb-c.h"

typedef Statecache__V1__Event pb_event;
typedef Statecache__V1__Attr pb_attr;
typedef Statecache__V1__Value pb_value;

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

static int validate_value(const sc_event *ev, size_t i, sc_error *err)
{
	const sc_attr *a = &ev->attrs[i];
	const sc_value *v = &a->value;
	switch (v->type) {
	case SC_VALUE_NULL:
		if (ev->type != SC_EVENT_SET)
			return sc_error_set(err, SC_EINVAL,
					    "attribute %zu is null in a `%s` "
					    "event; null values are only "
					    "allowed in `set`",
					    i, sc_event_type_name(ev->type));
		return 0;
	case SC_VALUE_INT:
	case SC_VALUE_DOUBLE:
	case SC_VALUE_BOOL:
		return 0;
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		if (v->u.s.len > SC_EVENT_VALUE_MAX)
			return sc_error_set(err, SC_EINVAL,
					    "value of attribute %zu is %zu "
					    "bytes, the limit is %u",
					    i, v->u.s.len, SC_EVENT_VALUE_MAX);
		if (v->u.s.len && !v->u.s.ptr)
			return sc_error_set(err, SC_EINVAL,
					    "value of attribute %zu has a NULL "
					    "pointer",
					    i);
		if (v->type == SC_VALUE_STRING && v->u.s.len &&
		    memchr(v->u.s.ptr, 0, v->u.s.len))
			return sc_error_set(err, SC_EINVAL,
					    "string value of attribute %zu "
					    "contains a NUL byte; use a bytes "
					    "value for binary data",
					    i);
		return 0;
	}
	return sc_error_set(err, SC_EINVAL,
			    "attribute %zu has unknown value type %d", i,
			    (int)v->type);
}

int sc_event_validate(const sc_event *ev, sc_error *err)
{
	if (!ev)
		return sc_error_set(err, SC_EINVAL, "event is NULL");
	if (ev->entity.len < 1 || ev->entity.len > SC_ENTITY_ID_MAX ||
	    !ev->entity.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "entity id is %zu bytes; it must be 1..%d",
				    ev->entity.len, SC_ENTITY_ID_MAX);
	if (ev->type < SC_EVENT_SET || ev->type > SC_EVENT_DELETE)
		return sc_error_set(err, SC_EINVAL,
				    "unknown event type %d; use set, unset, "
				    "replace or delete",
				    (int)ev->type);
	if (ev->nattrs > SC_EVENT_ATTRS_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "%zu attributes, the limit is %d",
				    ev->nattrs, SC_EVENT_ATTRS_MAX);
	if (ev->nattrs && !ev->attrs)
		return sc_error_set(err, SC_EINVAL,
				    "nattrs is %zu but attrs is NULL",
				    ev->nattrs);
	if (ev->type == SC_EVENT_DELETE && ev->nattrs)
		return sc_error_set(err, SC_EINVAL,
				    "a `delete` event carries no attributes "
				    "(it has %zu)",
				    ev->nattrs);
	for (size_t i = 0; i < ev->nattrs; i++) {
		sc_str name = ev->attrs[i].name;
		if (name.len < 1 || name.len > SC_ATTR_NAME_MAX || !name.ptr)
			return sc_error_set(err, SC_EINVAL,
					    "attribute %zu: name is %zu bytes; "
					    "it must be 1..%d",
					    i, name.len, SC_ATTR_NAME_MAX);
		if (ev->type == SC_EVENT_UNSET)
			continue;
		int rc = validate_value(ev, i, err);
		if (rc)
			return rc;
	}
	int rc = validate_field(ev->actor, "actor", err);
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

/* ---- encoding ------------------------------------------------------------ */

static ProtobufCBinaryData bin(sc_str s)
{
	ProtobufCBinaryData b = {s.len, (uint8_t *)s.ptr};
	if (!s.len)
		b.data = NULL;
	return b;
}

int sc_event_enc_prepare(sc_event_enc *enc, const sc_event *ev, size_t *size,
			 sc_error *err)
{
	if (!enc->msg) {
		enc->msg = sc_malloc(sizeof(pb_event));
		if (!enc->msg)
			goto nomem;
	}
	/* Sizes first, so a failure leaves nothing half-filled. */
	size_t nstrings = 0;
	if (ev->type != SC_EVENT_UNSET)
		for (size_t i = 0; i < ev->nattrs; i++)
			if (ev->attrs[i].value.type == SC_VALUE_STRING)
				nstrings += ev->attrs[i].value.u.s.len + 1;
	/* One block holds the Attr structs, the pointer array and the Values
	 * (all pointer-aligned). */
	size_t per_attr =
	    sizeof(pb_attr) + sizeof(pb_attr *) + sizeof(pb_value);
	if (sc_grow_array(&enc->attrs, &enc->cap_attrs, ev->nattrs, per_attr))
		goto nomem;
	if (sc_grow_array(&enc->tags, &enc->cap_tags, ev->ntags,
			  sizeof(ProtobufCBinaryData)))
		goto nomem;
	if (sc_grow_array((void **)&enc->strings, &enc->cap_strings, nstrings,
			  1))
		goto nomem;

	pb_event *m = enc->msg;
	statecache__v1__event__init(m);
	m->entity = bin(ev->entity);
	m->type = (Statecache__V1__EventType)ev->type;
	m->time = ev->time;
	m->actor = bin(ev->actor);
	m->partition = bin(ev->partition);
	pb_attr *attrs = enc->attrs;
	pb_attr **ptrs = NULL;
	pb_value *values = NULL;
	if (attrs) {
		ptrs = (pb_attr **)(attrs + enc->cap_attrs);
		values = (pb_value *)(ptrs + enc->cap_attrs);
	}
	char *sp = enc->strings;
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_attr *a = &ev->attrs[i];
		statecache__v1__attr__init(&attrs[i]);
		attrs[i].name = bin(a->name);
		ptrs[i] = &attrs[i];
		if (ev->type == SC_EVENT_UNSET)
			continue;
		pb_value *v = &values[i];
		statecache__v1__value__init(v);
		attrs[i].value = v;
		switch (a->value.type) {
		case SC_VALUE_NULL:
			break;
		case SC_VALUE_STRING:
			v->kind_case = STATECACHE__V1__VALUE__KIND_STRING_VALUE;
			if (a->value.u.s.len)
				memcpy(sp, a->value.u.s.ptr, a->value.u.s.len);
			sp[a->value.u.s.len] = '\0';
			v->string_value = sp;
			sp += a->value.u.s.len + 1;
			break;
		case SC_VALUE_INT:
			v->kind_case = STATECACHE__V1__VALUE__KIND_INT_VALUE;
			v->int_value = a->value.u.i;
			break;
		case SC_VALUE_DOUBLE:
			v->kind_case = STATECACHE__V1__VALUE__KIND_DOUBLE_VALUE;
			v->double_value = a->value.u.d;
			break;
		case SC_VALUE_BOOL:
			v->kind_case = STATECACHE__V1__VALUE__KIND_BOOL_VALUE;
			v->bool_value = a->value.u.b;
			break;
		case SC_VALUE_BYTES:
			v->kind_case = STATECACHE__V1__VALUE__KIND_BYTES_VALUE;
			v->bytes_value = bin(a->value.u.s);
			break;
		}
	}
	m->n_attrs = ev->nattrs;
	m->attrs = ev->nattrs ? ptrs : NULL;
	ProtobufCBinaryData *tags = enc->tags;
	for (size_t i = 0; i < ev->ntags; i++)
		tags[i] = bin(ev->tags[i]);
	m->n_tags = ev->ntags;
	m->tags = ev->ntags ? tags : NULL;
	*size = statecache__v1__event__get_packed_size(m);
	return 0;

nomem:
	return sc_error_set(err, ENOMEM,
			    "out of memory while encoding an event of %zu "
			    "attributes",
			    ev->nattrs);
}

void sc_event_enc_pack(const sc_event_enc *enc, uint8_t *out)
{
	statecache__v1__event__pack(enc->msg, out);
}

void sc_event_enc_free(sc_event_enc *enc)
{
	if (!enc)
		return;
	sc_free(enc->msg);
	sc_free(enc->attrs);
	sc_free(enc->tags);
	sc_free(enc->strings);
	memset(enc, 0, sizeof *enc);
}

int sc_event_encode(const sc_event *ev, uint8_t **out, size_t *len,
		    sc_error *err)
{
	int rc = sc_event_validate(ev, err);
	if (rc)
		return rc;
	sc_event_enc enc = {0};
	size_t size = 0;
	rc = sc_event_enc_prepare(&enc, ev, &size, err);
	if (rc)
		goto out;
	uint8_t *buf = sc_malloc(size ? size : 1);
	if (!buf) {
		rc = sc_error_set(err, ENOMEM,
				  "out of memory for a %zu-byte event record",
				  size);
		goto out;
	}
	sc_event_enc_pack(&enc, buf);
	*out = buf;
	*len = size;
out:
	sc_event_enc_free(&enc);
	return rc;
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
