/*
 * fuzz_world: the exports, loop and session driver the session fuzz
 * targets share (see fuzz_world.h).  Compiled into each target like its
 * own source, so the libFuzzer build instruments it as before.
 */
#include "tests/fuzz/fuzz_world.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h> /* fallocate */
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/export.h"
#include "common/log.h"
#include "common/send_queue.h"

enum {
    SERVER_INPUT_BUFFER = 16 * 1024, /* server/connection.c INPUT_BUFFER_SIZE */
};

struct fuzz_world fuzz_world;

void fuzz_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", fuzz_world.name ? fuzz_world.name : "fuzz");
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

uint8_t fuzz_pattern_byte(uint64_t offset) { return (uint8_t)(offset * 13 + offset / 4096 + 5); }

/* ---- the world ---- */

/* A temp file of size bytes (holes, or the pattern): an fd open read-write, its path in path. */
static int temp_file(uint64_t size, bool pattern, char *path, size_t path_size)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, path_size, "%s/luna-%s-XXXXXX", dir && *dir ? dir : "/tmp", fuzz_world.name);
    int fd = mkstemp(path);
    if (fd < 0)
        fuzz_fail("mkstemp %s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0)
        fuzz_fail("ftruncate %s: %s", path, strerror(errno));
    if (pattern) {
        uint8_t block[4096];
        for (uint64_t offset = 0; offset < size; offset += sizeof(block)) {
            for (size_t i = 0; i < sizeof(block); i++)
                block[i] = fuzz_pattern_byte(offset + i);
            if (pwrite(fd, block, sizeof(block), (off_t)offset) != (ssize_t)sizeof(block))
                fuzz_fail("pwrite %s: %s", path, strerror(errno));
        }
    }
    return fd;
}

void fuzz_world_init(const char *name)
{
    fuzz_world.name = name;
    /* Protocol violations are the fuzzer's daily bread: logging each one would dominate the run. */
    log_set_level(getenv("LUNA_FUZZ_VERBOSE") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    fuzz_world.loop = ev_loop_new(EVFLAG_AUTO);
    if (!fuzz_world.loop)
        fuzz_fail("ev_loop_new failed");
    fuzz_world.ctx = aio_context_new(fuzz_world.loop);
    if (!fuzz_world.ctx)
        fuzz_fail("aio_context_new: out of memory");
    fuzz_world.table = export_table_new();
    if (!fuzz_world.table)
        fuzz_fail("export_table_new: out of memory");
}

void fuzz_world_add_export(const struct fuzz_export *spec)
{
    const size_t max_writable = sizeof(fuzz_world.reset_fds) / sizeof(fuzz_world.reset_fds[0]);
    if (!spec->readonly && fuzz_world.reset_count == max_writable)
        fuzz_fail("more than %zu writable exports", max_writable);
    char path[4096];
    int fd = temp_file(spec->size, spec->pattern, path, sizeof(path));
    struct export_config config = {0};
    config.name = (char *)spec->name;
    config.description = (char *)spec->description;
    bdev_options_init(&config.bdev);
    config.bdev.path = path;
    config.bdev.readonly = spec->readonly;
    config.bdev.cache = spec->cache;
    config.bdev.aio = spec->aio;
    struct export *export = NULL;
    char *message = NULL;
    int rc = export_open(&config, &export, &message);
    /* The bdev holds its own descriptor: the name can go now, so no crash leaves files behind. */
    unlink(path);
    if (rc < 0)
        fuzz_fail("export_open %s: %s", spec->name, message ? message : strerror(-rc));
    if (export_table_add(fuzz_world.table, export) < 0)
        fuzz_fail("export_table_add %s: out of memory", spec->name);
    if (spec->readonly) {
        close(fd);
        return;
    }
    fuzz_world.reset_fds[fuzz_world.reset_count] = fd;
    fuzz_world.reset_sizes[fuzz_world.reset_count] = spec->size;
    fuzz_world.reset_count++;
}

bool fuzz_world_begin(size_t size, void (*init)(void))
{
    static bool ready;
    if (size < FUZZ_PREFIX_SIZE)
        return false;
    if (!ready) {
        init();
        ready = true;
    }
    /* Every input starts from the same disk contents, so a crash reproduces from its file alone. */
    for (unsigned i = 0; i < fuzz_world.reset_count; i++) {
        if (fallocate(fuzz_world.reset_fds[i], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                      (off_t)fuzz_world.reset_sizes[i]) < 0)
            fuzz_fail("fallocate: %s", strerror(errno));
    }
    return true;
}

/* ---- one session per input ---- */

static void wake(void *opaque)
{
    struct fuzz_run *run = opaque;
    if (run->freed)
        fuzz_fail("wake after the session was freed");
    if (run->in_input && run->protocol->wake_only_from_completions)
        fuzz_fail("wake called from inside input() (contract: completions only)");
}

const struct session_ops fuzz_session_ops = {.wake = wake};

void fuzz_run_init(struct fuzz_run *run, const struct fuzz_protocol *protocol, void *checker,
                   const uint8_t *prefix)
{
    *run = (struct fuzz_run){.protocol = protocol, .checker = checker, .shape = prefix[0]};
    run->random_state = 0x9e3779b9u ^ ((uint32_t)prefix[1] << 8 | run->shape);
    run->out = send_queue_new();
    if (!run->out)
        fuzz_fail("send_queue_new: out of memory");
}

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
    return limits[shape & FUZZ_SHAPE_CHUNK_MASK];
}

