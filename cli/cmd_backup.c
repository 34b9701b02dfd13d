/*
 * statecache backup: a consistent copy of a store, taken while it runs.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "statecache/store.h"

static const char backup_help[] =
    "usage: statecache [--db DIR] backup DEST [--compact]\n"
    "\n"
    "Copy the store into DEST, a new directory (mode 0700) or an empty\n"
    "one, as of one committed transaction: safe while another process or\n"
    "thread appends (the copy holds what was committed when it began).\n"
    "The copy's data.mdb (mode 0600) is synced and checked to open as a\n"
    "store before the command succeeds; use it as any store, e.g.\n"
    "`statecache --db DEST verify`.\n"
    "\n"
    "Options:\n"
    "  --compact   leave out free pages and renumber the rest: a smaller\n"
    "              copy that takes longer to write\n"
    "\n"
    "Exit codes: 0 ok; 1 no store, DEST not new or empty, or the copy\n"
    "failed (nothing is left in DEST); 2 bad usage.\n";

int sc_cli_cmd_backup(const sc_cli_global *g, int argc, char **argv)
{
	const char *dest = NULL;
	unsigned flags = 0;
	for (int i = 1; i < argc; i++) {
		if (sc_cli_is_help(argv[i])) {
			fputs(backup_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if (!strcmp(argv[i], "--compact"))
			flags |= SC_BACKUP_COMPACT;
		else if (argv[i][0] == '-' && argv[i][1] == '-')
			return sc_cli_usage_error("backup", "unknown option %s",
						  argv[i]);
		else if (!dest)
			dest = argv[i];
		else
			return sc_cli_usage_error(
			    "backup", "one DEST only (extra \"%s\")", argv[i]);
	}
	if (!dest || !dest[0])
		return sc_cli_usage_error("backup",
					  "missing the destination DEST");
	double t0 = sc_cli_now();
	sc_store *st;
	int code =
	    sc_cli_store_open("backup", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	sc_error err;
	int rc = sc_store_backup(st, dest, flags, &err);
	sc_store_close(st);
	if (rc) {
		fprintf(stderr, "statecache backup: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	char path[4096];
	struct stat sb;
	snprintf(path, sizeof path, "%s/data.mdb", dest);
	long long bytes = stat(path, &sb) ? -1 : (long long)sb.st_size;
	printf("backup of %s written to %s: %lld bytes%s, %.3f s\n", g->db,
	       dest, bytes, flags ? " (compacted)" : "", sc_cli_now() - t0);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "statecache backup: writing stdout failed\n");
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}
