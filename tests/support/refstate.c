/*
 * Reference model of the entity state (tests/support/refstate.h).
 */
#include "tests/support/refstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

/* ==== memory ============================================================== */

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "refstate: out of memory\n");
		abort();
	}
	return p;
}

static sc_str str_dup(sc_str s)
{
	char *p = xmalloc(s.len + 1);
	if (s.len)
		memcpy(p, s.ptr, s.len);
	p[s.len] = '\0';
	return (sc_str){p, s.len};
}

static bool str_eq(sc_str a, sc_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool is_blob(sc_value_type t)
{
	return t == SC_VALUE_STRING || t == SC_VALUE_BYTES;
}

static void attr_free(tk_refattr *a)
{
	free((void *)a->name.ptr);
	if (is_blob(a->value.type))
		free((void *)a->value.u.s.ptr);
}

static void entity_free(tk_refentity *re)
{
	if (!re)
		return;
	for (size_t i = 0; i < re->nattrs; i++)
		attr_free(&re->attrs[i]);
	free(re->attrs);
	free((void *)re->id.ptr);
	free((void *)re->partition.ptr);
	free((void *)re->updated_by.ptr);
	free(re);
}

static sc_value value_dup(sc_value v)
{
	if (is_blob(v.type))
		v.u.s = str_dup(v.u.s);
	return v;
}

static tk_refentity *entity_clone(const tk_refentity *re)
{
	tk_refentity *c = xmalloc(sizeof *c);
	*c = *re;
	c->next = NULL;
	c->id = str_dup(re->id);
	c->partition = str_dup(re->partition);
	c->updated_by = str_dup(re->updated_by);
	c->attrs = xmalloc(re->nattrs * sizeof *c->attrs);
	for (size_t i = 0; i < re->nattrs; i++) {
		c->attrs[i].name = str_dup(re->attrs[i].name);
		c->attrs[i].value = value_dup(re->attrs[i].value);
	}
	return c;
}

/* ==== the table =========================================================== */

typedef struct journal_entry {
	sc_str partition;    /* owned */
	sc_str id;	     /* owned */
	tk_refentity *saved; /* the state before the change, or NULL */
} journal_entry;

struct tk_refstate {
	tk_refentity **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
	bool in_txn;
	journal_entry *journal;
	size_t njournal, cap_journal;
};

static uint64_t fnv(uint64_t h, sc_str s)
{
	for (size_t i = 0; i < s.len; i++) {
		h ^= (unsigned char)s.ptr[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* The key of an entity is (partition, id): FNV-1a over the partition,
 * its length, then the id. */
static uint64_t key_hash(sc_str partition, sc_str id)
{
	uint64_t h = fnv(1469598103934665603ull, partition);
	h ^= partition.len;
	h *= 1099511628211ull;
	return fnv(h, id);
}

tk_refstate *tk_refstate_new(void)
{
	tk_refstate *rs = xmalloc(sizeof *rs);
	memset(rs, 0, sizeof *rs);
	rs->nbuckets = 64;
	rs->buckets = calloc(rs->nbuckets, sizeof *rs->buckets);
	if (!rs->buckets)
		abort();
	return rs;
}

static void journal_clear(tk_refstate *rs)
{
	for (size_t i = 0; i < rs->njournal; i++) {
		free((void *)rs->journal[i].id.ptr);
		free((void *)rs->journal[i].partition.ptr);
		entity_free(rs->journal[i].saved);
	}
	rs->njournal = 0;
}

void tk_refstate_free(tk_refstate *rs)
{
	if (!rs)
		return;
	for (size_t b = 0; b < rs->nbuckets; b++) {
		tk_refentity *re = rs->buckets[b];
		while (re) {
			tk_refentity *next = re->next;
			entity_free(re);
			re = next;
		}
	}
	journal_clear(rs);
	free(rs->journal);
	free(rs->buckets);
	free(rs);
}

static tk_refentity **slot_of(const tk_refstate *rs, sc_str partition,
			      sc_str id)
{
	tk_refentity **p =
	    &rs->buckets[key_hash(partition, id) & (rs->nbuckets - 1)];
	while (*p &&
	       !(str_eq((*p)->id, id) && str_eq((*p)->partition, partition)))
		p = &(*p)->next;
	return p;
}

static void grow(tk_refstate *rs)
{
	size_t n = rs->nbuckets * 2;
	tk_refentity **nb = calloc(n, sizeof *nb);
	if (!nb)
		abort();
	for (size_t b = 0; b < rs->nbuckets; b++) {
		tk_refentity *re = rs->buckets[b];
		while (re) {
			tk_refentity *next = re->next;
			size_t i = key_hash(re->partition, re->id) & (n - 1);
			re->next = nb[i];
			nb[i] = re;
			re = next;
		}
	}
	free(rs->buckets);
	rs->buckets = nb;
	rs->nbuckets = n;
}

/* Unlink and return the entity for id (NULL when absent). */
static tk_refentity *take(tk_refstate *rs, sc_str partition, sc_str id)
{
	tk_refentity **p = slot_of(rs, partition, id);
	tk_refentity *re = *p;
	if (re) {
		*p = re->next;
		re->next = NULL;
		rs->count--;
	}
	return re;
}

static void put(tk_refstate *rs, tk_refentity *re)
{
	if (rs->count >= rs->nbuckets)
		grow(rs);
	tk_refentity **head =
	    &rs->buckets[key_hash(re->partition, re->id) & (rs->nbuckets - 1)];
	re->next = *head;
	*head = re;
	rs->count++;
}

static const sc_str no_partition = {"", 0};

const tk_refentity *tk_refstate_lookup(const tk_refstate *rs, sc_str id)
{
	return *slot_of(rs, no_partition, id);
}

const tk_refentity *tk_refstate_lookup_in(const tk_refstate *rs,
					  sc_str partition, sc_str id)
{
	return *slot_of(rs, partition, id);
}

size_t tk_refstate_len(const tk_refstate *rs)
{
	return rs->count;
}

size_t tk_refstate_len_in(const tk_refstate *rs, sc_str partition)
{
	size_t n = 0;
	for (size_t b = 0; b < rs->nbuckets; b++)
		for (tk_refentity *re = rs->buckets[b]; re; re = re->next)
			n += str_eq(re->partition, partition);
	return n;
}

void tk_refstate_foreach(const tk_refstate *rs,
			 void (*fn)(void *ctx, const tk_refentity *re),
			 void *ctx)
{
	for (size_t b = 0; b < rs->nbuckets; b++)
		for (tk_refentity *re = rs->buckets[b]; re; re = re->next)
			fn(ctx, re);
}

/* ==== applying events ===================================================== */

static long attr_index(const tk_refentity *re, sc_str name)
{
	for (size_t i = 0; i < re->nattrs; i++)
		if (str_eq(re->attrs[i].name, name))
			return (long)i;
	return -1;
}

bool tk_refentity_find(const tk_refentity *re, sc_str name, sc_value *out)
{
	long i = attr_index(re, name);
	if (i < 0)
		return false;
	if (out)
		*out = re->attrs[i].value;
	return true;
}

static void attr_remove(tk_refentity *re, sc_str name)
{
	long i = attr_index(re, name);
	if (i < 0)
		return;
	attr_free(&re->attrs[i]);
	re->attrs[i] = re->attrs[re->nattrs - 1];
	re->nattrs--;
}

static void attr_set(tk_refentity *re, sc_str name, sc_value v)
{
	long i = attr_index(re, name);
	if (i >= 0) {
		if (is_blob(re->attrs[i].value.type))
			free((void *)re->attrs[i].value.u.s.ptr);
		re->attrs[i].value = value_dup(v);
		return;
	}
	tk_refattr *na = realloc(re->attrs, (re->nattrs + 1) * sizeof *na);
	if (!na)
		abort();
	re->attrs = na;
	re->attrs[re->nattrs].name = str_dup(name);
	re->attrs[re->nattrs].value = value_dup(v);
	re->nattrs++;
}

static void journal_push(tk_refstate *rs, sc_str partition, sc_str id,
			 const tk_refentity *re)
{
	if (rs->njournal == rs->cap_journal) {
		rs->cap_journal = rs->cap_journal ? 2 * rs->cap_journal : 64;
		rs->journal =
		    realloc(rs->journal, rs->cap_journal * sizeof *rs->journal);
		if (!rs->journal)
			abort();
	}
	journal_entry *j = &rs->journal[rs->njournal++];
	j->id = str_dup(id);
	j->partition = str_dup(partition);
	j->saved = re ? entity_clone(re) : NULL;
}

void tk_refstate_apply(tk_refstate *rs, const sc_event *ev)
{
	tk_refentity *re = take(rs, ev->partition, ev->entity);
	if (rs->in_txn)
		journal_push(rs, ev->partition, ev->entity, re);
	if (ev->type == SC_EVENT_DELETE) {
		entity_free(re);
		return;
	}
	if (!re) {
		re = xmalloc(sizeof *re);
		memset(re, 0, sizeof *re);
		re->id = str_dup(ev->entity);
		re->partition = str_dup(ev->partition);
	}
	if (ev->type == SC_EVENT_REPLACE) {
		for (size_t i = 0; i < re->nattrs; i++)
			attr_free(&re->attrs[i]);
		re->nattrs = 0;
	}
	for (size_t i = 0; i < ev->nattrs; i++) {
		const sc_attr *a = &ev->attrs[i];
		if (ev->type == SC_EVENT_UNSET ||
		    a->value.type == SC_VALUE_NULL)
			attr_remove(re, a->name);
		else
			attr_set(re, a->name, a->value);
	}
	re->updated_at = ev->time;
	free((void *)re->updated_by.ptr);
	re->updated_by = str_dup(ev->actor);
	re->position = ev->position;
	put(rs, re);
}

void tk_refstate_begin(tk_refstate *rs)
{
	if (rs->in_txn) {
		fprintf(stderr, "refstate: begin inside a transaction\n");
		abort();
	}
	rs->in_txn = true;
}

void tk_refstate_commit(tk_refstate *rs)
{
	journal_clear(rs);
	rs->in_txn = false;
}

void tk_refstate_rollback(tk_refstate *rs)
{
	for (size_t i = rs->njournal; i-- > 0;) {
		journal_entry *j = &rs->journal[i];
		entity_free(take(rs, j->partition, j->id));
		if (j->saved) {
			put(rs, j->saved);
			j->saved = NULL;
		}
	}
	journal_clear(rs);
	rs->in_txn = false;
}

/* ==== comparison ========================================================== */

bool tk_value_equal(const sc_value *a, const sc_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case SC_VALUE_NULL:
		return true;
	case SC_VALUE_INT:
		return a->u.i == b->u.i;
	case SC_VALUE_DOUBLE:
		return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;
	case SC_VALUE_BOOL:
		return a->u.b == b->u.b;
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		return str_eq(a->u.s, b->u.s);
	}
	return false;
}

#define WHY(...)                                                               \
	do {                                                                   \
		if (why)                                                       \
			snprintf(why, why_len, __VA_ARGS__);                   \
	} while (0)

bool tk_refstate_entity_equal(const tk_refentity *re, const sc_entity *e,
			      char *why, size_t why_len)
{
	if (!re && !e)
		return true;
	if (!re || !e) {
		sc_str id = re ? re->id : sc_entity_id(e);
		WHY("entity '%.*s' is %s", (int)id.len, id.ptr,
		    re ? "missing from the cache" : "missing from the model");
		return false;
	}
	sc_str id = re->id;
	if (!str_eq(id, sc_entity_id(e))) {
		WHY("entity id differs: '%.*s'", (int)id.len, id.ptr);
		return false;
	}
	if (!str_eq(re->partition, sc_entity_partition(e))) {
		WHY("entity '%.*s': partition differs: '%.*s' in the model",
		    (int)id.len, id.ptr, (int)re->partition.len,
		    re->partition.ptr);
		return false;
	}
	if (re->position != sc_entity_position(e) ||
	    re->updated_at != sc_entity_updated_at(e) ||
	    !str_eq(re->updated_by, sc_entity_updated_by(e))) {
		WHY("entity '%.*s': position/updated_at/updated_by differ "
		    "(model %llu, cache %llu)",
		    (int)id.len, id.ptr, (unsigned long long)re->position,
		    (unsigned long long)sc_entity_position(e));
		return false;
	}
	if (re->nattrs != sc_entity_attr_count(e)) {
		WHY("entity '%.*s': %zu attrs in the model, %zu in the cache",
		    (int)id.len, id.ptr, re->nattrs, sc_entity_attr_count(e));
		return false;
	}
	for (size_t i = 0; i < re->nattrs; i++) {
		sc_value v;
		const tk_refattr *a = &re->attrs[i];
		if (!sc_entity_find(e, a->name, &v) ||
		    !tk_value_equal(&v, &a->value)) {
			WHY("entity '%.*s': attr '%.*s' differs", (int)id.len,
			    id.ptr, (int)a->name.len, a->name.ptr);
			return false;
		}
	}
	return true;
}

typedef struct check_ctx {
	const sc_view *view;
	bool ok;
	char *why;
	size_t why_len;
} check_ctx;

static void check_one(void *ctx, const tk_refentity *re)
{
	check_ctx *c = ctx;
	if (!c->ok)
		return;
	const sc_entity *e = sc_view_get_in(c->view, re->partition, re->id);
	if (!tk_refstate_entity_equal(re, e, c->why, c->why_len))
		c->ok = false;
}

bool tk_refstate_check_view(const tk_refstate *rs, const sc_view *view,
			    char *why, size_t why_len)
{
	if (sc_view_len_all(view) != rs->count) {
		WHY("%zu entities in the view, %zu in the model",
		    sc_view_len_all(view), rs->count);
		return false;
	}
	check_ctx c = {view, true, why, why_len};
	tk_refstate_foreach(rs, check_one, &c);
	if (!c.ok)
		return false;
	/* Every entity the view iterates is in the model too. */
	sc_view_iter it;
	sc_view_iter_init_all(view, &it);
	size_t n = 0;
	for (const sc_entity *e; (e = sc_view_iter_next(&it)); n++) {
		if (!tk_refstate_lookup_in(rs, sc_entity_partition(e),
					   sc_entity_id(e))) {
			sc_str id = sc_entity_id(e);
			WHY("iteration yields '%.*s', not in the model",
			    (int)id.len, id.ptr);
			return false;
		}
	}
	if (n != rs->count) {
		WHY("iteration yields %zu entities, the model has %zu", n,
		    rs->count);
		return false;
	}
	/* Partition by partition: the view lists exactly the partitions
	 * with entities, each with its count and its entities alone. */
	size_t np = sc_view_partition_count(view), listed = 0;
	for (size_t i = 0; i < np; i++) {
		sc_str p = sc_view_partition(view, i);
		if (!tk_refstate_check_partition(rs, view, p, why, why_len))
			return false;
		listed += tk_refstate_len_in(rs, p);
	}
	if (listed != rs->count) {
		WHY("the view's partitions hold %zu entities, the model %zu",
		    listed, rs->count);
		return false;
	}
	return true;
}

bool tk_refstate_check_partition(const tk_refstate *rs, const sc_view *view,
				 sc_str partition, char *why, size_t why_len)
{
	size_t want = tk_refstate_len_in(rs, partition);
	if (sc_view_len_in(view, partition) != want) {
		WHY("partition '%.*s': %zu entities in the view, %zu in the "
		    "model",
		    (int)partition.len, partition.ptr,
		    sc_view_len_in(view, partition), want);
		return false;
	}
	sc_view_iter it;
	sc_view_iter_init_in(view, partition, &it);
	size_t n = 0;
	for (const sc_entity *e; (e = sc_view_iter_next(&it)); n++) {
		sc_str id = sc_entity_id(e);
		const tk_refentity *re =
		    tk_refstate_lookup_in(rs, partition, id);
		if (!tk_refstate_entity_equal(re, e, why, why_len))
			return false;
		if (sc_view_get_in(view, partition, id) != e) {
			WHY("partition '%.*s': get of '%.*s' differs from "
			    "its iteration",
			    (int)partition.len, partition.ptr, (int)id.len,
			    id.ptr);
			return false;
		}
	}
	if (n != want) {
		WHY("partition '%.*s': iteration yields %zu entities, the "
		    "model has %zu",
		    (int)partition.len, partition.ptr, n, want);
		return false;
	}
	return true;
}

bool tk_refstate_check_ids(const tk_refstate *rs, const sc_view *view,
			   const sc_str *ids, size_t nids, char *why,
			   size_t why_len)
{
	for (size_t i = 0; i < nids; i++) {
		if (!tk_refstate_entity_equal(tk_refstate_lookup(rs, ids[i]),
					      sc_view_get(view, ids[i]), why,
					      why_len))
			return false;
	}
	return true;
}

/* ==== hashing ============================================================= */

static uint64_t attr_hash(sc_str name, const sc_value *v)
{
	uint64_t t = (uint64_t)v->type, hv = t;
	switch (v->type) {
	case SC_VALUE_INT:
		hv = XXH64(&v->u.i, sizeof v->u.i, t);
		break;
	case SC_VALUE_DOUBLE:
		hv = XXH64(&v->u.d, sizeof v->u.d, t);
		break;
	case SC_VALUE_BOOL:
		hv = v->u.b ? 0x9e3779b97f4a7c15ull : 0x51ed270b27a9b3c1ull;
		break;
	case SC_VALUE_STRING:
	case SC_VALUE_BYTES:
		hv = XXH64(v->u.s.ptr, v->u.s.len, t);
		break;
	case SC_VALUE_NULL:
		break;
	}
	uint64_t parts[2] = {XXH64(name.ptr, name.len, 11), hv};
	return XXH64(parts, sizeof parts, 5);
}

/* Attributes combine by sum, so their order does not matter. */
static uint64_t entity_hash(sc_str part, sc_str id, int64_t at, sc_str by,
			    uint64_t pos, uint64_t attrs_sum)
{
	uint64_t parts[6] = {XXH64(id.ptr, id.len, 1),
			     (uint64_t)at,
			     XXH64(by.ptr, by.len, 2),
			     pos,
			     attrs_sum,
			     XXH64(part.ptr, part.len, 4)};
	return XXH64(parts, sizeof parts, 3);
}

static void hash_one(void *ctx, const tk_refentity *re)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < re->nattrs; i++)
		sum += attr_hash(re->attrs[i].name, &re->attrs[i].value);
	*(uint64_t *)ctx += entity_hash(re->partition, re->id, re->updated_at,
					re->updated_by, re->position, sum);
}

uint64_t tk_refstate_hash(const tk_refstate *rs)
{
	uint64_t h = 0;
	tk_refstate_foreach(rs, hash_one, &h);
	return h;
}

uint64_t tk_refstate_view_hash(const sc_view *view)
{
	uint64_t h = 0;
	sc_view_iter it;
	sc_view_iter_init_all(view, &it);
	for (const sc_entity *e; (e = sc_view_iter_next(&it));) {
		uint64_t sum = 0;
		for (size_t i = 0; i < sc_entity_attr_count(e); i++) {
			sc_attr a = sc_entity_attr(e, i);
			sum += attr_hash(a.name, &a.value);
		}
		h += entity_hash(sc_entity_partition(e), sc_entity_id(e),
				 sc_entity_updated_at(e),
				 sc_entity_updated_by(e), sc_entity_position(e),
				 sum);
	}
	return h;
}
