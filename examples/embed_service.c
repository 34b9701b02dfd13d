/*
 * Embedding statecache in a service: one writer thread appends events,
 * several reader threads answer queries from the in-memory state without
 * locks.
 *
 * The scenario is a tiny bank: ACCOUNTS accounts start with 1000 each; the
 * writer moves money between two accounts with one append of two `set`
 * events (one LMDB transaction, one promoted version). Readers pin a view
 * and sum every balance: because a reader sees exactly one promoted
 * version, whole, the sum is always ACCOUNTS * 1000. After the run the
 * store is closed and reopened (snapshot + log replay) and checked again.
 *
 *   cc -std=c11 embed_service.c $(pkg-config --cflags --libs statecache)
 *   ./a.out --self-test      # temp dir, short scenario, exit 0 on success
 *   ./a.out DIR              # the same scenario in DIR, kept afterwards
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <statecache/store.h>

#define ACCOUNTS      64
#define READERS	      3
#define TRANSFERS     3000
#define START_BALANCE 1000

static int fail(const char *what, const sc_error *err)
{
	fprintf(stderr, "embed_service: %s: %s\n", what,
		err ? err->message : "");
	return 1;
}

static void account_id(char *buf, size_t n, int i)
{
	snprintf(buf, n, "account-%03d", i);
}

/* The balance of one account in a view; -1 when missing or malformed. */
static int64_t balance_in(const sc_view *v, int i)
{
	char id[32];
	account_id(id, sizeof id, i);
	const sc_entity *e = sc_view_get(v, (sc_str){id, strlen(id)});
	sc_value bal;
	if (!e || !sc_entity_find(e, (sc_str){"balance", 7}, &bal) ||
	    bal.type != SC_VALUE_INT)
		return -1;
	return bal.u.i;
}

/* ---- readers ---------------------------------------------------------- */

typedef struct reader_ctx {
	sc_cache *cache;
	atomic_bool *stop;
	unsigned long views, bad_sums;
	int open_rc;
} reader_ctx;

static void *reader_main(void *arg)
{
	reader_ctx *c = arg;
	sc_reader *r;
	c->open_rc = sc_reader_open(c->cache, &r, NULL);
	if (c->open_rc)
		return NULL;
	while (!atomic_load(c->stop)) {
		/* One pin: every account is read from the same version. */
		const sc_view *v = sc_reader_begin(r);
		if (sc_view_len(v) == ACCOUNTS) {
			int64_t sum = 0;
			for (int i = 0; i < ACCOUNTS; i++)
				sum += balance_in(v, i);
			if (sum != (int64_t)ACCOUNTS * START_BALANCE)
				c->bad_sums++;
			c->views++;
		}
		sc_reader_end(r);
	}
	sc_reader_close(r);
	return NULL;
}

/* ---- writer ----------------------------------------------------------- */

/* Move `amount` from account a to b as one append of two events. */
static int transfer(sc_store *st, int a, int b, int64_t amount, sc_error *err)
{
	sc_reader *r;
	int rc = sc_reader_open(sc_store_cache(st), &r, err);
	if (rc)
		return rc;
	const sc_view *v = sc_reader_begin(r);
	int64_t ba = balance_in(v, a), bb = balance_in(v, b);
	sc_reader_end(r);
	sc_reader_close(r);
	char ida[32], idb[32];
	account_id(ida, sizeof ida, a);
	account_id(idb, sizeof idb, b);
	sc_attr attr_a = {{"balance", 7}, {.type = SC_VALUE_INT}};
	sc_attr attr_b = attr_a;
	attr_a.value.u.i = ba - amount;
	attr_b.value.u.i = bb + amount;
	sc_event evs[2] = {
	    {.entity = {ida, strlen(ida)},
	     .type = SC_EVENT_SET,
	     .attrs = &attr_a,
	     .nattrs = 1,
	     .actor = {"transfers", 9}},
	    {.entity = {idb, strlen(idb)},
	     .type = SC_EVENT_SET,
	     .attrs = &attr_b,
	     .nattrs = 1,
	     .actor = {"transfers", 9}},
	};
	return sc_store_append(st, evs, 2, NULL, err);
}

