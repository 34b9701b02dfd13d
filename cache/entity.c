/*
 * Entity states: validation of events, the apply semantics, accessors.
 *
 * Apply semantics (DESIGN.md, "Data model"):
 *   set      merge: each named attribute takes the event's value; a NULL
 *            value removes that name. Duplicate names in one event: the
 *            last occurrence wins.
 *   unset    remove the named attributes (values are ignored; names still
 *            have to be valid).
 *   replace  the attributes become exactly the event's; a NULL value counts
 *            as absent (the name is simply not in the result). Duplicates:
 *            the last occurrence wins.
 *   delete   the entity is gone; attributes are ignored. A delete of a
 *            missing entity changes nothing.
 * Every event but delete leaves the entity existing (an unset on a missing
 * entity creates it with no attributes). The event's position, time and
 * actor become the state's position, updated_at and updated_by.
 */
#include "cache/entity.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "common/wire.h"

/* ==== event type names ==================================================== */

const char *sc_event_type_name(sc_event_type type)
{
	switch (type) {
	case SC_EVENT_SET:
		return "set";
	case SC_EVENT_UNSET:
		return "unset";
	case SC_EVENT_REPLACE:
		return "replace";
	case SC_EVENT_DELETE:
		return "delete";
	}
	return NULL;
}

/* ==== validation ========================================================== */

static int check_id(sc_str id, sc_error *err)
{
	if (id.len == 0)
		return sc_error_set(err, SC_EINVAL,
				    "entity id is empty; give an id of 1..%d "
				    "bytes",
				    SC_ENTITY_ID_MAX);
	if (id.len > SC_ENTITY_ID_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "entity id is %zu bytes, longer than the "
				    "limit of %d",
				    id.len, SC_ENTITY_ID_MAX);
	if (!id.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "entity id pointer is NULL with length %zu",
				    id.len);
	return SC_OK;
}

/* A partition's name: 0..SC_EVENT_FIELD_MAX bytes (0: the default). */
static int check_partition(sc_str part, sc_error *err)
{
	if (part.len > SC_EVENT_FIELD_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "partition is %zu bytes, longer than the "
				    "limit of %d",
				    part.len, SC_EVENT_FIELD_MAX);
	if (part.len && !part.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "partition pointer is NULL with length %zu",
				    part.len);
	return SC_OK;
}

static int check_name(sc_str name, size_t i, sc_error *err)
{
	if (name.len == 0)
		return sc_error_set(err, SC_EINVAL,
				    "attrs[%zu].name is empty; names are "
				    "1..%d bytes",
				    i, SC_ATTR_NAME_MAX);
	if (name.len > SC_ATTR_NAME_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "attrs[%zu].name is %zu bytes, longer than "
				    "the limit of %d",
				    i, name.len, SC_ATTR_NAME_MAX);
	if (!name.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "attrs[%zu].name pointer is NULL with "
				    "length %zu",
				    i, name.len);
	return SC_OK;
}

/* A value as stored in a state or set by an event; `allow_null` for set and
 * replace events. */
static int check_value(const sc_value *v, size_t i, int allow_null,
		       sc_error *err)
{
	switch (v->type) {
	case SC_VALUE_NULL:
		if (allow_null)
			return SC_OK;
		return sc_error_set(err, SC_EINVAL,
				    "attrs[%zu].value is null; a stored "
				    "attribute needs a value",
				    i);
	case SC_VALUE_INT:
	case SC_VALUE_DOUBLE:
	case SC_VALUE_BOOL:
		return SC_OK;
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		if (!v->u.s.ptr && v->u.s.len)
			return sc_error_set(err, SC_EINVAL,
					    "attrs[%zu].value pointer is NULL "
					    "with length %zu",
					    i, v->u.s.len);
		return SC_OK;
	}
	return sc_error_set(err, SC_EINVAL,
			    "attrs[%zu].value has unknown type %d; use "
			    "null, string, int, double, bool or bytes",
			    i, (int)v->type);
}

