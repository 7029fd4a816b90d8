/*
 * qcow2_create: QEMU's qcow2 creation replayed.  The functions named after
 * QEMU's (alloc_clusters_noref, update_refcount, alloc_refcount_block,
 * refcount_area, ...) follow block/qcow2-refcount.c and qcow2-cluster.c of
 * QEMU 7.2 decision for decision, because where a refcount block or an L2
 * table lands depends on the order in which QEMU's allocator was asked.
 * Refcounts of a new image are only ever 0 or 1, so a bitmap holds them.
 */
#include "block/qcow2/qcow2_create.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/qcow2/qcow2_format.h"
#include "common/error_message.h"
#include "common/file_util.h"

#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define QCOW2_MAX_REFTABLE_ENTRIES (8u << 20) /* QEMU compares entries against 8 MiB */

struct layout {
    int fd;
    unsigned cluster_bits;
    uint64_t cluster_size;
    unsigned refcount_order;
    unsigned refblock_bits;   /* log2(refcounts per refcount block) */
    uint64_t l2_entries;      /* entries per L2 table */
    unsigned l2_entry_size;
    uint8_t *used;            /* bit per cluster: refcount is 1 */
    uint64_t used_capacity;   /* clusters the bitmap can hold */
    uint64_t *reftable;       /* refcount block cluster per entry, 0 = none */
    uint64_t reftable_size;   /* entries */
    uint64_t reftable_cluster;
    uint64_t free_index;      /* QEMU's free_cluster_index */
    uint64_t *l1;             /* L2 table cluster per entry, 0 = none */
    uint32_t l1_size;
    uint64_t l1_cluster;
    uint64_t eof;             /* end of what QEMU would have written so far, bytes */
    uint8_t *buffer;          /* one cluster of scratch */
    int data_fd;              /* the external data file; -1: none (data clusters are allocated here) */
};

void qcow2_create_options_init(struct qcow2_create_options *options)
{
    *options = (struct qcow2_create_options){
        .version = 3,
        .cluster_size = 65536,
        .refcount_bits = 16,
        .compression_type = QCOW2_COMPRESSION_ZLIB,
        .preallocation = QCOW2_PREALLOC_OFF,
    };
}

static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full"};

int qcow2_preallocation_parse(const char *name, enum qcow2_preallocation *out)
{
    for (size_t i = 0; i < sizeof(prealloc_names) / sizeof(prealloc_names[0]); i++)
        if (strcmp(name, prealloc_names[i]) == 0) {
            *out = (enum qcow2_preallocation)i;
            return 0;
        }
    return -EINVAL;
}

const char *qcow2_preallocation_name(enum qcow2_preallocation mode)
{
    return (unsigned)mode < sizeof(prealloc_names) / sizeof(prealloc_names[0]) ? prealloc_names[mode] : "?";
}

static unsigned log2_exact(uint64_t value)
{
    unsigned bits = 0;
    while ((1ull << bits) < value)
        bits++;
    return bits;
}

static bool power_of_two(uint64_t value) { return value && !(value & (value - 1)); }

