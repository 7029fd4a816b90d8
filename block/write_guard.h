/*
 * write_guard: one write's hold on a byte range of an export's writers
 * (struct range_lock), so that the commands that read, modify and write
 * back (SCSI COMPARE AND WRITE, ORWRITE) are one step for every other
 * writer of the export: iSCSI initiators and NBD clients alike, on any
 * worker thread.  Ordinary writes share their range (they never wait for
 * one another, only for an exclusive holder); a read-modify-write holds
 * its range exclusively.  Entries are granted in arrival order.
 *
 * A writer that must wait is parked, not blocked: start runs later on its
 * own aio_context's thread, and the wait counts as a request pending there
 * (the loop stays alive for it, aio_context_drain waits for it).
 */
#ifndef LUNA_BLOCK_WRITE_GUARD_H
#define LUNA_BLOCK_WRITE_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/range_lock.h"

struct aio_context;

struct write_guard {
    struct range_lock_entry entry;
    struct bdev_io wait;     /* the parked writer, as a request on its context */
    struct range_lock *lock; /* NULL: not held */
    void (*start)(void *opaque);
    void *opaque;
};

/*
 * Hold [offset, offset + length) of lock; start(opaque) runs once it is
 * granted: inside this call when nothing conflicts, else later on ctx's
 * thread.  The guard must stay in place until it is left.
 */
void write_guard_enter(struct write_guard *guard, struct range_lock *lock, struct aio_context *ctx, uint64_t offset,
                       uint64_t length, bool exclusive, void (*start)(void *opaque), void *opaque);

/* Let go of the range (nothing when not held): the writers it held up may start. */
void write_guard_leave(struct write_guard *guard);

#endif
