/*
 * Bank statements from an event log, with two projection runners.
 *
 * One thread appends account events (opened, deposited, withdrawn,
 * closed). Two projections follow the log on threads of their own:
 *
 *   statement          exactly-once: each account's statement, one line
 *                      per transaction with its running balance, in LMDB
 *                      databases of the store's environment ("lines":
 *                      account ++ line number -> the line; "accounts":
 *                      account -> balance and line count), written in the
 *                      transaction that saves the projection's offset.
 *   large_withdrawals  at-least-once: a CSV file of withdrawals of 400.00
 *                      or more (position,account,amount); its offset is
 *                      saved every 50 events or 100 ms, so after a crash
 *                      the lines after the saved offset may be written
 *                      again (each carries its position: a reader can
 *                      drop repeats).
 *
 * The events are a function of their position, so a restarted run appends
 * exactly the events a killed one did not.
 *
 *   cc -std=c11 bank_statement.c $(pkg-config --cflags --libs statecache)
 *   ./a.out DIR          run (or go on with) the store in DIR
 *   ./a.out --self-test  kill a run with SIGKILL at random points, restart
 *                        it, and check the statements and the CSV
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <statecache/projection.h>
#include <statecache/store.h>

#define ACCOUNTS    20
#define PER_ACCOUNT 150 /* events per account: opened ... closed */
#define TOTAL	    ((uint64_t)ACCOUNTS * PER_ACCOUNT)
#define LARGE	    40000 /* cents */

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bank_statement: %s: %s\n", what, msg);
	exit(1);
}

/* ---- the events -------------------------------------------------------- */

typedef enum kind { OPENED, DEPOSITED, WITHDRAWN, CLOSED } kind;
static const char *const kind_names[] = {"opened", "deposited", "withdrawn",
					 "closed"};

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The event at `pos` (1..TOTAL): its account, kind and amount (cents). */
static void event_at(uint64_t pos, unsigned *account, kind *k, int64_t *amount)
{
	uint64_t i = pos - 1, step = i / ACCOUNTS;
	*account = (unsigned)(i % ACCOUNTS);
	uint64_t h = mix(pos);
	if (step == 0)
		*k = OPENED;
	else if (step == PER_ACCOUNT - 1)
		*k = CLOSED;
	else
		*k = h % 3 ? DEPOSITED : WITHDRAWN;
	*amount =
	    *k == DEPOSITED || *k == WITHDRAWN ? (int64_t)(h >> 8) % 50000 : 0;
}

static kind kind_of(const sc_event *ev)
{
	for (size_t i = 0; i < ev->nattrs; i++)
		if (ev->attrs[i].name.len == 4 &&
		    !memcmp(ev->attrs[i].name.ptr, "kind", 4))
			for (int k = 0; k < 4; k++)
				if (ev->attrs[i].value.u.s.len ==
					strlen(kind_names[k]) &&
				    !memcmp(ev->attrs[i].value.u.s.ptr,
					    kind_names[k],
					    strlen(kind_names[k])))
					return (kind)k;
	return OPENED;
}

static int64_t amount_of(const sc_event *ev)
{
	for (size_t i = 0; i < ev->nattrs; i++)
		if (ev->attrs[i].name.len == 6 &&
		    !memcmp(ev->attrs[i].name.ptr, "amount", 6))
			return ev->attrs[i].value.u.i;
	return 0;
}

/* The writer: append the events after the log's end, in batches. */
static void *writer_main(void *arg)
{
	sc_store *s = arg;
	enum { MAXB = 40 };
	sc_event evs[MAXB];
	sc_attr attrs[MAXB][2];
	char ids[MAXB][16];
	sc_error err;
	uint64_t pos = sc_store_last_position(s) + 1;
	while (pos <= TOTAL) {
		size_t n = 1 + mix(pos ^ 77) % MAXB;
		if (n > TOTAL - pos + 1)
			n = (size_t)(TOTAL - pos + 1);
		for (size_t i = 0; i < n; i++) {
			unsigned a;
			kind k;
			int64_t amount;
			event_at(pos + i, &a, &k, &amount);
			int len =
			    snprintf(ids[i], sizeof ids[i], "acct-%02u", a);
			attrs[i][0] = (sc_attr){
			    .name = {"kind", 4},
			    .value = {
				.type = SC_VALUE_STRING,
				.u.s = {kind_names[k], strlen(kind_names[k])}}};
			attrs[i][1] = (sc_attr){
			    .name = {"amount", 6},
			    .value = {.type = SC_VALUE_INT, .u.i = amount}};
			evs[i] = (sc_event){.entity = {ids[i], (size_t)len},
					    .type = SC_EVENT_SET,
					    .attrs = attrs[i],
					    .nattrs = 2};
		}
		if (sc_store_append(s, evs, n, NULL, &err))
			die("append", err.message);
		pos += n;
	}
	return NULL;
}

