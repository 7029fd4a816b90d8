/* The raw driver through bdev_submit: data, durability ops, sparseness, errors. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/threadpool.h"
#include "test_block_util.h"

#define MiB (1024 * 1024)

static struct test_loop t;
static void setup(void) { test_loop_init(&t); }
static void teardown(void)
{
    test_loop_fini(&t);
    threadpool_shutdown();
}

TestSuite(raw, .init = setup, .fini = teardown);

/* Writes at aligned and odd places, read back through the bdev and directly. */
static void check_read_write(enum bdev_cache_mode cache, enum bdev_aio_engine aio)
{
    char *path = temp_file_with_pattern(4 * MiB);
    struct bdev *bdev = open_bdev(path, cache, aio, false);
    cr_assert_eq(bdev->size, 4 * MiB);
    uint8_t *shadow = malloc(4 * MiB), *file_now = malloc(4 * MiB);
    for (uint64_t j = 0; j < 4 * MiB; j++)
        shadow[j] = pattern_byte(j);

    static const struct {
        uint64_t offset, length;
    } cases[] = {{0, 4096}, {8192, 65536}, {511, 3}, {4095, 2}, {100000, 12345}, {4 * MiB - 1, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t offset = cases[i].offset, length = cases[i].length;
        /* One byte past an aligned start: an unaligned buffer for O_DIRECT. */
        uint8_t *block = test_aligned_alloc(length + 4096 * 2);
        uint8_t *data = block + (i % 2);
        for (uint64_t j = 0; j < length; j++)
            data[j] = (uint8_t)(0xA0 + i + j * 13);
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, offset, length, data), 0,
                     "write %zu cache=%s aio=%s", i, bdev_cache_mode_name(cache), bdev_aio_engine_name(aio));

        uint8_t *back = test_aligned_alloc(length + 4096 * 2);
        uint8_t *read_into = back + ((i + 1) % 2);
        memset(read_into, 0xEE, length);
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, offset, length, read_into), 0);
        cr_assert_arr_eq(read_into, data, length, "read back %zu cache=%s aio=%s", i,
                         bdev_cache_mode_name(cache), bdev_aio_engine_name(aio));

        /* The whole file matches: read-modify-write kept every neighbour. */
        memcpy(shadow + offset, data, length);
        read_file_directly(path, 0, file_now, 4 * MiB);
        cr_assert_arr_eq(file_now, shadow, 4 * MiB, "file after write %zu cache=%s aio=%s", i,
                         bdev_cache_mode_name(cache), bdev_aio_engine_name(aio));
        free(block);
        free(back);
    }
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_FLUSH, 0, 0, 0, NULL), 0);
    free(shadow);
    free(file_now);
    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(raw, read_write_every_cache_mode_and_engine)
{
    for (int c = 0; c < 5; c++)
        for (int e = 0; e < 2; e++)
            check_read_write(all_cache_modes[c], both_engines[e]);
}

static void count_completion(struct bdev_io *io) { ++*(int *)io->opaque; }

Test(raw, vectored_request)
{
    char *path = temp_file(MiB);
    for (int e = 0; e < 2; e++) {
        struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, both_engines[e], false);
        char a[100], b[3000], c[1];
        memset(a, 'a', sizeof(a));
        memset(b, 'b', sizeof(b));
        c[0] = 'c';
        struct iovec iov[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, 1}};
        int done = 0;
        struct bdev_io io = {.op = BDEV_OP_WRITE, .offset = 777, .length = 3101, .iov = iov, .iovcnt = 3,
                             .ctx = t.ctx, .complete = count_completion, .opaque = &done};
        bdev_submit(bdev, &io);
        aio_context_drain(t.ctx);
        cr_assert_eq(done, 1);
        cr_assert_eq(io.result, 0);
        char check[3101];
        read_file_directly(path, 777, check, sizeof(check));
        cr_assert_eq(check[0], 'a');
        cr_assert_eq(check[99], 'a');
        cr_assert_eq(check[100], 'b');
        cr_assert_eq(check[3099], 'b');
        cr_assert_eq(check[3100], 'c');

        /* An iovec whose lengths do not add up to length is refused. */
        io.length = 3000;
        done = 0;
        bdev_submit(bdev, &io);
        aio_context_drain(t.ctx);
        cr_assert_eq(io.result, -EINVAL);
        bdev_close(bdev);
    }
    unlink(path);
    free(path);
}

