/*
 * remote_worker: what the drivers of disks on the network (nbd_client,
 * iscsi_client) share: one thread per remote disk running its own libev
 * loop, to which submitters on any thread hand requests; each request
 * completes on its submitter's loop (aio_context), or wakes a blocking
 * caller.  The protocol library (libnbd, libiscsi) is driven only on that
 * thread, so it needs no locking of its own.
 *
 * The driver supplies take(): called on the worker thread with the
 * requests handed over since last time (in submission order), or with
 * stopping set once remote_worker_stop was called, after which it must
 * finish every request it holds and return.
 */
#ifndef LUNA_BLOCK_REMOTE_WORKER_H
#define LUNA_BLOCK_REMOTE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"

struct remote_request {
    struct remote_request *next, *prev; /* lists of the worker thread (or the hand-over stack) */
    struct remote_worker *worker;
    struct bdev_io *io;       /* the request (a blocking caller's too) */
    bool blocking;            /* a caller waits in remote_blocking, not on a loop */
    uint8_t *bounce;          /* read/write data in one piece when the iovec has several */
    unsigned generation;      /* the driver's: which connection it was sent on */
    void *task;               /* the driver's: its library's handle of the command in flight */
    uint64_t done;            /* the driver's: bytes of a request it splits already done */
    double sent_at;           /* the driver's: when it was sent (monotonic seconds) */
    int result;
    bool finished;
};

struct remote_worker {
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t lock;     /* incoming, stopping, blocking completions */
    pthread_cond_t done;
    struct remote_request *incoming;
    bool stopping;
    void (*take)(struct remote_worker *worker, struct remote_request *requests, bool stopping);
    void *driver;
};

/* Set up the loop (not running yet: the driver may add watchers).  0 or -errno. */
int remote_worker_init(struct remote_worker *worker, void *driver,
                       void (*take)(struct remote_worker *, struct remote_request *, bool));
/* Run the loop on a new thread.  0 or -errno. */
int remote_worker_start(struct remote_worker *worker);
/* Ask take() to finish everything, wait for the thread, free the loop. */
void remote_worker_stop(struct remote_worker *worker);
/* Free what init made, when start was never called (a failed open). */
void remote_worker_destroy(struct remote_worker *worker);

/* A bdev_ops.submit and .blocking: the request goes to the worker. */
void remote_submit(struct bdev *bdev, struct bdev_io *io);
int remote_blocking(struct bdev *bdev, struct bdev_io *io);

/*
 * Tell a bdev's listener (bdev_options.event; NULL: nobody listens) what
 * happened to remote disk name: "remote disk NAME: " and the rest as
 * printf formats it.
 */
void remote_tell(void (*event)(void *opaque, const char *message), void *opaque, const char *name,
                 const char *format, ...) __attribute__((format(printf, 4, 5)));

/* Circular request lists with a head (worker thread only). */
void remote_list_init(struct remote_request *head);
bool remote_list_empty(const struct remote_request *head);
void remote_list_remove(struct remote_request *request);
void remote_list_append(struct remote_request *head, struct remote_request *request);

/* End a request (worker thread): it leaves its list, reads copy out of the bounce buffer, the submitter hears. */
void remote_request_finish(struct remote_request *request, int result);

/* The request's data in one piece: its only iovec, or the bounce buffer. */
static inline void *remote_request_data(const struct remote_request *request)
{
    return request->io->iov && request->io->iovcnt == 1 ? request->io->iov[0].iov_base : request->bounce;
}

#endif
