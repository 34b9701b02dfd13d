/*
 * Store benchmarks. One JSON object per line on stdout; every figure is
 * measured next to its peer in the same run, with the ratio.
 *
 *   append                  events/s for batches of 1, 100 and 10,000, at
 *                           durability full, consistent and nosync; peer:
 *                           SQLite in WAL mode (synchronous=FULL / NORMAL /
 *                           OFF, the same promises), the same encoded
 *                           events in one table with an (entity, position)
 *                           index, one transaction per batch. Each line
 *                           also times LMDB alone (lmdb_alone_*): the same
 *                           encoded events put with MDB_APPEND into one
 *                           database, one transaction per batch, the same
 *                           sync flags (none, MDB_NOMETASYNC, MDB_NOSYNC),
 *                           nothing else; the floor of any
 *                           store built on an LMDB log, as a ratio to the
 *                           same SQLite figure.
 *   open                    restore + replay of a store of N entities x 5
 *                           attributes with a 100,000-event tail, in a fresh
 *                           process (seconds, peak RSS, state bytes); peer:
 *                           rebuilding the same state from SQLite (a state
 *                           table written at the snapshot point plus the
 *                           same tail of events), also in a fresh process.
 *   append_group            16 threads each appending batches of one
 *                           event, durability full (the store commits
 *                           the batches of waiting appenders together);
 *                           peer: SQLite WAL, synchronous=FULL, the same
 *                           16 threads each with its own connection, one
 *                           transaction per event, one writer at a time.
 *                           Also LMDB alone committing 16 encoded events
 *                           per transaction (lmdb_alone_*): the most 16
 *                           appenders of one event each can share, the
 *                           floor of a store whose log is LMDB. 500
 *                           events per thread; each side starts after a
 *                           sync(), with no earlier writes to flush.
 *   append_growth           1,000,000 events in batches of 1,000,
 *                           durability full: events/s over the last
 *                           100,000 against the first 100,000 (ingest
 *                           must not slow as the store grows).
 *   append_during_snapshot  batches of 100 (nosync) while another thread
 *                           takes a snapshot of the N-entity store, the
 *                           first snapshot of the process (the writer's
 *                           memory grows to hold the garbage the pinned
 *                           view keeps); peer: the same appends with no
 *                           snapshot running.
 *   append_while_pinned     appends while a reader only holds a view (what
 *                           a snapshot's pin costs by itself); peer: the
 *                           same appends with no view held.
 *
 * SC_BENCH_ENTITIES overrides N (default 1,000,000); SC_BENCH_ONLY=append,
 * group, growth or open runs one part (SC_BENCH_GROWTH_STEPS=1 prints the
 * rate of every 100,000 events of append_growth to stderr). SC_BENCH_KEEP=1
 * keeps the open part's store (its path goes to stderr): `store --open DIR`
 * then times one more open of it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <sqlite3.h>

#include "bench/bench.h"
#include "common/internal.h"
#include "statecache/store.h"
#include "store/event_codec.h"
#include "store/store_internal.h"

#define TAIL_EVENTS   100000
#define PINNED_EVENTS 150000ull /* appends while a view is held */

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bench store: %s: %s\n", what, msg);
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

typedef bench_gen_event gen_event;

/* ---- SQLite peer --------------------------------------------------------- */

static void sql_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		die(sql, msg ? msg : "?");
}

/* The SQLite setting that makes the promise of each durability mode:
 * FULL syncs every commit; NORMAL in WAL mode syncs at checkpoints (a
 * power loss may roll back the last commits, never corrupts); OFF. */
static const char *sql_sync_pragma(sc_durability d)
{
	return d == SC_DURABILITY_FULL	       ? "PRAGMA synchronous=FULL"
	       : d == SC_DURABILITY_CONSISTENT ? "PRAGMA synchronous=NORMAL"
					       : "PRAGMA synchronous=OFF";
}

