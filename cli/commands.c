/*
 * statecache command: the command table and the global help.
 */
#include <stdio.h>

#include "cli/cli.h"

const sc_cli_command sc_cli_commands[] = {
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
			fprintf(out, "  %-10s %s\n", c->name, c->summary);
	fputs("\n"
	      "Exit codes: 0 ok; 1 not found or failed (missing entity or\n"
	      "store, I/O error, verify found differences); 2 bad input or\n"
	      "usage (malformed event line, unknown option).\n",
	      out);
}
