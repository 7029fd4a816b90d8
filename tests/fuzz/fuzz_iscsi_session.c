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
 * portals include a wildcard.  fuzz_world.c feeds the input the way
 * server/connection.c feeds socket data: at most its 16 KiB input buffer
 * held, unconsumed bytes offered again, data segments copied straight into
 * the session's payload target.
 *
 * Besides the sanitizers (crashes, leaks, undefined behaviour) and
 * libFuzzer's timeout (loops), fuzz_world.c checks what a crash would not
 * show: the session never stalls with input offered, never wedges (active,
 * nothing in flight or queued, yet refusing input), leaves nothing pending
 * on the aio_context, never wakes after free.  Every byte it sends is
 * parsed here as an initiator would (audit_output): framing and zero padding,
 * CRC32C header and data digests once negotiated, target opcodes only, no
 * AHS, StatSN advancing by one on each status, ExpCmdSN never going back
 * and a window of at most 128, Reject carrying the 48-byte header, nothing
 * after a refused login.
 *
 * Input layout: byte 0 selects the run's shape (enum fuzz_shape_bits, and
 * enum shape_bits here), byte 1 seeds the chunk sizes, the rest is what
 * the initiator sends.  With
 * SHAPE_LOGIN the run starts with a valid login (normal, or discovery with
 * SHAPE_DISCOVERY) built here, so mutations spend their bytes on the full
 * feature phase; without it the input is the whole conversation.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "protocols/iscsi/iscsi_target.h"
#include "tests/fuzz/fuzz_world.h"

/* The target's own bits of the shape (FUZZ_SHAPE_TARGET_BITS); the rest are fuzz_world.h's. */
enum shape_bits {
    SHAPE_LOGIN = 0x08,     /* a valid login first, then the input */
    SHAPE_DISCOVERY = 0x10, /* with SHAPE_LOGIN: a discovery session */
};

enum {
    DISK_SIZE = 1 << 20,
    READ_ONLY_SIZE = 256 << 10,
    BHS = 48,
};

#define TARGET_IQN "iqn.2026-12.org.example:fuzz"
#define EMPTY_IQN "iqn.2026-12.org.example:empty"

/* The target table the sessions are made with (the exports are fuzz_world's). */
struct iscsi_world {
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

static struct iscsi_world world;

static void world_init(void)
{
    fuzz_world_init("fuzz_iscsi_session");
    /* The thread-pool engine: completions come back through the loop, as on a busy server. */
    fuzz_world_add_export(&(struct fuzz_export){.name = "disk", .size = DISK_SIZE, .aio = BDEV_AIO_THREADS});
    fuzz_world_add_export(&(struct fuzz_export){
        .name = "ro", .size = READ_ONLY_SIZE, .pattern = true, .readonly = true, .aio = BDEV_AIO_THREADS});

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
}

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
        fuzz_fail("opcode %#x with a wrong header digest", opcode);
    if (!target_opcode(opcode))
        fuzz_fail("the target sent opcode %#x", opcode);
    if (h[4] != 0)
        fuzz_fail("the target sent %u bytes of AHS", h[4] * 4u);
    if (audit->refused)
        fuzz_fail("opcode %#x sent after a refused login", opcode);
    if (opcode == 0x3f && length != BHS)
        fuzz_fail("a Reject with a %u-byte data segment (the rejected header is 48)", length);
    /*
     * StatSN: every status advances it by one; R2Ts and unsolicited NOP-Ins carry the next one
     * without taking it (§11.8.2, §11.19.3); Data-In carries one only with the S bit.
     */
    bool ping = opcode == 0x20 && load_be32(h + 16) == 0xffffffffu;
    bool status = opcode != 0x31 && !ping && !(opcode == 0x25 && !(h[1] & 0x01));
    uint32_t stat_sn = load_be32(h + 24);
    if (status) {
        if (audit->stat_sn_known && stat_sn != audit->stat_sn)
            fuzz_fail("opcode %#x with StatSN %u, expected %u", opcode, stat_sn, audit->stat_sn);
        audit->stat_sn = stat_sn + 1;
        audit->stat_sn_known = true;
    } else if ((opcode == 0x31 || ping) && audit->stat_sn_known && stat_sn != audit->stat_sn) {
        fuzz_fail("opcode %#x with StatSN %u, the next is %u", opcode, stat_sn, audit->stat_sn);
    }
    uint32_t exp_cmd_sn = load_be32(h + 28), max_cmd_sn = load_be32(h + 32);
    if (audit->exp_cmd_sn_known && serial_before(exp_cmd_sn, audit->exp_cmd_sn))
        fuzz_fail("ExpCmdSN went back from %u to %u", audit->exp_cmd_sn, exp_cmd_sn);
    audit->exp_cmd_sn = exp_cmd_sn;
    audit->exp_cmd_sn_known = true;
    if ((uint32_t)(max_cmd_sn + 1 - exp_cmd_sn) > 128)
        fuzz_fail("a CmdSN window of %u (ExpCmdSN %u, MaxCmdSN %u)", max_cmd_sn + 1 - exp_cmd_sn, exp_cmd_sn,
             max_cmd_sn);
    if ((opcode == 0x21 || opcode == 0x25) && (h[1] & 0x06) == 0x06)
        fuzz_fail("opcode %#x with both overflow and underflow", opcode);
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
            fuzz_fail("a padding byte of %#x after opcode %#x", byte, opcode);
    } else {
        audit->digest[4 - audit->digest_left--] = byte;
        if (audit->digest_left == 0 && !digest_ok(audit->crc, audit->digest))
            fuzz_fail("opcode %#x with a wrong data digest", opcode);
    }
}

/* Parse everything the target sent (fuzz_protocol.output): the bytes go to the audit, then they are gone. */
static void audit_output(void *opaque, const uint8_t *data, size_t length)
{
    struct audit *audit = opaque;
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

static const struct fuzz_protocol iscsi = {
    .session = &iscsi_session_protocol,
    .work = "commands",
    .output = audit_output,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_world_begin(size, world_init))
        return 0;

    struct audit audit = {0};
    struct fuzz_run run;
    fuzz_run_init(&run, &iscsi, &audit, data);
    size -= FUZZ_PREFIX_SIZE;
    /* The canned login and the input as one stream, so chunks may split them anywhere. */
    uint8_t *stream = malloc(1024 + size);
    if (!stream)
        fuzz_fail("out of memory for a %zu-byte input", size);
    size_t login = run.shape & SHAPE_LOGIN ? canned_login(stream, run.shape & SHAPE_DISCOVERY) : 0;
    memcpy(stream + login, data + FUZZ_PREFIX_SIZE, size);

    struct session_start start = {
        .peer = "fuzz",
        .local = "127.0.0.1:3260",
        .exports = fuzz_world.table,
        .ctx = fuzz_world.ctx,
        .out = run.out,
        .ops = &fuzz_session_ops,
        .opaque = &run,
        .settings = &world.settings,
    };
    run.session = iscsi.session->create(&start);
    if (!run.session)
        fuzz_fail("create: out of memory");

    fuzz_run_session(&run, stream, login + size);
    free(stream);
    return 0;
}
