/*
 * VERIFY, WRITE AND VERIFY and PRE-FETCH over the raw-file LUN: ranges,
 * the byte check modes (SBC-3), MISCOMPARE with the INFORMATION field at
 * the first differing byte, and the fields refused.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"
#include "test_scsi_harness.h"

TestSuite(scsi_verify, .init = setup, .fini = teardown);

/* What the LUN holds from lba on, straight from the file (the pattern until something writes). */
static void medium(uint64_t lba, uint8_t *out, size_t length) { read_file_directly(path, lba * BLOCK, out, length); }

static void verify_cdb(uint8_t *cdb, uint8_t opcode, uint8_t byte1, uint64_t lba, uint32_t blocks)
{
    memset(cdb, 0, 16);
    cdb[0] = opcode;
    cdb[1] = byte1;
    if (opcode == 0x2f || opcode == 0x2e || opcode == 0x34) {
        store_be32(cdb + 2, (uint32_t)lba);
        store_be16(cdb + 7, (uint16_t)blocks);
    } else if (opcode == 0xaf || opcode == 0xae) {
        store_be32(cdb + 2, (uint32_t)lba);
        store_be32(cdb + 6, blocks);
    } else {
        store_be64(cdb + 2, lba);
        store_be32(cdb + 10, blocks);
    }
}

static void expect_miscompare(const struct scsi_task *task, uint32_t offset)
{
    expect_sense(task, 0x0e, 0x1d, 0x00);
    cr_assert_eq(task->sense[0] & 0x80, 0x80, "VALID: the INFORMATION field is set");
    cr_assert_eq(load_be32(task->sense + 3), offset, "INFORMATION %u, expected %u", load_be32(task->sense + 3),
                 offset);
}

Test(scsi_verify, medium_verification_without_byte_check)
{
    attend("init");
    uint8_t cdb[16];
    const uint8_t opcodes[] = {0x2f, 0xaf, 0x8f};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        verify_cdb(cdb, opcodes[i], 0x10 /* DPO */, 100, 64);
        struct scsi_task task = run(cdb, 16, NULL, 0, NULL);
        cr_assert_eq(task.status, SCSI_STATUS_GOOD, "VERIFY %#x", opcodes[i]);
        cr_assert_eq(task.data_out_wanted, 0, "no data out without BYTCHK");

        verify_cdb(cdb, opcodes[i], 0, DISK / BLOCK - 1, 2);
        task = run(cdb, 16, NULL, 0, NULL);
        expect_sense(&task, 0x05, 0x21, 0x00);
        verify_cdb(cdb, opcodes[i], 0, DISK / BLOCK + 1, 0);
        task = run(cdb, 16, NULL, 0, NULL);
        expect_sense(&task, 0x05, 0x21, 0x00);
        verify_cdb(cdb, opcodes[i], 0, DISK / BLOCK, 0);
        cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "no blocks at the end: not an error");
    }
}

Test(scsi_verify, byte_check_compares_the_data_out)
{
    attend("init");
    uint8_t expected[4 * BLOCK];
    medium(100, expected, sizeof(expected));
    uint8_t cdb[16];
    const uint8_t opcodes[] = {0x2f, 0xaf, 0x8f};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        verify_cdb(cdb, opcodes[i], 0x02, 100, 4);
        struct scsi_task task = run(cdb, 16, expected, sizeof(expected), NULL);
        cr_assert_eq(task.status, SCSI_STATUS_GOOD, "VERIFY %#x of what the medium holds", opcodes[i]);
        cr_assert_eq(task.data_out_wanted, sizeof(expected));
    }

    uint8_t changed[4 * BLOCK];
    memcpy(changed, expected, sizeof(changed));
    changed[1500] ^= 0x58;
    changed[1700] ^= 0x01; /* a later difference: the first one is reported */
    verify_cdb(cdb, 0x8f, 0x02, 100, 4);
    struct scsi_task task = run(cdb, 16, changed, sizeof(changed), NULL);
    expect_miscompare(&task, 1500);

    /* Less data than the CDB says: the whole blocks sent are compared. */
    verify_cdb(cdb, 0x2f, 0x02, 100, 4);
    task = run(cdb, 16, expected, 2 * BLOCK + 7, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, 4 * BLOCK, "the transport reports the rest as overflow");
    task = run(cdb, 16, changed, 2 * BLOCK, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "the difference is in a block not sent");
}

Test(scsi_verify, one_block_against_every_block)
{
    attend("init");
    uint8_t blocks[4 * BLOCK];
    memset(blocks, 0x5a, sizeof(blocks));
    uint8_t write10[10] = {0x2a};
    store_be32(write10 + 2, 200);
    store_be16(write10 + 7, 4);
    cr_assert_eq(run(write10, 10, blocks, sizeof(blocks), NULL).status, SCSI_STATUS_GOOD);

    uint8_t cdb[16];
    verify_cdb(cdb, 0xaf, 0x06 /* BYTCHK 11b */, 200, 4);
    struct scsi_task task = run(cdb, 16, blocks, BLOCK, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, BLOCK, "one block of data out");

    uint8_t odd[BLOCK];
    memset(odd, 0x5a, sizeof(odd));
    odd[10] = 0;
    store_be32(write10 + 2, 202);
    store_be16(write10 + 7, 1);
    cr_assert_eq(run(write10, 10, odd, sizeof(odd), NULL).status, SCSI_STATUS_GOOD);
    task = run(cdb, 16, blocks, BLOCK, NULL);
    expect_miscompare(&task, 2 * BLOCK + 10);
}

