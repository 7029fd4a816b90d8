/* O_DIRECT: bouncing, and read-modify-write that never loses a concurrent writer's bytes. */
#include <criterion/criterion.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/range_lock.h"
#include "block/threadpool.h"
#include "test_block_util.h"

static struct test_loop t;
static void setup(void) { test_loop_init(&t); }
static void teardown(void)
{
    test_loop_fini(&t);
    threadpool_shutdown();
}
TestSuite(direct, .init = setup, .fini = teardown);

static int granted_count;
static void on_granted(struct range_lock_entry *entry)
{
    (void)entry;
    granted_count++;
}

Test(direct, range_lock_orders_conflicting_entries)
{
    struct range_lock lock;
    cr_assert_eq(range_lock_init(&lock), 0);
    struct range_lock_entry shared1 = {.start = 0, .end = 4096, .granted = on_granted};
    struct range_lock_entry shared2 = {.start = 0, .end = 8192, .granted = on_granted};
    struct range_lock_entry exclusive = {.start = 4096, .end = 8192, .exclusive = true, .granted = on_granted};
    struct range_lock_entry elsewhere = {.start = 8192, .end = 12288, .exclusive = true, .granted = on_granted};
    struct range_lock_entry after = {.start = 4096, .end = 4097, .granted = on_granted};
    granted_count = 0;

    cr_assert(range_lock_acquire(&lock, &shared1));
    cr_assert(range_lock_acquire(&lock, &shared2), "shared entries do not conflict");
    cr_assert(!range_lock_acquire(&lock, &exclusive), "overlaps shared2");
    cr_assert(range_lock_acquire(&lock, &elsewhere), "no overlap");
    cr_assert(!range_lock_acquire(&lock, &after), "waits behind the earlier exclusive entry");

    range_lock_release(&lock, &shared1);
    cr_assert_eq(granted_count, 0);
    range_lock_release(&lock, &shared2);
    cr_assert_eq(granted_count, 1, "exclusive granted, not yet the one behind it");
    range_lock_release(&lock, &exclusive);
    cr_assert_eq(granted_count, 2);
    range_lock_release(&lock, &after);
    range_lock_release(&lock, &elsewhere);
    range_lock_destroy(&lock);
}

/* Reference model: an entry waits while an earlier live entry conflicts with it. */
struct model_entry {
    struct range_lock_entry entry;
    bool live, granted;
};

static void model_granted(struct range_lock_entry *entry) { ((struct model_entry *)entry)->granted = true; }

static bool model_conflict(const struct range_lock_entry *a, const struct range_lock_entry *b)
{
    return (a->exclusive || b->exclusive) && a->start < b->end && b->start < a->end;
}

Test(direct, range_lock_matches_a_reference_model)
{
    enum { COUNT = 400 };
    struct model_entry *entries = calloc(COUNT, sizeof(*entries));
    struct range_lock lock;
    cr_assert_eq(range_lock_init(&lock), 0);
    srand(12345);
    int next = 0;
    for (int step = 0; step < 4 * COUNT; step++) {
        bool add = next < COUNT && (rand() % 3 != 0 || step < 8);
        if (add) {
            struct model_entry *m = &entries[next++];
            uint64_t start = (uint64_t)(rand() % 64) * 512;
            /* Mostly shared, as aligned writes are; sometimes exclusive. */
            m->entry = (struct range_lock_entry){.start = start, .end = start + 512 * (1 + rand() % 4),
                                                 .exclusive = rand() % 5 == 0, .granted = model_granted};
            m->live = true;
            m->granted = range_lock_acquire(&lock, &m->entry);
        } else {
            /* Release a random granted entry, if any. */
            int candidates[COUNT], n = 0;
            for (int i = 0; i < next; i++)
                if (entries[i].live && entries[i].granted)
                    candidates[n++] = i;
            if (n == 0)
                continue;
            struct model_entry *m = &entries[candidates[rand() % n]];
            m->live = false;
            range_lock_release(&lock, &m->entry);
        }
        for (int i = 0; i < next; i++) {
            if (!entries[i].live)
                continue;
            bool waits = false;
            for (int j = 0; j < i && !waits; j++)
                waits = entries[j].live && model_conflict(&entries[j].entry, &entries[i].entry);
            cr_assert_eq(entries[i].granted, !waits, "step %d entry %d: granted %d, model says waits %d", step, i,
                         entries[i].granted, waits);
        }
    }
    /* Released in arrival order, each remaining entry is granted by the time its turn comes. */
    for (int i = 0; i < next; i++)
        if (entries[i].live) {
            cr_assert(entries[i].granted);
            range_lock_release(&lock, &entries[i].entry);
        }
    range_lock_destroy(&lock);
    free(entries);
}

