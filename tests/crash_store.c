/*
 * Crash recovery: a child process appends deterministic batches (event at
 * position p is a pure function of the seed and p, times included) and
 * takes snapshots and checkpoints now and then (its checkpoint thread
 * too), acknowledging every committed append on a pipe. The parent
 * SIGKILLs it after a random number of acknowledgements (and a random
 * short spin), or lets it die at a named kill point inside append,
 * snapshot or checkpoint write, or restore (SC_KILLPOINT in the child's
 * environment). After every kill the parent reopens the store and checks:
 * the log is gapless and every event equals its deterministic value; it
 * holds at least every acknowledged event; the restored state equals a
 * from-scratch replay (the reference model); one more append works.
 *
 * The same with a memory budget (test_crash_budget): the child opens the
 * store with a budget far below its state, its events spread over many
 * partitions (the partition too a pure function of the seed and the
 * position), and reads random partitions through sc_store_get_in, so
 * partitions load and evict all the time and appends go to cold
 * partitions; it dies at kill points inside loads and evictions as well.
 * After every kill the parent checks the store without a budget as above,
 * then reopens it with the budget: every partition, loaded, equals its
 * fold.
 *
 * SC_CRASH_KILLS sets the number of kills of each test (default 200, and
 * 120 with a budget). The child is a fresh exec of this program, so it
 * reads SC_KILLPOINT anew.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "statecache/store.h"
#include "tests/support/refstate.h"
#include "tests/support/store_testkit.h"

/* Without kill points the children die only by the parent's kill. */
#ifndef SC_KILLPOINTS
#error "crash_store needs a test build with kill points (-DSC_KILLPOINTS)"
#endif

#define CHILD_MAX_EVENTS 200000
#define INDEX_LAG	 7 /* entity_index catches up every few appends */
#define NPART		 12
#define BUDGET		 6000

static uint64_t seed;
/* The run with a memory budget (test_crash_budget). */
static bool budget;
static char part_names[NPART][16];
static sc_str parts[NPART];

/* Entities of the workload; fewer with a budget, so reads find them. */
static unsigned nent(void)
{
	return budget ? 16 : 64;
}

/* The checkpoint thread runs every few appends. */
static uint64_t checkpoint_tail(void)
{
	return budget ? 24 : 40;
}

static void parts_init(void)
{
	parts[0] = (sc_str){"", 0};
	for (int i = 1; i < NPART; i++) {
		snprintf(part_names[i], sizeof part_names[i], "q%02d", i);
		parts[i] = (sc_str){part_names[i], strlen(part_names[i])};
	}
}

/* The generated event; with a budget, in a partition drawn from its
 * position. */
static void event_at(uint64_t position, tk_event *out)
{
	tk_event_gen(seed, position - 1, nent(), (int64_t)position, out);
	if (budget) {
		uint64_t h = position * 0x9e3779b97f4a7c15ull;
		out->ev.partition = parts[(h >> 33) % NPART];
	}
}

/* With a budget: reads that load cold partitions and evict others.
 * Returns 0, or the child's exit code. */
static int child_reads(sc_store *s, sc_reader *rd, uint64_t *r)
{
	for (int k = 0; k < 2; k++) {
		const sc_entity *e;
		sc_error err;
		char id[16];
		int idn = snprintf(id, sizeof id, "e%u",
				   (unsigned)(tk_rand(r) % nent()));
		int grc = sc_store_get_in(s, rd, parts[tk_rand(r) % NPART],
					  (sc_str){id, (size_t)idn}, &e, &err);
		sc_reader_end(rd);
		if (grc && grc != SC_NOTFOUND) {
			fprintf(stderr, "child: get_in: %s\n", err.message);
			return 5;
		}
	}
	return 0;
}

/* ---- the child ----------------------------------------------------------- */

