#include "block/aio.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "block/aio_internal.h"
#include "block/bdev.h"

#define URING_QUEUE_DEPTH 256

/* Spare request records kept per context: enough for a few connections at queue depth 32. */
#define RECORD_CACHE_MAX 256

struct record {
    struct record *next;
};

struct deferred_call {
    struct deferred_call *next;
    void (*fn)(void *arg);
    void *arg;
};

enum uring_state {
    URING_UNTRIED,
    URING_READY,
    URING_UNUSABLE,
};

struct aio_context {
    struct ev_loop *loop;
    uint64_t pending;

    /*
     * Owning-thread work for later: run by the early prepare watcher before the
     * loop blocks; ev_idle keeps the loop from blocking while some is left.
     */
    struct bdev_io *deferred_head, *deferred_tail;
    struct deferred_call *calls_head, *calls_tail;
    ev_idle kick;
    bool ran_this_pass; /* run_due ran the lists this iteration; kick_cb skips once */

    /* Handed over by other threads. */
    pthread_mutex_t remote_lock;
    struct bdev_io *remote_io_head, *remote_io_tail;
    struct aio_work *remote_work_head, *remote_work_tail;
    ev_async remote_wakeup;

    /*
     * io_uring, created on first use.  The loop watches the ring's own file
     * descriptor, readable while CQEs wait: once they are reaped it is quiet
     * again, with no eventfd to read and reset.
     */
    enum uring_state uring_state;
    struct io_uring ring;
    ev_io uring_watcher;
    ev_prepare submit_early; /* before the server's reply flush */
    ev_prepare submit_late;  /* after it: what the flush queued */
    unsigned uring_inflight; /* SQEs handed out and not yet reaped */
    unsigned uring_capacity; /* bound on uring_inflight: the CQ never overflows */
    struct aio_uring_op *backlog_head, *backlog_tail;
    bool submit_retry;

    struct record *spare_records;
    unsigned spare_record_count;

    struct aio_context_stats stats;
};

static void kick_start(struct aio_context *ctx)
{
    if (!ev_is_active(&ctx->kick))
        ev_idle_start(ctx->loop, &ctx->kick);
}

/* While requests are pending the loop must not think it has nothing to wait for. */
static void pending_add(struct aio_context *ctx)
{
    if (ctx->pending++ == 0)
        ev_ref(ctx->loop);
}

static void pending_remove(struct aio_context *ctx)
{
    if (--ctx->pending == 0)
        ev_unref(ctx->loop);
}

void aio_request_started(struct bdev_io *io)
{
    pending_add(io->ctx);
}

void aio_request_finish(struct bdev_io *io, int result)
{
    io->result = result;
    io->next = NULL;
    pending_remove(io->ctx);
    io->complete(io);
}

void aio_context_complete(struct aio_context *ctx, struct bdev_io *io, int result)
{
    io->result = result;
    io->next = NULL;
    if (ctx->deferred_tail)
        ctx->deferred_tail->next = io;
    else
        ctx->deferred_head = io;
    ctx->deferred_tail = io;
    kick_start(ctx);
}

int aio_context_defer(struct aio_context *ctx, void (*fn)(void *arg), void *arg)
{
    struct deferred_call *call = malloc(sizeof(*call));
    if (!call)
        return -ENOMEM;
    call->next = NULL;
    call->fn = fn;
    call->arg = arg;
    if (ctx->calls_tail)
        ctx->calls_tail->next = call;
    else
        ctx->calls_head = call;
    ctx->calls_tail = call;
    kick_start(ctx);
    return 0;
}

static void run_deferred(struct aio_context *ctx)
{
    /* Take the lists as they are: what the callbacks defer runs next iteration. */
    struct bdev_io *io = ctx->deferred_head;
    ctx->deferred_head = ctx->deferred_tail = NULL;
    struct deferred_call *call = ctx->calls_head;
    ctx->calls_head = ctx->calls_tail = NULL;

    while (io) {
        struct bdev_io *next = io->next;
        aio_request_finish(io, io->result);
        io = next;
    }
    while (call) {
        struct deferred_call *next = call->next;
        void (*fn)(void *) = call->fn;
        void *arg = call->arg;
        free(call);
        fn(arg);
        call = next;
    }
}

static void kick_cb(struct ev_loop *loop, ev_idle *watcher, int revents)
{
    (void)revents;
    struct aio_context *ctx = watcher->data;
    if (ctx->ran_this_pass) {
        /* The prepare watcher ran this iteration's share: leave the rest for the next one. */
        ctx->ran_this_pass = false;
        return;
    }
    run_deferred(ctx);
    if (!ctx->deferred_head && !ctx->calls_head && !ctx->submit_retry)
        ev_idle_stop(loop, watcher);
}

