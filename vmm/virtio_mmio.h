/*
 * virtio_mmio: the virtio-mmio transport, version 2 (virtio 1.x modern),
 * as Linux's virtio_mmio driver finds it through
 * `virtio_mmio.device=SIZE@ADDR:IRQ` on the kernel command line.
 *
 * Owns the register file (feature negotiation, device status, queue
 * set-up, interrupt status and acknowledgement, configuration space) and
 * the virtqueues; a device (virtio_blk) supplies its id, features,
 * configuration space and what to do when a queue is notified.  Registers
 * are accessed on vCPU threads, queues are processed on the I/O thread:
 * both hold `lock`.  A device reset bumps `generation`, so completions of
 * requests started before it are dropped instead of written to rings the
 * guest no longer owns.
 */
#ifndef LUNA_VMM_VIRTIO_MMIO_H
#define LUNA_VMM_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtqueue.h"

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VERSION 2u
#define VIRTIO_MMIO_VENDOR 0x414e554cu /* "LUNA" */
#define VIRTIO_MMIO_MAX_QUEUES 8u

/* Register offsets. */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION_REG 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u

#define VIRTIO_INTERRUPT_USED_BUFFER 1u
#define VIRTIO_INTERRUPT_CONFIG_CHANGE 2u

#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_VERSION_1 (1ull << 32)

struct virtio_mmio;

struct virtio_device_ops {
    uint32_t device_id;
    /* Read length bytes of configuration space at offset (bounds already checked). */
    void (*read_config)(void *device, uint32_t offset, uint8_t *data, unsigned length);
    /* A queue was notified through the register (no ioeventfd); lock not held. */
    void (*notify)(void *device, unsigned queue);
    /* The driver wrote 0 to Status; lock held. */
    void (*reset)(void *device);
};

struct virtio_mmio {
    pthread_mutex_t lock;
    const struct virtio_device_ops *ops;
    void *device;
    const struct guest_memory *memory;
    uint64_t device_features;
    uint32_t config_size;
    unsigned queue_count;
    uint16_t queue_max_size;
    /* Raise the device's interrupt line (an edge); lock held. */
    void (*raise_irq)(void *opaque);
    void *irq_opaque;

    uint32_t device_features_select, driver_features_select;
    uint64_t driver_features;
    uint32_t queue_select;
    uint32_t status;
    uint32_t interrupt_status;
    uint64_t generation;
    struct virtqueue queues[VIRTIO_MMIO_MAX_QUEUES];
};

void virtio_mmio_init(struct virtio_mmio *transport, const struct virtio_device_ops *ops, void *device,
                      const struct guest_memory *memory, uint64_t device_features, uint32_t config_size,
                      unsigned queue_count, uint16_t queue_max_size);
void virtio_mmio_destroy(struct virtio_mmio *transport);

/* Register access from a vCPU thread (io_bus callbacks). */
void virtio_mmio_read(void *transport, uint64_t offset, uint8_t *data, unsigned length);
void virtio_mmio_write(void *transport, uint64_t offset, const uint8_t *data, unsigned length);

/* Lock held: whether the driver finished set-up (DRIVER_OK without NEEDS_RESET). */
bool virtio_mmio_running(const struct virtio_mmio *transport);

/* Lock held: the guest's structures are malformed; stop using the device until it resets. */
void virtio_mmio_set_needs_reset(struct virtio_mmio *transport);

/* Lock held: used buffers were added to queue; interrupt unless the guest suppressed it. */
void virtio_mmio_signal_used(struct virtio_mmio *transport, unsigned queue);

/* The kernel command-line fragment that announces the device ("virtio_mmio.device=512@0x...:5"). */
int virtio_mmio_cmdline(char *buffer, size_t size, uint64_t base, uint64_t length, unsigned irq);

#endif
