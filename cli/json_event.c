/*
 * statecache command: decoding and encoding JSON Lines events
 * (cli/json_event.h).
 *
 * The decoder treats its input as hostile: jansson parses with duplicate
 * keys rejected, every field is checked for type and size, and nothing is
 * truncated. Plain lines take a fast path that does not use jansson (see
 * "the fast path" below). Decoded strings point into the parsed document
 * or the copy of the line, which the sc_cli_event keeps alive; $bytes
 * values are decoded into a buffer as long
 * as the line (base64 never decodes to more bytes than its text), allocated
 * before any pointer into it is taken, so no pointer moves.
 */
#include "cli/json_event.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/timefmt.h"
#include "common/internal.h"

/* ===== lifecycle ========================================================== */

void sc_cli_event_init(sc_cli_event *e)
{
	memset(e, 0, sizeof *e);
}

void sc_cli_event_clear(sc_cli_event *e)
{
	json_decref(e->root);
	sc_free(e->text);
	sc_free(e->attrs);
	sc_free(e->tags);
	sc_free(e->bytes);
	sc_cli_event_init(e);
}

/* ===== decoding =========================================================== */

static int check_name(size_t len, const char *where, sc_error *err)
{
	if (len == 0)
		return sc_error_set(err, SC_EINVAL,
				    "%s: empty attribute name (names are 1 to "
				    "%d bytes)",
				    where, SC_ATTR_NAME_MAX);
	if (len > SC_ATTR_NAME_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "%s: attribute name of %zu bytes is too "
				    "long (at most %d)",
				    where, len, SC_ATTR_NAME_MAX);
	return 0;
}

static int decode_value(sc_cli_event *e, size_t *bytes_used, json_t *j,
			const char *name, bool null_ok, sc_value *out,
			sc_error *err)
{
	switch (json_typeof(j)) {
	case JSON_STRING:
		out->type = SC_VALUE_STRING;
		out->u.s.ptr = json_string_value(j);
		out->u.s.len = json_string_length(j);
		return 0;
	case JSON_INTEGER:
		out->type = SC_VALUE_INT;
		out->u.i = (int64_t)json_integer_value(j);
		return 0;
	case JSON_REAL:
		out->type = SC_VALUE_DOUBLE;
		out->u.d = json_real_value(j);
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		out->type = SC_VALUE_BOOL;
		out->u.b = json_is_true(j);
		return 0;
	case JSON_NULL:
		if (!null_ok)
			return sc_error_set(
			    err, SC_EINVAL,
			    "attrs.%.64s: null is only valid in a "
			    "set (where it removes the key)",
			    name);
		out->type = SC_VALUE_NULL;
		return 0;
	case JSON_OBJECT: {
		json_t *b64 = json_object_get(j, "$bytes");
		if (json_object_size(j) != 1 || !b64 || !json_is_string(b64))
			return sc_error_set(
			    err, SC_EINVAL,
			    "attrs.%.64s: an object value must be "
			    "{\"$bytes\":\"<base64>\"}",
			    name);
		const char *why;
		size_t n;
		if (sc_cli_base64_decode(json_string_value(b64),
					 json_string_length(b64),
					 e->bytes + *bytes_used, &n, &why))
			return sc_error_set(
			    err, SC_EINVAL,
			    "attrs.%.64s: bad base64 in $bytes: %s", name, why);
		out->type = SC_VALUE_BYTES;
		out->u.s.ptr = e->bytes + *bytes_used;
		out->u.s.len = n;
		*bytes_used += n;
		return 0;
	}
	case JSON_ARRAY:
		break;
	}
	return sc_error_set(
	    err, SC_EINVAL,
	    "attrs.%.64s: arrays are not attribute values (use a "
	    "string, number, true, false, null or "
	    "{\"$bytes\":...})",
	    name);
}

static int decode_attrs(sc_cli_event *e, json_t *attrs, size_t line_len,
			sc_error *err)
{
	sc_event *ev = &e->ev;
	if (ev->type == SC_EVENT_UNSET) {
		if (!json_is_array(attrs))
			return sc_error_set(err, SC_EINVAL,
					    "attrs of an unset must be an "
					    "array of attribute names");
		size_t n = json_array_size(attrs);
		if (sc_grow_array((void **)&e->attrs, &e->attrs_cap, n,
				  sizeof *e->attrs))
			return sc_error_set(err, ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			json_t *s = json_array_get(attrs, i);
			if (!json_is_string(s))
				return sc_error_set(err, SC_EINVAL,
						    "attrs[%zu]: attribute "
						    "names must be strings",
						    i);
			char where[32];
			snprintf(where, sizeof where, "attrs[%zu]", i);
			size_t len = json_string_length(s);
			int rc = check_name(len, where, err);
			if (rc)
				return rc;
			e->attrs[i].name.ptr = json_string_value(s);
			e->attrs[i].name.len = len;
			e->attrs[i].value.type = SC_VALUE_NULL;
		}
		ev->attrs = e->attrs;
		ev->nattrs = n;
		return 0;
	}
	if (!json_is_object(attrs))
		return sc_error_set(err, SC_EINVAL,
				    "attrs of a %s must be an object of name: "
				    "value",
				    sc_event_type_name(ev->type));
	size_t n = json_object_size(attrs);
	if (sc_grow_array((void **)&e->attrs, &e->attrs_cap, n,
			  sizeof *e->attrs) ||
	    sc_grow_array((void **)&e->bytes, &e->bytes_cap, line_len + 1, 1))
		return sc_error_set(err, ENOMEM, "out of memory");
	size_t i = 0, bytes_used = 0;
	const char *key;
	size_t key_len;
	json_t *v;
	json_object_keylen_foreach(attrs, key, key_len, v)
	{
		int rc = check_name(key_len, "attrs", err);
		if (!rc)
			rc = decode_value(e, &bytes_used, v, key,
					  ev->type == SC_EVENT_SET,
					  &e->attrs[i].value, err);
		if (rc)
			return rc;
		e->attrs[i].name.ptr = key;
		e->attrs[i].name.len = key_len;
		i++;
	}
	ev->attrs = e->attrs;
	ev->nattrs = i;
	return 0;
}

static int decode_string(json_t *j, const char *field, sc_str *out,
			 sc_error *err)
{
	if (!json_is_string(j))
		return sc_error_set(err, SC_EINVAL, "%s must be a string",
				    field);
	out->ptr = json_string_value(j);
	out->len = json_string_length(j);
	return 0;
}

static int decode_fields(sc_cli_event *e, json_t *root, size_t line_len,
			 sc_error *err)
{
	sc_event *ev = &e->ev;
	json_t *jentity = NULL, *jtype = NULL, *jattrs = NULL, *jtags = NULL;
	json_t *jtime = NULL, *jactor = NULL, *jpart = NULL, *jpos = NULL;
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (!strcmp(key, "entity"))
			jentity = v;
		else if (!strcmp(key, "type"))
			jtype = v;
		else if (!strcmp(key, "attrs"))
			jattrs = v;
		else if (!strcmp(key, "actor"))
			jactor = v;
		else if (!strcmp(key, "time"))
			jtime = v;
		else if (!strcmp(key, "partition"))
			jpart = v;
		else if (!strcmp(key, "tags"))
			jtags = v;
		else if (!strcmp(key, "position"))
			jpos = v;
		else
			return sc_error_set(
			    err, SC_EINVAL,
			    "unknown field \"%.64s\" (allowed: entity, type, "
			    "attrs, actor, time, partition, tags, position)",
			    key);
	}
	if (!jentity)
		return sc_error_set(err, SC_EINVAL,
				    "missing field \"entity\" (the entity id)");
	int rc = decode_string(jentity, "entity", &ev->entity, err);
	if (rc)
		return rc;
	if (ev->entity.len == 0 || ev->entity.len > SC_ENTITY_ID_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "entity id of %zu bytes: ids are 1 to %d "
				    "bytes",
				    ev->entity.len, SC_ENTITY_ID_MAX);
	if (!jtype)
		return sc_error_set(err, SC_EINVAL,
				    "missing field \"type\" (set, unset, "
				    "replace or delete)");
	const char *t = json_string_value(jtype);
	if (!t)
		return sc_error_set(err, SC_EINVAL, "type must be a string");
	/* "set\u0000x" must not pass as "set" */
	if (json_string_length(jtype) != strlen(t))
		return sc_error_set(err, SC_EINVAL,
				    "unknown event type (it contains \\u0000; "
				    "expected set, unset, replace or delete)");
	if (!strcmp(t, "set"))
		ev->type = SC_EVENT_SET;
	else if (!strcmp(t, "unset"))
		ev->type = SC_EVENT_UNSET;
	else if (!strcmp(t, "replace"))
		ev->type = SC_EVENT_REPLACE;
	else if (!strcmp(t, "delete"))
		ev->type = SC_EVENT_DELETE;
	else
		return sc_error_set(err, SC_EINVAL,
				    "unknown event type \"%.32s\" (expected "
				    "set, unset, replace or delete)",
				    t);
	if (ev->type == SC_EVENT_DELETE) {
		if (jattrs)
			return sc_error_set(err, SC_EINVAL,
					    "a delete takes no attrs (remove "
					    "the field)");
	} else {
		if (!jattrs)
			return sc_error_set(err, SC_EINVAL,
					    "missing field \"attrs\" (required "
					    "for a %s)",
					    t);
		rc = decode_attrs(e, jattrs, line_len, err);
		if (rc)
			return rc;
	}
	if (jactor && (rc = decode_string(jactor, "actor", &ev->actor, err)))
		return rc;
	if (jpart &&
	    (rc = decode_string(jpart, "partition", &ev->partition, err)))
		return rc;
	if (jtime) {
		if (!json_is_string(jtime))
			return sc_error_set(err, SC_EINVAL,
					    "time must be an RFC 3339 string "
					    "such as \"2026-11-23T10:00:00Z\"");
		const char *why;
		if (sc_cli_time_parse(json_string_value(jtime),
				      json_string_length(jtime), &ev->time,
				      &why))
			return sc_error_set(err, SC_EINVAL, "bad time: %s",
					    why);
	}
	if (jtags) {
		if (!json_is_array(jtags))
			return sc_error_set(err, SC_EINVAL,
					    "tags must be an array of strings");
		size_t n = json_array_size(jtags);
		if (sc_grow_array((void **)&e->tags, &e->tags_cap, n,
				  sizeof *e->tags))
			return sc_error_set(err, ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			char where[32];
			snprintf(where, sizeof where, "tags[%zu]", i);
			rc = decode_string(json_array_get(jtags, i), where,
					   &e->tags[i], err);
			if (rc)
				return rc;
		}
		ev->tags = e->tags;
		ev->ntags = n;
	}
	if (jpos && (!json_is_integer(jpos) || json_integer_value(jpos) < 0))
		return sc_error_set(err, SC_EINVAL,
				    "position must be a non-negative integer "
				    "(it is ignored: the store assigns "
				    "positions)");
	return 0;
}

int sc_cli_event_decode_jansson(sc_cli_event *e, const char *line, size_t n,
				sc_error *err)
{
	json_decref(e->root);
	e->root = NULL;
	memset(&e->ev, 0, sizeof e->ev);
	if (n > SC_CLI_LINE_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "line of %zu bytes is longer than the "
				    "limit of %u bytes",
				    n, SC_CLI_LINE_MAX);
	json_error_t jerr;
	json_t *root =
	    json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return sc_error_set(err, ENOMEM, "out of memory");
		return sc_error_set(err, SC_EINVAL, "column %d: %s",
				    jerr.column, jerr.text);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return sc_error_set(err, SC_EINVAL,
				    "an event must be a JSON object");
	}
	e->root = root;
	int rc = decode_fields(e, root, n, err);
	if (rc) {
		json_decref(e->root);
		e->root = NULL;
		memset(&e->ev, 0, sizeof e->ev);
	}
	return rc;
}

/* ===== the fast path ======================================================
 *
 * Most lines are plain: no escapes in strings, no duplicate names, no
 * error. A hand-written parser decodes those without jansson and without
 * an allocation per value (strings point into a copy of the line owned by
 * the sc_cli_event), several times faster. It gives up on anything it is
 * not sure of: an escape, a duplicate, a number it would have to round
 * differently, an unknown field, any error at all; the line then goes
 * through jansson (decode_jansson), which decides and words the error.
 * So the fast path accepts only lines jansson accepts and must decode them
 * to the same event, in the same attribute order (jansson keeps an
 * object's insertion order): tests/test_json_fast.c compares the two on
 * generated, random and mutated lines.
 */

#define FAST_GIVE_UP (-1)

typedef struct fast {
	const char *p, *end;
} fast;

static void fast_ws(fast *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' ||
				 *f->p == '\n' || *f->p == '\r'))
		f->p++;
}

static bool fast_char(fast *f, char c)
{
	fast_ws(f);
	if (f->p < f->end && *f->p == c) {
		f->p++;
		return true;
	}
	return false;
}

/* A string without escapes or control characters, valid UTF-8. */
static bool fast_string(fast *f, sc_str *out)
{
	if (!fast_char(f, '"'))
		return false;
	const char *s = f->p;
	bool ascii = true;
	while (f->p < f->end) {
		unsigned char c = (unsigned char)*f->p;
		if (c == '"')
			break;
		if (c == '\\' || c < 0x20)
			return false;
		if (c >= 0x80)
			ascii = false;
		f->p++;
	}
	if (f->p == f->end)
		return false;
	out->ptr = s;
	out->len = (size_t)(f->p - s);
	f->p++;
	return ascii || sc_cli_utf8_valid(out->ptr, out->len);
}

static bool fast_literal(fast *f, const char *lit, size_t n)
{
	if ((size_t)(f->end - f->p) < n || memcmp(f->p, lit, n))
		return false;
	f->p += n;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * A JSON number: an integer (no fraction, no exponent) of at most 18
 * digits, so that it cannot overflow, or a double strtod converts (as
 * jansson does) to a finite value.
 */
static bool fast_number(fast *f, sc_value *out)
{
	const char *s = f->p;
	const char *q = s;
	if (q < f->end && *q == '-')
		q++;
	const char *digits = q;
	while (q < f->end && is_digit(*q))
		q++;
	size_t nint = (size_t)(q - digits);
	if (nint == 0 || (nint > 1 && *digits == '0'))
		return false;
	bool real = false;
	if (q < f->end && *q == '.') {
		real = true;
		const char *d = ++q;
		while (q < f->end && is_digit(*q))
			q++;
		if (q == d)
			return false;
	}
	if (q < f->end && (*q == 'e' || *q == 'E')) {
		real = true;
		q++;
		if (q < f->end && (*q == '+' || *q == '-'))
			q++;
		const char *d = q;
		while (q < f->end && is_digit(*q))
			q++;
		if (q == d)
			return false;
	}
	f->p = q;
	if (!real) {
		if (nint > 18)
			return false;
		int64_t v = 0;
		for (const char *d = digits; d < q; d++)
			v = v * 10 + (*d - '0');
		out->type = SC_VALUE_INT;
		out->u.i = *s == '-' ? -v : v;
		return true;
	}
	char buf[64];
	size_t n = (size_t)(q - s);
	if (n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = 0;
	double d = strtod(buf, NULL);
	if (d == HUGE_VAL || d == -HUGE_VAL)
		return false;
	out->type = SC_VALUE_DOUBLE;
	out->u.d = d;
	return true;
}

/* An attribute value; {"$bytes":"<base64>"} is decoded into e->bytes,
 * which the caller sized for the whole line. */
static int fast_value(fast *f, sc_cli_event *e, size_t *bytes_used,
		      sc_value *out)
{
	fast_ws(f);
	if (f->p == f->end)
		return FAST_GIVE_UP;
	switch (*f->p) {
	case '"':
		out->type = SC_VALUE_STRING;
		return fast_string(f, &out->u.s) ? 0 : FAST_GIVE_UP;
	case 't':
		out->type = SC_VALUE_BOOL;
		out->u.b = true;
		return fast_literal(f, "true", 4) ? 0 : FAST_GIVE_UP;
	case 'f':
		out->type = SC_VALUE_BOOL;
		out->u.b = false;
		return fast_literal(f, "false", 5) ? 0 : FAST_GIVE_UP;
	case 'n':
		out->type = SC_VALUE_NULL;
		return fast_literal(f, "null", 4) ? 0 : FAST_GIVE_UP;
	case '{': {
		f->p++;
		sc_str key, b64;
		if (!fast_string(f, &key) || key.len != 6 ||
		    memcmp(key.ptr, "$bytes", 6) || !fast_char(f, ':') ||
		    !fast_string(f, &b64) || !fast_char(f, '}'))
			return FAST_GIVE_UP;
		const char *why;
		size_t n;
		if (sc_cli_base64_decode(b64.ptr, b64.len,
					 e->bytes + *bytes_used, &n, &why))
			return FAST_GIVE_UP;
		out->type = SC_VALUE_BYTES;
		out->u.s.ptr = e->bytes + *bytes_used;
		out->u.s.len = n;
		*bytes_used += n;
		return 0;
	}
	default:
		return fast_number(f, out) ? 0 : FAST_GIVE_UP;
	}
}

/* An array of strings into *arr (grown as needed); *n its length. */
static int fast_strings(fast *f, sc_str **arr, size_t *cap, size_t *n)
{
	*n = 0;
	if (!fast_char(f, '['))
		return FAST_GIVE_UP;
	if (fast_char(f, ']'))
		return 0;
	do {
		if (sc_grow_array((void **)arr, cap, *n + 1, sizeof **arr))
			return ENOMEM;
		if (!fast_string(f, &(*arr)[*n]))
			return FAST_GIVE_UP;
		(*n)++;
	} while (fast_char(f, ','));
	return fast_char(f, ']') ? 0 : FAST_GIVE_UP;
}

static bool name_ok(size_t len)
{
	return len >= 1 && len <= SC_ATTR_NAME_MAX;
}

/* Duplicate attribute names are an error jansson words; small objects
 * only, so that the quadratic check stays cheap. */
static bool names_distinct(const sc_attr *a, size_t n)
{
	if (n > 64)
		return false;
	for (size_t i = 1; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (a[i].name.len == a[j].name.len &&
			    !memcmp(a[i].name.ptr, a[j].name.ptr,
				    a[i].name.len))
				return false;
	return true;
}

/* attrs: an object of name: value (set, replace), or an array of names
 * (unset); which one must fit the type is checked by the caller. */
static int fast_attrs(fast *f, sc_cli_event *e, size_t line_len, bool *is_array,
		      bool *has_null)
{
	sc_event *ev = &e->ev;
	fast_ws(f);
	if (f->p < f->end && *f->p == '[') {
		*is_array = true;
		f->p++;
		size_t n = 0;
		if (!fast_char(f, ']')) {
			do {
				if (sc_grow_array((void **)&e->attrs,
						  &e->attrs_cap, n + 1,
						  sizeof *e->attrs))
					return ENOMEM;
				sc_attr *a = &e->attrs[n];
				if (!fast_string(f, &a->name) ||
				    !name_ok(a->name.len))
					return FAST_GIVE_UP;
				a->value = (sc_value){.type = SC_VALUE_NULL};
				n++;
			} while (fast_char(f, ','));
			if (!fast_char(f, ']'))
				return FAST_GIVE_UP;
		}
		ev->attrs = e->attrs;
		ev->nattrs = n;
		return 0;
	}
	*is_array = false;
	if (!fast_char(f, '{'))
		return FAST_GIVE_UP;
	size_t n = 0, bytes_used = 0;
	bool bytes_ready = false;
	if (!fast_char(f, '}')) {
		do {
			if (sc_grow_array((void **)&e->attrs, &e->attrs_cap,
					  n + 1, sizeof *e->attrs))
				return ENOMEM;
			sc_attr *a = &e->attrs[n];
			if (!fast_string(f, &a->name) ||
			    !name_ok(a->name.len) || !fast_char(f, ':'))
				return FAST_GIVE_UP;
			fast_ws(f);
			if (!bytes_ready && f->p < f->end && *f->p == '{') {
				/* base64 never decodes to more bytes than its
				 * text: room for the line is room for all */
				if (sc_grow_array((void **)&e->bytes,
						  &e->bytes_cap, line_len + 1,
						  1))
					return ENOMEM;
				bytes_ready = true;
			}
			int rc = fast_value(f, e, &bytes_used, &a->value);
			if (rc)
				return rc;
			if (a->value.type == SC_VALUE_NULL)
				*has_null = true;
			n++;
		} while (fast_char(f, ','));
		if (!fast_char(f, '}'))
			return FAST_GIVE_UP;
	}
	if (!names_distinct(e->attrs, n))
		return FAST_GIVE_UP;
	ev->attrs = e->attrs;
	ev->nattrs = n;
	return 0;
}

enum {
	F_ENTITY = 1 << 0,
	F_TYPE = 1 << 1,
	F_ATTRS = 1 << 2,
	F_ACTOR = 1 << 3,
	F_TIME = 1 << 4,
	F_PARTITION = 1 << 5,
	F_TAGS = 1 << 6,
	F_POSITION = 1 << 7,
};

static int fast_field(const sc_str *k)
{
	switch (k->len) {
	case 4:
		if (!memcmp(k->ptr, "type", 4))
			return F_TYPE;
		if (!memcmp(k->ptr, "time", 4))
			return F_TIME;
		if (!memcmp(k->ptr, "tags", 4))
			return F_TAGS;
		return 0;
	case 5:
		if (!memcmp(k->ptr, "attrs", 5))
			return F_ATTRS;
		if (!memcmp(k->ptr, "actor", 5))
			return F_ACTOR;
		return 0;
	case 6:
		return memcmp(k->ptr, "entity", 6) ? 0 : F_ENTITY;
	case 8:
		return memcmp(k->ptr, "position", 8) ? 0 : F_POSITION;
	case 9:
		return memcmp(k->ptr, "partition", 9) ? 0 : F_PARTITION;
	}
	return 0;
}

static bool fast_type(sc_str t, sc_event_type *out)
{
	if (t.len == 3 && !memcmp(t.ptr, "set", 3))
		*out = SC_EVENT_SET;
	else if (t.len == 5 && !memcmp(t.ptr, "unset", 5))
		*out = SC_EVENT_UNSET;
	else if (t.len == 7 && !memcmp(t.ptr, "replace", 7))
		*out = SC_EVENT_REPLACE;
	else if (t.len == 6 && !memcmp(t.ptr, "delete", 6))
		*out = SC_EVENT_DELETE;
	else
		return false;
	return true;
}

/* 0: `e` holds the line's event; FAST_GIVE_UP: decode it with jansson;
 * ENOMEM. */
static int decode_fast(sc_cli_event *e, const char *line, size_t n)
{
	if (sc_grow_array((void **)&e->text, &e->text_cap, n ? n : 1, 1))
		return ENOMEM;
	memcpy(e->text, line, n);
	fast f = {e->text, e->text + n};
	sc_event *ev = &e->ev;
	unsigned seen = 0;
	bool attrs_array = false, attrs_null = false;
	sc_str type = {0};
	if (!fast_char(&f, '{') || fast_char(&f, '}'))
		return FAST_GIVE_UP;
	do {
		sc_str key;
		if (!fast_string(&f, &key) || !fast_char(&f, ':'))
			return FAST_GIVE_UP;
		int field = fast_field(&key);
		if (!field || (seen & (unsigned)field))
			return FAST_GIVE_UP;
		seen |= (unsigned)field;
		int rc = 0;
		sc_value pos;
		switch (field) {
		case F_ENTITY:
			rc = fast_string(&f, &ev->entity) ? 0 : FAST_GIVE_UP;
			break;
		case F_TYPE:
			rc = fast_string(&f, &type) ? 0 : FAST_GIVE_UP;
			break;
		case F_ATTRS:
			rc = fast_attrs(&f, e, n, &attrs_array, &attrs_null);
			break;
		case F_ACTOR:
			rc = fast_string(&f, &ev->actor) ? 0 : FAST_GIVE_UP;
			break;
		case F_PARTITION:
			rc = fast_string(&f, &ev->partition) ? 0 : FAST_GIVE_UP;
			break;
		case F_TIME: {
			sc_str t;
			const char *why;
			rc = fast_string(&f, &t) &&
				     !sc_cli_time_parse(t.ptr, t.len, &ev->time,
							&why)
				 ? 0
				 : FAST_GIVE_UP;
			break;
		}
		case F_TAGS:
			rc = fast_strings(&f, &e->tags, &e->tags_cap,
					  &ev->ntags);
			ev->tags = e->tags;
			break;
		case F_POSITION:
			fast_ws(&f);
			rc = f.p < f.end && *f.p != '-' &&
				     fast_number(&f, &pos) &&
				     pos.type == SC_VALUE_INT
				 ? 0
				 : FAST_GIVE_UP;
			break;
		}
		if (rc)
			return rc;
	} while (fast_char(&f, ','));
	if (!fast_char(&f, '}'))
		return FAST_GIVE_UP;
	fast_ws(&f);
	if (f.p != f.end)
		return FAST_GIVE_UP;
	/* what decode_fields requires, else jansson words the error */
	if (!(seen & F_ENTITY) || ev->entity.len == 0 ||
	    ev->entity.len > SC_ENTITY_ID_MAX || !(seen & F_TYPE) ||
	    !fast_type(type, &ev->type))
		return FAST_GIVE_UP;
	if (ev->type == SC_EVENT_DELETE) {
		if (seen & F_ATTRS)
			return FAST_GIVE_UP;
	} else {
		if (!(seen & F_ATTRS) ||
		    attrs_array != (ev->type == SC_EVENT_UNSET) ||
		    (attrs_null && ev->type != SC_EVENT_SET))
			return FAST_GIVE_UP;
	}
	return 0;
}

int sc_cli_event_decode_fast(sc_cli_event *e, const char *line, size_t n,
			     sc_error *err)
{
	json_decref(e->root);
	e->root = NULL;
	memset(&e->ev, 0, sizeof e->ev);
	int rc = n > SC_CLI_LINE_MAX ? FAST_GIVE_UP : decode_fast(e, line, n);
	if (!rc)
		return 0;
	memset(&e->ev, 0, sizeof e->ev);
	if (rc == FAST_GIVE_UP)
		return 1;
	return sc_error_set(err, ENOMEM, "out of memory");
}

int sc_cli_event_decode(sc_cli_event *e, const char *line, size_t n,
			sc_error *err)
{
	int rc = sc_cli_event_decode_fast(e, line, n, err);
	if (rc == 1)
		rc = sc_cli_event_decode_jansson(e, line, n, err);
	return rc;
}

/* ===== encoding =========================================================== */

static int str_cmp(sc_str a, sc_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	if (c)
		return c;
	return a.len < b.len ? -1 : a.len > b.len;
}

static int attr_ptr_cmp(const void *a, const void *b)
{
	const sc_attr *x = *(const sc_attr *const *)a;
	const sc_attr *y = *(const sc_attr *const *)b;
	return str_cmp(x->name, y->name);
}

int sc_cli_event_encode(sc_cli_buf *b, const sc_event *ev, bool with_position)
{
	int rc = sc_cli_buf_puts(b, "{");
	if (!rc && with_position)
		rc = sc_cli_buf_printf(b, "\"position\":%llu,",
				       (unsigned long long)ev->position);
	if (!rc)
		rc = sc_cli_buf_puts(b, "\"entity\":");
	if (!rc)
		rc = sc_cli_json_string(b, ev->entity.ptr, ev->entity.len);
	const char *tn = sc_event_type_name(ev->type);
	if (!rc)
		rc = sc_cli_buf_printf(b, ",\"type\":\"%s\"", tn ? tn : "?");
	if (!rc && ev->type == SC_EVENT_UNSET) {
		rc = sc_cli_buf_puts(b, ",\"attrs\":[");
		for (size_t i = 0; !rc && i < ev->nattrs; i++) {
			if (i)
				rc = sc_cli_buf_puts(b, ",");
			if (!rc)
				rc =
				    sc_cli_json_string(b, ev->attrs[i].name.ptr,
						       ev->attrs[i].name.len);
		}
		if (!rc)
			rc = sc_cli_buf_puts(b, "]");
	} else if (!rc &&
		   (ev->type == SC_EVENT_SET || ev->type == SC_EVENT_REPLACE)) {
		const sc_attr **sorted = NULL;
		if (ev->nattrs) {
			sorted = malloc(ev->nattrs * sizeof *sorted);
			if (!sorted)
				return ENOMEM;
			for (size_t i = 0; i < ev->nattrs; i++)
				sorted[i] = &ev->attrs[i];
			qsort(sorted, ev->nattrs, sizeof *sorted, attr_ptr_cmp);
		}
		rc = sc_cli_buf_puts(b, ",\"attrs\":{");
		for (size_t i = 0; !rc && i < ev->nattrs; i++) {
			if (i)
				rc = sc_cli_buf_puts(b, ",");
			if (!rc)
				rc = sc_cli_json_string(b, sorted[i]->name.ptr,
							sorted[i]->name.len);
			if (!rc)
				rc = sc_cli_buf_puts(b, ":");
			if (!rc)
				rc = sc_cli_json_value(b, &sorted[i]->value);
		}
		free(sorted);
		if (!rc)
			rc = sc_cli_buf_puts(b, "}");
	}
	if (!rc && ev->actor.len) {
		rc = sc_cli_buf_puts(b, ",\"actor\":");
		if (!rc)
			rc =
			    sc_cli_json_string(b, ev->actor.ptr, ev->actor.len);
	}
	if (!rc && ev->time) {
		char t[SC_CLI_TIME_MAX];
		sc_cli_time_format(ev->time, t);
		rc = sc_cli_buf_printf(b, ",\"time\":\"%s\"", t);
	}
	if (!rc && ev->partition.len) {
		rc = sc_cli_buf_puts(b, ",\"partition\":");
		if (!rc)
			rc = sc_cli_json_string(b, ev->partition.ptr,
						ev->partition.len);
	}
	if (!rc && ev->ntags) {
		rc = sc_cli_buf_puts(b, ",\"tags\":[");
		for (size_t i = 0; !rc && i < ev->ntags; i++) {
			if (i)
				rc = sc_cli_buf_puts(b, ",");
			if (!rc)
				rc = sc_cli_json_string(b, ev->tags[i].ptr,
							ev->tags[i].len);
		}
		if (!rc)
			rc = sc_cli_buf_puts(b, "]");
	}
	if (!rc)
		rc = sc_cli_buf_puts(b, "}");
	return rc;
}
