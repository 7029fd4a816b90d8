/*
 * nbd_extended_client: a tiny NBD client that checks a server's extended
 * headers (64-bit requests and replies), because Debian 12's libnbd (1.14)
 * cannot negotiate them.
 *
 * Usage: nbd_extended_client HOST PORT EXPORT
 *
 * It negotiates STRUCTURED_REPLY, EXTENDED_HEADERS and base:allocation,
 * enters transmission with NBD_OPT_GO, then writes a pattern, reads it
 * back, zeroes and trims, checks 64-bit block status, and (when the export
 * is larger than 4 GiB) sends requests whose length does not fit in 32
 * bits.  It prints each check and exits non-zero on the first mismatch.
 * The protocol constants are written out here, independently of the
 * server's own headers, so a wrong constant there cannot hide.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBDMAGIC 0x4e42444d41474943ull
#define IHAVEOPT 0x49484156454f5054ull
#define OPTION_REPLY_MAGIC 0x3e889045565a9ull
#define EXTENDED_REQUEST_MAGIC 0x21e41c71u
#define EXTENDED_REPLY_MAGIC 0x6e8a278cu

#define OPT_GO 7u
#define OPT_STRUCTURED_REPLY 8u
#define OPT_SET_META_CONTEXT 10u
#define OPT_EXTENDED_HEADERS 11u
#define REP_ACK 1u
#define REP_INFO 3u
#define REP_META_CONTEXT 4u
#define INFO_EXPORT 0u
#define INFO_BLOCK_SIZE 3u

#define FLAG_HAS_FLAGS (1u << 0)
#define FLAG_READ_ONLY (1u << 1)
#define FLAG_SEND_TRIM (1u << 5)
#define FLAG_SEND_WRITE_ZEROES (1u << 6)

#define CMD_READ 0u
#define CMD_WRITE 1u
#define CMD_DISC 2u
#define CMD_FLUSH 3u
#define CMD_TRIM 4u
#define CMD_WRITE_ZEROES 6u
#define CMD_BLOCK_STATUS 7u
#define CMD_FLAG_FUA (1u << 0)
#define CMD_FLAG_PAYLOAD_LEN (1u << 5)

#define REPLY_FLAG_DONE 1u
#define REPLY_TYPE_NONE 0u
#define REPLY_TYPE_OFFSET_DATA 1u
#define REPLY_TYPE_OFFSET_HOLE 2u
#define REPLY_TYPE_BLOCK_STATUS_EXT 6u
#define REPLY_TYPE_ERROR_BIT 0x8000u
#define STATE_HOLE 1u
#define STATE_ZERO 2u

static int sock = -1;
static unsigned checks;

static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static void passed(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    printf("ok %u - ", ++checks);
    vprintf(format, args);
    printf("\n");
    va_end(args);
    fflush(stdout);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t get32(const uint8_t *p) { return ((uint32_t)get16(p) << 16) | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }

static void send_all(const void *data, size_t length)
{
    const uint8_t *p = data;
    while (length > 0) {
        ssize_t n = send(sock, p, length, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("send: %s", n < 0 ? strerror(errno) : "connection closed");
        p += n;
        length -= (size_t)n;
    }
}

static void recv_all(void *data, size_t length)
{
    uint8_t *p = data;
    while (length > 0) {
        ssize_t n = recv(sock, p, length, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("recv: %s", n < 0 ? strerror(errno) : "server closed the connection");
        p += n;
        length -= (size_t)n;
    }
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        fail("out of memory");
    return p;
}

static void connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *addresses;
    int rc = getaddrinfo(host, port, &hints, &addresses);
    if (rc != 0)
        fail("%s:%s: %s", host, port, gai_strerror(rc));
    for (struct addrinfo *a = addresses; a; a = a->ai_next) {
        sock = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (sock >= 0 && connect(sock, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (sock >= 0)
            close(sock);
        sock = -1;
    }
    freeaddrinfo(addresses);
    if (sock < 0)
        fail("cannot connect to %s:%s", host, port);
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- handshake ---- */

