/*
 * fuzz_iscsi_session: libFuzzer target for the iSCSI target's session
 * (protocols/iscsi, through iscsi_session_protocol).
 *
 * One session per input, over exports opened once per process (raw temp
 * files: "disk" writable, reset to holes before every input, and "ro"
 * read-only with known contents; both on the thread-pool engine, so
 * completions come back through the loop as on a busy server), on a real
 * libev loop and aio_context.  The settings name five targets: one with
 * LUN 0 -> disk, LUN 1 -> ro and LUN 5 -> an export that does not exist,
 * and four with no LUNs (so SendTargets=All outgrows a 512-byte segment);
 * portals include a wildcard.  Input bytes are fed the way
 * server/connection.c feeds socket data: at most its 16 KiB input buffer
 * held, unconsumed bytes offered again, data segments copied straight into
 * the session's payload target.
 *
 * Besides the sanitizers (crashes, leaks, undefined behaviour) and
 * libFuzzer's timeout (loops), the target checks what a crash would not
 * show: the session never stalls with input offered, never wedges (active,
 * nothing in flight or queued, yet refusing input), leaves nothing pending
 * on the aio_context, never wakes after free; and every byte it sends is
 * parsed as an initiator would (audit_output): framing and zero padding,
 * CRC32C header and data digests once negotiated, target opcodes only, no
 * AHS, StatSN advancing by one on each status, ExpCmdSN never going back
 * and a window of at most 128, Reject carrying the 48-byte header, nothing
 * after a refused login.
 *
 * Input layout: byte 0 selects the run's shape (enum shape_bits), byte 1
 * seeds the chunk sizes, the rest is what the initiator sends.  With
 * SHAPE_LOGIN the run starts with a valid login (normal, or discovery with
 * SHAPE_DISCOVERY) built here, so mutations spend their bytes on the full
 * feature phase; without it the input is the whole conversation.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h> /* fallocate */
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
#include "common/byte_order.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/iscsi/iscsi_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum shape_bits {
    SHAPE_CHUNK_MASK = 0x03, /* 0: one chunk; 1..3: chunks of at most 8, 64, 512 bytes */
    SHAPE_DRAIN_EACH = 0x04, /* run the loop to idle after every chunk (else one non-blocking pass) */
    SHAPE_LOGIN = 0x08,      /* a valid login first, then the input */
    SHAPE_DISCOVERY = 0x10,  /* with SHAPE_LOGIN: a discovery session */
    SHAPE_END_SHIFT = 5,     /* two bits: how the session ends (enum ending) */
    SHAPE_END_MASK = 0x60,
    SHAPE_KEEP_OUTPUT = 0x80, /* leave replies queued until the end (lent read buffers outlive tasks) */
};

enum ending {
    END_DRAIN_THEN_FREE, /* the initiator vanished after everything was answered */
    END_FREE_IN_FLIGHT,  /* the initiator vanished mid-command: detached completions */
    END_INPUT_CLOSED,    /* end of stream, then drain as the server does */
    END_SHUTDOWN,        /* SIGTERM halfway through the input, then drain */
};

enum {
    PREFIX_SIZE = 2,
    SERVER_INPUT_BUFFER = 16 * 1024, /* server/connection.c INPUT_BUFFER_SIZE */
    DISK_SIZE = 1 << 20,
    READ_ONLY_SIZE = 256 << 10,
    BHS = 48,
};

#define TARGET_IQN "iqn.2026-12.org.example:fuzz"
#define EMPTY_IQN "iqn.2026-12.org.example:empty"

struct fuzz_world {
    struct ev_loop *loop;
    struct aio_context *ctx;
    struct export_table *table;
    int disk_fd; /* reset to holes before each input */
    struct iscsi_lun_config luns[3];
    struct iscsi_target_config targets[5];
    struct iscsi_settings settings;
};

