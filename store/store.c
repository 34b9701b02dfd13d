/*
 * The durable store: LMDB environment, event log, append, reads
 * (include/statecache/store.h). Snapshots live in snapshots.c.
 *
 * What must hold:
 * - The events database holds positions 1..last densely; every event has an
 *   entity_index row (entity id ++ position).
 * - An append is one LMDB write transaction. The cache's pending version
 *   and every projector see the batch inside that transaction; only after
 *   the commit is the cache promoted. Any failure aborts the transaction,
 *   discards the pending version and calls the rollback hooks, so the log,
 *   the cache and the projectors are exactly as before.
 * - Event times are stamped before encoding, so what is stored is what the
 *   cache applied and what a replay applies again.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_lib.h"
#include "common/internal.h"

#define DEFAULT_MAP_SIZE     ((size_t)64 << 20)
#define DEFAULT_MAP_SIZE_MAX ((size_t)64 << 30)
#define REPLAY_BATCH	     8192
/* Events replayed between two releases of the map pages they touched (a
 * divisor of REPLAY_BATCH). */
#define REPLAY_RELEASE_EVERY 512

/* ---- helpers ------------------------------------------------------------- */

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

int sc_store_grow_map(sc_store *store, sc_error *err)
{
	MDB_envinfo info;
	mdb_env_info(store->env, &info);
	size_t cur = info.me_mapsize;
	size_t max = store->opt.map_size_max;
	if (cur >= max)
		return sc_error_set(err, SC_EMAPFULL,
				    "the store reached its maximum map size of "
				    "%zu bytes; raise map_size_max (the "
				    "--map-size-max option) and retry",
				    max);
	size_t next = cur > max / 2 ? max : cur * 2;
	pthread_rwlock_wrlock(&store->map_lock);
	int rc = mdb_env_set_mapsize(store->env, next);
	pthread_rwlock_unlock(&store->map_lock);
	if (rc)
		return sc_store_lmdb_error(err, rc, "growing the LMDB map");
	return 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- open and close ------------------------------------------------------ */

static int meta_init(sc_store *store, MDB_txn *txn, uint32_t *version,
		     sc_error *err)
{
	MDB_val k = {sizeof "format_version" - 1, "format_version"}, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == 0) {
		if (v.mv_size != 4)
			return sc_error_set(err, SC_ECORRUPT,
					    "meta format_version is %zu bytes, "
					    "expected 4; this is not a "
					    "statecache store or it is damaged",
					    v.mv_size);
		uint32_t ver = sc_be32_get(v.mv_data);
		if (ver > SC_STORE_FORMAT_VERSION)
			return sc_error_set(err, SC_EVERSION,
					    "the store has format version %u; "
					    "this build reads up to %u; use a "
					    "newer statecache",
					    ver, SC_STORE_FORMAT_VERSION);
		if (ver == 0)
			return sc_error_set(err, SC_ECORRUPT,
					    "meta format_version is 0; the "
					    "store is damaged");
		*version = ver;
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc, "reading meta");
	*version = SC_STORE_FORMAT_VERSION;
	uint8_t buf[8];
	sc_be32_put(buf, SC_STORE_FORMAT_VERSION);
	v.mv_size = 4;
	v.mv_data = buf;
	rc = mdb_put(txn, store->dbi_meta, &k, &v, 0);
	if (!rc) {
		MDB_val k2 = {sizeof "created_at" - 1, "created_at"};
		sc_be64_put(buf, (uint64_t)now_ns());
		MDB_val v2 = {8, buf};
		rc = mdb_put(txn, store->dbi_meta, &k2, &v2, 0);
	}
	if (!rc) {
		static const char by[] = "libstatecache format 2";
		MDB_val k3 = {sizeof "created_by" - 1, "created_by"};
		MDB_val v3 = {sizeof by - 1, (void *)by};
		rc = mdb_put(txn, store->dbi_meta, &k3, &v3, 0);
	}
	if (rc)
		return sc_store_lmdb_error(err, rc, "writing meta");
	return 0;
}

/*
 * The HAMT hash seed every open of this store uses (meta "hash_seed", 8
 * bytes big-endian, made from getrandom when the store has none). A
 * snapshot lists its entities in the map's hash order; restoring it into a
 * map with the same seed inserts them in that order, so consecutive
 * inserts walk the same few nodes instead of one random path each through
 * a map far larger than the CPU caches (at 1M entities the map's share of
 * a restore's CPU time fell from about 28% to about 10%). The seed still
 * differs from store to store; anyone who can read it can read the whole log
 * anyway.
 */
