/*
 * statecache command: RFC 3339 timestamps (cli/timefmt.h).
 *
 * Calendar arithmetic uses the proleptic Gregorian calendar through the
 * days-from-civil / civil-from-days algorithms, so no libc time zone state
 * is involved and every value round-trips.
 */
#include "cli/timefmt.h"

#include <stdbool.h>
#include <stdio.h>

#define NS_PER_SEC 1000000000LL

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned dim[12] = {31, 28, 31, 30, 31, 30,
					 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Read exactly `k` digits at s[*i]. */
static bool digits(const char *s, size_t n, size_t *i, int k, unsigned *out)
{
	unsigned v = 0;
	for (int j = 0; j < k; j++) {
		if (*i >= n || s[*i] < '0' || s[*i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[*i] - '0');
		(*i)++;
	}
	*out = v;
	return true;
}

static bool expect(const char *s, size_t n, size_t *i, char c1, char c2)
{
	if (*i >= n || (s[*i] != c1 && s[*i] != c2))
		return false;
	(*i)++;
	return true;
}

int sc_cli_time_parse(const char *s, size_t n, int64_t *out, const char **why)
{
	static const char *shape = "expected YYYY-MM-DDTHH:MM:SS[.fraction] "
				   "followed by Z or +HH:MM/-HH:MM";
	size_t i = 0;
	unsigned y, mo, d, h, mi, se;
	if (!digits(s, n, &i, 4, &y) || !expect(s, n, &i, '-', '-') ||
	    !digits(s, n, &i, 2, &mo) || !expect(s, n, &i, '-', '-') ||
	    !digits(s, n, &i, 2, &d) || !expect(s, n, &i, 'T', 't') ||
	    !digits(s, n, &i, 2, &h) || !expect(s, n, &i, ':', ':') ||
	    !digits(s, n, &i, 2, &mi) || !expect(s, n, &i, ':', ':') ||
	    !digits(s, n, &i, 2, &se)) {
		*why = shape;
		return -1;
	}
	int64_t frac = 0;
	if (i < n && s[i] == '.') {
		i++;
		int nd = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (nd == 9) {
				*why = "more than 9 fraction digits (the "
				       "resolution is 1 ns)";
				return -1;
			}
			frac = frac * 10 + (s[i] - '0');
			nd++;
			i++;
		}
		if (nd == 0) {
			*why = shape;
			return -1;
		}
		for (; nd < 9; nd++)
			frac *= 10;
	}
	int64_t offset = 0;
	if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i < n && (s[i] == '+' || s[i] == '-')) {
		int sign = s[i] == '-' ? -1 : 1;
		unsigned oh, om;
		i++;
		if (!digits(s, n, &i, 2, &oh) || !expect(s, n, &i, ':', ':') ||
		    !digits(s, n, &i, 2, &om)) {
			*why = shape;
			return -1;
		}
		if (oh > 23 || om > 59) {
			*why = "time zone offset out of range";
			return -1;
		}
		offset = sign * (int64_t)(oh * 3600 + om * 60);
	} else {
		*why = "missing time zone (add Z for UTC or an offset like "
		       "+01:00)";
		return -1;
	}
	if (i != n) {
		*why = "trailing characters after the time zone";
		return -1;
	}
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) {
		*why = "no such date";
		return -1;
	}
	if (h > 23 || mi > 59 || se > 59) {
		*why = se == 60 ? "leap second (60) has no unix time"
				: "hour, minute or second out of range";
		return -1;
	}
	int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 +
		       se - offset;
	/* Near the lower limit secs * 10^9 alone overflows although the sum
	 * does not: borrow one second into the fraction. */
	if (secs < 0 && frac > 0) {
		secs++;
		frac -= NS_PER_SEC;
	}
	int64_t ns;
	if (__builtin_mul_overflow(secs, NS_PER_SEC, &ns) ||
	    __builtin_add_overflow(ns, frac, &ns)) {
		*why = "outside the representable range (years 1677 to 2262)";
		return -1;
	}
	*out = ns;
	return 0;
}

void sc_cli_time_format(int64_t ns, char out[SC_CLI_TIME_MAX])
{
	int64_t secs = ns / NS_PER_SEC;
	int64_t frac = ns % NS_PER_SEC;
	if (frac < 0) {
		frac += NS_PER_SEC;
		secs--;
	}
	int64_t days = secs / 86400;
	int64_t rem = secs % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	int h = (int)(rem / 3600), mi = (int)(rem / 60 % 60),
	    s = (int)(rem % 60);
	if (frac)
		snprintf(out, SC_CLI_TIME_MAX,
			 "%04lld-%02u-%02uT%02d:%02d:%02d.%09lldZ",
			 (long long)y, m, d, h, mi, s, (long long)frac);
	else
		snprintf(out, SC_CLI_TIME_MAX,
			 "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m, d,
			 h, mi, s);
}
