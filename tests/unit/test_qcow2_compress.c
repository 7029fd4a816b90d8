/*
 * Compressed writes (BDEV_COMPRESS, what luna-img convert -c uses): whole
 * clusters stored compressed and packed several to a host cluster, read back
 * exactly, overwritten in place of the compressed data, and an image QEMU
 * finds consistent (qemu-img check) with compressed clusters in it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_format.h"
#include "block/threadpool.h"

#define CLUSTER 65536u
#define SIZE (16u * CLUSTER)

static char path[] = "/tmp/luna-qcow2-compress.XXXXXX";

static void fini(void)
{
    threadpool_shutdown();
    if (!getenv("KEEP_IMAGE"))
        unlink(path);
}

TestSuite(qcow2_compress, .fini = fini);

static struct bdev *create_and_open(uint8_t compression_type)
{
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct qcow2_create_options create;
    qcow2_create_options_init(&create);
    create.size = SIZE;
    create.cluster_size = CLUSTER;
    create.compression_type = compression_type;
    char *message = NULL;
    cr_assert_eq(qcow2_create(path, &create, &message), 0, "%s", message ? message : "");
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.format = BDEV_FORMAT_QCOW2;
    options.aio = BDEV_AIO_THREADS;
    struct bdev *bdev;
    cr_assert_eq(bdev_open(&options, &bdev, &message), 0, "%s", message ? message : "");
    cr_assert(bdev->caps & BDEV_CAP_COMPRESS);
    cr_assert_eq(bdev->limits.compress_unit, CLUSTER);
    return bdev;
}

/* Compressible: a short repeating text; incompressible: random bytes. */
static void fill(uint8_t *buffer, size_t length, unsigned seed, bool compressible)
{
    srand(seed);
    for (size_t i = 0; i < length; i++)
        buffer[i] = compressible ? (uint8_t)("luna qcow2 "[(i + seed) % 11]) : (uint8_t)rand();
}

static void check_with_qemu(void)
{
    char command[256];
    snprintf(command, sizeof(command), "qemu-img check -q %s", path);
    cr_assert_eq(system(command), 0, "qemu-img check");
    /* 12 of the 16 clusters were compressible, one was rewritten uncompressed: 11 are compressed. */
    snprintf(command, sizeof(command), "qemu-img check %s | grep -q ' 68.75%% compressed clusters'", path);
    cr_assert_eq(system(command), 0, "qemu-img counts the compressed clusters");
}

static void round_trip(uint8_t compression_type)
{
    struct bdev *bdev = create_and_open(compression_type);
    uint8_t *data = malloc(SIZE), *back = malloc(SIZE);
    for (unsigned c = 0; c < 16; c++)
        fill(data + c * CLUSTER, CLUSTER, c, c % 4 != 3); /* every fourth cluster incompressible */
    cr_assert_eq(bdev_pwrite(bdev, data, 8 * CLUSTER, 0, BDEV_COMPRESS), 0);
    cr_assert_eq(bdev_pwrite(bdev, data + 8 * CLUSTER, 8 * CLUSTER, 8 * CLUSTER, BDEV_COMPRESS), 0);
    cr_assert_eq(bdev_pread(bdev, back, SIZE, 0), 0);
    cr_assert(memcmp(data, back, SIZE) == 0, "compressed clusters read back");

    /* Overwrite part of a compressed cluster: it becomes a normal one, its neighbours intact. */
    memset(data + CLUSTER + 100, 0xee, 4000);
    cr_assert_eq(bdev_pwrite(bdev, data + CLUSTER + 100, 4000, CLUSTER + 100, 0), 0);
    /* And a compressed one over a compressed one. */
    fill(data + 2 * CLUSTER, CLUSTER, 99, true);
    cr_assert_eq(bdev_pwrite(bdev, data + 2 * CLUSTER, CLUSTER, 2 * CLUSTER, BDEV_COMPRESS), 0);
    cr_assert_eq(bdev_pread(bdev, back, SIZE, 0), 0);
    cr_assert(memcmp(data, back, SIZE) == 0, "after overwrites");

    /* Compressed writes must cover whole clusters. */
    cr_assert_eq(bdev_pwrite(bdev, data, 4096, 0, BDEV_COMPRESS), -EINVAL);
    cr_assert_eq(bdev_flush_blocking(bdev), 0);
    bdev_close(bdev);
    threadpool_shutdown(); /* the close writes the caches back on the pool */
    check_with_qemu();
    free(data);
    free(back);
}

Test(qcow2_compress, zlib) { round_trip(QCOW2_COMPRESSION_ZLIB); }
Test(qcow2_compress, zstd) { round_trip(QCOW2_COMPRESSION_ZSTD); }
