#include "block/file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/aio_internal.h"
#include "block/align.h"
#include "block/closing.h"
#include "block/file_sync.h"
#include "block/iov.h"

/* One bdev_io on its way through the driver (an aio record of io->ctx). */
struct file_request {
    struct aio_work work;
    struct aio_uring_op uring;
    struct range_lock_entry lock_entry;
    struct bdev_io *io;
    struct file_bdev *file;
    bool locked;
    int result; /* pool jobs leave theirs here */

    /* io_uring read/write progress: what is left to transfer. */
    uint64_t transferred;
    struct iovec *iov;
    int iovcnt;
    struct iovec *iov_copy; /* made on the first short transfer */
};

static bool io_aligned(const struct file_bdev *file, const struct bdev_io *io)
{
    return file_range_aligned(file, io->offset, io->length) && file_buffers_aligned(file, io->iov, io->iovcnt);
}

_Static_assert(sizeof(struct file_request) <= AIO_RECORD_SIZE, "file_request must fit an aio record");

/* ---- request lifetime ---- */

static void request_free(struct file_request *req)
{
    if (req->locked)
        range_lock_release(&req->file->write_lock, &req->lock_entry);
    free(req->iov_copy);
    aio_record_put(req->io->ctx, req);
}

/* From a loop callback. */
static void request_finish(struct file_request *req, int result)
{
    struct bdev_io *io = req->io;
    request_free(req);
    aio_request_finish(io, result);
}

/* From a path that may be inside bdev_submit. */
static void request_finish_later(struct file_request *req, int result)
{
    struct bdev_io *io = req->io;
    request_free(req);
    aio_context_complete(io->ctx, io, result);
}

/* ---- pool jobs ---- */

static void pool_done(struct aio_work *work)
{
    struct file_request *req = container_of(work, struct file_request, work);
    request_finish(req, req->result);
}

/* Every pool job is the blocking form of the request (file_sync.c). */
static void pool_run(struct aio_work *work)
{
    struct file_request *req = container_of(work, struct file_request, work);
    req->result = file_blocking_run(req->file, req->io);
}

static void run_in_pool(struct file_request *req, void (*run)(struct aio_work *work))
{
    req->work.run = run;
    req->work.done = pool_done;
    int rc = aio_context_run_in_pool(req->io->ctx, &req->work);
    if (rc < 0)
        request_finish_later(req, rc);
}

/* ---- io_uring ---- */

static void uring_prepare_transfer(struct aio_uring_op *op, struct io_uring_sqe *sqe)
{
    struct file_request *req = container_of(op, struct file_request, uring);
    struct bdev_io *io = req->io;
    int iovcnt = req->iovcnt > IOV_MAX ? IOV_MAX : req->iovcnt;
    uint64_t offset = io->offset + req->transferred;
    if (io->op == BDEV_OP_READ) {
        io_uring_prep_readv(sqe, req->file->fd, req->iov, (unsigned)iovcnt, offset);
    } else {
        io_uring_prep_writev(sqe, req->file->fd, req->iov, (unsigned)iovcnt, offset);
        if (file_fua_by_flag(req->file, io))
            sqe->rw_flags = RWF_DSYNC;
    }
}

static void uring_transfer_done(struct aio_uring_op *op, int result)
{
    struct file_request *req = container_of(op, struct file_request, uring);
    struct bdev_io *io = req->io;
    struct aio_context *ctx = io->ctx;

    if (result == -EAGAIN || result == -EINTR) {
        aio_uring_submit(ctx, op);
        return;
    }
    if (result == -EOPNOTSUPP && req->transferred == 0) {
        /* A file io_uring cannot drive: the pool can. */
        run_in_pool(req, pool_run);
        return;
    }
    if (result < 0) {
        request_finish(req, result);
        return;
    }
    if (result == 0) {
        if (io->op == BDEV_OP_WRITE) {
            request_finish(req, -EIO);
        } else {
            iov_zero(req->iov, req->iovcnt); /* end of file inside the bdev */
            request_finish(req, 0);
        }
        return;
    }
    req->transferred += (uint64_t)result;
    if (req->transferred >= io->length) {
        request_finish(req, 0);
        return;
    }
    /* Short transfer: continue with the rest, on a copy of the caller's iovec. */
    if (!req->iov_copy) {
        req->iov_copy = malloc(sizeof(struct iovec) * (size_t)req->iovcnt);
        if (!req->iov_copy) {
            request_finish(req, -ENOMEM);
            return;
        }
        memcpy(req->iov_copy, req->iov, sizeof(struct iovec) * (size_t)req->iovcnt);
        req->iov = req->iov_copy;
    }
    iov_advance(&req->iov, &req->iovcnt, (size_t)result);
    aio_uring_submit(ctx, op);
}