/* Offset of the first byte of `s` that does not start a well-formed UTF-8
 * sequence (Unicode 15, table 3-7: no overlong forms, no surrogates, at
 * most U+10FFFF, none cut short), or SIZE_MAX when all of it is UTF-8. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		/* ASCII runs, eight bytes at a time. */
		while (i + 8 <= n) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			if (w & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= n)
			break;
		unsigned c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
		if (c >= 0xC2 && c <= 0xDF) {
			len = 2;
		} else if (c >= 0xE0 && c <= 0xEF) {
			len = 3;
			if (c == 0xE0)
				lo = 0xA0; /* overlong below U+0800 */
			else if (c == 0xED)
				hi = 0x9F; /* surrogates U+D800..U+DFFF */
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4;
			if (c == 0xF0)
				lo = 0x90; /* overlong below U+10000 */
			else if (c == 0xF4)
				hi = 0x8F; /* above U+10FFFF */
		} else {
			return i; /* continuation byte, C0, C1, F5..FF */
		}
		if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (size_t k = 2; k < len; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
		i += len;
	}
	return SIZE_MAX;
}

/* A string value must be UTF-8, as protobuf requires of a `string` field:
 * any protobuf reader can then read the log and the snapshots. */
static int check_utf8(sc_str id, const sc_attr *a, size_t i, sc_error *err)
{
	if (a->value.type != SC_VALUE_STRING || !a->value.u.s.len)
		return SC_OK;
	size_t at = utf8_invalid_at((const unsigned char *)a->value.u.s.ptr,
				    a->value.u.s.len);
	if (at == SIZE_MAX)
		return SC_OK;
	return sc_error_set(err, SC_EINVAL,
			    "entity '%.*s', attrs[%zu] '%.*s': the string "
			    "value is not valid UTF-8 (byte %zu of %zu); use a "
			    "bytes value for binary data",
			    (int)(id.len > 64 ? 64 : id.len), id.ptr, i,
			    (int)a->name.len, a->name.ptr, at,
			    a->value.u.s.len);
}

int sc_entity_too_big(sc_str id, sc_error *err)
{
	return sc_error_set(err, SC_ETOOBIG,
			    "entity '%.*s' would take 4 GiB or more; split "
			    "its attributes",
			    (int)(id.len > 64 ? 64 : id.len), id.ptr);
}

/* True when the bytes are all ASCII (so UTF-8), eight at a time. */
static inline bool all_ascii(const unsigned char *s, size_t n)
{
	const uint64_t high = 0x8080808080808080ull;
	uint64_t w;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&w, s + i, 8);
		if (w & high)
			return false;
	}
	if (i == n)
		return true;
	w = 0;
	memcpy(&w, s + i, n - i);
	return !(w & high);
}

/* True when attribute `a` of an event passes every check below at a
 * glance (the common case): a name of 1..SC_ATTR_NAME_MAX bytes, and
 * unless `names_only`, a value of a known type whose bytes are there and,
 * with `utf8`, a string of ASCII. False sends it through the checks,
 * which find its fault or pass it (a string of other UTF-8). */
static inline bool attr_plain(const sc_attr *a, bool names_only, bool utf8)
{
	if (a->name.len - 1 >= SC_ATTR_NAME_MAX || !a->name.ptr)
		return false;
	if (names_only)
		return true;
	const sc_value *v = &a->value;
	switch (v->type) {
	case SC_VALUE_NULL:
	case SC_VALUE_INT:
	case SC_VALUE_DOUBLE:
	case SC_VALUE_BOOL:
		return true;
	case SC_VALUE_BYTES:
		return v->u.s.ptr || !v->u.s.len;
	case SC_VALUE_STRING:
		if (!v->u.s.ptr)
			return !v->u.s.len;
		return !utf8 ||
		       all_ascii((const unsigned char *)v->u.s.ptr, v->u.s.len);
	}
	return false;
}

/* Every check but, with `utf8` false, the one of string values' bytes. */
static int validate_event(const sc_event *ev, bool utf8, sc_error *err)
{
	if (!ev)
		return sc_error_set(err, SC_EINVAL, "event is NULL");
	int rc = check_id(ev->entity, err);
	if (rc)
		return rc;
	if (!sc_event_type_name(ev->type))
		return sc_error_set(err, SC_EINVAL,
				    "unknown event type %d; use set, unset, "
				    "replace or delete",
				    (int)ev->type);
	if (ev->actor.len && !ev->actor.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "event actor pointer is NULL with length "
				    "%zu",
				    ev->actor.len);
	rc = check_partition(ev->partition, err);
	if (rc)
		return rc;
	if (ev->type == SC_EVENT_DELETE)
		return SC_OK;
	if (ev->nattrs && !ev->attrs)
		return sc_error_set(err, SC_EINVAL,
				    "event attrs pointer is NULL with %zu "
				    "attrs",
				    ev->nattrs);
	bool unset = ev->type == SC_EVENT_UNSET;
	for (size_t i = 0; i < ev->nattrs; i++) {
		if (attr_plain(&ev->attrs[i], unset, utf8))
			continue;
		rc = check_name(ev->attrs[i].name, i, err);
		if (rc)
			return rc;
		if (unset)
			continue;
		rc = check_value(&ev->attrs[i].value, i, 1, err);
		if (!rc && utf8)
			rc = check_utf8(ev->entity, &ev->attrs[i], i, err);
		if (rc)
			return rc;
	}
	return SC_OK;
}