/* The initiator's view of the bytes the target sent (audit_output). */
struct audit {
    uint8_t header[BHS + 4]; /* with its digest once negotiated */
    size_t header_have;
    uint32_t data_left;   /* the data segment still to read */
    uint32_t pad_left;    /* then its padding, which must be zero */
    uint32_t digest_left; /* then its digest */
    uint8_t digest[4];
    uint32_t crc;         /* CRC32C of the segment and padding so far */
    bool stat_sn_known;
    uint32_t stat_sn;     /* the StatSN the next status must carry */
    bool exp_cmd_sn_known;
    uint32_t exp_cmd_sn;
    bool refused;         /* a login response with a non-zero status class was sent */
    bool full_feature;    /* a final login response entered the full feature phase */
    bool header_digest, data_digest; /* negotiated: in effect once the login ended */
    bool want_header_digest, want_data_digest;
    char pair[32];        /* the login response key=value being read, for the digest answers */
    size_t pair_length;
};

struct fuzz_run {
    void *session;
    struct send_queue *out;
    struct audit audit;
    uint8_t shape;
    const uint8_t *input;
    size_t position, end; /* consumed by the session; delivered so far */
    bool shut_down;
    bool freed;
};

static struct fuzz_world world;
static bool world_ready;
static const struct session_protocol *const proto = &iscsi_session_protocol;

static void fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("fuzz_iscsi_session: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

static uint8_t pattern_byte(uint64_t offset) { return (uint8_t)(offset * 13 + offset / 4096 + 5); }

/* A temp file of size bytes (holes, or a pattern): an fd open read-write, its path in path. */
static int temp_file(uint64_t size, bool pattern, char *path, size_t path_size)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, path_size, "%s/luna-fuzz-iscsi-XXXXXX", dir && *dir ? dir : "/tmp");
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

static int add_export(const char *name, uint64_t size, bool pattern, bool readonly)
{
    char path[4096];
    int fd = temp_file(size, pattern, path, sizeof(path));
    struct export_config config = {0};
    config.name = (char *)name;
    bdev_options_init(&config.bdev);
    config.bdev.path = path;
    config.bdev.readonly = readonly;
    config.bdev.aio = BDEV_AIO_THREADS;
    struct export *export = NULL;
    char *message = NULL;
    int rc = export_open(&config, &export, &message);
    unlink(path); /* the bdev holds its own descriptor: no crash leaves files behind */
    if (rc < 0)
        fail("export_open %s: %s", name, message ? message : strerror(-rc));
    if (export_table_add(world.table, export) < 0)
        fail("export_table_add %s: out of memory", name);
    if (readonly) {
        close(fd);
        return -1;
    }
    return fd;
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
    world.disk_fd = add_export("disk", DISK_SIZE, false, false);
    add_export("ro", READ_ONLY_SIZE, true, true);

    world.luns[0] = (struct iscsi_lun_config){.number = 0, .export_name = "disk"};
    world.luns[1] = (struct iscsi_lun_config){.number = 1, .export_name = "ro"};
    world.luns[2] = (struct iscsi_lun_config){.number = 5, .export_name = "missing"};
    world.targets[0] = (struct iscsi_target_config){
        .iqn = TARGET_IQN, .alias = "fuzz target", .luns = world.luns, .lun_count = 3};
    /* Targets without LUNs: enough of them that SendTargets=All outgrows a 512-byte segment. */
    static char *const empty[] = {EMPTY_IQN, EMPTY_IQN "2", EMPTY_IQN "3", EMPTY_IQN "4"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++)
        world.targets[1 + i] = (struct iscsi_target_config){.iqn = empty[i]};
    static char *portals[] = {"0.0.0.0:3260", "192.0.2.1:3260", "[2001:db8::1]:3260"};
    world.settings = (struct iscsi_settings){.targets = world.targets,
                                             .target_count = 5,
                                             .portals = portals,
                                             .portal_count = sizeof(portals) / sizeof(portals[0])};
    world_ready = true;
}

