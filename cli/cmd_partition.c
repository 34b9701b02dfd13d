/*
 * statecache partition checkpoints P [--use POS]: list one partition's
 * checkpoints, or choose the one its next load starts from.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "statecache/store.h"

static const char partition_help[] =
    "usage: statecache [--db DIR] partition checkpoints P [--use POS | "
    "--take]\n"
    "\n"
    "List the checkpoints of partition P (\"\" for the default partition),\n"
    "newest first, one JSON object per line:\n"
    "  {\"position\":..,\"entities\":..,\"bytes\":..,\"created_at\":..,\n"
    "   \"verifies\":true|false}\n"
    "then one line with the partition's catalog figures:\n"
    "  {\"partition\":P,\"events\":..,\"last_position\":..,\"tail\":..,\n"
    "   \"checkpoint_position\":..}\n"
    "A checkpoint that does not verify is skipped by a load, which falls\n"
    "back to the next older one (or a full replay of the partition).\n"
    "\n"
    "Options:\n"
    "  --use POS   delete the checkpoints of P newer than POS, so that the\n"
    "              next load of P (the next open) starts from the one at\n"
    "              POS; POS must be a checkpoint that verifies\n"
    "  --take      write a checkpoint of P now (of its state as of the\n"
    "              last committed position), then list\n"
    "\n"
    "Exit codes: 0 ok; 1 no store, POS is not a verifying checkpoint of P,\n"
    "or a read or write failed; 2 bad usage.\n";

#define LIST_MAX 64

static int list(sc_store *st, sc_str p)
{
	sc_checkpoint_info ci[LIST_MAX];
	sc_partition_info pi;
	sc_error err;
	int n = sc_store_checkpoints(st, p, ci, LIST_MAX, &err);
	if (n < 0) {
		fprintf(stderr, "statecache partition: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	for (int i = 0; i < n; i++)
		printf("{\"position\":%" PRIu64 ",\"entities\":%" PRIu64
		       ",\"bytes\":%" PRIu64 ",\"created_at\":%" PRId64
		       ",\"verifies\":%s}\n",
		       ci[i].position, ci[i].entities, ci[i].bytes,
		       ci[i].created_at, ci[i].verifies ? "true" : "false");
	int rc = sc_store_partition_info(st, p, &pi, &err);
	if (rc && rc != SC_NOTFOUND) {
		fprintf(stderr, "statecache partition: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	printf("{\"partition\":\"");
	for (size_t i = 0; i < p.len; i++) {
		unsigned char c = (unsigned char)p.ptr[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	printf("\",\"events\":%" PRIu64 ",\"last_position\":%" PRIu64
	       ",\"tail\":%" PRIu64 ",\"checkpoint_position\":%" PRIu64 "}\n",
	       pi.events, pi.last_position, pi.tail, pi.checkpoint_position);
	return SC_CLI_EXIT_OK;
}

static int use(sc_store *st, sc_str p, uint64_t pos)
{
	sc_checkpoint_info ci[LIST_MAX];
	sc_error err;
	int n = sc_store_checkpoints(st, p, ci, LIST_MAX, &err);
	if (n < 0) {
		fprintf(stderr, "statecache partition: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	int at = -1;
	for (int i = 0; i < n; i++)
		if (ci[i].position == pos)
			at = i;
	if (at < 0 || !ci[at].verifies) {
		fprintf(stderr,
			"statecache partition: %s %" PRIu64
			" of partition '%.*s'; list them with `statecache "
			"partition checkpoints P`\n",
			at < 0 ? "there is no checkpoint at position"
			       : "the checkpoint does not verify at position",
			pos, (int)(p.len > 64 ? 64 : p.len), p.ptr);
		return SC_CLI_EXIT_FAIL;
	}
	size_t dropped = 0;
	if (sc_store_checkpoints_drop_after(st, p, pos, &dropped, &err)) {
		fprintf(stderr, "statecache partition: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	printf("partition '%.*s': the next load starts from the checkpoint "
	       "at position %" PRIu64 " (%zu newer deleted)\n",
	       (int)(p.len > 64 ? 64 : p.len), p.ptr, pos, dropped);
	return SC_CLI_EXIT_OK;
}

int sc_cli_cmd_partition(const sc_cli_global *g, int argc, char **argv)
{
	const char *sub = NULL, *name = NULL, *use_s = NULL;
	bool take = false;
	for (int i = 1; i < argc;) {
		if (sc_cli_is_help(argv[i])) {
			fputs(partition_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		int r =
		    sc_cli_opt("partition", argc, argv, &i, "--use", &use_s);
		if (r < 0)
			return SC_CLI_EXIT_USAGE;
		if (r)
			continue;
		const char *a = argv[i++];
		if (!strcmp(a, "--take"))
			take = true;
		else if (a[0] == '-' && a[1] == '-')
			return sc_cli_usage_error("partition",
						  "unknown option %s", a);
		else if (!sub)
			sub = a;
		else if (!name)
			name = a;
		else
			return sc_cli_usage_error("partition",
						  "unexpected argument %s", a);
	}
	if (!sub || strcmp(sub, "checkpoints") != 0 || !name)
		return sc_cli_usage_error("partition",
					  "expected `partition checkpoints P`");
	sc_str p = {name, strlen(name)};
	if (p.len > SC_EVENT_FIELD_MAX)
		return sc_cli_usage_error("partition",
					  "a partition has at most %u bytes",
					  (unsigned)SC_EVENT_FIELD_MAX);
	if (take && use_s)
		return sc_cli_usage_error(
		    "partition", "--use and --take exclude each other");
	uint64_t pos = 0;
	if (use_s &&
	    sc_cli_parse_u64("partition", "--use", use_s, 1, UINT64_MAX, &pos))
		return SC_CLI_EXIT_USAGE;
	sc_store *st;
	int code = use_s || take
		       ? sc_cli_store_open("partition", g->db, false,
					   SC_DURABILITY_FULL, &st)
		       : sc_cli_store_open_read("partition", g->db, false, &st);
	if (code)
		return code;
	sc_error err;
	if (take && sc_store_checkpoint(st, p, NULL, &err)) {
		fprintf(stderr, "statecache partition: %s\n", err.message);
		code = SC_CLI_EXIT_FAIL;
	}
	if (!code)
		code = use_s ? use(st, p, pos) : list(st, p);
	sc_store_close(st);
	if (fflush(stdout) != 0 && !code) {
		fprintf(stderr, "statecache partition: cannot write the "
				"output\n");
		code = SC_CLI_EXIT_FAIL;
	}
	return code;
}
