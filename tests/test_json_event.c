/*
 * The JSON Lines event codec of the statecache command (cli/json_event.h),
 * RFC 3339 times (cli/timefmt.h) and base64/JSON output (cli/buf.h).
 *
 * Unit tests for every field, value kind and error, then a property test:
 * random events encode to a line that decodes to the same event and
 * re-encodes to the same bytes. The seed is printed; set SC_TEST_SEED to
 * replay a run.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cli/buf.h"
#include "cli/json_event.h"
#include "cli/timefmt.h"
#include "tests/support/testkit.h"

/* ===== helpers ============================================================ */

static int decode(sc_cli_event *e, const char *line, sc_error *err)
{
	sc_error_clear(err);
	return sc_cli_event_decode(e, line, strlen(line), err);
}

/* Decode must fail with SC_EINVAL and a message containing `needle`. */
static void expect_error(const char *line, const char *needle)
{
	sc_cli_event e;
	sc_error err;
	sc_cli_event_init(&e);
	int rc = decode(&e, line, &err);
	if (rc != SC_EINVAL || !strstr(err.message, needle))
		fail_msg("line %s: rc %d, message \"%s\", wanted \"%s\"", line,
			 rc, err.message, needle);
	assert_int_equal(e.ev.entity.len, 0);
	sc_cli_event_clear(&e);
}

