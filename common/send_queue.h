/*
 * send_queue: the bytes a connection owes its peer, in order.
 *
 * Protocols (NBD now, iSCSI later) append replies here; the server drains
 * the queue into the socket with writev(2), as much as the socket takes,
 * so one system call carries many replies.  A protocol can queue bytes it
 * owns (copied into the queue: headers, small replies) or lend a buffer
 * (read data) with a release callback run once the bytes are written or
 * the queue is destroyed.  Testable without sockets: send_queue_drain
 * copies the queued bytes out.  Not thread-safe: one queue belongs to one
 * connection, used only from the thread of the loop that owns it.
 */
#ifndef LUNA_COMMON_SEND_QUEUE_H
#define LUNA_COMMON_SEND_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct send_queue;

typedef void (*send_release_fn)(void *arg);

struct send_queue *send_queue_new(void);
/* Runs the release callback of every buffer still queued. */
void send_queue_free(struct send_queue *queue);

/* Append a copy of len bytes.  Returns 0 or -ENOMEM. */
int send_queue_copy(struct send_queue *queue, const void *data, size_t len);

/*
 * Append len bytes that stay owned by the caller until release(arg) runs
 * (after the last byte is written, or on send_queue_free).  release may be
 * NULL.  On -ENOMEM release has not run and the caller still owns the bytes.
 */
int send_queue_lend(struct send_queue *queue, const void *data, size_t len,
                    send_release_fn release, void *arg);

/* Bytes queued and not yet written. */
size_t send_queue_length(const struct send_queue *queue);
bool send_queue_empty(const struct send_queue *queue);

/*
 * writev(2) as much as fd accepts.  Returns bytes written (>= 0), -EAGAIN
 * when the socket is full before anything was written, or another -errno.
 */
ssize_t send_queue_write(struct send_queue *queue, int fd);

/* Copy up to len queued bytes into out and consume them; returns count. */
size_t send_queue_drain(struct send_queue *queue, void *out, size_t len);

#endif
