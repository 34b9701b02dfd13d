/*
 * libFuzzer harness for the JSON Lines event decoder (cli/json_event.h).
 *
 * Any input must either decode or fail with SC_EINVAL and a message; a
 * decoded event must encode to a line that decodes again and re-encodes to
 * the same bytes (the encoder's output is always accepted input).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/json_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_cli_event e, again;
	sc_error err;
	sc_cli_event_init(&e);
	sc_cli_event_init(&again);
	int rc = sc_cli_event_decode(&e, (const char *)data, size, &err);
	if (rc) {
		if (rc != SC_EINVAL || !err.message[0]) {
			fprintf(stderr, "decode: rc %d without a message\n",
				rc);
			abort();
		}
		sc_cli_event_clear(&e);
		return 0;
	}
	sc_cli_buf a, b;
	sc_cli_buf_init(&a);
	sc_cli_buf_init(&b);
	if (sc_cli_event_encode(&a, &e.ev, false))
		abort();
	if (sc_cli_event_decode(&again, a.ptr, a.len, &err)) {
		fprintf(stderr, "re-decode of %s failed: %s\n", a.ptr,
			err.message);
		abort();
	}
	if (sc_cli_event_encode(&b, &again.ev, false))
		abort();
	if (a.len != b.len || memcmp(a.ptr, b.ptr, a.len)) {
		fprintf(stderr, "round trip differs:\n%s\n%s\n", a.ptr, b.ptr);
		abort();
	}
	sc_cli_buf_free(&a);
	sc_cli_buf_free(&b);
	sc_cli_event_clear(&e);
	sc_cli_event_clear(&again);
	return 0;
}
