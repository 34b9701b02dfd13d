/*
 * statecache command: the ingest pipeline (cli/ingest.h).
 */
#include "cli/ingest.h"

#include <errno.h>
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

static int file_next(sc_cli_source *base, const char **line, size_t *len,
		     sc_error *err)
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
		size_t n =
		    fread(s->buf + s->end, 1, FILE_BUF_CAP - s->end, s->f);
		s->end += n;
		base->bytes_read += n;
		if (n == 0) {
			if (ferror(s->f))
				return sc_error_set(err, EIO,
						    "reading the input failed");
			s->eof = true;
		}
	}
}

int sc_cli_file_source_init(sc_cli_file_source *s, FILE *f)
{
	memset(s, 0, sizeof *s);
	s->base.next = file_next;
	s->f = f;
	s->buf = malloc(FILE_BUF_CAP);
	if (!s->buf)
		return ENOMEM;
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
		s->base.total_bytes = (uint64_t)st.st_size;
	return 0;
}

void sc_cli_file_source_free(sc_cli_file_source *s)
{
	free(s->buf);
	s->buf = NULL;
}

/* ===== generator source =================================================== */

static int gen_next(sc_cli_source *base, const char **line, size_t *len,
		    sc_error *err)
{
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
 * Two stages on two threads: a decoder thread reads and decodes lines into
 * one of two batches while the calling thread appends the other one. JSON
 * decoding costs about as much as the append, so this nearly halves the
 * time on two cores. A batch is handed over under the mutex and owned by
 * one side at a time; no batch memory is shared while in use.
 */

typedef struct batch {
	sc_cli_event *dec; /* decoded lines, owning their memory */
	sc_event *evs;	   /* copies of dec[i].ev, contiguous for append */
	uint64_t *lineno;
	size_t n, cap;
	bool last;	   /* no batch follows this one */
	int err_rc;	   /* when last: why decoding stopped (0: input end) */
	sc_error err;	   /* ... and the message, "line N: ..." */
	uint64_t progress; /* the source's bytes_read after this batch */
} batch;

typedef struct pipeline {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	batch b[2];
	bool full[2];	  /* handed to the appender */
	atomic_bool stop; /* the appender failed: the decoder must stop */
	sc_cli_source *src;
	uint64_t lines; /* read by the decoder, blank lines included */
} pipeline;

static bool blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	return true;
}

/* Fill `b` with up to b->cap decoded lines; sets b->last at the end of the
 * input or at the first bad line (the events before it stay in b). */
static void batch_fill(pipeline *pl, batch *b)
{
	sc_cli_source *src = pl->src;
	b->n = 0;
	b->last = false;
	b->err_rc = 0;
	while (b->n < b->cap && !atomic_load(&pl->stop)) {
		const char *line;
		size_t len;
		sc_error e1;
		int got = src->next(src, &line, &len, &e1);
		if (got == 0) {
			b->last = true;
			break;
		}
		pl->lines++;
		if (got != 1) {
			b->last = true;
			b->err_rc = sc_error_set(&b->err, got, "line %llu: %s",
						 (unsigned long long)pl->lines,
						 e1.message);
			break;
		}
		if (len && line[len - 1] == '\r')
			len--;
		if (blank(line, len))
			continue;
		sc_cli_event *d = &b->dec[b->n];
		/* A line joins the batch only if the store will take its
		 * event: a batch that reaches the store is valid. */
		int drc = sc_cli_event_decode(d, line, len, &e1);
		if (!drc)
			drc = sc_event_validate(&d->ev, &e1);
		if (drc) {
			b->last = true;
			b->err_rc = sc_error_set(&b->err, drc, "line %llu: %s",
						 (unsigned long long)pl->lines,
						 e1.message);
			break;
		}
		b->evs[b->n] = d->ev;
		b->lineno[b->n] = pl->lines;
		b->n++;
	}
	b->progress = src->bytes_read;
}

static void *decoder_main(void *arg)
{
	pipeline *pl = arg;
	for (unsigned k = 0;; k ^= 1) {
		pthread_mutex_lock(&pl->mu);
		while (pl->full[k] && !pl->stop)
			pthread_cond_wait(&pl->cv, &pl->mu);
		bool stop = pl->stop;
		pthread_mutex_unlock(&pl->mu);
		if (stop)
			return NULL;
		batch_fill(pl, &pl->b[k]);
		pthread_mutex_lock(&pl->mu);
		pl->full[k] = true;
		pthread_cond_broadcast(&pl->cv);
		pthread_mutex_unlock(&pl->mu);
		if (pl->b[k].last)
			return NULL;
	}
}

