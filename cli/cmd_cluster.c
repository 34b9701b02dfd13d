/*
 * statecache stream-create, publish and follow: the cluster commands
 * (include/statecache/cluster.h). Built with the NATS client only
 * (SC_HAVE_NATS); otherwise they say so and fail.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/ingest.h"
#include "cli/json_event.h"

#ifdef SC_HAVE_NATS
#include "statecache/cluster.h"
#endif

static const char stream_create_help[] =
    "usage: statecache stream-create --nats URL [--stream S] [--replicas N]\n"
    "\n"
    "Create the JetStream stream S (default statecache) holding the\n"
    "subjects S.>, kept on N servers (default 1, at most 5), unless it\n"
    "exists. URL is one server or several separated by commas.\n"
    "\n"
    "Exit codes: 0 ok (created or already there); 1 the cluster cannot be\n"
    "reached or refused; 2 bad usage.\n";

static const char publish_help[] =
    "usage: statecache publish --nats URL [--stream S] [--batch N] [FILE|-]\n"
    "\n"
    "Publish the events in FILE (default: stdin), JSON Lines as `ingest`\n"
    "reads them, to the stream S (default statecache). Up to N (default\n"
    "100) consecutive lines of one partition make one message; a message\n"
    "larger than the server's maximum message size is an error (use a\n"
    "smaller --batch). Each message has its own id, so a publish retried\n"
    "after a timeout is stored once. Prints one JSON object: events,\n"
    "messages, first_sequence and last_sequence (the stream sequences of\n"
    "the first and the last message).\n"
    "\n"
    "A malformed line stops the run: the messages before it are published.\n"
    "Exit codes: 0 ok; 1 the cluster failed; 2 a malformed line or bad "
    "usage.\n";

static const char follow_help[] =
    "usage: statecache [--db DIR] follow --nats URL [--stream S]\n"
    "                  [--partition P]... [--until SEQ]\n"
    "                  [--durability full|consistent|nosync]\n"
    "\n"
    "Run a node: apply the stream S (default statecache) to the store DIR\n"
    "(created if missing), each message in one transaction that also\n"
    "saves the stream sequence reached, and go on until SIGTERM or SIGINT\n"
    "(exit 0). A restart resumes after the saved sequence. --partition\n"
    "(repeatable) follows only those partitions (\"\" is the default\n"
    "partition); a node keeps the set it started with. --until SEQ exits\n"
    "0 once the node reached stream sequence SEQ. Other processes read the\n"
    "store meanwhile (get, scan, stats). A new node can start from a copy\n"
    "of another node's store (statecache backup).\n"
    "\n"
    "Exit codes: 0 stopped by a signal or --until reached; 1 the node\n"
    "failed (behind the stream's retention, the cluster unreachable, a bad\n"
    "message); 2 bad usage.\n";

#ifndef SC_HAVE_NATS

static int no_nats(const char *cmd, int argc, char **argv, const char *help)
{
	for (int i = 1; i < argc; i++)
		if (sc_cli_is_help(argv[i])) {
			fputs(help, stdout);
			return SC_CLI_EXIT_OK;
		}
	fprintf(stderr,
		"statecache %s: this build lacks NATS support (rebuild with "
		"libnats-dev installed: make deps && make)\n",
		cmd);
	return SC_CLI_EXIT_FAIL;
}

int sc_cli_cmd_stream_create(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	return no_nats("stream-create", argc, argv, stream_create_help);
}

int sc_cli_cmd_publish(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	return no_nats("publish", argc, argv, publish_help);
}

int sc_cli_cmd_follow(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	return no_nats("follow", argc, argv, follow_help);
}

int sc_cli_cluster_stats(sc_store *st, sc_cli_buf *b)
{
	(void)st;
	(void)b;
	return 0;
}

#else

int sc_cli_cluster_stats(sc_store *st, sc_cli_buf *b)
{
	sc_cluster_node_state ns;
	if (sc_cluster_node_state_get(st, &ns, NULL))
		return 0;
	return sc_cli_buf_printf(b,
				 "\"stream\":\"%s\",\"stream_sequence\":%llu,"
				 "\"stream_lag\":%llu,",
				 ns.stream, (unsigned long long)ns.sequence,
				 (unsigned long long)ns.pending);
}

/* Options every cluster command takes; 1 when argv[*i] was one of them,
 * 0 when not, -1 on a usage error. */
static int cluster_opt(const char *cmd, int argc, char **argv, int *i,
		       sc_cluster_options *co)
{
	const char *v;
	int m;
	if ((m = sc_cli_opt(cmd, argc, argv, i, "--nats", &v))) {
		if (m > 0)
			co->url = v;
		return m;
	}
	if ((m = sc_cli_opt(cmd, argc, argv, i, "--stream", &v))) {
		if (m > 0)
			co->stream = v;
		return m;
	}
	return 0;
}

