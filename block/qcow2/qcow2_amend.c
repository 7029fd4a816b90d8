/*
 * Changing an image's format version and feature bits in place, as QEMU's
 * qcow2_amend_options does for qemu-img amend.
 *
 * Upgrading v2 to v3 only rewrites the header (as a v3 image qemu-img
 * creates: feature-name table included).  Downgrading needs the image to
 * say nothing v2 cannot: no incompatible feature, 16-bit refcounts; zero
 * clusters (v3's zero flag) are expanded first, in the active L1 and every
 * snapshot's: a zero cluster with a host cluster keeps it, zeroed; one
 * without becomes unallocated when nothing lies beneath, else a fresh
 * cluster of zeroes (as many references as the L2 table has, since its
 * users all see it).  No guest I/O meanwhile.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_internal.h"
#include "block/qcow2/qcow2_snapshots.h"

static int cluster_zero(struct qcow2 *q, uint64_t host)
{
    struct bdev_io zero = {.op = BDEV_OP_WRITE_ZEROES, .offset = host, .length = q->cluster_size};
    return bdev_blocking(q->file, &zero);
}

/* Expand the zero clusters of the L2 table an L1 entry names (nothing when it has none). */
static int expand_table(struct qcow2 *q, uint64_t l1_entry, uint8_t *table)
{
    uint64_t l2_offset, l2_references;
    int rc = qcow2_l2_table_read(q, l1_entry, &l2_offset, table);
    if (rc < 0 || !l2_offset)
        return rc;
    if ((rc = qcow2_refcount_get(q, l2_offset >> q->cluster_bits, &l2_references)) < 0)
        return rc;
    bool changed = false, has_backing = q->image.backing_file != NULL;
    for (uint32_t e = 0; rc == 0 && e < q->l2_entries; e++) {
        uint8_t *slot = table + (uint64_t)e * q->l2_entry_size;
        uint64_t entry = qcow2_be64(slot);
        if ((entry & QCOW2_OFLAG_COMPRESSED) || !(entry & QCOW2_OFLAG_ZERO))
            continue;
        uint64_t host = entry & QCOW2_OFFSET_MASK, expanded = 0;
        if (host) {
            expanded = host | (entry & QCOW2_OFLAG_COPIED);
        } else if (has_backing) {
            if ((rc = qcow2_alloc_clusters(q, 1, &host)) == 0 && l2_references > 1)
                rc = qcow2_refcount_update(q, host, 1, (int64_t)l2_references - 1);
            expanded = host | (l2_references == 1 ? QCOW2_OFLAG_COPIED : 0);
        }
        if (rc == 0 && host)
            rc = cluster_zero(q, host);
        qcow2_put_be64(slot, expanded);
        changed = true;
    }
    /* The zeroes and the new clusters' refcounts are on disk before the entries that use them. */
    if (rc == 0 && changed && (rc = qcow2_cache_write_back(&q->refcount_cache)) == 0 &&
        (rc = qcow2_file_flush(q)) == 0)
        rc = qcow2_file_write(q, l2_offset, table, q->cluster_size);
    return rc;
}

/* Progress as QEMU reports it: one step per L1 entry, of every L1 table. */
struct amend_progress {
    qcow2_progress_fn *report;
    void *opaque;
    uint64_t done, total;
};

static void progress_step(struct amend_progress *progress)
{
    progress->done++;
    if (progress->report)
        progress->report(progress->opaque, progress->done, progress->total);
}

static int expand_zero_clusters(struct qcow2 *q, struct amend_progress *progress)
{
    uint8_t *table = malloc(q->cluster_size);
    if (!table)
        return -ENOMEM;
    struct qcow2_snapshot_table snapshots = {0};
    int rc = qcow2_snapshots_load(q, &snapshots);
    progress->total = q->l1_size;
    for (uint32_t s = 0; s < snapshots.count; s++)
        progress->total += snapshots.entries[s].l1_size;
    for (uint32_t i = 0; rc == 0 && i < q->l1_size; i++) {
        rc = expand_table(q, q->l1_table[i], table);
        progress_step(progress);
    }
    for (uint32_t s = 0; rc == 0 && s < snapshots.count; s++) {
        uint64_t *l1;
        if ((rc = qcow2_snapshot_l1_read(q, &snapshots.entries[s], &l1)) < 0)
            break;
        for (uint32_t i = 0; rc == 0 && i < snapshots.entries[s].l1_size; i++) {
            rc = expand_table(q, l1[i], table); /* a table shared with another L1 is already done: no zero flag left */
            progress_step(progress);
        }
        free(l1);
    }
    qcow2_snapshot_table_clear(&snapshots);
    free(table);
    if (rc == 0)
        rc = qcow2_file_cover(q->file, q->host_end);
    return rc == 0 ? qcow2_file_flush(q) : rc;
}

