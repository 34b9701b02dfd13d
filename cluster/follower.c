/*
 * The follower: a node applying the stream to its store.
 *
 * Exactly once. The node's offset (the stream sequence of the last
 * message applied) is written by a projector (store.h) in the append's own
 * LMDB write transaction, in the database "cluster": the events, the cache
 * and the offset commit together or not at all. A restart reads the offset
 * and asks the server for an ordered consumer starting at offset + 1.
 * An ordered consumer (ephemeral, no acks, flow control and heartbeats,
 * recreated by the client from the last sequence it delivered when it
 * detects a gap in the consumer sequence) delivers in stream order. A
 * durable consumer with acks would not do: measured with nats-server
 * 2.9.10, it redelivers an unacknowledged message after newer ones, and a
 * follower that drops `seq <= offset` would then lose events.
 *
 * One consumer for every partition set. Server 2.9 allows one filter
 * subject per consumer; one consumer per partition would need one offset
 * per partition and a merge of the consumers by stream sequence. This
 * node reads "STREAM.>" through one consumer and passes over the messages
 * of partitions it does not follow: it sees every stream sequence, so the
 * next message must be exactly offset + 1 and any gap (messages removed by
 * the stream's limits, or deleted) is detected, and one offset describes
 * the node. The price is bandwidth: every node receives every message,
 * while it stores and applies only its partitions'. Passed-over messages
 * do not move the saved offset (nothing is written for them): a restart
 * reads them again and passes them over again.
 *
 * The projector is registered by start and removed by stop
 * (sc_store_remove_projector), so the store can outlive the follower.
 *
 * Read-your-writes: `reached` (the last sequence applied or passed over)
 * is published under a mutex with a condition variable broadcast after
 * every message; sc_cluster_follower_wait sleeps on it.
 */
#include "cluster/cluster_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "common/internal.h"

#define DB_NAME	       "cluster"
#define KEY_SEQUENCE   "stream_sequence"
#define KEY_PENDING    "stream_pending"
#define KEY_STREAM     "stream"
#define KEY_PARTITIONS "partitions"
#define PROJECTOR_NAME "cluster-offset"
/* How long the thread blocks on the subscription before it looks at its
 * stop flag. */
#define NEXT_MSG_WAIT_MS 200

struct sc_cluster_follower {
	sc_store *store;
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	char stream[SC_CLUSTER_STREAM_MAX + 1];
	/* The followed partitions (copies); n == 0: all. */
	sc_str *parts;
	size_t nparts;
	sc_warn_fn warn;
	void *warn_ctx;
	MDB_dbi dbi;
	/* Set by the thread before each append, read by the projector. */
	uint64_t cur_seq, cur_pending;
	bool written;
	pthread_t thread;
	bool thread_started;
	bool projector_added;
	atomic_bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t reached; /* under mu */
	unsigned
	    waiters; /* under mu: threads inside sc_cluster_follower_wait */
	int status;  /* under mu: the error that stopped the thread */
	sc_error status_err;
	/* Counters, thread only. */
	uint64_t duplicates;
};

