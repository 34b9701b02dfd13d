/*
 * Group commit: appends from many threads share one write transaction.
 *
 * With durability full every commit waits for the disk (LMDB syncs the
 * data and then the meta page), so one appender at a time is bound by the
 * disk's flush latency, however small its batches. Appends that arrive
 * while a commit is under way queue up; the next transaction writes all of
 * them and one sync makes all of them durable.
 *
 *   queue (group_mu):  A  B  C  D          A leads: takes A B C (a group),
 *                      ^head               writes and commits them in one
 *                                          transaction under write_mu,
 *   A: [A B C] -> commit -> promote        then marks B and C done, wakes
 *   D: waits ..........................    them and wakes D, the new head,
 *                                          which leads the next group.
 *
 * What holds:
 * - Every caller's batch is written whole, in one contiguous range of
 *   positions, in queue order behind the batches before it in the group.
 * - A batch that fails validation never joins (sc_store_append validates
 *   before sc_group_append).
 * - A projector that refuses an event aborts the transaction (the cache's
 *   pending version is discarded and the projectors rolled back); the
 *   group is written again without the batch of that event, whose caller
 *   alone gets the error. Any other failure of a transaction of several
 *   batches (out of memory, a full transaction, an I/O error) is not laid
 *   on one batch: each batch of the group is then written alone, in order,
 *   and each caller gets the outcome of its own transaction.
 * - A caller returns only after the transaction holding its batch was
 *   committed (synced, with durability full) and the cache promoted, or
 *   after its batch was refused and nothing of it written.
 * - A lone appender finds the queue empty and leads: no handoff between
 *   threads when nobody waits, and no wait (below) once the last handoff
 *   saw it alone, or lies further back than its write took.
 *
 * The appenders a commit releases come back with their next batches a few
 * microseconds later, after the next leader has taken the queue: groups
 * would split into two halves that alternate, each paying a whole commit.
 * So a leader whose group would hold fewer batches than the appenders
 * seen at the last handoff (the batches it wrote and those queued behind
 * it, at most GROUP_BATCHES_MAX) waits for the rest, at most a quarter of
 * the last handoff's write time (GROUP_LINGER_SHARE, never over
 * SC_GROUP_LINGER_MAX_NS), until its group is that large or full: with
 * durability full that is a fraction of a flush for a group up to twice
 * as large. It does not wait when the last handoff saw one appender, when
 * that handoff is older than its write took (the appenders are not
 * coming back at once), or when the wait would be shorter than a sleep
 * and a wake-up (GROUP_LINGER_MIN_NS: commits without a sync). When
 * appenders stop, one wait times out and the next handoff counts fewer.
 *
 * The leader's request and those it takes stay in the queue until it has
 * written them, so an append that arrives meanwhile queues behind them and
 * waits for its turn to lead. Requests live on their callers' stacks; the
 * leader writes a follower's outcome before marking it done under
 * group_mu, and touches it no more afterwards.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/internal.h"

/* A group takes at most this many batches, and more than one only while
 * they hold at most GROUP_EVENTS_MAX events together (a leader's own batch
 * always goes, whatever its size): a group stays well within what one
 * LMDB transaction may change, and the first in the queue do not wait for
 * a huge transaction of others. */
#define GROUP_BATCHES_MAX 64
#define GROUP_EVENTS_MAX  65536

/* A leader waits for its group at most the last handoff's write time over
 * this, and never longer than store->group_linger_max_ns
 * (SC_GROUP_LINGER_MAX_NS). */
#define GROUP_LINGER_SHARE 4
/* A shorter wait is not worth a sleep and a wake-up: commits without a
 * sync take a few to tens of microseconds, a synced one hundreds. */
#define GROUP_LINGER_MIN_NS 25000

/* One sc_store_append waiting in, or leading, the queue. */
typedef struct sc_append_req {
	const sc_event *evs; /* the caller's, validated */
	size_t n;
	/* The outcome, final once done (or once the leader settled it). */
	uint64_t first;
	int rc;
	sc_error err;
	bool settled; /* the leader decided the outcome */
	bool done;    /* the leader is done with it (under group_mu) */
	pthread_cond_t cv;
	struct sc_append_req *next;
} sc_append_req;

/* Write the unsettled batches of reqs[0..m) in one transaction; on
 * success settle them. Returns the transaction's outcome; *vetoed indexes
 * reqs (m: none). */