int qcow2_create_validate(const struct qcow2_create_options *o, char **error_message)
{
    const char *use_v3 = "(use version=v3 or greater)";
    if (o->version != 2 && o->version != 3)
        return error_message_set(error_message, -EINVAL, "Parameter 'version' does not accept value '%u'",
                                 o->version);
    if (!power_of_two(o->cluster_size) || o->cluster_size < (1u << QCOW2_MIN_CLUSTER_BITS) ||
        o->cluster_size > (1u << QCOW2_MAX_CLUSTER_BITS))
        return error_message_set(error_message, -EINVAL,
                                 "Cluster size must be a power of two between 512 and 2048k");
    if (o->version < 3 && o->refcount_bits != 16)
        return error_message_set(error_message, -EINVAL,
                                 "Different refcount widths than 16 bits require compatibility level 1.1 "
                                 "or above %s", use_v3);
    if (!power_of_two(o->refcount_bits) || o->refcount_bits > 64)
        return error_message_set(error_message, -EINVAL,
                                 "Refcount width must be a power of two and may not exceed 64 bits");
    if (o->version < 3 && o->lazy_refcounts)
        return error_message_set(error_message, -EINVAL,
                                 "Lazy refcounts only supported with compatibility level 1.1 and above %s", use_v3);
    if (o->version < 3 && o->compression_type != QCOW2_COMPRESSION_ZLIB)
        return error_message_set(error_message, -EINVAL,
                                 "Non-zlib compression type is only supported with compatibility level 1.1 "
                                 "and above %s", use_v3);
    if (o->compression_type > QCOW2_COMPRESSION_ZSTD)
        return error_message_set(error_message, -EINVAL, "Unknown compression type %u", o->compression_type);
    if (o->extended_l2) {
        if (o->version < 3)
            return error_message_set(error_message, -EINVAL,
                                     "Extended L2 entries are only supported with compatibility level 1.1 "
                                     "and above %s", use_v3);
        if (o->cluster_size < 16384)
            return error_message_set(error_message, -EINVAL,
                                     "Extended L2 entries are only supported with cluster sizes of at least "
                                     "16384 bytes");
    }
    if (o->data_file_raw && !o->data_file)
        return error_message_set(error_message, -EINVAL, "data-file-raw requires data-file");
    if (o->data_file && o->version < 3)
        return error_message_set(error_message, -EINVAL,
                                 "External data files are only supported with compatibility level 1.1 and above %s",
                                 use_v3);
    if (o->backing_file && o->data_file_raw)
        return error_message_set(error_message, -EINVAL,
                                 "Backing file and data-file-raw cannot be used at the same time");
    if (o->backing_file && o->preallocation != QCOW2_PREALLOC_OFF && !o->extended_l2)
        return error_message_set(error_message, -EINVAL,
                                 "Backing file and preallocation can only be used at the same time if "
                                 "extended_l2 is on");
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME)
        return error_message_set(error_message, -EINVAL, "Backing file name too long");
    if (o->backing_format && strlen(o->backing_format) > 15)
        return error_message_set(error_message, -EINVAL, "Backing format name too long");
    if (o->size > INT64_MAX)
        return error_message_set(error_message, -EINVAL, "Image size must be less than 8 EiB!");
    uint64_t l2_entries = o->cluster_size / (o->extended_l2 ? 16u : 8u);
    uint64_t l1_entries = DIV_ROUND_UP(o->size, l2_entries * o->cluster_size);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES)
        return error_message_set(error_message, -EFBIG,
                                 "The image size is too large for file format 'qcow2' (try using a larger "
                                 "cluster size)");
    return 0;
}

/* ---- I/O ---------------------------------------------------------------- */

static int write_at(struct layout *L, const void *data, uint64_t length, uint64_t offset)
{
    return file_pwrite_full(L->fd, data, (size_t)length, offset);
}

static void note_write(struct layout *L, uint64_t end) { L->eof = MAX(L->eof, end); }

static int write_zero_clusters(struct layout *L, uint64_t cluster, uint64_t count)
{
    memset(L->buffer, 0, L->cluster_size);
    for (uint64_t i = 0; i < count; i++) {
        int rc = write_at(L, L->buffer, L->cluster_size, (cluster + i) << L->cluster_bits);
        if (rc < 0)
            return rc;
    }
    note_write(L, (cluster + count) << L->cluster_bits);
    return 0;
}

static int write_reftable(struct layout *L)
{
    uint64_t bytes = L->reftable_size * 8;
    uint8_t *table = malloc(bytes);
    if (!table)
        return -ENOMEM;
    for (uint64_t i = 0; i < L->reftable_size; i++)
        qcow2_put_be64(table + i * 8, L->reftable[i] << L->cluster_bits);
    int rc = write_at(L, table, bytes, L->reftable_cluster << L->cluster_bits);
    free(table);
    note_write(L, (L->reftable_cluster << L->cluster_bits) + bytes);
    return rc;
}

/* ---- refcounts ---------------------------------------------------------- */

static bool bit_get(const struct layout *L, uint64_t cluster)
{
    return cluster < L->used_capacity && (L->used[cluster / 8] >> (cluster % 8)) & 1;
}

