/*
 * MODE SELECT(6) and (10) over the raw-file LUN: a parameter list that
 * changes nothing is accepted (what MODE SENSE returned, sent back), a
 * real change is refused with INVALID FIELD IN PARAMETER LIST pointing at
 * it, PF and SP as SPC-4 says, and a list cut short is a length error.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"
#include "test_scsi_harness.h"

TestSuite(scsi_mode_select, .init = setup, .fini = teardown);

/* MODE SENSE(6) of page (DBD when no_descriptor), into list; returns its length. */
static size_t sense6(uint8_t page, bool no_descriptor, uint8_t *list)
{
    uint8_t cdb[6] = {0x1a, no_descriptor ? 0x08 : 0, page, 0, 255, 0};
    struct scsi_task task = run(cdb, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    memcpy(list, data_in, task.data_in_length);
    list[0] = 0; /* mode data length: reserved in MODE SELECT */
    return task.data_in_length;
}

static struct scsi_task select6(uint8_t byte1, const uint8_t *list, size_t length)
{
    uint8_t cdb[6] = {0x15, byte1, 0, 0, (uint8_t)length, 0};
    return run(cdb, 6, list, length, NULL);
}

static void expect_parameter_pointer(const struct scsi_task *task, unsigned byte, int bit)
{
    expect_sense(task, 0x05, 0x26, 0x00);
    uint8_t expected = (uint8_t)(0x80 | (bit >= 0 ? 0x08 | bit : 0)); /* SKSV, C/D 0: the parameter list */
    cr_assert_eq(task->sense[15], expected, "sense key specific %#x, expected %#x", task->sense[15], expected);
    cr_assert_eq(load_be16(task->sense + 16), byte, "field pointer %u, expected %u", load_be16(task->sense + 16),
                 byte);
}

Test(scsi_mode_select, what_mode_sense_returned_is_accepted)
{
    attend("init");
    uint8_t list[256];
    size_t length = sense6(0x3f, false, list);
    cr_assert_eq(select6(0x10, list, length).status, SCSI_STATUS_GOOD, "all pages and the block descriptor");
    length = sense6(0x08, true, list);
    cr_assert_eq(select6(0x10, list, length).status, SCSI_STATUS_GOOD, "the caching page alone");
    list[0] = 0x13; /* a mode data length other than 0: reserved, ignored */
    list[2] = 0;    /* the device-specific parameter (DPOFUA) is MODE SENSE's: ignored */
    list[4] |= 0x80; /* PS: reserved in MODE SELECT */
    cr_assert_eq(select6(0x10, list, length).status, SCSI_STATUS_GOOD);

    /* MODE SELECT(10): the same, with a mode parameter header of 8 bytes. */
    uint8_t cdb10[10] = {0x5a, 0, 0x3f};
    store_be16(cdb10 + 7, 1024);
    struct scsi_task task = run(cdb10, 10, NULL, 0, NULL);
    memcpy(list, data_in, task.data_in_length);
    store_be16(list, 0);
    uint8_t select10[10] = {0x55, 0x10};
    store_be16(select10 + 7, (uint16_t)task.data_in_length);
    cr_assert_eq(run(select10, 10, list, task.data_in_length, NULL).status, SCSI_STATUS_GOOD);

    /* A block descriptor's number of blocks cannot change the capacity: ignored (SBC-3). */
    length = sense6(0x0a, false, list);
    store_be32(list + 4, 1234);
    cr_assert_eq(select6(0x10, list, length).status, SCSI_STATUS_GOOD);
    /* No parameter list: nothing to change. */
    cr_assert_eq(select6(0x10, NULL, 0).status, SCSI_STATUS_GOOD);
    /* Only a header and a block descriptor: no pages, PF 0 is fine. */
    length = sense6(0x0a, false, list);
    cr_assert_eq(select6(0x00, list, 12).status, SCSI_STATUS_GOOD);
}

Test(scsi_mode_select, long_lba_block_descriptor)
{
    attend("init");
    uint8_t list[8 + 16] = {0};
    list[4] = 0x01; /* LONGLBA */
    store_be16(list + 6, 16);
    store_be64(list + 8, DISK / BLOCK);
    store_be32(list + 8 + 12, BLOCK);
    uint8_t cdb[10] = {0x55, 0x10};
    store_be16(cdb + 7, sizeof(list));
    cr_assert_eq(run(cdb, 10, list, sizeof(list), NULL).status, SCSI_STATUS_GOOD);
    store_be32(list + 8 + 12, 4096);
    struct scsi_task task = run(cdb, 10, list, sizeof(list), NULL);
    expect_parameter_pointer(&task, 8 + 12, -1);
}

Test(scsi_mode_select, changes_refused)
{
    attend("init");
    uint8_t list[256];
    size_t length = sense6(0x08, true, list);
    cr_assert_eq(list[4], 0x08, "the caching page, after the 4-byte header");
    list[6] &= (uint8_t)~0x04; /* WCE off */
    struct scsi_task task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 6, 2);

    length = sense6(0x0a, true, list);
    list[4 + 4] |= 0x08; /* SWP: not changeable */
    task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 8, 3);

    length = sense6(0x0a, false, list);
    store_be24(list + 4 + 5, 4096); /* another block length */
    task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 9, -1);

    length = sense6(0x0a, true, list);
    list[4] = 0x1c; /* a page luna does not have */
    task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 4, 5);
    length = sense6(0x0a, true, list);
    list[5] = 0x0b; /* not the length MODE SENSE reports */
    task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 5, -1);
    length = sense6(0x0a, true, list);
    list[1] = 0x05; /* medium type */
    task = select6(0x10, list, length);
    expect_parameter_pointer(&task, 1, -1);
}

