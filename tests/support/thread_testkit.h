/*
 * The test kit for the stress programs, whose threads read (or write)
 * while another thread writes: a record of the failures the threads meet,
 * the start and join of a group of threads, and a gate they pass. Part of the
 * test kit library (libsctest.a).
 *
 * A thread cannot fail a cmocka test: it records what went wrong with
 * tk_failure and returns; the test's own thread checks tk_failures_count
 * once the threads are joined and fails with the first message.
 */
#ifndef STATECACHE_TESTS_THREAD_TESTKIT_H
#define STATECACHE_TESTS_THREAD_TESTKIT_H

#include <pthread.h>
#include <stddef.h>

/* The failures of a run: how many, and the first one's message. */
typedef struct tk_failures {
	_Atomic int count;
	pthread_mutex_t lock; /* guards first */
	char first[256];
} tk_failures;

/* tk_failures_init - no failures yet. Aborts if the lock cannot be made.
 * Pair with tk_failures_destroy. */
void tk_failures_init(tk_failures *f);

/* tk_failures_destroy - release what tk_failures_init took. */
void tk_failures_destroy(tk_failures *f);

/* tk_failure - record one failure; the message (printf format) is kept
 * when it is the first. Thread-safe. */
void tk_failure(tk_failures *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* tk_failures_count - the failures recorded so far. Thread-safe; threads
 * poll it to stop early. */
int tk_failures_count(tk_failures *f);

/*
 * tk_threads_start - start `n` threads running fn(args + i * arg_size),
 * i = 0..n-1, into th[0..n-1] (arg_size 0: every thread gets `args`).
 * Aborts with a message if a thread cannot be started. Join them with
 * tk_threads_join.
 */
void tk_threads_start(pthread_t *th, size_t n, void *(*fn)(void *), void *args,
		      size_t arg_size);

/* tk_threads_join - wait for th[0..n-1] to end; their results are
 * dropped. */
void tk_threads_join(pthread_t *th, size_t n);

/*
 * A gate: a count that threads raise and another thread waits for, so that
 * what a stress run asserts does not hang on how the scheduler ran the
 * threads (e.g. a writer that starts once every reader has read, so reads
 * overlap the writes even on a loaded machine). tk_gate_init aborts if the
 * lock cannot be made; pair with tk_gate_destroy.
 */
typedef struct tk_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t count; /* under lock */
} tk_gate;

void tk_gate_init(tk_gate *g);
void tk_gate_destroy(tk_gate *g);
/* tk_gate_arrive - raise the count by one. Thread-safe. */
void tk_gate_arrive(tk_gate *g);
/* tk_gate_wait - wait until the count is at least n. */
void tk_gate_wait(tk_gate *g, size_t n);

#endif