static void send_option(uint32_t option, const void *data, uint32_t length)
{
    uint8_t header[16];
    put64(header, IHAVEOPT);
    put32(header + 8, option);
    put32(header + 12, length);
    send_all(header, sizeof(header));
    if (length)
        send_all(data, length);
}

/* Returns the reply type; *data is malloc'd (caller frees). */
static uint32_t option_reply(uint32_t option, uint8_t **data, uint32_t *length)
{
    uint8_t header[20];
    recv_all(header, sizeof(header));
    if (get64(header) != OPTION_REPLY_MAGIC)
        fail("option reply magic 0x%llx", (unsigned long long)get64(header));
    if (get32(header + 8) != option)
        fail("reply to option %u while waiting for %u", get32(header + 8), option);
    *length = get32(header + 16);
    if (*length > (1u << 20))
        fail("option reply of %u bytes", *length);
    *data = xmalloc(*length);
    recv_all(*data, *length);
    return get32(header + 12);
}

static void expect_ack(uint32_t option, const char *what)
{
    uint8_t *data;
    uint32_t length;
    uint32_t type = option_reply(option, &data, &length);
    if (type != REP_ACK)
        fail("%s: reply 0x%x (%.*s), expected ACK", what, type, (int)length, (char *)data);
    free(data);
    passed("%s acknowledged", what);
}

struct export_info {
    uint64_t size;
    uint16_t flags;
    uint32_t block_minimum, block_preferred, block_maximum;
    uint32_t context_id;
};

static void handshake(const char *name, struct export_info *info)
{
    uint8_t greeting[18];
    recv_all(greeting, sizeof(greeting));
    if (get64(greeting) != NBDMAGIC || get64(greeting + 8) != IHAVEOPT)
        fail("not a newstyle NBD server");
    uint16_t handshake_flags = get16(greeting + 16);
    if (!(handshake_flags & 1))
        fail("server does not do fixed newstyle");
    uint8_t client_flags[4];
    put32(client_flags, 1u | (handshake_flags & 2u)); /* FIXED_NEWSTYLE, NO_ZEROES if offered */
    send_all(client_flags, sizeof(client_flags));
    passed("greeting: fixed newstyle, handshake flags 0x%x", handshake_flags);

    send_option(OPT_STRUCTURED_REPLY, NULL, 0);
    expect_ack(OPT_STRUCTURED_REPLY, "NBD_OPT_STRUCTURED_REPLY");
    send_option(OPT_EXTENDED_HEADERS, NULL, 0);
    expect_ack(OPT_EXTENDED_HEADERS, "NBD_OPT_EXTENDED_HEADERS");

    size_t name_length = strlen(name);
    const char *query = "base:allocation";
    size_t query_length = strlen(query);
    uint8_t *data = xmalloc(12 + name_length + query_length);
    put32(data, (uint32_t)name_length);
    memcpy(data + 4, name, name_length);
    put32(data + 4 + name_length, 1);
    put32(data + 8 + name_length, (uint32_t)query_length);
    memcpy(data + 12 + name_length, query, query_length);
    send_option(OPT_SET_META_CONTEXT, data, (uint32_t)(12 + name_length + query_length));
    free(data);
    uint8_t *reply;
    uint32_t length;
    uint32_t type = option_reply(OPT_SET_META_CONTEXT, &reply, &length);
    if (type != REP_META_CONTEXT || length != 4 + query_length ||
        memcmp(reply + 4, query, query_length) != 0)
        fail("SET_META_CONTEXT: reply 0x%x, expected base:allocation", type);
    info->context_id = get32(reply);
    free(reply);
    expect_ack(OPT_SET_META_CONTEXT, "base:allocation selected");

    data = xmalloc(8 + name_length);
    put32(data, (uint32_t)name_length);
    memcpy(data + 4, name, name_length);
    put16(data + 4 + name_length, 1);
    put16(data + 6 + name_length, INFO_BLOCK_SIZE);
    send_option(OPT_GO, data, (uint32_t)(8 + name_length));
    free(data);
    bool have_export = false;
    for (;;) {
        type = option_reply(OPT_GO, &reply, &length);
        if (type == REP_ACK) {
            free(reply);
            break;
        }
        if (type != REP_INFO)
            fail("NBD_OPT_GO: reply 0x%x (%.*s)", type, (int)length, (char *)reply);
        if (length >= 2 && get16(reply) == INFO_EXPORT) {
            if (length != 12)
                fail("NBD_INFO_EXPORT of %u bytes", length);
            info->size = get64(reply + 2);
            info->flags = get16(reply + 10);
            have_export = true;
        } else if (length >= 2 && get16(reply) == INFO_BLOCK_SIZE) {
            if (length != 14)
                fail("NBD_INFO_BLOCK_SIZE of %u bytes", length);
            info->block_minimum = get32(reply + 2);
            info->block_preferred = get32(reply + 6);
            info->block_maximum = get32(reply + 10);
        }
        free(reply);
    }
    if (!have_export || !(info->flags & FLAG_HAS_FLAGS))
        fail("NBD_OPT_GO succeeded without a valid NBD_INFO_EXPORT");
    if (!info->block_maximum)
        info->block_maximum = 32u << 20;
    passed("NBD_OPT_GO '%s': size %llu, flags 0x%x, block sizes %u/%u/%u", name,
           (unsigned long long)info->size, info->flags, info->block_minimum,
           info->block_preferred, info->block_maximum);
}

