/*
 * statecache demo: what `make demo` runs. Generates a realistic event
 * stream, ingests it through the JSON Lines path of `ingest`, snapshots,
 * reopens, queries, reads from several threads during a second ingest, and
 * prints what each step took.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gen.h"
#include "cli/ingest.h"
#include "cli/json_event.h"

static const char demo_help[] =
    "usage: statecache [--db DIR] demo [--events N] [--entities K]\n"
    "                  [--more M] [--readers R] [--batch B] [--seed S]\n"
    "                  [--threads T] [--nosync]\n"
    "\n"
    "1. generate N events (default 1000000) over K entities (default\n"
    "   100000) as JSON lines into a file in DIR (unlinked at once,\n"
    "   about 205 bytes per event), then ingest it, B events per\n"
    "   transaction (default 10000), into a fresh store at DIR, through\n"
    "   the pipeline of `ingest`: T threads (default: the cores online, at\n"
    "   most 4) decode and check lines while the calling thread appends\n"
    "   (0: one thread);\n"
    "2. take a snapshot, append a short tail, close, reopen (restore +\n"
    "   replay) and compare with replaying the whole log;\n"
    "3. run a few get/scan queries;\n"
    "4. ingest M more events (default 100000) while R reader threads\n"
    "   (default 2) read without locks, checking every entity they see is\n"
    "   whole;\n"
    "5. print a summary table.\n"
    "Every transaction is synced to disk (full durability); with 10000\n"
    "events per transaction that costs little. --nosync skips the fsync\n"
    "(a process crash loses nothing; after an OS crash or power loss\n"
    "during the demo, open refuses the store as possibly damaged).\n"
    "\n"
    "Exit codes: 0 ok; 1 a step failed (or the store is not fresh); 2 bad\n"
    "usage.\n";

/* 2026-11-23T00:00:00Z */
#define DEMO_T0 (1795392000LL * 1000000000LL)

typedef struct demo_cfg {
	uint64_t events, entities, more, readers, batch, seed, threads;
	bool nosync;
} demo_cfg;

/* ===== reader threads ===================================================== */

typedef struct reader_arg {
	sc_cache *cache;
	uint32_t entities;
	uint64_t seed;
	atomic_bool *stop;
	uint64_t reads, hits, torn, views, view_backwards;
	int rc;
	sc_error err;
} reader_arg;

/* An entity state written by the generator is whole when its "check"
 * matches its "seq" (sc_cli_gen writes both in every set/replace and no
 * unset removes them), or when it has no attributes at all (an unset of a
 * missing entity creates it empty). */
static bool entity_whole(const sc_entity *e, sc_str id)
{
	sc_str eid = sc_entity_id(e);
	if (eid.len != id.len || memcmp(eid.ptr, id.ptr, id.len))
		return false;
	if (sc_entity_attr_count(e) == 0)
		return true;
	sc_value seq, check;
	if (!sc_entity_find(e, (sc_str){"seq", 3}, &seq) ||
	    seq.type != SC_VALUE_INT)
		return false;
	if (!sc_entity_find(e, (sc_str){"check", 5}, &check) ||
	    check.type != SC_VALUE_STRING || check.u.s.len != 16)
		return false;
	char want[17];
	sc_cli_gen_check_value(id.ptr, id.len, seq.u.i, want);
	return memcmp(want, check.u.s.ptr, 16) == 0;
}

static void *reader_main(void *p)
{
	reader_arg *a = p;
	sc_reader *r;
	a->rc = sc_reader_open(a->cache, &r, &a->err);
	if (a->rc)
		return NULL;
	uint64_t x = a->seed | 1, last_pos = 0;
	char id[32];
	while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
		for (int k = 0; k < 1000; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			uint32_t idx = (uint32_t)(x % a->entities);
			int n = snprintf(id, sizeof id, "%s-%06u",
					 idx % 2 ? "user" : "device", idx);
			sc_str sid = {id, (size_t)n};
			const sc_entity *e =
			    sc_reader_get_in(r, sc_cli_gen_partition(idx), sid);
			a->reads++;
			if (e) {
				a->hits++;
				if (!entity_whole(e, sid))
					a->torn++;
			}
		}
		/* A pinned view never goes back in time. */
		const sc_view *v = sc_reader_begin(r);
		uint64_t pos = sc_view_position(v);
		if (pos < last_pos)
			a->view_backwards++;
		last_pos = pos;
		a->views++;
		sc_reader_end(r);
	}
	sc_reader_end(r);
	sc_reader_close(r);
	return NULL;
}