static bool str_is(sc_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static const sc_attr *find_attr(const sc_event *ev, const char *name)
{
	for (size_t i = 0; i < ev->nattrs; i++)
		if (str_is(ev->attrs[i].name, name))
			return &ev->attrs[i];
	return NULL;
}

static char *encode(const sc_event *ev, bool with_position)
{
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	assert_int_equal(sc_cli_event_encode(&b, ev, with_position), 0);
	return b.ptr;
}

/* ===== decoding: fields and values ======================================== */

static void test_decode_full_set(void **state)
{
	(void)state;
	sc_cli_event e;
	sc_error err;
	sc_cli_event_init(&e);
	const char *line =
	    "{\"entity\":\"user-1\",\"type\":\"set\",\"attrs\":{\"name\":"
	    "\"Ann\",\"age\":31,\"vip\":true,\"off\":false,\"score\":2.5,"
	    "\"big\":1e3,\"one\":1.0,\"gone\":null,\"key\":{\"$bytes\":"
	    "\"AAEC/w==\"}},\"actor\":\"svc-a\",\"time\":"
	    "\"2026-11-23T10:00:00Z\",\"partition\":\"eu\",\"tags\":["
	    "\"signup\",\"web\"]}";
	assert_int_equal(decode(&e, line, &err), 0);
	const sc_event *ev = &e.ev;
	assert_true(str_is(ev->entity, "user-1"));
	assert_int_equal(ev->type, SC_EVENT_SET);
	assert_int_equal(ev->nattrs, 9);
	const sc_attr *a = find_attr(ev, "name");
	assert_non_null(a);
	assert_int_equal(a->value.type, SC_VALUE_STRING);
	assert_true(str_is(a->value.u.s, "Ann"));
	a = find_attr(ev, "age");
	assert_int_equal(a->value.type, SC_VALUE_INT);
	assert_int_equal(a->value.u.i, 31);
	a = find_attr(ev, "vip");
	assert_int_equal(a->value.type, SC_VALUE_BOOL);
	assert_true(a->value.u.b);
	a = find_attr(ev, "off");
	assert_int_equal(a->value.type, SC_VALUE_BOOL);
	assert_false(a->value.u.b);
	a = find_attr(ev, "score");
	assert_int_equal(a->value.type, SC_VALUE_DOUBLE);
	assert_true(a->value.u.d == 2.5);
	a = find_attr(ev, "big");
	assert_int_equal(a->value.type, SC_VALUE_DOUBLE);
	assert_true(a->value.u.d == 1000.0);
	a = find_attr(ev, "one");
	assert_int_equal(a->value.type, SC_VALUE_DOUBLE);
	a = find_attr(ev, "gone");
	assert_int_equal(a->value.type, SC_VALUE_NULL);
	a = find_attr(ev, "key");
	assert_int_equal(a->value.type, SC_VALUE_BYTES);
	assert_int_equal(a->value.u.s.len, 4);
	assert_memory_equal(a->value.u.s.ptr, "\x00\x01\x02\xff", 4);
	assert_true(str_is(ev->actor, "svc-a"));
	assert_true(str_is(ev->partition, "eu"));
	assert_int_equal(ev->ntags, 2);
	assert_true(str_is(ev->tags[0], "signup"));
	assert_true(str_is(ev->tags[1], "web"));
	assert_int_equal(ev->time, 1795428000LL * 1000000000LL);
	sc_cli_event_clear(&e);
}

static void test_decode_types(void **state)
{
	(void)state;
	sc_cli_event e;
	sc_error err;
	sc_cli_event_init(&e);
	/* minimal set: optional fields absent */
	assert_int_equal(
	    decode(&e, "{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{}}",
		   &err),
	    0);
	assert_int_equal(e.ev.type, SC_EVENT_SET);
	assert_int_equal(e.ev.nattrs, 0);
	assert_int_equal(e.ev.time, 0);
	assert_int_equal(e.ev.actor.len, 0);
	assert_int_equal(e.ev.ntags, 0);
	/* unset: names */
	assert_int_equal(decode(&e,
				"{\"type\":\"unset\",\"entity\":\"a\","
				"\"attrs\":[\"x\",\"y\"]}",
				&err),
			 0);
	assert_int_equal(e.ev.type, SC_EVENT_UNSET);
	assert_int_equal(e.ev.nattrs, 2);
	assert_true(str_is(e.ev.attrs[0].name, "x"));
	assert_true(str_is(e.ev.attrs[1].name, "y"));
	/* replace */
	assert_int_equal(decode(&e,
				"{\"entity\":\"a\",\"type\":\"replace\","
				"\"attrs\":{\"k\":-9223372036854775808}}",
				&err),
			 0);
	assert_int_equal(e.ev.type, SC_EVENT_REPLACE);
	assert_int_equal(e.ev.attrs[0].value.u.i, INT64_MIN);
	/* delete */
	assert_int_equal(
	    decode(&e, "{\"entity\":\"a\",\"type\":\"delete\"}", &err), 0);
	assert_int_equal(e.ev.type, SC_EVENT_DELETE);
	assert_int_equal(e.ev.nattrs, 0);
	/* position is accepted and ignored */
	assert_int_equal(decode(&e,
				"{\"position\":7,\"entity\":\"a\",\"type\":"
				"\"delete\"}",
				&err),
			 0);
	assert_int_equal(e.ev.position, 0);
	/* NUL inside a value and an id */
	assert_int_equal(decode(&e,
				"{\"entity\":\"a\\u0000b\",\"type\":\"set\","
				"\"attrs\":{\"s\":\"x\\u0000y\"}}",
				&err),
			 0);
	assert_int_equal(e.ev.entity.len, 3);
	assert_int_equal(e.ev.attrs[0].value.u.s.len, 3);
	/* an id of exactly the maximum length, a name of the maximum */
	char line[4096];
	char id[SC_ENTITY_ID_MAX + 1], name[SC_ATTR_NAME_MAX + 1];
	memset(id, 'i', SC_ENTITY_ID_MAX);
	id[SC_ENTITY_ID_MAX] = 0;
	memset(name, 'n', SC_ATTR_NAME_MAX);
	name[SC_ATTR_NAME_MAX] = 0;
	snprintf(line, sizeof line,
		 "{\"entity\":\"%s\",\"type\":\"set\",\"attrs\":{\"%s\":1}}",
		 id, name);
	assert_int_equal(decode(&e, line, &err), 0);
	assert_int_equal(e.ev.entity.len, SC_ENTITY_ID_MAX);
	assert_int_equal(e.ev.attrs[0].name.len, SC_ATTR_NAME_MAX);
	sc_cli_event_clear(&e);
}

static void test_decode_times(void **state)
{
	(void)state;
	struct {
		const char *s;
		int64_t ns;
	} ok[] = {
	    {"1970-01-01T00:00:00Z", 0},
	    {"1970-01-01T00:00:01Z", 1000000000LL},
	    {"1970-01-01T00:00:00.000000001Z", 1},
	    {"1970-01-01T00:00:00.5Z", 500000000LL},
	    {"1969-12-31T23:59:59.999999999Z", -1},
	    {"2026-11-23T10:00:00Z", 1795428000LL * 1000000000LL},
	    {"2026-11-23t10:00:00z", 1795428000LL * 1000000000LL},
	    {"2026-11-23T11:30:00+01:30", 1795428000LL * 1000000000LL},
	    {"2026-11-23T08:00:00-02:00", 1795428000LL * 1000000000LL},
	    {"2000-02-29T00:00:00Z", 951782400LL * 1000000000LL},
	    {"2262-04-11T23:47:16.854775807Z", INT64_MAX},
	    {"1677-09-21T00:12:43.145224192Z", INT64_MIN},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int64_t ns = 42;
		const char *why = NULL;
		if (sc_cli_time_parse(ok[i].s, strlen(ok[i].s), &ns, &why))
			fail_msg("%s: %s", ok[i].s, why);
		assert_int_equal(ns, ok[i].ns);
	}
	const char *bad[] = {
	    "2026-11-23",
	    "2026-11-23T10:00:00",
	    "2026-11-23 10:00:00Z",
	    "2026-13-01T00:00:00Z",
	    "2026-02-29T00:00:00Z",
	    "2026-11-31T00:00:00Z",
	    "2026-11-23T24:00:00Z",
	    "2026-11-23T10:60:00Z",
	    "2026-11-23T10:00:60Z",
	    "2026-11-23T10:00:00.Z",
	    "2026-11-23T10:00:00.1234567890Z",
	    "2026-11-23T10:00:00+24:00",
	    "2026-11-23T10:00:00+0100",
	    "2026-11-23T10:00:00Zx",
	    "2262-04-11T23:47:16.854775808Z",
	    "1677-09-21T00:12:43.145224191Z",
	    "9999-12-31T23:59:59Z",
	    "",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t ns;
		const char *why = NULL;
		if (!sc_cli_time_parse(bad[i], strlen(bad[i]), &ns, &why))
			fail_msg("%s parsed", bad[i]);
		assert_non_null(why);
	}
}

static void test_format_times(void **state)
{
	(void)state;
	char t[SC_CLI_TIME_MAX];
	sc_cli_time_format(1795428000LL * 1000000000LL, t);
	assert_string_equal(t, "2026-11-23T10:00:00Z");
	sc_cli_time_format(1795428000LL * 1000000000LL + 123, t);
	assert_string_equal(t, "2026-11-23T10:00:00.000000123Z");
	sc_cli_time_format(-1, t);
	assert_string_equal(t, "1969-12-31T23:59:59.999999999Z");
	sc_cli_time_format(INT64_MIN, t);
	assert_string_equal(t, "1677-09-21T00:12:43.145224192Z");
	sc_cli_time_format(INT64_MAX, t);
	assert_string_equal(t, "2262-04-11T23:47:16.854775807Z");
	/* every formatted time parses back to itself */
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (int i = 0; i < 20000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int64_t ns = (int64_t)x;
		if (i % 3 == 0)
			ns -= ns % 1000000000LL;
		sc_cli_time_format(ns, t);
		int64_t back;
		const char *why;
		assert_int_equal(sc_cli_time_parse(t, strlen(t), &back, &why),
				 0);
		assert_int_equal(back, ns);
	}
}

/* ===== decoding: errors =================================================== */

static void test_decode_errors(void **state)
{
	(void)state;
	/* malformed JSON */
	expect_error("{\"entity\":\"a\",", "column");
	expect_error("", "column");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\"} x", "column");
	expect_error("[1,2]", "must be a JSON object");
	expect_error("\"str\"", "column");
	/* not UTF-8 */
	expect_error("{\"entity\":\"\xff\",\"type\":\"delete\"}", "column");
	/* fields */
	expect_error("{\"type\":\"delete\"}", "missing field \"entity\"");
	expect_error("{\"entity\":\"a\"}", "missing field \"type\"");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"extra\":1}",
		     "unknown field \"extra\"");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"entity\":\"b\"}",
		     "duplicate");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":1,"
		     "\"k\":2}}",
		     "duplicate");
	expect_error("{\"entity\":1,\"type\":\"delete\"}",
		     "entity must be a string");
	expect_error("{\"entity\":\"\",\"type\":\"delete\"}", "ids are 1 to");
	expect_error("{\"entity\":\"a\",\"type\":\"upsert\"}",
		     "unknown event type \"upsert\"");
	expect_error("{\"entity\":\"a\",\"type\":3}", "type must be a string");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\\u0000x\"}",
		     "unknown event type");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"attrs\":{}}",
		     "a delete takes no attrs");
	expect_error("{\"entity\":\"a\",\"type\":\"set\"}",
		     "missing field \"attrs\"");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":[\"x\"]}",
		     "must be an object");
	expect_error("{\"entity\":\"a\",\"type\":\"replace\",\"attrs\":3}",
		     "must be an object");
	expect_error("{\"entity\":\"a\",\"type\":\"unset\",\"attrs\":{}}",
		     "must be an array");
	expect_error("{\"entity\":\"a\",\"type\":\"unset\",\"attrs\":[1]}",
		     "attrs[0]: attribute names must be strings");
	expect_error("{\"entity\":\"a\",\"type\":\"unset\",\"attrs\":[\"\"]}",
		     "empty attribute name");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"\":1}}",
		     "empty attribute name");
	/* bad values */
	expect_error(
	    "{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":[1]}}",
	    "attrs.k: arrays are not attribute values");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":{}}}",
		     "attrs.k: an object value must be");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":{"
		     "\"$bytes\":1}}}",
		     "an object value must be");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":{"
		     "\"$bytes\":\"AA==\",\"x\":1}}}",
		     "an object value must be");
	expect_error("{\"entity\":\"a\",\"type\":\"replace\",\"attrs\":{\"k\":"
		     "null}}",
		     "null is only valid in a set");
	expect_error("{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":"
		     "9223372036854775808}}",
		     "too big integer");
	expect_error(
	    "{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":1e999}}",
	    "overflow");
	/* bad base64 */
	const char *b64[] = {"A",    "AAA",  "A===",	 "AA=A",
			     "AB==", "AAA$", "AA==AAAA", "AA A"};
	for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
		char line[256];
		snprintf(line, sizeof line,
			 "{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"k\":"
			 "{\"$bytes\":\"%s\"}}}",
			 b64[i]);
		expect_error(line, "bad base64");
	}
	/* bad optional fields */
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"time\":5}",
		     "time must be an RFC 3339 string");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"time\":"
		     "\"yesterday\"}",
		     "bad time");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"time\":"
		     "\"2026-11-23T10:00:00\"}",
		     "missing time zone");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"actor\":1}",
		     "actor must be a string");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"partition\":[]}",
		     "partition must be a string");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"tags\":\"x\"}",
		     "tags must be an array");
	expect_error(
	    "{\"entity\":\"a\",\"type\":\"delete\",\"tags\":[\"x\",2]}",
	    "tags[1] must be a string");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"position\":-1}",
		     "position must be a non-negative integer");
	expect_error("{\"entity\":\"a\",\"type\":\"delete\",\"position\":1.5}",
		     "position must be a non-negative integer");
}

