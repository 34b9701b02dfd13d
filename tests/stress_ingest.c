/*
 * The ingest pipeline of the statecache command (cli/ingest.h) with its
 * threads, under the sanitizers (ThreadSanitizer in make test):
 *
 * - random runs (decoding threads 0 to 4, random batch sizes, a bad line at
 *   a random place or none): the store holds exactly the lines before the
 *   bad line, in order, the error names it, and the result counts agree;
 * - a slow producer on a pipe that writes a few lines and waits for their
 *   acknowledgement before it writes more: every chunk is committed while
 *   the pipe stays open (the idle commit), and the log is the whole input;
 * - the file source's wait: a wait past its limit only looks at the
 *   input, it never blocks.
 *
 * The seed is printed; set SC_TEST_SEED to replay a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gen.h"
#include "cli/ingest.h"
#include "cli/json_event.h"
#include "statecache/store.h"
#include "tests/support/json_testkit.h"
#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"
#include "tests/support/testkit.h"

static uint64_t seed;

/* ===== an in-memory source ================================================ */

typedef struct mem_source {
	sc_cli_source base;
	char **lines;
	size_t n, next;
} mem_source;

static int mem_next(sc_cli_source *base, const char **line, size_t *len,
		    const sc_cli_wait *w, sc_error *err)
{
	(void)w;
	(void)err;
	mem_source *s = (mem_source *)base;
	if (s->next == s->n)
		return 0;
	*line = s->lines[s->next++];
	*len = strlen(*line);
	base->bytes_read += *len + 1;
	return 1;
}

/* A new store in a fresh directory below the temporary root. */
static sc_store *new_store(void)
{
	char dir[256];
	sc_store_options o = {0};
	o.durability = SC_DURABILITY_NOSYNC;
	return tk_store_create(dir, sizeof dir, &o);
}

/* The log re-encoded, compared line by line with `want`. */
typedef struct log_check {
	char **want;
	size_t n, seen;
	sc_cli_buf b;
	int bad;
} log_check;

static int check_event(void *ctx, const sc_event *ev)
{
	log_check *c = ctx;
	sc_cli_buf_reset(&c->b);
	if (c->seen >= c->n || ev->position != c->seen + 1 ||
	    sc_cli_event_encode(&c->b, ev, false) ||
	    strcmp(c->b.ptr, c->want[c->seen])) {
		c->bad = 1;
		return 1;
	}
	c->seen++;
	return 0;
}

static void expect_log(sc_store *s, char **want, size_t n)
{
	log_check c = {.want = want, .n = n};
	sc_cli_buf_init(&c.b);
	sc_error err;
	assert_int_equal(sc_store_events(s, 1, 0, check_event, &c, &err), 0);
	sc_cli_buf_free(&c.b);
	if (c.bad || c.seen != n)
		fail_msg("the log differs from the input at event %zu of %zu",
			 c.seen + 1, n);
	assert_int_equal(sc_store_last_position(s), n);
}

/* ===== random runs ======================================================== */

static void test_random_runs(void **state)
{
	(void)state;
	uint64_t r = seed;
	int runs = getenv("SC_TEST_SHORT") ? 12 : 60;
	for (int run = 0; run < runs; run++) {
		size_t n = 200 + tk_rand_below(&r, 2800);
		char **lines = tk_json_lines(tk_rand(&r), 37, n + 1);
		/* a bad line at a random place, or none */
		size_t bad = tk_rand_below(&r, 4) ? tk_rand_below(&r, n) : n;
		if (bad < n) {
			free(lines[bad]);
			lines[bad] =
			    strdup(tk_rand_below(&r, 2)
				       ? "{\"entity\":\"x\",\"type\":\"set\","
					 "\"attrs\":{\"v\":[1]}}"
				       : "{\"entity\":\"x\",\"type\":");
		}
		mem_source src = {.lines = lines, .n = n};
		src.base.next = mem_next;
		src.base.wake_fd = -1;
		sc_cli_ingest_opts opt = {
		    .batch = 1 + tk_rand_below(&r, 300),
		    .threads = (unsigned)tk_rand_below(&r, 5),
		    .idle_ms = 100,
		};
		sc_store *s = new_store();
		sc_cli_ingest_result res;
		sc_error err;
		sc_error_clear(&err);
		int rc = sc_cli_ingest_run(s, &src.base, &opt, &res, &err);
		if (bad < n) {
			char want[64];
			snprintf(want, sizeof want, "line %zu: ", bad + 1);
			if (rc != SC_EINVAL ||
			    strncmp(err.message, want, strlen(want)))
				fail_msg("run %d (batch %zu, %u threads, bad "
					 "line %zu): rc %d, \"%s\"",
					 run, opt.batch, opt.threads, bad + 1,
					 rc, err.message);
			assert_int_equal(res.lines, bad + 1);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(res.lines, n);
		}
		assert_int_equal(res.events, bad);
		assert_int_equal(res.batches,
				 (bad + opt.batch - 1) / opt.batch);
		expect_log(s, lines, bad);
		sc_store_close(s);
		tk_json_lines_free(lines, n + 1);
	}
}

/* ===== a slow producer ==================================================== */

typedef struct producer {
	char **lines;
	size_t n;
	int out;    /* the ingest's input, written here */
	FILE *acks; /* the ingest's acknowledgements, read here */
	size_t chunks;
	int failed;
} producer;

