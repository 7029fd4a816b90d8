/* host_device on a loop device (skipped when losetup is not possible here). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/threadpool.h"
#include "test_block_util.h"

#define MiB (1024 * 1024)

static struct test_loop t;
static char *backing;
static char device[64];

static void setup(void)
{
    test_loop_init(&t);
    backing = temp_file_with_pattern(8 * MiB);
    device[0] = '\0';
    char command[256];
    snprintf(command, sizeof(command), "losetup -f --show %s 2>/dev/null", backing);
    FILE *p = popen(command, "r");
    if (p) {
        if (!fgets(device, sizeof(device), p))
            device[0] = '\0';
        pclose(p);
    }
    device[strcspn(device, "\n")] = '\0';
}

static void teardown(void)
{
    if (device[0]) {
        char command[128];
        snprintf(command, sizeof(command), "losetup -d %s", device);
        if (system(command) != 0)
            fprintf(stderr, "could not detach %s\n", device);
    }
    unlink(backing);
    free(backing);
    test_loop_fini(&t);
    threadpool_shutdown();
}

TestSuite(host_device, .init = setup, .fini = teardown);

#define NEED_DEVICE()                                                                              \
    do {                                                                                           \
        if (!device[0])                                                                            \
            cr_skip_test("no loop device (losetup failed)");                                       \
    } while (0)

Test(host_device, auto_format_picks_the_driver_and_reads_sizes)
{
    NEED_DEVICE();
    struct bdev *bdev = open_bdev(device, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, false);
    cr_assert_str_eq(bdev->ops->name, "host_device");
    cr_assert_eq(bdev->size, 8 * MiB);
    cr_assert_eq(bdev->limits.logical_block_size, 512);
    cr_assert_geq(bdev->limits.physical_block_size, 512);
    cr_assert_eq(bdev->caps & BDEV_CAP_BLOCK_STATUS, 0);
    cr_assert(bdev->caps & BDEV_CAP_WRITE_ZEROES);
    bdev_close(bdev);

    /* format=raw on a block device is the same thing. */
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = device;
    options.format = BDEV_FORMAT_RAW;
    cr_assert_eq(bdev_open(&options, &bdev, NULL), 0);
    cr_assert_str_eq(bdev->ops->name, "host_device");
    bdev_close(bdev);
}

static void exercise(enum bdev_cache_mode cache, enum bdev_aio_engine aio)
{
    struct bdev *bdev = open_bdev(device, cache, aio, false);
    uint8_t *buffer = test_aligned_alloc(MiB);
    uint8_t *back = test_aligned_alloc(MiB);

    /* Aligned and unaligned writes, read back. */
    memset(buffer, 0x42, 65536);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, BDEV_FUA, 65536, 65536, buffer), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, 1000, 77, buffer), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_FLUSH, 0, 0, 0, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 65536, 65536, back), 0);
    cr_assert_arr_eq(back, buffer, 65536);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 999, 79, back), 0);
    cr_assert_eq(back[0], pattern_byte(999));
    cr_assert_eq(back[1], 0x42);
    cr_assert_eq(back[77], 0x42);
    cr_assert_eq(back[78], pattern_byte(1077));

    /* write_zeroes, plain and may-unmap, always reads back zeroes. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, 0, MiB, MiB, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, MiB, MiB, back), 0);
    cr_assert(all_zero(back, MiB));
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 2 * MiB, MiB, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 2 * MiB, MiB, back), 0);
    cr_assert(all_zero(back, MiB));
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, 0, 3 * MiB + 10, 1000, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 3 * MiB + 9, 1002, back), 0);
    cr_assert_eq(back[0], pattern_byte(3 * MiB + 9));
    cr_assert(all_zero(back + 1, 1000));
    cr_assert_eq(back[1001], pattern_byte(3 * MiB + 1010));
    /* FAST_ONLY either succeeds with zeroes or refuses without writing. */
    int rc = run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, BDEV_FAST_ONLY | BDEV_MAY_UNMAP, 4 * MiB, MiB, NULL);
    cr_assert(rc == 0 || rc == -ENOTSUP, "fast zero: %d", rc);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 4 * MiB, MiB, back), 0);
    if (rc == 0)
        cr_assert(all_zero(back, MiB));
    else
        cr_assert_eq(back[5], pattern_byte(4 * MiB + 5));

    /* Discard is advisory; it must succeed. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 5 * MiB, MiB, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, BDEV_FUA, 6 * MiB + 1, 4000, NULL), 0);

    /* Everything is data. */
    struct bdev_extent extents[4];
    uint32_t count;
    cr_assert_eq(run_block_status(&t, bdev, 0, 8 * MiB, extents, 4, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(extents[0].length, 8 * MiB);
    cr_assert_eq(extents[0].flags, 0);

    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 8 * MiB - 512, 1024, back), -EINVAL);
    free(buffer);
    free(back);
    bdev_close(bdev);
}

Test(host_device, every_op_on_both_engines_and_cache_modes)
{
    NEED_DEVICE();
    for (int c = 0; c < 5; c++)
        for (int e = 0; e < 2; e++)
            exercise(all_cache_modes[c], both_engines[e]);
}

Test(host_device, read_only)
{
    NEED_DEVICE();
    struct bdev *bdev = open_bdev(device, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, true);
    char buffer[512];
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, 0, 512, buffer), -EROFS);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 0, 512, buffer), 0);
    cr_assert_eq((uint8_t)buffer[3], pattern_byte(3));
    bdev_close(bdev);
}
