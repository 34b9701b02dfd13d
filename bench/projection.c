/*
 * Projection catch-up: a log of 1,000,000 events (the workload's `set` of
 * 5 attributes over 100,000 entities) is written first; then an
 * at-least-once projection with a no-op handler starts from offset 0 and
 * the time until it has handled the last event is measured (batches of
 * 1024 events, an offset saved every 65536). One JSON line:
 *   {"name":"projection_catchup","events":N,"events_per_s":X}
 * SC_BENCH_EVENTS overrides N.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "statecache/projection.h"
#include "statecache/store.h"

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bench projection: %s: %s\n", what, msg);
	exit(1);
}

static int noop(void *ctx, sc_projection *p, MDB_txn *txn,
		const sc_event *const *evs, size_t n, sc_error *err)
{
	(void)p;
	(void)txn;
	(void)err;
	(void)evs;
	*(uint64_t *)ctx += n;
	return 0;
}

static void fill(sc_store *s, uint64_t n)
{
	enum { BATCH = 1000 };
	static sc_event evs[BATCH];
	static sc_attr attrs[BATCH][5];
	static char ids[BATCH][24];
	sc_error err;
	for (uint64_t pos = 1; pos <= n;) {
		size_t m = n - pos + 1 < BATCH ? (size_t)(n - pos + 1) : BATCH;
		for (size_t i = 0; i < m; i++) {
			uint64_t g = pos + i;
			int len =
			    snprintf(ids[i], sizeof ids[i], "entity-%08llu",
				     (unsigned long long)(g % 100000));
			sc_attr *a = attrs[i];
			a[0] = (sc_attr){
			    .name = {"count", 5},
			    .value = {.type = SC_VALUE_INT, .u.i = (int64_t)g}};
			a[1] = (sc_attr){.name = {"level", 5},
					 .value = {.type = SC_VALUE_DOUBLE,
						   .u.d = (double)g / 3.0}};
			a[2] = (sc_attr){
			    .name = {"online", 6},
			    .value = {.type = SC_VALUE_BOOL, .u.b = g & 1}};
			a[3] = (sc_attr){
			    .name = {"owner", 5},
			    .value = {.type = SC_VALUE_STRING,
				      .u.s = {"someone@example", 15}}};
			a[4] = (sc_attr){.name = {"zone", 4},
					 .value = {.type = SC_VALUE_STRING,
						   .u.s = {"eu-west-1", 9}}};
			evs[i] = (sc_event){.entity = {ids[i], (size_t)len},
					    .type = SC_EVENT_SET,
					    .attrs = a,
					    .nattrs = 5};
		}
		if (sc_store_append(s, evs, m, NULL, &err))
			die("append", err.message);
		pos += m;
	}
}

int main(void)
{
	uint64_t n = 1000000;
	const char *e = getenv("SC_BENCH_EVENTS");
	if (e && atoll(e) > 0)
		n = (uint64_t)atoll(e);
	char tmpl[] = "/tmp/sc_bench_projection.XXXXXX";
	char *root = mkdtemp(tmpl);
	if (!root)
		die("mkdtemp", strerror(errno));
	sc_store_options so = {0};
	so.create = true;
	so.durability = SC_DURABILITY_NOSYNC;
	sc_store *s;
	sc_error err;
	if (sc_store_open(root, &so, &s, &err))
		die("open", err.message);
	fill(s, n);

	uint64_t handled = 0;
	sc_projection_options o = {.name = "noop",
				   .kind = SC_PROJECTION_AT_LEAST_ONCE,
				   .handler = noop,
				   .ctx = &handled,
				   .batch_max = 1024,
				   .save_every = 65536};
	sc_projection *p;
	double t0 = bench_now();
	if (sc_projection_start(s, &o, &p, &err))
		die("start", err.message);
	if (sc_projection_wait(p, n, -1, &err))
		die("wait", err.message);
	double dt = bench_now() - t0;
	if (sc_projection_stop(p, &err))
		die("stop", err.message);
	if (handled != n)
		die("count", "the handler did not see every event");
	printf("{\"name\":\"projection_catchup\",\"events\":%llu,"
	       "\"events_per_s\":%.0f}\n",
	       (unsigned long long)n, (double)n / dt);
	sc_store_close(s);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		die("rm", root);
	return 0;
}
