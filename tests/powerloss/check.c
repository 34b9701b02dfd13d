/*
 * Power-loss test: build crash states from a trace and check each one.
 *
 *   pl_check TRACE PREFIX STORE MODE WORKDIR STATES SEED [--gate]
 *            [--gate-create]
 *   pl_check --dump TRACE      (the records as text, one a line)
 *
 * TRACE was written by the recorder (recorder.c) while pl_workload ran
 * with SC_PL_PREFIX=PREFIX and its store in PREFIX/STORE. For each of
 * STATES crash states (numbered from 0, seeded by SEED and the number):
 *
 * Building. A crash point C is drawn: the crash happens after the first
 * C records (0..all); one state in 8 draws it among the first 24 records
 * (the store's creation), one in 8 in a phase of the workload other than
 * appending (creating, a snapshot, reopening, closing; the phase drawn
 * first, then a record of it). Everything durable at C
 * is kept: a write or size change is durable once a sync of its file (or of
 * everything) that began after it completed before C, or at once when written
 * through an O_DSYNC descriptor. Every other write before C is applied,
 * dropped, or torn: split at 512- or 4096-byte boundaries of the file and each
 * piece kept or not. Metadata (mkdir, create, rename, unlink) follows a
 * journalling file system: it is kept in order up to the last sync of any file
 * before C, and a random prefix of the rest is kept. State 0 mod 10 drops every
 * write that is not durable, state 1 mod 10 applies every one, the others
 * choose for each write with equal odds. The files go to WORKDIR/state.
 * The crash is a restart of the machine: the boot id in a nosync session
 * marker (store/sync.c) is replaced by another one. MODE nosync-forced is
 * nosync with those markers deleted before the check, as a user who opens
 * such a store anyway would: what a nosync store is worth after an OS
 * crash (measured, never gated).
 *
 * Checking. A child process opens the crashed store in MODE (so an LMDB
 * assertion, a SIGSEGV or a hang is counted, never kills the checker),
 * reads the whole log and compares every event with the one the workload
 * appended at that position, and compares the state open built (snapshot
 * plus tail) with a replay of the whole log. The outcome is one of:
 *   fine              every acknowledged append present, state correct
 *   lost_last_commit  only the last acknowledged append is missing
 *   lost_more         more than the last acknowledged append is missing
 *   refused           open refused the store: an OS crash cut a nosync
 *                     session (store/sync.c), it may be damaged
 *   corrupt           open, the log read or the comparison reports an error
 *   open_crashed      the child died on a signal or did not finish in 60 s
 * "Acknowledged at C" is the last PL_ACK record before C. A store that does
 * not exist at all (nothing was made durable) counts as an empty log.
 *
 * Prints one JSON line, with the number of states whose crash point fell
 * in each phase of the workload (states_by_phase). lost_beyond_promise counts
 * the losses the mode does not allow: any loss for full and nosync (after an OS
 * crash in a nosync session open refuses the store rather than lose silently),
 * lost_more for consistent. With --gate the exit status is 1 when full or
 * consistent has a refused, corrupt, open_crashed or lost_beyond_promise
 * state, or nosync a corrupt, open_crashed or lost_beyond_promise one.
 * corrupt_before_first_ack counts the corrupt states whose crash came before
 * any acknowledgement (inside the store's creation); they fail the gate with
 * --gate-create only. The first few bad states are kept as WORKDIR/bad-N, with
 * their reason in WORKDIR/log.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "statecache/store.h"
#include "tests/powerloss/plevent.h"
#include "tests/powerloss/trace.h"

#define MAX_FID	    256
#define KEEP_BAD    3
#define CHILD_LIMIT 60
#define EARLY	    24
#define MAX_PHASES  16
/* nosync session markers (store/sync.c) hold the boot id. */
#define MARKER "nosync-session."

typedef struct rec {
	pl_rec h;
	const uint8_t *data;
	size_t cover; /* first record count at which it is durable */
} rec;

typedef struct image {
	uint8_t *p;
	size_t len, cap;
} image;

