/*
 * libnbd_client: drives a running lunad through libnbd (the client library
 * qemu, nbdcopy and nbdinfo build on) and checks what the server answers.
 *
 * Usage: libnbd_client RW_URI RO_URI BACKING_FILE
 *   RW_URI        a writable export of at least 64 MiB, backed by a raw file
 *   RO_URI        a read-only export (its content is not changed)
 *   BACKING_FILE  the file behind RW_URI, read directly to check FUA writes
 *                 and the allocation NO_HOLE zeroing must leave
 *
 * Each check prints "ok: ..." or "FAIL: ..."; the exit status is the number
 * of failed checks (capped), so the calling script fails loudly.  The RW
 * export is split into fixed regions, one per check, so checks never see
 * each other's data.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024ull)

/* Regions of the RW export, one per check. */
#define MULTI_CONN_BASE (0 * MiB)      /* 4 handles x 4 MiB */
#define MULTI_CONN_SPAN (4 * MiB)
#define PIPELINE_BASE (16 * MiB)       /* 8 MiB */
#define HOLES_BASE (32 * MiB)          /* 2 MiB: 128 KiB data then a hole */
#define HOLES_DATA (128 * KiB)
#define HOLES_SPAN (2 * MiB)
#define TRIM_BASE (40 * MiB)           /* 1 MiB */
#define ZERO_BASE (42 * MiB)           /* 1 MiB */
#define ZERO_NO_HOLE_BASE (44 * MiB)   /* 1 MiB */
#define FAST_ZERO_BASE (46 * MiB)      /* 1 MiB */
#define FUA_BASE (48 * MiB)            /* 1 MiB */
#define MINIMUM_EXPORT_SIZE (64 * MiB)

#define HANDLES 4
#define PIPELINE_DEPTH 64
#define POLL_TIMEOUT_MS 30000

static const char *rw_uri;
static const char *ro_uri;
static const char *backing_file;
static int failures;

static void check_failed(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void check_failed(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("FAIL: ", stdout);
    vprintf(format, args);
    fputc('\n', stdout);
    va_end(args);
    fflush(stdout);
    failures++;
}

static void check_passed(const char *what)
{
    printf("ok: %s\n", what);
    fflush(stdout);
}

/* The 8-byte word at absolute export offset o holds a value derived from o
 * and a seed, so data written to (or read from) the wrong place, or by the
 * wrong writer, never compares equal. */
static uint64_t pattern_word(uint64_t offset, uint64_t seed)
{
    return (offset * 0x9E3779B97F4A7C15ull) ^ (seed * 0xC2B2AE3D27D4EB4Full) ^ 0x5555555555555555ull;
}

static void fill_pattern(void *buffer, size_t length, uint64_t offset, uint64_t seed)
{
    uint8_t *bytes = buffer;
    for (size_t i = 0; i < length; i += 8) {
        uint64_t word = pattern_word(offset + i, seed);
        memcpy(bytes + i, &word, length - i < 8 ? length - i : 8);
    }
}

/* Returns the index of the first byte that differs, or -1. */
static long long compare_pattern(const void *buffer, size_t length, uint64_t offset, uint64_t seed)
{
    const uint8_t *bytes = buffer;
    for (size_t i = 0; i < length; i += 8) {
        uint64_t word = pattern_word(offset + i, seed);
        size_t n = length - i < 8 ? length - i : 8;
        if (memcmp(bytes + i, &word, n) != 0)
            return (long long)i;
    }
    return -1;
}

static bool all_zero(const void *buffer, size_t length)
{
    const uint8_t *bytes = buffer;
    for (size_t i = 0; i < length; i++)
        if (bytes[i] != 0)
            return false;
    return true;
}

static void *checked_malloc(size_t length)
{
    void *p = malloc(length);
    if (!p) {
        fprintf(stderr, "libnbd_client: out of memory (%zu bytes)\n", length);
        exit(2);
    }
    return p;
}

static struct nbd_handle *connect_uri(const char *uri, bool strict)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        fprintf(stderr, "nbd_create: %s\n", nbd_get_error());
        return NULL;
    }
    if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        /* Without strict mode libnbd sends what its own checks would
         * refuse, so the server's answer is what we see. */
        (!strict && nbd_set_strict_mode(h, 0) == -1) ||
        nbd_connect_uri(h, uri) == -1) {
        fprintf(stderr, "connect %s: %s\n", uri, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* Run every handle's state machine until none has a command in flight. */
static int run_until_idle(struct nbd_handle **handles, int count)
{
    for (;;) {
        struct pollfd fds[HANDLES + 1];
        int active = 0;
        for (int i = 0; i < count; i++) {
            fds[i].fd = -1;
            fds[i].events = 0;
            fds[i].revents = 0;
            int in_flight = nbd_aio_in_flight(handles[i]);
            if (in_flight < 0) {
                fprintf(stderr, "nbd_aio_in_flight: %s\n", nbd_get_error());
                return -1;
            }
            if (in_flight == 0)
                continue;
            unsigned direction = nbd_aio_get_direction(handles[i]);
            fds[i].fd = nbd_aio_get_fd(handles[i]);
            if (direction & LIBNBD_AIO_DIRECTION_READ)
                fds[i].events |= POLLIN;
            if (direction & LIBNBD_AIO_DIRECTION_WRITE)
                fds[i].events |= POLLOUT;
            active++;
        }
        if (active == 0)
            return 0;
        int ready = poll(fds, count, POLL_TIMEOUT_MS);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return -1;
        }
        if (ready == 0) {
            fprintf(stderr, "no progress within %d ms: the server stopped answering\n", POLL_TIMEOUT_MS);
            return -1;
        }
        for (int i = 0; i < count; i++) {
            if (fds[i].fd < 0)
                continue;
            if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(handles[i]) == -1) {
                fprintf(stderr, "nbd_aio_notify_read: %s\n", nbd_get_error());
                return -1;
            }
            if ((fds[i].revents & POLLOUT) && nbd_aio_notify_write(handles[i]) == -1) {
                fprintf(stderr, "nbd_aio_notify_write: %s\n", nbd_get_error());
                return -1;
            }
        }
    }
}

