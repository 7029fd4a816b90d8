#include "protocols/nbd/nbd_wire.h"

#include <errno.h>

int nbd_request_decode(const uint8_t *data, bool extended, struct nbd_request_header *out)
{
    uint32_t magic = load_be32(data);
    if (magic != (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
        return -EPROTO;
    out->flags = load_be16(data + 4);
    out->type = load_be16(data + 6);
    out->cookie = load_be64(data + 8);
    out->offset = load_be64(data + 16);
    out->length = extended ? load_be64(data + 24) : load_be32(data + 24);
    return 0;
}

size_t nbd_request_encode(uint8_t *out, bool extended, const struct nbd_request_header *request)
{
    store_be32(out, extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
    store_be16(out + 4, request->flags);
    store_be16(out + 6, request->type);
    store_be64(out + 8, request->cookie);
    store_be64(out + 16, request->offset);
    if (extended) {
        store_be64(out + 24, request->length);
        return NBD_EXTENDED_REQUEST_SIZE;
    }
    store_be32(out + 24, (uint32_t)request->length);
    return NBD_REQUEST_SIZE;
}

int nbd_option_header_decode(const uint8_t *data, struct nbd_option_header *out)
{
    if (load_be64(data) != NBD_IHAVEOPT)
        return -EPROTO;
    out->option = load_be32(data + 8);
    out->length = load_be32(data + 12);
    return 0;
}

size_t nbd_option_reply_encode(uint8_t *out, uint32_t option, uint32_t type, uint32_t length)
{
    store_be64(out, NBD_OPTION_REPLY_MAGIC);
    store_be32(out + 8, option);
    store_be32(out + 12, type);
    store_be32(out + 16, length);
    return NBD_OPTION_REPLY_HEADER_SIZE;
}

size_t nbd_simple_reply_encode(uint8_t *out, uint32_t error, uint64_t cookie)
{
    store_be32(out, NBD_SIMPLE_REPLY_MAGIC);
    store_be32(out + 4, error);
    store_be64(out + 8, cookie);
    return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_chunk_header_encode(uint8_t *out, bool extended, const struct nbd_chunk_header *chunk)
{
    store_be32(out, extended ? NBD_EXTENDED_REPLY_MAGIC : NBD_STRUCTURED_REPLY_MAGIC);
    store_be16(out + 4, chunk->flags);
    store_be16(out + 6, chunk->type);
    store_be64(out + 8, chunk->cookie);
    if (extended) {
        store_be64(out + 16, chunk->offset);
        store_be64(out + 24, chunk->length);
        return NBD_EXTENDED_REPLY_SIZE;
    }
    store_be32(out + 16, (uint32_t)chunk->length);
    return NBD_STRUCTURED_REPLY_SIZE;
}

const char *nbd_command_name(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ: return "NBD_CMD_READ";
    case NBD_CMD_WRITE: return "NBD_CMD_WRITE";
    case NBD_CMD_DISC: return "NBD_CMD_DISC";
    case NBD_CMD_FLUSH: return "NBD_CMD_FLUSH";
    case NBD_CMD_TRIM: return "NBD_CMD_TRIM";
    case NBD_CMD_CACHE: return "NBD_CMD_CACHE";
    case NBD_CMD_WRITE_ZEROES: return "NBD_CMD_WRITE_ZEROES";
    case NBD_CMD_BLOCK_STATUS: return "NBD_CMD_BLOCK_STATUS";
    default: return "unknown command";
    }
}

const char *nbd_option_name(uint32_t option)
{
    switch (option) {
    case NBD_OPT_EXPORT_NAME: return "NBD_OPT_EXPORT_NAME";
    case NBD_OPT_ABORT: return "NBD_OPT_ABORT";
    case NBD_OPT_LIST: return "NBD_OPT_LIST";
    case NBD_OPT_PEEK_EXPORT: return "NBD_OPT_PEEK_EXPORT";
    case NBD_OPT_STARTTLS: return "NBD_OPT_STARTTLS";
    case NBD_OPT_INFO: return "NBD_OPT_INFO";
    case NBD_OPT_GO: return "NBD_OPT_GO";
    case NBD_OPT_STRUCTURED_REPLY: return "NBD_OPT_STRUCTURED_REPLY";
    case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
    case NBD_OPT_SET_META_CONTEXT: return "NBD_OPT_SET_META_CONTEXT";
    case NBD_OPT_EXTENDED_HEADERS: return "NBD_OPT_EXTENDED_HEADERS";
    default: return "unknown option";
    }
}
