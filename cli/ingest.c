/*
 * statecache command: the ingest pipeline (cli/ingest.h).
 */
#include "cli/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/json_event.h"
#include "common/internal.h"
#include "statecache/event.h"

/* ===== file source ======================================================== */

/* One line of SC_CLI_LINE_MAX bytes plus its newline fits. */
#define FILE_BUF_CAP (SC_CLI_LINE_MAX + 1)

/* Wait until the input or the wake descriptor is readable: 1 input, 0 no
 * input within timeout_ms or a wake-up, -1 poll failed (errno). */
static int file_wait(sc_cli_file_source *s, int timeout_ms)
{
	struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
			      {.fd = s->base.wake_fd, .events = POLLIN}};
	nfds_t n = s->base.wake_fd >= 0 ? 2 : 1;
	for (;;) {
		int r = poll(p, n, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0 || (n == 2 && p[1].revents))
			return 0;
		return 1;
	}
}

/* The poll timeout for the wait `w`, now; 0 (look, do not wait) when it
 * has run out. */
static int wait_ms(const sc_cli_wait *w)
{
	if (!w)
		return -1;
	int t = w->idle_ms;
	if (w->until > 0) {
		double left = (w->until - sc_cli_now()) * 1000.0;
		if (left <= 0)
			return 0;
		if (t < 0 || left < t)
			t = (int)ceil(left);
	}
	return t;
}

static int file_next(sc_cli_source *base, const char **line, size_t *len,
		     const sc_cli_wait *w, sc_error *err)
{
	sc_cli_file_source *s = (sc_cli_file_source *)base;
	for (;;) {
		char *nl = s->end > s->start ? memchr(s->buf + s->start, '\n',
						      s->end - s->start)
					     : NULL;
		if (nl) {
			*line = s->buf + s->start;
			*len = (size_t)(nl - *line);
			s->start += *len + 1;
			return 1;
		}
		if (s->eof) {
			if (s->start == s->end)
				return 0;
			*line = s->buf + s->start;
			*len = s->end - s->start;
			s->start = s->end;
			return 1;
		}
		if (s->start > 0) {
			memmove(s->buf, s->buf + s->start, s->end - s->start);
			s->end -= s->start;
			s->start = 0;
		}
		if (s->end == FILE_BUF_CAP)
			return sc_error_set(err, SC_EINVAL,
					    "longer than the limit of %u bytes",
					    SC_CLI_LINE_MAX);
		if (!s->regular) {
			int ready = file_wait(s, wait_ms(w));
			if (ready == 0)
				return SC_CLI_SOURCE_IDLE;
			if (ready < 0)
				return sc_error_set(err, EIO,
						    "waiting for input failed: "
						    "%s",
						    strerror(errno));
		}
		ssize_t n = read(s->fd, s->buf + s->end, FILE_BUF_CAP - s->end);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return sc_error_set(err, EIO,
					    "reading the input failed: %s",
					    strerror(errno));
		}
		s->end += (size_t)n;
		base->bytes_read += (uint64_t)n;
		if (n == 0)
			s->eof = true;
	}
}

int sc_cli_file_source_init(sc_cli_file_source *s, FILE *f)
{
	memset(s, 0, sizeof *s);
	s->base.next = file_next;
	s->base.wake_fd = -1;
	s->fd = fileno(f);
	s->buf = malloc(FILE_BUF_CAP);
	if (!s->buf)
		return ENOMEM;
	struct stat st;
	if (fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode)) {
		s->regular = true;
		s->base.total_bytes = (uint64_t)st.st_size;
	}
	return 0;
}

void sc_cli_file_source_free(sc_cli_file_source *s)
{
	free(s->buf);
	s->buf = NULL;
}

/* ===== generator source =================================================== */

static int gen_next(sc_cli_source *base, const char **line, size_t *len,
		    const sc_cli_wait *w, sc_error *err)
{
	(void)w;
	sc_cli_gen_source *s = (sc_cli_gen_source *)base;
	if (s->left == 0)
		return 0;
	s->left--;
	sc_cli_buf_reset(&s->line);
	if (sc_cli_event_encode(&s->line, sc_cli_gen_next(&s->gen), false))
		return sc_error_set(err, ENOMEM, "out of memory");
	*line = s->line.ptr;
	*len = s->line.len;
	base->bytes_read++;
	return 1;
}

void sc_cli_gen_source_init(sc_cli_gen_source *s, uint64_t seed,
			    uint32_t entities, int64_t t0, uint64_t count)
{
	memset(s, 0, sizeof *s);
	s->base.next = gen_next;
	s->base.wake_fd = -1;
	/* progress counts events here, not bytes */
	s->base.total_bytes = count;
	sc_cli_gen_init(&s->gen, seed, entities, t0);
	s->left = count;
	sc_cli_buf_init(&s->line);
}