Test(raw, fua_write_and_flush_in_every_mode)
{
    char *path = temp_file(MiB);
    char *data = test_aligned_alloc(4096);
    memset(data, 0x5a, 4096);
    for (int c = 0; c < 5; c++) {
        for (int e = 0; e < 2; e++) {
            struct bdev *bdev = open_bdev(path, all_cache_modes[c], both_engines[e], false);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, BDEV_FUA, 4096 * (c + 1), 4096, data), 0);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_FLUSH, 0, 0, 0, NULL), 0);
            bool volatile_cache = all_cache_modes[c] == BDEV_CACHE_WRITEBACK ||
                                  all_cache_modes[c] == BDEV_CACHE_NONE ||
                                  all_cache_modes[c] == BDEV_CACHE_UNSAFE;
            cr_assert_eq((bdev->caps & BDEV_CAP_FLUSH) != 0, volatile_cache, "cache=%s",
                         bdev_cache_mode_name(all_cache_modes[c]));
            bdev_close(bdev);
            char back[4096];
            read_file_directly(path, 4096 * (c + 1), back, 4096);
            cr_assert_arr_eq(back, data, 4096);
        }
    }
    free(data);
    unlink(path);
    free(path);
}

static void check_extents_cover(struct bdev_extent *extents, uint32_t count, uint64_t length)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        cr_assert_gt(extents[i].length, 0);
        sum += extents[i].length;
    }
    cr_assert_leq(sum, length);
}

Test(raw, discard_punches_a_hole_that_reads_zeroes)
{
    for (int e = 0; e < 2; e++) {
        char *path = temp_file_with_pattern(4 * MiB);
        struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, both_engines[e], false);
        cr_assert(bdev->caps & BDEV_CAP_DISCARD);
        cr_assert(bdev->caps & BDEV_CAP_DISCARD_ZEROES);

        cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, MiB, MiB, NULL), 0);

        struct bdev_extent extents[8];
        uint32_t count;
        cr_assert_eq(run_block_status(&t, bdev, 0, 4 * MiB, extents, 8, &count), 0);
        cr_assert_eq(count, 3);
        check_extents_cover(extents, count, 4 * MiB);
        cr_assert_eq(extents[0].length, MiB);
        cr_assert_eq(extents[0].flags, 0);
        cr_assert_eq(extents[1].length, MiB);
        cr_assert_eq(extents[1].flags, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO);
        cr_assert_eq(extents[2].length, 2 * MiB);
        cr_assert_eq(extents[2].flags, 0);

        uint8_t *buffer = malloc(MiB);
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, MiB, MiB, buffer), 0);
        cr_assert(all_zero(buffer, MiB));
        /* Neighbours keep their data. */
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, MiB - 1, 1, buffer), 0);
        cr_assert_eq(buffer[0], pattern_byte(MiB - 1));

        struct stat st;
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_leq((uint64_t)st.st_blocks * 512, 3 * MiB, "discard did not free space");
        free(buffer);
        bdev_close(bdev);
        unlink(path);
        free(path);
    }
}

Test(raw, discard_disabled_keeps_data)
{
    char *path = temp_file_with_pattern(MiB);
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.discard = false;
    struct bdev *bdev;
    cr_assert_eq(bdev_open(&options, &bdev, NULL), 0);
    cr_assert_eq(bdev->caps & (BDEV_CAP_DISCARD | BDEV_CAP_DISCARD_ZEROES), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 0, MiB, NULL), 0);
    uint8_t byte;
    read_file_directly(path, 4096, &byte, 1);
    cr_assert_eq(byte, pattern_byte(4096));
    /* write_zeroes with MAY_UNMAP still zeroes, but must not punch. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 0, 65536, NULL), 0);
    uint8_t back[65536];
    read_file_directly(path, 0, back, sizeof(back));
    cr_assert(all_zero(back, sizeof(back)));
    bdev_close(bdev);
    unlink(path);
    free(path);
}

static void check_write_zeroes(enum bdev_cache_mode cache, enum bdev_aio_engine aio)
{
    static const uint32_t flag_sets[] = {0, BDEV_MAY_UNMAP, BDEV_FAST_ONLY, BDEV_MAY_UNMAP | BDEV_FAST_ONLY,
                                         BDEV_FUA};
    for (size_t f = 0; f < sizeof(flag_sets) / sizeof(flag_sets[0]); f++) {
        char *path = temp_file_with_pattern(4 * MiB);
        struct bdev *bdev = open_bdev(path, cache, aio, false);
        cr_assert(bdev->caps & BDEV_CAP_WRITE_ZEROES);
        cr_assert(bdev->caps & BDEV_CAP_FAST_ZERO);
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, flag_sets[f], MiB, MiB, NULL), 0, "flags %x",
                     flag_sets[f]);
        /* An unaligned one too: partial blocks at both ends. */
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, flag_sets[f], 3 * MiB + 100, 5000, NULL), 0);

        uint8_t *buffer = malloc(MiB);
        read_file_directly(path, MiB, buffer, MiB);
        cr_assert(all_zero(buffer, MiB), "flags %x cache=%s", flag_sets[f], bdev_cache_mode_name(cache));
        read_file_directly(path, 3 * MiB + 100, buffer, 5000);
        cr_assert(all_zero(buffer, 5000));
        read_file_directly(path, 3 * MiB + 99, buffer, 1);
        cr_assert_eq(buffer[0], pattern_byte(3 * MiB + 99));
        read_file_directly(path, 3 * MiB + 5100, buffer, 1);
        cr_assert_eq(buffer[0], pattern_byte(3 * MiB + 5100));
        read_file_directly(path, MiB - 1, buffer, 1);
        cr_assert_eq(buffer[0], pattern_byte(MiB - 1));
        read_file_directly(path, 2 * MiB, buffer, 1);
        cr_assert_eq(buffer[0], pattern_byte(2 * MiB));

        struct bdev_extent extents[4];
        uint32_t count;
        cr_assert_eq(run_block_status(&t, bdev, MiB, MiB, extents, 4, &count), 0);
        cr_assert_eq(count, 1);
        cr_assert_eq(extents[0].length, MiB);
        if (flag_sets[f] & BDEV_MAY_UNMAP)
            cr_assert_eq(extents[0].flags, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO, "MAY_UNMAP punches");
        else
            cr_assert(extents[0].flags == 0 || (extents[0].flags & BDEV_EXTENT_ZERO));
        free(buffer);
        bdev_close(bdev);
        unlink(path);
        free(path);
    }
}

