/*
 * Entity states: apply semantics for every event type and edge, limits,
 * accessors, sorted attributes, equality.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "statecache/cache.h"
#include "statecache/store.h"
#include "statecache/testing.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

/* ==== helpers ============================================================= */

static sc_str S(const char *s)
{
	return (sc_str){s, strlen(s)};
}

static sc_attr A_int(const char *name, int64_t v)
{
	sc_attr a = {.name = S(name), .value.type = SC_VALUE_INT};
	a.value.u.i = v;
	return a;
}

static sc_attr A_str(const char *name, const char *v)
{
	sc_attr a = {.name = S(name), .value.type = SC_VALUE_STRING};
	a.value.u.s = S(v);
	return a;
}

static sc_attr A_raw(const char *name, sc_value_type type, const char *v,
		     size_t len)
{
	sc_attr a = {.name = S(name), .value.type = type};
	a.value.u.s = (sc_str){v, len};
	return a;
}

static sc_attr A_null(const char *name)
{
	sc_attr a = {.name = S(name), .value.type = SC_VALUE_NULL};
	return a;
}

static sc_event E(sc_event_type type, const char *id, const sc_attr *attrs,
		  size_t n, uint64_t pos)
{
	sc_event ev = {
	    .position = pos,
	    .entity = S(id),
	    .type = type,
	    .attrs = attrs,
	    .nattrs = n,
	    .time = (int64_t)pos * 1000,
	    .actor = S("tester"),
	};
	return ev;
}

/* Apply and expect success; frees prev. */
static sc_entity *apply_ok(sc_entity *prev, const sc_event *ev)
{
	sc_entity *out = (sc_entity *)0x1;
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_entity_apply(prev, ev, &out, &err);
	if (rc)
		fail_msg("apply failed: %s", err.message);
	sc_entity_free(prev);
	return out;
}

static void expect_einval(const sc_entity *prev, const sc_event *ev,
			  const char *needle)
{
	sc_entity *out = (sc_entity *)0x1;
	sc_error err;
	sc_error_clear(&err);
	assert_int_equal(sc_entity_apply(prev, ev, &out, &err), SC_EINVAL);
	assert_null(out);
	assert_int_equal(err.code, SC_EINVAL);
	if (!strstr(err.message, needle))
		fail_msg("message '%s' does not name '%s'", err.message,
			 needle);
}

static int64_t get_int(const sc_entity *e, const char *name)
{
	sc_value v;
	assert_true(sc_entity_find(e, S(name), &v));
	assert_int_equal(v.type, SC_VALUE_INT);
	return v.u.i;
}

static void assert_sorted(const sc_entity *e)
{
	for (size_t i = 1; i < sc_entity_attr_count(e); i++) {
		sc_str a = sc_entity_attr(e, i - 1).name;
		sc_str b = sc_entity_attr(e, i).name;
		size_t n = a.len < b.len ? a.len : b.len;
		int c = memcmp(a.ptr, b.ptr, n);
		assert_true(c < 0 || (c == 0 && a.len < b.len));
	}
}

/* ==== set ================================================================= */

static void test_set_creates_and_merges(void **state)
{
	(void)state;
	sc_attr a1[] = {A_int("b", 2), A_str("a", "x"), A_int("c", 3)};
	sc_event ev = E(SC_EVENT_SET, "dev-1", a1, 3, 7);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 3);
	assert_sorted(e);
	assert_int_equal(sc_entity_position(e), 7);
	assert_int_equal(sc_entity_updated_at(e), 7000);
	sc_str by = sc_entity_updated_by(e);
	assert_int_equal(by.len, 6);
	assert_string_equal(by.ptr, "tester"); /* NUL-terminated */
	sc_str id = sc_entity_id(e);
	assert_int_equal(id.len, 5);
	assert_memory_equal(id.ptr, "dev-1", 5);
	assert_string_equal(sc_entity_attr(e, 0).value.u.s.ptr, "x");

	sc_attr a2[] = {A_int("c", 30), A_null("a"), A_int("d", 4)};
	ev = E(SC_EVENT_SET, "dev-1", a2, 3, 9);
	e = apply_ok(e, &ev);
	assert_int_equal(sc_entity_attr_count(e), 3); /* b c d */
	assert_false(sc_entity_find(e, S("a"), NULL));
	assert_int_equal(get_int(e, "b"), 2);
	assert_int_equal(get_int(e, "c"), 30);
	assert_int_equal(get_int(e, "d"), 4);
	assert_int_equal(sc_entity_position(e), 9);
	assert_sorted(e);
	sc_entity_free(e);
}

