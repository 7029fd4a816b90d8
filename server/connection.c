#include "connection.h"

#include <errno.h>
#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/export.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/session.h"
#include "server/export_registry.h"
#include "server/worker.h"

enum {
    INPUT_BUFFER_SIZE = 16 * 1024,
    /* Reads per readiness event before yielding to other connections. */
    READS_PER_EVENT = 16,
    /*
     * While more than this much of a WRITE payload is still to come, ask
     * the kernel (SO_RCVLOWAT) to report the socket readable only once all
     * of it (or as much as the receive buffer takes) has arrived, so that
     * a 1 MiB payload costs one wake-up and one read rather than one per
     * burst of segments.  Smaller remainders are not worth two setsockopts.
     */
    PAYLOAD_LOWAT_MIN = 64 * 1024,
};

/*
 * A client must finish negotiating (NBD handshake, iSCSI login) within
 * this time (qemu-nbd's default handshake limit too): otherwise a crowd of
 * silent connections could hold every file descriptor without ever
 * choosing an export.
 */
#define HANDSHAKE_LIMIT_SECONDS 10.0

struct connection {
    struct connection_link link;
    struct worker_flush flush;
    struct worker *worker;
    struct ev_loop *loop;
    int fd;
    ev_io read_watcher;
    ev_io write_watcher;
    ev_timer handshake_timer;
    ev_timer tick_timer;  /* the protocol's periodic tick, when it has one */
    const struct session_protocol *protocol;
    void *session;
    struct send_queue *out;
    bool input_eof;
    bool lowat_broken;   /* raising SO_RCVLOWAT failed once: do without */
    int lowat;           /* the socket's SO_RCVLOWAT as last set (1: the default) */
    char peer[64];
    size_t in_start, in_end;
    uint8_t in[INPUT_BUFFER_SIZE];
};

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static void connection_update(struct connection *conn);

static void connection_free(struct connection *conn)
{
    free(conn);
}

/*
 * Close the socket and drop the session.  The record itself may still sit
 * on the worker's flush list; it is freed there in that case.
 */
static void connection_close(struct connection *conn)
{
    if (conn->fd < 0)
        return;
    ev_io_stop(conn->loop, &conn->read_watcher);
    ev_io_stop(conn->loop, &conn->write_watcher);
    ev_timer_stop(conn->loop, &conn->handshake_timer);
    ev_timer_stop(conn->loop, &conn->tick_timer);
    worker_connection_removed(conn->worker, &conn->link);
    /* The queue first: buffers it still lends are released to a live session. */
    send_queue_free(conn->out);
    conn->out = NULL;
    conn->protocol->free(conn->session);
    conn->session = NULL;
    close(conn->fd);
    conn->fd = -1;
    log_debug("%s: connection closed", conn->peer);
    if (!conn->flush.queued)
        connection_free(conn);
}

/* Hand buffered bytes to the session while it takes them. */
static void process_input(struct connection *conn)
{
    while (conn->protocol->status(conn->session) == SESSION_ACTIVE) {
        size_t available = conn->in_end - conn->in_start;
        struct iovec target;
        if (conn->protocol->payload(conn->session, &target)) {
            if (available == 0)
                return;
            size_t n = available < target.iov_len ? available : target.iov_len;
            memcpy(target.iov_base, conn->in + conn->in_start, n);
            conn->in_start += n;
            conn->protocol->payload_done(conn->session, n);
            continue;
        }
        if (available == 0 || !conn->protocol->wants_input(conn->session))
            return;
        size_t consumed = conn->protocol->input(conn->session, conn->in + conn->in_start, available);
        conn->in_start += consumed;
        if (consumed == 0 && !conn->protocol->payload(conn->session, &target))
            return; /* needs more bytes than are here */
    }
}

static bool wants_to_read(struct connection *conn)
{
    if (conn->input_eof)
        return false;
    switch (conn->protocol->status(conn->session)) {
    case SESSION_ACTIVE:
        return conn->protocol->wants_input(conn->session); /* includes reply backlog */
    case SESSION_DRAINING:
        /*
         * The session takes no more requests, but a client still sending
         * may read its replies only once its send completes: keep reading
         * (and dropping) so the last replies can reach it.
         */
        return true;
    default:
        return false;
    }
}

/*
 * Set the socket's receive low-water mark to lowat bytes (1 restores the
 * default).  Raising it is only an optimisation: if that fails, carry on
 * without (the mark stays lower, which is always safe).  Failing to lower
 * it would leave requests unreported by epoll: false then, and the caller
 * closes the connection.
 */
