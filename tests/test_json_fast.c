/*
 * The fast path of the JSON Lines decoder (cli/json_event.c) against
 * jansson: a line the fast path accepts must be one jansson accepts, and
 * decode to the same event (same fields, attributes in the same order,
 * doubles bit for bit). Lines: the demo generator's (every one must take
 * the fast path: that is its purpose), lines built at random from pieces
 * that hit every branch of the fast path (escapes, odd numbers, duplicates,
 * wrong types, whitespace, invalid UTF-8), and generator lines with random
 * bytes changed, inserted or removed.
 *
 * The seed is printed; set SC_TEST_SEED to replay a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/gen.h"
#include "cli/json_event.h"
#include "tests/support/json_testkit.h"
#include "tests/support/store_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;

typedef struct tally {
	unsigned long fast, jansson_only, refused;
} tally;

/* Decode `line` both ways; if the fast path takes it, jansson must too,
 * with the same event. Returns whether the fast path took it. */
static bool compare(const char *line, size_t n, tally *t)
{
	sc_cli_event a, b;
	sc_cli_event_init(&a);
	sc_cli_event_init(&b);
	sc_error ea, eb;
	int fa = sc_cli_event_decode_fast(&a, line, n, &ea);
	int jb = sc_cli_event_decode_jansson(&b, line, n, &eb);
	assert_true(fa == 0 || fa == 1);
	if (fa == 0) {
		if (jb != 0)
			fail_msg("the fast path took a line jansson refuses "
				 "(%s): %.*s",
				 eb.message, (int)n, line);
		if (!tk_event_equal(&a.ev, &b.ev))
			fail_msg("the two decoders disagree on: %.*s", (int)n,
				 line);
		t->fast++;
	} else {
		assert_int_equal(a.ev.entity.len, 0);
		if (jb == 0)
			t->jansson_only++;
		else
			t->refused++;
	}
	/* what sc_cli_event_decode returns is one of the two */
	sc_cli_event c;
	sc_cli_event_init(&c);
	sc_error ec;
	int rc = sc_cli_event_decode(&c, line, n, &ec);
	assert_int_equal(rc, jb);
	if (!rc)
		assert_true(tk_event_equal(&c.ev, &b.ev));
	sc_cli_event_clear(&a);
	sc_cli_event_clear(&b);
	sc_cli_event_clear(&c);
	return fa == 0;
}

/* ===== the generator's lines ============================================== */

static void test_generator_lines(void **state)
{
	(void)state;
	size_t n = getenv("SC_TEST_SHORT") ? 5000 : 50000;
	char **lines = tk_json_lines(seed, 1000, n);
	tally t = {0};
	for (size_t i = 0; i < n; i++)
		if (!compare(lines[i], strlen(lines[i]), &t))
			fail_msg("a generated line missed the fast path: %s",
				 lines[i]);
	tk_json_lines_free(lines, n);
}

/* ===== lines built from pieces ============================================ */

/* Mostly one of the first `good` entries of v (pieces the fast path
 * takes), sometimes any. */
static const char *pick(uint64_t *r, const char *const *v, size_t n,
			size_t good)
{
	return v[tk_rand_below(r, tk_rand_below(r, 8) ? good : n)];
}
#define PICK(r, arr) pick(r, arr, sizeof arr / sizeof arr[0], arr##_good)

static const char *const ws[] = {"", "", "", " ", "\t", "\r\n ", "  "};
static const size_t ws_good = 7;
static const char *const strings[] = {"\"a\"",
				      "\"user-1\"",
				      "\"caf\xc3\xa9\"",
				      "\"\xf0\x9f\x98\x80\"",
				      "\"\"",
				      "\"a\\nb\"",
				      "\"\\u00e9\"",
				      "\"\\u0000\"",
				      "\"\xff\"",
				      "\"\xc0\xaf\"",
				      "\"\xed\xa0\x80\"",
				      "\"\xf4\x90\x80\x80\"",
				      "\"tab\there\"",
				      "\"\\\"q\\\"\"",
				      "\"\\/\"",
				      "\"a"};
