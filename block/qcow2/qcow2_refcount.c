/*
 * Refcounts and cluster allocation.  Every function runs with the image
 * lock held.
 *
 * Refcount blocks are found through the refcount table; a slot without a
 * block means every cluster it covers is free.  A new block is placed inside
 * the range it describes whenever it can be, so it counts itself; when the
 * table itself is too small, a larger one is written past the end of
 * everything allocated, together with the blocks that cover it, and the
 * header is switched to it after a flush (so a crash leaves either table
 * whole, at worst leaking clusters).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_internal.h"

static uint64_t read_entry(const struct qcow2 *q, const uint8_t *block, uint64_t index)
{
    return qcow2_refcount_entry_get(block, q->refcount_bits, index);
}

static void write_entry(const struct qcow2 *q, uint8_t *block, uint64_t index, uint64_t value)
{
    qcow2_refcount_entry_set(block, q->refcount_bits, index, value);
}

static uint64_t block_offset_of_slot(const struct qcow2 *q, uint64_t slot)
{
    return slot < q->refcount_table_entries ? q->refcount_table[slot] & ~QCOW2_REFTABLE_RESERVED_MASK : 0;
}

/* Load the refcount block of a slot that has one. */
static int load_block(struct qcow2 *q, uint64_t slot, uint8_t **block)
{
    uint64_t offset = block_offset_of_slot(q, slot);
    if (offset & (q->cluster_size - 1) || offset < q->cluster_size)
        return qcow2_signal_corruption(q, "refcount block offset", offset);
    return qcow2_cache_get(&q->refcount_cache, slot, offset, false, block);
}

int qcow2_refcount_get(struct qcow2 *q, uint64_t cluster_index, uint64_t *refcount)
{
    uint64_t slot = cluster_index / q->refcount_block_entries;
    if (!block_offset_of_slot(q, slot)) {
        *refcount = 0;
        return 0;
    }
    uint8_t *block;
    int rc = load_block(q, slot, &block);
    if (rc < 0)
        return rc;
    *refcount = read_entry(q, block, cluster_index % q->refcount_block_entries);
    return 0;
}

int qcow2_count_referenced(struct qcow2 *q, uint64_t end_cluster, uint64_t limit, uint64_t *count)
{
    *count = 0;
    for (uint64_t slot = 0; slot * q->refcount_block_entries < end_cluster && *count < limit; slot++) {
        uint64_t offset = block_offset_of_slot(q, slot);
        /* A block that cannot be one (misaligned, outside the file) counts nothing, as an absent one. */
        if (!offset || offset & (q->cluster_size - 1) || offset < q->cluster_size ||
            offset + q->cluster_size > q->file->size)
            continue;
        uint8_t *block;
        int rc = qcow2_cache_get(&q->refcount_cache, slot, offset, false, &block);
        if (rc < 0)
            return rc;
        uint64_t first = slot * q->refcount_block_entries;
        for (uint64_t i = 0; i < q->refcount_block_entries && first + i < end_cluster && *count < limit; i++)
            *count += read_entry(q, block, i) != 0;
    }
    return 0;
}

/* Write the refcount table cluster holding slot (tables are written whole: O_DIRECT-friendly). */
static int write_table_cluster(struct qcow2 *q, uint64_t slot)
{
    uint64_t per_cluster = q->cluster_size / 8;
    uint64_t first = slot / per_cluster * per_cluster;
    uint8_t *buffer;
    if (posix_memalign((void **)&buffer, 4096, q->cluster_size) != 0)
        return -ENOMEM;
    for (uint64_t i = 0; i < per_cluster; i++)
        qcow2_put_be64(buffer + i * 8, first + i < q->refcount_table_entries ? q->refcount_table[first + i] : 0);
    int rc = qcow2_file_write(q, q->image.header.refcount_table_offset + first * 8, buffer, q->cluster_size);
    free(buffer);
    return rc;
}

static int grow_table(struct qcow2 *q, uint64_t min_entries, uint64_t reserved_end);
static int find_free(struct qcow2 *q, uint64_t count, uint64_t from, uint64_t *first);

/*
 * Give slot a refcount block.  Clusters [reserved_start, reserved_end) are
 * about to be allocated and must not hold it.
 */
