#include "vmm/io_thread.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "block/aio.h"

static void stop_requested(struct ev_loop *loop, ev_async *watcher, int events)
{
    (void)events;
    struct io_thread *thread = watcher->data;
    ev_async_stop(loop, watcher);
    if (thread->on_stop)
        thread->on_stop(thread->opaque);
    ev_break(loop, EVBREAK_ALL);
}

static void drain_tick(struct ev_loop *loop, ev_timer *watcher, int events)
{
    (void)loop;
    (void)watcher;
    (void)events; /* only there to end the pass */
}

void io_drain_requests(struct aio_context *ctx)
{
    struct ev_loop *loop = aio_context_loop(ctx);
    ev_timer tick;
    ev_timer_init(&tick, drain_tick, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    while (aio_context_pending(ctx) > 0)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
}

int io_thread_init(struct io_thread *thread)
{
    memset(thread, 0, sizeof(*thread));
    thread->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!thread->loop)
        return -ENOMEM;
    thread->ctx = aio_context_new(thread->loop);
    if (!thread->ctx) {
        ev_loop_destroy(thread->loop);
        thread->loop = NULL;
        return -ENOMEM;
    }
    ev_async_init(&thread->stop_watcher, stop_requested);
    thread->stop_watcher.data = thread;
    ev_async_start(thread->loop, &thread->stop_watcher);
    return 0;
}

static void *run(void *opaque)
{
    struct io_thread *thread = opaque;
    if (thread->on_start)
        thread->on_start(thread->opaque);
    ev_run(thread->loop, 0);
    return NULL;
}

int io_thread_start(struct io_thread *thread)
{
    int ret = pthread_create(&thread->thread, NULL, run, thread);
    if (ret != 0)
        return -ret;
    thread->started = true;
    return 0;
}

void io_thread_stop(struct io_thread *thread)
{
    if (!thread->started)
        return;
    ev_async_send(thread->loop, &thread->stop_watcher);
    pthread_join(thread->thread, NULL);
    thread->started = false;
}

void io_thread_destroy(struct io_thread *thread)
{
    if (thread->ctx)
        aio_context_free(thread->ctx);
    if (thread->loop)
        ev_loop_destroy(thread->loop);
    thread->ctx = NULL;
    thread->loop = NULL;
}
