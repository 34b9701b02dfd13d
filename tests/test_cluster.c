/*
 * The cluster layer on a real 3-server JetStream cluster, which
 * tests/test_cluster.sh starts (SC_NATS_URL: the servers' URLs;
 * SC_CLUSTER_DIR: its folder, with start-N.sh and nN.pid per server;
 * STATECACHE: the command, whose `follow` runs the nodes).
 *
 * - run: two publishers (threads) and nodes as processes (`statecache
 *   follow`; node 3 follows three of the five partitions) over 100,000
 *   events (20,000 with SC_TEST_SHORT=1); meanwhile nodes 1 and 3 are
 *   SIGKILLed at random points and restarted, a server is SIGKILLed and
 *   restarted, and node 2's store is copied while it runs (statecache
 *   backup) to bootstrap node 4. Then every node catches up (follow
 *   --until LAST) and its log must be exactly the stream's events of its
 *   partitions in stream order (none lost, none twice) and its state the
 *   independent replay of those events (tests/support/refstate).
 * - duplicates: a publish whose ack was lost (the message sent without
 *   waiting for the ack, as a publish that timed out), retried with the
 *   same id, plain and conditional: stored once, the retry returns the
 *   first sequence; a node applies it once.
 * - read-your-writes: after a publish returns sequence S, a wait for S on
 *   another node returns and the event is visible there.
 * - commands: `statecache publish` of generated JSON Lines and a node run
 *   by `follow --until` hold exactly what `ingest` of the same lines holds;
 *   `stats` shows the stream sequence; a malformed line stops publish
 *   after the lines before it.
 * - tokens and the Batch wire format (no server needed).
 * - errors: empty and mixed-partition batches, a batch over the server's
 *   maximum message size, a conflict on the expected partition sequence,
 *   a node behind the stream's retention, a message deleted from the
 *   middle of the stream (the node stops at the gap), a store that follows
 *   another stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nats/nats.h>

#include "cluster/cluster_internal.h"
#include "statecache/cluster.h"
#include "statecache/store.h"
#include "statecache/v1/cluster.pb-c.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/testkit.h"

extern char **environ;

static const char *nats_url, *cluster_dir, *statecache;
static char root[] = "/tmp/sc_test_cluster.XXXXXX";
static uint64_t seed;

/* SC_TEST_SHORT set and not "0": the short run. */
static bool test_short(void)
{
	const char *v = getenv("SC_TEST_SHORT");
	return v && *v && strcmp(v, "0") != 0;
}

/* ---- partitions and events ------------------------------------------------
 */

#define NPARTS 5
static char long_part[100];
static sc_str parts[NPARTS];

static void parts_init(void)
{
	memset(long_part, 'L', sizeof long_part);
	parts[0] = (sc_str){"", 0};
	parts[1] = (sc_str){"eu", 2};
	parts[2] = (sc_str){"us", 2};
	parts[3] = (sc_str){"\xc3\xa9t\xc3\xa9", 6};
	parts[4] = (sc_str){long_part, sizeof long_part};
}

/* Node 3 follows these (indexes into parts). */
static const int subset[] = {0, 1, 4};
#define NSUBSET 3

/* A generated event with an id of its partition's own. */
typedef struct gen_event {
	tk_event t;
	char id[48];
} gen_event;

static void gen(uint64_t stream, uint64_t i, int part, gen_event *g)
{
	tk_event_gen(stream, i, 300, 0, &g->t);
	int n = snprintf(g->id, sizeof g->id, "p%d-%.*s", part,
			 (int)g->t.ev.entity.len, g->t.ev.entity.ptr);
	g->t.ev.entity = (sc_str){g->id, (size_t)n};
	g->t.ev.partition = parts[part];
}

/* ---- processes ------------------------------------------------------------
 */

/* Children not reaped yet: killed when the program ends early (a failed
 * assertion, the alarm). */
#define CHILDREN_MAX 64
static volatile pid_t children[CHILDREN_MAX];

