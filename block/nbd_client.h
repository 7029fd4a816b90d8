/*
 * nbd_client: a disk on an NBD server as a bdev (nbd://host[:port]/export,
 * nbd+unix:///export?socket=PATH), through libnbd's asynchronous API.
 *
 * One thread per remote disk owns the connection: it runs a libev loop
 * that drives libnbd's state machine (the socket's readiness, libnbd's
 * wanted direction), issues the requests every submitter queues to it and
 * completes them on each request's own loop (aio_context).  No thread per
 * request, and no event loop of the server ever waits on the network.
 *
 * When the connection drops, requests in flight and new ones wait; the
 * thread reconnects with exponential backoff (100 ms doubling to 5 s),
 * then sends them again (NBD writes are idempotent, flushes are sent
 * again too).  Requests fail with -EIO only once the disk has been
 * unreachable for reconnect_timeout seconds (default 60); after that new
 * requests fail at once until the connection is back.  Each drop and each
 * reconnection is told once through bdev_options.event.
 */
#ifndef LUNA_BLOCK_NBD_CLIENT_H
#define LUNA_BLOCK_NBD_CLIENT_H

#include <stdbool.h>

#include "block/bdev.h"

/* Whether path is an NBD URL (what bdev_open hands to this driver). */
bool nbd_client_is_url(const char *path);

/* bdev_open's entry for BDEV_FORMAT_NBD: connects (blocking) and starts the thread.  0 or -errno and a message. */
int nbd_client_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

#endif
