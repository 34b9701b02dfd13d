/*
 * Query benchmarks (statecache/query.h). One JSON object per line on
 * stdout, each figure next to its peer from the same run:
 *
 *   events_by_tag   events/s delivered (decoded) by finite tag queries
 *                   reading every tag of a log of N events (16 tags, each
 *                   event carries one, through tag_index); peer: SQLite
 *                   (WAL) with the same encoded events in a table indexed
 *                   on (tag, position), read by SELECT ... WHERE tag = ?
 *                   ORDER BY position, each body decoded the same way
 *                   (the query's decoder, into a reused arena), both
 *                   sides' checksums of what they read compared. Two
 *                   lines: the peer with SQLite's defaults
 *                   ("sqlite_index", the goal's), and the same file read
 *                   through a connection with mmap_size set
 *                   ("sqlite_index_mmap"). Best of 7 alternating reads
 *                   of every tag each.
 *   live_latency    where "process": the time from sc_store_append
 *                   returning to a live query's consumer thread, idle in
 *                   sc_query_next, getting the event (p50, p99; a consumer
 *                   that gets it before append returns counts 0, and
 *                   consumer_first is the share of those), and from the
 *                   call of sc_store_append (append_call_*: the commit
 *                   itself included; durability nosync). Where
 *                   "other_process": the same delay to a live query of a
 *                   second process that opened the store read-only and
 *                   polls every poll_ms (1 ms), each append a random
 *                   0..poll_ms after the reader got the one before; both
 *                   lines in the same run.
 *   append_indexed  events/s of batches of 100 at durability full with 2
 *                   tags and a partition on every event (tag_index and
 *                   partition_index rows in each append); peer: the same
 *                   events without tags and partition. Best of 3
 *                   alternating runs each.
 *
 * SC_BENCH_EVENTS overrides N (default 400,000); SC_BENCH_ONLY=NAME runs
 * one of them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench/bench.h"
#include "common/internal.h"
#include "statecache/query.h"
#include "statecache/store.h"
#include "store/event_codec.h"

#define NTAGS 16

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bench query: %s: %s\n", what, msg);
	exit(1);
}

static void rm_rf(const char *path)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		die("rm", path);
}

/* ---- events -------------------------------------------------------------- */

typedef struct gen_event {
	bench_gen_event b;
	sc_str tags[2];
	char tag[16], kind[16], part[16];
} gen_event;

/* Event i: a `set` of 5 attributes; with `tagged`, tags "tag-NN" (i % 16)
 * and "kind-N" (i % 4) and partition "part-N" (i % 8). */
static void gen(uint64_t i, bool tagged, gen_event *g)
{
	bench_gen_set(i, 100000, &g->b);
	if (!tagged)
		return;
	int tn = snprintf(g->tag, sizeof g->tag, "tag-%02d", (int)(i % NTAGS));
	int kn = snprintf(g->kind, sizeof g->kind, "kind-%d", (int)(i % 4));
	int pn = snprintf(g->part, sizeof g->part, "part-%d", (int)(i % 8));
	g->tags[0] = (sc_str){g->tag, (size_t)tn};
	g->tags[1] = (sc_str){g->kind, (size_t)kn};
	g->b.ev.tags = g->tags;
	g->b.ev.ntags = 2;
	g->b.ev.partition = (sc_str){g->part, (size_t)pn};
}

/* Append events [first, first+n) in batches of b; seconds. */
static double append_events(sc_store *s, uint64_t first, uint64_t n, uint64_t b,
			    bool tagged)
{
	gen_event *g = malloc(b * sizeof *g);
	sc_event *evs = malloc(b * sizeof *evs);
	if (!g || !evs)
		die("malloc", "events");
	double t0 = bench_now();
	for (uint64_t i = 0; i < n; i += b) {
		uint64_t m = n - i < b ? n - i : b;
		for (uint64_t k = 0; k < m; k++) {
			gen(first + i + k, tagged, &g[k]);
			evs[k] = g[k].b.ev;
		}
		sc_error err;
		if (sc_store_append(s, evs, m, NULL, &err))
			die("append", err.message);
	}
	double t = bench_now() - t0;
	free(g);
	free(evs);
	return t;
}

/* ---- events_by_tag ------------------------------------------------------- */

