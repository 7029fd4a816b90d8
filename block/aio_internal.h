/*
 * aio_internal: the driver-facing side of an aio_context.
 *
 * Drivers reach the submitting thread's io_uring ring, run blocking work on
 * the thread pool with the result handed back to the owning loop, and
 * finish requests.  Request accounting: bdev_submit counts a request as
 * pending on io->ctx; exactly one of aio_request_finish,
 * aio_context_complete or aio_context_complete_from_any_thread ends it.
 *
 * Thread rules: everything here runs on the context's owning thread except
 * aio_context_complete_from_any_thread and aio_context_post_from_any_thread.
 */
#ifndef LUNA_BLOCK_AIO_INTERNAL_H
#define LUNA_BLOCK_AIO_INTERNAL_H

#include <liburing.h>
#include <stdbool.h>

#include "block/aio.h"
#include "block/threadpool.h"

struct bdev_io;

/* Count io as pending on io->ctx (bdev_submit does this). */
void aio_request_started(struct bdev_io *io);

/*
 * End io now: set io->result, call io->complete.  Only from a loop callback
 * (a CQE handler, a posted work's done), never inside bdev_submit.
 */
void aio_request_finish(struct bdev_io *io, int result);

/*
 * End io with result later (owning thread): before the loop next blocks,
 * in the prepare phase that precedes the server's reply flush, so an answer
 * known inside bdev_submit still goes out in this loop pass.
 */
void aio_context_complete(struct aio_context *ctx, struct bdev_io *io, int result);

/* End io with result on the owning thread of io->ctx, from any thread. */
void aio_context_complete_from_any_thread(struct bdev_io *io, int result);

/*
 * Drivers' per-request records, recycled per context so the hot path does
 * not go through malloc.  A record is taken on the submitting thread from
 * io->ctx and must be given back to that same context, on its thread (where
 * completions run, so no lock is involved).  aio_record_get returns
 * AIO_RECORD_SIZE zeroed bytes, aligned for any type, or NULL.
 */
#define AIO_RECORD_SIZE 256
void *aio_record_get(struct aio_context *ctx);
void aio_record_put(struct aio_context *ctx, void *record);

/*
 * Work handed between threads.  post: done(work) runs on ctx's loop.
 * pool: run(work) on a pool thread, then done(work) on ctx's loop.
 */
struct aio_work {
    struct threadpool_job job; /* first: the pool hands this back */
    struct aio_work *next;
    struct aio_context *ctx;
    void (*run)(struct aio_work *work);  /* pool thread */
    void (*done)(struct aio_work *work); /* owning loop thread */
};

void aio_context_post_from_any_thread(struct aio_context *ctx, struct aio_work *work);

/* Returns 0 or -errno (no pool thread could be started). */
int aio_context_run_in_pool(struct aio_context *ctx, struct aio_work *work);

/*
 * io_uring.  aio_context_uring returns the context's ring, creating it on
 * first use, or NULL when io_uring is not usable (then use the pool).
 */
struct io_uring *aio_context_uring(struct aio_context *ctx);

/* True when this process can create io_uring rings at all (probed once). */
bool aio_uring_supported(void);

/*
 * An operation for the ring.  aio_uring_submit calls prepare(op, sqe) now
 * or, when the ring is full, later from the loop; the submission itself is
 * batched just before the loop blocks.  done(op, cqe_res) runs on the loop
 * when the CQE arrives.  prepare must not touch sqe->user_data.
 */
struct aio_uring_op {
    void (*prepare)(struct aio_uring_op *op, struct io_uring_sqe *sqe);
    void (*done)(struct aio_uring_op *op, int result);
    struct aio_uring_op *next; /* backlog while the ring is full */
};

/* Requires aio_context_uring(ctx) != NULL. */
void aio_uring_submit(struct aio_context *ctx, struct aio_uring_op *op);

#endif
