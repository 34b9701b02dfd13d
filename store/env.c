/*
 * The LMDB environment of a store: error codes, warnings, read
 * transactions, map growth, and the one write-transaction path
 * (sc_store_write) every write of the store takes.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"

int sc_store_lmdb_error(sc_error *err, int rc, const char *what)
{
	if (rc == ENOMEM)
		return sc_error_set(err, ENOMEM, "%s: out of memory", what);
	if (rc > 0)
		return sc_error_set(err, rc, "%s: %s", what, mdb_strerror(rc));
	if (rc == MDB_MAP_FULL)
		return sc_error_set(err, SC_EMAPFULL,
				    "%s: the LMDB map is full; raise "
				    "map_size_max",
				    what);
	if (rc == MDB_TXN_FULL)
		return sc_error_set(err, SC_ETOOBIG,
				    "%s: too many pages changed in one "
				    "transaction (%s); split the batch",
				    what, mdb_strerror(rc));
	if (rc == MDB_READERS_FULL)
		return sc_error_set(err, SC_EREADERS,
				    "%s: %s; close idle read transactions",
				    what, mdb_strerror(rc));
	if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID)
		return sc_error_set(err, SC_ECORRUPT,
				    "%s: %s; restore the store from a backup",
				    what, mdb_strerror(rc));
	if (rc == MDB_VERSION_MISMATCH)
		return sc_error_set(err, SC_EVERSION,
				    "%s: %s; use the LMDB version that wrote "
				    "it",
				    what, mdb_strerror(rc));
	return sc_error_set(err, SC_ELMDB, "%s: %s", what, mdb_strerror(rc));
}

void sc_store_warn(sc_store *store, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (store->opt.warn)
		store->opt.warn(store->opt.warn_ctx, msg);
	else
		fprintf(stderr, "statecache: warning: %s\n", msg);
}

int64_t sc_store_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sc_store_release_pages(const void *lo, const void *hi)
{
	if ((uintptr_t)lo >= (uintptr_t)hi)
		return;
	long ps = sysconf(_SC_PAGESIZE);
	uintptr_t mask = (uintptr_t)(ps > 0 ? ps : 4096) - 1;
	uintptr_t a = (uintptr_t)lo & ~mask;
	uintptr_t b = ((uintptr_t)hi + mask) & ~mask;
	(void)madvise((void *)a, b - a, MADV_DONTNEED);
}

void sc_release_span_add(sc_release_span *r, const void *bytes, size_t len,
			 unsigned every)
{
	const uint8_t *b = bytes, *e = b + len;
	if (!r->lo || b < r->lo)
		r->lo = b;
	if (e > r->hi)
		r->hi = e;
	if (++r->seen % every == 0)
		sc_release_span_flush(r);
}

void sc_release_span_flush(sc_release_span *r)
{
	sc_store_release_pages(r->lo, r->hi);
	r->lo = r->hi = NULL;
}

void sc_store_release_map(sc_store *store)
{
	const char *dir;
	char path[PATH_MAX], real[PATH_MAX];
	if (mdb_env_get_path(store->env, &dir) ||
	    snprintf(path, sizeof path, "%s/data.mdb", dir) >=
		(int)sizeof path ||
	    !realpath(path, real))
		return;
	/* Shared: no remap (map growth, or the adoption of another
	 * process's growth by a read transaction) while the ranges found
	 * are released. */
	pthread_rwlock_rdlock(&store->map_lock);
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f) {
		pthread_rwlock_unlock(&store->map_lock);
		return;
	}
	char line[PATH_MAX + 128];
	size_t rl = strlen(real);
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = 0;
		unsigned long lo, hi;
		if (n <= rl || line[n - rl - 1] != ' ' ||
		    strcmp(line + n - rl, real) != 0 ||
		    sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		sc_store_release_pages((const void *)lo, (const void *)hi);
	}
	fclose(f);
	pthread_rwlock_unlock(&store->map_lock);
}

/* ---- read transactions --------------------------------------------------- */

int sc_store_read_begin(sc_store *store, MDB_txn **txn, sc_error *err)
{
	pthread_rwlock_rdlock(&store->map_lock);
	int rc = mdb_txn_begin(store->env, NULL, MDB_RDONLY, txn);
	if (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map: adopt its size (no
		 * transaction may be active in this process meanwhile). */
		pthread_rwlock_unlock(&store->map_lock);
		pthread_rwlock_wrlock(&store->map_lock);
		mdb_env_set_mapsize(store->env, 0);
		pthread_rwlock_unlock(&store->map_lock);
		pthread_rwlock_rdlock(&store->map_lock);
		rc = mdb_txn_begin(store->env, NULL, MDB_RDONLY, txn);
	}
	if (rc) {
		pthread_rwlock_unlock(&store->map_lock);
		return sc_store_lmdb_error(err, rc,
					   "beginning a read "
					   "transaction");
	}
	return 0;
}

