/* img_status: QEMU's block status of an image chain, for map, compare and measure. */
#include "block/img/img_status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_image.h"

static int layer_init(struct img_layer *layer, struct bdev *bdev)
{
    *layer = (struct img_layer){.bdev = bdev, .fd = -1};
    if (!qcow2_image_is(bdev))
        return 0;
    layer->qcow2 = true;
    layer->fd = open(bdev->filename, O_RDONLY | O_CLOEXEC);
    if (layer->fd < 0)
        return -errno;
    struct stat st;
    if (fstat(layer->fd, &st) < 0)
        return -errno;
    layer->file_size = (uint64_t)st.st_size;
    const struct qcow2_image_header *image = qcow2_image_header(bdev);
    if (image->data_file && !(layer->data_filename = qcow2_backing_path(bdev->filename, image->data_file)))
        return -ENOMEM;
    return 0;
}

static void layer_clear(struct img_layer *layer)
{
    if (layer->fd >= 0)
        close(layer->fd);
    free(layer->data_filename);
}

void img_chain_close(struct img_chain *chain)
{
    for (size_t i = 0; i < chain->count; i++)
        layer_clear(&chain->layers[i]);
    if (chain->layers && chain->layers[0].bdev)
        bdev_close(chain->layers[0].bdev);
    free(chain->layers);
    *chain = (struct img_chain){0};
}

int img_chain_open(const char *path, const char *format, bool force_share, enum bdev_cache_mode cache,
                   const struct img_snapshot_choice *snapshot, struct img_chain *chain)
{
    *chain = (struct img_chain){0};
    struct bdev *top;
    int rc = img_open_snapshot(path, format, force_share, cache, snapshot, &top);
    if (rc < 0)
        return rc;
    for (struct bdev *bdev = top; bdev; bdev = qcow2_image_is(bdev) ? qcow2_image_backing(bdev) : NULL) {
        struct img_layer *grown = realloc(chain->layers, (chain->count + 1) * sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            break;
        }
        chain->layers = grown;
        rc = layer_init(&chain->layers[chain->count], bdev);
        chain->count++;
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        if (!chain->layers)
            bdev_close(top);
        img_error("Could not open '%s': %s", path, strerror(-rc));
        img_chain_close(chain);
    }
    return rc;
}

/*
 * QEMU's qcow2_detect_metadata_preallocation: when clearly more clusters
 * are in use (refcount > 0) than the file has blocks for, the image was
 * preallocated with metadata and its data clusters may be holes.
 */
static int detect_metadata_preallocation(struct img_layer *layer)
{
    uint64_t cluster_size = qcow2_cluster_size(&qcow2_image_header(layer->bdev)->header);
    struct stat st;
    if (fstat(layer->fd, &st) < 0)
        return -errno;
    uint64_t real_clusters = (uint64_t)st.st_blocks * 512 / cluster_size;
    uint64_t threshold = real_clusters * 10 / 9 > real_clusters + 2 ? real_clusters * 10 / 9 : real_clusters + 2;
    uint64_t end_cluster = (layer->file_size + cluster_size - 1) / cluster_size;
    uint64_t count;
    int rc = qcow2_image_count_referenced(layer->bdev, end_cluster, threshold, &count);
    if (rc == 0) {
        layer->metadata_preallocation = count >= threshold;
        layer->preallocation_checked = true;
    }
    return rc;
}

/* file-posix's status of the image file at offset: is it a hole, and how far does that go. */
static void file_status(int fd, uint64_t file_size, uint64_t offset, uint64_t bytes, bool *zero, uint64_t *length,
                        bool *eof)
{
    *eof = false;
    if (offset >= file_size) {
        *zero = false;
        *length = 0;
        *eof = true;
        return;
    }
    if (bytes > file_size - offset)
        bytes = file_size - offset;
    off_t data = lseek(fd, (off_t)offset, SEEK_DATA);
    uint64_t end;
    if (data < 0 && errno == ENXIO) {
        *zero = true;
        end = offset + bytes;
    } else if (data < 0) {
        *zero = false;
        end = offset + bytes;
    } else if ((uint64_t)data > offset) {
        *zero = true;
        end = (uint64_t)data;
    } else {
        off_t hole = lseek(fd, (off_t)offset, SEEK_HOLE);
        *zero = false;
        end = hole < 0 || (uint64_t)hole <= offset ? offset + bytes : (uint64_t)hole;
    }
    if (end > offset + bytes)
        end = offset + bytes;
    *length = end - offset;
    *eof = end == file_size;
}