/* ---- the statement: exactly-once ------------------------------------------
 */

static const char *const statement_dbs[] = {"lines", "accounts", NULL};

typedef struct account_row {
	int64_t balance;
	uint64_t lines;
} account_row;

typedef struct statement_ctx {
	int progress_fd; /* self-test: a byte per batch; -1: none */
} statement_ctx;

static int statement(void *vctx, sc_projection *p, MDB_txn *txn,
		     const sc_event *const *evs, size_t n, sc_error *err)
{
	statement_ctx *c = vctx;
	MDB_dbi lines, accounts;
	int rc = sc_projection_dbi(p, "lines", &lines, err);
	if (!rc)
		rc = sc_projection_dbi(p, "accounts", &accounts, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		const sc_event *ev = evs[i];
		MDB_val k = {ev->entity.len, (void *)ev->entity.ptr}, v;
		account_row row = {0, 0};
		rc = mdb_get(txn, accounts, &k, &v);
		if (rc == 0)
			memcpy(&row, v.mv_data, sizeof row);
		else if (rc != MDB_NOTFOUND)
			return rc;
		kind kd = kind_of(ev);
		int64_t amount = amount_of(ev);
		row.balance += kd == DEPOSITED	 ? amount
			       : kd == WITHDRAWN ? -amount
						 : 0;
		row.lines++;
		/* The line: key account ++ line number (big-endian). */
		char key[32], line[128];
		memcpy(key, ev->entity.ptr, ev->entity.len);
		for (int b = 0; b < 8; b++)
			key[ev->entity.len + (size_t)b] =
			    (char)(row.lines >> (56 - 8 * b));
		int len =
		    snprintf(line, sizeof line, "%llu %s %lld %lld",
			     (unsigned long long)ev->position, kind_names[kd],
			     (long long)amount, (long long)row.balance);
		MDB_val lk = {ev->entity.len + 8, key},
			lv = {(size_t)len, line};
		rc = mdb_put(txn, lines, &lk, &lv, MDB_NOOVERWRITE);
		if (rc)
			return rc;
		v = (MDB_val){sizeof row, &row};
		rc = mdb_put(txn, accounts, &k, &v, 0);
		if (rc)
			return rc;
	}
	if (c->progress_fd >= 0) {
		char b = 1;
		if (write(c->progress_fd, &b, 1) != 1)
			return EIO;
	}
	return 0;
}

/* ---- large withdrawals: at-least-once -------------------------------------
 */

typedef struct csv_ctx {
	int fd;
} csv_ctx;

static int large_withdrawals(void *vctx, sc_projection *p, MDB_txn *txn,
			     const sc_event *const *evs, size_t n,
			     sc_error *err)
{
	(void)p;
	(void)txn;
	csv_ctx *c = vctx;
	char buf[64 * 256];
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		int64_t amount = amount_of(evs[i]);
		if (kind_of(evs[i]) != WITHDRAWN || amount < LARGE)
			continue;
		len += (size_t)snprintf(
		    buf + len, sizeof buf - len, "%llu,%.*s,%lld.%02lld\n",
		    (unsigned long long)evs[i]->position,
		    (int)evs[i]->entity.len, evs[i]->entity.ptr,
		    (long long)(amount / 100), (long long)(amount % 100));
	}
	/* One write per call: a kill never leaves half a line. */
	if (len && write(c->fd, buf, len) != (ssize_t)len) {
		snprintf(err->message, sizeof err->message,
			 "writing the CSV: %s", strerror(errno));
		return EIO;
	}
	return 0;
}

