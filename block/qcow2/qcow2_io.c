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
 * Whole guest clusters are zeroed or discarded through their L2 entries,
 * as QEMU does (zero_in_l2_slice, discard_in_l2_slice):
 *  - write_zeroes that may unmap, and discard, free the host cluster (the
 *    entry keeps only "reads as zeroes"; a discard of an unallocated
 *    cluster over a backing file too);
 *  - write_zeroes that must not unmap keep the host cluster as a
 *    preallocated zero cluster, without touching its data;
 *  - write_zeroes mark even an unallocated cluster without a backing file
 *    as zero (a backing file attached later must not show through), where
 *    a discard leaves it as it is;
 *  - a compressed cluster is always freed.
 * Images without zero clusters (v2) can only drop the mapping, which reads
 * as zeroes only without a backing file.
 */
struct zero_request {
    bool discard;
    bool unmap;   /* write_zeroes with BDEV_MAY_UNMAP */
    bool partial; /* zeroes for part of the cluster, the rest reading as zeroes: only if it holds no data */
};

/* The entry that makes a guest cluster read as zeroes (host kept or not), as the image's format spells it. */
static void zero_entry(const struct qcow2 *q, uint64_t host_entry, uint64_t *entry, uint64_t *bitmap)
{
    if (q->extended_l2) {
        *entry = host_entry;
        *bitmap = 0xffffffffull << 32; /* every subcluster zero, none allocated */
    } else {
        *entry = host_entry | QCOW2_OFLAG_ZERO;
        *bitmap = 0;
    }
}

/*
 * What an L2 entry becomes (and whether the clusters it holds are freed)
 * when its whole guest cluster is zeroed or discarded.  v2 images have
 * no zero flag: with a backing file the caller falls back first.
 */
static void zeroed_entry(const struct qcow2 *q, uint64_t guest_cluster, const struct zero_request *r,
                         uint64_t entry, uint64_t bitmap, uint64_t *new_entry, uint64_t *new_bitmap, bool *release)
{
    bool compressed = (entry & QCOW2_OFLAG_COMPRESSED) != 0;
    bool allocated = compressed || qcow2_l2_entry_has_host(&q->image.header, entry);
    *new_entry = entry;
    *new_bitmap = bitmap;
    *release = false;
    if (q->data_raw) {
        /* A raw data file must read as the guest does: the cluster stays mapped and its bytes are zeroed. */
        zero_entry(q, (guest_cluster << q->cluster_bits) | QCOW2_OFLAG_COPIED, new_entry, new_bitmap);
        return;
    }
    if (!allocated && !q->backing && r->discard)
        return; /* reads as zeroes already, and QEMU leaves it as it is */
    if (q->image.header.version < 3) {
        *new_entry = *new_bitmap = 0;
        *release = allocated;
        return;
    }
    *release = compressed || ((r->discard || r->unmap) && allocated);
    zero_entry(q, *release || r->discard ? 0 : entry, new_entry, new_bitmap);
}

/*
 * Zero or discard one whole guest cluster (marked busy) in its L2 entry.
 * *release: the old entry's clusters must be freed by the caller (*old).
 */
static int zero_cluster(struct qcow2 *q, uint64_t guest_cluster, const struct zero_request *r, uint64_t *old,
                        bool *release)
{
    *release = false;
    uint64_t entry, bitmap, new_entry, new_bitmap;
    int rc = qcow2_l2_entry_get(q, guest_cluster, false, &entry, &bitmap);
    if (rc < 0)
        return rc;
    enum qcow2_cluster_kind kind;
    /* Freeing what an invalid entry names would damage refcounts of other data. */
    if (qcow2_l2_entry_kind(&q->image.header, entry, bitmap, 0, &kind) < 0)
        return qcow2_signal_corruption(q, "invalid L2 entry", entry);
    /* Checked under the lock: a write may have put data in the cluster since the caller looked. */
    if (r->partial && kind != QCOW2_CLUSTER_UNALLOCATED && kind != QCOW2_CLUSTER_ZERO_PLAIN &&
        kind != QCOW2_CLUSTER_ZERO_ALLOC)
        return -ENOTSUP;
    bool frees;
    zeroed_entry(q, guest_cluster, r, entry, bitmap, &new_entry, &new_bitmap, &frees);
    if (new_entry == entry && new_bitmap == bitmap)
        return 0;
    /* With allocate, a table shared with a snapshot becomes this image's (same entries). */
    if ((rc = qcow2_l2_entry_get(q, guest_cluster, true, &entry, &bitmap)) < 0 ||
        (rc = qcow2_l2_entry_set(q, guest_cluster, new_entry, new_bitmap)) < 0)
        return rc;
    *old = entry;
    *release = frees;
    return 0;
}

