/*
 * Changing the refcount width of an image (qemu-img amend -o refcount_bits),
 * as QEMU's qcow2_change_refcount_order does: every refcount is read,
 * checked to fit the new width, and written into a new refcount table and
 * new blocks appended past the end of the file; the header then switches
 * to them in one write, and the old table and blocks become free clusters.
 * A crash before the header write leaves the old structures whole (the new
 * clusters merely leak); after it, the new ones are complete.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_internal.h"

static uint64_t divide_up(uint64_t value, uint64_t divisor)
{
    return (value + divisor - 1) / divisor;
}

/* Every cluster's refcount, the old refcount structures counted as free; a too large one reported. */
static int refcounts_collect(struct qcow2 *q, uint64_t clusters, uint64_t new_max, uint64_t *counts,
                             struct qcow2_refcount_overflow *overflow)
{
    for (uint64_t i = 0; i < clusters; i++) {
        int rc = qcow2_refcount_get(q, i, &counts[i]);
        if (rc < 0)
            return rc;
        if (counts[i] > new_max) {
            overflow->offset = i << q->cluster_bits;
            overflow->refcount = counts[i];
            return -ERANGE;
        }
    }
    const struct qcow2_header *h = &q->image.header;
    uint64_t table_first = h->refcount_table_offset >> q->cluster_bits;
    for (uint64_t i = 0; i < h->refcount_table_clusters && table_first + i < clusters; i++)
        counts[table_first + i] = 0;
    for (uint64_t slot = 0; slot < q->refcount_table_entries; slot++) {
        uint64_t block = (q->refcount_table[slot] & ~QCOW2_REFTABLE_RESERVED_MASK) >> q->cluster_bits;
        if (block && block < clusters)
            counts[block] = 0;
    }
    return 0;
}

/*
 * Write blocks covering total clusters (the first `clusters` with counts,
 * the new structures at their end with 1) and the table after them.
 */
static int structures_write(struct qcow2 *q, uint32_t bits, const uint64_t *counts, uint64_t clusters,
                            uint64_t blocks, uint64_t table_clusters)
{
    uint64_t entries = q->cluster_size * 8 / bits, total = clusters + blocks + table_clusters;
    uint8_t *block = malloc(q->cluster_size);
    uint8_t *table = calloc(table_clusters, q->cluster_size);
    int rc = block && table ? 0 : -ENOMEM;
    for (uint64_t b = 0; rc == 0 && b < blocks; b++) {
        memset(block, 0, q->cluster_size);
        for (uint64_t i = b * entries; i < total && i < (b + 1) * entries; i++)
            qcow2_refcount_entry_set(block, bits, i - b * entries, i < clusters ? counts[i] : 1);
        uint64_t offset = (clusters + b) << q->cluster_bits;
        qcow2_put_be64(table + b * 8, offset);
        rc = qcow2_file_write(q, offset, block, q->cluster_size);
    }
    if (rc == 0)
        rc = qcow2_file_write(q, (clusters + blocks) << q->cluster_bits, table, table_clusters * q->cluster_size);
    free(block);
    free(table);
    return rc == 0 ? qcow2_file_flush(q) : rc;
}

/* After the header switched: the driver's view of the refcounts follows it. */
static int state_switch(struct qcow2 *q, uint32_t bits, uint64_t table_entries, uint64_t first_block,
                        uint64_t blocks)
{
    uint64_t *table = calloc(table_entries, sizeof(*table));
    if (!table)
        return -ENOMEM;
    for (uint64_t b = 0; b < blocks; b++)
        table[b] = (first_block + b) << q->cluster_bits;
    int rc = qcow2_cache_resize_keys(&q->refcount_cache, table_entries);
    if (rc < 0) {
        free(table);
        return rc;
    }
    qcow2_cache_drop_all(&q->refcount_cache);
    free(q->refcount_table);
    q->refcount_table = table;
    q->refcount_table_entries = table_entries;
    q->refcount_bits = bits;
    q->refcount_max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    q->refcount_block_entries = (uint32_t)(q->cluster_size * 8 / bits);
    q->free_cluster_hint = 0; /* the old structures left holes */
    return 0;
}

static int change_locked(struct qcow2 *q, uint32_t order, struct qcow2_refcount_overflow *overflow)
{
    uint32_t bits = 1u << order;
    uint64_t clusters = q->host_end >> q->cluster_bits;
    uint64_t *counts = calloc(clusters ? clusters : 1, sizeof(*counts));
    if (!counts)
        return -ENOMEM;
    int rc = refcounts_collect(q, clusters, bits == 64 ? UINT64_MAX : (1ull << bits) - 1, counts, overflow);
    /* The new blocks also count themselves and the table: grow both until they cover everything. */
    uint64_t entries = q->cluster_size * 8 / bits, blocks = 0, table_clusters = 0;
    for (;;) {
        uint64_t total = clusters + blocks + table_clusters;
        uint64_t need_blocks = divide_up(total, entries), need_table = divide_up(need_blocks * 8, q->cluster_size);
        if (need_blocks == blocks && need_table == table_clusters)
            break;
        blocks = need_blocks;
        table_clusters = need_table;
    }
    if (rc == 0 && table_clusters > UINT32_MAX)
        rc = -EFBIG;
    if (rc == 0)
        rc = structures_write(q, bits, counts, clusters, blocks, table_clusters);
    free(counts);
    if (rc < 0)
        return rc;
    struct qcow2_header *h = &q->image.header, saved = *h;
    h->refcount_order = order;
    h->refcount_table_offset = (clusters + blocks) << q->cluster_bits;
    h->refcount_table_clusters = (uint32_t)table_clusters;
    if ((rc = qcow2_header_write(q)) < 0) {
        *h = saved; /* the old structures are untouched: the new clusters leak, nothing more */
        return rc;
    }
    qcow2_host_end_grow(q, (clusters + blocks + table_clusters) << q->cluster_bits);
    return state_switch(q, bits, table_clusters * q->cluster_size / 8, clusters, blocks);
}

int qcow2_image_set_refcount_order(struct bdev *bdev, uint32_t order, struct qcow2_refcount_overflow *overflow)
{
    struct qcow2 *q = bdev->driver;
    if (order > 6)
        return -EINVAL;
    if (q->image.header.version < 3 && order != 4)
        return -ENOTSUP;
    if (q->image.header.refcount_order == order)
        return 0;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    return qcow2_tables_end(q, change_locked(q, order, overflow));
}
