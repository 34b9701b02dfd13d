/*
 * statecache command: the command table and the global help.
 */
#include <stdio.h>

#include "cli/cli.h"

const sc_cli_command sc_cli_commands[] = {
    {"ingest", "append events from JSON Lines (a file or stdin)",
     sc_cli_cmd_ingest, false},
    {"get", "one entity as JSON (now, or --at a log position)", sc_cli_cmd_get,
     false},
    {"scan", "entities as JSON Lines, sorted by id (--prefix, --limit)",
     sc_cli_cmd_scan, false},
    {"events", "the event log as JSON Lines (--from, --entity, --limit)",
     sc_cli_cmd_events, false},
    {"snapshot", "take a snapshot now", sc_cli_cmd_snapshot, false},
    {"stats", "store and cache statistics as one JSON object", sc_cli_cmd_stats,
     false},
    {"verify", "check that the state open builds equals a full log replay",
     sc_cli_cmd_verify, false},
    {"partition",
     "a partition's checkpoints: partition checkpoints P [--use POS]",
     sc_cli_cmd_partition, false},
    {"partitions",
     "every partition: resident or cold, bytes, tail, loads (--json)",
     sc_cli_cmd_partitions, false},
    {"backup", "copy the store while it runs: backup DEST [--compact]",
     sc_cli_cmd_backup, false},
    {"stream-create", "create the NATS JetStream stream of a cluster",
     sc_cli_cmd_stream_create, false},
    {"publish", "publish JSON Lines events to the cluster's stream",
     sc_cli_cmd_publish, false},
    {"follow", "run a node: apply the cluster's stream to the store",
     sc_cli_cmd_follow, false},
    {"projections", "list projections (offset, lag, state); reset NAME",
     sc_cli_cmd_projections, false},
    {"watch", "print each change of the state as JSON Lines, as it happens",
     sc_cli_cmd_watch, false},
    {"demo", "the guided demo (what `make demo` runs)", sc_cli_cmd_demo, false},
    {"gen", "print generated events as JSON Lines", sc_cli_cmd_gen, true},
    {NULL, NULL, NULL, false},
};

void sc_cli_usage(FILE *out)
{
	fputs("usage: statecache [--db DIR] COMMAND [ARGS]\n"
	      "\n"
	      "Keep the current state of many entities in memory, fed by an\n"
	      "append-only event log in LMDB (the store, a directory).\n"
	      "\n"
	      "Options:\n"
	      "  --db DIR     the store directory (default " SC_CLI_DEFAULT_DB
	      ")\n"
	      "  -h, --help   this help; `statecache COMMAND --help` for a "
	      "command\n"
	      "\n"
	      "Commands:\n",
	      out);
	for (const sc_cli_command *c = sc_cli_commands; c->name; c++)
		if (!c->hidden)
			fprintf(out, "  %-13s %s\n", c->name, c->summary);
	fputs("\n"
	      "Exit codes: 0 ok; 1 not found or failed (missing entity or\n"
	      "store, I/O error, verify found differences); 2 bad input or\n"
	      "usage (malformed event line, unknown option).\n",
	      out);
}
