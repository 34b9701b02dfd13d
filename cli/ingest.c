/*
 * statecache command: the ingest pipeline (cli/ingest.h).
 */
#include "cli/ingest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/json_event.h"
#include "common/internal.h"

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

static void progress_draw(progress *p, const sc_cli_source *src,
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
	if (src->total_bytes) {
		double frac =
		    (double)src->bytes_read / (double)src->total_bytes;
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

/* ===== the pipeline ======================================================= */

typedef struct batch {
	sc_cli_event *dec; /* decoded lines, owning their memory */
	sc_event *evs;	   /* copies of dec[i].ev, contiguous for append */
	uint64_t *lineno;
	size_t n, cap;
} batch;

/* Append events [from, n) of the batch one at a time after the store
 * rejected the whole batch as invalid, to commit everything before the
 * bad event and name its line. */
static int append_one_by_one(sc_store *st, batch *b, sc_cli_ingest_result *res,
			     sc_error *err)
{
	for (size_t i = 0; i < b->n; i++) {
		sc_error e1;
		int rc = sc_store_append(st, &b->evs[i], 1, NULL, &e1);
		if (rc == SC_EINVAL)
			return sc_error_set(err, SC_EINVAL, "line %llu: %s",
					    (unsigned long long)b->lineno[i],
					    e1.message);
		if (rc)
			return sc_error_set(err, rc,
					    "appending line %llu failed: %s "
					    "(every line before it is "
					    "committed)",
					    (unsigned long long)b->lineno[i],
					    e1.message);
		res->events++;
		res->batches++;
	}
	return 0;
}

static int batch_flush(sc_store *st, batch *b, sc_cli_ingest_result *res,
		       sc_error *err)
{
	if (b->n == 0)
		return 0;
	sc_error e1;
	int rc = sc_store_append(st, b->evs, b->n, NULL, &e1);
	if (rc == SC_EINVAL) {
		rc = append_one_by_one(st, b, res, err);
	} else if (rc) {
		rc = sc_error_set(err, rc,
				  "appending lines %llu to %llu failed: %s "
				  "(every line before %llu is committed)",
				  (unsigned long long)b->lineno[0],
				  (unsigned long long)b->lineno[b->n - 1],
				  e1.message, (unsigned long long)b->lineno[0]);
	} else {
		res->events += b->n;
		res->batches++;
	}
	b->n = 0;
	return rc;
}

static bool blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	return true;
}

int sc_cli_ingest_run(sc_store *st, sc_cli_source *src,
		      const sc_cli_ingest_opts *opt, sc_cli_ingest_result *res,
		      sc_error *err)
{
	memset(res, 0, sizeof *res);
	batch b = {0};
	b.cap = opt->batch ? opt->batch : 1;
	b.dec = calloc(b.cap, sizeof *b.dec);
	b.evs = calloc(b.cap, sizeof *b.evs);
	b.lineno = calloc(b.cap, sizeof *b.lineno);
	if (!b.dec || !b.evs || !b.lineno) {
		free(b.dec);
		free(b.evs);
		free(b.lineno);
		return sc_error_set(err, ENOMEM,
				    "out of memory for a batch of %zu events "
				    "(use a smaller --batch)",
				    b.cap);
	}
	for (size_t i = 0; i < b.cap; i++)
		sc_cli_event_init(&b.dec[i]);
	progress pr = {.on = opt->progress, .start = sc_cli_now()};
	double t0 = sc_cli_now();
	int rc = 0;
	for (;;) {
		const char *line;
		size_t len;
		sc_error e1;
		int got = src->next(src, &line, &len, &e1);
		if (got == 0)
			break;
		res->lines++;
		if (got < 0 || got > 1) {
			/* commit what precedes the unreadable line */
			int frc = batch_flush(st, &b, res, err);
			rc = frc ? frc
				 : sc_error_set(err, got, "line %llu: %s",
						(unsigned long long)res->lines,
						e1.message);
			break;
		}
		if (len && line[len - 1] == '\r')
			len--;
		if (blank(line, len))
			continue;
		sc_cli_event *d = &b.dec[b.n];
		int drc = sc_cli_event_decode(d, line, len, &e1);
		if (drc) {
			int frc = batch_flush(st, &b, res, err);
			rc = frc ? frc
				 : sc_error_set(err, drc, "line %llu: %s",
						(unsigned long long)res->lines,
						e1.message);
			break;
		}
		b.evs[b.n] = d->ev;
		b.lineno[b.n] = res->lines;
		b.n++;
		if (b.n == b.cap) {
			rc = batch_flush(st, &b, res, err);
			if (rc)
				break;
			progress_draw(&pr, src, res->events, false);
		}
	}
	if (!rc)
		rc = batch_flush(st, &b, res, err);
	progress_draw(&pr, src, res->events, true);
	progress_end(&pr);
	res->seconds = sc_cli_now() - t0;
	for (size_t i = 0; i < b.cap; i++)
		sc_cli_event_clear(&b.dec[i]);
	free(b.dec);
	free(b.evs);
	free(b.lineno);
	return rc;
}