static void be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void warnf(sc_cluster_follower *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warnf(sc_cluster_follower *f, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (f->warn)
		f->warn(f->warn_ctx, msg);
	else
		fprintf(stderr, "statecache cluster: %s\n", msg);
}

/* A digest of the followed partition set, independent of its order: the
 * sum of the hashes of the (distinct) names; 0 for all partitions. */
static uint64_t partitions_digest(const sc_str *parts, size_t n)
{
	uint64_t d = 0;
	for (size_t i = 0; i < n; i++)
		d += XXH3_64bits(parts[i].ptr, parts[i].len) | 1;
	return d;
}

static bool follows(const sc_cluster_follower *f, sc_str p)
{
	if (f->nparts == 0)
		return true;
	for (size_t i = 0; i < f->nparts; i++)
		if (f->parts[i].len == p.len &&
		    (p.len == 0 || memcmp(f->parts[i].ptr, p.ptr, p.len) == 0))
			return true;
	return false;
}

/* ---- the offset projector ------------------------------------------------ */

static int offset_apply(void *ctx, MDB_txn *txn, const sc_event *ev,
			sc_error *err)
{
	(void)ev;
	sc_cluster_follower *f = ctx;
	if (f->written)
		return 0;
	uint8_t seq[8], pending[8];
	be64_put(seq, f->cur_seq);
	be64_put(pending, f->cur_pending);
	MDB_val k = {sizeof KEY_SEQUENCE - 1, (void *)KEY_SEQUENCE};
	MDB_val v = {8, seq};
	int rc = mdb_put(txn, f->dbi, &k, &v, 0);
	if (!rc) {
		k = (MDB_val){sizeof KEY_PENDING - 1, (void *)KEY_PENDING};
		v = (MDB_val){8, pending};
		rc = mdb_put(txn, f->dbi, &k, &v, 0);
	}
	if (rc == MDB_MAP_FULL)
		return sc_error_set(err, SC_EMAPFULL,
				    "saving the stream sequence: %s",
				    mdb_strerror(rc));
	if (rc)
		return sc_error_set(err, SC_ELMDB,
				    "saving the stream sequence: %s",
				    mdb_strerror(rc));
	f->written = true;
	return 0;
}

/* ---- the node's saved state --------------------------------------------- */

static int read_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out,
		    sc_error *err)
{
	MDB_val k = {strlen(key), (void *)key}, v;
	int rc = mdb_get(txn, dbi, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc)
		return sc_error_set(err, SC_ELMDB, "reading %s: %s", key,
				    mdb_strerror(rc));
	if (v.mv_size != 8)
		return sc_error_set(err, SC_ECORRUPT,
				    "cluster record %s has %zu bytes, not 8",
				    key, v.mv_size);
	*out = be64_get(v.mv_data);
	return 0;
}

int sc_cluster_node_state_get(sc_store *store, sc_cluster_node_state *out,
			      sc_error *err)
{
	memset(out, 0, sizeof *out);
	MDB_txn *txn;
	int rc = mdb_txn_begin(sc_store_env(store), NULL, MDB_RDONLY, &txn);
	if (rc)
		return sc_error_set(err, SC_ELMDB, "read transaction: %s",
				    mdb_strerror(rc));
	MDB_dbi dbi;
	rc = mdb_dbi_open(txn, DB_NAME, 0, &dbi);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return sc_error_set(err, SC_NOTFOUND,
				    "the store never followed a stream");
	}
	if (rc) {
		mdb_txn_abort(txn);
		return sc_error_set(err, SC_ELMDB, "opening database %s: %s",
				    DB_NAME, mdb_strerror(rc));
	}
	rc = read_u64(txn, dbi, KEY_SEQUENCE, &out->sequence, err);
	if (!rc)
		rc = read_u64(txn, dbi, KEY_PENDING, &out->pending, err);
	if (!rc) {
		MDB_val k = {sizeof KEY_STREAM - 1, (void *)KEY_STREAM}, v;
		if (mdb_get(txn, dbi, &k, &v) == 0 &&
		    v.mv_size < sizeof out->stream) {
			memcpy(out->stream, v.mv_data, v.mv_size);
			out->stream[v.mv_size] = '\0';
		}
	}
	mdb_txn_abort(txn);
	return rc;
}

/*
 * Open (create) the node's database and read its offset; a new node
 * records the stream and the partition set it follows, a known node must
 * follow the same. One short write transaction of its own, before the
 * follower appends anything (LMDB serializes it with the store's).
 */