/* One asynchronous request and what its completion reported. */
struct request {
    uint64_t offset;
    size_t length;
    uint64_t seed;
    bool is_write;
    void *buffer;
    int completions;     /* how many times the completion callback ran */
    int error;           /* errno the completion reported */
    int completion_rank; /* 0 = first to complete */
    int *completion_counter;
};

static int request_completed(void *user_data, int *error)
{
    struct request *request = user_data;
    request->completions++;
    request->error = *error;
    request->completion_rank = (*request->completion_counter)++;
    return 1; /* retire the command: we have what we need */
}

static int64_t submit_request(struct nbd_handle *h, struct request *request)
{
    nbd_completion_callback completion = {.callback = request_completed, .user_data = request};
    if (request->is_write)
        return nbd_aio_pwrite(h, request->buffer, request->length, request->offset, completion, 0);
    return nbd_aio_pread(h, request->buffer, request->length, request->offset, completion, 0);
}

/* Four connections write their own regions at once, one flushes, another
 * reads everything back: CAN_MULTI_CONN promises exactly this works. */
static void check_multi_conn(void)
{
    enum { CHUNK = 64 * KiB, PER_HANDLE = MULTI_CONN_SPAN / CHUNK };
    struct nbd_handle *handles[HANDLES] = {0};
    struct request *requests = calloc(HANDLES * PER_HANDLE, sizeof *requests);
    int completion_counter = 0;
    if (!requests) {
        check_failed("multi-conn: out of memory");
        return;
    }
    for (int i = 0; i < HANDLES; i++) {
        handles[i] = connect_uri(rw_uri, true);
        if (!handles[i]) {
            check_failed("multi-conn: connection %d failed", i);
            goto out;
        }
    }
    if (nbd_can_multi_conn(handles[0]) != 1) {
        check_failed("multi-conn: server does not advertise CAN_MULTI_CONN");
        goto out;
    }
    for (int i = 0; i < HANDLES; i++) {
        for (int j = 0; j < PER_HANDLE; j++) {
            struct request *request = &requests[i * PER_HANDLE + j];
            request->offset = MULTI_CONN_BASE + (uint64_t)i * MULTI_CONN_SPAN + (uint64_t)j * CHUNK;
            request->length = CHUNK;
            request->seed = 100 + i;
            request->is_write = true;
            request->buffer = checked_malloc(CHUNK);
            request->completion_counter = &completion_counter;
            fill_pattern(request->buffer, CHUNK, request->offset, request->seed);
            if (submit_request(handles[i], request) == -1) {
                check_failed("multi-conn: aio_pwrite: %s", nbd_get_error());
                goto out;
            }
        }
    }
    if (run_until_idle(handles, HANDLES) != 0) {
        check_failed("multi-conn: concurrent writes did not complete");
        goto out;
    }
    for (int k = 0; k < HANDLES * PER_HANDLE; k++) {
        if (requests[k].completions != 1 || requests[k].error != 0) {
            check_failed("multi-conn: write at %" PRIu64 " completed %d times, error %d",
                         requests[k].offset, requests[k].completions, requests[k].error);
            goto out;
        }
    }
    if (nbd_flush(handles[0], 0) == -1) {
        check_failed("multi-conn: flush: %s", nbd_get_error());
        goto out;
    }
    uint8_t *buffer = checked_malloc(MULTI_CONN_SPAN);
    for (int i = 0; i < HANDLES; i++) {
        uint64_t base = MULTI_CONN_BASE + (uint64_t)i * MULTI_CONN_SPAN;
        struct nbd_handle *reader = handles[(i + 1) % HANDLES];
        if (nbd_pread(reader, buffer, MULTI_CONN_SPAN, base, 0) == -1) {
            check_failed("multi-conn: read back: %s", nbd_get_error());
            free(buffer);
            goto out;
        }
        long long bad = compare_pattern(buffer, MULTI_CONN_SPAN, base, 100 + i);
        if (bad >= 0) {
            check_failed("multi-conn: region of handle %d differs at offset %" PRIu64
                         " when read from handle %d", i, base + (uint64_t)bad, (i + 1) % HANDLES);
            free(buffer);
            goto out;
        }
    }
    free(buffer);
    check_passed("multi-conn: 4 handles x 64 concurrent 64 KiB writes, flush on one, read back on another");
out:
    for (int k = 0; k < HANDLES * PER_HANDLE; k++)
        free(requests[k].buffer);
    free(requests);
    for (int i = 0; i < HANDLES; i++)
        if (handles[i])
            nbd_close(handles[i]);
}