static enum fuzz_ending run_ending(const struct fuzz_run *run)
{
    return (enum fuzz_ending)((run->shape & FUZZ_SHAPE_END_MASK) >> FUZZ_SHAPE_END_SHIFT);
}

/* What the server would write to the socket: to the target's checks, then gone. */
static void take_output(struct fuzz_run *run)
{
    static uint8_t sink[64 * 1024];
    while (!send_queue_empty(run->out)) {
        size_t n = send_queue_drain(run->out, sink, sizeof(sink));
        if (n == 0)
            fuzz_fail("send_queue_drain made no progress with %zu bytes queued", send_queue_length(run->out));
        run->protocol->output(run->checker, sink, n);
    }
}

/* server/connection.c process_input: hand the session the buffered bytes [position, end) while it takes them. */
static void feed(struct fuzz_run *run)
{
    const struct session_protocol *proto = run->protocol->session;
    void *session = run->session;
    while (proto->status(session) == SESSION_ACTIVE) {
        size_t available = run->end - run->position;
        struct iovec target;
        if (proto->payload(session, &target)) {
            if (available == 0)
                break;
            if (target.iov_len == 0)
                fuzz_fail("payload target of 0 bytes");
            size_t n = available < target.iov_len ? available : target.iov_len;
            memcpy(target.iov_base, run->input + run->position, n);
            run->position += n;
            proto->payload_done(session, n);
            continue;
        }
        if (available == 0 || !proto->wants_input(session))
            break;
        run->in_input = true;
        size_t used = proto->input(session, run->input + run->position, available);
        run->in_input = false;
        if (used > available)
            fuzz_fail("input() consumed %zu of %zu bytes", used, available);
        run->position += used;
        if (used < available && proto->status(session) == SESSION_ACTIVE && proto->wants_input(session) &&
            !proto->payload(session, &target))
            fuzz_fail("session stalled: consumed %zu of %zu bytes yet still wants input", used, available);
        if (used == 0 && !proto->payload(session, &target))
            break;
    }
    if (run->protocol->consumed)
        run->protocol->consumed(run->checker, run->input, run->position);
}

/* The loop until no disk request is pending; nothing may stay pending after it. */
static void settle(void)
{
    aio_context_drain(fuzz_world.ctx);
    if (aio_context_pending(fuzz_world.ctx) != 0)
        fuzz_fail("aio_context_drain returned with %llu requests pending",
                  (unsigned long long)aio_context_pending(fuzz_world.ctx));
}

/*
 * After a settle with nothing queued, an active session that is not
 * receiving a payload must want input: nothing else will ever wake it.
 */
static void check_not_wedged(struct fuzz_run *run)
{
    const struct session_protocol *proto = run->protocol->session;
    struct iovec target;
    if (proto->status(run->session) != SESSION_ACTIVE || !send_queue_empty(run->out))
        return;
    /* A write whose payload is still arriving counts as in flight. */
    if (proto->payload(run->session, &target))
        return;
    if (proto->inflight(run->session) != 0)
        fuzz_fail("%u %s in flight after the loop drained", proto->inflight(run->session), run->protocol->work);
    if (!proto->wants_input(run->session))
        fuzz_fail("active session refuses input with nothing in flight and nothing queued");
}

/*
 * Let requests complete and offer the buffered bytes again until the
 * session has taken them all or stopped; the last feed's requests stay in
 * flight, for the endings that free the session under them.
 */
