#include "block/bdev.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/aio_internal.h"
#include "block/file_io.h"
#include "block/foreign/foreign.h"
#include "block/lvm/lvm.h"
#include "block/iscsi_client.h"
#include "block/nbd_client.h"
#include "block/qcow2/qcow2.h"

void bdev_options_init(struct bdev_options *options)
{
    *options = (struct bdev_options){
        .path = NULL,
        .format = BDEV_FORMAT_AUTO,
        .readonly = false,
        .cache = BDEV_CACHE_WRITEBACK,
        .aio = BDEV_AIO_DEFAULT,
        .discard = true,
        .create_size_set = false,
        .create_size = 0,
        .l2_cache_size = 0,
        .backing = NULL,
        .force_share = false,
        .lvm_devices = NULL,
        .snapshot_id = NULL,
        .snapshot_name = NULL,
        .snapshot_any = NULL,
        .reconnect_timeout = 0,
        .event = NULL,
        .event_opaque = NULL,
    };
}

int bdev_open(const struct bdev_options *options, struct bdev **out, char **error_message)
{
    if (error_message)
        *error_message = NULL;
    if (!options->path || !*options->path) {
        error_message_set(error_message, 0, "no path given");
        return -EINVAL;
    }

    /* raw is a data format, not a file type: raw on a block device is host_device. */
    enum bdev_format format = options->format;
    if ((format == BDEV_FORMAT_AUTO || format == BDEV_FORMAT_RAW) && nbd_client_is_url(options->path)) {
        format = BDEV_FORMAT_NBD; /* raw data on a server */
    } else if ((format == BDEV_FORMAT_AUTO || format == BDEV_FORMAT_RAW) && iscsi_client_is_url(options->path)) {
        format = BDEV_FORMAT_ISCSI;
    } else if (format == BDEV_FORMAT_AUTO || format == BDEV_FORMAT_RAW) {
        struct stat st;
        bool is_block = stat(options->path, &st) == 0 && S_ISBLK(st.st_mode);
        format = is_block ? BDEV_FORMAT_HOST_DEVICE : BDEV_FORMAT_RAW;
    }

    struct bdev *bdev = calloc(1, sizeof(*bdev));
    char *filename = strdup(options->path);
    if (!bdev || !filename) {
        free(bdev);
        free(filename);
        error_message_set(error_message, 0, "%s: out of memory", options->path);
        return -ENOMEM;
    }
    bdev->filename = filename;

    int rc;
    switch (format) {
    case BDEV_FORMAT_HOST_DEVICE:
        rc = host_device_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_RAW:
        rc = raw_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_QCOW2:
        rc = qcow2_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_VMDK:
        rc = vmdk_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_VDI:
        rc = vdi_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_VPC:
        rc = vpc_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_LVM:
        rc = lvm_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_NBD:
        rc = nbd_client_open(bdev, options, error_message);
        break;
    case BDEV_FORMAT_ISCSI:
        rc = iscsi_client_open(bdev, options, error_message);
        break;
    default:
        error_message_set(error_message, 0, "%s: unknown format", options->path);
        rc = -EINVAL;
        break;
    }
    if (rc < 0) {
        free(bdev->filename);
        free(bdev);
        return rc;
    }
    *out = bdev;
    return 0;
}

void bdev_close(struct bdev *bdev)
{
    if (!bdev)
        return;
    bdev->ops->close(bdev);
    free(bdev->notice);
    free(bdev->filename);
    free(bdev);
}

bool bdev_is_read_only(const struct bdev *bdev) { return (bdev->caps & BDEV_CAP_READ_ONLY) != 0; }

static bool in_range(const struct bdev *bdev, uint64_t offset, uint64_t length)
{
    uint64_t size = bdev_size(bdev);
    return offset <= size && length <= size - offset;
}