/* ---- one run ----------------------------------------------------------------
 */

static sc_store *open_store(const char *dir)
{
	sc_store_options o = {0};
	o.create = true;
	o.durability = SC_DURABILITY_NOSYNC;
	sc_store *s;
	sc_error err;
	if (sc_store_open(dir, &o, &s, &err))
		die("open", err.message);
	return s;
}

/* Append what is missing and project everything, then stop. */
static void run(const char *dir, int progress_fd)
{
	sc_store *s = open_store(dir);
	char path[4096];
	snprintf(path, sizeof path, "%s/large_withdrawals.csv", dir);
	csv_ctx cc = {open(path, O_WRONLY | O_CREAT | O_APPEND, 0600)};
	if (cc.fd < 0)
		die(path, strerror(errno));
	statement_ctx sc = {progress_fd};
	sc_projection_options so = {.name = "statement",
				    .kind = SC_PROJECTION_EXACTLY_ONCE,
				    .handler = statement,
				    .ctx = &sc,
				    .databases = statement_dbs,
				    .batch_max = 16};
	sc_projection_options co = {.name = "large_withdrawals",
				    .kind = SC_PROJECTION_AT_LEAST_ONCE,
				    .handler = large_withdrawals,
				    .ctx = &cc,
				    .batch_max = 16,
				    .save_every = 50,
				    .save_ms = 100};
	sc_projection *ps, *pc;
	sc_error err;
	if (sc_projection_start(s, &so, &ps, &err) ||
	    sc_projection_start(s, &co, &pc, &err))
		die("start", err.message);
	pthread_t w;
	if (pthread_create(&w, NULL, writer_main, s))
		die("writer", "cannot start its thread");
	pthread_join(w, NULL);
	if (sc_projection_wait(ps, TOTAL, -1, &err) ||
	    sc_projection_wait(pc, TOTAL, -1, &err))
		die("wait", err.message);
	if (sc_projection_stop(ps, &err) || sc_projection_stop(pc, &err))
		die("stop", err.message);
	close(cc.fd);
	sc_store_close(s);
}

/* ---- the self-test ----------------------------------------------------------
 */

/* Check every statement line against the events, one line per event. */
static void check_statements(const char *dir)
{
	sc_store *s = open_store(dir);
	MDB_dbi lines, accounts;
	sc_error err;
	if (sc_projection_open_db(s, "statement", "lines", &lines, &err) ||
	    sc_projection_open_db(s, "statement", "accounts", &accounts, &err))
		die("open_db", err.message);
	MDB_txn *txn;
	if (mdb_txn_begin(sc_store_env(s), NULL, MDB_RDONLY, &txn))
		die("check", "cannot begin a read transaction");
	int64_t balance[ACCOUNTS] = {0};
	uint64_t count[ACCOUNTS] = {0};
	for (uint64_t pos = 1; pos <= TOTAL; pos++) {
		unsigned a;
		kind k;
		int64_t amount;
		event_at(pos, &a, &k, &amount);
		balance[a] += k == DEPOSITED   ? amount
			      : k == WITHDRAWN ? -amount
					       : 0;
		count[a]++;
		char key[32], want[128];
		int klen = snprintf(key, sizeof key, "acct-%02u", a);
		for (int b = 0; b < 8; b++)
			key[klen + b] = (char)(count[a] >> (56 - 8 * b));
		snprintf(want, sizeof want, "%llu %s %lld %lld",
			 (unsigned long long)pos, kind_names[k],
			 (long long)amount, (long long)balance[a]);
		MDB_val kv = {(size_t)klen + 8, key}, v;
		if (mdb_get(txn, lines, &kv, &v) || v.mv_size != strlen(want) ||
		    memcmp(v.mv_data, want, v.mv_size))
			die("check", "a statement line is missing or wrong");
	}
	MDB_stat st;
	if (mdb_stat(txn, lines, &st) || st.ms_entries != TOTAL)
		die("check", "the statements hold extra lines");
	mdb_txn_abort(txn);
	sc_store_close(s);
}

