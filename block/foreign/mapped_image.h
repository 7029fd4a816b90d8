/*
 * mapped_image: the read-only bdev shared by the foreign image formats
 * (vmdk, vdi, vpc), which luna reads so that VMware, VirtualBox and
 * Hyper-V disks migrate with one `luna-img convert`.
 *
 * Each of those formats is a table from guest offsets to places in one
 * file: a grain, block or page is unallocated (reads zeroes), zeroed,
 * stored as is at some file offset, or (vmdk streamOptimized) stored
 * compressed.  A format parses its header and tables at open and supplies
 * map(); this module does the rest of the bdev: reads, block status (so a
 * convert stays sparse), flush, close, and the asynchronous entry through
 * the thread pool.  Writes are refused: the bdev is always read-only.
 */
#ifndef LUNA_BLOCK_FOREIGN_MAPPED_IMAGE_H
#define LUNA_BLOCK_FOREIGN_MAPPED_IMAGE_H

#include <stdint.h>

#include "block/bdev.h"

enum mapped_kind {
    MAPPED_UNALLOCATED, /* reads zeroes; a hole */
    MAPPED_ZERO,        /* allocated as zeroes (vmdk zeroed grain, vdi discarded block) */
    MAPPED_DATA,        /* stored as is at host_offset in the file */
    MAPPED_COMPRESSED,  /* a compressed unit: read_unit() decompresses it */
};

/* Where [offset, offset + length) begins to live; describes a prefix of it. */
struct mapped_extent {
    enum mapped_kind kind;
    uint64_t length;      /* > 0, at most what was asked */
    uint64_t host_offset; /* DATA: the first byte's offset in the file; COMPRESSED: the unit's */
    uint64_t unit_offset; /* COMPRESSED: the guest offset where the unit starts */
};

struct mapped_format {
    const char *name; /* the driver's name: "vmdk", ... */
    /*
     * Map a prefix of [offset, offset + length) (inside the image).  Called
     * from several pool threads at once.  0 or -errno (-EIO with a corrupt
     * table entry).
     */
    int (*map)(void *state, uint64_t offset, uint64_t length, struct mapped_extent *out);
    /*
     * COMPRESSED only: decompress the unit extent describes into unit
     * (cluster_size bytes, see mapped_image_attach).  Returns how many
     * bytes it produced (a last unit may be short) or -errno.
     */
    int64_t (*read_unit)(void *state, const struct mapped_extent *extent, uint8_t *unit);
    void (*free)(void *state);
};

/*
 * Make bdev a mapped image of size bytes over file (which it takes over:
 * closed with it, or on failure), with format's map() over state.
 * cluster_size (the grain or block size; 0 when the format has none) is
 * the bdev's optimal I/O size and the size of a compressed unit.  Cannot fail but for
 * memory; returns 0 or -errno, freeing state and file on failure.
 */
int mapped_image_attach(struct bdev *bdev, struct bdev *file, const struct mapped_format *format, void *state,
                        uint64_t size, uint32_t cluster_size);

/*
 * Open path as the raw file under a foreign image, read-only whatever was
 * asked (a notice on bdev says so when writing was asked).  0 or -errno and
 * a message naming the path.
 */
int mapped_image_open_file(struct bdev *bdev, const struct bdev_options *options, struct bdev **file,
                           char **error_message);

/* Read exactly length bytes at offset of the file; a short file is -EINVAL ("truncated"). */
int mapped_image_read_file(struct bdev *file, void *buffer, uint64_t length, uint64_t offset);

#endif
