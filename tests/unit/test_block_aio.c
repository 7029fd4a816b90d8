/* aio_context: deferral, cross-thread completion, the pool, the ring, loop liveness. */
#include <criterion/criterion.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio_internal.h"
#include "block/bdev.h"
#include "block/threadpool.h"
#include "test_block_util.h"

static struct test_loop t;
static void setup(void) { test_loop_init(&t); }
static void teardown(void)
{
    test_loop_fini(&t);
    threadpool_shutdown();
}
TestSuite(aio, .init = setup, .fini = teardown);

static int calls[8];
static int call_count;
static void record_call(void *arg) { calls[call_count++] = (int)(intptr_t)arg; }

Test(aio, defer_runs_later_in_order)
{
    call_count = 0;
    cr_assert_eq(aio_context_defer(t.ctx, record_call, (void *)1), 0);
    cr_assert_eq(aio_context_defer(t.ctx, record_call, (void *)2), 0);
    cr_assert_eq(call_count, 0, "deferred call ran inline");
    ev_run(t.loop, EVRUN_NOWAIT);
    cr_assert_eq(call_count, 2);
    cr_assert_eq(calls[0], 1);
    cr_assert_eq(calls[1], 2);
}

static void defer_again(void *arg)
{
    record_call(arg);
    if ((intptr_t)arg < 3)
        aio_context_defer(t.ctx, defer_again, (void *)((intptr_t)arg + 1));
}

Test(aio, defer_from_a_deferred_call_waits_for_the_next_iteration)
{
    call_count = 0;
    aio_context_defer(t.ctx, defer_again, (void *)1);
    ev_run(t.loop, EVRUN_NOWAIT);
    cr_assert_eq(call_count, 1);
    ev_run(t.loop, EVRUN_NOWAIT);
    cr_assert_eq(call_count, 2);
    ev_run(t.loop, EVRUN_NOWAIT);
    cr_assert_eq(call_count, 3);
}

Test(aio, idle_context_does_not_keep_the_loop_alive)
{
    /* With nothing pending, ev_run must return rather than block forever. */
    ev_run(t.loop, 0);
    cr_assert_eq(aio_context_pending(t.ctx), 0);
    aio_context_drain(t.ctx); /* nothing pending: returns at once */
}

struct counted {
    struct bdev_io io;
    int completions;
    pthread_t completed_on;
};

static void counted_complete(struct bdev_io *io)
{
    struct counted *c = (struct counted *)io;
    c->completions++;
    c->completed_on = pthread_self();
}

Test(aio, complete_defers_and_counts_pending)
{
    struct counted c = {.io = {.ctx = t.ctx, .complete = counted_complete}};
    aio_request_started(&c.io);
    cr_assert_eq(aio_context_pending(t.ctx), 1);
    aio_context_complete(t.ctx, &c.io, -EIO);
    cr_assert_eq(c.completions, 0);
    aio_context_drain(t.ctx);
    cr_assert_eq(c.completions, 1);
    cr_assert_eq(c.io.result, -EIO);
    cr_assert_eq(aio_context_pending(t.ctx), 0);
}

static int completions_seen_by_flush = -1;
static void flush_like_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void)loop;
    (void)revents;
    completions_seen_by_flush = ((struct counted *)watcher->data)->completions;
}

/*
 * An answer known inside bdev_submit (aio_context_complete) must reach the
 * server's reply flush, a default-priority prepare watcher, in the same loop
 * pass: completing it only after poll would cost every such request a
 * second trip through the loop.
 */
Test(aio, complete_runs_before_the_reply_flush_of_the_same_pass)
{
    struct counted c = {.io = {.ctx = t.ctx, .complete = counted_complete}};
    ev_prepare flush;
    ev_prepare_init(&flush, flush_like_cb);
    flush.data = &c;
    ev_prepare_start(t.loop, &flush);
    completions_seen_by_flush = -1;
    aio_request_started(&c.io);
    aio_context_complete(t.ctx, &c.io, 0);
    cr_assert_eq(c.completions, 0, "completed inside the caller");
    ev_run(t.loop, EVRUN_NOWAIT);
    ev_prepare_stop(t.loop, &flush);
    cr_assert_eq(completions_seen_by_flush, 1, "the flush ran before the completion");
    cr_assert_eq(c.completions, 1);
    cr_assert_eq(aio_context_pending(t.ctx), 0);
}

