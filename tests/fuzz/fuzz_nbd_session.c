/*
 * fuzz_nbd_session: libFuzzer target for the NBD session state machine.
 *
 * One session per input, over exports opened once per process (raw temp
 * files: a small writable one, a read-only one with known contents, an
 * O_DIRECT one and a sparse 8 GiB one for 64-bit lengths; the writable ones
 * are reset to holes before every input), on a real libev loop and
 * aio_context.  Input bytes are fed the way server/nbd_connection.c feeds
 * socket data: unconsumed bytes are offered again, payload targets are
 * filled directly.  Besides the
 * sanitizers, the target checks the parts of the nbd_session.h contract a
 * crash would not reveal: the session never stalls with input offered,
 * never calls wake from inside nbd_session_input, and leaves nothing
 * pending on the aio_context; and every byte it sends goes through
 * nbd_reply_audit, which judges the replies as a client would.
 *
 * Input layout: byte 0 selects the run's shape (see enum shape_bits), byte 1
 * seeds the chunk sizes, the rest is what the client sends.  So a corpus
 * file is a real conversation behind two bytes, and the fuzzer can mutate
 * how it is split (partial headers, payloads across chunks) independently
 * of what it says.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/export.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/nbd/nbd_session.h"
#include "tests/fuzz/nbd_reply_audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum shape_bits {
    SHAPE_CHUNK_MASK = 0x03,     /* 0: one chunk; 1..3: chunks of at most 8, 64, 512 bytes */
    SHAPE_DRAIN_EACH = 0x04,     /* run the loop to idle after every chunk (else one non-blocking pass) */
    SHAPE_FEW_INFLIGHT = 0x08,   /* max_inflight 2: exercises backpressure */
    SHAPE_SMALL_PAYLOAD = 0x10,  /* max_payload 4096: oversized requests are cheap to reach */
    SHAPE_END_SHIFT = 5,         /* two bits: how the session ends (enum ending) */
    SHAPE_END_MASK = 0x60,
    SHAPE_KEEP_OUTPUT = 0x80,    /* leave replies queued until the end (lent buffers outlive requests) */
};

enum ending {
    END_DRAIN_THEN_FREE,     /* the client vanished after everything was answered */
    END_FREE_IN_FLIGHT,      /* the client vanished mid-request: detached completions */
    END_INPUT_CLOSED,        /* end of stream, then drain as the server does */
    END_SHUTDOWN,            /* SIGTERM halfway through the input, then drain */
};

enum {
    PREFIX_SIZE = 2,
    SERVER_INPUT_BUFFER = 16 * 1024, /* server/nbd_connection.c INPUT_BUFFER_SIZE */
    DISK_SIZE = 1 << 20,
    READ_ONLY_SIZE = 256 << 10,
    DIRECT_SIZE = 1 << 20,
};
/* Past 32 bits, so extended headers' 64-bit lengths reach the disk instead of being refused. */
#define BIG_SIZE (UINT64_C(8) << 30)

struct fuzz_world {
    struct ev_loop *loop;
    struct aio_context *ctx;
    struct export_table *table;
    /* Writable exports' files, reset to holes before each input. */
    int reset_fds[3];
    uint64_t reset_sizes[3];
    unsigned reset_count;
};

struct fuzz_run {
    struct nbd_session *session;
    struct send_queue *out;
    struct nbd_audit *audit;
    uint8_t shape;
    const uint8_t *input;  /* the client's bytes, after the prefix */
    size_t position, end;  /* consumed by the session; delivered so far */
    bool in_input;         /* inside nbd_session_input: wake must not fire */
    bool shut_down;
    bool freed;
};

static struct fuzz_world world;
static bool world_ready;

static void fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("fuzz_nbd_session: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

static uint8_t pattern_byte(uint64_t offset) { return (uint8_t)(offset * 13 + offset / 4096 + 5); }

/* A temp file of size bytes (holes, or a pattern); returns an fd open read-write, path in *path. */
static int temp_file(uint64_t size, bool pattern, char *path, size_t path_size)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, path_size, "%s/luna-fuzz-nbd-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        fail("mkstemp %s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0)
        fail("ftruncate %s: %s", path, strerror(errno));
    if (pattern) {
        uint8_t block[4096];
        for (uint64_t offset = 0; offset < size; offset += sizeof(block)) {
            for (size_t i = 0; i < sizeof(block); i++)
                block[i] = pattern_byte(offset + i);
            if (pwrite(fd, block, sizeof(block), (off_t)offset) != (ssize_t)sizeof(block))
                fail("pwrite %s: %s", path, strerror(errno));
        }
    }
    return fd;
}

