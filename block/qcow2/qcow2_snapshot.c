/*
 * Internal snapshots: create, apply (revert to) and delete, as QEMU's
 * qcow2 driver does them, so either tool reads what the other made.
 *
 * A snapshot is a copy of the active L1 table plus a table entry; every
 * L2 table and data cluster the copy reaches gains a reference, which
 * clears the COPIED flags of the active image's entries (its next write
 * to such a cluster copies it first).  These run with no guest I/O, hold
 * the metadata lock throughout, and walk L2 tables on disk rather than
 * through the L2 cache (keyed by the active L1's indexes): the cache is
 * written back and emptied first.
 *
 * Crash order: what is allocated is written and flushed before anything
 * points to it, references are added before the table entry that makes
 * them due and dropped only after the entry or L1 that held them is gone,
 * so an interrupted operation leaves leaks (repaired by check -r leaks).
 * As in QEMU, the COPIED flags are brought in line last: an interruption
 * just before that is reported by check and repaired by check -r all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_internal.h"

#define SNAPSHOT_EXTRA_SIZE 24u /* vm_state_size_large, disk_size, icount: what QEMU 7.2 writes */
#define MAX_NAME 65535u

static uint64_t clusters_for(const struct qcow2 *q, uint64_t bytes)
{
    return (bytes + q->cluster_size - 1) >> q->cluster_bits;
}

/* ---- walking an L1 table ---- */

int qcow2_l2_table_read(struct qcow2 *q, uint64_t l1_entry, uint64_t *offset, uint8_t *table)
{
    *offset = l1_entry & QCOW2_OFFSET_MASK;
    if (!*offset)
        return 0;
    if ((*offset & (q->cluster_size - 1)) || *offset > q->file->size || q->cluster_size > q->file->size - *offset)
        return qcow2_signal_corruption(q, "L2 table offset", *offset);
    return qcow2_file_read(q, *offset, table, q->cluster_size);
}

/* Add delta to the refcount of every cluster an L1 table reaches: its L2 tables and what they map. */
static int references_change(struct qcow2 *q, const uint64_t *l1, uint32_t l1_size, int delta)
{
    uint8_t *table = malloc(q->cluster_size);
    if (!table)
        return -ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < l1_size; i++) {
        uint64_t l2_offset;
        if ((rc = qcow2_l2_table_read(q, l1[i], &l2_offset, table)) < 0 || !l2_offset)
            continue;
        for (uint32_t e = 0; rc == 0 && e < q->l2_entries; e++) {
            uint64_t entry = qcow2_be64(table + (uint64_t)e * q->l2_entry_size);
            if (entry & QCOW2_OFLAG_COMPRESSED) {
                uint64_t host, length;
                qcow2_compressed_descriptor(&q->image.header, entry, &host, &length);
                uint64_t first = host >> q->cluster_bits, last = (host + length - 1) >> q->cluster_bits;
                rc = qcow2_refcount_update(q, first << q->cluster_bits, last - first + 1, delta);
            } else if ((entry & QCOW2_OFFSET_MASK) && !q->data_external) {
                rc = qcow2_refcount_update(q, entry & QCOW2_OFFSET_MASK, 1, delta);
            }
        }
        if (rc == 0)
            rc = qcow2_refcount_update(q, l2_offset, 1, delta);
    }
    free(table);
    /* QEMU says "Invalid argument" when a refcount would overflow (refcount_bits=1). */
    return rc == -ERANGE ? -EINVAL : rc;
}

