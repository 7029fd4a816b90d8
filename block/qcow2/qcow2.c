/*
 * The qcow2 bdev driver: opening an image (and its backing chain), and the
 * asynchronous entry.  A read or write whose whole range maps, from cached
 * L2 tables, to one stretch of host clusters this image owns goes straight
 * to the image file's driver (io_uring) from the loop thread; everything
 * else (cache misses, allocation, copy-on-write, compressed clusters,
 * metadata operations) runs the blocking code of qcow2_io.c on the pool.
 */
#include "block/qcow2/qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/aio_internal.h"
#include "block/closing.h"
#include "block/file_io.h"
#include "block/image_probe.h"
#include "block/iov.h"
#include "block/qcow2/qcow2_check.h"
#include "block/qcow2/qcow2_internal.h"
#include "block/qcow2/qcow2_lock.h"
#include "block/threadpool.h"
#include "common/error_message.h"

#define MAX_BACKING_DEPTH 16
#define MAX_TRANSFER (32u << 20)
#define L2_CACHE_MAX_BYTES (4u << 20)
#define MIN_CACHE_TABLES 4u

/* ---- metadata file I/O ---- */

static int file_transfer(struct qcow2 *q, enum bdev_op op, uint64_t offset, void *buffer, uint64_t length)
{
    while (length > 0) {
        uint64_t chunk = length < MAX_TRANSFER ? length : MAX_TRANSFER;
        int rc = op == BDEV_OP_READ ? bdev_pread(q->file, buffer, chunk, offset)
                                    : bdev_pwrite(q->file, buffer, chunk, offset, 0);
        if (rc < 0)
            return rc;
        offset += chunk;
        buffer = (uint8_t *)buffer + chunk;
        length -= chunk;
    }
    return 0;
}

int qcow2_file_read(struct qcow2 *q, uint64_t offset, void *buffer, uint64_t length)
{
    /* A table past the end of the file is corruption, not zeroes. */
    if (offset > q->file->size || length > q->file->size - offset)
        return qcow2_signal_corruption(q, "metadata beyond the end of the image file", offset);
    return file_transfer(q, BDEV_OP_READ, offset, buffer, length);
}

int qcow2_file_write(struct qcow2 *q, uint64_t offset, const void *buffer, uint64_t length)
{
    if (q->readonly)
        return -EROFS;
    /* In the first cluster only header fields are ever rewritten (refcount table, autoclear). */
    bool header_fields = offset >= 48 && offset + length <= QCOW2_V3_MIN_HEADER_LENGTH;
    if (offset < q->cluster_size && !header_fields)
        return qcow2_signal_corruption(q, "write over the image header", offset);
    qcow2_host_end_grow(q, offset + length);
    return file_transfer(q, BDEV_OP_WRITE, offset, (void *)buffer, length);
}

int qcow2_header_write(struct qcow2 *q)
{
    if (q->readonly)
        return -EROFS;
    uint8_t *buffer = malloc(q->cluster_size);
    if (!buffer)
        return -ENOMEM;
    /* The whole first cluster, as QEMU rewrites it: extensions and the backing name move as they must. */
    int rc = qcow2_image_header_encode(&q->image, buffer, q->cluster_size);
    if (rc == 0)
        rc = file_transfer(q, BDEV_OP_WRITE, 0, buffer, q->cluster_size);
    if (rc == 0)
        rc = qcow2_file_flush(q);
    free(buffer);
    return rc;
}

int qcow2_file_flush(struct qcow2 *q)
{
    return q->cache_mode == BDEV_CACHE_UNSAFE ? 0 : bdev_flush_blocking(q->file);
}

int qcow2_signal_corruption(struct qcow2 *q, const char *what, uint64_t offset)
{
    (void)what;
    (void)offset;
    q->corrupt = true;
    return -EIO;
}

/* ---- asynchronous entry ---- */

/* One request on its way (an aio record of io->ctx). */
struct qcow2_request {
    union {
        struct aio_work work;  /* on the pool */
        struct bdev_io child;  /* straight to the image file */
    };
    struct bdev_io *io;
    struct qcow2 *q;
    unsigned epoch;
    int result;
};

