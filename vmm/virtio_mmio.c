#include "vmm/virtio_mmio.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/byte_order.h"

void virtio_mmio_init(struct virtio_mmio *transport, const struct virtio_device_ops *ops, void *device,
                      const struct guest_memory *memory, uint64_t device_features, uint32_t config_size,
                      unsigned queue_count, uint16_t queue_max_size)
{
    memset(transport, 0, sizeof(*transport));
    pthread_mutex_init(&transport->lock, NULL);
    transport->ops = ops;
    transport->device = device;
    transport->memory = memory;
    transport->device_features = device_features | VIRTIO_F_VERSION_1;
    transport->config_size = config_size;
    transport->queue_count = queue_count < VIRTIO_MMIO_MAX_QUEUES ? queue_count : VIRTIO_MMIO_MAX_QUEUES;
    transport->queue_max_size = queue_max_size;
}

void virtio_mmio_destroy(struct virtio_mmio *transport)
{
    pthread_mutex_destroy(&transport->lock);
}

bool virtio_mmio_running(const struct virtio_mmio *transport)
{
    return (transport->status & VIRTIO_STATUS_DRIVER_OK) && !(transport->status & VIRTIO_STATUS_NEEDS_RESET);
}

void virtio_mmio_set_needs_reset(struct virtio_mmio *transport)
{
    if (transport->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    transport->status |= VIRTIO_STATUS_NEEDS_RESET;
    /* The driver learns of it through a configuration-change interrupt (virtio 1.1, 2.1.2). */
    if (transport->status & VIRTIO_STATUS_DRIVER_OK) {
        transport->interrupt_status |= VIRTIO_INTERRUPT_CONFIG_CHANGE;
        if (transport->raise_irq)
            transport->raise_irq(transport->irq_opaque);
    }
}

void virtio_mmio_signal_used(struct virtio_mmio *transport, unsigned queue)
{
    if (!virtqueue_wants_interrupt(&transport->queues[queue]))
        return;
    transport->interrupt_status |= VIRTIO_INTERRUPT_USED_BUFFER;
    if (transport->raise_irq)
        transport->raise_irq(transport->irq_opaque);
}

static void reset(struct virtio_mmio *transport)
{
    transport->device_features_select = 0;
    transport->driver_features_select = 0;
    transport->driver_features = 0;
    transport->queue_select = 0;
    transport->status = 0;
    transport->interrupt_status = 0;
    transport->generation++;
    for (unsigned i = 0; i < transport->queue_count; i++)
        virtqueue_reset(&transport->queues[i]);
    if (transport->ops->reset)
        transport->ops->reset(transport->device);
}

static struct virtqueue *selected_queue(struct virtio_mmio *transport)
{
    return transport->queue_select < transport->queue_count ? &transport->queues[transport->queue_select] : NULL;
}

static uint32_t read_register(struct virtio_mmio *transport, uint64_t offset)
{
    struct virtqueue *queue = selected_queue(transport);
    switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION_REG: return VIRTIO_MMIO_VERSION;
    case VIRTIO_MMIO_DEVICE_ID: return transport->ops->device_id;
    case VIRTIO_MMIO_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        if (transport->device_features_select > 1)
            return 0;
        return (uint32_t)(transport->device_features >> (32 * transport->device_features_select));
    case VIRTIO_MMIO_QUEUE_NUM_MAX: return queue ? transport->queue_max_size : 0;
    case VIRTIO_MMIO_QUEUE_READY: return queue ? queue->ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS: return transport->interrupt_status;
    case VIRTIO_MMIO_STATUS: return transport->status;
    case VIRTIO_MMIO_CONFIG_GENERATION: return 0; /* the configuration never changes under the driver */
    default: return 0;
    }
}

static void set_address_half(uint64_t *address, uint32_t value, bool high)
{
    if (high)
        *address = (*address & 0xffffffffull) | (uint64_t)value << 32;
    else
        *address = (*address & ~0xffffffffull) | value;
}

