/*
 * commit: merge the upper layers of a backing chain into a lower one, the
 * engine behind `luna-img commit` and lunad's overlay commit.
 *
 * The chain is given as open bdevs: top is a qcow2 image whose backing
 * chain (qcow2_image_backing, layer by layer) reaches base.  Whatever the
 * layers above base hold (data, zero clusters) is written into base, so
 * base then reads as top did; what none of them holds is left alone.
 * Both calls block: a tool's or a pool thread's work, never an event loop's.
 */
#ifndef LUNA_BLOCK_COMMIT_H
#define LUNA_BLOCK_COMMIT_H

#include <stdint.h>

#include "block/bdev.h"

/* Bytes of top's disk walked so far out of total (top's size). */
typedef void block_commit_progress_fn(void *opaque, uint64_t done, uint64_t total);

/*
 * Copy into base what the layers from top down to base (exclusive) hold, where top is a qcow2
 * image whose backing chain reaches base (base may be any bdev, opened read-write).  Blocking;
 * no guest I/O on top or base meanwhile.  0 or -errno with a message naming the image.
 *
 * A base smaller than top is grown to top's size when it is a qcow2 image
 * (as qemu-img commit does); any other base must be grown by the caller
 * (-EINVAL otherwise).  Data is copied in requests of up to 2 MiB, zero
 * clusters become write_zeroes (which may unmap), and ranges past the end
 * of a shorter intermediate layer, which read as zeroes through top,
 * become zeroes in base too.  base is flushed before the call returns.
 * progress may be NULL.
 */
int block_commit(struct bdev *top, struct bdev *base, block_commit_progress_fn *progress, void *opaque,
                 char **error_message);

/* Discard everything top holds so it reads as its backing file again (what commit does unless -d). */
int block_commit_empty(struct bdev *top, char **error_message);

#endif