static void children_kill(void)
{
	for (int i = 0; i < CHILDREN_MAX; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "test_cluster: timed out\n";
	if (write(2, msg, sizeof msg - 1) < 0)
		_exit(1);
	children_kill();
	_exit(1);
}

/* Start argv[0]; with `out`, its stdout goes to that file (and with `in`,
 * its stdin comes from that file). */
static pid_t spawn_io(char *const argv[], const char *in, const char *out)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (in)
		posix_spawn_file_actions_addopen(&fa, 0, in, O_RDONLY, 0);
	if (out)
		posix_spawn_file_actions_addopen(
		    &fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	pid_t pid;
	int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		fprintf(stderr, "spawn %s: %s\n", argv[0], strerror(rc));
	assert_int_equal(rc, 0);
	for (int i = 0; i < CHILDREN_MAX; i++)
		if (children[i] <= 0) {
			children[i] = pid;
			break;
		}
	return pid;
}

static pid_t spawn(char *const argv[])
{
	return spawn_io(argv, NULL, NULL);
}

/* Wait for a child (bounded by the program's alarm); its exit status. */
static int reap(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		assert_int_equal(errno, EINTR);
	for (int i = 0; i < CHILDREN_MAX; i++)
		if (children[i] == pid)
			children[i] = 0;
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

/* `statecache --db DB follow ...` for the stream, a partition set (NULL:
 * all) and --until (0: none). */
static pid_t spawn_node(const char *db, const char *stream, bool subset_only,
			uint64_t until)
{
	char until_s[32];
	snprintf(until_s, sizeof until_s, "%llu", (unsigned long long)until);
	char *argv[32];
	int n = 0;
	argv[n++] = (char *)statecache;
	argv[n++] = "--db";
	argv[n++] = (char *)db;
	argv[n++] = "follow";
	argv[n++] = "--nats";
	argv[n++] = (char *)nats_url;
	argv[n++] = "--stream";
	argv[n++] = (char *)stream;
	argv[n++] = "--durability";
	argv[n++] = "consistent";
	static char part_args[NSUBSET][128];
	if (subset_only) {
		for (int i = 0; i < NSUBSET; i++) {
			sc_str p = parts[subset[i]];
			snprintf(part_args[i], sizeof part_args[i], "%.*s",
				 (int)p.len, p.ptr);
			argv[n++] = "--partition";
			argv[n++] = part_args[i];
		}
	}
	if (until) {
		argv[n++] = "--until";
		argv[n++] = until_s;
	}
	argv[n] = NULL;
	return spawn(argv);
}

static int run_sh(const char *script)
{
	char *argv[] = {"/bin/sh", (char *)script, NULL};
	return reap(spawn(argv));
}

static pid_t server_pid(int i)
{
	char path[512];
	snprintf(path, sizeof path, "%s/n%d.pid", cluster_dir, i);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	long pid = 0;
	assert_int_equal(fscanf(f, "%ld", &pid), 1);
	fclose(f);
	return (pid_t)pid;
}

static void server_kill_restart(int i)
{
	pid_t pid = server_pid(i);
	fprintf(stderr, "test_cluster: SIGKILL server %d (pid %ld)\n", i,
		(long)pid);
	assert_int_equal(kill(pid, SIGKILL), 0);
	char path[512];
	snprintf(path, sizeof path, "%s/start-%d.sh", cluster_dir, i);
	assert_int_equal(run_sh(path), 0);
}

/* ---- stores and the oracle ------------------------------------------------
 */

static sc_store *open_store(const char *dir, bool create)
{
	sc_store_options o = {0};
	o.create = create;
	o.durability = SC_DURABILITY_CONSISTENT;
	sc_store *s = NULL;
	sc_error err;
	int rc = sc_store_open(dir, &o, &s, &err);
	if (rc)
		fprintf(stderr, "open %s: %s\n", dir, err.message);
	assert_int_equal(rc, 0);
	return s;
}

static void path_in_root(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", root, name);
}

/* Every message of `stream` up to `last`, read one by one with js_GetMsg
 * (no consumer), decoded. */
typedef struct stream_copy {
	natsMsg **msgs;
	sc_cluster_batch *batches;
	uint64_t n;
} stream_copy;

static void stream_read(const char *stream, uint64_t last, stream_copy *c)
{
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	natsConnection *nc;
	jsCtx *js;
	sc_error err;
	assert_int_equal(sc_cluster_connect(&co, &nc, &js, &err), 0);
	c->n = last;
	c->msgs = calloc(last + 1, sizeof *c->msgs);
	c->batches = calloc(last + 1, sizeof *c->batches);
	assert_non_null(c->msgs);
	assert_non_null(c->batches);
	for (uint64_t s = 1; s <= last; s++) {
		jsErrCode jerr = 0;
		natsStatus st =
		    js_GetMsg(&c->msgs[s], js, stream, s, NULL, &jerr);
		if (st != NATS_OK)
			fprintf(stderr, "get %s #%llu: %s (%d)\n", stream,
				(unsigned long long)s, natsStatus_GetText(st),
				(int)jerr);
		assert_int_equal(st, NATS_OK);
		int rc = sc_cluster_batch_decode(
		    natsMsg_GetData(c->msgs[s]),
		    (size_t)natsMsg_GetDataLength(c->msgs[s]), &c->batches[s],
		    &err);
		if (rc)
			fprintf(stderr, "decode #%llu: %s\n",
				(unsigned long long)s, err.message);
		assert_int_equal(rc, 0);
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

static void stream_copy_free(stream_copy *c)
{
	for (uint64_t s = 1; s <= c->n; s++) {
		sc_cluster_batch_free(&c->batches[s]);
		natsMsg_Destroy(c->msgs[s]);
	}
	free(c->msgs);
	free(c->batches);
}

static bool part_in_subset(sc_str p)
{
	for (int i = 0; i < NSUBSET; i++) {
		sc_str q = parts[subset[i]];
		if (p.len == q.len && (!p.len || !memcmp(p.ptr, q.ptr, p.len)))
			return true;
	}
	return false;
}

/* The node's log, event by event, against the stream's events of its
 * partitions in stream order. */
typedef struct log_check {
	const stream_copy *c;
	bool subset_only;
	uint64_t seq;  /* stream sequence of the expected event */
	size_t i;      /* its index in that batch */
	uint64_t next; /* expected position */
	tk_refstate *ref;
	bool ok;
} log_check;

/* Move to the next expected event; NULL at the end. */
static const sc_event *expected_next(log_check *k)
{
	while (k->seq <= k->c->n) {
		const sc_cluster_batch *b = &k->c->batches[k->seq];
		if (k->i < b->n &&
		    (!k->subset_only || part_in_subset(b->events[0].partition)))
			return &b->events[k->i++];
		k->seq++;
		k->i = 0;
	}
	return NULL;
}

static int log_check_event(void *ctx, const sc_event *ev)
{
	log_check *k = ctx;
	const sc_event *want = expected_next(k);
	if (!want) {
		fprintf(stderr,
			"node log: position %llu is past the end of "
			"the stream's events (applied twice?)\n",
			(unsigned long long)ev->position);
		k->ok = false;
		return 1;
	}
	sc_event w = *want;
	w.position = k->next++;
	if (!tk_event_equal(&w, ev)) {
		fprintf(stderr,
			"node log: position %llu differs from the stream's "
			"event (sequence %llu, index %zu)\n",
			(unsigned long long)ev->position,
			(unsigned long long)k->seq, k->i - 1);
		k->ok = false;
		return 1;
	}
	tk_refstate_apply(k->ref, &w);
	return 0;
}

static void check_node(const char *db, const stream_copy *c, bool subset_only)
{
	sc_store *s = open_store(db, false);
	tk_refstate *ref = tk_refstate_new();
	log_check k = {.c = c,
		       .subset_only = subset_only,
		       .seq = 1,
		       .next = 1,
		       .ref = ref,
		       .ok = true};
	sc_error err;
	int rc = sc_store_events(s, 1, 0, log_check_event, &k, &err);
	assert_true(k.ok);
	assert_int_equal(rc, 0);
	if (expected_next(&k)) {
		fprintf(stderr,
			"node %s: its log ends at %llu, the stream "
			"has more of its events (lost)\n",
			db, (unsigned long long)sc_store_last_position(s));
		fail();
	}
	assert_true(tk_cache_matches(sc_store_cache(s), ref));
	sc_cluster_node_state ns;
	assert_int_equal(sc_cluster_node_state_get(s, &ns, &err), 0);
	assert_true(ns.sequence <= c->n);
	fprintf(stderr,
		"test_cluster: node %s: %llu events, %zu entities, stream "
		"sequence %llu: equal to the replay\n",
		db, (unsigned long long)sc_store_last_position(s),
		tk_refstate_len(ref), (unsigned long long)ns.sequence);
	tk_refstate_free(ref);
	sc_store_close(s);
}

/* ---- publishers -----------------------------------------------------------
 */

typedef struct progress {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t events;   /* published so far, both publishers */
	uint64_t last_seq; /* highest sequence returned */
} progress;

typedef struct publisher_arg {
	progress *pr;
	const char *stream;
	uint64_t id, events, rng;
} publisher_arg;

#define BATCH_MAX 64

/* A publisher thread cannot fail the cmocka test: it ends the program,
 * and the nodes with it. */
static void publisher_fail(uint64_t id, const char *msg)
{
	fprintf(stderr, "publisher %llu: %s\n", (unsigned long long)id, msg);
	children_kill();
	abort();
}

static void *publisher_main(void *arg)
{
	publisher_arg *a = arg;
	sc_cluster_options co = {.url = nats_url, .stream = a->stream};
	sc_cluster_publisher *pub;
	sc_error err;
	int rc = sc_cluster_publisher_open(&co, &pub, &err);
	if (rc)
		publisher_fail(a->id, err.message);
	gen_event *g = calloc(BATCH_MAX, sizeof *g);
	sc_event evs[BATCH_MAX];
	if (!g)
		publisher_fail(a->id, "out of memory");
	uint64_t done = 0;
	while (done < a->events) {
		uint64_t n = 1 + tk_rand_below(&a->rng, BATCH_MAX);
		if (n > a->events - done)
			n = a->events - done;
		int part = (int)tk_rand_below(&a->rng, NPARTS);
		for (uint64_t i = 0; i < n; i++) {
			gen(a->id * 1000003 + seed, done + i, part, &g[i]);
			evs[i] = g[i].t.ev;
		}
		sc_cluster_publish_result res;
		sc_cluster_publish_options po = {.retries = 50};
		rc = sc_cluster_publish(pub, evs, n, &po, &res, &err);
		if (rc)
			publisher_fail(a->id, err.message);
		done += n;
		pthread_mutex_lock(&a->pr->mu);
		a->pr->events += n;
		if (res.sequence > a->pr->last_seq)
			a->pr->last_seq = res.sequence;
		pthread_cond_broadcast(&a->pr->cond);
		pthread_mutex_unlock(&a->pr->mu);
	}
	sc_cluster_publisher_close(pub);
	free(g);
	return NULL;
}

static void progress_wait(progress *pr, uint64_t events)
{
	pthread_mutex_lock(&pr->mu);
	while (pr->events < events)
		pthread_cond_wait(&pr->cond, &pr->mu);
	pthread_mutex_unlock(&pr->mu);
}

static void stream_create(const char *name)
{
	sc_cluster_options co = {.url = nats_url, .stream = name};
	sc_error err;
	int rc = sc_cluster_stream_create(&co, 3, &err);
	if (rc)
		fprintf(stderr, "stream %s: %s\n", name, err.message);
	assert_int_equal(rc, 0);
}

/* ---- the run ------------------------------------------------------------- */

static void test_run(void **state)
{
	(void)state;
	const char *stream = "run";
	stream_create(stream);
	uint64_t total = test_short() ? 20000 : 100000;
	uint64_t rng = seed;
	char db[4][512];
	for (int i = 0; i < 4; i++) {
		char name[16];
		snprintf(name, sizeof name, "node%d", i + 1);
		path_in_root(db[i], sizeof db[i], name);
	}
	pid_t node[3];
	for (int i = 0; i < 3; i++)
		node[i] = spawn_node(db[i], stream, i == 2, 0);

	progress pr = {.mu = PTHREAD_MUTEX_INITIALIZER,
		       .cond = PTHREAD_COND_INITIALIZER};
	publisher_arg pa[2];
	pthread_t pt[2];
	for (int i = 0; i < 2; i++) {
		pa[i] = (publisher_arg){.pr = &pr,
					.stream = stream,
					.id = (uint64_t)i + 1,
					.events = total / 2,
					.rng = seed + 7919 * (uint64_t)(i + 1)};
		assert_int_equal(
		    pthread_create(&pt[i], NULL, publisher_main, &pa[i]), 0);
	}
	/* Chaos at random points of the run, in this order. */
	uint64_t kill_node_at = total / 10 + tk_rand_below(&rng, total / 5);
	uint64_t backup_at = kill_node_at + tk_rand_below(&rng, total / 5);
	uint64_t kill_server_at = backup_at + tk_rand_below(&rng, total / 5);
	uint64_t kill_node3_at =
	    kill_server_at + tk_rand_below(&rng, total / 5);

	progress_wait(&pr, kill_node_at);
	fprintf(stderr, "test_cluster: SIGKILL node 1 after %llu events\n",
		(unsigned long long)kill_node_at);
	assert_int_equal(kill(node[0], SIGKILL), 0);
	assert_int_equal(reap(node[0]), 128 + SIGKILL);
	node[0] = spawn_node(db[0], stream, false, 0);

	progress_wait(&pr, backup_at);
	{
		char *argv[] = {(char *)statecache, "--db", db[1],
				"backup",	    db[3],  NULL};
		assert_int_equal(reap(spawn(argv)), 0);
		fprintf(stderr,
			"test_cluster: copied node 2's store after %llu "
			"events\n",
			(unsigned long long)backup_at);
	}

	progress_wait(&pr, kill_server_at);
	server_kill_restart(2);

	progress_wait(&pr, kill_node3_at);
	fprintf(stderr, "test_cluster: SIGKILL node 3 after %llu events\n",
		(unsigned long long)kill_node3_at);
	assert_int_equal(kill(node[2], SIGKILL), 0);
	assert_int_equal(reap(node[2]), 128 + SIGKILL);
	node[2] = spawn_node(db[2], stream, true, 0);

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(pt[i], NULL), 0);
	uint64_t last = pr.last_seq;
	fprintf(stderr,
		"test_cluster: %llu events published in %llu messages\n",
		(unsigned long long)pr.events, (unsigned long long)last);

	/* Stop the nodes, then let each (and the bootstrapped one) catch up
	 * to the last sequence. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kill(node[i], SIGTERM), 0);
		assert_int_equal(reap(node[i]), 0);
	}
	pid_t up[4];
	for (int i = 0; i < 4; i++)
		up[i] = spawn_node(db[i], stream, i == 2, last);
	for (int i = 0; i < 4; i++)
		assert_int_equal(reap(up[i]), 0);

	stream_copy c;
	stream_read(stream, last, &c);
	for (int i = 0; i < 4; i++)
		check_node(db[i], &c, i == 2);
	stream_copy_free(&c);
}

/* ---- duplicates -----------------------------------------------------------
 */

/* Publish a batch without waiting for its ack: what a publish whose ack
 * was lost leaves behind. */
static void publish_no_ack(const char *subject, const sc_event *evs, size_t n,
			   const char *id, uint64_t expect_last)
{
	sc_cluster_options co = {.url = nats_url};
	natsConnection *nc;
	jsCtx *js;
	sc_error err;
	assert_int_equal(sc_cluster_connect(&co, &nc, &js, &err), 0);
	size_t size = sc_cluster_batch_size(evs, n);
	uint8_t *buf = malloc(size);
	assert_non_null(buf);
	sc_cluster_batch_write(evs, n, buf);
	natsMsg *m;
	assert_int_equal(
	    natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)size),
	    NATS_OK);
	assert_int_equal(natsMsgHeader_Set(m, "Nats-Msg-Id", id), NATS_OK);
	if (expect_last) {
		char s[32];
		snprintf(s, sizeof s, "%llu", (unsigned long long)expect_last);
		assert_int_equal(
		    natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence",
				      s),
		    NATS_OK);
	}
	assert_int_equal(natsConnection_PublishMsg(nc, m), NATS_OK);
	assert_int_equal(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
	natsMsg_Destroy(m);
	free(buf);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

static uint64_t stream_last_seq(const char *stream)
{
	sc_cluster_options co = {.url = nats_url};
	natsConnection *nc;
	jsCtx *js;
	sc_error err;
	assert_int_equal(sc_cluster_connect(&co, &nc, &js, &err), 0);
	jsStreamInfo *si;
	jsErrCode jerr;
	assert_int_equal(js_GetStreamInfo(&si, js, stream, NULL, &jerr),
			 NATS_OK);
	uint64_t last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return last;
}

static void test_duplicates(void **state)
{
	(void)state;
	const char *stream = "dup";
	stream_create(stream);
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	sc_cluster_publisher *pub;
	sc_error err;
	assert_int_equal(sc_cluster_publisher_open(&co, &pub, &err), 0);
	char token[SC_CLUSTER_TOKEN_MAX], subject[128];
	assert_int_equal(sc_cluster_partition_token(parts[1], token, &err), 0);
	snprintf(subject, sizeof subject, "%s.%s", stream, token);

	gen_event g[3];
	sc_event evs[3];
	for (int i = 0; i < 3; i++) {
		gen(seed, (uint64_t)i, 1, &g[i]);
		g[i].t.ev.time = 1000 + i; /* as a publisher stamps them */
		evs[i] = g[i].t.ev;
	}
	/* Plain: the first attempt's ack is lost; the retry is a duplicate
	 * with the first attempt's sequence. */
	publish_no_ack(subject, evs, 1, "retry-1", 0);
	uint64_t first = stream_last_seq(stream);
	sc_cluster_publish_options po = {.msg_id = "retry-1"};
	sc_cluster_publish_result res;
	assert_int_equal(sc_cluster_publish(pub, evs, 1, &po, &res, &err), 0);
	assert_true(res.duplicate);
	assert_int_equal(res.sequence, first);

	/* Conditional: the same, with an expected partition sequence. On a
	 * server before 2.10.14 the retry comes back as a conflict, which
	 * the publisher recognises as its own message. */
	publish_no_ack(subject, evs + 1, 1, "retry-2", first);
	uint64_t second = stream_last_seq(stream);
	assert_int_equal(second, first + 1);
	po = (sc_cluster_publish_options){
	    .msg_id = "retry-2", .expect = true, .expect_partition_seq = first};
	assert_int_equal(sc_cluster_publish(pub, evs + 1, 1, &po, &res, &err),
			 0);
	assert_true(res.duplicate);
	assert_int_equal(res.sequence, second);

	/* A new id with a stale expectation is a real conflict. */
	po = (sc_cluster_publish_options){
	    .msg_id = "other-3", .expect = true, .expect_partition_seq = first};
	assert_int_equal(sc_cluster_publish(pub, evs + 2, 1, &po, &res, &err),
			 SC_ECONFLICT);
	assert_int_equal(err.code, SC_ECONFLICT);
	/* ... and with the right one it is stored. */
	po.expect_partition_seq = second;
	assert_int_equal(sc_cluster_publish(pub, evs + 2, 1, &po, &res, &err),
			 0);
	assert_false(res.duplicate);
	assert_int_equal(res.sequence, second + 1);
	sc_cluster_publisher_close(pub);

	/* A node applies each once: its log is the stream's three events. */
	char db[512];
	path_in_root(db, sizeof db, "dup-node");
	sc_store *s = open_store(db, true);
	sc_cluster_follower_options fo = {.cluster = co};
	sc_cluster_follower *f;
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err), 0);
	assert_int_equal(sc_cluster_follower_wait(f, second + 1, 30000, &err),
			 0);
	assert_int_equal(sc_store_last_position(s), 3);
	sc_cluster_follower_stop(f);
	sc_store_close(s);
	stream_copy c;
	stream_read(stream, second + 1, &c);
	check_node(db, &c, false);
	stream_copy_free(&c);
}

/* ---- read-your-writes -----------------------------------------------------
 */

static void test_read_your_writes(void **state)
{
	(void)state;
	const char *stream = "ryw";
	stream_create(stream);
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	sc_store *s[2];
	sc_cluster_follower *f[2];
	sc_reader *rd[2];
	sc_error err;
	for (int i = 0; i < 2; i++) {
		char db[512], name[16];
		snprintf(name, sizeof name, "ryw%d", i);
		path_in_root(db, sizeof db, name);
		s[i] = open_store(db, true);
		sc_cluster_follower_options fo = {.cluster = co};
		assert_int_equal(
		    sc_cluster_follower_start(s[i], &fo, &f[i], &err), 0);
		assert_int_equal(
		    sc_reader_open(sc_store_cache(s[i]), &rd[i], &err), 0);
	}
	sc_cluster_publisher *pub;
	assert_int_equal(sc_cluster_publisher_open(&co, &pub, &err), 0);
	for (int round = 0; round < 50; round++) {
		char id[32];
		int n = snprintf(id, sizeof id, "ryw-%d", round);
		sc_attr a = {.name = {"round", 5},
			     .value = {.type = SC_VALUE_INT, .u.i = round}};
		sc_event ev = {.entity = {id, (size_t)n},
			       .type = SC_EVENT_SET,
			       .attrs = &a,
			       .nattrs = 1,
			       .partition = parts[round % NPARTS]};
		sc_cluster_publish_result res;
		assert_int_equal(
		    sc_cluster_publish(pub, &ev, 1, NULL, &res, &err), 0);
		/* Read on the node the round names, then on the other. */
		for (int k = 0; k < 2; k++) {
			int i = (round + k) % 2;
			int rc = sc_cluster_follower_wait(f[i], res.sequence,
							  30000, &err);
			if (rc)
				fprintf(stderr, "wait: %s\n", err.message);
			assert_int_equal(rc, 0);
			assert_true(sc_cluster_follower_sequence(f[i]) >=
				    res.sequence);
			/* The entity (partition, id) the event names. */
			const sc_entity *e = sc_reader_get_in(
			    rd[i], ev.partition, (sc_str){id, (size_t)n});
			assert_non_null(e);
			sc_value v;
			assert_true(
			    sc_entity_find(e, (sc_str){"round", 5}, &v));
			assert_int_equal(v.u.i, round);
		}
	}
	/* A sequence never published: the wait times out. */
	uint64_t beyond = sc_cluster_follower_sequence(f[0]) + 1000;
	assert_int_equal(sc_cluster_follower_wait(f[0], beyond, 50, &err),
			 ETIMEDOUT);
	sc_cluster_publisher_close(pub);
	for (int i = 0; i < 2; i++) {
		sc_reader_close(rd[i]);
		sc_cluster_follower_stop(f[i]);
		sc_store_close(s[i]);
	}
}

/* ---- errors ---------------------------------------------------------------
 */

static void test_errors(void **state)
{
	(void)state;
	const char *stream = "errs";
	stream_create(stream);
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	sc_cluster_publisher *pub;
	sc_error err;
	assert_int_equal(sc_cluster_publisher_open(&co, &pub, &err), 0);
	gen_event g[2];
	sc_event evs[2];
	gen(seed, 0, 1, &g[0]);
	gen(seed, 1, 2, &g[1]);
	evs[0] = g[0].t.ev;
	evs[1] = g[1].t.ev;
	assert_int_equal(sc_cluster_publish(pub, evs, 0, NULL, NULL, &err),
			 SC_EINVAL);
	assert_int_equal(sc_cluster_publish(pub, evs, 2, NULL, NULL, &err),
			 SC_EINVAL);
	sc_cluster_publish_options bad = {.msg_id = "no spaces"};
	assert_int_equal(sc_cluster_publish(pub, evs, 1, &bad, NULL, &err),
			 SC_EINVAL);

	/* Over the server's maximum message size. */
	size_t max = sc_cluster_publisher_max_batch_bytes(pub);
	assert_true(max > 0);
	char *big = malloc(max);
	assert_non_null(big);
	memset(big, 'b', max);
	sc_attr a = {.name = {"blob", 4},
		     .value = {.type = SC_VALUE_BYTES, .u.s = {big, max}}};
	sc_event ev = {.entity = {"big", 3},
		       .type = SC_EVENT_SET,
		       .attrs = &a,
		       .nattrs = 1};
	assert_int_equal(sc_cluster_publish(pub, &ev, 1, NULL, NULL, &err),
			 SC_ETOOBIG);
	assert_non_null(strstr(err.message, "maximum message size"));
	free(big);

	/* Expecting an empty partition. */
	sc_cluster_publish_options po = {.expect = true};
	sc_cluster_publish_result res;
	assert_int_equal(sc_cluster_publish(pub, evs, 1, &po, &res, &err), 0);
	assert_int_equal(sc_cluster_publish(pub, evs, 1, &po, &res, &err),
			 SC_ECONFLICT);
	assert_string_equal(
	    sc_strerror(SC_ECONFLICT),
	    "conflict: the expected stream sequence did not match");
	sc_cluster_publisher_close(pub);

	/* A store that follows one stream refuses another. */
	char db[512];
	path_in_root(db, sizeof db, "errs-node");
	sc_store *s = open_store(db, true);
	sc_cluster_follower_options fo = {.cluster = co};
	sc_cluster_follower *f;
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err), 0);
	assert_int_equal(sc_cluster_follower_wait(f, res.sequence, 30000, &err),
			 0);
	sc_cluster_follower_stop(f);
	fo.cluster.stream = "dup";
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err),
			 SC_EINVAL);
	/* ... and another partition set of the same stream. */
	fo.cluster.stream = stream;
	fo.partitions = parts;
	fo.npartitions = 1;
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err),
			 SC_EINVAL);
	sc_store_close(s);
}