static void uring_prepare_flush(struct aio_uring_op *op, struct io_uring_sqe *sqe)
{
    struct file_request *req = container_of(op, struct file_request, uring);
    io_uring_prep_fsync(sqe, req->file->fd, IORING_FSYNC_DATASYNC);
}

static void uring_flush_done(struct aio_uring_op *op, int result)
{
    struct file_request *req = container_of(op, struct file_request, uring);
    if (result == -EAGAIN || result == -EINTR) {
        aio_uring_submit(req->io->ctx, op);
        return;
    }
    if (result == -EOPNOTSUPP) {
        run_in_pool(req, pool_run);
        return;
    }
    request_finish(req, result < 0 ? result : 0);
}

/* ---- dispatch ---- */

static void dispatch(struct file_request *req)
{
    struct bdev_io *io = req->io;
    struct file_bdev *file = req->file;
    bool uring = file->use_uring && aio_context_uring(io->ctx) != NULL;

    switch (io->op) {
    case BDEV_OP_READ:
    case BDEV_OP_WRITE:
        if (uring && (!file->direct || io_aligned(file, io))) {
            req->iov = io->iov;
            req->iovcnt = io->iovcnt;
            req->uring.prepare = uring_prepare_transfer;
            req->uring.done = uring_transfer_done;
            aio_uring_submit(io->ctx, &req->uring);
        } else {
            run_in_pool(req, pool_run);
        }
        return;
    case BDEV_OP_FLUSH:
        if (uring) {
            req->uring.prepare = uring_prepare_flush;
            req->uring.done = uring_flush_done;
            aio_uring_submit(io->ctx, &req->uring);
        } else {
            run_in_pool(req, pool_run);
        }
        return;
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES:
        file->may_have_holes = true; /* before the punch, so no status read misses it */
        run_in_pool(req, pool_run);
        return;
    case BDEV_OP_BLOCK_STATUS:
        if (!file->may_have_holes) {
            io->extents[0] = (struct bdev_extent){.length = io->length, .flags = 0};
            io->nr_extents = 1;
            request_finish_later(req, 0);
            return;
        }
        run_in_pool(req, pool_run);
        return;
    }
    request_finish_later(req, -EINVAL);
}

static void dispatch_after_wait(struct aio_work *work)
{
    dispatch(container_of(work, struct file_request, work));
}

/* Runs on the thread that released the blocking write: move to the owner's loop. */
static void write_lock_granted(struct range_lock_entry *entry)
{
    struct file_request *req = container_of(entry, struct file_request, lock_entry);
    req->work.done = dispatch_after_wait;
    aio_context_post_from_any_thread(req->io->ctx, &req->work);
}

void file_submit(struct bdev *bdev, struct bdev_io *io)
{
    struct file_bdev *file = bdev->driver;
    if (io->op == BDEV_OP_FLUSH && file->cache == BDEV_CACHE_UNSAFE) {
        aio_context_complete(io->ctx, io, 0);
        return;
    }
    struct file_request *req = aio_record_get(io->ctx);
    if (!req) {
        aio_context_complete(io->ctx, io, -ENOMEM);
        return;
    }
    req->io = io;
    req->file = file;

    bool modifies = io->op == BDEV_OP_WRITE || io->op == BDEV_OP_WRITE_ZEROES ||
                    io->op == BDEV_OP_DISCARD;
    if (file->direct && modifies) {
        req->lock_entry.start = align_down(io->offset, file->offset_align);
        req->lock_entry.end = align_up(io->offset + io->length, file->offset_align);
        req->lock_entry.exclusive = !file_range_aligned(file, io->offset, io->length);
        req->lock_entry.granted = write_lock_granted;
        req->locked = true;
        if (!range_lock_acquire(&file->write_lock, &req->lock_entry))
            return;
    }
    dispatch(req);
}

/* ---- setup ---- */

int file_open_flags(enum bdev_cache_mode cache, bool readonly)
{
    int flags = O_CLOEXEC | (readonly ? O_RDONLY : O_RDWR);
    if (cache == BDEV_CACHE_NONE || cache == BDEV_CACHE_DIRECTSYNC)
        flags |= O_DIRECT;
    if (cache == BDEV_CACHE_WRITETHROUGH || cache == BDEV_CACHE_DIRECTSYNC)
        flags |= O_DSYNC;
    return flags;
}