static int hash_seed_init(sc_store *store, MDB_txn *txn, uint64_t *seed,
			  sc_error *err)
{
	MDB_val k = {sizeof "hash_seed" - 1, "hash_seed"}, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == 0 && v.mv_size == 8 && sc_be64_get(v.mv_data) != 0) {
		*seed = sc_be64_get(v.mv_data);
		return 0;
	}
	if (rc && rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc, "reading meta");
	/* Absent (a store made before the key existed) or damaged: a new
	 * seed only costs restore speed until the next snapshot. */
	uint64_t s = 0;
	while (s == 0)
		if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
			return sc_error_set(err, EIO,
					    "cannot read a random hash seed "
					    "(getrandom failed); pass "
					    "options.cache.seed");
	uint8_t b[8];
	sc_be64_put(b, s);
	v.mv_size = 8;
	v.mv_data = b;
	rc = mdb_put(txn, store->dbi_meta, &k, &v, 0);
	if (rc)
		return sc_store_lmdb_error(err, rc, "writing meta");
	*seed = s;
	return 0;
}

static const MDB_val index_through_key = {sizeof "index_through" - 1,
					  (void *)"index_through"};

/* Read meta "index_through" in txn into *through; a store without the key
 * (format 1, which indexed every event as it was appended) is complete up
 * to `last`. Readers that do not know the end pass UINT64_MAX. */
static int index_through_get(sc_store *store, MDB_txn *txn, uint64_t last,
			     uint64_t *through, sc_error *err)
{
	MDB_val k = index_through_key, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*through = last;
		return 0;
	}
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading meta");
	if (v.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta index_through is %zu bytes, expected "
				    "8; the store is damaged",
				    v.mv_size);
	*through = sc_be64_get(v.mv_data);
	if (*through > last)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta index_through is %llu, past the end "
				    "of the log (%llu); the store is damaged",
				    (unsigned long long)*through,
				    (unsigned long long)last);
	return 0;
}

static int index_through_put(sc_store *store, MDB_txn *txn, uint64_t through)
{
	uint8_t b[8];
	sc_be64_put(b, through);
	MDB_val k = index_through_key, v = {8, b};
	return mdb_put(txn, store->dbi_meta, &k, &v, 0);
}

/* At open: learn how far entity_index reaches, and move a format 1 store
 * to format 2 (a format 1 reader would not know that the index may lag).
 * A new store gets index_through = 0 here, before its first append. */
static int index_init(sc_store *store, MDB_txn *txn, uint32_t version,
		      sc_error *err)
{
	uint64_t last = atomic_load(&store->last_position);
	MDB_val k = index_through_key, v;
	bool found = mdb_get(txn, store->dbi_meta, &k, &v) == 0;
	int rc =
	    index_through_get(store, txn, last, &store->index_through, err);
	if (rc)
		return rc;
	if (version < 2) {
		uint8_t b[4];
		sc_be32_put(b, SC_STORE_FORMAT_VERSION);
		MDB_val fk = {sizeof "format_version" - 1, "format_version"},
			fv = {4, b};
		rc = mdb_put(txn, store->dbi_meta, &fk, &fv, 0);
	}
	if (!rc && !found)
		rc = index_through_put(store, txn, store->index_through);
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "upgrading the store to format 2");
	return 0;
}

static int open_dbs(sc_store *store, uint64_t *seed, sc_error *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	if (rc)
		return sc_store_lmdb_error(err, rc, "opening the store");
	const struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {
	    {"events", &store->dbi_events},
	    {"entity_index", &store->dbi_index},
	    {"snapshots", &store->dbi_snapshots},
	    {"meta", &store->dbi_meta},
	};
	for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
		rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
		if (rc) {
			char what[64];
			snprintf(what, sizeof what, "opening database %s",
				 dbs[i].name);
			mdb_txn_abort(txn);
			return sc_store_lmdb_error(err, rc, what);
		}
	}
	uint32_t version = 0;
	rc = meta_init(store, txn, &version, err);
	if (!rc)
		rc = hash_seed_init(store, txn, seed, err);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	/* The last position is the last key of the events database. */
	MDB_cursor *cur;
	rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (!rc) {
		MDB_val k, v;
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		if (rc == 0 && k.mv_size != 8) {
			mdb_cursor_close(cur);
			mdb_txn_abort(txn);
			return sc_error_set(err, SC_ECORRUPT,
					    "an events key is %zu bytes, "
					    "expected 8; the store is damaged",
					    k.mv_size);
		}
		if (rc == 0)
			atomic_store(&store->last_position,
				     sc_be64_get(k.mv_data));
		else if (rc == MDB_NOTFOUND)
			rc = 0;
		mdb_cursor_close(cur);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return sc_store_lmdb_error(err, rc, "reading the event log");
	}
	rc = index_init(store, txn, version, err);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return sc_store_lmdb_error(err, rc, "opening the store");
	return 0;
}

