/*
 * Watching from a log position (sc_store_watch_resume, statecache/store.h):
 * the net change since a position, built from the log and the as-of
 * reads, handed over to a watcher opened at the version it was computed
 * against.
 *
 * What must hold: the version V the first batch ends at is the version the
 * watcher starts from. Both are pinned while the store's promotes are held
 * off (the writer lock of a writing store, the follower's lock of a
 * read-only one), so no promote falls between them; the set is then
 * computed for positions position+1 .. the position of V, read from the log
 * (which holds at least that much: V was promoted after its commit).
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_lib.h"
#include "common/internal.h"

/* An entity an event after the position touched: its partition and id, in
 * one owned block. */
typedef struct touched {
	sc_str partition, id;
	char *block;
} touched;

struct sc_watch_resume {
	sc_reader *reader; /* pins V: the `after` states */
	sc_watch_batch batch;
	sc_watch_change *changes; /* added, updated, removed, in one array */
	sc_entity **before;	  /* owned states as of the position */
	size_t nbefore;
	sc_str *names; /* the updates' changed names (point into states) */
	size_t nnames, cap_names;
	touched *keys; /* distinct (partition, id) touched, sorted */
	size_t nkeys, cap_keys;
};

/* Hold off the store's promotes (and so its cache's versions). */
static void promotes_lock(sc_store *store)
{
	pthread_mutex_lock(store->follower ? sc_store_follow_mutex(store)
					   : &store->write_mu);
}

static void promotes_unlock(sc_store *store)
{
	pthread_mutex_unlock(store->follower ? sc_store_follow_mutex(store)
					     : &store->write_mu);
}

static bool starts_with(sc_str s, sc_str prefix)
{
	return s.len >= prefix.len &&
	       (!prefix.len || memcmp(s.ptr, prefix.ptr, prefix.len) == 0);
}

static bool str_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* The watch layer's filter (watch.c): prefix, partition, predicate. */
static bool matches(const sc_watch_options *o, const sc_entity *e)
{
	if (!e)
		return false;
	if (o->prefix.len && !starts_with(sc_entity_id(e), o->prefix))
		return false;
	if (o->by_partition && !str_eq(sc_entity_partition(e), o->partition))
		return false;
	return !o->match || o->match(o->match_ctx, e);
}

typedef struct collect {
	sc_watch_resume *r;
	const sc_watch_options *o;
} collect;

static int collect_key(void *ctx, const sc_event *ev)
{
	collect *c = ctx;
	sc_watch_resume *r = c->r;
	if (!starts_with(ev->entity, c->o->prefix))
		return 0;
	if (c->o->by_partition && !str_eq(ev->partition, c->o->partition))
		return 0;
	if (r->nkeys == r->cap_keys) {
		size_t cap = r->cap_keys ? r->cap_keys * 2 : 64;
		touched *keys = sc_realloc(r->keys, cap * sizeof *keys);
		if (!keys)
			return ENOMEM;
		r->keys = keys;
		r->cap_keys = cap;
	}
	size_t pl = ev->partition.len, il = ev->entity.len;
	char *b = sc_malloc(pl + il + 1);
	if (!b)
		return ENOMEM;
	if (pl)
		memcpy(b, ev->partition.ptr, pl);
	memcpy(b + pl, ev->entity.ptr, il);
	r->keys[r->nkeys++] = (touched){{b, pl}, {b + pl, il}, b};
	return 0;
}

static int bytes_cmp(sc_str a, sc_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	return c ? c : (a.len > b.len) - (a.len < b.len);
}

/* By partition, then id: bytes, NUL bytes included. */
static int key_cmp(const void *a, const void *b)
{
	const touched *x = a, *y = b;
	int c = bytes_cmp(x->partition, y->partition);
	return c ? c : bytes_cmp(x->id, y->id);
}

static int name_push(sc_watch_resume *r, sc_str name)
{
	if (r->nnames == r->cap_names) {
		size_t cap = r->cap_names ? r->cap_names * 2 : 32;
		sc_str *n = sc_realloc(r->names, cap * sizeof *n);
		if (!n)
			return ENOMEM;
		r->names = n;
		r->cap_names = cap;
	}
	r->names[r->nnames++] = name;
	return 0;
}

