/*
 * nbd_internal: the session's state, shared by the files that implement it.
 *
 * nbd_session.c owns the lifecycle, input dispatch and the in-flight
 * request records; nbd_handshake.c the option haggling; nbd_transmission.c
 * request parsing and execution; nbd_read.c reads (with holes); nbd_reply.c
 * the encoding of replies onto the send queue.  Not a public header.
 */
#ifndef LUNA_PROTOCOLS_NBD_INTERNAL_H
#define LUNA_PROTOCOLS_NBD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/bdev.h"
#include "block/write_guard.h"
#include "common/data_buffer.h"
#include "protocols/nbd/nbd_session.h"
#include "protocols/nbd/nbd_wire.h"

struct export;

/* Defaults and limits of our own (the spec leaves them to the server). */
#define NBD_DEFAULT_MAX_INFLIGHT 128u
#define NBD_DEFAULT_MAX_PAYLOAD (32u << 20)
/* Option data we buffer and parse; longer options are skipped and refused. */
#define NBD_OPTION_DATA_MAX (64u << 10)
/* Option data above this is a denial of service: hang up instead of skipping it. */
#define NBD_OPTION_DISCARD_MAX (16u << 20)
/* Oversized compact WRITE payloads up to this are read and dropped, then refused. */
#define NBD_PAYLOAD_DISCARD_MAX (64u << 20)
/* Reads from this size on ask the disk for holes first and send them as OFFSET_HOLE. */
#define NBD_SPARSE_READ_MIN (64u << 10)
/* Extents asked of the disk per BLOCK_STATUS (and per sparse read). */
#define NBD_BLOCK_STATUS_MAX_EXTENTS 256u
#define NBD_SPARSE_READ_MAX_EXTENTS 32u
/* Data buffers of requests in flight, at most (one request may exceed it alone). */
#define NBD_INFLIGHT_BYTES_MAX (64u << 20)
/* Stop reading requests while this much reply data waits for the socket. */
#define NBD_OUTPUT_HIGH_WATER (16u << 20)
/* Spare request records kept per session. */
#define NBD_FREE_REQUESTS_MAX 64u
/* Metadata context id we hand out for base:allocation. */
#define NBD_ALLOCATION_CONTEXT_ID 1u

enum nbd_input_state {
    NBD_INPUT_CLIENT_FLAGS,
    NBD_INPUT_OPTION_HEADER,
    NBD_INPUT_OPTION_DATA,    /* buffering option data to parse it */
    NBD_INPUT_OPTION_DISCARD, /* skipping option data we do not need */
    NBD_INPUT_REQUEST_HEADER,
    NBD_INPUT_PAYLOAD,         /* a WRITE payload going into its buffer */
    NBD_INPUT_PAYLOAD_DISCARD, /* skipping the payload of a refused request */
    NBD_INPUT_ATTACHING,       /* waiting for the client's overlay to open (no input meanwhile) */
    NBD_INPUT_STOPPED,
};

/* One piece of a sparse read: data read from the disk, or a hole sent as OFFSET_HOLE. */
struct nbd_read_segment {
    struct bdev_io io;
    struct iovec iov;
    uint64_t offset;
    uint64_t length;
    size_t buffer_offset;
    bool hole;
};

struct nbd_read_plan {
    unsigned count;
    unsigned pending;
    int result;
    struct nbd_read_segment segments[];
};

struct nbd_request {
    struct nbd_session *session;
    struct nbd_request *next_free;
    struct nbd_request_header header;
    struct bdev_io io;
    struct iovec iov;
    struct data_buffer *buffer;   /* WRITE payload or READ data */
    uint64_t done;               /* TRIM / WRITE_ZEROES split in pieces: bytes finished */
    struct bdev_extent *extents; /* BLOCK_STATUS and the first step of a sparse read */
    struct nbd_read_plan *plan;  /* sparse read */
    uint64_t buffered_bytes;     /* counted in session->inflight_bytes */
    struct write_guard guard;    /* WRITE, TRIM, WRITE_ZEROES: the range held in the export's writers */
};

struct nbd_session {
    struct nbd_session_config config;
    char *peer;
    struct export_table *exports;  /* until an export is chosen */
    struct aio_context *ctx;
    struct send_queue *out;
    const struct session_ops *ops;
    void *opaque;

    enum nbd_input_state input;
    enum session_status status;
    bool detached; /* nbd_session_free ran; waiting for in-flight requests */
    bool shutting_down; /* server stopping: new requests get NBD_ESHUTDOWN */