static int node_open(sc_cluster_follower *f, uint64_t *offset, sc_error *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(sc_store_env(f->store), NULL, 0, &txn);
	if (rc)
		return sc_error_set(err,
				    rc == MDB_MAP_FULL ? SC_EMAPFULL : SC_ELMDB,
				    "write transaction: %s", mdb_strerror(rc));
	rc = mdb_dbi_open(txn, DB_NAME, MDB_CREATE, &f->dbi);
	if (rc) {
		mdb_txn_abort(txn);
		return sc_error_set(err, SC_ELMDB, "creating database %s: %s",
				    DB_NAME, mdb_strerror(rc));
	}
	uint64_t digest = 0, want = partitions_digest(f->parts, f->nparts);
	rc = read_u64(txn, f->dbi, KEY_SEQUENCE, offset, err);
	if (!rc)
		rc = read_u64(txn, f->dbi, KEY_PARTITIONS, &digest, err);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	MDB_val ks = {sizeof KEY_STREAM - 1, (void *)KEY_STREAM}, vs;
	int got = mdb_get(txn, f->dbi, &ks, &vs);
	if (got == 0) {
		if (vs.mv_size != strlen(f->stream) ||
		    memcmp(vs.mv_data, f->stream, vs.mv_size) != 0) {
			mdb_txn_abort(txn);
			return sc_error_set(
			    err, SC_EINVAL,
			    "this store follows stream "
			    "\"%.*s\", not \"%s\"",
			    (int)(vs.mv_size > 64 ? 64 : vs.mv_size),
			    (const char *)vs.mv_data, f->stream);
		}
		if (digest != want) {
			mdb_txn_abort(txn);
			return sc_error_set(
			    err, SC_EINVAL,
			    "this store follows another set of partitions: "
			    "a node keeps the set it started with (bootstrap "
			    "a new node for another set)");
		}
		/* Commit, not abort: a handle opened in an aborted
		 * transaction is closed with it. */
		rc = mdb_txn_commit(txn);
		if (rc)
			return sc_error_set(err, SC_ELMDB,
					    "opening database %s: %s", DB_NAME,
					    mdb_strerror(rc));
		return 0;
	}
	uint8_t d[8];
	be64_put(d, want);
	MDB_val kp = {sizeof KEY_PARTITIONS - 1, (void *)KEY_PARTITIONS};
	MDB_val vp = {8, d};
	vs = (MDB_val){strlen(f->stream), f->stream};
	rc = mdb_put(txn, f->dbi, &ks, &vs, 0);
	if (!rc)
		rc = mdb_put(txn, f->dbi, &kp, &vp, 0);
	if (!rc)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc)
		return sc_error_set(
		    err, rc == MDB_MAP_FULL ? SC_EMAPFULL : SC_ELMDB,
		    "recording the stream followed: %s", mdb_strerror(rc));
	return 0;
}

/* ---- the thread --------------------------------------------------------- */

static void publish_reached(sc_cluster_follower *f, uint64_t seq)
{
	pthread_mutex_lock(&f->mu);
	f->reached = seq;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

static void fail(sc_cluster_follower *f, const sc_error *e)
{
	pthread_mutex_lock(&f->mu);
	f->status = e->code ? e->code : SC_ESTATE;
	f->status_err = *e;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	warnf(f, "follower stopped: %s", e->message);
}

/* Check that the stream still holds `next`; SC_EBEHIND otherwise. */
static int check_retention(sc_cluster_follower *f, uint64_t next, sc_error *err)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, f->js, f->stream, NULL, &jerr);
	if (s != NATS_OK) {
		char what[128];
		snprintf(what, sizeof what, "stream %s%s", f->stream,
			 jerr == JSStreamNotFoundErr
			     ? " (create it with `statecache stream-create`)"
			     : "");
		return sc_cluster_nats_error(err, what, s, jerr);
	}
	uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	if (next > last + 1)
		return sc_error_set(err, SC_EINVAL,
				    "this node reached sequence %llu but "
				    "stream %s ends at %llu: the store "
				    "follows another stream of that name",
				    (unsigned long long)(next - 1), f->stream,
				    (unsigned long long)last);
	if (first > next)
		return sc_error_set(err, SC_EBEHIND,
				    "this node needs stream sequence %llu but "
				    "stream %s begins at %llu (its limits "
				    "removed the messages between): bootstrap "
				    "the node from a newer copy of another "
				    "node's store",
				    (unsigned long long)next, f->stream,
				    (unsigned long long)first);
	return 0;
}

