/*
 * The writer's size-class free list (common/pool.h), with both sources of
 * new blocks: reuse by exact size, the bound on held bytes (malloc), slab
 * growth, alignment and tails (slabs), contents of live blocks never
 * shared, failure injection on list hits and carving.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/pool.h"
#include "statecache/testing.h"
#include "tests/support/hamt_testkit.h"

static sc_pool_source source_of(void **state)
{
	return *(const sc_pool_source *)*state;
}

static void test_reuse_exact_size(void **state)
{
	sc_pool p;
	sc_pool_init(&p, 1 << 20, source_of(state));
	void *a = sc_pool_alloc(&p, 64);
	void *b = sc_pool_alloc(&p, 64);
	assert_non_null(a);
	assert_non_null(b);
	sc_pool_free(&p, a, 64);
	sc_pool_free(&p, b, 64);
	assert_int_equal(p.bytes, 128);
	/* LIFO, and only for the same size */
	void *c = sc_pool_alloc(&p, 72);
	assert_ptr_not_equal(c, a);
	assert_ptr_not_equal(c, b);
	assert_ptr_equal(sc_pool_alloc(&p, 64), b);
	assert_ptr_equal(sc_pool_alloc(&p, 64), a);
	assert_int_equal(p.bytes, 0);
	/* sizes off the classes bypass the lists */
	void *odd = sc_pool_alloc(&p, 61);
	void *big = sc_pool_alloc(&p, SC_POOL_MAX_SIZE + 8);
	sc_pool_free(&p, odd, 61);
	sc_pool_free(&p, big, SC_POOL_MAX_SIZE + 8);
	sc_pool_free(&p, NULL, 64);
	assert_int_equal(p.bytes, 0);
	sc_pool_free(&p, a, 64);
	sc_pool_free(&p, b, 64);
	sc_pool_free(&p, c, 72);
	assert_int_equal(p.bytes, 200);
	sc_pool_trim(&p);
	assert_int_equal(p.bytes, source_of(state) == SC_POOL_MALLOC ? 0 : 200);
	sc_pool_destroy(&p);
	assert_int_equal(p.bytes, 0);
	assert_int_equal(p.mapped, 0);
}

/* SC_POOL_MALLOC keeps at most max_bytes listed; the rest goes to sc_free. */
static void test_bound(void **state)
{
	(void)state;
	sc_pool p;
	sc_pool_init(&p, 1000, SC_POOL_MALLOC);
	void *v[40];
	for (int i = 0; i < 40; i++)
		assert_non_null(v[i] = sc_pool_alloc(&p, 48));
	for (int i = 0; i < 40; i++) {
		sc_pool_free(&p, v[i], 48);
		assert_true(p.bytes <= 1000);
	}
	assert_int_equal(p.bytes, 20 * 48); /* 20 fit, the rest freed */
	sc_pool_trim(&p);
	assert_int_equal(p.bytes, 0);
	/* a zero bound keeps nothing */
	sc_pool_init(&p, 0, SC_POOL_MALLOC);
	void *x = sc_pool_alloc(&p, 48);
	sc_pool_free(&p, x, 48);
	assert_int_equal(p.bytes, 0);
}

/* A taken block from a list fails like sc_malloc under injection, and the
 * list is left as it was. */
static void test_failure_injection(void **state)
{
	sc_pool p;
	sc_pool_init(&p, 1 << 20, source_of(state));
	void *a = sc_pool_alloc(&p, 128);
	sc_pool_free(&p, a, 128);
	sc_testing_fail_alloc_after(0);
	assert_null(sc_pool_alloc(&p, 128));
	assert_int_equal(p.bytes, 128);
	assert_ptr_equal(sc_pool_alloc(&p, 128), a);
	sc_testing_fail_alloc_after(0);
	assert_null(sc_pool_alloc(&p, 136)); /* empty list: the source fails */
	sc_testing_fail_alloc_after(-1);
	void *b = sc_pool_alloc(&p, 136);
	assert_non_null(b);
	sc_pool_free(&p, b, 136);
	sc_pool_free(&p, a, 128);
	sc_pool_destroy(&p);
}

/* Slabs: 64 KiB first, doubling to 2 MiB, then 2 MiB each and aligned to
 * it; the tail of a slab too short for a block joins its class list. */