/* A stream that keeps 3 messages: a new node needs sequence 1. */
static void test_behind(void **state)
{
	(void)state;
	const char *stream = "short";
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	natsConnection *nc;
	jsCtx *js;
	sc_error err;
	assert_int_equal(sc_cluster_connect(&co, &nc, &js, &err), 0);
	const char *subjects[] = {"short.>"};
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	cfg.Name = stream;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.MaxMsgs = 3;
	cfg.Replicas = 3;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	assert_int_equal(js_AddStream(&si, js, &cfg, NULL, &jerr), NATS_OK);
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);

	sc_cluster_publisher *pub;
	assert_int_equal(sc_cluster_publisher_open(&co, &pub, &err), 0);
	gen_event g;
	for (uint64_t i = 0; i < 6; i++) {
		gen(seed, i, 0, &g);
		assert_int_equal(
		    sc_cluster_publish(pub, &g.t.ev, 1, NULL, NULL, &err), 0);
	}
	sc_cluster_publisher_close(pub);
	char db[512];
	path_in_root(db, sizeof db, "behind-node");
	sc_store *s = open_store(db, true);
	sc_cluster_follower_options fo = {.cluster = co};
	sc_cluster_follower *f = NULL;
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err),
			 SC_EBEHIND);
	assert_non_null(strstr(err.message, "begins at 4"));
	assert_int_equal(sc_store_last_position(s), 0);
	sc_store_close(s);
}

