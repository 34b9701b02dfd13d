/*
 * Opening and closing a store: the directory, the LMDB environment, the
 * databases and meta, then the restore of the newest snapshot and the
 * replay of the log after it.
 */
#include "store/store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"

#define DEFAULT_MAP_SIZE     ((size_t)64 << 20)
#define DEFAULT_MAP_SIZE_MAX ((size_t)64 << 30)

/* A failed meta write inside open's transaction: MDB_MAP_FULL as is (the
 * map grows and open's transaction runs again), others translated. */
static int meta_write_error(sc_error *err, int rc)
{
	if (rc == MDB_MAP_FULL)
		return rc;
	return sc_store_lmdb_error(err, rc, "writing meta");
}

/* Check meta's format_version, or on a fresh store write it with
 * created_at and created_by. */
static int meta_init(sc_store *store, MDB_txn *txn, bool fresh,
		     uint32_t *version, sc_error *err)
{
	MDB_val k = {sizeof "format_version" - 1, "format_version"}, v;
	int rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND && !fresh)
		return sc_error_set(err, SC_ECORRUPT,
				    "meta has no format_version: this is not "
				    "a statecache store or it is damaged");
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
		sc_be64_put(buf, (uint64_t)sc_store_now_ns());
		MDB_val v2 = {8, buf};
		rc = mdb_put(txn, store->dbi_meta, &k2, &v2, 0);
	}
	if (!rc) {
		static const char by[] = "libstatecache format 4";
		MDB_val k3 = {sizeof "created_by" - 1, "created_by"};
		MDB_val v3 = {sizeof by - 1, (void *)by};
		rc = mdb_put(txn, store->dbi_meta, &k3, &v3, 0);
	}
	if (rc)
		return meta_write_error(err, rc);
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
	 * seed only costs restore speed until the next snapshot (a read-only
	 * open writes none: the cache makes a random one). */
	if (store->opt.read_only) {
		*seed = 0;
		return 0;
	}
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
		return meta_write_error(err, rc);
	*seed = s;
	return 0;
}

/* The last position is the last key of the events database; meta
 * "last_position", written by every append in its transaction, must agree.
 * A store without the key (made before it existed) gets it here. */
static int find_last_position(sc_store *store, MDB_txn *txn, sc_error *err)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, store->dbi_events, &cur);
	if (rc)
		return sc_store_lmdb_error(err, rc, "reading the event log");
	MDB_val k, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	mdb_cursor_close(cur);
	uint64_t last = 0;
	if (rc == 0 && k.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "an events key is %zu bytes, "
				    "expected 8; the store is damaged",
				    k.mv_size);
	if (rc == 0)
		last = sc_be64_get(k.mv_data);
	else if (rc != MDB_NOTFOUND)
		return sc_store_lmdb_error(err, rc, "reading the event log");
	atomic_store(&store->last_position, last);
	uint64_t committed;
	rc = sc_store_meta_last_get(store, txn, &committed, err);
	if (rc == SC_NOTFOUND && store->opt.read_only)
		return 0;
	if (rc == SC_NOTFOUND) {
		rc = sc_store_meta_last_put(store, txn, last);
		return rc ? meta_write_error(err, rc) : 0;
	}
	if (rc)
		return rc;
	if (committed != last)
		return sc_error_set(err, SC_ECORRUPT,
				    "the event log ends at position %llu but "
				    "position %llu was committed (meta "
				    "last_position); acknowledged events are "
				    "missing: restore the store from a backup",
				    (unsigned long long)last,
				    (unsigned long long)committed);
	return 0;
}

/*
 * The order of the events database's keys, for LMDB. A key is a position,
 * 8 bytes big-endian, whose memcmp order is its numeric order: comparing
 * two keys as integers gives exactly the order of LMDB's default
 * comparison (mdb_cmp_memn), so a process that does not set it sees the
 * same tree, and setting it after the database was read changes nothing.
 * What it saves is a call of memcmp per step of every search: a tag or
 * partition query looks up one event per index row, each from the root
 * when it is on another page. Keys of another length (damage) compare as
 * the default does.
 */
