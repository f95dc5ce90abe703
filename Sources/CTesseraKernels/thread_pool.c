/* The executor's thread pool: parts of one op run on the caller and on workers that spin for a
   while after each job before they sleep. A graph runs op after op, each split in a few parts
   of tens of microseconds; waking a sleeping thread per op (libdispatch's concurrentPerform)
   costs about as much as the part itself, so two threads gained little on small models.

   One job at a time: a caller that finds the pool busy (another executor on another thread),
   or that is itself a part of a job, runs its parts in order on its own thread. Which thread
   runs a part never changes what the part computes. */
#include "tessera_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define SPIN_PAUSE() _mm_pause()
#else
#define SPIN_PAUSE() ((void)0)
#endif

/* Pause instructions a worker spins before it sleeps: about 100 µs on current x86 cores, longer
   than the gap between most ops. */
#define SPIN_LIMIT (1 << 13)
#define MAXIMUM_WORKERS 255

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;    /* one job at a time */
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int workers;                                              /* under job_lock */

/* The job, written before `generation` is released and read after it is acquired. */
static tessera_part_fn job_fn;
static void *job_context;
static ptrdiff_t job_parts;
static ptrdiff_t job_helpers;                                     /* workers that take parts */
static _Atomic uint64_t generation;
static _Atomic ptrdiff_t next_part;
static _Atomic int checked_out;                                   /* workers done with the job */

static _Thread_local int inside_job;

static void run_parts(void) {
    for (;;) {
        ptrdiff_t part = atomic_fetch_add_explicit(&next_part, 1, memory_order_relaxed);
        if (part >= job_parts) return;
        job_fn(job_context, part);
    }
}

/* A worker's place in the pool, and the generation before its first job: read at creation,
   not when the thread first runs, which may be after that job is published. */
struct worker_start {
    ptrdiff_t index;
    uint64_t seen;
};

static void *worker_main(void *argument) {
    struct worker_start start = *(struct worker_start *)argument;
    free(argument);
    ptrdiff_t index = start.index;
    uint64_t seen = start.seen;
    inside_job = 1;
    for (;;) {
        uint64_t now;
        int spins = 0;
        while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_LIMIT) {
                SPIN_PAUSE();
                continue;
            }
            pthread_mutex_lock(&sleep_lock);
            while (atomic_load_explicit(&generation, memory_order_acquire) == seen) pthread_cond_wait(&wake, &sleep_lock);
            pthread_mutex_unlock(&sleep_lock);
        }
        seen = now;
        if (index < job_helpers) run_parts();
        atomic_fetch_add_explicit(&checked_out, 1, memory_order_acq_rel);
    }
    return NULL;
}

/* Starts workers up to `count` (under job_lock), each waiting for the next generation. */
static void start_workers(ptrdiff_t count) {
    if (count > MAXIMUM_WORKERS) count = MAXIMUM_WORKERS;
    while (workers < count) {
        struct worker_start *start = malloc(sizeof *start);
        if (!start) return;
        start->index = workers;
        start->seen = atomic_load_explicit(&generation, memory_order_relaxed);
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker_main, start);
        pthread_attr_destroy(&attributes);
        if (failed) {   /* fewer helpers: the parts still all run */
            free(start);
            return;
        }
        workers++;
    }
}

void tessera_parallel_parts(ptrdiff_t parts, ptrdiff_t threads, tessera_part_fn fn, void *context) {
    if (parts <= 1 || threads <= 1 || inside_job || pthread_mutex_trylock(&job_lock) != 0) {
        for (ptrdiff_t part = 0; part < parts; part++) fn(context, part);
        return;
    }
    start_workers(threads - 1);
    job_fn = fn;
    job_context = context;
    job_parts = parts;
    job_helpers = threads - 1;
    atomic_store_explicit(&next_part, 0, memory_order_relaxed);
    atomic_store_explicit(&checked_out, 0, memory_order_relaxed);
    int expected = workers;
    pthread_mutex_lock(&sleep_lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    inside_job = 1;
    run_parts();
    inside_job = 0;
    /* Every worker checks out, so none still reads this job when the next one is written. */
    /* A worker descheduled by other busy threads gets the core back sooner if this one yields. */
    for (int spins = 0; atomic_load_explicit(&checked_out, memory_order_acquire) < expected; spins++) {
        if (spins < 1024) SPIN_PAUSE(); else sched_yield();
    }
    pthread_mutex_unlock(&job_lock);
}
