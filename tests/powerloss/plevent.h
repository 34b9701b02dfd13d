/*
 * Power-loss test: the workload's events, a pure function of the
 * position, so the checker knows what every stored event must be.
 */
#ifndef SC_POWERLOSS_PLEVENT_H
#define SC_POWERLOSS_PLEVENT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "statecache/event.h"

#define PL_ENTITIES 150
#define PL_PAD_MAX  1200

typedef struct pl_event_buf {
	char id[32];
	char pad[PL_PAD_MAX];
	sc_attr attrs[2];
} pl_event_buf;

/* The event the workload appends at `pos` (1-based); its strings point
 * into *b. */
static inline sc_event pl_event(uint64_t pos, pl_event_buf *b)
{
	sc_event ev;
	memset(&ev, 0, sizeof ev);
	int n = snprintf(b->id, sizeof b->id, "e%03u",
			 (unsigned)((pos * 7919) % PL_ENTITIES));
	ev.entity = (sc_str){b->id, (size_t)n};
	ev.time = INT64_C(1700000000000000000) + (int64_t)pos;
	if (pos % 23 == 0) {
		ev.type = SC_EVENT_DELETE;
		return ev;
	}
	size_t padlen = 50 + (size_t)((pos * 131) % (PL_PAD_MAX - 50));
	memset(b->pad, 'a' + (int)(pos % 26), padlen);
	b->attrs[0].name = (sc_str){"p", 1};
	b->attrs[0].value.type = SC_VALUE_INT;
	b->attrs[0].value.u.i = (int64_t)pos;
	b->attrs[1].name = (sc_str){"pad", 3};
	b->attrs[1].value.type = SC_VALUE_STRING;
	b->attrs[1].value.u.s = (sc_str){b->pad, padlen};
	ev.type = SC_EVENT_SET;
	ev.attrs = b->attrs;
	ev.nattrs = 2;
	return ev;
}

#endif
