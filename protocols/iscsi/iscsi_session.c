/*
 * The session: framing the byte stream into PDUs (BHS, AHS, header
 * digest, data segment, padding, data digest), CmdSN windowing, dispatch
 * by opcode, and the small PDUs: NOP-Out / NOP-In, Logout, Task
 * Management and Reject.  SCSI commands are in iscsi_command.c, login in
 * iscsi_login.c, Text in iscsi_discovery.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "block/overlay.h"
#include "common/log.h"
#include "common/send_queue.h"
#include <isa-l/crc.h>
#include "protocols/iscsi/iscsi_internal.h"

/* ---- sequence numbers ---- */

void iscsi_fill_sequence(struct iscsi_session *session, uint8_t *bhs, bool advance)
{
    store_be32(bhs + 24, advance ? session->stat_sn++ : session->stat_sn);
    store_be32(bhs + 28, session->exp_cmd_sn);
    /* The window closes as tasks occupy it: MaxCmdSN = ExpCmdSN - 1 means "send nothing". */
    uint32_t room = session->task_count < ISCSI_QUEUE_DEPTH ? ISCSI_QUEUE_DEPTH - session->task_count : 0;
    store_be32(bhs + 32, session->exp_cmd_sn + room - 1);
}

/*
 * A non-immediate command takes the next CmdSN.  One connection delivers
 * commands in order, so anything but ExpCmdSN is a duplicate or outside the
 * window, and RFC 7143 §4.2.2.1 says to ignore it.  Immediate commands do
 * not take a number.
 */
bool iscsi_accept_cmd_sn(struct iscsi_session *session)
{
    if (session->header[0] & ISCSI_IMMEDIATE)
        return true;
    uint32_t cmd_sn = load_be32(session->header + 24);
    if (cmd_sn == session->exp_cmd_sn && session->task_count >= ISCSI_QUEUE_DEPTH) {
        log_warn("iscsi %s: CmdSN %u beyond MaxCmdSN (%u commands queued); ignored", session->peer, cmd_sn,
                 session->task_count);
        return false;
    }
    if (cmd_sn != session->exp_cmd_sn) {
        log_warn("iscsi %s: CmdSN %u outside the window (expected %u); ignored", session->peer, cmd_sn,
                 session->exp_cmd_sn);
        return false;
    }
    session->exp_cmd_sn++;
    return true;
}

/* ---- output ---- */

void iscsi_wake(struct iscsi_session *session)
{
    if (!session->freed)
        session->ops->wake(session->opaque);
}

void iscsi_session_violation(struct iscsi_session *session, const char *format, ...)
{
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    log_warn("iscsi %s: protocol error: %s; closing the connection", session->peer, message);
    session->status = SESSION_CLOSED;
    session->input = ISCSI_INPUT_STOPPED;
}

static bool header_digest_on(const struct iscsi_session *session);
static bool data_digest_on(const struct iscsi_session *session);

static int queue_pdu(struct iscsi_session *session, uint8_t *bhs, const void *data, uint32_t length, bool lend,
                     void (*release)(void *arg), void *arg)
{
    static const uint8_t zeroes[4];
    store_be24(bhs + 5, length);
    uint32_t pad = (4 - (length & 3)) & 3;
    uint8_t header_digest[4], data_digest[4];
    bool with_header_digest = header_digest_on(session), with_data_digest = length && data_digest_on(session);
    if (with_header_digest)
        iscsi_digest_store(iscsi_crc_update(0xffffffffu, bhs, ISCSI_BHS_SIZE), header_digest);
    if (with_data_digest) {
        uint32_t crc = iscsi_crc_update(0xffffffffu, data, length);
        iscsi_digest_store(iscsi_crc_update(crc, zeroes, pad), data_digest);
    }
    struct send_queue *out = session->out;
    int ret = send_queue_copy(out, bhs, ISCSI_BHS_SIZE);
    if (ret == 0 && with_header_digest)
        ret = send_queue_copy(out, header_digest, 4);
    if (ret == 0 && length)
        ret = lend ? send_queue_lend(out, data, length, release, arg) : send_queue_copy(out, data, length);
    bool released = lend && ret == 0; /* from here the queue runs release, even on failure */
    if (ret == 0 && pad)
        ret = send_queue_copy(out, zeroes, pad);
    if (ret == 0 && with_data_digest)
        ret = send_queue_copy(out, data_digest, 4);
    if (ret < 0) {
        if (session->status != SESSION_CLOSED)
            log_error("iscsi %s: out of memory queuing a PDU; closing", session->peer);
        session->status = SESSION_CLOSED;
        session->input = ISCSI_INPUT_STOPPED;
        return released ? 0 : -ENOMEM;
    }
    return 0;
}

