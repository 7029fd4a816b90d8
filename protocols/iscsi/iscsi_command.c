/*
 * SCSI commands over iSCSI (RFC 7143 §11.2-11.4, 11.7-11.8): a command
 * PDU becomes a task; write data arrives as immediate data and then in
 * Data-Out bursts the target asks for with R2Ts (several outstanding, up
 * to MaxOutstandingR2T), straight into the task's buffer; the complete
 * task runs in the SCSI core; read data goes back in Data-In PDUs (at
 * most the initiator's MaxRecvDataSegmentLength each, lent to the send
 * queue without copying) with the status collapsed into the last one when
 * there is no sense, else a SCSI Response carries status, sense and the
 * residual count.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/iscsi/iscsi_internal.h"

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

enum {
    COMMAND_READ = 0x40,
    COMMAND_WRITE = 0x20,
    DATA_IN_STATUS = 0x01,
    RESIDUAL_UNDERFLOW = 0x02,
    RESIDUAL_OVERFLOW = 0x04,
};

/* ---- responses ---- */

static void scsi_response(struct iscsi_session *session, struct iscsi_task *task, uint8_t residual_flags,
                          uint32_t residual)
{
    const struct scsi_task *scsi = &task->scsi;
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_SCSI_RESPONSE, (uint8_t)(ISCSI_FINAL | residual_flags), 0x00,
                                   scsi->status};
    store_be32(bhs + 16, task->itt);
    iscsi_fill_sequence(session, bhs, true);
    store_be32(bhs + 36, task->data_pdus);
    store_be32(bhs + 44, residual);
    uint8_t sense[2 + SCSI_SENSE_MAX];
    uint32_t length = 0;
    if (scsi->sense_length) {
        store_be16(sense, (uint16_t)scsi->sense_length);
        memcpy(sense + 2, scsi->sense, scsi->sense_length);
        length = 2 + (uint32_t)scsi->sense_length;
    }
    iscsi_send(session, bhs, sense, length);
}

/*
 * The read data in Data-In PDUs, the buffer lent to the send queue (it is
 * freed once written).  The status rides on the last PDU when it is GOOD.
 */
static void send_data_in(struct iscsi_session *session, struct iscsi_task *task, uint32_t length,
                         uint8_t residual_flags, uint32_t residual)
{
    bool collapse = task->scsi.status == SCSI_STATUS_GOOD;
    uint32_t segment = session->params.max_recv_segment, burst = session->params.max_burst;
    struct data_buffer *buffer = task->buffer;
    task->buffer = NULL; /* the queue's from here */
    if (session->status == SESSION_CLOSED) {
        data_buffer_unref(buffer);
        return;
    }
    for (uint32_t offset = 0; offset < length;) {
        uint32_t n = length - offset < segment ? length - offset : segment;
        /* A sequence ends at each MaxBurstLength boundary (F bit). */
        uint32_t burst_end = (offset / burst + 1) * burst;
        if (offset + n > burst_end)
            n = burst_end - offset;
        bool last = offset + n == length;
        uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_DATA_IN};
        if (last || offset + n == burst_end)
            bhs[1] |= ISCSI_FINAL;
        store_be32(bhs + 16, task->itt);
        store_be32(bhs + 20, ISCSI_RESERVED_TAG);
        if (last && collapse) {
            bhs[1] |= (uint8_t)(DATA_IN_STATUS | residual_flags);
            bhs[3] = task->scsi.status;
            iscsi_fill_sequence(session, bhs, true);
            store_be32(bhs + 44, residual);
        } else {
            iscsi_fill_sequence(session, bhs, false);
            store_be32(bhs + 24, 0); /* StatSN is reserved without the S bit */
        }
        store_be32(bhs + 36, task->data_pdus++);
        store_be32(bhs + 40, offset);
        int ret = iscsi_send_lent(session, bhs, buffer->data + offset, n, last ? data_buffer_unref : NULL,
                                  last ? buffer : NULL);
        if (ret < 0 || session->status == SESSION_CLOSED) {
            /* Out of memory, the connection closing: unless the queue took the release, the buffer is ours. */
            if (!(last && ret == 0))
                data_buffer_unref(buffer);
            return;
        }
        offset += n;
    }
    if (!collapse)
        scsi_response(session, task, residual_flags, residual);
}

