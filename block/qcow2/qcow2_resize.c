/*
 * Resizing an open image beyond qcow2_image_grow: shrinking (clusters past
 * the new end freed, L2 tables past it dropped, the file cut after its
 * last used cluster) and preallocating a grown range, as QEMU's
 * qcow2_co_truncate does for qemu-img resize.  No guest I/O meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file_io.h"
#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_internal.h"

#define ZERO_CHUNK (1u << 20)

/* The length of the file under bdev; 0 when it is not a regular file (a device keeps its size). */
static uint64_t file_length(struct bdev *bdev)
{
    struct file_bdev *file = file_bdev_get(bdev);
    struct stat st;
    if (!file || fstat(file->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    return (uint64_t)st.st_size;
}

/*
 * ftruncate the file under bdev to size (only ever growing it unless
 * shrink); nothing when it is not a regular file.
 */
static int file_truncate(struct bdev *bdev, uint64_t size, bool shrink)
{
    struct file_bdev *file = file_bdev_get(bdev);
    struct stat st;
    if (!file || fstat(file->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    if (!shrink && (uint64_t)st.st_size >= size)
        return 0;
    if (ftruncate(file->fd, (off_t)size) < 0)
        return -errno;
    if (shrink || bdev->size < size)
        bdev->size = size;
    return 0;
}

int qcow2_file_cover(struct bdev *file, uint64_t end)
{
    return file_truncate(file, end, false);
}

/* ---- shrinking ---- */

/* Unmap every guest cluster from first on (L2 entries cleared before their clusters are freed). */
static int unmap_from(struct qcow2 *q, uint64_t first)
{
    uint64_t end = (q->image.header.size + q->cluster_size - 1) >> q->cluster_bits;
    int rc = 0;
    for (uint64_t cluster = first; rc == 0 && cluster < end; cluster++) {
        uint64_t l1_index = cluster / q->l2_entries;
        if (!(q->l1_table[l1_index] & QCOW2_OFFSET_MASK)) {
            cluster = (l1_index + 1) * q->l2_entries - 1; /* no table: nothing mapped here */
            continue;
        }
        uint64_t entry, bitmap;
        if ((rc = qcow2_l2_entry_get(q, cluster, false, &entry, &bitmap)) < 0 || (!entry && !bitmap))
            continue;
        if ((rc = qcow2_l2_entry_get(q, cluster, true, &entry, &bitmap)) == 0 &&
            (rc = qcow2_l2_entry_set(q, cluster, 0, 0)) == 0)
            rc = qcow2_free_l2_entry_target(q, entry);
    }
    return rc;
}

/* Drop the L2 tables of L1 entries wholly past the new end (the L1 keeps its size, as QEMU's does). */
static int l2_tables_drop(struct qcow2 *q, uint64_t size)
{
    uint64_t covered = (uint64_t)q->l2_entries << q->cluster_bits;
    uint64_t keep = (size + covered - 1) / covered;
    bool changed = false;
    int rc = 0;
    uint64_t *freed = calloc(q->l1_size ? q->l1_size : 1, sizeof(*freed));
    if (!freed)
        return -ENOMEM;
    uint32_t count = 0;
    for (uint64_t i = keep; i < q->l1_size; i++) {
        uint64_t table = q->l1_table[i] & QCOW2_OFFSET_MASK;
        if (!table)
            continue;
        qcow2_cache_discard(&q->l2_cache, i);
        q->l1_table[i] = 0;
        freed[count++] = table;
        changed = true;
    }
    if (changed) {
        /* The L1 on disk forgets the tables before their clusters are freed. */
        uint8_t *encoded = calloc(q->l1_size, 8);
        rc = encoded ? 0 : -ENOMEM;
        for (uint32_t i = 0; rc == 0 && i < q->l1_size; i++)
            qcow2_put_be64(encoded + (uint64_t)i * 8, q->l1_table[i]);
        uint64_t l1_offset = q->image.header.l1_table_offset;
        if (rc == 0 && (rc = qcow2_file_write(q, l1_offset, encoded, (uint64_t)q->l1_size * 8)) == 0)
            rc = qcow2_file_flush(q);
        free(encoded);
    }
    for (uint32_t i = 0; rc == 0 && i < count; i++)
        rc = qcow2_free_clusters(q, freed[i], 1);
    free(freed);
    return rc;
}

/* One past the last cluster with a reference, scanning down from the end of the file. */
static int used_end(struct qcow2 *q, uint64_t *end)
{
    uint64_t cluster = (q->file->size + q->cluster_size - 1) >> q->cluster_bits;
    while (cluster > 0) {
        uint64_t refcount;
        int rc = qcow2_refcount_get(q, cluster - 1, &refcount);
        if (rc < 0)
            return rc;
        if (refcount)
            break;
        cluster--;
    }
    *end = cluster << q->cluster_bits;
    return 0;
}

int qcow2_image_shrink(struct bdev *bdev, uint64_t size)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    pthread_mutex_lock(&q->lock);
    struct qcow2_header *h = &q->image.header;
    int rc = q->corrupt ? -EIO : 0;
    if (rc == 0 && size < h->size) {
        uint64_t first = (size + q->cluster_size - 1) >> q->cluster_bits;
        if ((rc = unmap_from(q, first)) == 0 && (rc = qcow2_flush_metadata(q)) == 0)
            rc = l2_tables_drop(q, size);
        if (rc == 0) {
            uint64_t old_size = h->size;
            h->size = size;
            if ((rc = qcow2_header_write(q)) < 0)
                h->size = old_size;
        }
        uint64_t end;
        if (rc == 0 && (rc = qcow2_flush_metadata(q)) == 0 && !q->data_external && (rc = used_end(q, &end)) == 0 &&
            end < q->file->size && file_truncate(q->file, end, true) == 0)
            q->host_end = end; /* a file that cannot be cut only keeps some unused space */
        if (rc == 0 && q->data_external)
            rc = file_truncate(q->data, size, true);
        if (rc == 0)
            bdev->size = size;
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

/* ---- preallocation ---- */

/*
 * Make the host clusters of [offset, offset + length) read as zeroes (they
 * may be freed clusters reused, below old_length) and, for falloc and full,
 * really allocated in the file.
 */
static int host_range_fill(struct bdev *file, uint64_t offset, uint64_t length, uint64_t old_length,
                           enum qcow2_preallocation mode, uint8_t *zeroes)
{
    if (mode != QCOW2_PREALLOC_FULL && offset < old_length) {
        uint64_t stale = old_length - offset < length ? old_length - offset : length;
        struct bdev_io zero = {.op = BDEV_OP_WRITE_ZEROES, .flags = BDEV_MAY_UNMAP, .offset = offset,
                               .length = stale};
        int rc = bdev_blocking(file, &zero);
        if (rc < 0)
            return rc;
    }
    if (mode == QCOW2_PREALLOC_METADATA)
        return 0;
    struct file_bdev *f = file_bdev_get(file);
    if (mode == QCOW2_PREALLOC_FALLOC) {
        if (!f)
            return -ENOTSUP;
        return posix_fallocate(f->fd, (off_t)offset, (off_t)length) == 0 ? 0 : -EIO;
    }
    for (uint64_t done = 0; done < length;) {
        uint64_t chunk = length - done < ZERO_CHUNK ? length - done : ZERO_CHUNK;
        int rc = bdev_pwrite(file, zeroes, chunk, offset + done, 0);
        if (rc < 0)
            return rc;
        done += chunk;
    }
    return 0;
}

int qcow2_image_preallocate(struct bdev *bdev, uint64_t from, uint64_t to, enum qcow2_preallocation mode)
{
    struct qcow2 *q = bdev->driver;
    if (q->readonly)
        return -EROFS;
    if (mode == QCOW2_PREALLOC_OFF || from >= to)
        return 0;
    uint8_t *zeroes = mode == QCOW2_PREALLOC_FULL ? calloc(1, ZERO_CHUNK) : NULL;
    if (mode == QCOW2_PREALLOC_FULL && !zeroes)
        return -ENOMEM;
    pthread_mutex_lock(&q->lock);
    int rc = q->corrupt ? -EIO : 0;
    uint64_t old_length = file_length(q->data_external ? q->data : q->file);
    uint64_t first = from >> q->cluster_bits, end = (to + q->cluster_size - 1) >> q->cluster_bits;
    for (uint64_t cluster = first; rc == 0 && cluster < end;) {
        uint64_t entry, bitmap;
        if ((rc = qcow2_l2_entry_get(q, cluster, true, &entry, &bitmap)) < 0)
            break;
        if (entry & QCOW2_OFFSET_MASK) {
            cluster++; /* already has its cluster */
            continue;
        }
        /* A run of unmapped clusters inside this L2 table gets one contiguous allocation. */
        uint64_t table_end = (cluster / q->l2_entries + 1) * q->l2_entries;
        uint64_t run = 1;
        while (cluster + run < end && cluster + run < table_end) {
            uint64_t next, next_bitmap;
            if ((rc = qcow2_l2_entry_get(q, cluster + run, true, &next, &next_bitmap)) < 0 ||
                (next & QCOW2_OFFSET_MASK))
                break;
            run++;
        }
        if (rc < 0)
            break;
        uint64_t host;
        struct bdev *target = q->data_external ? q->data : q->file;
        if (q->data_external) {
            host = cluster << q->cluster_bits; /* a data file holds each cluster at its guest offset */
        } else if ((rc = qcow2_alloc_clusters(q, run, &host)) == 0) {
            qcow2_host_end_grow(q, host + (run << q->cluster_bits));
        }
        if (rc == 0)
            rc = host_range_fill(target, host, run << q->cluster_bits, old_length, mode, zeroes);
        /* Preallocated: mapped, and (extended L2) no subcluster marked written, as QEMU leaves them. */
        for (uint64_t i = 0; rc == 0 && i < run; i++)
            rc = qcow2_l2_entry_set(q, cluster + i, (host + (i << q->cluster_bits)) | QCOW2_OFLAG_COPIED, 0);
        cluster += run;
    }
    if (rc == 0)
        rc = qcow2_flush_metadata(q);
    /* The file covers what is mapped (sparse with metadata preallocation), as QEMU extends it. */
    struct bdev *target = q->data_external ? q->data : q->file;
    uint64_t needed = q->data_external ? (end << q->cluster_bits) : q->host_end;
    if (rc == 0)
        rc = qcow2_file_cover(target, needed);
    pthread_mutex_unlock(&q->lock);
    free(zeroes);
    return rc;
}

int qcow2_image_data_file_resize(struct bdev *bdev, uint64_t size)
{
    struct qcow2 *q = bdev->driver;
    if (!q->data_external)
        return 0;
    pthread_mutex_lock(&q->lock);
    int rc = file_truncate(q->data, size, true);
    pthread_mutex_unlock(&q->lock);
    return rc;
}