static int name_cmp(sc_str a, sc_str b)
{
	return bytes_cmp(a, b);
}

/* The names of the attributes added, removed or changed from a to b
 * (both keep their attributes sorted by name); *count of them. */
static int changed_names(sc_watch_resume *r, const sc_entity *a,
			 const sc_entity *b, size_t *count)
{
	size_t start = r->nnames, i = 0, j = 0;
	size_t na = sc_entity_attr_count(a), nb = sc_entity_attr_count(b);
	int rc = 0;
	while (!rc && (i < na || j < nb)) {
		sc_attr x = i < na ? sc_entity_attr(a, i) : (sc_attr){0};
		sc_attr y = j < nb ? sc_entity_attr(b, j) : (sc_attr){0};
		int c = i >= na ? 1 : j >= nb ? -1 : name_cmp(x.name, y.name);
		if (c < 0) {
			rc = name_push(r, x.name);
			i++;
		} else if (c > 0) {
			rc = name_push(r, y.name);
			j++;
		} else {
			if (!sc_value_equal(&x.value, &y.value))
				rc = name_push(r, y.name);
			i++;
			j++;
		}
	}
	*count = r->nnames - start;
	return rc;
}

/* Classify every distinct id into the batch. */
static int build_batch(sc_store *store, sc_watch_resume *r,
		       const sc_watch_options *o, const sc_view *v,
		       uint64_t position, sc_error *err)
{
	r->changes = sc_calloc(r->nkeys ? r->nkeys : 1, sizeof *r->changes);
	r->before = sc_calloc(r->nkeys ? r->nkeys : 1, sizeof *r->before);
	uint8_t *kind = sc_calloc(r->nkeys ? r->nkeys : 1, 1);
	if (!r->changes || !r->before || !kind) {
		sc_free(kind);
		return sc_error_set(err, ENOMEM,
				    "out of memory for a resumed watch");
	}
	size_t n[3] = {0, 0, 0}; /* added, updated, removed */
	sc_watch_change *tmp = sc_calloc(r->nkeys ? r->nkeys : 1, sizeof *tmp);
	if (!tmp) {
		sc_free(kind);
		return sc_error_set(err, ENOMEM,
				    "out of memory for a resumed watch");
	}
	int rc = 0;
	for (size_t i = 0; i < r->nkeys; i++) {
		sc_str part = r->keys[i].partition, id = r->keys[i].id;
		sc_entity *old = NULL;
		rc =
		    sc_store_entity_at_in(store, part, id, position, &old, err);
		if (rc == SC_NOTFOUND) {
			rc = 0;
			old = NULL;
		}
		if (rc)
			break;
		if (old)
			r->before[r->nbefore++] = old;
		const sc_entity *now = sc_view_get_in(v, part, id);
		bool in_old = matches(o, old), in_new = matches(o, now);
		sc_watch_change *c = &tmp[i];
		kind[i] = 3;
		if (in_old && in_new) {
			if (sc_entity_equal(old, now))
				continue;
			kind[i] = 1;
			rc = changed_names(r, old, now, &c->nchanged);
			if (rc) {
				rc = sc_error_set(err, rc,
						  "out of memory for a resumed "
						  "watch");
				break;
			}
		} else if (in_new) {
			kind[i] = 0;
		} else if (in_old) {
			kind[i] = 2;
		} else {
			continue;
		}
		c->id = in_new ? sc_entity_id(now) : sc_entity_id(old);
		c->partition = in_new ? sc_entity_partition(now)
				      : sc_entity_partition(old);
		c->before = in_old ? old : NULL;
		c->after = in_new ? now : NULL;
		n[kind[i]]++;
	}
	if (!rc) {
		/* Lay out added, updated, removed; point the updates at their
		 * names (pushed in id order). */
		size_t at[3] = {0, n[0], n[0] + n[1]}, off = 0;
		for (size_t i = 0; i < r->nkeys; i++) {
			if (kind[i] > 2)
				continue;
			sc_watch_change c = tmp[i];
			if (kind[i] == 1) {
				c.changed = c.nchanged ? r->names + off : NULL;
				off += c.nchanged;
			}
			r->changes[at[kind[i]]++] = c;
		}
		r->batch.added = r->changes;
		r->batch.nadded = n[0];
		r->batch.updated = r->changes + n[0];
		r->batch.nupdated = n[1];
		r->batch.removed = r->changes + n[0] + n[1];
		r->batch.nremoved = n[2];
	}
	sc_free(tmp);
	sc_free(kind);
	return rc;
}