static int check_dir(const char *dir, bool create, sc_error *err)
{
	struct stat st;
	if (stat(dir, &st) != 0) {
		if (errno != ENOENT)
			return sc_error_set(err, errno, "cannot access %s: %s",
					    dir, strerror(errno));
		if (!create)
			return sc_error_set(err, SC_NOTFOUND,
					    "no store at %s; create it with "
					    "the create option",
					    dir);
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return sc_error_set(err, errno,
					    "cannot create directory %s: %s",
					    dir, strerror(errno));
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return sc_error_set(err, ENOTDIR,
				    "%s is not a directory; a store is a "
				    "directory",
				    dir);
	if (!create) {
		char path[4096];
		snprintf(path, sizeof path, "%s/data.mdb", dir);
		if (stat(path, &st) != 0)
			return sc_error_set(err, SC_NOTFOUND,
					    "no store in %s (no data.mdb); "
					    "create it with the create option",
					    dir);
	}
	return 0;
}

int sc_store_open(const char *dir, const sc_store_options *opt, sc_store **out,
		  sc_error *err)
{
	sc_error_clear(err);
	if (!dir || !out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_open needs a directory and an "
				    "out pointer");
	*out = NULL;
	sc_store_options o = {0};
	if (opt)
		o = *opt;
	if (!o.map_size_max)
		o.map_size_max = DEFAULT_MAP_SIZE_MAX;
	if (!o.map_size)
		o.map_size = DEFAULT_MAP_SIZE;
	if (o.map_size > o.map_size_max)
		o.map_size = o.map_size_max;
	if (!o.snapshot_keep)
		o.snapshot_keep = 2;
	if (!o.zstd_level)
		o.zstd_level = 3;
	if (!o.index_lag)
		o.index_lag = SC_STORE_INDEX_LAG_DEFAULT;
	if (o.durability != SC_DURABILITY_FULL &&
	    o.durability != SC_DURABILITY_NOSYNC)
		return sc_error_set(err, SC_EINVAL,
				    "unknown durability %d; use full or nosync",
				    (int)o.durability);
	int rc = check_dir(dir, o.create, err);
	if (rc)
		return rc;

	sc_store *s = sc_calloc(1, sizeof *s);
	if (!s)
		return sc_error_set(err, ENOMEM, "out of memory opening %s",
				    dir);
	s->opt = o;
	pthread_mutex_init(&s->snap_mu, NULL);
	pthread_mutex_init(&s->write_mu, NULL);
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* A map growth must not starve behind a stream of readers. */
	pthread_rwlockattr_setkind_np(
	    &ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->map_lock, &ra);
	pthread_rwlockattr_destroy(&ra);

	rc = mdb_env_create(&s->env);
	if (rc) {
		rc = sc_store_lmdb_error(err, rc, "creating the LMDB env");
		s->env = NULL;
		goto fail;
	}
	mdb_env_set_maxdbs(s->env, 32);
	mdb_env_set_mapsize(s->env, o.map_size);
	/* MDB_NOTLS: read transactions are not tied to threads.
	 * nosync adds MDB_WRITEMAP: commits write through the map instead of
	 * one pwrite per dirty page (about twice the append rate); a process
	 * crash loses nothing since the pages are in the page cache. Not in
	 * full mode: there LMDB would msync the whole map at every commit,
	 * several times slower than writing and syncing the dirty pages. */
	unsigned flags = MDB_NOTLS;
	if (o.durability == SC_DURABILITY_NOSYNC)
		flags |= MDB_NOSYNC | MDB_WRITEMAP;
	rc = mdb_env_open(s->env, dir, flags, 0644);
	if (rc) {
		char what[512];
		snprintf(what, sizeof what,
			 "opening the LMDB environment in %s", dir);
		rc = sc_store_lmdb_error(err, rc, what);
		goto fail;
	}
	int dead = 0;
	mdb_reader_check(s->env, &dead);
	uint64_t seed = 0;
	rc = open_dbs(s, &seed, err);
	if (rc)
		goto fail;
	/* The store's own seed unless the caller chose one. */
	if (!o.cache.seed)
		o.cache.seed = seed;
	rc = sc_cache_create(&o.cache, &s->cache, err);
	if (rc)
		goto fail;
	uint64_t snap_pos = 0;
	rc = sc_store_restore(s, &snap_pos, err);
	if (rc)
		goto fail;
	sc_killpoint("restore_mid");
	rc = sc_store_replay(s, snap_pos, err);
	if (rc)
		goto fail;
	s->since_snapshot = atomic_load(&s->last_position) - snap_pos;
	*out = s;
	return 0;
fail:
	sc_store_close(s);
	return rc;
}

void sc_store_close(sc_store *store)
{
	if (!store)
		return;
	if (store->cache)
		sc_cache_destroy(store->cache);
	if (store->env)
		mdb_env_close(store->env);
	for (size_t i = 0; i < store->nprojectors; i++)
		sc_free((char *)store->projectors[i].name);
	sc_free(store->projectors);
	sc_free(store->batch);
	pthread_mutex_destroy(&store->snap_mu);
	pthread_mutex_destroy(&store->write_mu);
	pthread_rwlock_destroy(&store->map_lock);
	sc_free(store);
}

sc_cache *sc_store_cache(sc_store *store)
{
	return store->cache;
}

MDB_env *sc_store_env(sc_store *store)
{
	return store->env;
}

uint64_t sc_store_last_position(sc_store *store)
{
	return atomic_load(&store->last_position);
}

/* ---- replay -------------------------------------------------------------- */

/* A read transaction and a cursor on `dbi` in it; on failure neither is
 * open and err names `what`. End with mdb_cursor_close and
 * sc_store_read_end. */
static int read_cursor(sc_store *store, MDB_dbi dbi, const char *what,
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

/* Events replay decoded since the last release of their pages, applied to
 * the cache together (in its lanes) before the release. */
typedef struct replay_chunk {
	sc_decoded_event d[REPLAY_RELEASE_EVERY];
	sc_event ev[REPLAY_RELEASE_EVERY];
	size_t n;
} replay_chunk;

/* Apply the chunk's events (apply false: drop them) and empty it. */
static int replay_flush(sc_store *store, replay_chunk *c, bool apply,
			sc_error *err)
{
	int rc = 0;
	if (apply && c->n)
		rc = sc_cache_apply_batch_valid(store->cache, c->ev, c->n, NULL,
						err);
	for (size_t i = 0; i < c->n; i++)
		sc_decoded_event_free(&c->d[i]);
	c->n = 0;
	return rc;
}

int sc_store_replay(sc_store *store, uint64_t after, sc_error *err)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	replay_chunk *chunk = sc_calloc(1, sizeof *chunk);
	if (!chunk)
		return sc_error_set(err, ENOMEM,
				    "out of memory for replaying the log");
	int rc = read_cursor(store, store->dbi_events, "replaying the log",
			     &txn, &cur, err);
	if (rc) {
		sc_free(chunk);
		return rc;
	}
	uint8_t kb[8];
	sc_be64_put(kb, after + 1);
	MDB_val k = {8, kb}, v;
	uint64_t expect = after + 1;
	size_t in_batch = 0;
	/* Bounds of the values read since the last release of their pages. */
	const uint8_t *lo = NULL, *hi = NULL;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = k.mv_size == 8 ? sc_be64_get(k.mv_data) : 0;
		if (pos != expect) {
			rc =
			    sc_error_set(err, SC_ECORRUPT,
					 "the event log has a gap or a bad key "
					 "at position %llu (found %llu); the "
					 "store is damaged",
					 (unsigned long long)expect,
					 (unsigned long long)pos);
			goto fail;
		}
		const uint8_t *vb = v.mv_data, *ve = vb + v.mv_size;
		if (!lo || vb < lo)
			lo = vb;
		if (ve > hi)
			hi = ve;
		sc_decoded_event *d = &chunk->d[chunk->n];
		rc = sc_event_decode(v.mv_data, v.mv_size, pos, d, err);
		if (rc)
			goto fail;
		chunk->ev[chunk->n++] = d->ev;
		expect++;
		if (++in_batch % REPLAY_RELEASE_EVERY == 0) {
			rc = replay_flush(store, chunk, true, err);
			if (rc)
				goto fail;
			/* The tail's leaf pages are scattered over the file
			 * (freed pages are reused) and a touch maps a whole
			 * page-cache folio, often far more than the page;
			 * keep only the last few hundred events' mapped. */
			sc_store_release_pages(lo, hi);
			lo = hi = NULL;
		}
		if (in_batch == REPLAY_BATCH) {
			in_batch = 0;
			rc = sc_cache_promote(store->cache);
			if (rc) {
				sc_error_set(err, rc,
					     "promoting a replay batch failed "
					     "(%s)",
					     sc_strerror(rc));
				goto fail;
			}
		}
	}
	if (rc != MDB_NOTFOUND) {
		rc = sc_store_lmdb_error(err, rc, "replaying the log");
		goto fail;
	}
	rc = replay_flush(store, chunk, true, err);
	if (rc)
		goto fail;
	sc_free(chunk);
	/* Inside the read transaction: the map cannot move meanwhile. */
	sc_store_release_pages(lo, hi);
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	if (expect - 1 != atomic_load(&store->last_position)) {
		sc_cache_discard(store->cache);
		return sc_error_set(
		    err, SC_ECORRUPT,
		    "replay ended at position %llu but the log "
		    "ends at %llu; the store is damaged",
		    (unsigned long long)(expect - 1),
		    (unsigned long long)atomic_load(&store->last_position));
	}
	rc = sc_cache_promote(store->cache);
	if (rc) {
		sc_cache_discard(store->cache);
		return sc_error_set(err, rc, "promoting the replay failed (%s)",
				    sc_strerror(rc));
	}
	return 0;
fail:
	replay_flush(store, chunk, false, NULL);
	sc_free(chunk);
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	sc_cache_discard(store->cache);
	return rc;
}

