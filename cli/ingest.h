/*
 * statecache command: the ingest pipeline shared by `ingest` and `demo`.
 *
 * A line source yields JSON Lines (from a file, stdin or the generator);
 * sc_cli_ingest_run turns every `batch` events into one sc_store_append
 * (one LMDB transaction). The work runs as a pipeline of batches:
 *
 *   reader thread     decoding threads        calling thread (writer)
 *   lines -> batch    JSON -> sc_event,       sc_store_append, in input
 *   (input order)     sc_event_validate       order, one batch at a time
 *
 * so only what must be serial (the store's write transaction) runs on the
 * writer. A fixed ring of batches (the decoding threads + 2) is in flight,
 * which bounds the memory: a full ring stops the reader until the writer
 * frees a batch.
 *
 * A batch is handed on when it holds `batch` events, at the end of the
 * input, or when the input has been idle for `idle_ms` with at least one
 * event waiting, or, for input that trickles in without such a pause,
 * once its first line has waited SC_CLI_LINGER_FACTOR x idle_ms: the
 * reader waits for input with poll(), never by sleeping, so a slow
 * producer's events are committed (and acknowledged, see `ack`) soon
 * after it writes them instead of when a batch fills.
 *
 * Each line is decoded and checked with sc_event_validate (the store's own
 * rules) before it joins a batch that goes to the store, so a batch that
 * reaches the store is valid. On a malformed or invalid line the writer
 * appends the events of that batch that precede it (every earlier batch is
 * already committed, in order), then stops: every event before the bad
 * line is committed, none after it, however many batches were in flight.
 *
 * The events are encoded (protobuf) by the store itself, on the writer:
 * sc_store_append writes each event's record straight into the page LMDB
 * reserves for it, so encoding ahead would cost an extra copy and an entry
 * point for pre-encoded events, for a small share of the writer's time.
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

/* next() found no line within its wait (sc_cli_wait), or the wake
 * descriptor became readable (sc_cli_source.wake_fd). */
#define SC_CLI_SOURCE_IDLE (-1)

/* How long next() may wait for a whole line: `idle_ms` from when it
 * starts waiting (< 0: no limit), and not past `until` (sc_cli_now()
 * seconds; 0: no limit). */
typedef struct sc_cli_wait {
	int idle_ms;
	double until;
} sc_cli_wait;

typedef struct sc_cli_source sc_cli_source;

struct sc_cli_source {
	/*
	 * 1: a line (without its newline) in *line, *len, valid until the
	 * next call; 0: end of input; SC_CLI_SOURCE_IDLE: no whole line
	 * arrived within the wait `w` (NULL: no limit) or wake_fd is
	 * readable; SC_EINVAL / errno: error, err says why (a line over
	 * SC_CLI_LINE_MAX, a read error). Sources that never wait (a
	 * regular file, the generator) ignore `w`.
	 */
	int (*next)(sc_cli_source *s, const char **line, size_t *len,
		    const sc_cli_wait *w, sc_error *err);
	uint64_t total_bytes; /* input size when known, else 0 */
	uint64_t bytes_read;
	/* A descriptor whose readability interrupts a wait in next() (-1:
	 * none). Set by sc_cli_ingest_run, which uses it to stop the
	 * reader. */
	int wake_fd;
};

/* A source reading the descriptor of `f` with read(2) (not closed by the
 * source; nothing must have been read from `f` through stdio). */
typedef struct sc_cli_file_source {
	sc_cli_source base;
	int fd;
	bool regular; /* a regular file: reads never wait */
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

/* The default of sc_cli_ingest_opts.idle_ms. */
#define SC_CLI_IDLE_MS_DEFAULT 100
/* A partial batch waits at most this many times idle_ms for more lines
 * when the input never pauses for idle_ms. */
#define SC_CLI_LINGER_FACTOR 10
/* The most decoding threads sc_cli_ingest_default_threads picks. */
#define SC_CLI_DECODERS_MAX 4

typedef struct sc_cli_ingest_opts {
	size_t batch;	  /* events per transaction, >= 1 */
	bool progress;	  /* draw a progress bar on stderr */
	unsigned threads; /* decoding threads; 0: no pipeline, read, decode
			     and append one batch at a time on the calling
			     thread */
	int idle_ms;	  /* commit a partial batch once the input has been
			     idle this long (or its first line has waited
			     SC_CLI_LINGER_FACTOR times this long); < 0: only
			     full batches and the end of input */
	FILE *ack;	  /* when set, one line per committed batch, flushed:
			     {"lines":N,"events":E,"last_position":P}, N the input
			     line through which everything is committed, E the
			     events committed so far by this run, P the store's
			     last position */
} sc_cli_ingest_opts;

/* The decoding threads for this machine: the cores online, 1 to
 * SC_CLI_DECODERS_MAX. */
unsigned sc_cli_ingest_default_threads(void);

typedef struct sc_cli_ingest_result {
	uint64_t events;  /* appended */
	uint64_t lines;	  /* read up to the last committed or the bad line,
			     blank lines included */
	uint64_t batches; /* transactions */
	double seconds;
} sc_cli_ingest_result;

/*
 * sc_cli_ingest_run - ingest every line of `src` into `st`.
 *
 * Returns 0; SC_EINVAL when a line is malformed or its event invalid
 * (err: "line N: reason"; everything before line N is committed); another
 * code when reading or appending failed or a thread could not start (err
 * says which lines are committed). `res` is filled in every case. The
 * source is read on another thread (unless opt->threads is 0); the store
 * is written only on the calling thread.
 */
int sc_cli_ingest_run(sc_store *st, sc_cli_source *src,
		      const sc_cli_ingest_opts *opt, sc_cli_ingest_result *res,
		      sc_error *err);

#endif
