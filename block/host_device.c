/*
 * host_device: a block device, partition or LVM logical volume.
 *
 * Sizes come from the device (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET,
 * BLKIOOPT).  Discard is BLKDISCARD (advisory: the device may not zero);
 * write_zeroes tries fallocate (PUNCH_HOLE unmaps and fails rather than
 * write; ZERO_RANGE lets the kernel fall back to writing), then BLKZEROOUT,
 * then writing zeroes ourselves.  A device has no holes we can see, so
 * block_status is left to bdev_submit, which reports everything as data.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/align.h"
#include "block/file_io.h"
#include "block/file_sync.h"

#define DEVICE_MAX_TRANSFER (32u << 20)
#define DEVICE_MAX_DISCARD (1ull << 30)

static int device_discard_range(struct file_bdev *file, uint64_t offset, uint64_t length)
{
    if (!file->discard)
        return 0;
    /* BLKDISCARD wants whole logical blocks; the partial ends just stay. */
    uint64_t block = file->bdev->limits.logical_block_size;
    uint64_t start = align_up(offset, block);
    uint64_t end = align_down(offset + length, block);
    if (start >= end)
        return 0;
    uint64_t range[2] = {start, end - start};
    if (ioctl(file->fd, BLKDISCARD, range) == 0)
        return 0;
    return errno == EOPNOTSUPP ? 0 : -errno;
}

static int device_zero_range(struct file_bdev *file, uint64_t offset, uint64_t length, uint32_t flags)
{
    uint64_t block = file->bdev->limits.logical_block_size;
    if (offset % block != 0 || length % block != 0) {
        if (flags & BDEV_FAST_ONLY)
            return -ENOTSUP;
        return file_write_zeroes_slow(file, offset, length);
    }
    if ((flags & BDEV_MAY_UNMAP) && file->discard) {
        if (fallocate(file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
            return 0;
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return -errno;
    }
    /* Everything below may end up writing zeroes, so it is not fast. */
    if (flags & BDEV_FAST_ONLY)
        return -ENOTSUP;
    if (fallocate(file->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
        return 0;
    uint64_t range[2] = {offset, length};
    if (ioctl(file->fd, BLKZEROOUT, range) == 0)
        return 0;
    return file_write_zeroes_slow(file, offset, length);
}

static void device_close(struct bdev *bdev)
{
    file_release(bdev->driver);
}

static int device_current_size(struct bdev *bdev, uint64_t *size)
{
    struct file_bdev *file = bdev->driver;
    if (ioctl(file->fd, BLKGETSIZE64, size) < 0)
        return -errno;
    return file_follows_size(file, *size) ? 0 : -EOPNOTSUPP;
}

static const struct bdev_ops host_device_ops = {
    .name = "host_device",
    .submit = file_submit,
    .blocking = file_blocking,
    .close = device_close,
    .current_size = device_current_size,
};

int host_device_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    struct file_bdev *file = calloc(1, sizeof(*file));
    if (!file) {
        error_message_set(error_message, 0, "%s: out of memory", options->path);
        return -ENOMEM;
    }
    file->bdev = bdev;
    int flags = file_open_flags(options->cache, options->readonly);
    file->fd = open(options->path, flags);
    int rc = 0;
    if (file->fd < 0) {
        rc = -errno;
        error_message_set(error_message, 0, "%s: %s", options->path, strerror(-rc));
        free(file);
        return rc;
    }

    struct stat st;
    uint64_t size = 0;
    int logical = 0;
    unsigned int physical = 0, optimal = 0;
    if (fstat(file->fd, &st) < 0) {
        rc = -errno;
        error_message_set(error_message, 0, "%s: %s", options->path, strerror(-rc));
    } else if (!S_ISBLK(st.st_mode)) {
        rc = -ENOTBLK;
        error_message_set(error_message, 0, "%s: format host_device needs a block device", options->path);
    } else if (ioctl(file->fd, BLKGETSIZE64, &size) < 0 || ioctl(file->fd, BLKSSZGET, &logical) < 0) {
        rc = -errno;
        error_message_set(error_message, 0, "%s: cannot read the device size: %s", options->path, strerror(-rc));
    } else {
        /* Optional on old kernels and odd drivers. */
        if (ioctl(file->fd, BLKPBSZGET, &physical) < 0)
            physical = 0;
        if (ioctl(file->fd, BLKIOOPT, &optimal) < 0)
            optimal = 0;
        if (logical <= 0)
            logical = 512;
        rc = file_setup(file, options, (uint32_t)logical, error_message);
    }
    if (rc < 0) {
        close(file->fd);
        free(file);
        return rc;
    }
    rc = file_setup_tail(file, options->path, size, error_message); /* a no-op for whole blocks */
    if (rc < 0) {
        file_release(file);
        return rc;
    }
    file->discard_range = device_discard_range;
    file->zero_range = device_zero_range;

    bdev->ops = &host_device_ops;
    bdev->driver = file;
    bdev->size = size;
    bdev->caps = BDEV_CAP_WRITE_ZEROES | file_cache_caps(options->cache);
    if (options->discard)
        bdev->caps |= BDEV_CAP_DISCARD | BDEV_CAP_FAST_ZERO;
    if (options->readonly)
        bdev->caps |= BDEV_CAP_READ_ONLY;
    uint32_t logical_size = (uint32_t)logical;
    if (file->direct && file->offset_align > logical_size)
        logical_size = file->offset_align;
    bdev->limits = (struct bdev_limits){
        .request_alignment = file->direct ? file->offset_align : 1,
        .logical_block_size = logical_size,
        .physical_block_size = physical > logical_size ? physical : logical_size,
        .optimal_io_size = optimal,
        .max_transfer = DEVICE_MAX_TRANSFER,
        .max_discard = DEVICE_MAX_DISCARD,
    };
    return 0;
}