_Static_assert(sizeof(struct qcow2_request) <= AIO_RECORD_SIZE, "qcow2_request must fit an aio record");

static void pool_run(struct aio_work *work)
{
    struct qcow2_request *req = (struct qcow2_request *)work;
    req->result = qcow2_blocking(req->q->bdev, req->io);
}

static void pool_done(struct aio_work *work)
{
    struct qcow2_request *req = (struct qcow2_request *)work;
    struct bdev_io *io = req->io;
    int result = req->result;
    aio_record_put(io->ctx, req);
    aio_request_finish(io, result);
}

static void child_done(struct bdev_io *child)
{
    struct qcow2_request *req = child->opaque;
    struct bdev_io *io = req->io;
    int result = child->result;
    qcow2_data_io_end(req->q, req->epoch);
    aio_record_put(io->ctx, req);
    aio_request_finish(io, result);
}

/*
 * Block status from cached L2 tables, on the loop thread: NBD asks before
 * every large read.  1 when answered, 0 when the pool must (a table not
 * cached, or a first extent that shows the backing file through).
 */
static int block_status_mapped(struct qcow2 *q, struct bdev_io *io)
{
    if (pthread_mutex_trylock(&q->lock) != 0)
        return 0;
    uint64_t position = io->offset, end = io->offset + io->length;
    uint32_t count = 0;
    while (position < end && count < io->max_extents) {
        struct qcow2_mapping m;
        if (qcow2_map(q, position, end - position, true, &m) < 0 ||
            (m.kind == QCOW2_CLUSTER_UNALLOCATED && q->backing))
            break; /* a prefix is a complete answer */
        qcow2_extent_add(io, &count, m.length, qcow2_extent_flags(m.kind));
        position += m.length;
    }
    pthread_mutex_unlock(&q->lock);
    if (count == 0)
        return 0;
    io->nr_extents = count;
    aio_context_complete(io->ctx, io, 0);
    return 1;
}

/* Most pieces a request is split into on the loop thread; more go to the pool. */
#define FAST_SEGMENTS_MAX 32

/* A stretch of a request: to a bdev (the image file or the backing file) or, target NULL, zeroes. */
struct fast_segment {
    struct bdev *target;
    uint64_t target_offset;
    uint64_t length;
};

/*
 * Map all of io from cached L2 tables (lock held).  Returns the number of
 * segments, or 0 when some part needs the pool: a table not cached, a
 * compressed cluster, a write that allocates or copies, a read reaching
 * past the backing file, or too many pieces.
 */
static int plan_segments(struct qcow2 *q, const struct bdev_io *io, struct fast_segment *segments)
{
    bool write = io->op == BDEV_OP_WRITE;
    uint64_t position = io->offset, end = io->offset + io->length;
    int count = 0;
    while (position < end) {
        struct qcow2_mapping m;
        if (qcow2_map(q, position, end - position, true, &m) < 0)
            return 0;
        struct fast_segment segment = {.length = m.length};
        if (m.kind == QCOW2_CLUSTER_NORMAL && (!write || m.copied)) {
            segment.target = q->data;
            segment.target_offset = m.host_offset;
        } else if (write || m.kind == QCOW2_CLUSTER_COMPRESSED || m.kind == QCOW2_CLUSTER_NORMAL) {
            return 0;
        } else if (m.kind == QCOW2_CLUSTER_UNALLOCATED && q->backing) {
            if (position + m.length > q->backing->size)
                return 0;
            segment.target = q->backing;
            segment.target_offset = position;
        }
        struct fast_segment *last = count ? &segments[count - 1] : NULL;
        if (last && last->target == segment.target &&
            (!segment.target || last->target_offset + last->length == segment.target_offset)) {
            last->length += segment.length;
        } else {
            if (count == FAST_SEGMENTS_MAX)
                return 0;
            segments[count++] = segment;
        }
        position += m.length;
    }
    return count;
}

/* A request split into several child requests; freed when the last completes. */
struct fast_split {
    struct bdev_io *io;
    struct qcow2 *q;
    unsigned epoch;
    unsigned pending;
    int result;
    struct bdev_io children[]; /* one per segment with a target, then their slices of io->iov */
};

