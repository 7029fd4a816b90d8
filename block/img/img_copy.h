/*
 * img_copy: copy the content of one or more bdevs (concatenated) into a
 * target bdev, as `qemu-img convert` does: asynchronously, with up to 16
 * requests in flight on one aio_context, skipping what need not be written.
 *
 * - Ranges the source reports as reading zeroes (block_status) are not
 *   read; on a target that already reads zeroes (a fresh image) they are
 *   not written either, otherwise they become write_zeroes.
 * - With min_sparse > 0, blocks of min_sparse bytes of read data that are
 *   all zeroes are treated the same way; min_sparse 0 writes everything,
 *   zero ranges included, as data.
 * - compare_target: the target is an overlay whose backing holds most of the
 *   content (convert -B).  Each target cluster is read from the target (so
 *   from its backing) and written only when it differs from the source.
 * - compress: whole target clusters are written with BDEV_COMPRESS.
 * - Writes are issued in offset order unless out_of_order (convert -W);
 *   reads always run in parallel.
 *
 * Nothing here prints or blocks: the caller runs the context's loop (a tool
 * with aio_context_drain; lunad from its worker loop) and learns the result
 * through done().  Must be used on the context's thread.
 */
#ifndef LUNA_BLOCK_IMG_IMG_COPY_H
#define LUNA_BLOCK_IMG_IMG_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aio_context;
struct bdev;
struct img_copy;

#define IMG_COPY_MAX_PARALLEL 16
#define IMG_COPY_DEFAULT_PARALLEL 8
#define IMG_COPY_CHUNK (2u << 20) /* qemu-img convert's buffer: 2 MiB */

struct img_copy_options {
    struct bdev *const *sources;  /* read in this order, end to end */
    size_t source_count;
    struct bdev *target;          /* at least as large as the sources together */
    bool target_reads_zero;       /* the target reads zeroes where nothing is written (fresh, no backing) */
    bool compare_target;          /* write only what differs from what the target reads now */
    bool compress;                /* BDEV_COMPRESS for whole clusters (target with BDEV_CAP_COMPRESS) */
    bool out_of_order;            /* writes may complete in any order */
    uint64_t min_sparse;          /* bytes, multiple of 512; 0: no zero detection, write everything */
    uint32_t parallel;            /* requests in flight, 1..IMG_COPY_MAX_PARALLEL (0: the default) */
    /* Progress in percent of the bytes to copy (qemu-img's measure); NULL: none. */
    void (*progress)(void *opaque, double percent);
    void *progress_opaque;
};

/*
 * done(opaque, result, message): result 0, or -errno with message naming
 * the failed operation and the offset ("error while writing at byte N:
 * ..."); message is only valid during the call.  Called once, from the
 * loop, never inside img_copy_start.  The target is flushed before success
 * is reported.  The caller keeps the bdevs open until then.
 */
typedef void img_copy_done_fn(void *opaque, int result, const char *message);

/* Start a copy.  0, or -EINVAL / -ENOMEM (then done is never called). */
int img_copy_start(struct aio_context *ctx, const struct img_copy_options *options, img_copy_done_fn *done,
                   void *opaque, struct img_copy **out);

/* Free a copy after done() returned (not from inside it). */
void img_copy_free(struct img_copy *copy);

/*
 * For tools: start, run the context's loop until the copy ends, free.
 * 0 or -errno with a malloc'd message.
 */
int img_copy_run(struct aio_context *ctx, const struct img_copy_options *options, char **error_message);

#endif
