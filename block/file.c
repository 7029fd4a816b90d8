/*
 * raw: a disk image that is a plain file, byte for byte.
 *
 * Sparse-aware: discard punches holes, write_zeroes punches or zero-ranges
 * with fallocate, block_status comes from SEEK_DATA / SEEK_HOLE.  Creates
 * a sparse file (and its parent directories) when asked to and missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file_io.h"
#include "block/file_sync.h"
#include "common/file_util.h"

#define RAW_MAX_TRANSFER (32u << 20)
#define RAW_MAX_DISCARD (1ull << 30)

static bool fallocate_unsupported(int error)
{
    return error == EOPNOTSUPP || error == ENOSYS;
}

static int raw_zero_range(struct file_bdev *file, uint64_t offset, uint64_t length, uint32_t flags);

static int raw_discard_range(struct file_bdev *file, uint64_t offset, uint64_t length)
{
    if (!file->discard)
        return 0;
    if (fallocate(file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
        return 0;
    if (!fallocate_unsupported(errno))
        return -errno;
    /*
     * The open-time probe said holes can be punched, so BDEV_CAP_DISCARD_ZEROES
     * was promised: keep the promise by zeroing.
     */
    return raw_zero_range(file, offset, length, 0);
}

/*
 * Can this file have holes punched?  Punching past end of file (KEEP_SIZE)
 * changes no data on any filesystem, and one that cannot punch at all says
 * so whatever the range.
 */
static bool can_punch_holes(int fd, uint64_t size)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)size, 1) == 0;
}

static int raw_zero_range(struct file_bdev *file, uint64_t offset, uint64_t length, uint32_t flags)
{
    if ((flags & BDEV_MAY_UNMAP) && file->discard) {
        if (fallocate(file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
            return 0;
        if (!fallocate_unsupported(errno))
            return -errno;
    }
    if (fallocate(file->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
        return 0;
    if (!fallocate_unsupported(errno))
        return -errno;
    if (flags & BDEV_FAST_ONLY)
        return -ENOTSUP;
    return file_write_zeroes_slow(file, offset, length);
}

static void raw_close(struct bdev *bdev)
{
    file_release(bdev->driver);
}

static int raw_current_size(struct bdev *bdev, uint64_t *size)
{
    struct file_bdev *file = bdev->driver;
    struct stat st;
    if (fstat(file->fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return file_follows_size(file, *size) ? 0 : -EOPNOTSUPP;
}

static const struct bdev_ops raw_ops = {
    .name = "raw",
    .submit = file_submit,
    .blocking = file_blocking,
    .close = raw_close,
    .current_size = raw_current_size,
};

/* mkdir -p of the directory that will hold path. */
static int make_parent_directories(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    char *slash = strrchr(copy, '/');
    int rc = 0;
    if (slash && slash != copy) {
        *slash = '\0';
        rc = file_make_directories(copy);
    }
    free(copy);
    return rc;
}

static int open_or_create(const struct bdev_options *options, int flags, char **error_message)
{
    int fd = open(options->path, flags);
    if (fd >= 0 || errno != ENOENT || !options->create_size_set || options->readonly)
        goto done;

    int rc = make_parent_directories(options->path);
    if (rc < 0) {
        error_message_set(error_message, 0, "%s: cannot create parent directory: %s", options->path,
                       strerror(-rc));
        return rc;
    }
    fd = open(options->path, flags | O_CREAT | O_EXCL, 0644);
    if (fd < 0 && errno == EEXIST) {
        fd = open(options->path, flags); /* someone else created it meanwhile */
        goto done;
    }
    if (fd < 0)
        goto done;
    if (ftruncate(fd, (off_t)options->create_size) < 0) {
        rc = -errno;
        error_message_set(error_message, 0, "%s: cannot size new image to %llu bytes: %s", options->path,
                       (unsigned long long)options->create_size, strerror(-rc));
        close(fd);
        unlink(options->path);
        return rc;
    }
    return fd;

done:
    if (fd < 0) {
        rc = -errno;
        if (rc == -EINVAL && (flags & O_DIRECT))
            error_message_set(error_message, 0, "%s: cache mode needs O_DIRECT, which this filesystem does not support",
                           options->path);
        else
            error_message_set(error_message, 0, "%s: %s", options->path, strerror(-rc));
        return rc;
    }
    return fd;
}

int raw_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    struct file_bdev *file = calloc(1, sizeof(*file));
    if (!file) {
        error_message_set(error_message, 0, "%s: out of memory", options->path);
        return -ENOMEM;
    }
    file->bdev = bdev;
    file->fd = open_or_create(options, file_open_flags(options->cache, options->readonly), error_message);
    if (file->fd < 0) {
        int rc = file->fd;
        free(file);
        return rc;
    }

    struct stat st;
    int rc = 0;
    if (fstat(file->fd, &st) < 0) {
        rc = -errno;
        error_message_set(error_message, 0, "%s: %s", options->path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        error_message_set(error_message, 0, "%s: not a regular file or block device", options->path);
    } else {
        rc = file_setup(file, options, 0, error_message);
    }
    if (rc < 0) {
        close(file->fd);
        free(file);
        return rc;
    }
    rc = file_setup_tail(file, options->path, (uint64_t)st.st_size, error_message);
    if (rc < 0) {
        file_release(file);
        return rc;
    }
    file->discard_range = raw_discard_range;
    file->zero_range = raw_zero_range;

    bdev->ops = &raw_ops;
    bdev->driver = file;
    bdev->size = (uint64_t)st.st_size;
    /* Fewer blocks than bytes: holes somewhere.  More is fine (metadata, preallocation). */
    file->may_have_holes = (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size;
    bdev->caps = BDEV_CAP_WRITE_ZEROES | BDEV_CAP_FAST_ZERO | BDEV_CAP_BLOCK_STATUS | BDEV_CAP_ZERO_INIT |
                 file_cache_caps(options->cache);
    /* Only a hole reads back as zeroes for sure: without punching, discard has nothing to offer. */
    if (options->discard && !options->readonly && can_punch_holes(file->fd, bdev->size))
        bdev->caps |= BDEV_CAP_DISCARD | BDEV_CAP_DISCARD_ZEROES;
    if (options->readonly)
        bdev->caps |= BDEV_CAP_READ_ONLY;
    uint32_t alignment = file->offset_align;
    bdev->limits = (struct bdev_limits){
        .request_alignment = alignment,
        .logical_block_size = alignment > 512 ? alignment : 512,
        .physical_block_size = alignment > 4096 ? alignment : 4096,
        .optimal_io_size = 0,
        .max_transfer = RAW_MAX_TRANSFER,
        .max_discard = RAW_MAX_DISCARD,
    };
    return 0;
}
