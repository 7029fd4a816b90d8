/*
 * qcow2_image: operations on a whole open qcow2 image beyond guest I/O, for
 * luna-img's verbs (snapshot, resize, amend, commit, rebase, map) and
 * lunad's overlay administration.  Each takes a bdev opened with format
 * qcow2 and blocks: call it from a tool or a pool thread, never from an
 * event loop.  Guest I/O may be in flight only where a function says so.
 */
#ifndef LUNA_BLOCK_QCOW2_IMAGE_H
#define LUNA_BLOCK_QCOW2_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_snapshots.h"

/* True when bdev is an open qcow2 image (the functions below need one). */
bool qcow2_image_is(const struct bdev *bdev);

/* What a stretch of guest bytes is in this image alone, not counting its backing file. */
struct qcow2_layer_extent {
    enum qcow2_cluster_kind kind;
    uint64_t host_offset;       /* NORMAL, ZERO_ALLOC: host offset of the first byte; COMPRESSED: of its data */
    uint64_t compressed_length; /* COMPRESSED: bytes of compressed data */
    uint64_t length;            /* guest bytes from the offset asked (> 0); NORMAL: contiguous on the host */
};

/*
 * Describe a prefix of [offset, offset + length) (inside the disk): one
 * run of the same kind, contiguous on the host for NORMAL.  Safe with
 * guest I/O in flight (takes the metadata lock).  0 or -errno.
 */
int qcow2_layer_status(struct bdev *bdev, uint64_t offset, uint64_t length, struct qcow2_layer_extent *out);

/*
 * The host cluster a guest cluster's L2 entry names (0: none, or
 * compressed), whatever its subcluster bitmap says: QEMU's status keeps
 * the host offset of an unallocated subcluster of an allocated cluster.
 */
int qcow2_image_cluster_host(struct bdev *bdev, uint64_t guest_cluster, uint64_t *host);

/*
 * How many host clusters below end_cluster are in use (refcount above
 * zero), counting no further than limit: QEMU's test for an image
 * preallocated with metadata.  Refcount blocks that cannot be (misaligned,
 * outside the file) count nothing.  Takes the metadata lock.  0 or -errno.
 */
int qcow2_image_count_referenced(struct bdev *bdev, uint64_t end_cluster, uint64_t limit, uint64_t *count);

/* The image's decoded header, extensions and backing name (read-only view, valid while open). */
const struct qcow2_image_header *qcow2_image_header(const struct bdev *bdev);

/* The backing bdev the image reads unallocated clusters from; NULL when it has none. */
struct bdev *qcow2_image_backing(const struct bdev *bdev);

/*
 * Point the image at another backing file (NULL: none) with its format
 * name (NULL: none recorded), rewriting the header cluster in place and
 * flushing.  Takes effect for readers that open the image afterwards; the
 * open bdev keeps the backing bdev it has.  -ENOSPC when the names do not
 * fit in the first cluster (as qemu-img says), -EROFS when read-only.
 */
int qcow2_image_set_backing(struct bdev *bdev, const char *backing_file, const char *backing_format);

/*
 * Drop every cluster the image maps (data, zero and compressed clusters
 * alike) so that it reads as its backing file again: what QEMU's
 * make_empty leaves after a commit.  A v3 image without snapshots,
 * bitmaps or an external data file is reset to a new image's layout and
 * its file cut after it (qcow2_empty.c); otherwise the L2 entries are
 * cleared and written before the refcounts fall, and the freed clusters'
 * file ranges are punched only once that is on disk.  No guest I/O
 * meanwhile.  0 or -errno (-EROFS when read-only).
 */
int qcow2_image_make_empty(struct bdev *bdev);

/*
 * Make the whole clusters of [offset, offset + length) (cluster-aligned),
 * which must be unallocated, zero clusters, with or without a backing
 * file: they read as zeroes even once one is added (safe rebase of an
 * image without a backing file).  -ENOTSUP on v2 images (no zero flag),
 * -EBUSY when a cluster is allocated after all; no guest I/O meanwhile.
 */
int qcow2_image_zero_unallocated(struct bdev *bdev, uint64_t offset, uint64_t length);