static int child_main(const char *dir, int durability, int ack_fd)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = durability ? SC_DURABILITY_FULL : SC_DURABILITY_NOSYNC;
	o.snapshot_keep = 2;
	o.cache.seed = seed | 1;
	o.index_lag = INDEX_LAG;
	/* Checkpoints every few appends, by the checkpoint thread and by
	 * the child itself. */
	o.checkpoint_tail = checkpoint_tail();
	o.checkpoint_entities_per_chunk = 4;
	o.memory_budget = budget ? BUDGET : 0;
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err)) {
		fprintf(stderr, "child: open: %s\n", err.message);
		return 2;
	}
	uint64_t r = seed ^ (uint64_t)getpid();
	sc_reader *rd;
	if (sc_reader_open(sc_store_cache(s), &rd, &err)) {
		fprintf(stderr, "child: reader: %s\n", err.message);
		return 2;
	}
	tk_event g[8];
	sc_event batch[8];
	for (;;) {
		uint64_t last = sc_store_last_position(s);
		if (last >= CHILD_MAX_EVENTS)
			break;
		size_t n = 1 + tk_rand(&r) % 8;
		for (size_t k = 0; k < n; k++) {
			event_at(last + 1 + k, &g[k]);
			batch[k] = g[k].ev;
		}
		if (sc_store_append(s, batch, n, NULL, &err)) {
			fprintf(stderr, "child: append: %s\n", err.message);
			return 3;
		}
		uint64_t acked = last + n;
		if (write(ack_fd, &acked, sizeof acked) != sizeof acked)
			return 4;
		int rc = budget ? child_reads(s, rd, &r) : 0;
		if (rc)
			return rc;
		/* Whole-store snapshots need every partition resident. */
		if (!budget && tk_rand(&r) % 16 == 0 &&
		    sc_store_snapshot(s, NULL, &err)) {
			fprintf(stderr, "child: snapshot: %s\n", err.message);
			return 5;
		}
		if (tk_rand(&r) % 16 == 0 &&
		    sc_store_checkpoint(
			s, budget ? parts[tk_rand(&r) % NPART] : parts[0], NULL,
			&err)) {
			fprintf(stderr, "child: checkpoint: %s\n", err.message);
			return 6;
		}
	}
	sc_reader_close(rd);
	sc_store_close(s);
	return 0;
}

/* ---- the parent ---------------------------------------------------------- */

static const char *const killpoints_budget[] = {
    "residency_load_before_promote",  "residency_load_before_promote",
    "residency_evict_before_promote", "residency_evict_before_promote",
    "append_before_commit",	      "append_after_commit",
    "checkpoint_before_write",	      "checkpoint_mid_write",
    "checkpoint_before_commit",	      "checkpoint_load",
};

static const char *const killpoints[] = {
    "append_before_commit",
    "append_after_commit",
    "snapshot_before_write",
    "snapshot_mid_write",
    "restore_mid",
    "restore_chunk",
    "checkpoint_before_write",
    "checkpoint_mid_write",
    "checkpoint_before_commit",
    "checkpoint_load",
};

typedef struct checker {
	uint64_t next; /* next position expected */
	int bad;
} checker;

static int check_event(void *ctx, const sc_event *ev)
{
	checker *c = ctx;
	tk_event want;
	event_at(c->next, &want);
	want.ev.position = c->next;
	if (ev->position != c->next || !tk_event_equal(ev, &want.ev)) {
		fprintf(stderr,
			"event at position %llu is not its "
			"deterministic value\n",
			(unsigned long long)c->next);
		c->bad = 1;
		return 1;
	}
	c->next++;
	return 0;
}

typedef struct positions {
	uint64_t next_expected, last;
	const char *id;
	size_t id_len;
	int bad;
} positions;

/* Next position after `after` whose deterministic event is of p->id in
 * the default partition (the entity sc_store_entity_events reads). */
static uint64_t next_of(const positions *p, uint64_t after)
{
	for (uint64_t q = after + 1; q <= p->last; q++) {
		tk_event g;
		event_at(q, &g);
		if (g.ev.entity.len == p->id_len && !g.ev.partition.len &&
		    memcmp(g.ev.entity.ptr, p->id, p->id_len) == 0)
			return q;
	}
	return p->last + 1;
}

static int check_entity_event(void *ctx, const sc_event *ev)
{
	positions *p = ctx;
	if (ev->position != p->next_expected) {
		fprintf(stderr,
			"entity %.*s: read position %llu, expected "
			"%llu\n",
			(int)p->id_len, p->id, (unsigned long long)ev->position,
			(unsigned long long)p->next_expected);
		p->bad = 1;
		return 1;
	}
	p->next_expected = next_of(p, ev->position);
	return 0;
}

