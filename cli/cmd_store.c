/*
 * statecache commands that read a store: get, scan, events, snapshot,
 * stats; and the store-opening helper every command uses.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "cli/json_event.h"
#include "statecache/store.h"

/* ===== helpers ============================================================ */

int sc_cli_store_open(const char *cmd, const char *db, bool create,
		      sc_durability durability, sc_store **out)
{
	sc_store_options opt = {0};
	opt.create = create;
	opt.durability = durability;
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_store_open(db, &opt, out, &err);
	if (rc == SC_NOTFOUND && !create) {
		fprintf(stderr,
			"statecache %s: no store at %s (create one with "
			"`statecache --db %s ingest FILE`, or pass --db)\n",
			cmd, db, db);
		return SC_CLI_EXIT_FAIL;
	}
	if (rc) {
		fprintf(stderr,
			"statecache %s: cannot open the store at %s: %s\n", cmd,
			db, err.message[0] ? err.message : sc_strerror(rc));
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}

/* Write b (plus a newline) to stdout; false when stdout failed. */
bool sc_cli_print_line(sc_cli_buf *b)
{
	if (sc_cli_buf_add(b, "\n", 1))
		return false;
	return fwrite(b->ptr, 1, b->len, stdout) == b->len;
}

static int finish_stdout(const char *cmd, int code)
{
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "statecache %s: writing stdout failed: %s\n",
			cmd, strerror(errno));
		return SC_CLI_EXIT_FAIL;
	}
	return code;
}

static int out_of_memory(const char *cmd)
{
	fprintf(stderr, "statecache %s: out of memory\n", cmd);
	return SC_CLI_EXIT_FAIL;
}

/* ===== get ================================================================ */

static const char get_help[] =
    "usage: statecache [--db DIR] get ID [--partition P] [--at POSITION]\n"
    "\n"
    "Print the entity ID as one JSON object:\n"
    "  {\"id\":...,\"attrs\":{...},\"updated_at\":\"...\",\"updated_by\":...,"
    "\"position\":N}\n"
    "An entity is (partition, ID): --partition reads partition P (default:\n"
    "the default partition, empty name); the entities of a named partition\n"
    "have \"partition\":\"P\" after their id.\n"
    "With --at, its state as of log position POSITION (inclusive), folded\n"
    "from that entity's events.\n"
    "\n"
    "Exit codes: 0 found; 1 no such entity (at that position) or no store;\n"
    "2 bad usage.\n";