static int commit_batches(sc_store *store, sc_append_req **reqs, size_t m,
			  size_t *vetoed, sc_error *err)
{
	size_t ends[GROUP_BATCHES_MAX], which[GROUP_BATCHES_MAX];
	size_t nparts = 0, off = 0;
	uint64_t start = atomic_load(&store->last_position) + 1;
	*vetoed = m;
	for (size_t i = 0; i < m; i++) {
		if (reqs[i]->settled)
			continue;
		int rc = sc_log_stamp(store, off, reqs[i]->evs, reqs[i]->n,
				      start + off, err);
		if (rc)
			return rc;
		off += reqs[i]->n;
		which[nparts] = i;
		ends[nparts++] = off;
	}
	if (!nparts)
		return 0;
	size_t part;
	int rc = sc_log_append_commit(store, off, ends, nparts, &part, err);
	if (rc) {
		if (part < nparts)
			*vetoed = which[part];
		return rc;
	}
	if (nparts > 1)
		store->groups_shared++;
	for (size_t p = 0; p < nparts; p++) {
		sc_append_req *r = reqs[which[p]];
		r->first = start + (p ? ends[p - 1] : 0);
		r->rc = 0;
		r->settled = true;
	}
	return 0;
}

static void settle(sc_append_req *r, int rc, const sc_error *err)
{
	r->rc = rc;
	r->err = *err;
	r->err.code = rc;
	r->settled = true;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The batches queued from `me` on, at most `cap`. Under group_mu. */
static size_t queued_from(const sc_append_req *me, size_t cap)
{
	size_t n = 0;
	for (const sc_append_req *r = me; r && n < cap; r = r->next)
		n++;
	return n;
}

/* The group the leader `me` takes: the batches queued from it on, at most
 * GROUP_BATCHES_MAX holding at most GROUP_EVENTS_MAX events together (its
 * own batch always goes, whatever its size). Returns how many; *full: a
 * batch queued after them does not fit, or there are GROUP_BATCHES_MAX.
 * Under group_mu. */
static size_t group_take(sc_append_req *me, sc_append_req **reqs, bool *full)
{
	size_t m = 0, total = 0;
	sc_append_req *r = me;
	for (; r && m < GROUP_BATCHES_MAX; r = r->next) {
		if (m && total + r->n > GROUP_EVENTS_MAX)
			break;
		if (reqs)
			reqs[m] = r;
		m++;
		total += r->n;
	}
	*full = r != NULL || m == GROUP_BATCHES_MAX;
	return m;
}

/* The lingering leader's group is as large as it waits for. Under
 * group_mu. */
static bool group_ready(sc_store *store, sc_append_req *head)
{
	bool full;
	size_t m = group_take(head, NULL, &full);
	return full || m >= store->group_want;
}

/* The leader `me` waits for the appenders the last handoff saw to queue
 * again (see the top of this file). Under group_mu. */
static void linger(sc_store *store, sc_append_req *me)
{
	size_t want = store->group_seen;
	if (want > GROUP_BATCHES_MAX)
		want = GROUP_BATCHES_MAX;
	if (want < 2)
		return;
	int64_t now = mono_ns();
	/* A handoff longer ago than its transaction took: the appenders it
	 * released are not coming back at once. */
	if (now - store->group_handoff_ns > store->group_write_ns)
		return;
	int64_t wait = store->group_write_ns / GROUP_LINGER_SHARE;
	if (wait > store->group_linger_max_ns)
		wait = store->group_linger_max_ns;
	/* Shorter than a sleep and a wake-up: not worth one. */
	if (wait < GROUP_LINGER_MIN_NS)
		return;
	store->group_want = want;
	if (group_ready(store, me))
		return;
	int64_t end = now + wait;
	struct timespec until = {(time_t)(end / 1000000000),
				 (long)(end % 1000000000)};
	store->group_lingering = true;
	store->group_lingered++;
	while (!group_ready(store, me))
		if (pthread_cond_timedwait(&me->cv, &store->group_mu, &until))
			break;
	store->group_lingering = false;
}

/* Write the batches of reqs[0..m) (under write_mu) and settle each. */
static void write_group(sc_store *store, sc_append_req **reqs, size_t m)
{
	sc_error err;
	if (store->stale) {
		sc_error_set(&err, SC_ESTATE,
			     "the cache is behind the log after an "
			     "allocation failure; close and reopen the "
			     "store");
		for (size_t i = 0; i < m; i++)
			settle(reqs[i], SC_ESTATE, &err);
		return;
	}
	for (;;) {
		size_t left = 0;
		for (size_t i = 0; i < m; i++)
			left += !reqs[i]->settled;
		if (!left)
			return;
		sc_error_clear(&err);
		size_t vetoed;
		int rc = commit_batches(store, reqs, m, &vetoed, &err);
		if (!rc)
			return;
		if (store->stale) {
			/* Committed, but the cache could not follow: every
			 * batch of the transaction gets the message naming
			 * the positions; later ones are refused. */
			for (size_t i = 0; i < m; i++)
				if (!reqs[i]->settled)
					settle(reqs[i], rc, &err);
			return;
		}
		if (rc == SC_EPROJECTOR && vetoed < m) {
			/* Only the refused batch fails; the others go again
			 * in a new transaction. */
			settle(reqs[vetoed], rc, &err);
			sc_killpoint("group_retry");
			continue;
		}
		if (left == 1) {
			for (size_t i = 0; i < m; i++)
				if (!reqs[i]->settled)
					settle(reqs[i], rc, &err);
			return;
		}
		/* A failure of the group as a whole: each batch alone. */
		for (size_t i = 0; i < m; i++) {
			if (reqs[i]->settled)
				continue;
			sc_error_clear(&err);
			rc = commit_batches(store, &reqs[i], 1, &vetoed, &err);
			if (rc)
				settle(reqs[i], rc, &err);
			if (store->stale) {
				write_group(store, reqs, m);
				return;
			}
		}
		return;
	}
}

int sc_group_append(sc_store *store, const sc_event *events, size_t n,
		    uint64_t *first, sc_error *err)
{
	sc_append_req me = {.evs = events, .n = n};
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&me.cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&store->group_mu);
	if (store->group_tail)
		store->group_tail->next = &me;
	else
		store->group_head = &me;
	store->group_tail = &me;
	/* A leader waiting for its group: wake it once the group is whole. */
	if (store->group_lingering && store->group_head != &me &&
	    group_ready(store, store->group_head))
		pthread_cond_signal(&store->group_head->cv);
	while (!me.done && store->group_head != &me)
		pthread_cond_wait(&me.cv, &store->group_mu);
	if (me.done) {
		/* A leader wrote this batch (or refused it). */
		pthread_mutex_unlock(&store->group_mu);
		goto out;
	}
	/* The head of the queue leads: it takes the batches behind it. */
	linger(store, &me);
	sc_append_req *reqs[GROUP_BATCHES_MAX];
	bool full;
	size_t m = group_take(&me, reqs, &full);
	pthread_mutex_unlock(&store->group_mu);

	pthread_mutex_lock(&store->write_mu);
	int64_t t0 = mono_ns();
	write_group(store, reqs, m);
	int64_t took = mono_ns() - t0;
	bool snap = store->opt.snapshot_every &&
		    store->since_snapshot >= store->opt.snapshot_every;
	uint64_t last = atomic_load(&store->last_position);
	pthread_mutex_unlock(&store->write_mu);
	if (m > 1)
		sc_killpoint("group_after_commit");

	/* Hand the followers their outcome and the queue to the next. */
	pthread_mutex_lock(&store->group_mu);
	sc_append_req *rest = reqs[m - 1]->next;
	store->group_head = rest;
	if (!rest)
		store->group_tail = NULL;
	store->group_seen = m + queued_from(rest, GROUP_BATCHES_MAX);
	store->group_write_ns = took;
	store->group_handoff_ns = mono_ns();
	for (size_t i = 1; i < m; i++) {
		reqs[i]->done = true;
		pthread_cond_signal(&reqs[i]->cv);
	}
	if (rest)
		pthread_cond_signal(&rest->cv);
	pthread_mutex_unlock(&store->group_mu);

	if (snap) {
		/* Synchronous, on the leader's thread: the appends are
		 * committed whatever happens here; a failed snapshot is a
		 * warning, retried after the next append. */
		sc_error serr;
		if (sc_store_snapshot(store, NULL, &serr))
			sc_store_warn(store,
				      "automatic snapshot after position "
				      "%llu failed: %s",
				      (unsigned long long)last, serr.message);
	}
out:
	pthread_cond_destroy(&me.cv);
	if (me.rc) {
		if (err)
			*err = me.err;
		return me.rc;
	}
	if (first)
		*first = me.first;
	return 0;
}

