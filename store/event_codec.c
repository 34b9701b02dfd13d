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

/* ---- validation ------------------------------------------------------------
 */

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

static const char *type_name(sc_event_type t)
{
	switch (t) {
	case SC_EVENT_SET:
		return "set";
	case SC_EVENT_UNSET:
		return "unset";
	case SC_EVENT_REPLACE:
		return "replace";
	case SC_EVENT_DELETE:
		return "delete";
	}
	return "unknown";
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
					    i, type_name(ev->type));
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

/* ---- encoding --------------------------------------------------------------
 */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 8;
	while (n < need)
		n *= 2;
	void *q = sc_realloc(*p, n * elem);
	if (!q)
		return ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

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
	if (grow(&enc->attrs, &enc->cap_attrs, ev->nattrs, per_attr))
		goto nomem;
	if (grow(&enc->tags, &enc->cap_tags, ev->ntags,
		 sizeof(ProtobufCBinaryData)))
		goto nomem;
	if (grow((void **)&enc->strings, &enc->cap_strings, nstrings, 1))
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

/* ---- decoding --------------------------------------------------------------
 */

/* protobuf-c reports a failed allocation like a malformed message; the
 * allocator remembers it so the caller can say ENOMEM, not "corrupt". */
static void *pb_alloc(void *data, size_t size)
{
	void *p = sc_malloc(size ? size : 1);
	if (!p && data)
		*(int *)data = 1;
	return p;
}

static void pb_free(void *data, void *p)
{
	SC_UNUSED(data);
	sc_free(p);
}

static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

static sc_str str_of(ProtobufCBinaryData b)
{
	sc_str s = {(const char *)b.data, b.len};
	if (!b.len)
		s.ptr = "";
	return s;
}

static int corrupt(sc_error *err, uint64_t position, const char *what)
{
	return sc_error_set(err, SC_ECORRUPT,
			    "event record at position %llu is corrupt: %s; "
			    "restore the store from a backup or truncate the "
			    "log before it",
			    (unsigned long long)position, what);
}

int sc_event_decode(const void *buf, size_t len, uint64_t position,
		    sc_decoded_event *out, sc_error *err)
{
	memset(out, 0, sizeof *out);
	if (len > SC_EVENT_RECORD_MAX)
		return sc_error_set(err, SC_ETOOBIG,
				    "event record at position %llu is %zu "
				    "bytes, over the %u-byte limit",
				    (unsigned long long)position, len,
				    SC_EVENT_RECORD_MAX);
	int failed = 0;
	ProtobufCAllocator alloc = {pb_alloc, pb_free, &failed};
	pb_event *m = statecache__v1__event__unpack(&alloc, len, buf);
	if (!m && failed)
		return sc_error_set(err, ENOMEM,
				    "out of memory decoding the event at "
				    "position %llu",
				    (unsigned long long)position);
	if (!m)
		return corrupt(err, position, "not a valid Event message");
	int rc = 0;
	sc_event *ev = &out->ev;
	out->msg = m;
	ev->position = position;
	ev->entity = str_of(m->entity);
	ev->type = (sc_event_type)m->type;
	ev->time = m->time;
	ev->actor = str_of(m->actor);
	ev->partition = str_of(m->partition);
	if (m->type < STATECACHE__V1__EVENT_TYPE__EVENT_TYPE_SET ||
	    m->type > STATECACHE__V1__EVENT_TYPE__EVENT_TYPE_DELETE) {
		rc = corrupt(err, position, "unknown event type");
		goto fail;
	}
	if (m->n_attrs > SC_EVENT_ATTRS_MAX || m->n_tags > SC_EVENT_TAGS_MAX) {
		rc = corrupt(err, position, "too many attributes or tags");
		goto fail;
	}
	if (m->n_attrs) {
		out->attrs = sc_calloc(m->n_attrs, sizeof(sc_attr));
		if (!out->attrs)
			goto nomem;
	}
	for (size_t i = 0; i < m->n_attrs; i++) {
		const pb_attr *pa = m->attrs[i];
		sc_attr *a = &out->attrs[i];
		a->name = str_of(pa->name);
		a->value.type = SC_VALUE_NULL;
		if (m->type == STATECACHE__V1__EVENT_TYPE__EVENT_TYPE_UNSET)
			continue;
		const pb_value *pv = pa->value;
		if (!pv) {
			/* An absent Value message is a null value. */
			continue;
		}
		switch (pv->kind_case) {
		case STATECACHE__V1__VALUE__KIND__NOT_SET:
			break;
		case STATECACHE__V1__VALUE__KIND_STRING_VALUE:
			a->value.type = SC_VALUE_STRING;
			a->value.u.s.ptr = pv->string_value;
			a->value.u.s.len = strlen(pv->string_value);
			break;
		case STATECACHE__V1__VALUE__KIND_INT_VALUE:
			a->value.type = SC_VALUE_INT;
			a->value.u.i = pv->int_value;
			break;
		case STATECACHE__V1__VALUE__KIND_DOUBLE_VALUE:
			a->value.type = SC_VALUE_DOUBLE;
			a->value.u.d = pv->double_value;
			break;
		case STATECACHE__V1__VALUE__KIND_BOOL_VALUE:
			a->value.type = SC_VALUE_BOOL;
			a->value.u.b = pv->bool_value != 0;
			break;
		case STATECACHE__V1__VALUE__KIND_BYTES_VALUE:
			a->value.type = SC_VALUE_BYTES;
			a->value.u.s = str_of(pv->bytes_value);
			break;
		default:
			rc = corrupt(err, position, "unknown value kind");
			goto fail;
		}
	}
	ev->attrs = out->attrs;
	ev->nattrs = m->n_attrs;
	if (m->n_tags) {
		out->tags = sc_calloc(m->n_tags, sizeof(sc_str));
		if (!out->tags)
			goto nomem;
		for (size_t i = 0; i < m->n_tags; i++)
			out->tags[i] = str_of(m->tags[i]);
	}
	ev->tags = out->tags;
	ev->ntags = m->n_tags;
	sc_error inner;
	if (sc_event_validate(ev, &inner)) {
		rc = corrupt(err, position, inner.message);
		goto fail;
	}
	return 0;

nomem:
	rc = sc_error_set(err, ENOMEM,
			  "out of memory decoding the event at position %llu",
			  (unsigned long long)position);
fail:
	sc_decoded_event_free(out);
	return rc;
}

void sc_decoded_event_free(sc_decoded_event *d)
{
	if (!d)
		return;
	if (d->msg)
		statecache__v1__event__free_unpacked(d->msg, &pb_allocator);
	sc_free(d->attrs);
	sc_free(d->tags);
	memset(d, 0, sizeof *d);
}
