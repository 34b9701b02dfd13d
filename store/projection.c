/*
 * Projection runners (include/statecache/projection.h).
 *
 * Offsets live in meta, under "projection/NAME": offset (8 bytes BE) ++
 * kind (1 byte) ++ state (1 byte, the last the runner recorded). Keeping
 * them in meta (as the projectors' "projector/NAME") needs no new database,
 * so no format change: stores of any format take projections as they are.
 * A projection's databases are LMDB databases named "projection/NAME/DB",
 * which a reset finds by listing the environment's main database.
 *
 * The runner thread reads the log through a live query from offset + 1
 * and hands batches to the handler:
 *   exactly-once   one sc_store_write per batch (under write_mu): check
 *                  that the stored offset is still the one the runner
 *                  holds (else adopt it: another process reset it), call
 *                  the handler with the transaction, put the new offset.
 *   at-least-once  the handler, then a save (the same check, then the
 *                  put) when save_every events or save_ms passed.
 *   lanes          the batch is split by key over the lane threads; the
 *                  runner waits until every lane finished it (a barrier
 *                  per batch), so the batch's end is a position below
 *                  which every lane has finished: only then is it
 *                  counted handled, and only handled positions are saved.
 *
 * Locks: p->mu guards the control fields (stop, pause, seek, state,
 * counters) and p->q (so that sc_query_cancel from another thread never
 * meets a closed query). The runner never holds p->mu while it calls the
 * handler. Lock order: store->write_mu, then p->mu (a batch's transaction
 * reads the offset the runner holds); nothing takes write_mu under p->mu.
 */
#include "statecache/projection.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/internal.h"
#include "statecache/query.h"
#include "store/store_internal.h"

#define KEY_PREFIX	   "projection/"
#define KEY_PREFIX_LEN	   (sizeof KEY_PREFIX - 1)
#define RECORD_LEN	   10
#define BACKOFF_MAX_MS	   30000u
#define DEFAULT_BATCH	   256
#define DEFAULT_SAVE_EVERY 1024
#define DEFAULT_SAVE_MS	   1000
#define DEFAULT_RETRIES	   5
#define DEFAULT_BACKOFF	   10

/* Internal results of one attempt (never returned to callers). */
#define R_ADOPT	      (INT_MIN + 1) /* the stored offset moved: adopt it */
#define R_INTERRUPTED (INT_MIN + 2) /* stop or seek during a backoff */

typedef struct lane {
	struct sc_projection *p;
	pthread_t thread;
	const sc_event **evs;
	size_t n, cap;
} lane;

struct sc_projection {
	sc_store *store;
	char name[SC_PROJECTION_NAME_MAX + 1];
	sc_projection_options o;
	char dbnames[SC_PROJECTION_DBS_MAX][SC_PROJECTION_NAME_MAX + 1];
	MDB_dbi dbis[SC_PROJECTION_DBS_MAX];
	size_t ndbs;
	pthread_t thread;
	bool started;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* state changes: pause, stop, seek, progress */
	/* under mu */
	bool stop, paused, seek_req, seek_done, exited;
	uint64_t seek_to;
	int seek_rc;
	sc_error seek_err;
	sc_projection_state state;
	uint64_t offset, handled, skipped, retries;
	sc_error fail;
	sc_query *q;

	/* runner only */
	uint8_t recorded; /* the state the record holds, as last written */
	uint64_t unsaved;
	int64_t saved_at_ms;
	uint64_t adopt_to;

	/* lanes (at-least-once, lanes > 1) */
	lane *lanes;
	unsigned nlanes, lanes_started;
	uint64_t lane_gen;  /* under mu: batches handed out */
	unsigned lane_busy; /* under mu: lanes still on this batch */
	bool lane_quit;	    /* under mu */
	int lane_rc;	    /* under mu: the first lane failure */
	sc_error lane_err;
	pthread_cond_t lane_cv;
};

/* ---- names and records --------------------------------------------------- */

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 1 && n <= SC_PROJECTION_NAME_MAX && !strchr(s, '/');
}

static size_t record_key(uint8_t *k, const char *name)
{
	size_t n = strlen(name);
	memcpy(k, KEY_PREFIX, KEY_PREFIX_LEN);
	memcpy(k + KEY_PREFIX_LEN, name, n);
	return KEY_PREFIX_LEN + n;
}

typedef struct record {
	uint64_t offset;
	uint8_t kind, state;
} record;

/* Read the record of `name` in txn. Returns 0, SC_NOTFOUND, SC_ECORRUPT
 * or SC_ELMDB. */
static int record_get(sc_store *s, MDB_txn *txn, const char *name, record *r,
		      sc_error *err)
{
	uint8_t kb[KEY_PREFIX_LEN + SC_PROJECTION_NAME_MAX];
	MDB_val k = {record_key(kb, name), kb}, v;
	int rc = mdb_get(txn, s->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_NOTFOUND,
				    "no projection named %s in this store",
				    name);
	if (rc)
		return sc_store_lmdb_error(err, rc,
					   "reading a projection offset");
	if (v.mv_size != RECORD_LEN)
		return sc_error_set(err, SC_ECORRUPT,
				    "the offset record of projection %s is %zu "
				    "bytes, expected %d; the store is damaged",
				    name, v.mv_size, RECORD_LEN);
	const uint8_t *b = v.mv_data;
	r->offset = sc_be64_get(b);
	r->kind = b[8];
	r->state = b[9];
	return 0;
}