/* 64 requests of very different sizes in flight on one connection: the
 * server may answer in any order, and each reply must carry the data of the
 * request whose cookie it echoes. */
static void check_pipelining(void)
{
    struct request requests[PIPELINE_DEPTH] = {0};
    int completion_counter = 0;
    struct nbd_handle *h = connect_uri(rw_uri, true);
    if (!h) {
        check_failed("pipelining: connect failed");
        return;
    }
    /* Seed the region with data whose pattern the reads can check. */
    uint8_t *seed_data = checked_malloc(8 * MiB);
    fill_pattern(seed_data, 8 * MiB, PIPELINE_BASE, 7);
    if (nbd_pwrite(h, seed_data, 8 * MiB, PIPELINE_BASE, 0) == -1) {
        check_failed("pipelining: seeding write: %s", nbd_get_error());
        free(seed_data);
        nbd_close(h);
        return;
    }
    free(seed_data);

    /* Even slots: reads of the seeded first 4 MiB, alternating 1 MiB and
     * 4 KiB so a fast server finishes small ones first.  Odd slots: writes
     * to the second 4 MiB, each to its own 64 KiB slice. */
    uint64_t read_offset = PIPELINE_BASE;
    for (int i = 0; i < PIPELINE_DEPTH; i++) {
        struct request *request = &requests[i];
        request->completion_counter = &completion_counter;
        if (i % 2 == 0) {
            request->length = (i % 4 == 0) ? 1 * MiB : 4 * KiB;
            if (read_offset + request->length > PIPELINE_BASE + 4 * MiB)
                read_offset = PIPELINE_BASE;
            request->offset = read_offset;
            read_offset += request->length + 4 * KiB;
            request->seed = 7;
        } else {
            request->is_write = true;
            request->length = 64 * KiB;
            request->offset = PIPELINE_BASE + 4 * MiB + (uint64_t)(i / 2) * 64 * KiB;
            request->seed = 1000 + i;
        }
        request->buffer = checked_malloc(request->length);
        if (request->is_write)
            fill_pattern(request->buffer, request->length, request->offset, request->seed);
        else
            memset(request->buffer, 0xee, request->length);
    }
    for (int i = 0; i < PIPELINE_DEPTH; i++) {
        if (submit_request(h, &requests[i]) == -1) {
            check_failed("pipelining: submit %d: %s", i, nbd_get_error());
            goto out;
        }
    }
    int in_flight = nbd_aio_in_flight(h);
    if (in_flight != PIPELINE_DEPTH) {
        check_failed("pipelining: expected %d requests in flight, libnbd reports %d", PIPELINE_DEPTH, in_flight);
        goto out;
    }
    if (run_until_idle(&h, 1) != 0) {
        check_failed("pipelining: requests did not complete");
        goto out;
    }
    int out_of_order = 0;
    for (int i = 0; i < PIPELINE_DEPTH; i++) {
        struct request *request = &requests[i];
        if (request->completions != 1 || request->error != 0) {
            check_failed("pipelining: request %d completed %d times with error %d", i,
                         request->completions, request->error);
            goto out;
        }
        if (request->completion_rank != i)
            out_of_order++;
        if (!request->is_write) {
            long long bad = compare_pattern(request->buffer, request->length, request->offset, request->seed);
            if (bad >= 0) {
                check_failed("pipelining: read %d (offset %" PRIu64 ", %zu bytes) got wrong data at +%lld",
                             i, request->offset, request->length, bad);
                goto out;
            }
        }
    }
    uint8_t *buffer = checked_malloc(4 * MiB);
    if (nbd_pread(h, buffer, 4 * MiB, PIPELINE_BASE + 4 * MiB, 0) == -1) {
        check_failed("pipelining: read back: %s", nbd_get_error());
        free(buffer);
        goto out;
    }
    for (int i = 1; i < PIPELINE_DEPTH; i += 2) {
        uint64_t relative = requests[i].offset - (PIPELINE_BASE + 4 * MiB);
        if (compare_pattern(buffer + relative, requests[i].length, requests[i].offset, requests[i].seed) >= 0) {
            check_failed("pipelining: write %d (offset %" PRIu64 ") not found on read-back", i, requests[i].offset);
            free(buffer);
            goto out;
        }
    }
    free(buffer);
    printf("ok: pipelining: %d requests in flight, all answered with the right data (%d completed out of issue order)\n",
           PIPELINE_DEPTH, out_of_order);
out:
    for (int i = 0; i < PIPELINE_DEPTH; i++)
        free(requests[i].buffer);
    nbd_close(h);
}

