/*
 * statecache watch: the changes of the state as JSON Lines, following a
 * store that this or another process writes (statecache/watch.h over a
 * read-only store that follows the log).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "cli/json_event.h"
#include "statecache/store.h"
#include "statecache/watch.h"

static const char watch_help[] =
    "usage: statecache [--db DIR] watch [--prefix P] [--partition P]\n"
    "                  [--initial | --from POS] [--heartbeat] [--idle MS]\n"
    "\n"
    "Print every change of the state as one JSON line, as it happens, until\n"
    "SIGINT or SIGTERM (exit 0). The store is opened read-only and follows\n"
    "the log another process (statecache ingest, an application) appends\n"
    "to, polling its end every 100 ms; watch never writes the store.\n"
    "\n"
    "  {\"op\":\"added\",\"id\":ID,\"version\":V,\"position\":P,"
    "\"state\":{...}}\n"
    "  {\"op\":\"updated\",\"id\":ID,\"version\":V,\"position\":P,"
    "\"changed\":[NAMES],\"state\":{...}}\n"
    "  {\"op\":\"removed\",\"id\":ID,\"version\":V,\"position\":P}\n"
    "  {\"op\":\"heartbeat\",\"version\":V,\"position\":P}\n"
    "\n"
    "version and position are those of the cache version the change is\n"
    "part of (the log position of its last event); state is the entity as\n"
    "`statecache get` prints it. The changes of one commit come together;\n"
    "a watcher that falls behind gets the net change (an entity added and\n"
    "removed meanwhile does not appear).\n"
    "\n"
    "  --prefix P     only ids starting with P\n"
    "  --partition P  only entities of partition P (\"\": the default\n"
    "                 partition); without it, every partition\n"
    "  --initial      first the current state, every entity as added\n"
    "  --from POS     first the net change since log position POS (the\n"
    "                 entities changed after it, as of now), then follow;\n"
    "                 POS beyond the end of the log is an error\n"
    "  --heartbeat    a heartbeat line after each --idle ms without change\n"
    "  --idle MS      the idle time of a heartbeat (default 1000)\n";

static _Atomic int stop_signal;

static void *wait_signal(void *arg)
{
	sigset_t *set = arg;
	int sig;
	if (sigwait(set, &sig) == 0)
		atomic_store(&stop_signal, sig);
	return NULL;
}

/* Print one change of `b` (op "added", "updated", "removed"). */
static int print_change(sc_cli_buf *out, const char *op,
			const sc_watch_change *c, const sc_watch_batch *b)
{
	sc_cli_buf_reset(out);
	int rc = sc_cli_buf_printf(out, "{\"op\":\"%s\",\"id\":", op);
	if (!rc)
		rc = sc_cli_json_string(out, c->id.ptr, c->id.len);
	if (!rc && c->partition.len) {
		rc = sc_cli_buf_puts(out, ",\"partition\":");
		if (!rc)
			rc = sc_cli_json_string(out, c->partition.ptr,
						c->partition.len);
	}
	if (!rc)
		rc = sc_cli_buf_printf(out,
				       ",\"version\":%llu,\"position\":%llu",
				       (unsigned long long)b->to_version,
				       (unsigned long long)b->to_position);
	if (!rc && c->before && c->after) {
		rc = sc_cli_buf_puts(out, ",\"changed\":[");
		for (size_t i = 0; !rc && i < c->nchanged; i++) {
			if (i)
				rc = sc_cli_buf_puts(out, ",");
			if (!rc)
				rc = sc_cli_json_string(out, c->changed[i].ptr,
							c->changed[i].len);
		}
		if (!rc)
			rc = sc_cli_buf_puts(out, "]");
	}
	if (!rc && c->after) {
		rc = sc_cli_buf_puts(out, ",\"state\":");
		if (!rc)
			rc = sc_cli_entity_encode(out, c->after);
	}
	if (!rc)
		rc = sc_cli_buf_puts(out, "}");
	if (rc)
		return rc;
	return sc_cli_print_line(out) ? 0 : EIO;
}

static int print_batch(sc_cli_buf *out, const sc_watch_batch *b)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < b->nadded; i++)
		rc = print_change(out, "added", &b->added[i], b);
	for (size_t i = 0; !rc && i < b->nupdated; i++)
		rc = print_change(out, "updated", &b->updated[i], b);
	for (size_t i = 0; !rc && i < b->nremoved; i++)
		rc = print_change(out, "removed", &b->removed[i], b);
	if (!rc && fflush(stdout))
		rc = EIO;
	return rc;
}