static void test_decode_limits(void **state)
{
	(void)state;
	char *line = malloc(SC_CLI_LINE_MAX + 64);
	assert_non_null(line);
	/* over-long id */
	char id[SC_ENTITY_ID_MAX + 2];
	memset(id, 'i', SC_ENTITY_ID_MAX + 1);
	id[SC_ENTITY_ID_MAX + 1] = 0;
	snprintf(line, 4096, "{\"entity\":\"%s\",\"type\":\"delete\"}", id);
	expect_error(line, "ids are 1 to 1024 bytes");
	/* over-long names, in set and in unset */
	char name[SC_ATTR_NAME_MAX + 2];
	memset(name, 'n', SC_ATTR_NAME_MAX + 1);
	name[SC_ATTR_NAME_MAX + 1] = 0;
	snprintf(line, 4096,
		 "{\"entity\":\"a\",\"type\":\"set\",\"attrs\":{\"%s\":1}}",
		 name);
	expect_error(line, "too long");
	snprintf(line, 4096,
		 "{\"entity\":\"a\",\"type\":\"unset\",\"attrs\":[\"%s\"]}",
		 name);
	expect_error(line, "too long");
	/* a line over the cap is an error, not truncated: a valid event
	 * padded with spaces to one byte more than the limit */
	const char *ev = "{\"entity\":\"a\",\"type\":\"delete\"}";
	size_t n = strlen(ev);
	memcpy(line, ev, n);
	memset(line + n, ' ', SC_CLI_LINE_MAX + 1 - n);
	line[SC_CLI_LINE_MAX + 1] = 0;
	expect_error(line, "longer than the limit");
	/* exactly at the cap it is fine */
	line[SC_CLI_LINE_MAX] = 0;
	sc_cli_event e;
	sc_error err;
	sc_cli_event_init(&e);
	assert_int_equal(decode(&e, line, &err), 0);
	sc_cli_event_clear(&e);
	free(line);
}

