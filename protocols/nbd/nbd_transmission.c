/*
 * Transmission phase: request headers are parsed and checked against what
 * was negotiated, then executed on the export's bdev; replies are queued
 * from the completions, in whatever order they finish.  Reads live in
 * nbd_read.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/nbd/nbd_errno.h"
#include "protocols/nbd/nbd_internal.h"

void nbd_transmission_start(struct nbd_session *session, struct export *export)
{
    bool chunks = nbd_session_chunks(session);
    uint32_t sizes[3];
    session->export = export_ref(export);
    session->transmission_flags = nbd_export_transmission_flags(export, chunks);
    nbd_export_block_sizes(export, session->config.max_payload, sizes);
    session->max_payload = sizes[2];
    /* SET_META_CONTEXT named the export the client asked for: an overlay's base. */
    const struct export *named = export->base ? export->base : export;
    session->allocation_context = session->meta_allocation && session->meta_export == named;
    session->input = NBD_INPUT_REQUEST_HEADER;
    log_info("nbd %s: serving export '%s' (%s%s)", session->peer, export->config.name,
             session->extended ? "extended headers" : chunks ? "structured replies" : "simple replies",
             session->allocation_context ? ", base:allocation" : "");
    /*
     * The table is needed only to choose: holding it would keep every
     * export a reload removed open for as long as this client stays.
     */
    session->meta_export = NULL;
    export_table_unref(session->exports);
    session->exports = NULL;
}

static void request_complete(struct bdev_io *io);

static void submit(struct nbd_request *request, enum bdev_op op, uint32_t flags, uint64_t offset,
                   uint64_t length)
{
    struct nbd_session *session = request->session;
    struct bdev_io *io = &request->io;
    memset(io, 0, sizeof(*io));
    io->op = op;
    io->flags = flags;
    io->offset = offset;
    io->length = length;
    if (op == BDEV_OP_WRITE) {
        request->iov.iov_base = request->buffer->data;
        request->iov.iov_len = length;
        io->iov = &request->iov;
        io->iovcnt = 1;
    }
    if (op == BDEV_OP_BLOCK_STATUS) {
        io->extents = request->extents;
        io->max_extents = request->header.flags & NBD_CMD_FLAG_REQ_ONE ? 1 : NBD_BLOCK_STATUS_MAX_EXTENTS;
    }
    io->ctx = session->ctx;
    io->complete = request_complete;
    io->opaque = request;
    bdev_submit(session->export->bdev, io);
}

/* TRIM and WRITE_ZEROES may exceed what the disk takes at once: go piece by piece. */
static void submit_zeroing_piece(struct nbd_request *request)
{
    const struct nbd_request_header *header = &request->header;
    uint64_t limit = request->session->export->bdev->limits.max_discard;
    uint64_t left = header->length - request->done;
    uint64_t length = limit && left > limit ? limit : left;
    uint32_t flags = header->flags & NBD_CMD_FLAG_FUA ? BDEV_FUA : 0;
    if (header->type == NBD_CMD_TRIM) {
        submit(request, BDEV_OP_DISCARD, flags, header->offset + request->done, length);
        return;
    }
    if (!(header->flags & NBD_CMD_FLAG_NO_HOLE))
        flags |= BDEV_MAY_UNMAP;
    if (header->flags & NBD_CMD_FLAG_FAST_ZERO)
        flags |= BDEV_FAST_ONLY;
    submit(request, BDEV_OP_WRITE_ZEROES, flags, header->offset + request->done, length);
}

static void reply_or_hang_up(struct nbd_session *session, int ret)
{
    if (ret < 0)
        nbd_session_out_of_memory(session);
}