void aio_context_complete_from_any_thread(struct bdev_io *io, int result)
{
    struct aio_context *ctx = io->ctx;
    io->result = result;
    io->next = NULL;
    pthread_mutex_lock(&ctx->remote_lock);
    if (ctx->remote_io_tail)
        ctx->remote_io_tail->next = io;
    else
        ctx->remote_io_head = io;
    ctx->remote_io_tail = io;
    /* Under the lock: once it is released the owner may finish and free ctx. */
    ev_async_send(ctx->loop, &ctx->remote_wakeup);
    pthread_mutex_unlock(&ctx->remote_lock);
}

void aio_context_post_from_any_thread(struct aio_context *ctx, struct aio_work *work)
{
    work->next = NULL;
    pthread_mutex_lock(&ctx->remote_lock);
    if (ctx->remote_work_tail)
        ctx->remote_work_tail->next = work;
    else
        ctx->remote_work_head = work;
    ctx->remote_work_tail = work;
    ev_async_send(ctx->loop, &ctx->remote_wakeup);
    pthread_mutex_unlock(&ctx->remote_lock);
}

static void remote_cb(struct ev_loop *loop, ev_async *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct aio_context *ctx = watcher->data;
    pthread_mutex_lock(&ctx->remote_lock);
    struct bdev_io *io = ctx->remote_io_head;
    struct aio_work *work = ctx->remote_work_head;
    ctx->remote_io_head = ctx->remote_io_tail = NULL;
    ctx->remote_work_head = ctx->remote_work_tail = NULL;
    pthread_mutex_unlock(&ctx->remote_lock);

    while (work) {
        struct aio_work *next = work->next;
        work->done(work);
        work = next;
    }
    while (io) {
        struct bdev_io *next = io->next;
        aio_request_finish(io, io->result);
        io = next;
    }
}

static void pool_job_run(struct threadpool_job *job)
{
    struct aio_work *work = (struct aio_work *)job;
    work->run(work);
    aio_context_post_from_any_thread(work->ctx, work);
}

int aio_context_run_in_pool(struct aio_context *ctx, struct aio_work *work)
{
    work->ctx = ctx;
    work->job.run = pool_job_run;
    return threadpool_submit(&work->job);
}

/* A plain function call carried by an aio_work, for the public entries below. */
struct call_work {
    struct aio_work work; /* first */
    void (*run)(void *arg);
    void (*done)(void *arg);
    void *arg;
};

static void call_work_run(struct aio_work *work)
{
    struct call_work *call = (struct call_work *)work;
    call->run(call->arg);
}

static void call_work_done(struct aio_work *work)
{
    struct call_work *call = (struct call_work *)work;
    void (*done)(void *) = call->done;
    void *arg = call->arg;
    if (call->run)
        pending_remove(work->ctx); /* blocking work counts as a pending request, as I/O does */
    free(call);
    done(arg);
}

static struct call_work *call_work_new(void (*run)(void *arg), void (*done)(void *arg), void *arg)
{
    struct call_work *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->work.run = call_work_run;
    call->work.done = call_work_done;
    call->run = run;
    call->done = done;
    call->arg = arg;
    return call;
}

int aio_context_run_blocking(struct aio_context *ctx, void (*run)(void *arg), void (*done)(void *arg), void *arg)
{
    struct call_work *call = call_work_new(run, done, arg);
    if (!call)
        return -ENOMEM;
    int ret = aio_context_run_in_pool(ctx, &call->work);
    if (ret < 0)
        free(call);
    else
        pending_add(ctx);
    return ret;
}

int aio_context_call_from_any_thread(struct aio_context *ctx, void (*fn)(void *arg), void *arg)
{
    struct call_work *call = call_work_new(NULL, fn, arg);
    if (!call)
        return -ENOMEM;
    call->work.ctx = ctx;
    aio_context_post_from_any_thread(ctx, &call->work);
    return 0;
}

/* ---- io_uring ---- */

static pthread_once_t uring_probe_once = PTHREAD_ONCE_INIT;
static bool uring_probe_ok;

static void uring_probe(void)
{
    struct io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) == 0) {
        uring_probe_ok = true;
        io_uring_queue_exit(&ring);
    }
}

bool aio_uring_supported(void)
{
    pthread_once(&uring_probe_once, uring_probe);
    return uring_probe_ok;
}

static void uring_flush(struct aio_context *ctx)
{
    if (io_uring_sq_ready(&ctx->ring) == 0)
        return;
    int rc = io_uring_submit(&ctx->ring);
    if (rc >= 0)
        return;
    /* The SQEs stay in the ring; retry on the next iteration. */
    if (rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) {
        ctx->stats.uring_submit_failures++;
        ctx->stats.uring_last_error = rc;
    }
    ctx->submit_retry = true;
    kick_start(ctx);
}