/* ---- projectors ---------------------------------------------------------- */

int sc_store_add_projector(sc_store *store, const sc_projector *p,
			   sc_error *err)
{
	if (!p || !p->apply || !p->name || !*p->name || strlen(p->name) > 255)
		return sc_error_set(err, SC_EINVAL,
				    "a projector needs a name of 1..255 bytes "
				    "and an apply function");
	size_t len = strlen(p->name);
	char *name = sc_malloc(len + 1);
	if (!name)
		return sc_error_set(
		    err, ENOMEM, "out of memory adding projector %s", p->name);
	memcpy(name, p->name, len + 1);
	pthread_mutex_lock(&store->write_mu);
	sc_projector *np = sc_realloc(store->projectors,
				      (store->nprojectors + 1) * sizeof *np);
	if (!np) {
		pthread_mutex_unlock(&store->write_mu);
		sc_free(name);
		return sc_error_set(
		    err, ENOMEM, "out of memory adding projector %s", p->name);
	}
	store->projectors = np;
	np[store->nprojectors] = *p;
	np[store->nprojectors].name = name;
	store->nprojectors++;
	pthread_mutex_unlock(&store->write_mu);
	return 0;
}

/* ---- append -------------------------------------------------------------- */

#define PROJECTOR_KEY_PREFIX "projector/"
#define PROJECTOR_KEY_MAX    (sizeof PROJECTOR_KEY_PREFIX + 255)

