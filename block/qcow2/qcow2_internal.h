/*
 * qcow2_internal: the state of one open qcow2 image, shared by the files
 * of the driver (block/qcow2/).
 *
 * Locking.  Everything about metadata (the L1 table, the table caches, the
 * refcount table, allocation, the list of clusters being written) is
 * guarded by one mutex per image, as QEMU serialises metadata per image.
 * The mutex is held across metadata I/O, which only pool threads do; an
 * event-loop thread only ever try-locks it, to map a request whose L2
 * table is cached, and hands the request to the pool when that fails.
 * Guest data never moves under the mutex.
 *
 * Clusters being written.  A write that allocates a cluster, fills part of
 * it from an older copy (copy-on-write) or changes its L2 entry marks the
 * guest cluster busy until its L2 entry is updated; another such write to
 * the same cluster waits (design notes: the second writer waits for the
 * first's allocation, then writes into it).  Overwrites of clusters already
 * owned by this image (COPIED) need no mark: their mapping cannot change
 * under them except by a free.
 *
 * Frees.  A host cluster whose refcount drops to zero can be handed out
 * again, so data I/O that mapped it before its L2 entry changed must finish
 * first: every data transfer counts itself in one of two epochs, and a free
 * switches the epoch and waits for the old one to drain before the
 * refcount is decremented (qcow2_quiesce_data_io).
 *
 * Crash order (what survives kill -9 or power loss): refcount increments
 * reach the disk before the L2 entries that use them, cleared L2 entries
 * before the refcount decrements they allow, a new L2 table before the L1
 * entry that points to it; with a flush between dependent steps.  Caches
 * are written back (QEMU's scheme): each cache may depend on the other
 * having been written and flushed first.
 */
#ifndef LUNA_BLOCK_QCOW2_INTERNAL_H
#define LUNA_BLOCK_QCOW2_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/qcow2/qcow2_format.h"

/* ---- table caches (qcow2_cache.c) ---- */

struct qcow2_cache_entry {
    uint64_t key;     /* table index (L1 index or refcount table index) */
    uint64_t offset;  /* host offset of the table; 0: slot empty */
    uint8_t *data;    /* one cluster, big-endian as on disk */
    uint64_t last_use;
    bool dirty;
};

struct qcow2_cache {
    struct qcow2 *image;
    const char *name; /* "L2" or "refcount", for messages */
    struct qcow2_cache_entry *entries;
    uint32_t count;
    uint64_t clock;
    int32_t *slot_of_key; /* key -> slot, -1 when not cached */
    uint64_t key_count;
    /* Dirty tables here may be written only after this cache was written and flushed. */
    struct qcow2_cache *depends;
};

int qcow2_cache_init(struct qcow2_cache *cache, struct qcow2 *image, const char *name, uint32_t count,
                     uint64_t key_count);
void qcow2_cache_destroy(struct qcow2_cache *cache);
/* Grow the key space (refcount table growth). */
int qcow2_cache_resize_keys(struct qcow2_cache *cache, uint64_t key_count);
/* The cached table for key, or NULL (no I/O). */
uint8_t *qcow2_cache_peek(struct qcow2_cache *cache, uint64_t key);
/*
 * The table for key stored at offset, read from the file on a miss (which
 * may first write back an evicted dirty table).  With fresh, the table is
 * new: it starts zeroed and dirty instead of being read.
 */
int qcow2_cache_get(struct qcow2_cache *cache, uint64_t key, uint64_t offset, bool fresh, uint8_t **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *cache, uint64_t key);
/* Forget key's table without writing it (its cluster is being freed). */
void qcow2_cache_discard(struct qcow2_cache *cache, uint64_t key);
/* Forget every table without writing it (after a write-back, before tables change on disk behind it). */
void qcow2_cache_drop_all(struct qcow2_cache *cache);
/* Record that cache must not be written before dependency is written and flushed. */
int qcow2_cache_set_dependency(struct qcow2_cache *cache, struct qcow2_cache *dependency);
/* Write every dirty table (dependencies first).  Does not flush the file afterwards. */
int qcow2_cache_write_back(struct qcow2_cache *cache);

