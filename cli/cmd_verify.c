/*
 * statecache verify: the log is consistent (sc_store_verify), and the
 * state a normal open builds (each partition's newest checkpoint plus its
 * tail, or the newest snapshot plus the log after it) equals the state of
 * a replay of the whole log.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/json_event.h"

static const char verify_help[] =
    "usage: statecache [--db DIR] verify\n"
    "\n"
    "Open the store as usual (each partition from its newest checkpoint\n"
    "that verifies and its events after it, or, in a store without\n"
    "checkpoints, the newest snapshot that verifies and the events after\n"
    "it), check the log (positions dense from 1, ending at the last\n"
    "position committed; entity_index one row per indexed event; the\n"
    "partition catalog), then build a second state by replaying\n"
    "every event of the log from position 1, and compare the two entity\n"
    "by entity. Prints each difference (at most 20) and a summary.\n"
    "\n"
    "Exit codes: 0 equal; 1 different, no store, or a read failed;\n"
    "2 bad usage.\n";

#define VERIFY_PROMOTE_EVERY 65536
#define VERIFY_SHOW_MAX	     20

typedef struct replay_ctx {
	sc_cache *cache;
	uint64_t events;
	sc_error err;
	int rc;
} replay_ctx;

static int replay_one(void *ctx, const sc_event *ev)
{
	replay_ctx *c = ctx;
	c->rc = sc_cache_apply(c->cache, ev, &c->err);
	if (c->rc)
		return 1;
	if (++c->events % VERIFY_PROMOTE_EVERY == 0) {
		c->rc = sc_cache_promote(c->cache);
		if (c->rc)
			return 1;
	}
	return 0;
}

static void show(const char *what, const sc_entity *e)
{
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	if (!sc_cli_entity_encode(&b, e))
		printf("  %s %s\n", what, b.ptr);
	sc_cli_buf_free(&b);
}

int sc_cli_cmd_verify(const sc_cli_global *g, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (sc_cli_is_help(argv[i])) {
			fputs(verify_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		return sc_cli_usage_error("verify", "unknown argument %s",
					  argv[i]);
	}
	double t0 = sc_cli_now();
	sc_store *st;
	int code =
	    sc_cli_store_open("verify", g->db, false, SC_DURABILITY_FULL, &st);
	if (code)
		return code;
	double open_s = sc_cli_now() - t0;
	sc_snapshot_info snap;
	sc_error err;
	if (sc_store_verify(st, &err)) {
		printf("verify: FAILED, the log is damaged: %s\n", err.message);
		sc_store_close(st);
		fflush(stdout);
		return SC_CLI_EXIT_FAIL;
	}
	int nsnap = sc_store_snapshots(st, &snap, 1, &err);
	replay_ctx rc = {0};
	sc_reader *ra = NULL, *rb = NULL;
	if (sc_cache_create(NULL, &rc.cache, &err)) {
		fprintf(stderr, "statecache verify: %s\n", err.message);
		sc_store_close(st);
		return SC_CLI_EXIT_FAIL;
	}
	t0 = sc_cli_now();
	int r = sc_store_events(st, 1, 0, replay_one, &rc, &err);
	if (!r && !rc.rc)
		rc.rc = sc_cache_promote(rc.cache);
	double replay_s = sc_cli_now() - t0;
	if (r || rc.rc) {
		fprintf(stderr,
			"statecache verify: replaying the log failed "
			"at event %llu: %s\n",
			(unsigned long long)rc.events + 1,
			rc.rc ? rc.err.message : err.message);
		code = SC_CLI_EXIT_FAIL;
		goto out;
	}
	if (sc_reader_open(sc_store_cache(st), &ra, &err) ||
	    sc_reader_open(rc.cache, &rb, &err)) {
		fprintf(stderr, "statecache verify: %s\n", err.message);
		code = SC_CLI_EXIT_FAIL;
		goto out;
	}
	const sc_view *va = sc_reader_begin(ra);
	const sc_view *vb = sc_reader_begin(rb);
	size_t na = sc_view_len_all(va), nb = sc_view_len_all(vb), diffs = 0;
	sc_view_iter it;
	const sc_entity *e;
	sc_view_iter_init_all(va, &it);
	while ((e = sc_view_iter_next(&it))) {
		const sc_entity *f =
		    sc_view_get_in(vb, sc_entity_partition(e), sc_entity_id(e));
		if (f && sc_entity_equal(e, f))
			continue;
		if (++diffs <= VERIFY_SHOW_MAX) {
			printf("differs:\n");
			show("open:  ", e);
			if (f)
				show("replay:", f);
			else
				printf("  replay: (absent)\n");
		}
	}
	sc_view_iter_init_all(vb, &it);
	while ((e = sc_view_iter_next(&it))) {
		if (sc_view_get_in(va, sc_entity_partition(e), sc_entity_id(e)))
			continue;
		if (++diffs <= VERIFY_SHOW_MAX) {
			printf("differs:\n  open:   (absent)\n");
			show("replay:", e);
		}
	}
	printf("open (snapshot at position %llu + tail, %.3f s): %zu "
	       "entities at position %llu\n"
	       "full replay (%llu events, %.3f s): %zu entities\n",
	       nsnap > 0 ? (unsigned long long)snap.position : 0ULL, open_s, na,
	       (unsigned long long)sc_store_last_position(st),
	       (unsigned long long)rc.events, replay_s, nb);
	if (diffs) {
		printf("verify: FAILED, %zu entities differ\n", diffs);
		code = SC_CLI_EXIT_FAIL;
	} else {
		printf("verify: OK, the two states are equal\n");
	}
	sc_reader_end(ra);
	sc_reader_end(rb);
out:
	sc_reader_close(ra);
	sc_reader_close(rb);
	sc_cache_destroy(rc.cache);
	sc_store_close(st);
	fflush(stdout);
	return code;
}