int sc_entity_validate_event(const sc_event *ev, sc_error *err)
{
	return validate_event(ev, true, err);
}

int sc_entity_validate_stored(const sc_event *ev, sc_error *err)
{
	return validate_event(ev, false, err);
}

/* ==== ordering and sizes ================================================== */

static bool str_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline int name_cmp(sc_str a, sc_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	/* Most names differ in their first bytes and are short: a byte loop
	 * for the first 16, memcmp for the rest. */
	size_t i = 0;
	for (size_t k = n < 16 ? n : 16; i < k; i++)
		if (a.ptr[i] != b.ptr[i])
			return (unsigned char)a.ptr[i] < (unsigned char)b.ptr[i]
				   ? -1
				   : 1;
	int c = n > i ? memcmp(a.ptr + i, b.ptr + i, n - i) : 0;
	if (c)
		return c;
	return (a.len > b.len) - (a.len < b.len);
}

/* Sort pointers to attributes by name; equal names keep array order (the
 * pointers all point into one array), so the last of a run is the one the
 * event gave last. */
static int attr_ptr_cmp(const void *pa, const void *pb)
{
	const sc_attr *a = *(const sc_attr *const *)pa;
	const sc_attr *b = *(const sc_attr *const *)pb;
	int c = name_cmp(a->name, b->name);
	if (c)
		return c;
	return (a > b) - (a < b);
}

static void sort_attr_ptrs(const sc_attr **v, size_t n)
{
	if (n < 12) {
		for (size_t i = 1; i < n; i++) {
			const sc_attr *x = v[i];
			size_t j = i;
			while (j > 0 && attr_ptr_cmp(&v[j - 1], &x) > 0) {
				v[j] = v[j - 1];
				j--;
			}
			v[j] = x;
		}
		return;
	}
	qsort(v, n, sizeof *v, attr_ptr_cmp);
}

/* Keep the last of each run of equal names; returns the new count. */
static size_t dedup_keep_last(const sc_attr **v, size_t n)
{
	size_t out = 0;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && name_cmp(v[i]->name, v[i + 1]->name) == 0)
			continue;
		v[out++] = v[i];
	}
	return out;
}

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/* a += b, false on overflow. */
static int add_size(size_t *a, size_t b)
{
	if (*a > SIZE_MAX - b)
		return 0;
	*a += b;
	return 1;
}

/* ==== the snapshot limit ================================================== */

/*
 * Why a state of S <= SC_ENTITY_SNAPSHOT_SURE bytes needs no exact count.
 * With n attributes, S = sizeof(sc_entity) + align8(sizeof(sc_hamt_key) +
 * id + 1) + 16 n + by + 1 + sum(name + 1 [+ len + 1 for a string/bytes
 * value]). Its encoding E (sc_entity_snapshot_bytes) writes the same bytes
 * with varint lengths instead: every length is below 2^32 (at most 5 varint
 * bytes), an id or a name below 2^14 (2), a position at most 10.
 *   - a string/bytes attribute: name + len + 21 at most against
 *     name + len + 18 in S; any other: name + 19 (a 10-byte int) against
 *     name + 17. So each attribute takes at most 3 bytes more than in S.
 *   - the rest: E's framing, id, updated_at, updated_by, position and
 *     partition (EntityState.partition = 6, a name below 2^14) take at most
 *     6 + 3 + id + 9 + 6 + by + 11 + 3 + part = id + by + part + 38, S's
 *     header, key, updated_by and partition (part + 1 when named) at least
 *     id + by + part + 38 (asserted below).
 * So E <= S + 3 n, and 16 n <= S: E <= 19 S / 16.
 */
_Static_assert(sizeof(sc_entity_rec) == 16, "16 bytes a record");
_Static_assert(sizeof(sc_entity) + sizeof(sc_hamt_key) + 2 >= 38,
	       "the fixed part of a state outweighs its encoding");
