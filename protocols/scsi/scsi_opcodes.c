/*
 * REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0Ch;
 * SPC-4), answered from the command table that dispatches: reporting
 * options 000b (all commands, with a command timeouts descriptor each when
 * RCTD is set), 001b (one command by opcode), 010b (by opcode and service
 * action) and 011b (by opcode and service action, the service action 0
 * for an opcode that has none).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

#define TIMEOUTS_LENGTH 12
#define SUPPORT_NOT_SUPPORTED 0x01
#define SUPPORT_STANDARD 0x03

/*
 * The command timeouts descriptor: luna names no timeouts (zero: none
 * indicated), the descriptor says so.
 */
static size_t put_timeouts(uint8_t *out)
{
    store_be16(out, TIMEOUTS_LENGTH - 2); /* descriptor length: 0Ah */
    return TIMEOUTS_LENGTH;
}

static void all_commands(struct scsi_task *task, bool timeouts, size_t allocation)
{
    size_t descriptor = 8 + (timeouts ? TIMEOUTS_LENGTH : 0);
    size_t length = 4 + scsi_command_count * descriptor;
    uint8_t *answer = calloc(1, length);
    if (!answer) {
        scsi_task_errno(task, -ENOMEM, false);
        return;
    }
    size_t at = 4;
    for (size_t i = 0; i < scsi_command_count; i++) {
        const struct scsi_command *command = &scsi_commands[i];
        uint8_t *out = answer + at;
        out[0] = command->opcode;
        if (command->has_service_action) {
            store_be16(out + 2, command->service_action);
            out[5] |= 0x01; /* SERVACTV */
        }
        if (timeouts)
            out[5] |= 0x02; /* CTDP */
        store_be16(out + 6, command->cdb_length);
        at += 8;
        if (timeouts)
            at += put_timeouts(answer + at);
    }
    store_be32(answer, (uint32_t)(at - 4)); /* command data length */
    scsi_task_reply(task, answer, allocation < at ? allocation : at);
    free(answer);
}

static void one_command(struct scsi_task *task, const struct scsi_command *command, bool timeouts,
                        size_t allocation)
{
    uint8_t answer[4 + 16 + TIMEOUTS_LENGTH] = {0};
    size_t at = 4;
    if (!command) {
        answer[1] = SUPPORT_NOT_SUPPORTED; /* the rest is undefined: a CDB size of 0 */
    } else {
        answer[1] = (uint8_t)((timeouts ? 0x80 : 0) | SUPPORT_STANDARD); /* CTDP, SUPPORT */
        store_be16(answer + 2, command->cdb_length);
        memcpy(answer + 4, command->usage, command->cdb_length);
        at += command->cdb_length;
        if (timeouts)
            at += put_timeouts(answer + at);
    }
    scsi_task_reply(task, answer, allocation < at ? allocation : at);
}

void scsi_report_supported_opcodes(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    bool timeouts = cdb[2] & 0x80; /* RCTD */
    unsigned options = cdb[2] & 0x07;
    uint8_t opcode = cdb[3];
    uint16_t service_action = load_be16(cdb + 4);
    size_t allocation = load_be32(cdb + 6);
    if (options == 0) {
        all_commands(task, timeouts, allocation);
        return;
    }
    if (options > 3) {
        scsi_task_invalid_field(task, 2, 2); /* reserved reporting options */
        return;
    }
    const struct scsi_command *found = NULL;
    bool has_service_actions = false, known = false;
    for (size_t i = 0; i < scsi_command_count; i++) {
        const struct scsi_command *command = &scsi_commands[i];
        if (command->opcode != opcode)
            continue;
        known = true;
        has_service_actions = command->has_service_action;
        if (!command->has_service_action || command->service_action == service_action)
            found = command;
    }
    /* 001b asks for an opcode without service actions, 010b for one with them: the other kind is refused. */
    if (known && options == 1 && has_service_actions) {
        scsi_task_invalid_field(task, 3, -1);
        return;
    }
    if (known && options == 2 && !has_service_actions) {
        scsi_task_invalid_field(task, 3, -1);
        return;
    }
    if (found && !found->has_service_action && options == 3 && service_action != 0)
        found = NULL; /* no such service action of a command that has none */
    one_command(task, found, timeouts, allocation);
}