void sc_cli_gen_source_free(sc_cli_gen_source *s)
{
	sc_cli_buf_free(&s->line);
}
/* ===== progress =========================================================== */

typedef struct progress {
	bool on;
	double start, last;
} progress;

static void progress_draw(progress *p, uint64_t total, uint64_t done,
			  uint64_t events, bool force)
{
	if (!p->on)
		return;
	double now = sc_cli_now();
	if (!force && now - p->last < 0.1)
		return;
	p->last = now;
	double el = now - p->start;
	double rate = el > 0 ? (double)events / el : 0;
	if (total) {
		double frac = (double)done / (double)total;
		if (frac > 1)
			frac = 1;
		char bar[31];
		int fill = (int)(frac * 30);
		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[30] = 0;
		double eta = frac > 0 ? el / frac - el : 0;
		fprintf(stderr,
			"\r[%s] %3.0f%% %llu events  %.0f events/s  ETA %.0fs "
			"\033[K",
			bar, frac * 100, (unsigned long long)events, rate, eta);
	} else {
		fprintf(stderr, "\r%llu events  %.0f events/s\033[K",
			(unsigned long long)events, rate);
	}
}

static void progress_end(progress *p)
{
	if (p->on)
		fputs("\r\033[K", stderr);
}

/* ===== the pipeline =======================================================
 *
 * A ring of `depth` batches, each owned by one stage at a time; the state
 * changes under `mu`, the work runs outside it:
 *
 *   FREE --reader--> RAW --a decoder--> DECODING --> READY --writer--> FREE
 *
 * The reader fills batches in input order (sequence numbers 0, 1, ...)
 * into ring[seq % depth]; decoders claim RAW batches in that order, any
 * number at once; the writer takes ring[seq % depth] when it is READY, so
 * it appends strictly in input order whichever decoder finishes first.
 * The reader waits for a FREE batch: `depth` batches bound the memory.
 *
 * A bad line in batch s ends the stream there: its decoder records s in
 * `bad_seq`, the reader fills nothing after s, and the writer appends the
 * events of s before the line, then stops everything.
 */

enum { BATCH_FREE, BATCH_RAW, BATCH_DECODING, BATCH_READY };

typedef struct line_ref {
	size_t off, len;
	uint64_t no; /* 1-based input line number */
} line_ref;

typedef struct batch {
	int state; /* under ingest.mu */
	uint64_t seq;
	/* The reader's part: the lines of the batch, blank ones left out. */
	char *text;
	size_t text_len, text_cap;
	line_ref *lines;
	size_t n, lines_cap;
	bool last;	    /* no batch follows this one */
	int read_rc;	    /* when last: why reading stopped (0: input end) */
	sc_error read_err;  /* ... and the message, "line N: ..." */
	uint64_t read_line; /* ... and the line it names */
	uint64_t lines_through; /* input lines read up to this batch's end */
	uint64_t bytes_read;	/* the source's bytes_read after this batch */
	/* The decoder's part. */
	sc_cli_event *dec; /* decoded lines, owning their memory */
	sc_event *evs;	   /* copies of dec[i].ev, contiguous for append */
	size_t dec_cap;
	size_t n_ok;	  /* lines decoded and valid before any bad one */
	int dec_rc;	  /* a bad line: SC_EINVAL, or ENOMEM */
	sc_error dec_err; /* "line N: reason" */
} batch;

typedef struct ingest {
	pthread_mutex_t mu;
	pthread_cond_t cv_free, cv_raw, cv_ready;
	batch *ring;
	size_t depth;
	uint64_t next_decode; /* the next RAW batch to claim; under mu */
	bool stop;	      /* under mu: every thread must return */
	atomic_bool stopping; /* the same, read by the reader between lines */
	/* the lowest sequence number of a batch holding a bad line */
	_Atomic uint64_t bad_seq;
	sc_cli_source *src;
	size_t cap; /* events per batch */
	int idle_ms;
	uint64_t lines; /* input lines read; the reader's */
} ingest;

static bool blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	return true;
}