static int create_block(struct qcow2 *q, uint64_t slot, uint64_t reserved_start, uint64_t reserved_end)
{
    uint64_t slot_start = slot * q->refcount_block_entries, slot_end = slot_start + q->refcount_block_entries;
    uint64_t place = slot_start;
    if (place >= reserved_start && place < reserved_end)
        place = reserved_end;
    bool inside = place < slot_end; /* every cluster of a slot without a block is free */
    int rc;
    if (!inside && (rc = find_free(q, 1, reserved_end, &place)) < 0)
        return rc;

    if (qcow2_overlaps_metadata(q, place * q->cluster_size, q->cluster_size))
        return qcow2_signal_corruption(q, "a cluster counted as free holds metadata", place * q->cluster_size);
    qcow2_host_end_grow(q, (place + 1) * q->cluster_size);
    uint8_t *block;
    rc = qcow2_cache_get(&q->refcount_cache, slot, place * q->cluster_size, true, &block);
    if (rc < 0)
        return rc;
    if (inside)
        write_entry(q, block, place - slot_start, 1);
    /* The block reaches the disk before the table entry that points to it. */
    rc = qcow2_file_write(q, place * q->cluster_size, block, q->cluster_size);
    if (rc == 0)
        rc = qcow2_file_flush(q);
    if (rc < 0) {
        qcow2_cache_discard(&q->refcount_cache, slot);
        return rc;
    }
    /* Written just now: clean until the next change. */
    qcow2_cache_discard(&q->refcount_cache, slot);
    q->refcount_table[slot] = place * q->cluster_size;
    rc = write_table_cluster(q, slot);
    if (rc < 0) {
        q->refcount_table[slot] = 0;
        return rc;
    }
    if (!inside)
        rc = qcow2_refcount_update(q, place * q->cluster_size, 1, 1);
    return rc;
}