/* entity_index holds exactly the positions up to meta index_through, and
 * an entity's events read through it and the tail are the log's. */
static void check_index(sc_store *s, uint64_t last, uint64_t *r)
{
	size_t rows;
	uint64_t through;
	assert_true(tk_index_state(s, &rows, &through));
	assert_true(through <= last);
	assert_int_equal(rows, through);
	char id[16];
	int n = snprintf(id, sizeof id, "e%u", (unsigned)(tk_rand(r) % nent()));
	positions p = {0, last, id, (size_t)n, 0};
	p.next_expected = next_of(&p, 0);
	assert_int_equal(sc_store_entity_events(s, (sc_str){id, (size_t)n}, 0,
						0, check_entity_event, &p,
						NULL),
			 0);
	assert_int_equal(p.bad, 0);
	assert_int_equal(p.next_expected, last + 1);
}

static pid_t spawn_child(const char *dir, int durability, const char *kp,
			 int *read_fd)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		if (kp)
			setenv("SC_KILLPOINT", kp, 1);
		else
			unsetenv("SC_KILLPOINT");
		char fd_s[16], seed_s[32], dur_s[4];
		snprintf(fd_s, sizeof fd_s, "%d", fds[1]);
		snprintf(seed_s, sizeof seed_s, "%llu",
			 (unsigned long long)seed);
		snprintf(dur_s, sizeof dur_s, "%d", durability);
		execl("/proc/self/exe", "crash_store", "--child", dir, seed_s,
		      dur_s, fd_s, budget ? "budget" : "all", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	*read_fd = fds[0];
	return pid;
}