enum outcome {
	FINE,
	LOST_LAST,
	LOST_MORE,
	REFUSED,
	CORRUPT,
	CRASHED,
	NOUTCOME
};
static const char *const outcome_name[] = {"fine",	"lost_last_commit",
					   "lost_more", "refused",
					   "corrupt",	"open_crashed"};

static rec *recs;
static size_t nrecs;
static image images[MAX_FID];
static const char *prefix;
static size_t prefix_len;
static FILE *log_file;
static bool delete_markers; /* mode nosync-forced */

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "pl_check: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static uint64_t rnd(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* ---- trace ----------------------------------------------------------------
 */

static void load_trace(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		fail("%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		fail("cannot read %s", path);
	fclose(f);
	size_t cap = 1024;
	recs = malloc(cap * sizeof *recs);
	for (size_t at = 0; at < (size_t)n;) {
		if ((size_t)n - at < sizeof(pl_rec))
			fail("%s: truncated record at byte %zu", path, at);
		if (nrecs == cap)
			recs = realloc(recs, (cap *= 2) * sizeof *recs);
		rec *r = &recs[nrecs++];
		memcpy(&r->h, buf + at, sizeof r->h);
		at += sizeof r->h;
		if (r->h.len > (size_t)n - at || r->h.fid >= MAX_FID)
			fail("%s: bad record %zu", path, nrecs - 1);
		r->data = buf + at;
		at += r->h.len;
	}
}

static bool is_sync(const rec *s)
{
	return s->h.type == PL_SYNC || s->h.type == PL_SYNCALL;
}

/* Does sync record s (number si) make record r (number ri) durable? */
static bool covers(const rec *s, const rec *r, size_t ri)
{
	if (ri >= s->h.aux)
		return false;
	if (r->h.type == PL_WRITE || r->h.type == PL_TRUNC) {
		if (s->h.type == PL_SYNCALL)
			return true;
		if (s->h.fid != r->h.fid)
			return false;
		if (s->h.size == 0 || r->h.type == PL_TRUNC)
			return s->h.size == 0;
		return r->h.off >= s->h.off &&
		       r->h.off + r->h.len <= s->h.off + s->h.size;
	}
	/* Metadata: any sync commits the journal. */
	return true;
}

static void compute_cover(void)
{
	size_t *syncs = malloc((nrecs + 1) * sizeof *syncs), ns = 0;
	for (size_t i = 0; i < nrecs; i++)
		if (is_sync(&recs[i]))
			syncs[ns++] = i;
	size_t first = 0; /* first sync after record i */
	for (size_t i = 0; i < nrecs; i++) {
		rec *r = &recs[i];
		while (first < ns && syncs[first] <= i)
			first++;
		r->cover = SIZE_MAX;
		if (r->h.type == PL_WRITE && r->h.aux) {
			r->cover = i + 1;
			continue;
		}
		for (size_t k = first; k < ns; k++) {
			if (covers(&recs[syncs[k]], r, i)) {
				r->cover = syncs[k] + 1;
				break;
			}
		}
	}
	free(syncs);
}

static bool is_meta(const rec *r)
{
	return r->h.type == PL_MKDIR || r->h.type == PL_CREATE ||
	       r->h.type == PL_RENAME || r->h.type == PL_UNLINK ||
	       r->h.type == PL_LINK || r->h.type == PL_RMDIR;
}

/* ---- building -------------------------------------------------------------
 */

static void image_put(image *im, uint64_t off, const uint8_t *p, size_t n)
{
	size_t end = (size_t)off + n;
	if (end > im->cap) {
		size_t cap = im->cap ? im->cap : 65536;
		while (cap < end)
			cap *= 2;
		im->p = realloc(im->p, cap);
		if (!im->p)
			fail("out of memory");
		memset(im->p + im->cap, 0, cap - im->cap);
		im->cap = cap;
	}
	if (off > im->len)
		memset(im->p + im->len, 0, (size_t)off - im->len);
	memcpy(im->p + off, p, n);
	if (end > im->len)
		im->len = end;
}

static void image_size(image *im, uint64_t size)
{
	if (size > im->len) {
		static const uint8_t zero[4096];
		uint64_t at = im->len;
		while (at < size) {
			size_t k = size - at < sizeof zero ? (size_t)(size - at)
							   : sizeof zero;
			image_put(im, at, zero, k);
			at += k;
		}
	}
	im->len = (size_t)size;
}

enum policy { DROP_ALL, APPLY_ALL, RANDOM };

static void apply_write(const rec *r, bool durable, enum policy pol,
			uint64_t *rng)
{
	image *im = &images[r->h.fid];
	int choice = durable		? 0
		     : pol == DROP_ALL	? 1
		     : pol == APPLY_ALL ? 0
					: (int)(rnd(rng) % 3);
	if (r->h.type == PL_TRUNC) {
		if (choice != 1)
			image_size(im, r->h.off);
		return;
	}
	if (choice == 0) {
		image_put(im, r->h.off, r->data, r->h.len);
		return;
	}
	if (choice == 1)
		return;
	uint64_t g = rnd(rng) % 2 ? 4096 : 512;
	uint64_t at = r->h.off, end = r->h.off + r->h.len;
	while (at < end) {
		uint64_t next = (at / g + 1) * g;
		if (next > end)
			next = end;
		if (rnd(rng) % 2)
			image_put(im, at, r->data + (at - r->h.off),
				  (size_t)(next - at));
		at = next;
	}
}

typedef struct ns_entry {
	char *path;
	int fid; /* -1: a directory */
} ns_entry;

static ns_entry *ns;
static size_t nns, cap_ns;

static void ns_add(const char *path, int fid)
{
	if (nns == cap_ns) {
		cap_ns = cap_ns ? cap_ns * 2 : 64;
		ns = realloc(ns, cap_ns * sizeof *ns);
	}
	ns[nns].path = strdup(path);
	ns[nns].fid = fid;
	nns++;
}

static ns_entry *ns_find(const char *path)
{
	for (size_t i = 0; i < nns; i++)
		if (ns[i].path && !strcmp(ns[i].path, path))
			return &ns[i];
	return NULL;
}

static void apply_meta(const rec *r)
{
	char a[4096], b[4096];
	size_t la = strnlen((const char *)r->data, r->h.len);
	if (la >= sizeof a)
		fail("path too long in the trace");
	memcpy(a, r->data, la);
	a[la] = '\0';
	switch (r->h.type) {
	case PL_MKDIR:
		ns_add(a, -1);
		break;
	case PL_CREATE: {
		ns_entry *e = ns_find(a);
		if (e)
			e->fid = (int)r->h.fid;
		else
			ns_add(a, (int)r->h.fid);
		break;
	}
	case PL_UNLINK:
	case PL_RMDIR: {
		ns_entry *e = ns_find(a);
		if (e) {
			free(e->path);
			e->path = NULL;
		}
		break;
	}
	case PL_LINK: {
		size_t lb = r->h.len - la - 1;
		if (la + 1 > r->h.len || lb >= sizeof b)
			fail("bad link record");
		memcpy(b, r->data + la + 1, lb);
		b[lb] = '\0';
		ns_entry *from = ns_find(a);
		/* A link to a file outside the prefix is a file of its own
		 * here only if its data was recorded: never, so skip it. */
		if (from && from->fid >= 0 && !ns_find(b))
			ns_add(b, from->fid);
		break;
	}
	case PL_RENAME: {
		size_t lb = r->h.len - la - 1;
		if (la + 1 > r->h.len || lb >= sizeof b)
			fail("bad rename record");
		memcpy(b, r->data + la + 1, lb);
		b[lb] = '\0';
		ns_entry *to = ns_find(b);
		if (to) {
			free(to->path);
			to->path = NULL;
		}
		ns_entry *from = ns_find(a);
		if (from) {
			free(from->path);
			from->path = strdup(b);
		}
		break;
	}
	}
}

static void run(const char *cmd)
{
	int rc = system(cmd);
	if (rc != 0)
		fail("`%s` failed", cmd);
}

static void out_path(char *dst, size_t n, const char *root, const char *path)
{
	if (strncmp(path, prefix, prefix_len) != 0)
		fail("path %s is not under the prefix %s", path, prefix);
	snprintf(dst, n, "%s%s", root, path + prefix_len);
}

static int by_len(const void *a, const void *b)
{
	const ns_entry *x = a, *y = b;
	size_t lx = x->path ? strlen(x->path) : 0;
	size_t ly = y->path ? strlen(y->path) : 0;
	return lx < ly ? -1 : lx > ly;
}

/* Build the crash state after `c` records into `root` (emptied first). */
static void build(size_t c, enum policy pol, uint64_t *rng, const char *root)
{
	char cmd[8400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", root, root);
	run(cmd);
	for (size_t i = 0; i < MAX_FID; i++)
		images[i].len = 0;
	for (size_t i = 0; i < nns; i++)
		free(ns[i].path);
	nns = 0;

	/* Metadata: durable ones, then a random prefix of the rest. */
	size_t nvol = 0;
	for (size_t i = 0; i < c; i++)
		if (is_meta(&recs[i]) && recs[i].cover > c)
			nvol++;
	size_t keep = pol == DROP_ALL	 ? 0
		      : pol == APPLY_ALL ? nvol
					 : (size_t)(rnd(rng) % (nvol + 1));
	size_t vol = 0;
	for (size_t i = 0; i < c; i++) {
		rec *r = &recs[i];
		if (is_meta(r)) {
			if (r->cover <= c || vol++ < keep)
				apply_meta(r);
		} else if (r->h.type == PL_WRITE || r->h.type == PL_TRUNC) {
			apply_write(r, r->cover <= c, pol, rng);
		}
	}
	qsort(ns, nns, sizeof *ns, by_len);
	char path[4096];
	for (size_t i = 0; i < nns; i++) {
		if (!ns[i].path)
			continue;
		out_path(path, sizeof path, root, ns[i].path);
		if (ns[i].fid < 0) {
			if (mkdir(path, 0755) != 0 && errno != EEXIST)
				fail("mkdir %s: %s", path, strerror(errno));
			continue;
		}
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0) /* its directory was not kept */
			continue;
		image *im = &images[ns[i].fid];
		const char *base = strrchr(path, '/') + 1;
		bool marker = !strncmp(base, MARKER, sizeof MARKER - 1);
		if (marker && delete_markers) {
			close(fd);
			unlink(path);
			continue;
		}
		if (im->len && marker) {
			/* Written in the boot the crash ended. */
			static const char other[] =
			    "00000000-0000-0000-0000-000000000000\n";
			if (write(fd, other, sizeof other - 1) !=
			    (ssize_t)sizeof other - 1)
				fail("writing %s failed", path);
		} else if (im->len &&
			   write(fd, im->p, im->len) != (ssize_t)im->len) {
			fail("writing %s failed", path);
		}
		close(fd);
	}
}

/* ---- checking -------------------------------------------------------------
 */

typedef struct walk {
	uint64_t next;
	const char *why;
	sc_cache *replay;
	sc_error err;
} walk;

static int check_event(void *ctx, const sc_event *ev)
{
	walk *w = ctx;
	pl_event_buf b;
	sc_event want = pl_event(w->next, &b);
	if (ev->position != w->next)
		return w->why = "a position out of sequence", 1;
	if (ev->entity.len != want.entity.len ||
	    memcmp(ev->entity.ptr, want.entity.ptr, want.entity.len) ||
	    ev->type != want.type || ev->time != want.time ||
	    ev->nattrs != want.nattrs)
		return w->why = "an event that is not the one appended", 1;
	for (size_t i = 0; i < want.nattrs; i++) {
		bool found = false;
		for (size_t k = 0; k < ev->nattrs && !found; k++)
			found =
			    ev->attrs[k].name.len == want.attrs[i].name.len &&
			    !memcmp(ev->attrs[k].name.ptr,
				    want.attrs[i].name.ptr,
				    want.attrs[i].name.len) &&
			    sc_value_equal(&ev->attrs[k].value,
					   &want.attrs[i].value);
		if (!found)
			return w->why = "an attribute that was not appended", 1;
	}
	if (sc_cache_apply(w->replay, ev, &w->err))
		return w->why = "a replay that fails", 1;
	w->next++;
	return 0;
}

static void quiet(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "  warning: %s\n", msg);
}

