/*
 * statecache command: argument parsing helpers (cli/cli.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

bool sc_cli_is_help(const char *arg)
{
	return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

int sc_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "statecache %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(see `statecache %s --help`)\n", cmd);
	return SC_CLI_EXIT_USAGE;
}

int sc_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
	       const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);
	if (strncmp(a, name, n) != 0)
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		(*i)++;
		return 1;
	}
	if (a[n] != '\0')
		return 0;
	if (*i + 1 >= argc) {
		sc_cli_usage_error(cmd, "%s needs a value", name);
		return -1;
	}
	*val = argv[*i + 1];
	*i += 2;
	return 1;
}

int sc_cli_parse_u64(const char *cmd, const char *what, const char *s,
		     uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *s == '-' || *s == '+' || *end || errno || v < min ||
	    v > max) {
		sc_cli_usage_error(cmd,
				   "%s must be a whole number from %llu to "
				   "%llu, not \"%s\"",
				   what, (unsigned long long)min,
				   (unsigned long long)max, s);
		return -1;
	}
	*out = v;
	return 0;
}

int sc_cli_parse_durability(const char *cmd, const char *s, sc_durability *out)
{
	if (!strcmp(s, "full"))
		*out = SC_DURABILITY_FULL;
	else if (!strcmp(s, "consistent"))
		*out = SC_DURABILITY_CONSISTENT;
	else if (!strcmp(s, "nosync"))
		*out = SC_DURABILITY_NOSYNC;
	else {
		sc_cli_usage_error(cmd,
				   "--durability is full, consistent or "
				   "nosync, not \"%s\"",
				   s);
		return -1;
	}
	return 0;
}

double sc_cli_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