static const char *durability_name(sc_durability d)
{
	return d == SC_DURABILITY_FULL	       ? "full"
	       : d == SC_DURABILITY_CONSISTENT ? "consistent"
					       : "nosync";
}

static sqlite3 *sql_open(const char *path, sc_durability dur)
{
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("sqlite3_open", sqlite3_errmsg(db));
	sql_exec(db, "PRAGMA journal_mode=WAL");
	sql_exec(db, sql_sync_pragma(dur));
	sql_exec(db, "CREATE TABLE IF NOT EXISTS events (pos INTEGER "
		     "PRIMARY KEY, entity BLOB NOT NULL, body BLOB NOT NULL)");
	sql_exec(db, "CREATE INDEX IF NOT EXISTS events_entity ON "
		     "events(entity, pos)");
	return db;
}

/* Append events [from, from+n) in batches of b to SQLite; seconds. */
static double sql_append(sqlite3 *db, uint64_t from, uint64_t n, uint64_t b,
			 uint64_t nent)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "INSERT INTO events VALUES (?, ?, ?)", -1,
			       &st, NULL) != SQLITE_OK)
		die("prepare", sqlite3_errmsg(db));
	double t0 = bench_now();
	for (uint64_t i = 0; i < n; i += b) {
		sql_exec(db, "BEGIN");
		for (uint64_t k = i; k < i + b && k < n; k++) {
			gen_event g;
			bench_gen_set(from + k, nent, &g);
			uint8_t *buf;
			size_t len;
			if (sc_event_encode(&g.ev, &buf, &len, NULL))
				die("encode", "event");
			sqlite3_bind_int64(st, 1,
					   (sqlite3_int64)(from + k + 1));
			sqlite3_bind_blob(st, 2, g.ev.entity.ptr,
					  (int)g.ev.entity.len, SQLITE_STATIC);
			sqlite3_bind_blob(st, 3, buf, (int)len, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE)
				die("insert", sqlite3_errmsg(db));
			sqlite3_reset(st);
			sc_free(buf);
		}
		sql_exec(db, "COMMIT");
	}
	double t = bench_now() - t0;
	sqlite3_finalize(st);
	return t;
}

/* ---- LMDB alone ---------------------------------------------------------- */

static void lmdb_check(int rc, const char *what)
{
	if (rc)
		die(what, mdb_strerror(rc));
}

/* Put events [0, n) in batches of b, encoded as the store encodes them,
 * under a big-endian position key into one database of a new environment
 * at `dir`; one transaction per batch. Seconds. */
static double lmdb_append(const char *dir, uint64_t n, uint64_t b,
			  uint64_t nent, sc_durability dur)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
	if (system(cmd) != 0)
		die("mkdir", dir);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	lmdb_check(mdb_env_create(&env), "mdb_env_create");
	lmdb_check(mdb_env_set_mapsize(env, (size_t)1 << 30), "mapsize");
	lmdb_check(mdb_env_set_maxdbs(env, 4), "maxdbs");
	unsigned flags = dur == SC_DURABILITY_FULL	   ? 0
			 : dur == SC_DURABILITY_CONSISTENT ? MDB_NOMETASYNC
							   : MDB_NOSYNC;
	lmdb_check(mdb_env_open(env, dir, flags, 0644), "mdb_env_open");
	lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
	lmdb_check(mdb_dbi_open(txn, "events", MDB_CREATE, &dbi), "dbi");
	lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
	uint8_t **buf = malloc(b * sizeof *buf);
	size_t *len = malloc(b * sizeof *len);
	if (!buf || !len)
		die("malloc", "lmdb batch");
	double t = 0;
	for (uint64_t i = 0; i < n; i += b) {
		uint64_t m = 0;
		for (uint64_t k = i; k < i + b && k < n; k++, m++) {
			gen_event g;
			bench_gen_set(k, nent, &g);
			g.ev.position = k + 1;
			if (sc_event_encode(&g.ev, &buf[m], &len[m], NULL))
				die("encode", "event");
		}
		double t0 = bench_now();
		lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
		for (uint64_t j = 0; j < m; j++) {
			uint8_t key[8];
			sc_be64_put(key, i + j + 1);
			MDB_val k = {8, key}, v = {len[j], buf[j]};
			lmdb_check(mdb_put(txn, dbi, &k, &v, MDB_APPEND),
				   "mdb_put");
		}
		lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
		t += bench_now() - t0;
		for (uint64_t j = 0; j < m; j++)
			sc_free(buf[j]);
	}
	free(buf);
	free(len);
	mdb_env_close(env);
	return t;
}