/* ===== steps ============================================================== */

/* Ingest every line of `src` through the pipeline of `ingest`. */
static int demo_ingest_source(sc_store *st, sc_cli_source *src, size_t batch,
			      unsigned threads, sc_cli_ingest_result *res)
{
	sc_cli_ingest_opts opt = {.batch = batch,
				  .progress = isatty(STDERR_FILENO),
				  .threads = threads,
				  .idle_ms = -1};
	sc_error err;
	sc_error_clear(&err);
	int rc = sc_cli_ingest_run(st, src, &opt, res, &err);
	if (rc)
		fprintf(stderr, "statecache demo: ingest failed: %s\n",
			err.message);
	return rc;
}

static int demo_ingest(sc_store *st, uint64_t seed, uint32_t entities,
		       uint64_t first_seq, uint64_t count, size_t batch,
		       unsigned threads, sc_cli_ingest_result *res)
{
	sc_cli_gen_source src;
	sc_cli_gen_source_init(&src, seed, entities, DEMO_T0, count);
	/* continue the stream's sequence numbers and clock */
	src.gen.count = first_seq;
	int rc = demo_ingest_source(st, &src.base, batch, threads, res);
	sc_cli_gen_source_free(&src);
	return rc;
}

/*
 * Write `count` generated events (the stream demo_ingest would make) as
 * JSON lines to a temporary file in the store's directory `dir` (unlinked
 * at once, so nothing stays behind), so that the bulk ingest reads a
 * stream that exists, as `statecache ingest FILE` does, instead of
 * sharing the cores with its producer. Returns the file, positioned at its
 * start, or NULL with the reason on stderr.
 */
static FILE *demo_stream_file(const char *dir, uint64_t seed, uint32_t entities,
			      uint64_t count, uint64_t *bytes)
{
	char path[4096];
	int n = snprintf(path, sizeof path, "%s/demo-stream-XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof path) {
		fprintf(stderr,
			"statecache demo: the store's path is too long for "
			"the generated stream's file beside it; give a "
			"shorter --db\n");
		return NULL;
	}
	int fd = mkstemp(path);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w+");
	if (!f) {
		fprintf(stderr,
			"statecache demo: cannot create a file for the "
			"generated stream in %s (%s); the demo needs about "
			"205 bytes per event there\n",
			dir, strerror(errno));
		if (fd >= 0) {
			unlink(path);
			close(fd);
		}
		return NULL;
	}
	unlink(path);
	sc_cli_gen_source src;
	sc_cli_gen_source_init(&src, seed, entities, DEMO_T0, count);
	const char *line;
	size_t len;
	sc_error err;
	int rc;
	bool written = true;
	while ((rc = src.base.next(&src.base, &line, &len, NULL, &err)) == 1) {
		if (fwrite(line, 1, len, f) != len || putc('\n', f) == EOF) {
			written = false;
			break;
		}
	}
	sc_cli_gen_source_free(&src);
	if (written && rc != 0) {
		fprintf(stderr, "statecache demo: generating the stream: %s\n",
			err.message);
		fclose(f);
		return NULL;
	}
	if (!written || fflush(f) == EOF || ferror(f)) {
		fprintf(stderr,
			"statecache demo: writing the generated stream to a "
			"file in %s failed (%s); free space there (about 205 "
			"bytes per event) or pass a smaller --events\n",
			dir, strerror(errno));
		fclose(f);
		return NULL;
	}
	off_t end = lseek(fileno(f), 0, SEEK_END);
	if (end < 0 || lseek(fileno(f), 0, SEEK_SET) != 0) {
		fprintf(stderr,
			"statecache demo: cannot rewind the file "
			"of the generated stream (%s)\n",
			strerror(errno));
		fclose(f);
		return NULL;
	}
	*bytes = (uint64_t)end;
	return f;
}

/* Ingest the lines of `f` (demo_stream_file) as `statecache ingest FILE`
 * does. */
static int demo_ingest_file(sc_store *st, FILE *f, size_t batch,
			    unsigned threads, sc_cli_ingest_result *res)
{
	sc_cli_file_source src;
	if (sc_cli_file_source_init(&src, f)) {
		fprintf(stderr, "statecache demo: out of memory for the "
				"ingest's read buffer\n");
		return ENOMEM;
	}
	int rc = demo_ingest_source(st, &src.base, batch, threads, res);
	sc_cli_file_source_free(&src);
	return rc;
}

