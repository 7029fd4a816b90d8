/*
 * Guest I/O on a qcow2 image, blocking: what pool threads run for every
 * request the event loops cannot finish from cached mappings, and what
 * tools call directly.  Metadata is looked up and changed under the image
 * lock; guest data moves with the lock released (see qcow2_internal.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/iov.h"
#include "block/qcow2/qcow2_internal.h"

static int child_transfer(struct bdev *child, enum bdev_op op, uint64_t offset, struct iovec *iov, int iovcnt,
                          uint64_t length, uint32_t flags)
{
    struct bdev_io io = {.op = op, .flags = flags, .offset = offset, .length = length, .iov = iov, .iovcnt = iovcnt};
    return bdev_blocking(child, &io);
}

/* ---- reading ---- */

/* Unallocated guest bytes: the backing file's, zeroes past its end or without one. */
static int read_backing(struct qcow2 *q, uint64_t offset, struct iovec *iov, int iovcnt, uint64_t length)
{
    uint64_t covered = 0;
    if (q->backing && offset < q->backing->size)
        covered = q->backing->size - offset < length ? q->backing->size - offset : length;
    if (covered) {
        struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
        if (!part)
            return -ENOMEM;
        int count = iov_slice(iov, iovcnt, 0, covered, part);
        int rc = child_transfer(q->backing, BDEV_OP_READ, offset, part, count, covered, 0);
        free(part);
        if (rc < 0)
            return rc;
    }
    if (covered < length) {
        struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
        if (!part)
            return -ENOMEM;
        int count = iov_slice(iov, iovcnt, covered, length - covered, part);
        iov_zero(part, count);
        free(part);
    }
    return 0;
}

/* Decompress the cluster an L2 entry describes into cluster (cluster_size bytes). */
static int read_compressed_cluster(struct qcow2 *q, uint64_t entry, uint8_t *cluster)
{
    uint64_t host, length;
    qcow2_compressed_descriptor(&q->image.header, entry, &host, &length);
    /* Compressed data is never larger than a cluster plus the sector it starts in. */
    if (length > q->cluster_size + QCOW2_COMPRESSED_SECTOR || host < q->cluster_size)
        return qcow2_signal_corruption(q, "compressed cluster descriptor", host);
    uint8_t *compressed = malloc(length);
    if (!compressed)
        return -ENOMEM;
    uint64_t file_size = q->file->size;
    uint64_t available = host < file_size ? file_size - host : 0;
    if (available < length)
        memset(compressed + available, 0, length - available);
    int rc = available ? bdev_pread(q->file, compressed, available < length ? available : length, host) : 0;
    if (rc == 0 && qcow2_decompress(q->image.header.compression_type, compressed, length, cluster,
                                    q->cluster_size) < 0)
        rc = qcow2_signal_corruption(q, "compressed cluster does not decompress", host);
    free(compressed);
    return rc;
}

/*
 * Read guest bytes into iov.  Also used for copy-on-write (the old content
 * of a cluster being rewritten), so it must not take busy marks.
 */
static int read_guest(struct qcow2 *q, uint64_t offset, const struct iovec *iov, int iovcnt, uint64_t length)
{
    struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
    uint8_t *cluster = NULL;
    if (!part)
        return -ENOMEM;
    int rc = 0;
    uint64_t done = 0;
    while (rc == 0 && done < length) {
        struct qcow2_mapping m;
        pthread_mutex_lock(&q->lock);
        rc = qcow2_map(q, offset + done, length - done, false, &m);
        if (rc < 0) {
            pthread_mutex_unlock(&q->lock);
            break;
        }
        bool uses_file = m.kind == QCOW2_CLUSTER_NORMAL || m.kind == QCOW2_CLUSTER_COMPRESSED;
        unsigned epoch = uses_file ? qcow2_data_io_begin(q) : 0;
        pthread_mutex_unlock(&q->lock);

        int count = iov_slice(iov, iovcnt, done, m.length, part);
        switch (m.kind) {
        case QCOW2_CLUSTER_NORMAL:
            rc = child_transfer(q->data, BDEV_OP_READ, m.host_offset, part, count, m.length, 0);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            if (!cluster && !(cluster = malloc(q->cluster_size))) {
                rc = -ENOMEM;
                break;
            }
            rc = read_compressed_cluster(q, m.host_offset, cluster);
            if (rc == 0) {
                uint64_t in_cluster = (offset + done) & (q->cluster_size - 1), copied = 0;
                for (int i = 0; i < count; i++) {
                    memcpy(part[i].iov_base, cluster + in_cluster + copied, part[i].iov_len);
                    copied += part[i].iov_len;
                }
            }
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            iov_zero(part, count);
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
            rc = read_backing(q, offset + done, part, count, m.length);
            break;
        }
        if (uses_file)
            qcow2_data_io_end(q, epoch);
        done += m.length;
    }
    free(cluster);
    free(part);
    return rc;
}

/* ---- writing ---- */

static int write_guest(struct qcow2 *q, uint64_t offset, const struct iovec *iov, int iovcnt, uint64_t length,
                       uint32_t flags);

/* Subclusters [first, last] of a cluster as a bitmap mask. */
static uint32_t subcluster_mask(unsigned first, unsigned last)
{
    uint64_t mask = ((2ull << last) - 1) & ~((1ull << first) - 1);
    return (uint32_t)mask;
}

/*
 * Write length bytes (within one guest cluster) from iov, allocating or
 * copying the cluster as needed.  Runs with the cluster marked busy.
 */
static int write_cluster_slow(struct qcow2 *q, uint64_t offset, const struct iovec *iov, int iovcnt,
                              uint64_t length)
{
    uint64_t guest_cluster = offset >> q->cluster_bits;
    uint64_t cluster_start = guest_cluster << q->cluster_bits;
    uint64_t in_cluster = offset - cluster_start;
    uint64_t entry, bitmap;
    uint8_t *head = NULL, *tail = NULL;
    struct iovec *vector = NULL;

    pthread_mutex_lock(&q->lock);
    int rc = qcow2_l2_entry_get(q, guest_cluster, true, &entry, &bitmap);
    enum qcow2_cluster_kind kind = QCOW2_CLUSTER_UNALLOCATED;
    if (rc == 0 && qcow2_l2_entry_kind(&q->image.header, entry, bitmap, 0, &kind) < 0)
        rc = qcow2_signal_corruption(q, "invalid L2 entry", entry);
    bool old_host = qcow2_l2_entry_has_host(&q->image.header, entry);
    /* A host cluster this image owns alone (refcount 1) is rewritten in place. */
    bool reuse = rc == 0 && !(entry & QCOW2_OFLAG_COMPRESSED) && old_host && (entry & QCOW2_OFLAG_COPIED);
    uint64_t target = entry & QCOW2_OFFSET_MASK;
    /* In an external data file a cluster's place is its guest offset, owned without a refcount. */
    bool allocate = rc == 0 && !reuse && !q->data_external;
    if (!reuse && q->data_external)
        target = cluster_start;
    if (allocate)
        rc = qcow2_alloc_clusters(q, 1, &target);
    pthread_mutex_unlock(&q->lock);
    if (rc < 0)
        return rc;

    /*
     * What else must be written: a new cluster gets its whole old content
     * around the new bytes; a reused one only what the new bytes leave of
     * units (subclusters) that did not hold data yet.
     */
    uint64_t head_start = 0, tail_end = q->cluster_size;
    uint32_t written_mask = 0xffffffffu;
    if (reuse) {
        if (q->extended_l2) {
            unsigned first = (unsigned)(in_cluster / q->subcluster_size);
            unsigned last = (unsigned)((in_cluster + length - 1) / q->subcluster_size);
            written_mask = subcluster_mask(first, last);
            uint32_t allocated = (uint32_t)bitmap;
            head_start = (allocated & (1u << first)) ? in_cluster : first * q->subcluster_size;
            tail_end = (allocated & (1u << last)) ? in_cluster + length : (last + 1) * q->subcluster_size;
        }
        else if (kind == QCOW2_CLUSTER_NORMAL) {
            /*
             * Another writer allocated it while this one waited: write in
             * place, never rewriting bytes a concurrent in-place write may own.
             */
            head_start = in_cluster;
            tail_end = in_cluster + length;
        }
        /* Otherwise a preallocated zero cluster: filled around with zeroes. */
    }
    uint64_t head_length = in_cluster - head_start, tail_start = in_cluster + length;
    uint64_t tail_length = tail_end - tail_start;
    vector = malloc(sizeof(*vector) * (size_t)(iovcnt + 2));
    if ((head_length && !(head = malloc(head_length))) || (tail_length && !(tail = malloc(tail_length))) ||
        !vector) {
        rc = -ENOMEM;
        goto fail;
    }
    if (head_length) {
        struct iovec v = {head, head_length};
        if ((rc = read_guest(q, cluster_start + head_start, &v, 1, head_length)) < 0)
            goto fail;
    }
    if (tail_length) {
        struct iovec v = {tail, tail_length};
        if ((rc = read_guest(q, cluster_start + tail_start, &v, 1, tail_length)) < 0)
            goto fail;
    }
    int count = 0;
    if (head_length)
        vector[count++] = (struct iovec){head, head_length};
    for (int i = 0; i < iovcnt; i++)
        vector[count++] = iov[i];
    if (tail_length)
        vector[count++] = (struct iovec){tail, tail_length};
    rc = child_transfer(q->data, BDEV_OP_WRITE, target + head_start, vector, count,
                        head_length + length + tail_length, 0);
    if (rc < 0)
        goto fail;

    pthread_mutex_lock(&q->lock);
    uint64_t new_bitmap = 0;
    if (q->extended_l2) {
        uint32_t allocated = reuse ? (uint32_t)bitmap | written_mask : 0xffffffffu;
        uint32_t zero = reuse ? (uint32_t)(bitmap >> 32) & ~written_mask : 0;
        new_bitmap = ((uint64_t)zero << 32) | allocated;
    }
    rc = qcow2_l2_entry_set(q, guest_cluster, target | QCOW2_OFLAG_COPIED, new_bitmap);
    /* The old cluster (shared, compressed or a preallocation) loses this reference. */
    if (rc == 0 && !reuse && (old_host || (entry & QCOW2_OFLAG_COMPRESSED)))
        rc = qcow2_free_l2_entry_target(q, entry);
    pthread_mutex_unlock(&q->lock);
    free(head);
    free(tail);
    free(vector);
    return rc;

fail:
    if (allocate) {
        pthread_mutex_lock(&q->lock);
        qcow2_free_clusters(q, target, 1); /* nothing points to it: at worst a leak */
        pthread_mutex_unlock(&q->lock);
    }
    free(head);
    free(tail);
    free(vector);
    return rc;
}