void iscsi_send(struct iscsi_session *session, uint8_t *bhs, const void *data, uint32_t length)
{
    queue_pdu(session, bhs, data, length, false, NULL, NULL);
}

int iscsi_send_lent(struct iscsi_session *session, uint8_t *bhs, const void *data, uint32_t length,
                    void (*release)(void *arg), void *arg)
{
    return queue_pdu(session, bhs, data, length, true, release, arg);
}

void iscsi_reject(struct iscsi_session *session, const uint8_t *header, uint8_t reason)
{
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_REJECT, ISCSI_FINAL, reason};
    store_be32(bhs + 16, ISCSI_RESERVED_TAG);
    iscsi_fill_sequence(session, bhs, true);
    iscsi_send(session, bhs, header, ISCSI_BHS_SIZE);
}

/* ---- LUNs and tasks ---- */

uint64_t iscsi_lun_decode(const uint8_t *field)
{
    switch (field[0] >> 6) {
    case 0: return field[1];                                   /* peripheral device addressing */
    case 1: return (uint64_t)(field[0] & 0x3f) << 8 | field[1]; /* flat space */
    default: return UINT64_MAX;                                /* not a LUN luna hands out */
    }
}

void iscsi_lun_encode(uint64_t lun, uint8_t *field)
{
    memset(field, 0, 8);
    if (lun < 256) {
        field[1] = (uint8_t)lun;
    } else {
        field[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f));
        field[1] = (uint8_t)lun;
    }
}

const struct iscsi_lun *iscsi_lun_find(const struct iscsi_session *session, uint64_t lun)
{
    for (size_t i = 0; i < session->lun_slots; i++)
        if (session->luns[i].scsi && session->luns[i].number == lun)
            return &session->luns[i];
    return NULL;
}

struct iscsi_task *iscsi_task_find(struct iscsi_session *session, uint32_t itt)
{
    for (struct iscsi_task *task = session->tasks.next; task != &session->tasks; task = task->next)
        if (task->itt == itt && !task->aborted && !task->tmf_waiting)
            return task;
    return NULL;
}

static void session_destroy(struct iscsi_session *session);

void iscsi_task_free(struct iscsi_task *task)
{
    struct iscsi_session *session = task->session;
    task->prev->next = task->next;
    task->next->prev = task->prev;
    session->task_count--;
    session->buffered -= task->expected_length;
    data_buffer_unref(task->buffer);
    free(task);
    if (session->freed && session->task_count == 0)
        session_destroy(session);
}

/* ---- NOP, Logout, Task Management ---- */

static void nop_out(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    uint32_t itt = load_be32(header + 16);
    if (itt == ISCSI_RESERVED_TAG)
        return; /* an answer to our ping, or a ping that wants no answer */
    if (!iscsi_accept_cmd_sn(session))
        return;
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_NOP_IN, ISCSI_FINAL};
    memcpy(bhs + 8, header + 8, 8); /* LUN */
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, ISCSI_RESERVED_TAG);
    iscsi_fill_sequence(session, bhs, true);
    /* The ping data comes back, as much as the initiator takes in one PDU. */
    uint32_t length = session->data_length;
    if (length > session->params.max_recv_segment)
        length = session->params.max_recv_segment;
    iscsi_send(session, bhs, session->data, length);
}

