/*
 * NBD_CMD_READ.  Data is read into a page-aligned buffer that the send
 * queue then borrows, so it is never copied.  With structured replies, a
 * large read first asks the disk where its holes are and answers those
 * with OFFSET_HOLE chunks, reading only the data between them (DF forbids
 * fragmenting, so it always takes the single-chunk path).
 */
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "protocols/nbd/nbd_errno.h"
#include "protocols/nbd/nbd_internal.h"

enum { SEGMENT_ALIGNMENT = 4096 };

/* Read length bytes at offset into the request's buffer at buffer_offset. */
static void submit_read(struct nbd_request *request, struct bdev_io *io, struct iovec *iov,
                        size_t buffer_offset, uint64_t offset, uint64_t length,
                        void (*complete)(struct bdev_io *io))
{
    struct nbd_session *session = request->session;
    memset(io, 0, sizeof(*io));
    iov->iov_base = request->buffer->data + buffer_offset;
    iov->iov_len = length;
    io->op = BDEV_OP_READ;
    io->offset = offset;
    io->length = length;
    io->iov = iov;
    io->iovcnt = 1;
    io->ctx = session->ctx;
    io->complete = complete;
    io->opaque = request;
    bdev_submit(session->export->bdev, io);
}

static void finish(struct nbd_request *request, bool in_completion, int ret)
{
    struct nbd_session *session = request->session;
    if (in_completion) {
        if (ret < 0)
            nbd_session_out_of_memory(session);
        nbd_request_done(request);
    } else {
        nbd_request_finish(request);
        if (ret < 0)
            nbd_session_out_of_memory(session);
    }
}

static bool session_gone(const struct nbd_session *session)
{
    return session->detached || session->status == SESSION_CLOSED;
}

static void dense_complete(struct bdev_io *io)
{
    struct nbd_request *request = io->opaque;
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    int ret = 0;
    if (!session_gone(session)) {
        if (io->result < 0)
            ret = nbd_reply_error(session, header, nbd_error_from_errno(io->result));
        else
            ret = nbd_reply_data(session, header, header->offset, request->buffer, 0,
                                 header->length, true);
    }
    finish(request, true, ret);
}

static void dense_read(struct nbd_request *request, bool in_completion)
{
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    request->buffer = data_buffer_new(header->length);
    if (!request->buffer) {
        finish(request, in_completion, nbd_reply_error(session, header, NBD_ENOMEM));
        return;
    }
    submit_read(request, &request->io, &request->iov, 0, header->offset, header->length,
                dense_complete);
}

static void sparse_reply(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    struct nbd_read_plan *plan = request->plan;
    int ret = 0;
    if (plan->result < 0) {
        ret = nbd_reply_error(session, header, nbd_error_from_errno(plan->result));
    } else {
        for (unsigned i = 0; i < plan->count && ret == 0; i++) {
            const struct nbd_read_segment *segment = &plan->segments[i];
            bool done = i + 1 == plan->count;
            if (segment->hole)
                ret = nbd_reply_hole(session, header, segment->offset, (uint32_t)segment->length,
                                     done);
            else
                ret = nbd_reply_data(session, header, segment->offset, request->buffer,
                                     segment->buffer_offset, segment->length, done);
        }
    }
    finish(request, true, ret);
}

static void segment_complete(struct bdev_io *io)
{
    struct nbd_request *request = io->opaque;
    struct nbd_read_plan *plan = request->plan;
    if (io->result < 0 && plan->result == 0)
        plan->result = io->result;
    if (--plan->pending > 0)
        return;
    if (session_gone(request->session))
        finish(request, true, 0);
    else
        sparse_reply(request);
}

/* Turn the disk's extents into alternating data / hole segments covering the whole read. */
static struct nbd_read_plan *plan_segments(const struct nbd_request *request, size_t *data_size)
{
    const struct nbd_request_header *header = &request->header;
    uint32_t extent_count = request->io.nr_extents;
    struct nbd_read_plan *plan =
        calloc(1, sizeof(*plan) + sizeof(struct nbd_read_segment) * (extent_count + 1));
    if (!plan)
        return NULL;
    uint64_t position = header->offset;
    uint64_t end = header->offset + header->length;
    bool any_hole = false;
    for (uint32_t i = 0; i <= extent_count && position < end; i++) {
        /* What the extents do not cover is read as data. */
        uint64_t length = i < extent_count ? request->extents[i].length : end - position;
        bool hole = i < extent_count && (request->extents[i].flags & BDEV_EXTENT_ZERO);
        if (length > end - position)
            length = end - position;
        if (length == 0)
            continue;
        struct nbd_read_segment *last = plan->count ? &plan->segments[plan->count - 1] : NULL;
        if (last && last->hole == hole) {
            last->length += length;
        } else {
            struct nbd_read_segment *segment = &plan->segments[plan->count++];
            segment->offset = position;
            segment->length = length;
            segment->hole = hole;
        }
        any_hole |= hole;
        position += length;
    }
    if (!any_hole) {
        free(plan);
        *data_size = 0;
        return NULL;
    }
    size_t size = 0;
    for (unsigned i = 0; i < plan->count; i++) {
        struct nbd_read_segment *segment = &plan->segments[i];
        if (segment->hole)
            continue;
        segment->buffer_offset = size;
        size += (segment->length + SEGMENT_ALIGNMENT - 1) & ~(size_t)(SEGMENT_ALIGNMENT - 1);
        plan->pending++;
    }
    *data_size = size;
    return plan;
}

static void status_complete(struct bdev_io *io)
{
    struct nbd_request *request = io->opaque;
    struct nbd_session *session = request->session;
    if (session_gone(session)) {
        finish(request, true, 0);
        return;
    }
    size_t data_size = 0;
    struct nbd_read_plan *plan = NULL;
    if (io->result == 0 && io->nr_extents > 0)
        plan = plan_segments(request, &data_size);
    if (!plan) {
        /* No holes worth skipping (or no answer): read it all. */
        dense_read(request, true);
        return;
    }
    request->plan = plan;
    if (data_size) {
        request->buffer = data_buffer_new(data_size);
        if (!request->buffer) {
            finish(request, true, nbd_reply_error(session, &request->header, NBD_ENOMEM));
            return;
        }
    }
    if (plan->pending == 0) {
        sparse_reply(request);
        return;
    }
    for (unsigned i = 0; i < plan->count; i++) {
        struct nbd_read_segment *segment = &plan->segments[i];
        if (segment->hole)
            continue;
        submit_read(request, &segment->io, &segment->iov, segment->buffer_offset, segment->offset,
                    segment->length, segment_complete);
    }
}

void nbd_read_start(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    const struct bdev *bdev = session->export->bdev;
    bool sparse = nbd_session_chunks(session) && !(header->flags & NBD_CMD_FLAG_DF) &&
                  header->length >= NBD_SPARSE_READ_MIN && (bdev->caps & BDEV_CAP_BLOCK_STATUS);
    if (sparse)
        request->extents = malloc(sizeof(*request->extents) * NBD_SPARSE_READ_MAX_EXTENTS);
    if (!sparse || !request->extents) {
        dense_read(request, false);
        return;
    }
    struct bdev_io *io = &request->io;
    memset(io, 0, sizeof(*io));
    io->op = BDEV_OP_BLOCK_STATUS;
    io->offset = header->offset;
    io->length = header->length;
    io->extents = request->extents;
    io->max_extents = NBD_SPARSE_READ_MAX_EXTENTS;
    io->ctx = session->ctx;
    io->complete = status_complete;
    io->opaque = request;
    bdev_submit(session->export->bdev, io);
}
