/*
 * Entity states: layout and construction. Private to cache/ (other layers
 * use cache/cache_lib.h).
 *
 * One entity state is ONE allocation, immutable once it is in a published
 * version:
 *
 *   +-------------------+  struct sc_entity (header, 8-byte aligned size)
 *   | header            |
 *   +-------------------+  sc_entity_key(e): the HAMT key object, i.e. the id
 *   | len | 0 | id \0   |
 *   +-------------------+  table_off: nattrs sc_entity_rec (16 bytes each),
 *   | attr table        |  sorted by name (bytewise)
 *   +-------------------+  every string the state holds, each followed by a
 *   | strings           |  NUL that is not counted in its length: updated_by,
 *   +-------------------+  the partition's name (only when not the default
 *                          partition), then each attribute's name and
 *                          string/bytes value
 *
 * Offsets are 32-bit, so a state is smaller than 4 GiB (SC_ETOOBIG); and
 * a state must fit in one snapshot chunk (SC_STATE_SNAPSHOT_MAX encoded,
 * also SC_ETOOBIG).
 *
 * Identity: an entity is (partition, id). Each partition has a tree of its
 * own (cache/cache_internal.h: the default partition's is the version's
 * `root`, a named partition's is found by name in the version's partition
 * table), so the HAMT key is the id alone, the same key as in a store that
 * never names a partition, and (tree, key) names the entity unambiguously.
 * The partition's name is kept in the state too (sc_entity_partition), so
 * a state read anywhere (a diff, an iteration of every partition, a
 * standalone fold) tells which entity it is.
 *
 * The HAMT entry for an entity is (sc_entity_key(e), e); both live in the
 * same block, so the release hook frees the pair at once: a state in a
 * cache goes back to the cache's entity pool (sc_pool_free, by
 * sc_entity_block_size), a standalone state (sc_entity_apply) to
 * sc_entity_free.
 */
#ifndef STATECACHE_CACHE_ENTITY_H
#define STATECACHE_CACHE_ENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/pool.h"
#include "statecache/cache.h"

/* One attribute in a state's table (16 bytes); its name and string or bytes
 * value live in the block, at offsets from the block's start. */
typedef struct sc_entity_rec {
	uint32_t name_off;
	uint8_t name_len; /* 1..255 */
	uint8_t type;	  /* sc_value_type, never SC_VALUE_NULL */
	uint16_t reserved;
	union {
		int64_t i;
		double d;
		bool b;
		struct {
			uint32_t off, len;
		} s;
	} u;
} sc_entity_rec;

struct sc_entity {
	uint64_t position;
	int64_t updated_at;
	/* Generation of the pending version that created this state (0 for a
	 * standalone state). Lets the writer tell a state it created in the
	 * open edit from one the edit's base version holds. */
	uint64_t born;
	uint32_t size;	    /* bytes of the whole block (< 4 GiB) */
	uint32_t nattrs;    /* records in the table */
	uint16_t table_off; /* the table; updated_by follows it (an id is at
			       most SC_ENTITY_ID_MAX bytes: the header and
			       the key end below 64 KiB) */
	uint16_t part_len;  /* the partition's name, after updated_by's NUL;
			       0: the default partition (nothing stored) */
	uint32_t actor_len;
};

static inline const sc_hamt_key *sc_entity_key(const sc_entity *e)
{
	return (const sc_hamt_key *)(const void *)(e + 1);
}

static inline const sc_entity_rec *sc_entity_table(const sc_entity *e)
{
	return (const sc_entity_rec *)(const void *)((const char *)e +
						     e->table_off);
}

/* Bytes of the allocation holding `e`. */
static inline size_t sc_entity_size_of(const sc_entity *e)
{
	return e->size;
}

/* Bytes of the block allocated for `e`: its size rounded up to 8, so that
 * states of nearby sizes share a pool class (sc_pool_free needs this). */
static inline size_t sc_entity_block_size(const sc_entity *e)
{
	return ((size_t)e->size + 7u) & ~(size_t)7u;
}

/* Copy `len` bytes and a NUL to p; returns the byte after the NUL. */
static inline char *sc_entity_put_bytes(char *p, const char *src, size_t len)
{
	if (len)
		memcpy(p, src, len);
	p[len] = '\0';
	return p + len + 1;
}

/* Offset of the attribute table in the state of an id of `id_len` bytes:
 * the header, then the key object (id and NUL), 8-aligned. */
static inline size_t sc_entity_table_off(size_t id_len)
{
	return sizeof(sc_entity) +
	       ((sizeof(sc_hamt_key) + id_len + 1 + 7) & ~(size_t)7);
}

/* Bytes of the strings area that updated_by and the partition's name take
 * (the name and its NUL only for a named partition). */
static inline size_t sc_entity_head_strings(sc_str actor, sc_str part)
{
	return actor.len + 1 + (part.len ? part.len + 1 : 0);
}