static const size_t strings_good = 4;
static const char *const numbers[] = {"0",
				      "1",
				      "-12",
				      "123456789012345678",
				      "-123456789012345678",
				      "1.5",
				      "-0.0",
				      "1e5",
				      "1E+05",
				      "1e-400",
				      "2.5e-3",
				      "0.1",
				      "3.141592653589793238462643",
				      "4.9e-324",
				      "1.7976931348623157e308",
				      "1.0e0",
				      "-0",
				      "1234567890123456789",
				      "9223372036854775807",
				      "9223372036854775808",
				      "-9223372036854775808",
				      "1e400",
				      "-1e400",
				      "01",
				      "1.",
				      ".5",
				      "-",
				      "1e",
				      "1.5e+",
				      "+1",
				      "0x10"};
static const size_t numbers_good = 16;
static const char *const values[] = {"true",
				     "false",
				     "null",
				     "{\"$bytes\":\"aGk=\"}",
				     "{\"$bytes\":\"\"}",
				     "{ \"$bytes\" : \"AAEC\" }",
				     "tru",
				     "nul",
				     "{\"$bytes\":\"!!\"}",
				     "{\"$bytes\":\"aGk=\",\"x\":1}",
				     "{\"x\":1}",
				     "[1]",
				     "[]",
				     "{}"};
static const size_t values_good = 6;
static const char *const names[] = {
    "\"a\"", "\"b\"",	   "\"name\"", "\"\xc3\xa9\"",	"\"c\"",
    "\"d\"", "\"$bytes\"", "\"\"",     "\"a\\u0000b\"", "\"\\u0061\""};
static const size_t names_good = 7;
static const char *const types[] = {
    "\"set\"",	  "\"unset\"",	    "\"replace\"", "\"delete\"",
    "\"upsert\"", "\"set\\u0000\"", "\"SET\"",	   "1"};
static const size_t types_good = 4;
static const char *const times[] = {
    "\"2026-11-23T10:00:00Z\"", "\"2026-11-23T10:00:00.123456789+02:00\"",
    "\"1970-01-01T00:00:00Z\"", "\"noon\"",
    "\"2026-02-30T00:00:00Z\"", "5"};
static const size_t times_good = 3;

static void add(sc_cli_buf *b, const char *s)
{
	assert_int_equal(sc_cli_buf_puts(b, s), 0);
}

static void add_value(sc_cli_buf *b, uint64_t *r)
{
	switch (tk_rand_below(r, 3)) {
	case 0:
		add(b, PICK(r, strings));
		break;
	case 1:
		add(b, PICK(r, numbers));
		break;
	default:
		add(b, PICK(r, values));
	}
}

static void add_attrs(sc_cli_buf *b, uint64_t *r, bool array)
{
	size_t n = tk_rand_below(r, 5);
	add(b, array ? "[" : "{");
	for (size_t i = 0; i < n; i++) {
		if (i)
			add(b, ",");
		add(b, PICK(r, ws));
		add(b, PICK(r, names));
		if (!array) {
			add(b, PICK(r, ws));
			add(b, ":");
			add(b, PICK(r, ws));
			add_value(b, r);
		}
		add(b, PICK(r, ws));
	}
	add(b, array ? "]" : "}");
}

