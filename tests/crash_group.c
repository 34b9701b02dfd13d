/*
 * Crash recovery under group commit: a child process runs several
 * appender threads on one store; each appends batches of tagged events
 * (generation, thread, batch, index, size), some refused by a projector,
 * and after every append that returns success writes the batch's record
 * (its tag and first position) to a side file: that is what "acknowledged"
 * means. The parent SIGKILLs the child after a random number of
 * acknowledgements, or lets it die at a named kill point of the append
 * path (before or after the commit of a shared transaction, before a retry
 * after a projector's refusal). After every kill it reopens the store and
 * checks: every acknowledged batch is in the log, whole, at the positions
 * its caller got; every batch in the log is whole and there once; no
 * refused batch is there; the cache equals the log folded into the
 * reference state.
 *
 * SC_CRASH_KILLS sets the number of kills (default 60; 20 with
 * SC_TEST_SHORT). The child is a fresh exec of this program.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "statecache/store.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

#ifndef SC_KILLPOINTS
#error "crash_group needs a test build with kill points (-DSC_KILLPOINTS)"
#endif

#define THREADS	  6
#define NENT	  40
#define BATCH_MAX 9
#define NTAGS	  5 /* generation, thread, batch, index, size */

static uint64_t seed;

/* What a child thread writes to the side file after an append returned
 * success (one write of a whole record: O_APPEND keeps records whole). */
typedef struct ack {
	int64_t gen, thread, batch;
	uint64_t first, n;
} ack;

/* ---- the child ----------------------------------------------------------- */

typedef struct child {
	sc_store *store;
	int64_t gen;
	unsigned thread;
	int ack_fd, pipe_fd;
} child;

static int refuse_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
			sc_error *err)
{
	SC_UNUSED(ctx);
	SC_UNUSED(txn);
	if (ev->actor.len == 4 && memcmp(ev->actor.ptr, "veto", 4) == 0)
		return sc_error_set(err, 1, "refused");
	return 0;
}

static void *child_thread(void *p)
{
	child *c = p;
	uint64_t r = seed ^ (uint64_t)getpid() ^ (c->thread * 0x9E3779B9ull);
	sc_attr attrs[BATCH_MAX][NTAGS + 1];
	sc_event batch[BATCH_MAX];
	char ids[BATCH_MAX][16];
	for (int64_t b = 0;; b++) {
		unsigned n = 1 + (unsigned)tk_rand_below(&r, BATCH_MAX);
		bool veto = tk_rand_below(&r, 8) == 0;
		unsigned veto_at = (unsigned)tk_rand_below(&r, n);
		int64_t tag[NTAGS] = {c->gen, c->thread, b, 0, n};
		for (unsigned k = 0; k < n; k++) {
			tag[3] = k;
			static const char *names[NTAGS + 1] = {"g", "t", "b",
							       "k", "n", "v"};
			for (int i = 0; i <= NTAGS; i++) {
				attrs[k][i].name = (sc_str){names[i], 1};
				attrs[k][i].value.type = SC_VALUE_INT;
				attrs[k][i].value.u.i =
				    i < NTAGS ? tag[i]
					      : (int64_t)tk_rand_below(&r, 100);
			}
			int len = snprintf(ids[k], sizeof ids[k], "e%u",
					   (unsigned)tk_rand_below(&r, NENT));
			batch[k] = (sc_event){
			    .entity = {ids[k], (size_t)len},
			    .type = SC_EVENT_SET,
			    .attrs = attrs[k],
			    .nattrs = NTAGS + 1,
			    .time = 1 + (int64_t)tk_rand_below(&r, 1000000),
			    .actor = veto && k == veto_at ? (sc_str){"veto", 4}
							  : (sc_str){"ok", 2}};
		}
		uint64_t first = 0;
		sc_error err;
		int rc = sc_store_append(c->store, batch, n, &first, &err);
		if (rc != (veto ? SC_EPROJECTOR : 0)) {
			fprintf(stderr, "child: append: %d: %s\n", rc,
				rc ? err.message : "accepted a refused batch");
			_exit(3);
		}
		if (veto)
			continue;
		ack a = {c->gen, c->thread, b, first, n};
		if (write(c->ack_fd, &a, sizeof a) != sizeof a)
			_exit(4);
		char one = 1;
		if (write(c->pipe_fd, &one, 1) != 1)
			_exit(4);
	}
	return NULL;
}

