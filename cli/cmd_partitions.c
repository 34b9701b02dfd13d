/*
 * statecache partitions [--json] [--budget BYTES]: every partition of the
 * store with its residency and figures.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "statecache/store.h"

static const char partitions_help[] =
    "usage: statecache [--db DIR] partitions [--json] [--budget BYTES]\n"
    "\n"
    "List every partition of the store (every partition with an event,\n"
    "the default one shown as \"\"), resident or cold, with its figures:\n"
    "resident, pinned, entities and bytes in memory, last position, events,\n"
    "tail (events after its newest checkpoint), loads and evictions since\n"
    "open, and the load time's p50 and p99 in microseconds. Then one line\n"
    "of totals.\n"
    "\n"
    "Options:\n"
    "  --json           one JSON object per partition and one for the\n"
    "                   totals ({\"total\":true,...}), instead of a table\n"
    "  --budget BYTES   open the store with this memory budget (for\n"
    "                   writing, beside no other writer): the default\n"
    "                   partition is loaded and every other one is cold,\n"
    "                   so the listing reads no other partition's state.\n"
    "                   Without it the store is opened read-only and every\n"
    "                   partition is loaded.\n"
    "\n"
    "Exit codes: 0 ok; 1 no store, or a read failed; 2 bad usage.\n";

typedef struct lister {
	bool json;
	sc_cli_buf b;
	int failed;
} lister;

static int print_row(void *ctx, const sc_partition_stats *p)
{
	lister *l = ctx;
	if (l->json) {
		l->b.len = 0;
		int rc = sc_cli_buf_add(&l->b, "{\"partition\":", 13);
		if (!rc)
			rc =
			    sc_cli_json_string(&l->b, p->name.ptr, p->name.len);
		if (rc)
			return rc;
		printf("%.*s,\"resident\":%s,\"pinned\":%s,\"entities\":%zu,"
		       "\"bytes\":%zu,\"last_position\":%" PRIu64
		       ",\"events\":%" PRIu64 ",\"tail\":%" PRIu64
		       ",\"loads\":%" PRIu64 ",\"evictions\":%" PRIu64
		       ",\"load_p50_us\":%.0f,\"load_p99_us\":%.0f}\n",
		       (int)l->b.len, l->b.ptr, p->resident ? "true" : "false",
		       p->pinned ? "true" : "false", p->entities, p->bytes,
		       p->last_position, p->events, p->tail, p->loads,
		       p->evictions, p->load_seconds_p50 * 1e6,
		       p->load_seconds_p99 * 1e6);
		return 0;
	}
	int nl = (int)(p->name.len > 32 ? 32 : p->name.len);
	printf("%-32.*s %-8s %-6s %10zu %12zu %12" PRIu64 " %10" PRIu64
	       " %8" PRIu64 " %6" PRIu64 " %6" PRIu64 "\n",
	       nl ? nl : 2, nl ? p->name.ptr : "\"\"",
	       p->resident ? "resident" : "cold", p->pinned ? "pinned" : "-",
	       p->entities, p->bytes, p->last_position, p->events, p->tail,
	       p->loads, p->evictions);
	return 0;
}

int sc_cli_cmd_partitions(const sc_cli_global *g, int argc, char **argv)
{
	lister l = {0};
	const char *budget_s = NULL;
	for (int i = 1; i < argc;) {
		if (sc_cli_is_help(argv[i])) {
			fputs(partitions_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		int r = sc_cli_opt("partitions", argc, argv, &i, "--budget",
				   &budget_s);
		if (r < 0)
			return SC_CLI_EXIT_USAGE;
		if (r)
			continue;
		const char *a = argv[i++];
		if (!strcmp(a, "--json"))
			l.json = true;
		else
			return sc_cli_usage_error("partitions",
						  "unexpected argument %s", a);
	}
	uint64_t budget = 0;
	if (budget_s && sc_cli_parse_u64("partitions", "--budget", budget_s, 1,
					 SIZE_MAX, &budget))
		return SC_CLI_EXIT_USAGE;
	sc_store *st;
	int code;
	if (budget) {
		sc_store_options o = {.memory_budget = (size_t)budget};
		sc_error err;
		int rc = sc_store_open(g->db, &o, &st, &err);
		if (rc) {
			fprintf(stderr,
				"statecache partitions: cannot open the store "
				"at %s: %s\n",
				g->db,
				rc == SC_NOTFOUND ? "no store there"
						  : err.message);
			return SC_CLI_EXIT_FAIL;
		}
		code = SC_CLI_EXIT_OK;
	} else {
		code = sc_cli_store_open_read("partitions", g->db, false, &st);
		if (code)
			return code;
	}
	if (!l.json)
		printf("%-32s %-8s %-6s %10s %12s %12s %10s %8s %6s %6s\n",
		       "partition", "state", "pin", "entities", "bytes",
		       "last_pos", "events", "tail", "loads", "evicts");
	sc_error err;
	if (sc_store_partition_stats(st, print_row, &l, &err)) {
		fprintf(stderr, "statecache partitions: %s\n",
			err.message[0] ? err.message : "out of memory");
		code = SC_CLI_EXIT_FAIL;
	}
	sc_store_stats s;
	if (!code && sc_store_stats_get(st, &s, &err) == 0) {
		if (l.json)
			printf("{\"total\":true,\"memory_budget\":%zu,"
			       "\"resident_bytes\":%zu,\"resident\":%zu,"
			       "\"cold\":%zu,\"loads\":%" PRIu64
			       ",\"evictions\":%" PRIu64
			       ",\"load_p50_us\":%.0f,\"load_p99_us\":%.0f}\n",
			       s.memory_budget, s.resident_bytes,
			       s.partitions_resident, s.partitions_cold,
			       s.partition_loads, s.partition_evictions,
			       s.load_seconds_p50 * 1e6,
			       s.load_seconds_p99 * 1e6);
		else
			printf("total: budget %zu, resident bytes %zu, "
			       "%zu resident, %zu cold, %" PRIu64
			       " loads, %" PRIu64 " evictions\n",
			       s.memory_budget, s.resident_bytes,
			       s.partitions_resident, s.partitions_cold,
			       s.partition_loads, s.partition_evictions);
	}
	sc_cli_buf_free(&l.b);
	sc_store_close(st);
	if (fflush(stdout) != 0 && !code) {
		fprintf(stderr, "statecache partitions: cannot write the "
				"output\n");
		code = SC_CLI_EXIT_FAIL;
	}
	return code;
}
