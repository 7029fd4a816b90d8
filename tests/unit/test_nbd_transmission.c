/*
 * NBD transmission: requests fed as raw bytes to a session over real raw
 * file exports, replies checked byte by byte (and against the file).
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/export.h"
#include "block/write_guard.h"
#include "common/send_queue.h"
#include "protocols/nbd/nbd_session.h"
#include "protocols/nbd/nbd_wire.h"
#include "test_nbd_harness.h"

static struct harness h;

static void setup(void) { harness_init(&h, 0); }
static void teardown(void) { harness_fini(&h); }

TestSuite(nbd_transmission, .init = setup, .fini = teardown);

static uint8_t *pattern(uint64_t offset, size_t length, uint8_t salt)
{
    uint8_t *data = malloc(length);
    cr_assert_not_null(data);
    for (size_t i = 0; i < length; i++)
        data[i] = (uint8_t)(session_pattern_byte(offset + i) ^ salt);
    return data;
}

static void read_disk_file(uint64_t offset, void *buffer, size_t length)
{
    int fd = open(h.disk_path, O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pread(fd, buffer, length, (off_t)offset), (ssize_t)length);
    close(fd);
}

/* A successful simple READ reply: header, then exactly length bytes. */
static const uint8_t *expect_simple_data(uint64_t cookie, size_t length)
{
    harness_expect_simple(&h, cookie, 0);
    return harness_take(&h, length);
}

struct read_chunks {
    unsigned count;
    uint16_t types[64];
    uint64_t offsets[64];
    uint64_t lengths[64];
};

/*
 * Collect a structured READ reply into out[length]: chunks must not
 * overlap, must cover everything, and only the last may be DONE.
 */
static void expect_structured_read(uint64_t cookie, uint64_t offset, size_t length, uint8_t *out,
                                   struct read_chunks *chunks)
{
    uint8_t *covered = calloc(1, length);
    cr_assert_not_null(covered);
    memset(chunks, 0, sizeof(*chunks));
    for (;;) {
        struct harness_chunk chunk;
        harness_chunk(&h, &chunk);
        cr_assert_eq(chunk.cookie, cookie);
        if (h.extended)
            cr_assert_eq(chunk.offset, offset, "extended replies echo the request offset");
        cr_assert_lt(chunks->count, 64);
        unsigned n = chunks->count++;
        chunks->types[n] = chunk.type;
        uint64_t start, size;
        if (chunk.type == NBD_REPLY_TYPE_OFFSET_DATA) {
            cr_assert_gt(chunk.length, 8);
            start = load_be64(chunk.payload);
            size = chunk.length - 8;
            cr_assert(start >= offset && start + size <= offset + length);
            memcpy(out + (start - offset), chunk.payload + 8, size);
        } else if (chunk.type == NBD_REPLY_TYPE_OFFSET_HOLE) {
            cr_assert_eq(chunk.length, 12);
            start = load_be64(chunk.payload);
            size = load_be32(chunk.payload + 8);
            cr_assert_gt(size, 0);
            cr_assert(start >= offset && start + size <= offset + length);
            memset(out + (start - offset), 0, size);
        } else {
            cr_assert_eq(chunk.type, NBD_REPLY_TYPE_NONE, "unexpected chunk type 0x%x", chunk.type);
            cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
            break;
        }
        chunks->offsets[n] = start;
        chunks->lengths[n] = size;
        for (uint64_t i = 0; i < size; i++) {
            cr_assert_eq(covered[start - offset + i], 0, "chunks overlap");
            covered[start - offset + i] = 1;
        }
        if (chunk.flags & NBD_REPLY_FLAG_DONE)
            break;
    }
    for (size_t i = 0; i < length; i++)
        cr_assert_eq(covered[i], 1, "byte %zu of the read not covered", i);
    free(covered);
}

static void write_sync(uint64_t cookie, uint16_t flags, uint64_t offset, const void *data,
                       size_t length)
{
    harness_request(&h, flags | (h.extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0), NBD_CMD_WRITE, cookie,
                    offset, length, data);
    harness_wait(&h);
    harness_expect_ok(&h, cookie);
}