static int events_key_cmp(const MDB_val *a, const MDB_val *b)
{
	if (a->mv_size == 8 && b->mv_size == 8) {
		uint64_t x = sc_be64_get(a->mv_data),
			 y = sc_be64_get(b->mv_data);
		return (x > y) - (x < y);
	}
	size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
	int c = n ? memcmp(a->mv_data, b->mv_data, n) : 0;
	if (c)
		return c;
	return (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
}

/* The store's databases, created when `create`, else opened as they must
 * be: a missing one is damage, never made anew (an empty events database
 * in place of a lost one would be a store that forgot its log). */
static int open_named(sc_store *store, MDB_txn *txn, const char *dir,
		      bool create, sc_error *err)
{
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
		int rc = mdb_dbi_open(txn, dbs[i].name, create ? MDB_CREATE : 0,
				      dbs[i].dbi);
		if (rc == MDB_NOTFOUND)
			return sc_error_set(
			    err, SC_ECORRUPT,
			    "the store in %s has no %s database though its "
			    "meta says it is a statecache store: the file is "
			    "damaged; restore it from a backup",
			    dir, dbs[i].name);
		if (rc == MDB_MAP_FULL)
			return rc;
		if (rc) {
			char what[64];
			snprintf(what, sizeof what, "opening database %s",
				 dbs[i].name);
			return sc_store_lmdb_error(err, rc, what);
		}
	}
	/* The order the events database is read in from now on. */
	int rc = mdb_set_compare(txn, store->dbi_events, events_key_cmp);
	if (rc)
		return sc_store_lmdb_error(err, rc, "opening database events");
	return 0;
}

typedef struct open_ctx {
	const char *dir;
	bool creating; /* the new environment of create_store */
	uint64_t seed;
} open_ctx;

/*
 * Open's write transaction: the databases, meta, the hash seed, the end
 * of the log and the reach of entity_index. A store is an environment
 * whose meta database holds format_version; only create_store makes one,
 * in a new environment of its own. Any other environment without meta is
 * refused, never made a store in place.
 */
static int open_dbs(sc_store *store, MDB_txn *txn, void *ctx, sc_error *err)
{
	open_ctx *oc = ctx;
	MDB_dbi probe;
	int rc = mdb_dbi_open(txn, "meta", 0, &probe);
	bool fresh = rc == MDB_NOTFOUND;
	if (rc && !fresh)
		return sc_store_lmdb_error(err, rc, "opening database meta");
	if (fresh) {
		static const char *const ours[] = {"events", "entity_index",
						   "snapshots"};
		for (size_t i = 0; i < 3; i++)
			if (mdb_dbi_open(txn, ours[i], 0, &probe) == 0)
				return sc_error_set(
				    err, SC_ECORRUPT,
				    "the store in %s has a %s database but no "
				    "meta database: the file is damaged; "
				    "restore it from a backup",
				    oc->dir, ours[i]);
		if (!oc->creating)
			return sc_error_set(
			    err, SC_ECORRUPT,
			    "%s/data.mdb is an LMDB file without a statecache "
			    "meta database: it is not a store",
			    oc->dir);
	}
	rc = open_named(store, txn, oc->dir, fresh, err);
	if (rc)
		return rc;
	uint32_t version = 0;
	rc = meta_init(store, txn, fresh, &version, err);
	if (!rc && store->opt.read_only && version < SC_STORE_FORMAT_VERSION)
		return sc_error_set(err, SC_EVERSION,
				    "the store in %s has format version %u and "
				    "needs an upgrade to %u, which a read-only "
				    "open cannot write: open it once for "
				    "writing, then again read-only",
				    oc->dir, version, SC_STORE_FORMAT_VERSION);
	if (!rc)
		rc =
		    sc_tag_index_open(store, txn, oc->dir, fresh, version, err);
	if (!rc)
		rc = hash_seed_init(store, txn, &oc->seed, err);
	if (!rc)
		rc = find_last_position(store, txn, err);
	if (!rc)
		rc = sc_checkpoints_open(store, txn, oc->dir, fresh, version,
					 err);
	if (!rc)
		rc = sc_index_open(store, txn, version, err);
	return rc;
}