/*
 * One whole guest cluster, stored compressed (packed with other compressed
 * data) when it shrinks, else written as usual.
 */
static int write_compressed_cluster(struct qcow2 *q, uint64_t offset, const struct iovec *iov, int iovcnt)
{
    uint8_t *cluster = malloc(q->cluster_size), *compressed = malloc(q->cluster_size);
    int rc = cluster && compressed ? 0 : -ENOMEM;
    size_t compressed_length = 0;
    if (rc == 0) {
        uint64_t copied = 0;
        for (int i = 0; i < iovcnt; i++) {
            memcpy(cluster + copied, iov[i].iov_base, iov[i].iov_len);
            copied += iov[i].iov_len;
        }
        rc = qcow2_compress(q->image.header.compression_type, cluster, q->cluster_size, compressed,
                            q->cluster_size - 1, &compressed_length);
    }
    if (rc == -ENOSPC) {
        /* Incompressible: an ordinary cluster. */
        free(cluster);
        free(compressed);
        return write_guest(q, offset, iov, iovcnt, q->cluster_size, 0);
    }
    if (rc < 0)
        goto out;

    uint64_t guest_cluster = offset >> q->cluster_bits, entry, bitmap, host = 0;
    struct qcow2_busy_cluster mark;
    pthread_mutex_lock(&q->lock);
    qcow2_busy_acquire(q, guest_cluster, 1, &mark);
    rc = q->corrupt ? -EIO : qcow2_l2_entry_get(q, guest_cluster, true, &entry, &bitmap);
    if (rc == 0)
        rc = qcow2_alloc_bytes(q, compressed_length, &host);
    pthread_mutex_unlock(&q->lock);
    if (rc == 0)
        rc = bdev_pwrite(q->file, compressed, compressed_length, host, 0);
    pthread_mutex_lock(&q->lock);
    if (rc == 0)
        rc = qcow2_l2_entry_set(q, guest_cluster, qcow2_compressed_entry(&q->image.header, host, compressed_length), 0);
    if (rc == 0 && ((entry & QCOW2_OFFSET_MASK) || (entry & QCOW2_OFLAG_COMPRESSED)))
        rc = qcow2_free_l2_entry_target(q, entry);
    qcow2_busy_release(q, 1, &mark);
    pthread_mutex_unlock(&q->lock);
out:
    free(cluster);
    free(compressed);
    return rc;
}

