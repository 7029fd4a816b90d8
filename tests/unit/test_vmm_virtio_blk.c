/*
 * virtio-blk end to end without KVM: a driver's register writes through the
 * virtio-mmio transport, requests in a fake guest memory, a raw file bdev
 * behind it, completions on a real aio context.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/bdev.h"
#include "block/threadpool.h"
#include "common/byte_order.h"
#include "vmm/io_thread.h"
#include "vmm/virtio_blk.h"

#define RAM_BASE 0x100000ull
#define RAM_SIZE (1u << 20)
#define QUEUE_SIZE 16u
#define DESC_AT (RAM_BASE + 0x1000)
#define AVAIL_AT (RAM_BASE + 0x2000)
#define USED_AT (RAM_BASE + 0x3000)
#define HEADER_AT (RAM_BASE + 0x8000)
#define DATA_AT (RAM_BASE + 0x10000)
#define STATUS_AT (RAM_BASE + 0x20000)
#define DISK_SIZE (1u << 20)

static uint8_t *ram;
static struct guest_memory memory;
static char disk_path[] = "/tmp/test_vmm_blk_XXXXXX";
static struct bdev *disk;
static struct ev_loop *loop;
static struct aio_context *ctx;
static struct virtio_blk *blk;
static unsigned interrupts;
static uint16_t avail_index;

static uint8_t disk_byte(uint64_t offset)
{
    return (uint8_t)(offset * 7 + offset / 512);
}

static uint8_t *at(uint64_t address)
{
    return ram + (address - RAM_BASE);
}

static void count_interrupt(void *opaque)
{
    (void)opaque;
    interrupts++;
}

static uint32_t reg_read(uint64_t offset)
{
    uint8_t data[4];
    virtio_mmio_read(&blk->transport, offset, data, 4);
    return load_le32(data);
}

static void reg_write(uint64_t offset, uint32_t value)
{
    uint8_t data[4];
    store_le32(data, value);
    virtio_mmio_write(&blk->transport, offset, data, 4);
}

static void open_device(bool read_only, const char *serial)
{
    ram = aligned_alloc(4096, RAM_SIZE);
    cr_assert_not_null(ram);
    memset(ram, 0, RAM_SIZE);
    memset(&memory, 0, sizeof(memory));
    guest_memory_add_region(&memory, RAM_BASE, ram, RAM_SIZE);

    int fd = mkstemp(disk_path);
    cr_assert_geq(fd, 0);
    uint8_t *content = malloc(DISK_SIZE);
    for (uint64_t i = 0; i < DISK_SIZE; i++)
        content[i] = disk_byte(i);
    cr_assert_eq(write(fd, content, DISK_SIZE), DISK_SIZE);
    free(content);
    close(fd);
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = disk_path;
    options.format = BDEV_FORMAT_RAW;
    options.aio = BDEV_AIO_THREADS;
    cr_assert_eq(bdev_open(&options, &disk, NULL), 0);

    loop = ev_loop_new(EVFLAG_AUTO);
    ctx = aio_context_new(loop);
    cr_assert_not_null(ctx);
    blk = malloc(sizeof(*blk));
    cr_assert_eq(virtio_blk_init(blk, disk, &memory, read_only, serial), 0);
    blk->transport.raise_irq = count_interrupt;
    virtio_blk_attach(blk, ctx);
    interrupts = 0;
    avail_index = 0;
}

static void close_device(void)
{
    virtio_blk_detach(blk);
    io_drain_requests(ctx);
    virtio_blk_destroy(blk);
    free(blk);
    cr_assert_eq(aio_context_free(ctx), 0);
    ev_loop_destroy(loop);
    bdev_close(disk);
    threadpool_shutdown();
    unlink(disk_path);
    strcpy(disk_path, "/tmp/test_vmm_blk_XXXXXX");
    free(ram);
}

/* What Linux's virtio_mmio and virtio_blk do at probe; returns the status register. */
static uint32_t driver_setup(uint64_t accepted_features)
{
    reg_write(VIRTIO_MMIO_STATUS, 0);
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)accepted_features);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(accepted_features >> 32));
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
        return reg_read(VIRTIO_MMIO_STATUS);
    reg_write(VIRTIO_MMIO_QUEUE_SEL, 0);
    cr_assert_eq(reg_read(VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTIO_BLK_QUEUE_SIZE);
    reg_write(VIRTIO_MMIO_QUEUE_NUM, QUEUE_SIZE);
    reg_write(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)DESC_AT);
    reg_write(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    reg_write(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)AVAIL_AT);
    reg_write(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)USED_AT);
    reg_write(VIRTIO_MMIO_QUEUE_READY, 1);
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                                      VIRTIO_STATUS_DRIVER_OK);
    return reg_read(VIRTIO_MMIO_STATUS);
}