static int batch_add_line(batch *b, size_t cap, const char *p, size_t len,
			  uint64_t no)
{
	if (b->n == b->lines_cap) {
		size_t nc = b->lines_cap ? 2 * b->lines_cap : 64;
		if (nc > cap)
			nc = cap;
		line_ref *nl = realloc(b->lines, nc * sizeof *nl);
		if (!nl)
			return ENOMEM;
		b->lines = nl;
		b->lines_cap = nc;
	}
	if (b->text_cap - b->text_len < len) {
		size_t nc = b->text_cap ? b->text_cap : 65536;
		while (nc - b->text_len < len)
			nc *= 2;
		char *nt = realloc(b->text, nc);
		if (!nt)
			return ENOMEM;
		b->text = nt;
		b->text_cap = nc;
	}
	memcpy(b->text + b->text_len, p, len);
	b->lines[b->n++] = (line_ref){b->text_len, len, no};
	b->text_len += len;
	return 0;
}

/*
 * The reader's step: fill `b` with the lines of up to in->cap events.
 * It ends at the end of the input, at a line the source cannot deliver
 * (b->read_rc; the lines before it stay in b), when the batch is full, or
 * with a line in the batch, when the input has been idle for in->idle_ms
 * or that first line has waited SC_CLI_LINGER_FACTOR x in->idle_ms.
 * Returns false when the run is stopping (b is then not handed on).
 */
static bool batch_fill(ingest *in, batch *b)
{
	sc_cli_source *src = in->src;
	b->n = 0;
	b->text_len = 0;
	b->last = false;
	b->read_rc = 0;
	sc_cli_wait wait = {.idle_ms = in->idle_ms};
	while (b->n < in->cap) {
		if (atomic_load_explicit(&in->stopping, memory_order_relaxed))
			return false;
		const char *line;
		size_t len;
		sc_error e1;
		/* no limit until a line waits in the batch; then the idle
		 * time, and the linger limit from that first line */
		const sc_cli_wait *w = b->n && in->idle_ms >= 0 ? &wait : NULL;
		int got = src->next(src, &line, &len, w, &e1);
		if (got == SC_CLI_SOURCE_IDLE) {
			if (b->n)
				break;
			continue;
		}
		if (got == 0) {
			b->last = true;
			break;
		}
		in->lines++;
		if (got == 1) {
			if (len && line[len - 1] == '\r')
				len--;
			if (blank(line, len))
				continue;
			if (!batch_add_line(b, in->cap, line, len, in->lines)) {
				if (b->n == 1)
					wait.until = sc_cli_now() +
						     SC_CLI_LINGER_FACTOR *
							 (double)in->idle_ms /
							 1000.0;
				continue;
			}
			got = sc_error_set(&e1, ENOMEM,
					   "out of memory for a batch of %zu "
					   "events (use a smaller --batch)",
					   in->cap);
		}
		b->last = true;
		b->read_line = in->lines;
		b->read_rc =
		    sc_error_set(&b->read_err, got, "line %llu: %s",
				 (unsigned long long)in->lines, e1.message);
		break;
	}
	b->lines_through = in->lines;
	b->bytes_read = src->bytes_read;
	return true;
}

static int batch_reserve_decoded(batch *b)
{
	if (b->n <= b->dec_cap)
		return 0;
	size_t nc = b->dec_cap ? b->dec_cap : 64;
	while (nc < b->n)
		nc *= 2;
	sc_cli_event *nd = realloc(b->dec, nc * sizeof *nd);
	if (!nd)
		return ENOMEM;
	b->dec = nd;
	for (size_t i = b->dec_cap; i < nc; i++)
		sc_cli_event_init(&b->dec[i]);
	b->dec_cap = nc;
	sc_event *ne = realloc(b->evs, nc * sizeof *ne);
	if (!ne)
		return ENOMEM;
	b->evs = ne;
	return 0;
}

/* A decoder's step: decode and validate the lines of `b` in order, up to
 * the first bad one. */
static void batch_decode(ingest *in, batch *b)
{
	b->n_ok = 0;
	b->dec_rc = 0;
	if (batch_reserve_decoded(b)) {
		b->dec_rc =
		    sc_error_set(&b->dec_err, ENOMEM,
				 "line %llu: out of memory for a batch "
				 "of %zu events (use a smaller "
				 "--batch)",
				 (unsigned long long)b->lines[0].no, b->n);
	}
	for (size_t i = 0; i < b->n && !b->dec_rc; i++) {
		const line_ref *l = &b->lines[i];
		sc_cli_event *d = &b->dec[i];
		sc_error e1;
		/* A line joins what is appended only if the store will take
		 * its event: a batch that reaches the store is valid. */
		int rc = sc_cli_event_decode(d, b->text + l->off, l->len, &e1);
		if (!rc)
			rc = sc_event_validate(&d->ev, &e1);
		if (rc) {
			b->dec_rc =
			    sc_error_set(&b->dec_err, rc, "line %llu: %s",
					 (unsigned long long)l->no, e1.message);
			break;
		}
		b->evs[i] = d->ev;
		b->n_ok++;
	}
	if (b->dec_rc) {
		uint64_t cur = atomic_load(&in->bad_seq);
		while (b->seq < cur && !atomic_compare_exchange_weak(
					   &in->bad_seq, &cur, b->seq))
			;
	}
}