/* A base:allocation map of [base, base+span) in 4 KiB units (ext4's
 * granularity), filled from as many BLOCK_STATUS replies as it takes. */
struct allocation_map {
    uint64_t base;
    uint64_t span;
    uint64_t covered_to;
    bool one_extent_only;
    unsigned extents_seen;
    uint32_t flags[HOLES_SPAN / (4 * KiB)];
    bool bad_context;
};

static int extent_received(void *user_data, const char *context, uint64_t offset, uint32_t *entries,
                           size_t nr_entries, int *error)
{
    struct allocation_map *map = user_data;
    (void)error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) {
        map->bad_context = true;
        return 0;
    }
    uint64_t position = offset;
    for (size_t i = 0; i + 1 < nr_entries; i += 2) {
        uint64_t length = entries[i];
        map->extents_seen++;
        for (uint64_t p = position; p < position + length && p < map->base + map->span; p += 4 * KiB)
            if (p >= map->base)
                map->flags[(p - map->base) / (4 * KiB)] = entries[i + 1];
        position += length;
    }
    if (position > map->covered_to)
        map->covered_to = position;
    return 0;
}

static int map_allocation(struct nbd_handle *h, struct allocation_map *map, uint64_t base, uint64_t span)
{
    memset(map, 0, sizeof *map);
    map->base = base;
    map->span = span;
    map->covered_to = base;
    for (int round = 0; map->covered_to < base + span; round++) {
        if (round > 1000) {
            fprintf(stderr, "block status makes no progress at %" PRIu64 "\n", map->covered_to);
            return -1;
        }
        nbd_extent_callback callback = {.callback = extent_received, .user_data = map};
        uint64_t from = map->covered_to;
        if (nbd_block_status(h, base + span - from, from, callback, 0) == -1) {
            fprintf(stderr, "block_status: %s\n", nbd_get_error());
            return -1;
        }
        if (map->bad_context || map->covered_to <= from) {
            fprintf(stderr, "block status at %" PRIu64 ": no extent for base:allocation\n", from);
            return -1;
        }
    }
    return 0;
}

/* Checks every 4 KiB block of [offset, offset+length) against a predicate;
 * returns the first offending offset or UINT64_MAX. */
static uint64_t first_block_where(const struct allocation_map *map, uint64_t offset, uint64_t length,
                                  bool (*bad)(uint32_t flags), uint32_t *flags_out)
{
    for (uint64_t p = offset; p < offset + length; p += 4 * KiB) {
        uint32_t flags = map->flags[(p - map->base) / (4 * KiB)];
        if (bad(flags)) {
            *flags_out = flags;
            return p;
        }
    }
    return UINT64_MAX;
}

static bool is_not_data(uint32_t flags) { return (flags & LIBNBD_STATE_HOLE) != 0; }
static bool is_not_hole_zero(uint32_t flags) { return flags != (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO); }
static bool is_not_zero(uint32_t flags) { return (flags & LIBNBD_STATE_ZERO) == 0; }
/* Spec: HOLE without ZERO means "contents undefined": never right for a
 * range we just zeroed. */
static bool is_undefined_content(uint32_t flags) { return (flags & LIBNBD_STATE_HOLE) && !(flags & LIBNBD_STATE_ZERO); }

/* What one structured read delivered, chunk by chunk. */
struct chunk_log {
    unsigned count;
    uint64_t data_bytes;
    uint64_t hole_bytes;
    uint64_t largest_hole;
    uint64_t covered;         /* total bytes of every chunk */
    bool data_in_hole_region; /* a data chunk that isn't all pattern */
    bool wrong_data;
    bool error_chunk;
    uint64_t base;
};

