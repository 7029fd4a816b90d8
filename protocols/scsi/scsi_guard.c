/*
 * The write guard: COMPARE AND WRITE's read, compare and write must see no
 * other write to its blocks in between (SBC-3), whichever connection or
 * worker thread sends it.  Every write of the core takes its LBA range in
 * the LUN's range lock: shared for ordinary writes (they never wait for
 * one another), exclusive for COMPARE AND WRITE, granted in arrival order.
 *
 * A task that must wait is parked, not blocked: the task that releases the
 * range resumes it through its own aio_context, so it continues on the
 * thread that owns it.  While parked it counts as a request pending on
 * that context, so the loop and the context stay alive for it (and
 * aio_context_drain waits for it).
 */
#include <errno.h>
#include <stdlib.h>

#include "block/aio_internal.h"
#include "protocols/scsi/scsi_internal.h"

struct scsi_guard {
    struct range_lock_entry entry;
    /* The wait, as a request on the task's context: completed from any thread, finished on the owner's. */
    struct bdev_io wait;
    struct scsi_task *task;
    void (*start)(struct scsi_task *task);
};

/* On the task's own thread, once the range is the task's. */
static void guard_resume(struct bdev_io *wait)
{
    struct scsi_guard *guard = wait->opaque;
    guard->start(guard->task);
}

/* On whichever thread released the range that held this one up. */
static void guard_granted(struct range_lock_entry *entry)
{
    struct scsi_guard *guard = (struct scsi_guard *)((char *)entry - offsetof(struct scsi_guard, entry));
    aio_context_complete_from_any_thread(&guard->wait, 0);
}

void scsi_guard_enter(struct scsi_task *task, uint64_t lba, uint64_t blocks, bool exclusive,
                      void (*start)(struct scsi_task *task))
{
    struct scsi_guard *guard = malloc(sizeof(*guard));
    if (!guard) {
        scsi_task_errno(task, -ENOMEM, true);
        return;
    }
    guard->entry = (struct range_lock_entry){.start = lba, .end = lba + blocks, .exclusive = exclusive,
                                             .granted = guard_granted};
    guard->wait = (struct bdev_io){.ctx = task->ctx, .complete = guard_resume, .opaque = guard};
    guard->task = task;
    guard->start = start;
    task->guard = guard;
    /* Pending before the entry exists: another thread may grant it the moment it does. */
    aio_request_started(&guard->wait);
    if (range_lock_acquire(&task->lun->writers, &guard->entry))
        aio_request_finish(&guard->wait, 0); /* granted now: start at once */
}

void scsi_guard_leave(struct scsi_task *task)
{
    struct scsi_guard *guard = task->guard;
    if (!guard)
        return;
    task->guard = NULL;
    range_lock_release(&task->lun->writers, &guard->entry);
    free(guard);
}