/* A message deleted from the middle of the stream: the node applies what
 * precedes it, then stops with SC_EBEHIND at the gap; nothing after the gap
 * is applied. */
static void test_gap(void **state)
{
	(void)state;
	const char *stream = "gap";
	stream_create(stream);
	sc_cluster_options co = {.url = nats_url, .stream = stream};
	sc_cluster_publisher *pub;
	sc_error err;
	assert_int_equal(sc_cluster_publisher_open(&co, &pub, &err), 0);
	gen_event g;
	for (uint64_t i = 0; i < 3; i++) {
		gen(seed, i, 1, &g);
		assert_int_equal(
		    sc_cluster_publish(pub, &g.t.ev, 1, NULL, NULL, &err), 0);
	}
	sc_cluster_publisher_close(pub);
	natsConnection *nc;
	jsCtx *js;
	assert_int_equal(sc_cluster_connect(&co, &nc, &js, &err), 0);
	jsErrCode jerr = 0;
	assert_int_equal(js_DeleteMsg(js, stream, 2, NULL, &jerr), NATS_OK);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);

	char db[512];
	path_in_root(db, sizeof db, "gap-node");
	sc_store *s = open_store(db, true);
	sc_cluster_follower_options fo = {.cluster = co};
	sc_cluster_follower *f;
	assert_int_equal(sc_cluster_follower_start(s, &fo, &f, &err), 0);
	assert_int_equal(sc_cluster_follower_wait(f, 3, 30000, &err),
			 SC_EBEHIND);
	assert_non_null(strstr(err.message, "gap"));
	assert_int_equal(sc_cluster_follower_status(f, NULL), SC_EBEHIND);
	assert_int_equal(sc_cluster_follower_sequence(f), 1);
	assert_int_equal(sc_store_last_position(s), 1);
	sc_cluster_follower_stop(f);
	sc_store_close(s);
}

