/*
 * statecache command: a growable byte buffer and the JSON output primitives
 * built on it (strings, numbers, attribute values, base64).
 *
 * Output is written by hand rather than through jansson's dump functions for
 * two reasons: doubles are printed in their shortest form that reads back to
 * the same value (jansson always uses 17 significant digits, so 0.1 would
 * print as 0.10000000000000001), and strings that are not valid UTF-8 (only
 * possible through the C API; ingest rejects them) must still produce valid
 * JSON: every byte that is not part of a valid UTF-8 sequence is written as
 * U+FFFD. Every output line is valid JSON that jansson reads back.
 */
#ifndef STATECACHE_CLI_BUF_H
#define STATECACHE_CLI_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statecache/event.h"

/* A growable buffer; `ptr` is always NUL-terminated once anything has been
 * appended. Zero-initialise or call sc_cli_buf_init. */
typedef struct sc_cli_buf {
	char *ptr;
	size_t len;
	size_t cap;
} sc_cli_buf;

void sc_cli_buf_init(sc_cli_buf *b);
void sc_cli_buf_free(sc_cli_buf *b);
/* Keep the memory, drop the contents. */
void sc_cli_buf_reset(sc_cli_buf *b);
/* Make room for `n` more bytes (plus the NUL). 0 or ENOMEM. */
int sc_cli_buf_reserve(sc_cli_buf *b, size_t n);
/* Append bytes; 0 or ENOMEM (the buffer is unchanged on failure). */
int sc_cli_buf_add(sc_cli_buf *b, const void *p, size_t n);
int sc_cli_buf_puts(sc_cli_buf *b, const char *s);
int sc_cli_buf_printf(sc_cli_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- JSON output ---- */

/* A JSON string literal of `n` bytes at `p`, quotes included. Control
 * characters, '"' and '\\' are escaped; invalid UTF-8 bytes become U+FFFD. */
int sc_cli_json_string(sc_cli_buf *b, const char *p, size_t n);
/* The shortest decimal that reads back as `d` (with ".0" when it would
 * otherwise look like an integer); non-finite values print as null. */
int sc_cli_json_double(sc_cli_buf *b, double d);
/* A value as the event format spells it: string, integer, double, true,
 * false, null or {"$bytes":"<base64>"}. */
int sc_cli_json_value(sc_cli_buf *b, const sc_value *v);

/* True when the `n` bytes at `p` are valid UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
bool sc_cli_utf8_valid(const char *p, size_t n);

/* ---- base64 (RFC 4648, standard alphabet, with padding) ---- */

/* Append the base64 text of `n` bytes. 0 or ENOMEM. */
int sc_cli_base64_encode(sc_cli_buf *b, const void *p, size_t n);
/* Decode `n` characters into `out` (room for n / 4 * 3 bytes); *outlen is
 * the decoded length. Strict: the length must be a multiple of 4, padding
 * only at the end, no whitespace, and unused bits must be zero. Returns 0,
 * or -1 with a static reason in *why. */
int sc_cli_base64_decode(const char *in, size_t n, char *out, size_t *outlen,
			 const char **why);

#endif
