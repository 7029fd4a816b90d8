/*
 * The SCSI core over a real raw-file bdev on a real loop, no sockets:
 * CDBs in, status / sense / data out, checked against SPC-4 and SBC-3 for
 * every command the core answers and the errors it must report.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "protocols/scsi/scsi_internal.h"
#include "test_scsi_harness.h"

TestSuite(scsi, .init = setup, .fini = teardown);

Test(scsi, unit_attention_once_per_nexus_not_for_inquiry)
{
    uint8_t inquiry[6] = {0x12, 0, 0, 0, 36, 0};
    struct scsi_task task = run(inquiry, 6, NULL, 0, "a");
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "INQUIRY is not held up by a unit attention");
    attend("a");
    uint8_t tur[6] = {0x00};
    cr_assert_eq(run(tur, 6, NULL, 0, "a").status, SCSI_STATUS_GOOD);
    attend("b"); /* another nexus gets its own */
}

Test(scsi, inquiry_standard_and_vital_pages)
{
    attend("init");
    uint8_t cdb[6] = {0x12, 0, 0, 0, 96, 0};
    struct scsi_task task = run(cdb, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 74, "up to the version descriptors");
    cr_assert_eq(load_be16(data_in + 62), 0x04c0, "claims SBC-3");
    cr_assert_eq(data_in[0], 0x00, "direct-access block device");
    cr_assert_eq(data_in[2], 0x06, "SPC-4");
    cr_assert_eq(memcmp(data_in + 8, "LUNA    ", 8), 0);
    cr_assert_eq(memcmp(data_in + 16, "lunad           ", 16), 0);

    uint8_t pages[6] = {0x12, 1, 0x00, 0, 255, 0};
    task = run(pages, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    const uint8_t expected[] = {0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2};
    cr_assert_eq(load_be16(data_in + 2), sizeof(expected));
    cr_assert_eq(memcmp(data_in + 4, expected, sizeof(expected)), 0);

    uint8_t extended[6] = {0x12, 1, 0x86, 0, 255, 0};
    task = run(extended, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 64);
    cr_assert_eq(data_in[5], 0x01, "SIMPSUP");
    cr_assert_eq(data_in[6], 0x01, "V_SUP: the harness's LUN has a write cache");
    cr_assert_eq(data_in[13], SCSI_SENSE_MAX);

    uint8_t serial[6] = {0x12, 1, 0x80, 0, 255, 0};
    task = run(serial, 6, NULL, 0, NULL);
    cr_assert_eq(memcmp(data_in + 4, "SN42", 4), 0);

    uint8_t identification[6] = {0x12, 1, 0x83, 0, 255, 0};
    task = run(identification, 6, NULL, 0, NULL);
    cr_assert_eq(data_in[5] & 0x0f, 0x03, "first designator: NAA");
    cr_assert_eq(data_in[8] >> 4, 0x5, "NAA 5");

    uint8_t limits[6] = {0x12, 1, 0xb0, 0, 255, 0};
    task = run(limits, 6, NULL, 0, NULL);
    cr_assert_eq(task.data_in_length, 64);
    cr_assert_gt(load_be32(data_in + 8), 0, "a maximum transfer length");
    cr_assert_gt(load_be32(data_in + 20), 0, "a raw file can unmap: a maximum unmap count");

    uint8_t provisioning[6] = {0x12, 1, 0xb2, 0, 255, 0};
    task = run(provisioning, 6, NULL, 0, NULL);
    cr_assert_eq(data_in[5] & 0x80, 0x80, "LBPU");
    cr_assert_eq(data_in[6] & 0x07, 0x02, "thin provisioned");

    uint8_t bad_page[6] = {0x12, 1, 0x99, 0, 255, 0};
    task = run(bad_page, 6, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
    cr_assert_eq(task.sense[15], 0xc0, "SKSV and C/D");
    cr_assert_eq(task.sense[17], 2, "field pointer: byte 2");
    uint8_t page_without_evpd[6] = {0x12, 0, 0x80, 0, 255, 0};
    task = run(page_without_evpd, 6, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

Test(scsi, read_capacity_10_and_16)
{
    attend("init");
    uint8_t ten[10] = {0x25};
    struct scsi_task task = run(ten, 10, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 8);
    cr_assert_eq(load_be32(data_in), DISK / BLOCK - 1, "the last LBA");
    cr_assert_eq(load_be32(data_in + 4), BLOCK);

    uint8_t sixteen[16] = {0x9e, 0x10};
    store_be32(sixteen + 10, 32);
    task = run(sixteen, 16, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 32);
    cr_assert_eq(load_be64(data_in), DISK / BLOCK - 1);
    cr_assert_eq(load_be32(data_in + 8), BLOCK);
    cr_assert_eq(data_in[14] & 0x80, 0x80, "LBPME: a raw file is thin");

    sixteen[1] = 0x11; /* no such service action */
    task = run(sixteen, 16, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

/* An export grown while served (a reload follows its file): every nexus hears of it, then sees it. */
Test(scsi, capacity_change_follows_the_file)
{
    attend("one");
    attend("two");
    uint8_t ten[10] = {0x25}, tur[6] = {0};
    cr_assert_eq(truncate(path, 2 * DISK), 0);
    uint64_t size = 0;
    cr_assert_eq(bdev_refresh_size(bdev, &size), 1, "the file grew");
    cr_assert_eq(size, 2 * DISK);
    struct scsi_task task = run(tur, 6, NULL, 0, "one");
    expect_sense(&task, 0x06, 0x2a, 0x09); /* CAPACITY DATA HAS CHANGED */
    task = run(ten, 10, NULL, 0, "one");
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(load_be32(data_in), 2 * DISK / BLOCK - 1, "the new last LBA");
    task = run(ten, 10, NULL, 0, "two");
    expect_sense(&task, 0x06, 0x2a, 0x09);

    uint8_t write16[16] = {0x8a};
    store_be64(write16 + 2, DISK / BLOCK + 5); /* past the old end */
    store_be32(write16 + 10, 1);
    uint8_t block[BLOCK];
    memset(block, 0x77, sizeof(block));
    cr_assert_eq(run(write16, 16, block, sizeof(block), "two").status, SCSI_STATUS_GOOD);

    cr_assert_eq(truncate(path, DISK), 0);
    cr_assert_eq(bdev_refresh_size(bdev, &size), -EBUSY, "a file that shrank is not followed");
    task = run(ten, 10, NULL, 0, "one");
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "no attention: nothing changed for the initiators");
    cr_assert_eq(load_be32(data_in), 2 * DISK / BLOCK - 1);
}

Test(scsi, write_then_read_every_cdb_size)
{
    attend("init");
    uint8_t out[4 * BLOCK];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (uint8_t)(i * 7 + 3);
    /* WRITE(10) of 4 blocks at LBA 100, FUA. */
    uint8_t write10[10] = {0x2a, 0x08};
    store_be32(write10 + 2, 100);
    store_be16(write10 + 7, 4);
    cr_assert_eq(run(write10, 10, out, sizeof(out), NULL).status, SCSI_STATUS_GOOD);

    uint8_t read6[6] = {0x08, 0, 0, 100, 4, 0};
    struct scsi_task task = run(read6, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, sizeof(out));
    cr_assert_eq(memcmp(data_in, out, sizeof(out)), 0);

    uint8_t read12[12] = {0xa8};
    store_be32(read12 + 2, 101);
    store_be32(read12 + 6, 2);
    task = run(read12, 12, NULL, 0, NULL);
    cr_assert_eq(memcmp(data_in, out + BLOCK, 2 * BLOCK), 0);

    uint8_t read16[16] = {0x88};
    store_be64(read16 + 2, 99);
    store_be32(read16 + 10, 2);
    task = run(read16, 16, NULL, 0, NULL);
    cr_assert_eq(task.data_in_length, 2 * BLOCK);
    for (unsigned i = 0; i < BLOCK; i++)
        cr_assert_eq(data_in[i], pattern_byte(99 * BLOCK + i), "LBA 99 untouched");
    cr_assert_eq(memcmp(data_in + BLOCK, out, BLOCK), 0);

    /* What the bdev holds is what was written. */
    uint8_t direct[4 * BLOCK];
    read_file_directly(path, 100 * BLOCK, direct, sizeof(direct));
    cr_assert_eq(memcmp(direct, out, sizeof(out)), 0);

    /* WRITE(6) and WRITE(16) too. */
    uint8_t write6[6] = {0x0a, 0, 0, 10, 1, 0};
    cr_assert_eq(run(write6, 6, out, BLOCK, NULL).status, SCSI_STATUS_GOOD);
    uint8_t write16[16] = {0x8a};
    store_be64(write16 + 2, 11);
    store_be32(write16 + 10, 1);
    cr_assert_eq(run(write16, 16, out + BLOCK, BLOCK, NULL).status, SCSI_STATUS_GOOD);
    read_file_directly(path, 10 * BLOCK, direct, 2 * BLOCK);
    cr_assert_eq(memcmp(direct, out, 2 * BLOCK), 0);
}

Test(scsi, out_of_range_and_short_data)
{
    attend("init");
    uint8_t read10[10] = {0x28};
    store_be32(read10 + 2, DISK / BLOCK - 1);
    store_be16(read10 + 7, 2);
    struct scsi_task task = run(read10, 10, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00);

    uint8_t read16[16] = {0x88};
    store_be64(read16 + 2, UINT64_MAX);
    store_be32(read16 + 10, 1);
    task = run(read16, 16, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00);

    uint8_t last[10] = {0x28};
    store_be32(last + 2, DISK / BLOCK - 1);
    store_be16(last + 7, 1);
    cr_assert_eq(run(last, 10, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "the last block is readable");

    /* Less data than the CDB asks to write: the whole blocks sent are written, the rest reported. */
    uint8_t write10[10] = {0x2a};
    store_be32(write10 + 2, 0);
    store_be16(write10 + 7, 2);
    uint8_t one[BLOCK];
    memset(one, 0x5a, sizeof(one));
    task = run(write10, 10, one, sizeof(one), NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, 2 * BLOCK);
    uint8_t direct[2 * BLOCK];
    read_file_directly(path, 0, direct, sizeof(direct));
    cr_assert_eq(memcmp(direct, one, BLOCK), 0);
    cr_assert_eq(direct[BLOCK], pattern_byte(BLOCK), "the block without data is untouched");
}

Test(scsi, invalid_opcode)
{
    attend("init");
    uint8_t cdb[6] = {0xc7};
    struct scsi_task task = run(cdb, 6, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x20, 0x00);
}

Test(scsi, absent_lun)
{
    uint8_t tur[6] = {0x00};
    int completions = 0;
    struct scsi_task task = task_for(tur, 6, NULL, 0, NULL);
    task.lun = NULL;
    task.data_in_capacity = 96;
    task_count_completions(&task, &completions);
    scsi_task_execute(&task);
    cr_assert_eq(completions, 1);
    expect_sense(&task, 0x05, 0x25, 0x00);

    uint8_t inquiry[6] = {0x12, 0, 0, 0, 36, 0};
    memcpy(task.cdb, inquiry, 6);
    scsi_task_execute(&task);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[0], 0x7f, "peripheral qualifier 3: no LUN here");
}

Test(scsi, report_luns)
{
    uint8_t cdb[12] = {0xa0};
    store_be32(cdb + 6, 64);
    struct scsi_task task = run(cdb, 12, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 32);
    cr_assert_eq(load_be32(data_in), 24);
    cr_assert_eq(load_be64(data_in + 8), 0);
    cr_assert_eq(data_in[17], 1);
    cr_assert_eq(data_in[24], 0x41, "LUN 300: flat space addressing");
    cr_assert_eq(data_in[25], 300 & 0xff);

    store_be32(cdb + 6, 8);
    task = run(cdb, 12, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

Test(scsi, mode_sense_caching_page)
{
    attend("init");
    uint8_t six[6] = {0x1a, 0x08, 0x08, 0, 255, 0}; /* DBD, caching page */
    struct scsi_task task = run(six, 6, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[0] + 1u, task.data_in_length, "mode data length");
    cr_assert_eq(data_in[3], 0, "no block descriptor with DBD");
    cr_assert_eq(data_in[4], 0x08);
    cr_assert_eq(data_in[6] & 0x04, 0x04, "WCE: a writeback cache");
    cr_assert_eq(data_in[2] & 0x80, 0, "not write protected");

    uint8_t ten[10] = {0x5a, 0, 0x3f};
    store_be16(ten + 7, 1024);
    task = run(ten, 10, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(load_be16(data_in) + 2u, task.data_in_length);
    cr_assert_eq(data_in[7], 8, "a block descriptor");
    cr_assert_eq(load_be32(data_in + 8 + 4), BLOCK);
    cr_assert_eq(data_in[16], 0x01, "all pages: read-write error recovery first");

    uint8_t saved[6] = {0x1a, 0, 0xc8, 0, 255, 0};
    task = run(saved, 6, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x39, 0x00);
    uint8_t no_page[6] = {0x1a, 0, 0x2b, 0, 255, 0};
    task = run(no_page, 6, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

/* An UNMAP parameter list of one descriptor. */
static size_t unmap_list(uint8_t *list, uint64_t lba, uint32_t blocks)
{
    memset(list, 0, 24);
    store_be16(list, 22);
    store_be16(list + 2, 16);
    store_be64(list + 8, lba);
    store_be32(list + 16, blocks);
    return 24;
}

Test(scsi, unmap_deallocates_and_reads_zero)
{
    attend("init");
    uint8_t list[24];
    size_t length = unmap_list(list, 2048, 2048); /* 1 MiB at 1 MiB */
    uint8_t cdb[10] = {0x42};
    store_be16(cdb + 7, (uint16_t)length);
    cr_assert_eq(run(cdb, 10, list, length, NULL).status, SCSI_STATUS_GOOD);
    uint8_t direct[4096];
    read_file_directly(path, 2048 * BLOCK, direct, sizeof(direct));
    cr_assert(all_zero(direct, sizeof(direct)));

    uint8_t status[16] = {0x9e, 0x12};
    store_be64(status + 2, 2048);
    store_be32(status + 10, 64);
    struct scsi_task task = run(status, 16, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(load_be64(data_in + 8), 2048, "the first descriptor starts at the LBA asked for");
    cr_assert_eq(load_be32(data_in + 16), 2048, "1 MiB deallocated");
    cr_assert_eq(data_in[20] & 0x0f, 1, "deallocated");
    cr_assert_eq(data_in[36] & 0x0f, 0, "mapped after it");

    length = unmap_list(list, DISK / BLOCK - 1, 2);
    task = run(cdb, 10, list, length, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00);

    cdb[1] = 0x01; /* ANCHOR */
    task = run(cdb, 10, list, length, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

Test(scsi, write_same_zeroes_and_pattern)
{
    attend("init");
    uint8_t block[BLOCK];
    memset(block, 0xa5, sizeof(block));
    uint8_t ten[10] = {0x41};
    store_be32(ten + 2, 8);
    store_be16(ten + 7, 3);
    cr_assert_eq(run(ten, 10, block, sizeof(block), NULL).status, SCSI_STATUS_GOOD);
    uint8_t direct[4 * BLOCK];
    read_file_directly(path, 8 * BLOCK, direct, sizeof(direct));
    for (unsigned i = 0; i < 3 * BLOCK; i++)
        cr_assert_eq(direct[i], 0xa5);
    cr_assert_eq(direct[3 * BLOCK], pattern_byte(11 * BLOCK), "nothing beyond the range");

    uint8_t sixteen[16] = {0x93, 0x08 | 0x01}; /* UNMAP, NDOB */
    store_be64(sixteen + 2, 8);
    store_be32(sixteen + 10, 2);
    cr_assert_eq(run(sixteen, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
    read_file_directly(path, 8 * BLOCK, direct, sizeof(direct));
    cr_assert(all_zero(direct, 2 * BLOCK));
    cr_assert_eq(direct[2 * BLOCK], 0xa5);

    /* Zero blocks: to the last LBA (WSNZ 0). */
    store_be64(sixteen + 2, DISK / BLOCK - 4);
    store_be32(sixteen + 10, 0);
    sixteen[1] = 0x01; /* NDOB, no UNMAP: zeroes written */
    cr_assert_eq(run(sixteen, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
    read_file_directly(path, DISK - 5 * BLOCK, direct, sizeof(direct));
    cr_assert_eq(direct[0], pattern_byte(DISK - 5 * BLOCK), "before the LBA: untouched");
    cr_assert(all_zero(direct + BLOCK, 3 * BLOCK), "from the LBA to the end");
    /* Zero blocks with a pattern: written to the last LBA too. */
    uint8_t ten_to_end[10] = {0x41};
    store_be32(ten_to_end + 2, DISK / BLOCK - 2);
    cr_assert_eq(run(ten_to_end, 10, block, sizeof(block), NULL).status, SCSI_STATUS_GOOD);
    read_file_directly(path, DISK - 3 * BLOCK, direct, 3 * BLOCK);
    cr_assert(all_zero(direct, BLOCK), "before the LBA: the zeroes above");
    for (unsigned i = BLOCK; i < 3 * BLOCK; i++)
        cr_assert_eq(direct[i], 0xa5, "the pattern up to the end");
    /* UNMAP on a thin LUN deallocates whatever the data block holds: zeroes (LBPRZ). */
    ten_to_end[1] = 0x08;
    cr_assert_eq(run(ten_to_end, 10, block, sizeof(block), NULL).status, SCSI_STATUS_GOOD);
    read_file_directly(path, DISK - 2 * BLOCK, direct, 2 * BLOCK);
    cr_assert(all_zero(direct, 2 * BLOCK));

    store_be64(sixteen + 2, DISK / BLOCK + 1);
    struct scsi_task task = run(sixteen, 16, NULL, 0, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00); /* past the end */
    uint8_t limits[6] = {0x12, 1, 0xb0, 0, 255, 0};
    cr_assert_eq(run(limits, 6, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
    cr_assert_eq(data_in[4] & 0x01, 0, "WSNZ 0");
}

Test(scsi, synchronize_cache)
{
    attend("init");
    uint8_t cdb[10] = {0x35};
    cr_assert_eq(run(cdb, 10, NULL, 0, NULL).status, SCSI_STATUS_GOOD);
}

TestSuite(scsi_readonly, .init = setup_readonly, .fini = teardown);

Test(scsi_readonly, writes_are_write_protected)
{
    attend("init");
    uint8_t block[BLOCK] = {0};
    uint8_t write10[10] = {0x2a};
    store_be16(write10 + 7, 1);
    struct scsi_task task = run(write10, 10, block, sizeof(block), NULL);
    expect_sense(&task, 0x07, 0x27, 0x00);

    uint8_t list[24];
    size_t length = unmap_list(list, 0, 1);
    uint8_t unmap[10] = {0x42};
    task = run(unmap, 10, list, length, NULL);
    expect_sense(&task, 0x07, 0x27, 0x00);

    uint8_t same[10] = {0x41};
    store_be16(same + 7, 1);
    task = run(same, 10, block, sizeof(block), NULL);
    expect_sense(&task, 0x07, 0x27, 0x00);

    uint8_t mode[6] = {0x1a, 0x08, 0x3f, 0, 255, 0};
    task = run(mode, 6, NULL, 0, NULL);
    cr_assert_eq(data_in[2] & 0x80, 0x80, "WP in the device-specific parameter");

    uint8_t read10[10] = {0x28};
    store_be16(read10 + 7, 1);
    cr_assert_eq(run(read10, 10, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "reads still work");
    cr_assert_eq(data_in[5], pattern_byte(5));
}

/* READ DEFECT DATA: the lists asked for are valid and empty. */
Test(scsi, read_defect_data_is_empty)
{
    attend("init");
    uint8_t ten[10] = {0x37, 0, 0x18 | 0x05 /* PLIST, GLIST, format 5 */};
    store_be16(ten + 7, 32);
    struct scsi_task task = run(ten, 10, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 4);
    cr_assert_eq(data_in[1], 0x1d, "PLISTV, GLISTV, the format asked for");
    cr_assert_eq(load_be16(data_in + 2), 0, "no defects");

    uint8_t twelve[12] = {0xb7, 0x08 /* GLIST */};
    store_be32(twelve + 6, 6);
    task = run(twelve, 12, NULL, 0, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_in_length, 6, "cut at the allocation length");
    cr_assert_eq(data_in[1], 0x08);
}
