/*
 * closing: the files this process is still closing.
 *
 * bdev_close finishes on the thread pool (a qcow2 image writes its caches
 * back, close(2) may flush), so a file can stay open, holding its image
 * lock, for a moment after its bdev was let go.  Reopening it meanwhile
 * (a client reconnecting to its persistent overlay, a reload) would find
 * the lock taken by this very process; such an opener waits here for the
 * close instead.  Files are named by device and inode, since a path may
 * differ.  Thread-safe.
 */
#ifndef LUNA_BLOCK_CLOSING_H
#define LUNA_BLOCK_CLOSING_H

#include <stdbool.h>
#include <sys/types.h>

/* A close of the file has begun (counted: closes may nest, as a format's over its file's). */
void closing_begin(dev_t dev, ino_t ino);
/* That close is over: the descriptor is closed. */
void closing_end(dev_t dev, ino_t ino);
/* Wait until no close of the file is pending; true when one was (retry the open), false at once otherwise. */
bool closing_wait(dev_t dev, ino_t ino);

#endif
