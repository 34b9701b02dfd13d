/*
 * statecache command: RFC 3339 timestamps <-> unix nanoseconds.
 */
#ifndef STATECACHE_CLI_TIMEFMT_H
#define STATECACHE_CLI_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* Room for the longest formatted time, NUL included. */
#define SC_CLI_TIME_MAX 64

/*
 * sc_cli_time_parse - parse "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)"
 * (RFC 3339; 'T' and 'Z' may be lower case; 1..9 fraction digits) into unix
 * nanoseconds. Rejected, with a static reason in *why: anything else, out of
 * range fields (month 13, February 30, second 60: leap seconds have no unix
 * time), more than 9 fraction digits (no silent rounding), and times outside
 * the int64 nanosecond range (years 1677..2262).
 */
int sc_cli_time_parse(const char *s, size_t n, int64_t *out, const char **why);

/*
 * sc_cli_time_format - RFC 3339 in UTC: "2026-11-23T10:00:00Z", with nine
 * fraction digits when the nanoseconds are not zero
 * ("2026-11-23T10:00:00.000000123Z").
 */
void sc_cli_time_format(int64_t ns, char out[SC_CLI_TIME_MAX]);

#endif