typedef struct replay_ctx {
	sc_cache *cache;
	uint64_t n;
	int rc;
	sc_error err;
} replay_ctx;

static int replay_one(void *ctx, const sc_event *ev)
{
	replay_ctx *c = ctx;
	c->rc = sc_cache_apply(c->cache, ev, &c->err);
	if (!c->rc && ++c->n % 65536 == 0)
		c->rc = sc_cache_promote(c->cache);
	return c->rc != 0;
}

/* Time a from-scratch replay of the whole log, the cost a snapshot saves;
 * its state must equal the reopened one. */
static int demo_full_replay(sc_store *st, double *seconds, bool *equal)
{
	replay_ctx c = {0};
	sc_error err;
	if (sc_cache_create(NULL, &c.cache, &err)) {
		fprintf(stderr, "statecache demo: %s\n", err.message);
		return 1;
	}
	double t0 = sc_cli_now();
	int rc = sc_store_events(st, 1, 0, replay_one, &c, &err);
	if (!rc && !c.rc)
		c.rc = sc_cache_promote(c.cache);
	*seconds = sc_cli_now() - t0;
	if (rc || c.rc) {
		fprintf(stderr, "statecache demo: replay failed: %s\n",
			c.rc ? c.err.message : err.message);
		sc_cache_destroy(c.cache);
		return 1;
	}
	sc_reader *ra, *rb;
	*equal = false;
	if (!sc_reader_open(sc_store_cache(st), &ra, &err)) {
		if (!sc_reader_open(c.cache, &rb, &err)) {
			const sc_view *va = sc_reader_begin(ra);
			const sc_view *vb = sc_reader_begin(rb);
			bool eq = sc_view_len_all(va) == sc_view_len_all(vb);
			sc_view_iter it;
			sc_view_iter_init_all(va, &it);
			const sc_entity *e;
			while (eq && (e = sc_view_iter_next(&it))) {
				const sc_entity *f =
				    sc_view_get_in(vb, sc_entity_partition(e),
						   sc_entity_id(e));
				eq = f && sc_entity_equal(e, f);
			}
			*equal = eq;
			sc_reader_end(rb);
			sc_reader_close(rb);
		}
		sc_reader_end(ra);
		sc_reader_close(ra);
	}
	sc_cache_destroy(c.cache);
	return 0;
}

static void demo_show_get(sc_store *st, const char *id, uint64_t at)
{
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	sc_str sid = {id, strlen(id)};
	/* The generator's partition of the id's index (its digits). */
	const char *digits = strrchr(id, '-');
	sc_str part = sc_cli_gen_partition(
	    (uint32_t)strtoul(digits ? digits + 1 : id, NULL, 10));
	if (at) {
		sc_entity *e = NULL;
		sc_error err;
		printf("$ statecache get %s --partition %.*s --at %llu\n", id,
		       (int)part.len, part.ptr, (unsigned long long)at);
		int rc = sc_store_entity_at_in(st, part, sid, at, &e, &err);
		if (rc == 0 && !sc_cli_entity_encode(&b, e))
			printf("%s\n", b.ptr);
		else
			printf("(not found at %llu)\n", (unsigned long long)at);
		sc_entity_free(e);
	} else {
		sc_reader *r;
		sc_error err;
		printf("$ statecache get %s --partition %.*s\n", id,
		       (int)part.len, part.ptr);
		if (!sc_reader_open(sc_store_cache(st), &r, &err)) {
			const sc_entity *e = sc_reader_get_in(r, part, sid);
			if (e && !sc_cli_entity_encode(&b, e))
				printf("%s\n", b.ptr);
			else
				printf("(not found)\n");
			sc_reader_end(r);
			sc_reader_close(r);
		}
	}
	sc_cli_buf_free(&b);
}

static int remember_position(void *ctx, const sc_event *ev)
{
	*(uint64_t *)ctx = ev->position;
	return 0;
}

static int entity_ptr_cmp(const void *a, const void *b)
{
	sc_str x = sc_entity_id(*(const sc_entity *const *)a);
	sc_str y = sc_entity_id(*(const sc_entity *const *)b);
	size_t n = x.len < y.len ? x.len : y.len;
	int c = memcmp(x.ptr, y.ptr, n);
	return c ? c : (x.len > y.len) - (x.len < y.len);
}