/* The SCSI core is done with the task: answer it, unless it was aborted or the connection is gone. */
static void scsi_done(struct scsi_task *scsi)
{
    struct iscsi_task *task = CONTAINER_OF(scsi, struct iscsi_task, scsi);
    struct iscsi_session *session = task->session;
    task->executing = false;
    if (task->aborted || session->freed || session->status == SESSION_CLOSED || session->logged_out) {
        iscsi_task_free(task);
        return;
    }
    if (task->tmf_waiting) {
        /* Aborted while executing: no status for it (SAM-5, TAS 0), then the abort is done. */
        iscsi_tmf_respond(session, task->tmf_itt, 0);
        iscsi_task_free(task);
        iscsi_wake(session);
        return;
    }
    uint32_t length = (uint32_t)scsi->data_in_length, residual = 0;
    uint8_t residual_flags = 0;
    if (task->read && scsi->data_in_wanted > task->expected_length) {
        residual_flags = RESIDUAL_OVERFLOW;
        residual = (uint32_t)(scsi->data_in_wanted - task->expected_length);
    } else if (task->read && length < task->expected_length) {
        residual_flags = RESIDUAL_UNDERFLOW;
        residual = task->expected_length - length;
    } else if (scsi->data_out_wanted > task->expected_length) {
        residual_flags = RESIDUAL_OVERFLOW; /* the initiator sent less than the CDB asked to write */
        residual = (uint32_t)(scsi->data_out_wanted - task->expected_length);
    } else if (scsi->data_out_wanted && scsi->data_out_wanted < task->expected_length) {
        residual_flags = RESIDUAL_UNDERFLOW;
        residual = task->expected_length - (uint32_t)scsi->data_out_wanted;
    }
    if (task->read && length)
        send_data_in(session, task, length, residual_flags, residual);
    else
        scsi_response(session, task, residual_flags, residual);
    iscsi_task_free(task);
    iscsi_wake(session);
}

static void execute(struct iscsi_session *session, struct iscsi_task *task)
{
    const struct iscsi_lun *lun = iscsi_lun_find(session, task->lun);
    struct scsi_task *scsi = &task->scsi;
    scsi->lun = lun ? lun->scsi : NULL;
    scsi->nexus = session->nexus;
    if (task->write) {
        scsi->data_out = task->buffer ? task->buffer->data : NULL;
        scsi->data_out_length = task->received;
    }
    if (task->read) {
        scsi->data_in = task->buffer ? task->buffer->data : NULL;
        scsi->data_in_capacity = task->expected_length;
    }
    scsi->luns = session->lun_numbers;
    scsi->lun_count = session->lun_count;
    scsi->ctx = session->ctx;
    scsi->complete = scsi_done;
    task->executing = true;
    scsi_task_execute(scsi);
}

/* ---- write data: R2T and Data-Out ---- */

static void send_r2ts(struct iscsi_session *session, struct iscsi_task *task)
{
    while (task->outstanding_r2t < session->params.max_outstanding_r2t && task->r2t_offset < task->expected_length) {
        uint32_t length = task->expected_length - task->r2t_offset;
        if (length > session->params.max_burst)
            length = session->params.max_burst;
        uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_R2T, ISCSI_FINAL};
        iscsi_lun_encode(task->lun, bhs + 8);
        store_be32(bhs + 16, task->itt);
        store_be32(bhs + 20, task->ttt);
        iscsi_fill_sequence(session, bhs, false); /* R2Ts carry StatSN without taking one */
        store_be32(bhs + 36, task->r2t_sn++);
        store_be32(bhs + 40, task->r2t_offset);
        store_be32(bhs + 44, length);
        iscsi_send(session, bhs, NULL, 0);
        task->data_pdus++;
        task->r2t_offset += length;
        task->outstanding_r2t++;
    }
}

/* Everything asked for arrived: run it; otherwise ask for more. */
static void data_progress(struct iscsi_session *session, struct iscsi_task *task)
{
    if (task->received >= task->expected_length)
        execute(session, task);
    else
        send_r2ts(session, task);
}

struct iscsi_task *iscsi_data_out_begin(struct iscsi_session *session, uint8_t **target)
{
    const uint8_t *header = session->header;
    uint32_t itt = load_be32(header + 16), ttt = load_be32(header + 20);
    uint32_t offset = load_be32(header + 40), length = load_be24(header + 5);
    struct iscsi_task *task = iscsi_task_find(session, itt);
    if (!task) {
        log_debug("iscsi %s: Data-Out for unknown task %#x dropped", session->peer, itt);
        return NULL; /* an aborted task's data: dropped (§4.2.3.4) */
    }
    /*
     * DataPDUInOrder and DataSequenceInOrder are Yes: each Data-Out carries
     * the next bytes, inside what R2Ts asked for.  Anything else (a repeat,
     * a gap, data never solicited) is refused, so every byte a command
     * writes was sent exactly once.
     */
    if (!task->write || task->executing || ttt != task->ttt || offset != task->received ||
        length > task->r2t_offset - offset) {
        iscsi_reject(session, header, ISCSI_REJECT_PROTOCOL_ERROR);
        return NULL;
    }
    /*
     * DataSN counts the Data-Out PDUs of each burst from 0 (§11.7.5).  A
     * wrong one means lost or reordered data, which ErrorRecoveryLevel 0
     * cannot recover: the command fails (ABORTED COMMAND, DATA PHASE
     * ERROR), its later Data-Out are dropped, and the session goes on.
     */
    if (load_be32(header + 36) != task->data_sn) {
        log_warn("iscsi %s: Data-Out DataSN %u, expected %u; the command fails", session->peer,
                 load_be32(header + 36), task->data_sn);
        scsi_sense_set(&task->scsi, 0x0b, 0x4b, 0x00);
        scsi_response(session, task, 0, 0);
        iscsi_task_free(task);
        iscsi_wake(session);
        return NULL;
    }
    *target = task->buffer->data + offset;
    return task;
}