static void complete_block_status(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    int result = request->io.result;
    uint32_t count = request->io.nr_extents;
    if (result == -ENOTSUP || result == -EOPNOTSUPP) {
        /* No allocation information: "allocated, contents unknown" is always true. */
        request->extents[0].length = header->length;
        request->extents[0].flags = 0;
        count = 1;
        result = 0;
    } else if (result == 0 && count == 0) {
        result = -EIO;
    }
    if (result < 0)
        reply_or_hang_up(session, nbd_reply_error(session, header, nbd_error_from_errno(result)));
    else
        reply_or_hang_up(session, nbd_reply_block_status(session, header, NBD_ALLOCATION_CONTEXT_ID,
                                                         request->extents, count));
}

static void request_complete(struct bdev_io *io)
{
    struct nbd_request *request = io->opaque;
    struct nbd_session *session = request->session;
    const struct nbd_request_header *header = &request->header;
    if (session->detached || session->status == SESSION_CLOSED) {
        nbd_request_done(request);
        return;
    }
    if ((header->type == NBD_CMD_TRIM || header->type == NBD_CMD_WRITE_ZEROES) && io->result == 0) {
        request->done += io->length;
        if (request->done < header->length) {
            submit_zeroing_piece(request);
            return;
        }
    }
    write_guard_leave(&request->guard); /* written (or failed): a COMPARE AND WRITE waiting may go */
    if (header->type == NBD_CMD_BLOCK_STATUS)
        complete_block_status(request);
    else if (io->result < 0)
        reply_or_hang_up(session, nbd_reply_error(session, header, nbd_error_from_errno(io->result)));
    else
        reply_or_hang_up(session, nbd_reply_ok(session, header));
    nbd_request_done(request);
}

/* Answered without the disk: reply now, from the input path (no wake needed). */
static void finish_now(struct nbd_request *request, uint32_t error)
{
    struct nbd_session *session = request->session;
    int ret = error ? nbd_reply_error(session, &request->header, error)
                    : nbd_reply_ok(session, &request->header);
    nbd_request_finish(request);
    reply_or_hang_up(session, ret);
}

/* The request's range is held in the export's writers: now it goes to the disk. */
static void start_guarded(void *opaque)
{
    struct nbd_request *request = opaque;
    const struct nbd_request_header *header = &request->header;
    if (header->type == NBD_CMD_WRITE) {
        submit(request, BDEV_OP_WRITE, header->flags & NBD_CMD_FLAG_FUA ? BDEV_FUA : 0, header->offset,
               header->length);
    } else {
        request->done = 0;
        submit_zeroing_piece(request);
    }
}

/*
 * Writes hold their range in the export's writers (shared: they never wait
 * for one another), so an iSCSI COMPARE AND WRITE of the same export is one
 * step for them too.
 */
static void start_write(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    write_guard_enter(&request->guard, &session->export->writers, session->ctx, request->header.offset,
                      request->header.length, false, start_guarded, request);
}

static void execute(struct nbd_request *request)
{
    const struct nbd_request_header *header = &request->header;
    switch (header->type) {
    case NBD_CMD_READ:
        if (header->length == 0)
            finish_now(request, 0);
        else
            nbd_read_start(request);
        return;
    case NBD_CMD_WRITE:
        if (header->length == 0)
            finish_now(request, 0);
        else
            start_write(request);
        return;
    case NBD_CMD_FLUSH:
        submit(request, BDEV_OP_FLUSH, 0, 0, 0);
        return;
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        if (header->length == 0) {
            finish_now(request, 0);
            return;
        }
        start_write(request);
        return;
    case NBD_CMD_CACHE:
        /* Advisory; the page cache or the disk does better on its own. */
        finish_now(request, 0);
        return;
    case NBD_CMD_BLOCK_STATUS:
        if (header->length == 0) {
            finish_now(request, NBD_EINVAL);
            return;
        }
        request->extents = malloc(sizeof(*request->extents) * NBD_BLOCK_STATUS_MAX_EXTENTS);
        if (!request->extents) {
            finish_now(request, NBD_ENOMEM);
            return;
        }
        submit(request, BDEV_OP_BLOCK_STATUS, 0, header->offset, header->length);
        return;
    default:
        finish_now(request, NBD_EINVAL);
        return;
    }
}