static void split_child_done(struct bdev_io *child)
{
    struct fast_split *split = child->opaque;
    if (child->result < 0 && split->result == 0)
        split->result = child->result;
    if (--split->pending > 0)
        return;
    struct bdev_io *io = split->io;
    int result = split->result;
    qcow2_data_io_end(split->q, split->epoch);
    free(split);
    aio_request_finish(io, result);
}

static void zero_slices(const struct iovec *iov, int count)
{
    for (int i = 0; i < count; i++)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
}

/* Issue the planned segments (lock held on entry, released here).  1, or 0 for the pool. */
static int submit_segments(struct qcow2 *q, struct qcow2_request *req, const struct fast_segment *segments,
                           int count)
{
    struct bdev_io *io = req->io;
    if (count == 1 && segments[0].target) {
        req->epoch = qcow2_data_io_begin(q);
        pthread_mutex_unlock(&q->lock);
        req->child = (struct bdev_io){
            .op = io->op, .offset = segments[0].target_offset, .length = io->length, .iov = io->iov,
            .iovcnt = io->iovcnt, .ctx = io->ctx, .complete = child_done, .opaque = req,
        };
        bdev_submit(segments[0].target, &req->child);
        return 1;
    }
    /* Each segment boundary splits at most one of io's iovecs. */
    size_t slices = (size_t)io->iovcnt + (size_t)count;
    struct fast_split *split =
        malloc(sizeof(*split) + (size_t)count * sizeof(struct bdev_io) + slices * sizeof(struct iovec));
    if (!split) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    *split = (struct fast_split){.io = io, .q = q, .epoch = qcow2_data_io_begin(q)};
    pthread_mutex_unlock(&q->lock);
    aio_record_put(io->ctx, req);

    /* Count the children first: the last to complete frees the split. */
    for (int i = 0; i < count; i++)
        split->pending += segments[i].target != NULL;
    uint64_t skip = 0;
    struct iovec *slice = (struct iovec *)(split->children + count);
    int children = 0;
    for (int i = 0; i < count; i++) {
        int n = iov_slice(io->iov, io->iovcnt, skip, segments[i].length, slice);
        if (segments[i].target) {
            struct bdev_io *child = &split->children[children++];
            *child = (struct bdev_io){
                .op = io->op, .offset = segments[i].target_offset, .length = segments[i].length, .iov = slice,
                .iovcnt = n, .ctx = io->ctx, .complete = split_child_done, .opaque = split,
            };
        } else {
            zero_slices(slice, n);
        }
        slice += n;
        skip += segments[i].length;
    }
    if (children == 0) {
        qcow2_data_io_end(q, split->epoch);
        free(split);
        aio_context_complete(io->ctx, io, 0);
        return 1;
    }
    /* Completions never run inside bdev_submit, so the split outlives this loop. */
    for (int i = 0, issued = 0; issued < children; i++)
        if (segments[i].target)
            bdev_submit(segments[i].target, &split->children[issued++]);
    return 1;
}

/*
 * Try to serve io from the loop thread: 1 when it is under way (or done),
 * 0 when the pool must take it.  Never waits for the lock.
 */
static int submit_mapped(struct qcow2 *q, struct qcow2_request *req)
{
    struct bdev_io *io = req->io;
    if (io->op == BDEV_OP_BLOCK_STATUS) {
        if (!block_status_mapped(q, io))
            return 0;
        aio_record_put(io->ctx, req);
        return 1;
    }
    bool write = io->op == BDEV_OP_WRITE;
    if ((io->op != BDEV_OP_READ && !write) || (io->flags & (BDEV_FUA | BDEV_COMPRESS)))
        return 0;
    if (pthread_mutex_trylock(&q->lock) != 0)
        return 0;
    struct fast_segment segments[FAST_SEGMENTS_MAX];
    int count = q->corrupt && write ? 0 : plan_segments(q, io, segments);
    if (count == 0) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    return submit_segments(q, req, segments, count);
}

