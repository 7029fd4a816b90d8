/*
 * Guest-to-host mapping: L1 and L2 entries, L2 table allocation (and
 * copy-on-write of L2 tables shared with a snapshot), busy guest clusters
 * and the data-transfer epochs.  The lock is held unless said otherwise.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_internal.h"

/* The L2 table of an L1 slot: NULL when the L1 entry is empty. */
static int load_l2(struct qcow2 *q, uint64_t l1_index, bool cache_only, uint8_t **table)
{
    *table = NULL;
    uint64_t l2_offset = q->l1_table[l1_index] & QCOW2_OFFSET_MASK;
    if (!l2_offset)
        return 0;
    if (l2_offset & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "L2 table offset not aligned", l2_offset);
    if (cache_only) {
        *table = qcow2_cache_peek(&q->l2_cache, l1_index);
        return *table ? 0 : -EAGAIN;
    }
    return qcow2_cache_get(&q->l2_cache, l1_index, l2_offset, false, table);
}

static void read_l2(const struct qcow2 *q, const uint8_t *table, uint64_t index, uint64_t *entry, uint64_t *bitmap)
{
    const uint8_t *p = table + index * q->l2_entry_size;
    *entry = qcow2_be64(p);
    *bitmap = q->extended_l2 ? qcow2_be64(p + 8) : 0;
}

/* Kind of one unit (cluster, or subcluster with extended L2) of guest_cluster, with corruption reported. */
static int unit_kind(struct qcow2 *q, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap, unsigned subcluster,
                     enum qcow2_cluster_kind *kind)
{
    if (qcow2_l2_entry_kind(&q->image.header, entry, bitmap, subcluster, kind) < 0)
        return qcow2_signal_corruption(q, "invalid L2 entry", entry);
    if (*kind == QCOW2_CLUSTER_NORMAL || *kind == QCOW2_CLUSTER_ZERO_ALLOC) {
        uint64_t host = entry & QCOW2_OFFSET_MASK;
        if (q->data_external) {
            /* The spec fixes a data file cluster at its guest offset. */
            if (host != guest_cluster << q->cluster_bits)
                return qcow2_signal_corruption(q, "data file cluster away from its guest offset", host);
            return 0;
        }
        if (host & (q->cluster_size - 1))
            return qcow2_signal_corruption(q, "data cluster not aligned", host);
        /* Guest data over the header or a table would be read as data and, worse, written. */
        if (qcow2_overlaps_fixed_metadata(q, host, q->cluster_size))
            return qcow2_signal_corruption(q, "data cluster overlaps metadata", host);
    }
    return 0;
}

