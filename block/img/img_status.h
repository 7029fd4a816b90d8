/*
 * img_status: what qemu-img's map, compare and measure learn from QEMU's
 * block status, computed the way QEMU computes it, over an image and its
 * backing chain opened as bdevs.
 *
 * Those verbs print (map), compare (compare -s) or add up (measure) the
 * block-status bits QEMU's layers return, so the bits, the run lengths
 * where they matter and the quirks are QEMU's: a qcow2 layer reads as zero
 * where it has no backing file or its backing file is shorter; a layer
 * past a shorter backing file is "allocated zeroes"; the data clusters of
 * an image preallocated with metadata are checked against holes in the
 * image file; an unallocated subcluster of an allocated cluster keeps its
 * host offset.  Blocking: for the tools only.
 */
#ifndef LUNA_BLOCK_IMG_IMG_STATUS_H
#define LUNA_BLOCK_IMG_IMG_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/img/img.h"

/* QEMU's BDRV_BLOCK_* bits (same values, so statuses compare as qemu-img compares them). */
#define IMG_STATUS_DATA 0x01u
#define IMG_STATUS_ZERO 0x02u
#define IMG_STATUS_OFFSET_VALID 0x04u
#define IMG_STATUS_ALLOCATED 0x10u
#define IMG_STATUS_EOF 0x20u
#define IMG_STATUS_RECURSE 0x40u

/* One layer of the chain: the top image, then each backing file. */
struct img_layer {
    struct bdev *bdev;          /* the top one is the chain's; the others its backing files */
    bool qcow2;
    int fd;                     /* qcow2: the image file, read for refcounts and holes; else -1 */
    uint64_t file_size;
    bool preallocation_checked;
    bool metadata_preallocation; /* QEMU's heuristic: data clusters may be holes in the file */
    char *data_filename;         /* qcow2 with an external data file: its path; else NULL */
};

struct img_chain {
    struct img_layer *layers;
    size_t count;
};

struct img_status {
    unsigned flags;   /* IMG_STATUS_* */
    uint64_t length;  /* bytes from the offset asked; 0 only at or past the end of a layer */
    uint64_t map;     /* OFFSET_VALID: the offset in file */
    const char *file; /* OFFSET_VALID: the file holding the bytes */
    unsigned depth;   /* map: the layer that answered (0: the top image) */
};

/*
 * Open path (format "raw", "qcow2" or NULL to probe) read-only with its
 * backing chain; with snapshot (may be NULL), that internal snapshot of
 * the top image.  Errors are printed as qemu-img prints them ("Could not
 * open 'path': ..."); returns 0 or -errno.
 */
int img_chain_open(const char *path, const char *format, bool force_share, enum bdev_cache_mode cache,
                   const struct img_snapshot_choice *snapshot, struct img_chain *chain);
/*
 * img_chain_open for a verb's filename argument: with image_opts it is
 * qemu's --image-opts string ("driver=qcow2,file.filename=PATH"; driver
 * and filename are what luna-img takes from it), else a path.  A format
 * luna-img does not read is refused as qemu-img refuses it.
 */
int img_chain_open_spec(const char *spec, bool image_opts, const char *format, bool force_share,
                        enum bdev_cache_mode cache, const struct img_snapshot_choice *snapshot,
                        struct img_chain *chain);
void img_chain_close(struct img_chain *chain);

/* The top image. */
static inline struct bdev *img_chain_top(const struct img_chain *chain) { return chain->layers[0].bdev; }

/*
 * The status of layer alone for a prefix of [offset, offset + bytes)
 * (QEMU's bdrv_block_status of that node): 0 or -errno.
 */
int img_layer_status(struct img_chain *chain, size_t layer, uint64_t offset, uint64_t bytes,
                     struct img_status *out);

/* The status through the whole chain (QEMU's bdrv_block_status_above(bs, NULL)): 0 or -errno. */
int img_status_above(struct img_chain *chain, uint64_t offset, uint64_t bytes, struct img_status *out);

#endif