/* A read-only open runs open_dbs in a read transaction (it writes nothing
 * there: see the read_only branches) and commits it to keep the database
 * handles. */
static int open_dbs_read_only(sc_store *store, open_ctx *oc, sc_error *err)
{
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	rc = open_dbs(store, txn, oc, err);
	if (rc) {
		sc_store_read_end(store, txn);
		return rc;
	}
	rc = mdb_txn_commit(txn);
	pthread_rwlock_unlock(&store->map_lock);
	if (rc)
		return sc_store_lmdb_error(err, rc, "opening the store");
	return 0;
}

/* ---- creating a store ----------------------------------------------------
 *
 * A store is created so that a crash at any point leaves either no store
 * or a complete empty one: the environment is made and initialised in a
 * temporary directory inside the store's directory
 * (.sc-creating-PID-XXXXXX), synced, and its data.mdb linked into place
 * (link fails rather than replace a store another process created
 * meanwhile); then the directory is synced. Until the link a directory
 * holds no data.mdb, which is no store; a leftover temporary directory of
 * a process that is gone is removed by the next creation.
 */

#define CREATING_PREFIX ".sc-creating-"

/* fsync a directory (its entries). Returns 0 or errno. */
static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int rc = fsync(fd) ? errno : 0;
	close(fd);
	return rc;
}

/* Remove dir/name/{data,lock}.mdb and the directory. Best effort. */
static void remove_temporary(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s/data.mdb", dir, name);
	unlink(path);
	snprintf(path, sizeof path, "%s/%s/lock.mdb", dir, name);
	unlink(path);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	rmdir(path);
}

/* Remove what interrupted creations left in dir (their process is gone). */
static void remove_leftovers(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t pl = sizeof CREATING_PREFIX - 1;
		if (strncmp(e->d_name, CREATING_PREFIX, pl) != 0)
			continue;
		long pid = strtol(e->d_name + pl, NULL, 10);
		if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
			continue; /* its creator may still be at work */
		remove_temporary(dir, e->d_name);
	}
	closedir(d);
}

/* The permission bits of the directory for files of `mode`: the same,
 * with search permission wherever read permission is given. */
static mode_t dir_mode(mode_t mode)
{
	return mode | (mode & 0444) >> 2;
}