static int print_heartbeat(sc_cli_buf *out, const sc_watch_batch *b)
{
	sc_cli_buf_reset(out);
	if (sc_cli_buf_printf(out,
			      "{\"op\":\"heartbeat\",\"version\":%llu,"
			      "\"position\":%llu}",
			      (unsigned long long)b->to_version,
			      (unsigned long long)b->to_position) ||
	    !sc_cli_print_line(out) || fflush(stdout))
		return EIO;
	return 0;
}

int sc_cli_cmd_watch(const sc_cli_global *g, int argc, char **argv)
{
	sc_watch_options wo = {0};
	const char *prefix = NULL, *partition = NULL;
	bool heartbeat = false, from_given = false;
	uint64_t idle = 1000, from = 0;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(watch_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if (!strcmp(argv[i], "--initial")) {
			wo.start = SC_WATCH_START_INITIAL;
			i++;
		} else if (!strcmp(argv[i], "--heartbeat")) {
			heartbeat = true;
			i++;
		} else if ((m = sc_cli_opt("watch", argc, argv, &i, "--prefix",
					   &prefix))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("watch", argc, argv, &i,
					   "--partition", &partition))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("watch", argc, argv, &i, "--idle",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("watch", "--idle", v, 1,
						      3600000, &idle))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("watch", argc, argv, &i, "--from",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("watch", "--from", v, 0,
						      UINT64_MAX, &from))
				return SC_CLI_EXIT_USAGE;
			from_given = true;
		} else {
			return sc_cli_usage_error(
			    "watch", "unknown argument %s", argv[i]);
		}
	}
	if (from_given && wo.start == SC_WATCH_START_INITIAL)
		return sc_cli_usage_error("watch",
					  "give --initial or --from, not both");
	if (prefix)
		wo.prefix = (sc_str){prefix, strlen(prefix)};
	if (partition) {
		wo.by_partition = true;
		wo.partition = (sc_str){partition, strlen(partition)};
	}
	/* Signals are blocked before any thread starts: only the signal
	 * thread takes them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t sig_thread;
	if (pthread_create(&sig_thread, NULL, wait_signal, &set) != 0) {
		fprintf(stderr, "statecache watch: cannot start a thread\n");
		return SC_CLI_EXIT_FAIL;
	}
	sc_store *st = NULL;
	int code = sc_cli_store_open_read("watch", g->db, true, &st);
	sc_watcher *w = NULL;
	sc_watch_resume *res = NULL;
	sc_error err;
	sc_error_clear(&err);
	sc_cli_buf out;
	sc_cli_buf_init(&out);
	if (!code) {
		int rc =
		    from_given
			? sc_store_watch_resume(st, &wo, from, &w, &res, &err)
			: sc_watch_open(sc_store_cache(st), &wo, &w, &err);
		if (rc) {
			fprintf(stderr, "statecache watch: %s\n",
				err.message[0] ? err.message : sc_strerror(rc));
			code = rc == SC_EINVAL ? SC_CLI_EXIT_USAGE
					       : SC_CLI_EXIT_FAIL;
		}
	}
	if (!code && res && print_batch(&out, sc_watch_resume_batch(res)))
		code = SC_CLI_EXIT_FAIL;
	sc_watch_resume_free(res);
	/* Wait in steps of at most STEP ms so that a signal ends the wait. */
	enum { STEP = 100 };
	uint64_t idle_for = 0;
	while (!code && !atomic_load(&stop_signal)) {
		const sc_watch_batch *b;
		int rc = sc_watch_next(w, STEP, &b, &err);
		if (rc) {
			fprintf(stderr, "statecache watch: %s\n",
				err.message[0] ? err.message : sc_strerror(rc));
			code = SC_CLI_EXIT_FAIL;
			break;
		}
		if (b->kind == SC_WATCH_HEARTBEAT) {
			idle_for += STEP;
			if (idle_for < idle)
				continue;
			idle_for = 0;
			if (heartbeat && print_heartbeat(&out, b))
				code = SC_CLI_EXIT_FAIL;
			continue;
		}
		idle_for = 0;
		if (print_batch(&out, b))
			code = SC_CLI_EXIT_FAIL;
	}
	if (!atomic_load(&stop_signal))
		pthread_kill(sig_thread, SIGTERM);
	pthread_join(sig_thread, NULL);
	sc_cli_buf_free(&out);
	sc_watch_close(w);
	sc_store_close(st);
	return code;
}
