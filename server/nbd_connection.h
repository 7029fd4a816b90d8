/*
 * nbd_connection: a client socket on a worker, driving an nbd_session.
 *
 * Owns the socket and its watchers, the input buffer and the send queue;
 * the protocol itself lives in protocols/nbd.  Reading stops while the
 * session has too many requests in flight or the peer is not reading its
 * replies (backpressure), and resumes as they drain.  Replies produced
 * during one loop iteration are written together just before the loop
 * blocks.
 */
#ifndef LUNA_SERVER_NBD_CONNECTION_H
#define LUNA_SERVER_NBD_CONNECTION_H

struct worker;

/* Take ownership of a connected socket (worker thread).  -errno on failure (fd untouched). */
int nbd_connection_start(struct worker *worker, int fd, const char *peer);

#endif
