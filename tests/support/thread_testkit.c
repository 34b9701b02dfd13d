/*
 * The test kit for the stress programs (thread_testkit.h).
 */
#include "tests/support/thread_testkit.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tk_failures_init(tk_failures *f)
{
	atomic_init(&f->count, 0);
	f->first[0] = '\0';
	if (pthread_mutex_init(&f->lock, NULL)) {
		fprintf(stderr,
			"tk_failures_init: pthread_mutex_init failed\n");
		abort();
	}
}

void tk_failures_destroy(tk_failures *f)
{
	pthread_mutex_destroy(&f->lock);
}

void tk_failure(tk_failures *f, const char *fmt, ...)
{
	pthread_mutex_lock(&f->lock);
	if (!atomic_load(&f->count)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->first, sizeof f->first, fmt, ap);
		va_end(ap);
	}
	atomic_fetch_add(&f->count, 1);
	pthread_mutex_unlock(&f->lock);
}

int tk_failures_count(tk_failures *f)
{
	return atomic_load(&f->count);
}

void tk_threads_start(pthread_t *th, size_t n, void *(*fn)(void *), void *args,
		      size_t arg_size)
{
	for (size_t i = 0; i < n; i++) {
		int rc = pthread_create(&th[i], NULL, fn,
					(char *)args + i * arg_size);
		if (rc) {
			fprintf(stderr, "tk_threads_start: thread %zu: %s\n", i,
				strerror(rc));
			abort();
		}
	}
}

void tk_threads_join(pthread_t *th, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

void tk_gate_init(tk_gate *g)
{
	g->count = 0;
	if (pthread_mutex_init(&g->lock, NULL) ||
	    pthread_cond_init(&g->cond, NULL)) {
		fprintf(stderr, "tk_gate_init: cannot make the lock\n");
		abort();
	}
}

void tk_gate_destroy(tk_gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
}

void tk_gate_arrive(tk_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->count++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

void tk_gate_wait(tk_gate *g, size_t n)
{
	pthread_mutex_lock(&g->lock);
	while (g->count < n)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}
