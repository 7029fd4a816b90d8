#include "block/write_guard.h"

#include <stddef.h>

#include "block/aio_internal.h"

/* On the writer's own thread, once the range is its. */
static void guard_resume(struct bdev_io *wait)
{
    struct write_guard *guard = wait->opaque;
    guard->start(guard->opaque);
}

/* On whichever thread released the range that held this one up. */
static void guard_granted(struct range_lock_entry *entry)
{
    struct write_guard *guard = (struct write_guard *)((char *)entry - offsetof(struct write_guard, entry));
    aio_context_complete_from_any_thread(&guard->wait, 0);
}

void write_guard_enter(struct write_guard *guard, struct range_lock *lock, struct aio_context *ctx, uint64_t offset,
                       uint64_t length, bool exclusive, void (*start)(void *opaque), void *opaque)
{
    guard->entry = (struct range_lock_entry){.start = offset, .end = offset + length, .exclusive = exclusive,
                                             .granted = guard_granted};
    guard->wait = (struct bdev_io){.ctx = ctx, .complete = guard_resume, .opaque = guard};
    guard->lock = lock;
    guard->start = start;
    guard->opaque = opaque;
    /* Pending before the entry exists: another thread may grant it the moment it does. */
    aio_request_started(&guard->wait);
    if (range_lock_acquire(lock, &guard->entry))
        aio_request_finish(&guard->wait, 0); /* granted now: start at once */
}

void write_guard_leave(struct write_guard *guard)
{
    if (!guard->lock)
        return;
    struct range_lock *lock = guard->lock;
    guard->lock = NULL;
    range_lock_release(lock, &guard->entry);
}
