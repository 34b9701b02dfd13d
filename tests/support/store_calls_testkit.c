/*
 * Store calls that must succeed inside a cmocka test (store_testkit.h):
 * open, append into the model, and the state equal to the model. Apart from the
 * rest of the kit because it calls cmocka, which the fuzzers that link
 * libsctest.a do not link.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>

#include "tests/support/store_testkit.h"
#include "tests/support/sys_testkit.h"

sc_store *tk_store_open(const char *dir, const sc_store_options *o)
{
	sc_store *s = NULL;
	sc_error err;
	int rc = sc_store_open(dir, o, &s, &err);
	if (rc)
		fprintf(stderr, "open %s: %s\n", dir, err.message);
	assert_int_equal(rc, 0);
	assert_non_null(s);
	return s;
}

sc_store *tk_store_create(char *dir, size_t dir_len, const sc_store_options *o)
{
	tk_tmproot_dir(dir, dir_len);
	sc_store_options co = *o;
	co.create = true;
	return tk_store_open(dir, &co);
}

uint64_t tk_store_append_model(sc_store *s, sc_event *evs, size_t n,
			       tk_refstate *m)
{
	uint64_t first = 0;
	sc_error err;
	int rc = sc_store_append(s, evs, n, &first, &err);
	if (rc)
		fprintf(stderr, "append: %s\n", err.message);
	assert_int_equal(rc, 0);
	for (size_t i = 0; i < n; i++) {
		evs[i].position = first + i;
		tk_refstate_apply(m, &evs[i]);
	}
	return first;
}

void tk_view_check_model(const sc_view *v, const tk_refstate *m,
			 const char *what)
{
	char why[512];
	bool ok = tk_refstate_check_view(m, v, why, sizeof why);
	if (!ok)
		fprintf(stderr, "%s: %s\n", what, why);
	assert_true(ok);
}

void tk_store_check_model(sc_store *s, const tk_refstate *m, const char *what)
{
	sc_reader *r;
	assert_int_equal(sc_reader_open(sc_store_cache(s), &r, NULL), 0);
	const sc_view *v = sc_reader_begin(r);
	char why[512];
	bool ok = tk_refstate_check_view(m, v, why, sizeof why);
	sc_reader_end(r);
	sc_reader_close(r);
	if (!ok)
		fprintf(stderr, "%s: %s\n", what, why);
	assert_true(ok);
}
