/*
 * The block commands: READ and WRITE (6, 10, 12, 16; FUA), READ CAPACITY
 * (10, 16), SYNCHRONIZE CACHE, UNMAP, WRITE SAME (zeroes or NDOB through
 * write_zeroes, UNMAP bit honoured on thin LUNs; other patterns written
 * out), GET LBA STATUS.  I/O goes to the LUN's bdev and completes on the
 * task's aio_context; every write goes through the write guard, so none
 * lands inside a COMPARE AND WRITE.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

#define PATTERN_CHUNK (1u << 20)
#define STATUS_EXTENTS 64

/* ---- one bdev request for the task ---- */

static void io_done(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    bool write = io->op != BDEV_OP_READ && io->op != BDEV_OP_BLOCK_STATUS;
    if (io->result < 0)
        scsi_task_errno(task, io->result, write);
    else
        scsi_task_good(task, io->op == BDEV_OP_READ ? io->length : 0);
}

void scsi_task_prepare_io(struct scsi_task *task, enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length,
                          void *buffer, void (*complete)(struct bdev_io *io))
{
    task->iov = (struct iovec){.iov_base = buffer, .iov_len = length};
    task->io = (struct bdev_io){.op = op,
                                .flags = flags,
                                .offset = offset,
                                .length = length,
                                .iov = buffer ? &task->iov : NULL,
                                .iovcnt = buffer ? 1 : 0,
                                .ctx = task->ctx,
                                .complete = complete,
                                .opaque = task};
}

void scsi_submit_prepared(struct scsi_task *task) { bdev_submit(task->lun->bdev, &task->io); }

void scsi_task_submit_io(struct scsi_task *task, enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length,
                         void *buffer, void (*complete)(struct bdev_io *io))
{
    scsi_task_prepare_io(task, op, flags, offset, length, buffer, complete);
    scsi_submit_prepared(task);
}

void scsi_task_read_into_work(struct scsi_task *task, uint64_t offset, uint64_t length,
                              void (*complete)(struct bdev_io *io))
{
    task->work = malloc(length);
    if (!task->work) {
        scsi_task_errno(task, -ENOMEM, false);
        return;
    }
    scsi_task_submit_io(task, BDEV_OP_READ, 0, offset, length, task->work, complete);
}

uint8_t *scsi_task_read_result(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    uint8_t *buffer = task->work;
    task->work = NULL;
    if (io->result < 0) {
        free(buffer);
        scsi_task_errno(task, io->result, false);
        return NULL;
    }
    return buffer;
}

/* ---- READ / WRITE ---- */

static void bounced_read_done(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    uint8_t *bounce = scsi_task_read_result(io);
    if (!bounce)
        return;
    if (task->data_in_capacity)
        memcpy(task->data_in, bounce, task->data_in_capacity);
    free(bounce);
    task->data_in_wanted = io->length;
    scsi_task_good(task, task->data_in_capacity);
}

void scsi_read_write(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    struct scsi_lun *lun = task->lun;
    uint64_t lba, blocks;
    bool six = cdb[0] == 0x08 || cdb[0] == 0x0a;
    if (six) { /* 21-bit LBA, 0 blocks means 256 */
        lba = load_be24(cdb + 1) & 0x1fffff;
        blocks = cdb[4] ? cdb[4] : 256;
    } else {
        scsi_cdb_lba_length(cdb, &lba, &blocks);
    }
    /* FUA: a write is stable before it completes; a read always sees the latest data, all FUA asks of it. */
    bool fua = !six && (cdb[1] & 0x08);
    bool write = cdb[0] == 0x0a || cdb[0] == 0x2a || cdb[0] == 0xaa || cdb[0] == 0x8a;
    if ((!six && scsi_task_refuses_protection(task)) || (write && scsi_task_refuses_write(task)))
        return;
    if (!scsi_task_range_check(task, lba, blocks))
        return;
    uint64_t bytes = blocks * lun->block_size;
    if (bytes == 0) {
        scsi_task_good(task, 0);
        return;
    }
    if (bytes > lun->bdev->limits.max_transfer) {
        scsi_task_invalid_field(task, six ? 4 : scsi_cdb_length_byte(cdb), -1);
        return;
    }
    if (write) {
        task->data_out_wanted = bytes;
        if (task->data_out_length < bytes) {
            /* Less data than the CDB says (the transport reports the overflow): write the whole blocks sent. */
            bytes = task->data_out_length / lun->block_size * lun->block_size;
            if (bytes == 0) {
                scsi_task_good(task, 0);
                return;
            }
        }
        scsi_task_prepare_io(task, BDEV_OP_WRITE, fua ? BDEV_FUA : 0, lba * lun->block_size, bytes, (void *)task->data_out,
                io_done);
        scsi_guard_enter(task, lba, bytes / lun->block_size, false, scsi_submit_prepared);
    } else if (task->data_in_capacity < bytes) {
        /* The initiator expects less than the CDB reads: read it all, return what fits (overflow). */
        scsi_task_read_into_work(task, lba * lun->block_size, bytes, bounced_read_done);
    } else {
        scsi_task_submit_io(task, BDEV_OP_READ, 0, lba * lun->block_size, bytes, task->data_in, io_done);
    }
}