static int create_store(sc_store *s, const char *dir, sc_error *err)
{
	mode_t fmode = (mode_t)s->opt.file_mode;
	if (mkdir(dir, dir_mode(fmode)) == 0) {
		/* Exactly the mode asked for, whatever the umask. */
		if (chmod(dir, dir_mode(fmode)) != 0)
			return sc_error_set(err, errno,
					    "cannot set the mode of %s: %s",
					    dir, strerror(errno));
		/* The parent's entry for the new directory. */
		char parent[4096];
		snprintf(parent, sizeof parent, "%s", dir);
		size_t len = strlen(parent);
		while (len > 1 && parent[len - 1] == '/')
			parent[--len] = '\0';
		char *slash = strrchr(parent, '/');
		if (slash == parent)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(parent, sizeof parent, ".");
		int rc = sync_dir(parent);
		if (rc)
			return sc_error_set(err, rc, "cannot sync %s: %s",
					    parent, strerror(rc));
	} else if (errno != EEXIST) {
		return sc_error_set(err, errno,
				    "cannot create directory %s: %s", dir,
				    strerror(errno));
	}
	remove_leftovers(dir);
	char tmp[4096];
	int n = snprintf(tmp, sizeof tmp, "%s/" CREATING_PREFIX "%ld-XXXXXX",
			 dir, (long)getpid());
	if (n <= 0 || (size_t)n >= sizeof tmp - 16)
		return sc_error_set(err, ENAMETOOLONG,
				    "the store's path %s is too long", dir);
	if (!mkdtemp(tmp))
		return sc_error_set(err, errno,
				    "cannot create a temporary directory in "
				    "%s: %s",
				    dir, strerror(errno));
	const char *name = tmp + strlen(dir) + 1;
	/* A synced environment: the commit that initialises it is on disk
	 * before its data.mdb is linked into place. */
	int rc = mdb_env_create(&s->env);
	if (rc) {
		s->env = NULL;
		rc = sc_store_lmdb_error(err, rc, "creating the LMDB env");
		goto out;
	}
	mdb_env_set_maxdbs(s->env, 32);
	mdb_env_set_mapsize(s->env, s->opt.map_size);
	rc = mdb_env_open(s->env, tmp, MDB_NOTLS, fmode);
	if (rc) {
		rc = sc_store_lmdb_error(err, rc, "creating the store");
		goto out;
	}
	open_ctx oc = {dir, true, 0};
	rc = sc_store_write(s, "creating the store", open_dbs, NULL, &oc, err);
	if (rc)
		goto out;
	rc = mdb_env_sync(s->env, 1);
	if (rc) {
		rc = sc_store_lmdb_error(err, rc, "syncing the new store");
		goto out;
	}
	mdb_env_close(s->env);
	s->env = NULL;
	char from[4096 + 16], to[4096 + 16];
	snprintf(from, sizeof from, "%s/data.mdb", tmp);
	snprintf(to, sizeof to, "%s/data.mdb", dir);
	if (chmod(from, fmode) != 0) {
		rc = sc_error_set(err, errno, "cannot set the mode of %s: %s",
				  from, strerror(errno));
		goto out;
	}
	sc_killpoint("create_before_link");
	if (link(from, to) != 0 && errno != EEXIST) {
		/* A file system without hard links: rename, which would
		 * replace a store created meanwhile, so only if none is. */
		struct stat st;
		if (stat(to, &st) != 0 && rename(from, to) != 0) {
			rc = sc_error_set(err, errno,
					  "cannot move the new store into %s: "
					  "%s",
					  dir, strerror(errno));
			goto out;
		}
	}
	rc = sync_dir(dir);
	if (rc)
		rc = sc_error_set(err, rc, "cannot sync %s: %s", dir,
				  strerror(rc));
out:
	if (s->env) {
		mdb_env_close(s->env);
		s->env = NULL;
	}
	remove_temporary(dir, name);
	return rc;
}

/* Whether dir holds a store (*exists: it has a data.mdb). */
static int check_dir(const char *dir, bool create, bool *exists, sc_error *err)
{
	*exists = false;
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
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return sc_error_set(err, ENOTDIR,
				    "%s is not a directory; a store is a "
				    "directory",
				    dir);
	char path[4096];
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &st) == 0) {
		*exists = true;
		return 0;
	}
	if (!create)
		return sc_error_set(err, SC_NOTFOUND,
				    "no store in %s (no data.mdb); "
				    "create it with the create option",
				    dir);
	return 0;
}

/* Warn when an existing store can be read by every user of the machine
 * and the options did not ask for that. */
