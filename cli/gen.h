/*
 * statecache command: a deterministic generator of realistic events, for
 * the demo, the hidden `gen` command and tests.
 *
 * Entities are "device-NNNNNN" (model, fw, temp, battery, online, site, key)
 * and "user-NNNNNN" (name, age, plan, vip, score, locale, avatar); 30% of
 * events hit a hot 1% of the ids. Types: 75% set, 12% replace, 8% unset,
 * 5% delete. Every set and replace also writes "seq" (the event's 1-based
 * index in the stream) and "check" (sc_cli_gen_check_value of id and seq),
 * and no unset removes them, so any entity state that is whole satisfies
 * sc_cli_gen_entity_ok: a reader can verify it never sees a torn state.
 * The entity NNNNNN lives in partition sc_cli_gen_partition(NNNNNN) ("eu",
 * "us" or "ap"): an entity is (partition, id).
 */
#ifndef STATECACHE_CLI_GEN_H
#define STATECACHE_CLI_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "statecache/event.h"

#define SC_CLI_GEN_ATTRS_MAX 10

typedef struct sc_cli_gen {
	uint64_t rng;
	uint32_t entities;
	uint64_t count; /* events generated so far */
	int64_t t0;	/* time of the first event, unix ns */
	sc_event ev;	/* the last event; points into the fields below */
	char id[32];
	char check[24];
	char strs[SC_CLI_GEN_ATTRS_MAX][48];
	unsigned char bytes[16];
	sc_attr attrs[SC_CLI_GEN_ATTRS_MAX];
	sc_str tags[2];
} sc_cli_gen;

/* Start a stream: `seed` fixes it, `entities` ids (>= 1), first event at
 * `t0` (unix ns; later events are 1 ms apart). */
void sc_cli_gen_init(sc_cli_gen *g, uint64_t seed, uint32_t entities,
		     int64_t t0);

/* The next event; valid until the next call. Its position is the stream
 * index (1-based), which the store ignores. */
const sc_event *sc_cli_gen_next(sc_cli_gen *g);

/* The partition of the entity of index `idx` (the NNNNNN of its id). */
sc_str sc_cli_gen_partition(uint32_t idx);

/* The "check" value written with `seq` for `id`: 16 hex digits. */
void sc_cli_gen_check_value(const char *id, size_t id_len, int64_t seq,
			    char out[17]);

#endif