int sc_cli_cmd_stream_create(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	sc_cluster_options co = {0};
	uint64_t replicas = 1;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(stream_create_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = cluster_opt("stream-create", argc, argv, &i, &co))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("stream-create", argc, argv, &i,
					   "--replicas", &v))) {
			if (m < 0 ||
			    sc_cli_parse_u64("stream-create", "--replicas", v,
					     1, 5, &replicas))
				return SC_CLI_EXIT_USAGE;
		} else {
			return sc_cli_usage_error(
			    "stream-create", "unknown argument %s", argv[i]);
		}
	}
	if (!co.url)
		return sc_cli_usage_error("stream-create", "--nats URL needed");
	sc_error err;
	if (sc_cluster_stream_create(&co, (int)replicas, &err)) {
		fprintf(stderr, "statecache stream-create: %s\n", err.message);
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}

#define PUBLISH_BATCH_MAX 100000

int sc_cli_cmd_publish(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	sc_cluster_options co = {0};
	const char *path = NULL;
	uint64_t batch = 100;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(publish_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = cluster_opt("publish", argc, argv, &i, &co))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("publish", argc, argv, &i, "--batch",
					   &v))) {
			if (m < 0 ||
			    sc_cli_parse_u64("publish", "--batch", v, 1,
					     PUBLISH_BATCH_MAX, &batch))
				return SC_CLI_EXIT_USAGE;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			return sc_cli_usage_error("publish",
						  "unknown option %s", argv[i]);
		} else if (!path) {
			path = argv[i++];
		} else {
			return sc_cli_usage_error(
			    "publish", "one input file only (extra \"%s\")",
			    argv[i]);
		}
	}
	if (!co.url)
		return sc_cli_usage_error("publish", "--nats URL needed");
	FILE *in = stdin;
	if (path && strcmp(path, "-")) {
		in = fopen(path, "rb");
		if (!in) {
			fprintf(stderr,
				"statecache publish: cannot open %s: %s\n",
				path, strerror(errno));
			return SC_CLI_EXIT_FAIL;
		}
	}
	sc_cli_file_source src;
	sc_cli_event *evs = calloc((size_t)batch, sizeof *evs);
	sc_event *batch_ev = calloc((size_t)batch, sizeof *batch_ev);
	if (!evs || !batch_ev || sc_cli_file_source_init(&src, in)) {
		fprintf(stderr, "statecache publish: out of memory\n");
		free(evs);
		free(batch_ev);
		if (in != stdin)
			fclose(in);
		return SC_CLI_EXIT_FAIL;
	}
	for (size_t i = 0; i < batch; i++)
		sc_cli_event_init(&evs[i]);
	int code = SC_CLI_EXIT_OK;
	sc_error err;
	sc_cluster_publisher *pub = NULL;
	if (sc_cluster_publisher_open(&co, &pub, &err)) {
		fprintf(stderr, "statecache publish: %s\n", err.message);
		code = SC_CLI_EXIT_FAIL;
	}
	uint64_t events = 0, messages = 0, first = 0, last = 0, line_no = 0;
	size_t n = 0;
	bool eof = false;
	while (!code && !eof) {
		const char *line = NULL;
		size_t len = 0;
		int r = n < batch
			    ? src.base.next(&src.base, &line, &len, NULL, &err)
			    : 1;
		if (r < 0 || r > 1) {
			fprintf(stderr, "statecache publish: %s\n",
				err.message);
			code = SC_CLI_EXIT_FAIL;
			break;
		}
		if (r == 0)
			eof = true;
		bool blank = true;
		for (size_t k = 0; r == 1 && n < batch && k < len; k++)
			if (line[k] != ' ' && line[k] != '\t' &&
			    line[k] != '\r')
				blank = false;
		if (r == 1 && n < batch) {
			line_no++;
			if (blank)
				continue;
		}
		/* The next event, decoded into the slot after the batch; a
		 * different partition or a full batch sends the batch
		 * first. */
		bool have = false;
		if (r == 1 && n < batch) {
			if (sc_cli_event_decode(&evs[n], line, len, &err) ||
			    sc_event_validate(&evs[n].ev, &err)) {
				fprintf(stderr,
					"statecache publish: line %llu: %s\n",
					(unsigned long long)line_no,
					err.message);
				code = SC_CLI_EXIT_USAGE;
			} else {
				have = true;
			}
		}
		bool split = false;
		if (have && n > 0) {
			sc_str a = evs[0].ev.partition, b = evs[n].ev.partition;
			split = a.len != b.len ||
				(a.len && memcmp(a.ptr, b.ptr, a.len) != 0);
		}
		size_t send = n;
		if (have && !split)
			n++, send = n == batch ? n : 0;
		if (!have)
			send = n;
		if (send == 0)
			continue;
		for (size_t k = 0; k < send; k++)
			batch_ev[k] = evs[k].ev;
		sc_cluster_publish_result res;
		if (sc_cluster_publish(pub, batch_ev, send, NULL, &res, &err)) {
			fprintf(stderr, "statecache publish: %s\n",
				err.message);
			code = SC_CLI_EXIT_FAIL;
			break;
		}
		if (!first)
			first = res.sequence;
		last = res.sequence;
		events += send;
		messages++;
		if (split) {
			/* The event that started a new partition becomes
			 * the first of the next batch. */
			sc_cli_event t = evs[0];
			evs[0] = evs[n];
			evs[n] = t;
			n = 1;
		} else {
			n = 0;
		}
	}
	if (code != SC_CLI_EXIT_FAIL)
		printf("{\"events\":%llu,\"messages\":%llu,\"first_sequence\":"
		       "%llu,\"last_sequence\":%llu}\n",
		       (unsigned long long)events, (unsigned long long)messages,
		       (unsigned long long)first, (unsigned long long)last);
	sc_cluster_publisher_close(pub);
	for (size_t i = 0; i < batch; i++)
		sc_cli_event_clear(&evs[i]);
	free(evs);
	free(batch_ev);
	sc_cli_file_source_free(&src);
	if (in != stdin)
		fclose(in);
	if (fflush(stdout) && code == SC_CLI_EXIT_OK)
		code = SC_CLI_EXIT_FAIL;
	return code;
}

