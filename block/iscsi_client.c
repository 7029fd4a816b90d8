#include "block/iscsi_client.h"

#include <errno.h>
#include <ev.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/remote_worker.h"
#include "common/error_message.h"

#define INITIATOR_NAME "iqn.2026-11.org.luna:initiator"
#define DEFAULT_RECONNECT_TIMEOUT 60 /* seconds */
#define TICK 0.25                    /* seconds between libiscsi's housekeeping calls */
#define MAX_TRANSFER (16u << 20)
#define MAX_SAME_BLOCKS 65536u       /* per WRITE SAME / UNMAP command: larger ranges are split */
#define STATUS_DESCRIPTORS 64

struct iscsi_remote {
    struct remote_worker worker; /* first: remote_submit finds it through bdev->driver */
    char *url;
    struct iscsi_context *iscsi;
    int lun;
    uint32_t block_size;
    bool thin;                   /* LBPME: unmapping and GET LBA STATUS work */
    bool unmapped_reads_zero;    /* LBPRZ */
    double timeout;
    void (*event)(void *opaque, const char *message);
    void *event_opaque;
    ev_io socket;
    ev_timer tick;
    bool logged_in;
    struct remote_request in_flight;
    struct remote_request retry;  /* failed for want of a session: sent again on the next tick */
    uint8_t *zero_block;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


bool iscsi_client_is_url(const char *path) { return !strncmp(path, "iscsi://", 8); }

/* ---- completions ---- */

static int status_result(int status, const struct scsi_task *task)
{
    if (status == SCSI_STATUS_GOOD)
        return 0;
    if (status == SCSI_STATUS_CHECK_CONDITION && task) {
        switch (task->sense.key) {
        case SCSI_SENSE_ILLEGAL_REQUEST: return -EINVAL;
        case SCSI_SENSE_DATA_PROTECTION: return -EROFS;
        default: break;
        }
    }
    return -EIO;
}

/* GET LBA STATUS descriptors as extents of the request (clipped to it). */
static void extents_fill(struct iscsi_remote *remote, struct bdev_io *io, struct scsi_task *task)
{
    struct scsi_get_lba_status *status = scsi_datain_unmarshall(task);
    uint64_t covered = 0, block = remote->block_size;
    for (uint32_t i = 0; status && i < status->num_descriptors && io->nr_extents < io->max_extents; i++) {
        const struct scsi_lba_status_descriptor *d = &status->descriptors[i];
        uint64_t start = d->lba * block, end = start + (uint64_t)d->num_blocks * block;
        if (end <= io->offset + covered || start > io->offset + covered)
            continue;
        uint64_t length = end - (io->offset + covered);
        if (length > io->length - covered)
            length = io->length - covered;
        uint32_t flags = 0;
        if (d->provisioning != SCSI_PROVISIONING_TYPE_MAPPED)
            flags = BDEV_EXTENT_HOLE | (remote->unmapped_reads_zero ? BDEV_EXTENT_ZERO : 0);
        io->extents[io->nr_extents++] = (struct bdev_extent){.length = length, .flags = flags};
        covered += length;
        if (covered == io->length)
            break;
    }
    if (io->nr_extents == 0) /* nothing usable: say data */
        io->extents[io->nr_extents++] = (struct bdev_extent){.length = io->length, .flags = 0};
}

static bool request_send(struct iscsi_remote *remote, struct remote_request *request);

static void command_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
    (void)iscsi;
    struct remote_request *request = private_data;
    struct iscsi_remote *remote = request->worker->driver;
    struct scsi_task *task = command_data;
    struct bdev_io *io = request->io;
    int result = status_result(status, task);
    /*
     * Lost with the session, or a unit attention (a restarted target reports its reset once per
     * initiator): sent again later, unless cancelled for its age.
     */
    bool unit_attention =
        status == SCSI_STATUS_CHECK_CONDITION && task && task->sense.key == SCSI_SENSE_UNIT_ATTENTION;
    bool transient = (status == SCSI_STATUS_ERROR || status == SCSI_STATUS_CANCELLED || unit_attention) &&
                     !request->generation;
    if (transient && now_seconds() - request->sent_at < remote->timeout) {
        if (task)
            scsi_free_scsi_task(task);
        request->task = NULL;
        remote_list_remove(request);
        remote_list_append(&remote->retry, request);
        return;
    }
    if (result == 0 && io->op == BDEV_OP_BLOCK_STATUS)
        extents_fill(remote, io, task);
    if (result == 0 && io->op == BDEV_OP_READ) {
        if (!task->datain.data || (uint64_t)task->datain.size < io->length)
            result = -EIO;
        else
            memcpy(remote_request_data(request), task->datain.data, io->length);
    }
    if (task)
        scsi_free_scsi_task(task);
    request->task = NULL;
    /* Split commands (large unmaps and zeroings) go on with the next piece. */
    if (result == 0 && (io->op == BDEV_OP_DISCARD || io->op == BDEV_OP_WRITE_ZEROES) && request->done < io->length) {
        if (request_send(remote, request))
            return;
        result = -ENOMEM;
    }
    remote_request_finish(request, result);
}