/* ---- transmission ---- */

static void send_request(uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
                         uint64_t length, const void *payload)
{
    uint8_t header[32];
    put32(header, EXTENDED_REQUEST_MAGIC);
    put16(header + 4, flags);
    put16(header + 6, type);
    put64(header + 8, cookie);
    put64(header + 16, offset);
    put64(header + 24, length);
    send_all(header, sizeof(header));
    if (payload)
        send_all(payload, length);
}

struct chunk {
    uint16_t flags, type;
    uint64_t cookie, offset, length;
    uint8_t *payload;
};

static void read_chunk(struct chunk *chunk, uint64_t cookie, uint64_t offset)
{
    uint8_t header[32];
    recv_all(header, sizeof(header));
    if (get32(header) != EXTENDED_REPLY_MAGIC)
        fail("reply magic 0x%08x, expected the extended reply magic", get32(header));
    chunk->flags = get16(header + 4);
    chunk->type = get16(header + 6);
    chunk->cookie = get64(header + 8);
    chunk->offset = get64(header + 16);
    chunk->length = get64(header + 24);
    if (chunk->cookie != cookie)
        fail("reply cookie %llu, expected %llu", (unsigned long long)chunk->cookie,
             (unsigned long long)cookie);
    if (chunk->offset != offset)
        fail("reply offset %llu does not echo the request's %llu",
             (unsigned long long)chunk->offset, (unsigned long long)offset);
    if (chunk->length > (64u << 20))
        fail("reply payload of %llu bytes", (unsigned long long)chunk->length);
    chunk->payload = xmalloc(chunk->length);
    recv_all(chunk->payload, chunk->length);
    if (chunk->type & REPLY_TYPE_ERROR_BIT) {
        uint32_t error = chunk->length >= 4 ? get32(chunk->payload) : 0;
        fail("error reply 0x%x, error %u", chunk->type, error);
    }
}

/* A command without reply data: one final NONE chunk. */
static void expect_done(uint64_t cookie, uint64_t offset, const char *what)
{
    struct chunk chunk;
    read_chunk(&chunk, cookie, offset);
    if (chunk.type != REPLY_TYPE_NONE || !(chunk.flags & REPLY_FLAG_DONE) || chunk.length != 0)
        fail("%s: chunk type %u flags 0x%x length %llu, expected a final NONE", what, chunk.type,
             chunk.flags, (unsigned long long)chunk.length);
    free(chunk.payload);
    passed("%s", what);
}

