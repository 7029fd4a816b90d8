/*
 * Session lifecycle, input dispatch and in-flight request records.
 *
 * A freed session whose requests are still in flight is kept as a
 * detached shell: completions see session->detached, release their
 * resources without touching the send queue or the server, and the last
 * one frees the shell and drops the export references.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "block/overlay.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/nbd/nbd_internal.h"

static void session_destroy(struct nbd_session *session)
{
    while (session->free_requests) {
        struct nbd_request *request = session->free_requests;
        session->free_requests = request->next_free;
        free(request);
    }
    free(session->option_data);
    if (session->export)
        export_unref(session->export);
    if (session->exports)
        export_table_unref(session->exports);
    free(session->peer);
    free(session);
}

struct nbd_session *nbd_session_new(const struct nbd_session_config *config,
                                    struct export_table *exports,
                                    struct aio_context *ctx,
                                    struct send_queue *out,
                                    const struct session_ops *ops, void *opaque)
{
    struct nbd_session *session = calloc(1, sizeof(*session));
    if (!session)
        return NULL;
    if (config)
        session->config = *config;
    if (session->config.max_inflight == 0)
        session->config.max_inflight = NBD_DEFAULT_MAX_INFLIGHT;
    if (session->config.max_payload == 0)
        session->config.max_payload = NBD_DEFAULT_MAX_PAYLOAD;
    session->peer = strdup(config && config->peer ? config->peer : "unknown peer");
    if (!session->peer) {
        free(session);
        return NULL;
    }
    session->config.peer = session->peer;
    session->exports = export_table_ref(exports);
    session->ctx = ctx;
    session->out = out;
    session->ops = ops;
    session->opaque = opaque;
    session->input = NBD_INPUT_CLIENT_FLAGS;
    session->status = SESSION_ACTIVE;
    if (nbd_handshake_greet(session) < 0) {
        session_destroy(session);
        return NULL;
    }
    log_debug("nbd %s: connected", session->peer);
    return session;
}

void nbd_session_violation(struct nbd_session *session, const char *format, ...)
{
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    log_warn("nbd %s: protocol violation: %s; disconnecting", session->peer, message);
    session->status = SESSION_CLOSED;
    session->input = NBD_INPUT_STOPPED;
}

void nbd_session_out_of_memory(struct nbd_session *session)
{
    if (session->status != SESSION_CLOSED)
        log_error("nbd %s: out of memory queuing a reply; disconnecting", session->peer);
    session->status = SESSION_CLOSED;
    session->input = NBD_INPUT_STOPPED;
}

const uint8_t *nbd_session_gather(struct nbd_session *session, const uint8_t *data, size_t len,
                                  size_t size, size_t *used)
{
    if (session->staged == 0 && len >= size) {
        *used = size;
        return data;
    }
    size_t want = size - session->staged;
    size_t n = len < want ? len : want;
    memcpy(session->staging + session->staged, data, n);
    session->staged += n;
    *used = n;
    if (session->staged < size)
        return NULL;
    session->staged = 0;
    return session->staging;
}

struct nbd_request *nbd_request_get(struct nbd_session *session)
{
    struct nbd_request *request = session->free_requests;
    if (request) {
        session->free_requests = request->next_free;
        session->free_count--;
    } else {
        request = malloc(sizeof(*request));
        if (!request)
            return NULL;
    }
    memset(request, 0, sizeof(*request));
    request->session = session;
    session->inflight++;
    return request;
}

bool nbd_request_finish(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    write_guard_leave(&request->guard);
    data_buffer_unref(request->buffer);
    free(request->extents);
    free(request->plan);
    session->inflight_bytes -= request->buffered_bytes;
    if (session->free_count < NBD_FREE_REQUESTS_MAX && !session->detached) {
        request->next_free = session->free_requests;
        session->free_requests = request;
        session->free_count++;
    } else {
        free(request);
    }
    session->inflight--;
    if (session->detached && session->inflight == 0) {
        session_destroy(session);
        return false;
    }
    return true;
}

void nbd_request_done(struct nbd_request *request)
{
    struct nbd_session *session = request->session;
    if (!nbd_request_finish(request))
        return;
    nbd_session_check_shutdown(session);
    if (!session->detached && session->ops && session->ops->wake)
        session->ops->wake(session->opaque);
}

size_t nbd_session_input(struct nbd_session *session, const uint8_t *data, size_t len)
{
    size_t used = 0;
    while (used < len && session->status == SESSION_ACTIVE) {
        size_t n;
        switch (session->input) {
        case NBD_INPUT_CLIENT_FLAGS:
        case NBD_INPUT_OPTION_HEADER:
        case NBD_INPUT_OPTION_DATA:
        case NBD_INPUT_OPTION_DISCARD:
            n = nbd_handshake_input(session, data + used, len - used);
            break;
        case NBD_INPUT_REQUEST_HEADER:
        case NBD_INPUT_PAYLOAD:
        case NBD_INPUT_PAYLOAD_DISCARD:
            n = nbd_transmission_input(session, data + used, len - used);
            break;
        default:
            n = 0;
            break;
        }
        if (n == 0)
            break;
        used += n;
        nbd_session_check_shutdown(session);
    }
    return used;
}

bool nbd_session_payload(struct nbd_session *session, struct iovec *target)
{
    if (session->input != NBD_INPUT_PAYLOAD || session->status != SESSION_ACTIVE)
        return false;
    struct nbd_request *request = session->receiving;
    target->iov_base = request->buffer->data + session->payload_fill;
    target->iov_len = request->header.length - session->payload_fill;
    return true;
}

void nbd_session_payload_done(struct nbd_session *session, size_t n)
{
    if (session->input == NBD_INPUT_PAYLOAD && n > 0)
        nbd_transmission_payload_done(session, n);
}

bool nbd_session_wants_input(const struct nbd_session *session)
{
    if (session->status != SESSION_ACTIVE || session->input == NBD_INPUT_STOPPED ||
        session->input == NBD_INPUT_ATTACHING)
        return false;
    if (session->input == NBD_INPUT_REQUEST_HEADER && session->staged == 0)
        return nbd_transmission_can_start(session);
    return true;
}

enum session_status nbd_session_status(const struct nbd_session *session)
{
    return session->status;
}

/* Stop reading; what is in flight still completes and is answered. */
static void stop_input(struct nbd_session *session)
{
    nbd_transmission_abandon(session);
    session->input = NBD_INPUT_STOPPED;
    if (session->status == SESSION_ACTIVE)
        session->status = SESSION_DRAINING;
}