Test(nbd_transmission, simple_write_then_read)
{
    harness_go(&h, "disk", false, false, false);
    uint8_t *data = pattern(4096, 8192, 0);
    write_sync(1, 0, 4096, data, 8192);
    uint8_t file[8192];
    read_disk_file(4096, file, sizeof(file));
    cr_assert(memcmp(file, data, sizeof(file)) == 0);
    harness_request(&h, 0, NBD_CMD_READ, 2, 4096, 8192, NULL);
    harness_wait(&h);
    cr_assert(memcmp(expect_simple_data(2, 8192), data, 8192) == 0);
    cr_assert_eq(harness_output_left(&h), 0);
    cr_assert_eq(nbd_session_inflight(h.session), 0);
    cr_assert_geq(h.world.wakes, 2, "each completion wakes the server");
    free(data);
}

Test(nbd_transmission, structured_small_read_is_one_data_chunk)
{
    harness_go(&h, "ro", true, false, false);
    harness_request(&h, 0, NBD_CMD_READ, 9, 1000, 3000, NULL);
    harness_wait(&h);
    struct harness_chunk chunk;
    harness_chunk(&h, &chunk);
    cr_assert_eq(chunk.cookie, 9);
    cr_assert_eq(chunk.type, NBD_REPLY_TYPE_OFFSET_DATA);
    cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
    cr_assert_eq(chunk.length, 8 + 3000);
    cr_assert_eq(load_be64(chunk.payload), 1000);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(chunk.payload[8 + i], session_pattern_byte(1000 + i));
    cr_assert_eq(harness_output_left(&h), 0);
}

static void prepare_sparse_region(void)
{
    /* 256 KiB at 0: hole, 64 KiB data at 128 KiB, hole. */
    uint8_t *data = pattern(128 << 10, 64 << 10, 0x5a);
    write_sync(100, 0, 128 << 10, data, 64 << 10);
    free(data);
}

Test(nbd_transmission, read_over_holes_sends_offset_hole_chunks)
{
    harness_go(&h, "disk", true, false, false);
    prepare_sparse_region();
    size_t length = 256 << 10;
    uint8_t *out = malloc(length);
    harness_request(&h, 0, NBD_CMD_READ, 5, 0, length, NULL);
    harness_wait(&h);
    struct read_chunks chunks;
    expect_structured_read(5, 0, length, out, &chunks);
    cr_assert_eq(chunks.count, 3);
    cr_assert_eq(chunks.types[0], NBD_REPLY_TYPE_OFFSET_HOLE);
    cr_assert_eq(chunks.offsets[0], 0);
    cr_assert_eq(chunks.lengths[0], 128 << 10);
    cr_assert_eq(chunks.types[1], NBD_REPLY_TYPE_OFFSET_DATA);
    cr_assert_eq(chunks.offsets[1], 128 << 10);
    cr_assert_eq(chunks.lengths[1], 64 << 10);
    cr_assert_eq(chunks.types[2], NBD_REPLY_TYPE_OFFSET_HOLE);
    uint8_t *expected = calloc(1, length);
    uint8_t *data = pattern(128 << 10, 64 << 10, 0x5a);
    memcpy(expected + (128 << 10), data, 64 << 10);
    cr_assert(memcmp(out, expected, length) == 0);
    cr_assert_eq(harness_output_left(&h), 0);
    free(out);
    free(expected);
    free(data);
}

Test(nbd_transmission, df_read_is_a_single_data_chunk)
{
    harness_go(&h, "disk", true, false, false);
    prepare_sparse_region();
    size_t length = 256 << 10;
    uint8_t *out = malloc(length);
    harness_request(&h, NBD_CMD_FLAG_DF, NBD_CMD_READ, 6, 0, length, NULL);
    harness_wait(&h);
    struct read_chunks chunks;
    expect_structured_read(6, 0, length, out, &chunks);
    cr_assert_eq(chunks.count, 1);
    cr_assert_eq(chunks.types[0], NBD_REPLY_TYPE_OFFSET_DATA);
    cr_assert_eq(chunks.lengths[0], length);
    uint8_t *data = pattern(128 << 10, 64 << 10, 0x5a);
    cr_assert(memcmp(out + (128 << 10), data, 64 << 10) == 0);
    for (size_t i = 0; i < (128 << 10); i++)
        cr_assert_eq(out[i], 0);
    free(out);
    free(data);
}

Test(nbd_transmission, df_without_structured_replies_is_invalid)
{
    harness_go(&h, "disk", false, false, false);
    harness_request(&h, NBD_CMD_FLAG_DF, NBD_CMD_READ, 6, 0, 4096, NULL);
    harness_expect_simple(&h, 6, NBD_EINVAL);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, fua_write_and_flush)
{
    harness_go(&h, "disk", true, false, false);
    uint8_t *data = pattern(0, 65536, 0x11);
    write_sync(1, NBD_CMD_FLAG_FUA, 1 << 20, data, 65536);
    harness_request(&h, 0, NBD_CMD_FLUSH, 2, 0, 0, NULL);
    harness_wait(&h);
    harness_expect_ok(&h, 2);
    uint8_t *file = malloc(65536);
    read_disk_file(1 << 20, file, 65536);
    cr_assert(memcmp(file, data, 65536) == 0);
    free(file);
    free(data);
}

