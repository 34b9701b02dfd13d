/*
 * Reader processes: a store opened read-only (options.read_only) in one
 * process while another process appends. The reader's state at every
 * position it reports equals the fold of the log up to that position
 * (tests/support/refstate, fed from the same generated stream the writer
 * appends); SIGKILL of the writer leaves the reader serving and a new
 * writer can open and append; SIGKILL of the reader leaves the writer
 * appending. A read-only store writes nothing: appends and snapshots fail,
 * data.mdb is not modified, no nosync marker is made, a missing store is
 * not created. Waits are bounded waits on sc_store_wait_position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#define NENT	 200   /* distinct entities of the stream */
#define MAXBATCH 16    /* events per append: 1..MAXBATCH */
#define WAIT_MS	 60000 /* bound of every wait (a hang fails, not blocks) */

static const char *root;
static uint64_t seed;

/* The event at log position `pos`: a pure function of (seed, pos). */
static void event_at(uint64_t pos, tk_event *out)
{
	tk_event_gen(seed, pos - 1, NENT, (int64_t)(1000000 + pos), out);
	out->ev.position = pos;
}

/* ---- the model ------------------------------------------------------------
 */

typedef struct model {
	tk_refstate *rs;
	uint64_t position; /* folded up to here */
} model;

static void model_to(model *m, uint64_t pos)
{
	static tk_event e;
	while (m->position < pos) {
		event_at(++m->position, &e);
		tk_refstate_apply(m->rs, &e.ev);
	}
}

/* Pin the reader store's newest version: its position must be at least
 * `least`, and its state the model's at that position. Returns it. */
static uint64_t check_reader(sc_store *s, model *m, uint64_t least)
{
	sc_reader *r = NULL;
	sc_error err;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, &err), 0);
	const sc_view *v = sc_reader_begin(r);
	uint64_t pos = sc_view_position(v);
	assert_true(pos >= least);
	assert_true(pos >= m->position);
	model_to(m, pos);
	char why[256] = "";
	bool same = tk_refstate_check_view(m->rs, v, why, sizeof why);
	if (!same)
		fprintf(stderr, "state at position %llu: %s\n",
			(unsigned long long)pos, why);
	assert_true(same);
	assert_int_equal(tk_refstate_view_hash(v), tk_refstate_hash(m->rs));
	sc_reader_end(r);
	sc_reader_close(r);
	return pos;
}

/* ---- stores ---------------------------------------------------------------
 */

static sc_store *open_writer(const char *dir, bool create, sc_error *err)
{
	sc_store_options o = {0};
	o.create = create;
	o.durability = SC_DURABILITY_NOSYNC; /* a process crash loses nothing */
	o.snapshot_every = 300;
	o.index_lag = 32;
	/* A small map: the writer grows it many times, and the readers
	 * adopt each new size (MDB_MAP_RESIZED). */
	o.map_size = 256 << 10;
	sc_store *s = NULL;
	if (sc_store_open(dir, &o, &s, err))
		return NULL;
	return s;
}

static sc_store *open_reader(const char *dir, bool manual)
{
	sc_store_options o = {0};
	o.read_only = true;
	o.follow_interval_ms = 2;
	o.map_size = 64 << 10; /* smaller than the file's: LMDB takes that */
	o.follow_manual = manual;
	sc_store *s = tk_store_open(dir, &o);
	assert_true(sc_store_read_only(s));
	return s;
}

/* Append the stream's events after the store's end up to `to` (0: for
 * ever), in batches of 1..MAXBATCH. Returns 0 or the failing code. */
static int append_to(sc_store *s, uint64_t to, uint64_t rng)
{
	static tk_event e[MAXBATCH];
	sc_event evs[MAXBATCH];
	for (;;) {
		uint64_t last = sc_store_last_position(s);
		if (to && last >= to)
			return 0;
		size_t n = 1 + (size_t)tk_rand_below(&rng, MAXBATCH);
		if (to && n > to - last)
			n = (size_t)(to - last);
		for (size_t i = 0; i < n; i++) {
			event_at(last + 1 + i, &e[i]);
			evs[i] = e[i].ev;
		}
		sc_error err;
		uint64_t first = 0;
		int rc = sc_store_append(s, evs, n, &first, &err);
		if (rc || first != last + 1) {
			fprintf(stderr, "append: %s\n", err.message);
			return rc ? rc : -1;
		}
	}
}

/* A writer process: waits for a byte on `go` (-1: none), opens the store,
 * appends up to `to` (0: until killed), closes, exits 0 on success. */
typedef struct writer_run {
	const char *dir;
	uint64_t to;
	int go;
} writer_run;