_Static_assert(SC_ENTITY_ID_MAX < (1 << 14) && SC_ATTR_NAME_MAX < (1 << 14) &&
		   SC_EVENT_FIELD_MAX < (1 << 14),
	       "ids, names and partitions have 2-byte varint lengths");
_Static_assert((uint64_t)SC_ENTITY_SNAPSHOT_SURE * 19 <=
		   (uint64_t)SC_STATE_SNAPSHOT_MAX * 16,
	       "a state of SC_ENTITY_SNAPSHOT_SURE bytes fits in a snapshot");

static sc_attr rec_attr(const sc_entity *e, size_t i);

/* Mirrors entity_plan and put_entity of snapshot/encode.c. */
size_t sc_entity_snapshot_bytes(const sc_entity *e)
{
	sc_str id = sc_entity_id(e), by = sc_entity_updated_by(e);
	size_t n = sc_wire_len_size(id.len);
	for (size_t i = 0; i < e->nattrs; i++) {
		sc_attr a = rec_attr(e, i);
		size_t vl = sc_wire_value_size(&a.value);
		n += sc_wire_len_size(sc_wire_len_size(a.name.len) +
				      sc_wire_len_size(vl));
	}
	if (e->updated_at)
		n += 1 + 8;
	if (by.len)
		n += sc_wire_len_size(by.len);
	if (e->position)
		n += 1 + sc_wire_varint_len(e->position);
	sc_str part = sc_entity_partition(e);
	if (part.len)
		n += sc_wire_len_size(part.len);
	return sc_wire_len_size(n);
}

int sc_entity_check_snapshot(const sc_entity *e, sc_error *err)
{
	if (e->size <= SC_ENTITY_SNAPSHOT_SURE)
		return SC_OK;
	size_t bytes = sc_entity_snapshot_bytes(e);
	if (bytes <= SC_STATE_SNAPSHOT_MAX)
		return SC_OK;
	sc_str id = sc_entity_id(e);
	return sc_error_set(err, SC_ETOOBIG,
			    "entity '%.*s%s' would take %zu bytes in a "
			    "snapshot, over the limit of %u bytes for one "
			    "entity state; split its attributes over several "
			    "entities",
			    (int)(id.len > 64 ? 64 : id.len), id.ptr,
			    id.len > 64 ? "..." : "", bytes,
			    SC_STATE_SNAPSHOT_MAX);
}

/* ==== building a state ==================================================== */

/* The i-th attribute of a state as the public sc_attr. */
static sc_attr rec_attr(const sc_entity *e, size_t i)
{
	const char *base = (const char *)e;
	const sc_entity_rec *r = &sc_entity_table(e)[i];
	sc_attr a;
	a.name.ptr = base + r->name_off;
	a.name.len = r->name_len;
	a.value.type = (sc_value_type)r->type;
	switch (a.value.type) {
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		a.value.u.s.ptr = base + r->u.s.off;
		a.value.u.s.len = r->u.s.len;
		break;
	case SC_VALUE_INT:
		a.value.u.i = r->u.i;
		break;
	case SC_VALUE_DOUBLE:
		a.value.u.d = r->u.d;
		break;
	case SC_VALUE_BOOL:
		a.value.u.b = r->u.b;
		break;
	case SC_VALUE_NULL:
		a.value.u.i = 0;
		break;
	}
	return a;
}

/*
 * The attributes of a new state come from a merge of the previous state's
 * sorted table (`old`, may be NULL) and the event's sorted, de-duplicated
 * attributes (`ev`). The same merge runs twice: once to size the block,
 * once to fill it.
 */
typedef struct merge {
	const sc_entity *old;
	size_t nold;
	const sc_attr *const *ev;
	size_t nev;
	sc_event_type type;
	size_t i, j;
} merge;

/* The next attribute of the result into *out; false at the end. */
static bool merge_next(merge *m, sc_attr *out)
{
	for (;;) {
		bool has_a = m->i < m->nold;
		const sc_attr *b = m->j < m->nev ? m->ev[m->j] : NULL;
		if (!has_a && !b)
			return false;
		sc_attr a;
		if (has_a)
			a = rec_attr(m->old, m->i);
		int c = !has_a ? 1 : !b ? -1 : name_cmp(a.name, b->name);
		if (c < 0) {
			m->i++;
			*out = a;
			return true;
		}
		m->j++;
		if (c == 0)
			m->i++;
		if (m->type == SC_EVENT_UNSET)
			continue; /* removed, or the name was absent anyway */
		if (b->value.type == SC_VALUE_NULL)
			continue; /* set: removes; replace: absent */
		*out = *b;
		return true;
	}
}