/* What the benchmark reads of an event, on both sides: a checksum over
 * the fields of every event read, which both sides must agree on (the
 * same events, decoded alike). */
static uint64_t event_sum(const sc_event *ev)
{
	return ev->position * 31 + (uint64_t)ev->attrs[0].value.u.i +
	       ev->entity.len * 7 + ev->nattrs * 5 + ev->ntags * 3 +
	       ev->partition.len;
}

/* Read every event of every tag through finite queries; events read,
 * their event_sum in *sum. */
static uint64_t read_tags(sc_store *s, uint64_t *sum_out)
{
	uint64_t got = 0, sum = 0;
	for (int t = 0; t < NTAGS; t++) {
		char tag[16];
		int tn = snprintf(tag, sizeof tag, "tag-%02d", t);
		sc_query_spec spec = {.kind = SC_QUERY_TAG,
				      .key = {tag, (size_t)tn}};
		sc_query *q;
		sc_error err;
		if (sc_query_open(s, &spec, &q, &err))
			die("query", err.message);
		for (;;) {
			const sc_event *evs[256];
			size_t n;
			if (sc_query_next_batch(q, 0, evs, 256, &n, &err))
				die("query", err.message);
			if (!n)
				break;
			for (size_t i = 0; i < n; i++)
				sum += event_sum(evs[i]);
			got += n;
		}
		sc_query_close(q);
	}
	if (sum == 0)
		die("query", "no events");
	*sum_out = sum;
	return got;
}

static void sql_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		die(sql, msg ? msg : "?");
}

static sqlite3 *sql_build(const char *path, uint64_t n)
{
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("sqlite3_open", sqlite3_errmsg(db));
	sql_exec(db, "PRAGMA journal_mode=WAL");
	sql_exec(db, "PRAGMA synchronous=OFF");
	sql_exec(db, "CREATE TABLE events (pos INTEGER PRIMARY KEY, tag TEXT "
		     "NOT NULL, body BLOB NOT NULL)");
	sql_exec(db, "CREATE INDEX events_tag ON events(tag, pos)");
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "INSERT INTO events VALUES (?, ?, ?)", -1,
			       &st, NULL) != SQLITE_OK)
		die("prepare", sqlite3_errmsg(db));
	sql_exec(db, "BEGIN");
	for (uint64_t i = 1; i <= n; i++) {
		gen_event g;
		gen(i, true, &g);
		uint8_t *buf;
		size_t len;
		if (sc_event_encode(&g.b.ev, &buf, &len, NULL))
			die("encode", "event");
		sqlite3_bind_int64(st, 1, (sqlite3_int64)i);
		sqlite3_bind_text(st, 2, g.tag, (int)g.tags[0].len,
				  SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, buf, (int)len, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(db));
		sqlite3_reset(st);
		sc_free(buf);
	}
	sql_exec(db, "COMMIT");
	sqlite3_finalize(st);
	return db;
}

static uint64_t sql_read_tags(sqlite3 *db, uint64_t *sum_out)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db,
			       "SELECT pos, body FROM events WHERE tag = ? "
			       "AND pos >= 1 ORDER BY pos",
			       -1, &st, NULL) != SQLITE_OK)
		die("prepare", sqlite3_errmsg(db));
	uint64_t got = 0, sum = 0;
	/* The decoder the query uses, into memory reused as the query
	 * reuses it (one event at a time here). */
	sc_decode_arena arena = {0};
	for (int t = 0; t < NTAGS; t++) {
		char tag[16];
		int tn = snprintf(tag, sizeof tag, "tag-%02d", t);
		sqlite3_bind_text(st, 1, tag, tn, SQLITE_STATIC);
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			sc_event ev;
			sc_decode_arena_reset(&arena);
			if (sc_event_decode_arena(
				sqlite3_column_blob(st, 1),
				(size_t)sqlite3_column_bytes(st, 1),
				(uint64_t)sqlite3_column_int64(st, 0), &arena,
				&ev, NULL))
				die("decode", "sqlite row");
			sum += event_sum(&ev);
			got++;
		}
		if (rc != SQLITE_DONE)
			die("select", sqlite3_errmsg(db));
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	sc_decode_arena_free(&arena);
	if (sum == 0)
		die("select", "no rows");
	*sum_out = sum;
	return got;
}