static void ack_print(FILE *f, uint64_t lines, uint64_t events, uint64_t pos)
{
	fprintf(f, "{\"lines\":%llu,\"events\":%llu,\"last_position\":%llu}\n",
		(unsigned long long)lines, (unsigned long long)events,
		(unsigned long long)pos);
	fflush(f);
}

/*
 * The writer's step: append the valid events of `b` in one transaction
 * (a failure here is the store's: map full, I/O, a projector; it commits
 * none of the batch), then report the batch's bad line if it has one.
 * Returns 0 to go on with the next batch.
 */
static int batch_commit(sc_store *st, batch *b, const sc_cli_ingest_opts *opt,
			sc_cli_ingest_result *res, sc_error *err)
{
	if (b->n_ok) {
		sc_error e1;
		uint64_t first = 0;
		int rc = sc_store_append(st, b->evs, b->n_ok, &first, &e1);
		if (rc)
			return sc_error_set(
			    err, rc,
			    "appending lines %llu to %llu failed: %s (every "
			    "line before %llu is committed)",
			    (unsigned long long)b->lines[0].no,
			    (unsigned long long)b->lines[b->n_ok - 1].no,
			    e1.message, (unsigned long long)b->lines[0].no);
		res->events += b->n_ok;
		res->batches++;
		if (opt->ack)
			ack_print(opt->ack,
				  b->dec_rc ? b->lines[b->n_ok - 1].no
					    : (b->read_rc ? b->read_line - 1
							  : b->lines_through),
				  res->events, first + b->n_ok - 1);
	}
	if (b->dec_rc) {
		res->lines = b->lines[b->n_ok].no;
		return sc_error_set(err, b->dec_rc, "%s", b->dec_err.message);
	}
	res->lines = b->lines_through;
	if (b->read_rc)
		return sc_error_set(err, b->read_rc, "%s", b->read_err.message);
	return 0;
}

static void batch_free(batch *b)
{
	for (size_t i = 0; i < b->dec_cap; i++)
		sc_cli_event_clear(&b->dec[i]);
	free(b->dec);
	free(b->evs);
	free(b->lines);
	free(b->text);
}

static void *reader_main(void *arg)
{
	ingest *in = arg;
	for (uint64_t seq = 0;; seq++) {
		batch *b = &in->ring[seq % in->depth];
		pthread_mutex_lock(&in->mu);
		while (b->state != BATCH_FREE && !in->stop)
			pthread_cond_wait(&in->cv_free, &in->mu);
		bool stop = in->stop;
		pthread_mutex_unlock(&in->mu);
		/* Nothing after a bad line is committed: no need to read
		 * past the batch that holds it. */
		if (stop || seq > atomic_load(&in->bad_seq))
			return NULL;
		b->seq = seq;
		if (!batch_fill(in, b))
			return NULL;
		pthread_mutex_lock(&in->mu);
		b->state = BATCH_RAW;
		pthread_cond_broadcast(&in->cv_raw);
		pthread_mutex_unlock(&in->mu);
		if (b->last)
			return NULL;
	}
}

static void *decoder_main(void *arg)
{
	ingest *in = arg;
	for (;;) {
		pthread_mutex_lock(&in->mu);
		batch *b = &in->ring[in->next_decode % in->depth];
		while (!in->stop && b->state != BATCH_RAW) {
			pthread_cond_wait(&in->cv_raw, &in->mu);
			b = &in->ring[in->next_decode % in->depth];
		}
		if (in->stop) {
			pthread_mutex_unlock(&in->mu);
			return NULL;
		}
		b->state = BATCH_DECODING;
		in->next_decode++;
		pthread_mutex_unlock(&in->mu);
		batch_decode(in, b);
		pthread_mutex_lock(&in->mu);
		b->state = BATCH_READY;
		pthread_cond_broadcast(&in->cv_ready);
		pthread_mutex_unlock(&in->mu);
	}
}

unsigned sc_cli_ingest_default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > SC_CLI_DECODERS_MAX ? SC_CLI_DECODERS_MAX : (unsigned)n;
}