struct byte_write {
    struct bdev_io io;
    struct iovec iov;
    uint8_t *buffer;
    int completions;
};

static void byte_write_done(struct bdev_io *io) { ((struct byte_write *)io)->completions++; }

/* Many small unaligned writes into the same two blocks, all in flight together. */
static void check_concurrent_unaligned(enum bdev_cache_mode cache, enum bdev_aio_engine aio)
{
    char *path = temp_file(65536);
    struct bdev *bdev = open_bdev(path, cache, aio, false);
    cr_assert_geq(bdev->limits.request_alignment, 512);

    enum { COUNT = 128 };
    struct byte_write *writes = calloc(COUNT, sizeof(*writes));
    for (int i = 0; i < COUNT; i++) {
        struct byte_write *w = &writes[i];
        w->buffer = malloc(3);
        memset(w->buffer, 0x80 | i, 3);
        w->iov = (struct iovec){w->buffer, 3};
        /* 3 bytes every 61 bytes over [100, 7900): crosses the 4096 boundary too. */
        w->io = (struct bdev_io){.op = BDEV_OP_WRITE, .offset = 100 + (uint64_t)i * 61, .length = 3,
                                 .iov = &w->iov, .iovcnt = 1, .ctx = t.ctx, .complete = byte_write_done};
        bdev_submit(bdev, &w->io);
    }
    aio_context_drain(t.ctx);

    uint8_t contents[8192];
    read_file_directly(path, 0, contents, sizeof(contents));
    for (int i = 0; i < COUNT; i++) {
        cr_assert_eq(writes[i].completions, 1);
        cr_assert_eq(writes[i].io.result, 0);
        uint64_t at = 100 + (uint64_t)i * 61;
        for (int j = 0; j < 3; j++)
            cr_assert_eq(contents[at + j], 0x80 | i, "write %d lost (cache=%s aio=%s)", i,
                         bdev_cache_mode_name(cache), bdev_aio_engine_name(aio));
        cr_assert_eq(contents[at + 3], 0, "gap after write %d", i);
        free(writes[i].buffer);
    }
    free(writes);
    bdev_close(bdev);
    unlink(path);
    free(path);
}

Test(direct, concurrent_unaligned_writes_to_one_block_all_survive)
{
    check_concurrent_unaligned(BDEV_CACHE_NONE, BDEV_AIO_IO_URING);
    check_concurrent_unaligned(BDEV_CACHE_NONE, BDEV_AIO_THREADS);
    check_concurrent_unaligned(BDEV_CACHE_DIRECTSYNC, BDEV_AIO_IO_URING);
}

Test(direct, overlapping_writes_apply_in_submission_order)
{
    for (int e = 0; e < 2; e++) {
        char *path = temp_file(65536);
        struct bdev *bdev = open_bdev(path, BDEV_CACHE_NONE, both_engines[e], false);
        uint8_t *whole1 = test_aligned_alloc(4096), *whole2 = test_aligned_alloc(4096);
        memset(whole1, 0x11, 4096);
        memset(whole2, 0x33, 4096);
        uint8_t middle[10];
        memset(middle, 0x22, sizeof(middle));
        struct byte_write w[4] = {0};
        struct {
            uint64_t offset, length;
            uint8_t *data;
        } plan[4] = {{0, 4096, whole1}, {100, 10, middle}, {4096, 4096, whole2}, {4090, 10, middle}};
        for (int i = 0; i < 4; i++) {
            w[i].iov = (struct iovec){plan[i].data, plan[i].length};
            w[i].io = (struct bdev_io){.op = BDEV_OP_WRITE, .offset = plan[i].offset, .length = plan[i].length,
                                       .iov = &w[i].iov, .iovcnt = 1, .ctx = t.ctx,
                                       .complete = byte_write_done};
            bdev_submit(bdev, &w[i].io);
        }
        aio_context_drain(t.ctx);
        uint8_t contents[8192];
        read_file_directly(path, 0, contents, sizeof(contents));
        for (int i = 0; i < 8192; i++) {
            uint8_t expect = i < 4096 ? 0x11 : 0x33;
            if ((i >= 100 && i < 110) || (i >= 4090 && i < 4100))
                expect = 0x22;
            cr_assert_eq(contents[i], expect, "byte %d (aio=%s)", i, bdev_aio_engine_name(both_engines[e]));
        }
        free(whole1);
        free(whole2);
        bdev_close(bdev);
        unlink(path);
        free(path);
    }
}