/* ---- capacity ---- */

void scsi_read_capacity10(struct scsi_task *task)
{
    const struct scsi_lun *lun = task->lun;
    uint8_t answer[8];
    uint64_t last = scsi_lun_blocks(lun) ? scsi_lun_blocks(lun) - 1 : 0;
    store_be32(answer, last > 0xffffffffu ? 0xffffffffu : (uint32_t)last); /* too big: use (16) */
    store_be32(answer + 4, lun->block_size);
    scsi_task_reply(task, answer, sizeof(answer));
}

void scsi_read_capacity16(struct scsi_task *task)
{
    const struct scsi_lun *lun = task->lun;
    uint8_t answer[32] = {0};
    store_be64(answer, scsi_lun_blocks(lun) ? scsi_lun_blocks(lun) - 1 : 0);
    store_be32(answer + 8, lun->block_size);
    /*
     * Logical blocks per physical block exponent: 0.  The bdev's physical
     * block size is a preferred unit (a file system's block, an NBD
     * server's preference), not a medium's sector; it goes to the block
     * limits page as the optimal transfer length granularity instead, as
     * LIO reports file backstores.
     */
    if (lun->thin)
        answer[14] = (uint8_t)(0x80 | (lun->unmapped_zero ? 0x40 : 0)); /* LBPME, LBPRZ */
    uint32_t allocation = load_be32(task->cdb + 10);
    scsi_task_reply(task, answer, allocation < sizeof(answer) ? allocation : sizeof(answer));
}

/* ---- GET LBA STATUS ---- */

static void lba_status_done(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    struct bdev_extent *extents = io->extents;
    if (io->result < 0) {
        free(extents);
        scsi_task_errno(task, io->result, false);
        return;
    }
    const struct scsi_lun *lun = task->lun;
    uint8_t answer[8 + 16 * STATUS_EXTENTS] = {0};
    uint64_t lba = io->offset / lun->block_size;
    size_t at = 8;
    for (uint32_t i = 0; i < io->nr_extents; i++) {
        uint64_t blocks = extents[i].length / lun->block_size;
        if (!blocks)
            break;
        store_be64(answer + at, lba);
        store_be32(answer + at + 8, blocks > 0xffffffffu ? 0xffffffffu : (uint32_t)blocks);
        answer[at + 12] = (extents[i].flags & BDEV_EXTENT_HOLE) ? 0x01 : 0x00; /* deallocated or mapped */
        lba += blocks;
        at += 16;
    }
    free(extents);
    store_be32(answer, (uint32_t)(at - 4)); /* parameter data length */
    uint32_t allocation = load_be32(task->cdb + 10);
    scsi_task_reply(task, answer, allocation < at ? allocation : at);
}

void scsi_get_lba_status(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    uint64_t lba = load_be64(task->cdb + 2);
    if (lba >= scsi_lun_blocks(lun)) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        return;
    }
    struct bdev_extent *extents = calloc(STATUS_EXTENTS, sizeof(*extents));
    if (!extents) {
        scsi_task_errno(task, -ENOMEM, false);
        return;
    }
    uint64_t offset = lba * lun->block_size;
    task->io = (struct bdev_io){.op = BDEV_OP_BLOCK_STATUS,
                                .offset = offset,
                                .length = scsi_lun_blocks(lun) * lun->block_size - offset,
                                .extents = extents,
                                .max_extents = STATUS_EXTENTS,
                                .ctx = task->ctx,
                                .complete = lba_status_done,
                                .opaque = task};
    bdev_submit(lun->bdev, &task->io);
}