static uint64_t device_features(void)
{
    reg_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t low = reg_read(VIRTIO_MMIO_DEVICE_FEATURES);
    reg_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    return low | (uint64_t)reg_read(VIRTIO_MMIO_DEVICE_FEATURES) << 32;
}

static void put_descriptor(unsigned index, uint64_t address, uint32_t length, uint16_t flags, uint16_t next)
{
    uint8_t *p = at(DESC_AT) + 16 * index;
    store_le64(p, address);
    store_le32(p + 8, length);
    store_le16(p + 12, flags);
    store_le16(p + 14, next);
}

/* header, data (direction by type), status; run it; returns the status byte. */
static uint8_t request(uint32_t type, uint64_t sector, uint32_t data_length, bool data_writable)
{
    store_le32(at(HEADER_AT), type);
    store_le32(at(HEADER_AT) + 4, 0);
    store_le64(at(HEADER_AT) + 8, sector);
    *at(STATUS_AT) = 0xee;
    unsigned head = (avail_index % 5) * 3; /* three descriptors each, within the table */
    if (data_length) {
        put_descriptor(head, HEADER_AT, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(head + 1));
        put_descriptor(head + 1, DATA_AT, data_length, VIRTQ_DESC_F_NEXT | (data_writable ? VIRTQ_DESC_F_WRITE : 0),
                       (uint16_t)(head + 2));
        put_descriptor(head + 2, STATUS_AT, 1, VIRTQ_DESC_F_WRITE, 0);
    } else {
        put_descriptor(head, HEADER_AT, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(head + 1));
        put_descriptor(head + 1, STATUS_AT, 1, VIRTQ_DESC_F_WRITE, 0);
    }
    store_le16(at(AVAIL_AT) + 4 + 2 * (avail_index % QUEUE_SIZE), (uint16_t)head);
    avail_index++;
    store_le16(at(AVAIL_AT) + 2, avail_index);
    reg_write(VIRTIO_MMIO_QUEUE_NOTIFY, 0); /* the vCPU path: writes the eventfd */
    ev_run(loop, EVRUN_NOWAIT);              /* the notify watcher processes the queue */
    io_drain_requests(ctx);
    cr_assert_eq(load_le16(at(USED_AT) + 2), avail_index, "request %u (type %u) completed", avail_index, type);
    const uint8_t *used = at(USED_AT) + 4 + 8 * ((avail_index - 1) % QUEUE_SIZE);
    cr_assert_eq(load_le32(used), head);
    return *at(STATUS_AT);
}

static uint32_t last_used_length(void)
{
    return load_le32(at(USED_AT) + 4 + 8 * ((avail_index - 1) % QUEUE_SIZE) + 4);
}

