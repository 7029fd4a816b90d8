#include "vmm/virtio_blk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/bdev.h"
#include "block/iov.h"
#include "common/byte_order.h"

#define REQUEST_HEADER_SIZE 16u
#define DISCARD_SEGMENT_SIZE 16u
#define DISCARD_FLAG_UNMAP 1u
#define MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per request; the bdev splits further */

struct blk_request {
    struct bdev_io io;
    struct virtio_blk *blk;
    unsigned queue;
    uint16_t head;
    uint64_t generation;
    uint8_t *status;
    uint32_t written;   /* bytes the device writes into the guest's buffers, status included */
    struct iovec iov[]; /* the data buffers */
};

/* Config-space offsets. */
#define CONFIG_CAPACITY 0
#define CONFIG_SIZE_MAX 8
#define CONFIG_SEG_MAX 12
#define CONFIG_BLK_SIZE 20
#define CONFIG_NUM_QUEUES 34
#define CONFIG_MAX_DISCARD_SECTORS 36
#define CONFIG_MAX_DISCARD_SEG 40
#define CONFIG_DISCARD_ALIGNMENT 44
#define CONFIG_MAX_WRITE_ZEROES_SECTORS 48
#define CONFIG_MAX_WRITE_ZEROES_SEG 52
#define CONFIG_WRITE_ZEROES_MAY_UNMAP 56

static void read_config(void *device, uint32_t offset, uint8_t *data, unsigned length)
{
    struct virtio_blk *blk = device;
    memcpy(data, blk->config + offset, length);
}

static void notify(void *device, unsigned queue)
{
    struct virtio_blk *blk = device;
    (void)queue;
    uint64_t one = 1;
    /* Only fails when the counter would overflow, and then the I/O thread is already due. */
    ssize_t ignored = write(blk->notify_fd, &one, sizeof(one));
    (void)ignored;
}

static void device_reset(void *device)
{
    (void)device; /* requests in flight are dropped at completion by the generation check */
}

static const struct virtio_device_ops virtio_blk_ops = {
    .device_id = VIRTIO_ID_BLOCK,
    .read_config = read_config,
    .notify = notify,
    .reset = device_reset,
};

/*
 * The largest segment such that a request of seg_max segments stays within
 * the bdev's max_transfer, so requests never need splitting here.
 */
static uint32_t segment_size_max(const struct bdev *bdev, uint32_t seg_max)
{
    uint32_t size = bdev->limits.max_transfer / seg_max;
    size &= ~4095u;
    return size < 4096 ? 4096 : size;
}