/* ---- SYNCHRONIZE CACHE ---- */

void scsi_synchronize_cache(struct scsi_task *task)
{
    /* The whole cache: a range asks for less, and flushing more is allowed. */
    scsi_task_submit_io(task, BDEV_OP_FLUSH, 0, 0, 0, NULL, io_done);
}

/* ---- UNMAP ---- */

static void unmap_next(struct bdev_io *io);

/* The parameter list: as long as the CDB says, and no longer than what arrived. */
static size_t unmap_list_length(const struct scsi_task *task)
{
    size_t length = load_be16(task->cdb + 7);
    return length < task->data_out_length ? length : task->data_out_length;
}

/* The bytes of block descriptors: as the list's header says, within the list. */
static size_t unmap_descriptors_length(const struct scsi_task *task)
{
    size_t length = load_be16(task->data_out + 2), room = unmap_list_length(task) - 8;
    return length < room ? length : room;
}

/* Discard descriptor task->progress, or finish. */
static void unmap_step(struct scsi_task *task)
{
    const uint8_t *list = task->data_out;
    size_t descriptors = unmap_descriptors_length(task) / 16;
    struct scsi_lun *lun = task->lun;
    while (task->progress < descriptors) {
        const uint8_t *d = list + 8 + 16 * task->progress++;
        uint64_t lba = load_be64(d), blocks = load_be32(d + 8);
        if (!blocks)
            continue;
        /*
         * LBPRZ promises that unmapped blocks read as zeroes: a discard that
         * does not promise it (a qcow2 image keeps what it cannot free) is
         * replaced by zeroing with leave to unmap, which frees what it can.
         */
        bool discard_zeroes = lun->bdev->caps & BDEV_CAP_DISCARD_ZEROES;
        if (lun->unmapped_zero && !discard_zeroes)
            scsi_task_prepare_io(task, BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, lba * lun->block_size,
                                 blocks * lun->block_size, NULL, unmap_next);
        else
            scsi_task_prepare_io(task, BDEV_OP_DISCARD, 0, lba * lun->block_size, blocks * lun->block_size, NULL,
                                 unmap_next);
        scsi_guard_enter(task, lba, blocks, false, scsi_submit_prepared);
        return;
    }
    scsi_task_good(task, 0);
}

static void unmap_next(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    if (io->result < 0) {
        scsi_task_errno(task, io->result, true);
        return;
    }
    scsi_guard_leave(task); /* one descriptor at a time: never two ranges held */
    unmap_step(task);
}

void scsi_unmap(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    if (scsi_task_refuses_write(task))
        return;
    if (task->cdb[1] & 0x01) { /* ANCHOR: anchored blocks are not offered */
        scsi_task_invalid_field(task, 1, 0);
        return;
    }
    task->data_out_wanted = load_be16(task->cdb + 7);
    size_t list_length = unmap_list_length(task);
    if (list_length == 0) {
        scsi_task_good(task, 0); /* no parameter list: nothing to do */
        return;
    }
    if (list_length < 8) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    /* Every range checked before anything is unmapped. */
    size_t length = unmap_descriptors_length(task);
    for (size_t at = 8; at + 16 <= 8 + length; at += 16) {
        const uint8_t *d = task->data_out + at;
        if (!scsi_task_range_check(task, load_be64(d), load_be32(d + 8)))
            return;
    }
    if (!lun->thin) {
        scsi_task_good(task, 0); /* a thick LUN keeps its blocks (UNMAP is advisory) */
        return;
    }
    unmap_step(task);
}

/* ---- WRITE SAME ---- */

struct pattern_write {
    uint8_t *buffer;
    uint64_t end;
};

static void pattern_next(struct bdev_io *io);

static void pattern_step(struct scsi_task *task)
{
    struct pattern_write *pattern = (struct pattern_write *)task->work;
    if (task->progress >= pattern->end) {
        free(pattern->buffer);
        free(pattern);
        scsi_task_good(task, 0);
        return;
    }
    uint64_t length = pattern->end - task->progress < PATTERN_CHUNK ? pattern->end - task->progress : PATTERN_CHUNK;
    uint64_t offset = task->progress;
    task->progress += length;
    scsi_task_submit_io(task, BDEV_OP_WRITE, 0, offset, length, pattern->buffer, pattern_next);
}