int bdev_refresh_size(struct bdev *bdev, uint64_t *size)
{
    if (!bdev->ops->current_size)
        return -EOPNOTSUPP;
    int rc = bdev->ops->current_size(bdev, size);
    if (rc < 0)
        return rc;
    if (*size == bdev->size)
        return 0;
    if (*size < bdev->size)
        return -EBUSY;
    __atomic_store_n(&bdev->size, *size, __ATOMIC_RELAXED);
    return 1;
}

static bool iov_length_matches(const struct bdev_io *io)
{
    if (io->iovcnt <= 0 || io->iovcnt > IOV_MAX || !io->iov)
        return false;
    uint64_t sum = 0;
    for (int i = 0; i < io->iovcnt; i++)
        sum += io->iov[i].iov_len;
    return sum == io->length;
}

/* 0 to hand io to the driver, 1 when done here with io->result set, or -errno. */
static int check_request(struct bdev *bdev, struct bdev_io *io)
{
    const uint32_t known_flags = BDEV_FUA | BDEV_MAY_UNMAP | BDEV_FAST_ONLY | BDEV_COMPRESS;
    if (io->flags & ~known_flags)
        return -EINVAL;
    if (io->flags & BDEV_COMPRESS) {
        if (io->op != BDEV_OP_WRITE)
            return -EINVAL;
        /* Without the capability the driver ignores the flag: an ordinary write. */
        if ((bdev->caps & BDEV_CAP_COMPRESS) &&
            (io->offset % bdev->limits.compress_unit || io->length % bdev->limits.compress_unit))
            return -EINVAL;
    }

    switch (io->op) {
    case BDEV_OP_READ:
    case BDEV_OP_WRITE:
        if (io->op == BDEV_OP_WRITE && bdev_is_read_only(bdev))
            return -EROFS;
        if (!in_range(bdev, io->offset, io->length))
            return -EINVAL;
        if (io->length > bdev->limits.max_transfer)
            return -EINVAL;
        if (io->length == 0)
            return 1;
        if (!iov_length_matches(io))
            return -EINVAL;
        return 0;
    case BDEV_OP_FLUSH:
        return 0;
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES:
        if (bdev_is_read_only(bdev))
            return -EROFS;
        if (!in_range(bdev, io->offset, io->length))
            return -EINVAL;
        if (io->op == BDEV_OP_WRITE_ZEROES) {
            if (!(bdev->caps & BDEV_CAP_WRITE_ZEROES))
                return -ENOTSUP;
            if ((io->flags & BDEV_FAST_ONLY) && !(bdev->caps & BDEV_CAP_FAST_ZERO))
                return -ENOTSUP;
        }
        /* Discard is advisory: without the capability it succeeds doing nothing. */
        if (io->length == 0 || (io->op == BDEV_OP_DISCARD && !(bdev->caps & BDEV_CAP_DISCARD)))
            return 1;
        return 0;
    case BDEV_OP_BLOCK_STATUS:
        if (!in_range(bdev, io->offset, io->length) || io->length == 0)
            return -EINVAL;
        if (!io->extents || io->max_extents == 0)
            return -EINVAL;
        if (!(bdev->caps & BDEV_CAP_BLOCK_STATUS)) {
            /* No hole information: all of it is data. */
            io->extents[0] = (struct bdev_extent){.length = io->length, .flags = 0};
            io->nr_extents = 1;
            return 1;
        }
        return 0;
    }
    return -EINVAL;
}

void bdev_submit(struct bdev *bdev, struct bdev_io *io)
{
    io->bdev = bdev;
    io->result = 0;
    io->nr_extents = 0;
    io->next = NULL;
    aio_request_started(io);

    int rc = check_request(bdev, io);
    if (rc != 0) {
        aio_context_complete(io->ctx, io, rc < 0 ? rc : 0);
        return;
    }
    bdev->ops->submit(bdev, io);
}

int bdev_blocking(struct bdev *bdev, struct bdev_io *io)
{
    io->bdev = bdev;
    io->result = 0;
    io->nr_extents = 0;
    io->next = NULL;
    int rc = check_request(bdev, io);
    if (rc == 0)
        rc = bdev->ops->blocking(bdev, io);
    io->result = rc < 0 ? rc : 0;
    return io->result;
}