/* Read one BLOCK_STATUS reply (either width) into extents; returns the count. */
static unsigned expect_block_status(uint64_t cookie, uint64_t *lengths, uint32_t *flags,
                                    unsigned max)
{
    struct harness_chunk chunk;
    harness_chunk(&h, &chunk);
    cr_assert_eq(chunk.cookie, cookie);
    cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
    cr_assert_eq(load_be32(chunk.payload), h.context_id);
    unsigned count;
    if (h.extended) {
        cr_assert_eq(chunk.type, NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
        count = load_be32(chunk.payload + 4);
        cr_assert_eq(chunk.length, 8 + 16ull * count);
        for (unsigned i = 0; i < count && i < max; i++) {
            lengths[i] = load_be64(chunk.payload + 8 + 16 * i);
            uint64_t status = load_be64(chunk.payload + 16 + 16 * i);
            cr_assert_eq(status >> 32, 0);
            flags[i] = (uint32_t)status;
        }
    } else {
        cr_assert_eq(chunk.type, NBD_REPLY_TYPE_BLOCK_STATUS);
        cr_assert_eq((chunk.length - 4) % 8, 0);
        count = (unsigned)((chunk.length - 4) / 8);
        for (unsigned i = 0; i < count && i < max; i++) {
            lengths[i] = load_be32(chunk.payload + 4 + 8 * i);
            flags[i] = load_be32(chunk.payload + 8 + 8 * i);
        }
    }
    cr_assert_gt(count, 0);
    cr_assert_leq(count, max);
    return count;
}

static void trim_then_block_status(bool extended)
{
    harness_go(&h, "disk", true, extended, true);
    uint8_t *data = pattern(0, 1 << 20, 0);
    write_sync(1, 0, 0, data, 1 << 20);
    free(data);
    harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 2, 0, 1 << 20, NULL);
    harness_wait(&h);
    uint64_t lengths[8];
    uint32_t flags[8];
    unsigned count = expect_block_status(2, lengths, flags, 8);
    cr_assert_eq(count, 1);
    cr_assert_eq(lengths[0], 1 << 20);
    cr_assert_eq(flags[0], 0);

    harness_request(&h, 0, NBD_CMD_TRIM, 3, 0, 512 << 10, NULL);
    harness_wait(&h);
    harness_expect_ok(&h, 3);
    harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 4, 0, 1 << 20, NULL);
    harness_wait(&h);
    count = expect_block_status(4, lengths, flags, 8);
    cr_assert_eq(count, 2);
    cr_assert_eq(lengths[0], 512 << 10);
    cr_assert_eq(flags[0], NBD_STATE_HOLE | NBD_STATE_ZERO);
    cr_assert_eq(lengths[1], 512 << 10);
    cr_assert_eq(flags[1], 0);

    /* REQ_ONE: exactly one extent, never longer than asked. */
    harness_request(&h, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 5, 0, 4096, NULL);
    harness_wait(&h);
    count = expect_block_status(5, lengths, flags, 8);
    cr_assert_eq(count, 1);
    cr_assert_eq(lengths[0], 4096);
    cr_assert_eq(flags[0], NBD_STATE_HOLE | NBD_STATE_ZERO);

    /* The trimmed range reads back as zeroes. */
    harness_request(&h, NBD_CMD_FLAG_DF, NBD_CMD_READ, 6, 0, 4096, NULL);
    harness_wait(&h);
    uint8_t out[4096];
    struct read_chunks chunks;
    expect_structured_read(6, 0, sizeof(out), out, &chunks);
    for (size_t i = 0; i < sizeof(out); i++)
        cr_assert_eq(out[i], 0);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, trim_then_block_status_32_bit) { trim_then_block_status(false); }
Test(nbd_transmission, trim_then_block_status_64_bit) { trim_then_block_status(true); }

Test(nbd_transmission, block_status_needs_a_selected_context)
{
    harness_go(&h, "disk", true, false, false);
    harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 1, 0, 4096, NULL);
    harness_expect_error(&h, 1, NBD_EINVAL);
}

