/*
 * Shared between snapshot/encode.c and snapshot/decode.c. Not installed.
 */
#ifndef STATECACHE_SNAPSHOT_INTERNAL_H
#define STATECACHE_SNAPSHOT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem */
#include <zstd.h>
#include <zstd_errors.h>

#include "common/internal.h"

/* Header record layout (FORMAT.md): magic, version, protobuf length, the
 * protobuf SnapshotHeader, XXH3-64 of everything before it. */
#define SC_SNAPSHOT_HEADER_FIXED   16 /* magic + version + length */
#define SC_SNAPSHOT_HEADER_TRAILER 8

/* The smallest encoding of one entity inside a SnapshotChunk: the entity's
 * tag and length (2 bytes) plus an id of one byte (3 bytes). Bounds how many
 * entities a chunk of a given raw size can claim to hold. */
#define SC_SNAPSHOT_ENTITY_MIN_BYTES 5

static inline void sc_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t sc_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void sc_put_be64(uint8_t *p, uint64_t v)
{
	sc_put_be32(p, (uint32_t)(v >> 32));
	sc_put_be32(p + 4, (uint32_t)v);
}

static inline uint64_t sc_get_be64(const uint8_t *p)
{
	return (uint64_t)sc_get_be32(p) << 32 | sc_get_be32(p + 4);
}

/* zstd allocates through sc_malloc too, so fault injection reaches it. */
static inline void *sc_zstd_alloc(void *opaque, size_t size)
{
	SC_UNUSED(opaque);
	return sc_malloc(size);
}

static inline void sc_zstd_free(void *opaque, void *p)
{
	SC_UNUSED(opaque);
	sc_free(p);
}

static const ZSTD_customMem sc_zstd_mem = {sc_zstd_alloc, sc_zstd_free, NULL};

#endif