/* ---- sending ---- */

/* Queue the command for request (or its next piece); false when libiscsi could not (no memory). */
static bool request_send(struct iscsi_remote *remote, struct remote_request *request)
{
    struct bdev_io *io = request->io;
    uint64_t block = remote->block_size;
    uint64_t lba = (io->offset + request->done) / block;
    struct scsi_task *task = NULL;
    bool fua = (io->flags & BDEV_FUA) != 0;
    switch (io->op) {
    case BDEV_OP_READ:
        /* The data lands in the task (task->datain), copied out at completion. */
        task = iscsi_read16_task(remote->iscsi, remote->lun, lba, (uint32_t)io->length, (int)block, 0, 0, 0, 0, 0,
                                 command_done, request);
        break;
    case BDEV_OP_WRITE:
        task = iscsi_write16_task(remote->iscsi, remote->lun, lba, remote_request_data(request), (uint32_t)io->length,
                                  (int)block, 0, 0, fua, 0, 0, command_done, request);
        break;
    case BDEV_OP_FLUSH:
        task = iscsi_synchronizecache16_task(remote->iscsi, remote->lun, 0, 0, 0, 0, command_done, request);
        break;
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES: {
        uint64_t blocks = (io->length - request->done) / block;
        if (blocks > MAX_SAME_BLOCKS)
            blocks = MAX_SAME_BLOCKS;
        request->done += blocks * block;
        if (io->op == BDEV_OP_DISCARD) {
            struct unmap_list range = {.lba = lba, .num = (uint32_t)blocks};
            task = iscsi_unmap_task(remote->iscsi, remote->lun, 0, 0, &range, 1, command_done, request);
        } else {
            int unmap = (io->flags & BDEV_MAY_UNMAP) && remote->thin;
            task = iscsi_writesame16_task(remote->iscsi, remote->lun, lba, remote->zero_block, (uint32_t)block,
                                          (uint32_t)blocks, 0, unmap, 0, 0, command_done, request);
        }
        break;
    }
    case BDEV_OP_BLOCK_STATUS:
        io->nr_extents = 0;
        task = iscsi_get_lba_status_task(remote->iscsi, remote->lun, lba, 8 + 16 * STATUS_DESCRIPTORS, command_done,
                                         request);
        break;
    }
    if (!task)
        return false;
    request->task = task;
    if (!request->sent_at)
        request->sent_at = now_seconds(); /* the first time: the timeout counts from there */
    if (request->next == request)
        remote_list_append(&remote->in_flight, request);
    return true;
}

/* What the target cannot or need not do finishes at once. */
static int request_check(struct iscsi_remote *remote, const struct bdev_io *io)
{
    uint64_t block = remote->block_size;
    if (io->op != BDEV_OP_FLUSH && ((io->offset | io->length) % block))
        return -EINVAL; /* the LUN's blocks are the unit (advertised as the request alignment) */
    if (io->op == BDEV_OP_DISCARD && !remote->thin)
        return 0; /* advisory: a thick LUN keeps its blocks */
    if (io->op == BDEV_OP_WRITE_ZEROES && (io->flags & BDEV_FAST_ONLY) && !remote->thin)
        return -ENOTSUP;
    if (io->op == BDEV_OP_BLOCK_STATUS && !remote->thin)
        return 1;
    return 2;
}

/* ---- the connection ---- */