/* ---- the image ---- */

extern const struct bdev_ops qcow2_ops;

/* A guest cluster being allocated or having its L2 entry changed. */
struct qcow2_busy_cluster {
    uint64_t guest_cluster;
    struct qcow2_busy_cluster *next;
};

struct qcow2 {
    struct bdev *bdev;    /* this image */
    struct bdev *file;    /* the image file (raw or host_device driver) */
    /*
     * Where guest clusters live: the image file, or an external data file
     * (data_external), where a cluster sits at its guest offset and is not
     * refcounted; data_raw: the data file must stay a faithful raw image
     * (zeroes written there too).
     */
    struct bdev *data;
    bool data_external;
    bool data_raw;
    struct bdev *backing; /* NULL when there is none */
    bool backing_borrowed; /* bdev_options.backing: not ours to close */
    struct qcow2_image_header image;
    bool readonly;
    enum bdev_cache_mode cache_mode;

    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_entry_size;  /* 8, or 16 with extended L2 */
    uint32_t l2_entries;     /* entries per L2 table */
    bool extended_l2;
    uint64_t subcluster_size; /* cluster_size / 32 with extended L2, else cluster_size */
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint32_t refcount_block_entries;

    pthread_mutex_t lock;
    pthread_cond_t changed; /* busy clusters released, epochs drained */

    uint64_t *l1_table;      /* host order, l1_size entries */
    uint32_t l1_size;
    uint64_t *refcount_table; /* host order */
    uint64_t refcount_table_entries;
    struct qcow2_cache l2_cache;
    struct qcow2_cache refcount_cache;

    uint64_t free_cluster_hint; /* no free cluster below this index */
    uint64_t compressed_tail;   /* next free byte after compressed data in a shared cluster; 0: none */
    uint64_t host_end;          /* bytes: every allocated cluster lies below */
    struct qcow2_busy_cluster *busy;

    /* Data transfers in flight per epoch (see the header comment). */
    atomic_uint_fast64_t data_io[2];
    atomic_uint epoch;             /* changes only under lock */
    atomic_bool quiescing;
    pthread_mutex_t quiesce_lock;  /* never held with anything else: loop threads take it */
    pthread_cond_t quiesce_drained;

    bool corrupt; /* set when metadata was found inconsistent: writes refused from then on */
};

/*
 * Record that the image file now reaches end (allocation past its end):
 * the file bdev accepts I/O up to its size.  Lock held.
 */
static inline void qcow2_host_end_grow(struct qcow2 *q, uint64_t end)
{
    if (end > q->host_end)
        q->host_end = end;
    if (end > q->file->size)
        q->file->size = end;
}

/*
 * Make the file under a bdev (image or data file) at least end bytes long
 * when it is a regular file: clusters allocated but never written (zeroed,
 * preallocated) must lie inside it.  0 or -errno.
 */
int qcow2_file_cover(struct bdev *file, uint64_t end);

/* Metadata file I/O (blocking, lock held). */
int qcow2_file_read(struct qcow2 *q, uint64_t offset, void *buffer, uint64_t length);
int qcow2_file_write(struct qcow2 *q, uint64_t offset, const void *buffer, uint64_t length);
/*
 * Rewrite the first cluster from q->image (header, extensions, backing
 * name) and flush: for changes of the header beyond its table fields.
 * -ENOSPC when it does not fit.  Lock held.
 */
int qcow2_header_write(struct qcow2 *q);
/* fdatasync unless cache=unsafe. */
int qcow2_file_flush(struct qcow2 *q);
/* Mark the image corrupt (in memory: writes fail with -EIO from then on); returns -EIO. */
int qcow2_signal_corruption(struct qcow2 *q, const char *what, uint64_t offset);

