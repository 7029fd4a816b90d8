/*
 * The read-modify-write commands, each one uninterrupted step for every
 * other writer of the LUN.
 *
 * COMPARE AND WRITE (SBC-3): NUMBER OF LOGICAL BLOCKS n, a data out of 2n
 * blocks, the verify data then the write data.  The n blocks are read and
 * compared with the verify data; only when they are equal is the write data
 * written (FUA honoured).  A difference: MISCOMPARE / 1D 00, the INFORMATION
 * field the offset of the first differing byte, nothing written.
 *
 * The read, the compare and the write are one atomic step for every other
 * writer of the LUN: the task holds its range exclusively in the write
 * guard from before the read until it is answered, and every write of the
 * core (WRITE, WRITE AND VERIFY, WRITE SAME, UNMAP, other COMPARE AND
 * WRITEs) takes its range there too, so an overlapping one waits.
 *
 * ORWRITE(16) (SBC-3 §5.10): the blocks are read, ORed with the data out
 * and written back, under the same exclusive hold of the range.
 */
#include <errno.h>
#include <stdlib.h>

#include "protocols/scsi/scsi_internal.h"

static void caw_written(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    if (io->result < 0)
        scsi_task_errno(task, io->result, true);
    else
        scsi_task_good(task, 0);
}

static void caw_read(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    uint8_t *medium = scsi_task_read_result(io);
    if (!medium)
        return;
    size_t length = io->length;
    size_t difference = scsi_first_difference(task->data_out, medium, length);
    free(medium);
    if (difference < length) {
        scsi_task_miscompare(task, difference);
        return;
    }
    bool fua = task->cdb[1] & 0x08;
    scsi_task_submit_io(task, BDEV_OP_WRITE, fua ? BDEV_FUA : 0, io->offset, length,
                        (void *)(task->data_out + length), caw_written);
}

/* The range is the task's alone: read what is there. */
static void caw_begin(struct scsi_task *task)
{
    uint32_t block_size = task->lun->block_size;
    scsi_task_read_into_work(task, load_be64(task->cdb + 2) * block_size, (uint64_t)task->cdb[13] * block_size,
                             caw_read);
}

void scsi_compare_and_write(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    struct scsi_lun *lun = task->lun;
    uint64_t lba = load_be64(cdb + 2), blocks = cdb[13];
    if (scsi_task_refuses_protection(task) || scsi_task_refuses_write(task))
        return;
    if (blocks > scsi_max_compare_and_write(lun)) {
        scsi_task_invalid_field(task, 13, -1); /* more than MAXIMUM COMPARE AND WRITE LENGTH */
        return;
    }
    if (!scsi_task_range_check(task, lba, blocks))
        return;
    task->data_out_wanted = 2 * blocks * lun->block_size;
    if (task->data_out_length != task->data_out_wanted) {
        /* Other than 2n blocks: no verify data and write data to tell apart (also for n = 0 with data). */
        scsi_task_invalid_field(task, 13, -1);
        return;
    }
    if (blocks == 0) {
        scsi_task_good(task, 0); /* nothing read, compared or written: not an error */
        return;
    }
    scsi_guard_enter(task, lba, blocks, true, caw_begin);
}

static void orwrite_written(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    free(task->work);
    task->work = NULL;
    if (io->result < 0)
        scsi_task_errno(task, io->result, true);
    else
        scsi_task_good(task, 0);
}

static void orwrite_read(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    uint8_t *medium = scsi_task_read_result(io);
    if (!medium)
        return;
    for (size_t i = 0; i < io->length; i++)
        medium[i] |= task->data_out[i];
    task->work = medium; /* freed once written */
    bool fua = task->cdb[1] & 0x08;
    scsi_task_submit_io(task, BDEV_OP_WRITE, fua ? BDEV_FUA : 0, io->offset, io->length, medium, orwrite_written);
}

static void orwrite_begin(struct scsi_task *task)
{
    uint32_t block_size = task->lun->block_size;
    scsi_task_read_into_work(task, load_be64(task->cdb + 2) * block_size,
                             (uint64_t)load_be32(task->cdb + 10) * block_size, orwrite_read);
}

void scsi_orwrite(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    struct scsi_lun *lun = task->lun;
    uint64_t lba = load_be64(cdb + 2), blocks = load_be32(cdb + 10);
    if (scsi_task_refuses_protection(task) || scsi_task_refuses_write(task) ||
        !scsi_task_range_check(task, lba, blocks))
        return;
    uint64_t bytes = blocks * lun->block_size;
    if (bytes > lun->bdev->limits.max_transfer) {
        scsi_task_invalid_field(task, 10, -1);
        return;
    }
    task->data_out_wanted = bytes;
    if (bytes == 0) {
        scsi_task_good(task, 0);
        return;
    }
    if (task->data_out_length < bytes) {
        /* Every block is ORed with what the initiator sent: with less, there is nothing to OR with. */
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    scsi_guard_enter(task, lba, blocks, true, orwrite_begin);
}