/* The protocol's error for a request that cannot run, or 0. */
static uint32_t validate(const struct nbd_session *session, const struct nbd_request_header *header)
{
    uint16_t advertised = session->transmission_flags;
    uint16_t allowed = NBD_CMD_FLAG_FUA; /* valid on every command once SEND_FUA is advertised */
    switch (header->type) {
    case NBD_CMD_READ:
        if (advertised & NBD_FLAG_SEND_DF)
            allowed |= NBD_CMD_FLAG_DF;
        break;
    case NBD_CMD_WRITE:
        if (session->extended)
            allowed |= NBD_CMD_FLAG_PAYLOAD_LEN;
        break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        if (advertised & NBD_FLAG_SEND_FAST_ZERO)
            allowed |= NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    default:
        return NBD_EINVAL;
    }
    if (header->flags & ~allowed)
        return NBD_EINVAL;
    if (session->extended && header->type == NBD_CMD_WRITE &&
        !(header->flags & NBD_CMD_FLAG_PAYLOAD_LEN))
        return NBD_EINVAL;
    bool writes = header->type == NBD_CMD_WRITE || header->type == NBD_CMD_TRIM ||
                  header->type == NBD_CMD_WRITE_ZEROES;
    if (writes && (advertised & NBD_FLAG_READ_ONLY))
        return NBD_EPERM;
    if (header->type == NBD_CMD_TRIM && !(advertised & NBD_FLAG_SEND_TRIM))
        return NBD_EINVAL;
    if (header->type == NBD_CMD_WRITE_ZEROES && !(advertised & NBD_FLAG_SEND_WRITE_ZEROES))
        return NBD_EINVAL;
    if (header->type == NBD_CMD_BLOCK_STATUS && !session->allocation_context)
        return NBD_EINVAL;
    if ((header->type == NBD_CMD_READ || header->type == NBD_CMD_WRITE) &&
        header->length > session->max_payload)
        /* A chunked read may be refused as too large; anything else is just invalid. */
        return header->type == NBD_CMD_READ && nbd_session_chunks(session) ? NBD_EOVERFLOW
                                                                           : NBD_EINVAL;
    if (header->type != NBD_CMD_FLUSH) {
        uint64_t size = bdev_size(session->export->bdev);
        if (header->offset > size || header->length > size - header->offset)
            return header->type == NBD_CMD_WRITE || header->type == NBD_CMD_WRITE_ZEROES
                       ? NBD_ENOSPC
                       : NBD_EINVAL;
    }
    return 0;
}

static void refuse(struct nbd_session *session, const struct nbd_request_header *header,
                   uint32_t error, uint64_t payload)
{
    log_debug("nbd %s: %s cookie %llu refused with error %u", session->peer,
              nbd_command_name(header->type), (unsigned long long)header->cookie, error);
    if (payload) {
        /* The payload is on its way regardless: skip it, then answer. */
        session->refused = *header;
        session->refused_error = error;
        session->discard_left = payload;
        session->input = NBD_INPUT_PAYLOAD_DISCARD;
        return;
    }
    reply_or_hang_up(session, nbd_reply_error(session, header, error));
}

