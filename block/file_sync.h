/*
 * file_sync: blocking positioned I/O on a file_bdev, for pool threads.
 *
 * Transfers run to completion (short transfers resumed, reads past end of
 * file zero-filled, since the bdev may be larger than a file that shrank).
 * With O_DIRECT, requests that are not aligned go through an aligned bounce
 * buffer, and unaligned writes become read-modify-write of whole blocks;
 * the caller holds the bdev's write lock exclusively for those.
 */
#ifndef LUNA_BLOCK_FILE_SYNC_H
#define LUNA_BLOCK_FILE_SYNC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/file_io.h"

/* O_DIRECT alignment checks (always true without O_DIRECT: alignments are 1). */
bool file_range_aligned(const struct file_bdev *file, uint64_t offset, uint64_t length);
bool file_buffers_aligned(const struct file_bdev *file, const struct iovec *iov, int iovcnt);

/*
 * Read or write all of length at offset.  rw_flags: RWF_DSYNC for FUA.
 * Writes reaching past file->tail_start go to file->tail_fd as they are.
 * 0 or -errno.
 */
int file_sync_transfer(struct file_bdev *file, bool write, uint64_t offset, const struct iovec *iov,
                       int iovcnt, uint64_t length, int rw_flags);

/* Write zeroes over the range, the slow way.  0 or -errno. */
int file_write_zeroes_slow(struct file_bdev *file, uint64_t offset, uint64_t length);

/*
 * The blocking form of io (any op), without the write lock: what the pool
 * jobs of file_io.c run.  Fills io->extents for block_status.  0 or -errno.
 */
int file_blocking_run(struct file_bdev *file, struct bdev_io *io);

#endif