static bool is_blob(sc_value_type t)
{
	return t == SC_VALUE_STRING || t == SC_VALUE_BYTES;
}

/* The attributes of the result as a list of sources, each a record of the
 * old state (copied as it is) or an attribute of the event: one pass of the
 * merge instead of two, for states of up to FAST_ATTRS attributes. */
#define FAST_ATTRS 64

typedef struct msrc {
	const sc_entity_rec *rec; /* from the old state, or NULL */
	const sc_attr *ev;	  /* from the event */
} msrc;

/* Fill src with the merge of m; returns the count, or SIZE_MAX if more
 * than FAST_ATTRS. Adds the string bytes of the result to *strings. */
static size_t merge_sources(const merge *m, msrc *src, size_t *strings)
{
	const char *base = (const char *)m->old;
	const sc_entity_rec *tab = m->old ? sc_entity_table(m->old) : NULL;
	size_t i = 0, j = 0, n = 0, bytes = 0;
	while (i < m->nold || j < m->nev) {
		int c;
		if (i == m->nold) {
			c = 1;
		} else if (j == m->nev) {
			c = -1;
		} else {
			sc_str a = {base + tab[i].name_off, tab[i].name_len};
			c = name_cmp(a, m->ev[j]->name);
		}
		if (n == FAST_ATTRS)
			return SIZE_MAX;
		if (c < 0) {
			const sc_entity_rec *r = &tab[i++];
			bytes += (size_t)r->name_len + 1;
			if (is_blob((sc_value_type)r->type))
				bytes += (size_t)r->u.s.len + 1;
			src[n++] = (msrc){r, NULL};
			continue;
		}
		const sc_attr *b = m->ev[j++];
		if (c == 0)
			i++;
		if (m->type == SC_EVENT_UNSET || b->value.type == SC_VALUE_NULL)
			continue;
		bytes += b->name.len + 1;
		if (is_blob(b->value.type))
			bytes += b->value.u.s.len + 1;
		src[n++] = (msrc){NULL, b};
	}
	*strings += bytes;
	return n;
}

/* The block of a `size`-byte state, rounded up to 8 (see
 * sc_entity_block_size), from `pool` (NULL: sc_malloc). */
static int entity_alloc(sc_pool *pool, size_t size, sc_entity **out,
			sc_error *err)
{
	*out =
	    pool ? sc_pool_alloc(pool, align8(size)) : sc_malloc(align8(size));
	if (!*out)
		return sc_error_set(err, ENOMEM,
				    "out of memory for a %zu-byte entity "
				    "state",
				    size);
	return SC_OK;
}

/* A new state `e` from entity_alloc, or an error when it is too big for a
 * snapshot (then it is freed and *out stays NULL). */
static int entity_done(sc_pool *pool, sc_entity *e, sc_entity **out,
		       sc_error *err)
{
	int rc = sc_entity_check_snapshot(e, err);
	if (rc) {
		if (pool)
			sc_pool_free(pool, e, align8(e->size));
		else
			sc_free(e);
		return rc;
	}
	*out = e;
	return SC_OK;
}

static int build_fast(sc_str part, sc_str id, const merge *m, const msrc *src,
		      size_t nattrs, size_t strings, int64_t updated_at,
		      sc_str actor, uint64_t position, uint64_t born,
		      sc_pool *pool, sc_entity **out, sc_error *err)
{
	size_t size = sc_entity_table_off(id.len) +
		      nattrs * sizeof(sc_entity_rec) + strings;
	if (size >= UINT32_MAX)
		return sc_entity_too_big(id, err);
	sc_entity *e;
	int rc = entity_alloc(pool, size, &e, err);
	if (rc)
		return rc;
	char *base = (char *)e;
	const char *obase = (const char *)m->old;
	char *p;
	sc_entity_rec *tab = sc_entity_put_head(e, part, id, nattrs, position,
						updated_at, born, actor, &p);
	e->size = (uint32_t)size;
	for (size_t k = 0; k < nattrs; k++) {
		sc_entity_rec *t = &tab[k];
		const sc_entity_rec *r = src[k].rec;
		if (r) {
			/* Unchanged: the record as it is, its strings moved.
			 * A name and a string value are adjacent in the old
			 * block (each with its NUL): one copy. */
			*t = *r;
			t->name_off = (uint32_t)(p - base);
			size_t nl = r->name_len;
			if (!is_blob((sc_value_type)r->type)) {
				p = sc_entity_put_bytes(p, obase + r->name_off,
							nl);
				continue;
			}
			size_t vl = r->u.s.len;
			t->u.s.off = (uint32_t)(p - base + nl + 1);
			if (r->u.s.off == r->name_off + nl + 1) {
				memcpy(p, obase + r->name_off, nl + 1 + vl);
				p[nl] = '\0';
				p[nl + 1 + vl] = '\0';
				p += nl + 1 + vl + 1;
			} else {
				p = sc_entity_put_bytes(p, obase + r->name_off,
							nl);
				p = sc_entity_put_bytes(p, obase + r->u.s.off,
							vl);
			}
			continue;
		}
		p = sc_entity_put_attr(base, p, t, src[k].ev);
	}
	SC_ENSURE(p == base + size);
	return entity_done(pool, e, out, err);
}