    /* Negotiated. */
    bool no_zeroes;
    bool structured; /* structured replies (also implied by extended) */
    bool extended;   /* extended headers */

    /* Fixed-size messages split across input chunks are staged here. */
    uint8_t staging[NBD_MAX_REQUEST_SIZE];
    size_t staged;

    /* Handshake. */
    struct nbd_option_header option;
    uint8_t *option_data;
    size_t option_fill;
    uint64_t discard_left;              /* option or payload bytes still to skip */
    const struct export *meta_export;   /* export of the last SET_META_CONTEXT (borrowed) */
    bool meta_allocation;               /* it selected base:allocation */
    /* An overlay being opened for GO or EXPORT_NAME, and how to answer once it is. */
    struct export_attach_request *attaching;
    uint32_t attaching_option;
    bool attaching_want_name, attaching_want_description;

    /* Transmission. */
    struct export *export; /* referenced */
    uint16_t transmission_flags;
    uint32_t max_payload;
    bool allocation_context;
    struct nbd_request *receiving; /* WRITE whose payload is arriving */
    uint64_t payload_fill;
    struct nbd_request_header refused; /* request whose payload is being skipped */
    uint32_t refused_error;
    uint32_t inflight;
    uint64_t inflight_bytes;       /* READ/WRITE data of the requests in flight */
    struct nbd_request *free_requests;
    unsigned free_count;
};

static inline bool nbd_session_chunks(const struct nbd_session *session)
{
    return session->structured || session->extended;
}

/* nbd_session.c */
void nbd_session_violation(struct nbd_session *session, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * A fixed-size message of size bytes: returns it when complete (in place
 * when it arrived whole, else from the staging buffer) and sets *used to
 * the bytes taken from data; NULL while incomplete.
 */
const uint8_t *nbd_session_gather(struct nbd_session *session, const uint8_t *data, size_t len,
                                  size_t size, size_t *used);
/* After shutdown: stop input at a request boundary once nothing is in flight. */
void nbd_session_check_shutdown(struct nbd_session *session);
/* The send queue refused memory: nothing sensible can follow, so hang up. */
void nbd_session_out_of_memory(struct nbd_session *session);
struct nbd_request *nbd_request_get(struct nbd_session *session);
/*
 * Release the request's resources and record; drops the in-flight count.
 * Returns false when that freed a detached session (do not touch it again).
 */
bool nbd_request_finish(struct nbd_request *request);
/* End of a completion: release the request and tell the server. */
void nbd_request_done(struct nbd_request *request);

/* nbd_handshake.c */
int nbd_handshake_greet(struct nbd_session *session);
size_t nbd_handshake_input(struct nbd_session *session, const uint8_t *data, size_t len);

/* nbd_export_info.c */
uint16_t nbd_export_transmission_flags(const struct export *export, bool chunks);
/* minimum, preferred, maximum (NBD_INFO_BLOCK_SIZE order). */
void nbd_export_block_sizes(const struct export *export, uint32_t max_payload, uint32_t sizes[3]);

/* nbd_transmission.c */
void nbd_transmission_start(struct nbd_session *session, struct export *export);
size_t nbd_transmission_input(struct nbd_session *session, const uint8_t *data, size_t len);
/* Room for another request (requests, bytes in flight, replies queued)? */
bool nbd_transmission_can_start(const struct nbd_session *session);
void nbd_transmission_payload_done(struct nbd_session *session, size_t n);
/* Input ends while a payload is arriving: drop that request. */
void nbd_transmission_abandon(struct nbd_session *session);

/* nbd_read.c */
void nbd_read_start(struct nbd_request *request);

/* nbd_reply.c: each returns 0 or -ENOMEM (the caller hangs up). */
int nbd_reply_ok(struct nbd_session *session, const struct nbd_request_header *request);
int nbd_reply_error(struct nbd_session *session, const struct nbd_request_header *request,
                    uint32_t error);
int nbd_reply_data(struct nbd_session *session, const struct nbd_request_header *request,
                   uint64_t offset, struct data_buffer *buffer, size_t buffer_offset,
                   size_t length, bool done);
int nbd_reply_hole(struct nbd_session *session, const struct nbd_request_header *request,
                   uint64_t offset, uint32_t length, bool done);
int nbd_reply_block_status(struct nbd_session *session, const struct nbd_request_header *request,
                           uint32_t context_id, const struct bdev_extent *extents, uint32_t count);

#endif