/* Handle one message; 0, or an error that stops the follower. */
static int handle(sc_cluster_follower *f, natsMsg *msg, sc_error *err)
{
	jsMsgMetaData *meta = NULL;
	natsStatus s = natsMsg_GetMetaData(&meta, msg);
	if (s != NATS_OK)
		return sc_cluster_nats_error(err, "message metadata", s, 0);
	uint64_t seq = meta->Sequence.Stream, pending = meta->NumPending;
	int64_t stamp = meta->Timestamp;
	jsMsgMetaData_Destroy(meta);

	uint64_t offset;
	pthread_mutex_lock(&f->mu);
	offset = f->reached;
	pthread_mutex_unlock(&f->mu);
	if (seq <= offset) {
		f->duplicates++;
		warnf(f,
		      "dropped a second delivery of sequence %llu (the "
		      "node is at %llu)",
		      (unsigned long long)seq, (unsigned long long)offset);
		return 0;
	}
	if (seq != offset + 1) {
		int rc = check_retention(f, offset + 1, err);
		if (rc)
			return rc;
		return sc_error_set(err, SC_EBEHIND,
				    "gap: received stream sequence %llu after "
				    "%llu; the messages between are gone from "
				    "the stream: bootstrap the node from a "
				    "newer copy of another node's store",
				    (unsigned long long)seq,
				    (unsigned long long)offset);
	}

	const char *subject = natsMsg_GetSubject(msg);
	size_t plen = strlen(f->stream);
	if (strncmp(subject, f->stream, plen) != 0 || subject[plen] != '.')
		return sc_error_set(err, SC_ECORRUPT,
				    "sequence %llu: subject %.100s is not of "
				    "stream %s",
				    (unsigned long long)seq, subject,
				    f->stream);
	const char *token = subject + plen + 1;

	sc_cluster_batch b;
	int rc = sc_cluster_batch_decode(
	    natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), &b, err);
	if (rc) {
		sc_error e = *err;
		return sc_error_set(err, rc, "sequence %llu: %s",
				    (unsigned long long)seq, e.message);
	}
	/* The subject names the partition; the events must agree. */
	char want[SC_CLUSTER_TOKEN_MAX];
	for (size_t i = 0; i < b.n; i++) {
		rc = sc_cluster_partition_token(b.events[i].partition, want,
						err);
		if (!rc && strcmp(want, token) != 0)
			rc = sc_error_set(err, SC_ECORRUPT,
					  "sequence %llu: event %zu's "
					  "partition does not match the "
					  "subject %.100s",
					  (unsigned long long)seq, i, subject);
		if (rc) {
			sc_cluster_batch_free(&b);
			return rc;
		}
		if (b.events[i].time == 0)
			b.events[i].time = stamp;
	}
	if (follows(f, b.events[0].partition)) {
		f->cur_seq = seq;
		f->cur_pending = pending;
		f->written = false;
		sc_error e;
		rc = sc_store_append(f->store, b.events, b.n, NULL, &e);
		if (!rc && !f->written)
			rc = sc_error_set(&e, SC_ESTATE,
					  "the offset projector did not run");
		if (rc)
			sc_error_set(err, rc,
				     "applying stream sequence %llu: %s",
				     (unsigned long long)seq, e.message);
	}
	sc_cluster_batch_free(&b);
	if (!rc)
		publish_reached(f, seq);
	return rc;
}

/* An ordered consumer of the whole stream from `start`. */
static int subscribe(sc_cluster_follower *f, uint64_t start, sc_error *err)
{
	char subject[SC_CLUSTER_STREAM_MAX + 3];
	snprintf(subject, sizeof subject, "%s.>", f->stream);
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = f->stream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = start;
	jsErrCode jerr = 0;
	natsStatus s =
	    js_SubscribeSync(&f->sub, f->js, subject, NULL, &so, &jerr);
	if (s != NATS_OK) {
		f->sub = NULL;
		return sc_cluster_nats_error(err, "ordered consumer", s, jerr);
	}
	/* A catch-up may leave many messages waiting in the client; the
	 * consumer's flow control bounds them. */
	natsSubscription_SetPendingLimits(f->sub, -1, -1);
	return 0;
}

static void unsubscribe(sc_cluster_follower *f)
{
	if (!f->sub)
		return;
	natsSubscription_Unsubscribe(f->sub);
	natsSubscription_Destroy(f->sub);
	f->sub = NULL;
}