/* Hand op an SQE; false when the ring has no room now. */
static bool uring_try_start(struct aio_context *ctx, struct aio_uring_op *op)
{
    if (ctx->uring_inflight >= ctx->uring_capacity)
        return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ctx->ring);
    if (!sqe) {
        /* SQ full: submit what is there now rather than wait for the loop. */
        uring_flush(ctx);
        sqe = io_uring_get_sqe(&ctx->ring);
        if (!sqe)
            return false;
    }
    op->prepare(op, sqe);
    io_uring_sqe_set_data(sqe, op);
    ctx->uring_inflight++;
    return true;
}

static void uring_start_backlog(struct aio_context *ctx)
{
    while (ctx->backlog_head) {
        struct aio_uring_op *op = ctx->backlog_head;
        if (!uring_try_start(ctx, op))
            return;
        ctx->backlog_head = op->next;
        if (!ctx->backlog_head)
            ctx->backlog_tail = NULL;
        op->next = NULL;
    }
}

void aio_uring_submit(struct aio_context *ctx, struct aio_uring_op *op)
{
    op->next = NULL;
    if (!ctx->backlog_head && uring_try_start(ctx, op))
        return;
    if (ctx->backlog_tail)
        ctx->backlog_tail->next = op;
    else
        ctx->backlog_head = op;
    ctx->backlog_tail = op;
}

/* Run the done callbacks of every CQE already posted; true if there was one. */
static bool uring_reap(struct aio_context *ctx)
{
    bool reaped = false;
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&ctx->ring, &cqe) == 0) {
        struct aio_uring_op *op = io_uring_cqe_get_data(cqe);
        int result = cqe->res;
        io_uring_cqe_seen(&ctx->ring, cqe);
        ctx->uring_inflight--;
        op->done(op, result);
        reaped = true;
    }
    if (reaped)
        uring_start_backlog(ctx);
    return reaped;
}

/*
 * Submit what this iteration queued, then reap what completed during the
 * submission (page-cache hits complete inside io_uring_enter), so their
 * completions reach the server's reply flush, which runs between the early
 * and the late watcher, without another trip through poll.
 */
static void submit_and_reap(struct aio_context *ctx)
{
    ctx->submit_retry = false;
    uring_start_backlog(ctx);
    uring_flush(ctx);
    if (io_uring_cq_ready(&ctx->ring) > 0)
        uring_reap(ctx);
}

/*
 * Requests finished during this pass (answers known inside bdev_submit,
 * such as block status of a file without holes) complete now, before the
 * reply flush, rather than after another trip through poll.
 */
static void run_due(struct aio_context *ctx)
{
    if (!ctx->deferred_head && !ctx->calls_head)
        return;
    run_deferred(ctx);
    /* What those callbacks deferred waits for the next iteration. */
    ctx->ran_this_pass = ctx->deferred_head || ctx->calls_head;
    if (!ctx->ran_this_pass && !ctx->submit_retry)
        ev_idle_stop(ctx->loop, &ctx->kick); /* or the loop would poll once more without blocking */
}

static void submit_early_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct aio_context *ctx = watcher->data;
    run_due(ctx);
    if (ctx->uring_state == URING_READY)
        submit_and_reap(ctx);
}

static void submit_late_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct aio_context *ctx = watcher->data;
    if (ctx->uring_state != URING_READY)
        return;
    ctx->submit_retry = false;
    uring_start_backlog(ctx);
    uring_flush(ctx);
    /*
     * Completions reaped now would miss this iteration's reply flush: leave
     * them to the next iteration, which the ready ring fd starts at once.
     */
}

static void uring_reap_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    uring_reap(watcher->data);
}

static int uring_create(struct aio_context *ctx, struct io_uring_params *params)
{
    /*
     * The ring is only ever used by its loop's thread: tell the kernel, so it
     * skips cross-thread synchronisation and does not interrupt the thread
     * for each completion (it runs them when the thread next enters the kernel).
     * Older kernels refuse the flags; then go without.
     */
    *params = (struct io_uring_params){.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN};
    int rc = io_uring_queue_init_params(URING_QUEUE_DEPTH, &ctx->ring, params);
    if (rc == -EINVAL) {
        *params = (struct io_uring_params){.flags = IORING_SETUP_COOP_TASKRUN};
        rc = io_uring_queue_init_params(URING_QUEUE_DEPTH, &ctx->ring, params);
    }
    if (rc == -EINVAL) {
        *params = (struct io_uring_params){0};
        rc = io_uring_queue_init_params(URING_QUEUE_DEPTH, &ctx->ring, params);
    }
    return rc;
}

struct io_uring *aio_context_uring(struct aio_context *ctx)
{
    if (ctx->uring_state == URING_READY)
        return &ctx->ring;
    if (ctx->uring_state == URING_UNUSABLE)
        return NULL;

