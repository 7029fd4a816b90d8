#include "block/file_sync.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/align.h"
#include "block/iov.h"

#define ZERO_CHUNK (1u << 20)

/* ---- blocking primitives (pool threads) ---- */

/*
 * Transfer all of length at offset, resuming after short transfers.  Reads
 * that hit end of file leave zeroes (the bdev may be larger than the file).
 */
static int transfer_all(int fd, bool write, uint64_t offset, const struct iovec *iov, int iovcnt,
                        uint64_t length, int rw_flags)
{
    struct iovec stack_copy[8];
    struct iovec *copy = stack_copy;
    if (iovcnt > (int)(sizeof(stack_copy) / sizeof(stack_copy[0]))) {
        copy = malloc(sizeof(*copy) * (size_t)iovcnt);
        if (!copy)
            return -ENOMEM;
    }
    memcpy(copy, iov, sizeof(*copy) * (size_t)iovcnt);
    struct iovec *current = copy;
    int count = iovcnt;
    uint64_t done = 0;
    int rc = 0;
    while (done < length) {
        int segments = count > IOV_MAX ? IOV_MAX : count;
        ssize_t n = write ? pwritev2(fd, current, segments, (off_t)(offset + done), rw_flags)
                          : preadv2(fd, current, segments, (off_t)(offset + done), 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            rc = -errno;
            break;
        }
        if (n == 0) {
            if (write)
                rc = -EIO;
            else
                iov_zero(current, count);
            break;
        }
        done += (uint64_t)n;
        iov_advance(&current, &count, (size_t)n);
    }
    if (copy != stack_copy)
        free(copy);
    return rc;
}

static int transfer_buffer(int fd, bool write, uint64_t offset, void *buffer, uint64_t length,
                           int rw_flags)
{
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    return transfer_all(fd, write, offset, &iov, 1, length, rw_flags);
}

static void copy_from_iov(char *dst, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(dst, iov[i].iov_base, iov[i].iov_len);
        dst += iov[i].iov_len;
    }
}

static void copy_to_iov(const struct iovec *iov, int iovcnt, const char *src)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(iov[i].iov_base, src, iov[i].iov_len);
        src += iov[i].iov_len;
    }
}

bool file_range_aligned(const struct file_bdev *file, uint64_t offset, uint64_t length)
{
    return offset % file->offset_align == 0 && length % file->offset_align == 0;
}

bool file_buffers_aligned(const struct file_bdev *file, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        if ((uintptr_t)iov[i].iov_base % file->mem_align != 0 ||
            iov[i].iov_len % file->offset_align != 0)
            return false;
    }
    return true;
}

static void *aligned_buffer(const struct file_bdev *file, size_t length)
{
    size_t alignment = file->offset_align > file->mem_align ? file->offset_align : file->mem_align;
    if (alignment < sizeof(void *))
        alignment = sizeof(void *);
    void *buffer;
    if (posix_memalign(&buffer, alignment, length) != 0)
        return NULL;
    return buffer;
}

/*
 * O_DIRECT with an unaligned request: go through an aligned buffer covering
 * the whole blocks; a write first reads the partial head and tail blocks.
 * The caller holds the write lock exclusively for unaligned writes.
 */
static int bounce_transfer(struct file_bdev *file, bool write, uint64_t offset, const struct iovec *iov,
                           int iovcnt, uint64_t length, int rw_flags)
{
    uint64_t block = file->offset_align;
    uint64_t start = align_down(offset, block);
    uint64_t end = align_up(offset + length, block);
    char *buffer = aligned_buffer(file, end - start);
    if (!buffer)
        return -ENOMEM;
    char *data = buffer + (offset - start);
    int rc = 0;
    if (!write) {
        rc = transfer_buffer(file->fd, false, start, buffer, end - start, 0);
        if (rc == 0)
            copy_to_iov(iov, iovcnt, data);
    } else {
        bool head_partial = offset != start;
        bool tail_partial = offset + length != end;
        if (head_partial)
            rc = transfer_buffer(file->fd, false, start, buffer, block, 0);
        if (rc == 0 && tail_partial && !(head_partial && end - block == start))
            rc = transfer_buffer(file->fd, false, end - block, buffer + (end - block - start), block, 0);
        if (rc == 0) {
            copy_from_iov(data, iov, iovcnt);
            rc = transfer_buffer(file->fd, true, start, buffer, end - start, rw_flags);
        }
    }
    free(buffer);
    return rc;
}

int file_sync_transfer(struct file_bdev *file, bool write, uint64_t offset, const struct iovec *iov,
                         int iovcnt, uint64_t length, int rw_flags)
{
    /* The partial last block of an unaligned image: written exactly, never extended. */
    if (write && file->tail_fd >= 0 && offset + length > file->tail_start)
        return transfer_all(file->tail_fd, true, offset, iov, iovcnt, length, rw_flags);
    if (file->direct && !(file_range_aligned(file, offset, length) && file_buffers_aligned(file, iov, iovcnt)))
        return bounce_transfer(file, write, offset, iov, iovcnt, length, rw_flags);
    return transfer_all(file->fd, write, offset, iov, iovcnt, length, rw_flags);
}

int file_write_zeroes_slow(struct file_bdev *file, uint64_t offset, uint64_t length)
{
    size_t buffer_size = length < ZERO_CHUNK ? align_up(length, file->offset_align) : ZERO_CHUNK;
    char *zeroes = aligned_buffer(file, buffer_size);
    if (!zeroes)
        return -ENOMEM;
    memset(zeroes, 0, buffer_size);
    int rc = 0;
    uint64_t end = offset + length;
    while (offset < end && rc == 0) {
        /* Chunk ends on ZERO_CHUNK boundaries so only the first and last chunks may be unaligned. */
        uint64_t chunk = ZERO_CHUNK - offset % ZERO_CHUNK;
        if (chunk > end - offset)
            chunk = end - offset;
        struct iovec iov = {.iov_base = zeroes, .iov_len = chunk};
        rc = file_sync_transfer(file, true, offset, &iov, 1, chunk, 0);
        offset += chunk;
    }
    free(zeroes);
    return rc;
}