/* Write the header (all but `size`), the key, updated_by and the
 * partition's name of a state of `nattrs` attributes into block e. Returns
 * the attribute table; *strings is where the attributes' names and values
 * go. `part` is at most SC_EVENT_FIELD_MAX bytes. */
static inline sc_entity_rec *
sc_entity_put_head(sc_entity *e, sc_str part, sc_str id, size_t nattrs,
		   uint64_t position, int64_t updated_at, uint64_t born,
		   sc_str actor, char **strings)
{
	size_t table_off = sc_entity_table_off(id.len);
	sc_hamt_key *key = (sc_hamt_key *)(void *)(e + 1);
	key->len = (uint32_t)id.len;
	key->reserved = 0;
	memcpy(key->bytes, id.ptr, id.len);
	key->bytes[id.len] = '\0';
	e->position = position;
	e->updated_at = updated_at;
	e->born = born;
	e->nattrs = (uint32_t)nattrs;
	e->table_off = (uint16_t)table_off;
	e->part_len = (uint16_t)part.len;
	e->actor_len = (uint32_t)actor.len;
	sc_entity_rec *tab = (sc_entity_rec *)(void *)((char *)e + table_off);
	char *p =
	    sc_entity_put_bytes((char *)(tab + nattrs), actor.ptr, actor.len);
	if (part.len)
		p = sc_entity_put_bytes(p, part.ptr, part.len);
	*strings = p;
	return tab;
}

/* Fill table record *t for attribute *a, writing its name and any string or
 * bytes value at p (offsets count from the block's start, base); returns
 * the end of what was written. */
static inline char *sc_entity_put_attr(char *base, char *p, sc_entity_rec *t,
				       const sc_attr *a)
{
	t->name_off = (uint32_t)(p - base);
	t->name_len = (uint8_t)a->name.len;
	t->type = (uint8_t)a->value.type;
	t->reserved = 0;
	t->u.i = 0;
	p = sc_entity_put_bytes(p, a->name.ptr, a->name.len);
	switch (a->value.type) {
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		t->u.s.off = (uint32_t)(p - base);
		t->u.s.len = (uint32_t)a->value.u.s.len;
		return sc_entity_put_bytes(p, a->value.u.s.ptr,
					   a->value.u.s.len);
	case SC_VALUE_INT:
		t->u.i = a->value.u.i;
		break;
	case SC_VALUE_DOUBLE:
		t->u.d = a->value.u.d;
		break;
	case SC_VALUE_BOOL:
		t->u.b = a->value.u.b;
		break;
	case SC_VALUE_NULL:
		break;
	}
	return p;
}

/* SC_ETOOBIG for a state of `id` that would reach 4 GiB. */
int sc_entity_too_big(sc_str id, sc_error *err);

/* A state of at most this many bytes (sc_entity.size) takes at most
 * SC_STATE_SNAPSHOT_MAX in a snapshot (the argument is in entity.c), so
 * only a larger one has its snapshot size computed. */
#define SC_ENTITY_SNAPSHOT_SURE (48u << 20)

/*
 * sc_entity_check_snapshot - SC_ETOOBIG, with a message naming the entity,
 * its snapshot size and the limit, when `e` (a complete state or state
 * image) would take more than SC_STATE_SNAPSHOT_MAX in a snapshot; 0
 * otherwise. Constant time for a state of at most SC_ENTITY_SNAPSHOT_SURE
 * bytes. Any thread; `e` is only read.
 */
int sc_entity_check_snapshot(const sc_entity *e, sc_error *err);

/*
 * sc_entity_build - the state `ev` (already validated) makes of `prev`
 * (NULL: absent), stamped with generation `born`. *out is NULL when the
 * event leaves the entity deleted (or a delete hits a missing entity).
 * Errors: ENOMEM, SC_ETOOBIG (the state would not fit in memory or in a
 * snapshot chunk: sc_entity_check_snapshot).
 */
int sc_entity_build(const sc_entity *prev, const sc_event *ev, uint64_t born,
		    sc_entity **out, sc_error *err);

/* sc_entity_build with the state's block taken from `pool` (NULL:
 * sc_malloc, freed with sc_entity_free). A block from a pool goes back
 * with sc_pool_free(pool, e, sc_entity_block_size(e)). */
int sc_entity_build_in(const sc_entity *prev, const sc_event *ev, uint64_t born,
		       sc_pool *pool, sc_entity **out, sc_error *err);

/*
 * sc_entity_build_loaded - a state of (part, id) from a whole attribute
 * list (any order,
 * no NULL values, no duplicate names), as sc_cache_load_entity takes it,
 * its block from `pool` as sc_entity_build_in does. Validates everything.
 * Errors: SC_EINVAL, SC_ETOOBIG, ENOMEM.
 */
int sc_entity_build_loaded(sc_str part, sc_str id, const sc_attr *attrs,
			   size_t nattrs, int64_t updated_at, sc_str updated_by,
			   uint64_t position, uint64_t born, sc_pool *pool,
			   sc_entity **out, sc_error *err);

#endif
