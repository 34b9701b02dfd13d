/*
 * statecache command: the ingest pipeline shared by `ingest` and `demo`.
 *
 * A line source yields JSON Lines (from a file, stdin or the generator);
 * sc_cli_ingest_run decodes each line, collects `batch` events and appends
 * them with one sc_store_append (one LMDB transaction) per batch.
 *
 * Each line is decoded and checked with sc_event_validate (the store's own
 * rules) before it joins a batch, so a batch that reaches the store is
 * valid. On a malformed or invalid line the events of the current batch
 * that precede it are appended first, then the run stops: every event
 * before the bad line is committed, none after it.
 */
#ifndef STATECACHE_CLI_INGEST_H
#define STATECACHE_CLI_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/buf.h"
#include "cli/gen.h"
#include "statecache/store.h"

typedef struct sc_cli_source sc_cli_source;

struct sc_cli_source {
	/* 1: a line (without its newline) in *line, *len, valid until the
	 * next call; 0: end of input; SC_EINVAL / errno: error, err says why
	 * (a line over SC_CLI_LINE_MAX, a read error). */
	int (*next)(sc_cli_source *s, const char **line, size_t *len,
		    sc_error *err);
	uint64_t total_bytes; /* input size when known, else 0 */
	uint64_t bytes_read;
};

/* A source reading `f` (not closed by the source). */
typedef struct sc_cli_file_source {
	sc_cli_source base;
	FILE *f;
	char *buf;
	size_t start, end;
	bool eof;
} sc_cli_file_source;

/* 0 or ENOMEM. total_bytes is taken from fstat when `f` is a regular
 * file. */
int sc_cli_file_source_init(sc_cli_file_source *s, FILE *f);
void sc_cli_file_source_free(sc_cli_file_source *s);

/* A source of `count` generated events, encoded as JSON lines. */
typedef struct sc_cli_gen_source {
	sc_cli_source base;
	sc_cli_gen gen;
	uint64_t left;
	sc_cli_buf line;
} sc_cli_gen_source;

void sc_cli_gen_source_init(sc_cli_gen_source *s, uint64_t seed,
			    uint32_t entities, int64_t t0, uint64_t count);
void sc_cli_gen_source_free(sc_cli_gen_source *s);

typedef struct sc_cli_ingest_opts {
	size_t batch;  /* events per transaction, >= 1 */
	bool progress; /* draw a progress bar on stderr */
} sc_cli_ingest_opts;

typedef struct sc_cli_ingest_result {
	uint64_t events;  /* appended */
	uint64_t lines;	  /* read, blank lines included */
	uint64_t batches; /* transactions */
	double seconds;
} sc_cli_ingest_result;

/*
 * sc_cli_ingest_run - ingest every line of `src` into `st`.
 *
 * Returns 0; SC_EINVAL when a line is malformed or its event invalid
 * (err: "line N: reason"; everything before line N is committed); another
 * code when reading or appending failed (err says which lines are
 * committed). `res` is filled in every case.
 */
int sc_cli_ingest_run(sc_store *st, sc_cli_source *src,
		      const sc_cli_ingest_opts *opt, sc_cli_ingest_result *res,
		      sc_error *err);

#endif