/* Allocate and fill a state from the attribute stream of `m`. */
static int build_from_merge(sc_str part, sc_str id, const merge *m0,
			    int64_t updated_at, sc_str actor, uint64_t position,
			    uint64_t born, sc_pool *pool, sc_entity **out,
			    sc_error *err)
{
	/* Small states (all but pathological ones): one merge pass. */
	bool small = m0->nold + m0->nev <= FAST_ATTRS && actor.len < UINT32_MAX;
	for (size_t k = 0; small && k < m0->nev; k++)
		small = !is_blob(m0->ev[k]->value.type) ||
			m0->ev[k]->value.u.s.len < UINT32_MAX;
	if (small) {
		/* At most FAST_ATTRS strings below 4 GiB each: no sum wraps. */
		msrc src[FAST_ATTRS];
		size_t strings = sc_entity_head_strings(actor, part);
		size_t n = merge_sources(m0, src, &strings);
		if (n != SIZE_MAX && strings < UINT32_MAX)
			return build_fast(part, id, m0, src, n, strings,
					  updated_at, actor, position, born,
					  pool, out, err);
	}
	merge m = *m0;
	size_t nattrs = 0, strings = sc_entity_head_strings(actor, part);
	int ok = actor.len < UINT32_MAX;
	sc_attr a;
	while (merge_next(&m, &a)) {
		nattrs++;
		ok &= add_size(&strings, a.name.len + 1);
		if (is_blob(a.value.type)) {
			ok &= a.value.u.s.len < UINT32_MAX;
			ok &= add_size(&strings, a.value.u.s.len + 1);
		}
	}
	size_t size = sc_entity_table_off(id.len);
	ok &= nattrs < UINT32_MAX / sizeof(sc_entity_rec);
	ok &= add_size(&size, nattrs * sizeof(sc_entity_rec)) &&
	      add_size(&size, strings) && size < UINT32_MAX;
	if (!ok)
		return sc_entity_too_big(id, err);

	sc_entity *e;
	int rc = entity_alloc(pool, size, &e, err);
	if (rc)
		return rc;
	char *base = (char *)e;
	char *p;
	sc_entity_rec *tab = sc_entity_put_head(e, part, id, nattrs, position,
						updated_at, born, actor, &p);
	e->size = (uint32_t)size;

	m = *m0;
	size_t k = 0;
	for (; merge_next(&m, &a); k++) {
		sc_entity_rec *t = &tab[k];
		t->name_off = (uint32_t)(p - base);
		t->name_len = (uint8_t)a.name.len;
		t->type = (uint8_t)a.value.type;
		t->reserved = 0;
		p = sc_entity_put_bytes(p, a.name.ptr, a.name.len);
		switch (a.value.type) {
		case SC_VALUE_STRING:
		case SC_VALUE_BYTES:
			t->u.s.off = (uint32_t)(p - base);
			t->u.s.len = (uint32_t)a.value.u.s.len;
			p = sc_entity_put_bytes(p, a.value.u.s.ptr,
						a.value.u.s.len);
			break;
		case SC_VALUE_INT:
			t->u.i = a.value.u.i;
			break;
		case SC_VALUE_DOUBLE:
			t->u.d = a.value.u.d;
			break;
		case SC_VALUE_BOOL:
			t->u.i = 0;
			t->u.b = a.value.u.b;
			break;
		case SC_VALUE_NULL:
			break;
		}
	}
	SC_ENSURE(k == nattrs);
	SC_ENSURE(p <= base + size);
	return entity_done(pool, e, out, err);
}