void iscsi_data_out_end(struct iscsi_session *session, struct iscsi_task *task)
{
    task->received += session->data_length;
    task->data_sn++;
    if (session->header[1] & ISCSI_FINAL) {
        task->data_sn = 0; /* the burst is over: the next one counts from 0 */
        if (task->outstanding_r2t)
            task->outstanding_r2t--;
    }
    data_progress(session, task);
}

void iscsi_command_data_end(struct iscsi_session *session, struct iscsi_task *task)
{
    task->received = session->data_length;
    task->r2t_offset = task->received; /* InitialR2T=Yes: R2Ts ask for what follows the immediate data */
    data_progress(session, task);
}

/* ---- SCSI Command ---- */

void iscsi_command_pdu(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    session->data_task = NULL;
    session->data_target = NULL;
    if (session->discovery) {
        iscsi_reject(session, header, ISCSI_REJECT_PROTOCOL_ERROR); /* Text and Logout only (§4.3) */
        return;
    }
    if (!iscsi_accept_cmd_sn(session))
        return;
    if (session->task_count >= ISCSI_QUEUE_DEPTH) {
        /* Beyond MaxCmdSN (a non-immediate one was ignored above): no room, however it came. */
        iscsi_reject(session, header, ISCSI_REJECT_IMMEDIATE_COMMAND);
        return;
    }
    bool read = header[1] & COMMAND_READ, write = header[1] & COMMAND_WRITE;
    uint32_t expected = load_be32(header + 20), immediate = load_be24(header + 5);
    if (read && write) {
        iscsi_reject(session, header, ISCSI_REJECT_COMMAND_NOT_SUPPORTED); /* bidirectional */
        return;
    }
    if (expected > ISCSI_MAX_TRANSFER) {
        log_warn("iscsi %s: a %u-byte transfer (at most %u)", session->peer, expected, ISCSI_MAX_TRANSFER);
        iscsi_reject(session, header, ISCSI_REJECT_INVALID_PDU_FIELD);
        return;
    }
    if (immediate && (!write || immediate > expected || immediate > session->params.first_burst ||
                      !session->params.immediate_data)) {
        iscsi_session_violation(session, "%u bytes of immediate data not allowed here", immediate);
        return;
    }
    if (session->task_count > 0 && session->buffered + expected > ISCSI_MAX_BUFFERED) {
        /*
         * The commands alive already hold their share of memory (an initiator
         * that does not read its socket would otherwise have lunad buffer
         * 128 x 32 MiB): TASK SET FULL, which initiators retry later.
         */
        uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_SCSI_RESPONSE, ISCSI_FINAL, 0x00, SCSI_STATUS_TASK_SET_FULL};
        store_be32(bhs + 16, load_be32(header + 16));
        iscsi_fill_sequence(session, bhs, true);
        iscsi_send(session, bhs, NULL, 0);
        iscsi_wake(session);
        return;
    }
    struct iscsi_task *task = calloc(1, sizeof(*task));
    if (!task || (expected && !(task->buffer = data_buffer_new(expected)))) {
        free(task);
        iscsi_session_violation(session, "out of memory for a %u-byte command", expected);
        return;
    }
    task->session = session;
    session->buffered += expected;
    task->itt = load_be32(header + 16);
    task->ttt = session->next_ttt++ & 0x7fffffff;
    task->cmd_sn = load_be32(header + 24);
    task->lun = iscsi_lun_decode(header + 8);
    task->read = read;
    task->write = write && expected;
    task->expected_length = expected;
    memcpy(task->scsi.cdb, header + 32, sizeof(task->scsi.cdb));
    task->next = &session->tasks;
    task->prev = session->tasks.prev;
    session->tasks.prev->next = task;
    session->tasks.prev = task;
    session->task_count++;

    if (task->write && immediate) {
        session->data_task = task; /* iscsi_command_data_end runs once it is in */
        session->data_target = task->buffer->data;
        return;
    }
    if (task->write)
        send_r2ts(session, task);
    else
        execute(session, task);
}