/* The public entry: validation first, then the group. */
int sc_store_append(sc_store *store, const sc_event *events, size_t n,
		    uint64_t *first, sc_error *err)
{
	sc_error_clear(err);
	if (!store || (n && !events))
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_append needs a store and events");
	if (store->opt.read_only) /* before the cache: the follower writes it */
		return sc_store_read_only_error(err, "appending");
	/* A batch that fails validation never joins a group. */
	for (size_t i = 0; i < n; i++) {
		sc_error inner;
		int rc = sc_event_validate(&events[i], &inner);
		if (rc)
			return sc_error_set(err, rc, "event %zu: %s", i,
					    inner.message);
	}
	if (n)
		return sc_group_append(store, events, n, first, err);
	pthread_mutex_lock(&store->write_mu);
	bool stale = store->stale;
	uint64_t start = atomic_load(&store->last_position) + 1;
	pthread_mutex_unlock(&store->write_mu);
	if (stale)
		return sc_error_set(err, SC_ESTATE,
				    "the cache is behind the log after an "
				    "allocation failure; close and reopen the "
				    "store");
	if (first)
		*first = start;
	return 0;
}

size_t sc_group_queued(sc_store *store)
{
	size_t n = 0;
	pthread_mutex_lock(&store->group_mu);
	for (sc_append_req *r = store->group_head; r; r = r->next)
		n++;
	pthread_mutex_unlock(&store->group_mu);
	return n;
}
