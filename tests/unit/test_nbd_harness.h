/*
 * Shared by the NBD session tests: a real libev loop, aio_context and
 * export table over temp raw files, a session fed handcrafted client
 * bytes, and readers that take the exact bytes it queued.
 *
 * Exports: "disk" (writable, HARNESS_DISK_SIZE, sparse, description
 * "test disk"; the default export) and "ro" (read-only, filled with
 * session_pattern_byte()) and "big" (writable, HARNESS_BIG_SIZE, sparse: for
 * requests whose length needs more than 32 bits).  The loop, table, queue
 * and output reader are test_session_util's.
 */
#ifndef LUNA_TESTS_TEST_NBD_HARNESS_H
#define LUNA_TESTS_TEST_NBD_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "test_session_util.h"

#define HARNESS_DISK_SIZE (16u << 20)
#define HARNESS_RO_SIZE (1u << 20)
#define HARNESS_BIG_SIZE (8ull << 30)

struct harness {
    struct session_world world;
    struct nbd_session *session;
    const char *disk_path;
    bool structured; /* what harness_go negotiated */
    bool extended;
    uint32_t context_id; /* base:allocation id from SET_META_CONTEXT */
};

/* max_inflight 0: the default. */
void harness_init(struct harness *h, uint32_t max_inflight);
void harness_fini(struct harness *h);

/* Feed bytes; asserts they are all consumed. */
void harness_feed(struct harness *h, const void *data, size_t length);
/* Run the loop until no disk request is pending. */
void harness_wait(struct harness *h);
/* The next n bytes the session queued (asserts they exist). */
const uint8_t *harness_take(struct harness *h, size_t n);
/* Queued bytes not yet taken. */
size_t harness_output_left(struct harness *h);

/* Client side of the handshake. */
void harness_skip_greeting(struct harness *h);
void harness_client_flags(struct harness *h, uint32_t flags);
void harness_option(struct harness *h, uint32_t option, const void *data, uint32_t length);
/* Reads an option reply for option; returns its data, sets *type and *length. */
const uint8_t *harness_option_reply(struct harness *h, uint32_t option, uint32_t *type,
                                    uint32_t *length);
void harness_expect_ack(struct harness *h, uint32_t option);
/* Build NBD_OPT_GO / INFO data for name with the given info requests; returns its length. */
uint32_t harness_info_data(uint8_t *out, const char *name, const uint16_t *requests,
                           uint16_t count);
/* Build LIST/SET_META_CONTEXT data; returns its length. */
uint32_t harness_meta_data(uint8_t *out, const char *name, const char *const *queries,
                           uint32_t count);
/*
 * Greeting, client flags, optional STRUCTURED_REPLY / EXTENDED_HEADERS /
 * SET_META_CONTEXT base:allocation, then GO to name; asserts every reply.
 * Returns the transmission flags.
 */
uint16_t harness_go(struct harness *h, const char *name, bool structured, bool extended,
                    bool allocation);

/* Transmission. */
void harness_request(struct harness *h, uint16_t flags, uint16_t type, uint64_t cookie,
                     uint64_t offset, uint64_t length, const void *payload);
/* Expect a simple reply with exactly this cookie and error. */
void harness_expect_simple(struct harness *h, uint64_t cookie, uint32_t error);

struct harness_chunk {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset; /* extended replies only */
    uint64_t length;
    const uint8_t *payload;
};
/* Read one structured or extended chunk (whichever was negotiated). */
void harness_chunk(struct harness *h, struct harness_chunk *chunk);
/* Success of a non-READ command: a simple reply, or a NONE chunk with extended headers. */
void harness_expect_ok(struct harness *h, uint64_t cookie);
/* Failure: a simple reply, or a final ERROR chunk once structured replies are on. */
void harness_expect_error(struct harness *h, uint64_t cookie, uint32_t error);

#endif