static int chunk_received(void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
                          int *error)
{
    struct chunk_log *log = user_data;
    (void)error;
    log->count++;
    log->covered += count;
    switch (status) {
    case LIBNBD_READ_DATA:
        log->data_bytes += count;
        /* Data chunks must hold what is there: the pattern in the data
         * part, zeroes in the hole part. */
        for (uint64_t p = offset; p < offset + count; p += 4 * KiB) {
            uint64_t n = offset + count - p < 4 * KiB ? offset + count - p : 4 * KiB;
            const uint8_t *bytes = (const uint8_t *)subbuf + (p - offset);
            if (p < log->base + HOLES_DATA) {
                if (compare_pattern(bytes, n, p, 33) >= 0)
                    log->wrong_data = true;
            } else if (!all_zero(bytes, n)) {
                log->wrong_data = true;
            }
        }
        break;
    case LIBNBD_READ_HOLE:
        log->hole_bytes += count;
        if (count > log->largest_hole)
            log->largest_hole = count;
        if (offset < log->base + HOLES_DATA)
            log->data_in_hole_region = true;
        break;
    default:
        log->error_chunk = true;
        break;
    }
    return 0;
}

static void check_holes(void)
{
    struct nbd_handle *h = connect_uri(rw_uri, true);
    uint8_t *buffer = checked_malloc(HOLES_SPAN);
    struct allocation_map *map = calloc(1, sizeof *map);
    if (!h || !map) {
        check_failed("holes: connect failed");
        goto out;
    }
    if (nbd_get_structured_replies_negotiated(h) != 1) {
        check_failed("holes: structured replies not negotiated");
        goto out;
    }
    if (nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
        check_failed("holes: base:allocation not negotiated");
        goto out;
    }
    if (nbd_trim(h, HOLES_SPAN, HOLES_BASE, 0) == -1) {
        check_failed("holes: trim: %s", nbd_get_error());
        goto out;
    }
    fill_pattern(buffer, HOLES_DATA, HOLES_BASE, 33);
    if (nbd_pwrite(h, buffer, HOLES_DATA, HOLES_BASE, 0) == -1) {
        check_failed("holes: write: %s", nbd_get_error());
        goto out;
    }
    if (map_allocation(h, map, HOLES_BASE, HOLES_SPAN) != 0) {
        check_failed("holes: block status failed");
        goto out;
    }
    uint32_t flags = 0;
    uint64_t at = first_block_where(map, HOLES_BASE, HOLES_DATA, is_not_data, &flags);
    if (at != UINT64_MAX) {
        check_failed("holes: written data at %" PRIu64 " reported with flags %u (expected data, 0)", at, flags);
        goto out;
    }
    at = first_block_where(map, HOLES_BASE + HOLES_DATA, HOLES_SPAN - HOLES_DATA, is_not_hole_zero, &flags);
    if (at != UINT64_MAX) {
        check_failed("holes: trimmed range at %" PRIu64 " reported with flags %u (expected HOLE|ZERO, 3)", at, flags);
        goto out;
    }
    check_passed("block status: written data is data, a trimmed range is HOLE|ZERO");

    /* REQ_ONE: exactly one extent, starting at the offset asked. */
    struct allocation_map *one = calloc(1, sizeof *one);
    if (!one) {
        check_failed("holes: out of memory");
        goto out;
    }
    one->base = HOLES_BASE;
    one->span = HOLES_SPAN;
    one->covered_to = HOLES_BASE;
    nbd_extent_callback callback = {.callback = extent_received, .user_data = one};
    if (nbd_block_status(h, HOLES_SPAN, HOLES_BASE, callback, LIBNBD_CMD_FLAG_REQ_ONE) == -1)
        check_failed("block status REQ_ONE: %s", nbd_get_error());
    else if (one->extents_seen != 1)
        check_failed("block status REQ_ONE: %u extents returned, expected exactly 1", one->extents_seen);
    else if (one->covered_to != HOLES_BASE + HOLES_DATA)
        check_failed("block status REQ_ONE: first extent ends at %" PRIu64 ", expected %llu", one->covered_to,
                     HOLES_BASE + HOLES_DATA);
    else
        check_passed("block status REQ_ONE: one extent, covering exactly the data");
    free(one);

    struct chunk_log log = {.base = HOLES_BASE};
    nbd_chunk_callback chunk = {.callback = chunk_received, .user_data = &log};
    memset(buffer, 0xee, HOLES_SPAN);
    if (nbd_pread_structured(h, buffer, HOLES_SPAN, HOLES_BASE, chunk, 0) == -1) {
        check_failed("structured read: %s", nbd_get_error());
        goto out;
    }
    if (log.error_chunk || log.wrong_data || log.data_in_hole_region)
        check_failed("structured read: error chunk %d, wrong data %d, hole over written data %d", log.error_chunk,
                     log.wrong_data, log.data_in_hole_region);
    else if (log.covered != HOLES_SPAN)
        check_failed("structured read: chunks cover %" PRIu64 " bytes, expected %llu", log.covered, HOLES_SPAN);
    else if (log.largest_hole < 64 * KiB)
        check_failed("structured read: no OFFSET_HOLE chunk of at least 64 KiB over a %llu KiB hole "
                     "(chunks %u, data %" PRIu64 ", hole %" PRIu64 ")",
                     (HOLES_SPAN - HOLES_DATA) / KiB, log.count, log.data_bytes, log.hole_bytes);
    else if (compare_pattern(buffer, HOLES_DATA, HOLES_BASE, 33) >= 0 ||
             !all_zero(buffer + HOLES_DATA, HOLES_SPAN - HOLES_DATA))
        check_failed("structured read: the assembled buffer is wrong");
    else
        printf("ok: structured read over a hole: %u chunks, %" PRIu64 " data bytes, %" PRIu64
               " hole bytes (largest hole chunk %" PRIu64 ")\n",
               log.count, log.data_bytes, log.hole_bytes, log.largest_hole);

    /* DF: the spec demands a single content chunk for the whole read. */
    if (nbd_can_df(h) != 1) {
        check_failed("structured read DF: server does not advertise SEND_DF with structured replies");
        goto out;
    }
    struct chunk_log df_log = {.base = HOLES_BASE};
    chunk.user_data = &df_log;
    memset(buffer, 0xee, HOLES_SPAN);
    if (nbd_pread_structured(h, buffer, HOLES_SPAN, HOLES_BASE, chunk, LIBNBD_CMD_FLAG_DF) == -1)
        check_failed("structured read DF: %s", nbd_get_error());
    else if (df_log.count != 1 || df_log.covered != HOLES_SPAN || df_log.wrong_data)
        check_failed("structured read DF: %u chunks covering %" PRIu64 " bytes (wrong data %d), expected one "
                     "chunk of %llu",
                     df_log.count, df_log.covered, df_log.wrong_data, HOLES_SPAN);
    else
        check_passed("structured read with DF: one chunk");
out:
    free(map);
    free(buffer);
    if (h)
        nbd_close(h);
}

