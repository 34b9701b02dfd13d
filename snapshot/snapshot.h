/*
 * Snapshots: a pinned cache version as bytes, and those bytes back into a
 * cache. Not installed; the store is the only user (plus tests, fuzzers and
 * benchmarks). The byte layout, the LMDB keys and the limits are described
 * in snapshot/FORMAT.md.
 *
 * This layer produces and verifies bytes; it never touches LMDB. The store
 * writes the encoded header and chunks under its own keys and hands them
 * back, one at a time, to restore:
 *
 *   encode:   view --iterate--> protobuf SnapshotChunk --zstd--> chunk i
 *             (every entities_per_chunk entities or ~8 MiB raw, whichever
 *             comes first) ... then the header that lists them all
 *
 *   restore:  header = sc_snapshot_header_decode(part 0)
 *             sc_snapshot_load(&header, parts 1.., cache):
 *               sc_cache_load_begin(cache, header.position)
 *               caller and helper thread, each taking the next chunk:
 *                   verify chunk i whole (checksum, zstd frame, every
 *                   entity), decompress it, lay its states out
 *                   (sc_cache_load_measure, sc_cache_load_write)
 *               caller (the cache's writer), in chunk order:
 *                   sc_cache_load_store each state of chunk i
 *               sc_snapshot_check_total(&header, sum of the chunk counts)
 *             promote (or discard on any error): the version's position
 *             is the header's
 *
 *   sc_snapshot_chunk_decode reads one chunk to a callback without a
 *   cache (inspection, tests, fuzzers); it is not part of the restore.
 *
 * Every decoder treats its bytes as hostile: sizes are checked before
 * anything is allocated, decompressed sizes are capped, protobuf input is
 * length-capped, every decoded entity is checked against the limits of
 * event.h. A failure is an error code and a message, never a crash.
 *
 * Thread safety: every function here is reentrant; distinct calls share
 * nothing. Encoding reads a pinned view only (no lock is taken; a helper
 * thread it starts compresses, and is joined before it returns); loading
 * writes the cache's pending version and so runs on the writer thread
 * (sc_snapshot_load's helper thread only decompresses and checks).
 */
#ifndef STATECACHE_SNAPSHOT_SNAPSHOT_H
#define STATECACHE_SNAPSHOT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache_lib.h"
#include "statecache/cache.h"
#include "statecache/error.h"
#include "statecache/event.h"

/* The first 8 bytes of every snapshot header record. */
#define SC_SNAPSHOT_MAGIC     "SCSNAP\0\1"
#define SC_SNAPSHOT_MAGIC_LEN 8

/* The format this build writes. It reads every version from 1 up to this
 * one; a header with a newer version is SC_EVERSION. */
#define SC_SNAPSHOT_FORMAT_VERSION 2

/* ---- limits (see FORMAT.md) ---------------------------------------------- */

/* Largest decompressed (protobuf) chunk, written or read. */
#define SC_SNAPSHOT_CHUNK_RAW_MAX (64u << 20)
/* The cache refuses any state larger encoded than one chunk holds, so no
 * state it holds makes a snapshot fail. */
_Static_assert(SC_SNAPSHOT_CHUNK_RAW_MAX >= SC_STATE_SNAPSHOT_MAX,
	       "one chunk holds the largest state the cache accepts");
/* The encoder closes a chunk once its protobuf bytes reach this size. */
#define SC_SNAPSHOT_CHUNK_RAW_TARGET (8u << 20)
/* Largest stored (compressed) chunk accepted by the decoder. */
#define SC_SNAPSHOT_CHUNK_STORED_MAX (SC_SNAPSHOT_CHUNK_RAW_MAX + (1u << 20))
/* Largest header record accepted by the decoder; bounds chunk_count. */
#define SC_SNAPSHOT_HEADER_MAX (16u << 20)
/* Most chunks one snapshot may have. */
#define SC_SNAPSHOT_CHUNKS_MAX (1u << 20)
/* Default and largest entities per chunk. */
#define SC_SNAPSHOT_CHUNK_ENTITIES_DEFAULT 4096
#define SC_SNAPSHOT_CHUNK_ENTITIES_MAX	   (1u << 20)
/* updated_by (the actor) of a decoded entity, and one string/bytes value. */
#define SC_SNAPSHOT_ACTOR_MAX 4096
#define SC_SNAPSHOT_VALUE_MAX (16u << 20)
/* zstd window accepted when decompressing (log2 bytes). */
#define SC_SNAPSHOT_WINDOW_LOG_MAX 27