/* Whether adding a reference to everything l1 reaches would overflow a refcount (checked before changing any). */
static int references_check_room(struct qcow2 *q, const uint64_t *l1, uint32_t l1_size)
{
    uint8_t *table = malloc(q->cluster_size);
    if (!table)
        return -ENOMEM;
    int rc = 0;
    uint64_t refcount;
    for (uint32_t i = 0; rc == 0 && i < l1_size; i++) {
        uint64_t l2_offset;
        if ((rc = qcow2_l2_table_read(q, l1[i], &l2_offset, table)) < 0 || !l2_offset)
            continue;
        if ((rc = qcow2_refcount_get(q, l2_offset >> q->cluster_bits, &refcount)) == 0 && refcount >= q->refcount_max)
            rc = -EINVAL;
        for (uint32_t e = 0; rc == 0 && e < q->l2_entries; e++) {
            uint64_t entry = qcow2_be64(table + (uint64_t)e * q->l2_entry_size);
            uint64_t host = entry & QCOW2_OFFSET_MASK;
            if (entry & QCOW2_OFLAG_COMPRESSED) {
                uint64_t length;
                qcow2_compressed_descriptor(&q->image.header, entry, &host, &length);
            } else if (!host || q->data_external) {
                continue;
            }
            if ((rc = qcow2_refcount_get(q, host >> q->cluster_bits, &refcount)) == 0 && refcount >= q->refcount_max)
                rc = -EINVAL;
        }
    }
    free(table);
    return rc;
}

int qcow2_l1_write(struct qcow2 *q, uint64_t offset, const uint64_t *l1, uint32_t l1_size, uint32_t slots)
{
    uint64_t bytes = (uint64_t)slots * 8;
    uint8_t *encoded = calloc(1, bytes ? bytes : 1);
    if (!encoded)
        return -ENOMEM;
    for (uint32_t i = 0; i < l1_size; i++)
        qcow2_put_be64(encoded + (uint64_t)i * 8, l1[i]);
    int rc = bytes ? qcow2_file_write(q, offset, encoded, bytes) : 0;
    free(encoded);
    return rc;
}

/*
 * Set the COPIED flag of the active image's L1 and L2 entries exactly
 * where the cluster they point to has one reference, written to disk.
 */
int qcow2_copied_flags_fix(struct qcow2 *q)
{
    uint8_t *table = malloc(q->cluster_size);
    if (!table)
        return -ENOMEM;
    int rc = 0;
    bool l1_changed = false;
    uint64_t refcount;
    for (uint32_t i = 0; rc == 0 && i < q->l1_size; i++) {
        uint64_t l2_offset;
        if ((rc = qcow2_l2_table_read(q, q->l1_table[i], &l2_offset, table)) < 0 || !l2_offset)
            continue;
        bool changed = false;
        for (uint32_t e = 0; rc == 0 && e < q->l2_entries; e++) {
            uint8_t *slot = table + (uint64_t)e * q->l2_entry_size;
            uint64_t entry = qcow2_be64(slot), host = entry & QCOW2_OFFSET_MASK;
            if ((entry & QCOW2_OFLAG_COMPRESSED) || !host)
                continue;
            bool sole = q->data_external;
            if (!sole && (rc = qcow2_refcount_get(q, host >> q->cluster_bits, &refcount)) == 0)
                sole = refcount == 1;
            uint64_t fixed = sole ? entry | QCOW2_OFLAG_COPIED : entry & ~QCOW2_OFLAG_COPIED;
            if (rc == 0 && fixed != entry) {
                qcow2_put_be64(slot, fixed);
                changed = true;
            }
        }
        if (rc == 0 && changed)
            rc = qcow2_file_write(q, l2_offset, table, q->cluster_size);
        if (rc == 0 && (rc = qcow2_refcount_get(q, l2_offset >> q->cluster_bits, &refcount)) == 0) {
            uint64_t fixed = refcount == 1 ? q->l1_table[i] | QCOW2_OFLAG_COPIED : q->l1_table[i] & ~QCOW2_OFLAG_COPIED;
            l1_changed |= fixed != q->l1_table[i];
            q->l1_table[i] = fixed;
        }
    }
    free(table);
    if (rc == 0 && l1_changed)
        rc = qcow2_l1_write(q, q->image.header.l1_table_offset, q->l1_table, q->l1_size, q->l1_size);
    return rc == 0 ? qcow2_file_flush(q) : rc;
}

/* Write the refcount cache back and flush: what was counted is on disk before anything relies on it. */
static int refcounts_settle(struct qcow2 *q)
{
    int rc = qcow2_cache_write_back(&q->refcount_cache);
    return rc == 0 ? qcow2_file_flush(q) : rc;
}

