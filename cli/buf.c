/*
 * statecache command: growable buffer, JSON output, base64 (cli/buf.h).
 */
#include "cli/buf.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===== buffer ============================================================= */

void sc_cli_buf_init(sc_cli_buf *b)
{
	b->ptr = NULL;
	b->len = 0;
	b->cap = 0;
}

void sc_cli_buf_free(sc_cli_buf *b)
{
	free(b->ptr);
	sc_cli_buf_init(b);
}

void sc_cli_buf_reset(sc_cli_buf *b)
{
	b->len = 0;
	if (b->ptr)
		b->ptr[0] = '\0';
}

int sc_cli_buf_reserve(sc_cli_buf *b, size_t n)
{
	if (n > SIZE_MAX / 2 - b->len)
		return ENOMEM;
	size_t need = b->len + n + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->ptr, cap);
	if (!p)
		return ENOMEM;
	b->ptr = p;
	b->cap = cap;
	return 0;
}

int sc_cli_buf_add(sc_cli_buf *b, const void *p, size_t n)
{
	int rc = sc_cli_buf_reserve(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->ptr + b->len, p, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return 0;
}

int sc_cli_buf_puts(sc_cli_buf *b, const char *s)
{
	return sc_cli_buf_add(b, s, strlen(s));
}

int sc_cli_buf_printf(sc_cli_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return EINVAL;
	int rc = sc_cli_buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

/* ===== UTF-8 ============================================================== */

/* Length of the valid UTF-8 sequence starting at p[0] (at most n bytes
 * available), or 0 when p[0] does not start one. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned cp;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
		return 0;
	if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))
		return 0;
	return len;
}

bool sc_cli_utf8_valid(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;
	while (i < n) {
		size_t l = utf8_seq_len(s + i, n - i);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

/* ===== JSON output ======================================================== */

int sc_cli_json_string(sc_cli_buf *b, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)p;
	/* Worst case: every byte becomes a 6-byte escape. */
	if (n > (SIZE_MAX - 2) / 6)
		return ENOMEM;
	int rc = sc_cli_buf_reserve(b, n * 6 + 2);
	if (rc)
		return rc;
	char *o = b->ptr + b->len;
	*o++ = '"';
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		if (c >= 0x80) {
			size_t l = utf8_seq_len(s + i, n - i);
			if (l) {
				memcpy(o, s + i, l);
				o += l;
				i += l;
			} else {
				/* U+FFFD REPLACEMENT CHARACTER */
				memcpy(o, "\xEF\xBF\xBD", 3);
				o += 3;
				i++;
			}
			continue;
		}
		i++;
		switch (c) {
		case '"':
			*o++ = '\\';
			*o++ = '"';
			break;
		case '\\':
			*o++ = '\\';
			*o++ = '\\';
			break;
		case '\n':
			*o++ = '\\';
			*o++ = 'n';
			break;
		case '\r':
			*o++ = '\\';
			*o++ = 'r';
			break;
		case '\t':
			*o++ = '\\';
			*o++ = 't';
			break;
		default:
			if (c < 0x20 || c == 0x7F) {
				memcpy(o, "\\u00", 4);
				o[4] = hex[c >> 4];
				o[5] = hex[c & 15];
				o += 6;
			} else {
				*o++ = (char)c;
			}
		}
	}
	*o++ = '"';
	b->len = (size_t)(o - b->ptr);
	b->ptr[b->len] = '\0';
	return 0;
}

int sc_cli_json_double(sc_cli_buf *b, double d)
{
	if (!isfinite(d))
		return sc_cli_buf_puts(b, "null");
	char tmp[40];
	/* 17 significant digits always read back exactly; try fewer first so
	 * that 0.1 prints as 0.1. */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	int rc = sc_cli_buf_puts(b, tmp);
	if (!rc && !strpbrk(tmp, ".eEn"))
		rc = sc_cli_buf_puts(b, ".0");
	return rc;
}

int sc_cli_json_value(sc_cli_buf *b, const sc_value *v)
{
	int rc;
	switch (v->type) {
	case SC_VALUE_NULL:
		return sc_cli_buf_puts(b, "null");
	case SC_VALUE_STRING:
		return sc_cli_json_string(b, v->u.s.ptr, v->u.s.len);
	case SC_VALUE_INT:
		return sc_cli_buf_printf(b, "%lld", (long long)v->u.i);
	case SC_VALUE_DOUBLE:
		return sc_cli_json_double(b, v->u.d);
	case SC_VALUE_BOOL:
		return sc_cli_buf_puts(b, v->u.b ? "true" : "false");
	case SC_VALUE_BYTES:
		rc = sc_cli_buf_puts(b, "{\"$bytes\":\"");
		if (!rc)
			rc = sc_cli_base64_encode(b, v->u.s.ptr, v->u.s.len);
		if (!rc)
			rc = sc_cli_buf_puts(b, "\"}");
		return rc;
	}
	return EINVAL;
}

/* ===== base64 ============================================================= */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sc_cli_base64_encode(sc_cli_buf *b, const void *p, size_t n)
{
	const unsigned char *s = p;
	if (n / 3 > (SIZE_MAX - 8) / 4)
		return ENOMEM;
	int rc = sc_cli_buf_reserve(b, (n + 2) / 3 * 4);
	if (rc)
		return rc;
	char *o = b->ptr + b->len;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v =
		    (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = '=';
		*o++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = '=';
	}
	b->len = (size_t)(o - b->ptr);
	b->ptr[b->len] = '\0';
	return 0;
}

static int b64_digit(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int sc_cli_base64_decode(const char *in, size_t n, char *out, size_t *outlen,
			 const char **why)
{
	const unsigned char *s = (const unsigned char *)in;
	*outlen = 0;
	if (n % 4) {
		*why = "length is not a multiple of 4 (padding with '=' is "
		       "required)";
		return -1;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int d[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = s[i + (size_t)k];
			if (c == '=' && last && k >= 2) {
				d[k] = 0;
				pad++;
				continue;
			}
			if (pad) {
				*why = "'=' padding in the middle";
				return -1;
			}
			d[k] = b64_digit(c);
			if (d[k] < 0) {
				*why = c == '='
					   ? "'=' padding in the middle"
					   : "character outside the base64 "
					     "alphabet";
				return -1;
			}
		}
		uint32_t v = (uint32_t)d[0] << 18 | (uint32_t)d[1] << 12 |
			     (uint32_t)d[2] << 6 | (uint32_t)d[3];
		if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF))) {
			*why = "non-zero bits in the padding";
			return -1;
		}
		out[o++] = (char)(v >> 16);
		if (pad < 2)
			out[o++] = (char)(v >> 8);
		if (pad < 1)
			out[o++] = (char)v;
	}
	*outlen = o;
	return 0;
}
