/*
 * statecache: the command-line tool. main() parses the global options and
 * dispatches to a command (cli/commands.c lists them).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
	sc_cli_global g = {.db = SC_CLI_DEFAULT_DB};
	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			sc_cli_usage(stdout);
			return SC_CLI_EXIT_OK;
		}
		m = sc_cli_opt("", argc, argv, &i, "--db", &v);
		if (m < 0)
			return SC_CLI_EXIT_USAGE;
		if (m == 0) {
			fprintf(stderr,
				"statecache: unknown option %s (see "
				"`statecache --help`)\n",
				argv[i]);
			return SC_CLI_EXIT_USAGE;
		}
		if (!*v) {
			fprintf(stderr, "statecache: --db needs a directory\n");
			return SC_CLI_EXIT_USAGE;
		}
		g.db = v;
	}
	if (i >= argc) {
		sc_cli_usage(stderr);
		return SC_CLI_EXIT_USAGE;
	}
	for (const sc_cli_command *c = sc_cli_commands; c->name; c++)
		if (!strcmp(c->name, argv[i]))
			return c->run(&g, argc - i, argv + i);
	fprintf(
	    stderr,
	    "statecache: unknown command \"%s\" (see `statecache --help`)\n",
	    argv[i]);
	return SC_CLI_EXIT_USAGE;
}