static int ensure_blocks(struct qcow2 *q, uint64_t first, uint64_t count)
{
    uint64_t last_slot = (first + count - 1) / q->refcount_block_entries;
    if (last_slot >= q->refcount_table_entries) {
        int rc = grow_table(q, last_slot + 1, first + count);
        if (rc < 0)
            return rc;
    }
    for (uint64_t slot = first / q->refcount_block_entries; slot <= last_slot; slot++) {
        if (!block_offset_of_slot(q, slot)) {
            int rc = create_block(q, slot, first, first + count);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int qcow2_refcount_update(struct qcow2 *q, uint64_t offset, uint64_t count, int64_t delta)
{
    uint64_t first = offset / q->cluster_size;
    int rc;
    if (delta > 0 && (rc = ensure_blocks(q, first, count)) < 0)
        return rc;
    /* Decrements may only reach the disk after the L2 entries that dropped the clusters. */
    if (delta < 0 && (rc = qcow2_cache_set_dependency(&q->refcount_cache, &q->l2_cache)) < 0)
        return rc;
    for (uint64_t i = first; i < first + count; i++) {
        uint64_t slot = i / q->refcount_block_entries;
        if (!block_offset_of_slot(q, slot))
            return qcow2_signal_corruption(q, "refcount of a cluster in use is missing", i * q->cluster_size);
        uint8_t *block;
        if ((rc = load_block(q, slot, &block)) < 0)
            return rc;
        uint64_t index = i % q->refcount_block_entries;
        uint64_t old = read_entry(q, block, index);
        if (delta < 0 && old < (uint64_t)-delta)
            return qcow2_signal_corruption(q, "refcount below zero", i * q->cluster_size);
        if (delta > 0 && q->refcount_max - old < (uint64_t)delta)
            return -ERANGE;
        uint64_t value = old + (uint64_t)delta;
        write_entry(q, block, index, value);
        qcow2_cache_mark_dirty(&q->refcount_cache, slot);
        if (value == 0 && i < q->free_cluster_hint)
            q->free_cluster_hint = i;
        /* A freed cluster takes no more compressed data: someone else may get it. */
        if (value == 0 && q->compressed_tail / q->cluster_size == i)
            q->compressed_tail = 0;
    }
    return 0;
}

/* The first run of count free clusters at or after from (and the hint). */
static int find_free(struct qcow2 *q, uint64_t count, uint64_t from, uint64_t *first)
{
    bool from_hint = from <= q->free_cluster_hint;
    uint64_t start = from_hint ? q->free_cluster_hint : from;
    uint64_t run = 0;
    for (uint64_t i = start;; i++) {
        uint64_t refcount;
        int rc = qcow2_refcount_get(q, i, &refcount);
        if (rc < 0)
            return rc;
        if (refcount) {
            run = 0;
            start = i + 1;
            /* Everything scanned so far is in use: later searches start past it. */
            if (from_hint && q->free_cluster_hint == i)
                q->free_cluster_hint = i + 1;
            continue;
        }
        if (++run == count) {
            *first = start;
            return 0;
        }
    }
}

int qcow2_alloc_clusters(struct qcow2 *q, uint64_t count, uint64_t *offset)
{
    uint64_t first;
    int rc = find_free(q, count, 0, &first);
    if (rc < 0)
        return rc;
    if ((rc = ensure_blocks(q, first, count)) < 0)
        return rc;
    /* Making blocks may have taken clusters of the run: search again from there. */
    for (uint64_t i = first; i < first + count; i++) {
        uint64_t refcount;
        if ((rc = qcow2_refcount_get(q, i, &refcount)) < 0)
            return rc;
        if (refcount)
            return qcow2_alloc_clusters(q, count, offset);
    }
    /* Free by the refcounts, yet holding metadata: the refcounts lie. */
    if (qcow2_overlaps_metadata(q, first * q->cluster_size, count * q->cluster_size))
        return qcow2_signal_corruption(q, "a cluster counted as free holds metadata", first * q->cluster_size);
    if ((rc = qcow2_refcount_update(q, first * q->cluster_size, count, 1)) < 0)
        return rc;
    if (first == q->free_cluster_hint)
        q->free_cluster_hint = first + count;
    qcow2_host_end_grow(q, (first + count) * q->cluster_size);
    *offset = first * q->cluster_size;
    return 0;
}

int qcow2_alloc_bytes(struct qcow2 *q, uint64_t length, uint64_t *offset)
{
    uint64_t tail = q->compressed_tail;
    uint64_t in_cluster = tail & (q->cluster_size - 1);
    int rc;
    /* The shared cluster's refcount counts the compressed clusters in it (while it can). */
    rc = tail && in_cluster && in_cluster + length <= q->cluster_size
             ? qcow2_refcount_update(q, tail & ~(q->cluster_size - 1), 1, 1)
             : -ERANGE;
    if (rc == 0)
        *offset = tail;
    else if (rc != -ERANGE || (rc = qcow2_alloc_clusters(q, 1, offset)) < 0)
        return rc;
    q->compressed_tail = *offset + length;
    return 0;
}

int qcow2_free_clusters(struct qcow2 *q, uint64_t offset, uint64_t count)
{
    qcow2_quiesce_data_io(q);
    return qcow2_refcount_update(q, offset, count, -1);
}

/* The host clusters an L2 entry holds a reference to: [*first, *first + *count), 0 clusters for none. */
static void entry_clusters(const struct qcow2 *q, uint64_t entry, uint64_t *first, uint64_t *count)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t host, length;
        qcow2_compressed_descriptor(&q->image.header, entry, &host, &length);
        *first = host / q->cluster_size;
        *count = (host + length - 1) / q->cluster_size - *first + 1;
        return;
    }
    uint64_t host = entry & QCOW2_OFFSET_MASK;
    *first = host / q->cluster_size;
    *count = host ? 1 : 0;
}

int qcow2_free_l2_entry_targets(struct qcow2 *q, const uint64_t *entries, size_t count)
{
    if (q->data_external || count == 0)
        return 0; /* clusters in a data file are not refcounted */
    uint64_t run_first = 0, run_count = 0;
    bool waited = false;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i <= count; i++) {
        uint64_t first = 0, clusters = 0;
        if (i < count)
            entry_clusters(q, entries[i], &first, &clusters);
        if (i < count && clusters == 0)
            continue;
        /* Adjacent clusters are decremented together; a repeated one (packed compressed data) separately. */
        if (i < count && run_count && first == run_first + run_count) {
            run_count += clusters;
            continue;
        }
        if (run_count && !waited) {
            /* One wait covers every cluster: the entries were all changed before it. */
            qcow2_quiesce_data_io(q);
            waited = true;
        }
        if (run_count)
            rc = qcow2_refcount_update(q, run_first * q->cluster_size, run_count, -1);
        run_first = first;
        run_count = clusters;
    }
    return rc;
}

int qcow2_free_l2_entry_target(struct qcow2 *q, uint64_t entry)
{
    return qcow2_free_l2_entry_targets(q, &entry, 1);
}

/*
 * Write a refcount table of at least min_entries past everything in use
 * (and past reserved_end), with the refcount blocks that count it, switch
 * the header to it and free the old one.
 */