/* ---- the snapshot table ---- */

static int read_from_image(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    return qcow2_file_read(opaque, offset, buffer, length);
}

int qcow2_snapshots_load(struct qcow2 *q, struct qcow2_snapshot_table *table)
{
    int rc = qcow2_snapshot_table_read_raw(read_from_image, q, &q->image.header, q->file->size, table);
    if (rc == -EINVAL || rc == -EFBIG)
        return qcow2_signal_corruption(q, "snapshot table", q->image.header.snapshots_offset);
    return rc;
}

/* Point the header at a new table of count entries (bytes, size long), then free the old one. */
static int table_replace(struct qcow2 *q, const uint8_t *bytes, uint64_t size, uint32_t count, uint64_t old_size)
{
    struct qcow2_header *h = &q->image.header;
    uint64_t new_offset = 0;
    int rc = 0;
    if (count) {
        if ((rc = qcow2_alloc_clusters(q, clusters_for(q, size), &new_offset)) < 0)
            return rc;
        qcow2_host_end_grow(q, new_offset + clusters_for(q, size) * q->cluster_size);
        if ((rc = refcounts_settle(q)) == 0 && (rc = qcow2_file_write(q, new_offset, bytes, size)) == 0)
            rc = qcow2_file_flush(q);
    }
    uint64_t old_offset = h->snapshots_offset;
    uint32_t old_count = h->nb_snapshots;
    if (rc == 0) {
        h->snapshots_offset = new_offset;
        h->nb_snapshots = count;
        if ((rc = qcow2_header_write(q)) < 0) {
            h->snapshots_offset = old_offset;
            h->nb_snapshots = old_count;
        }
    }
    if (rc < 0) {
        if (new_offset)
            qcow2_free_clusters(q, new_offset, clusters_for(q, size));
        return rc;
    }
    if (old_count && old_offset)
        rc = qcow2_free_clusters(q, old_offset, clusters_for(q, old_size));
    return rc;
}

/* QEMU's lookup: an id first, then a name; the first match.  -ENOENT when none. */
static int table_find(const struct qcow2_snapshot_table *table, const char *id_or_name)
{
    for (uint32_t i = 0; i < table->count; i++)
        if (strcmp(table->entries[i].id, id_or_name) == 0)
            return (int)i;
    for (uint32_t i = 0; i < table->count; i++)
        if (strcmp(table->entries[i].name, id_or_name) == 0)
            return (int)i;
    return -ENOENT;
}

/* A snapshot's L1 table, checked to lie inside the file. */
int qcow2_snapshot_l1_read(struct qcow2 *q, const struct qcow2_snapshot *snapshot, uint64_t **out)
{
    uint64_t bytes = (uint64_t)snapshot->l1_size * 8;
    if (bytes > QCOW2_MAX_L1_BYTES || (snapshot->l1_table_offset & (q->cluster_size - 1)) ||
        snapshot->l1_table_offset > q->file->size || bytes > q->file->size - snapshot->l1_table_offset ||
        (bytes && !snapshot->l1_table_offset))
        return qcow2_signal_corruption(q, "snapshot L1 table", snapshot->l1_table_offset);
    uint64_t *l1 = calloc(snapshot->l1_size ? snapshot->l1_size : 1, sizeof(*l1));
    if (!l1)
        return -ENOMEM;
    int rc = bytes ? qcow2_file_read(q, snapshot->l1_table_offset, l1, bytes) : 0;
    for (uint32_t i = 0; rc == 0 && i < snapshot->l1_size; i++)
        l1[i] = qcow2_be64((const uint8_t *)&l1[i]);
    if (rc < 0) {
        free(l1);
        return rc;
    }
    *out = l1;
    return 0;
}

/* The next id, as QEMU numbers them: one past the largest numeric id. */
static unsigned long next_id(const struct qcow2_snapshot_table *table)
{
    unsigned long largest = 0;
    for (uint32_t i = 0; i < table->count; i++) {
        unsigned long id = strtoul(table->entries[i].id, NULL, 10);
        if (id > largest)
            largest = id;
    }
    return largest + 1;
}