static int bit_set(struct layout *L, uint64_t cluster, bool value)
{
    if (cluster >= L->used_capacity) {
        if (!value)
            return 0;
        uint64_t capacity = MAX(L->used_capacity * 2, (cluster + 1 + 4095) & ~4095ull);
        uint8_t *grown = realloc(L->used, capacity / 8);
        if (!grown)
            return -ENOMEM;
        memset(grown + L->used_capacity / 8, 0, (capacity - L->used_capacity) / 8);
        L->used = grown;
        L->used_capacity = capacity;
    }
    if (value)
        L->used[cluster / 8] |= (uint8_t)(1u << (cluster % 8));
    else
        L->used[cluster / 8] &= (uint8_t)~(1u << (cluster % 8));
    return 0;
}

/* qcow2_get_refcount: clusters no refcount block covers count as free. */
static bool refcount(const struct layout *L, uint64_t cluster)
{
    uint64_t index = cluster >> L->refblock_bits;
    return index < L->reftable_size && L->reftable[index] && bit_get(L, cluster);
}

static int64_t alloc_clusters_noref(struct layout *L, uint64_t count)
{
retry:
    for (uint64_t i = 0; i < count; i++)
        if (refcount(L, L->free_index++))
            goto retry;
    return (int64_t)(L->free_index - count);
}

static int alloc_refcount_block(struct layout *L, uint64_t cluster);

static int update_refcount(struct layout *L, uint64_t start, uint64_t count, bool decrease)
{
    int rc = 0;
    uint64_t cluster = start;
    uint64_t old_index = UINT64_MAX;
    for (; cluster < start + count; cluster++) {
        uint64_t index = cluster >> L->refblock_bits;
        if (index != old_index) {
            rc = alloc_refcount_block(L, cluster);
            /* QEMU retries the same clusters first after a new refcount block. */
            if (rc == -EAGAIN && L->free_index > start)
                L->free_index = start;
            if (rc < 0)
                break;
        }
        old_index = index;
        if (bit_get(L, cluster) != decrease) { /* refcount would leave 0..1: a bug here */
            rc = -EIO;
            break;
        }
        rc = bit_set(L, cluster, !decrease);
        if (rc < 0)
            break;
        if (decrease && cluster < L->free_index)
            L->free_index = cluster;
    }
    if (rc < 0 && cluster > start)
        update_refcount(L, start, cluster - start, !decrease);
    return rc;
}

/* qcow2_refcount_metadata_size: refcount blocks needed to cover clusters and themselves. */
static uint64_t refblocks_needed(const struct layout *L, uint64_t clusters, bool generous)
{
    return qcow2_refcount_blocks_needed(L->cluster_size, L->refblock_bits, clusters, generous, NULL);
}

uint64_t qcow2_refcount_blocks_needed(uint64_t cluster_size, unsigned refblock_bits, uint64_t clusters,
                                      bool generous, uint64_t *table_clusters)
{
    uint64_t per_table_cluster = cluster_size / 8, per_block = 1ull << refblock_bits;
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DIV_ROUND_UP(blocks, per_table_cluster);
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += DIV_ROUND_UP(table, 2);
            n = 0;
            generous = false;
        }
    } while (n != last);
    if (table_clusters)
        *table_clusters = table;
    return blocks;
}

uint64_t qcow2_fully_allocated_size(uint64_t size, uint64_t cluster_size, uint32_t refcount_bits, bool extended_l2)
{
    /* QEMU's qcow2_calc_prealloc_size: header, L2 tables, L1 table, refcount structure, data. */
    uint64_t l2_entry_size = extended_l2 ? 16 : 8;
    uint64_t data = DIV_ROUND_UP(size, cluster_size) * cluster_size;
    uint64_t metadata = cluster_size;
    uint64_t per_table = cluster_size / l2_entry_size;
    uint64_t l2_entries = DIV_ROUND_UP(data / cluster_size, per_table) * per_table;
    metadata += l2_entries * l2_entry_size;
    uint64_t l1_entries = l2_entries * l2_entry_size / cluster_size;
    l1_entries = DIV_ROUND_UP(l1_entries, cluster_size / 8) * (cluster_size / 8);
    metadata += l1_entries * 8;
    unsigned refblock_bits = log2_exact(cluster_size * 8 / refcount_bits);
    uint64_t table;
    uint64_t blocks = qcow2_refcount_blocks_needed(cluster_size, refblock_bits, (metadata + data) / cluster_size,
                                                   false, &table);
    return metadata + (blocks + table) * cluster_size + data;
}