static void settle_and_feed(struct fuzz_run *run)
{
    settle();
    if (!(run->shape & FUZZ_SHAPE_KEEP_OUTPUT) || !run->protocol->session->wants_input(run->session))
        take_output(run);
    check_not_wedged(run);
    feed(run);
}

static void catch_up(struct fuzz_run *run)
{
    const struct session_protocol *proto = run->protocol->session;
    while (run->position < run->end && proto->status(run->session) == SESSION_ACTIVE) {
        size_t before = run->position;
        settle_and_feed(run);
        if (run->position == before && proto->status(run->session) == SESSION_ACTIVE)
            fuzz_fail("session took nothing of %zu buffered bytes after the loop drained", run->end - before);
    }
}

static void shut_down(struct fuzz_run *run)
{
    run->protocol->session->shutdown(run->session);
    if (run->protocol->shutdown)
        run->protocol->shutdown(run->checker);
    run->shut_down = true;
}

/* Offer the input in chunks, as reads from a socket would deliver it. */
static void converse(struct fuzz_run *run)
{
    const struct session_protocol *proto = run->protocol->session;
    size_t size = run->size;
    size_t limit = chunk_limit(run->shape);
    while (run->end < size && proto->status(run->session) == SESSION_ACTIVE) {
        /* Requests still arriving must be answered (refused as shutting down), not dropped. */
        if (run_ending(run) == FUZZ_END_SHUTDOWN && !run->shut_down && run->end >= size / 2)
            shut_down(run);
        /* Like the server, never hold more than its input buffer of unconsumed bytes. */
        size_t room = SERVER_INPUT_BUFFER - (run->end - run->position);
        if (room == 0) {
            catch_up(run);
            if (run->end - run->position == SERVER_INPUT_BUFFER && proto->status(run->session) == SESSION_ACTIVE)
                fuzz_fail("session takes none of a full %d-byte input buffer", SERVER_INPUT_BUFFER);
            continue;
        }
        size_t chunk = limit ? 1 + next_random(&run->random_state) % limit : size - run->end;
        if (chunk > size - run->end)
            chunk = size - run->end;
        if (chunk > room)
            chunk = room;
        run->end += chunk;
        feed(run);
        if (run->shape & FUZZ_SHAPE_DRAIN_EACH) {
            /* Everything sent so far completes before the next chunk arrives. */
            settle_and_feed(run);
            catch_up(run);
        } else {
            /* Whatever completed by now, as one pass of the server's loop would see it. */
            ev_run(fuzz_world.loop, EVRUN_NOWAIT);
            if (!(run->shape & FUZZ_SHAPE_KEEP_OUTPUT))
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
    const struct session_protocol *proto = run->protocol->session;
    const char *work = run->protocol->work;
    bool drained = false;
    switch (run_ending(run)) {
    case FUZZ_END_DRAIN_THEN_FREE:
        settle();
        take_output(run);
        check_not_wedged(run);
        drained = true;
        break;
    case FUZZ_END_FREE_IN_FLIGHT:
        break;
    case FUZZ_END_INPUT_CLOSED:
        proto->input_closed(run->session);
        settle();
        if (proto->status(run->session) == SESSION_ACTIVE)
            fuzz_fail("session still active after input_closed");
        if (proto->inflight(run->session) != 0)
            fuzz_fail("%u %s in flight after end of input and a drained loop", proto->inflight(run->session), work);
        take_output(run);
        drained = true;
        break;
    case FUZZ_END_SHUTDOWN: {
        if (!run->shut_down)
            shut_down(run);
        settle();
        take_output(run);
        /* Where a write whose payload is still arriving counts as in flight, it is waited for. */
        struct iovec target;
        uint32_t waiting = run->protocol->payload_in_flight && proto->payload(run->session, &target) ? 1u : 0u;
        if (proto->inflight(run->session) > waiting)
            fuzz_fail("%u %s in flight after shutdown and a drained loop", proto->inflight(run->session), work);
        drained = true;
        break;
    }
    }
    if (run->protocol->finished)
        run->protocol->finished(run->checker, drained, proto->status(run->session) == SESSION_CLOSED);
    /* server/connection.c order: the queue first (it may lend the session's buffers), then the session. */
    send_queue_free(run->out);
    proto->free(run->session);
    run->freed = true;
    settle(); /* detached completions run here and free the session's shell */
}

void fuzz_run_session(struct fuzz_run *run, const uint8_t *input, size_t size)
{
    run->input = input;
    run->size = size;
    converse(run);
    finish(run);
}
