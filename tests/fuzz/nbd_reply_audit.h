/*
 * nbd_reply_audit: a client's-eye check of everything an NBD session sends.
 *
 * The fuzz target gives it the client bytes the session consumed and the
 * bytes the session queued; it parses both as a client would (proto.md,
 * extended headers from the extension-ext-header branch) and aborts with a
 * message on anything a conforming server must not do: bad framing or
 * magic, a reply to no outstanding request or to the wrong option, simple
 * replies where chunks are required, read chunks outside the request or
 * overlapping or not covering it, malformed block status, errors outside
 * the protocol's set, success for a write to a read-only export or a range
 * past the end, read data (or holes, or zero extents) contradicting a
 * read-only export's contents or what acknowledged writes left on a small
 * writable one (shadow_disk.h), and, when everything has been drained, a
 * request left without an answer.
 *
 * It gives up (silently stops checking) where the client side is itself
 * ambiguous: two outstanding requests with the same cookie.
 */
#ifndef LUNA_TESTS_FUZZ_NBD_REPLY_AUDIT_H
#define LUNA_TESTS_FUZZ_NBD_REPLY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nbd_audit;

struct nbd_audit_export {
    const char *name;
    uint64_t size;
    bool readonly;
    /* The export's contents when they are fixed (read-only), else NULL.  A writable
     * export without it must start all zeroes: its shadow assumes so. */
    uint8_t (*byte_at)(uint64_t offset);
};

/* exports[0] is the default export (the name ""). Aborts on allocation failure. */
struct nbd_audit *nbd_audit_new(const struct nbd_audit_export *exports, size_t count);
void nbd_audit_free(struct nbd_audit *audit);

/*
 * The session has consumed the first consumed bytes of input (one buffer
 * for the whole run; consumed only grows).  Call before handing the audit
 * any output produced after those bytes were consumed.
 */
void nbd_audit_input(struct nbd_audit *audit, const uint8_t *input, size_t consumed);

/* The server began shutting down: requests consumed from now on must fail with NBD_ESHUTDOWN. */
void nbd_audit_shutdown(struct nbd_audit *audit);

/* Bytes the session queued, in order. */
void nbd_audit_output(struct nbd_audit *audit, const uint8_t *data, size_t length);

/*
 * End of the run with all output handed over.  drained: every request
 * completed and the session was not closed, so every request the session
 * took whole must have been answered.  closed: the session ended with
 * SESSION_CLOSED (required after a violation the audit saw).
 */
void nbd_audit_finish(struct nbd_audit *audit, bool drained, bool closed);

#endif