static size_t projector_key(uint8_t *k, const char *name)
{
	size_t n = strlen(name);
	memcpy(k, PROJECTOR_KEY_PREFIX, sizeof PROJECTOR_KEY_PREFIX - 1);
	memcpy(k + sizeof PROJECTOR_KEY_PREFIX - 1, name, n);
	return sizeof PROJECTOR_KEY_PREFIX - 1 + n;
}

static int put_projector_offset(sc_store *store, MDB_txn *txn, const char *name,
				uint64_t position)
{
	uint8_t kb[PROJECTOR_KEY_MAX], vb[8];
	MDB_val k = {projector_key(kb, name), kb}, v = {8, vb};
	sc_be64_put(vb, position);
	return mdb_put(txn, store->dbi_meta, &k, &v, 0);
}

int sc_store_projector_position(sc_store *store, const char *name,
				uint64_t *position, sc_error *err)
{
	if (!store || !name || !*name || strlen(name) > 255 || !position)
		return sc_error_set(
		    err, SC_EINVAL,
		    "sc_store_projector_position needs a store, "
		    "a name of 1..255 bytes and an out pointer");
	*position = 0;
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint8_t kb[PROJECTOR_KEY_MAX];
	MDB_val k = {projector_key(kb, name), kb}, v;
	rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == 0 && v.mv_size == 8)
		*position = sc_be64_get(v.mv_data);
	else if (rc == 0)
		rc = sc_error_set(err, SC_ECORRUPT,
				  "the offset of projector %s is %zu bytes, "
				  "expected 8; the store is damaged",
				  name, v.mv_size);
	else if (rc == MDB_NOTFOUND)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading a projector offset");
	sc_store_read_end(store, txn);
	return rc;
}

/* One entity_index row: id ++ position, empty value. `ikey` is scratch of
 * SC_ENTITY_ID_MAX + 8 bytes. Returns an LMDB code. */
static int index_put(sc_store *store, MDB_txn *txn, uint8_t *ikey, sc_str id,
		     uint64_t pos)
{
	memcpy(ikey, id.ptr, id.len);
	sc_be64_put(ikey + id.len, pos);
	MDB_val k = {id.len + 8, ikey}, v = {0, NULL};
	return mdb_put(txn, store->dbi_index, &k, &v, 0);
}

/* Index the events after index_through and before `first`, read back from
 * the log inside the append's transaction. Returns 0 or an LMDB code; a
 * record that does not decode sets *bad to its error code (err says
 * which) and returns 0. */
static int index_tail(sc_store *store, MDB_txn *txn, uint64_t first, int *bad,
		      sc_error *err)
{
	if (store->index_through + 1 >= first)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return rc;
	uint8_t kb[8], ikey[SC_ENTITY_ID_MAX + 8];
	sc_be64_put(kb, store->index_through + 1);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos >= first)
			break;
		sc_str id;
		*bad =
		    sc_event_peek_entity(v.mv_data, v.mv_size, pos, &id, err);
		if (*bad) {
			rc = 0;
			break;
		}
		rc = index_put(store, txn, ikey, id, pos);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static void rollback(sc_store *store, MDB_txn *txn)
{
	if (txn)
		mdb_txn_abort(txn);
	sc_cache_discard(store->cache);
	for (size_t i = 0; i < store->nprojectors; i++)
		if (store->projectors[i].rollback)
			store->projectors[i].rollback(store->projectors[i].ctx);
}

/* Write the batch (positions from first) and apply it to the cache and
 * every projector inside one write transaction; commit. On failure
 * everything is rolled back and MDB_MAP_FULL is returned as is so the
 * caller can grow the map and retry. */
