/*
 * The background flush of durability nosync (sc_store_options.
 * sync_interval_ms): a thread that calls mdb_env_sync(env, 1) every
 * interval, so an OS crash loses at most about one interval of appends
 * (when it does not corrupt the store; see SC_DURABILITY_NOSYNC).
 *
 * mdb_env_sync may run while another thread commits: without
 * MDB_WRITEMAP it is an fdatasync of the data file, which LMDB allows at
 * any time. The thread sleeps on a condition variable with a monotonic
 * clock, so close wakes it at once.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

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
