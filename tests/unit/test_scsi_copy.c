/*
 * EXTENDED COPY (LID1) inside the LUN: the blocks move on the medium, a
 * descriptor naming another LUN is not reachable, descriptor limits and
 * types are checked, and COPY STATUS tells how a held list ended.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "common/byte_order.h"
#include "test_scsi_harness.h"

TestSuite(scsi_copy, .init = setup, .fini = teardown);

/* The LUN's NAA designator, as its Device Identification page gives it (the first descriptor). */
static void naa_designator(uint8_t out[12])
{
    uint8_t inquiry[6] = {0x12, 0x01, 0x83, 0, 255, 0};
    cr_assert_eq(run(inquiry, 6, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[4 + 1] & 0x0f, 3, "NAA first");
    memcpy(out, data_in + 4, 12);
}

/* A parameter list of one identification CSCD descriptor (designator) and one block-to-block segment. */
static size_t parameters(uint8_t *p, const uint8_t designator[12], uint8_t list_id, uint16_t blocks,
                         uint64_t source, uint64_t destination)
{
    memset(p, 0, 16 + 32 + 28);
    p[0] = list_id;
    store_be16(p + 2, 32);
    store_be32(p + 8, 28);
    uint8_t *cscd = p + 16;
    cscd[0] = 0xe4;
    memcpy(cscd + 4, designator, 12);
    cscd[30] = BLOCK >> 8; /* the block size, 24 bits at 29..31 */
    cscd[31] = BLOCK & 0xff;
    uint8_t *segment = p + 16 + 32;
    segment[0] = 0x02;
    store_be16(segment + 2, 0x18);
    store_be16(segment + 10, blocks);
    store_be64(segment + 12, source);
    store_be64(segment + 20, destination);
    return 16 + 32 + 28;
}

static struct scsi_task extended_copy(const uint8_t *p, size_t length)
{
    uint8_t cdb[16] = {0x83};
    store_be32(cdb + 10, (uint32_t)length);
    return run(cdb, 16, p, length, NULL);
}

Test(scsi_copy, blocks_move_on_the_medium)
{
    attend("init");
    uint8_t designator[12], p[128], data[8 * BLOCK], back[8 * BLOCK];
    naa_designator(designator);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    uint8_t write10[10] = {0x2a};
    store_be32(write10 + 2, 16);
    store_be16(write10 + 7, 8);
    cr_assert_eq(run(write10, 10, data, sizeof(data), NULL).status, SCSI_STATUS_GOOD);

    size_t length = parameters(p, designator, 7, 8, 16, 9000);
    cr_assert_eq(extended_copy(p, length).status, SCSI_STATUS_GOOD);
    read_file_directly(path, 9000ull * BLOCK, back, sizeof(back));
    cr_assert_arr_eq(back, data, sizeof(data), "the copy is on the medium");

    uint8_t status[16] = {0x84, 0x00, 7};
    store_be32(status + 10, 64);
    struct scsi_task task = run(status, 16, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[4], 0x01, "completed without errors");
    cr_assert_eq(load_be16(data_in + 5), 1, "one segment");
    cr_assert_eq(load_be32(data_in + 8), 4, "4 KiB moved");
    status[2] = 8;
    task = run(status, 16, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00); /* no copy with list identifier 8 */
}

Test(scsi_copy, refusals)
{
    attend("init");
    uint8_t designator[12], p[128];
    naa_designator(designator);
    size_t length = parameters(p, designator, 1, 8, 0, DISK / BLOCK - 4);
    struct scsi_task task = extended_copy(p, length);
    expect_sense(&task, 0x0a, 0x00, 0x00); /* COPY ABORTED: past the end */

    uint8_t other[12];
    memcpy(other, designator, 12);
    other[11] ^= 0xff; /* another LUN's NAA */
    length = parameters(p, other, 1, 8, 0, 100);
    task = extended_copy(p, length);
    expect_sense(&task, 0x0a, 0x0d, 0x02); /* COPY TARGET DEVICE NOT REACHABLE */

    length = parameters(p, designator, 1, 8, 0, 100);
    p[16] = 0xe0; /* a Fibre Channel CSCD descriptor */
    task = extended_copy(p, length);
    expect_sense(&task, 0x05, 0x26, 0x07);

    length = parameters(p, designator, 1, 8, 0, 100);
    p[16 + 32] = 0x03; /* stream to stream */
    task = extended_copy(p, length);
    expect_sense(&task, 0x05, 0x26, 0x09);

    length = parameters(p, designator, 1, 8, 0, 100);
    task = extended_copy(p, length - 1);
    expect_sense(&task, 0x05, 0x1a, 0x00); /* the segment descriptor cut short */
    cr_assert_eq(extended_copy(p, 0).status, SCSI_STATUS_GOOD, "an empty list copies nothing");
}
