/*
 * iscsi_internal: the session's state and the pieces its files share:
 * PDU layout (RFC 7143 §11), the negotiated parameters, the SCSI tasks,
 * and building PDUs into the send queue.
 *
 * Files: iscsi_session.c (framing the input, dispatch, NOP, Logout, TMF,
 * Reject, the session_protocol table), iscsi_login.c (login phase),
 * iscsi_text.c (key=value lists and the negotiation of each key),
 * iscsi_discovery.c (Text / SendTargets), iscsi_command.c (SCSI Command,
 * R2T / Data-Out, Data-In, SCSI Response).
 */
#ifndef LUNA_PROTOCOLS_ISCSI_INTERNAL_H
#define LUNA_PROTOCOLS_ISCSI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/byte_order.h"
#include "common/data_buffer.h"
#include "protocols/iscsi/iscsi_target.h"
#include "protocols/scsi/scsi.h"

#define ISCSI_BHS_SIZE 48u
#define ISCSI_RESERVED_TAG 0xffffffffu

/* Opcodes (byte 0, low six bits), initiator to target. */
enum {
    ISCSI_OP_NOP_OUT = 0x00,
    ISCSI_OP_SCSI_COMMAND = 0x01,
    ISCSI_OP_TASK_MANAGEMENT = 0x02,
    ISCSI_OP_LOGIN = 0x03,
    ISCSI_OP_TEXT = 0x04,
    ISCSI_OP_DATA_OUT = 0x05,
    ISCSI_OP_LOGOUT = 0x06,
    ISCSI_OP_SNACK = 0x10,
};
/* Target to initiator. */
enum {
    ISCSI_OP_NOP_IN = 0x20,
    ISCSI_OP_SCSI_RESPONSE = 0x21,
    ISCSI_OP_TASK_MANAGEMENT_RESPONSE = 0x22,
    ISCSI_OP_LOGIN_RESPONSE = 0x23,
    ISCSI_OP_TEXT_RESPONSE = 0x24,
    ISCSI_OP_DATA_IN = 0x25,
    ISCSI_OP_LOGOUT_RESPONSE = 0x26,
    ISCSI_OP_R2T = 0x31,
    ISCSI_OP_ASYNC_MESSAGE = 0x32,
    ISCSI_OP_REJECT = 0x3f,
};
#define ISCSI_IMMEDIATE 0x40 /* byte 0 */
#define ISCSI_FINAL 0x80     /* byte 1 */

/* Reject reasons (§11.17.1). */
enum {
    ISCSI_REJECT_DATA_DIGEST = 0x02,
    ISCSI_REJECT_PROTOCOL_ERROR = 0x04,
    ISCSI_REJECT_COMMAND_NOT_SUPPORTED = 0x05,
    ISCSI_REJECT_IMMEDIATE_COMMAND = 0x06,
    ISCSI_REJECT_INVALID_PDU_FIELD = 0x09,
    ISCSI_REJECT_OUT_OF_RESOURCES = 0x0a,
};

/* Limits luna declares or enforces. */
#define ISCSI_TARGET_MAX_RECV_SEGMENT (256u * 1024) /* our MaxRecvDataSegmentLength */
#define ISCSI_LOGIN_MAX_SEGMENT 8192u                /* until it is negotiated (§13.12) */
#define ISCSI_MAX_TEXT (64u * 1024)                  /* login / text keys gathered over C-bit PDUs */
#define ISCSI_QUEUE_DEPTH 128u                       /* commands accepted at once (the CmdSN window) */
#define ISCSI_MAX_TRANSFER (32u << 20)               /* the largest expected data transfer length */
#define ISCSI_MAX_BUFFERED (256u << 20)              /* task buffers of one session, at most (then TASK SET FULL) */
#define ISCSI_MAX_QUEUED_REPLIES (64u << 20)         /* replies waiting for the socket before input pauses */