/*
 * Grow the virtual size to size bytes (never shrinks), moving the L1
 * table to a larger one when it does not cover the new size, as QEMU's
 * resize does.  No guest I/O meanwhile.  0 or -errno (-EFBIG beyond
 * QEMU's L1 limit, -EROFS when read-only).
 */
int qcow2_image_grow(struct bdev *bdev, uint64_t size);

/*
 * Internal snapshots (qcow2_snapshot.c), as QEMU makes them.  No guest
 * I/O meanwhile.  0 or -errno: -EROFS read-only, -ENOENT no such snapshot,
 * -EINVAL a refcount would overflow (refcount_bits too small), -ENOTSUP
 * an image with an external data file, -EIO a corrupt image.
 *
 * list: the snapshot table as the image holds it now (free it with
 * qcow2_snapshot_table_clear).  create: a snapshot of the active image
 * named name (names need not be unique), with the next numeric id and the
 * date given.  apply: make the active image what the snapshot holds
 * (its virtual size too).  delete: drop the snapshot.  apply and delete
 * find it by id first, then by name, as QEMU does.
 */
int qcow2_image_snapshot_list(struct bdev *bdev, struct qcow2_snapshot_table *table);
int qcow2_image_snapshot_create(struct bdev *bdev, const char *name, uint32_t date_sec, uint32_t date_nsec);
int qcow2_image_snapshot_apply(struct bdev *bdev, const char *id_or_name);
int qcow2_image_snapshot_delete(struct bdev *bdev, const char *id_or_name);

/*
 * Resizing beyond qcow2_image_grow (qcow2_resize.c), as qemu-img resize
 * does.  No guest I/O meanwhile; 0 or -errno (-EROFS read-only).
 *
 * shrink: every cluster past the new end unmapped and freed, L2 tables
 * wholly past it dropped (the L1 keeps its size, as QEMU's), the file cut
 * after its last used cluster (a data file: to the new size).
 * preallocate: guest bytes [from, to) (a grown range) mapped to host
 * clusters that read as zeroes: metadata leaves them sparse, falloc
 * fallocate()s them, full writes zeroes (enum qcow2_preallocation).
 * data_file_resize: an external data file follows the virtual size.
 */
int qcow2_image_shrink(struct bdev *bdev, uint64_t size);
int qcow2_image_preallocate(struct bdev *bdev, uint64_t from, uint64_t to, enum qcow2_preallocation mode);
int qcow2_image_data_file_resize(struct bdev *bdev, uint64_t size);

/*
 * Amending (qcow2_amend.c), as qemu-img amend does.  No guest I/O
 * meanwhile; 0 or -errno.  set_version: 3 upgrades (header only); 2
 * downgrades, expanding zero clusters first (-ENOTSUP unless refcounts
 * are 16 bits and no incompatible feature but the dirty bit and zstd
 * without compressed clusters is set: the caller says which, as qemu-img
 * does).  set_lazy_refcounts: the
 * compatible bit (v3 only, else -ENOTSUP).  report (may be NULL) hears of
 * progress in QEMU's steps.
 */
typedef void qcow2_progress_fn(void *opaque, uint64_t done, uint64_t total);
int qcow2_image_set_version(struct bdev *bdev, uint32_t version, qcow2_progress_fn *report, void *opaque);
int qcow2_image_set_lazy_refcounts(struct bdev *bdev, bool enabled);

/*
 * The refcount width becomes 1 << order bits (qcow2_refcount_order.c):
 * new refcount structures past the end, the header switched to them, the
 * old ones freed.  v3 only.  -ERANGE when a refcount does not fit: which
 * cluster, and its refcount, in *overflow.
 */
struct qcow2_refcount_overflow {
    uint64_t offset;
    uint64_t refcount;
};
int qcow2_image_set_refcount_order(struct bdev *bdev, uint32_t order, struct qcow2_refcount_overflow *overflow);
/* Whether the active image or a snapshot maps a compressed cluster (a zstd image can go v2 only without). */
int qcow2_image_compressed_clusters(struct bdev *bdev, bool *found);

#endif