/* Append the batch, valid line by line (batch_fill), in one transaction:
 * a failure here is the store's (map full, I/O, a projector), not a
 * line's, and commits none of the batch. */
static int batch_append(sc_store *st, batch *b, sc_cli_ingest_result *res,
			sc_error *err)
{
	if (b->n == 0)
		return 0;
	sc_error e1;
	int rc = sc_store_append(st, b->evs, b->n, NULL, &e1);
	if (rc)
		return sc_error_set(err, rc,
				    "appending lines %llu to %llu failed: %s "
				    "(every line before %llu is committed)",
				    (unsigned long long)b->lineno[0],
				    (unsigned long long)b->lineno[b->n - 1],
				    e1.message,
				    (unsigned long long)b->lineno[0]);
	res->events += b->n;
	res->batches++;
	return 0;
}

static int batch_init(batch *b, size_t cap)
{
	memset(b, 0, sizeof *b);
	b->cap = cap;
	b->dec = calloc(cap, sizeof *b->dec);
	b->evs = calloc(cap, sizeof *b->evs);
	b->lineno = calloc(cap, sizeof *b->lineno);
	if (!b->dec || !b->evs || !b->lineno)
		return ENOMEM;
	for (size_t i = 0; i < cap; i++)
		sc_cli_event_init(&b->dec[i]);
	return 0;
}

static void batch_free(batch *b)
{
	for (size_t i = 0; b->dec && i < b->cap; i++)
		sc_cli_event_clear(&b->dec[i]);
	free(b->dec);
	free(b->evs);
	free(b->lineno);
}

int sc_cli_ingest_run(sc_store *st, sc_cli_source *src,
		      const sc_cli_ingest_opts *opt, sc_cli_ingest_result *res,
		      sc_error *err)
{
	memset(res, 0, sizeof *res);
	size_t cap = opt->batch ? opt->batch : 1;
	pipeline pl;
	memset(&pl, 0, sizeof pl);
	atomic_init(&pl.stop, false);
	pl.src = src;
	if (batch_init(&pl.b[0], cap) || batch_init(&pl.b[1], cap)) {
		batch_free(&pl.b[0]);
		batch_free(&pl.b[1]);
		return sc_error_set(err, ENOMEM,
				    "out of memory for a batch of %zu events "
				    "(use a smaller --batch)",
				    cap);
	}
	pthread_mutex_init(&pl.mu, NULL);
	pthread_cond_init(&pl.cv, NULL);
	progress pr = {.on = opt->progress, .start = sc_cli_now()};
	double t0 = sc_cli_now();
	pthread_t th;
	int rc = pthread_create(&th, NULL, decoder_main, &pl);
	if (rc) {
		rc = sc_error_set(err, rc, "cannot start the decoder thread");
		goto out;
	}
	for (unsigned k = 0;; k ^= 1) {
		pthread_mutex_lock(&pl.mu);
		while (!pl.full[k])
			pthread_cond_wait(&pl.cv, &pl.mu);
		pthread_mutex_unlock(&pl.mu);
		batch *b = &pl.b[k];
		/* On a bad line the events before it are in b: commit them,
		 * then report the line. */
		rc = batch_append(st, b, res, err);
		if (!rc && b->last && b->err_rc)
			rc = sc_error_set(err, b->err_rc, "%s", b->err.message);
		progress_draw(&pr, src->total_bytes, b->progress, res->events,
			      false);
		bool last = b->last;
		pthread_mutex_lock(&pl.mu);
		pl.full[k] = false;
		if (rc)
			pl.stop = true;
		pthread_cond_broadcast(&pl.cv);
		pthread_mutex_unlock(&pl.mu);
		if (rc || last)
			break;
	}
	pthread_join(th, NULL);
	res->lines = pl.lines;
	progress_draw(&pr, src->total_bytes, src->bytes_read, res->events,
		      true);
	progress_end(&pr);
out:
	res->seconds = sc_cli_now() - t0;
	pthread_cond_destroy(&pl.cv);
	pthread_mutex_destroy(&pl.mu);
	batch_free(&pl.b[0]);
	batch_free(&pl.b[1]);
	return rc;
}