static int64_t allocated_bytes(void)
{
    struct stat st;
    if (stat(backing_file, &st) != 0) {
        perror(backing_file);
        return -1;
    }
    return (int64_t)st.st_blocks * 512;
}

/* Writes a pattern to [offset, +1 MiB) so the range is allocated data. */
static int write_megabyte(struct nbd_handle *h, uint64_t offset, uint64_t seed)
{
    uint8_t *buffer = checked_malloc(MiB);
    fill_pattern(buffer, MiB, offset, seed);
    int r = nbd_pwrite(h, buffer, MiB, offset, 0);
    free(buffer);
    return r;
}

static bool reads_zero(struct nbd_handle *h, uint64_t offset, uint64_t length)
{
    uint8_t *buffer = checked_malloc(length);
    memset(buffer, 0xee, length);
    bool zero = nbd_pread(h, buffer, length, offset, 0) == 0 && all_zero(buffer, length);
    free(buffer);
    return zero;
}

static void check_trim_and_zero(void)
{
    struct nbd_handle *h = connect_uri(rw_uri, true);
    struct allocation_map *map = calloc(1, sizeof *map);
    uint32_t flags = 0;
    uint64_t at;
    if (!h || !map) {
        check_failed("trim/zero: connect failed");
        goto out;
    }
    if (nbd_can_trim(h) != 1 || nbd_can_zero(h) != 1) {
        check_failed("trim/zero: can_trim %d, can_zero %d (both expected on a writable raw export)",
                     nbd_can_trim(h), nbd_can_zero(h));
        goto out;
    }

    /* Trim of an aligned range of a raw file punches a hole. */
    if (write_megabyte(h, TRIM_BASE, 1) == -1 || nbd_flush(h, 0) == -1 || nbd_trim(h, MiB, TRIM_BASE, 0) == -1) {
        check_failed("trim: %s", nbd_get_error());
    } else if (map_allocation(h, map, TRIM_BASE, MiB) != 0) {
        check_failed("trim: block status failed");
    } else if ((at = first_block_where(map, TRIM_BASE, MiB, is_not_hole_zero, &flags)) != UINT64_MAX) {
        check_failed("trim: block at %" PRIu64 " has flags %u after trim, expected HOLE|ZERO (3)", at, flags);
    } else if (!reads_zero(h, TRIM_BASE, MiB)) {
        check_failed("trim: trimmed range does not read back as zeroes");
    } else {
        check_passed("trim: aligned range becomes HOLE|ZERO and reads zeroes");
    }

    /* Zero without NO_HOLE: the server may unmap; the range must read and
     * be reported as zeroes. */
    if (write_megabyte(h, ZERO_BASE, 2) == -1 || nbd_zero(h, MiB, ZERO_BASE, 0) == -1) {
        check_failed("zero: %s", nbd_get_error());
    } else if (map_allocation(h, map, ZERO_BASE, MiB) != 0) {
        check_failed("zero: block status failed");
    } else if ((at = first_block_where(map, ZERO_BASE, MiB, is_not_zero, &flags)) != UINT64_MAX) {
        check_failed("zero: block at %" PRIu64 " has flags %u after write_zeroes, expected ZERO set", at, flags);
    } else if (!reads_zero(h, ZERO_BASE, MiB)) {
        check_failed("zero: zeroed range does not read back as zeroes");
    } else {
        check_passed("write_zeroes (may unmap): range reported ZERO and reads zeroes");
    }

    /* Zero with NO_HOLE: the spec's promise is that the area is provisioned
     * (later writes cannot fail with ENOSPC), so the file must own blocks
     * there again.  ext4 keeps ZERO_RANGE extents "unwritten", which
     * SEEK_DATA reports as holes: the spec lets a server report HOLE
     * anywhere, but never HOLE without ZERO for a range just zeroed. */
    int64_t before = -1, after = -1;
    if (nbd_trim(h, MiB, ZERO_NO_HOLE_BASE, 0) == -1 || (before = allocated_bytes()) < 0 ||
        nbd_zero(h, MiB, ZERO_NO_HOLE_BASE, LIBNBD_CMD_FLAG_NO_HOLE) == -1 || (after = allocated_bytes()) < 0) {
        check_failed("zero NO_HOLE: %s", nbd_get_error());
    } else if (after - before < (int64_t)MiB) {
        check_failed("zero NO_HOLE: backing file gained %" PRId64 " bytes of allocation, expected at least 1 MiB "
                     "(NO_HOLE must provision the range)",
                     after - before);
    } else if (map_allocation(h, map, ZERO_NO_HOLE_BASE, MiB) != 0) {
        check_failed("zero NO_HOLE: block status failed");
    } else if ((at = first_block_where(map, ZERO_NO_HOLE_BASE, MiB, is_undefined_content, &flags)) != UINT64_MAX) {
        check_failed("zero NO_HOLE: block at %" PRIu64 " reported HOLE without ZERO (flags %u)", at, flags);
    } else if (!reads_zero(h, ZERO_NO_HOLE_BASE, MiB)) {
        check_failed("zero NO_HOLE: range does not read back as zeroes");
    } else {
        printf("ok: write_zeroes NO_HOLE: range provisioned (+%" PRId64 " bytes allocated), reads zeroes, "
               "block status flags %u\n",
               after - before, map->flags[0]);
    }

    /* FAST_ZERO: either done (then zeroes) or refused with ENOTSUP, nothing else. */
    if (nbd_can_fast_zero(h) != 1) {
        check_failed("fast zero: SEND_FAST_ZERO not advertised on a raw file export");
    } else if (write_megabyte(h, FAST_ZERO_BASE, 3) == -1) {
        check_failed("fast zero: write: %s", nbd_get_error());
    } else if (nbd_zero(h, MiB, FAST_ZERO_BASE, LIBNBD_CMD_FLAG_FAST_ZERO) == -1) {
        if (nbd_get_errno() == ENOTSUP)
            check_passed("fast zero: refused with ENOTSUP (allowed)");
        else
            check_failed("fast zero: failed with errno %d (%s), expected success or ENOTSUP", nbd_get_errno(),
                         nbd_get_error());
    } else if (!reads_zero(h, FAST_ZERO_BASE, MiB)) {
        check_failed("fast zero: succeeded but the range does not read zeroes");
    } else {
        check_passed("fast zero: succeeded and the range reads zeroes");
    }
out:
    free(map);
    if (h)
        nbd_close(h);
}

