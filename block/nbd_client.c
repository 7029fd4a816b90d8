#include "block/nbd_client.h"

#include <errno.h>
#include <ev.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/aio_internal.h"
#include "block/remote_worker.h"
#include "common/error_message.h"

#define DEFAULT_RECONNECT_TIMEOUT 60 /* seconds */
#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 5.0
#define MAX_TRANSFER (32u << 20)

struct nbd_remote {
    struct remote_worker worker; /* first: remote_submit finds it through bdev->driver */
    char *uri;
    struct bdev *bdev;
    void (*event)(void *opaque, const char *message);
    void *event_opaque;
    double timeout;           /* seconds unreachable before requests fail */

    ev_io socket;
    ev_timer retry;

    /* The worker thread's own: */
    struct nbd_handle *handle;
    bool ready;               /* handshake done: requests can be sent */
    bool lost;                /* a command failed for want of a connection */
    unsigned generation;
    struct remote_request waiting;   /* list head: not sent yet */
    struct remote_request in_flight; /* list head */
    double unreachable_since; /* 0: connected */
    bool failing;             /* unreachable beyond the timeout: requests fail at once */
    double backoff;
    bool can_fua, can_trim, can_zero, can_fast_zero, can_flush, has_allocation;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tell(struct nbd_remote *remote, const char *format, const char *detail)
{
    if (!remote->event)
        return;
    char message[1024];
    snprintf(message, sizeof(message), format, remote->uri, detail ? detail : "");
    remote->event(remote->event_opaque, message);
}

bool nbd_client_is_url(const char *path)
{
    return !strncmp(path, "nbd://", 6) || !strncmp(path, "nbd+unix://", 11) || !strncmp(path, "nbds://", 7) ||
           !strncmp(path, "nbds+unix://", 12);
}

static bool connection_error(int error)
{
    return error == ENOTCONN || error == ESHUTDOWN || error == ECONNRESET || error == EPIPE ||
           error == ECONNREFUSED || error == ETIMEDOUT;
}

static int completed(void *user_data, int *error)
{
    struct remote_request *request = user_data;
    struct nbd_remote *remote = request->worker->driver;
    if (request->generation != remote->generation)
        return 1; /* sent on a connection since dropped: it is waiting again already */
    if (*error && connection_error(*error) && !remote->worker.stopping) {
        /* Send it again once reconnected. */
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
        remote->lost = true;
        return 1;
    }
    remote_request_finish(request, *error ? -*error : 0);
    return 1;
}

static int extents_received(void *user_data, const char *context, uint64_t offset, uint32_t *entries,
                            size_t count, int *error)
{
    (void)offset;
    (void)error;
    struct remote_request *request = user_data;
    struct bdev_io *io = request->io;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) || io->nr_extents)
        return 0;
    uint64_t covered = 0;
    for (size_t i = 0; i + 1 < count && io->nr_extents < io->max_extents && covered < io->length; i += 2) {
        uint64_t length = entries[i];
        if (length == 0)
            break;
        if (length > io->length - covered)
            length = io->length - covered;
        io->extents[io->nr_extents++] =
            (struct bdev_extent){.length = length, .flags = entries[i + 1] & (BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO)};
        covered += length;
    }
    return 0;
}

/* ---- sending ---- */

static void watch_update(struct nbd_remote *remote)
{
    if (!remote->handle)
        return;
    int fd = nbd_aio_get_fd(remote->handle);
    unsigned direction = nbd_aio_get_direction(remote->handle);
    int events = ((direction & LIBNBD_AIO_DIRECTION_READ) ? EV_READ : 0) |
                 ((direction & LIBNBD_AIO_DIRECTION_WRITE) ? EV_WRITE : 0);
    if (fd < 0)
        events = 0;
    bool changed = remote->socket.fd != fd || (remote->socket.events & (EV_READ | EV_WRITE)) != events;
    if (ev_is_active(&remote->socket) && changed)
        ev_io_stop(remote->worker.loop, &remote->socket);
    if (!ev_is_active(&remote->socket) && events) {
        ev_io_set(&remote->socket, fd, events);
        ev_io_start(remote->worker.loop, &remote->socket);
    }
}