Test(nbd_transmission, write_zeroes_flags)
{
    harness_go(&h, "disk", true, false, true);
    uint8_t *data = pattern(0, 1 << 20, 0x77);
    write_sync(1, 0, 0, data, 1 << 20);
    free(data);
    /* FAST_ZERO without NO_HOLE: punching a hole in a raw file is fast. */
    harness_request(&h, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 2, 0, 256 << 10, NULL);
    /* NO_HOLE | FUA: stays allocated. */
    harness_request(&h, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 3, 512 << 10,
                    256 << 10, NULL);
    harness_wait(&h);
    /* Two replies, in completion order. */
    bool seen[4] = {false};
    for (int i = 0; i < 2; i++) {
        const uint8_t *reply = harness_take(&h, NBD_SIMPLE_REPLY_SIZE);
        cr_assert_eq(load_be32(reply), NBD_SIMPLE_REPLY_MAGIC);
        cr_assert_eq(load_be32(reply + 4), 0);
        uint64_t cookie = load_be64(reply + 8);
        cr_assert(cookie == 2 || cookie == 3);
        cr_assert_not(seen[cookie]);
        seen[cookie] = true;
    }
    uint8_t *file = malloc(1 << 20);
    read_disk_file(0, file, 1 << 20);
    for (size_t i = 0; i < (1 << 20); i++) {
        bool zeroed = i < (256 << 10) || (i >= (512 << 10) && i < (768 << 10));
        if (zeroed)
            cr_assert_eq(file[i], 0, "byte %zu", i);
        else
            cr_assert_eq(file[i], (uint8_t)(session_pattern_byte(i) ^ 0x77), "byte %zu", i);
    }
    free(file);
    harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 4, 0, 1 << 20, NULL);
    harness_wait(&h);
    uint64_t lengths[8];
    uint32_t flags[8];
    unsigned count = expect_block_status(4, lengths, flags, 8);
    cr_assert_geq(count, 2);
    cr_assert_eq(lengths[0], 256 << 10);
    cr_assert(flags[0] & NBD_STATE_ZERO);
}

Test(nbd_transmission, fast_zero_refused_when_the_disk_cannot)
{
    /* Take FAST_ZERO away from the disk: the flag is still advertised, the request fails fast. */
    h.world.table->exports[0]->bdev->caps &= ~BDEV_CAP_FAST_ZERO;
    uint16_t flags = harness_go(&h, "disk", false, false, false);
    cr_assert(flags & NBD_FLAG_SEND_FAST_ZERO);
    harness_request(&h, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 8, 0, 4096, NULL);
    harness_wait(&h);
    harness_expect_simple(&h, 8, NBD_ENOTSUP);
    /* Without the flag the same request succeeds. */
    harness_request(&h, 0, NBD_CMD_WRITE_ZEROES, 9, 0, 4096, NULL);
    harness_wait(&h);
    harness_expect_simple(&h, 9, 0);
}

Test(nbd_transmission, cache_and_empty_requests_succeed)
{
    harness_go(&h, "disk", true, false, false);
    harness_request(&h, 0, NBD_CMD_CACHE, 1, 0, 1 << 20, NULL);
    harness_expect_ok(&h, 1);
    harness_request(&h, 0, NBD_CMD_READ, 2, 4096, 0, NULL);
    struct harness_chunk chunk;
    harness_chunk(&h, &chunk);
    cr_assert_eq(chunk.type, NBD_REPLY_TYPE_NONE, "structured READ replies are never simple");
    cr_assert_eq(chunk.flags, NBD_REPLY_FLAG_DONE);
    cr_assert_eq(chunk.cookie, 2);
    cr_assert_eq(nbd_session_inflight(h.session), 0);
}