int qcow2_map(struct qcow2 *q, uint64_t offset, uint64_t length, bool cache_only, struct qcow2_mapping *mapping)
{
    uint64_t guest_cluster = offset >> q->cluster_bits;
    uint64_t l1_index = guest_cluster / q->l2_entries;
    uint64_t table_end = (l1_index + 1) * q->l2_entries * q->cluster_size;
    if (length > table_end - offset)
        length = table_end - offset;
    if (l1_index >= q->l1_size)
        return qcow2_signal_corruption(q, "guest offset beyond the L1 table", offset);

    uint8_t *table;
    int rc = load_l2(q, l1_index, cache_only, &table);
    if (rc < 0)
        return rc;
    if (!table) {
        *mapping = (struct qcow2_mapping){.kind = QCOW2_CLUSTER_UNALLOCATED, .length = length};
        return 0;
    }

    /* Walk units while they continue the first one. */
    uint64_t position = offset, end = offset + length;
    bool first = true;
    while (position < end) {
        uint64_t cluster = position >> q->cluster_bits;
        uint64_t entry, bitmap;
        read_l2(q, table, cluster % q->l2_entries, &entry, &bitmap);
        uint64_t in_cluster = position & (q->cluster_size - 1);
        unsigned subcluster = q->extended_l2 ? (unsigned)(in_cluster / q->subcluster_size) : 0;
        enum qcow2_cluster_kind kind;
        if ((rc = unit_kind(q, cluster, entry, bitmap, subcluster, &kind)) < 0)
            return rc;
        uint64_t host = (entry & QCOW2_OFFSET_MASK) + in_cluster;
        bool copied = (entry & QCOW2_OFLAG_COPIED) != 0;
        if (first) {
            mapping->kind = kind;
            mapping->host_offset = kind == QCOW2_CLUSTER_COMPRESSED ? entry : host;
            mapping->copied = copied;
            first = false;
        } else {
            bool same = kind == mapping->kind && kind != QCOW2_CLUSTER_COMPRESSED &&
                        (kind != QCOW2_CLUSTER_NORMAL ||
                         (host == mapping->host_offset + (position - offset) && copied == mapping->copied));
            if (!same)
                break;
        }
        uint64_t unit_end = q->extended_l2 ? (position / q->subcluster_size + 1) * q->subcluster_size
                                           : (cluster + 1) << q->cluster_bits;
        position = unit_end < end ? unit_end : end;
        if (kind == QCOW2_CLUSTER_COMPRESSED)
            break;
    }
    if (mapping->kind == QCOW2_CLUSTER_COMPRESSED) {
        uint64_t cluster_end = ((offset >> q->cluster_bits) + 1) << q->cluster_bits;
        position = cluster_end < end ? cluster_end : end;
    }
    mapping->length = position - offset;
    return 0;
}

/* Write one L1 entry in place (the file driver aligns it for O_DIRECT). */
static int write_l1_entry(struct qcow2 *q, uint64_t l1_index)
{
    uint8_t buffer[8];
    qcow2_put_be64(buffer, q->l1_table[l1_index]);
    return qcow2_file_write(q, q->image.header.l1_table_offset + l1_index * 8, buffer, 8);
}

/* Give l1_index a table of its own: new, or a copy of one shared with a snapshot. */
static int allocate_l2(struct qcow2 *q, uint64_t l1_index, uint8_t **table)
{
    uint64_t old_offset = q->l1_table[l1_index] & QCOW2_OFFSET_MASK;
    uint8_t *copy = NULL;
    int rc;
    if (old_offset) {
        uint8_t *old;
        if ((rc = load_l2(q, l1_index, false, &old)) < 0)
            return rc;
        if (!(copy = malloc(q->cluster_size)))
            return -ENOMEM;
        memcpy(copy, old, q->cluster_size);
    }
    uint64_t new_offset;
    if ((rc = qcow2_alloc_clusters(q, 1, &new_offset)) < 0)
        goto out;
    if ((rc = qcow2_cache_get(&q->l2_cache, l1_index, new_offset, true, table)) < 0)
        goto out;
    if (copy)
        memcpy(*table, copy, q->cluster_size);
    /* Refcount, then the table, then the L1 entry that makes it reachable. */
    if ((rc = qcow2_cache_write_back(&q->refcount_cache)) < 0 ||
        (rc = qcow2_file_write(q, new_offset, *table, q->cluster_size)) < 0 || (rc = qcow2_file_flush(q)) < 0)
        goto out;
    uint64_t old_entry = q->l1_table[l1_index];
    q->l1_table[l1_index] = new_offset | QCOW2_OFLAG_COPIED;
    if ((rc = write_l1_entry(q, l1_index)) < 0) {
        q->l1_table[l1_index] = old_entry;
        goto out;
    }
    if (old_offset)
        rc = qcow2_refcount_update(q, old_offset, 1, -1);
out:
    free(copy);
    return rc;
}