static bool set_lowat(struct connection *conn, int lowat)
{
    if (conn->lowat == lowat || (conn->lowat_broken && lowat > conn->lowat))
        return true;
    if (setsockopt(conn->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0) {
        if (lowat < conn->lowat) {
            log_warn("%s: cannot lower SO_RCVLOWAT: %s; closing", conn->peer, strerror(errno));
            return false;
        }
        log_debug("%s: SO_RCVLOWAT: %s", conn->peer, strerror(errno));
        conn->lowat_broken = true;
        return true;
    }
    conn->lowat = lowat;
    return true;
}

/*
 * The low-water mark the connection wants now: the rest of a large
 * payload, else the default.  The kernel caps it (half the largest receive
 * buffer) and still reports the socket readable when its receive window
 * closes, so a mark larger than what can arrive never stalls the sender.
 */
static int wanted_lowat(struct connection *conn)
{
    struct iovec target;
    if (conn->input_eof || conn->protocol->status(conn->session) != SESSION_ACTIVE ||
        !conn->protocol->payload(conn->session, &target) || target.iov_len <= PAYLOAD_LOWAT_MIN)
        return 1;
    size_t buffered = conn->in_end - conn->in_start;
    size_t missing = target.iov_len > buffered ? target.iov_len - buffered : 0;
    if (missing <= PAYLOAD_LOWAT_MIN)
        return 1;
    return missing > INT32_MAX ? INT32_MAX : (int)missing;
}

/*
 * Read the rest of a payload straight into its buffer, and whatever
 * follows it (the next request headers) into the empty input buffer in the
 * same call.
 */
static ssize_t read_payload(struct connection *conn, const struct iovec *target, size_t *requested)
{
    struct iovec iov[2] = {*target, {.iov_base = conn->in, .iov_len = sizeof(conn->in)}};
    *requested = target->iov_len + sizeof(conn->in);
    ssize_t n = readv(conn->fd, iov, 2);
    if (n <= 0)
        return n;
    size_t to_payload = (size_t)n < target->iov_len ? (size_t)n : target->iov_len;
    conn->protocol->payload_done(conn->session, to_payload);
    conn->in_end = (size_t)n - to_payload;
    return n;
}

/* One read from the socket into the input buffer or straight into a payload. */
static ssize_t read_some(struct connection *conn, size_t *requested)
{
    struct iovec target;
    if (conn->protocol->status(conn->session) != SESSION_ACTIVE) {
        *requested = sizeof(conn->in); /* draining: read to drop */
        return read(conn->fd, conn->in, sizeof(conn->in));
    }
    if (conn->in_start == conn->in_end) {
        conn->in_start = conn->in_end = 0;
        if (conn->protocol->payload(conn->session, &target))
            return read_payload(conn, &target, requested);
    } else if (conn->in_end == INPUT_BUFFER_SIZE) {
        if (conn->in_start == 0)
            return -2; /* full of bytes the session refuses: cannot progress */
        memmove(conn->in, conn->in + conn->in_start, conn->in_end - conn->in_start);
        conn->in_end -= conn->in_start;
        conn->in_start = 0;
    }
    *requested = INPUT_BUFFER_SIZE - conn->in_end;
    ssize_t n = read(conn->fd, conn->in + conn->in_end, *requested);
    if (n > 0)
        conn->in_end += (size_t)n;
    return n;
}

static void read_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct connection *conn = watcher->data;
    for (int i = 0; i < READS_PER_EVENT && wants_to_read(conn); i++) {
        size_t requested = 0;
        ssize_t n = read_some(conn, &requested);
        if (n == -2) {
            log_warn("%s: request does not fit the input buffer; closing", conn->peer);
            connection_close(conn);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            log_debug("%s: read: %s", conn->peer, strerror(errno));
            connection_close(conn);
            return;
        }
        if (n == 0) {
            conn->input_eof = true;
            conn->protocol->input_closed(conn->session);
            break;
        }
        process_input(conn);
        if ((size_t)n < requested)
            break; /* drained the socket: skip the read that would say EAGAIN */
    }
    connection_update(conn);
}

static void write_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    connection_update(watcher->data);
}

/*
 * Closing a socket with unread bytes makes the kernel send a reset, and a
 * reset can destroy replies the peer has not read yet.  A client told
 * ESHUTDOWN may still have requests in the pipe: read them away first.
 */