static void build_line(sc_cli_buf *b, uint64_t *r)
{
	static const char *const fields[] = {"actor", "time",	  "partition",
					     "tags",  "position", "entity",
					     "type",  "attrs",	  "colour"};
	static const size_t fields_good = 5;
	const char *type = "";
	sc_cli_buf_reset(b);
	add(b, PICK(r, ws));
	add(b, "{");
	/* mostly the required fields plus a few others, in a random order,
	 * sometimes one twice */
	size_t nf = 2 + tk_rand_below(r, 5);
	for (size_t i = 0; i < nf; i++) {
		const char *f = i == 0	 ? "entity"
				: i == 1 ? "type"
				: i == 2 && tk_rand_below(r, 8)
				    ? "attrs"
				    : PICK(r, fields);
		if (i)
			add(b, ",");
		add(b, PICK(r, ws));
		assert_int_equal(sc_cli_buf_printf(b, "\"%s\"", f), 0);
		add(b, PICK(r, ws));
		add(b, ":");
		add(b, PICK(r, ws));
		if (!strcmp(f, "entity") || !strcmp(f, "actor") ||
		    !strcmp(f, "partition"))
			add(b, PICK(r, strings));
		else if (!strcmp(f, "type"))
			add(b, type = PICK(r, types));
		else if (!strcmp(f, "attrs"))
			/* mostly what the type wants */
			add_attrs(b, r,
				  (strcmp(type, "\"unset\"") == 0) !=
				      (tk_rand_below(r, 8) == 0));
		else if (!strcmp(f, "time"))
			add(b, PICK(r, times));
		else if (!strcmp(f, "tags"))
			add_attrs(b, r, true);
		else
			add(b, PICK(r, numbers));
		add(b, PICK(r, ws));
	}
	add(b, "}");
	add(b, PICK(r, ws));
	if (tk_rand_below(r, 20) == 0)
		add(b, "x");
}

static void test_built_lines(void **state)
{
	(void)state;
	uint64_t r = seed;
	size_t n = getenv("SC_TEST_SHORT") ? 100000 : 1000000;
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	tally t = {0};
	for (size_t i = 0; i < n; i++) {
		build_line(&b, &r);
		compare(b.ptr, b.len, &t);
	}
	sc_cli_buf_free(&b);
	print_message("fast path %lu, jansson only %lu, refused %lu\n", t.fast,
		      t.jansson_only, t.refused);
	/* the pieces reach all three outcomes */
	assert_true(t.fast > n / 100);
	assert_true(t.jansson_only > n / 100);
	assert_true(t.refused > n / 100);
}

/* ===== mutated generator lines ============================================ */

static void test_mutated_lines(void **state)
{
	(void)state;
	static const char pool[] = "\"\\{}[],:0-.eE+ntf \t\x80\xff\xc3"
				   "a";
	uint64_t r = seed ^ 0x9e3779b97f4a7c15ull;
	size_t nlines = getenv("SC_TEST_SHORT") ? 2000 : 20000;
	char **lines = tk_json_lines(seed + 1, 1000, nlines);
	tally t = {0};
	char buf[4096];
	for (size_t i = 0; i < nlines; i++) {
		for (int k = 0; k < 20; k++) {
			size_t n = strlen(lines[i]);
			if (n + 8 > sizeof buf)
				continue;
			memcpy(buf, lines[i], n);
			int edits = 1 + (int)tk_rand_below(&r, 3);
			for (int m = 0; m < edits && n > 0; m++) {
				size_t at = tk_rand_below(&r, n);
				char c =
				    pool[tk_rand_below(&r, sizeof pool - 1)];
				switch (tk_rand_below(&r, 4)) {
				case 0: /* replace */
					buf[at] = c;
					break;
				case 1: /* insert */
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = c;
					n++;
					break;
				case 2: /* remove */
					memmove(buf + at, buf + at + 1,
						n - at - 1);
					n--;
					break;
				default: /* cut */
					n = at;
				}
			}
			compare(buf, n, &t);
		}
	}
	tk_json_lines_free(lines, nlines);
	assert_true(t.fast > 0);
	assert_true(t.refused > 0);
}

int main(void)
{
	seed = tk_seed("test_json_fast");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_generator_lines),
	    cmocka_unit_test(test_built_lines),
	    cmocka_unit_test(test_mutated_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