static void handle_request(struct nbd_session *session, const struct nbd_request_header *header)
{
    log_debug("nbd %s: %s cookie %llu flags 0x%x offset %llu length %llu", session->peer,
              nbd_command_name(header->type), (unsigned long long)header->cookie, header->flags,
              (unsigned long long)header->offset, (unsigned long long)header->length);
    if (header->type == NBD_CMD_DISC) {
        log_debug("nbd %s: NBD_CMD_DISC", session->peer);
        session->input = NBD_INPUT_STOPPED;
        session->status = SESSION_DRAINING;
        return;
    }
    uint64_t payload = 0;
    if (session->extended) {
        if (header->flags & NBD_CMD_FLAG_PAYLOAD_LEN)
            payload = header->length;
    } else if (header->type == NBD_CMD_WRITE) {
        payload = header->length;
    }
    if (payload > session->max_payload) {
        uint64_t skippable = session->max_payload > NBD_PAYLOAD_DISCARD_MAX ? session->max_payload
                                                                            : NBD_PAYLOAD_DISCARD_MAX;
        /* Extended headers: the spec asks for a hard disconnect on any oversized payload. */
        if (session->extended || payload > skippable) {
            nbd_session_violation(session, "%s with a payload of %llu bytes",
                                  nbd_command_name(header->type), (unsigned long long)payload);
            return;
        }
    }
    uint32_t error = session->shutting_down ? NBD_ESHUTDOWN : validate(session, header);
    if (error == 0 && payload && header->type != NBD_CMD_WRITE)
        error = NBD_EINVAL; /* no payload form of any other command is supported */
    if (error) {
        refuse(session, header, error, payload);
        return;
    }
    struct nbd_request *request = nbd_request_get(session);
    if (!request) {
        refuse(session, header, NBD_ENOMEM, payload);
        return;
    }
    request->header = *header;
    if (header->type == NBD_CMD_READ || header->type == NBD_CMD_WRITE) {
        request->buffered_bytes = header->length; /* what its data buffer will hold */
        session->inflight_bytes += header->length;
    }
    if (payload) {
        request->buffer = data_buffer_new(payload);
        if (!request->buffer) {
            nbd_request_finish(request);
            refuse(session, header, NBD_ENOMEM, payload);
            return;
        }
        session->receiving = request;
        session->payload_fill = 0;
        session->input = NBD_INPUT_PAYLOAD;
        return;
    }
    execute(request);
}

bool nbd_transmission_can_start(const struct nbd_session *session)
{
    /*
     * Count bytes as well as requests: 128 reads of 32 MiB from a client
     * that never reads its socket would otherwise pin 4 GiB.
     */
    return session->inflight < session->config.max_inflight &&
           (session->inflight_bytes < NBD_INFLIGHT_BYTES_MAX || session->inflight == 0) &&
           send_queue_length(session->out) < NBD_OUTPUT_HIGH_WATER;
}

void nbd_transmission_payload_done(struct nbd_session *session, size_t n)
{
    struct nbd_request *request = session->receiving;
    session->payload_fill += n;
    if (session->payload_fill < request->header.length)
        return;
    session->receiving = NULL;
    session->input = NBD_INPUT_REQUEST_HEADER;
    execute(request);
}

void nbd_transmission_abandon(struct nbd_session *session)
{
    if (!session->receiving)
        return;
    struct nbd_request *request = session->receiving;
    session->receiving = NULL;
    nbd_request_finish(request);
}

size_t nbd_transmission_input(struct nbd_session *session, const uint8_t *data, size_t len)
{
    size_t used = 0;
    switch (session->input) {
    case NBD_INPUT_REQUEST_HEADER: {
        if (session->staged == 0 && !nbd_transmission_can_start(session))
            return 0; /* backpressure: resume when requests complete */
        size_t size = session->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
        const uint8_t *message = nbd_session_gather(session, data, len, size, &used);
        if (!message)
            return used;
        struct nbd_request_header header;
        if (nbd_request_decode(message, session->extended, &header) < 0) {
            nbd_session_violation(session, "bad request magic 0x%08x", load_be32(message));
            return used;
        }
        handle_request(session, &header);
        return used;
    }
    case NBD_INPUT_PAYLOAD: {
        struct nbd_request *request = session->receiving;
        uint64_t want = request->header.length - session->payload_fill;
        used = len < want ? len : (size_t)want;
        memcpy(request->buffer->data + session->payload_fill, data, used);
        nbd_transmission_payload_done(session, used);
        return used;
    }
    case NBD_INPUT_PAYLOAD_DISCARD:
        used = len < session->discard_left ? len : (size_t)session->discard_left;
        session->discard_left -= used;
        if (session->discard_left == 0) {
            session->input = NBD_INPUT_REQUEST_HEADER;
            reply_or_hang_up(session,
                             nbd_reply_error(session, &session->refused, session->refused_error));
        }
        return used;
    default:
        return 0;
    }
}