/* What login negotiated (§13); the defaults are RFC 7143's, ours where we choose. */
struct iscsi_params {
    uint32_t max_recv_segment;   /* the initiator's MaxRecvDataSegmentLength: our Data-In limit */
    uint32_t max_burst;          /* MaxBurstLength */
    uint32_t first_burst;        /* FirstBurstLength */
    uint32_t max_outstanding_r2t;
    bool initial_r2t;
    bool immediate_data;
    bool header_digest, data_digest; /* CRC32C */
    bool first_burst_offered;    /* in the keys being answered: answered last */
    uint32_t time2wait, time2retain;
};

struct export_attach_request;

struct iscsi_text {
    char *data;
    size_t length, capacity;
    bool failed; /* out of memory */
};

struct iscsi_lun {
    uint64_t number;
    struct export *export;   /* one reference (an overlay view for exports with overlays) */
    struct scsi_lun *scsi;   /* NULL: not served (no such export, or its overlay failed) */
    struct iscsi_session *session;
    struct export_attach_request *attaching; /* the initiator's overlay being opened */
};

struct iscsi_session;

/* One SCSI command from its PDU to its response. */
struct iscsi_task {
    struct iscsi_task *prev, *next;  /* the session's tasks */
    struct iscsi_session *session;
    uint32_t itt, ttt, cmd_sn;
    uint64_t lun;
    bool read, write;
    bool executing;
    bool aborted;                    /* the connection is gone: no response */
    bool tmf_waiting;                /* an ABORT TASK waits for this task to end */
    uint32_t tmf_itt;
    uint32_t expected_length;        /* Expected Data Transfer Length */
    struct data_buffer *buffer;      /* write data gathered, or read data (data_buffer: O_DIRECT-aligned, recycled) */
    uint32_t received;               /* write data bytes received */
    uint32_t r2t_offset;             /* next offset an R2T asks for: data below it is solicited */
    uint32_t r2t_sn;
    uint32_t data_sn;                /* the next Data-Out's DataSN within its burst */
    uint32_t outstanding_r2t;
    uint32_t data_pdus;              /* R2Ts or Data-In sent: the response's ExpDataSN */
    struct scsi_task scsi;
};

enum iscsi_input {
    ISCSI_INPUT_HEADER,        /* gathering the 48-byte BHS */
    ISCSI_INPUT_AHS,           /* additional header segments (dropped, but digested) */
    ISCSI_INPUT_HEADER_DIGEST, /* its 4 bytes */
    ISCSI_INPUT_DATA,          /* the data segment, into data_target */
    ISCSI_INPUT_PAD,           /* padding to 4 bytes (digested) */
    ISCSI_INPUT_DATA_DIGEST,   /* its 4 bytes */
    ISCSI_INPUT_SKIP,          /* all of a segment nobody takes */
    ISCSI_INPUT_ATTACHING,     /* login waits for the initiator's overlays to open */
    ISCSI_INPUT_STOPPED,
};

/* CHAP in the security stage (iscsi_chap.c). */
enum iscsi_chap_state {
    ISCSI_CHAP_NONE,       /* not chosen */
    ISCSI_CHAP_OFFERED,    /* AuthMethod=CHAP answered: CHAP_A next */
    ISCSI_CHAP_CHALLENGED, /* CHAP_I / CHAP_C sent: CHAP_N / CHAP_R next */
    ISCSI_CHAP_DONE,       /* the initiator proved itself (and we did, for mutual CHAP) */
};

struct iscsi_chap_exchange {
    enum iscsi_chap_state state;
    uint8_t id;
    uint8_t challenge[16];
};

/* The CHAP keys of one login request. */
struct iscsi_chap_keys {
    bool have_algorithms, have_name, have_response, have_id, have_challenge;
    bool md5_offered;
    bool malformed;
    char name[256];
    uint8_t response[64];
    size_t response_length;
    uint8_t id;
    uint8_t challenge[1024];
    size_t challenge_length;
};

enum iscsi_phase {
    ISCSI_PHASE_LOGIN,
    ISCSI_PHASE_FULL_FEATURE,
};