static int transfer_blocking(struct bdev *bdev, enum bdev_op op, void *buffer, uint64_t length, uint64_t offset,
                             uint32_t flags)
{
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    struct bdev_io io = {.op = op, .flags = flags, .offset = offset, .length = length, .iov = &iov, .iovcnt = 1};
    return bdev_blocking(bdev, &io);
}

int bdev_pread(struct bdev *bdev, void *buffer, uint64_t length, uint64_t offset)
{
    return transfer_blocking(bdev, BDEV_OP_READ, buffer, length, offset, 0);
}

int bdev_pwrite(struct bdev *bdev, const void *buffer, uint64_t length, uint64_t offset, uint32_t flags)
{
    return transfer_blocking(bdev, BDEV_OP_WRITE, (void *)buffer, length, offset, flags);
}

int bdev_flush_blocking(struct bdev *bdev)
{
    struct bdev_io io = {.op = BDEV_OP_FLUSH};
    return bdev_blocking(bdev, &io);
}

/* ---- option names ---- */

static const char *const cache_mode_names[] = {
    [BDEV_CACHE_WRITEBACK] = "writeback", [BDEV_CACHE_WRITETHROUGH] = "writethrough",
    [BDEV_CACHE_NONE] = "none",           [BDEV_CACHE_DIRECTSYNC] = "directsync",
    [BDEV_CACHE_UNSAFE] = "unsafe",
};

static const char *const aio_engine_names[] = {
    [BDEV_AIO_DEFAULT] = "default",
    [BDEV_AIO_IO_URING] = "io_uring",
    [BDEV_AIO_THREADS] = "threads",
};

static const char *const format_names[] = {
    [BDEV_FORMAT_AUTO] = "auto",
    [BDEV_FORMAT_RAW] = "raw",
    [BDEV_FORMAT_HOST_DEVICE] = "host_device",
    [BDEV_FORMAT_QCOW2] = "qcow2",
    [BDEV_FORMAT_VMDK] = "vmdk",
    [BDEV_FORMAT_VDI] = "vdi",
    [BDEV_FORMAT_VPC] = "vpc",
    [BDEV_FORMAT_LVM] = "lvm",
    [BDEV_FORMAT_NBD] = "nbd",
    [BDEV_FORMAT_ISCSI] = "iscsi",
};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static int parse_name(const char *const *names, size_t count, const char *name)
{
    if (!name)
        return -EINVAL;
    for (size_t i = 0; i < count; i++) {
        if (names[i] && strcmp(names[i], name) == 0)
            return (int)i;
    }
    return -EINVAL;
}

int bdev_cache_mode_parse(const char *name, enum bdev_cache_mode *mode)
{
    int index = parse_name(cache_mode_names, COUNT(cache_mode_names), name);
    if (index < 0)
        return index;
    *mode = (enum bdev_cache_mode)index;
    return 0;
}

const char *bdev_cache_mode_name(enum bdev_cache_mode mode)
{
    return (unsigned)mode < COUNT(cache_mode_names) ? cache_mode_names[mode] : "unknown";
}

int bdev_aio_engine_parse(const char *name, enum bdev_aio_engine *engine)
{
    int index = parse_name(aio_engine_names, COUNT(aio_engine_names), name);
    if (index < 0)
        return index;
    *engine = (enum bdev_aio_engine)index;
    return 0;
}

const char *bdev_aio_engine_name(enum bdev_aio_engine engine)
{
    return (unsigned)engine < COUNT(aio_engine_names) ? aio_engine_names[engine] : "unknown";
}

int bdev_format_parse(const char *name, enum bdev_format *format)
{
    int index = parse_name(format_names, COUNT(format_names), name);
    if (index < 0)
        return index;
    *format = (enum bdev_format)index;
    return 0;
}

const char *bdev_format_name(enum bdev_format format)
{
    return (unsigned)format < COUNT(format_names) ? format_names[format] : "unknown";
}
