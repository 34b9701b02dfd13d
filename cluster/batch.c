/*
 * The Batch message (proto/statecache/v1/cluster.proto): field 1 repeated
 * Event. Each event is written and read by the store's event codec, so a
 * batch holds exactly the records a log holds, and a node decodes them
 * with the same hostile decoder it reads its log with.
 */
#include "cluster/cluster_internal.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"

/* Tag of field 1, wire type 2 (length-delimited). */
#define BATCH_EVENTS_TAG 0x0a

static size_t varint_size(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *varint_write(uint64_t v, uint8_t *p)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

size_t sc_cluster_batch_size(const sc_event *events, size_t n)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = sc_event_encoded_size(&events[i]);
		total += 1 + varint_size(len) + len;
	}
	return total;
}

void sc_cluster_batch_write(const sc_event *events, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		size_t len = sc_event_encoded_size(&events[i]);
		*out++ = BATCH_EVENTS_TAG;
		out = varint_write(len, out);
		out = sc_event_write(&events[i], out);
	}
}

/* A varint of at most 10 bytes at p[0..end); NULL when malformed. */
static const uint8_t *varint_read(const uint8_t *p, const uint8_t *end,
				  uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
		uint8_t b = *p++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return p;
		}
	}
	return NULL;
}

void sc_cluster_batch_free(sc_cluster_batch *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++)
		sc_decoded_event_free(&b->decoded[i]);
	sc_free(b->decoded);
	sc_free(b->events);
	memset(b, 0, sizeof *b);
}

int sc_cluster_batch_decode(const void *buf, size_t len, sc_cluster_batch *out,
			    sc_error *err)
{
	memset(out, 0, sizeof *out);
	const uint8_t *p = buf, *end = p + len;
	/* First pass: frame the events and count them. */
	size_t count = 0;
	for (const uint8_t *q = p; q < end;) {
		uint64_t elen = 0;
		if (*q != BATCH_EVENTS_TAG)
			return sc_error_set(
			    err, SC_ECORRUPT,
			    "batch: unexpected field tag 0x%02x "
			    "at byte %zu (only events, field "
			    "1, are known)",
			    *q, (size_t)(q - p));
		q = varint_read(q + 1, end, &elen);
		if (!q || elen > (uint64_t)(end - q))
			return sc_error_set(err, SC_ECORRUPT,
					    "batch: event %zu is truncated",
					    count);
		q += elen;
		count++;
	}
	if (count == 0)
		return sc_error_set(err, SC_ECORRUPT,
				    "batch: holds no event (a publisher "
				    "never sends an empty batch)");
	out->decoded = sc_calloc(count, sizeof *out->decoded);
	out->events = sc_calloc(count, sizeof *out->events);
	if (!out->decoded || !out->events) {
		sc_cluster_batch_free(out);
		return sc_error_set(
		    err, ENOMEM, "batch: out of memory for %zu events", count);
	}
	for (const uint8_t *q = p; q < end;) {
		uint64_t elen = 0;
		q = varint_read(q + 1, end, &elen);
		sc_error e;
		int rc = sc_event_decode(q, (size_t)elen, 0,
					 &out->decoded[out->n], &e);
		if (rc) {
			size_t i = out->n;
			sc_cluster_batch_free(out);
			return sc_error_set(err, rc, "batch: event %zu: %s", i,
					    e.message);
		}
		out->events[out->n] = out->decoded[out->n].ev;
		out->n++;
		q += elen;
	}
	return 0;
}