struct iscsi_session {
    char *peer;
    char *local;         /* the portal the initiator connected to, "HOST:PORT"; may be NULL */
    struct export_table *exports;
    const struct iscsi_settings *settings;
    struct aio_context *ctx;
    struct send_queue *out;
    const struct session_ops *ops;
    void *opaque;
    enum session_status status;
    bool freed;          /* the connection let go; the last task frees the record */
    bool shutting_down;
    bool logged_out;     /* commands still executing get no response (§11.14) */

    /* Input framing. */
    enum iscsi_input input;
    uint8_t header[ISCSI_BHS_SIZE];
    size_t header_have;
    size_t skip;         /* AHS, padding or dropped bytes still to come */
    uint32_t crc;        /* the running CRC32C of the header or data segment */
    uint8_t digest[4];
    size_t digest_have;
    uint8_t *data;       /* a PDU's data segment when not a task's buffer */
    uint32_t data_length;
    uint8_t *data_target;
    uint32_t data_have;
    struct iscsi_task *data_task; /* the task whose buffer receives the segment, or NULL */

    /* Login. */
    enum iscsi_phase phase;
    int login_stage;     /* the CSG expected next: 0 security, 1 operational */
    bool discovery;
    uint8_t isid[6];
    uint16_t tsih;
    bool login_started;  /* the first Login PDU was seen */
    bool login_answered; /* a complete key set was answered */
    char *initiator_name;
    char *nexus;         /* the I_T nexus for the SCSI core: "IQN,i,0xISID" */
    const struct iscsi_target_config *target;
    struct iscsi_chap_exchange chap;
    char *login_text;    /* keys gathered while the C bit is set */
    size_t login_text_length;
    struct iscsi_params params;

    /* Full feature phase. */
    struct iscsi_lun *luns;   /* one slot per configured LUN */
    size_t lun_slots;
    uint64_t *lun_numbers;    /* the LUNs served, for REPORT LUNS */
    size_t lun_count;
    size_t luns_attaching;    /* overlays still opening: the login answer waits */
    bool lun_attach_failed;
    uint8_t login_header[ISCSI_BHS_SIZE]; /* the request the waiting answer is for */
    uint8_t login_flags;
    struct iscsi_text login_answer;
    uint32_t stat_sn, exp_cmd_sn;
    uint32_t next_ttt;
    struct iscsi_task tasks;  /* list head */
    uint32_t task_count;      /* tasks alive (received, executing, or sending) */
    uint64_t buffered;        /* their expected transfer lengths: the memory their buffers take */
    bool input_seen;          /* since the last tick */
    unsigned silent_ticks;
    bool ping_outstanding;
    /* iscsi_reinstate.c: the list of normal sessions, for reinstatement. */
    struct iscsi_session *listed_next;
    uint64_t listed_number;   /* 0: not listed */
    bool reinstated;          /* a newer login of this nexus asked for it to close (under the list's lock) */
    char *text_reply;         /* a SendTargets answer longer than one PDU */
    size_t text_reply_length, text_reply_sent;
    uint32_t text_ttt;
};

