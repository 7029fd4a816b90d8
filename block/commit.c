/*
 * The commit engine: walk top's disk, ask each layer above base what it
 * holds (qcow2_layer_status), and write into base the runs some layer
 * holds, merged into large requests.
 */
#include "block/commit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_image.h"
#include "common/error_message.h"

#define COMMIT_CHUNK (2u << 20)      /* bytes per copy request */
#define COMMIT_ZERO_CHUNK (1ull << 30) /* bytes per write_zeroes request */
#define BUFFER_ALIGNMENT 4096          /* enough for O_DIRECT (cache=none) */

enum commit_action {
    COMMIT_SKIP, /* no layer above base holds it: base has it already */
    COMMIT_COPY, /* data: read through top, write into base */
    COMMIT_ZERO, /* reads as zeroes through top: write_zeroes into base */
};

/* A run of one action waiting to be carried out, so that neighbouring runs share a request. */
struct commit_run {
    enum commit_action action;
    uint64_t offset;
    uint64_t length;
};

struct commit {
    struct bdev *top;
    struct bdev *base;
    uint8_t *buffer; /* COMMIT_CHUNK bytes */
    uint64_t chunk;  /* largest copy request both bdevs accept */
    char **error_message;
};

/* Every layer from top down to base must be qcow2 (to say what it holds) and base must be reached. */
static int check_chain(struct bdev *top, struct bdev *base, char **error_message)
{
    if (!qcow2_image_is(top))
        return error_message_set(error_message, -EINVAL,
                                 "'%s' is not a qcow2 image: it has no backing file to commit to", top->filename);
    for (struct bdev *layer = top; layer != base;) {
        struct bdev *below = qcow2_image_backing(layer);
        if (!below || (below != base && !qcow2_image_is(below)))
            return error_message_set(error_message, -EINVAL, "'%s' is not in the backing chain of '%s'",
                                     base->filename, top->filename);
        layer = below;
    }
    return 0;
}

/* What to do with a prefix of [offset, offset + length); *run_length receives its length. */
static int classify(struct commit *c, uint64_t offset, uint64_t length, enum commit_action *action,
                    uint64_t *run_length)
{
    for (struct bdev *layer = c->top; layer != c->base; layer = qcow2_image_backing(layer)) {
        if (offset >= layer->size) {
            /* An intermediate layer shorter than top: top reads zeroes here, whatever base holds. */
            *action = COMMIT_ZERO;
            *run_length = length;
            return 0;
        }
        if (length > layer->size - offset)
            length = layer->size - offset;
        struct qcow2_layer_extent extent;
        int rc = qcow2_layer_status(layer, offset, length, &extent);
        if (rc < 0)
            return error_message_set(c->error_message, rc, "could not read the metadata of '%s': %s",
                                     layer->filename, strerror(-rc));
        length = extent.length;
        switch (extent.kind) {
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_COMPRESSED:
            *action = COMMIT_COPY;
            *run_length = length;
            return 0;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            *action = COMMIT_ZERO;
            *run_length = length;
            return 0;
        case QCOW2_CLUSTER_UNALLOCATED:
            break; /* the layer below decides */
        }
    }
    *action = COMMIT_SKIP;
    *run_length = length;
    return 0;
}

static int write_zero_buffer(struct commit *c, uint64_t offset, uint64_t length)
{
    memset(c->buffer, 0, c->chunk);
    for (uint64_t done = 0; done < length;) {
        uint64_t piece = length - done < c->chunk ? length - done : c->chunk;
        int rc = bdev_pwrite(c->base, c->buffer, piece, offset + done, 0);
        if (rc < 0)
            return rc;
        done += piece;
    }
    return 0;
}

static int write_zeroes(struct commit *c, uint64_t offset, uint64_t length)
{
    if (!(c->base->caps & BDEV_CAP_WRITE_ZEROES))
        return write_zero_buffer(c, offset, length);
    for (uint64_t done = 0; done < length;) {
        uint64_t piece = length - done < COMMIT_ZERO_CHUNK ? length - done : COMMIT_ZERO_CHUNK;
        struct bdev_io io = {.op = BDEV_OP_WRITE_ZEROES, .flags = BDEV_MAY_UNMAP, .offset = offset + done,
                             .length = piece};
        int rc = bdev_blocking(c->base, &io);
        if (rc == -ENOTSUP)
            rc = write_zero_buffer(c, offset + done, piece);
        if (rc < 0)
            return rc;
        done += piece;
    }
    return 0;
}