static int append_once(sc_store *store, const sc_event *evs, size_t n,
		       uint64_t first, sc_error *err)
{
	MDB_txn *txn;
	sc_store_tsan_write_begin(store);
	int rc = mdb_txn_begin(store->env, NULL, 0, &txn);
#ifndef SC_STORE_TSAN
	if (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map: adopt its size. */
		pthread_rwlock_wrlock(&store->map_lock);
		mdb_env_set_mapsize(store->env, 0);
		pthread_rwlock_unlock(&store->map_lock);
		rc = mdb_txn_begin(store->env, NULL, 0, &txn);
	}
#endif
	if (rc) {
		sc_store_tsan_write_end(store);
		rollback(store, NULL);
		return sc_store_lmdb_error(err, rc,
					   "beginning the append transaction");
	}
	uint8_t key[8];
	uint8_t ikey[SC_ENTITY_ID_MAX + 8];
	/* This append indexes the tail when it brings it to index_lag events;
	 * its own events are indexed as they are written. */
	uint64_t last = first + n - 1;
	bool index = last - store->index_through >= store->opt.index_lag;
	/* The cache applies the batch first, in its lanes; the loop then
	 * meets the event it refused (if any) where a serial apply would. */
	sc_error cerr;
	sc_error_clear(&cerr);
	size_t refused = n;
	int crc =
	    sc_cache_apply_batch_valid(store->cache, evs, n, &refused, &cerr);
	if (crc && refused >= n)
		refused = n - 1;
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = &evs[i];
		uint64_t pos = first + i;
		sc_be64_put(key, pos);
		MDB_val k = {8, key}, v = {sc_event_encoded_size(ev), NULL};
		rc = mdb_put(txn, store->dbi_events, &k, &v,
			     MDB_APPEND | MDB_RESERVE);
		if (rc)
			goto lmdb_fail;
		sc_event_write(ev, v.mv_data);
		if (index) {
			rc = index_put(store, txn, ikey, ev->entity, pos);
			if (rc)
				goto lmdb_fail;
		}
		if (crc && i == refused) {
			rc = sc_error_set(
			    err, crc,
			    "event %zu (position %llu): the cache "
			    "rejected it: %s",
			    i, (unsigned long long)pos, cerr.message);
			goto fail;
		}
		for (size_t j = 0; j < store->nprojectors; j++) {
			const sc_projector *p = &store->projectors[j];
			sc_error perr;
			sc_error_clear(&perr);
			int prc = p->apply(p->ctx, txn, ev, &perr);
			if (prc) {
				rc = sc_error_set(
				    err, SC_EPROJECTOR,
				    "projector %s failed on event %zu "
				    "(position %llu): %s",
				    p->name, i, (unsigned long long)pos,
				    perr.message[0] ? perr.message
						    : sc_strerror(prc));
				goto fail;
			}
		}
	}
	if (index) {
		int bad = 0;
		rc = index_tail(store, txn, first, &bad, err);
		if (rc)
			goto lmdb_fail;
		if (bad) {
			rc = bad;
			goto fail;
		}
		rc = index_through_put(store, txn, last);
		if (rc)
			goto lmdb_fail;
	}
	/* Each projector's offset commits with the events it applied. */
	for (size_t j = 0; j < store->nprojectors; j++) {
		rc = put_projector_offset(store, txn, store->projectors[j].name,
					  first + n - 1);
		if (rc)
			goto lmdb_fail;
	}
	/* Every queued cache change done and promote's memory reserved: after
	 * the commit, promote cannot fail. */
	rc = sc_cache_prepare(store->cache, err);
	if (rc)
		goto fail;
	sc_killpoint("append_before_commit");
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto lmdb_fail;
	if (index)
		store->index_through = last;
	sc_store_tsan_write_end(store);
	return 0;

lmdb_fail:
	if (txn)
		mdb_txn_abort(txn);
	sc_store_tsan_write_end(store);
	rollback(store, NULL);
	if (rc == MDB_MAP_FULL)
		return rc;
	return sc_store_lmdb_error(err, rc, "appending events");
fail:
	if (txn)
		mdb_txn_abort(txn);
	sc_store_tsan_write_end(store);
	rollback(store, NULL);
	return rc;
}

static int stamp_batch(sc_store *store, const sc_event *events, size_t n,
		       uint64_t first, sc_error *err)
{
	if (n > store->cap_batch) {
		sc_event *nb = sc_realloc(store->batch, n * sizeof *nb);
		if (!nb)
			return sc_error_set(err, ENOMEM,
					    "out of memory for a batch of %zu "
					    "events",
					    n);
		store->batch = nb;
		store->cap_batch = n;
	}
	int64_t now = 0;
	for (size_t i = 0; i < n; i++) {
		store->batch[i] = events[i];
		store->batch[i].position = first + i;
		if (events[i].time == 0) {
			if (!now)
				now = now_ns();
			store->batch[i].time = now;
		}
	}
	return 0;
}

/*
 * Promote the pending version after the commit. sc_cache_prepare succeeded
 * before the commit, so promote cannot fail; if it ever did, the cache
 * would be behind the log, and the store refuses further appends
 * (SC_ESTATE) until it is reopened, which replays the batch.
 */
static int promote_committed(sc_store *store, size_t n, sc_error *err)
{
	int rc = sc_cache_promote(store->cache);
	SC_INSIST(rc == 0);
	if (!rc)
		return 0;
	sc_cache_discard(store->cache);
	store->stale = true;
	return sc_error_set(err, rc,
			    "the batch was committed at positions %llu..%llu "
			    "but the cache could not be updated (%s); close "
			    "and reopen the store to replay it",
			    (unsigned long long)store->batch[0].position,
			    (unsigned long long)store->batch[n - 1].position,
			    sc_strerror(rc));
}

