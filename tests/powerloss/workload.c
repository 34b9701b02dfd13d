/*
 * Power-loss test: the workload run under the recorder.
 *
 *   pl_workload DIR MODE ACKFILE [BATCHES [SEED]]
 *
 * Creates a store in DIR (which must not exist) with a small map, so that
 * the map grows several times, appends BATCHES batches of 1..40 events
 * (pl_event: the event at position p is a function of p), takes a
 * snapshot every 8 batches, closes and reopens the store half-way, and
 * writes "ack N" to ACKFILE with write(2) after every append that
 * returned, N being the last position appended, and "phase NAME" when it
 * starts creating, appending, a snapshot, reopening or closing. MODE is full,
 * consistent, nosync, nosync-sync (nosync with a 2 ms background flush) or
 * nosync-forced (nosync; the checker deletes the session markers).
 * Exit status 0 when every call succeeded.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statecache/store.h"
#include "tests/powerloss/plevent.h"

#define BATCH_MAX 40

/* Tell the recorder (through the ack file) what the workload starts. */
static int phase(int ack, const char *name)
{
	char line[64];
	int k = snprintf(line, sizeof line, "phase %s\n", name);
	return write(ack, line, (size_t)k) == k ? 0 : -1;
}

static int mode_options(const char *mode, sc_store_options *o)
{
	if (!strcmp(mode, "full"))
		o->durability = SC_DURABILITY_FULL;
	else if (!strcmp(mode, "consistent"))
		o->durability = SC_DURABILITY_CONSISTENT;
	else if (!strcmp(mode, "nosync") || !strcmp(mode, "nosync-forced"))
		o->durability = SC_DURABILITY_NOSYNC;
	else if (!strcmp(mode, "nosync-sync")) {
		o->durability = SC_DURABILITY_NOSYNC;
		o->sync_interval_ms = 2;
	} else
		return -1;
	return 0;
}

static int open_store(const char *dir, const char *mode, bool create,
		      sc_store **st)
{
	sc_store_options o = {0};
	mode_options(mode, &o);
	o.create = create;
	o.map_size = 64 << 10;
	o.map_size_max = 256 << 20;
	o.index_lag = 64;
	sc_error err;
	int rc = sc_store_open(dir, &o, st, &err);
	if (rc)
		fprintf(stderr, "pl_workload: open %s: %s\n", dir, err.message);
	return rc;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(
		    stderr,
		    "usage: pl_workload DIR MODE ACKFILE [BATCHES [SEED]]\n");
		return 2;
	}
	const char *dir = argv[1], *mode = argv[2];
	unsigned batches = argc > 4 ? (unsigned)atoi(argv[4]) : 120;
	uint64_t seed = argc > 5 ? strtoull(argv[5], NULL, 10) : 1;
	seed = seed * 0x9E3779B97F4A7C15ULL | 1;
	sc_store_options probe = {0};
	if (mode_options(mode, &probe)) {
		fprintf(stderr, "pl_workload: unknown mode %s\n", mode);
		return 2;
	}
	int ack = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (ack < 0) {
		fprintf(stderr, "pl_workload: %s: %s\n", argv[3],
			strerror(errno));
		return 1;
	}
	sc_store *st;
	if (phase(ack, "create") || open_store(dir, mode, true, &st) ||
	    phase(ack, "append"))
		return 1;
	static pl_event_buf bufs[BATCH_MAX];
	sc_event evs[BATCH_MAX];
	uint64_t last = 0;
	for (unsigned b = 0; b < batches; b++) {
		size_t n = 1 + (size_t)(rnd(&seed) % BATCH_MAX);
		for (size_t i = 0; i < n; i++)
			evs[i] = pl_event(last + 1 + i, &bufs[i]);
		sc_error err;
		uint64_t first;
		if (sc_store_append(st, evs, n, &first, &err)) {
			fprintf(stderr, "pl_workload: append: %s\n",
				err.message);
			return 1;
		}
		if (first != last + 1) {
			fprintf(stderr,
				"pl_workload: append at %llu, not %llu\n",
				(unsigned long long)first,
				(unsigned long long)last + 1);
			return 1;
		}
		last += n;
		char line[64];
		int k = snprintf(line, sizeof line, "ack %llu\n",
				 (unsigned long long)last);
		if (write(ack, line, (size_t)k) != k) {
			fprintf(stderr, "pl_workload: writing %s failed\n",
				argv[3]);
			return 1;
		}
		if (b % 8 == 7 && (phase(ack, "snapshot") ||
				   sc_store_snapshot(st, NULL, &err) ||
				   phase(ack, "append"))) {
			fprintf(stderr, "pl_workload: snapshot: %s\n",
				err.message);
			return 1;
		}
		if (b == batches / 2) {
			if (phase(ack, "reopen"))
				return 1;
			sc_store_close(st);
			if (open_store(dir, mode, false, &st) ||
			    phase(ack, "append"))
				return 1;
		}
	}
	if (phase(ack, "close"))
		return 1;
	sc_store_close(st);
	if (phase(ack, "closed"))
		return 1;
	close(ack);
	return 0;
}