static void discard_unread_input(struct connection *conn)
{
    for (int i = 0; i < READS_PER_EVENT && !conn->input_eof; i++) {
        ssize_t n = read(conn->fd, conn->in, sizeof(conn->in));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
}

/*
 * Bring the connection up to date after anything happened: feed input the
 * session paused on, write what is queued, arm the watchers for what we
 * wait for, and close when the session is done.
 */
static void connection_update(struct connection *conn)
{
    if (conn->fd < 0)
        return;
    if (conn->protocol->status(conn->session) == SESSION_CLOSED) {
        connection_close(conn);
        return;
    }
    process_input(conn);
    if (ev_is_active(&conn->handshake_timer) && conn->protocol->negotiated(conn->session))
        ev_timer_stop(conn->loop, &conn->handshake_timer);

    if (!send_queue_empty(conn->out)) {
        ssize_t written = send_queue_write(conn->out, conn->fd);
        if (written < 0 && written != -EAGAIN) {
            log_debug("%s: write: %s", conn->peer, strerror((int)-written));
            connection_close(conn);
            return;
        }
    }
    if (send_queue_empty(conn->out))
        ev_io_stop(conn->loop, &conn->write_watcher);
    else
        ev_io_start(conn->loop, &conn->write_watcher);

    if (wants_to_read(conn)) {
        if (!set_lowat(conn, wanted_lowat(conn))) {
            connection_close(conn);
            return;
        }
        ev_io_start(conn->loop, &conn->read_watcher);
    } else {
        ev_io_stop(conn->loop, &conn->read_watcher);
    }

    enum session_status status = conn->protocol->status(conn->session);
    bool finished = status == SESSION_CLOSED ||
                    ((status == SESSION_DRAINING || conn->input_eof) &&
                     conn->protocol->inflight(conn->session) == 0 && send_queue_empty(conn->out));
    if (finished) {
        discard_unread_input(conn);
        connection_close(conn);
    }
}

static void flush_fn(struct worker_flush *flush)
{
    struct connection *conn = CONTAINER_OF(flush, struct connection, flush);
    if (conn->fd < 0)
        connection_free(conn); /* closed while this flush was queued */
    else
        connection_update(conn);
}

static void handshake_timeout_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct connection *conn = watcher->data;
    if (conn->protocol->negotiated(conn->session))
        return;
    log_warn("%s %s: not negotiated within %.0f s; closing", conn->protocol->name, conn->peer,
             HANDSHAKE_LIMIT_SECONDS);
    connection_close(conn);
}

static void tick_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct connection *conn = watcher->data;
    conn->protocol->tick(conn->session);
    connection_update(conn);
}

static void session_wake(void *opaque)
{
    struct connection *conn = opaque;
    worker_schedule_flush(conn->worker, &conn->flush);
}

static const struct session_ops connection_session_ops = {
    .wake = session_wake,
};

static void link_shutdown(struct connection_link *link)
{
    struct connection *conn = CONTAINER_OF(link, struct connection, link);
    conn->protocol->shutdown(conn->session);
    connection_update(conn);
}

static void link_abort(struct connection_link *link)
{
    connection_close(CONTAINER_OF(link, struct connection, link));
}

int connection_start(struct worker *worker, const struct connection_request *request)
{
    int fd = request->fd;
    const struct session_protocol *protocol = request->protocol;
    struct connection *conn = calloc(1, sizeof(*conn));
    if (!conn)
        return -ENOMEM;
    conn->worker = worker;
    conn->loop = worker_loop(worker);
    conn->fd = fd;
    conn->lowat = 1;
    snprintf(conn->peer, sizeof(conn->peer), "%s", request->peer);
    conn->link.shutdown = link_shutdown;
    conn->link.abort = link_abort;
    conn->flush.fn = flush_fn;

    conn->out = send_queue_new();
    struct export_table *exports = export_registry_current(worker_registry(worker));
    if (!conn->out || !exports) {
        if (exports)
            export_table_unref(exports);
        send_queue_free(conn->out);
        free(conn);
        return -ENOMEM;
    }
    struct session_start start = {
        .peer = conn->peer,
        .local = request->local[0] ? request->local : NULL,
        .exports = exports,
        .ctx = worker_aio_context(worker),
        .out = conn->out,
        .ops = &connection_session_ops,
        .opaque = conn,
        .settings = request->settings,
    };
    conn->protocol = protocol;
    conn->session = protocol->create(&start);
    export_table_unref(exports); /* the session holds its own reference */
    if (!conn->session) {
        send_queue_free(conn->out);
        free(conn);
        return -ENOMEM;
    }

    ev_io_init(&conn->read_watcher, read_cb, fd, EV_READ);
    conn->read_watcher.data = conn;
    ev_io_init(&conn->write_watcher, write_cb, fd, EV_WRITE);
    conn->write_watcher.data = conn;
    ev_timer_init(&conn->handshake_timer, handshake_timeout_cb, HANDSHAKE_LIMIT_SECONDS, 0.);
    conn->handshake_timer.data = conn;
    ev_timer_start(conn->loop, &conn->handshake_timer);
    double interval = protocol->tick && protocol->tick_interval ? protocol->tick_interval(conn->session) : 0;
    ev_timer_init(&conn->tick_timer, tick_cb, interval, interval);
    conn->tick_timer.data = conn;
    if (interval > 0)
        ev_timer_start(conn->loop, &conn->tick_timer);
    worker_connection_added(worker, &conn->link);
    log_debug("%s: connected", conn->peer);
    connection_update(conn); /* sends the greeting */
    return 0;
}