int qcow2_l2_entry_get(struct qcow2 *q, uint64_t guest_cluster, bool allocate, uint64_t *entry, uint64_t *bitmap)
{
    uint64_t l1_index = guest_cluster / q->l2_entries;
    if (l1_index >= q->l1_size)
        return qcow2_signal_corruption(q, "guest cluster beyond the L1 table", guest_cluster << q->cluster_bits);
    uint8_t *table;
    int rc;
    if (allocate && !(q->l1_table[l1_index] & QCOW2_OFLAG_COPIED))
        rc = allocate_l2(q, l1_index, &table);
    else
        rc = load_l2(q, l1_index, false, &table);
    if (rc < 0)
        return rc;
    if (!table) {
        *entry = *bitmap = 0;
        return 0;
    }
    read_l2(q, table, guest_cluster % q->l2_entries, entry, bitmap);
    return 0;
}

int qcow2_l2_entry_set(struct qcow2 *q, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap)
{
    uint64_t l1_index = guest_cluster / q->l2_entries;
    uint8_t *table;
    int rc = load_l2(q, l1_index, false, &table);
    if (rc < 0)
        return rc;
    if (!table || !(q->l1_table[l1_index] & QCOW2_OFLAG_COPIED))
        return -EINVAL; /* the caller did not take the table with allocate */
    /* An entry pointing at a cluster must not reach the disk before that cluster's refcount. */
    if ((entry & QCOW2_OFFSET_MASK) && (rc = qcow2_cache_set_dependency(&q->l2_cache, &q->refcount_cache)) < 0)
        return rc;
    uint8_t *p = table + (guest_cluster % q->l2_entries) * q->l2_entry_size;
    qcow2_put_be64(p, entry);
    if (q->extended_l2)
        qcow2_put_be64(p + 8, bitmap);
    qcow2_cache_mark_dirty(&q->l2_cache, l1_index);
    return 0;
}

/* ---- busy guest clusters ---- */

static bool any_busy(const struct qcow2 *q, uint64_t first, uint64_t count)
{
    for (const struct qcow2_busy_cluster *b = q->busy; b; b = b->next)
        if (b->guest_cluster >= first && b->guest_cluster < first + count)
            return true;
    return false;
}

int qcow2_busy_acquire(struct qcow2 *q, uint64_t first, uint64_t count, struct qcow2_busy_cluster *marks)
{
    while (any_busy(q, first, count))
        pthread_cond_wait(&q->changed, &q->lock);
    for (uint64_t i = 0; i < count; i++) {
        marks[i].guest_cluster = first + i;
        marks[i].next = q->busy;
        q->busy = &marks[i];
    }
    return 0;
}

void qcow2_busy_release(struct qcow2 *q, uint64_t count, struct qcow2_busy_cluster *marks)
{
    for (uint64_t i = 0; i < count; i++) {
        for (struct qcow2_busy_cluster **link = &q->busy; *link; link = &(*link)->next) {
            if (*link == &marks[i]) {
                *link = marks[i].next;
                break;
            }
        }
    }
    pthread_cond_broadcast(&q->changed);
}

/* ---- data-transfer epochs ---- */

unsigned qcow2_data_io_begin(struct qcow2 *q)
{
    unsigned epoch = atomic_load(&q->epoch);
    atomic_fetch_add(&q->data_io[epoch], 1);
    return epoch;
}

void qcow2_data_io_end(struct qcow2 *q, unsigned epoch)
{
    if (atomic_fetch_sub(&q->data_io[epoch], 1) == 1 && atomic_load(&q->quiescing)) {
        pthread_mutex_lock(&q->quiesce_lock);
        pthread_cond_broadcast(&q->quiesce_drained);
        pthread_mutex_unlock(&q->quiesce_lock);
    }
}

void qcow2_quiesce_data_io(struct qcow2 *q)
{
    unsigned old = atomic_load(&q->epoch);
    atomic_store(&q->epoch, old ^ 1u);
    atomic_store(&q->quiescing, true);
    pthread_mutex_lock(&q->quiesce_lock);
    while (atomic_load(&q->data_io[old]) != 0)
        pthread_cond_wait(&q->quiesce_drained, &q->quiesce_lock);
    pthread_mutex_unlock(&q->quiesce_lock);
    atomic_store(&q->quiescing, false);
}
