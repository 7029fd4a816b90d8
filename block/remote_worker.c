#include "block/remote_worker.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/aio_internal.h"
#include "block/iov.h"

void remote_list_init(struct remote_request *head) { head->next = head->prev = head; }
bool remote_list_empty(const struct remote_request *head) { return head->next == head; }

void remote_list_remove(struct remote_request *request)
{
    request->prev->next = request->next;
    request->next->prev = request->prev;
    request->next = request->prev = request;
}

void remote_list_append(struct remote_request *head, struct remote_request *request)
{
    request->prev = head->prev;
    request->next = head;
    head->prev->next = request;
    head->prev = request;
}

void remote_request_finish(struct remote_request *request, int result)
{
    remote_list_remove(request);
    struct bdev_io *io = request->io;
    if (result == 0 && io->op == BDEV_OP_READ && request->bounce)
        iov_copy_in(io->iov, io->iovcnt, 0, request->bounce, io->length);
    free(request->bounce);
    request->bounce = NULL;
    if (!request->blocking) {
        aio_context_complete_from_any_thread(io, result);
        free(request);
        return;
    }
    struct remote_worker *worker = request->worker;
    pthread_mutex_lock(&worker->lock);
    request->result = result;
    request->finished = true;
    pthread_cond_broadcast(&worker->done);
    pthread_mutex_unlock(&worker->lock);
}

/* Requests handed over: reversed into submission order, given to the driver. */
static void incoming_take(struct ev_loop *loop, ev_async *watcher, int events)
{
    (void)events;
    struct remote_worker *worker = watcher->data;
    pthread_mutex_lock(&worker->lock);
    struct remote_request *taken = worker->incoming;
    worker->incoming = NULL;
    bool stopping = worker->stopping;
    pthread_mutex_unlock(&worker->lock);
    struct remote_request *ordered = NULL;
    while (taken) {
        struct remote_request *next = taken->next;
        taken->next = ordered;
        ordered = taken;
        taken = next;
    }
    worker->take(worker, ordered, stopping);
    if (stopping)
        ev_break(loop, EVBREAK_ALL);
}

static void *worker_thread(void *opaque)
{
    struct remote_worker *worker = opaque;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main thread's */
    ev_run(worker->loop, 0);
    return NULL;
}

int remote_worker_init(struct remote_worker *worker, void *driver,
                       void (*take)(struct remote_worker *, struct remote_request *, bool))
{
    *worker = (struct remote_worker){.driver = driver, .take = take};
    if (!(worker->loop = ev_loop_new(EVFLAG_AUTO)))
        return -ENOMEM;
    pthread_mutex_init(&worker->lock, NULL);
    pthread_cond_init(&worker->done, NULL);
    ev_async_init(&worker->wake, incoming_take);
    worker->wake.data = worker;
    ev_async_start(worker->loop, &worker->wake);
    return 0;
}

int remote_worker_start(struct remote_worker *worker)
{
    return pthread_create(&worker->thread, NULL, worker_thread, worker) == 0 ? 0 : -EAGAIN;
}

void remote_worker_destroy(struct remote_worker *worker)
{
    if (!worker->loop)
        return;
    ev_loop_destroy(worker->loop);
    worker->loop = NULL;
    pthread_mutex_destroy(&worker->lock);
    pthread_cond_destroy(&worker->done);
}

void remote_worker_stop(struct remote_worker *worker)
{
    pthread_mutex_lock(&worker->lock);
    worker->stopping = true;
    pthread_mutex_unlock(&worker->lock);
    ev_async_send(worker->loop, &worker->wake);
    pthread_join(worker->thread, NULL);
    remote_worker_destroy(worker);
}

static struct remote_request *request_new(struct remote_worker *worker, struct bdev_io *io)
{
    struct remote_request *request = calloc(1, sizeof(*request));
    if (!request)
        return NULL;
    request->worker = worker;
    request->io = io;
    request->next = request->prev = request;
    if ((io->op == BDEV_OP_READ || io->op == BDEV_OP_WRITE) && io->iovcnt != 1) {
        request->bounce = malloc(io->length ? io->length : 1);
        if (!request->bounce) {
            free(request);
            return NULL;
        }
        if (io->op == BDEV_OP_WRITE) {
            uint64_t done = 0;
            for (int i = 0; i < io->iovcnt; i++) {
                memcpy(request->bounce + done, io->iov[i].iov_base, io->iov[i].iov_len);
                done += io->iov[i].iov_len;
            }
        }
    }
    return request;
}

static void hand_over(struct remote_worker *worker, struct remote_request *request)
{
    pthread_mutex_lock(&worker->lock);
    request->next = worker->incoming;
    worker->incoming = request;
    pthread_mutex_unlock(&worker->lock);
    ev_async_send(worker->loop, &worker->wake);
}

/* The worker is the first member of every remote driver's state (bdev->driver). */
void remote_submit(struct bdev *bdev, struct bdev_io *io)
{
    struct remote_worker *worker = bdev->driver;
    struct remote_request *request = request_new(worker, io);
    if (!request) {
        aio_context_complete(io->ctx, io, -ENOMEM);
        return;
    }
    hand_over(worker, request);
}

int remote_blocking(struct bdev *bdev, struct bdev_io *io)
{
    struct remote_worker *worker = bdev->driver;
    struct remote_request *request = request_new(worker, io);
    if (!request)
        return -ENOMEM;
    request->blocking = true;
    hand_over(worker, request);
    pthread_mutex_lock(&worker->lock);
    while (!request->finished)
        pthread_cond_wait(&worker->done, &worker->lock);
    pthread_mutex_unlock(&worker->lock);
    int result = request->result;
    free(request);
    return result;
}

void remote_tell(void (*event)(void *opaque, const char *message), void *opaque, const char *name,
                 const char *format, ...)
{
    if (!event)
        return;
    char message[1024];
    int prefix = snprintf(message, sizeof(message), "remote disk %s: ", name);
    if (prefix < 0 || (size_t)prefix >= sizeof(message))
        prefix = 0;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message + prefix, sizeof(message) - (size_t)prefix, format, arguments);
    va_end(arguments);
    event(opaque, message);
}
