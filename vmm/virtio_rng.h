/*
 * virtio_rng: a virtio entropy device (id 4) over virtio-mmio, as QEMU's
 * virtio-rng-device: one queue whose device-writable buffers lunavm fills
 * from the host's getrandom(2).
 *
 * The work is a memory copy of at most a queue's worth of small buffers,
 * so it runs on the vCPU thread that wrote QueueNotify (no ioeventfd, no
 * I/O thread); a guest asking for more than the host's entropy pool gives
 * at once gets what getrandom returned without blocking.
 */
#ifndef LUNA_VMM_VIRTIO_RNG_H
#define LUNA_VMM_VIRTIO_RNG_H

#include "vmm/virtio_mmio.h"

#define VIRTIO_ID_ENTROPY 4u
#define VIRTIO_RNG_QUEUE_SIZE 64u
#define VIRTIO_RNG_MAX_CHAIN 16u /* buffers per request: Linux's driver sends one */

struct virtio_rng {
    struct virtio_mmio transport;
    /* Buffers of the chain being filled (under transport.lock). */
    struct virtqueue_buffer scratch[VIRTIO_RNG_MAX_CHAIN];
    /* The random source: getrandom by default; the unit tests substitute theirs.  Bytes or -errno. */
    long (*fill)(void *buffer, size_t length);
};

void virtio_rng_init(struct virtio_rng *rng, const struct guest_memory *memory);
void virtio_rng_destroy(struct virtio_rng *rng);

/* Fill every available buffer of the queue (what QueueNotify does; exposed for the tests). */
void virtio_rng_process(struct virtio_rng *rng);

#endif