/*
 * qcow2_refcount_area: a new refcount table, and the refcount blocks still
 * missing, placed at cluster start and describing themselves; returns the
 * cluster after them.
 */
static int64_t refcount_area(struct layout *L, uint64_t start, uint64_t additional, bool exact,
                             uint64_t new_index, uint64_t new_block)
{
    uint64_t total = refblocks_needed(L, start + additional, !exact);
    uint64_t per_table_cluster = L->cluster_size / 8;
    uint64_t table_size = exact ? total : total + DIV_ROUND_UP(total, 2);
    table_size = DIV_ROUND_UP(table_size, per_table_cluster) * per_table_cluster;
    if (total > QCOW2_MAX_REFTABLE_ENTRIES || table_size > QCOW2_MAX_REFTABLE_ENTRIES)
        return -EFBIG;
    uint64_t *table = calloc(table_size, sizeof(*table));
    if (!table)
        return -ENOMEM;
    memcpy(table, L->reftable, MIN(table_size, L->reftable_size) * sizeof(*table));
    if (new_block)
        table[new_index] = new_block;

    uint64_t area_index = start >> L->refblock_bits, missing = 0;
    for (uint64_t i = area_index; i < total; i++)
        missing += !table[i];
    uint64_t table_cluster = start + missing;
    uint64_t end = table_cluster + table_size / per_table_cluster;
    uint64_t block = start;
    int rc = 0;
    for (uint64_t i = area_index; i < total && rc == 0; i++) {
        if (!table[i]) {
            table[i] = block++;
            note_write(L, block << L->cluster_bits);
        }
        uint64_t first = i << L->refblock_bits;
        if (first >= end)
            continue;
        uint64_t j = first < start ? start - first : 0;
        uint64_t end_index = MIN(end - first, 1ull << L->refblock_bits);
        for (; j < end_index && rc == 0; j++)
            rc = bit_set(L, first + j, true);
    }
    /* The old table stays on disk as it was last written: write its final state. */
    if (rc == 0)
        rc = write_reftable(L);
    if (rc < 0) {
        free(table);
        return rc;
    }
    uint64_t old_cluster = L->reftable_cluster, old_clusters = L->reftable_size / per_table_cluster;
    free(L->reftable);
    L->reftable = table;
    L->reftable_size = table_size;
    L->reftable_cluster = table_cluster;
    rc = write_reftable(L);
    if (rc == 0)
        rc = update_refcount(L, old_cluster, old_clusters, true);
    return rc < 0 ? rc : (int64_t)end;
}

static int alloc_refcount_block(struct layout *L, uint64_t cluster)
{
    uint64_t index = cluster >> L->refblock_bits;
    if (index < L->reftable_size && L->reftable[index])
        return 0;
    int64_t new_block = alloc_clusters_noref(L, 1);
    int rc;
    if (((uint64_t)new_block >> L->refblock_bits) == index)
        rc = bit_set(L, (uint64_t)new_block, true); /* describes itself */
    else
        rc = update_refcount(L, (uint64_t)new_block, 1, false);
    if (rc < 0)
        return rc;
    note_write(L, ((uint64_t)new_block + 1) << L->cluster_bits);
    if (index < L->reftable_size) {
        L->reftable[index] = (uint64_t)new_block;
        return -EAGAIN; /* the caller may have wanted that cluster: search again */
    }
    uint64_t per_block = 1ull << L->refblock_bits;
    uint64_t blocks_used = DIV_ROUND_UP(MAX(cluster + 1, (uint64_t)new_block + 1), per_block);
    int64_t end = refcount_area(L, blocks_used * per_block, 0, false, index, (uint64_t)new_block);
    return end < 0 ? (int)end : -EAGAIN;
}

