/*
 * sc_store_backup: a consistent copy of a live store (store.h).
 *
 * LMDB copies the environment as of one read transaction
 * (mdb_env_copyfd2), so a copy taken during appends is a committed state.
 * What this file adds around it:
 *
 *  - the destination: a new or empty directory; the copy goes to
 *    data.mdb.partial (0600), is synced, renamed to data.mdb and the
 *    directory synced, so a data.mdb there is always whole and durable;
 *  - the map: a map growth in this process (mdb_env_set_mapsize) needs
 *    every transaction of the process to be finished, and the copy runs
 *    one, so the copy holds the store's map lock shared for its whole
 *    length (sc_store_read_begin), as every read does;
 *  - a check that the copy opens as a store before it is reported done.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "common/internal.h"
#include "statecache/store.h"
#include "store/store_internal.h"

/* Tries at a copy whose read transaction met MDB_MAP_RESIZED (another
 * process grew the map between our adopting its size and the copy's own
 * transaction). */
#define BACKUP_RESIZE_TRIES 4

typedef struct backup_paths {
	char partial[4096]; /* DEST/data.mdb.partial */
	char final[4096];   /* DEST/data.mdb */
	char lock[4096];    /* DEST/lock.mdb (made if the check opens it) */
} backup_paths;

/* Whether `dir` (a directory) holds nothing but "." and "..". */
static int dir_is_empty(const char *dir, bool *empty)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno;
	*empty = true;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			*empty = false;
			break;
		}
	}
	int rc = errno;
	closedir(d);
	return rc;
}

/* Make `dest` (0700) or accept it if it is an empty directory. */
static int dest_prepare(const char *dest, bool *created, sc_error *err)
{
	*created = false;
	if (mkdir(dest, 0700) == 0) {
		*created = true;
		/* The umask may have taken bits we need. */
		if (chmod(dest, 0700))
			return sc_error_set(
			    err, errno,
			    "backup: cannot set the mode of %s: "
			    "%s",
			    dest, strerror(errno));
		return 0;
	}
	int e = errno;
	struct stat st;
	if (e != EEXIST)
		return sc_error_set(err, e,
				    "backup: cannot create the directory %s: "
				    "%s",
				    dest, strerror(e));
	if (stat(dest, &st) || !S_ISDIR(st.st_mode))
		return sc_error_set(err, SC_EINVAL,
				    "backup: %s exists and is not a directory; "
				    "give a new path or an empty directory",
				    dest);
	bool empty = false;
	e = dir_is_empty(dest, &empty);
	if (e)
		return sc_error_set(err, e, "backup: cannot read %s: %s", dest,
				    strerror(e));
	if (!empty)
		return sc_error_set(err, SC_EINVAL,
				    "backup: %s is not empty; give a new path "
				    "or an empty directory (a backup never "
				    "overwrites)",
				    dest);
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int rc = fsync(fd) ? errno : 0;
	close(fd);
	return rc;
}

/* The environment copy into `fd`, under the store's map lock. */
static int copy_env(sc_store *store, int fd, unsigned flags,
		    const char *partial, sc_error *err)
{
	unsigned cp = (flags & SC_BACKUP_COMPACT) ? MDB_CP_COMPACT : 0;
	for (int attempt = 1;; attempt++) {
		MDB_txn *txn;
		int rc = sc_store_read_begin(store, &txn, err);
		if (rc)
			return rc;
		rc = mdb_env_copyfd2(sc_store_env(store), fd, cp);
		sc_store_read_end(store, txn);
		if (rc != MDB_MAP_RESIZED || attempt == BACKUP_RESIZE_TRIES) {
			if (rc)
				return sc_store_lmdb_error(
				    err, rc, "backup: copying the store");
			return 0;
		}
		/* Start the file over; the next read_begin adopts the new
		 * map size. */
		if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) < 0)
			return sc_error_set(err, errno,
					    "backup: cannot truncate %s: %s",
					    partial, strerror(errno));
	}
}

/* Open the copy read-only and check it is a store: meta with its
 * format_version, and the log. */