/* In the child: exit 0 and the last position on `out`, or 3 (no store),
 * 4 (open failed), 5 (the log is wrong), 6 (state differs). */
static void check_child(const char *dir, sc_durability mode, int out)
{
	alarm(CHILD_LIMIT);
	sc_store_options o = {0};
	o.durability = mode;
	o.warn = quiet;
	sc_error err;
	sc_store *st;
	int rc = sc_store_open(dir, &o, &st, &err);
	if (rc == SC_NOTFOUND)
		_exit(3);
	if (rc == SC_ECORRUPT && strstr(err.message, "nosync session")) {
		fprintf(stderr, "  open: %s\n", err.message);
		_exit(8);
	}
	if (rc) {
		fprintf(stderr, "  open: %s\n", err.message);
		_exit(4);
	}
	walk w = {.next = 1};
	if (sc_cache_create(NULL, &w.replay, &err))
		_exit(7);
	rc = sc_store_events(st, 1, 0, check_event, &w, &err);
	if (rc) {
		fprintf(stderr, "  log: %s\n", w.why ? w.why : err.message);
		_exit(5);
	}
	if (w.next - 1 != sc_store_last_position(st)) {
		fprintf(stderr, "  log: %llu events, last position %llu\n",
			(unsigned long long)w.next - 1,
			(unsigned long long)sc_store_last_position(st));
		_exit(5);
	}
	sc_cache_promote(w.replay);
	sc_reader *ra, *rb;
	if (sc_reader_open(sc_store_cache(st), &ra, &err) ||
	    sc_reader_open(w.replay, &rb, &err))
		_exit(7);
	const sc_view *va = sc_reader_begin(ra);
	const sc_view *vb = sc_reader_begin(rb);
	bool same = sc_view_len(va) == sc_view_len(vb);
	sc_view_iter it;
	const sc_entity *e;
	sc_view_iter_init(va, &it);
	while (same && (e = sc_view_iter_next(&it))) {
		const sc_entity *f = sc_view_get(vb, sc_entity_id(e));
		same = f && sc_entity_equal(e, f);
	}
	if (!same) {
		fprintf(stderr, "  state: open and replay differ\n");
		_exit(6);
	}
	uint64_t last = sc_store_last_position(st);
	if (write(out, &last, sizeof last) != sizeof last)
		_exit(7);
	_exit(0);
}

