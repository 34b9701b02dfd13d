/*
 * Ingest of JSON Lines: the demo's event stream (cli/gen.c: 1,000,000
 * events over 100,000 entities, seed 42) written to a file, then ingested
 * into a fresh store through the code `statecache ingest FILE` runs
 * (sc_cli_file_source + sc_cli_ingest_run), durability full, 10,000 events
 * per transaction; then the same with durability nosync, where the disk's
 * flushes do not hide the work of the threads.
 *
 *   {"name":"ingest_json","durability":"full","batch":10000,"events":N,
 *    "threads":T,"events_per_s":X,"peer":"one_thread",
 *    "peer_events_per_s":Y,"ratio":X/Y,"append_alone_events_per_s":Z,
 *    "of_append_alone":X/Z}
 *
 * T decoding threads (the command's default: the cores online, at most 4)
 * against the same ingest on one thread (--threads 0: read, decode,
 * validate and append one batch after the other), and against the floor
 * of any ingest, its writer alone: the same events decoded beforehand and
 * only their sc_store_append calls timed (append_alone_events_per_s;
 * of_append_alone is the share of it the ingest reaches). Usage:
 * ingest [EVENTS] (default 1000000).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "cli/gen.h"
#include "cli/ingest.h"
#include "cli/json_event.h"
#include "statecache/store.h"

#define BATCH	 10000
#define ENTITIES 100000
#define SEED	 42
/* 2026-11-23T00:00:00Z, as the demo */
#define T0 (1795392000LL * 1000000000LL)

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench ingest: %s: %s\n", what, why);
	exit(1);
}

static void write_stream(const char *path, uint64_t n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		die(path, strerror(errno));
	sc_cli_gen g;
	sc_cli_gen_init(&g, SEED, ENTITIES, T0);
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	for (uint64_t i = 0; i < n; i++) {
		sc_cli_buf_reset(&b);
		if (sc_cli_event_encode(&b, sc_cli_gen_next(&g), false) ||
		    sc_cli_buf_add(&b, "\n", 1))
			die("encode", "out of memory");
		if (fwrite(b.ptr, 1, b.len, f) != b.len)
			die(path, strerror(errno));
	}
	sc_cli_buf_free(&b);
	if (fclose(f))
		die(path, strerror(errno));
}

/* Ingest `path` into a fresh store at `dir`; events/s. */
static double ingest(const char *path, const char *dir, sc_durability dur,
		     unsigned threads, uint64_t n)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = dur;
	sc_store *st;
	sc_error err;
	if (sc_store_open(dir, &o, &st, &err))
		die(dir, err.message);
	FILE *in = fopen(path, "rb");
	if (!in)
		die(path, strerror(errno));
	sc_cli_file_source src;
	if (sc_cli_file_source_init(&src, in))
		die("source", "out of memory");
	sc_cli_ingest_opts opt = {.batch = BATCH,
				  .threads = threads,
				  .idle_ms = SC_CLI_IDLE_MS_DEFAULT};
	sc_cli_ingest_result res;
	if (sc_cli_ingest_run(st, &src.base, &opt, &res, &err))
		die("ingest", err.message);
	if (res.events != n)
		die("ingest", "not every event was ingested");
	sc_cli_file_source_free(&src);
	fclose(in);
	sc_store_close(st);
	return (double)res.events / res.seconds;
}

/*
 * The floor: the same events decoded beforehand, batch by batch, and
 * only their sc_store_append timed. An ingest can go no faster than its
 * writer alone; events/s of the appends.
 */
static double append_alone(const char *path, const char *dir, sc_durability dur,
			   uint64_t n)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = dur;
	sc_store *st;
	sc_error err;
	if (sc_store_open(dir, &o, &st, &err))
		die(dir, err.message);
	FILE *in = fopen(path, "rb");
	if (!in)
		die(path, strerror(errno));
	sc_cli_file_source src;
	sc_cli_event *dec = calloc(BATCH, sizeof *dec);
	sc_event *evs = calloc(BATCH, sizeof *evs);
	if (sc_cli_file_source_init(&src, in) || !dec || !evs)
		die("append_alone", "out of memory");
	for (size_t i = 0; i < BATCH; i++)
		sc_cli_event_init(&dec[i]);
	double seconds = 0;
	uint64_t done = 0;
	for (;;) {
		size_t k = 0;
		const char *line;
		size_t len;
		while (k < BATCH &&
		       src.base.next(&src.base, &line, &len, NULL, &err) == 1) {
			if (sc_cli_event_decode(&dec[k], line, len, &err))
				die("decode", err.message);
			evs[k] = dec[k].ev;
			k++;
		}
		if (k == 0)
			break;
		double t0 = bench_now();
		if (sc_store_append(st, evs, k, NULL, &err))
			die("append", err.message);
		seconds += bench_now() - t0;
		done += k;
	}
	if (done != n)
		die("append_alone", "not every event was appended");
	for (size_t i = 0; i < BATCH; i++)
		sc_cli_event_clear(&dec[i]);
	free(dec);
	free(evs);
	sc_cli_file_source_free(&src);
	fclose(in);
	sc_store_close(st);
	return (double)done / seconds;
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
	if (n == 0)
		die("usage", "ingest [EVENTS]");
	char tmpl[] = "/tmp/sc_bench_ingest.XXXXXX";
	char *root = mkdtemp(tmpl);
	if (!root)
		die("mkdtemp", strerror(errno));
	char path[128], dir[160], cmd[160];
	snprintf(path, sizeof path, "%s/stream.jsonl", root);
	write_stream(path, n);
	unsigned threads = sc_cli_ingest_default_threads();
	static const struct {
		sc_durability dur;
		const char *name;
	} modes[] = {{SC_DURABILITY_FULL, "full"},
		     {SC_DURABILITY_NOSYNC, "nosync"}};
	for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		snprintf(dir, sizeof dir, "%s/pipeline-%s", root,
			 modes[m].name);
		double ours = ingest(path, dir, modes[m].dur, threads, n);
		snprintf(dir, sizeof dir, "%s/one_thread-%s", root,
			 modes[m].name);
		double peer = ingest(path, dir, modes[m].dur, 0, n);
		snprintf(dir, sizeof dir, "%s/append_alone-%s", root,
			 modes[m].name);
		double floor = append_alone(path, dir, modes[m].dur, n);
		printf("{\"name\":\"ingest_json\",\"durability\":\"%s\","
		       "\"batch\":%d,\"events\":%llu,\"threads\":%u,"
		       "\"events_per_s\":%.0f,\"peer\":\"one_thread\","
		       "\"peer_events_per_s\":%.0f,\"ratio\":%.3f,"
		       "\"append_alone_events_per_s\":%.0f,"
		       "\"of_append_alone\":%.3f}\n",
		       modes[m].name, BATCH, (unsigned long long)n, threads,
		       ours, peer, ours / peer, floor, ours / floor);
		fflush(stdout);
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "bench ingest: could not remove %s\n", root);
	return 0;
}