static void *complete_later(void *arg)
{
    usleep(20000); /* the loop is blocked by now */
    aio_context_complete_from_any_thread(arg, 7);
    return NULL;
}

Test(aio, completion_from_another_thread_runs_on_the_loop)
{
    struct counted c = {.io = {.ctx = t.ctx, .complete = counted_complete}};
    aio_request_started(&c.io);
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, complete_later, &c.io), 0);
    aio_context_drain(t.ctx);
    pthread_join(thread, NULL);
    cr_assert_eq(c.completions, 1);
    cr_assert_eq(c.io.result, 7);
    cr_assert(pthread_equal(c.completed_on, pthread_self()));
}

struct pool_probe {
    struct aio_work work;
    pthread_t ran_on, done_on;
    int done;
};

static void probe_run(struct aio_work *work)
{
    ((struct pool_probe *)work)->ran_on = pthread_self();
}

static void probe_done(struct aio_work *work)
{
    struct pool_probe *p = (struct pool_probe *)work;
    p->done_on = pthread_self();
    p->done++;
}

Test(aio, pool_work_runs_elsewhere_and_finishes_on_the_loop)
{
    enum { COUNT = 100 };
    struct pool_probe probes[COUNT] = {0};
    for (int i = 0; i < COUNT; i++) {
        probes[i].work.run = probe_run;
        probes[i].work.done = probe_done;
        cr_assert_eq(aio_context_run_in_pool(t.ctx, &probes[i].work), 0);
    }
    /* Work items are not requests, so they do not keep the loop alive: poll for up to 10 s. */
    for (int spins = 0; spins < 10000; spins++) {
        int finished = 0;
        for (int i = 0; i < COUNT; i++)
            finished += probes[i].done;
        if (finished == COUNT)
            break;
        ev_run(t.loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    for (int i = 0; i < COUNT; i++) {
        cr_assert_eq(probes[i].done, 1);
        cr_assert(!pthread_equal(probes[i].ran_on, pthread_self()));
        cr_assert(pthread_equal(probes[i].done_on, pthread_self()));
    }
}

struct nop_op {
    struct aio_uring_op op;
    int result;
    int done;
};

static void nop_prepare(struct aio_uring_op *op, struct io_uring_sqe *sqe)
{
    (void)op;
    io_uring_prep_nop(sqe);
}

static void nop_done(struct aio_uring_op *op, int result)
{
    struct nop_op *n = (struct nop_op *)op;
    n->result = result;
    n->done++;
}

Test(aio, ring_takes_more_operations_than_it_has_room_for)
{
    if (!aio_uring_supported())
        cr_skip_test("io_uring not available");
    cr_assert_not_null(aio_context_uring(t.ctx));
    enum { COUNT = 2000 };
    struct nop_op *ops = calloc(COUNT, sizeof(*ops));
    for (int i = 0; i < COUNT; i++) {
        ops[i].op.prepare = nop_prepare;
        ops[i].op.done = nop_done;
        aio_uring_submit(t.ctx, &ops[i].op);
    }
    for (int spins = 0; spins < 10000; spins++) {
        int finished = 0;
        for (int i = 0; i < COUNT; i++)
            finished += ops[i].done;
        if (finished == COUNT)
            break;
        ev_run(t.loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    for (int i = 0; i < COUNT; i++) {
        cr_assert_eq(ops[i].done, 1, "op %d", i);
        cr_assert_eq(ops[i].result, 0);
    }
    free(ops);
}

Test(aio, free_with_requests_pending_refuses)
{
    struct counted c = {.io = {.ctx = t.ctx, .complete = counted_complete}};
    aio_request_started(&c.io);
    cr_assert_eq(aio_context_free(t.ctx), -EBUSY);
    /* Still usable: the request completes through it. */
    aio_context_complete(t.ctx, &c.io, 0);
    aio_context_drain(t.ctx);
    cr_assert_eq(c.completions, 1);
}

Test(aio, request_records_are_recycled_by_their_context)
{
    struct test_loop other;
    test_loop_init(&other);
    unsigned char *first = aio_record_get(t.ctx);
    cr_assert_not_null(first);
    memset(first, 0xAB, AIO_RECORD_SIZE);
    aio_record_put(t.ctx, first);

    unsigned char *elsewhere = aio_record_get(other.ctx);
    cr_assert_neq(elsewhere, first, "a record went to another context");
    unsigned char *again = aio_record_get(t.ctx);
    cr_assert_eq(again, first, "the spare record was not reused");
    for (size_t i = 0; i < AIO_RECORD_SIZE; i++)
        cr_assert_eq(again[i], 0, "byte %zu of a reused record not cleared", i);
    aio_record_put(t.ctx, again);
    aio_record_put(other.ctx, elsewhere);
    test_loop_fini(&other);
}

/* The server's reply flush: a prepare watcher of default priority. */
struct flush_probe {
    ev_prepare watcher;
    struct nop_op *nop;
    int saw_done;
};

static void flush_probe_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct flush_probe *probe = (struct flush_probe *)watcher;
    probe->saw_done = probe->nop->done;
}

/*
 * An operation that completes while it is submitted (a page-cache hit; here
 * a NOP) must reach the reply flush of the same loop iteration, not wait
 * for another round through poll.
 */
Test(aio, completion_ready_at_submission_reaches_this_iterations_flush)
{
    if (!aio_uring_supported())
        cr_skip_test("io_uring not available");
    cr_assert_not_null(aio_context_uring(t.ctx));
    struct nop_op nop = {.op = {.prepare = nop_prepare, .done = nop_done}};
    struct flush_probe probe = {.nop = &nop};
    ev_prepare_init(&probe.watcher, flush_probe_cb);
    ev_prepare_start(t.loop, &probe.watcher);
    aio_uring_submit(t.ctx, &nop.op);
    ev_run(t.loop, EVRUN_NOWAIT);
    cr_assert_eq(nop.done, 1);
    cr_assert_eq(probe.saw_done, 1, "the flush ran before the completion");
    ev_prepare_stop(t.loop, &probe.watcher);
}

Test(aio, option_names_round_trip)
{
    enum bdev_cache_mode mode;
    for (int m = BDEV_CACHE_WRITEBACK; m <= BDEV_CACHE_UNSAFE; m++) {
        cr_assert_eq(bdev_cache_mode_parse(bdev_cache_mode_name(m), &mode), 0);
        cr_assert_eq((int)mode, m);
    }
    cr_assert_eq(bdev_cache_mode_parse("none", &mode), 0);
    cr_assert_eq(mode, BDEV_CACHE_NONE);
    cr_assert_eq(bdev_cache_mode_parse("bogus", &mode), -EINVAL);
    enum bdev_aio_engine engine;
    cr_assert_eq(bdev_aio_engine_parse("io_uring", &engine), 0);
    cr_assert_eq(engine, BDEV_AIO_IO_URING);
    cr_assert_eq(bdev_aio_engine_parse("threads", &engine), 0);
    cr_assert_eq(engine, BDEV_AIO_THREADS);
    cr_assert_str_eq(bdev_aio_engine_name(BDEV_AIO_DEFAULT), "default");
    cr_assert_eq(bdev_aio_engine_parse("native", &engine), -EINVAL);
    enum bdev_format format;
    cr_assert_eq(bdev_format_parse("host_device", &format), 0);
    cr_assert_eq(format, BDEV_FORMAT_HOST_DEVICE);
    cr_assert_eq(bdev_format_parse("raw", &format), 0);
    cr_assert_eq(format, BDEV_FORMAT_RAW);
    cr_assert_str_eq(bdev_format_name(BDEV_FORMAT_AUTO), "auto");
    cr_assert_eq(bdev_format_parse("vmdk", &format), 0);
    cr_assert_eq(format, BDEV_FORMAT_VMDK);
    cr_assert_eq(bdev_format_parse("qed", &format), -EINVAL);

    struct bdev_options options;
    bdev_options_init(&options);
    cr_assert_eq(options.cache, BDEV_CACHE_WRITEBACK);
    cr_assert_eq(options.aio, BDEV_AIO_DEFAULT);
    cr_assert_eq(options.format, BDEV_FORMAT_AUTO);
    cr_assert(options.discard);
    cr_assert(!options.readonly);
    cr_assert(!options.create_size_set);
}