static void logout(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    if (!iscsi_accept_cmd_sn(session))
        return;
    unsigned reason = header[1] & 0x7f;
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_LOGOUT_RESPONSE, ISCSI_FINAL};
    /* 0: closed; 2: recovery is not supported (ErrorRecoveryLevel 0). */
    bhs[2] = reason == 2 ? 2 : 0;
    store_be32(bhs + 16, load_be32(header + 16));
    iscsi_fill_sequence(session, bhs, true);
    iscsi_send(session, bhs, NULL, 0);
    if (reason != 2) {
        log_info("iscsi %s: logged out", session->peer);
        session->logged_out = true;
        session->input = ISCSI_INPUT_STOPPED;
        if (session->status == SESSION_ACTIVE)
            session->status = SESSION_DRAINING;
    }
}

enum {
    TMF_ABORT_TASK = 1,
    TMF_ABORT_TASK_SET = 2,
    TMF_CLEAR_ACA = 3,
    TMF_CLEAR_TASK_SET = 4,
    TMF_LUN_RESET = 5,
    TMF_TARGET_WARM_RESET = 6,
    TMF_TARGET_COLD_RESET = 7,
    TMF_TASK_REASSIGN = 8,
};
enum {
    TMF_COMPLETE = 0,
    TMF_NO_TASK = 1,
    TMF_NO_LUN = 2,
    TMF_REASSIGN_UNSUPPORTED = 4,
    TMF_NOT_SUPPORTED = 5,
};

/*
 * Abort a task.  One still gathering data goes at once (later Data-Out
 * for it are dropped as unknown).  One executing cannot be recalled from
 * the disk: for ABORT TASK it ends without status and the TMF response
 * follows; the bulk functions let it answer as usual.
 */
static void abort_task(struct iscsi_task *task)
{
    if (!task->executing)
        iscsi_task_free(task);
}

void iscsi_tmf_respond(struct iscsi_session *session, uint32_t itt, uint8_t response)
{
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_TASK_MANAGEMENT_RESPONSE, ISCSI_FINAL, response};
    store_be32(bhs + 16, itt);
    iscsi_fill_sequence(session, bhs, true);
    iscsi_send(session, bhs, NULL, 0);
}

static void abort_tasks(struct iscsi_session *session, bool every_lun, uint64_t lun)
{
    struct iscsi_task *task = session->tasks.next;
    while (task != &session->tasks) {
        struct iscsi_task *next = task->next;
        if (!task->aborted && (every_lun || task->lun == lun))
            abort_task(task);
        task = next;
    }
}

static void task_management(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    if (!iscsi_accept_cmd_sn(session))
        return;
    unsigned function = header[1] & 0x7f;
    uint64_t lun = iscsi_lun_decode(header + 8);
    uint8_t response = TMF_COMPLETE;
    switch (function) {
    case TMF_ABORT_TASK: {
        struct iscsi_task *task = iscsi_task_find(session, load_be32(header + 20));
        if (task && task->executing) {
            /* Answered once the I/O is done (§4.2.3.3: the response follows the task's end). */
            task->tmf_waiting = true;
            task->tmf_itt = load_be32(header + 16);
            return;
        }
        if (task)
            abort_task(task);
        else
            response = TMF_NO_TASK; /* ended already, or never received: as LIO and tgt answer */
        break;
    }
    case TMF_ABORT_TASK_SET:
    case TMF_CLEAR_TASK_SET:
    case TMF_LUN_RESET:
        if (!iscsi_lun_find(session, lun)) {
            response = TMF_NO_LUN;
        } else {
            abort_tasks(session, false, lun);
            if (function == TMF_LUN_RESET)
                scsi_lun_reset(iscsi_lun_find(session, lun)->scsi, session->nexus);
        }
        break;
    case TMF_TARGET_WARM_RESET:
    case TMF_TARGET_COLD_RESET:
        abort_tasks(session, true, 0);
        for (size_t i = 0; i < session->lun_slots; i++)
            scsi_lun_reset(session->luns[i].scsi, session->nexus);
        break;
    case TMF_TASK_REASSIGN: response = TMF_REASSIGN_UNSUPPORTED; break;
    case TMF_CLEAR_ACA:
    default: response = TMF_NOT_SUPPORTED; break;
    }
    iscsi_tmf_respond(session, load_be32(header + 16), response);
    if (function == TMF_TARGET_COLD_RESET && session->status == SESSION_ACTIVE) {
        session->input = ISCSI_INPUT_STOPPED; /* a cold reset ends the connection after the response */
        session->status = SESSION_DRAINING;
    }
}