/*
 * Overlap checks (qcow2_overlap.c), lock held.  fixed: the header, L1
 * table, refcount table and snapshot table (constant time, for every
 * mapping); the full check adds every refcount block and L2 table (for
 * allocation).
 */
bool qcow2_overlaps_fixed_metadata(const struct qcow2 *q, uint64_t offset, uint64_t length);
bool qcow2_overlaps_metadata(const struct qcow2 *q, uint64_t offset, uint64_t length);

/* Write back caches in order and flush the file: what FLUSH does.  Lock held. */
int qcow2_flush_metadata(struct qcow2 *q);

/*
 * Move the active L1 table to new clusters holding entries slots (the old
 * entries kept, the rest zero) and set the virtual size to size, header
 * last; the old table is freed.  Lock held, no guest I/O.
 */
int qcow2_l1_grow(struct qcow2 *q, uint32_t entries, uint64_t size);

/* ---- refcounts and allocation (qcow2_refcount.c), lock held ---- */

int qcow2_refcount_get(struct qcow2 *q, uint64_t cluster_index, uint64_t *refcount);
/* How many host clusters below end_cluster have a refcount above zero, counting up to limit. */
int qcow2_count_referenced(struct qcow2 *q, uint64_t end_cluster, uint64_t limit, uint64_t *count);
/* Add delta to the refcounts of count clusters from host offset. */
int qcow2_refcount_update(struct qcow2 *q, uint64_t offset, uint64_t count, int64_t delta);
/* Allocate count contiguous clusters (refcount 1 each); *offset receives the first. */
int qcow2_alloc_clusters(struct qcow2 *q, uint64_t count, uint64_t *offset);
/*
 * Room for length bytes (less than a cluster) of compressed data, packed
 * after the previous compressed data when it fits in the same host cluster
 * (whose refcount then counts one more user), else at a new cluster.
 */
int qcow2_alloc_bytes(struct qcow2 *q, uint64_t length, uint64_t *offset);
/*
 * Drop one reference to each of count clusters from offset, after the
 * caller cleared the L2/L1 entries that used them: waits for data
 * transfers that may still use them, then decrements.
 */
int qcow2_free_clusters(struct qcow2 *q, uint64_t offset, uint64_t count);
/* Free what an L2 entry points to (normal, zero-allocated or compressed). */
int qcow2_free_l2_entry_target(struct qcow2 *q, uint64_t entry);
/*
 * The same for count entries already cleared from their L2 tables, with a
 * single wait for data transfers (a large discard frees many clusters).
 */
int qcow2_free_l2_entry_targets(struct qcow2 *q, const uint64_t *entries, size_t count);

/* ---- mapping (qcow2_map.c), lock held ---- */

/* What a stretch of guest bytes maps to. */
struct qcow2_mapping {
    enum qcow2_cluster_kind kind;
    uint64_t host_offset; /* NORMAL: of the first byte; COMPRESSED: the raw L2 entry */
    uint64_t length;      /* bytes from the guest offset with this kind (contiguous host for NORMAL) */
    bool copied;          /* NORMAL: the cluster is this image's alone (write in place) */
};

/*
 * Map a prefix of [offset, offset + length) that lies in one L2 table.
 * With cache_only, -EAGAIN instead of reading an L2 table from the file.
 */
int qcow2_map(struct qcow2 *q, uint64_t offset, uint64_t length, bool cache_only, struct qcow2_mapping *mapping);

/*
 * The L2 entry (and extended bitmap) of a guest cluster, with the table
 * loaded; with allocate, an L2 table is allocated when the L1 entry is
 * empty (or shared with a snapshot).
 */
int qcow2_l2_entry_get(struct qcow2 *q, uint64_t guest_cluster, bool allocate, uint64_t *entry, uint64_t *bitmap);
/* Replace the L2 entry of a guest cluster (table must be writable: allocate above). */
int qcow2_l2_entry_set(struct qcow2 *q, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap);

