/*
 * A custom projector: count events per partition in an LMDB database of
 * its own, inside the store's environment, updated in the same write
 * transaction as the event log. Either an append is committed together
 * with its counts, or neither is.
 *
 * The projector also shows a veto: it rejects events whose partition is
 * "forbidden", which aborts the whole append (SC_EPROJECTOR).
 *
 *   cc -std=c11 custom_projector.c $(pkg-config --cflags --libs statecache)
 *   ./a.out --self-test
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <statecache/store.h>

typedef struct partition_counts {
	MDB_dbi dbi;
	unsigned long applied;
} partition_counts;

static int counts_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
			sc_error *err)
{
	partition_counts *pc = ctx;
	/* txn is NULL while the store replays its log at open: the counts
	 * were committed with those events already. */
	if (!txn)
		return 0;
	if (ev->partition.len == 9 &&
	    !memcmp(ev->partition.ptr, "forbidden", 9)) {
		if (err)
			snprintf(err->message, sizeof err->message,
				 "partition \"forbidden\" is not accepted");
		return SC_EINVAL;
	}
	sc_str p = ev->partition.len ? ev->partition : (sc_str){"(none)", 6};
	MDB_val k = {p.len, (void *)p.ptr}, v;
	uint64_t n = 0;
	int rc = mdb_get(txn, pc->dbi, &k, &v);
	if (rc == 0 && v.mv_size == sizeof n)
		memcpy(&n, v.mv_data, sizeof n);
	else if (rc != MDB_NOTFOUND && rc != 0)
		return rc;
	n++;
	v = (MDB_val){sizeof n, &n};
	rc = mdb_put(txn, pc->dbi, &k, &v, 0);
	if (rc)
		return rc;
	pc->applied++;
	return 0;
}

static uint64_t count_of(sc_store *st, MDB_dbi dbi, const char *partition)
{
	MDB_txn *txn;
	uint64_t n = 0;
	if (mdb_txn_begin(sc_store_env(st), NULL, MDB_RDONLY, &txn))
		return UINT64_MAX;
	MDB_val k = {strlen(partition), (void *)partition}, v;
	if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == sizeof n)
		memcpy(&n, v.mv_data, sizeof n);
	mdb_txn_abort(txn);
	return n;
}

/* Open (creating) the projector's database and register it. */
static int counts_attach(sc_store *st, partition_counts *pc, sc_error *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(sc_store_env(st), NULL, 0, &txn);
	if (!rc)
		rc =
		    mdb_dbi_open(txn, "partition_counts", MDB_CREATE, &pc->dbi);
	if (!rc)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc) {
		snprintf(err->message, sizeof err->message, "%s",
			 mdb_strerror(rc));
		return rc;
	}
	sc_projector p = {
	    .name = "partition_counts", .apply = counts_apply, .ctx = pc};
	return sc_store_add_projector(st, &p, err);
}

static int check(int ok, const char *what)
{
	if (!ok)
		fprintf(stderr, "custom_projector: FAILED: %s\n", what);
	return ok ? 0 : 1;
}

static int run(const char *dir)
{
	sc_store_options opt = {.create = true,
				.durability = SC_DURABILITY_NOSYNC};
	sc_store *st;
	sc_error err;
	if (sc_store_open(dir, &opt, &st, &err)) {
		fprintf(stderr, "custom_projector: open: %s\n", err.message);
		return 1;
	}
	partition_counts pc = {0};
	if (counts_attach(st, &pc, &err)) {
		fprintf(stderr, "custom_projector: attach: %s\n", err.message);
		sc_store_close(st);
		return 1;
	}
	static const char *const parts[] = {"eu", "us", "eu", "ap", "eu"};
	sc_attr a = {{"seen", 4}, {.type = SC_VALUE_BOOL, .u.b = true}};
	sc_event evs[5];
	char ids[5][16];
	for (int i = 0; i < 5; i++) {
		snprintf(ids[i], sizeof ids[i], "device-%d", i);
		evs[i] = (sc_event){.entity = {ids[i], strlen(ids[i])},
				    .type = SC_EVENT_SET,
				    .attrs = &a,
				    .nattrs = 1,
				    .partition = {parts[i], strlen(parts[i])}};
	}
	int bad = 0;
	bad +=
	    check(sc_store_append(st, evs, 5, NULL, &err) == 0, "first append");
	bad += check(sc_store_append(st, evs, 2, NULL, &err) == 0,
		     "second append");
	/* a vetoed batch: nothing of it is written, counts unchanged */
	evs[1].partition = (sc_str){"forbidden", 9};
	int rc = sc_store_append(st, evs, 3, NULL, &err);
	bad += check(rc == SC_EPROJECTOR, "the veto aborts the append");
	printf("custom_projector: vetoed append: %s\n", err.message);
	bad += check(sc_store_last_position(st) == 7,
		     "the vetoed batch left no events");
	bad += check(count_of(st, pc.dbi, "eu") == 4, "eu counted 4 times");
	bad += check(count_of(st, pc.dbi, "us") == 2, "us counted twice");
	bad += check(count_of(st, pc.dbi, "ap") == 1, "ap counted once");
	printf("custom_projector: eu=%llu us=%llu ap=%llu after %llu events\n",
	       (unsigned long long)count_of(st, pc.dbi, "eu"),
	       (unsigned long long)count_of(st, pc.dbi, "us"),
	       (unsigned long long)count_of(st, pc.dbi, "ap"),
	       (unsigned long long)sc_store_last_position(st));
	sc_store_close(st);

	/* the counts are durable and agree with the log after a reopen */
	opt.create = false;
	if (sc_store_open(dir, &opt, &st, &err)) {
		fprintf(stderr, "custom_projector: reopen: %s\n", err.message);
		return 1;
	}
	partition_counts pc2 = {0};
	if (counts_attach(st, &pc2, &err)) {
		fprintf(stderr, "custom_projector: attach: %s\n", err.message);
		sc_store_close(st);
		return 1;
	}
	bad += check(count_of(st, pc2.dbi, "eu") == 4, "eu after reopen");
	bad += check(pc2.applied == 0, "replay at open does not count twice");
	sc_store_close(st);
	return bad ? 1 : 0;
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
	if (argc != 2 || strcmp(argv[1], "--self-test")) {
		fprintf(stderr, "usage: custom_projector --self-test\n");
		return 2;
	}
	char dir[] = "/tmp/custom_projector.XXXXXX";
	if (!mkdtemp(dir)) {
		perror("custom_projector: mkdtemp");
		return 1;
	}
	int status = run(dir);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (!status)
		printf("custom_projector: self-test passed\n");
	return status;
}
