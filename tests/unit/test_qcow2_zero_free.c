/*
 * qcow2 zeroes and discards that free clusters (QEMU's semantics): what
 * becomes of the L2 entry and the refcount, and the wait that keeps a
 * transfer which mapped a cluster before its free from seeing the data of
 * a later write that reuses it.  The comparison with qemu-io itself is
 * tests/integration/test_qcow2_zero_free.sh.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_internal.h"
#include "block/threadpool.h"

#define CLUSTER 65536u

static char path[] = "/tmp/luna-qcow2-zero-free.XXXXXX";
static struct bdev *image;

static void fini(void)
{
    if (image)
        bdev_close(image);
    image = NULL;
    threadpool_shutdown();
    unlink(path);
}

TestSuite(qcow2_zero_free, .fini = fini);

/* A fresh 8 MiB v3 image (64 KiB clusters), open for writing. */
static struct qcow2 *open_image(bool extended_l2)
{
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct qcow2_create_options create;
    qcow2_create_options_init(&create);
    create.size = 8u << 20;
    create.extended_l2 = extended_l2;
    char *message = NULL;
    cr_assert_eq(qcow2_create(path, &create, &message), 0, "%s", message ? message : "");
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.format = BDEV_FORMAT_QCOW2;
    cr_assert_eq(bdev_open(&options, &image, &message), 0, "%s", message ? message : "");
    return image->driver;
}

static void fill(uint64_t offset, uint64_t length, uint8_t byte)
{
    uint8_t *buffer = malloc(length);
    memset(buffer, byte, length);
    cr_assert_eq(bdev_pwrite(image, buffer, length, offset, 0), 0);
    free(buffer);
}

static int zero_or_discard(enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length)
{
    struct bdev_io io = {.op = op, .flags = flags, .offset = offset, .length = length};
    return bdev_blocking(image, &io);
}

static void entry_of(struct qcow2 *q, uint64_t guest_cluster, uint64_t *entry, uint64_t *bitmap)
{
    pthread_mutex_lock(&q->lock);
    cr_assert_eq(qcow2_l2_entry_get(q, guest_cluster, false, entry, bitmap), 0);
    pthread_mutex_unlock(&q->lock);
}

static uint64_t refcount_of(struct qcow2 *q, uint64_t host)
{
    uint64_t refcount;
    pthread_mutex_lock(&q->lock);
    cr_assert_eq(qcow2_refcount_get(q, host / CLUSTER, &refcount), 0);
    pthread_mutex_unlock(&q->lock);
    return refcount;
}

static bool reads_byte(uint64_t offset, uint64_t length, uint8_t byte)
{
    uint8_t *buffer = malloc(length);
    cr_assert_eq(bdev_pread(image, buffer, length, offset), 0);
    bool same = true;
    for (uint64_t i = 0; i < length; i++)
        same = same && buffer[i] == byte;
    free(buffer);
    return same;
}

Test(qcow2_zero_free, entries_and_refcounts)
{
    struct qcow2 *q = open_image(false);
    fill(0, 4 * CLUSTER, 0x11);
    uint64_t entry, bitmap, host[4];
    for (int i = 0; i < 4; i++) {
        entry_of(q, (uint64_t)i, &entry, &bitmap);
        host[i] = entry & QCOW2_OFFSET_MASK;
        cr_assert_eq(entry, host[i] | QCOW2_OFLAG_COPIED);
    }

    /* NO_HOLE zeroes keep the cluster, preallocated, and its refcount. */
    cr_assert_eq(zero_or_discard(BDEV_OP_WRITE_ZEROES, 0, 0, CLUSTER), 0);
    entry_of(q, 0, &entry, &bitmap);
    cr_assert_eq(entry, host[0] | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO);
    cr_assert_eq(refcount_of(q, host[0]), 1);

    /* Zeroes that may unmap free it: only the zero flag remains. */
    cr_assert_eq(zero_or_discard(BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 0, 2 * CLUSTER), 0);
    for (int i = 0; i < 2; i++) {
        entry_of(q, (uint64_t)i, &entry, &bitmap);
        cr_assert_eq(entry, QCOW2_OFLAG_ZERO);
        cr_assert_eq(refcount_of(q, host[i]), 0);
    }

    /* A discard frees too. */
    cr_assert_eq(zero_or_discard(BDEV_OP_DISCARD, 0, 2 * CLUSTER, 2 * CLUSTER), 0);
    for (int i = 2; i < 4; i++) {
        entry_of(q, (uint64_t)i, &entry, &bitmap);
        cr_assert_eq(entry, QCOW2_OFLAG_ZERO);
        cr_assert_eq(refcount_of(q, host[i]), 0);
    }
    cr_assert(reads_byte(0, 4 * CLUSTER, 0));

    /* The freed clusters are the next ones allocated, for other guest clusters. */
    fill(16 * CLUSTER, 4 * CLUSTER, 0x22);
    for (int i = 0; i < 4; i++) {
        entry_of(q, 16 + (uint64_t)i, &entry, &bitmap);
        cr_assert_eq(entry & QCOW2_OFFSET_MASK, host[i], "guest cluster %d not on a freed host cluster", 16 + i);
    }
    cr_assert(reads_byte(16 * CLUSTER, 4 * CLUSTER, 0x22));
    cr_assert(reads_byte(0, 4 * CLUSTER, 0));

    /* Unallocated without a backing file: zeroes are recorded (as QEMU), a discard changes nothing. */
    cr_assert_eq(zero_or_discard(BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 40 * CLUSTER, CLUSTER), 0);
    cr_assert_eq(zero_or_discard(BDEV_OP_DISCARD, 0, 41 * CLUSTER, CLUSTER), 0);
    entry_of(q, 40, &entry, &bitmap);
    cr_assert_eq(entry, QCOW2_OFLAG_ZERO);
    entry_of(q, 41, &entry, &bitmap);
    cr_assert_eq(entry, 0);
    cr_assert_eq(zero_or_discard(BDEV_OP_DISCARD, 0, 40 * CLUSTER, CLUSTER), 0);
    entry_of(q, 40, &entry, &bitmap);
    cr_assert_eq(entry, QCOW2_OFLAG_ZERO, "a discard leaves a zero cluster as it is");
}