/* Small events sort on the stack; large ones need a heap array. */
#define STACK_ATTRS 32

int sc_entity_build(const sc_entity *prev, const sc_event *ev, uint64_t born,
		    sc_entity **out, sc_error *err)
{
	return sc_entity_build_in(prev, ev, born, NULL, out, err);
}

int sc_entity_build_in(const sc_entity *prev, const sc_event *ev, uint64_t born,
		       sc_pool *pool, sc_entity **out, sc_error *err)
{
	*out = NULL;
	if (ev->type == SC_EVENT_DELETE)
		return SC_OK;

	const sc_attr *stack[STACK_ATTRS];
	const sc_attr **v = stack;
	if (ev->nattrs > STACK_ATTRS) {
		if (ev->nattrs > SIZE_MAX / sizeof *v)
			return sc_error_set(err, SC_ETOOBIG,
					    "event has too many attrs (%zu)",
					    ev->nattrs);
		v = sc_malloc(ev->nattrs * sizeof *v);
		if (!v)
			return sc_error_set(err, ENOMEM,
					    "out of memory sorting %zu attrs",
					    ev->nattrs);
	}
	for (size_t i = 0; i < ev->nattrs; i++)
		v[i] = &ev->attrs[i];
	/* Events usually name their attributes in order, once each: one
	 * pass tells, and then needs no sort and no de-duplication. */
	size_t n = ev->nattrs;
	bool ordered = true;
	for (size_t i = 1; i < n && ordered; i++)
		ordered = name_cmp(v[i - 1]->name, v[i]->name) < 0;
	if (!ordered) {
		sort_attr_ptrs(v, n);
		n = dedup_keep_last(v, n);
	}

	merge m = {
	    .ev = v,
	    .nev = n,
	    .type = ev->type,
	};
	if (prev && ev->type != SC_EVENT_REPLACE) {
		m.old = prev;
		m.nold = prev->nattrs;
	}
	int rc =
	    build_from_merge(ev->partition, ev->entity, &m, ev->time, ev->actor,
			     ev->position, born, pool, out, err);
	if (v != stack)
		sc_free(v);
	return rc;
}

int sc_entity_build_loaded(sc_str part, sc_str id, const sc_attr *attrs,
			   size_t nattrs, int64_t updated_at, sc_str updated_by,
			   uint64_t position, uint64_t born, sc_pool *pool,
			   sc_entity **out, sc_error *err)
{
	*out = NULL;
	int rc = check_id(id, err);
	if (!rc)
		rc = check_partition(part, err);
	if (rc)
		return rc;
	if (updated_by.len && !updated_by.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "updated_by pointer is NULL with length "
				    "%zu",
				    updated_by.len);
	if (nattrs && !attrs)
		return sc_error_set(err, SC_EINVAL,
				    "attrs pointer is NULL with %zu attrs",
				    nattrs);
	for (size_t i = 0; i < nattrs; i++) {
		rc = check_name(attrs[i].name, i, err);
		if (!rc)
			rc = check_value(&attrs[i].value, i, 0, err);
		if (!rc)
			rc = check_utf8(id, &attrs[i], i, err);
		if (rc)
			return rc;
	}
	sc_event ev = {
	    .position = position,
	    .entity = id,
	    .type = SC_EVENT_REPLACE,
	    .attrs = attrs,
	    .nattrs = nattrs,
	    .time = updated_at,
	    .actor = updated_by,
	    .partition = part,
	};
	/* Duplicates are an error here (a stored state never has them), so
	 * look for them before building with replace semantics. */
	const sc_attr *stack[STACK_ATTRS];
	const sc_attr **v = stack;
	if (nattrs > STACK_ATTRS) {
		if (nattrs > SIZE_MAX / sizeof *v)
			return sc_error_set(err, SC_ETOOBIG,
					    "too many attrs (%zu)", nattrs);
		v = sc_malloc(nattrs * sizeof *v);
		if (!v)
			return sc_error_set(err, ENOMEM,
					    "out of memory sorting %zu attrs",
					    nattrs);
	}
	for (size_t i = 0; i < nattrs; i++)
		v[i] = &attrs[i];
	sort_attr_ptrs(v, nattrs);
	for (size_t i = 1; i < nattrs; i++) {
		if (name_cmp(v[i - 1]->name, v[i]->name) == 0) {
			rc = sc_error_set(err, SC_EINVAL,
					  "attrs[%zu].name '%.*s' appears more "
					  "than once",
					  (size_t)(v[i] - attrs),
					  (int)v[i]->name.len, v[i]->name.ptr);
			break;
		}
	}
	if (!rc) {
		merge m = {.ev = v, .nev = nattrs, .type = SC_EVENT_REPLACE};
		rc = build_from_merge(part, id, &m, ev.time, ev.actor,
				      ev.position, born, pool, out, err);
	}
	if (v != stack)
		sc_free(v);
	return rc;
}