/* ---- input framing ---- */

static uint8_t opcode_of(const uint8_t *header) { return header[0] & 0x3f; }

/* The PDU is complete (header and data segment): act on it. */
static void dispatch(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    uint8_t opcode = opcode_of(header);
    if (session->phase == ISCSI_PHASE_LOGIN) {
        if (opcode != ISCSI_OP_LOGIN) {
            iscsi_session_violation(session, "opcode %#x before login completed", opcode);
            return;
        }
        iscsi_login_pdu(session);
        return;
    }
    if (session->discovery && opcode != ISCSI_OP_TEXT && opcode != ISCSI_OP_LOGOUT && opcode != ISCSI_OP_NOP_OUT) {
        iscsi_reject(session, header, ISCSI_REJECT_PROTOCOL_ERROR); /* a discovery session: Text and Logout */
        return;
    }
    switch (opcode) {
    case ISCSI_OP_NOP_OUT: nop_out(session); break;
    case ISCSI_OP_TASK_MANAGEMENT: task_management(session); break;
    case ISCSI_OP_TEXT:
        if (iscsi_accept_cmd_sn(session))
            iscsi_text_pdu(session);
        break;
    case ISCSI_OP_LOGOUT: logout(session); break;
    case ISCSI_OP_LOGIN: iscsi_reject(session, header, ISCSI_REJECT_PROTOCOL_ERROR); break;
    default: iscsi_reject(session, header, ISCSI_REJECT_COMMAND_NOT_SUPPORTED); break;
    }
}

/* ---- digests (CRC32C, RFC 7143 §12.1: from the full feature phase on, when negotiated) ---- */

static bool header_digest_on(const struct iscsi_session *session)
{
    return session->phase == ISCSI_PHASE_FULL_FEATURE && session->params.header_digest;
}

static bool data_digest_on(const struct iscsi_session *session)
{
    return session->phase == ISCSI_PHASE_FULL_FEATURE && session->params.data_digest;
}

/* The running CRC32C (ISA-L's crc32_iscsi; the digest is its complement, sent least significant byte first). */
uint32_t iscsi_crc_update(uint32_t crc, const void *data, size_t length)
{
    return crc32_iscsi((unsigned char *)data, (int)length, crc);
}

void iscsi_digest_store(uint32_t crc, uint8_t out[4])
{
    uint32_t digest = ~crc;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(digest >> (8 * i));
}

static bool digest_matches(uint32_t crc, const uint8_t received[4])
{
    uint8_t expected[4];
    iscsi_digest_store(crc, expected);
    return memcmp(expected, received, 4) == 0;
}

/* ---- acting on a complete PDU ---- */

/* The data segment (and its digest) is in: hand it to its task, or act on the PDU. */
static void segment_done(struct iscsi_session *session)
{
    struct iscsi_task *task = session->data_task;
    session->data_task = NULL;
    session->data_target = NULL;
    session->input = ISCSI_INPUT_HEADER;
    if (task) {
        if (opcode_of(session->header) == ISCSI_OP_DATA_OUT)
            iscsi_data_out_end(session, task);
        else
            iscsi_command_data_end(session, task);
    } else if (session->data) {
        dispatch(session);
        free(session->data);
        session->data = NULL;
    }
}