/* Clusters per metadata pass of a large request: bounds its memory and how long its clusters stay busy. */
#define ZERO_BATCH_CLUSTERS 4096u

/*
 * Give the space of freed clusters back to the file system: only those
 * this image owned alone (COPIED; a shared one stays a snapshot's) and not
 * compressed (packed with other data).  Runs before the refcounts drop, so
 * nobody can have reused them yet; failure only costs space.
 */
static void punch_freed(struct qcow2 *q, const uint64_t *freed, uint32_t count)
{
    uint64_t run_start = 0, run_length = 0;
    for (uint32_t i = 0; i <= count; i++) {
        bool punch = i < count && !(freed[i] & QCOW2_OFLAG_COMPRESSED) && (freed[i] & QCOW2_OFLAG_COPIED);
        uint64_t host = punch ? freed[i] & QCOW2_OFFSET_MASK : 0;
        if (punch && run_length && host == run_start + run_length) {
            run_length += q->cluster_size;
            continue;
        }
        if (i < count && !punch)
            continue;
        if (run_length) {
            struct bdev_io hole = {.op = BDEV_OP_DISCARD, .offset = run_start, .length = run_length};
            bdev_blocking(q->data, &hole);
        }
        run_start = host;
        run_length = punch ? q->cluster_size : 0;
    }
}

/*
 * Zero or discard count whole guest clusters from first.  Every L2 entry
 * changes first; then, with the clusters still busy, the space is
 * released and, after a single wait for data transfers that may still use
 * the old clusters, their refcounts drop.  freed: room for count entries.
 */
static int zero_batch(struct qcow2 *q, uint64_t first, uint32_t count, const struct zero_request *r,
                      struct qcow2_busy_cluster *marks, uint64_t *freed)
{
    uint32_t done = 0, freed_count = 0;
    pthread_mutex_lock(&q->lock);
    qcow2_busy_acquire(q, first, count, marks);
    int rc = q->corrupt ? -EIO : 0;
    while (rc == 0 && done < count) {
        bool release = false;
        uint64_t old = 0;
        rc = zero_cluster(q, first + done, r, &old, &release);
        if (rc == 0 && release)
            freed[freed_count++] = old;
        if (rc == 0)
            done++;
    }
    pthread_mutex_unlock(&q->lock);

    int data_rc = 0;
    if (q->data_raw && done) {
        struct bdev_io zero = {.op = BDEV_OP_WRITE_ZEROES, .flags = r->discard || r->unmap ? BDEV_MAY_UNMAP : 0,
                               .offset = first << q->cluster_bits, .length = (uint64_t)done << q->cluster_bits};
        data_rc = bdev_blocking(q->data, &zero);
    }
    punch_freed(q, freed, freed_count);

    pthread_mutex_lock(&q->lock);
    /* Even after a failure: the entries already changed no longer hold their clusters. */
    int free_rc = qcow2_free_l2_entry_targets(q, freed, freed_count);
    qcow2_busy_release(q, count, marks);
    pthread_mutex_unlock(&q->lock);
    return rc < 0 ? rc : data_rc < 0 ? data_rc : free_rc;
}