static void demo_show_scan(sc_store *st, const char *prefix, size_t limit)
{
	printf("$ statecache scan --prefix %s --limit %zu\n", prefix, limit);
	sc_reader *r;
	sc_error err;
	if (sc_reader_open(sc_store_cache(st), &r, &err))
		return;
	const sc_view *v = sc_reader_begin(r);
	size_t plen = strlen(prefix), n = 0, cap = 64;
	const sc_entity **list = malloc(cap * sizeof *list);
	sc_view_iter it;
	sc_view_iter_init_all(v, &it);
	const sc_entity *e;
	while (list && (e = sc_view_iter_next(&it))) {
		sc_str id = sc_entity_id(e);
		if (id.len < plen || memcmp(id.ptr, prefix, plen))
			continue;
		if (n == cap) {
			const sc_entity **nl =
			    realloc(list, 2 * cap * sizeof *list);
			if (!nl)
				break;
			list = nl;
			cap *= 2;
		}
		list[n++] = e;
	}
	if (list && n)
		qsort(list, n, sizeof *list, entity_ptr_cmp);
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	for (size_t i = 0; list && i < n && i < limit; i++) {
		sc_cli_buf_reset(&b);
		if (!sc_cli_entity_encode(&b, list[i]))
			printf("%s\n", b.ptr);
	}
	printf("(%zu entities match)\n", n);
	sc_cli_buf_free(&b);
	free(list);
	sc_reader_end(r);
	sc_reader_close(r);
}

/* ===== the demo =========================================================== */

static int parse_args(int argc, char **argv, demo_cfg *c)
{
	struct {
		const char *name;
		uint64_t *dst, min, max;
	} opts[] = {
	    {"--events", &c->events, 1, 100000000},
	    {"--entities", &c->entities, 1, 100000000},
	    {"--more", &c->more, 0, 100000000},
	    {"--readers", &c->readers, 0, 64},
	    {"--batch", &c->batch, 1, 1000000},
	    {"--seed", &c->seed, 0, UINT64_MAX},
	    {"--threads", &c->threads, 0, 64},
	};
	for (int i = 1; i < argc;) {
		if (sc_cli_is_help(argv[i])) {
			fputs(demo_help, stdout);
			return -1;
		}
		if (!strcmp(argv[i], "--nosync")) {
			c->nosync = true;
			i++;
			continue;
		}
		bool matched = false;
		for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
			const char *v;
			int m = sc_cli_opt("demo", argc, argv, &i, opts[k].name,
					   &v);
			if (m < 0)
				return SC_CLI_EXIT_USAGE;
			if (m == 0)
				continue;
			if (sc_cli_parse_u64("demo", opts[k].name, v,
					     opts[k].min, opts[k].max,
					     opts[k].dst))
				return SC_CLI_EXIT_USAGE;
			matched = true;
			break;
		}
		if (!matched)
			return sc_cli_usage_error("demo", "unknown argument %s",
						  argv[i]);
	}
	return 0;
}

