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

/* splitmix64 step. */
uint64_t st_rand(uint64_t *state);
/* A seed from SC_TEST_SEED or the clock; printed by the caller. */
uint64_t st_seed(void);

#define ST_MAX_ATTRS 6

/* One generated event with its own storage. */
typedef struct st_event {
	sc_event ev;
	sc_attr attrs[ST_MAX_ATTRS];
	sc_str tags[2];
	char id[24];
	char actor[24];
	char names[ST_MAX_ATTRS][8];
	char strs[ST_MAX_ATTRS][24];
} st_event;

/*
 * st_event_gen - event number `i` of the stream `seed`: a pure function of
 * (seed, i, nentities). `time` is stored as is (0: let the store stamp it).
 */
void st_event_gen(uint64_t seed, uint64_t i, unsigned nentities, int64_t time,
		  st_event *out);

/* True when two events are equal field by field (position included). */
bool st_event_equal(const sc_event *a, const sc_event *b);

typedef struct st_model st_model;

st_model *st_model_new(void);
void st_model_free(st_model *m);
/* Fold one event (with its final position and time) into the model. */
void st_model_apply(st_model *m, const sc_event *ev);
size_t st_model_len(const st_model *m);
const sc_entity *st_model_get(const st_model *m, sc_str id);
uint64_t st_model_hash(const st_model *m);

/* Order-independent hash of one entity / a whole view. */
uint64_t st_entity_hash(const sc_entity *e);
uint64_t st_view_hash(const sc_view *v);

/*
 * st_cache_matches - true when the newest promoted version of `cache` holds
 * exactly the model's entities (compared one by one) and the same hash.
 * Prints the first difference.
 */
bool st_cache_matches(sc_cache *cache, const st_model *m);

/* Hash and length of the newest promoted version. */
uint64_t st_cache_hash(sc_cache *cache, size_t *len);

/* The rows of entity_index and meta index_through, read from LMDB directly
 * in one read transaction; false (with a message) if they cannot be read. */
bool st_index_state(sc_store *s, size_t *rows, uint64_t *through);

#endif