/* ===== encoding =========================================================== */

static void test_encode(void **state)
{
	(void)state;
	sc_attr attrs[] = {
	    {{"name", 4}, {.type = SC_VALUE_STRING, .u.s = {"A\"n\\n\n", 6}}},
	    {{"age", 3}, {.type = SC_VALUE_INT, .u.i = -31}},
	    {{"vip", 3}, {.type = SC_VALUE_BOOL, .u.b = true}},
	    {{"d", 1}, {.type = SC_VALUE_DOUBLE, .u.d = 0.1}},
	    {{"e", 1}, {.type = SC_VALUE_DOUBLE, .u.d = 3.0}},
	    {{"b", 1}, {.type = SC_VALUE_BYTES, .u.s = {"\x00\xff", 2}}},
	    {{"z", 1}, {.type = SC_VALUE_NULL}},
	};
	sc_str tags[] = {{"t1", 2}, {"t\x01", 2}};
	sc_event ev = {
	    .position = 12,
	    .entity = {"dev-\xe2\x82\xac", 7},
	    .type = SC_EVENT_SET,
	    .attrs = attrs,
	    .nattrs = 7,
	    .time = 1795428000LL * 1000000000LL + 123,
	    .actor = {"svc", 3},
	    .partition = {"eu", 2},
	    .tags = tags,
	    .ntags = 2,
	};
	char *s = encode(&ev, true);
	assert_string_equal(
	    s, "{\"position\":12,\"entity\":\"dev-\xe2\x82\xac\",\"type\":"
	       "\"set\",\"attrs\":{\"age\":-31,\"b\":{\"$bytes\":\"AP8=\"},"
	       "\"d\":0.1,\"e\":3.0,\"name\":\"A\\\"n\\\\n\\n\",\"vip\":true,"
	       "\"z\":null},\"actor\":\"svc\",\"time\":"
	       "\"2026-11-23T10:00:00.000000123Z\",\"partition\":\"eu\","
	       "\"tags\":[\"t1\",\"t\\u0001\"]}");
	free(s);
	ev.type = SC_EVENT_UNSET;
	ev.nattrs = 2;
	ev.ntags = 0;
	ev.actor.len = 0;
	ev.partition.len = 0;
	ev.time = 0;
	s = encode(&ev, false);
	assert_string_equal(s, "{\"entity\":\"dev-\xe2\x82\xac\",\"type\":"
			       "\"unset\",\"attrs\":[\"name\",\"age\"]}");
	free(s);
	ev.type = SC_EVENT_DELETE;
	s = encode(&ev, false);
	assert_string_equal(
	    s, "{\"entity\":\"dev-\xe2\x82\xac\",\"type\":\"delete\"}");
	free(s);
	/* invalid UTF-8 and non-finite doubles still give valid JSON */
	attrs[0].value.u.s = (sc_str){"a\xff\xc3", 3};
	attrs[3].value.u.d = 1.0 / 0.0;
	ev.type = SC_EVENT_REPLACE;
	ev.entity = (sc_str){"\xc0\x80", 2};
	ev.nattrs = 4;
	s = encode(&ev, false);
	json_error_t jerr;
	json_t *j = json_loads(s, 0, &jerr);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "entity")),
			    "\xef\xbf\xbd\xef\xbf\xbd");
	assert_true(
	    json_is_null(json_object_get(json_object_get(j, "attrs"), "d")));
	json_decref(j);
	free(s);
}

