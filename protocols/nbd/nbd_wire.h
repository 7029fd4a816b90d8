/*
 * nbd_wire: the NBD protocol's numbers and byte layouts.
 *
 * Values are those of the NBD protocol document (NetworkBlockDevice/nbd
 * doc/proto.md); the extended-header values come from its
 * extension-ext-header branch, as qemu 8.2 and libnbd 1.18 implement them.
 * Everything on the wire is big-endian; the helpers below are the only
 * place the session code touches byte order.
 */
#ifndef LUNA_PROTOCOLS_NBD_WIRE_H
#define LUNA_PROTOCOLS_NBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/byte_order.h"

/* Handshake magics. */
#define NBD_MAGIC UINT64_C(0x4e42444d41474943)          /* "NBDMAGIC" */
#define NBD_IHAVEOPT UINT64_C(0x49484156454f5054)       /* "IHAVEOPT" */
#define NBD_OPTION_REPLY_MAGIC UINT64_C(0x0003e889045565a9)

/* Transmission magics. */
#define NBD_REQUEST_MAGIC UINT32_C(0x25609513)
#define NBD_EXTENDED_REQUEST_MAGIC UINT32_C(0x21e41c71)
#define NBD_SIMPLE_REPLY_MAGIC UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)
#define NBD_EXTENDED_REPLY_MAGIC UINT32_C(0x6e8a278c)

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)

/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_RESIZE (1u << 9)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_PEEK_EXPORT 4u
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u
#define NBD_OPT_EXTENDED_HEADERS 11u

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_FLAG_ERROR (1u << 31)
#define NBD_REP_ERR_UNSUP (NBD_REP_FLAG_ERROR | 1u)
#define NBD_REP_ERR_POLICY (NBD_REP_FLAG_ERROR | 2u)
#define NBD_REP_ERR_INVALID (NBD_REP_FLAG_ERROR | 3u)
#define NBD_REP_ERR_PLATFORM (NBD_REP_FLAG_ERROR | 4u)
#define NBD_REP_ERR_TLS_REQD (NBD_REP_FLAG_ERROR | 5u)
#define NBD_REP_ERR_UNKNOWN (NBD_REP_FLAG_ERROR | 6u)
#define NBD_REP_ERR_SHUTDOWN (NBD_REP_FLAG_ERROR | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8u)
#define NBD_REP_ERR_TOO_BIG (NBD_REP_FLAG_ERROR | 9u)
#define NBD_REP_ERR_EXT_HEADER_REQD (NBD_REP_FLAG_ERROR | 10u)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT 0u
#define NBD_INFO_NAME 1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE 3u

/* Commands. */
#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_CACHE 5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u

/* Command flags. */
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* Structured / extended reply flags and chunk types. */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6u
#define NBD_REPLY_TYPE_ERROR ((1u << 15) | 1u)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2u)

/* Error values in replies. */
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

/* base:allocation status flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* Sizes of fixed-layout messages, bytes. */
#define NBD_GREETING_SIZE 18u            /* NBDMAGIC, IHAVEOPT, handshake flags */
#define NBD_CLIENT_FLAGS_SIZE 4u
#define NBD_OPTION_HEADER_SIZE 16u       /* IHAVEOPT, option, length */
#define NBD_OPTION_REPLY_HEADER_SIZE 20u /* magic, option, type, length */
#define NBD_EXPORT_NAME_REPLY_SIZE 10u   /* size, flags (then 124 zeroes unless NO_ZEROES) */
#define NBD_EXPORT_NAME_ZEROES 124u
#define NBD_REQUEST_SIZE 28u
#define NBD_EXTENDED_REQUEST_SIZE 32u
#define NBD_SIMPLE_REPLY_SIZE 16u
#define NBD_STRUCTURED_REPLY_SIZE 20u
#define NBD_EXTENDED_REPLY_SIZE 32u
#define NBD_MAX_REQUEST_SIZE NBD_EXTENDED_REQUEST_SIZE
#define NBD_MAX_REPLY_HEADER_SIZE NBD_EXTENDED_REPLY_SIZE
#define NBD_MAX_STRING 4096u              /* names, queries, messages */
#define NBD_META_CONTEXT_ALLOCATION "base:allocation"

/* A transmission request, compact or extended; length is 64-bit in both. */
struct nbd_request_header {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint64_t length;
};

/* Decode NBD_REQUEST_SIZE or NBD_EXTENDED_REQUEST_SIZE bytes; -EPROTO on a wrong magic. */
int nbd_request_decode(const uint8_t *data, bool extended, struct nbd_request_header *out);
/* Encode a request (clients and tests); returns the byte count. */
size_t nbd_request_encode(uint8_t *out, bool extended, const struct nbd_request_header *request);

struct nbd_option_header {
    uint32_t option;
    uint32_t length;
};

/* Decode NBD_OPTION_HEADER_SIZE bytes; -EPROTO when the IHAVEOPT magic is wrong. */
int nbd_option_header_decode(const uint8_t *data, struct nbd_option_header *out);

/* Option reply header (data follows separately); returns NBD_OPTION_REPLY_HEADER_SIZE. */
size_t nbd_option_reply_encode(uint8_t *out, uint32_t option, uint32_t type, uint32_t length);

/* Simple reply header; returns NBD_SIMPLE_REPLY_SIZE. */
size_t nbd_simple_reply_encode(uint8_t *out, uint32_t error, uint64_t cookie);

/*
 * Structured (20 bytes) or extended (32 bytes) chunk header.  offset is
 * only carried by the extended form, where it echoes the request's.
 */
struct nbd_chunk_header {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint64_t length; /* payload bytes after the header */
};

size_t nbd_chunk_header_encode(uint8_t *out, bool extended, const struct nbd_chunk_header *chunk);

/* Names for log messages ("NBD_CMD_READ" ...); never NULL. */
const char *nbd_command_name(uint16_t type);
const char *nbd_option_name(uint32_t option);

#endif