static int record_put(sc_store *s, MDB_txn *txn, const char *name,
		      const record *r)
{
	uint8_t kb[KEY_PREFIX_LEN + SC_PROJECTION_NAME_MAX], vb[RECORD_LEN];
	sc_be64_put(vb, r->offset);
	vb[8] = r->kind;
	vb[9] = r->state;
	MDB_val k = {record_key(kb, name), kb}, v = {RECORD_LEN, vb};
	return mdb_put(txn, s->dbi_meta, &k, &v, 0);
}

static size_t db_name(char *out, const char *name, const char *db)
{
	return (size_t)sprintf(out, KEY_PREFIX "%s/%s", name, db);
}

/* Empty every database "projection/NAME/..." of the environment in txn.
 * Returns an LMDB code. */
static int drop_dbs(MDB_txn *txn, const char *name)
{
	MDB_dbi main;
	int rc = mdb_dbi_open(txn, NULL, 0, &main);
	if (rc)
		return rc;
	char prefix[KEY_PREFIX_LEN + SC_PROJECTION_NAME_MAX + 2];
	size_t plen = (size_t)sprintf(prefix, KEY_PREFIX "%s/", name);
	MDB_cursor *cur;
	rc = mdb_cursor_open(txn, main, &cur);
	if (rc)
		return rc;
	MDB_val k = {plen, prefix}, v;
	char found[2 * SC_PROJECTION_NAME_MAX + KEY_PREFIX_LEN + 2];
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0 ||
		    k.mv_size >= sizeof found)
			break;
		memcpy(found, k.mv_data, k.mv_size);
		found[k.mv_size] = 0;
		MDB_dbi dbi;
		rc = mdb_dbi_open(txn, found, 0, &dbi);
		if (rc == 0)
			rc = mdb_drop(txn, dbi, 0);
		if (rc)
			break;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The time of the event at pos in txn (0 when it cannot be read). */
static int64_t event_time(sc_store *s, MDB_txn *txn, uint64_t pos)
{
	uint8_t kb[8];
	sc_be64_put(kb, pos);
	MDB_val k = {8, kb}, v;
	if (mdb_get(txn, s->dbi_events, &k, &v))
		return 0;
	sc_decoded_event d;
	sc_error e;
	if (sc_event_decode(v.mv_data, v.mv_size, pos, &d, &e))
		return 0;
	int64_t t = d.ev.time;
	sc_decoded_event_free(&d);
	return t;
}

/* Lag of a projection at `done` in txn: events and seconds behind. */
static void lag_in(sc_store *s, MDB_txn *txn, uint64_t done, uint64_t *last,
		   uint64_t *events, double *seconds)
{
	uint64_t l = 0;
	sc_error e;
	if (sc_store_meta_last_get(s, txn, &l, &e))
		l = atomic_load(&s->last_position);
	*last = l;
	*events = l > done ? l - done : 0;
	*seconds = 0;
	if (l > done) {
		int64_t a = event_time(s, txn, done + 1),
			b = event_time(s, txn, l);
		if (a && b > a)
			*seconds = (double)(b - a) / 1e9;
	}
}

const char *sc_projection_state_name(sc_projection_state st)
{
	switch (st) {
	case SC_PROJECTION_RUNNING:
		return "running";
	case SC_PROJECTION_PAUSED:
		return "paused";
	case SC_PROJECTION_STOPPED:
		return "stopped";
	case SC_PROJECTION_FAILED:
		return "failed";
	}
	return "unknown";
}

const char *sc_projection_kind_name(sc_projection_kind k)
{
	return k == SC_PROJECTION_EXACTLY_ONCE	  ? "exactly-once"
	       : k == SC_PROJECTION_AT_LEAST_ONCE ? "at-least-once"
						  : "unknown";
}

/* ---- writes -------------------------------------------------------------- */

/* Run body through sc_store_write under the writer lock. */
static int write_locked(sc_store *s, const char *what, sc_store_txn_fn body,
			void *ctx, sc_error *err)
{
	pthread_mutex_lock(&s->write_mu);
	int rc = sc_store_write(s, what, body, NULL, ctx, err);
	pthread_mutex_unlock(&s->write_mu);
	return rc;
}

typedef struct batch_ctx {
	sc_projection *p;
	const sc_event *const *evs;
	size_t n;
	bool call;	  /* call the handler (false: skip, save only) */
	uint64_t to;	  /* the offset to save */
	uint8_t state;	  /* the state to record */
	bool drop;	  /* empty the databases first (seek to 0) */
	bool check;	  /* adopt a stored offset that moved */
	uint64_t adopted; /* R_ADOPT: the stored offset */
} batch_ctx;