static int child_main(const char *dir, int64_t gen, int durability,
		      const char *ack_path, int pipe_fd)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = durability ? SC_DURABILITY_FULL : SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	o.index_lag = 11;
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err)) {
		fprintf(stderr, "child: open: %s\n", err.message);
		return 2;
	}
	sc_projector p = {"refuse", refuse_apply, NULL, NULL, NULL};
	if (sc_store_add_projector(s, &p, &err))
		return 2;
	int ack_fd = open(ack_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (ack_fd < 0)
		return 2;
	child c[THREADS];
	pthread_t th[THREADS];
	for (unsigned t = 0; t < THREADS; t++) {
		c[t] = (child){s, gen, t, ack_fd, pipe_fd};
		pthread_create(&th[t], NULL, child_thread, &c[t]);
	}
	/* The threads append until the process is killed. */
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	return 0;
}

/* ---- the parent ---------------------------------------------------------- */

static const char *killpoints[] = {
    "group_before_commit",  "group_after_commit",  "group_retry",
    "append_before_commit", "append_after_commit",
};

typedef struct batch_key {
	int64_t gen, thread, batch;
} batch_key;

static int key_cmp(const void *a, const void *b)
{
	const batch_key *x = a, *y = b;
	if (x->gen != y->gen)
		return x->gen < y->gen ? -1 : 1;
	if (x->thread != y->thread)
		return x->thread < y->thread ? -1 : 1;
	if (x->batch != y->batch)
		return x->batch < y->batch ? -1 : 1;
	return 0;
}

/* The log, read back: each event's tags, and the model it folds into. */
typedef struct log_read {
	int64_t (*tags)[NTAGS];
	uint64_t n, cap;
	tk_refstate *model;
	int bad;
} log_read;

static int read_event(void *ctx, const sc_event *ev)
{
	log_read *l = ctx;
	if (ev->position != l->n + 1 || ev->nattrs != NTAGS + 1 ||
	    (ev->actor.len == 4 && memcmp(ev->actor.ptr, "veto", 4) == 0)) {
		fprintf(stderr,
			"log: position %llu is not an accepted "
			"event of the stream\n",
			(unsigned long long)ev->position);
		l->bad = 1;
		return 1;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->tags = realloc(l->tags, l->cap * sizeof *l->tags);
		assert_non_null(l->tags);
	}
	for (int i = 0; i < NTAGS; i++)
		l->tags[l->n][i] = ev->attrs[i].value.u.i;
	l->n++;
	tk_refstate_apply(l->model, ev);
	return 0;
}

static void check_store(const char *dir, const char *ack_path, long kill_no)
{
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	o.cache.seed = seed | 1;
	o.index_lag = 11;
	sc_store *s = NULL;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		fail_msg("reopen after kill %ld: %s", kill_no, err.message);
	log_read l = {.model = tk_refstate_new()};
	assert_int_equal(sc_store_events(s, 1, 0, read_event, &l, NULL), 0);
	assert_int_equal(l.bad, 0);
	assert_int_equal(l.n, sc_store_last_position(s));
	/* Every batch in the log whole, each once. */
	batch_key *keys = malloc((l.n + 1) * sizeof *keys);
	assert_non_null(keys);
	size_t nkeys = 0;
	for (uint64_t p = 0; p < l.n;) {
		int64_t *t = l.tags[p];
		if (t[3] != 0 || t[4] < 1 || p + (uint64_t)t[4] > l.n)
			fail_msg(
			    "kill %ld: position %llu starts no whole batch",
			    kill_no, (unsigned long long)(p + 1));
		for (int64_t k = 1; k < t[4]; k++) {
			int64_t *u = l.tags[p + (uint64_t)k];
			if (u[0] != t[0] || u[1] != t[1] || u[2] != t[2] ||
			    u[3] != k || u[4] != t[4])
				fail_msg("kill %ld: the batch at position %llu "
					 "is not whole",
					 kill_no, (unsigned long long)(p + 1));
		}
		keys[nkeys++] = (batch_key){t[0], t[1], t[2]};
		p += (uint64_t)t[4];
	}
	qsort(keys, nkeys, sizeof *keys, key_cmp);
	for (size_t i = 1; i < nkeys; i++)
		if (key_cmp(&keys[i - 1], &keys[i]) == 0)
			fail_msg("kill %ld: a batch is in the log twice",
				 kill_no);
	free(keys);
	/* Every acknowledged batch where its caller was told. */
	FILE *f = fopen(ack_path, "rb");
	ack a;
	size_t acks = 0;
	while (f && fread(&a, sizeof a, 1, f) == 1) {
		acks++;
		if (a.first < 1 || a.first + a.n - 1 > l.n)
			fail_msg("kill %ld: acknowledged batch at %llu..%llu "
				 "is beyond the log's end %llu",
				 kill_no, (unsigned long long)a.first,
				 (unsigned long long)(a.first + a.n - 1),
				 (unsigned long long)l.n);
		int64_t *t = l.tags[a.first - 1];
		if (t[0] != a.gen || t[1] != a.thread || t[2] != a.batch ||
		    t[3] != 0 || (uint64_t)t[4] != a.n)
			fail_msg("kill %ld: position %llu does not hold the "
				 "acknowledged batch",
				 kill_no, (unsigned long long)a.first);
	}
	if (f)
		fclose(f);
	if (!tk_cache_matches(sc_store_cache(s), l.model))
		fail_msg("kill %ld: the state differs from the log (seed "
			 "%llu)",
			 kill_no, (unsigned long long)seed);
	assert_int_equal(sc_store_verify(s, NULL), 0);
	sc_store_close(s);
	tk_refstate_free(l.model);
	free(l.tags);
}

