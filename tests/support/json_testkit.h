/*
 * The test kit for the JSON Lines tests: lines of the demo generator
 * (cli/gen.h) as the statecache command writes them. Part of the test kit
 * library (libsctest.a); for cmocka test programs only (json_testkit.c
 * calls cmocka).
 */
#ifndef STATECACHE_TESTS_JSON_TESTKIT_H
#define STATECACHE_TESTS_JSON_TESTKIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * tk_json_lines - the first `n` lines (NUL-terminated, no newline) of the
 * generator's stream `seed` over `nentities` entities, times from
 * 2026-11-23, each encoded by sc_cli_event_encode. An allocation or
 * encoding that fails fails the running cmocka test. The caller frees
 * them with tk_json_lines_free.
 */
char **tk_json_lines(uint64_t seed, uint32_t nentities, size_t n);

/* tk_json_lines_free - free `n` lines of tk_json_lines (NULL: nothing). */
void tk_json_lines_free(char **lines, size_t n);

#endif