static int64_t alloc_clusters(struct layout *L, uint64_t count)
{
    int64_t offset;
    int rc;
    do {
        offset = alloc_clusters_noref(L, count);
        rc = update_refcount(L, (uint64_t)offset, count, false);
    } while (rc == -EAGAIN);
    return rc < 0 ? rc : offset;
}

/* qcow2_alloc_clusters_at: as many of count clusters from start as are free. */
static int64_t alloc_clusters_at(struct layout *L, uint64_t start, uint64_t count)
{
    uint64_t i;
    int rc;
    do {
        for (i = 0; i < count && !refcount(L, start + i); i++)
            ;
        rc = update_refcount(L, start, i, false);
    } while (rc == -EAGAIN);
    return rc < 0 ? rc : (int64_t)i;
}

/* ---- L1 and L2 ---------------------------------------------------------- */

/* get_cluster_table / l2_allocate: the L2 table of l1_index, allocated on first use. */
static int64_t l2_table(struct layout *L, uint64_t l1_index)
{
    if (!L->l1[l1_index]) {
        int64_t cluster = alloc_clusters(L, 1);
        if (cluster < 0)
            return cluster;
        int rc = write_zero_clusters(L, (uint64_t)cluster, 1);
        if (rc < 0)
            return rc;
        L->l1[l1_index] = (uint64_t)cluster;
    }
    return (int64_t)L->l1[l1_index];
}

/* qcow2_alloc_cluster_link_l2 for preallocation: count guest clusters inside one L2 table. */
static int link_l2(struct layout *L, uint64_t guest_cluster, uint64_t host_cluster, uint64_t count)
{
    int64_t l2 = l2_table(L, guest_cluster / L->l2_entries);
    if (l2 < 0)
        return (int)l2;
    uint64_t l2_offset = (uint64_t)l2 << L->cluster_bits;
    ssize_t n = pread(L->fd, L->buffer, L->cluster_size, (off_t)l2_offset);
    if (n < 0)
        return -errno;
    memset(L->buffer + n, 0, L->cluster_size - (uint64_t)n);
    uint64_t index = guest_cluster % L->l2_entries;
    for (uint64_t i = 0; i < count; i++) /* preallocated: bitmap stays 0 with extended L2 */
        qcow2_put_be64(L->buffer + (index + i) * L->l2_entry_size,
                       ((host_cluster + i) << L->cluster_bits) | QCOW2_OFLAG_COPIED);
    return write_at(L, L->buffer, L->cluster_size, l2_offset);
}

/* qcow2_alloc_host_offset for one stretch of unallocated guest space. */
static int alloc_host_range(struct layout *L, uint64_t offset, uint64_t *bytes, uint64_t *host)
{
    uint64_t start = offset, remaining = *bytes;
    int64_t next_host = -1;
    while (remaining) {
        uint64_t guest_cluster = start >> L->cluster_bits;
        int64_t l2 = l2_table(L, guest_cluster / L->l2_entries);
        if (l2 < 0)
            return (int)l2;
        uint64_t count = MIN(DIV_ROUND_UP(remaining, L->cluster_size),
                             L->l2_entries - guest_cluster % L->l2_entries);
        int64_t host_cluster;
        if (L->data_fd >= 0) {
            /* A data file holds each cluster at its guest offset, outside the refcounts. */
            host_cluster = (int64_t)guest_cluster;
            if (next_host < 0)
                *host = guest_cluster << L->cluster_bits;
        } else if (next_host < 0) {
            host_cluster = alloc_clusters(L, count);
            if (host_cluster < 0)
                return (int)host_cluster;
            *host = (uint64_t)host_cluster << L->cluster_bits;
        } else {
            /* The next stretch must follow on in the file, else the caller starts a new one. */
            int64_t got = alloc_clusters_at(L, (uint64_t)next_host, count);
            if (got < 0)
                return (int)got;
            if (got == 0)
                break;
            count = (uint64_t)got;
            host_cluster = next_host;
        }
        int rc = link_l2(L, guest_cluster, (uint64_t)host_cluster, count);
        if (rc < 0)
            return rc;
        uint64_t done = MIN(remaining, count << L->cluster_bits);
        start += done;
        remaining -= done;
        next_host = host_cluster + (int64_t)count;
    }
    *bytes -= remaining;
    return 0;
}