static void add_export(const char *name, const char *description, uint64_t size, bool pattern,
                       bool readonly, enum bdev_cache_mode cache, enum bdev_aio_engine aio)
{
    char path[4096];
    int fd = temp_file(size, pattern, path, sizeof(path));
    struct export_config config = {0};
    config.name = (char *)name;
    config.description = (char *)description;
    bdev_options_init(&config.bdev);
    config.bdev.path = path;
    config.bdev.readonly = readonly;
    config.bdev.cache = cache;
    config.bdev.aio = aio;
    struct export *export = NULL;
    char *message = NULL;
    int rc = export_open(&config, &export, &message);
    /* The bdev holds its own descriptor: the name can go now, so no crash leaves files behind. */
    unlink(path);
    if (rc < 0)
        fail("export_open %s: %s", name, message ? message : strerror(-rc));
    if (export_table_add(world.table, export) < 0)
        fail("export_table_add %s: out of memory", name);
    if (readonly) {
        close(fd);
        return;
    }
    world.reset_fds[world.reset_count] = fd;
    world.reset_sizes[world.reset_count] = size;
    world.reset_count++;
}

static void world_init(void)
{
    /* Protocol violations are the fuzzer's daily bread: logging each one would dominate the run. */
    log_set_level(getenv("LUNA_FUZZ_VERBOSE") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    world.loop = ev_loop_new(EVFLAG_AUTO);
    if (!world.loop)
        fail("ev_loop_new failed");
    world.ctx = aio_context_new(world.loop);
    if (!world.ctx)
        fail("aio_context_new: out of memory");
    world.table = export_table_new();
    if (!world.table)
        fail("export_table_new: out of memory");
    /* "disk" first: it is the default export ("" selects it). */
    add_export("disk", "fuzz disk", DISK_SIZE, false, false, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT);
    add_export("ro", NULL, READ_ONLY_SIZE, true, true, BDEV_CACHE_WRITEBACK, BDEV_AIO_THREADS);
    add_export("direct", "O_DIRECT", DIRECT_SIZE, false, false, BDEV_CACHE_NONE, BDEV_AIO_DEFAULT);
    add_export("big", NULL, BIG_SIZE, false, false, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT);
    world_ready = true;
}

static const struct nbd_audit_export audit_exports[] = {
    {.name = "disk", .size = DISK_SIZE, .readonly = false, .byte_at = NULL},
    {.name = "ro", .size = READ_ONLY_SIZE, .readonly = true, .byte_at = pattern_byte},
    {.name = "direct", .size = DIRECT_SIZE, .readonly = false, .byte_at = NULL},
    {.name = "big", .size = BIG_SIZE, .readonly = false, .byte_at = NULL},
};

/* Every input starts from the same disk contents, so a crash reproduces from its file alone. */
static void world_reset(void)
{
    for (unsigned i = 0; i < world.reset_count; i++) {
        if (fallocate(world.reset_fds[i], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                      (off_t)world.reset_sizes[i]) < 0)
            fail("fallocate: %s", strerror(errno));
    }
}

static void wake(void *opaque)
{
    struct fuzz_run *run = opaque;
    if (run->freed)
        fail("wake after nbd_session_free");
    if (run->in_input)
        fail("wake called from inside nbd_session_input (contract: completions only)");
}

static const struct session_ops fuzz_ops = {.wake = wake};

/* xorshift32: chunk sizes that are a pure function of the input. */
static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static size_t chunk_limit(uint8_t shape)
{
    static const size_t limits[] = {0, 8, 64, 512};
    return limits[shape & SHAPE_CHUNK_MASK];
}

/* What the server would write to the socket: to the audit, then gone. */
static void take_output(struct fuzz_run *run)
{
    static uint8_t sink[64 * 1024];
    while (!send_queue_empty(run->out)) {
        size_t n = send_queue_drain(run->out, sink, sizeof(sink));
        if (n == 0)
            fail("send_queue_drain made no progress with %zu bytes queued",
                 send_queue_length(run->out));
        nbd_audit_output(run->audit, sink, n);
    }
}

/*
 * server/nbd_connection.c process_input: hand the session the buffered
 * bytes [position, end) while it takes them.
 */
static void feed(struct fuzz_run *run)
{
    struct nbd_session *session = run->session;
    while (nbd_session_status(session) == SESSION_ACTIVE) {
        size_t available = run->end - run->position;
        struct iovec target;
        if (nbd_session_payload(session, &target)) {
            if (available == 0)
                break;
            if (target.iov_len == 0)
                fail("payload target of 0 bytes");
            size_t n = available < target.iov_len ? available : target.iov_len;
            memcpy(target.iov_base, run->input + run->position, n);
            run->position += n;
            nbd_session_payload_done(session, n);
            continue;
        }
        if (available == 0 || !nbd_session_wants_input(session))
            break;
        run->in_input = true;
        size_t used = nbd_session_input(session, run->input + run->position, available);
        run->in_input = false;
        if (used > available)
            fail("nbd_session_input consumed %zu of %zu bytes", used, available);
        run->position += used;
        if (used < available && nbd_session_status(session) == SESSION_ACTIVE &&
            nbd_session_wants_input(session) && !nbd_session_payload(session, &target))
            fail("session stalled: consumed %zu of %zu bytes yet still wants input", used,
                 available);
        if (used == 0 && !nbd_session_payload(session, &target))
            break;
    }
    nbd_audit_input(run->audit, run->input, run->position);
}

/* The loop until no disk request is pending; nothing may stay pending after it. */
static void settle(void)
{
    aio_context_drain(world.ctx);
    if (aio_context_pending(world.ctx) != 0)
        fail("aio_context_drain returned with %llu requests pending",
             (unsigned long long)aio_context_pending(world.ctx));
}

/*
 * After a settle with nothing queued, an active session that is not
 * receiving a payload must want input: nothing else will ever wake it.
 */
static void check_not_wedged(struct fuzz_run *run)
{
    struct nbd_session *session = run->session;
    struct iovec target;
    if (nbd_session_status(session) != SESSION_ACTIVE || !send_queue_empty(run->out))
        return;
    /* A WRITE whose payload is still arriving counts as in flight. */
    if (nbd_session_payload(session, &target))
        return;
    if (nbd_session_inflight(session) != 0)
        fail("%u requests in flight after the loop drained", nbd_session_inflight(session));
    if (!nbd_session_wants_input(session))
        fail("active session refuses input with nothing in flight and nothing queued");
}

/*
 * Let requests complete and offer the buffered bytes again until the
 * session has taken them all or stopped; the last feed's requests stay in
 * flight, for the endings that free the session under them.
 */
static void settle_and_feed(struct fuzz_run *run)
{
    settle();
    if (!(run->shape & SHAPE_KEEP_OUTPUT) || !nbd_session_wants_input(run->session))
        take_output(run);
    check_not_wedged(run);
    feed(run);
}

static void catch_up(struct fuzz_run *run)
{
    while (run->position < run->end && nbd_session_status(run->session) == SESSION_ACTIVE) {
        size_t before = run->position;
        settle_and_feed(run);
        if (run->position == before && nbd_session_status(run->session) == SESSION_ACTIVE)
            fail("session took nothing of %zu buffered bytes after the loop drained",
                 run->end - before);
    }
}

/* Offer the input in chunks, as reads from a socket would deliver it. */
static enum ending run_ending(const struct fuzz_run *run)
{
    return (enum ending)((run->shape & SHAPE_END_MASK) >> SHAPE_END_SHIFT);
}

static void converse(struct fuzz_run *run, size_t size, uint32_t random_state)
{
    size_t limit = chunk_limit(run->shape);
    while (run->end < size && nbd_session_status(run->session) == SESSION_ACTIVE) {
        if (run_ending(run) == END_SHUTDOWN && !run->shut_down && run->end >= size / 2) {
            /* Requests still arriving must be answered (NBD_ESHUTDOWN), not dropped. */
            nbd_session_shutdown(run->session);
            nbd_audit_shutdown(run->audit);
            run->shut_down = true;
        }
        /* Like the server, never hold more than its input buffer of unconsumed bytes. */
        size_t room = SERVER_INPUT_BUFFER - (run->end - run->position);
        if (room == 0) {
            catch_up(run);
            if (run->end - run->position == SERVER_INPUT_BUFFER &&
                nbd_session_status(run->session) == SESSION_ACTIVE)
                fail("session takes none of a full %d-byte input buffer", SERVER_INPUT_BUFFER);
            continue;
        }
        size_t chunk = limit ? 1 + next_random(&random_state) % limit : size - run->end;
        if (chunk > size - run->end)
            chunk = size - run->end;
        if (chunk > room)
            chunk = room;
        run->end += chunk;
        feed(run);
        if (run->shape & SHAPE_DRAIN_EACH) {
            /* Everything sent so far completes before the next chunk arrives. */
            settle_and_feed(run);
            catch_up(run);
        } else {
            /* Whatever completed by now, as one pass of the server's loop would see it. */
            ev_run(world.loop, EVRUN_NOWAIT);
            if (!(run->shape & SHAPE_KEEP_OUTPUT))
                take_output(run);
            feed(run);
        }
    }
    /* Bytes backpressure held back: the server reads them once completions wake it. */
    catch_up(run);
}

/* How the connection ends; then the session is freed, maybe under requests in flight. */
static void finish(struct fuzz_run *run)
{
    bool drained = false;
    switch (run_ending(run)) {
    case END_DRAIN_THEN_FREE:
        settle();
        take_output(run);
        check_not_wedged(run);
        drained = true;
        break;
    case END_FREE_IN_FLIGHT:
        break;
    case END_INPUT_CLOSED:
        nbd_session_input_closed(run->session);
        settle();
        if (nbd_session_status(run->session) == SESSION_ACTIVE)
            fail("session still active after nbd_session_input_closed");
        if (nbd_session_inflight(run->session) != 0)
            fail("%u requests in flight after end of input and a drained loop",
                 nbd_session_inflight(run->session));
        take_output(run);
        drained = true;
        break;
    case END_SHUTDOWN:
        if (!run->shut_down) {
            nbd_session_shutdown(run->session);
            nbd_audit_shutdown(run->audit);
        }
        settle();
        take_output(run);
        /* A WRITE whose payload is still arriving counts as in flight, and is waited for. */
        struct iovec target;
        if (nbd_session_inflight(run->session) > (nbd_session_payload(run->session, &target) ? 1u : 0u))
            fail("%u requests in flight after shutdown and a drained loop",
                 nbd_session_inflight(run->session));
        drained = true;
        break;
    }
    nbd_audit_finish(run->audit, drained,
                     nbd_session_status(run->session) == SESSION_CLOSED);
    /* server/nbd_connection.c order: the queue first, while the session it borrows from lives. */
    send_queue_free(run->out);
    nbd_session_free(run->session);
    run->freed = true;
    settle(); /* detached completions run here and free the session's shell */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX_SIZE)
        return 0;
    if (!world_ready)
        world_init();
    world_reset();

    struct fuzz_run run = {0};
    run.shape = data[0];
    uint32_t random_state = 0x9e3779b9u ^ ((uint32_t)data[1] << 8 | run.shape);
    run.input = data + PREFIX_SIZE;
    size -= PREFIX_SIZE;

    run.out = send_queue_new();
    if (!run.out)
        fail("send_queue_new: out of memory");
    run.audit = nbd_audit_new(audit_exports, sizeof(audit_exports) / sizeof(audit_exports[0]));
    struct nbd_session_config config = {
        .max_inflight = run.shape & SHAPE_FEW_INFLIGHT ? 2 : 0,
        .max_payload = run.shape & SHAPE_SMALL_PAYLOAD ? 4096 : 0,
        .peer = "fuzz",
    };
    run.session = nbd_session_new(&config, world.table, world.ctx, run.out, &fuzz_ops, &run);
    if (!run.session)
        fail("nbd_session_new: out of memory");

    converse(&run, size, random_state);
    finish(&run);
    nbd_audit_free(run.audit);
    return 0;
}