int sc_store_watch_resume(sc_store *store, const sc_watch_options *opt,
			  uint64_t position, sc_watcher **watcher,
			  sc_watch_resume **first, sc_error *err)
{
	sc_error_clear(err);
	if (!store || !watcher || !first)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_watch_resume needs a store, a "
				    "watcher and a first-batch pointer");
	*watcher = NULL;
	*first = NULL;
	sc_watch_options o = {0};
	if (opt)
		o = *opt;
	if (o.start != SC_WATCH_START_NOW)
		return sc_error_set(err, SC_EINVAL,
				    "sc_store_watch_resume: a resumed watch "
				    "starts at the position given; leave "
				    "opt->start SC_WATCH_START_NOW");
	sc_watch_resume *r = sc_calloc(1, sizeof *r);
	if (!r)
		return sc_error_set(err, ENOMEM,
				    "out of memory for a resumed watch");
	int rc = sc_reader_open(store->cache, &r->reader, err);
	if (rc) {
		sc_free(r);
		return rc;
	}
	promotes_lock(store);
	const sc_view *v = sc_reader_begin(r->reader);
	rc = sc_watch_open(store->cache, &o, watcher, err);
	promotes_unlock(store);
	/* The pin lasts until sc_watch_resume_free, on whatever thread. */
	sc_reader_disown(r->reader);
	if (rc)
		goto fail;
	uint64_t to = sc_view_position(v);
	if (position > to) {
		rc = sc_error_set(err, SC_EINVAL,
				  "cannot resume watching after position %llu: "
				  "the log ends at %llu (the log is never "
				  "compacted, so any position up to its end "
				  "can be resumed from)",
				  (unsigned long long)position,
				  (unsigned long long)to);
		goto fail;
	}
	if (to > position) {
		collect c = {r, &o};
		rc = sc_store_events(store, position + 1, to - position,
				     collect_key, &c, err);
		if (rc == ENOMEM)
			sc_error_set(err, rc,
				     "out of memory for a resumed watch");
		if (rc)
			goto fail;
		qsort(r->keys, r->nkeys, sizeof *r->keys, key_cmp);
		size_t k = 0;
		for (size_t i = 0; i < r->nkeys; i++) {
			if (k && key_cmp(&r->keys[k - 1], &r->keys[i]) == 0)
				sc_free(r->keys[i].block);
			else
				r->keys[k++] = r->keys[i];
		}
		r->nkeys = k;
	}
	rc = build_batch(store, r, &o, v, position, err);
	if (rc)
		goto fail;
	r->batch.kind = SC_WATCH_CHANGES;
	r->batch.from_version = 0;
	r->batch.to_version = sc_view_version(v);
	r->batch.from_position = position;
	r->batch.to_position = to;
	*first = r;
	return 0;
fail:
	sc_watch_close(*watcher);
	*watcher = NULL;
	sc_watch_resume_free(r);
	return rc;
}

const sc_watch_batch *sc_watch_resume_batch(const sc_watch_resume *resume)
{
	return resume ? &resume->batch : NULL;
}

void sc_watch_resume_free(sc_watch_resume *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nbefore; i++)
		sc_entity_free(r->before[i]);
	for (size_t i = 0; i < r->nkeys; i++)
		sc_free(r->keys[i].block);
	sc_free(r->keys);
	sc_free(r->before);
	sc_free(r->changes);
	sc_free(r->names);
	sc_reader_close(r->reader);
	sc_free(r);
}