int sc_store_append(sc_store *store, const sc_event *events, size_t n,
		    uint64_t *first, sc_error *err)
{
	sc_error_clear(err);
	if (!store || (n && !events))
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_append needs a store and events");
	for (size_t i = 0; i < n; i++) {
		sc_error inner;
		int rc = sc_event_validate(&events[i], &inner);
		if (rc)
			return sc_error_set(err, rc, "event %zu: %s", i,
					    inner.message);
	}
	pthread_mutex_lock(&store->write_mu);
	if (store->stale) {
		pthread_mutex_unlock(&store->write_mu);
		return sc_error_set(err, SC_ESTATE,
				    "the cache is behind the log after an "
				    "allocation failure; close and reopen the "
				    "store");
	}
	uint64_t start = atomic_load(&store->last_position) + 1;
	if (n == 0) {
		pthread_mutex_unlock(&store->write_mu);
		if (first)
			*first = start;
		return 0;
	}
	int rc = stamp_batch(store, events, n, start, err);
	while (!rc) {
		rc = append_once(store, store->batch, n, start, err);
		if (rc != MDB_MAP_FULL)
			break;
		rc = sc_store_grow_map(store, err);
		if (rc == SC_EMAPFULL) {
			char inner[SC_ERROR_MESSAGE_MAX];
			snprintf(inner, sizeof inner, "%s",
				 err ? err->message : "");
			sc_error_set(err, rc, "appending %zu events: %s", n,
				     inner);
		}
	}
	if (rc) {
		pthread_mutex_unlock(&store->write_mu);
		return rc;
	}
	atomic_store(&store->last_position, start + n - 1);
	rc = promote_committed(store, n, err);
	if (rc) {
		pthread_mutex_unlock(&store->write_mu);
		return rc;
	}
	sc_killpoint("append_after_commit");
	for (size_t j = 0; j < store->nprojectors; j++)
		if (store->projectors[j].commit)
			store->projectors[j].commit(store->projectors[j].ctx);
	store->since_snapshot += n;
	bool snap = store->opt.snapshot_every &&
		    store->since_snapshot >= store->opt.snapshot_every;
	pthread_mutex_unlock(&store->write_mu);
	if (first)
		*first = start;
	if (snap) {
		/* Synchronous: the append is committed whatever happens
		 * here; a failed snapshot is a warning, retried after the
		 * next append. */
		sc_error serr;
		if (sc_store_snapshot(store, NULL, &serr))
			sc_store_warn(store,
				      "automatic snapshot after position "
				      "%llu failed: %s",
				      (unsigned long long)(start + n - 1),
				      serr.message);
	}
	return 0;
}

/* ---- reads --------------------------------------------------------------- */

/* Decode the event record `v` at `pos` and hand it to fn; the decoded event
 * lives only for the call. */
static int emit_event(const MDB_val *v, uint64_t pos, sc_event_fn fn, void *ctx,
		      sc_error *err)
{
	sc_decoded_event d;
	int rc = sc_event_decode(v->mv_data, v->mv_size, pos, &d, err);
	if (rc)
		return rc;
	rc = fn(ctx, &d.ev);
	sc_decoded_event_free(&d);
	return rc;
}

int sc_store_events(sc_store *store, uint64_t from, uint64_t limit,
		    sc_event_fn fn, void *ctx, sc_error *err)
{
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_events needs a store and a "
				    "callback");
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = read_cursor(store, store->dbi_events, "reading events", &txn,
			     &cur, err);
	if (rc)
		return rc;
	uint8_t kb[8];
	sc_be64_put(kb, from ? from : 1);
	MDB_val k = {8, kb}, v;
	uint64_t count = 0;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (limit && count >= limit)
			break;
		if (k.mv_size != 8) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "an events key is %zu bytes, "
					  "expected 8; the store is damaged",
					  k.mv_size);
			goto out;
		}
		rc = emit_event(&v, sc_be64_get(k.mv_data), fn, ctx, err);
		if (rc)
			goto out;
		count++;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading events");
out:
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return rc;
}

/* Walk the log records after index_through (the tail entity_index does not
 * cover yet) with positions in [from, to], calling fn for those of `id`. */
static int walk_tail(sc_store *store, MDB_txn *txn, sc_str id, uint64_t from,
		     uint64_t to, uint64_t limit, uint64_t *count,
		     sc_event_fn fn, void *ctx, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading events");
	uint8_t kb[8];
	sc_be64_put(kb, from);
	MDB_val k = {8, kb}, v;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		uint64_t pos = sc_be64_get(k.mv_data);
		if (pos > to || (limit && *count >= limit))
			break;
		sc_str e;
		rc = sc_event_peek_entity(v.mv_data, v.mv_size, pos, &e, err);
		if (rc)
			goto out;
		if (e.len != id.len || memcmp(e.ptr, id.ptr, id.len) != 0)
			continue;
		rc = emit_event(&v, pos, fn, ctx, err);
		if (rc)
			goto out;
		++*count;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading events");
out:
	mdb_cursor_close(cur);
	return rc;
}

