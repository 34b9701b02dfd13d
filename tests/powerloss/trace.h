/*
 * Power-loss test: the trace the recorder writes and the crash-state
 * builder reads.
 *
 * A trace is a sequence of records, each a pl_rec header followed by `len`
 * payload bytes (the data written, or a path). Records are numbered from 0
 * in file order; that number is the operation's place in time. A record
 * holds everything the builder needs to put a file system back into the
 * state it could have had after a power loss at any point:
 *
 *   PL_MKDIR   payload: path (a directory created under the prefix, by
 *              mkdir or mkdtemp)
 *   PL_CREATE  fid; payload: path (a file created by an open with O_CREAT)
 *   PL_WRITE   fid, off, len bytes of data; aux 1: written through an
 *              O_DSYNC/O_SYNC descriptor, durable when the call returned.
 *              Pages of a writable shared mapping that changed since the
 *              last look are recorded as writes too (see recorder.c).
 *   PL_TRUNC   fid, off: the new size
 *   PL_SYNC    fid; off, size: the range synced (size 0: the whole file);
 *              aux: every record numbered below aux is covered (the sync
 *              began after they were recorded)
 *   PL_SYNCALL aux as for PL_SYNC, for every file (sync, syncfs)
 *   PL_RENAME  payload: old path, NUL, new path
 *   PL_UNLINK  payload: path
 *   PL_LINK    payload: existing path, NUL, new path (a hard link)
 *   PL_RMDIR   payload: path (an empty directory removed)
 *   PL_ACK     off: the last position the workload saw acknowledged (its
 *              append returned); written by the workload to its ack file
 *   PL_PHASE   payload: what the workload starts doing ("snapshot", ...);
 *              a line "phase NAME" in the ack file
 *
 * A fid names one file (device and inode) for the whole trace.
 */
#ifndef SC_POWERLOSS_TRACE_H
#define SC_POWERLOSS_TRACE_H

#include <stdint.h>

enum pl_rec_type {
	PL_MKDIR = 1,
	PL_CREATE = 2,
	PL_WRITE = 3,
	PL_TRUNC = 4,
	PL_SYNC = 5,
	PL_SYNCALL = 6,
	PL_RENAME = 7,
	PL_UNLINK = 8,
	PL_ACK = 9,
	PL_PHASE = 10,
	PL_LINK = 11,
	PL_RMDIR = 12,
};

typedef struct pl_rec {
	uint32_t type;
	uint32_t fid;
	uint64_t off;
	uint64_t size; /* PL_SYNC: bytes synced from off (0: all) */
	uint64_t len;  /* payload bytes that follow */
	uint64_t aux;
} pl_rec;

#endif