/* ---- the commands -------------------------------------------------------- */

static char *file_read(const char *path)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static char buf[8192];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* Each event of one log equals the other log's at its position. */
typedef struct log_pair {
	sc_store *other;
	const sc_event *want;
	bool equal;
	uint64_t n;
} log_pair;

static int other_event(void *ctx, const sc_event *ev)
{
	log_pair *lp = ctx;
	lp->equal = tk_event_equal(lp->want, ev);
	return 0;
}

static int same_event(void *ctx, const sc_event *ev)
{
	log_pair *lp = ctx;
	lp->want = ev;
	lp->equal = false;
	sc_error err;
	if (sc_store_events(lp->other, ev->position, 1, other_event, lp,
			    &err) ||
	    !lp->equal) {
		fprintf(stderr, "position %llu differs\n",
			(unsigned long long)ev->position);
		return 1;
	}
	lp->n++;
	return 0;
}

/* `statecache publish` of `statecache gen` lines, a node with `follow
 * --until`: the node holds exactly what `ingest` of the same lines holds;
 * `stats` names the stream sequence; a malformed line stops publish with
 * exit 2 after the lines before it were published. */
static void test_commands(void **state)
{
	(void)state;
	const char *stream = "cli";
	char lines[512], out[512], db[512], ref[512];
	path_in_root(lines, sizeof lines, "cli.jsonl");
	path_in_root(out, sizeof out, "cli.out");
	path_in_root(db, sizeof db, "cli-node");
	path_in_root(ref, sizeof ref, "cli-ref");
	{
		char *argv[] = {(char *)statecache, "gen", "--count", "3000",
				NULL};
		assert_int_equal(reap(spawn_io(argv, NULL, lines)), 0);
	}
	{
		char *argv[] = {(char *)statecache,
				"stream-create",
				"--nats",
				(char *)nats_url,
				"--stream",
				(char *)stream,
				"--replicas",
				"3",
				NULL};
		assert_int_equal(reap(spawn(argv)), 0);
	}
	{
		char *argv[] = {(char *)statecache,
				"publish",
				"--nats",
				(char *)nats_url,
				"--stream",
				(char *)stream,
				"--batch",
				"7",
				lines,
				NULL};
		assert_int_equal(reap(spawn_io(argv, NULL, out)), 0);
	}
	unsigned long long events, msgs, first, last;
	assert_int_equal(sscanf(file_read(out),
				"{\"events\":%llu,\"messages\":%llu,"
				"\"first_sequence\":%llu,\"last_sequence\":"
				"%llu}",
				&events, &msgs, &first, &last),
			 4);
	assert_int_equal(events, 3000);
	assert_int_equal(first, 1);
	assert_int_equal(last, msgs);
	assert_true(msgs >= 3000 / 7);
	char last_s[32];
	snprintf(last_s, sizeof last_s, "%llu", last);
	{
		char *argv[] = {(char *)statecache,
				"--db",
				db,
				"follow",
				"--nats",
				(char *)nats_url,
				"--stream",
				(char *)stream,
				"--until",
				last_s,
				NULL};
		assert_int_equal(reap(spawn(argv)), 0);
		char *ingest[] = {(char *)statecache, "--db", ref,
				  "ingest",	      lines,  NULL};
		assert_int_equal(reap(spawn(ingest)), 0);
		char *stats[] = {(char *)statecache, "--db", db, "stats", NULL};
		assert_int_equal(reap(spawn_io(stats, NULL, out)), 0);
		char want[64];
		snprintf(want, sizeof want, "\"stream_sequence\":%llu,", last);
		assert_non_null(strstr(file_read(out), want));
		assert_non_null(strstr(file_read(out), "\"stream_lag\":0,"));
	}
	/* The node's log and state are ingest's. */
	sc_store *a = open_store(db, false), *b = open_store(ref, false);
	assert_int_equal(sc_store_last_position(a), 3000);
	assert_int_equal(sc_store_last_position(b), 3000);
	sc_error err;
	log_pair lp = {.other = b};
	assert_int_equal(sc_store_events(a, 1, 0, same_event, &lp, &err), 0);
	assert_int_equal(lp.n, 3000);
	size_t la, lb;
	assert_int_equal(tk_cache_hash(sc_store_cache(a), &la),
			 tk_cache_hash(sc_store_cache(b), &lb));
	assert_int_equal(la, lb);
	sc_store_close(a);
	sc_store_close(b);

	/* A malformed fourth line: three events published, exit 2. */
	FILE *f = fopen(lines, "w");
	assert_non_null(f);
	fputs("{\"entity\":\"m1\",\"type\":\"set\",\"attrs\":{\"a\":1}}\n"
	      "{\"entity\":\"m2\",\"type\":\"set\",\"attrs\":{\"a\":2}}\n"
	      "{\"entity\":\"m3\",\"type\":\"set\",\"attrs\":{\"a\":3}}\n"
	      "{\"entity\":\"m4\",\"type\":\"bogus\"}\n",
	      f);
	fclose(f);
	{
		char *argv[] = {(char *)statecache,
				"publish",
				"--nats",
				(char *)nats_url,
				"--stream",
				(char *)stream,
				lines,
				NULL};
		assert_int_equal(reap(spawn_io(argv, NULL, out)), 2);
	}
	assert_int_equal(sscanf(file_read(out),
				"{\"events\":%llu,\"messages\":%llu,"
				"\"first_sequence\":%llu,\"last_sequence\":"
				"%llu}",
				&events, &msgs, &first, &last),
			 4);
	assert_int_equal(events, 3);
	assert_int_equal(stream_last_seq(stream), last);
}

