/*
 * session: the contract between a protocol's server-side state machine
 * (NBD, iSCSI) and the server's connection that feeds it.
 *
 * A session turns bytes in into bdev calls and bytes out, with no socket
 * of its own: the connection (server/connection.c) reads the socket and
 * offers the bytes to input(), writes what the session appended to its
 * send queue, and asks wants_input() / status() what to wait for next.
 * Large write payloads skip the input buffer: while payload() names a
 * target, the connection reads the socket straight into it and reports
 * the count with payload_done().  Completions that queue output or change
 * what the session wants call ops->wake.
 *
 * Thread rules: a session is used only from the thread of its aio_context.
 * free() may be called with requests in flight: they complete later into
 * a detached record, never touching the freed session.
 */
#ifndef LUNA_PROTOCOLS_SESSION_H
#define LUNA_PROTOCOLS_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct aio_context;
struct export_table;
struct send_queue;

struct session_ops {
    /* Output was queued or the session's wants changed; called from completions only. */
    void (*wake)(void *opaque);
};

enum session_status {
    SESSION_ACTIVE,   /* keep going */
    SESSION_DRAINING, /* no more input; close once output is written and nothing is in flight */
    SESSION_CLOSED,   /* close the socket now (protocol violation or hard disconnect) */
};

/* What every protocol's session is created with. */
struct session_start {
    const char *peer;              /* for log messages: "127.0.0.1:40122" */
    const char *local;             /* our end, "127.0.0.1:3260" (iSCSI SendTargets); may be NULL */
    struct export_table *exports;  /* the session takes its own reference */
    struct aio_context *ctx;
    struct send_queue *out;
    const struct session_ops *ops;
    void *opaque;                  /* for ops */
    const void *settings;          /* the protocol's own (iSCSI: its target table); may be NULL */
};

/*
 * A protocol's session functions, so one connection type serves them all.
 * Each has the meaning its NBD counterpart documents in nbd_session.h.
 */
struct session_protocol {
    const char *name; /* "nbd", "iscsi": logs */
    /* NULL on allocation failure.  Queues the greeting, if the protocol has one. */
    void *(*create)(const struct session_start *start);
    size_t (*input)(void *session, const uint8_t *data, size_t len);
    bool (*payload)(void *session, struct iovec *target);
    void (*payload_done)(void *session, size_t n);
    bool (*wants_input)(const void *session);
    enum session_status (*status)(const void *session);
    void (*input_closed)(void *session);
    void (*shutdown)(void *session);
    uint32_t (*inflight)(const void *session);
    /* True once the client is past the handshake or login (the time limit stops). */
    bool (*negotiated)(const void *session);
    void (*free)(void *session);
    /*
     * Optional (NULL: none): seconds between calls of tick (0: no ticks),
     * asked once after create; tick runs on the session's thread and may
     * queue output or change the status (iSCSI pings idle initiators).
     */
    double (*tick_interval)(const void *session);
    void (*tick)(void *session);
};

#endif