/* ==== public: standalone states and accessors ============================= */

int sc_entity_apply(const sc_entity *prev, const sc_event *ev, sc_entity **out,
		    sc_error *err)
{
	if (!out)
		return sc_error_set(err, SC_EINVAL, "out is NULL");
	*out = NULL;
	int rc = sc_entity_validate_event(ev, err);
	if (rc)
		return rc;
	return sc_entity_apply_valid(prev, ev, out, err);
}

int sc_entity_apply_valid(const sc_entity *prev, const sc_event *ev,
			  sc_entity **out, sc_error *err)
{
	*out = NULL;
	if (prev && !str_eq(sc_entity_id(prev), ev->entity))
		return sc_error_set(err, SC_EINVAL,
				    "event entity differs from the id of the "
				    "previous state");
	if (prev && !str_eq(sc_entity_partition(prev), ev->partition))
		return sc_error_set(err, SC_EINVAL,
				    "event partition differs from the "
				    "partition of the previous state");
	return sc_entity_build(prev, ev, 0, out, err);
}

void sc_entity_free(sc_entity *e)
{
	sc_free(e);
}

sc_str sc_entity_id(const sc_entity *e)
{
	const sc_hamt_key *k = sc_entity_key(e);
	return (sc_str){(const char *)k->bytes, k->len};
}

int64_t sc_entity_updated_at(const sc_entity *e)
{
	return e->updated_at;
}

sc_str sc_entity_updated_by(const sc_entity *e)
{
	const char *p = (const char *)(sc_entity_table(e) + e->nattrs);
	return (sc_str){p, e->actor_len};
}

sc_str sc_entity_partition(const sc_entity *e)
{
	if (!e->part_len)
		return (sc_str){"", 0};
	const char *p = (const char *)(sc_entity_table(e) + e->nattrs);
	return (sc_str){p + e->actor_len + 1, e->part_len};
}

uint64_t sc_entity_position(const sc_entity *e)
{
	return e->position;
}

size_t sc_entity_attr_count(const sc_entity *e)
{
	return e->nattrs;
}

sc_attr sc_entity_attr(const sc_entity *e, size_t i)
{
	SC_REQUIRE(i < e->nattrs);
	return rec_attr(e, i);
}

size_t sc_entity_memory_bytes(const sc_entity *e)
{
	return e->size;
}

bool sc_entity_find(const sc_entity *e, sc_str name, sc_value *out)
{
	const sc_entity_rec *tab = sc_entity_table(e);
	const char *base = (const char *)e;
	size_t lo = 0, hi = e->nattrs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		sc_str n = {base + tab[mid].name_off, tab[mid].name_len};
		int c = name_cmp(n, name);
		if (c == 0) {
			if (out)
				*out = rec_attr(e, mid).value;
			return true;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Doubles compare by bit pattern, so a NaN state equals itself. */
bool sc_value_equal(const sc_value *a, const sc_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case SC_VALUE_NULL:
		return true;
	case SC_VALUE_INT:
		return a->u.i == b->u.i;
	case SC_VALUE_DOUBLE:
		return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;
	case SC_VALUE_BOOL:
		return a->u.b == b->u.b;
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		return str_eq(a->u.s, b->u.s);
	}
	return false;
}

bool sc_entity_equal(const sc_entity *a, const sc_entity *b)
{
	if (a == b)
		return true;
	if (!a || !b)
		return false;
	if (a->position != b->position || a->updated_at != b->updated_at ||
	    a->nattrs != b->nattrs ||
	    !str_eq(sc_entity_id(a), sc_entity_id(b)) ||
	    !str_eq(sc_entity_partition(a), sc_entity_partition(b)) ||
	    !str_eq(sc_entity_updated_by(a), sc_entity_updated_by(b)))
		return false;
	for (size_t i = 0; i < a->nattrs; i++) {
		sc_attr x = rec_attr(a, i), y = rec_attr(b, i);
		if (!str_eq(x.name, y.name) ||
		    !sc_value_equal(&x.value, &y.value))
			return false;
	}
	return true;
}
