/*
 * Persistent hash array mapped trie (CHAMP layout) with in-place edits.
 *
 * hamt/DESIGN.md explains the layout, edit ownership, the garbage list and
 * why freeing it is exact. The short version, which every function below
 * relies on:
 *
 *  - A node is owned by the open edit when the edit id in its tag equals the
 *    edit's id. Ids are 63-bit and never reused, so a node keeps the id of
 *    the edit that made it for good and commit needs no pass to "seal" it.
 *    Owned nodes were made by this edit, no reader has seen them, and they
 *    may be changed in place or freed at once. Every other node is
 *    published and is never written again.
 *  - Owned nodes form a connected region at the top of the edit's tree: a
 *    node is owned only if its parent is. Walks that want "what this edit
 *    made" descend only into owned nodes.
 *  - A published node replaced by the edit goes to the garbage list; an
 *    entry (key, value pair) that leaves the map goes to the garbage list if
 *    the base version holds it, else it was inserted by this edit and is
 *    released at once.
 */
#include "hamt/hamt_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/internal.h"
#include "common/pool.h"

/* ==== nodes ============================================================== */

typedef struct sc_hamt_node node;

typedef struct entry {
	const sc_hamt_key *key;
	void *value;
} entry;

enum { NODE_BITMAP = 0, NODE_COLLISION = 1 };

/* Bits of hash consumed per level; depth 12 gets the last 4 of 64. */
#define LEVEL_BITS 5
/* Bound on the bytes of freed nodes a map keeps for reuse. */
#define NODE_POOL_BYTES ((size_t)8 << 20)
/* What a commit leaves in it (more is given back to malloc). */
#define NODE_POOL_KEEP_BYTES ((size_t)1 << 20)
/* Depth of collision nodes: every key below has the same 64-bit hash. */
#define COLLISION_DEPTH (SC_HAMT_MAX_DEPTH - 1)

/*
 *   +----------+----------+--------+------+-----+
 *   | datamap  | nodemap  |  edit  | kind | pad |   16 bytes
 *   +----------+----------+--------+------+-----+
 *   | key*, value   (16 bytes per inline entry) |   popcount(datamap)
 *   +-------------------------------------------+
 *   | child*        (8 bytes per sub-node)      |   popcount(nodemap)
 *   +-------------------------------------------+
 *
 * A collision node keeps its entry count in `datamap` and has nodemap 0.
 * The size of a node never changes once allocated: a change of size means
 * a new node.
 */
struct sc_hamt_node {
	uint32_t datamap;
	uint32_t nodemap;
	uint64_t tag; /* (id of the edit that made it) << 1 | kind */
	entry entries[];
};

struct sc_hamt {
	uint64_t seed;
	sc_hamt_hash_fn hash;
	sc_hamt_release_fn release;
	void *release_ctx;
	sc_hamt_fresh_fn fresh; /* NULL: ask the base version */
	unsigned flags;
	uint64_t next_edit;
	/* Edits open now (several when their bases share no node). */
	unsigned edits_open;
	size_t page;
	_Atomic size_t allocated;
	/* One edit and one garbage list kept for reuse, so a steady stream of
	 * small edits makes no allocation for its bookkeeping. Writer only. */
	sc_hamt_edit *spare_edit;
	sc_hamt_garbage *spare_garbage;
	/* Freed nodes kept for reuse by size (writer only): a promote frees
	 * a garbage list whose sizes the next batch of edits asks for. */
	sc_pool pool;
	/* Lane maps (hamt_internal.h); a lane map has none. */
	sc_hamt *lanes[SC_HAMT_LANES_MAX];
	unsigned nlanes;
};

/* What the edit displaced: published nodes and entries of the base
 * version. Handed to the caller by commit. */
/* A replaced node with its size, taken while the node was in cache, so
 * that freeing it later needs no read of the (by then cold) node. */
typedef struct gnode {
	node *n;
	size_t bytes; /* node_bytes() */
} gnode;

struct sc_hamt_garbage {
	gnode *nodes;
	size_t nnodes, capnodes;
	entry *pairs;
	size_t npairs, cappairs;
	size_t bytes;
	/* A lane's list chained to its edit's (hamt_internal.h): freed into
	 * `owner`, its lane map. NULL: into the map freeing the list. */
	sc_hamt *owner;
	struct sc_hamt_garbage *next;
};

/* Sets waiting in an edit (see "the set queue" below). */
#define SETQ_LEN 8
/* The stage a queued set starts its walk at: the nodes above it are read
 * without a prefetch (the top of a big tree stays in cache). */
#define SETQ_FIRST_STAGE 2

/* A set (fn NULL: the pair key, value) or an update (fn, done, ctx on the
 * key bytes kb, klen) waiting in the edit's queue. */
typedef struct queued_set {
	const sc_hamt_key *key;
	void *value;
	sc_hamt_update_fn fn;
	sc_hamt_done_fn done;
	void *ctx;
	const void *kb;
	size_t klen;
	uint64_t h;
	uint8_t stage; /* next depth to prefetch; 0: not hashed yet */
	bool ready;    /* nothing left to prefetch */
} queued_set;

struct sc_hamt_edit {
	sc_hamt *map;
	sc_hamt_root base;
	node *root;
	size_t count;
	uint64_t id;
	bool poisoned;
	bool touched;	    /* a change reached the tree (hamt_internal.h) */
	sc_hamt_garbage *g; /* allocated on first need */
	/* Sets taken but not yet in the tree, oldest at q[qhead]. */
	unsigned qhead, qlen;
	queued_set q[SETQ_LEN];
};

static inline unsigned popcount(uint32_t x)
{
	return (unsigned)__builtin_popcount(x);
}

static inline unsigned frag(uint64_t h, unsigned depth)
{
	return (unsigned)(h >> (LEVEL_BITS * depth)) & 31u;
}

static inline unsigned node_kind(const node *n)
{
	return (unsigned)(n->tag & 1u);
}

static inline uint64_t node_edit(const node *n)
{
	return n->tag >> 1;
}

static inline unsigned node_nentries(const node *n)
{
	return node_kind(n) == NODE_COLLISION ? n->datamap
					      : popcount(n->datamap);
}

static inline unsigned node_nchildren(const node *n)
{
	return popcount(n->nodemap);
}

/* Children of a bitmap node (collision nodes have none). */
static inline node **node_children(const node *n)
{
	return (node **)(uintptr_t)(n->entries + popcount(n->datamap));
}

static inline size_t node_size_for(unsigned ne, unsigned nc)
{
	return sizeof(node) + ne * sizeof(entry) + nc * sizeof(node *);
}

static inline size_t round_page(const sc_hamt *m, size_t sz)
{
	return (sz + m->page - 1) & ~(m->page - 1);
}

/* Bytes of memory a node takes, as counted in map->allocated. */
static size_t node_bytes(const sc_hamt *m, const node *n)
{
	size_t sz = node_size_for(node_nentries(n), node_nchildren(n));
	return (m->flags & SC_HAMT_PROTECT) ? round_page(m, sz) : sz;
}

static node *node_alloc(sc_hamt *m, unsigned ne, unsigned nc, uint64_t edit,
			unsigned kind)
{
	size_t sz = node_size_for(ne, nc);
	node *n;
	if (m->flags & SC_HAMT_PROTECT) {
		/* Pages of its own so that commit can make it read-only. Ask
		 * sc_malloc first so that fault injection reaches this path. */
		void *probe = sc_malloc(1);
		if (!probe)
			return NULL;
		sc_free(probe);
		sz = round_page(m, sz);
		void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		n = p;
	} else {
		n = sc_pool_alloc(&m->pool, sz);
		if (!n)
			return NULL;
	}
	atomic_fetch_add_explicit(&m->allocated, sz, memory_order_relaxed);
	n->datamap = 0;
	n->nodemap = 0;
	n->tag = edit << 1 | kind;
	return n;
}

/* Free n, of `sz` bytes (node_bytes(m, n)). */
static void node_free_sized(sc_hamt *m, node *n, size_t sz)
{
	atomic_fetch_sub_explicit(&m->allocated, sz, memory_order_relaxed);
	if (m->flags & SC_HAMT_PROTECT)
		munmap(n, sz);
	else
		sc_pool_free(&m->pool, n, sz);
}

static void node_free(sc_hamt *m, node *n)
{
	node_free_sized(m, n, node_bytes(m, n));
}

static inline bool key_eq(const sc_hamt_key *k, const void *bytes, size_t len)
{
	return k->len == len && memcmp(k->bytes, bytes, len) == 0;
}

static inline uint64_t key_hash(const sc_hamt *m, const void *key, size_t len)
{
	if (m->hash)
		return m->hash(key, len, m->seed);
	return XXH3_64bits_withSeed(key, len, m->seed);
}

static inline uint64_t entry_hash(const sc_hamt *m, const entry *e)
{
	return key_hash(m, e->key->bytes, e->key->len);
}

static void release_pair(const sc_hamt *m, entry e)
{
	if (m->release)
		m->release(m->release_ctx, e.key, e.value);
}

/* ---- resized copies of bitmap nodes ------------------------------------- */

