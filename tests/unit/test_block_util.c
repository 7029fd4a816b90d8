#include "test_block_util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

const enum bdev_cache_mode all_cache_modes[5] = {
    BDEV_CACHE_WRITEBACK, BDEV_CACHE_WRITETHROUGH, BDEV_CACHE_NONE,
    BDEV_CACHE_DIRECTSYNC, BDEV_CACHE_UNSAFE,
};
const enum bdev_aio_engine both_engines[2] = {BDEV_AIO_IO_URING, BDEV_AIO_THREADS};

void test_loop_init(struct test_loop *t)
{
    t->loop = ev_loop_new(EVFLAG_AUTO);
    cr_assert_not_null(t->loop);
    t->ctx = aio_context_new(t->loop);
    cr_assert_not_null(t->ctx);
}

void test_loop_fini(struct test_loop *t)
{
    cr_assert_eq(aio_context_pending(t->ctx), 0);
    cr_assert_eq(aio_context_free(t->ctx), 0);
    ev_loop_destroy(t->loop);
}

char *temp_file(uint64_t size)
{
    char *path = strdup("/tmp/luna-block-test-XXXXXX");
    cr_assert_not_null(path);
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
    return path;
}

uint8_t pattern_byte(uint64_t offset) { return (uint8_t)(offset * 7 + offset / 4096 + 1); }

char *temp_file_with_pattern(uint64_t size) { return temp_file_filled(size, pattern_byte); }

char *temp_file_filled(uint64_t size, uint8_t (*byte_at)(uint64_t offset))
{
    char *path = temp_file(size);
    uint8_t *data = malloc(size);
    cr_assert_not_null(data);
    for (uint64_t i = 0; i < size; i++)
        data[i] = byte_at(i);
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pwrite(fd, data, size, 0), (ssize_t)size);
    close(fd);
    free(data);
    return path;
}

struct bdev *open_bdev(const char *path, enum bdev_cache_mode cache, enum bdev_aio_engine aio,
                       bool readonly)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.cache = cache;
    options.aio = aio;
    options.readonly = readonly;
    struct bdev *bdev = NULL;
    char *message = NULL;
    int rc = bdev_open(&options, &bdev, &message);
    cr_assert_eq(rc, 0, "bdev_open(%s, cache=%s, aio=%s): %d %s", path, bdev_cache_mode_name(cache),
                 bdev_aio_engine_name(aio), rc, message ? message : "");
    free(message);
    return bdev;
}

struct sync_request {
    struct bdev_io io;
    int completions;
    pthread_t thread;
};

static __thread bool inside_submit;

static void sync_complete(struct bdev_io *io)
{
    struct sync_request *request = io->opaque;
    cr_assert(!inside_submit, "completion ran inside bdev_submit");
    cr_assert(pthread_equal(request->thread, pthread_self()), "completion on another thread");
    request->completions++;
}

static int submit_and_drain(struct test_loop *t, struct bdev *bdev, struct sync_request *request)
{
    request->io.ctx = t->ctx;
    request->io.complete = sync_complete;
    request->io.opaque = request;
    request->thread = pthread_self();
    inside_submit = true;
    bdev_submit(bdev, &request->io);
    inside_submit = false;
    cr_assert_eq(request->completions, 0, "completed inside bdev_submit");
    aio_context_drain(t->ctx);
    cr_assert_eq(request->completions, 1);
    cr_assert_eq(aio_context_pending(t->ctx), 0);
    return request->io.result;
}

int run_io(struct test_loop *t, struct bdev *bdev, enum bdev_op op, uint32_t flags, uint64_t offset,
           uint64_t length, void *buffer)
{
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    struct sync_request request = {
        .io = {.op = op, .flags = flags, .offset = offset, .length = length},
    };
    if (buffer) {
        request.io.iov = &iov;
        request.io.iovcnt = 1;
    }
    return submit_and_drain(t, bdev, &request);
}

int run_block_status(struct test_loop *t, struct bdev *bdev, uint64_t offset, uint64_t length,
                     struct bdev_extent *extents, uint32_t max_extents, uint32_t *nr_extents)
{
    struct sync_request request = {
        .io = {.op = BDEV_OP_BLOCK_STATUS, .offset = offset, .length = length, .extents = extents,
               .max_extents = max_extents},
    };
    int rc = submit_and_drain(t, bdev, &request);
    *nr_extents = request.io.nr_extents;
    return rc;
}

void read_file_directly(const char *path, uint64_t offset, void *buffer, uint64_t length)
{
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pread(fd, buffer, length, (off_t)offset), (ssize_t)length);
    close(fd);
}

void write_file_directly(const char *path, uint64_t offset, const void *buffer, uint64_t length)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pwrite(fd, buffer, length, (off_t)offset), (ssize_t)length);
    close(fd);
}

bool all_zero(const void *buffer, uint64_t length)
{
    const uint8_t *bytes = buffer;
    for (uint64_t i = 0; i < length; i++) {
        if (bytes[i])
            return false;
    }
    return true;
}

void *test_aligned_alloc(size_t size)
{
    void *buffer = NULL;
    cr_assert_eq(posix_memalign(&buffer, 4096, size ? size : 1), 0);
    return buffer;
}