static void test_set_null_on_missing_name_and_empty_set(void **state)
{
	(void)state;
	sc_attr a[] = {A_null("ghost")};
	sc_event ev = E(SC_EVENT_SET, "x", a, 1, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_non_null(e); /* exists, no attributes */
	assert_int_equal(sc_entity_attr_count(e), 0);
	ev = E(SC_EVENT_SET, "x", NULL, 0, 2);
	e = apply_ok(e, &ev);
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	assert_int_equal(sc_entity_position(e), 2);
	sc_entity_free(e);
}

static void test_set_duplicates_last_wins(void **state)
{
	(void)state;
	sc_attr a[] = {A_int("k", 1), A_int("j", 5), A_int("k", 2),
		       A_int("k", 3)};
	sc_event ev = E(SC_EVENT_SET, "x", a, 4, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_int_equal(sc_entity_attr_count(e), 2);
	assert_int_equal(get_int(e, "k"), 3);
	/* a null last removes, a value after a null sets */
	sc_attr b[] = {A_int("k", 9), A_null("k")};
	ev = E(SC_EVENT_SET, "x", b, 2, 2);
	e = apply_ok(e, &ev);
	assert_false(sc_entity_find(e, S("k"), NULL));
	sc_attr c[] = {A_null("j"), A_int("j", 6)};
	ev = E(SC_EVENT_SET, "x", c, 2, 3);
	e = apply_ok(e, &ev);
	assert_int_equal(get_int(e, "j"), 6);
	sc_entity_free(e);
}

static void test_set_many_attrs_sorted(void **state)
{
	(void)state;
	enum { N = 300 };
	static sc_attr a[N];
	static char names[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "n%03d", (i * 7919) % N);
		a[i] = A_int(names[i], i);
	}
	sc_event ev = E(SC_EVENT_SET, "big", a, N, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_int_equal(sc_entity_attr_count(e), N);
	assert_sorted(e);
	for (int i = 0; i < N; i++)
		assert_int_equal(get_int(e, names[i]), i);
	sc_entity_free(e);
}

/* ==== unset, replace, delete ============================================== */

static void test_unset(void **state)
{
	(void)state;
	sc_attr a[] = {A_int("a", 1), A_int("b", 2), A_int("c", 3)};
	sc_event ev = E(SC_EVENT_SET, "u", a, 3, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	sc_attr u[] = {{.name = S("b")}, {.name = S("zz")}, {.name = S("a")}};
	u[0].value.type = (sc_value_type)99; /* ignored for unset */
	ev = E(SC_EVENT_UNSET, "u", u, 3, 2);
	e = apply_ok(e, &ev);
	assert_int_equal(sc_entity_attr_count(e), 1);
	assert_int_equal(get_int(e, "c"), 3);
	sc_entity_free(e);
}

static void test_unset_on_missing_entity_creates_it(void **state)
{
	(void)state;
	sc_attr u[] = {{.name = S("a")}};
	sc_event ev = E(SC_EVENT_UNSET, "m", u, 1, 5);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	assert_int_equal(sc_entity_position(e), 5);
	sc_entity_free(e);
}

static void test_replace(void **state)
{
	(void)state;
	sc_attr a[] = {A_int("a", 1), A_int("b", 2)};
	sc_event ev = E(SC_EVENT_SET, "r", a, 2, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	sc_attr r[] = {A_int("c", 3), A_null("a"), A_int("c", 4)};
	ev = E(SC_EVENT_REPLACE, "r", r, 3, 2);
	e = apply_ok(e, &ev);
	assert_int_equal(sc_entity_attr_count(e), 1); /* null = absent */
	assert_int_equal(get_int(e, "c"), 4);
	ev = E(SC_EVENT_REPLACE, "r", NULL, 0, 3);
	e = apply_ok(e, &ev);
	assert_non_null(e);
	assert_int_equal(sc_entity_attr_count(e), 0);
	sc_entity_free(e);
}

static void test_delete_and_set_after_delete(void **state)
{
	(void)state;
	sc_event ev = E(SC_EVENT_DELETE, "d", NULL, 0, 1);
	assert_null(apply_ok(NULL, &ev)); /* delete of missing: nothing */
	sc_attr a[] = {A_int("a", 1), A_int("b", 2)};
	ev = E(SC_EVENT_SET, "d", a, 2, 2);
	sc_entity *e = apply_ok(NULL, &ev);
	ev = E(SC_EVENT_DELETE, "d", a, 2, 3); /* attrs ignored */
	e = apply_ok(e, &ev);
	assert_null(e);
	sc_attr b[] = {A_int("c", 3)};
	ev = E(SC_EVENT_SET, "d", b, 1, 4);
	e = apply_ok(NULL, &ev);
	assert_int_equal(sc_entity_attr_count(e), 1); /* fresh */
	assert_false(sc_entity_find(e, S("a"), NULL));
	sc_entity_free(e);
}

/* ==== validation and limits =============================================== */

static void test_limits_id(void **state)
{
	(void)state;
	static char id[SC_ENTITY_ID_MAX + 2];
	memset(id, 'i', sizeof id - 1);
	sc_event ev = E(SC_EVENT_SET, "", NULL, 0, 1);
	ev.entity = (sc_str){id, SC_ENTITY_ID_MAX};
	sc_entity *e = apply_ok(NULL, &ev);
	assert_int_equal(sc_entity_id(e).len, SC_ENTITY_ID_MAX);
	assert_memory_equal(sc_entity_id(e).ptr, id, SC_ENTITY_ID_MAX);
	sc_entity_free(e);
	ev.entity.len = SC_ENTITY_ID_MAX + 1;
	expect_einval(NULL, &ev, "entity id");
	ev.entity.len = 0;
	expect_einval(NULL, &ev, "entity id");
	ev.entity = (sc_str){NULL, 3};
	expect_einval(NULL, &ev, "entity id");
}

static void test_limits_name(void **state)
{
	(void)state;
	static char name[SC_ATTR_NAME_MAX + 2];
	memset(name, 'n', sizeof name - 1);
	sc_attr a[] = {A_int("ok", 1), A_int("x", 2)};
	a[1].name = (sc_str){name, SC_ATTR_NAME_MAX};
	sc_event ev = E(SC_EVENT_SET, "id", a, 2, 1);
	sc_entity *e = apply_ok(NULL, &ev);
	assert_int_equal(sc_entity_attr_count(e), 2);
	sc_entity_free(e);
	a[1].name.len = SC_ATTR_NAME_MAX + 1;
	expect_einval(NULL, &ev, "attrs[1].name");
	a[1].name.len = 0;
	expect_einval(NULL, &ev, "attrs[1].name");
	a[1].name = (sc_str){NULL, 4};
	expect_einval(NULL, &ev, "attrs[1].name");
	ev.type = SC_EVENT_UNSET; /* names are checked for unset too */
	expect_einval(NULL, &ev, "attrs[1].name");
}

static void test_bad_types(void **state)
{
	(void)state;
	sc_event ev = E((sc_event_type)0, "id", NULL, 0, 1);
	expect_einval(NULL, &ev, "event type");
	ev.type = (sc_event_type)5;
	expect_einval(NULL, &ev, "event type");
	sc_attr a[] = {A_int("a", 1)};
	a[0].value.type = (sc_value_type)6;
	ev = E(SC_EVENT_SET, "id", a, 1, 1);
	expect_einval(NULL, &ev, "attrs[0].value");
	ev.type = SC_EVENT_REPLACE;
	expect_einval(NULL, &ev, "attrs[0].value");
	a[0] = A_str("a", "x");
	a[0].value.u.s = (sc_str){NULL, 2};
	expect_einval(NULL, &ev, "attrs[0].value");
	a[0].value.type = SC_VALUE_BYTES; /* bytes need their pointer too */
	expect_einval(NULL, &ev, "attrs[0].value");
	ev = E(SC_EVENT_SET, "id", NULL, 3, 1);
	expect_einval(NULL, &ev, "attrs");
	ev = E(SC_EVENT_SET, "id", NULL, 0, 1);
	ev.actor = (sc_str){NULL, 1};
	expect_einval(NULL, &ev, "actor");
	/* an event whose id differs from prev's */
	sc_event ok = E(SC_EVENT_SET, "p", NULL, 0, 1);
	sc_entity *p = apply_ok(NULL, &ok);
	ev = E(SC_EVENT_SET, "q", NULL, 0, 2);
	expect_einval(p, &ev, "differs");
	sc_entity_free(p);
}

static void test_too_big(void **state)
{
	(void)state;
	/* Offsets are 32-bit: a 4 GiB value is refused before it is read (a
	 * bytes value: a string value's bytes are read to check UTF-8). */
	sc_attr a[] = {A_raw("blob", SC_VALUE_BYTES, "x", 1)};
	a[0].value.u.s.len = (size_t)UINT32_MAX;
	sc_event ev = E(SC_EVENT_SET, "big", a, 1, 1);
	sc_entity *out = (sc_entity *)0x1;
	sc_error err;
	assert_int_equal(sc_entity_apply(NULL, &ev, &out, &err), SC_ETOOBIG);
	assert_null(out);
	assert_non_null(strstr(err.message, "4 GiB"));

	sc_cache *cache;
	assert_int_equal(sc_cache_create(NULL, &cache, NULL), 0);
	assert_int_equal(sc_cache_apply(cache, &ev, &err), SC_ETOOBIG);
	assert_false(sc_cache_pending(cache));
	a[0].value.u.s.len = 1;
	assert_int_equal(sc_cache_apply(cache, &ev, &err), 0);
	assert_int_equal(sc_cache_promote(cache), 0);
	assert_int_equal(sc_cache_len(cache), 1);
	sc_cache_destroy(cache);
}

/* ==== values, equality, allocation failure ================================ */

static void test_value_kinds_and_equality(void **state)
{
	(void)state;
	sc_attr a[5];
	a[0] = A_str("s", "hello");
	a[1] = A_int("i", -5);
	a[2] = (sc_attr){.name = S("d"), .value.type = SC_VALUE_DOUBLE};
	a[2].value.u.d = 2.5;
	a[3] = (sc_attr){.name = S("b"), .value.type = SC_VALUE_BOOL};
	a[3].value.u.b = true;
	a[4] = (sc_attr){.name = S("y"), .value.type = SC_VALUE_BYTES};
	a[4].value.u.s = (sc_str){"a\0b", 3};
	sc_event ev = E(SC_EVENT_SET, "v", a, 5, 1);
	sc_entity *e1 = apply_ok(NULL, &ev);
	sc_entity *e2 = apply_ok(NULL, &ev);
	assert_true(sc_entity_equal(e1, e2));
	assert_true(sc_entity_equal(NULL, NULL));
	assert_false(sc_entity_equal(e1, NULL));
	sc_value v;
	assert_true(sc_entity_find(e1, S("y"), &v));
	assert_int_equal(v.type, SC_VALUE_BYTES);
	assert_int_equal(v.u.s.len, 3);
	assert_memory_equal(v.u.s.ptr, "a\0b", 3);
	assert_true(sc_entity_find(e1, S("d"), &v));
	assert_true(v.u.d == 2.5);
	assert_true(sc_entity_find(e1, S("b"), &v));
	assert_true(v.u.b);
	assert_true(sc_entity_memory_bytes(e1) > 5 * 9); /* names + values */

	/* each field matters */
	a[1].value.u.i = -6;
	sc_entity *e3 = apply_ok(NULL, &ev);
	assert_false(sc_entity_equal(e1, e3));
	sc_entity_free(e3);
	a[1].value.u.i = -5;
	ev.position = 2;
	e3 = apply_ok(NULL, &ev);
	assert_false(sc_entity_equal(e1, e3));
	sc_entity_free(e3);
	ev.position = 1;
	ev.actor = S("other");
	e3 = apply_ok(NULL, &ev);
	assert_false(sc_entity_equal(e1, e3));
	sc_entity_free(e3);
	ev.actor = S("tester");
	a[2].value.type = SC_VALUE_INT; /* same bits, other type */
	e3 = apply_ok(NULL, &ev);
	assert_false(sc_entity_equal(e1, e3));
	sc_entity_free(e3);
	sc_entity_free(e1);
	sc_entity_free(e2);
}

static void test_enomem(void **state)
{
	(void)state;
	enum { N = 40 }; /* above the stack sort buffer: two allocations */
	sc_attr a[N];
	char names[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "k%d", i);
		a[i] = A_int(names[i], i);
	}
	sc_event ev = E(SC_EVENT_SET, "m", a, N, 1);
	for (long k = 0; k < 2; k++) {
		sc_entity *out = (sc_entity *)0x1;
		sc_error err;
		sc_testing_fail_alloc_after(k);
		assert_int_equal(sc_entity_apply(NULL, &ev, &out, &err),
				 ENOMEM);
		sc_testing_fail_alloc_after(-1);
		assert_null(out);
		assert_non_null(strstr(err.message, "out of memory"));
	}
	sc_entity_free(apply_ok(NULL, &ev));
	sc_entity_free(NULL);
	assert_string_equal(sc_event_type_name(SC_EVENT_SET), "set");
	assert_string_equal(sc_event_type_name(SC_EVENT_DELETE), "delete");
	assert_null(sc_event_type_name((sc_event_type)9));
}

/* ==== string values are UTF-8 ============================================ */

#define RAW(s) s, sizeof(s) - 1

static const struct {
	const char *s;
	size_t len;
} bad_utf8[] = {
    {RAW("A\xff\xfe")},
    {RAW("\xc0\xaf")},	       /* overlong '/' */
    {RAW("\xc1\xbf")},	       /* overlong, C1 lead */
    {RAW("\xe0\x80\xaf")},     /* overlong in three bytes */
    {RAW("\xf0\x80\x80\xaf")}, /* overlong in four bytes */
    {RAW("\xed\xa0\x80")},     /* surrogate U+D800 */
    {RAW("\xed\xbf\xbf")},     /* surrogate U+DFFF */
    {RAW("\xf4\x90\x80\x80")}, /* above U+10FFFF */
    {RAW("\xf5\x80\x80\x80")}, /* lead byte out of range */
    {RAW("\x80")},	       /* lone continuation byte */
    {RAW("ok \xc3")},	       /* cut short at the end */
    {RAW("\xe2\x82")},	       /* euro sign cut short */
    {RAW("\xf0\x9f\x98!")},    /* emoji cut short, ASCII after */
    {RAW("\xe2\x28\xa1")},     /* bad second byte */
    {RAW("ascii run longer than eight\xff")},
};

static const struct {
	const char *s;
	size_t len;
} good_utf8[] = {
    {RAW("")},
    {RAW("plain ascii text, more than eight bytes")},
    {RAW("\xc3\xa9t\xc3\xa9")},		   /* été */
    {RAW("\xe2\x82\xac 5")},		   /* euro sign */
    {RAW("\xf0\x9f\x98\x80")},		   /* emoji */
    {RAW("\xed\x9f\xbf")},		   /* U+D7FF, below the surrogates */
    {RAW("\xee\x80\x80")},		   /* U+E000, above them */
    {RAW("\xf4\x8f\xbf\xbf")},		   /* U+10FFFF */
    {RAW("\xc2\x80\xdf\xbf\xe0\xa0\x80")}, /* smallest of each length */
};

static void test_string_utf8(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof bad_utf8 / sizeof bad_utf8[0]; k++) {
		sc_attr a[2] = {A_int("n", 1),
				A_raw("label", SC_VALUE_STRING, bad_utf8[k].s,
				      bad_utf8[k].len)};
		for (int t = SC_EVENT_SET; t <= SC_EVENT_REPLACE; t++) {
			if (t == SC_EVENT_UNSET)
				continue;
			sc_event ev = E((sc_event_type)t, "doc-7", a, 2, 1);
			expect_einval(NULL, &ev, "UTF-8");
			expect_einval(NULL, &ev, "use a bytes value");
			expect_einval(NULL, &ev, "attrs[1] 'label'");
			expect_einval(NULL, &ev, "entity 'doc-7'");
		}
		/* The same bytes as a bytes value are fine, and an unset
		 * ignores values. */
		a[1].value.type = SC_VALUE_BYTES;
		sc_event ev = E(SC_EVENT_SET, "doc-7", a, 2, 1);
		sc_entity_free(apply_ok(NULL, &ev));
		a[1].value.type = SC_VALUE_STRING;
		ev = E(SC_EVENT_UNSET, "doc-7", a, 2, 1);
		sc_entity_free(apply_ok(NULL, &ev));
	}
	for (size_t k = 0; k < sizeof good_utf8 / sizeof good_utf8[0]; k++) {
		sc_attr a = A_raw("label", SC_VALUE_STRING, good_utf8[k].s,
				  good_utf8[k].len);
		sc_event ev = E(SC_EVENT_SET, "doc-7", &a, 1, 1);
		sc_entity *e = apply_ok(NULL, &ev);
		sc_value v;
		assert_true(sc_entity_find(e, S("label"), &v));
		assert_int_equal(v.u.s.len, good_utf8[k].len);
		assert_memory_equal(v.u.s.ptr, good_utf8[k].s,
				    good_utf8[k].len + 1);
		sc_entity_free(e);
	}
}

/* UTF-8 as RFC 3629 defines it, decoded code point by code point: the
 * reference the validation is compared with. */
static bool ref_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp < least[len] || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

/* Random strings (mostly ASCII, with UTF-8 sequences and broken ones:
 * stray continuation bytes, overlong forms, surrogates, code points past
 * U+10FFFF, sequences cut short; at every offset across and inside
 * eight-byte words, each string in a heap block of its exact size at an
 * odd alignment) in every attribute position: the event is valid exactly
 * when the reference says each string is UTF-8, and the refusal names the
 * first bad attribute. */
static void test_string_utf8_random(void **state)
{
	(void)state;
	uint64_t r = tk_seed("test_entity") ^ 0x7f8u;
	static const char *const seqs[] = {"\xc3\xa9",	       "\xe2\x82\xac",
					   "\xf0\x9f\x98\x80", "\xed\x9f\xbf",
					   "\xf4\x8f\xbf\xbf", "\xc2\x80"};
	unsigned char buf[48];
	unsigned char *heap[3];
	size_t valid_seen = 0, bad_seen = 0;
	for (unsigned round = 0; round < 20000; round++) {
		sc_attr a[3];
		int first_bad = -1;
		for (int k = 0; k < 3; k++) {
			size_t n = 0, want = tk_rand_below(&r, 41);
			while (n < want) {
				unsigned pick =
				    (unsigned)tk_rand_below(&r, 100);
				if (pick < 80) {
					/* No NUL: a string holds none. */
					buf[n++] =
					    (unsigned char)(1 + tk_rand_below(
								    &r, 127));
				} else if (pick < 95) {
					const char *q =
					    seqs[tk_rand_below(&r, 6)];
					size_t ql = strlen(q);
					if (n + ql > want)
						break;
					memcpy(buf + n, q, ql);
					n += ql;
				} else {
					/* A lead byte (or a stray
					 * continuation byte) and 0 to 3
					 * continuation bytes: most such
					 * sequences are broken, some by a
					 * range only (E0 80, ED A0, F4 90). */
					buf[n++] =
					    tk_rand_below(&r, 8)
						? (unsigned char)(0xC0 +
								  tk_rand_below(
								      &r, 64))
						: (unsigned char)(0x80 +
								  tk_rand_below(
								      &r, 64));
					size_t c = tk_rand_below(&r, 4);
					for (; c && n < want; c--)
						buf[n++] =
						    (unsigned char)(0x80 +
								    tk_rand_below(
									&r,
									64));
				}
			}
			/* An exact-size block at an offset of 0..7 bytes:
			 * a read past the end is ASan's to see. */
			size_t off = tk_rand_below(&r, 8);
			unsigned char *block = malloc(off + n + 1);
			assert_non_null(block);
			memcpy(block + off, buf, n);
			heap[k] = block;
			a[k] = (sc_attr){.name = S(k == 0   ? "a"
						   : k == 1 ? "b"
							    : "c"),
					 .value.type = SC_VALUE_STRING};
			a[k].value.u.s = (sc_str){(const char *)block + off, n};
			if (first_bad < 0 && !ref_utf8(buf, n))
				first_bad = k;
		}
		sc_event ev = E(SC_EVENT_SET, "doc", a, 3, 1);
		sc_error err;
		int rc = sc_event_validate(&ev, &err);
		for (int k = 0; k < 3; k++)
			free(heap[k]);
		if (first_bad < 0) {
			if (rc)
				fail_msg("round %u: refused a valid event: %s",
					 round, err.message);
			valid_seen++;
		} else {
			char want[32];
			snprintf(want, sizeof want, "attrs[%d]", first_bad);
			if (rc != SC_EINVAL || !strstr(err.message, want) ||
			    !strstr(err.message, "UTF-8"))
				fail_msg("round %u: attribute %d is not UTF-8; "
					 "got %d: %s",
					 round, first_bad, rc,
					 rc ? err.message : "");
			bad_seen++;
		}
	}
	/* Both outcomes were met many times. */
	assert_true(valid_seen > 1000);
	assert_true(bad_seen > 1000);
}

/* The cache refuses such a value without touching the pending version, in
 * an event and in a loaded state. */
static void test_string_utf8_cache(void **state)
{
	(void)state;
	sc_cache *c;
	sc_error err;
	assert_int_equal(sc_cache_create(NULL, &c, &err), 0);
	sc_attr good = A_str("label", "fine");
	sc_event ev = E(SC_EVENT_SET, "doc", &good, 1, 1);
	assert_int_equal(sc_cache_apply(c, &ev, &err), 0);
	const sc_entity *before = sc_cache_pending_get(c, S("doc"));
	sc_attr bad = A_raw("label", SC_VALUE_STRING, RAW("A\xff\xfe"));
	ev = E(SC_EVENT_SET, "doc", &bad, 1, 2);
	assert_int_equal(sc_cache_apply(c, &ev, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "UTF-8"));
	assert_ptr_equal(sc_cache_pending_get(c, S("doc")), before);
	assert_int_equal(
	    sc_cache_load_entity(c, S("doc"), &bad, 1, 0, S(""), 2, &err),
	    SC_EINVAL);
	assert_non_null(strstr(err.message, "use a bytes value"));
	assert_ptr_equal(sc_cache_pending_get(c, S("doc")), before);
	assert_int_equal(sc_cache_promote(c), 0);
	assert_int_equal(sc_cache_len(c), 1);
	sc_cache_destroy(c);
}

static int count_event(void *ctx, const sc_event *ev)
{
	(void)ev;
	(*(size_t *)ctx)++;
	return 0;
}

/* Through the store: a batch with one such value is refused whole, the
 * message names the event's index and the attribute, and the log and the
 * cache are as before; the store takes the next valid batch. */
static void test_string_utf8_store(void **state)
{
	(void)state;
	assert_non_null(tk_tmproot_create("test_entity"));
	char dir[256];
	sc_store_options o = {.durability = SC_DURABILITY_NOSYNC};
	sc_store *st = tk_store_create(dir, sizeof dir, &o);
	sc_error err;
	sc_attr a = A_str("label", "before");
	sc_event ev[3] = {E(SC_EVENT_SET, "a", &a, 1, 0),
			  E(SC_EVENT_SET, "b", &a, 1, 0),
			  E(SC_EVENT_SET, "c", &a, 1, 0)};
	assert_int_equal(sc_store_append(st, ev, 1, NULL, &err), 0);
	sc_attr bad[2] = {A_int("n", 1),
			  A_raw("label", SC_VALUE_STRING, RAW("A\xff\xfe"))};
	ev[1].attrs = bad;
	ev[1].nattrs = 2;
	assert_int_equal(sc_store_append(st, ev, 3, NULL, &err), SC_EINVAL);
	if (!strstr(err.message, "event 1") ||
	    !strstr(err.message, "'label'") ||
	    !strstr(err.message, "use a bytes value"))
		fail_msg("message: %s", err.message);
	assert_int_equal(sc_store_last_position(st), 1);
	size_t n = 0;
	assert_int_equal(sc_store_events(st, 0, 0, count_event, &n, &err), 0);
	assert_int_equal(n, 1);
	sc_cache *c = sc_store_cache(st);
	assert_int_equal(sc_cache_len(c), 1);
	assert_false(sc_cache_pending(c));
	assert_null(sc_cache_pending_get(c, S("c")));
	/* The same batch with the value as bytes goes in. */
	bad[1].value.type = SC_VALUE_BYTES;
	assert_int_equal(sc_store_append(st, ev, 3, NULL, &err), 0);
	assert_int_equal(sc_store_last_position(st), 4);
	assert_int_equal(sc_cache_len(c), 3);
	sc_store_close(st);
	assert_int_equal(tk_tmproot_remove(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_creates_and_merges),
	    cmocka_unit_test(test_set_null_on_missing_name_and_empty_set),
	    cmocka_unit_test(test_set_duplicates_last_wins),
	    cmocka_unit_test(test_set_many_attrs_sorted),
	    cmocka_unit_test(test_unset),
	    cmocka_unit_test(test_unset_on_missing_entity_creates_it),
	    cmocka_unit_test(test_replace),
	    cmocka_unit_test(test_delete_and_set_after_delete),
	    cmocka_unit_test(test_limits_id),
	    cmocka_unit_test(test_limits_name),
	    cmocka_unit_test(test_bad_types),
	    cmocka_unit_test(test_too_big),
	    cmocka_unit_test(test_value_kinds_and_equality),
	    cmocka_unit_test(test_enomem),
	    cmocka_unit_test(test_string_utf8),
	    cmocka_unit_test(test_string_utf8_random),
	    cmocka_unit_test(test_string_utf8_cache),
	    cmocka_unit_test(test_string_utf8_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