/* A data digest that does not match: Reject, and at ErrorRecoveryLevel 0 the connection ends (§7.8). */
static void data_digest_failed(struct iscsi_session *session)
{
    log_warn("iscsi %s: data digest error; closing the connection", session->peer);
    if (session->data_task && !session->data_task->executing)
        iscsi_task_free(session->data_task);
    session->data_task = NULL;
    iscsi_reject(session, session->header, ISCSI_REJECT_DATA_DIGEST);
    session->input = ISCSI_INPUT_STOPPED;
    if (session->status == SESSION_ACTIVE)
        session->status = SESSION_DRAINING;
}

/* Data segment bytes arrived (n of them, just stored at the target). */
static void segment_progress(struct iscsi_session *session, size_t n)
{
    if (data_digest_on(session))
        session->crc = iscsi_crc_update(session->crc, session->data_target + session->data_have, n);
    session->data_have += (uint32_t)n;
    if (session->data_have < session->data_length)
        return;
    session->skip = (4 - (session->data_length & 3)) & 3;
    session->digest_have = 0;
    session->input = ISCSI_INPUT_PAD;
    if (session->skip == 0)
        session->input = data_digest_on(session) ? ISCSI_INPUT_DATA_DIGEST : ISCSI_INPUT_HEADER;
    if (session->input == ISCSI_INPUT_HEADER)
        segment_done(session);
}

/* Padding, digest and all of a segment nobody takes. */
static size_t dropped_segment_length(const struct iscsi_session *session, uint32_t length)
{
    if (length == 0)
        return 0;
    return length + ((4 - (length & 3)) & 3) + (data_digest_on(session) ? 4u : 0u);
}

/* The header (and AHS) is in: decide where the data segment goes. */
static void header_done(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    uint8_t opcode = opcode_of(header);
    uint32_t length = load_be24(header + 5);
    uint32_t limit = session->phase == ISCSI_PHASE_LOGIN ? ISCSI_LOGIN_MAX_SEGMENT : ISCSI_TARGET_MAX_RECV_SEGMENT;
    session->data_length = length;
    session->data_have = 0;
    session->data = NULL;
    session->data_task = NULL;
    session->crc = 0xffffffffu;
    if (length > limit) {
        iscsi_session_violation(session, "a %u-byte data segment (at most %u)", length, limit);
        return;
    }
    if (session->phase == ISCSI_PHASE_FULL_FEATURE &&
        (opcode == ISCSI_OP_SCSI_COMMAND || opcode == ISCSI_OP_DATA_OUT)) {
        uint8_t *target = NULL;
        if (opcode == ISCSI_OP_SCSI_COMMAND) {
            iscsi_command_pdu(session); /* sets data_task and data_target to take immediate data */
            target = session->data_target;
        } else {
            session->data_task = iscsi_data_out_begin(session, &target);
        }
        if (session->status == SESSION_CLOSED)
            return;
        if (length == 0 || !session->data_task) {
            /* No data, or data nobody takes (an answered or dropped PDU): skip it. */
            session->data_task = NULL;
            session->skip = dropped_segment_length(session, length);
            session->input = session->skip ? ISCSI_INPUT_SKIP : ISCSI_INPUT_HEADER;
            return;
        }
        session->data_target = target;
        session->input = ISCSI_INPUT_DATA;
        return;
    }
    if (length == 0) {
        session->input = ISCSI_INPUT_HEADER;
        dispatch(session);
        return;
    }
    session->data = malloc(length);
    if (!session->data) {
        iscsi_session_violation(session, "out of memory for a %u-byte data segment", length);
        return;
    }
    session->data_target = session->data;
    session->input = ISCSI_INPUT_DATA;
}

