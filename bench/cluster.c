/*
 * Cluster benchmarks (built only with the NATS client): three nats-server
 * processes with JetStream and clustering on 127.0.0.1, started here in a
 * temporary folder and stopped at the end, and streams of 3 replicas.
 *
 *   cluster_visible   publish one event, then wait on a node (another
 *                     store, following in this process) until it applied
 *                     that sequence: p50 and p99 of the whole round trip
 *   cluster_follow    a new node applying the stream (B events a message)
 *                     vs the same events appended locally with
 *                     sc_store_append at the same batch size: events/s
 *                     and the ratio
 *   cluster_catchup   a node started from a copy of another node's store
 *                     (sc_store_backup, with a snapshot) catching up on
 *                     the events published after the copy: events/s
 *
 * Every store is durability full (two flushes per transaction), the
 * default. SC_BENCH_EVENTS sets the catch-up's event count (default
 * 1,000,000). Everything shares the machine's cores: the servers' RAFT
 * replication, the publisher and the node.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "statecache/cluster.h"
#include "statecache/store.h"

extern char **environ;

static char root[] = "/tmp/sc_bench_cluster.XXXXXX";
static pid_t servers[3];
static char url[256];

static void die(const char *what, const sc_error *err)
{
	fprintf(stderr, "bench cluster: %s: %s\n", what,
		err ? err->message : strerror(errno));
	for (int i = 0; i < 3; i++)
		if (servers[i] > 0)
			kill(servers[i], SIGKILL);
	exit(1);
}

/* ---- the cluster --------------------------------------------------------- */

static void free_ports(unsigned short *out, int n)
{
	int fds[6];
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr =
					    htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof a;
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[i] < 0 || bind(fds[i], (void *)&a, sizeof a) ||
		    getsockname(fds[i], (void *)&a, &len))
			die("free port", NULL);
		out[i] = ntohs(a.sin_port);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

static void cluster_start(void)
{
	unsigned short p[6];
	free_ports(p, 6);
	for (int i = 0; i < 3; i++) {
		char conf[600], path[128], log[128];
		snprintf(conf, sizeof conf,
			 "server_name: n%d\nhost: 127.0.0.1\nport: %u\n"
			 "jetstream { store_dir: \"%s/data%d\" }\n"
			 "cluster { name: bench\n host: 127.0.0.1\n port: %u\n"
			 " routes: [ nats-route://127.0.0.1:%u, "
			 "nats-route://127.0.0.1:%u ] }\n",
			 i + 1, p[i], root, i + 1, p[3 + i], p[3 + (i + 1) % 3],
			 p[3 + (i + 2) % 3]);
		snprintf(path, sizeof path, "%s/n%d.conf", root, i + 1);
		snprintf(log, sizeof log, "%s/n%d.log", root, i + 1);
		FILE *f = fopen(path, "w");
		if (!f || fputs(conf, f) < 0 || fclose(f))
			die(path, NULL);
		posix_spawn_file_actions_t fa;
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_addopen(
		    &fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		posix_spawn_file_actions_adddup2(&fa, 1, 2);
		char *argv[] = {"nats-server", "-c", path, NULL};
		if (posix_spawnp(&servers[i], "nats-server", &fa, NULL, argv,
				 environ))
			die("starting nats-server", NULL);
		posix_spawn_file_actions_destroy(&fa);
	}
	snprintf(url, sizeof url,
		 "nats://127.0.0.1:%u,nats://127.0.0.1:%u,nats://127.0.0.1:%u",
		 p[0], p[1], p[2]);
}

static void cluster_stop(void)
{
	for (int i = 0; i < 3; i++) {
		kill(servers[i], SIGTERM);
		waitpid(servers[i], NULL, 0);
		servers[i] = 0;
	}
}

/* Start-up: the cluster is ready once it creates a 3-replica stream. */
static void stream_create(const char *name)
{
	sc_cluster_options co = {.url = url, .stream = name};
	sc_error err;
	for (int i = 0; i < 150; i++) {
		if (sc_cluster_stream_create(&co, 3, &err) == 0)
			return;
		struct timespec d = {0, 200 * 1000 * 1000};
		nanosleep(&d, NULL);
	}
	die("creating a stream", &err);
}

/* ---- workload ------------------------------------------------------------ */

#define ENTITIES 100000

typedef struct batch {
	sc_event ev[1000];
	sc_attr attrs[1000][3];
	char ids[1000][16];
} batch;

/* Events [first, first + n) of the workload: sets of 3 attributes on
 * ENTITIES entities, with fixed times. */
static void batch_fill(batch *b, uint64_t first, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t k = first + i, s = k * 0x9E3779B97F4A7C15ull + 1;
		int len = snprintf(
		    b->ids[i], sizeof b->ids[i], "dev-%06llu",
		    (unsigned long long)(bench_rnd_next(&s) % ENTITIES));
		sc_attr *a = b->attrs[i];
		a[0] = (sc_attr){
		    .name = {"count", 5},
		    .value = {.type = SC_VALUE_INT, .u.i = (int64_t)k}};
		a[1] = (sc_attr){
		    .name = {"level", 5},
		    .value = {.type = SC_VALUE_DOUBLE, .u.d = (double)k / 3.0}};
		a[2] = (sc_attr){.name = {"zone", 4},
				 .value = {.type = SC_VALUE_STRING,
					   .u.s = {"eu-west-1", 9}}};
		b->ev[i] = (sc_event){.entity = {b->ids[i], (size_t)len},
				      .type = SC_EVENT_SET,
				      .attrs = a,
				      .nattrs = 3,
				      .time = 1700000000000000000 + (int64_t)k};
	}
}