/* ---- without servers: tokens and the Batch message ---------------------- */

static void test_tokens(void **state)
{
	(void)state;
	char t[SC_CLUSTER_TOKEN_MAX];
	sc_error err;
	assert_int_equal(sc_cluster_partition_token(parts[0], t, &err), 0);
	assert_string_equal(t, "x");
	assert_int_equal(sc_cluster_partition_token(parts[1], t, &err), 0);
	assert_string_equal(t, "x6575");
	char p32[32];
	memset(p32, 0xff, sizeof p32);
	assert_int_equal(
	    sc_cluster_partition_token((sc_str){p32, sizeof p32}, t, &err), 0);
	assert_int_equal(strlen(t), 65);
	assert_int_equal(t[0], 'x');
	assert_int_equal(sc_cluster_partition_token(parts[4], t, &err), 0);
	assert_int_equal(strlen(t), 33);
	assert_int_equal(t[0], 'h');
	/* One byte less is another token. */
	char t2[SC_CLUSTER_TOKEN_MAX];
	assert_int_equal(
	    sc_cluster_partition_token(
		(sc_str){long_part, sizeof long_part - 1}, t2, &err),
	    0);
	assert_string_not_equal(t, t2);
	static char huge[SC_EVENT_FIELD_MAX + 1];
	assert_int_equal(
	    sc_cluster_partition_token((sc_str){huge, sizeof huge}, t, &err),
	    SC_EINVAL);
}

