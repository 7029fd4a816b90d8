/*
 * virtio_blk: a virtio block device over a luna bdev.
 *
 * Requests (IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES) are taken from
 * the queues on the I/O thread, turned into bdev_io submissions whose
 * iovecs point straight into guest RAM (no copy), and completed on the same
 * thread's aio context: status byte, used ring, interrupt.  The guest's
 * notifications arrive on an eventfd, written by KVM itself when an
 * ioeventfd is registered on QueueNotify (no exit to user space) or by the
 * vCPU thread otherwise.  Only block/ APIs reach the disk.
 */
#ifndef LUNA_VMM_VIRTIO_BLK_H
#define LUNA_VMM_VIRTIO_BLK_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio_mmio.h"

#define VIRTIO_ID_BLOCK 2u
#define VIRTIO_BLK_QUEUE_SIZE 256u
#define VIRTIO_BLK_SERIAL_SIZE 20u
#define VIRTIO_BLK_CONFIG_SIZE 60u
#define VIRTIO_BLK_SECTOR_SIZE 512u

#define VIRTIO_BLK_F_SIZE_MAX (1ull << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)
#define VIRTIO_BLK_F_DISCARD (1ull << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ull << 14)

#define VIRTIO_BLK_T_IN 0u
#define VIRTIO_BLK_T_OUT 1u
#define VIRTIO_BLK_T_FLUSH 4u
#define VIRTIO_BLK_T_GET_ID 8u
#define VIRTIO_BLK_T_DISCARD 11u
#define VIRTIO_BLK_T_WRITE_ZEROES 13u

#define VIRTIO_BLK_S_OK 0u
#define VIRTIO_BLK_S_IOERR 1u
#define VIRTIO_BLK_S_UNSUPP 2u

struct bdev;
struct aio_context;

struct virtio_blk {
    struct virtio_mmio transport;
    struct bdev *bdev;
    bool read_only;
    char serial[VIRTIO_BLK_SERIAL_SIZE];
    uint8_t config[VIRTIO_BLK_CONFIG_SIZE];
    int notify_fd;            /* eventfd: a queue was notified */
    struct aio_context *ctx;  /* the I/O thread's; NULL until attached */
    ev_io notify_watcher;
    unsigned in_flight;
    /* Chain buffers of the request being parsed (I/O thread only). */
    struct virtqueue_buffer scratch[VIRTIO_BLK_QUEUE_SIZE];
};

/*
 * Set up the device over bdev (borrowed) for memory; serial may be NULL.
 * read_only also applies when the bdev itself is.  0 or -errno (eventfd).
 */
int virtio_blk_init(struct virtio_blk *blk, struct bdev *bdev, const struct guest_memory *memory, bool read_only,
                    const char *serial);
void virtio_blk_destroy(struct virtio_blk *blk);

/* On the I/O thread: start watching notifications; completions run on ctx. */
void virtio_blk_attach(struct virtio_blk *blk, struct aio_context *ctx);
/* On the I/O thread: stop taking requests (those in flight still complete). */
void virtio_blk_detach(struct virtio_blk *blk);

/* Take and start every available request of every queue (I/O thread). */
void virtio_blk_process(struct virtio_blk *blk);

#endif
