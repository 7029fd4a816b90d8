/*
 * REPORT SUPPORTED OPERATION CODES against the command table that
 * dispatches: the table's own consistency, the all_commands and
 * one_command formats (SPC-4), the reporting options refused, and DPO /
 * FUA advertised the same way in MODE SENSE and the CDB usage data.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"
#include "test_scsi_harness.h"

TestSuite(scsi_opcodes, .init = setup, .fini = teardown);

static struct scsi_task report(uint8_t options, uint8_t opcode, uint16_t service_action, uint32_t allocation)
{
    uint8_t cdb[12] = {0xa3, 0x0c, options, opcode};
    store_be16(cdb + 4, service_action);
    store_be32(cdb + 6, allocation);
    return run(cdb, 12, NULL, 0, NULL);
}

static unsigned length_of_group(uint8_t opcode)
{
    switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
    }
}

Test(scsi_opcodes, the_table_is_consistent)
{
    for (size_t i = 0; i < scsi_command_count; i++) {
        const struct scsi_command *command = &scsi_commands[i];
        cr_assert_eq(command->usage[0], command->opcode, "usage data starts with the opcode %#x", command->opcode);
        cr_assert_eq(command->cdb_length, length_of_group(command->opcode), "CDB length of %#x", command->opcode);
        for (unsigned byte = command->cdb_length; byte < 16; byte++)
            cr_assert_eq(command->usage[byte], 0, "nothing beyond the CDB of %#x", command->opcode);
        if (command->has_service_action)
            cr_assert_eq(command->usage[1] & 0x1f, command->service_action, "service action in the usage data");
        for (size_t j = 0; j < scsi_command_count; j++) {
            const struct scsi_command *other = &scsi_commands[j];
            if (j == i || other->opcode != command->opcode)
                continue;
            cr_assert(command->has_service_action && other->has_service_action &&
                      other->service_action != command->service_action,
                      "opcode %#x listed twice", command->opcode);
        }
    }
}

Test(scsi_opcodes, every_listed_command_dispatches)
{
    attend("init");
    for (size_t i = 0; i < scsi_command_count; i++) {
        const struct scsi_command *command = &scsi_commands[i];
        uint8_t cdb[16] = {command->opcode, command->has_service_action ? command->service_action : 0};
        struct scsi_task task = run(cdb, command->cdb_length, NULL, 0, NULL);
        cr_assert(task.status == SCSI_STATUS_GOOD || task.sense[12] != 0x20, "%#x is not an invalid opcode",
                  command->opcode);
    }
}

Test(scsi_opcodes, all_commands)
{
    attend("init");
    struct scsi_task task = report(0, 0, 0, 4096);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 4 + 8 * scsi_command_count);
    cr_assert_eq(load_be32(data_in), 8 * scsi_command_count, "command data length");
    bool read10 = false, read_capacity16 = false;
    for (size_t i = 0; i < scsi_command_count; i++) {
        const uint8_t *d = data_in + 4 + 8 * i;
        cr_assert_eq(d[5] & 0x02, 0, "no CTDP without RCTD");
        if (!(d[5] & 0x01))
            cr_assert_eq(load_be16(d + 2), 0, "no SERVACTV: service action 0");
        if (d[0] == 0x28) {
            read10 = true;
            cr_assert_eq(load_be16(d + 6), 10);
        }
        if (d[0] == 0x9e && load_be16(d + 2) == 0x10) {
            read_capacity16 = true;
            cr_assert_eq(d[5] & 0x01, 0x01, "SERVACTV");
            cr_assert_eq(load_be16(d + 6), 16);
        }
    }
    cr_assert(read10 && read_capacity16);

    task = report(0, 0, 0, 10);
    cr_assert_eq(task.data_in_length, 10, "cut at the allocation length");
    cr_assert_eq(task.data_in_wanted, 10, "what the allocation length cuts is no overflow");
}

Test(scsi_opcodes, all_commands_with_timeouts)
{
    attend("init");
    struct scsi_task task = report(0x80, 0, 0, 65535);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 4 + 20 * scsi_command_count);
    for (size_t i = 0; i < scsi_command_count; i++) {
        const uint8_t *d = data_in + 4 + 20 * i;
        cr_assert_eq(d[0], scsi_commands[i].opcode);
        cr_assert_eq(d[5] & 0x02, 0x02, "CTDP");
        cr_assert_eq(load_be16(d + 8), 0x0a, "timeouts descriptor length");
    }
}

Test(scsi_opcodes, one_command)
{
    attend("init");
    struct scsi_task task = report(1, 0x28, 0, 512);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[1] & 0x07, 0x03, "supported as the standard says");
    cr_assert_eq(load_be16(data_in + 2), 10, "CDB size");
    cr_assert_eq(task.data_in_length, 14);
    cr_assert_eq(data_in[4], 0x28);
    cr_assert_eq(data_in[5] & 0x18, 0x18, "DPO and FUA evaluated");

    task = report(0x81, 0x89, 0, 512);
    cr_assert_eq(data_in[1], 0x83, "CTDP, supported");
    cr_assert_eq(task.data_in_length, 4 + 16 + 12);
    cr_assert_eq(data_in[4 + 13], 0xff, "NUMBER OF LOGICAL BLOCKS");
    cr_assert_eq(load_be16(data_in + 20), 0x0a, "the timeouts descriptor follows the usage data");

    task = report(2, 0x9e, 0x12, 512);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[1] & 0x07, 0x03);
    cr_assert_eq(data_in[5], 0x12, "the service action in its field");

    task = report(2, 0x9e, 0x05, 512);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[1] & 0x07, 0x01, "no such service action: not supported");
    task = report(1, 0xc7, 0, 512);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[1] & 0x07, 0x01, "no such opcode: not supported");

    task = report(3, 0x8f, 0, 512);
    cr_assert_eq(data_in[1] & 0x07, 0x03, "011b: VERIFY(16), service action 0");
    task = report(3, 0xa3, 0x0c, 512);
    cr_assert_eq(data_in[1] & 0x07, 0x03, "011b: REPORT SUPPORTED OPERATION CODES");
    cr_assert_eq(data_in[6] & 0x87, 0x87);
}

Test(scsi_opcodes, wrong_kind_of_request_refused)
{
    attend("init");
    struct scsi_task task = report(1, 0x9e, 0x10, 512);
    expect_sense(&task, 0x05, 0x24, 0x00); /* 001b for an opcode with service actions */
    task = report(2, 0x28, 0, 512);
    expect_sense(&task, 0x05, 0x24, 0x00); /* 010b for one without */
    task = report(4, 0x28, 0, 512);
    expect_sense(&task, 0x05, 0x24, 0x00); /* reserved reporting option */

    uint8_t other_action[12] = {0xa3, 0x0a}; /* MAINTENANCE IN, REPORT TARGET PORT GROUPS: not offered */
    task = run(other_action, 12, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
    cr_assert_eq(task.sense[15], 0xcc, "SKSV, C/D, BPV, bit 4: the service action");
    cr_assert_eq(load_be16(task.sense + 16), 1);
}

Test(scsi_opcodes, dpo_and_fua_advertised_alike)
{
    attend("init");
    uint8_t sense6[6] = {0x1a, 0x08, 0x3f, 0, 255, 0};
    run(sense6, 6, NULL, 0, NULL);
    cr_assert_eq(data_in[2] & 0x10, 0x10, "MODE SENSE: DPOFUA");
    const uint8_t with_fua[] = {0x28, 0x2a, 0x88, 0x8a, 0xa8, 0xaa, 0x89};
    for (size_t i = 0; i < sizeof(with_fua); i++) {
        report(1, with_fua[i], 0, 512);
        cr_assert_eq(data_in[5] & 0x18, 0x18, "%#x: DPO and FUA", with_fua[i]);
    }
    const uint8_t with_dpo[] = {0x2e, 0x2f, 0x8e, 0x8f, 0xae, 0xaf};
    for (size_t i = 0; i < sizeof(with_dpo); i++) {
        report(1, with_dpo[i], 0, 512);
        cr_assert_eq(data_in[5] & 0x10, 0x10, "%#x: DPO", with_dpo[i]);
    }
}