int sc_cli_cmd_get(const sc_cli_global *g, int argc, char **argv)
{
	const char *id = NULL, *part = "";
	uint64_t at = 0;
	bool have_at = false;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(get_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = sc_cli_opt("get", argc, argv, &i, "--at", &v))) {
			if (m < 0 || sc_cli_parse_u64("get", "--at", v, 0,
						      UINT64_MAX, &at))
				return SC_CLI_EXIT_USAGE;
			have_at = true;
		} else if ((m = sc_cli_opt("get", argc, argv, &i, "--partition",
					   &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			part = v;
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			return sc_cli_usage_error("get", "unknown option %s",
						  argv[i]);
		} else if (!id) {
			id = argv[i++];
		} else {
			return sc_cli_usage_error(
			    "get", "one ID only (extra \"%s\")", argv[i]);
		}
	}
	if (!id)
		return sc_cli_usage_error("get", "missing the entity ID");
	size_t idlen = strlen(id);
	if (idlen == 0 || idlen > SC_ENTITY_ID_MAX)
		return sc_cli_usage_error("get", "ids are 1 to %d bytes",
					  SC_ENTITY_ID_MAX);
	sc_str spart = {part, strlen(part)};
	if (spart.len > SC_EVENT_FIELD_MAX)
		return sc_cli_usage_error("get", "partitions are 0 to %d bytes",
					  SC_EVENT_FIELD_MAX);
	sc_store *st;
	int code =
	    sc_cli_store_open("get", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	sc_str sid = {id, idlen};
	if (have_at) {
		sc_entity *e = NULL;
		sc_error err;
		int rc = sc_store_entity_at_in(st, spart, sid, at, &e, &err);
		if (rc == SC_NOTFOUND) {
			fprintf(stderr,
				"statecache get: no entity \"%s\"%s%s%s at "
				"position %llu\n",
				id, *part ? " in partition \"" : "", part,
				*part ? "\"" : "", (unsigned long long)at);
			code = SC_CLI_EXIT_FAIL;
		} else if (rc) {
			fprintf(stderr, "statecache get: %s\n", err.message);
			code = SC_CLI_EXIT_FAIL;
		} else {
			if (sc_cli_entity_encode(&b, e) ||
			    !sc_cli_print_line(&b))
				code = out_of_memory("get");
			sc_entity_free(e);
		}
	} else {
		sc_reader *r;
		sc_error err;
		if (sc_reader_open(sc_store_cache(st), &r, &err)) {
			fprintf(stderr, "statecache get: %s\n", err.message);
			code = SC_CLI_EXIT_FAIL;
		} else {
			const sc_entity *e = sc_reader_get_in(r, spart, sid);
			if (!e) {
				fprintf(
				    stderr,
				    "statecache get: no entity \"%s\"%s%s%s\n",
				    id, *part ? " in partition \"" : "", part,
				    *part ? "\"" : "");
				code = SC_CLI_EXIT_FAIL;
			} else if (sc_cli_entity_encode(&b, e) ||
				   !sc_cli_print_line(&b)) {
				code = out_of_memory("get");
			}
			sc_reader_end(r);
			sc_reader_close(r);
		}
	}
	sc_cli_buf_free(&b);
	sc_store_close(st);
	return finish_stdout("get", code);
}

/* ===== scan =============================================================== */

static const char scan_help[] =
    "usage: statecache [--db DIR] scan [--partition P] [--prefix X] "
    "[--limit N]\n"
    "\n"
    "Print entities as JSON Lines (the format of `get`), sorted by\n"
    "partition then id, all from one consistent version of the state.\n"
    "--partition keeps the entities of partition P (\"\": the default\n"
    "partition) and reads no other partition; without it, every\n"
    "partition. --prefix keeps ids that start with X; --limit prints at\n"
    "most N (0: all, the default).\n"
    "\n"
    "Exit codes: 0 ok (also when nothing matches); 1 no store; 2 bad "
    "usage.\n";

static int str_cmp(sc_str x, sc_str y)
{
	size_t n = x.len < y.len ? x.len : y.len;
	int c = n ? memcmp(x.ptr, y.ptr, n) : 0;
	if (c)
		return c;
	return x.len < y.len ? -1 : x.len > y.len;
}

/* Order of scan: partition, then id. */
static int entity_key_cmp(const void *a, const void *b)
{
	const sc_entity *x = *(const sc_entity *const *)a;
	const sc_entity *y = *(const sc_entity *const *)b;
	int c = str_cmp(sc_entity_partition(x), sc_entity_partition(y));
	return c ? c : str_cmp(sc_entity_id(x), sc_entity_id(y));
}

int sc_cli_cmd_scan(const sc_cli_global *g, int argc, char **argv)
{
	const char *prefix = "", *part = NULL;
	uint64_t limit = 0;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(scan_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = sc_cli_opt("scan", argc, argv, &i, "--partition",
				    &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			if (strlen(v) > SC_EVENT_FIELD_MAX)
				return sc_cli_usage_error(
				    "scan", "partitions are 0 to %d bytes",
				    SC_EVENT_FIELD_MAX);
			part = v;
			continue;
		}
		if ((m = sc_cli_opt("scan", argc, argv, &i, "--prefix", &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			prefix = v;
		} else if ((m = sc_cli_opt("scan", argc, argv, &i, "--limit",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("scan", "--limit", v, 0,
						      UINT64_MAX, &limit))
				return SC_CLI_EXIT_USAGE;
		} else {
			return sc_cli_usage_error("scan", "unknown argument %s",
						  argv[i]);
		}
	}
	sc_store *st;
	int code =
	    sc_cli_store_open("scan", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	sc_reader *r;
	sc_error err;
	if (sc_reader_open(sc_store_cache(st), &r, &err)) {
		fprintf(stderr, "statecache scan: %s\n", err.message);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	/* One pin for the whole scan: every line comes from one version. */
	const sc_view *view = sc_reader_begin(r);
	size_t plen = strlen(prefix), n = 0, cap = 0;
	const sc_entity **list = NULL;
	sc_view_iter it;
	if (part)
		sc_view_iter_init_in(view, (sc_str){part, strlen(part)}, &it);
	else
		sc_view_iter_init_all(view, &it);
	const sc_entity *e;
	while ((e = sc_view_iter_next(&it))) {
		sc_str id = sc_entity_id(e);
		if (id.len < plen || memcmp(id.ptr, prefix, plen))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 1024;
			const sc_entity **nl = realloc(list, nc * sizeof *nl);
			if (!nl) {
				code = out_of_memory("scan");
				break;
			}
			list = nl;
			cap = nc;
		}
		list[n++] = e;
	}
	if (!code) {
		if (n)
			qsort(list, n, sizeof *list, entity_key_cmp);
		sc_cli_buf b;
		sc_cli_buf_init(&b);
		for (size_t i = 0; i < n && (!limit || i < limit); i++) {
			sc_cli_buf_reset(&b);
			if (sc_cli_entity_encode(&b, list[i]) ||
			    !sc_cli_print_line(&b))
				break;
		}
		sc_cli_buf_free(&b);
	}
	free(list);
	sc_reader_end(r);
	sc_reader_close(r);
	sc_store_close(st);
	return finish_stdout("scan", code);
}

/* ===== events ============================================================= */

static const char events_help[] =
    "usage: statecache [--db DIR] events [--from POS] [--partition P] "
    "[--entity ID] [--limit N]\n"
    "\n"
    "Print the event log as JSON Lines, in order, each with its "
    "\"position\"\n"
    "(the input format of `ingest`, which ignores \"position\"). --from\n"
    "starts at position POS (default 1), --partition keeps the events of\n"
    "partition P (\"\": the default partition), --entity keeps one "
    "entity's\n"
    "events (of the default partition, or of P with --partition), --limit\n"
    "prints at most N (0: all, the default).\n"
    "\n"
    "Exit codes: 0 ok; 1 no store or a read failed; 2 bad usage.\n";

typedef struct events_ctx {
	sc_cli_buf b;
	int failed;
	const char *part; /* keep the events of this partition; NULL: all */
	size_t part_len;
	uint64_t limit, printed; /* with part: printed against limit */
} events_ctx;

static int events_print(void *ctx, const sc_event *ev)
{
	events_ctx *c = ctx;
	if (c->part) {
		if (ev->partition.len != c->part_len ||
		    (c->part_len &&
		     memcmp(ev->partition.ptr, c->part, c->part_len)))
			return 0;
		if (c->limit && c->printed >= c->limit)
			return 1;
		c->printed++;
	}
	sc_cli_buf_reset(&c->b);
	if (sc_cli_event_encode(&c->b, ev, true) || !sc_cli_print_line(&c->b)) {
		c->failed = 1;
		return 1;
	}
	return 0;
}

int sc_cli_cmd_events(const sc_cli_global *g, int argc, char **argv)
{
	uint64_t from = 1, limit = 0;
	const char *entity = NULL, *part = NULL;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(events_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = sc_cli_opt("events", argc, argv, &i, "--from", &v))) {
			if (m < 0 || sc_cli_parse_u64("events", "--from", v, 0,
						      UINT64_MAX, &from))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("events", argc, argv, &i, "--limit",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("events", "--limit", v, 0,
						      UINT64_MAX, &limit))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("events", argc, argv, &i,
					   "--partition", &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			if (strlen(v) > SC_EVENT_FIELD_MAX)
				return sc_cli_usage_error(
				    "events", "partitions are 0 to %d bytes",
				    SC_EVENT_FIELD_MAX);
			part = v;
		} else if ((m = sc_cli_opt("events", argc, argv, &i, "--entity",
					   &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			entity = v;
			if (!*v || strlen(v) > SC_ENTITY_ID_MAX)
				return sc_cli_usage_error(
				    "events", "ids are 1 to %d bytes",
				    SC_ENTITY_ID_MAX);
		} else {
			return sc_cli_usage_error(
			    "events", "unknown argument %s", argv[i]);
		}
	}
	sc_store *st;
	int code =
	    sc_cli_store_open("events", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	events_ctx c = {0};
	sc_cli_buf_init(&c.b);
	sc_error err;
	sc_error_clear(&err);
	sc_str spart = {part ? part : "", part ? strlen(part) : 0};
	int rc;
	if (entity) {
		rc = sc_store_entity_events_in(
		    st, spart, (sc_str){entity, strlen(entity)}, from, limit,
		    events_print, &c, &err);
	} else if (part) {
		/* A scan of the log, filtered; the limit counts what is
		 * printed. */
		c.part = part;
		c.part_len = spart.len;
		c.limit = limit;
		rc = sc_store_events(st, from, 0, events_print, &c, &err);
		if (rc == 1 && !c.failed)
			rc = 0;
	} else {
		rc = sc_store_events(st, from, limit, events_print, &c, &err);
	}
	if (c.failed) {
		code = out_of_memory("events");
	} else if (rc) {
		fprintf(stderr,
			"statecache events: reading the log failed: %s\n",
			err.message[0] ? err.message : sc_strerror(rc));
		code = SC_CLI_EXIT_FAIL;
	}
	sc_cli_buf_free(&c.b);
	sc_store_close(st);
	return finish_stdout("events", code);
}

/* ===== snapshot =========================================================== */

static const char snapshot_help[] =
    "usage: statecache [--db DIR] snapshot\n"
    "\n"
    "Take a snapshot of the current state now and print its position, "
    "size\n"
    "and the time it took. The next open restores it and replays only the\n"
    "events after it.\n"
    "\n"
    "Exit codes: 0 ok; 1 no store or the snapshot failed; 2 bad usage.\n";

int sc_cli_cmd_snapshot(const sc_cli_global *g, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (sc_cli_is_help(argv[i])) {
			fputs(snapshot_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		return sc_cli_usage_error("snapshot", "unknown argument %s",
					  argv[i]);
	}
	sc_store *st;
	int code = sc_cli_store_open("snapshot", g->db, false,
				     SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	sc_snapshot_info info;
	sc_error err;
	int rc = sc_store_snapshot(st, &info, &err);
	if (rc) {
		fprintf(stderr, "statecache snapshot: %s\n", err.message);
		code = SC_CLI_EXIT_FAIL;
	} else {
		printf(
		    "snapshot at position %llu: %llu entities, %llu bytes "
		    "encoded, %llu bytes stored (%.1fx), %u chunks, %.3f s\n",
		    (unsigned long long)info.position,
		    (unsigned long long)info.entities,
		    (unsigned long long)info.bytes_raw,
		    (unsigned long long)info.bytes_compressed,
		    info.bytes_compressed
			? (double)info.bytes_raw / (double)info.bytes_compressed
			: 0.0,
		    info.chunks, info.seconds);
	}
	sc_store_close(st);
	return finish_stdout("snapshot", code);
}

/* ===== stats ============================================================== */

static const char stats_help[] =
    "usage: statecache [--db DIR] stats\n"
    "\n"
    "Print one JSON object describing the store:\n"
    "  entities, last_position, snapshots [{position, entities, bytes,\n"
    "  compressed_bytes, chunks}], map_size, map_bytes_used, memory_bytes,\n"
    "  versions_awaiting_reclamation, bytes_awaiting_reclamation,\n"
    "  open_seconds (the time open took: snapshot restore + log replay).\n"
    "\n"
    "Exit codes: 0 ok; 1 no store or a read failed; 2 bad usage.\n";

#define STATS_SNAPSHOTS_MAX 64

int sc_cli_cmd_stats(const sc_cli_global *g, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (sc_cli_is_help(argv[i])) {
			fputs(stats_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		return sc_cli_usage_error("stats", "unknown argument %s",
					  argv[i]);
	}
	double t0 = sc_cli_now();
	sc_store *st;
	int code =
	    sc_cli_store_open("stats", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	double open_s = sc_cli_now() - t0;
	sc_store_stats s;
	sc_snapshot_info snaps[STATS_SNAPSHOTS_MAX];
	sc_error err;
	int rc = sc_store_stats_get(st, &s, &err);
	int ns =
	    rc ? 0 : sc_store_snapshots(st, snaps, STATS_SNAPSHOTS_MAX, &err);
	if (rc || ns < 0) {
		fprintf(stderr, "statecache stats: %s\n", err.message);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	int e = sc_cli_buf_printf(&b,
				  "{\"entities\":%zu,\"last_position\":%llu,"
				  "\"snapshots\":[",
				  s.cache.entities,
				  (unsigned long long)s.last_position);
	for (int i = 0; !e && i < ns; i++)
		e = sc_cli_buf_printf(
		    &b,
		    "%s{\"position\":%llu,\"entities\":%llu,\"bytes\":%llu,"
		    "\"compressed_bytes\":%llu,\"chunks\":%u}",
		    i ? "," : "", (unsigned long long)snaps[i].position,
		    (unsigned long long)snaps[i].entities,
		    (unsigned long long)snaps[i].bytes_raw,
		    (unsigned long long)snaps[i].bytes_compressed,
		    snaps[i].chunks);
	if (!e)
		e = sc_cli_buf_printf(
		    &b,
		    "],\"map_size\":%zu,\"map_bytes_used\":%zu,"
		    "\"memory_bytes\":%zu,\"versions_awaiting_reclamation\":%"
		    "zu,"
		    "\"bytes_awaiting_reclamation\":%zu,\"version\":%llu,"
		    "\"open_seconds\":%.6f}",
		    s.map_size, s.map_bytes_used, s.cache.memory_bytes,
		    s.cache.versions_awaiting, s.cache.bytes_awaiting,
		    (unsigned long long)s.cache.version, open_s);
	if (e || !sc_cli_print_line(&b))
		code = out_of_memory("stats");
	sc_cli_buf_free(&b);
	sc_store_close(st);
	return finish_stdout("stats", code);
}
