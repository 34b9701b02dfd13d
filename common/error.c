/*
 * Error codes and reports (include/statecache/error.h).
 */
#include "common/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sc_strerror(int code)
{
	switch (code) {
	case SC_OK:
		return "success";
	case SC_NOTFOUND:
		return "not found";
	case SC_EINVAL:
		return "invalid argument or event";
	case SC_ECORRUPT:
		return "data failed to decode or verify";
	case SC_EVERSION:
		return "unsupported format version";
	case SC_ETOOBIG:
		return "size limit exceeded";
	case SC_EMAPFULL:
		return "store reached its maximum map size";
	case SC_EPROJECTOR:
		return "a projector failed";
	case SC_ESTATE:
		return "call not valid in the current state";
	case SC_ELMDB:
		return "LMDB error";
	case SC_EREADERS:
		return "no free reader slot";
	case SC_EPOISONED:
		return "edit unusable after an allocation failure";
	case SC_ERESYNC:
		return "watcher too far behind; reopen it with the initial "
		       "state";
	case SC_ECONFLICT:
		return "conflict: the expected stream sequence did not match";
	case SC_EBEHIND:
		return "node behind the stream's retention; bootstrap it from "
		       "a newer store copy";
	case SC_ENATS:
		return "NATS or JetStream error";
	default:
		break;
	}
	if (code > 0)
		return strerror(code);
	return "unknown error code";
}

void sc_error_clear(sc_error *err)
{
	if (!err)
		return;
	err->code = SC_OK;
	err->message[0] = '\0';
}

int sc_error_set(sc_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	if (n < 0)
		snprintf(err->message, sizeof err->message, "%s",
			 sc_strerror(code));
	return code;
}