Test(nbd_transmission, extended_headers_64_bit_requests)
{
    uint16_t flags = harness_go(&h, "big", true, true, true);
    cr_assert_not(flags & NBD_FLAG_READ_ONLY);
    uint8_t *data = pattern(0, 8192, 0x33);
    uint64_t far = 6ull << 30; /* beyond 32 bits */
    write_sync(1, NBD_CMD_FLAG_FUA, far, data, 8192);
    harness_request(&h, 0, NBD_CMD_READ, 2, far, 8192, NULL);
    harness_wait(&h);
    uint8_t out[8192];
    struct read_chunks chunks;
    expect_structured_read(2, far, sizeof(out), out, &chunks);
    cr_assert(memcmp(out, data, sizeof(out)) == 0);
    free(data);

    /* One request covering more than 4 GiB: zero 5 GiB, then ask for its status. */
    uint64_t huge = 5ull << 30;
    harness_request(&h, 0, NBD_CMD_WRITE_ZEROES, 3, 0, huge, NULL);
    harness_wait(&h);
    harness_expect_ok(&h, 3);
    harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 4, 0, huge + 4096, NULL);
    harness_wait(&h);
    uint64_t lengths[8];
    uint32_t status[8];
    unsigned count = expect_block_status(4, lengths, status, 8);
    cr_assert_geq(count, 1);
    cr_assert_gt(lengths[0], 1ull << 32, "a 64-bit extent length");
    cr_assert(status[0] & NBD_STATE_ZERO);

    /* A WRITE without PAYLOAD_LEN is invalid with extended headers. */
    harness_request(&h, 0, NBD_CMD_WRITE, 5, 0, 4096, NULL);
    harness_expect_error(&h, 5, NBD_EINVAL);
    /* A payload on a command that takes none: consumed, then refused. */
    uint8_t junk[64] = {0};
    harness_request(&h, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_FLUSH, 6, 0, sizeof(junk), junk);
    harness_expect_error(&h, 6, NBD_EINVAL);
    harness_request(&h, 0, NBD_CMD_FLUSH, 7, 0, 0, NULL);
    harness_wait(&h);
    harness_expect_ok(&h, 7);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, extended_oversized_payload_closes)
{
    harness_go(&h, "disk", true, true, false);
    uint8_t header[NBD_EXTENDED_REQUEST_SIZE];
    struct nbd_request_header request = {
        .flags = NBD_CMD_FLAG_PAYLOAD_LEN, .type = NBD_CMD_WRITE, .cookie = 1, .length = 64u << 20,
    };
    nbd_request_encode(header, true, &request);
    nbd_session_input(h.session, header, sizeof(header));
    cr_assert_eq(nbd_session_status(h.session), SESSION_CLOSED);
}

Test(nbd_transmission, read_only_export_refuses_writes_with_eperm)
{
    harness_go(&h, "ro", false, false, false);
    uint8_t data[4096] = {1};
    harness_request(&h, 0, NBD_CMD_WRITE, 1, 0, sizeof(data), data);
    harness_expect_simple(&h, 1, NBD_EPERM);
    harness_request(&h, 0, NBD_CMD_TRIM, 2, 0, 4096, NULL);
    harness_expect_simple(&h, 2, NBD_EPERM);
    harness_request(&h, 0, NBD_CMD_WRITE_ZEROES, 3, 0, 4096, NULL);
    harness_expect_simple(&h, 3, NBD_EPERM);
    /* The payload was consumed: the stream is still in step. */
    harness_request(&h, 0, NBD_CMD_READ, 4, 0, 16, NULL);
    harness_wait(&h);
    const uint8_t *out = expect_simple_data(4, 16);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(out[i], session_pattern_byte(i));
}

