#include "test_nbd_harness.h"

#include <criterion/criterion.h>
#include <string.h>

#include "block/aio.h"
#include "protocols/nbd/nbd_session.h"
#include "protocols/nbd/nbd_wire.h"

void harness_init(struct harness *h, uint32_t max_inflight)
{
    memset(h, 0, sizeof(*h));
    session_world_init(&h->world);
    h->disk_path = session_world_add_export(
        &h->world, &(struct session_export){.name = "disk", .description = "test disk", .size = HARNESS_DISK_SIZE});
    session_world_add_export(&h->world, &(struct session_export){
                                            .name = "ro", .size = HARNESS_RO_SIZE, .pattern = true, .readonly = true});
    session_world_add_export(&h->world, &(struct session_export){.name = "big", .size = HARNESS_BIG_SIZE});
    struct nbd_session_config config = {
        .max_inflight = max_inflight,
        .max_payload = 0,
        .peer = "test-peer",
    };
    h->session = nbd_session_new(&config, h->world.table, h->world.ctx, h->world.out, &session_world_ops, &h->world);
    cr_assert_not_null(h->session);
}

void harness_fini(struct harness *h) { session_world_fini(&h->world, &nbd_session_protocol, h->session); }

void harness_feed(struct harness *h, const void *data, size_t length)
{
    size_t used = nbd_session_input(h->session, data, length);
    cr_assert_eq(used, length, "session consumed %zu of %zu bytes", used, length);
}

void harness_wait(struct harness *h) { aio_context_drain(h->world.ctx); }

size_t harness_output_left(struct harness *h) { return session_world_output_left(&h->world); }

const uint8_t *harness_take(struct harness *h, size_t n) { return session_world_take(&h->world, n); }

void harness_skip_greeting(struct harness *h)
{
    const uint8_t *greeting = harness_take(h, NBD_GREETING_SIZE);
    cr_assert_eq(load_be64(greeting), NBD_MAGIC);
    cr_assert_eq(load_be64(greeting + 8), NBD_IHAVEOPT);
}

void harness_client_flags(struct harness *h, uint32_t flags)
{
    uint8_t bytes[4];
    store_be32(bytes, flags);
    harness_feed(h, bytes, sizeof(bytes));
}

void harness_option(struct harness *h, uint32_t option, const void *data, uint32_t length)
{
    uint8_t header[NBD_OPTION_HEADER_SIZE];
    store_be64(header, NBD_IHAVEOPT);
    store_be32(header + 8, option);
    store_be32(header + 12, length);
    harness_feed(h, header, sizeof(header));
    if (length)
        harness_feed(h, data, length);
}

const uint8_t *harness_option_reply(struct harness *h, uint32_t option, uint32_t *type,
                                    uint32_t *length)
{
    const uint8_t *header = harness_take(h, NBD_OPTION_REPLY_HEADER_SIZE);
    cr_assert_eq(load_be64(header), NBD_OPTION_REPLY_MAGIC);
    cr_assert_eq(load_be32(header + 8), option, "reply for option %u, expected %u",
                 load_be32(header + 8), option);
    *type = load_be32(header + 12);
    *length = load_be32(header + 16);
    return *length ? harness_take(h, *length) : NULL;
}

void harness_expect_ack(struct harness *h, uint32_t option)
{
    uint32_t type, length;
    harness_option_reply(h, option, &type, &length);
    cr_assert_eq(type, NBD_REP_ACK, "option %u: reply type 0x%x, expected ACK", option, type);
    cr_assert_eq(length, 0);
}

uint32_t harness_info_data(uint8_t *out, const char *name, const uint16_t *requests, uint16_t count)
{
    uint32_t name_length = (uint32_t)strlen(name);
    store_be32(out, name_length);
    memcpy(out + 4, name, name_length);
    store_be16(out + 4 + name_length, count);
    for (uint16_t i = 0; i < count; i++)
        store_be16(out + 6 + name_length + 2 * i, requests[i]);
    return 6 + name_length + 2u * count;
}

uint32_t harness_meta_data(uint8_t *out, const char *name, const char *const *queries,
                           uint32_t count)
{
    uint32_t name_length = (uint32_t)strlen(name);
    store_be32(out, name_length);
    memcpy(out + 4, name, name_length);
    store_be32(out + 4 + name_length, count);
    uint32_t position = 8 + name_length;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t length = (uint32_t)strlen(queries[i]);
        store_be32(out + position, length);
        memcpy(out + position + 4, queries[i], length);
        position += 4 + length;
    }
    return position;
}