static int check_copy(const char *dest, sc_error *err)
{
	MDB_env *env;
	MDB_txn *txn = NULL;
	MDB_dbi meta, events;
	const char *step = "creating an LMDB environment";
	int rc = mdb_env_create(&env);
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "backup: checking the copy");
	mdb_env_set_maxdbs(env, 32);
	step = "opening the copy";
	rc = mdb_env_open(env, dest, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600);
	if (!rc) {
		step = "reading the copy";
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	}
	if (!rc) {
		step = "opening the copy's meta database";
		rc = mdb_dbi_open(txn, "meta", 0, &meta);
	}
	if (!rc) {
		step = "opening the copy's events database";
		rc = mdb_dbi_open(txn, "events", 0, &events);
	}
	if (!rc) {
		MDB_val k = {sizeof "format_version" - 1, "format_version"}, v;
		step = "reading the copy's format_version";
		rc = mdb_get(txn, meta, &k, &v);
		if (!rc && v.mv_size != 4)
			rc = MDB_CORRUPTED;
	}
	if (txn)
		mdb_txn_abort(txn);
	mdb_env_close(env);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_ECORRUPT,
				    "backup: the copy in %s is not a store "
				    "(%s: not found); keep the source and "
				    "retry",
				    dest, step);
	if (rc) {
		char what[160];
		snprintf(what, sizeof what, "backup: %s in %s", step, dest);
		return sc_store_lmdb_error(err, rc, what);
	}
	return 0;
}

static void backup_undo(const backup_paths *p, const char *dest, bool created)
{
	unlink(p->partial);
	unlink(p->final);
	unlink(p->lock);
	if (created)
		rmdir(dest);
}

int sc_store_backup(sc_store *store, const char *dest_dir, unsigned flags,
		    sc_error *err)
{
	if (!store || !dest_dir || !dest_dir[0])
		return sc_error_set(err, SC_EINVAL,
				    "backup: store and destination directory "
				    "are required");
	if (flags & ~SC_BACKUP_COMPACT)
		return sc_error_set(err, SC_EINVAL,
				    "backup: unknown flags %#x (only "
				    "SC_BACKUP_COMPACT)",
				    flags & ~SC_BACKUP_COMPACT);
	backup_paths p;
	if ((size_t)snprintf(p.partial, sizeof p.partial, "%s/data.mdb.partial",
			     dest_dir) >= sizeof p.partial)
		return sc_error_set(err, SC_EINVAL,
				    "backup: destination path is too long");
	snprintf(p.final, sizeof p.final, "%s/data.mdb", dest_dir);
	snprintf(p.lock, sizeof p.lock, "%s/lock.mdb", dest_dir);

	bool created;
	int rc = dest_prepare(dest_dir, &created, err);
	if (rc)
		return rc;
	int fd = open(p.partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = sc_error_set(err, errno, "backup: cannot create %s: %s",
				  p.partial, strerror(errno));
		backup_undo(&p, dest_dir, created);
		return rc;
	}
	if (fchmod(fd, 0600)) {
		rc = sc_error_set(err, errno,
				  "backup: cannot set the mode of %s: %s",
				  p.partial, strerror(errno));
		goto fail;
	}
	rc = copy_env(store, fd, flags, p.partial, err);
	if (rc)
		goto fail;
	if (fsync(fd)) {
		rc = sc_error_set(err, errno,
				  "backup: cannot sync %s: %s (is the disk "
				  "full?)",
				  p.partial, strerror(errno));
		goto fail;
	}
	if (close(fd)) {
		fd = -1;
		rc = sc_error_set(err, errno, "backup: writing %s failed: %s",
				  p.partial, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(p.partial, p.final)) {
		rc = sc_error_set(err, errno,
				  "backup: cannot rename %s to %s: %s",
				  p.partial, p.final, strerror(errno));
		goto fail;
	}
	int e = fsync_dir(dest_dir);
	if (e) {
		rc =
		    sc_error_set(err, e, "backup: cannot sync directory %s: %s",
				 dest_dir, strerror(e));
		goto fail;
	}
	rc = check_copy(dest_dir, err);
	if (rc)
		goto fail;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	backup_undo(&p, dest_dir, created);
	return rc;
}