static int batch_body(sc_store *s, MDB_txn *txn, void *vctx, sc_error *err)
{
	batch_ctx *c = vctx;
	sc_projection *p = c->p;
	record r;
	int rc = record_get(s, txn, p->name, &r, err);
	if (rc && rc != SC_NOTFOUND)
		return rc;
	pthread_mutex_lock(&p->mu);
	uint64_t held = p->offset;
	pthread_mutex_unlock(&p->mu);
	if (c->check && rc == 0 && r.offset != held) {
		c->adopted = r.offset;
		return R_ADOPT;
	}
	if (c->drop) {
		rc = drop_dbs(txn, p->name);
		if (rc)
			return rc == MDB_MAP_FULL
				   ? rc
				   : sc_store_lmdb_error(err, rc,
							 "emptying the "
							 "projection's "
							 "databases");
	}
	if (c->call) {
		sc_killpoint("projection_handler");
		rc = p->o.handler(p->o.ctx, p, txn, c->evs, c->n, err);
		if (rc)
			return rc;
		sc_killpoint("projection_before_save");
	}
	r.offset = c->to;
	r.kind = (uint8_t)p->o.kind;
	r.state = c->state;
	rc = record_put(s, txn, p->name, &r);
	if (rc)
		return rc == MDB_MAP_FULL
			   ? rc
			   : sc_store_lmdb_error(err, rc,
						 "saving a projection "
						 "offset");
	return 0;
}

static uint8_t cur_state(sc_projection *p)
{
	pthread_mutex_lock(&p->mu);
	uint8_t st = (uint8_t)p->state;
	pthread_mutex_unlock(&p->mu);
	return st;
}

/* Save offset `to` (with the state) after checking the stored one. */
static int save_offset(sc_projection *p, uint64_t to, bool drop, bool check,
		       sc_error *err)
{
	batch_ctx c = {.p = p,
		       .to = to,
		       .state = cur_state(p),
		       .drop = drop,
		       .check = check};
	int rc = write_locked(p->store, "saving a projection offset",
			      batch_body, &c, err);
	if (rc == R_ADOPT) {
		p->adopt_to = c.adopted;
		return rc;
	}
	if (rc)
		return rc;
	sc_killpoint("projection_after_save");
	pthread_mutex_lock(&p->mu);
	p->offset = to;
	pthread_mutex_unlock(&p->mu);
	p->unsaved = 0;
	p->recorded = c.state;
	return 0;
}

/* ---- one batch, with the error policy ------------------------------------ */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait ms milliseconds or until stop or seek; true when interrupted. */
static bool backoff(sc_projection *p, unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&p->mu);
	while (!p->stop && !p->seek_req)
		if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
			break;
	bool out = p->stop || p->seek_req;
	pthread_mutex_unlock(&p->mu);
	return out;
}

/* One attempt on evs[0..n): exactly-once in a transaction that saves the
 * offset too; at-least-once the handler alone. */
static int attempt(sc_projection *p, const sc_event *const *evs, size_t n,
		   bool call, sc_error *err)
{
	if (p->o.kind == SC_PROJECTION_EXACTLY_ONCE) {
		batch_ctx c = {.p = p,
			       .evs = evs,
			       .n = n,
			       .call = call,
			       .to = evs[n - 1]->position,
			       .state = cur_state(p),
			       .check = true};
		int rc = write_locked(p->store, "a projection's batch",
				      batch_body, &c, err);
		if (rc == R_ADOPT)
			p->adopt_to = c.adopted;
		if (rc == 0) {
			sc_killpoint("projection_after_save");
			pthread_mutex_lock(&p->mu);
			p->offset = evs[n - 1]->position;
			pthread_mutex_unlock(&p->mu);
			p->recorded = c.state;
		}
		return rc;
	}
	if (!call)
		return 0;
	sc_killpoint("projection_handler");
	int rc = p->o.handler(p->o.ctx, p, NULL, evs, n, err);
	if (rc == 0)
		sc_killpoint("projection_before_save");
	return rc;
}

static void count(sc_projection *p, uint64_t *field)
{
	pthread_mutex_lock(&p->mu);
	(*field)++;
	pthread_mutex_unlock(&p->mu);
}

/*
 * Handle evs[0..n) under the error policy. Returns 0 (handled, or failed
 * events skipped), R_ADOPT, R_INTERRUPTED, or the error that made the
 * projection fail (err set).
 */
static int handle(sc_projection *p, const sc_event *const *evs, size_t n,
		  sc_error *err)
{
	unsigned wait = p->o.backoff_ms;
	for (unsigned tries = 0;; tries++) {
		sc_error_clear(err);
		int rc = attempt(p, evs, n, true, err);
		if (rc == 0 || rc == R_ADOPT)
			return rc;
		if (rc > 0 && !err->message[0])
			sc_error_set(err, rc, "the handler failed: %s",
				     sc_strerror(rc));
		if (p->o.on_error == SC_PROJECTION_SKIP) {
			if (n > 1) {
				for (size_t i = 0; i < n; i++) {
					int r1 = handle(p, evs + i, 1, err);
					if (r1)
						return r1;
				}
				return 0;
			}
			count(p, &p->skipped);
			return attempt(p, evs, 1, false, err);
		}
		if (tries >= p->o.max_retries) {
			sc_error e = *err;
			return sc_error_set(
			    err, rc,
			    "projection %s failed on positions "
			    "%llu..%llu after %u retries: %s",
			    p->name, (unsigned long long)evs[0]->position,
			    (unsigned long long)evs[n - 1]->position, tries,
			    e.message);
		}
		count(p, &p->retries);
		if (backoff(p, wait))
			return R_INTERRUPTED;
		wait = wait >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : wait * 2;
	}
}