static void test_base64_and_doubles(void **state)
{
	(void)state;
	const char *vec[][2] = {{"", ""},
				{"f", "Zg=="},
				{"fo", "Zm8="},
				{"foo", "Zm9v"},
				{"foob", "Zm9vYg=="},
				{"fooba", "Zm9vYmE="},
				{"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < 7; i++) {
		sc_cli_buf b;
		sc_cli_buf_init(&b);
		assert_int_equal(
		    sc_cli_base64_encode(&b, vec[i][0], strlen(vec[i][0])), 0);
		assert_string_equal(b.ptr ? b.ptr : "", vec[i][1]);
		char out[16];
		size_t n;
		const char *why;
		assert_int_equal(sc_cli_base64_decode(vec[i][1],
						      strlen(vec[i][1]), out,
						      &n, &why),
				 0);
		assert_int_equal(n, strlen(vec[i][0]));
		assert_memory_equal(out, vec[i][0], n);
		sc_cli_buf_free(&b);
	}
	double ds[] = {0.1,    1e300,	    -2.5, 1.0 / 3.0,
		       5e-324, 123456789.0, -0.0, 1e22};
	for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
		sc_cli_buf b;
		sc_cli_buf_init(&b);
		assert_int_equal(sc_cli_json_double(&b, ds[i]), 0);
		json_error_t jerr;
		json_t *j = json_loadb(b.ptr, b.len, JSON_DECODE_ANY, &jerr);
		assert_non_null(j);
		assert_true(json_is_real(j));
		assert_true(json_real_value(j) == ds[i]);
		json_decref(j);
		sc_cli_buf_free(&b);
	}
}