/* ---- store helpers ------------------------------------------------------- */

static double store_append(sc_store *s, uint64_t from, uint64_t n, uint64_t b,
			   uint64_t nent)
{
	gen_event *g = malloc(b * sizeof *g);
	sc_event *batch = malloc(b * sizeof *batch);
	double t = 0;
	for (uint64_t i = 0; i < n; i += b) {
		uint64_t m = 0;
		for (uint64_t k = i; k < i + b && k < n; k++, m++) {
			bench_gen_set(from + k, nent, &g[m]);
			batch[m] = g[m].ev;
		}
		double t0 = bench_now();
		sc_error err;
		if (sc_store_append(s, batch, m, NULL, &err))
			die("sc_store_append", err.message);
		t += bench_now() - t0;
	}
	free(g);
	free(batch);
	return t;
}

/* ---- append -------------------------------------------------------------- */

static void bench_append(const char *root)
{
#define FULL	   SC_DURABILITY_FULL
#define CONSISTENT SC_DURABILITY_CONSISTENT
#define NOSYNC	   SC_DURABILITY_NOSYNC
	static const struct {
		uint64_t batch;
		sc_durability dur;
		uint64_t events;
	} cases[] = {
	    {1, FULL, 2000},	       {1, CONSISTENT, 4000},
	    {1, NOSYNC, 50000},	       {100, FULL, 100000},
	    {100, CONSISTENT, 100000}, {100, NOSYNC, 200000},
	    {10000, FULL, 1000000},    {10000, CONSISTENT, 1000000},
	    {10000, NOSYNC, 1000000},
	};
#undef FULL
#undef CONSISTENT
#undef NOSYNC
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		char dir[512], db_path[512], lmdb_dir[512];
		snprintf(dir, sizeof dir, "%s/append%zu", root, c);
		snprintf(db_path, sizeof db_path, "%s/append%zu.sqlite", root,
			 c);
		uint64_t n = cases[c].events, b = cases[c].batch;
		sc_store *s = bench_store_open(dir, cases[c].dur);
		double t = store_append(s, 0, n, b, 100000);
		sc_store_close(s);
		sqlite3 *db = sql_open(db_path, cases[c].dur);
		double tp = sql_append(db, 0, n, b, 100000);
		sqlite3_close(db);
		snprintf(lmdb_dir, sizeof lmdb_dir, "%s/lmdb%zu", root, c);
		double tl = lmdb_append(lmdb_dir, n, b, 100000, cases[c].dur);
		rm_rf(lmdb_dir);
		double x = (double)n / t, y = (double)n / tp,
		       z = (double)n / tl;
		printf(
		    "{\"name\":\"append\",\"batch\":%llu,\"durability\":"
		    "\"%s\",\"events\":%llu,\"events_per_s\":%.0f,\"peer\":"
		    "\"sqlite_wal\",\"peer_events_per_s\":%.0f,\"ratio\":%.2f,"
		    "\"lmdb_alone_events_per_s\":%.0f,\"lmdb_alone_ratio\":"
		    "%.2f,\"of_lmdb_alone\":%.2f}\n",
		    (unsigned long long)b, durability_name(cases[c].dur),
		    (unsigned long long)n, x, y, x / y, z, z / y, x / z);
		fflush(stdout);
		rm_rf(dir);
		char p2[600];
		snprintf(p2, sizeof p2, "%s*", db_path);
		char cmd[700];
		snprintf(cmd, sizeof cmd, "rm -f %s", p2);
		if (system(cmd) != 0)
			die("rm", p2);
	}
}