static void check_flush_and_fua(void)
{
    struct nbd_handle *h = connect_uri(rw_uri, true);
    uint8_t *buffer = checked_malloc(MiB);
    uint8_t *on_disk = checked_malloc(MiB);
    int fd = -1;
    if (!h) {
        check_failed("fua: connect failed");
        goto out;
    }
    if (nbd_can_flush(h) != 1 || nbd_can_fua(h) != 1) {
        check_failed("fua: can_flush %d, can_fua %d (both expected for cache=writeback)", nbd_can_flush(h),
                     nbd_can_fua(h));
        goto out;
    }
    fill_pattern(buffer, MiB, FUA_BASE, 44);
    if (nbd_pwrite(h, buffer, MiB, FUA_BASE, LIBNBD_CMD_FLAG_FUA) == -1) {
        check_failed("fua: write with FUA: %s", nbd_get_error());
        goto out;
    }
    fd = open(backing_file, O_RDONLY);
    if (fd < 0 || pread(fd, on_disk, MiB, FUA_BASE) != (ssize_t)MiB) {
        check_failed("fua: reading %s: %s", backing_file, strerror(errno));
        goto out;
    }
    if (memcmp(buffer, on_disk, MiB) != 0) {
        check_failed("fua: the backing file does not hold the data of an acknowledged FUA write");
        goto out;
    }
    check_passed("fua: acknowledged FUA write is in the backing file");
    fill_pattern(buffer, 4 * KiB, FUA_BASE, 45);
    if (nbd_pwrite(h, buffer, 4 * KiB, FUA_BASE, 0) == -1 || nbd_flush(h, 0) == -1) {
        check_failed("flush: %s", nbd_get_error());
        goto out;
    }
    if (pread(fd, on_disk, 4 * KiB, FUA_BASE) != (ssize_t)(4 * KiB) || memcmp(buffer, on_disk, 4 * KiB) != 0) {
        check_failed("flush: the backing file does not hold data written before an acknowledged flush");
        goto out;
    }
    check_passed("flush: data written before it is in the backing file");
    if (nbd_can_cache(h) == 1) {
        if (nbd_cache(h, MiB, FUA_BASE, 0) == -1)
            check_failed("cache: %s", nbd_get_error());
        else
            check_passed("cache: advisory NBD_CMD_CACHE succeeds");
    } else {
        check_failed("cache: SEND_CACHE not advertised");
    }
out:
    if (fd >= 0)
        close(fd);
    free(buffer);
    free(on_disk);
    if (h)
        nbd_close(h);
}