static void watch_update(struct iscsi_remote *remote)
{
    int fd = iscsi_get_fd(remote->iscsi);
    int wanted = iscsi_which_events(remote->iscsi);
    int events = ((wanted & POLLIN) ? EV_READ : 0) | ((wanted & POLLOUT) ? EV_WRITE : 0);
    if (ev_is_active(&remote->socket) &&
        (remote->socket.fd != fd || (remote->socket.events & (EV_READ | EV_WRITE)) != events))
        ev_io_stop(remote->worker.loop, &remote->socket);
    if (!ev_is_active(&remote->socket) && fd >= 0 && events) {
        ev_io_set(&remote->socket, fd, events);
        ev_io_start(remote->worker.loop, &remote->socket);
    }
}

static void login_state_note(struct iscsi_remote *remote)
{
    bool logged_in = iscsi_is_logged_in(remote->iscsi) != 0;
    if (logged_in && !remote->logged_in)
        remote_tell(remote->event, remote->event_opaque, remote->url, "reconnected");
    else if (!logged_in && remote->logged_in)
        remote_tell(remote->event, remote->event_opaque, remote->url,
                    "connection lost; reconnecting (requests wait up to %u s)", (unsigned)remote->timeout);
    remote->logged_in = logged_in;
}

static void socket_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)loop;
    struct iscsi_remote *remote = watcher->data;
    int revents = ((events & EV_READ) ? POLLIN : 0) | ((events & EV_WRITE) ? POLLOUT : 0);
    iscsi_service(remote->iscsi, revents); /* a failure here is a drop libiscsi reconnects from */
    login_state_note(remote);
    watch_update(remote);
}

/* libiscsi's timers and reconnection, and requests waiting too long. */
static void tick(struct ev_loop *loop, ev_timer *timer, int events)
{
    (void)loop;
    (void)events;
    struct iscsi_remote *remote = timer->data;
    iscsi_service(remote->iscsi, 0);
    login_state_note(remote);
    double now = now_seconds();
    for (struct remote_request *request = remote->in_flight.next, *next; request != &remote->in_flight;
         request = next) {
        next = request->next;
        if (request->task && now - request->sent_at > remote->timeout) {
            request->generation = 1; /* cancelled for its age: a failure, not a retry */
            iscsi_scsi_cancel_task(remote->iscsi, request->task); /* completes it with CANCELLED: -EIO */
        }
    }
    while (!remote_list_empty(&remote->retry) && remote->logged_in) {
        struct remote_request *request = remote->retry.next;
        remote_list_remove(request);
        if (now - request->sent_at > remote->timeout)
            remote_request_finish(request, -EIO);
        else if (!request_send(remote, request))
            remote_request_finish(request, -ENOMEM);
    }
    for (struct remote_request *request = remote->retry.next, *next; request != &remote->retry; request = next) {
        next = request->next;
        if (now - request->sent_at > remote->timeout)
            remote_request_finish(request, -EIO);
    }
    watch_update(remote);
}

static void requests_take(struct remote_worker *worker, struct remote_request *requests, bool stopping)
{
    struct iscsi_remote *remote = worker->driver;
    while (requests) {
        struct remote_request *request = requests;
        requests = requests->next;
        request->next = request->prev = request;
        int check = stopping ? -EIO : request_check(remote, request->io);
        if (check == 1) {
            struct bdev_io *io = request->io;
            io->extents[0] = (struct bdev_extent){.length = io->length, .flags = 0};
            io->nr_extents = 1;
            check = 0;
        }
        if (check <= 0)
            remote_request_finish(request, check);
        else if (!request_send(remote, request))
            remote_request_finish(request, -ENOMEM);
    }
    if (stopping) {
        while (!remote_list_empty(&remote->retry))
            remote_request_finish(remote->retry.next, -EIO);
        ev_timer_stop(worker->loop, &remote->tick);
        if (ev_is_active(&remote->socket))
            ev_io_stop(worker->loop, &remote->socket);
        return;
    }
    watch_update(remote);
}

/* ---- open and close ---- */

static void remote_free(struct iscsi_remote *remote)
{
    if (remote->iscsi) {
        iscsi_logout_sync(remote->iscsi);
        iscsi_destroy_context(remote->iscsi);
    }
    free(remote->zero_block);
    free(remote->url);
    free(remote);
}

static void iscsi_client_close(struct bdev *bdev)
{
    struct iscsi_remote *remote = bdev->driver;
    remote_worker_stop(&remote->worker);
    remote_free(remote);
}

static const struct bdev_ops iscsi_client_ops = {
    .name = "iscsi",
    .submit = remote_submit,
    .blocking = remote_blocking,
    .close = iscsi_client_close,
};