/* n plus entry x at `bit` (a free slot). */
static node *bm_with_entry(sc_hamt *m, const node *n, uint32_t id, uint32_t bit,
			   entry x)
{
	SC_REQUIRE(!((n->datamap | n->nodemap) & bit));
	unsigned ne = popcount(n->datamap), nc = popcount(n->nodemap);
	node *c = node_alloc(m, ne + 1, nc, id, NODE_BITMAP);
	if (!c)
		return NULL;
	unsigned i = popcount(n->datamap & (bit - 1));
	c->datamap = n->datamap | bit;
	c->nodemap = n->nodemap;
	memcpy(c->entries, n->entries, i * sizeof(entry));
	c->entries[i] = x;
	memcpy(c->entries + i + 1, n->entries + i, (ne - i) * sizeof(entry));
	memcpy(node_children(c), node_children(n), nc * sizeof(node *));
	return c;
}

/* n without the entry at `bit`. */
static node *bm_without_entry(sc_hamt *m, const node *n, uint32_t id,
			      uint32_t bit)
{
	SC_REQUIRE(n->datamap & bit);
	unsigned ne = popcount(n->datamap), nc = popcount(n->nodemap);
	node *c = node_alloc(m, ne - 1, nc, id, NODE_BITMAP);
	if (!c)
		return NULL;
	unsigned i = popcount(n->datamap & (bit - 1));
	c->datamap = n->datamap & ~bit;
	c->nodemap = n->nodemap;
	memcpy(c->entries, n->entries, i * sizeof(entry));
	memcpy(c->entries + i, n->entries + i + 1,
	       (ne - i - 1) * sizeof(entry));
	memcpy(node_children(c), node_children(n), nc * sizeof(node *));
	return c;
}

/* n with the entry at `bit` replaced by sub-node `child` (a split). */
static node *bm_entry_to_child(sc_hamt *m, const node *n, uint32_t id,
			       uint32_t bit, node *child)
{
	SC_REQUIRE((n->datamap & bit) && child);
	unsigned ne = popcount(n->datamap), nc = popcount(n->nodemap);
	node *c = node_alloc(m, ne - 1, nc + 1, id, NODE_BITMAP);
	if (!c)
		return NULL;
	unsigned i = popcount(n->datamap & (bit - 1));
	unsigned j = popcount(n->nodemap & (bit - 1));
	c->datamap = n->datamap & ~bit;
	c->nodemap = n->nodemap | bit;
	memcpy(c->entries, n->entries, i * sizeof(entry));
	memcpy(c->entries + i, n->entries + i + 1,
	       (ne - i - 1) * sizeof(entry));
	node **src = node_children(n), **dst = node_children(c);
	memcpy(dst, src, j * sizeof(node *));
	dst[j] = child;
	memcpy(dst + j + 1, src + j, (nc - j) * sizeof(node *));
	return c;
}

/* n with the sub-node at `bit` replaced by entry x (a collapse). */
static node *bm_child_to_entry(sc_hamt *m, const node *n, uint32_t id,
			       uint32_t bit, entry x)
{
	SC_REQUIRE(n->nodemap & bit);
	unsigned ne = popcount(n->datamap), nc = popcount(n->nodemap);
	node *c = node_alloc(m, ne + 1, nc - 1, id, NODE_BITMAP);
	if (!c)
		return NULL;
	unsigned i = popcount(n->datamap & (bit - 1));
	unsigned j = popcount(n->nodemap & (bit - 1));
	c->datamap = n->datamap | bit;
	c->nodemap = n->nodemap & ~bit;
	memcpy(c->entries, n->entries, i * sizeof(entry));
	c->entries[i] = x;
	memcpy(c->entries + i + 1, n->entries + i, (ne - i) * sizeof(entry));
	node **src = node_children(n), **dst = node_children(c);
	memcpy(dst, src, j * sizeof(node *));
	memcpy(dst + j, src + j + 1, (nc - j - 1) * sizeof(node *));
	return c;
}

/* Collision node n plus entry x, or without entry i (x NULL). */
static node *coll_resized(sc_hamt *m, const node *n, uint32_t id,
			  const entry *x, unsigned i)
{
	SC_REQUIRE(node_kind(n) == NODE_COLLISION && (x || i < n->datamap));
	unsigned cnt = n->datamap;
	node *c = node_alloc(m, x ? cnt + 1 : cnt - 1, 0, id, NODE_COLLISION);
	if (!c)
		return NULL;
	if (x) {
		memcpy(c->entries, n->entries, cnt * sizeof(entry));
		c->entries[cnt] = *x;
		c->datamap = cnt + 1;
	} else {
		memcpy(c->entries, n->entries, i * sizeof(entry));
		memcpy(c->entries + i, n->entries + i + 1,
		       (cnt - i - 1) * sizeof(entry));
		c->datamap = cnt - 1;
	}
	return c;
}

/* ==== lookup ============================================================= */

/* The entry for `key` in the tree under n (at `depth`), or NULL. */
static const entry *lookup_from(const node *n, unsigned depth, const void *key,
				size_t len, uint64_t h)
{
	for (; n; depth++) {
		if (depth == COLLISION_DEPTH) {
			for (unsigned i = 0; i < n->datamap; i++)
				if (key_eq(n->entries[i].key, key, len))
					return &n->entries[i];
			return NULL;
		}
		uint32_t bit = 1u << frag(h, depth);
		if (n->datamap & bit) {
			const entry *e =
			    &n->entries[popcount(n->datamap & (bit - 1))];
			return key_eq(e->key, key, len) ? e : NULL;
		}
		if (!(n->nodemap & bit))
			return NULL;
		n = node_children(n)[popcount(n->nodemap & (bit - 1))];
	}
	return NULL;
}

void *sc_hamt_get(const sc_hamt *map, sc_hamt_root root, const void *key,
		  size_t len)
{
	if (!root.node || len == 0 || len > SC_HAMT_KEY_MAX)
		return NULL;
	const entry *e =
	    lookup_from(root.node, 0, key, len, key_hash(map, key, len));
	return e ? e->value : NULL;
}

/* ==== map ================================================================ */

int sc_hamt_create(const sc_hamt_options *opt, sc_hamt **out)
{
	sc_hamt_options o = {0};
	if (opt)
		o = *opt;
	if (!out)
		return SC_EINVAL;
	*out = NULL;
	if (o.seed == 0) {
		if (getrandom(&o.seed, sizeof o.seed, 0) !=
		    (ssize_t)sizeof o.seed)
			return EIO;
	}
	sc_hamt *m = sc_calloc(1, sizeof *m);
	if (!m)
		return ENOMEM;
	m->seed = o.seed;
	m->hash = o.hash; /* NULL: XXH3, called directly on hot paths */
	m->release = o.release;
	m->release_ctx = o.release_ctx;
	m->fresh = o.fresh;
	m->flags = o.flags;
	m->next_edit = 1;
	sc_pool_init(&m->pool, NODE_POOL_BYTES, SC_POOL_DEFAULT);
	long pg = sysconf(_SC_PAGESIZE);
	m->page = pg > 0 ? (size_t)pg : 4096;
	atomic_init(&m->allocated, 0);
	*out = m;
	return SC_OK;
}

static void garbage_release_arrays(sc_hamt_garbage *g);

void sc_hamt_destroy(sc_hamt *map)
{
	if (!map)
		return;
	for (unsigned k = 0; k < map->nlanes; k++)
		sc_hamt_destroy(map->lanes[k]);
	sc_free(map->spare_edit);
	garbage_release_arrays(map->spare_garbage);
	sc_pool_destroy(&map->pool);
	sc_free(map);
}

size_t sc_hamt_allocated_bytes(const sc_hamt *map)
{
	sc_hamt *m = (sc_hamt *)(uintptr_t)map;
	/* A lane map's counter is what it allocated less what it freed: it
	 * may be "negative" (modulo 2^64), the sum is exact. */
	size_t n = atomic_load_explicit(&m->allocated, memory_order_relaxed);
	for (unsigned k = 0; k < m->nlanes; k++)
		n += atomic_load_explicit(&m->lanes[k]->allocated,
					  memory_order_relaxed);
	return n;
}

/* ==== edit =============================================================== */

int sc_hamt_edit_begin(sc_hamt *map, sc_hamt_root base, sc_hamt_edit **out)
{
	if (!map || !out)
		return SC_EINVAL;
	*out = NULL;
	sc_hamt_edit *e = map->spare_edit;
	if (e) {
		map->spare_edit = NULL;
		/* The queue's slots are written before they are read. */
		memset(e, 0, offsetof(sc_hamt_edit, q));
	} else if (!(e = sc_calloc(1, sizeof *e))) {
		return ENOMEM;
	}
	e->map = map;
	e->base = base;
	e->root = (node *)(uintptr_t)base.node;
	e->count = base.count;
	e->id = map->next_edit++;
	map->edits_open++;
	*out = e;
	return SC_OK;
}

static int edit_poison(sc_hamt_edit *e)
{
	e->poisoned = true;
	return ENOMEM;
}

/* Make room for `nodes` more garbage nodes and `pairs` more garbage pairs,
 * so that the change that follows cannot fail half-way on these lists. */