static int write_guest(struct qcow2 *q, uint64_t offset, const struct iovec *iov, int iovcnt, uint64_t length,
                       uint32_t flags)
{
    if ((flags & BDEV_COMPRESS) && !q->data_external) {
        struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
        int rc = part ? 0 : -ENOMEM;
        for (uint64_t done = 0; rc == 0 && done < length; done += q->cluster_size) {
            int count = iov_slice(iov, iovcnt, done, q->cluster_size, part);
            rc = write_compressed_cluster(q, offset + done, part, count);
        }
        free(part);
        return rc;
    }
    struct iovec *part = malloc(sizeof(*part) * (size_t)iovcnt);
    if (!part)
        return -ENOMEM;
    int rc = 0;
    uint64_t done = 0;
    while (rc == 0 && done < length) {
        uint64_t position = offset + done;
        uint64_t in_cluster = position & (q->cluster_size - 1);
        uint64_t chunk = q->cluster_size - in_cluster < length - done ? q->cluster_size - in_cluster : length - done;

        pthread_mutex_lock(&q->lock);
        if (q->corrupt) {
            pthread_mutex_unlock(&q->lock);
            rc = -EIO;
            break;
        }
        struct qcow2_mapping m;
        rc = qcow2_map(q, position, length - done, false, &m);
        if (rc == 0 && m.kind == QCOW2_CLUSTER_NORMAL && m.copied) {
            /* Already this image's data: write in place, as many clusters as are contiguous. */
            unsigned epoch = qcow2_data_io_begin(q);
            pthread_mutex_unlock(&q->lock);
            int count = iov_slice(iov, iovcnt, done, m.length, part);
            rc = child_transfer(q->data, BDEV_OP_WRITE, m.host_offset, part, count, m.length, 0);
            qcow2_data_io_end(q, epoch);
            done += m.length;
            continue;
        }
        struct qcow2_busy_cluster mark;
        if (rc == 0)
            qcow2_busy_acquire(q, position >> q->cluster_bits, 1, &mark);
        pthread_mutex_unlock(&q->lock);
        if (rc < 0)
            break;
        int count = iov_slice(iov, iovcnt, done, chunk, part);
        rc = write_cluster_slow(q, position, part, count, chunk);
        pthread_mutex_lock(&q->lock);
        qcow2_busy_release(q, 1, &mark);
        pthread_mutex_unlock(&q->lock);
        done += chunk;
    }
    free(part);
    return rc;
}

/* ---- zeroes and discard ---- */

static int write_zero_buffer(struct qcow2 *q, uint64_t offset, uint64_t length)
{
    uint8_t *zeroes = calloc(1, q->cluster_size);
    if (!zeroes)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t done = 0; rc == 0 && done < length;) {
        uint64_t chunk = length - done < q->cluster_size ? length - done : q->cluster_size;
        struct iovec v = {zeroes, chunk};
        rc = write_guest(q, offset + done, &v, 1, chunk, 0);
        done += chunk;
    }
    free(zeroes);
    return rc;
}