static void check_private(sc_store *s, const char *dir)
{
	if (s->opt.file_mode & S_IROTH)
		return;
	char path[4096];
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & S_IROTH))
		sc_store_warn(s,
			      "%s is readable by every user (mode %03o): "
			      "anyone can read the event log; chmod o-rwx "
			      "it, or set file_mode to allow it",
			      path, (unsigned)(st.st_mode & 0777));
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
	if (!o.checkpoint_keep)
		o.checkpoint_keep = 3;
	if (!o.checkpoint_tail)
		o.checkpoint_tail = 100000;
	if (!o.zstd_level)
		o.zstd_level = 3;
	if (!o.index_lag)
		o.index_lag = SC_STORE_INDEX_LAG_DEFAULT;
	if (o.index_lag > SC_STORE_INDEX_LAG_MAX)
		o.index_lag = SC_STORE_INDEX_LAG_MAX;
	if (o.durability != SC_DURABILITY_FULL &&
	    o.durability != SC_DURABILITY_CONSISTENT &&
	    o.durability != SC_DURABILITY_NOSYNC)
		return sc_error_set(err, SC_EINVAL,
				    "unknown durability %d; use full, "
				    "consistent or nosync",
				    (int)o.durability);
	if (o.read_only && o.create)
		return sc_error_set(err, SC_EINVAL,
				    "a read-only open cannot create a store; "
				    "create it with a writing open first");
	if (!o.follow_interval_ms)
		o.follow_interval_ms = 100;
	if (!o.file_mode)
		o.file_mode = 0600;
	if (o.file_mode & ~0777u)
		return sc_error_set(err, SC_EINVAL,
				    "file_mode %o has bits beyond the "
				    "permission bits (0777)",
				    o.file_mode);
	int rc = sc_store_session_check(dir, err);
	if (rc)
		return rc;
	bool exists;
	rc = check_dir(dir, o.create, &exists, err);
	if (rc)
		return rc;

	sc_store *s = sc_calloc(1, sizeof *s);
	if (!s)
		return sc_error_set(err, ENOMEM, "out of memory opening %s",
				    dir);
	s->opt = o;
	pthread_mutex_init(&s->snap_mu, NULL);
	pthread_mutex_init(&s->ckpt_mu, NULL);
	pthread_mutex_init(&s->write_mu, NULL);
	pthread_mutex_init(&s->group_mu, NULL);
	s->group_linger_max_ns = SC_GROUP_LINGER_MAX_NS;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* A map growth must not starve behind a stream of readers. */
	pthread_rwlockattr_setkind_np(
	    &ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->map_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&s->query_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	/* Live queries wait with deadlines of CLOCK_MONOTONIC (query.c). */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->query_cv, &ca);
	pthread_condattr_destroy(&ca);

	if (!exists) {
		rc = create_store(s, dir, err);
		if (rc)
			goto fail;
	} else {
		check_private(s, dir);
	}
	rc = mdb_env_create(&s->env);
	if (rc) {
		rc = sc_store_lmdb_error(err, rc, "creating the LMDB env");
		s->env = NULL;
		goto fail;
	}
	mdb_env_set_maxdbs(s->env, 32);
	mdb_env_set_mapsize(s->env, o.map_size);
	/* MDB_NOTLS: read transactions are not tied to threads. No mode uses
	 * MDB_WRITEMAP: LMDB forbids mixing it with plain opens of one
	 * environment, and every mode may share a store with another (the
	 * CLI's readers open in full). consistent flushes the data pages at
	 * commit and leaves the meta page to the next commit; nosync
	 * flushes nothing (sync.c may, every sync_interval_ms). */
	unsigned flags = MDB_NOTLS;
	if (o.read_only)
		flags |= MDB_RDONLY; /* lock.mdb is still written */
	else if (o.durability == SC_DURABILITY_CONSISTENT)
		flags |= MDB_NOMETASYNC;
	else if (o.durability == SC_DURABILITY_NOSYNC)
		flags |= MDB_NOSYNC;
	/* A read-only open makes no nosync session marker (it flushes
	 * nothing); sc_store_session_check above still refused a store a
	 * machine crash may have damaged. */
	if (!o.read_only)
		rc = sc_store_session_begin(s, dir, err);
	if (rc)
		goto fail;
	rc = mdb_env_open(s->env, dir, flags, (mode_t)o.file_mode);
	if (rc) {
		char what[512];
		snprintf(what, sizeof what,
			 "opening the LMDB environment in %s", dir);
		rc = sc_store_lmdb_error(err, rc, what);
		goto fail;
	}
	if (mdb_env_get_maxkeysize(s->env) < (int)SC_INDEX_KEY_MAX) {
		rc = sc_error_set(
		    err, SC_EVERSION,
		    "this LMDB takes keys of at most %d bytes; "
		    "a store needs %u: use an LMDB built with the "
		    "default MDB_MAXKEYSIZE",
		    mdb_env_get_maxkeysize(s->env), SC_INDEX_KEY_MAX);
		goto fail;
	}
	if (!exists) {
		/* lock.mdb is made by this open: the mode asked for. */
		char lock[4096 + 16];
		snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
		(void)chmod(lock, (mode_t)o.file_mode);
	}
	if (!o.read_only)
		rc = sc_store_session_opened(s, err);
	if (rc)
		goto fail;
	int dead = 0;
	mdb_reader_check(s->env, &dead);
	open_ctx oc = {dir, false, 0};
	if (o.read_only)
		rc = open_dbs_read_only(s, &oc, err);
	else
		rc = sc_store_write(s, "opening the store", open_dbs, NULL, &oc,
				    err);
	if (rc)
		goto fail;
	/* A store of an older format: its tag and partition indexes (a
	 * read-only open refused one; queries scan what is not indexed). */
	if (!o.read_only)
		rc = sc_tag_index_build(s, err);
	if (rc)
		goto fail;
	/* The store's own seed unless the caller chose one. */
	if (!o.cache.seed)
		o.cache.seed = oc.seed;
	rc = sc_cache_create(&o.cache, &s->cache, err);
	if (rc)
		goto fail;
	/* A store with checkpoints loads each partition from its own newest
	 * checkpoint and its tail; one without restores the newest snapshot
	 * and replays the log after it (store/README.md has the rule). */
	uint64_t snap_pos = 0;
	bool by_part = false;
	/* With a memory budget: the default and pinned partitions only
	 * (residency.c). */
	rc = sc_residency_open(s, &by_part, err);
	if (!rc && !by_part)
		rc =
		    sc_checkpoints_restore(s, &by_part, &s->open_replayed, err);
	if (rc)
		goto fail;
	if (by_part)
		snap_pos = atomic_load(&s->last_position);
	else
		rc = sc_store_restore(s, &snap_pos, err);
	if (rc)
		goto fail;
	sc_killpoint("restore_mid");
	/* A read-only store replays as it follows: to the last position
	 * committed when its read transaction begins (the writer may have
	 * appended since open's). */
	rc = o.read_only ? sc_store_follow_start(s, snap_pos, err)
			 : sc_store_replay(s, snap_pos, err);
	if (rc)
		goto fail;
	s->since_snapshot = atomic_load(&s->last_position) - snap_pos;
	if (!by_part)
		s->open_replayed = atomic_load(&s->last_position) - snap_pos;
	if (!o.read_only)
		rc = sc_store_sync_start(s, err);
	if (!rc)
		rc = sc_checkpointer_start(s, err);
	if (rc)
		goto fail;
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
	sc_checkpointer_stop(store);
	sc_store_sync_stop(store);
	sc_store_follow_stop(store);
	sc_residency_close(store);
	if (store->cache)
		sc_cache_destroy(store->cache);
	bool flushed = false;
	if (store->env) {
		/* The modes that leave commits unflushed flush once here. */
		if (store->opt.durability != SC_DURABILITY_FULL &&
		    !store->opt.read_only)
			flushed = mdb_env_sync(store->env, 1) == 0;
		mdb_env_close(store->env);
	}
	sc_store_session_end(store, flushed);
	sc_projectors_free(store);
	sc_free(store->batch);
	pthread_mutex_destroy(&store->snap_mu);
	pthread_mutex_destroy(&store->ckpt_mu);
	pthread_mutex_destroy(&store->write_mu);
	pthread_mutex_destroy(&store->group_mu);
	pthread_rwlock_destroy(&store->map_lock);
	pthread_mutex_destroy(&store->query_mu);
	pthread_cond_destroy(&store->query_cv);
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
	out->open_events_replayed = store->open_replayed;
	out->checkpoints_written = atomic_load(&store->checkpoints_written);
	out->map_size = info.me_mapsize;
	out->map_bytes_used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	sc_cache_stats_get(store->cache, &out->cache);
	sc_residency_stats(store, out);
	return 0;
}