Test(nbd_transmission, out_of_range_errors)
{
    harness_go(&h, "disk", false, false, false);
    uint64_t end = HARNESS_DISK_SIZE;
    uint8_t data[8192] = {0};
    harness_request(&h, 0, NBD_CMD_READ, 1, end - 4096, 8192, NULL);
    harness_expect_simple(&h, 1, NBD_EINVAL);
    harness_request(&h, 0, NBD_CMD_WRITE, 2, end - 4096, 8192, data);
    harness_expect_simple(&h, 2, NBD_ENOSPC);
    harness_request(&h, 0, NBD_CMD_WRITE_ZEROES, 3, end, 1, NULL);
    harness_expect_simple(&h, 3, NBD_ENOSPC);
    harness_request(&h, 0, NBD_CMD_TRIM, 4, end + 1, 0, NULL);
    harness_expect_simple(&h, 4, NBD_EINVAL);
    harness_request(&h, 0, NBD_CMD_CACHE, 5, UINT64_MAX - 10, 4096, NULL);
    harness_expect_simple(&h, 5, NBD_EINVAL);
    /* A read ending exactly at the end is fine. */
    harness_request(&h, 0, NBD_CMD_READ, 6, end - 512, 512, NULL);
    harness_wait(&h);
    expect_simple_data(6, 512);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, unknown_commands_and_flags_are_invalid)
{
    harness_go(&h, "disk", true, false, false);
    harness_request(&h, 0, 42, 1, 0, 0, NULL);
    harness_expect_error(&h, 1, NBD_EINVAL);
    harness_request(&h, 1u << 9, NBD_CMD_FLUSH, 2, 0, 0, NULL);
    harness_expect_error(&h, 2, NBD_EINVAL);
    harness_request(&h, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_READ, 3, 0, 512, NULL);
    harness_expect_error(&h, 3, NBD_EINVAL);
    harness_request(&h, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_TRIM, 4, 0, 512, NULL);
    harness_expect_error(&h, 4, NBD_EINVAL);
    /* PAYLOAD_LEN without extended headers; the WRITE payload is still consumed. */
    uint8_t data[512] = {0};
    harness_request(&h, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_WRITE, 5, 0, sizeof(data), data);
    harness_expect_error(&h, 5, NBD_EINVAL);
    /* FUA is accepted on any command. */
    harness_request(&h, NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, 6, 0, 0, NULL);
    harness_wait(&h);
    harness_expect_ok(&h, 6);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, oversized_lengths)
{
    harness_go(&h, "big", false, false, false);
    /* A compact WRITE above the maximum payload: read and dropped, then refused. */
    size_t length = 40u << 20;
    uint8_t *junk = calloc(1, length);
    harness_request(&h, 0, NBD_CMD_WRITE, 1, 0, length, NULL);
    for (size_t done = 0; done < length; done += 16384)
        harness_feed(&h, junk + done, 16384);
    harness_expect_simple(&h, 1, NBD_EINVAL);
    free(junk);
    /* A simple READ above the maximum payload. */
    harness_request(&h, 0, NBD_CMD_READ, 2, 0, 33u << 20, NULL);
    harness_expect_simple(&h, 2, NBD_EINVAL);
    /* An absurd WRITE length: hang up rather than read a gigabyte. */
    harness_request(&h, 0, NBD_CMD_WRITE, 3, 0, 1u << 30, NULL);
    cr_assert_eq(nbd_session_status(h.session), SESSION_CLOSED);
}

Test(nbd_transmission, structured_read_above_maximum_is_overflow)
{
    harness_go(&h, "big", true, false, false);
    harness_request(&h, 0, NBD_CMD_READ, 2, 0, 33u << 20, NULL);
    harness_expect_error(&h, 2, NBD_EOVERFLOW);
}

Test(nbd_transmission, bad_request_magic_closes)
{
    harness_go(&h, "disk", false, false, false);
    uint8_t header[NBD_REQUEST_SIZE] = {0x12, 0x56, 0x09, 0x53};
    nbd_session_input(h.session, header, sizeof(header));
    cr_assert_eq(nbd_session_status(h.session), SESSION_CLOSED);
    cr_assert_not(nbd_session_wants_input(h.session));
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_transmission, pipelined_requests_in_one_chunk)
{
    harness_go(&h, "ro", false, false, false);
    enum { COUNT = 40 };
    uint8_t bytes[COUNT * NBD_REQUEST_SIZE];
    for (int i = 0; i < COUNT; i++) {
        struct nbd_request_header request = {
            .type = NBD_CMD_READ, .cookie = 1000 + i, .offset = 4096u * i, .length = 4096,
        };
        nbd_request_encode(bytes + i * NBD_REQUEST_SIZE, false, &request);
    }
    harness_feed(&h, bytes, sizeof(bytes));
    cr_assert_eq(nbd_session_inflight(h.session), COUNT);
    harness_wait(&h);
    bool seen[COUNT] = {false};
    for (int i = 0; i < COUNT; i++) {
        const uint8_t *reply = harness_take(&h, NBD_SIMPLE_REPLY_SIZE);
        cr_assert_eq(load_be32(reply), NBD_SIMPLE_REPLY_MAGIC);
        cr_assert_eq(load_be32(reply + 4), 0);
        uint64_t index = load_be64(reply + 8) - 1000;
        cr_assert_lt(index, COUNT);
        cr_assert_not(seen[index], "one reply per cookie");
        seen[index] = true;
        const uint8_t *data = harness_take(&h, 4096);
        for (int j = 0; j < 4096; j += 511)
            cr_assert_eq(data[j], session_pattern_byte(4096 * index + j));
    }
    cr_assert_eq(harness_output_left(&h), 0);
    cr_assert_eq(nbd_session_inflight(h.session), 0);
}