/*
 * Make one whole guest cluster read as zeroes through metadata alone.
 * The host cluster of this image is kept as a preallocated zero cluster
 * and its file range punched, so space returns without a refcount change;
 * a shared or compressed one is released.  Images without zero clusters
 * (v2) can only drop the mapping, which is zero only without a backing file.
 */
static int zero_cluster(struct qcow2 *q, uint64_t guest_cluster, bool *punch, uint64_t *punch_offset)
{
    *punch = false;
    uint64_t entry, bitmap;
    int rc = qcow2_l2_entry_get(q, guest_cluster, false, &entry, &bitmap);
    if (rc < 0)
        return rc;
    bool has_zero_flag = q->image.header.version >= 3;
    if (!entry && !bitmap && !q->backing && !q->data_raw)
        return 0; /* unallocated without backing: already zero */
    if (!has_zero_flag && q->backing)
        return -ENOTSUP;
    if ((rc = qcow2_l2_entry_get(q, guest_cluster, true, &entry, &bitmap)) < 0)
        return rc;
    uint64_t host = entry & QCOW2_OFFSET_MASK;
    bool compressed = (entry & QCOW2_OFLAG_COMPRESSED) != 0;
    bool keep = !compressed && qcow2_l2_entry_has_host(&q->image.header, entry) && (entry & QCOW2_OFLAG_COPIED) &&
                has_zero_flag;
    if (q->data_raw) {
        /* A raw data file must read as the guest does: the cluster stays mapped and its bytes are zeroed. */
        host = guest_cluster << q->cluster_bits;
        keep = true;
    }
    uint64_t new_entry, new_bitmap = 0;
    if (q->extended_l2) {
        new_entry = keep ? host | QCOW2_OFLAG_COPIED : 0;
        new_bitmap = 0xffffffffull << 32;
    } else if (has_zero_flag) {
        new_entry = (keep ? host | QCOW2_OFLAG_COPIED : 0) | QCOW2_OFLAG_ZERO;
    } else {
        new_entry = 0;
    }
    if ((rc = qcow2_l2_entry_set(q, guest_cluster, new_entry, new_bitmap)) < 0)
        return rc;
    if (keep) {
        *punch = true;
        *punch_offset = host;
        return 0;
    }
    if (qcow2_l2_entry_has_host(&q->image.header, entry) || compressed)
        rc = qcow2_free_l2_entry_target(q, entry);
    return rc;
}

static int zero_or_discard(struct qcow2 *q, struct bdev_io *io)
{
    bool discard = io->op == BDEV_OP_DISCARD;
    uint64_t offset = io->offset, end = io->offset + io->length;
    uint64_t first_full = (offset + q->cluster_size - 1) & ~(q->cluster_size - 1);
    uint64_t last_full = end & ~(q->cluster_size - 1);
    int rc = 0;
    if (first_full >= last_full) {
        /* No whole cluster: discard may do nothing, zeroes must be written. */
        if (discard)
            return 0;
        return (io->flags & BDEV_FAST_ONLY) ? -ENOTSUP : write_zero_buffer(q, offset, io->length);
    }
    if (!discard && (io->flags & BDEV_FAST_ONLY) && (offset < first_full || end > last_full))
        return -ENOTSUP;
    if (!discard && offset < first_full && (rc = write_zero_buffer(q, offset, first_full - offset)) < 0)
        return rc;
    for (uint64_t position = first_full; rc == 0 && position < last_full; position += q->cluster_size) {
        uint64_t guest_cluster = position >> q->cluster_bits;
        struct qcow2_busy_cluster mark;
        bool punch = false;
        uint64_t punch_offset = 0;
        pthread_mutex_lock(&q->lock);
        qcow2_busy_acquire(q, guest_cluster, 1, &mark);
        rc = q->corrupt ? -EIO : zero_cluster(q, guest_cluster, &punch, &punch_offset);
        pthread_mutex_unlock(&q->lock);
        if (rc == 0 && punch && q->data_raw) {
            struct bdev_io zero = {.op = BDEV_OP_WRITE_ZEROES, .flags = BDEV_MAY_UNMAP, .offset = punch_offset,
                                   .length = q->cluster_size};
            rc = bdev_blocking(q->data, &zero);
        } else if (rc == 0 && punch) {
            struct bdev_io hole = {.op = BDEV_OP_DISCARD, .offset = punch_offset, .length = q->cluster_size};
            bdev_blocking(q->data, &hole); /* only space is at stake: failure is harmless */
        }
        pthread_mutex_lock(&q->lock);
        qcow2_busy_release(q, 1, &mark);
        pthread_mutex_unlock(&q->lock);
        if (rc == -ENOTSUP && discard)
            rc = 0; /* advisory: a v2 image over a backing file keeps the data */
        else if (rc == -ENOTSUP && !(io->flags & BDEV_FAST_ONLY))
            rc = write_zero_buffer(q, position, q->cluster_size);
    }
    if (rc == 0 && !discard && end > last_full)
        rc = write_zero_buffer(q, last_full, end - last_full);
    return rc;
}

