/*
 * The test kit: what every test program, stress and crash program and
 * fuzzer shares. Built with the rest of tests/support into libsctest.a.
 *
 * Every function of the kit is named tk_*: tk_hamt_* (hamt_testkit.h) for
 * keys and hashes of the HAMT tests, tk_event_* / tk_cache_* / tk_store_*
 * (store_testkit.h) for event streams, stores that must open and append,
 * and the store tests' model, tk_refmap_* (refmap.h) and tk_refstate_*
 * (refstate.h) for the two reference models, tk_tmproot_*, tk_rm_rf,
 * tk_child_*, tk_exited, tk_killed and tk_killpoint_arm (sys_testkit.h)
 * for temporary directories and child processes,
 * tk_failure* / tk_threads_* (thread_testkit.h) for the threads of the
 * stress programs, tk_json_lines (json_testkit.h) for generated JSON
 * lines. The parts that fail a cmocka test (child_testkit.c,
 * json_testkit.c, store_calls_testkit.c) are for cmocka programs only.
 *
 * Randomness: one generator (splitmix64) seeded by one helper, so that any
 * failure is repeated by setting SC_TEST_SEED to the seed it printed.
 */
#ifndef STATECACHE_TESTS_TESTKIT_H
#define STATECACHE_TESTS_TESTKIT_H

#include <stdint.h>

/*
 * tk_seed - the seed of this run: SC_TEST_SEED (decimal, or hex with 0x)
 * when set, else one from the clock. Prints "<program>: seed N (rerun with
 * SC_TEST_SEED=N)" to stderr, so a failing run can be repeated.
 */
uint64_t tk_seed(const char *program);

/* tk_rand - the next number of the splitmix64 stream `*state` (any value,
 * zero included, is a valid state). Deterministic; not thread-safe on one
 * state. */
uint64_t tk_rand(uint64_t *state);

/* tk_rand_below - a number in [0, n) from the stream `*state`; n > 0. */
uint64_t tk_rand_below(uint64_t *state, uint64_t n);

#endif