Test(raw, write_zeroes_flags_modes_engines)
{
    for (int c = 0; c < 5; c++)
        for (int e = 0; e < 2; e++)
            check_write_zeroes(all_cache_modes[c], both_engines[e]);
}

Test(raw, block_status_extents_limit_and_clipping)
{
    char *path = temp_file(4 * MiB);
    int fd = open(path, O_WRONLY);
    char data[4096];
    memset(data, 1, sizeof(data));
    /* data at [0,64K) and [2M, 2M+64K); holes elsewhere */
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(pwrite(fd, data, 4096, i * 4096), 4096);
        cr_assert_eq(pwrite(fd, data, 4096, 2 * MiB + i * 4096), 4096);
    }
    close(fd);
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, false);
    struct bdev_extent extents[16];
    uint32_t count;

    cr_assert_eq(run_block_status(&t, bdev, 0, 4 * MiB, extents, 1, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(extents[0].length, 65536);
    cr_assert_eq(extents[0].flags, 0);

    cr_assert_eq(run_block_status(&t, bdev, 0, 4 * MiB, extents, 16, &count), 0);
    cr_assert_eq(count, 4);
    uint64_t expect_length[] = {65536, 2 * MiB - 65536, 65536, 2 * MiB - 65536};
    uint32_t expect_flags[] = {0, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO, 0, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(extents[i].length, expect_length[i], "extent %d", i);
        cr_assert_eq(extents[i].flags, expect_flags[i], "extent %d", i);
    }

    /* A range inside a hole, and one starting mid-data: clipped to the range. */
    cr_assert_eq(run_block_status(&t, bdev, MiB, 4096, extents, 16, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(extents[0].length, 4096);
    cr_assert_eq(extents[0].flags, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO);
    cr_assert_eq(run_block_status(&t, bdev, 1000, 2000, extents, 16, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(extents[0].length, 2000);
    cr_assert_eq(extents[0].flags, 0);

    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(raw, range_and_argument_errors)
{
    char *path = temp_file(MiB);
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, false);
    char buffer[4096];
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, MiB - 100, 4096, buffer), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, MiB, 1, buffer), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, UINT64_MAX - 10, 4096, buffer), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 4096, UINT64_MAX, NULL), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, 0, MiB + 1, 0, NULL), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 1u << 20, 0, 16, buffer), -EINVAL, "unknown flag");
    struct bdev_extent extent;
    uint32_t count;
    cr_assert_eq(run_block_status(&t, bdev, MiB - 10, 20, &extent, 1, &count), -EINVAL);
    cr_assert_eq(run_block_status(&t, bdev, 0, 0, &extent, 1, &count), -EINVAL);
    cr_assert_eq(run_block_status(&t, bdev, 0, 10, &extent, 0, &count), -EINVAL);

    /* Longer than max_transfer (file grown so the range itself is fine). */
    bdev_close(bdev);
    cr_assert_eq(truncate(path, 64 * MiB), 0);
    bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, false);
    uint64_t too_long = (uint64_t)bdev->limits.max_transfer + 4096;
    char *big = malloc(too_long);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 0, too_long, big), -EINVAL);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 0, bdev->limits.max_transfer, big), 0);
    /* Zero-length transfers succeed without touching anything. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, 4096, 0, NULL), 0);
    free(big);
    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(raw, read_only_refuses_every_write)
{
    char *path = temp_file_with_pattern(MiB);
    chmod(path, 0444); /* root ignores this; readonly=true is what is tested */
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, true);
    cr_assert(bdev_is_read_only(bdev));
    char buffer[512];
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, 0, sizeof(buffer), buffer), -EROFS);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, 0, 0, 4096, NULL), -EROFS);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 0, 4096, NULL), -EROFS);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 0, sizeof(buffer), buffer), 0);
    cr_assert_eq((uint8_t)buffer[1], pattern_byte(1));
    uint8_t byte;
    read_file_directly(path, 0, &byte, 1);
    cr_assert_eq(byte, pattern_byte(0));
    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(raw, create_size_makes_a_sparse_file_and_its_directories)
{
    char dir[] = "/tmp/luna-block-create-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/var/nested/demo.img", dir);

    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.create_size_set = true;
    options.create_size = 1ull << 30;
    struct bdev *bdev;
    char *message = NULL;
    cr_assert_eq(bdev_open(&options, &bdev, &message), 0, "%s", message ? message : "");
    cr_assert_eq(bdev->size, 1ull << 30);
    cr_assert_str_eq(bdev->ops->name, "raw");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, 1ull << 30);
    cr_assert_lt(st.st_blocks, 64, "new image is not sparse");
    struct bdev_extent extent;
    uint32_t count;
    cr_assert_eq(run_block_status(&t, bdev, 0, 1ull << 30, &extent, 1, &count), 0);
    cr_assert_eq(extent.flags, BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO);
    cr_assert_eq(extent.length, 1ull << 30);
    bdev_close(bdev);

    /* Opening again keeps the file as it is. */
    cr_assert_eq(truncate(path, 4096), 0);
    cr_assert_eq(bdev_open(&options, &bdev, NULL), 0);
    cr_assert_eq(bdev->size, 4096);
    bdev_close(bdev);

    /* Missing and not to be created: a clear error naming the path. */
    options.path = "/tmp/luna-block-no-such-dir/x.img";
    options.create_size_set = false;
    cr_assert_eq(bdev_open(&options, &bdev, &message), -ENOENT);
    cr_assert_not_null(strstr(message, "/tmp/luna-block-no-such-dir/x.img"));
    free(message);

    unlink(path);
    snprintf(path, sizeof(path), "%s/var/nested", dir);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/var", dir);
    rmdir(path);
    rmdir(dir);
}