/* ---- lanes --------------------------------------------------------------- */

static size_t lane_of(sc_projection *p, const sc_event *ev)
{
	sc_str k = p->o.key ? p->o.key(p->o.ctx, ev) : ev->entity;
	if (!k.len)
		k = ev->entity;
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < k.len; i++)
		h = (h ^ (uint8_t)k.ptr[i]) * 1099511628211ull;
	return (size_t)(h % p->nlanes);
}

static void *lane_main(void *arg)
{
	lane *l = arg;
	sc_projection *p = l->p;
	uint64_t seen = 0;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->lane_quit && p->lane_gen == seen)
			pthread_cond_wait(&p->lane_cv, &p->mu);
		if (p->lane_quit) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->lane_gen;
		pthread_mutex_unlock(&p->mu);
		int rc = 0;
		sc_error e;
		sc_error_clear(&e);
		for (size_t i = 0; i < l->n && !rc; i += p->o.batch_max) {
			size_t m = l->n - i < p->o.batch_max ? l->n - i
							     : p->o.batch_max;
			rc = handle(p, l->evs + i, m, &e);
		}
		pthread_mutex_lock(&p->mu);
		if (rc && !p->lane_rc) {
			p->lane_rc = rc;
			p->lane_err = e;
		}
		if (--p->lane_busy == 0)
			pthread_cond_broadcast(&p->lane_cv);
		pthread_mutex_unlock(&p->mu);
	}
}

