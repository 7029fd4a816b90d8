/* Many requests in flight, and several threads sharing one bdev. */
#include <criterion/criterion.h>
#include <ev.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/threadpool.h"
#include "test_block_util.h"

static void fini(void) { threadpool_shutdown(); }
TestSuite(concurrency, .fini = fini);

struct tracked {
    struct bdev_io io;
    struct iovec iov;
    uint8_t *buffer;
    int completions;
    bool wrong_thread;
    pthread_t owner;
};

static __thread bool inside_submit;
static __thread int completed_inside_submit;

static void tracked_done(struct bdev_io *io)
{
    struct tracked *r = (struct tracked *)io;
    r->completions++;
    if (!pthread_equal(r->owner, pthread_self()))
        r->wrong_thread = true;
    if (inside_submit)
        completed_inside_submit++;
}

enum { IN_FLIGHT = 200, BLOCK = 4096 };

/* Writes then reads IN_FLIGHT blocks at base, all at once; returns failures as a count. */
static int burst(struct test_loop *t, struct bdev *bdev, uint64_t base, uint8_t seed, uint64_t *max_pending)
{
    struct tracked *requests = calloc(IN_FLIGHT, sizeof(*requests));
    int failures = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < IN_FLIGHT; i++) {
            struct tracked *r = &requests[i];
            if (pass == 0) {
                r->buffer = test_aligned_alloc(BLOCK);
                memset(r->buffer, (uint8_t)(seed + i), BLOCK);
            } else {
                memset(r->buffer, 0, BLOCK);
            }
            r->iov = (struct iovec){r->buffer, BLOCK};
            r->completions = 0;
            r->owner = pthread_self();
            r->io = (struct bdev_io){.op = pass == 0 ? BDEV_OP_WRITE : BDEV_OP_READ, .offset = base + i * BLOCK,
                                     .length = BLOCK, .iov = &r->iov, .iovcnt = 1, .ctx = t->ctx,
                                     .complete = tracked_done};
            inside_submit = true;
            bdev_submit(bdev, &r->io);
            inside_submit = false;
        }
        if (aio_context_pending(t->ctx) > *max_pending)
            *max_pending = aio_context_pending(t->ctx);
        aio_context_drain(t->ctx);
        for (int i = 0; i < IN_FLIGHT; i++) {
            struct tracked *r = &requests[i];
            if (r->completions != 1 || r->io.result != 0 || r->wrong_thread)
                failures++;
            if (pass == 1) {
                for (int j = 0; j < BLOCK; j++) {
                    if (r->buffer[j] != (uint8_t)(seed + i)) {
                        failures++;
                        break;
                    }
                }
            }
        }
    }
    for (int i = 0; i < IN_FLIGHT; i++)
        free(requests[i].buffer);
    free(requests);
    return failures + completed_inside_submit;
}

Test(concurrency, two_hundred_requests_in_flight)
{
    static const enum bdev_cache_mode caches[] = {BDEV_CACHE_WRITEBACK, BDEV_CACHE_NONE};
    for (int c = 0; c < 2; c++) {
        for (int e = 0; e < 2; e++) {
            char *path = temp_file(IN_FLIGHT * BLOCK);
            struct test_loop t;
            test_loop_init(&t);
            struct bdev *bdev = open_bdev(path, caches[c], both_engines[e], false);
            uint64_t max_pending = 0;
            cr_assert_eq(burst(&t, bdev, 0, (uint8_t)(c * 2 + e), &max_pending), 0, "cache=%s aio=%s",
                         bdev_cache_mode_name(caches[c]), bdev_aio_engine_name(both_engines[e]));
            cr_assert_eq(max_pending, IN_FLIGHT);
            bdev_close(bdev);
            test_loop_fini(&t);
            unlink(path);
            free(path);
        }
    }
}

