/*
 * What durability nosync needs besides LMDB's MDB_NOSYNC.
 *
 * The background flush (sc_store_options.sync_interval_ms): a thread that
 * calls mdb_env_sync(env, 1) every interval, so that the data of an
 * appended batch reaches the disk within about one interval. mdb_env_sync
 * may run while another thread commits: without MDB_WRITEMAP it is an
 * fdatasync of the data file, which LMDB allows at any time. The thread
 * sleeps on a condition variable with a monotonic clock, so close wakes
 * it at once.
 *
 * Session markers. An OS crash or power loss during a nosync session can
 * leave data.mdb with a meta page that points at pages never written, or
 * overwritten since; LMDB may then fail, return a shorter log, or crash
 * (an assertion, a SIGSEGV) while reading it. So that open reports this
 * instead, a nosync session first creates DIR/nosync-session.PID holding
 * the boot id (/proc/sys/kernel/random/boot_id), synced with its
 * directory, and removes it at close once a flush succeeded. Open (any
 * mode) refuses with SC_ECORRUPT when it finds a marker from another boot:
 * that session was cut by a restart of the machine before it flushed. A
 * marker of the current boot whose process is gone was left by a process
 * crash, which loses nothing (its writes are in the page cache): open
 * flushes the file and removes it. Without a readable boot id (not Linux)
 * there are no markers.
 */
#include "store/store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"

struct sc_store_syncer {
	MDB_env *env;
	unsigned interval_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
};

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *sync_main(void *arg)
{
	struct sc_store_syncer *y = arg;
	pthread_mutex_lock(&y->mu);
	while (!y->stop) {
		struct timespec ts;
		deadline_after(&ts, y->interval_ms);
		int rc = 0;
		while (!y->stop && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&y->cv, &y->mu, &ts);
		if (y->stop)
			break;
		pthread_mutex_unlock(&y->mu);
		/* A failed flush is retried at the next interval; the next
		 * commit or close reports a failing disk. */
		(void)mdb_env_sync(y->env, 1);
		pthread_mutex_lock(&y->mu);
	}
	pthread_mutex_unlock(&y->mu);
	return NULL;
}

int sc_store_sync_start(sc_store *store, sc_error *err)
{
	unsigned ms = store->opt.sync_interval_ms;
	if (store->opt.durability != SC_DURABILITY_NOSYNC || ms == 0)
		return 0;
	struct sc_store_syncer *y = sc_calloc(1, sizeof *y);
	if (!y)
		return sc_error_set(err, ENOMEM,
				    "out of memory starting the background "
				    "flush");
	y->env = store->env;
	y->interval_ms = ms;
	pthread_mutex_init(&y->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&y->cv, &ca);
	pthread_condattr_destroy(&ca);
	int rc = pthread_create(&y->thread, NULL, sync_main, y);
	if (rc) {
		pthread_cond_destroy(&y->cv);
		pthread_mutex_destroy(&y->mu);
		sc_free(y);
		return sc_error_set(err, rc,
				    "cannot start the background flush "
				    "thread (sync_interval_ms %u): %s; use "
				    "sync_interval_ms 0 or free resources",
				    ms, strerror(rc));
	}
	store->syncer = y;
	return 0;
}

void sc_store_sync_stop(sc_store *store)
{
	struct sc_store_syncer *y = store->syncer;
	if (!y)
		return;
	pthread_mutex_lock(&y->mu);
	y->stop = true;
	pthread_cond_signal(&y->cv);
	pthread_mutex_unlock(&y->mu);
	pthread_join(y->thread, NULL);
	pthread_cond_destroy(&y->cv);
	pthread_mutex_destroy(&y->mu);
	sc_free(y);
	store->syncer = NULL;
}

/* ---- nosync session markers ---------------------------------------------- */

#define MARKER_PREFIX "nosync-session."
#define BOOT_ID_MAX   64
#define STALE_MAX     16

struct sc_store_session {
	char dir[4096];
	char own[4200]; /* our marker's path; "" if none */
	bool wrote;	/* the environment was opened */
	int nstale;
	char stale[STALE_MAX][4200];
};

/* The current boot id into buf (NUL-terminated, no newline); false if it
 * cannot be read. */
static bool boot_id(char *buf, size_t n)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (!f)
		return false;
	bool ok = fgets(buf, (int)n, f) != NULL;
	fclose(f);
	if (!ok)
		return false;
	buf[strcspn(buf, "\n")] = '\0';
	return buf[0] != '\0';
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int rc = fsync(fd) ? errno : 0;
	close(fd);
	return rc;
}