/* ---- whole requests, blocking ---- */

static int sync_flush(struct file_bdev *file) { return fdatasync(file->fd) < 0 ? -errno : 0; }

static int discard_or_zero(struct file_bdev *file, struct bdev_io *io)
{
    uint64_t chunk_max = file->bdev->limits.max_discard ? file->bdev->limits.max_discard : (1ull << 30);
    uint64_t offset = io->offset, end = io->offset + io->length;
    int rc = 0;
    while (offset < end && rc == 0) {
        uint64_t chunk = end - offset < chunk_max ? end - offset : chunk_max;
        if (io->op == BDEV_OP_DISCARD)
            rc = file->discard_range(file, offset, chunk);
        else
            rc = file->zero_range(file, offset, chunk, io->flags);
        offset += chunk;
    }
    /*
     * fallocate and the device ioctls are not covered by O_DSYNC, yet
     * writethrough and directsync promise that every write is stable on
     * completion, as FUA does in the other modes: sync explicitly.
     */
    if (rc == 0 && (file_writes_are_stable(file) || file_fua_by_flag(file, io)))
        rc = sync_flush(file);
    return rc;
}

static int block_status(struct file_bdev *file, struct bdev_io *io)
{
    uint64_t position = io->offset, end = io->offset + io->length;
    uint32_t count = 0;

    while (position < end && count < io->max_extents) {
        uint64_t extent_end;
        uint32_t flags;
        off_t data = lseek(file->fd, (off_t)position, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
            /* No data from here to end of file, nor beyond it. */
            extent_end = end;
            flags = BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO;
        } else if (data < 0) {
            /* No SEEK_DATA support: everything is data. */
            extent_end = end;
            flags = 0;
        } else if ((uint64_t)data > position) {
            extent_end = (uint64_t)data;
            flags = BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO;
        } else {
            off_t hole = lseek(file->fd, (off_t)position, SEEK_HOLE);
            extent_end = hole < 0 || (uint64_t)hole <= position ? end : (uint64_t)hole;
            flags = 0;
        }
        if (extent_end > end)
            extent_end = end;
        io->extents[count].length = extent_end - position;
        io->extents[count].flags = flags;
        count++;
        position = extent_end;
    }
    io->nr_extents = count;
    return 0;
}

int file_blocking_run(struct file_bdev *file, struct bdev_io *io)
{
    switch (io->op) {
    case BDEV_OP_READ:
    case BDEV_OP_WRITE: {
        bool write = io->op == BDEV_OP_WRITE;
        int rw_flags = write && file_fua_by_flag(file, io) ? RWF_DSYNC : 0;
        return file_sync_transfer(file, write, io->offset, io->iov, io->iovcnt, io->length, rw_flags);
    }
    case BDEV_OP_FLUSH:
        return file->cache == BDEV_CACHE_UNSAFE ? 0 : sync_flush(file);
    case BDEV_OP_DISCARD:
    case BDEV_OP_WRITE_ZEROES:
        return discard_or_zero(file, io);
    case BDEV_OP_BLOCK_STATUS:
        return block_status(file, io);
    }
    return -EINVAL;
}

/* A range-lock entry granted on another thread wakes the one blocked here. */
struct blocking_lock_wait {
    struct range_lock_entry entry;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool granted;
};

static void blocking_lock_granted(struct range_lock_entry *entry)
{
    struct blocking_lock_wait *wait = container_of(entry, struct blocking_lock_wait, entry);
    pthread_mutex_lock(&wait->mutex);
    wait->granted = true;
    pthread_cond_signal(&wait->cond);
    pthread_mutex_unlock(&wait->mutex);
}

int file_blocking(struct bdev *bdev, struct bdev_io *io)
{
    struct file_bdev *file = bdev->driver;
    bool modifies = io->op == BDEV_OP_WRITE || io->op == BDEV_OP_WRITE_ZEROES || io->op == BDEV_OP_DISCARD;
    if (io->op == BDEV_OP_DISCARD || io->op == BDEV_OP_WRITE_ZEROES)
        file->may_have_holes = true;
    if (io->op == BDEV_OP_BLOCK_STATUS && !file->may_have_holes) {
        io->extents[0] = (struct bdev_extent){.length = io->length, .flags = 0};
        io->nr_extents = 1;
        return 0;
    }
    if (!(file->direct && modifies))
        return file_blocking_run(file, io);

    /* O_DIRECT: the same write lock as asynchronous requests take (file_submit). */
    struct blocking_lock_wait wait = {
        .entry = {.start = align_down(io->offset, file->offset_align),
                  .end = align_up(io->offset + io->length, file->offset_align),
                  .exclusive = !file_range_aligned(file, io->offset, io->length),
                  .granted = blocking_lock_granted},
        .mutex = PTHREAD_MUTEX_INITIALIZER,
        .cond = PTHREAD_COND_INITIALIZER,
    };
    if (!range_lock_acquire(&file->write_lock, &wait.entry)) {
        pthread_mutex_lock(&wait.mutex);
        while (!wait.granted)
            pthread_cond_wait(&wait.cond, &wait.mutex);
        pthread_mutex_unlock(&wait.mutex);
    }
    int rc = file_blocking_run(file, io);
    range_lock_release(&file->write_lock, &wait.entry);
    pthread_cond_destroy(&wait.cond);
    pthread_mutex_destroy(&wait.mutex);
    return rc;
}