struct worker_args {
    struct bdev *bdev;
    uint64_t base;
    uint8_t seed;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker_args *args = arg;
    struct test_loop t;
    t.loop = ev_loop_new(EVFLAG_AUTO);
    t.ctx = aio_context_new(t.loop);
    uint64_t max_pending = 0;
    for (int round = 0; round < 3; round++)
        args->failures += burst(&t, args->bdev, args->base, (uint8_t)(args->seed + round), &max_pending);
    aio_context_free(t.ctx);
    ev_loop_destroy(t.loop);
    return NULL;
}

Test(concurrency, threads_with_their_own_loops_share_a_bdev)
{
    static const enum bdev_cache_mode caches[] = {BDEV_CACHE_WRITEBACK, BDEV_CACHE_NONE};
    for (int c = 0; c < 2; c++) {
        for (int e = 0; e < 2; e++) {
            char *path = temp_file(2 * IN_FLIGHT * BLOCK);
            struct bdev *bdev = open_bdev(path, caches[c], both_engines[e], false);
            struct worker_args args[2] = {{bdev, 0, 10, 0}, {bdev, IN_FLIGHT * BLOCK, 100, 0}};
            pthread_t threads[2];
            for (int i = 0; i < 2; i++)
                cr_assert_eq(pthread_create(&threads[i], NULL, worker_main, &args[i]), 0);
            for (int i = 0; i < 2; i++)
                pthread_join(threads[i], NULL);
            cr_assert_eq(args[0].failures, 0);
            cr_assert_eq(args[1].failures, 0);
            bdev_close(bdev);
            unlink(path);
            free(path);
        }
    }
}

/* Unaligned O_DIRECT writes to the same blocks from two threads at once. */
struct byte_args {
    struct bdev *bdev;
    int parity;
    int failures;
};

static void *byte_writer(void *arg)
{
    struct byte_args *args = arg;
    struct test_loop t;
    t.loop = ev_loop_new(EVFLAG_AUTO);
    t.ctx = aio_context_new(t.loop);
    enum { COUNT = 100 };
    struct tracked *requests = calloc(COUNT, sizeof(*requests));
    for (int i = 0; i < COUNT; i++) {
        struct tracked *r = &requests[i];
        r->buffer = malloc(1);
        r->buffer[0] = (uint8_t)(args->parity ? 0xB0 : 0xA0);
        r->iov = (struct iovec){r->buffer, 1};
        r->owner = pthread_self();
        r->io = (struct bdev_io){.op = BDEV_OP_WRITE, .offset = (uint64_t)(i * 2 + args->parity) * 41,
                                 .length = 1, .iov = &r->iov, .iovcnt = 1, .ctx = t.ctx, .complete = tracked_done};
        bdev_submit(args->bdev, &r->io);
    }
    aio_context_drain(t.ctx);
    for (int i = 0; i < COUNT; i++) {
        if (requests[i].completions != 1 || requests[i].io.result != 0 || requests[i].wrong_thread)
            args->failures++;
        free(requests[i].buffer);
    }
    free(requests);
    aio_context_free(t.ctx);
    ev_loop_destroy(t.loop);
    return NULL;
}

Test(concurrency, unaligned_direct_writes_from_two_threads_to_the_same_blocks)
{
    for (int e = 0; e < 2; e++) {
        char *path = temp_file(65536);
        struct bdev *bdev = open_bdev(path, BDEV_CACHE_NONE, both_engines[e], false);
        struct byte_args args[2] = {{bdev, 0, 0}, {bdev, 1, 0}};
        pthread_t threads[2];
        for (int i = 0; i < 2; i++)
            cr_assert_eq(pthread_create(&threads[i], NULL, byte_writer, &args[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(threads[i], NULL);
        cr_assert_eq(args[0].failures + args[1].failures, 0);
        uint8_t contents[200 * 41];
        read_file_directly(path, 0, contents, sizeof(contents));
        for (int k = 0; k < 200; k++)
            cr_assert_eq(contents[k * 41], (k % 2) ? 0xB0 : 0xA0, "byte %d lost (aio=%s)", k * 41,
                         bdev_aio_engine_name(both_engines[e]));
        bdev_close(bdev);
        unlink(path);
        free(path);
    }
}