Test(direct, vectored_unaligned_buffers_bounce)
{
    char *path = temp_file_with_pattern(65536);
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_NONE, BDEV_AIO_IO_URING, false);
    /* Aligned range, but segments of odd sizes and addresses. */
    char *a = malloc(1000), *b = malloc(3096 + 1);
    memset(a, 'a', 1000);
    memset(b + 1, 'b', 3096);
    struct iovec iov[2] = {{a, 1000}, {b + 1, 3096}};
    struct byte_write w = {.io = {.op = BDEV_OP_WRITE, .offset = 8192, .length = 4096, .iov = iov, .iovcnt = 2,
                                  .ctx = t.ctx, .complete = byte_write_done}};
    bdev_submit(bdev, &w.io);
    aio_context_drain(t.ctx);
    cr_assert_eq(w.io.result, 0);
    char contents[4098];
    read_file_directly(path, 8191, contents, sizeof(contents));
    cr_assert_eq((uint8_t)contents[0], pattern_byte(8191));
    cr_assert_eq(contents[1], 'a');
    cr_assert_eq(contents[1000], 'a');
    cr_assert_eq(contents[1001], 'b');
    cr_assert_eq(contents[4096], 'b');
    cr_assert_eq((uint8_t)contents[4097], pattern_byte(12288));

    memset(a, 0, 1000);
    memset(b, 0, 3097);
    w.io.op = BDEV_OP_READ;
    w.completions = 0;
    bdev_submit(bdev, &w.io);
    aio_context_drain(t.ctx);
    cr_assert_eq(w.io.result, 0);
    cr_assert_eq(a[0], 'a');
    cr_assert_eq(a[999], 'a');
    cr_assert_eq(b[1], 'b');
    cr_assert_eq(b[3096], 'b');
    free(a);
    free(b);
    bdev_close(bdev);
    unlink(path);
    free(path);
}

/*
 * An image whose size is not a multiple of the O_DIRECT alignment: writes
 * into its last, partial block must not grow the file past the bdev size
 * (a read-modify-write of the whole block would).
 */
Test(direct, writes_to_the_partial_last_block_keep_the_size)
{
    enum { SIZE = 10000 };
    static const enum bdev_cache_mode modes[] = {BDEV_CACHE_NONE, BDEV_CACHE_DIRECTSYNC};
    static const struct {
        uint64_t offset, length;
        uint32_t flags;
    } writes[] = {{9990, 10, 0}, {8000, 300, 0}, {5000, 3, 0}, {8192, 1808, BDEV_FUA}, {0, SIZE, 0}, {9999, 1, 0}};
    for (int m = 0; m < 2; m++) {
        for (int e = 0; e < 2; e++) {
            char *path = temp_file_with_pattern(SIZE);
            struct bdev *bdev = open_bdev(path, modes[m], both_engines[e], false);
            cr_assert_eq(bdev->size, SIZE);
            uint8_t shadow[SIZE], data[SIZE], back[SIZE];
            for (int i = 0; i < SIZE; i++)
                shadow[i] = pattern_byte((uint64_t)i);
            for (size_t w = 0; w < sizeof(writes) / sizeof(writes[0]); w++) {
                for (uint64_t i = 0; i < writes[w].length; i++)
                    data[i] = (uint8_t)(0x40 + w * 17 + i);
                cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, writes[w].flags, writes[w].offset,
                                    writes[w].length, data),
                             0);
                memcpy(shadow + writes[w].offset, data, writes[w].length);

                struct stat st;
                cr_assert_eq(stat(path, &st), 0);
                cr_assert_eq(st.st_size, SIZE, "write %zu grew the file to %lld (cache=%s aio=%s)", w,
                             (long long)st.st_size, bdev_cache_mode_name(modes[m]),
                             bdev_aio_engine_name(both_engines[e]));
                memset(back, 0, sizeof(back));
                cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 0, SIZE, back), 0);
                cr_assert_arr_eq(back, shadow, SIZE, "read through the bdev after write %zu", w);
                read_file_directly(path, 0, back, SIZE);
                cr_assert_arr_eq(back, shadow, SIZE, "file after write %zu", w);
            }
            /* Zeroing the tail the slow way goes through the same path. */
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, 0, 9000, 1000, NULL), 0);
            struct stat st;
            cr_assert_eq(stat(path, &st), 0);
            cr_assert_eq(st.st_size, SIZE);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_FLUSH, 0, 0, 0, NULL), 0);
            bdev_close(bdev);
            unlink(path);
            free(path);
        }
    }
}
