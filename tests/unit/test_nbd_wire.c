/* NBD wire encoding and decoding, errno mapping, shared buffers: checked byte by byte. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/data_buffer.h"
#include "protocols/nbd/nbd_errno.h"
#include "protocols/nbd/nbd_wire.h"

Test(nbd_wire, magics_match_the_protocol_document)
{
    cr_assert_eq(NBD_MAGIC, 0x4e42444d41474943ull);
    uint8_t text[8];
    store_be64(text, NBD_MAGIC);
    cr_assert(memcmp(text, "NBDMAGIC", 8) == 0);
    store_be64(text, NBD_IHAVEOPT);
    cr_assert(memcmp(text, "IHAVEOPT", 8) == 0);
    cr_assert_eq(NBD_OPTION_REPLY_MAGIC, 0x3e889045565a9ull);
    cr_assert_eq(NBD_REQUEST_MAGIC, 0x25609513u);
    cr_assert_eq(NBD_EXTENDED_REQUEST_MAGIC, 0x21e41c71u);
    cr_assert_eq(NBD_SIMPLE_REPLY_MAGIC, 0x67446698u);
    cr_assert_eq(NBD_STRUCTURED_REPLY_MAGIC, 0x668e33efu);
    cr_assert_eq(NBD_EXTENDED_REPLY_MAGIC, 0x6e8a278cu);
    cr_assert_eq(NBD_OPT_EXTENDED_HEADERS, 11);
    cr_assert_eq(NBD_REPLY_TYPE_BLOCK_STATUS_EXT, 6);
    cr_assert_eq(NBD_REP_ERR_UNSUP, 0x80000001u);
    cr_assert_eq(NBD_REP_ERR_EXT_HEADER_REQD, 0x8000000au);
    cr_assert_eq(NBD_REPLY_TYPE_ERROR, 0x8001);
    cr_assert_eq(NBD_REPLY_TYPE_ERROR_OFFSET, 0x8002);
}

Test(nbd_wire, big_endian_helpers)
{
    uint8_t bytes[8];
    store_be16(bytes, 0x1234);
    cr_assert(bytes[0] == 0x12 && bytes[1] == 0x34);
    cr_assert_eq(load_be16(bytes), 0x1234);
    store_be32(bytes, 0xdeadbeef);
    cr_assert(bytes[0] == 0xde && bytes[3] == 0xef);
    cr_assert_eq(load_be32(bytes), 0xdeadbeefu);
    store_be64(bytes, 0x0102030405060708ull);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(bytes[i], i + 1);
    cr_assert_eq(load_be64(bytes), 0x0102030405060708ull);
}

Test(nbd_wire, compact_request_decodes_field_by_field)
{
    const uint8_t bytes[NBD_REQUEST_SIZE] = {
        0x25, 0x60, 0x95, 0x13,                         /* magic */
        0x00, 0x01,                                     /* flags: FUA */
        0x00, 0x01,                                     /* type: WRITE */
        1, 2, 3, 4, 5, 6, 7, 8,                         /* cookie */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x10, 0x00, /* offset */
        0x00, 0x00, 0x20, 0x00,                         /* length */
    };
    struct nbd_request_header request;
    cr_assert_eq(nbd_request_decode(bytes, false, &request), 0);
    cr_assert_eq(request.flags, NBD_CMD_FLAG_FUA);
    cr_assert_eq(request.type, NBD_CMD_WRITE);
    cr_assert_eq(request.cookie, 0x0102030405060708ull);
    cr_assert_eq(request.offset, 0x100001000ull);
    cr_assert_eq(request.length, 0x2000);
    /* The same bytes are not an extended request. */
    cr_assert_eq(nbd_request_decode(bytes, true, &request), -EPROTO);
}

Test(nbd_wire, extended_request_carries_64_bit_length)
{
    struct nbd_request_header in = {
        .flags = NBD_CMD_FLAG_REQ_ONE, .type = NBD_CMD_BLOCK_STATUS, .cookie = 99,
        .offset = 1ull << 40, .length = 5ull << 32,
    };
    uint8_t bytes[NBD_EXTENDED_REQUEST_SIZE];
    cr_assert_eq(nbd_request_encode(bytes, true, &in), NBD_EXTENDED_REQUEST_SIZE);
    cr_assert_eq(load_be32(bytes), 0x21e41c71u);
    cr_assert_eq(load_be64(bytes + 24), 5ull << 32);
    struct nbd_request_header out;
    cr_assert_eq(nbd_request_decode(bytes, true, &out), 0);
    cr_assert_eq(out.length, 5ull << 32);
    cr_assert_eq(out.offset, 1ull << 40);
    cr_assert_eq(out.cookie, 99);
    cr_assert_eq(out.type, NBD_CMD_BLOCK_STATUS);
    cr_assert_eq(out.flags, NBD_CMD_FLAG_REQ_ONE);
    cr_assert_eq(nbd_request_decode(bytes, false, &out), -EPROTO);
}