/* Every input starts from the same disk contents, so a crash reproduces from its file alone. */
static void world_reset(void)
{
    if (fallocate(world.disk_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, DISK_SIZE) < 0)
        fail("fallocate: %s", strerror(errno));
}

static void wake(void *opaque)
{
    struct fuzz_run *run = opaque;
    if (run->freed)
        fail("wake after the session was freed");
}

static const struct session_ops fuzz_ops = {.wake = wake};

/* ---- the login SHAPE_LOGIN puts first ---- */

static size_t put_keys(uint8_t *out, const char *const *keys)
{
    size_t length = 0;
    for (; *keys; keys++) {
        size_t n = strlen(*keys) + 1;
        memcpy(out + length, *keys, n);
        length += n;
    }
    return length;
}

/* One Login PDU, operational stage straight to full feature; CmdSN 1, so the input's first command is 1. */
static size_t canned_login(uint8_t *out, bool discovery)
{
    static const char *const normal[] = {
        "InitiatorName=iqn.2026-12.org.example:fuzzer", "TargetName=" TARGET_IQN, "SessionType=Normal",
        "HeaderDigest=None", "DataDigest=None", "MaxRecvDataSegmentLength=4096", "MaxBurstLength=16384",
        "FirstBurstLength=8192", "ImmediateData=Yes", "MaxOutstandingR2T=2", NULL};
    static const char *const discover[] = {"InitiatorName=iqn.2026-12.org.example:fuzzer", "SessionType=Discovery",
                                           "MaxRecvDataSegmentLength=512", NULL};
    memset(out, 0, BHS);
    out[0] = 0x43;              /* Login, immediate */
    out[1] = 0x80 | 1 << 2 | 3; /* T, CSG operational, NSG full feature */
    static const uint8_t isid[6] = {0x80, 0, 0, 0x42, 0, 1};
    memcpy(out + 8, isid, sizeof(isid));
    store_be32(out + 24, 1);
    size_t length = put_keys(out + BHS, discovery ? discover : normal);
    store_be24(out + 5, (uint32_t)length);
    size_t padded = (length + 3) & ~(size_t)3;
    memset(out + BHS + length, 0, padded - length);
    return BHS + padded;
}

/* ---- the output, read as an initiator would ---- */

static bool target_opcode(uint8_t opcode)
{
    return (opcode >= 0x20 && opcode <= 0x26) || opcode == 0x31 || opcode == 0x32 || opcode == 0x3f;
}

/* Serial number arithmetic (RFC 1982): a before b. */
static bool serial_before(uint32_t a, uint32_t b) { return a != b && (uint32_t)(b - a) < 0x80000000u; }

/* CRC32C (Castagnoli, reflected), as iSCSI digests use it (RFC 7143 §13.1). */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *data, size_t length)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            table[i] = c;
        }
    for (size_t i = 0; i < length; i++)
        crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

/* A digest on the wire: the complemented CRC, least significant byte first. */
static bool digest_ok(uint32_t crc, const uint8_t *digest)
{
    uint32_t value = ~crc;
    for (int i = 0; i < 4; i++)
        if (digest[i] != (uint8_t)(value >> (8 * i)))
            return false;
    return true;
}

/* Remember whether a login response answered CRC32C for a digest (they start after the login). */
static void scan_login_keys(struct audit *audit, uint8_t byte)
{
    if (byte != 0) {
        if (audit->pair_length < sizeof(audit->pair))
            audit->pair[audit->pair_length] = (char)byte;
        audit->pair_length++;
        return;
    }
    /* The last answer counts: luna answers a repeated key again (see the report on repeated keys). */
    static const char header[] = "HeaderDigest=", data[] = "DataDigest=";
    size_t length = audit->pair_length < sizeof(audit->pair) ? audit->pair_length : sizeof(audit->pair);
    const char *pair = audit->pair;
    if (length > strlen(header) && memcmp(pair, header, strlen(header)) == 0)
        audit->want_header_digest = length == strlen(header) + 6 && memcmp(pair + strlen(header), "CRC32C", 6) == 0;
    if (length > strlen(data) && memcmp(pair, data, strlen(data)) == 0)
        audit->want_data_digest = length == strlen(data) + 6 && memcmp(pair + strlen(data), "CRC32C", 6) == 0;
    audit->pair_length = 0;
}