/* Busy guest clusters: wait until none of [first, first + count) is busy, then mark them. */
int qcow2_busy_acquire(struct qcow2 *q, uint64_t first, uint64_t count, struct qcow2_busy_cluster *marks);
void qcow2_busy_release(struct qcow2 *q, uint64_t count, struct qcow2_busy_cluster *marks);

/*
 * Data-transfer epochs.  begin with the lock held (right after mapping),
 * end from any thread without it, once the transfer is over.
 */
unsigned qcow2_data_io_begin(struct qcow2 *q);
void qcow2_data_io_end(struct qcow2 *q, unsigned epoch);
/*
 * Wait until every data transfer begun before this call has ended.  Lock
 * held throughout, so no new transfer begins meanwhile; transfers never
 * need the lock to end.
 */
void qcow2_quiesce_data_io(struct qcow2 *q);

/*
 * ---- whole-image table walks (qcow2_snapshot.c): snapshots, amend ----
 *
 * begin: take the lock, write back the caches and empty the L2 cache, so
 * tables can be read and changed in the file directly (-EROFS, -EIO when
 * corrupt); end: write back, flush, unlock, returning rc or the flush's
 * failure.  In between, lock held, no guest I/O:
 */
int qcow2_tables_begin(struct qcow2 *q);
int qcow2_tables_end(struct qcow2 *q, int rc);
/* The L2 table an L1 entry names, into table (a cluster); *offset 0 when none. */
int qcow2_l2_table_read(struct qcow2 *q, uint64_t l1_entry, uint64_t *offset, uint8_t *table);
/* Write l1_size entries (of slots, the rest zero) at offset. */
int qcow2_l1_write(struct qcow2 *q, uint64_t offset, const uint64_t *l1, uint32_t l1_size, uint32_t slots);
/* Set the COPIED flags of the active L1 and its L2 entries from the refcounts, on disk. */
int qcow2_copied_flags_fix(struct qcow2 *q);
/* The snapshot table (raw bytes kept), and a snapshot's L1 table checked to lie in the file. */
struct qcow2_snapshot_table;
int qcow2_snapshots_load(struct qcow2 *q, struct qcow2_snapshot_table *table);
int qcow2_snapshot_l1_read(struct qcow2 *q, const struct qcow2_snapshot *snapshot, uint64_t **out);
/*
 * A read-only open of a snapshot (bdev_options.snapshot_*): the active L1
 * in memory becomes the snapshot's.  -ENOENT when there is none such.
 */
int qcow2_snapshot_view_load(struct qcow2 *q, const char *id, const char *name, const char *id_or_name);

/* ---- guest I/O, blocking (qcow2_io.c); pool threads and tools ---- */

/* The block-status flags of a mapping kind (unallocated: as if there were no backing file). */
static inline uint32_t qcow2_extent_flags(enum qcow2_cluster_kind kind)
{
    switch (kind) {
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return BDEV_EXTENT_ZERO;
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_UNALLOCATED:
        return BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO;
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_COMPRESSED:
        break;
    }
    return 0;
}

/* Append an extent to io's, merging with the last one when the flags match. */
static inline void qcow2_extent_add(struct bdev_io *io, uint32_t *count, uint64_t length, uint32_t flags)
{
    if (*count > 0 && io->extents[*count - 1].flags == flags)
        io->extents[*count - 1].length += length;
    else
        io->extents[(*count)++] = (struct bdev_extent){.length = length, .flags = flags};
}

int qcow2_blocking(struct bdev *bdev, struct bdev_io *io);

/* ---- compressed clusters (qcow2_compress.c) ---- */

/* Inflate input into exactly cluster_size bytes of output. */
int qcow2_decompress(uint8_t compression_type, const uint8_t *input, size_t input_length, uint8_t *output,
                     size_t cluster_size);
/* Deflate a cluster; -ENOSPC when the result would not be smaller than max_output. */
int qcow2_compress(uint8_t compression_type, const uint8_t *input, size_t cluster_size, uint8_t *output,
                   size_t max_output, size_t *output_length);

#endif