/* Walk the entity_index rows of `id` with positions in [from, to], calling
 * fn with each decoded event, then the unindexed tail of the log. Rows of
 * other ids that share the prefix (an id that is `id` followed by 8 more
 * bytes) are skipped by length. */
static int walk_entity(sc_store *store, sc_str id, uint64_t from, uint64_t to,
		       uint64_t limit, sc_event_fn fn, void *ctx, sc_error *err)
{
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "entity reads need a store and a callback");
	if (id.len < 1 || id.len > SC_ENTITY_ID_MAX || !id.ptr)
		return sc_error_set(err, SC_EINVAL,
				    "entity id is %zu bytes; it must be 1..%d",
				    id.len, SC_ENTITY_ID_MAX);
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = read_cursor(store, store->dbi_index, "reading entity_index",
			     &txn, &cur, err);
	if (rc)
		return rc;
	/* The index covers positions up to index_through as this transaction
	 * sees it; a store without the key indexes everything. */
	uint64_t through;
	rc = index_through_get(store, txn, UINT64_MAX, &through, err);
	if (rc)
		goto out;
	uint8_t lo[SC_ENTITY_ID_MAX + 8], hi[SC_ENTITY_ID_MAX + 8];
	memcpy(lo, id.ptr, id.len);
	memcpy(hi, id.ptr, id.len);
	sc_be64_put(lo + id.len, from);
	sc_be64_put(hi + id.len, to < through ? to : through);
	size_t klen = id.len + 8;
	MDB_val k = {klen, lo}, v;
	uint64_t count = 0;
	int op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		size_t m = k.mv_size < klen ? k.mv_size : klen;
		int c = memcmp(k.mv_data, hi, m);
		if (c > 0 || (c == 0 && k.mv_size > klen))
			break; /* past id ++ to */
		/* Keys of length klen between lo and hi start with id; other
		 * lengths there belong to other entities. */
		if (k.mv_size != klen)
			continue;
		if (limit && count >= limit)
			break;
		MDB_val ek = {8, (uint8_t *)k.mv_data + id.len}, ev;
		uint64_t pos = sc_be64_get(ek.mv_data);
		rc = mdb_get(txn, store->dbi_events, &ek, &ev);
		if (rc) {
			if (rc == MDB_NOTFOUND)
				rc = sc_error_set(
				    err, SC_ECORRUPT,
				    "entity_index names position %llu, which "
				    "is not in the log; the store is damaged",
				    (unsigned long long)pos);
			else
				rc = sc_store_lmdb_error(err, rc,
							 "reading events");
			goto out;
		}
		rc = emit_event(&ev, pos, fn, ctx, err);
		if (rc)
			goto out;
		count++;
	}
	if (rc == MDB_NOTFOUND || rc == 0)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading entity_index");
	if (!rc && to > through && !(limit && count >= limit))
		rc = walk_tail(store, txn, id,
			       from > through ? from : through + 1, to, limit,
			       &count, fn, ctx, err);
out:
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return rc;
}

int sc_store_entity_events(sc_store *store, sc_str id, uint64_t from,
			   uint64_t limit, sc_event_fn fn, void *ctx,
			   sc_error *err)
{
	return walk_entity(store, id, from, UINT64_MAX, limit, fn, ctx, err);
}

struct fold {
	sc_entity *state;
	sc_error *err;
	int rc;
};

static int fold_one(void *ctx, const sc_event *ev)
{
	struct fold *f = ctx;
	sc_entity *next = NULL;
	int rc = sc_entity_apply(f->state, ev, &next, f->err);
	if (rc) {
		f->rc = rc;
		return rc;
	}
	sc_entity_free(f->state);
	f->state = next;
	return 0;
}

int sc_store_entity_at(sc_store *store, sc_str id, uint64_t position,
		       sc_entity **out, sc_error *err)
{
	if (!out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_entity_at needs an out pointer");
	*out = NULL;
	struct fold f = {NULL, err, 0};
	int rc = walk_entity(store, id, 1, position, 0, fold_one, &f, err);
	if (rc) {
		sc_entity_free(f.state);
		return rc;
	}
	if (!f.state)
		return sc_error_set(err, SC_NOTFOUND,
				    "entity %.*s did not exist at position "
				    "%llu",
				    (int)(id.len > 64 ? 64 : id.len), id.ptr,
				    (unsigned long long)position);
	*out = f.state;
	return 0;
}

int sc_store_stats_get(sc_store *store, sc_store_stats *out, sc_error *err)
{
	if (!store || !out)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_stats_get needs a store and an "
				    "out pointer");
	memset(out, 0, sizeof *out);
	pthread_rwlock_rdlock(&store->map_lock);
	MDB_envinfo info;
	MDB_stat st;
	int rc = mdb_env_info(store->env, &info);
	if (!rc)
		rc = mdb_env_stat(store->env, &st);
	pthread_rwlock_unlock(&store->map_lock);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading LMDB stats");
	out->last_position = atomic_load(&store->last_position);
	out->map_size = info.me_mapsize;
	out->map_bytes_used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	sc_cache_stats_get(store->cache, &out->cache);
	return 0;
}