Test(scsi_verify, protection_and_reserved_byte_check_refused)
{
    attend("init");
    uint8_t block[BLOCK] = {0};
    uint8_t cdb[16];
    for (uint8_t protect = 1; protect < 8; protect++) {
        verify_cdb(cdb, 0x2f, (uint8_t)(protect << 5 | 0x02), 0, 1);
        struct scsi_task task = run(cdb, 16, block, sizeof(block), NULL);
        expect_sense(&task, 0x05, 0x24, 0x00);
        cr_assert_eq(task.sense[15], 0xcf, "SKSV, C/D, BPV, bit 7");
        cr_assert_eq(load_be16(task.sense + 16), 1, "byte 1: VRPROTECT");
    }
    verify_cdb(cdb, 0x8f, 0x04 /* BYTCHK 10b */, 0, 1);
    struct scsi_task task = run(cdb, 16, block, sizeof(block), NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

Test(scsi_verify, write_and_verify_writes_then_compares)
{
    attend("init");
    uint8_t out[3 * BLOCK], direct[3 * BLOCK];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (uint8_t)(i * 13 + 1);
    uint8_t cdb[16];
    const uint8_t opcodes[] = {0x2e, 0xae, 0x8e};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        out[0] = (uint8_t)i;
        verify_cdb(cdb, opcodes[i], i == 1 ? 0x10 /* DPO, no byte check */ : 0x02, 300 + 10 * i, 3);
        struct scsi_task task = run(cdb, 16, out, sizeof(out), NULL);
        cr_assert_eq(task.status, SCSI_STATUS_GOOD, "WRITE AND VERIFY %#x", opcodes[i]);
        cr_assert_eq(task.data_out_wanted, sizeof(out));
        medium(300 + 10 * i, direct, sizeof(direct));
        cr_assert_eq(memcmp(direct, out, sizeof(out)), 0, "written");
    }

    /* Less data than the CDB says: the whole blocks sent are written, nothing more. */
    uint8_t before[BLOCK];
    medium(401, before, sizeof(before));
    verify_cdb(cdb, 0x2e, 0x02, 400, 2);
    struct scsi_task task = run(cdb, 16, out, BLOCK + 100, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, 2 * BLOCK);
    medium(400, direct, 2 * BLOCK);
    cr_assert_eq(memcmp(direct, out, BLOCK), 0);
    cr_assert_eq(memcmp(direct + BLOCK, before, BLOCK), 0, "the block without data is untouched");

    verify_cdb(cdb, 0x2e, 0, 0, 0);
    cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "0 blocks");
    verify_cdb(cdb, 0x2e, 0, DISK / BLOCK + 1, 0);
    task = run(cdb, 16, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00);
    verify_cdb(cdb, 0xae, 0x20 /* WRPROTECT */, 0, 1);
    task = run(cdb, 16, out, BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
    verify_cdb(cdb, 0x8e, 0x06 /* BYTCHK 11b: reserved here */, 0, 1);
    task = run(cdb, 16, out, BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

Test(scsi_verify, prefetch_checks_the_range)
{
    attend("init");
    uint8_t cdb[16];
    const uint8_t opcodes[] = {0x34, 0x90};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        verify_cdb(cdb, opcodes[i], 0, 0, 256);
        cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "PRE-FETCH %#x", opcodes[i]);
        verify_cdb(cdb, opcodes[i], 0x02 /* IMMED */, DISK / BLOCK - 1, 1);
        cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
        verify_cdb(cdb, opcodes[i], 0, DISK / BLOCK - 1, 2);
        struct scsi_task task = run(cdb, 16, NULL, 0, NULL);
        expect_sense(&task, 0x05, 0x21, 0x00);
        verify_cdb(cdb, opcodes[i], 0, DISK / BLOCK + 1, 0);
        task = run(cdb, 16, NULL, 0, NULL);
        expect_sense(&task, 0x05, 0x21, 0x00);
    }
}

TestSuite(scsi_verify_readonly, .init = setup_readonly, .fini = teardown);

Test(scsi_verify_readonly, write_and_verify_write_protected_verify_allowed)
{
    attend("init");
    uint8_t block[BLOCK];
    medium(5, block, sizeof(block));
    uint8_t cdb[16];
    verify_cdb(cdb, 0x2e, 0x02, 5, 1);
    struct scsi_task task = run(cdb, 16, block, sizeof(block), NULL);
    expect_sense(&task, 0x07, 0x27, 0x00);
    verify_cdb(cdb, 0x2f, 0x02, 5, 1);
    cr_assert_eq(run(cdb, 16, block, sizeof(block), NULL).status, SCSI_STATUS_GOOD, "VERIFY only reads");
}