/* ---- append_growth ------------------------------------------------------- */

#define GROWTH_EVENTS 1000000ull
#define GROWTH_WINDOW 100000ull
#define GROWTH_BATCH  1000ull

/* Throughput over the first and the last GROWTH_WINDOW of GROWTH_EVENTS
 * appended in batches of GROWTH_BATCH with durability full. */
static void bench_growth(const char *root)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/growth", root);
	sc_store *s = bench_store_open(dir, SC_DURABILITY_FULL);
	double first = 0, last = 0;
	for (uint64_t i = 0; i < GROWTH_EVENTS; i += GROWTH_WINDOW) {
		double t =
		    store_append(s, i, GROWTH_WINDOW, GROWTH_BATCH, 100000);
		if (i == 0)
			first = t;
		last = t;
		if (getenv("SC_BENCH_GROWTH_STEPS"))
			fprintf(stderr,
				"bench store: growth: events %llu..%llu: "
				"%.0f events/s\n",
				(unsigned long long)i,
				(unsigned long long)(i + GROWTH_WINDOW),
				(double)GROWTH_WINDOW / t);
	}
	sc_store_close(s);
	rm_rf(dir);
	double x = (double)GROWTH_WINDOW / first,
	       y = (double)GROWTH_WINDOW / last;
	printf("{\"name\":\"append_growth\",\"batch\":%llu,\"durability\":"
	       "\"full\",\"events\":%llu,\"first_events_per_s\":%.0f,"
	       "\"last_events_per_s\":%.0f,\"ratio\":%.2f}\n",
	       (unsigned long long)GROWTH_BATCH,
	       (unsigned long long)GROWTH_EVENTS, x, y, y / x);
	fflush(stdout);
}

/* ---- append_group ---------------------------------------------------------
 */

#define GROUP_THREADS 16
#define GROUP_EACH    500ull /* events (batches of 1) per thread */

typedef struct group_arg {
	sc_store *s;		/* ours */
	const char *db_path;	/* or the SQLite peer's file */
	pthread_mutex_t *sqlmu; /* the peer's one writer at a time */
	unsigned thread;
	pthread_barrier_t *go;
} group_arg;