/* Send a request on the live connection; false when the connection is gone (it then waits). */
static bool request_send(struct nbd_remote *remote, struct remote_request *request)
{
    struct bdev_io *io = request->io;
    request->generation = remote->generation;
    remote_list_remove(request);
    remote_list_append(&remote->in_flight, request);
    nbd_completion_callback done = {.callback = completed, .user_data = request};
    uint32_t flags = (io->flags & BDEV_FUA) && remote->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
    void *data = remote_request_data(request);
    int64_t cookie = -1;
    switch (io->op) {
    case BDEV_OP_READ:
        cookie = nbd_aio_pread(remote->handle, data, io->length, io->offset, done, 0);
        break;
    case BDEV_OP_WRITE:
        cookie = nbd_aio_pwrite(remote->handle, data, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_FLUSH:
        if (!remote->can_flush) {
            remote_request_finish(request, 0);
            return true;
        }
        cookie = nbd_aio_flush(remote->handle, done, 0);
        break;
    case BDEV_OP_DISCARD:
        if (!remote->can_trim) {
            remote_request_finish(request, 0);
            return true;
        }
        cookie = nbd_aio_trim(remote->handle, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_WRITE_ZEROES:
        flags |= (io->flags & BDEV_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
        flags |= (io->flags & BDEV_FAST_ONLY) ? LIBNBD_CMD_FLAG_FAST_ZERO : 0;
        cookie = nbd_aio_zero(remote->handle, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_BLOCK_STATUS: {
        io->nr_extents = 0;
        nbd_extent_callback extents = {.callback = extents_received, .user_data = request};
        cookie = nbd_aio_block_status(remote->handle, io->length, io->offset, extents, done, 0);
        break;
    }
    }
    if (cookie >= 0)
        return true;
    int error = nbd_get_errno();
    if (!nbd_aio_is_ready(remote->handle) || connection_error(error)) {
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
        remote->lost = true;
        return false;
    }
    remote_request_finish(request, error ? -error : -EIO);
    return true;
}

static void send_waiting(struct nbd_remote *remote)
{
    while (remote->ready && !remote->lost && !remote_list_empty(&remote->waiting))
        if (!request_send(remote, remote->waiting.next))
            break;
}

/* ---- the connection ---- */

static void fail_waiting(struct nbd_remote *remote, int result)
{
    while (!remote_list_empty(&remote->waiting))
        remote_request_finish(remote->waiting.next, result);
}

static void connection_drop(struct nbd_remote *remote, const char *reason)
{
    if (ev_is_active(&remote->socket))
        ev_io_stop(remote->worker.loop, &remote->socket);
    /* Whatever was in flight is sent again on the next connection. */
    while (!remote_list_empty(&remote->in_flight)) {
        struct remote_request *request = remote->in_flight.next;
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
    }
    remote->generation++;
    if (remote->handle) {
        nbd_close(remote->handle);
        remote->handle = NULL;
    }
    bool was_ready = remote->ready;
    remote->ready = false;
    remote->lost = false;
    if (remote->worker.stopping)
        return;
    if (was_ready) {
        tell(remote, "remote disk %s: connection lost (%s); reconnecting", reason);
        remote->unreachable_since = now_seconds();
        remote->backoff = BACKOFF_FIRST;
    }
    ev_timer_stop(remote->worker.loop, &remote->retry);
    ev_timer_set(&remote->retry, remote->backoff, 0);
    ev_timer_start(remote->worker.loop, &remote->retry);
    remote->backoff = remote->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : remote->backoff * 2;
}

static void became_ready(struct nbd_remote *remote)
{
    int64_t size = nbd_get_size(remote->handle);
    if (size < 0 || (uint64_t)size != remote->bdev->size) {
        /* Not the same disk any more: sending old requests there would be wrong. */
        connection_drop(remote, "the export's size changed");
        return;
    }
    remote->ready = true;
    remote->failing = false;
    remote->unreachable_since = 0;
    tell(remote, "remote disk %s: reconnected%s", NULL);
    send_waiting(remote);
}

static void socket_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)loop;
    struct nbd_remote *remote = watcher->data;
    int rc = 0;
    if (events & EV_READ)
        rc = nbd_aio_notify_read(remote->handle);
    if (rc == 0 && (events & EV_WRITE) && remote->handle)
        rc = nbd_aio_notify_write(remote->handle);
    if (rc < 0 || remote->lost || nbd_aio_is_dead(remote->handle) || nbd_aio_is_closed(remote->handle)) {
        connection_drop(remote, rc < 0 ? nbd_get_error() : "the server closed it");
        return;
    }
    if (!remote->ready && nbd_aio_is_ready(remote->handle))
        became_ready(remote);
    watch_update(remote);
}

/* Start connecting again (the retry timer). */
static void reconnect(struct ev_loop *loop, ev_timer *timer, int events)
{
    (void)loop;
    (void)events;
    struct nbd_remote *remote = timer->data;
    if (remote->unreachable_since && now_seconds() - remote->unreachable_since >= remote->timeout) {
        if (!remote->failing)
            tell(remote, "remote disk %s: unreachable for too long; failing requests until it is back%s", NULL);
        remote->failing = true;
        fail_waiting(remote, -EIO);
    }
    remote->handle = nbd_create();
    if (!remote->handle || nbd_add_meta_context(remote->handle, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_aio_connect_uri(remote->handle, remote->uri) < 0) {
        connection_drop(remote, nbd_get_error());
        return;
    }
    watch_update(remote);
}

/* Requests handed over by submitters (the worker's take). */
static void requests_take(struct remote_worker *worker, struct remote_request *requests, bool stopping)
{
    struct nbd_remote *remote = worker->driver;
    while (requests) {
        struct remote_request *request = requests;
        requests = requests->next;
        request->next = request->prev = request;
        remote_list_append(&remote->waiting, request);
    }
    if (stopping) {
        fail_waiting(remote, -EIO);
        connection_drop(remote, "closing");
        ev_timer_stop(worker->loop, &remote->retry);
        return;
    }
    if (remote->failing)
        fail_waiting(remote, -EIO);
    send_waiting(remote);
    if (remote->lost)
        connection_drop(remote, "the connection failed");
    else
        watch_update(remote);
}

static void remote_free(struct nbd_remote *remote)
{
    free(remote->uri);
    free(remote);
}

static void remote_close(struct bdev *bdev)
{
    struct nbd_remote *remote = bdev->driver;
    remote_worker_stop(&remote->worker);
    remote_free(remote);
}

static const struct bdev_ops nbd_client_ops = {
    .name = "nbd",
    .submit = remote_submit,
    .blocking = remote_blocking,
    .close = remote_close,
};

static void caps_and_limits(struct bdev *bdev, struct nbd_remote *remote, bool readonly)
{
    struct nbd_handle *h = remote->handle;
    remote->can_fua = nbd_can_fua(h) == 1;
    remote->can_trim = nbd_can_trim(h) == 1;
    remote->can_zero = nbd_can_zero(h) == 1;
    remote->can_fast_zero = nbd_can_fast_zero(h) == 1;
    remote->can_flush = nbd_can_flush(h) == 1;
    remote->has_allocation = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    uint32_t caps = BDEV_CAP_FLUSH;
    if (readonly || nbd_is_read_only(h) == 1)
        caps |= BDEV_CAP_READ_ONLY;
    if (remote->can_trim)
        caps |= BDEV_CAP_DISCARD;
    if (remote->can_zero)
        caps |= BDEV_CAP_WRITE_ZEROES;
    if (remote->can_fast_zero)
        caps |= BDEV_CAP_FAST_ZERO;
    if (remote->can_fua)
        caps |= BDEV_CAP_FUA;
    if (remote->has_allocation)
        caps |= BDEV_CAP_BLOCK_STATUS;
    bdev->caps = caps;
    int64_t minimum = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t preferred = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
    int64_t maximum = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    bdev->limits = (struct bdev_limits){
        .request_alignment = minimum > 0 ? (uint32_t)minimum : 1,
        .logical_block_size = 512,
        .physical_block_size = preferred > 0 ? (uint32_t)preferred : 4096,
        .optimal_io_size = 0,
        .max_transfer = maximum > 0 && maximum < MAX_TRANSFER ? (uint32_t)maximum : MAX_TRANSFER,
        .max_discard = UINT32_MAX & ~UINT64_C(511),
    };
}

int nbd_client_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    struct nbd_remote *remote = calloc(1, sizeof(*remote));
    if (!remote || !(remote->uri = strdup(options->path))) {
        free(remote);
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", options->path);
    }
    remote_list_init(&remote->waiting);
    remote_list_init(&remote->in_flight);
    remote->bdev = bdev;
    remote->event = options->event;
    remote->event_opaque = options->event_opaque;
    remote->timeout = options->reconnect_timeout ? options->reconnect_timeout : DEFAULT_RECONNECT_TIMEOUT;
    remote->backoff = BACKOFF_FIRST;

    /* The first connection is made here, blocking: an export that cannot be reached is refused at start. */
    remote->handle = nbd_create();
    int rc = 0;
    if (!remote->handle || nbd_add_meta_context(remote->handle, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_connect_uri(remote->handle, remote->uri) < 0) {
        rc = error_message_set(error_message, nbd_get_errno() ? -nbd_get_errno() : -EIO, "%s: %s", options->path,
                               nbd_get_error() ? nbd_get_error() : "cannot connect");
    }
    int64_t size = rc == 0 ? nbd_get_size(remote->handle) : -1;
    if (rc == 0 && size < 0)
        rc = error_message_set(error_message, -EIO, "%s: %s", options->path, nbd_get_error());
    if (rc == 0 && remote_worker_init(&remote->worker, remote, requests_take) < 0)
        rc = error_message_set(error_message, -ENOMEM, "%s: cannot create an event loop", options->path);
    if (rc < 0) {
        if (remote->handle)
            nbd_close(remote->handle);
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return rc;
    }
    bdev->size = (uint64_t)size;
    caps_and_limits(bdev, remote, options->readonly);
    remote->ready = true;
    ev_init(&remote->socket, socket_ready);
    remote->socket.data = remote;
    ev_init(&remote->retry, reconnect);
    remote->retry.data = remote;
    watch_update(remote);
    if (remote_worker_start(&remote->worker) < 0) {
        nbd_close(remote->handle);
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return error_message_set(error_message, -EAGAIN, "%s: cannot start the connection thread", options->path);
    }
    bdev->ops = &nbd_client_ops;
    bdev->driver = remote;
    return 0;
}