static int edit_reserve(sc_hamt_edit *e, size_t nodes, size_t pairs)
{
	sc_hamt_garbage *g = e->g;
	if (!g) {
		g = e->map->spare_garbage;
		if (g)
			e->map->spare_garbage = NULL;
		else if (!(g = sc_calloc(1, sizeof *g)))
			return ENOMEM;
		e->g = g;
	}
	if (g->nnodes + nodes > g->capnodes) {
		size_t cap = g->capnodes ? 2 * g->capnodes : 32;
		while (cap < g->nnodes + nodes)
			cap *= 2;
		gnode *p = sc_realloc(g->nodes, cap * sizeof *p);
		if (!p)
			return ENOMEM;
		g->nodes = p;
		g->capnodes = cap;
	}
	if (g->npairs + pairs > g->cappairs) {
		size_t cap = g->cappairs ? 2 * g->cappairs : 8;
		while (cap < g->npairs + pairs)
			cap *= 2;
		entry *p = sc_realloc(g->pairs, cap * sizeof *p);
		if (!p)
			return ENOMEM;
		g->pairs = p;
		g->cappairs = cap;
	}
	return SC_OK;
}

/* n has been replaced in the edit's tree: free it now if this edit made it,
 * else it belongs to the base version and waits in the garbage list. */
static void edit_retire(sc_hamt_edit *e, node *n)
{
	if (node_edit(n) == e->id) {
		node_free(e->map, n);
		return;
	}
	sc_hamt_garbage *g = e->g;
	SC_INSIST(g && g->nnodes < g->capnodes);
	size_t bytes = node_bytes(e->map, n);
	g->nodes[g->nnodes++] = (gnode){n, bytes};
	g->bytes += bytes;
}

/* Whether pair x, which sits in a node this edit owns, belongs to the base
 * version (copied along with its node) rather than to this edit. The
 * caller's hook answers without a descent; else look it up in the base. */
static bool pair_in_base(const sc_hamt_edit *e, entry x)
{
	const sc_hamt *m = e->map;
	if (!e->base.node)
		return false;
	if (m->fresh)
		return !m->fresh(m->release_ctx, x.key, x.value);
	const entry *b = lookup_from(e->base.node, 0, x.key->bytes, x.key->len,
				     entry_hash(m, &x));
	return b && b->key == x.key && b->value == x.value;
}

/* Pair x has left the edit's tree. If the base version holds it, readers
 * may still see it: garbage. Otherwise this edit inserted it: release now.
 * `from_published` says x sat in a published node, hence in the base. */
static void edit_drop(sc_hamt_edit *e, entry x, bool from_published)
{
	if (!from_published && !pair_in_base(e, x)) {
		release_pair(e->map, x);
		return;
	}
	sc_hamt_garbage *g = e->g;
	SC_INSIST(g && g->npairs < g->cappairs);
	g->pairs[g->npairs++] = x;
}

/* Make *slot owned by the edit (copy it if published) and return it. The
 * copy is linked in at once, so a failure later leaves a valid tree. */
static node *edit_own(sc_hamt_edit *e, node **slot)
{
	node *n = *slot;
	if (node_edit(n) == e->id)
		return n;
	SC_INSIST(node_edit(n) < e->id); /* published: made by an older edit */
	node *c = node_alloc(e->map, node_nentries(n), node_nchildren(n), e->id,
			     node_kind(n));
	if (!c)
		return NULL;
	size_t sz = node_size_for(node_nentries(n), node_nchildren(n));
	memcpy((char *)c + offsetof(node, entries),
	       (const char *)n + offsetof(node, entries),
	       sz - offsetof(node, entries));
	c->datamap = n->datamap;
	c->nodemap = n->nodemap;
	*slot = c;
	edit_retire(e, n);
	return c;
}

/* Free a chain of fresh nodes built by pair_subtree (each has at most one
 * child). */
static void free_fresh_chain(sc_hamt *m, node *n)
{
	while (n) {
		node *next = (node_kind(n) == NODE_BITMAP && n->nodemap)
				 ? node_children(n)[0]
				 : NULL;
		node_free(m, n);
		n = next;
	}
}

/* A new subtree at `depth` holding two entries with distinct keys. */
static node *pair_subtree(sc_hamt_edit *e, unsigned depth, entry a, uint64_t ha,
			  entry b, uint64_t hb)
{
	sc_hamt *m = e->map;
	unsigned d = depth;
	while (d < COLLISION_DEPTH && frag(ha, d) == frag(hb, d))
		d++;
	node *cur;
	if (d == COLLISION_DEPTH) {
		SC_INSIST(ha == hb);
		cur = node_alloc(m, 2, 0, e->id, NODE_COLLISION);
		if (!cur)
			return NULL;
		cur->datamap = 2;
		cur->entries[0] = a;
		cur->entries[1] = b;
	} else {
		cur = node_alloc(m, 2, 0, e->id, NODE_BITMAP);
		if (!cur)
			return NULL;
		unsigned fa = frag(ha, d), fb = frag(hb, d);
		cur->datamap = (1u << fa) | (1u << fb);
		cur->entries[fa < fb ? 0 : 1] = a;
		cur->entries[fa < fb ? 1 : 0] = b;
	}
	while (d > depth) {
		d--;
		node *p = node_alloc(m, 0, 1, e->id, NODE_BITMAP);
		if (!p) {
			free_fresh_chain(m, cur);
			return NULL;
		}
		p->nodemap = 1u << frag(ha, d);
		node_children(p)[0] = cur;
		cur = p;
	}
	return cur;
}

/* The path from the root to where `key` is or would be. */
typedef struct path {
	node *n[SC_HAMT_MAX_DEPTH];
	uint32_t bit[SC_HAMT_MAX_DEPTH]; /* slot taken at each depth */
	unsigned depth;			 /* depth of the last node */
	int found;			 /* entry index in n[depth], or -1 */
} path;

static void path_find(node *root, const void *key, size_t len, uint64_t h,
		      path *p)
{
	node *n = root;
	p->found = -1;
	for (unsigned depth = 0;; depth++) {
		p->n[depth] = n;
		p->depth = depth;
		if (depth == COLLISION_DEPTH) {
			for (unsigned i = 0; i < n->datamap; i++)
				if (key_eq(n->entries[i].key, key, len)) {
					p->found = (int)i;
					break;
				}
			return;
		}
		uint32_t bit = 1u << frag(h, depth);
		p->bit[depth] = bit;
		if (n->datamap & bit) {
			unsigned i = popcount(n->datamap & (bit - 1));
			if (key_eq(n->entries[i].key, key, len))
				p->found = (int)i;
			return;
		}
		if (!(n->nodemap & bit))
			return;
		n = node_children(n)[popcount(n->nodemap & (bit - 1))];
	}
}

/* Own the path down to (not including) depth `upto`; returns the slot that
 * holds the node at depth `upto`, or NULL on allocation failure. */
static node **edit_own_path(sc_hamt_edit *e, path *p, unsigned upto)
{
	node **slot = &e->root;
	for (unsigned d = 0; d < upto; d++) {
		node *n = *slot;
		/* Owned already (the common case inside a batch): no call. */
		if (node_edit(n) != e->id && !(n = edit_own(e, slot)))
			return NULL;
		p->n[d] = n;
		uint32_t bit = p->bit[d];
		SC_INSIST(node_kind(n) == NODE_BITMAP && (n->nodemap & bit));
		slot = &node_children(n)[popcount(n->nodemap & (bit - 1))];
	}
	return slot;
}

static bool key_valid(const sc_hamt_key *key)
{
	return key && key->len > 0 && key->len <= SC_HAMT_KEY_MAX;
}

/* ---- changes at a found position ----------------------------------------
 * Each takes the path path_find gave for the key and needs the garbage room
 * edit_reserve(e, SC_HAMT_MAX_DEPTH + 1, 1) makes: every node on the path
 * replaced, one pair dropped. */

/* x into the empty map. */
static int edit_insert_first(sc_hamt_edit *e, entry x, uint64_t h)
{
	node *n = node_alloc(e->map, 1, 0, e->id, NODE_BITMAP);
	if (!n)
		return edit_poison(e);
	n->datamap = 1u << frag(h, 0);
	n->entries[0] = x;
	e->root = n;
	e->count++;
	e->touched = true;
	return SC_OK;
}

/* x replaces the entry p found (same key bytes). */
static int edit_replace_at(sc_hamt_edit *e, path *p, entry x)
{
	unsigned d = p->depth;
	node *n = p->n[d];
	entry old = n->entries[p->found];
	bool published = node_edit(n) != e->id;
	node **slot = edit_own_path(e, p, d);
	if (!slot || !(n = edit_own(e, slot)))
		return edit_poison(e);
	n->entries[p->found] = x;
	edit_drop(e, old, published);
	e->touched = true;
	return SC_OK;
}