/* ---- block status ---- */

static int block_status(struct qcow2 *q, struct bdev_io *io)
{
    uint64_t position = io->offset, end = io->offset + io->length;
    uint32_t count = 0;
    while (position < end && count < io->max_extents) {
        struct qcow2_mapping m;
        pthread_mutex_lock(&q->lock);
        int rc = qcow2_map(q, position, end - position, false, &m);
        pthread_mutex_unlock(&q->lock);
        if (rc < 0)
            return rc;
        uint32_t flags = qcow2_extent_flags(m.kind);
        uint64_t length = m.length;
        if (m.kind == QCOW2_CLUSTER_UNALLOCATED) {
            if (q->backing && position < q->backing->size) {
                /* What the backing file holds shows through. */
                struct bdev_extent extent;
                uint64_t asked = q->backing->size - position < length ? q->backing->size - position : length;
                struct bdev_io status = {.op = BDEV_OP_BLOCK_STATUS, .offset = position, .length = asked,
                                         .extents = &extent, .max_extents = 1};
                if ((rc = bdev_blocking(q->backing, &status)) < 0)
                    return rc;
                length = extent.length;
                flags = extent.flags;
            }
        }
        qcow2_extent_add(io, &count, length, flags);
        position += length;
    }
    io->nr_extents = count;
    return 0;
}

/* ---- flush ---- */

int qcow2_flush_metadata(struct qcow2 *q)
{
    int rc = 0;
    /* Guest data in a data file first, so no flushed L2 entry points at data that is not. */
    if (q->data_external && q->cache_mode != BDEV_CACHE_UNSAFE)
        rc = bdev_flush_blocking(q->data);
    if (rc == 0)
        rc = qcow2_cache_write_back(&q->refcount_cache);
    if (rc == 0)
        rc = qcow2_cache_write_back(&q->l2_cache);
    if (rc == 0)
        rc = qcow2_file_flush(q);
    return rc;
}

static int flush(struct qcow2 *q)
{
    pthread_mutex_lock(&q->lock);
    int rc = qcow2_flush_metadata(q);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int qcow2_blocking(struct bdev *bdev, struct bdev_io *io)
{
    struct qcow2 *q = bdev->driver;
    int rc = -EINVAL;
    switch (io->op) {
    case BDEV_OP_READ:
        return read_guest(q, io->offset, io->iov, io->iovcnt, io->length);
    case BDEV_OP_WRITE:
        rc = write_guest(q, io->offset, io->iov, io->iovcnt, io->length, io->flags);
        break;
    case BDEV_OP_FLUSH:
        return flush(q);
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES:
        rc = zero_or_discard(q, io);
        break;
    case BDEV_OP_BLOCK_STATUS:
        return block_status(q, io);
    }
    /* FUA: the data and the metadata that reaches it. */
    if (rc == 0 && (io->flags & BDEV_FUA))
        rc = flush(q);
    return rc;
}
