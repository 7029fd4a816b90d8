#include "worker.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "common/log.h"
#include "server/connection.h"

/* A socket waiting to be adopted by the worker's thread. */
struct pending_socket {
    struct pending_socket *next;
    struct connection_request request;
};

struct worker {
    unsigned index;
    pthread_t thread;
    struct ev_loop *loop;
    struct aio_context *aio;
    struct export_registry *registry;

    ev_async wakeup;           /* new sockets or a stop request */
    pthread_mutex_t lock;      /* guards pending, stop_requested, grace */
    struct pending_socket *pending;
    bool stop_requested;
    double grace_seconds;

    /* Worker thread only. */
    bool stopping;
    struct connection_link connections; /* circular list head */
    _Atomic unsigned connection_count;
    ev_prepare flush_watcher;
    struct worker_flush *flush_list;
    ev_timer grace_timer;
    ev_check exit_check;

    /* Startup handshake with worker_start. */
    pthread_mutex_t start_lock;
    pthread_cond_t started;
    int start_result; /* 1 = pending */
};

struct ev_loop *worker_loop(struct worker *worker) { return worker->loop; }
struct aio_context *worker_aio_context(struct worker *worker) { return worker->aio; }
struct export_registry *worker_registry(struct worker *worker) { return worker->registry; }
unsigned worker_connection_count(const struct worker *worker) { return worker->connection_count; }

/* Leave the loop once nothing is left: no connection, no disk I/O. */
static void exit_if_idle(struct worker *worker)
{
    if (worker->stopping && worker->connections.next == &worker->connections &&
        aio_context_pending(worker->aio) == 0)
        ev_break(worker->loop, EVBREAK_ALL);
}

void worker_connection_added(struct worker *worker, struct connection_link *link)
{
    struct connection_link *head = &worker->connections;
    link->next = head->next;
    link->prev = head;
    head->next->prev = link;
    head->next = link;
}

void worker_connection_removed(struct worker *worker, struct connection_link *link)
{
    link->prev->next = link->next;
    link->next->prev = link->prev;
    link->next = link->prev = link;
    worker->connection_count--;
}

void worker_schedule_flush(struct worker *worker, struct worker_flush *flush)
{
    if (flush->queued)
        return;
    flush->queued = true;
    flush->next = worker->flush_list;
    worker->flush_list = flush;
}

/*
 * Before the loop blocks: every connection that got replies during this
 * iteration writes them now, in one writev each.  Batching here rather than
 * per completion turns N completions from one io_uring wake-up into one
 * system call per connection.
 */
static void flush_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *worker = watcher->data;
    while (worker->flush_list) {
        struct worker_flush *list = worker->flush_list;
        worker->flush_list = NULL;
        while (list) {
            struct worker_flush *flush = list;
            list = list->next;
            flush->queued = false;
            flush->fn(flush);
        }
    }
    /*
     * Connections often close here, after their last reply: test now, as a
     * check watcher would only run after the loop has blocked in poll.
     */
    exit_if_idle(worker);
}

static void adopt_pending(struct worker *worker, struct pending_socket *pending)
{
    while (pending) {
        struct pending_socket *next = pending->next;
        int ret = worker->stopping ? -ESHUTDOWN
                                   : connection_start(worker, &pending->request);
        if (ret < 0) {
            if (ret != -ESHUTDOWN)
                log_warn("%s: dropping connection: %s", pending->request.peer, strerror(-ret));
            close(pending->request.fd);
            worker->connection_count--;
        }
        free(pending);
        pending = next;
    }
}

static void exit_check_cb(struct ev_loop *loop, ev_check *watcher, int revents)
{
    (void)loop;
    (void)revents;
    exit_if_idle(watcher->data);
}

static void grace_expired_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *worker = watcher->data;
    struct connection_link *head = &worker->connections;
    if (head->next != head)
        log_warn("worker %u: closing %u connections that did not finish in time", worker->index,
                 worker->connection_count);
    while (head->next != head)
        head->next->abort(head->next);
}

static void begin_stop(struct worker *worker, double grace_seconds)
{
    if (worker->stopping)
        return;
    worker->stopping = true;
    struct connection_link *head = &worker->connections;
    for (struct connection_link *link = head->next, *next; link != head; link = next) {
        next = link->next; /* shutdown may remove the link */
        link->shutdown(link);
    }
    ev_timer_init(&worker->grace_timer, grace_expired_cb, grace_seconds, 0.);
    worker->grace_timer.data = worker;
    ev_timer_start(worker->loop, &worker->grace_timer);
    /* Checks started now run only after the next poll: test once here too. */
    ev_check_start(worker->loop, &worker->exit_check);
    exit_if_idle(worker);
}