/* Log in and read the capacity (blocking: at open).  0 or -errno with a message. */
static int connect_lun(struct iscsi_remote *remote, const char *path, uint64_t *size, char **error_message)
{
    remote->iscsi = iscsi_create_context(INITIATOR_NAME);
    if (!remote->iscsi)
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    struct iscsi_url *url = iscsi_parse_full_url(remote->iscsi, path);
    if (!url)
        return error_message_set(error_message, -EINVAL, "%s: %s", path, iscsi_get_error(remote->iscsi));
    remote->lun = url->lun;
    iscsi_set_targetname(remote->iscsi, url->target);
    iscsi_set_session_type(remote->iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(remote->iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (url->user[0])
        iscsi_set_initiator_username_pwd(remote->iscsi, url->user, url->passwd);
    int rc = iscsi_full_connect_sync(remote->iscsi, url->portal, url->lun);
    iscsi_destroy_url(url);
    if (rc != 0)
        return error_message_set(error_message, -ECONNREFUSED, "%s: %s", path, iscsi_get_error(remote->iscsi));
    struct scsi_task *task = iscsi_readcapacity16_sync(remote->iscsi, remote->lun);
    struct scsi_readcapacity16 *capacity =
        task && task->status == SCSI_STATUS_GOOD ? scsi_datain_unmarshall(task) : NULL;
    if (!capacity || !capacity->block_length || (capacity->block_length & (capacity->block_length - 1))) {
        if (task)
            scsi_free_scsi_task(task);
        return error_message_set(error_message, -EIO, "%s: READ CAPACITY(16) failed: %s", path,
                                 iscsi_get_error(remote->iscsi));
    }
    remote->block_size = capacity->block_length;
    remote->thin = capacity->lbpme != 0;
    remote->unmapped_reads_zero = capacity->lbprz != 0;
    *size = (capacity->returned_lba + 1) * capacity->block_length;
    scsi_free_scsi_task(task);
    return 0;
}

int iscsi_client_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    struct iscsi_remote *remote = calloc(1, sizeof(*remote));
    if (!remote || !(remote->url = strdup(options->path))) {
        free(remote);
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", options->path);
    }
    remote->event = options->event;
    remote->event_opaque = options->event_opaque;
    remote->timeout = options->reconnect_timeout ? options->reconnect_timeout : DEFAULT_RECONNECT_TIMEOUT;
    remote_list_init(&remote->in_flight);
    remote_list_init(&remote->retry);
    uint64_t size = 0;
    int rc = connect_lun(remote, options->path, &size, error_message);
    if (rc == 0 && !(remote->zero_block = calloc(1, remote->block_size)))
        rc = error_message_set(error_message, -ENOMEM, "%s: out of memory", options->path);
    if (rc == 0 && remote_worker_init(&remote->worker, remote, requests_take) < 0)
        rc = error_message_set(error_message, -ENOMEM, "%s: cannot create an event loop", options->path);
    if (rc < 0) {
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return rc;
    }
    remote->logged_in = true;
    ev_init(&remote->socket, socket_ready);
    remote->socket.data = remote;
    ev_timer_init(&remote->tick, tick, TICK, TICK);
    remote->tick.data = remote;
    ev_timer_start(remote->worker.loop, &remote->tick);
    watch_update(remote);
    if (remote_worker_start(&remote->worker) < 0) {
        remote_worker_destroy(&remote->worker);
        remote_free(remote);
        return error_message_set(error_message, -EAGAIN, "%s: cannot start the connection thread", options->path);
    }
    bdev->ops = &iscsi_client_ops;
    bdev->driver = remote;
    bdev->size = size;
    bdev->caps = BDEV_CAP_FLUSH | BDEV_CAP_FUA | BDEV_CAP_WRITE_ZEROES | (options->readonly ? BDEV_CAP_READ_ONLY : 0) |
                 (remote->thin ? BDEV_CAP_DISCARD | BDEV_CAP_BLOCK_STATUS | BDEV_CAP_FAST_ZERO : 0) |
                 (remote->thin && remote->unmapped_reads_zero ? BDEV_CAP_DISCARD_ZEROES : 0);
    bdev->limits = (struct bdev_limits){
        .request_alignment = remote->block_size,
        .logical_block_size = remote->block_size,
        .physical_block_size = remote->block_size > 4096 ? remote->block_size : 4096,
        .max_transfer = MAX_TRANSFER,
        .max_discard = (uint64_t)MAX_SAME_BLOCKS * remote->block_size,
    };
    return 0;
}