static void qcow2_submit(struct bdev *bdev, struct bdev_io *io)
{
    struct qcow2 *q = bdev->driver;
    struct qcow2_request *req = aio_record_get(io->ctx);
    if (!req) {
        aio_context_complete(io->ctx, io, -ENOMEM);
        return;
    }
    req->io = io;
    req->q = q;
    if (submit_mapped(q, req))
        return;
    req->work.run = pool_run;
    req->work.done = pool_done;
    int rc = aio_context_run_in_pool(io->ctx, &req->work);
    if (rc < 0) {
        aio_record_put(io->ctx, req);
        aio_context_complete(io->ctx, io, rc);
    }
}

/* ---- open and close ---- */

static void image_free(struct qcow2 *q)
{
    if (q->l2_cache.entries)
        qcow2_cache_destroy(&q->l2_cache);
    if (q->refcount_cache.entries)
        qcow2_cache_destroy(&q->refcount_cache);
    free(q->l1_table);
    free(q->refcount_table);
    qcow2_image_header_clear(&q->image);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->changed);
    pthread_mutex_destroy(&q->quiesce_lock);
    pthread_cond_destroy(&q->quiesce_drained);
    if (!q->backing_borrowed)
        bdev_close(q->backing);
    if (q->data_external)
        bdev_close(q->data);
    bdev_close(q->file);
    free(q);
}

struct close_job {
    struct threadpool_job job;
    struct qcow2 *q;
};

/* Write back what the caches hold, then let go of everything. */
static void close_now(struct qcow2 *q)
{
    /* An unlinked image (an ephemeral overlay) has nobody left to read what a flush would keep. */
    struct stat st;
    const struct file_bdev *file = file_bdev_get(q->file);
    bool linked = !file || fstat(file->fd, &st) < 0 || st.st_nlink > 0;
    if (!q->readonly && linked) {
        pthread_mutex_lock(&q->lock);
        qcow2_flush_metadata(q); /* nobody is left to hear of a failure: an unflushed cache only leaks */
        pthread_mutex_unlock(&q->lock);
    }
    bool registered = file != NULL;
    dev_t dev = file ? file->dev : 0;
    ino_t ino = file ? file->ino : 0;
    image_free(q); /* the file's own close is registered from here on */
    if (registered)
        closing_end(dev, ino);
}

static void close_job_run(struct threadpool_job *job)
{
    struct close_job *close = (struct close_job *)job;
    close_now(close->q);
    free(close);
}

static void qcow2_close(struct bdev *bdev)
{
    struct qcow2 *q = bdev->driver;
    const struct file_bdev *file = file_bdev_get(q->file);
    if (file)
        closing_begin(file->dev, file->ino);
    /* Writing the caches back is disk I/O: the last reference may drop on a loop thread. */
    struct close_job *close = calloc(1, sizeof(*close));
    if (close) {
        close->job.run = close_job_run;
        close->q = bdev->driver;
        if (threadpool_submit(&close->job) == 0)
            return;
        free(close);
    }
    close_now(bdev->driver);
}

const struct bdev_ops qcow2_ops = {
    .name = "qcow2",
    .submit = qcow2_submit,
    .blocking = qcow2_blocking,
    .close = qcow2_close,
};

static _Thread_local int open_depth;

static int open_backing(struct qcow2 *q, const struct bdev_options *options, char **error_message)
{
    const char *format_name = q->image.backing_format;
    enum bdev_format format = BDEV_FORMAT_AUTO;
    char *path = qcow2_backing_path(q->bdev->filename, q->image.backing_file);
    if (!path) {
        error_message_set(error_message, 0, "%s: out of memory", q->bdev->filename);
        return -ENOMEM;
    }
    int rc = 0;
    if (format_name) {
        if (strcmp(format_name, "file") == 0)
            format = BDEV_FORMAT_RAW;
        else if (bdev_format_parse(format_name, &format) < 0 || format == BDEV_FORMAT_AUTO) {
            error_message_set(error_message, 0, "%s: unsupported backing file format '%s'", q->bdev->filename,
                              format_name);
            rc = -ENOTSUP;
        }
    } else {
        format = image_probe(path);
    }
    if (rc == 0) {
        struct bdev_options backing_options = *options;
        backing_options.backing = NULL;
        backing_options.snapshot_id = backing_options.snapshot_name = backing_options.snapshot_any = NULL;
        backing_options.path = path;
        backing_options.format = format;
        backing_options.readonly = true;
        backing_options.create_size_set = false;
        char *reason = NULL;
        rc = bdev_open(&backing_options, &q->backing, &reason);
        if (rc < 0)
            error_message_set(error_message, 0, "%s: could not open backing file: %s", q->bdev->filename,
                              reason ? reason : "unknown error");
        free(reason);
    }
    free(path);
    return rc;
}

