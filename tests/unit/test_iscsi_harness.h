/*
 * Shared by the iSCSI target tests: a session made through
 * iscsi_session_protocol over a real libev loop, aio_context and export
 * table (temp raw files), fed handcrafted initiator PDUs the way
 * server/connection.c feeds socket bytes, and a reader that parses every
 * PDU the session queued (BHS, data segment, padding).
 *
 * The target: IH_TARGET_IQN (alias IH_TARGET_ALIAS) with LUN 0 -> "disk"
 * (writable, IH_DISK_SIZE, sparse) and LUN 1 -> "pattern" (read-only,
 * IH_PATTERN_SIZE, filled with session_pattern_byte()).  Portals: IH_PORTAL and
 * the wildcard "0.0.0.0:3260", which SendTargets must answer with the
 * session's local address (IH_LOCAL), plus options.extra_portals more.
 *
 * The constants are written from RFC 7143 §11, not taken from the target's
 * headers, so the tests check the wire format independently.
 */
#ifndef LUNA_TESTS_TEST_ISCSI_HARNESS_H
#define LUNA_TESTS_TEST_ISCSI_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/byte_order.h"
#include "protocols/iscsi/iscsi_target.h"
#include "test_session_util.h"

#define IH_TARGET_IQN "iqn.2026-12.org.example:disk"
#define IH_TARGET_ALIAS "test disk"
#define IH_INITIATOR_IQN "iqn.2026-12.org.example:initiator"
#define IH_PORTAL "192.0.2.10:3260"
#define IH_LOCAL "127.0.0.1:3260"
#define IH_DISK_SIZE (4u << 20)
#define IH_PATTERN_SIZE (2u << 20)
#define IH_BLOCK 512u
#define IH_TARGET_MAX_RECV 262144u /* what luna declares (docs/iscsi.md) */

#define IH_BHS 48u
#define IH_RESERVED_TAG 0xffffffffu

/* Opcodes (§11.1.1); initiator side first. */
enum {
    IH_OP_NOP_OUT = 0x00,
    IH_OP_SCSI_COMMAND = 0x01,
    IH_OP_TMF = 0x02,
    IH_OP_LOGIN = 0x03,
    IH_OP_TEXT = 0x04,
    IH_OP_DATA_OUT = 0x05,
    IH_OP_LOGOUT = 0x06,
    IH_OP_SNACK = 0x10,
    IH_OP_NOP_IN = 0x20,
    IH_OP_SCSI_RESPONSE = 0x21,
    IH_OP_TMF_RESPONSE = 0x22,
    IH_OP_LOGIN_RESPONSE = 0x23,
    IH_OP_TEXT_RESPONSE = 0x24,
    IH_OP_DATA_IN = 0x25,
    IH_OP_LOGOUT_RESPONSE = 0x26,
    IH_OP_R2T = 0x31,
    IH_OP_REJECT = 0x3f,
};
#define IH_IMMEDIATE 0x40 /* byte 0 */

/* Byte 1 flags. */
enum {
    IH_F = 0x80,
    IH_LOGIN_T = 0x80,
    IH_LOGIN_C = 0x40,
    IH_TEXT_C = 0x40,
    IH_CMD_R = 0x40,
    IH_CMD_W = 0x20,
    IH_CMD_SIMPLE = 0x01,
    IH_DATA_S = 0x01,
    IH_DATA_U = 0x02,
    IH_DATA_O = 0x04,
    IH_RESP_U = 0x02,
    IH_RESP_O = 0x04,
};
/* Login flags: T, CSG and NSG. */
#define IH_STAGES(csg, nsg) ((uint8_t)((csg) << 2 | (nsg)))
enum { IH_SECURITY = 0, IH_OPERATIONAL = 1, IH_FULL_FEATURE = 3 };

/* One PDU the target queued. */
struct ih_pdu {
    uint8_t bhs[IH_BHS];
    const uint8_t *data; /* into the harness's output; valid until more output is read */
    uint32_t length;
};

static inline uint8_t ih_opcode(const struct ih_pdu *pdu) { return pdu->bhs[0] & 0x3f; }
static inline uint32_t ih_itt(const struct ih_pdu *pdu) { return load_be32(pdu->bhs + 16); }
static inline uint32_t ih_ttt(const struct ih_pdu *pdu) { return load_be32(pdu->bhs + 20); }
static inline uint32_t ih_stat_sn(const struct ih_pdu *pdu) { return load_be32(pdu->bhs + 24); }
static inline uint32_t ih_exp_cmd_sn(const struct ih_pdu *pdu) { return load_be32(pdu->bhs + 28); }
static inline uint32_t ih_max_cmd_sn(const struct ih_pdu *pdu) { return load_be32(pdu->bhs + 32); }

struct ih_options {
    const char *local;    /* session_start.local; NULL: IH_LOCAL */
    size_t extra_portals; /* "198.51.100.N:3260" after the two standard ones */
};

/* The operational keys a normal login offers (0 / NULL: not offered). */
struct ih_login_params {
    uint32_t max_recv;      /* the initiator's MaxRecvDataSegmentLength */
    uint32_t max_burst;
    uint32_t first_burst;
    uint32_t max_outstanding_r2t;
    const char *immediate_data; /* "Yes" / "No" */
};

struct iscsi_harness {
    struct session_world world; /* loop, exports, send queue, output */
    void *session;
    const char *disk_path;
    struct iscsi_lun_config luns[2];
    struct iscsi_target_config target;
    struct iscsi_settings settings;
    char **portals;
    size_t portal_count;
    size_t chunk; /* feed at most this many bytes per input() call; 0: all at once */

