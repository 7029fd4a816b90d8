/*
 * connection: a client socket on a worker, driving a protocol session
 * (NBD or iSCSI, through protocols/session.h).
 *
 * Owns the socket and its watchers, the input buffer and the send queue;
 * the protocol itself lives in protocols/.  Reading stops while the
 * session has too many requests in flight or the peer is not reading its
 * replies (backpressure), and resumes as they drain.  Replies produced
 * during one loop iteration are written together just before the loop
 * blocks.
 */
#ifndef LUNA_SERVER_CONNECTION_H
#define LUNA_SERVER_CONNECTION_H

struct worker;
struct connection_request;

/*
 * Take ownership of the request's connected socket (worker thread) and
 * start a session of its protocol on it.  -errno on failure (socket untouched).
 */
int connection_start(struct worker *worker, const struct connection_request *request);

#endif