static void *group_thread(void *p)
{
	group_arg *a = p;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	if (!a->s) {
		db = sql_open(a->db_path, SC_DURABILITY_FULL);
		if (sqlite3_prepare_v2(db,
				       "INSERT INTO events VALUES (NULL, ?, ?)",
				       -1, &st, NULL) != SQLITE_OK)
			die("prepare", sqlite3_errmsg(db));
	}
	pthread_barrier_wait(a->go);
	for (uint64_t k = 0; k < GROUP_EACH; k++) {
		gen_event g;
		bench_gen_set(k * GROUP_THREADS + a->thread, 100000, &g);
		if (a->s) {
			sc_error err;
			if (sc_store_append(a->s, &g.ev, 1, NULL, &err))
				die("sc_store_append", err.message);
			continue;
		}
		uint8_t *buf;
		size_t len;
		if (sc_event_encode(&g.ev, &buf, &len, NULL))
			die("encode", "event");
		pthread_mutex_lock(a->sqlmu);
		sql_exec(db, "BEGIN");
		sqlite3_bind_blob(st, 1, g.ev.entity.ptr, (int)g.ev.entity.len,
				  SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, buf, (int)len, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(db));
		sqlite3_reset(st);
		sql_exec(db, "COMMIT");
		pthread_mutex_unlock(a->sqlmu);
		sc_free(buf);
	}
	if (db) {
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	return NULL;
}

/* GROUP_THREADS threads each appending GROUP_EACH batches of one event;
 * events/s over the whole run. */
static double group_run(sc_store *s, const char *db_path)
{
	pthread_t th[GROUP_THREADS];
	group_arg a[GROUP_THREADS];
	pthread_barrier_t go;
	pthread_mutex_t sqlmu = PTHREAD_MUTEX_INITIALIZER;
	pthread_barrier_init(&go, NULL, GROUP_THREADS + 1);
	for (unsigned i = 0; i < GROUP_THREADS; i++) {
		a[i] = (group_arg){s, db_path, &sqlmu, i, &go};
		pthread_create(&th[i], NULL, group_thread, &a[i]);
	}
	pthread_barrier_wait(&go);
	double t0 = bench_now();
	for (unsigned i = 0; i < GROUP_THREADS; i++)
		pthread_join(th[i], NULL);
	double t = bench_now() - t0;
	pthread_barrier_destroy(&go);
	return (double)(GROUP_THREADS * GROUP_EACH) / t;
}

/* Concurrent appenders of single events with durability full; peer: the
 * same threads inserting into SQLite (WAL, synchronous=FULL), each with
 * its own connection, one transaction per event, one writer at a time
 * (a mutex: SQLite's own busy wait sleeps). */
static void bench_group(const char *root)
{
	char dir[512], db_path[512];
	snprintf(dir, sizeof dir, "%s/group", root);
	snprintf(db_path, sizeof db_path, "%s/group.sqlite", root);
	/* Each side starts with nothing of earlier work left to write back
	 * (sync), so that its syncs wait for its own writes only. */
	sync();
	sc_store *s = bench_store_open(dir, SC_DURABILITY_FULL);
	double x = group_run(s, NULL);
	if (sc_store_last_position(s) != GROUP_THREADS * GROUP_EACH)
		die("append_group", "the log does not hold every event");
	sc_store_close(s);
	rm_rf(dir);
	sqlite3 *db = sql_open(db_path, SC_DURABILITY_FULL);
	sqlite3_close(db);
	sync();
	double y = group_run(NULL, db_path);
	/* The floor: LMDB alone committing GROUP_THREADS events per
	 * transaction (the most the appenders, one event each in flight,
	 * can share), synced as the store syncs. */
	char lmdb_dir[512];
	snprintf(lmdb_dir, sizeof lmdb_dir, "%s/group_lmdb", root);
	uint64_t n = GROUP_THREADS * GROUP_EACH;
	sync();
	double z = (double)n / lmdb_append(lmdb_dir, n, GROUP_THREADS, 100000,
					   SC_DURABILITY_FULL);
	rm_rf(lmdb_dir);
	printf("{\"name\":\"append_group\",\"threads\":%d,\"batch\":1,"
	       "\"durability\":\"full\",\"events\":%llu,\"events_per_s\":%.0f,"
	       "\"peer\":\"sqlite_wal\",\"peer_events_per_s\":%.0f,\"ratio\":"
	       "%.2f,\"lmdb_alone_batch\":%d,\"lmdb_alone_events_per_s\":%.0f,"
	       "\"lmdb_alone_ratio\":%.2f,\"of_lmdb_alone\":%.2f}\n",
	       GROUP_THREADS, (unsigned long long)n, x, y, x / y, GROUP_THREADS,
	       z, z / y, x / z);
	fflush(stdout);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -f %s*", db_path);
	if (system(cmd) != 0)
		die("rm", db_path);
}

/* ---- open ---------------------------------------------------------------- */

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* A field of /proc/self/status in bytes ("VmHWM", "RssFile", ...). */
static size_t status_bytes(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	char line[256];
	size_t kb = 0, n = strlen(field);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0 && line[n] == ':' &&
		    sscanf(line + n + 1, "%zu", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

static size_t vm_hwm_bytes(void)
{
	return status_bytes("VmHWM");
}

/* In a fresh process: open the store, print seconds, peak RSS and state
 * bytes on one line. */
static int child_open(const char *dir)
{
	double t0 = bench_now();
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		die("open", err.message);
	double t = bench_now() - t0;
	sc_cache_stats cs;
	sc_cache_stats_get(sc_store_cache(s), &cs);
	/* Mapped pages of the LMDB file count in VmHWM (page cache the
	 * replay touched, plus the kernel's fault-around neighbours); report
	 * them so the anonymous part can be told apart. */
	fprintf(stderr,
		"bench store: open: RssFile %zu bytes, RssAnon %zu "
		"bytes at the end\n",
		status_bytes("RssFile"), status_bytes("RssAnon"));
	printf("%f %f %zu %zu %zu\n", t, cpu_seconds(), vm_hwm_bytes(),
	       cs.memory_bytes, cs.entities);
	sc_store_close(s);
	return 0;
}

/* In a fresh process: rebuild the state from SQLite (state rows, then the
 * event tail) into a cache. */
static int child_sqlite(const char *path)
{
	double t0 = bench_now();
	sqlite3 *db;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		die("sqlite3_open", sqlite3_errmsg(db));
	sc_cache *cache;
	sc_error err;
	if (sc_cache_create(NULL, &cache, &err))
		die("cache", err.message);
	const char *q[2] = {"SELECT pos, body FROM state",
			    "SELECT pos, body FROM events ORDER BY pos"};
	for (int k = 0; k < 2; k++) {
		sqlite3_stmt *st;
		if (sqlite3_prepare_v2(db, q[k], -1, &st, NULL) != SQLITE_OK)
			die("prepare", sqlite3_errmsg(db));
		size_t n = 0;
		while (sqlite3_step(st) == SQLITE_ROW) {
			uint64_t pos = (uint64_t)sqlite3_column_int64(st, 0);
			const void *body = sqlite3_column_blob(st, 1);
			int len = sqlite3_column_bytes(st, 1);
			sc_decoded_event d;
			if (sc_event_decode(body, (size_t)len, pos, &d, &err))
				die("decode", err.message);
			if (sc_cache_apply(cache, &d.ev, &err))
				die("apply", err.message);
			sc_decoded_event_free(&d);
			if (++n % 65536 == 0)
				sc_cache_promote(cache);
		}
		sqlite3_finalize(st);
	}
	sc_cache_promote(cache);
	double t = bench_now() - t0;
	printf("%f %f %zu %zu %zu\n", t, cpu_seconds(), vm_hwm_bytes(),
	       (size_t)0, sc_cache_len(cache));
	sc_cache_destroy(cache);
	sqlite3_close(db);
	return 0;
}

static void run_child(const char *mode, const char *arg, double *sec,
		      double *cpu, size_t *rss, size_t *bytes, size_t *ents)
{
	int fds[2];
	if (pipe(fds))
		die("pipe", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		execl("/proc/self/exe", "store", mode, arg, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	FILE *f = fdopen(fds[0], "r");
	if (fscanf(f, "%lf %lf %zu %zu %zu", sec, cpu, rss, bytes, ents) != 5)
		die(mode, "child printed no result");
	fclose(f);
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die(mode, "child failed");
}

typedef struct snap_arg {
	sc_store *s;
	atomic_int done;
	double seconds;
} snap_arg;

static void *snap_thread(void *p)
{
	snap_arg *a = p;
	double t0 = bench_now();
	sc_error err;
	if (sc_store_snapshot(a->s, NULL, &err))
		die("snapshot", err.message);
	a->seconds = bench_now() - t0;
	atomic_store(&a->done, 1);
	return NULL;
}

static void bench_open_and_snapshot(const char *root, uint64_t nent)
{
	char dir[512], db_path[512];
	snprintf(dir, sizeof dir, "%s/open", root);
	snprintf(db_path, sizeof db_path, "%s/open.sqlite", root);
	sc_store *s = bench_store_open(dir, SC_DURABILITY_NOSYNC);
	/* Events 0..nent-1 touch every entity exactly once (i * 2654435761
	 * mod nent is a bijection: 2654435761 is prime). */
	double t_fill = store_append(s, 0, nent, 10000, nent);
	sc_error err;
	sc_snapshot_info si;
	if (sc_store_snapshot(s, &si, &err))
		die("snapshot", err.message);
	store_append(s, nent, TAIL_EVENTS, 10000, nent);
	fprintf(stderr,
		"bench store: filled %llu entities in %.1f s; snapshot %.2f s, "
		"%llu chunks, %llu bytes\n",
		(unsigned long long)nent, t_fill, si.seconds,
		(unsigned long long)si.chunks,
		(unsigned long long)si.bytes_compressed);

	/* The SQLite peer: the state at the snapshot point as rows (each a
	 * `replace` event record), then the same tail of events. */
	{
		sqlite3 *db = sql_open(db_path, SC_DURABILITY_NOSYNC);
		sql_exec(db, "CREATE TABLE state (id BLOB PRIMARY KEY, pos "
			     "INTEGER, body BLOB)");
		sqlite3_stmt *st;
		sqlite3_prepare_v2(db, "INSERT INTO state VALUES (?, ?, ?)", -1,
				   &st, NULL);
		sql_exec(db, "BEGIN");
		/* Every entity's state at the snapshot point is what its one
		 * event among 0..nent-1 made of it. */
		for (uint64_t i = 0; i < nent; i++) {
			gen_event g;
			bench_gen_set(i, nent, &g);
			g.ev.type = SC_EVENT_REPLACE;
			uint8_t *buf;
			size_t len;
			if (sc_event_encode(&g.ev, &buf, &len, NULL))
				die("encode", "state");
			sqlite3_bind_blob(st, 1, g.ev.entity.ptr,
					  (int)g.ev.entity.len, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, (sqlite3_int64)(i + 1));
			sqlite3_bind_blob(st, 3, buf, (int)len, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE)
				die("insert state", sqlite3_errmsg(db));
			sqlite3_reset(st);
			sc_free(buf);
		}
		sql_exec(db, "COMMIT");
		sqlite3_finalize(st);
		sql_append(db, nent, TAIL_EVENTS, 10000, nent);
		sqlite3_close(db);
	}

	uint64_t pos = nent + TAIL_EVENTS;
	/* Appends during a snapshot (in another thread) vs alone, first,
	 * while the process's heap has never held a backlog. */
	snap_arg a = {.s = s};
	atomic_store(&a.done, 0);
	pthread_t th;
	pthread_create(&th, NULL, snap_thread, &a);
	uint64_t during = 0;
	double t_during = 0;
	while (!atomic_load(&a.done)) {
		t_during += store_append(s, pos, 100, 100, nent);
		pos += 100;
		during += 100;
	}
	pthread_join(th, NULL);
	double t_alone = store_append(s, pos, during, 100, nent);
	pos += during;
	/* What a held view alone costs the appends: a reader holds a view
	 * for PINNED_EVENTS appended events and does nothing else; the
	 * backlog it kept is freed before the appends alone. */
	sc_reader *rd;
	if (sc_reader_open(sc_store_cache(s), &rd, &err))
		die("sc_reader_open", err.message);
	sc_reader_begin(rd);
	double t_pinned = store_append(s, pos, PINNED_EVENTS, 100, nent);
	pos += PINNED_EVENTS;
	sc_reader_end(rd);
	sc_reader_close(rd);
	sc_cache_reclaim(sc_store_cache(s));
	double t_alone2 = store_append(s, pos, PINNED_EVENTS, 100, nent);
	pos += PINNED_EVENTS;

	sc_store_close(s);
	double x = (double)during / t_during, y = (double)during / t_alone;
	printf("{\"name\":\"append_during_snapshot\",\"entities\":%llu,"
	       "\"snapshot_seconds\":%.2f,\"events\":%llu,\"events_per_s\":"
	       "%.0f,\"peer\":\"append_alone\",\"peer_events_per_s\":%.0f,"
	       "\"ratio\":%.2f}\n",
	       (unsigned long long)nent, a.seconds, (unsigned long long)during,
	       x, y, x / y);
	x = (double)PINNED_EVENTS / t_pinned;
	y = (double)PINNED_EVENTS / t_alone2;
	printf("{\"name\":\"append_while_pinned\",\"entities\":%llu,"
	       "\"events\":%llu,\"events_per_s\":%.0f,\"peer\":"
	       "\"append_alone\",\"peer_events_per_s\":%.0f,\"ratio\":%.2f}\n",
	       (unsigned long long)nent, (unsigned long long)PINNED_EVENTS, x,
	       y, x / y);
	fflush(stdout);

	/* Open: a snapshot now, then exactly TAIL_EVENTS after it, so open
	 * is a restore plus a 100,000-event replay. */
	s = bench_store_open(dir, SC_DURABILITY_NOSYNC);
	if (sc_store_snapshot(s, NULL, &err))
		die("snapshot", err.message);
	store_append(s, pos, TAIL_EVENTS, 10000, nent);
	sc_store_close(s);

	double sec, psec, cpu, pcpu;
	size_t rss, bytes, ents, prss, pbytes, pents;
	run_child("--open", dir, &sec, &cpu, &rss, &bytes, &ents);
	run_child("--sqlite", db_path, &psec, &pcpu, &prss, &pbytes, &pents);
	printf("{\"name\":\"open\",\"entities\":%zu,\"tail_events\":%d,"
	       "\"seconds\":%.3f,\"cpu_seconds\":%.3f,\"peak_rss_bytes\":%zu,"
	       "\"state_bytes\":%zu,\"rss_over_state\":%.2f,\"peer\":"
	       "\"sqlite_rebuild\",\"peer_seconds\":%.3f,\"peer_cpu_seconds\":"
	       "%.3f,\"peer_peak_rss_bytes\":%zu,\"ratio\":%.3f}\n",
	       ents, TAIL_EVENTS, sec, cpu, rss, bytes,
	       bytes ? (double)rss / (double)bytes : 0.0, psec, pcpu, prss,
	       sec / psec);
	fflush(stdout);
	if (getenv("SC_BENCH_KEEP")) {
		fprintf(stderr, "bench store: kept %s\n", dir);
		return;
	}
	rm_rf(dir);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -f %s*", db_path);
	if (system(cmd) != 0)
		die("rm", db_path);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--open") == 0)
		return child_open(argv[2]);
	if (argc == 3 && strcmp(argv[1], "--sqlite") == 0)
		return child_sqlite(argv[2]);
	const char *e = getenv("SC_BENCH_ENTITIES");
	uint64_t nent = e && *e ? strtoull(e, NULL, 10) : 1000000;
	char tmpl[] = "/tmp/sc_bench_store.XXXXXX";
	char *root = mkdtemp(tmpl);
	if (!root)
		die("mkdtemp", strerror(errno));
	const char *only = getenv("SC_BENCH_ONLY");
	if (!only || strcmp(only, "append") == 0)
		bench_append(root);
	if (!only || strcmp(only, "group") == 0)
		bench_group(root);
	if (!only || strcmp(only, "growth") == 0)
		bench_growth(root);
	if (!only || strcmp(only, "open") == 0)
		bench_open_and_snapshot(root, nent);
	if (!getenv("SC_BENCH_KEEP"))
		rm_rf(root);
	return 0;
}