/* Expect a call to fail with a given errno, from the server (strict mode is
 * off, so libnbd sends the request as is). */
static void expect_errno(const char *what, int result, int expected)
{
    if (result != -1)
        check_failed("%s: succeeded, expected %s", what, strerror(expected));
    else if (nbd_get_errno() != expected)
        check_failed("%s: errno %d (%s), expected %d (%s)", what, nbd_get_errno(), nbd_get_error(), expected,
                     strerror(expected));
    else
        printf("ok: %s: %s\n", what, strerror(expected));
}

static void check_errors(void)
{
    uint8_t buffer[1024] = {0};
    struct nbd_handle *h = connect_uri(rw_uri, false);
    struct nbd_handle *ro = connect_uri(ro_uri, false);
    if (!h || !ro) {
        check_failed("errors: connect failed");
        goto out;
    }
    int64_t size = nbd_get_size(h);
    if (size < (int64_t)MINIMUM_EXPORT_SIZE) {
        check_failed("errors: export size %" PRId64 ", expected at least %llu", size, MINIMUM_EXPORT_SIZE);
        goto out;
    }
    /* The spec: EINVAL for reads and trims past the end, ENOSPC for writes. */
    expect_errno("read past the end", nbd_pread(h, buffer, sizeof buffer, (uint64_t)size - 512, 0), EINVAL);
    expect_errno("read starting past the end", nbd_pread(h, buffer, 512, (uint64_t)size + 4096, 0), EINVAL);
    expect_errno("write past the end", nbd_pwrite(h, buffer, sizeof buffer, (uint64_t)size - 512, 0), ENOSPC);
    expect_errno("trim past the end", nbd_trim(h, 8192, (uint64_t)size - 4096, 0), EINVAL);
    if (nbd_pread(h, buffer, sizeof buffer, 0, 0) == -1)
        check_failed("errors: connection unusable after error replies: %s", nbd_get_error());
    else
        check_passed("connection still serves after error replies");

    if (nbd_is_read_only(ro) != 1) {
        check_failed("read-only export: READ_ONLY flag not set");
        goto out;
    }
    if (nbd_can_trim(ro) == 1 || nbd_can_zero(ro) == 1)
        check_failed("read-only export: advertises trim (%d) or write_zeroes (%d)", nbd_can_trim(ro),
                     nbd_can_zero(ro));
    expect_errno("write to a read-only export", nbd_pwrite(ro, buffer, sizeof buffer, 0, 0), EPERM);
    expect_errno("trim on a read-only export", nbd_trim(ro, 4096, 0, 0), EPERM);
    expect_errno("write_zeroes on a read-only export", nbd_zero(ro, 4096, 0, 0), EPERM);
    if (nbd_pread(ro, buffer, sizeof buffer, 0, 0) == -1)
        check_failed("read-only export: read fails: %s", nbd_get_error());
    else
        check_passed("read-only export: reads still served");
out:
    if (h)
        nbd_close(h);
    if (ro)
        nbd_close(ro);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s RW_URI RO_URI BACKING_FILE\n", argv[0]);
        return 2;
    }
    rw_uri = argv[1];
    ro_uri = argv[2];
    backing_file = argv[3];

    check_multi_conn();
    check_pipelining();
    check_holes();
    check_trim_and_zero();
    check_flush_and_fua();
    check_errors();

    if (failures) {
        printf("libnbd_client: %d check(s) failed\n", failures);
        return failures > 100 ? 100 : failures;
    }
    printf("libnbd_client: all checks passed\n");
    return 0;
}