/* ---- one layer ---- */

static int raw_layer_status(struct img_layer *layer, uint64_t offset, uint64_t bytes, struct img_status *out)
{
    struct bdev_extent extent;
    struct bdev_io io = {.op = BDEV_OP_BLOCK_STATUS, .offset = offset, .length = bytes, .extents = &extent,
                         .max_extents = 1};
    int rc = bdev_blocking(layer->bdev, &io);
    if (rc < 0)
        return rc;
    if (io.nr_extents < 1 || extent.length == 0 || extent.length > bytes)
        return -EIO;
    out->flags = ((extent.flags & BDEV_EXTENT_ZERO) ? IMG_STATUS_ZERO : IMG_STATUS_DATA) | IMG_STATUS_OFFSET_VALID;
    out->length = extent.length;
    out->map = offset;
    out->file = layer->bdev->filename;
    return 0;
}

/* An unallocated run of an extended-L2 image: split where clusters with and without a host cluster meet. */
static int unallocated_subclusters(struct img_layer *layer, uint64_t offset, struct img_status *out)
{
    uint64_t cluster_size = qcow2_cluster_size(&qcow2_image_header(layer->bdev)->header);
    uint64_t cluster = offset / cluster_size, host;
    int rc = qcow2_image_cluster_host(layer->bdev, cluster, &host);
    if (rc < 0)
        return rc;
    uint64_t cluster_end = (cluster + 1) * cluster_size;
    if (host) {
        out->flags |= IMG_STATUS_OFFSET_VALID;
        out->map = host + offset % cluster_size;
        out->file = layer->data_filename ? layer->data_filename : layer->bdev->filename;
        if (out->length > cluster_end - offset)
            out->length = cluster_end - offset;
        return 0;
    }
    for (uint64_t position = cluster_end; position < offset + out->length; position += cluster_size) {
        if ((rc = qcow2_image_cluster_host(layer->bdev, position / cluster_size, &host)) < 0)
            return rc;
        if (host) {
            out->length = position - offset;
            break;
        }
    }
    return 0;
}

static int qcow2_layer(struct img_layer *layer, uint64_t offset, uint64_t bytes, struct img_status *out)
{
    if (!layer->preallocation_checked && !layer->data_filename) {
        int rc = detect_metadata_preallocation(layer);
        if (rc < 0)
            return rc;
    }
    struct qcow2_layer_extent extent;
    int rc = qcow2_layer_status(layer->bdev, offset, bytes, &extent);
    if (rc < 0)
        return rc;
    const char *file = layer->data_filename ? layer->data_filename : layer->bdev->filename;
    out->length = extent.length;
    out->file = NULL;
    switch (extent.kind) {
    case QCOW2_CLUSTER_UNALLOCATED:
        out->flags = 0;
        if (qcow2_image_header(layer->bdev)->header.incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2)
            return unallocated_subclusters(layer, offset, out);
        return 0;
    case QCOW2_CLUSTER_ZERO_PLAIN:
        out->flags = IMG_STATUS_ZERO;
        return 0;
    case QCOW2_CLUSTER_ZERO_ALLOC:
        out->flags = IMG_STATUS_ZERO | IMG_STATUS_OFFSET_VALID;
        break;
    case QCOW2_CLUSTER_NORMAL:
        out->flags = IMG_STATUS_DATA | IMG_STATUS_OFFSET_VALID;
        if (layer->metadata_preallocation)
            out->flags |= IMG_STATUS_RECURSE;
        break;
    case QCOW2_CLUSTER_COMPRESSED:
        out->flags = IMG_STATUS_DATA;
        return 0;
    }
    out->map = extent.host_offset;
    out->file = file;
    return 0;
}

