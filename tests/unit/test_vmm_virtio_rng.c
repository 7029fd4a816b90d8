/*
 * virtio-rng without KVM: a driver's set-up through the virtio-mmio
 * registers, entropy requests in a fake guest memory, filled by
 * QueueNotify from a substituted random source.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/virtio_rng.h"

#define RAM_BASE 0x100000ull
#define RAM_SIZE (1u << 20)
#define QUEUE_SIZE 8u
#define DESC_AT (RAM_BASE + 0x1000)
#define AVAIL_AT (RAM_BASE + 0x2000)
#define USED_AT (RAM_BASE + 0x3000)
#define BUFFER_AT (RAM_BASE + 0x10000)

static uint8_t *ram;
static struct guest_memory memory;
static struct virtio_rng rng;
static unsigned interrupts;
static uint16_t avail_index;
static long fill_limit; /* bytes the fake source gives per call; <0: that error */

static uint8_t *at(uint64_t address)
{
    return ram + (address - RAM_BASE);
}

static long fake_fill(void *buffer, size_t length)
{
    if (fill_limit < 0)
        return fill_limit;
    size_t given = length < (size_t)fill_limit ? length : (size_t)fill_limit;
    memset(buffer, 0x5a, given);
    return (long)given;
}

static void count_interrupt(void *opaque)
{
    (void)opaque;
    interrupts++;
}

static uint32_t reg_read(uint64_t offset)
{
    uint8_t data[4];
    virtio_mmio_read(&rng.transport, offset, data, 4);
    return load_le32(data);
}

static void reg_write(uint64_t offset, uint32_t value)
{
    uint8_t data[4];
    store_le32(data, value);
    virtio_mmio_write(&rng.transport, offset, data, 4);
}

static void setup(void)
{
    ram = aligned_alloc(4096, RAM_SIZE);
    cr_assert_not_null(ram);
    memset(ram, 0, RAM_SIZE);
    memset(&memory, 0, sizeof(memory));
    guest_memory_add_region(&memory, RAM_BASE, ram, RAM_SIZE);
    virtio_rng_init(&rng, &memory);
    rng.fill = fake_fill;
    rng.transport.raise_irq = count_interrupt;
    interrupts = 0;
    avail_index = 0;
    fill_limit = 1 << 20;

    /* What Linux's virtio_mmio and virtio_rng do at probe. */
    cr_assert_eq(reg_read(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_ENTROPY);
    reg_write(VIRTIO_MMIO_STATUS, 0);
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(VIRTIO_F_VERSION_1 >> 32));
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    cr_assert(reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
    reg_write(VIRTIO_MMIO_QUEUE_SEL, 0);
    cr_assert_eq(reg_read(VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTIO_RNG_QUEUE_SIZE);
    reg_write(VIRTIO_MMIO_QUEUE_SEL, 1);
    cr_assert_eq(reg_read(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "one queue only");
    reg_write(VIRTIO_MMIO_QUEUE_SEL, 0);
    reg_write(VIRTIO_MMIO_QUEUE_NUM, QUEUE_SIZE);
    reg_write(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)DESC_AT);
    reg_write(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)AVAIL_AT);
    reg_write(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)USED_AT);
    reg_write(VIRTIO_MMIO_QUEUE_READY, 1);
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                                      VIRTIO_STATUS_DRIVER_OK);
}

static void teardown(void)
{
    virtio_rng_destroy(&rng);
    free(ram);
}

/* One device-writable buffer of length at BUFFER_AT + slot * 0x1000, made available and notified. */
static void request(unsigned slot, uint32_t length, uint16_t flags)
{
    uint8_t *desc = at(DESC_AT + slot * VIRTQ_DESC_SIZE);
    store_le64(desc, BUFFER_AT + slot * 0x1000);
    store_le32(desc + 8, length);
    store_le16(desc + 12, flags);
    store_le16(desc + 14, 0);
    store_le16(at(AVAIL_AT + 4 + 2 * (avail_index % QUEUE_SIZE)), (uint16_t)slot);
    avail_index++;
    store_le16(at(AVAIL_AT + 2), avail_index);
    reg_write(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static uint32_t used_length(unsigned entry)
{
    return load_le32(at(USED_AT + 4 + 8 * entry + 4));
}

TestSuite(vmm_virtio_rng, .init = setup, .fini = teardown);

Test(vmm_virtio_rng, fills_the_guest_buffer_and_interrupts)
{
    request(0, 64, VIRTQ_DESC_F_WRITE);
    cr_assert_eq(load_le16(at(USED_AT + 2)), 1, "one used entry");
    cr_assert_eq(load_le32(at(USED_AT + 4)), 0, "for head 0");
    cr_assert_eq(used_length(0), 64);
    for (unsigned i = 0; i < 64; i++)
        cr_assert_eq(at(BUFFER_AT)[i], 0x5a);
    cr_assert_eq(at(BUFFER_AT)[64], 0, "nothing past the buffer");
    cr_assert_eq(interrupts, 1);
    cr_assert(reg_read(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INTERRUPT_USED_BUFFER);
}

Test(vmm_virtio_rng, short_and_failed_fills_report_what_was_written)
{
    fill_limit = 10;
    request(0, 64, VIRTQ_DESC_F_WRITE);
    cr_assert_eq(used_length(0), 10, "a short getrandom is a short answer");
    fill_limit = -EAGAIN;
    request(1, 64, VIRTQ_DESC_F_WRITE);
    cr_assert_eq(used_length(1), 0, "an unseeded pool: an empty answer, the driver asks again");
    cr_assert_eq(load_le16(at(USED_AT + 2)), 2);
}

Test(vmm_virtio_rng, read_only_buffers_get_nothing)
{
    request(0, 64, 0);
    cr_assert_eq(used_length(0), 0);
    cr_assert_eq(at(BUFFER_AT)[0], 0, "the device writes only device-writable buffers");
}

Test(vmm_virtio_rng, malformed_chain_needs_reset)
{
    uint8_t *desc = at(DESC_AT);
    store_le64(desc, 0xdead0000ull); /* outside guest RAM */
    store_le32(desc + 8, 64);
    store_le16(desc + 12, VIRTQ_DESC_F_WRITE);
    store_le16(at(AVAIL_AT + 4), 0);
    store_le16(at(AVAIL_AT + 2), 1);
    reg_write(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    cr_assert(reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
    cr_assert_eq(load_le16(at(USED_AT + 2)), 0);
}