static int grow_table(struct qcow2 *q, uint64_t min_entries, uint64_t reserved_end)
{
    uint64_t per_cluster = q->cluster_size / 8;
    uint64_t entries = q->refcount_table_entries * 2;
    if (entries < min_entries)
        entries = min_entries;
    uint64_t table_clusters = (entries + per_cluster - 1) / per_cluster;
    entries = table_clusters * per_cluster;
    if (table_clusters * q->cluster_size > QCOW2_MAX_REFTABLE_BYTES)
        return -EFBIG;

    uint64_t area = (q->host_end + q->cluster_size - 1) / q->cluster_size;
    if (area < reserved_end)
        area = reserved_end;
    /* The area holds the table then the blocks; count the blocks until stable. */
    uint64_t blocks = 0;
    for (;;) {
        uint64_t end = area + table_clusters + blocks, needed = 0;
        for (uint64_t slot = area / q->refcount_block_entries; slot * q->refcount_block_entries < end; slot++)
            if (!block_offset_of_slot(q, slot))
                needed++;
        if (needed == blocks)
            break;
        blocks = needed;
    }
    uint64_t area_end = area + table_clusters + blocks;
    if (qcow2_overlaps_metadata(q, area * q->cluster_size, (area_end - area) * q->cluster_size))
        return qcow2_signal_corruption(q, "metadata lies past the end of the image", area * q->cluster_size);
    if (area_end / q->refcount_block_entries >= entries)
        return -EFBIG;

    qcow2_host_end_grow(q, area_end * q->cluster_size);

    uint64_t *table = calloc(entries, sizeof(*table));
    uint8_t *buffer;
    if (!table || posix_memalign((void **)&buffer, 4096, q->cluster_size) != 0) {
        free(table);
        return -ENOMEM;
    }
    memcpy(table, q->refcount_table, q->refcount_table_entries * sizeof(*table));

    int rc = 0;
    uint64_t next_block = area + table_clusters;
    for (uint64_t slot = area / q->refcount_block_entries; rc == 0 && slot * q->refcount_block_entries < area_end;
         slot++) {
        uint64_t slot_start = slot * q->refcount_block_entries;
        uint64_t from = area > slot_start ? area : slot_start;
        uint64_t to = area_end < slot_start + q->refcount_block_entries ? area_end : slot_start + q->refcount_block_entries;
        if (block_offset_of_slot(q, slot)) {
            /* An existing block counts part of the area: through the cache. */
            rc = qcow2_refcount_update(q, from * q->cluster_size, to - from, 1);
            continue;
        }
        memset(buffer, 0, q->cluster_size);
        for (uint64_t i = from; i < to; i++)
            write_entry(q, buffer, i - slot_start, 1);
        table[slot] = next_block * q->cluster_size;
        rc = qcow2_file_write(q, next_block * q->cluster_size, buffer, q->cluster_size);
        next_block++;
    }
    for (uint64_t c = 0; rc == 0 && c < table_clusters; c++) {
        for (uint64_t i = 0; i < per_cluster; i++)
            qcow2_put_be64(buffer + i * 8, table[c * per_cluster + i]);
        rc = qcow2_file_write(q, (area + c) * q->cluster_size, buffer, q->cluster_size);
    }
    /* Blocks of the old table must be on disk too before the switch. */
    if (rc == 0)
        rc = qcow2_cache_write_back(&q->refcount_cache);
    if (rc == 0)
        rc = qcow2_file_flush(q);
    free(buffer);
    if (rc < 0) {
        free(table);
        return rc;
    }

    uint64_t old_offset = q->image.header.refcount_table_offset;
    uint64_t old_clusters = q->image.header.refcount_table_clusters;
    uint8_t field[12];
    qcow2_put_be64(field, area * q->cluster_size);
    qcow2_put_be32(field + 8, (uint32_t)table_clusters);
    rc = qcow2_file_write(q, 48, field, sizeof(field)); /* refcount_table_offset and _clusters */
    if (rc == 0)
        rc = qcow2_file_flush(q);
    if (rc < 0) {
        free(table);
        return rc;
    }
    free(q->refcount_table);
    q->refcount_table = table;
    q->refcount_table_entries = entries;
    q->image.header.refcount_table_offset = area * q->cluster_size;
    q->image.header.refcount_table_clusters = (uint32_t)table_clusters;
    if ((rc = qcow2_cache_resize_keys(&q->refcount_cache, entries)) < 0)
        return rc;
    /* The old table is referenced by nothing else: no data transfer can be using it. */
    return qcow2_refcount_update(q, old_offset, old_clusters, -1);
}
