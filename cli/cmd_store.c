/*
 * statecache commands that read a store: get, scan, events, snapshot,
 * stats; and the store-opening helper every command uses.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "cli/json_event.h"
#include "statecache/query.h"
#include "statecache/store.h"

/* ===== helpers ============================================================ */

int sc_cli_store_open(const char *cmd, const char *db, bool create,
		      sc_durability durability, sc_store **out)
{
	return sc_cli_store_open_with(cmd, db, create, durability, 0, out);
}

int sc_cli_store_open_with(const char *cmd, const char *db, bool create,
			   sc_durability durability, unsigned sync_interval_ms,
			   sc_store **out)
{
	sc_store_options opt = {0};
	opt.create = create;
	opt.durability = durability;
	opt.sync_interval_ms = sync_interval_ms;
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

int sc_cli_store_open_read(const char *cmd, const char *db, bool follow,
			   sc_store **out)
{
	sc_store_options opt = {0};
	opt.read_only = true;
	opt.follow_manual = !follow;
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_store_open(db, &opt, out, &err);
	if (rc == SC_EVERSION) {
		/* An older format needs the upgrade a writing open makes (a
		 * newer one is refused by that open too, with its message). */
		return sc_cli_store_open(cmd, db, false, SC_DURABILITY_FULL,
					 out);
	}
	if (rc == SC_NOTFOUND) {
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
	int code = sc_cli_store_open_read("get", g->db, false, &st);
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
	int code = sc_cli_store_open_read("scan", g->db, false, &st);
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
    "usage: statecache [--db DIR] events [--from POS] [--entity ID "
    "[--partition P] |\n"
    "                  --tag T | --partition P] [--limit N] [--follow "
    "[--poll MS]]\n"
    "\n"
    "Print the event log as JSON Lines, in order, each with its "
    "\"position\"\n"
    "(the input format of `ingest`, which ignores \"position\"). --from\n"
    "starts at position POS (default 1); --entity, --tag and --partition "
    "keep\n"
    "the events of one entity, tag or partition (read through their "
    "index);\n"
    "--entity with --partition keeps the events of entity ID of partition "
    "P\n"
    "(without it, of the default partition).\n"
    "--limit prints at most N (0: all, the default).\n"
    "\n"
    "--follow keeps printing new events as any process commits them (like\n"
    "`tail -f`), looking for them every MS milliseconds\n"
    "(--poll, default 100); Ctrl-C or SIGTERM ends it (exit 0), and so "
    "does\n"
    "--limit once N events are printed.\n"
    "\n"
    "Exit codes: 0 ok; 1 no store or a read failed; 2 bad usage.\n";

/* --follow: a thread that waits for SIGINT or SIGTERM (blocked in every
 * other thread) and cancels the query, which ends the command cleanly.
 * The command itself wakes it with SIGTERM when it ends first. */
typedef struct follow_signals {
	sigset_t set;
	sc_query *q;
	pthread_t thread;
} follow_signals;

static void *follow_wait_signal(void *arg)
{
	follow_signals *fs = arg;
	int sig;
	sigwait(&fs->set, &sig);
	sc_query_cancel(fs->q);
	return NULL;
}

/* --entity, --tag or --partition at argv[*i]: as sc_cli_opt, with the
 * query kind it selects, and a usage error for a value of a size the
 * kind does not take. */
static int events_keyed(int argc, char **argv, int *i, const char **v,
			sc_query_kind *kind)
{
	static const struct {
		const char *opt, *what;
		sc_query_kind kind;
		size_t max;
	} keyed[] = {
	    {"--entity", "an id", SC_QUERY_ENTITY, SC_ENTITY_ID_MAX},
	    {"--tag", "a tag", SC_QUERY_TAG, SC_EVENT_FIELD_MAX},
	    {"--partition", "a partition", SC_QUERY_PARTITION,
	     SC_EVENT_FIELD_MAX},
	};
	for (size_t k = 0; k < sizeof keyed / sizeof keyed[0]; k++) {
		int m = sc_cli_opt("events", argc, argv, i, keyed[k].opt, v);
		if (m <= 0)
			continue;
		if (!**v || strlen(*v) > keyed[k].max) {
			sc_cli_usage_error("events", "%s is 1 to %zu bytes",
					   keyed[k].what, keyed[k].max);
			return -1;
		}
		*kind = keyed[k].kind;
		return 1;
	}
	return 0;
}

int sc_cli_cmd_events(const sc_cli_global *g, int argc, char **argv)
{
	uint64_t from = 1, limit = 0, poll = SC_QUERY_POLL_MS_DEFAULT;
	sc_query_spec spec = {.kind = SC_QUERY_ALL};
	sc_query_kind kind;
	const char *key = NULL, *part = NULL;
	bool follow = false;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(events_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if (!strcmp(argv[i], "--follow")) {
			follow = true;
			i++;
		} else if ((m = sc_cli_opt("events", argc, argv, &i, "--from",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("events", "--from", v, 0,
						      UINT64_MAX, &from))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("events", argc, argv, &i, "--limit",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("events", "--limit", v, 0,
						      UINT64_MAX, &limit))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("events", argc, argv, &i, "--poll",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("events", "--poll", v, 1,
						      3600000, &poll))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = events_keyed(argc, argv, &i, &v, &kind))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			/* --partition with --entity: the entity of that
			 * partition. */
			if (kind == SC_QUERY_PARTITION && !part &&
			    (!key || spec.kind == SC_QUERY_ENTITY)) {
				part = v;
				continue;
			}
			if (key)
				return sc_cli_usage_error(
				    "events", "give one of --entity, --tag and "
					      "--partition (or --entity with "
					      "--partition)");
			key = v;
			spec.kind = kind;
		} else {
			return sc_cli_usage_error(
			    "events", "unknown argument %s", argv[i]);
		}
	}
	if (part && key && spec.kind != SC_QUERY_ENTITY)
		return sc_cli_usage_error("events",
					  "give one of --entity, --tag and "
					  "--partition (or --entity with "
					  "--partition)");
	if (part && !key) {
		key = part;
		spec.kind = SC_QUERY_PARTITION;
	} else if (part) {
		spec.partition = (sc_str){part, strlen(part)};
	}
	if (key)
		spec.key = (sc_str){key, strlen(key)};
	spec.from = from;
	spec.live = follow;
	spec.poll_ms = (int)poll;
	/* Signals are blocked before any thread starts, so only the
	 * follower's own thread takes them. */
	follow_signals fs;
	if (follow) {
		sigemptyset(&fs.set);
		sigaddset(&fs.set, SIGINT);
		sigaddset(&fs.set, SIGTERM);
		pthread_sigmask(SIG_BLOCK, &fs.set, NULL);
	}
	sc_store *st;
	int code = sc_cli_store_open_read("events", g->db, false, &st);
	if (code)
		return code;
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_query_open(st, &spec, &fs.q, &err);
	if (rc) {
		fprintf(stderr, "statecache events: %s\n", err.message);
		sc_store_close(st);
		return rc == SC_EINVAL ? SC_CLI_EXIT_USAGE : SC_CLI_EXIT_FAIL;
	}
	sc_query *q = fs.q;
	if (follow &&
	    pthread_create(&fs.thread, NULL, follow_wait_signal, &fs) != 0) {
		fprintf(stderr, "statecache events: cannot start a thread\n");
		sc_query_close(q);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	uint64_t count = 0;
	while (!limit || count < limit) {
		const sc_event *evs[64];
		size_t n;
		rc = sc_query_next_batch(q, -1, evs, 64, &n, &err);
		if (rc || n == 0)
			break;
		for (size_t i = 0; i < n && (!limit || count < limit); i++) {
			sc_cli_buf_reset(&b);
			if (sc_cli_event_encode(&b, evs[i], true) ||
			    !sc_cli_print_line(&b)) {
				code = out_of_memory("events");
				break;
			}
			count++;
		}
		if (code)
			break;
		if (follow && fflush(stdout))
			break;
	}
	if (rc == ECANCELED) {
		rc = 0; /* SIGINT or SIGTERM: the end the user asked for */
	} else if (rc && !code) {
		fprintf(stderr,
			"statecache events: reading the log failed: %s\n",
			err.message[0] ? err.message : sc_strerror(rc));
		code = SC_CLI_EXIT_FAIL;
	}
	if (follow) {
		/* End the signal thread if no signal did. */
		pthread_kill(fs.thread, SIGTERM);
		pthread_join(fs.thread, NULL);
	}
	sc_cli_buf_free(&b);
	sc_query_close(q);
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
    "  open_events_replayed (events open applied after the checkpoints or\n"
    "  the snapshot it restored), open_seconds (the time open took:\n"
    "  checkpoint or snapshot restore + log replay).\n"
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
	int code = sc_cli_store_open_read("stats", g->db, false, &st);
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
		e = sc_cli_buf_puts(&b, "],");
	if (!e)
		e = sc_cli_cluster_stats(st, &b);
	if (!e)
		e = sc_cli_buf_printf(
		    &b,
		    "\"map_size\":%zu,\"map_bytes_used\":%zu,"
		    "\"memory_bytes\":%zu,\"versions_awaiting_reclamation\":%"
		    "zu,"
		    "\"bytes_awaiting_reclamation\":%zu,\"version\":%llu,"
		    "\"resident_bytes\":%zu,\"partitions_resident\":%zu,"
		    "\"partitions_cold\":%zu,"
		    "\"open_events_replayed\":%llu,"
		    "\"open_seconds\":%.6f}",
		    s.map_size, s.map_bytes_used, s.cache.memory_bytes,
		    s.cache.versions_awaiting, s.cache.bytes_awaiting,
		    (unsigned long long)s.cache.version, s.resident_bytes,
		    s.partitions_resident, s.partitions_cold,
		    (unsigned long long)s.open_events_replayed, open_s);
	if (e || !sc_cli_print_line(&b))
		code = out_of_memory("stats");
	sc_cli_buf_free(&b);
	sc_store_close(st);
	return finish_stdout("stats", code);
}