void sc_store_read_end(sc_store *store, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&store->map_lock);
}

int sc_store_read_cursor(sc_store *store, MDB_dbi dbi, const char *what,
			 MDB_txn **txn, MDB_cursor **cur, sc_error *err)
{
	int rc = sc_store_read_begin(store, txn, err);
	if (rc)
		return rc;
	rc = mdb_cursor_open(*txn, dbi, cur);
	if (rc) {
		sc_store_read_end(store, *txn);
		return sc_store_lmdb_error(err, rc, what);
	}
	return 0;
}

int sc_store_rows(MDB_txn *txn, MDB_dbi dbi, const char *what, sc_row_fn fn,
		  void *ctx, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, what);
	MDB_val k, v;
	int op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		rc = fn(ctx, &k, &v, err);
		if (rc) {
			mdb_cursor_close(cur);
			return rc;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : sc_store_lmdb_error(err, rc, what);
}

/* ---- the write path ------------------------------------------------------ */

/*
 * ThreadSanitizer cannot see how LMDB orders a write transaction after the
 * readers of the pages it reuses (reader-table slots and meta pages in
 * uninstrumented code), and reports those page writes as races with earlier
 * reads. In TSan builds only, every write transaction holds map_lock
 * exclusively, which creates exactly the happens-before edges LMDB
 * guarantees. Other builds take no lock here: readers never wait for the
 * writer.
 */
#if defined(__SANITIZE_THREAD__)
#define SC_STORE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SC_STORE_TSAN 1
#endif
#endif

static void tsan_write_begin(sc_store *store)
{
#ifdef SC_STORE_TSAN
	pthread_rwlock_wrlock(&store->map_lock);
#else
	(void)store;
#endif
}

static void tsan_write_end(sc_store *store)
{
#ifdef SC_STORE_TSAN
	pthread_rwlock_unlock(&store->map_lock);
#else
	(void)store;
#endif
}

/* Set the map size (0: adopt the size another process gave the file).
 * No transaction may be active in the process: the writer's is not (the
 * caller holds write_mu and has none open), readers' are excluded by
 * map_lock, which TSan builds already hold inside the write bracket. */
static int set_map_size(sc_store *store, size_t size)
{
#ifdef SC_STORE_TSAN
	return mdb_env_set_mapsize(store->env, size);
#else
	pthread_rwlock_wrlock(&store->map_lock);
	int rc = mdb_env_set_mapsize(store->env, size);
	pthread_rwlock_unlock(&store->map_lock);
	return rc;
#endif
}

/* Double the map after MDB_MAP_FULL, up to map_size_max (SC_EMAPFULL
 * there). Called inside the TSan bracket with no transaction open. */
static int grow_map(sc_store *store, const char *what, sc_error *err)
{
	MDB_envinfo info;
	mdb_env_info(store->env, &info);
	size_t cur = info.me_mapsize;
	size_t max = store->opt.map_size_max;
	if (cur >= max)
		return sc_error_set(err, SC_EMAPFULL,
				    "%s: the store reached its maximum map "
				    "size of %zu bytes; raise map_size_max "
				    "(the --map-size-max option) and retry",
				    what, max);
	size_t next = cur > max / 2 ? max : cur * 2;
	int rc = set_map_size(store, next);
	if (rc)
		return sc_store_lmdb_error(err, rc, "growing the LMDB map");
	return 0;
}

/* One attempt: begin, body, commit. MDB_MAP_FULL comes back as is, after
 * the abort. */
static int write_once(sc_store *store, const char *what, sc_store_txn_fn body,
		      void *ctx, sc_error *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	if (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map: adopt its size. */
		set_map_size(store, 0);
		rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	}
	if (rc) {
		char msg[160];
		snprintf(msg, sizeof msg, "%s: beginning the transaction",
			 what);
		return sc_store_lmdb_error(err, rc, msg);
	}
	rc = body(store, txn, ctx, err);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	rc = mdb_txn_commit(txn);
	if (rc && rc != MDB_MAP_FULL)
		return sc_store_lmdb_error(err, rc, what);
	return rc;
}

int sc_store_write(sc_store *store, const char *what, sc_store_txn_fn body,
		   sc_store_undo_fn undo, void *ctx, sc_error *err)
{
	if (store->opt.read_only)
		return sc_store_read_only_error(err, what);
	for (;;) {
		tsan_write_begin(store);
		int rc = write_once(store, what, body, ctx, err);
		if (rc == MDB_MAP_FULL) {
			int grc = grow_map(store, what, err);
			if (grc)
				rc = grc;
		}
		tsan_write_end(store);
		if (rc && undo)
			undo(store, ctx);
		if (rc != MDB_MAP_FULL)
			return rc;
	}
}
