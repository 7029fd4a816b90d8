/*
 * The safe-rebase engine: for each run top does not hold, read it from the
 * old backing chain and from the new backing file, and write the sectors
 * that differ into top (whose copy-on-write fills the rest of each cluster
 * from the old chain, which is what top reads there).
 */
#include "block/rebase.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_image.h"
#include "common/error_message.h"

#define REBASE_CHUNK (2u << 20) /* bytes compared per step, qemu-img's buffer size */
#define SECTOR 512u
#define BUFFER_ALIGNMENT 4096

struct rebase {
    struct bdev *top;
    struct bdev *old_backing; /* NULL: none */
    struct bdev *new_backing; /* NULL: none */
    uint8_t *old_data;
    uint8_t *new_data;
    uint8_t *new_zeroes; /* REBASE_CHUNK zero bytes */
    char **error_message;
};

/*
 * length bytes of backing at offset into buffer (at most what is left of
 * backing there; *length shrinks to it), or zeroes past its end.  *zero
 * tells the latter.
 */
static int read_backing(struct rebase *r, struct bdev *backing, uint64_t offset, uint64_t *length, uint8_t *buffer,
                        bool *zero)
{
    *zero = !backing || offset >= backing->size;
    if (*zero) {
        memset(buffer, 0, *length);
        return 0;
    }
    if (*length > backing->size - offset)
        *length = backing->size - offset;
    int rc = bdev_pread(backing, buffer, *length, offset);
    if (rc < 0)
        return error_message_set(r->error_message, rc, "could not read '%s' at offset %" PRIu64 ": %s",
                                 backing->filename, offset, strerror(-rc));
    return 0;
}

/* Length of the run of sectors from the start that all differ (or all agree, as *differ says). */
static uint64_t sector_run(const uint8_t *a, const uint8_t *b, uint64_t length, bool *differ)
{
    uint64_t first = length < SECTOR ? length : SECTOR;
    *differ = memcmp(a, b, first) != 0;
    uint64_t run = first;
    while (run < length) {
        uint64_t piece = length - run < SECTOR ? length - run : SECTOR;
        if ((memcmp(a + run, b + run, piece) != 0) != *differ)
            break;
        run += piece;
    }
    return run;
}

/*
 * Zeroes into top where the old chain reads zeroes because it ends: zero
 * clusters (which also hold without a backing file, where the driver's
 * write_zeroes would rightly do nothing), zero data around them.
 */
static int write_zeroes(struct rebase *r, uint64_t offset, uint64_t length)
{
    uint64_t cluster = qcow2_cluster_size(&qcow2_image_header(r->top)->header);
    uint64_t first = (offset + cluster - 1) / cluster * cluster, last = (offset + length) / cluster * cluster;
    int rc = 0;
    if (first < last) {
        rc = qcow2_image_zero_unallocated(r->top, first, last - first);
        if (rc == 0 && first > offset)
            rc = bdev_pwrite(r->top, r->new_zeroes, first - offset, offset, 0);
        if (rc == 0 && offset + length > last)
            rc = bdev_pwrite(r->top, r->new_zeroes, offset + length - last, last, 0);
        if (rc != -ENOTSUP && rc != -EBUSY)
            return rc;
    }
    return bdev_pwrite(r->top, r->new_zeroes, length, offset, 0);
}

static int write_differences(struct rebase *r, uint64_t offset, uint64_t length, bool old_is_zero)
{
    for (uint64_t done = 0; done < length;) {
        bool differ;
        uint64_t run = sector_run(r->old_data + done, r->new_data + done, length - done, &differ);
        if (differ) {
            int rc;
            if (old_is_zero) {
                rc = write_zeroes(r, offset + done, run);
            } else {
                rc = bdev_pwrite(r->top, r->old_data + done, run, offset + done, 0);
            }
            if (rc < 0)
                return error_message_set(r->error_message, rc, "could not write to '%s' at offset %" PRIu64 ": %s",
                                         r->top->filename, offset + done, strerror(-rc));
        }
        done += run;
    }
    return 0;
}

/* One step from offset (at most REBASE_CHUNK bytes); *length receives how far it went. */
static int rebase_step(struct rebase *r, uint64_t offset, uint64_t *length)
{
    struct qcow2_layer_extent extent;
    int rc = qcow2_layer_status(r->top, offset, *length, &extent);
    if (rc < 0)
        return error_message_set(r->error_message, rc, "could not read the metadata of '%s': %s", r->top->filename,
                                 strerror(-rc));
    *length = extent.length;
    if (extent.kind != QCOW2_CLUSTER_UNALLOCATED)
        return 0; /* top's own clusters (data or zeroes) read the same over any backing file */
    bool old_is_zero, new_is_zero;
    if ((rc = read_backing(r, r->old_backing, offset, length, r->old_data, &old_is_zero)) < 0 ||
        (rc = read_backing(r, r->new_backing, offset, length, r->new_data, &new_is_zero)) < 0)
        return rc;
    return write_differences(r, offset, *length, old_is_zero);
}

int block_rebase(struct bdev *top, struct bdev *new_backing, block_rebase_progress_fn *progress, void *opaque,
                 char **error_message)
{
    if (!qcow2_image_is(top))
        return error_message_set(error_message, -ENOTSUP, "'%s' is not a qcow2 image: it has no backing file",
                                 top->filename);
    if (bdev_is_read_only(top))
        return error_message_set(error_message, -EROFS, "'%s' is opened read-only: cannot rebase it", top->filename);
    struct rebase r = {.top = top, .old_backing = qcow2_image_backing(top), .new_backing = new_backing,
                       .error_message = error_message};
    if (posix_memalign((void **)&r.old_data, BUFFER_ALIGNMENT, REBASE_CHUNK) != 0 ||
        posix_memalign((void **)&r.new_data, BUFFER_ALIGNMENT, REBASE_CHUNK) != 0 ||
        posix_memalign((void **)&r.new_zeroes, BUFFER_ALIGNMENT, REBASE_CHUNK) != 0) {
        free(r.old_data);
        free(r.new_data);
        return error_message_set(error_message, -ENOMEM, "out of memory rebasing '%s'", top->filename);
    }
    memset(r.new_zeroes, 0, REBASE_CHUNK);
    int rc = 0;
    for (uint64_t offset = 0; rc == 0 && offset < top->size;) {
        uint64_t length = top->size - offset < REBASE_CHUNK ? top->size - offset : REBASE_CHUNK;
        if ((rc = rebase_step(&r, offset, &length)) == 0) {
            offset += length;
            if (progress)
                progress(opaque, offset, top->size);
        }
    }
    free(r.old_data);
    free(r.new_data);
    free(r.new_zeroes);
    if (rc == 0 && (rc = bdev_flush_blocking(top)) < 0)
        return error_message_set(error_message, rc, "could not flush '%s': %s", top->filename, strerror(-rc));
    return rc;
}