static uint64_t publish_events(const char *stream, uint64_t first, uint64_t n,
			       size_t per_msg)
{
	sc_cluster_options co = {.url = url, .stream = stream};
	sc_cluster_publisher *pub;
	sc_error err;
	if (sc_cluster_publisher_open(&co, &pub, &err))
		die("publisher", &err);
	batch *b = malloc(sizeof *b);
	if (!b)
		die("malloc", NULL);
	uint64_t last = 0;
	for (uint64_t done = 0; done < n;) {
		size_t k = n - done < per_msg ? (size_t)(n - done) : per_msg;
		batch_fill(b, first + done, k);
		sc_cluster_publish_result res;
		if (sc_cluster_publish(pub, b->ev, k, NULL, &res, &err))
			die("publish", &err);
		last = res.sequence;
		done += k;
	}
	free(b);
	sc_cluster_publisher_close(pub);
	return last;
}

static sc_store *store_open(const char *name, bool create)
{
	char dir[256];
	snprintf(dir, sizeof dir, "%s/%s", root, name);
	sc_store_options o = {.create = create};
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		die(dir, &err);
	return s;
}

static sc_cluster_follower *follow(sc_store *s, const char *stream)
{
	sc_cluster_follower_options fo = {
	    .cluster = {.url = url, .stream = stream}};
	sc_cluster_follower *f;
	sc_error err;
	if (sc_cluster_follower_start(s, &fo, &f, &err))
		die("follower", &err);
	return f;
}

static void wait_for(sc_cluster_follower *f, uint64_t seq)
{
	sc_error err;
	if (sc_cluster_follower_wait(f, seq, -1, &err))
		die("wait", &err);
}

/* ---- the benchmarks -------------------------------------------------------
 */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void bench_visible(void)
{
	stream_create("visible");
	sc_store *s = store_open("visible-node", true);
	sc_cluster_follower *f = follow(s, "visible");
	sc_cluster_options co = {.url = url, .stream = "visible"};
	sc_cluster_publisher *pub;
	sc_error err;
	if (sc_cluster_publisher_open(&co, &pub, &err))
		die("publisher", &err);
	enum { WARMUP = 100, SAMPLES = 2000 };
	static double us[SAMPLES];
	batch *b = malloc(sizeof *b);
	if (!b)
		die("malloc", NULL);
	for (int i = 0; i < WARMUP + SAMPLES; i++) {
		batch_fill(b, (uint64_t)i, 1);
		double t0 = bench_now();
		sc_cluster_publish_result res;
		if (sc_cluster_publish(pub, b->ev, 1, NULL, &res, &err))
			die("publish", &err);
		wait_for(f, res.sequence);
		if (i >= WARMUP)
			us[i - WARMUP] = (bench_now() - t0) * 1e6;
	}
	qsort(us, SAMPLES, sizeof us[0], cmp_double);
	printf("{\"name\":\"cluster_visible\",\"samples\":%d,\"p50_us\":%.0f,"
	       "\"p99_us\":%.0f}\n",
	       SAMPLES, us[SAMPLES / 2], us[SAMPLES * 99 / 100]);
	fflush(stdout);
	free(b);
	sc_cluster_publisher_close(pub);
	sc_cluster_follower_stop(f);
	sc_store_close(s);
}