static void bench_events_by_tag(const char *root, uint64_t n)
{
	char dir[512], sq[512];
	snprintf(dir, sizeof dir, "%s/bytag", root);
	snprintf(sq, sizeof sq, "%s/bytag.sqlite", root);
	sc_store *s = bench_store_open(dir, SC_DURABILITY_NOSYNC);
	append_events(s, 1, n, 1000, true);
	sqlite3 *db = sql_build(sq, n);
	/* The same file read through a second connection that maps it
	 * (SQLite reads pages with pread by default; LMDB maps its file). */
	sqlite3 *mdb;
	if (sqlite3_open(sq, &mdb) != SQLITE_OK)
		die("sqlite3_open", sqlite3_errmsg(mdb));
	sql_exec(mdb, "PRAGMA mmap_size=4294967296");
	/* Warm all, then time the best of 7 alternating reads of each. */
	uint64_t sum, ssum, msum;
	read_tags(s, &sum);
	sql_read_tags(db, &ssum);
	sql_read_tags(mdb, &msum);
	double best = 0, sbest = 0, mbest = 0;
	uint64_t got = 0, sgot = 0, mgot = 0;
	for (int r = 0; r < 7; r++) {
		double t0 = bench_now();
		got = read_tags(s, &sum);
		double x = (double)got / (bench_now() - t0);
		if (x > best)
			best = x;
		t0 = bench_now();
		sgot = sql_read_tags(db, &ssum);
		x = (double)sgot / (bench_now() - t0);
		if (x > sbest)
			sbest = x;
		t0 = bench_now();
		mgot = sql_read_tags(mdb, &msum);
		x = (double)mgot / (bench_now() - t0);
		if (x > mbest)
			mbest = x;
	}
	if (got != n || sgot != n || mgot != n)
		die("events_by_tag", "a query missed events");
	if (sum != ssum || sum != msum)
		die("events_by_tag",
		    "the query and the peer read other events");
	printf("{\"name\":\"events_by_tag\",\"events\":%llu,\"events_per_s\":"
	       "%.0f,\"peer\":\"sqlite_index\",\"peer_events_per_s\":%.0f,"
	       "\"ratio\":%.2f}\n",
	       (unsigned long long)n, best, sbest, best / sbest);
	printf("{\"name\":\"events_by_tag\",\"events\":%llu,\"events_per_s\":"
	       "%.0f,\"peer\":\"sqlite_index_mmap\",\"peer_events_per_s\":%.0f,"
	       "\"ratio\":%.2f}\n",
	       (unsigned long long)n, best, mbest, best / mbest);
	fflush(stdout);
	sqlite3_close(mdb);
	sqlite3_close(db);
	sc_store_close(s);
}

/* ---- live_latency -------------------------------------------------------- */

