/*
 * qcow2_check: what `qemu-img check` does for qcow2 (QEMU's
 * block/qcow2-refcount.c: the same checks, messages and counting rules),
 * written for a file descriptor and plain POSIX I/O.  See qcow2_check.h.
 *
 * The computed reference counts live in one array of 64-bit counters, one
 * per cluster of the file (8 bytes per cluster: 160 MiB for a 10 GiB image
 * of 512-byte clusters, 1.3 MiB for 64 KiB clusters).  Stored refcount
 * blocks are read once and kept; repairs change them in memory and write
 * the changed ones back, then flush, before anything else is written.
 */
#include "block/qcow2/qcow2_check.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_snapshots.h"
#include "common/error_message.h"
#include "common/file_util.h"

#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define L2_BITMAP_ALL_ALLOC 0x00000000ffffffffull
#define L2_BITMAP_ALL_ZEROES 0xffffffff00000000ull
#define BITMAP_TABLE_OFFSET_MASK 0x00fffffffffffe00ull
#define MAX_SNAPSHOTS 65536u
#define MAX_SNAPSHOT_L1_ENTRIES (QCOW2_MAX_L1_BYTES / 8u)
#define HEADER_INCOMPAT_OFFSET 72u
#define HEADER_REFTABLE_OFFSET 48u

/* QEMU's cluster types, from the L2 entry alone (qcow2_get_cluster_type). */
enum cluster_type { TYPE_UNALLOCATED, TYPE_ZERO_PLAIN, TYPE_ZERO_ALLOC, TYPE_NORMAL, TYPE_COMPRESSED };

struct refblock {
    uint8_t *data; /* NULL until read */
    bool dirty;
};

struct checker {
    int fd;
    const char *name;
    enum qcow2_check_fix fix;
    struct qcow2_check_result *res;
    qcow2_check_message_fn *message;
    void *opaque;

    uint64_t file_size;
    struct qcow2_image_header image;
    const struct qcow2_header *h;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_entry_size;
    uint64_t l2_entries;
    bool extended_l2;
    bool data_file; /* guest clusters live in an external data file */
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint64_t block_entries; /* refcounts per refcount block */

    uint64_t *reftable; /* host order, as stored */
    uint64_t reftable_entries;
    struct refblock *blocks; /* one per reftable entry */
    uint64_t *l1;           /* the active L1 table, host order */
    struct qcow2_snapshot_table snapshots;
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_offset;
    uint64_t bitmap_directory_size;

    uint64_t *refs; /* computed reference counts */
    uint64_t nb_clusters;
    bool rebuild;
    uint8_t *table; /* one cluster: L1/L2 scratch */
};

static void say(struct checker *c, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void say(struct checker *c, const char *format, ...)
{
    if (!c->message)
        return;
    char line[512];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof(line), format, args);
    va_end(args);
    c->message(c->opaque, line);
}

/* Bytes past the end of the file read as zeroes (as QEMU's file driver). */
static int read_at(struct checker *c, void *buffer, uint64_t length, uint64_t offset)
{
    return file_pread_full(c->fd, buffer, (size_t)length, offset);
}

static int write_at(struct checker *c, const void *buffer, uint64_t length, uint64_t offset)
{
    int rc = file_pwrite_full(c->fd, buffer, (size_t)length, offset);
    if (rc == 0 && offset + length > c->file_size)
        c->file_size = offset + length;
    return rc;
}

static int flush_file(struct checker *c) { return fdatasync(c->fd) < 0 ? -errno : 0; }

static uint64_t refcount_read(const struct checker *c, const uint8_t *block, uint64_t index)
{
    return qcow2_refcount_entry_get(block, c->refcount_bits, index);
}

static void refcount_write(const struct checker *c, uint8_t *block, uint64_t index, uint64_t value)
{
    qcow2_refcount_entry_set(block, c->refcount_bits, index, value);
}

static enum cluster_type cluster_type(const struct checker *c, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return TYPE_COMPRESSED;
    bool host = qcow2_l2_entry_has_host(c->h, entry);
    if ((entry & QCOW2_OFLAG_ZERO) && !c->extended_l2)
        return host ? TYPE_ZERO_ALLOC : TYPE_ZERO_PLAIN;
    return host ? TYPE_NORMAL : TYPE_UNALLOCATED;
}

/* ---- stored refcounts ------------------------------------------------------- */

/* The refcount block of slot, read on first use; NULL *block when the slot has none. */
static int stored_block(struct checker *c, uint64_t slot, struct refblock **block)
{
    *block = NULL;
    if (slot >= c->reftable_entries)
        return 0;
    uint64_t offset = c->reftable[slot] & REFT_OFFSET_MASK;
    if (!offset)
        return 0;
    if (offset & (c->cluster_size - 1))
        return -EIO; /* QEMU: "Refblock offset unaligned", a corruption */
    struct refblock *b = &c->blocks[slot];
    if (!b->data) {
        b->data = malloc(c->cluster_size);
        if (!b->data)
            return -ENOMEM;
        int rc = read_at(c, b->data, c->cluster_size, offset);
        if (rc < 0) {
            free(b->data);
            b->data = NULL;
            return rc;
        }
    }
    *block = b;
    return 0;
}