Test(nbd_transmission, write_payload_read_directly_into_the_session_buffer)
{
    harness_go(&h, "disk", false, false, false);
    uint8_t header[NBD_REQUEST_SIZE];
    struct nbd_request_header request = {.type = NBD_CMD_WRITE, .cookie = 4, .offset = 8192, .length = 65536};
    nbd_request_encode(header, false, &request);
    uint8_t *data = pattern(8192, 65536, 0x42);
    /* Header plus the first 100 payload bytes arrive together. */
    uint8_t first[NBD_REQUEST_SIZE + 100];
    memcpy(first, header, sizeof(header));
    memcpy(first + sizeof(header), data, 100);
    harness_feed(&h, first, sizeof(first));
    struct iovec target;
    cr_assert(nbd_session_payload(h.session, &target));
    cr_assert_eq(target.iov_len, 65536 - 100);
    /* The server reads the rest in two goes, straight into the target. */
    memcpy(target.iov_base, data + 100, 30000);
    nbd_session_payload_done(h.session, 30000);
    cr_assert(nbd_session_payload(h.session, &target));
    cr_assert_eq(target.iov_len, 65536 - 30100);
    memcpy(target.iov_base, data + 30100, target.iov_len);
    nbd_session_payload_done(h.session, target.iov_len);
    cr_assert_not(nbd_session_payload(h.session, &target));
    harness_wait(&h);
    harness_expect_simple(&h, 4, 0);
    uint8_t *file = malloc(65536);
    read_disk_file(8192, file, 65536);
    cr_assert(memcmp(file, data, 65536) == 0);
    free(file);
    free(data);
}

Test(nbd_transmission, disc_finishes_in_flight_then_drains)
{
    harness_go(&h, "ro", false, false, false);
    harness_request(&h, 0, NBD_CMD_READ, 1, 0, 4096, NULL);
    harness_request(&h, 0, NBD_CMD_DISC, 2, 0, 0, NULL);
    cr_assert_eq(nbd_session_status(h.session), SESSION_DRAINING);
    cr_assert_not(nbd_session_wants_input(h.session));
    cr_assert_eq(nbd_session_inflight(h.session), 1);
    harness_wait(&h);
    expect_simple_data(1, 4096);
    cr_assert_eq(nbd_session_inflight(h.session), 0);
    cr_assert_eq(harness_output_left(&h), 0, "DISC has no reply");
}

Test(nbd_transmission, shutdown_and_input_closed_drain)
{
    harness_go(&h, "disk", false, false, false);
    /* A WRITE whose payload never arrives is dropped, not left in flight. */
    harness_request(&h, 0, NBD_CMD_READ, 1, 0, 4096, NULL);
    uint8_t header[NBD_REQUEST_SIZE];
    struct nbd_request_header request = {.type = NBD_CMD_WRITE, .cookie = 2, .length = 4096};
    nbd_request_encode(header, false, &request);
    harness_feed(&h, header, sizeof(header));
    cr_assert_eq(nbd_session_inflight(h.session), 2);
    nbd_session_input_closed(h.session);
    cr_assert_eq(nbd_session_status(h.session), SESSION_DRAINING);
    cr_assert_eq(nbd_session_inflight(h.session), 1);
    nbd_session_shutdown(h.session);
    harness_wait(&h);
    expect_simple_data(1, 4096);
    cr_assert_eq(nbd_session_inflight(h.session), 0);
    cr_assert_eq(nbd_session_status(h.session), SESSION_DRAINING);
}

Test(nbd_transmission, free_with_requests_in_flight)
{
    harness_go(&h, "disk", true, false, true);
    uint8_t *data = pattern(0, 65536, 0);
    for (int i = 0; i < 8; i++) {
        harness_request(&h, 0, NBD_CMD_WRITE, 10 + i, 65536u * i, 65536, data);
        harness_request(&h, 0, NBD_CMD_READ, 20 + i, 65536u * i, 65536, NULL);
        harness_request(&h, 0, NBD_CMD_BLOCK_STATUS, 30 + i, 0, 1 << 20, NULL);
    }
    harness_request(&h, 0, NBD_CMD_READ, 40, 0, 1 << 20, NULL); /* sparse read path */
    cr_assert_eq(nbd_session_inflight(h.session), 25);
    size_t queued = send_queue_length(h.world.out);
    unsigned wakes = h.world.wakes;
    nbd_session_free(h.session);
    h.session = NULL;
    harness_wait(&h); /* completions land in the detached session (ASan watches) */
    cr_assert_eq(send_queue_length(h.world.out), queued, "nothing queued after free");
    cr_assert_eq(h.world.wakes, wakes, "no wake after free");
    free(data);
}

Test(nbd_transmission, sparse_read_in_flight_when_freed)
{
    harness_go(&h, "disk", true, false, false);
    prepare_sparse_region();
    harness_request(&h, 0, NBD_CMD_READ, 1, 0, 256 << 10, NULL);
    /* Let the block-status step finish so the data reads are in flight. */
    ev_run(h.world.loop, EVRUN_ONCE);
    nbd_session_free(h.session);
    h.session = NULL;
    harness_wait(&h);
}