/* Hand evs[0..n) to the lanes and wait until every lane finished. */
static int lanes_run(sc_projection *p, const sc_event *const *evs, size_t n,
		     sc_error *err)
{
	for (unsigned i = 0; i < p->nlanes; i++)
		p->lanes[i].n = 0;
	for (size_t i = 0; i < n; i++) {
		lane *l = &p->lanes[lane_of(p, evs[i])];
		if (l->n == l->cap) {
			size_t cap = l->cap;
			void *a = l->evs;
			if (sc_grow_array(&a, &cap, l->n + 1, sizeof *l->evs))
				return sc_error_set(err, ENOMEM,
						    "out of memory routing "
						    "events to lanes");
			l->evs = a;
			l->cap = cap;
		}
		l->evs[l->n++] = evs[i];
	}
	pthread_mutex_lock(&p->mu);
	p->lane_rc = 0;
	p->lane_busy = p->nlanes;
	p->lane_gen++;
	pthread_cond_broadcast(&p->lane_cv);
	while (p->lane_busy)
		pthread_cond_wait(&p->lane_cv, &p->mu);
	int rc = p->lane_rc;
	if (rc)
		*err = p->lane_err;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* ---- the runner ---------------------------------------------------------- */

static int query_open(sc_projection *p, uint64_t after, sc_error *err)
{
	sc_query_spec spec = {.kind = SC_QUERY_ALL,
			      .from = after + 1,
			      .live = true,
			      .poll_ms = p->o.poll_ms};
	sc_query *q;
	int rc = sc_query_open(p->store, &spec, &q, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mu);
	p->q = q;
	if (p->stop || p->seek_req)
		sc_query_cancel(q); /* asked while it was closed */
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static void query_close(sc_projection *p)
{
	pthread_mutex_lock(&p->mu);
	sc_query_close(p->q);
	p->q = NULL;
	pthread_mutex_unlock(&p->mu);
}

/* Go on after `to`: the query restarts there (the offset is saved). */
static int restart_at(sc_projection *p, uint64_t to, sc_error *err)
{
	query_close(p);
	pthread_mutex_lock(&p->mu);
	p->offset = p->handled = to;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	p->unsaved = 0;
	return query_open(p, to, err);
}

/* Enter state failed (waiters learn it when the runner has exited). */
static void fail(sc_projection *p, int rc, const sc_error *err)
{
	pthread_mutex_lock(&p->mu);
	p->state = SC_PROJECTION_FAILED;
	p->fail = *err;
	p->fail.code = rc;
	pthread_mutex_unlock(&p->mu);
}

/* Serve a seek request (under no lock); true to go on. */
static bool serve_seek(sc_projection *p, uint64_t to)
{
	sc_error e;
	sc_error_clear(&e);
	int rc = 0;
	if (to > atomic_load(&p->store->last_position))
		rc = sc_error_set(
		    &e, SC_EINVAL,
		    "cannot seek projection %s to %llu: the log "
		    "ends at %llu",
		    p->name, (unsigned long long)to,
		    (unsigned long long)atomic_load(&p->store->last_position));
	if (!rc) {
		bool drop = to == 0 && p->o.kind == SC_PROJECTION_EXACTLY_ONCE;
		rc = save_offset(p, to, drop, false, &e);
		if (!rc)
			rc = restart_at(p, to, &e);
	}
	pthread_mutex_lock(&p->mu);
	p->seek_done = true;
	p->seek_rc = rc;
	p->seek_err = e;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return true;
}

/* Wait while paused; returns false to stop; serves seeks. */
static bool gate(sc_projection *p, bool *seeked)
{
	*seeked = false;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			return false;
		}
		if (p->seek_req) {
			uint64_t to = p->seek_to;
			p->seek_req = false;
			pthread_mutex_unlock(&p->mu);
			serve_seek(p, to);
			*seeked = true;
			pthread_mutex_lock(&p->mu);
			continue;
		}
		if (!p->paused)
			break;
		if (p->recorded != SC_PROJECTION_PAUSED) {
			/* Record the pause (and what was handled) for
			 * sc_projection_list in other processes. */
			uint64_t h = p->handled;
			pthread_mutex_unlock(&p->mu);
			sc_error e;
			if (save_offset(p, h, false, true, &e) == R_ADOPT &&
			    restart_at(p, p->adopt_to, &e) == 0)
				*seeked = true;
			p->recorded = SC_PROJECTION_PAUSED;
			pthread_mutex_lock(&p->mu);
			continue;
		}
		pthread_cond_wait(&p->cv, &p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return true;
}

static int run_batch(sc_projection *p, const sc_event *const *evs, size_t n,
		     sc_error *err)
{
	if (p->nlanes > 1)
		return lanes_run(p, evs, n, err);
	return handle(p, evs, n, err);
}

static void *runner_main(void *arg)
{
	sc_projection *p = arg;
	sc_error e;
	sc_error_clear(&e);
	const sc_event **evs = sc_calloc(p->o.batch_max, sizeof *evs);
	int rc = evs ? 0 : sc_error_set(&e, ENOMEM, "out of memory");
	p->saved_at_ms = mono_ms();
	bool alo = p->o.kind == SC_PROJECTION_AT_LEAST_ONCE;
	while (!rc) {
		bool seeked;
		if (!gate(p, &seeked))
			break;
		int timeout = -1;
		if (alo && p->unsaved) {
			int64_t left =
			    p->saved_at_ms + (int64_t)p->o.save_ms - mono_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		size_t n = 0;
		rc = sc_query_next_batch(p->q, timeout, evs, p->o.batch_max, &n,
					 &e);
		if (rc == ETIMEDOUT || rc == ECANCELED) {
			rc = 0;
			pthread_mutex_lock(&p->mu);
			bool again = p->seek_req && !p->stop;
			pthread_mutex_unlock(&p->mu);
			if (again)
				continue;
			if (alo && p->unsaved) {
				uint64_t h;
				pthread_mutex_lock(&p->mu);
				h = p->handled;
				pthread_mutex_unlock(&p->mu);
				rc = save_offset(p, h, false, true, &e);
				p->saved_at_ms = mono_ms();
				if (rc == R_ADOPT)
					rc = restart_at(p, p->adopt_to, &e);
			}
			continue;
		}
		if (rc)
			break;
		if (!gate(p, &seeked))
			break;
		if (seeked)
			continue; /* the batch read belongs to the old query */
		rc = run_batch(p, evs, n, &e);
		if (rc == R_INTERRUPTED) {
			rc = 0;
			/* Deliver these again from the last handled one. */
			pthread_mutex_lock(&p->mu);
			uint64_t h = p->handled;
			bool stopping = p->stop;
			pthread_mutex_unlock(&p->mu);
			if (!stopping)
				rc = restart_at(p, h, &e);
			continue;
		}
		if (rc == R_ADOPT) {
			rc = restart_at(p, p->adopt_to, &e);
			continue;
		}
		if (rc)
			break;
		pthread_mutex_lock(&p->mu);
		p->handled = evs[n - 1]->position;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		if (alo) {
			p->unsaved += n;
			if (p->unsaved >= p->o.save_every ||
			    mono_ms() - p->saved_at_ms >=
				(int64_t)p->o.save_ms) {
				rc = save_offset(p, evs[n - 1]->position, false,
						 true, &e);
				p->saved_at_ms = mono_ms();
				if (rc == R_ADOPT)
					rc = restart_at(p, p->adopt_to, &e);
			}
		}
	}
	sc_free(evs);
	if (rc) {
		fail(p, rc, &e);
		/* Record the failure, and what was handled before it. */
		sc_error e2;
		(void)save_offset(p, p->handled, false, true, &e2);
	}
	pthread_mutex_lock(&p->mu);
	p->exited = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

typedef struct start_ctx {
	sc_projection *p;
	record r;
	bool have;
} start_ctx;

static int start_body(sc_store *s, MDB_txn *txn, void *vctx, sc_error *err)
{
	start_ctx *c = vctx;
	sc_projection *p = c->p;
	int rc = record_get(s, txn, p->name, &c->r, err);
	if (rc && rc != SC_NOTFOUND)
		return rc;
	c->have = rc == 0;
	if (!c->have)
		c->r.offset = 0;
	if (c->have && c->r.kind != (uint8_t)p->o.kind)
		return sc_error_set(
		    err, SC_EINVAL,
		    "projection %s is %s in this store; reset "
		    "it under another name to change its kind",
		    p->name,
		    sc_projection_kind_name((sc_projection_kind)c->r.kind));
	for (size_t i = 0; i < p->ndbs; i++) {
		char full[KEY_PREFIX_LEN + 2 * SC_PROJECTION_NAME_MAX + 2];
		db_name(full, p->name, p->dbnames[i]);
		rc = mdb_dbi_open(txn, full, MDB_CREATE, &p->dbis[i]);
		if (rc)
			return rc == MDB_MAP_FULL
				   ? rc
				   : sc_store_lmdb_error(err, rc,
							 "creating a "
							 "projection's "
							 "database");
	}
	c->r.kind = (uint8_t)p->o.kind;
	c->r.state = (uint8_t)(p->o.start_paused ? SC_PROJECTION_PAUSED
						 : SC_PROJECTION_RUNNING);
	rc = record_put(s, txn, p->name, &c->r);
	if (rc)
		return rc == MDB_MAP_FULL
			   ? rc
			   : sc_store_lmdb_error(err, rc,
						 "writing a projection offset");
	return 0;
}

static void lanes_stop(sc_projection *p)
{
	if (!p->lanes)
		return;
	pthread_mutex_lock(&p->mu);
	p->lane_quit = true;
	pthread_cond_broadcast(&p->lane_cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->lanes_started; i++)
		pthread_join(p->lanes[i].thread, NULL);
	for (unsigned i = 0; i < p->nlanes; i++)
		sc_free(p->lanes[i].evs);
	sc_free(p->lanes);
	p->lanes = NULL;
}

static void destroy(sc_projection *p)
{
	lanes_stop(p);
	query_close(p);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	pthread_cond_destroy(&p->lane_cv);
	sc_free(p);
}

int sc_projection_start(sc_store *store, const sc_projection_options *opts,
			sc_projection **out, sc_error *err)
{
	if (!store || !opts || !opts->handler || !out)
		return sc_error_set(
		    err, SC_EINVAL,
		    "sc_projection_start needs a store, "
		    "options with a handler and an out pointer");
	if (!name_ok(opts->name))
		return sc_error_set(err, SC_EINVAL,
				    "a projection needs a name of 1..%d bytes "
				    "without '/'",
				    SC_PROJECTION_NAME_MAX);
	if (opts->kind != SC_PROJECTION_EXACTLY_ONCE &&
	    opts->kind != SC_PROJECTION_AT_LEAST_ONCE)
		return sc_error_set(err, SC_EINVAL,
				    "projection %s: unknown kind %d",
				    opts->name, (int)opts->kind);
	if (opts->lanes > 1 && opts->kind == SC_PROJECTION_EXACTLY_ONCE)
		return sc_error_set(
		    err, SC_EINVAL,
		    "projection %s: lanes need the at-least-once "
		    "kind (exactly-once batches share the "
		    "store's one writer)",
		    opts->name);
	if (opts->lanes > SC_PROJECTION_LANES_MAX)
		return sc_error_set(err, SC_EINVAL,
				    "projection %s: at most %d lanes",
				    opts->name, SC_PROJECTION_LANES_MAX);
	sc_projection *p = sc_calloc(1, sizeof *p);
	if (!p)
		return sc_error_set(err, ENOMEM,
				    "out of memory starting projection %s",
				    opts->name);
	p->store = store;
	strcpy(p->name, opts->name);
	p->o = *opts;
	p->o.name = p->name;
	p->o.databases = NULL;
	if (!p->o.batch_max)
		p->o.batch_max = DEFAULT_BATCH;
	if (!p->o.save_every)
		p->o.save_every = DEFAULT_SAVE_EVERY;
	if (!p->o.save_ms)
		p->o.save_ms = DEFAULT_SAVE_MS;
	if (!p->o.max_retries)
		p->o.max_retries = DEFAULT_RETRIES;
	if (!p->o.backoff_ms)
		p->o.backoff_ms = DEFAULT_BACKOFF;
	p->nlanes = p->o.lanes ? p->o.lanes : 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	pthread_cond_init(&p->lane_cv, NULL);
	p->paused = opts->start_paused;
	p->state =
	    opts->start_paused ? SC_PROJECTION_PAUSED : SC_PROJECTION_RUNNING;
	for (const char *const *d = opts->databases; d && *d; d++) {
		if (p->ndbs == SC_PROJECTION_DBS_MAX || !name_ok(*d)) {
			sc_error_set(err, SC_EINVAL,
				     "projection %s: at most %d databases, "
				     "each named by 1..%d bytes without '/'",
				     p->name, SC_PROJECTION_DBS_MAX,
				     SC_PROJECTION_NAME_MAX);
			destroy(p);
			return SC_EINVAL;
		}
		strcpy(p->dbnames[p->ndbs++], *d);
	}
	start_ctx c = {.p = p};
	int rc =
	    write_locked(store, "starting a projection", start_body, &c, err);
	if (rc) {
		destroy(p);
		return rc;
	}
	p->offset = p->handled = c.r.offset;
	p->recorded = c.r.state;
	rc = query_open(p, p->offset, err);
	if (rc) {
		destroy(p);
		return rc;
	}
	if (p->nlanes > 1) {
		p->lanes = sc_calloc(p->nlanes, sizeof *p->lanes);
		if (!p->lanes) {
			destroy(p);
			return sc_error_set(err, ENOMEM,
					    "out of memory starting projection "
					    "%s",
					    opts->name);
		}
		for (unsigned i = 0; i < p->nlanes; i++) {
			p->lanes[i].p = p;
			if (pthread_create(&p->lanes[i].thread, NULL, lane_main,
					   &p->lanes[i])) {
				destroy(p);
				return sc_error_set(err, EAGAIN,
						    "projection %s: cannot "
						    "start a lane thread",
						    opts->name);
			}
			p->lanes_started++;
		}
	}
	if (pthread_create(&p->thread, NULL, runner_main, p)) {
		destroy(p);
		return sc_error_set(err, EAGAIN,
				    "projection %s: cannot start its thread",
				    opts->name);
	}
	p->started = true;
	*out = p;
	return 0;
}

int sc_projection_stop(sc_projection *p, sc_error *err)
{
	if (!p)
		return 0;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	sc_query_cancel(p->q);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	int rc = 0;
	if (p->state == SC_PROJECTION_FAILED) {
		*err = p->fail;
		rc = p->fail.code;
	} else {
		p->state = SC_PROJECTION_STOPPED;
	}
	/* The final save: the at-least-once offset, and the state. */
	sc_error e;
	sc_error_clear(&e);
	int src = save_offset(p, p->handled, false, true, &e);
	if (src && src != R_ADOPT && !rc) {
		*err = e;
		rc = src;
	}
	destroy(p);
	return rc;
}

void sc_projection_pause(sc_projection *p)
{
	pthread_mutex_lock(&p->mu);
	p->paused = true;
	if (p->state == SC_PROJECTION_RUNNING)
		p->state = SC_PROJECTION_PAUSED;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void sc_projection_resume(sc_projection *p)
{
	pthread_mutex_lock(&p->mu);
	p->paused = false;
	if (p->state == SC_PROJECTION_PAUSED)
		p->state = SC_PROJECTION_RUNNING;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static int wait_until(sc_projection *p, struct timespec *ts, int timeout_ms)
{
	if (timeout_ms < 0)
		return pthread_cond_wait(&p->cv, &p->mu);
	return pthread_cond_timedwait(&p->cv, &p->mu, ts);
}

static void deadline(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	if (timeout_ms < 0)
		return;
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

int sc_projection_wait(sc_projection *p, uint64_t position, int timeout_ms,
		       sc_error *err)
{
	struct timespec ts;
	deadline(&ts, timeout_ms);
	int rc = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->handled >= position)
			break;
		if (p->state == SC_PROJECTION_FAILED && p->exited) {
			*err = p->fail;
			rc = p->fail.code;
			break;
		}
		if (p->exited || p->stop) {
			rc = sc_error_set(
			    err, ECANCELED, "projection %s stopped at %llu",
			    p->name, (unsigned long long)p->handled);
			break;
		}
		if (wait_until(p, &ts, timeout_ms) == ETIMEDOUT) {
			if (p->handled >= position)
				break;
			rc = sc_error_set(
			    err, ETIMEDOUT,
			    "projection %s handled %llu, not "
			    "%llu, within %d ms",
			    p->name, (unsigned long long)p->handled,
			    (unsigned long long)position, timeout_ms);
			break;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int sc_projection_seek(sc_projection *p, uint64_t position, sc_error *err)
{
	pthread_mutex_lock(&p->mu);
	if (p->exited || p->stop) {
		pthread_mutex_unlock(&p->mu);
		return sc_error_set(err, SC_ESTATE,
				    "projection %s is not running; use "
				    "sc_projection_reset",
				    p->name);
	}
	p->seek_req = true;
	p->seek_done = false;
	p->seek_to = position;
	sc_query_cancel(p->q);
	pthread_cond_broadcast(&p->cv);
	while (!p->seek_done && !p->exited)
		pthread_cond_wait(&p->cv, &p->mu);
	int rc;
	if (p->seek_done) {
		rc = p->seek_rc;
		if (rc)
			*err = p->seek_err;
	} else {
		rc = sc_error_set(err, SC_ESTATE,
				  "projection %s stopped before the seek",
				  p->name);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int sc_projection_stats_get(sc_projection *p, sc_projection_stats *out,
			    sc_error *err)
{
	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&p->mu);
	out->state = p->state;
	out->offset = p->offset;
	out->handled = p->handled;
	out->skipped = p->skipped;
	out->retries = p->retries;
	if (p->state == SC_PROJECTION_FAILED) {
		out->error = p->fail.code;
		memcpy(out->message, p->fail.message, sizeof out->message);
	}
	pthread_mutex_unlock(&p->mu);
	MDB_txn *txn;
	int rc = sc_store_read_begin(p->store, &txn, err);
	if (rc)
		return rc;
	lag_in(p->store, txn, out->handled, &out->last_position,
	       &out->events_behind, &out->seconds_behind);
	sc_store_read_end(p->store, txn);
	return 0;
}

int sc_projection_dbi(sc_projection *p, const char *db, MDB_dbi *dbi,
		      sc_error *err)
{
	for (size_t i = 0; db && i < p->ndbs; i++)
		if (strcmp(p->dbnames[i], db) == 0) {
			*dbi = p->dbis[i];
			return 0;
		}
	return sc_error_set(err, SC_NOTFOUND,
			    "projection %s has no database %s; name it in "
			    "opts.databases",
			    p->name, db ? db : "(null)");
}

/* ---- at rest ------------------------------------------------------------- */

int sc_projection_open_db(sc_store *store, const char *name, const char *db,
			  MDB_dbi *dbi, sc_error *err)
{
	if (!store || !name_ok(name) || !name_ok(db) || !dbi)
		return sc_error_set(err, SC_EINVAL,
				    "sc_projection_open_db needs a store, a "
				    "projection name, a database name and an "
				    "out pointer");
	char full[KEY_PREFIX_LEN + 2 * SC_PROJECTION_NAME_MAX + 2];
	db_name(full, name, db);
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	rc = mdb_dbi_open(txn, full, 0, dbi);
	if (rc == 0) {
		/* A read-only commit keeps the handle open. */
		rc = mdb_txn_commit(txn);
		pthread_rwlock_unlock(&store->map_lock);
		return rc ? sc_store_lmdb_error(err, rc, "opening a database")
			  : 0;
	}
	sc_store_read_end(store, txn);
	if (rc == MDB_NOTFOUND)
		return sc_error_set(err, SC_NOTFOUND,
				    "projection %s has no database %s", name,
				    db);
	return sc_store_lmdb_error(err, rc, "opening a projection database");
}

int sc_projection_offset(sc_store *store, const char *name, uint64_t *offset,
			 bool *exists, sc_error *err)
{
	if (!store || !name_ok(name) || !offset)
		return sc_error_set(err, SC_EINVAL,
				    "sc_projection_offset needs a store, a "
				    "projection name and an out pointer");
	*offset = 0;
	if (exists)
		*exists = false;
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	record r;
	rc = record_get(store, txn, name, &r, err);
	sc_store_read_end(store, txn);
	if (rc == SC_NOTFOUND) {
		sc_error_clear(err);
		return 0;
	}
	if (rc)
		return rc;
	*offset = r.offset;
	if (exists)
		*exists = true;
	return 0;
}

typedef struct reset_ctx {
	const char *name;
	uint64_t to;
} reset_ctx;

static int reset_body(sc_store *s, MDB_txn *txn, void *vctx, sc_error *err)
{
	reset_ctx *c = vctx;
	record r;
	int rc = record_get(s, txn, c->name, &r, err);
	if (rc)
		return rc;
	uint64_t last = 0;
	rc = sc_store_meta_last_get(s, txn, &last, err);
	if (rc == SC_NOTFOUND)
		last = atomic_load(&s->last_position);
	else if (rc)
		return rc;
	if (c->to > last)
		return sc_error_set(err, SC_EINVAL,
				    "cannot reset projection %s to %llu: the "
				    "log ends at %llu",
				    c->name, (unsigned long long)c->to,
				    (unsigned long long)last);
	if (c->to == 0) {
		rc = drop_dbs(txn, c->name);
		if (rc)
			return rc == MDB_MAP_FULL
				   ? rc
				   : sc_store_lmdb_error(err, rc,
							 "emptying the "
							 "projection's "
							 "databases");
	}
	r.offset = c->to;
	rc = record_put(s, txn, c->name, &r);
	if (rc)
		return rc == MDB_MAP_FULL
			   ? rc
			   : sc_store_lmdb_error(err, rc,
						 "saving a projection offset");
	return 0;
}

int sc_projection_reset(sc_store *store, const char *name, uint64_t position,
			sc_error *err)
{
	if (!store || !name_ok(name))
		return sc_error_set(err, SC_EINVAL,
				    "sc_projection_reset needs a store and a "
				    "projection name");
	reset_ctx c = {name, position};
	return write_locked(store, "resetting a projection", reset_body, &c,
			    err);
}

int sc_projection_list(sc_store *store, sc_projection_info_fn fn, void *ctx,
		       sc_error *err)
{
	if (!store || !fn)
		return sc_error_set(err, SC_EINVAL,
				    "sc_projection_list needs a store and a "
				    "function");
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = sc_store_read_cursor(store, store->dbi_meta,
				      "listing projections", &txn, &cur, err);
	if (rc)
		return rc;
	MDB_val k = {KEY_PREFIX_LEN, (void *)KEY_PREFIX}, v;
	int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (mrc == 0 && !rc) {
		if (k.mv_size <= KEY_PREFIX_LEN ||
		    memcmp(k.mv_data, KEY_PREFIX, KEY_PREFIX_LEN) != 0 ||
		    k.mv_size > KEY_PREFIX_LEN + SC_PROJECTION_NAME_MAX)
			break;
		char name[SC_PROJECTION_NAME_MAX + 1];
		memcpy(name, (char *)k.mv_data + KEY_PREFIX_LEN,
		       k.mv_size - KEY_PREFIX_LEN);
		name[k.mv_size - KEY_PREFIX_LEN] = 0;
		if (v.mv_size != RECORD_LEN) {
			rc = sc_error_set(err, SC_ECORRUPT,
					  "the offset record of projection %s "
					  "is %zu bytes, expected %d; the "
					  "store is damaged",
					  name, v.mv_size, RECORD_LEN);
			break;
		}
		const uint8_t *b = v.mv_data;
		sc_projection_info info = {
		    .name = name,
		    .kind = (sc_projection_kind)b[8],
		    .state = (sc_projection_state)b[9],
		    .offset = sc_be64_get(b),
		};
		uint64_t last;
		lag_in(store, txn, info.offset, &last, &info.events_behind,
		       &info.seconds_behind);
		rc = fn(ctx, &info);
		if (!rc)
			mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (!rc && mrc && mrc != MDB_NOTFOUND)
		rc = sc_store_lmdb_error(err, mrc, "listing projections");
	mdb_cursor_close(cur);
	sc_store_read_end(store, txn);
	return rc;
}