static void test_slab_growth(void **state)
{
	(void)state;
	enum { SIZE = 1000, N = 9000 }; /* about 8.6 MiB */
	sc_pool p;
	sc_pool_init(&p, 0, SC_POOL_SLABS);
	static unsigned char *blk[N];
	size_t expect_mapped = 0, slab = 64 << 10;
	for (int i = 0; i < N; i++) {
		size_t tail = (size_t)(p.carve_end - p.carve);
		size_t listed = p.bytes;
		blk[i] = sc_pool_alloc(&p, SIZE);
		assert_non_null(blk[i]);
		assert_int_equal((uintptr_t)blk[i] % 8, 0);
		memset(blk[i], (int)(i & 0xff), SIZE);
		if (tail < SIZE) {
			/* a new slab was mapped for this block */
			expect_mapped += slab;
			assert_int_equal(p.mapped, expect_mapped);
			assert_int_equal(p.bytes,
					 listed + (tail >= 8 ? tail : 0));
			if (slab == (2u << 20))
				assert_int_equal((uintptr_t)p.slabs % slab, 0);
			if (slab < (2u << 20))
				slab *= 2;
		}
	}
	assert_true(p.mapped >= (size_t)N * SIZE);
	for (int i = 0; i < N; i++) {
		for (size_t k = 0; k < SIZE; k += 97)
			assert_int_equal(blk[i][k], i & 0xff);
		sc_pool_free(&p, blk[i], SIZE);
	}
	/* every block is kept for reuse: the next N come from the list */
	size_t mapped = p.mapped;
	for (int i = 0; i < N; i++)
		assert_non_null(blk[i] = sc_pool_alloc(&p, SIZE));
	assert_int_equal(p.mapped, mapped);
	for (int i = 0; i < N; i++)
		sc_pool_free(&p, blk[i], SIZE);
	sc_pool_destroy(&p);
	assert_int_equal(p.mapped, 0);
	assert_null(p.slabs);
}

/* Random traffic: every live block keeps its own contents (no block is
 * handed out twice), held bytes stay under the bound and match the model. */
static void test_random(void **state)
{
	enum { SLOTS = 256 };
	uint64_t s = tk_seed("test_random");
	bool slabs = source_of(state) == SC_POOL_SLABS;
	sc_pool p;
	sc_pool_init(&p, 16 * 1024, source_of(state));
	unsigned char *blk[SLOTS] = {0};
	size_t sz[SLOTS] = {0};
	for (int step = 0; step < 200000; step++) {
		unsigned i = (unsigned)(tk_rand(&s) % SLOTS);
		if (blk[i]) {
			for (size_t k = 0; k < sz[i]; k++)
				if (blk[i][k] != (unsigned char)(i + k))
					fail_msg(
					    "block %u byte %zu overwritten", i,
					    k);
			size_t before = p.bytes;
			sc_pool_free(&p, blk[i], sz[i]);
			assert_true(p.bytes == before ||
				    p.bytes == before + sz[i]);
			assert_true(slabs || p.bytes <= 16 * 1024);
			blk[i] = NULL;
		} else {
			size_t n = tk_rand(&s) % 4 ? 8 * (1 + tk_rand(&s) % 16)
						   : 1 + tk_rand(&s) % 1100;
			blk[i] = sc_pool_alloc(&p, n);
			assert_non_null(blk[i]);
			sz[i] = n;
			for (size_t k = 0; k < n; k++)
				blk[i][k] = (unsigned char)(i + k);
		}
	}
	for (unsigned i = 0; i < SLOTS; i++)
		sc_pool_free(&p, blk[i], sz[i]);
	sc_pool_destroy(&p);
	assert_int_equal(p.bytes, 0);
}

int main(void)
{
	static sc_pool_source mal = SC_POOL_MALLOC, slabs = SC_POOL_SLABS;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_prestate(test_reuse_exact_size, &mal),
	    cmocka_unit_test_prestate(test_reuse_exact_size, &slabs),
	    cmocka_unit_test(test_bound),
	    cmocka_unit_test_prestate(test_failure_injection, &mal),
	    cmocka_unit_test_prestate(test_failure_injection, &slabs),
	    cmocka_unit_test(test_slab_growth),
	    cmocka_unit_test_prestate(test_random, &mal),
	    cmocka_unit_test_prestate(test_random, &slabs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