/* Pause between attempts to (re)create the consumer, watching stop. */
static void retry_pause(sc_cluster_follower *f)
{
	for (int i = 0; i < 5 && !atomic_load(&f->stop); i++) {
		struct timespec d = {0, 100 * 1000 * 1000};
		nanosleep(&d, NULL);
	}
}

static void *follower_main(void *arg)
{
	sc_cluster_follower *f = arg;
	while (!atomic_load(&f->stop)) {
		sc_error e;
		if (!f->sub) {
			/* (Re)start after the last sequence reached. A
			 * server restart or a lost connection lands here;
			 * the consumer is ephemeral, so a new one is made. */
			uint64_t from = sc_cluster_follower_sequence(f) + 1;
			if (subscribe(f, from, &e)) {
				warnf(f, "%s; trying again", e.message);
				retry_pause(f);
				continue;
			}
		}
		natsMsg *msg = NULL;
		natsStatus s =
		    natsSubscription_NextMsg(&msg, f->sub, NEXT_MSG_WAIT_MS);
		if (s == NATS_TIMEOUT)
			continue;
		if (s != NATS_OK) {
			/* The ordered consumer recovers from gaps and lost
			 * heartbeats itself; on any other failure a new
			 * consumer starts after the last sequence reached. */
			if (s == NATS_MISSED_HEARTBEAT || s == NATS_MISMATCH ||
			    s == NATS_SLOW_CONSUMER) {
				warnf(f, "consumer: %s (recovering)",
				      natsStatus_GetText(s));
				continue;
			}
			if (atomic_load(&f->stop))
				break;
			warnf(f,
			      "reading the stream: %s; starting a new "
			      "consumer",
			      natsStatus_GetText(s));
			unsubscribe(f);
			retry_pause(f);
			continue;
		}
		int rc = handle(f, msg, &e);
		natsMsg_Destroy(msg);
		if (rc) {
			fail(f, &e);
			break;
		}
	}
	return NULL;
}

/* ---- start, wait, stop -------------------------------------------------- */

static void follower_free(sc_cluster_follower *f)
{
	if (f->projector_added)
		sc_store_remove_projector(f->store, PROJECTOR_NAME);
	unsubscribe(f);
	if (f->js)
		jsCtx_Destroy(f->js);
	if (f->nc)
		natsConnection_Destroy(f->nc);
	for (size_t i = 0; i < f->nparts; i++)
		sc_free((void *)f->parts[i].ptr);
	sc_free(f->parts);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->mu);
	sc_free(f);
}