/* A table entry in QEMU 7.2's v3 form; returns its size padded to 8, or 0 when it cannot be encoded. */
static size_t entry_encode(uint8_t *out, size_t room, uint64_t l1_offset, uint32_t l1_size, const char *id,
                           const char *name, uint32_t date_sec, uint32_t date_nsec, uint64_t disk_size)
{
    size_t id_length = strlen(id), name_length = strlen(name);
    size_t size = QCOW2_SNAPSHOT_FIXED_SIZE + SNAPSHOT_EXTRA_SIZE + id_length + name_length;
    size_t padded = (size + 7) & ~(size_t)7;
    if (name_length > MAX_NAME || padded > room)
        return 0;
    memset(out, 0, padded);
    qcow2_put_be64(out, l1_offset);
    qcow2_put_be32(out + 8, l1_size);
    out[12] = (uint8_t)(id_length >> 8);
    out[13] = (uint8_t)id_length;
    out[14] = (uint8_t)(name_length >> 8);
    out[15] = (uint8_t)name_length;
    qcow2_put_be32(out + 16, date_sec);
    qcow2_put_be32(out + 20, date_nsec);
    /* vm_clock_nsec, vm_state_size (32 and 64 bits) and icount are 0, as qemu-img leaves them. */
    qcow2_put_be32(out + 36, SNAPSHOT_EXTRA_SIZE);
    qcow2_put_be64(out + QCOW2_SNAPSHOT_FIXED_SIZE + 8, disk_size);
    memcpy(out + QCOW2_SNAPSHOT_FIXED_SIZE + SNAPSHOT_EXTRA_SIZE, id, id_length);
    memcpy(out + QCOW2_SNAPSHOT_FIXED_SIZE + SNAPSHOT_EXTRA_SIZE + id_length, name, name_length);
    return padded;
}

/* Lock, write back and empty the L2 cache: these operations read L2 tables from the file. */
int qcow2_tables_begin(struct qcow2 *q)
{
    if (q->readonly)
        return -EROFS;
    pthread_mutex_lock(&q->lock);
    if (q->corrupt) {
        pthread_mutex_unlock(&q->lock);
        return -EIO;
    }
    int rc = qcow2_flush_metadata(q);
    if (rc < 0) {
        pthread_mutex_unlock(&q->lock);
        return rc;
    }
    qcow2_cache_drop_all(&q->l2_cache);
    return 0;
}

int qcow2_tables_end(struct qcow2 *q, int rc)
{
    int flushed = qcow2_flush_metadata(q);
    pthread_mutex_unlock(&q->lock);
    return rc < 0 ? rc : flushed;
}

/* ---- reading a snapshot ---- */

int qcow2_snapshot_view_load(struct qcow2 *q, const char *id, const char *name, const char *id_or_name)
{
    struct qcow2_snapshot_table table;
    int rc = qcow2_snapshots_load(q, &table);
    if (rc < 0)
        return rc;
    int index = -ENOENT;
    if (id_or_name) {
        index = table_find(&table, id_or_name);
    } else {
        for (uint32_t i = 0; i < table.count && index < 0; i++)
            if ((!id || !strcmp(table.entries[i].id, id)) && (!name || !strcmp(table.entries[i].name, name)))
                index = (int)i;
    }
    uint64_t *snapshot_l1 = NULL;
    rc = index >= 0 ? qcow2_snapshot_l1_read(q, &table.entries[index], &snapshot_l1) : -ENOENT;
    if (rc == 0) {
        /* The image's size stays: past the snapshot's own L1 everything reads as unallocated. */
        uint32_t l1_size = table.entries[index].l1_size;
        uint32_t slots = l1_size > q->l1_size ? l1_size : q->l1_size;
        uint64_t *l1 = calloc(slots ? slots : 1, sizeof(*l1));
        rc = l1 ? qcow2_cache_resize_keys(&q->l2_cache, slots) : -ENOMEM;
        if (rc == 0) {
            memcpy(l1, snapshot_l1, (size_t)l1_size * sizeof(*l1));
            free(q->l1_table);
            q->l1_table = l1;
            q->l1_size = slots;
        } else {
            free(l1);
        }
    }
    free(snapshot_l1);
    qcow2_snapshot_table_clear(&table);
    return rc;
}