/* A marker's boot id into buf ("" when empty or unreadable). */
static void marker_read(const char *path, char *buf, size_t n)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t k = read(fd, buf, n - 1);
	close(fd);
	buf[k > 0 ? k : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

static int marker_create(struct sc_store_session *ss, const char *boot,
			 sc_error *err)
{
	snprintf(ss->own, sizeof ss->own, "%s/" MARKER_PREFIX "%ld", ss->dir,
		 (long)getpid());
	int fd = open(ss->own, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc = 0;
	if (fd < 0) {
		rc = errno;
	} else {
		size_t n = strlen(boot);
		if (write(fd, boot, n) != (ssize_t)n ||
		    write(fd, "\n", 1) != 1 || fsync(fd) != 0)
			rc = errno ? errno : EIO;
		close(fd);
	}
	if (!rc)
		rc = sync_dir(ss->dir);
	if (rc) {
		sc_error_set(
		    err, rc,
		    "cannot create the nosync session marker %s: %s; "
		    "check the store directory's permissions and space",
		    ss->own, strerror(rc));
		unlink(ss->own);
		ss->own[0] = '\0';
	}
	return rc;
}

/* Visit the markers in dir: refuse one from another boot (SC_ECORRUPT);
 * pass each stale one (this boot, its process gone, or empty) to
 * `stale`. A missing directory has none. */
static int scan_markers(const char *dir, const char *boot,
			struct sc_store_session *ss, sc_error *err)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return sc_error_set(err, errno, "cannot list %s: %s", dir,
				    strerror(errno));
	}
	int rc = 0;
	struct dirent *e;
	while (!rc && (e = readdir(d))) {
		if (strncmp(e->d_name, MARKER_PREFIX, sizeof MARKER_PREFIX - 1))
			continue;
		char *end;
		long pid =
		    strtol(e->d_name + sizeof MARKER_PREFIX - 1, &end, 10);
		char path[4200], theirs[BOOT_ID_MAX];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		marker_read(path, theirs, sizeof theirs);
		if (theirs[0] && strcmp(theirs, boot) != 0) {
			rc = sc_error_set(
			    err, SC_ECORRUPT,
			    "an OS crash or power loss cut a nosync session "
			    "(process %ld) before it flushed: the store may "
			    "be damaged, and reading it could crash. Restore "
			    "it from a backup, or delete %s to open it anyway",
			    pid, path);
			break;
		}
		/* Ours from this boot: keep it while its process lives. */
		if (theirs[0] && !*end && pid > 0 &&
		    (kill((pid_t)pid, 0) == 0 || errno == EPERM))
			continue;
		/* Left by a process crash (or never filled: that session
		 * had not opened the store yet). */
		if (ss && ss->nstale < STALE_MAX)
			snprintf(ss->stale[ss->nstale++], sizeof ss->stale[0],
				 "%s", path);
	}
	closedir(d);
	return rc;
}

int sc_store_session_check(const char *dir, sc_error *err)
{
	char boot[BOOT_ID_MAX];
	if (!boot_id(boot, sizeof boot))
		return 0;
	return scan_markers(dir, boot, NULL, err);
}

int sc_store_session_begin(sc_store *store, const char *dir, sc_error *err)
{
	char boot[BOOT_ID_MAX];
	if (!boot_id(boot, sizeof boot))
		return 0;
	struct sc_store_session *ss = sc_calloc(1, sizeof *ss);
	if (!ss)
		return sc_error_set(err, ENOMEM, "out of memory opening %s",
				    dir);
	snprintf(ss->dir, sizeof ss->dir, "%s", dir);
	store->session = ss;
	int rc = scan_markers(dir, boot, ss, err);
	if (!rc && store->opt.durability == SC_DURABILITY_NOSYNC)
		rc = marker_create(ss, boot, err);
	return rc;
}

int sc_store_session_opened(sc_store *store, sc_error *err)
{
	struct sc_store_session *ss = store->session;
	if (!ss)
		return 0;
	ss->wrote = true;
	if (!ss->nstale)
		return 0;
	/* The crashed sessions' writes are in the page cache: flush the
	 * whole file, then forget them. */
	int rc = mdb_env_sync(store->env, 1);
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "flushing the writes of a crashed "
					   "nosync session");
	for (int i = 0; i < ss->nstale; i++)
		unlink(ss->stale[i]);
	ss->nstale = 0;
	(void)sync_dir(ss->dir);
	return 0;
}

void sc_store_session_end(sc_store *store, bool flushed)
{
	struct sc_store_session *ss = store->session;
	if (!ss)
		return;
	/* Without a flush the marker stays: after a restart of the machine
	 * open reports the store as possibly damaged. */
	if (ss->own[0] && (flushed || !ss->wrote)) {
		unlink(ss->own);
		(void)sync_dir(ss->dir);
	}
	sc_free(ss);
	store->session = NULL;
}