static void wakeup_cb(struct ev_loop *loop, ev_async *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *worker = watcher->data;
    pthread_mutex_lock(&worker->lock);
    struct pending_socket *pending = worker->pending;
    worker->pending = NULL;
    bool stop = worker->stop_requested;
    double grace = worker->grace_seconds;
    pthread_mutex_unlock(&worker->lock);

    /* The list was pushed newest-first; adopt in arrival order. */
    struct pending_socket *ordered = NULL;
    while (pending) {
        struct pending_socket *next = pending->next;
        pending->next = ordered;
        ordered = pending;
        pending = next;
    }
    adopt_pending(worker, ordered);
    if (stop)
        begin_stop(worker, grace);
}

static void *worker_main(void *arg)
{
    struct worker *worker = arg;
    int result = 0;
    worker->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!worker->loop)
        result = -ENOMEM;
    if (result == 0) {
        worker->aio = aio_context_new(worker->loop);
        if (!worker->aio)
            result = -ENOMEM;
    }
    if (result == 0) {
        ev_async_init(&worker->wakeup, wakeup_cb);
        worker->wakeup.data = worker;
        ev_async_start(worker->loop, &worker->wakeup);
        ev_prepare_init(&worker->flush_watcher, flush_cb);
        worker->flush_watcher.data = worker;
        ev_prepare_start(worker->loop, &worker->flush_watcher);
        ev_check_init(&worker->exit_check, exit_check_cb);
        worker->exit_check.data = worker;
    }

    pthread_mutex_lock(&worker->start_lock);
    worker->start_result = result;
    pthread_cond_signal(&worker->started);
    pthread_mutex_unlock(&worker->start_lock);
    if (result < 0)
        return NULL;

    ev_run(worker->loop, 0);

    /* Records of connections closed while their flush was queued are freed by it. */
    flush_cb(worker->loop, &worker->flush_watcher, 0);
    /* The loop only ends through exit_if_idle's ev_break. */
    ev_async_stop(worker->loop, &worker->wakeup);
    ev_prepare_stop(worker->loop, &worker->flush_watcher);
    ev_timer_stop(worker->loop, &worker->grace_timer);
    ev_check_stop(worker->loop, &worker->exit_check);
    aio_context_free(worker->aio);
    ev_loop_destroy(worker->loop);
    return NULL;
}

int worker_start(unsigned index, struct export_registry *registry, struct worker **out)
{
    struct worker *worker = calloc(1, sizeof(*worker));
    if (!worker)
        return -ENOMEM;
    worker->index = index;
    worker->registry = registry;
    worker->connections.next = worker->connections.prev = &worker->connections;
    worker->start_result = 1;
    pthread_mutex_init(&worker->lock, NULL);
    pthread_mutex_init(&worker->start_lock, NULL);
    pthread_cond_init(&worker->started, NULL);

    int ret = -pthread_create(&worker->thread, NULL, worker_main, worker);
    if (ret == 0) {
        char name[16];
        snprintf(name, sizeof(name), "lunad-w%u", index);
        pthread_setname_np(worker->thread, name);
        pthread_mutex_lock(&worker->start_lock);
        while (worker->start_result == 1)
            pthread_cond_wait(&worker->started, &worker->start_lock);
        ret = worker->start_result;
        pthread_mutex_unlock(&worker->start_lock);
        if (ret < 0)
            pthread_join(worker->thread, NULL);
    }
    if (ret < 0) {
        pthread_mutex_destroy(&worker->lock);
        pthread_mutex_destroy(&worker->start_lock);
        pthread_cond_destroy(&worker->started);
        free(worker);
        return ret;
    }
    *out = worker;
    return 0;
}

int worker_adopt(struct worker *worker, const struct connection_request *request)
{
    struct pending_socket *pending = malloc(sizeof(*pending));
    if (!pending)
        return -ENOMEM;
    pending->request = *request;
    pthread_mutex_lock(&worker->lock);
    pending->next = worker->pending;
    worker->pending = pending;
    pthread_mutex_unlock(&worker->lock);
    /*
     * Counted now, not when the thread adopts it: clients that connect
     * together must not all see the same least-loaded worker.
     */
    worker->connection_count++;
    ev_async_send(worker->loop, &worker->wakeup);
    return 0;
}

void worker_request_stop(struct worker *worker, double grace_seconds)
{
    pthread_mutex_lock(&worker->lock);
    worker->stop_requested = true;
    worker->grace_seconds = grace_seconds;
    pthread_mutex_unlock(&worker->lock);
    ev_async_send(worker->loop, &worker->wakeup);
}

void worker_join(struct worker *worker)
{
    pthread_join(worker->thread, NULL);
    for (struct pending_socket *pending = worker->pending, *next; pending; pending = next) {
        next = pending->next;
        close(pending->request.fd);
        free(pending);
    }
    pthread_mutex_destroy(&worker->lock);
    pthread_mutex_destroy(&worker->start_lock);
    pthread_cond_destroy(&worker->started);
    free(worker);
}
