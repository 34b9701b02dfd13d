/*
 * A reference model of the entity state, for differential tests.
 *
 * Deliberately simple: a chained hash table of entities, each with an
 * unsorted array of attributes, applying events one attribute at a time in
 * event order. It shares no code with cache/entity.c, so agreement between
 * the two means something. Uses plain malloc (never the library's
 * allocator), so allocation-failure injection does not reach it; it aborts
 * on out-of-memory.
 *
 * An entity is (partition, id): an event's partition (empty: the default
 * partition) and its id name the entity it changes; the same id in two
 * partitions is two entities.
 *
 * Semantics (the same as sc_cache_apply): set merges (a null value removes
 * the name, the last duplicate wins); unset removes names; replace clears
 * then sets (nulls count as absent); delete removes the entity (a delete of
 * a missing one does nothing). Every event but delete leaves the entity
 * existing. The event must be valid (as sc_cache_apply would accept it).
 *
 * Transactions: tk_refstate_begin() starts journaling; rollback undoes every
 * apply since begin, commit keeps them. Mirrors promote and discard.
 */
#ifndef STATECACHE_TESTS_REFSTATE_H
#define STATECACHE_TESTS_REFSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/cache.h"

typedef struct tk_refattr {
	sc_str name;	/* owned copy */
	sc_value value; /* string/bytes: owned copy */
} tk_refattr;

typedef struct tk_refentity {
	sc_str partition; /* owned copy; empty: the default partition */
	sc_str id;	  /* owned copy */
	tk_refattr *attrs;
	size_t nattrs;
	int64_t updated_at;
	sc_str updated_by; /* owned copy */
	uint64_t position;
	struct tk_refentity *next; /* hash chain */
} tk_refentity;

typedef struct tk_refstate tk_refstate;

tk_refstate *tk_refstate_new(void);
void tk_refstate_free(tk_refstate *rs);

/* Apply a valid event. */
void tk_refstate_apply(tk_refstate *rs, const sc_event *ev);

/* The entity `id` of the default partition (_in: of `partition`), or
 * NULL. Valid until the next change. */
const tk_refentity *tk_refstate_lookup(const tk_refstate *rs, sc_str id);
const tk_refentity *tk_refstate_lookup_in(const tk_refstate *rs,
					  sc_str partition, sc_str id);
/* The value of one attribute, or false when absent. */
bool tk_refentity_find(const tk_refentity *re, sc_str name, sc_value *out);
/* Entities of every partition; _in: of one partition (a walk). */
size_t tk_refstate_len(const tk_refstate *rs);
size_t tk_refstate_len_in(const tk_refstate *rs, sc_str partition);

/* Call fn for every entity, in no particular order. */
void tk_refstate_foreach(const tk_refstate *rs,
			 void (*fn)(void *ctx, const tk_refentity *re),
			 void *ctx);

/* Journaling, see above. begin while a transaction is open is an error
 * (aborts the test program). */
void tk_refstate_begin(tk_refstate *rs);
void tk_refstate_commit(tk_refstate *rs);
void tk_refstate_rollback(tk_refstate *rs);

/* True when two values are the same kind with the same contents (doubles
 * by their bits, as the cache stores them). Written here, not taken from
 * sc_value_equal: nothing of cache/ judges its own results. */
bool tk_value_equal(const sc_value *a, const sc_value *b);

/* True when `re` and `e` hold the same state (both NULL counts as equal).
 * On a mismatch, `why` (may be NULL) says what differs. */
bool tk_refstate_entity_equal(const tk_refentity *re, const sc_entity *e,
			      char *why, size_t why_len);

/* Compare the whole model with a view: same entity count and every entity
 * equal, in every partition; the view's partitions, each read alone (its
 * count, its iteration, its lookups), agree with the model's. */
bool tk_refstate_check_view(const tk_refstate *rs, const sc_view *view,
			    char *why, size_t why_len);

/* Compare one partition of the model with the same partition of the view:
 * its count, and every entity its iteration yields equal to the model's
 * and to the view's lookup of it. */
bool tk_refstate_check_partition(const tk_refstate *rs, const sc_view *view,
				 sc_str partition, char *why, size_t why_len);

/* Compare only the given ids of the default partition (present or absent
 * in both). */
bool tk_refstate_check_ids(const tk_refstate *rs, const sc_view *view,
			   const sc_str *ids, size_t nids, char *why,
			   size_t why_len);

/* Order-independent hash of the whole state (partitions, ids, attributes,
 * updated_at, updated_by, position); tk_refstate_view_hash gives the same
 * number for a view holding the same state. */
uint64_t tk_refstate_hash(const tk_refstate *rs);
uint64_t tk_refstate_view_hash(const sc_view *view);

#endif
