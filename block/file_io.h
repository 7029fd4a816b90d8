/*
 * file_io: what the raw and host_device drivers share.
 *
 * Both keep one file descriptor and move data the same way: reads, writes
 * and flushes through the submitting thread's io_uring ring, or through the
 * thread pool (aio=threads, no usable ring, and what io_uring cannot do);
 * O_DIRECT requests that are not aligned are bounced through an aligned
 * buffer, with read-modify-write serialised by a range lock.  A driver adds
 * only what differs: how it opens, its sizes and limits, and how it
 * discards and zeroes (blocking functions, run on a pool thread).
 */
#ifndef LUNA_BLOCK_FILE_IO_H
#define LUNA_BLOCK_FILE_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/range_lock.h"

struct file_bdev {
    struct bdev *bdev;
    int fd;
    enum bdev_cache_mode cache;
    bool use_uring;          /* aio engine allows io_uring (default or io_uring) */
    bool direct;             /* O_DIRECT */
    bool discard;            /* options.discard */
    uint32_t mem_align;      /* O_DIRECT buffer alignment; 1 otherwise */
    uint32_t offset_align;   /* O_DIRECT offset/length alignment; 1 otherwise */
    struct range_lock write_lock; /* O_DIRECT only */

    /* Driver parts, blocking (pool thread).  Return 0 or -errno. */
    int (*discard_range)(struct file_bdev *file, uint64_t offset, uint64_t length);
    int (*zero_range)(struct file_bdev *file, uint64_t offset, uint64_t length, uint32_t flags);
};

/* open(2) flags for a cache mode and read-only flag. */
int file_open_flags(enum bdev_cache_mode cache, bool readonly);

/*
 * Fill the shared parts of file from options after fd is open:
 * cache, engine, direct, alignments (from statx STATX_DIOALIGN, or
 * block_size_hint when > 0, else 4096), the write lock.  Returns 0 or -errno
 * with a message; on failure nothing needs tearing down but fd.
 */
int file_setup(struct file_bdev *file, const struct bdev_options *options, uint32_t block_size_hint,
               char **error_message);

/* Release what file_setup acquired and close fd (not the struct). */
void file_teardown(struct file_bdev *file);

/* BDEV_CAP_FLUSH / BDEV_CAP_FUA for the cache mode. */
uint32_t file_cache_caps(enum bdev_cache_mode cache);

/* The bdev_ops.submit of both drivers. */
void file_submit(struct bdev *bdev, struct bdev_io *io);

/*
 * The drivers' open functions, called by bdev_open with bdev->filename set;
 * they fill ops, size, caps, limits and driver.  0 or -errno and a message.
 */
int raw_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);
int host_device_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

/* For both drivers' open: printf into a malloc'd *error_message (NULL ok). */
void file_set_error(char **error_message, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif
