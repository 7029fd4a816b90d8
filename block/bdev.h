/*
 * bdev: the one asynchronous block-device contract.
 *
 * NBD, iSCSI, the VMM and luna-img reach every disk through this header.
 * A caller fills a struct bdev_io and calls bdev_submit(); the driver
 * completes it later by calling io->complete(io) on the thread that owns
 * io->ctx (see aio.h), with io->result = 0 or a negative errno.  Completion
 * never happens inside bdev_submit, so callers need not guard against
 * re-entrancy.  Nothing here blocks the calling thread.
 *
 * Drivers stack: a format driver (qcow2, later) holds a child bdev (a file)
 * and turns one request into child requests, as QEMU's block graph and
 * nbdkit's filters do.  A bdev is shared by every connection of an export
 * on every worker thread, so bdev_submit is thread-safe; each request
 * completes on the thread that submitted it.
 *
 * Semantics the protocols rely on:
 *  - flush makes every write completed before the flush was submitted
 *    stable, whichever thread or connection wrote it (this is what lets
 *    NBD advertise CAN_MULTI_CONN);
 *  - BDEV_FUA makes the write stable before it completes;
 *  - discard may do nothing (it is advisory); after discard, reads return
 *    zeroes only if the bdev reports BDEV_CAP_DISCARD_ZEROES;
 *  - write_zeroes always leaves zeroes; with BDEV_MAY_UNMAP it may
 *    deallocate, with BDEV_FAST_ONLY it fails with -ENOTSUP rather than
 *    writing zeroes the slow way;
 *  - block_status describes a prefix of [offset, offset+length): at least
 *    one extent, none beyond the range, lengths > 0.
 */
#ifndef LUNA_BLOCK_BDEV_H
#define LUNA_BLOCK_BDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct aio_context;
struct bdev;

enum bdev_op {
    BDEV_OP_READ,
    BDEV_OP_WRITE,
    BDEV_OP_FLUSH,
    BDEV_OP_DISCARD,
    BDEV_OP_WRITE_ZEROES,
    BDEV_OP_BLOCK_STATUS,
};

/* Request flags. */
#define BDEV_FUA (1u << 0)       /* write, write_zeroes, discard: stable on completion */
#define BDEV_MAY_UNMAP (1u << 1) /* write_zeroes: may deallocate the range */
#define BDEV_FAST_ONLY (1u << 2) /* write_zeroes: -ENOTSUP unless cheaper than writing */
/*
 * write: store the data compressed, if the bdev has BDEV_CAP_COMPRESS (it
 * is ignored otherwise).  The range must be whole units of
 * limits.compress_unit (qcow2: clusters), else -EINVAL.  For image tools
 * (luna-img convert -c); a unit that does not shrink is stored as is.
 */
#define BDEV_COMPRESS (1u << 3)

/* Extent flags (same meaning and values as NBD base:allocation). */
#define BDEV_EXTENT_HOLE (1u << 0) /* not allocated */
#define BDEV_EXTENT_ZERO (1u << 1) /* reads as zeroes */

struct bdev_extent {
    uint64_t length;
    uint32_t flags;
};

struct bdev_io {
    /* Filled by the caller. */
    enum bdev_op op;
    uint32_t flags;
    uint64_t offset;
    uint64_t length;             /* bytes; for read/write, the sum of iov lengths */
    struct iovec *iov;           /* read, write */
    int iovcnt;
    struct bdev_extent *extents; /* block_status: array to fill */
    uint32_t max_extents;        /* its capacity, >= 1 */
    struct aio_context *ctx;     /* completion runs on this context's thread */
    void (*complete)(struct bdev_io *io);
    void *opaque;                /* the caller's */

    /* Filled by the driver before complete() runs. */
    int result;                  /* 0 or -errno */
    uint32_t nr_extents;         /* block_status */

    /* Owned by the block layer while the request is in flight. */
    struct bdev *bdev;
    struct bdev_io *next;        /* for queues inside the block layer */
    uint64_t internal[6];
};

/* Capabilities (struct bdev.caps). */
#define BDEV_CAP_READ_ONLY (1u << 0)      /* writes fail with -EROFS */
#define BDEV_CAP_DISCARD (1u << 1)        /* discard may deallocate */
#define BDEV_CAP_DISCARD_ZEROES (1u << 2) /* discarded ranges read as zeroes */
#define BDEV_CAP_WRITE_ZEROES (1u << 3)   /* write_zeroes without a data buffer */
#define BDEV_CAP_FAST_ZERO (1u << 4)      /* BDEV_FAST_ONLY can succeed */
#define BDEV_CAP_BLOCK_STATUS (1u << 5)   /* block_status reports real holes */
#define BDEV_CAP_FLUSH (1u << 6)          /* has a volatile cache: flush matters */
#define BDEV_CAP_FUA (1u << 7)            /* BDEV_FUA cheaper than write + flush */
#define BDEV_CAP_ZERO_INIT (1u << 8)      /* unwritten areas read as zeroes */
#define BDEV_CAP_COMPRESS (1u << 9)       /* BDEV_COMPRESS writes are stored compressed */

struct bdev_limits {
    uint32_t request_alignment;   /* smallest I/O unit the driver handles natively (power of 2) */
    uint32_t logical_block_size;  /* what an initiator should use as its sector size */
    uint32_t physical_block_size; /* preferred unit: writes smaller than this are slower */
    uint32_t optimal_io_size;     /* 0 when unknown */
    uint32_t max_transfer;        /* largest read/write length accepted, bytes */
    uint64_t max_discard;         /* largest discard/write_zeroes length, bytes */
    uint32_t compress_unit;       /* BDEV_CAP_COMPRESS: BDEV_COMPRESS writes cover whole units of this */
};

struct bdev_ops {
    const char *name; /* driver name: "raw", "host_device", ... */
    /* Start io; must not call io->complete before returning. */
    void (*submit)(struct bdev *bdev, struct bdev_io *io);
    /*
     * Do io synchronously on the calling thread and return 0 or -errno
     * (io->ctx and io->complete are ignored).  For the pool threads of a
     * layer above (a format driver's metadata and copy-on-write) and for
     * tools; never called on an event-loop thread.
     */
    int (*blocking)(struct bdev *bdev, struct bdev_io *io);
    /* Release the driver's resources; no request is in flight. */
    void (*close)(struct bdev *bdev);
    /*
     * Optional, blocking: the size the storage has now (a file or device
     * grown while served).  -EOPNOTSUPP when the driver cannot follow it.
     */
    int (*current_size)(struct bdev *bdev, uint64_t *size);
};

struct bdev {
    const struct bdev_ops *ops;
    char *filename;
    uint64_t size;     /* may grow while served (bdev_refresh_size): other threads read bdev_size() */
    uint32_t caps;
    struct bdev_limits limits;
    void *driver; /* driver private state */
    /*
     * Set at open when the bdev differs from what was asked, for the edge
     * to log (block/ does not): "opened read-only: the image is marked
     * corrupt ...".  Malloc'd, freed by bdev_close; NULL normally.
     */
    char *notice;
};

/* How to open: mirrors QEMU's -drive options. */
enum bdev_format {
    BDEV_FORMAT_AUTO,        /* nbd/iscsi for their URLs, host_device for block devices, raw otherwise */
    BDEV_FORMAT_RAW,
    BDEV_FORMAT_HOST_DEVICE,
    BDEV_FORMAT_QCOW2,
    BDEV_FORMAT_VMDK,        /* read-only: block/foreign */
    BDEV_FORMAT_VDI,
    BDEV_FORMAT_VPC,
    BDEV_FORMAT_LVM,         /* path "VG/LV": block/lvm */
    BDEV_FORMAT_NBD,         /* path nbd://...: a disk on an NBD server (block/nbd_client.h) */
    BDEV_FORMAT_ISCSI,       /* path iscsi://...: a LUN on an iSCSI target (block/iscsi_client.h) */
};

enum bdev_cache_mode {
    BDEV_CACHE_WRITEBACK,    /* page cache; flush = fdatasync (default) */
    BDEV_CACHE_WRITETHROUGH, /* page cache; every write is stable on completion */
    BDEV_CACHE_NONE,         /* O_DIRECT; flush = fdatasync */
    BDEV_CACHE_DIRECTSYNC,   /* O_DIRECT; every write is stable on completion */
    BDEV_CACHE_UNSAFE,       /* page cache; flush is a no-op */
};

enum bdev_aio_engine {
    BDEV_AIO_DEFAULT,  /* io_uring when usable on this file, threads otherwise */
    BDEV_AIO_IO_URING,
    BDEV_AIO_THREADS,
};

struct bdev_options {
    const char *path;
    enum bdev_format format;
    bool readonly;
    enum bdev_cache_mode cache;
    enum bdev_aio_engine aio;
    bool discard;          /* honour discard (unmap); false: discard is a no-op */
    bool create_size_set;  /* create a sparse raw file of create_size when missing */
    uint64_t create_size;
    uint64_t l2_cache_size; /* qcow2: bytes of L2 tables cached; 0: the driver's default */
    /*
     * qcow2: an open bdev to use as the backing file instead of opening the
     * one the image names (overlays share their base this way).  Borrowed:
     * it must outlive the bdev opened over it.
     */
    struct bdev *backing;
    /*
     * Take no image lock (qcow2): read an image another program writes, as
     * qemu-img -U does.  Only with readonly; what is read may be inconsistent.
     */
    bool force_share;
    /*
     * lvm: the PVs to read the VG from, as a ':'-separated list of files or
     * block devices; NULL to use the LV device-mapper has active.
     */
    const char *lvm_devices;
    /*
     * qcow2, read-only: read this internal snapshot instead of the active
     * image, as qemu-img's -l does (the virtual size stays the image's).
     * snapshot_id and snapshot_name must both match those given;
     * snapshot_any names an id or, failing that, a name.  All NULL: the
     * active image.  No such snapshot: -ENOENT.
     */
    const char *snapshot_id, *snapshot_name, *snapshot_any;
    /* Remote disks: seconds unreachable before requests fail (0: the default, 60). */
    uint32_t reconnect_timeout;
    /*
     * Things that happen to an open bdev that its user should log (block/
     * does not): a remote disk's connection lost or regained.  Called from
     * the driver's own thread; NULL: nobody listens.
     */
    void (*event)(void *opaque, const char *message);
    void *event_opaque;
};

void bdev_options_init(struct bdev_options *options);

/*
 * Open a bdev.  On error returns -errno and, if error_message is not NULL,
 * stores a malloc'd human-readable reason naming the path.
 */
int bdev_open(const struct bdev_options *options, struct bdev **out, char **error_message);

/*
 * Close; no request may be in flight.  Never blocks on the disk: the file
 * descriptors are closed on the thread pool (close(2) may write back a
 * cache), so they may outlive the call briefly; threadpool_shutdown()
 * waits for them.
 */
void bdev_close(struct bdev *bdev);

/*
 * Submit io.  Checks the range against the size, writes against
 * BDEV_CAP_READ_ONLY and the op against the capabilities, then hands it to
 * the driver.  Errors found here also complete through the callback:
 * -EROFS (write, discard, write_zeroes on a read-only bdev), -EINVAL
 * (range beyond the size, read/write longer than limits.max_transfer, iov
 * lengths not summing to length, unknown flags, block_status with length
 * or max_extents 0), -ENOTSUP (write_zeroes without BDEV_CAP_WRITE_ZEROES,
 * BDEV_FAST_ONLY without BDEV_CAP_FAST_ZERO).  Discard without
 * BDEV_CAP_DISCARD and zero-length transfers succeed doing nothing;
 * block_status without BDEV_CAP_BLOCK_STATUS reports one data extent.
 * Discard and write_zeroes may be longer than limits.max_discard (the
 * driver splits them).
 */
void bdev_submit(struct bdev *bdev, struct bdev_io *io);

/*
 * The same request done synchronously on the calling thread: the checks of
 * bdev_submit, then the driver's blocking path.  Returns io->result (0 or
 * -errno); io->ctx and io->complete are not used.  Blocks: for pool
 * threads and tools only, never on an event-loop thread.
 */
int bdev_blocking(struct bdev *bdev, struct bdev_io *io);

/* bdev_blocking for the common cases: one buffer, or none. */
int bdev_pread(struct bdev *bdev, void *buffer, uint64_t length, uint64_t offset);
int bdev_pwrite(struct bdev *bdev, const void *buffer, uint64_t length, uint64_t offset, uint32_t flags);
int bdev_flush_blocking(struct bdev *bdev);

bool bdev_is_read_only(const struct bdev *bdev);

/* The size as any thread may read it while bdev_refresh_size can grow it. */
static inline uint64_t bdev_size(const struct bdev *bdev)
{
    return __atomic_load_n(&bdev->size, __ATOMIC_RELAXED);
}

/*
 * Follow the storage when it grew while served (a file extended, an LV
 * resized): blocking, for the main thread at a reload.  *size is what the
 * storage has now.  1: it grew and bdev->size is the new size, requests
 * may reach it at once; 0: unchanged; -EBUSY: it shrank, and the size is
 * kept (clients were told of those blocks); -EOPNOTSUPP: the driver does
 * not follow size changes; other -errno.
 */
int bdev_refresh_size(struct bdev *bdev, uint64_t *size);

/* Parse / name options, for config and CLI ("writeback", "io_uring", ...). */
int bdev_cache_mode_parse(const char *name, enum bdev_cache_mode *mode);
const char *bdev_cache_mode_name(enum bdev_cache_mode mode);
int bdev_aio_engine_parse(const char *name, enum bdev_aio_engine *engine);
const char *bdev_aio_engine_name(enum bdev_aio_engine engine);
int bdev_format_parse(const char *name, enum bdev_format *format);
const char *bdev_format_name(enum bdev_format format);

#endif