int sc_cluster_follower_start(sc_store *store,
			      const sc_cluster_follower_options *opt,
			      sc_cluster_follower **out, sc_error *err)
{
	*out = NULL;
	if (!store || !opt)
		return sc_error_set(err, SC_EINVAL, "no store or options");
	const char *name = sc_cluster_stream_name(&opt->cluster, err);
	if (!name)
		return SC_EINVAL;
	if (opt->npartitions && !opt->partitions)
		return sc_error_set(err, SC_EINVAL, "partitions is NULL");
	sc_cluster_follower *f = sc_calloc(1, sizeof *f);
	if (!f)
		return sc_error_set(err, ENOMEM, "out of memory");
	pthread_mutex_init(&f->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
	f->store = store;
	f->warn = opt->warn;
	f->warn_ctx = opt->warn_ctx;
	snprintf(f->stream, sizeof f->stream, "%s", name);
	int rc = 0;
	if (opt->npartitions) {
		f->parts = sc_calloc(opt->npartitions, sizeof *f->parts);
		if (!f->parts)
			rc = sc_error_set(err, ENOMEM, "out of memory");
	}
	for (size_t i = 0; !rc && i < opt->npartitions; i++) {
		sc_str p = opt->partitions[i];
		if (p.len > SC_EVENT_FIELD_MAX || (p.len && !p.ptr)) {
			rc = sc_error_set(err, SC_EINVAL,
					  "partition %zu: at most %d bytes", i,
					  SC_EVENT_FIELD_MAX);
			break;
		}
		if (follows(f, p) && f->nparts)
			continue; /* named twice */
		char *copy = sc_malloc(p.len + 1);
		if (!copy) {
			rc = sc_error_set(err, ENOMEM, "out of memory");
			break;
		}
		if (p.len)
			memcpy(copy, p.ptr, p.len);
		f->parts[f->nparts++] = (sc_str){copy, p.len};
	}
	uint64_t offset = 0;
	if (!rc)
		rc = node_open(f, &offset, err);
	if (!rc) {
		sc_projector pr = {
		    .name = PROJECTOR_NAME, .apply = offset_apply, .ctx = f};
		rc = sc_store_add_projector(store, &pr, err);
		f->projector_added = rc == 0;
	}
	if (!rc)
		rc = sc_cluster_connect(&opt->cluster, &f->nc, &f->js, err);
	/* The stream must hold what the node needs next. A request that
	 * times out (a leader election, a busy server) is tried again. */
	for (int attempt = 0; !rc; attempt++) {
		rc = check_retention(f, offset + 1, err);
		if (rc != SC_ENATS || attempt == 4)
			break;
		warnf(f, "%s; trying again", err->message);
		rc = 0;
		retry_pause(f);
	}
	if (!rc && subscribe(f, offset + 1, err) != 0) {
		/* The thread tries again. */
		warnf(f, "%s; trying again", err->message);
		sc_error_clear(err);
	}
	if (!rc) {
		f->reached = offset;
		if (pthread_create(&f->thread, NULL, follower_main, f) != 0)
			rc = sc_error_set(err, EAGAIN,
					  "cannot start the follower thread");
		else
			f->thread_started = true;
	}
	if (rc) {
		follower_free(f);
		return rc;
	}
	*out = f;
	return 0;
}

int sc_cluster_follower_wait(sc_cluster_follower *f, uint64_t seq,
			     int64_t timeout_ms, sc_error *err)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms >= 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
	}
	int rc = 0;
	pthread_mutex_lock(&f->mu);
	f->waiters++;
	while (f->reached < seq && !f->status) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&f->cond, &f->mu);
			continue;
		}
		if (pthread_cond_timedwait(&f->cond, &f->mu, &deadline) ==
		    ETIMEDOUT) {
			if (f->reached >= seq || f->status)
				break;
			rc = sc_error_set(err, ETIMEDOUT,
					  "node reached stream sequence %llu, "
					  "not %llu, within %lld ms",
					  (unsigned long long)f->reached,
					  (unsigned long long)seq,
					  (long long)timeout_ms);
			break;
		}
	}
	if (!rc && f->reached < seq && f->status) {
		rc = f->status;
		if (err)
			*err = f->status_err;
	}
	if (--f->waiters == 0)
		pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	return rc;
}

uint64_t sc_cluster_follower_sequence(sc_cluster_follower *f)
{
	pthread_mutex_lock(&f->mu);
	uint64_t r = f->reached;
	pthread_mutex_unlock(&f->mu);
	return r;
}

int sc_cluster_follower_status(sc_cluster_follower *f, sc_error *err)
{
	pthread_mutex_lock(&f->mu);
	int rc = f->status;
	if (err) {
		if (rc)
			*err = f->status_err;
		else
			sc_error_clear(err);
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

void sc_cluster_follower_stop(sc_cluster_follower *f)
{
	if (!f)
		return;
	atomic_store(&f->stop, true);
	if (f->thread_started)
		pthread_join(f->thread, NULL);
	/* Wake the waiters with "stopped" and let them leave before the
	 * memory goes. */
	pthread_mutex_lock(&f->mu);
	if (!f->status) {
		f->status = SC_ESTATE;
		sc_error_set(&f->status_err, SC_ESTATE,
			     "the follower was stopped at stream sequence %llu",
			     (unsigned long long)f->reached);
	}
	pthread_cond_broadcast(&f->cond);
	while (f->waiters)
		pthread_cond_wait(&f->cond, &f->mu);
	pthread_mutex_unlock(&f->mu);
	follower_free(f);
}