static void bhs_done(struct iscsi_session *session)
{
    session->header_have = 0;
    session->digest_have = 0;
    if (header_digest_on(session))
        session->crc = iscsi_crc_update(0xffffffffu, session->header, ISCSI_BHS_SIZE);
    /* Additional header segments (extended CDBs, bidirectional lengths) are not used: dropped. */
    session->skip = (size_t)session->header[4] * 4;
    if (session->skip) {
        session->input = ISCSI_INPUT_AHS;
        return;
    }
    if (header_digest_on(session)) {
        session->input = ISCSI_INPUT_HEADER_DIGEST;
        return;
    }
    header_done(session);
}

static void stop_input(struct iscsi_session *session)
{
    session->input = ISCSI_INPUT_STOPPED;
    if (session->status == SESSION_ACTIVE)
        session->status = SESSION_DRAINING;
}

/* Gather the 4 digest bytes; true once complete. */
static bool gather_digest(struct iscsi_session *session, const uint8_t *data, size_t available, size_t *used)
{
    size_t n = 4 - session->digest_have;
    n = n < available ? n : available;
    memcpy(session->digest + session->digest_have, data, n);
    session->digest_have += n;
    *used += n;
    return session->digest_have == 4;
}

static size_t session_input(void *opaque, const uint8_t *data, size_t len)
{
    struct iscsi_session *session = opaque;
    size_t used = 0;
    session->input_seen = true;
    while (used < len && session->status == SESSION_ACTIVE) {
        size_t available = len - used, n;
        switch (session->input) {
        case ISCSI_INPUT_HEADER:
            n = ISCSI_BHS_SIZE - session->header_have;
            n = n < available ? n : available;
            memcpy(session->header + session->header_have, data + used, n);
            session->header_have += n;
            used += n;
            if (session->header_have == ISCSI_BHS_SIZE)
                bhs_done(session);
            break;
        case ISCSI_INPUT_AHS:
        case ISCSI_INPUT_PAD:
        case ISCSI_INPUT_SKIP:
            n = session->skip < available ? session->skip : available;
            if (session->input == ISCSI_INPUT_AHS ? header_digest_on(session)
                                                  : session->input == ISCSI_INPUT_PAD && data_digest_on(session))
                session->crc = iscsi_crc_update(session->crc, data + used, n);
            session->skip -= n;
            used += n;
            if (session->skip)
                break;
            session->digest_have = 0;
            if (session->input == ISCSI_INPUT_AHS) {
                if (header_digest_on(session))
                    session->input = ISCSI_INPUT_HEADER_DIGEST;
                else
                    header_done(session);
            } else if (session->input == ISCSI_INPUT_PAD && data_digest_on(session)) {
                session->input = ISCSI_INPUT_DATA_DIGEST;
            } else if (session->input == ISCSI_INPUT_PAD) {
                segment_done(session);
            } else {
                session->input = ISCSI_INPUT_HEADER;
            }
            break;
        case ISCSI_INPUT_HEADER_DIGEST:
            if (!gather_digest(session, data + used, available, &used))
                break;
            if (!digest_matches(session->crc, session->digest)) {
                /* The header's lengths cannot be trusted: nothing after it can be framed. */
                iscsi_session_violation(session, "header digest error");
                break;
            }
            header_done(session);
            break;
        case ISCSI_INPUT_DATA_DIGEST:
            if (!gather_digest(session, data + used, available, &used))
                break;
            if (digest_matches(session->crc, session->digest))
                segment_done(session);
            else
                data_digest_failed(session);
            break;
        default:
            return used; /* DATA: read into the target through payload(); STOPPED: nothing more */
        }
        if (session->shutting_down && session->input == ISCSI_INPUT_HEADER && session->header_have == 0)
            stop_input(session);
    }
    return used;
}

static bool session_payload(void *opaque, struct iovec *target)
{
    struct iscsi_session *session = opaque;
    if (session->input != ISCSI_INPUT_DATA || session->status != SESSION_ACTIVE)
        return false;
    target->iov_base = session->data_target + session->data_have;
    target->iov_len = session->data_length - session->data_have;
    return true;
}