/* ---- encoding ------------------------------------------------------------ */

typedef struct sc_snapshot_params {
	int zstd_level;		     /* 0: 3 */
	uint32_t entities_per_chunk; /* 0: 4096; at most ..._ENTITIES_MAX */
	int64_t created_at; /* unix ns recorded in the header; 0: now */
	/* Compress on the calling thread. By default a helper thread,
	 * started and joined within the call, compresses one chunk while the
	 * next is written; the bytes are the same either way. */
	bool compress_inline;
	/* A checkpoint: encode only the entities of `partition` (empty: the
	 * default partition), walked with sc_view_iter_init_in, and name it
	 * in the header (one_partition), so a reader can check it loads the
	 * partition it asked for. false: every partition. */
	bool one_partition;
	sc_str partition;
} sc_snapshot_params;

/* One record's bytes, owned by the sc_snapshot_encoded holding it. */
typedef struct sc_snapshot_blob {
	uint8_t *data;
	size_t len;
} sc_snapshot_blob;

/* An encoded snapshot, ready to be written: part 0 is `header`, part i is
 * chunks[i-1]. Free with sc_snapshot_encoded_free(). */
typedef struct sc_snapshot_encoded {
	uint64_t position;     /* sc_view_position() of the encoded view */
	uint64_t entity_count; /* sc_view_len_all(), or sc_view_len_in() of
				  a checkpoint's partition */
	uint32_t chunk_count;
	uint64_t bytes_raw;	   /* protobuf bytes, all chunks */
	uint64_t bytes_compressed; /* stored bytes, header and chunks */
	sc_snapshot_blob header;
	sc_snapshot_blob *chunks; /* chunk_count entries */
} sc_snapshot_encoded;

/*
 * sc_snapshot_encode - encode every entity of `view` into a new snapshot.
 *
 * `view` must stay pinned during the call; no lock is taken, so the writer
 * may go on appending meanwhile. `p` may be NULL for defaults. On success
 * *out is owned by the caller (sc_snapshot_encoded_free). On failure *out is
 * NULL and nothing is left allocated.
 *
 * Errors: SC_EINVAL (bad params; an entity that cannot be stored, such as a
 * string value holding a NUL byte), SC_ETOOBIG (one entity larger than
 * SC_SNAPSHOT_CHUNK_RAW_MAX encoded, or too many chunks), SC_ESTATE (the
 * view has cold partitions, sc_view_cold_count: it lacks their states),
 * ENOMEM.
 */
int sc_snapshot_encode(const sc_view *view, const sc_snapshot_params *p,
		       sc_snapshot_encoded **out, sc_error *err);

/* Free an encoded snapshot. NULL is a no-op. */
void sc_snapshot_encoded_free(sc_snapshot_encoded *s);

/* ---- decoding ------------------------------------------------------------ */

/* A decoded header. The arrays have chunk_count entries and are owned by
 * the header: release them with sc_snapshot_header_clear(). */
typedef struct sc_snapshot_header {
	uint32_t format_version;
	uint64_t position;
	uint64_t entity_count;
	uint32_t chunk_count;
	int64_t created_at;
	uint64_t *chunk_checksums;     /* XXH3-64 of each stored chunk */
	uint64_t *chunk_raw_sizes;     /* protobuf bytes of each chunk */
	uint64_t *chunk_entity_counts; /* entities in each chunk */
	uint64_t bytes_raw;	       /* sum of chunk_raw_sizes */
	/* A checkpoint: the snapshot holds only the partition `partition`
	 * (partition_len bytes, NUL-terminated, owned by the header; empty:
	 * the default partition). Decoding a chunk then refuses an entity
	 * of any other partition (SC_ECORRUPT). */
	bool one_partition;
	char *partition;
	size_t partition_len;
} sc_snapshot_header;

/*
 * sc_snapshot_header_decode - verify and decode a header record.
 *
 * Checks the magic, the format version, the record's own checksum, the
 * protobuf message and that its counts agree (chunk_count arrays, chunk
 * sizes under the caps, entity counts adding up). On success `out` owns its
 * arrays (sc_snapshot_header_clear); on failure `out` is zeroed and holds
 * nothing.
 *
 * Errors: SC_ECORRUPT (wrong magic, bad checksum, malformed, inconsistent),
 * SC_EVERSION (written by a newer format), SC_ETOOBIG (longer than
 * SC_SNAPSHOT_HEADER_MAX), ENOMEM.
 */