int virtio_blk_init(struct virtio_blk *blk, struct bdev *bdev, const struct guest_memory *memory, bool read_only,
                    const char *serial)
{
    memset(blk, 0, sizeof(*blk));
    blk->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (blk->notify_fd < 0)
        return -errno;
    blk->bdev = bdev;
    blk->read_only = read_only || bdev_is_read_only(bdev);
    if (serial) /* 20 bytes, NUL-padded only if shorter: the spec's format */
        memcpy(blk->serial, serial, strnlen(serial, sizeof(blk->serial)));

    uint32_t seg_max = VIRTIO_BLK_QUEUE_SIZE - 2;
    uint32_t block_size = bdev->limits.logical_block_size >= VIRTIO_BLK_SECTOR_SIZE
                              ? bdev->limits.logical_block_size : VIRTIO_BLK_SECTOR_SIZE;
    uint64_t features = VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH |
                        VIRTIO_F_INDIRECT_DESC;
    if (blk->read_only)
        features |= VIRTIO_BLK_F_RO;
    else {
        if (bdev->caps & BDEV_CAP_DISCARD)
            features |= VIRTIO_BLK_F_DISCARD;
        if (bdev->caps & BDEV_CAP_WRITE_ZEROES)
            features |= VIRTIO_BLK_F_WRITE_ZEROES;
    }
    store_le64(blk->config + CONFIG_CAPACITY, bdev->size / VIRTIO_BLK_SECTOR_SIZE);
    store_le32(blk->config + CONFIG_SIZE_MAX, segment_size_max(bdev, seg_max));
    store_le32(blk->config + CONFIG_SEG_MAX, seg_max);
    store_le32(blk->config + CONFIG_BLK_SIZE, block_size);
    store_le16(blk->config + CONFIG_NUM_QUEUES, 1);
    store_le32(blk->config + CONFIG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS);
    store_le32(blk->config + CONFIG_MAX_DISCARD_SEG, 1);
    store_le32(blk->config + CONFIG_DISCARD_ALIGNMENT, block_size / VIRTIO_BLK_SECTOR_SIZE);
    store_le32(blk->config + CONFIG_MAX_WRITE_ZEROES_SECTORS, MAX_DISCARD_SECTORS);
    store_le32(blk->config + CONFIG_MAX_WRITE_ZEROES_SEG, 1);
    blk->config[CONFIG_WRITE_ZEROES_MAY_UNMAP] = (bdev->caps & BDEV_CAP_DISCARD) ? 1 : 0;

    virtio_mmio_init(&blk->transport, &virtio_blk_ops, blk, memory, features, VIRTIO_BLK_CONFIG_SIZE, 1,
                     VIRTIO_BLK_QUEUE_SIZE);
    return 0;
}

void virtio_blk_destroy(struct virtio_blk *blk)
{
    virtio_mmio_destroy(&blk->transport);
    if (blk->notify_fd >= 0)
        close(blk->notify_fd);
    blk->notify_fd = -1;
}

static void notify_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)loop;
    (void)events;
    struct virtio_blk *blk = watcher->data;
    uint64_t count;
    /* EAGAIN only: the counter is reset whatever the outcome, and the queues are scanned anyway. */
    ssize_t ignored = read(blk->notify_fd, &count, sizeof(count));
    (void)ignored;
    virtio_blk_process(blk);
}

void virtio_blk_attach(struct virtio_blk *blk, struct aio_context *ctx)
{
    blk->ctx = ctx;
    ev_io_init(&blk->notify_watcher, notify_ready, blk->notify_fd, EV_READ);
    blk->notify_watcher.data = blk;
    ev_io_start(aio_context_loop(ctx), &blk->notify_watcher);
}

void virtio_blk_detach(struct virtio_blk *blk)
{
    if (blk->ctx)
        ev_io_stop(aio_context_loop(blk->ctx), &blk->notify_watcher);
}

/* Give the chain back with its status byte set. */
static void finish(struct virtio_blk *blk, unsigned queue, uint16_t head, uint64_t generation, uint8_t *status,
                   uint8_t value, uint32_t written)
{
    *status = value;
    struct virtio_mmio *transport = &blk->transport;
    pthread_mutex_lock(&transport->lock);
    /* After a reset the rings belong to a new driver instance: drop the completion. */
    if (generation == transport->generation && transport->queues[queue].ready) {
        virtqueue_push(&transport->queues[queue], head, written);
        virtio_mmio_signal_used(transport, queue);
    }
    pthread_mutex_unlock(&transport->lock);
}

static void request_complete(struct bdev_io *io)
{
    struct blk_request *request = io->opaque;
    struct virtio_blk *blk = request->blk;
    uint8_t value = io->result == 0 ? VIRTIO_BLK_S_OK
                    : io->result == -ENOTSUP ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
    finish(blk, request->queue, request->head, request->generation, request->status, value, request->written);
    blk->in_flight--;
    free(request);
}