Test(vmm_virtio_blk, identity_and_configuration)
{
    open_device(false, "luna-serial-1");
    cr_assert_eq(reg_read(VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    cr_assert_eq(reg_read(VIRTIO_MMIO_VERSION_REG), 2);
    cr_assert_eq(reg_read(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    uint64_t features = device_features();
    cr_assert(features & VIRTIO_F_VERSION_1);
    cr_assert(features & VIRTIO_BLK_F_FLUSH);
    cr_assert(features & VIRTIO_F_INDIRECT_DESC);
    cr_assert_not(features & VIRTIO_BLK_F_RO);
    uint8_t capacity[8];
    virtio_mmio_read(&blk->transport, VIRTIO_MMIO_CONFIG, capacity, 8);
    cr_assert_eq(load_le64(capacity), DISK_SIZE / 512);
    close_device();
}

Test(vmm_virtio_blk, refuses_legacy_drivers)
{
    open_device(false, NULL);
    uint32_t status = driver_setup(VIRTIO_BLK_F_FLUSH); /* no VERSION_1 */
    cr_assert_not(status & VIRTIO_STATUS_FEATURES_OK);
    close_device();
}

Test(vmm_virtio_blk, read_write_flush_get_id)
{
    open_device(false, "luna-serial-1");
    uint32_t status = driver_setup(device_features());
    cr_assert(status & VIRTIO_STATUS_DRIVER_OK);

    uint8_t first = request(VIRTIO_BLK_T_IN, 3, 1024, true);
    cr_assert_eq(first, VIRTIO_BLK_S_OK, "status %u", first);
    for (unsigned i = 0; i < 1024; i++)
        cr_assert_eq(*at(DATA_AT + i), disk_byte(3 * 512 + i), "byte %u", i);
    cr_assert_eq(last_used_length(), 1025);
    cr_assert_eq(interrupts, 1);

    for (unsigned i = 0; i < 512; i++)
        *at(DATA_AT + i) = (uint8_t)(0x5a ^ i);
    cr_assert_eq(request(VIRTIO_BLK_T_OUT, 10, 512, false), VIRTIO_BLK_S_OK);
    cr_assert_eq(request(VIRTIO_BLK_T_FLUSH, 0, 0, false), VIRTIO_BLK_S_OK);
    uint8_t back[512];
    cr_assert_eq(bdev_pread(disk, back, 512, 10 * 512), 0);
    for (unsigned i = 0; i < 512; i++)
        cr_assert_eq(back[i], (uint8_t)(0x5a ^ i));

    memset(at(DATA_AT), 0, 20);
    cr_assert_eq(request(VIRTIO_BLK_T_GET_ID, 0, 20, true), VIRTIO_BLK_S_OK);
    cr_assert_eq(memcmp(at(DATA_AT), "luna-serial-1", 14), 0);

    cr_assert_eq(request(99, 0, 0, false), VIRTIO_BLK_S_UNSUPP);
    cr_assert_eq(request(VIRTIO_BLK_T_IN, DISK_SIZE / 512, 512, true), VIRTIO_BLK_S_IOERR, "past the end");
    cr_assert_eq(request(VIRTIO_BLK_T_IN, UINT64_MAX / 256, 512, true), VIRTIO_BLK_S_IOERR, "sector overflow");
    cr_assert_eq(interrupts, 7);
    close_device();
}

Test(vmm_virtio_blk, read_only_refuses_writes)
{
    open_device(true, NULL);
    cr_assert(device_features() & VIRTIO_BLK_F_RO);
    driver_setup(device_features());
    cr_assert_eq(request(VIRTIO_BLK_T_OUT, 0, 512, false), VIRTIO_BLK_S_IOERR);
    uint8_t back[512];
    cr_assert_eq(bdev_pread(disk, back, 512, 0), 0);
    cr_assert_eq(back[1], disk_byte(1), "the disk is untouched");
    close_device();
}

Test(vmm_virtio_blk, malformed_request_needs_reset)
{
    open_device(false, NULL);
    driver_setup(device_features());
    put_descriptor(0, HEADER_AT, 16, 0, 0); /* no status byte to write */
    store_le16(at(AVAIL_AT) + 4, 0);
    store_le16(at(AVAIL_AT) + 2, 1);
    reg_write(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    ev_run(loop, EVRUN_NOWAIT);
    cr_assert(reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
    cr_assert(reg_read(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INTERRUPT_CONFIG_CHANGE);
    reg_write(VIRTIO_MMIO_STATUS, 0);
    cr_assert_eq(reg_read(VIRTIO_MMIO_STATUS), 0, "a reset clears it");
    close_device();
}