void nbd_session_input_closed(struct nbd_session *session)
{
    log_debug("nbd %s: end of input", session->peer);
    stop_input(session);
}

/*
 * Once the server is stopping, end the session at the first request
 * boundary with nothing in flight.  Stopping mid-payload would leave a
 * client that is still sending unable to read its replies (it reads only
 * after its send completes), so both sides would wait on each other.
 */
void nbd_session_check_shutdown(struct nbd_session *session)
{
    if (session->shutting_down && session->input == NBD_INPUT_REQUEST_HEADER &&
        session->staged == 0 && session->inflight == 0)
        stop_input(session);
}

void nbd_session_shutdown(struct nbd_session *session)
{
    if (!session->export) {
        stop_input(session); /* still negotiating: nothing to finish */
        return;
    }
    session->shutting_down = true;
    nbd_session_check_shutdown(session);
}

uint32_t nbd_session_inflight(const struct nbd_session *session)
{
    return session->inflight;
}

bool nbd_session_negotiated(const struct nbd_session *session)
{
    return session->export != NULL;
}

void nbd_session_free(struct nbd_session *session)
{
    if (!session)
        return;
    nbd_transmission_abandon(session);
    if (session->attaching) {
        export_attach_cancel(session->attaching);
        session->attaching = NULL;
    }
    log_debug("nbd %s: closed with %u requests in flight", session->peer, session->inflight);
    session->detached = true;
    session->out = NULL;
    session->ops = NULL;
    free(session->option_data);
    session->option_data = NULL;
    if (session->inflight == 0)
        session_destroy(session);
}

/* ---- as a session_protocol ---- */

static void *protocol_create(const struct session_start *start)
{
    struct nbd_session_config config = {
        .max_inflight = NBD_DEFAULT_MAX_INFLIGHT,
        .max_payload = NBD_DEFAULT_MAX_PAYLOAD,
        .peer = start->peer,
    };
    return nbd_session_new(&config, start->exports, start->ctx, start->out, start->ops, start->opaque);
}

static size_t protocol_input(void *session, const uint8_t *data, size_t len)
{
    return nbd_session_input(session, data, len);
}
static bool protocol_payload(void *session, struct iovec *target) { return nbd_session_payload(session, target); }
static void protocol_payload_done(void *session, size_t n) { nbd_session_payload_done(session, n); }
static bool protocol_wants_input(const void *session) { return nbd_session_wants_input(session); }
static enum session_status protocol_status(const void *session) { return nbd_session_status(session); }
static void protocol_input_closed(void *session) { nbd_session_input_closed(session); }
static void protocol_shutdown(void *session) { nbd_session_shutdown(session); }
static uint32_t protocol_inflight(const void *session) { return nbd_session_inflight(session); }
static bool protocol_negotiated(const void *session) { return nbd_session_negotiated(session); }
static void protocol_free(void *session) { nbd_session_free(session); }

const struct session_protocol nbd_session_protocol = {
    .name = "nbd",
    .create = protocol_create,
    .input = protocol_input,
    .payload = protocol_payload,
    .payload_done = protocol_payload_done,
    .wants_input = protocol_wants_input,
    .status = protocol_status,
    .input_closed = protocol_input_closed,
    .shutdown = protocol_shutdown,
    .inflight = protocol_inflight,
    .negotiated = protocol_negotiated,
    .free = protocol_free,
};