/*
 * The external data file the header names, opened as a raw file with the
 * image's options.  A relative name is looked for beside the image, as a
 * backing name is; failing that, in the working directory, where qemu-img
 * 7.2 creates it and looks for it.
 */
static int open_data_file(struct qcow2 *q, const struct bdev_options *options, char **error_message)
{
    if (!q->image.data_file) {
        error_message_set(error_message, 0, "%s: the image uses an external data file but does not name it",
                          q->bdev->filename);
        return -EINVAL;
    }
    char *path = qcow2_backing_path(q->bdev->filename, q->image.data_file);
    if (path && access(path, F_OK) < 0 && access(q->image.data_file, F_OK) == 0) {
        free(path);
        path = strdup(q->image.data_file);
    }
    if (!path) {
        error_message_set(error_message, 0, "%s: out of memory", q->bdev->filename);
        return -ENOMEM;
    }
    struct bdev_options data_options = *options;
    data_options.backing = NULL;
    data_options.snapshot_id = data_options.snapshot_name = data_options.snapshot_any = NULL;
    data_options.path = path;
    data_options.format = BDEV_FORMAT_AUTO;
    data_options.readonly = q->readonly;
    data_options.create_size_set = false;
    char *reason = NULL;
    int rc = bdev_open(&data_options, &q->data, &reason);
    if (rc < 0)
        error_message_set(error_message, 0, "%s: could not open data file: %s", q->bdev->filename,
                          reason ? reason : "unknown error");
    free(reason);
    free(path);
    if (rc == 0)
        q->data_external = true;
    return rc;
}

static int load_table(struct qcow2 *q, uint64_t offset, uint64_t entries, uint64_t reserved_mask, uint64_t **table,
                      const char *name, char **error_message)
{
    uint64_t *values = calloc(entries ? entries : 1, sizeof(*values));
    if (!values)
        return -ENOMEM;
    int rc = entries ? qcow2_file_read(q, offset, values, entries * 8) : 0;
    if (rc < 0) {
        error_message_set(error_message, rc, "%s: cannot read the %s table", q->bdev->filename, name);
        free(values);
        return rc;
    }
    for (uint64_t i = 0; i < entries; i++) {
        values[i] = qcow2_be64((const uint8_t *)&values[i]);
        uint64_t target = values[i] & QCOW2_OFFSET_MASK;
        if ((values[i] & reserved_mask) || (target & (q->cluster_size - 1))) {
            error_message_set(error_message, 0, "%s: %s table entry %llu is corrupt (%#llx)", q->bdev->filename,
                              name, (unsigned long long)i, (unsigned long long)values[i]);
            free(values);
            return -EINVAL;
        }
    }
    *table = values;
    return 0;
}

static int read_from_file(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    return bdev_pread(opaque, buffer, length, offset);
}

static int read_header(struct qcow2 *q, char **error_message)
{
    char *reason = NULL;
    int rc = qcow2_image_header_read(read_from_file, q->file, q->file->size, &q->image, &reason);
    if (rc < 0)
        error_message_set(error_message, rc, "%s: %s", q->bdev->filename,
                          reason ? reason : "cannot read the qcow2 header");
    free(reason);
    return rc;
}

/*
 * Keep two openers from writing one image (qcow2_lock.h: QEMU's scheme, so
 * QEMU's tools take part).  A lock held by this process's own close of the
 * image, still running on the pool, is waited for (block/closing.h).
 */
