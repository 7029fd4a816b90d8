/*
 * Whole-image operations shared by luna-img's verbs and lunad's admin:
 * per-layer allocation status and header rewrites.
 */
#include "block/qcow2/qcow2_image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_internal.h"

bool qcow2_image_is(const struct bdev *bdev)
{
    return bdev && bdev->ops == &qcow2_ops;
}

const struct qcow2_image_header *qcow2_image_header(const struct bdev *bdev)
{
    const struct qcow2 *q = bdev->driver;
    return &q->image;
}

struct bdev *qcow2_image_backing(const struct bdev *bdev)
{
    const struct qcow2 *q = bdev->driver;
    return q->backing;
}

int qcow2_layer_status(struct bdev *bdev, uint64_t offset, uint64_t length, struct qcow2_layer_extent *out)
{
    struct qcow2 *q = bdev->driver;
    if (offset >= bdev->size || length == 0)
        return -EINVAL;
    if (length > bdev->size - offset)
        length = bdev->size - offset;
    struct qcow2_mapping m;
    pthread_mutex_lock(&q->lock);
    int rc = qcow2_map(q, offset, length, false, &m);
    pthread_mutex_unlock(&q->lock);
    if (rc < 0)
        return rc;
    *out = (struct qcow2_layer_extent){.kind = m.kind, .length = m.length};
    if (m.kind == QCOW2_CLUSTER_COMPRESSED)
        qcow2_compressed_descriptor(&q->image.header, m.host_offset, &out->host_offset, &out->compressed_length);
    else if (m.kind == QCOW2_CLUSTER_NORMAL || m.kind == QCOW2_CLUSTER_ZERO_ALLOC)
        out->host_offset = m.host_offset;
    return 0;
}

static int replace_string(char **slot, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return -ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

int qcow2_image_set_backing(struct bdev *bdev, const char *backing_file, const char *backing_format)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    pthread_mutex_lock(&q->lock);
    char *old_file = q->image.backing_file, *old_format = q->image.backing_format;
    q->image.backing_file = NULL;
    q->image.backing_format = NULL;
    int rc = replace_string(&q->image.backing_file, backing_file);
    if (rc == 0)
        rc = replace_string(&q->image.backing_format, backing_file ? backing_format : NULL);
    if (rc == 0)
        rc = qcow2_header_write(q);
    if (rc < 0) {
        free(q->image.backing_file);
        free(q->image.backing_format);
        q->image.backing_file = old_file;
        q->image.backing_format = old_format;
    } else {
        free(old_file);
        free(old_format);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}
