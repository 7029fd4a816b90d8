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

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"
#include "common/error_message.h"
#include "block/range_lock.h"
#include "block/threadpool.h"

struct file_bdev {
    struct bdev *bdev;
    int fd;
    /*
     * O_DIRECT on an image whose size is not a multiple of offset_align: a
     * second descriptor on the same file, without O_DIRECT (O_DSYNC kept),
     * for writes that reach into the partial last block: a whole-block
     * read-modify-write there would extend the file.  -1 otherwise.
     */
    int tail_fd;
    uint64_t tail_start;     /* writes ending after this use tail_fd */
    enum bdev_cache_mode cache;
    bool use_uring;          /* aio engine allows io_uring (default or io_uring) */
    bool direct;             /* O_DIRECT */
    bool discard;            /* options.discard */
    bool readonly;           /* options.readonly */
    /*
     * False while the file is known to be fully allocated (no holes at
     * open, no discard or zeroing since): block_status then answers "all
     * data" at once instead of two lseeks on a pool thread, which large
     * NBD reads would otherwise pay on every request.  Set, never cleared.
     */
    _Atomic bool may_have_holes;
    dev_t dev;               /* the file's identity, for block/closing.h */
    ino_t ino;
    uint32_t mem_align;      /* O_DIRECT buffer alignment; 1 otherwise */
    uint32_t offset_align;   /* O_DIRECT offset/length alignment; 1 otherwise */
    struct range_lock write_lock; /* O_DIRECT only */
    struct threadpool_job release_job;

    /* Driver parts, blocking (pool thread).  Return 0 or -errno. */
    int (*discard_range)(struct file_bdev *file, uint64_t offset, uint64_t length);
    int (*zero_range)(struct file_bdev *file, uint64_t offset, uint64_t length, uint32_t flags);
};

/*
 * Can the file be served at size (it grew)?  Not when O_DIRECT needs a
 * tail descriptor for a partial last block: the one set up at open covers
 * the old end only.
 */
static inline bool file_follows_size(const struct file_bdev *file, uint64_t size)
{
    return file->tail_fd < 0 && (!file->direct || size % file->offset_align == 0);
}

/* open(2) flags for a cache mode and read-only flag. */
int file_open_flags(enum bdev_cache_mode cache, bool readonly);

/*
 * Fill the shared parts of file from options after fd is open:
 * cache, engine, direct, read-only, alignments (from statx STATX_DIOALIGN, or
 * block_size_hint when > 0, else 4096), the write lock.  Returns 0 or -errno
 * with a message; on failure nothing needs tearing down but fd.
 */
int file_setup(struct file_bdev *file, const struct bdev_options *options, uint32_t block_size_hint,
               char **error_message);

/*
 * After file_setup, once the size is known: open tail_fd when the image
 * size is not aligned for O_DIRECT (a no-op otherwise).  0 or -errno and a
 * message; on failure the caller tears down as for a file_setup failure.
 */
int file_setup_tail(struct file_bdev *file, const char *path, uint64_t size, char **error_message);

/*
 * Close the descriptors, release what file_setup acquired and free file
 * (malloc'd).  The closing happens on a pool thread, since close(2) of a
 * file or device opened for writing may flush its cache and the last
 * reference to a bdev can drop on an event-loop thread; if no pool thread
 * can be started it happens here.  No request may be in flight.
 */
void file_release(struct file_bdev *file);

/* BDEV_CAP_FLUSH / BDEV_CAP_FUA for the cache mode. */
uint32_t file_cache_caps(enum bdev_cache_mode cache);

/* The bdev_ops.submit of both drivers. */
void file_submit(struct bdev *bdev, struct bdev_io *io);

/* The bdev_ops.blocking of both drivers (file_sync.c). */
int file_blocking(struct bdev *bdev, struct bdev_io *io);

/* FUA needs RWF_DSYNC: writethrough/directsync open with O_DSYNC; unsafe ignores durability. */
static inline bool file_fua_by_flag(const struct file_bdev *file, const struct bdev_io *io)
{
    return (io->flags & BDEV_FUA) && (file->cache == BDEV_CACHE_WRITEBACK || file->cache == BDEV_CACHE_NONE);
}

/* writethrough and directsync: every completed write must already be stable. */
static inline bool file_writes_are_stable(const struct file_bdev *file)
{
    return file->cache == BDEV_CACHE_WRITETHROUGH || file->cache == BDEV_CACHE_DIRECTSYNC;
}

/*
 * The drivers' open functions, called by bdev_open with bdev->filename set;
 * they fill ops, size, caps, limits and driver.  0 or -errno and a message.
 */
int raw_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);
int host_device_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

/*
 * The file under bdev when it is a raw file or host device, else NULL (an
 * LV read in user space, a foreign image): for layers above that lock the
 * file or look at its inode.
 */
struct file_bdev *file_bdev_get(const struct bdev *bdev);


#endif