static int lock_image(struct qcow2 *q, char **error_message)
{
    const struct file_bdev *file = file_bdev_get(q->file);
    if (!file)
        return 0; /* an LV read in user space: lvm's own rules keep other writers off it */
    struct qcow2_lock_failure failure;
    int rc;
    do
        rc = qcow2_lock(file->fd, !q->readonly, &failure);
    while (rc == -EBUSY && closing_wait(file->dev, file->ino));
    if (rc == -EBUSY && failure.kind == QCOW2_LOCK_HELD)
        error_message_set(error_message, 0, "%s: the image is in use: another program or export has %s "
                          "permission (lock byte %d)", q->bdev->filename, failure.permission, failure.byte);
    else if (rc == -EBUSY && failure.kind == QCOW2_LOCK_UNSHARED)
        error_message_set(error_message, 0, "%s: the image is in use: another program or export does not "
                          "share %s permission (lock byte %d)", q->bdev->filename, failure.permission, failure.byte);
    else if (rc == -EBUSY)
        error_message_set(error_message, 0, "%s: the image is in use: lock byte %d is taken", q->bdev->filename,
                          failure.byte);
    else if (rc < 0)
        error_message_set(error_message, rc, "%s: cannot lock the image", q->bdev->filename);
    return rc;
}

/*
 * A dirty image (lazy refcounts, not closed cleanly) gets its refcounts
 * rebuilt before it is written, as QEMU does at open: qcow2_check repairs
 * it through a descriptor of its own (the image lock is held here), then
 * the header is read again.  When the repair cannot finish, the dirty bit
 * stays and the image is served read-only.
 */
static int repair_dirty(struct qcow2 *q, char **error_message)
{
    struct qcow2_check_result result;
    int rc = qcow2_check(q->bdev->filename, QCOW2_CHECK_FIX_ALL, &result, NULL, NULL, NULL);
    if (rc < 0 || result.corruptions || result.check_errors)
        return 0;
    struct stat st;
    const struct file_bdev *file = file_bdev_get(q->file);
    if (!file || fstat(file->fd, &st) < 0)
        return 0;
    q->file->size = (uint64_t)st.st_size; /* a rebuild may have grown the file */
    qcow2_image_header_clear(&q->image);
    if ((rc = read_header(q, error_message)) < 0)
        return rc;
    if (asprintf(&q->bdev->notice, "the image was dirty (lazy refcounts); refcounts repaired (%lld leaked "
                 "clusters, %lld corruptions fixed)", (long long)result.leaks_fixed,
                 (long long)result.corruptions_fixed) < 0)
        q->bdev->notice = NULL;
    return 0;
}

static int check_features(struct qcow2 *q, char **error_message)
{
    const char *path = q->bdev->filename;
    const struct qcow2_header *h = &q->image.header;
    if (q->readonly)
        return 0;
    if ((h->incompatible_features & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)) == QCOW2_INCOMPAT_DIRTY) {
        int rc = repair_dirty(q, error_message);
        if (rc < 0)
            return rc;
        h = &q->image.header;
    }
    /*
     * Writing would make things worse (corrupt), or would trust refcounts
     * that lazy refcounting left stale (dirty): serve the image read-only,
     * as QEMU does for a corrupt one, and say why.
     */
    const char *reason = NULL;
    if (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT)
        reason = "the image is marked corrupt";
    else if (h->incompatible_features & QCOW2_INCOMPAT_DIRTY)
        reason = "the image is dirty (lazy refcounts were in use when it was last closed)";
    if (reason) {
        q->readonly = true;
        if (asprintf(&q->bdev->notice, "opened read-only: %s; repair it with 'luna-img check -r all'", reason) < 0)
            q->bdev->notice = NULL;
        return 0;
    }
    /* Writes keep a raw data file raw (zeroes go there too), so that promise stays. */
    uint64_t kept = (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0;
    if (h->version >= 3 && (h->autoclear_features & ~kept)) {
        /* Bitmaps this driver does not update must be marked inconsistent before any write. */
        uint8_t value[8];
        qcow2_put_be64(value, h->autoclear_features & kept);
        int rc = qcow2_file_write(q, 88, value, sizeof(value));
        if (rc == 0)
            rc = qcow2_file_flush(q);
        if (rc < 0) {
            error_message_set(error_message, rc, "%s: cannot update the header", path);
            return rc;
        }
        q->image.header.autoclear_features &= kept;
    }
    return 0;
}