typedef struct live {
	sc_query *q;
	uint64_t n;
	int64_t *t_got;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t delivered; /* under mu */
} live;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *live_consume(void *arg)
{
	live *l = arg;
	for (uint64_t i = 1; i <= l->n; i++) {
		const sc_event *ev;
		sc_error err;
		if (sc_query_next(l->q, -1, &ev, &err))
			die("live query", err.message);
		l->t_got[ev->position] = now_ns();
		pthread_mutex_lock(&l->mu);
		l->delivered = ev->position;
		pthread_cond_signal(&l->cv);
		pthread_mutex_unlock(&l->mu);
	}
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void bench_live_latency(const char *root, uint64_t n)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/live", root);
	sc_store *s = bench_store_open(dir, SC_DURABILITY_NOSYNC);
	live l = {.n = n};
	l.t_got = calloc(n + 1, sizeof *l.t_got);
	int64_t *t_ret = calloc(n + 1, sizeof *t_ret);
	int64_t *t_call = calloc(n + 1, sizeof *t_call);
	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.cv, NULL);
	sc_query_spec spec = {.live = true, .poll_ms = -1};
	sc_error err;
	if (sc_query_open(s, &spec, &l.q, &err))
		die("query", err.message);
	pthread_t th;
	if (pthread_create(&th, NULL, live_consume, &l))
		die("pthread_create", strerror(errno));
	for (uint64_t i = 1; i <= n; i++) {
		gen_event g;
		gen(i, true, &g);
		t_call[i] = now_ns();
		if (sc_store_append(s, &g.b.ev, 1, NULL, &err))
			die("append", err.message);
		t_ret[i] = now_ns();
		/* The next commit only once the consumer waits again. */
		pthread_mutex_lock(&l.mu);
		while (l.delivered < i)
			pthread_cond_wait(&l.cv, &l.mu);
		pthread_mutex_unlock(&l.mu);
	}
	pthread_join(th, NULL);
	int64_t *lat = malloc(n * sizeof *lat),
		*call = malloc(n * sizeof *call);
	uint64_t first = 0;
	for (uint64_t i = 1; i <= n; i++) {
		int64_t d = l.t_got[i] - t_ret[i];
		lat[i - 1] = d > 0 ? d : 0;
		first += d < 0;
		call[i - 1] = l.t_got[i] - t_call[i];
	}
	qsort(lat, n, sizeof *lat, cmp_i64);
	qsort(call, n, sizeof *call, cmp_i64);
	printf("{\"name\":\"live_latency\",\"where\":\"process\",\"poll_ms\":0,"
	       "\"events\":%llu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"consumer_first\":%.2f,\"append_call_p50_us\":%.1f,"
	       "\"append_call_p99_us\":%.1f}\n",
	       (unsigned long long)n, (double)lat[n / 2] / 1e3,
	       (double)lat[n * 99 / 100] / 1e3, (double)first / (double)n,
	       (double)call[n / 2] / 1e3, (double)call[n * 99 / 100] / 1e3);
	fflush(stdout);
	free(lat);
	free(call);
	free(t_call);
	free(t_ret);
	free(l.t_got);
	sc_query_close(l.q);
	sc_store_close(s);
}

/* ---- live_latency from another process ---------------------------------- */

/* Shared between the writer and the reader process (MAP_SHARED). */
typedef struct remote {
	pthread_mutex_t mu; /* process-shared, as cv */
	pthread_cond_t cv;
	uint64_t stage;	    /* 1: the store exists; 2: the reader waits */
	uint64_t delivered; /* the last position the reader got */
	int64_t t_got[];    /* by position */
} remote;

/* Wait under r->mu until *v >= want; exit after 30 s (a dead peer). */
static void remote_wait(remote *r, const volatile uint64_t *v, uint64_t want)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 30;
	pthread_mutex_lock(&r->mu);
	while (*v < want)
		if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
			die("live_latency", "the other process stopped");
	pthread_mutex_unlock(&r->mu);
}

static void remote_set(remote *r, volatile uint64_t *v, uint64_t x)
{
	pthread_mutex_lock(&r->mu);
	*v = x;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* The reader process: open the store read-only (no follow thread: the
 * query polls on its own), follow a live query from position 2 and stamp
 * each event's arrival. */
static void remote_reader(remote *r, const char *dir, uint64_t n, int poll_ms)
{
	remote_wait(r, &r->stage, 1);
	sc_store_options o = {0};
	o.read_only = true;
	o.follow_manual = true;
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		die("reader open", err.message);
	sc_query_spec spec = {.from = 2, .live = true, .poll_ms = poll_ms};
	sc_query *q;
	if (sc_query_open(s, &spec, &q, &err))
		die("reader query", err.message);
	remote_set(r, &r->stage, 2);
	for (uint64_t i = 2; i <= n + 1; i++) {
		const sc_event *ev;
		if (sc_query_next(q, 30000, &ev, &err))
			die("reader live query", err.message);
		r->t_got[ev->position] = now_ns();
		remote_set(r, &r->delivered, ev->position);
	}
	sc_query_close(q);
	sc_store_close(s);
}

/*
 * The delay from sc_store_append returning in this process to a live
 * query in another process, which opened the store read-only and polls
 * every poll_ms, holding the event. Each append waits for the reader to
 * have the one before, then a random 0..poll_ms, so appends land anywhere
 * in the reader's poll interval.
 */
static void bench_live_latency_process(const char *root, uint64_t n,
				       int poll_ms)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/live_remote", root);
	size_t size = sizeof(remote) + (n + 2) * sizeof(int64_t);
	remote *r = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		die("mmap", strerror(errno));
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&r->mu, &ma);
	pthread_cond_init(&r->cv, &ca);
	fflush(stdout);
	/* Fork before this process opens the store: the reader shares no
	 * LMDB environment with it. */
	pid_t pid = fork();
	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		remote_reader(r, dir, n, poll_ms);
		_exit(0);
	}
	sc_store *s = bench_store_open(dir, SC_DURABILITY_NOSYNC);
	append_events(s, 1, 1, 1, true);
	remote_set(r, &r->stage, 1);
	remote_wait(r, &r->stage, 2);
	int64_t *t_ret = calloc(n + 2, sizeof *t_ret);
	int64_t *lat = malloc(n * sizeof *lat);
	if (!t_ret || !lat)
		die("malloc", "latencies");
	uint64_t rs = 0x5eed;
	sc_error err;
	for (uint64_t i = 2; i <= n + 1; i++) {
		long us =
		    (long)(bench_rnd_next(&rs) % (uint64_t)(poll_ms * 1000));
		struct timespec d = {0, us * 1000};
		nanosleep(&d, NULL);
		gen_event g;
		gen(i, true, &g);
		if (sc_store_append(s, &g.b.ev, 1, NULL, &err))
			die("append", err.message);
		t_ret[i] = now_ns();
		remote_wait(r, &r->delivered, i);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0)
		die("live_latency", "the reader process failed");
	uint64_t first = 0;
	for (uint64_t i = 2; i <= n + 1; i++) {
		int64_t d = r->t_got[i] - t_ret[i];
		lat[i - 2] = d > 0 ? d : 0;
		first += d < 0;
	}
	qsort(lat, n, sizeof *lat, cmp_i64);
	printf("{\"name\":\"live_latency\",\"where\":\"other_process\","
	       "\"poll_ms\":%d,\"events\":%llu,\"p50_us\":%.1f,"
	       "\"p99_us\":%.1f,\"max_us\":%.1f,\"consumer_first\":%.2f}\n",
	       poll_ms, (unsigned long long)n, (double)lat[n / 2] / 1e3,
	       (double)lat[n * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3,
	       (double)first / (double)n);
	fflush(stdout);
	free(lat);
	free(t_ret);
	sc_store_close(s);
	munmap(r, size);
}

/* ---- append_indexed ------------------------------------------------------ */

static void bench_append_indexed(const char *root, uint64_t n)
{
	double best[2] = {0, 0};
	for (int r = 0; r < 3; r++) {
		for (int tagged = 0; tagged < 2; tagged++) {
			char dir[512];
			snprintf(dir, sizeof dir, "%s/append%d-%d", root,
				 tagged, r);
			sc_store *s = bench_store_open(dir, SC_DURABILITY_FULL);
			double t = append_events(s, 1, n, 100, tagged);
			double x = (double)n / t;
			if (x > best[tagged])
				best[tagged] = x;
			sc_store_close(s);
			rm_rf(dir);
		}
	}
	printf("{\"name\":\"append_indexed\",\"batch\":100,\"durability\":"
	       "\"full\",\"events\":%llu,\"events_per_s\":%.0f,\"peer\":"
	       "\"append_plain\",\"peer_events_per_s\":%.0f,\"ratio\":%.2f}\n",
	       (unsigned long long)n, best[1], best[0], best[1] / best[0]);
	fflush(stdout);
}

int main(void)
{
	uint64_t n = 400000;
	const char *e = getenv("SC_BENCH_EVENTS");
	if (e && atoll(e) > 0)
		n = (uint64_t)atoll(e);
	char tmpl[] = "/tmp/sc_bench_query.XXXXXX";
	char *root = mkdtemp(tmpl);
	if (!root)
		die("mkdtemp", strerror(errno));
	const char *only = getenv("SC_BENCH_ONLY");
	if (!only || !strcmp(only, "events_by_tag"))
		bench_events_by_tag(root, n);
	if (!only || !strcmp(only, "live_latency")) {
		bench_live_latency(root, 5000);
		bench_live_latency_process(root, 2000, 1);
	}
	if (!only || !strcmp(only, "append_indexed"))
		bench_append_indexed(root, 20000);
	rm_rf(root);
	return 0;
}