/* ---- iscsi_session.c ---- */
/* Log a violation and close the connection. */
void iscsi_session_violation(struct iscsi_session *session, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Queue a PDU: header (bhs, 48 bytes) and a data segment copied, padded, with the digests negotiated. */
void iscsi_send(struct iscsi_session *session, uint8_t *bhs, const void *data, uint32_t length);
/*
 * The same with the data lent to the send queue (release(arg) once written,
 * may be NULL).  -ENOMEM: the session is closing, release has not run.
 */
int iscsi_send_lent(struct iscsi_session *session, uint8_t *bhs, const void *data, uint32_t length,
                    void (*release)(void *arg), void *arg);
uint32_t iscsi_crc_update(uint32_t crc, const void *data, size_t length);
void iscsi_digest_store(uint32_t crc, uint8_t out[4]);
/* Fill the StatSN (advancing it when advance), ExpCmdSN and MaxCmdSN fields at bytes 24..35. */
void iscsi_fill_sequence(struct iscsi_session *session, uint8_t *bhs, bool advance);
void iscsi_reject(struct iscsi_session *session, const uint8_t *header, uint8_t reason);
void iscsi_tmf_respond(struct iscsi_session *session, uint32_t itt, uint8_t response);
void iscsi_wake(struct iscsi_session *session);
/* A non-immediate command takes the next CmdSN; false: ignore the PDU (a duplicate, or outside the window). */
bool iscsi_accept_cmd_sn(struct iscsi_session *session);
/* The task list. */
struct iscsi_task *iscsi_task_find(struct iscsi_session *session, uint32_t itt);
void iscsi_task_free(struct iscsi_task *task);
const struct iscsi_lun *iscsi_lun_find(const struct iscsi_session *session, uint64_t lun);
/* The 8-byte LUN field <-> a LUN number (SAM-5 peripheral and flat space addressing). */
uint64_t iscsi_lun_decode(const uint8_t *field);
void iscsi_lun_encode(uint64_t lun, uint8_t *field);

/* ---- iscsi_login.c ---- */
void iscsi_login_pdu(struct iscsi_session *session);
void iscsi_login_free(struct iscsi_session *session);

/* ---- iscsi_text.c ---- */
/* Append "key=value\0". */
void iscsi_text_add(struct iscsi_text *text, const char *key, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Call fn for each "key=value" of a text segment; -EINVAL (malformed) stops. */
int iscsi_text_each(const char *data, size_t length, int (*fn)(void *opaque, const char *key, const char *value),
                    void *opaque);
/*
 * Negotiate one operational key the initiator offered: the result (for
 * the response) in answer, or "NotUnderstood" / "Irrelevant"; params
 * updated.  -EINVAL for a value outside the key's domain (login fails).
 */
int iscsi_negotiate_key(struct iscsi_params *params, bool discovery, const char *key, const char *value,
                        struct iscsi_text *answer);
void iscsi_params_defaults(struct iscsi_params *params);
/* After a request's keys: the answers that depend on several keys (FirstBurstLength). */
void iscsi_negotiation_finish(struct iscsi_params *params, struct iscsi_text *answer);

/* ---- iscsi_reinstate.c ---- */
/* A normal session entered the full feature phase: list it; an older session of its nexus is closed. */
void iscsi_session_list(struct iscsi_session *session);
/* Its connection is gone (on its own thread). */
void iscsi_session_unlist(struct iscsi_session *session);

/* ---- iscsi_shared_lun.c ---- */
/* The SCSI LUN of (export, target, number), created with options when it is the first user's. */
int iscsi_shared_lun_get(struct export *export, const char *iqn, uint64_t number,
                         const struct scsi_lun_options *options, struct scsi_lun **out);
void iscsi_shared_lun_put(struct scsi_lun *scsi);

/* ---- iscsi_chap.c ---- */
/* Take key into keys when it is a CHAP key (true), else false. */
bool iscsi_chap_key(struct iscsi_chap_keys *keys, const char *key, const char *value);
/* Run the exchange one step with the request's CHAP keys; NULL, or why authentication failed. */
const char *iscsi_chap_step(struct iscsi_session *session, const struct iscsi_chap *credentials,
                            const struct iscsi_chap_keys *keys, struct iscsi_text *answer);

/* ---- iscsi_discovery.c ---- */
void iscsi_text_pdu(struct iscsi_session *session);

/* ---- iscsi_command.c ---- */
void iscsi_command_pdu(struct iscsi_session *session);
/* A Data-Out header was parsed: the task whose buffer receives the segment, or NULL (answered). */
struct iscsi_task *iscsi_data_out_begin(struct iscsi_session *session, uint8_t **target);
/* The segment is in: account for it, send more R2Ts or execute. */
void iscsi_data_out_end(struct iscsi_session *session, struct iscsi_task *task);
/* Immediate data of a SCSI Command is in. */
void iscsi_command_data_end(struct iscsi_session *session, struct iscsi_task *task);

#endif
