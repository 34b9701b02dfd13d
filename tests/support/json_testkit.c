/*
 * The test kit for the JSON Lines tests (json_testkit.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/gen.h"
#include "cli/json_event.h"
#include "tests/support/json_testkit.h"

char **tk_json_lines(uint64_t seed, uint32_t nentities, size_t n)
{
	char **lines = calloc(n, sizeof *lines);
	assert_non_null(lines);
	sc_cli_gen g;
	sc_cli_gen_init(&g, seed, nentities, 1795392000LL * 1000000000LL);
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	for (size_t i = 0; i < n; i++) {
		sc_cli_buf_reset(&b);
		assert_int_equal(
		    sc_cli_event_encode(&b, sc_cli_gen_next(&g), false), 0);
		lines[i] = strdup(b.ptr);
		assert_non_null(lines[i]);
	}
	sc_cli_buf_free(&b);
	return lines;
}

void tk_json_lines_free(char **lines, size_t n)
{
	if (!lines)
		return;
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}