Test(nbd_wire, compact_encode_is_28_bytes)
{
    struct nbd_request_header in = {.type = NBD_CMD_READ, .cookie = 7, .offset = 512, .length = 4096};
    uint8_t bytes[NBD_MAX_REQUEST_SIZE];
    cr_assert_eq(nbd_request_encode(bytes, false, &in), 28);
    cr_assert_eq(load_be32(bytes), NBD_REQUEST_MAGIC);
    cr_assert_eq(load_be32(bytes + 24), 4096);
}

Test(nbd_wire, option_header)
{
    uint8_t bytes[NBD_OPTION_HEADER_SIZE];
    store_be64(bytes, NBD_IHAVEOPT);
    store_be32(bytes + 8, NBD_OPT_GO);
    store_be32(bytes + 12, 42);
    struct nbd_option_header option;
    cr_assert_eq(nbd_option_header_decode(bytes, &option), 0);
    cr_assert_eq(option.option, NBD_OPT_GO);
    cr_assert_eq(option.length, 42);
    bytes[0] ^= 1;
    cr_assert_eq(nbd_option_header_decode(bytes, &option), -EPROTO);
}

Test(nbd_wire, option_reply_bytes)
{
    uint8_t bytes[NBD_OPTION_REPLY_HEADER_SIZE];
    const uint8_t expected[] = {0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7,
                                0x80, 0, 0, 6, 0, 0, 0, 3};
    cr_assert_eq(nbd_option_reply_encode(bytes, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, 3), 20);
    cr_assert(memcmp(bytes, expected, sizeof(expected)) == 0);
}

Test(nbd_wire, simple_reply_bytes)
{
    uint8_t bytes[NBD_SIMPLE_REPLY_SIZE];
    const uint8_t expected[] = {0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0x12, 0x34};
    cr_assert_eq(nbd_simple_reply_encode(bytes, NBD_EINVAL, 0x1234), 16);
    cr_assert(memcmp(bytes, expected, sizeof(expected)) == 0);
}

Test(nbd_wire, structured_and_extended_chunk_headers)
{
    struct nbd_chunk_header chunk = {
        .flags = NBD_REPLY_FLAG_DONE, .type = NBD_REPLY_TYPE_OFFSET_DATA, .cookie = 5,
        .offset = 0x10000, .length = 4104,
    };
    uint8_t bytes[NBD_MAX_REPLY_HEADER_SIZE];
    const uint8_t structured[] = {0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5,
                                  0, 0, 0x10, 0x08};
    cr_assert_eq(nbd_chunk_header_encode(bytes, false, &chunk), 20);
    cr_assert(memcmp(bytes, structured, sizeof(structured)) == 0);
    const uint8_t extended[] = {0x6e, 0x8a, 0x27, 0x8c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5,
                                0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x08};
    cr_assert_eq(nbd_chunk_header_encode(bytes, true, &chunk), 32);
    cr_assert(memcmp(bytes, extended, sizeof(extended)) == 0);
}

Test(nbd_errno, mapping_follows_the_spec)
{
    cr_assert_eq(nbd_error_from_errno(0), 0);
    cr_assert_eq(nbd_error_from_errno(-EPERM), NBD_EPERM);
    cr_assert_eq(nbd_error_from_errno(-EROFS), NBD_EPERM);
    cr_assert_eq(nbd_error_from_errno(-EIO), NBD_EIO);
    cr_assert_eq(nbd_error_from_errno(-ENOMEM), NBD_ENOMEM);
    cr_assert_eq(nbd_error_from_errno(-EINVAL), NBD_EINVAL);
    cr_assert_eq(nbd_error_from_errno(-ENOSPC), NBD_ENOSPC);
    cr_assert_eq(nbd_error_from_errno(-EDQUOT), NBD_ENOSPC);
    cr_assert_eq(nbd_error_from_errno(-EFBIG), NBD_ENOSPC);
    cr_assert_eq(nbd_error_from_errno(-EOVERFLOW), NBD_EOVERFLOW);
    cr_assert_eq(nbd_error_from_errno(-ENOTSUP), NBD_ENOTSUP);
    cr_assert_eq(nbd_error_from_errno(-EOPNOTSUPP), NBD_ENOTSUP);
    cr_assert_eq(nbd_error_from_errno(-ESHUTDOWN), NBD_ESHUTDOWN);
    cr_assert_eq(nbd_error_from_errno(-EBADF), NBD_EIO);
    cr_assert_eq(nbd_error_from_errno(-ENODEV), NBD_EIO);
}

Test(data_buffer, aligned_and_reference_counted)
{
    struct data_buffer *buffer = data_buffer_new(12345);
    cr_assert_not_null(buffer);
    cr_assert_eq((uintptr_t)buffer->data % 4096, 0);
    cr_assert_eq(buffer->size, 12345);
    memset(buffer->data, 0xab, buffer->size); /* all of it is usable (ASan checks) */
    cr_assert_eq(data_buffer_ref(buffer), buffer);
    cr_assert_eq(buffer->refs, 2);
    data_buffer_unref(buffer);
    cr_assert_eq(buffer->refs, 1);
    data_buffer_unref(buffer);
    data_buffer_unref(NULL);
    cr_assert_null(data_buffer_new(0));
}