static int stored_refcount(struct checker *c, uint64_t cluster, uint64_t *refcount)
{
    struct refblock *b;
    int rc = stored_block(c, cluster / c->block_entries, &b);
    if (rc < 0)
        return rc;
    *refcount = b ? refcount_read(c, b->data, cluster % c->block_entries) : 0;
    return 0;
}

static int write_back_blocks(struct checker *c)
{
    bool any = false;
    for (uint64_t slot = 0; slot < c->reftable_entries; slot++) {
        struct refblock *b = &c->blocks[slot];
        if (!b->dirty)
            continue;
        int rc = write_at(c, b->data, c->cluster_size, c->reftable[slot] & REFT_OFFSET_MASK);
        if (rc < 0)
            return rc;
        b->dirty = false;
        any = true;
    }
    return any ? flush_file(c) : 0;
}

static void drop_blocks(struct checker *c)
{
    if (!c->blocks)
        return;
    for (uint64_t slot = 0; slot < c->reftable_entries; slot++)
        free(c->blocks[slot].data);
    free(c->blocks);
    c->blocks = NULL;
}

/* ---- computed refcounts ------------------------------------------------------ */

/* How far past the end of the file a repair may grow it to reach a refcount block (beyond its own size). */
#define MAX_GROWTH_BYTES (1ull << 30)

static int grow_refs(struct checker *c, uint64_t count)
{
    if (count <= c->nb_clusters)
        return 0;
    uint64_t *grown = realloc(c->refs, count * sizeof(*grown));
    if (!grown) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    memset(grown + c->nb_clusters, 0, (count - c->nb_clusters) * sizeof(*grown));
    c->refs = grown;
    c->nb_clusters = count;
    return 0;
}

/* qcow2_inc_refcounts_imrt: one more reference to every cluster [offset, offset + size) touches. */
static int inc_refs(struct checker *c, uint64_t offset, uint64_t size)
{
    if (!size)
        return 0;
    /* The last cluster may be partly written: less than a cluster past the end is fine. */
    if (offset + size > c->file_size && offset + size - c->file_size >= c->cluster_size) {
        say(c, "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
               "offset 0x%" PRIx64 " size 0x%" PRIx64, offset, size);
        c->res->corruptions++;
        return 0;
    }
    uint64_t first = offset >> c->cluster_bits, last = (offset + size - 1) >> c->cluster_bits;
    for (uint64_t k = first; k <= last; k++) {
        int rc = grow_refs(c, k + 1);
        if (rc < 0)
            return rc;
        if (c->refs[k] == c->refcount_max) {
            say(c, "ERROR: overflow cluster offset=0x%" PRIx64, k << c->cluster_bits);
            say(c, "Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a "
                   "clean copy if the image cannot be opened for writing");
            c->res->corruptions++;
            continue;
        }
        c->refs[k]++;
    }
    return 0;
}

/* fix_l2_entry_by_zero: an unaligned preallocated cluster becomes a plain zero cluster. */
static int zero_l2_entry(struct checker *c, uint64_t l2_offset, uint64_t index)
{
    uint8_t *slot = c->table + index * c->l2_entry_size;
    if (c->extended_l2) {
        uint64_t bitmap = qcow2_be64(slot + 8);
        bitmap |= bitmap << 32;
        bitmap &= L2_BITMAP_ALL_ZEROES;
        qcow2_put_be64(slot + 8, bitmap);
        qcow2_put_be64(slot, 0);
    } else {
        qcow2_put_be64(slot, QCOW2_OFLAG_ZERO);
    }
    int rc = write_at(c, slot, c->l2_entry_size, l2_offset + index * c->l2_entry_size);
    if (rc == 0)
        rc = flush_file(c);
    if (rc < 0) {
        say(c, "ERROR: Failed to overwrite L2 table entry: %s", strerror(-rc));
        c->res->check_errors++;
        return rc;
    }
    c->res->corruptions--;
    c->res->corruptions_fixed++;
    return 0;
}