static struct harness small;

static void small_setup(void) { harness_init(&small, 2); }
static void small_teardown(void) { harness_fini(&small); }

Test(nbd_backpressure, reading_pauses_at_max_inflight, .init = small_setup, .fini = small_teardown)
{
    harness_go(&small, "ro", false, false, false);
    enum { COUNT = 5 };
    uint8_t bytes[COUNT * NBD_REQUEST_SIZE];
    for (int i = 0; i < COUNT; i++) {
        struct nbd_request_header request = {
            .type = NBD_CMD_READ, .cookie = i, .offset = 512u * i, .length = 512,
        };
        nbd_request_encode(bytes + i * NBD_REQUEST_SIZE, false, &request);
    }
    size_t used = nbd_session_input(small.session, bytes, sizeof(bytes));
    cr_assert_eq(used, 2 * NBD_REQUEST_SIZE, "stops after max_inflight requests");
    cr_assert_not(nbd_session_wants_input(small.session));
    cr_assert_eq(nbd_session_inflight(small.session), 2);
    cr_assert_eq(nbd_session_status(small.session), SESSION_ACTIVE);
    unsigned wakes = small.world.wakes;
    aio_context_drain(small.world.ctx);
    cr_assert_gt(small.world.wakes, wakes, "completions wake the server");
    cr_assert(nbd_session_wants_input(small.session));
    size_t offered = used;
    while (offered < sizeof(bytes)) {
        size_t n = nbd_session_input(small.session, bytes + offered, sizeof(bytes) - offered);
        cr_assert_gt(n, 0);
        offered += n;
        aio_context_drain(small.world.ctx);
    }
    bool seen[COUNT] = {false};
    for (int i = 0; i < COUNT; i++) {
        const uint8_t *reply = harness_take(&small, NBD_SIMPLE_REPLY_SIZE);
        uint64_t cookie = load_be64(reply + 8);
        cr_assert_lt(cookie, COUNT);
        cr_assert_not(seen[cookie]);
        seen[cookie] = true;
        harness_take(&small, 512);
    }
    cr_assert_eq(harness_output_left(&small), 0);
}

/*
 * Writes hold their range in the export's writers: while an iSCSI COMPARE
 * AND WRITE holds it exclusively (here, a guard taken directly), an
 * overlapping WRITE and WRITE_ZEROES wait, a WRITE elsewhere does not.
 */
static void exclusive_started(void *opaque) { ++*(int *)opaque; }

Test(nbd_transmission, writes_wait_for_an_exclusive_holder)
{
    harness_go(&h, "disk", false, false, false);
    struct export *export = export_table_find(h.world.table, "disk");
    int started = 0;
    struct write_guard exclusive = {0};
    write_guard_enter(&exclusive, &export->writers, h.world.ctx, 64 << 10, 64 << 10, true, exclusive_started,
                      &started);
    cr_assert_eq(started, 1);
    uint8_t *data = pattern(0, 4096, 0x42);
    harness_request(&h, 0, NBD_CMD_WRITE, 1, (64 << 10) + 4096, 4096, data);
    harness_request(&h, 0, NBD_CMD_WRITE_ZEROES, 2, 120 << 10, 16 << 10, NULL);
    harness_request(&h, 0, NBD_CMD_WRITE, 3, 1 << 20, 4096, data);
    /* The loop runs (up to 2 s) until the write elsewhere is answered; the others must not be. */
    for (int i = 0; i < 2000 && harness_output_left(&h) < NBD_SIMPLE_REPLY_SIZE; i++) {
        ev_run(h.world.loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    for (int i = 0; i < 50; i++)
        ev_run(h.world.loop, EVRUN_NOWAIT);
    harness_expect_simple(&h, 3, 0); /* outside the held range: done */
    cr_assert_eq(harness_output_left(&h), 0, "the overlapping writes wait");
    write_guard_leave(&exclusive);
    harness_wait(&h);
    const uint8_t *reply = harness_take(&h, NBD_SIMPLE_REPLY_SIZE);
    uint64_t first = load_be64(reply + 8);
    reply = harness_take(&h, NBD_SIMPLE_REPLY_SIZE);
    uint64_t second = load_be64(reply + 8);
    cr_assert((first == 1 && second == 2) || (first == 2 && second == 1), "both ran once it was released");
    free(data);
}
