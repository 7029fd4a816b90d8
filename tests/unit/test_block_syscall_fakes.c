/*
 * What the block layer asks of the kernel, seen by interposing system calls:
 * this executable defines fdatasync, fallocate and close, which the linker
 * prefers to libc's for every caller in the process (the static luna_block
 * included).  They forward to the real system calls and record what the
 * tests need: which descriptor was synced, a filesystem that cannot punch
 * holes, which thread closed a bdev's file.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "block/file_io.h"
#include "block/threadpool.h"
#include "test_block_util.h"

/* ---- the fakes ---- */

static atomic_int watched_fd = -1;
static atomic_int syncs_of_watched;
static atomic_bool punch_hole_unsupported;
static atomic_bool watched_closed;
static pthread_t closer;
static pthread_mutex_t closer_lock = PTHREAD_MUTEX_INITIALIZER;

int fdatasync(int fd)
{
    if (fd == atomic_load(&watched_fd))
        atomic_fetch_add(&syncs_of_watched, 1);
    return (int)syscall(SYS_fdatasync, fd);
}

int fallocate(int fd, int mode, off_t offset, off_t length)
{
    if ((mode & FALLOC_FL_PUNCH_HOLE) && atomic_load(&punch_hole_unsupported)) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return (int)syscall(SYS_fallocate, fd, mode, offset, length);
}

int close(int fd)
{
    if (fd >= 0 && fd == atomic_load(&watched_fd)) {
        pthread_mutex_lock(&closer_lock);
        closer = pthread_self();
        atomic_store(&watched_closed, true);
        atomic_store(&watched_fd, -1);
        pthread_mutex_unlock(&closer_lock);
    }
    return (int)syscall(SYS_close, fd);
}

static int bdev_fd(struct bdev *bdev) { return ((struct file_bdev *)bdev->driver)->fd; }

/* ---- tests ---- */

static struct test_loop t;
static void setup(void)
{
    test_loop_init(&t);
    atomic_store(&watched_fd, -1);
    atomic_store(&syncs_of_watched, 0);
    atomic_store(&punch_hole_unsupported, false);
    atomic_store(&watched_closed, false);
}
static void teardown(void)
{
    test_loop_fini(&t);
    threadpool_shutdown();
}
TestSuite(syscall_fakes, .init = setup, .fini = teardown);

/*
 * writethrough and directsync promise every write is stable on completion;
 * O_DSYNC covers pwrite but not fallocate, so zeroing and discarding must
 * sync.  writeback must not (that is what its flush is for).
 */
Test(syscall_fakes, zero_and_discard_are_stable_in_sync_cache_modes)
{
    static const enum bdev_cache_mode modes[] = {BDEV_CACHE_WRITETHROUGH, BDEV_CACHE_DIRECTSYNC,
                                                 BDEV_CACHE_WRITEBACK, BDEV_CACHE_NONE};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        for (int e = 0; e < 2; e++) {
            enum bdev_cache_mode cache = modes[m];
            bool sync_mode = cache == BDEV_CACHE_WRITETHROUGH || cache == BDEV_CACHE_DIRECTSYNC;
            char *path = temp_file_with_pattern(1 << 20);
            struct bdev *bdev = open_bdev(path, cache, both_engines[e], false);
            atomic_store(&watched_fd, bdev_fd(bdev));

            static const uint32_t zero_flags[] = {0, BDEV_MAY_UNMAP};
            for (int f = 0; f < 2; f++) {
                atomic_store(&syncs_of_watched, 0);
                cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, zero_flags[f], 8192, 8192, NULL), 0);
                cr_assert_eq(atomic_load(&syncs_of_watched) > 0, sync_mode,
                             "write_zeroes flags %u cache=%s aio=%s: %d syncs", zero_flags[f],
                             bdev_cache_mode_name(cache), bdev_aio_engine_name(both_engines[e]),
                             atomic_load(&syncs_of_watched));
            }
            atomic_store(&syncs_of_watched, 0);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 65536, 65536, NULL), 0);
            cr_assert_eq(atomic_load(&syncs_of_watched) > 0, sync_mode, "discard cache=%s aio=%s",
                         bdev_cache_mode_name(cache), bdev_aio_engine_name(both_engines[e]));

            /* FUA asks for it in the other modes. */
            atomic_store(&syncs_of_watched, 0);
            cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, BDEV_FUA, 0, 4096, NULL), 0);
            cr_assert_gt(atomic_load(&syncs_of_watched), 0, "FUA write_zeroes cache=%s",
                         bdev_cache_mode_name(cache));

            atomic_store(&watched_fd, -1);
            bdev_close(bdev);
            unlink(path);
            free(path);
        }
    }
}