uint16_t harness_go(struct harness *h, const char *name, bool structured, bool extended,
                    bool allocation)
{
    harness_skip_greeting(h);
    harness_client_flags(h, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    if (structured) {
        harness_option(h, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        harness_expect_ack(h, NBD_OPT_STRUCTURED_REPLY);
        h->structured = true;
    }
    if (extended) {
        harness_option(h, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
        harness_expect_ack(h, NBD_OPT_EXTENDED_HEADERS);
        h->extended = true;
        h->structured = true;
    }
    uint8_t data[256];
    uint32_t type, length;
    if (allocation) {
        const char *query = "base:allocation";
        uint32_t data_length = harness_meta_data(data, name, &query, 1);
        harness_option(h, NBD_OPT_SET_META_CONTEXT, data, data_length);
        const uint8_t *reply = harness_option_reply(h, NBD_OPT_SET_META_CONTEXT, &type, &length);
        cr_assert_eq(type, NBD_REP_META_CONTEXT);
        cr_assert_eq(length, 4 + strlen("base:allocation"));
        cr_assert(memcmp(reply + 4, "base:allocation", length - 4) == 0);
        h->context_id = load_be32(reply);
        harness_expect_ack(h, NBD_OPT_SET_META_CONTEXT);
    }
    uint32_t data_length = harness_info_data(data, name, NULL, 0);
    harness_option(h, NBD_OPT_GO, data, data_length);
    uint16_t flags = 0;
    bool seen_export = false;
    for (;;) {
        const uint8_t *reply = harness_option_reply(h, NBD_OPT_GO, &type, &length);
        if (type == NBD_REP_ACK)
            break;
        cr_assert_eq(type, NBD_REP_INFO, "GO reply type 0x%x", type);
        if (load_be16(reply) == NBD_INFO_EXPORT) {
            cr_assert_eq(length, 12);
            flags = load_be16(reply + 10);
            seen_export = true;
        }
    }
    cr_assert(seen_export);
    cr_assert_eq(harness_output_left(h), 0);
    return flags;
}

void harness_request(struct harness *h, uint16_t flags, uint16_t type, uint64_t cookie,
                     uint64_t offset, uint64_t length, const void *payload)
{
    uint8_t header[NBD_MAX_REQUEST_SIZE];
    struct nbd_request_header request = {
        .flags = flags, .type = type, .cookie = cookie, .offset = offset, .length = length,
    };
    size_t size = nbd_request_encode(header, h->extended, &request);
    harness_feed(h, header, size);
    if (payload)
        harness_feed(h, payload, length);
}

void harness_expect_simple(struct harness *h, uint64_t cookie, uint32_t error)
{
    const uint8_t *reply = harness_take(h, NBD_SIMPLE_REPLY_SIZE);
    cr_assert_eq(load_be32(reply), NBD_SIMPLE_REPLY_MAGIC, "magic 0x%08x", load_be32(reply));
    cr_assert_eq(load_be32(reply + 4), error, "error %u, expected %u", load_be32(reply + 4), error);
    cr_assert_eq(load_be64(reply + 8), cookie);
}

void harness_chunk(struct harness *h, struct harness_chunk *chunk)
{
    size_t size = h->extended ? NBD_EXTENDED_REPLY_SIZE : NBD_STRUCTURED_REPLY_SIZE;
    const uint8_t *header = harness_take(h, size);
    cr_assert_eq(load_be32(header), h->extended ? NBD_EXTENDED_REPLY_MAGIC : NBD_STRUCTURED_REPLY_MAGIC,
                 "chunk magic 0x%08x", load_be32(header));
    chunk->flags = load_be16(header + 4);
    chunk->type = load_be16(header + 6);
    chunk->cookie = load_be64(header + 8);
    if (h->extended) {
        chunk->offset = load_be64(header + 16);
        chunk->length = load_be64(header + 24);
    } else {
        chunk->offset = 0;
        chunk->length = load_be32(header + 16);
    }
    chunk->payload = chunk->length ? harness_take(h, chunk->length) : NULL;
}

void harness_expect_ok(struct harness *h, uint64_t cookie)
{
    if (!h->extended) {
        harness_expect_simple(h, cookie, 0);
        return;
    }
    struct harness_chunk chunk;
    harness_chunk(h, &chunk);
    cr_assert_eq(chunk.cookie, cookie);
    cr_assert_eq(chunk.type, NBD_REPLY_TYPE_NONE, "chunk type 0x%x", chunk.type);
    cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
    cr_assert_eq(chunk.length, 0);
}

void harness_expect_error(struct harness *h, uint64_t cookie, uint32_t error)
{
    if (!h->structured) {
        harness_expect_simple(h, cookie, error);
        return;
    }
    struct harness_chunk chunk;
    harness_chunk(h, &chunk);
    cr_assert_eq(chunk.cookie, cookie);
    cr_assert_eq(chunk.type, NBD_REPLY_TYPE_ERROR, "chunk type 0x%x", chunk.type);
    cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
    cr_assert_geq(chunk.length, 6);
    cr_assert_eq(load_be32(chunk.payload), error, "error %u, expected %u", load_be32(chunk.payload),
                 error);
    cr_assert_eq(load_be16(chunk.payload + 4), chunk.length - 6);
}
