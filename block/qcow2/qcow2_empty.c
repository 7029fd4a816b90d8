/*
 * Emptying an image after a commit (luna-img commit, lunactl overlay
 * commit), as QEMU's qcow2_make_empty: when nothing but the active L1 table
 * references clusters, the file is reset to a new image's four parts
 * (header, refcount table, one refcount block, empty L1 table) and cut
 * after them, so an emptied overlay is as small as a new one; otherwise
 * every L2 entry is cleared and what it pointed to freed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file_io.h"
#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_internal.h"

/*
 * Clear every entry of one L2 table (copied first when a snapshot shares
 * it) and release what the entries pointed to.  punch[] receives the host
 * offsets of freed clusters this image owned alone, whose file ranges may
 * be punched once the cleared entries are on disk.
 */
static int empty_l2_table(struct qcow2 *q, uint64_t l1_index, uint64_t guest_clusters, uint64_t *punch,
                          uint32_t *punch_count)
{
    *punch_count = 0;
    uint64_t first = l1_index * q->l2_entries;
    for (uint64_t guest_cluster = first; guest_cluster < first + q->l2_entries && guest_cluster < guest_clusters;
         guest_cluster++) {
        uint64_t entry, bitmap;
        int rc = qcow2_l2_entry_get(q, guest_cluster, false, &entry, &bitmap);
        if (rc < 0)
            return rc;
        if (!entry && !bitmap)
            continue;
        if ((rc = qcow2_l2_entry_get(q, guest_cluster, true, &entry, &bitmap)) < 0 ||
            (rc = qcow2_l2_entry_set(q, guest_cluster, 0, 0)) < 0)
            return rc;
        bool compressed = (entry & QCOW2_OFLAG_COMPRESSED) != 0;
        if (!compressed && !qcow2_l2_entry_has_host(&q->image.header, entry))
            continue;
        if (!compressed && !q->data_external && (entry & QCOW2_OFLAG_COPIED))
            punch[(*punch_count)++] = entry & QCOW2_OFFSET_MASK;
        if ((rc = qcow2_free_l2_entry_target(q, entry)) < 0)
            return rc;
    }
    return 0;
}

/* QEMU's fallback: every entry cleared, the L2 tables and the file's length kept. */
static int clear_every_entry(struct qcow2 *q)
{
    uint64_t *punch = malloc(q->l2_entries * sizeof(*punch));
    if (!punch)
        return -ENOMEM;
    uint64_t guest_clusters = (q->bdev->size + q->cluster_size - 1) >> q->cluster_bits;
    int rc = 0;
    for (uint64_t l1_index = 0; rc == 0 && l1_index < q->l1_size; l1_index++) {
        if (!(q->l1_table[l1_index] & QCOW2_OFFSET_MASK))
            continue;
        uint32_t punch_count = 0;
        rc = q->corrupt ? -EIO : empty_l2_table(q, l1_index, guest_clusters, punch, &punch_count);
        /* Punched space must not be reachable from an entry still on disk. */
        if (rc == 0 && punch_count)
            rc = qcow2_flush_metadata(q);
        for (uint32_t i = 0; rc == 0 && i < punch_count; i++) {
            struct bdev_io hole = {.op = BDEV_OP_DISCARD, .offset = punch[i], .length = q->cluster_size};
            bdev_blocking(q->file, &hole); /* only space is at stake: failure is harmless */
        }
    }
    if (rc == 0)
        rc = qcow2_flush_metadata(q);
    free(punch);
    return rc;
}

/*
 * The reset needs every referenced cluster to be reachable from the active
 * L1 table alone (no snapshots, no bitmaps), refcounted clusters only (no
 * external data file), the dirty bit to cover its steps (v3), and the four
 * parts counted by the first refcount block.
 */
static bool can_reset(const struct qcow2 *q, uint64_t l1_clusters)
{
    const struct qcow2_header *h = &q->image.header;
    if (h->version < 3 || h->nb_snapshots || q->data_external || 3 + l1_clusters > q->refcount_block_entries)
        return false;
    for (size_t i = 0; i < q->image.extension_count; i++)
        if (q->image.extensions[i].type == QCOW2_EXT_BITMAPS)
            return false;
    return true;
}