static int setup_geometry_and_tables(struct qcow2 *q, uint64_t l2_cache_size, char **error_message)
{
    const struct qcow2_header *h = &q->image.header;
    q->cluster_bits = h->cluster_bits;
    q->cluster_size = 1ull << h->cluster_bits;
    q->extended_l2 = (h->incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2) != 0;
    q->l2_entry_size = qcow2_l2_entry_size(h);
    q->l2_entries = (uint32_t)(q->cluster_size / q->l2_entry_size);
    q->subcluster_size = q->extended_l2 ? q->cluster_size / QCOW2_SUBCLUSTERS : q->cluster_size;
    q->refcount_bits = 1u << h->refcount_order;
    q->refcount_max = q->refcount_bits == 64 ? UINT64_MAX : (1ull << q->refcount_bits) - 1;
    q->refcount_block_entries = (uint32_t)(q->cluster_size * 8 / q->refcount_bits);
    q->l1_size = h->l1_size;
    q->refcount_table_entries = ((uint64_t)h->refcount_table_clusters << h->cluster_bits) / 8;
    q->host_end = (q->file->size + q->cluster_size - 1) & ~(q->cluster_size - 1);

    int rc = load_table(q, h->l1_table_offset, q->l1_size, QCOW2_L1_RESERVED_MASK, &q->l1_table, "L1",
                        error_message);
    if (rc == 0)
        rc = load_table(q, h->refcount_table_offset, q->refcount_table_entries, QCOW2_REFTABLE_RESERVED_MASK,
                        &q->refcount_table, "refcount", error_message);
    if (rc < 0)
        return rc;

    /*
     * Enough L2 tables to map the whole disk, up to l2_cache_size bytes of
     * them (default 4 MiB) and at least a few; refcount blocks a quarter.
     */
    uint64_t bytes_per_table = (uint64_t)q->l2_entries * q->cluster_size;
    uint64_t tables = (h->size + bytes_per_table - 1) / bytes_per_table;
    uint64_t max_tables = (l2_cache_size ? l2_cache_size : L2_CACHE_MAX_BYTES) / q->cluster_size;
    if (tables > max_tables)
        tables = max_tables;
    if (tables < MIN_CACHE_TABLES)
        tables = MIN_CACHE_TABLES;
    uint64_t refcount_tables = tables / 4 < MIN_CACHE_TABLES ? MIN_CACHE_TABLES : tables / 4;
    rc = qcow2_cache_init(&q->l2_cache, q, "L2", (uint32_t)tables, q->l1_size);
    if (rc == 0)
        rc = qcow2_cache_init(&q->refcount_cache, q, "refcount", (uint32_t)refcount_tables,
                              q->refcount_table_entries);
    if (rc < 0)
        error_message_set(error_message, rc, "%s: cannot allocate the metadata caches", q->bdev->filename);
    return rc;
}

static void set_bdev_properties(struct qcow2 *q, const struct bdev_options *options)
{
    struct bdev *bdev = q->bdev;
    const struct qcow2_header *h = &q->image.header;
    bdev->size = h->size;
    bdev->caps = BDEV_CAP_WRITE_ZEROES | BDEV_CAP_BLOCK_STATUS | ((q->file->caps | q->data->caps) & BDEV_CAP_FLUSH);
    if (q->readonly)
        bdev->caps |= BDEV_CAP_READ_ONLY;
    else if (!q->data_external)
        bdev->caps |= BDEV_CAP_COMPRESS; /* a data file holds clusters at their guest offsets only */
    bool zero_flag = h->version >= 3;
    if (zero_flag)
        bdev->caps |= BDEV_CAP_FAST_ZERO;
    /*
     * No BDEV_CAP_DISCARD_ZEROES: a discard leaves the parts of clusters it
     * does not cover whole as they were.  Zeroes are write_zeroes' promise.
     */
    if (options->discard && (zero_flag || !q->backing))
        bdev->caps |= BDEV_CAP_DISCARD;
    if (!q->backing)
        bdev->caps |= BDEV_CAP_ZERO_INIT;
    bdev->limits = (struct bdev_limits){
        .request_alignment = 1,
        .logical_block_size = 512,
        .physical_block_size = q->file->limits.physical_block_size,
        .optimal_io_size = (uint32_t)q->cluster_size,
        .max_transfer = MAX_TRANSFER,
        .max_discard = 1ull << 30,
        .compress_unit = (uint32_t)q->cluster_size,
    };
}

