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

int qcow2_image_count_referenced(struct bdev *bdev, uint64_t end_cluster, uint64_t limit, uint64_t *count)
{
    struct qcow2 *q = bdev->driver;
    pthread_mutex_lock(&q->lock);
    int rc = qcow2_count_referenced(q, end_cluster, limit, count);
    pthread_mutex_unlock(&q->lock);
    return rc;
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

/* ---- growing ---- */

int qcow2_l1_grow(struct qcow2 *q, uint32_t entries, uint64_t size)
{
    uint64_t bytes = ((uint64_t)entries * 8 + q->cluster_size - 1) & ~(q->cluster_size - 1);
    uint64_t *table = calloc(bytes / 8, sizeof(*table));
    uint8_t *encoded = calloc(1, bytes);
    int rc = table && encoded ? 0 : -ENOMEM;
    uint64_t new_offset = 0;
    if (rc == 0) {
        memcpy(table, q->l1_table, (size_t)q->l1_size * sizeof(*table));
        for (uint32_t i = 0; i < q->l1_size; i++)
            qcow2_put_be64(encoded + (uint64_t)i * 8, q->l1_table[i]);
        rc = qcow2_alloc_clusters(q, bytes / q->cluster_size, &new_offset);
    }
    /* The new table's refcounts, then the table, then the header that points to it. */
    if (rc == 0 && (rc = qcow2_cache_write_back(&q->refcount_cache)) == 0 &&
        (rc = qcow2_file_write(q, new_offset, encoded, bytes)) == 0 && (rc = qcow2_file_flush(q)) == 0)
        rc = qcow2_cache_resize_keys(&q->l2_cache, entries);
    struct qcow2_header *h = &q->image.header;
    uint64_t old_offset = h->l1_table_offset, old_size = h->size;
    uint32_t old_entries = h->l1_size;
    uint64_t old_bytes = ((uint64_t)old_entries * 8 + q->cluster_size - 1) & ~(q->cluster_size - 1);
    if (rc == 0) {
        h->l1_table_offset = new_offset;
        h->l1_size = entries;
        h->size = size;
        if ((rc = qcow2_header_write(q)) < 0) {
            h->l1_table_offset = old_offset;
            h->l1_size = old_entries;
            h->size = old_size;
        }
    }
    if (rc < 0) {
        if (new_offset)
            qcow2_free_clusters(q, new_offset, bytes / q->cluster_size);
        free(table);
        free(encoded);
        return rc;
    }
    free(q->l1_table);
    q->l1_table = table;
    q->l1_size = entries;
    free(encoded);
    if (old_offset && old_entries)
        rc = qcow2_free_clusters(q, old_offset, old_bytes / q->cluster_size);
    return rc;
}

int qcow2_image_grow(struct bdev *bdev, uint64_t size)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    pthread_mutex_lock(&q->lock);
    struct qcow2_header *h = &q->image.header;
    uint64_t covered = (uint64_t)q->l2_entries << q->cluster_bits; /* guest bytes per L1 entry */
    uint64_t entries = (size + covered - 1) / covered;
    int rc = 0;
    if (size <= h->size) {
        rc = 0;
    } else if (q->corrupt) {
        rc = -EIO;
    } else if (entries * 8 > QCOW2_MAX_L1_BYTES) {
        rc = -EFBIG;
    } else if (entries > q->l1_size) {
        rc = qcow2_l1_grow(q, (uint32_t)entries, size);
    } else {
        uint64_t old_size = h->size;
        h->size = size;
        if ((rc = qcow2_header_write(q)) < 0)
            h->size = old_size;
    }
    if (rc == 0 && size > bdev->size)
        bdev->size = size;
    pthread_mutex_unlock(&q->lock);
    return rc;
}

/* ---- zero clusters over nothing ---- */

int qcow2_image_zero_unallocated(struct bdev *bdev, uint64_t offset, uint64_t length)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    if (q->image.header.version < 3 || q->data_raw)
        return -ENOTSUP;
    if ((offset | length) & (q->cluster_size - 1) || offset > bdev->size || length > bdev->size - offset)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&q->lock);
    for (uint64_t cluster = offset >> q->cluster_bits; rc == 0 && cluster < (offset + length) >> q->cluster_bits;
         cluster++) {
        uint64_t entry, bitmap;
        if (q->corrupt)
            rc = -EIO;
        else if ((rc = qcow2_l2_entry_get(q, cluster, true, &entry, &bitmap)) == 0 && (entry || bitmap))
            rc = -EBUSY;
        else if (rc == 0)
            rc = q->extended_l2 ? qcow2_l2_entry_set(q, cluster, 0, 0xffffffffull << 32)
                                : qcow2_l2_entry_set(q, cluster, QCOW2_OFLAG_ZERO, 0);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

/* ---- one cluster's host ---- */

int qcow2_image_cluster_host(struct bdev *bdev, uint64_t guest_cluster, uint64_t *host)
{
    struct qcow2 *q = bdev->driver;
    *host = 0;
    if (guest_cluster >= (uint64_t)q->l1_size * q->l2_entries)
        return 0;
    pthread_mutex_lock(&q->lock);
    uint64_t entry, bitmap;
    int rc = qcow2_l2_entry_get(q, guest_cluster, false, &entry, &bitmap);
    if (rc == 0 && !(entry & QCOW2_OFLAG_COMPRESSED) && qcow2_l2_entry_has_host(&q->image.header, entry))
        *host = entry & QCOW2_OFFSET_MASK;
    pthread_mutex_unlock(&q->lock);
    return rc;
}
