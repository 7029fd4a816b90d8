/* The SCSI tests' LUN and the helpers that run CDBs against it (test_scsi_harness.h). */
#include "test_scsi_harness.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/threadpool.h"

struct test_loop loop;
char *path;
struct bdev *bdev;
struct scsi_lun *lun;
uint8_t data_in[1 << 20];

static const uint64_t luns[] = {0, 1, 300};

static void setup_lun(bool readonly)
{
    test_loop_init(&loop);
    path = temp_file_with_pattern(DISK);
    bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_THREADS, readonly);
    struct scsi_lun_options options = {.bdev = bdev, .serial = "SN42", .naa = 0x123456789abcdef, .write_cache = true};
    cr_assert_eq(scsi_lun_create(&options, &lun), 0);
}

void setup(void) { setup_lun(false); }
void setup_readonly(void) { setup_lun(true); }

void teardown(void)
{
    scsi_lun_destroy(lun);
    bdev_close(bdev);
    test_loop_fini(&loop);
    threadpool_shutdown();
    unlink(path);
    free(path);
}

static void counted(struct scsi_task *task) { ++*(int *)task->opaque; }

struct scsi_task task_for(const uint8_t *cdb, size_t cdb_length, const void *out, size_t out_length,
                          const char *nexus)
{
    struct scsi_task task = {.lun = lun, .nexus = nexus ? nexus : "init", .data_out = out,
                             .data_out_length = out_length, .data_in = data_in,
                             .data_in_capacity = sizeof(data_in), .luns = luns, .lun_count = 3,
                             .ctx = loop.ctx, .complete = counted};
    memcpy(task.cdb, cdb, cdb_length);
    return task;
}

void task_count_completions(struct scsi_task *task, int *completions)
{
    task->complete = counted;
    task->opaque = completions;
}

struct scsi_task run(const uint8_t *cdb, size_t cdb_length, const void *out, size_t out_length, const char *nexus)
{
    int completions = 0;
    struct scsi_task task = task_for(cdb, cdb_length, out, out_length, nexus);
    task_count_completions(&task, &completions);
    scsi_task_execute(&task);
    aio_context_drain(loop.ctx);
    cr_assert_eq(completions, 1, "the task completed %d times", completions);
    return task;
}

void attend(const char *nexus)
{
    uint8_t tur[6] = {0x00};
    struct scsi_task task = run(tur, 6, NULL, 0, nexus);
    cr_assert_eq(task.status, SCSI_STATUS_CHECK_CONDITION);
    cr_assert_eq(task.sense[2], 0x06);
    cr_assert_eq(task.sense[12], 0x29);
}

void expect_sense(const struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq)
{
    cr_assert_eq(task->status, SCSI_STATUS_CHECK_CONDITION, "status %#x", task->status);
    cr_assert_eq(task->sense_length, 18);
    cr_assert_eq(task->sense[0] & 0x7f, 0x70);
    cr_assert_eq(task->sense[2] & 0x0f, key, "key %#x, expected %#x", task->sense[2], key);
    cr_assert_eq(task->sense[12], asc, "ASC %#x, expected %#x", task->sense[12], asc);
    cr_assert_eq(task->sense[13], ascq);
}