int img_layer_status(struct img_chain *chain, size_t index, uint64_t offset, uint64_t bytes, struct img_status *out)
{
    struct img_layer *layer = &chain->layers[index];
    uint64_t size = layer->bdev->size;
    *out = (struct img_status){.depth = (unsigned)index};
    if (offset >= size) {
        out->flags = IMG_STATUS_EOF;
        return 0;
    }
    if (bytes == 0)
        return 0;
    if (bytes > size - offset)
        bytes = size - offset;
    int rc = layer->qcow2 ? qcow2_layer(layer, offset, bytes, out) : raw_layer_status(layer, offset, bytes, out);
    if (rc < 0)
        return rc;
    if (out->length == 0 || out->length > bytes)
        return -EIO;
    if (out->flags & (IMG_STATUS_DATA | IMG_STATUS_ZERO)) {
        out->flags |= IMG_STATUS_ALLOCATED;
    } else if (layer->qcow2) {
        /* What reads through to a missing or shorter backing file reads as zeroes. */
        if (index + 1 >= chain->count || offset >= chain->layers[index + 1].bdev->size)
            out->flags |= IMG_STATUS_ZERO;
    }
    if ((out->flags & IMG_STATUS_RECURSE) && (out->flags & IMG_STATUS_DATA) && !(out->flags & IMG_STATUS_ZERO) &&
        (out->flags & IMG_STATUS_OFFSET_VALID)) {
        /* Preallocated metadata: a data cluster over a hole of the file reads as zeroes. */
        bool zero, eof;
        uint64_t file_length;
        file_status(layer->fd, layer->file_size, out->map, out->length, &zero, &file_length, &eof);
        if (eof && (file_length == 0 || zero)) {
            out->flags |= IMG_STATUS_ZERO;
        } else {
            out->length = file_length;
            if (zero)
                out->flags |= IMG_STATUS_ZERO;
        }
    }
    if (offset + out->length == size)
        out->flags |= IMG_STATUS_EOF;
    return 0;
}

int img_status_above(struct img_chain *chain, uint64_t offset, uint64_t bytes, struct img_status *out)
{
    int rc = img_layer_status(chain, 0, offset, bytes, out);
    if (rc < 0 || out->length == 0 || (out->flags & IMG_STATUS_ALLOCATED))
        return rc;
    uint64_t eof = (out->flags & IMG_STATUS_EOF) ? offset + out->length : UINT64_MAX;
    bytes = out->length;
    for (size_t index = 1; index < chain->count; index++) {
        if ((rc = img_layer_status(chain, index, offset, bytes, out)) < 0)
            return rc;
        if (out->length == 0) {
            /* Past the end of a shorter layer: zeroes allocated at that layer. */
            out->length = bytes;
            out->flags = IMG_STATUS_ZERO | IMG_STATUS_ALLOCATED;
            break;
        }
        if (out->flags & IMG_STATUS_ALLOCATED) {
            out->flags &= ~IMG_STATUS_EOF;
            break;
        }
        bytes = out->length;
    }
    if (offset + out->length == eof)
        out->flags |= IMG_STATUS_EOF;
    return 0;
}

/* ---- the filename argument ---- */

int img_chain_open_spec(const char *spec, bool image_opts, const char *format, bool force_share,
                        enum bdev_cache_mode cache, const struct img_snapshot_choice *snapshot,
                        struct img_chain *chain)
{
    if (!image_opts) {
        if (format && !img_input_format_known(format)) {
            img_error("Could not open '%s': Unknown driver '%s'", spec, format);
            return -EINVAL;
        }
        return img_chain_open(spec, format, force_share, cache, snapshot, chain);
    }
    if (format) {
        img_error("--image-opts and --format are mutually exclusive");
        return -EINVAL;
    }
    if (!strchr(spec, '=')) {
        img_error("Could not open '%s': Cannot find device='%s' nor node-name='%s'", spec, spec, spec);
        return -EINVAL;
    }
    struct img_options options = {0};
    char *message = NULL;
    int rc = img_options_parse(&options, spec, &message);
    if (rc < 0) {
        img_error("%s", message ? message : "Invalid option list");
        free(message);
        return rc;
    }
    const char *driver = img_options_take(&options, "driver");
    const char *path = img_options_take(&options, "file.filename");
    const char *plain = img_options_take(&options, "filename");
    const char *protocol = img_options_take(&options, "file.driver");
    const char *unused = img_options_unused(&options);
    if (!path)
        path = plain;
    rc = -EINVAL;
    if (protocol && strcmp(protocol, "file"))
        img_error("Unknown protocol driver '%s' (luna-img reads files)", protocol);
    else if (unused)
        img_error("Invalid parameter '%s'", unused);
    else if (!path)
        img_error("A block device must be specified for \"file\"");
    else if (driver && !img_input_format_known(driver))
        img_error("Could not open '%s': Unknown driver '%s'", path, driver);
    else
        rc = img_chain_open(path, driver, force_share, cache, snapshot, chain);
    img_options_free(&options);
    return rc;
}
