/*
 * virtqueue: the device side of a virtio 1.x split virtqueue, over guest
 * memory the guest controls and may corrupt.
 *
 * virtqueue_pop takes the next available descriptor chain (following
 * NEXT links and one level of INDIRECT table) and returns it as host
 * buffers; every address goes through guest_memory_translate and every
 * index is bounds-checked, and a chain that loops, nests indirect tables,
 * points outside RAM or puts a readable buffer after a writable one is
 * reported as an error (the transport then flags DEVICE_NEEDS_RESET), never
 * followed.  virtqueue_push returns a chain to the used ring.  Ring indexes
 * are read with acquire and published with release ordering, since the
 * guest's vCPUs run concurrently with the thread doing this.
 */
#ifndef LUNA_VMM_VIRTQUEUE_H
#define LUNA_VMM_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/guest_memory.h"

#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_DESC_SIZE 16u
#define VIRTQUEUE_MAX_SIZE 32768u

struct virtqueue {
    /* Set by the driver through the transport. */
    uint16_t size;
    uint64_t desc_address, avail_address, used_address;
    bool ready;
    /* Device state. */
    const struct guest_memory *memory;
    uint8_t *desc, *avail, *used; /* host views, valid once virtqueue_start succeeded */
    uint16_t last_avail_index;
    uint16_t used_index;
};

struct virtqueue_buffer {
    uint8_t *host;
    uint32_t length;
    bool writable;
};

struct virtqueue_chain {
    uint16_t head;       /* what goes back in the used ring */
    unsigned count;      /* buffers filled */
    unsigned readable;   /* the first `readable` buffers are device-readable, the rest writable */
};

/* Translate the rings' addresses; -EINVAL for a bad size, -EFAULT if a ring lies outside RAM. */
int virtqueue_start(struct virtqueue *queue, const struct guest_memory *memory);
void virtqueue_reset(struct virtqueue *queue);

/*
 * Take the next available chain into buffers (capacity entries).  Returns
 * 1 with *chain filled, 0 when the ring is empty, or -errno when the
 * guest's structures are malformed (-ELOOP, -EFAULT, -EINVAL, -E2BIG when
 * the chain has more than capacity buffers).
 */
int virtqueue_pop(struct virtqueue *queue, struct virtqueue_buffer *buffers, unsigned capacity,
                  struct virtqueue_chain *chain);

/* Return the chain starting at head, written bytes into its writable buffers. */
void virtqueue_push(struct virtqueue *queue, uint16_t head, uint32_t written);

/* Whether the guest asked to be interrupted for used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT clear). */
bool virtqueue_wants_interrupt(const struct virtqueue *queue);

#endif
