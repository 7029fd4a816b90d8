#include "vmm/virtio_rng.h"

#include <errno.h>
#include <sys/random.h>

static long host_random(void *buffer, size_t length)
{
    /* GRND_NONBLOCK: a vCPU must not stall on an unseeded host pool; a short fill is fine. */
    ssize_t got = getrandom(buffer, length, GRND_NONBLOCK);
    return got < 0 ? -errno : (long)got;
}

static void read_config(void *device, uint32_t offset, uint8_t *data, unsigned length)
{
    (void)device;
    (void)offset;
    (void)data;
    (void)length; /* no configuration space: the transport's bounds check leaves nothing to read */
}

static void notify(void *device, unsigned queue)
{
    (void)queue;
    virtio_rng_process(device);
}

static void device_reset(void *device)
{
    (void)device; /* nothing in flight: every request completes inside the notify */
}

static const struct virtio_device_ops virtio_rng_ops = {
    .device_id = VIRTIO_ID_ENTROPY,
    .read_config = read_config,
    .notify = notify,
    .reset = device_reset,
};

void virtio_rng_init(struct virtio_rng *rng, const struct guest_memory *memory)
{
    rng->fill = host_random;
    virtio_mmio_init(&rng->transport, &virtio_rng_ops, rng, memory, VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC, 0,
                     1, VIRTIO_RNG_QUEUE_SIZE);
}

void virtio_rng_destroy(struct virtio_rng *rng)
{
    virtio_mmio_destroy(&rng->transport);
}

/* Fill the chain's writable buffers; the bytes written (what the used ring reports). */
static uint32_t fill_chain(struct virtio_rng *rng, const struct virtqueue_chain *chain)
{
    uint32_t written = 0;
    for (unsigned i = chain->readable; i < chain->count; i++) {
        long got = rng->fill(rng->scratch[i].host, rng->scratch[i].length);
        if (got <= 0)
            break; /* the guest asks again; an empty answer is valid virtio-rng */
        written += (uint32_t)got;
        if ((uint32_t)got < rng->scratch[i].length)
            break;
    }
    return written;
}

void virtio_rng_process(struct virtio_rng *rng)
{
    struct virtio_mmio *transport = &rng->transport;
    pthread_mutex_lock(&transport->lock);
    struct virtqueue *queue = &transport->queues[0];
    bool used = false;
    while (virtio_mmio_running(transport) && queue->ready) {
        struct virtqueue_chain chain;
        int ret = virtqueue_pop(queue, rng->scratch, VIRTIO_RNG_MAX_CHAIN, &chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            virtio_mmio_set_needs_reset(transport);
            break;
        }
        virtqueue_push(queue, chain.head, fill_chain(rng, &chain));
        used = true;
    }
    if (used)
        virtio_mmio_signal_used(transport, 0);
    pthread_mutex_unlock(&transport->lock);
}