/* Zero or discard the whole clusters of [offset, end) (cluster-aligned), a batch at a time. */
static int zero_clusters(struct qcow2 *q, uint64_t offset, uint64_t end, const struct zero_request *r)
{
    uint64_t total = (end - offset) >> q->cluster_bits;
    uint32_t batch = total < ZERO_BATCH_CLUSTERS ? (uint32_t)total : ZERO_BATCH_CLUSTERS;
    struct qcow2_busy_cluster *marks = malloc(sizeof(*marks) * batch);
    uint64_t *freed = malloc(sizeof(*freed) * batch);
    int rc = marks && freed ? 0 : -ENOMEM;
    for (uint64_t done = 0; rc == 0 && done < total;) {
        uint32_t count = total - done < batch ? (uint32_t)(total - done) : batch;
        rc = zero_batch(q, (offset >> q->cluster_bits) + done, count, r, marks, freed);
        done += count;
    }
    free(marks);
    free(freed);
    return rc;
}

/* Does [offset, offset + length) of the backing file read as zeroes (past its end it does)? */
static bool backing_reads_zeroes(struct qcow2 *q, uint64_t offset, uint64_t length)
{
    uint64_t end = offset + length;
    if (q->backing && end > q->backing->size)
        end = q->backing->size;
    while (q->backing && offset < end) {
        struct bdev_extent extent;
        struct bdev_io status = {.op = BDEV_OP_BLOCK_STATUS, .offset = offset, .length = end - offset,
                                 .extents = &extent, .max_extents = 1};
        if (bdev_blocking(q->backing, &status) < 0 || status.nr_extents == 0 || !(extent.flags & BDEV_EXTENT_ZERO))
            return false;
        offset += extent.length;
    }
    return true;
}

/*
 * Zeroes for part of one cluster ([offset, offset + length) inside it), as
 * QEMU writes them: when the rest of the cluster reads as zeroes and it
 * holds no data, the whole cluster becomes a zero cluster and nothing is
 * allocated; otherwise zeroes are written (-ENOTSUP with fast_only).
 */
static int zero_part(struct qcow2 *q, uint64_t offset, uint64_t length, const struct zero_request *r, bool fast_only)
{
    uint64_t start = offset & ~(q->cluster_size - 1), end = offset + length;
    /* Subclusters and raw data files take written zeroes; a v2 image (no zero flag) has no backing file here. */
    bool metadata = !q->extended_l2 && !q->data_raw &&
                    backing_reads_zeroes(q, start, offset - start) &&
                    backing_reads_zeroes(q, end, start + q->cluster_size - end);
    struct zero_request part = {.unmap = r->unmap, .partial = true};
    int rc = metadata ? zero_clusters(q, start, start + q->cluster_size, &part) : -ENOTSUP;
    if (rc == -ENOTSUP && !fast_only)
        rc = write_zero_buffer(q, offset, length);
    return rc;
}

static int zero_or_discard(struct qcow2 *q, struct bdev_io *io)
{
    struct zero_request r = {.discard = io->op == BDEV_OP_DISCARD, .unmap = (io->flags & BDEV_MAY_UNMAP) != 0};
    bool fast_only = !r.discard && (io->flags & BDEV_FAST_ONLY);
    uint64_t offset = io->offset, end = io->offset + io->length;
    uint64_t first_full = (offset + q->cluster_size - 1) & ~(q->cluster_size - 1);
    uint64_t last_full = end & ~(q->cluster_size - 1);
    /* The partial cluster at the end of the image counts as whole (QEMU's rule too). */
    if (end == bdev_size(q->bdev) && end > last_full && offset <= last_full)
        last_full += q->cluster_size;
    int rc = 0;
    if (r.discard && first_full >= last_full)
        return 0; /* no whole cluster: a discard may do nothing */
    /* Without a zero flag, dropping a mapping would show the backing file. */
    if (q->image.header.version < 3 && q->backing) {
        if (r.discard)
            return 0; /* advisory: the data stays */
        return fast_only ? -ENOTSUP : write_zero_buffer(q, offset, io->length);
    }
    if (first_full > last_full) /* inside one cluster */
        return zero_part(q, offset, io->length, &r, fast_only);
    if (!r.discard && offset < first_full && (rc = zero_part(q, offset, first_full - offset, &r, fast_only)) < 0)
        return rc;
    if (first_full < last_full)
        rc = zero_clusters(q, first_full, last_full, &r);
    if (rc == 0 && !r.discard && end > last_full)
        rc = zero_part(q, last_full, end - last_full, &r, fast_only);
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