/* What the batch codec writes is a statecache.v1.Batch to protobuf-c, and
 * the decoder refuses what is not one. */
static void test_batch_wire(void **state)
{
	(void)state;
	enum { N = 40 };
	gen_event *g = calloc(N, sizeof *g);
	assert_non_null(g);
	sc_event evs[N];
	for (int i = 0; i < N; i++) {
		gen(seed, (uint64_t)i, 3, &g[i]);
		g[i].t.ev.time = 1 + i;
		evs[i] = g[i].t.ev;
	}
	size_t size = sc_cluster_batch_size(evs, N);
	uint8_t *buf = malloc(size);
	assert_non_null(buf);
	sc_cluster_batch_write(evs, N, buf);
	Statecache__V1__Batch *pb =
	    statecache__v1__batch__unpack(NULL, size, buf);
	assert_non_null(pb);
	assert_int_equal(pb->n_events, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(pb->events[i]->entity.len, evs[i].entity.len);
		assert_memory_equal(pb->events[i]->entity.data,
				    evs[i].entity.ptr, evs[i].entity.len);
		assert_int_equal(pb->events[i]->n_attrs, evs[i].nattrs);
	}
	statecache__v1__batch__free_unpacked(pb, NULL);

	sc_cluster_batch b;
	sc_error err;
	assert_int_equal(sc_cluster_batch_decode(buf, size, &b, &err), 0);
	assert_int_equal(b.n, N);
	for (int i = 0; i < N; i++) {
		sc_event want = evs[i];
		want.position = 0; /* a batch carries none */
		assert_true(tk_event_equal(&want, &b.events[i]));
	}
	sc_cluster_batch_free(&b);
	/* Every cut of the bytes: a whole prefix of events, or refused. */
	for (size_t cut = 0; cut < size; cut++) {
		int rc = sc_cluster_batch_decode(buf, cut, &b, &err);
		if (rc == 0) {
			assert_true(b.n < N);
			sc_cluster_batch_free(&b);
		} else {
			assert_int_equal(rc, SC_ECORRUPT);
		}
	}
	buf[0] = 0x12; /* field 2: not a Batch field */
	assert_int_equal(sc_cluster_batch_decode(buf, size, &b, &err),
			 SC_ECORRUPT);
	free(buf);
	free(g);
}

