/*
 * libFuzzer harness for the event record decoder (store/event_codec.h).
 *
 * Any input must either fail with SC_ECORRUPT / SC_ETOOBIG or decode into
 * an event that passes validation and re-encodes to bytes that decode to
 * the same event; or, as a record written before string values had to be
 * UTF-8 may, into an event valid but for that (which appends refuse).
 * The decode into an arena agrees with it on every input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"
#include "store/event_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int str_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* The decode into an arena (what queries use) gives what sc_event_decode
 * gives: the same code, the same event. */
static void check_arena(const uint8_t *data, size_t size, int rc,
			const sc_event *ev)
{
	static sc_decode_arena arena;
	sc_decode_arena_reset(&arena);
	sc_event a;
	if (sc_event_decode_arena(data, size, 42, &arena, &a, NULL) != rc)
		abort();
	if (rc)
		return;
	if (a.type != ev->type || a.nattrs != ev->nattrs ||
	    a.ntags != ev->ntags || a.time != ev->time ||
	    !str_eq(a.entity, ev->entity) || !str_eq(a.actor, ev->actor) ||
	    !str_eq(a.partition, ev->partition))
		abort();
	for (size_t i = 0; i < a.nattrs; i++)
		if (!str_eq(a.attrs[i].name, ev->attrs[i].name) ||
		    !sc_value_equal(&a.attrs[i].value, &ev->attrs[i].value))
			abort();
	for (size_t i = 0; i < a.ntags; i++)
		if (!str_eq(a.tags[i], ev->tags[i]))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_decoded_event d;
	sc_error err;
	int rc = sc_event_decode(data, size, 42, &d, &err);
	check_arena(data, size, rc, &d.ev);
	if (rc) {
		if (rc != SC_ECORRUPT && rc != SC_ETOOBIG)
			abort();
		return 0;
	}
	if (d.ev.position != 42)
		abort();
	if (sc_event_validate(&d.ev, &err) != 0) {
		if (!strstr(err.message, "UTF-8") ||
		    sc_entity_validate_stored(&d.ev, NULL) != 0)
			abort();
		sc_decoded_event_free(&d);
		return 0;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	if (sc_event_encode(&d.ev, &buf, &len, NULL) != 0)
		abort();
	sc_decoded_event d2;
	if (sc_event_decode(buf, len, 42, &d2, NULL) != 0)
		abort();
	if (d2.ev.type != d.ev.type || d2.ev.nattrs != d.ev.nattrs ||
	    d2.ev.ntags != d.ev.ntags || d2.ev.time != d.ev.time ||
	    !str_eq(d2.ev.entity, d.ev.entity) ||
	    !str_eq(d2.ev.actor, d.ev.actor))
		abort();
	for (size_t i = 0; i < d.ev.nattrs; i++)
		if (!str_eq(d2.ev.attrs[i].name, d.ev.attrs[i].name) ||
		    d2.ev.attrs[i].value.type != d.ev.attrs[i].value.type)
			abort();
	sc_decoded_event_free(&d2);
	sc_free(buf);
	sc_decoded_event_free(&d);
	return 0;
}