static int write_zero_clusters(struct qcow2 *q, uint64_t offset, uint64_t count)
{
    uint8_t *zeroes = calloc(1, q->cluster_size);
    if (!zeroes)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; rc == 0 && i < count; i++)
        rc = qcow2_file_write(q, offset + i * q->cluster_size, zeroes, q->cluster_size);
    free(zeroes);
    return rc;
}

/* Cut a regular image file after the reset image; a block device keeps its size. */
static int cut_file(struct qcow2 *q, uint64_t end)
{
    const struct file_bdev *file = file_bdev_get(q->file);
    struct stat st;
    if (!file || fstat(file->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    if (ftruncate(file->fd, (off_t)end) < 0)
        return -errno;
    q->file->size = end;
    return 0;
}

/*
 * Cluster 0 keeps the header; cluster 1 becomes the refcount table, 2 its
 * first block, 3... the zeroed L1 table (QEMU's layout).  From the dirty
 * bit's write on, the refcounts on disk may be wrong until it is cleared;
 * a failure in between leaves the image dirty (refcounts rebuilt at the
 * next open) and this open refuses further writes.  Lock held.
 */
static int reset_file(struct qcow2 *q, uint64_t l1_clusters)
{
    struct qcow2_header *h = &q->image.header;
    uint64_t cluster = q->cluster_size, table_entries = cluster / 8;
    uint64_t *table = calloc(table_entries, sizeof(*table));
    int rc = table ? qcow2_cache_resize_keys(&q->refcount_cache, table_entries) : -ENOMEM;
    if (rc == 0)
        rc = qcow2_flush_metadata(q);
    if (rc == 0) {
        h->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
        if ((rc = qcow2_header_write(q)) < 0)
            h->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    }
    if (rc < 0) {
        free(table);
        return rc;
    }
    qcow2_cache_drop_all(&q->l2_cache);
    qcow2_cache_drop_all(&q->refcount_cache);
    memset(q->l1_table, 0, (size_t)q->l1_size * sizeof(*q->l1_table));
    rc = write_zero_clusters(q, h->l1_table_offset, l1_clusters);
    if (rc == 0)
        rc = write_zero_clusters(q, cluster, 2 + l1_clusters);
    if (rc == 0) {
        h->l1_table_offset = 3 * cluster;
        h->refcount_table_offset = cluster;
        h->refcount_table_clusters = 1;
        rc = qcow2_header_write(q);
    }
    free(q->refcount_table);
    q->refcount_table = table;
    q->refcount_table_entries = table_entries;
    q->free_cluster_hint = 0;
    q->compressed_tail = 0;
    q->host_end = (3 + l1_clusters) * cluster;
    if (rc == 0) {
        uint8_t entry[8];
        qcow2_put_be64(entry, 2 * cluster);
        rc = qcow2_file_write(q, cluster, entry, sizeof(entry));
        if (rc == 0)
            rc = qcow2_file_flush(q);
        if (rc == 0)
            table[0] = 2 * cluster;
    }
    if (rc == 0)
        rc = qcow2_refcount_update(q, 0, 3 + l1_clusters, 1);
    if (rc == 0)
        rc = qcow2_flush_metadata(q);
    if (rc == 0) {
        h->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
        rc = qcow2_header_write(q);
    }
    if (rc < 0) {
        q->corrupt = true;
        return rc;
    }
    /* Only space is at stake from here: the image is whole either way. */
    cut_file(q, q->host_end);
    return 0;
}

int qcow2_image_make_empty(struct bdev *bdev)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    uint64_t l1_clusters = ((uint64_t)q->l1_size * 8 + q->cluster_size - 1) / q->cluster_size;
    pthread_mutex_lock(&q->lock);
    int rc;
    if (q->corrupt)
        rc = -EIO;
    else if (can_reset(q, l1_clusters)) {
        qcow2_quiesce_data_io(q);
        rc = reset_file(q, l1_clusters);
    } else
        rc = clear_every_entry(q);
    pthread_mutex_unlock(&q->lock);
    return rc;
}