static void pattern_next(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    if (io->result < 0) {
        struct pattern_write *pattern = (struct pattern_write *)task->work;
        free(pattern->buffer);
        free(pattern);
        scsi_task_errno(task, io->result, true);
        return;
    }
    pattern_step(task);
}

/* NDOB (16 only): no data out, the blocks are zeroed. */
static bool write_same_no_data(const uint8_t *cdb) { return cdb[0] == 0x93 && (cdb[1] & 0x01); }

/* Once the range is the task's: the pattern (or zeroes for NDOB), a chunk's worth, then the first write. */
static void pattern_begin(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    uint64_t lba, blocks;
    scsi_cdb_lba_length(task->cdb, &lba, &blocks);
    if (blocks == 0)
        blocks = scsi_lun_blocks(lun) - lba; /* to the last LBA, as scsi_write_same checked */
    uint64_t offset = lba * lun->block_size, length = blocks * lun->block_size;
    struct pattern_write *pattern = calloc(1, sizeof(*pattern));
    uint64_t chunk = length < PATTERN_CHUNK ? length : PATTERN_CHUNK;
    if (pattern)
        pattern->buffer = malloc(chunk);
    if (!pattern || !pattern->buffer) {
        free(pattern);
        scsi_task_errno(task, -ENOMEM, true);
        return;
    }
    bool no_data = write_same_no_data(task->cdb);
    for (uint64_t at = 0; at < chunk; at += lun->block_size) {
        if (no_data)
            memset(pattern->buffer + at, 0, lun->block_size);
        else
            memcpy(pattern->buffer + at, task->data_out, lun->block_size);
    }
    pattern->end = offset + length;
    task->progress = offset;
    task->work = pattern;
    pattern_step(task);
}

void scsi_write_same(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    struct scsi_lun *lun = task->lun;
    bool sixteen = cdb[0] == 0x93;
    bool unmap = cdb[1] & 0x08, no_data = write_same_no_data(cdb);
    uint64_t lba, blocks;
    scsi_cdb_lba_length(cdb, &lba, &blocks);
    if (scsi_task_refuses_write(task) || scsi_task_refuses_protection(task))
        return;
    if (cdb[1] & 0x10) { /* ANCHOR: anchored blocks are not offered (ANC_SUP is 0) */
        scsi_task_invalid_field(task, 1, 4);
        return;
    }
    if (!scsi_task_range_check(task, lba, blocks))
        return;
    if (blocks == 0) /* to the last LBA (WSNZ is 0) */
        blocks = scsi_lun_blocks(lun) - lba;
    if (blocks > MAX_UNMAP_BLOCKS) {
        /* More than the block limits page's MAXIMUM WRITE SAME LENGTH. */
        scsi_task_invalid_field(task, sixteen ? 10 : 7, -1);
        return;
    }
    if (blocks == 0) {
        scsi_task_good(task, 0); /* from the end of the medium to the end: nothing */
        return;
    }
    if (!no_data && task->data_out_length != lun->block_size) {
        /* One block of data, exactly: anything else is not what the CDB describes. */
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    uint64_t offset = lba * lun->block_size, length = blocks * lun->block_size;
    /*
     * UNMAP on a thin LUN deallocates the blocks whatever the data block
     * holds (as LIO does): they then read as LBPRZ says, zeroes.
     */
    bool zeroes = no_data || (unmap && lun->thin);
    if (!zeroes) {
        zeroes = true;
        for (uint32_t i = 0; i < lun->block_size && zeroes; i++)
            zeroes = task->data_out[i] == 0;
    }
    if (zeroes && (lun->bdev->caps & BDEV_CAP_WRITE_ZEROES)) {
        scsi_task_prepare_io(task, BDEV_OP_WRITE_ZEROES, unmap && lun->thin ? BDEV_MAY_UNMAP : 0, offset, length, NULL, io_done);
        scsi_guard_enter(task, lba, blocks, false, scsi_submit_prepared);
        return;
    }
    /* Another pattern: written out a chunk at a time. */
    scsi_guard_enter(task, lba, blocks, false, pattern_begin);
}