/* threads == 0: one batch at a time, every step on the calling thread. */
static int run_serial(ingest *in, sc_store *st, const sc_cli_ingest_opts *opt,
		      sc_cli_ingest_result *res, progress *pr, sc_error *err)
{
	batch *b = &in->ring[0];
	for (;;) {
		batch_fill(in, b);
		batch_decode(in, b);
		int rc = batch_commit(st, b, opt, res, err);
		progress_draw(pr, in->src->total_bytes, b->bytes_read,
			      res->events, false);
		if (rc || b->last)
			return rc;
	}
}

static void run_stop(ingest *in, int wake_fd)
{
	pthread_mutex_lock(&in->mu);
	in->stop = true;
	atomic_store(&in->stopping, true);
	pthread_cond_broadcast(&in->cv_free);
	pthread_cond_broadcast(&in->cv_raw);
	pthread_cond_broadcast(&in->cv_ready);
	pthread_mutex_unlock(&in->mu);
	/* wake the reader if it waits for input */
	if (wake_fd >= 0) {
		ssize_t w;
		do
			w = write(wake_fd, "x", 1);
		while (w < 0 && errno == EINTR);
	}
}

static int run_pipeline(ingest *in, sc_store *st, const sc_cli_ingest_opts *opt,
			sc_cli_ingest_result *res, progress *pr, sc_error *err)
{
	int wake[2];
	if (pipe2(wake, O_CLOEXEC | O_NONBLOCK))
		return sc_error_set(err, errno,
				    "cannot create a pipe to stop the reader: "
				    "%s",
				    strerror(errno));
	in->src->wake_fd = wake[0];
	unsigned nthreads = opt->threads + 1;
	pthread_t *th = calloc(nthreads, sizeof *th);
	unsigned started = 0;
	int rc = th ? pthread_create(&th[0], NULL, reader_main, in) : ENOMEM;
	if (!rc)
		started = 1;
	while (!rc && started < nthreads) {
		rc = pthread_create(&th[started], NULL, decoder_main, in);
		if (!rc)
			started++;
	}
	if (rc)
		sc_error_set(err, rc,
			     "cannot start the ingest threads (%s); try "
			     "--threads 0",
			     strerror(rc));
	for (uint64_t seq = 0; !rc; seq++) {
		batch *b = &in->ring[seq % in->depth];
		pthread_mutex_lock(&in->mu);
		while (b->state != BATCH_READY)
			pthread_cond_wait(&in->cv_ready, &in->mu);
		pthread_mutex_unlock(&in->mu);
		rc = batch_commit(st, b, opt, res, err);
		progress_draw(pr, in->src->total_bytes, b->bytes_read,
			      res->events, false);
		bool last = b->last;
		pthread_mutex_lock(&in->mu);
		b->state = BATCH_FREE;
		pthread_cond_broadcast(&in->cv_free);
		pthread_mutex_unlock(&in->mu);
		if (last)
			break;
	}
	run_stop(in, wake[1]);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	in->src->wake_fd = -1;
	close(wake[0]);
	close(wake[1]);
	return rc;
}

int sc_cli_ingest_run(sc_store *st, sc_cli_source *src,
		      const sc_cli_ingest_opts *opt, sc_cli_ingest_result *res,
		      sc_error *err)
{
	memset(res, 0, sizeof *res);
	ingest in;
	memset(&in, 0, sizeof in);
	in.src = src;
	in.cap = opt->batch ? opt->batch : 1;
	in.idle_ms = opt->idle_ms;
	in.depth = opt->threads ? opt->threads + 2 : 1;
	atomic_init(&in.stopping, false);
	atomic_init(&in.bad_seq, UINT64_MAX);
	in.ring = calloc(in.depth, sizeof *in.ring);
	if (!in.ring)
		return sc_error_set(err, ENOMEM, "out of memory");
	pthread_mutex_init(&in.mu, NULL);
	pthread_cond_init(&in.cv_free, NULL);
	pthread_cond_init(&in.cv_raw, NULL);
	pthread_cond_init(&in.cv_ready, NULL);
	progress pr = {.on = opt->progress, .start = sc_cli_now()};
	double t0 = sc_cli_now();
	int rc = opt->threads ? run_pipeline(&in, st, opt, res, &pr, err)
			      : run_serial(&in, st, opt, res, &pr, err);
	if (!rc) {
		progress_draw(&pr, src->total_bytes, src->bytes_read,
			      res->events, true);
	}
	progress_end(&pr);
	res->seconds = sc_cli_now() - t0;
	pthread_cond_destroy(&in.cv_ready);
	pthread_cond_destroy(&in.cv_raw);
	pthread_cond_destroy(&in.cv_free);
	pthread_mutex_destroy(&in.mu);
	for (size_t i = 0; i < in.depth; i++)
		batch_free(&in.ring[i]);
	free(in.ring);
	return rc;
}
