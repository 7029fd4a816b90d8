/*
 * rebase: the data half of a safe rebase (`luna-img rebase` without -u).
 *
 * Before a qcow2 image is pointed at another backing file, every range the
 * image does not hold itself and where the old backing chain and the new
 * backing file read differently gets the old content written into the
 * image, so that it reads the same afterwards.  The header is then
 * rewritten by the caller (qcow2_image_set_backing).  Blocking: a tool's
 * or a pool thread's work.
 */
#ifndef LUNA_BLOCK_REBASE_H
#define LUNA_BLOCK_REBASE_H

#include <stdint.h>

#include "block/bdev.h"

/* Bytes of top's disk compared so far out of total (top's size). */
typedef void block_rebase_progress_fn(void *opaque, uint64_t done, uint64_t total);

/*
 * top: a qcow2 image opened read-write over its old backing chain.
 * new_backing: what it will read through afterwards; NULL: nothing (zeroes).
 * Ranges past the end of a backing file read as zeroes.  Differences are
 * found per 512-byte sector, as qemu-img finds them; a difference where
 * the old chain reads zeroes because it ends (or there is none) is
 * written as write_zeroes, any other as data.  top is flushed at the end.
 * No guest I/O on top meanwhile.  0 or -errno with a message naming the image.
 */
int block_rebase(struct bdev *top, struct bdev *new_backing, block_rebase_progress_fn *progress, void *opaque,
                 char **error_message);

#endif