int sc_snapshot_header_decode(const void *bytes, size_t len,
			      sc_snapshot_header *out, sc_error *err);

/* Free a decoded header's arrays and zero it. Zeroed headers are a no-op. */
void sc_snapshot_header_clear(sc_snapshot_header *h);

/* A decoded entity state. Every pointer is valid during the callback only. */
typedef struct sc_snapshot_entity {
	sc_str id;
	const sc_attr *attrs; /* nattrs entries, never of type SC_VALUE_NULL */
	size_t nattrs;
	int64_t updated_at;
	sc_str updated_by;
	uint64_t position;
	sc_str partition; /* empty: the default partition (and in format 1) */
} sc_snapshot_entity;

/* Called once per decoded entity, in stored order. Non-zero stops the
 * decoding and is returned (fill `err` through your own context). */
typedef int (*sc_snapshot_entity_fn)(void *ctx, const sc_snapshot_entity *e);

/*
 * sc_snapshot_chunk_decode - verify chunk `index` of the snapshot `h`
 * describes, decompress it and call `fn` for each entity.
 *
 * Checks, before calling `fn` at all: index < chunk_count, the stored
 * XXH3-64 against the header, the zstd frame (content size present and
 * equal to the header's raw size, frame checksum), the protobuf message,
 * each entity's limits (id 1..SC_ENTITY_ID_MAX, names 1..SC_ATTR_NAME_MAX,
 * no duplicate names, known non-null value kinds, sizes), the entity count
 * against the header, and that no entity's position is beyond the
 * snapshot's. Peak memory: the raw size (the decoded entities point into
 * it) plus one attribute array. *entities (may be NULL) receives the chunk's
 * entity count on success.
 *
 * Errors: SC_EINVAL (index out of range), SC_ECORRUPT, SC_ETOOBIG, ENOMEM,
 * or fn's value.
 */
int sc_snapshot_chunk_decode(const sc_snapshot_header *h, uint32_t index,
			     const void *bytes, size_t len,
			     sc_snapshot_entity_fn fn, void *ctx,
			     uint64_t *entities, sc_error *err);

/* Called on the loading thread once chunk `index` is in the cache; its
 * stored bytes are not read again. */
typedef void (*sc_snapshot_chunk_done_fn)(void *ctx, uint32_t index,
					  const void *bytes, size_t len);

typedef struct sc_snapshot_load_params {
	/* Decompress and check on the calling thread only. By default a
	 * helper thread, started and joined within the call, decompresses
	 * and checks chunk i+1 while chunk i is loaded. */
	bool no_thread;
	sc_snapshot_chunk_done_fn chunk_done; /* may be NULL */
	void *ctx;			      /* for chunk_done */
} sc_snapshot_load_params;

/*
 * sc_snapshot_load - the whole restore of the snapshot `h` describes into
 * `cache`'s pending version: every chunk, in order (chunks[i] and lens[i]
 * are the stored bytes of chunk i; they must stay readable during the
 * call, from the helper thread too), then sc_snapshot_check_total.
 *
 * Each chunk is fully verified (as sc_snapshot_chunk_decode) before any of
 * its entities is loaded; an id that comes twice (or that the pending
 * version got from any change since it was opened) is SC_ECORRUPT when the
 * second one is loaded. The pending version takes the header's position
 * (sc_view_position of the version promoted after it), whatever the
 * positions of the entities restored. Peak memory on top of the state: up
 * to three chunks' laid-out states, two chunks' raw bytes and one attribute
 * array. On any error some entities may be in the pending version: the
 * caller discards it (sc_cache_discard). The error is the first one in
 * chunk order, whichever thread found it. `params` may be NULL. Writer
 * thread. *entities (may be NULL) receives the entity count on success.
 *
 * Errors: those of sc_snapshot_chunk_decode, SC_ECORRUPT from the total
 * or an id given twice, and the cache's: ENOMEM (the pending version is
 * poisoned), SC_EPOISONED, SC_ETOOBIG.
 */
int sc_snapshot_load(const sc_snapshot_header *h, const void *const *chunks,
		     const size_t *lens, sc_cache *cache,
		     const sc_snapshot_load_params *params, uint64_t *entities,
		     sc_error *err);

/*
 * sc_snapshot_check_total - after the last chunk: SC_ECORRUPT unless
 * `entities` (the sum over every chunk) equals the header's entity_count.
 */
int sc_snapshot_check_total(const sc_snapshot_header *h, uint64_t entities,
			    sc_error *err);

#endif