/* A filesystem that cannot punch holes: discard cannot promise zeroes. */
Test(syscall_fakes, discard_zeroes_only_where_holes_can_be_punched)
{
    char *path = temp_file_with_pattern(1 << 20);
    atomic_store(&punch_hole_unsupported, true);
    struct bdev *bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_THREADS, false);
    cr_assert_eq(bdev->caps & BDEV_CAP_DISCARD_ZEROES, 0, "claims discard zeroes without punch-hole");

    /* Discard stays advisory: it succeeds, and the data is still there. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_DISCARD, 0, 4096, 8192, NULL), 0);
    uint8_t back[8192];
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 4096, sizeof(back), back), 0);
    for (size_t i = 0; i < sizeof(back); i++)
        cr_assert_eq(back[i], pattern_byte(4096 + i), "byte %zu", i);

    /* write_zeroes still zeroes, without punching. */
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 4096, 8192, NULL), 0);
    cr_assert_eq(run_io(&t, bdev, BDEV_OP_READ, 0, 4096, sizeof(back), back), 0);
    cr_assert(all_zero(back, sizeof(back)));
    bdev_close(bdev);

    /* Where punching works, the capability is there and the probe changed nothing. */
    atomic_store(&punch_hole_unsupported, false);
    unlink(path);
    free(path);
    path = temp_file_with_pattern(12345);
    bdev = open_bdev(path, BDEV_CACHE_WRITEBACK, BDEV_AIO_THREADS, false);
    cr_assert(bdev->caps & BDEV_CAP_DISCARD_ZEROES);
    bdev_close(bdev);
    threadpool_shutdown(); /* the file is closed in the background */
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, 12345);
    uint8_t *contents = malloc(12345);
    read_file_directly(path, 0, contents, 12345);
    for (size_t i = 0; i < 12345; i++)
        cr_assert_eq(contents[i], pattern_byte(i), "byte %zu changed by the probe", i);
    free(contents);
    unlink(path);
    free(path);
}

/*
 * The last reference to an export may drop on an event-loop thread, and
 * close(2) of a file or device opened for writing can flush its cache:
 * the descriptor must be closed on a pool thread.
 */
Test(syscall_fakes, bdev_close_closes_the_file_on_a_pool_thread)
{
    for (int c = 0; c < 5; c++) {
        char *path = temp_file(1 << 20);
        struct bdev *bdev = open_bdev(path, all_cache_modes[c], BDEV_AIO_IO_URING, false);
        uint8_t *block = test_aligned_alloc(4096);
        memset(block, 0x5A, 4096);
        cr_assert_eq(run_io(&t, bdev, BDEV_OP_WRITE, 0, 0, 4096, block), 0);
        atomic_store(&watched_closed, false);
        atomic_store(&watched_fd, bdev_fd(bdev));
        bdev_close(bdev);
        threadpool_shutdown(); /* runs what is queued, then joins */
        cr_assert(atomic_load(&watched_closed), "the file was never closed (cache=%s)",
                  bdev_cache_mode_name(all_cache_modes[c]));
        pthread_mutex_lock(&closer_lock);
        bool on_caller = pthread_equal(closer, pthread_self());
        pthread_mutex_unlock(&closer_lock);
        cr_assert(!on_caller, "bdev_close closed the file on the calling thread (cache=%s)",
                  bdev_cache_mode_name(all_cache_modes[c]));
        uint8_t back[4096];
        read_file_directly(path, 0, back, sizeof(back));
        cr_assert_arr_eq(back, block, 4096);
        free(block);
        unlink(path);
        free(path);
    }
}
