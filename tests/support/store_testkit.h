/*
 * Test helpers for the store tests: deterministic event streams, a
 * reference model of the state and order-independent state hashes. Part
 * of the test kit library (libsctest.a); a program that calls none of
 * these does not pull in the store.
 *
 * The model maps each entity id to a standalone state folded with
 * sc_entity_apply, one entity at a time: it knows nothing of versions,
 * HAMTs, LMDB or snapshots, so a store (log + snapshots + replay) that
 * agrees with it after any history is right.
 */
#ifndef STATECACHE_TESTS_STORE_TESTKIT_H
#define STATECACHE_TESTS_STORE_TESTKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/cache.h"
#include "statecache/event.h"
#include "statecache/store.h"
#include "tests/support/testkit.h"

#define TK_MAX_ATTRS 6

/* One generated event with its own storage. */
typedef struct tk_event {
	sc_event ev;
	sc_attr attrs[TK_MAX_ATTRS];
	sc_str tags[2];
	char id[24];
	char actor[24];
	char names[TK_MAX_ATTRS][8];
	char strs[TK_MAX_ATTRS][24];
} tk_event;

/*
 * tk_event_gen - event number `i` of the stream `seed`: a pure function of
 * (seed, i, nentities). `time` is stored as is (0: let the store stamp it).
 */
void tk_event_gen(uint64_t seed, uint64_t i, unsigned nentities, int64_t time,
		  tk_event *out);

/* True when two events are equal field by field (position included). */
bool tk_event_equal(const sc_event *a, const sc_event *b);

typedef struct tk_model tk_model;

tk_model *tk_model_new(void);
void tk_model_free(tk_model *m);
/* Fold one event (with its final position and time) into the model. */
void tk_model_apply(tk_model *m, const sc_event *ev);
size_t tk_model_len(const tk_model *m);
const sc_entity *tk_model_get(const tk_model *m, sc_str id);
uint64_t tk_model_hash(const tk_model *m);

/* Order-independent hash of one entity / a whole view. */
uint64_t tk_entity_hash(const sc_entity *e);
uint64_t tk_view_hash(const sc_view *v);

/*
 * tk_cache_matches - true when the newest promoted version of `cache` holds
 * exactly the model's entities (compared one by one) and the same hash.
 * Prints the first difference.
 */
bool tk_cache_matches(sc_cache *cache, const tk_model *m);

/* Hash and length of the newest promoted version. */
uint64_t tk_cache_hash(sc_cache *cache, size_t *len);

/* The rows of entity_index and meta index_through, read from LMDB directly
 * in one read transaction; false (with a message) if they cannot be read. */
bool tk_index_state(sc_store *s, size_t *rows, uint64_t *through);

#endif
