/*
 * worker: one thread, one libev loop, the connections that live on it.
 *
 * lunad runs one worker per CPU by default.  The main thread accepts
 * connections and hands each socket to a worker (worker_adopt); from then
 * on the connection, its protocol session and the completions of its disk
 * I/O belong to that worker's thread alone (its aio_context), so nothing on
 * the request path takes a lock.  Other threads talk to a worker only
 * through worker_adopt and worker_request_stop, which queue the work and
 * wake the loop with an ev_async.
 */
#ifndef LUNA_SERVER_WORKER_H
#define LUNA_SERVER_WORKER_H

#include <stdbool.h>
#include <stddef.h>

struct worker;
struct ev_loop;
struct aio_context;
struct export_registry;
struct session_protocol;

/* Start a worker thread.  Returns -errno on failure. */
int worker_start(unsigned index, struct export_registry *registry, struct worker **out);

/* A connected socket and what to serve on it. */
struct connection_request {
    int fd;
    char peer[64];                            /* printable addresses, for logs */
    char local[64];                           /* our end ("" for Unix sockets) */
    const struct session_protocol *protocol;  /* NBD or iSCSI */
    const void *settings;                     /* the protocol's own; outlives the connection */
};

/*
 * Give a connected socket to the worker (any thread); the request is
 * copied.  Returns -ENOMEM (the caller closes the socket) or 0.
 */
int worker_adopt(struct worker *worker, const struct connection_request *request);

/*
 * Ask the worker to finish (any thread): every connection stops taking
 * requests, completes what is in flight, sends its replies and closes; the
 * thread then exits.  Connections still not done after grace_seconds are
 * closed hard.
 */
void worker_request_stop(struct worker *worker, double grace_seconds);

/* Wait for the thread to exit and free the worker. */
void worker_join(struct worker *worker);

/* Connections assigned to this worker, adopted or on their way (any thread). */
unsigned worker_connection_count(const struct worker *worker);

/* For connections: their loop, aio context, registry. */
struct ev_loop *worker_loop(struct worker *worker);
struct aio_context *worker_aio_context(struct worker *worker);
struct export_registry *worker_registry(struct worker *worker);

/* Connection bookkeeping, worker thread only. */
struct connection_link {
    struct connection_link *prev, *next;
    void (*shutdown)(struct connection_link *link); /* graceful stop */
    void (*abort)(struct connection_link *link);    /* close now */
};
void worker_connection_added(struct worker *worker, struct connection_link *link);
void worker_connection_removed(struct worker *worker, struct connection_link *link);

/* Run fn(arg) just before the loop next blocks: batching point for replies. */
struct worker_flush {
    struct worker_flush *next;
    bool queued;
    void (*fn)(struct worker_flush *flush);
};
void worker_schedule_flush(struct worker *worker, struct worker_flush *flush);

#endif
