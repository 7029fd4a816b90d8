/*
 * threadpool: the process-wide pool of threads that do blocking work.
 *
 * Event-loop threads never block on disk I/O; what io_uring cannot do (or
 * everything, with aio=threads) runs here: preadv2/pwritev2, fdatasync,
 * fallocate, lseek SEEK_DATA/SEEK_HOLE, block-device ioctls.  Threads start
 * lazily: up to 2 x CPUs as soon as a job finds none idle, beyond that (up
 * to the maximum) only once the oldest queued job has waited a while, since
 * threads that do not block (page-cache hits) only add context switches,
 * while threads that wait on a device add parallelism.  Threads block every
 * signal so signals reach the main thread.  A job only runs; handing its
 * result back to an event loop is the caller's business (see aio_internal.h).
 */
#ifndef LUNA_BLOCK_THREADPOOL_H
#define LUNA_BLOCK_THREADPOOL_H

#include <stdint.h>

struct threadpool_job {
    struct threadpool_job *next; /* owned by the pool while queued */
    void (*run)(struct threadpool_job *job);
    uint64_t queued_at;          /* owned by the pool: monotonic ns */
};

/*
 * Queue job; run(job) executes on a pool thread.  Returns 0, or -errno when
 * no thread exists and none could be started (the job is not queued).
 */
int threadpool_submit(struct threadpool_job *job);

/*
 * Run the queued jobs, stop and join every thread.  For process exit; no
 * job may be submitted concurrently.  The pool starts again on next use.
 */
void threadpool_shutdown(void);

/* Upper bound on pool threads (default: max(64, 2 x CPUs)); before first use. */
void threadpool_set_max_threads(unsigned count);

#endif