/* x (hash h) goes where p ended without finding its key. */
static int edit_insert_at(sc_hamt_edit *e, path *p, entry x, uint64_t h)
{
	sc_hamt *m = e->map;
	unsigned d = p->depth;
	node *n = p->n[d];
	node **slot = edit_own_path(e, p, d);
	if (!slot)
		return edit_poison(e);
	node *c;
	if (d == COLLISION_DEPTH) {
		c = coll_resized(m, n, e->id, &x, 0);
	} else {
		uint32_t bit = p->bit[d];
		if (n->datamap & bit) {
			/* Slot taken by another key: push both one level
			 * down. */
			entry *o =
			    &n->entries[popcount(n->datamap & (bit - 1))];
			node *sub =
			    pair_subtree(e, d + 1, *o, entry_hash(m, o), x, h);
			if (!sub)
				return edit_poison(e);
			c = bm_entry_to_child(m, n, e->id, bit, sub);
			if (!c)
				free_fresh_chain(m, sub);
		} else {
			c = bm_with_entry(m, n, e->id, bit, x);
		}
	}
	if (!c)
		return edit_poison(e);
	SC_ENSURE(node_kind(c) == NODE_COLLISION || !(c->datamap & c->nodemap));
	*slot = c;
	edit_retire(e, n);
	e->count++;
	e->touched = true;
	return SC_OK;
}

/* Remove the entry p found. */
static int edit_remove_at(sc_hamt_edit *e, path *p)
{
	sc_hamt *m = e->map;
	unsigned d = p->depth;
	node *b = p->n[d];
	entry gone = b->entries[p->found];
	bool published = node_edit(b) != e->id;
	unsigned ne = node_nentries(b), nc = node_nchildren(b);

	/* Where the change lands: `top` is the node that gets a new copy;
	 * the nodes below it on the path vanish. A non-root node left with a
	 * single entry and no children moves that entry up (canonical form),
	 * and so on while the parent is left in the same shape. */
	unsigned top = d;
	entry carry = {0};
	bool collapse = d > 0 && ne == 2 && nc == 0;
	if (collapse) {
		carry = b->entries[p->found == 0 ? 1 : 0];
		top = d - 1;
		while (top > 0 && node_nentries(p->n[top]) == 0 &&
		       node_nchildren(p->n[top]) == 1)
			top--;
	}

	node **slot = edit_own_path(e, p, top);
	if (!slot)
		return edit_poison(e);
	node *t = p->n[top], *c = NULL;
	SC_INSIST(*slot == t);
	SC_INSIST(!collapse ||
		  (node_kind(t) == NODE_BITMAP && (t->nodemap & p->bit[top])));
	if (collapse) {
		c = bm_child_to_entry(m, t, e->id, p->bit[top], carry);
		if (!c)
			return edit_poison(e);
	} else if (d == 0 && ne == 1 && nc == 0) {
		c = NULL; /* the map becomes empty */
	} else if (d == COLLISION_DEPTH) {
		c = coll_resized(m, t, e->id, NULL, (unsigned)p->found);
		if (!c)
			return edit_poison(e);
	} else {
		c = bm_without_entry(m, t, e->id, p->bit[top]);
		if (!c)
			return edit_poison(e);
	}
	SC_ENSURE(!c || !(c->datamap & c->nodemap) || node_kind(c));
	*slot = c;
	for (unsigned i = top; i <= d; i++)
		edit_retire(e, p->n[i]);
	edit_drop(e, gone, published);
	e->count--;
	e->touched = true;
	return SC_OK;
}

/* ---- public changes ----------------------------------------------------- */

/* Set x (hash h) now. */
static int edit_set_hashed(sc_hamt_edit *e, entry x, uint64_t h)
{
	if (edit_reserve(e, SC_HAMT_MAX_DEPTH + 1, 1))
		return edit_poison(e);
	if (!e->root)
		return edit_insert_first(e, x, h);
	path p;
	path_find(e->root, x.key->bytes, x.key->len, h, &p);
	if (p.found < 0)
		return edit_insert_at(e, &p, x, h);
	entry old = p.n[p.depth]->entries[p.found];
	if (old.key == x.key && old.value == x.value)
		return SC_OK;
	return edit_replace_at(e, &p, x);
}

/* ---- the set queue --------------------------------------------------------
 * A set is not done at once: it waits in a short queue while the sets
 * before it are done, and meanwhile each later call advances its walk one
 * level, prefetching the node (or the entry's key) that level leads to. By
 * the time a set is done its path is in cache: the memory misses of
 * several sets overlap instead of following one another, which is most of
 * the cost of a set in a big map. The queue is invisible to the caller:
 * every other call on the edit first does the queued sets in order
 * (setq_drain), so results are those of doing each set at once.
 *
 * A queued pair belongs to the map (the set returned SC_OK). When doing one
 * fails (ENOMEM) the edit is poisoned and the pair stays queued, so that
 * abort releases it; the call that hit the failure returns ENOMEM (for a
 * set, its own pair was not taken). */

static void prefetch_node(const node *n)
{
	/* Most nodes of a big map are at most four lines; the line of the
	 * slot wanted is not known before the bitmaps are read. */
	const char *p = (const char *)n;
	__builtin_prefetch(p);
	__builtin_prefetch(p + 64);
	__builtin_prefetch(p + 128);
	__builtin_prefetch(p + 192);
}

/* Step `stage` (>= 1) of a walk toward hash h: read the nodes at depths
 * below `stage` (an earlier step prefetched them) and prefetch what the
 * walk reaches at depth `stage`. At an entry, prefetch its key and value
 * (the caller compares the key, and usually reads the value). Returns
 * false when the walk has ended (nothing more to prefetch). */
static bool path_prefetch(const node *n, uint64_t h, unsigned stage, bool deep)
{
	for (unsigned d = 0; n; d++) {
		if (d == stage) {
			prefetch_node(n);
			return true;
		}
		if (d == COLLISION_DEPTH)
			return false;
		uint32_t bit = 1u << frag(h, d);
		if (n->datamap & bit) {
			const entry *x =
			    &n->entries[popcount(n->datamap & (bit - 1))];
			__builtin_prefetch(x->key);
			__builtin_prefetch(x->value);
			if (deep) {
				/* An update's callback reads the old value
				 * (the cache: the whole entity state). */
				const char *v = x->value;
				__builtin_prefetch(v + 64);
				__builtin_prefetch(v + 128);
				__builtin_prefetch(v + 192);
			}
			return false;
		}
		if (!(n->nodemap & bit))
			return false;
		n = node_children(n)[popcount(n->nodemap & (bit - 1))];
	}
	return false;
}

static void setq_advance(sc_hamt_edit *e)
{
	for (unsigned k = 0; k < e->qlen; k++) {
		queued_set *q = &e->q[(e->qhead + k) % SETQ_LEN];
		if (q->ready)
			continue;
		if (q->stage == 0) {
			/* Its key was prefetched when it was queued. */
			q->h = key_hash(e->map, q->key->bytes, q->key->len);
			q->stage = SETQ_FIRST_STAGE;
		}
		if (path_prefetch(e->root, q->h, q->stage, q->fn != NULL))
			q->stage++;
		else
			q->ready = true;
	}
}

static int edit_update_now(sc_hamt_edit *e, const void *key, size_t len,
			   uint64_t h, sc_hamt_update_fn fn, void *ctx);

/* Do the oldest queued change. */
static int setq_pop(sc_hamt_edit *e)
{
	queued_set *q = &e->q[e->qhead];
	if (q->fn) {
		queued_set u = *q;
		e->qhead = (e->qhead + 1) % SETQ_LEN;
		e->qlen--;
		int rc = edit_update_now(e, u.kb, u.klen, u.h, u.fn, u.ctx);
		if (rc)
			e->poisoned = true; /* nobody to hand the error to */
		u.done(u.ctx, rc);
		return rc;
	}
	if (q->stage == 0)
		q->h = key_hash(e->map, q->key->bytes, q->key->len);
	entry x = {q->key, q->value};
	int rc = edit_set_hashed(e, x, q->h);
	if (rc)
		return rc; /* poisoned; the pair stays queued for abort */
	e->qhead = (e->qhead + 1) % SETQ_LEN;
	e->qlen--;
	return SC_OK;
}

static int setq_drain(sc_hamt_edit *e)
{
	if (e->poisoned)
		return SC_EPOISONED;
	while (e->qlen) {
		int rc = setq_pop(e);
		if (rc)
			return rc;
	}
	return SC_OK;
}

/* Abort: release the queued pairs, but not a pair the tree holds or the
 * base version holds (a set of a pair already there is a no-op) nor one
 * queued twice. */
static void setq_release(sc_hamt_edit *e)
{
	sc_hamt *m = e->map;
	for (unsigned k = 0; k < e->qlen; k++) {
		const queued_set *q = &e->q[(e->qhead + k) % SETQ_LEN];
		if (q->fn) {
			q->done(q->ctx, SC_ESTATE);
			continue;
		}
		entry x = {q->key, q->value};
		bool held = false;
		for (unsigned j = 0; j < k && !held; j++) {
			const queued_set *o = &e->q[(e->qhead + j) % SETQ_LEN];
			held = !o->fn && o->key == x.key && o->value == x.value;
		}
		if (!held && e->root) {
			const entry *t =
			    lookup_from(e->root, 0, x.key->bytes, x.key->len,
					entry_hash(m, &x));
			held = t && t->key == x.key && t->value == x.value;
		}
		if (!held && !pair_in_base(e, x))
			release_pair(m, x);
	}
	e->qlen = 0;
}