static void session_payload_done(void *opaque, size_t n)
{
    ((struct iscsi_session *)opaque)->input_seen = true;
    segment_progress(opaque, n);
}

/* ---- pings: a dead initiator (a host that vanished) must not hold its session forever ---- */

static double session_tick_interval(const void *opaque)
{
    const struct iscsi_session *session = opaque;
    return session->settings ? session->settings->ping_interval : 0;
}

/*
 * Once per interval: after a silent interval in the full feature phase,
 * ping with a NOP-In the initiator must answer (RFC 7143 §11.19); after two
 * more silent intervals, the connection is taken for dead.
 */
static void session_tick(void *opaque)
{
    struct iscsi_session *session = opaque;
    if (session->phase != ISCSI_PHASE_FULL_FEATURE || session->status != SESSION_ACTIVE)
        return;
    if (session->input_seen) {
        session->input_seen = false;
        session->silent_ticks = 0;
        session->ping_outstanding = false;
        return;
    }
    session->silent_ticks++;
    if (session->ping_outstanding) {
        if (session->silent_ticks >= 3) {
            log_warn("iscsi %s: no answer to a NOP-In ping; closing the connection", session->peer);
            session->status = SESSION_CLOSED;
            session->input = ISCSI_INPUT_STOPPED;
        }
        return;
    }
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_NOP_IN, ISCSI_FINAL};
    store_be32(bhs + 16, ISCSI_RESERVED_TAG);
    store_be32(bhs + 20, session->next_ttt++ & 0x7fffffff); /* an answer is wanted */
    iscsi_fill_sequence(session, bhs, false); /* StatSN is not taken by a ping */
    iscsi_send(session, bhs, NULL, 0);
    session->ping_outstanding = true;
}

static bool session_wants_input(const void *opaque)
{
    const struct iscsi_session *session = opaque;
    if (session->status != SESSION_ACTIVE || session->input == ISCSI_INPUT_STOPPED ||
        session->input == ISCSI_INPUT_ATTACHING)
        return false;
    /* Replies the initiator is not reading: stop taking commands until they drain. */
    return send_queue_length(session->out) < ISCSI_MAX_QUEUED_REPLIES;
}

static enum session_status session_status_of(const void *opaque)
{
    return ((const struct iscsi_session *)opaque)->status;
}

static void session_input_closed(void *opaque)
{
    struct iscsi_session *session = opaque;
    session->input = ISCSI_INPUT_STOPPED;
    if (session->status == SESSION_ACTIVE)
        session->status = SESSION_DRAINING;
}

/*
 * Server shutdown: commands already received complete and are answered;
 * at the next PDU boundary input stops and the connection drains: it
 * closes once the commands executing have answered.  An initiator in the
 * full feature phase is told first, with an Asynchronous Message (RFC 7143
 * §11.9.1, AsyncEvent 2: "the target will drop this connection"), to stop
 * sending commands and to wait DefaultTime2Wait before it logs in again,
 * to the restarted lunad say.
 */
static void session_shutdown(void *opaque)
{
    struct iscsi_session *session = opaque;
    if (session->phase == ISCSI_PHASE_FULL_FEATURE && !session->shutting_down && session->status == SESSION_ACTIVE) {
        uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_ASYNC_MESSAGE, ISCSI_FINAL};
        store_be32(bhs + 16, ISCSI_RESERVED_TAG);
        iscsi_fill_sequence(session, bhs, true);
        bhs[36] = 2;                                          /* AsyncEvent: dropping this connection */
        store_be16(bhs + 38, 0);                              /* Parameter1: the CID (one connection) */
        store_be16(bhs + 40, (uint16_t)session->params.time2wait); /* Parameter2: Time2Wait */
        store_be16(bhs + 42, 0);                              /* Parameter3: Time2Retain (ERL 0: none) */
        iscsi_send(session, bhs, NULL, 0);
    }
    session->shutting_down = true;
    if (session->phase == ISCSI_PHASE_LOGIN || (session->input == ISCSI_INPUT_HEADER && session->header_have == 0))
        stop_input(session);
}

