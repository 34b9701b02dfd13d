/*
 * statecache ingest: append events from JSON Lines.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/ingest.h"
#include "cli/json_event.h"

static const char ingest_help[] =
    "usage: statecache [--db DIR] ingest [FILE|-] [--batch N]\n"
    "                  [--durability full|consistent|nosync]\n"
    "                  [--sync-interval MS] [--nosync]\n"
    "                  [--idle-ms MS] [--threads T] [--ack]\n"
    "\n"
    "Append the events in FILE (default: stdin), one JSON object per line,\n"
    "to the store, creating the store if it does not exist. Every N lines\n"
    "(default 1000) are appended as one transaction; fewer when the input\n"
    "has been idle for MS milliseconds (default 100; 0 commits whatever has\n"
    "arrived each time the input has nothing more to read) or, when it\n"
    "trickles in without such a pause, once the first line of the batch\n"
    "has waited 10 x MS: the events of a slow producer are committed soon\n"
    "after it writes them. T threads (default: the cores online, at most\n"
    "4) decode and check lines ahead of the one that appends; --threads 0\n"
    "does everything on one thread.\n"
    "--ack prints {\"lines\":L,\"events\":E,\"last_position\":P} on stdout\n"
    "after each commit: every line up to L is committed, E events so far,\n"
    "P the store's last position.\n"
    "A summary (events, entities, seconds, events/s) goes to stderr, and a\n"
    "progress bar when stderr is a terminal.\n"
    "\n"
    "--durability (default full): full flushes every transaction before\n"
    "the next; a power loss loses nothing committed. consistent flushes\n"
    "once per transaction: a power loss may undo the last transaction,\n"
    "never corrupts. nosync (or --nosync) flushes nothing until the end:\n"
    "a process crash loses nothing; after an OS crash or power loss\n"
    "during the ingest, open refuses the store as possibly damaged\n"
    "(restore a backup). --sync-interval MS (nosync only) flushes every\n"
    "MS milliseconds in the background (default 0: never).\n"
    "\n"
    "Line format (see the README for every rule):\n"
    "  {\"entity\":\"user-1\",\"type\":\"set\",\"attrs\":{\"name\":\"Ann\","
    "\"age\":31},\n"
    "   \"actor\":\"svc-a\",\"time\":\"2026-11-23T10:00:00Z\","
    "\"partition\":\"eu\",\"tags\":[\"signup\"]}\n"
    "type is set | unset | replace | delete; attrs is an object for set and\n"
    "replace (null removes a key in a set), an array of names for unset,\n"
    "absent for delete. Values: string, integer (int64), other numbers\n"
    "(double), true/false, {\"$bytes\":\"<base64>\"}. Unknown fields and\n"
    "duplicate keys are errors. Blank lines are skipped.\n"
    "\n"
    "A malformed line stops the ingest with `line N: reason`: every event\n"
    "before line N is committed, nothing after it.\n"
    "\n"
    "Exit codes: 0 ok; 1 the input cannot be read or the store failed;\n"
    "2 a malformed line or bad usage.\n";

#define BATCH_MAX   1000000
#define IDLE_MS_MAX 3600000
#define THREADS_MAX 64

int sc_cli_cmd_ingest(const sc_cli_global *g, int argc, char **argv)
{
	const char *path = NULL;
	uint64_t batch = 1000;
	uint64_t idle_ms = SC_CLI_IDLE_MS_DEFAULT;
	uint64_t threads = sc_cli_ingest_default_threads();
	sc_durability durability = SC_DURABILITY_FULL;
	uint64_t sync_ms = 0;
	bool ack = false;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(ingest_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = sc_cli_opt("ingest", argc, argv, &i, "--batch", &v))) {
			if (m < 0 || sc_cli_parse_u64("ingest", "--batch", v, 1,
						      BATCH_MAX, &batch))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("ingest", argc, argv, &i,
					   "--durability", &v))) {
			if (m < 0 ||
			    sc_cli_parse_durability("ingest", v, &durability))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("ingest", argc, argv, &i,
					   "--sync-interval", &v))) {
			if (m < 0 ||
			    sc_cli_parse_u64("ingest", "--sync-interval", v, 0,
					     86400000, &sync_ms))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("ingest", argc, argv, &i,
					   "--idle-ms", &v))) {
			if (m < 0 || sc_cli_parse_u64("ingest", "--idle-ms", v,
						      0, IDLE_MS_MAX, &idle_ms))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("ingest", argc, argv, &i,
					   "--threads", &v))) {
			if (m < 0 || sc_cli_parse_u64("ingest", "--threads", v,
						      0, THREADS_MAX, &threads))
				return SC_CLI_EXIT_USAGE;
		} else if (!strcmp(argv[i], "--ack")) {
			ack = true;
			i++;
		} else if (!strcmp(argv[i], "--nosync")) {
			durability = SC_DURABILITY_NOSYNC;
			i++;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			return sc_cli_usage_error("ingest", "unknown option %s",
						  argv[i]);
		} else if (!path) {
			path = argv[i++];
		} else {
			return sc_cli_usage_error(
			    "ingest", "one input file only (extra \"%s\")",
			    argv[i]);
		}
	}
	if (sync_ms && durability != SC_DURABILITY_NOSYNC)
		return sc_cli_usage_error("ingest",
					  "--sync-interval needs --durability "
					  "nosync");
	/* Open the input before the store so that a typo in the file name
	 * does not leave an empty store behind. */
	FILE *in = stdin;
	const char *name = "stdin";
	if (path && strcmp(path, "-")) {
		in = fopen(path, "rb");
		if (!in) {
			fprintf(stderr,
				"statecache ingest: cannot open %s: %s\n", path,
				strerror(errno));
			return SC_CLI_EXIT_FAIL;
		}
		name = path;
	}
	sc_cli_file_source src;
	if (sc_cli_file_source_init(&src, in)) {
		fprintf(stderr, "statecache ingest: out of memory\n");
		if (in != stdin)
			fclose(in);
		return SC_CLI_EXIT_FAIL;
	}
	sc_store *st;
	int code = sc_cli_store_open_with("ingest", g->db, true, durability,
					  (unsigned)sync_ms, &st);
	if (code) {
		sc_cli_file_source_free(&src);
		if (in != stdin)
			fclose(in);
		return code;
	}
	sc_cli_ingest_opts opt = {.batch = (size_t)batch,
				  .progress = isatty(STDERR_FILENO),
				  .threads = (unsigned)threads,
				  .idle_ms = (int)idle_ms,
				  .ack = ack ? stdout : NULL};
	sc_cli_ingest_result res;
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_cli_ingest_run(st, &src.base, &opt, &res, &err);
	size_t entities = sc_cache_len(sc_store_cache(st));
	fprintf(stderr,
		"ingested %llu events from %s in %llu transactions: %zu "
		"entities, %.3f s, %.0f events/s\n",
		(unsigned long long)res.events, name,
		(unsigned long long)res.batches, entities, res.seconds,
		res.seconds > 0 ? (double)res.events / res.seconds : 0.0);
	if (rc == SC_EINVAL) {
		fprintf(stderr,
			"statecache ingest: %s: %s\n(the %llu events before "
			"that line are committed; fix the line and ingest "
			"the rest)\n",
			name, err.message, (unsigned long long)res.events);
		code = SC_CLI_EXIT_USAGE;
	} else if (rc) {
		fprintf(stderr, "statecache ingest: %s: %s\n", name,
			err.message);
		code = SC_CLI_EXIT_FAIL;
	}
	sc_store_close(st);
	sc_cli_file_source_free(&src);
	if (in != stdin)
		fclose(in);
	return code;
}