/* ---- the operations ---- */

int qcow2_image_snapshot_list(struct bdev *bdev, struct qcow2_snapshot_table *table)
{
    struct qcow2 *q = bdev->driver;
    pthread_mutex_lock(&q->lock);
    int rc = qcow2_snapshots_load(q, table);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

static int create_locked(struct qcow2 *q, const char *name, uint32_t date_sec, uint32_t date_nsec)
{
    struct qcow2_snapshot_table table;
    int rc = qcow2_snapshots_load(q, &table);
    if (rc < 0)
        return rc;
    char id[32];
    snprintf(id, sizeof(id), "%lu", next_id(&table));
    size_t room = QCOW2_SNAPSHOT_FIXED_SIZE + SNAPSHOT_EXTRA_SIZE + sizeof(id) + strlen(name) + 8;
    uint8_t *bytes = malloc(table.size + room);
    rc = bytes ? references_check_room(q, q->l1_table, q->l1_size) : -ENOMEM;

    /* The L1 copy first, on disk before anything counts it. */
    uint64_t l1_bytes = (uint64_t)q->l1_size * 8, l1_offset = 0;
    if (rc == 0 && l1_bytes) {
        if ((rc = qcow2_alloc_clusters(q, clusters_for(q, l1_bytes), &l1_offset)) == 0) {
            qcow2_host_end_grow(q, l1_offset + clusters_for(q, l1_bytes) * q->cluster_size);
            if ((rc = refcounts_settle(q)) == 0 &&
                (rc = qcow2_l1_write(q, l1_offset, q->l1_table, q->l1_size, q->l1_size)) == 0)
                rc = qcow2_file_flush(q);
        }
    }
    size_t entry_size = 0;
    if (rc == 0) {
        if (table.size)
            memcpy(bytes, table.raw, table.size);
        entry_size = entry_encode(bytes + table.size, room, l1_offset, q->l1_size, id, name, date_sec, date_nsec,
                                  q->image.header.size);
        if (!entry_size)
            rc = -EINVAL;
    }
    /* Then the references it holds, then the entry that makes them due. */
    if (rc == 0 && (rc = references_change(q, q->l1_table, q->l1_size, +1)) == 0 && (rc = refcounts_settle(q)) == 0)
        rc = table_replace(q, bytes, table.size + entry_size, table.count + 1, table.size);
    if (rc < 0 && l1_offset)
        qcow2_free_clusters(q, l1_offset, clusters_for(q, l1_bytes)); /* the references (if any) stay: leaks */
    if (rc == 0)
        rc = qcow2_copied_flags_fix(q);
    free(bytes);
    qcow2_snapshot_table_clear(&table);
    return rc;
}

int qcow2_image_snapshot_create(struct bdev *bdev, const char *name, uint32_t date_sec, uint32_t date_nsec)
{
    struct qcow2 *q = bdev->driver;
    /* Clusters in an external data file have no refcounts to share them (QEMU refuses too). */
    if (q->data_external)
        return -ENOTSUP;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    return qcow2_tables_end(q, create_locked(q, name, date_sec, date_nsec));
}

static int apply_locked(struct bdev *bdev, struct qcow2 *q, const char *id_or_name)
{
    struct qcow2_snapshot_table table;
    int rc = qcow2_snapshots_load(q, &table);
    if (rc < 0)
        return rc;
    int index = table_find(&table, id_or_name);
    uint64_t *snapshot_l1 = NULL;
    const struct qcow2_snapshot *snapshot = index >= 0 ? &table.entries[index] : NULL;
    rc = snapshot ? qcow2_snapshot_l1_read(q, snapshot, &snapshot_l1) : -ENOENT;
    struct qcow2_header *h = &q->image.header;
    uint64_t size = snapshot && snapshot->disk_size != UINT64_MAX ? snapshot->disk_size : h->size;
    if (rc == 0 && snapshot->l1_size > q->l1_size)
        rc = qcow2_l1_grow(q, snapshot->l1_size, h->size);
    /* References for the snapshot's clusters before the active L1 points at them... */
    if (rc == 0 && (rc = references_change(q, snapshot_l1, snapshot->l1_size, +1)) == 0)
        rc = refcounts_settle(q);
    uint64_t *active = rc == 0 ? calloc(q->l1_size, sizeof(*active)) : NULL;
    if (rc == 0 && !active)
        rc = -ENOMEM;
    if (rc == 0) {
        memcpy(active, snapshot_l1, (size_t)snapshot->l1_size * sizeof(*active));
        if ((rc = qcow2_l1_write(q, h->l1_table_offset, active, q->l1_size, q->l1_size)) == 0)
            rc = qcow2_file_flush(q);
    }
    /* ...and the old active clusters lose theirs once nothing on disk points at them. */
    if (rc == 0) {
        uint64_t *old = q->l1_table;
        q->l1_table = active;
        active = NULL;
        rc = references_change(q, old, q->l1_size, -1);
        free(old);
        if (rc == 0 && (rc = refcounts_settle(q)) == 0)
            rc = qcow2_copied_flags_fix(q);
    }
    if (rc == 0 && size != h->size) {
        uint64_t old_size = h->size;
        h->size = size;
        if ((rc = qcow2_header_write(q)) < 0)
            h->size = old_size;
        else
            bdev->size = size;
    }
    free(active);
    free(snapshot_l1);
    qcow2_snapshot_table_clear(&table);
    return rc;
}

int qcow2_image_snapshot_apply(struct bdev *bdev, const char *id_or_name)
{
    struct qcow2 *q = bdev->driver;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    return qcow2_tables_end(q, apply_locked(bdev, q, id_or_name));
}

static int delete_locked(struct qcow2 *q, const char *id_or_name)
{
    struct qcow2_snapshot_table table;
    int rc = qcow2_snapshots_load(q, &table);
    if (rc < 0)
        return rc;
    int index = table_find(&table, id_or_name);
    uint64_t *snapshot_l1 = NULL;
    const struct qcow2_snapshot *snapshot = index >= 0 ? &table.entries[index] : NULL;
    rc = snapshot ? qcow2_snapshot_l1_read(q, snapshot, &snapshot_l1) : -ENOENT;
    uint8_t *bytes = rc == 0 ? malloc(table.size ? table.size : 1) : NULL;
    if (rc == 0 && !bytes)
        rc = -ENOMEM;
    /* The entry goes first: its references are dropped once nothing on disk holds them. */
    if (rc == 0) {
        uint64_t before = table.starts[index], after = table.size - table.starts[index + 1];
        memcpy(bytes, table.raw, before);
        memcpy(bytes + before, table.raw + table.starts[index + 1], after);
        rc = table_replace(q, bytes, before + after, table.count - 1, table.size);
    }
    if (rc == 0 && (rc = references_change(q, snapshot_l1, snapshot->l1_size, -1)) == 0 && snapshot->l1_size)
        rc = qcow2_free_clusters(q, snapshot->l1_table_offset, clusters_for(q, (uint64_t)snapshot->l1_size * 8));
    if (rc == 0 && (rc = refcounts_settle(q)) == 0)
        rc = qcow2_copied_flags_fix(q);
    free(bytes);
    free(snapshot_l1);
    qcow2_snapshot_table_clear(&table);
    return rc;
}

int qcow2_image_snapshot_delete(struct bdev *bdev, const char *id_or_name)
{
    struct qcow2 *q = bdev->driver;
    int rc = qcow2_tables_begin(q);
    if (rc < 0)
        return rc;
    return qcow2_tables_end(q, delete_locked(q, id_or_name));
}