static void test_entity_encode(void **state)
{
	(void)state;
	sc_cli_event d;
	sc_error err;
	sc_cli_event_init(&d);
	assert_int_equal(
	    decode(&d,
		   "{\"entity\":\"user-1\",\"type\":\"set\",\"attrs\":{"
		   "\"name\":\"Ann\",\"age\":31,\"b\":{\"$bytes\":\"AP8=\"},"
		   "\"d\":2.0},\"actor\":\"svc-a\",\"time\":"
		   "\"2026-11-23T10:00:00.000000123Z\"}",
		   &err),
	    0);
	d.ev.position = 42;
	sc_entity *e = NULL;
	assert_int_equal(sc_entity_apply(NULL, &d.ev, &e, &err), 0);
	assert_non_null(e);
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	assert_int_equal(sc_cli_entity_encode(&b, e), 0);
	assert_string_equal(b.ptr,
			    "{\"id\":\"user-1\",\"attrs\":{\"age\":31,\"b\":{"
			    "\"$bytes\":\"AP8=\"},\"d\":2.0,\"name\":\"Ann\"},"
			    "\"updated_at\":\"2026-11-23T10:00:00.000000123Z\","
			    "\"updated_by\":\"svc-a\",\"position\":42}");
	/* the output is valid JSON */
	json_error_t jerr;
	json_t *j = json_loadb(b.ptr, b.len, JSON_REJECT_DUPLICATES, &jerr);
	assert_non_null(j);
	json_decref(j);
	sc_cli_buf_free(&b);
	sc_entity_free(e);
	sc_cli_event_clear(&d);
}