int sc_hamt_edit_set(sc_hamt_edit *e, const sc_hamt_key *key, void *value)
{
	if (!e || !key_valid(key))
		return SC_EINVAL;
	if (e->poisoned)
		return SC_EPOISONED;
	if (e->qlen == SETQ_LEN) {
		int rc = setq_pop(e);
		if (rc)
			return rc;
	}
	setq_advance(e);
	__builtin_prefetch(key);
	e->q[(e->qhead + e->qlen) % SETQ_LEN] =
	    (queued_set){.key = key, .value = value};
	e->qlen++;
	return SC_OK;
}

int sc_hamt_edit_remove(sc_hamt_edit *e, const void *key, size_t len)
{
	if (!e || (!key && len))
		return SC_EINVAL;
	int rc = setq_drain(e);
	if (rc)
		return rc;
	if (!e->root || len == 0 || len > SC_HAMT_KEY_MAX)
		return SC_NOTFOUND;
	path p;
	path_find(e->root, key, len, key_hash(e->map, key, len), &p);
	if (p.found < 0)
		return SC_NOTFOUND;
	if (edit_reserve(e, SC_HAMT_MAX_DEPTH + 1, 1))
		return edit_poison(e);
	return edit_remove_at(e, &p);
}

int sc_hamt_edit_update(sc_hamt_edit *e, const void *key, size_t len,
			sc_hamt_update_fn fn, void *ctx)
{
	if (!e || !fn || !key || len == 0 || len > SC_HAMT_KEY_MAX)
		return SC_EINVAL;
	return sc_hamt_edit_update_hashed(e, key, len,
					  key_hash(e->map, key, len), fn, ctx);
}

int sc_hamt_edit_update_hashed(sc_hamt_edit *e, const void *key, size_t len,
			       uint64_t h, sc_hamt_update_fn fn, void *ctx)
{
	if (!e || !fn || !key || len == 0 || len > SC_HAMT_KEY_MAX)
		return SC_EINVAL;
	int rc = setq_drain(e);
	if (rc)
		return rc;
	return edit_update_now(e, key, len, h, fn, ctx);
}

int sc_hamt_edit_update_later(sc_hamt_edit *e, const void *key, size_t len,
			      uint64_t h, sc_hamt_update_fn fn,
			      sc_hamt_done_fn done, void *ctx)
{
	if (!e || !fn || !done || !key || len == 0 || len > SC_HAMT_KEY_MAX)
		return SC_EINVAL;
	if (e->poisoned)
		return SC_EPOISONED;
	if (e->qlen == SETQ_LEN) {
		int rc = setq_pop(e);
		if (rc)
			return rc;
	}
	e->q[(e->qhead + e->qlen) % SETQ_LEN] = (queued_set){
	    .fn = fn,
	    .done = done,
	    .ctx = ctx,
	    .kb = key,
	    .klen = len,
	    .h = h,
	    .stage = SETQ_FIRST_STAGE,
	};
	e->qlen++;
	setq_advance(e);
	return SC_OK;
}

/* The update itself, once the queue before it is done. */
static int edit_update_now(sc_hamt_edit *e, const void *key, size_t len,
			   uint64_t h, sc_hamt_update_fn fn, void *ctx)
{
	SC_REQUIRE(h == key_hash(e->map, key, len));
	int rc;
	path p;
	const entry *cur = NULL;
	if (e->root) {
		path_find(e->root, key, len, h, &p);
		if (p.found >= 0)
			cur = &p.n[p.depth]->entries[p.found];
	}
	const sc_hamt_key *nk = NULL;
	void *nv = NULL;
	rc = fn(ctx, cur ? cur->key : NULL, cur ? cur->value : NULL, &nk, &nv);
	if (rc)
		return rc;
	if (!nk) {
		if (!cur)
			return SC_OK;
		if (edit_reserve(e, SC_HAMT_MAX_DEPTH + 1, 1))
			return edit_poison(e);
		return edit_remove_at(e, &p);
	}
	if (!key_eq(nk, key, len))
		return SC_EINVAL;
	if (cur && cur->key == nk && cur->value == nv)
		return SC_OK;
	if (edit_reserve(e, SC_HAMT_MAX_DEPTH + 1, 1))
		return edit_poison(e);
	entry x = {nk, nv};
	if (!e->root)
		return edit_insert_first(e, x, h);
	if (!cur)
		return edit_insert_at(e, &p, x, h);
	return edit_replace_at(e, &p, x);
}

uint64_t sc_hamt_hash(const sc_hamt *map, const void *key, size_t len)
{
	return key_hash(map, key, len);
}

/* The lookups and the root below see the queued sets done. The edit is
 * not changed in what it holds, only in when its sets are done: the const
 * of these public signatures is kept by casting it away. */
static sc_hamt_edit *edit_settled(const sc_hamt_edit *ce)
{
	sc_hamt_edit *e = (sc_hamt_edit *)(uintptr_t)ce;
	if (e->qlen)
		(void)setq_drain(e); /* a failure poisons the edit */
	return e;
}

int sc_hamt_edit_settle(sc_hamt_edit *e)
{
	if (!e)
		return SC_EINVAL;
	return setq_drain(e);
}

void *sc_hamt_edit_get(const sc_hamt_edit *ce, const void *key, size_t len)
{
	if (!ce)
		return NULL;
	sc_hamt_edit *e = edit_settled(ce);
	sc_hamt_root r = {e->root, e->count};
	return sc_hamt_get(e->map, r, key, len);
}

sc_hamt_root sc_hamt_edit_root(const sc_hamt_edit *ce)
{
	sc_hamt_root r = {NULL, 0};
	if (ce) {
		sc_hamt_edit *e = edit_settled(ce);
		r.node = e->root;
		r.count = e->count;
	}
	return r;
}

/* ==== commit / abort / garbage ========================================== */

/* SC_HAMT_PROTECT: make every node the edit made read-only. Owned nodes
 * sit only under owned nodes, so the walk stops at the first published
 * one. */
static void protect_walk(sc_hamt *m, node *n, uint64_t id)
{
	if (!n || node_edit(n) != id)
		return;
	if (node_kind(n) == NODE_BITMAP) {
		node **ch = node_children(n);
		for (unsigned i = 0, nc = node_nchildren(n); i < nc; i++)
			protect_walk(m, ch[i], id);
	}
	mprotect(n, node_bytes(m, n), PROT_READ);
}

static void garbage_release_arrays(sc_hamt_garbage *g)
{
	if (!g)
		return;
	sc_free(g->nodes);
	sc_free(g->pairs);
	sc_free(g);
}

/* Keep an emptied garbage list for the next edit unless one is kept
 * already or it grew beyond what batches of edits of some ten thousand
 * changes need (a huge edit should not pin its arrays; up to this size,
 * growing them again for every batch costs more than the memory). */
static void garbage_recycle(sc_hamt *m, sc_hamt_garbage *g)
{
	while (g) {
		sc_hamt_garbage *next = g->next;
		sc_hamt *to = g->owner ? g->owner : m;
		g->owner = NULL;
		g->next = NULL;
		if (to->spare_garbage || g->capnodes > 32768 ||
		    g->cappairs > 16384) {
			garbage_release_arrays(g);
		} else {
			g->nnodes = g->npairs = 0;
			g->bytes = 0;
			to->spare_garbage = g;
		}
		g = next;
	}
}

static void edit_recycle(sc_hamt *m, sc_hamt_edit *e)
{
	m->edits_open--;
	if (m->spare_edit)
		sc_free(e);
	else
		m->spare_edit = e;
}

int sc_hamt_edit_commit(sc_hamt_edit *e, sc_hamt_root *out,
			sc_hamt_garbage **garbage)
{
	if (!e || !out || !garbage)
		return SC_EINVAL;
	int rc = setq_drain(e);
	if (rc)
		return rc;
	sc_hamt *m = e->map;
	if (m->flags & SC_HAMT_PROTECT)
		protect_walk(m, e->root, e->id);
	out->node = e->root;
	out->count = e->count;
	/* Past a small amount, blocks this edit freed and did not reuse go
	 * back to malloc: the pool is for the garbage the caller frees after
	 * a commit, which the next edit asks for again, not to pin memory
	 * after a large edit. What a batch of edits keeps in it between
	 * batches is about one garbage list (freed by the previous promote,
	 * taken again by this edit, sizes not matching exactly): that much
	 * stays, or a big batch would hand its blocks to malloc and take
	 * them back on every commit. */
	sc_hamt_garbage *g = e->g;
	size_t keep = g ? 2 * g->bytes : 0;
	if (keep < NODE_POOL_KEEP_BYTES)
		keep = NODE_POOL_KEEP_BYTES;
	if (m->pool.bytes > keep)
		sc_pool_trim(&m->pool);
	if (g && g->nnodes == 0 && g->npairs == 0 && !g->next) {
		garbage_recycle(m, g);
		g = NULL;
	}
	*garbage = g;
	edit_recycle(m, e);
	return SC_OK;
}

/* Free the nodes this edit made under n and release the pairs in them that
 * the base version does not hold. */