/* A whole PDU was read: digests negotiated by the login apply from the next one on. */
static void pdu_done(struct audit *audit)
{
    audit->pair_length = 0;
    if (audit->full_feature) {
        audit->header_digest = audit->want_header_digest;
        audit->data_digest = audit->want_data_digest;
    }
}

static void audit_header(struct audit *audit)
{
    const uint8_t *h = audit->header;
    uint8_t opcode = h[0] & 0x3f;
    uint32_t length = load_be24(h + 5);
    if (audit->header_digest && !digest_ok(crc32c_update(0xffffffffu, h, BHS), h + BHS))
        fail("opcode %#x with a wrong header digest", opcode);
    if (!target_opcode(opcode))
        fail("the target sent opcode %#x", opcode);
    if (h[4] != 0)
        fail("the target sent %u bytes of AHS", h[4] * 4u);
    if (audit->refused)
        fail("opcode %#x sent after a refused login", opcode);
    if (opcode == 0x3f && length != BHS)
        fail("a Reject with a %u-byte data segment (the rejected header is 48)", length);
    /*
     * StatSN: every status advances it by one; R2Ts and unsolicited NOP-Ins carry the next one
     * without taking it (§11.8.2, §11.19.3); Data-In carries one only with the S bit.
     */
    bool ping = opcode == 0x20 && load_be32(h + 16) == 0xffffffffu;
    bool status = opcode != 0x31 && !ping && !(opcode == 0x25 && !(h[1] & 0x01));
    uint32_t stat_sn = load_be32(h + 24);
    if (status) {
        if (audit->stat_sn_known && stat_sn != audit->stat_sn)
            fail("opcode %#x with StatSN %u, expected %u", opcode, stat_sn, audit->stat_sn);
        audit->stat_sn = stat_sn + 1;
        audit->stat_sn_known = true;
    } else if ((opcode == 0x31 || ping) && audit->stat_sn_known && stat_sn != audit->stat_sn) {
        fail("opcode %#x with StatSN %u, the next is %u", opcode, stat_sn, audit->stat_sn);
    }
    uint32_t exp_cmd_sn = load_be32(h + 28), max_cmd_sn = load_be32(h + 32);
    if (audit->exp_cmd_sn_known && serial_before(exp_cmd_sn, audit->exp_cmd_sn))
        fail("ExpCmdSN went back from %u to %u", audit->exp_cmd_sn, exp_cmd_sn);
    audit->exp_cmd_sn = exp_cmd_sn;
    audit->exp_cmd_sn_known = true;
    if ((uint32_t)(max_cmd_sn + 1 - exp_cmd_sn) > 128)
        fail("a CmdSN window of %u (ExpCmdSN %u, MaxCmdSN %u)", max_cmd_sn + 1 - exp_cmd_sn, exp_cmd_sn,
             max_cmd_sn);
    if ((opcode == 0x21 || opcode == 0x25) && (h[1] & 0x06) == 0x06)
        fail("opcode %#x with both overflow and underflow", opcode);
    if (opcode == 0x23) {
        if (h[36] != 0)
            audit->refused = true;
        else if ((h[1] & 0x83) == 0x83)
            audit->full_feature = true;
    }
    audit->data_left = length;
    audit->pad_left = (4 - (length & 3)) & 3;
    audit->digest_left = length && audit->data_digest ? 4u : 0u;
    audit->crc = 0xffffffffu;
}