/* Whether any L2 table of the active image or a snapshot maps a compressed cluster. */
static int any_compressed(struct qcow2 *q, bool *found)
{
    *found = false;
    uint8_t *table = malloc(q->cluster_size);
    if (!table)
        return -ENOMEM;
    struct qcow2_snapshot_table snapshots = {0};
    int rc = qcow2_snapshots_load(q, &snapshots);
    for (int32_t s = -1; rc == 0 && !*found && s < (int32_t)snapshots.count; s++) {
        uint64_t *l1 = q->l1_table;
        uint32_t l1_size = q->l1_size;
        if (s >= 0) {
            if ((rc = qcow2_snapshot_l1_read(q, &snapshots.entries[s], &l1)) < 0)
                break;
            l1_size = snapshots.entries[s].l1_size;
        }
        for (uint32_t i = 0; rc == 0 && !*found && i < l1_size; i++) {
            uint64_t l2_offset;
            if ((rc = qcow2_l2_table_read(q, l1[i], &l2_offset, table)) < 0 || !l2_offset)
                continue;
            for (uint32_t e = 0; e < q->l2_entries && !*found; e++)
                *found = (qcow2_be64(table + (uint64_t)e * q->l2_entry_size) & QCOW2_OFLAG_COMPRESSED) != 0;
        }
        if (s >= 0)
            free(l1);
    }
    qcow2_snapshot_table_clear(&snapshots);
    free(table);
    return rc;
}

static int set_version_locked(struct qcow2 *q, uint32_t version, struct amend_progress *progress)
{
    struct qcow2_image_header *image = &q->image;
    struct qcow2_header *h = &image->header;
    struct qcow2_header saved = *h;
    int rc = 0;
    if (version == 3) {
        /* QEMU's upgrade reports three steps. */
        progress->total = 2;
        if (progress->report)
            progress->report(progress->opaque, 0, 2);
        progress_step(progress);
        h->version = 3;
        h->header_length = QCOW2_V3_HEADER_LENGTH;
        h->refcount_order = 4;
        if (!image->feature_name_count)
            rc = qcow2_image_header_set_default_feature_names(image);
    } else {
        /* Only what v2 can say: the caller checked refcount_order and the incompatible bits. */
        if (h->refcount_order != 4 || (h->incompatible_features & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION)))
            return -ENOTSUP;
        /* zstd can go when nothing was compressed with it (v2 knows zlib only), as QEMU allows. */
        bool compressed = false;
        if ((h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
            ((rc = any_compressed(q, &compressed)) < 0 || compressed))
            return rc < 0 ? rc : -ENOTSUP;
        rc = expand_zero_clusters(q, progress);
        if (rc == 0) {
            h->version = 2;
            h->header_length = QCOW2_V2_HEADER_LENGTH;
            h->incompatible_features = h->compatible_features = h->autoclear_features = 0;
            h->compression_type = 0;
            free(image->feature_names);
            image->feature_names = NULL;
            image->feature_name_count = 0;
        }
    }
    if (rc == 0 && (rc = qcow2_header_write(q)) < 0)
        *h = saved;
    if (rc == 0 && version == 3)
        progress_step(progress);
    return rc;
}

int qcow2_image_set_version(struct bdev *bdev, uint32_t version, qcow2_progress_fn *report, void *opaque)
{
    struct qcow2 *q = bdev->driver;
    if (version != 2 && version != 3)
        return -EINVAL;
    if (q->image.header.version == version)
        return 0;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    struct amend_progress progress = {.report = report, .opaque = opaque};
    return qcow2_tables_end(q, set_version_locked(q, version, &progress));
}

int qcow2_image_compressed_clusters(struct bdev *bdev, bool *found)
{
    struct qcow2 *q = bdev->driver;
    pthread_mutex_lock(&q->lock);
    int rc = any_compressed(q, found);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int qcow2_image_set_lazy_refcounts(struct bdev *bdev, bool enabled)
{
    struct qcow2 *q = bdev->driver;
    struct qcow2_header *h = &q->image.header;
    if (enabled && h->version < 3)
        return -ENOTSUP;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    uint64_t saved = h->compatible_features;
    /*
     * luna keeps refcounts exact whatever the bit says, and opening a dirty
     * image read-write repaired it (qcow2.c): nothing is left to repair.
     */
    if (enabled)
        h->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    else
        h->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (h->compatible_features != saved && (rc = qcow2_header_write(q)) < 0)
        h->compatible_features = saved;
    return qcow2_tables_end(q, rc);
}