/* The at-least-once offset now, and the CSV's size. */
static void at_restart(const char *dir, uint64_t *offset, long *csv_size)
{
	sc_store *s = open_store(dir);
	sc_error err;
	if (sc_projection_offset(s, "large_withdrawals", offset, NULL, &err))
		die("offset", err.message);
	sc_store_close(s);
	char path[4096];
	snprintf(path, sizeof path, "%s/large_withdrawals.csv", dir);
	FILE *f = fopen(path, "r");
	*csv_size = 0;
	if (f) {
		fseek(f, 0, SEEK_END);
		*csv_size = ftell(f);
		fclose(f);
	}
}

#define RUNS 5

/* Every large withdrawal is in the CSV; a line repeats only if it comes
 * after the offset saved when its run began. */
static void check_csv(const char *dir, const uint64_t *offsets,
		      const long *sizes, int runs)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/large_withdrawals.csv", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		die(path, strerror(errno));
	static unsigned seen[TOTAL + 1];
	char line[128];
	int run = 0;
	while (fgets(line, sizeof line, f)) {
		long at = ftell(f) - (long)strlen(line);
		while (run + 1 < runs && at >= sizes[run + 1])
			run++;
		uint64_t pos = strtoull(line, NULL, 10);
		if (pos < 1 || pos > TOTAL)
			die("csv", "a line with a bad position");
		/* A run starts after the saved offset: a line at or before
		 * it would be a repeat from before the offset. */
		if (pos <= offsets[run])
			die("csv", "a line repeated before the saved offset");
		seen[pos]++;
	}
	fclose(f);
	for (uint64_t pos = 1; pos <= TOTAL; pos++) {
		unsigned a;
		kind k;
		int64_t amount;
		event_at(pos, &a, &k, &amount);
		bool large = k == WITHDRAWN && amount >= LARGE;
		if (large != (seen[pos] > 0))
			die("csv", "a large withdrawal is missing, or a line "
				   "is not one");
	}
}

static int self_test(void)
{
	char tmpl[] = "/tmp/bank_statement.XXXXXX";
	char *dir = mkdtemp(tmpl);
	if (!dir)
		die("mkdtemp", strerror(errno));
	uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
	const char *e = getenv("BANK_SEED");
	if (e)
		seed = strtoull(e, NULL, 10);
	printf("bank_statement: seed %llu (rerun with BANK_SEED)\n",
	       (unsigned long long)seed);
	uint64_t offsets[RUNS];
	long sizes[RUNS];
	int kills = 0;
	for (int r = 0; r < RUNS; r++) {
		at_restart(dir, &offsets[r], &sizes[r]);
		int fds[2];
		if (pipe(fds))
			die("pipe", strerror(errno));
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0)
			die("fork", strerror(errno));
		if (pid == 0) {
			close(fds[0]);
			run(dir, fds[1]);
			_exit(0);
		}
		close(fds[1]);
		/* The last run goes to the end; the others are killed after
		 * a random number of statement batches. */
		unsigned want =
		    r == RUNS - 1
			? 0
			: 1 + (unsigned)(mix(seed + (uint64_t)r) % 40);
		unsigned got = 0;
		char b;
		while ((!want || got < want) && read(fds[0], &b, 1) == 1)
			got++;
		if (want && got == want) {
			kill(pid, SIGKILL);
			kills++;
		}
		close(fds[0]);
		int st;
		if (waitpid(pid, &st, 0) != pid)
			die("waitpid", strerror(errno));
		if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			die("run", "a run failed");
	}
	check_statements(dir);
	check_csv(dir, offsets, sizes, RUNS);
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		die("rm", dir);
	printf("bank_statement: self-test passed (%d kills, %llu events, "
	       "statements exact, CSV repeats only after saved offsets)\n",
	       kills, (unsigned long long)TOTAL);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--self-test"))
		return self_test();
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: bank_statement DIR | --self-test\n");
		return 2;
	}
	run(argv[1], -1);
	check_statements(argv[1]);
	printf("bank_statement: %llu events; statements in %s (database "
	       "projection/statement/lines), large withdrawals in "
	       "%s/large_withdrawals.csv\n",
	       (unsigned long long)TOTAL, argv[1], argv[1]);
	return 0;
}