bool qcow2_probe_bytes(const uint8_t *start, size_t length)
{
    return length >= 4 && qcow2_be32(start) == QCOW2_MAGIC;
}

bool qcow2_probe(const char *path)
{
    return image_probe(path) == BDEV_FORMAT_QCOW2;
}

/* The snapshot bdev_options names, read-only, in place of the active image. */
static int open_snapshot(struct qcow2 *q, const struct bdev_options *options, char **error_message)
{
    if (!q->readonly)
        return error_message_set(error_message, -EINVAL, "%s: a snapshot can only be opened read-only",
                                 q->bdev->filename);
    int rc = qcow2_snapshot_view_load(q, options->snapshot_id, options->snapshot_name, options->snapshot_any);
    if (rc == -ENOENT)
        error_message_set(error_message, rc, "%s: Can't find snapshot", q->bdev->filename);
    else if (rc < 0)
        error_message_set(error_message, rc, "%s: cannot read the snapshot table", q->bdev->filename);
    return rc;
}

int qcow2_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    if (open_depth >= MAX_BACKING_DEPTH) {
        error_message_set(error_message, 0, "%s: backing chain deeper than %d (a loop?)", options->path,
                          MAX_BACKING_DEPTH);
        return -ELOOP;
    }
    struct qcow2 *q = calloc(1, sizeof(*q));
    if (!q) {
        error_message_set(error_message, 0, "%s: out of memory", options->path);
        return -ENOMEM;
    }
    q->bdev = bdev;
    q->readonly = options->readonly;
    q->cache_mode = options->cache;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->changed, NULL);
    pthread_mutex_init(&q->quiesce_lock, NULL);
    pthread_cond_init(&q->quiesce_drained, NULL);

    struct bdev_options file_options = *options;
    file_options.backing = NULL;
    /* An image inside an LVM volume read from its PVs (as oVirt's block storage keeps them). */
    file_options.format = options->lvm_devices ? BDEV_FORMAT_LVM : BDEV_FORMAT_AUTO;
    file_options.create_size_set = false;
    int rc = bdev_open(&file_options, &q->file, error_message);
    if (rc == 0 && !(options->force_share && options->readonly))
        rc = lock_image(q, error_message);
    if (rc == 0)
        rc = read_header(q, error_message);
    if (rc == 0)
        rc = check_features(q, error_message);
    if (rc == 0)
        rc = setup_geometry_and_tables(q, options->l2_cache_size, error_message);
    if (rc == 0 && (options->snapshot_id || options->snapshot_name || options->snapshot_any))
        rc = open_snapshot(q, options, error_message);
    q->data = q->file;
    if (rc == 0 && (q->image.header.incompatible_features & QCOW2_INCOMPAT_DATA_FILE))
        rc = open_data_file(q, options, error_message);
    q->data_raw = q->data_external && (q->image.header.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
    if (rc == 0 && options->backing) {
        q->backing = options->backing;
        q->backing_borrowed = true;
    } else if (rc == 0 && q->image.backing_file) {
        open_depth++;
        rc = open_backing(q, options, error_message);
        open_depth--;
    }
    if (rc < 0) {
        free(bdev->notice);
        bdev->notice = NULL;
        image_free(q);
        return rc;
    }
    bdev->ops = &qcow2_ops;
    bdev->driver = q;
    set_bdev_properties(q, options);
    return 0;
}
