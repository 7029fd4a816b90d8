/* Split virtqueues over a fake guest memory, hostile chains included. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/virtqueue.h"

#define RAM_BASE 0x100000ull
#define RAM_SIZE (1u << 20)
#define QUEUE_SIZE 8u
#define DESC_AT (RAM_BASE + 0x1000)
#define AVAIL_AT (RAM_BASE + 0x2000)
#define USED_AT (RAM_BASE + 0x3000)
#define INDIRECT_AT (RAM_BASE + 0x4000)
#define DATA_AT (RAM_BASE + 0x10000)

static uint8_t *ram;
static struct guest_memory memory;
static struct virtqueue queue;
static uint16_t avail_index;

static uint8_t *at(uint64_t address)
{
    return ram + (address - RAM_BASE);
}

static void setup(void)
{
    ram = aligned_alloc(4096, RAM_SIZE);
    cr_assert_not_null(ram);
    memset(ram, 0, RAM_SIZE);
    memset(&memory, 0, sizeof(memory));
    cr_assert_eq(guest_memory_add_region(&memory, RAM_BASE, ram, RAM_SIZE), 0);
    queue = (struct virtqueue){.size = QUEUE_SIZE, .desc_address = DESC_AT, .avail_address = AVAIL_AT,
                               .used_address = USED_AT};
    cr_assert_eq(virtqueue_start(&queue, &memory), 0);
    avail_index = 0;
}

static void teardown(void)
{
    free(ram);
}

TestSuite(vmm_virtqueue, .init = setup, .fini = teardown);

static void put_descriptor(uint64_t table, unsigned index, uint64_t address, uint32_t length, uint16_t flags,
                           uint16_t next)
{
    uint8_t *p = at(table) + 16 * index;
    store_le64(p, address);
    store_le32(p + 8, length);
    store_le16(p + 12, flags);
    store_le16(p + 14, next);
}

static void make_available(uint16_t head)
{
    store_le16(at(AVAIL_AT) + 4 + 2 * (avail_index % QUEUE_SIZE), head);
    avail_index++;
    store_le16(at(AVAIL_AT) + 2, avail_index);
}

Test(vmm_virtqueue, empty_ring)
{
    struct virtqueue_buffer buffers[4];
    struct virtqueue_chain chain;
    cr_assert_eq(virtqueue_pop(&queue, buffers, 4, &chain), 0);
}

Test(vmm_virtqueue, chain_of_three)
{
    put_descriptor(DESC_AT, 5, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 2);
    put_descriptor(DESC_AT, 2, DATA_AT + 512, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 7);
    put_descriptor(DESC_AT, 7, DATA_AT + 4096, 1, VIRTQ_DESC_F_WRITE, 0);
    make_available(5);
    struct virtqueue_buffer buffers[4];
    struct virtqueue_chain chain;
    cr_assert_eq(virtqueue_pop(&queue, buffers, 4, &chain), 1);
    cr_assert_eq(chain.head, 5);
    cr_assert_eq(chain.count, 3);
    cr_assert_eq(chain.readable, 1);
    cr_assert_eq(buffers[0].host, at(DATA_AT));
    cr_assert_eq(buffers[1].length, 512);
    cr_assert(buffers[1].writable);
    cr_assert_eq(buffers[2].host, at(DATA_AT + 4096));
    cr_assert_eq(virtqueue_pop(&queue, buffers, 4, &chain), 0, "consumed");

    virtqueue_push(&queue, 5, 513);
    cr_assert_eq(load_le16(at(USED_AT) + 2), 1);
    cr_assert_eq(load_le32(at(USED_AT) + 4), 5);
    cr_assert_eq(load_le32(at(USED_AT) + 8), 513);
    cr_assert(virtqueue_wants_interrupt(&queue));
    store_le16(at(AVAIL_AT), VIRTQ_AVAIL_F_NO_INTERRUPT);
    cr_assert_not(virtqueue_wants_interrupt(&queue));
}

Test(vmm_virtqueue, indirect_table)
{
    put_descriptor(INDIRECT_AT, 0, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 1);
    put_descriptor(INDIRECT_AT, 1, DATA_AT + 512, 4096, VIRTQ_DESC_F_NEXT, 2);
    put_descriptor(INDIRECT_AT, 2, DATA_AT + 8192, 1, VIRTQ_DESC_F_WRITE, 0);
    put_descriptor(DESC_AT, 0, INDIRECT_AT, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_available(0);
    struct virtqueue_buffer buffers[4];
    struct virtqueue_chain chain;
    cr_assert_eq(virtqueue_pop(&queue, buffers, 4, &chain), 1);
    cr_assert_eq(chain.head, 0);
    cr_assert_eq(chain.count, 3);
    cr_assert_eq(chain.readable, 2);
    cr_assert_eq(buffers[1].length, 4096);
}

static int pop_error(void)
{
    struct virtqueue_buffer buffers[16];
    struct virtqueue_chain chain;
    return virtqueue_pop(&queue, buffers, 16, &chain);
}

Test(vmm_virtqueue, loop_is_refused)
{
    put_descriptor(DESC_AT, 0, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 1);
    put_descriptor(DESC_AT, 1, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 0);
    make_available(0);
    cr_assert_eq(pop_error(), -ELOOP);
}

Test(vmm_virtqueue, self_loop_in_indirect_table_is_refused)
{
    put_descriptor(INDIRECT_AT, 0, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 0);
    put_descriptor(DESC_AT, 0, INDIRECT_AT, 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_available(0);
    cr_assert_eq(pop_error(), -ELOOP);
}

Test(vmm_virtqueue, out_of_range_addresses_are_refused)
{
    put_descriptor(DESC_AT, 0, RAM_BASE + RAM_SIZE - 8, 16, 0, 0); /* straddles the end of RAM */
    make_available(0);
    cr_assert_eq(pop_error(), -EFAULT);

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, 0x10, 16, 0, 0); /* below RAM */
    make_available(0);
    cr_assert_eq(pop_error(), -EFAULT);

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, UINT64_MAX - 4, 16, 0, 0); /* wraps around */
    make_available(0);
    cr_assert_eq(pop_error(), -EFAULT);

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, 0xdead0000, 48, VIRTQ_DESC_F_INDIRECT, 0); /* indirect table outside */
    make_available(0);
    cr_assert_eq(pop_error(), -EFAULT);
}