/* Read one acknowledgement; false at EOF (the child died or exited). */
static bool read_ack(int fd, uint64_t *v)
{
	size_t got = 0;
	uint8_t *p = (uint8_t *)v;
	while (got < sizeof *v) {
		ssize_t n = read(fd, p + got, sizeof *v - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/* With a budget: every partition of the store, loaded, is its fold. */
static void check_budget(const char *dir, const tk_refstate *m, long kill_no)
{
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	o.index_lag = INDEX_LAG;
	o.memory_budget = BUDGET;
	o.checkpoint_tail = checkpoint_tail();
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		fail_msg("reopen with a budget after kill %ld: %s", kill_no,
			 err.message);
	sc_reader *rd;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &rd, NULL), 0);
	for (int p = 0; p < NPART; p++) {
		const sc_view *view;
		assert_int_equal(
		    sc_store_begin_in(s, rd, parts[p], &view, &err), 0);
		char why[256];
		if (!tk_refstate_check_partition(m, view, parts[p], why,
						 sizeof why))
			fail_msg("kill %ld: partition %d differs (seed %llu): "
				 "%s",
				 kill_no, p, (unsigned long long)seed, why);
		sc_reader_end(rd);
	}
	sc_reader_close(rd);
	sc_store_close(s);
}

static void run_crash_recovery(void)
{
	const char *k = getenv("SC_CRASH_KILLS");
	long kills = k && *k ? strtol(k, NULL, 10) : budget ? 120 : 200;
	const char *const *kps = budget ? killpoints_budget : killpoints;
	size_t nkps = budget ? sizeof killpoints_budget / sizeof *kps
			     : sizeof killpoints / sizeof *kps;
	char tmpl[] = "/tmp/sc_crash_store.XXXXXX";
	char *root = mkdtemp(tmpl);
	assert_non_null(root);
	char dir[256];
	uint64_t r = seed;
	tk_refstate *m = NULL;
	uint64_t modeled = 0; /* the model holds positions 1..modeled */
	int generation = 0;
	long by_killpoint = 0, by_parent = 0;

	for (long kill_no = 0; kill_no < kills; kill_no++) {
		/* A fresh store now and then keeps each run short. */
		if (kill_no % 25 == 0) {
			snprintf(dir, sizeof dir, "%s/g%d", root, generation++);
			tk_refstate_free(m);
			m = tk_refstate_new();
			modeled = 0;
		}
		int durability = tk_rand(&r) % 8 == 0; /* 1: full */
		char kp[64];
		const char *kpp = NULL;
		if (tk_rand(&r) % 3 == 0) {
			size_t i = tk_rand(&r) % nkps;
			snprintf(kp, sizeof kp, "%s:%u", kps[i],
				 1 + (unsigned)(tk_rand(&r) % 4));
			kpp = kp;
		}
		int fd;
		pid_t pid = spawn_child(dir, durability, kpp, &fd);
		uint64_t acks = tk_rand(&r) % 40, last_ack = 0, v;
		uint64_t got = 0;
		while (got < acks && read_ack(fd, &v)) {
			assert_true(v > last_ack);
			last_ack = v;
			got++;
		}
		/* A random short spin: the kill lands anywhere in the next
		 * append or snapshot. */
		volatile uint64_t spin = tk_rand(&r) % 200000;
		while (spin)
			spin--;
		kill(pid, SIGKILL);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* Acks written before the kill are committed too. */
		while (read_ack(fd, &v)) {
			assert_true(v > last_ack);
			last_ack = v;
		}
		close(fd);
		if (WIFEXITED(status)) {
			if (WEXITSTATUS(status) != 0)
				fail_msg("child exited with %d",
					 WEXITSTATUS(status));
		} else {
			assert_true(WIFSIGNALED(status));
			assert_int_equal(WTERMSIG(status), SIGKILL);
		}
		if (got < acks && kpp)
			by_killpoint++;
		else
			by_parent++;

		/* Recover and check. */
		sc_store_options o = {0};
		o.create = true;
		o.durability = SC_DURABILITY_NOSYNC;
		o.cache.seed = seed | 1;
		o.index_lag = INDEX_LAG;
		sc_store *s = NULL;
		sc_error err;
		int rc = sc_store_open(dir, &o, &s, &err);
		if (rc)
			fail_msg("reopen after kill %ld: %s", kill_no,
				 err.message);
		uint64_t last = sc_store_last_position(s);
		if (last < last_ack)
			fail_msg("kill %ld: log ends at %llu, %llu was "
				 "acknowledged",
				 kill_no, (unsigned long long)last,
				 (unsigned long long)last_ack);
		checker c = {1, 0};
		assert_int_equal(
		    sc_store_events(s, 1, 0, check_event, &c, NULL), 0);
		assert_int_equal(c.bad, 0);
		assert_int_equal(c.next, last + 1);
		for (uint64_t p = modeled + 1; p <= last; p++) {
			tk_event g;
			event_at(p, &g);
			g.ev.position = p;
			tk_refstate_apply(m, &g.ev);
		}
		modeled = last;
		if (!tk_cache_matches(sc_store_cache(s), m))
			fail_msg("kill %ld: restored state differs from the "
				 "replay (seed %llu)",
				 kill_no, (unsigned long long)seed);
		check_index(s, last, &r);
		if (budget) {
			sc_store_close(s);
			check_budget(dir, m, kill_no);
			if (sc_store_open(dir, &o, &s, &err))
				fail_msg("reopen after kill %ld: %s", kill_no,
					 err.message);
		}
		/* One more append works. */
		tk_event g;
		event_at(last + 1, &g);
		uint64_t first = 0;
		assert_int_equal(sc_store_append(s, &g.ev, 1, &first, NULL), 0);
		assert_int_equal(first, last + 1);
		g.ev.position = last + 1;
		tk_refstate_apply(m, &g.ev);
		modeled = last + 1;
		sc_store_close(s);
	}
	printf("%ld kills: %ld at kill points, %ld by the parent\n", kills,
	       by_killpoint, by_parent);
	tk_refstate_free(m);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

static void test_crash_recovery(void **state)
{
	SC_UNUSED(state);
	budget = false;
	run_crash_recovery();
}

static void test_crash_budget(void **state)
{
	SC_UNUSED(state);
	budget = true;
	run_crash_recovery();
}

int main(int argc, char **argv)
{
	parts_init();
	if (argc == 7 && strcmp(argv[1], "--child") == 0) {
		seed = strtoull(argv[3], NULL, 10);
		budget = strcmp(argv[6], "budget") == 0;
		return child_main(argv[2], atoi(argv[4]), atoi(argv[5]));
	}
	seed = tk_seed("crash_store");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crash_recovery),
	    cmocka_unit_test(test_crash_budget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