static enum outcome check(const char *dir, sc_durability mode, uint64_t acked,
			  uint64_t acked_prev, char *why, size_t nwhy)
{
	int p[2];
	if (pipe(p))
		fail("pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		dup2(fileno(log_file), 2);
		check_child(dir, mode, p[1]);
	}
	close(p[1]);
	uint64_t last = 0;
	ssize_t got = read(p[0], &last, sizeof last);
	close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			fail("waitpid: %s", strerror(errno));
	if (WIFSIGNALED(st)) {
		snprintf(why, nwhy, "open died on signal %d", WTERMSIG(st));
		return CRASHED;
	}
	int code = WEXITSTATUS(st);
	if (code == 8) {
		snprintf(why, nwhy, "open refused: cut nosync session");
		return REFUSED;
	}
	if (code == 3) {
		last = 0;
	} else if (code != 0 || got != sizeof last) {
		snprintf(why, nwhy, "check exit %d", code);
		return CORRUPT;
	}
	snprintf(why, nwhy, "recovered %llu, acknowledged %llu (before: %llu)",
		 (unsigned long long)last, (unsigned long long)acked,
		 (unsigned long long)acked_prev);
	if (last >= acked)
		return FINE;
	return last >= acked_prev ? LOST_LAST : LOST_MORE;
}

