/*
 * io_thread: the one thread that owns lunavm's disks and console input.
 *
 * A libev loop with an aio_context (block/aio.h) where every bdev request
 * of every virtio-blk device is submitted and completes, and where the
 * console reads standard input.  The loop and context are created by the
 * main thread before the thread starts (nothing runs on them until then);
 * io_thread_stop asks the thread to run its stop callback (detach devices,
 * let requests in flight finish, flush) and joins it.
 */
#ifndef LUNA_VMM_IO_THREAD_H
#define LUNA_VMM_IO_THREAD_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

struct aio_context;

struct io_thread {
    struct ev_loop *loop;
    struct aio_context *ctx;
    ev_async stop_watcher;
    pthread_t thread;
    bool started;
    void (*on_start)(void *opaque);  /* on the thread, before the loop runs */
    void (*on_stop)(void *opaque);   /* on the thread, when asked to stop */
    void *opaque;
};

/*
 * Run ctx's loop until no request submitted through it is pending.  Unlike
 * aio_context_drain it never sleeps in poll after a request completed in the
 * loop's prepare pass (an error found inside bdev_submit): a short timer
 * keeps each pass bounded.
 */
void io_drain_requests(struct aio_context *ctx);

/* Create the loop and the aio context.  0 or -ENOMEM. */
int io_thread_init(struct io_thread *thread);
int io_thread_start(struct io_thread *thread);
/* Run on_stop on the thread and join it; no-op if never started. */
void io_thread_stop(struct io_thread *thread);
void io_thread_destroy(struct io_thread *thread);

#endif