Test(qcow2_zero_free, extended_l2_and_compressed)
{
    struct qcow2 *q = open_image(true);
    fill(0, 2 * CLUSTER, 0x33);
    uint64_t entry, bitmap, host;
    entry_of(q, 0, &entry, &bitmap);
    host = entry & QCOW2_OFFSET_MASK;
    cr_assert_eq(zero_or_discard(BDEV_OP_WRITE_ZEROES, 0, 0, CLUSTER), 0);
    entry_of(q, 0, &entry, &bitmap);
    cr_assert_eq(entry, host | QCOW2_OFLAG_COPIED);
    cr_assert_eq(bitmap, 0xffffffffull << 32);
    cr_assert_eq(zero_or_discard(BDEV_OP_DISCARD, 0, 0, CLUSTER), 0);
    entry_of(q, 0, &entry, &bitmap);
    cr_assert_eq(entry, 0);
    cr_assert_eq(bitmap, 0xffffffffull << 32);
    cr_assert_eq(refcount_of(q, host), 0);

    /* A compressed cluster is freed even by NO_HOLE zeroes. */
    uint8_t *data = calloc(1, CLUSTER);
    memset(data, 0x44, CLUSTER / 2);
    cr_assert_eq(bdev_pwrite(image, data, CLUSTER, 4 * CLUSTER, BDEV_COMPRESS), 0);
    free(data);
    entry_of(q, 4, &entry, &bitmap);
    cr_assert(entry & QCOW2_OFLAG_COMPRESSED);
    uint64_t compressed_host, length;
    qcow2_compressed_descriptor(&q->image.header, entry, &compressed_host, &length);
    cr_assert_eq(refcount_of(q, compressed_host), 1);
    cr_assert_eq(zero_or_discard(BDEV_OP_WRITE_ZEROES, 0, 4 * CLUSTER, CLUSTER), 0);
    entry_of(q, 4, &entry, &bitmap);
    cr_assert_eq(entry, 0);
    cr_assert_eq(bitmap, 0xffffffffull << 32);
    cr_assert_eq(refcount_of(q, compressed_host), 0);
}

/* ---- a transfer in flight across a free and a reuse ---- */

struct discard_then_write {
    atomic_bool done;
    int rc;
};

static void *discard_then_write(void *opaque)
{
    struct discard_then_write *t = opaque;
    t->rc = zero_or_discard(BDEV_OP_DISCARD, 0, 0, 8 * CLUSTER);
    if (t->rc == 0) {
        uint8_t *buffer = malloc(CLUSTER);
        memset(buffer, 0x66, CLUSTER);
        t->rc = bdev_pwrite(image, buffer, CLUSTER, 32 * CLUSTER, 0);
        free(buffer);
    }
    atomic_store(&t->done, true);
    return NULL;
}

Test(qcow2_zero_free, free_waits_for_transfers_that_mapped_the_cluster)
{
    struct qcow2 *q = open_image(false);
    fill(0, 8 * CLUSTER, 0x55);

    /* A read maps guest cluster 0 and begins its transfer (as the loop's fast path does). */
    struct qcow2_mapping m;
    pthread_mutex_lock(&q->lock);
    cr_assert_eq(qcow2_map(q, 0, CLUSTER, false, &m), 0);
    cr_assert_eq(m.kind, QCOW2_CLUSTER_NORMAL);
    unsigned epoch = qcow2_data_io_begin(q);
    pthread_mutex_unlock(&q->lock);

    struct discard_then_write t = {.done = false};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, discard_then_write, &t), 0);
    struct timespec pause = {.tv_nsec = 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    /* The discard of eight clusters waits, once, for the transfer; nothing reused the cluster yet. */
    cr_assert(!atomic_load(&t.done), "the discard freed a cluster a transfer still uses");
    uint8_t byte;
    cr_assert_eq(bdev_pread(q->file, &byte, 1, m.host_offset + 100), 0);
    cr_assert_neq(byte, 0x66, "a write reused a cluster a transfer still uses");

    qcow2_data_io_end(q, epoch);
    pthread_join(thread, NULL);
    cr_assert_eq(t.rc, 0);
    /* Now the write of guest cluster 32 takes the lowest freed host cluster: the one read. */
    uint64_t entry, bitmap;
    entry_of(q, 32, &entry, &bitmap);
    pthread_mutex_lock(&q->lock);
    struct qcow2_mapping first;
    cr_assert_eq(qcow2_map(q, 0, CLUSTER, false, &first), 0);
    pthread_mutex_unlock(&q->lock);
    cr_assert_eq(first.kind, QCOW2_CLUSTER_ZERO_PLAIN);
    cr_assert(reads_byte(0, 8 * CLUSTER, 0));
    cr_assert(reads_byte(32 * CLUSTER, CLUSTER, 0x66));
    cr_assert_eq(entry & QCOW2_OFFSET_MASK, m.host_offset, "the lowest freed cluster was not reused");
}
