/*
 * statecache command: an entity state as one JSON object:
 *
 *   {"id":"user-1","attrs":{"age":31,"name":"Ann"},
 *    "updated_at":"2026-11-23T10:00:00Z","updated_by":"svc-a","position":7}
 *
 * Attributes come sorted by name (the entity keeps them so). An entity of
 * a named partition has "partition":"P" after its id; the default
 * partition's entities have no such member.
 */
#include "cli/json_event.h"

#include "cli/timefmt.h"
#include "statecache/cache.h"

int sc_cli_entity_encode(sc_cli_buf *b, const sc_entity *e)
{
	sc_str id = sc_entity_id(e);
	int rc = sc_cli_buf_puts(b, "{\"id\":");
	if (!rc)
		rc = sc_cli_json_string(b, id.ptr, id.len);
	sc_str part = sc_entity_partition(e);
	if (!rc && part.len) {
		rc = sc_cli_buf_puts(b, ",\"partition\":");
		if (!rc)
			rc = sc_cli_json_string(b, part.ptr, part.len);
	}
	if (!rc)
		rc = sc_cli_buf_puts(b, ",\"attrs\":{");
	size_t n = sc_entity_attr_count(e);
	for (size_t i = 0; !rc && i < n; i++) {
		sc_attr a = sc_entity_attr(e, i);
		if (i)
			rc = sc_cli_buf_puts(b, ",");
		if (!rc)
			rc = sc_cli_json_string(b, a.name.ptr, a.name.len);
		if (!rc)
			rc = sc_cli_buf_puts(b, ":");
		if (!rc)
			rc = sc_cli_json_value(b, &a.value);
	}
	char t[SC_CLI_TIME_MAX];
	sc_cli_time_format(sc_entity_updated_at(e), t);
	if (!rc)
		rc = sc_cli_buf_printf(
		    b, "},\"updated_at\":\"%s\",\"updated_by\":", t);
	sc_str by = sc_entity_updated_by(e);
	if (!rc)
		rc = sc_cli_json_string(b, by.ptr, by.len);
	if (!rc)
		rc = sc_cli_buf_printf(
		    b, ",\"position\":%llu}",
		    (unsigned long long)sc_entity_position(e));
	return rc;
}
