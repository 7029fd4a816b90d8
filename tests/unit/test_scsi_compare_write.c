/*
 * COMPARE AND WRITE over the raw-file LUN: the compare, the write, the
 * miscompare (INFORMATION at the first differing byte, nothing written),
 * its limits, and its atomicity: writes, WRITE SAME and UNMAP to
 * overlapping blocks wait for it, it waits for writes already running, and
 * a writer on another thread (its own loop and aio_context) is resumed on
 * that thread.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <pthread.h>
#include <string.h>

#include "block/write_guard.h"
#include "protocols/scsi/scsi_internal.h"
#include "test_scsi_harness.h"

TestSuite(scsi_compare_write, .init = setup, .fini = teardown);

static void caw_cdb(uint8_t *cdb, uint64_t lba, uint8_t blocks, uint8_t byte1)
{
    memset(cdb, 0, 16);
    cdb[0] = 0x89;
    cdb[1] = byte1;
    store_be64(cdb + 2, lba);
    cdb[13] = blocks;
}

static void write10_cdb(uint8_t *cdb, uint32_t lba, uint16_t blocks)
{
    memset(cdb, 0, 10);
    cdb[0] = 0x2a;
    store_be32(cdb + 2, lba);
    store_be16(cdb + 7, blocks);
}

static void medium(uint64_t lba, uint8_t *out, size_t length) { read_file_directly(path, lba * BLOCK, out, length); }

static bool all_bytes(const uint8_t *buffer, size_t length, uint8_t value)
{
    for (size_t i = 0; i < length; i++)
        if (buffer[i] != value)
            return false;
    return true;
}

Test(scsi_compare_write, equal_blocks_are_written)
{
    attend("init");
    uint8_t out[4 * BLOCK], direct[2 * BLOCK];
    medium(50, out, 2 * BLOCK); /* verify data: what is there */
    memset(out + 2 * BLOCK, 0xab, 2 * BLOCK);
    uint8_t cdb[16];
    caw_cdb(cdb, 50, 2, 0x08 /* FUA */);
    struct scsi_task task = run(cdb, 16, out, sizeof(out), NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(task.data_out_wanted, 4 * BLOCK);
    medium(50, direct, sizeof(direct));
    cr_assert(all_bytes(direct, sizeof(direct), 0xab), "the write data is on the medium");
}

Test(scsi_compare_write, miscompare_writes_nothing)
{
    attend("init");
    uint8_t out[6 * BLOCK], before[3 * BLOCK], after[3 * BLOCK];
    medium(60, before, sizeof(before));
    memcpy(out, before, sizeof(before));
    out[777] ^= 0x20;
    out[1200] ^= 0x20;
    memset(out + 3 * BLOCK, 0xcd, 3 * BLOCK);
    uint8_t cdb[16];
    caw_cdb(cdb, 60, 3, 0);
    struct scsi_task task = run(cdb, 16, out, sizeof(out), NULL);
    expect_sense(&task, 0x0e, 0x1d, 0x00);
    cr_assert_eq(task.sense[0], 0xf0, "VALID, current, fixed format");
    cr_assert_eq(load_be32(task.sense + 3), 777, "INFORMATION: the first differing byte");
    medium(60, after, sizeof(after));
    cr_assert_eq(memcmp(before, after, sizeof(after)), 0, "nothing written");
}

Test(scsi_compare_write, limits)
{
    attend("init");
    static uint8_t out[2 * 256 * BLOCK];
    uint8_t cdb[16];

    uint8_t limits[6] = {0x12, 1, 0xb0, 0, 255, 0};
    run(limits, 6, NULL, 0, NULL);
    cr_assert_eq(data_in[5], MAX_COMPARE_AND_WRITE_BLOCKS, "VPD B0: maximum COMPARE AND WRITE length");

    caw_cdb(cdb, 0, MAX_COMPARE_AND_WRITE_BLOCKS + 1, 0);
    struct scsi_task task = run(cdb, 16, out, 2 * (MAX_COMPARE_AND_WRITE_BLOCKS + 1) * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
    cr_assert_eq(load_be16(task.sense + 16), 13, "field pointer: NUMBER OF LOGICAL BLOCKS");

    medium(0, out, MAX_COMPARE_AND_WRITE_BLOCKS * BLOCK);
    memcpy(out + MAX_COMPARE_AND_WRITE_BLOCKS * BLOCK, out, MAX_COMPARE_AND_WRITE_BLOCKS * BLOCK);
    caw_cdb(cdb, 0, MAX_COMPARE_AND_WRITE_BLOCKS, 0);
    task = run(cdb, 16, out, 2 * MAX_COMPARE_AND_WRITE_BLOCKS * BLOCK, NULL);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "the maximum itself");

    caw_cdb(cdb, 0, 1, 0);
    task = run(cdb, 16, out, 4 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00); /* too much data for one block */
    caw_cdb(cdb, 0, 3, 0);
    task = run(cdb, 16, out, 4 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00); /* too little for three */
    caw_cdb(cdb, 0, 0, 0);
    task = run(cdb, 16, out, 2 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00); /* data for no blocks */
    cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "0 blocks, no data: nothing to do");

    caw_cdb(cdb, DISK / BLOCK - 1, 2, 0);
    task = run(cdb, 16, out, 4 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x21, 0x00);
    caw_cdb(cdb, 0, 1, 0x20 /* WRPROTECT */);
    task = run(cdb, 16, out, 2 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x24, 0x00);
}

