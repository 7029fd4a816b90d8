#include "block/foreign/mapped_image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/iov.h"
#include "block/pool_submit.h"
#include "common/error_message.h"

/* Largest read accepted at once (as the other drivers). */
#define MAX_TRANSFER (32u << 20)

struct mapped_image {
    struct bdev_ops ops; /* mapped_image_ops named after the format ("vmdk", ...) */
    struct bdev *file;
    const struct mapped_format *format;
    void *state;
    uint32_t cluster_size;
};

static int read_data(struct mapped_image *image, const struct iovec *iov, int iovcnt, uint64_t skip,
                     const struct mapped_extent *extent)
{
    struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
    if (!part)
        return -ENOMEM;
    int count = iov_slice(iov, iovcnt, skip, extent->length, part);
    struct bdev_io io = {.op = BDEV_OP_READ,
                         .offset = extent->host_offset,
                         .length = extent->length,
                         .iov = part,
                         .iovcnt = count};
    /* A table pointing past the end of the file is a corrupt image, not zeroes. */
    int rc = extent->host_offset > image->file->size || extent->length > image->file->size - extent->host_offset
                 ? -EIO
                 : bdev_blocking(image->file, &io);
    free(part);
    return rc;
}

static int read_compressed(struct mapped_image *image, const struct iovec *iov, int iovcnt, uint64_t skip,
                           uint64_t offset, const struct mapped_extent *extent)
{
    uint8_t *unit = malloc(image->cluster_size);
    if (!unit)
        return -ENOMEM;
    int64_t produced = image->format->read_unit(image->state, extent, unit);
    uint64_t start = offset - extent->unit_offset;
    int rc = 0;
    if (produced < 0)
        rc = (int)produced;
    else if ((uint64_t)produced < start + extent->length)
        rc = -EIO; /* the unit decompressed to less than the image says it holds */
    else
        iov_copy_in(iov, iovcnt, skip, unit + start, extent->length);
    free(unit);
    return rc;
}

static int mapped_read(struct mapped_image *image, struct bdev_io *io)
{
    uint64_t done = 0;
    while (done < io->length) {
        uint64_t offset = io->offset + done;
        struct mapped_extent extent;
        int rc = image->format->map(image->state, offset, io->length - done, &extent);
        if (rc < 0)
            return rc;
        switch (extent.kind) {
        case MAPPED_UNALLOCATED:
        case MAPPED_ZERO: {
            struct iovec *part = malloc(sizeof(*part) * (size_t)io->iovcnt);
            if (!part)
                return -ENOMEM;
            iov_zero(part, iov_slice(io->iov, io->iovcnt, done, extent.length, part));
            free(part);
            break;
        }
        case MAPPED_DATA:
            rc = read_data(image, io->iov, io->iovcnt, done, &extent);
            break;
        case MAPPED_COMPRESSED:
            rc = read_compressed(image, io->iov, io->iovcnt, done, offset, &extent);
            break;
        }
        if (rc < 0)
            return rc;
        done += extent.length;
    }
    return 0;
}

/*
 * The file's own block status over a stored range: a fixed VHD or a
 * preallocated grain may be a hole in the file, and a convert should not
 * write it out.  Holes there are zeroes of the image, not unallocated.
 */
static int data_flags(struct mapped_image *image, uint64_t host_offset, uint64_t length, uint64_t *covered,
                      uint32_t *flags)
{
    if (host_offset >= image->file->size || length > image->file->size - host_offset)
        return -EIO;
    struct bdev_extent extent;
    struct bdev_io io = {.op = BDEV_OP_BLOCK_STATUS,
                         .offset = host_offset,
                         .length = length,
                         .extents = &extent,
                         .max_extents = 1};
    int rc = bdev_blocking(image->file, &io);
    if (rc < 0)
        return rc;
    *covered = extent.length;
    *flags = (extent.flags & BDEV_EXTENT_ZERO) ? BDEV_EXTENT_ZERO : 0;
    return 0;
}