static void read_range(uint64_t cookie, uint64_t offset, uint64_t length, uint8_t *out,
                       unsigned *holes)
{
    send_request(0, CMD_READ, cookie, offset, length, NULL);
    uint64_t covered = 0;
    *holes = 0;
    for (;;) {
        struct chunk chunk;
        read_chunk(&chunk, cookie, offset);
        if (chunk.type == REPLY_TYPE_OFFSET_DATA || chunk.type == REPLY_TYPE_OFFSET_HOLE) {
            uint64_t start = get64(chunk.payload);
            uint64_t size = chunk.type == REPLY_TYPE_OFFSET_DATA ? chunk.length - 8
                                                                 : get32(chunk.payload + 8);
            if (chunk.type == REPLY_TYPE_OFFSET_HOLE && chunk.length != 12)
                fail("OFFSET_HOLE chunk of %llu bytes", (unsigned long long)chunk.length);
            if (start < offset || size == 0 || start + size > offset + length)
                fail("content chunk [%llu, +%llu) outside the read", (unsigned long long)start,
                     (unsigned long long)size);
            if (chunk.type == REPLY_TYPE_OFFSET_DATA)
                memcpy(out + (start - offset), chunk.payload + 8, size);
            else {
                memset(out + (start - offset), 0, size);
                (*holes)++;
            }
            covered += size;
        } else if (chunk.type != REPLY_TYPE_NONE) {
            fail("unexpected chunk type %u in a READ reply", chunk.type);
        }
        bool done = chunk.flags & REPLY_FLAG_DONE;
        free(chunk.payload);
        if (done)
            break;
    }
    if (covered != length)
        fail("READ chunks cover %llu of %llu bytes", (unsigned long long)covered,
             (unsigned long long)length);
}

struct extent {
    uint64_t length;
    uint64_t status;
};

static uint32_t block_status(uint64_t cookie, uint64_t offset, uint64_t length, uint32_t context_id,
                             struct extent *extents, uint32_t max)
{
    send_request(0, CMD_BLOCK_STATUS, cookie, offset, length, NULL);
    struct chunk chunk;
    read_chunk(&chunk, cookie, offset);
    if (chunk.type != REPLY_TYPE_BLOCK_STATUS_EXT)
        fail("BLOCK_STATUS reply type %u, expected BLOCK_STATUS_EXT (6)", chunk.type);
    if (!(chunk.flags & REPLY_FLAG_DONE))
        fail("single-context BLOCK_STATUS reply not final");
    if (chunk.length < 8 + 16)
        fail("BLOCK_STATUS_EXT chunk of %llu bytes", (unsigned long long)chunk.length);
    if (get32(chunk.payload) != context_id)
        fail("BLOCK_STATUS context id %u, expected %u", get32(chunk.payload), context_id);
    uint32_t count = get32(chunk.payload + 4);
    if (count == 0 || chunk.length != 8 + 16ull * count)
        fail("descriptor count %u does not match the chunk length %llu", count,
             (unsigned long long)chunk.length);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t extent_length = get64(chunk.payload + 8 + 16 * i);
        uint64_t status = get64(chunk.payload + 16 + 16 * i);
        if (extent_length == 0)
            fail("zero-length extent");
        if (status >> 32)
            fail("base:allocation status with high bits set: 0x%llx", (unsigned long long)status);
        if (i + 1 < count && sum + extent_length >= length)
            fail("extents continue past the requested length");
        sum += extent_length;
        if (i < max)
            extents[i] = (struct extent){extent_length, status};
    }
    free(chunk.payload);
    return count < max ? count : max;
}

