/*
 * Test helpers for the store tests: deterministic event streams and the
 * comparison of a cache with the model. Part of the test kit library
 * (libsctest.a); a program that calls none of these does not pull in the
 * store.
 *
 * The model is the reference state (refstate.h): every event folded into
 * it with tk_refstate_apply, with its final position and time. It shares
 * no code with the cache and knows nothing of versions, HAMTs, LMDB or
 * snapshots, so a store (log + snapshots + replay) that agrees with it
 * after any history is right, and a semantic fault of the cache shows as a
 * difference.
 */
#ifndef STATECACHE_TESTS_STORE_TESTKIT_H
#define STATECACHE_TESTS_STORE_TESTKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/cache.h"
#include "statecache/event.h"
#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/testkit.h"

/* Attributes of a generated event: most have up to TK_STR_ATTRS, one in 32
 * up to TK_MAX_ATTRS (more than the cache's 64-attribute fast path); only
 * the first TK_STR_ATTRS may hold strings or bytes. */
#define TK_MAX_ATTRS 80
#define TK_STR_ATTRS 6

/* One generated event with its own storage (about 4 KiB). */
typedef struct tk_event {
	sc_event ev;
	sc_attr attrs[TK_MAX_ATTRS];
	sc_str tags[2];
	char id[24];
	char actor[24];
	char names[TK_MAX_ATTRS][4];
	char strs[TK_STR_ATTRS][24];
} tk_event;

/*
 * tk_event_gen - event number `i` of the stream `seed`: a pure function of
 * (seed, i, nentities). `time` is stored as is (0: let the store stamp it).
 * Sets carry null values now and then; entities reach more than 64
 * attributes.
 */
void tk_event_gen(uint64_t seed, uint64_t i, unsigned nentities, int64_t time,
		  tk_event *out);

/* True when two events are equal field by field (position included). */
bool tk_event_equal(const sc_event *a, const sc_event *b);

/*
 * tk_cache_matches - true when the newest promoted version of `cache` holds
 * exactly the model's entities (compared one by one) and the same hash.
 * Prints the first difference.
 */
bool tk_cache_matches(sc_cache *cache, const tk_refstate *m);

/* Hash (tk_refstate_view_hash) and length of the newest promoted version:
 * equal to tk_refstate_hash of a model holding the same state. */
uint64_t tk_cache_hash(sc_cache *cache, size_t *len);

/*
 * tk_store_open - sc_store_open(dir, o) that must succeed: on an error it
 * prints "open <dir>: <message>" and fails the running cmocka test. The
 * caller owns the store (sc_store_close). Like tk_store_create and
 * tk_store_append_model, for cmocka test programs only
 * (store_calls_testkit.c calls cmocka).
 */
sc_store *tk_store_open(const char *dir, const sc_store_options *o);

/* tk_store_create - tk_store_open of a new store in a fresh directory
 * below the program's temporary root (tk_tmproot_dir; its path in
 * dir[0..dir_len)), with `o` (o->create need not be set). */
sc_store *tk_store_create(char *dir, size_t dir_len, const sc_store_options *o);

/*
 * tk_store_append_model - append evs[0..n) to `s` in one batch, which
 * must succeed (on an error: "append: <message>" on stderr and a cmocka
 * failure); then give each event its position and fold it into the model
 * `m`. Returns the first position.
 */
uint64_t tk_store_append_model(sc_store *s, sc_event *evs, size_t n,
			       tk_refstate *m);

/*
 * tk_view_check_model - the view `v` holds exactly the model's state
 * (tk_refstate_check_view); else "<what>: <first difference>" on stderr
 * and a cmocka failure.
 */
void tk_view_check_model(const sc_view *v, const tk_refstate *m,
			 const char *what);

/* tk_store_check_model - tk_view_check_model of the newest promoted
 * version of the store's cache, read through a reader of its own. */
void tk_store_check_model(sc_store *s, const tk_refstate *m, const char *what);

/* The rows of entity_index and meta index_through, read from LMDB directly
 * in one read transaction; false (with a message) if they cannot be read. */
bool tk_index_state(sc_store *s, size_t *rows, uint64_t *through);

#endif