uint32_t file_cache_caps(enum bdev_cache_mode cache)
{
    switch (cache) {
    case BDEV_CACHE_WRITEBACK:
    case BDEV_CACHE_NONE:
    case BDEV_CACHE_UNSAFE: /* accepted and ignored, so clients may send them */
        return BDEV_CAP_FLUSH | BDEV_CAP_FUA;
    case BDEV_CACHE_WRITETHROUGH:
    case BDEV_CACHE_DIRECTSYNC:
        break;
    }
    return 0;
}

int file_setup(struct file_bdev *file, const struct bdev_options *options, uint32_t block_size_hint,
               char **error_message)
{
    int rc = range_lock_init(&file->write_lock);
    if (rc < 0) {
        error_message_set(error_message, 0, "%s: %s", options->path, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(file->fd, &st) < 0) {
        rc = -errno;
        error_message_set(error_message, rc, "%s", options->path);
        range_lock_destroy(&file->write_lock);
        return rc;
    }
    file->dev = st.st_dev;
    file->ino = st.st_ino;
    file->cache = options->cache;
    file->discard = options->discard;
    file->readonly = options->readonly;
    file->tail_fd = -1;
    file->tail_start = UINT64_MAX;
    file->direct = options->cache == BDEV_CACHE_NONE || options->cache == BDEV_CACHE_DIRECTSYNC;
    file->mem_align = 1;
    file->offset_align = 1;

    switch (options->aio) {
    case BDEV_AIO_THREADS:
        file->use_uring = false;
        break;
    case BDEV_AIO_IO_URING:
        if (!aio_uring_supported()) {
            error_message_set(error_message, 0,
                           "%s: aio=io_uring, but io_uring is not available here "
                           "(kernel or seccomp); use aio=threads",
                           options->path);
            range_lock_destroy(&file->write_lock);
            return -ENOTSUP;
        }
        file->use_uring = true;
        break;
    case BDEV_AIO_DEFAULT:
        file->use_uring = aio_uring_supported();
        break;
    }

    if (file->direct) {
        struct statx stx;
        if (statx(file->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
            (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 0) {
            file->offset_align = stx.stx_dio_offset_align;
            file->mem_align = stx.stx_dio_mem_align ? stx.stx_dio_mem_align : stx.stx_dio_offset_align;
        } else {
            /* Unknown: the block size hint, or 4096, which every device accepts. */
            file->offset_align = block_size_hint ? block_size_hint : 4096;
            file->mem_align = file->offset_align;
        }
    }
    return 0;
}

int file_setup_tail(struct file_bdev *file, const char *path, uint64_t size, char **error_message)
{
    if (!file->direct || size % file->offset_align == 0 || file->readonly)
        return 0;
    /*
     * Through /proc/self/fd the same inode opens again even if the path was
     * renamed or replaced meanwhile; the path is the fallback without /proc.
     */
    int flags = file_open_flags(file->cache, false) & ~O_DIRECT;
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", file->fd);
    int fd = open(self, flags);
    if (fd < 0 && errno == ENOENT)
        fd = open(path, flags);
    if (fd < 0) {
        int rc = -errno;
        error_message_set(error_message, 0, "%s: cannot open the unaligned end of the image without O_DIRECT: %s",
                       path, strerror(-rc));
        return rc;
    }
    file->tail_fd = fd;
    file->tail_start = align_down(size, file->offset_align);
    return 0;
}

static void release_now(struct file_bdev *file)
{
    range_lock_destroy(&file->write_lock);
    if (file->tail_fd >= 0)
        close(file->tail_fd);
    if (file->fd >= 0)
        close(file->fd);
    closing_end(file->dev, file->ino);
    free(file);
}

static void release_job(struct threadpool_job *job)
{
    release_now(container_of(job, struct file_bdev, release_job));
}

void file_release(struct file_bdev *file)
{
    closing_begin(file->dev, file->ino);
    file->release_job.run = release_job;
    if (threadpool_submit(&file->release_job) < 0)
        release_now(file); /* no pool thread: better to block than to leak */
}

struct file_bdev *file_bdev_get(const struct bdev *bdev)
{
    return bdev->ops->submit == file_submit ? bdev->driver : NULL;
}
