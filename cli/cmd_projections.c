/*
 * statecache projections: list the projections of a store (offset, lag,
 * state), and reset one.
 */
#include <stdio.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "statecache/projection.h"
#include "statecache/store.h"

static const char projections_help[] =
    "usage: statecache [--db DIR] projections\n"
    "       statecache [--db DIR] projections reset NAME [--to POS]\n"
    "\n"
    "Without arguments: one JSON object per projection of the store (see\n"
    "statecache/projection.h), in name order:\n"
    "  {\"name\":..,\"kind\":\"exactly-once\"|\"at-least-once\",\n"
    "   \"state\":\"running\"|\"paused\"|\"stopped\"|\"failed\",\n"
    "   \"offset\":N,\"events_behind\":N,\"seconds_behind\":S}\n"
    "offset is the last position the projection saved; events_behind the\n"
    "log's last position minus it; seconds_behind the time of the newest\n"
    "event minus that of the first event after the offset. state is the\n"
    "last one its runner recorded (a runner that was killed shows\n"
    "\"running\").\n"
    "\n"
    "reset NAME: set the projection's offset to POS (default 0). At 0 its\n"
    "databases are emptied in the same transaction, so it rebuilds its\n"
    "read model from the start. A runner of it, in any process, adopts\n"
    "the new offset at its next save.\n"
    "\n"
    "Exit codes: 0 ok; 1 no store, no such projection, or POS beyond the\n"
    "log; 2 bad usage.\n";

typedef struct list_ctx {
	sc_cli_buf b;
	bool failed;
} list_ctx;

static int print_info(void *vctx, const sc_projection_info *info)
{
	list_ctx *c = vctx;
	sc_cli_buf *b = &c->b;
	sc_cli_buf_reset(b);
	int rc = sc_cli_buf_puts(b, "{\"name\":");
	if (!rc)
		rc = sc_cli_json_string(b, info->name, strlen(info->name));
	if (!rc)
		rc = sc_cli_buf_printf(
		    b,
		    ",\"kind\":\"%s\",\"state\":\"%s\",\"offset\":%llu,"
		    "\"events_behind\":%llu,\"seconds_behind\":%.3f}",
		    sc_projection_kind_name(info->kind),
		    sc_projection_state_name(info->state),
		    (unsigned long long)info->offset,
		    (unsigned long long)info->events_behind,
		    info->seconds_behind);
	if (rc || !sc_cli_print_line(b)) {
		c->failed = true;
		return 1;
	}
	return 0;
}

static int list(const sc_cli_global *g)
{
	sc_store *st;
	int code = sc_cli_store_open("projections", g->db, false,
				     SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	list_ctx c = {.failed = false};
	sc_cli_buf_init(&c.b);
	sc_error err;
	int rc = sc_projection_list(st, print_info, &c, &err);
	sc_cli_buf_free(&c.b);
	sc_store_close(st);
	if (c.failed) {
		fprintf(stderr,
			"statecache projections: writing stdout failed\n");
		return SC_CLI_EXIT_FAIL;
	}
	if (rc) {
		fprintf(stderr, "statecache projections: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}

static int reset(const sc_cli_global *g, int argc, char **argv)
{
	const char *name = NULL, *to = NULL;
	for (int i = 2; i < argc; i++) {
		int o = sc_cli_opt("projections", argc, argv, &i, "--to", &to);
		if (o < 0)
			return SC_CLI_EXIT_USAGE;
		if (o > 0)
			continue;
		if (argv[i][0] == '-' && argv[i][1] == '-')
			return sc_cli_usage_error("projections",
						  "unknown option %s", argv[i]);
		if (name)
			return sc_cli_usage_error(
			    "projections", "one NAME only (extra \"%s\")",
			    argv[i]);
		name = argv[i];
	}
	if (!name || !name[0])
		return sc_cli_usage_error("projections",
					  "reset needs the projection's NAME");
	if (strchr(name, '/') || strlen(name) > SC_PROJECTION_NAME_MAX)
		return sc_cli_usage_error("projections",
					  "a projection's name has 1..%d bytes "
					  "and no '/'",
					  SC_PROJECTION_NAME_MAX);
	uint64_t pos = 0;
	if (to && sc_cli_parse_u64("projections", "--to", to, 0, UINT64_MAX,
				   &pos) < 0)
		return SC_CLI_EXIT_USAGE;
	sc_store *st;
	int code = sc_cli_store_open("projections", g->db, false,
				     SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	sc_error err;
	int rc = sc_projection_reset(st, name, pos, &err);
	sc_store_close(st);
	if (rc) {
		fprintf(stderr, "statecache projections: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	printf("projection %s reset to offset %llu%s\n", name,
	       (unsigned long long)pos,
	       pos == 0 ? " (its databases emptied)" : "");
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr,
			"statecache projections: writing stdout failed\n");
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}

int sc_cli_cmd_projections(const sc_cli_global *g, int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (sc_cli_is_help(argv[i])) {
			fputs(projections_help, stdout);
			return SC_CLI_EXIT_OK;
		}
	if (argc == 1)
		return list(g);
	if (!strcmp(argv[1], "reset"))
		return reset(g, argc, argv);
	return sc_cli_usage_error("projections",
				  "unknown subcommand \"%s\" (reset)", argv[1]);
}