    /* The initiator's side. */
    uint8_t isid[6];
    uint32_t cmd_sn;      /* CmdSN of the next non-immediate command */
    uint32_t exp_stat_sn; /* the StatSN the next status-carrying PDU must have */
    bool stat_sn_known;   /* set by the first login response */
    uint32_t login_itt;
    /* What the last successful normal login negotiated, from the target's answers. */
    uint32_t max_burst, first_burst, max_outstanding_r2t;
    bool immediate_data;
    uint16_t tsih;
};

/* options may be NULL. */
void ih_init(struct iscsi_harness *h, const struct ih_options *options);
void ih_fini(struct iscsi_harness *h);

/*
 * Feed bytes; asserts an active session took them all (one that stopped may
 * leave the rest).  ih_feed_some returns how many it took.
 */
void ih_feed(struct iscsi_harness *h, const void *data, size_t length);
size_t ih_feed_some(struct iscsi_harness *h, const void *data, size_t length);
/* Run the loop until no disk request is pending. */
void ih_wait(struct iscsi_harness *h);
enum session_status ih_status(const struct iscsi_harness *h);
bool ih_wants_input(const struct iscsi_harness *h);
bool ih_negotiated(const struct iscsi_harness *h);
uint32_t ih_inflight(const struct iscsi_harness *h);

/* The next PDU queued (asserts one is there, its padding is zeroes). */
void ih_next(struct iscsi_harness *h, struct ih_pdu *pdu);
/* Queued bytes not yet parsed. */
size_t ih_output_left(struct iscsi_harness *h);
void ih_expect_nothing(struct iscsi_harness *h);
/* A status-carrying PDU: asserts its StatSN is the next one and counts it. */
void ih_expect_stat_sn(struct iscsi_harness *h, const struct ih_pdu *pdu);

/* ---- building PDUs ---- */
/* "k=v\0" for each string of the NULL-terminated list; returns the length. */
uint32_t ih_keys(char *out, size_t size, ...) __attribute__((sentinel));
/* Frame bhs (its DataSegmentLength set here) with a data segment and padding, and feed it. */
void ih_send(struct iscsi_harness *h, uint8_t *bhs, const void *data, uint32_t length);
/* Login request with the harness's ISID, a TSIH, and keys. */
void ih_login(struct iscsi_harness *h, uint8_t flags, uint16_t tsih, const char *keys, uint32_t length);
/* SCSI Command (non-immediate: takes the next CmdSN). */
void ih_command(struct iscsi_harness *h, uint32_t itt, uint8_t flags, uint64_t lun, uint32_t edtl,
                const uint8_t *cdb, const void *immediate, uint32_t length);
/* The same with an explicit CmdSN (the harness's count is left alone). */
void ih_command_sn(struct iscsi_harness *h, uint32_t itt, uint8_t flags, uint64_t lun, uint32_t edtl,
                   const uint8_t *cdb, uint32_t cmd_sn, const void *immediate, uint32_t length);
void ih_data_out(struct iscsi_harness *h, uint32_t itt, uint32_t ttt, uint64_t lun, uint32_t data_sn,
                 uint32_t offset, const void *data, uint32_t length, bool final);
/* NOP-Out; immediate ones carry CmdSN without taking it. */
void ih_nop_out(struct iscsi_harness *h, uint32_t itt, bool immediate, const void *data, uint32_t length);
void ih_text(struct iscsi_harness *h, uint32_t itt, uint32_t ttt, uint8_t flags, const char *keys,
             uint32_t length);
void ih_logout(struct iscsi_harness *h, uint32_t itt, uint8_t reason);
/* Task Management Function request, immediate. */
void ih_tmf(struct iscsi_harness *h, uint32_t itt, uint8_t function, uint64_t lun, uint32_t ref_itt,
            uint32_t ref_cmd_sn);
/* The 8-byte LUN field, single level peripheral addressing (SAM-5). */
void ih_lun_field(uint8_t *field, uint64_t lun);

/* CDBs (16 bytes, zeroed first). */
void ih_cdb_inquiry(uint8_t *cdb, uint16_t allocation);
void ih_cdb_test_unit_ready(uint8_t *cdb);
void ih_cdb_read10(uint8_t *cdb, uint32_t lba, uint16_t blocks);
void ih_cdb_write10(uint8_t *cdb, uint32_t lba, uint16_t blocks);

/* ---- parsing answers ---- */
/* The value of key in a text segment, or NULL; asserts it appears at most once. */
const char *ih_key(const struct ih_pdu *pdu, const char *key);
/* Asserts the key is answered with exactly value. */
void ih_expect_key(const struct ih_pdu *pdu, const char *key, const char *value);
/* Reads a login response: opcode, ISID, ITT, flags and status class/detail. */
void ih_login_response(struct iscsi_harness *h, struct ih_pdu *pdu, uint8_t flags, uint16_t status);
/* A whole normal login (security, then operational stage) to full feature; params may be NULL. */
void ih_login_normal(struct iscsi_harness *h, const struct ih_login_params *params);
/* A discovery login in one operational PDU, declaring max_recv. */
void ih_login_discovery(struct iscsi_harness *h, uint32_t max_recv);
/* SCSI Response for itt with status (asserts the StatSN); returns it in pdu. */
void ih_scsi_response(struct iscsi_harness *h, struct ih_pdu *pdu, uint32_t itt, uint8_t status);
/* TEST UNIT READY until the power-on unit attention of lun is consumed. */
void ih_clear_unit_attention(struct iscsi_harness *h, uint64_t lun);
/* Read the disk export's file directly. */
void ih_read_disk(struct iscsi_harness *h, uint64_t offset, void *buffer, size_t length);

#endif