static int writer_child(void *arg, int fd)
{
	(void)fd;
	const writer_run *w = arg;
	/* A writer that appends until killed dies with the test too. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	char b;
	if (w->go >= 0 && read(w->go, &b, 1) != 1)
		return 2;
	sc_error err;
	sc_store *s = open_writer(w->dir, false, &err);
	if (!s) {
		fprintf(stderr, "writer open: %s\n", err.message);
		return 3;
	}
	int rc = append_to(s, w->to, seed ^ (uint64_t)getpid());
	sc_store_close(s);
	return rc ? 4 : 0;
}

static pid_t spawn_writer(const char *dir, uint64_t to, int go)
{
	writer_run w = {dir, to, go};
	return tk_child_start(writer_child, &w, NULL);
}

static void expect_exit0(pid_t pid)
{
	assert_true(tk_exited(tk_child_wait(pid), 0));
}

static void expect_killed(pid_t pid)
{
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_true(WIFSIGNALED(tk_child_wait(pid)));
}

/* A new store holding positions 1..n. */
static void make_store(const char *dir, uint64_t n)
{
	sc_error err;
	sc_store *s = open_writer(dir, true, &err);
	assert_non_null(s);
	assert_int_equal(append_to(s, n, seed), 0);
	sc_store_close(s);
}

/* ---- tests ----------------------------------------------------------------
 */

/* The reader follows a writer process to the end; at every position it
 * reaches, its state is the model's. */
static void test_reader_follows_writer(void **state)
{
	(void)state;
	char dir[512];
	tk_tmproot_dir(dir, sizeof dir);
	make_store(dir, 700); /* snapshots to restore from */
	int go[2];
	assert_int_equal(pipe(go), 0);
	const uint64_t total = 6000;
	pid_t w = spawn_writer(dir, total, go[0]);
	close(go[0]);

	sc_store *r = open_reader(dir, false);
	model m = {tk_refstate_new(), 0};
	uint64_t pos = check_reader(r, &m, 700);
	assert_int_equal(pos, 700);
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	uint64_t seen = 0;
	while (pos < total) {
		sc_error err;
		int rc = sc_store_wait_position(r, pos + 1, WAIT_MS, &err);
		if (rc)
			fprintf(stderr, "wait: %s\n", err.message);
		assert_int_equal(rc, 0);
		pos = check_reader(r, &m, pos + 1);
		seen++;
	}
	assert_int_equal(pos, total);
	assert_true(seen > 0);
	/* The writer grew the map past what the reader mapped at open. */
	sc_store_stats stats;
	sc_error serr;
	assert_int_equal(sc_store_stats_get(r, &stats, &serr), 0);
	assert_true(stats.map_size >= (size_t)1 << 20);
	expect_exit0(w);
	/* Its reads go on against the log as well. */
	sc_error err;
	assert_int_equal(sc_store_last_position(r), total);
	assert_int_equal(sc_store_verify(r, &err), 0);
	sc_entity *e = NULL;
	tk_event ev;
	event_at(total, &ev);
	int rc = sc_store_entity_at(r, ev.ev.entity, total, &e, &err);
	assert_true(rc == 0 || rc == SC_NOTFOUND);
	sc_entity_free(e);
	sc_store_close(r);
	tk_refstate_free(m.rs);
}

/* SIGKILL of the writer: the reader keeps serving what was committed, and
 * a new writer opens the store and appends; the reader follows it. */
static void test_writer_killed(void **state)
{
	(void)state;
	char dir[512];
	tk_tmproot_dir(dir, sizeof dir);
	make_store(dir, 100);
	int go[2];
	assert_int_equal(pipe(go), 0);
	/* Both writers are forked before the reader's threads exist. */
	pid_t w1 = spawn_writer(dir, 0, -1);
	pid_t w2 = spawn_writer(dir, 0 /* set below */, go[0]);
	close(go[0]);

	sc_store *r = open_reader(dir, false);
	model m = {tk_refstate_new(), 0};
	sc_error err;
	assert_int_equal(sc_store_wait_position(r, 2000, WAIT_MS, &err), 0);
	expect_killed(w1);
	uint64_t after_kill = 0;
	assert_int_equal(sc_store_refresh(r, &after_kill, &err), 0);
	assert_true(after_kill >= 2000);
	assert_int_equal(check_reader(r, &m, after_kill), after_kill);
	/* The second writer appends for ever; the reader follows it past
	 * 1000 more events, then it is stopped too. */
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	assert_int_equal(
	    sc_store_wait_position(r, after_kill + 1000, WAIT_MS, &err), 0);
	expect_killed(w2);
	uint64_t end = 0;
	assert_int_equal(sc_store_refresh(r, &end, &err), 0);
	assert_true(end >= after_kill + 1000);
	assert_int_equal(check_reader(r, &m, end), end);
	assert_int_equal(sc_store_verify(r, &err), 0);
	sc_store_close(r);

	/* A writer opens what both left and agrees. */
	sc_store *s = open_writer(dir, false, &err);
	assert_non_null(s);
	assert_int_equal(sc_store_last_position(s), end);
	assert_true(tk_cache_matches(sc_store_cache(s), m.rs));
	sc_store_close(s);
	tk_refstate_free(m.rs);
}

/* A reader of the store `dir` that writes each position it reaches to fd
 * until killed. */
static int reader_child(void *dir, int fd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sc_store_options o = {0};
	o.read_only = true;
	o.follow_interval_ms = 1;
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		return 3;
	for (uint64_t want = 51;; want++) {
		if (sc_store_wait_position(s, want, WAIT_MS, &err))
			return 4;
		uint64_t p = sc_store_last_position(s);
		if (write(fd, &p, sizeof p) != (ssize_t)sizeof p)
			return 5;
		want = p;
	}
}

/* SIGKILL of the reader (at any point of its following) leaves the writer
 * appending, and the store whole. */
static void test_reader_killed(void **state)
{
	(void)state;
	char dir[512];
	tk_tmproot_dir(dir, sizeof dir);
	make_store(dir, 50);
	int up;
	pid_t rp = tk_child_start(reader_child, dir, &up);
	sc_error err;
	sc_store *s = open_writer(dir, false, &err);
	assert_non_null(s);
	/* Append until the reader reported a position past 1000. */
	uint64_t reported = 0, rng = seed;
	while (reported < 1000) {
		uint64_t to = sc_store_last_position(s) + 100;
		assert_int_equal(append_to(s, to, rng++), 0);
		/* The reader reports a position past its last report. */
		uint64_t p = 0;
		assert_int_equal(read(up, &p, sizeof p), (ssize_t)sizeof p);
		assert_true(p > reported);
		reported = p;
	}
	expect_killed(rp);
	close(up);
	uint64_t end = sc_store_last_position(s) + 3000;
	assert_int_equal(append_to(s, end, rng), 0);
	model m = {tk_refstate_new(), 0};
	model_to(&m, end);
	assert_true(tk_cache_matches(sc_store_cache(s), m.rs));
	assert_int_equal(sc_store_verify(s, &err), 0);
	sc_store_close(s);
	s = open_writer(dir, false, &err);
	assert_non_null(s);
	assert_int_equal(sc_store_last_position(s), end);
	assert_true(tk_cache_matches(sc_store_cache(s), m.rs));
	sc_store_close(s);
	tk_refstate_free(m.rs);
}

static bool has_marker(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	bool found = false;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, "nosync-session", 14) == 0)
			found = true;
	closedir(d);
	return found;
}