/* ---- atomicity ---- */

struct slot {
    int done;
    int order; /* when it completed, among the test's tasks */
};

static int sequence;

static void ordered(struct scsi_task *task)
{
    struct slot *slot = task->opaque;
    slot->done++;
    slot->order = __atomic_add_fetch(&sequence, 1, __ATOMIC_SEQ_CST);
}

static void start(struct scsi_task *task, struct slot *slot)
{
    task->complete = ordered;
    task->opaque = slot;
    scsi_task_execute(task);
}

Test(scsi_compare_write, overlapping_writes_wait_for_it)
{
    attend("init");
    uint8_t caw[2 * 8 * BLOCK], data[8 * BLOCK], same[BLOCK], far[BLOCK], direct[16 * BLOCK];
    medium(20, caw, 8 * BLOCK);
    memset(caw + 8 * BLOCK, 0x11, 8 * BLOCK);
    memset(data, 0x22, sizeof(data));
    memset(same, 0x33, sizeof(same));
    memset(far, 0x44, sizeof(far));

    /* LBA 20-27 compared and written; each other command overlaps it, and only it. */
    uint8_t caw_command[16], write_command[10], far_command[10], same_command[10] = {0x41}, unmap_command[10] = {0x42};
    caw_cdb(caw_command, 20, 8, 0);
    write10_cdb(write_command, 24, 8);  /* LBA 24-31 */
    write10_cdb(far_command, 1000, 1);  /* overlaps nothing: does not wait */
    store_be32(same_command + 2, 18);   /* WRITE SAME over LBA 18-20 */
    store_be16(same_command + 7, 3);
    uint8_t list[24] = {0, 22, 0, 16};
    store_be64(list + 8, 21);           /* UNMAP LBA 21 */
    store_be32(list + 16, 1);
    store_be16(unmap_command + 7, sizeof(list));

    struct slot caw_slot = {0}, write_slot = {0}, far_slot = {0}, same_slot = {0}, unmap_slot = {0};
    struct scsi_task caw_task = task_for(caw_command, 16, caw, sizeof(caw), NULL);
    struct scsi_task write_task = task_for(write_command, 10, data, sizeof(data), NULL);
    struct scsi_task far_task = task_for(far_command, 10, far, sizeof(far), NULL);
    struct scsi_task same_task = task_for(same_command, 10, same, sizeof(same), NULL);
    struct scsi_task unmap_task = task_for(unmap_command, 10, list, sizeof(list), NULL);
    start(&caw_task, &caw_slot);
    start(&write_task, &write_slot);
    start(&same_task, &same_slot);
    start(&unmap_task, &unmap_slot);
    start(&far_task, &far_slot);
    aio_context_drain(loop.ctx); /* waiting tasks count as pending: this waits for them too */

    cr_assert_eq(caw_slot.done, 1);
    cr_assert_eq(caw_task.status, SCSI_STATUS_GOOD, "it compared what was there before any of them");
    cr_assert_eq(write_slot.done + same_slot.done + unmap_slot.done + far_slot.done, 4);
    cr_assert_eq(write_task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(same_task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(unmap_task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(far_task.status, SCSI_STATUS_GOOD);
    cr_assert_gt(write_slot.order, caw_slot.order, "the WRITE ran after it");
    cr_assert_gt(same_slot.order, caw_slot.order, "the WRITE SAME ran after it");
    cr_assert_gt(unmap_slot.order, caw_slot.order, "the UNMAP ran after it");

    medium(18, direct, sizeof(direct));
    cr_assert(all_bytes(direct, 3 * BLOCK, 0x33), "LBA 18-20: the WRITE SAME, after it");
    cr_assert(all_bytes(direct + 3 * BLOCK, BLOCK, 0x00), "LBA 21: the UNMAP, after it");
    cr_assert(all_bytes(direct + 4 * BLOCK, 2 * BLOCK, 0x11), "LBA 22-23: the COMPARE AND WRITE");
    cr_assert(all_bytes(direct + 6 * BLOCK, 8 * BLOCK, 0x22), "LBA 24-31: the WRITE, after it");
    medium(1000, direct, BLOCK);
    cr_assert(all_bytes(direct, BLOCK, 0x44));
}

Test(scsi_compare_write, waits_for_a_write_already_running)
{
    attend("init");
    /* A long write, so that a read not made to wait would overtake it. */
    static uint8_t data[4096 * BLOCK];
    uint8_t caw[2 * BLOCK], direct[BLOCK];
    memset(data, 0x55, sizeof(data));
    memcpy(caw, data, BLOCK); /* it expects what the WRITE leaves */
    memset(caw + BLOCK, 0x66, BLOCK);
    uint8_t write_command[10], caw_command[16];
    write10_cdb(write_command, 4096, 4096);
    caw_cdb(caw_command, 8191, 1, 0);
    struct slot write_slot = {0}, caw_slot = {0};
    struct scsi_task write_task = task_for(write_command, 10, data, sizeof(data), NULL);
    struct scsi_task caw_task = task_for(caw_command, 16, caw, sizeof(caw), NULL);
    start(&write_task, &write_slot);
    start(&caw_task, &caw_slot);
    aio_context_drain(loop.ctx);
    cr_assert_eq(write_slot.done + caw_slot.done, 2);
    cr_assert_eq(caw_task.status, SCSI_STATUS_GOOD, "it read after the WRITE had landed");
    cr_assert_gt(caw_slot.order, write_slot.order);
    medium(8191, direct, sizeof(direct));
    cr_assert(all_bytes(direct, BLOCK, 0x66));
}

/* A writer on a thread of its own: its own loop and aio_context, sharing the LUN. */
struct other_thread {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool started;
    pthread_t self;
    uint8_t cdb[10];
    uint8_t data[2 * BLOCK];
    struct slot slot;
    struct scsi_task task;
    bool completed_on_own_thread;
};

static void other_completed(struct scsi_task *task)
{
    struct other_thread *other = (struct other_thread *)((char *)task - offsetof(struct other_thread, task));
    other->completed_on_own_thread = pthread_equal(pthread_self(), other->self);
    ordered(task);
}

static void *other_run(void *arg)
{
    struct other_thread *other = arg;
    other->self = pthread_self();
    struct test_loop own;
    test_loop_init(&own);
    other->task = task_for(other->cdb, 10, other->data, sizeof(other->data), "other");
    other->task.ctx = own.ctx;
    other->task.complete = other_completed;
    other->task.opaque = &other->slot;
    scsi_task_execute(&other->task); /* parked behind the COMPARE AND WRITE */
    pthread_mutex_lock(&other->mutex);
    other->started = true;
    pthread_cond_signal(&other->cond);
    pthread_mutex_unlock(&other->mutex);
    aio_context_drain(own.ctx); /* until another thread's release resumes it here */
    test_loop_fini(&own);
    return NULL;
}

Test(scsi_compare_write, a_writer_on_another_thread_waits_and_resumes_on_its_own)
{
    attend("init");
    attend("other");
    uint8_t caw[2 * 2 * BLOCK], direct[3 * BLOCK];
    medium(70, caw, 2 * BLOCK);
    memset(caw + 2 * BLOCK, 0x77, 2 * BLOCK);
    uint8_t caw_command[16];
    caw_cdb(caw_command, 70, 2, 0);
    struct slot caw_slot = {0};
    struct scsi_task caw_task = task_for(caw_command, 16, caw, sizeof(caw), NULL);
    start(&caw_task, &caw_slot); /* holds LBA 70-71 until answered */

    static struct other_thread other = {.mutex = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    write10_cdb(other.cdb, 71, 2);
    memset(other.data, 0x88, sizeof(other.data));
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, other_run, &other), 0);
    pthread_mutex_lock(&other.mutex);
    while (!other.started)
        pthread_cond_wait(&other.cond, &other.mutex);
    pthread_mutex_unlock(&other.mutex);

    aio_context_drain(loop.ctx);
    pthread_join(thread, NULL);
    cr_assert_eq(caw_task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(other.slot.done, 1);
    cr_assert_eq(other.task.status, SCSI_STATUS_GOOD);
    cr_assert(other.completed_on_own_thread, "resumed and answered on the thread that owns it");
    medium(70, direct, sizeof(direct));
    cr_assert(all_bytes(direct, BLOCK, 0x77), "LBA 70: COMPARE AND WRITE");
    /* Its range is released before its completion runs, so only the medium tells the order. */
    cr_assert(all_bytes(direct + BLOCK, 2 * BLOCK, 0x88), "LBA 71-72: the other thread's WRITE, after it");
}

TestSuite(scsi_compare_write_readonly, .init = setup_readonly, .fini = teardown);

Test(scsi_compare_write_readonly, write_protected)
{
    attend("init");
    uint8_t out[2 * BLOCK] = {0};
    uint8_t cdb[16];
    caw_cdb(cdb, 0, 1, 0);
    struct scsi_task task = run(cdb, 16, out, sizeof(out), NULL);
    expect_sense(&task, 0x07, 0x27, 0x00);
}

/* ORWRITE(16): the blocks become what they held ORed with the data out, in one step. */
static void orwrite_cdb(uint8_t *cdb, uint64_t lba, uint32_t blocks)
{
    memset(cdb, 0, 16);
    cdb[0] = 0x8b;
    store_be64(cdb + 2, lba);
    store_be32(cdb + 10, blocks);
}

Test(scsi_compare_write, orwrite_ors_the_blocks)
{
    attend("init");
    uint8_t cdb[16], data[4 * BLOCK], back[4 * BLOCK];
    memset(data, 0x0f, sizeof(data));
    uint8_t write10[10];
    write10_cdb(write10, 40, 4);
    cr_assert_eq(run(write10, 10, data, sizeof(data), NULL).status, SCSI_STATUS_GOOD);
    memset(data, 0x30, sizeof(data));
    data[5] = 0xc0;
    orwrite_cdb(cdb, 40, 4);
    cr_assert_eq(run(cdb, 16, data, sizeof(data), NULL).status, SCSI_STATUS_GOOD);
    medium(40, back, sizeof(back));
    cr_assert_eq(back[5], 0xcf, "0x0f | 0xc0");
    back[5] = 0x3f;
    cr_assert(all_bytes(back, sizeof(back), 0x3f), "0x0f | 0x30 everywhere else");

    orwrite_cdb(cdb, DISK / BLOCK - 2, 4);
    struct scsi_task task = run(cdb, 16, data, sizeof(data), NULL);
    expect_sense(&task, 0x05, 0x21, 0x00); /* past the end */
    orwrite_cdb(cdb, 40, 4);
    task = run(cdb, 16, data, 2 * BLOCK, NULL);
    expect_sense(&task, 0x05, 0x1a, 0x00); /* less data than blocks to OR */
    orwrite_cdb(cdb, 40, 0);
    cr_assert_eq(run(cdb, 16, NULL, 0, NULL).status, SCSI_STATUS_GOOD, "zero blocks: nothing to do");
    medium(40, back, BLOCK);
    cr_assert_eq(back[5], 0xcf, "unchanged");
}

/*
 * Another protocol's writer of the same disk (an NBD WRITE holding its range
 * in the export's writers, as nbd_transmission.c does): a COMPARE AND WRITE
 * over that range waits until it is done, and it then compares what that
 * write left.
 */
static void foreign_started(void *opaque) { ++*(int *)opaque; }

Test(scsi_compare_write, waits_for_another_protocols_writer)
{
    struct range_lock export_writers;
    cr_assert_eq(range_lock_init(&export_writers), 0);
    scsi_lun_destroy(lun);
    struct scsi_lun_options options = {.bdev = bdev, .serial = "SN42", .writers = &export_writers};
    cr_assert_eq(scsi_lun_create(&options, &lun), 0);
    attend("init");

    int foreign_starts = 0;
    struct write_guard foreign = {0};
    write_guard_enter(&foreign, &export_writers, loop.ctx, 60 * BLOCK, 4 * BLOCK, false, foreign_started,
                      &foreign_starts);
    cr_assert_eq(foreign_starts, 1, "a shared writer starts at once");

    uint8_t caw[2 * 2 * BLOCK], cdb[16];
    memset(caw, 0x5e, 2 * BLOCK); /* what the foreign write will leave at LBA 62-63 */
    memset(caw + 2 * BLOCK, 0x6f, 2 * BLOCK);
    caw_cdb(cdb, 62, 2, 0);
    struct slot slot = {0};
    struct scsi_task task = task_for(cdb, 16, caw, sizeof(caw), NULL);
    start(&task, &slot);
    for (int i = 0; i < 20; i++)
        ev_run(loop.loop, EVRUN_NOWAIT);
    cr_assert_eq(slot.done, 0, "the COMPARE AND WRITE waits for the other writer");

    uint8_t written[4 * BLOCK];
    memset(written, 0x5e, sizeof(written));
    write_file_directly(path, 60 * BLOCK, written, sizeof(written)); /* the foreign write's data */
    write_guard_leave(&foreign);
    aio_context_drain(loop.ctx);
    cr_assert_eq(slot.done, 1);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "it compared the other writer's data");
    uint8_t direct[2 * BLOCK];
    medium(62, direct, sizeof(direct));
    cr_assert(all_bytes(direct, sizeof(direct), 0x6f));

    scsi_lun_destroy(lun);
    lun = NULL;
    range_lock_destroy(&export_writers);
    struct scsi_lun_options plain = {.bdev = bdev, .serial = "SN42"};
    cr_assert_eq(scsi_lun_create(&plain, &lun), 0); /* for teardown */
}