/* preallocate_co: QEMU hands out at most INT_MAX bytes (cluster-aligned) per call. */
static int preallocate_metadata(struct layout *L, uint64_t size)
{
    uint64_t chunk = (INT_MAX / L->cluster_size) * L->cluster_size;
    uint64_t offset = 0, host = 0, done = 0;
    while (offset < size) {
        done = MIN(size - offset, chunk);
        int rc = alloc_host_range(L, offset, &done, &host);
        if (rc < 0)
            return rc;
        offset += done;
    }
    /* The file must reach the last data cluster, or reads there would fail. */
    if (size && L->data_fd < 0 && host + done > L->eof) {
        if (ftruncate(L->fd, (off_t)(host + done)) < 0)
            return -errno;
        L->eof = host + done;
    }
    return 0;
}

static uint64_t last_used_cluster(const struct layout *L)
{
    for (uint64_t i = DIV_ROUND_UP(L->eof, L->cluster_size); i-- > 0;)
        if (refcount(L, i))
            return i;
    return 0;
}

/* Space for [0, size) of the data file: fallocate()d, or written with zeroes. */
static int preallocate_file(int fd, uint64_t from, uint64_t to, enum qcow2_preallocation mode, uint8_t *zeroes,
                            uint64_t zeroes_size)
{
    if (to <= from)
        return 0;
    if (mode == QCOW2_PREALLOC_FALLOC) {
        int rc = posix_fallocate(fd, (off_t)from, (off_t)(to - from));
        return -rc;
    }
    memset(zeroes, 0, zeroes_size);
    for (uint64_t at = from; at < to; at += MIN(zeroes_size, to - at)) {
        ssize_t written = pwrite(fd, zeroes, MIN(zeroes_size, to - at), (off_t)at);
        if (written < 0)
            return -errno;
        if ((uint64_t)written != MIN(zeroes_size, to - at))
            return -EIO;
    }
    return 0;
}

/* qcow2_co_truncate's falloc/full path: refcount area first, then one data area, then L2s. */
static int preallocate_data(struct layout *L, uint64_t size, enum qcow2_preallocation mode)
{
    if (L->data_fd >= 0) {
        /* The data file is preallocated; the image only maps it. */
        int rc = preallocate_file(L->data_fd, 0, size, mode, L->buffer, L->cluster_size);
        return rc < 0 ? rc : preallocate_metadata(L, size);
    }
    uint64_t old_end = last_used_cluster(L) + 1;
    uint64_t data = DIV_ROUND_UP(size, L->cluster_size);
    uint64_t l2_tables = DIV_ROUND_UP(data, L->l2_entries) + 1;
    int64_t start = refcount_area(L, old_end, data + l2_tables, true, 0, 0);
    if (start < 0)
        return (int)start;
    int64_t got = alloc_clusters_at(L, (uint64_t)start, data);
    if (got < 0)
        return (int)got;
    if ((uint64_t)got != data)
        return -EIO;
    uint64_t from = L->eof, to = ((uint64_t)start + data) << L->cluster_bits;
    if (to > from) {
        int rc = preallocate_file(L->fd, from, to, mode, L->buffer, L->cluster_size);
        if (rc < 0)
            return rc;
        L->eof = to;
    }
    for (uint64_t guest = 0, host = (uint64_t)start; guest < data;) {
        uint64_t count = MIN(data - guest, L->l2_entries - guest % L->l2_entries);
        int rc = link_l2(L, guest, host, count);
        if (rc < 0)
            return rc;
        guest += count;
        host += count;
    }
    return 0;
}

/* ---- final metadata ------------------------------------------------------- */

static void put_refcount(struct layout *L, uint8_t *block, uint64_t index)
{
    qcow2_refcount_entry_set(block, 1u << L->refcount_order, index, 1);
}

