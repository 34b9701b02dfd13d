/*
 * statecache command: declarations shared by the command implementations
 * (cli/cmd_*.c) and main().
 *
 * Exit codes, the same for every command:
 *   0  success
 *   1  not found (entity, store) or an operation failed
 *   2  bad input or usage (malformed event line, unknown option)
 */
#ifndef STATECACHE_CLI_CLI_H
#define STATECACHE_CLI_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/buf.h"
#include "statecache/store.h"

enum {
	SC_CLI_EXIT_OK = 0,
	SC_CLI_EXIT_FAIL = 1,
	SC_CLI_EXIT_USAGE = 2,
};

/* The default store directory (--db). */
#define SC_CLI_DEFAULT_DB "./statecache.db"

/* Options given before the command name. */
typedef struct sc_cli_global {
	const char *db;
} sc_cli_global;

/* A command: argv[0] is the command name, options follow. Returns the
 * process exit code. */
typedef int (*sc_cli_command_fn)(const sc_cli_global *g, int argc, char **argv);

typedef struct sc_cli_command {
	const char *name;
	const char *summary; /* one line for the global --help */
	sc_cli_command_fn run;
	bool hidden; /* not listed in the global --help */
} sc_cli_command;

/* The commands, terminated by an entry with a NULL name. */
extern const sc_cli_command sc_cli_commands[];

/* The global --help text. */
void sc_cli_usage(FILE *out);

/* ---- argument helpers (cli/args.c) -------------------------------------- */

/* True when argv[i] is -h or --help. */
bool sc_cli_is_help(const char *arg);

/*
 * If argv[*i] is `--name VALUE` or `--name=VALUE`, store VALUE in *val,
 * advance *i past it and return 1. Return 0 when argv[*i] is a different
 * argument, -1 (after printing a usage error for `cmd`) when the value is
 * missing.
 */
int sc_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
	       const char **val);

/* Parse a decimal unsigned integer in [min, max]; on failure print a usage
 * error naming `what` for `cmd` and return -1. */
int sc_cli_parse_u64(const char *cmd, const char *what, const char *s,
		     uint64_t min, uint64_t max, uint64_t *out);

/* Parse a durability name (full, consistent, nosync) into *out; on
 * failure print a usage error for `cmd` and return -1. */
int sc_cli_parse_durability(const char *cmd, const char *s, sc_durability *out);

/* Print "statecache CMD: MESSAGE\n(see `statecache CMD --help`)" to stderr
 * and return SC_CLI_EXIT_USAGE. */
int sc_cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Seconds from a monotonic clock. */
double sc_cli_now(void);

/* ---- store helpers (cli/cmd_store.c) ------------------------------------ */

/*
 * Open the store at `db` for command `cmd`. On failure print the cause (for
 * a missing store: "no store at DIR (create one with ingest)") and return
 * SC_CLI_EXIT_FAIL; 0 on success.
 */
int sc_cli_store_open(const char *cmd, const char *db, bool create,
		      sc_durability durability, sc_store **out);
/* sc_cli_store_open with sc_store_options.sync_interval_ms. */
int sc_cli_store_open_with(const char *cmd, const char *db, bool create,
			   sc_durability durability, unsigned sync_interval_ms,
			   sc_store **out);

/* Open the store at `db` read-only (sc_store_options.read_only) for a
 * command that only reads, beside any process that writes it; `follow`:
 * the store's thread follows the log (else the cache stays as of the
 * open). A store of an older format is opened for writing instead (its
 * upgrade). Errors as sc_cli_store_open. */
int sc_cli_store_open_read(const char *cmd, const char *db, bool follow,
			   sc_store **out);

/* Append a newline to `b` and write it to stdout; false on failure. */
bool sc_cli_print_line(sc_cli_buf *b);

/* ---- commands ----------------------------------------------------------- */

int sc_cli_cmd_gen(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_ingest(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_get(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_scan(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_events(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_snapshot(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_stats(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_verify(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_demo(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_backup(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_partition(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_partitions(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_projections(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_stream_create(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_publish(const sc_cli_global *g, int argc, char **argv);
int sc_cli_cmd_follow(const sc_cli_global *g, int argc, char **argv);

/* The node's fields of `stats` ("stream", "stream_sequence", "stream_lag",
 * each followed by a comma) when the store follows a stream and the build
 * has NATS support; nothing otherwise (cli/cmd_cluster.c). 0 or ENOMEM. */
int sc_cli_cluster_stats(sc_store *st, sc_cli_buf *b);
int sc_cli_cmd_watch(const sc_cli_global *g, int argc, char **argv);

#endif
