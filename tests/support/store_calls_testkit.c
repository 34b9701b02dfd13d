/*
 * Store calls that must succeed inside a cmocka test (store_testkit.h):
 * open, and append into the model. Apart from the rest of the kit
 * because it calls cmocka, which the fuzzers that link libsctest.a do not
 * link.
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