/* ===== property: encode(decode(x)) round trip ============================= */

/* A random valid UTF-8 string of 1..maxlen bytes (ASCII incl. controls and
 * quotes, 2-, 3- and 4-byte sequences). */
static size_t rnd_utf8(uint64_t *r, char *out, size_t maxlen)
{
	size_t n = 0, want = 1 + tk_rand(r) % maxlen;
	while (n < want) {
		unsigned k = (unsigned)(tk_rand(r) % 10);
		if (k < 6 || want - n < 4) {
			unsigned c = (unsigned)(tk_rand(r) % 127);
			out[n++] = (char)(c ? c : 'x');
		} else if (k < 8) {
			out[n++] = (char)0xC3;
			out[n++] = (char)(0x80 + tk_rand(r) % 64);
		} else if (k < 9) {
			memcpy(out + n, "\xe2\x82\xac", 3);
			n += 3;
		} else {
			memcpy(out + n, "\xf0\x9f\x98\x80", 4);
			n += 4;
		}
	}
	return n;
}

static void check_same_event(const sc_event *a, const sc_event *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->entity.len, b->entity.len);
	assert_memory_equal(a->entity.ptr, b->entity.ptr, a->entity.len);
	assert_int_equal(a->time, b->time);
	assert_int_equal(a->actor.len, b->actor.len);
	if (a->actor.len)
		assert_memory_equal(a->actor.ptr, b->actor.ptr, a->actor.len);
	assert_int_equal(a->partition.len, b->partition.len);
	assert_int_equal(a->ntags, b->ntags);
	for (size_t i = 0; i < a->ntags; i++) {
		assert_int_equal(a->tags[i].len, b->tags[i].len);
		assert_memory_equal(a->tags[i].ptr, b->tags[i].ptr,
				    a->tags[i].len);
	}
	assert_int_equal(a->nattrs, b->nattrs);
	for (size_t i = 0; i < a->nattrs; i++) {
		const sc_attr *x = &a->attrs[i], *y = NULL;
		for (size_t j = 0; j < b->nattrs; j++)
			if (b->attrs[j].name.len == x->name.len &&
			    !memcmp(b->attrs[j].name.ptr, x->name.ptr,
				    x->name.len))
				y = &b->attrs[j];
		assert_non_null(y);
		if (a->type == SC_EVENT_UNSET)
			continue;
		assert_int_equal(x->value.type, y->value.type);
		switch (x->value.type) {
		case SC_VALUE_INT:
			assert_int_equal(x->value.u.i, y->value.u.i);
			break;
		case SC_VALUE_DOUBLE:
			assert_memory_equal(&x->value.u.d, &y->value.u.d,
					    sizeof(double));
			break;
		case SC_VALUE_BOOL:
			assert_int_equal(x->value.u.b, y->value.u.b);
			break;
		case SC_VALUE_STRING:
		case SC_VALUE_BYTES:
			assert_int_equal(x->value.u.s.len, y->value.u.s.len);
			if (x->value.u.s.len)
				assert_memory_equal(x->value.u.s.ptr,
						    y->value.u.s.ptr,
						    x->value.u.s.len);
			break;
		case SC_VALUE_NULL:
			break;
		}
	}
}