static void bench_follow(size_t per_msg, uint64_t n)
{
	char stream[32], node[32], local[32];
	snprintf(stream, sizeof stream, "follow%zu", per_msg);
	snprintf(node, sizeof node, "follow%zu-node", per_msg);
	snprintf(local, sizeof local, "local%zu", per_msg);
	stream_create(stream);
	uint64_t last = publish_events(stream, 0, n, per_msg);

	/* The local peer, then the node, each alone on the machine. */
	sc_store *s = store_open(local, true);
	batch *b = malloc(sizeof *b);
	if (!b)
		die("malloc", NULL);
	sc_error err;
	double t0 = bench_now();
	for (uint64_t done = 0; done < n; done += per_msg) {
		batch_fill(b, done, per_msg);
		if (sc_store_append(s, b->ev, per_msg, NULL, &err))
			die("append", &err);
	}
	double local_s = bench_now() - t0;
	free(b);
	sc_store_close(s);
	s = store_open(node, true);
	t0 = bench_now();
	sc_cluster_follower *f = follow(s, stream);
	wait_for(f, last);
	double follow_s = bench_now() - t0;
	sc_cluster_follower_stop(f);
	sc_store_close(s);

	double x = (double)n / follow_s, y = (double)n / local_s;
	printf("{\"name\":\"cluster_follow\",\"batch\":%zu,\"events\":%llu,"
	       "\"events_per_s\":%.0f,\"peer\":\"local_append\","
	       "\"peer_events_per_s\":%.0f,\"ratio\":%.3f}\n",
	       per_msg, (unsigned long long)n, x, y, x / y);
	fflush(stdout);
}

static void bench_catchup(uint64_t n)
{
	const size_t per_msg = 1000;
	const uint64_t before = 100000;
	stream_create("catchup");
	/* A node applies a first part and takes a snapshot; its copy is
	 * the new node's start. */
	uint64_t mid = publish_events("catchup", 0, before, per_msg);
	sc_store *s = store_open("catchup-a", true);
	sc_cluster_follower *f = follow(s, "catchup");
	wait_for(f, mid);
	sc_cluster_follower_stop(f);
	sc_error err;
	if (sc_store_snapshot(s, NULL, &err))
		die("snapshot", &err);
	char copy[256];
	snprintf(copy, sizeof copy, "%s/catchup-b", root);
	if (sc_store_backup(s, copy, 0, &err))
		die("backup", &err);
	sc_store_close(s);
	uint64_t last = publish_events("catchup", before, n, per_msg);

	double t0 = bench_now();
	s = store_open("catchup-b", false);
	f = follow(s, "catchup");
	wait_for(f, last);
	double sec = bench_now() - t0;
	if (sc_store_last_position(s) != before + n) {
		fprintf(stderr, "bench cluster: the copy holds %llu events\n",
			(unsigned long long)sc_store_last_position(s));
		exit(1);
	}
	sc_cluster_follower_stop(f);
	sc_store_close(s);
	printf("{\"name\":\"cluster_catchup\",\"events\":%llu,"
	       "\"events_per_s\":%.0f}\n",
	       (unsigned long long)n, (double)n / sec);
	fflush(stdout);
}

int main(void)
{
	if (!mkdtemp(root))
		die("mkdtemp", NULL);
	const char *env = getenv("SC_BENCH_EVENTS");
	uint64_t catchup_events = env ? strtoull(env, NULL, 10) : 1000000;
	cluster_start();
	stream_create("ready");
	bench_visible();
	bench_follow(100, 200000);
	bench_catchup(catchup_events);
	cluster_stop();
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "bench cluster: cannot remove %s\n", root);
	return 0;
}