/* check_refcounts_l2: count an L2 table's data clusters (frag: gather the active image's statistics). */
static int check_l2(struct checker *c, uint64_t l2_offset, bool frag, enum qcow2_check_fix fix)
{
    struct qcow2_check_result *res = c->res;
    if (read_at(c, c->table, c->cluster_size, l2_offset) < 0) {
        say(c, "ERROR: I/O error in check_refcounts_l2");
        res->check_errors++;
        return -EIO;
    }
    uint64_t next_contiguous = 0;
    for (uint64_t i = 0; i < c->l2_entries; i++) {
        const uint8_t *slot = c->table + i * c->l2_entry_size;
        uint64_t entry = qcow2_be64(slot);
        uint64_t bitmap = c->extended_l2 ? qcow2_be64(slot + 8) : 0;
        enum cluster_type type = cluster_type(c, entry);
        int rc;

        if (type != TYPE_COMPRESSED && (entry & QCOW2_L2_STANDARD_RESERVED_MASK)) {
            say(c, "ERROR found l2 entry with reserved bits set: %" PRIx64, entry);
            res->corruptions++;
        }
        switch (type) {
        case TYPE_COMPRESSED: {
            uint64_t host, length;
            qcow2_compressed_descriptor(c->h, entry, &host, &length);
            if (entry & QCOW2_OFLAG_COPIED) {
                say(c, "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for compressed clusters",
                    host);
                res->corruptions++;
            }
            if (bitmap) {
                say(c, "ERROR compressed cluster %" PRIu64 " with non-zero subcluster allocation bitmap, "
                       "entry=0x%" PRIx64, i, entry);
                res->corruptions++;
                break;
            }
            if ((rc = inc_refs(c, host, length)) < 0)
                return rc;
            if (frag) {
                /* Compressed clusters are fragmented by nature (QEMU counts them so). */
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            break;
        }
        case TYPE_ZERO_ALLOC:
        case TYPE_NORMAL: {
            uint64_t offset = entry & L2E_OFFSET_MASK;
            if ((bitmap >> 32) & bitmap) {
                res->corruptions++;
                say(c, "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster allocation bitmap",
                    offset);
            }
            if (offset & (c->cluster_size - 1)) {
                res->corruptions++;
                bool contains_data = c->extended_l2 ? (bitmap & L2_BITMAP_ALL_ALLOC) != 0
                                                    : !(entry & QCOW2_OFLAG_ZERO);
                if (!contains_data) {
                    say(c, "%s offset=%" PRIx64 ": Preallocated cluster is not properly aligned; L2 entry "
                           "corrupted.", fix & QCOW2_CHECK_FIX_ERRORS ? "Repairing" : "ERROR", offset);
                    if (fix & QCOW2_CHECK_FIX_ERRORS) {
                        if ((rc = zero_l2_entry(c, l2_offset, i)) < 0)
                            return rc;
                        continue; /* the cluster is unused now */
                    }
                } else {
                    say(c, "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 entry corrupted.",
                        offset);
                }
            }
            if (frag) {
                res->allocated_clusters++;
                if (next_contiguous && offset != next_contiguous)
                    res->fragmented_clusters++;
                next_contiguous = offset + c->cluster_size;
            }
            /* Clusters in an external data file are not refcounted. */
            if (!c->data_file && (rc = inc_refs(c, offset, c->cluster_size)) < 0)
                return rc;
            break;
        }
        case TYPE_ZERO_PLAIN:
            break;
        case TYPE_UNALLOCATED:
            if (bitmap & L2_BITMAP_ALL_ALLOC) {
                res->corruptions++;
                say(c, "ERROR: Unallocated cluster has non-zero subcluster allocation map");
            }
            break;
        }
    }
    return 0;
}

/* check_refcounts_l1: an L1 table, its L2 tables and their data. */
static int check_l1(struct checker *c, uint64_t l1_offset, uint32_t l1_size, bool frag, enum qcow2_check_fix fix)
{
    if (!l1_size)
        return 0;
    uint64_t bytes = (uint64_t)l1_size * 8;
    int rc = inc_refs(c, l1_offset, bytes);
    if (rc < 0)
        return rc;
    uint8_t *raw = malloc(bytes);
    if (!raw) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    if (read_at(c, raw, bytes, l1_offset) < 0) {
        free(raw);
        say(c, "ERROR: I/O error in check_refcounts_l1");
        c->res->check_errors++;
        return -EIO;
    }
    for (uint32_t i = 0; i < l1_size && rc == 0; i++) {
        uint64_t entry = qcow2_be64(raw + (uint64_t)i * 8);
        if (!entry)
            continue;
        if (entry & QCOW2_L1_RESERVED_MASK) {
            say(c, "ERROR found L1 entry with reserved bits set: %" PRIx64, entry);
            c->res->corruptions++;
        }
        uint64_t l2_offset = entry & L1E_OFFSET_MASK;
        if ((rc = inc_refs(c, l2_offset, c->cluster_size)) < 0)
            break;
        if (l2_offset & (c->cluster_size - 1)) {
            say(c, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted", l2_offset);
            c->res->corruptions++;
        }
        rc = check_l2(c, l2_offset, frag, fix);
    }
    free(raw);
    return rc;
}

/* The bitmap directory, each bitmap's table and the clusters those tables use. */
static int check_bitmaps(struct checker *c)
{
    if (!c->nb_bitmaps)
        return 0;
    int rc = inc_refs(c, c->bitmap_directory_offset, c->bitmap_directory_size);
    if (rc < 0)
        return rc;
    uint64_t size = c->bitmap_directory_size;
    if (size > (64u << 20))
        return 0; /* QEMU refuses such a directory at open */
    uint8_t *dir = malloc(size ? size : 1);
    if (!dir) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    if (read_at(c, dir, size, c->bitmap_directory_offset) < 0) {
        free(dir);
        c->res->check_errors++;
        return -EIO;
    }
    uint64_t at = 0;
    for (uint32_t i = 0; i < c->nb_bitmaps && at + 24 <= size && rc == 0; i++) {
        uint64_t table_offset = qcow2_be64(dir + at);
        uint32_t table_size = qcow2_be32(dir + at + 8);
        uint16_t name_size = qcow2_be16(dir + at + 18);
        uint32_t extra_size = qcow2_be32(dir + at + 20);
        at += (24 + (uint64_t)extra_size + name_size + 7) & ~7ull;
        if (!table_size || (table_offset & (c->cluster_size - 1)))
            continue;
        if ((rc = inc_refs(c, table_offset, (uint64_t)table_size * 8)) < 0)
            break;
        uint64_t bytes = (uint64_t)table_size * 8;
        uint8_t *table = malloc(bytes);
        if (!table) {
            c->res->check_errors++;
            rc = -ENOMEM;
            break;
        }
        if (read_at(c, table, bytes, table_offset) < 0) {
            free(table);
            c->res->check_errors++;
            rc = -EIO;
            break;
        }
        for (uint32_t j = 0; j < table_size && rc == 0; j++) {
            uint64_t offset = qcow2_be64(table + (uint64_t)j * 8) & BITMAP_TABLE_OFFSET_MASK;
            if (offset)
                rc = inc_refs(c, offset, c->cluster_size);
        }
        free(table);
    }
    free(dir);
    return rc;
}

/* check_refblocks: each refcount block is counted, and must be used by nothing else. */
static int check_refblocks(struct checker *c, enum qcow2_check_fix fix)
{
    struct qcow2_check_result *res = c->res;
    for (uint64_t i = 0; i < c->reftable_entries; i++) {
        uint64_t offset = c->reftable[i] & REFT_OFFSET_MASK, cluster = offset >> c->cluster_bits;
        int rc;
        if (c->reftable[i] & QCOW2_REFTABLE_RESERVED_MASK) {
            say(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (offset & (c->cluster_size - 1)) {
            say(c, "ERROR refcount block %" PRIu64 " is not cluster aligned; refcount table entry corrupted", i);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (offset && cluster >= c->nb_clusters) {
            /*
             * QEMU grows the file to reach such a block.  Far past the end
             * that would only make a huge sparse file and a huge count
             * array (a hostile image at open): rebuild instead.
             */
            bool growable = cluster - c->nb_clusters <= c->nb_clusters + (MAX_GROWTH_BYTES >> c->cluster_bits);
            bool repair = (fix & QCOW2_CHECK_FIX_ERRORS) && growable;
            res->corruptions++;
            say(c, "%s refcount block %" PRIu64 " is outside image", repair ? "Repairing" : "ERROR", i);
            if ((fix & QCOW2_CHECK_FIX_ERRORS) && !growable) {
                c->rebuild = true;
                continue;
            }
            if (repair) {
                /* Grow the file to hold the block (it then reads as zeroes: every count in it is 0). */
                if (ftruncate(c->fd, (off_t)(offset + c->cluster_size)) < 0) {
                    rc = -errno;
                    c->rebuild = true;
                    say(c, "ERROR could not resize image: %s", strerror(-rc));
                    continue;
                }
                c->file_size = offset + c->cluster_size;
                if ((rc = grow_refs(c, cluster + 1)) < 0)
                    return rc;
                res->corruptions--;
                res->corruptions_fixed++;
                if ((rc = inc_refs(c, offset, c->cluster_size)) < 0)
                    return rc;
            }
            continue;
        }
        if (offset) {
            if ((rc = inc_refs(c, offset, c->cluster_size)) < 0)
                return rc;
            if (c->refs[cluster] != 1) {
                say(c, "ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i, c->refs[cluster]);
                res->corruptions++;
                c->rebuild = true;
            }
        }
    }
    return 0;
}

/* calculate_refcounts: every reference the metadata makes. */
static int calculate(struct checker *c, enum qcow2_check_fix fix)
{
    const struct qcow2_header *h = c->h;
    memset(c->refs, 0, c->nb_clusters * sizeof(*c->refs));
    c->rebuild = false;
    int rc = inc_refs(c, 0, c->cluster_size);
    if (rc == 0)
        rc = check_l1(c, h->l1_table_offset, h->l1_size, true, fix);
    for (uint32_t i = 0; rc == 0 && i < c->snapshots.count; i++) {
        const struct qcow2_snapshot *s = &c->snapshots.entries[i];
        if (s->l1_table_offset & (c->cluster_size - 1)) {
            say(c, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not cluster aligned; snapshot table "
                   "entry corrupted", s->id, s->name, s->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if (s->l1_size > MAX_SNAPSHOT_L1_ENTRIES) {
            say(c, "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too large; snapshot table entry "
                   "corrupted", s->id, s->name, s->l1_size);
            c->res->corruptions++;
            continue;
        }
        rc = check_l1(c, s->l1_table_offset, s->l1_size, false, fix);
    }
    if (rc == 0)
        rc = inc_refs(c, h->snapshots_offset, c->snapshots.size);
    if (rc == 0)
        rc = inc_refs(c, h->refcount_table_offset, c->reftable_entries * 8);
    if (rc == 0)
        rc = check_bitmaps(c);
    if (rc == 0)
        rc = check_refblocks(c, fix);
    return rc;
}

/* compare_refcounts: stored against computed; with fix, stored values are corrected in memory. */
static void compare(struct checker *c, enum qcow2_check_fix fix, uint64_t *highest)
{
    struct qcow2_check_result *res = c->res;
    *highest = 0;
    for (uint64_t i = 0; i < c->nb_clusters; i++) {
        uint64_t stored;
        int rc = stored_refcount(c, i, &stored);
        if (rc < 0) {
            say(c, "Can't get refcount for cluster %" PRIu64 ": %s", i, strerror(-rc));
            res->check_errors++;
            continue;
        }
        uint64_t computed = c->refs[i];
        if (stored || computed)
            *highest = i;
        if (stored == computed)
            continue;
        int64_t *fixed = NULL;
        if (stored == 0)
            c->rebuild = true; /* a used cluster counted free: only a rebuild is safe */
        else if (stored > computed && (fix & QCOW2_CHECK_FIX_LEAKS))
            fixed = &res->leaks_fixed;
        else if (stored < computed && (fix & QCOW2_CHECK_FIX_ERRORS))
            fixed = &res->corruptions_fixed;
        say(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
            fixed ? "Repairing" : stored < computed ? "ERROR" : "Leaked", i, stored, computed);
        if (fixed) {
            struct refblock *b;
            if (stored_block(c, i / c->block_entries, &b) == 0 && b) {
                refcount_write(c, b->data, i % c->block_entries, computed);
                b->dirty = true;
                (*fixed)++;
                continue;
            }
        }
        if (stored < computed)
            res->corruptions++;
        else
            res->leaks++;
    }
}

/* alloc_clusters_imrt: the first run of count clusters the computed counts call free, from *first_free. */
static int alloc_computed(struct checker *c, uint64_t count, uint64_t *first_free, uint64_t *offset)
{
    uint64_t cluster = *first_free, run = 0;
    bool first_gap = true;
    for (; cluster < c->nb_clusters && run < count; cluster++) {
        if (!c->refs[cluster]) {
            run++;
            if (first_gap) {
                *first_free = cluster;
                first_gap = false;
            }
        } else {
            run = 0;
        }
    }
    if (run < count) {
        int rc = grow_refs(c, cluster + count - run);
        if (rc < 0)
            return rc;
    }
    cluster -= run;
    for (uint64_t i = 0; i < count; i++)
        c->refs[cluster + i] = 1;
    *offset = cluster << c->cluster_bits;
    return 0;
}

struct new_table {
    uint64_t *entries;
    uint64_t count;
};

/*
 * Give every refcount block range of [first, end) that holds a used
 * cluster a block (allocated where the computed counts are free) and write
 * it with the computed counts.  1 when the table had to grow, 0, or -errno.
 */
static int write_new_blocks(struct checker *c, uint64_t first, uint64_t end, struct new_table *table,
                            uint8_t *buffer)
{
    uint64_t first_free = 0;
    bool grown = false;
    for (uint64_t cluster = first; cluster < end; cluster++) {
        if (cluster >= c->nb_clusters || !c->refs[cluster])
            continue;
        uint64_t index = cluster / c->block_entries, block_start = index * c->block_entries, block_offset;
        if (index < table->count && table->entries[index]) {
            block_offset = table->entries[index];
        } else {
            /* Never in the range of a block already written. */
            if (first_free < block_start)
                first_free = block_start;
            int rc = alloc_computed(c, 1, &first_free, &block_offset);
            if (rc < 0) {
                say(c, "ERROR allocating refblock");
                return rc;
            }
            if ((block_offset >> c->cluster_bits) >= end)
                end = (block_offset >> c->cluster_bits) + 1; /* its own count must be written too */
            if (table->count <= index) {
                uint64_t per_cluster = c->cluster_size / 8;
                uint64_t count = (index + 1 + per_cluster - 1) / per_cluster * per_cluster;
                uint64_t *grown_entries = realloc(table->entries, count * sizeof(*grown_entries));
                if (!grown_entries) {
                    say(c, "ERROR allocating reftable memory");
                    return -ENOMEM;
                }
                memset(grown_entries + table->count, 0, (count - table->count) * sizeof(*grown_entries));
                table->entries = grown_entries;
                table->count = count;
                grown = true;
            }
            table->entries[index] = block_offset;
        }
        memset(buffer, 0, c->cluster_size);
        for (uint64_t j = 0; j < c->block_entries && block_start + j < c->nb_clusters; j++)
            if (c->refs[block_start + j])
                refcount_write(c, buffer, j, c->refs[block_start + j]);
        int rc = write_at(c, buffer, c->cluster_size, block_offset);
        if (rc < 0) {
            say(c, "ERROR writing refblock");
            return rc;
        }
        cluster = block_start + c->block_entries - 1; /* this block is done */
    }
    return grown;
}

/*
 * rebuild_refcount_structure, with QEMU's placement: new refcount blocks
 * and table go where the computed counts are free (clusters nothing
 * references, so the old structure stays intact), written with the
 * computed counts, flushed; then the header switches to the new table and
 * is flushed.  The old table and blocks are still counted in the new
 * blocks: the leak repair that follows frees them.
 */
static int rebuild(struct checker *c)
{
    struct new_table table = {0};
    uint8_t *buffer = malloc(c->cluster_size);
    uint64_t table_offset = 0, table_clusters = 0;
    int rc = buffer ? 0 : -ENOMEM;
    if (rc == 0)
        rc = write_new_blocks(c, 0, c->nb_clusters, &table, buffer);
    while (rc > 0) {
        uint64_t first_free = 0;
        table_clusters = (table.count * 8 + c->cluster_size - 1) / c->cluster_size;
        if (table_clusters * c->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
            rc = -EFBIG;
            break;
        }
        if ((rc = alloc_computed(c, table_clusters, &first_free, &table_offset)) < 0) {
            say(c, "ERROR allocating reftable");
            break;
        }
        uint64_t start = table_offset >> c->cluster_bits;
        rc = write_new_blocks(c, start, start + table_clusters, &table, buffer);
    }
    if (rc == 0) {
        uint8_t *raw = malloc(table.count * 8);
        if (!raw) {
            rc = -ENOMEM;
        } else {
            for (uint64_t i = 0; i < table.count; i++)
                qcow2_put_be64(raw + i * 8, table.entries[i]);
            rc = write_at(c, raw, table.count * 8, table_offset);
            free(raw);
            if (rc < 0)
                say(c, "ERROR writing reftable");
        }
    }
    /* Blocks and table on disk before the header points at them. */
    if (rc == 0)
        rc = flush_file(c);
    if (rc == 0) {
        uint8_t field[12];
        qcow2_put_be64(field, table_offset);
        qcow2_put_be32(field + 8, (uint32_t)table_clusters);
        if ((rc = write_at(c, field, sizeof(field), HEADER_REFTABLE_OFFSET)) == 0)
            rc = flush_file(c);
        if (rc < 0)
            say(c, "ERROR setting reftable");
    }
    free(buffer);
    if (rc < 0) {
        free(table.entries);
        c->res->check_errors++;
        return rc;
    }
    drop_blocks(c);
    free(c->reftable);
    c->reftable = table.entries;
    c->reftable_entries = table.count;
    c->image.header.refcount_table_offset = table_offset;
    c->image.header.refcount_table_clusters = (uint32_t)table_clusters;
    c->blocks = calloc(table.count, sizeof(*c->blocks));
    if (!c->blocks) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    return 0;
}

/* check_oflag_copied: COPIED must be set exactly when the refcount is 1 (active tables only). */
static int check_copied(struct checker *c, enum qcow2_check_fix fix)
{
    struct qcow2_check_result *res = c->res;
    bool repair = (fix & QCOW2_CHECK_FIX_ERRORS) ||
                  ((fix & QCOW2_CHECK_FIX_LEAKS) && !res->check_errors && !res->corruptions && !res->leaks);
    bool wrote = false;
    int rc = 0;
    for (uint32_t i = 0; i < c->h->l1_size; i++) {
        uint64_t l1_entry = c->l1[i], l2_offset = l1_entry & L1E_OFFSET_MASK, refcount;
        if (!l2_offset || stored_refcount(c, l2_offset >> c->cluster_bits, &refcount) < 0)
            continue;
        if ((refcount == 1) != ((l1_entry & QCOW2_OFLAG_COPIED) != 0)) {
            res->corruptions++;
            say(c, "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32 " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                repair ? "Repairing" : "ERROR", i, l1_entry, refcount);
            if (repair) {
                c->l1[i] = refcount == 1 ? l1_entry | QCOW2_OFLAG_COPIED : l1_entry & ~QCOW2_OFLAG_COPIED;
                uint8_t raw[8];
                qcow2_put_be64(raw, c->l1[i]);
                if ((rc = write_at(c, raw, 8, c->h->l1_table_offset + (uint64_t)i * 8)) < 0) {
                    res->check_errors++;
                    return rc;
                }
                wrote = true;
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }
        if ((rc = read_at(c, c->table, c->cluster_size, l2_offset)) < 0) {
            say(c, "ERROR: Could not read L2 table: %s", strerror(-rc));
            res->check_errors++;
            return rc;
        }
        int dirty = 0;
        for (uint64_t j = 0; j < c->l2_entries; j++) {
            uint8_t *slot = c->table + j * c->l2_entry_size;
            uint64_t entry = qcow2_be64(slot);
            enum cluster_type type = cluster_type(c, entry);
            if (type != TYPE_NORMAL && type != TYPE_ZERO_ALLOC)
                continue;
            if (c->data_file)
                refcount = 1; /* a data file's clusters belong to the active image alone */
            else if (stored_refcount(c, (entry & L2E_OFFSET_MASK) >> c->cluster_bits, &refcount) < 0)
                continue;
            if ((refcount == 1) != ((entry & QCOW2_OFLAG_COPIED) != 0)) {
                res->corruptions++;
                say(c, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                    repair ? "Repairing" : "ERROR", entry, refcount);
                if (repair) {
                    qcow2_put_be64(slot, refcount == 1 ? entry | QCOW2_OFLAG_COPIED : entry & ~QCOW2_OFLAG_COPIED);
                    dirty++;
                }
            }
        }
        if (dirty) {
            if ((rc = write_at(c, c->table, c->cluster_size, l2_offset)) < 0) {
                say(c, "ERROR: Could not write L2 table: %s", strerror(-rc));
                res->check_errors++;
                return rc;
            }
            wrote = true;
            res->corruptions -= dirty;
            res->corruptions_fixed += dirty;
        }
    }
    if (wrote && (rc = flush_file(c)) < 0)
        res->check_errors++;
    return rc;
}

/* qcow2_mark_clean and qcow2_mark_consistent: after a repair that left no corruption. */
static int mark_clean(struct checker *c)
{
    uint64_t features = c->h->incompatible_features;
    if (c->h->version < 3 || !(features & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)))
        return 0;
    int rc = flush_file(c); /* everything the repair wrote comes first */
    if (rc < 0)
        return rc;
    features &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
    uint8_t raw[8];
    qcow2_put_be64(raw, features);
    if ((rc = write_at(c, raw, sizeof(raw), HEADER_INCOMPAT_OFFSET)) == 0 && (rc = flush_file(c)) == 0)
        c->image.header.incompatible_features = features;
    return rc;
}

/* ---- loading the image ------------------------------------------------------- */

static int load_snapshots(struct checker *c, char **error_message)
{
    const struct qcow2_header *h = c->h;
    if (!h->nb_snapshots)
        return 0;
    if (h->nb_snapshots > MAX_SNAPSHOTS)
        return error_message_set(error_message, -EFBIG, "Too many snapshots");
    if (h->snapshots_offset & (c->cluster_size - 1))
        return error_message_set(error_message, -EINVAL, "Invalid snapshot table offset");
    int rc = qcow2_snapshot_table_read(c->fd, h, c->file_size, &c->snapshots);
    if (rc == -EINVAL)
        return error_message_set(error_message, rc, "Failed to read snapshot table");
    if (rc == -EFBIG)
        return error_message_set(error_message, rc, "Too much extra metadata in snapshot table entry %u",
                                 c->snapshots.bad_entry);
    return rc;
}

static int load_image(struct checker *c, char **error_message)
{
    struct stat st;
    if (fstat(c->fd, &st) < 0)
        return error_message_set(error_message, -errno, "Could not stat the image: %s", strerror(errno));
    c->file_size = (uint64_t)st.st_size;
    char *reason = NULL;
    int rc = qcow2_image_header_read(qcow2_read_fd, &c->fd, c->file_size, &c->image, &reason);
    if (rc < 0) {
        error_message_set(error_message, rc, "%s", reason ? reason : strerror(-rc));
        free(reason);
        return rc;
    }
    const struct qcow2_header *h = c->h = &c->image.header;
    c->data_file = (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    c->cluster_bits = h->cluster_bits;
    c->cluster_size = 1ull << h->cluster_bits;
    c->l2_entry_size = qcow2_l2_entry_size(h);
    c->extended_l2 = c->l2_entry_size == 16;
    c->l2_entries = c->cluster_size / c->l2_entry_size;
    c->refcount_bits = 1u << h->refcount_order;
    c->refcount_max = c->refcount_bits == 64 ? UINT64_MAX : (1ull << c->refcount_bits) - 1;
    c->block_entries = c->cluster_size * 8 / c->refcount_bits;

    c->reftable_entries = (uint64_t)h->refcount_table_clusters * c->cluster_size / 8;
    c->reftable = calloc(c->reftable_entries ? c->reftable_entries : 1, sizeof(*c->reftable));
    c->blocks = calloc(c->reftable_entries ? c->reftable_entries : 1, sizeof(*c->blocks));
    c->l1 = calloc(h->l1_size ? h->l1_size : 1, sizeof(*c->l1));
    c->table = malloc(c->cluster_size);
    if (!c->reftable || !c->blocks || !c->l1 || !c->table)
        return -ENOMEM;
    uint8_t *raw = malloc(c->reftable_entries * 8 > (uint64_t)h->l1_size * 8 ? c->reftable_entries * 8
                                                                            : (uint64_t)h->l1_size * 8 + 8);
    if (!raw)
        return -ENOMEM;
    rc = read_at(c, raw, c->reftable_entries * 8, h->refcount_table_offset);
    for (uint64_t i = 0; rc == 0 && i < c->reftable_entries; i++)
        c->reftable[i] = qcow2_be64(raw + i * 8);
    if (rc == 0)
        rc = read_at(c, raw, (uint64_t)h->l1_size * 8, h->l1_table_offset);
    for (uint32_t i = 0; rc == 0 && i < h->l1_size; i++)
        c->l1[i] = qcow2_be64(raw + (uint64_t)i * 8);
    free(raw);
    if (rc < 0)
        return error_message_set(error_message, rc, "Could not read the image's tables: %s", strerror(-rc));

    /* Bitmaps count only while their autoclear bit says they are valid (as QEMU loads them). */
    if (h->version >= 3 && (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        for (size_t i = 0; i < c->image.extension_count; i++) {
            const struct qcow2_extension *e = &c->image.extensions[i];
            if (e->type == QCOW2_EXT_BITMAPS && e->length >= 24) {
                c->nb_bitmaps = qcow2_be32(e->data);
                c->bitmap_directory_size = qcow2_be64(e->data + 8);
                c->bitmap_directory_offset = qcow2_be64(e->data + 16);
            }
        }
    }
    return load_snapshots(c, error_message);
}

static void checker_free(struct checker *c)
{
    drop_blocks(c);
    qcow2_snapshot_table_clear(&c->snapshots);
    free(c->reftable);
    free(c->l1);
    free(c->refs);
    free(c->table);
    qcow2_image_header_clear(&c->image);
}

/* qcow2_check_refcounts plus qcow2_co_check_locked's final marking. */
static int run(struct checker *c, enum qcow2_check_fix fix)
{
    struct qcow2_check_result *res = c->res;
    uint64_t highest = 0;
    res->total_clusters = (int64_t)((c->h->size + c->cluster_size - 1) / c->cluster_size);
    c->nb_clusters = 0;
    int rc = grow_refs(c, (c->file_size + c->cluster_size - 1) / c->cluster_size);
    if (rc == 0)
        rc = calculate(c, fix);
    if (rc < 0)
        return rc;

    struct qcow2_check_result before_compare = *res;
    compare(c, QCOW2_CHECK_FIX_NONE, &highest);

    if (c->rebuild && (fix & QCOW2_CHECK_FIX_ERRORS)) {
        struct qcow2_check_result old = *res;
        int64_t fresh_leaks = 0;
        say(c, "Rebuilding refcount structure");
        if ((rc = rebuild(c)) < 0)
            return rc;
        res->corruptions = 0;
        res->leaks = 0;
        if ((rc = calculate(c, QCOW2_CHECK_FIX_NONE)) < 0)
            return rc;
        if (fix & QCOW2_CHECK_FIX_LEAKS) {
            struct qcow2_check_result saved = *res;
            memset(res, 0, sizeof(*res));
            compare(c, QCOW2_CHECK_FIX_LEAKS, &highest);
            if (c->rebuild)
                say(c, "ERROR rebuilt refcount structure is still broken");
            fresh_leaks = res->leaks;
            *res = saved;
            if ((rc = write_back_blocks(c)) < 0) {
                res->check_errors++;
                return rc;
            }
        }
        if (res->corruptions < old.corruptions)
            res->corruptions_fixed += old.corruptions - res->corruptions;
        if (res->leaks < old.leaks)
            res->leaks_fixed += old.leaks - res->leaks;
        res->leaks += fresh_leaks;
    } else if (fix) {
        if (c->rebuild) {
            say(c, "ERROR need to rebuild refcount structures");
            res->check_errors++;
            return -EIO;
        }
        if (res->leaks || res->corruptions) {
            *res = before_compare;
            compare(c, fix, &highest);
            /* Refcounts reach the disk before anything that relies on them. */
            if ((rc = write_back_blocks(c)) < 0) {
                res->check_errors++;
                return rc;
            }
        }
    }

    if ((rc = check_copied(c, fix)) < 0)
        return rc;
    res->image_end_offset = (int64_t)((highest + 1) * c->cluster_size);

    if (fix && !res->check_errors && !res->corruptions && (rc = mark_clean(c)) < 0) {
        res->check_errors++;
        return rc;
    }
    return 0;
}

int qcow2_check_fd(int fd, const char *name, enum qcow2_check_fix fix, struct qcow2_check_result *result,
                   qcow2_check_message_fn *message, void *opaque, char **error_message)
{
    struct checker c = {.fd = fd, .name = name, .fix = fix, .res = result, .message = message, .opaque = opaque};
    memset(result, 0, sizeof(*result));
    int rc = load_image(&c, error_message);
    if (rc == 0)
        rc = run(&c, fix);
    checker_free(&c);
    return rc;
}

int qcow2_check(const char *path, enum qcow2_check_fix fix, struct qcow2_check_result *result,
                qcow2_check_message_fn *message, void *opaque, char **error_message)
{
    int fd = open(path, (fix ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return error_message_set(error_message, -errno, "Could not open '%s': %s", path, strerror(errno));
    int rc = qcow2_check_fd(fd, path, fix, result, message, opaque, error_message);
    close(fd);
    return rc;
}