static void test_round_trip_random(void **state)
{
	(void)state;
	uint64_t r = tk_seed("test_json_event");
	int iters = getenv("SC_TEST_SHORT") ? 3000 : 30000;
	enum { MAXA = 12 };
	char pool[2 * MAXA + 1][64];
	char bytes[MAXA][32];
	for (int it = 0; it < iters; it++) {
		sc_attr attrs[MAXA];
		sc_str tags[4];
		sc_event ev = {0};
		ev.entity.ptr = pool[0];
		ev.entity.len = rnd_utf8(&r, pool[0], 40);
		ev.type = (sc_event_type)(1 + tk_rand(&r) % 4);
		if (ev.type != SC_EVENT_DELETE) {
			size_t n = tk_rand(&r) % MAXA;
			for (size_t i = 0; i < n; i++) {
				/* unique names: index prefix */
				char *nm = pool[1 + i];
				size_t l = (size_t)snprintf(nm, 8, "%zu_", i);
				l += rnd_utf8(&r, nm + l, 30);
				attrs[i].name = (sc_str){nm, l};
				sc_value *v = &attrs[i].value;
				unsigned k = (unsigned)(tk_rand(&r) % 6);
				if (ev.type == SC_EVENT_REPLACE && k == 0)
					k = 1;
				switch (k) {
				case 0:
					v->type = SC_VALUE_NULL;
					break;
				case 1:
					v->type = SC_VALUE_INT;
					v->u.i = (int64_t)tk_rand(&r) >>
						 (tk_rand(&r) % 64);
					break;
				case 2: {
					v->type = SC_VALUE_DOUBLE;
					uint64_t bits = tk_rand(&r);
					memcpy(&v->u.d, &bits, 8);
					if (!isfinite(v->u.d))
						v->u.d = (double)(bits >> 11);
					break;
				}
				case 3:
					v->type = SC_VALUE_BOOL;
					v->u.b = tk_rand(&r) & 1;
					break;
				case 4: {
					v->type = SC_VALUE_STRING;
					char *s = pool[MAXA + 1 + i];
					/* may be empty */
					size_t sl = tk_rand(&r) % 5
							? rnd_utf8(&r, s, 40)
							: 0;
					v->u.s = (sc_str){s, sl};
					break;
				}
				default:
					v->type = SC_VALUE_BYTES;
					v->u.s.len = tk_rand(&r) % 32;
					for (size_t j = 0; j < v->u.s.len; j++)
						bytes[i][j] = (char)tk_rand(&r);
					v->u.s.ptr = bytes[i];
				}
			}
			ev.attrs = attrs;
			ev.nattrs = n;
		}
		if (tk_rand(&r) % 2) {
			ev.time = (int64_t)tk_rand(&r);
			if (ev.time == 0)
				ev.time = 1;
		}
		if (tk_rand(&r) % 2)
			ev.actor = (sc_str){"svc-\"a\"", 7};
		if (tk_rand(&r) % 2)
			ev.partition = (sc_str){"p\n1", 3};
		ev.ntags = tk_rand(&r) % 4;
		for (size_t i = 0; i < ev.ntags; i++)
			tags[i] = (sc_str){"tag\\", 3 + i % 2};
		ev.tags = tags;
		ev.position = tk_rand(&r) >> 1;

		char *line = encode(&ev, it % 2);
		sc_cli_event e;
		sc_error err;
		sc_cli_event_init(&e);
		if (decode(&e, line, &err))
			fail_msg("iteration %d: %s: %s", it, line, err.message);
		check_same_event(&ev, &e.ev);
		e.ev.position = ev.position;
		char *again = encode(&e.ev, it % 2);
		assert_string_equal(line, again);
		free(again);
		free(line);
		sc_cli_event_clear(&e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decode_full_set),
	    cmocka_unit_test(test_decode_types),
	    cmocka_unit_test(test_decode_times),
	    cmocka_unit_test(test_format_times),
	    cmocka_unit_test(test_decode_errors),
	    cmocka_unit_test(test_decode_limits),
	    cmocka_unit_test(test_encode),
	    cmocka_unit_test(test_base64_and_doubles),
	    cmocka_unit_test(test_entity_encode),
	    cmocka_unit_test(test_round_trip_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