static uint32_t session_inflight(const void *opaque)
{
    const struct iscsi_session *session = opaque;
    uint32_t executing = 0;
    for (const struct iscsi_task *task = session->tasks.next; task != &session->tasks; task = task->next)
        executing += task->executing;
    return executing;
}

static bool session_negotiated(const void *opaque)
{
    return ((const struct iscsi_session *)opaque)->phase == ISCSI_PHASE_FULL_FEATURE;
}

static void session_destroy(struct iscsi_session *session)
{
    for (size_t i = 0; i < session->lun_slots; i++) {
        if (session->luns[i].attaching)
            export_attach_cancel(session->luns[i].attaching);
        scsi_lun_nexus_lost(session->luns[i].scsi, session->nexus);
        iscsi_shared_lun_put(session->luns[i].scsi);
        if (session->luns[i].export)
            export_unref(session->luns[i].export);
    }
    free(session->login_answer.data);
    free(session->luns);
    free(session->lun_numbers);
    iscsi_login_free(session);
    free(session->data);
    free(session->text_reply);
    if (session->exports)
        export_table_unref(session->exports);
    free(session->peer);
    free(session->local);
    free(session);
}

/* Tasks still executing hold the LUNs they run on: the last one frees the record. */
static void session_free(void *opaque)
{
    struct iscsi_session *session = opaque;
    if (!session)
        return;
    iscsi_session_unlist(session);
    session->out = NULL;
    struct iscsi_task *task = session->tasks.next;
    while (task != &session->tasks) {
        struct iscsi_task *next = task->next;
        task->aborted = true;
        if (!task->executing)
            iscsi_task_free(task);
        task = next;
    }
    session->freed = true;
    if (session->task_count == 0)
        session_destroy(session);
}

static void *session_create(const struct session_start *start)
{
    struct iscsi_session *session = calloc(1, sizeof(*session));
    if (!session)
        return NULL;
    session->peer = strdup(start->peer ? start->peer : "unknown peer");
    if (!session->peer) {
        free(session);
        return NULL;
    }
    if (start->local && !(session->local = strdup(start->local))) {
        free(session->peer);
        free(session);
        return NULL;
    }
    session->exports = export_table_ref(start->exports);
    session->text_ttt = ISCSI_RESERVED_TAG;
    session->settings = start->settings;
    session->ctx = start->ctx;
    session->out = start->out;
    session->ops = start->ops;
    session->opaque = start->opaque;
    session->status = SESSION_ACTIVE;
    session->input = ISCSI_INPUT_HEADER;
    session->phase = ISCSI_PHASE_LOGIN;
    session->tasks.next = session->tasks.prev = &session->tasks;
    iscsi_params_defaults(&session->params);
    log_debug("iscsi %s: connected", session->peer);
    return session;
}

bool iscsi_name_valid(const char *name)
{
    size_t length = strlen(name);
    if (length < 5 || length > 223)
        return false;
    if (strncmp(name, "iqn.", 4) != 0 && strncmp(name, "eui.", 4) != 0 && strncmp(name, "naa.", 4) != 0)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == ':' ||
              (*p >= 'A' && *p <= 'F' && name[0] != 'i')))
            return false;
    return true;
}

const struct session_protocol iscsi_session_protocol = {
    .name = "iscsi",
    .create = session_create,
    .input = session_input,
    .payload = session_payload,
    .payload_done = session_payload_done,
    .wants_input = session_wants_input,
    .status = session_status_of,
    .input_closed = session_input_closed,
    .shutdown = session_shutdown,
    .inflight = session_inflight,
    .negotiated = session_negotiated,
    .free = session_free,
    .tick_interval = session_tick_interval,
    .tick = session_tick,
};