static uint8_t pattern_byte(uint64_t offset) { return (uint8_t)(offset * 31 + (offset >> 12) + 3); }

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT EXPORT\n", argv[0]);
        return 2;
    }
    connect_to(argv[1], argv[2]);
    struct export_info info = {0};
    handshake(argv[3], &info);
    if (info.flags & FLAG_READ_ONLY)
        fail("export '%s' is read-only; this check needs a writable export", argv[3]);

    uint64_t length = 1u << 20;
    if (length > info.block_maximum)
        length = info.block_maximum;
    if (info.size < 2 * length)
        fail("export too small (%llu bytes)", (unsigned long long)info.size);
    uint64_t cookie = 1;

    /* Write a pattern with a 64-bit header (PAYLOAD_LEN), read it back. */
    uint8_t *data = xmalloc(length), *back = xmalloc(length);
    for (uint64_t i = 0; i < length; i++)
        data[i] = pattern_byte(i);
    send_request(CMD_FLAG_PAYLOAD_LEN | CMD_FLAG_FUA, CMD_WRITE, cookie, 0, length, data);
    expect_done(cookie++, 0, "WRITE 1 MiB with FUA (extended request, PAYLOAD_LEN)");
    unsigned holes;
    read_range(cookie++, 0, length, back, &holes);
    if (memcmp(data, back, length) != 0)
        fail("READ back differs from what was written");
    passed("READ back matches (extended reply chunks echo the request offset)");

    /* Zero the first half: it must read back as zeroes and block status should say so. */
    if (info.flags & FLAG_SEND_WRITE_ZEROES) {
        send_request(0, CMD_WRITE_ZEROES, cookie, 0, length / 2, NULL);
        expect_done(cookie++, 0, "WRITE_ZEROES first half");
        read_range(cookie++, 0, length, back, &holes);
        for (uint64_t i = 0; i < length / 2; i++)
            if (back[i] != 0)
                fail("byte %llu not zero after WRITE_ZEROES", (unsigned long long)i);
        if (memcmp(back + length / 2, data + length / 2, length / 2) != 0)
            fail("WRITE_ZEROES touched the second half");
        passed("zeroed range reads as zeroes (%u OFFSET_HOLE chunks)", holes);
    }
    if (info.flags & FLAG_SEND_TRIM) {
        send_request(0, CMD_TRIM, cookie, length / 2, length / 4, NULL);
        expect_done(cookie++, length / 2, "TRIM");
    }
    struct extent extents[64];
    uint32_t count = block_status(cookie++, 0, length, info.context_id, extents, 64);
    passed("BLOCK_STATUS: %u 64-bit descriptors, first [%llu bytes, status 0x%llx]", count,
           (unsigned long long)extents[0].length, (unsigned long long)extents[0].status);
    if ((info.flags & FLAG_SEND_WRITE_ZEROES) && !(extents[0].status & STATE_ZERO))
        fail("the zeroed range is not reported as reading zeroes");

    /* Lengths that need 64 bits. */
    uint64_t big = (4ull << 30) + (1u << 20);
    if (info.size > big + (1u << 20)) {
        uint64_t start = info.size - big;
        start -= start % 4096;
        if (info.flags & FLAG_SEND_WRITE_ZEROES) {
            send_request(0, CMD_WRITE_ZEROES, cookie, start, big, NULL);
            expect_done(cookie++, start, "WRITE_ZEROES over 4 GiB + 1 MiB (64-bit length)");
        }
        count = block_status(cookie++, start, big, info.context_id, extents, 64);
        uint64_t sum = 0;
        for (uint32_t i = 0; i < count; i++)
            sum += extents[i].length;
        passed("BLOCK_STATUS over 4 GiB + 1 MiB: %u descriptors covering %llu bytes%s", count,
               (unsigned long long)sum, sum > 0xffffffffull ? " (more than 32 bits)" : "");
        if ((info.flags & FLAG_SEND_WRITE_ZEROES) && !(extents[0].status & STATE_ZERO))
            fail("the zeroed 4 GiB range is not reported as zeroes");
    } else {
        printf("skip - export of %llu bytes is too small for a request longer than 32 bits\n",
               (unsigned long long)info.size);
    }

    send_request(0, CMD_FLUSH, cookie, 0, 0, NULL);
    expect_done(cookie++, 0, "FLUSH");
    send_request(0, CMD_DISC, cookie++, 0, 0, NULL);
    close(sock);
    free(data);
    free(back);
    printf("all %u checks passed\n", checks);
    return 0;
}
