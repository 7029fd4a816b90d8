/*
 * nbd_session: one NBD connection's protocol state machine, server side.
 *
 * Bytes in, bytes out, bdev calls in between; no sockets.  The server feeds
 * what it reads from the socket to nbd_session_input(); the session parses
 * the handshake (fixed newstyle) and then transmission requests, submits
 * them to the export's bdev, and appends replies to the send queue it was
 * given, in whatever order requests complete.  Whenever a completion has
 * queued output or changed what the session wants (more input, closing),
 * it calls ops->wake so the server can write and re-arm its watchers.
 *
 * Large write payloads are not copied through the server's read buffer:
 * when nbd_session_payload() returns a target, the server reads the socket
 * straight into it and reports the count with nbd_session_payload_done().
 *
 * Thread rules: a session is used only from the thread of its aio_context.
 * nbd_session_free() may be called with requests in flight: they complete
 * later into a detached record and are freed there, never touching the
 * freed session.
 */
#ifndef LUNA_PROTOCOLS_NBD_SESSION_H
#define LUNA_PROTOCOLS_NBD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "protocols/session.h"

struct aio_context;
struct export_table;
struct send_queue;
struct nbd_session;

struct nbd_session_config {
    uint32_t max_inflight;  /* requests executing at once before reading pauses (default 128) */
    uint32_t max_payload;   /* largest READ/WRITE length accepted (default 32 MiB) */
    const char *peer;       /* for log messages: "127.0.0.1:40122" */
};

/*
 * Create a session and queue the server greeting.  Holds a reference to
 * exports for its lifetime.  Returns NULL on allocation failure.
 */
struct nbd_session *nbd_session_new(const struct nbd_session_config *config,
                                    struct export_table *exports,
                                    struct aio_context *ctx,
                                    struct send_queue *out,
                                    const struct session_ops *ops, void *opaque);

/*
 * Consume bytes read from the peer.  Returns how many were consumed: fewer
 * than len when the session paused (backpressure: nbd_session_wants_input()
 * is false) or when it wants the rest of a payload read directly into its
 * buffer (nbd_session_payload() returns true).  Unconsumed bytes must be
 * offered again later.  The server's input buffer holds 16 KiB, so a
 * session must make progress when offered that much: an option or request
 * header larger than that (oversized option data) is consumed in pieces
 * or treated as a protocol error, never waited for whole.
 */
size_t nbd_session_input(struct nbd_session *session, const uint8_t *data, size_t len);

/*
 * While a request payload is being received: where the next bytes go.
 * Returns false when no payload is expected.
 */
bool nbd_session_payload(struct nbd_session *session, struct iovec *target);
void nbd_session_payload_done(struct nbd_session *session, size_t n);

/* False while too many requests are in flight or the session is ending. */
bool nbd_session_wants_input(const struct nbd_session *session);

enum session_status nbd_session_status(const struct nbd_session *session);

/* The peer's end of stream: finish what is in flight, then drain. */
void nbd_session_input_closed(struct nbd_session *session);

/*
 * Server shutdown (SIGTERM): requests already received (including a write
 * whose payload is still arriving) complete and are answered; requests
 * that arrive meanwhile are answered NBD_ESHUTDOWN; at the first request
 * boundary with nothing in flight the status becomes DRAINING.
 */
void nbd_session_shutdown(struct nbd_session *session);

uint32_t nbd_session_inflight(const struct nbd_session *session);

/* True once an export was chosen (the handshake is over). */
bool nbd_session_negotiated(const struct nbd_session *session);

void nbd_session_free(struct nbd_session *session);

/* The functions above as a session_protocol, for the server's connections. */
extern const struct session_protocol nbd_session_protocol;

#endif
