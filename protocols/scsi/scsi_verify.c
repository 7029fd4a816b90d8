/*
 * VERIFY (10, 12, 16) and WRITE AND VERIFY (10, 12, 16): the blocks are
 * read back from the medium and, with BYTCHK, compared with the data out
 * (01b: block for block; 11b, VERIFY only: the one block sent against
 * every block).  A difference ends the command with MISCOMPARE / 1D 00
 * and the offset of the first differing byte in the INFORMATION field.
 * Protection information (VRPROTECT, WRPROTECT) is not offered.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

enum { BYTCHK_NONE = 0, BYTCHK_BLOCKS = 1, BYTCHK_ONE_BLOCK = 3 };

/* The byte check field, at the same place in both commands' CDBs (byte 1, bits 2-1). */
static unsigned byte_check(const struct scsi_task *task) { return (task->cdb[1] >> 1) & 3; }

size_t scsi_first_difference(const uint8_t *a, const uint8_t *b, size_t length)
{
    size_t at = 0;
    /* Whole stretches first: a difference is the exception. */
    while (at + 4096 <= length && memcmp(a + at, b + at, 4096) == 0)
        at += 4096;
    while (at < length && a[at] == b[at])
        at++;
    return at;
}

/* ---- reading back and comparing ---- */

static void compared(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    uint8_t *medium = scsi_task_read_result(io);
    if (!medium)
        return;
    size_t length = io->length, difference = length;
    uint32_t block_size = task->lun->block_size;
    switch (byte_check(task)) {
    case BYTCHK_BLOCKS:
        difference = scsi_first_difference(task->data_out, medium, length);
        break;
    case BYTCHK_ONE_BLOCK:
        /* Offsets count as if the block had been sent once for each (SBC-4: duplicated into the Data-Out Buffer). */
        for (size_t at = 0; at < length && difference == length; at += block_size) {
            size_t in_block = scsi_first_difference(task->data_out, medium + at, block_size);
            if (in_block < block_size)
                difference = at + in_block;
        }
        break;
    default: /* a medium verification: the read succeeding is the check */
        break;
    }
    free(medium);
    if (difference < length)
        scsi_task_miscompare(task, difference);
    else
        scsi_task_good(task, 0);
}

/* Read [offset, offset + length) into a buffer of the task's, then compare as BYTCHK says. */
static void read_back(struct scsi_task *task, uint64_t offset, uint64_t length)
{
    scsi_task_read_into_work(task, offset, length, compared);
}

/*
 * The blocks a command reads back: from its LBA, as many as it verifies or,
 * when comparing block for block, as many whole blocks as the data out
 * holds (fewer data than the CDB says: the rest is the transport's
 * overflow, as for WRITE).  Its LBA and length passed the checks.
 */
static uint64_t blocks_to_read(const struct scsi_task *task, uint64_t blocks)
{
    if (byte_check(task) != BYTCHK_BLOCKS)
        return blocks;
    uint64_t sent = task->data_out_length / task->lun->block_size;
    return sent < blocks ? sent : blocks;
}

/* Checks both commands share: the range, the length; false after answering (GOOD for nothing to do). */
static bool checked(struct scsi_task *task, uint64_t lba, uint64_t blocks)
{
    struct scsi_lun *lun = task->lun;
    if (!scsi_task_range_check(task, lba, blocks))
        return false;
    if (blocks == 0) {
        scsi_task_good(task, 0); /* nothing to verify: not an error */
        return false;
    }
    if (blocks * lun->block_size > lun->bdev->limits.max_transfer) {
        scsi_task_invalid_field(task, scsi_cdb_length_byte(task->cdb), -1);
        return false;
    }
    return true;
}

/* ---- VERIFY ---- */

/* The range VERIFY reads, once the cache holds nothing newer than the medium. */
static void verify_read(struct scsi_task *task)
{
    uint64_t lba, blocks;
    scsi_cdb_lba_length(task->cdb, &lba, &blocks);
    uint32_t block_size = task->lun->block_size;
    read_back(task, lba * block_size, blocks_to_read(task, blocks) * block_size);
}

static void verify_flushed(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    if (io->result < 0)
        scsi_task_errno(task, io->result, true);
    else
        verify_read(task);
}

void scsi_verify(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    uint64_t lba, blocks;
    scsi_cdb_lba_length(task->cdb, &lba, &blocks);
    if (scsi_task_refuses_protection(task)) /* VRPROTECT */
        return;
    unsigned check = byte_check(task);
    if (check != BYTCHK_NONE && check != BYTCHK_BLOCKS && check != BYTCHK_ONE_BLOCK) {
        scsi_task_invalid_field(task, 1, 2); /* 10b is reserved */
        return;
    }
    if (!checked(task, lba, blocks))
        return;
    if (check == BYTCHK_BLOCKS)
        task->data_out_wanted = blocks * lun->block_size;
    if (check == BYTCHK_ONE_BLOCK)
        task->data_out_wanted = lun->block_size;
    if ((check == BYTCHK_BLOCKS && blocks_to_read(task, blocks) == 0) ||
        (check == BYTCHK_ONE_BLOCK && task->data_out_length < lun->block_size)) {
        scsi_task_good(task, 0); /* no whole block to compare with (the transport reports the overflow) */
        return;
    }
    if (!lun->write_cache || lun->readonly) {
        verify_read(task); /* no cache, or nothing this LUN wrote could be in it */
        return;
    }
    /* SBC-3: a cache first writes the blocks it holds to the medium; the whole cache, as SYNCHRONIZE CACHE. */
    scsi_task_submit_io(task, BDEV_OP_FLUSH, 0, 0, 0, NULL, verify_flushed);
}

/* ---- WRITE AND VERIFY ---- */

static void written(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    if (io->result < 0)
        scsi_task_errno(task, io->result, true);
    else
        read_back(task, io->offset, io->length); /* the guard still holds the range: what is read is ours */
}

void scsi_write_and_verify(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    uint64_t lba, blocks;
    scsi_cdb_lba_length(task->cdb, &lba, &blocks);
    if (scsi_task_refuses_protection(task)) /* WRPROTECT */
        return;
    unsigned check = byte_check(task);
    if (check != BYTCHK_NONE && check != BYTCHK_BLOCKS) {
        scsi_task_invalid_field(task, 1, 2); /* 10b and 11b are reserved here */
        return;
    }
    if (scsi_task_refuses_write(task))
        return;
    if (!checked(task, lba, blocks))
        return;
    task->data_out_wanted = blocks * lun->block_size;
    /* Less data than the CDB says: the whole blocks sent are written and verified, as WRITE does. */
    uint64_t sent = task->data_out_length / lun->block_size;
    if (sent < blocks)
        blocks = sent;
    if (blocks == 0) {
        scsi_task_good(task, 0);
        return;
    }
    /* FUA: what is read back must come from the medium, not from a cache in front of it. */
    scsi_task_prepare_io(task, BDEV_OP_WRITE, BDEV_FUA, lba * lun->block_size, blocks * lun->block_size,
                         (void *)task->data_out, written);
    scsi_guard_enter(task, lba, blocks, false, scsi_submit_prepared);
}