Test(scsi_mode_select, page_format_and_saving)
{
    attend("init");
    uint8_t list[256];
    size_t length = sense6(0x0a, true, list);
    struct scsi_task task = select6(0x11, list, length); /* SP: nothing is saveable */
    expect_sense(&task, 0x05, 0x24, 0x00);
    cr_assert_eq(task.sense[15], 0xc8, "SKSV, C/D, BPV, bit 0");
    cr_assert_eq(load_be16(task.sense + 16), 1);
    task = select6(0x11, NULL, 0);
    expect_sense(&task, 0x05, 0x24, 0x00); /* even with nothing to save */
    task = select6(0x00, list, length); /* PF 0: vendor-specific parameters, luna has none */
    expect_sense(&task, 0x05, 0x24, 0x00);
    cr_assert_eq(task.sense[15], 0xcc, "bit 4: PF");
}

Test(scsi_mode_select, list_cut_short)
{
    attend("init");
    uint8_t list[256];
    size_t length = sense6(0x0a, false, list);
    struct scsi_task task = select6(0x10, list, 3); /* not even the header */
    expect_sense(&task, 0x05, 0x1a, 0x00);
    task = select6(0x10, list, 10); /* the block descriptor cut */
    expect_sense(&task, 0x05, 0x1a, 0x00);
    task = select6(0x10, list, length - 1); /* the page cut */
    expect_sense(&task, 0x05, 0x1a, 0x00);
    task = select6(0x10, list, 13); /* one byte of a page header */
    expect_sense(&task, 0x05, 0x1a, 0x00);

    /* Less data than the CDB's parameter list length: what arrived is the list. */
    uint8_t cdb[6] = {0x15, 0x10, 0, 0, (uint8_t)length, 0};
    task = run(cdb, 6, list, 12, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, length);
}

TestSuite(scsi_mode_select_readonly, .init = setup_readonly, .fini = teardown);

Test(scsi_mode_select_readonly, no_change_accepted)
{
    attend("init");
    uint8_t list[256];
    size_t length = sense6(0x3f, false, list);
    cr_assert_eq(list[2] & 0x80, 0x80, "WP");
    cr_assert_eq(select6(0x10, list, length).status, SCSI_STATUS_GOOD);
}
