/*
 * statecache gen: print generated events as JSON Lines (hidden; for tests
 * and for feeding `ingest`).
 */
#include <stdio.h>
#include <string.h>

#include "cli/buf.h"
#include "cli/cli.h"
#include "cli/gen.h"
#include "cli/json_event.h"

static const char gen_help[] =
    "usage: statecache gen [--count N] [--entities K] [--seed S]\n"
    "\n"
    "Print N generated events (default 1000) over K entities (default 100)\n"
    "as JSON Lines on stdout, the same stream `demo` ingests. The same seed\n"
    "(default 1) gives the same events. Exit codes: 0 ok, 2 bad usage.\n";

/* 2026-11-23T00:00:00Z */
#define GEN_T0 (1795392000LL * 1000000000LL)

int sc_cli_cmd_gen(const sc_cli_global *g, int argc, char **argv)
{
	(void)g;
	uint64_t count = 1000, entities = 100, seed = 1;
	for (int i = 1; i < argc;) {
		const char *v;
		int m;
		if (sc_cli_is_help(argv[i])) {
			fputs(gen_help, stdout);
			return SC_CLI_EXIT_OK;
		}
		if ((m = sc_cli_opt("gen", argc, argv, &i, "--count", &v))) {
			if (m < 0 || sc_cli_parse_u64("gen", "--count", v, 0,
						      UINT64_MAX, &count))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("gen", argc, argv, &i, "--entities",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("gen", "--entities", v, 1,
						      UINT32_MAX, &entities))
				return SC_CLI_EXIT_USAGE;
		} else if ((m = sc_cli_opt("gen", argc, argv, &i, "--seed",
					   &v))) {
			if (m < 0 || sc_cli_parse_u64("gen", "--seed", v, 0,
						      UINT64_MAX, &seed))
				return SC_CLI_EXIT_USAGE;
		} else {
			return sc_cli_usage_error("gen", "unknown argument %s",
						  argv[i]);
		}
	}
	sc_cli_gen gen;
	sc_cli_gen_init(&gen, seed, (uint32_t)entities, GEN_T0);
	sc_cli_buf b;
	sc_cli_buf_init(&b);
	for (uint64_t k = 0; k < count; k++) {
		sc_cli_buf_reset(&b);
		if (sc_cli_event_encode(&b, sc_cli_gen_next(&gen), false) ||
		    sc_cli_buf_add(&b, "\n", 1)) {
			fprintf(stderr, "statecache gen: out of memory\n");
			sc_cli_buf_free(&b);
			return SC_CLI_EXIT_FAIL;
		}
		if (fwrite(b.ptr, 1, b.len, stdout) != b.len)
			break;
	}
	sc_cli_buf_free(&b);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "statecache gen: writing stdout failed\n");
		return SC_CLI_EXIT_FAIL;
	}
	return SC_CLI_EXIT_OK;
}