static int mapped_block_status(struct mapped_image *image, struct bdev_io *io)
{
    uint64_t done = 0;
    uint32_t count = 0;
    while (done < io->length) {
        uint64_t offset = io->offset + done;
        struct mapped_extent extent;
        int rc = image->format->map(image->state, offset, io->length - done, &extent);
        if (rc < 0)
            return rc;
        uint64_t length = extent.length;
        uint32_t flags = 0;
        switch (extent.kind) {
        case MAPPED_UNALLOCATED:
            flags = BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO;
            break;
        case MAPPED_ZERO:
            flags = BDEV_EXTENT_ZERO;
            break;
        case MAPPED_COMPRESSED:
            break;
        case MAPPED_DATA: {
            /* Stored units that follow each other in the file are asked about at once. */
            while (done + length < io->length) {
                struct mapped_extent next;
                rc = image->format->map(image->state, offset + length, io->length - done - length, &next);
                if (rc < 0)
                    return rc;
                if (next.kind != MAPPED_DATA || next.host_offset != extent.host_offset + length)
                    break;
                length += next.length;
            }
            rc = data_flags(image, extent.host_offset, length, &length, &flags);
            if (rc < 0)
                return rc;
            break;
        }
        }
        if (count > 0 && io->extents[count - 1].flags == flags) {
            io->extents[count - 1].length += length;
        } else {
            if (count == io->max_extents)
                break;
            io->extents[count++] = (struct bdev_extent){.length = length, .flags = flags};
        }
        done += length;
    }
    io->nr_extents = count;
    return 0;
}

static int mapped_blocking(struct bdev *bdev, struct bdev_io *io)
{
    struct mapped_image *image = bdev->driver;
    switch (io->op) {
    case BDEV_OP_READ:
        return mapped_read(image, io);
    case BDEV_OP_BLOCK_STATUS:
        return mapped_block_status(image, io);
    case BDEV_OP_FLUSH:
        return 0; /* nothing is ever written */
    case BDEV_OP_WRITE:
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES:
        return -EROFS;
    }
    return -EINVAL;
}

static void mapped_close(struct bdev *bdev)
{
    struct mapped_image *image = bdev->driver;
    image->format->free(image->state);
    bdev_close(image->file);
    free(image);
}

static const struct bdev_ops mapped_image_ops = {
    .name = "mapped_image",
    .submit = pool_submit,
    .blocking = mapped_blocking,
    .close = mapped_close,
};

int mapped_image_attach(struct bdev *bdev, struct bdev *file, const struct mapped_format *format, void *state,
                        uint64_t size, uint32_t cluster_size)
{
    struct mapped_image *image = calloc(1, sizeof(*image));
    if (!image) {
        format->free(state);
        bdev_close(file);
        return -ENOMEM;
    }
    *image = (struct mapped_image){.ops = mapped_image_ops, .file = file, .format = format, .state = state,
                                   .cluster_size = cluster_size};
    image->ops.name = format->name;
    bdev->ops = &image->ops;
    bdev->driver = image;
    bdev->size = size;
    bdev->caps = BDEV_CAP_READ_ONLY | BDEV_CAP_BLOCK_STATUS | BDEV_CAP_ZERO_INIT;
    bdev->limits = (struct bdev_limits){
        .request_alignment = 1,
        .logical_block_size = 512,
        .physical_block_size = file->limits.physical_block_size,
        .optimal_io_size = cluster_size,
        .max_transfer = MAX_TRANSFER,
        .max_discard = 0,
    };
    return 0;
}

int mapped_image_open_file(struct bdev *bdev, const struct bdev_options *options, struct bdev **file,
                           char **error_message)
{
    struct bdev_options file_options = *options;
    file_options.format = BDEV_FORMAT_AUTO;
    file_options.readonly = true;
    file_options.create_size_set = false;
    file_options.backing = NULL;
    int rc = bdev_open(&file_options, file, error_message);
    if (rc < 0)
        return rc;
    if (!options->readonly &&
        asprintf(&bdev->notice, "opened read-only: luna reads %s images but does not write them",
                 bdev_format_name(options->format)) < 0)
        bdev->notice = NULL;
    return 0;
}

int mapped_image_read_file(struct bdev *file, void *buffer, uint64_t length, uint64_t offset)
{
    if (offset > file->size || length > file->size - offset)
        return -EINVAL;
    return bdev_pread(file, buffer, length, offset);
}
