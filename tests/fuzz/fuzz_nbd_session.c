/*
 * fuzz_nbd_session: libFuzzer target for the NBD session state machine.
 *
 * One session per input, over exports opened once per process (raw temp
 * files: a small writable one, a read-only one with known contents, an
 * O_DIRECT one and a sparse 8 GiB one for 64-bit lengths; the writable ones
 * are reset to holes before every input), on a real libev loop and
 * aio_context.  fuzz_world.c feeds the input the way server/connection.c
 * feeds socket data and checks the session.h contract (no stall, no wedge,
 * no wake from inside nbd_session_input or after free, nothing left
 * pending on the aio_context); every byte the session sends goes through
 * nbd_reply_audit, which judges the replies as a client would.
 *
 * Input layout: byte 0 selects the run's shape (enum fuzz_shape_bits, and
 * enum shape_bits here), byte 1 seeds the chunk sizes, the rest is what the
 * client sends.  So a corpus file is a real conversation behind two bytes,
 * and the fuzzer can mutate how it is split (partial headers, payloads
 * across chunks) independently of what it says.
 */
#include <stdbool.h>
#include <stdint.h>

#include "protocols/nbd/nbd_session.h"
#include "tests/fuzz/fuzz_world.h"
#include "tests/fuzz/nbd_reply_audit.h"

/* The target's own bits of the shape (FUZZ_SHAPE_TARGET_BITS); the rest are fuzz_world.h's. */
enum shape_bits {
    SHAPE_FEW_INFLIGHT = 0x08,   /* max_inflight 2: exercises backpressure */
    SHAPE_SMALL_PAYLOAD = 0x10,  /* max_payload 4096: oversized requests are cheap to reach */
};

enum {
    DISK_SIZE = 1 << 20,
    READ_ONLY_SIZE = 256 << 10,
    DIRECT_SIZE = 1 << 20,
};
/* Past 32 bits, so extended headers' 64-bit lengths reach the disk instead of being refused. */
#define BIG_SIZE (UINT64_C(8) << 30)

static void world_init(void)
{
    fuzz_world_init("fuzz_nbd_session");
    /* "disk" first: it is the default export ("" selects it). */
    fuzz_world_add_export(&(struct fuzz_export){.name = "disk", .description = "fuzz disk", .size = DISK_SIZE});
    fuzz_world_add_export(&(struct fuzz_export){
        .name = "ro", .size = READ_ONLY_SIZE, .pattern = true, .readonly = true, .aio = BDEV_AIO_THREADS});
    fuzz_world_add_export(&(struct fuzz_export){
        .name = "direct", .description = "O_DIRECT", .size = DIRECT_SIZE, .cache = BDEV_CACHE_NONE});
    fuzz_world_add_export(&(struct fuzz_export){.name = "big", .size = BIG_SIZE});
}

static const struct nbd_audit_export audit_exports[] = {
    {.name = "disk", .size = DISK_SIZE, .readonly = false, .byte_at = NULL},
    {.name = "ro", .size = READ_ONLY_SIZE, .readonly = true, .byte_at = fuzz_pattern_byte},
    {.name = "direct", .size = DIRECT_SIZE, .readonly = false, .byte_at = NULL},
    {.name = "big", .size = BIG_SIZE, .readonly = false, .byte_at = NULL},
};

/* The reply audit hears everything: the bytes the session took, shutdown, its output, the end. */
static void audit_consumed(void *audit, const uint8_t *input, size_t consumed)
{
    nbd_audit_input(audit, input, consumed);
}
static void audit_shutdown(void *audit) { nbd_audit_shutdown(audit); }
static void audit_output(void *audit, const uint8_t *data, size_t length) { nbd_audit_output(audit, data, length); }
static void audit_finished(void *audit, bool drained, bool closed) { nbd_audit_finish(audit, drained, closed); }

static const struct fuzz_protocol nbd = {
    .session = &nbd_session_protocol,
    .work = "requests",
    .payload_in_flight = true,
    .wake_only_from_completions = true,
    .output = audit_output,
    .consumed = audit_consumed,
    .shutdown = audit_shutdown,
    .finished = audit_finished,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_world_begin(size, world_init))
        return 0;

    struct nbd_audit *audit = nbd_audit_new(audit_exports, sizeof(audit_exports) / sizeof(audit_exports[0]));
    struct fuzz_run run;
    fuzz_run_init(&run, &nbd, audit, data);
    /* The session's own limits, not the server's defaults nbd_session_protocol.create would pick. */
    struct nbd_session_config config = {
        .max_inflight = run.shape & SHAPE_FEW_INFLIGHT ? 2 : 0,
        .max_payload = run.shape & SHAPE_SMALL_PAYLOAD ? 4096 : 0,
        .peer = "fuzz",
    };
    run.session = nbd_session_new(&config, fuzz_world.table, fuzz_world.ctx, run.out, &fuzz_session_ops, &run);
    if (!run.session)
        fuzz_fail("nbd_session_new: out of memory");

    fuzz_run_session(&run, data + FUZZ_PREFIX_SIZE, size - FUZZ_PREFIX_SIZE);
    nbd_audit_free(audit);
    return 0;
}