/* Copy the first length readable bytes of the chain (the request header, a discard segment). */
static bool gather(const struct virtqueue_buffer *buffers, unsigned readable, uint64_t skip, uint8_t *out,
                   size_t length)
{
    for (unsigned i = 0; i < readable && length; i++) {
        if (skip >= buffers[i].length) {
            skip -= buffers[i].length;
            continue;
        }
        size_t take = buffers[i].length - skip < length ? buffers[i].length - skip : length;
        memcpy(out, buffers[i].host + skip, take);
        out += take;
        length -= take;
        skip = 0;
    }
    return length == 0;
}

static uint64_t total_length(const struct virtqueue_buffer *buffers, unsigned count)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < count; i++)
        total += buffers[i].length;
    return total;
}

/* Describe bytes [skip, skip + length) of buffers as iov (room for count entries). */
static int slice(const struct virtqueue_buffer *buffers, unsigned count, uint64_t skip, uint64_t length,
                 struct iovec *out)
{
    struct iovec whole[VIRTIO_BLK_QUEUE_SIZE];
    for (unsigned i = 0; i < count; i++)
        whole[i] = (struct iovec){buffers[i].host, buffers[i].length};
    return iov_slice(whole, (int)count, skip, length, out);
}

/* Build and submit the bdev request; returns the status to finish with now, or -1 when submitted. */
static int start_io(struct virtio_blk *blk, const struct virtqueue_chain *chain, unsigned queue, uint64_t generation,
                    uint8_t *status, uint32_t type, uint64_t sector)
{
    const struct virtqueue_buffer *buffers = blk->scratch;
    unsigned writable = chain->count - chain->readable;
    uint64_t readable_bytes = total_length(buffers, chain->readable);
    uint64_t writable_bytes = total_length(buffers + chain->readable, writable);
    struct blk_request *request = calloc(1, sizeof(*request) + chain->count * sizeof(struct iovec));
    if (!request)
        return VIRTIO_BLK_S_IOERR;
    *request = (struct blk_request){.blk = blk, .queue = queue, .head = chain->head, .generation = generation,
                                    .status = status, .written = 1};
    struct bdev_io *io = &request->io;
    io->ctx = blk->ctx;
    io->complete = request_complete;
    io->opaque = request;
    io->iov = request->iov;
    io->offset = sector * VIRTIO_BLK_SECTOR_SIZE;
    if (sector > UINT64_MAX / VIRTIO_BLK_SECTOR_SIZE)
        goto ioerr;

    /* Refused here as well as by a read-only bdev: readonly=on is the guest's promise too. */
    if (blk->read_only && type != VIRTIO_BLK_T_IN && type != VIRTIO_BLK_T_FLUSH)
        goto ioerr;
    switch (type) {
    case VIRTIO_BLK_T_IN:
        io->op = BDEV_OP_READ;
        io->length = writable_bytes - 1; /* all but the status byte */
        io->iovcnt = slice(buffers + chain->readable, writable, 0, io->length, request->iov);
        request->written = (uint32_t)writable_bytes;
        break;
    case VIRTIO_BLK_T_OUT:
        io->op = BDEV_OP_WRITE;
        io->length = readable_bytes - REQUEST_HEADER_SIZE;
        io->iovcnt = slice(buffers, chain->readable, REQUEST_HEADER_SIZE, io->length, request->iov);
        break;
    case VIRTIO_BLK_T_FLUSH:
        io->op = BDEV_OP_FLUSH;
        io->offset = 0;
        break;
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
        uint8_t segment[DISCARD_SEGMENT_SIZE];
        /* max_discard_seg and max_write_zeroes_seg are 1: exactly one segment. */
        if (readable_bytes != REQUEST_HEADER_SIZE + DISCARD_SEGMENT_SIZE ||
            !gather(buffers, chain->readable, REQUEST_HEADER_SIZE, segment, sizeof(segment)))
            goto ioerr;
        uint64_t first = load_le64(segment);
        uint32_t sectors = load_le32(segment + 8);
        uint32_t flags = load_le32(segment + 12);
        if (first > UINT64_MAX / VIRTIO_BLK_SECTOR_SIZE)
            goto ioerr;
        io->offset = first * VIRTIO_BLK_SECTOR_SIZE;
        io->length = (uint64_t)sectors * VIRTIO_BLK_SECTOR_SIZE;
        if (type == VIRTIO_BLK_T_DISCARD) {
            io->op = BDEV_OP_DISCARD;
            if (flags & DISCARD_FLAG_UNMAP) /* reserved for discard */
                goto unsupported;
        } else {
            io->op = BDEV_OP_WRITE_ZEROES;
            if (flags & DISCARD_FLAG_UNMAP)
                io->flags = BDEV_MAY_UNMAP;
        }
        break;
    }
    default:
        goto unsupported;
    }
    if ((io->op == BDEV_OP_READ || io->op == BDEV_OP_WRITE) && io->length % VIRTIO_BLK_SECTOR_SIZE)
        goto ioerr;
    blk->in_flight++;
    bdev_submit(blk->bdev, io);
    return -1;
