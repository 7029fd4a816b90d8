/*
 * Metadata overlap checks, as QEMU's: before a cluster is handed out (or a
 * guest write trusts an L2 entry), make sure it holds none of the image's
 * own metadata.  In a consistent image this never fires; in one whose
 * refcounts or tables lie (damaged or hostile) it turns what would
 * overwrite the header or a table into a corruption error.  Lock held.
 */
#include "block/qcow2/qcow2_internal.h"

static bool ranges_overlap(uint64_t a, uint64_t a_length, uint64_t b, uint64_t b_length)
{
    return a_length && b_length && a < b + b_length && b < a + a_length;
}

bool qcow2_overlaps_fixed_metadata(const struct qcow2 *q, uint64_t offset, uint64_t length)
{
    const struct qcow2_header *h = &q->image.header;
    uint64_t l1_bytes = ((uint64_t)q->l1_size * 8 + q->cluster_size - 1) & ~(q->cluster_size - 1);
    return ranges_overlap(offset, length, 0, q->cluster_size) ||
           ranges_overlap(offset, length, h->l1_table_offset, l1_bytes) ||
           ranges_overlap(offset, length, h->refcount_table_offset,
                          (uint64_t)h->refcount_table_clusters << h->cluster_bits) ||
           (h->nb_snapshots && ranges_overlap(offset, length, h->snapshots_offset, q->cluster_size));
}

bool qcow2_overlaps_metadata(const struct qcow2 *q, uint64_t offset, uint64_t length)
{
    if (qcow2_overlaps_fixed_metadata(q, offset, length))
        return true;
    for (uint64_t i = 0; i < q->refcount_table_entries; i++) {
        uint64_t block = q->refcount_table[i] & ~QCOW2_REFTABLE_RESERVED_MASK;
        if (block && ranges_overlap(offset, length, block, q->cluster_size))
            return true;
    }
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t table = q->l1_table[i] & QCOW2_OFFSET_MASK;
        if (table && ranges_overlap(offset, length, table, q->cluster_size))
            return true;
    }
    return false;
}