/* One byte of a data segment, its padding or its digest. */
static void audit_segment_byte(struct audit *audit, uint8_t byte)
{
    uint8_t opcode = audit->header[0] & 0x3f;
    if (audit->data_left) {
        audit->data_left--;
        audit->crc = crc32c_update(audit->crc, &byte, 1);
        if (opcode == 0x23)
            scan_login_keys(audit, byte);
    } else if (audit->pad_left) {
        audit->pad_left--;
        audit->crc = crc32c_update(audit->crc, &byte, 1);
        if (byte != 0)
            fail("a padding byte of %#x after opcode %#x", byte, opcode);
    } else {
        audit->digest[4 - audit->digest_left--] = byte;
        if (audit->digest_left == 0 && !digest_ok(audit->crc, audit->digest))
            fail("opcode %#x with a wrong data digest", opcode);
    }
}

/* Parse everything the target sent: the bytes go to the audit, then they are gone. */
static void audit_output(struct audit *audit, const uint8_t *data, size_t length)
{
    for (size_t at = 0; at < length;) {
        if (audit->data_left || audit->pad_left || audit->digest_left) {
            audit_segment_byte(audit, data[at++]);
            if (!audit->data_left && !audit->pad_left && !audit->digest_left)
                pdu_done(audit);
            continue;
        }
        size_t size = BHS + (audit->header_digest ? 4u : 0u);
        size_t n = size - audit->header_have < length - at ? size - audit->header_have : length - at;
        memcpy(audit->header + audit->header_have, data + at, n);
        audit->header_have += n;
        at += n;
        if (audit->header_have == size) {
            audit->header_have = 0;
            audit_header(audit);
            if (!audit->data_left && !audit->pad_left && !audit->digest_left)
                pdu_done(audit);
        }
    }
}

static void take_output(struct fuzz_run *run)
{
    static uint8_t sink[64 * 1024];
    while (!send_queue_empty(run->out)) {
        size_t n = send_queue_drain(run->out, sink, sizeof(sink));
        if (n == 0)
            fail("send_queue_drain made no progress with %zu bytes queued", send_queue_length(run->out));
        audit_output(&run->audit, sink, n);
    }
}

/* ---- feeding, as server/connection.c does ---- */

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

/* process_input: hand the session the buffered bytes [position, end) while it takes them. */
static void feed(struct fuzz_run *run)
{
    while (proto->status(run->session) == SESSION_ACTIVE) {
        size_t available = run->end - run->position;
        struct iovec target;
        if (proto->payload(run->session, &target)) {
            if (available == 0)
                break;
            if (target.iov_len == 0)
                fail("payload target of 0 bytes");
            size_t n = available < target.iov_len ? available : target.iov_len;
            memcpy(target.iov_base, run->input + run->position, n);
            run->position += n;
            proto->payload_done(run->session, n);
            continue;
        }
        if (available == 0 || !proto->wants_input(run->session))
            break;
        size_t used = proto->input(run->session, run->input + run->position, available);
        if (used > available)
            fail("input() consumed %zu of %zu bytes", used, available);
        run->position += used;
        if (used < available && proto->status(run->session) == SESSION_ACTIVE && proto->wants_input(run->session) &&
            !proto->payload(run->session, &target))
            fail("session stalled: consumed %zu of %zu bytes yet still wants input", used, available);
        if (used == 0 && !proto->payload(run->session, &target))
            break;
    }
}

static void settle(void)
{
    aio_context_drain(world.ctx);
    if (aio_context_pending(world.ctx) != 0)
        fail("aio_context_drain returned with %llu requests pending",
             (unsigned long long)aio_context_pending(world.ctx));
}

/* After a settle with nothing queued, an active session not receiving a segment must want input. */
static void check_not_wedged(struct fuzz_run *run)
{
    struct iovec target;
    if (proto->status(run->session) != SESSION_ACTIVE || !send_queue_empty(run->out))
        return;
    if (proto->payload(run->session, &target))
        return;
    if (proto->inflight(run->session) != 0)
        fail("%u commands executing after the loop drained", proto->inflight(run->session));
    if (!proto->wants_input(run->session))
        fail("active session refuses input with nothing executing and nothing queued");
}