static void write_status(struct virtio_mmio *transport, uint32_t value)
{
    if (value == 0) {
        reset(transport);
        return;
    }
    if ((value & VIRTIO_STATUS_FEATURES_OK) && !(transport->status & VIRTIO_STATUS_FEATURES_OK)) {
        /* Refuse what we did not offer, and legacy drivers: only modern virtio is spoken here. */
        bool acceptable = !(transport->driver_features & ~transport->device_features) &&
                          (transport->driver_features & VIRTIO_F_VERSION_1);
        if (!acceptable)
            value &= ~VIRTIO_STATUS_FEATURES_OK;
    }
    transport->status = value | (transport->status & VIRTIO_STATUS_NEEDS_RESET);
}

static void write_queue_ready(struct virtio_mmio *transport, struct virtqueue *queue, uint32_t value)
{
    if (!value) {
        queue->ready = false;
        return;
    }
    if (virtqueue_start(queue, transport->memory) < 0) {
        virtio_mmio_set_needs_reset(transport);
        return;
    }
    queue->ready = true;
}

/* Returns the queue to notify, or -1. */
static int write_register(struct virtio_mmio *transport, uint64_t offset, uint32_t value)
{
    struct virtqueue *queue = selected_queue(transport);
    /* Queue layout may only change while the queue is not live. */
    bool queue_writable = queue && !queue->ready;
    switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL: transport->device_features_select = value; break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL: transport->driver_features_select = value; break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (transport->driver_features_select <= 1 && !(transport->status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned shift = 32 * transport->driver_features_select;
            transport->driver_features = (transport->driver_features & ~(0xffffffffull << shift)) |
                                         (uint64_t)value << shift;
        }
        break;
    case VIRTIO_MMIO_QUEUE_SEL: transport->queue_select = value; break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (queue_writable && value <= transport->queue_max_size)
            queue->size = (uint16_t)value;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (queue)
            write_queue_ready(transport, queue, value);
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (value < transport->queue_count)
            return (int)value;
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK: transport->interrupt_status &= ~value; break;
    case VIRTIO_MMIO_STATUS: write_status(transport, value); break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (queue_writable)
            set_address_half(&queue->desc_address, value, offset == VIRTIO_MMIO_QUEUE_DESC_HIGH);
        break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        if (queue_writable)
            set_address_half(&queue->avail_address, value, offset == VIRTIO_MMIO_QUEUE_DRIVER_HIGH);
        break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        if (queue_writable)
            set_address_half(&queue->used_address, value, offset == VIRTIO_MMIO_QUEUE_DEVICE_HIGH);
        break;
    default: break; /* read-only registers */
    }
    return -1;
}

void virtio_mmio_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    struct virtio_mmio *transport = opaque;
    pthread_mutex_lock(&transport->lock);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        uint64_t config_offset = offset - VIRTIO_MMIO_CONFIG;
        if (config_offset < transport->config_size && length <= transport->config_size - config_offset)
            transport->ops->read_config(transport->device, (uint32_t)config_offset, data, length);
    } else if (length == 4 && !(offset & 3)) { /* the spec allows only aligned 32-bit register access */
        store_le32(data, read_register(transport, offset));
    }
    pthread_mutex_unlock(&transport->lock);
}

void virtio_mmio_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct virtio_mmio *transport = opaque;
    if (offset >= VIRTIO_MMIO_CONFIG || length != 4 || (offset & 3))
        return; /* virtio-blk's configuration is read-only */
    pthread_mutex_lock(&transport->lock);
    int queue = write_register(transport, offset, load_le32(data));
    pthread_mutex_unlock(&transport->lock);
    if (queue >= 0 && transport->ops->notify)
        transport->ops->notify(transport->device, (unsigned)queue);
}

int virtio_mmio_cmdline(char *buffer, size_t size, uint64_t base, uint64_t length, unsigned irq)
{
    int written = snprintf(buffer, size, "virtio_mmio.device=%" PRIu64 "@0x%" PRIx64 ":%u", length, base, irq);
    return written < 0 || (size_t)written >= size ? -1 : written;
}