static int64_t total(sc_store *st)
{
	sc_reader *r;
	if (sc_reader_open(sc_store_cache(st), &r, NULL))
		return -1;
	const sc_view *v = sc_reader_begin(r);
	int64_t sum = 0;
	for (int i = 0; i < ACCOUNTS; i++)
		sum += balance_in(v, i);
	sc_reader_end(r);
	sc_reader_close(r);
	return sum;
}

static int run(const char *dir)
{
	sc_store_options opt = {.create = true,
				.durability = SC_DURABILITY_NOSYNC};
	sc_store *st;
	sc_error err;
	if (sc_store_open(dir, &opt, &st, &err))
		return fail("open", &err);

	/* open the accounts: one append of ACCOUNTS events */
	sc_event evs[ACCOUNTS];
	sc_attr attrs[ACCOUNTS];
	char ids[ACCOUNTS][32];
	for (int i = 0; i < ACCOUNTS; i++) {
		account_id(ids[i], sizeof ids[i], i);
		attrs[i] =
		    (sc_attr){{"balance", 7},
			      {.type = SC_VALUE_INT, .u.i = START_BALANCE}};
		evs[i] = (sc_event){.entity = {ids[i], strlen(ids[i])},
				    .type = SC_EVENT_SET,
				    .attrs = &attrs[i],
				    .nattrs = 1};
	}
	if (sc_store_append(st, evs, ACCOUNTS, NULL, &err)) {
		sc_store_close(st);
		return fail("opening the accounts", &err);
	}

	atomic_bool stop = false;
	reader_ctx rc[READERS];
	pthread_t th[READERS];
	for (int i = 0; i < READERS; i++) {
		rc[i] =
		    (reader_ctx){.cache = sc_store_cache(st), .stop = &stop};
		pthread_create(&th[i], NULL, reader_main, &rc[i]);
	}
	unsigned seed = 12345;
	int status = 0;
	for (int t = 0; t < TRANSFERS && !status; t++) {
		int a = rand_r(&seed) % ACCOUNTS;
		int b = (a + 1 + rand_r(&seed) % (ACCOUNTS - 1)) % ACCOUNTS;
		if (transfer(st, a, b, rand_r(&seed) % 50, &err))
			status = fail("transfer", &err);
		if (t == TRANSFERS / 2 && sc_store_snapshot(st, NULL, &err))
			status = fail("snapshot", &err);
	}
	atomic_store(&stop, true);
	unsigned long views = 0, bad = 0;
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		if (rc[i].open_rc)
			status = fail("reader open", NULL);
		views += rc[i].views;
		bad += rc[i].bad_sums;
	}
	printf("embed_service: %d transfers, %d readers checked %lu views, "
	       "%lu with a wrong total\n",
	       TRANSFERS, READERS, views, bad);
	if (bad)
		status = fail("a reader saw a torn state", NULL);

	/* restart: restore the snapshot, replay the log after it */
	uint64_t last = sc_store_last_position(st);
	sc_store_close(st);
	opt.create = false;
	if (!status && sc_store_open(dir, &opt, &st, &err))
		return fail("reopen", &err);
	if (!status) {
		int64_t sum = total(st);
		printf("embed_service: reopened at position %llu, total %lld\n",
		       (unsigned long long)sc_store_last_position(st),
		       (long long)sum);
		if (sc_store_last_position(st) != last ||
		    sum != (int64_t)ACCOUNTS * START_BALANCE)
			status = fail("state after reopen is wrong", NULL);
		sc_store_close(st);
	}
	return status;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
		    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--self-test")) {
		char dir[] = "/tmp/embed_service.XXXXXX";
		if (!mkdtemp(dir)) {
			perror("embed_service: mkdtemp");
			return 1;
		}
		int status = run(dir);
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		if (!status)
			printf("embed_service: self-test passed\n");
		return status;
	}
	if (argc == 2 && argv[1][0] != '-')
		return run(argv[1]);
	fprintf(stderr, "usage: embed_service --self-test | DIR\n");
	return 2;
}
