/*
 * aio: where block I/O completes.
 *
 * Every event-loop thread that issues block I/O owns one aio_context bound
 * to its libev loop.  A request carries the context of the thread that
 * submitted it, and its completion callback always runs on that thread,
 * from that loop: never inside bdev_submit, never on a pool thread.  So a
 * connection's state is only ever touched by the loop that owns it.
 *
 * The context owns the thread's io_uring ring (created on first use; SQEs
 * are submitted in one batch just before the loop blocks, completions that
 * are ready at once are handled right away, and the loop watches the ring's
 * file descriptor for the others) and the queue through which the shared
 * thread pool hands back finished work (a mutex-protected list and an
 * ev_async).
 *
 * Thread rules: aio_context_new/free and everything else except
 * aio_context_complete_from_any_thread run on the owning loop's thread.
 */
#ifndef LUNA_BLOCK_AIO_H
#define LUNA_BLOCK_AIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct aio_context;
struct bdev_io;

/*
 * Returns NULL on allocation failure.  Must run on the loop's thread.  The
 * context's watchers keep the loop alive (ev_run does not return for lack
 * of watchers) only while requests are pending.
 */
struct aio_context *aio_context_new(struct ev_loop *loop);

/*
 * Stop the context's watchers and free it.  The caller must first wait
 * until aio_context_pending() is 0 (requests in flight still reference it):
 * otherwise nothing is freed and the result is -EBUSY.  0 on success.
 */
int aio_context_free(struct aio_context *ctx);

struct ev_loop *aio_context_loop(struct aio_context *ctx);

/* Requests submitted through this context and not yet completed. */
uint64_t aio_context_pending(const struct aio_context *ctx);

/*
 * Trouble the context absorbed without failing a request, for the edge to
 * report (block/ does not log).
 */
struct aio_context_stats {
    uint64_t uring_submit_failures; /* io_uring_submit errors, other than EAGAIN/EBUSY/EINTR; retried */
    int uring_last_error;           /* the latest of them, -errno */
};

void aio_context_get_stats(const struct aio_context *ctx, struct aio_context_stats *stats);

/*
 * Driver-facing parts (io_uring access, completion from pool threads,
 * request accounting) are in block/aio_internal.h: they are block/'s
 * business, not its users'.
 */

/*
 * Run fn(arg) on the loop's thread later (same thread only): before the
 * loop next blocks, never inside the caller.  What a deferred call defers
 * runs in the next iteration.  Returns 0 or -ENOMEM.
 */
int aio_context_defer(struct aio_context *ctx, void (*fn)(void *arg), void *arg);

/*
 * For protocols' rare blocking steps (a state file): run(arg) on the
 * thread pool, then done(arg) on ctx's loop; it counts as a pending
 * request meanwhile (aio_context_drain waits for it).  0, or -errno when
 * it could not be started (nothing runs).
 */
int aio_context_run_blocking(struct aio_context *ctx, void (*run)(void *arg), void (*done)(void *arg), void *arg);

/*
 * fn(arg) on ctx's loop, from any thread (another loop asking this one to
 * act on what it owns).  0 or -ENOMEM (nothing runs).
 */
int aio_context_call_from_any_thread(struct aio_context *ctx, void (*fn)(void *arg), void *arg);

/*
 * Run the loop until no request submitted through ctx is pending.  For
 * tools and tests that need a synchronous call (luna-img, unit tests).
 */
void aio_context_drain(struct aio_context *ctx);

#endif
