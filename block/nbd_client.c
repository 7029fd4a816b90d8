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
#define MULTI_CONN 4 /* connections to a server that allows multi-conn */

struct nbd_remote;

/* One connection to the server (several with multi-conn); the worker thread's. */
struct nbd_connection {
    struct nbd_remote *remote;
    struct nbd_handle *handle;
    ev_io socket;
    ev_timer retry;
    bool ready;               /* handshake done: requests can be sent */
    bool lost;                /* a command failed for want of a connection */
    unsigned generation;      /* changes at each drop: completions of older commands are stale */
    struct remote_request in_flight; /* list head */
    double backoff;
};

struct nbd_remote {
    struct remote_worker worker; /* first: remote_submit finds it through bdev->driver */
    char *uri;
    struct bdev *bdev;
    void (*event)(void *opaque, const char *message);
    void *event_opaque;
    double timeout;           /* seconds unreachable before requests fail */

    /* The worker thread's own: */
    struct nbd_connection connections[MULTI_CONN];
    unsigned connection_count;
    unsigned next;            /* round-robin over the ready connections */
    struct remote_request waiting; /* list head: not sent yet */
    double unreachable_since; /* 0: some connection is up */
    bool failing;             /* unreachable beyond the timeout: requests fail at once */
    bool can_fua, can_trim, can_zero, can_fast_zero, can_flush, has_allocation;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
    struct nbd_connection *connection = request->task;
    struct nbd_remote *remote = connection->remote;
    if (request->generation != connection->generation)
        return 1; /* sent on a connection since dropped: it is waiting again already */
    if (*error && connection_error(*error) && !remote->worker.stopping) {
        /* Send it again once a connection is up. */
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
        connection->lost = true;
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

static void watch_update(struct nbd_connection *connection)
{
    if (!connection->handle)
        return;
    struct ev_loop *loop = connection->remote->worker.loop;
    int fd = nbd_aio_get_fd(connection->handle);
    unsigned direction = nbd_aio_get_direction(connection->handle);
    int events = ((direction & LIBNBD_AIO_DIRECTION_READ) ? EV_READ : 0) |
                 ((direction & LIBNBD_AIO_DIRECTION_WRITE) ? EV_WRITE : 0);
    if (fd < 0)
        events = 0;
    bool changed = connection->socket.fd != fd || (connection->socket.events & (EV_READ | EV_WRITE)) != events;
    if (ev_is_active(&connection->socket) && changed)
        ev_io_stop(loop, &connection->socket);
    if (!ev_is_active(&connection->socket) && events) {
        ev_io_set(&connection->socket, fd, events);
        ev_io_start(loop, &connection->socket);
    }
}

/* Send a request on a live connection; false when that connection is gone (the request then waits). */
static bool request_send(struct nbd_connection *connection, struct remote_request *request)
{
    struct nbd_remote *remote = connection->remote;
    struct nbd_handle *h = connection->handle;
    struct bdev_io *io = request->io;
    request->task = connection;
    request->generation = connection->generation;
    remote_list_remove(request);
    remote_list_append(&connection->in_flight, request);
    nbd_completion_callback done = {.callback = completed, .user_data = request};
    uint32_t flags = (io->flags & BDEV_FUA) && remote->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
    void *data = remote_request_data(request);
    int64_t cookie = -1;
    switch (io->op) {
    case BDEV_OP_READ:
        cookie = nbd_aio_pread(h, data, io->length, io->offset, done, 0);
        break;
    case BDEV_OP_WRITE:
        cookie = nbd_aio_pwrite(h, data, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_FLUSH:
        if (!remote->can_flush) {
            remote_request_finish(request, 0);
            return true;
        }
        cookie = nbd_aio_flush(h, done, 0);
        break;
    case BDEV_OP_DISCARD:
        if (!remote->can_trim) {
            remote_request_finish(request, 0);
            return true;
        }
        cookie = nbd_aio_trim(h, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_WRITE_ZEROES:
        flags |= (io->flags & BDEV_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
        flags |= (io->flags & BDEV_FAST_ONLY) ? LIBNBD_CMD_FLAG_FAST_ZERO : 0;
        cookie = nbd_aio_zero(h, io->length, io->offset, done, flags);
        break;
    case BDEV_OP_BLOCK_STATUS: {
        io->nr_extents = 0;
        nbd_extent_callback extents = {.callback = extents_received, .user_data = request};
        cookie = nbd_aio_block_status(h, io->length, io->offset, extents, done, 0);
        break;
    }
    }
    if (cookie >= 0)
        return true;
    int error = nbd_get_errno();
    if (!nbd_aio_is_ready(h) || connection_error(error)) {
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
        connection->lost = true;
        return false;
    }
    remote_request_finish(request, error ? -error : -EIO);
    return true;
}

/* The next connection that can take a request, round-robin; NULL when none is up. */
static struct nbd_connection *connection_pick(struct nbd_remote *remote)
{
    for (unsigned tried = 0; tried < remote->connection_count; tried++) {
        struct nbd_connection *connection = &remote->connections[remote->next++ % remote->connection_count];
        if (connection->ready && !connection->lost)
            return connection;
    }
    return NULL;
}

static void send_waiting(struct nbd_remote *remote)
{
    struct nbd_connection *connection;
    while (!remote_list_empty(&remote->waiting) && (connection = connection_pick(remote)))
        request_send(connection, remote->waiting.next);
}

static bool any_ready(const struct nbd_remote *remote)
{
    for (unsigned i = 0; i < remote->connection_count; i++)
        if (remote->connections[i].ready)
            return true;
    return false;
}

/* ---- the connections ---- */

static void fail_waiting(struct nbd_remote *remote, int result)
{
    while (!remote_list_empty(&remote->waiting))
        remote_request_finish(remote->waiting.next, result);
}

static void connection_drop(struct nbd_connection *connection, const char *reason)
{
    struct nbd_remote *remote = connection->remote;
    struct ev_loop *loop = remote->worker.loop;
    if (ev_is_active(&connection->socket))
        ev_io_stop(loop, &connection->socket);
    /* Whatever was in flight goes to another connection, or waits for this one to come back. */
    while (!remote_list_empty(&connection->in_flight)) {
        struct remote_request *request = connection->in_flight.next;
        remote_list_remove(request);
        remote_list_append(&remote->waiting, request);
    }
    connection->generation++;
    if (connection->handle) {
        nbd_close(connection->handle);
        connection->handle = NULL;
    }
    bool was_ready = connection->ready;
    connection->ready = false;
    connection->lost = false;
    if (remote->worker.stopping) {
        ev_timer_stop(loop, &connection->retry);
        return;
    }
    if (was_ready) {
        connection->backoff = BACKOFF_FIRST;
        /* Told once: when the server is gone, not once per connection. */
        if (!any_ready(remote) && !remote->unreachable_since) {
            remote_tell(remote->event, remote->event_opaque, remote->uri,
                        "connection lost (%s); reconnecting (requests wait up to %u s)", reason,
                        (unsigned)remote->timeout);
            remote->unreachable_since = now_seconds();
        }
    }
    ev_timer_stop(loop, &connection->retry);
    ev_timer_set(&connection->retry, connection->backoff, 0);
    ev_timer_start(loop, &connection->retry);
    connection->backoff = connection->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : connection->backoff * 2;
    send_waiting(remote); /* the other connections take over */
}

static void became_ready(struct nbd_connection *connection)
{
    struct nbd_remote *remote = connection->remote;
    int64_t size = nbd_get_size(connection->handle);
    if (size < 0 || (uint64_t)size != remote->bdev->size) {
        /* Not the same disk any more: sending old requests there would be wrong. */
        connection_drop(connection, "the export's size changed");
        return;
    }
    connection->ready = true;
    if (remote->unreachable_since) {
        remote->unreachable_since = 0;
        remote->failing = false;
        remote_tell(remote->event, remote->event_opaque, remote->uri, "reconnected");
    }
    send_waiting(remote);
}

static void socket_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)loop;
    struct nbd_connection *connection = watcher->data;
    struct nbd_handle *h = connection->handle;
    int rc = 0;
    if (events & EV_READ)
        rc = nbd_aio_notify_read(h);
    if (rc == 0 && (events & EV_WRITE))
        rc = nbd_aio_notify_write(h);
    if (rc < 0 || connection->lost || nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
        connection_drop(connection, rc < 0 ? nbd_get_error() : "the server closed it");
        return;
    }
    if (!connection->ready && nbd_aio_is_ready(h))
        became_ready(connection);
    watch_update(connection);
}

/* Start connecting again (the connection's retry timer). */
static void reconnect(struct ev_loop *loop, ev_timer *timer, int events)
{
    (void)loop;
    (void)events;
    struct nbd_connection *connection = timer->data;
    struct nbd_remote *remote = connection->remote;
    if (remote->unreachable_since && now_seconds() - remote->unreachable_since >= remote->timeout) {
        if (!remote->failing)
            remote_tell(remote->event, remote->event_opaque, remote->uri,
                        "unreachable for too long; failing requests until it is back");
        remote->failing = true;
        fail_waiting(remote, -EIO);
    }
    connection->handle = nbd_create();
    if (!connection->handle || nbd_add_meta_context(connection->handle, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_aio_connect_uri(connection->handle, remote->uri) < 0) {
        connection_drop(connection, nbd_get_error());
        return;
    }
    watch_update(connection);
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
        for (unsigned i = 0; i < remote->connection_count; i++)
            connection_drop(&remote->connections[i], "closing");
        return;
    }
    if (remote->failing)
        fail_waiting(remote, -EIO);
    send_waiting(remote);
    for (unsigned i = 0; i < remote->connection_count; i++) {
        struct nbd_connection *connection = &remote->connections[i];
        if (connection->lost)
            connection_drop(connection, "the connection failed");
        else
            watch_update(connection);
    }
}

static void remote_free(struct nbd_remote *remote)
{
    for (unsigned i = 0; i < remote->connection_count; i++)
        if (remote->connections[i].handle)
            nbd_close(remote->connections[i].handle);
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
    struct nbd_handle *h = remote->connections[0].handle;
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

/* Connect (blocking: at open) one connection; 0 or -errno with libnbd's reason in error_message. */
static int connection_open(struct nbd_remote *remote, struct nbd_connection *connection, char **error_message)
{
    *connection = (struct nbd_connection){.remote = remote, .backoff = BACKOFF_FIRST};
    remote_list_init(&connection->in_flight);
    connection->handle = nbd_create();
    if (!connection->handle || nbd_add_meta_context(connection->handle, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_connect_uri(connection->handle, remote->uri) < 0) {
        int rc = error_message_set(error_message, nbd_get_errno() ? -nbd_get_errno() : -EIO, "%s: %s", remote->uri,
                                   nbd_get_error() ? nbd_get_error() : "cannot connect");
        if (connection->handle)
            nbd_close(connection->handle);
        connection->handle = NULL;
        return rc;
    }
    connection->ready = true;
    return 0;
}

int nbd_client_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    struct nbd_remote *remote = calloc(1, sizeof(*remote));
    if (!remote || !(remote->uri = strdup(options->path))) {
        free(remote);
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", options->path);
    }
    remote_list_init(&remote->waiting);
    remote->bdev = bdev;
    remote->event = options->event;
    remote->event_opaque = options->event_opaque;
    remote->timeout = options->reconnect_timeout ? options->reconnect_timeout : DEFAULT_RECONNECT_TIMEOUT;

    /* The first connection is made here, blocking: an export that cannot be reached is refused at start. */
    remote->connection_count = 1;
    int rc = connection_open(remote, &remote->connections[0], error_message);
    int64_t size = rc == 0 ? nbd_get_size(remote->connections[0].handle) : -1;
    if (rc == 0 && size < 0)
        rc = error_message_set(error_message, -EIO, "%s: %s", options->path, nbd_get_error());
    /* A server that allows multi-conn gets several connections (flushes cover them all). */
    if (rc == 0 && nbd_can_multi_conn(remote->connections[0].handle) == 1)
        while (remote->connection_count < MULTI_CONN &&
               connection_open(remote, &remote->connections[remote->connection_count], NULL) == 0)
            remote->connection_count++;
    if (rc == 0 && remote_worker_init(&remote->worker, remote, requests_take) < 0)
        rc = error_message_set(error_message, -ENOMEM, "%s: cannot create an event loop", options->path);
    if (rc < 0) {
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return rc;
    }
    bdev->size = (uint64_t)size;
    caps_and_limits(bdev, remote, options->readonly);
    for (unsigned i = 0; i < remote->connection_count; i++) {
        struct nbd_connection *connection = &remote->connections[i];
        ev_init(&connection->socket, socket_ready);
        connection->socket.data = connection;
        ev_init(&connection->retry, reconnect);
        connection->retry.data = connection;
        watch_update(connection);
    }
    if (remote_worker_start(&remote->worker) < 0) {
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return error_message_set(error_message, -EAGAIN, "%s: cannot start the connection thread", options->path);
    }
    bdev->ops = &nbd_client_ops;
    bdev->driver = remote;
    return 0;
}
