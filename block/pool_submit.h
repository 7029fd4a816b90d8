/*
 * pool_submit: the asynchronous entry of a driver whose work is all
 * blocking.
 *
 * Drivers that only know how to do a request synchronously (table-mapped
 * read-only formats, tools' helpers) still owe bdev_submit its contract: no
 * waiting on the loop thread, completion on io->ctx's thread.  This runs
 * the driver's ops->blocking on the thread pool and completes the request
 * on the submitter's loop.  Drivers with a fast path of their own (qcow2,
 * files) do not need it.
 */
#ifndef LUNA_BLOCK_POOL_SUBMIT_H
#define LUNA_BLOCK_POOL_SUBMIT_H

#include "block/bdev.h"

/* A bdev_ops.submit: bdev->ops->blocking(bdev, io) on a pool thread. */
void pool_submit(struct bdev *bdev, struct bdev_io *io);

#endif