/* A read-only store writes nothing and says so. */
static void test_read_only_writes_nothing(void **state)
{
	(void)state;
	char dir[512], missing[600], path[600];
	tk_tmproot_dir(dir, sizeof dir);
	make_store(dir, 400);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	struct stat before, after;
	assert_int_equal(stat(path, &before), 0);

	sc_store_options o = {0};
	o.read_only = true;
	o.follow_manual = true;
	o.durability = SC_DURABILITY_NOSYNC; /* ignored: no marker */
	sc_store *s = NULL;
	sc_error err;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), 0);
	assert_false(has_marker(dir));
	model m = {tk_refstate_new(), 0};
	assert_int_equal(check_reader(s, &m, 400), 400);
	uint64_t pos = 0;
	assert_int_equal(sc_store_refresh(s, &pos, &err), 0);
	assert_int_equal(pos, 400);
	assert_int_equal(sc_store_wait_position(s, 400, 0, &err), 0);
	assert_int_equal(sc_store_wait_position(s, 401, 0, &err), ETIMEDOUT);

	tk_event e;
	event_at(401, &e);
	assert_int_equal(sc_store_append(s, &e.ev, 1, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "read-only"));
	assert_int_equal(sc_store_snapshot(s, NULL, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "read-only"));
	assert_int_equal(sc_store_last_position(s), 400);
	assert_int_equal(check_reader(s, &m, 400), 400);
	sc_store_close(s);
	assert_int_equal(stat(path, &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	assert_true(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
		    after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
	assert_false(has_marker(dir));

	/* A writing store refuses sc_store_refresh (it is always current). */
	s = open_writer(dir, false, &err);
	assert_non_null(s);
	assert_int_equal(sc_store_refresh(s, NULL, &err), SC_EINVAL);
	assert_int_equal(sc_store_wait_position(s, 400, 0, &err), 0);
	sc_store_close(s);

	/* Never creates; never with create. */
	snprintf(missing, sizeof missing, "%s/none", root);
	o.follow_manual = false;
	assert_int_equal(sc_store_open(missing, &o, &s, &err), SC_NOTFOUND);
	assert_null(s);
	struct stat st;
	assert_int_not_equal(stat(missing, &st), 0);
	o.create = true;
	assert_int_equal(sc_store_open(dir, &o, &s, &err), SC_EINVAL);
	assert_non_null(strstr(err.message, "read-only"));
	tk_refstate_free(m.rs);
}

static int setup(void **state)
{
	(void)state;
	seed = tk_seed("test_reader_process");
	root = tk_tmproot_create("test_reader");
	return root ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_read_only_writes_nothing),
	    cmocka_unit_test(test_reader_follows_writer),
	    cmocka_unit_test(test_writer_killed),
	    cmocka_unit_test(test_reader_killed),
	};
	return cmocka_run_group_tests(tests, setup, tk_tmproot_teardown);
}