Test(vmm_virtqueue, bad_indexes_are_refused)
{
    make_available(QUEUE_SIZE); /* head beyond the table */
    cr_assert_eq(pop_error(), -EINVAL);

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, DATA_AT, 16, VIRTQ_DESC_F_NEXT, 200); /* next beyond the table */
    make_available(0);
    cr_assert_eq(pop_error(), -EINVAL);

    teardown();
    setup();
    store_le16(at(AVAIL_AT) + 2, QUEUE_SIZE + 1); /* more available than the ring holds */
    cr_assert_eq(pop_error(), -EINVAL);
}

Test(vmm_virtqueue, malformed_indirect_descriptors_are_refused)
{
    put_descriptor(INDIRECT_AT, 0, INDIRECT_AT, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_descriptor(DESC_AT, 0, INDIRECT_AT, 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_available(0);
    cr_assert_eq(pop_error(), -EINVAL, "nested indirect table");

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, INDIRECT_AT, 20, VIRTQ_DESC_F_INDIRECT, 0);
    make_available(0);
    cr_assert_eq(pop_error(), -EINVAL, "length not a multiple of 16");

    teardown();
    setup();
    put_descriptor(DESC_AT, 0, INDIRECT_AT, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    make_available(0);
    cr_assert_eq(pop_error(), -EINVAL, "INDIRECT with NEXT");
}

Test(vmm_virtqueue, readable_after_writable_is_refused)
{
    put_descriptor(DESC_AT, 0, DATA_AT, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    put_descriptor(DESC_AT, 1, DATA_AT, 16, 0, 0);
    make_available(0);
    cr_assert_eq(pop_error(), -EINVAL);
}

Test(vmm_virtqueue, too_many_buffers_for_the_caller)
{
    for (unsigned i = 0; i < 5; i++)
        put_descriptor(DESC_AT, i, DATA_AT, 16, i < 4 ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
    make_available(0);
    struct virtqueue_buffer buffers[4];
    struct virtqueue_chain chain;
    cr_assert_eq(virtqueue_pop(&queue, buffers, 4, &chain), -E2BIG);
}

Test(vmm_virtqueue, start_checks_rings)
{
    struct virtqueue bad = queue;
    bad.size = 6;
    cr_assert_eq(virtqueue_start(&bad, &memory), -EINVAL, "size not a power of two");
    bad = queue;
    bad.used_address = RAM_BASE + RAM_SIZE - 8;
    cr_assert_eq(virtqueue_start(&bad, &memory), -EFAULT, "used ring past RAM");
    bad = queue;
    bad.desc_address = DESC_AT + 8;
    cr_assert_eq(virtqueue_start(&bad, &memory), -EINVAL, "misaligned descriptor table");
}
