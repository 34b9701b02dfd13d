/*
 * libFuzzer harness for the fast path of the JSON Lines decoder
 * (cli/json_event.c) against jansson: an input the fast path decodes must
 * be one jansson decodes, to the same event (tests/test_json_fast.c checks
 * the same on generated lines).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/json_event.h"
#include "tests/support/store_testkit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_cli_event a, b;
	sc_error ea, eb;
	sc_cli_event_init(&a);
	sc_cli_event_init(&b);
	int fa = sc_cli_event_decode_fast(&a, (const char *)data, size, &ea);
	if (fa == 0) {
		int jb = sc_cli_event_decode_jansson(&b, (const char *)data,
						     size, &eb);
		if (jb) {
			fprintf(stderr,
				"the fast path took a line jansson refuses: "
				"%s\n",
				eb.message);
			abort();
		}
		if (!tk_event_equal(&a.ev, &b.ev)) {
			fprintf(stderr, "the two decoders disagree\n");
			abort();
		}
	} else if (fa != 1) {
		abort();
	}
	sc_cli_event_clear(&a);
	sc_cli_event_clear(&b);
	return 0;
}