static int carry_out(struct commit *c, const struct commit_run *run)
{
    int rc = 0;
    switch (run->action) {
    case COMMIT_SKIP:
        return 0;
    case COMMIT_ZERO:
        if ((rc = write_zeroes(c, run->offset, run->length)) < 0)
            return error_message_set(c->error_message, rc, "could not write zeroes to '%s' at offset %" PRIu64 ": %s",
                                     c->base->filename, run->offset, strerror(-rc));
        return 0;
    case COMMIT_COPY:
        if ((rc = bdev_pread(c->top, c->buffer, run->length, run->offset)) < 0)
            return error_message_set(c->error_message, rc, "could not read '%s' at offset %" PRIu64 ": %s",
                                     c->top->filename, run->offset, strerror(-rc));
        if ((rc = bdev_pwrite(c->base, c->buffer, run->length, run->offset, 0)) < 0)
            return error_message_set(c->error_message, rc, "could not write to '%s' at offset %" PRIu64 ": %s",
                                     c->base->filename, run->offset, strerror(-rc));
        return 0;
    }
    return -EINVAL;
}

/* A smaller base is grown as qemu-img commit grows it (qcow2 here; other bdevs by the caller). */
static int fit_base(struct bdev *top, struct bdev *base, char **error_message)
{
    if (base->size >= top->size)
        return 0;
    if (!qcow2_image_is(base))
        return error_message_set(error_message, -EINVAL,
                                 "'%s' (%" PRIu64 " bytes) is smaller than '%s' (%" PRIu64 " bytes)", base->filename,
                                 base->size, top->filename, top->size);
    int rc = qcow2_image_grow(base, top->size);
    if (rc < 0)
        return error_message_set(error_message, rc, "could not grow '%s' to %" PRIu64 " bytes: %s", base->filename,
                                 top->size, strerror(-rc));
    return 0;
}

static uint64_t copy_chunk(const struct bdev *top, const struct bdev *base)
{
    uint64_t chunk = COMMIT_CHUNK;
    if (top->limits.max_transfer && top->limits.max_transfer < chunk)
        chunk = top->limits.max_transfer;
    if (base->limits.max_transfer && base->limits.max_transfer < chunk)
        chunk = base->limits.max_transfer;
    chunk &= ~(uint64_t)511;
    return chunk ? chunk : 512;
}

static int walk(struct commit *c, block_commit_progress_fn *progress, void *opaque)
{
    uint64_t total = c->top->size;
    struct commit_run pending = {.action = COMMIT_SKIP};
    int rc = 0;
    for (uint64_t offset = 0; rc == 0 && offset < total;) {
        uint64_t asked = total - offset < c->chunk ? total - offset : c->chunk;
        enum commit_action action = COMMIT_SKIP;
        uint64_t length = 0;
        if ((rc = classify(c, offset, asked, &action, &length)) < 0)
            break;
        uint64_t limit = action == COMMIT_COPY ? c->chunk : COMMIT_ZERO_CHUNK;
        if (action == pending.action && pending.length + length <= limit) {
            pending.length += length;
        } else {
            if ((rc = carry_out(c, &pending)) < 0)
                break;
            if (progress && pending.length)
                progress(opaque, pending.offset + pending.length, total);
            pending = (struct commit_run){.action = action, .offset = offset, .length = length};
        }
        offset += length;
    }
    if (rc == 0)
        rc = carry_out(c, &pending);
    if (rc == 0 && progress)
        progress(opaque, total, total);
    return rc;
}

int block_commit(struct bdev *top, struct bdev *base, block_commit_progress_fn *progress, void *opaque,
                 char **error_message)
{
    if (top == base)
        return error_message_set(error_message, -EINVAL, "'%s' cannot be committed into itself", top->filename);
    int rc = check_chain(top, base, error_message);
    if (rc < 0)
        return rc;
    if (bdev_is_read_only(base))
        return error_message_set(error_message, -EROFS, "'%s' is opened read-only: cannot commit into it",
                                 base->filename);
    if ((rc = fit_base(top, base, error_message)) < 0)
        return rc;
    struct commit c = {.top = top, .base = base, .chunk = copy_chunk(top, base), .error_message = error_message};
    if (posix_memalign((void **)&c.buffer, BUFFER_ALIGNMENT, c.chunk) != 0)
        return error_message_set(error_message, -ENOMEM, "out of memory committing '%s'", top->filename);
    rc = walk(&c, progress, opaque);
    free(c.buffer);
    if (rc < 0)
        return rc;
    if ((rc = bdev_flush_blocking(base)) < 0)
        return error_message_set(error_message, rc, "could not flush '%s': %s", base->filename, strerror(-rc));
    return 0;
}

int block_commit_empty(struct bdev *top, char **error_message)
{
    if (!qcow2_image_is(top))
        return error_message_set(error_message, -ENOTSUP, "'%s' cannot be emptied: it is not a qcow2 image",
                                 top->filename);
    int rc = qcow2_image_make_empty(top);
    if (rc < 0)
        return error_message_set(error_message, rc, "could not empty '%s': %s", top->filename, strerror(-rc));
    return 0;
}