int sc_cli_cmd_demo(const sc_cli_global *g, int argc, char **argv)
{
	demo_cfg c = {.events = 1000000,
		      .entities = 100000,
		      .more = 100000,
		      .readers = 2,
		      .batch = 10000,
		      .seed = 42,
		      .threads = sc_cli_ingest_default_threads()};
	int prc = parse_args(argc, argv, &c);
	if (prc)
		return prc < 0 ? SC_CLI_EXIT_OK : prc;
	sc_durability dur =
	    c.nosync ? SC_DURABILITY_NOSYNC : SC_DURABILITY_FULL;
	const char *durname = c.nosync
				  ? "nosync (no fsync; a power loss may "
				    "damage the store)"
				  : "full (every transaction synced to disk)";
	double demo_t0 = sc_cli_now();
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("statecache demo: store %s, seed %llu\n", g->db,
	       (unsigned long long)c.seed);

	/* ---- 1. bulk ingest ---- */
	sc_store *st;
	int code = sc_cli_store_open("demo", g->db, true, dur, &st);
	if (code)
		return code;
	if (sc_store_last_position(st) != 0) {
		fprintf(stderr,
			"statecache demo: the store at %s already holds "
			"events; give a fresh directory with --db (make demo "
			"removes build/demo.db first)\n",
			g->db);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	printf("\n1. generate %llu events over %llu entities as JSON lines "
	       "into a file beside the store, then ingest it (as `statecache "
	       "ingest FILE` does), %llu per transaction, durability %s\n",
	       (unsigned long long)c.events, (unsigned long long)c.entities,
	       (unsigned long long)c.batch, durname);
	double gen_t0 = sc_cli_now();
	uint64_t stream_bytes = 0;
	FILE *stream = demo_stream_file(g->db, c.seed, (uint32_t)c.entities,
					c.events, &stream_bytes);
	if (!stream)
		goto fail;
	double gen_s = sc_cli_now() - gen_t0;
	printf("   generated %llu bytes of JSON lines in %.2f s\n",
	       (unsigned long long)stream_bytes, gen_s);
	sc_cli_ingest_result r1;
	int frc = demo_ingest_file(st, stream, (size_t)c.batch,
				   (unsigned)c.threads, &r1);
	fclose(stream);
	if (frc)
		goto fail;
	double ingest_rate = (double)r1.events / r1.seconds;
	printf("   %llu events in %.2f s = %.0f events/s; %zu entities\n",
	       (unsigned long long)r1.events, r1.seconds, ingest_rate,
	       sc_cache_len(sc_store_cache(st)));

	/* ---- 2. snapshot, tail, reopen ---- */
	/* a tail of 1% after the snapshot, for the reopen to replay */
	uint64_t tail = c.events / 100 ? c.events / 100 : 1;
	printf("\n2. snapshot, %llu more events, close, reopen\n",
	       (unsigned long long)tail);
	sc_snapshot_info snap;
	sc_error err;
	if (sc_store_snapshot(st, &snap, &err)) {
		fprintf(stderr, "statecache demo: snapshot failed: %s\n",
			err.message);
		goto fail;
	}
	double ratio = snap.bytes_compressed ? (double)snap.bytes_raw /
						   (double)snap.bytes_compressed
					     : 0;
	printf("   snapshot at position %llu: %llu entities, %llu bytes "
	       "encoded, %llu bytes stored (zstd %.1fx), %u chunks, %.3f s\n",
	       (unsigned long long)snap.position,
	       (unsigned long long)snap.entities,
	       (unsigned long long)snap.bytes_raw,
	       (unsigned long long)snap.bytes_compressed, ratio, snap.chunks,
	       snap.seconds);
	sc_cli_ingest_result rt;
	if (demo_ingest(st, c.seed + 1, (uint32_t)c.entities, c.events, tail,
			(size_t)c.batch, (unsigned)c.threads, &rt))
		goto fail;
	double t0 = sc_cli_now();
	sc_store_close(st);
	st = NULL;
	double close_s = sc_cli_now() - t0;
	t0 = sc_cli_now();
	code = sc_cli_store_open("demo", g->db, false, dur, &st);
	if (code)
		return code;
	double open_s = sc_cli_now() - t0;
	printf("   close %.3f s; reopen (restore the snapshot + replay %llu "
	       "events) %.3f s: %zu entities at position %llu\n",
	       close_s, (unsigned long long)tail, open_s,
	       sc_cache_len(sc_store_cache(st)),
	       (unsigned long long)sc_store_last_position(st));
	double replay_s = 0;
	bool equal = false;
	if (demo_full_replay(st, &replay_s, &equal))
		goto fail;
	printf("   for comparison, replaying all %llu events: %.3f s "
	       "(%.1fx slower); replayed state %s the reopened one\n",
	       (unsigned long long)sc_store_last_position(st), replay_s,
	       open_s > 0 ? replay_s / open_s : 0,
	       equal ? "equals" : "DIFFERS FROM");
	if (!equal)
		goto fail;

	/* ---- 3. queries ---- */
	printf("\n3. queries\n");
	demo_show_get(st, "device-000000", 0);
	demo_show_get(st, "user-000001", 0);
	/* an older state: as of the entity's second event */
	uint64_t at = 0;
	sc_store_entity_events(st, (sc_str){"user-000001", 11}, 1, 2,
			       remember_position, &at, &err);
	if (at)
		demo_show_get(st, "user-000001", at);
	demo_show_scan(st, "user-00001", 3);

	/* ---- 4. readers during a second ingest ---- */
	printf("\n4. ingest %llu more events while %llu reader threads read "
	       "without locks\n",
	       (unsigned long long)c.more, (unsigned long long)c.readers);
	atomic_bool stop = false;
	reader_arg *ra = calloc(c.readers ? c.readers : 1, sizeof *ra);
	pthread_t *th = calloc(c.readers ? c.readers : 1, sizeof *th);
	if (!ra || !th) {
		free(ra);
		free(th);
		fprintf(stderr, "statecache demo: out of memory\n");
		goto fail;
	}
	size_t started = 0;
	for (size_t i = 0; i < c.readers; i++) {
		ra[i] = (reader_arg){.cache = sc_store_cache(st),
				     .entities = (uint32_t)c.entities,
				     .seed = c.seed * 31 + i + 1,
				     .stop = &stop};
		if (pthread_create(&th[i], NULL, reader_main, &ra[i]))
			break;
		started++;
	}
	t0 = sc_cli_now();
	sc_cli_ingest_result r2;
	int irc =
	    demo_ingest(st, c.seed + 2, (uint32_t)c.entities, c.events + tail,
			c.more, (size_t)c.batch, (unsigned)c.threads, &r2);
	atomic_store(&stop, true);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	double both_s = sc_cli_now() - t0;
	uint64_t reads = 0, hits = 0, torn = 0, views = 0, back = 0;
	int reader_fail = 0;
	for (size_t i = 0; i < started; i++) {
		if (ra[i].rc) {
			fprintf(stderr, "statecache demo: reader %zu: %s\n", i,
				ra[i].err.message);
			reader_fail = 1;
		}
		reads += ra[i].reads;
		hits += ra[i].hits;
		torn += ra[i].torn;
		views += ra[i].views;
		back += ra[i].view_backwards;
	}
	free(ra);
	free(th);
	if (irc || reader_fail || started != c.readers)
		goto fail;
	double reads_rate = both_s > 0 ? (double)reads / both_s : 0;
	double ingest2_rate = (double)r2.events / r2.seconds;
	printf("   %llu events in %.2f s = %.0f events/s while reading\n",
	       (unsigned long long)r2.events, r2.seconds, ingest2_rate);
	printf("   %llu reads (%llu found) = %.0f reads/s over %zu threads; "
	       "%llu torn entities, %llu pinned views, %llu went back in "
	       "time\n",
	       (unsigned long long)reads, (unsigned long long)hits, reads_rate,
	       started, (unsigned long long)torn, (unsigned long long)views,
	       (unsigned long long)back);
	if (torn || back) {
		fprintf(stderr, "statecache demo: readers saw inconsistent "
				"state\n");
		goto fail;
	}

	/* ---- 5. summary ---- */
	sc_store_stats ss;
	if (sc_store_stats_get(st, &ss, &err)) {
		fprintf(stderr, "statecache demo: %s\n", err.message);
		goto fail;
	}
	printf("\n5. summary\n");
	printf("   %-34s %14s\n", "measure", "value");
	printf("   %-34s %14.0f\n", "bulk ingest, events/s", ingest_rate);
	printf("   %-34s %14.0f\n", "ingest with readers, events/s",
	       ingest2_rate);
	printf("   %-34s %14llu\n", "snapshot bytes (stored)",
	       (unsigned long long)snap.bytes_compressed);
	printf("   %-34s %13.1fx\n", "snapshot compression ratio", ratio);
	printf("   %-34s %14.3f\n", "snapshot time, s", snap.seconds);
	printf("   %-34s %14.3f\n", "open (restore + replay tail), s", open_s);
	printf("   %-34s %14.3f\n", "full log replay, s", replay_s);
	printf("   %-34s %14.0f\n", "lock-free reads/s (during ingest)",
	       reads_rate);
	printf("   %-34s %14zu\n", "entities", ss.cache.entities);
	printf("   %-34s %14llu\n", "events in the log",
	       (unsigned long long)ss.last_position);
	printf("   %-34s %14zu\n", "LMDB bytes used", ss.map_bytes_used);
	printf("   %-34s %14zu\n", "state memory bytes", ss.cache.memory_bytes);
	printf("   %-34s %14.2f\n", "demo total, s", sc_cli_now() - demo_t0);
	/* the bulk ingest as the benchmarks print it (bench/ingest.c) */
	printf("   {\"name\":\"ingest_json\",\"durability\":\"%s\","
	       "\"batch\":%llu,\"threads\":%llu,\"events_per_s\":%.0f}\n",
	       c.nosync ? "nosync" : "full", (unsigned long long)c.batch,
	       (unsigned long long)c.threads, ingest_rate);
	sc_store_close(st);
	return SC_CLI_EXIT_OK;
fail:
	sc_store_close(st);
	return SC_CLI_EXIT_FAIL;
}