static void settle_and_feed(struct fuzz_run *run)
{
    settle();
    if (!(run->shape & SHAPE_KEEP_OUTPUT) || !proto->wants_input(run->session))
        take_output(run);
    check_not_wedged(run);
    feed(run);
}

static void catch_up(struct fuzz_run *run)
{
    while (run->position < run->end && proto->status(run->session) == SESSION_ACTIVE) {
        size_t before = run->position;
        settle_and_feed(run);
        if (run->position == before && proto->status(run->session) == SESSION_ACTIVE)
            fail("session took nothing of %zu buffered bytes after the loop drained", run->end - before);
    }
}

static enum ending run_ending(const struct fuzz_run *run)
{
    return (enum ending)((run->shape & SHAPE_END_MASK) >> SHAPE_END_SHIFT);
}

/* Offer the input in chunks, as reads from a socket would deliver it. */
static void converse(struct fuzz_run *run, size_t size, uint32_t random_state)
{
    size_t limit = chunk_limit(run->shape);
    while (run->end < size && proto->status(run->session) == SESSION_ACTIVE) {
        if (run_ending(run) == END_SHUTDOWN && !run->shut_down && run->end >= size / 2) {
            proto->shutdown(run->session);
            run->shut_down = true;
        }
        size_t room = SERVER_INPUT_BUFFER - (run->end - run->position);
        if (room == 0) {
            catch_up(run);
            if (run->end - run->position == SERVER_INPUT_BUFFER && proto->status(run->session) == SESSION_ACTIVE)
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
            settle_and_feed(run);
            catch_up(run);
        } else {
            ev_run(world.loop, EVRUN_NOWAIT);
            if (!(run->shape & SHAPE_KEEP_OUTPUT))
                take_output(run);
            feed(run);
        }
    }
    catch_up(run);
}

/* How the connection ends; then the session is freed, maybe under commands in flight. */
static void finish(struct fuzz_run *run)
{
    switch (run_ending(run)) {
    case END_DRAIN_THEN_FREE:
        settle();
        take_output(run);
        check_not_wedged(run);
        break;
    case END_FREE_IN_FLIGHT:
        break;
    case END_INPUT_CLOSED:
        proto->input_closed(run->session);
        settle();
        if (proto->status(run->session) == SESSION_ACTIVE)
            fail("session still active after input_closed");
        if (proto->inflight(run->session) != 0)
            fail("%u commands executing after end of input and a drained loop", proto->inflight(run->session));
        take_output(run);
        break;
    case END_SHUTDOWN:
        if (!run->shut_down)
            proto->shutdown(run->session);
        settle();
        take_output(run);
        if (proto->inflight(run->session) != 0)
            fail("%u commands executing after shutdown and a drained loop", proto->inflight(run->session));
        break;
    }
    /* server/connection.c order: the queue first (it may lend read buffers), then the session. */
    send_queue_free(run->out);
    proto->free(run->session);
    run->freed = true;
    settle(); /* detached completions run here and free the session's record */
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
    size -= PREFIX_SIZE;
    /* The canned login and the input as one stream, so chunks may split them anywhere. */
    uint8_t *stream = malloc(1024 + size);
    if (!stream)
        fail("out of memory for a %zu-byte input", size);
    size_t login = run.shape & SHAPE_LOGIN ? canned_login(stream, run.shape & SHAPE_DISCOVERY) : 0;
    memcpy(stream + login, data + PREFIX_SIZE, size);
    run.input = stream;

    run.out = send_queue_new();
    if (!run.out)
        fail("send_queue_new: out of memory");
    struct session_start start = {
        .peer = "fuzz",
        .local = "127.0.0.1:3260",
        .exports = world.table,
        .ctx = world.ctx,
        .out = run.out,
        .ops = &fuzz_ops,
        .opaque = &run,
        .settings = &world.settings,
    };
    run.session = proto->create(&start);
    if (!run.session)
        fail("create: out of memory");

    converse(&run, login + size, random_state);
    finish(&run);
    free(stream);
    return 0;
}
