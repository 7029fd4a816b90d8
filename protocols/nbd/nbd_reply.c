/*
 * Reply encoding: which reply form the negotiation allows (simple,
 * structured or extended), header bytes copied into the send queue, read
 * data lent to it.
 */
#include <errno.h>

#include "common/send_queue.h"
#include "protocols/nbd/nbd_internal.h"

static int queue_chunk_header(struct nbd_session *session, const struct nbd_request_header *request,
                              uint16_t flags, uint16_t type, uint64_t payload_length,
                              const void *fixed_payload, size_t fixed_length)
{
    uint8_t header[NBD_MAX_REPLY_HEADER_SIZE + 16];
    struct nbd_chunk_header chunk = {
        .flags = flags,
        .type = type,
        .cookie = request->cookie,
        .offset = request->offset,
        .length = payload_length,
    };
    size_t size = nbd_chunk_header_encode(header, session->extended, &chunk);
    for (size_t i = 0; i < fixed_length; i++)
        header[size + i] = ((const uint8_t *)fixed_payload)[i];
    return send_queue_copy(session->out, header, size + fixed_length);
}

static int queue_simple(struct nbd_session *session, uint64_t cookie, uint32_t error)
{
    uint8_t header[NBD_SIMPLE_REPLY_SIZE];
    nbd_simple_reply_encode(header, error, cookie);
    return send_queue_copy(session->out, header, sizeof(header));
}

int nbd_reply_ok(struct nbd_session *session, const struct nbd_request_header *request)
{
    /* A structured READ reply may not be simple, even an empty one. */
    if (session->extended || (session->structured && request->type == NBD_CMD_READ))
        return queue_chunk_header(session, request, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0,
                                  NULL, 0);
    return queue_simple(session, request->cookie, 0);
}

int nbd_reply_error(struct nbd_session *session, const struct nbd_request_header *request,
                    uint32_t error)
{
    if (!nbd_session_chunks(session))
        return queue_simple(session, request->cookie, error);
    uint8_t payload[6];
    store_be32(payload, error);
    store_be16(payload + 4, 0); /* no message */
    return queue_chunk_header(session, request, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                              sizeof(payload), payload, sizeof(payload));
}

int nbd_reply_data(struct nbd_session *session, const struct nbd_request_header *request,
                   uint64_t offset, struct data_buffer *buffer, size_t buffer_offset,
                   size_t length, bool done)
{
    int ret;
    if (nbd_session_chunks(session)) {
        uint8_t data_offset[8];
        store_be64(data_offset, offset);
        ret = queue_chunk_header(session, request, done ? NBD_REPLY_FLAG_DONE : 0,
                                 NBD_REPLY_TYPE_OFFSET_DATA, 8 + (uint64_t)length, data_offset,
                                 sizeof(data_offset));
    } else {
        ret = queue_simple(session, request->cookie, 0);
    }
    if (ret < 0)
        return ret;
    ret = send_queue_lend(session->out, buffer->data + buffer_offset, length, data_buffer_unref,
                          data_buffer_ref(buffer));
    if (ret < 0)
        data_buffer_unref(buffer);
    return ret;
}

int nbd_reply_hole(struct nbd_session *session, const struct nbd_request_header *request,
                   uint64_t offset, uint32_t length, bool done)
{
    uint8_t payload[12];
    store_be64(payload, offset);
    store_be32(payload + 8, length);
    return queue_chunk_header(session, request, done ? NBD_REPLY_FLAG_DONE : 0,
                              NBD_REPLY_TYPE_OFFSET_HOLE, sizeof(payload), payload,
                              sizeof(payload));
}

int nbd_reply_block_status(struct nbd_session *session, const struct nbd_request_header *request,
                           uint32_t context_id, const struct bdev_extent *extents, uint32_t count)
{
    bool wide = session->extended;
    size_t descriptor = wide ? 16 : 8;
    uint8_t prefix[8];
    size_t prefix_length;
    store_be32(prefix, context_id);
    if (wide) {
        store_be32(prefix + 4, count);
        prefix_length = 8;
    } else {
        prefix_length = 4;
    }
    int ret = queue_chunk_header(session, request, NBD_REPLY_FLAG_DONE,
                                 wide ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS,
                                 prefix_length + descriptor * count, prefix, prefix_length);
    /* Descriptors go out in batches: one copy call per batch, not per extent. */
    uint8_t batch[64 * 16];
    size_t fill = 0;
    for (uint32_t i = 0; i < count && ret == 0; i++) {
        uint32_t flags = extents[i].flags & (NBD_STATE_HOLE | NBD_STATE_ZERO);
        if (wide) {
            store_be64(batch + fill, extents[i].length);
            store_be64(batch + fill + 8, flags);
        } else {
            store_be32(batch + fill, (uint32_t)extents[i].length);
            store_be32(batch + fill + 4, flags);
        }
        fill += descriptor;
        if (fill == sizeof(batch) || i + 1 == count) {
            ret = send_queue_copy(session->out, batch, fill);
            fill = 0;
        }
    }
    return ret;
}