/* Waits for --until (or for the follower to fail), then wakes main. */
typedef struct until_waiter {
	sc_cluster_follower *f;
	uint64_t until;
	int rc;
	sc_error err;
} until_waiter;

static void *until_main(void *arg)
{
	until_waiter *w = arg;
	w->rc = sc_cluster_follower_wait(w->f, w->until, -1, &w->err);
	kill(getpid(), SIGUSR1);
	return NULL;
}

#define FOLLOW_PARTITIONS_MAX 1024

int sc_cli_cmd_follow(const sc_cli_global *g, int argc, char **argv)
{
	sc_cluster_follower_options fo = {0};
	sc_str parts[FOLLOW_PARTITIONS_MAX];
	size_t nparts = 0;
	uint64_t until = UINT64_MAX;
	sc_durability durability = SC_DURABILITY_FULL;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(follow_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = cluster_opt("follow", argc, argv, &i, &fo.cluster))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("follow", argc, argv, &i,
					   "--partition", &v))) {
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			if (nparts == FOLLOW_PARTITIONS_MAX)
				return sc_cli_usage_error(
				    "follow", "at most %d --partition",
				    FOLLOW_PARTITIONS_MAX);
			parts[nparts++] = (sc_str){v, strlen(v)};
		} else if ((m = sc_cli_opt("follow", argc, argv, &i, "--until",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("follow", "--until", v, 1,
						      UINT64_MAX - 1, &until))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("follow", argc, argv, &i,
					   "--durability", &v))) {
			if (m < 0 ||
			    sc_cli_parse_durability("follow", v, &durability))
				return SC_CLI_EXIT_USAGE;
		} else {
			return sc_cli_usage_error(
			    "follow", "unknown argument %s", argv[i]);
		}
	}
	if (!fo.cluster.url)
		return sc_cli_usage_error("follow", "--nats URL needed");
	fo.partitions = parts;
	fo.npartitions = nparts;
	/* The signals are taken by sigwait below: block them before any
	 * thread starts, so every thread inherits the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sc_store *st;
	int code = sc_cli_store_open("follow", g->db, true, durability, &st);
	if (code)
		return code;
	sc_error err;
	sc_cluster_follower *f;
	if (sc_cluster_follower_start(st, &fo, &f, &err)) {
		fprintf(stderr, "statecache follow: %s\n", err.message);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	until_waiter w = {.f = f, .until = until};
	pthread_t t;
	bool waiter = pthread_create(&t, NULL, until_main, &w) == 0;
	if (!waiter) {
		fprintf(stderr, "statecache follow: cannot start a thread\n");
		code = SC_CLI_EXIT_FAIL;
	}
	int sig = 0;
	while (waiter) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGUSR1)
			break;
	}
	if (sig == SIGUSR1) {
		pthread_join(t, NULL);
		waiter = false;
		if (w.rc) {
			fprintf(stderr, "statecache follow: %s\n",
				w.err.message);
			code = SC_CLI_EXIT_FAIL;
		}
	}
	/* A waiter still blocked returns when stop wakes it. */
	sc_cluster_follower_stop(f);
	if (waiter)
		pthread_join(t, NULL);
	sc_store_close(st);
	return code;
}

#endif