unsupported:
    free(request);
    return VIRTIO_BLK_S_UNSUPP;
ioerr:
    free(request);
    return VIRTIO_BLK_S_IOERR;
}

/* Parse one chain and start it.  -EINVAL when the chain has no room for a header or a status. */
static int start_request(struct virtio_blk *blk, const struct virtqueue_chain *chain, unsigned queue,
                         uint64_t generation)
{
    const struct virtqueue_buffer *buffers = blk->scratch;
    uint8_t header[REQUEST_HEADER_SIZE];
    unsigned writable = chain->count - chain->readable;
    if (!writable || !buffers[chain->count - 1].length ||
        !gather(buffers, chain->readable, 0, header, sizeof(header)))
        return -EINVAL;
    const struct virtqueue_buffer *last = &buffers[chain->count - 1];
    uint8_t *status = last->host + last->length - 1;
    uint32_t type = load_le32(header);
    uint64_t sector = load_le64(header + 8);

    if (type == VIRTIO_BLK_T_GET_ID) {
        uint64_t room = total_length(buffers + chain->readable, writable) - 1;
        uint64_t length = room < VIRTIO_BLK_SERIAL_SIZE ? room : VIRTIO_BLK_SERIAL_SIZE;
        struct iovec out[VIRTIO_BLK_QUEUE_SIZE];
        int count = slice(buffers + chain->readable, writable, 0, length, out);
        iov_copy_in(out, count, 0, blk->serial, length);
        finish(blk, queue, chain->head, generation, status, VIRTIO_BLK_S_OK, (uint32_t)length + 1);
        return 0;
    }
    int immediate = start_io(blk, chain, queue, generation, status, type, sector);
    if (immediate >= 0)
        finish(blk, queue, chain->head, generation, status, (uint8_t)immediate, 1);
    return 0;
}

void virtio_blk_process(struct virtio_blk *blk)
{
    struct virtio_mmio *transport = &blk->transport;
    for (unsigned queue = 0; queue < transport->queue_count; queue++) {
        for (;;) {
            struct virtqueue_chain chain;
            pthread_mutex_lock(&transport->lock);
            struct virtqueue *virtqueue = &transport->queues[queue];
            if (!virtio_mmio_running(transport) || !virtqueue->ready) {
                pthread_mutex_unlock(&transport->lock);
                break;
            }
            int ret = virtqueue_pop(virtqueue, blk->scratch, VIRTIO_BLK_QUEUE_SIZE, &chain);
            uint64_t generation = transport->generation;
            if (ret < 0)
                virtio_mmio_set_needs_reset(transport);
            pthread_mutex_unlock(&transport->lock);
            if (ret <= 0)
                break;
            if (start_request(blk, &chain, queue, generation) < 0) {
                pthread_mutex_lock(&transport->lock);
                virtio_mmio_set_needs_reset(transport);
                pthread_mutex_unlock(&transport->lock);
                break;
            }
        }
    }
}