/* ---- main ------------------------------------------------------------------
 */

/* --free-ports N: print N TCP ports free on 127.0.0.1 now. */
static int free_ports(int n)
{
	int fds[16];
	if (n < 1 || n > 16)
		return 2;
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr =
					    htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof a;
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[i] < 0 || bind(fds[i], (void *)&a, sizeof a) ||
		    getsockname(fds[i], (void *)&a, &len)) {
			perror("test_cluster: free port");
			return 1;
		}
		printf("%s%u", i ? " " : "", ntohs(a.sin_port));
	}
	printf("\n");
	for (int i = 0; i < n; i++)
		close(fds[i]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--free-ports"))
		return free_ports(atoi(argv[2]));
	nats_url = getenv("SC_NATS_URL");
	cluster_dir = getenv("SC_CLUSTER_DIR");
	statecache = getenv("STATECACHE");
	if (!nats_url || !cluster_dir || !statecache) {
		fprintf(stderr, "test_cluster: run it through "
				"tests/test_cluster.sh (it starts the "
				"servers)\n");
		return 1;
	}
	/* Every wait below is on a condition; this bounds them all. */
	signal(SIGALRM, on_alarm);
	alarm(test_short() ? 600 : 1800);
	seed = tk_seed("test_cluster");
	parts_init();
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tokens),
	    cmocka_unit_test(test_batch_wire),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_duplicates),
	    cmocka_unit_test(test_read_your_writes),
	    cmocka_unit_test(test_behind),
	    cmocka_unit_test(test_gap),
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_run),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	children_kill();
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "test_cluster: cannot remove %s\n", root);
	nats_Close();
	return rc;
}