static void abort_free(sc_hamt_edit *e, node *n)
{
	if (!n || node_edit(n) != e->id)
		return;
	sc_hamt *m = e->map;
	for (unsigned i = 0, ne = node_nentries(n); i < ne; i++) {
		entry x = n->entries[i];
		if (!pair_in_base(e, x))
			release_pair(m, x);
	}
	if (node_kind(n) == NODE_BITMAP) {
		node **ch = node_children(n);
		for (unsigned i = 0, nc = node_nchildren(n); i < nc; i++)
			abort_free(e, ch[i]);
	}
	node_free(m, n);
}

void sc_hamt_edit_abort(sc_hamt_edit *e)
{
	if (!e)
		return;
	setq_release(e);
	abort_free(e, e->root);
	/* The garbage lists name what the base still holds: forget them. */
	garbage_recycle(e->map, e->g);
	edit_recycle(e->map, e);
}

void sc_hamt_garbage_info_get(const sc_hamt_garbage *g,
			      sc_hamt_garbage_info *out)
{
	if (!out)
		return;
	out->nodes = out->bytes = out->entries = 0;
	for (; g; g = g->next) {
		out->nodes += g->nnodes;
		out->bytes += g->bytes;
		out->entries += g->npairs;
	}
}

void sc_hamt_garbage_free(sc_hamt *map, sc_hamt_garbage *g)
{
	if (!g)
		return;
	/* The nodes and pairs of a garbage list are cold (replaced a whole
	 * batch ago) and scattered. A node's size was noted when it was
	 * replaced and the pool keeps freed blocks without writing into them,
	 * so freeing nodes touches none; the release hook reads each pair's
	 * value: load those a few ahead, so that their misses overlap. */
	enum { AHEAD = 16 };
	for (sc_hamt_garbage *l = g; l; l = l->next) {
		sc_hamt *m = l->owner ? l->owner : map;
		for (size_t i = 0; i < l->nnodes; i++)
			node_free_sized(m, l->nodes[i].n, l->nodes[i].bytes);
		for (size_t i = 0; i < l->npairs; i++) {
			if (i + AHEAD < l->npairs)
				__builtin_prefetch(l->pairs[i + AHEAD].value,
						   1);
			release_pair(m, l->pairs[i]);
		}
	}
	garbage_recycle(map, g);
}

size_t sc_hamt_garbage_sort(sc_hamt *map, sc_hamt_garbage *g,
			    sc_hamt_garbage *by[])
{
	size_t moved = 0;
	while (g) {
		sc_hamt_garbage *next = g->next;
		unsigned k = map->nlanes;
		if (g->owner) {
			for (k = 0; k < map->nlanes; k++)
				if (map->lanes[k] == g->owner)
					break;
			SC_INSIST(k < map->nlanes);
			moved += g->nnodes + g->npairs;
		}
		g->next = by[k];
		by[k] = g;
		g = next;
	}
	return moved;
}

static void free_tree(sc_hamt *m, node *n)
{
	if (!n)
		return;
	for (unsigned i = 0, ne = node_nentries(n); i < ne; i++)
		release_pair(m, n->entries[i]);
	if (node_kind(n) == NODE_BITMAP) {
		node **ch = node_children(n);
		for (unsigned i = 0, nc = node_nchildren(n); i < nc; i++)
			free_tree(m, ch[i]);
	}
	node_free(m, n);
}

void sc_hamt_root_free(sc_hamt *map, sc_hamt_root root)
{
	if (!map)
		return;
	free_tree(map, (node *)(uintptr_t)root.node);
}

/* ==== iteration ========================================================== */

void sc_hamt_iter_init(sc_hamt_iter *it, sc_hamt_root root)
{
	it->depth = root.node ? 0 : -1;
	it->stack[0] = root.node;
	it->pos[0] = 0;
}

bool sc_hamt_iter_next(sc_hamt_iter *it, const sc_hamt_key **key, void **value)
{
	while (it->depth >= 0) {
		const node *n = it->stack[it->depth];
		uint32_t p = it->pos[it->depth];
		unsigned ne = node_nentries(n);
		if (p < ne) {
			it->pos[it->depth] = p + 1;
			if (key)
				*key = n->entries[p].key;
			if (value)
				*value = n->entries[p].value;
			return true;
		}
		if (node_kind(n) == NODE_BITMAP && p < ne + node_nchildren(n)) {
			it->pos[it->depth] = p + 1;
			it->depth++;
			it->stack[it->depth] = node_children(n)[p - ne];
			it->pos[it->depth] = 0;
			continue;
		}
		it->depth--;
	}
	return false;
}

/* ==== diff =============================================================== */

typedef struct diff_ctx {
	const sc_hamt *m;
	sc_hamt_diff_fn fn;
	void *ctx;
} diff_ctx;

