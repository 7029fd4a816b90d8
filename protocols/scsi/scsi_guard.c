/*
 * The SCSI side of the export's write guard (block/write_guard.h):
 * COMPARE AND WRITE's read, compare and write, and ORWRITE's, must see no
 * other write to their blocks in between (SBC-3), whichever connection,
 * worker thread or protocol sends it.  Every write of the core takes its
 * byte range in the writers' range lock the LUN was given (the export's,
 * which NBD writes take too): shared for ordinary writes, exclusive for
 * the read-modify-write commands.  A task that must wait is parked and
 * resumes on its own thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "block/write_guard.h"
#include "protocols/scsi/scsi_internal.h"

struct scsi_guard {
    struct write_guard guard;
    struct scsi_task *task;
    void (*start)(struct scsi_task *task);
};

static void guard_start(void *opaque)
{
    struct scsi_guard *guard = opaque;
    guard->start(guard->task);
}

void scsi_guard_enter(struct scsi_task *task, uint64_t lba, uint64_t blocks, bool exclusive,
                      void (*start)(struct scsi_task *task))
{
    struct scsi_guard *guard = malloc(sizeof(*guard));
    if (!guard) {
        scsi_task_errno(task, -ENOMEM, true);
        return;
    }
    guard->task = task;
    guard->start = start;
    task->guard = guard;
    uint32_t block_size = task->lun->block_size;
    write_guard_enter(&guard->guard, task->lun->writers, task->ctx, lba * block_size, blocks * block_size, exclusive,
                      guard_start, guard);
}

void scsi_guard_leave(struct scsi_task *task)
{
    struct scsi_guard *guard = task->guard;
    if (!guard)
        return;
    task->guard = NULL;
    write_guard_leave(&guard->guard);
    free(guard);
}
