#include "block/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/*
 * Beyond the eager threads, add one when the oldest queued job has waited
 * this long and jobs typically take long enough that threads must be
 * sleeping on a device (short jobs are CPU-bound: more threads only switch).
 */
#define STARVED_AFTER_NS 200000ull
#define BLOCKING_JOB_NS 30000ull

struct pool_thread {
    pthread_t thread;
    struct pool_thread *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work_available;
    struct threadpool_job *head, *tail;
    struct pool_thread *threads;
    unsigned thread_count;
    unsigned idle_count;
    unsigned queued_count;
    unsigned max_threads;
    unsigned eager_threads; /* started without waiting: 2 x CPUs */
    uint64_t average_job_ns; /* moving average of job run time */
    bool stopping;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work_available = PTHREAD_COND_INITIALIZER,
};

void threadpool_set_max_threads(unsigned count)
{
    pthread_mutex_lock(&pool.lock);
    pool.max_threads = count;
    pthread_mutex_unlock(&pool.lock);
}

static unsigned twice_cpus(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (unsigned)cpus * 2 : 2;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int start_thread_locked(void);

/* Called with pool.lock held, with a job queued or about to be. */
static void maybe_grow_locked(uint64_t now)
{
    if (pool.thread_count >= pool.max_threads || pool.queued_count <= pool.idle_count)
        return;
    bool starved = pool.head && now - pool.head->queued_at > STARVED_AFTER_NS &&
                   pool.average_job_ns > BLOCKING_JOB_NS;
    if (pool.thread_count < pool.eager_threads || starved)
        (void)start_thread_locked(); /* on failure the existing threads carry on */
}

static void *pool_thread_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head && !pool.stopping) {
            pool.idle_count++;
            pthread_cond_wait(&pool.work_available, &pool.lock);
            pool.idle_count--;
        }
        struct threadpool_job *job = pool.head;
        if (!job)
            break; /* stopping and the queue is empty */
        pool.head = job->next;
        if (!pool.head)
            pool.tail = NULL;
        pool.queued_count--;
        if (pool.head)
            maybe_grow_locked(now_ns()); /* the next job may be waiting on blocked threads */
        pthread_mutex_unlock(&pool.lock);
        job->next = NULL;
        uint64_t started = now_ns();
        job->run(job);
        uint64_t took = now_ns() - started;
        pthread_mutex_lock(&pool.lock);
        pool.average_job_ns = pool.average_job_ns - pool.average_job_ns / 8 + took / 8;
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

/* Called with pool.lock held. */
static int start_thread_locked(void)
{
    struct pool_thread *entry = malloc(sizeof(*entry));
    if (!entry)
        return -ENOMEM;
    /* Pool threads must never take a signal meant for the main thread. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    int rc = pthread_create(&entry->thread, NULL, pool_thread_main, NULL);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (rc != 0) {
        free(entry);
        return -rc;
    }
    entry->next = pool.threads;
    pool.threads = entry;
    pool.thread_count++;
    return 0;
}

int threadpool_submit(struct threadpool_job *job)
{
    uint64_t now = now_ns();
    pthread_mutex_lock(&pool.lock);
    if (pool.eager_threads == 0) {
        pool.eager_threads = twice_cpus();
        if (pool.max_threads == 0)
            pool.max_threads = pool.eager_threads > 64 ? pool.eager_threads : 64;
        if (pool.eager_threads > pool.max_threads)
            pool.eager_threads = pool.max_threads;
    }
    if (pool.thread_count == 0) {
        int rc = start_thread_locked();
        if (rc < 0) {
            pthread_mutex_unlock(&pool.lock);
            return rc;
        }
    }
    job->next = NULL;
    job->queued_at = now;
    if (pool.tail)
        pool.tail->next = job;
    else
        pool.head = job;
    pool.tail = job;
    pool.queued_count++;
    maybe_grow_locked(now);
    pthread_cond_signal(&pool.work_available);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

void threadpool_shutdown(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.work_available);
    /*
     * Jobs may queue more jobs while the pool stops (closing an image
     * closes its file on the pool): threads leave only once the queue is
     * empty, and threads started meanwhile join the list being drained.
     */
    while (pool.threads) {
        struct pool_thread *thread = pool.threads;
        pool.threads = thread->next;
        pthread_mutex_unlock(&pool.lock);
        pthread_join(thread->thread, NULL);
        free(thread);
        pthread_mutex_lock(&pool.lock);
        pool.thread_count--;
    }
    pool.stopping = false;
    pthread_mutex_unlock(&pool.lock);
}
