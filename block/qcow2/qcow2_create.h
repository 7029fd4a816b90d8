/*
 * qcow2_create: write a new, empty qcow2 image the way `qemu-img create
 * -f qcow2` does, cluster for cluster.
 *
 * QEMU builds an image by running its own allocator on a three-cluster
 * skeleton (header, refcount table, refcount block) and then growing it to
 * the requested size; where the L1 table, new refcount blocks, L2 tables and
 * preallocated data land follows from that allocator.  qcow2_create replays
 * the same allocation decisions in memory, so images luna creates are laid
 * out exactly as QEMU's and `qemu-img check` finds nothing to say.
 *
 * A tool-side function: plain blocking POSIX I/O, fsync before returning.
 * luna-img uses it; lunad's overlays will too (from a pool thread).
 */
#ifndef LUNA_BLOCK_QCOW2_CREATE_H
#define LUNA_BLOCK_QCOW2_CREATE_H

#include <stdbool.h>
#include <stdint.h>

enum qcow2_preallocation {
    QCOW2_PREALLOC_OFF,
    QCOW2_PREALLOC_METADATA, /* L2 tables and data clusters allocated, data left sparse */
    QCOW2_PREALLOC_FALLOC,   /* as metadata, data area fallocate()d */
    QCOW2_PREALLOC_FULL,     /* as metadata, data area written with zeroes */
};

struct qcow2_create_options {
    uint64_t size;                 /* virtual size, bytes */
    uint32_t version;              /* 2 (compat 0.10) or 3 (compat 1.1) */
    uint32_t cluster_size;         /* power of two, 512 B to 2 MiB */
    uint32_t refcount_bits;        /* 1, 2, 4, ..., 64; v2 only 16 */
    bool lazy_refcounts;           /* v3 only */
    bool extended_l2;              /* v3, clusters >= 16 KiB */
    uint8_t compression_type;      /* QCOW2_COMPRESSION_ZLIB or _ZSTD (v3) */
    enum qcow2_preallocation preallocation;
    const char *backing_file;      /* NULL: none; stored as given */
    const char *backing_format;    /* NULL: none */
    /*
     * External data file (v3): created (truncated) at this path, relative to
     * the working directory as qemu-img does, and stored in the header as
     * given; guest clusters then live there at their guest offsets.
     */
    const char *data_file;         /* NULL: none */
    bool data_file_raw;            /* keep the data file a valid raw image (implies metadata preallocation) */
    bool no_sync;                  /* skip the final fsync: a scratch image no crash must keep */
};

/* qemu-img's defaults: v3, 64 KiB clusters, 16-bit refcounts, zlib, no preallocation. */
void qcow2_create_options_init(struct qcow2_create_options *options);

/* "off", "metadata", "falloc", "full" <-> enum; parse returns 0 or -EINVAL. */
int qcow2_preallocation_parse(const char *name, enum qcow2_preallocation *out);
const char *qcow2_preallocation_name(enum qcow2_preallocation mode);

/*
 * Check options as qemu-img does (same messages, without the file name).
 * 0 or -EINVAL with a malloc'd message.
 */
int qcow2_create_validate(const struct qcow2_create_options *options, char **error_message);

/*
 * Create (or truncate) path and write the image.  0, or -errno with a
 * malloc'd message naming path.  On failure after the file was created the
 * partial file is left in place, as qemu-img leaves it.
 */
int qcow2_create(const char *path, const struct qcow2_create_options *options, char **error_message);

/*
 * Refcount blocks needed to count clusters clusters and the refcount
 * structure itself (QEMU's qcow2_refcount_metadata_size; refblock_bits:
 * log2 of refcounts per block; generous: room for the table to grow);
 * *table_clusters, if not NULL, receives the refcount table's clusters.
 */
uint64_t qcow2_refcount_blocks_needed(uint64_t cluster_size, unsigned refblock_bits, uint64_t clusters,
                                      bool generous, uint64_t *table_clusters);

/* Bytes of an image of size with every cluster allocated (QEMU's qcow2_calc_prealloc_size), for measure. */
uint64_t qcow2_fully_allocated_size(uint64_t size, uint64_t cluster_size, uint32_t refcount_bits, bool extended_l2);

#endif