typedef struct child_run {
	const char *dir, *ack_path;
	const char *killpoint; /* NULL: none */
	long kill_no;
	int durability;
} child_run;

/* This program again with --child, an ack byte written to fd per
 * acknowledged append. */
static int exec_child(void *arg, int fd)
{
	const child_run *c = arg;
	tk_killpoint_arm(c->killpoint);
	char fd_s[16], seed_s[32], gen_s[32], dur_s[4];
	snprintf(fd_s, sizeof fd_s, "%d", fd);
	snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
	snprintf(gen_s, sizeof gen_s, "%ld", c->kill_no);
	snprintf(dur_s, sizeof dur_s, "%d", c->durability);
	execl("/proc/self/exe", "crash_group", "--child", c->dir, seed_s, gen_s,
	      dur_s, c->ack_path, fd_s, (char *)NULL);
	return 127;
}

static void test_crash_group(void **state)
{
	SC_UNUSED(state);
	const char *k = getenv("SC_CRASH_KILLS");
	long kills = k && *k		       ? strtol(k, NULL, 10)
		     : getenv("SC_TEST_SHORT") ? 20
					       : 60;
	const char *root = tk_tmproot_create("crash_group");
	assert_non_null(root);
	char dir[300], ack_path[300];
	uint64_t r = seed;
	long by_killpoint = 0;
	for (long kill_no = 0; kill_no < kills; kill_no++) {
		/* A fresh store now and then keeps each check short. */
		if (kill_no % 20 == 0) {
			snprintf(dir, sizeof dir, "%s/g%ld", root, kill_no);
			snprintf(ack_path, sizeof ack_path, "%s/acks%ld", root,
				 kill_no);
		}
		int durability = tk_rand_below(&r, 4) == 0;
		char kp[64] = "";
		if (tk_rand_below(&r, 2) == 0)
			snprintf(
			    kp, sizeof kp, "%s:%u",
			    killpoints[tk_rand_below(
				&r, sizeof killpoints / sizeof killpoints[0])],
			    1 + (unsigned)tk_rand_below(&r, 6));
		child_run c = {dir, ack_path, *kp ? kp : NULL, kill_no,
			       durability};
		int up;
		pid_t pid = tk_child_start(exec_child, &c, &up);
		/* Wait for a random number of acknowledgements (fewer if
		 * the child dies at its kill point first). */
		uint64_t want = 1 + tk_rand_below(&r, 60), got = 0;
		char buf[64];
		while (got < want) {
			ssize_t n = read(up, buf,
					 want - got < sizeof buf ? want - got
								 : sizeof buf);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (uint64_t)n;
		}
		kill(pid, SIGKILL);
		int status = tk_child_wait(pid);
		close(up);
		if (!tk_killed(status, SIGKILL))
			fail_msg("kill %ld: the child did not die by SIGKILL "
				 "(status %d)",
				 kill_no, status);
		if (got < want)
			by_killpoint++;
		check_store(dir, ack_path, kill_no);
	}
	printf("%ld kills, %ld at kill points\n", kills, by_killpoint);
	assert_int_equal(tk_tmproot_remove(), 0);
}

int main(int argc, char **argv)
{
	if (argc == 8 && strcmp(argv[1], "--child") == 0) {
		seed = strtoull(argv[3], NULL, 10);
		return child_main(argv[2], strtoll(argv[4], NULL, 10),
				  atoi(argv[5]), argv[6], atoi(argv[7]));
	}
	seed = tk_seed("crash_group");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crash_group),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