/* ---- main -----------------------------------------------------------------
 */

/* --dump: one line per record, "type fid off size-or-len". */
static int dump(const char *path)
{
	static const char *const names[] = {
	    "?",    "mkdir",   "create", "write",  "trunc",
	    "sync", "syncall", "rename", "unlink", "ack"};
	load_trace(path);
	for (size_t i = 0; i < nrecs; i++) {
		const pl_rec *h = &recs[i].h;
		printf("%s %u %llu %llu\n", h->type < 10 ? names[h->type] : "?",
		       h->fid, (unsigned long long)h->off,
		       (unsigned long long)(h->type == PL_WRITE ? h->len
								: h->size));
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--dump"))
		return dump(argv[2]);
	if (argc < 8)
		fail("usage: pl_check TRACE PREFIX STORE MODE WORKDIR STATES "
		     "SEED [--gate]");
	const char *mode_name = argv[4], *work = argv[5];
	prefix = argv[2];
	prefix_len = strlen(prefix);
	unsigned long states = strtoul(argv[6], NULL, 10);
	uint64_t seed = strtoull(argv[7], NULL, 10);
	bool gate = false, gate_create = false;
	for (int i = 8; i < argc; i++) {
		if (!strcmp(argv[i], "--gate"))
			gate = true;
		else if (!strcmp(argv[i], "--gate-create"))
			gate = gate_create = true;
		else
			fail("unknown argument %s", argv[i]);
	}
	sc_durability mode;
	if (!strcmp(mode_name, "full"))
		mode = SC_DURABILITY_FULL;
	else if (!strcmp(mode_name, "consistent"))
		mode = SC_DURABILITY_CONSISTENT;
	else if (!strncmp(mode_name, "nosync", 6))
		mode = SC_DURABILITY_NOSYNC;
	else
		fail("unknown mode %s", mode_name);
	delete_markers = !strcmp(mode_name, "nosync-forced");
	load_trace(argv[1]);
	compute_cover();

	char root[4096], dir[4200], logpath[4200];
	snprintf(root, sizeof root, "%s/state", work);
	snprintf(dir, sizeof dir, "%s/%s", root, argv[3]);
	snprintf(logpath, sizeof logpath, "%s/log", work);
	if (mkdir(work, 0755) != 0 && errno != EEXIST)
		fail("mkdir %s: %s", work, strerror(errno));
	log_file = fopen(logpath, "w");
	if (!log_file)
		fail("%s: %s", logpath, strerror(errno));
	setvbuf(log_file, NULL, _IONBF, 0);

	/* ack[i]: the last acknowledged position among the first i records,
	 * ack_prev[i] the one before it. */
	uint64_t *ack = calloc(nrecs + 1, sizeof *ack);
	uint64_t *ack_prev = calloc(nrecs + 1, sizeof *ack_prev);
	for (size_t i = 0; i < nrecs; i++) {
		ack[i + 1] = ack[i];
		ack_prev[i + 1] = ack_prev[i];
		if (recs[i].h.type == PL_ACK) {
			ack_prev[i + 1] = ack[i];
			ack[i + 1] = recs[i].h.off;
		}
	}
	unsigned long count[NOUTCOME] = {0}, bad = 0, corrupt_unacked = 0;
	/* phase[i]: the workload's phase after the first i records. */
	const char **phase = calloc(nrecs + 1, sizeof *phase);
	char phase_names[MAX_PHASES][32];
	unsigned long phase_states[MAX_PHASES] = {0};
	int nphases = 0;
	phase[0] = "start";
	for (size_t i = 0; i < nrecs; i++) {
		phase[i + 1] = phase[i];
		if (recs[i].h.type != PL_PHASE)
			continue;
		size_t n = recs[i].h.len < 31 ? recs[i].h.len : 31;
		int k = 0;
		while (k < nphases && (strlen(phase_names[k]) != n ||
				       memcmp(phase_names[k], recs[i].data, n)))
			k++;
		if (k == nphases) {
			if (nphases == MAX_PHASES)
				fail("too many phases in the trace");
			memcpy(phase_names[k], recs[i].data, n);
			phase_names[k][n] = '\0';
			nphases++;
		}
		phase[i + 1] = phase_names[k];
	}
	/* The phases other than appending that hold a crash point. */
	const char *rare_phases[MAX_PHASES];
	int nrare_phases = 0;
	for (int k = 0; k < nphases; k++) {
		bool used = false;
		for (size_t c = 1; c <= nrecs && !used; c++)
			used = phase[c] == phase_names[k];
		if (used && strcmp(phase_names[k], "append") != 0)
			rare_phases[nrare_phases++] = phase_names[k];
	}
	for (unsigned long s = 0; s < states; s++) {
		uint64_t rng = seed * 1000003u + s;
		/* One state in 8 crashes among the first records: the store's
		 * creation and first commits are few records of many. */
		size_t span = s % 8 == 3 && nrecs > EARLY ? EARLY : nrecs;
		size_t c = (size_t)(rnd(&rng) % (span + 1));
		/* And one in 8 outside the appends (snapshots, reopening,
		 * closing), which take few records too. */
		if (s % 8 == 5 && nrare_phases) {
			const char *ph =
			    rare_phases[rnd(&rng) % (uint64_t)nrare_phases];
			size_t n = 0;
			for (size_t k = 1; k <= nrecs; k++)
				n += phase[k] == ph;
			size_t pick = (size_t)(rnd(&rng) % n);
			for (size_t k = 1; k <= nrecs; k++)
				if (phase[k] == ph && pick-- == 0)
					c = k;
		}
		enum policy pol = s % 10 == 0	? DROP_ALL
				  : s % 10 == 1 ? APPLY_ALL
						: RANDOM;
		build(c, pol, &rng, root);
		char why[256];
		for (int k = 0; k < nphases; k++)
			if (phase[c] == phase_names[k])
				phase_states[k]++;
		fprintf(log_file,
			"state %lu: crash after %zu of %zu records (%s), %s\n",
			s, c, nrecs, phase[c],
			pol == DROP_ALL	   ? "unsynced writes dropped"
			: pol == APPLY_ALL ? "unsynced writes applied"
					   : "unsynced writes at random");
		enum outcome o =
		    check(dir, mode, ack[c], ack_prev[c], why, sizeof why);
		count[o]++;
		if (o == CORRUPT && ack[c] == 0)
			corrupt_unacked++;
		fprintf(log_file, "  %s: %s\n", outcome_name[o], why);
		bool promised =
		    o == FINE ||
		    (o == LOST_LAST && mode == SC_DURABILITY_CONSISTENT) ||
		    (o == REFUSED && mode == SC_DURABILITY_NOSYNC);
		if (!promised && bad < KEEP_BAD) {
			char cmd[8800];
			snprintf(
			    cmd, sizeof cmd,
			    "rm -rf '%s/bad-%lu' && cp -a '%s' '%s/bad-%lu'",
			    work, bad, root, work, bad);
			run(cmd);
			fprintf(log_file, "  kept as %s/bad-%lu\n", work, bad);
			bad++;
		}
	}
	unsigned long beyond =
	    count[LOST_MORE] +
	    (mode == SC_DURABILITY_CONSISTENT ? 0 : count[LOST_LAST]);
	printf("{\"name\":\"powerloss\",\"mode\":\"%s\",\"states\":%lu,"
	       "\"fine\":%lu,\"lost_beyond_promise\":%lu,"
	       "\"lost_last_commit\":%lu,\"lost_more\":%lu,\"refused\":%lu,"
	       "\"corrupt\":%lu,"
	       "\"corrupt_before_first_ack\":%lu,"
	       "\"open_crashed\":%lu,\"records\":%zu,\"seed\":%llu,"
	       "\"states_by_phase\":{",
	       mode_name, states, count[FINE], beyond, count[LOST_LAST],
	       count[LOST_MORE], count[REFUSED], count[CORRUPT],
	       corrupt_unacked, count[CRASHED], nrecs,
	       (unsigned long long)seed);
	for (int k = 0; k < nphases; k++)
		printf("%s\"%s\":%lu", k ? "," : "", phase_names[k],
		       phase_states[k]);
	printf("}}\n");
	fflush(stdout);
	if (!gate)
		return 0;
	unsigned long corrupt =
	    count[CORRUPT] - (gate_create ? 0 : corrupt_unacked);
	if (delete_markers)
		return 0;
	/* nosync may refuse a store, never crash, lose or corrupt. */
	if (mode == SC_DURABILITY_NOSYNC)
		return corrupt || count[CRASHED] || beyond ? 1 : 0;
	return corrupt || count[REFUSED] || count[CRASHED] || beyond ? 1 : 0;
}