static int write_refcount_blocks(struct layout *L)
{
    uint64_t per_block = 1ull << L->refblock_bits;
    for (uint64_t i = 0; i < L->reftable_size; i++) {
        if (!L->reftable[i])
            continue;
        memset(L->buffer, 0, L->cluster_size);
        for (uint64_t j = 0; j < per_block; j++)
            if (bit_get(L, i * per_block + j))
                put_refcount(L, L->buffer, j);
        int rc = write_at(L, L->buffer, L->cluster_size, L->reftable[i] << L->cluster_bits);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int write_l1(struct layout *L)
{
    if (!L->l1_size)
        return 0;
    uint8_t *table = malloc((size_t)L->l1_size * 8);
    if (!table)
        return -ENOMEM;
    for (uint32_t i = 0; i < L->l1_size; i++)
        qcow2_put_be64(table + (size_t)i * 8, L->l1[i] ? (L->l1[i] << L->cluster_bits) | QCOW2_OFLAG_COPIED : 0);
    int rc = write_at(L, table, (uint64_t)L->l1_size * 8, L->l1_cluster << L->cluster_bits);
    free(table);
    return rc;
}

static int write_header(struct layout *L, const struct qcow2_create_options *o)
{
    struct qcow2_image_header image = {
        .header = {
            .version = o->version,
            .cluster_bits = L->cluster_bits,
            .size = o->size,
            .l1_size = L->l1_size,
            .l1_table_offset = L->l1_size ? L->l1_cluster << L->cluster_bits : 0,
            .refcount_table_offset = L->reftable_cluster << L->cluster_bits,
            .refcount_table_clusters = (uint32_t)(L->reftable_size * 8 / L->cluster_size),
            .incompatible_features = (o->extended_l2 ? QCOW2_INCOMPAT_EXTENDED_L2 : 0) |
                                     (o->compression_type ? QCOW2_INCOMPAT_COMPRESSION : 0) |
                                     (o->data_file ? QCOW2_INCOMPAT_DATA_FILE : 0),
            .autoclear_features = o->data_file_raw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0,
            .compatible_features = o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0,
            .refcount_order = L->refcount_order,
            .compression_type = o->compression_type,
        },
    };
    int rc = 0;
    if ((o->backing_file && !(image.backing_file = strdup(o->backing_file))) ||
        (o->backing_format && !(image.backing_format = strdup(o->backing_format))) ||
        (o->data_file && !(image.data_file = strdup(o->data_file))))
        rc = -ENOMEM;
    /*
     * QEMU writes the feature-name table (392 bytes) for v3 only, and not with
     * clusters of 4 KiB or less, where it would crowd out the backing name.
     */
    if (rc == 0 && o->version >= 3 && L->cluster_size > 4096)
        rc = qcow2_image_header_set_default_feature_names(&image);
    if (rc == 0) {
        rc = qcow2_image_header_encode(&image, L->buffer, L->cluster_size);
        if (rc == -ENOSPC && image.feature_name_count) {
            free(image.feature_names);
            image.feature_names = NULL;
            image.feature_name_count = 0;
            rc = qcow2_image_header_encode(&image, L->buffer, L->cluster_size);
        }
    }
    if (rc == 0)
        rc = write_at(L, L->buffer, L->cluster_size, 0);
    qcow2_image_header_clear(&image);
    return rc;
}

/* ---- the whole image ------------------------------------------------------ */

static int build(struct layout *L, const struct qcow2_create_options *o)
{
    uint64_t cs = L->cluster_size;
    /* QEMU's skeleton: refcount table at cluster 1 pointing at an empty block at cluster 2. */
    L->reftable_size = cs / 8;
    L->reftable_cluster = 1;
    L->reftable = calloc(L->reftable_size, sizeof(*L->reftable));
    if (!L->reftable)
        return -ENOMEM;
    L->reftable[0] = 2;
    int rc = write_zero_clusters(L, 0, 3);
    if (rc == 0)
        rc = write_reftable(L);
    if (rc < 0)
        return rc;
    int64_t first = alloc_clusters(L, 3);
    if (first < 0)
        return (int)first;

    L->l1_size = (uint32_t)DIV_ROUND_UP(o->size, L->l2_entries * cs);
    L->l1 = calloc(L->l1_size ? L->l1_size : 1, sizeof(*L->l1));
    if (!L->l1)
        return -ENOMEM;
    if (L->l1_size) {
        int64_t l1 = alloc_clusters(L, DIV_ROUND_UP((uint64_t)L->l1_size * 8, cs));
        if (l1 < 0)
            return (int)l1;
        L->l1_cluster = (uint64_t)l1;
        note_write(L, ((uint64_t)l1 << L->cluster_bits) + (uint64_t)L->l1_size * 8);
    }
    enum qcow2_preallocation preallocation = o->preallocation;
    if (o->data_file_raw && preallocation == QCOW2_PREALLOC_OFF)
        preallocation = QCOW2_PREALLOC_METADATA; /* a raw data file's clusters are all mapped, as QEMU does */
    if (preallocation == QCOW2_PREALLOC_METADATA)
        rc = preallocate_metadata(L, o->size);
    else if (preallocation != QCOW2_PREALLOC_OFF && o->size)
        rc = preallocate_data(L, o->size, preallocation);
    if (rc == 0)
        rc = write_refcount_blocks(L);
    if (rc == 0)
        rc = write_reftable(L);
    if (rc == 0)
        rc = write_l1(L);
    if (rc == 0)
        rc = write_header(L, o);
    /* Everything QEMU wrote reaches eof; our writes may have stopped short of it. */
    struct stat st;
    if (rc == 0 && fstat(L->fd, &st) == 0 && (uint64_t)st.st_size < L->eof && ftruncate(L->fd, (off_t)L->eof) < 0)
        rc = -errno;
    return rc;
}

int qcow2_create(const char *path, const struct qcow2_create_options *options, char **error_message)
{
    char *reason = NULL;
    int rc = qcow2_create_validate(options, &reason);
    if (rc < 0) {
        error_message_set(error_message, 0, "%s: %s", path, reason ? reason : "invalid options");
        free(reason);
        return rc;
    }
    struct layout L = {
        .cluster_bits = log2_exact(options->cluster_size),
        .cluster_size = options->cluster_size,
        .refcount_order = log2_exact(options->refcount_bits),
        .l2_entry_size = options->extended_l2 ? 16u : 8u,
        .data_fd = -1,
    };
    L.refblock_bits = L.cluster_bits + 3 - L.refcount_order;
    L.l2_entries = L.cluster_size / L.l2_entry_size;
    L.buffer = malloc(L.cluster_size);
    if (!L.buffer)
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    L.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (L.fd < 0) {
        rc = -errno;
        free(L.buffer);
        return error_message_set(error_message, rc, "%s: Could not create '%s': %s", path, path, strerror(-rc));
    }
    if (options->data_file) {
        /* qemu-img creates the data file afresh, the virtual size long. */
        L.data_fd = open(options->data_file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (L.data_fd < 0 || ftruncate(L.data_fd, (off_t)options->size) < 0) {
            rc = -errno;
            if (L.data_fd >= 0)
                close(L.data_fd);
            close(L.fd);
            free(L.buffer);
            return error_message_set(error_message, rc, "%s: Could not create '%s': %s", path, options->data_file,
                                     strerror(-rc));
        }
    }
    rc = build(&L, options);
    if (rc == 0 && !options->no_sync && fsync(L.fd) < 0)
        rc = -errno;
    if (L.data_fd >= 0) {
        if (rc == 0 && !options->no_sync && fsync(L.data_fd) < 0)
            rc = -errno;
        if (close(L.data_fd) < 0 && rc == 0)
            rc = -errno;
    }
    if (close(L.fd) < 0 && rc == 0)
        rc = -errno;
    free(L.buffer);
    free(L.used);
    free(L.reftable);
    free(L.l1);
    if (rc == -EFBIG)
        return error_message_set(error_message, rc, "%s: the image needs a refcount table larger than qcow2 allows",
                                 path);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: could not write the image: %s", path, strerror(-rc));
    return 0;
}