/* Report every entry under n as `kind` (ADDED or REMOVED). */
static int diff_all(const diff_ctx *dc, const node *n, sc_diff_kind kind)
{
	for (unsigned i = 0, ne = node_nentries(n); i < ne; i++) {
		const entry *x = &n->entries[i];
		int rc = kind == SC_DIFF_ADDED
			     ? dc->fn(dc->ctx, kind, x->key, NULL, x->value)
			     : dc->fn(dc->ctx, kind, x->key, x->value, NULL);
		if (rc)
			return rc;
	}
	if (node_kind(n) == NODE_BITMAP) {
		node **ch = node_children(n);
		for (unsigned i = 0, nc = node_nchildren(n); i < nc; i++) {
			int rc = diff_all(dc, ch[i], kind);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* One entry x on one side against a subtree s on the other, at the same
 * position. x_old says x is in the old version. */
static int diff_entry_subtree_rec(const diff_ctx *dc, const entry *x,
				  bool x_old, const node *s, bool *found)
{
	for (unsigned i = 0, ne = node_nentries(s); i < ne; i++) {
		const entry *y = &s->entries[i];
		int rc = 0;
		if (!*found && key_eq(y->key, x->key->bytes, x->key->len)) {
			*found = true;
			if (x->value != y->value)
				rc = x_old ? dc->fn(dc->ctx, SC_DIFF_CHANGED,
						    y->key, x->value, y->value)
					   : dc->fn(dc->ctx, SC_DIFF_CHANGED,
						    x->key, y->value, x->value);
		} else {
			rc = x_old ? dc->fn(dc->ctx, SC_DIFF_ADDED, y->key,
					    NULL, y->value)
				   : dc->fn(dc->ctx, SC_DIFF_REMOVED, y->key,
					    y->value, NULL);
		}
		if (rc)
			return rc;
	}
	if (node_kind(s) == NODE_BITMAP) {
		node **ch = node_children(s);
		for (unsigned i = 0, nc = node_nchildren(s); i < nc; i++) {
			int rc =
			    diff_entry_subtree_rec(dc, x, x_old, ch[i], found);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int diff_entry_subtree(const diff_ctx *dc, const entry *x, bool x_old,
			      const node *s)
{
	bool found = false;
	int rc = diff_entry_subtree_rec(dc, x, x_old, s, &found);
	if (rc || found)
		return rc;
	return x_old ? dc->fn(dc->ctx, SC_DIFF_REMOVED, x->key, x->value, NULL)
		     : dc->fn(dc->ctx, SC_DIFF_ADDED, x->key, NULL, x->value);
}

static int diff_entries(const diff_ctx *dc, const entry *a, const entry *b)
{
	/* The same pair on both sides (most entries of a changed node): no
	 * need to read the key. */
	if (a->key == b->key && a->value == b->value)
		return 0;
	if (key_eq(a->key, b->key->bytes, b->key->len)) {
		if (a->value == b->value)
			return 0;
		return dc->fn(dc->ctx, SC_DIFF_CHANGED, b->key, a->value,
			      b->value);
	}
	int rc = dc->fn(dc->ctx, SC_DIFF_REMOVED, a->key, a->value, NULL);
	return rc ? rc : dc->fn(dc->ctx, SC_DIFF_ADDED, b->key, NULL, b->value);
}

static int diff_collision(const diff_ctx *dc, const node *a, const node *b)
{
	for (unsigned i = 0; i < a->datamap; i++) {
		const entry *x = &a->entries[i], *y = NULL;
		for (unsigned j = 0; j < b->datamap && !y; j++)
			if (key_eq(b->entries[j].key, x->key->bytes,
				   x->key->len))
				y = &b->entries[j];
		int rc = 0;
		if (!y)
			rc = dc->fn(dc->ctx, SC_DIFF_REMOVED, x->key, x->value,
				    NULL);
		else if (y->value != x->value)
			rc = dc->fn(dc->ctx, SC_DIFF_CHANGED, y->key, x->value,
				    y->value);
		if (rc)
			return rc;
	}
	for (unsigned j = 0; j < b->datamap; j++) {
		const entry *y = &b->entries[j];
		bool in_a = false;
		for (unsigned i = 0; i < a->datamap && !in_a; i++)
			in_a = key_eq(a->entries[i].key, y->key->bytes,
				      y->key->len);
		if (!in_a) {
			int rc = dc->fn(dc->ctx, SC_DIFF_ADDED, y->key, NULL,
					y->value);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int diff_node(const diff_ctx *dc, const node *a, const node *b,
		     unsigned depth)
{
	if (a == b)
		return 0;
	if (!a)
		return diff_all(dc, b, SC_DIFF_ADDED);
	if (!b)
		return diff_all(dc, a, SC_DIFF_REMOVED);
	if (depth == COLLISION_DEPTH)
		return diff_collision(dc, a, b);
	uint32_t all = a->datamap | a->nodemap | b->datamap | b->nodemap;
	while (all) {
		uint32_t bit = all & -all;
		all &= all - 1;
		const entry *ae = NULL, *be = NULL;
		const node *ac = NULL, *bc = NULL;
		if (a->datamap & bit)
			ae = &a->entries[popcount(a->datamap & (bit - 1))];
		else if (a->nodemap & bit)
			ac = node_children(a)[popcount(a->nodemap & (bit - 1))];
		if (b->datamap & bit)
			be = &b->entries[popcount(b->datamap & (bit - 1))];
		else if (b->nodemap & bit)
			bc = node_children(b)[popcount(b->nodemap & (bit - 1))];
		int rc;
		if (ae && be)
			rc = diff_entries(dc, ae, be);
		else if (ae && bc)
			rc = diff_entry_subtree(dc, ae, true, bc);
		else if (ac && be)
			rc = diff_entry_subtree(dc, be, false, ac);
		else if (ac || bc)
			rc = diff_node(dc, ac, bc, depth + 1);
		else if (ae)
			rc = dc->fn(dc->ctx, SC_DIFF_REMOVED, ae->key,
				    ae->value, NULL);
		else
			rc = dc->fn(dc->ctx, SC_DIFF_ADDED, be->key, NULL,
				    be->value);
		if (rc)
			return rc;
	}
	return 0;
}

int sc_hamt_diff(const sc_hamt *map, sc_hamt_root old_root,
		 sc_hamt_root new_root, sc_hamt_diff_fn fn, void *ctx)
{
	if (!fn)
		return SC_EINVAL;
	diff_ctx dc = {map, fn, ctx};
	return diff_node(&dc, old_root.node, new_root.node, 0);
}

/* ==== stats & check ====================================================== */

static void stats_walk(const sc_hamt *m, const node *n, unsigned depth,
		       sc_hamt_stats *s)
{
	s->nodes++;
	if (node_kind(n) == NODE_COLLISION)
		s->collision_nodes++;
	s->entries += node_nentries(n);
	s->bytes += node_bytes(m, n);
	if (depth > s->max_depth)
		s->max_depth = depth;
	if (depth <= SC_HAMT_MAX_DEPTH)
		s->depth_histogram[depth]++;
	if (node_kind(n) == NODE_BITMAP) {
		node **ch = node_children(n);
		for (unsigned i = 0, nc = node_nchildren(n); i < nc; i++)
			stats_walk(m, ch[i], depth + 1, s);
	}
}

void sc_hamt_stats_get(const sc_hamt *map, sc_hamt_root root,
		       sc_hamt_stats *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof *out);
	if (root.node)
		stats_walk(map, root.node, 0, out);
}

typedef struct check_ctx {
	const sc_hamt *m;
	char *why;
	size_t why_len;
	size_t entries;
} check_ctx;

static int check_fail(check_ctx *cc, unsigned depth, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int check_fail(check_ctx *cc, unsigned depth, const char *fmt, ...)
{
	if (cc->why && cc->why_len) {
		char msg[160];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		snprintf(cc->why, cc->why_len, "hamt corrupt at depth %u: %s",
			 depth, msg);
	}
	return SC_ECORRUPT;
}

/* Bits of the hash fixed by the path to a node at `depth`. */
static uint64_t prefix_mask(unsigned depth)
{
	unsigned bits = LEVEL_BITS * depth;
	return bits >= 64 ? ~0ull : (1ull << bits) - 1;
}

static int check_key(check_ctx *cc, const entry *x, unsigned depth)
{
	if (!x->key)
		return check_fail(cc, depth, "entry with a NULL key");
	if (x->key->len == 0 || x->key->len > SC_HAMT_KEY_MAX)
		return check_fail(cc, depth, "key of invalid length %u",
				  x->key->len);
	return SC_OK;
}

static int check_node(check_ctx *cc, const node *n, unsigned depth,
		      uint64_t prefix)
{
	const sc_hamt *m = cc->m;
	if (!n)
		return check_fail(cc, depth, "NULL child");
	if (depth == COLLISION_DEPTH) {
		if (node_kind(n) != NODE_COLLISION)
			return check_fail(cc, depth,
					  "node of kind %u at the collision "
					  "level",
					  node_kind(n));
		if (n->datamap < 2 || n->nodemap != 0)
			return check_fail(cc, depth,
					  "collision node with %u entries",
					  n->datamap);
		for (unsigned i = 0; i < n->datamap; i++) {
			const entry *x = &n->entries[i];
			int rc = check_key(cc, x, depth);
			if (rc)
				return rc;
			if (entry_hash(m, x) != prefix)
				return check_fail(cc, depth,
						  "collision entry %u has "
						  "another hash",
						  i);
			for (unsigned j = 0; j < i; j++)
				if (key_eq(n->entries[j].key, x->key->bytes,
					   x->key->len))
					return check_fail(cc, depth,
							  "duplicate key in "
							  "collision node "
							  "(entry %u)",
							  i);
		}
		cc->entries += n->datamap;
		return SC_OK;
	}
	if (node_kind(n) != NODE_BITMAP)
		return check_fail(cc, depth,
				  "node of kind %u above the collision level",
				  node_kind(n));
	if (n->datamap & n->nodemap)
		return check_fail(cc, depth,
				  "slot mask %#x both entry and child",
				  n->datamap & n->nodemap);
	if (depth == COLLISION_DEPTH - 1 && ((n->datamap | n->nodemap) >> 16))
		return check_fail(cc, depth,
				  "slot mask %#x beyond the 4 last bits",
				  n->datamap | n->nodemap);
	unsigned ne = popcount(n->datamap), nc = popcount(n->nodemap);
	if (depth > 0 && ne + nc == 0)
		return check_fail(cc, depth, "empty node below the root");
	if (depth > 0 && ne == 1 && nc == 0)
		return check_fail(cc, depth,
				  "single-entry leaf below the root "
				  "(not canonical)");
	uint64_t mask = prefix_mask(depth);
	for (unsigned i = 0; i < ne; i++) {
		const entry *x = &n->entries[i];
		int rc = check_key(cc, x, depth);
		if (rc)
			return rc;
		uint64_t h = entry_hash(m, x);
		if ((h & mask) != prefix)
			return check_fail(cc, depth,
					  "entry %u under the wrong prefix", i);
		uint32_t bit = 1u << frag(h, depth);
		if (!(n->datamap & bit) ||
		    popcount(n->datamap & (bit - 1)) != i)
			return check_fail(cc, depth, "entry %u not at its slot",
					  i);
	}
	cc->entries += ne;
	node **ch = node_children(n);
	uint32_t map = n->nodemap;
	for (unsigned i = 0; i < nc; i++) {
		uint32_t bit = map & -map;
		map &= map - 1;
		uint64_t slot = (uint64_t)__builtin_ctz(bit);
		int rc = check_node(cc, ch[i], depth + 1,
				    prefix | (slot << (LEVEL_BITS * depth)));
		if (rc)
			return rc;
	}
	return SC_OK;
}

int sc_hamt_check(const sc_hamt *map, sc_hamt_root root, char *why,
		  size_t why_len)
{
	check_ctx cc = {map, why, why_len, 0};
	if (why && why_len)
		why[0] = '\0';
	if (!root.node) {
		if (root.count != 0)
			return check_fail(&cc, 0, "empty map with count %zu",
					  root.count);
		return SC_OK;
	}
	const node *r = root.node;
	if (node_kind(r) == NODE_BITMAP && (r->datamap | r->nodemap) == 0)
		return check_fail(&cc, 0, "empty root node");
	int rc = check_node(&cc, r, 0, 0);
	if (rc)
		return rc;
	if (cc.entries != root.count) {
		if (why && why_len)
			snprintf(why, why_len,
				 "hamt corrupt: count says %zu, tree holds %zu",
				 root.count, cc.entries);
		return SC_ECORRUPT;
	}
	return SC_OK;
}

/* ==== lanes ============================================================== */

/* The root slots lane k of n owns. */
static uint32_t lane_mask(unsigned k, unsigned n)
{
	uint32_t mask = 0;
	for (unsigned s = k; s < 32; s += n)
		mask |= 1u << s;
	return mask;
}

int sc_hamt_lanes_setup(sc_hamt *map, unsigned n, sc_hamt_release_fn release,
			sc_hamt_fresh_fn fresh, void *const ctx[])
{
	if (!map || !ctx || n < 2 || n > SC_HAMT_LANES_MAX || map->nlanes ||
	    map->edits_open)
		return SC_EINVAL;
	for (unsigned k = 0; k < n; k++) {
		sc_hamt *l = sc_calloc(1, sizeof *l);
		if (!l) {
			while (k--) {
				sc_hamt_destroy(map->lanes[k]);
				map->lanes[k] = NULL;
			}
			return ENOMEM;
		}
		l->seed = map->seed;
		l->hash = map->hash;
		l->release = release;
		l->release_ctx = ctx[k];
		l->fresh = fresh;
		l->flags = map->flags;
		l->page = map->page;
		atomic_init(&l->allocated, 0);
		sc_pool_init(&l->pool, NODE_POOL_BYTES, SC_POOL_DEFAULT);
		map->lanes[k] = l;
	}
	map->nlanes = n;
	return SC_OK;
}

/* A node of the lane's map holding the slots of e's root that lane k of n
 * owns (NULL if none), owned by the edit. */
static int lane_root(const sc_hamt_edit *e, sc_hamt *lm, unsigned k, unsigned n,
		     node **out)
{
	const node *r = e->root;
	*out = NULL;
	if (!r)
		return SC_OK;
	uint32_t mask = lane_mask(k, n);
	uint32_t dm = r->datamap & mask, nm = r->nodemap & mask;
	if (!(dm | nm))
		return SC_OK;
	node *v =
	    node_alloc(lm, popcount(dm), popcount(nm), e->id, NODE_BITMAP);
	if (!v)
		return ENOMEM;
	v->datamap = dm;
	v->nodemap = nm;
	node **ch = node_children(v), **rch = node_children(r);
	unsigned i = 0, j = 0;
	for (unsigned s = 0; s < 32; s++) {
		uint32_t bit = 1u << s;
		if (dm & bit)
			v->entries[i++] =
			    r->entries[popcount(r->datamap & (bit - 1))];
		else if (nm & bit)
			ch[j++] = rch[popcount(r->nodemap & (bit - 1))];
	}
	*out = v;
	return SC_OK;
}

/* Open lanes[0..n-1] on e: lane k on lane map `first` + k, holding the
 * root slots lane k of n owns (n 1: the whole tree). */
static int lanes_open(sc_hamt_edit *e, sc_hamt_edit *lanes[], unsigned first,
		      unsigned n)
{
	sc_hamt *m = e->map;
	SC_REQUIRE(n >= 1 && first + n <= m->nlanes);
	int rc = setq_drain(e);
	if (rc)
		return rc;
	for (unsigned k = 0; k < n; k++)
		lanes[k] = NULL;
	for (unsigned k = 0; k < n; k++) {
		sc_hamt *lm = m->lanes[first + k];
		sc_hamt_edit *l = lm->spare_edit;
		if (l) {
			lm->spare_edit = NULL;
			memset(l, 0, offsetof(sc_hamt_edit, q));
		} else if (!(l = sc_calloc(1, sizeof *l))) {
			goto nomem;
		}
		l->map = lm;
		lm->edits_open++; /* edit_recycle closes it */
		l->base = e->base;
		l->id = e->id;
		l->count = 0; /* the lane's change to the count */
		lanes[k] = l;
		if (lane_root(e, lm, k, n, &l->root))
			goto nomem;
	}
	return SC_OK;
nomem:
	for (unsigned k = 0; k < n; k++) {
		sc_hamt_edit *l = lanes[k];
		if (!l)
			continue;
		if (l->root)
			node_free(l->map, l->root);
		edit_recycle(l->map, l);
		lanes[k] = NULL;
	}
	return edit_poison(e);
}

int sc_hamt_lanes_split(sc_hamt_edit *e, sc_hamt_edit *lanes[])
{
	SC_REQUIRE(e->map->nlanes >= 2);
	return lanes_open(e, lanes, 0, e->map->nlanes);
}

int sc_hamt_lane_take(sc_hamt_edit *e, unsigned k, sc_hamt_edit **lane)
{
	SC_REQUIRE(k < e->map->nlanes);
	return lanes_open(e, lane, k, 1);
}

static void lanes_close(sc_hamt_edit *e, sc_hamt_edit *lanes[], unsigned n);

#ifdef SC_DEBUG
/* Whether root a holds the same slots as the lanes' roots (checked when
 * no lane changed anything). */
static bool roots_same(const node *a, uint32_t dm, uint32_t nm,
		       sc_hamt_edit *lanes[], unsigned n)
{
	if (!a)
		return !(dm | nm);
	if (a->datamap != dm || a->nodemap != nm)
		return false;
	node *const *ach = node_children(a);
	for (unsigned s = 0; s < 32; s++) {
		uint32_t bit = 1u << s;
		const node *l = lanes[s % n]->root;
		if (dm & bit) {
			const entry *x =
			    &a->entries[popcount(a->datamap & (bit - 1))];
			const entry *y =
			    &l->entries[popcount(l->datamap & (bit - 1))];
			if (x->key != y->key || x->value != y->value)
				return false;
		} else if (nm & bit) {
			if (ach[popcount(a->nodemap & (bit - 1))] !=
			    node_children(l)[popcount(l->nodemap & (bit - 1))])
				return false;
		}
	}
	return true;
}
#endif

/* Join lanes[0..n-1] (opened by lanes_open with this n) into e. */
static int lanes_join(sc_hamt_edit *e, sc_hamt_edit *lanes[], unsigned n)
{
	sc_hamt *m = e->map;
	uint32_t dm = 0, nm = 0;
	size_t count = e->count;
	bool chain = false, touched = false;
	for (unsigned k = 0; k < n; k++) {
		const sc_hamt_edit *l = lanes[k];
		SC_REQUIRE(!l->poisoned && l->qlen == 0);
		count += l->count;
		touched |= l->touched;
		if (l->root) {
			SC_INSIST(node_edit(l->root) == e->id);
			SC_INSIST(!((l->root->datamap | l->root->nodemap) &
				    ~lane_mask(k, n)));
			dm |= l->root->datamap;
			nm |= l->root->nodemap;
		}
		if (l->g && (l->g->nnodes || l->g->npairs))
			chain = true;
	}
	node *r = e->root, *nr = NULL;
	/* A serial edit that changes anything owns the root, copying a
	 * published one into the garbage, even when the changes cancel out
	 * (an id inserted, then removed): so does the join. */
	bool same = !touched;
	SC_INSIST(touched || roots_same(r, dm, nm, lanes, n));
	/* Everything that can fail first: the root's place in the garbage,
	 * the list the lanes' lists chain to, the new root. */
	if ((!same && r && node_edit(r) != e->id) || chain) {
		if (edit_reserve(e, 1, 0))
			goto nomem;
	}
	if (!same && (dm | nm)) {
		nr = node_alloc(m, popcount(dm), popcount(nm), e->id,
				NODE_BITMAP);
		if (!nr)
			goto nomem;
		nr->datamap = dm;
		nr->nodemap = nm;
		node **ch = node_children(nr);
		unsigned i = 0, j = 0;
		for (unsigned s = 0; s < 32; s++) {
			uint32_t bit = 1u << s;
			const node *l = lanes[s % n]->root;
			if (dm & bit)
				nr->entries[i++] = l->entries[popcount(
				    l->datamap & (bit - 1))];
			else if (nm & bit)
				ch[j++] = node_children(
				    l)[popcount(l->nodemap & (bit - 1))];
		}
	}
	if (!same) {
		if (r)
			edit_retire(e, r);
		e->root = nr;
		e->touched = true;
	}
	e->count = count;
	for (unsigned k = 0; k < n; k++) {
		sc_hamt_edit *l = lanes[k];
		sc_hamt *lm = l->map;
		if (l->root)
			node_free(lm, l->root);
		sc_hamt_garbage *g = l->g;
		l->g = NULL;
		if (g && (g->nnodes || g->npairs)) {
			g->owner = lm;
			g->next = e->g->next;
			e->g->next = g;
		} else {
			garbage_recycle(lm, g);
		}
		edit_recycle(lm, l);
		lanes[k] = NULL;
	}
	return SC_OK;
nomem:
	lanes_close(e, lanes, n);
	return ENOMEM;
}

int sc_hamt_lanes_join(sc_hamt_edit *e, sc_hamt_edit *lanes[])
{
	return lanes_join(e, lanes, e->map->nlanes);
}

int sc_hamt_lane_give(sc_hamt_edit *e, sc_hamt_edit *lane)
{
	return lanes_join(e, &lane, 1);
}

/* Abort lanes[0..n-1] (opened by lanes_open with this n) and poison e. */
static void lanes_close(sc_hamt_edit *e, sc_hamt_edit *lanes[], unsigned n)
{
	sc_hamt *m = e->map;
	/* Every node the edit made below the root is reachable from exactly
	 * one lane's root (the lanes own the root's slots between them), and
	 * every pair it inserted is in a lane's tree, or was dropped by the
	 * lane that replaced it. So: abort each lane, then free the root
	 * alone. */
	for (unsigned k = 0; k < n; k++) {
		sc_hamt_edit *l = lanes[k];
		if (!l)
			continue;
		setq_release(l);
		abort_free(l, l->root);
		garbage_recycle(l->map, l->g);
		l->g = NULL;
		edit_recycle(l->map, l);
		lanes[k] = NULL;
	}
	if (e->root && node_edit(e->root) == e->id)
		node_free(m, e->root);
	e->root = NULL;
	e->count = 0;
	e->poisoned = true;
}

void sc_hamt_lanes_abort(sc_hamt_edit *e, sc_hamt_edit *lanes[])
{
	lanes_close(e, lanes, e->map->nlanes);
}

void sc_hamt_lane_drop(sc_hamt_edit *e, sc_hamt_edit *lane)
{
	lanes_close(e, &lane, 1);
}
