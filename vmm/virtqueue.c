#include "vmm/virtqueue.h"

#include <errno.h>

#include "common/byte_order.h"

#define AVAIL_RING_OFFSET 4u
#define USED_RING_OFFSET 4u
#define USED_ELEMENT_SIZE 8u

int virtqueue_start(struct virtqueue *queue, const struct guest_memory *memory)
{
    if (queue->size == 0 || queue->size > VIRTQUEUE_MAX_SIZE || (queue->size & (queue->size - 1)))
        return -EINVAL;
    uint64_t size = queue->size;
    /* The alignments virtio 1.x requires; they also keep the index accesses naturally aligned. */
    if ((queue->desc_address & 15) || (queue->avail_address & 1) || (queue->used_address & 3))
        return -EINVAL;
    /* Each ring with its event-index word, whether or not the feature is used. */
    queue->desc = guest_memory_translate(memory, queue->desc_address, size * VIRTQ_DESC_SIZE);
    queue->avail = guest_memory_translate(memory, queue->avail_address, AVAIL_RING_OFFSET + 2 * size + 2);
    queue->used = guest_memory_translate(memory, queue->used_address,
                                         USED_RING_OFFSET + USED_ELEMENT_SIZE * size + 2);
    if (!queue->desc || !queue->avail || !queue->used)
        return -EFAULT;
    queue->memory = memory;
    queue->last_avail_index = 0;
    queue->used_index = 0;
    return 0;
}

void virtqueue_reset(struct virtqueue *queue)
{
    *queue = (struct virtqueue){0};
}

static uint16_t load_index(const uint8_t *p)
{
    return le16toh(__atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE));
}

struct descriptor {
    uint64_t address;
    uint32_t length;
    uint16_t flags;
    uint16_t next;
};

static struct descriptor read_descriptor(const uint8_t *table, uint32_t index)
{
    const uint8_t *p = table + (uint64_t)index * VIRTQ_DESC_SIZE;
    return (struct descriptor){load_le64(p), load_le32(p + 8), load_le16(p + 12), load_le16(p + 14)};
}

static int add_buffer(struct virtqueue *queue, const struct descriptor *descriptor, struct virtqueue_buffer *buffers,
                      unsigned capacity, struct virtqueue_chain *chain)
{
    bool writable = descriptor->flags & VIRTQ_DESC_F_WRITE;
    if (!writable && chain->count > chain->readable) /* readable after writable: the spec forbids it */
        return -EINVAL;
    if (chain->count == capacity)
        return -E2BIG;
    uint8_t *host = guest_memory_translate(queue->memory, descriptor->address, descriptor->length);
    if (!host)
        return -EFAULT;
    buffers[chain->count++] = (struct virtqueue_buffer){host, descriptor->length, writable};
    if (!writable)
        chain->readable++;
    return 0;
}

/* Walk a chain in table (entries long); the walk may not be longer than the table. */
static int walk(struct virtqueue *queue, const uint8_t *table, uint32_t entries, uint32_t first, bool indirect,
                struct virtqueue_buffer *buffers, unsigned capacity, struct virtqueue_chain *chain)
{
    uint32_t index = first;
    for (uint32_t steps = 0;; steps++) {
        if (index >= entries)
            return -EINVAL;
        if (steps >= entries) /* more links than descriptors: a loop */
            return -ELOOP;
        struct descriptor descriptor = read_descriptor(table, index);
        if (descriptor.flags & VIRTQ_DESC_F_INDIRECT) {
            if (indirect || (descriptor.flags & VIRTQ_DESC_F_NEXT)) /* nested, or chained after a table */
                return -EINVAL;
            if (descriptor.length == 0 || descriptor.length % VIRTQ_DESC_SIZE ||
                descriptor.length / VIRTQ_DESC_SIZE > VIRTQUEUE_MAX_SIZE)
                return -EINVAL;
            const uint8_t *inner = guest_memory_translate(queue->memory, descriptor.address, descriptor.length);
            if (!inner)
                return -EFAULT;
            return walk(queue, inner, descriptor.length / VIRTQ_DESC_SIZE, 0, true, buffers, capacity, chain);
        }
        int ret = add_buffer(queue, &descriptor, buffers, capacity, chain);
        if (ret < 0)
            return ret;
        if (!(descriptor.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        index = descriptor.next;
    }
}

int virtqueue_pop(struct virtqueue *queue, struct virtqueue_buffer *buffers, unsigned capacity,
                  struct virtqueue_chain *chain)
{
    uint16_t available = load_index(queue->avail + 2);
    uint16_t pending = (uint16_t)(available - queue->last_avail_index);
    if (pending == 0)
        return 0;
    if (pending > queue->size) /* the guest claims more buffers than the ring holds */
        return -EINVAL;
    uint16_t slot = queue->last_avail_index % queue->size;
    uint16_t head = load_le16(queue->avail + AVAIL_RING_OFFSET + 2u * slot);
    *chain = (struct virtqueue_chain){.head = head};
    int ret = walk(queue, queue->desc, queue->size, head, false, buffers, capacity, chain);
    if (ret < 0)
        return ret;
    queue->last_avail_index++;
    return 1;
}

void virtqueue_push(struct virtqueue *queue, uint16_t head, uint32_t written)
{
    uint8_t *element = queue->used + USED_RING_OFFSET + USED_ELEMENT_SIZE * (queue->used_index % queue->size);
    store_le32(element, head);
    store_le32(element + 4, written);
    queue->used_index++;
    /* The element must be visible before the index that publishes it. */
    __atomic_store_n((uint16_t *)(queue->used + 2), htole16(queue->used_index), __ATOMIC_RELEASE);
}

bool virtqueue_wants_interrupt(const struct virtqueue *queue)
{
    /* Full barrier: our used-index store must be ordered before reading the guest's flags. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return !(load_index(queue->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}