Test(raw, read_beyond_end_of_shrunken_file_returns_zeroes)
{
    for (int c = 0; c < 5; c++) {
        for (int e = 0; e < 2; e++) {
            char *path = temp_file_with_pattern(MiB);
            struct bdev *bdev = open_bdev(path, all_cache_modes[c], both_engines[e], false);
            /* Someone shrinks the file under us: the bdev keeps its size, reads past EOF are zeroes. */
            cr_assert_eq(truncate(path, 8192), 0);
            uint8_t *buffer = test_aligned_alloc(65536);
            memset(buffer, 0xff, 65536);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 4096, 65536, buffer), 0);
            cr_assert_eq(buffer[0], pattern_byte(4096));
            cr_assert_eq(buffer[4095], pattern_byte(8191));
            cr_assert(all_zero(buffer + 4096, 65536 - 4096), "cache=%s aio=%s",
                      bdev_cache_mode_name(all_cache_modes[c]), bdev_aio_engine_name(both_engines[e]));
            free(buffer);
            bdev_close(bdev);
            unlink(path);
            free(path);
        }
    }
}

Test(raw, limits_follow_the_cache_mode)
{
    char *path = temp_file(MiB);
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_DEFAULT, false);
    cr_assert_eq(bdev->limits.request_alignment, 1);
    cr_assert_eq(bdev->limits.logical_block_size, 512);
    cr_assert_eq(bdev->limits.max_transfer, 32u << 20);
    cr_assert(bdev->caps & BDEV_CAP_ZERO_INIT);
    cr_assert(bdev->caps & BDEV_CAP_BLOCK_STATUS);
    bdev_close(bdev);
    bdev = open_bdev(path, BDEV_CACHE_NONE, BDEV_AIO_DEFAULT, false);
    uint32_t alignment = bdev->limits.request_alignment;
    cr_assert(alignment >= 512 && (alignment & (alignment - 1)) == 0, "O_DIRECT alignment %u", alignment);
    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(raw, format_errors)
{
    struct bdev_options options;
    bdev_options_init(&options);
    char *path = temp_file(4096);
    options.path = path;
    options.format = BDEV_FORMAT_HOST_DEVICE;
    struct bdev *bdev;
    char *message = NULL;
    cr_assert_eq(bdev_open(&options, &bdev, &message), -ENOTBLK);
    cr_assert_not_null(message);
    free(message);
    message = NULL;
    options.path = "/tmp";
    options.format = BDEV_FORMAT_AUTO;
    cr_assert_lt(bdev_open(&options, &bdev, &message), 0);
    free(message);
    unlink(path);
    free(path);
}