    ctx->uring_state = URING_UNUSABLE;
    struct io_uring_params params;
    if (uring_create(ctx, &params) < 0)
        return NULL; /* the caller falls back to the pool */
    ctx->uring_capacity = params.cq_entries;
    ev_io_init(&ctx->uring_watcher, uring_reap_cb, ctx->ring.ring_fd, EV_READ);
    ctx->uring_watcher.data = ctx;
    ev_io_start(ctx->loop, &ctx->uring_watcher);
    ev_unref(ctx->loop); /* only pending requests keep the loop alive */
    ctx->uring_state = URING_READY;
    return &ctx->ring;
}

/* ---- request records ---- */

void *aio_record_get(struct aio_context *ctx)
{
    struct record *record = ctx->spare_records;
    if (record) {
        ctx->spare_records = record->next;
        ctx->spare_record_count--;
        memset(record, 0, AIO_RECORD_SIZE);
        return record;
    }
    return calloc(1, AIO_RECORD_SIZE);
}

void aio_record_put(struct aio_context *ctx, void *pointer)
{
    if (!pointer)
        return;
    if (ctx->spare_record_count >= RECORD_CACHE_MAX) {
        free(pointer);
        return;
    }
    struct record *record = pointer;
    record->next = ctx->spare_records;
    ctx->spare_records = record;
    ctx->spare_record_count++;
}

void aio_context_get_stats(const struct aio_context *ctx, struct aio_context_stats *stats)
{
    *stats = ctx->stats;
}

/* ---- lifetime ---- */

struct aio_context *aio_context_new(struct ev_loop *loop)
{
    struct aio_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->loop = loop;
    int rc = pthread_mutex_init(&ctx->remote_lock, NULL);
    if (rc != 0) {
        free(ctx);
        return NULL;
    }

    ev_idle_init(&ctx->kick, kick_cb);
    ev_set_priority(&ctx->kick, EV_MAXPRI); /* run every iteration, even when busy */
    ctx->kick.data = ctx;

    ev_async_init(&ctx->remote_wakeup, remote_cb);
    ctx->remote_wakeup.data = ctx;
    ev_async_start(loop, &ctx->remote_wakeup);
    ev_unref(loop);

    /*
     * The early watcher runs before the server's reply flush (default
     * priority), so completions it reaps are answered in this iteration; the
     * late one runs last, for I/O the flush queued (it may resume parsing).
     */
    ev_prepare_init(&ctx->submit_early, submit_early_cb);
    ctx->submit_early.data = ctx;
    ev_set_priority(&ctx->submit_early, EV_MAXPRI);
    ev_prepare_start(loop, &ctx->submit_early);
    ev_unref(loop);
    ev_prepare_init(&ctx->submit_late, submit_late_cb);
    ctx->submit_late.data = ctx;
    ev_set_priority(&ctx->submit_late, EV_MINPRI);
    ev_prepare_start(loop, &ctx->submit_late);
    ev_unref(loop);
    return ctx;
}

int aio_context_free(struct aio_context *ctx)
{
    if (!ctx)
        return 0;
    if (ctx->pending)
        return -EBUSY; /* completions would land in freed memory */
    ev_idle_stop(ctx->loop, &ctx->kick);
    ev_ref(ctx->loop);
    ev_async_stop(ctx->loop, &ctx->remote_wakeup);
    ev_ref(ctx->loop);
    ev_prepare_stop(ctx->loop, &ctx->submit_early);
    ev_ref(ctx->loop);
    ev_prepare_stop(ctx->loop, &ctx->submit_late);
    if (ctx->uring_state == URING_READY) {
        ev_ref(ctx->loop);
        ev_io_stop(ctx->loop, &ctx->uring_watcher);
        io_uring_queue_exit(&ctx->ring);
    }
    while (ctx->calls_head) {
        struct deferred_call *next = ctx->calls_head->next;
        free(ctx->calls_head);
        ctx->calls_head = next;
    }
    while (ctx->spare_records) {
        struct record *next = ctx->spare_records->next;
        free(ctx->spare_records);
        ctx->spare_records = next;
    }
    /* Wait out a thread still inside ev_async_send for our last request. */
    pthread_mutex_lock(&ctx->remote_lock);
    pthread_mutex_unlock(&ctx->remote_lock);
    pthread_mutex_destroy(&ctx->remote_lock);
    free(ctx);
    return 0;
}

struct ev_loop *aio_context_loop(struct aio_context *ctx) { return ctx->loop; }

uint64_t aio_context_pending(const struct aio_context *ctx) { return ctx->pending; }

void aio_context_drain(struct aio_context *ctx)
{
    while (ctx->pending > 0)
        ev_run(ctx->loop, EVRUN_ONCE);
}