static void *producer_main(void *p)
{
	producer *pr = p;
	static const size_t chunk[] = {3, 1, 40, 2, 1, 17, 100, 5};
	size_t sent = 0;
	char ack[256];
	for (size_t k = 0; k < sizeof chunk / sizeof chunk[0]; k++) {
		for (size_t i = 0; i < chunk[k] && sent < pr->n; i++) {
			const char *l = pr->lines[sent++];
			if (write(pr->out, l, strlen(l)) < 0 ||
			    write(pr->out, "\n", 1) != 1) {
				pr->failed = errno;
				goto out;
			}
		}
		/* the pipe stays open: wait until those lines are committed */
		unsigned long long lines = 0;
		while (lines < sent) {
			if (!fgets(ack, sizeof ack, pr->acks) ||
			    sscanf(ack, "{\"lines\":%llu,", &lines) != 1) {
				pr->failed = EIO;
				goto out;
			}
		}
		pr->chunks++;
	}
out:
	close(pr->out);
	return NULL;
}

static void slow_producer(unsigned threads, int idle_ms)
{
	const size_t n = 169;
	char **lines = tk_json_lines(seed ^ threads, 37, n);
	int in[2], ack[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(ack), 0);
	FILE *fin = fdopen(in[0], "r");
	FILE *fack_w = fdopen(ack[1], "w");
	FILE *fack_r = fdopen(ack[0], "r");
	assert_non_null(fin);
	assert_non_null(fack_w);
	assert_non_null(fack_r);
	producer pr = {.lines = lines, .n = n, .out = in[1], .acks = fack_r};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, producer_main, &pr), 0);

	sc_cli_file_source src;
	assert_int_equal(sc_cli_file_source_init(&src, fin), 0);
	sc_store *s = new_store();
	/* a batch that never fills: only the idle timer commits */
	sc_cli_ingest_opts opt = {.batch = 100000,
				  .threads = threads,
				  .idle_ms = idle_ms,
				  .ack = fack_w};
	sc_cli_ingest_result res;
	sc_error err;
	int rc = sc_cli_ingest_run(s, &src.base, &opt, &res, &err);
	pthread_join(th, NULL);
	if (rc)
		fail_msg("slow producer: %s", err.message);
	assert_int_equal(pr.failed, 0);
	assert_int_equal(pr.chunks, 8);
	assert_int_equal(res.events, n);
	/* at least one commit per acknowledged chunk */
	assert_true(res.batches >= 8);
	expect_log(s, lines, n);
	sc_store_close(s);
	sc_cli_file_source_free(&src);
	fclose(fin);
	fclose(fack_w);
	fclose(fack_r);
	tk_json_lines_free(lines, n);
}

static void test_slow_producer(void **state)
{
	(void)state;
	slow_producer(2, 20);
	slow_producer(1, 0);
	slow_producer(0, 20);
}

/* ===== the file source's wait ============================================ */

static void test_file_source_wait(void **state)
{
	(void)state;
	/* a wait that blocked would hang: fail instead */
	alarm(60);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	FILE *f = fdopen(fds[0], "r");
	assert_non_null(f);
	sc_cli_file_source src;
	assert_int_equal(sc_cli_file_source_init(&src, f), 0);
	const char *line;
	size_t len;
	sc_error err;
	/* nothing to read and the linger limit passed: idle at once */
	sc_cli_wait past = {.idle_ms = -1, .until = sc_cli_now() - 1};
	assert_int_equal(src.base.next(&src.base, &line, &len, &past, &err),
			 SC_CLI_SOURCE_IDLE);
	sc_cli_wait zero = {.idle_ms = 0};
	assert_int_equal(src.base.next(&src.base, &line, &len, &zero, &err),
			 SC_CLI_SOURCE_IDLE);
	/* ... but what has arrived is still read */
	assert_int_equal(write(fds[1], "{}\n{", 4), 4);
	assert_int_equal(src.base.next(&src.base, &line, &len, &past, &err), 1);
	assert_int_equal(len, 2);
	assert_memory_equal(line, "{}", 2);
	/* a partial line is not a line */
	assert_int_equal(src.base.next(&src.base, &line, &len, &past, &err),
			 SC_CLI_SOURCE_IDLE);
	/* a short idle time runs out too */
	sc_cli_wait idle = {.idle_ms = 1};
	assert_int_equal(src.base.next(&src.base, &line, &len, &idle, &err),
			 SC_CLI_SOURCE_IDLE);
	/* the end: the partial line, then the end of input */
	close(fds[1]);
	assert_int_equal(src.base.next(&src.base, &line, &len, &past, &err), 1);
	assert_int_equal(len, 1);
	assert_int_equal(src.base.next(&src.base, &line, &len, NULL, &err), 0);
	sc_cli_file_source_free(&src);
	fclose(f);
	alarm(0);
}

int main(void)
{
	seed = tk_seed("stress_ingest");
	if (!tk_tmproot_create("stress_ingest"))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_random_runs),
	    cmocka_unit_test(test_slow_producer),
	    cmocka_unit_test(test_file_source_wait),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	tk_tmproot_remove(); /* says on stderr if it could not */
	return failed;
}
